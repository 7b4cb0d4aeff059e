//! Files over the call's data channels, black-box: the real server and two headless
//! clients on loopback with `--send-file` and `--receive-dir`. Contract: each file goes on
//! its own channel with back-pressure; `FILE_PROGRESS` lines each second,
//! `FILE_SENT`/`FILE_RECEIVED name=... bytes=... sha256=... mb_per_s=...` when done,
//! `FILE_FAILED dir=... name=... reason=...` when refused or cut; the received file is
//! byte-identical and nothing is written outside the receive folder.
//!
//! Rates are printed (`cargo test --release --test files -- --nocapture`), never asserted.

mod procs;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerconnection::client::file_transfer::{CHUNK, SEND_WINDOW};
use procs::{field, num, Proc, ServerProc};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MB: usize = 1_000_000;

/// One test at a time: each runs two clients moving tens of MB, and the video-rate check
/// is about a transfer beside the video, not about three of them sharing the cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh folder under the test's temporary directory.
fn folder(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test folder");
    dir
}

/// `len` random bytes (seeded) in `dir/name`; returns the path and its SHA-256 in hex.
fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, String) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write test file");
    (path, sha256(&data))
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_of(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// A headless client sending the test pattern that stops by itself after 120 s.
fn client(name: &str, port: u16, extra: &[&str]) -> Proc {
    let args = [&procs::PATTERN_ARGS[..], &["--duration", "120"], extra].concat();
    procs::client(name, port, &args, &[])
}

/// Reads a client's lines until one starting with each of `prefixes` has come (in any
/// order); returns every line read.
fn until_all(p: &mut Proc, prefixes: &[&str], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut missing: Vec<&str> = prefixes.to_vec();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = p.next_line(left) else {
            panic!(
                "{}: no {missing:?} within {timeout:?}; {}",
                p.name,
                p.transcript()
            );
        };
        if let Some(i) = missing.iter().position(|m| line.starts_with(m)) {
            missing.remove(i);
        }
        lines.push(line);
    }
    lines
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {prefix} in {lines:?}"))
}

/// Every file in `dir` (hidden partial files included).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A plain TCP copy of `len` bytes over loopback: the baseline the rate is shown beside.
fn tcp_loopback_mb_per_s(len: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let chunk = vec![7u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("write");
            left -= n;
        }
    });
    let (mut r, _) = listener.accept().expect("accept");
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        match r.read(&mut buf).expect("read") {
            0 => break,
            n => got += n,
        }
    }
    writer.join().expect("writer");
    got as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// 50 MB of random bytes each way at once: both arrive byte-identical (SHA-256 of the
/// saved file, of the source, and on both sides' lines agree) while each side keeps
/// decoding the other's video at 25 fps or more.
#[test]
fn fifty_megabytes_each_way_at_once_beside_the_video() {
    let _serial = one_at_a_time();
    let src = folder("src50");
    let (alice_in, bob_in) = (folder("alice50"), folder("bob50"));
    let (alice_file, alice_sha) = random_file(&src, "from-alice.bin", 50 * MB, 1);
    let (bob_file, bob_sha) = random_file(&src, "from-bob.bin", 50 * MB, 2);
    let server = ServerProc::start(&[]);
    let bob_args = [
        "--send-file",
        bob_file.to_str().unwrap(),
        "--receive-dir",
        bob_in.to_str().unwrap(),
    ];
    let mut bob = client("bob", server.port, &bob_args);
    bob.wait_line("SIGNED_IN", SECS(10));
    let alice_args = [
        "--call",
        "bob",
        "--send-file",
        alice_file.to_str().unwrap(),
        "--receive-dir",
        alice_in.to_str().unwrap(),
    ];
    let mut alice = client("alice", server.port, &alice_args);
    alice.wait_line("CHAT_OPEN", SECS(20));
    bob.wait_line("CHAT_OPEN", SECS(20));

    let done = ["FILE_SENT", "FILE_RECEIVED"];
    let alice_lines = until_all(&mut alice, &done, SECS(90));
    let bob_lines = until_all(&mut bob, &done, SECS(90));

    for (lines, sent_sha, got_sha, got_name, dir) in [
        (
            &alice_lines,
            &alice_sha,
            &bob_sha,
            "from-bob.bin",
            &alice_in,
        ),
        (&bob_lines, &bob_sha, &alice_sha, "from-alice.bin", &bob_in),
    ] {
        let sent = line_with(lines, "FILE_SENT");
        assert_eq!(field(sent, "sha256"), Some(sent_sha.as_str()), "{sent}");
        assert_eq!(num(sent, "bytes") as usize, 50 * MB, "{sent}");
        let got = line_with(lines, "FILE_RECEIVED");
        assert_eq!(field(got, "sha256"), Some(got_sha.as_str()), "{got}");
        assert_eq!(
            field(got, "saved"),
            Some(format!("{got_name:?}").as_str()),
            "{got}"
        );
        assert_eq!(&sha256_of(&dir.join(got_name)), got_sha);
        assert_eq!(listing(dir), [got_name], "only the file, no partial left");
        assert!(lines.iter().any(|l| l.starts_with("FILE_PROGRESS")));
    }

    // Video during the transfer: the STATS lines from the first progress line to the end.
    let mut fps = Vec::new();
    for lines in [&alice_lines, &bob_lines] {
        let from = lines
            .iter()
            .position(|l| l.starts_with("FILE_PROGRESS"))
            .expect("progress");
        fps.extend(
            lines[from..]
                .iter()
                .filter(|l| l.starts_with("STATS"))
                .map(|l| num(l, "recv_fps")),
        );
    }
    assert!(!fps.is_empty(), "no STATS during the transfer");
    let low = fps.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        low >= 25.0,
        "recv_fps fell to {low} during the transfer: {fps:?}"
    );

    let rates: Vec<String> = [&alice_lines, &bob_lines]
        .iter()
        .map(|l| {
            field(line_with(l, "FILE_SENT"), "mb_per_s")
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    eprintln!(
        "files: 50 MB each way at once: {} MB/s (alice -> bob), {} MB/s (bob -> alice); \
         recv_fps {low:.0}..; TCP loopback copy in this run: {:.0} MB/s",
        rates[0],
        rates[1],
        tcp_loopback_mb_per_s(200 * MB)
    );
    for dir in [src, alice_in, bob_in] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Refusals, each with a clear reason on both sides and nothing written: a name with
/// path separators (`..\..\`), a file over `--receive-max-bytes`, and a peer with no
/// `--receive-dir`. The call and the other files go on.
#[test]
fn bad_names_oversized_files_and_closed_doors_are_refused() {
    let _serial = one_at_a_time();
    let src = folder("srcbad");
    let bob_in = folder("bobbad");
    let (evil, _) = random_file(&src, "..\\..\\evil.bin", 1000, 3);
    let (big, _) = random_file(&src, "big.bin", 300_000, 4);
    let (ok, ok_sha) = random_file(&src, "ok.bin", 200_000, 5);
    let server = ServerProc::start(&[]);
    let bob_args = [
        "--receive-dir",
        bob_in.to_str().unwrap(),
        "--receive-max-bytes",
        "250000",
    ];
    let mut bob = client("bob", server.port, &bob_args);
    bob.wait_line("SIGNED_IN", SECS(10));
    let alice_args = [
        "--call",
        "bob",
        "--send-file",
        evil.to_str().unwrap(),
        "--send-file",
        big.to_str().unwrap(),
        "--send-file",
        ok.to_str().unwrap(),
    ];
    let mut alice = client("alice", server.port, &alice_args);
    let lines = until_all(
        &mut alice,
        &["FILE_FAILED", "FILE_FAILED", "FILE_SENT"],
        SECS(30),
    );
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("FILE_FAILED"))
        .collect();
    assert!(
        failed
            .iter()
            .any(|l| l.contains(r#"name="..\\..\\evil.bin""#)
                && l.contains("contains a path separator")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|l| l.contains(r#"name="big.bin""#)
            && l.contains("300000 bytes, more than the 250000 bytes this receiver allows")),
        "{failed:?}"
    );
    let sent = line_with(&lines, "FILE_SENT");
    assert_eq!(field(sent, "sha256"), Some(ok_sha.as_str()), "{sent}");
    let got = bob.wait_line("FILE_RECEIVED", SECS(10));
    assert_eq!(
        field(got.as_str(), "sha256"),
        Some(ok_sha.as_str()),
        "{got}"
    );
    assert_eq!(
        bob.seen_with("FILE_FAILED dir=recv").len(),
        2,
        "{:?}",
        bob.seen()
    );
    assert_eq!(listing(&bob_in), ["ok.bin"]);

    // A peer without --receive-dir refuses; alice's video call goes on.
    drop(bob);
    let mut carol = client("carol", server.port, &[]);
    carol.wait_line("SIGNED_IN", SECS(10));
    let mut alice = client(
        "alice2",
        server.port,
        &["--call", "carol", "--send-file", ok.to_str().unwrap()],
    );
    let failed = alice.wait_line("FILE_FAILED", SECS(30));
    assert!(
        failed.contains("this peer takes no files (no --receive-dir)"),
        "{failed}"
    );
    carol.wait_line("FILE_FAILED dir=recv", SECS(5));
    let stats = alice.wait_line("STATS", SECS(5));
    assert!(num(&stats, "recv_fps") > 0.0, "{stats}");
    assert!(alice.seen_with("CALL_ENDED").is_empty());
    for dir in [src, bob_in] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The receiver stops reading (SIGSTOP) mid-file: the sender's window holds what str0m
/// buffers to SEND_WINDOW + CHUNK and its memory does not grow with the file; once the
/// receiver goes on, the file completes byte-identical.
#[test]
fn a_peer_that_stops_reading_holds_the_sender_to_its_window() {
    let _serial = one_at_a_time();
    let src = folder("srcstop");
    let bob_in = folder("bobstop");
    let (file, sha) = random_file(&src, "long.bin", 50 * MB, 6);
    let server = ServerProc::start(&[]);
    let mut bob = client(
        "bob",
        server.port,
        &["--receive-dir", bob_in.to_str().unwrap()],
    );
    bob.wait_line("SIGNED_IN", SECS(10));
    let mut alice = client(
        "alice",
        server.port,
        &["--call", "bob", "--send-file", file.to_str().unwrap()],
    );
    alice.wait_line("FILE_PROGRESS dir=send", SECS(30));
    let before = rss(alice.pid());
    bob.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    // 4 s: past the 2.5 s silent mark, well before the 8 s dead-peer rule.
    let lines = alice.lines_for(SECS(4));
    let during = rss(alice.pid());
    bob.signal(libc::SIGCONT);
    let progress: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("FILE_PROGRESS dir=send"))
        .collect();
    assert!(progress.len() >= 2, "{lines:?}");
    let bound = (SEND_WINDOW + CHUNK) as f64;
    for p in &progress {
        let held = num(p, "buffered") + num(p, "held");
        assert!(held <= bound, "{held} bytes held (bound {bound}): {p}");
    }
    // Nothing moves while the receiver is stopped (after the first second of it).
    let last = progress.iter().map(|p| num(p, "bytes")).collect::<Vec<_>>();
    assert_eq!(last[last.len() - 1], last[last.len() - 2], "{progress:?}");
    let growth = during.saturating_sub(before);
    assert!(
        growth < 8 << 20,
        "alice's memory grew {growth} bytes while bob was stopped"
    );
    eprintln!(
        "files: stopped receiver for {:?}: sender held at most {bound} bytes in its window, RSS {} -> {} KiB",
        stopped_at.elapsed(),
        before / 1024,
        during / 1024
    );
    let sent = alice.wait_line("FILE_SENT", SECS(60));
    assert_eq!(field(&sent, "sha256"), Some(sha.as_str()), "{sent}");
    bob.wait_line("FILE_RECEIVED", SECS(10));
    assert_eq!(sha256_of(&bob_in.join("long.bin")), sha);
    for dir in [src, bob_in] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
