//! The audio of one call apart from the transport and the devices: the Opus encoder and
//! decoder, the microphone's mute, the playout buffer, and lip-sync. No str0m and no
//! clock: the loop hands in what the [`Conductor`](super::conductor::Conductor) received
//! and every instant.
//!
//! Lip-sync: every received packet and every shown video frame comes with its capture
//! instant on the *sender's* wall clock (from the RTCP sender reports, see the conductor).
//! Against our wall clock that gives each stream's delay: video's from capture to shown,
//! audio's from capture to arrival (transit) and to played. Audio waits in the playout
//! buffer at least as long as video is slower than its transit, so the two are played
//! together; the offset measured at playout (audio delay minus video delay, positive when
//! the sound is late) is what the STATS line reports. The two machines' clocks need not
//! agree: their difference is in both delays and cancels.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::media::audio::{
    frame_level, AudioError, OpusDecoder, OpusEncoder, PcmFrame, PlayoutBuffer, PlayoutFrame,
    DEFAULT_OPUS_BITRATE, FRAME_SAMPLES, SAMPLE_RATE,
};

/// Video delays kept for the median (one second of frames at 30 fps).
const VIDEO_DELAYS: usize = 30;
/// Audio transits kept for the minimum (5 s of packets).
const AUDIO_TRANSITS: usize = 250;
/// Offsets averaged for the figure reported (one second of frames).
const OFFSETS: usize = 50;
/// A delay outside this is two unrelated clocks (a sender report not yet in): ignored.
const MAX_PLAUSIBLE_DELAY_US: i64 = 10_000_000;

/// A received audio packet, as the conductor hands it over.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    /// The RTP timestamp (48 kHz).
    pub rtp_time: u32,
    pub payload: Vec<u8>,
    /// When it was captured, on the sender's wall clock; none before a sender report.
    pub sender_clock: Option<SystemTime>,
}

/// The audio counters behind the STATS line and the overlay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioSample {
    pub packets_received: u64,
    /// Frames played without their packet (lost or late).
    pub lost: u64,
    pub concealed_ms: u64,
    /// How long packets wait to be played (the buffer's target).
    pub playout_ms: u64,
    /// Audio delay minus video delay at playout, ms (positive: the sound is late).
    pub av_offset_ms: Option<i64>,
    /// The microphone's and the peer's levels, 0.0 to 1.0.
    pub local_level: f32,
    pub remote_level: f32,
    pub muted: bool,
    pub frames_encoded: u64,
}

pub struct AudioSession {
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    playout: PlayoutBuffer,
    muted: bool,
    /// Our wall clock: an instant and the system time it was.
    clock_base: (Instant, SystemTime),
    /// The latest received packet's timestamp and sender capture time.
    audio_reference: Option<(u32, SystemTime)>,
    audio_transits: VecDeque<i64>,
    video_delays: VecDeque<i64>,
    offsets: VecDeque<i64>,
    local_level: f32,
    remote_level: f32,
    frames_encoded: u64,
    frames_played: u64,
    decode_errors: u64,
}

fn micros_between(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

fn median(v: &VecDeque<i64>) -> Option<i64> {
    let mut s: Vec<i64> = v.iter().copied().collect();
    s.sort_unstable();
    s.get(s.len() / 2).copied()
}

impl AudioSession {
    /// `clock_base` ties the loop's instants to the wall clock (read once by the loop).
    pub fn new(clock_base: (Instant, SystemTime)) -> Result<AudioSession, AudioError> {
        Ok(AudioSession {
            encoder: OpusEncoder::new(DEFAULT_OPUS_BITRATE)?,
            decoder: OpusDecoder::new()?,
            playout: PlayoutBuffer::new(),
            muted: false,
            clock_base,
            audio_reference: None,
            audio_transits: VecDeque::with_capacity(AUDIO_TRANSITS),
            video_delays: VecDeque::with_capacity(VIDEO_DELAYS),
            offsets: VecDeque::with_capacity(OFFSETS),
            local_level: 0.0,
            remote_level: 0.0,
            frames_encoded: 0,
            frames_played: 0,
            decode_errors: 0,
        })
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let (i, s) = self.clock_base;
        match at.checked_duration_since(i) {
            Some(d) => s + d,
            None => s - i.duration_since(at),
        }
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Encodes a captured frame (silence while muted: the peer hears nothing, and the
    /// RTP clock runs on).
    pub fn encode(&mut self, pcm: &PcmFrame) -> Result<Vec<u8>, AudioError> {
        let silent = [0i16; FRAME_SAMPLES];
        let pcm = if self.muted { &silent } else { pcm };
        self.local_level = frame_level(pcm);
        self.frames_encoded += 1;
        self.encoder.encode(pcm)
    }

    /// A packet from the peer, arrived at `now`.
    pub fn receive(&mut self, packet: AudioPacket, now: Instant) {
        if let Some(sent) = packet.sender_clock {
            let transit = micros_between(self.wall(now), sent);
            if transit.abs() < MAX_PLAUSIBLE_DELAY_US {
                if self.audio_transits.len() == AUDIO_TRANSITS {
                    self.audio_transits.pop_front();
                }
                self.audio_transits.push_back(transit);
            }
            self.audio_reference = Some((packet.rtp_time, sent));
        }
        self.playout.insert(packet.rtp_time, packet.payload, now);
        self.sync();
    }

    /// A video frame captured at `sender_clock` (the sender's wall clock) was shown at
    /// `now`.
    pub fn video_shown(&mut self, sender_clock: SystemTime, now: Instant) {
        let delay = micros_between(self.wall(now), sender_clock);
        if delay.abs() >= MAX_PLAUSIBLE_DELAY_US {
            return;
        }
        if self.video_delays.len() == VIDEO_DELAYS {
            self.video_delays.pop_front();
        }
        self.video_delays.push_back(delay);
        self.sync();
    }

    /// Audio waits in the buffer at least as long as video is slower than audio's transit.
    fn sync(&mut self) {
        let (Some(video), Some(transit)) = (
            median(&self.video_delays),
            self.audio_transits.iter().copied().min(),
        ) else {
            return;
        };
        let wait = (video - transit).max(0) as u64;
        self.playout.set_min_delay(Duration::from_micros(wait));
    }

    /// When the next frame must be played.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.playout.poll_timeout()
    }

    /// The next frame to play, if one is due at `now`: call until `None`.
    pub fn play(&mut self, now: Instant) -> Option<PcmFrame> {
        let frame = self.playout.pop(now)?;
        self.frames_played += 1;
        let mut pcm = [0i16; FRAME_SAMPLES];
        let decoded = match &frame {
            PlayoutFrame::Packet(p) => self.decoder.decode(p, &mut pcm),
            PlayoutFrame::Fec(next) => self.decoder.decode_fec(next, &mut pcm),
            PlayoutFrame::Conceal => self.decoder.conceal(&mut pcm),
            PlayoutFrame::Silence => Ok(()),
        };
        if let Err(e) = decoded {
            self.decode_errors += 1;
            if self.decode_errors == 1 {
                log::warn!("audio: {e} (further failures at debug)");
            } else {
                log::debug!("audio: {e}");
            }
            pcm = [0; FRAME_SAMPLES];
        }
        self.remote_level = frame_level(&pcm);
        if matches!(frame, PlayoutFrame::Packet(_)) {
            let due = self.playout.last_due().unwrap_or(now);
            self.measure_offset(due);
        }
        Some(pcm)
    }

    /// The offset of the frame just played (at `now` on the playout timeline) against the
    /// video's delay.
    fn measure_offset(&mut self, now: Instant) {
        let (Some(ts), Some((ref_ts, ref_clock)), Some(video)) = (
            self.playout.last_played_ts(),
            self.audio_reference,
            median(&self.video_delays),
        ) else {
            return;
        };
        let ticks = ts.wrapping_sub(ref_ts) as i32 as i64;
        let captured_us = ticks * 1_000_000 / SAMPLE_RATE as i64;
        let audio_delay = micros_between(self.wall(now), ref_clock) - captured_us;
        if audio_delay.abs() >= MAX_PLAUSIBLE_DELAY_US {
            return;
        }
        if self.offsets.len() == OFFSETS {
            self.offsets.pop_front();
        }
        self.offsets.push_back(audio_delay - video);
    }

    /// Frames played so far in the call (the first is when playout started).
    pub fn frames_played(&self) -> u64 {
        self.frames_played
    }

    pub fn sample(&self) -> AudioSample {
        let s = self.playout.stats();
        let av = (!self.offsets.is_empty())
            .then(|| self.offsets.iter().sum::<i64>() / self.offsets.len() as i64 / 1000);
        AudioSample {
            packets_received: s.packets_received,
            lost: s.frames_concealed + s.frames_fec,
            concealed_ms: s.concealed_ms(),
            playout_ms: s.target.as_millis() as u64,
            av_offset_ms: av,
            local_level: self.local_level,
            remote_level: self.remote_level,
            muted: self.muted,
            frames_encoded: self.frames_encoded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::ToneSource;

    /// Two sessions on a virtual clock: A's tone reaches B with 5 ms of transit, and B's
    /// video arrives `video_ms` after capture. B's offset follows.
    fn offset_with_video_delay(video_ms: u64) -> (AudioSample, Vec<PcmFrame>) {
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = AudioSession::new((t0, wall0)).unwrap();
        let mut b = AudioSession::new((t0, wall0)).unwrap();
        let mut tone = ToneSource::new();
        let mut played = Vec::new();
        for f in 0..250u64 {
            let captured = t0 + Duration::from_millis(f * 20);
            let payload = a.encode(&tone.frame(f * 20_000)).unwrap();
            let arrival = captured + Duration::from_millis(5);
            while let Some(pcm) = b
                .poll_timeout()
                .filter(|t| *t <= arrival)
                .and_then(|t| b.play(t))
            {
                played.push(pcm);
            }
            b.receive(
                AudioPacket {
                    rtp_time: (f * 960) as u32,
                    payload,
                    sender_clock: Some(wall0 + Duration::from_millis(f * 20)),
                },
                arrival,
            );
            if f % 2 == 0 {
                let shown = captured + Duration::from_millis(video_ms);
                b.video_shown(wall0 + Duration::from_millis(f * 20), shown);
            }
        }
        (b.sample(), played)
    }

    #[test]
    fn with_fast_video_the_offset_is_the_audio_buffers_delay() {
        let (s, played) = offset_with_video_delay(10);
        // Audio: 5 ms transit + 30 ms buffer; video 10 ms: sound 25 ms late.
        assert_eq!(s.av_offset_ms, Some(25), "{s:?}");
        assert_eq!(s.playout_ms, 30);
        assert_eq!(s.concealed_ms, 0);
        // The bursts came through: those at 1, 2, 3 and 4 s (the one at 0 s has no quiet
        // before it to be told from).
        let all: Vec<i16> = played.iter().flatten().copied().collect();
        assert_eq!(crate::media::audio::burst_onsets(&all).len(), 4);
    }

    #[test]
    fn slow_video_holds_the_audio_back_to_meet_it() {
        let (s, _) = offset_with_video_delay(150);
        // The buffer waits 150 - 5 ms; audio and video then play together, give or take
        // the frame cadence's slack (MAX_EARLY).
        assert_eq!(s.playout_ms, 145, "{s:?}");
        assert!(s.av_offset_ms.is_some_and(|o| o.abs() <= 10), "{s:?}");
    }

    #[test]
    fn muting_sends_silence() {
        let mut a = AudioSession::new((Instant::now(), SystemTime::now())).unwrap();
        let mut tone = ToneSource::new();
        a.encode(&tone.frame(0)).unwrap();
        assert!(a.sample().local_level > 0.1);
        a.set_muted(true);
        a.encode(&tone.frame(0)).unwrap();
        assert_eq!(a.sample().local_level, 0.0);
        assert!(a.sample().muted);
    }
}
