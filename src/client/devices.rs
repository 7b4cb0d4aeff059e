//! The client's media devices as the loop drives them: the local video (a clock-paced
//! pattern or file, or a camera whose descriptor the loop polls) and the recorder of the
//! received video. They do IO, so they live beside the loop, not in the state machines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry};

use crate::media::{scale_i420, I420Frame, MediaError, VideoSource, Y4mWriter};
use crate::reactor::CAMERA_TOKEN;

/// The local video of a call: streams only while a call wants it.
pub struct LocalVideo {
    source: VideoSource,
    period: Duration,
    frame_number: u32,
    next_frame_at: Option<Instant>,
    camera_registered: bool,
}

impl LocalVideo {
    pub fn new(source: VideoSource, fps: f32) -> LocalVideo {
        LocalVideo {
            source,
            period: Duration::from_secs_f32(1.0 / fps.max(1.0)),
            frame_number: 0,
            next_frame_at: None,
            camera_registered: false,
        }
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// When the next clock-paced frame is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_frame_at
    }

    /// Starts the capture clock, or the camera's stream with its descriptor in the poll.
    pub fn start(&mut self, registry: &Registry, now: Instant) -> Result<(), String> {
        self.frame_number = 0;
        let Some(camera) = self.source.camera() else {
            self.next_frame_at = Some(now);
            return Ok(());
        };
        camera.start().map_err(|e| e.to_string())?;
        let fd = camera.fd();
        registry
            .register(&mut SourceFd(&fd), CAMERA_TOKEN, Interest::READABLE)
            .map_err(|e| format!("cannot poll the camera: {e}"))?;
        self.camera_registered = true;
        Ok(())
    }

    pub fn stop(&mut self, registry: &Registry) {
        self.next_frame_at = None;
        let registered = std::mem::take(&mut self.camera_registered);
        if let Some(camera) = self.source.camera() {
            if registered {
                let fd = camera.fd();
                let _ = registry.deregister(&mut SourceFd(&fd));
            }
            camera.stop();
        }
    }

    /// The clock-paced source's next frame, if due. `capture_us` goes into the stamp.
    /// `wanted` is false when nobody would see the frame (no window, media not flowing):
    /// the cadence is kept but nothing is drawn.
    pub fn on_timer(
        &mut self,
        now: Instant,
        capture_us: u64,
        wanted: bool,
    ) -> Result<Option<I420Frame>, MediaError> {
        let Some(due) = self.next_frame_at.filter(|t| *t <= now) else {
            return Ok(None);
        };
        // Keep the cadence; if the loop fell far behind, restart it instead of bursting.
        let next = due + self.period;
        self.next_frame_at = Some(if next + self.period < now {
            now + self.period
        } else {
            next
        });
        if !wanted {
            return Ok(None);
        }
        let frame = self.source.next_frame(self.frame_number, capture_us)?;
        self.frame_number = self.frame_number.wrapping_add(1);
        Ok(frame)
    }

    /// The camera's descriptor is readable: its newest frame.
    pub fn on_readable(&mut self) -> Result<Option<I420Frame>, MediaError> {
        self.source.read_camera()
    }
}

/// `--record`: the received video as Y4M. The file is created at start, so a path that
/// cannot be written is an error before signing in. Every call goes into the same file at
/// the first call's size: frames of another size are scaled to it.
pub struct Recorder {
    path: PathBuf,
    fps: u32,
    writer: Option<Y4mWriter>,
    failed: bool,
    scaled: u64,
}

impl Recorder {
    pub fn create(path: &Path, fps: f32) -> Result<Recorder, std::io::Error> {
        std::fs::File::create(path)?;
        Ok(Recorder {
            path: path.to_path_buf(),
            fps: fps.round().max(1.0) as u32,
            writer: None,
            failed: false,
            scaled: 0,
        })
    }

    pub fn record(&mut self, frame: &I420Frame) {
        if self.failed {
            return;
        }
        if self.writer.is_none() {
            match Y4mWriter::create(&self.path, frame.width, frame.height, self.fps, 1) {
                Ok(w) => self.writer = Some(w),
                Err(e) => return self.fail(e),
            }
        }
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let (width, height) = w.size();
        let result = if (frame.width, frame.height) == (width, height) {
            w.write(frame)
        } else {
            if self.scaled == 0 {
                log::info!(
                    "recording: frames of {}x{} are scaled to the recording's {width}x{height}",
                    frame.width,
                    frame.height
                );
            }
            self.scaled += 1;
            w.write(&scale_i420(frame, width, height))
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// A finished call's recording is complete on disk, even while we run on.
    pub fn flush(&mut self) {
        if let Some(Err(e)) = self.writer.as_mut().map(Y4mWriter::flush) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: MediaError) {
        log::error!(
            "recording to {} failed: {e}; recording off",
            self.path.display()
        );
        self.failed = true;
        self.writer = None;
    }
}
