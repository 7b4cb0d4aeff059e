//! Call benchmark (not criterion: each sample is a real call between real processes).
//! Runs the server and two headless clients on 127.0.0.1 N times and reports medians of:
//! time from call start to ICE+DTLS connected and to the first decoded remote frame (caller
//! side, which includes creating the peer connection), end-to-end stamp latency, and the
//! caller's CPU use and peak memory during a call.
//!
//! `cargo bench --bench call -- [RUNS] [WIDTHxHEIGHT] [SECONDS]` (default 5 640x480 6)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_peerconnection_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_peerconnection_client");

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// utime+stime in seconds and peak RSS in kB of a process, from /proc.
fn cpu_and_peak(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / hz, hwm))
}

struct Sample {
    connect_ms: f64,
    first_frame_ms: f64,
    latency_ms: f64,
    cpu_percent: f64,
    peak_rss_mb: f64,
    decoded_fps: f64,
}

fn run_once(resolution: &str, seconds: u64) -> Result<Sample, String> {
    let mut server = Command::new(SERVER)
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let port = line.trim().rsplit(':').next().unwrap_or("").to_string();
    let common = |name: &str| {
        let mut c = Command::new(CLIENT);
        c.args(["--headless", "--server", "127.0.0.1", "--port", &port])
            .args(["--video-source", "test"])
            .args([
                "--ice-ip",
                "127.0.0.1",
                "--name",
                name,
                "--resolution",
                resolution,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    let mut bob = common("bob")
        .args(["--duration", &(seconds + 10).to_string()])
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap()).lines();
    // Wait for Bob to be signed in.
    for l in bob_out.by_ref() {
        if l.map_err(|e| e.to_string())?.starts_with("SIGNED_IN") {
            break;
        }
    }
    let mut alice = common("alice")
        .args(["--autocall", "--stats", "--duration", &seconds.to_string()])
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = alice.id();
    let mut cpu_start = None;
    let mut last = (0.0, 0);
    let mut ended = None;
    for l in BufReader::new(alice.stdout.take().unwrap()).lines() {
        let l = l.map_err(|e| e.to_string())?;
        if l.starts_with("CALL_STARTED") {
            cpu_start = cpu_and_peak(pid).map(|c| (c.0, Instant::now()));
        }
        if l.starts_with("STATS") {
            if let Some(c) = cpu_and_peak(pid) {
                last = c;
            }
        }
        if l.starts_with("CALL_ENDED") {
            ended = Some((l, Instant::now()));
            break;
        }
    }
    let _ = alice.wait();
    let _ = bob.kill();
    let _ = bob.wait();
    let _ = server.kill();
    let _ = server.wait();
    let (l, end_at) = ended.ok_or("the caller printed no CALL_ENDED")?;
    let (cpu0, t0) = cpu_start.ok_or("no CALL_STARTED")?;
    let wall = end_at.duration_since(t0).as_secs_f64();
    let decoded = field(&l, "frames_decoded").unwrap_or(0.0);
    Ok(Sample {
        connect_ms: field(&l, "connect_ms").ok_or(format!("no connect_ms: {l}"))?,
        first_frame_ms: field(&l, "first_frame_ms").ok_or(format!("no first_frame_ms: {l}"))?,
        latency_ms: field(&l, "mean_latency_ms").unwrap_or(f64::NAN),
        cpu_percent: (last.0 - cpu0) / wall * 100.0,
        peak_rss_mb: last.1 as f64 / 1024.0,
        decoded_fps: decoded / wall,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; take only our positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let resolution = args.get(1).cloned().unwrap_or_else(|| "640x480".into());
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(6);
    let mut samples = Vec::new();
    for i in 0..runs {
        match run_once(&resolution, seconds) {
            Ok(s) => {
                eprintln!(
                    "run {}/{runs}: connect {:.0} ms, first frame {:.0} ms, latency {:.1} ms, caller CPU {:.0}%, peak RSS {:.0} MB, {:.1} decoded fps",
                    i + 1, s.connect_ms, s.first_frame_ms, s.latency_ms, s.cpu_percent, s.peak_rss_mb, s.decoded_fps
                );
                samples.push(s);
            }
            Err(e) => eprintln!("run {}/{runs} failed: {e}", i + 1),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = |f: fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    println!(
        "RESULT bench=call resolution={resolution} runs={} connect_ms_median={:.0} first_frame_ms_median={:.0} latency_ms_median={:.1} caller_cpu_percent_median={:.0} caller_peak_rss_mb_median={:.0} decoded_fps_median={:.1}",
        samples.len(),
        m(|s| s.connect_ms),
        m(|s| s.first_frame_ms),
        m(|s| s.latency_ms),
        m(|s| s.cpu_percent),
        m(|s| s.peak_rss_mb),
        m(|s| s.decoded_fps),
    );
}
