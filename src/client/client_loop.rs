//! The client's loop: one `mio::Poll` carrying the signaling connections (control and hanging
//! GET), one UDP socket per host candidate, the camera while it streams, the signals, and the
//! timers of the capture clock, str0m, the signaling client and the window's frame tick. It
//! turns the state machines' outputs into syscalls and the window's input into actions.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use slab::Slab;

use super::conductor::{CallOutput, Conductor, MediaConfig};
use super::main_wnd::{MainWnd, RendererChoice, Ui, UiAction, DEFAULT_SIZE};
use super::peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
use crate::media::{monotonic_us, I420Frame, SourceSpec, VideoSource, Y4mWriter};
use crate::reactor::{
    earliest, read_available, BufferedStream, Reactor, CAMERA_TOKEN, SIGNAL_TOKEN, WINDOW_TOKEN,
};
use crate::signaling::http::ResponseParser;
use crate::signaling::PeerId;

/// Everything the client can be told on its command line.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    pub port: u16,
    pub name: String,
    /// No window: sign in at once and print machine-readable lines only.
    pub headless: bool,
    /// Sign in at start instead of waiting for the window's Connect (headless always does).
    pub autoconnect: bool,
    pub renderer: RendererChoice,
    pub autocall: bool,
    pub source: SourceSpec,
    pub media: MediaConfig,
    pub record: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub stats: bool,
    /// Host candidate addresses; empty means every usable local IPv4 address.
    pub ice_ips: Vec<IpAddr>,
}

/// Largest signaling response the client accepts (an SDP is a few kB; a peer list can be long).
const MAX_RESPONSE: usize = 4 << 20;
/// Time given to hang up and sign out before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
const STATS_INTERVAL: Duration = Duration::from_secs(1);

enum Source {
    Http {
        channel: Channel,
        stream: BufferedStream<TcpStream>,
        parser: ResponseParser,
        /// The request, until the connection is established and it is written.
        unsent: Option<Vec<u8>>,
    },
    Udp {
        socket: UdpSocket,
        local: SocketAddr,
    },
}

/// What the last stats line counted from.
#[derive(Default)]
struct StatsMark {
    frames_sent: u64,
    bytes_sent: u64,
    frames_decoded: u64,
    bytes_received: u64,
}

pub struct ClientLoop {
    config: ClientConfig,
    reactor: Reactor,
    sources: Slab<Source>,
    control: Option<usize>,
    hanging: Option<usize>,
    udp_by_addr: HashMap<SocketAddr, usize>,
    client: PeerConnectionClient,
    conductor: Conductor,
    video: VideoSource,
    frame_number: u32,
    next_frame_at: Option<Instant>,
    recorder: Option<Y4mWriter>,
    stats_at: Option<Instant>,
    stats_mark: StatsMark,
    window: Option<MainWnd>,
    /// The camera's descriptor is registered with the poll (only while it streams).
    camera_registered: bool,
    exit_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    autocall_done: bool,
    /// The peer list changed: `--autocall` looks at it once the outputs are drained.
    autocall_pending: bool,
    scratch: Vec<u8>,
    started: Instant,
}

impl ClientLoop {
    pub fn new(config: ClientConfig) -> Result<ClientLoop, String> {
        let reactor =
            Reactor::new(256).map_err(|e| format!("cannot create the event loop: {e}"))?;
        let video = VideoSource::open(
            &config.source,
            config.media.width,
            config.media.height,
            config.media.fps,
        )
        .map_err(|e| e.to_string())?;
        log::info!("local video: {}", video.describe());
        let mut config = config;
        let window = if config.headless {
            None
        } else {
            match MainWnd::create(
                &config.name,
                &config.server,
                config.port,
                DEFAULT_SIZE,
                None,
                config.renderer,
            ) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!("cannot open a window ({e}): running headless");
                    config.headless = true;
                    None
                }
            }
        };
        if config.headless {
            config.autoconnect = true;
        }
        if let Some(fd) = window.as_ref().and_then(MainWnd::input_fd) {
            reactor
                .registry()
                .register(&mut SourceFd(&fd), WINDOW_TOKEN, Interest::READABLE)
                .map_err(|e| format!("cannot poll the X server connection: {e}"))?;
        }
        let ips = if config.ice_ips.is_empty() {
            local_ipv4_addresses()
        } else {
            config.ice_ips.clone()
        };
        let mut sources = Slab::new();
        let mut udp_by_addr = HashMap::new();
        let mut local_addrs = Vec::new();
        for ip in ips {
            let mut socket = UdpSocket::bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("cannot bind a UDP socket on {ip}: {e}"))?;
            let local = socket.local_addr().map_err(|e| e.to_string())?;
            let key = sources.vacant_key();
            reactor
                .registry()
                .register(&mut socket, Token(key), Interest::READABLE)
                .map_err(|e| e.to_string())?;
            sources.insert(Source::Udp { socket, local });
            udp_by_addr.insert(local, key);
            local_addrs.push(local);
        }
        if local_addrs.is_empty() {
            return Err("no usable local address for ICE host candidates".into());
        }
        log::info!("ICE host candidates: {local_addrs:?}");
        let now = Instant::now();
        Ok(ClientLoop {
            client: PeerConnectionClient::new(&config.name),
            conductor: Conductor::new(config.media, local_addrs),
            exit_at: config.duration.map(|d| now + d),
            stats_at: (config.stats || window.is_some()).then_some(now + STATS_INTERVAL),
            window,
            camera_registered: false,
            config,
            reactor,
            sources,
            control: None,
            hanging: None,
            udp_by_addr,
            video,
            frame_number: 0,
            next_frame_at: None,
            recorder: None,
            stats_mark: StatsMark::default(),
            shutdown_deadline: None,
            autocall_done: false,
            autocall_pending: false,
            scratch: Vec::with_capacity(64 * 1024),
            started: now,
        })
    }

    /// Runs until `--duration`, a signal, or a finished sign-out after shutdown began.
    pub fn run(&mut self) -> Result<(), String> {
        if self.config.autoconnect {
            // As the original's autoconnect: the Connect click, made for the user.
            if let Some(w) = self.window.as_mut() {
                let status = format!(
                    "Connecting to {}:{}...",
                    self.config.server, self.config.port
                );
                w.model().set_connecting(true);
                w.model().set_status(&status, false);
            }
            self.client
                .connect(&self.config.server.clone(), self.config.port);
        }
        let mut ready = Vec::with_capacity(256);
        loop {
            let now = Instant::now();
            self.process_outputs(now);
            self.render_window(now);
            if self.shutdown_deadline.is_some()
                && (self.client.state() == ClientState::NotConnected
                    || self.shutdown_deadline.is_some_and(|d| d <= now))
            {
                break;
            }
            let deadline = earliest([
                self.client.poll_timeout(),
                self.conductor.poll_timeout(),
                self.next_frame_at,
                self.stats_at,
                self.exit_at,
                self.shutdown_deadline,
                self.window.as_ref().map(MainWnd::deadline),
            ]);
            self.reactor
                .poll_ready(deadline, &mut ready)
                .map_err(|e| format!("poll failed: {e}"))?;
            let now = Instant::now();
            for r in &ready {
                if r.token == SIGNAL_TOKEN {
                    if self.reactor.take_shutdown_signal() {
                        self.begin_shutdown("interrupted", now);
                    }
                } else if r.token == CAMERA_TOKEN {
                    self.camera_ready(now);
                } else if r.token == WINDOW_TOKEN {
                    // Input from the X server: pump_window below takes it.
                } else {
                    self.source_event(r.token.0, r.readable, r.writable, now);
                }
            }
            self.handle_timeouts(now);
            self.pump_window(now);
        }
        self.stop_local_video();
        self.print_summary();
        Ok(())
    }

    /// Takes the window's input and acts on it.
    fn pump_window(&mut self, now: Instant) {
        let Some(w) = self.window.as_mut() else {
            return;
        };
        for action in w.pump(now) {
            self.ui_action(action, now);
        }
    }

    /// Paints the window if it changed, and announces a newly shown screen on stdout.
    fn render_window(&mut self, now: Instant) {
        if let Some(ui) = self.window.as_mut().and_then(|w| w.render_if_due(now)) {
            println!("UI screen={ui}");
        }
    }

    fn ui_action(&mut self, action: UiAction, now: Instant) {
        log::debug!("window: {action:?}");
        match action {
            UiAction::Connect { server, port } => {
                self.client.connect(&server, port);
                self.config.server = server;
                self.config.port = port;
            }
            UiAction::CancelConnect => {
                self.client.sign_out();
                if let Some(w) = self.window.as_mut() {
                    w.model().set_connecting(false);
                    w.model().set_status("Stopped trying to sign in.", false);
                }
            }
            UiAction::Call(peer) => self.start_call(peer, now),
            UiAction::SignOut => {
                self.conductor.hang_up("signing out", now);
                self.client.sign_out();
            }
            UiAction::HangUp => self.conductor.hang_up("hung up from the window", now),
            // wired by the lead
            UiAction::Answer(peer) | UiAction::Decline(peer) => {
                log::info!("window: answer/decline for peer {peer} is not wired yet");
            }
            UiAction::Quit => {
                if let Some(w) = self.window.as_mut() {
                    w.hide();
                }
                self.begin_shutdown("the window was closed", now);
            }
        }
    }

    /// "alice (id 3) at localhost:8888", for the peer list's title.
    fn session_text(&self) -> String {
        format!(
            "{} (id {}) at {}:{}",
            self.client.name(),
            self.client.id().map_or("-".into(), |i| i.to_string()),
            self.config.server,
            self.config.port
        )
    }

    fn show_peer_list(&mut self, status: Option<(&str, bool)>) {
        let session = self.session_text();
        if let Some(w) = self.window.as_mut() {
            let m = w.model();
            m.switch_to_peer_list(&session);
            if let Some((text, error)) = status {
                m.set_status(text, error);
            }
        }
        self.refresh_peers();
    }

    /// The window's peer list follows the signaling client's.
    fn refresh_peers(&mut self) {
        if let Some(w) = self.window.as_mut() {
            let peers = self.client.peers().iter();
            w.model().set_peers(peers.map(|(id, n)| (*id, n.as_str())));
        }
    }

    fn begin_shutdown(&mut self, why: &str, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!("{why}: hanging up and signing out");
        self.conductor.hang_up(why, now);
        self.process_outputs(now);
        self.client.sign_out();
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        self.exit_at = None;
    }

    fn handle_timeouts(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.conductor.handle_timeout(now);
        if self.next_frame_at.is_some_and(|t| t <= now) {
            self.capture_frame(now);
        }
        if self.stats_at.is_some_and(|t| t <= now) {
            self.sample_stats(now);
            self.stats_at = Some(now + STATS_INTERVAL);
        }
        if self.exit_at.is_some_and(|t| t <= now) {
            self.begin_shutdown("--duration elapsed", now);
        }
    }

    /// Takes the next frame from a clock-paced source (pattern, file) and sends it.
    fn capture_frame(&mut self, now: Instant) {
        let period = Duration::from_secs_f32(1.0 / self.config.media.fps.max(1.0));
        // Keep the cadence; if the loop fell far behind, restart it instead of bursting.
        let next = self.next_frame_at.map_or(now, |t| t + period);
        self.next_frame_at = Some(if next + period < now {
            now + period
        } else {
            next
        });
        // Without a window there is no preview: nothing to capture before media flows.
        if !self.conductor.is_connected() && self.window.is_none() {
            return;
        }
        let capture_us = monotonic_us();
        match self.video.next_frame(self.frame_number, capture_us) {
            Ok(Some(frame)) => {
                self.frame_number = self.frame_number.wrapping_add(1);
                self.local_frame(&frame, capture_us, now);
            }
            Ok(None) => {}
            Err(e) => self.local_track_ended(&format!("video source failed: {e}")),
        }
    }

    /// A captured frame: into the preview, and to the peer once media flows.
    fn local_frame(&mut self, frame: &I420Frame, capture_us: u64, now: Instant) {
        if let Some(w) = self.window.as_mut() {
            w.local_frame(frame);
        }
        if self.conductor.is_connected() {
            self.conductor.send_frame(frame, capture_us, now);
        }
    }

    /// The camera's descriptor is readable: take the newest frame.
    fn camera_ready(&mut self, now: Instant) {
        match self.video.read_camera() {
            Ok(Some(frame)) => {
                let capture_us = monotonic_us();
                self.local_frame(&frame, capture_us, now);
            }
            Ok(None) => {}
            Err(e) => self.local_track_ended(&e.to_string()),
        }
    }

    /// Starts the local video for a call: the capture clock, or the camera's stream.
    fn start_local_video(&mut self, now: Instant) {
        self.frame_number = 0;
        let Some(camera) = self.video.camera() else {
            self.next_frame_at = Some(now);
            return;
        };
        if let Err(e) = camera.start() {
            return self.local_track_ended(&e.to_string());
        }
        let fd = camera.fd();
        match self
            .reactor
            .registry()
            .register(&mut SourceFd(&fd), CAMERA_TOKEN, Interest::READABLE)
        {
            Ok(()) => self.camera_registered = true,
            Err(e) => self.local_track_ended(&format!("cannot poll the camera: {e}")),
        }
    }

    /// Stops the local video (the call ended, or the program is exiting).
    fn stop_local_video(&mut self) {
        self.next_frame_at = None;
        let registered = std::mem::take(&mut self.camera_registered);
        if let Some(camera) = self.video.camera() {
            if registered {
                let fd = camera.fd();
                let _ = self.reactor.registry().deregister(&mut SourceFd(&fd));
            }
            camera.stop();
        }
    }

    /// The source failed (a camera unplugged, a file gone bad): the call goes on without
    /// local video.
    fn local_track_ended(&mut self, reason: &str) {
        log::error!("{reason}; ending the local video track");
        println!("LOCAL_TRACK_ENDED reason={reason:?}");
        self.stop_local_video();
        if let Some(w) = self.window.as_mut() {
            w.model()
                .set_overlay(vec![format!("local video ended: {reason}")]);
        }
    }

    /// Feeds the state machines' outputs to each other and to the sockets until quiet.
    fn process_outputs(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.client.poll_output() {
                progressed = true;
                self.client_output(out, now);
            }
            while let Some(out) = self.conductor.poll_output() {
                progressed = true;
                self.call_output(out, now);
            }
            if !progressed {
                if std::mem::take(&mut self.autocall_pending) {
                    self.maybe_autocall(now);
                    continue;
                }
                return;
            }
        }
    }

    fn client_output(&mut self, out: ClientOutput, now: Instant) {
        match out {
            ClientOutput::Resolve { host, port } => {
                let result = resolve(&host, port);
                self.client.resolved(result, now);
            }
            ClientOutput::Open {
                channel,
                addr,
                request,
            } => self.open(channel, addr, request, now),
            ClientOutput::Cancel { channel } => {
                if let Some(key) = self.channel_key(channel).take() {
                    self.remove_source(key);
                }
            }
            ClientOutput::Event(e) => self.client_event(e, now),
        }
    }

    fn client_event(&mut self, e: ClientEvent, now: Instant) {
        match e {
            ClientEvent::StateChanged(state) => {
                if let Some(w) = self.window.as_mut() {
                    match state {
                        ClientState::Resolving | ClientState::SigningIn
                            if w.current_ui() == Ui::ConnectToServer =>
                        {
                            w.model().set_connecting(true)
                        }
                        ClientState::NotConnected if self.shutdown_deadline.is_none() => {
                            w.clear_video();
                            w.model().switch_to_connect_ui();
                        }
                        _ => {}
                    }
                }
            }
            ClientEvent::SignedIn { id } => {
                log::info!("signed in as {:?} with id {id}", self.client.name());
                println!("SIGNED_IN id={id}");
                self.show_peer_list(Some(("", false)));
                self.autocall_pending = true;
            }
            ClientEvent::SignInFailed { reason } => {
                if let Some(w) = self.window.as_mut() {
                    let text = format!(
                        "Cannot sign in to {}:{}: {reason}. Trying again every {} s; Esc stops.",
                        self.config.server,
                        self.config.port,
                        super::peer_connection_client::RECONNECT_DELAY.as_secs()
                    );
                    w.model().set_status(&text, true);
                }
            }
            ClientEvent::PeerConnected { id, name } => {
                log::info!("peer {id} {name:?} is on the list");
                println!("PEER_CONNECTED id={id} name={name}");
                self.refresh_peers();
                self.autocall_pending = true;
            }
            ClientEvent::PeerDisconnected { id } => {
                log::info!("peer {id} left");
                println!("PEER_DISCONNECTED id={id}");
                self.refresh_peers();
                if self.conductor.peer() == Some(id) {
                    self.conductor.end_call("the peer left the server", now);
                }
            }
            ClientEvent::Message { from, body } => self.conductor.handle_message(from, &body, now),
            ClientEvent::MessageFailed { to, reason } => {
                if self.conductor.peer() == Some(to) {
                    self.conductor
                        .end_call(&format!("cannot reach the peer: {reason}"), now);
                }
            }
            ClientEvent::ServerLost { reason } => {
                println!("SERVER_LOST reason={reason:?}");
                let text = format!("Lost the server ({reason}); signing in again...");
                if let Some(w) = self.window.as_mut() {
                    w.model().set_status(&text, true);
                }
            }
            ClientEvent::SignedOut => {
                log::info!("signed out");
                if let Some(w) = self.window.as_mut() {
                    w.model().switch_to_connect_ui();
                    w.model().set_status("Signed out.", false);
                }
            }
        }
    }

    /// `--autocall`, as the original: once the peer list is shown with someone on it, the
    /// last row is activated. Unlike the original this happens once per run, so a call that
    /// ends is not redialled forever.
    fn maybe_autocall(&mut self, now: Instant) {
        if !self.config.autocall
            || self.autocall_done
            || !self.conductor.is_idle()
            || !self.client.is_connected()
            || self.shutdown_deadline.is_some()
        {
            return;
        }
        let Some(peer) = self.client.peers().keys().next_back().copied() else {
            return;
        };
        self.autocall_done = true;
        self.start_call(peer, now);
    }

    /// Calls `peer` (the window's double click and `--autocall` both land here).
    pub fn start_call(&mut self, peer: PeerId, now: Instant) {
        log::info!("calling peer {peer}");
        if let Err(e) = self.conductor.call(peer, now) {
            log::error!("cannot call peer {peer}: {e}");
        }
    }

    fn call_output(&mut self, out: CallOutput, now: Instant) {
        match out {
            CallOutput::Signal { to, body } => self.client.send_to_peer(to, body),
            CallOutput::Transmit {
                source,
                destination,
                contents,
            } => self.transmit(source, destination, &contents),
            CallOutput::RemoteFrame(frame) => {
                if let Some(w) = self.window.as_mut() {
                    w.remote_frame(&frame);
                }
                self.record(&frame);
            }
            CallOutput::CallStarted { peer } => {
                println!("CALL_STARTED peer={peer}");
                let name = self.peer_name(peer);
                if let Some(w) = self.window.as_mut() {
                    w.clear_video();
                    w.model().switch_to_streaming(peer, &name);
                    w.model()
                        .set_call_status(&format!("Connecting to {name}..."));
                }
                self.start_local_video(now);
            }
            CallOutput::CallEnded { peer, reason } => {
                self.stop_local_video();
                if let Some(w) = self.window.as_mut() {
                    w.clear_video();
                }
                if self.window.is_some() && self.client.is_connected() {
                    let status = format!("The call with {} ended: {reason}.", self.peer_name(peer));
                    self.show_peer_list(Some((&status, false)));
                }
                // A finished call's recording is complete on disk, even while we run on.
                if let Some(Err(e)) = self.recorder.as_mut().map(Y4mWriter::flush) {
                    log::warn!("recording: {e}");
                }
                let s = self.conductor.stats();
                println!(
                    "CALL_ENDED peer={peer} reason={reason:?} frames_sent={} frames_decoded={} connect_ms={} first_frame_ms={} mean_latency_ms={}",
                    s.frames_sent,
                    s.frames_decoded,
                    ms(s.connect_time),
                    ms(s.first_frame_time),
                    mean_latency_ms(s).map_or("-".into(), |l| format!("{l:.1}")),
                );
            }
        }
    }

    /// A peer's name from the list, or its id when it is not on the list (any more).
    fn peer_name(&self, peer: PeerId) -> String {
        self.client
            .peers()
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| format!("peer {peer}"))
    }

    fn record(&mut self, frame: &I420Frame) {
        let Some(path) = &self.config.record else {
            return;
        };
        if self.recorder.is_none() {
            let fps = self.config.media.fps.round().max(1.0) as u32;
            match Y4mWriter::create(path, frame.width, frame.height, fps, 1) {
                Ok(w) => self.recorder = Some(w),
                Err(e) => {
                    log::error!("cannot record to {}: {e}; recording off", path.display());
                    self.config.record = None;
                    return;
                }
            }
        }
        if let Some(w) = self.recorder.as_mut() {
            if let Err(e) = w.write(frame) {
                log::warn!("recording: {e}");
            }
        }
    }

    fn transmit(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let Some(Source::Udp { socket, .. }) = self
            .udp_by_addr
            .get(&source)
            .and_then(|k| self.sources.get(*k))
        else {
            log::debug!("no socket for local address {source}");
            return;
        };
        match socket.send_to(contents, destination) {
            Ok(_) => {}
            // UDP is best effort: a full send buffer drops the datagram, as a network would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                log::trace!("UDP send buffer full: dropped a datagram to {destination}")
            }
            Err(e) => log::debug!("UDP send to {destination} failed: {e}"),
        }
    }

    fn channel_key(&mut self, channel: Channel) -> &mut Option<usize> {
        match channel {
            Channel::Control => &mut self.control,
            Channel::HangingGet => &mut self.hanging,
        }
    }

    fn open(&mut self, channel: Channel, addr: SocketAddr, request: Vec<u8>, now: Instant) {
        if let Some(old) = self.channel_key(channel).take() {
            self.remove_source(old);
        }
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                let err = RequestError::Connect(format!("{addr}: {e}"));
                return self.client.handle_response(channel, Err(err), now);
            }
        };
        let key = self.sources.vacant_key();
        if let Err(e) = self.reactor.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let err = RequestError::Connect(format!("cannot register a socket: {e}"));
            return self.client.handle_response(channel, Err(err), now);
        }
        self.sources.insert(Source::Http {
            channel,
            stream: BufferedStream::new(stream),
            parser: ResponseParser::new(MAX_RESPONSE),
            unsent: Some(request),
        });
        *self.channel_key(channel) = Some(key);
    }

    fn source_event(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        // Stale events for a closed key are ignored quietly.
        let Some(source) = self.sources.get_mut(key) else {
            return;
        };
        match source {
            Source::Udp { socket, local } => {
                let local = *local;
                let mut buf = [0u8; 2048];
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            self.conductor.handle_datagram(from, local, &buf[..n], now);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::debug!("UDP receive on {local}: {e}");
                            break;
                        }
                    }
                }
            }
            Source::Http {
                channel,
                stream,
                parser,
                unsent,
            } => {
                let channel = *channel;
                if writable {
                    if let Some(request) = unsent.as_ref() {
                        match stream.io.take_error() {
                            Ok(Some(e)) | Err(e) => {
                                return self.finish(
                                    key,
                                    Err(RequestError::Connect(e.to_string())),
                                    now,
                                )
                            }
                            Ok(None) => {}
                        }
                        if stream.io.peer_addr().is_ok() {
                            if let Err(e) = stream.send(request) {
                                return self.finish(
                                    key,
                                    Err(RequestError::Connect(e.to_string())),
                                    now,
                                );
                            }
                            *unsent = None;
                        }
                    } else if let Err(e) = stream.flush() {
                        return self.finish(key, Err(RequestError::Connect(e.to_string())), now);
                    }
                }
                if readable {
                    self.scratch.clear();
                    let outcome = read_available(&mut stream.io, &mut self.scratch, MAX_RESPONSE);
                    let result = match parser.feed(&self.scratch) {
                        Ok(Some(resp)) => Some(Ok(resp)),
                        Ok(None) if outcome.closed => Some(Err(if unsent.is_some() {
                            let e = stream.io.take_error().ok().flatten();
                            RequestError::Connect(
                                e.map_or("connection closed".into(), |e| e.to_string()),
                            )
                        } else {
                            RequestError::Response(parser.finish().to_string())
                        })),
                        Ok(None) => None,
                        Err(e) => Some(Err(RequestError::Response(e.to_string()))),
                    };
                    if let Some(result) = result {
                        log::trace!("{channel:?}: response complete");
                        self.finish(key, result, now);
                    }
                }
            }
        }
    }

    /// A request connection is done: close it and tell the signaling client.
    fn finish(
        &mut self,
        key: usize,
        result: Result<crate::signaling::http::ParsedResponse, RequestError>,
        now: Instant,
    ) {
        let Some(Source::Http { channel, .. }) = self.sources.get(key) else {
            return;
        };
        let channel = *channel;
        if *self.channel_key(channel) == Some(key) {
            *self.channel_key(channel) = None;
        }
        self.remove_source(key);
        self.client.handle_response(channel, result, now);
    }

    fn remove_source(&mut self, key: usize) {
        if let Some(source) = self.sources.try_remove(key) {
            let registry = self.reactor.registry();
            let _ = match source {
                Source::Http { mut stream, .. } => registry.deregister(&mut stream.io),
                Source::Udp { mut socket, .. } => registry.deregister(&mut socket),
            };
        }
    }

    /// Once a second: the STATS line (`--stats`) and the window's overlay.
    fn sample_stats(&mut self, now: Instant) {
        let s = self.conductor.stats().clone();
        let m = &self.stats_mark;
        let secs = STATS_INTERVAL.as_secs_f64();
        let sent_fps = (s.frames_sent.saturating_sub(m.frames_sent)) as f64 / secs;
        let recv_fps = (s.frames_decoded.saturating_sub(m.frames_decoded)) as f64 / secs;
        let sent_kbps = (s.bytes_sent.saturating_sub(m.bytes_sent)) as f64 * 8.0 / 1000.0 / secs;
        let recv_kbps =
            (s.bytes_received.saturating_sub(m.bytes_received)) as f64 * 8.0 / 1000.0 / secs;
        let rtt_ms = s
            .rtt
            .map_or("-".into(), |r| format!("{:.1}", r.as_secs_f64() * 1000.0));
        if self.config.stats {
            println!(
                "STATS t={:.1} state={} call={} sent_fps={sent_fps:.1} recv_fps={recv_fps:.1} sent_kbps={sent_kbps:.0} recv_kbps={recv_kbps:.0} decoded={} latency_ms={} rtt_ms={rtt_ms}",
                (now - self.started).as_secs_f64(),
                self.client.state(),
                self.conductor.peer().map_or("-".into(), |p| p.to_string()),
                s.frames_decoded,
                s.last_stamp_latency_us
                    .map_or("-".into(), |l| format!("{:.1}", l as f64 / 1000.0)),
            );
        }
        if let Some(w) = self.window.as_mut() {
            if self.conductor.peer().is_some() && w.current_ui() == Ui::Streaming {
                let size = s
                    .remote_size
                    .map_or("-".into(), |(w, h)| format!("{w}x{h}"));
                w.model().set_overlay(vec![
                    format!("in  {recv_fps:.1} fps  {recv_kbps:.0} kbit/s  {size}"),
                    format!("out {sent_fps:.1} fps  {sent_kbps:.0} kbit/s  RTT {rtt_ms} ms"),
                ]);
            }
        }
        self.stats_mark = StatsMark {
            frames_sent: s.frames_sent,
            bytes_sent: s.bytes_sent,
            frames_decoded: s.frames_decoded,
            bytes_received: s.bytes_received,
        };
    }

    fn print_summary(&self) {
        log::info!(
            "exiting after {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

fn mean_latency_ms(s: &super::conductor::CallStats) -> Option<f64> {
    (s.stamp_latency_count > 0)
        .then(|| s.stamp_latency_sum_us as f64 / s.stamp_latency_count as f64 / 1000.0)
}

/// Resolves the server's name. Numeric addresses and /etc/hosts names answer at once; a
/// name that needs DNS blocks the loop for the lookup, once per (re)connect.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host}: no address"))
}

/// Every IPv4 address of an interface that is up, loopback included, link-local excluded.
pub fn local_ipv4_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifaddrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifaddrs) != 0 {
            return vec![IpAddr::from([127, 0, 0, 1])];
        }
        let mut cur = ifaddrs;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_link_local() && !out.contains(&IpAddr::V4(ip)) {
                    out.push(IpAddr::V4(ip));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifaddrs);
    }
    out
}
