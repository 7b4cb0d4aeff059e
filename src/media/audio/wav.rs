//! WAV files: 16-bit PCM in (any common rate and channel count, mixed to mono and resampled
//! to 48 kHz) and out (48 kHz mono, its header kept valid as it grows, so a recording cut
//! short by a kill is still a readable file).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{AudioError, SAMPLE_RATE};

/// Rates a WAV file may have (telephone to studio).
const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
const MAX_CHANNELS: u16 = 8;
/// A looped source is held in memory: an hour of 48 kHz stereo is well under this.
const MAX_FILE_BYTES: u64 = 1 << 30;
const HEADER_LEN: u64 = 44;

fn refuse(path: &Path, detail: impl Into<String>) -> AudioError {
    AudioError::Wav {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a 16-bit PCM WAV file as 48 kHz mono samples; anything else is refused with a
/// message naming the file and the value we cannot take.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(refuse(
            path,
            format!("{len} bytes is too large (at most 1 GiB)"),
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let (rate, channels, data) = parse(path, &bytes)?;
    let frames = data.len() / (2 * channels as usize);
    let mut mono = Vec::with_capacity(frames);
    for f in 0..frames {
        let mut sum = 0i32;
        for c in 0..channels as usize {
            sum += i16::from_le_bytes([
                data[(f * channels as usize + c) * 2],
                data[(f * channels as usize + c) * 2 + 1],
            ]) as i32;
        }
        mono.push((sum / channels as i32) as i16);
    }
    if mono.is_empty() {
        return Err(refuse(path, "no samples in the data chunk"));
    }
    Ok(resample(&mono, rate, SAMPLE_RATE))
}

/// The format's rate and channel count and the data chunk's bytes, checked.
fn parse<'a>(path: &Path, b: &'a [u8]) -> Result<(u32, u16, &'a [u8]), AudioError> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(refuse(path, "not a WAV file (no RIFF/WAVE header)"));
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32_at(b, at + 4) as usize;
        let body = at + 8;
        let end = body.saturating_add(size).min(b.len());
        if id == b"fmt " {
            if end - body < 16 {
                return Err(refuse(path, "the fmt chunk is too short"));
            }
            let tag = u16_at(b, body);
            let channels = u16_at(b, body + 2);
            let rate = u32_at(b, body + 4);
            let bits = u16_at(b, body + 14);
            // WAVE_FORMAT_EXTENSIBLE names the real format in its sub-format GUID.
            let tag = if tag == 0xFFFE && end - body >= 26 {
                u16_at(b, body + 24)
            } else {
                tag
            };
            if tag != 1 {
                let name = if tag == 3 { " (IEEE float)" } else { "" };
                return Err(refuse(
                    path,
                    format!("format tag {tag}{name}: only 16-bit PCM (tag 1) is read"),
                ));
            }
            if bits != 16 {
                return Err(refuse(
                    path,
                    format!("{bits}-bit samples: only 16-bit PCM is read"),
                ));
            }
            if channels == 0 || channels > MAX_CHANNELS {
                return Err(refuse(
                    path,
                    format!("{channels} channels: expected 1 to {MAX_CHANNELS}"),
                ));
            }
            if !RATES.contains(&rate) {
                return Err(refuse(
                    path,
                    format!(
                        "sample rate {rate} Hz: expected {} to {} Hz",
                        RATES.start(),
                        RATES.end()
                    ),
                ));
            }
            format = Some((rate, channels));
        } else if id == b"data" {
            let Some((rate, channels)) = format else {
                return Err(refuse(path, "the data chunk comes before any fmt chunk"));
            };
            return Ok((rate, channels, &b[body..end]));
        }
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err(refuse(
        path,
        if format.is_some() {
            "no data chunk"
        } else {
            "no fmt chunk"
        },
    ))
}

/// Linear-interpolation resampling: plenty for speech and test signals, and cheap.
pub fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * to as u64 / from as u64) as usize;
    let step = from as f64 / to as f64;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let k = pos as usize;
            let frac = pos - k as f64;
            let a = input[k.min(input.len() - 1)] as f64;
            let b = input[(k + 1).min(input.len() - 1)] as f64;
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// Writes a whole 48 kHz mono file (test signals, tools).
pub fn write_wav(path: &Path, samples: &[i16], rate: u32, channels: u16) -> Result<(), AudioError> {
    let mut w = WavWriter::create_with(path, rate, channels)?;
    w.write(samples)?;
    w.finish()
}

/// A growing 16-bit PCM file. [`WavWriter::finish`] (or [`WavWriter::update_header`] now
/// and then) makes the header say how long it is.
pub struct WavWriter {
    path: PathBuf,
    file: BufWriter<File>,
    rate: u32,
    channels: u16,
    data_bytes: u64,
}

impl WavWriter {
    /// A 48 kHz mono file.
    pub fn create(path: &Path) -> Result<WavWriter, AudioError> {
        WavWriter::create_with(path, SAMPLE_RATE, 1)
    }

    fn create_with(path: &Path, rate: u32, channels: u16) -> Result<WavWriter, AudioError> {
        let file = File::create(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = WavWriter {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            rate,
            channels,
            data_bytes: 0,
        };
        let header = w.header();
        w.file.write_all(&header).map_err(|e| w.io(e))?;
        Ok(w)
    }

    fn io(&self, source: std::io::Error) -> AudioError {
        AudioError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn header(&self) -> [u8; HEADER_LEN as usize] {
        let data = self.data_bytes.min(u32::MAX as u64 - 36) as u32;
        let block = 2 * self.channels;
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes());
        h[22..24].copy_from_slice(&self.channels.to_le_bytes());
        h[24..28].copy_from_slice(&self.rate.to_le_bytes());
        h[28..32].copy_from_slice(&(self.rate * block as u32).to_le_bytes());
        h[32..34].copy_from_slice(&block.to_le_bytes());
        h[34..36].copy_from_slice(&16u16.to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data.to_le_bytes());
        h
    }

    pub fn write(&mut self, samples: &[i16]) -> Result<(), AudioError> {
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.file.write_all(&bytes).map_err(|e| self.io(e))?;
        self.data_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Samples written so far (per channel).
    pub fn samples(&self) -> u64 {
        self.data_bytes / (2 * self.channels as u64)
    }

    /// Writes out what is buffered and the header's lengths, then goes on appending.
    pub fn update_header(&mut self) -> Result<(), AudioError> {
        let header = self.header();
        let r = (|| {
            self.file.flush()?;
            let f = self.file.get_mut();
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&header)?;
            f.seek(SeekFrom::End(0))?;
            Ok(())
        })();
        r.map_err(|e| self.io(e))
    }

    pub fn finish(mut self) -> Result<(), AudioError> {
        self.update_header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("pc-wav-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_48k_mono_file_round_trips() {
        let p = tmp("round.wav");
        let samples: Vec<i16> = (0..4800).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        write_wav(&p, &samples, 48_000, 1).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 44 + 9600);
        assert_eq!(read_wav(&p).unwrap(), samples);
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn stereo_is_mixed_and_other_rates_resampled() {
        let p = tmp("stereo16k.wav");
        // 16 kHz stereo, 0.5 s: left 1000, right 3000 -> mono 2000, three times as long.
        let frames = 8000;
        let interleaved: Vec<i16> = (0..frames).flat_map(|_| [1000i16, 3000]).collect();
        write_wav(&p, &interleaved, 16_000, 2).unwrap();
        let mono = read_wav(&p).unwrap();
        assert_eq!(mono.len(), 24_000);
        assert!(mono.iter().all(|&s| s == 2000));
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn resampling_keeps_a_sine_a_sine() {
        let sine = |rate: u32, n: usize| -> Vec<i16> {
            (0..n)
                .map(|i| {
                    (10000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin())
                        as i16
                })
                .collect()
        };
        let up = resample(&sine(44_100, 44_100), 44_100, 48_000);
        let want = sine(48_000, 48_000);
        assert_eq!(up.len(), 48_000);
        let worst = up
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(worst < 200, "worst error {worst}");
    }

    #[test]
    fn what_cannot_be_read_is_refused_naming_the_file_and_the_value() {
        let p = tmp("float.wav");
        write_wav(&p, &[0; 100], 48_000, 1).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b[20] = 3; // IEEE float
        std::fs::write(&p, &b).unwrap();
        let e = read_wav(&p).unwrap_err().to_string();
        assert!(e.contains("float.wav") && e.contains("format tag 3"), "{e}");
        b[20] = 1;
        b[34] = 24;
        std::fs::write(&p, &b).unwrap();
        let e = read_wav(&p).unwrap_err().to_string();
        assert!(e.contains("24-bit"), "{e}");
        b[34] = 16;
        b[24..28].copy_from_slice(&4000u32.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = read_wav(&p).unwrap_err().to_string();
        assert!(e.contains("sample rate 4000 Hz"), "{e}");
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_wav(&p)
            .unwrap_err()
            .to_string()
            .contains("not a WAV file"));
        std::fs::write(&p, &b[..40]).unwrap();
        assert!(
            read_wav(&p).is_err(),
            "a truncated file is an error, not a panic"
        );
        std::fs::remove_file(&p).ok();
        let e = read_wav(Path::new("/nonexistent/x.wav"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.wav"), "{e}");
    }

    #[test]
    fn a_growing_file_has_a_valid_header_after_each_update() {
        let p = tmp("grow.wav");
        let mut w = WavWriter::create(&p).unwrap();
        w.write(&[5; 960]).unwrap();
        w.update_header().unwrap();
        assert_eq!(read_wav(&p).unwrap().len(), 960);
        w.write(&[6; 960]).unwrap();
        w.finish().unwrap();
        assert_eq!(read_wav(&p).unwrap().len(), 1920);
        std::fs::remove_file(&p).ok();
    }
}
