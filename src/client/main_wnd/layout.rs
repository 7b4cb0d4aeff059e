//! Where everything goes at one window size: the connect form, the peer list's rows, the
//! ringing screen's buttons, and the two pictures while streaming. Pure arithmetic on the
//! window size, so it is tested at every size without a display.

use super::text::{text_width, GLYPH};
use crate::media::render::{fit_rect, Area};

/// The peer list's sign-out button.
pub(super) const DISCONNECT: &str = "Disconnect";
/// The ringing screen's buttons.
pub(super) const ANSWER: &str = "Answer";
pub(super) const DECLINE: &str = "Decline";

/// Where everything goes at one window size. Text is drawn at a whole-number `scale` of the
/// 8x8 font, chosen from the window size, so it is sharp at any size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub scale: u32,
    /// The scale of hints and status lines: one step smaller when the window allows.
    pub small: u32,
    pub char_w: u32,
    pub line_h: u32,
    pub margin: i32,
    pub server_field: Area,
    pub port_field: Area,
    pub connect_button: Area,
    /// The peer list's Disconnect button, top right.
    pub disconnect_button: Area,
    pub status_top: i32,
    pub rows_top: i32,
    pub row_h: u32,
    pub rows_visible: usize,
    pub footer_y: i32,
    /// The ringing screen's "is calling" line (its top), centred in the window.
    pub ringing_y: i32,
    /// The ringing screen's Answer button, left of centre below the caller's name.
    pub answer_button: Area,
    /// The ringing screen's Decline button, right of centre.
    pub decline_button: Area,
}

impl Layout {
    pub fn for_window(width: u32, height: u32) -> Layout {
        let (width, height) = (width.max(64), height.max(64));
        let scale = (width / 320).min(height / 240).clamp(1, 4);
        let small = (scale - 1).max(1);
        let char_w = GLYPH * scale;
        let line_h = 12 * scale;
        let margin = (8 * scale) as i32;
        let field_x = margin + 8 * char_w as i32;
        let form_top = margin + 3 * line_h as i32;
        let room = (width as i32 - field_x - margin).max(6 * char_w as i32) as u32;
        let server_field = Area::new(field_x, form_top, room.min(40 * char_w), line_h);
        let port_field = Area::new(
            field_x,
            form_top + (line_h * 3 / 2) as i32,
            7 * char_w,
            line_h,
        );
        let connect_button = Area::new(
            field_x,
            port_field.bottom() + (line_h / 2) as i32 + line_h as i32 / 2,
            9 * char_w,
            line_h,
        );
        let status_top = connect_button.bottom() + line_h as i32;
        let disconnect_w = text_width(DISCONNECT, small) + 8 * small;
        let disconnect_button = Area::new(
            (width as i32 - margin - disconnect_w as i32).max(0),
            margin - 2 * scale as i32,
            disconnect_w,
            GLYPH * scale + 4 * scale,
        );
        let footer_y = height as i32 - margin - (GLYPH * small) as i32;
        let rows_top = margin + 3 * line_h as i32;
        let row_h = line_h + 2 * scale;
        // Rows stop above the status line and the footer.
        let rows_bottom = footer_y - 2 * line_h as i32;
        let rows_visible = ((rows_bottom - rows_top).max(row_h as i32) / row_h as i32) as usize;
        let (ringing_y, answer_button, decline_button) =
            ringing_areas(width, height, scale, margin);
        Layout {
            width,
            height,
            scale,
            small,
            char_w,
            line_h,
            margin,
            server_field,
            port_field,
            connect_button,
            disconnect_button,
            status_top,
            rows_top,
            row_h,
            rows_visible,
            footer_y,
            ringing_y,
            answer_button,
            decline_button,
        }
    }

    /// Whole characters that fit across the window inside the margins.
    pub fn columns(&self) -> usize {
        ((self.width as i32 - 2 * self.margin).max(0) as u32 / self.char_w) as usize
    }

    /// The same for text at the `small` scale.
    pub fn small_columns(&self) -> usize {
        ((self.width as i32 - 2 * self.margin).max(0) as u32 / (GLYPH * self.small)) as usize
    }

    /// The area of visible row `i` of the peer list.
    pub fn row(&self, i: usize) -> Area {
        Area::new(
            self.margin,
            self.rows_top + (i as u32 * self.row_h) as i32,
            (self.width as i32 - 2 * self.margin).max(1) as u32,
            self.row_h,
        )
    }
}

/// The ringing screen: two lines of text (the caller, the hint) just above the middle, and
/// the Answer and Decline buttons side by side below them, as wide as the window allows up
/// to ten characters each.
fn ringing_areas(width: u32, height: u32, scale: u32, margin: i32) -> (i32, Area, Area) {
    let char_w = GLYPH * scale;
    let line_h = 12 * scale;
    let gap = 2 * char_w;
    let room = (width as i32 - 2 * margin - gap as i32).max(2) as u32 / 2;
    let button_w = (10 * char_w).min(room);
    let button_h = line_h + 4 * scale;
    let top = height as i32 / 2 - 2 * line_h as i32;
    let buttons_y = height as i32 / 2 + (line_h / 2) as i32;
    let left = (width as i32 - (2 * button_w + gap) as i32) / 2;
    (
        top,
        Area::new(left, buttons_y, button_w, button_h),
        Area::new(
            left + (button_w + gap) as i32,
            buttons_y,
            button_w,
            button_h,
        ),
    )
}

/// Where the remote video and the local preview go while streaming: the remote picture fills
/// the window with its aspect kept; the preview is a quarter of the window's width in the
/// bottom-right corner, as the original put it.
pub fn streaming_areas(
    width: u32,
    height: u32,
    remote: Option<(u32, u32)>,
    local: Option<(u32, u32)>,
) -> (Option<Area>, Option<Area>) {
    let window = Area::new(0, 0, width, height);
    let remote = remote.map(|(w, h)| fit_rect(w, h, window));
    let local = local.map(|(w, h)| {
        let margin = (width.min(height) / 40).max(4);
        let box_w = (width / 4).max(64).min(width.saturating_sub(2 * margin));
        let box_h = (height / 4).max(48).min(height.saturating_sub(2 * margin));
        let fit = fit_rect(w, h, Area::new(0, 0, box_w, box_h));
        Area::new(
            width as i32 - margin as i32 - fit.w as i32,
            height as i32 - margin as i32 - fit.h as i32,
            fit.w,
            fit.h,
        )
    });
    (remote, local)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[(u32, u32)] = &[
        (64, 64),
        (320, 240),
        (640, 480),
        (1280, 720),
        (1920, 1080),
        (3840, 2160),
        (200, 1000),
    ];

    #[test]
    fn layouts_fit_every_window_size() {
        for &(w, h) in SIZES {
            let l = Layout::for_window(w, h);
            assert!((1..=4).contains(&l.scale));
            assert!(l.rows_visible >= 1);
            assert!(l.columns() >= 1 || w < 100, "{w}x{h}");
            let (remote, local) = streaming_areas(w, h, Some((1280, 720)), Some((640, 480)));
            let (remote, local) = (remote.unwrap(), local.unwrap());
            assert!(
                remote.right() <= w as i32 && remote.bottom() <= h as i32,
                "{w}x{h}"
            );
            assert!(local.x >= 0 && local.right() <= w as i32 && local.bottom() <= h as i32);
            // Text grows with the window: 640x480 draws 16-pixel glyphs.
            if (w, h) == (640, 480) {
                assert_eq!(l.scale, 2);
            }
        }
    }

    #[test]
    fn ringing_buttons_sit_side_by_side_inside_the_window() {
        for &(w, h) in SIZES {
            let l = Layout::for_window(w, h);
            let (a, d) = (l.answer_button, l.decline_button);
            assert!(a.w > 0 && a.h > 0 && a.w == d.w && a.y == d.y, "{w}x{h}");
            assert!(a.right() < d.x, "{w}x{h}: a gap between {a:?} and {d:?}");
            assert!(a.x >= 0 && d.right() <= w as i32, "{w}x{h}: {a:?} {d:?}");
            assert!(d.bottom() <= h as i32, "{w}x{h}: {d:?}");
            assert!(l.ringing_y >= 0 && l.ringing_y < a.y, "{w}x{h}");
            // Centred: as much room left of Answer as right of Decline (to a pixel).
            assert!((a.x - (w as i32 - d.right())).abs() <= 1, "{w}x{h}");
            if w >= 320 {
                assert!(a.w >= text_width(DECLINE, l.scale), "{w}x{h}: labels fit");
            }
        }
    }
}
