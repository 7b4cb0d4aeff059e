//! ALSA in the loop, with no audio thread of our own: PCMs opened non-blocking (48 kHz,
//! 16-bit, mono or what the device has), their poll descriptors registered with mio (the
//! interest taken from each descriptor's own events: the `pulse` plugin asks for POLLIN
//! even on playback), read or written until they would block (mio is edge-triggered), and
//! the loop's 20 ms period timer as a fall-back. A PCM whose descriptors epoll refuses
//! (the `null` plugin polls /dev/null and /dev/full: EPERM) runs on the timer alone.
//!
//! What the plugin does is its own business: `hw` is a kernel device; `pulse` (from
//! libasound2-plugins) starts one thread inside our process to talk to the sound server;
//! `null` discards what is written and captures nothing useful.

use std::ffi::CString;
use std::os::fd::RawFd;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::Direction;
use alsa::PollDescriptors;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::media::audio::{AudioError, FRAME_SAMPLES, SAMPLE_RATE};
#[cfg(test)]
use crate::reactor::AUDIO_PLAYBACK_TOKEN;

/// The device's ring buffer: four 20 ms periods.
const PERIODS: i64 = 4;
/// Playback waiting for room in the device beyond this is dropped (the device's clock
/// runs slower than ours), oldest first.
const MAX_QUEUED: usize = 10 * FRAME_SAMPLES;

pub struct AlsaPcm {
    device: String,
    pcm: PCM,
    channels: usize,
    fds: Vec<RawFd>,
    /// Playback samples the device had no room for yet.
    queued: Vec<i16>,
    dropped: u64,
    /// epoll refused a descriptor once (said with one warning): the timer alone from then.
    unpollable: bool,
}

fn device_error(device: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        device: format!("alsa:{device}"),
        detail: e.to_string(),
    }
}

impl AlsaPcm {
    /// Opens `device` non-blocking for capture or playback at 48 kHz.
    pub fn open(device: &str, capture: bool) -> Result<AlsaPcm, AudioError> {
        let err = |e: alsa::Error| device_error(device, e);
        let name = CString::new(device).map_err(|e| device_error(device, e))?;
        let dir = if capture {
            Direction::Capture
        } else {
            Direction::Playback
        };
        // alsa-lib prints its own complaints to stderr: keep them for the debug log, so a
        // missing device is our one warning line.
        let lib_says = alsa::Output::local_error_handler().ok();
        let opened = PCM::open(&name, dir, true);
        if let Some(text) = lib_says
            .map(|o| o.borrow().to_string())
            .filter(|t| !t.is_empty())
        {
            log::debug!("alsa-lib on opening {device}: {}", text.trim_end());
        }
        let pcm = opened.map_err(err)?;
        let channels = {
            let hw = HwParams::any(&pcm).map_err(err)?;
            hw.set_access(Access::RWInterleaved).map_err(err)?;
            hw.set_format(Format::s16()).map_err(err)?;
            let channels = hw.set_channels_near(1).map_err(err)?;
            let rate = hw
                .set_rate_near(SAMPLE_RATE, alsa::ValueOr::Nearest)
                .map_err(err)?;
            if rate != SAMPLE_RATE {
                return Err(device_error(
                    device,
                    format!("runs at {rate} Hz, not {SAMPLE_RATE} (try plug:{device})"),
                ));
            }
            let period = hw
                .set_period_size_near(FRAME_SAMPLES as i64, alsa::ValueOr::Nearest)
                .map_err(err)?;
            hw.set_buffer_size_near(period * PERIODS).map_err(err)?;
            pcm.hw_params(&hw).map_err(err)?;
            channels.max(1) as usize
        };
        if capture {
            pcm.start().map_err(err)?;
        } else {
            pcm.prepare().map_err(err)?;
        }
        let fds = pcm.get().map_err(err)?.iter().map(|p| p.fd).collect();
        Ok(AlsaPcm {
            device: device.into(),
            pcm,
            channels,
            fds,
            queued: Vec::new(),
            dropped: 0,
            unpollable: false,
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Registers the descriptors, each with the interest its events ask for. False (with
    /// one warning) when epoll refuses one: the PCM then runs on the period timer alone.
    pub fn register(&mut self, registry: &Registry, token: Token) -> bool {
        if self.unpollable {
            return false;
        }
        let Ok(descriptors) = self.pcm.get() else {
            return false;
        };
        let mut done = Vec::new();
        for d in &descriptors {
            let readable = d.events & libc_pollin() != 0;
            let writable = d.events & libc_pollout() != 0;
            let interest = match (readable, writable) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, true) => Interest::WRITABLE,
                (false, false) => continue,
            };
            if let Err(e) = registry.register(&mut SourceFd(&d.fd), token, interest) {
                log::warn!(
                    "alsa:{}: its poll descriptor {} cannot be polled ({e}); running on the 20 ms timer",
                    self.device,
                    d.fd
                );
                for fd in done {
                    let _ = registry.deregister(&mut SourceFd(&fd));
                }
                self.unpollable = true;
                return false;
            }
            done.push(d.fd);
        }
        true
    }

    pub fn deregister(&self, registry: &Registry) {
        for fd in &self.fds {
            let _ = registry.deregister(&mut SourceFd(fd));
        }
    }

    /// Reads every captured sample until the device would block, mixed to mono.
    pub fn read_available(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let io = self
            .pcm
            .io_i16()
            .map_err(|e| device_error(&self.device, e))?;
        let mut buf = vec![0i16; FRAME_SAMPLES * self.channels];
        // At most the device's ring per call: a plugin that always has data (`null`)
        // cannot keep us here.
        for _ in 0..PERIODS {
            match io.readi(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(frames) => {
                    for f in buf[..frames * self.channels].chunks(self.channels) {
                        let sum: i32 = f.iter().map(|&s| s as i32).sum();
                        out.push((sum / self.channels as i32) as i16);
                    }
                }
                Err(e) if e.errno() == nix::errno::Errno::EAGAIN as i32 => return Ok(()),
                Err(e) => {
                    // An overrun (EPIPE) or a suspend: start again, losing what was missed.
                    log::debug!("alsa:{}: capture {e}; restarting", self.device);
                    self.pcm
                        .try_recover(e, true)
                        .and_then(|_| self.pcm.start())
                        .map_err(|e| device_error(&self.device, e))?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Queues a played frame and writes what the device has room for.
    pub fn write(&mut self, mono: &[i16]) -> Result<(), AudioError> {
        for &s in mono {
            for _ in 0..self.channels {
                self.queued.push(s);
            }
        }
        let limit = MAX_QUEUED * self.channels;
        if self.queued.len() > limit {
            let excess = self.queued.len() - limit;
            self.queued.drain(..excess);
            self.dropped += (excess / self.channels) as u64;
        }
        self.flush()
    }

    /// Writes queued samples until the device would block.
    pub fn flush(&mut self) -> Result<(), AudioError> {
        let io = self
            .pcm
            .io_i16()
            .map_err(|e| device_error(&self.device, e))?;
        while !self.queued.is_empty() {
            match io.writei(&self.queued) {
                Ok(0) => break,
                Ok(frames) => {
                    self.queued.drain(..frames * self.channels);
                }
                Err(e) if e.errno() == nix::errno::Errno::EAGAIN as i32 => break,
                Err(e) => {
                    // An underrun (EPIPE): prepare and go on writing.
                    log::debug!("alsa:{}: playback {e}; recovering", self.device);
                    self.pcm
                        .try_recover(e, true)
                        .map_err(|e| device_error(&self.device, e))?;
                }
            }
        }
        Ok(())
    }
}

fn libc_pollin() -> i16 {
    alsa::poll::Flags::IN.bits()
}

fn libc_pollout() -> i16 {
    alsa::poll::Flags::OUT.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `null` device opens on any machine with alsa-lib; its descriptors are
    /// /dev/null-like, which epoll refuses: registering says so and the PCM still works
    /// on the timer.
    #[test]
    fn the_null_device_falls_back_to_the_timer() {
        let Ok(mut pcm) = AlsaPcm::open("null", false) else {
            eprintln!("no ALSA null device here: nothing to test");
            return;
        };
        let poll = mio::Poll::new().unwrap();
        assert!(!pcm.register(poll.registry(), AUDIO_PLAYBACK_TOKEN));
        pcm.write(&[0; FRAME_SAMPLES]).unwrap();
        assert!(
            AlsaPcm::open("no\0such", true).is_err(),
            "a NUL in a name is an error"
        );
        let Err(e) = AlsaPcm::open("surely-no-such-device", true) else {
            panic!("a device that does not exist opened");
        };
        assert!(e.to_string().contains("alsa:surely-no-such-device"), "{e}");
    }
}
