//! ALSA in the loop, on a machine with no sound hardware: a private PulseAudio server with
//! a null sink, reached through ALSA's `pulse` plugin. Bob plays what Alice sends into the
//! sink (`--audio-sink alsa:pulse`) and captures the sink's monitor (`--audio-source
//! alsa:pulse`), so Alice hears her own tone back: both ALSA paths, their descriptors in
//! Bob's poll. Skipped (with a line saying so) where `pulseaudio` or the plugin is not
//! installed, as on a fresh machine: `make deps` does not install them.

mod procs;

use std::path::Path;
use std::time::{Duration, Instant};

use peerconnection::media::audio::{burst_onsets, read_wav};
use procs::{client, pattern_client, Proc, ServerProc};

const PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so";

#[test]
fn alsa_capture_and_playback_through_a_pulseaudio_null_sink() {
    let pulseaudio = ["/usr/bin/pulseaudio", "/bin/pulseaudio"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (Some(pulseaudio), true) = (pulseaudio, Path::new(PLUGIN).exists()) else {
        eprintln!(
            "skipped: pulseaudio or ALSA's pulse plugin (libasound2-plugins) is not installed"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("pc-audio-alsa-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = dir.join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let runtime_str = runtime.to_str().unwrap();
    let env = [("XDG_RUNTIME_DIR", runtime_str), ("HOME", runtime_str)];
    let _pulse = Proc::spawn_with_env(
        "pulse",
        pulseaudio,
        &[
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--load=module-native-protocol-unix",
            "--load=module-null-sink sink_name=nullsink rate=48000",
        ],
        &env,
    );
    let socket = runtime.join("pulse/native");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "pulseaudio did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let server = ServerProc::start(&[]);
    let rec = dir.join("alice.wav");
    let mut bob = client(
        "bob",
        server.port,
        &[
            "--video-source",
            "test",
            "--resolution",
            "320x240",
            "--audio-source",
            "alsa:pulse",
            "--audio-sink",
            "alsa:pulse",
            "--duration",
            "12",
        ],
        &env,
    );
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let mut alice = pattern_client(
        "alice",
        server.port,
        &[
            "--autocall",
            "--audio-source",
            "tone",
            "--audio-sink",
            "none",
            "--audio-record",
            rec.to_str().unwrap(),
            "--duration",
            "10",
        ],
    );
    alice.lines_until_exit(Duration::from_secs(25));
    bob.lines_until_exit(Duration::from_secs(10));
    let bob_log = bob.stderr();
    assert!(
        !bob_log.contains("cannot be polled"),
        "the pulse plugin's descriptors go into the poll: {bob_log}"
    );
    let back = burst_onsets(&read_wav(&rec).unwrap());
    assert!(
        back.len() >= 5,
        "Alice hears her bursts back through Bob's ALSA playback and capture: {} of them",
        back.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
