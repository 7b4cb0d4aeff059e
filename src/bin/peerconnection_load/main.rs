//! `peerconnection_load`: a load generator for the signaling server. One thread, one mio
//! loop, one connection per request (as real clients do), every byte through
//! `peerconnection::signaling`. Ends with one machine-readable `RESULT ...` line.

mod engine;

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

/// Load generator for peerconnection_server (127.0.0.1 only).
///
/// Scenarios: signin (N members join one after another, each keeping a hanging GET, every
/// list and notification checked, then one more joins and all N must hear it at once),
/// storm (the same join storm, timed until every member has heard of every other),
/// relay (P pairs ping-pong S-byte messages through /message and /wait), churn
/// (sign_in/sign_out cycles with C in flight), hold (N idle connections held at once while
/// sign-ins are timed).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server port (the server on 127.0.0.1).
    #[arg(long, default_value_t = 8888)]
    port: u16,
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
    let mut engine: Engine = match Engine::new(args.port) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("peerconnection_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = Duration::from_secs_f64(args.duration.max(0.1));
    let result = match args.scenario {
        Scenario::Signin | Scenario::Storm => storm(&mut engine, &args, bound * 10).map(|r| r.0),
        Scenario::Relay => relay(&mut engine, &args, bound),
        Scenario::Churn => churn(&mut engine, &args, bound),
        Scenario::Hold => hold(&mut engine, &args, bound),
    };
    match result {
        Ok(line) => {
            println!("RESULT scenario={:?} {line}", args.scenario);
            ExitCode::SUCCESS
        }
        Err(line) => {
            println!("RESULT scenario={:?} failed=1 {line}", args.scenario);
            ExitCode::FAILURE
        }
    }
}

/// N members join one after another; each re-arms its hanging GET after every answer.
/// Returns once every member has heard of every later member (the earlier ones are in its
/// sign-in list, which is checked too). `signin` then has one more member join and checks
/// that all N hear it.
fn storm(
    engine: &mut Engine,
    args: &Args,
    bound: Duration,
) -> Result<(String, Vec<PeerId>), String> {
    let n = args.members as usize;
    let rss_before = rss_kb(args.server_pid);
    let mut members: Vec<Member> = Vec::with_capacity(n);
    let mut errors = Errors::default();
    let expected_total = n * n.saturating_sub(1) / 2;
    let mut notifications = 0usize;
    let start = Instant::now();
    let deadline = start + bound;
    engine.submit(sign_in_request("m0"), Tag::SignIn(0));
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
                    // Members already on the server before the storm are listed too.
                    let others = *already.get_or_insert(lines.len().saturating_sub(1));
                    if lines.len() != others + i + 1 || lines[0] != own {
                        errors.add(format!(
                            "sign-in {i}: list of {} lines, first {:?}",
                            lines.len(),
                            lines.first()
                        ));
                    }
                    members.push(Member {
                        id,
                        next_expected: i + 1,
                        heard: 0,
                    });
                    engine.submit(wait_request(id), Tag::Wait(i));
                    if i + 1 < n {
                        engine.submit(sign_in_request(&format!("m{}", i + 1)), Tag::SignIn(i + 1));
                    }
                }
                Tag::Wait(i) => {
                    let m = &mut members[i];
                    let body = String::from_utf8_lossy(&resp.body);
                    if resp.code != 200 || resp.pragma != Some(m.id) {
                        errors.add(format!("wait {i}: {} pragma {:?}", resp.code, resp.pragma));
                        continue;
                    }
                    let j = m.next_expected;
                    if j == n && body.starts_with(&format!("m{n},")) {
                        newcomer_heard += 1;
                        continue; // done: this member holds no more GETs
                    }
                    if j >= n || !body.starts_with(&format!("m{j},")) || !body.ends_with(",1\n") {
                        errors.add(format!(
                            "member {i}: expected the join of m{j}, got {body:?}"
                        ));
                    }
                    m.next_expected += 1;
                    m.heard += 1;
                    notifications += 1;
                    engine.submit(wait_request(m.id), Tag::Wait(i));
                }
                _ => {}
            }
        }
        if notifications == expected_total && members.len() == n && storm_time.is_none() {
            storm_time = Some(start.elapsed());
            if args.scenario != Scenario::Signin {
                break;
            }
        }
        if storm_time.is_some() && !newcomer_sent {
            newcomer_sent = true;
            engine.submit(sign_in_request(&format!("m{n}")), Tag::SignIn(n));
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
        sign_out_all(engine, &ids, deadline);
    }
    let t = storm_time.unwrap_or(start.elapsed());
    let mut line = format!(
        "members={n} notifications={notifications} expected={expected_total} seconds={:.3} notifications_per_s={:.0} errors={}",
        t.as_secs_f64(),
        notifications as f64 / t.as_secs_f64(),
        errors.count
    );
    if args.scenario == Scenario::Signin {
        line.push_str(&format!(" newcomer_heard_by={newcomer_heard}"));
    }
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        line.push_str(&format!(
            " server_rss_kb={b} server_bytes_per_member={}",
            (b.saturating_sub(a) * 1024) / n.max(1) as u64
        ));
    }
    let complete = notifications == expected_total
        && (args.scenario != Scenario::Signin || newcomer_heard == n);
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
fn sign_out_all(engine: &mut Engine, ids: &[PeerId], deadline: Instant) {
    for &id in ids {
        engine.submit(sign_out_request(id), Tag::SignOut);
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
fn relay(engine: &mut Engine, args: &Args, measure: Duration) -> Result<String, String> {
    let n = (args.pairs * 2) as usize;
    // Join and drain the join notifications first (a small storm).
    let storm_args = Args {
        scenario: Scenario::Relay,
        members: n as u32,
        ..*args
    };
    let (_, ids) = storm(engine, &storm_args, measure * 10)?;
    let mut errors = Errors::default();
    let mut sent_at: Vec<Option<(u64, Instant)>> = vec![None; n];
    let mut latencies: Vec<f64> = Vec::new();
    let mut delivered = 0u64;
    let mut posted = 0u64;
    let payload = |from: usize, seq: u64| -> Vec<u8> {
        let mut b = format!("{from}:{seq}:").into_bytes();
        b.resize(args.size.max(b.len()), b'a' + (seq % 26) as u8);
        b
    };
    let post = |engine: &mut Engine, from: usize, seq: u64| {
        let to = from ^ 1;
        engine.submit(
            message_request(ids[from], ids[to], "text/plain", &payload(from, seq)),
            Tag::Post { from, seq },
        );
    };
    let start = Instant::now();
    let end = start + measure;
    for pair in 0..args.pairs as usize {
        post(engine, pair * 2, 0);
        sent_at[pair * 2] = Some((0, Instant::now()));
        posted += 1;
    }
    while Instant::now() < end + Duration::from_secs(2) {
        let stopping = Instant::now() >= end;
        for Reply { tag, result } in engine.turn(end + Duration::from_secs(2))? {
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
                        match sent_at[from].take() {
                            Some((seq, at)) if resp.body == payload(from, seq) => {
                                delivered += 1;
                                latencies.push(at.elapsed().as_secs_f64() * 1e6);
                                if !stopping {
                                    post(engine, i, seq + 1);
                                    sent_at[i] = Some((seq + 1, Instant::now()));
                                    posted += 1;
                                }
                            }
                            _ => errors.add(format!("member {i}: corrupted or unexpected message")),
                        }
                    }
                    engine.submit(wait_request(ids[i]), Tag::Wait(i));
                }
                _ => {}
            }
        }
        if stopping && sent_at.iter().all(Option::is_none) {
            break;
        }
    }
    sign_out_all(engine, &ids, Instant::now() + Duration::from_secs(10));
    let lost = posted - delivered;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let line = format!(
        "pairs={} size={} seconds={:.2} messages={delivered} messages_per_s={:.0} p50_us={:.0} p99_us={:.0} lost={lost} errors={}",
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
fn churn(engine: &mut Engine, args: &Args, measure: Duration) -> Result<String, String> {
    let mut errors = Errors::default();
    let mut cycles = 0u64;
    let start = Instant::now();
    let end = start + measure;
    for i in 0..args.concurrency as usize {
        engine.submit(sign_in_request(&format!("c{i}")), Tag::SignIn(i));
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
                        engine.submit(sign_out_request(id), Tag::SignOut);
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
                        engine.submit(sign_in_request("c"), Tag::SignIn(0));
                        in_flight += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let line = format!(
        "concurrency={} seconds={secs:.2} cycles={cycles} cycles_per_s={:.0} requests_per_s={:.0} errors={}",
        args.concurrency,
        cycles as f64 / secs,
        cycles as f64 * 2.0 / secs,
        errors.count
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
    engine.submit(sign_in_request("probe"), Tag::Probe);
    let mut in_flight = 1;
    while in_flight > 0 {
        for Reply { tag, result } in engine.turn(end + Duration::from_secs(5))? {
            in_flight -= 1;
            match (tag, result) {
                (Tag::Probe, Ok(r)) if r.code == 200 => {
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                    if let Some(id) = r.pragma {
                        engine.submit(sign_out_request(id), Tag::SignOut);
                        in_flight += 1;
                    }
                }
                (Tag::SignOut, Ok(r)) if r.code == 200 => {
                    if Instant::now() < end {
                        t = Instant::now();
                        engine.submit(sign_in_request("probe"), Tag::Probe);
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
