//! Audio: Opus at 48 kHz mono in 20 ms frames, WAV files in and out, the `tone` test
//! signal, and the receiver's playout (jitter) buffer. Like the video side, nothing here
//! blocks or reads a clock: the loop paces sources with its timers and passes every instant.

mod error;
mod opus;
pub mod playout;
mod tone;
mod wav;

pub use error::AudioError;
pub use opus::{OpusDecoder, OpusEncoder, DEFAULT_OPUS_BITRATE};
pub use playout::{PlayoutBuffer, PlayoutFrame, PlayoutStats};
pub use tone::{burst_onsets, ToneSource, BURST_HZ, BURST_US};
pub use wav::{read_wav, resample, write_wav, WavWriter};

use std::time::Duration;

/// Everything we encode, decode, play and record runs at Opus's native rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame: also how far the RTP clock advances per frame.
pub const FRAME_SAMPLES: usize = 960;
/// The length of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// One 20 ms frame of mono 48 kHz samples.
pub type PcmFrame = [i16; FRAME_SAMPLES];

/// The loudness of a frame, 0.0 (silence) to 1.0 (full scale), as its RMS: for meters.
pub fn frame_level(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64) * (s as f64)).sum();
    ((sum / pcm.len() as f64).sqrt() / 32768.0) as f32
}
