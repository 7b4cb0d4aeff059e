//! The loop both programs run: one `mio::Poll`, sockets in a `Slab` whose key is the
//! `mio::Token`, a timer heap, buffered non-blocking IO, and signals delivered as readiness.
//! Nothing here knows a protocol; the programs' loops read top to bottom on these pieces.

mod stream;
mod timers;

pub use stream::{read_available, read_once, BufferedStream, ReadOutcome, ReadStep};
pub use timers::Timers;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook_mio::v1_0::Signals;

/// Tokens at the top of the range are reserved for the loop's own sources, so slab keys
/// (which start at 0) never collide with them.
pub const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
pub const LISTENER_TOKEN: Token = Token(usize::MAX - 2);
pub const UDP_TOKEN: Token = Token(usize::MAX - 3);
pub const CAMERA_TOKEN: Token = Token(usize::MAX - 4);
pub const WINDOW_TOKEN: Token = Token(usize::MAX - 5);
/// The client's stdin (`--chat-stdin`).
pub const STDIN_TOKEN: Token = Token(usize::MAX - 6);
/// Readiness of the client's ALSA capture PCM's descriptors (all share one token).
pub const AUDIO_CAPTURE_TOKEN: Token = Token(usize::MAX - 7);
/// Readiness of the client's ALSA playback PCM's descriptors.
pub const AUDIO_PLAYBACK_TOKEN: Token = Token(usize::MAX - 8);
/// The server's Redis connections (`--redis`): commands, and the pub/sub subscriber.
pub const REDIS_TOKEN: Token = Token(usize::MAX - 9);
pub const REDIS_SUB_TOKEN: Token = Token(usize::MAX - 10);
/// The client's netlink socket: the machine's addresses changed.
pub const NETIF_TOKEN: Token = Token(usize::MAX - 11);

/// One readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
}

/// `mio::Poll` with its event buffer and the shutdown signals registered on it.
pub struct Reactor {
    poll: Poll,
    events: Events,
    signals: Signals,
}

impl Reactor {
    /// Creates the poll and registers SIGINT and SIGTERM under [`SIGNAL_TOKEN`].
    pub fn new(event_capacity: usize) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(event_capacity),
            signals,
        })
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Waits for readiness until `deadline` (forever when `None`). An interrupted wait
    /// returns no events rather than an error.
    pub fn poll(&mut self, deadline: Option<Instant>) -> io::Result<&Events> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e),
        }
        Ok(&self.events)
    }

    /// Waits like [`Reactor::poll`] and copies the events out as [`Ready`] values, so the
    /// loop can act on them while borrowing itself. Errors and hang-ups count as both
    /// readable and writable: the next read or write reports them.
    pub fn poll_ready(
        &mut self,
        deadline: Option<Instant>,
        out: &mut Vec<Ready>,
    ) -> io::Result<()> {
        out.clear();
        for ev in self.poll(deadline)?.iter() {
            out.push(Ready {
                token: ev.token(),
                readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            });
        }
        Ok(())
    }

    /// Drains pending signals; true if a shutdown signal (SIGINT/SIGTERM) arrived.
    pub fn take_shutdown_signal(&mut self) -> bool {
        let mut any = false;
        for signal in self.signals.pending() {
            log::info!("received signal {signal}, shutting down");
            any = true;
        }
        any
    }
}

/// Time from `now` to `deadline`, zero if it has passed.
pub fn until(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

/// The earliest of optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// Raises the soft open-file limit to the hard limit, so one process can hold many
/// connections. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(soft.max(hard))
}
