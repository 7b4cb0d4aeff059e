//! The native video-call client, compatible with libwebrtc's `peerconnection_client`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peerconnection::client::audio_devices::{AudioConfig, AudioSinkSpec, AudioSourceSpec};
use peerconnection::client::files::FileConfig;
use peerconnection::client::main_wnd::RendererChoice;
use peerconnection::client::nat::{IcePolicy, IceServers, ServerName, TurnServer};
use peerconnection::client::{ClientConfig, ClientLoop, MediaConfig, SourceSpec};

/// Video-call client for the peerconnection signaling server.
///
/// Signs in, lists the other peers, calls one (or is called), and sends and receives H.264
/// video over WebRTC (str0m), in an SDL2 window: a connect screen, the peer list (arrows +
/// Enter or a double click calls), an incoming call that rings (Enter answers, Esc
/// declines), and the call (Esc hangs up). Without a camera it sends a
/// test pattern; `--headless` (or no display) runs with no window and signs in at once.
/// Machine-readable lines (SIGNED_IN, PEER_CONNECTED, PEER_DISCONNECTED, INCOMING_CALL,
/// CALL_STARTED, CALL_REFUSED, PEER_NOT_ANSWERING, PEER_ANSWERING, CHAT_OPEN, CHAT,
/// CHAT_CLOSED, FILE_PROGRESS, FILE_SENT, FILE_RECEIVED, FILE_FAILED, CALL_ENDED,
/// SERVER_LOST, STATS, AUDIO_PLAYOUT_STARTED, UI) go to stdout; warnings and errors go to
/// stderr (-v, -vv or RUST_LOG for more). Bad
/// settings exit with code 2 before signing in.
///
/// With no --stun or --turn server a call needs a direct route between the two machines
/// (the same network, or addresses routed to each other); across NATs give a STUN server,
/// and a TURN server for NATs that no direct path gets through.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Signaling server host name or address.
    #[arg(long, default_value = "localhost")]
    server: String,
    /// Signaling server port.
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Name shown to other peers (default: user@host, as the original).
    #[arg(long)]
    name: Option<String>,
    /// Connect to the server at start instead of waiting for the Connect button (always on
    /// with --headless).
    #[arg(long)]
    autoconnect: bool,
    /// Once the peer list shows someone, call the last peer on it (as the original, but
    /// once per run: a peer that hung up or declined is not redialled).
    #[arg(long)]
    autocall: bool,
    /// Call the first peer with this name as soon as it is on the list (once per run).
    #[arg(long, value_name = "NAME")]
    call: Option<String>,
    /// Answer incoming calls at once instead of ringing in the window (headless always
    /// answers at once).
    #[arg(long)]
    auto_answer: bool,
    /// Where to open the window, X,Y in pixels from the top-left of the screen.
    #[arg(long, value_name = "X,Y", value_parser = parse_position)]
    window_pos: Option<(i32, i32)>,
    /// More log output on stderr: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run without a window; also the fallback when no display can be opened.
    #[arg(long)]
    headless: bool,
    /// Local video: `auto` (the camera if --device opens, else the test pattern), `camera`
    /// (the camera or an error), `test` (a moving test pattern with a frame stamp), or a
    /// .y4m file (looped).
    #[arg(long, default_value = "auto")]
    video_source: String,
    /// Window renderer: `software` (SDL's, one thread, the default) or `accelerated` (the
    /// GPU's through SDL; its driver may start threads of its own).
    #[arg(long, default_value = "software", value_parser = parse_renderer)]
    renderer: RendererChoice,
    /// V4L2 camera device for `--video-source auto|camera`.
    #[arg(long, default_value = peerconnection::media::camera::DEFAULT_DEVICE)]
    device: PathBuf,
    /// List the V4L2 devices with their formats, sizes and frame rates, and exit.
    #[arg(long)]
    list_devices: bool,
    /// Capture and send size, WIDTHxHEIGHT (even numbers).
    #[arg(long, default_value = "640x480", value_parser = parse_resolution)]
    resolution: (u32, u32),
    /// Frames per second: asked of the camera; the pattern and files are sent at this rate.
    #[arg(long, default_value_t = 30.0)]
    fps: f32,
    /// Target H.264 bitrate in kbit/s.
    #[arg(long, default_value_t = 1500)]
    bitrate: u32,
    /// Record the received (decoded) video to this .y4m file (created at start; every
    /// call goes into it at the first call's size, other sizes scaled).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Hang up, sign out and exit this many seconds after start.
    #[arg(long)]
    duration: Option<f64>,
    /// Print one STATS line per second (state, fps, kbit/s, frames decoded, latency, RTT).
    #[arg(long)]
    stats: bool,
    /// Offer host candidates only on this address (repeatable; default: every local IPv4
    /// address that is up, loopback included, followed as addresses come and go).
    #[arg(long = "ice-ip")]
    ice_ips: Vec<IpAddr>,
    /// Chat on the call's data channel: each line typed on stdin (at most 4096 bytes) is
    /// sent to the peer; lines typed while no channel is open are dropped with a warning.
    /// Received chat prints as `CHAT peer=N text="..."` whatever this flag (the text
    /// escaped as a Rust string literal: \", \\, \n, \u{..}).
    #[arg(long)]
    chat_stdin: bool,
    /// Local sound: `none`, `tone` (a 1 kHz burst at the start of each second, with the
    /// test pattern's flash), a 16-bit PCM .wav file (looped; other rates and channel
    /// counts are resampled and mixed to 48 kHz mono), or `alsa[:DEVICE]`. Default: the
    /// ALSA capture device if one opens, else `tone` with a warning.
    #[arg(long, value_name = "SOURCE", value_parser = AudioSourceSpec::parse)]
    audio_source: Option<AudioSourceSpec>,
    /// Where received sound is played: `alsa[:DEVICE]` or `none`. Default: the ALSA
    /// playback device if one opens, else none with a warning.
    #[arg(long, value_name = "SINK", value_parser = AudioSinkSpec::parse)]
    audio_sink: Option<AudioSinkSpec>,
    /// Record the received sound (decoded, 48 kHz mono, 16-bit) to this .wav file as it
    /// is played, with concealment or silence where packets were lost or late.
    #[arg(long, value_name = "FILE.wav")]
    audio_record: Option<PathBuf>,
    /// A STUN server (UDP), HOST:PORT, asked for this machine's address as seen from
    /// outside its NAT (a server-reflexive candidate). Repeatable. Default: none, and then
    /// calls need a direct route.
    #[arg(long = "stun", value_name = "HOST:PORT", value_parser = ServerName::parse)]
    stun: Vec<ServerName>,
    /// A TURN server with long-term credentials, USER:PASSWORD@HOST:PORT, that relays
    /// the call when no direct path works (a relayed candidate). Reached over UDP, or
    /// over TCP with `?transport=tcp` appended (for networks that block UDP; the server
    /// still reaches the peer over UDP). Repeatable.
    #[arg(
        long = "turn",
        value_name = "USER:PASSWORD@HOST:PORT[?transport=udp|tcp]",
        value_parser = TurnServer::parse
    )]
    turn: Vec<TurnServer>,
    /// Which local candidates a call offers: `all` (host, server-reflexive, relayed) or
    /// `relay` (relayed only: hides this machine's addresses; needs --turn).
    #[arg(long, default_value = "all", value_parser = IcePolicy::parse)]
    ice_policy: IcePolicy,
    /// Send this file to the peer on its own data channel once a call's channels are open
    /// (repeatable; every call sends them). Prints FILE_PROGRESS each second, then
    /// FILE_SENT (or FILE_FAILED with the reason).
    #[arg(long = "send-file", value_name = "PATH")]
    send_files: Vec<PathBuf>,
    /// Save files the peer sends in this folder (without it, files are refused). A taken
    /// name gets a number; nothing is overwritten. Prints FILE_RECEIVED when done.
    #[arg(long, value_name = "DIR")]
    receive_dir: Option<PathBuf>,
    /// Refuse received files larger than this many bytes (free disk space limits too).
    #[arg(long, value_name = "BYTES")]
    receive_max_bytes: Option<u64>,
}

fn parse_renderer(s: &str) -> Result<RendererChoice, String> {
    match s {
        "software" => Ok(RendererChoice::Software),
        "accelerated" => Ok(RendererChoice::Accelerated),
        _ => Err(format!("{s:?}: expected software or accelerated")),
    }
}

fn parse_position(s: &str) -> Result<(i32, i32), String> {
    let bad = || format!("{s:?}: expected X,Y, e.g. 0,0");
    let (x, y) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        x.trim().parse().map_err(|_| bad())?,
        y.trim().parse().map_err(|_| bad())?,
    ))
}

fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?}: expected WIDTHxHEIGHT with even numbers, e.g. 640x480");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w < 16 || h < 16 || w > 4096 || h > 4096 || w % 2 != 0 || h % 2 != 0 {
        return Err(bad());
    }
    Ok((w, h))
}

/// The original's default name: `user@host`.
fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{user}@{host}")
}

fn config(args: Args) -> Result<ClientConfig, String> {
    if !(args.fps > 0.0 && args.fps <= 120.0) {
        return Err(format!("--fps {}: expected 1 to 120", args.fps));
    }
    if args.bitrate < 50 || args.bitrate > 50_000 {
        return Err(format!(
            "--bitrate {}: expected 50 to 50000 kbit/s",
            args.bitrate
        ));
    }
    let duration = match args.duration {
        None => None,
        Some(d) => Some(
            Duration::try_from_secs_f64(d)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--duration {d}: expected a positive number of seconds"))?,
        ),
    };
    let source = match args.video_source.as_str() {
        "auto" => SourceSpec::Auto(args.device),
        "camera" => SourceSpec::Camera(args.device),
        "test" => SourceSpec::TestPattern,
        path if is_device_node(path) => {
            return Err(format!(
                "--video-source {path}: a device node; use `--video-source camera --device {path}`"
            ))
        }
        path => SourceSpec::Y4mFile(PathBuf::from(path)),
    };
    let (width, height) = args.resolution;
    let media = MediaConfig {
        width,
        height,
        fps: args.fps,
        bitrate_bps: args.bitrate * 1000,
    };
    media
        .check()
        .map_err(|e| format!("--resolution {width}x{height}: the H.264 encoder refuses it: {e}"))?;
    let files = FileConfig {
        send: args.send_files,
        receive_dir: args.receive_dir,
        receive_max_bytes: args.receive_max_bytes,
    };
    files.check()?;
    if args.call.as_deref().is_some_and(str::is_empty) {
        return Err("--call: expected a peer name".into());
    }
    if args.ice_policy == IcePolicy::Relay && args.turn.is_empty() {
        return Err("--ice-policy relay: needs a --turn server to relay through".into());
    }
    Ok(ClientConfig {
        server: args.server,
        port: args.port,
        name: args.name.unwrap_or_else(default_name),
        headless: args.headless,
        autoconnect: args.autoconnect || args.headless,
        renderer: args.renderer,
        autocall: args.autocall,
        call_name: args.call,
        auto_answer: args.auto_answer,
        window_pos: args.window_pos,
        source,
        media,
        record: args.record,
        duration,
        stats: args.stats,
        ice_ips: args.ice_ips,
        chat_stdin: args.chat_stdin,
        audio: AudioConfig {
            source: args.audio_source.unwrap_or(AudioSourceSpec::Auto),
            sink: args.audio_sink.unwrap_or(AudioSinkSpec::Auto),
            record: args.audio_record,
        },
        ice_servers: IceServers {
            stun: args.stun,
            turn: args.turn,
            policy: args.ice_policy,
        },
        files,
    })
}

/// `--list-devices`: every /dev/video* node and what it offers.
fn list_devices() -> ExitCode {
    let devices = peerconnection::media::camera::list_devices();
    if devices.is_empty() {
        println!("no V4L2 devices (nothing matches /dev/video*)");
    }
    for d in devices {
        match d {
            Ok(info) => println!("{info}"),
            Err(e) => println!("{e}"),
        }
    }
    ExitCode::SUCCESS
}

/// A path under /dev that is a character device: a camera given where a file was meant.
fn is_device_node(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
        || (path.starts_with("/dev/video") && !path.ends_with(".y4m"))
}

/// Exit code for settings that cannot work (as clap's for bad flags).
const BAD_SETTINGS: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    peerconnection::init_logging(level);
    if args.list_devices {
        return list_devices();
    }
    // Settings are checked before anything starts: a bad one never signs in.
    let config = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peerconnection_client: {e}");
            return ExitCode::from(BAD_SETTINGS);
        }
    };
    let mut client = match ClientLoop::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peerconnection_client: {e}");
            let code = if e.is_bad_setting() { BAD_SETTINGS } else { 1 };
            return ExitCode::from(code);
        }
    };
    match client.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerconnection_client: {e}");
            ExitCode::FAILURE
        }
    }
}
