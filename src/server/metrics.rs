//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): counters the
//! loop keeps as it serves, and gauges read from the loop's state when scraped. Off unless
//! the server is started with `--metrics`, so the protocol's paths stay as they were.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::signaling::split_target;

/// The `Content-Type` Prometheus expects for the text format.
pub const CONTENT_TYPE: &[u8] = b"text/plain; version=0.0.4; charset=utf-8";

/// The path label of a request: the protocol's paths by name, everything else folded into
/// a few fixed values so a scanner cannot grow the label set.
pub fn path_label(target: &str) -> &'static str {
    match split_target(target).0 {
        "/sign_in" => "/sign_in",
        "/wait" => "/wait",
        "/message" => "/message",
        "/sign_out" => "/sign_out",
        "/metrics" => "/metrics",
        "/quit" => "/quit",
        "/" | "/index.html" | "/app.js" => "web",
        _ => "other",
    }
}

/// Path label of a request refused before its head could be read.
pub const UNPARSED: &str = "unparsed";

/// Why the server removed a member on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Eviction {
    /// No hanging GET and no request for `--timeout`.
    TimedOut,
    /// Its own queue passed `--max-queue`/`--max-queue-bytes`.
    QueueOverflow,
    /// The process passed `--max-memory` and it held the most undelivered data.
    MemoryBudget,
}

impl Eviction {
    fn label(self) -> &'static str {
        match self {
            Eviction::TimedOut => "timed_out",
            Eviction::QueueOverflow => "queue_overflow",
            Eviction::MemoryBudget => "memory_budget",
        }
    }
}

/// Counters kept as the server runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answered requests by path label and status code.
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Connections refused at accept (over `--max-connections` or `--max-memory`).
    pub refused_connections: u64,
    pub accepted_connections: u64,
}

impl Counters {
    pub fn count_request(&mut self, path: &'static str, code: u16) {
        *self.requests.entry((path, code)).or_default() += 1;
    }
}

/// The gauges, read from the loop's state at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub members: usize,
    /// Open connections by state label.
    pub connections: Vec<(&'static str, usize)>,
    /// Bytes of messages and notices waiting for members' hanging GETs.
    pub queued_bytes: usize,
    pub queued_messages: usize,
    /// Bytes of the shared presence log.
    pub presence_log_bytes: usize,
    /// Removals by the server, by cause.
    pub evictions: Vec<(Eviction, u64)>,
    pub memory_used: usize,
    pub memory_budget: usize,
    /// With `--redis`: joined to the cluster now, and how many times Redis was lost.
    pub cluster: Option<(bool, u64)>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole scrape.
pub fn render(counters: &Counters, g: &Gauges) -> String {
    let mut out = String::with_capacity(2048);
    let p = "peerconnection_server";
    family(
        &mut out,
        &format!("{p}_members"),
        "gauge",
        "Members signed in.",
    );
    let _ = writeln!(out, "{p}_members {}", g.members);
    family(
        &mut out,
        &format!("{p}_connections"),
        "gauge",
        "Open connections by state.",
    );
    for (state, n) in &g.connections {
        let _ = writeln!(out, "{p}_connections{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        &format!("{p}_connections_accepted_total"),
        "counter",
        "Connections accepted.",
    );
    let _ = writeln!(
        out,
        "{p}_connections_accepted_total {}",
        counters.accepted_connections
    );
    family(
        &mut out,
        &format!("{p}_connections_refused_total"),
        "counter",
        "Connections answered 503 at accept (connection or memory bound).",
    );
    let _ = writeln!(
        out,
        "{p}_connections_refused_total {}",
        counters.refused_connections
    );
    family(
        &mut out,
        &format!("{p}_requests_total"),
        "counter",
        "Requests answered, by path and status code.",
    );
    for ((path, code), n) in &counters.requests {
        let _ = writeln!(
            out,
            "{p}_requests_total{{path=\"{path}\",code=\"{code}\"}} {n}"
        );
    }
    family(
        &mut out,
        &format!("{p}_queued_bytes"),
        "gauge",
        "Bytes of messages and notices waiting for members' hanging GETs.",
    );
    let _ = writeln!(out, "{p}_queued_bytes {}", g.queued_bytes);
    family(
        &mut out,
        &format!("{p}_queued_messages"),
        "gauge",
        "Messages waiting for members' hanging GETs.",
    );
    let _ = writeln!(out, "{p}_queued_messages {}", g.queued_messages);
    family(
        &mut out,
        &format!("{p}_presence_log_bytes"),
        "gauge",
        "Bytes of join and leave lines some member has yet to read.",
    );
    let _ = writeln!(out, "{p}_presence_log_bytes {}", g.presence_log_bytes);
    family(
        &mut out,
        &format!("{p}_evictions_total"),
        "counter",
        "Members removed by the server, by cause.",
    );
    for (why, n) in &g.evictions {
        let _ = writeln!(out, "{p}_evictions_total{{reason=\"{}\"}} {n}", why.label());
    }
    family(
        &mut out,
        &format!("{p}_memory_used_bytes"),
        "gauge",
        "Bytes counted against --max-memory: request buffers, queued data, notices, answers being written.",
    );
    let _ = writeln!(out, "{p}_memory_used_bytes {}", g.memory_used);
    family(
        &mut out,
        &format!("{p}_memory_budget_bytes"),
        "gauge",
        "--max-memory.",
    );
    let _ = writeln!(out, "{p}_memory_budget_bytes {}", g.memory_budget);
    if let Some((joined, outages)) = g.cluster {
        family(
            &mut out,
            &format!("{p}_cluster_up"),
            "gauge",
            "1 while Redis is reachable and this server has joined the cluster (--redis).",
        );
        let _ = writeln!(out, "{p}_cluster_up {}", u8::from(joined));
        family(
            &mut out,
            &format!("{p}_cluster_outages_total"),
            "counter",
            "Times Redis was lost and members were served locally.",
        );
        let _ = writeln!(out, "{p}_cluster_outages_total {outages}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fold_into_a_fixed_set() {
        assert_eq!(path_label("/wait?peer_id=3"), "/wait");
        assert_eq!(path_label("/index.html"), "web");
        assert_eq!(path_label("/../../etc/passwd"), "other");
    }

    #[test]
    fn every_sample_follows_its_type_line() {
        let mut c = Counters::default();
        c.count_request("/sign_in", 200);
        let text = render(
            &c,
            &Gauges {
                evictions: vec![(Eviction::TimedOut, 2)],
                ..Gauges::default()
            },
        );
        assert!(text.contains(
            "# TYPE peerconnection_server_requests_total counter\npeerconnection_server_requests_total{path=\"/sign_in\",code=\"200\"} 1\n"
        ));
        assert!(text.contains("peerconnection_server_evictions_total{reason=\"timed_out\"} 2\n"));
    }
}
