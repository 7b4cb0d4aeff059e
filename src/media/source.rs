//! The local video the client sends: a V4L2 camera, the test pattern, or a looped Y4M file,
//! always delivered at the size the call was set up with.
//!
//! The pattern and the file are paced by the loop's clock ([`VideoSource::next_frame`]); the
//! camera is paced by the device, whose descriptor the loop polls ([`VideoSource::camera`]).

use std::path::PathBuf;

use super::camera::{Camera, CaptureRequest};
use super::{fit_i420, scale_i420, I420Frame, MediaError, TestPattern, Y4mSource};

/// Where the local video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The camera at this device if it opens, else the test pattern (with one warning).
    Auto(PathBuf),
    /// The camera at this device, or an error naming it.
    Camera(PathBuf),
    TestPattern,
    Y4mFile(PathBuf),
}

pub enum VideoSource {
    Pattern(TestPattern),
    File {
        file: Y4mSource,
        width: u32,
        height: u32,
    },
    Camera {
        camera: Camera,
        width: u32,
        height: u32,
    },
}

impl VideoSource {
    /// Opens the source for frames of `width`x`height` at about `fps`.
    pub fn open(
        spec: &SourceSpec,
        width: u32,
        height: u32,
        fps: f32,
    ) -> Result<VideoSource, MediaError> {
        let request = CaptureRequest {
            width,
            height,
            fps: fps as f64,
        };
        Ok(match spec {
            SourceSpec::TestPattern => VideoSource::Pattern(TestPattern::new(width, height)),
            SourceSpec::Camera(device) => VideoSource::Camera {
                camera: Camera::open(device, request)?,
                width,
                height,
            },
            SourceSpec::Auto(device) => match Camera::open(device, request) {
                Ok(camera) => VideoSource::Camera {
                    camera,
                    width,
                    height,
                },
                Err(e) => {
                    log::warn!("no camera ({e}): sending the test pattern instead");
                    VideoSource::Pattern(TestPattern::new(width, height))
                }
            },
            SourceSpec::Y4mFile(path) => {
                let file = Y4mSource::open(path)?;
                log::info!(
                    "video source {}: {}x{}, sent as {width}x{height}",
                    path.display(),
                    file.width(),
                    file.height()
                );
                VideoSource::File {
                    file,
                    width,
                    height,
                }
            }
        })
    }

    /// What the source is, for logs and the window.
    pub fn describe(&self) -> String {
        match self {
            VideoSource::Pattern(_) => "test pattern".into(),
            VideoSource::File { .. } => "Y4M file".into(),
            VideoSource::Camera { camera, .. } => {
                format!("camera {} ({})", camera.path().display(), camera.mode())
            }
        }
    }

    /// The camera, for sources the device paces; `None` for clock-paced sources.
    pub fn camera(&mut self) -> Option<&mut Camera> {
        match self {
            VideoSource::Camera { camera, .. } => Some(camera),
            _ => None,
        }
    }

    /// The newest camera frame, at the call's size (`Ok(None)`: nothing new, or not a
    /// camera). An error means the device failed or disappeared.
    pub fn read_camera(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let VideoSource::Camera {
            camera,
            width,
            height,
        } = self
        else {
            return Ok(None);
        };
        Ok(camera.read_frame()?.map(|f| {
            if (f.width, f.height) == (*width, *height) {
                f
            } else {
                fit_i420(&f, *width, *height)
            }
        }))
    }

    /// The next frame of a clock-paced source; the pattern draws `frame_number` and
    /// `capture_us` into its stamp. A camera has no next frame on demand: `Ok(None)`.
    pub fn next_frame(
        &mut self,
        frame_number: u32,
        capture_us: u64,
    ) -> Result<Option<I420Frame>, MediaError> {
        match self {
            VideoSource::Pattern(p) => Ok(Some(p.frame(frame_number, capture_us))),
            VideoSource::File {
                file,
                width,
                height,
            } => {
                let frame = file.next_frame()?;
                if frame.width == *width && frame.height == *height {
                    Ok(Some(frame))
                } else {
                    Ok(Some(scale_i420(&frame, *width, *height)))
                }
            }
            VideoSource::Camera { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_the_pattern_and_camera_fails_naming_the_device() {
        let missing = PathBuf::from("/dev/video-missing-for-test");
        let mut auto = VideoSource::open(&SourceSpec::Auto(missing.clone()), 320, 240, 30.0)
            .expect("auto falls back");
        assert_eq!(auto.describe(), "test pattern");
        let f = auto.next_frame(0, 0).unwrap().expect("pattern frame");
        assert_eq!((f.width, f.height), (320, 240));
        let e = VideoSource::open(&SourceSpec::Camera(missing), 320, 240, 30.0)
            .err()
            .expect("no camera there")
            .to_string();
        assert!(e.contains("/dev/video-missing-for-test"), "{e}");
    }
}
