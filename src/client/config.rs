//! What the client is told on its command line, and why it cannot start or go on.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::audio_devices::AudioConfig;
use super::files::FileConfig;
use super::main_wnd::RendererChoice;
use super::media_session::MediaConfig;
use crate::media::audio::AudioError;
use crate::media::{MediaError, SourceSpec};

/// Everything the client can be told on its command line.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    pub port: u16,
    pub name: String,
    /// No window: sign in at once and print machine-readable lines only.
    pub headless: bool,
    /// Sign in at start instead of waiting for the window's Connect (headless always does).
    pub autoconnect: bool,
    pub renderer: RendererChoice,
    /// Where the window opens (`--window-pos`); SDL's choice when absent.
    pub window_pos: Option<(i32, i32)>,
    pub autocall: bool,
    /// `--call NAME`.
    pub call_name: Option<String>,
    /// Answer incoming calls at once instead of ringing (always so headless).
    pub auto_answer: bool,
    pub source: SourceSpec,
    pub media: MediaConfig,
    pub record: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub stats: bool,
    /// Host candidate addresses; empty means every usable local IPv4 address.
    pub ice_ips: Vec<IpAddr>,
    /// Send each line typed on stdin as chat on the call's data channel.
    pub chat_stdin: bool,
    /// `--audio-source`, `--audio-sink`, `--audio-record`.
    pub audio: AudioConfig,
    /// `--stun`, `--turn` and `--ice-policy`.
    pub ice_servers: super::nat::IceServers,
    /// `--send-file`, `--receive-dir`, `--receive-max-bytes`.
    pub files: FileConfig,
}

/// Why the client could not start or had to stop.
#[derive(Debug)]
pub enum ClientError {
    /// The local video source cannot be opened.
    Video(MediaError),
    /// An audio source, sink or recording that cannot be opened (the text names it).
    Audio(AudioError),
    /// `--record`'s file cannot be created.
    Record {
        path: PathBuf,
        source: io::Error,
    },
    /// A host candidate's socket cannot be bound (`--ice-ip` names no local address).
    Bind {
        ip: IpAddr,
        source: io::Error,
    },
    NoLocalAddress,
    /// A `--stun`/`--turn` server name that does not resolve (the flag and why).
    IceServer(String),
    /// The event loop itself failed.
    Io {
        what: &'static str,
        source: io::Error,
    },
}

impl ClientError {
    /// True for settings that cannot work, as opposed to a failure of the machine.
    pub fn is_bad_setting(&self) -> bool {
        !matches!(self, ClientError::Io { .. })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Video(e) => write!(f, "{e}"),
            ClientError::Audio(e) => write!(f, "{e}"),
            ClientError::Record { path, source } => {
                write!(f, "--record {}: {source}", path.display())
            }
            ClientError::Bind { ip, source } => {
                write!(f, "cannot bind a UDP socket on {ip}: {source}")
            }
            ClientError::NoLocalAddress => {
                f.write_str("no usable local address for ICE host candidates")
            }
            ClientError::IceServer(why) => f.write_str(why),
            ClientError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for ClientError {}

pub(super) fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}
