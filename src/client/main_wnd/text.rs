//! Text without font files: the public-domain 8x8 bitmap font of the `font8x8` crate, put
//! into one texture atlas and drawn at whole-number scales, so it stays sharp at any window
//! size. Printable ASCII only; anything else is drawn as `?`.

/// Side of a glyph cell in font pixels.
pub const GLYPH: u32 = 8;
/// Glyph cells per atlas row; the atlas holds the 128 ASCII codes in 16x8 cells.
const ATLAS_COLUMNS: u32 = 16;
pub const ATLAS_WIDTH: u32 = ATLAS_COLUMNS * GLYPH;
pub const ATLAS_HEIGHT: u32 = 128 / ATLAS_COLUMNS * GLYPH;

/// The code drawn for `c`.
fn code(c: char) -> usize {
    match c {
        ' '..='~' => c as usize,
        _ => '?' as usize,
    }
}

/// The glyph's rows, top first; bit `i` of a row is column `i` from the left.
pub fn glyph(c: char) -> [u8; 8] {
    font8x8::legacy::BASIC_LEGACY[code(c)]
}

/// Where `c`'s cell sits in the atlas, in font pixels.
pub fn atlas_cell(c: char) -> (i32, i32) {
    let i = code(c) as u32;
    (
        ((i % ATLAS_COLUMNS) * GLYPH) as i32,
        ((i / ATLAS_COLUMNS) * GLYPH) as i32,
    )
}

/// The atlas as RGBA bytes (R, G, B, A in memory order): opaque white where a glyph pixel
/// is set, transparent elsewhere; colour comes from the texture's colour modulation.
pub fn atlas_rgba() -> Vec<u8> {
    let mut px = vec![0u8; (ATLAS_WIDTH * ATLAS_HEIGHT * 4) as usize];
    for i in 0..128u32 {
        let rows = font8x8::legacy::BASIC_LEGACY[i as usize];
        let (cx, cy) = ((i % ATLAS_COLUMNS) * GLYPH, (i / ATLAS_COLUMNS) * GLYPH);
        for (dy, bits) in rows.iter().enumerate() {
            for dx in 0..GLYPH {
                if bits >> dx & 1 == 1 {
                    let at = (((cy + dy as u32) * ATLAS_WIDTH + cx + dx) * 4) as usize;
                    px[at..at + 4].copy_from_slice(&[255, 255, 255, 255]);
                }
            }
        }
    }
    px
}

/// Width in window pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// `text` cut to at most `max_chars` characters, ending in `...` when cut.
pub fn ellipsize(text: &str, max_chars: usize) -> String {
    let n = text.chars().count();
    if n <= max_chars {
        return text.to_string();
    }
    if max_chars <= 3 {
        return text.chars().take(max_chars).collect();
    }
    let mut s: String = text.chars().take(max_chars - 3).collect();
    s.push_str("...");
    s
}

/// The last `max_chars` characters of `text` (an edit field shows the end being typed).
pub fn tail(text: &str, max_chars: usize) -> &str {
    let n = text.chars().count();
    if n <= max_chars {
        return text;
    }
    let skip = text
        .char_indices()
        .nth(n - max_chars)
        .map_or(text.len(), |(i, _)| i);
    &text[skip..]
}

/// Splits `text` into lines of at most `max_chars`, at spaces where it can.
pub fn wrap(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let len = line.chars().count();
            let wlen = word.chars().count();
            let sep = usize::from(len > 0);
            if len + sep + wlen <= max_chars {
                if sep == 1 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a line is split.
            let head: String = word.chars().take(max_chars).collect();
            word = word.chars().skip(max_chars).collect();
            lines.push(head);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Which pixels of `text` at `scale` are lit, row-major, `text_width` x `8 * scale`: what a
/// test looks for in a screenshot.
pub fn text_mask(text: &str, scale: u32) -> (u32, u32, Vec<bool>) {
    let (w, h) = (text_width(text, scale), GLYPH * scale);
    let mut mask = vec![false; (w * h) as usize];
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for y in 0..h {
            let bits = rows[(y / scale) as usize];
            for x in 0..GLYPH * scale {
                if bits >> (x / scale) & 1 == 1 {
                    mask[(y * w + i as u32 * GLYPH * scale + x) as usize] = true;
                }
            }
        }
    }
    (w, h, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlas_cells_hold_their_glyphs() {
        let px = atlas_rgba();
        assert_eq!(px.len(), (ATLAS_WIDTH * ATLAS_HEIGHT * 4) as usize);
        for c in ['A', 'g', '~', '0'] {
            let (cx, cy) = atlas_cell(c);
            let rows = glyph(c);
            for (dy, bits) in rows.iter().enumerate() {
                for dx in 0..8 {
                    let at =
                        (((cy as u32 + dy as u32) * ATLAS_WIDTH + cx as u32 + dx) * 4 + 3) as usize;
                    assert_eq!(px[at] == 255, bits >> dx & 1 == 1, "{c} at {dx},{dy}");
                }
            }
        }
        assert_ne!(glyph('A'), [0; 8]);
        assert_eq!(glyph('é'), glyph('?'));
        assert_eq!(glyph(' '), [0; 8]);
    }

    #[test]
    fn cutting_and_wrapping() {
        assert_eq!(ellipsize("hello world", 8), "hello...");
        assert_eq!(ellipsize("hi", 8), "hi");
        assert_eq!(tail("localhost", 4), "host");
        assert_eq!(tail("ab", 4), "ab");
        assert_eq!(
            wrap("one two three four", 9),
            vec!["one two", "three", "four"]
        );
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
        assert_eq!(text_width("abc", 2), 48);
    }

    #[test]
    fn mask_scales_the_glyphs() {
        let (w, h, m) = text_mask("I", 2);
        assert_eq!((w, h), (16, 16));
        let rows = glyph('I');
        for y in 0..16u32 {
            for x in 0..16u32 {
                let lit = rows[(y / 2) as usize] >> (x / 2) & 1 == 1;
                assert_eq!(m[(y * 16 + x) as usize], lit);
            }
        }
    }
}
