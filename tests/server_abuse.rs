//! The server under numbers: ten thousand connections at once, and a process out of file
//! descriptors. (Thousands of members holding hanging GETs: tests/server_load.rs.)

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerconnection::signaling::http::{parse_response, ParsedResponse};
use procs::{cpu_time, open_fds, raise_fd_limit, ServerProc};

/// These tests each load the machine; they run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn get(port: u16, target: &str) -> ParsedResponse {
    let mut s = connect(port);
    s.write_all(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&raw)))
}

#[test]
fn ten_thousand_connections_at_once() {
    raise_fd_limit();
    let _one_at_a_time = HEAVY.lock();
    let server = ServerProc::start(&["--request-timeout", "120"]);
    let p = server.port;
    let start = Instant::now();
    let conns: Vec<TcpStream> = (0..10_000).map(|_| connect(p)).collect();
    let opened = start.elapsed();
    // Every one is accepted and held (no request yet), and the server still answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(server.proc_.pid()) < 10_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(server.proc_.pid()) >= 10_000,
        "opened in {opened:?}"
    );
    let t = Instant::now();
    assert_eq!(get(p, "/sign_in?alive").code, 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    drop(conns);
}

#[test]
fn out_of_file_descriptors_pauses_accepting_without_spinning() {
    raise_fd_limit();
    let _one_at_a_time = HEAVY.lock();
    let server = ServerProc::start_with_fd_limit(64, &[]);
    let p = server.port;
    let pid = server.proc_.pid();
    // More connections than the server has descriptors for: the rest wait in the backlog.
    let conns: Vec<TcpStream> = (0..120).map(|_| connect(p)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(300),
        "the loop spun: {spent:?} of CPU in 1 s"
    );
    drop(conns);
    // Once descriptors are free again, it serves.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(p);
        s.write_all(b"GET /sign_in?back HTTP/1.0\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if let Ok(Some(r)) = parse_response(&raw) {
            assert_eq!(r.code, 200);
            break;
        }
        assert!(Instant::now() < deadline, "server did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}
