//! Calls across NATs, in a lab of network namespaces this test makes and removes: two hosts,
//! each behind its own router namespace, and a "wan" namespace between the routers holding
//! the signaling server and a coturn TURN/STUN server. The routers either route (no NAT) or
//! masquerade with nft: plain `masquerade` keeps a socket's mapped port for every
//! destination (hole punching works), `masquerade fully-random` maps each destination to a
//! new port (only the relay gets through). Each scenario is a real two-client call that
//! must decode at least 60 frames each way, and the STATS line's `pair=` must name the
//! candidate types the topology allows.
//!
//! Every address exists only inside the namespaces: 203.0.113.0/24 (a documentation range)
//! for the wan, 10.N.0.0/24 behind the routers. Needs root, `ip`, `nft` and `turnserver`
//! (Debian's iproute2, nftables, coturn); without them each test says why and passes.

mod procs;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use procs::{field, num, Proc, CLIENT, PATTERN_ARGS, SERVER};

const WAN_IP: &str = "203.0.113.1";
const SIGNALING_PORT: &str = "8888";
const TURN_PORT: &str = "3478";
const TURN_USER: &str = "alice:secret";

/// What the routers do to the hosts' packets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nat {
    /// Plain routing: the wan knows the routes to both private networks.
    None,
    /// nft `masquerade`: the mapped port is kept across destinations.
    PortPreserving,
    /// nft `masquerade fully-random`: a new mapping for each destination.
    FullyRandom,
}

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in ["ip", "nft", "turnserver"] {
        let found = path
            .split(':')
            .chain(["/usr/sbin", "/sbin", "/usr/bin"])
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("no `{tool}` (make deps installs it)"));
        }
    }
    None
}

/// Runs `args` (a command line) and panics with its output if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One scenario's namespaces; whatever runs in them is killed and they are deleted on
/// drop, also when the test fails.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    /// The private network behind router A is 10.`net`.0.0/24, behind B 10.`net+1`.0.0/24.
    net: u8,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let ns = self.ns(ns);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        run(&full);
    }

    /// A veth pair with one end in each namespace.
    fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        run(&[
            "ip", "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if, "netns",
            &nb,
        ]);
    }

    fn addr(&self, ns: &str, ifname: &str, cidr: &str) {
        self.exec(ns, &["ip", "addr", "add", cidr, "dev", ifname]);
        self.exec(ns, &["ip", "link", "set", ifname, "up"]);
    }

    /// Builds: ha --lan-- ra --wan-- wan --wan-- rb --lan-- hb.
    fn build(scenario: &str, net: u8, nat: Nat) -> Lab {
        let mut lab = Lab {
            tag: format!("pcnat{}{scenario}", std::process::id()),
            namespaces: Vec::new(),
            net,
        };
        for ns in ["wan", "ra", "rb", "ha", "hb"] {
            let name = lab.ns(ns);
            run(&["ip", "netns", "add", &name]);
            lab.namespaces.push(name);
            lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        // wan: 203.0.113.1/28 towards A, 203.0.113.17/28 towards B; it routes between them.
        lab.link("wan", "toa", "ra", "wan");
        lab.link("wan", "tob", "rb", "wan");
        lab.addr("wan", "toa", &format!("{WAN_IP}/28"));
        lab.addr("wan", "tob", "203.0.113.17/28");
        lab.addr("ra", "wan", "203.0.113.2/28");
        lab.addr("rb", "wan", "203.0.113.18/28");
        for (router, host, gw_wan, lan) in [
            ("ra", "ha", "203.0.113.1", net),
            ("rb", "hb", "203.0.113.17", net + 1),
        ] {
            lab.link(router, "lan", host, "eth0");
            lab.addr(router, "lan", &format!("10.{lan}.0.1/24"));
            lab.addr(host, "eth0", &format!("10.{lan}.0.2/24"));
            lab.exec(
                host,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.{lan}.0.1"),
                ],
            );
            lab.exec(router, &["ip", "route", "add", "default", "via", gw_wan]);
            lab.exec(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let rule = match nat {
                Nat::None => None,
                Nat::PortPreserving => Some("masquerade"),
                Nat::FullyRandom => Some("masquerade fully-random"),
            };
            if let Some(rule) = rule {
                // As a home router's firewall: unsolicited packets from the wan are dropped
                // before conntrack confirms them. Answered with an ICMP error instead, each
                // would leave a conntrack entry that clashes with the mapping the host's
                // own later packet to that peer needs, and masquerade would then pick
                // another port: hole punching would depend on who sends first.
                lab.exec(router, &["nft", "add", "table", "ip", "filter"]);
                lab.exec(
                    router,
                    &[
                        "nft",
                        "add chain ip filter input { type filter hook input priority 0 ; }",
                    ],
                );
                lab.exec(
                    router,
                    &[
                        "nft",
                        "add rule ip filter input iifname \"wan\" ct state new drop",
                    ],
                );
                lab.exec(router, &["nft", "add", "table", "ip", "nat"]);
                lab.exec(
                    router,
                    &[
                        "nft",
                        "add chain ip nat post { type nat hook postrouting priority 100 ; }",
                    ],
                );
                let rule = format!("add rule ip nat post oifname \"wan\" {rule}");
                lab.exec(router, &["nft", &rule]);
            }
        }
        lab.exec("wan", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Like the internet, the wan swallows packets for private addresses silently (a
        // default route into a veth whose other end answers nothing): with no route at
        // all, coturn's send to a peer's private host candidate fails and it closes the
        // whole allocation.
        lab.link("wan", "sink", "wan", "sink1");
        lab.exec("wan", &["ip", "link", "set", "sink", "up"]);
        lab.exec("wan", &["ip", "link", "set", "sink1", "up"]);
        lab.exec("wan", &["ip", "route", "add", "default", "dev", "sink"]);
        if nat == Nat::None {
            // Routed: the private networks are reachable across the wan.
            lab.exec(
                "wan",
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("10.{net}.0.0/24"),
                    "via",
                    "203.0.113.2",
                ],
            );
            let b = format!("10.{}.0.0/24", net + 1);
            lab.exec("wan", &["ip", "route", "add", &b, "via", "203.0.113.18"]);
        }
        lab
    }

    fn host_ip(&self, host: &str) -> String {
        let net = if host == "ha" { self.net } else { self.net + 1 };
        format!("10.{net}.0.2")
    }

    /// A process inside the namespace `ns`.
    fn spawn(&self, ns: &str, name: &str, bin: &str, args: &[&str]) -> Proc {
        self.spawn_env(ns, name, bin, args, &[])
    }

    /// Like [`Lab::spawn`], with extra environment variables.
    fn spawn_env(
        &self,
        ns: &str,
        name: &str,
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let ns = self.ns(ns);
        let mut full = vec!["netns", "exec", &ns, bin];
        full.extend_from_slice(args);
        Proc::spawn_with_env(&format!("{}-{name}", self.tag), "ip", &full, env)
    }

    /// Shapes what router `router` sends towards the wan to `rate` (tc syntax, `1mbit`)
    /// with a token bucket: the lab's thin link.
    fn shape(&self, router: &str, rate: &str) {
        self.exec(
            router,
            &[
                "tc", "qdisc", "replace", "dev", "wan", "root", "tbf", "rate", rate, "burst",
                "16kb", "latency", "100ms",
            ],
        );
    }

    /// The signaling server and coturn in the wan namespace.
    fn start_servers(&self) -> (Proc, Proc) {
        self.start_servers_with(&[])
    }

    /// Like [`Lab::start_servers`], with extra flags for the signaling server.
    fn start_servers_with(&self, server_flags: &[&str]) -> (Proc, Proc) {
        let pidfile = std::env::temp_dir().join(format!("{}-turn.pid", self.tag));
        let pidfile = format!("--pidfile={}", pidfile.display());
        let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("test-logs")
            .join(format!("{}-coturn.log", self.tag));
        let log = format!("--log-file={}", log.display());
        // Its own user database: coturn's default one is shared by every instance.
        let userdb = std::env::temp_dir().join(format!("{}-turndb", self.tag));
        let userdb = format!("--userdb={}", userdb.display());
        let turn = self.spawn(
            "wan",
            "turnserver",
            "turnserver",
            &[
                "-n",
                &format!("--listening-ip={WAN_IP}"),
                &format!("--relay-ip={WAN_IP}"),
                &format!("--listening-port={TURN_PORT}"),
                "--min-port=49160",
                "--max-port=49200",
                "--lt-cred-mech",
                &format!("--user={TURN_USER}"),
                "--realm=test.local",
                "--fingerprint",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                &pidfile,
                &log,
                &userdb,
                "-v",
                "--simple-log",
            ],
        );
        let mut args = vec!["--bind", WAN_IP, "--port", SIGNALING_PORT];
        args.extend_from_slice(server_flags);
        let mut server = self.spawn("wan", "server", SERVER, &args);
        server.wait_line(
            "peerconnection_server listening on",
            Duration::from_secs(10),
        );
        (server, turn)
    }

    /// A headless client on host `host` sending the test pattern; `extra` flags last.
    fn client(&self, host: &str, name: &str, extra: &[&str]) -> Proc {
        self.client_with(host, name, &PATTERN_ARGS, extra, &[])
    }

    /// A headless client on host `host` sending `video` (flags); `extra` flags last.
    fn client_with(
        &self,
        host: &str,
        name: &str,
        video: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let ip = self.host_ip(host);
        let mut args: Vec<&str> = video.to_vec();
        args.extend_from_slice(&[
            "--server",
            WAN_IP,
            "--port",
            SIGNALING_PORT,
            "--ice-ip",
            &ip,
            "--name",
            name,
            "--stats",
            "--headless",
        ]);
        args.extend_from_slice(extra);
        self.spawn_env(host, name, CLIENT, &args, env)
    }
}

/// Deletes the namespaces of an earlier run of these tests that was killed before it
/// could clean up (their names carry the process id, which no longer runs).
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let mut stale = Lab {
        tag: String::new(),
        namespaces: Vec::new(),
        net: 0,
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("pcnat") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
            stale.namespaces.push(name.to_string());
        }
    }
    // Dropping it kills what runs there and deletes the namespaces.
    drop(stale);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Anything still running in the namespace was started by this test.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What one side saw of a call.
#[derive(Debug)]
struct Side {
    pair: String,
    frames_decoded: f64,
    connect_ms: f64,
    rtt_ms: Option<f64>,
}

/// Alice (on host A) calls Bob (on host B) for a few seconds; both report.
fn call(lab: &Lab, flags: &[&str]) -> (Side, Side) {
    let (_server, _turn) = lab.start_servers();
    let mut bob = lab.client("hb", "bob", &[flags, &["--duration", "30"]].concat());
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let mut alice = lab.client(
        "ha",
        "alice",
        &[flags, &["--call", "bob", "--duration", "7"]].concat(),
    );
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(25));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    let side = |p: &Proc, end: &str| {
        let stats: Vec<&String> = p.seen_with("STATS");
        let last = stats
            .iter()
            .rev()
            .find(|l| field(l, "pair").is_some_and(|v| v != "-"))
            .unwrap_or_else(|| panic!("{}: no STATS with a pair: {stats:?}", p.name));
        Side {
            pair: field(last, "pair").unwrap_or("-").to_string(),
            frames_decoded: num(end, "frames_decoded"),
            connect_ms: num(end, "connect_ms"),
            rtt_ms: field(last, "rtt_ms").and_then(|v| v.parse().ok()),
        }
    };
    let (a, b) = (side(&alice, &alice_end), side(&bob, &bob_end));
    // The figures for the README: connect time and the pair's round trip, each side.
    for (who, s) in [("alice", &a), ("bob", &b)] {
        eprintln!(
            "NAT-LAB {} {who}: pair={} connect_ms={} rtt_ms={} decoded={}",
            lab.tag,
            s.pair,
            s.connect_ms,
            s.rtt_ms.map_or("-".into(), |r| r.to_string()),
            s.frames_decoded
        );
    }
    assert!(a.frames_decoded >= 60.0, "alice: {alice_end}");
    assert!(b.frames_decoded >= 60.0, "bob: {bob_end}");
    (a, b)
}

/// Alice calls Bob on the routed lab; 5 s in, router A drops every forwarded UDP packet
/// for 4 s (the pair dies, the signaling's TCP goes on), then lets them through again.
/// The call must survive through an ICE restart and decode video again afterwards.
fn restart_call(lab: &Lab) {
    let (_server, _turn) = lab.start_servers();
    let mut bob = lab.client("hb", "bob", &["--duration", "30"]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let started = std::time::Instant::now();
    let mut alice = lab.client("ha", "alice", &["--call", "bob", "--duration", "14"]);
    let until = |secs: u64| {
        let at = started + Duration::from_secs(secs);
        std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
    };
    until(5);
    lab.exec("ra", &["nft", "add", "table", "ip", "outage"]);
    lab.exec(
        "ra",
        &[
            "nft",
            "add chain ip outage block { type filter hook forward priority 0 ; }",
        ],
    );
    lab.exec(
        "ra",
        &["nft", "add rule ip outage block meta l4proto udp drop"],
    );
    until(9);
    lab.exec("ra", &["nft", "delete", "table", "ip", "outage"]);
    let decoded_then = bob
        .drain()
        .iter()
        .rev()
        .find(|l| l.starts_with("STATS"))
        .map_or(0.0, |l| num(l, "decoded"));
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(20));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    let alice_log = std::fs::read_to_string(&alice.log).unwrap_or_default();
    let bob_log = std::fs::read_to_string(&bob.log).unwrap_or_default();
    eprintln!("NAT-LAB {} restart: {alice_end} / {bob_end}", lab.tag);
    assert!(
        alice_end.contains("--duration"),
        "the call lasted: {alice_end}"
    );
    assert!(alice_log.contains("restarting ICE"), "alice restarted ICE");
    assert!(
        bob_log.contains("answering its new offer"),
        "bob answered it"
    );
    assert!(
        num(&bob_end, "frames_decoded") >= decoded_then + 60.0,
        "video again after the cut: {decoded_then} then {bob_end}"
    );
}

fn turn_flags() -> Vec<String> {
    vec![
        "--stun".into(),
        format!("{WAN_IP}:{TURN_PORT}"),
        "--turn".into(),
        format!("{TURN_USER}@{WAN_IP}:{TURN_PORT}"),
    ]
}

/// One test at a time in this file (they share two cores with everything else).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The scenarios run at once, each in its own namespaces and private networks.
#[test]
fn calls_connect_through_routes_nats_and_the_relay() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED nat lab: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    remove_stale_labs();
    let turn = turn_flags();
    let turn: Vec<&str> = turn.iter().map(String::as_str).collect();
    let stun_only = &turn[..2];
    let relay: Vec<&str> = [&turn[..], &["--ice-policy", "relay"]].concat();
    std::thread::scope(|s| {
        let routed = s.spawn(|| {
            let lab = Lab::build("r", 10, Nat::None);
            call(&lab, stun_only)
        });
        let masq = s.spawn(|| {
            let lab = Lab::build("m", 20, Nat::PortPreserving);
            call(&lab, stun_only)
        });
        let random = s.spawn(|| {
            let lab = Lab::build("f", 30, Nat::FullyRandom);
            call(&lab, &turn)
        });
        let forced = s.spawn(|| {
            let lab = Lab::build("p", 40, Nat::None);
            call(&lab, &relay)
        });
        let restart = s.spawn(|| {
            let lab = Lab::build("i", 60, Nat::None);
            restart_call(&lab)
        });
        let (a, b) = routed.join().expect("routed scenario");
        // No NAT: the host addresses reach each other (the STUN answer equals the host
        // address, so there is no srflx candidate).
        assert_eq!(
            (a.pair.as_str(), b.pair.as_str()),
            ("host/host", "host/host")
        );
        let (a, b) = masq.join().expect("port-preserving NAT scenario");
        // Through both NATs without a relay: our side leaves through the NAT (srflx) and
        // the peer is its reflexive address, told (srflx) or learnt from checks (prflx).
        for p in [&a.pair, &b.pair] {
            assert!(
                p == "srflx/srflx" || p == "srflx/prflx",
                "hole punching through masquerade: {p}"
            );
        }
        let (a, b) = random.join().expect("fully-random NAT scenario");
        // Only the relay gets through: at least one end of each side's pair is relayed.
        for p in [&a.pair, &b.pair] {
            assert!(p.contains("relay"), "fully-random NAT needs the relay: {p}");
        }
        let (a, b) = forced.join().expect("--ice-policy relay scenario");
        assert_eq!(
            (a.pair.as_str(), b.pair.as_str()),
            ("relay/relay", "relay/relay")
        );
        restart.join().expect("ICE restart scenario");
    });
}

/// The thin link, measured (a bench, not run by default: `cargo test --release --test nat
/// -- --ignored --nocapture thin_link`). Alice sends 640x480 (up to 2.5 Mbit/s) through a
/// 1 Mbit/s token bucket on her router; after 25 s the link drops to 300 kbit/s for 10 s,
/// then comes back. It prints, from Alice's STATS lines and her encoder's retuning, the
/// seconds for the sent bitrate and str0m's estimate to reach 80 % of the link, the
/// seconds sent above the link in each phase (and the longest run of them), the seconds
/// Bob decoded nothing, the seconds to recover to 800 kbit/s, and the keyframes Bob asked
/// for. It asserts only that video kept flowing to Bob through all of it.
#[test]
#[ignore]
fn thin_link_bitrate_follows_the_estimate() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED thin link: {why}");
        return;
    }
    let lab = Lab::build("t", 50, Nat::None);
    lab.shape("ra", "1mbit");
    let (_server, _turn) = lab.start_servers();
    // The test pattern needs only ~300 kbit/s whatever the target: moving noise blocks
    // make the encoder use all the bitrate it is allowed.
    let clip = busy_clip(&lab.tag);
    let video = [
        "--video-source",
        clip.to_str().expect("utf-8 path"),
        "--resolution",
        "640x480",
        "--bitrate",
        "2500",
    ];
    let env = [("RUST_LOG", "info,peerconnection::client=debug")];
    let mut bob = lab.client_with("hb", "bob", &video, &["--duration", "90"], &env);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let started = std::time::Instant::now();
    let mut alice = lab.client_with(
        "ha",
        "alice",
        &video,
        &["--call", "bob", "--duration", "62"],
        &env,
    );
    let at = |secs: u64| started + Duration::from_secs(secs);
    std::thread::sleep(at(27).saturating_duration_since(std::time::Instant::now()));
    lab.shape("ra", "300kbit");
    std::thread::sleep(at(37).saturating_duration_since(std::time::Instant::now()));
    lab.shape("ra", "1mbit");
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(40));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    let series = |p: &Proc, key: &str| -> Vec<(f64, f64)> {
        p.seen_with("STATS")
            .iter()
            .filter(|l| field(l, "pair").is_some_and(|v| v != "-"))
            .map(|l| (num(l, "t"), num(l, key)))
            .collect()
    };
    let sent = series(&alice, "sent_kbps");
    // Not in the STATS of a client older than the field: then empty.
    let estimate: Vec<(f64, f64)> = alice
        .seen_with("STATS")
        .iter()
        .filter(|l| field(l, "pair").is_some_and(|v| v != "-"))
        .filter_map(|l| Some((num(l, "t"), field(l, "bwe_kbps")?.parse().ok()?)))
        .collect();
    let recv_fps = series(&bob, "recv_fps");
    let connected = sent.first().map_or(0.0, |s| s.0 - 1.0);
    // The link: 1 Mbit/s until 27 s, 300 kbit/s until 37 s, 1 Mbit/s again.
    let link = |t: f64| if t > 27.0 && t <= 37.0 { 300.0 } else { 1000.0 };
    let phases = [
        ("1M", 0.0, 27.0),
        ("thin", 27.0, 37.0),
        ("after", 37.0, 62.0),
    ];
    let first_at = |s: &[(f64, f64)], from: f64, until: f64, kbps: f64| {
        s.iter()
            .find(|(t, k)| *t > from && *t <= until && *k >= kbps)
            .map_or("never".to_string(), |(t, _)| format!("{:.1}", t - from))
    };
    let above = |from: f64, until: f64| {
        let secs: Vec<bool> = sent
            .iter()
            .filter(|(t, _)| *t > from && *t <= until)
            .map(|(t, k)| *k > link(*t))
            .collect();
        let longest = secs.split(|a| !a).map(<[bool]>::len).max().unwrap_or(0);
        (secs.iter().filter(|a| **a).count(), longest)
    };
    let stalled = |from: f64, until: f64| {
        recv_fps
            .iter()
            .filter(|(t, f)| *t > from && *t <= until && *f < 1.0)
            .count()
    };
    let log = std::fs::read_to_string(&bob.log).unwrap_or_default();
    let keyframes_asked = std::fs::read_to_string(&alice.log)
        .unwrap_or_default()
        .matches("keyframe requested")
        .count();
    eprintln!("THIN-LINK sent_kbps per second (t, kbit/s): {sent:?}");
    eprintln!("THIN-LINK str0m estimate per second (t, kbit/s): {estimate:?}");
    eprintln!("THIN-LINK bob recv_fps per second: {recv_fps:?}");
    for (name, from, until) in phases {
        let (secs, longest) = above(from, until);
        let kbps: Vec<f64> = sent
            .iter()
            .filter(|(t, _)| *t > from.max(connected + 1.0) && *t <= until)
            .map(|(_, k)| *k)
            .collect();
        eprintln!(
            "THIN-LINK phase {name}: mean sent {:.0} kbit/s; seconds sent above the link \
             {secs} (longest run {longest}); seconds bob decoded nothing {}",
            kbps.iter().sum::<f64>() / kbps.len().max(1) as f64,
            stalled(from, until)
        );
    }
    eprintln!(
        "THIN-LINK to 800 kbit/s from connected: sent {} s, estimate {} s; back to 800 kbit/s \
         after the link widened: sent {} s, estimate {} s; keyframes asked by bob: \
         {keyframes_asked}; seconds bob decoded nothing: {}; bob decode failures logged: {}; \
         frames alice's budget dropped: {}",
        first_at(&sent, connected, 27.0, 800.0),
        first_at(&estimate, connected, 27.0, 800.0),
        first_at(&sent, 37.0, 62.0, 800.0),
        first_at(&estimate, 37.0, 62.0, 800.0),
        stalled(0.0, 62.0),
        log.matches("decode failed").count(),
        alice
            .seen_with("STATS")
            .last()
            .and_then(|l| field(l, "frames_dropped"))
            .unwrap_or("-"),
    );
    let _ = std::fs::remove_file(&clip);
    assert!(num(&alice_end, "frames_decoded") >= 60.0, "{alice_end}");
    assert!(num(&bob_end, "frames_decoded") >= 60.0, "{bob_end}");
}

/// A 640x480 Y4M clip of 30 frames of random 16x16 grey blocks (chroma flat): content
/// that costs an H.264 encoder as many bits as it is given.
fn busy_clip(tag: &str) -> std::path::PathBuf {
    let (w, h) = (640usize, 480usize);
    let path = std::env::temp_dir().join(format!("{tag}-busy.y4m"));
    let mut out = format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n").into_bytes();
    let mut seed: u32 = 0x1234_5678;
    for _ in 0..30 {
        out.extend_from_slice(b"FRAME\n");
        let mut y = vec![0u8; w * h];
        for by in 0..h / 16 {
            for bx in 0..w / 16 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (seed >> 24) as u8;
                for row in 0..16 {
                    let start = (by * 16 + row) * w + bx * 16;
                    y[start..start + 16].fill(v);
                }
            }
        }
        out.extend_from_slice(&y);
        out.extend(std::iter::repeat_n(128u8, w * h / 2));
    }
    std::fs::write(&path, out).expect("write the clip");
    path
}

/// The web page behind a fully-random NAT calls a native client behind another one that
/// has no TURN server of its own: only the relay the page got from the signaling server's
/// `--ice-server` list (served as /ice-servers.json) can carry the call. Needs Chromium and
/// playwright-core as tests/browser.rs does; without them it says so and passes.
#[test]
fn a_browser_behind_a_nat_uses_the_servers_ice_servers() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED browser behind a NAT: {why}");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let playwright = Path::new(root).join("tests/browser/node_modules/playwright-core");
    if !Path::new("/usr/bin/chromium").exists() || !playwright.exists() {
        eprintln!("SKIPPED browser behind a NAT: no chromium or playwright-core (make test installs them)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    remove_stale_labs();
    let lab = Lab::build("w", 70, Nat::FullyRandom);
    let stun = format!("stun:{WAN_IP}:{TURN_PORT}");
    let turn = format!("turn:{TURN_USER}@{WAN_IP}:{TURN_PORT}");
    let (_server, _turn) = lab.start_servers_with(&["--ice-server", &stun, "--ice-server", &turn]);
    let stun_flag = format!("{WAN_IP}:{TURN_PORT}");
    let mut bob = lab.client("hb", "bob", &["--stun", &stun_flag, "--duration", "60"]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let ha = lab.ns("ha");
    let url = format!("http://{WAN_IP}:{SIGNALING_PORT}/");
    let script = format!("{root}/tests/browser/nat.js");
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ha, "timeout", "90", "node", &script, &url, "bob",
        ])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nat.js failed:\n{stdout}\n{stderr}");
    let result = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    eprintln!("NAT-LAB browser: {result}");
    assert_eq!(field(result, "ice_servers"), Some("2"), "{result}");
    assert!(num(result, "page_decoded") >= 60.0, "{result}");
    assert!(
        field(result, "pair").is_some_and(|p| p.starts_with("relay/")),
        "the page relays through the server's TURN: {result}"
    );
    let end = bob.wait_line("CALL_ENDED", Duration::from_secs(15));
    assert!(num(&end, "frames_decoded") >= 60.0, "bob: {end}");
}
