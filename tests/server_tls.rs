//! HTTPS on `--tls-port` against the real server binary, with a certificate made at run time
//! (rcgen) and a rustls client: the protocol and the page over TLS, keep-alive over one TLS
//! session, and hostile clients (garbage, plain HTTP, a handshake that never finishes) that
//! get closed without hurting anyone else.

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerconnection::signaling::http::{message_request, parse_response, ParsedResponse};
use peerconnection::signaling::ResponseParser;
use procs::{Proc, SERVER};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A server with plain and TLS ports, and the client configuration that trusts it.
struct TlsServer {
    proc_: Proc,
    port: u16,
    tls_port: u16,
    client: Arc<ClientConfig>,
}

fn port_of(line: &str) -> u16 {
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

impl TlsServer {
    fn start(extra: &[&str]) -> TlsServer {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("a certificate");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "tls-{}-{}",
            std::process::id(),
            rand_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut args = vec![
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        args.extend(extra);
        let mut proc_ = Proc::spawn("server", SERVER, &args);
        let port = port_of(&proc_.wait_line(
            "peerconnection_server listening on",
            Duration::from_secs(10),
        ));
        let tls_port = port_of(&proc_.wait_line(
            "peerconnection_server listening for TLS on",
            Duration::from_secs(10),
        ));
        let mut roots = RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsServer {
            proc_,
            port,
            tls_port,
            client: Arc::new(client),
        }
    }

    fn connect(&self) -> StreamOwned<ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.tls_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(self.client.clone(), name).unwrap();
        StreamOwned::new(conn, tcp)
    }

    /// One request over a fresh TLS session, read until the server ends it.
    fn request(&self, bytes: &[u8]) -> (ParsedResponse, Vec<u8>) {
        let mut s = self.connect();
        s.write_all(bytes).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("a clean end of the TLS session (close_notify)");
        let r = parse_response(&raw)
            .unwrap()
            .unwrap_or_else(|| panic!("incomplete: {:?}", String::from_utf8_lossy(&raw)));
        (r, raw)
    }

    fn get(&self, target: &str) -> ParsedResponse {
        self.request(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
            .0
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.proc_.signal(libc::SIGTERM);
        self.proc_.wait_exit(Duration::from_secs(5));
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// An HTTP/1.1 GET on a kept connection, and its answer.
fn get11(s: &mut (impl Read + Write), target: &str) -> ParsedResponse {
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    read_one(s)
}

/// One response off a kept connection.
fn read_one(s: &mut impl Read) -> ParsedResponse {
    let mut parser = ResponseParser::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed before a whole response");
        if let Some(r) = parser.feed(&buf[..n]).unwrap() {
            return r;
        }
    }
}

fn plain_get(port: u16, target: &str) -> ParsedResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw).unwrap().unwrap()
}

#[test]
fn the_protocol_and_the_page_over_tls_give_the_same_bytes() {
    let server = TlsServer::start(&[]);
    // The original client's sign-in, over TLS: the same answer bytes as on the plain port.
    let (r, raw_tls) = server.request(b"GET /sign_in?alice HTTP/1.0\r\n\r\n");
    assert_eq!((r.code, r.pragma), (200, Some(1)));
    let text = String::from_utf8(raw_tls).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 Added\r\nServer: PeerConnectionTestServer/0.1\r\nCache-Control: no-cache\r\nConnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nalice,1,1\n"), "{text}");
    // A member on the plain port and one on the TLS port talk to each other.
    let bob = plain_get(server.port, "/sign_in?bob").pragma.unwrap();
    assert_eq!(bob, 2);
    let (r, _) = server.request(&message_request(1, 2, "text/plain", b"over tls"));
    assert_eq!(r.code, 200);
    assert_eq!(plain_get(server.port, "/wait?peer_id=2").body, b"over tls");
    // A hanging GET held over TLS is answered when the plain member posts.
    let mut held = server.connect();
    held.write_all(b"GET /wait?peer_id=1 HTTP/1.0\r\n\r\n")
        .unwrap();
    let first = read_one(&mut held);
    assert_eq!(first.body, b"bob,2,1\n");
    let mut held = server.connect();
    held.write_all(b"GET /wait?peer_id=1 HTTP/1.0\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.write_all(&message_request(2, 1, "application/json", b"{\"x\":1}"))
        .unwrap();
    let got = read_one(&mut held);
    assert_eq!(
        (got.pragma, got.content_type.as_deref(), got.body.as_slice()),
        (Some(2), Some("application/json"), &b"{\"x\":1}"[..])
    );
    // The page and its script.
    let page = server.get("/");
    assert_eq!(page.code, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
    assert_eq!(server.get("/app.js").code, 200);
    assert_eq!(server.get("/nowhere").code, 404);
}

#[test]
fn keep_alive_over_one_tls_session() {
    let server = TlsServer::start(&[]);
    let mut s = server.connect();
    assert_eq!(get11(&mut s, "/sign_in?alice").pragma, Some(1));
    assert_eq!(get11(&mut s, "/sign_in?bob").pragma, Some(2));
    assert_eq!(get11(&mut s, "/wait?peer_id=1").body, b"bob,2,1\n");
    for i in 0..50 {
        let text = format!("m{i}");
        let mut req = format!(
            "POST /message?peer_id=2&to=1 HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            text.len()
        )
        .into_bytes();
        req.extend_from_slice(text.as_bytes());
        s.write_all(&req).unwrap();
        assert_eq!(read_one(&mut s).code, 200);
        assert_eq!(get11(&mut s, "/wait?peer_id=1").body, text.into_bytes());
    }
}

#[test]
fn bad_handshakes_plain_http_and_slow_handshakes_hurt_nobody() {
    // A request time-out long enough that a loaded machine finishes the good handshakes
    // within it, short enough to see the slow one closed at it.
    let server = TlsServer::start(&["--request-timeout", "3"]);
    let start = Instant::now();
    // Garbage where a ClientHello should be.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.tls_port)).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    // Plain HTTP on the TLS port.
    let mut plain = TcpStream::connect(("127.0.0.1", server.tls_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"GET /sign_in?x HTTP/1.0\r\n\r\n").unwrap();
    // A handshake that never finishes: connected, half a record, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", server.tls_port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // Meanwhile both ports serve.
    for i in 0..5 {
        assert_eq!(server.get(&format!("/sign_in?tls{i}")).code, 200);
        assert_eq!(
            plain_get(server.port, &format!("/sign_in?plain{i}")).code,
            200
        );
    }
    // The garbage and the plain-text request get (at most) an alert and a close.
    for (what, s) in [("garbage", &mut garbage), ("plain HTTP", &mut plain)] {
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert!(
            !raw.starts_with(b"HTTP/"),
            "{what}: answered in plain text: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert!(raw.len() < 64, "{what}: {} bytes back", raw.len());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{what} closed before the request time-out"
        );
    }
    // The slow one is closed at the request time-out.
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(server.get("/sign_in?after").code, 200);
}

#[test]
fn an_unusable_certificate_or_key_is_a_bad_setting_named_on_stderr() {
    let missing = "/nonexistent/cert.pem";
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (cert, key, named) in [(missing, manifest, missing), (manifest, manifest, manifest)] {
        let mut p = Proc::spawn(
            "server",
            SERVER,
            &[
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                "0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
        );
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(2));
        let stderr = p.stderr();
        assert!(stderr.contains(named), "{stderr}");
    }
}
