//! Chat and hang-up over the call's `chat` data channel, black-box: the real server and two
//! headless clients on loopback with `--chat-stdin`, lines written to a client's stdin.
//! Contract: `CHAT_OPEN peer=N` once the channel is open; `CHAT peer=N text="..."` for
//! each message received (the text escaped as a Rust string literal); a hang-up reaches
//! the peer over the channel even with the signaling server gone.

mod procs;

use std::time::{Duration, Instant};

use procs::{num, Proc, ServerProc};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A headless chat client (test pattern, 320x240) that stops by itself after 60 s.
fn client(name: &str, port: u16, extra: &[&str]) -> Proc {
    let chat = ["--chat-stdin", "--duration", "60"];
    let args = [&procs::PATTERN_ARGS[..], &chat, extra].concat();
    procs::client_with_stdin(name, port, &args)
}

fn signed_in(p: &mut Proc) -> u32 {
    num(&p.wait_line("SIGNED_IN", SECS(10)), "id") as u32
}

/// bob idle, alice `--call bob`; both with the chat channel open. Returns their ids.
fn chat_call(port: u16) -> (Proc, Proc, u32, u32) {
    let mut bob = client("bob", port, &[]);
    let bob_id = signed_in(&mut bob);
    let (alice, alice_id) = call_bob(port, &mut bob, bob_id);
    (alice, bob, alice_id, bob_id)
}

/// alice `--call bob`; returns her and her id once the chat channel is open on both sides.
fn call_bob(port: u16, bob: &mut Proc, bob_id: u32) -> (Proc, u32) {
    let mut alice = client("alice", port, &["--call", "bob"]);
    let alice_id = signed_in(&mut alice);
    let open = alice.wait_line("CHAT_OPEN", SECS(15));
    assert_eq!(num(&open, "peer") as u32, bob_id, "{open}");
    let open = bob.wait_line("CHAT_OPEN", SECS(15));
    assert_eq!(num(&open, "peer") as u32, alice_id, "{open}");
    (alice, alice_id)
}

/// Waits up to `timeout` for a warning containing `text` in the process's stderr.
fn wait_stderr(p: &Proc, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !p.stderr().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{}: no {text:?} on stderr\n{}",
            p.name,
            p.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines typed on one side print on the other, escaped, both ways; a line with no call
/// and an overlong line are dropped with a warning; stdin's end stops only the reading.
#[test]
fn chat_lines_cross_the_data_channel() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let mut bob = client("bob", port, &[]);
    let bob_id = signed_in(&mut bob);
    bob.write_stdin(b"nobody to talk to\n");
    wait_stderr(&bob, "not in a call: dropped a line", SECS(5));
    let (mut alice, alice_id) = call_bob(port, &mut bob, bob_id);

    let sent = Instant::now();
    alice.write_stdin(b"hello bob, \"quoted\" \\ caf\xc3\xa9\n");
    let got = bob.wait_line("CHAT", SECS(5));
    assert_eq!(
        got,
        format!(r#"CHAT peer={alice_id} text="hello bob, \"quoted\" \\ café""#)
    );
    assert!(sent.elapsed() < SECS(5));

    // Too long: refused at alice, nothing reaches bob; the next line goes through.
    let long = format!("{}\n", "x".repeat(5000));
    alice.write_stdin(long.as_bytes());
    wait_stderr(&alice, "over 4096 bytes was refused", SECS(5));
    alice.write_stdin(b"short\r\n");
    let got = bob.wait_line("CHAT", SECS(5));
    assert_eq!(got, format!(r#"CHAT peer={alice_id} text="short""#));

    // The other way, after alice's stdin ended (she still hears).
    alice.close_stdin();
    bob.write_stdin(b"hi alice\n");
    let got = alice.wait_line("CHAT", SECS(5));
    assert_eq!(got, format!(r#"CHAT peer={bob_id} text="hi alice""#));
    assert!(alice.seen_with("CALL_ENDED").is_empty() && bob.seen_with("CALL_ENDED").is_empty());
}

/// With the signaling server gone, alice hangs up (SIGINT): bob hears it over the data
/// channel at once, not after the 8 s dead-peer rule.
#[test]
fn a_hang_up_crosses_the_data_channel_without_the_server() {
    let server = ServerProc::start(&[]);
    let (mut alice, mut bob, alice_id, _) = chat_call(server.port);
    server.proc_.signal(libc::SIGKILL);
    drop(server);
    alice.wait_line("SERVER_LOST", SECS(10));
    bob.wait_line("SERVER_LOST", SECS(10));

    alice.interrupt();
    let hung_up = Instant::now();
    let end = bob.wait_line("CALL_ENDED", SECS(4));
    let took = hung_up.elapsed();
    assert!(
        took <= SECS(3),
        "CALL_ENDED {took:?} after the hang-up: {end}"
    );
    assert_eq!(num(&end, "peer") as u32, alice_id, "{end}");
    assert!(end.contains(r#"reason="the peer hung up (BYE)""#), "{end}");
    assert!(
        alice.wait_exit(SECS(10)).is_some(),
        "alice exits after SIGINT\n{}",
        alice.transcript()
    );
}
