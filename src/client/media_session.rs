//! The media of one call, apart from the transport: the H.264 encoder and decoder, when to
//! send a keyframe and when to ask for one, the encoder's bitrate from the bandwidth
//! estimate, and the stamp latency. No str0m and no clock: the loop hands in what the
//! [`Conductor`](super::conductor::Conductor) received and passes every instant, so the
//! policy is tested on its own.

use std::time::{Duration, Instant};

use crate::media::{read_stamp, EncoderConfig, H264Decoder, H264Encoder, I420Frame, MediaError};

/// The encoder never goes below this, whatever the bandwidth estimate says.
pub const MIN_BITRATE_BPS: u32 = 100_000;
/// Keyframe requests for a broken remote stream are sent at most this often.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// A stamp latency above this is a frame from another clock (another machine): not counted.
const MAX_PLAUSIBLE_LATENCY_US: u64 = 10_000_000;

/// What the local video is encoded as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaConfig {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
}

impl MediaConfig {
    fn encoder(&self) -> EncoderConfig {
        EncoderConfig {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_bps: self.bitrate_bps,
        }
    }

    /// Whether the encoder takes this configuration: checked at start, before signing in,
    /// so a size OpenH264 refuses is an error then and not at the first call.
    pub fn check(&self) -> Result<(), MediaError> {
        H264Encoder::new(self.encoder()).map(|_| ())
    }
}

/// Counters of the call's media, for `--stats`, the overlay and `CALL_ENDED`.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    pub frames_encoded: u64,
    pub keyframes_encoded: u64,
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub keyframe_requests: u64,
    /// Capture-to-decode latency of the last decoded frame, read from its stamp.
    pub last_stamp_latency_us: Option<u64>,
    pub stamp_latency_sum_us: u64,
    pub stamp_latency_count: u64,
    /// The encoder's target: the configured bitrate capped by the send-side estimate.
    pub target_bitrate_bps: u32,
    pub remote_size: Option<(u32, u32)>,
    /// From the call's start to the first decoded frame.
    pub first_frame_time: Option<Duration>,
}

impl MediaStats {
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.stamp_latency_count > 0)
            .then(|| self.stamp_latency_sum_us as f64 / self.stamp_latency_count as f64 / 1000.0)
    }
}

/// An encoded frame, Annex-B, ready for the transport.
#[derive(Debug)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// What decoding one received frame gave.
#[derive(Debug, Default)]
pub struct Decoded {
    pub frame: Option<I420Frame>,
    /// The stream is broken: ask the sender for a keyframe (rate-limited here).
    pub request_keyframe: bool,
}

pub struct MediaSession {
    config: MediaConfig,
    encoder: H264Encoder,
    decoder: H264Decoder,
    started: Instant,
    force_idr: bool,
    last_pli: Option<Instant>,
    stats: MediaStats,
}

impl MediaSession {
    pub fn new(config: MediaConfig, now: Instant) -> Result<MediaSession, MediaError> {
        Ok(MediaSession {
            encoder: H264Encoder::new(config.encoder())?,
            decoder: H264Decoder::new()?,
            started: now,
            force_idr: true,
            last_pli: None,
            stats: MediaStats {
                target_bitrate_bps: config.bitrate_bps,
                ..MediaStats::default()
            },
            config,
        })
    }

    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// The transport is up: the next frame is a keyframe, so the peer can start decoding.
    pub fn connected(&mut self) {
        self.force_idr = true;
    }

    /// The peer asked for a keyframe (PLI or FIR).
    pub fn keyframe_requested(&mut self) {
        self.stats.keyframe_requests += 1;
        self.force_idr = true;
    }

    /// Encodes a captured frame. `Ok(None)`: the encoder skipped it (rate control).
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<EncodedFrame>, MediaError> {
        let keyframe = std::mem::take(&mut self.force_idr);
        match self.encoder.encode(frame, keyframe) {
            Ok(data) if data.is_empty() => {
                self.force_idr |= keyframe;
                Ok(None)
            }
            Ok(data) => {
                self.stats.frames_encoded += 1;
                if keyframe {
                    self.stats.keyframes_encoded += 1;
                }
                Ok(Some(EncodedFrame { data, keyframe }))
            }
            Err(e) => {
                // The next frame starts afresh, so the peer's decoder is not left broken.
                self.force_idr = true;
                Err(e)
            }
        }
    }

    /// Decodes one received frame (Annex-B). `now_us` is the receive time on the clock the
    /// test pattern stamps ([`crate::media::monotonic_us`]), for the stamp latency.
    pub fn decode(&mut self, annex_b: &[u8], now: Instant, now_us: u64) -> Decoded {
        self.stats.frames_received += 1;
        match self.decoder.decode(annex_b) {
            Ok(Some(frame)) => {
                self.stats.frames_decoded += 1;
                if self.stats.first_frame_time.is_none() {
                    let t = now.saturating_duration_since(self.started);
                    self.stats.first_frame_time = Some(t);
                    log::info!(
                        "first remote frame {}x{} decoded {} ms after the call started",
                        frame.width,
                        frame.height,
                        t.as_millis()
                    );
                }
                self.stats.remote_size = Some((frame.width, frame.height));
                if let Some(stamp) = read_stamp(&frame) {
                    let latency = (now_us as u32).wrapping_sub(stamp.capture_time_us) as u64;
                    if latency < MAX_PLAUSIBLE_LATENCY_US {
                        self.stats.last_stamp_latency_us = Some(latency);
                        self.stats.stamp_latency_sum_us += latency;
                        self.stats.stamp_latency_count += 1;
                    }
                }
                Decoded {
                    frame: Some(frame),
                    request_keyframe: false,
                }
            }
            Ok(None) => Decoded::default(),
            Err(e) => {
                self.stats.decode_errors += 1;
                log::debug!("decode failed: {e}");
                let due = self.last_pli.is_none_or(|t| now - t >= PLI_INTERVAL);
                if due {
                    self.last_pli = Some(now);
                }
                Decoded {
                    frame: None,
                    request_keyframe: due,
                }
            }
        }
    }

    /// The send-side bandwidth estimate: the encoder follows it between
    /// [`MIN_BITRATE_BPS`] and the configured bitrate, retuned only on real changes (each
    /// retune costs the encoder a little).
    pub fn bandwidth_estimate(&mut self, estimate_bps: u64) {
        let configured = self.config.bitrate_bps.max(MIN_BITRATE_BPS);
        let target = (estimate_bps.min(u32::MAX.into()) as u32).clamp(MIN_BITRATE_BPS, configured);
        let current = self.stats.target_bitrate_bps;
        if target.abs_diff(current) > current / 10 {
            log::debug!("bandwidth estimate {estimate_bps} bps: encoder target {target} bps");
            match self.encoder.set_bitrate(target) {
                Ok(()) => self.stats.target_bitrate_bps = target,
                Err(e) => log::warn!("cannot retune the encoder: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{monotonic_us, TestPattern};

    const MEDIA: MediaConfig = MediaConfig {
        width: 320,
        height: 240,
        fps: 30.0,
        bitrate_bps: 300_000,
    };

    #[test]
    fn first_frame_is_a_keyframe_and_requests_bring_another() {
        let now = Instant::now();
        let mut m = MediaSession::new(MEDIA, now).unwrap();
        let mut p = TestPattern::new(320, 240);
        let first = m.encode(&p.frame(0, 0)).unwrap().unwrap();
        assert!(first.keyframe);
        let second = m.encode(&p.frame(1, 33_000)).unwrap().unwrap();
        assert!(!second.keyframe);
        m.keyframe_requested();
        assert!(m.encode(&p.frame(2, 66_000)).unwrap().unwrap().keyframe);
        m.connected();
        assert!(m.encode(&p.frame(3, 99_000)).unwrap().unwrap().keyframe);
        assert_eq!(m.stats().keyframes_encoded, 3);
        assert_eq!(m.stats().keyframe_requests, 1);
    }

    #[test]
    fn decodes_a_peer_stream_and_reads_the_stamp_latency() {
        let t0 = Instant::now();
        let mut sender = MediaSession::new(MEDIA, t0).unwrap();
        let mut receiver = MediaSession::new(MEDIA, t0).unwrap();
        let mut p = TestPattern::new(320, 240);
        let base = monotonic_us();
        for i in 0..10u32 {
            let capture = base + i as u64 * 33_333;
            let enc = sender.encode(&p.frame(i, capture)).unwrap().unwrap();
            let now = t0 + Duration::from_millis(40 + i as u64 * 33);
            let d = receiver.decode(&enc.data, now, capture + 5_000);
            assert!(d.frame.is_some(), "frame {i}");
            assert!(!d.request_keyframe);
        }
        let s = receiver.stats();
        assert_eq!(s.frames_decoded, 10);
        assert_eq!(s.remote_size, Some((320, 240)));
        assert_eq!(s.first_frame_time, Some(Duration::from_millis(40)));
        assert_eq!(s.last_stamp_latency_us, Some(5_000));
        assert_eq!(s.mean_latency_ms(), Some(5.0));
    }

    #[test]
    fn a_broken_stream_asks_for_keyframes_at_most_every_pli_interval() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(MEDIA, t0).unwrap();
        // A P-slice NAL with no SPS/PPS before it cannot be decoded.
        let junk = [0, 0, 0, 1, 0x41, 0x9a, 0x00, 0x11, 0x22, 0x33];
        let mut asked = 0;
        for ms in (0..1_000).step_by(100) {
            let d = m.decode(&junk, t0 + Duration::from_millis(ms), 0);
            assert!(d.frame.is_none());
            asked += d.request_keyframe as u32;
        }
        assert!(m.stats().decode_errors > 0, "junk must fail to decode");
        // At 0 ms and at 500 ms (only when the decoder reports an error each time).
        assert!((1..=2).contains(&asked), "asked {asked} times in 1 s");
    }

    #[test]
    fn the_bitrate_follows_the_estimate_within_bounds() {
        let mut m = MediaSession::new(MEDIA, Instant::now()).unwrap();
        m.bandwidth_estimate(10_000_000);
        assert_eq!(m.stats().target_bitrate_bps, 300_000, "capped at --bitrate");
        m.bandwidth_estimate(150_000);
        assert_eq!(m.stats().target_bitrate_bps, 150_000);
        m.bandwidth_estimate(155_000);
        assert_eq!(
            m.stats().target_bitrate_bps,
            150_000,
            "small changes ignored"
        );
        m.bandwidth_estimate(1_000);
        assert_eq!(m.stats().target_bitrate_bps, MIN_BITRATE_BPS, "floor");
    }

    #[test]
    fn sizes_the_encoder_refuses_are_found_by_check() {
        assert!(MEDIA.check().is_ok());
        let huge = MediaConfig {
            width: 4000,
            height: 3000,
            ..MEDIA
        };
        assert!(
            huge.check().is_err(),
            "OpenH264 takes at most 3840x2160-ish"
        );
    }
}
