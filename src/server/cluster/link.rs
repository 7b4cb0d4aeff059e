//! One connection to Redis as a state machine without IO: the loop connects, writes what
//! [`RedisLink::output`] holds, feeds what it reads to [`RedisLink::received`], and reports
//! a broken socket with [`RedisLink::disconnected`]. Commands are pipelined; each reply is
//! matched to its command by order, through the tag given with it. A link in subscriber
//! mode hands everything after its handshake out as pushes.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::resp::{self, Value};

/// Where Redis is: `redis://[:PASSWORD@]HOST:PORT[/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: u32,
}

impl RedisUrl {
    /// Parses the URL; the error names what is wrong with it.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let bad = |why: &str| {
            format!("--redis {url:?}: {why} (expected redis://[:PASSWORD@]HOST:PORT[/DB])")
        };
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| bad("not a redis:// URL"))?;
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hostport)) => (Some(auth), hostport),
            None => (None, rest),
        };
        let password = match auth {
            None => None,
            Some(a) => {
                let p = a.strip_prefix(':').unwrap_or(a);
                if p.is_empty() {
                    return Err(bad("empty password"));
                }
                Some(p.to_string())
            }
        };
        let (hostport, db) = match hostport.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| bad("the database is not a number"))?,
            ),
            None => (hostport, 0),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if host.is_empty() || port == 0 {
            return Err(bad("empty host or port 0"));
        }
        Ok(RedisUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            password,
            db,
        })
    }
}

/// What a reply answers.
#[derive(Debug)]
enum Expect<T> {
    Handshake,
    Reply(T),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket; the loop may connect from `retry_at` on.
    Down {
        retry_at: Instant,
    },
    /// Socket made, AUTH/SELECT sent, replies outstanding.
    Handshaking,
    Up,
}

/// What came of bytes read.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent<T> {
    /// The handshake is done: commands may be sent.
    Up,
    /// The reply to the command sent with this tag.
    Reply(T, Value),
    /// A subscriber link's message (or subscribe confirmation).
    Push(Value),
}

/// Why the link must be dropped (the loop closes the socket and calls `disconnected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One Redis connection's protocol state.
#[derive(Debug)]
pub struct RedisLink<T> {
    url: RedisUrl,
    subscriber: bool,
    state: State,
    backoff: Duration,
    output: Vec<u8>,
    input: Vec<u8>,
    pending: VecDeque<Expect<T>>,
}

impl<T> RedisLink<T> {
    pub fn new(url: RedisUrl, subscriber: bool, now: Instant) -> RedisLink<T> {
        RedisLink {
            url,
            subscriber,
            state: State::Down { retry_at: now },
            backoff: FIRST_BACKOFF,
            output: Vec::new(),
            input: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Down and due for a connection attempt.
    pub fn wants_connect(&self, now: Instant) -> bool {
        matches!(self.state, State::Down { retry_at } if retry_at <= now)
    }

    /// When the loop must next look at this link (a reconnect attempt).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// The loop made a socket (connect in progress): the handshake is queued at once, since
    /// Redis reads what was written once the connection completes.
    pub fn connecting(&mut self) {
        self.output.clear();
        self.input.clear();
        self.pending.clear();
        self.state = State::Handshaking;
        if let Some(password) = &self.url.password {
            resp::encode_command(&mut self.output, &[b"AUTH", password.as_bytes()]);
            self.pending.push_back(Expect::Handshake);
        }
        if self.url.db != 0 {
            let db = self.url.db.to_string();
            resp::encode_command(&mut self.output, &[b"SELECT", db.as_bytes()]);
            self.pending.push_back(Expect::Handshake);
        }
        // A PING either way, so "up" always means Redis answered.
        resp::encode_command(&mut self.output, &[b"PING"]);
        self.pending.push_back(Expect::Handshake);
    }

    /// The socket broke or was closed: the tags of unanswered commands come back (their
    /// effect on Redis is unknown), and a reconnect is due after the back-off.
    pub fn disconnected(&mut self, now: Instant) -> Vec<T> {
        let lost = std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|e| match e {
                Expect::Reply(t) => Some(t),
                Expect::Handshake => None,
            })
            .collect();
        if self.state == State::Up {
            self.backoff = FIRST_BACKOFF;
        }
        self.state = State::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.output.clear();
        self.input.clear();
        lost
    }

    /// Queues a command; false (and nothing queued) unless the link is up.
    pub fn send(&mut self, args: &[&[u8]], tag: T) -> bool {
        if self.state != State::Up {
            return false;
        }
        resp::encode_command(&mut self.output, args);
        // A subscriber's confirmations arrive as pushes, not as replies.
        if !self.subscriber {
            self.pending.push_back(Expect::Reply(tag));
        }
        true
    }

    /// Bytes waiting to be written; the loop drains what it wrote.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Commands sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Takes bytes read from the socket.
    pub fn received(
        &mut self,
        bytes: &[u8],
        events: &mut Vec<LinkEvent<T>>,
    ) -> Result<(), LinkError> {
        self.input.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match resp::decode(&self.input[at..]) {
                Ok(None) => break Ok(()),
                Err(e) => break Err(LinkError(e.to_string())),
                Ok(Some((value, n))) => {
                    at += n;
                    if let Err(e) = self.reply(value, events) {
                        break Err(e);
                    }
                }
            }
        };
        self.input.drain(..at);
        result
    }

    fn reply(&mut self, value: Value, events: &mut Vec<LinkEvent<T>>) -> Result<(), LinkError> {
        match self.pending.front() {
            Some(Expect::Handshake) => {
                self.pending.pop_front();
                if let Value::Error(e) = &value {
                    return Err(LinkError(format!(
                        "Redis refused the handshake: {}",
                        String::from_utf8_lossy(e)
                    )));
                }
                if !self.pending.iter().any(|e| matches!(e, Expect::Handshake)) {
                    self.state = State::Up;
                    self.backoff = FIRST_BACKOFF;
                    events.push(LinkEvent::Up);
                }
                Ok(())
            }
            _ if self.subscriber => {
                events.push(LinkEvent::Push(value));
                Ok(())
            }
            Some(Expect::Reply(_)) => {
                if let Some(Expect::Reply(tag)) = self.pending.pop_front() {
                    events.push(LinkEvent::Reply(tag, value));
                }
                Ok(())
            }
            None => Err(LinkError("a reply from Redis to no command".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(password: Option<&str>, db: u32) -> RedisUrl {
        RedisUrl {
            host: "127.0.0.1".into(),
            port: 6379,
            password: password.map(str::to_string),
            db,
        }
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379"), Ok(url(None, 0)));
        assert_eq!(
            RedisUrl::parse("redis://:s3cret@127.0.0.1:6379/2"),
            Ok(url(Some("s3cret"), 2))
        );
        for bad in [
            "http://x:1",
            "redis://host",
            "redis://h:0",
            "redis://h:1/x",
            "redis://:@h:1",
            "redis://h:99999",
        ] {
            let e = RedisUrl::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn handshake_then_pipelined_replies_match_in_order() {
        let t0 = Instant::now();
        let mut link = RedisLink::new(url(Some("pw"), 3), false, t0);
        assert!(link.wants_connect(t0));
        assert!(!link.send(&[b"PING"], 0));
        link.connecting();
        let hello = std::mem::take(link.output());
        assert!(
            hello.starts_with(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n")
        );
        let mut ev = Vec::new();
        link.received(b"+OK\r\n+OK\r\n+PO", &mut ev).unwrap();
        assert!(ev.is_empty() && !link.is_up());
        link.received(b"NG\r\n", &mut ev).unwrap();
        assert_eq!(ev, [LinkEvent::Up]);
        ev.clear();
        assert!(link.send(&[b"INCR", b"k"], 1));
        assert!(link.send(&[b"GET", b"k"], 2));
        link.received(b":1\r\n$1\r\n1\r\n", &mut ev).unwrap();
        assert_eq!(
            ev,
            [
                LinkEvent::Reply(1, Value::Int(1)),
                LinkEvent::Reply(2, Value::Bulk(Some(b"1".to_vec())))
            ]
        );
    }

    #[test]
    fn refused_auth_garbage_and_stray_replies_drop_the_link_with_backoff() {
        let t0 = Instant::now();
        let mut link: RedisLink<u8> = RedisLink::new(url(Some("pw"), 0), false, t0);
        link.connecting();
        let mut ev = Vec::new();
        assert!(link.received(b"-WRONGPASS no\r\n", &mut ev).is_err());
        link.disconnected(t0);
        assert_eq!(link.poll_timeout(), Some(t0 + FIRST_BACKOFF));
        link.connecting();
        assert!(link.received(b"!!\r\n", &mut ev).is_err());
        link.disconnected(t0);
        assert_eq!(link.poll_timeout(), Some(t0 + FIRST_BACKOFF * 2));
        link.connecting();
        link.received(b"+OK\r\n+PONG\r\n", &mut ev).unwrap();
        assert!(link.is_up());
        assert!(link.received(b"+extra\r\n", &mut ev).is_err());
        // Unanswered commands come back to the caller on a drop.
        link.connecting();
        link.received(b"+OK\r\n+PONG\r\n", &mut ev).unwrap();
        link.send(&[b"GET", b"a"], 7);
        assert_eq!(link.disconnected(t0), vec![7]);
        assert_eq!(
            link.poll_timeout(),
            Some(t0 + FIRST_BACKOFF),
            "back-off reset after being up"
        );
    }

    #[test]
    fn a_subscriber_hands_out_pushes() {
        let t0 = Instant::now();
        let mut link: RedisLink<()> = RedisLink::new(url(None, 0), true, t0);
        link.connecting();
        let mut ev = Vec::new();
        link.received(
            b"+PONG\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n",
            &mut ev,
        )
        .unwrap();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[1], LinkEvent::Push(Value::Array(Some(v))) if v.len() == 3));
    }
}
