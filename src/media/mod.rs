//! Video sources, pixel conversion, H.264 encode/decode and recording.
//!
//! Everything here is synchronous and never blocks: the client loop calls it between polls,
//! and the one descriptor it must poll (a streaming camera's) is handed to the loop. One file
//! per concern: the [`I420Frame`] buffer and [`monotonic_us`] clock, the [`TestPattern`] with
//! its machine-readable [`Stamp`], [`Y4mSource`]/[`Y4mWriter`], the V4L2 [`Camera`] and the
//! [`convert`]ers of its pixel layouts, [`H264Encoder`]/[`H264Decoder`] on OpenH264,
//! [`scale_i420`]/[`fit_i420`], and the SDL2 video renderer ([`render`]).

pub mod audio;
pub mod camera;
pub mod convert;
mod error;
mod frame;
mod h264;
mod pattern;
pub mod render;
mod scale;
mod source;
mod y4m;

pub use camera::{Camera, CaptureChoice, CaptureMode, CaptureRequest, DeviceInfo};
pub use convert::PixelFormat;
pub use error::MediaError;
pub use frame::{check_dimensions, i420_len, monotonic_us, I420Frame, MAX_DIMENSION};
pub use h264::{EncoderConfig, H264Decoder, H264Encoder};
pub use pattern::{
    is_flash, read_stamp, rgb_to_yuv601, PatternColour, Stamp, TestPattern, BAR_COLOURS,
    BOX_COLOUR, STAMP_BAND, STAMP_COLUMNS, STAMP_ONE, STAMP_ROWS, STAMP_ZERO,
};
pub use scale::{fit_i420, scale_i420};
pub use source::{SourceSpec, VideoSource};
pub use y4m::{Y4mSource, Y4mWriter};
