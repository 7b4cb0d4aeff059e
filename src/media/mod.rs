//! Video sources, pixel conversion, H.264 encode/decode and recording.
//!
//! Everything here is synchronous and owns no file descriptors the loop needs to poll: the
//! client loop calls it between polls. One file per concern: the [`I420Frame`] buffer and
//! [`monotonic_us`] clock, the [`TestPattern`] with its machine-readable [`Stamp`],
//! [`Y4mSource`]/[`Y4mWriter`], [`H264Encoder`]/[`H264Decoder`] on OpenH264, and
//! [`scale_i420`].

mod error;
mod frame;
mod h264;
mod pattern;
mod scale;
mod source;
mod y4m;

pub use error::MediaError;
pub use frame::{check_dimensions, i420_len, monotonic_us, I420Frame, MAX_DIMENSION};
pub use h264::{EncoderConfig, H264Decoder, H264Encoder};
pub use pattern::{
    read_stamp, rgb_to_yuv601, PatternColour, Stamp, TestPattern, BAR_COLOURS, BOX_COLOUR,
    STAMP_BAND, STAMP_COLUMNS, STAMP_ONE, STAMP_ROWS, STAMP_ZERO,
};
pub use scale::scale_i420;
pub use source::{SourceSpec, VideoSource};
pub use y4m::{Y4mSource, Y4mWriter};
