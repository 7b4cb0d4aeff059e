//! The media of one call, apart from the transport: the H.264 encoder and decoder, when to
//! send a keyframe and when to ask for one, the encoder's bitrate from the bandwidth
//! estimate, and the stamp latency. No str0m and no clock: the loop hands in what the
//! [`Conductor`](super::conductor::Conductor) received and passes every instant, so the
//! policy is tested on its own.
//!
//! On a thin link three rules keep the sender under str0m's estimate whatever OpenH264
//! does: the encoder is given [`ENCODER_SHARE`] of the estimate; a send budget (a leaky
//! bucket drained at [`BUDGET_SHARE`] of the estimate) drops captured frames before they are
//! encoded while what was sent has overrun it, so a large keyframe is paid for by the frames
//! after it instead of by the link; and keyframe requests are answered at most once per
//! [`KEYFRAME_INTERVAL`] (frames are not encoded at all while a keyframe still drains the
//! budget), so a keyframe lost in a full queue does not start a storm of larger ones.
//! str0m paces the packets itself (its leaky-bucket pacer runs at 1.1x the estimate
//! whenever bandwidth estimation is on).
//!
//! The estimate the session works to is str0m's raw one (read from its stats every few
//! hundred ms: its `EgressBitrateEstimate` event is a 3 s average, seconds late when a link
//! narrows), capped after heavy loss ([`LOSS_CUT`], as GCC's loss-based rule) until the
//! estimate comes down by itself. While the estimate is under the configured bitrate the
//! session asks str0m to probe ([`MediaSession::poll_bwe_bitrates`]), often after a
//! large drop and more and more rarely after that ([`PROBE_INTERVAL`]), so the estimate
//! climbs back when a link widens without waiting for the encoder to overshoot.

use std::time::{Duration, Instant};

use crate::media::{read_stamp, EncoderConfig, H264Decoder, H264Encoder, I420Frame, MediaError};

/// The encoder never goes below this, whatever the bandwidth estimate says.
pub const MIN_BITRATE_BPS: u32 = 100_000;
/// The bandwidth estimate a call starts from (Chromium's): str0m probes at 3x and 6x of
/// it at once, and the send budget and the encoder start from it too. Starting at the
/// configured bitrate sends that much for the first second, whatever the link, and the
/// loss it causes sinks the estimate for seconds.
pub const START_BITRATE_BPS: u64 = 300_000;
/// Keyframe requests for a broken remote stream are sent at most this often.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// The share of the estimate the encoder is asked for: OpenH264 overshoots its target on
/// busy content, and RTP/UDP overhead and audio share the link.
pub const ENCODER_SHARE: f64 = 0.8;
/// The share of the estimate the send budget lets through (encoded payload).
pub const BUDGET_SHARE: f64 = 0.9;
/// What else the call puts on the link, taken off the estimate before the video's shares:
/// the Opus audio (32 kbit/s, 50 packets/s of ~60 bytes of IP/UDP/RTP/SRTP headers each,
/// ~56 kbit/s on the wire) and RTCP. Without it the sender filled a 300 kbit/s link to
/// the last bit and its token bucket dropped packets for seconds at a time.
pub const OTHER_TRAFFIC_BPS: u64 = 60_000;
/// The share of the video's wire bits that is payload (~66 bytes of headers per packet of
/// ~1,200).
pub const PAYLOAD_SHARE: f64 = 0.95;
/// The send budget's debt allowed before captured frames are dropped, in time at its rate.
pub const BUDGET_ALLOWANCE: Duration = Duration::from_millis(100);
/// Below this estimate the video is sent at half its width and height (an encoder restart
/// and a keyframe): at a few hundred kbit/s a full-size keyframe of busy content takes
/// seconds of the budget. Back to full size at [`FULL_SIZE_BPS`] (hysteresis).
pub const HALF_SIZE_BPS: u64 = 400_000;
pub const FULL_SIZE_BPS: u64 = 600_000;
/// No halving this soon after the first estimate: until then it is str0m's start value
/// (300 kbit/s), not a measurement, and every call would start at half size (a recording
/// takes its size from the first frames).
pub const HALF_SIZE_GRACE: Duration = Duration::from_secs(3);
/// The peer's keyframe requests are answered at most this often (the first keyframe and
/// the one after an encoder error are not held back).
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);
/// TWCC loss over the last second above this cuts the working estimate at once, by half
/// the loss fraction (GCC's loss-based rule: delay-based estimates see a queue, not a
/// link that drops).
pub const LOSS_CUT: f32 = 0.10;
/// At most one loss cut per this: str0m's loss figure covers the last second.
pub const LOSS_CUT_INTERVAL: Duration = Duration::from_secs(1);
/// A loss cap lasts this long after the last cut (or until str0m's estimate is under it):
/// it bridges the estimate's lag. Held longer, the sender falls so far under str0m's
/// estimate that str0m takes it for application-limited and probes at twice the configured
/// bitrate, and a token bucket's burst makes those probes read as a wide link.
pub const LOSS_CAP_HOLD: Duration = Duration::from_secs(2);
/// The working estimate rises at most by this factor a second (it falls at once). A probe
/// sees a link's burst, not its rate: through a token bucket with tokens left, str0m read
/// 3-4 Mbit/s on a 300 kbit/s link, and a sender that followed at once put a megabit
/// into it for a second. Rising at this pace, a reading that str0m takes back within a
/// report or two costs little, and a real widening from 300 kbit/s to 1 Mbit/s is
/// followed within 2 s.
pub const MAX_RISE_PER_SECOND: f64 = 1.5;
/// Above the level the last loss cut was made at (in the last [`CEILING_MEMORY`]), where the
/// link overflowed, and above the highest level held in the last [`HIGH_MEMORY`] (once the
/// call's [`START_RAMP`] is over), the working estimate rises at most this fast (as GCC's additive
/// increase near its link capacity): a probe that reads a burst as a wide link then costs
/// a few percent over the link instead of half again.
pub const CEILING_RISE_PER_SECOND: f64 = 1.1;
/// A loss cut's level holds the rise back this long: a link that overflowed then may have
/// widened since (held for [`HIGH_MEMORY`], the working estimate took 6-17 s to come back
/// from a 10 s thin spell: every cut in it had set the level at 300 kbit/s).
pub const CEILING_MEMORY: Duration = Duration::from_secs(8);
/// The start of a call rises fast whatever level it held (until its first loss cut): the
/// level is still the start value's.
pub const START_RAMP: Duration = Duration::from_secs(5);
/// After a large drop, while the link is clean, str0m pads the link up to this share of
/// the working estimate: its loss controller lets the estimate grow to at most 1.2-1.5x
/// the rate acknowledged, and a sender held to a share of the estimate never gets there
/// (the estimate stayed at the old thin link's rate for 7 s after it widened, until a
/// probe). Enough for it to grow (1.2 x 0.85 > 1), not so much that an estimate a little
/// above a thin link keeps its queue full.
pub const PAD_SHARE: f64 = 0.85;
/// str0m's estimate unchanged (within 1 %) this long while short of the configured bitrate
/// on a clean link: its loss controller is holding it (its hold doubles with each loss
/// episode, up to 60 s, and no probe is made meanwhile; one call sat at 148 kbit/s for the
/// last 26 s on a widened 1 Mbit/s link). str0m is then reset to the working estimate,
/// which probes at 3x and 6x of it as a call's start does.
pub const FROZEN_AFTER: Duration = Duration::from_secs(5);
/// Probes are asked for only while the loss is under this.
pub const LOSS_LOW: f32 = 0.02;
/// While the estimate is under [`PROBE_BELOW`] of the configured bitrate, str0m is asked to
/// probe, first this long after the last probe or loss cut: its own probes after a drop
/// need an application-limited sender, which the send budget never is, and its additive
/// increase climbs ~10 kbit/s a second. Each probe doubles the wait up to
/// [`MAX_PROBE_INTERVAL`] (a probe on a full link overshoots it: a token bucket lets its
/// short burst through at any rate); while the working estimate is under [`LARGE_DROP`] of
/// the highest level it held in the last [`HIGH_MEMORY`] (its average over [`LEVEL_TAU`]),
/// the link may widen back at any time and the wait stays at this.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(24);
pub const PROBE_BELOW: f64 = 0.9;
pub const LARGE_DROP: f64 = 0.5;
pub const LEVEL_TAU: Duration = Duration::from_secs(5);
pub const HIGH_MEMORY: Duration = Duration::from_secs(30);
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
    /// Captured frames not encoded because the send budget was overrun.
    pub frames_dropped: u64,
    /// Capture-to-decode latency of the last decoded frame, read from its stamp.
    pub last_stamp_latency_us: Option<u64>,
    pub stamp_latency_sum_us: u64,
    pub stamp_latency_count: u64,
    /// The encoder's target: the configured bitrate capped by the send-side estimate.
    pub target_bitrate_bps: u32,
    /// str0m's latest send-side estimate, and the one the session works to (lower after a
    /// loss cut).
    pub estimate_bps: Option<u64>,
    pub working_estimate_bps: Option<u64>,
    /// Loss cuts made, and probes asked of str0m.
    pub loss_cuts: u64,
    pub probes_asked: u64,
    /// Resets of str0m's estimator asked for ([`FROZEN_AFTER`]).
    pub bwe_resets: u64,
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

/// A leaky bucket of encoded bits: filled by each frame sent, drained at a rate. While it
/// holds more than [`BUDGET_ALLOWANCE`] at its rate, nothing more may be sent, so over any
/// span the bits sent stay under rate x span + the allowance + one frame.
#[derive(Debug, Clone)]
pub struct SendBudget {
    rate_bps: u64,
    level_bits: u64,
    at: Option<Instant>,
}

impl SendBudget {
    pub fn new(rate_bps: u64) -> SendBudget {
        SendBudget {
            rate_bps,
            level_bits: 0,
            at: None,
        }
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// A new drain rate, from `now` on (what was drained until now at the old one stays).
    pub fn set_rate(&mut self, rate_bps: u64, now: Instant) {
        self.drain(now);
        self.rate_bps = rate_bps;
    }

    fn drain(&mut self, now: Instant) {
        if let Some(at) = self.at.filter(|at| now > *at) {
            let us = now.duration_since(at).as_micros().min(u64::MAX.into()) as u64;
            let drained = self.rate_bps.saturating_mul(us) / 1_000_000;
            self.level_bits = self.level_bits.saturating_sub(drained);
        }
        if self.at.is_none_or(|at| now > at) {
            self.at = Some(now);
        }
    }

    fn allowance_bits(&self) -> u64 {
        self.rate_bps
            .saturating_mul(BUDGET_ALLOWANCE.as_millis() as u64)
            / 1000
    }

    /// The bits sent and not yet drained at `now`.
    pub fn level_bits(&mut self, now: Instant) -> u64 {
        self.drain(now);
        self.level_bits
    }

    /// Whether a frame may be sent at `now`: the debt is within the allowance.
    pub fn may_send(&mut self, now: Instant) -> bool {
        self.level_bits(now) <= self.allowance_bits()
    }

    /// A frame of `bytes` was sent at `now`.
    pub fn spent(&mut self, bytes: usize, now: Instant) {
        self.drain(now);
        self.level_bits = self.level_bits.saturating_add(bytes as u64 * 8);
    }
}

pub struct MediaSession {
    config: MediaConfig,
    encoder: H264Encoder,
    decoder: H264Decoder,
    started: Instant,
    /// A keyframe now (first frame, after an encoder error).
    force_idr: bool,
    /// The peer asked for a keyframe: sent once [`KEYFRAME_INTERVAL`] has passed.
    keyframe_pending: bool,
    last_keyframe: Option<Instant>,
    last_pli: Option<Instant>,
    budget: SendBudget,
    /// Frames are halved before encoding (a low estimate).
    half_size: bool,
    /// When the first estimate came (see [`HALF_SIZE_GRACE`]).
    first_estimate_at: Option<Instant>,
    /// The cap a loss cut put on the estimate, until str0m's estimate is under it.
    loss_cap: Option<u64>,
    last_cut: Option<Instant>,
    last_report: Option<Instant>,
    /// The desired bitrate str0m is asked to discover, and what it was last told.
    desired_bps: u64,
    /// The padding str0m keeps the link filled to (its `minimum`), see [`PAD_SHARE`].
    padding_bps: u64,
    told: Option<BweBitrates>,
    /// The call's start value: the working estimate before the first report.
    start_bps: u64,
    /// The working estimate when the last loss cut was made, and when.
    ceiling: Option<(u64, Instant)>,
    /// str0m's estimate and since when it has not moved by more than 1 %.
    still: Option<(u64, Instant)>,
    /// A reset of str0m's estimator to this is wanted (see [`FROZEN_AFTER`]).
    reset_bps: Option<u64>,
    next_probe: Option<Instant>,
    probe_interval: Duration,
    /// The working estimate's average over [`LEVEL_TAU`], and its highest value in the
    /// last [`HIGH_MEMORY`] (and since when), to tell a large drop.
    level_bps: Option<f64>,
    high: Option<(f64, Instant)>,
    stats: MediaStats,
}

impl MediaSession {
    pub fn new(config: MediaConfig, now: Instant) -> Result<MediaSession, MediaError> {
        // Until the first estimate, the call's start value: a first keyframe encoded for
        // the configured bitrate could take the budget seconds to pay for.
        let start = START_BITRATE_BPS.min(config.bitrate_bps.into());
        let target = encoder_target(start, config.bitrate_bps);
        let encoder = H264Encoder::new(EncoderConfig {
            bitrate_bps: target,
            ..config.encoder()
        })?;
        Ok(MediaSession {
            encoder,
            decoder: H264Decoder::new()?,
            started: now,
            force_idr: true,
            keyframe_pending: false,
            last_keyframe: None,
            last_pli: None,
            budget: SendBudget::new(budget_bps(start)),
            half_size: false,
            first_estimate_at: None,
            loss_cap: None,
            last_cut: None,
            last_report: None,
            desired_bps: config.bitrate_bps.into(),
            padding_bps: MIN_BITRATE_BPS.into(),
            told: Some(BweBitrates {
                minimum_bps: MIN_BITRATE_BPS.into(),
                desired_bps: config.bitrate_bps.into(),
                reset_bps: None,
            }),
            still: None,
            reset_bps: None,
            start_bps: start,
            ceiling: None,
            next_probe: None,
            probe_interval: PROBE_INTERVAL,
            level_bps: None,
            high: None,
            stats: MediaStats {
                target_bitrate_bps: target,
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

    /// The peer asked for a keyframe (PLI or FIR): sent with the first frame the budget lets
    /// through once [`KEYFRAME_INTERVAL`] has passed since the last one.
    pub fn keyframe_requested(&mut self) {
        self.stats.keyframe_requests += 1;
        self.keyframe_pending = true;
    }

    /// Encodes a frame captured at `now`. `Ok(None)`: not sent, either dropped because the
    /// send budget is overrun or skipped by the encoder's rate control.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        now: Instant,
    ) -> Result<Option<EncodedFrame>, MediaError> {
        if !self.budget.may_send(now) {
            self.stats.frames_dropped += 1;
            return Ok(None);
        }
        let requested = self.keyframe_pending
            && self
                .last_keyframe
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_INTERVAL);
        let keyframe = self.force_idr || requested;
        let halved;
        let frame = if self.half_size && can_halve(frame) {
            halved = halve(frame)?;
            &halved
        } else {
            frame
        };
        // A new size restarts the encoder, whose first frame is a keyframe.
        let keyframe = keyframe || (frame.width, frame.height) != self.encoder.size();
        match self.encoder.encode(frame, keyframe) {
            Ok(data) if data.is_empty() => Ok(None),
            Ok(data) => {
                self.stats.frames_encoded += 1;
                if keyframe {
                    self.stats.keyframes_encoded += 1;
                    self.force_idr = false;
                    self.keyframe_pending = false;
                    self.last_keyframe = Some(now);
                }
                self.budget.spent(data.len(), now);
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

    /// str0m's send-side estimate and the TWCC loss of the last second (if known), at
    /// `now`. A loss over [`LOSS_CUT`] caps the working estimate at once; the send budget
    /// drains at [`BUDGET_SHARE`] of the working estimate, and the encoder targets
    /// [`ENCODER_SHARE`] of it between [`MIN_BITRATE_BPS`] and the configured bitrate,
    /// retuned only on real changes (each retune costs the encoder a little).
    pub fn bandwidth_estimate(&mut self, estimate_bps: u64, loss: Option<f32>, now: Instant) {
        let loss = loss.unwrap_or(0.0);
        let elapsed = self
            .last_report
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_report = Some(now);
        self.stats.estimate_bps = Some(estimate_bps);
        let cut_due = self
            .last_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= LOSS_CUT_INTERVAL);
        if loss > LOSS_CUT && cut_due {
            let base = self
                .loss_cap
                .or(self.stats.working_estimate_bps)
                .unwrap_or(estimate_bps)
                .min(estimate_bps);
            let cap = (base as f64 * (1.0 - f64::from(loss.min(1.0)))) as u64;
            log::debug!("loss {loss:.2}: working estimate cut to {cap} bps");
            self.loss_cap = Some(cap);
            if let Some(w) = self.stats.working_estimate_bps {
                self.ceiling = Some((w, now));
            }
            self.last_cut = Some(now);
            self.stats.loss_cuts += 1;
        }
        // str0m's estimate has come down by itself, or had the time to: it speaks for the
        // link again.
        let held = self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < LOSS_CAP_HOLD);
        self.loss_cap = self.loss_cap.filter(|c| *c < estimate_bps && held);
        let working = self
            .loss_cap
            .unwrap_or(estimate_bps)
            .min(self.rise_cap(elapsed, now));
        self.stats.working_estimate_bps = Some(working);
        self.schedule_probe(working, estimate_bps, loss, elapsed, now);
        self.budget.set_rate(budget_bps(working), now);
        let first = *self.first_estimate_at.get_or_insert(now);
        let measured = now.saturating_duration_since(first) >= HALF_SIZE_GRACE;
        let half = if self.half_size {
            working < FULL_SIZE_BPS
        } else {
            measured && working < HALF_SIZE_BPS
        };
        if half != self.half_size {
            log::debug!("working estimate {working} bps: half size {half}");
            self.half_size = half;
        }
        let target = encoder_target(working, self.config.bitrate_bps);
        let current = self.stats.target_bitrate_bps;
        if target.abs_diff(current) > current / 10 {
            log::debug!("working estimate {working} bps: encoder target {target} bps");
            match self.encoder.set_bitrate(target) {
                Ok(()) => self.stats.target_bitrate_bps = target,
                Err(e) => log::warn!("cannot retune the encoder: {e}"),
            }
        }
    }

    /// The most the working estimate may be after `elapsed` since the last report: it
    /// starts from the call's start value, rises [`MAX_RISE_PER_SECOND`] up to the last
    /// loss cut's level and the highest level held in the last [`HIGH_MEMORY`] (after the
    /// call's first [`START_RAMP`] or loss cut), and [`CEILING_RISE_PER_SECOND`] above them.
    fn rise_cap(&self, elapsed: Duration, now: Instant) -> u64 {
        let w = self.stats.working_estimate_bps.unwrap_or(self.start_bps) as f64;
        let secs = elapsed.as_secs_f64().min(1.0);
        let fast = w * MAX_RISE_PER_SECOND.powf(secs);
        let slow = w * CEILING_RISE_PER_SECOND.powf(secs);
        // Fast up to where the link was known to carry: the last loss cut's level, and
        // once the call has seen loss at all, the highest level it held of late.
        let cut = self
            .ceiling
            .filter(|(_, at)| now.saturating_duration_since(*at) < CEILING_MEMORY)
            .map(|(c, _)| c as f64);
        let ramped = self
            .first_estimate_at
            .is_some_and(|t| now.saturating_duration_since(t) >= START_RAMP);
        let held = self
            .high
            .filter(|_| ramped || self.stats.loss_cuts > 0)
            .map(|(h, _)| h);
        let cap = match cut.into_iter().chain(held).reduce(f64::min) {
            Some(limit) => fast.min(limit.max(slow)),
            None => fast,
        };
        (cap as u64).max(w as u64 + 1)
    }

    /// Asks str0m for a probe when the working estimate is short of the configured bitrate
    /// and the link is clean: str0m probes when the desired bitrate rises above its
    /// estimate, so the desired bitrate is lowered to the estimate for one report and raised
    /// back with the next.
    fn schedule_probe(
        &mut self,
        working: u64,
        estimate_bps: u64,
        loss: f32,
        elapsed: Duration,
        now: Instant,
    ) {
        let weight = 1.0 - (-elapsed.as_secs_f64() / LEVEL_TAU.as_secs_f64()).exp();
        let level = self
            .level_bps
            .map_or(working as f64, |l| l + (working as f64 - l) * weight);
        self.level_bps = Some(level);
        let high = match self.high {
            Some((h, at)) if h > level && now.saturating_duration_since(at) < HIGH_MEMORY => h,
            _ => {
                self.high = Some((level, now));
                level
            }
        };
        if (working as f64) < high * LARGE_DROP {
            self.probe_interval = PROBE_INTERVAL;
            let soon = now + PROBE_INTERVAL;
            self.next_probe = Some(self.next_probe.map_or(soon, |t| t.min(soon)));
        }
        let configured = u64::from(self.config.bitrate_bps);
        let calm = loss < LOSS_LOW
            && self.loss_cap.is_none()
            && self
                .last_cut
                .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
        let recovering = (working as f64) < high * LARGE_DROP;
        self.padding_bps = if recovering && calm {
            ((working as f64 * PAD_SHARE) as u64).max(MIN_BITRATE_BPS.into())
        } else {
            MIN_BITRATE_BPS.into()
        };
        let short = (working as f64) < configured as f64 * PROBE_BELOW;
        self.watch_frozen(estimate_bps, short && calm, now);
        if self.desired_bps < configured {
            self.desired_bps = configured;
            return;
        }
        let due = self.next_probe.is_none_or(|t| now >= t);
        if short && calm && due {
            log::debug!("working estimate {working} bps: asking str0m to probe");
            self.desired_bps = working;
            self.next_probe = Some(now + self.probe_interval);
            self.probe_interval = (self.probe_interval * 2).min(MAX_PROBE_INTERVAL);
            self.stats.probes_asked += 1;
        }
    }

    /// Asks for a reset of str0m's estimator when its estimate has not moved for
    /// [`FROZEN_AFTER`] while `wanting` (short of the configured bitrate on a clean link).
    fn watch_frozen(&mut self, estimate_bps: u64, wanting: bool, now: Instant) {
        let moved = |e: u64| estimate_bps.abs_diff(e) > e / 100;
        match self.still {
            Some((e, since)) if wanting && !moved(e) => {
                if now.saturating_duration_since(since) >= FROZEN_AFTER {
                    let to = self.stats.working_estimate_bps.unwrap_or(estimate_bps);
                    log::debug!("estimate held at {e} bps for {FROZEN_AFTER:?}: reset to {to}");
                    self.reset_bps = Some(to);
                    self.stats.bwe_resets += 1;
                    self.still = Some((e, now));
                }
            }
            _ => self.still = wanting.then_some((estimate_bps, now)),
        }
    }

    /// What str0m's estimator should be told (`Bwe::reset`, `Bwe::set_bitrate`), when it
    /// changed since the last call: the desired bitrate is the configured one, lowered to
    /// the estimate for one report when a probe is wanted; the minimum is the padding floor.
    pub fn poll_bwe_bitrates(&mut self) -> Option<BweBitrates> {
        let now = BweBitrates {
            minimum_bps: self.padding_bps,
            desired_bps: self.desired_bps,
            reset_bps: self.reset_bps.take(),
        };
        (self.told != Some(now)).then(|| {
            self.told = Some(now);
            now
        })
    }
}

/// The two rates str0m's estimator takes (`Bwe::set_bitrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweBitrates {
    /// str0m pads up to this (capped by its estimate) when the media leaves room.
    pub minimum_bps: u64,
    /// str0m probes towards this.
    pub desired_bps: u64,
    /// str0m's estimator starts again from this first ([`FROZEN_AFTER`]).
    pub reset_bps: Option<u64>,
}

/// Whether a frame can be halved into an I420 frame (even sizes) of at least 160x120.
fn can_halve(frame: &I420Frame) -> bool {
    frame.width.is_multiple_of(4)
        && frame.height.is_multiple_of(4)
        && frame.width >= 320
        && frame.height >= 240
}

/// The frame at half its width and height, each sample the mean of four.
fn halve(frame: &I420Frame) -> Result<I420Frame, MediaError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut out = I420Frame::try_new(frame.width / 2, frame.height / 2)?;
    let (y, u, v) = out.planes_mut();
    halve_plane(frame.y(), w, h, y);
    halve_plane(frame.u(), w / 2, h / 2, u);
    halve_plane(frame.v(), w / 2, h / 2, v);
    Ok(out)
}

fn halve_plane(src: &[u8], w: usize, h: usize, dst: &mut [u8]) {
    let half_w = w / 2;
    for (row, out) in dst.chunks_exact_mut(half_w).take(h / 2).enumerate() {
        let (a, b) = (&src[2 * row * w..][..w], &src[(2 * row + 1) * w..][..w]);
        for (x, px) in out.iter_mut().enumerate() {
            let sum = a[2 * x] as u32 + a[2 * x + 1] as u32 + b[2 * x] as u32 + b[2 * x + 1] as u32;
            *px = ((sum + 2) / 4) as u8;
        }
    }
}

/// The send budget's rate for an estimate: never under what the encoder's floor needs.
fn budget_bps(estimate_bps: u64) -> u64 {
    ((video_room(estimate_bps) * BUDGET_SHARE) as u64).max(MIN_BITRATE_BPS.into())
}

/// The encoder's target for a working estimate: its share of the video's room, between
/// [`MIN_BITRATE_BPS`] and the configured bitrate.
fn encoder_target(working_bps: u64, configured_bps: u32) -> u32 {
    let share = (video_room(working_bps) * ENCODER_SHARE).min(u32::MAX.into()) as u32;
    share.clamp(MIN_BITRATE_BPS, configured_bps.max(MIN_BITRATE_BPS))
}

/// The video payload an estimate has room for, once the rest of the call and the video's
/// headers are taken off.
fn video_room(estimate_bps: u64) -> f64 {
    estimate_bps.saturating_sub(OTHER_TRAFFIC_BPS) as f64 * PAYLOAD_SHARE
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

    /// A session with the budget wide enough that it never drops a frame.
    const WIDE: MediaConfig = MediaConfig {
        bitrate_bps: 20_000_000,
        ..MEDIA
    };

    /// Busy content: grey noise, new each frame, which costs the encoder all the bits it
    /// is given and more.
    fn busy(seed: u32) -> I420Frame {
        let mut f = I420Frame::try_new(320, 240).unwrap();
        let (y, u, v) = f.planes_mut();
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for p in y.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = (x >> 24) as u8;
        }
        u.fill(128);
        v.fill(128);
        f
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn first_frame_is_a_keyframe_and_requests_bring_another() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(WIDE, t0).unwrap();
        let mut p = TestPattern::new(320, 240);
        let first = m.encode(&p.frame(0, 0), t0).unwrap().unwrap();
        assert!(first.keyframe);
        let second = m.encode(&p.frame(1, 33_000), ms(t0, 33)).unwrap().unwrap();
        assert!(!second.keyframe);
        m.keyframe_requested();
        let third = m
            .encode(&p.frame(2, 66_000), ms(t0, 1_000))
            .unwrap()
            .unwrap();
        assert!(third.keyframe, "a second after the last keyframe");
        m.connected();
        let fourth = m
            .encode(&p.frame(3, 99_000), ms(t0, 1_033))
            .unwrap()
            .unwrap();
        assert!(fourth.keyframe, "the transport's start is never held back");
        assert_eq!(m.stats().keyframes_encoded, 3);
        assert_eq!(m.stats().keyframe_requests, 1);
    }

    #[test]
    fn keyframe_requests_are_answered_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(WIDE, t0).unwrap();
        let mut p = TestPattern::new(320, 240);
        let mut keyframes_at = Vec::new();
        // A PLI with every frame for 3.5 s, as a receiver whose keyframes keep getting lost.
        for i in 0..105u64 {
            m.keyframe_requested();
            let now = ms(t0, i * 33 + 1);
            let enc = m.encode(&p.frame(i as u32, i * 33_000), now).unwrap();
            if enc.is_some_and(|e| e.keyframe) {
                keyframes_at.push(i * 33 + 1);
            }
        }
        assert_eq!(keyframes_at[0], 1, "the first frame");
        for w in keyframes_at.windows(2) {
            assert!(w[1] - w[0] >= 1_000, "keyframes at {keyframes_at:?}");
        }
        assert_eq!(
            keyframes_at.len(),
            4,
            "at 0, ~1, ~2 and ~3 s: {keyframes_at:?}"
        );
        assert_eq!(m.stats().keyframe_requests, 105);
    }

    #[test]
    fn the_budget_holds_back_frames_and_a_due_keyframe_until_it_drained() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(WIDE, t0).unwrap();
        let idr = m.encode(&busy(0), t0).unwrap().unwrap();
        // The link turns thin just after a large keyframe: it drains at 100 kbit/s.
        m.bandwidth_estimate(100_000, None, t0);
        let idr_bits = idr.data.len() as u64 * 8;
        let drained_ms = (idr_bits - 10_000) / 100;
        assert!(drained_ms > 1_100, "{idr_bits} bits");
        assert!(m.encode(&busy(1), ms(t0, 33)).unwrap().is_none());
        assert_eq!(m.stats().frames_dropped, 1);
        // The interval has passed but the keyframe has not drained: the request waits.
        m.keyframe_requested();
        assert!(m.encode(&busy(2), ms(t0, 1_000)).unwrap().is_none());
        assert!(m
            .encode(&busy(3), ms(t0, drained_ms - 1))
            .unwrap()
            .is_none());
        let next = m.encode(&busy(4), ms(t0, drained_ms + 1)).unwrap().unwrap();
        assert!(next.keyframe);
        assert_eq!(m.stats().frames_dropped, 3);
    }

    #[test]
    fn a_session_on_a_thin_link_sends_no_more_than_its_budget() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(MEDIA, t0).unwrap();
        m.bandwidth_estimate(150_000, None, t0);
        let rate = m.budget.rate_bps();
        assert_eq!(
            rate,
            u64::from(MIN_BITRATE_BPS),
            "the floor: 150 kbit/s less audio"
        );
        let (mut sent_bits, mut largest, mut sent) = (0u64, 0u64, 0u64);
        // 10 s at 30 fps, a keyframe asked for every 300 ms.
        for i in 0..300u64 {
            if i % 9 == 0 {
                m.keyframe_requested();
            }
            let now = t0 + Duration::from_micros(i * 33_333);
            if let Some(e) = m.encode(&busy(i as u32), now).unwrap() {
                let bits = e.data.len() as u64 * 8;
                sent_bits += bits;
                largest = largest.max(bits);
                sent += 1;
            }
        }
        let allowance = rate / 10;
        assert!(
            sent_bits <= rate * 10 + allowance + largest,
            "{sent_bits} bits in 10 s at {rate} bit/s"
        );
        assert!(m.stats().frames_dropped > 0);
        assert_eq!(m.stats().frames_encoded, sent);
        assert!(m.stats().keyframes_encoded <= 11, "{:?}", m.stats());
    }

    #[test]
    fn a_low_estimate_halves_the_picture_with_hysteresis() {
        let t0 = Instant::now();
        let mut sender = at_level(WIDE, 2_000_000, t0);
        let mut receiver = MediaSession::new(WIDE, t0).unwrap();
        let mut p = TestPattern::new(320, 240);
        let mut sizes = Vec::new();
        for (i, estimate) in [2_000_000, 300_000, 300_000, 500_000, 700_000, 700_000]
            .into_iter()
            .enumerate()
        {
            // A second apart (the budget never holds a frame back here), the low ones
            // past the start's grace.
            let now = ms(t0, i as u64 * 1_000 + if i > 0 { 2_000 } else { 0 });
            sender.bandwidth_estimate(estimate, None, now);
            let enc = sender.encode(&p.frame(i as u32, 0), now).unwrap().unwrap();
            let d = receiver.decode(&enc.data, now, 0);
            let f = d.frame.expect("decoded");
            sizes.push((f.width, f.height, enc.keyframe));
        }
        assert_eq!(
            sizes,
            [
                (320, 240, true),
                (160, 120, true),
                (160, 120, false),
                (160, 120, false),
                (320, 240, true),
                (320, 240, false)
            ]
        );
        assert_eq!(receiver.stats().decode_errors, 0);
        // str0m's start value (300 kbit/s) at the start of a call is not a measurement:
        // the picture keeps its size through the grace.
        let mut fresh = MediaSession::new(WIDE, t0).unwrap();
        for i in 0..3 {
            let now = ms(t0, i * 1_000);
            fresh.bandwidth_estimate(300_000, None, now);
            let enc = fresh.encode(&p.frame(i as u32, 0), now).unwrap().unwrap();
            let f = receiver.decode(&enc.data, now, 0).frame.expect("decoded");
            assert_eq!((f.width, f.height), (320, 240), "at {i} s");
        }
    }

    /// A session whose working estimate is already `bps` (as after the rise from the
    /// start value), so a first report at `bps` or under is taken as it is.
    fn at_level(config: MediaConfig, bps: u64, t0: Instant) -> MediaSession {
        let mut m = MediaSession::new(config, t0).unwrap();
        m.stats.working_estimate_bps = Some(bps);
        m
    }

    fn working(m: &MediaSession) -> u64 {
        m.stats().working_estimate_bps.unwrap()
    }

    #[test]
    fn a_call_starts_at_the_start_value_and_rises_at_a_bounded_pace() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(FAST, t0).unwrap();
        // 300 kbit/s less audio, x 0.95 payload, x 0.8 / x 0.9.
        assert_eq!(m.stats().target_bitrate_bps, 182_400);
        assert_eq!(m.budget.rate_bps(), 205_200);
        // str0m's first probes read 4 Mbit/s: followed at 1.5x a second.
        m.bandwidth_estimate(4_000_000, Some(0.0), t0);
        assert_eq!(working(&m), 300_001);
        for t in (250..=1_000).step_by(250) {
            m.bandwidth_estimate(4_000_000, Some(0.0), ms(t0, t));
        }
        assert!((449_000..451_000).contains(&working(&m)), "{}", working(&m));
        // Falls are followed at once.
        m.bandwidth_estimate(200_000, Some(0.0), ms(t0, 1_250));
        assert_eq!(working(&m), 200_000);
        // Above the level of the last loss cut, 1.1x a second for 8 s after it.
        let mut m = at_level(FAST, 1_000_000, t0);
        m.bandwidth_estimate(1_000_000, Some(0.0), t0);
        m.bandwidth_estimate(1_000_000, Some(0.25), ms(t0, 250));
        assert_eq!(working(&m), 750_000);
        for t in (2_500..=4_500).step_by(250) {
            m.bandwidth_estimate(4_000_000, Some(0.0), ms(t0, t));
        }
        // 750k x 1.5 (a gap counts as 1 s at most), capped at the cut's 1M at 2.5 s; then
        // 1.1x a second: 1.21M at 4.5 s.
        let w = working(&m);
        assert!((1_200_000..1_215_000).contains(&w), "{w}");
        // The cut's level is forgotten after 8 s, but the level held lately still counts.
        for t in (8_250..=9_250).step_by(250) {
            m.bandwidth_estimate(4_000_000, Some(0.0), ms(t0, t));
        }
        let (before, after) = (w, working(&m));
        assert!(after as f64 <= before as f64 * 1.3, "{before} -> {after}");
        // Under it (a large drop, then a wide reading) the rise is fast again.
        m.bandwidth_estimate(300_000, Some(0.0), ms(t0, 9_500));
        for t in (9_750..=11_500).step_by(250) {
            m.bandwidth_estimate(4_000_000, Some(0.0), ms(t0, t));
        }
        let w = working(&m);
        assert!((670_000..680_000).contains(&w), "300k x 1.5^2: {w}");
    }

    #[test]
    fn str0m_pads_the_link_after_a_large_drop_while_it_is_clean() {
        let t0 = Instant::now();
        let mut m = at_level(FAST, 1_000_000, t0);
        let minimum = |m: &mut MediaSession| {
            m.poll_bwe_bitrates();
            m.told.unwrap().minimum_bps
        };
        for t in (0..10_000).step_by(250) {
            m.bandwidth_estimate(1_000_000, Some(0.0), ms(t0, t));
        }
        assert_eq!(
            minimum(&mut m),
            u64::from(MIN_BITRATE_BPS),
            "no drop: no padding"
        );
        m.bandwidth_estimate(300_000, Some(0.0), ms(t0, 10_000));
        assert_eq!(minimum(&mut m), 255_000, "0.85 of the working estimate");
        m.bandwidth_estimate(300_000, Some(0.05), ms(t0, 10_250));
        assert_eq!(
            minimum(&mut m),
            u64::from(MIN_BITRATE_BPS),
            "not while lossy"
        );
        m.bandwidth_estimate(300_000, Some(0.0), ms(t0, 10_500));
        assert_eq!(minimum(&mut m), 255_000);
    }

    #[test]
    fn a_frozen_estimate_resets_str0m_once_per_hold() {
        let t0 = Instant::now();
        let resets = |m: &mut MediaSession, from: u64, until: u64, est: &dyn Fn(u64) -> u64| {
            let mut at = Vec::new();
            for t in (from..until).step_by(250) {
                m.bandwidth_estimate(est(t), Some(0.0), ms(t0, t));
                if let Some(r) = m.poll_bwe_bitrates().and_then(|b| b.reset_bps) {
                    at.push((t, r));
                }
            }
            at
        };
        let mut m = at_level(FAST, 148_000, t0);
        // Held at exactly 148 kbit/s on a clean link: reset 5 s on, and 5 s after that.
        assert_eq!(
            resets(&mut m, 0, 11_000, &|_| 148_000),
            [(5_000, 148_000), (10_000, 148_000)]
        );
        assert_eq!(m.stats().bwe_resets, 2);
        // An estimate that moves is not held.
        let mut m = at_level(FAST, 148_000, t0);
        let moving = |t: u64| {
            if t.is_multiple_of(500) {
                148_000
            } else {
                160_000
            }
        };
        assert!(resets(&mut m, 0, 11_000, &moving).is_empty());
        // Nor one at the configured bitrate.
        let mut m = at_level(FAST, 2_000_000, t0);
        assert!(resets(&mut m, 0, 11_000, &|_| 2_000_000).is_empty());
    }

    /// A session sending up to 2 Mbit/s.
    const FAST: MediaConfig = MediaConfig {
        bitrate_bps: 2_000_000,
        ..MEDIA
    };

    #[test]
    fn heavy_loss_cuts_the_working_estimate_until_str0m_follows() {
        let t0 = Instant::now();
        let mut m = at_level(FAST, 1_000_000, t0);
        m.bandwidth_estimate(1_000_000, Some(0.0), t0);
        assert_eq!(working(&m), 1_000_000);
        // The link narrowed: a quarter of the packets lost, str0m still says 1 Mbit/s.
        m.bandwidth_estimate(1_000_000, Some(0.25), ms(t0, 250));
        assert_eq!(working(&m), 750_000, "cut to what got through");
        // The budget follows at once: (750k - 60k audio) x 0.95 payload x 0.9.
        assert_eq!(m.budget.rate_bps(), 589_950);
        assert_eq!(
            m.stats().target_bitrate_bps,
            524_400,
            "x 0.8 for the encoder"
        );
        m.bandwidth_estimate(1_000_000, Some(0.25), ms(t0, 500));
        assert_eq!(
            working(&m),
            750_000,
            "the same second's loss is not counted twice"
        );
        m.bandwidth_estimate(1_000_000, Some(0.25), ms(t0, 1_250));
        assert_eq!(working(&m), 562_500, "a second later: cut again");
        assert_eq!(m.stats().loss_cuts, 2);
        // Moderate loss holds the cap where it is.
        m.bandwidth_estimate(1_000_000, Some(0.05), ms(t0, 2_250));
        assert_eq!(working(&m), 562_500);
        // Two seconds after the last cut str0m has had the time to follow: its word again,
        // rising at most 1.5x a second and not past the level the last cut was made at
        // (750 kbit/s) for a while.
        m.bandwidth_estimate(1_000_000, Some(0.05), ms(t0, 3_250));
        assert_eq!(working(&m), 750_000);
        // A cap also ends once str0m's estimate comes under it.
        m.bandwidth_estimate(1_000_000, Some(0.25), ms(t0, 4_250));
        assert_eq!(working(&m), 562_500);
        m.bandwidth_estimate(500_000, Some(0.0), ms(t0, 4_500));
        assert_eq!(working(&m), 500_000);
        m.bandwidth_estimate(900_000, None, ms(t0, 4_750));
        let w = working(&m);
        assert!((553_000..554_000).contains(&w), "500k x 1.5^0.25: {w}");
        assert_eq!(m.stats().estimate_bps, Some(900_000));
        assert_eq!(m.stats().loss_cuts, 3);
    }

    /// When the session asked str0m to probe (lowered the desired bitrate), in ms from t0,
    /// reporting `estimate(ms)` and `loss(ms)` every 250 ms until `until` ms.
    fn probes(
        m: &mut MediaSession,
        t0: Instant,
        from: u64,
        until: u64,
        estimate: impl Fn(u64) -> u64,
        loss: impl Fn(u64) -> f32,
    ) -> Vec<u64> {
        let mut at = Vec::new();
        for t in (from..until).step_by(250) {
            m.bandwidth_estimate(estimate(t), Some(loss(t)), ms(t0, t));
            match m.poll_bwe_bitrates().map(|b| b.desired_bps) {
                Some(d) if d < 2_000_000 => {
                    assert_eq!(d, working(m), "lowered to the working estimate");
                    at.push(t);
                }
                Some(d) => assert_eq!(d, 2_000_000, "raised back"),
                None => {}
            }
        }
        at
    }

    #[test]
    fn probes_are_asked_below_the_configured_bitrate_more_rarely_until_a_large_drop() {
        let t0 = Instant::now();
        let mut m = at_level(FAST, 1_900_000, t0);
        assert_eq!(
            m.poll_bwe_bitrates(),
            None,
            "str0m starts at the configured"
        );
        // Near the configured bitrate: nothing to discover.
        assert!(probes(&mut m, t0, 0, 2_000, |_| 1_900_000, |_| 0.0).is_empty());
        // A 1.4 Mbit/s link: probes back off 3, 6, 12, 24, 24 s apart.
        let steady = probes(&mut m, t0, 2_000, 70_000, |_| 1_400_000, |_| 0.0);
        assert_eq!(steady, [2_000, 5_000, 11_000, 23_000, 47_000]);
        // Each probe lowers the desired bitrate for one report and raises it back.
        assert_eq!(m.stats().probes_asked, 5);
        // The link drops to 300 kbit/s at 70 s: probes 3 s apart (the next was due at 71 s
        // anyway) while the estimate is under half the 1.4 Mbit/s it held, none while loss
        // is over 2 %.
        let lossy = |t: u64| {
            if (77_000..80_250).contains(&t) {
                0.05
            } else {
                0.0
            }
        };
        let thin = probes(&mut m, t0, 70_000, 86_000, |_| 300_000, lossy);
        assert_eq!(thin, [71_000, 74_000, 80_250, 83_250]);
        // None within 3 s of a loss cut.
        let cut = probes(&mut m, t0, 86_000, 89_000, |_| 300_000, |_| 0.3);
        assert!(cut.is_empty());
        assert_eq!(m.stats().loss_cuts, 3);
        // Three seconds after the last cut (88 s), 3 s apart until 100 s, 30 s after the
        // level was last that high; then the link counts as thin for good and the waits
        // grow again.
        let later = probes(&mut m, t0, 89_000, 160_000, |_| 300_000, |_| 0.0);
        assert_eq!(later, [91_000, 94_000, 97_000, 103_000, 115_000, 139_000]);
    }

    #[test]
    fn halving_averages_four_samples() {
        let mut f = I420Frame::try_new(320, 240).unwrap();
        let y = f.y_mut();
        y.fill(0);
        y[0] = 10;
        y[1] = 20;
        y[320] = 30;
        y[321] = 41;
        f.u_mut().fill(7);
        let h = halve(&f).unwrap();
        assert_eq!((h.width, h.height), (160, 120));
        assert_eq!(h.y()[0], 25);
        assert_eq!(h.y()[1], 0);
        assert!(h.u().iter().all(|&u| u == 7));
        assert!(!can_halve(&h), "never below 160x120");
    }

    #[test]
    fn the_send_budget_drains_at_its_rate() {
        let t0 = Instant::now();
        // 800 kbit/s: 80 kbit of allowance, 100 bytes a millisecond.
        let mut b = SendBudget::new(800_000);
        assert!(b.may_send(t0));
        b.spent(50_000, t0); // 400 kbit
        assert!(!b.may_send(t0));
        assert_eq!(b.level_bits(ms(t0, 300)), 160_000);
        assert!(!b.may_send(ms(t0, 399)));
        assert!(b.may_send(ms(t0, 400)));
        assert_eq!(b.level_bits(ms(t0, 10_000)), 0, "never below empty");
        // Half the rate from 10 s on: 400 kbit drain in 1 s down to the 40 kbit allowance
        // after 900 ms.
        b.set_rate(400_000, ms(t0, 10_000));
        b.spent(50_000, ms(t0, 10_000));
        assert!(!b.may_send(ms(t0, 10_899)));
        assert!(b.may_send(ms(t0, 10_900)));
        // An instant earlier than the last one drains nothing (and does not panic).
        assert!(b.may_send(ms(t0, 5_000)));
    }

    #[test]
    fn the_send_budget_bounds_an_overshooting_encoder() {
        let t0 = Instant::now();
        let rate = 300_000u64;
        let mut b = SendBudget::new(rate);
        let (mut sent, mut largest) = (0u64, 0u64);
        // An encoder twice over its 10 kbit/frame target, with a 200 kbit keyframe every
        // second, offered 30 frames a second for 20 s.
        for i in 0..600u64 {
            let now = t0 + Duration::from_micros(i * 33_333);
            if b.may_send(now) {
                let bits = if i % 30 == 0 { 200_000 } else { 20_000 };
                b.spent(bits as usize / 8, now);
                sent += bits;
                largest = largest.max(bits);
            }
        }
        assert!(
            sent <= rate * 20 + rate / 10 + largest,
            "{sent} bits in 20 s"
        );
        assert!(sent >= rate * 20 * 8 / 10, "the budget is used: {sent}");
    }

    #[test]
    fn decodes_a_peer_stream_and_reads_the_stamp_latency() {
        let t0 = Instant::now();
        let mut sender = MediaSession::new(WIDE, t0).unwrap();
        let mut receiver = MediaSession::new(MEDIA, t0).unwrap();
        let mut p = TestPattern::new(320, 240);
        let base = monotonic_us();
        for i in 0..10u32 {
            let capture = base + i as u64 * 33_333;
            let now = t0 + Duration::from_millis(40 + i as u64 * 33);
            let enc = sender.encode(&p.frame(i, capture), now).unwrap().unwrap();
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
        let now = Instant::now();
        let mut m = at_level(MEDIA, 10_000_000, now);
        m.bandwidth_estimate(10_000_000, None, now);
        assert_eq!(m.stats().target_bitrate_bps, 300_000, "capped at --bitrate");
        // (10M - 60k) x 0.95 x 0.9.
        assert_eq!(m.budget.rate_bps(), 8_498_700, "the budget is not capped");
        m.bandwidth_estimate(200_000, None, now);
        assert_eq!(
            m.stats().target_bitrate_bps,
            106_400,
            "a share of the estimate, less the audio and the headers"
        );
        assert_eq!(m.budget.rate_bps(), 119_700);
        let now = ms(now, 1_000);
        m.bandwidth_estimate(205_000, None, now);
        assert_eq!(
            m.stats().target_bitrate_bps,
            106_400,
            "small changes ignored"
        );
        assert_eq!(m.budget.rate_bps(), 123_975, "but not by the budget");
        m.bandwidth_estimate(1_000, None, now);
        assert_eq!(m.budget.rate_bps(), u64::from(MIN_BITRATE_BPS), "floor");
        // 106.4k is within a tenth of the encoder's floor: not retuned; from higher up:
        let mut m = at_level(MEDIA, 1_000_000, now);
        m.bandwidth_estimate(1_000_000, None, now);
        m.bandwidth_estimate(1_000, None, now);
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
