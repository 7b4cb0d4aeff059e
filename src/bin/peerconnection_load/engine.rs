//! The load generator's loop: many one-request connections on one mio poll. `submit`
//! opens a connection for a request; `turn` polls once and returns the finished replies.

use std::fmt::Debug;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use peerconnection::signaling::http::ParsedResponse;
use peerconnection::signaling::HttpExchange;
use slab::Slab;
use socket2::{Domain, Socket, Type};

/// The largest response accepted (a sign-in list of thousands of members is big).
const MAX_RESPONSE: usize = 64 << 20;

pub struct Reply<T> {
    pub tag: T,
    pub result: Result<ParsedResponse, String>,
}

struct Conn<T> {
    exchange: HttpExchange,
    tag: T,
}

pub struct Engine<T> {
    poll: Poll,
    events: Events,
    conns: Slab<Conn<T>>,
    /// The servers, by index (one without `--server`).
    addrs: Vec<SocketAddr>,
    idle: Vec<StdTcpStream>,
    scratch: Vec<u8>,
    next_source: u8,
    /// Requests whose connection could not even be opened.
    failed: Vec<Reply<T>>,
}

/// Source addresses used in turn (127.0.0.1 to 127.0.0.SOURCES). The server closes first,
/// so every request leaves a TIME_WAIT entry on its side; spreading the requests over many
/// loopback sources keeps the 4-tuples apart, so a fresh SYN never lands on a TIME_WAIT
/// entry and waits a second for its retransmission.
const SOURCES: u8 = 200;

/// A non-blocking connect from `source` (port chosen by the kernel) to `to`: one `socket`
/// (non-blocking, close-on-exec), `bind`, and `connect`, which answers `EINPROGRESS`.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    if !to.is_ipv4() {
        return Err(io::Error::other("IPv4 only"));
    }
    let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    if let Err(e) = socket.connect(&to.into()) {
        if e.raw_os_error() != Some(Errno::EINPROGRESS as i32) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(socket.into()))
}

impl<T: Copy + Debug> Engine<T> {
    pub fn new(addrs: Vec<SocketAddr>) -> Result<Engine<T>, String> {
        if addrs.is_empty() {
            return Err("no server to load".into());
        }
        Ok(Engine {
            poll: Poll::new().map_err(|e| e.to_string())?,
            events: Events::with_capacity(4096),
            conns: Slab::with_capacity(4096),
            addrs,
            idle: Vec::new(),
            scratch: Vec::with_capacity(64 * 1024),
            next_source: 0,
            failed: Vec::new(),
        })
    }

    /// Opens a connection to server number `server` that sends `request`; its answer comes
    /// back from `turn`.
    pub fn submit(&mut self, server: usize, request: Vec<u8>, tag: T) {
        self.next_source = self.next_source % SOURCES + 1;
        let source = Ipv4Addr::new(127, 0, 0, self.next_source);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let addr = self.addrs[server % self.addrs.len()];
        let opened = connect_from(source, addr).and_then(|stream| {
            let mut exchange = HttpExchange::new(stream, addr, request, MAX_RESPONSE);
            self.poll
                .registry()
                .register(
                    exchange.stream_mut(),
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map(|()| exchange)
        });
        match opened {
            Ok(exchange) => {
                entry.insert(Conn { exchange, tag });
            }
            // Out of descriptors or ports: reported with the next turn's replies.
            Err(e) => self.failed.push(Reply {
                tag,
                result: Err(format!("connect to {addr} from {source}: {e}")),
            }),
        }
    }

    /// Closes the idle connections.
    pub fn close_idle(&mut self) {
        self.idle.clear();
    }

    /// Polls once (until `deadline` at the latest) and returns the replies completed.
    pub fn turn(&mut self, deadline: Instant) -> Result<Vec<Reply<T>>, String> {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Vec::new()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable() || e.is_error(),
                )
            })
            .collect();
        let mut replies = std::mem::take(&mut self.failed);
        for (key, readable, writable) in ready {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let done = conn
                .exchange
                .on_ready(readable, writable, &mut self.scratch)
                .map(|outcome| outcome.map_err(|e| e.to_string()));
            if let Some(result) = done {
                let mut conn = self.conns.remove(key);
                let _ = self.poll.registry().deregister(conn.exchange.stream_mut());
                replies.push(Reply {
                    tag: conn.tag,
                    result,
                });
            }
        }
        Ok(replies)
    }

    /// Opens `n` connections that send nothing, spread over the servers, and keeps them.
    pub fn open_idle(&mut self, n: usize) -> Result<usize, String> {
        for i in 0..n {
            let s = StdTcpStream::connect(self.addrs[i % self.addrs.len()])
                .map_err(|e| format!("idle connection {i}: {e}"))?;
            self.idle.push(s);
            if (i + 1) % 2000 == 0 {
                eprintln!("hold: {} connections open", i + 1);
            }
        }
        Ok(self.idle.len())
    }

    /// How many idle connections the server has neither answered nor closed.
    pub fn idle_still_open(&mut self) -> usize {
        let mut open = 0;
        for s in &mut self.idle {
            let quiet = s.set_nonblocking(true).is_ok()
                && matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            open += usize::from(quiet);
        }
        open
    }
}
