//! `peerconnection_server`: the signaling server's loop. One thread, one `mio::Poll`; the
//! listening socket, every connection (a slab key is its token) and the signals are
//! sources on it. Requests go through [`DataSocket`] into [`PeerChannel`], whose actions
//! this loop turns into writes and closes. The loop also keeps HTTP/1.1 connections that
//! ask for it, runs TLS connections through rustls ([`tls`]), counts what every
//! connection and the channel hold against `--max-memory`, and serves `/metrics`.

pub mod cluster;
pub mod data_socket;
pub mod metrics;
pub mod peer_channel;
pub mod tls;
pub mod web;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use slab::Slab;

pub use data_socket::{DataSocket, HttpError, Limits, Method, Request};
pub use peer_channel::{
    Action, ChannelConfig, ChannelMember, ChannelStats, ConnId, Disposition, PeerChannel,
};

use crate::reactor::{
    earliest, BufferedStream, Reactor, ReadStep, Timers, LISTENER_TOKEN, SIGNAL_TOKEN,
};
use crate::signaling::http::{self, status_code};
use crate::signaling::{split_target, PeerId, Response, Status};

/// Everything the server can be told on its command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub channel: ChannelConfig,
    pub limits: Limits,
    pub max_connections: usize,
    /// Time a connection gets to send its whole request, and to take its answer.
    pub request_timeout: Duration,
    /// Serve `GET /metrics` (Prometheus text format) on the protocol's ports.
    pub metrics: bool,
    /// Serve `GET /metrics` on this address instead, and nothing else there.
    pub metrics_addr: Option<SocketAddr>,
    /// How long a kept-alive connection may sit idle between requests.
    pub keep_alive_timeout: Duration,
    /// Bytes the process may hold in request buffers, answers being written, queued
    /// messages and the presence log, all together.
    pub max_memory: usize,
    /// Also serve HTTPS on this port with this certificate and key.
    pub tls: Option<(u16, tls::TlsFiles)>,
    /// Share members and messages with other servers through Redis (`--redis`).
    pub redis: Option<cluster::RedisUrl>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: crate::signaling::DEFAULT_PORT,
            channel: ChannelConfig::default(),
            limits: Limits {
                max_header_bytes: 8 * 1024,
                max_body_bytes: 1 << 20,
            },
            max_connections: 16_000,
            request_timeout: Duration::from_secs(10),
            metrics: false,
            metrics_addr: None,
            keep_alive_timeout: Duration::from_secs(15),
            max_memory: 256 << 20,
            tls: None,
            redis: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Reading the request.
    Reading,
    /// Kept alive after an answer, waiting for the client's next request.
    Idle,
    /// Held open as a member's hanging GET.
    Held(PeerId),
    /// Answered a kept-alive request; writing the response, then idle.
    Writing,
    /// Answered; writing the response, then closing.
    Closing,
}

struct Connection {
    stream: tls::ServerStream,
    request: DataSocket,
    state: ConnState,
    /// When the connection must have finished its request (or taken its answer).
    deadline: Option<Instant>,
    /// The earliest entry this connection has in the timer heap. A later deadline adds
    /// no entry: the earlier one re-arms at the deadline when it fires, so a kept-alive
    /// connection serving many requests keeps one or two entries, not one per request.
    timer: Option<Instant>,
    /// Distinguishes this connection from later ones that reuse its slab key.
    generation: u64,
    /// In the poll. A connection whose request came with it is answered and closed
    /// without ever being registered.
    registered: bool,
    /// Registered for writable readiness too: only while an answer waits for room.
    wants_write: bool,
    /// The request's path label for metrics, once its head is read.
    path: &'static str,
    /// The listener it came in on.
    listener: Listener,
    /// The request being served asked to keep the connection (HTTP/1.1).
    keep_alive: bool,
    /// The socket may hold bytes not read yet (readable while its answer was being
    /// written, or the last read filled the buffer): read once it is idle again.
    unread: bool,
    /// Bytes this connection holds as last counted in `Server::conn_bytes`.
    counted: usize,
}

/// A request smaller than this is always read while the process is under its hard budget:
/// past the soft budget only large bodies are refused, so members that keep up (small
/// requests) go on being served while the flood that filled the memory is turned away.
const SMALL_REQUEST: usize = 16 * 1024;

/// The HTTPS and metrics listeners' tokens (the plain one is the reactor's
/// `LISTENER_TOKEN`).
const TLS_LISTENER_TOKEN: Token = Token(usize::MAX - 64);
const METRICS_LISTENER_TOKEN: Token = Token(usize::MAX - 65);

/// How long a graceful stop waits for Redis to take its members' leaves.
const CLUSTER_LEAVE_WAIT: Duration = Duration::from_secs(1);

/// Which listening socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain = 0,
    Tls = 1,
    /// `--metrics-addr`: serves `/metrics` and nothing else.
    Metrics = 2,
}

const LISTENERS: [Listener; 3] = [Listener::Plain, Listener::Tls, Listener::Metrics];

/// The body of a `503` past `--max-memory`.
const OVER_BUDGET: &str = "server over its memory budget: try again later\n";
const OVER_BUDGET_REASON: &str = "server over its memory budget: try again later";

/// Bytes asked for per read: a whole request of the protocol's usual size in one call.
const READ_CHUNK: usize = 16 * 1024;

/// Accept queue length asked for (the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 65_535;

/// Connections accepted (and, when their request came with them, served) in one pass
/// before the loop looks at its other events.
const MAX_ACCEPTS_PER_TURN: usize = 256;

/// How often accepting is retried after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listening socket, as `mio::net::TcpListener::bind` makes it (non-blocking,
/// close-on-exec, `SO_REUSEADDR`) but with a deeper accept queue than its 128: join
/// storms re-arm hundreds of hanging GETs at once, and a SYN dropped on a full queue waits a
/// second to be resent. The kernel caps the backlog at `net.core.somaxconn`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Sets when the connection must have moved on (see [`Connection::timer`]).
fn set_deadline(
    conn: &mut Connection,
    timers: &mut Timers<(ConnId, u64)>,
    key: ConnId,
    at: Instant,
) {
    conn.deadline = Some(at);
    if conn.timer.is_none_or(|t| at < t) {
        timers.insert(at, (key, conn.generation));
        conn.timer = Some(at);
    }
}

/// The server: its loop state. Create with [`Server::bind`], then [`Server::run`].
pub struct Server {
    config: ServerConfig,
    reactor: Reactor,
    listener: TcpListener,
    /// The HTTPS listener and the TLS configuration its connections share.
    tls_listener: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// `--metrics-addr`.
    metrics_listener: Option<TcpListener>,
    conns: Slab<Connection>,
    channel: PeerChannel,
    deadlines: Timers<(ConnId, u64)>,
    next_generation: u64,
    accept_paused_until: Option<Instant>,
    /// The last accept pass stopped at its bound with connections possibly still queued:
    /// the next poll does not wait, and the pass continues after the other events.
    accept_more: [bool; 3],
    actions: Vec<Action>,
    scratch: Vec<u8>,
    quit: bool,
    counters: metrics::Counters,
    /// Kept-alive connections that may hold their next request already (pipelined, or
    /// sent while their answer was being written): served after this turn's events.
    resume: Vec<(ConnId, u64)>,
    /// Bytes held by connections: request buffers and answers not yet written.
    conn_bytes: usize,
    /// Redis and the other servers (`--redis` only).
    cluster: Option<cluster::Cluster>,
}

impl Server {
    /// Binds the listening socket and sets up the loop.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let reactor = Reactor::new(1024)?;
        let addr = SocketAddr::new(config.bind, config.port);
        let mut listener = listen(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        reactor
            .registry()
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)?;
        let tls_listener = match &config.tls {
            None => None,
            Some((port, files)) => {
                let tls_config = tls::load(files)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                let addr = SocketAddr::new(config.bind, *port);
                let mut socket = listen(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr} (TLS): {e}"))
                })?;
                reactor
                    .registry()
                    .register(&mut socket, TLS_LISTENER_TOKEN, Interest::READABLE)?;
                Some((socket, tls_config))
            }
        };
        let metrics_listener = match config.metrics_addr {
            None => None,
            Some(addr) => {
                let mut socket = listen(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
                })?;
                reactor.registry().register(
                    &mut socket,
                    METRICS_LISTENER_TOKEN,
                    Interest::READABLE,
                )?;
                Some(socket)
            }
        };
        let mut channel = PeerChannel::new(config.channel);
        let cluster = match &config.redis {
            None => None,
            Some(url) => {
                channel.enable_cluster();
                let cluster_config = cluster::ClusterConfig::for_timeout(
                    config.channel.timeout,
                    config.channel.max_queue_items,
                );
                let port = listener.local_addr()?.port();
                Some(cluster::Cluster::new(
                    url.clone(),
                    port,
                    cluster_config,
                    Instant::now(),
                )?)
            }
        };
        Ok(Server {
            cluster,
            channel,
            config,
            reactor,
            listener,
            tls_listener,
            metrics_listener,
            conns: Slab::with_capacity(1024),
            deadlines: Timers::new(),
            next_generation: 0,
            accept_paused_until: None,
            accept_more: [false; 3],
            actions: Vec::new(),
            scratch: Vec::with_capacity(16 * 1024),
            quit: false,
            counters: metrics::Counters::default(),
            resume: Vec::new(),
            conn_bytes: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metrics listener's address, when `--metrics-addr` is given.
    pub fn metrics_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.metrics_listener.as_ref().map(|l| l.local_addr())
    }

    /// The HTTPS listener's address, when `--tls-port` is given.
    pub fn tls_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.tls_listener.as_ref().map(|(l, _)| l.local_addr())
    }

    /// Runs until SIGINT/SIGTERM (or an allowed `/quit`), then tells members and closes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut ready = Vec::with_capacity(1024);
        while !self.quit {
            let deadline = earliest([
                self.deadlines.next_deadline(),
                self.channel.poll_timeout(),
                self.accept_paused_until,
                self.cluster.as_ref().and_then(|c| c.poll_timeout()),
                (self.accept_more.contains(&true) || !self.resume.is_empty()).then(Instant::now),
            ]);
            self.reactor.poll_ready(deadline, &mut ready)?;
            let now = Instant::now();
            let mut accepted = [false; 3];
            for r in &ready {
                match r.token {
                    SIGNAL_TOKEN => self.quit |= self.reactor.take_shutdown_signal(),
                    LISTENER_TOKEN => {
                        self.accept_all(Listener::Plain, now);
                        accepted[0] = true;
                    }
                    TLS_LISTENER_TOKEN => {
                        self.accept_all(Listener::Tls, now);
                        accepted[1] = true;
                    }
                    METRICS_LISTENER_TOKEN => {
                        self.accept_all(Listener::Metrics, now);
                        accepted[2] = true;
                    }
                    cluster::COMMANDS_TOKEN | cluster::SUBSCRIBER_TOKEN => {
                        if let Some(c) = self.cluster.as_mut() {
                            c.socket_event(
                                r.token,
                                self.reactor.registry(),
                                &mut self.channel,
                                now,
                                &mut self.actions,
                            );
                        }
                    }
                    Token(key) => self.connection_event(key, r.readable, r.writable, now),
                }
            }
            for which in LISTENERS {
                if self.accept_more[which as usize] && !accepted[which as usize] {
                    self.accept_all(which, now);
                }
            }
            for (key, generation) in std::mem::take(&mut self.resume) {
                if self
                    .conns
                    .get(key)
                    .is_some_and(|c| c.generation == generation)
                {
                    self.connection_event(key, true, false, now);
                }
            }
            self.handle_timeouts(now);
            self.drive_cluster(now);
        }
        self.shutdown();
        Ok(())
    }

    /// Hands the channel's events to Redis, carries out what came back, writes to Redis.
    fn drive_cluster(&mut self, now: Instant) {
        if let Some(c) = self.cluster.as_mut() {
            c.drive(
                self.reactor.registry(),
                &mut self.channel,
                now,
                &mut self.actions,
            );
            self.apply_actions(now);
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for which in LISTENERS {
                self.accept_all(which, now);
            }
        }
        while let Some((key, generation)) = self.deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation {
                continue;
            }
            if conn.timer.is_some_and(|t| t <= now) {
                conn.timer = None;
            }
            match conn.deadline {
                Some(d) if d <= now => {}
                Some(d) => {
                    set_deadline(conn, &mut self.deadlines, key, d);
                    continue;
                }
                None => continue,
            }
            if conn.state == ConnState::Idle {
                log::debug!("connection {key}: kept alive and idle too long, closing");
            } else if conn.state == ConnState::Reading {
                log::debug!(
                    "connection {key}: request not complete after {:?} ({} bytes), closing",
                    self.config.request_timeout,
                    conn.request.buffered()
                );
                let bytes = Response::text(Status::RequestTimeout, b"request not sent in time\n")
                    .to_bytes();
                let _ = conn.stream.send(&bytes);
                self.counters
                    .count_request(metrics::UNPARSED, Status::RequestTimeout.code());
            } else {
                log::debug!("connection {key}: peer did not take its answer in time, closing");
            }
            self.close(key, now);
        }
        self.channel.handle_timeout(now, &mut self.actions);
        self.apply_actions(now);
    }

    fn accept_all(&mut self, which: Listener, now: Instant) {
        self.accept_more[which as usize] = false;
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let accepted = match (which, &self.tls_listener) {
                (Listener::Plain, _) => self.listener.accept(),
                (Listener::Tls, Some((listener, _))) => listener.accept(),
                (Listener::Tls, None) => return,
                (Listener::Metrics, _) => match &self.metrics_listener {
                    Some(listener) => listener.accept(),
                    None => return,
                },
            };
            match accepted {
                Ok((stream, _)) => self.add_connection(stream, which, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the backlog stays where it is; retry later
                    // instead of spinning on a listener that stays readable.
                    log::warn!(
                        "accept failed ({e}) with {} connections open; retrying in {ACCEPT_BACKOFF:?}",
                        self.conns.len()
                    );
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // Each accepted connection may have been answered on the spot; bounding the pass
        // keeps a steady stream of them from starving held GETs and timers.
        self.accept_more[which as usize] = true;
    }

    fn add_connection(&mut self, mut stream: TcpStream, which: Listener, now: Instant) {
        // A refusal is a plain-text 503 only where the client speaks plain text; a TLS
        // client is refused by closing.
        let refuse_plainly = which != Listener::Tls;
        if self.conns.len() >= self.config.max_connections {
            log::warn!(
                "refusing a connection: --max-connections {} reached",
                self.config.max_connections
            );
            let bytes = Response::text(Status::Unavailable, b"too many connections\n").to_bytes();
            if refuse_plainly {
                let _ = BufferedStream::new(&mut stream).send(&bytes);
            }
            self.counters.refused_connections += 1;
            return;
        }
        if self.memory_used() > self.config.max_memory {
            self.relieve_memory(now);
        }
        if self.memory_used() > self.config.max_memory {
            log::warn!(
                "refusing a connection: {} bytes held, over --max-memory {}",
                self.memory_used(),
                self.config.max_memory
            );
            let bytes = Response::text(Status::Unavailable, OVER_BUDGET.as_bytes()).to_bytes();
            if refuse_plainly {
                let _ = BufferedStream::new(&mut stream).send(&bytes);
            }
            self.counters.refused_connections += 1;
            return;
        }
        let stream = match (which, &self.tls_listener) {
            (Listener::Tls, Some((_, config))) => match tls::ServerStream::tls(stream, config) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("cannot start a TLS session: {e}");
                    return;
                }
            },
            _ => tls::ServerStream::plain(stream),
        };
        self.counters.accepted_connections += 1;
        let generation = self.next_generation;
        self.next_generation += 1;
        let deadline = now + self.config.request_timeout;
        let key = self.conns.insert(Connection {
            stream,
            request: DataSocket::new(),
            state: ConnState::Reading,
            deadline: Some(deadline),
            timer: Some(deadline),
            generation,
            registered: false,
            wants_write: false,
            path: metrics::UNPARSED,
            listener: which,
            keep_alive: false,
            unread: false,
            counted: 0,
        });
        self.deadlines.insert(deadline, (key, generation));
        // Clients send their request as soon as they connect, so it is usually here already:
        // read it now, and a connection answered at once never enters the poll. One that
        // still needs the loop (request incomplete, a held GET, an answer not yet written)
        // is registered after. Registering an already readable socket reports it at once.
        self.connection_event(key, true, false, now);
        self.register(key, generation, now);
    }

    /// Puts a live connection into the poll if it is not there yet: readable always,
    /// writable only while its answer waits for room.
    fn register(&mut self, key: ConnId, generation: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation || conn.registered {
            return;
        }
        let wants_write = conn.stream.pending() > 0;
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .reactor
            .registry()
            .register(conn.stream.socket(), Token(key), interest)
        {
            Ok(()) => {
                conn.registered = true;
                conn.wants_write = wants_write;
            }
            Err(e) => {
                log::warn!("cannot register connection {key}: {e}");
                self.close(key, now);
            }
        }
    }

    /// An answer did not fit in the socket: ask the poll for room to write the rest.
    fn want_write(&mut self, key: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.registered || conn.wants_write {
            // Not in the poll yet: `register` adds writable interest when it does.
            return;
        }
        match self.reactor.registry().reregister(
            conn.stream.socket(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Ok(()) => conn.wants_write = true,
            Err(e) => {
                log::warn!("cannot watch connection {key} for writing: {e}");
                self.close(key, now);
            }
        }
    }

    fn connection_event(&mut self, key: ConnId, readable: bool, writable: bool, now: Instant) {
        self.serve(key, readable, writable, now);
        self.account(key);
    }

    fn serve(&mut self, key: ConnId, readable: bool, writable: bool, now: Instant) {
        // A stale event for a key closed earlier in this round is quietly ignored.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if readable {
            let limits = self.config.limits;
            match conn.state {
                // Read until the request is whole, then stop: the connection is answered
                // and closed (or held) without a last read only to see it would block. The
                // request's bounds are checked as it grows.
                ConnState::Reading | ConnState::Idle => {
                    // A kept-alive client may have sent its next request already.
                    match conn.request.next_request(&limits) {
                        Ok(Some(req)) => return self.dispatch(key, &req, now),
                        Ok(None) => {}
                        Err(e) => return self.refuse(key, e, now),
                    }
                    let mut chunk = [0u8; READ_CHUNK];
                    loop {
                        let Some(conn) = self.conns.get_mut(key) else {
                            return;
                        };
                        match conn.stream.read(&mut chunk) {
                            ReadStep::Data(n) => {
                                // A full read may have left bytes in the socket that no
                                // new readiness event will announce: a kept-alive client
                                // that pipelined them is read again once idle.
                                conn.unread = n == chunk.len();
                                if !self.take_bytes(key, &chunk[..n], now) {
                                    return;
                                }
                            }
                            ReadStep::WouldBlock => break,
                            ReadStep::Closed => {
                                log::debug!("connection {key} closed before finishing its request");
                                return self.close(key, now);
                            }
                        }
                    }
                }
                // A held GET has said all it may: more bytes, or its end, close it.
                ConnState::Held(id) => {
                    let mut byte = [0u8; 1];
                    if conn.stream.read(&mut byte) != ReadStep::WouldBlock {
                        log::debug!(
                            "member {id}: hanging GET connection {key} closed or sent more"
                        );
                        return self.close(key, now);
                    }
                }
                // Its next request waits in the socket until this answer is written.
                ConnState::Writing => conn.unread = true,
                // Answered: whatever else it sends is read and dropped (bounded per event).
                ConnState::Closing => {
                    let limit = limits.max_header_bytes + limits.max_body_bytes;
                    conn.stream.discard(&mut self.scratch, limit);
                }
            }
        }
        if writable {
            self.flush(key, now);
        }
    }

    /// Brings `conn_bytes` up to date with what connection `key` holds now.
    fn account(&mut self, key: ConnId) {
        if let Some(conn) = self.conns.get_mut(key) {
            let tls_cost = if conn.stream.is_tls() {
                tls::TLS_CONNECTION_COST
            } else {
                0
            };
            let holds = conn.request.held() + conn.stream.pending() + tls_cost;
            self.conn_bytes = self.conn_bytes - conn.counted + holds;
            conn.counted = holds;
        }
    }

    /// Bytes counted against `--max-memory`.
    fn memory_used(&self) -> usize {
        self.conn_bytes + self.channel.memory()
    }

    /// Over the budget: the members holding the most undelivered data are evicted until
    /// the channel holds at most half of the budget (their queues are what grows without
    /// a per-connection bound; request buffers are refused as they grow).
    fn relieve_memory(&mut self, now: Instant) {
        let target = self.config.max_memory / 2;
        if self.channel.memory() > target {
            self.channel.evict_heaviest(target, now, &mut self.actions);
            self.apply_actions(now);
        }
    }

    /// Adds bytes read to the connection's request, within the memory budget; serves the
    /// request once it is whole. False when the connection needs no more reading now.
    fn take_bytes(&mut self, key: ConnId, bytes: &[u8], now: Instant) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        // A request may grow into what the rest of the process leaves of the soft budget;
        // a small one up to the hard budget.
        let size = conn.request.buffered() + bytes.len();
        let limit = if size <= SMALL_REQUEST {
            self.config.max_memory
        } else {
            self.config.max_memory / 8 * 7
        };
        let others = |s: &Server| s.conn_bytes - s.conns[key].counted + s.channel.memory();
        if others(self) + size > limit {
            // Queues that hold too much give way first; a request that still does not fit
            // is refused.
            self.relieve_memory(now);
            if !self.conns.contains(key) {
                return false;
            }
            if others(self) + size > limit {
                let e = HttpError {
                    status: Status::Unavailable,
                    reason: OVER_BUDGET_REASON,
                };
                self.refuse(key, e, now);
                return false;
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.state == ConnState::Idle {
            // The next request has begun: it gets the request time.
            conn.state = ConnState::Reading;
            set_deadline(
                conn,
                &mut self.deadlines,
                key,
                now + self.config.request_timeout,
            );
        }
        match conn.request.feed(bytes, &self.config.limits) {
            Ok(Some(req)) => self.dispatch(key, &req, now),
            Ok(None) => return true,
            Err(e) => self.refuse(key, e, now),
        }
        false
    }

    fn refuse(&mut self, key: ConnId, e: HttpError, now: Instant) {
        log::debug!("connection {key}: {e}");
        if let Some(conn) = self.conns.get_mut(key) {
            // Counted as an answered request, and the connection closes after it.
            conn.state = ConnState::Reading;
            conn.keep_alive = false;
        }
        let body = format!("{}\n", e.reason);
        self.actions.push(Action::Send {
            conn: key,
            bytes: Response::text(e.status, body.as_bytes()).to_bytes(),
        });
        self.apply_actions(now);
    }

    fn dispatch(&mut self, key: ConnId, req: &Request, now: Instant) {
        log::trace!("connection {key}: {:?} {}", req.method, req.target);
        let mut metrics_only = false;
        if let Some(conn) = self.conns.get_mut(key) {
            // A request taken from what an idle connection had buffered is served as read.
            conn.state = ConnState::Reading;
            conn.path = metrics::path_label(&req.target);
            conn.keep_alive = req.keep_alive;
            metrics_only = conn.listener == Listener::Metrics;
        }
        let is_metrics = split_target(&req.target).0 == "/metrics";
        if metrics_only && !is_metrics {
            let e = HttpError {
                status: Status::NotFound,
                reason: "only /metrics is served on --metrics-addr",
            };
            return self.refuse(key, e, now);
        }
        if (self.config.metrics || metrics_only) && is_metrics {
            let body = metrics::render(&self.counters, &self.gauges());
            let status = if req.method == Method::Get {
                Status::Ok
            } else {
                Status::MethodNotAllowed
            };
            let (content_type, body) = match status {
                Status::Ok => (metrics::CONTENT_TYPE, body.as_bytes()),
                _ => (&b"text/plain"[..], &b"GET /metrics\n"[..]),
            };
            self.actions.push(Action::Send {
                conn: key,
                bytes: Response {
                    status,
                    content_type,
                    pragma: None,
                    body,
                }
                .to_bytes(),
            });
            return self.apply_actions(now);
        }
        if self.memory_used() > self.config.max_memory {
            self.relieve_memory(now);
            let (path, _) = split_target(&req.target);
            let new_work = matches!(
                (req.method, path),
                (Method::Get, "/sign_in") | (Method::Post, "/message")
            );
            if new_work && self.memory_used() > self.config.max_memory {
                let e = HttpError {
                    status: Status::Unavailable,
                    reason: OVER_BUDGET_REASON,
                };
                return self.refuse(key, e, now);
            }
        }
        match self
            .channel
            .handle_request(key, req, now, &mut self.actions)
        {
            Disposition::Held(id) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.state = ConnState::Held(id);
                    conn.deadline = None;
                }
            }
            Disposition::Answered | Disposition::Pending => {}
            Disposition::Quit => {
                log::info!("/quit received, shutting down");
                self.quit = true;
            }
        }
        // With --redis, what Redis must hear (a sign-in's registration) is written to it
        // before the answer, so the member's next request finds it on any server.
        self.drive_cluster(now);
        self.apply_actions(now);
        if self.memory_used() > self.config.max_memory {
            self.relieve_memory(now);
        }
    }

    /// Carries out what the channel decided.
    fn apply_actions(&mut self, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            match action {
                Action::Send {
                    conn: key,
                    mut bytes,
                } => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let answers_request =
                        matches!(conn.state, ConnState::Reading | ConnState::Held(_));
                    if answers_request {
                        self.counters.count_request(conn.path, status_code(&bytes));
                    }
                    // Only an answer to the connection's own request keeps it; refusals
                    // and anything unexpected close it.
                    let keep = answers_request && conn.keep_alive && !self.quit;
                    if keep {
                        http::keep_connection(&mut bytes);
                        conn.state = ConnState::Writing;
                    } else {
                        conn.state = ConnState::Closing;
                    }
                    let sent = conn.stream.send(&bytes);
                    if !keep {
                        conn.stream.close_notify();
                    }
                    if sent.is_err() {
                        self.close(key, now);
                    } else if conn.stream.pending() == 0 {
                        self.answer_written(key);
                        if keep {
                            self.idle(key, now);
                        } else {
                            self.close(key, now);
                        }
                    } else {
                        let deadline = now + self.config.request_timeout;
                        set_deadline(conn, &mut self.deadlines, key, deadline);
                        self.want_write(key, now);
                    }
                    self.account(key);
                }
                Action::Close { conn: key } => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        // The channel already forgot this hanging GET.
                        conn.state = ConnState::Closing;
                        self.close(key, now);
                    }
                }
            }
        }
        self.actions = actions;
    }

    fn flush(&mut self, key: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match (conn.state, conn.stream.flush()) {
            (ConnState::Closing, Ok(true)) => {
                self.answer_written(key);
                self.close(key, now);
            }
            (_, Err(_)) => self.close(key, now),
            (ConnState::Writing, Ok(true)) => {
                self.answer_written(key);
                self.idle(key, now);
            }
            _ => {}
        }
        self.account(key);
    }

    /// An answer left whole for the kernel: with `--redis`, a message it carried is
    /// delivered and leaves Redis.
    fn answer_written(&mut self, key: ConnId) {
        if let Some(c) = self.cluster.as_mut() {
            c.node.answer_written(key);
        }
    }

    /// A kept-alive connection's answer is written: it waits for the next request, for
    /// at most `--keep-alive-timeout`.
    fn idle(&mut self, key: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.state = ConnState::Idle;
        conn.path = metrics::UNPARSED;
        conn.keep_alive = false;
        set_deadline(
            conn,
            &mut self.deadlines,
            key,
            now + self.config.keep_alive_timeout,
        );
        // rustls may hold the next request's plaintext already: look at TLS ones each time.
        if conn.request.buffered() > 0 || std::mem::take(&mut conn.unread) || conn.stream.is_tls() {
            self.resume.push((key, conn.generation));
        }
    }

    /// Closes a connection; a hanging GET's member is told it is gone.
    fn close(&mut self, key: ConnId, now: Instant) {
        if !self.conns.contains(key) {
            return;
        }
        // Dropping the stream closes it, which also takes it out of the poll: no
        // deregistering first.
        let conn = self.conns.remove(key);
        self.conn_bytes -= conn.counted;
        if let Some(c) = self.cluster.as_mut() {
            c.node.connection_closed(key);
        }
        if let ConnState::Held(id) = conn.state {
            self.channel.hanging_get_closed(key, id, now);
        }
    }

    /// The gauges of `/metrics`, read from the loop's state.
    fn gauges(&self) -> metrics::Gauges {
        let stats = self.channel.stats();
        let (mut reading, mut idle, mut held, mut writing) = (0, 0, 0, 0);
        for (_, conn) in &self.conns {
            match conn.state {
                ConnState::Reading => reading += 1,
                ConnState::Idle => idle += 1,
                ConnState::Held(_) => held += 1,
                ConnState::Writing | ConnState::Closing => writing += 1,
            }
        }
        metrics::Gauges {
            members: stats.members,
            connections: vec![
                ("reading", reading),
                ("idle", idle),
                ("held", held),
                ("writing", writing),
            ],
            queued_bytes: stats.queued_bytes,
            queued_messages: stats.queued_messages,
            presence_log_bytes: stats.presence_log_bytes,
            evictions: vec![
                (metrics::Eviction::TimedOut, stats.timed_out),
                (metrics::Eviction::QueueOverflow, stats.queue_overflows),
                (metrics::Eviction::MemoryBudget, stats.memory_evictions),
            ],
            memory_used: self.memory_used(),
            memory_budget: self.config.max_memory,
            cluster: self
                .cluster
                .as_ref()
                .map(|c| (c.node.is_ready(), c.node.outages)),
        }
    }

    /// With `--redis`: this server's members leave the cluster before it closes, waiting
    /// for Redis at most [`CLUSTER_LEAVE_WAIT`] (else the others time them out as for a
    /// dead server).
    fn leave_cluster(&mut self) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !c.node.leave_all(&self.channel) {
            return;
        }
        let deadline = Instant::now() + CLUSTER_LEAVE_WAIT;
        let mut ready = Vec::new();
        loop {
            let now = Instant::now();
            c.flush(
                self.reactor.registry(),
                &mut self.channel,
                now,
                &mut self.actions,
            );
            if c.node.has_stopped() || !c.node.is_joined() {
                break;
            }
            if now >= deadline {
                log::warn!(
                    "Redis did not confirm the members' leaves within {CLUSTER_LEAVE_WAIT:?}: \
                     the other servers will time them out"
                );
                break;
            }
            if self.reactor.poll_ready(Some(deadline), &mut ready).is_err() {
                break;
            }
            for r in &ready {
                if matches!(r.token, cluster::COMMANDS_TOKEN | cluster::SUBSCRIBER_TOKEN) {
                    c.socket_event(
                        r.token,
                        self.reactor.registry(),
                        &mut self.channel,
                        now,
                        &mut self.actions,
                    );
                }
            }
        }
    }

    fn shutdown(&mut self) {
        self.leave_cluster();
        log::info!(
            "shutting down: telling {} members, closing {} connections",
            self.channel.len(),
            self.conns.len()
        );
        self.channel.shutdown(&mut self.actions);
        for action in std::mem::take(&mut self.actions) {
            if let Action::Send { conn, bytes } = action {
                if let Some(c) = self.conns.get_mut(conn) {
                    let _ = c.stream.send(&bytes);
                }
            }
        }
        self.conns.clear();
    }
}
