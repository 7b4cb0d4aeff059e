//! The client's policy, apart from all IO: which messages may start, join or are refused
//! from a call (strangers, busy, glare), ringing and auto-answer, `--autocall` and
//! `--call NAME`, a call that outlives its signaling server, what the window and stdout
//! are told, and the stats. It takes events and `now` and returns [`AppOutput`]s that the
//! loop carries out on the signaling client, the conductor, the devices and the window.
//!
//! Rules, each unit-tested below on a virtual clock:
//! - only an `offer` starts a call; anything else from anyone but the call's peer is
//!   ignored with one log line;
//! - an offer during a call (or while ringing) is refused at once with `BYE`;
//! - glare (both offered): the lower id keeps its offer, the higher answers the other's;
//! - a lost signaling server does not end a call: the peer is found again by name when
//!   both have rejoined, and a hang-up meanwhile sends `BYE` once the peer is back;
//! - the peer leaving the server ends a call only before media flows (after, the
//!   conductor's dead-peer rule decides);
//! - chat (`--chat-stdin`): a line is sent on the call's `chat` data channel while it is
//!   open, else dropped with one warning; received text is printed as
//!   `CHAT peer=N text="..."`, the text escaped as Rust's `{:?}` escapes a string;
//! - a hang-up while the signaling server is away goes over the data channel only (the
//!   signaled `BYE` is owed until the peer is back).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::audio_session::AudioSample;
use super::conductor::{check_codecs, CallError, EndReason, ANSWER_TIMEOUT, MAX_REMOTE_CANDIDATES};
use super::peer_connection_client::{ClientEvent, ClientState, RECONNECT_DELAY};
use crate::signaling::message::{excerpt, PeerMessage, SdpKind};
use crate::signaling::PeerId;

pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long an incoming call rings before it is declined for the user.
pub const RING_TIMEOUT: Duration = ANSWER_TIMEOUT;
/// How much of a peer's message a log line quotes.
const LOG_EXCERPT: usize = 80;
/// The longest chat line read from stdin, in bytes (without its newline).
pub const MAX_CHAT_LINE: usize = 4096;

/// A chat line as the input reader hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatInput {
    /// A line, without its line ending.
    Line(String),
    /// A line over [`MAX_CHAT_LINE`] bytes, refused (its bytes were discarded).
    TooLong,
}

/// The policy's settings, from the command line.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub server: String,
    pub port: u16,
    /// A window is open: incoming calls ring unless `auto_answer`.
    pub window: bool,
    pub autoconnect: bool,
    pub auto_answer: bool,
    /// Call the last peer on the list once someone is on it (once per run).
    pub autocall: bool,
    /// Call the first peer with this name as soon as it appears (once per run).
    pub call_name: Option<String>,
    /// Print a STATS line a second.
    pub stats: bool,
}

/// What the window is to show.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowUpdate {
    ConnectScreen {
        status: Option<(String, bool)>,
    },
    Connecting(bool),
    Status {
        text: String,
        error: bool,
    },
    PeerList {
        session: String,
        status: Option<(String, bool)>,
    },
    Peers(Vec<(PeerId, String)>),
    Streaming {
        peer: PeerId,
        name: String,
        status: String,
    },
    Ringing {
        peer: PeerId,
        name: String,
    },
    Overlay(Vec<String>),
    /// A chat line from the peer, for the streaming screen.
    Chat {
        who: String,
        text: String,
    },
    /// A prominent line on the streaming screen (the peer is not answering), or none.
    Warning(Option<String>),
    ClearVideo,
    Hide,
}

/// What the loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum AppOutput {
    /// Signaling: sign in to this server.
    Connect {
        server: String,
        port: u16,
    },
    /// Signaling: stop trying to sign in, or sign out.
    SignOut,
    /// Signaling: send a message body to a peer.
    Send {
        to: PeerId,
        body: Vec<u8>,
    },
    /// Conductor: call this peer.
    Dial(PeerId),
    /// Conductor: answer this peer's offer.
    Answer {
        peer: PeerId,
        sdp: String,
    },
    /// Conductor: a message from the current call's peer.
    Deliver(PeerMessage),
    /// Conductor: hang up with `BYE` (and the bye on the data channel).
    HangUp(EndReason),
    /// Conductor: hang up telling the peer over the data channel only (the signaling
    /// server is away; the `BYE` is owed until the peer is back).
    HangUpPeerToPeer(EndReason),
    /// Conductor: send chat text on the call's data channel.
    SendChat(String),
    /// Conductor: end the call without telling the peer.
    EndCall(EndReason),
    /// Conductor: the call's peer has a new id.
    RemapPeer(PeerId),
    StartLocalVideo,
    StopLocalVideo,
    /// Audio: send silence (true) or the microphone again (false).
    SetMuted(bool),
    Window(WindowUpdate),
    /// A machine-readable line for stdout.
    Line(String),
    /// The user closed the window: shut down.
    Quit,
}

/// What the window asked for (see `main_wnd::UiAction`), as the policy sees it.
pub use super::main_wnd::UiAction;

/// The numbers a finished call is summed up with in `CALL_ENDED`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallSummary {
    pub frames_sent: u64,
    pub frames_decoded: u64,
    pub connect_time: Option<Duration>,
    pub first_frame_time: Option<Duration>,
    pub mean_latency_ms: Option<f64>,
}

/// What the conductor and the media session say, as the policy hears it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    Started {
        peer: PeerId,
    },
    Connected {
        peer: PeerId,
    },
    Silent {
        peer: PeerId,
        silent: Duration,
    },
    Resumed {
        peer: PeerId,
    },
    Ended {
        peer: PeerId,
        reason: EndReason,
        summary: CallSummary,
    },
    /// A `Dial` or `Answer` the conductor could not carry out.
    Failed {
        peer: PeerId,
        error: CallError,
    },
    /// The call's `chat` data channel opened.
    ChannelOpen {
        peer: PeerId,
    },
    /// The peer closed the `chat` data channel.
    ChannelClosed {
        peer: PeerId,
    },
    ChatReceived {
        peer: PeerId,
        text: String,
    },
}

/// The counters the STATS line and the overlay are made from, sampled by the loop.
#[derive(Debug, Clone, Default)]
pub struct StatsSample {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_decoded: u64,
    pub bytes_received: u64,
    pub last_latency_us: Option<u64>,
    pub rtt: Option<Duration>,
    pub remote_size: Option<(u32, u32)>,
    pub silent_for: Option<Duration>,
    /// The call's audio counters (none outside a call or without audio).
    pub audio: Option<AudioSample>,
    /// The candidate types of the pair carrying the call, `LOCAL/REMOTE`.
    pub pair: Option<String>,
    /// Captured frames the send budget dropped, and str0m's send-side estimate.
    pub frames_dropped: u64,
    pub estimate_bps: Option<u64>,
}

#[derive(Debug)]
struct CallInfo {
    peer: PeerId,
    name: String,
    /// We sent the offer and have not delivered an answer yet (glare is possible).
    offering: bool,
    connected: bool,
    /// The signaling server was lost during the call; the peer is found again by name.
    detached: bool,
    /// The `chat` data channel is open.
    chat_open: bool,
}

#[derive(Debug)]
struct Ring {
    peer: PeerId,
    name: String,
    sdp: String,
    candidates: Vec<PeerMessage>,
    until: Instant,
}

pub struct ClientApp {
    config: AppConfig,
    state: ClientState,
    my_id: Option<PeerId>,
    peers: BTreeMap<PeerId, String>,
    call: Option<CallInfo>,
    ring: Option<Ring>,
    /// A `BYE` owed to the peer of this name, hung up on while the server was away.
    owed_bye: Option<String>,
    autocall_done: bool,
    shutting_down: bool,
    /// The microphone is muted (`M` in the window); it stays so across calls.
    muted: bool,
    started: Instant,
    stats_at: Option<Instant>,
    mark: StatsSample,
    out: VecDeque<AppOutput>,
}

impl ClientApp {
    pub fn new(config: AppConfig, now: Instant) -> ClientApp {
        ClientApp {
            stats_at: (config.stats || config.window).then_some(now + STATS_INTERVAL),
            config,
            state: ClientState::NotConnected,
            my_id: None,
            peers: BTreeMap::new(),
            call: None,
            ring: None,
            owed_bye: None,
            autocall_done: false,
            shutting_down: false,
            muted: false,
            started: now,
            mark: StatsSample::default(),
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<AppOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        crate::reactor::earliest([self.stats_at, self.ring.as_ref().map(|r| r.until)])
    }

    /// The current call's peer, as the policy knows it.
    pub fn call_peer(&self) -> Option<PeerId> {
        self.call.as_ref().map(|c| c.peer)
    }

    fn emit(&mut self, o: AppOutput) {
        self.out.push_back(o);
    }

    fn line(&mut self, l: String) {
        self.out.push_back(AppOutput::Line(l));
    }

    fn window(&mut self, w: WindowUpdate) {
        if self.config.window {
            self.out.push_back(AppOutput::Window(w));
        }
    }

    /// The Connect click, made at start with `--autoconnect` (and headless).
    pub fn start(&mut self) {
        if self.config.autoconnect {
            self.connect(self.config.server.clone(), self.config.port);
        }
    }

    fn connect(&mut self, server: String, port: u16) {
        self.window(WindowUpdate::Connecting(true));
        self.window(WindowUpdate::Status {
            text: format!("Connecting to {server}:{port}..."),
            error: false,
        });
        self.config.server = server.clone();
        self.config.port = port;
        self.emit(AppOutput::Connect { server, port });
    }

    /// Hang up, sign out: the program is ending.
    pub fn shutdown(&mut self, why: &str) {
        if std::mem::replace(&mut self.shutting_down, true) {
            return;
        }
        log::info!("{why}: hanging up and signing out");
        self.decline_ring("the callee is leaving");
        self.hang_up(why);
        self.emit(AppOutput::SignOut);
    }

    fn peer_name(&self, peer: PeerId) -> String {
        self.peers
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| format!("peer {peer}"))
    }

    /// "alice (id 3) at localhost:8888", for the peer list's title.
    fn session_text(&self) -> String {
        format!(
            "{} (id {}) at {}:{}",
            self.config.name,
            self.my_id.map_or("-".into(), |i| i.to_string()),
            self.config.server,
            self.config.port
        )
    }

    fn show_peer_list(&mut self, status: Option<(String, bool)>) {
        if self.state != ClientState::Connected {
            return;
        }
        let session = self.session_text();
        self.window(WindowUpdate::PeerList { session, status });
        self.refresh_peers();
    }

    fn refresh_peers(&mut self) {
        let peers = self.peers.iter().map(|(i, n)| (*i, n.clone())).collect();
        self.window(WindowUpdate::Peers(peers));
    }

    // ---- the signaling client's events ----

    pub fn signaling_event(&mut self, e: ClientEvent, now: Instant) {
        match e {
            ClientEvent::StateChanged(state) => {
                self.state = state;
                match state {
                    ClientState::Resolving | ClientState::SigningIn if self.call.is_none() => {
                        self.window(WindowUpdate::Connecting(true))
                    }
                    ClientState::NotConnected if !self.shutting_down => {
                        self.window(WindowUpdate::ClearVideo);
                        self.window(WindowUpdate::ConnectScreen { status: None });
                    }
                    _ => {}
                }
            }
            ClientEvent::SignedIn { id } => {
                log::info!("signed in as {:?} with id {id}", self.config.name);
                self.my_id = Some(id);
                self.state = ClientState::Connected;
                self.line(format!("SIGNED_IN id={id}"));
                if self.call.is_none() {
                    self.show_peer_list(Some((String::new(), false)));
                }
                self.maybe_autocall();
            }
            ClientEvent::SignInFailed { reason } => {
                let text = format!(
                    "Cannot sign in to {}:{}: {reason}. Trying again every {} s; Esc stops.",
                    self.config.server,
                    self.config.port,
                    RECONNECT_DELAY.as_secs()
                );
                if self.call.is_none() {
                    self.window(WindowUpdate::Status { text, error: true });
                }
            }
            ClientEvent::PeerConnected { id, name } => {
                log::info!("peer {id} {name:?} is on the list");
                self.line(format!("PEER_CONNECTED id={id} name={name}"));
                self.peers.insert(id, name.clone());
                self.refresh_peers();
                self.found_again(id, &name);
                self.maybe_autocall();
            }
            ClientEvent::PeerDisconnected { id } => {
                log::info!("peer {id} left");
                self.line(format!("PEER_DISCONNECTED id={id}"));
                self.peers.remove(&id);
                self.refresh_peers();
                self.peer_left(id, now);
            }
            ClientEvent::Message { from, body } => self.message(from, &body, now),
            ClientEvent::MessageFailed { to, reason } => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.peer == to && !c.detached)
                {
                    self.emit(AppOutput::EndCall(EndReason::Unreachable(reason)));
                }
            }
            ClientEvent::ServerLost { reason } => {
                self.line(format!("SERVER_LOST reason={reason:?}"));
                self.my_id = None;
                if let Some(c) = self.call.as_mut() {
                    c.detached = true;
                    log::warn!(
                        "lost the signaling server ({reason}); the call with {} goes on peer to peer",
                        c.name
                    );
                } else {
                    let text = format!("Lost the server ({reason}); signing in again...");
                    self.window(WindowUpdate::Status { text, error: true });
                }
                // No BYE: it would wait in the queue for a server that gives out new ids.
                self.cancel_ring("the signaling server went away");
            }
            ClientEvent::SignedOut => {
                log::info!("signed out");
                self.window(WindowUpdate::ConnectScreen {
                    status: Some(("Signed out.".into(), false)),
                });
            }
        }
    }

    /// A peer (re)appeared: after an outage it may be our call's peer under a new id.
    fn found_again(&mut self, id: PeerId, name: &str) {
        if let Some(c) = self.call.as_mut().filter(|c| c.detached && c.name == name) {
            log::info!("the call's peer {name:?} is back as peer {id}");
            c.peer = id;
            c.detached = false;
            self.emit(AppOutput::RemapPeer(id));
        }
        if self.owed_bye.as_deref() == Some(name) {
            log::info!("telling {name:?} (now peer {id}) that we hung up");
            self.owed_bye = None;
            self.emit(AppOutput::Send {
                to: id,
                body: PeerMessage::Bye.to_body(),
            });
        }
    }

    fn peer_left(&mut self, id: PeerId, _now: Instant) {
        if self.ring.as_ref().is_some_and(|r| r.peer == id) {
            self.cancel_ring("the caller left");
        }
        let Some(c) = self.call.as_ref().filter(|c| c.peer == id) else {
            return;
        };
        if c.detached {
            // Our server is gone too: every peer "left"; the call goes on.
        } else if c.connected {
            log::info!("peer {id} left the server; the call goes on while its packets do");
            self.call.as_mut().expect("checked").detached = true;
        } else {
            self.emit(AppOutput::EndCall(EndReason::PeerLeft));
        }
    }

    // ---- messages from peers ----

    fn message(&mut self, from: PeerId, body: &[u8], now: Instant) {
        let msg = match PeerMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                log::info!("ignoring a message from peer {from}: {e}");
                return;
            }
        };
        if let Some(c) = self.call.as_ref() {
            if c.peer != from {
                let busy = format!("in a call with peer {}", c.peer);
                return self.not_for_us(from, msg, &busy);
            }
            match msg {
                PeerMessage::Sdp {
                    kind: SdpKind::Offer,
                    sdp,
                } if c.offering => {
                    // Glare: both sides offered. The lower id keeps its offer.
                    let polite = self.my_id.is_none_or(|me| me > from);
                    if polite {
                        log::info!("glare with peer {from}: its id is lower, answering its offer");
                        self.call.as_mut().expect("checked").offering = false;
                        self.emit(AppOutput::Answer { peer: from, sdp });
                    } else {
                        log::info!("glare with peer {from}: our id is lower, keeping our offer");
                    }
                }
                msg => {
                    if let PeerMessage::Sdp {
                        kind: SdpKind::Answer,
                        ..
                    } = msg
                    {
                        self.call.as_mut().expect("checked").offering = false;
                    }
                    self.emit(AppOutput::Deliver(msg));
                }
            }
            return;
        }
        if let Some(r) = self.ring.as_mut() {
            match msg {
                _ if r.peer != from => {
                    let busy = format!("peer {} is calling", r.peer);
                    self.not_for_us(from, msg, &busy);
                }
                PeerMessage::Bye => self.cancel_ring("the caller hung up"),
                PeerMessage::Candidate { .. } if r.candidates.len() < MAX_REMOTE_CANDIDATES => {
                    r.candidates.push(msg)
                }
                other => log::info!("ignoring {} from peer {from}: ringing", describe(&other)),
            }
            return;
        }
        match msg {
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                sdp,
            } => self.incoming_call(from, sdp, now),
            other => log::info!(
                "ignoring {} from peer {from}: not in a call with it",
                describe(&other)
            ),
        }
    }

    /// A message from someone other than the peer we are busy with (`busy` says how):
    /// an offer is refused at once, anything else ignored.
    fn not_for_us(&mut self, from: PeerId, msg: PeerMessage, busy: &str) {
        if let PeerMessage::Sdp {
            kind: SdpKind::Offer,
            ..
        } = msg
        {
            self.refuse(from, &format!("busy: {busy}"));
        } else {
            log::info!("ignoring {} from peer {from}: {busy}", describe(&msg));
        }
    }

    /// An offer while idle: refused if it has no video we can use, else answered at once
    /// (`--auto-answer`, headless) or rung in the window.
    fn incoming_call(&mut self, from: PeerId, sdp: String, now: Instant) {
        if self.shutting_down {
            return self.refuse(from, "busy: leaving");
        }
        if let Err(e) = check_codecs(&sdp) {
            return self.refuse(from, &e.to_string());
        }
        let name = self.peer_name(from);
        self.line(format!("INCOMING_CALL peer={from} name={name}"));
        if self.config.auto_answer || !self.config.window {
            self.answer(from, name, sdp, Vec::new());
        } else {
            log::info!("{name} (peer {from}) is calling");
            self.window(WindowUpdate::Ringing {
                peer: from,
                name: name.clone(),
            });
            self.ring = Some(Ring {
                peer: from,
                name,
                sdp,
                candidates: Vec::new(),
                until: now + RING_TIMEOUT,
            });
        }
    }

    fn answer(&mut self, peer: PeerId, name: String, sdp: String, candidates: Vec<PeerMessage>) {
        self.call = Some(CallInfo {
            peer,
            name,
            offering: false,
            connected: false,
            detached: false,
            chat_open: false,
        });
        self.emit(AppOutput::Answer { peer, sdp });
        for c in candidates {
            self.emit(AppOutput::Deliver(c));
        }
    }

    /// Refuses an offer: `BYE` back at once, and one line saying why.
    fn refuse(&mut self, peer: PeerId, reason: &str) {
        log::info!("refusing a call from peer {peer}: {reason}");
        self.line(format!("CALL_REFUSED peer={peer} reason={reason:?}"));
        self.emit(AppOutput::Send {
            to: peer,
            body: PeerMessage::Bye.to_body(),
        });
    }

    fn cancel_ring(&mut self, why: &str) {
        if let Some(r) = self.ring.take() {
            log::info!("missed call from {} (peer {}): {why}", r.name, r.peer);
            let status = format!("Missed call from {}: {why}.", r.name);
            self.show_peer_list(Some((status, false)));
        }
    }

    fn decline_ring(&mut self, why: &str) {
        if let Some(r) = self.ring.take() {
            self.refuse(r.peer, if why.is_empty() { "declined" } else { why });
            self.show_peer_list(None);
        }
    }

    // ---- the conductor's events ----

    pub fn call_event(&mut self, e: CallEvent) {
        match e {
            CallEvent::Started { peer } => {
                self.line(format!("CALL_STARTED peer={peer}"));
                if self.call.as_ref().is_none_or(|c| c.peer != peer) {
                    // A call the policy did not ask for: keep the books straight anyway.
                    let name = self.peer_name(peer);
                    self.call = Some(CallInfo {
                        peer,
                        name,
                        offering: false,
                        connected: false,
                        detached: false,
                        chat_open: false,
                    });
                }
                let name = self
                    .call
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                self.window(WindowUpdate::ClearVideo);
                self.window(WindowUpdate::Streaming {
                    peer,
                    name: name.clone(),
                    status: format!("Connecting to {name}..."),
                });
                self.emit(AppOutput::StartLocalVideo);
            }
            CallEvent::Connected { .. } => {
                if let Some(c) = self.call.as_mut() {
                    c.connected = true;
                    c.offering = false;
                }
            }
            CallEvent::Silent { peer, silent } => {
                self.line(format!(
                    "PEER_NOT_ANSWERING peer={peer} silent_ms={}",
                    silent.as_millis()
                ));
                let name = self.peer_name(peer);
                self.window(WindowUpdate::Warning(Some(format!(
                    "{name} is not answering: no packets for {} s",
                    silent.as_secs()
                ))));
            }
            CallEvent::Resumed { peer } => {
                self.line(format!("PEER_ANSWERING peer={peer}"));
                self.window(WindowUpdate::Warning(None));
            }
            CallEvent::Ended {
                peer,
                reason,
                summary: s,
            } => {
                let name = self
                    .call
                    .take()
                    .map_or_else(|| self.peer_name(peer), |c| c.name);
                self.emit(AppOutput::StopLocalVideo);
                self.window(WindowUpdate::Warning(None));
                self.window(WindowUpdate::ClearVideo);
                let status = format!("The call with {name} ended: {reason}.");
                self.show_peer_list(Some((status, false)));
                self.line(format!(
                    "CALL_ENDED peer={peer} reason={:?} frames_sent={} frames_decoded={} connect_ms={} first_frame_ms={} mean_latency_ms={}",
                    reason.to_string(),
                    s.frames_sent,
                    s.frames_decoded,
                    ms(s.connect_time),
                    ms(s.first_frame_time),
                    s.mean_latency_ms.map_or("-".into(), |l| format!("{l:.1}")),
                ));
            }
            CallEvent::Failed { peer, error } => {
                log::warn!("call with peer {peer}: {error}");
                if self.call.as_ref().is_some_and(|c| c.peer == peer) {
                    self.call = None;
                }
                if !matches!(error, CallError::AlreadyInCall(_)) {
                    self.refuse(peer, &error.to_string());
                }
                self.show_peer_list(None);
            }
            CallEvent::ChannelOpen { peer } => {
                if let Some(c) = self.call.as_mut().filter(|c| c.peer == peer) {
                    c.chat_open = true;
                    self.line(format!("CHAT_OPEN peer={peer}"));
                }
            }
            CallEvent::ChannelClosed { peer } => {
                if let Some(c) = self.call.as_mut().filter(|c| c.peer == peer) {
                    log::info!("the chat channel with {} closed", c.name);
                    c.chat_open = false;
                    self.line(format!("CHAT_CLOSED peer={peer}"));
                }
            }
            CallEvent::ChatReceived { peer, text } => {
                self.line(format!("CHAT peer={peer} text={text:?}"));
                let who = self.peer_name(peer);
                self.window(WindowUpdate::Chat { who, text });
            }
        }
    }

    // ---- chat typed on stdin ----

    /// A line typed for the call's peer: sent while the chat channel is open, else
    /// dropped with one warning. Empty lines are skipped.
    pub fn chat_input(&mut self, input: ChatInput) {
        let text = match input {
            ChatInput::TooLong => {
                log::warn!("chat: a line over {MAX_CHAT_LINE} bytes was refused");
                return;
            }
            ChatInput::Line(text) if text.is_empty() => return,
            ChatInput::Line(text) => text,
        };
        match self.call.as_ref() {
            Some(c) if c.chat_open => self.emit(AppOutput::SendChat(text)),
            Some(_) => log::warn!(
                "chat: the call's chat channel is not open: dropped a line ({} bytes)",
                text.len()
            ),
            None => log::warn!("chat: not in a call: dropped a line ({} bytes)", text.len()),
        }
    }

    // ---- the window ----

    pub fn ui_action(&mut self, action: UiAction, _now: Instant) {
        log::debug!("window: {action:?}");
        match action {
            UiAction::Connect { server, port } => self.connect(server, port),
            UiAction::CancelConnect => {
                self.emit(AppOutput::SignOut);
                self.window(WindowUpdate::Connecting(false));
                self.window(WindowUpdate::Status {
                    text: "Stopped trying to sign in.".into(),
                    error: false,
                });
            }
            UiAction::Call(peer) => self.dial(peer),
            UiAction::SignOut => {
                self.decline_ring("");
                self.hang_up("signing out");
                self.emit(AppOutput::SignOut);
            }
            UiAction::HangUp => self.hang_up("hung up from the window"),
            UiAction::SendChat(text) => self.chat_input(ChatInput::Line(text)),
            UiAction::ToggleMute => {
                self.muted = !self.muted;
                log::info!("microphone {}", if self.muted { "muted" } else { "on" });
                self.emit(AppOutput::SetMuted(self.muted));
            }
            UiAction::Answer(peer) => {
                if let Some(r) = self.ring.take_if(|r| r.peer == peer) {
                    self.answer(r.peer, r.name, r.sdp, r.candidates);
                }
            }
            UiAction::Decline(peer) => {
                if self.ring.as_ref().is_some_and(|r| r.peer == peer) {
                    self.decline_ring("declined");
                }
            }
            UiAction::Quit => {
                self.window(WindowUpdate::Hide);
                self.emit(AppOutput::Quit);
            }
        }
    }

    fn dial(&mut self, peer: PeerId) {
        if self.call.is_some() || self.ring.is_some() || self.state != ClientState::Connected {
            log::info!("not calling peer {peer}: busy or not signed in");
            return;
        }
        let name = self.peer_name(peer);
        log::info!("calling {name} (peer {peer})");
        self.call = Some(CallInfo {
            peer,
            name,
            offering: true,
            connected: false,
            detached: false,
            chat_open: false,
        });
        self.emit(AppOutput::Dial(peer));
    }

    /// Hangs up the call (if any). With the server away the peer is told over the data
    /// channel, and the `BYE` waits for the peer's return (without a channel, the peer's
    /// dead-peer rule ends its side meanwhile).
    fn hang_up(&mut self, why: &str) {
        let Some(c) = self.call.as_ref() else {
            return;
        };
        let reason = EndReason::Local(why.to_string());
        if c.detached {
            self.owed_bye = Some(c.name.clone());
            self.emit(AppOutput::HangUpPeerToPeer(reason));
        } else {
            self.emit(AppOutput::HangUp(reason));
        }
    }

    /// `--autocall` (the last row, as the original's) or `--call NAME` (the first peer
    /// with that name), once per run: a peer that hung up or declined is not redialled.
    fn maybe_autocall(&mut self) {
        let wanted = self.config.autocall || self.config.call_name.is_some();
        if !wanted
            || self.autocall_done
            || self.call.is_some()
            || self.ring.is_some()
            || self.state != ClientState::Connected
            || self.shutting_down
        {
            return;
        }
        let target = match &self.config.call_name {
            Some(name) => self
                .peers
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(id, _)| *id),
            None => self.peers.keys().next_back().copied(),
        };
        if let Some(peer) = target {
            self.autocall_done = true;
            self.dial(peer);
        }
    }

    // ---- time ----

    pub fn handle_timeout(&mut self, now: Instant, sample: &StatsSample) {
        if self.ring.as_ref().is_some_and(|r| r.until <= now) {
            self.decline_ring("not answered");
        }
        if self.stats_at.is_some_and(|t| t <= now) {
            self.stats(now, sample);
            self.stats_at = Some(now + STATS_INTERVAL);
        }
    }

    /// The STATS line (`--stats`) and the window's overlay, once a second.
    fn stats(&mut self, now: Instant, s: &StatsSample) {
        let m = &self.mark;
        let secs = STATS_INTERVAL.as_secs_f64();
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let sent_fps = rate(s.frames_sent, m.frames_sent);
        let recv_fps = rate(s.frames_decoded, m.frames_decoded);
        let sent_kbps = rate(s.bytes_sent, m.bytes_sent) * 8.0 / 1000.0;
        let recv_kbps = rate(s.bytes_received, m.bytes_received) * 8.0 / 1000.0;
        let rtt_ms = s
            .rtt
            .map_or("-".into(), |r| format!("{:.1}", r.as_secs_f64() * 1000.0));
        let call = self.call.as_ref().map(|c| c.peer);
        if self.config.stats {
            self.line(format!(
                "STATS t={:.1} state={} call={} sent_fps={sent_fps:.1} recv_fps={recv_fps:.1} sent_kbps={sent_kbps:.0} recv_kbps={recv_kbps:.0} decoded={} latency_ms={} rtt_ms={rtt_ms} silent_ms={} pair={}",
                (now - self.started).as_secs_f64(),
                self.state,
                call.map_or("-".into(), |p| p.to_string()),
                s.frames_decoded,
                s.last_latency_us
                    .map_or("-".into(), |l| format!("{:.1}", l as f64 / 1000.0)),
                s.silent_for.map_or("-".into(), |d| d.as_millis().to_string()),
                s.pair.as_deref().unwrap_or("-"),
            ) + &audio_stats(s.audio.as_ref())
                + &format!(
                    " frames_dropped={} bwe_kbps={}",
                    s.frames_dropped,
                    s.estimate_bps.map_or("-".into(), |b| (b / 1000).to_string())
                ));
        }
        if call.is_some() {
            let size = s
                .remote_size
                .map_or("-".into(), |(w, h)| format!("{w}x{h}"));
            let mut lines = vec![
                format!("in  {recv_fps:.1} fps  {recv_kbps:.0} kbit/s  {size}"),
                format!("out {sent_fps:.1} fps  {sent_kbps:.0} kbit/s  RTT {rtt_ms} ms"),
                format!("pair {}", s.pair.as_deref().unwrap_or("-")),
            ];
            if let Some(a) = &s.audio {
                let mic = if a.muted {
                    "MUTED (M unmutes)".to_string()
                } else {
                    format!("{} (M mutes)", meter(a.local_level))
                };
                lines.push(format!("mic  {mic}"));
                lines.push(format!("peer {}", meter(a.remote_level)));
            }
            self.window(WindowUpdate::Overlay(lines));
        }
        self.mark = s.clone();
    }

    /// The local video failed: the call goes on receiving.
    pub fn local_track_ended(&mut self, reason: &str) {
        log::error!("{reason}; ending the local video track");
        self.line(format!("LOCAL_TRACK_ENDED reason={reason:?}"));
        self.emit(AppOutput::StopLocalVideo);
        self.window(WindowUpdate::Overlay(vec![format!(
            "local video ended: {reason}"
        )]));
    }
}

/// A message named for a log line, quoting at most a short excerpt.
fn describe(msg: &PeerMessage) -> String {
    match msg {
        PeerMessage::Sdp { kind, .. } => format!("an {}", kind.as_str()),
        PeerMessage::Candidate { candidate, .. } => {
            format!("a candidate ({})", excerpt(candidate, LOG_EXCERPT))
        }
        PeerMessage::Bye => "BYE".into(),
    }
}

/// A sound level as a bar of ten: -60 dBFS (empty) to 0 dBFS (full).
fn meter(level: f32) -> String {
    let db = 20.0 * level.max(1e-6).log10();
    let filled = (((db + 60.0) / 6.0).round().clamp(0.0, 10.0)) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(10 - filled))
}

/// The STATS line's audio fields (`-` where unknown).
fn audio_stats(a: Option<&AudioSample>) -> String {
    let field = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        " audio_recv={} audio_lost={} concealed_ms={} playout_ms={} av_offset_ms={}",
        field(a.map(|a| a.packets_received.to_string())),
        field(a.map(|a| a.lost.to_string())),
        field(a.map(|a| a.concealed_ms.to_string())),
        field(
            a.filter(|a| a.packets_received > 0)
                .map(|a| a.playout_ms.to_string())
        ),
        field(a.and_then(|a| a.av_offset_ms).map(|o| o.to_string())),
    )
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264_OFFER: &str =
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
    const VP8_OFFER: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";

    fn config() -> AppConfig {
        AppConfig {
            name: "alice".into(),
            server: "localhost".into(),
            port: 8888,
            window: false,
            autoconnect: true,
            auto_answer: false,
            autocall: false,
            call_name: None,
            stats: false,
        }
    }

    fn offer(sdp: &str) -> Vec<u8> {
        PeerMessage::Sdp {
            kind: SdpKind::Offer,
            sdp: sdp.into(),
        }
        .to_body()
    }

    fn answer() -> Vec<u8> {
        PeerMessage::Sdp {
            kind: SdpKind::Answer,
            sdp: "v=0\r\n".into(),
        }
        .to_body()
    }

    fn candidate() -> Vec<u8> {
        PeerMessage::Candidate {
            mid: Some("0".into()),
            mline_index: Some(0),
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
        }
        .to_body()
    }

    struct T {
        app: ClientApp,
        now: Instant,
    }

    impl T {
        /// Signed in as `me` with the given peers on the list.
        fn new(config: AppConfig, me: PeerId, peers: &[(PeerId, &str)]) -> T {
            let now = Instant::now();
            let mut app = ClientApp::new(config, now);
            app.start();
            app.signaling_event(ClientEvent::StateChanged(ClientState::Connected), now);
            app.signaling_event(ClientEvent::SignedIn { id: me }, now);
            for (id, name) in peers {
                app.signaling_event(
                    ClientEvent::PeerConnected {
                        id: *id,
                        name: name.to_string(),
                    },
                    now,
                );
            }
            let mut t = T { app, now };
            t.drain();
            t
        }

        fn drain(&mut self) -> Vec<AppOutput> {
            std::iter::from_fn(|| self.app.poll_output()).collect()
        }

        fn msg(&mut self, from: PeerId, body: &[u8]) -> Vec<AppOutput> {
            self.app.signaling_event(
                ClientEvent::Message {
                    from,
                    body: body.to_vec(),
                },
                self.now,
            );
            self.drain()
        }

        fn ev(&mut self, e: ClientEvent) -> Vec<AppOutput> {
            self.app.signaling_event(e, self.now);
            self.drain()
        }

        fn call(&mut self, e: CallEvent) -> Vec<AppOutput> {
            self.app.call_event(e);
            self.drain()
        }

        fn ui(&mut self, a: UiAction) -> Vec<AppOutput> {
            self.app.ui_action(a, self.now);
            self.drain()
        }

        /// A call with `peer` that the conductor started and connected.
        fn in_call_with(&mut self, peer: PeerId, outs: &[AppOutput]) {
            assert!(
                outs.iter().any(|o| matches!(o, AppOutput::Dial(p) | AppOutput::Answer { peer: p, .. } if *p == peer)),
                "{outs:?}"
            );
            self.call(CallEvent::Started { peer });
            self.call(CallEvent::Connected { peer });
        }
    }

    fn lines(outs: &[AppOutput]) -> Vec<&str> {
        outs.iter()
            .filter_map(|o| match o {
                AppOutput::Line(l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    fn byes_to(outs: &[AppOutput]) -> Vec<PeerId> {
        outs.iter()
            .filter_map(|o| match o {
                AppOutput::Send { to, body } if body == b"BYE" => Some(*to),
                _ => None,
            })
            .collect()
    }

    fn touches_call(outs: &[AppOutput]) -> bool {
        outs.iter().any(|o| {
            matches!(
                o,
                AppOutput::Dial(_)
                    | AppOutput::Answer { .. }
                    | AppOutput::Deliver(_)
                    | AppOutput::HangUp(_)
                    | AppOutput::HangUpPeerToPeer(_)
                    | AppOutput::SendChat(_)
                    | AppOutput::EndCall(_)
                    | AppOutput::StartLocalVideo
                    | AppOutput::Window(WindowUpdate::Streaming { .. })
                    | AppOutput::Window(WindowUpdate::Ringing { .. })
            )
        })
    }

    #[test]
    fn strangers_cannot_start_a_call_only_an_offer_can() {
        let mut t = T::new(config(), 1, &[(2, "bob"), (3, "eve")]);
        for body in [
            candidate(),
            answer(),
            b"BYE".to_vec(),
            b"{junk".to_vec(),
            Vec::new(),
            br#"{"type":"rollback","sdp":""}"#.to_vec(),
        ] {
            let outs = t.msg(3, &body);
            assert!(
                outs.is_empty(),
                "{:?}: {outs:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let outs = t.msg(2, &offer(H264_OFFER));
        assert_eq!(lines(&outs), ["INCOMING_CALL peer=2 name=bob"]);
        assert!(
            matches!(&outs[1], AppOutput::Answer { peer: 2, .. }),
            "headless answers"
        );
    }

    #[test]
    fn during_a_call_others_are_ignored_and_their_offers_refused_as_busy() {
        let mut t = T::new(config(), 1, &[(2, "bob"), (3, "carol")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        for body in [candidate(), answer(), b"BYE".to_vec(), b"{junk".to_vec()] {
            assert!(t.msg(3, &body).is_empty());
        }
        let outs = t.msg(3, &offer(H264_OFFER));
        assert_eq!(byes_to(&outs), [3], "BYE at once, before any answer");
        assert!(!touches_call(&outs));
        assert!(lines(&outs)[0].starts_with("CALL_REFUSED peer=3 reason=\"busy"));
        // The call's own peer still gets through.
        let outs = t.msg(2, &candidate());
        assert!(matches!(
            outs[..],
            [AppOutput::Deliver(PeerMessage::Candidate { .. })]
        ));
        let outs = t.msg(2, b"BYE");
        assert_eq!(outs, [AppOutput::Deliver(PeerMessage::Bye)]);
    }

    #[test]
    fn offers_without_h264_are_refused_naming_the_codecs() {
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(VP8_OFFER));
        assert_eq!(byes_to(&outs), [2]);
        assert!(!touches_call(&outs));
        assert!(lines(&outs)[0].contains("VP8"), "{outs:?}");
    }

    #[test]
    fn glare_the_lower_id_keeps_its_offer() {
        // We are 1 (lower): bob's offer is ignored, our call goes on.
        let mut c = config();
        c.call_name = Some("bob".into());
        let mut t = T::new(c.clone(), 1, &[]);
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 2,
            name: "bob".into(),
        });
        assert!(outs.contains(&AppOutput::Dial(2)));
        t.call(CallEvent::Started { peer: 2 });
        let outs = t.msg(2, &offer(H264_OFFER));
        assert!(
            !touches_call(&outs) && byes_to(&outs).is_empty(),
            "{outs:?}"
        );
        // Its answer to our offer follows, as for any call.
        let outs = t.msg(2, &answer());
        assert!(matches!(
            outs[..],
            [AppOutput::Deliver(PeerMessage::Sdp {
                kind: SdpKind::Answer,
                ..
            })]
        ));

        // We are 3 (higher): we answer bob's offer, replacing ours, with no new CALL_STARTED.
        let mut t = T::new(c, 3, &[]);
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 2,
            name: "bob".into(),
        });
        assert!(outs.contains(&AppOutput::Dial(2)));
        t.call(CallEvent::Started { peer: 2 });
        let outs = t.msg(2, &offer(H264_OFFER));
        assert!(
            matches!(outs[..], [AppOutput::Answer { peer: 2, .. }]),
            "{outs:?}"
        );
        // A second offer after that is a renegotiation: the conductor's business.
        let outs = t.msg(2, &offer(H264_OFFER));
        assert!(matches!(outs[..], [AppOutput::Deliver(_)]), "{outs:?}");
    }

    #[test]
    fn a_call_outlives_its_signaling_server_and_finds_the_peer_again() {
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        let outs = t.ev(ClientEvent::ServerLost {
            reason: "connection refused".into(),
        });
        assert!(!touches_call(&outs), "{outs:?}");
        let outs = t.ev(ClientEvent::PeerDisconnected { id: 2 });
        assert!(
            !touches_call(&outs),
            "the peer 'left' with the server: {outs:?}"
        );
        t.ev(ClientEvent::SignedIn { id: 7 });
        // Bob rejoins as 8: the call follows him.
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 8,
            name: "bob".into(),
        });
        assert!(outs.contains(&AppOutput::RemapPeer(8)), "{outs:?}");
        assert_eq!(t.app.call_peer(), Some(8));
        assert_eq!(t.msg(8, b"BYE"), [AppOutput::Deliver(PeerMessage::Bye)]);
    }

    #[test]
    fn hanging_up_during_an_outage_sends_bye_when_the_peer_is_back() {
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        t.ev(ClientEvent::ServerLost {
            reason: "gone".into(),
        });
        let outs = t.ui(UiAction::HangUp);
        assert!(
            matches!(outs[..], [AppOutput::HangUpPeerToPeer(EndReason::Local(_))]),
            "no BYE to a stale id, the data channel's bye only: {outs:?}"
        );
        t.call(CallEvent::Ended {
            peer: 2,
            reason: EndReason::Local("x".into()),
            summary: CallSummary::default(),
        });
        t.ev(ClientEvent::SignedIn { id: 5 });
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 9,
            name: "bob".into(),
        });
        assert_eq!(byes_to(&outs), [9]);
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 10,
            name: "bob".into(),
        });
        assert!(byes_to(&outs).is_empty(), "once");
    }

    #[test]
    fn a_peer_leaving_ends_the_call_only_before_media_flows() {
        let mut t = T::new(config(), 1, &[(2, "bob"), (3, "carol")]);
        t.ui(UiAction::Call(2));
        t.call(CallEvent::Started { peer: 2 });
        let outs = t.ev(ClientEvent::PeerDisconnected { id: 2 });
        assert_eq!(outs.last(), Some(&AppOutput::EndCall(EndReason::PeerLeft)));

        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        let outs = t.ev(ClientEvent::PeerDisconnected { id: 2 });
        assert!(!touches_call(&outs), "media decides: {outs:?}");
    }

    #[test]
    fn call_name_dials_the_first_peer_with_that_name_once() {
        let mut c = config();
        c.call_name = Some("carol".into());
        let mut t = T::new(c, 1, &[(2, "bob")]);
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 5,
            name: "carol".into(),
        });
        assert!(outs.contains(&AppOutput::Dial(5)));
        t.call(CallEvent::Started { peer: 5 });
        t.call(CallEvent::Ended {
            peer: 5,
            reason: EndReason::PeerHungUp,
            summary: CallSummary::default(),
        });
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 6,
            name: "carol".into(),
        });
        assert!(
            !outs.iter().any(|o| matches!(o, AppOutput::Dial(_))),
            "once per run"
        );

        // --autocall keeps its meaning: the last row.
        let mut c = config();
        c.autocall = true;
        let mut t = T::new(c, 1, &[]);
        let outs = t.ev(ClientEvent::PeerConnected {
            id: 4,
            name: "x".into(),
        });
        assert!(outs.contains(&AppOutput::Dial(4)));
    }

    #[test]
    fn the_window_rings_answers_declines_and_buffers_candidates() {
        let mut c = config();
        c.window = true;
        let mut t = T::new(c.clone(), 1, &[(2, "bob"), (3, "carol")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        assert!(outs.contains(&AppOutput::Window(WindowUpdate::Ringing {
            peer: 2,
            name: "bob".into()
        })));
        assert!(!outs
            .iter()
            .any(|o| matches!(o, AppOutput::Answer { .. } | AppOutput::StartLocalVideo)));
        t.msg(2, &candidate());
        // Someone else calling meanwhile is busy.
        assert_eq!(byes_to(&t.msg(3, &offer(H264_OFFER))), [3]);
        let outs = t.ui(UiAction::Answer(2));
        assert!(matches!(outs[0], AppOutput::Answer { peer: 2, .. }));
        assert!(matches!(
            outs[1],
            AppOutput::Deliver(PeerMessage::Candidate { .. })
        ));

        // Esc declines with BYE.
        let mut t = T::new(c.clone(), 1, &[(2, "bob")]);
        t.msg(2, &offer(H264_OFFER));
        let outs = t.ui(UiAction::Decline(2));
        assert_eq!(byes_to(&outs), [2]);
        assert!(!touches_call(&outs));

        // The caller giving up ends the ringing; so does the ring time-out.
        let mut t = T::new(c.clone(), 1, &[(2, "bob")]);
        t.msg(2, &offer(H264_OFFER));
        t.msg(2, b"BYE");
        assert!(t.ui(UiAction::Answer(2)).is_empty());
        let mut t = T::new(c.clone(), 1, &[(2, "bob")]);
        t.msg(2, &offer(H264_OFFER));
        let at = t.now + RING_TIMEOUT;
        t.app
            .handle_timeout(at - Duration::from_millis(1), &StatsSample::default());
        assert!(byes_to(&t.drain()).is_empty(), "still ringing");
        t.app.handle_timeout(at, &StatsSample::default());
        assert_eq!(byes_to(&t.drain()), [2]);

        // The server going away ends the ringing without a BYE to an id about to be stale.
        let mut t = T::new(c.clone(), 1, &[(2, "bob")]);
        t.msg(2, &offer(H264_OFFER));
        let outs = t.ev(ClientEvent::ServerLost {
            reason: "gone".into(),
        });
        assert!(byes_to(&outs).is_empty(), "{outs:?}");
        assert!(t.ui(UiAction::Answer(2)).is_empty());

        // --auto-answer answers at once even with a window.
        c.auto_answer = true;
        let mut t = T::new(c, 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        assert!(outs.iter().any(|o| matches!(o, AppOutput::Answer { .. })));
    }

    #[test]
    fn a_silent_peer_is_shown_and_ended_calls_are_summed_up() {
        let mut c = config();
        c.window = true;
        let mut t = T::new(c, 1, &[(2, "bob")]);
        let outs = t.ui(UiAction::Call(2));
        t.in_call_with(2, &outs);
        let outs = t.call(CallEvent::Silent {
            peer: 2,
            silent: Duration::from_millis(2600),
        });
        assert_eq!(lines(&outs), ["PEER_NOT_ANSWERING peer=2 silent_ms=2600"]);
        assert!(outs.iter().any(|o| matches!(o, AppOutput::Window(WindowUpdate::Warning(Some(w))) if w.contains("bob is not answering"))));
        let outs = t.call(CallEvent::Ended {
            peer: 2,
            reason: EndReason::NoPackets(Duration::from_secs(8)),
            summary: CallSummary {
                frames_sent: 10,
                frames_decoded: 9,
                connect_time: Some(Duration::from_millis(70)),
                first_frame_time: None,
                mean_latency_ms: Some(12.34),
            },
        });
        assert_eq!(
            lines(&outs),
            ["CALL_ENDED peer=2 reason=\"no packets from the peer for 8 s\" frames_sent=10 frames_decoded=9 connect_ms=70 first_frame_ms=- mean_latency_ms=12.3"]
        );
        assert!(outs.contains(&AppOutput::StopLocalVideo));
    }

    #[test]
    fn chat_lines_are_sent_only_on_an_open_channel_and_printed_escaped() {
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        // No call: dropped (one warning, nothing to do).
        t.app.chat_input(ChatInput::Line("hello".into()));
        assert!(t.drain().is_empty());
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        // Connected, but the channel is not open yet: dropped.
        t.app.chat_input(ChatInput::Line("early".into()));
        assert!(t.drain().is_empty());
        let outs = t.call(CallEvent::ChannelOpen { peer: 2 });
        assert_eq!(lines(&outs), ["CHAT_OPEN peer=2"]);
        t.app.chat_input(ChatInput::Line("hello bob".into()));
        assert_eq!(t.drain(), [AppOutput::SendChat("hello bob".into())]);
        // Empty and overlong lines send nothing.
        t.app.chat_input(ChatInput::Line(String::new()));
        t.app.chat_input(ChatInput::TooLong);
        assert!(t.drain().is_empty());
        // Received text is escaped as Rust's Debug escapes a str: one line, always.
        let outs = t.call(CallEvent::ChatReceived {
            peer: 2,
            text: "hi \"alice\"\nCALL_ENDED x\u{7}\u{e9}".into(),
        });
        assert_eq!(
            lines(&outs),
            [r#"CHAT peer=2 text="hi \"alice\"\nCALL_ENDED x\u{7}é""#]
        );
        // A closed channel drops lines again; so does the end of the call.
        t.call(CallEvent::ChannelClosed { peer: 2 });
        t.app.chat_input(ChatInput::Line("late".into()));
        assert!(t.drain().is_empty());
        t.call(CallEvent::ChannelOpen { peer: 2 });
        t.call(CallEvent::Ended {
            peer: 2,
            reason: EndReason::PeerHungUp,
            summary: CallSummary::default(),
        });
        t.app.chat_input(ChatInput::Line("after".into()));
        assert!(t.drain().is_empty());
    }

    #[test]
    fn hanging_up_sends_bye_through_the_conductor() {
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        t.call(CallEvent::ChannelOpen { peer: 2 });
        // Server up: the conductor's hang-up (channel bye and signaled BYE).
        assert!(matches!(
            t.ui(UiAction::HangUp)[..],
            [AppOutput::HangUp(EndReason::Local(_))]
        ));
        // A signal during an outage (the shutdown path): over the channel only.
        let mut t = T::new(config(), 1, &[(2, "bob")]);
        let outs = t.msg(2, &offer(H264_OFFER));
        t.in_call_with(2, &outs);
        t.ev(ClientEvent::ServerLost {
            reason: "gone".into(),
        });
        t.app.shutdown("interrupted");
        let outs = t.drain();
        assert!(
            matches!(
                outs[..],
                [
                    AppOutput::HangUpPeerToPeer(EndReason::Local(_)),
                    AppOutput::SignOut
                ]
            ),
            "{outs:?}"
        );
    }

    #[test]
    fn m_mutes_the_microphone_and_the_overlay_shows_it_with_both_meters() {
        let mut c = config();
        c.window = true;
        let mut t = T::new(c, 1, &[(2, "bob")]);
        let outs = t.ui(UiAction::Call(2));
        t.in_call_with(2, &outs);
        assert!(t
            .ui(UiAction::ToggleMute)
            .contains(&AppOutput::SetMuted(true)));
        let at = t.app.poll_timeout().unwrap();
        let s = StatsSample {
            audio: Some(AudioSample {
                muted: true,
                remote_level: 0.1,
                ..AudioSample::default()
            }),
            ..StatsSample::default()
        };
        t.app.handle_timeout(at, &s);
        let overlay = t
            .drain()
            .into_iter()
            .find_map(|o| match o {
                AppOutput::Window(WindowUpdate::Overlay(lines)) => Some(lines),
                _ => None,
            })
            .unwrap();
        assert!(
            overlay.contains(&"mic  MUTED (M unmutes)".to_string()),
            "{overlay:?}"
        );
        // 0.1 of full scale is -20 dBFS: 40 of the 60 dB shown.
        assert!(
            overlay.contains(&"peer [#######...]".to_string()),
            "{overlay:?}"
        );
        assert!(t
            .ui(UiAction::ToggleMute)
            .contains(&AppOutput::SetMuted(false)));
    }

    #[test]
    fn stats_lines_come_once_a_second_with_rates() {
        let mut c = config();
        c.stats = true;
        let mut t = T::new(c, 1, &[]);
        let at = t.app.poll_timeout().unwrap();
        assert_eq!(at, t.now + STATS_INTERVAL);
        let s = StatsSample {
            frames_sent: 30,
            bytes_sent: 125_000,
            frames_decoded: 29,
            silent_for: Some(Duration::from_millis(3000)),
            pair: Some("srflx/prflx".into()),
            ..StatsSample::default()
        };
        t.app.handle_timeout(at, &s);
        let outs = t.drain();
        let l = lines(&outs)[0];
        assert!(
            l.starts_with(
                "STATS t=1.0 state=CONNECTED call=- sent_fps=30.0 recv_fps=29.0 sent_kbps=1000"
            ),
            "{l}"
        );
        assert!(
            l.ends_with(
                "silent_ms=3000 pair=srflx/prflx audio_recv=- audio_lost=- concealed_ms=- playout_ms=- av_offset_ms=- frames_dropped=0 bwe_kbps=-"
            ),
            "{l}"
        );
        assert_eq!(t.app.poll_timeout(), Some(at + STATS_INTERVAL));
        // In a call with audio: its fields, appended after every older one.
        let s = StatsSample {
            audio: Some(AudioSample {
                packets_received: 50,
                lost: 1,
                concealed_ms: 20,
                playout_ms: 30,
                av_offset_ms: Some(-12),
                ..AudioSample::default()
            }),
            frames_dropped: 7,
            estimate_bps: Some(950_400),
            ..s
        };
        t.app.handle_timeout(at + STATS_INTERVAL, &s);
        let outs = t.drain();
        let l = lines(&outs)[0];
        assert!(
            l.ends_with(
                "silent_ms=3000 pair=srflx/prflx audio_recv=50 audio_lost=1 concealed_ms=20 playout_ms=30 av_offset_ms=-12 frames_dropped=7 bwe_kbps=950"
            ),
            "{l}"
        );
    }
}
