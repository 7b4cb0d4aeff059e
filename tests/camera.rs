//! The camera options, black-box: with no camera, `--video-source camera` fails at once
//! naming the device it tried, the default source falls back to the test pattern with one
//! warning and still calls, and `--list-devices` answers.

mod procs;

use std::process::Command;
use std::time::Duration;

use procs::{client, num, ServerProc};

use procs::CLIENT;
const MISSING: &str = "/dev/video-missing-for-test";

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(CLIENT)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("client runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A camera that cannot be had is a bad setting: exit code 2, before signing in.
#[test]
fn explicit_camera_without_a_device_fails_naming_it() {
    let (code, _, err) = run(&[
        "--headless",
        "--video-source",
        "camera",
        "--device",
        MISSING,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(MISSING), "names the device: {err}");
    assert!(err.contains("No such file or directory"), "says why: {err}");
    // Something that exists but is no camera is refused just as clearly.
    let (code, _, err) = run(&[
        "--headless",
        "--video-source",
        "camera",
        "--device",
        "/dev/null",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/dev/null") && err.contains("V4L2"), "{err}");
}

#[test]
fn default_source_falls_back_to_the_pattern_with_one_warning() {
    let server = ServerProc::start(&[]);
    let fallback = ["--device", MISSING];
    let mut bob = client(
        "bob",
        server.port,
        &[&fallback[..], &["--duration", "20"]].concat(),
        &[],
    );
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let mut alice = client(
        "alice",
        server.port,
        &[&fallback[..], &["--autocall", "--duration", "4"]].concat(),
        &[],
    );
    let end = alice.wait_line("CALL_ENDED", Duration::from_secs(20));
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    // The pattern was sent: its stamps decoded on the other side give a latency.
    assert!(num(&end, "frames_decoded") >= 60.0, "{end}");
    let log = std::fs::read_to_string(&alice.log).expect("alice's log");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("no camera")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {log}");
    assert!(
        warnings[0].contains(MISSING) && warnings[0].contains("test pattern"),
        "{}",
        warnings[0]
    );
    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn list_devices_answers_and_exits() {
    let (code, out, err) = run(&["--list-devices"]);
    assert_eq!(code, Some(0), "{err}");
    let has_devices = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("video"));
    if has_devices {
        assert!(out.contains("/dev/video"), "{out}");
    } else {
        assert!(out.contains("no V4L2 devices"), "{out}");
    }
}
