//! The client's loop: one `mio::Poll` carrying the signaling connections (control and hanging
//! GET), one UDP socket per host candidate, a TCP connection per (host candidate, TURN
//! server reached over TCP), the camera while it streams, the X server's
//! connection, stdin with `--chat-stdin`, and the signals. It is IO only: it dispatches readiness, feeds the state
//! machines ([`PeerConnectionClient`], [`Conductor`], [`ClientApp`], the
//! [`MediaSession`]) and carries out what they return. Every decision is theirs.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use slab::Slab;

use super::audio_devices::{AudioOut, LocalAudio};
use super::audio_session::AudioSession;
use super::chat_input::StdinReader;
use super::client_app::{
    AppConfig, AppOutput, CallEvent, CallSummary, ClientApp, StatsSample, WindowUpdate,
};
use super::conductor::{CallOutput, Conductor, EndReason};
use super::config::{io_error, ClientConfig, ClientError};
use super::devices::{LocalVideo, Recorder};
use super::files::FileTransfers;
use super::main_wnd::{MainWnd, DEFAULT_SIZE};
use super::media_session::MediaSession;
use super::nat::tcp::TurnStream;
use super::nat::{Delivery, GatherOutput, IceGatherer, IcePolicy};
use super::netif::{AddressWatch, HostAddresses};
use super::peer_connection_client::{Channel, ClientOutput, ClientState, PeerConnectionClient};
use super::resolver::Resolver;
use crate::media::{monotonic_us, I420Frame, MediaError, VideoSource};
use crate::reactor::{
    earliest, Reactor, ReadStep, AUDIO_CAPTURE_TOKEN, AUDIO_PLAYBACK_TOKEN, CAMERA_TOKEN,
    NETIF_TOKEN, SIGNAL_TOKEN, STDIN_TOKEN, WINDOW_TOKEN,
};
use crate::signaling::exchange::{ExchangeOutcome, HttpExchange};

/// Largest signaling response the client accepts (an SDP is a few kB; a peer list can be long).
const MAX_RESPONSE: usize = 4 << 20;
/// The receive buffer asked for each host candidate's UDP socket.
const UDP_RECV_BUFFER: usize = 4 << 20;
/// Time given to hang up and sign out before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

enum Source {
    /// One signaling request (sign-in, message, sign-out, or the hanging GET).
    Http {
        channel: Channel,
        exchange: HttpExchange,
    },
    /// A host candidate's socket.
    Udp {
        socket: UdpSocket,
        local: SocketAddr,
    },
    /// The resolver's socket, asking the nameservers.
    Dns { socket: UdpSocket },
    /// A connection to a TURN server reached over TCP, for the allocation made from the
    /// host socket `base`.
    TurnTcp {
        stream: TcpStream,
        base: SocketAddr,
        server: SocketAddr,
        buffers: TurnStream,
        connected: bool,
    },
}

pub struct ClientLoop {
    config: ClientConfig,
    reactor: Reactor,
    sources: Slab<Source>,
    control: Option<usize>,
    hanging: Option<usize>,
    udp_by_addr: HashMap<SocketAddr, usize>,
    /// The TURN-over-TCP connections by (base, server).
    tcp_turn: HashMap<(SocketAddr, SocketAddr), usize>,
    resolver: Resolver,
    dns: Option<usize>,
    client: PeerConnectionClient,
    conductor: Conductor,
    /// Server-reflexive and relayed candidates, and the TURN wrapping.
    gatherer: IceGatherer,
    /// The kernel's word on address changes and the addresses we have sockets on (None
    /// with `--ice-ip`, which pins them, or when the watch cannot be opened).
    addresses: Option<(AddressWatch, HostAddresses)>,
    media: Option<MediaSession>,
    app: ClientApp,
    video: LocalVideo,
    recorder: Option<Recorder>,
    /// The local sound, where received sound goes, and the call's audio.
    local_audio: LocalAudio,
    audio_out: AudioOut,
    audio: Option<AudioSession>,
    /// The sender's capture time of the video frame being decoded, for lip-sync.
    video_sender_clock: Option<SystemTime>,
    /// The window's mute, kept across calls.
    muted: bool,
    window: Option<MainWnd>,
    /// Stdin while `--chat-stdin` reads it (gone at its end).
    stdin: Option<StdinReader>,
    /// `--send-file` and `--receive-dir` transfers on the call's file channels.
    files: FileTransfers,
    exit_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    encode_errors: u64,
    scratch: Vec<u8>,
    started: Instant,
}

impl ClientLoop {
    pub fn new(config: ClientConfig) -> Result<ClientLoop, ClientError> {
        let reactor = Reactor::new(256).map_err(io_error("cannot create the event loop"))?;
        let source = VideoSource::open(
            &config.source,
            config.media.width,
            config.media.height,
            config.media.fps,
        )
        .map_err(ClientError::Video)?;
        let video = LocalVideo::new(source, config.media.fps);
        log::info!("local video: {}", video.describe());
        let recorder = match &config.record {
            Some(path) => Some(Recorder::create(path, config.media.fps).map_err(|source| {
                ClientError::Record {
                    path: path.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let local_audio = LocalAudio::open(&config.audio.source).map_err(ClientError::Audio)?;
        log::info!("local audio: {}", local_audio.describe());
        let mut audio_out = AudioOut::open(&config.audio.sink, config.audio.record.as_deref())
            .map_err(ClientError::Audio)?;
        audio_out.register(reactor.registry());
        log::info!("audio playback: {}", audio_out.describe());
        let mut config = config;
        let window = if config.headless {
            None
        } else {
            match MainWnd::create(
                &config.name,
                &config.server,
                config.port,
                DEFAULT_SIZE,
                config.window_pos,
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
                .map_err(io_error("cannot poll the X server connection"))?;
        }
        let ips = if config.ice_ips.is_empty() {
            super::netif::local_ipv4_addresses()
        } else {
            config.ice_ips.clone()
        };
        let mut sources = Slab::new();
        let mut udp_by_addr = HashMap::new();
        let mut local_addrs = Vec::new();
        for &ip in &ips {
            let local = bind_host_socket(&reactor, &mut sources, &mut udp_by_addr, ip)
                .map_err(|source| ClientError::Bind { ip, source })?;
            local_addrs.push(local);
        }
        if local_addrs.is_empty() {
            return Err(ClientError::NoLocalAddress);
        }
        let addresses = if config.ice_ips.is_empty() {
            watch_addresses(&reactor, ips)
        } else {
            None
        };
        log::info!("ICE host candidates: {local_addrs:?}");
        let stdin = if config.chat_stdin {
            open_stdin(&reactor)
        } else {
            None
        };
        let now = Instant::now();
        let gatherer = super::nat::gatherer::start(
            &config.ice_servers,
            &local_addrs,
            Resolver::from_system(),
            now,
        )
        .map_err(ClientError::IceServer)?;
        let mut conductor = Conductor::new(config.media, local_addrs);
        if config.ice_servers.policy == IcePolicy::Relay {
            conductor.set_relay_only();
        }
        let app = ClientApp::new(
            AppConfig {
                name: config.name.clone(),
                server: config.server.clone(),
                port: config.port,
                window: window.is_some(),
                autoconnect: config.autoconnect,
                auto_answer: config.auto_answer || window.is_none(),
                autocall: config.autocall,
                call_name: config.call_name.clone(),
                stats: config.stats,
            },
            now,
        );
        Ok(ClientLoop {
            client: PeerConnectionClient::new(&config.name),
            conductor,
            gatherer,
            addresses,
            files: FileTransfers::new(config.files.clone()),
            media: None,
            app,
            exit_at: config.duration.map(|d| now + d),
            window,
            stdin,
            config,
            reactor,
            sources,
            control: None,
            hanging: None,
            udp_by_addr,
            tcp_turn: HashMap::new(),
            resolver: Resolver::from_system(),
            dns: None,
            video,
            recorder,
            local_audio,
            audio_out,
            audio: None,
            video_sender_clock: None,
            muted: false,
            shutdown_deadline: None,
            encode_errors: 0,
            scratch: Vec::with_capacity(64 * 1024),
            started: now,
        })
    }

    /// Runs until `--duration`, a signal, or a finished sign-out after shutdown began.
    pub fn run(&mut self) -> Result<(), ClientError> {
        self.app.start();
        let mut ready = Vec::with_capacity(256);
        loop {
            let now = Instant::now();
            self.process_outputs(now);
            if let Some(ui) = self.window.as_mut().and_then(|w| w.render_if_due(now)) {
                println!("UI screen={ui}");
            }
            if self
                .shutdown_deadline
                .is_some_and(|d| self.client.state() == ClientState::NotConnected || d <= now)
            {
                break;
            }
            let deadline = earliest([
                self.client.poll_timeout(),
                self.resolver.poll_timeout(),
                self.conductor.poll_timeout(),
                self.gatherer.poll_timeout(),
                self.addresses.as_ref().and_then(|(_, h)| h.poll_timeout()),
                self.files.poll_timeout(),
                self.app.poll_timeout(),
                self.video.poll_timeout(),
                self.local_audio.poll_timeout(),
                self.audio.as_ref().and_then(AudioSession::poll_timeout),
                self.exit_at,
                self.shutdown_deadline,
                self.window.as_ref().map(MainWnd::deadline),
            ]);
            self.reactor
                .poll_ready(deadline, &mut ready)
                .map_err(io_error("poll failed"))?;
            let now = Instant::now();
            for r in &ready {
                match r.token {
                    SIGNAL_TOKEN => {
                        if self.reactor.take_shutdown_signal() {
                            self.begin_shutdown("interrupted", now);
                        }
                    }
                    CAMERA_TOKEN => {
                        let frame = self.video.on_readable();
                        self.local_frame(frame, monotonic_us(), now);
                    }
                    // Input from the X server: the window's pump below takes it.
                    WINDOW_TOKEN => {}
                    STDIN_TOKEN => self.read_stdin(),
                    NETIF_TOKEN => {
                        if let Some((watch, hosts)) = self.addresses.as_mut() {
                            if watch.drain() {
                                hosts.notified(now);
                            }
                        }
                    }
                    AUDIO_CAPTURE_TOKEN => self.audio_tick(now, true),
                    AUDIO_PLAYBACK_TOKEN => self.audio_out.on_writable(),
                    Token(key) => self.source_event(key, r.readable, r.writable, now),
                }
            }
            self.handle_timeouts(now);
            if let Some(w) = self.window.as_mut() {
                for action in w.pump(now) {
                    self.app.ui_action(action, now);
                }
            }
        }
        let registry = self.reactor.registry();
        self.video.stop(registry);
        self.audio_out.flush();
        log::info!(
            "exiting after {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Chat lines typed on stdin, for the app; at stdin's end, reading stops.
    fn read_stdin(&mut self) {
        let Some(reader) = self.stdin.as_mut() else {
            return;
        };
        for input in reader.read_lines() {
            self.app.chat_input(input);
        }
        if reader.at_eof() {
            log::info!("chat: stdin ended; no more chat input");
            let fd = reader.raw_fd();
            let _ = self.reactor.registry().deregister(&mut SourceFd(&fd));
            self.stdin = None;
        }
    }

    fn begin_shutdown(&mut self, why: &str, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.app.shutdown(why);
        self.process_outputs(now);
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        self.exit_at = None;
    }

    fn handle_timeouts(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.resolver.handle_timeout(now);
        self.conductor.handle_timeout(now);
        self.gatherer.handle_timeout(now);
        if self.addresses.as_ref().is_some_and(|(_, h)| h.is_due(now)) {
            self.regather(now);
        }
        self.files.handle_timeout(&mut self.conductor, now);
        let sample = self.stats_sample();
        self.app.handle_timeout(now, &sample);
        if self.video.poll_timeout().is_some_and(|t| t <= now) {
            // Without a window there is no preview: nothing to draw before media flows.
            let wanted = self.window.is_some() || self.conductor.is_sending();
            // One capture instant: the pattern's stamp and the RTP timestamp agree.
            let capture_us = monotonic_us();
            let frame = self.video.on_timer(now, capture_us, wanted);
            self.local_frame(frame, capture_us, now);
        }
        self.audio_tick(now, false);
        if self.exit_at.is_some_and(|t| t <= now) {
            self.begin_shutdown("--duration elapsed", now);
        }
    }

    /// A captured frame: into the preview, and encoded to the peer while media flows.
    /// `capture_us` is its capture instant on the stamp clock.
    fn local_frame(
        &mut self,
        frame: Result<Option<I420Frame>, MediaError>,
        capture_us: u64,
        now: Instant,
    ) {
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                return self
                    .app
                    .local_track_ended(&format!("video source failed: {e}"))
            }
        };
        if let Some(w) = self.window.as_mut() {
            w.local_frame(&frame);
        }
        let Some(media) = self.media.as_mut().filter(|_| self.conductor.is_sending()) else {
            return;
        };
        match media.encode(&frame, now) {
            Ok(Some(enc)) => {
                self.conductor.send_video(enc.data, capture_us, now);
            }
            Ok(None) => {}
            Err(e) => {
                self.encode_errors += 1;
                if self.encode_errors == 1 {
                    log::warn!("encode failed: {e} (further failures are logged at debug)");
                } else {
                    log::debug!("encode failed: {e}");
                }
            }
        }
    }

    /// Captured sound to the peer while media flows; received sound played when due.
    fn audio_tick(&mut self, now: Instant, capture_ready: bool) {
        if capture_ready || self.local_audio.poll_timeout().is_some_and(|t| t <= now) {
            for frame in self.local_audio.on_timer(now) {
                let sending = self.conductor.is_sending();
                let Some(a) = self.audio.as_mut().filter(|_| sending) else {
                    continue;
                };
                match a.encode(&frame.pcm) {
                    Ok(data) => {
                        self.conductor
                            .send_audio(data, frame.rtp_ticks, frame.captured, now);
                    }
                    Err(e) => log::debug!("audio encode failed: {e}"),
                }
            }
        }
        if let Some(a) = self.audio.as_mut() {
            if let Some(due) = a
                .poll_timeout()
                .filter(|t| *t <= now && a.frames_played() == 0)
            {
                // Where the recording's timeline starts on the capture clock (the first
                // frame's due time), for measuring mouth-to-ear latency and lip-sync.
                let late = Instant::now().saturating_duration_since(due);
                let start_us = monotonic_us().saturating_sub(late.as_micros() as u64);
                println!("AUDIO_PLAYOUT_STARTED mono_us={start_us}");
            }
            while let Some(pcm) = a.play(now) {
                self.audio_out.play(&pcm);
            }
        }
    }

    /// Feeds the state machines' outputs to each other and to the sockets until quiet.
    fn process_outputs(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            self.resolver_io(now);
            while let Some(out) = self.client.poll_output() {
                progressed = true;
                self.client_output(out, now);
            }
            while let Some(out) = self.conductor.poll_output() {
                progressed = true;
                self.call_output(out, now);
            }
            while let Some(out) = self.gatherer.poll_output() {
                progressed = true;
                match out {
                    GatherOutput::Transmit(t) => {
                        self.transmit(t.source, t.destination, &t.contents)
                    }
                    GatherOutput::Candidate(c) => self.conductor.add_local_candidate(c, now),
                    GatherOutput::Withdrawn(c) => self.conductor.remove_local_candidate(&c),
                    GatherOutput::Dns { server, query } => self.send_dns(server, &query),
                    GatherOutput::Connect { base, server } => self.turn_connect(base, server, now),
                    GatherOutput::StreamTransmit(t) => {
                        self.turn_stream_send(t.source, t.destination, &t.contents, now)
                    }
                    GatherOutput::Disconnect { base, server } => {
                        if let Some(key) = self.tcp_turn.remove(&(base, server)) {
                            self.remove_source(key);
                        }
                    }
                }
            }
            // One app output at a time: what it makes the conductor say (a BYE) reaches
            // the signaling client before the app's next output (a sign-out) does.
            if let Some(out) = self.app.poll_output() {
                progressed = true;
                self.app_output(out, now);
            }
            while let Some(line) = self.files.poll_line() {
                println!("{line}");
            }
            if !progressed {
                return;
            }
        }
    }

    fn client_output(&mut self, out: ClientOutput, now: Instant) {
        match out {
            ClientOutput::Resolve { host, port } => {
                if let Some(result) = self.resolver.start(&host, port, now) {
                    self.client.resolved(result.map_err(|e| e.to_string()), now);
                }
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
            ClientOutput::Event(e) => self.app.signaling_event(e, now),
        }
    }

    fn app_output(&mut self, out: AppOutput, now: Instant) {
        match out {
            AppOutput::Connect { server, port } => {
                self.client.connect(&server, port);
                self.config.server = server;
                self.config.port = port;
            }
            AppOutput::SignOut => self.client.sign_out(),
            AppOutput::Send { to, body } => self.client.send_to_peer(to, body),
            AppOutput::Dial(peer) => {
                if let Err(error) = self.conductor.call(peer, now) {
                    self.app.call_event(CallEvent::Failed { peer, error });
                }
            }
            AppOutput::Answer { peer, sdp } => {
                if let Err(error) = self.conductor.accept_offer(peer, &sdp, now) {
                    self.app.call_event(CallEvent::Failed { peer, error });
                }
            }
            AppOutput::Deliver(msg) => self.conductor.handle_message(msg, now),
            AppOutput::HangUp(reason) => self.conductor.hang_up(reason, now),
            AppOutput::HangUpPeerToPeer(reason) => self.conductor.hang_up_peer_to_peer(reason, now),
            AppOutput::SendChat(text) => {
                self.conductor.send_chat(&text, now);
            }
            AppOutput::EndCall(reason) => self.conductor.end_call(reason, now),
            AppOutput::RemapPeer(peer) => self.conductor.set_peer(peer),
            AppOutput::StartLocalVideo => {
                let registry = self.reactor.registry();
                if let Err(e) = self.video.start(registry, now) {
                    self.app.local_track_ended(&e);
                }
            }
            AppOutput::StopLocalVideo => {
                let registry = self.reactor.registry();
                self.video.stop(registry);
            }
            AppOutput::SetMuted(m) => {
                self.muted = m;
                if let Some(a) = self.audio.as_mut() {
                    a.set_muted(m);
                }
            }
            AppOutput::Window(u) => {
                if let Some(w) = self.window.as_mut() {
                    apply_window_update(w, u);
                }
            }
            AppOutput::Line(line) => println!("{line}"),
            AppOutput::Quit => self.begin_shutdown("the window was closed", now),
        }
    }

    fn call_output(&mut self, out: CallOutput, now: Instant) {
        match out {
            CallOutput::Signal { to, body } => self.client.send_to_peer(to, body),
            CallOutput::Transmit {
                source,
                destination,
                contents,
            } => {
                // From a relayed address: wrapped to the TURN server by the gatherer.
                if !self
                    .gatherer
                    .send_relayed(source, destination, &contents, now)
                {
                    self.transmit(source, destination, &contents)
                }
            }
            CallOutput::CallStarted { peer } => {
                match MediaSession::new(self.config.media, now) {
                    Ok(m) => self.media = Some(m),
                    Err(e) => {
                        let why = format!("cannot start the codecs: {e}");
                        return self.conductor.hang_up(EndReason::Local(why), now);
                    }
                }
                // Fresh readings: `now` is stale by the time it took to set the call up
                // (making its DTLS certificate takes tens of ms), and these three must agree.
                let (fresh, fresh_us, wall) = (Instant::now(), monotonic_us(), SystemTime::now());
                match AudioSession::new((fresh, wall)) {
                    Ok(mut a) => {
                        a.set_muted(self.muted);
                        self.audio = Some(a);
                    }
                    Err(e) => log::warn!("no audio in this call: {e}"),
                }
                self.local_audio
                    .start(fresh, fresh_us, self.reactor.registry());
                self.app.call_event(CallEvent::Started { peer });
            }
            CallOutput::Connected { peer } => {
                if let Some(m) = self.media.as_mut() {
                    m.connected();
                }
                self.app.call_event(CallEvent::Connected { peer });
            }
            CallOutput::MediaData(data) => {
                let Some(m) = self.media.as_mut() else {
                    return;
                };
                let sender_clock = self.video_sender_clock.take();
                let decoded = m.decode(&data, now, monotonic_us());
                if decoded.request_keyframe {
                    self.conductor.request_keyframe(now);
                }
                if let Some(frame) = decoded.frame {
                    if let Some((a, t)) = self.audio.as_mut().zip(sender_clock) {
                        a.video_shown(t, now);
                    }
                    if let Some(w) = self.window.as_mut() {
                        w.remote_frame(&frame);
                    }
                    if let Some(r) = self.recorder.as_mut() {
                        r.record(&frame);
                    }
                }
            }
            CallOutput::VideoSenderClock(t) => self.video_sender_clock = Some(t),
            CallOutput::AudioData(packet) => {
                if let Some(a) = self.audio.as_mut() {
                    a.receive(packet, now);
                }
            }
            CallOutput::KeyframeRequested => {
                if let Some(m) = self.media.as_mut() {
                    m.keyframe_requested();
                }
            }
            CallOutput::BandwidthEstimate { bps, loss } => {
                if let Some(m) = self.media.as_mut() {
                    m.bandwidth_estimate(bps, loss, now);
                    if let Some(rates) = m.poll_bwe_bitrates() {
                        self.conductor.set_bwe_bitrates(rates, now);
                    }
                }
            }
            CallOutput::PeerSilent { peer, silent } => {
                self.app.call_event(CallEvent::Silent { peer, silent })
            }
            CallOutput::PeerResumed { peer } => self.app.call_event(CallEvent::Resumed { peer }),
            CallOutput::ChannelOpen { peer } => {
                self.app.call_event(CallEvent::ChannelOpen { peer });
                self.files.channels_ready(&mut self.conductor, now);
            }
            CallOutput::FileChannelOpen(id) => {
                self.files.channel_open(id, &mut self.conductor, now)
            }
            CallOutput::FileChannelData(data) => {
                self.files.channel_data(data, &mut self.conductor, now)
            }
            CallOutput::FileChannelWritable(id) => {
                self.files.channel_writable(id, &mut self.conductor, now)
            }
            CallOutput::FileChannelClosed(id) => {
                self.files.channel_closed(id, &mut self.conductor, now)
            }
            CallOutput::ChannelClosed { peer } => {
                self.app.call_event(CallEvent::ChannelClosed { peer })
            }
            CallOutput::ChatReceived { peer, text } => {
                self.app.call_event(CallEvent::ChatReceived { peer, text })
            }
            CallOutput::CallEnded {
                peer,
                reason,
                stats,
            } => {
                self.files.call_ended();
                let media = self.media.take();
                let m = media.as_ref().map(MediaSession::stats);
                self.local_audio.stop(self.reactor.registry());
                self.audio = None;
                self.audio_out.flush();
                if let Some(r) = self.recorder.as_mut() {
                    r.flush();
                }
                let summary = CallSummary {
                    frames_sent: stats.frames_sent,
                    frames_decoded: m.map_or(0, |m| m.frames_decoded),
                    connect_time: stats.connect_time,
                    first_frame_time: m.and_then(|m| m.first_frame_time),
                    mean_latency_ms: m.and_then(|m| m.mean_latency_ms()),
                };
                self.app.call_event(CallEvent::Ended {
                    peer,
                    reason,
                    summary,
                });
            }
        }
    }

    /// The counters behind the STATS line and the overlay.
    fn stats_sample(&self) -> StatsSample {
        let call = self.conductor.stats();
        let media = self.media.as_ref().map(MediaSession::stats);
        StatsSample {
            frames_sent: call.map_or(0, |c| c.frames_sent),
            bytes_sent: call.map_or(0, |c| c.bytes_sent),
            frames_decoded: media.map_or(0, |m| m.frames_decoded),
            bytes_received: call.map_or(0, |c| c.bytes_received),
            last_latency_us: media.and_then(|m| m.last_stamp_latency_us),
            rtt: call.and_then(|c| c.rtt),
            remote_size: media.and_then(|m| m.remote_size),
            silent_for: call.and_then(|c| c.silent_for),
            audio: self.audio.as_ref().map(AudioSession::sample),
            pair: call.and_then(|c| c.pair.clone()),
            frames_dropped: media.map_or(0, |m| m.frames_dropped),
            estimate_bps: media.and_then(|m| m.estimate_bps),
        }
    }

    /// The machine's addresses changed: host sockets are opened on new addresses (and
    /// every STUN and TURN server asked from them) and closed on vanished ones (their
    /// candidates withdrawn); signaling requests from a vanished address are sent again;
    /// then the conductor restarts ICE if it is the caller in a call.
    fn regather(&mut self, now: Instant) {
        let Some((_, hosts)) = self.addresses.as_mut() else {
            return;
        };
        let change = hosts.update(&super::netif::local_ipv4_addresses());
        if change.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        for ip in &change.removed {
            let gone: Vec<(SocketAddr, usize)> = self
                .udp_by_addr
                .iter()
                .filter(|(a, _)| a.ip() == *ip)
                .map(|(a, k)| (*a, *k))
                .collect();
            for (addr, key) in gone {
                self.udp_by_addr.remove(&addr);
                self.remove_source(key);
                self.gatherer.remove_base(addr);
                self.conductor.remove_host(addr);
                removed.push(addr);
            }
        }
        let mut added = Vec::new();
        for &ip in &change.added {
            match bind_host_socket(&self.reactor, &mut self.sources, &mut self.udp_by_addr, ip) {
                Ok(addr) => {
                    self.gatherer.add_base(addr, now);
                    self.conductor.add_host(addr, now);
                    added.push(addr);
                }
                Err(e) => {
                    log::warn!("cannot open a socket on the new address {ip}: {e}");
                    if let Some((_, hosts)) = self.addresses.as_mut() {
                        hosts.forget(ip);
                    }
                }
            }
        }
        self.move_signaling(&change.removed, now);
        let list = |v: &[SocketAddr]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        log::info!("local addresses changed: added {added:?}, removed {removed:?}");
        println!(
            "NETWORK_CHANGED added={} removed={}",
            list(&added),
            list(&removed)
        );
        if added.is_empty() && removed.is_empty() {
            return;
        }
        // Withdrawn candidates leave the call before a restart offer lists the rest.
        self.process_outputs(now);
        self.conductor.network_changed(now);
    }

    /// A signaling connection from a vanished address can never hear its answer: a kept
    /// idle one is closed, a request in flight is sent again on a new connection. The
    /// server takes a repeated wait in place of the first; a repeated message post may
    /// reach the peer twice, which the call tolerates (a second answer to no offer and a
    /// known candidate are ignored).
    fn move_signaling(&mut self, removed: &[IpAddr], now: Instant) {
        for channel in [Channel::Control, Channel::HangingGet] {
            let Some(key) = *self.channel_key(channel) else {
                continue;
            };
            let Some(Source::Http { exchange, .. }) = self.sources.get_mut(key) else {
                continue;
            };
            let gone = exchange
                .stream_mut()
                .local_addr()
                .is_ok_and(|a| removed.contains(&a.ip()));
            if !gone {
                continue;
            }
            let peer = exchange.peer();
            let request = exchange.unanswered_request();
            *self.channel_key(channel) = None;
            self.remove_source(key);
            if let Some(request) = request {
                log::info!("signaling {channel:?}: its address is gone; sending the request again");
                self.connect(channel, peer, request, now);
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

    /// Sends the resolver's queries and hands its answer to the signaling client. The
    /// socket is opened at the first query that needs DNS.
    fn resolver_io(&mut self, now: Instant) {
        while let Some((server, query)) = self.resolver.poll_transmit() {
            self.send_dns(server, &query);
        }
        while let Some(result) = self.resolver.poll_result() {
            self.client.resolved(result.map_err(|e| e.to_string()), now);
        }
    }

    /// A DNS query on the DNS socket (opened at the first).
    fn send_dns(&mut self, server: SocketAddr, query: &[u8]) {
        let Some(key) = self.dns_socket(server) else {
            return;
        };
        if let Some(Source::Dns { socket }) = self.sources.get(key) {
            if let Err(e) = socket.send_to(query, server) {
                log::debug!("DNS query to {server}: {e}");
            }
        }
    }

    fn dns_socket(&mut self, server: SocketAddr) -> Option<usize> {
        if let Some(key) = self.dns {
            return Some(key);
        }
        let any: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let key = self.sources.vacant_key();
        let opened = UdpSocket::bind(any).and_then(|mut socket| {
            self.reactor
                .registry()
                .register(&mut socket, Token(key), Interest::READABLE)?;
            Ok(socket)
        });
        match opened {
            Ok(socket) => {
                self.sources.insert(Source::Dns { socket });
                self.dns = Some(key);
                Some(key)
            }
            Err(e) => {
                log::warn!("cannot open a socket for DNS: {e}");
                None
            }
        }
    }

    /// Sends a channel's request (as HTTP/1.1, so the server may keep the connection): on
    /// the channel's kept connection if it has one to `addr`, else on a new one.
    fn open(&mut self, channel: Channel, addr: SocketAddr, mut request: Vec<u8>, now: Instant) {
        crate::signaling::http::keep_alive_request(&mut request);
        if let Some(old) = self.channel_key(channel).take() {
            if let Some(Source::Http { exchange, .. }) = self.sources.get_mut(old) {
                if exchange.keeps_connection() && exchange.peer() == addr {
                    exchange.reuse(request);
                    let outcome = exchange.on_ready(true, true, &mut self.scratch);
                    *self.channel_key(channel) = Some(old);
                    if let Some(outcome) = outcome {
                        self.finish(old, outcome, now);
                    }
                    return;
                }
            }
            self.remove_source(old);
        }
        self.connect(channel, addr, request, now);
    }

    /// Sends a channel's request on a new connection.
    fn connect(&mut self, channel: Channel, addr: SocketAddr, request: Vec<u8>, now: Instant) {
        let mut exchange = match HttpExchange::connect(addr, request, MAX_RESPONSE) {
            Ok(x) => x,
            Err(e) => return self.client.handle_response(channel, Err(e), now),
        };
        let key = self.sources.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.reactor.registry();
        if let Err(e) = registry.register(exchange.stream_mut(), Token(key), interest) {
            let e = crate::signaling::exchange::ExchangeError::unreachable(addr, &e);
            return self.client.handle_response(channel, Err(e), now);
        }
        self.sources.insert(Source::Http { channel, exchange });
        *self.channel_key(channel) = Some(key);
    }

    fn source_event(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        // Stale events for a closed key are ignored quietly.
        let Some(source) = self.sources.get_mut(key) else {
            return;
        };
        let mut buf = [0u8; 2048];
        match source {
            Source::Udp { socket, local } => {
                let local = *local;
                while let Some((n, from)) = receive(socket, &mut buf, &local.to_string()) {
                    match self.gatherer.handle_datagram(from, local, &buf[..n], now) {
                        Delivery::Consumed => {}
                        Delivery::Relayed {
                            source,
                            destination,
                            contents,
                        } => self
                            .conductor
                            .handle_datagram(source, destination, &contents, now),
                        Delivery::Direct => {
                            self.conductor.handle_datagram(from, local, &buf[..n], now)
                        }
                    }
                }
            }
            Source::Dns { socket } => {
                while let Some((n, from)) = receive(socket, &mut buf, "DNS") {
                    // Each resolver takes only the answers to its own query.
                    self.resolver.handle_datagram(from, &buf[..n], now);
                    self.gatherer.handle_dns(from, &buf[..n], now);
                }
            }
            Source::Http { exchange, .. } => {
                if let Some(outcome) = exchange.on_ready(readable, writable, &mut self.scratch) {
                    self.finish(key, outcome, now);
                }
            }
            Source::TurnTcp { .. } => self.turn_stream_event(key, readable, now),
        }
    }

    /// Opens the TCP connection to a TURN server for the allocation from `base` (from
    /// `base`'s IP, so it leaves by that interface); a failure to even start is the
    /// allocation's failure.
    fn turn_connect(&mut self, base: SocketAddr, server: SocketAddr, now: Instant) {
        if let Some(old) = self.tcp_turn.remove(&(base, server)) {
            self.remove_source(old);
        }
        let key = self.sources.vacant_key();
        let opened = connect_from(base.ip(), server).and_then(|mut stream| {
            self.reactor.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                log::info!("TURN {server} (tcp): connecting from {}", base.ip());
                self.sources.insert(Source::TurnTcp {
                    stream,
                    base,
                    server,
                    buffers: TurnStream::new(),
                    connected: false,
                });
                self.tcp_turn.insert((base, server), key);
            }
            Err(e) => {
                let why = format!("cannot connect from {}: {e}", base.ip());
                log::warn!("TURN {server} (tcp): {why}");
                self.gatherer.stream_closed(base, server, &why, now);
            }
        }
    }

    /// A message for a TURN server on its connection: queued (relayed media is dropped
    /// when the queue is full) and written as far as the socket takes it.
    fn turn_stream_send(
        &mut self,
        base: SocketAddr,
        server: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) {
        let Some(&key) = self.tcp_turn.get(&(base, server)) else {
            log::debug!("TURN {server} (tcp): no connection from {base}; dropped");
            return;
        };
        let Some(Source::TurnTcp {
            stream,
            buffers,
            connected,
            ..
        }) = self.sources.get_mut(key)
        else {
            return;
        };
        buffers.queue(contents);
        if *connected {
            if let Err(e) = flush_stream(stream, buffers) {
                self.turn_stream_closed(key, &e.to_string(), now);
            }
        }
    }

    /// Readiness on a TURN server's connection: the connect's outcome, whole messages
    /// read (each to the gatherer, relayed data on to str0m), queued bytes written.
    fn turn_stream_event(&mut self, key: usize, readable: bool, now: Instant) {
        let Some(Source::TurnTcp {
            stream,
            base,
            server,
            buffers,
            connected,
        }) = self.sources.get_mut(key)
        else {
            return;
        };
        let (base, server) = (*base, *server);
        if !*connected {
            // A non-blocking connect is done when the socket has a peer; a refusal or an
            // unreachable network shows as the socket's error.
            let error = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e.to_string()),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e.to_string()),
                },
            };
            if let Some(why) = error {
                return self.turn_stream_closed(key, &why, now);
            }
            *connected = true;
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TURN {server} (tcp): no TCP_NODELAY: {e}");
            }
            log::info!(
                "TURN {server} (tcp): connected from {}",
                stream.local_addr().map_or("?".into(), |a| a.to_string())
            );
        }
        let mut closed = None;
        if readable {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match crate::reactor::read_once(stream, &mut chunk) {
                    ReadStep::Data(n) => buffers.received(&chunk[..n]),
                    ReadStep::WouldBlock => break,
                    ReadStep::Closed => {
                        closed = Some("closed by the server".to_string());
                        break;
                    }
                }
                // Each read's whole messages go on before the next read: the buffer holds
                // at most one partial message and a chunk.
                loop {
                    match buffers.next_message() {
                        Ok(Some(msg)) => {
                            match self.gatherer.handle_stream_message(base, server, msg, now) {
                                Delivery::Relayed {
                                    source,
                                    destination,
                                    contents,
                                } => self.conductor.handle_datagram(
                                    source,
                                    destination,
                                    &contents,
                                    now,
                                ),
                                Delivery::Consumed | Delivery::Direct => {}
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            closed = Some(format!("garbled stream: {e}"));
                            break;
                        }
                    }
                }
                if closed.is_some() {
                    break;
                }
            }
        }
        if closed.is_none() {
            if let Err(e) = flush_stream(stream, buffers) {
                closed = Some(e.to_string());
            }
        }
        if let Some(why) = closed {
            self.turn_stream_closed(key, &why, now);
        }
    }

    /// A TURN server's connection failed or closed: it is closed here, and the gatherer
    /// fails its allocation (made again after its pause).
    fn turn_stream_closed(&mut self, key: usize, why: &str, now: Instant) {
        let Some(Source::TurnTcp { base, server, .. }) = self.sources.get(key) else {
            return;
        };
        let (base, server) = (*base, *server);
        // The gatherer's warning says it with the retry; this is the socket's word.
        log::info!("TURN {server} (tcp) from {}: {why}", base.ip());
        self.tcp_turn.remove(&(base, server));
        self.remove_source(key);
        self.gatherer.stream_closed(base, server, why, now);
    }

    /// A request is done: keep its connection for the channel's next request if the server
    /// keeps it, else close it; resend the request once on a new connection if it went on a
    /// kept one the server had closed; tell the signaling client.
    fn finish(&mut self, key: usize, outcome: ExchangeOutcome, now: Instant) {
        let Some(Source::Http { channel, exchange }) = self.sources.get_mut(key) else {
            return;
        };
        let channel = *channel;
        let keep = exchange.keeps_connection();
        let retry = exchange
            .retry_request(&outcome)
            .map(|request| (exchange.peer(), request));
        let current = *self.channel_key(channel) == Some(key);
        let retry = retry.filter(|_| current);
        if !(keep && current) {
            if current {
                *self.channel_key(channel) = None;
            }
            self.remove_source(key);
        }
        if let Some((addr, request)) = retry {
            log::debug!("kept connection to {addr} was closed; resending on a new one");
            return self.connect(channel, addr, request, now);
        }
        self.client.handle_response(channel, outcome, now);
    }

    fn remove_source(&mut self, key: usize) {
        if let Some(source) = self.sources.try_remove(key) {
            let registry = self.reactor.registry();
            let _ = match source {
                Source::Http { mut exchange, .. } => registry.deregister(exchange.stream_mut()),
                Source::Udp { mut socket, .. } | Source::Dns { mut socket } => {
                    registry.deregister(&mut socket)
                }
                Source::TurnTcp { mut stream, .. } => registry.deregister(&mut stream),
            };
        }
    }
}

/// A host candidate's UDP socket on `ip` (any port), registered under its slab key.
fn bind_host_socket(
    reactor: &Reactor,
    sources: &mut Slab<Source>,
    udp_by_addr: &mut HashMap<SocketAddr, usize>,
    ip: IpAddr,
) -> io::Result<SocketAddr> {
    let mut socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    let local = socket.local_addr()?;
    // Room for a burst of SCTP (a file transfer) while the loop encodes a frame:
    // with the default ~200 KiB the kernel drops datagrams and SCTP halves its
    // window. The kernel caps it at net.core.rmem_max; a smaller buffer still works.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECV_BUFFER) {
        log::debug!("cannot enlarge the UDP receive buffer of {local}: {e}");
    }
    let key = sources.vacant_key();
    reactor
        .registry()
        .register(&mut socket, Token(key), Interest::READABLE)?;
    sources.insert(Source::Udp { socket, local });
    udp_by_addr.insert(local, key);
    Ok(local)
}

/// A non-blocking TCP connect to `server` from `ip` (any port); it completes later (see
/// [`ClientLoop::turn_stream_event`]).
fn connect_from(ip: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Writes what `buffers` holds until done or the socket would block.
fn flush_stream(stream: &mut TcpStream, buffers: &mut TurnStream) -> io::Result<()> {
    use std::io::Write;
    while buffers.pending() > 0 {
        match stream.write(buffers.to_write()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buffers.written(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The netlink watch on the machine's addresses, registered under [`NETIF_TOKEN`], with
/// the addresses the sockets were opened on; None (with a warning: the sockets then stay
/// those found at start) if the kernel refuses it.
fn watch_addresses(reactor: &Reactor, ips: Vec<IpAddr>) -> Option<(AddressWatch, HostAddresses)> {
    let watch = match AddressWatch::open() {
        Ok(w) => w,
        Err(e) => {
            log::warn!("cannot watch the local addresses ({e}): a changed address is not followed");
            return None;
        }
    };
    let fd = watch.raw_fd();
    if let Err(e) = reactor
        .registry()
        .register(&mut SourceFd(&fd), NETIF_TOKEN, Interest::READABLE)
    {
        log::warn!("cannot poll the address watch ({e}): a changed address is not followed");
        return None;
    }
    Some((watch, HostAddresses::new(ips)))
}

/// Stdin for `--chat-stdin`, non-blocking and registered with the poll; None (with a
/// warning) when it cannot be polled, as a regular file or /dev/null cannot.
fn open_stdin(reactor: &Reactor) -> Option<StdinReader> {
    let reader = match StdinReader::open() {
        Ok(r) => r,
        Err(e) => {
            log::warn!("--chat-stdin: cannot use stdin ({e}): no chat input");
            return None;
        }
    };
    let fd = reader.raw_fd();
    match reactor
        .registry()
        .register(&mut SourceFd(&fd), STDIN_TOKEN, Interest::READABLE)
    {
        Ok(()) => Some(reader),
        Err(e) => {
            log::warn!("--chat-stdin: stdin cannot be polled ({e}; a file?): no chat input");
            None
        }
    }
}

/// Carries out what the app wants the window to show. Here, not in `MainWnd`, so the
/// window does not depend on the policy that drives it.
fn apply_window_update(w: &mut MainWnd, u: WindowUpdate) {
    match u {
        WindowUpdate::ConnectScreen { status } => {
            let m = w.model();
            m.switch_to_connect_ui();
            if let Some((text, error)) = status {
                m.set_status(&text, error);
            }
        }
        WindowUpdate::Connecting(on) => w.model().set_connecting(on),
        WindowUpdate::Status { text, error } => w.model().set_status(&text, error),
        WindowUpdate::PeerList { session, status } => {
            let m = w.model();
            m.switch_to_peer_list(&session);
            if let Some((text, error)) = status {
                m.set_status(&text, error);
            }
        }
        WindowUpdate::Peers(peers) => w
            .model()
            .set_peers(peers.iter().map(|(id, n)| (*id, n.as_str()))),
        WindowUpdate::Streaming { peer, name, status } => {
            let m = w.model();
            m.switch_to_streaming(peer, &name);
            m.set_call_status(&status);
        }
        WindowUpdate::Ringing { peer, name } => w.model().show_incoming_call(peer, &name),
        WindowUpdate::Overlay(lines) => w.model().set_overlay(lines),
        WindowUpdate::Warning(text) => w.model().set_warning(text),
        WindowUpdate::Chat { who, text } => w.model().chat_line(&who, &text, Instant::now()),
        WindowUpdate::ClearVideo => w.clear_video(),
        WindowUpdate::Hide => w.hide(),
    }
}

/// One datagram from a non-blocking socket, or `None` once it would block (or fails).
fn receive(socket: &UdpSocket, buf: &mut [u8], what: &str) -> Option<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Ok(got) => return Some(got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => {
                log::debug!("UDP receive on {what}: {e}");
                return None;
            }
        }
    }
}
