//! The receiver's playout (jitter) buffer, sans-IO: packets go in with their RTP
//! timestamp and arrival instant, frames come out at a steady 20 ms cadence driven by the
//! loop's clock (or a test's virtual one).
//!
//! How it decides:
//! - *Where the sender's clock is*: each packet's arrival minus its timestamp is its
//!   "transit". The smallest transit over the last three seconds is the path's base delay;
//!   how far above it packets arrive (the 95th percentile) is the jitter.
//! - *When to play timestamp `ts`*: at `base + ts + target`, where the target delay is the
//!   jitter plus a margin, never under [`MIN_TARGET`], and at least the delay asked by
//!   lip-sync ([`PlayoutBuffer::set_min_delay`]).
//! - *Keeping to it*: frames come out exactly 20 ms apart, as a sound card takes them
//!   (and so a recording's timeline is the call's). When the schedule moves away from
//!   that cadence (the target changed, or the sender's clock drifts against ours), a
//!   frame is skipped once playout is [`MAX_LATE`] behind the schedule, or a concealed
//!   frame inserted once it is [`MAX_EARLY`] ahead (early is the side where packets are
//!   missed, so it is corrected sooner).
//! - *Missing packets*: a frame whose packet is not there when it is due is rebuilt from
//!   the next packet's in-band FEC if that one is already here, else concealed (Opus
//!   PLC), and after [`MAX_CONCEALED_RUN`] frames of that, silence. When nothing at all is
//!   here, the packets are late rather than lost: playout conceals without moving on, so
//!   they still play when they come (and the delay this adds is skipped away later); when
//!   packets resume after a gap, playout jumps to them once they are due. A packet
//!   arriving after its frame was played is counted late and dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::{FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};

/// The smallest playout delay above the path's base delay.
/// At least a frame and a bit: then the next packet is usually here when one is missing,
/// and its FEC can rebuild it.
pub const MIN_TARGET: Duration = Duration::from_millis(30);
/// The largest: beyond it, a call is not a conversation any more.
pub const MAX_TARGET: Duration = Duration::from_millis(1_000);
/// Added to the measured jitter: covers [`MAX_EARLY`].
const MARGIN: Duration = Duration::from_millis(10);
/// Transits kept to measure the base delay and the jitter (3 s of 20 ms packets): long
/// enough for a stable percentile, short enough that a spike (a call's busy first
/// second) stops holding the delay up soon after.
const HISTORY: usize = 150;
/// Playing this much earlier than the schedule risks packets not being here yet: a
/// concealed frame is inserted to wait.
pub const MAX_EARLY: Duration = Duration::from_millis(10);
/// Playing this much later than the schedule only adds delay: a frame is skipped.
pub const MAX_LATE: Duration = Duration::from_millis(30);
/// Consecutive concealed frames after which we play silence (PLC of a long gap is noise).
pub const MAX_CONCEALED_RUN: u32 = 5;
/// Packets held at most (2 s): more means the sender jumped in time; we start over.
const MAX_HELD: usize = 100;
/// A timestamp this far from the one to be played is a new timeline: start over.
const MAX_JUMP_TICKS: u64 = 10 * SAMPLE_RATE as u64;
/// If the loop stalled this long, the cadence restarts instead of catching up.
const MAX_BEHIND: Duration = Duration::from_secs(1);

const TICKS_PER_FRAME: u64 = FRAME_SAMPLES as u64;

/// What to play for one 20 ms frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutFrame {
    /// Decode this packet.
    Packet(Vec<u8>),
    /// The packet is missing: decode this (the next) packet's in-band FEC instead.
    Fec(Vec<u8>),
    /// Missing, with no FEC to hand: Opus concealment.
    Conceal,
    /// A long gap: silence.
    Silence,
}

/// The buffer's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayoutStats {
    pub packets_received: u64,
    /// Frames played from their own packet.
    pub frames_played: u64,
    /// Frames rebuilt from the next packet's FEC.
    pub frames_fec: u64,
    /// Frames concealed or silent because their packet was missing.
    pub frames_concealed: u64,
    /// Packets that came after their frame was played.
    pub packets_late: u64,
    /// Frames dropped to shorten the delay, and frames inserted to lengthen it.
    pub frames_skipped: u64,
    pub frames_inserted: u64,
    /// The current target delay above the base, and the jitter it was made from.
    pub target: Duration,
    pub jitter: Duration,
}

impl PlayoutStats {
    /// Concealed (including FEC-rebuilt and inserted) time, in ms.
    pub fn concealed_ms(&self) -> u64 {
        (self.frames_concealed + self.frames_fec + self.frames_inserted) * 20
    }
}

pub struct PlayoutBuffer {
    /// An instant all transits are measured from.
    epoch: Option<Instant>,
    held: BTreeMap<u64, Vec<u8>>,
    /// The last timestamp seen, extended past 32-bit wrap.
    last_ext: Option<u64>,
    /// Transits (µs) of the latest packets.
    transits: VecDeque<i64>,
    /// The next frame to play and when.
    next_ts: Option<u64>,
    next_play_at: Option<Instant>,
    concealed_run: u32,
    /// When the frame returned last was due (its place on the playout timeline).
    last_due: Option<Instant>,
    /// A frame has been played: earlier packets are late from now on.
    started: bool,
    min_delay: Duration,
    stats: PlayoutStats,
}

impl Default for PlayoutBuffer {
    fn default() -> Self {
        PlayoutBuffer::new()
    }
}

impl PlayoutBuffer {
    pub fn new() -> PlayoutBuffer {
        PlayoutBuffer {
            epoch: None,
            held: BTreeMap::new(),
            last_ext: None,
            transits: VecDeque::with_capacity(HISTORY),
            next_ts: None,
            next_play_at: None,
            concealed_run: 0,
            last_due: None,
            started: false,
            min_delay: Duration::ZERO,
            stats: PlayoutStats {
                target: MIN_TARGET,
                ..PlayoutStats::default()
            },
        }
    }

    pub fn stats(&self) -> &PlayoutStats {
        &self.stats
    }

    /// Lip-sync asks audio to wait at least this long above the base delay (the video is
    /// that much slower); zero to let the jitter alone decide.
    pub fn set_min_delay(&mut self, delay: Duration) {
        self.min_delay = delay.min(MAX_TARGET);
    }

    /// When the next frame is due (none before the first packet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_play_at
    }

    /// When the frame [`pop`](Self::pop) returned last was due: where it sits on the
    /// playout timeline (the loop may have popped it a little later).
    pub fn last_due(&self) -> Option<Instant> {
        self.last_due
    }

    /// The RTP timestamp (32-bit) of the frame [`pop`](Self::pop) returned last.
    pub fn last_played_ts(&self) -> Option<u32> {
        self.next_ts.map(|t| t.wrapping_sub(TICKS_PER_FRAME) as u32)
    }

    fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.last_ext {
            None => ts as u64 + (1 << 32),
            Some(last) => {
                let delta = ts.wrapping_sub(last as u32) as i32 as i64;
                (last as i64 + delta).max(0) as u64
            }
        };
        if self.last_ext.is_none_or(|l| ext > l) {
            self.last_ext = Some(ext);
        }
        ext
    }

    fn transit_us(&mut self, ext: u64, arrival: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(arrival);
        let arrival_us = arrival.saturating_duration_since(epoch).as_micros() as i64
            - epoch.saturating_duration_since(arrival).as_micros() as i64;
        arrival_us - (ext * 1_000_000 / SAMPLE_RATE as u64) as i64
    }

    /// A received packet: its RTP timestamp (48 kHz), its payload, when it arrived.
    pub fn insert(&mut self, ts: u32, payload: Vec<u8>, arrival: Instant) {
        self.stats.packets_received += 1;
        let ext = self.extend(ts);
        if self
            .next_ts
            .is_some_and(|n| ext.abs_diff(n) > MAX_JUMP_TICKS)
        {
            log::info!("audio: the sender's timeline jumped; playout starts over");
            self.restart();
            return self.insert_fresh(ts, payload, arrival);
        }
        let transit = self.transit_us(ext, arrival);
        if self.transits.len() == HISTORY {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        self.update_target();
        match self.next_ts {
            None => {
                self.next_ts = Some(ext);
                self.next_play_at = Some(arrival + self.stats.target);
            }
            // Reordered before playout began: start from the earlier one.
            Some(n) if ext < n && !self.started && n - ext <= 4 * TICKS_PER_FRAME => {
                self.next_ts = Some(ext);
            }
            Some(n) if ext < n => {
                self.stats.packets_late += 1;
                return;
            }
            Some(_) => {}
        }
        self.held.insert(ext, payload);
        while self.held.len() > MAX_HELD {
            self.held.pop_first();
        }
    }

    fn insert_fresh(&mut self, ts: u32, payload: Vec<u8>, arrival: Instant) {
        self.stats.packets_received -= 1;
        self.insert(ts, payload, arrival)
    }

    fn restart(&mut self) {
        self.epoch = None;
        self.held.clear();
        self.last_ext = None;
        self.transits.clear();
        self.next_ts = None;
        self.next_play_at = None;
        self.concealed_run = 0;
        self.started = false;
    }

    fn base_transit(&self) -> Option<i64> {
        self.transits.iter().copied().min()
    }

    fn update_target(&mut self) {
        let Some(base) = self.base_transit() else {
            return;
        };
        let mut excess: Vec<i64> = self.transits.iter().map(|t| t - base).collect();
        excess.sort_unstable();
        let p98 = excess[(excess.len() * 98 / 100).min(excess.len() - 1)];
        let jitter = Duration::from_micros(p98.max(0) as u64);
        self.stats.jitter = jitter;
        self.stats.target = (jitter + MARGIN)
            .max(MIN_TARGET)
            .max(self.min_delay)
            .min(MAX_TARGET);
    }

    /// When `ext` should be played on the current schedule.
    fn scheduled(&self, ext: u64) -> Option<Instant> {
        let epoch = self.epoch?;
        let at_us = self.base_transit()?
            + (ext * 1_000_000 / SAMPLE_RATE as u64) as i64
            + self.stats.target.as_micros() as i64;
        Some(if at_us >= 0 {
            epoch + Duration::from_micros(at_us as u64)
        } else {
            epoch
                .checked_sub(Duration::from_micros(at_us.unsigned_abs()))
                .unwrap_or(epoch)
        })
    }

    /// The frame due at `now`, if one is: call until `None`.
    pub fn pop(&mut self, now: Instant) -> Option<PlayoutFrame> {
        let due = self.next_play_at.filter(|t| *t <= now)?;
        let mut next = self.next_ts?;
        self.started = true;
        if now.saturating_duration_since(due) > MAX_BEHIND {
            log::info!("audio: playout fell behind by over a second; resuming now");
            self.next_play_at = Some(now);
        }
        let due = self.next_play_at.unwrap_or(due);
        self.last_due = Some(due);
        if let Some(at) = self.scheduled(next) {
            let late_by = due.saturating_duration_since(at);
            let early_by = at.saturating_duration_since(due);
            if late_by > MAX_LATE && self.held.contains_key(&(next + TICKS_PER_FRAME)) {
                self.held.remove(&next);
                next += TICKS_PER_FRAME;
                self.stats.frames_skipped += 1;
            } else if early_by > MAX_EARLY {
                self.stats.frames_inserted += 1;
                self.next_play_at = Some(due + FRAME_DURATION);
                return Some(self.concealment());
            }
        }
        self.next_play_at = Some(due + FRAME_DURATION);
        // Nothing here at all: the packets are late (a stalled sender or path), not lost.
        // Wait for them without moving on, so they play when they come.
        if self.held.is_empty() {
            self.stats.frames_concealed += 1;
            return Some(self.concealment());
        }
        // A gap before what is here (the sender paused, or we waited above): resume at
        // the first packet once its time has come.
        if let Some(first) = self.held.first_key_value().map(|(k, _)| *k) {
            let due_for_it = self
                .scheduled(first)
                .is_some_and(|at| at <= due + MAX_EARLY);
            if first > next + TICKS_PER_FRAME && due_for_it {
                next = first;
            }
        }
        self.next_ts = Some(next + TICKS_PER_FRAME);
        if let Some(p) = self.held.remove(&next) {
            self.concealed_run = 0;
            self.stats.frames_played += 1;
            return Some(PlayoutFrame::Packet(p));
        }
        if let Some(p) = self.held.get(&(next + TICKS_PER_FRAME)) {
            self.stats.frames_fec += 1;
            self.concealed_run = 0;
            return Some(PlayoutFrame::Fec(p.clone()));
        }
        self.stats.frames_concealed += 1;
        Some(self.concealment())
    }

    fn concealment(&mut self) -> PlayoutFrame {
        self.concealed_run += 1;
        if self.concealed_run > MAX_CONCEALED_RUN {
            PlayoutFrame::Silence
        } else {
            PlayoutFrame::Conceal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender of 20 ms packets on a virtual clock, and the buffer that receives them.
    struct Link {
        t0: Instant,
        buf: PlayoutBuffer,
        played: Vec<PlayoutFrame>,
        /// Arrival instants of the frames played (for the delay), by pop time.
        delays: Vec<Duration>,
    }

    fn payload(frame: u64) -> Vec<u8> {
        frame.to_le_bytes().to_vec()
    }

    impl Link {
        fn new() -> Link {
            Link {
                t0: Instant::now(),
                buf: PlayoutBuffer::new(),
                played: Vec::new(),
                delays: Vec::new(),
            }
        }

        fn at(&self, us: u64) -> Instant {
            self.t0 + Duration::from_micros(us)
        }

        /// Advances the virtual clock to `us`, playing everything due on the way (at the
        /// instants it is due, as the loop's timer would).
        fn run_to(&mut self, us: u64) {
            let end = self.at(us);
            while let Some(t) = self.buf.poll_timeout().filter(|t| *t <= end) {
                while let Some(f) = self.buf.pop(t) {
                    if let PlayoutFrame::Packet(p) = &f {
                        let frame = u64::from_le_bytes(p[..8].try_into().unwrap());
                        let sent = self.at(frame * 20_000);
                        self.delays.push(t - sent);
                    }
                    self.played.push(f);
                }
            }
        }

        fn send(&mut self, frame: u64, arrive_us: u64) {
            self.run_to(arrive_us);
            let ts = (1_000 + frame * 960) as u32;
            let at = self.at(arrive_us);
            self.buf.insert(ts, payload(frame), at);
        }

        /// Frames not played from their packet, up to the last one that was (after the
        /// stream ends, everything is concealment).
        fn concealed_before_end(&self) -> usize {
            let end = self
                .played
                .iter()
                .rposition(|f| matches!(f, PlayoutFrame::Packet(_)))
                .unwrap_or(0);
            self.played[..end]
                .iter()
                .filter(|f| !matches!(f, PlayoutFrame::Packet(_)))
                .count()
        }

        fn played_frames(&self) -> Vec<u64> {
            self.played
                .iter()
                .filter_map(|f| match f {
                    PlayoutFrame::Packet(p) => Some(u64::from_le_bytes(p[..8].try_into().unwrap())),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_steady_stream_plays_every_frame_in_order_at_the_minimum_delay() {
        let mut l = Link::new();
        for f in 0..200 {
            l.send(f, f * 20_000 + 5_000);
        }
        l.run_to(200 * 20_000 + 100_000);
        assert_eq!(l.played_frames(), (0..200).collect::<Vec<_>>());
        let s = l.buf.stats();
        assert_eq!(l.concealed_before_end(), 0, "{s:?}");
        assert_eq!(s.target, MIN_TARGET);
        // 5 ms of transit + the 30 ms target.
        assert!(
            l.delays.iter().all(|d| d.as_millis() == 35),
            "{:?}",
            &l.delays[..5]
        );
    }

    #[test]
    fn reordered_packets_are_played_in_order() {
        let mut l = Link::new();
        for pair in 0..50u64 {
            let (a, b) = (pair * 2, pair * 2 + 1);
            // b arrives 2 ms before a.
            l.send(b, b * 20_000 + 3_000);
            l.send(a, b * 20_000 + 5_000);
        }
        l.run_to(2_500_000);
        assert_eq!(l.played_frames(), (0..100).collect::<Vec<_>>());
        assert_eq!(l.buf.stats().packets_late, 0);
        assert_eq!(l.concealed_before_end(), 0);
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_the_next_ones_fec_or_concealed() {
        let mut l = Link::new();
        for f in 0..100u64 {
            if f == 30 || f == 60 || f == 61 {
                continue;
            }
            l.send(f, f * 20_000 + 2_000);
        }
        // The last frame is due at 99 x 20 + 2 + 30 ms (+ 20 ms waited at 60); after it,
        // only concealment.
        l.run_to(2_032_000);
        let at = |i: usize| &l.played[i];
        let idx = |frame: u64| {
            l.played
                .iter()
                .position(|f| matches!(f, PlayoutFrame::Packet(p) if p[..8] == payload(frame)[..]))
                .unwrap()
        };
        assert_eq!(at(idx(29) + 1), &PlayoutFrame::Fec(payload(31)));
        // Two in a row: when 60 is due nothing newer is here yet, so playout waits a frame
        // (the packets may be late), then conceals 60 and rebuilds 61 from 62's FEC.
        assert_eq!(at(idx(59) + 1), &PlayoutFrame::Conceal);
        assert_eq!(at(idx(59) + 2), &PlayoutFrame::Conceal);
        assert_eq!(at(idx(59) + 3), &PlayoutFrame::Fec(payload(62)));
        let s = l.buf.stats();
        assert_eq!((s.frames_fec, s.frames_concealed), (2, 2));
        assert_eq!(s.frames_played, 97);
    }

    #[test]
    fn jitter_raises_the_target_so_late_packets_stay_rare() {
        let mut l = Link::new();
        let mut rng = 12345u64;
        for f in 0..500u64 {
            // Up to 40 ms of jitter, uniform.
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = (rng >> 33) % 40_000;
            l.send(f, f * 20_000 + 5_000 + jitter);
        }
        l.run_to(500 * 20_000 + 200_000);
        let s = l.buf.stats().clone();
        assert!(s.jitter >= Duration::from_millis(30), "{s:?}");
        assert!(s.target >= s.jitter + MARGIN, "{s:?}");
        // While the target grows at the start, a few frames miss; after that, none.
        assert!(s.packets_late < 10, "{s:?}");
        let late_after_warmup = l.played[100..400]
            .iter()
            .filter(|f| !matches!(f, PlayoutFrame::Packet(_)))
            .count();
        assert!(
            late_after_warmup <= 3,
            "{late_after_warmup} of 300 concealed after warm-up; {s:?}"
        );
    }

    /// The sender stalls for 100 ms and then sends what it owed in a burst: playout waits
    /// for them instead of writing them off as lost, plays some of them, and skips the
    /// rest to get back to its delay.
    #[test]
    fn a_burst_after_a_stall_is_played_and_the_delay_recovers() {
        let mut l = Link::new();
        for f in 0..300u64 {
            let arrive = if (100..105).contains(&f) {
                105 * 20_000 + 2_000
            } else {
                f * 20_000 + 2_000
            };
            l.send(f, arrive);
        }
        l.run_to(299 * 20_000 + 32_000);
        let s = l.buf.stats().clone();
        assert_eq!(s.packets_late, 0, "{s:?}");
        let played = l.played_frames();
        let heard = (100..105).filter(|f| played.contains(f)).count();
        assert!(heard >= 2, "{heard} of the stalled frames played: {s:?}");
        assert!(
            s.frames_skipped >= 1,
            "the stall's delay is skipped away: {s:?}"
        );
        let last = *l.delays.last().unwrap();
        assert!(last <= Duration::from_millis(65), "{last:?}");
    }

    /// The sender pauses for two seconds (its timestamps jump with the clock): playout
    /// conceals, then resumes on schedule, not two seconds behind.
    #[test]
    fn a_pause_of_the_sender_resumes_on_schedule() {
        let mut l = Link::new();
        for f in (0..100u64).chain(200..300) {
            l.send(f, f * 20_000 + 2_000);
        }
        l.run_to(299 * 20_000 + 32_000);
        let played = l.played_frames();
        assert!(played.contains(&299), "{:?}", l.buf.stats());
        let last = *l.delays.last().unwrap();
        assert!(last <= Duration::from_millis(45), "{last:?}");
    }

    #[test]
    fn a_late_packet_is_dropped_and_counted() {
        let mut l = Link::new();
        for f in 0..50u64 {
            let arrive = if f == 20 {
                20 * 20_000 + 200_000
            } else {
                f * 20_000 + 1_000
            };
            if f != 20 {
                l.send(f, arrive);
            }
        }
        l.send(20, 20 * 20_000 + 200_000);
        l.run_to(1_500_000);
        assert_eq!(l.buf.stats().packets_late, 1);
        assert!(!l.played_frames().contains(&20));
    }

    /// The sender's clock runs fast or slow against ours: the buffer follows it with a
    /// frame skipped or inserted now and then (10 minutes at 100 ppm is 60 ms: three
    /// frames), never concealing a packet that came.
    #[test]
    fn clock_drift_of_100_ppm_either_way_is_followed_smoothly() {
        for ppm in [100i64, -100] {
            let mut l = Link::new();
            let frames = 30_000u64; // 10 minutes
            for f in 0..frames {
                let sent_us = f * 20_000;
                // Our clock reads the sender's 20 ms as 20 ms * (1 + ppm).
                let arrive = (sent_us as i64 + sent_us as i64 * ppm / 1_000_000) as u64 + 5_000;
                l.send(f, arrive);
            }
            l.run_to(frames * 20_000 + 500_000);
            let s = l.buf.stats();
            let adjustments = s.frames_skipped + s.frames_inserted;
            assert!((1..=4).contains(&adjustments), "{ppm} ppm: {s:?}");
            assert_eq!(
                l.played_frames().len() as u64,
                frames - s.frames_skipped,
                "{ppm} ppm: {s:?}"
            );
            assert_eq!(
                l.concealed_before_end() as u64,
                s.frames_inserted,
                "{ppm} ppm: {s:?}"
            );
        }
    }

    #[test]
    fn lip_sync_can_ask_for_more_delay_and_gets_it_without_a_gap_of_silence() {
        let mut l = Link::new();
        for f in 0..100u64 {
            l.send(f, f * 20_000 + 5_000);
        }
        l.buf.set_min_delay(Duration::from_millis(80));
        for f in 100..300u64 {
            l.send(f, f * 20_000 + 5_000);
        }
        l.run_to(300 * 20_000 + 200_000);
        let s = l.buf.stats().clone();
        assert_eq!(s.target, Duration::from_millis(80));
        // Two frames inserted to grow from 30 to 80 ms (the last 10 ms is within
        // MAX_EARLY); nothing lost.
        assert_eq!(s.frames_inserted, 2, "{s:?}");
        assert_eq!(l.played_frames().len(), 300);
        // 5 ms transit + 80 ms, give or take how early playout may run.
        let last = *l.delays.last().unwrap();
        assert!((75..=85).contains(&last.as_millis()), "{last:?}");
    }

    #[test]
    fn a_long_gap_turns_to_silence_and_a_timestamp_jump_starts_over() {
        let mut l = Link::new();
        for f in 0..20u64 {
            l.send(f, f * 20_000 + 1_000);
        }
        l.run_to(1_000_000);
        let tail = &l.played[l.played.len() - 10..];
        assert!(tail.iter().all(|f| *f == PlayoutFrame::Silence), "{tail:?}");
        let before = l.buf.stats().packets_received;
        let at = l.at(1_000_000);
        l.buf.insert(3_000_000_000, payload(999), at);
        assert_eq!(l.buf.stats().packets_received, before + 1);
        assert_eq!(l.buf.poll_timeout(), Some(at + MIN_TARGET));
    }
}
