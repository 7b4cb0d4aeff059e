//! Interop with a real browser WebRTC stack: Debian's Chromium (headless, fake camera) and
//! the web page our server serves, against the native client and against itself. Each
//! scenario runs in a fresh network namespace that has only `lo`, so no WebRTC traffic can
//! leave loopback. tests/browser/run.js does the driving and the checks (60+ frames decoded
//! each way, H.264 negotiated, hang-up returns both sides to the peer list).

mod procs;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use peerconnection::media::audio::{read_wav, write_wav};
use procs::num;
use procs::signal::{best_pitch_ncc, melody, to_i16};

/// One browser at a time: two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(scenario: &str) -> String {
    run_with(scenario, &[])
}

/// Runs a scenario with extra environment variables for run.js.
fn run_with(scenario: &str, env: &[(&str, &str)]) -> String {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `make deps` (installs Debian's chromium)"
    );
    assert!(
        Path::new(root)
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (make test does)"
    );
    let script = format!(
        "ip link set lo up && exec timeout 160 node {root}/tests/browser/run.js {scenario} {} {}",
        env!("CARGO_BIN_EXE_peerconnection_server"),
        env!("CARGO_BIN_EXE_peerconnection_client"),
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .envs(env.iter().copied())
        .output()
        .expect("run unshare (util-linux); the browser tests need root for a network namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("{scenario}: no RESULT line:\n{stdout}\n{stderr}"))
        .to_string();
    println!("{line}");
    assert!(line.contains("codec=video/H264"), "{line}");
    line
}

/// Opus flowed both ways, and the page concealed under 2 % of what it received after its
/// first 3 s.
fn audio_both_ways(line: &str) {
    assert!(num(line, "page_audio_packets") >= 150.0, "{line}");
    assert!(num(line, "native_audio_recv") >= 150.0, "{line}");
    assert!(num(line, "page_concealed_ratio") < 0.02, "{line}");
}

#[test]
fn browser_calls_native_client() {
    // The page's microphone plays a tune (Chromium's fake device plays a WAV file); the
    // native client's recording of what it played must hold it.
    let dir = std::env::temp_dir().join(format!("pc-browser-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tune_wav, rec) = (dir.join("tune.wav"), dir.join("native.wav"));
    let tune = to_i16(&melody(3, 6.0, 48_000));
    write_wav(&tune_wav, &tune, 48_000, 1).unwrap();
    let line = run_with(
        "browser-calls-native",
        &[
            ("PC_FAKE_AUDIO", tune_wav.to_str().unwrap()),
            ("PC_NATIVE_AUDIO_RECORD", rec.to_str().unwrap()),
        ],
    );
    assert!(num(&line, "page_decoded") >= 60.0 && num(&line, "native_decoded") >= 60.0);
    audio_both_ways(&line);
    let recorded = read_wav(&rec).unwrap();
    assert!(
        recorded.len() > 3 * 48_000,
        "{} samples recorded",
        recorded.len()
    );
    // Two seconds from the middle of the call (about 16 notes: one second, 8 notes, let
    // an unrelated tune match by chance at 0.78). Chromium's capture processing (gain
    // control, noise suppression) reshapes the waveform (its sample-level correlation is
    // near 0 though every note is there), so the tune is found by its pitch track.
    let mid = recorded.len() / 2;
    let ncc = best_pitch_ncc(&recorded[mid - 48_000..mid + 48_000], &tune);
    println!("native recording of the page's tune: pitch-track ncc {ncc:.3}");
    assert!(
        ncc > 0.8,
        "the native recording holds the page's tune: ncc {ncc:.3}"
    );
    let other = to_i16(&melody(4, 6.0, 48_000));
    let unrelated = best_pitch_ncc(&recorded[mid - 48_000..mid + 48_000], &other);
    assert!(
        unrelated < ncc - 0.2,
        "another tune matches as well: {unrelated:.3}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn native_client_calls_browser() {
    let line = run("native-calls-browser");
    assert!(num(&line, "page_decoded") >= 60.0 && num(&line, "native_decoded") >= 60.0);
    audio_both_ways(&line);
}

#[test]
fn browser_calls_browser() {
    let line = run("browser-calls-browser");
    assert!(num(&line, "a_decoded") >= 60.0 && num(&line, "b_decoded") >= 60.0);
}

#[test]
fn a_browser_call_holds_for_more_than_a_minute() {
    let line = run("long-call");
    assert!(num(&line, "native_decoded") >= 60.0 * 20.0, "{line}");
}

#[test]
fn browser_calls_browser_over_https_from_a_non_localhost_address() {
    // A certificate made now for the address the page is served from.
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.2".to_string()]).expect("a certificate");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let line = run_with(
        "https-browser-calls-browser",
        &[
            ("TLS_CERT", cert.to_str().unwrap()),
            ("TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(line.contains("page=https:,127.0.0.2,true"), "{line}");
    assert!(num(&line, "a_decoded") >= 60.0 && num(&line, "b_decoded") >= 60.0);
}

/// Chat lines both ways and a 10 MB file each way on the data channels, byte-identical:
/// the page calls the native client (the page's offer carries `chat`).
#[test]
fn browser_and_native_chat_and_swap_files_when_the_browser_calls() {
    let line = run("data-browser-calls-native");
    assert!(line.contains("page_received_mb_per_s="), "{line}");
}

/// The same with the native client calling the page (its offer carries `chat`).
#[test]
fn browser_and_native_chat_and_swap_files_when_the_native_client_calls() {
    let line = run("data-native-calls-browser");
    assert!(line.contains("page_received_mb_per_s="), "{line}");
}
