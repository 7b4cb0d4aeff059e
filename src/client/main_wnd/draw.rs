//! What to paint: the model's current screen at its layout, as a list of [`Draw`] items
//! (rectangles, text, the two pictures) that `MainWnd` executes in order. Nothing here
//! touches SDL, so every screen is tested as data.

use super::layout::{streaming_areas, Layout, ANSWER, DECLINE, DISCONNECT};
use super::model::{Field, Ringing, Ui, UiModel};
use super::text::{ellipsize, tail, text_width, wrap, GLYPH};
use crate::media::render::Area;

/// Which picture a [`Draw::Video`] item shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    Remote,
    Local,
}

/// An RGBA colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour(pub u8, pub u8, pub u8, pub u8);

pub const BACKGROUND: Colour = Colour(28, 32, 38, 255);
pub const PANEL: Colour = Colour(52, 58, 68, 255);
pub const ACCENT: Colour = Colour(64, 150, 255, 255);
pub const TEXT: Colour = Colour(235, 238, 242, 255);
pub const DIM: Colour = Colour(150, 158, 170, 255);
pub const ERROR: Colour = Colour(255, 110, 100, 255);
pub const SELECTED: Colour = Colour(40, 90, 160, 255);
pub const VIDEO_BACKGROUND: Colour = Colour(0, 0, 0, 255);
pub const OVERLAY: Colour = Colour(0, 0, 0, 150);
/// The streaming screen's warning line ("bob is not answering").
pub const WARNING: Colour = Colour(255, 196, 60, 255);
/// Chat lines in the streaming overlay.
pub const CHAT: Colour = Colour(150, 230, 160, 255);
/// The ringing screen's Answer button.
pub const ANSWER_FILL: Colour = Colour(40, 150, 80, 255);
/// The ringing screen's Decline button.
pub const DECLINE_FILL: Colour = Colour(190, 60, 50, 255);

/// One thing to paint, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Draw {
    Fill(Area, Colour),
    Text {
        x: i32,
        y: i32,
        scale: u32,
        colour: Colour,
        text: String,
    },
    /// The last picture of `Picture`, scaled into the area (which already has its aspect).
    Video(Picture, Area),
}

/// The ringing screen's hint under the caller's name.
pub const RINGING_HINT: &str = "Enter or click Answer; Esc declines";

/// The text of the ringing screen's first line for a caller named `name`, cut to `columns`.
pub fn ringing_line(name: &str, columns: usize) -> String {
    const SUFFIX: &str = " is calling";
    format!(
        "{}{SUFFIX}",
        ellipsize(name, columns.saturating_sub(SUFFIX.len()))
    )
}

impl UiModel {
    /// What to paint for the current screen. `remote` and `local` are the sizes of the
    /// pictures the renderers hold, if any.
    pub fn draw_list(&self, remote: Option<(u32, u32)>, local: Option<(u32, u32)>) -> Vec<Draw> {
        let mut p = Painter {
            l: self.layout,
            out: Vec::new(),
        };
        match (self.ui, &self.ringing) {
            (Ui::ConnectToServer, _) => connect(self, &mut p),
            (Ui::ListPeers, _) => peers(self, &mut p),
            (Ui::Streaming, Some(r)) => ringing(r, &mut p),
            (Ui::Streaming, None) => streaming(self, &mut p, remote, local),
        }
        p.out
    }
}

/// Collects draw items at one layout.
struct Painter {
    l: Layout,
    out: Vec<Draw>,
}

impl Painter {
    fn fill(&mut self, area: Area, colour: Colour) {
        self.out.push(Draw::Fill(area, colour));
    }

    fn text_scaled(&mut self, x: i32, y: i32, scale: u32, colour: Colour, text: &str) {
        self.out.push(Draw::Text {
            x,
            y,
            scale,
            colour,
            text: text.to_string(),
        });
    }

    fn text(&mut self, x: i32, y: i32, colour: Colour, text: &str) {
        self.text_scaled(x, y, self.l.scale, colour, text);
    }

    /// Text vertically centred in a box of `line_h`, a little in from its left edge.
    fn text_in(&mut self, area: Area, colour: Colour, text: &str) {
        let pad_x = (self.l.scale * 4) as i32;
        let pad_y = (area.h as i32 - (GLYPH * self.l.scale) as i32) / 2;
        self.text(area.x + pad_x, area.y + pad_y, colour, text);
    }

    /// Text centred across the window at `y`.
    fn centred(&mut self, y: i32, scale: u32, colour: Colour, text: &str) {
        let x = (self.l.width as i32 - text_width(text, scale) as i32) / 2;
        self.text_scaled(x, y, scale, colour, text);
    }

    /// A filled button with its label centred (cut to fit).
    fn button(&mut self, area: Area, fill: Colour, colour: Colour, label: &str) {
        let s = self.l.scale;
        self.fill(area, fill);
        let label = ellipsize(label, (area.w / (GLYPH * s)) as usize);
        let x = area.x + (area.w as i32 - text_width(&label, s) as i32) / 2;
        let y = area.y + (area.h as i32 - (GLYPH * s) as i32) / 2;
        self.text(x, y, colour, &label);
    }

    fn background(&mut self, colour: Colour) {
        let l = self.l;
        self.fill(Area::new(0, 0, l.width, l.height), colour);
    }

    fn title(&mut self, text: &str) {
        let l = self.l;
        self.text(l.margin, l.margin, ACCENT, &ellipsize(text, l.columns()));
    }

    fn footer(&mut self, text: &str) {
        let l = self.l;
        let text = ellipsize(text, l.small_columns());
        self.text_scaled(l.margin, l.footer_y, l.small, DIM, &text);
    }

    /// The model's status line, wrapped, at most `max_lines` lines from `top`.
    fn status_lines(&mut self, m: &UiModel, top: i32, max_lines: usize, scale: u32) {
        let l = self.l;
        let Some((text, error)) = &m.status else {
            return;
        };
        let colour = if *error { ERROR } else { TEXT };
        let columns = ((l.width as i32 - 2 * l.margin).max(0) as u32 / (GLYPH * scale)) as usize;
        let line_h = 12 * scale;
        for (i, line) in wrap(text, columns).iter().take(max_lines).enumerate() {
            self.text_scaled(
                l.margin,
                top + (i as u32 * line_h) as i32,
                scale,
                colour,
                line,
            );
        }
    }
}

fn connect(m: &UiModel, p: &mut Painter) {
    let l = p.l;
    p.background(BACKGROUND);
    p.title("PeerConnection client");
    p.text(
        l.margin,
        l.margin + l.line_h as i32,
        DIM,
        &ellipsize(&format!("Signing in as {}", m.name), l.columns()),
    );
    for (label, field, value, which) in [
        ("Server", l.server_field, &m.server, Field::Server),
        ("Port", l.port_field, &m.port, Field::Port),
    ] {
        let focused = m.focus == which && !m.connecting;
        let label_y = field.y + (field.h as i32 - (GLYPH * l.scale) as i32) / 2;
        p.text(l.margin, label_y, TEXT, label);
        if focused {
            let b = l.scale as i32;
            p.fill(
                Area::new(
                    field.x - b,
                    field.y - b,
                    field.w + 2 * b as u32,
                    field.h + 2 * b as u32,
                ),
                ACCENT,
            );
        }
        p.fill(field, PANEL);
        let room = ((field.w - 8 * l.scale) / l.char_w) as usize;
        let shown = if focused {
            format!("{}_", tail(value, room.saturating_sub(1)))
        } else {
            tail(value, room).to_string()
        };
        p.text_in(field, if m.connecting { DIM } else { TEXT }, &shown);
    }
    let (fill, colour) = if m.connecting {
        (PANEL, DIM)
    } else {
        (ACCENT, TEXT)
    };
    p.button(l.connect_button, fill, colour, "Connect");
    let max_lines = ((l.footer_y - l.status_top) / l.line_h as i32).max(1) as usize - 1;
    p.status_lines(m, l.status_top, max_lines.max(1), l.scale);
    p.footer(if m.connecting {
        "Esc: stop trying"
    } else {
        "Tab: next field   Enter: connect"
    });
}

fn peers(m: &UiModel, p: &mut Painter) {
    let l = p.l;
    p.background(BACKGROUND);
    let title = m.signed_in.clone().unwrap_or_default();
    // The title stops short of the Disconnect button.
    let b = l.disconnect_button;
    let room = ((b.x - l.margin).max(0) as u32 / l.char_w).saturating_sub(1) as usize;
    p.text(l.margin, l.margin, ACCENT, &ellipsize(&title, room));
    p.fill(b, PANEL);
    p.text_scaled(
        b.x + (4 * l.small) as i32,
        b.y + (b.h as i32 - (GLYPH * l.small) as i32) / 2,
        l.small,
        TEXT,
        DISCONNECT,
    );
    p.text(
        l.margin,
        l.margin + (l.line_h * 3 / 2) as i32,
        TEXT,
        "List of currently connected peers:",
    );
    if m.peers.is_empty() {
        p.text_in(
            l.row(0),
            DIM,
            "(nobody else yet: waiting for peers to sign in)",
        );
    }
    for (i, (id, name)) in m
        .peers
        .iter()
        .enumerate()
        .skip(m.scroll)
        .take(l.rows_visible)
    {
        let row = l.row(i - m.scroll);
        if i == m.selected {
            p.fill(row, SELECTED);
        }
        let id_text = format!("(id {id})");
        let name_room = l.columns().saturating_sub(id_text.len() + 2);
        let shown = ellipsize(name, name_room);
        p.text_in(row, TEXT, &shown);
        let id_x =
            row.x + (l.scale * 4) as i32 + text_width(&shown, l.scale) as i32 + l.char_w as i32;
        let pad_y = (row.h as i32 - (GLYPH * l.scale) as i32) / 2;
        p.text(id_x, row.y + pad_y, DIM, &id_text);
    }
    if m.peers.len() > l.rows_visible {
        let more = format!(
            "{}-{} of {}",
            m.scroll + 1,
            (m.scroll + l.rows_visible).min(m.peers.len()),
            m.peers.len()
        );
        let x = l.width as i32 - l.margin - text_width(&more, l.scale) as i32;
        p.text(x, l.margin + (l.line_h * 3 / 2) as i32, DIM, &more);
    }
    let top = l.footer_y - 2 * (12 * l.small) as i32 - (l.small * 4) as i32;
    p.status_lines(m, top, 2, l.small);
    p.footer("Up/Down: select   Enter or double-click: call   Esc: disconnect");
}

/// The streaming screen while a call rings: who is calling, how to answer, two buttons. No
/// pictures: nothing is sent or received before the user answers.
fn ringing(r: &Ringing, p: &mut Painter) {
    let l = p.l;
    p.background(BACKGROUND);
    p.title("Incoming call");
    p.centred(
        l.ringing_y,
        l.scale,
        ACCENT,
        &ringing_line(&r.name, l.columns()),
    );
    p.centred(
        l.ringing_y + l.line_h as i32,
        l.small,
        TEXT,
        &ellipsize(RINGING_HINT, l.small_columns()),
    );
    p.button(l.answer_button, ANSWER_FILL, TEXT, ANSWER);
    p.button(l.decline_button, DECLINE_FILL, TEXT, DECLINE);
    p.footer("Enter: answer   Esc: decline");
}

fn streaming(m: &UiModel, p: &mut Painter, remote: Option<(u32, u32)>, local: Option<(u32, u32)>) {
    let l = p.l;
    p.background(VIDEO_BACKGROUND);
    let (remote_area, local_area) = streaming_areas(l.width, l.height, remote, local);
    match remote_area {
        Some(a) => p.out.push(Draw::Video(Picture::Remote, a)),
        None => {
            let text = ellipsize(&m.call_status, l.columns());
            let y = (l.height as i32 - (GLYPH * l.scale) as i32) / 2;
            p.centred(y, l.scale, TEXT, &text);
        }
    }
    if let Some(a) = local_area {
        let b = l.scale.max(1) as i32;
        p.fill(
            Area::new(a.x - b, a.y - b, a.w + 2 * b as u32, a.h + 2 * b as u32),
            DIM,
        );
        p.out.push(Draw::Video(Picture::Local, a));
    }
    // The overlay: the peer's name, the warning if any, the stats, the hint.
    let name = m.call.as_ref().map_or("", |c| c.1.as_str());
    let mut lines = vec![(name.to_string(), ACCENT)];
    if let Some(w) = &m.warning {
        lines.push((w.clone(), WARNING));
    }
    lines.extend(m.overlay.iter().map(|t| (t.clone(), TEXT)));
    // Chat: the recent lines (or the scroll-back), then the field while typing.
    let rows = (l.height.saturating_sub(2 * l.margin as u32) / l.line_h.max(1)) as usize;
    let room = rows.saturating_sub(lines.len() + 2).max(1);
    lines.extend(
        m.chat
            .visible(m.now, room)
            .into_iter()
            .map(|t| (t.to_string(), CHAT)),
    );
    match m.chat.editing() {
        Some(typed) => {
            // The end of a long line stays in view, where the typing is.
            let cols = l.columns().saturating_sub(3);
            let skip = typed.chars().count().saturating_sub(cols);
            let shown: String = typed.chars().skip(skip).collect();
            lines.push((format!("> {shown}_"), ACCENT));
            lines.push(("Enter: send   Esc: cancel".into(), TEXT));
        }
        None => lines.push(("Enter: chat  Tab: log  Esc: hang up".into(), TEXT)),
    }
    let cols = l.columns();
    let lines: Vec<(String, Colour)> = lines
        .into_iter()
        .map(|(t, c)| (ellipsize(&t, cols), c))
        .collect();
    let widest = lines
        .iter()
        .map(|(t, _)| text_width(t, l.scale))
        .max()
        .unwrap_or(0);
    let pad = (4 * l.scale) as i32;
    let box_area = Area::new(
        l.margin - pad,
        l.margin - pad,
        widest + 2 * pad as u32,
        lines.len() as u32 * l.line_h + 2 * pad as u32 - (l.line_h - GLYPH * l.scale),
    );
    p.fill(box_area, OVERLAY);
    if m.warning.is_some() {
        // A warning edge down the box's left side, so it catches the eye over any picture.
        p.fill(
            Area::new(box_area.x, box_area.y, l.scale, box_area.h),
            WARNING,
        );
    }
    for (i, (line, colour)) in lines.iter().enumerate() {
        p.text(
            l.margin,
            l.margin + (i as u32 * l.line_h) as i32,
            *colour,
            line,
        );
    }
}

/// The texts of a draw list, in order (for tests here and in the model).
#[cfg(test)]
pub(super) fn texts(draws: &[Draw]) -> Vec<String> {
    draws
        .iter()
        .filter_map(|d| match d {
            Draw::Text { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::main_wnd::model::{Key, UiAction};

    fn model() -> UiModel {
        UiModel::new("alice", "localhost", 8888, 640, 480)
    }

    /// The draw item showing exactly `text`.
    fn find_text(draws: &[Draw], text: &str) -> Option<(i32, i32, u32, Colour)> {
        draws.iter().find_map(|d| match d {
            Draw::Text {
                x,
                y,
                scale,
                colour,
                text: t,
            } if t == text => Some((*x, *y, *scale, *colour)),
            _ => None,
        })
    }

    #[test]
    fn streaming_shows_video_preview_and_overlay_and_esc_hangs_up() {
        let mut m = model();
        m.switch_to_streaming(4u32, "bob");
        assert_eq!(m.current_ui().to_string(), "STREAMING");
        let before = m.draw_list(None, None);
        assert!(texts(&before).iter().any(|t| t == "Calling bob..."));
        m.set_overlay(vec!["30.0 fps  900 kbit/s  640x480  RTT 1.0 ms".into()]);
        let draws = m.draw_list(Some((640, 480)), Some((640, 480)));
        let remote = draws.iter().find_map(|d| match d {
            Draw::Video(Picture::Remote, a) => Some(*a),
            _ => None,
        });
        let local = draws.iter().find_map(|d| match d {
            Draw::Video(Picture::Local, a) => Some(*a),
            _ => None,
        });
        assert_eq!(remote, Some(Area::new(0, 0, 640, 480)));
        let local = local.expect("preview");
        assert!(local.x > 320 && local.y > 240, "bottom-right: {local:?}");
        assert!(local.right() < 640 && local.bottom() < 480);
        let shown = texts(&draws);
        assert!(shown.iter().any(|t| t == "bob"));
        assert!(shown.iter().any(|t| t.contains("30.0 fps")));
        // The overlay is drawn after the video, so it sits on top.
        let video_at = draws
            .iter()
            .position(|d| matches!(d, Draw::Video(Picture::Remote, _)));
        let name_at = draws
            .iter()
            .position(|d| matches!(d, Draw::Text { text, .. } if text == "bob"));
        assert!(video_at < name_at);
        // Enter opens the chat field, typed text shows in it, Enter sends it.
        assert_eq!(m.key(Key::Enter), None);
        m.text("hi");
        assert!(texts(&m.draw_list(None, None)).iter().any(|t| t == "> hi_"));
        assert_eq!(m.key(Key::Enter), Some(UiAction::SendChat("hi".into())));
        assert!(texts(&m.draw_list(None, None))
            .iter()
            .any(|t| t == "alice: hi"));
        assert_eq!(m.key(Key::Mute), Some(UiAction::ToggleMute));
        assert_eq!(m.key(Key::Escape), Some(UiAction::HangUp));
    }

    #[test]
    fn the_ringing_screen_names_the_caller_and_draws_both_buttons() {
        let mut m = model();
        m.switch_to_peer_list("alice (id 9) at localhost:8888");
        m.show_incoming_call(4u32, "bob");
        // No pictures while ringing, even if the renderers still hold some.
        let draws = m.draw_list(Some((640, 480)), Some((640, 480)));
        assert!(
            !draws.iter().any(|d| matches!(d, Draw::Video(..))),
            "{draws:?}"
        );
        let l = m.layout();
        let (x, y, scale, colour) = find_text(&draws, "bob is calling").expect("caller");
        assert_eq!((y, scale, colour), (l.ringing_y, l.scale, ACCENT));
        assert_eq!(
            x,
            (640 - text_width("bob is calling", l.scale) as i32) / 2,
            "centred"
        );
        assert!(
            find_text(&draws, RINGING_HINT).is_some(),
            "{:?}",
            texts(&draws)
        );
        assert!(draws.contains(&Draw::Fill(l.answer_button, ANSWER_FILL)));
        assert!(draws.contains(&Draw::Fill(l.decline_button, DECLINE_FILL)));
        for (label, button) in [("Answer", l.answer_button), ("Decline", l.decline_button)] {
            let (x, y, scale, _) = find_text(&draws, label).expect(label);
            let w = text_width(label, scale) as i32;
            assert!(
                button.contains(x, y) && button.contains(x + w - 1, y),
                "{label}"
            );
            // The label is painted after its button, so it shows on top.
            let fill_at = draws.iter().position(|d| {
                *d == Draw::Fill(button, ANSWER_FILL) || *d == Draw::Fill(button, DECLINE_FILL)
            });
            let text_at = draws
                .iter()
                .position(|d| matches!(d, Draw::Text { text, .. } if text == label));
            assert!(fill_at < text_at, "{label}");
        }
        // Answered: the streaming screen proper, with the caller's name in the overlay.
        assert_eq!(m.key(Key::Enter), Some(UiAction::Answer(4u32)));
        m.switch_to_streaming(4u32, "bob");
        let shown = texts(&m.draw_list(None, None));
        assert!(
            shown.iter().any(|t| t == "Connecting to bob..."),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|t| t.contains("is calling")), "{shown:?}");
    }

    #[test]
    fn long_caller_names_are_cut_to_the_window() {
        let mut m = UiModel::new("alice", "localhost", 8888, 320, 240);
        let name = "a-very-long-name-that-goes-on-and-on";
        m.show_incoming_call(4u32, name);
        let l = m.layout();
        let draws = m.draw_list(None, None);
        let line = texts(&draws)
            .into_iter()
            .find(|t| t.ends_with(" is calling"))
            .expect("caller line");
        assert!(line.len() <= l.columns(), "{line:?}");
        assert!(line.starts_with("a-very"), "{line:?}");
        let (x, ..) = find_text(&draws, &line).unwrap();
        assert!(x >= 0);
        assert_eq!(ringing_line("bob", 40), "bob is calling");
    }

    #[test]
    fn a_warning_shows_under_the_name_in_its_own_colour() {
        let mut m = model();
        m.switch_to_streaming(4u32, "bob");
        m.set_overlay(vec!["30.0 fps  900 kbit/s".into()]);
        let quiet = m.draw_list(Some((640, 480)), None);
        assert!(!quiet
            .iter()
            .any(|d| matches!(d, Draw::Text { colour, .. } if *colour == WARNING)));
        m.set_warning(Some("bob is not answering (3 s)".into()));
        let draws = m.draw_list(Some((640, 480)), None);
        let l = m.layout();
        let (x, y, scale, colour) =
            find_text(&draws, "bob is not answering (3 s)").expect("warning");
        assert_eq!(
            (x, y, scale, colour),
            (l.margin, l.margin + l.line_h as i32, l.scale, WARNING)
        );
        assert_ne!(WARNING, TEXT);
        assert_ne!(WARNING, ACCENT);
        // The name stays first; the stats follow the warning.
        assert_eq!(find_text(&draws, "bob").unwrap().1, l.margin);
        assert_eq!(
            find_text(&draws, "30.0 fps  900 kbit/s").unwrap().1,
            l.margin + 2 * l.line_h as i32
        );
        // Over the picture, with a warning edge on the overlay box.
        let video_at = draws
            .iter()
            .position(|d| matches!(d, Draw::Video(Picture::Remote, _)));
        let edge_at = draws
            .iter()
            .position(|d| matches!(d, Draw::Fill(_, c) if *c == WARNING));
        assert!(video_at < edge_at, "{draws:?}");
        m.set_warning(None);
        assert_eq!(m.draw_list(Some((640, 480)), None), quiet);
    }
}
