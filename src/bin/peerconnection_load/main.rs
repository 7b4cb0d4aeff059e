//! `peerconnection_load`: a load generator for the signaling server. One thread, one mio
//! loop, one connection per request (as real clients do), every byte through
//! `peerconnection::signaling`. Ends with one machine-readable `RESULT ...` line. With
//! several `--server`s (a cluster sharing Redis) it spreads members or requests over them.

mod engine;

use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use engine::Reply;

type Engine = engine::Engine<Tag>;
use peerconnection::signaling::http::ParsedResponse;
use peerconnection::signaling::http::{
    message_request, sign_in_request, sign_out_request, wait_request,
};
use peerconnection::signaling::PeerId;
use rand::Rng;

/// Load generator for peerconnection_server (loopback only).
///
/// Scenarios: signin (N members join one after another, each keeping a hanging GET, every
/// list and notification checked, then one more joins and all N must hear it at once),
/// storm (the same join storm, timed until every member has heard of every other),
/// relay (P pairs ping-pong S-byte messages through /message and /wait), churn
/// (sign_in/sign_out cycles with C in flight), hold (N idle connections held at once while
/// sign-ins are timed).
///
/// Cluster mode: several --server (servers sharing one Redis with --redis). Each member
/// has a home server (--pair-placement); --spread says whether its requests all go there.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server port (the server on 127.0.0.1), when no --server is given.
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// A server to load, as 127.x.x.x:PORT; repeat it or give a comma list for a cluster.
    /// Replaces --port.
    #[arg(long = "server", value_name = "HOST:PORT", value_delimiter = ',', value_parser = parse_server)]
    servers: Vec<SocketAddr>,
    /// With several servers: sticky sends every request of a member to its home server
    /// (a balancer with affinity); random sends each request to a random server (one
    /// without).
    #[arg(long, value_enum, default_value_t = Spread::Sticky)]
    spread: Spread,
    /// With several servers, where members live: split puts the two members of a relay
    /// pair on different servers (member k on server k mod S); same puts both on one
    /// server (pair p on server p mod S): both ends of each message on one server (with
    /// --redis the message still goes through Redis).
    #[arg(long, value_enum, default_value_t = Placement::Split)]
    pair_placement: Placement,
    /// Members (signin, storm) or connections (hold).
    #[arg(long, default_value_t = 100)]
    members: u32,
    /// Pairs for relay.
    #[arg(long, default_value_t = 10)]
    pairs: u32,
    /// Message body bytes for relay.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Requests in flight for churn.
    #[arg(long, default_value_t = 50)]
    concurrency: u32,
    /// Seconds of relay/churn/hold measurement; also bounds every other scenario (x10).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// The server's pid, to report its memory (VmRSS) in the result.
    #[arg(long)]
    server_pid: Option<u32>,
    /// LABEL:PID of a process whose CPU time (user + system) over the measured part of
    /// the run is reported as cpu_LABEL=CORES (CPU seconds per second); repeat it, and
    /// processes sharing a label are summed (e.g. redis:PID, servers:PID1, servers:PID2).
    #[arg(long = "cpu-pid", value_name = "LABEL:PID", value_parser = parse_cpu_pid)]
    cpu_pids: Vec<(String, u32)>,
}

/// `--server`: a loopback IPv4 address and port (the generator binds 127.0.0.x sources).
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddrV4 = s
        .trim()
        .parse()
        .map_err(|_| format!("--server {s:?}: expected 127.x.x.x:PORT"))?;
    if !addr.ip().is_loopback() || addr.port() == 0 {
        return Err(format!(
            "--server {s:?}: must be a loopback address (127.x.x.x) with a port other than 0"
        ));
    }
    Ok(SocketAddr::V4(addr))
}

/// `--cpu-pid LABEL:PID`.
fn parse_cpu_pid(s: &str) -> Result<(String, u32), String> {
    let (label, pid) = s
        .split_once(':')
        .ok_or_else(|| format!("--cpu-pid {s:?}: expected LABEL:PID"))?;
    let ok_label = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("--cpu-pid {s:?}: {pid:?} is not a process id"))?;
    if !ok_label {
        return Err(format!(
            "--cpu-pid {s:?}: the label must be letters, digits or _"
        ));
    }
    Ok((label.to_string(), pid))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Spread {
    Sticky,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Placement {
    Split,
    Same,
}

/// Which server each request goes to.
struct Route {
    servers: usize,
    spread: Spread,
    placement: Placement,
    rng: rand::rngs::ThreadRng,
}

impl Route {
    fn new(args: &Args, servers: usize) -> Route {
        Route {
            servers: servers.max(1),
            spread: args.spread,
            placement: args.pair_placement,
            rng: rand::rng(),
        }
    }

    /// Member `i`'s home: where it signs in.
    fn home(&self, i: usize) -> usize {
        match self.placement {
            Placement::Split => i % self.servers,
            Placement::Same => (i / 2) % self.servers,
        }
    }

    /// Where member `i`'s next request goes.
    fn to(&mut self, i: usize) -> usize {
        match self.spread {
            Spread::Sticky => self.home(i),
            Spread::Random => self.rng.random_range(0..self.servers),
        }
    }

    /// Several servers: a sign-in list may lack a join still on its way between them.
    fn is_cluster(&self) -> bool {
        self.servers > 1
    }
}

/// USER_HZ: the unit of the times in /proc/PID/stat (100 on Linux for every architecture).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU seconds (user + system) used so far by `pid`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime
    // the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_S)
}

/// CPU use of the `--cpu-pid` processes over a stretch of the run.
struct CpuWatch {
    start: Instant,
    at_start: Vec<Option<f64>>,
}

impl CpuWatch {
    fn start(pids: &[(String, u32)]) -> CpuWatch {
        CpuWatch {
            start: Instant::now(),
            at_start: pids.iter().map(|(_, p)| cpu_seconds(*p)).collect(),
        }
    }

    /// ` cpu_LABEL=CORES` per label (summed over its processes), for the result line.
    fn report(&self, pids: &[(String, u32)]) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut labels: Vec<(&str, Option<f64>)> = Vec::new();
        for ((label, pid), before) in pids.iter().zip(&self.at_start) {
            let used = before.and_then(|b| Some(cpu_seconds(*pid)? - b));
            match labels.iter_mut().find(|(l, _)| *l == label) {
                Some((_, sum)) => *sum = sum.and_then(|s| Some(s + used?)),
                None => labels.push((label, used)),
            }
        }
        labels
            .iter()
            .map(|(l, used)| match used {
                Some(u) => format!(" cpu_{l}={:.3}", u / secs),
                None => format!(" cpu_{l}=unknown"),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Signin,
    Storm,
    Relay,
    Churn,
    Hold,
}

/// What each request was for.
#[derive(Debug, Clone, Copy)]
enum Tag {
    SignIn(usize),
    Wait(usize),
    Post { from: usize, seq: u64 },
    SignOut,
    Probe,
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Member {
    id: PeerId,
    /// Index of the next member whose join this one expects to hear of.
    next_expected: usize,
    heard: usize,
    /// Cluster mode: the storm's members this one knows of (from its list or a notice).
    known: Vec<bool>,
    known_count: usize,
}

/// `mJ,ID,1` (a storm member's line): J.
fn storm_index(line: &str) -> Option<usize> {
    line.strip_prefix('m')?.split(',').next()?.parse().ok()
}

/// Failures seen; any makes the exit code non-zero.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    /// The response, or `None` with the failure counted.
    fn check(
        &mut self,
        tag: Tag,
        result: Result<ParsedResponse, String>,
    ) -> Option<ParsedResponse> {
        result.map_err(|e| self.add(format!("{tag:?}: {e}"))).ok()
    }

    fn add(&mut self, what: String) {
        self.count += 1;
        if self.first.is_none() {
            eprintln!("error: {what}");
            self.first = Some(what);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = peerconnection::reactor::raise_fd_limit() {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    let addrs = if args.servers.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], args.port))]
    } else {
        args.servers.clone()
    };
    let mut route = Route::new(&args, addrs.len());
    let mut engine: Engine = match Engine::new(addrs) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("peerconnection_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = Duration::from_secs_f64(args.duration.max(0.1));
    let result = match args.scenario {
        Scenario::Signin | Scenario::Storm => {
            storm(&mut engine, &mut route, &args, bound * 10).map(|r| r.0)
        }
        Scenario::Relay => relay(&mut engine, &mut route, &args, bound),
        Scenario::Churn => churn(&mut engine, &mut route, &args, bound),
        Scenario::Hold => hold(&mut engine, &args, bound),
    };
    let servers = if route.is_cluster() {
        format!("servers={} spread={:?} ", route.servers, route.spread).to_lowercase()
    } else {
        String::new()
    };
    match result {
        Ok(line) => {
            println!("RESULT scenario={:?} {servers}{line}", args.scenario);
            ExitCode::SUCCESS
        }
        Err(line) => {
            println!(
                "RESULT scenario={:?} failed=1 {servers}{line}",
                args.scenario
            );
            ExitCode::FAILURE
        }
    }
}

/// N members join one after another; each re-arms its hanging GET after every answer.
/// Returns once every member has heard of every later member (the earlier ones are in its
/// sign-in list, which is checked too). `signin` then has one more member join and checks
/// that all N hear it. With several servers a sign-in list may lack joins still on their
/// way between servers: each member must then learn of every other exactly once, from its
/// list or a notice, in any order (repeats are counted, as `duplicates`).
fn storm(
    engine: &mut Engine,
    route: &mut Route,
    args: &Args,
    bound: Duration,
) -> Result<(String, Vec<PeerId>), String> {
    let n = args.members as usize;
    let cluster = route.is_cluster();
    let rss_before = rss_kb(args.server_pid);
    let mut members: Vec<Member> = Vec::with_capacity(n);
    let mut errors = Errors::default();
    let expected_total = n * n.saturating_sub(1) / 2;
    let mut notifications = 0usize;
    let mut duplicates = 0usize;
    let mut complete_members = 0usize;
    let cpu = CpuWatch::start(&args.cpu_pids);
    let mut cpu_line = None;
    let start = Instant::now();
    let deadline = start + bound;
    engine.submit(route.home(0), sign_in_request("m0"), Tag::SignIn(0));
    let mut last_progress = start;
    let mut newcomer_sent = false;
    let mut newcomer_heard = 0usize;
    let mut storm_time = None;
    let mut already: Option<usize> = None;
    while Instant::now() < deadline {
        let replies = engine.turn(deadline)?;
        for Reply { tag, result } in replies {
            let Some(resp) = errors.check(tag, result) else {
                continue;
            };
            match tag {
                Tag::SignIn(i) => {
                    let Some(id) = resp.pragma.filter(|_| resp.code == 200) else {
                        errors.add(format!("sign-in {i}: {} {}", resp.code, resp.reason));
                        continue;
                    };
                    if i == n {
                        continue; // the newcomer
                    }
                    let lines: Vec<&str> = std::str::from_utf8(&resp.body)
                        .unwrap_or("")
                        .lines()
                        .collect();
                    let own = format!("m{i},{id},1");
                    let mut member = Member {
                        id,
                        next_expected: i + 1,
                        heard: 0,
                        known: Vec::new(),
                        known_count: 0,
                    };
                    if cluster {
                        member.known = vec![false; n];
                        member.known[i] = true;
                        for j in lines.iter().skip(1).filter_map(|l| storm_index(l)) {
                            if j >= i {
                                errors.add(format!("sign-in {i}: lists m{j}, not yet signed in"));
                            } else if !std::mem::replace(&mut member.known[j], true) {
                                member.known_count += 1;
                            }
                        }
                        if lines.first() != Some(&own.as_str()) {
                            errors.add(format!("sign-in {i}: first line {:?}", lines.first()));
                        }
                        if member.known_count == n - 1 {
                            complete_members += 1;
                        }
                    } else {
                        // Members already on the server before the storm are listed too.
                        let others = *already.get_or_insert(lines.len().saturating_sub(1));
                        if lines.len() != others + i + 1 || lines[0] != own {
                            errors.add(format!(
                                "sign-in {i}: list of {} lines, first {:?}",
                                lines.len(),
                                lines.first()
                            ));
                        }
                    }
                    members.push(member);
                    engine.submit(route.to(i), wait_request(id), Tag::Wait(i));
                    if i + 1 < n {
                        engine.submit(
                            route.home(i + 1),
                            sign_in_request(&format!("m{}", i + 1)),
                            Tag::SignIn(i + 1),
                        );
                    }
                }
                Tag::Wait(i) => {
                    let m = &mut members[i];
                    let body = String::from_utf8_lossy(&resp.body);
                    if resp.code != 200 || resp.pragma != Some(m.id) {
                        errors.add(format!("wait {i}: {} pragma {:?}", resp.code, resp.pragma));
                        continue;
                    }
                    if body.starts_with(&format!("m{n},")) {
                        newcomer_heard += 1;
                        continue; // done: this member holds no more GETs
                    }
                    if cluster {
                        match storm_index(&body).filter(|j| *j < n && body.ends_with(",1\n")) {
                            Some(j) if !m.known[j] => {
                                m.known[j] = true;
                                m.known_count += 1;
                                if m.known_count == n - 1 {
                                    complete_members += 1;
                                }
                            }
                            Some(_) => duplicates += 1,
                            None => errors.add(format!(
                                "member {i}: expected a storm member's join, got {body:?}"
                            )),
                        }
                    } else {
                        let j = m.next_expected;
                        if j >= n || !body.starts_with(&format!("m{j},")) || !body.ends_with(",1\n")
                        {
                            errors.add(format!(
                                "member {i}: expected the join of m{j}, got {body:?}"
                            ));
                        }
                        m.next_expected += 1;
                    }
                    m.heard += 1;
                    notifications += 1;
                    engine.submit(route.to(i), wait_request(m.id), Tag::Wait(i));
                }
                _ => {}
            }
        }
        let done = if cluster {
            complete_members == n
        } else {
            notifications == expected_total
        };
        if done && members.len() == n && storm_time.is_none() {
            storm_time = Some(start.elapsed());
            cpu_line = Some(cpu.report(&args.cpu_pids));
            if args.scenario != Scenario::Signin {
                break;
            }
        }
        if storm_time.is_some() && !newcomer_sent {
            newcomer_sent = true;
            engine.submit(
                route.home(n),
                sign_in_request(&format!("m{n}")),
                Tag::SignIn(n),
            );
        }
        if newcomer_heard == n {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "storm: {} members, {notifications}/{expected_total} notifications, {:.1} s",
                members.len(),
                start.elapsed().as_secs_f64()
            );
        }
        if errors.count > 0 {
            break;
        }
    }
    let rss_after = rss_kb(args.server_pid);
    let ids: Vec<PeerId> = members.iter().map(|m| m.id).collect();
    if args.scenario != Scenario::Relay {
        sign_out_all(engine, route, &ids, deadline);
    }
    let t = storm_time.unwrap_or(start.elapsed());
    let mut line = format!(
        "members={n} notifications={notifications} expected={expected_total} seconds={:.3} notifications_per_s={:.0} errors={}",
        t.as_secs_f64(),
        notifications as f64 / t.as_secs_f64(),
        errors.count
    );
    if cluster {
        line.push_str(&format!(" duplicates={duplicates}"));
    }
    if args.scenario == Scenario::Signin {
        line.push_str(&format!(" newcomer_heard_by={newcomer_heard}"));
    }
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        line.push_str(&format!(
            " server_rss_kb={b} server_bytes_per_member={}",
            (b.saturating_sub(a) * 1024) / n.max(1) as u64
        ));
    }
    if args.scenario != Scenario::Relay {
        line.push_str(&cpu_line.unwrap_or_else(|| cpu.report(&args.cpu_pids)));
    }
    let complete =
        storm_time.is_some() && (args.scenario != Scenario::Signin || newcomer_heard == n);
    if errors.count == 0 && complete {
        Ok((line, ids))
    } else {
        Err(format!(
            "{line} first_error={:?}",
            errors.first.unwrap_or_else(|| "incomplete".into())
        ))
    }
}

/// Signs every member out (the server closes their hanging GETs), so runs can follow
/// each other on one server.
fn sign_out_all(engine: &mut Engine, route: &mut Route, ids: &[PeerId], deadline: Instant) {
    for (i, &id) in ids.iter().enumerate() {
        engine.submit(route.to(i), sign_out_request(id), Tag::SignOut);
    }
    let mut left = ids.len();
    while left > 0 && Instant::now() < deadline {
        match engine.turn(deadline) {
            Ok(replies) => {
                left -= replies
                    .iter()
                    .filter(|r| matches!(r.tag, Tag::SignOut))
                    .count()
            }
            Err(_) => return,
        }
    }
}

/// P pairs ping-pong a message: a posts to b, b's hanging GET delivers it, b posts back.
fn relay(
    engine: &mut Engine,
    route: &mut Route,
    args: &Args,
    measure: Duration,
) -> Result<String, String> {
    let n = (args.pairs * 2) as usize;
    // Join and drain the join notifications first (a small storm), each member at home.
    let storm_args = Args {
        scenario: Scenario::Relay,
        members: n as u32,
        ..args.clone()
    };
    let mut at_home = Route {
        spread: Spread::Sticky,
        ..Route::new(args, route.servers)
    };
    let (_, ids) = storm(engine, &mut at_home, &storm_args, measure * 10)?;
    let mut errors = Errors::default();
    let mut sent_at: Vec<Option<(u64, Instant)>> = vec![None; n];
    let mut latencies: Vec<f64> = Vec::new();
    let mut delivered = 0u64;
    let mut posted = 0u64;
    let mut gets_closed = 0u64;
    let mut duplicates = 0u64;
    let mut last_seq: Vec<Option<u64>> = vec![None; n];
    let payload = |from: usize, seq: u64| -> Vec<u8> {
        let mut b = format!("{from}:{seq}:").into_bytes();
        b.resize(args.size.max(b.len()), b'a' + (seq % 26) as u8);
        b
    };
    let post = |engine: &mut Engine, route: &mut Route, from: usize, seq: u64| {
        let to = from ^ 1;
        engine.submit(
            route.to(from),
            message_request(ids[from], ids[to], "text/plain", &payload(from, seq)),
            Tag::Post { from, seq },
        );
    };
    let cpu = CpuWatch::start(&args.cpu_pids);
    let start = Instant::now();
    let end = start + measure;
    for pair in 0..args.pairs as usize {
        post(engine, route, pair * 2, 0);
        sent_at[pair * 2] = Some((0, Instant::now()));
        posted += 1;
    }
    while Instant::now() < end + Duration::from_secs(2) {
        let stopping = Instant::now() >= end;
        for Reply { tag, result } in engine.turn(end + Duration::from_secs(2))? {
            // A hanging GET the server closed without an answer (with several servers, one
            // whose member moved to another server): the original client connects its
            // hanging GET again, and so does this one; counted, not an error.
            if let (Tag::Wait(i), Err(_)) = (tag, &result) {
                if route.is_cluster() {
                    gets_closed += 1;
                    engine.submit(route.to(i), wait_request(ids[i]), Tag::Wait(i));
                    continue;
                }
            }
            let Some(resp) = errors.check(tag, result) else {
                continue;
            };
            match tag {
                Tag::Post { from, seq } if resp.code != 200 => {
                    errors.add(format!("post {from}/{seq}: {} {}", resp.code, resp.reason))
                }
                Tag::Wait(i) => {
                    let from = i ^ 1;
                    if resp.pragma == Some(ids[i]) {
                        // A stray notification: just re-arm.
                    } else if resp.pragma != Some(ids[from]) {
                        errors.add(format!(
                            "member {i}: message from unexpected {:?}",
                            resp.pragma
                        ));
                    } else {
                        match sent_at[from] {
                            Some((seq, at)) if resp.body == payload(from, seq) => {
                                sent_at[from] = None;
                                last_seq[from] = Some(seq);
                                delivered += 1;
                                latencies.push(at.elapsed().as_secs_f64() * 1e6);
                                if !stopping {
                                    post(engine, route, i, seq + 1);
                                    sent_at[i] = Some((seq + 1, Instant::now()));
                                    posted += 1;
                                }
                            }
                            // At-least-once delivery across servers may repeat one.
                            _ if last_seq[from].is_some_and(|s| resp.body == payload(from, s)) => {
                                duplicates += 1
                            }
                            _ => errors.add(format!("member {i}: corrupted or unexpected message")),
                        }
                    }
                    engine.submit(route.to(i), wait_request(ids[i]), Tag::Wait(i));
                }
                _ => {}
            }
        }
        if stopping && sent_at.iter().all(Option::is_none) {
            break;
        }
    }
    let cpu_line = cpu.report(&args.cpu_pids);
    sign_out_all(
        engine,
        route,
        &ids,
        Instant::now() + Duration::from_secs(10),
    );
    let lost = posted - delivered;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let placement = if route.is_cluster() {
        format!("placement={:?} ", args.pair_placement).to_lowercase()
    } else {
        String::new()
    };
    let gets_closed = if route.is_cluster() {
        format!(" gets_closed={gets_closed} duplicates={duplicates}")
    } else {
        String::new()
    };
    let line = format!(
        "{placement}pairs={} size={} seconds={:.2} messages={delivered} messages_per_s={:.0} p50_us={:.0} p99_us={:.0} lost={lost} errors={}{gets_closed}{cpu_line}",
        args.pairs,
        args.size,
        measure.as_secs_f64(),
        delivered as f64 / measure.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        errors.count
    );
    if errors.count == 0 && lost == 0 && delivered > 0 {
        Ok(line)
    } else {
        Err(line)
    }
}

/// sign_in then sign_out, C cycles in flight, for the measurement time.
fn churn(
    engine: &mut Engine,
    route: &mut Route,
    args: &Args,
    measure: Duration,
) -> Result<String, String> {
    let mut errors = Errors::default();
    let mut cycles = 0u64;
    let cpu = CpuWatch::start(&args.cpu_pids);
    let start = Instant::now();
    let end = start + measure;
    // Each cycle is a new member (numbered in turn): it signs in at its home.
    let mut next_member = 0usize;
    for i in 0..args.concurrency as usize {
        engine.submit(
            route.home(i),
            sign_in_request(&format!("c{i}")),
            Tag::SignIn(i),
        );
        next_member = i + 1;
    }
    let mut in_flight = args.concurrency as u64;
    while in_flight > 0 && Instant::now() < end + Duration::from_secs(5) {
        for Reply { tag, result } in engine.turn(end + Duration::from_secs(5))? {
            in_flight -= 1;
            let Some(resp) = errors.check(tag, result) else {
                continue;
            };
            match tag {
                Tag::SignIn(i) => match resp.pragma.filter(|_| resp.code == 200) {
                    Some(id) => {
                        engine.submit(route.to(i), sign_out_request(id), Tag::SignOut);
                        in_flight += 1;
                    }
                    None => errors.add(format!("sign-in {i}: {}", resp.code)),
                },
                Tag::SignOut => {
                    if resp.code == 200 {
                        cycles += 1;
                    } else {
                        errors.add(format!("sign-out: {}", resp.code));
                    }
                    if Instant::now() < end {
                        let i = next_member;
                        next_member += 1;
                        engine.submit(route.home(i), sign_in_request("c"), Tag::SignIn(i));
                        in_flight += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let line = format!(
        "concurrency={} seconds={secs:.2} cycles={cycles} cycles_per_s={:.0} requests_per_s={:.0} errors={}{}",
        args.concurrency,
        cycles as f64 / secs,
        cycles as f64 * 2.0 / secs,
        errors.count,
        cpu.report(&args.cpu_pids)
    );
    if errors.count == 0 && cycles > 0 {
        Ok(line)
    } else {
        Err(line)
    }
}

/// N connections opened and held (idle, within the server's request time-out), while
/// sign-ins are timed one after another.
fn hold(engine: &mut Engine, args: &Args, measure: Duration) -> Result<String, String> {
    let rss_before = rss_kb(args.server_pid);
    let start = Instant::now();
    let held = engine.open_idle(args.members as usize)?;
    let opened = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_kb(args.server_pid);
    let mut latencies = Vec::new();
    let mut errors = Errors::default();
    let end = Instant::now() + measure;
    // One sign-in (timed) and its sign-out at a time.
    let mut t = Instant::now();
    engine.submit(0, sign_in_request("probe"), Tag::Probe);
    let mut in_flight = 1;
    while in_flight > 0 {
        for Reply { tag, result } in engine.turn(end + Duration::from_secs(5))? {
            in_flight -= 1;
            match (tag, result) {
                (Tag::Probe, Ok(r)) if r.code == 200 => {
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                    if let Some(id) = r.pragma {
                        engine.submit(0, sign_out_request(id), Tag::SignOut);
                        in_flight += 1;
                    }
                }
                (Tag::SignOut, Ok(r)) if r.code == 200 => {
                    if Instant::now() < end {
                        t = Instant::now();
                        engine.submit(0, sign_in_request("probe"), Tag::Probe);
                        in_flight += 1;
                    }
                }
                (tag, Ok(r)) => errors.add(format!("{tag:?}: {}", r.code)),
                (tag, Err(e)) => errors.add(format!("{tag:?}: {e}")),
            }
        }
        if Instant::now() > end + Duration::from_secs(5) {
            break;
        }
    }
    let still = engine.idle_still_open();
    engine.close_idle();
    let _ = held;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mut line = format!(
        "connections={} open_seconds={:.2} still_open={still} probes={} probe_p50_us={:.0} errors={}",
        args.members,
        opened.as_secs_f64(),
        latencies.len(),
        latencies.get(latencies.len() / 2).copied().unwrap_or(f64::NAN),
        errors.count
    );
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        line.push_str(&format!(
            " server_rss_kb={b} server_bytes_per_connection={}",
            b.saturating_sub(a) * 1024 / args.members.max(1) as u64
        ));
    }
    if errors.count == 0 && still == args.members as usize && !latencies.is_empty() {
        Ok(line)
    } else {
        Err(line)
    }
}
