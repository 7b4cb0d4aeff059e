//! The local video source the client sends: the test pattern or a looped Y4M file, scaled to
//! the requested size. (The camera joins with the window work.)

use std::path::PathBuf;

use super::{scale_i420, I420Frame, MediaError, TestPattern, Y4mSource};

/// Where the local video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
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
}

impl VideoSource {
    pub fn open(spec: &SourceSpec, width: u32, height: u32) -> Result<VideoSource, MediaError> {
        Ok(match spec {
            SourceSpec::TestPattern => VideoSource::Pattern(TestPattern::new(width, height)),
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

    /// The next frame; the pattern draws `frame_number` and `capture_us` into its stamp.
    pub fn next_frame(
        &mut self,
        frame_number: u32,
        capture_us: u64,
    ) -> Result<I420Frame, MediaError> {
        match self {
            VideoSource::Pattern(p) => Ok(p.frame(frame_number, capture_us)),
            VideoSource::File {
                file,
                width,
                height,
            } => {
                let frame = file.next_frame()?;
                if frame.width == *width && frame.height == *height {
                    Ok(frame)
                } else {
                    Ok(scale_i420(&frame, *width, *height))
                }
            }
        }
    }
}
