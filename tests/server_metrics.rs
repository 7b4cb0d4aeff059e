//! `GET /metrics` from a real server process, read with a strict parser of the Prometheus
//! text exposition format (below), and checked against a scripted run.

mod procs;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use peerconnection::signaling::http::{message_request, parse_response, ParsedResponse};
use procs::ServerProc;

fn request(port: u16, bytes: &[u8]) -> ParsedResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)))
}

fn get(port: u16, target: &str) -> ParsedResponse {
    request(port, format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
}

/// One sample: metric name and sorted labels.
type Key = (String, Vec<(String, String)>);

/// A strict reader of the text format (0.0.4): every line is a `# HELP`, a `# TYPE`
/// (declared once, before the family's samples, with a known type) or a sample
/// `name{label="value",...} number`; names and label names match the grammar, label values
/// use only the format's escapes, no sample is repeated, and the text ends with a newline.
fn parse_exposition(text: &str) -> Result<BTreeMap<Key, f64>, String> {
    fn is_name(s: &str, colon: bool) -> bool {
        let mut chars = s.chars();
        let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
        matches!(chars.next(), Some(c) if first_ok(c))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut sampled: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_name(name, true) {
                return Err(bad("bad metric name"));
            }
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(bad("unknown type"));
                    }
                    if types.insert(name.into(), t.into()).is_some() {
                        return Err(bad("TYPE given twice"));
                    }
                    if sampled.iter().any(|s| s == name) {
                        return Err(bad("TYPE after samples"));
                    }
                }
                _ => return Err(bad("unknown comment keyword")),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(bad("stray line"));
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| bad("unclosed labels"))?;
                let mut labels = Vec::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (lname, after) = rest.split_once("=\"").ok_or_else(|| bad("label"))?;
                    if !is_name(lname, false) {
                        return Err(bad("bad label name"));
                    }
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            None => return Err(bad("unterminated label value")),
                            Some((i, '"')) => break i,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c @ ('\\' | '"'))) => value.push(c),
                                _ => return Err(bad("bad escape")),
                            },
                            Some((_, c)) => value.push(c),
                        }
                    };
                    labels.push((lname.to_string(), value));
                    rest = &after[end + 1..];
                    rest = match rest.strip_prefix(',') {
                        Some(r) => r,
                        None if rest.is_empty() => rest,
                        None => return Err(bad("labels not separated by commas")),
                    };
                }
                (name, labels)
            }
        };
        if !is_name(name, true) {
            return Err(bad("bad metric name"));
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(name) && !types.contains_key(family) {
            return Err(bad("sample without a TYPE"));
        }
        sampled.push(name.to_string());
        let mut labels = labels;
        labels.sort();
        if samples.insert((name.to_string(), labels), value).is_some() {
            return Err(bad("sample repeated"));
        }
    }
    Ok(samples)
}

struct Scrape(BTreeMap<Key, f64>);

impl Scrape {
    fn take(port: u16) -> Scrape {
        let r = get(port, "/metrics");
        assert_eq!(r.code, 200);
        assert_eq!(
            r.content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(r.body).expect("UTF-8");
        Scrape(parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let name = format!("peerconnection_server_{name}");
        self.0
            .get(&(name.clone(), labels.clone()))
            .copied()
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:?}", self.0.keys()))
    }

    /// A counter that may not have a sample yet.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let name = format!("peerconnection_server_{name}");
        self.0.get(&(name, labels)).copied().unwrap_or(0.0)
    }

    fn requests(&self, path: &str, code: &str) -> f64 {
        self.count("requests_total", &[("path", path), ("code", code)])
    }
}

#[test]
fn the_strict_parser_refuses_what_the_format_forbids() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{p=\"/x\",c=\"2\\\"\"} 3\n";
    assert_eq!(parse_exposition(ok).unwrap().len(), 1);
    for bad in [
        "a 1\n",                                 // no TYPE
        "# TYPE a gauge\na 1",                   // no final newline
        "# TYPE a gauge\na{b=\"1\"c=\"2\"} 1\n", // no comma
        "# TYPE a gauge\na{b=\"1} 1\n",          // unterminated value
        "# TYPE a gauge\na one\n",               // bad value
        "# TYPE a gauge\na 1\na 2\n",            // repeated
        "# TYPE a gauge\na 1\n# TYPE a gauge\n", // TYPE twice
        "# TYPE a gauge\n\na 1\n",               // blank line
        "# TYPE 1a gauge\n1a 1\n",               // bad name
        "# TYPE a thing\na 1\n",                 // unknown type
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?} passed");
    }
}

#[test]
fn metrics_are_off_without_the_flag() {
    let server = ServerProc::start(&[]);
    assert_eq!(get(server.port, "/metrics").code, 404);
}

#[test]
fn counters_follow_a_scripted_run() {
    let server = ServerProc::start(&["--metrics"]);
    let p = server.port;
    let before = Scrape::take(p);
    assert_eq!(before.value("members", &[]), 0.0);
    assert_eq!(before.value("queued_bytes", &[]), 0.0);
    assert_eq!(
        before.value("evictions_total", &[("reason", "timed_out")]),
        0.0
    );
    // Two members; bob sends alice three messages nobody has fetched yet.
    assert_eq!(get(p, "/sign_in?alice").code, 200);
    assert_eq!(get(p, "/sign_in?bob").code, 200);
    for text in [&b"one"[..], b"two", b"three"] {
        let r = request(p, &message_request(2, 1, "text/plain", text));
        assert_eq!(r.code, 200);
    }
    assert_eq!(get(p, "/wait?peer_id=99").code, 500);
    assert_eq!(get(p, "/nowhere").code, 404);
    let held = {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.write_all(b"GET /wait?peer_id=2 HTTP/1.0\r\n\r\n")
            .unwrap();
        s
    };
    std::thread::sleep(Duration::from_millis(200));
    let m = Scrape::take(p);
    assert_eq!(m.value("members", &[]), 2.0);
    assert_eq!(m.requests("/sign_in", "200"), 2.0);
    assert_eq!(m.requests("/message", "200"), 3.0);
    assert_eq!(m.requests("/wait", "500"), 1.0);
    assert_eq!(m.requests("other", "404"), 1.0);
    assert_eq!(m.requests("/metrics", "200"), 1.0, "the first scrape");
    assert_eq!(m.value("connections", &[("state", "held")]), 1.0);
    // alice's queue: three messages of 3, 3 and 5 bytes, each with its 10-byte content
    // type; and bob's join line ("bob,2,1\n") unread.
    assert_eq!(m.value("queued_messages", &[]), 3.0);
    assert_eq!(m.value("queued_bytes", &[]), 13.0 + 13.0 + 15.0);
    // The join line waits in the shared log (with its slot's 32 bytes) until alice reads it.
    assert_eq!(m.value("presence_log_bytes", &[]), 8.0 + 32.0);
    assert!(m.value("memory_used_bytes", &[]) >= 81.0);
    // alice takes two items: the counters move, the queue shrinks.
    assert_eq!(get(p, "/wait?peer_id=1").code, 200);
    assert_eq!(get(p, "/wait?peer_id=1").code, 200);
    let m2 = Scrape::take(p);
    assert_eq!(m2.requests("/wait", "200"), 2.0);
    assert_eq!(m2.value("queued_messages", &[]), 2.0);
    assert_eq!(m2.value("queued_bytes", &[]), 13.0 + 15.0);
    assert_eq!(m2.value("presence_log_bytes", &[]), 0.0);
    assert_eq!(m2.requests("/metrics", "200"), 2.0);
    drop(held);
}

#[test]
fn time_outs_are_counted_as_evictions() {
    let server = ServerProc::start(&["--metrics", "--timeout", "0.3"]);
    let p = server.port;
    assert_eq!(get(p, "/sign_in?gone").code, 200);
    std::thread::sleep(Duration::from_millis(800));
    let m = Scrape::take(p);
    assert_eq!(m.value("members", &[]), 0.0);
    assert_eq!(m.value("evictions_total", &[("reason", "timed_out")]), 1.0);
    assert_eq!(
        m.value("evictions_total", &[("reason", "memory_budget")]),
        0.0
    );
}

#[test]
fn a_separate_metrics_address_serves_metrics_and_nothing_else() {
    let mut server = ServerProc::start(&["--metrics-addr", "127.0.0.1:0"]);
    let line = server
        .proc_
        .wait_line("peerconnection_server metrics on", Duration::from_secs(10));
    let metrics_port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    assert_eq!(get(server.port, "/sign_in?alice").code, 200);
    // The protocol's port keeps /metrics off; the metrics port serves nothing else.
    assert_eq!(get(server.port, "/metrics").code, 404);
    assert_eq!(get(metrics_port, "/sign_in?mallory").code, 404);
    let m = Scrape::take(metrics_port);
    assert_eq!(m.value("members", &[]), 1.0);
    assert_eq!(m.requests("/sign_in", "200"), 1.0);
}
