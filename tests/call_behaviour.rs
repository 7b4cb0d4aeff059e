//! How a call behaves when things go wrong, black-box: the real server and real client
//! processes on loopback, plus a fake member (tests/procs/member.rs) that sends what a real
//! client never would. Each test runs its own server on its own port, bounds every wait and
//! stays under about a minute.
//!
//! The contract these tests check (stdout lines of `peerconnection_client`):
//! `SIGNED_IN id=N`, `SERVER_LOST reason=".."`, `INCOMING_CALL peer=N name=NAME`,
//! `CALL_STARTED peer=N`, `CALL_REFUSED peer=N reason=".."`,
//! `PEER_NOT_ANSWERING peer=N silent_ms=N`, `PEER_ANSWERING peer=N`,
//! `CALL_ENDED peer=N reason=".." frames_sent=N frames_decoded=N ...`,
//! `STATS t=SECONDS state=.. call=N|- sent_fps=.. recv_fps=.. ... decoded=N ...`;
//! the flags `--call NAME` and `--auto-answer`; exit code 2 for bad settings.

mod procs;

use std::time::{Duration, Instant};

use procs::member::{self, is_bye, Member};
use procs::{free_port, num, Proc, ServerProc};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A headless client sending the test pattern at 320x240, 400 kbit/s, printing STATS; `extra`
/// flags last. Dropping the `Proc` kills it, so none outlives a failed test.
fn client(name: &str, port: u16, extra: &[&str]) -> Proc {
    procs::pattern_client(name, port, extra)
}

/// The id from the client's `SIGNED_IN id=N` line.
fn signed_in(p: &mut Proc) -> u32 {
    num(&p.wait_line("SIGNED_IN", SECS(10)), "id") as u32
}

/// Waits for a STATS line with at least `frames` decoded; returns it.
fn wait_decoding(p: &mut Proc, frames: f64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p.wait_line("STATS", left);
        if num(&line, "decoded") >= frames {
            return line;
        }
    }
}

/// The quoted `reason="..."` of a line (empty when absent).
fn reason(line: &str) -> &str {
    line.split_once("reason=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map_or("", |(r, _)| r)
}

fn peer(line: &str) -> u32 {
    num(line, "peer") as u32
}

/// Lines read from several processes at once, each with the time it was read (to ~20 ms).
type Stamped = Vec<(Instant, String)>;

/// Reads every process's stdout for up to `window`, stopping early once `done` says so.
fn watch(
    procs: &mut [&mut Proc],
    window: Duration,
    mut done: impl FnMut(&[Stamped]) -> bool,
) -> Vec<Stamped> {
    let deadline = Instant::now() + window;
    let mut out: Vec<Stamped> = vec![Vec::new(); procs.len()];
    loop {
        let now = Instant::now();
        for (p, o) in procs.iter_mut().zip(out.iter_mut()) {
            o.extend(p.drain().into_iter().map(|l| (now, l)));
        }
        if done(&out) || now >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn starting<'a>(lines: &'a Stamped, prefix: &str) -> Vec<&'a (Instant, String)> {
    lines
        .iter()
        .filter(|(_, l)| l.starts_with(prefix))
        .collect()
}

/// Checks that every STATS line among `lines` shows the call flowing: after the first line
/// with a decoded frame (whose interval may be partial), recv_fps stays above `min_fps`.
/// Returns how many lines were checked.
fn assert_flowing<'a>(
    who: &str,
    lines: impl IntoIterator<Item = &'a String>,
    min_fps: f64,
) -> usize {
    let stats: Vec<&String> = lines
        .into_iter()
        .filter(|l| l.starts_with("STATS"))
        .collect();
    let first = stats
        .iter()
        .position(|l| num(l, "decoded") > 0.0)
        .unwrap_or_else(|| panic!("{who}: no STATS line shows a decoded frame: {stats:#?}"));
    let checked = &stats[first + 1..];
    for l in checked {
        assert!(
            num(l, "recv_fps") > min_fps,
            "{who}: the call stalled: {l}\nall STATS: {stats:#?}"
        );
    }
    checked.len()
}

/// Asserts no line of `p` read so far starts with `prefix`.
fn assert_never(p: &Proc, prefix: &str) {
    assert!(
        p.seen_with(prefix).is_empty(),
        "{}: unexpected {prefix}\n{}",
        p.name,
        p.transcript()
    );
}

/// bob idle, alice `--call bob`; returns (alice, bob, alice's id, bob's id) once both decode.
fn call_between(port: u16, duration: &str) -> (Proc, Proc, u32, u32) {
    let mut bob = client("bob", port, &["--duration", duration]);
    let bob_id = signed_in(&mut bob);
    let mut alice = client("alice", port, &["--call", "bob", "--duration", duration]);
    let alice_id = signed_in(&mut alice);
    let started = alice.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&started), bob_id, "{started}");
    wait_decoding(&mut alice, 30.0, SECS(15));
    wait_decoding(&mut bob, 30.0, SECS(15));
    (alice, bob, alice_id, bob_id)
}

/// a) A peer that dies mid-call (SIGKILL: no BYE, no sign-out) is noticed from the media
/// alone: PEER_NOT_ANSWERING first, then CALL_ENDED "no packets" within 15 s of the kill.
#[test]
fn a_dead_peer_ends_the_call() {
    let server = ServerProc::start(&[]);
    let (mut alice, bob, _, bob_id) = call_between(server.port, "60");
    bob.signal(libc::SIGKILL);
    let killed = Instant::now();
    let end = alice.wait_line("CALL_ENDED", SECS(16));
    let took = killed.elapsed();
    assert!(
        took <= SECS(15),
        "CALL_ENDED {took:?} after the kill\n{}",
        alice.transcript()
    );
    assert_eq!(peer(&end), bob_id, "{end}");
    assert!(
        reason(&end).contains("no packets"),
        "the reason names the silence: {end}"
    );
    let seen = alice.seen();
    let end_at = seen.iter().rposition(|l| l == &end).expect("end line");
    let warned = seen[..end_at]
        .iter()
        .rposition(|l| l.starts_with("PEER_NOT_ANSWERING"))
        .unwrap_or_else(|| {
            panic!(
                "no PEER_NOT_ANSWERING before CALL_ENDED\n{}",
                alice.transcript()
            )
        });
    assert_eq!(peer(&seen[warned]), bob_id, "{}", seen[warned]);
}

/// b) The signaling server dies and comes back on the same port: both clients report
/// SERVER_LOST and sign in again, and the call (peer to peer) never notices: recv_fps stays
/// above 20 and no CALL_ENDED. Then alice hangs up (SIGINT) and bob learns of it within 15 s.
#[test]
fn b_call_survives_a_signaling_outage() {
    let port = free_port();
    let server = ServerProc::start_on(port, &[]);
    let (mut alice, mut bob, _, _) = call_between(port, "90");
    server.proc_.signal(libc::SIGKILL);
    drop(server);
    std::thread::sleep(SECS(2));
    let _server = ServerProc::start_on(port, &[]);

    // Both lose the server and sign in again (the rejoin retries every couple of seconds).
    let back = |lines: &Stamped| {
        lines
            .iter()
            .position(|(_, l)| l.starts_with("SERVER_LOST"))
            .is_some_and(|lost| {
                lines[lost..]
                    .iter()
                    .any(|(_, l)| l.starts_with("SIGNED_IN"))
            })
    };
    let out = watch(&mut [&mut alice, &mut bob], SECS(20), |o| {
        o.iter().all(back)
    });
    for (p, o) in [&alice, &bob].iter().zip(&out) {
        assert!(
            back(o),
            "{}: no SERVER_LOST then SIGNED_IN\n{}",
            p.name,
            p.transcript()
        );
    }
    // A few more seconds of the call on the new server.
    watch(&mut [&mut alice, &mut bob], SECS(3), |_| false);
    for p in [&alice, &bob] {
        assert_never(p, "CALL_ENDED");
        let n = assert_flowing(&p.name, p.seen(), 20.0);
        assert!(n >= 5, "{}: only {n} STATS lines checked", p.name);
    }

    alice.interrupt();
    let hung_up = Instant::now();
    let end = bob.wait_line("CALL_ENDED", SECS(15));
    assert!(hung_up.elapsed() <= SECS(15), "{end}");
    assert!(
        alice.wait_exit(SECS(10)).is_some(),
        "alice exits after SIGINT\n{}",
        alice.transcript()
    );
}

/// c) Glare: alice and bob start together and each calls the other as soon as it sees it.
/// Exactly one call results, on both sides, and it lasts until `--duration` ends it. Three
/// rounds: the outcome must not depend on luck.
#[test]
fn c_glare_makes_exactly_one_call() {
    for round in 0..3 {
        let server = ServerProc::start(&[]);
        let port = server.port;
        let mut alice = client("alice", port, &["--call", "bob", "--duration", "9"]);
        let mut bob = client("bob", port, &["--call", "alice", "--duration", "9"]);
        let both_ended = |o: &[Stamped]| o.iter().all(|l| !starting(l, "CALL_ENDED").is_empty());
        let out = watch(&mut [&mut alice, &mut bob], SECS(25), both_ended);
        let ids: Vec<u32> = [&alice, &bob]
            .iter()
            .map(|p| {
                let l = p.seen_with("SIGNED_IN");
                assert!(!l.is_empty(), "round {round}: {}", p.transcript());
                num(l[0], "id") as u32
            })
            .collect();
        for (i, (p, o)) in [&alice, &bob].iter().zip(&out).enumerate() {
            let other = ids[1 - i];
            let started = starting(o, "CALL_STARTED");
            assert_eq!(
                started.len(),
                1,
                "round {round}: {} must start exactly one call\n{}",
                p.name,
                p.transcript()
            );
            assert_eq!(
                peer(&started[0].1),
                other,
                "round {round}: {}",
                started[0].1
            );
            let ended = starting(o, "CALL_ENDED");
            assert_eq!(
                ended.len(),
                1,
                "round {round}: {}\n{}",
                p.name,
                p.transcript()
            );
            let lasted = ended[0].0 - started[0].0;
            assert!(
                lasted >= SECS(4),
                "round {round}: {}'s call ended after {lasted:?}: {}\n{}",
                p.name,
                ended[0].1,
                p.transcript()
            );
            assert!(
                num(&ended[0].1, "frames_decoded") >= 60.0,
                "round {round}: {}: {}",
                p.name,
                ended[0].1
            );
        }
    }
}

/// d) Messages from a stranger to an idle client (a stray candidate, an answer, BYE, junk,
/// an empty body) start nothing; the client then takes a real call as usual.
#[test]
fn d_strangers_do_not_start_a_call() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let mut bob = client("bob", port, &["--duration", "60"]);
    let bob_id = signed_in(&mut bob);
    let mallory = Member::sign_in(port, "mallory");
    assert_eq!(mallory.peer_id("bob"), Some(bob_id));
    let mut bodies = vec![member::candidate_json(1), member::answer(), b"BYE".to_vec()];
    bodies.extend(member::junk());
    bodies.push(Vec::new());
    bodies.push(member::candidate_json(2));
    for b in &bodies {
        assert_eq!(
            mallory.send(bob_id, b),
            200,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    bob.lines_for(Duration::from_millis(2500));
    assert_never(&bob, "CALL_STARTED");
    assert_never(&bob, "INCOMING_CALL");

    let mut carol = client("carol", port, &["--call", "bob", "--duration", "60"]);
    let carol_id = signed_in(&mut carol);
    let started = carol.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&started), bob_id, "{started}");
    let bob_started = bob.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&bob_started), carol_id, "{bob_started}");
    wait_decoding(&mut carol, 30.0, SECS(15));
    wait_decoding(&mut bob, 30.0, SECS(15));
}

/// e) Messages from a stranger to a client in a call (candidates, answers, BYE, junk) leave
/// the call alone.
#[test]
fn e_strangers_do_not_disturb_a_call() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let (mut alice, mut bob, _, bob_id) = call_between(port, "60");
    let mallory = Member::sign_in(port, "mallory");
    let mut bodies: Vec<Vec<u8>> = (0..5).map(member::candidate_json).collect();
    bodies.push(member::answer());
    bodies.push(b"BYE".to_vec());
    bodies.push(member::answer());
    bodies.extend(member::junk());
    bodies.push(Vec::new());
    bodies.push(b"BYE".to_vec());
    let mark = (alice.seen().len(), bob.seen().len());
    for b in &bodies {
        assert_eq!(mallory.send(bob_id, b), 200);
    }
    watch(&mut [&mut alice, &mut bob], SECS(5), |_| false);
    for (p, from) in [(&alice, mark.0), (&bob, mark.1)] {
        assert_never(p, "CALL_ENDED");
        let stats: Vec<&String> = p.seen()[from..]
            .iter()
            .filter(|l| l.starts_with("STATS"))
            .collect();
        assert!(stats.len() >= 4, "{}", p.transcript());
        for l in stats {
            assert!(
                num(l, "recv_fps") > 20.0,
                "{}: the call stalled: {l}\n{}",
                p.name,
                p.transcript()
            );
        }
    }
}

/// f) A call to a client already in a call is refused at once: the caller hears "busy or
/// declined" within 3 s, the callee reports CALL_REFUSED "busy", and its call goes on.
#[test]
fn f_a_busy_client_refuses_a_second_caller() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let (mut alice, mut bob, _, bob_id) = call_between(port, "60");
    let mut carol = client("carol", port, &["--call", "bob", "--duration", "60"]);
    let carol_id = signed_in(&mut carol);
    let started = carol.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&started), bob_id, "{started}");
    let end = carol.wait_line("CALL_ENDED", SECS(3));
    assert!(reason(&end).contains("busy or declined"), "{end}");
    let refused = bob.wait_line("CALL_REFUSED", SECS(3));
    assert_eq!(peer(&refused), carol_id, "{refused}");
    assert!(reason(&refused).contains("busy"), "{refused}");

    let mark = (alice.seen().len(), bob.seen().len());
    watch(&mut [&mut alice, &mut bob], SECS(3), |_| false);
    for (p, from) in [(&alice, mark.0), (&bob, mark.1)] {
        assert_never(p, "CALL_ENDED");
        let stats: Vec<&String> = p.seen()[from..]
            .iter()
            .filter(|l| l.starts_with("STATS"))
            .collect();
        assert!(stats.len() >= 2, "{}", p.transcript());
        for l in stats {
            assert!(num(l, "recv_fps") > 20.0, "{}: {l}", p.name);
        }
    }
}

/// What a flood showed: when each offer was sent, and what came back meanwhile.
struct Flood {
    sent: Vec<Instant>,
    replies: Vec<(Instant, u32, Vec<u8>)>,
}

/// Sends `offer` to `to` `times` times back to back and, for `window` from the first send,
/// reads both `p`'s stdout and what comes back to `mallory` (on another thread). `p`'s STATS
/// must keep their rhythm: the `t=` of consecutive lines never more than 2.5 s apart, and the
/// lines cover the window.
fn flood(
    mallory: &mut Member,
    to: u32,
    offer: &[u8],
    times: usize,
    p: &mut Proc,
    window: Duration,
) -> Flood {
    p.drain();
    let before = p.seen_with("STATS").last().map(|l| num(l, "t"));
    let poster = mallory.poster();
    let start = Instant::now();
    let (sent, lines, replies) = std::thread::scope(|s| {
        let listener = s.spawn(|| mallory.messages_for(window));
        let sent: Vec<Instant> = (0..times)
            .map(|_| {
                assert_eq!(poster.send(to, offer), 200, "the server takes the offer");
                Instant::now()
            })
            .collect();
        let lines = p.lines_for(window.saturating_sub(start.elapsed()));
        (sent, lines, listener.join().expect("member thread"))
    });
    let mut ts: Vec<f64> = before.into_iter().collect();
    ts.extend(
        lines
            .iter()
            .filter(|l| l.starts_with("STATS"))
            .map(|l| num(l, "t")),
    );
    assert!(
        ts.len() >= window.as_secs() as usize - 1,
        "{}: STATS stopped during the flood: t={ts:?}\n{}",
        p.name,
        p.transcript()
    );
    for w in ts.windows(2) {
        assert!(
            w[1] - w[0] <= 2.5,
            "{}: the loop stalled {:.1} s during the flood: t={ts:?}",
            p.name,
            w[1] - w[0]
        );
    }
    Flood { sent, replies }
}

/// g) Six ~700 KB offers with 10,000 candidates each, back to back, first to an idle client
/// and then to one in a call: its loop keeps its 1 s STATS rhythm, in a call it answers each
/// with BYE within 3 s, and its log does not quote the offers.
#[test]
fn g_a_flood_of_huge_offers_does_not_stall_the_client() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let offer = member::offer_with_candidates(10_000);
    assert!(offer.len() > 600_000, "{} bytes", offer.len());
    // The log size is part of the check: keep it at info whatever RUST_LOG says.
    let args = [&procs::PATTERN_ARGS[..], &["--duration", "60"]].concat();
    let mut bob = procs::client("bob", port, &args, &[("RUST_LOG", "info")]);
    let bob_id = signed_in(&mut bob);
    bob.wait_line("STATS", SECS(3));
    let mut mallory = Member::sign_in(port, "mallory");

    // Idle: whatever bob makes of the offers, mallory then hangs up.
    flood(&mut mallory, bob_id, &offer, 6, &mut bob, SECS(8));
    assert_eq!(mallory.send(bob_id, b"BYE"), 200);
    mallory.messages_for(SECS(1));

    // In a call with alice: each offer is refused with BYE within 3 s.
    let mut alice = client("alice", port, &["--call", "bob", "--duration", "60"]);
    signed_in(&mut alice);
    alice.wait_line("CALL_STARTED", SECS(10));
    wait_decoding(&mut alice, 30.0, SECS(15));
    wait_decoding(&mut bob, 30.0, SECS(15));
    let f = flood(&mut mallory, bob_id, &offer, 6, &mut bob, SECS(8));
    let byes: Vec<Instant> = f
        .replies
        .iter()
        .filter(|(_, from, body)| *from == bob_id && is_bye(body))
        .map(|(at, _, _)| *at)
        .collect();
    assert_eq!(
        byes.len(),
        6,
        "one BYE per refused offer\n{}",
        bob.transcript()
    );
    for (k, (bye, sent)) in byes.iter().zip(&f.sent).enumerate() {
        let took = bye.saturating_duration_since(*sent);
        assert!(took <= SECS(3), "offer {k}: BYE after {took:?}");
    }
    alice.drain();
    assert_never(&alice, "CALL_ENDED");
    // Bob's only ended call is the idle-phase one that mallory's own BYE ended.
    let ended = bob.seen_with("CALL_ENDED");
    assert!(
        ended.iter().all(|l| peer(l) == mallory.id),
        "bob: a call other than mallory's ended\n{}",
        bob.transcript()
    );
    let size = std::fs::metadata(&bob.log).map_or(0, |m| m.len());
    assert!(
        size < 200_000,
        "bob's log grew to {size} bytes: {}",
        bob.log.display()
    );
}

/// h) An offer with no codec we have (VP8 only) is refused at once with BYE, and the client
/// says which codec it was offered.
#[test]
fn h_an_offer_without_h264_is_refused() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let mut bob = client("bob", port, &["--duration", "60"]);
    let bob_id = signed_in(&mut bob);
    let mut mallory = Member::sign_in(port, "mallory");
    assert_eq!(mallory.send(bob_id, &member::vp8_offer()), 200);
    let bye = mallory.wait_bye(bob_id, SECS(3));
    assert!(bye, "no BYE within 3 s\n{}", bob.transcript());
    let refused = bob.wait_line("CALL_REFUSED", SECS(1));
    assert_eq!(peer(&refused), mallory.id, "{refused}");
    assert!(reason(&refused).contains("VP8"), "{refused}");
    bob.lines_for(SECS(1));
    assert_never(&bob, "CALL_STARTED");
}

/// i) Settings that cannot work are refused before signing in, with exit code 2 and the
/// bad value named.
#[test]
fn i_bad_settings_exit_with_code_2() {
    let server = ServerProc::start(&[]);
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--video-source", "test", "--resolution", "4000x3000"],
            &["4000x3000"],
        ),
        (
            &[
                "--video-source",
                "test",
                "--record",
                "/nonexistent/dir/x.y4m",
            ],
            &["/nonexistent/dir/x.y4m"],
        ),
        (
            &["--video-source", "/dev/video0"],
            &["/dev/video0", "camera", "--device"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, needles) in cases {
        let mut p = procs::client("bad", server.port, args, &[]);
        let code = p.wait_exit(SECS(5));
        p.lines_until_exit(SECS(1));
        let stderr = p.stderr();
        let missing: Vec<&&str> = needles.iter().filter(|n| !stderr.contains(**n)).collect();
        if code != Some(2) || !p.seen_with("SIGNED_IN").is_empty() || !missing.is_empty() {
            failures.push(format!(
                "{args:?}: exit code {code:?} (want Some(2) within 5 s), stderr lacks {missing:?}\n{}",
                p.transcript()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// j) `--call NAME` calls that peer, not whoever is last on the list.
#[test]
fn j_call_by_name() {
    let server = ServerProc::start(&[]);
    let port = server.port;
    let mut carol = client("carol", port, &["--duration", "60"]);
    let carol_id = signed_in(&mut carol);
    let mut bob = client("bob", port, &["--duration", "60"]);
    signed_in(&mut bob);
    let mut alice = client("alice", port, &["--call", "carol", "--duration", "60"]);
    let alice_id = signed_in(&mut alice);
    let started = alice.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&started), carol_id, "{started}");
    let answered = carol.wait_line("CALL_STARTED", SECS(10));
    assert_eq!(peer(&answered), alice_id, "{answered}");
    wait_decoding(&mut alice, 30.0, SECS(15));
    bob.lines_for(SECS(1));
    assert_never(&bob, "CALL_STARTED");
    assert_never(&bob, "INCOMING_CALL");
}
