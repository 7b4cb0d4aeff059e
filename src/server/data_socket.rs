//! One connection's request, read incrementally (after the original's `DataSocket`): bytes
//! arrive in any number of pieces, the head is parsed with `httparse`, the body is read by
//! `Content-Length`, and every violation becomes an [`HttpError`] naming the status to send.
//! An HTTP/1.1 request that does not ask to close leaves whatever follows it buffered as
//! the start of the connection's next request.

use std::fmt;

use crate::signaling::Status;

/// Request methods the protocol knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Options,
    Other,
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: path, then `?` and the raw arguments.
    pub target: String,
    /// `Content-Type` as the client sent it (empty if none).
    pub content_type: Vec<u8>,
    pub body: Vec<u8>,
    /// HTTP/1.1 without `Connection: close`: the client may send its next request on the
    /// same connection. HTTP/1.0 requests (the original client's) never are, so they get
    /// the original's answer bytes and a closed socket.
    pub keep_alive: bool,
}

/// A request the server refuses, with the status to answer and a short reason for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: Status,
    pub reason: &'static str,
}

impl HttpError {
    const fn new(status: Status, reason: &'static str) -> HttpError {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.line(), self.reason)
    }
}

/// Size bounds for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

#[derive(Debug)]
struct Head {
    method: Method,
    target: String,
    content_type: Vec<u8>,
    head_len: usize,
    content_length: usize,
    keep_alive: bool,
}

/// Buffer capacity kept between the requests of a kept-alive connection; a large body's
/// buffer is given back.
const READ_KEEP: usize = 4096;

/// The reading state of one connection.
#[derive(Debug, Default)]
pub struct DataSocket {
    buf: Vec<u8>,
    head: Option<Head>,
    /// How far `buf` was already searched for the end of the head.
    scanned: usize,
}

impl DataSocket {
    pub fn new() -> DataSocket {
        DataSocket::default()
    }

    /// Bytes received and not yet turned into a request.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory the request holds (its buffer's capacity), for the memory budget.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Adds bytes; returns the request once it is complete. Bytes beyond the request's
    /// body (a pipelined second request) are an error for a request that closes its
    /// connection; after a kept-alive one they stay here as the start of the next request.
    pub fn feed(&mut self, bytes: &[u8], limits: &Limits) -> Result<Option<Request>, HttpError> {
        // The buffer grows as bytes arrive, never from what Content-Length promises; once
        // the head is known it grows at most to the whole request, not to the next power
        // of two past it.
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let doubled = (self.buf.capacity() * 2).max(need);
            let target = match &self.head {
                Some(head) => doubled.min((head.head_len + head.content_length).max(need)),
                None => doubled,
            };
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        if self.head.is_none() {
            // Re-parse only when a line ended, so a byte-at-a-time sender costs linear time.
            let fresh = &self.buf[self.scanned.saturating_sub(3)..];
            self.scanned = self.buf.len();
            if !fresh.contains(&b'\n') {
                return self.check_head_size(limits).map(|_| None);
            }
            match parse_head(&self.buf, limits)? {
                Some(head) => self.head = Some(head),
                None => return self.check_head_size(limits).map(|_| None),
            }
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let want = head.head_len + head.content_length;
        if self.buf.len() < want {
            return Ok(None);
        }
        // Tolerate a stray CRLF after a body, as old clients send; anything else is pipelining.
        let pipelined = self.buf[want..].iter().any(|b| !matches!(b, b'\r' | b'\n'));
        if pipelined && !head.keep_alive {
            return Err(HttpError::new(
                Status::BadRequest,
                "one request per connection: bytes after the request",
            ));
        }
        let head = self.head.take().expect("checked above");
        let body = self.buf[head.head_len..want].to_vec();
        if pipelined {
            self.buf.drain(..want);
        } else {
            self.buf.clear();
        }
        self.scanned = 0;
        if self.buf.capacity() > READ_KEEP {
            self.buf.shrink_to(READ_KEEP);
        }
        Ok(Some(Request {
            method: head.method,
            target: head.target,
            content_type: head.content_type,
            body,
            keep_alive: head.keep_alive,
        }))
    }

    /// The next request from bytes already received (a kept-alive client that sent it
    /// before its previous answer was written), if they make a whole one.
    pub fn next_request(&mut self, limits: &Limits) -> Result<Option<Request>, HttpError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.feed(&[], limits)
    }

    fn check_head_size(&self, limits: &Limits) -> Result<(), HttpError> {
        if self.buf.len() > limits.max_header_bytes {
            Err(HttpError::new(
                Status::HeadersTooLarge,
                "request head exceeds --max-header-bytes",
            ))
        } else {
            Ok(())
        }
    }
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(Status::HeadersTooLarge, "too many headers"))
        }
        Err(_) => return Err(HttpError::new(Status::BadRequest, "malformed request")),
    };
    if head_len > limits.max_header_bytes {
        return Err(HttpError::new(
            Status::HeadersTooLarge,
            "request head exceeds --max-header-bytes",
        ));
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    if target.is_empty() {
        return Err(HttpError::new(
            Status::BadRequest,
            "request line has no path",
        ));
    }
    let mut content_length: Option<usize> = None;
    let mut content_type = Vec::new();
    let mut keep_alive = req.version == Some(1);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<usize>().ok())
                .flatten();
            match (parsed, content_length) {
                (None, _) => return Err(HttpError::new(Status::BadRequest, "bad Content-Length")),
                (Some(n), Some(prev)) if n != prev => {
                    return Err(HttpError::new(
                        Status::BadRequest,
                        "conflicting Content-Length headers",
                    ))
                }
                (Some(n), _) => content_length = Some(n),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::new(
                Status::LengthRequired,
                "chunked bodies are not supported: send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = h.value.to_vec();
        }
    }
    if method == Method::Post && content_length.is_none() {
        return Err(HttpError::new(
            Status::LengthRequired,
            "POST without Content-Length",
        ));
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > limits.max_body_bytes {
        return Err(HttpError::new(
            Status::PayloadTooLarge,
            "body exceeds --max-body-bytes",
        ));
    }
    Ok(Some(Head {
        method,
        target: target.to_string(),
        content_type,
        head_len,
        content_length,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 1024,
        max_body_bytes: 100,
    };

    fn feed_all(bytes: &[u8]) -> Result<Option<Request>, HttpError> {
        DataSocket::new().feed(bytes, &LIMITS)
    }

    #[test]
    fn byte_at_a_time_with_body_later() {
        let raw = b"POST /message?peer_id=1&to=2 HTTP/1.0\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
        let mut ds = DataSocket::new();
        for (i, b) in raw.iter().enumerate() {
            let r = ds.feed(std::slice::from_ref(b), &LIMITS).unwrap();
            assert_eq!(r.is_some(), i + 1 == raw.len());
            if let Some(req) = r {
                assert_eq!(req.method, Method::Post);
                assert_eq!(req.target, "/message?peer_id=1&to=2");
                assert_eq!(req.content_type, b"text/plain");
                assert_eq!(req.body, b"hello");
            }
        }
    }

    #[test]
    fn errors_name_their_status() {
        let status = |raw: &[u8]| feed_all(raw).unwrap_err().status;
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), Status::BadRequest);
        assert_eq!(status(b"GET HTTP/1.0\r\n\r\n"), Status::BadRequest);
        assert_eq!(
            status(b"POST /message HTTP/1.0\r\n\r\n"),
            Status::LengthRequired
        );
        assert_eq!(
            status(b"POST /m HTTP/1.0\r\nContent-Length: x\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            status(b"POST /m HTTP/1.0\r\nContent-Length: 101\r\n\r\n"),
            Status::PayloadTooLarge
        );
        assert_eq!(
            status(b"GET /wait HTTP/1.0\r\n\r\nGET /wait HTTP/1.0\r\n\r\n"),
            Status::BadRequest
        );
        let long = format!("GET /{} HTTP/1.0\r\n\r\n", "a".repeat(2000));
        assert_eq!(status(long.as_bytes()), Status::HeadersTooLarge);
    }

    #[test]
    fn head_without_newline_is_bounded() {
        let mut ds = DataSocket::new();
        let err = ds.feed(&[b'a'; 1025], &LIMITS).unwrap_err();
        assert_eq!(err.status, Status::HeadersTooLarge);
    }

    #[test]
    fn only_http_1_1_without_close_keeps_the_connection() {
        let keeps = |raw: &[u8]| feed_all(raw).unwrap().unwrap().keep_alive;
        assert!(keeps(b"GET /wait?peer_id=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!keeps(b"GET /wait?peer_id=1 HTTP/1.0\r\n\r\n"));
        assert!(!keeps(
            b"GET /wait?peer_id=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!keeps(
            b"GET /wait HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n"
        ));
    }

    #[test]
    fn a_kept_alive_request_leaves_the_next_one_buffered() {
        let mut ds = DataSocket::new();
        let first = ds
            .feed(
                b"POST /m HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /wait HTTP/1.1\r\n",
                &LIMITS,
            )
            .unwrap()
            .unwrap();
        assert_eq!(first.body, b"hi");
        assert_eq!(ds.next_request(&LIMITS).unwrap(), None);
        let second = ds.feed(b"\r\n", &LIMITS).unwrap().unwrap();
        assert_eq!((second.target.as_str(), second.keep_alive), ("/wait", true));
        assert_eq!(ds.buffered(), 0);
        assert_eq!(ds.next_request(&LIMITS).unwrap(), None);
    }

    #[test]
    fn bodies_take_memory_as_they_arrive_never_more_than_the_request() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_body_bytes: 1 << 20,
        };
        let head = b"POST /m HTTP/1.0\r\nContent-Length: 1048576\r\n\r\n";
        let mut ds = DataSocket::new();
        assert_eq!(ds.feed(head, &limits).unwrap(), None);
        // A promise of 1 MiB costs what was sent, not what was promised.
        assert!(ds.held() < 1024, "{}", ds.held());
        let chunk = [b'x'; 16 * 1024];
        for _ in 0..63 {
            assert_eq!(ds.feed(&chunk, &limits).unwrap(), None);
        }
        assert!(ds.held() <= head.len() + (1 << 20), "{}", ds.held());
        let req = ds.feed(&chunk, &limits).unwrap().unwrap();
        assert_eq!(req.body.len(), 1 << 20);
    }

    #[test]
    fn lying_short_length_is_pipelining() {
        let r = feed_all(b"POST /m HTTP/1.0\r\nContent-Length: 2\r\n\r\nhello");
        assert_eq!(r.unwrap_err().status, Status::BadRequest);
    }
}
