//! The synthetic source: colour bars, a moving box, and a machine-readable stamp.
//!
//! The stamp lets a receiver (or a test) tell which frame it is looking at and when it was
//! captured, after H.264 has done its worst: it is drawn as large black/white luma blocks on a
//! grey band, which survive quantisation far better than text or fine detail would.
//!
//! Layout of a `W`x`H` frame (all in luma pixels, `B` = stamp block size):
//!
//! ```text
//! B = min(W / 40, H / 15) rounded down to a multiple of 4 (no stamp when B < 4)
//!     (320x240 -> 8, 640x480 -> 16, 1280x720 -> 32, 1920x1080 -> 48)
//! rows 0 .. 5B          grey band (STAMP_BAND)
//!   rows B .. 4B        the stamp: 3 rows x 32 columns of BxB blocks, starting at
//!                       x0 = ((W / B - 32) / 2) * B; bit i is column i % 32 of row i / 32
//! rows 5B .. H-R        eight vertical colour bars (BAR_COLOURS, left to right), each W/8 wide
//!                       (rounded to even), with a 4B x 4B BOX_COLOUR box bouncing over them
//! rows H-R .. H         R = H/8 (even; 0 without a stamp): diagonal luma stripes scrolling
//!                       4 px per frame over a horizontal chroma ramp, so the encoder has
//!                       motion to track everywhere in that band
//! ```
//!
//! Once a second, on the first frame captured in a new second of the capture clock, the
//! stripe band is white instead ([`is_flash`]): the video half of the lip-sync probe, whose
//! audio half is the `tone` source's burst at the start of each second.
//!
//! The 96 stamp bits, most significant bit first: `frame_number` (32), `capture_time_us`
//! (32, the low 32 bits of [`monotonic_us`](super::monotonic_us)), then the CRC-32 (IEEE) of
//! those 8 bytes in little-endian order (32). A white block is 1, a black block 0; the reader
//! averages the middle half of each block and thresholds at mid-grey.

use super::I420Frame;

/// A colour the pattern draws, in nominal RGB and in the BT.601 studio-range YUV it is
/// written as (what a screenshot test converts back and looks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternColour {
    pub name: &'static str,
    pub rgb: [u8; 3],
    pub yuv: [u8; 3],
}

/// BT.601 studio-range conversion, rounded, usable in constants.
pub const fn rgb_to_yuv601(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as i64, g as i64, b as i64);
    const fn div_round(num: i64, den: i64) -> i64 {
        if num >= 0 {
            (num + den / 2) / den
        } else {
            -((-num + den / 2) / den)
        }
    }
    let y = 16 + div_round(65_481 * r + 128_553 * g + 24_966 * b, 255_000);
    let u = 128 + div_round(-37_797 * r - 74_203 * g + 112_000 * b, 255_000);
    let v = 128 + div_round(112_000 * r - 93_786 * g - 18_214 * b, 255_000);
    [y as u8, u as u8, v as u8]
}

const fn colour(name: &'static str, r: u8, g: u8, b: u8) -> PatternColour {
    PatternColour {
        name,
        rgb: [r, g, b],
        yuv: rgb_to_yuv601(r, g, b),
    }
}

/// The eight full-intensity colour bars, left to right.
pub const BAR_COLOURS: [PatternColour; 8] = [
    colour("white", 255, 255, 255),
    colour("yellow", 255, 255, 0),
    colour("cyan", 0, 255, 255),
    colour("green", 0, 255, 0),
    colour("magenta", 255, 0, 255),
    colour("red", 255, 0, 0),
    colour("blue", 0, 0, 255),
    colour("black", 0, 0, 0),
];
/// The moving box.
pub const BOX_COLOUR: PatternColour = colour("orange", 255, 128, 0);
/// The band behind the stamp.
pub const STAMP_BAND: PatternColour = colour("grey", 128, 128, 128);
/// A stamp bit of 1.
pub const STAMP_ONE: PatternColour = colour("white", 255, 255, 255);
/// A stamp bit of 0.
pub const STAMP_ZERO: PatternColour = colour("black", 0, 0, 0);

/// The stripe band of a flash frame.
pub const FLASH: PatternColour = colour("white", 255, 255, 255);

/// True for a flash frame: the stripe band (the bottom eighth) is nearly white. Stripes
/// average mid-grey, so H.264's losses cannot turn one into the other.
pub fn is_flash(frame: &I420Frame) -> bool {
    if frame.validate().is_err() || StampGeometry::for_size(frame.width, frame.height).is_none() {
        return false;
    }
    let band = ((frame.height / 8) & !1) as usize;
    let w = frame.width as usize;
    let rows = &frame.y()[(frame.height as usize - band) * w..frame.height as usize * w];
    let mean = rows.iter().map(|&v| v as u64).sum::<u64>() / rows.len().max(1) as u64;
    mean > 200
}

/// Columns and rows of stamp blocks.
pub const STAMP_COLUMNS: u32 = 32;
pub const STAMP_ROWS: u32 = 3;
const STAMP_BITS: u32 = STAMP_COLUMNS * STAMP_ROWS;

/// What a stamp carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub frame_number: u32,
    /// Low 32 bits of the capture time in microseconds on `CLOCK_MONOTONIC`.
    pub capture_time_us: u32,
}

/// Where the stamp sits in a frame of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StampGeometry {
    block: u32,
    x0: u32,
    y0: u32,
}

impl StampGeometry {
    fn for_size(width: u32, height: u32) -> Option<StampGeometry> {
        let block = (width / 40).min(height / 15) / 4 * 4;
        if block < 4 {
            return None;
        }
        Some(StampGeometry {
            block,
            x0: (width / block - STAMP_COLUMNS) / 2 * block,
            y0: block,
        })
    }

    fn band_height(&self) -> u32 {
        self.block * (STAMP_ROWS + 2)
    }

    /// Top-left corner of bit `i`'s block.
    fn block_origin(&self, i: u32) -> (u32, u32) {
        (
            self.x0 + (i % STAMP_COLUMNS) * self.block,
            self.y0 + (i / STAMP_COLUMNS) * self.block,
        )
    }
}

/// CRC-32 (IEEE 802.3, reflected), bit by bit: eight bytes per frame do not need a table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn stamp_bits(stamp: Stamp) -> u128 {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&stamp.frame_number.to_le_bytes());
    payload[4..].copy_from_slice(&stamp.capture_time_us.to_le_bytes());
    let crc = crc32(&payload);
    ((stamp.frame_number as u128) << 64) | ((stamp.capture_time_us as u128) << 32) | crc as u128
}

/// Fills a rectangle (luma coordinates, even-aligned by the caller) in all three planes.
fn fill_rect(frame: &mut I420Frame, x: u32, y: u32, w: u32, h: u32, yuv: [u8; 3]) {
    let width = frame.width as usize;
    let cw = frame.chroma_width() as usize;
    let x1 = (x + w).min(frame.width) as usize;
    let y1 = (y + h).min(frame.height) as usize;
    let (x, y) = (x as usize, y as usize);
    if x >= x1 || y >= y1 {
        return;
    }
    let (yp, up, vp) = frame.planes_mut();
    for row in y..y1 {
        yp[row * width + x..row * width + x1].fill(yuv[0]);
    }
    for row in y / 2..y1.div_ceil(2) {
        up[row * cw + x / 2..row * cw + x1.div_ceil(2)].fill(yuv[1]);
        vp[row * cw + x / 2..row * cw + x1.div_ceil(2)].fill(yuv[2]);
    }
}

/// Distance travelled along a line of length `range`, bouncing at both ends.
fn bounce(distance: u32, range: u32) -> u32 {
    if range == 0 {
        return 0;
    }
    let period = 2 * range;
    let d = distance % period;
    if d <= range {
        d
    } else {
        period - d
    }
}

/// Draws the test pattern; the static part is drawn once and copied per frame.
pub struct TestPattern {
    background: I420Frame,
    stamp: Option<StampGeometry>,
    bars_top: u32,
    bars_bottom: u32,
    box_size: u32,
    /// One period of stripe luma, repeated to cover a row at any phase.
    stripes: Vec<u8>,
    /// The second of the capture clock the last frame was in (the next one to start
    /// another second flashes).
    last_second: Option<u64>,
}

/// Length of one stripe period in pixels.
const STRIPE_PERIOD: usize = 128;
/// How far the stripes move per frame.
const STRIPE_SPEED: u32 = 4;

impl TestPattern {
    /// # Panics
    /// If the size cannot be I420 (zero or odd); see [`I420Frame::new`].
    pub fn new(width: u32, height: u32) -> TestPattern {
        let mut background = I420Frame::new(width, height);
        let stamp = StampGeometry::for_size(width, height);
        let bars_top = stamp.map_or(0, |g| g.band_height());
        if bars_top > 0 {
            fill_rect(&mut background, 0, 0, width, bars_top, STAMP_BAND.yuv);
        }
        let ramp_height = if stamp.is_some() {
            (height / 8) & !1
        } else {
            0
        };
        let bars_bottom = height - ramp_height;
        for (i, c) in BAR_COLOURS.iter().enumerate() {
            let i = i as u32;
            let x0 = (width * i / 8) & !1;
            let x1 = (width * (i + 1) / 8) & !1;
            let x1 = if i == 7 { width } else { x1 };
            fill_rect(
                &mut background,
                x0,
                bars_top,
                x1 - x0,
                bars_bottom - bars_top,
                c.yuv,
            );
        }
        // The ramp band's chroma is static: blue-ish on the left to red-ish on the right.
        let cw = background.chroma_width() as usize;
        let (_, up, vp) = background.planes_mut();
        for row in bars_bottom as usize / 2..height as usize / 2 {
            for x in 0..cw {
                let t = (x * 160 / cw.max(1)) as u8;
                up[row * cw + x] = 208 - t;
                vp[row * cw + x] = 48 + t;
            }
        }
        let stripes = (0..width as usize + STRIPE_PERIOD)
            .map(|k| {
                let v = k % STRIPE_PERIOD;
                let tri = if v < STRIPE_PERIOD / 2 {
                    v
                } else {
                    STRIPE_PERIOD - 1 - v
                };
                (16 + tri * 219 / (STRIPE_PERIOD / 2 - 1)) as u8
            })
            .collect();
        let block = stamp.map_or(4, |g| g.block);
        let box_size = (4 * block).min(width).min(bars_bottom - bars_top) & !1;
        TestPattern {
            background,
            stamp,
            bars_top,
            bars_bottom,
            box_size,
            stripes,
            last_second: None,
        }
    }

    pub fn width(&self) -> u32 {
        self.background.width
    }

    pub fn height(&self) -> u32 {
        self.background.height
    }

    /// Frame `frame_number`: the box position follows from the number alone, so the same
    /// number always gives the same picture (apart from the stamped time).
    pub fn frame(&mut self, frame_number: u32, capture_time_us: u64) -> I420Frame {
        let mut frame = self.background.clone();
        let (width, height) = (frame.width, frame.height);
        if self.box_size > 0 {
            let step = (self.box_size / 8).max(2);
            let x = bounce(frame_number.wrapping_mul(step), width - self.box_size) & !1;
            let y_range = self.bars_bottom - self.bars_top - self.box_size;
            let y = self.bars_top + (bounce(frame_number.wrapping_mul(step * 3 / 4), y_range) & !1);
            fill_rect(
                &mut frame,
                x,
                y,
                self.box_size,
                self.box_size,
                BOX_COLOUR.yuv,
            );
        }
        let w = width as usize;
        let shift = frame_number.wrapping_mul(STRIPE_SPEED) as usize;
        let second = capture_time_us / 1_000_000;
        let flash = self.last_second.is_some_and(|s| s != second);
        self.last_second = Some(second);
        if flash {
            let rows = self.bars_bottom..height;
            fill_rect(
                &mut frame,
                0,
                rows.start,
                width,
                rows.len() as u32,
                FLASH.yuv,
            );
        }
        for row in (self.bars_bottom as usize..height as usize).filter(|_| !flash) {
            // Stripes run diagonally (phase grows with the row) and scroll left.
            let phase = (row + shift) % STRIPE_PERIOD;
            frame.y_mut()[row * w..row * w + w].copy_from_slice(&self.stripes[phase..phase + w]);
        }
        if let Some(g) = self.stamp {
            let bits = stamp_bits(Stamp {
                frame_number,
                capture_time_us: capture_time_us as u32,
            });
            for i in 0..STAMP_BITS {
                let one = (bits >> (STAMP_BITS - 1 - i)) & 1 == 1;
                let (x, y) = g.block_origin(i);
                let c = if one { STAMP_ONE } else { STAMP_ZERO };
                fill_rect(&mut frame, x, y, g.block, g.block, c.yuv);
            }
        }
        frame
    }
}

/// Reads the stamp back; `None` when the frame has no room for one, is malformed, or the
/// checksum does not match (the stamp was damaged, or this is not a test-pattern frame).
pub fn read_stamp(frame: &I420Frame) -> Option<Stamp> {
    frame.validate().ok()?;
    let g = StampGeometry::for_size(frame.width, frame.height)?;
    let width = frame.width as usize;
    let y_plane = frame.y();
    let threshold = (STAMP_ONE.yuv[0] as u32 + STAMP_ZERO.yuv[0] as u32) / 2;
    let (lo, hi) = ((g.block / 4) as usize, (g.block * 3 / 4) as usize);
    let samples = ((hi - lo) * (hi - lo)) as u32;
    let mut bits = 0u128;
    for i in 0..STAMP_BITS {
        let (x, y) = g.block_origin(i);
        let (x, y) = (x as usize, y as usize);
        let mut sum = 0u32;
        for row in y + lo..y + hi {
            let start = row * width + x;
            sum += y_plane[start + lo..start + hi]
                .iter()
                .map(|&p| p as u32)
                .sum::<u32>();
        }
        bits = (bits << 1) | u128::from(sum / samples > threshold);
    }
    let frame_number = (bits >> 64) as u32;
    let capture_time_us = (bits >> 32) as u32;
    let stamp = Stamp {
        frame_number,
        capture_time_us,
    };
    (stamp_bits(stamp) == bits).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn documented_colours_are_the_standard_bt601_values() {
        assert_eq!(BAR_COLOURS[0].yuv, [235, 128, 128]);
        assert_eq!(BAR_COLOURS[1].yuv, [210, 16, 146]);
        assert_eq!(BAR_COLOURS[2].yuv, [170, 166, 16]);
        assert_eq!(BAR_COLOURS[3].yuv, [145, 54, 34]);
        assert_eq!(BAR_COLOURS[4].yuv, [106, 202, 222]);
        assert_eq!(BAR_COLOURS[5].yuv, [81, 90, 240]);
        assert_eq!(BAR_COLOURS[6].yuv, [41, 240, 110]);
        assert_eq!(BAR_COLOURS[7].yuv, [16, 128, 128]);
    }

    #[test]
    fn geometry_scales_with_the_frame() {
        let b = |w, h| StampGeometry::for_size(w, h).map(|g| g.block);
        assert_eq!(b(320, 240), Some(8));
        assert_eq!(b(640, 480), Some(16));
        assert_eq!(b(1280, 720), Some(32));
        assert_eq!(b(1920, 1080), Some(48));
        assert_eq!(b(64, 48), None);
        let g = StampGeometry::for_size(640, 480).unwrap();
        assert_eq!((g.x0, g.y0), (64, 16));
    }

    #[test]
    fn stamp_round_trips_on_raw_frames_of_many_sizes() {
        for (w, h) in [
            (160, 120),
            (320, 240),
            (352, 288),
            (640, 480),
            (1280, 720),
            (1920, 1080),
        ] {
            let mut p = TestPattern::new(w, h);
            for n in [0u32, 1, 77, 0xFFFF_FFFF] {
                let t = 0x1_2345_6789u64 + n as u64;
                let f = p.frame(n, t);
                assert_eq!((f.width, f.height), (w, h));
                f.validate().unwrap();
                assert_eq!(
                    read_stamp(&f),
                    Some(Stamp {
                        frame_number: n,
                        capture_time_us: t as u32
                    }),
                    "{w}x{h} frame {n}"
                );
            }
        }
    }

    #[test]
    fn frames_without_a_valid_stamp_read_as_none() {
        assert_eq!(read_stamp(&I420Frame::new(640, 480)), None);
        let mut f = TestPattern::new(640, 480).frame(5, 5);
        // Flip one block: the checksum must catch it.
        let g = StampGeometry::for_size(640, 480).unwrap();
        let (x, y) = g.block_origin(40);
        let v = f.y()[(y * 640 + x) as usize];
        let flipped = if v > 128 { 16 } else { 235 };
        fill_rect(&mut f, x, y, g.block, g.block, [flipped, 128, 128]);
        assert_eq!(read_stamp(&f), None);
        // Too small for a stamp, and a malformed frame: None, no panic.
        assert_eq!(read_stamp(&TestPattern::new(32, 32).frame(1, 1)), None);
        let broken = I420Frame {
            width: 640,
            height: 480,
            data: vec![0; 10],
        };
        assert_eq!(read_stamp(&broken), None);
    }

    #[test]
    fn pattern_moves_and_shows_its_colours() {
        let mut p = TestPattern::new(640, 480);
        let a = p.frame(0, 0);
        let b = p.frame(10, 0);
        // Only the box and the stamp differ.
        assert_ne!(a.y()[96 * 640..], b.y()[96 * 640..]);
        let row = 400 * 640;
        for (i, c) in BAR_COLOURS.iter().enumerate() {
            let x = 640 * i / 8 + 40;
            let (px, py) = (x / 2, 200);
            let has = a.y()[row + x] == c.yuv[0]
                && a.u()[py * 320 + px] == c.yuv[1]
                && a.v()[py * 320 + px] == c.yuv[2];
            assert!(has, "bar {} missing", c.name);
        }
        let orange = a.y().iter().filter(|&&p| p == BOX_COLOUR.yuv[0]).count();
        assert!(orange >= 64 * 64, "box not drawn: {orange}");
    }

    #[test]
    fn the_first_frame_of_each_second_flashes() {
        let mut p = TestPattern::new(320, 240);
        let flashes: Vec<u32> = (0..100u32)
            .filter(|&i| is_flash(&p.frame(i, 500_000 + i as u64 * 33_333)))
            .collect();
        // Frame 15 is at 0.99999 s, 16 at 1.03 s: the first of the second.
        assert_eq!(flashes, vec![16, 46, 76]);
        assert!(
            read_stamp(&p.frame(200, 10_000_000)).is_some(),
            "the stamp survives a flash"
        );
    }

    #[test]
    fn odd_tiny_sizes_do_not_panic() {
        for (w, h) in [(2, 2), (4, 2), (2, 100), (100, 2), (166, 62)] {
            let f = TestPattern::new(w, h).frame(3, 4);
            f.validate().unwrap();
        }
    }
}
