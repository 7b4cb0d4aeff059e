//! The real V4L2 capture path, end to end, on a machine with no camera: a userspace fake
//! camera (`tests/fake_v4l2/fake_v4l2.c`, built here with `cc` and loaded with LD_PRELOAD)
//! answers the client's ioctls and mmaps and shows four colour bars at 30 fps. Alice sends
//! it (`--video-source camera --device /dev/video-fake`), Bob records what he decodes, and
//! the recording must show the bars. The fake can also offer NV12 only, with padded rows,
//! and can be "unplugged" after N frames: Alice's local track ends, the call does not.

mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use peerconnection::media::{I420Frame, Y4mSource};
use procs::{client, field, num, Proc, ServerProc};

const FAKE_DEVICE: &str = "/dev/video-fake";
/// The fake camera's bars, left to right, as (Y, U, V) in BT.601 studio range: red, green,
/// blue, yellow (see the shim's header comment).
const BARS: [(u8, u8, u8); 4] = [(81, 90, 240), (145, 54, 34), (41, 240, 110), (210, 16, 146)];
/// How far a decoded sample may be from the bar's value (H.264 is lossy).
const TOLERANCE: i32 = 12;

/// Builds the shim once per test binary: `cc -shared -fPIC -O2 -o ... -ldl`.
fn shim() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_v4l2/fake_v4l2.c");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).expect("CARGO_TARGET_TMPDIR");
        let lib = dir.join("libfake_v4l2.so");
        // Built under a private name and renamed, so a concurrent run never loads half a file.
        let tmp = dir.join(format!("libfake_v4l2.so.{}.tmp", std::process::id()));
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-ldl")
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the fake camera tests build a C shim and need a C compiler, but `cc` is not \
                 on PATH: install gcc or clang (e.g. apt-get install gcc)"
            ),
            Err(e) => panic!("cannot run cc: {e}"),
            Ok(o) if !o.status.success() => panic!(
                "cc could not build {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {}
        }
        std::fs::rename(&tmp, &lib).expect("install the shim");
        lib
    })
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-fakecam-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Bob: sends the test pattern at a small size (to spare the CPU) and records what he
/// decodes.
fn bob(port: u16, record: Option<&Path>) -> Proc {
    let mut extra = vec![
        "--video-source",
        "test",
        "--resolution",
        "320x240",
        "--duration",
        "25",
    ];
    if let Some(r) = record {
        extra.extend(["--record", r.to_str().unwrap()]);
    }
    let mut bob = client("bob", port, &extra, &[]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    bob
}

/// Alice: calls Bob with the fake camera as her video source.
fn alice(port: u16, extra: &[&str], fake_env: &[(&str, &str)]) -> Proc {
    let lib = shim().to_str().expect("UTF-8 path").to_string();
    let mut env = vec![
        ("LD_PRELOAD", lib.as_str()),
        ("FAKE_V4L2_PATH", FAKE_DEVICE),
    ];
    env.extend(fake_env);
    let args = [
        &[
            "--video-source",
            "camera",
            "--device",
            FAKE_DEVICE,
            "--autocall",
        ][..],
        extra,
    ]
    .concat();
    client("alice", port, &args, &env)
}

fn mean(plane: &[u8], stride: usize, cx: usize, cy: usize, half: usize) -> i32 {
    let mut sum = 0u32;
    let mut n = 0u32;
    for y in cy - half..cy + half {
        for x in cx - half..cx + half {
            sum += plane[y * stride + x] as u32;
            n += 1;
        }
    }
    (sum / n) as i32
}

/// What is wrong with the bars in `frame`, if anything: Y, U and V in the middle of each
/// bar, averaged over a small block, compared with the fake camera's values.
fn bar_errors(frame: &I420Frame) -> Option<String> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let mut errors = Vec::new();
    for (i, &(y, u, v)) in BARS.iter().enumerate() {
        let cx = (2 * i + 1) * w / 8;
        let got = (
            mean(frame.y(), w, cx, h / 2, 4),
            mean(frame.u(), cw, cx / 2, ch / 2, 2),
            mean(frame.v(), cw, cx / 2, ch / 2, 2),
        );
        let want = (y as i32, u as i32, v as i32);
        if (got.0 - want.0).abs() > TOLERANCE
            || (got.1 - want.1).abs() > TOLERANCE
            || (got.2 - want.2).abs() > TOLERANCE
        {
            errors.push(format!("bar {i}: YUV {got:?}, expected {want:?}"));
        }
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Reads a recording and checks that every frame is `width`x`height` and shows the bars;
/// returns the number of frames.
fn check_recording(path: &Path, width: u32, height: u32) -> usize {
    let mut src = Y4mSource::open(path)
        .unwrap_or_else(|e| panic!("{}: recording does not open: {e}", path.display()));
    assert_eq!(
        (src.width(), src.height()),
        (width, height),
        "{}: recorded size",
        path.display()
    );
    let mut frames = 0;
    while let Some(frame) = src.read_frame().expect("recording reads") {
        if let Some(e) = bar_errors(&frame) {
            panic!(
                "{}: frame {frames} does not show the fake camera's bars: {e}",
                path.display()
            );
        }
        frames += 1;
    }
    frames
}

fn log_of(p: &Proc) -> String {
    std::fs::read_to_string(&p.log).expect("the client's log")
}

/// Bob hangs up last: SIGINT, and a clean exit.
fn finish(mut bob: Proc) {
    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0), "bob exits");
}

#[test]
fn yuyv_camera_frames_reach_the_peer_as_the_bars() {
    let dir = temp_dir("yuyv");
    let server = ServerProc::start(&[]);
    let rec = dir.join("bob.y4m");
    let mut bob = bob(server.port, Some(&rec));
    let mut alice = alice(
        server.port,
        &["--duration", "5"],
        &[("FAKE_V4L2_FORMATS", "YUYV")],
    );
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(15));
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));

    let log = log_of(&alice);
    // The shim was loaded and opened the device: the capture below is the fake's.
    assert!(
        log.contains(&format!("fake_v4l2: {FAKE_DEVICE} opened")),
        "alice's log: {log}"
    );
    assert!(
        log.contains(&format!(
            "camera {FAKE_DEVICE} (\"Fake Camera\"): YUYV 640x480 at 30 fps"
        )),
        "alice uses the fake camera's mode: {log}"
    );
    assert!(
        log.contains(&format!("camera {FAKE_DEVICE}: streaming YUYV 640x480")),
        "{log}"
    );
    assert!(
        !log.contains("ending the local video track"),
        "the camera ran to the end: {log}"
    );
    // Paced by the fake's 30 fps timer, not by a clock of the client's.
    let sent = num(&alice_end, "frames_sent");
    assert!(sent >= 90.0, "{alice_end}");

    let decoded = num(&bob_end, "frames_decoded");
    assert!(decoded >= 60.0, "{bob_end}");
    let frames = check_recording(&rec, 640, 480);
    assert!(frames >= 60, "bob recorded {frames} frames");
    finish(bob);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nv12_camera_with_padded_rows_gives_the_same_bars() {
    let dir = temp_dir("nv12");
    let server = ServerProc::start(&[]);
    let rec = dir.join("bob.y4m");
    let mut bob = bob(server.port, Some(&rec));
    // 64 bytes of padding after each row: bytesperline is 384 for 320 pixels, so a reader
    // that ignored the stride would see the bars sheared.
    let mut alice = alice(
        server.port,
        &["--resolution", "320x240", "--duration", "4"],
        &[
            ("FAKE_V4L2_FORMATS", "NV12"),
            ("FAKE_V4L2_STRIDE_PAD", "64"),
        ],
    );
    alice.wait_line("CALL_ENDED", Duration::from_secs(15));
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    let log = log_of(&alice);
    assert!(
        log.contains(&format!(
            "camera {FAKE_DEVICE} (\"Fake Camera\"): NV12 320x240 at 30 fps"
        )),
        "alice uses the fake camera's NV12 mode: {log}"
    );
    assert!(num(&bob_end, "frames_decoded") >= 60.0, "{bob_end}");
    let frames = check_recording(&rec, 320, 240);
    assert!(frames >= 60, "bob recorded {frames} frames");
    finish(bob);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unplugged_camera_ends_the_local_track_not_the_call() {
    let server = ServerProc::start(&[]);
    let mut bob = bob(server.port, None);
    let started = Instant::now();
    let mut alice = alice(
        server.port,
        &["--duration", "7"],
        &[("FAKE_V4L2_FORMATS", "YUYV"), ("FAKE_V4L2_FRAMES", "45")],
    );
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    // 45 frames at 30 fps: the camera disappears about 1.5 s into the call.
    let ended = alice.wait_line("LOCAL_TRACK_ENDED", Duration::from_secs(10));
    assert!(
        ended.contains(FAKE_DEVICE) && ended.contains("No such device"),
        "names the device and says why: {ended}"
    );
    // The call goes on: Alice keeps decoding Bob's video, and sends nothing more.
    let first = alice.wait_line("STATS", Duration::from_secs(3));
    let mut last_decoded = num(&first, "decoded");
    for _ in 0..3 {
        let stats = alice.wait_line("STATS", Duration::from_secs(3));
        assert_ne!(
            field(&stats, "call"),
            Some("-"),
            "still in the call: {stats}"
        );
        let decoded = num(&stats, "decoded");
        assert!(
            decoded > last_decoded,
            "alice still decodes bob's video after losing her camera: {stats} (was {last_decoded})"
        );
        assert_eq!(num(&stats, "sent_fps"), 0.0, "no local video: {stats}");
        last_decoded = decoded;
    }
    // It ends at --duration, not before, and Alice exits cleanly.
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the call lasted until --duration: {alice_end}"
    );
    assert!(num(&alice_end, "frames_sent") <= 45.0, "{alice_end}");
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    let log = log_of(&alice);
    assert!(
        log.contains("fake_v4l2: camera unplugged after 45 frames"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Bob saw the camera's frames, then none, and the call ended by Alice's hang-up.
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    let decoded = num(&bob_end, "frames_decoded");
    assert!((1.0..=45.0).contains(&decoded), "{bob_end}");
    assert!(bob_end.contains("BYE"), "{bob_end}");
    finish(bob);
}
