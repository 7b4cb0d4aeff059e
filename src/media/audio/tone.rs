//! The `tone` source: a 1 kHz burst at the start of every second of the capture clock
//! ([`monotonic_us`](crate::media::monotonic_us)), silence between. The test pattern
//! flashes on its first frame of each second on the same clock, so a receiver can put
//! the burst it hears beside the flash it sees and measure lip-sync.

use super::{PcmFrame, FRAME_SAMPLES, SAMPLE_RATE};

/// The burst's pitch: whole cycles per second, so the waveform is the same every second.
pub const BURST_HZ: u32 = 1_000;
/// The burst's length: long enough to hear and to find in a recording, short enough to
/// place in time.
pub const BURST_US: u64 = 50_000;
/// Half of full scale.
const AMPLITUDE: f64 = 16_000.0;

#[derive(Debug, Default)]
pub struct ToneSource;

impl ToneSource {
    pub fn new() -> ToneSource {
        ToneSource
    }

    /// The frame whose first sample was captured at `capture_us` on the capture clock.
    pub fn frame(&mut self, capture_us: u64) -> PcmFrame {
        let mut pcm = [0i16; FRAME_SAMPLES];
        for (i, s) in pcm.iter_mut().enumerate() {
            let t_us = capture_us + i as u64 * 1_000_000 / SAMPLE_RATE as u64;
            let in_second = t_us % 1_000_000;
            if in_second < BURST_US {
                let phase = (in_second * BURST_HZ as u64) as f64 / 1e6;
                *s = (AMPLITUDE * (2.0 * std::f64::consts::PI * phase).sin()) as i16;
            }
        }
        pcm
    }
}

/// Where bursts start in a 48 kHz recording: the sample indices where the level over 1 ms
/// rises above a quarter of the burst's after at least half a second below it.
pub fn burst_onsets(samples: &[i16]) -> Vec<usize> {
    const WINDOW: usize = 48;
    let threshold = (AMPLITUDE / 4.0) as i64;
    let mut onsets = Vec::new();
    let mut quiet_since: Option<usize> = Some(0);
    let mut i = 0;
    while i + WINDOW <= samples.len() {
        let peak = samples[i..i + WINDOW]
            .iter()
            .map(|&s| (s as i64).abs())
            .max()
            .unwrap_or(0);
        if peak > threshold {
            if quiet_since.is_some_and(|q| i - q >= SAMPLE_RATE as usize / 2) {
                // The first sample above the threshold inside the window.
                let first = samples[i..i + WINDOW]
                    .iter()
                    .position(|&s| (s as i64).abs() > threshold)
                    .unwrap_or(0);
                onsets.push(i + first);
            }
            quiet_since = None;
        } else if quiet_since.is_none() {
            quiet_since = Some(i);
        }
        i += WINDOW;
    }
    onsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_starts_on_the_second_and_lasts_50_ms() {
        let mut t = ToneSource::new();
        let mut all = Vec::new();
        // 3 s starting 0.5 s into a second: bursts 0.5, 1.5 and 2.5 s into the recording.
        let start = 7_500_000u64;
        for f in 0..150u64 {
            all.extend_from_slice(&t.frame(start + f * 20_000));
        }
        let onsets = burst_onsets(&all);
        assert_eq!(onsets.len(), 3, "{onsets:?}");
        // The sine starts at zero: the level passes a quarter within a few samples.
        assert!((24_000..24_005).contains(&onsets[0]), "{onsets:?}");
        assert_eq!(onsets[1] - onsets[0], 48_000);
        let loud = all.iter().filter(|s| s.unsigned_abs() > 1000).count();
        // Three 50 ms bursts of a 1 kHz sine: most of 3 x 2400 samples are above 1000.
        assert!((5250..7200).contains(&loud), "{loud}");
        assert!(all[..24_000].iter().all(|&s| s == 0));
    }
}
