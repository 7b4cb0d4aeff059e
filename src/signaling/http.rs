//! HTTP as the peerconnection protocol uses it: one request per connection, responses with
//! `Connection: close`, `Content-Length` bodies and the member id in `Pragma`. (The server
//! also keeps HTTP/1.1 connections that ask; [`keep_connection`] is the one difference in
//! an answer, [`keep_alive_request`] the one in a request, and
//! [`ResponseParser::keeps_connection`] how the native client tells a kept answer.)

use std::fmt;

use super::PeerId;

/// The response statuses the server uses, with the original's reason phrases where it had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Added,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    LengthRequired,
    PayloadTooLarge,
    HeadersTooLarge,
    /// The original's answer for a peer id that names no member.
    Error,
    NotImplemented,
    Unavailable,
}

impl Status {
    /// The status line text after `HTTP/1.1 `.
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::Added => "200 Added",
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::Error => "500 Error",
            Status::NotImplemented => "501 Not Implemented",
            Status::Unavailable => "503 Service Unavailable",
        }
    }

    pub fn code(self) -> u16 {
        self.line()[..3].parse().unwrap_or(500)
    }
}

const SERVER_HEADERS: &str =
    "Server: PeerConnectionTestServer/0.1\r\nCache-Control: no-cache\r\nConnection: close\r\n";

const CLOSE: &[u8] = b"\r\nConnection: close\r\n";
const KEEP_ALIVE: &[u8] = b"\r\nConnection: keep-alive\r\n";

const CORS_HEADERS: &str = "Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Credentials: true\r\n\
Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n\
Access-Control-Allow-Headers: Content-Type, Content-Length, Connection, Cache-Control\r\n\
Access-Control-Expose-Headers: Content-Length\r\n";

/// A server response, laid out exactly as the original's `DataSocket::Send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: Status,
    /// Omitted from the headers when empty.
    pub content_type: &'a [u8],
    pub pragma: Option<PeerId>,
    pub body: &'a [u8],
}

impl<'a> Response<'a> {
    /// A `text/plain` response with a body and no `Pragma`.
    pub fn text(status: Status, body: &'a [u8]) -> Response<'a> {
        Response {
            status,
            content_type: b"text/plain",
            pragma: None,
            body,
        }
    }

    /// Appends the whole response (head and body) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(400 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.line().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(SERVER_HEADERS.as_bytes());
        if !self.content_type.is_empty() {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(self.content_type);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        if let Some(id) = self.pragma {
            out.extend_from_slice(format!("Pragma: {id}\r\n").as_bytes());
        }
        out.extend_from_slice(CORS_HEADERS.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Turns a response laid out by [`Response::write_to`] into the answer for a client that
/// keeps its connection (HTTP/1.1 without `Connection: close`): the one header that differs
/// says `keep-alive`. Everything else, and every answer to an HTTP/1.0 request, stays the
/// original's bytes.
pub fn keep_connection(response: &mut Vec<u8>) {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    if let Some(at) = response[..head_end]
        .windows(CLOSE.len())
        .position(|w| w == CLOSE)
    {
        response.splice(at..at + CLOSE.len(), KEEP_ALIVE.iter().copied());
    }
}

/// The status code of a response laid out by [`Response::write_to`] (0 if it is not one):
/// the loop counts answers by code without keeping the `Response` around.
pub fn status_code(response: &[u8]) -> u16 {
    response
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Turns a request laid out by the functions below (HTTP/1.0, the original client's bytes)
/// into one that lets the server keep the connection: HTTP/1.1, and no `Connection: close`.
/// Only the version in the request line changes.
pub fn keep_alive_request(request: &mut [u8]) {
    let line_end = request
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(request.len());
    if request[..line_end].ends_with(b" HTTP/1.0") {
        request[line_end - 1] = b'1';
    }
}

/// `GET /sign_in?NAME`, byte for byte what the original client sends.
pub fn sign_in_request(name: &str) -> Vec<u8> {
    format!("GET /sign_in?{name} HTTP/1.0\r\n\r\n").into_bytes()
}

/// `GET /wait?peer_id=ID`: the hanging GET.
pub fn wait_request(id: PeerId) -> Vec<u8> {
    format!("GET /wait?peer_id={id} HTTP/1.0\r\n\r\n").into_bytes()
}

/// `GET /sign_out?peer_id=ID`.
pub fn sign_out_request(id: PeerId) -> Vec<u8> {
    format!("GET /sign_out?peer_id={id} HTTP/1.0\r\n\r\n").into_bytes()
}

/// `POST /message?peer_id=FROM&to=TO` with the body, as the original client sends it.
pub fn message_request(from: PeerId, to: PeerId, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /message?peer_id={from}&to={to} HTTP/1.0\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    Malformed(String),
    MissingContentLength,
    TooLarge(usize),
    /// The peer closed before the whole response arrived.
    Truncated {
        have: usize,
    },
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Malformed(why) => write!(f, "malformed HTTP response: {why}"),
            ResponseError::MissingContentLength => {
                write!(f, "HTTP response has no valid Content-Length")
            }
            ResponseError::TooLarge(n) => write!(f, "HTTP response of {n} bytes is too large"),
            ResponseError::Truncated { have } => {
                write!(
                    f,
                    "connection closed after {have} bytes of an incomplete response"
                )
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// A complete response as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub code: u16,
    pub reason: String,
    pub pragma: Option<PeerId>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Incremental response reader: feed bytes as they arrive, get the response once its
/// `Content-Length` bytes of body are in. Used by the client, the load generator and tests.
#[derive(Debug, Default)]
pub struct ResponseParser {
    buf: Vec<u8>,
    max: usize,
}

impl ResponseParser {
    /// A parser that refuses responses larger than `max` bytes in all.
    pub fn new(max: usize) -> ResponseParser {
        ResponseParser {
            buf: Vec::new(),
            max,
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes; returns the response once complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<ParsedResponse>, ResponseError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.max {
            return Err(ResponseError::TooLarge(self.buf.len()));
        }
        parse_response(&self.buf)
    }

    /// True when the bytes fed make exactly one whole response (nothing after its body)
    /// that lets the client send its next request on the same connection: HTTP/1.1 with
    /// `Connection: keep-alive`, as [`keep_connection`] lays it out.
    pub fn keeps_connection(&self) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = resp.parse(&self.buf) else {
            return false;
        };
        let mut keep = false;
        let mut length = None;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("connection") {
                keep = value.eq_ignore_ascii_case("keep-alive");
            } else if h.name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
        resp.version == Some(1) && keep && length.map(|n| head_len + n) == Some(self.buf.len())
    }

    /// The peer closed: an incomplete response is an error.
    pub fn finish(&self) -> ResponseError {
        ResponseError::Truncated {
            have: self.buf.len(),
        }
    }
}

/// Parses one complete response from `buf`, or `None` if more bytes are needed.
pub fn parse_response(buf: &[u8]) -> Result<Option<ParsedResponse>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    let reason = resp.reason.unwrap_or("").to_string();
    let mut content_length = None;
    let mut pragma = None;
    let mut content_type = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
            if content_length.is_none() {
                return Err(ResponseError::MissingContentLength);
            }
        } else if h.name.eq_ignore_ascii_case("pragma") {
            pragma = super::parse_peer_id(value);
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        }
    }
    let len = content_length.ok_or(ResponseError::MissingContentLength)?;
    if buf.len() < head_len + len {
        return Ok(None);
    }
    Ok(Some(ParsedResponse {
        code,
        reason,
        pragma,
        content_type,
        body: buf[head_len..head_len + len].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_layout_matches_the_original() {
        let r = Response {
            status: Status::Added,
            content_type: b"text/plain",
            pragma: Some(3),
            body: b"a,3,1\n",
        };
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 Added\r\nServer: PeerConnectionTestServer/0.1\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nPragma: 3\r\nAccess-Control-Allow-Origin: *\r\n"));
        assert!(text.ends_with("Access-Control-Expose-Headers: Content-Length\r\n\r\na,3,1\n"));
    }

    #[test]
    fn a_kept_connection_changes_one_header_only() {
        let r = Response::text(Status::Ok, b"Connection: close\r\n");
        let mut kept = r.to_bytes();
        keep_connection(&mut kept);
        let expected = String::from_utf8(r.to_bytes()).unwrap().replacen(
            "Connection: close",
            "Connection: keep-alive",
            1,
        );
        assert_eq!(String::from_utf8(kept.clone()).unwrap(), expected);
        let parsed = parse_response(&kept).unwrap().unwrap();
        assert_eq!(
            parsed.body, b"Connection: close\r\n",
            "the body is untouched"
        );
        assert_eq!(status_code(&kept), 200);
    }

    #[test]
    fn a_keep_alive_request_changes_the_version_only() {
        let mut r = message_request(1, 2, "text/plain", b"HTTP/1.0\r\n");
        keep_alive_request(&mut r);
        assert_eq!(
            r,
            b"POST /message?peer_id=1&to=2 HTTP/1.1\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\nHTTP/1.0\r\n"
        );
        let mut w = wait_request(4);
        keep_alive_request(&mut w);
        assert_eq!(w, b"GET /wait?peer_id=4 HTTP/1.1\r\n\r\n");
        keep_alive_request(&mut w);
        assert_eq!(w, b"GET /wait?peer_id=4 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn only_a_whole_keep_alive_answer_keeps_the_connection() {
        let keeps = |bytes: &[u8]| {
            let mut p = ResponseParser::new(1 << 16);
            let _ = p.feed(bytes);
            p.keeps_connection()
        };
        let close = Response::text(Status::Ok, b"hi").to_bytes();
        let mut kept = close.clone();
        keep_connection(&mut kept);
        assert!(keeps(&kept));
        assert!(!keeps(&close), "Connection: close");
        assert!(!keeps(&kept[..kept.len() - 1]), "body not all in");
        let mut extra = kept.clone();
        extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert!(!keeps(&extra), "bytes after the answer");
        let old = String::from_utf8(kept.clone())
            .unwrap()
            .replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert!(!keeps(old.as_bytes()), "HTTP/1.0");
    }

    #[test]
    fn empty_content_type_is_omitted() {
        let r = Response {
            status: Status::Ok,
            content_type: b"",
            pragma: None,
            body: b"",
        };
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(!text.contains("\r\nContent-Type:"));
        assert!(text.contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn parser_takes_bytes_one_at_a_time() {
        let bytes = Response {
            status: Status::Ok,
            content_type: b"application/json",
            pragma: Some(9),
            body: b"{}",
        }
        .to_bytes();
        let mut p = ResponseParser::new(1 << 16);
        for (i, b) in bytes.iter().enumerate() {
            let got = p.feed(std::slice::from_ref(b)).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none());
            } else {
                let got = got.unwrap();
                assert_eq!(got.code, 200);
                assert_eq!(got.pragma, Some(9));
                assert_eq!(got.body, b"{}");
                assert_eq!(got.content_type.as_deref(), Some("application/json"));
            }
        }
    }

    #[test]
    fn parser_rejects_garbage_and_missing_length() {
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ResponseError::MissingContentLength)
        );
    }

    #[test]
    fn message_request_has_length_and_type() {
        let r = message_request(1, 2, "text/plain", b"BYE");
        assert_eq!(
            r,
            b"POST /message?peer_id=1&to=2 HTTP/1.0\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nBYE"
        );
    }
}
