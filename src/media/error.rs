//! The one error type of the media module: every variant names the value that was wrong, so a
//! log line is enough to find the bad file, size or setting.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong in a media operation.
#[derive(Debug)]
pub enum MediaError {
    /// A frame size that I420 cannot hold: zero, odd, or too large.
    BadDimensions { width: u32, height: u32 },
    /// A pixel buffer whose length does not match its stated size.
    BadBufferLength {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    /// A frame of one size was given where another size was required.
    SizeMismatch {
        expected: (u32, u32),
        actual: (u32, u32),
    },
    /// An operating-system error on a file.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A YUV4MPEG2 stream header that is malformed or asks for something unsupported.
    Y4mHeader { path: PathBuf, reason: String },
    /// A YUV4MPEG2 frame that is malformed or cut short.
    Y4mFrame {
        path: PathBuf,
        frame: u64,
        reason: String,
    },
    /// A YUV4MPEG2 file with a valid header but not a single frame.
    Y4mEmpty { path: PathBuf },
    /// A setting the encoder cannot use (the message names it).
    BadConfig(String),
    /// A captured buffer that does not hold the frame its format and size promise.
    BadCapture(String),
    /// A Motion-JPEG frame that cannot be decoded.
    Jpeg(String),
    /// A camera operation the device refused (it is missing, busy, or was unplugged).
    Camera {
        device: PathBuf,
        action: String,
        source: io::Error,
    },
    /// A camera that offers nothing we can use, or was set up differently than asked.
    CameraFormat { device: PathBuf, reason: String },
    /// OpenH264's encoder refused or failed.
    Encoder(String),
    /// OpenH264's decoder could not decode the data (corrupt or missing reference).
    Decoder(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::BadDimensions { width, height } => write!(
                f,
                "bad frame size {width}x{height}: I420 needs a non-zero, even width and height"
            ),
            MediaError::BadBufferLength {
                width,
                height,
                expected,
                actual,
            } => write!(
                f,
                "an I420 frame of {width}x{height} needs {expected} bytes, got {actual}"
            ),
            MediaError::SizeMismatch { expected, actual } => write!(
                f,
                "frame size {}x{} does not match the expected {}x{}",
                actual.0, actual.1, expected.0, expected.1
            ),
            MediaError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            MediaError::Y4mHeader { path, reason } => {
                write!(f, "bad Y4M header in {}: {reason}", path.display())
            }
            MediaError::Y4mFrame {
                path,
                frame,
                reason,
            } => write!(f, "bad Y4M frame {frame} in {}: {reason}", path.display()),
            MediaError::Y4mEmpty { path } => {
                write!(f, "Y4M file {} holds no frames", path.display())
            }
            MediaError::BadConfig(what) => write!(f, "bad encoder setting: {what}"),
            MediaError::BadCapture(what) => write!(f, "bad captured frame: {what}"),
            MediaError::Jpeg(what) => write!(f, "cannot decode a JPEG frame: {what}"),
            MediaError::Camera {
                device,
                action,
                source,
            } => write!(f, "camera {}: cannot {action}: {source}", device.display()),
            MediaError::CameraFormat { device, reason } => {
                write!(f, "camera {}: {reason}", device.display())
            }
            MediaError::Encoder(e) => write!(f, "H.264 encoder error: {e}"),
            MediaError::Decoder(e) => write!(f, "H.264 decoder error: {e}"),
        }
    }
}

impl std::error::Error for MediaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MediaError::Io { source, .. } | MediaError::Camera { source, .. } => Some(source),
            _ => None,
        }
    }
}
