use std::fmt;
use std::path::PathBuf;

/// Why an audio file, codec or device could not be used.
#[derive(Debug)]
pub enum AudioError {
    /// A WAV file we cannot read: the text names what is wrong with it.
    Wav { path: PathBuf, detail: String },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// libopus refused (creating a coder, encoding, decoding).
    Opus(String),
    /// A sound device that cannot be opened or used.
    Device { device: String, detail: String },
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::Wav { path, detail } => write!(f, "{}: {detail}", path.display()),
            AudioError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            AudioError::Opus(e) => write!(f, "opus: {e}"),
            AudioError::Device { device, detail } => write!(f, "audio device {device}: {detail}"),
        }
    }
}

impl std::error::Error for AudioError {}
