//! One HTTP exchange: one request over one non-blocking TCP connection, and the response
//! read back. The signaling client and the load generator both need exactly this, so it is
//! written once here: the connect check before writing, partial writes, reads that stop at
//! a size limit, and the difference between "never reached the server" and "reached it but
//! got no usable answer".
//!
//! A connection can also carry the next request (HTTP/1.1 keep-alive): once an answer was
//! read whole and said `Connection: keep-alive` ([`HttpExchange::keeps_connection`]),
//! [`HttpExchange::reuse`] sends another request on the same socket. A kept connection the
//! server closed meanwhile (its keep-alive time-out, or a restart) shows as an end or a
//! reset before any byte of answer; [`HttpExchange::retry_request`] then hands the request
//! back to be sent once more on a fresh connection.
//!
//! Resending is safe, even for a `POST /message`: the server (`src/server/data_socket.rs`,
//! `src/server/mod.rs`) dispatches a request only once all of it (head and
//! `Content-Length` body) is in, and answers it in that same turn of its loop — a message
//! is delivered or refused at once, never held — before it could close the connection. A
//! server that closed without a byte of answer therefore never acted on the request. (A
//! held `GET /wait` is answered later, but resending it is harmless.)
//!
//! The exchange owns its socket but never registers it: the loop registers
//! [`HttpExchange::stream_mut`] for read and write readiness, passes each readiness event
//! to [`HttpExchange::on_ready`], and deregisters the stream once an outcome comes back.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::http::{ParsedResponse, ResponseError, ResponseParser};
use crate::reactor::{read_available, BufferedStream};

/// Why an exchange produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The request did not get through: the connection could not be made (refused,
    /// unreachable, reset) or broke before the whole request was written.
    Unreachable {
        addr: SocketAddr,
        kind: io::ErrorKind,
        detail: String,
    },
    /// The request went out, but what came back was not a usable response: malformed, too
    /// large, or cut short by the server closing.
    BadResponse {
        addr: SocketAddr,
        error: ResponseError,
    },
}

impl ExchangeError {
    /// An IO failure on the way to the server at `addr`.
    pub fn unreachable(addr: SocketAddr, e: &io::Error) -> ExchangeError {
        ExchangeError::Unreachable {
            addr,
            kind: e.kind(),
            detail: e.to_string(),
        }
    }

    /// True when the request never got through (as opposed to a bad answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ExchangeError::Unreachable { .. })
    }

    /// The kind of IO failure, for the failures that have one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ExchangeError::Unreachable { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Unreachable { addr, detail, .. } => {
                write!(f, "cannot reach the server at {addr}: {detail}")
            }
            ExchangeError::BadResponse { addr, error } => {
                write!(f, "bad answer from the server at {addr}: {error}")
            }
        }
    }
}

impl std::error::Error for ExchangeError {}

/// What [`HttpExchange::on_ready`] hands back once the exchange is over.
pub type ExchangeOutcome = Result<ParsedResponse, ExchangeError>;

/// One request, one connection, one response.
#[derive(Debug)]
pub struct HttpExchange {
    stream: BufferedStream<TcpStream>,
    parser: ResponseParser,
    /// The request, kept after it is handed to the socket for [`Self::retry_request`].
    request: Vec<u8>,
    /// The request has been handed to the socket.
    sent: bool,
    /// This request went on a connection kept from an earlier one.
    reused: bool,
    /// The server closed (or reset) the connection.
    closed: bool,
    peer: SocketAddr,
    max_response: usize,
    finished: bool,
}

impl HttpExchange {
    /// Starts a non-blocking connect to `addr`; `request` is written once it is established.
    /// Responses larger than `max_response` bytes in all are refused.
    pub fn connect(
        addr: SocketAddr,
        request: Vec<u8>,
        max_response: usize,
    ) -> Result<HttpExchange, ExchangeError> {
        let stream = TcpStream::connect(addr).map_err(|e| ExchangeError::unreachable(addr, &e))?;
        Ok(HttpExchange::new(stream, addr, request, max_response))
    }

    /// Takes a stream whose non-blocking connect to `peer` is under way (or done), for
    /// callers that open their sockets themselves (the load generator picks source
    /// addresses).
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        request: Vec<u8>,
        max_response: usize,
    ) -> HttpExchange {
        HttpExchange {
            stream: BufferedStream::new(stream),
            parser: ResponseParser::new(max_response),
            request,
            sent: false,
            reused: false,
            closed: false,
            peer,
            max_response,
            finished: false,
        }
    }

    /// The socket, for the loop to register with and deregister from its poll (interest:
    /// readable and writable).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream.io
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The request has been handed to the socket (some of it may still be buffered here).
    pub fn request_sent(&self) -> bool {
        self.sent
    }

    /// The exchange is over with a whole answer after which the server keeps the
    /// connection (HTTP/1.1, `Connection: keep-alive`, nothing more after the body): the
    /// next request may go on it with [`Self::reuse`].
    pub fn keeps_connection(&self) -> bool {
        self.finished && !self.closed && self.parser.keeps_connection()
    }

    /// Starts `request` on this exchange's kept connection (see [`Self::keeps_connection`]).
    /// The socket stays registered as it was; the caller then calls [`Self::on_ready`] as if
    /// readable and writable, since readiness that came before will not be reported again.
    pub fn reuse(&mut self, request: Vec<u8>) {
        self.parser = ResponseParser::new(self.max_response);
        self.request = request;
        self.sent = false;
        self.reused = true;
        self.finished = false;
    }

    /// The request back, to be sent once more on a fresh connection, when this exchange
    /// went on a kept connection that failed before any byte of answer arrived (the server
    /// had closed it: see the module's note on why that is safe). `None` for any other
    /// outcome, and for requests on fresh connections, so a request is retried once at most.
    pub fn retry_request(&mut self, outcome: &ExchangeOutcome) -> Option<Vec<u8>> {
        let retry = self.reused && outcome.is_err() && self.received() == 0;
        retry.then(|| std::mem::take(&mut self.request))
    }

    /// The request back while its answer has not come, to send again on a new
    /// connection (this one's local address is gone, so no answer can reach it). `None`
    /// once the exchange is over.
    pub fn unanswered_request(&mut self) -> Option<Vec<u8>> {
        (!self.finished).then(|| std::mem::take(&mut self.request))
    }

    /// Response bytes received so far.
    pub fn received(&self) -> usize {
        self.parser.buffered()
    }

    /// Acts on one readiness event: writes the request once connected, reads what arrived.
    /// Returns the outcome once the exchange is over, and `None` until then (and after).
    /// `scratch` is a read buffer the caller lends, so many exchanges can share one.
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut Vec<u8>,
    ) -> Option<ExchangeOutcome> {
        if self.finished {
            return None;
        }
        let outcome = self.step(readable, writable, scratch);
        self.finished = outcome.is_some();
        outcome
    }

    fn step(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut Vec<u8>,
    ) -> Option<ExchangeOutcome> {
        if writable {
            if let Err(e) = self.write() {
                return Some(Err(ExchangeError::unreachable(self.peer, &e)));
            }
        }
        if !readable {
            return None;
        }
        scratch.clear();
        let limit = self.parser_limit();
        let read = read_available(&mut self.stream.io, scratch, limit);
        self.closed |= read.closed;
        match self.parser.feed(scratch) {
            Ok(Some(response)) => Some(Ok(response)),
            Ok(None) if read.closed => Some(Err(self.closed_early())),
            Ok(None) => None,
            Err(error) => Some(Err(ExchangeError::BadResponse {
                addr: self.peer,
                error,
            })),
        }
    }

    /// Writes the request once the connection is established, or flushes what is left of
    /// it. A connect in progress is not an error.
    fn write(&mut self) -> io::Result<()> {
        if self.sent {
            return self.stream.flush().map(|_| ());
        }
        // Writable while connecting means connected or failed: the pending socket error
        // tells which, before anything is written.
        if let Some(e) = self.stream.io.take_error()? {
            return Err(e);
        }
        // A spurious wake-up before the handshake completes: wait for the next one.
        if self.stream.io.peer_addr().is_err() {
            return Ok(());
        }
        self.stream.send(&self.request)?;
        self.sent = true;
        Ok(())
    }

    /// The server closed before a whole response arrived.
    fn closed_early(&mut self) -> ExchangeError {
        if !self.sent {
            // Closed before the request could even be written: a connect failure.
            return match self.stream.io.take_error() {
                Ok(Some(e)) | Err(e) => ExchangeError::unreachable(self.peer, &e),
                Ok(None) => ExchangeError::Unreachable {
                    addr: self.peer,
                    kind: io::ErrorKind::UnexpectedEof,
                    detail: "connection closed before the request was sent".into(),
                },
            };
        }
        ExchangeError::BadResponse {
            addr: self.peer,
            error: self.parser.finish(),
        }
    }

    /// Reads stop once the scratch buffer passes what the parser could still accept.
    fn parser_limit(&self) -> usize {
        self.max_response.saturating_sub(self.parser.buffered())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcpStream};
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};

    use super::*;
    use crate::signaling::http::{message_request, sign_in_request, Response, Status};

    /// A poll with one exchange registered on it, driven the way a loop drives it.
    struct Driver {
        poll: Poll,
        events: Events,
        scratch: Vec<u8>,
        ex: HttpExchange,
    }

    impl Driver {
        fn new(mut ex: HttpExchange) -> Driver {
            let poll = Poll::new().unwrap();
            poll.registry()
                .register(
                    ex.stream_mut(),
                    Token(0),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            Driver {
                poll,
                events: Events::with_capacity(8),
                scratch: Vec::new(),
                ex,
            }
        }

        /// One poll round (waiting at most `wait`) with its events passed on.
        fn pump(&mut self, wait: Duration) -> Option<ExchangeOutcome> {
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            for ev in self.events.iter() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                if let Some(out) = self.ex.on_ready(readable, writable, &mut self.scratch) {
                    return Some(out);
                }
            }
            None
        }

        /// Pumps until the exchange is over (5 s at most).
        fn finish(&mut self) -> ExchangeOutcome {
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Some(out) = self.pump(Duration::from_millis(50)) {
                    return out;
                }
            }
            panic!("the exchange did not finish within 5 s");
        }

        /// Pumps until the request is handed to the socket.
        fn send_request(&mut self) {
            let end = Instant::now() + Duration::from_secs(5);
            while !self.ex.request_sent() {
                assert!(Instant::now() < end, "the request was not sent within 5 s");
                assert!(self.pump(Duration::from_millis(50)).is_none());
            }
        }
    }

    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// Accepts the exchange's connection and reads its whole request.
    fn accept_request(l: &TcpListener, d: &mut Driver, len: usize) -> StdTcpStream {
        let (mut s, _) = l.accept().unwrap();
        d.send_request();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = vec![0u8; len];
        s.read_exact(&mut req).unwrap();
        assert_eq!(req, sign_in_request("alice"));
        s
    }

    /// Alice's sign-in sent over a new exchange and read by the test's server side.
    fn exchange_accepted(
        l: &TcpListener,
        addr: SocketAddr,
        request: &[u8],
    ) -> (Driver, StdTcpStream) {
        let ex = HttpExchange::connect(addr, request.to_vec(), 1 << 16).unwrap();
        let mut d = Driver::new(ex);
        let s = accept_request(l, &mut d, request.len());
        (d, s)
    }

    fn ok_response(body: &[u8]) -> Vec<u8> {
        Response {
            status: Status::Added,
            content_type: b"text/plain",
            pragma: Some(7),
            body,
        }
        .to_bytes()
    }

    #[test]
    fn a_request_gets_its_response() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let ex = HttpExchange::connect(addr, request.clone(), 1 << 16).unwrap();
        assert_eq!(ex.peer(), addr);
        let mut d = Driver::new(ex);
        let mut s = accept_request(&l, &mut d, request.len());
        s.write_all(&ok_response(b"alice,7,1\n")).unwrap();
        let resp = d.finish().unwrap();
        assert_eq!((resp.code, resp.pragma), (200, Some(7)));
        assert_eq!(resp.body, b"alice,7,1\n");
        // Over is over: later events report nothing more.
        assert!(d.ex.on_ready(true, true, &mut Vec::new()).is_none());
    }

    #[test]
    fn a_server_closing_without_an_answer_is_an_error() {
        let (l, addr) = listener();
        let ex = HttpExchange::connect(addr, sign_in_request("alice"), 1 << 16).unwrap();
        let mut d = Driver::new(ex);
        let (s, _) = l.accept().unwrap();
        drop(s);
        let err = d.finish().unwrap_err();
        // Either the request never got through, or it did and the answer was cut short
        // (as the client loop has always told them apart).
        match &err {
            ExchangeError::Unreachable { addr: a, .. } => assert_eq!(*a, addr),
            ExchangeError::BadResponse { addr: a, error } => {
                assert_eq!(*a, addr);
                assert_eq!(*error, ResponseError::Truncated { have: 0 });
            }
        }
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn a_server_closing_after_the_request_is_a_bad_response() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap();
        drop(s);
        let err = d.finish().unwrap_err();
        assert!(!err.is_unreachable());
        assert!(
            matches!(
                err,
                ExchangeError::BadResponse {
                    error: ResponseError::Truncated { have: 27 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("bad answer from the server at 127.0.0.1:"));
    }

    #[test]
    fn a_refused_connection_is_unreachable() {
        let (l, addr) = listener();
        drop(l);
        let err = match HttpExchange::connect(addr, sign_in_request("alice"), 1 << 16) {
            Err(e) => e,
            Ok(ex) => Driver::new(ex).finish().unwrap_err(),
        };
        assert!(err.is_unreachable(), "{err:?}");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        assert!(
            err.to_string().contains("cannot reach the server at"),
            "{err}"
        );
    }

    #[test]
    fn a_response_over_the_limit_is_refused() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let ex = HttpExchange::connect(addr, request.clone(), 1000).unwrap();
        let mut d = Driver::new(ex);
        let mut s = accept_request(&l, &mut d, request.len());
        s.write_all(&ok_response(&[b'x'; 5000])).unwrap();
        let err = d.finish().unwrap_err();
        assert!(
            matches!(
                err,
                ExchangeError::BadResponse {
                    error: ResponseError::TooLarge(_),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    fn kept_response(body: &[u8]) -> Vec<u8> {
        let mut bytes = ok_response(body);
        crate::signaling::http::keep_connection(&mut bytes);
        bytes
    }

    /// Starts `request` on the driver's kept connection, as the client loop does.
    fn reuse(d: &mut Driver, request: Vec<u8>) -> Option<ExchangeOutcome> {
        assert!(d.ex.keeps_connection());
        d.ex.reuse(request);
        d.ex.on_ready(true, true, &mut d.scratch)
    }

    #[test]
    fn a_kept_connection_carries_the_next_request() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.write_all(&kept_response(b"alice,7,1\n")).unwrap();
        assert_eq!(d.finish().unwrap().body, b"alice,7,1\n");
        assert!(d.ex.keeps_connection());
        // The second request arrives on the same server socket; no new connection.
        l.set_nonblocking(true).unwrap();
        assert!(reuse(&mut d, request.clone()).is_none());
        let mut again = vec![0u8; request.len()];
        s.read_exact(&mut again).unwrap();
        assert_eq!(again, request);
        s.write_all(&ok_response(b"second")).unwrap();
        let resp = d.finish().unwrap();
        assert_eq!(resp.body, b"second");
        assert!(l.accept().is_err(), "no second connection");
        // That answer said `Connection: close`: nothing more goes on this connection.
        assert!(!d.ex.keeps_connection());
    }

    #[test]
    fn a_close_or_a_cut_answer_does_not_keep_the_connection() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.write_all(&ok_response(b"x")).unwrap();
        d.finish().unwrap();
        assert!(!d.ex.keeps_connection(), "Connection: close");

        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        let kept = kept_response(b"xyz");
        s.write_all(&kept[..kept.len() - 1]).unwrap();
        drop(s);
        let outcome = d.finish();
        assert!(outcome.is_err());
        assert!(!d.ex.keeps_connection(), "an error never keeps");
        // A fresh connection's failure is the caller's to report, never retried.
        assert_eq!(d.ex.retry_request(&outcome), None);
    }

    #[test]
    fn a_kept_connection_closed_by_the_server_is_retried_once() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.write_all(&kept_response(b"a")).unwrap();
        d.finish().unwrap();
        // The server's keep-alive time-out: it closes the idle connection.
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
        let second = message_request(7, 8, "text/plain", b"hello");
        let outcome = match reuse(&mut d, second.clone()) {
            Some(out) => out,
            None => d.finish(),
        };
        assert!(outcome.is_err(), "{outcome:?}");
        assert_eq!(d.ex.retry_request(&outcome), Some(second.clone()));
        // The retry goes on a fresh connection, and is not retried again.
        let ex = HttpExchange::connect(addr, second.clone(), 1 << 16).unwrap();
        let mut d = Driver::new(ex);
        let (s, _) = l.accept().unwrap();
        drop(s);
        let outcome = d.finish();
        assert!(outcome.is_err());
        assert_eq!(d.ex.retry_request(&outcome), None);
    }

    #[test]
    fn a_kept_connection_cut_mid_answer_is_not_retried() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.write_all(&kept_response(b"a")).unwrap();
        d.finish().unwrap();
        assert!(reuse(&mut d, request.clone()).is_none());
        let mut again = vec![0u8; request.len()];
        s.read_exact(&mut again).unwrap();
        // Some of an answer came: the server acted on the request, so no resending.
        s.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        drop(s);
        let outcome = d.finish();
        assert!(matches!(
            outcome,
            Err(ExchangeError::BadResponse {
                error: ResponseError::Truncated { have: 17 },
                ..
            })
        ));
        assert_eq!(d.ex.retry_request(&outcome), None);
    }

    #[test]
    fn a_response_split_across_many_reads_is_put_together() {
        let (l, addr) = listener();
        let request = sign_in_request("alice");
        let (mut d, mut s) = exchange_accepted(&l, addr, &request);
        s.set_nodelay(true).unwrap();
        let bytes = ok_response(b"alice,7,1\nbob,8,1\n");
        let chunks: Vec<&[u8]> = bytes.chunks(7).collect();
        let mut sent = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            s.write_all(chunk).unwrap();
            sent += chunk.len();
            if i + 1 == chunks.len() {
                break;
            }
            // Each piece is read on its own and completes nothing.
            let end = Instant::now() + Duration::from_secs(5);
            while d.ex.received() < sent {
                assert!(Instant::now() < end, "piece {i} was not read");
                assert!(d.pump(Duration::from_millis(50)).is_none());
            }
        }
        let resp = d.finish().unwrap();
        assert_eq!(resp.body, b"alice,7,1\nbob,8,1\n");
        assert!(chunks.len() > 40);
    }
}
