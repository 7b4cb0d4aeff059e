//! What the window holds and how it answers input, without SDL: the three screens of the
//! original (`CONNECT_TO_SERVER`, `LIST_PEERS`, `STREAMING`, the last with its ringing state
//! for an incoming call), the connect form, the peer list selection, and the call. Input
//! comes in as [`Key`]s, typed text and clicks; what the user asked for goes out as
//! [`UiAction`]s. Where things go is [`super::layout`]; what to paint is [`super::draw`].

use std::fmt;
use std::time::Instant;

use super::chat::ChatBox;
use super::layout::Layout;
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
    /// `M`: mute or unmute the microphone while streaming.
    Mute,
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
    /// Take the incoming call from this peer (Enter or the Answer button while ringing).
    Answer(PeerId),
    /// Refuse the incoming call from this peer (Esc or the Decline button while ringing).
    Decline(PeerId),
    /// Send this chat line to the call's peer (typed in the streaming screen's field).
    SendChat(String),
    /// Mute the microphone, or unmute it (`M` while streaming).
    ToggleMute,
    /// The window was closed.
    Quit,
}

/// The connect form's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Server,
    Port,
}

/// Characters the server field holds (a DNS name is at most 253).
const MAX_SERVER_CHARS: usize = 253;

/// An incoming call waiting for the user: who calls, and the screen to go back to if the
/// call is declined or the caller gives up.
#[derive(Debug, Clone)]
pub(super) struct Ringing {
    pub(super) peer: PeerId,
    pub(super) name: String,
    back_to: Ui,
}

/// The window's state: which screen, the form, the list, the call and its stats. The draw
/// list ([`super::draw`]) reads the fields.
#[derive(Debug, Clone)]
pub struct UiModel {
    pub(super) ui: Ui,
    pub(super) layout: Layout,
    pub(super) name: String,
    pub(super) server: String,
    pub(super) port: String,
    pub(super) focus: Field,
    pub(super) connecting: bool,
    pub(super) status: Option<(String, bool)>,
    pub(super) signed_in: Option<String>,
    pub(super) peers: Vec<(PeerId, String)>,
    pub(super) selected: usize,
    pub(super) scroll: usize,
    pub(super) call: Option<(PeerId, String)>,
    pub(super) call_status: String,
    pub(super) overlay: Vec<String>,
    pub(super) warning: Option<String>,
    pub(super) ringing: Option<Ringing>,
    /// The call's chat: the field, the recent lines, the scroll-back.
    pub(super) chat: ChatBox,
    /// The instant the screen is drawn for (chat lines fade by it).
    pub(super) now: Instant,
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
            warning: None,
            ringing: None,
            chat: ChatBox::default(),
            now: Instant::now(),
        }
    }

    /// A chat line sent or received in the call, shown from `now`.
    pub fn chat_line(&mut self, who: &str, text: &str, now: Instant) {
        self.chat.push(format!("{who}: {text}"), now);
    }

    /// The instant the next paint is for.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
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
        self.end_call();
    }

    /// `signed_in` describes the session for the list's title ("alice (id 3) at host:port").
    pub fn switch_to_peer_list(&mut self, signed_in: &str) {
        self.ui = Ui::ListPeers;
        self.connecting = false;
        self.signed_in = Some(signed_in.to_string());
        self.end_call();
    }

    fn end_call(&mut self) {
        self.call = None;
        self.ringing = None;
        self.overlay.clear();
        self.warning = None;
        self.chat.clear();
    }

    /// The call with `peer`: placed by us, or an incoming one answered (then the status says
    /// it is connecting rather than calling).
    pub fn switch_to_streaming(&mut self, peer: PeerId, name: &str) {
        let answered = self.ui == Ui::Streaming
            && self.ringing.is_none()
            && self.call.as_ref().is_some_and(|c| c.0 == peer);
        self.ui = Ui::Streaming;
        self.ringing = None;
        self.call = Some((peer, name.to_string()));
        self.call_status = if answered {
            format!("Connecting to {name}...")
        } else {
            format!("Calling {name}...")
        };
        self.overlay.clear();
        self.warning = None;
    }

    /// `peer` (`name`) is calling: the streaming screen in its ringing state, with Answer
    /// (Enter) and Decline (Esc). Answer and Decline come back as [`UiAction`]s; after
    /// Answer the app calls [`UiModel::switch_to_streaming`] as for any call.
    pub fn show_incoming_call(&mut self, peer: PeerId, name: &str) {
        let back_to = match &self.ringing {
            Some(r) => r.back_to,
            None => self.ui,
        };
        self.ringing = Some(Ringing {
            peer,
            name: name.to_string(),
            back_to,
        });
        self.ui = Ui::Streaming;
    }

    /// The caller gave up (or the call was declined): back to the screen shown before the
    /// ringing. The app then says where to go (usually [`UiModel::switch_to_peer_list`]).
    pub fn cancel_incoming_call(&mut self) {
        if let Some(r) = self.ringing.take() {
            self.ui = r.back_to;
        }
    }

    /// The peer whose call is ringing, if one is.
    pub fn incoming_call(&self) -> Option<PeerId> {
        self.ringing.as_ref().map(|r| r.peer)
    }

    /// A warning shown prominently on the streaming screen ("bob is not answering (3 s)"),
    /// or none. Cleared when a call starts or ends.
    pub fn set_warning(&mut self, warning: Option<String>) {
        self.warning = warning;
    }

    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
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
            Ui::Streaming if self.ringing.is_some() => match key {
                Key::Enter => self.answer(),
                Key::Escape => self.decline(),
                _ => None,
            },
            Ui::Streaming if self.chat.editing().is_some() => match key {
                Key::Enter => {
                    let text = self.chat.take()?;
                    let me = self.name.clone();
                    self.chat_line(&me, &text, self.now);
                    Some(UiAction::SendChat(text))
                }
                Key::Escape => {
                    self.chat.cancel();
                    None
                }
                Key::Backspace => {
                    self.chat.backspace();
                    None
                }
                _ => None,
            },
            Ui::Streaming => match key {
                Key::Escape => Some(UiAction::HangUp),
                Key::Enter => {
                    self.chat.open();
                    None
                }
                Key::Tab => {
                    self.chat.toggle_log();
                    None
                }
                Key::Mute => Some(UiAction::ToggleMute),
                _ => None,
            },
        }
    }

    /// Takes the ringing call: the screen becomes the call's, connecting.
    fn answer(&mut self) -> Option<UiAction> {
        let r = self.ringing.take()?;
        self.call_status = format!("Connecting to {}...", r.name);
        self.call = Some((r.peer, r.name));
        self.overlay.clear();
        self.warning = None;
        Some(UiAction::Answer(r.peer))
    }

    /// Refuses the ringing call: back to the screen before it.
    fn decline(&mut self) -> Option<UiAction> {
        let peer = self.incoming_call()?;
        self.cancel_incoming_call();
        Some(UiAction::Decline(peer))
    }

    /// Text typed into the focused field (connect screen only, and not while connecting).
    /// The port takes digits only; nothing takes spaces or control characters.
    pub fn text(&mut self, typed: &str) {
        if self.ui == Ui::Streaming && self.ringing.is_none() {
            self.chat.type_text(typed);
            return;
        }
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
            Ui::Streaming if self.ringing.is_some() => {
                if l.answer_button.contains(x, y) {
                    self.answer()
                } else if l.decline_button.contains(x, y) {
                    self.decline()
                } else {
                    None
                }
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
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::main_wnd::draw::texts;

    fn model() -> UiModel {
        UiModel::new("alice", "localhost", 8888, 640, 480)
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

    fn ringing(m: &mut UiModel) {
        listing(m, &[(1, "bob"), (7, "carol")]);
        m.show_incoming_call(7, "carol");
    }

    #[test]
    fn an_incoming_call_rings_on_the_streaming_screen_and_enter_answers() {
        let mut m = model();
        ringing(&mut m);
        assert_eq!(m.current_ui(), Ui::Streaming);
        assert_eq!(m.incoming_call(), Some(7u32));
        for key in [Key::Up, Key::Down, Key::Tab, Key::Backspace, Key::End] {
            assert_eq!(m.key(key), None, "{key:?} while ringing");
        }
        m.text("x");
        assert_eq!(m.key(Key::Enter), Some(UiAction::Answer(7u32)));
        assert_eq!(m.incoming_call(), None);
        assert_eq!(m.key(Key::Enter), None, "one Answer per call");
        assert_eq!(m.current_ui(), Ui::Streaming);
        // That Enter opened the chat field; Esc closes it before Esc hangs up.
        assert_eq!(m.chat.editing(), Some(""));
        assert_eq!(m.key(Key::Escape), None);
        // The app starts the call as any other; the callee's screen says it is connecting.
        m.switch_to_streaming(7u32, "carol");
        assert_eq!(m.call_status, "Connecting to carol...");
        assert_eq!(
            m.key(Key::Escape),
            Some(UiAction::HangUp),
            "Esc hangs up now"
        );
    }

    #[test]
    fn esc_declines_and_the_screen_goes_back_to_the_list() {
        let mut m = model();
        ringing(&mut m);
        assert_eq!(m.key(Key::Escape), Some(UiAction::Decline(7u32)));
        assert_eq!(m.incoming_call(), None);
        assert_eq!(m.current_ui(), Ui::ListPeers);
        assert_eq!(m.selected_peer(), Some(1u32), "the list as it was");
        assert_eq!(
            m.key(Key::Escape),
            Some(UiAction::SignOut),
            "the list's Esc again"
        );
    }

    #[test]
    fn the_ringing_buttons_answer_and_decline() {
        let mut m = model();
        ringing(&mut m);
        let l = m.layout();
        let (a, d) = (l.answer_button, l.decline_button);
        assert_eq!(m.click(a.x - 3, a.y + 3, 1), None, "left of Answer");
        assert_eq!(m.click(d.right() + 3, d.y + 3, 1), None, "right of Decline");
        assert_eq!(
            m.click(a.right() + 1, a.y + 3, 1),
            None,
            "between the buttons"
        );
        assert_eq!(m.incoming_call(), Some(7u32));
        assert_eq!(
            m.click(d.x + d.w as i32 / 2, d.y + d.h as i32 / 2, 1),
            Some(UiAction::Decline(7u32))
        );
        assert_eq!(m.current_ui(), Ui::ListPeers);
        m.show_incoming_call(1u32, "bob");
        let a = m.layout().answer_button;
        assert_eq!(
            m.click(a.x + a.w as i32 / 2, a.y + a.h as i32 / 2, 1),
            Some(UiAction::Answer(1u32))
        );
        assert_eq!(m.click(a.x + 2, a.y + 2, 1), None, "the call is taken");
        // The buttons follow the window's size.
        m.switch_to_peer_list("me");
        m.show_incoming_call(1u32, "bob");
        m.resize(1280, 720);
        let a = m.layout().answer_button;
        assert_eq!(a, Layout::for_window(1280, 720).answer_button);
        assert_eq!(m.click(a.x + 2, a.y + 2, 1), Some(UiAction::Answer(1u32)));
    }

    #[test]
    fn a_caller_who_gives_up_stops_the_ringing() {
        let mut m = model();
        ringing(&mut m);
        m.cancel_incoming_call();
        assert_eq!(m.incoming_call(), None);
        assert_eq!(m.current_ui(), Ui::ListPeers);
        assert_eq!(
            m.key(Key::Enter),
            Some(UiAction::Call(1u32)),
            "Enter calls again"
        );
        m.cancel_incoming_call();
        assert_eq!(m.current_ui(), Ui::ListPeers, "nothing to cancel");
        // A second caller replaces the first and still returns to the list.
        m.show_incoming_call(7u32, "carol");
        m.show_incoming_call(1u32, "bob");
        assert_eq!(m.incoming_call(), Some(1u32));
        m.cancel_incoming_call();
        assert_eq!(m.current_ui(), Ui::ListPeers);
        // Any screen switch by the app ends the ringing.
        m.show_incoming_call(7u32, "carol");
        m.switch_to_peer_list("me");
        assert_eq!(m.incoming_call(), None);
        m.show_incoming_call(7u32, "carol");
        m.switch_to_connect_ui();
        assert_eq!(m.incoming_call(), None);
        assert_eq!(m.current_ui(), Ui::ConnectToServer);
    }

    #[test]
    fn an_outgoing_call_says_calling_and_warnings_end_with_the_call() {
        let mut m = model();
        listing(&mut m, &[(1, "bob")]);
        m.switch_to_streaming(1u32, "bob");
        assert_eq!(m.call_status, "Calling bob...");
        assert_eq!(m.incoming_call(), None);
        m.set_warning(Some("bob is not answering (3 s)".into()));
        assert_eq!(m.warning(), Some("bob is not answering (3 s)"));
        m.set_warning(None);
        assert_eq!(m.warning(), None);
        m.set_warning(Some("bob is not answering (9 s)".into()));
        m.switch_to_peer_list("me");
        assert_eq!(m.warning(), None, "gone with the call");
    }
}
