//! The signaling protocol over real loopback sockets against the real server binary: every
//! row of PROTOCOL.md, the original client's exact bytes, queueing, time-outs and bad input.

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use peerconnection::signaling::http::{parse_response, ParsedResponse};
use procs::ServerProc;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads until the server closes; returns the raw bytes.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn parse(raw: &[u8]) -> ParsedResponse {
    parse_response(raw)
        .unwrap_or_else(|e| panic!("bad response {e}: {:?}", String::from_utf8_lossy(raw)))
        .unwrap_or_else(|| panic!("incomplete response {:?}", String::from_utf8_lossy(raw)))
}

/// One request on a fresh connection, answered and closed.
fn request(port: u16, bytes: &[u8]) -> ParsedResponse {
    let mut s = connect(port);
    s.write_all(bytes).unwrap();
    parse(&read_to_close(&mut s))
}

fn get(port: u16, target: &str) -> ParsedResponse {
    request(port, format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
}

fn post(port: u16, from: u32, to: u32, body: &[u8]) -> ParsedResponse {
    request(
        port,
        &peerconnection::signaling::http::message_request(from, to, "text/plain", body),
    )
}

fn body(r: &ParsedResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A hanging GET left open; `answer` reads its response.
struct Wait(TcpStream);

impl Wait {
    fn open(port: u16, id: u32) -> Wait {
        let mut s = connect(port);
        s.write_all(format!("GET /wait?peer_id={id} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        Wait(s)
    }
    fn answer(mut self) -> ParsedResponse {
        parse(&read_to_close(&mut self.0))
    }
    /// True if nothing arrives within `d` (the GET is held).
    fn is_held_for(&mut self, d: Duration) -> bool {
        self.0.set_read_timeout(Some(d)).unwrap();
        let mut b = [0u8; 1];
        let held = matches!(self.0.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
        self.0.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        held
    }
}

#[test]
fn original_client_bytes_sign_in_and_get_a_compatible_answer() {
    let server = ServerProc::start(&[]);
    let mut s = connect(server.port);
    s.write_all(b"GET /sign_in?alice HTTP/1.0\r\n\r\n").unwrap();
    let raw = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with(
            "HTTP/1.1 200 Added\r\nServer: PeerConnectionTestServer/0.1\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nPragma: 1\r\nAccess-Control-Allow-Origin: *\r\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("Access-Control-Expose-Headers: Content-Length\r\n\r\nalice,1,1\n"));
    // The original client's POST, answered 200 with an empty body.
    let r = get(server.port, "/sign_in?bob");
    assert_eq!(r.pragma, Some(2));
    let r = request(
        server.port,
        b"POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    );
    assert_eq!((r.code, r.body.len()), (200, 0));
    let join = Wait::open(server.port, 1).answer();
    assert_eq!((join.pragma, body(&join)), (Some(1), "bob,2,1\n".into()));
    let w = Wait::open(server.port, 1).answer();
    assert_eq!((w.code, w.pragma), (200, Some(2)));
    assert_eq!(w.content_type.as_deref(), Some("text/plain"));
    assert_eq!(body(&w), "hello");
}

#[test]
fn sign_in_lists_members_own_line_first_and_names_are_cleaned() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    assert_eq!(body(&get(p, "/sign_in?a")), "a,1,1\n");
    let r = get(p, "/sign_in?b,c");
    assert_eq!(r.code, 200);
    assert_eq!(r.reason, "Added");
    assert_eq!(r.pragma, Some(2));
    assert_eq!(body(&r), "b_c,2,1\na,1,1\n");
    let r = get(p, "/sign_in");
    assert_eq!(body(&r).lines().next(), Some("peer_3,3,1"));
    let long = "x".repeat(600);
    let r = get(p, &format!("/sign_in?{long}"));
    assert_eq!(
        body(&r).lines().next().unwrap(),
        format!("{},4,1", "x".repeat(512))
    );
}

#[test]
fn joins_leaves_and_messages_reach_the_hanging_get() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    let mut w = Wait::open(p, 1);
    assert!(
        w.is_held_for(Duration::from_millis(300)),
        "held while nothing is queued"
    );
    get(p, "/sign_in?bob");
    let n = w.answer();
    assert_eq!((n.pragma, body(&n)), (Some(1), "bob,2,1\n".into()));
    // A message while alice waits: delivered with the sender's id and content type.
    let w = Wait::open(p, 1);
    std::thread::sleep(Duration::from_millis(100));
    let r = request(
        p,
        b"POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
    );
    assert_eq!(r.code, 200);
    let m = w.answer();
    assert_eq!(m.pragma, Some(2));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(body(&m), "{}");
    // Sign out: alice is told bob left.
    assert_eq!(get(p, "/sign_out?peer_id=2").code, 200);
    let n = Wait::open(p, 1).answer();
    assert_eq!((n.pragma, body(&n)), (Some(1), "bob,2,0\n".into()));
}

#[test]
fn queued_items_are_delivered_in_order() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    get(p, "/sign_in?bob");
    for i in 0..5 {
        assert_eq!(post(p, 2, 1, format!("m{i}").as_bytes()).code, 200);
    }
    get(p, "/sign_in?carol");
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(body(&Wait::open(p, 1).answer()));
    }
    assert_eq!(
        got,
        ["bob,2,1\n", "m0", "m1", "m2", "m3", "m4", "carol,3,1\n"]
    );
}

#[test]
fn echo_to_self_and_to_matches_whole_arguments_only() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    get(p, "/sign_in?bob");
    let r = post(p, 1, 1, b"ping");
    assert_eq!((r.code, r.pragma, body(&r)), (200, Some(1), "ping".into()));
    let r = get_post(p, "/message?peer_id=1&xto=2");
    assert_eq!(r.code, 400, "xto is not to");
    let r = get_post(p, "/message?to=2&peer_id=1");
    assert_eq!(r.code, 200);
    let m = Wait::open(p, 2).answer();
    assert_eq!((m.pragma, body(&m)), (Some(1), "x".into()));
}

fn get_post(port: u16, target: &str) -> ParsedResponse {
    request(
        port,
        format!("POST {target} HTTP/1.0\r\nContent-Length: 1\r\nContent-Type: text/plain\r\n\r\nx")
            .as_bytes(),
    )
}

#[test]
fn unknown_peers_paths_methods_and_options() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    let r = get(p, "/wait?peer_id=42");
    assert_eq!(
        (r.code, r.reason.as_str(), body(&r)),
        (500, "Error", "Peer most likely gone.".into())
    );
    assert_eq!(post(p, 1, 2, b"x").code, 500);
    assert_eq!(get(p, "/sign_out?peer_id=9").code, 500);
    assert_eq!(get(p, "/nothing").code, 404);
    assert_eq!(get(p, "/wait?peer_id=abc").code, 400);
    assert_eq!(get(p, "/wait").code, 400);
    assert_eq!(request(p, b"DELETE /wait HTTP/1.0\r\n\r\n").code, 405);
    let r = request(p, b"OPTIONS /message HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.code, 200);
    let mut s = connect(p);
    s.write_all(b"OPTIONS / HTTP/1.0\r\n\r\n").unwrap();
    let raw = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(raw.contains("Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n"));
    assert_eq!(get(p, "/quit").code, 403);
}

#[test]
fn bad_input_gets_a_clear_status_and_others_are_still_served() {
    let server = ServerProc::start(&["--max-header-bytes", "1024", "--max-body-bytes", "100"]);
    let p = server.port;
    let cases: &[(&[u8], u16)] = &[
        (b"\x16\x03\x01garbage\r\n\r\n", 400),
        (b"GET HTTP/1.0\r\n\r\n", 400),
        (b"POST /message?peer_id=1&to=1 HTTP/1.0\r\n\r\n", 411),
        (
            b"POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: -3\r\n\r\n",
            400,
        ),
        (
            b"POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhello",
            400,
        ),
        (
            b"POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: 101\r\n\r\n",
            413,
        ),
        (b"GET /wait HTTP/1.0\r\n\r\nGET /wait HTTP/1.0\r\n\r\n", 400),
    ];
    for (raw, code) in cases {
        assert_eq!(
            request(p, raw).code,
            *code,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let big = format!("GET /sign_in?{} HTTP/1.0\r\n\r\n", "a".repeat(2000));
    assert_eq!(request(p, big.as_bytes()).code, 431);
    assert_eq!(get(p, "/sign_in?still_fine").code, 200);
}

#[test]
fn a_request_byte_by_byte_with_the_body_later_works() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    let mut s = connect(p);
    s.set_nodelay(true).unwrap();
    let raw = b"POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\n";
    for b in raw {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"ab").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"cd").unwrap();
    let r = parse(&read_to_close(&mut s));
    assert_eq!((r.code, body(&r)), (200, "abcd".into()));
}

#[test]
fn stalled_and_silent_sockets_are_closed_at_the_request_timeout() {
    let server = ServerProc::start(&["--request-timeout", "1"]);
    let p = server.port;
    let mut half = connect(p);
    half.write_all(b"POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: 50\r\n\r\nshort")
        .unwrap();
    let mut silent = connect(p);
    let start = Instant::now();
    // Others are served while those two stall.
    for i in 0..20 {
        assert_eq!(get(p, &format!("/sign_in?m{i}")).code, 200);
    }
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "served while others stall"
    );
    let r = parse(&read_to_close(&mut half));
    assert_eq!(r.code, 408);
    let raw = read_to_close(&mut silent);
    assert_eq!(parse(&raw).code, 408);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn members_without_a_hanging_get_time_out_and_others_hear_it() {
    let server = ServerProc::start(&["--timeout", "1"]);
    let p = server.port;
    get(p, "/sign_in?alice");
    get(p, "/sign_in?bob");
    // alice keeps waiting; bob never comes back.
    let w = Wait::open(p, 1);
    let first = w.answer();
    assert_eq!(body(&first), "bob,2,1\n");
    let w = Wait::open(p, 1);
    let gone = w.answer();
    assert_eq!(body(&gone), "bob,2,0\n");
    assert_eq!(get(p, "/wait?peer_id=2").code, 500);
}

#[test]
fn a_member_that_keeps_polling_a_flooded_queue_is_not_timed_out() {
    let server = ServerProc::start(&["--timeout", "2"]);
    let p = server.port;
    get(p, "/sign_in?watcher");
    get(p, "/sign_in?alice");
    get(p, "/sign_in?bob");
    // The watcher takes the two joins, then holds a GET: it hears any departure.
    assert_eq!(body(&Wait::open(p, 1).answer()), "alice,2,1\n");
    assert_eq!(body(&Wait::open(p, 1).answer()), "bob,3,1\n");
    let mut watcher = Wait::open(p, 1);
    // bob's join is queued for alice; from then on bob posts before each of alice's polls,
    // so every GET of hers is answered from her queue and none is ever held. Two and a half
    // timeouts of that.
    let first = Wait::open(p, 2).answer();
    assert_eq!(body(&first), "bob,3,1\n");
    let start = Instant::now();
    let mut seq = 0u32;
    while start.elapsed() < Duration::from_secs(5) {
        let r = post(p, 3, 2, format!("m{seq}").as_bytes());
        assert_eq!(r.code, 200, "post {seq} after {:?}", start.elapsed());
        let t = Instant::now();
        let m = Wait::open(p, 2).answer();
        assert!(t.elapsed() < Duration::from_secs(1), "answered at once");
        assert_eq!(
            (m.code, m.pragma, body(&m)),
            (200, Some(3), format!("m{seq}")),
            "after {:?}",
            start.elapsed()
        );
        seq += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seq > 50, "only {seq} round trips");
    assert!(
        watcher.is_held_for(Duration::from_millis(100)),
        "the watcher heard something: nobody left"
    );
    assert_eq!(get(p, "/sign_out?peer_id=2").code, 200);
    assert_eq!(body(&watcher.answer()), "alice,2,0\n");
    assert_eq!(get(p, "/sign_out?peer_id=3").code, 200);
    assert_eq!(body(&Wait::open(p, 1).answer()), "bob,3,0\n");
}

#[test]
fn a_second_wait_closes_the_first() {
    let server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    let mut first = Wait::open(p, 1);
    std::thread::sleep(Duration::from_millis(100));
    let second = Wait::open(p, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        read_to_close(&mut first.0).is_empty(),
        "first closed without answer"
    );
    get(p, "/sign_in?bob");
    assert_eq!(body(&second.answer()), "bob,2,1\n");
}

#[test]
fn a_member_that_never_reads_does_not_stall_the_server() {
    let server = ServerProc::start(&["--max-body-bytes", "2000000"]);
    let p = server.port;
    get(p, "/sign_in?sink");
    get(p, "/sign_in?src");
    // sink's hanging GETs never read their answers: each answer is 1 MB.
    let mut sinks = Vec::new();
    let big = vec![b'x'; 1_000_000];
    for _ in 0..4 {
        sinks.push(Wait::open(p, 1));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(post(p, 2, 1, &big).code, 200);
    }
    let start = Instant::now();
    assert_eq!(get(p, "/sign_in?other").code, 200);
    assert!(start.elapsed() < Duration::from_secs(1));
    drop(sinks);
}

#[test]
fn quit_is_allowed_only_with_the_flag_and_exits_zero() {
    let mut server = ServerProc::start(&["--allow-quit"]);
    let r = get(server.port, "/quit");
    assert_eq!(r.code, 200);
    assert_eq!(server.proc_.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn sigterm_answers_hanging_gets_and_exits_zero() {
    let mut server = ServerProc::start(&[]);
    let p = server.port;
    get(p, "/sign_in?alice");
    let w = Wait::open(p, 1);
    std::thread::sleep(Duration::from_millis(100));
    server.proc_.signal(libc::SIGTERM);
    let r = w.answer();
    assert_eq!((r.pragma, body(&r)), (Some(1), "alice,1,0\n".into()));
    assert_eq!(server.proc_.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn connections_past_the_limit_get_503() {
    let server = ServerProc::start(&["--max-connections", "3"]);
    let p = server.port;
    let held: Vec<TcpStream> = (0..3).map(|_| connect(p)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = get(p, "/sign_in?late");
    assert_eq!(r.code, 503);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(p, "/sign_in?later").code, 200);
}

#[test]
fn the_web_client_is_served_at_root_unless_turned_off() {
    let server = ServerProc::start(&[]);
    let r = get(server.port, "/");
    assert_eq!(r.code, 200);
    assert!(r
        .content_type
        .as_deref()
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(body(&r).contains("<script src=\"/app.js\">"));
    let js = get(server.port, "/app.js");
    assert!(body(&js).contains("/wait?peer_id="));
    // The page does not disturb the protocol.
    assert_eq!(get(server.port, "/sign_in?a").pragma, Some(1));
    let off = ServerProc::start(&["--no-web"]);
    assert_eq!(get(off.port, "/").code, 404);
}
