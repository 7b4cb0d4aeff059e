//! A fake member of the signaling server: a small blocking client over `std::net::TcpStream`
//! that speaks the protocol by hand (one request per connection, HTTP/1.0, as the original
//! client does). Tests use it to send a real client what a real client would never send, and
//! to see what that client answers.
//!
//! The hanging GET is kept open across calls to [`Member::next_message`]: a call that times
//! out leaves it pending, so nothing the server hands over in the meantime is lost.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Time-out for one whole request that is not the hanging GET (connect, write, read).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One response as the member read it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub pragma: Option<u32>,
    pub body: Vec<u8>,
}

/// A peer-list entry: `name,id,connected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub id: u32,
    pub connected: bool,
}

/// Posts messages as a member: `/message` needs only the server and the member's id.
#[derive(Debug, Clone, Copy)]
pub struct Poster {
    pub port: u16,
    pub id: u32,
}

impl Poster {
    /// Posts `body` to peer `to`; returns the HTTP status (0 if the request failed).
    pub fn send(&self, to: u32, body: &[u8]) -> u16 {
        let mut req = format!(
            "POST /message?peer_id={}&to={to} HTTP/1.0\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
            self.id,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        request(self.port, &req).map_or(0, |r| r.status)
    }
}

pub struct Member {
    pub port: u16,
    pub id: u32,
    pub name: String,
    /// The peers on the list now (from sign-in and every notification since).
    pub peers: Vec<Entry>,
    /// Every notification about another member, in arrival order.
    pub notifications: Vec<Entry>,
    /// Messages from peers read while waiting for something else (a name on the list).
    pending_messages: VecDeque<(u32, Vec<u8>)>,
    /// The open hanging GET and what has been read of its answer so far.
    wait: Option<(TcpStream, Vec<u8>)>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr(port), REQUEST_TIMEOUT)?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Parses one complete response from `buf`: `Ok(None)` while more bytes are needed.
pub fn parse_reply(buf: &[u8]) -> Result<Option<Reply>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut pragma = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad length {v:?}"))?,
            );
        } else if k.eq_ignore_ascii_case("pragma") {
            pragma = v.parse().ok();
        }
    }
    let length = length.ok_or("no Content-Length")?;
    let start = head_end + 4;
    if buf.len() < start + length {
        return Ok(None);
    }
    Ok(Some(Reply {
        status,
        pragma,
        body: buf[start..start + length].to_vec(),
    }))
}

/// Sends one request on a new connection and reads the whole response.
pub fn request(port: u16, bytes: &[u8]) -> std::io::Result<Reply> {
    let mut s = connect(port)?;
    s.write_all(bytes)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(r) = parse_reply(&buf).map_err(std::io::Error::other)? {
            return Ok(r);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("closed after {} bytes of a response", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Peer-list lines `name,id,connected\n`.
pub fn parse_entries(body: &[u8]) -> Vec<Entry> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| {
            let mut f = l.rsplitn(3, ',');
            let connected = f.next()?.trim() == "1";
            let id = f.next()?.parse().ok()?;
            let name = f.next()?.to_string();
            Some(Entry {
                name,
                id,
                connected,
            })
        })
        .collect()
}

impl Member {
    /// Signs in as `name` on the server at 127.0.0.1:`port`; panics if the server says no.
    pub fn sign_in(port: u16, name: &str) -> Member {
        let reply = request(
            port,
            format!("GET /sign_in?{name} HTTP/1.0\r\n\r\n").as_bytes(),
        )
        .unwrap_or_else(|e| panic!("member {name}: sign in: {e}"));
        assert_eq!(reply.status, 200, "member {name}: sign in: {reply:?}");
        let id = reply
            .pragma
            .expect("sign-in reply carries the id in Pragma");
        let peers = parse_entries(&reply.body)
            .into_iter()
            .filter(|e| e.id != id)
            .collect();
        Member {
            port,
            id,
            name: name.to_string(),
            peers,
            notifications: Vec::new(),
            pending_messages: VecDeque::new(),
            wait: None,
        }
    }

    /// The id of `name` if it is on the list as the member knows it now.
    pub fn peer_id(&self, name: &str) -> Option<u32> {
        self.peers.iter().find(|e| e.name == name).map(|e| e.id)
    }

    /// The id of `name`, reading notifications (and keeping any messages for later) until it
    /// is on the list; panics after `timeout`.
    pub fn wait_peer(&mut self, name: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.peer_id(name) {
                return id;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "member {}: {name:?} not on the list within {timeout:?}: {:?}",
                    self.name, self.peers
                );
            }
            if let Some(m) = self.next_item(left) {
                self.pending_messages.push_back(m);
            }
        }
    }

    /// Posts `body` to peer `to`; returns the HTTP status (0 if the request failed).
    pub fn send(&self, to: u32, body: &[u8]) -> u16 {
        self.poster().send(to, body)
    }

    /// A handle that posts messages as this member, for another thread while this one waits.
    pub fn poster(&self) -> Poster {
        Poster {
            port: self.port,
            id: self.id,
        }
    }

    /// The next message from another peer within `timeout`: `(from, body)`. Peer-list
    /// notifications met on the way update [`Member::peers`] and [`Member::notifications`].
    pub fn next_message(&mut self, timeout: Duration) -> Option<(u32, Vec<u8>)> {
        if let Some(m) = self.pending_messages.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(m) = self.next_item(left) {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Every message from other peers that arrives within `window`, with its arrival time.
    pub fn messages_for(&mut self, window: Duration) -> Vec<(Instant, u32, Vec<u8>)> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some((from, body)) =
            self.next_message(deadline.saturating_duration_since(Instant::now()))
        {
            out.push((Instant::now(), from, body));
        }
        out
    }

    /// Waits up to `timeout` for a `BYE` from `from`, keeping nothing else; true if one came.
    pub fn wait_bye(&mut self, from: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some((f, body)) =
            self.next_message(deadline.saturating_duration_since(Instant::now()))
        {
            if f == from && is_bye(&body) {
                return true;
            }
        }
        false
    }

    /// Reads the hanging GET for up to `timeout`. Returns a message from another peer, or
    /// None when the time ran out or the item read was a notification (which it records).
    fn next_item(&mut self, timeout: Duration) -> Option<(u32, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.wait.is_none() {
                match self.open_wait() {
                    Ok(w) => self.wait = Some(w),
                    Err(_) => {
                        // The server may be restarting: try again shortly.
                        let left = deadline.saturating_duration_since(Instant::now());
                        std::thread::sleep(left.min(Duration::from_millis(100)));
                        if Instant::now() >= deadline {
                            return None;
                        }
                        continue;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let (stream, buf) = self.wait.as_mut().expect("open wait");
            let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut chunk = [0u8; 64 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    // Closed before a whole answer (replaced, or the server went away).
                    self.wait = None;
                    continue;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.wait = None;
                    continue;
                }
            }
            let reply = match parse_reply(buf) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => panic!("member {}: bad answer to /wait: {e}", self.name),
            };
            self.wait = None;
            if reply.status != 200 {
                panic!("member {}: /wait answered {}", self.name, reply.status);
            }
            match reply.pragma {
                Some(p) if p == self.id => {
                    for e in parse_entries(&reply.body) {
                        self.peers.retain(|x| x.id != e.id);
                        if e.connected {
                            self.peers.push(e.clone());
                        }
                        self.notifications.push(e);
                    }
                    return None;
                }
                Some(from) => return Some((from, reply.body)),
                None => panic!("member {}: /wait answer without Pragma", self.name),
            }
        }
    }

    fn open_wait(&self) -> std::io::Result<(TcpStream, Vec<u8>)> {
        let mut s = connect(self.port)?;
        s.write_all(format!("GET /wait?peer_id={} HTTP/1.0\r\n\r\n", self.id).as_bytes())?;
        Ok((s, Vec::new()))
    }

    /// Signs out; returns the HTTP status (0 if the request failed).
    pub fn sign_out(mut self) -> u16 {
        self.wait = None;
        request(
            self.port,
            format!("GET /sign_out?peer_id={} HTTP/1.0\r\n\r\n", self.id).as_bytes(),
        )
        .map_or(0, |r| r.status)
    }
}

/// Whether a message body is the bare text `BYE`.
pub fn is_bye(body: &[u8]) -> bool {
    body.trim_ascii() == b"BYE"
}

// ---- Bodies a member can send ----------------------------------------------------------

/// The video codec a built offer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 constrained baseline, `profile-level-id=42e01f;packetization-mode=1`, with RTX:
    /// what our client offers and accepts.
    H264,
    /// VP8 with RTX only: nothing our client can send or decode.
    Vp8,
}

const FINGERPRINT: &str = "sha-256 3A:91:5C:0E:7B:22:D4:6F:18:A0:E5:4C:93:2B:7D:C1:06:F8:4A:9E:B3:51:2D:C7:8E:60:1F:A4:D9:35:7C:E2";

/// A session description shaped like the offers our own client sends (one bundled video
/// m-line, sendrecv, trickle ICE, DTLS role `setup`), with `candidates` host candidates as
/// `a=candidate:` lines on 192.0.2.0/24 (a documentation range nothing answers on).
pub fn sdp(codec: Codec, setup: &str, candidates: usize) -> String {
    let (pts, codec_lines) = match codec {
        Codec::H264 => (
            "108 109",
            "a=rtpmap:108 H264/90000\r\n\
             a=rtcp-fb:108 transport-cc\r\n\
             a=rtcp-fb:108 ccm fir\r\n\
             a=rtcp-fb:108 nack\r\n\
             a=rtcp-fb:108 nack pli\r\n\
             a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:109 rtx/90000\r\n\
             a=fmtp:109 apt=108\r\n",
        ),
        Codec::Vp8 => (
            "96 97",
            "a=rtpmap:96 VP8/90000\r\n\
             a=rtcp-fb:96 transport-cc\r\n\
             a=rtcp-fb:96 ccm fir\r\n\
             a=rtcp-fb:96 nack\r\n\
             a=rtcp-fb:96 nack pli\r\n\
             a=rtpmap:97 rtx/90000\r\n\
             a=fmtp:97 apt=96\r\n",
        ),
    };
    let mut s = String::with_capacity(2048 + candidates * 80);
    s.push_str(
        "v=0\r\n\
         o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
         s=-\r\n\
         t=0 0\r\n\
         a=group:BUNDLE 0\r\n\
         a=msid-semantic: WMS fakestream\r\n",
    );
    s.push_str(&format!(
        "m=video 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\n"
    ));
    for i in 0..candidates {
        s.push_str(&format!(
            "a=candidate:{i} 1 udp {} 192.0.2.{} {} typ host\r\n",
            2_130_706_431 - i,
            1 + i % 254,
            1024 + i % 60_000
        ));
    }
    s.push_str(&format!(
        "a=ice-ufrag:fakeUfrag0000001\r\n\
         a=ice-pwd:fakeIcePassword00000000\r\n\
         a=ice-options:trickle\r\n\
         a=fingerprint:{FINGERPRINT}\r\n\
         a=setup:{setup}\r\n\
         a=mid:0\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=sendrecv\r\n\
         a=msid:fakestream faketrack\r\n\
         a=rtcp-mux\r\n\
         {codec_lines}\
         a=ssrc:1111111111 cname:fakecname\r\n\
         a=ssrc:1111111111 msid:fakestream faketrack\r\n\
         a=ssrc:2222222222 cname:fakecname\r\n\
         a=ssrc:2222222222 msid:fakestream faketrack\r\n\
         a=ssrc-group:FID 1111111111 2222222222\r\n"
    ));
    s
}

/// `{"type": kind, "sdp": sdp}` as the original client posts a session description.
pub fn sdp_json(kind: &str, sdp: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"type": kind, "sdp": sdp})).expect("json")
}

/// An H.264 offer our client can accept.
pub fn h264_offer() -> Vec<u8> {
    sdp_json("offer", &sdp(Codec::H264, "actpass", 1))
}

/// An offer with VP8 only.
pub fn vp8_offer() -> Vec<u8> {
    sdp_json("offer", &sdp(Codec::Vp8, "actpass", 1))
}

/// An H.264 offer carrying `n` `a=candidate:` lines (10,000 make about 700 KB).
pub fn offer_with_candidates(n: usize) -> Vec<u8> {
    sdp_json("offer", &sdp(Codec::H264, "actpass", n))
}

/// An answer (to an offer nobody made).
pub fn answer() -> Vec<u8> {
    sdp_json("answer", &sdp(Codec::H264, "active", 1))
}

/// A trickled ICE candidate, as the original client posts it.
pub fn candidate_json(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "candidate": format!(
            "candidate:{i} 1 udp {} 192.0.2.{} {} typ host",
            2_130_706_431 - i,
            1 + i % 254,
            1024 + i % 60_000
        ),
    }))
    .expect("json")
}

/// Bodies that are no message at all: broken JSON, JSON of the wrong shape, bad UTF-8, an
/// unknown description type, wrong field types, and a lone end-of-candidates.
pub fn junk() -> Vec<Vec<u8>> {
    vec![
        b"{not json".to_vec(),
        b"HELLO".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"42".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80, b'{'],
        br#"{"type":"pranswer","sdp":"v=0\r\n"}"#.to_vec(),
        br#"{"type":7,"sdp":[]}"#.to_vec(),
        br#"{"sdpMid":5,"sdpMLineIndex":"x","candidate":17}"#.to_vec(),
        br#"{"sdpMid":"0","sdpMLineIndex":99999999999,"candidate":"candidate:garbage"}"#.to_vec(),
        br#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":""}"#.to_vec(),
        br#"{"type":"answer","sdp":"this is not SDP"}"#.to_vec(),
        b"BYEBYE".to_vec(),
    ]
}
