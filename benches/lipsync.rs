//! Lip-sync and mouth-to-ear benchmark (not criterion: one real call between real
//! processes). Alice sends the `tone` (a 1 kHz burst at the start of each second) and the
//! test pattern (which flashes on its first frame of each second, stamped with its capture
//! time); Bob records what he plays. For each burst: mouth-to-ear latency is when Bob
//! played it (from the recording, whose start Bob prints on the capture clock) minus its
//! capture at the start of the second; the A/V offset is that minus the video's
//! capture-to-shown latency (`latency_ms`, from the stamps). Also Bob's own measure
//! through the RTCP sender reports (`av_offset_ms`). Reported against ITU-R BT.1359's
//! window: sound at most 45 ms early or 125 ms late.
//!
//! `cargo bench --bench lipsync -- [SECONDS] [WIDTHxHEIGHT]` (default 60 640x480)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use peerconnection::media::audio::{burst_onsets, read_wav};

const SERVER: &str = env!("CARGO_BIN_EXE_peerconnection_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_peerconnection_client");

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let resolution = args.get(1).cloned().unwrap_or_else(|| "640x480".into());
    let rec = std::env::temp_dir().join(format!("pc-lipsync-{}.wav", std::process::id()));

    let mut server = Command::new(SERVER)
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("server says where it listens");
    let port = line.trim().rsplit(':').next().unwrap_or("").to_string();
    let client = |name: &str, duration: u64| {
        let mut c = Command::new(CLIENT);
        c.args(["--headless", "--server", "127.0.0.1", "--port", &port])
            .args(["--ice-ip", "127.0.0.1", "--name", name])
            .args(["--video-source", "test", "--resolution", &resolution])
            .args(["--audio-source", "tone", "--audio-sink", "none"])
            .args(["--duration", &duration.to_string()])
            .stderr(Stdio::null());
        c
    };
    let mut bob = client("bob", seconds + 8)
        .args(["--stats", "--audio-record", rec.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("bob starts");
    let mut bob_lines = BufReader::new(bob.stdout.take().unwrap()).lines();
    for l in bob_lines.by_ref() {
        if l.expect("bob's stdout").starts_with("SIGNED_IN") {
            break;
        }
    }
    let mut alice = client("alice", seconds + 3)
        .arg("--autocall")
        .stdout(Stdio::null())
        .spawn()
        .expect("alice starts");
    let mut start_us = None;
    let (mut video_ms, mut sr_offsets) = (Vec::new(), Vec::new());
    for l in bob_lines.map_while(Result::ok) {
        if l.starts_with("AUDIO_PLAYOUT_STARTED") {
            start_us = field(&l, "mono_us");
        }
        if l.starts_with("STATS") {
            video_ms.extend(field(&l, "latency_ms"));
            sr_offsets.extend(field(&l, "av_offset_ms"));
        }
        if l.starts_with("CALL_ENDED") {
            break;
        }
    }
    let _ = alice.wait();
    let _ = bob.wait();
    let _ = server.kill();
    let _ = server.wait();
    let start_us = start_us.expect("bob printed AUDIO_PLAYOUT_STARTED");
    let samples = read_wav(&rec).expect("bob's recording reads");
    let _ = std::fs::remove_file(&rec);
    let video = median(&video_ms);
    // From the fourth second of playout on, as the test does: a call's first seconds are
    // busy and the buffer is still learning the jitter (all bursts go to stderr).
    let all: Vec<(usize, f64)> = burst_onsets(&samples)
        .iter()
        .map(|&n| (n, ((start_us + n as f64 * 1e6 / 48_000.0) % 1e6) / 1000.0))
        .collect();
    eprintln!(
        "mouth-to-ear per burst (ms): {:?}",
        all.iter().map(|a| a.1.round()).collect::<Vec<_>>()
    );
    let mouth_to_ear: Vec<f64> = all
        .iter()
        .filter(|a| a.0 >= 3 * 48_000)
        .map(|a| a.1)
        .collect();
    let sr_offsets: Vec<f64> = sr_offsets.into_iter().skip(3).collect();
    let offsets: Vec<f64> = mouth_to_ear.iter().map(|a| a - video).collect();
    let worst = |v: &[f64]| {
        v.iter()
            .copied()
            .fold(0.0f64, |w, x| if x.abs() > w.abs() { x } else { w })
    };
    let inside = offsets
        .iter()
        .chain(&sr_offsets)
        .all(|o| (-45.0..=125.0).contains(o));
    let (lo, hi) = range(&offsets);
    println!(
        "RESULT bench=lipsync seconds={seconds} resolution={resolution} bursts={} mouth_to_ear_ms_median={:.1} video_latency_ms_median={video:.1} av_offset_ms_median={:.1} av_offset_ms_min={lo:.1} av_offset_ms_max={hi:.1} av_offset_ms_worst={:.1} sr_av_offset_ms_median={:.1} sr_av_offset_ms_worst={:.1} within_bt1359={inside}",
        offsets.len(),
        median(&mouth_to_ear),
        median(&offsets),
        worst(&offsets),
        median(&sr_offsets),
        worst(&sr_offsets),
    );
}
