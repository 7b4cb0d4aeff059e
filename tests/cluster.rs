//! Many servers, one room: a real `redis-server` and three `peerconnection_server`s with
//! `--redis` on loopback. Members signed in on different servers list each other, hear each
//! other's joins and leaves, and exchange messages in order with every request sent to a
//! random server; a SIGKILLed server's members are reported gone; a SIGTERMed one's are
//! reported gone at once; Redis holds each member's last-seen time; Redis restarts
//! mid-run; two native clients on servers 1 and 3 call each other; the load generator's
//! cluster mode loses nothing. Skipped, with one message, when `redis-server` is not
//! installed (`make deps` installs it).

mod procs;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procs::member::{request, Member, Poster};
use procs::{num, pattern_client, Proc, ServerProc};
use rand::Rng;

/// The member timeout the servers run with: a dead server's members go within it.
const TIMEOUT_SECS: &str = "3";
const TIMEOUT: Duration = Duration::from_secs(3);
const STEP: Duration = Duration::from_secs(10);

/// A throwaway redis-server on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: redis-server is not installed (make deps installs it)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster_up(port: u16) -> bool {
    request(port, b"GET /metrics HTTP/1.0\r\n\r\n").is_ok_and(|r| {
        String::from_utf8_lossy(&r.body).contains("peerconnection_server_cluster_up 1\n")
    })
}

/// Waits until every server says (in /metrics) that it has joined the cluster.
fn wait_joined(servers: &[ServerProc]) {
    let deadline = Instant::now() + STEP;
    for s in servers {
        while !cluster_up(s.port) {
            assert!(Instant::now() < deadline, "server {} never joined", s.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start_cluster() -> Option<(Redis, Vec<ServerProc>)> {
    start_cluster_with_timeout(TIMEOUT_SECS)
}

/// Redis and three servers with `--timeout SECS`.
fn start_cluster_with_timeout(secs: &str) -> Option<(Redis, Vec<ServerProc>)> {
    if !redis_available() {
        return None;
    }
    let redis = Redis::start_on(free_port());
    let url = redis.url();
    let servers: Vec<ServerProc> = (0..3)
        .map(|_| ServerProc::start(&["--redis", &url, "--metrics", "--timeout", secs]))
        .collect();
    wait_joined(&servers);
    Some((redis, servers))
}

/// `redis-cli -p PORT ARGS...`'s answer, trimmed (installed with redis-server).
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (it comes with redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `redis-cli` until `pred` holds for its answer; the answer.
fn redis_until(redis: &Redis, args: &[&str], pred: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let got = redis_cli(redis, args);
        if pred(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: redis-cli {args:?} answered {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn entry_of<'a>(m: &'a Member, name: &str) -> Option<&'a procs::member::Entry> {
    m.notifications.iter().rev().find(|e| e.name == name)
}

/// Reads `m`'s hanging GET until `name` is reported gone; how long that took.
fn wait_gone(m: &mut Member, name: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while entry_of(m, name).is_none_or(|e| e.connected) {
        assert!(
            start.elapsed() < timeout,
            "member {}: {name} not reported gone within {timeout:?}",
            m.name
        );
        if let Some(msg) = m.next_message(Duration::from_millis(200)) {
            panic!("member {}: unexpected message {msg:?}", m.name);
        }
    }
    start.elapsed()
}

#[test]
fn members_on_different_servers_list_each_other_and_hear_joins_and_leaves() {
    let Some((_redis, s)) = start_cluster() else {
        return;
    };
    let mut a = Member::sign_in(s[0].port, "alice");
    let mut b = Member::sign_in(s[1].port, "bob");
    // Listed at sign-in, or (alice's join still on its way to bob's server) told just after.
    assert_eq!(b.wait_peer("alice", STEP), a.id);
    assert_eq!(a.wait_peer("bob", STEP), b.id);
    let mut c = Member::sign_in(s[2].port, "carol");
    assert_ne!(c.id, a.id);
    assert_ne!(c.id, b.id);
    // A join still on its way to carol's server when she signed in reaches her as a notice.
    assert_eq!(c.wait_peer("alice", STEP), a.id);
    assert_eq!(c.wait_peer("bob", STEP), b.id);
    assert_eq!(a.wait_peer("carol", STEP), c.id);
    assert_eq!(b.wait_peer("carol", STEP), c.id);
    assert_eq!(c.sign_out(), 200);
    wait_gone(&mut a, "carol", STEP);
    wait_gone(&mut b, "carol", STEP);
    // The notices are the original's lines, for the waiting member's own id.
    assert_eq!(
        a.notifications.iter().filter(|e| e.name == "carol").count(),
        2,
        "one join and one leave: {:?}",
        a.notifications
    );
}

#[test]
fn messages_between_servers_arrive_in_order_with_each_request_to_a_random_server() {
    let Some((_redis, s)) = start_cluster() else {
        return;
    };
    let ports: Vec<u16> = s.iter().map(|s| s.port).collect();
    let mut rng = rand::rng();
    let mut a = Member::sign_in(ports[0], "alice");
    let mut b = Member::sign_in(ports[1], "bob");
    const N: usize = 60;
    // Alice posts through random servers while nobody waits for bob; then both read,
    // each /wait on a random server, while the other keeps posting.
    for i in 0..N / 2 {
        let via = Poster {
            port: ports[rng.random_range(0..3)],
            id: a.id,
        };
        assert_eq!(via.send(b.id, format!("a{i}").as_bytes()), 200);
    }
    let mut got_b = Vec::new();
    let mut got_a = Vec::new();
    let mut sent_b = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = N / 2;
    while got_b.len() < N || got_a.len() < N {
        assert!(
            Instant::now() < deadline,
            "bob got {got_b:?}, alice got {got_a:?}"
        );
        if i < N {
            let via = Poster {
                port: ports[rng.random_range(0..3)],
                id: a.id,
            };
            assert_eq!(via.send(b.id, format!("a{i}").as_bytes()), 200);
            i += 1;
        }
        if sent_b < N {
            let via = Poster {
                port: ports[rng.random_range(0..3)],
                id: b.id,
            };
            assert_eq!(via.send(a.id, format!("b{sent_b}").as_bytes()), 200);
            sent_b += 1;
        }
        for (m, got) in [(&mut b, &mut got_b), (&mut a, &mut got_a)] {
            m.port = ports[rng.random_range(0..3)];
            if let Some((_, body)) = m.next_message(Duration::from_millis(200)) {
                got.push(String::from_utf8(body).unwrap());
            }
        }
    }
    let want_b: Vec<String> = (0..N).map(|i| format!("a{i}")).collect();
    let want_a: Vec<String> = (0..N).map(|i| format!("b{i}")).collect();
    assert_eq!(got_b, want_b);
    assert_eq!(got_a, want_a);
}

#[test]
fn a_killed_server_s_members_go_and_a_member_that_moves_gets_its_messages() {
    let Some((_redis, s)) = start_cluster() else {
        return;
    };
    let doomed = Member::sign_in(s[0].port, "doomed");
    let mut mover = Member::sign_in(s[0].port, "mover");
    let sender = Member::sign_in(s[1].port, "sender");
    let mut watcher = Member::sign_in(s[2].port, "watcher");
    // Every member has read the others' joins.
    mover.next_message(Duration::from_millis(300));
    s[0].proc_.signal(libc::SIGKILL);
    // Messages for mover while its server is dead and no GET of its is open anywhere.
    for i in 0..3 {
        assert_eq!(sender.send(mover.id, format!("m{i}").as_bytes()), 200);
    }
    // Its next /wait goes to another server (as a balancer without affinity would send it).
    mover.port = s[2].port;
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| mover.next_message(STEP).expect("a message").1)
        .collect();
    assert_eq!(got, [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    let took = wait_gone(&mut watcher, "doomed", TIMEOUT * 2);
    eprintln!("doomed reported gone {took:?} after the kill was seen (timeout {TIMEOUT:?})");
    assert!(
        entry_of(&watcher, "mover").is_none_or(|e| e.connected),
        "mover moved, not gone"
    );
    // The others keep working.
    assert_eq!(sender.send(watcher.id, b"still here"), 200);
    assert_eq!(
        watcher.next_message(STEP).map(|m| m.1),
        Some(b"still here".to_vec())
    );
    drop(doomed);
}

#[test]
fn redis_restarted_mid_run_the_servers_rejoin() {
    let Some((mut redis, s)) = start_cluster() else {
        return;
    };
    let mut a = Member::sign_in(s[0].port, "alice");
    let mut b = Member::sign_in(s[1].port, "bob");
    assert_eq!(a.wait_peer("bob", STEP), b.id);
    redis.stop();
    // Down: each server serves its own members (a local message goes through).
    let deadline = Instant::now() + STEP;
    while cluster_up(s[0].port) {
        assert!(
            Instant::now() < deadline,
            "server 0 never noticed Redis went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a2 = Member::sign_in(s[0].port, "alice2");
    assert_eq!(a2.send(a.id, b"local"), 200);
    assert_eq!(a.next_message(STEP).map(|m| m.1), Some(b"local".to_vec()));
    let port = redis.port;
    let _redis = Redis::start_on(port);
    wait_joined(&s);
    // Back: members registered again, ids still unique, messages cross servers.
    let mut c = Member::sign_in(s[2].port, "carol");
    for (name, id) in [("alice", a.id), ("alice2", a2.id), ("bob", b.id)] {
        assert_eq!(
            c.wait_peer(name, STEP),
            id,
            "carol lists {name} after the restart"
        );
    }
    assert!(
        ![a.id, a2.id, b.id].contains(&c.id),
        "ids unique after the restart"
    );
    assert_eq!(c.send(b.id, b"after"), 200);
    assert_eq!(b.next_message(STEP).map(|m| m.1), Some(b"after".to_vec()));
    assert_eq!(a.wait_peer("carol", STEP), c.id);
}

#[test]
fn redis_holds_each_member_s_last_seen_time_until_it_leaves() {
    // Members without a hanging GET stay signed in for the whole test.
    let Some((redis, s)) = start_cluster_with_timeout("60") else {
        return;
    };
    let before = unix_ms();
    let a = Member::sign_in(s[0].port, "alice");
    let b = Member::sign_in(s[1].port, "bob");
    let (a_id, b_id) = (a.id.to_string(), b.id.to_string());
    let is_ms = |v: &str| v.parse::<u64>().is_ok();
    let seen_a: u64 = redis_until(&redis, &["HGET", "pc:seen", &a_id], is_ms, "alice seen")
        .parse()
        .unwrap();
    let seen_b: u64 = redis_until(&redis, &["HGET", "pc:seen", &b_id], is_ms, "bob seen")
        .parse()
        .unwrap();
    let after = unix_ms();
    for seen in [seen_a, seen_b] {
        // Written within about a second of the sign-in.
        assert!(
            seen + 1000 >= before && seen <= after,
            "{seen} not within {before}..{after}"
        );
    }
    // Bob makes a request later, through another server: his time moves on, alice's not.
    std::thread::sleep(Duration::from_millis(1500));
    let via = Poster {
        port: s[2].port,
        id: b.id,
    };
    assert_eq!(via.send(a.id, b"hello"), 200);
    let later: u64 = redis_until(
        &redis,
        &["HGET", "pc:seen", &b_id],
        |v| v.parse::<u64>().is_ok_and(|ms| ms >= seen_b + 1000),
        "bob seen again",
    )
    .parse()
    .unwrap();
    eprintln!("bob last seen {} ms after his sign-in", later - seen_b);
    assert_eq!(
        redis_cli(&redis, &["HGET", "pc:seen", &a_id]),
        seen_a.to_string(),
        "alice made no request"
    );
    // Leaving removes it.
    assert_eq!(b.sign_out(), 200);
    redis_until(
        &redis,
        &["HEXISTS", "pc:seen", &b_id],
        |v| v == "0",
        "bob's time removed",
    );
    assert_eq!(redis_cli(&redis, &["HEXISTS", "pc:seen", &a_id]), "1");
    drop(a);
}

#[test]
fn a_sigtermed_server_s_members_are_reported_gone_at_once() {
    // A long member timeout: the heartbeat would take 30 s to report them gone.
    let Some((redis, mut s)) = start_cluster_with_timeout("60") else {
        return;
    };
    let leaving = Member::sign_in(s[0].port, "leaving");
    let mut watcher = Member::sign_in(s[1].port, "watcher");
    let mut other = Member::sign_in(s[2].port, "other");
    assert_eq!(watcher.wait_peer("leaving", STEP), leaving.id);
    assert_eq!(other.wait_peer("leaving", STEP), leaving.id);
    let stopping = s.remove(0);
    let t = Instant::now();
    stopping.proc_.signal(libc::SIGTERM);
    let took = wait_gone(&mut watcher, "leaving", Duration::from_secs(10));
    let took_other = wait_gone(&mut other, "leaving", Duration::from_secs(10));
    eprintln!(
        "SIGTERM: the others heard of the leave after {took:?} and {took_other:?} ({:?} since the signal); the heartbeat would take 30 s",
        t.elapsed()
    );
    assert_eq!(
        redis_cli(&redis, &["HEXISTS", "pc:members", &leaving.id.to_string()]),
        "0"
    );
    drop(stopping);
    drop(leaving);
}

/// A native call through the cluster: Bob signs in on server 1, Alice on server 3, so every
/// offer, answer and candidate between them goes through Redis. Video both ways.
#[test]
fn a_native_call_between_a_client_on_server_1_and_one_on_server_3() {
    let Some((_redis, s)) = start_cluster_with_timeout("30") else {
        return;
    };
    let mut bob = pattern_client("bob", s[0].port, &["--duration", "40"]);
    bob.wait_line("SIGNED_IN", STEP);
    let mut alice = pattern_client("alice", s[2].port, &["--call", "bob", "--duration", "6"]);
    alice.wait_line("CALL_STARTED", Duration::from_secs(20));
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(30));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(15));
    eprintln!("alice: {alice_end}\nbob: {bob_end}");
    assert!(num(&alice_end, "frames_decoded") >= 60.0, "{alice_end}");
    assert!(num(&bob_end, "frames_decoded") >= 60.0, "{bob_end}");
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0));
}

const LOAD: &str = env!("CARGO_BIN_EXE_peerconnection_load");

/// The load generator against the three servers: its RESULT line.
fn load(servers: &[ServerProc], args: &[&str]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let list = list.join(",");
    let mut all = vec!["--server", &list];
    all.extend(args);
    let mut p = Proc::spawn("load", LOAD, &all);
    let line = p.wait_line("RESULT", Duration::from_secs(120));
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{line}");
    line
}

#[test]
fn the_load_generator_spreads_members_over_the_servers_and_nothing_is_lost() {
    let Some((_redis, s)) = start_cluster_with_timeout("60") else {
        return;
    };
    let storm = load(&s, &["--scenario", "storm", "--members", "150"]);
    assert!(storm.contains(" servers=3 spread=sticky "), "{storm}");
    assert!(storm.contains(" errors=0 duplicates=0"), "{storm}");
    for placement in ["split", "same"] {
        let relay = load(
            &s,
            &[
                "--scenario",
                "relay",
                "--pairs",
                "6",
                "--duration",
                "1",
                "--pair-placement",
                placement,
            ],
        );
        assert!(
            relay.contains(&format!(" placement={placement} ")),
            "{relay}"
        );
        assert!(
            relay.contains(" lost=0 errors=0 gets_closed=0 duplicates=0"),
            "{relay}"
        );
    }
}

/// At least once: a message a server took for a member's GET stays pending in Redis until
/// its answer is written whole. Here the state a server leaves when it dies between taking
/// the message and writing it is made with redis-cli (the same `LMOVE` the servers use):
/// the member's next `/wait`, on another server, gets that message first, then the rest.
#[test]
fn a_message_taken_but_never_answered_is_handed_out_again() {
    let Some((redis, s)) = start_cluster_with_timeout("60") else {
        return;
    };
    let alice = Member::sign_in(s[0].port, "alice");
    let mut bob = Member::sign_in(s[1].port, "bob");
    // Both joins read, so that bob's next reads are messages.
    assert_eq!(bob.wait_peer("alice", STEP), alice.id);
    for m in ["m0", "m1", "m2"] {
        assert_eq!(alice.send(bob.id, m.as_bytes()), 200);
    }
    let (q, p) = (format!("pc:q:{}", bob.id), format!("pc:p:{}", bob.id));
    let taken = redis_cli(&redis, &["LMOVE", &q, &p, "LEFT", "RIGHT"]);
    assert!(taken.ends_with("m0"), "{taken:?}");
    bob.port = s[2].port;
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| bob.next_message(STEP).expect("a message").1)
        .collect();
    assert_eq!(got, [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    // Each answer was written whole: nothing is left pending or queued.
    redis_until(&redis, &["EXISTS", &p, &q], |v| v == "0", "pending deleted");
}
