//! What the window shows and how it answers input, without SDL: the three screens of the
//! original (`CONNECT_TO_SERVER`, `LIST_PEERS`, `STREAMING`), the connect form, the peer list
//! selection, and the layout at any window size. Input comes in as [`Key`]s, typed text and
//! clicks; what the user asked for goes out as [`UiAction`]s; what to paint goes out as a
//! list of [`Draw`] items that `MainWnd` executes.

use std::fmt;

use super::text::{ellipsize, tail, text_width, wrap, GLYPH};
use crate::media::render::{fit_rect, Area};
use crate::signaling::PeerId;

/// The original's `MainWindow::UI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ui {
    ConnectToServer,
    ListPeers,
    Streaming,
}

impl fmt::Display for Ui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ui::ConnectToServer => "CONNECT_TO_SERVER",
            Ui::ListPeers => "LIST_PEERS",
            Ui::Streaming => "STREAMING",
        })
    }
}

/// The keys the window acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Escape,
    Tab,
    BackTab,
    Backspace,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiAction {
    /// The Connect action: sign in to this server.
    Connect { server: String, port: u16 },
    /// Stop trying to sign in.
    CancelConnect,
    /// Call this peer (Enter or a double click on its row; `--autocall`).
    Call(PeerId),
    /// Sign out and go back to the connect screen (Esc on the peer list).
    SignOut,
    /// End the call (Esc while streaming).
    HangUp,
    /// Answer the ringing call from this peer.
    Answer(PeerId),
    /// Decline the ringing call from this peer (a `BYE`).
    Decline(PeerId),
    /// The window was closed.
    Quit,
}

/// The connect form's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Server,
    Port,
}

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
}

/// The peer list's sign-out button.
const DISCONNECT: &str = "Disconnect";

/// Characters the server field holds (a DNS name is at most 253).
const MAX_SERVER_CHARS: usize = 253;

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

/// The window's state: which screen, the form, the list, the call and its stats.
#[derive(Debug, Clone)]
pub struct UiModel {
    ui: Ui,
    layout: Layout,
    name: String,
    server: String,
    port: String,
    focus: Field,
    connecting: bool,
    status: Option<(String, bool)>,
    signed_in: Option<String>,
    peers: Vec<(PeerId, String)>,
    selected: usize,
    scroll: usize,
    call: Option<(PeerId, String)>,
    call_status: String,
    overlay: Vec<String>,
}

impl UiModel {
    /// The connect screen, pre-filled with `server` and `port` (the flags).
    pub fn new(name: &str, server: &str, port: u16, width: u32, height: u32) -> UiModel {
        UiModel {
            ui: Ui::ConnectToServer,
            layout: Layout::for_window(width, height),
            name: name.to_string(),
            server: server.to_string(),
            port: port.to_string(),
            focus: Field::Server,
            connecting: false,
            status: None,
            signed_in: None,
            peers: Vec::new(),
            selected: 0,
            scroll: 0,
            call: None,
            call_status: String::new(),
            overlay: Vec::new(),
        }
    }

    pub fn current_ui(&self) -> Ui {
        self.ui
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn resize(&mut self, width: u32, height: u32) {
        self.layout = Layout::for_window(width, height);
        self.keep_selection_visible();
    }

    pub fn focus(&self) -> Field {
        self.focus
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn port(&self) -> &str {
        &self.port
    }

    pub fn is_connecting(&self) -> bool {
        self.connecting
    }

    /// The peer whose row is selected.
    pub fn selected_peer(&self) -> Option<PeerId> {
        self.peers.get(self.selected).map(|p| p.0)
    }

    pub fn switch_to_connect_ui(&mut self) {
        self.ui = Ui::ConnectToServer;
        self.connecting = false;
        self.signed_in = None;
        self.call = None;
    }

    /// `signed_in` describes the session for the list's title ("alice (id 3) at host:port").
    pub fn switch_to_peer_list(&mut self, signed_in: &str) {
        self.ui = Ui::ListPeers;
        self.connecting = false;
        self.signed_in = Some(signed_in.to_string());
        self.call = None;
        self.overlay.clear();
    }

    pub fn switch_to_streaming(&mut self, peer: PeerId, name: &str) {
        self.ui = Ui::Streaming;
        self.call = Some((peer, name.to_string()));
        self.call_status = format!("Calling {name}...");
        self.overlay.clear();
    }

    /// Resolving or signing in: the form is read-only and Esc cancels.
    pub fn set_connecting(&mut self, connecting: bool) {
        self.connecting = connecting;
    }

    /// The status line (connect screen and peer list); `error` draws it in the error colour.
    pub fn set_status(&mut self, text: &str, error: bool) {
        self.status = Some((text.to_string(), error));
    }

    pub fn status(&self) -> Option<&str> {
        self.status.as_ref().map(|s| s.0.as_str())
    }

    /// Shown in the middle of the streaming screen until the first remote picture.
    pub fn set_call_status(&mut self, text: &str) {
        self.call_status = text.to_string();
    }

    /// The streaming overlay's lines below the peer's name (the live stats).
    pub fn set_overlay(&mut self, lines: Vec<String>) {
        self.overlay = lines;
    }

    /// The other members, in the server's id order; the selection follows its peer.
    pub fn set_peers<'a>(&mut self, peers: impl IntoIterator<Item = (PeerId, &'a str)>) {
        let keep = self.selected_peer();
        self.peers = peers
            .into_iter()
            .map(|(id, name)| (id, name.to_string()))
            .collect();
        self.selected = keep
            .and_then(|id| self.peers.iter().position(|p| p.0 == id))
            .unwrap_or(0)
            .min(self.peers.len().saturating_sub(1));
        self.keep_selection_visible();
    }

    fn keep_selection_visible(&mut self) {
        let visible = self.layout.rows_visible.max(1);
        if self.selected < self.scroll {
            self.scroll = self.selected;
        } else if self.selected >= self.scroll + visible {
            self.scroll = self.selected + 1 - visible;
        }
        self.scroll = self.scroll.min(self.peers.len().saturating_sub(visible));
    }

    fn select(&mut self, index: usize) {
        if !self.peers.is_empty() {
            self.selected = index.min(self.peers.len() - 1);
            self.keep_selection_visible();
        }
    }

    /// A key press on the current screen.
    pub fn key(&mut self, key: Key) -> Option<UiAction> {
        match self.ui {
            Ui::ConnectToServer => match key {
                Key::Enter => self.try_connect(),
                Key::Escape if self.connecting => Some(UiAction::CancelConnect),
                Key::Tab | Key::BackTab | Key::Up | Key::Down => {
                    self.focus = match self.focus {
                        Field::Server => Field::Port,
                        Field::Port => Field::Server,
                    };
                    None
                }
                Key::Backspace if !self.connecting => {
                    match self.focus {
                        Field::Server => self.server.pop(),
                        Field::Port => self.port.pop(),
                    };
                    None
                }
                _ => None,
            },
            Ui::ListPeers => {
                let page = self.layout.rows_visible.max(1);
                match key {
                    Key::Up => self.select(self.selected.saturating_sub(1)),
                    Key::Down => self.select(self.selected + 1),
                    Key::PageUp => self.select(self.selected.saturating_sub(page)),
                    Key::PageDown => self.select(self.selected + page),
                    Key::Home => self.select(0),
                    Key::End => self.select(usize::MAX),
                    Key::Enter => return self.selected_peer().map(UiAction::Call),
                    Key::Escape => return Some(UiAction::SignOut),
                    _ => {}
                }
                None
            }
            Ui::Streaming => (key == Key::Escape).then_some(UiAction::HangUp),
        }
    }

    /// Text typed into the focused field (connect screen only, and not while connecting).
    /// The port takes digits only; nothing takes spaces or control characters.
    pub fn text(&mut self, typed: &str) {
        if self.ui != Ui::ConnectToServer || self.connecting {
            return;
        }
        for c in typed.chars().filter(|c| c.is_ascii_graphic()) {
            match self.focus {
                Field::Server if self.server.len() < MAX_SERVER_CHARS => self.server.push(c),
                Field::Port if c.is_ascii_digit() && self.port.len() < 5 => self.port.push(c),
                _ => {}
            }
        }
    }

    /// A left click at `(x, y)`; `clicks` is 2 for a double click.
    pub fn click(&mut self, x: i32, y: i32, clicks: u8) -> Option<UiAction> {
        let l = self.layout;
        match self.ui {
            Ui::ConnectToServer => {
                if l.server_field.contains(x, y) {
                    self.focus = Field::Server;
                } else if l.port_field.contains(x, y) {
                    self.focus = Field::Port;
                } else if l.connect_button.contains(x, y) {
                    return self.try_connect();
                }
                None
            }
            Ui::ListPeers => {
                if l.disconnect_button.contains(x, y) {
                    return Some(UiAction::SignOut);
                }
                let visible = self.peers.len().saturating_sub(self.scroll);
                let row = (0..visible.min(l.rows_visible)).find(|&i| l.row(i).contains(x, y))?;
                self.select(self.scroll + row);
                (clicks >= 2).then(|| self.selected_peer().map(UiAction::Call))?
            }
            Ui::Streaming => None,
        }
    }

    /// Mouse wheel on the list moves the selection.
    pub fn wheel(&mut self, lines: i32) {
        if self.ui == Ui::ListPeers {
            let target = self.selected as i64 - lines as i64;
            self.select(target.max(0) as usize);
        }
    }

    fn try_connect(&mut self) -> Option<UiAction> {
        if self.connecting {
            return None;
        }
        let server = self.server.trim().to_string();
        if server.is_empty() {
            self.set_status("Enter the server's host name or address.", true);
            self.focus = Field::Server;
            return None;
        }
        let port = match self.port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                let msg = format!(
                    "The port must be a number from 1 to 65535, not {:?}.",
                    self.port
                );
                self.set_status(&msg, true);
                self.focus = Field::Port;
                return None;
            }
        };
        self.connecting = true;
        self.set_status(&format!("Connecting to {server}:{port}..."), false);
        Some(UiAction::Connect { server, port })
    }

    /// What to paint for the current screen. `remote` and `local` are the sizes of the
    /// pictures the renderers hold, if any.
    pub fn draw_list(&self, remote: Option<(u32, u32)>, local: Option<(u32, u32)>) -> Vec<Draw> {
        let mut out = Vec::new();
        match self.ui {
            Ui::ConnectToServer => self.draw_connect(&mut out),
            Ui::ListPeers => self.draw_peers(&mut out),
            Ui::Streaming => self.draw_streaming(&mut out, remote, local),
        }
        out
    }

    fn put_text(&self, out: &mut Vec<Draw>, x: i32, y: i32, colour: Colour, text: &str) {
        out.push(Draw::Text {
            x,
            y,
            scale: self.layout.scale,
            colour,
            text: text.to_string(),
        });
    }

    /// Text vertically centred in a box of `line_h`.
    fn put_text_in(&self, out: &mut Vec<Draw>, area: Area, colour: Colour, text: &str) {
        let pad_x = (self.layout.scale * 4) as i32;
        let pad_y = (area.h as i32 - (GLYPH * self.layout.scale) as i32) / 2;
        self.put_text(out, area.x + pad_x, area.y + pad_y, colour, text);
    }

    fn title(&self, out: &mut Vec<Draw>, text: &str) {
        let l = self.layout;
        let cols = l.columns();
        self.put_text(out, l.margin, l.margin, ACCENT, &ellipsize(text, cols));
    }

    fn status_lines(&self, out: &mut Vec<Draw>, top: i32, max_lines: usize, scale: u32) {
        let l = self.layout;
        let Some((text, error)) = &self.status else {
            return;
        };
        let colour = if *error { ERROR } else { TEXT };
        let columns = ((l.width as i32 - 2 * l.margin).max(0) as u32 / (GLYPH * scale)) as usize;
        let line_h = 12 * scale;
        for (i, line) in wrap(text, columns).iter().take(max_lines).enumerate() {
            out.push(Draw::Text {
                x: l.margin,
                y: top + (i as u32 * line_h) as i32,
                scale,
                colour,
                text: line.clone(),
            });
        }
    }

    fn footer(&self, out: &mut Vec<Draw>, text: &str) {
        let l = self.layout;
        out.push(Draw::Text {
            x: l.margin,
            y: l.footer_y,
            scale: l.small,
            colour: DIM,
            text: ellipsize(text, l.small_columns()),
        });
    }

    fn draw_connect(&self, out: &mut Vec<Draw>) {
        let l = self.layout;
        out.push(Draw::Fill(Area::new(0, 0, l.width, l.height), BACKGROUND));
        self.title(out, "PeerConnection client");
        self.put_text(
            out,
            l.margin,
            l.margin + l.line_h as i32,
            DIM,
            &ellipsize(&format!("Signing in as {}", self.name), l.columns()),
        );
        for (label, field, value, which) in [
            ("Server", l.server_field, &self.server, Field::Server),
            ("Port", l.port_field, &self.port, Field::Port),
        ] {
            let focused = self.focus == which && !self.connecting;
            let label_y = field.y + (field.h as i32 - (GLYPH * l.scale) as i32) / 2;
            self.put_text(out, l.margin, label_y, TEXT, label);
            if focused {
                let b = l.scale as i32;
                out.push(Draw::Fill(
                    Area::new(
                        field.x - b,
                        field.y - b,
                        field.w + 2 * b as u32,
                        field.h + 2 * b as u32,
                    ),
                    ACCENT,
                ));
            }
            out.push(Draw::Fill(field, PANEL));
            let room = ((field.w - 8 * l.scale) / l.char_w) as usize;
            let shown = if focused {
                format!("{}_", tail(value, room.saturating_sub(1)))
            } else {
                tail(value, room).to_string()
            };
            self.put_text_in(out, field, if self.connecting { DIM } else { TEXT }, &shown);
        }
        let button = l.connect_button;
        let (fill, label) = if self.connecting {
            (PANEL, "Connect")
        } else {
            (ACCENT, "Connect")
        };
        out.push(Draw::Fill(button, fill));
        let label_x = button.x + (button.w as i32 - text_width(label, l.scale) as i32) / 2;
        let label_y = button.y + (button.h as i32 - (GLYPH * l.scale) as i32) / 2;
        self.put_text(
            out,
            label_x,
            label_y,
            if self.connecting { DIM } else { TEXT },
            label,
        );
        let max_lines = ((l.footer_y - l.status_top) / l.line_h as i32).max(1) as usize - 1;
        self.status_lines(out, l.status_top, max_lines.max(1), l.scale);
        self.footer(
            out,
            if self.connecting {
                "Esc: stop trying"
            } else {
                "Tab: next field   Enter: connect"
            },
        );
    }

    fn draw_peers(&self, out: &mut Vec<Draw>) {
        let l = self.layout;
        out.push(Draw::Fill(Area::new(0, 0, l.width, l.height), BACKGROUND));
        let title = self.signed_in.clone().unwrap_or_default();
        // The title stops short of the Disconnect button.
        let b = l.disconnect_button;
        let room = ((b.x - l.margin).max(0) as u32 / l.char_w).saturating_sub(1) as usize;
        self.put_text(out, l.margin, l.margin, ACCENT, &ellipsize(&title, room));
        out.push(Draw::Fill(b, PANEL));
        out.push(Draw::Text {
            x: b.x + (4 * l.small) as i32,
            y: b.y + (b.h as i32 - (GLYPH * l.small) as i32) / 2,
            scale: l.small,
            colour: TEXT,
            text: DISCONNECT.into(),
        });
        self.put_text(
            out,
            l.margin,
            l.margin + (l.line_h * 3 / 2) as i32,
            TEXT,
            "List of currently connected peers:",
        );
        if self.peers.is_empty() {
            self.put_text_in(
                out,
                l.row(0),
                DIM,
                "(nobody else yet: waiting for peers to sign in)",
            );
        }
        for (i, (id, name)) in self
            .peers
            .iter()
            .enumerate()
            .skip(self.scroll)
            .take(l.rows_visible)
        {
            let row = l.row(i - self.scroll);
            if i == self.selected {
                out.push(Draw::Fill(row, SELECTED));
            }
            let id_text = format!("(id {id})");
            let name_room = l.columns().saturating_sub(id_text.len() + 2);
            let shown = ellipsize(name, name_room);
            self.put_text_in(out, row, TEXT, &shown);
            let id_x =
                row.x + (l.scale * 4) as i32 + text_width(&shown, l.scale) as i32 + l.char_w as i32;
            let pad_y = (row.h as i32 - (GLYPH * l.scale) as i32) / 2;
            self.put_text(out, id_x, row.y + pad_y, DIM, &id_text);
        }
        if self.peers.len() > l.rows_visible {
            let more = format!(
                "{}-{} of {}",
                self.scroll + 1,
                (self.scroll + l.rows_visible).min(self.peers.len()),
                self.peers.len()
            );
            let x = l.width as i32 - l.margin - text_width(&more, l.scale) as i32;
            self.put_text(out, x, l.margin + (l.line_h * 3 / 2) as i32, DIM, &more);
        }
        let top = l.footer_y - 2 * (12 * l.small) as i32 - (l.small * 4) as i32;
        self.status_lines(out, top, 2, l.small);
        self.footer(
            out,
            "Up/Down: select   Enter or double-click: call   Esc: disconnect",
        );
    }

    fn draw_streaming(
        &self,
        out: &mut Vec<Draw>,
        remote: Option<(u32, u32)>,
        local: Option<(u32, u32)>,
    ) {
        let l = self.layout;
        out.push(Draw::Fill(
            Area::new(0, 0, l.width, l.height),
            VIDEO_BACKGROUND,
        ));
        let (remote_area, local_area) = streaming_areas(l.width, l.height, remote, local);
        match remote_area {
            Some(a) => out.push(Draw::Video(Picture::Remote, a)),
            None => {
                let text = ellipsize(&self.call_status, l.columns());
                let x = (l.width as i32 - text_width(&text, l.scale) as i32) / 2;
                let y = (l.height as i32 - (GLYPH * l.scale) as i32) / 2;
                self.put_text(out, x, y, TEXT, &text);
            }
        }
        if let Some(a) = local_area {
            let b = l.scale.max(1) as i32;
            out.push(Draw::Fill(
                Area::new(a.x - b, a.y - b, a.w + 2 * b as u32, a.h + 2 * b as u32),
                DIM,
            ));
            out.push(Draw::Video(Picture::Local, a));
        }
        let name = self.call.as_ref().map_or("", |c| c.1.as_str());
        let mut lines = vec![name.to_string()];
        lines.extend(self.overlay.iter().cloned());
        lines.push("Esc: hang up".into());
        let cols = l.columns();
        let lines: Vec<String> = lines.iter().map(|t| ellipsize(t, cols)).collect();
        let widest = lines
            .iter()
            .map(|t| text_width(t, l.scale))
            .max()
            .unwrap_or(0);
        let pad = (4 * l.scale) as i32;
        out.push(Draw::Fill(
            Area::new(
                l.margin - pad,
                l.margin - pad,
                widest + 2 * pad as u32,
                lines.len() as u32 * l.line_h + 2 * pad as u32 - (l.line_h - GLYPH * l.scale),
            ),
            OVERLAY,
        ));
        for (i, line) in lines.iter().enumerate() {
            let colour = if i == 0 { ACCENT } else { TEXT };
            self.put_text(
                out,
                l.margin,
                l.margin + (i as u32 * l.line_h) as i32,
                colour,
                line,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> UiModel {
        UiModel::new("alice", "localhost", 8888, 640, 480)
    }

    fn texts(draws: &[Draw]) -> Vec<String> {
        draws
            .iter()
            .filter_map(|d| match d {
                Draw::Text { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn listing(m: &mut UiModel, names: &[(u32, &str)]) {
        m.switch_to_peer_list("alice (id 9) at localhost:8888");
        m.set_peers(names.iter().map(|&(id, n)| (PeerId::from(id), n)));
    }

    #[test]
    fn connect_form_is_prefilled_and_enter_connects() {
        let mut m = model();
        assert_eq!(m.current_ui(), Ui::ConnectToServer);
        assert_eq!(m.current_ui().to_string(), "CONNECT_TO_SERVER");
        let shown = texts(&m.draw_list(None, None));
        assert!(
            shown.iter().any(|t| t.starts_with("localhost")),
            "{shown:?}"
        );
        assert!(shown.iter().any(|t| t == "8888"), "{shown:?}");
        assert_eq!(
            m.key(Key::Enter),
            Some(UiAction::Connect {
                server: "localhost".into(),
                port: 8888
            })
        );
        assert!(m.is_connecting());
        assert_eq!(m.key(Key::Enter), None, "one Connect at a time");
        m.text("x");
        assert_eq!(m.server(), "localhost", "read-only while connecting");
        assert_eq!(m.key(Key::Escape), Some(UiAction::CancelConnect));
    }

    #[test]
    fn fields_edit_and_bad_ports_are_named() {
        let mut m = model();
        for _ in 0.."localhost".len() {
            m.key(Key::Backspace);
        }
        m.text("10.0.0.7 \t");
        assert_eq!(m.server(), "10.0.0.7", "no spaces or controls");
        m.key(Key::Tab);
        assert_eq!(m.focus(), Field::Port);
        m.key(Key::Backspace);
        m.key(Key::Backspace);
        m.key(Key::Backspace);
        m.key(Key::Backspace);
        m.text("9x9");
        assert_eq!(m.port(), "99", "digits only");
        m.text("9999");
        assert_eq!(m.port(), "99999", "five digits at most");
        assert_eq!(m.key(Key::Enter), None);
        let status = m.status().unwrap();
        assert!(status.contains("\"99999\""), "{status}");
        m.key(Key::Backspace);
        assert_eq!(
            m.key(Key::Enter),
            Some(UiAction::Connect {
                server: "10.0.0.7".into(),
                port: 9999
            })
        );
    }

    #[test]
    fn empty_server_is_refused() {
        let mut m = UiModel::new("a", "", 1, 640, 480);
        assert_eq!(m.key(Key::Enter), None);
        assert!(m.status().unwrap().contains("host name"));
        assert!(!m.is_connecting());
    }

    #[test]
    fn clicks_focus_fields_and_press_connect() {
        let mut m = model();
        let l = m.layout();
        m.click(l.port_field.x + 2, l.port_field.y + 2, 1);
        assert_eq!(m.focus(), Field::Port);
        m.click(l.server_field.x + 2, l.server_field.y + 2, 1);
        assert_eq!(m.focus(), Field::Server);
        let b = l.connect_button;
        assert!(matches!(
            m.click(b.x + 1, b.y + 1, 1),
            Some(UiAction::Connect { .. })
        ));
    }

    #[test]
    fn peer_list_selects_with_keys_and_calls_with_enter() {
        let mut m = model();
        listing(&mut m, &[(1, "bob"), (2, "carol"), (5, "dave")]);
        assert_eq!(m.current_ui(), Ui::ListPeers);
        let shown = texts(&m.draw_list(None, None));
        for name in ["bob", "carol", "dave", "List of currently connected peers:"] {
            assert!(shown.iter().any(|t| t == name), "{name} in {shown:?}");
        }
        assert_eq!(m.selected_peer(), Some(1u32));
        m.key(Key::Down);
        m.key(Key::Down);
        m.key(Key::Down);
        assert_eq!(m.selected_peer(), Some(5u32), "stops at the end");
        m.key(Key::Up);
        assert_eq!(m.key(Key::Enter), Some(UiAction::Call(2u32)));
        assert_eq!(m.key(Key::Escape), Some(UiAction::SignOut));
        let b = m.layout().disconnect_button;
        assert_eq!(m.click(b.x + 2, b.y + 2, 1), Some(UiAction::SignOut));
        let shown = texts(&m.draw_list(None, None));
        assert!(shown.iter().any(|t| t == "Disconnect"), "{shown:?}");
    }

    #[test]
    fn selection_follows_its_peer_when_the_list_changes() {
        let mut m = model();
        listing(&mut m, &[(1, "bob"), (2, "carol")]);
        m.key(Key::Down);
        m.set_peers([(0u32, "zed"), (1u32, "bob"), (2u32, "carol")]);
        assert_eq!(m.selected_peer(), Some(2u32));
        m.set_peers([(1u32, "bob")]);
        assert_eq!(m.selected_peer(), Some(1u32), "carol left");
        m.set_peers(std::iter::empty());
        assert_eq!(m.selected_peer(), None);
        assert_eq!(m.key(Key::Enter), None);
        let shown = texts(&m.draw_list(None, None));
        assert!(
            shown.iter().any(|t| t.contains("waiting for peers")),
            "{shown:?}"
        );
    }

    #[test]
    fn double_click_calls_and_single_click_selects() {
        let mut m = model();
        listing(&mut m, &[(1, "bob"), (2, "carol")]);
        let row = m.layout().row(1);
        assert_eq!(m.click(row.x + 3, row.y + 3, 1), None);
        assert_eq!(m.selected_peer(), Some(2u32));
        assert_eq!(m.click(row.x + 3, row.y + 3, 2), Some(UiAction::Call(2u32)));
        let below = m.layout().row(5);
        assert_eq!(m.click(below.x + 3, below.y + 3, 2), None, "no row there");
    }

    #[test]
    fn long_lists_scroll_to_keep_the_selection_visible() {
        let mut m = model();
        let names: Vec<(u32, String)> = (0..100).map(|i| (i, format!("peer{i}"))).collect();
        m.switch_to_peer_list("me");
        m.set_peers(names.iter().map(|(i, n)| (PeerId::from(*i), n.as_str())));
        let visible = m.layout().rows_visible;
        assert!((5..100).contains(&visible), "{visible}");
        m.key(Key::End);
        assert_eq!(m.selected_peer(), Some(99u32));
        let shown = texts(&m.draw_list(None, None));
        assert!(shown.iter().any(|t| t == "peer99"));
        assert!(!shown.iter().any(|t| t == "peer0"));
        assert!(shown.iter().any(|t| t.ends_with("of 100")), "{shown:?}");
        m.key(Key::Home);
        let shown = texts(&m.draw_list(None, None));
        assert!(shown.iter().any(|t| t == "peer0"));
        m.wheel(-3);
        assert_eq!(m.selected_peer(), Some(3u32));
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
        assert_eq!(m.key(Key::Enter), None);
        assert_eq!(m.key(Key::Escape), Some(UiAction::HangUp));
    }

    #[test]
    fn layouts_fit_every_window_size() {
        for (w, h) in [
            (64, 64),
            (320, 240),
            (640, 480),
            (1280, 720),
            (1920, 1080),
            (3840, 2160),
            (200, 1000),
        ] {
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
}
