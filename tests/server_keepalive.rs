//! Keep-alive against the real server binary: the original client's HTTP/1.0 requests get
//! the original's bytes and a closed socket; HTTP/1.1 clients that do not say
//! `Connection: close` keep their connection, hanging GETs included.

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use peerconnection::signaling::http::{parse_response, ParsedResponse, ResponseParser};
use procs::ServerProc;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Reads exactly one response off a kept connection; returns it with its raw bytes.
fn read_one(s: &mut TcpStream) -> (ParsedResponse, Vec<u8>) {
    let mut parser = ResponseParser::new(1 << 20);
    let mut raw = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = s.read(&mut byte).expect("read a response");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&byte[..n]);
        if let Some(r) = parser.feed(&byte[..n]).expect("a valid response") {
            // One request at a time: nothing may follow the response.
            assert_eq!(parse_response(&raw).unwrap().unwrap(), r);
            return (r, raw);
        }
    }
}

fn get11(s: &mut TcpStream, target: &str) -> ParsedResponse {
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .unwrap();
    read_one(s).0
}

fn post11(s: &mut TcpStream, from: u32, to: u32, body: &[u8]) -> ParsedResponse {
    let mut req = format!(
        "POST /message?peer_id={from}&to={to} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    read_one(s).0
}

/// The original server's answer to the original client's sign-in, byte for byte.
const ORIGINAL_ADDED: &str = "HTTP/1.1 200 Added\r\n\
Server: PeerConnectionTestServer/0.1\r\n\
Cache-Control: no-cache\r\n\
Connection: close\r\n\
Content-Type: text/plain\r\n\
Content-Length: 10\r\n\
Pragma: 1\r\n\
Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Credentials: true\r\n\
Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n\
Access-Control-Allow-Headers: Content-Type, Content-Length, Connection, Cache-Control\r\n\
Access-Control-Expose-Headers: Content-Length\r\n\
\r\n\
alice,1,1\n";

#[test]
fn the_original_clients_requests_get_the_original_bytes_and_a_close() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    let mut s = connect(p);
    s.write_all(b"GET /sign_in?alice HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        String::from_utf8(read_to_close(&mut s)).unwrap(),
        ORIGINAL_ADDED
    );
    // Its POST and its hanging GET: the same bytes as an HTTP/1.1 client that says close.
    let mut s = connect(p);
    s.write_all(b"GET /sign_in?bob HTTP/1.0\r\n\r\n").unwrap();
    read_to_close(&mut s);
    let post = b"POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    let mut s = connect(p);
    s.write_all(post).unwrap();
    let answer = read_to_close(&mut s);
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        ORIGINAL_ADDED
            .replace("200 Added", "200 OK")
            .replace(
                "Content-Length: 10\r\nPragma: 1\r\n",
                "Content-Length: 0\r\n"
            )
            .replace("alice,1,1\n", "")
    );
    for _ in 0..2 {
        let mut s = connect(p);
        s.write_all(b"GET /wait?peer_id=1 HTTP/1.0\r\n\r\n")
            .unwrap();
        let raw = read_to_close(&mut s);
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(!text.contains("keep-alive"), "{text}");
    }
    // An HTTP/1.0 request asking for keep-alive is still answered the original's way.
    let mut s = connect(p);
    s.write_all(b"GET /sign_in?carol HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
}

#[test]
fn http_1_1_keeps_the_connection_unless_told_to_close() {
    let server = ServerProc::start(&["--metrics"]);
    let p = server.port;
    let mut s = connect(p);
    s.write_all(b"GET /sign_in?alice HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let (r, raw) = read_one(&mut s);
    assert_eq!((r.code, r.pragma), (200, Some(1)));
    // The one header that differs from the original's answer.
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        ORIGINAL_ADDED.replace("Connection: close", "Connection: keep-alive")
    );
    let r = get11(&mut s, "/sign_in?bob");
    assert_eq!(r.pragma, Some(2));
    // Two requests in one write are answered in order.
    s.write_all(b"GET /nowhere HTTP/1.1\r\n\r\nOPTIONS /x HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).0.code, 404);
    assert_eq!(read_one(&mut s).0.code, 200);
    // Connection: close is honoured with the original's bytes.
    s.write_all(b"GET /sign_out?peer_id=2 HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    // A refused request closes a kept connection too.
    let mut s = connect(p);
    assert_eq!(get11(&mut s, "/sign_in?carol").code, 200);
    s.write_all(b"POST /message?peer_id=1&to=3 HTTP/1.1\r\n\r\n")
        .unwrap();
    let text = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 411"), "{text}");
}

#[test]
fn an_http_1_1_client_relays_a_thousand_messages_over_two_connections() {
    let server = ServerProc::start(&["--metrics"]);
    let p = server.port;
    let mut alice = connect(p);
    let mut bob = connect(p);
    assert_eq!(get11(&mut alice, "/sign_in?alice").pragma, Some(1));
    assert_eq!(get11(&mut bob, "/sign_in?bob").pragma, Some(2));
    assert_eq!(get11(&mut alice, "/wait?peer_id=1").body, b"bob,2,1\n");
    for i in 0..1000 {
        let text = format!("message {i}");
        // Every other time alice's GET is held when the message comes; otherwise the
        // message waits in her queue and answers the GET at once.
        if i % 2 == 0 {
            alice
                .write_all(b"GET /wait?peer_id=1 HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            assert_eq!(post11(&mut bob, 2, 1, text.as_bytes()).code, 200);
            let (got, _) = read_one(&mut alice);
            assert_eq!((got.pragma, got.body), (Some(2), text.into_bytes()));
        } else {
            assert_eq!(post11(&mut bob, 2, 1, text.as_bytes()).code, 200);
            let got = get11(&mut alice, "/wait?peer_id=1");
            assert_eq!((got.pragma, got.body), (Some(2), text.into_bytes()));
        }
    }
    let metrics = String::from_utf8(get11(&mut bob, "/metrics").body).unwrap();
    assert!(
        metrics.contains("\npeerconnection_server_connections_accepted_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "peerconnection_server_requests_total{path=\"/message\",code=\"200\"} 1000\n"
        ),
        "{metrics}"
    );
}

#[test]
fn idle_kept_connections_are_closed_after_the_time_out() {
    let server = ServerProc::start(&["--keep-alive-timeout", "0.3"]);
    let p = server.port;
    let mut s = connect(p);
    assert_eq!(get11(&mut s, "/sign_in?alice").code, 200);
    let start = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(s.read(&mut byte).unwrap(), 0, "closed without a word");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A held GET is not idle: it stays held past the keep-alive time-out.
    let mut w = connect(p);
    assert_eq!(get11(&mut w, "/sign_in?bob").code, 200);
    w.write_all(b"GET /wait?peer_id=2 HTTP/1.1\r\n\r\n")
        .unwrap();
    w.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let held = w.read(&mut byte);
    assert!(
        matches!(&held, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{held:?}"
    );
}

#[test]
fn a_long_pipeline_is_answered_in_full() {
    let server = ServerProc::start(&[]);
    let mut s = connect(server.port);
    // Several reads' worth (16 KiB each) of requests in one write, each request 512 bytes,
    // so a full read ends exactly between two requests.
    let mut all = Vec::new();
    for i in 0..200 {
        let head = format!("GET /nowhere/{i:03}? HTTP/1.1\r\nHost: test\r\n\r\n");
        let padded = head.replace("? ", &format!("?{} ", "x".repeat(512 - head.len())));
        assert_eq!(padded.len(), 512);
        all.extend_from_slice(padded.as_bytes());
    }
    s.write_all(&all).unwrap();
    let mut parser = ResponseParser::new(1 << 20);
    let mut answered = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    while answered < 200 {
        let n = s.read(&mut buf).expect("every pipelined request answered");
        assert!(n > 0, "closed after {answered} answers");
        pending.extend_from_slice(&buf[..n]);
        // Split the answers off one by one.
        loop {
            let Some(r) = parser.feed(&pending).unwrap() else {
                parser = ResponseParser::new(1 << 20);
                break;
            };
            assert_eq!(r.code, 404);
            answered += 1;
            let text = String::from_utf8_lossy(&pending).into_owned();
            let head_end = text.find("\r\n\r\n").unwrap() + 4;
            pending.drain(..head_end + r.body.len());
            parser = ResponseParser::new(1 << 20);
        }
    }
}
