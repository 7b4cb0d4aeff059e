//! The client's loop: one `mio::Poll` carrying the signaling connections (control and hanging
//! GET), one UDP socket per host candidate, the signals, and the timers of the capture clock,
//! str0m and the signaling client. It turns the state machines' outputs into syscalls.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};
use slab::Slab;

use super::conductor::{CallOutput, Conductor, MediaConfig};
use super::peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
use crate::media::{monotonic_us, SourceSpec, VideoSource, Y4mWriter};
use crate::reactor::{earliest, read_available, BufferedStream, Reactor, SIGNAL_TOKEN};
use crate::signaling::http::ResponseParser;
use crate::signaling::PeerId;

/// Everything the client can be told on its command line.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    pub port: u16,
    pub name: String,
    pub autoconnect: bool,
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
    exit_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    autocall_done: bool,
    scratch: Vec<u8>,
    started: Instant,
}

impl ClientLoop {
    pub fn new(config: ClientConfig) -> Result<ClientLoop, String> {
        let reactor =
            Reactor::new(256).map_err(|e| format!("cannot create the event loop: {e}"))?;
        let video = VideoSource::open(&config.source, config.media.width, config.media.height)
            .map_err(|e| e.to_string())?;
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
            stats_at: config.stats.then_some(now + STATS_INTERVAL),
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
            scratch: Vec::with_capacity(64 * 1024),
            started: now,
        })
    }

    /// Runs until `--duration`, a signal, or a finished sign-out after shutdown began.
    pub fn run(&mut self) -> Result<(), String> {
        if self.config.autoconnect {
            self.client
                .connect(&self.config.server.clone(), self.config.port);
        }
        let mut ready = Vec::with_capacity(256);
        loop {
            let now = Instant::now();
            self.process_outputs(now);
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
                } else {
                    self.source_event(r.token.0, r.readable, r.writable, now);
                }
            }
            self.handle_timeouts(now);
        }
        self.print_summary();
        Ok(())
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
            self.print_stats(now);
            self.stats_at = Some(now + STATS_INTERVAL);
        }
        if self.exit_at.is_some_and(|t| t <= now) {
            self.begin_shutdown("--duration elapsed", now);
        }
    }

    /// Takes the next frame from the source, paced by the loop's clock, and sends it.
    fn capture_frame(&mut self, now: Instant) {
        let period = Duration::from_secs_f32(1.0 / self.config.media.fps.max(1.0));
        // Keep the cadence; if the loop fell far behind, restart it instead of bursting.
        let next = self.next_frame_at.map_or(now, |t| t + period);
        self.next_frame_at = Some(if next + period < now {
            now + period
        } else {
            next
        });
        if !self.conductor.is_connected() {
            return;
        }
        let capture_us = monotonic_us();
        match self.video.next_frame(self.frame_number, capture_us) {
            Ok(frame) => {
                self.frame_number = self.frame_number.wrapping_add(1);
                self.conductor.send_frame(&frame, capture_us, now);
            }
            Err(e) => {
                log::error!("video source failed: {e}; ending the local track");
                self.next_frame_at = None;
            }
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
            ClientEvent::StateChanged(_) => {}
            ClientEvent::SignedIn { id } => {
                log::info!("signed in as {:?} with id {id}", self.client.name());
                println!("SIGNED_IN id={id}");
            }
            ClientEvent::PeerConnected { id, name } => {
                log::info!("peer {id} {name:?} is on the list");
                println!("PEER_CONNECTED id={id} name={name}");
                self.maybe_autocall(now);
            }
            ClientEvent::PeerDisconnected { id } => {
                log::info!("peer {id} left");
                println!("PEER_DISCONNECTED id={id}");
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
            }
            ClientEvent::SignedOut => log::info!("signed out"),
        }
    }

    fn maybe_autocall(&mut self, now: Instant) {
        if !self.config.autocall || self.autocall_done || !self.conductor.is_idle() {
            return;
        }
        let Some(peer) = self.client.peers().keys().next().copied() else {
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
            CallOutput::RemoteFrame(frame) => self.record(&frame),
            CallOutput::CallStarted { peer } => {
                println!("CALL_STARTED peer={peer}");
                self.frame_number = 0;
                self.next_frame_at = Some(now);
            }
            CallOutput::CallEnded { peer, reason } => {
                self.next_frame_at = None;
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

    fn record(&mut self, frame: &crate::media::I420Frame) {
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

    fn print_stats(&mut self, now: Instant) {
        let s = self.conductor.stats().clone();
        let m = &self.stats_mark;
        let secs = STATS_INTERVAL.as_secs_f64();
        println!(
            "STATS t={:.1} state={} call={} sent_fps={:.1} recv_fps={:.1} sent_kbps={:.0} recv_kbps={:.0} decoded={} latency_ms={} rtt_ms={}",
            (now - self.started).as_secs_f64(),
            self.client.state(),
            self.conductor.peer().map_or("-".into(), |p| p.to_string()),
            (s.frames_sent.saturating_sub(m.frames_sent)) as f64 / secs,
            (s.frames_decoded.saturating_sub(m.frames_decoded)) as f64 / secs,
            (s.bytes_sent.saturating_sub(m.bytes_sent)) as f64 * 8.0 / 1000.0 / secs,
            (s.bytes_received.saturating_sub(m.bytes_received)) as f64 * 8.0 / 1000.0 / secs,
            s.frames_decoded,
            s.last_stamp_latency_us
                .map_or("-".into(), |l| format!("{:.1}", l as f64 / 1000.0)),
            s.rtt.map_or("-".into(), |r| format!("{:.1}", r.as_secs_f64() * 1000.0)),
        );
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
