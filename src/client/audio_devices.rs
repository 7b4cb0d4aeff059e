//! The client's audio devices as the loop drives them: the local sound (the `tone`, a
//! looped WAV file, or nothing, paced by the loop's timer at one 20 ms frame per tick; or
//! an ALSA capture device, read when its descriptors are ready and on that timer), and
//! where received sound goes (an ALSA playback device, the `--audio-record` WAV file).
//! They do IO, so they live beside the loop, not in the state machines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::Registry;

use super::audio_alsa::AlsaPcm;
use crate::reactor::{AUDIO_CAPTURE_TOKEN, AUDIO_PLAYBACK_TOKEN};

use crate::media::audio::{
    read_wav, AudioError, PcmFrame, ToneSource, WavWriter, FRAME_DURATION, FRAME_SAMPLES,
};

/// `--audio-source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSourceSpec {
    /// ALSA's capture device if one opens, else the tone (with one warning).
    Auto,
    None,
    Tone,
    Wav(PathBuf),
    /// An ALSA capture device (`alsa` alone is `default`).
    Alsa(String),
}

/// `--audio-sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSinkSpec {
    /// ALSA's playback device if one opens, else none (with one warning).
    Auto,
    None,
    Alsa(String),
}

impl AudioSourceSpec {
    pub fn parse(s: &str) -> Result<AudioSourceSpec, String> {
        match s {
            "none" => Ok(AudioSourceSpec::None),
            "tone" => Ok(AudioSourceSpec::Tone),
            "alsa" => Ok(AudioSourceSpec::Alsa("default".into())),
            _ if s.starts_with("alsa:") && s.len() > 5 => Ok(AudioSourceSpec::Alsa(s[5..].into())),
            _ if s.to_ascii_lowercase().ends_with(".wav") => Ok(AudioSourceSpec::Wav(s.into())),
            _ => Err(format!(
                "--audio-source {s:?}: expected none, tone, alsa, alsa:DEVICE or a .wav file"
            )),
        }
    }
}

impl AudioSinkSpec {
    pub fn parse(s: &str) -> Result<AudioSinkSpec, String> {
        match s {
            "none" => Ok(AudioSinkSpec::None),
            "alsa" => Ok(AudioSinkSpec::Alsa("default".into())),
            _ if s.starts_with("alsa:") && s.len() > 5 => Ok(AudioSinkSpec::Alsa(s[5..].into())),
            _ => Err(format!(
                "--audio-sink {s:?}: expected alsa, alsa:DEVICE or none"
            )),
        }
    }
}

/// What the command line says about audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub source: AudioSourceSpec,
    pub sink: AudioSinkSpec,
    pub record: Option<PathBuf>,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            source: AudioSourceSpec::Auto,
            sink: AudioSinkSpec::Auto,
            record: None,
        }
    }
}

enum Sound {
    None,
    Tone(ToneSource),
    /// A file's samples, looped.
    Wav {
        samples: Vec<i16>,
        at: usize,
        name: String,
    },
    /// A capture device; `pending` holds samples short of a whole frame.
    Alsa {
        pcm: AlsaPcm,
        pending: Vec<i16>,
        registered: bool,
    },
}

impl fmt::Display for Sound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sound::None => f.write_str("none"),
            Sound::Tone(_) => f.write_str("tone (a 1 kHz burst each second)"),
            Sound::Wav { samples, name, .. } => {
                write!(
                    f,
                    "{name} ({:.1} s, looped)",
                    samples.len() as f64 / 48_000.0
                )
            }
            Sound::Alsa { pcm, .. } => write!(f, "alsa:{}", pcm.device()),
        }
    }
}

/// One captured frame: its samples, its RTP time (48 kHz) and its capture instant.
pub struct CapturedAudio {
    pub pcm: PcmFrame,
    pub rtp_ticks: u64,
    pub captured: Instant,
}

/// The local sound of a call: runs only while a call wants it, one frame per 20 ms tick.
pub struct LocalAudio {
    sound: Sound,
    /// The first frame's instant and capture-clock time; frame `n` is 20 ms x `n` later.
    started: Option<(Instant, u64)>,
    frames: u64,
}

/// If the loop stalled longer than this, the source skips ahead instead of bursting.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

impl LocalAudio {
    /// Opens the source; a WAV file that cannot be read is an error naming it, as is an
    /// ALSA device asked for by name. `Auto` falls back to the tone with one warning.
    pub fn open(spec: &AudioSourceSpec) -> Result<LocalAudio, AudioError> {
        let sound = match spec {
            AudioSourceSpec::None => Sound::None,
            AudioSourceSpec::Tone => Sound::Tone(ToneSource::new()),
            AudioSourceSpec::Wav(path) => Sound::Wav {
                samples: read_wav(path)?,
                at: 0,
                name: path.display().to_string(),
            },
            AudioSourceSpec::Alsa(device) => Sound::Alsa {
                pcm: AlsaPcm::open(device, true)?,
                pending: Vec::new(),
                registered: false,
            },
            AudioSourceSpec::Auto => match AlsaPcm::open("default", true) {
                Ok(pcm) => Sound::Alsa {
                    pcm,
                    pending: Vec::new(),
                    registered: false,
                },
                Err(e) => {
                    log::warn!("no ALSA capture device ({e}): sending the tone");
                    Sound::Tone(ToneSource::new())
                }
            },
        };
        Ok(LocalAudio {
            sound,
            started: None,
            frames: 0,
        })
    }

    pub fn describe(&self) -> String {
        self.sound.to_string()
    }

    /// Starts the frame clock (and a capture device's descriptors in the poll).
    /// `capture_us` is `now` on the capture clock ([`crate::media::monotonic_us`]).
    pub fn start(&mut self, now: Instant, capture_us: u64, registry: &Registry) {
        match &mut self.sound {
            Sound::None => return,
            Sound::Alsa {
                pcm,
                pending,
                registered,
            } => {
                pending.clear();
                // Drop what was captured between calls.
                let _ = pcm.read_available(&mut Vec::new());
                *registered = pcm.register(registry, AUDIO_CAPTURE_TOKEN);
            }
            _ => {}
        }
        self.started = Some((now, capture_us));
        self.frames = 0;
    }

    pub fn stop(&mut self, registry: &Registry) {
        self.started = None;
        if let Sound::Alsa {
            pcm, registered, ..
        } = &mut self.sound
        {
            if std::mem::take(registered) {
                pcm.deregister(registry);
            }
        }
    }

    /// When the next frame is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.started
            .map(|(t, _)| t + FRAME_DURATION * self.frames as u32)
    }

    /// Every frame due by `now` (or captured by then), in order.
    pub fn on_timer(&mut self, now: Instant) -> Vec<CapturedAudio> {
        let mut out = Vec::new();
        let Some((t0, us0)) = self.started else {
            return out;
        };
        let due = |n: u64| t0 + FRAME_DURATION * n as u32;
        if now.saturating_duration_since(due(self.frames)) > MAX_CATCH_UP {
            let behind = now.duration_since(t0).as_micros() as u64 / 20_000;
            log::debug!(
                "audio source: {} frames behind; skipping ahead",
                behind - self.frames
            );
            self.frames = behind;
        }
        if let Sound::Alsa { pcm, pending, .. } = &mut self.sound {
            if let Err(e) = pcm.read_available(pending) {
                log::warn!("{e}");
            }
            // Frames go out as the device captures them, but never ahead of our clock
            // (the RTP clock must follow real time; a device that delivers faster, as
            // `null` does, loses its oldest samples past 200 ms).
            let max = 10 * FRAME_SAMPLES;
            if pending.len() > max {
                let excess = pending.len() - max;
                pending.drain(..excess);
            }
            let mut taken = 0;
            while pending.len() - taken >= FRAME_SAMPLES && due(self.frames) <= now {
                let mut frame = [0i16; FRAME_SAMPLES];
                frame.copy_from_slice(&pending[taken..taken + FRAME_SAMPLES]);
                taken += FRAME_SAMPLES;
                let after_us = (pending.len() - taken) as u64 * 1_000_000 / 48_000;
                let capture_us = us0 + self.frames * 20_000;
                out.push(CapturedAudio {
                    pcm: frame,
                    rtp_ticks: capture_us * 48 / 1000,
                    captured: now
                        .checked_sub(FRAME_DURATION + Duration::from_micros(after_us))
                        .unwrap_or(now),
                });
                self.frames += 1;
            }
            pending.drain(..taken);
            return out;
        }
        while due(self.frames) <= now {
            let capture_us = us0 + self.frames * 20_000;
            let pcm = self.next_frame(capture_us);
            out.push(CapturedAudio {
                pcm,
                rtp_ticks: capture_us * 48 / 1000,
                captured: due(self.frames),
            });
            self.frames += 1;
        }
        out
    }

    fn next_frame(&mut self, capture_us: u64) -> PcmFrame {
        match &mut self.sound {
            Sound::None => [0; FRAME_SAMPLES],
            Sound::Tone(t) => t.frame(capture_us),
            Sound::Alsa { .. } => [0; FRAME_SAMPLES],
            Sound::Wav { samples, at, .. } => {
                let mut pcm = [0i16; FRAME_SAMPLES];
                for s in pcm.iter_mut() {
                    *s = samples[*at];
                    *at = (*at + 1) % samples.len();
                }
                pcm
            }
        }
    }
}

/// Where received sound goes: an ALSA playback device and the `--audio-record` file
/// (every call into the same file, frame by frame as it is played).
pub struct AudioOut {
    device: Option<AlsaPcm>,
    record: Option<(PathBuf, WavWriter)>,
    since_header: u32,
}

/// The recording's header is brought up to date this often (frames), so a killed client
/// leaves a readable file.
const HEADER_EVERY: u32 = 50;

impl AudioOut {
    pub fn open(sink: &AudioSinkSpec, record: Option<&Path>) -> Result<AudioOut, AudioError> {
        let device = match sink {
            AudioSinkSpec::None => None,
            AudioSinkSpec::Auto => match AlsaPcm::open("default", false) {
                Ok(pcm) => Some(pcm),
                Err(e) => {
                    log::warn!("no ALSA playback device ({e}): received sound is not played");
                    None
                }
            },
            AudioSinkSpec::Alsa(device) => Some(AlsaPcm::open(device, false)?),
        };
        let record = match record {
            Some(p) => Some((p.to_path_buf(), WavWriter::create(p)?)),
            None => None,
        };
        Ok(AudioOut {
            device,
            record,
            since_header: 0,
        })
    }

    /// Puts the playback device's descriptors in the poll (or leaves it on the playout
    /// timer, with one warning, when they cannot be polled).
    pub fn register(&mut self, registry: &Registry) {
        if let Some(d) = &mut self.device {
            d.register(registry, AUDIO_PLAYBACK_TOKEN);
        }
    }

    pub fn describe(&self) -> String {
        match &self.device {
            Some(d) => format!("alsa:{}", d.device()),
            None => "none".into(),
        }
    }

    /// The playback device has room: write what waits.
    pub fn on_writable(&mut self) {
        if let Some(Err(e)) = self.device.as_mut().map(AlsaPcm::flush) {
            log::warn!("{e}; playback off");
            self.device = None;
        }
    }

    /// One played frame.
    pub fn play(&mut self, pcm: &PcmFrame) {
        if let Some(Err(e)) = self.device.as_mut().map(|d| d.write(pcm)) {
            log::warn!("{e}; playback off");
            self.device = None;
        }
        let Some((path, w)) = self.record.as_mut() else {
            return;
        };
        let mut result = w.write(pcm);
        self.since_header += 1;
        if result.is_ok() && self.since_header >= HEADER_EVERY {
            self.since_header = 0;
            result = w.update_header();
        }
        if let Err(e) = result {
            log::error!(
                "recording audio to {} failed: {e}; recording off",
                path.display()
            );
            self.record = None;
        }
    }

    /// The recording is complete on disk (a call ended, or we exit).
    pub fn flush(&mut self) {
        if let Some((path, w)) = self.record.as_mut() {
            if let Err(e) = w.update_header() {
                log::error!(
                    "recording audio to {} failed: {e}; recording off",
                    path.display()
                );
                self.record = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_name_the_value() {
        assert_eq!(AudioSourceSpec::parse("tone"), Ok(AudioSourceSpec::Tone));
        assert_eq!(
            AudioSourceSpec::parse("alsa:hw:1"),
            Ok(AudioSourceSpec::Alsa("hw:1".into()))
        );
        assert_eq!(
            AudioSourceSpec::parse("a.WAV"),
            Ok(AudioSourceSpec::Wav("a.WAV".into()))
        );
        assert!(AudioSourceSpec::parse("mic")
            .unwrap_err()
            .contains("\"mic\""));
        assert!(AudioSinkSpec::parse("speaker")
            .unwrap_err()
            .contains("\"speaker\""));
        assert_eq!(
            AudioSinkSpec::parse("alsa"),
            Ok(AudioSinkSpec::Alsa("default".into()))
        );
    }

    #[test]
    fn the_source_makes_one_frame_per_20_ms_with_960_ticks_each() {
        let mut a = LocalAudio::open(&AudioSourceSpec::Tone).unwrap();
        let t0 = Instant::now();
        assert_eq!(a.poll_timeout(), None);
        let poll = mio::Poll::new().unwrap();
        a.start(t0, 5_000_000, poll.registry());
        let f = a.on_timer(t0 + Duration::from_millis(45));
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].rtp_ticks - f[0].rtp_ticks, 960);
        assert_eq!(f[2].captured, t0 + Duration::from_millis(40));
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(60)));
        // A stall of a second skips ahead rather than sending a burst of 50 frames.
        let f = a.on_timer(t0 + Duration::from_millis(1_050));
        assert!(f.len() <= 2, "{}", f.len());
        assert_eq!(
            f.last().unwrap().rtp_ticks,
            (5_000_000 + 1_040_000) * 48 / 1000
        );
    }
}
