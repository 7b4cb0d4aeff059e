//! Camera pixel layouts to I420, the one layout the encoder and the renderer take.
//!
//! V4L2 cameras deliver packed 4:2:2 (YUYV), semi-planar 4:2:0 (NV12), planar 4:2:0 (YU12)
//! or Motion-JPEG. The raw layouts are studio-range BT.601 like our I420; JPEG is full range
//! (JFIF), so its samples are mapped into studio range on the way.

use std::borrow::Cow;

use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::{check_dimensions, I420Frame, MediaError};

/// A capture layout we can convert, in the order we prefer them: no conversion, then the
/// cheap raw layouts, then JPEG (which costs a decode per frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PixelFormat {
    /// Planar 4:2:0, Y then U then V (V4L2 `YU12`, also called I420).
    I420,
    /// Y plane, then one plane of interleaved U/V at half resolution (V4L2 `NV12`).
    Nv12,
    /// Packed 4:2:2, `Y0 U Y1 V` for each pair of pixels (V4L2 `YUYV`, also `YUY2`).
    Yuyv,
    /// One JPEG picture per frame (V4L2 `MJPG`, or `JPEG`).
    Mjpeg,
}

impl PixelFormat {
    /// Every layout, most preferred first.
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::I420,
        PixelFormat::Nv12,
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
    ];

    /// The V4L2 four-character code this layout is requested with.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::I420 => *b"YU12",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The layout a V4L2 four-character code names, if we can convert it.
    pub fn from_fourcc(code: &[u8; 4]) -> Option<PixelFormat> {
        Some(match code {
            b"YU12" => PixelFormat::I420,
            b"NV12" => PixelFormat::Nv12,
            b"YUYV" => PixelFormat::Yuyv,
            b"MJPG" | b"JPEG" => PixelFormat::Mjpeg,
            _ => return None,
        })
    }

    pub fn is_compressed(self) -> bool {
        self == PixelFormat::Mjpeg
    }

    /// Bytes a frame needs when the first plane has `stride` bytes per row (JPEG: unknown,
    /// so 0).
    pub fn min_len(self, stride: usize, height: usize) -> usize {
        match self {
            PixelFormat::I420 | PixelFormat::Nv12 => stride * height + stride * height / 2,
            PixelFormat::Yuyv => stride * height,
            PixelFormat::Mjpeg => 0,
        }
    }

    /// The smallest row length in bytes of the first plane for `width` pixels.
    pub fn min_stride(self, width: usize) -> usize {
        match self {
            PixelFormat::Yuyv => width * 2,
            _ => width,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// Converts one captured buffer in `format` (`width`x`height`, first-plane rows `stride`
/// bytes apart) into an I420 frame. JPEG frames carry their own size; a JPEG whose size
/// differs from `width`x`height` is still returned at its own size (cropped to even).
pub fn to_i420(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<I420Frame, MediaError> {
    if format == PixelFormat::Mjpeg {
        return mjpeg_to_i420(src);
    }
    let mut frame = I420Frame::try_new(width, height)?;
    match format {
        PixelFormat::I420 => i420_to_i420(src, stride, &mut frame)?,
        PixelFormat::Nv12 => nv12_to_i420(src, stride, &mut frame)?,
        PixelFormat::Yuyv => yuyv_to_i420(src, stride, &mut frame)?,
        PixelFormat::Mjpeg => unreachable!("handled above"),
    }
    Ok(frame)
}

fn check_raw(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    dst: &I420Frame,
) -> Result<(usize, usize), MediaError> {
    dst.validate()?;
    let (w, h) = (dst.width as usize, dst.height as usize);
    let min_stride = format.min_stride(w);
    if stride < min_stride {
        return Err(MediaError::BadCapture(format!(
            "{format} {w}x{h}: row stride {stride} is shorter than a row ({min_stride} bytes)"
        )));
    }
    let needed = format.min_len(stride, h);
    if src.len() < needed {
        return Err(MediaError::BadCapture(format!(
            "{format} {w}x{h}: the buffer holds {} bytes, a frame needs {needed}",
            src.len()
        )));
    }
    Ok((w, h))
}

/// Packed 4:2:2 to planar 4:2:0: luma is copied, and each chroma sample is the rounded mean
/// of the two rows it now stands for.
pub fn yuyv_to_i420(src: &[u8], stride: usize, dst: &mut I420Frame) -> Result<(), MediaError> {
    let (w, h) = check_raw(PixelFormat::Yuyv, src, stride, dst)?;
    let cw = w / 2;
    let (y, u, v) = dst.planes_mut();
    for row in 0..h / 2 {
        let top = &src[2 * row * stride..2 * row * stride + 2 * w];
        let bottom = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + 2 * w];
        let (y0, y1) = y[2 * row * w..(2 * row + 2) * w].split_at_mut(w);
        let u_row = &mut u[row * cw..row * cw + cw];
        let v_row = &mut v[row * cw..row * cw + cw];
        for (i, (t, b)) in top.chunks_exact(4).zip(bottom.chunks_exact(4)).enumerate() {
            y0[2 * i] = t[0];
            y0[2 * i + 1] = t[2];
            y1[2 * i] = b[0];
            y1[2 * i + 1] = b[2];
            u_row[i] = ((t[1] as u16 + b[1] as u16 + 1) >> 1) as u8;
            v_row[i] = ((t[3] as u16 + b[3] as u16 + 1) >> 1) as u8;
        }
    }
    Ok(())
}

/// Semi-planar to planar 4:2:0: luma rows are copied, the interleaved chroma plane (which
/// follows the luma plane, same stride) is split into U and V.
pub fn nv12_to_i420(src: &[u8], stride: usize, dst: &mut I420Frame) -> Result<(), MediaError> {
    let (w, h) = check_raw(PixelFormat::Nv12, src, stride, dst)?;
    let cw = w / 2;
    let (y, u, v) = dst.planes_mut();
    for (row, out) in y.chunks_exact_mut(w).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + w]);
    }
    let uv = &src[stride * h..];
    for row in 0..h / 2 {
        let line = &uv[row * stride..row * stride + w];
        let u_row = &mut u[row * cw..row * cw + cw];
        let v_row = &mut v[row * cw..row * cw + cw];
        for ((pair, uo), vo) in line.chunks_exact(2).zip(u_row).zip(v_row) {
            *uo = pair[0];
            *vo = pair[1];
        }
    }
    Ok(())
}

/// Planar 4:2:0 with row padding to tightly packed I420 (chroma rows are `stride / 2` apart,
/// as V4L2 lays out `YU12`).
pub fn i420_to_i420(src: &[u8], stride: usize, dst: &mut I420Frame) -> Result<(), MediaError> {
    let (w, h) = check_raw(PixelFormat::I420, src, stride, dst)?;
    let (cw, cs) = (w / 2, stride / 2);
    let (y, u, v) = dst.planes_mut();
    for (row, out) in y.chunks_exact_mut(w).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + w]);
    }
    let u_src = &src[stride * h..];
    let v_src = &src[stride * h + cs * (h / 2)..];
    for row in 0..h / 2 {
        u[row * cw..row * cw + cw].copy_from_slice(&u_src[row * cs..row * cs + cw]);
        v[row * cw..row * cw + cw].copy_from_slice(&v_src[row * cs..row * cs + cw]);
    }
    Ok(())
}

/// Full-range (JFIF) luma to studio range: 0..=255 onto 16..=235.
const LUMA_TO_STUDIO: [u8; 256] = range_table(219, 16);
/// Full-range chroma to studio range: 0..=255 around 128 onto 16..=240.
const CHROMA_TO_STUDIO: [u8; 256] = chroma_table();

const fn range_table(span: u32, offset: u32) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (offset + (i as u32 * span + 127) / 255) as u8;
        i += 1;
    }
    t
}

const fn chroma_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as i32 - 128;
        let scaled = if c >= 0 {
            (c * 224 + 127) / 255
        } else {
            -((-c * 224 + 127) / 255)
        };
        t[i] = (128 + scaled) as u8;
        i += 1;
    }
    t
}

/// Decodes one Motion-JPEG frame to studio-range I420. Odd sizes lose their last column or
/// row. Frames without Huffman tables (many webcams leave them out and rely on the standard
/// ones, as AVI's MJPEG does) are decoded with the standard tables.
pub fn mjpeg_to_i420(src: &[u8]) -> Result<I420Frame, MediaError> {
    let jpeg = with_standard_tables(src)?;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut decoder = JpegDecoder::new_with_options(&jpeg[..], options);
    decoder
        .decode_headers()
        .map_err(|e| MediaError::Jpeg(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| MediaError::Jpeg("no frame header".into()))?;
    let (jw, jh) = (info.width as usize, info.height as usize);
    if decoder.get_output_colorspace() != Some(ColorSpace::YCbCr) {
        return Err(MediaError::Jpeg(format!(
            "a {:?} JPEG, not a YCbCr one",
            decoder.get_input_colorspace()
        )));
    }
    let pixels = decoder
        .decode()
        .map_err(|e| MediaError::Jpeg(e.to_string()))?;
    let (w, h) = (jw & !1, jh & !1);
    check_dimensions(w as u32, h as u32)?;
    if pixels.len() < jw * jh * 3 {
        return Err(MediaError::Jpeg(format!(
            "the decoder returned {} bytes for {jw}x{jh}",
            pixels.len()
        )));
    }
    let mut frame = I420Frame::new(w as u32, h as u32);
    let cw = w / 2;
    let (y, u, v) = frame.planes_mut();
    for (row, out) in y.chunks_exact_mut(w).enumerate() {
        let line = &pixels[row * jw * 3..row * jw * 3 + w * 3];
        for (o, px) in out.iter_mut().zip(line.chunks_exact(3)) {
            *o = LUMA_TO_STUDIO[px[0] as usize];
        }
    }
    for row in 0..h / 2 {
        let top = &pixels[2 * row * jw * 3..2 * row * jw * 3 + w * 3];
        let bottom = &pixels[(2 * row + 1) * jw * 3..(2 * row + 1) * jw * 3 + w * 3];
        for x in 0..cw {
            let (a, b) = (&top[x * 6..x * 6 + 6], &bottom[x * 6..x * 6 + 6]);
            let mean = |k: usize| {
                ((a[k] as u16 + a[k + 3] as u16 + b[k] as u16 + b[k + 3] as u16 + 2) >> 2) as usize
            };
            u[row * cw + x] = CHROMA_TO_STUDIO[mean(1)];
            v[row * cw + x] = CHROMA_TO_STUDIO[mean(2)];
        }
    }
    Ok(frame)
}

/// Marks a JPEG that defines no Huffman table as AVI-style MJPEG (an `AVI1` APP0 segment),
/// which makes the decoder use the standard tables of JPEG Annex K.3.
fn with_standard_tables(src: &[u8]) -> Result<Cow<'_, [u8]>, MediaError> {
    if src.len() < 4 || src[0] != 0xFF || src[1] != 0xD8 {
        return Err(MediaError::Jpeg(format!(
            "not a JPEG frame ({} bytes, no start-of-image marker)",
            src.len()
        )));
    }
    let mut pos = 2;
    while pos + 4 <= src.len() {
        if src[pos] != 0xFF {
            return Err(MediaError::Jpeg(format!("no marker at byte {pos}")));
        }
        match src[pos + 1] {
            0xFF => pos += 1, // fill byte
            0xC4 => return Ok(Cow::Borrowed(src)),
            0xDA => break, // start of scan: every table comes before it
            _ => {
                let len = u16::from_be_bytes([src[pos + 2], src[pos + 3]]) as usize;
                pos += 2 + len;
            }
        }
    }
    const AVI1: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];
    let mut marked = Vec::with_capacity(src.len() + AVI1.len());
    marked.extend_from_slice(&src[..2]);
    marked.extend_from_slice(&AVI1);
    marked.extend_from_slice(&src[2..]);
    Ok(Cow::Owned(marked))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x2 YUYV picture with distinct values everywhere, rows padded to 12 bytes.
    fn yuyv_4x2() -> Vec<u8> {
        vec![
            // row 0: Y0 U Y1 V | Y2 U Y3 V, then 4 bytes of padding
            10, 100, 11, 200, 12, 110, 13, 210, 0, 0, 0, 0, //
            // row 1
            20, 102, 21, 203, 22, 111, 23, 214, 0, 0, 0, 0,
        ]
    }

    #[test]
    fn yuyv_copies_luma_and_averages_chroma_rows() {
        let mut f = I420Frame::new(4, 2);
        yuyv_to_i420(&yuyv_4x2(), 12, &mut f).unwrap();
        assert_eq!(f.y(), &[10, 11, 12, 13, 20, 21, 22, 23]);
        // (100 + 102 + 1) / 2 = 101, (110 + 111 + 1) / 2 = 111 (rounded half up)
        assert_eq!(f.u(), &[101, 111]);
        assert_eq!(f.v(), &[202, 212]);
    }

    #[test]
    fn nv12_splits_the_chroma_plane() {
        // 4x2, stride 6: two luma rows, one chroma row of U V U V.
        let src = vec![
            1, 2, 3, 4, 0, 0, //
            5, 6, 7, 8, 0, 0, //
            50, 60, 51, 61, 0, 0,
        ];
        let mut f = I420Frame::new(4, 2);
        nv12_to_i420(&src, 6, &mut f).unwrap();
        assert_eq!(f.data, vec![1, 2, 3, 4, 5, 6, 7, 8, 50, 51, 60, 61]);
    }

    #[test]
    fn i420_with_padding_is_packed() {
        // 4x2, stride 8 (chroma stride 4).
        let mut src = vec![0u8; 8 * 2 + 4 + 4];
        src[..4].copy_from_slice(&[1, 2, 3, 4]);
        src[8..12].copy_from_slice(&[5, 6, 7, 8]);
        src[16..18].copy_from_slice(&[9, 10]);
        src[20..22].copy_from_slice(&[11, 12]);
        let f = to_i420(PixelFormat::I420, &src, 4, 2, 8).unwrap();
        assert_eq!(f.data, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn short_buffers_and_strides_are_errors_naming_the_sizes() {
        let mut f = I420Frame::new(4, 2);
        let e = yuyv_to_i420(&[0; 15], 8, &mut f).unwrap_err().to_string();
        assert!(
            e.contains("15") && e.contains("16") && e.contains("YUYV"),
            "{e}"
        );
        let e = nv12_to_i420(&[0; 64], 3, &mut f).unwrap_err().to_string();
        assert!(e.contains("stride 3"), "{e}");
        assert!(to_i420(PixelFormat::Yuyv, &[0; 4], 3, 2, 6).is_err());
    }

    #[test]
    fn fourcc_round_trips() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(&f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_fourcc(b"H264"), None);
    }

    #[test]
    fn range_tables_map_the_ends_and_the_middle() {
        assert_eq!(LUMA_TO_STUDIO[0], 16);
        assert_eq!(LUMA_TO_STUDIO[255], 235);
        assert_eq!(CHROMA_TO_STUDIO[0], 16);
        assert_eq!(CHROMA_TO_STUDIO[128], 128);
        assert_eq!(CHROMA_TO_STUDIO[255], 240);
    }

    /// Encodes `rgb` blocks (one colour per 16x16 quadrant of a 32x32 picture) as a 4:2:2
    /// JPEG, as webcams send.
    fn jpeg_quadrants(colours: [[u8; 3]; 4]) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(32 * 32 * 3);
        for y in 0..32 {
            for x in 0..32 {
                let q = (y / 16) * 2 + x / 16;
                rgb.extend_from_slice(&colours[q]);
            }
        }
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
        enc.encode(&rgb, 32, 32, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    const QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

    fn assert_quadrant_colours(f: &I420Frame) {
        assert_eq!((f.width, f.height), (32, 32));
        for (q, rgb) in QUADRANTS.iter().enumerate() {
            let want = super::super::rgb_to_yuv601(rgb[0], rgb[1], rgb[2]);
            // The middle of the quadrant, away from the edges JPEG blurs.
            let (x, y) = ((q % 2) * 16 + 8, (q / 2) * 16 + 8);
            let got = [
                f.y()[y * 32 + x],
                f.u()[(y / 2) * 16 + x / 2],
                f.v()[(y / 2) * 16 + x / 2],
            ];
            for k in 0..3 {
                assert!(
                    got[k].abs_diff(want[k]) <= 4,
                    "quadrant {q} {rgb:?}: got YUV {got:?}, want {want:?}"
                );
            }
        }
    }

    #[test]
    fn mjpeg_decodes_to_studio_range_bt601() {
        let jpeg = jpeg_quadrants(QUADRANTS);
        let f = mjpeg_to_i420(&jpeg).unwrap();
        assert_quadrant_colours(&f);
        let f = to_i420(PixelFormat::Mjpeg, &jpeg, 640, 480, 0).unwrap();
        assert_eq!((f.width, f.height), (32, 32), "a JPEG keeps its own size");
    }

    /// Removes every DHT segment, as many webcams send their frames.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        loop {
            let marker = jpeg[pos + 1];
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[pos..]);
                return out;
            }
            let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
    }

    #[test]
    fn mjpeg_without_huffman_tables_uses_the_standard_ones() {
        let jpeg = strip_huffman_tables(&jpeg_quadrants(QUADRANTS));
        assert!(!jpeg.windows(2).any(|w| w == [0xFF, 0xC4]), "DHT removed");
        let f = mjpeg_to_i420(&jpeg).unwrap();
        assert_quadrant_colours(&f);
    }

    #[test]
    fn broken_jpeg_is_an_error_not_a_panic() {
        let jpeg = jpeg_quadrants(QUADRANTS);
        for bad in [
            &[][..],
            &[0xFF, 0xD8][..],
            &jpeg[..jpeg.len() / 3],
            &b"not a jpeg at all"[..],
        ] {
            assert!(mjpeg_to_i420(bad).is_err(), "{} bytes", bad.len());
        }
        // Random corruption after the headers: an error or a picture, never a panic.
        let mut damaged = jpeg.clone();
        for i in (jpeg.len() / 2..jpeg.len() - 2).step_by(7) {
            damaged[i] ^= 0x5A;
        }
        let _ = mjpeg_to_i420(&damaged);
    }
}
