//! Many servers, one room: a real `redis-server` and three `peerconnection_server`s with
//! `--redis` on loopback. Members signed in on different servers list each other, hear each
//! other's joins and leaves, and exchange messages in order with every request sent to a
//! random server; a SIGKILLed server's members are reported gone; Redis restarts mid-run.
//! Skipped, with one message, when `redis-server` is not installed (`make deps` installs it).

mod procs;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procs::member::{request, Member, Poster};
use procs::ServerProc;
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
    if !redis_available() {
        return None;
    }
    let redis = Redis::start_on(free_port());
    let url = redis.url();
    let servers: Vec<ServerProc> = (0..3)
        .map(|_| ServerProc::start(&["--redis", &url, "--metrics", "--timeout", TIMEOUT_SECS]))
        .collect();
    wait_joined(&servers);
    Some((redis, servers))
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
