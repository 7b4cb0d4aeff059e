//! H.264 on OpenH264, shaped for a real-time call: one thread, constrained baseline (what a
//! browser decodes for `profile-level-id=42e01f;packetization-mode=1`), bitrate rate control
//! without frame skipping, Annex-B in and out (what str0m's packetizer and depacketizer use).

use std::os::raw::{c_int, c_void};

use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig as Oh264Config, FrameRate, FrameType,
    IntraFramePeriod, Level, Profile, RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::{OpenH264API, Timestamp};
// OpenH264's `SetOption` for bitrates is not wrapped by `openh264`; its bindings crate has
// the option numbers and the `SBitrateInfo` argument, generated from the C headers.
use openh264_sys2::{
    SBitrateInfo, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL,
};

use super::frame::check_dimensions;
use super::{I420Frame, MediaError};

/// What the encoder is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
}

/// OpenH264 clips bitrates to this range anyway; checking here names the bad value.
const MIN_BITRATE_BPS: u32 = 10_000;
const MAX_BITRATE_BPS: u32 = 200_000_000;

fn check_config(config: &EncoderConfig) -> Result<(), MediaError> {
    check_dimensions(config.width, config.height)?;
    if config.width > 3840 || config.height > 2160 {
        return Err(MediaError::BadConfig(format!(
            "size {}x{} is larger than OpenH264's 3840x2160",
            config.width, config.height
        )));
    }
    if !(config.fps.is_finite() && config.fps > 0.0 && config.fps <= 240.0) {
        return Err(MediaError::BadConfig(format!(
            "frame rate {} is outside 0 < fps <= 240",
            config.fps
        )));
    }
    check_bitrate(config.bitrate_bps)
}

fn check_bitrate(bps: u32) -> Result<(), MediaError> {
    if !(MIN_BITRATE_BPS..=MAX_BITRATE_BPS).contains(&bps) {
        return Err(MediaError::BadConfig(format!(
            "bitrate {bps} bit/s is outside {MIN_BITRATE_BPS}..={MAX_BITRATE_BPS}"
        )));
    }
    Ok(())
}

fn oh264_config(config: &EncoderConfig) -> Oh264Config {
    Oh264Config::new()
        .bitrate(BitRate::from_bps(config.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(config.fps))
        .rate_control_mode(RateControlMode::Bitrate)
        // Frame skipping on, as libwebrtc's OpenH264 wrapper has it for cameras: rate
        // control may drop a frame when the link is full (the call shows it as a short
        // stutter). Without it OpenH264 also prints a warning banner on every encoder.
        .skip_frames(true)
        .usage_type(UsageType::CameraVideoRealTime)
        // Baseline makes OpenH264 set constraint_set0/1: constrained baseline, 42e0xx.
        .profile(Profile::Baseline)
        .level(Level::Level_3_1)
        .complexity(Complexity::Medium)
        // One thread: the whole program is one loop (0 would mean one per core).
        .num_threads(1)
        // Key frames come when the receiver asks (PLI/FIR) or the caller forces one; a
        // scene-change IDR would be an unasked-for burst.
        .intra_frame_period(IntraFramePeriod::auto())
        .scene_change_detect(false)
        .vui(VuiConfig::bt601())
}

/// An OpenH264 encoder that takes [`I420Frame`]s and gives Annex-B access units.
pub struct H264Encoder {
    config: EncoderConfig,
    inner: Encoder,
    frames: u64,
}

impl H264Encoder {
    pub fn new(config: EncoderConfig) -> Result<H264Encoder, MediaError> {
        check_config(&config)?;
        Ok(H264Encoder {
            config,
            inner: Self::make(&config)?,
            frames: 0,
        })
    }

    fn make(config: &EncoderConfig) -> Result<Encoder, MediaError> {
        Encoder::with_api_config(OpenH264API::from_source(), oh264_config(config))
            .map_err(|e| MediaError::Encoder(e.to_string()))
    }

    pub fn config(&self) -> EncoderConfig {
        self.config
    }

    /// The size frames are encoded at now (the last frame's).
    pub fn size(&self) -> (u32, u32) {
        (self.config.width, self.config.height)
    }

    /// Encodes one frame. `force_idr` makes it a key frame (answer to PLI/FIR, or the first
    /// frame after the far side joined). A frame of another size than configured restarts the
    /// encoder at that size (the next frame is then an IDR). The result may be empty if the
    /// encoder decided to emit nothing for this frame.
    pub fn encode(&mut self, frame: &I420Frame, force_idr: bool) -> Result<Vec<u8>, MediaError> {
        frame.validate()?;
        if (frame.width, frame.height) != (self.config.width, self.config.height) {
            let config = EncoderConfig {
                width: frame.width,
                height: frame.height,
                ..self.config
            };
            check_config(&config)?;
            log::info!(
                "H.264 encoder: frame size changed from {}x{} to {}x{}, restarting",
                self.config.width,
                self.config.height,
                frame.width,
                frame.height
            );
            self.inner = Self::make(&config)?;
            self.config = config;
            self.frames = 0;
        }
        // Before the first frame the encoder is not initialised yet, and the first frame is
        // an IDR anyway.
        if force_idr && self.frames > 0 {
            self.inner.force_intra_frame();
        }
        let (w, h) = (frame.width as usize, frame.height as usize);
        let source = YUVSlices::new((frame.y(), frame.u(), frame.v()), (w, h), (w, w / 2, w / 2));
        let millis = (self.frames as f64 * 1000.0 / self.config.fps as f64) as u64;
        self.frames += 1;
        let stream = self
            .inner
            .encode_at(&source, Timestamp::from_millis(millis))
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        if stream.frame_type() == FrameType::Skip {
            return Ok(Vec::new());
        }
        Ok(stream.to_vec())
    }

    /// Changes the target bitrate from the next frame on, without a key frame (this is what
    /// the bandwidth estimator drives several times a second).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        check_bitrate(bps)?;
        let old = self.config.bitrate_bps;
        self.config.bitrate_bps = bps;
        if self.frames == 0 {
            // Not initialised yet: the new settings apply at the first frame.
            self.inner = Self::make(&self.config)?;
            return Ok(());
        }
        // OpenH264 rejects a target above the layer's maximum, so the order matters: raise the
        // maximum first when going up, lower the target first when going down.
        let target = (ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL);
        let max = (ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0);
        let order = if bps > old {
            [max, target]
        } else {
            [target, max]
        };
        for (option, layer) in order {
            let mut info = SBitrateInfo {
                iLayer: layer,
                iBitrate: bps as c_int,
            };
            // SAFETY: the encoder is initialised (a frame was encoded), and both options are
            // defined with a pointer to an `SBitrateInfo`, which OpenH264 only reads during
            // the call.
            let rc = unsafe {
                self.inner
                    .raw_api()
                    .set_option(option, (&mut info as *mut SBitrateInfo).cast::<c_void>())
            };
            if rc != 0 {
                return Err(MediaError::Encoder(format!(
                    "setting the bitrate to {bps} bit/s failed (option {option}, code {rc})"
                )));
            }
        }
        Ok(())
    }
}

/// An OpenH264 decoder from Annex-B access units to [`I420Frame`]s.
pub struct H264Decoder {
    inner: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, MediaError> {
        let inner = Decoder::new().map_err(|e| MediaError::Decoder(e.to_string()))?;
        Ok(H264Decoder { inner })
    }

    /// Decodes one access unit (or any run of NAL units). `Ok(None)` means no picture yet
    /// (parameter sets only, or the decoder is waiting). An `Err` means the data was corrupt
    /// or referred to a frame that never arrived: ask the sender for a key frame.
    pub fn decode(&mut self, annex_b: &[u8]) -> Result<Option<I420Frame>, MediaError> {
        if annex_b.is_empty() {
            return Ok(None);
        }
        let Some(yuv) = self
            .inner
            .decode(annex_b)
            .map_err(|e| MediaError::Decoder(e.to_string()))?
        else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        // I420Frame needs even sizes; an odd picture loses its last row/column.
        let (w, h) = (w & !1, h & !1);
        let mut frame = I420Frame::try_new(w as u32, h as u32)
            .map_err(|e| MediaError::Decoder(format!("decoded picture: {e}")))?;
        let (cw, ch) = (w / 2, h / 2);
        let (yp, up, vp) = frame.planes_mut();
        copy_plane(yuv.y(), sy, yp, w, h)?;
        copy_plane(yuv.u(), su, up, cw, ch)?;
        copy_plane(yuv.v(), sv, vp, cw, ch)?;
        Ok(Some(frame))
    }
}

/// Copies a strided plane into a packed one, checking the source really is that large.
fn copy_plane(
    src: &[u8],
    stride: usize,
    dst: &mut [u8],
    w: usize,
    h: usize,
) -> Result<(), MediaError> {
    if h == 0 {
        return Ok(());
    }
    if stride < w || src.len() < (h - 1) * stride + w {
        return Err(MediaError::Decoder(format!(
            "decoded plane of {} bytes with stride {stride} is too small for {w}x{h}",
            src.len()
        )));
    }
    for (row, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + w]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{read_stamp, Stamp, TestPattern};

    fn encoder(w: u32, h: u32, bps: u32) -> H264Encoder {
        H264Encoder::new(EncoderConfig {
            width: w,
            height: h,
            fps: 30.0,
            bitrate_bps: bps,
        })
        .unwrap()
    }

    /// NAL unit types in an Annex-B buffer.
    fn nal_types(annex_b: &[u8]) -> Vec<u8> {
        openh264::nal_units(annex_b)
            .filter_map(|nal| {
                let start = nal.iter().position(|&b| b == 1)? + 1;
                nal.get(start).map(|b| b & 0x1f)
            })
            .collect()
    }

    /// Encodes `n` frames of the pattern and checks every decoded frame's stamp.
    fn stamps_survive(w: u32, h: u32, bps: u32, n: u32) {
        let mut enc = encoder(w, h, bps);
        let mut dec = H264Decoder::new().unwrap();
        let mut pattern = TestPattern::new(w, h);
        let mut bytes = 0usize;
        let mut decoded = 0;
        for i in 0..n {
            let t = 1_000_000 + i as u64 * 33_333;
            let au = enc.encode(&pattern.frame(i, t), false).unwrap();
            bytes += au.len();
            if let Some(frame) = dec.decode(&au).unwrap() {
                assert_eq!((frame.width, frame.height), (w, h));
                let expected = Stamp {
                    frame_number: i,
                    capture_time_us: t as u32,
                };
                assert_eq!(read_stamp(&frame), Some(expected), "{w}x{h} frame {i}");
                decoded += 1;
            }
        }
        assert_eq!(decoded, n, "every frame decodes at once (no delay)");
        let kbps = bytes as f64 * 8.0 * 30.0 / n as f64 / 1000.0;
        eprintln!("{w}x{h} at {bps} bit/s: {kbps:.0} kbit/s");
        assert!(
            kbps < bps as f64 / 1000.0 * 2.0,
            "{w}x{h}: {kbps:.0} kbit/s"
        );
    }

    #[test]
    fn stamp_survives_640x480_at_500_kbps() {
        stamps_survive(640, 480, 500_000, 90);
    }

    #[test]
    fn stamp_survives_320x240_at_300_kbps() {
        stamps_survive(320, 240, 300_000, 90);
    }

    #[test]
    fn output_is_constrained_baseline_annex_b_with_idr_on_request() {
        let mut enc = encoder(320, 240, 300_000);
        let mut pattern = TestPattern::new(320, 240);
        let first = enc.encode(&pattern.frame(0, 0), false).unwrap();
        assert_eq!(&first[..4], &[0, 0, 0, 1], "Annex-B start code");
        let types = nal_types(&first);
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );
        // SPS: profile_idc 66, constraint_set0 and 1 (constrained baseline).
        let sps = openh264::nal_units(&first)
            .find(|n| nal_types(n) == [7])
            .unwrap();
        let at = sps.iter().position(|&b| b == 1).unwrap() + 2;
        assert_eq!(sps[at], 0x42);
        assert_eq!(
            sps[at + 1] & 0xc0,
            0xc0,
            "constraint flags {:#x}",
            sps[at + 1]
        );
        let second = enc.encode(&pattern.frame(1, 0), false).unwrap();
        assert!(!nal_types(&second).contains(&5), "P frame expected");
        let third = enc.encode(&pattern.frame(2, 0), true).unwrap();
        assert!(nal_types(&third).contains(&5), "forced IDR expected");
    }

    /// Frames with fresh noise, so the encoder has more to say than any bitrate allows.
    fn noisy_frames(w: u32, h: u32) -> impl FnMut() -> I420Frame {
        let mut seed = 0x9e37_79b9u32;
        move || {
            let mut f = I420Frame::new(w, h);
            for p in f.y_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *p = 100 + (seed as u8 >> 4);
            }
            f
        }
    }

    #[test]
    fn set_bitrate_changes_the_output_rate() {
        let mut enc = encoder(320, 240, 1_500_000);
        let mut next = noisy_frames(320, 240);
        let mut run = |enc: &mut H264Encoder| -> usize {
            (0..30)
                .map(|_| enc.encode(&next(), false).unwrap().len())
                .sum()
        };
        run(&mut enc);
        let high = run(&mut enc);
        enc.set_bitrate(150_000).unwrap();
        run(&mut enc);
        let low = run(&mut enc);
        enc.set_bitrate(1_500_000).unwrap();
        run(&mut enc);
        let high_again = run(&mut enc);
        eprintln!("bytes per second: high {high} low {low} high again {high_again}");
        assert!(low * 2 < high, "high {high} low {low}");
        assert!(low * 2 < high_again, "low {low} high again {high_again}");
        assert!(enc.set_bitrate(5).is_err());
        assert_eq!(enc.config().bitrate_bps, 1_500_000);
    }

    #[test]
    fn size_change_restarts_the_encoder() {
        let mut enc = encoder(320, 240, 300_000);
        let mut dec = H264Decoder::new().unwrap();
        let a = enc
            .encode(&TestPattern::new(320, 240).frame(0, 0), false)
            .unwrap();
        assert_eq!(dec.decode(&a).unwrap().unwrap().width, 320);
        let b = enc
            .encode(&TestPattern::new(640, 480).frame(1, 0), false)
            .unwrap();
        let f = dec.decode(&b).unwrap().unwrap();
        assert_eq!((f.width, f.height), (640, 480));
        assert_eq!(enc.config().width, 640);
    }

    #[test]
    fn bad_configs_and_frames_are_errors() {
        let ok = EncoderConfig {
            width: 320,
            height: 240,
            fps: 30.0,
            bitrate_bps: 300_000,
        };
        for bad in [
            EncoderConfig { width: 321, ..ok },
            EncoderConfig { height: 0, ..ok },
            EncoderConfig { width: 4000, ..ok },
            EncoderConfig { fps: 0.0, ..ok },
            EncoderConfig {
                fps: f32::NAN,
                ..ok
            },
            EncoderConfig {
                bitrate_bps: 0,
                ..ok
            },
        ] {
            assert!(H264Encoder::new(bad).is_err(), "{bad:?}");
        }
        let mut enc = H264Encoder::new(ok).unwrap();
        let broken = I420Frame {
            width: 320,
            height: 240,
            data: vec![0; 100],
        };
        let e = enc.encode(&broken, false).unwrap_err();
        assert!(e.to_string().contains("320x240"), "{e}");
    }

    #[test]
    fn corrupt_input_gives_errors_not_panics() {
        let mut dec = H264Decoder::new().unwrap();
        assert!(dec.decode(&[]).unwrap().is_none());
        // Garbage that is not even Annex-B, and garbage behind start codes.
        let mut seed = 0x1234_5678u32;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect()
        };
        for _ in 0..20 {
            let _ = dec.decode(&noise(1000));
            let mut au = vec![0, 0, 0, 1, 0x65];
            au.extend(noise(500));
            let _ = dec.decode(&au);
        }
        // A P frame without its key frame cannot be decoded.
        let mut enc = encoder(320, 240, 300_000);
        let mut pattern = TestPattern::new(320, 240);
        let idr = enc.encode(&pattern.frame(0, 0), false).unwrap();
        let p = enc.encode(&pattern.frame(1, 0), false).unwrap();
        let mut fresh = H264Decoder::new().unwrap();
        assert!(!matches!(fresh.decode(&p), Ok(Some(_))));
        // Truncated and bit-flipped real frames.
        let mut errors = 0;
        for cut in [idr.len() / 3, idr.len() / 2, idr.len() - 7] {
            let mut d = H264Decoder::new().unwrap();
            if d.decode(&idr[..cut]).is_err() {
                errors += 1;
            }
        }
        for k in 0..30 {
            let mut bad = idr.clone();
            let n = bad.len();
            for j in 0..8 {
                let at = 30 + (k * 97 + j * 131) % (n - 30);
                bad[at] ^= 0x5a;
            }
            let mut d = H264Decoder::new().unwrap();
            if d.decode(&bad).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0, "some corrupt frames must be reported");
        // And the decoder still works after all that.
        let mut d = H264Decoder::new().unwrap();
        assert!(d.decode(&idr).unwrap().is_some());
    }
}
