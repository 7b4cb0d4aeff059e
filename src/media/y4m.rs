//! YUV4MPEG2 files: a looping file source (a repeatable camera for tests and demos) and the
//! recorder for received video. Only 8-bit 4:2:0 is accepted, which is what our frames are;
//! the 420 chroma-siting variants differ only in where chroma samples sit, not in layout.
//!
//! Files are local, so plain buffered reads and writes are used.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::frame::{check_dimensions, i420_len};
use super::{I420Frame, MediaError};

const MAGIC: &[u8] = b"YUV4MPEG2";
const FRAME_TAG: &[u8] = b"FRAME";
/// Longest header line we read; real headers are well under 100 bytes.
const MAX_LINE: u64 = 4096;

/// Why a header line could not be read.
enum LineError {
    Io(std::io::Error),
    Malformed(String),
}

/// Reads a `\n`-terminated line without the newline; `Ok(None)` at a clean end of file.
fn read_line(reader: &mut BufReader<File>, what: &str) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(LineError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(LineError::Malformed(if n as u64 >= MAX_LINE {
            format!("{what} line longer than {MAX_LINE} bytes")
        } else {
            format!("{what} line cut short by the end of the file")
        }));
    }
    Ok(Some(line))
}

/// A Y4M file played as a video source, looping back to the first frame at the end.
pub struct Y4mSource {
    path: PathBuf,
    reader: BufReader<File>,
    width: u32,
    height: u32,
    fps_num: u32,
    fps_den: u32,
    /// Where the first `FRAME` starts, to loop back to.
    data_start: u64,
    /// Frames read since the start of the file (for error messages and empty-file detection).
    frame_index: u64,
}

impl Y4mSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Y4mSource, MediaError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| MediaError::Io {
            path: path.clone(),
            action: "open",
            source,
        })?;
        let mut reader = BufReader::new(file);
        let header_err = |reason: String| MediaError::Y4mHeader {
            path: path.clone(),
            reason,
        };
        let io_err = |source| MediaError::Io {
            path: path.clone(),
            action: "read",
            source,
        };
        let line = match read_line(&mut reader, "header") {
            Ok(Some(line)) => line,
            Ok(None) => return Err(header_err("the file is empty".into())),
            Err(LineError::Io(e)) => return Err(io_err(e)),
            Err(LineError::Malformed(reason)) => return Err(header_err(reason)),
        };
        let (width, height, fps_num, fps_den) = parse_header(&line).map_err(header_err)?;
        let data_start = reader.stream_position().map_err(io_err)?;
        Ok(Y4mSource {
            path,
            reader,
            width,
            height,
            fps_num,
            fps_den,
            data_start,
            frame_index: 0,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second as the header states it (30 if it states none).
    pub fn fps(&self) -> f64 {
        self.fps_num as f64 / self.fps_den as f64
    }

    /// The frame rate as the header's exact fraction.
    pub fn fps_fraction(&self) -> (u32, u32) {
        (self.fps_num, self.fps_den)
    }

    /// The next frame; after the last one, the first one again.
    pub fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        match self.read_frame()? {
            Some(frame) => Ok(frame),
            None if self.frame_index == 0 => Err(MediaError::Y4mEmpty {
                path: self.path.clone(),
            }),
            None => {
                self.reader
                    .seek(SeekFrom::Start(self.data_start))
                    .map_err(|source| MediaError::Io {
                        path: self.path.clone(),
                        action: "seek in",
                        source,
                    })?;
                self.frame_index = 0;
                self.read_frame()?.ok_or_else(|| MediaError::Y4mEmpty {
                    path: self.path.clone(),
                })
            }
        }
    }

    /// One frame, or `None` at a clean end of file (no looping: for reading a recording).
    pub fn read_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let frame_err = |reason: String| MediaError::Y4mFrame {
            path: self.path.clone(),
            frame: self.frame_index,
            reason,
        };
        let io_err = |source| MediaError::Io {
            path: self.path.clone(),
            action: "read",
            source,
        };
        let line = match read_line(&mut self.reader, "FRAME") {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(LineError::Io(e)) => return Err(io_err(e)),
            Err(LineError::Malformed(reason)) => return Err(frame_err(reason)),
        };
        let tag_ok =
            line.starts_with(FRAME_TAG) && matches!(line.get(FRAME_TAG.len()), None | Some(b' '));
        if !tag_ok {
            let shown = String::from_utf8_lossy(&line[..line.len().min(20)]).into_owned();
            return Err(frame_err(format!("expected FRAME, found {shown:?}")));
        }
        let mut data = vec![0u8; i420_len(self.width, self.height)];
        match self.reader.read_exact(&mut data) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(frame_err(format!(
                    "cut short: a {}x{} frame needs {} bytes",
                    self.width,
                    self.height,
                    data.len()
                )))
            }
            Err(e) => return Err(io_err(e)),
        }
        self.frame_index += 1;
        I420Frame::from_data(self.width, self.height, data).map(Some)
    }
}

/// Width, height and frame rate from a stream header line (without its newline).
fn parse_header(line: &[u8]) -> Result<(u32, u32, u32, u32), String> {
    let text = std::str::from_utf8(line).map_err(|_| "the header is not text".to_string())?;
    let mut fields = text.split(' ').filter(|f| !f.is_empty());
    if fields.next().map(str::as_bytes) != Some(MAGIC) {
        let shown: String = text.chars().take(20).collect();
        return Err(format!("expected {:?}, found {shown:?}", "YUV4MPEG2"));
    }
    let (mut width, mut height, mut fps) = (None, None, (30, 1));
    for field in fields {
        let (tag, value) = field.split_at(1);
        match tag {
            "W" => width = Some(parse_number("width", value)?),
            "H" => height = Some(parse_number("height", value)?),
            "F" => {
                let (n, d) = value
                    .split_once(':')
                    .ok_or_else(|| format!("frame rate {value:?} is not N:D"))?;
                let (n, d) = (
                    parse_number("frame rate", n)?,
                    parse_number("frame rate", d)?,
                );
                if n == 0 || d == 0 {
                    return Err(format!("frame rate {value:?} is not positive"));
                }
                fps = (n, d);
            }
            "C" if !matches!(value, "420" | "420jpeg" | "420paldv" | "420mpeg2") => {
                return Err(format!(
                    "colour space C{value} is not supported (only 8-bit 4:2:0)"
                ));
            }
            // Interlacing, aspect ratio and extensions do not change the sample layout.
            _ => {}
        }
    }
    let width = width.ok_or("no width (W) field")?;
    let height = height.ok_or("no height (H) field")?;
    check_dimensions(width, height).map_err(|e| e.to_string())?;
    Ok((width, height, fps.0, fps.1))
}

fn parse_number(what: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a number"))
}

/// Records frames to a Y4M file (`C420jpeg`, progressive, square pixels).
pub struct Y4mWriter {
    path: PathBuf,
    writer: BufWriter<File>,
    width: u32,
    height: u32,
    frames: u64,
}

impl Y4mWriter {
    pub fn create(
        path: impl AsRef<Path>,
        width: u32,
        height: u32,
        fps_num: u32,
        fps_den: u32,
    ) -> Result<Y4mWriter, MediaError> {
        let path = path.as_ref().to_path_buf();
        check_dimensions(width, height)?;
        if fps_num == 0 || fps_den == 0 {
            return Err(MediaError::BadConfig(format!(
                "Y4M frame rate {fps_num}:{fps_den} is not positive"
            )));
        }
        let file = File::create(&path).map_err(|source| MediaError::Io {
            path: path.clone(),
            action: "create",
            source,
        })?;
        let mut writer = Y4mWriter {
            path,
            writer: BufWriter::with_capacity(1 << 20, file),
            width,
            height,
            frames: 0,
        };
        let header =
            format!("YUV4MPEG2 W{width} H{height} F{fps_num}:{fps_den} Ip A1:1 C420jpeg\n");
        writer.put(header.as_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        self.writer
            .write_all(bytes)
            .map_err(|source| MediaError::Io {
                path: self.path.clone(),
                action: "write",
                source,
            })
    }

    /// Appends a frame; it must have the size given at creation.
    pub fn write(&mut self, frame: &I420Frame) -> Result<(), MediaError> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(MediaError::SizeMismatch {
                expected: (self.width, self.height),
                actual: (frame.width, frame.height),
            });
        }
        frame.validate()?;
        self.put(b"FRAME\n")?;
        self.put(&frame.data)?;
        self.frames += 1;
        Ok(())
    }

    /// The size every frame must have.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Pushes buffered frames to the file (also done, errors ignored, on drop).
    pub fn flush(&mut self) -> Result<(), MediaError> {
        self.writer.flush().map_err(|source| MediaError::Io {
            path: self.path.clone(),
            action: "write",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{read_stamp, TestPattern};

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("pc-media-{}-{name}", std::process::id()))
    }

    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write_raw(name: &str, bytes: &[u8]) -> (PathBuf, Cleanup) {
        let path = temp_path(name);
        std::fs::write(&path, bytes).unwrap();
        (path.clone(), Cleanup(path))
    }

    #[test]
    fn write_then_read_loops_over_the_same_frames() {
        let path = temp_path("loop.y4m");
        let _cleanup = Cleanup(path.clone());
        let mut pattern = TestPattern::new(320, 240);
        let frames: Vec<_> = (0..3).map(|i| pattern.frame(i, 1000 + i as u64)).collect();
        let mut w = Y4mWriter::create(&path, 320, 240, 30000, 1001).unwrap();
        for f in &frames {
            w.write(f).unwrap();
        }
        assert_eq!(w.frames(), 3);
        let e = w.write(&I420Frame::new(640, 480)).unwrap_err();
        assert!(
            e.to_string().contains("640x480") && e.to_string().contains("320x240"),
            "{e}"
        );
        drop(w);

        let mut r = Y4mSource::open(&path).unwrap();
        assert_eq!((r.width(), r.height()), (320, 240));
        assert_eq!(r.fps_fraction(), (30000, 1001));
        assert!((r.fps() - 29.97).abs() < 0.01);
        for round in 0..3 {
            for (i, f) in frames.iter().enumerate() {
                let got = r.next_frame().unwrap();
                assert_eq!(&got, f, "round {round} frame {i}");
                assert_eq!(read_stamp(&got).unwrap().frame_number, i as u32);
            }
        }
    }

    #[test]
    fn all_420_variants_and_frame_parameters_are_accepted() {
        let frame = vec![7u8; 4 * 2 * 3 / 2];
        for c in ["", " C420", " C420jpeg", " C420paldv", " C420mpeg2"] {
            let mut bytes =
                format!("YUV4MPEG2 W4 H2 F25:1 Ip A0:0{c} XYSCSS=420JPEG\n").into_bytes();
            bytes.extend_from_slice(b"FRAME Ixyz\n");
            bytes.extend_from_slice(&frame);
            let (path, _c) = write_raw(&format!("variant{}.y4m", c.trim()), &bytes);
            let mut r = Y4mSource::open(&path).unwrap();
            assert_eq!(r.fps(), 25.0);
            assert_eq!(r.next_frame().unwrap().data, frame);
            assert_eq!(r.next_frame().unwrap().data, frame);
        }
        // No F tag: 30 fps.
        let mut bytes = b"YUV4MPEG2 W4 H2\nFRAME\n".to_vec();
        bytes.extend_from_slice(&frame);
        let (path, _c) = write_raw("nofps.y4m", &bytes);
        assert_eq!(Y4mSource::open(&path).unwrap().fps(), 30.0);
    }

    #[test]
    fn corrupt_files_give_errors_naming_the_problem() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty", b"", "empty"),
            ("magic", b"RIFF W4 H2\n", "YUV4MPEG2"),
            ("nowidth", b"YUV4MPEG2 H2 F30:1\n", "width"),
            ("badwidth", b"YUV4MPEG2 Wabc H2\n", "abc"),
            ("odd", b"YUV4MPEG2 W5 H3\n", "5x3"),
            ("huge", b"YUV4MPEG2 W100000 H2\n", "100000x2"),
            ("c444", b"YUV4MPEG2 W4 H2 C444\n", "C444"),
            ("c10bit", b"YUV4MPEG2 W4 H2 C420p10\n", "C420p10"),
            ("fps", b"YUV4MPEG2 W4 H2 F30:0\n", "30:0"),
            ("nonewline", b"YUV4MPEG2 W4 H2", "cut short"),
        ];
        for (name, bytes, needle) in cases {
            let (path, _c) = write_raw(name, bytes);
            let e = Y4mSource::open(&path)
                .err()
                .unwrap_or_else(|| panic!("{name} opened"));
            assert!(e.to_string().contains(needle), "{name}: {e}");
        }
        let bad_frames: &[(&str, &[u8], &str)] = &[
            ("noframes", b"YUV4MPEG2 W4 H2\n", "no frames"),
            ("tag", b"YUV4MPEG2 W4 H2\nFRAMX\n123456789012", "FRAMX"),
            ("short", b"YUV4MPEG2 W4 H2\nFRAME\n12345", "cut short"),
        ];
        for (name, bytes, needle) in bad_frames {
            let (path, _c) = write_raw(name, bytes);
            let mut r = Y4mSource::open(&path).unwrap();
            let e = r.next_frame().unwrap_err();
            assert!(e.to_string().contains(needle), "{name}: {e}");
        }
        let e = Y4mSource::open(temp_path("missing.y4m")).err().unwrap();
        assert!(e.to_string().contains("missing.y4m"), "{e}");
        assert!(Y4mWriter::create(temp_path("w.y4m"), 3, 2, 30, 1).is_err());
        assert!(Y4mWriter::create(temp_path("w.y4m"), 4, 2, 0, 1).is_err());
        let dir = std::env::temp_dir()
            .join("no-such-dir-for-pc-media")
            .join("x.y4m");
        assert!(Y4mWriter::create(dir, 4, 2, 30, 1).is_err());
    }
}
