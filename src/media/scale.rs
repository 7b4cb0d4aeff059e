//! Resizing, for when a source (a Y4M file, a camera) does not deliver the size the call
//! was set up with. Bilinear: cheap enough per frame, and it does not alias the test
//! pattern's hard edges the way nearest-neighbour does.

use super::frame::MAX_DIMENSION;
use super::I420Frame;

/// Scales `src` to `width`x`height` (bilinear). The target size is rounded down to even
/// and clamped to `2..=MAX_DIMENSION`, so any request yields a valid frame. A malformed
/// `src` (buffer shorter than its size says) gives a black frame.
pub fn scale_i420(src: &I420Frame, width: u32, height: u32) -> I420Frame {
    let clamp = |v: u32| (v & !1).clamp(2, MAX_DIMENSION);
    let (width, height) = (clamp(width), clamp(height));
    if src.validate().is_err() {
        return I420Frame::new(width, height);
    }
    if (src.width, src.height) == (width, height) {
        return src.clone();
    }
    let mut dst = I420Frame::new(width, height);
    let (sw, sh) = (src.width as usize, src.height as usize);
    let (dw, dh) = (width as usize, height as usize);
    let (dy, du, dv) = dst.planes_mut();
    scale_plane(src.y(), sw, sh, dy, dw, dh);
    scale_plane(src.u(), sw / 2, sh / 2, du, dw / 2, dh / 2);
    scale_plane(src.v(), sw / 2, sh / 2, dv, dw / 2, dh / 2);
    dst
}

/// Scales `src` to `width`x`height` after cropping it centrally to that shape, so a 16:9
/// camera sending 4:3 loses its sides instead of being squashed.
pub fn fit_i420(src: &I420Frame, width: u32, height: u32) -> I420Frame {
    if src.validate().is_err() || (src.width, src.height) == (width, height) {
        return scale_i420(src, width, height);
    }
    let (sw, sh) = (src.width as u64, src.height as u64);
    let (tw, th) = (width.max(2) as u64, height.max(2) as u64);
    // The largest even rectangle of the target's shape inside the source.
    let (cw, ch) = if sw * th > sh * tw {
        (((sh * tw / th) as u32) & !1, src.height)
    } else {
        (src.width, ((sw * th / tw) as u32) & !1)
    };
    let (cw, ch) = (cw.max(2), ch.max(2));
    if (cw, ch) == (src.width, src.height) {
        return scale_i420(src, width, height);
    }
    let x0 = ((src.width - cw) / 2) & !1;
    let y0 = ((src.height - ch) / 2) & !1;
    let mut cropped = I420Frame::new(cw, ch);
    let (dy, du, dv) = cropped.planes_mut();
    copy_rect(src.y(), src.width as usize, dy, x0, y0, cw, ch);
    let half = src.width as usize / 2;
    copy_rect(src.u(), half, du, x0 / 2, y0 / 2, cw / 2, ch / 2);
    copy_rect(src.v(), half, dv, x0 / 2, y0 / 2, cw / 2, ch / 2);
    scale_i420(&cropped, width, height)
}

fn copy_rect(src: &[u8], stride: usize, dst: &mut [u8], x0: u32, y0: u32, w: u32, h: u32) {
    let (x0, y0, w, h) = (x0 as usize, y0 as usize, w as usize, h as usize);
    for (row, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let start = (y0 + row) * stride + x0;
        out.copy_from_slice(&src[start..start + w]);
    }
}

/// Source positions for each destination index along one axis: the first sample, and the
/// weight (0..=256) of the next, with pixel centres aligned.
fn axis(src_len: usize, dst_len: usize) -> Vec<(usize, u32)> {
    let step = ((src_len as u64) << 16) / dst_len as u64;
    (0..dst_len as u64)
        .map(|i| {
            // Centre of destination pixel i, in 16.16 source coordinates, minus half a pixel.
            let pos = ((2 * i + 1) * step / 2).saturating_sub(1 << 15);
            let idx = ((pos >> 16) as usize).min(src_len - 1);
            let frac = if idx + 1 < src_len {
                ((pos & 0xffff) >> 8) as u32
            } else {
                0
            };
            (idx, frac)
        })
        .collect()
}

fn scale_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    let xs = axis(sw, dw);
    let ys = axis(sh, dh);
    for (row, &(sy, fy)) in dst.chunks_exact_mut(dw).zip(&ys) {
        let r0 = &src[sy * sw..sy * sw + sw];
        let r1 = if fy > 0 {
            &src[(sy + 1) * sw..(sy + 2) * sw]
        } else {
            r0
        };
        for (out, &(sx, fx)) in row.iter_mut().zip(&xs) {
            let sx1 = if fx > 0 { sx + 1 } else { sx };
            let top = r0[sx] as u32 * (256 - fx) + r0[sx1] as u32 * fx;
            let bottom = r1[sx] as u32 * (256 - fx) + r1[sx1] as u32 * fx;
            *out = ((top * (256 - fy) + bottom * fy + (1 << 15)) >> 16) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{TestPattern, BAR_COLOURS};

    #[test]
    fn same_size_is_a_copy_and_flat_frames_stay_flat() {
        let f = TestPattern::new(320, 240).frame(3, 3);
        assert_eq!(scale_i420(&f, 320, 240), f);
        let mut flat = I420Frame::new(100, 60);
        flat.y_mut().fill(200);
        flat.u_mut().fill(50);
        let s = scale_i420(&flat, 38, 22);
        assert!(s.y().iter().all(|&p| p == 200));
        assert!(s.u().iter().all(|&p| p == 50));
        assert!(s.v().iter().all(|&p| p == 128));
    }

    #[test]
    fn up_and_down_scaling_keep_the_picture() {
        let f = TestPattern::new(640, 480).frame(0, 0);
        for (w, h) in [(320, 240), (1280, 720), (176, 144), (642, 482)] {
            let s = scale_i420(&f, w, h);
            assert_eq!((s.width, s.height), (w, h));
            s.validate().unwrap();
            // The middle of each colour bar keeps its colour.
            let y = h as usize * 3 / 4;
            for (i, c) in BAR_COLOURS.iter().enumerate() {
                let x = (w as usize * (2 * i + 1)) / 16;
                let got = s.y()[y * w as usize + x];
                assert!(got.abs_diff(c.yuv[0]) <= 2, "{w}x{h} bar {}: {got}", c.name);
            }
        }
    }

    #[test]
    fn fit_crops_to_the_target_shape_before_scaling() {
        // 16:9 with a red left edge and a blue right edge, the middle grey.
        let mut wide = I420Frame::new(64, 36);
        let w = wide.width as usize;
        for (i, p) in wide.y_mut().iter_mut().enumerate() {
            let x = i % w;
            *p = if x < 8 {
                50
            } else if x >= 56 {
                200
            } else {
                120
            };
        }
        // 4:3 from 16:9 keeps the middle 48 columns: the 8-wide edges are cut off.
        let f = fit_i420(&wide, 32, 24);
        assert_eq!((f.width, f.height), (32, 24));
        assert!(f.y().iter().all(|&p| p == 120), "edges cropped away");
        // The same shape is a plain scale; a portrait target keeps a narrow middle strip.
        assert_eq!(fit_i420(&wide, 32, 18), scale_i420(&wide, 32, 18));
        let tall = fit_i420(&wide, 18, 32);
        assert_eq!((tall.width, tall.height), (18, 32));
        tall.validate().unwrap();
    }

    #[test]
    fn odd_zero_or_malformed_inputs_do_not_panic() {
        let f = TestPattern::new(64, 48).frame(0, 0);
        let s = scale_i420(&f, 33, 0);
        assert_eq!((s.width, s.height), (32, 2));
        let s = scale_i420(&f, 2, 2);
        s.validate().unwrap();
        let broken = I420Frame {
            width: 64,
            height: 48,
            data: vec![1, 2, 3],
        };
        assert_eq!(scale_i420(&broken, 16, 16), I420Frame::new(16, 16));
    }
}
