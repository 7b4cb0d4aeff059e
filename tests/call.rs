//! The call path, black-box: the real server and real client processes on loopback. Two
//! headless clients call each other, record what they decode, and the recordings are checked
//! frame by frame through the test pattern's stamp.

mod procs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use peerconnection::media::{read_stamp, Y4mSource};
use procs::{field, free_port, num, pattern_client, ServerProc};

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-call-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads every frame of a recording and returns the decoded stamps' frame numbers, split
/// into runs that each belong to one call (the numbers restart at a new call).
fn stamp_runs(path: &Path) -> (Vec<Vec<u32>>, usize) {
    let mut src = Y4mSource::open(path).expect("recording opens");
    let mut runs: Vec<Vec<u32>> = Vec::new();
    let mut unreadable = 0;
    while let Some(frame) = src.read_frame().expect("recording reads") {
        match read_stamp(&frame) {
            Some(s) => match runs.last_mut() {
                Some(run) if run.last().is_some_and(|&l| s.frame_number > l) => {
                    run.push(s.frame_number)
                }
                _ => runs.push(vec![s.frame_number]),
            },
            None => unreadable += 1,
        }
    }
    (runs, unreadable)
}

#[test]
fn two_clients_call_hang_up_and_call_again() {
    let dir = temp_dir("again");
    let server = ServerProc::start(&[]);
    let port = server.port;
    let bob_rec = dir.join("bob.y4m");
    let alice_rec = dir.join("alice.y4m");
    let mut bob = pattern_client(
        "bob",
        port,
        &["--record", bob_rec.to_str().unwrap(), "--duration", "40"],
    );
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let mut alice = pattern_client(
        "alice",
        port,
        &[
            "--autocall",
            "--record",
            alice_rec.to_str().unwrap(),
            "--duration",
            "7",
        ],
    );
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    let alice_end = alice.wait_line("CALL_ENDED", Duration::from_secs(20));
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(num(&alice_end, "frames_decoded") >= 90.0, "{alice_end}");
    assert!(num(&bob_end, "frames_decoded") >= 90.0, "{bob_end}");
    assert!(
        bob_end.contains("BYE"),
        "bob learns the hang-up from BYE: {bob_end}"
    );
    let latency = field(&alice_end, "mean_latency_ms").unwrap();
    assert!(
        latency.parse::<f64>().is_ok(),
        "stamp latency is reported: {alice_end}"
    );
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));

    // Both recordings: every frame's stamp decodes and the frame numbers increase.
    for rec in [&alice_rec, &bob_rec] {
        let (runs, unreadable) = stamp_runs(rec);
        assert_eq!(
            unreadable,
            0,
            "{}: frames whose stamp does not decode",
            rec.display()
        );
        assert_eq!(
            runs.len(),
            1,
            "{}: one call, one increasing run",
            rec.display()
        );
        assert!(
            runs[0].len() >= 90,
            "{}: {} frames",
            rec.display(),
            runs[0].len()
        );
    }

    // Alice left; Bob is idle on the list and takes a call from Carol.
    bob.wait_line("PEER_DISCONNECTED", Duration::from_secs(5));
    let mut carol = pattern_client("carol", port, &["--autocall", "--duration", "6"]);
    let carol_end = carol.wait_line("CALL_ENDED", Duration::from_secs(20));
    assert!(num(&carol_end, "frames_decoded") >= 90.0, "{carol_end}");
    let bob_end2 = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(num(&bob_end2, "frames_decoded") >= 90.0, "{bob_end2}");
    assert_eq!(carol.wait_exit(Duration::from_secs(10)), Some(0));
    let (runs, unreadable) = stamp_runs(&bob_rec);
    assert_eq!(unreadable, 0);
    assert_eq!(runs.len(), 2, "bob recorded two calls");
    assert!(runs[1].len() >= 90);
    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clients_rejoin_a_restarted_server() {
    let port = free_port();
    let server = ServerProc::start_on(port, &[]);
    let mut bob = pattern_client("bob", port, &["--duration", "40"]);
    let mut alice = pattern_client("alice", port, &["--duration", "40"]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    bob.wait_line("PEER_CONNECTED", Duration::from_secs(10));
    drop(server);
    bob.wait_line("SERVER_LOST", Duration::from_secs(10));
    alice.wait_line("SERVER_LOST", Duration::from_secs(10));
    let _server = ServerProc::start_on(port, &[]);
    // Each rejoins with a new id and sees the other again.
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    let seen = bob.wait_line("PEER_CONNECTED", Duration::from_secs(10));
    assert!(seen.contains("name=alice"), "{seen}");
    for p in [&mut alice, &mut bob] {
        p.interrupt();
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    }
}
