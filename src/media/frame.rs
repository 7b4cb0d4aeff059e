//! The frame every media path speaks: one tightly packed I420 buffer, plus the clock that
//! stamps capture times.

use super::MediaError;

/// Largest side we accept; OpenH264 itself stops at 3840x2160, and the limit keeps a corrupt
/// header from asking for a gigabyte buffer.
pub const MAX_DIMENSION: u32 = 8192;

/// Luma of black and chroma of grey in video (studio) range, BT.601.
pub const BLACK_Y: u8 = 16;
/// Neutral chroma: no colour.
pub const NEUTRAL_UV: u8 = 128;

/// One picture in I420: the Y plane (`width * height`), then U, then V (each
/// `width/2 * height/2`), rows tightly packed with no stride padding. Width and height are even
/// so the chroma planes have no half pixels.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    // A frame is hundreds of kilobytes; printing them is never what a reader wants.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Checks that `width`x`height` can be an I420 frame.
pub fn check_dimensions(width: u32, height: u32) -> Result<(), MediaError> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > MAX_DIMENSION
        || height > MAX_DIMENSION
    {
        return Err(MediaError::BadDimensions { width, height });
    }
    Ok(())
}

/// Bytes an I420 frame of this size occupies.
pub fn i420_len(width: u32, height: u32) -> usize {
    let luma = width as usize * height as usize;
    luma + luma / 2
}

impl I420Frame {
    /// A black frame.
    ///
    /// # Panics
    /// If the size is zero, odd or larger than [`MAX_DIMENSION`]: sizes are chosen by the
    /// program, so that is a bug. Use [`I420Frame::try_new`] for sizes from outside.
    pub fn new(width: u32, height: u32) -> I420Frame {
        match I420Frame::try_new(width, height) {
            Ok(frame) => frame,
            Err(e) => panic!("{e}"),
        }
    }

    /// A black frame, or an error naming the size if it cannot be I420.
    pub fn try_new(width: u32, height: u32) -> Result<I420Frame, MediaError> {
        check_dimensions(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![NEUTRAL_UV; i420_len(width, height)];
        data[..luma].fill(BLACK_Y);
        Ok(I420Frame {
            width,
            height,
            data,
        })
    }

    /// Wraps an existing buffer after checking that its length matches the size.
    pub fn from_data(width: u32, height: u32, data: Vec<u8>) -> Result<I420Frame, MediaError> {
        check_dimensions(width, height)?;
        let expected = i420_len(width, height);
        if data.len() != expected {
            return Err(MediaError::BadBufferLength {
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(I420Frame {
            width,
            height,
            data,
        })
    }

    /// Checks the invariants (the fields are public, so anyone can break them); everything
    /// that hands a frame to C code calls this first.
    pub fn validate(&self) -> Result<(), MediaError> {
        check_dimensions(self.width, self.height)?;
        let expected = i420_len(self.width, self.height);
        if self.data.len() != expected {
            return Err(MediaError::BadBufferLength {
                width: self.width,
                height: self.height,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.luma_len() / 4
    }

    /// Width of the chroma planes.
    pub fn chroma_width(&self) -> u32 {
        self.width / 2
    }

    /// Height of the chroma planes.
    pub fn chroma_height(&self) -> u32 {
        self.height / 2
    }

    /// The luma plane, `width` bytes per row.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The U (Cb) plane, `width/2` bytes per row.
    pub fn u(&self) -> &[u8] {
        let (l, c) = (self.luma_len(), self.chroma_len());
        &self.data[l..l + c]
    }

    /// The V (Cr) plane, `width/2` bytes per row.
    pub fn v(&self) -> &[u8] {
        let (l, c) = (self.luma_len(), self.chroma_len());
        &self.data[l + c..l + 2 * c]
    }

    pub fn y_mut(&mut self) -> &mut [u8] {
        let l = self.luma_len();
        &mut self.data[..l]
    }

    pub fn u_mut(&mut self) -> &mut [u8] {
        let (l, c) = (self.luma_len(), self.chroma_len());
        &mut self.data[l..l + c]
    }

    pub fn v_mut(&mut self) -> &mut [u8] {
        let (l, c) = (self.luma_len(), self.chroma_len());
        &mut self.data[l + c..l + 2 * c]
    }

    /// All three planes at once, for code that writes luma and chroma together.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (l, c) = (self.luma_len(), self.chroma_len());
        let (y, rest) = self.data.split_at_mut(l);
        let (u, rest) = rest.split_at_mut(c);
        (y, u, &mut rest[..c])
    }
}

/// Microseconds on `CLOCK_MONOTONIC`. Unlike `Instant`, the value means the same thing in
/// every process on the machine, so a capture time stamped into a frame by one client can be
/// subtracted from the receive time in another to measure glass-to-glass latency.
pub fn monotonic_us() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    // CLOCK_MONOTONIC always exists on Linux: the error arm is never taken there.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_frame_is_black_and_planes_have_the_right_sizes() {
        let f = I420Frame::new(64, 32);
        assert_eq!(f.data.len(), 64 * 32 * 3 / 2);
        assert_eq!(f.y().len(), 64 * 32);
        assert_eq!(f.u().len(), 32 * 16);
        assert_eq!(f.v().len(), 32 * 16);
        assert!(f.y().iter().all(|&p| p == BLACK_Y));
        assert!(f.u().iter().chain(f.v()).all(|&p| p == NEUTRAL_UV));
        f.validate().unwrap();
    }

    #[test]
    fn plane_writes_land_in_the_right_plane() {
        let mut f = I420Frame::new(4, 2);
        f.y_mut().fill(1);
        f.u_mut().fill(2);
        f.v_mut().fill(3);
        assert_eq!(f.data, vec![1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3]);
        let (y, u, v) = f.planes_mut();
        assert_eq!((y.len(), u.len(), v.len()), (8, 2, 2));
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_size() {
        for (w, h) in [(0, 2), (3, 2), (2, 5), (10_000, 2)] {
            let e = I420Frame::try_new(w, h).unwrap_err();
            assert!(e.to_string().contains(&format!("{w}x{h}")), "{e}");
        }
        let e = I420Frame::from_data(4, 2, vec![0; 11]).unwrap_err();
        assert!(
            e.to_string().contains("12") && e.to_string().contains("11"),
            "{e}"
        );
        let broken = I420Frame {
            width: 4,
            height: 2,
            data: vec![],
        };
        assert!(broken.validate().is_err());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_us();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(2) {}
        let b = monotonic_us();
        assert!(a > 0 && b >= a + 1_000, "{a} {b}");
    }
}
