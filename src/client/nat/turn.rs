//! One TURN allocation (RFC 8656) as a state machine, over UDP or TCP alike (the bytes
//! are the same; the owner frames them on a stream, and over TCP a request is sent once,
//! not retransmitted): Allocate with long-term
//! credentials (the first request goes without, the server's 401 gives realm and nonce),
//! the relayed address, permissions for each peer IP before anything is sent to it (what
//! waits for a permission is queued, so str0m's first checks are not lost), a channel per
//! peer address once its permission is in, and refreshes of all three before they expire.
//! Datagrams for a peer are wrapped (ChannelData, or a Send indication until the channel
//! is bound); datagrams from the server are unwrapped back into (peer, payload).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::stun::{self, Attr, Class, Message};
use super::transaction::{new_txid, Tick, Transaction};
use super::{Transmit, TurnTransport};

/// A permission lasts 300 s on the server; we renew it this often.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// A channel binding lasts 600 s; we renew it this often.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// The allocation is refreshed this long before its lifetime ends.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Datagrams kept per peer IP while its permission is being created.
const MAX_QUEUED: usize = 16;
/// Re-sends of one request with fresh credentials (401, 438) before giving up.
const MAX_AUTH_RETRIES: u8 = 2;
const FIRST_CHANNEL: u16 = 0x4000;
const LAST_CHANNEL: u16 = 0x4FFF;

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Allocate,
    Refresh,
    Permission(IpAddr),
    ChannelBind(SocketAddr, u16),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    tx: Transaction,
    auth_retries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    Failed,
}

#[derive(Debug)]
struct Permission {
    installed: bool,
    refresh_at: Option<Instant>,
    queued: Vec<(SocketAddr, Vec<u8>)>,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Option<Instant>,
}

/// What the allocation tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The relayed address, and our address as the server saw it.
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
    },
    /// The allocation is gone or never came (the reason is for a log line).
    Failed(String),
}

/// One allocation on one TURN server, from one local socket.
#[derive(Debug)]
pub struct TurnAllocation {
    base: SocketAddr,
    server: SocketAddr,
    transport: TurnTransport,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    state: State,
    pending: Vec<Pending>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    by_number: HashMap<u16, SocketAddr>,
    next_channel: u16,
    out: VecDeque<Transmit>,
    events: VecDeque<TurnEvent>,
}

impl TurnAllocation {
    /// Starts allocating on `server` from the local socket `base` (over TCP, `base` names
    /// the host socket the relayed candidate belongs to; the owner carries the bytes on
    /// its connection from that address).
    pub fn new(
        base: SocketAddr,
        server: SocketAddr,
        transport: TurnTransport,
        username: &str,
        password: &str,
        now: Instant,
    ) -> TurnAllocation {
        let mut a = TurnAllocation {
            base,
            server,
            transport,
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
            nonce: None,
            key: None,
            state: State::Allocating,
            pending: Vec::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_number: HashMap::new(),
            next_channel: FIRST_CHANNEL,
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        a.request(Purpose::Allocate, 0, now);
        a
    }

    pub fn base(&self) -> SocketAddr {
        self.base
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn transport(&self) -> TurnTransport {
        self.transport
    }

    /// The connection to the server closed or never opened (TCP): the server drops an
    /// allocation with its connection, so this one is gone.
    pub fn connection_lost(&mut self, why: &str) {
        self.fail(format!("connection lost: {why}"));
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.pending.iter().map(|p| p.tx.deadline()).min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        };
        if let State::Allocated { refresh_at, .. } = self.state {
            consider(Some(refresh_at));
            for p in self.permissions.values() {
                consider(p.refresh_at);
            }
            for c in self.channels.values() {
                consider(c.refresh_at);
            }
        }
        at
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].tx.tick(now) {
                Tick::Wait => i += 1,
                Tick::Resend => {
                    let bytes = self.pending[i].tx.bytes.clone();
                    self.send(bytes);
                    i += 1;
                }
                Tick::TimedOut => {
                    let p = self.pending.remove(i);
                    self.request_failed(p.purpose, "no answer");
                }
            }
        }
        let State::Allocated { refresh_at, .. } = self.state else {
            return;
        };
        if refresh_at <= now && !self.is_pending(|p| p == Purpose::Refresh) {
            if let State::Allocated { relayed, .. } = self.state {
                // The answer sets the next refresh; a lost one fails the allocation.
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + REFRESH_MARGIN,
                };
            }
            self.request(Purpose::Refresh, 0, now);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            if let Some(p) = self.permissions.get_mut(&ip) {
                p.refresh_at = None;
            }
            self.request(Purpose::Permission(ip), 0, now);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.refresh_at.is_some_and(|t| t <= now))
            .map(|(peer, c)| (*peer, c.number))
            .collect();
        for (peer, number) in due {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.refresh_at = None;
            }
            self.request(Purpose::ChannelBind(peer, number), 0, now);
        }
    }

    /// Sends `data` to `peer` through the relay: at once when the peer's IP has a
    /// permission, else once it has one (the permission is asked for now).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if self.relayed().is_none() {
            return;
        }
        let ip = peer.ip();
        match self.permissions.get_mut(&ip) {
            Some(p) if p.installed => {}
            Some(p) => {
                if p.queued.len() < MAX_QUEUED {
                    p.queued.push((peer, data.to_vec()));
                }
                return;
            }
            None => {
                self.permissions.insert(
                    ip,
                    Permission {
                        installed: false,
                        refresh_at: None,
                        queued: vec![(peer, data.to_vec())],
                    },
                );
                self.request(Purpose::Permission(ip), 0, now);
                return;
            }
        }
        self.wrap(peer, data, now);
    }

    /// A ChannelData message when the peer's channel is bound, else a Send indication
    /// (and the channel is asked for).
    fn wrap(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if let Some(c) = self.channels.get(&peer) {
            if c.bound {
                let framed = stun::channel_data(c.number, data);
                return self.send(framed);
            }
        } else if self.next_channel <= LAST_CHANNEL {
            let number = self.next_channel;
            self.next_channel += 1;
            self.channels.insert(
                peer,
                Channel {
                    number,
                    bound: false,
                    refresh_at: None,
                },
            );
            self.request(Purpose::ChannelBind(peer, number), 0, now);
        }
        let ind = Message::indication(stun::SEND, new_txid())
            .with(Attr::XorPeerAddress(peer))
            .with(Attr::Data(data.to_vec()));
        self.send(ind.encode(None));
    }

    /// A datagram from the server: a response (consumed) or data from a peer, returned
    /// as (peer, payload). Anything else is dropped.
    pub fn handle_datagram(&mut self, bytes: &[u8], now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some((number, data)) = stun::parse_channel_data(bytes) {
            let peer = *self.by_number.get(&number)?;
            return Some((peer, data.to_vec()));
        }
        let key = self.key;
        let msg = Message::decode(bytes, key.as_ref().map(|k| &k[..]))?;
        if msg.class == Class::Indication && msg.method == stun::DATA {
            let peer = msg.find(|a| match a {
                Attr::XorPeerAddress(p) => Some(*p),
                _ => None,
            })?;
            if !self
                .permissions
                .get(&peer.ip())
                .is_some_and(|p| p.installed)
            {
                return None;
            }
            let data = msg.find(|a| match a {
                Attr::Data(d) => Some(d.clone()),
                _ => None,
            })?;
            return Some((peer, data));
        }
        if matches!(msg.class, Class::Success | Class::Error) {
            self.response(msg, now);
        }
        None
    }

    fn is_pending(&self, f: impl Fn(Purpose) -> bool) -> bool {
        self.pending.iter().any(|p| f(p.purpose))
    }

    fn send(&mut self, contents: Vec<u8>) {
        self.out.push_back(Transmit {
            source: self.base,
            destination: self.server,
            contents,
        });
    }

    fn request(&mut self, purpose: Purpose, auth_retries: u8, now: Instant) {
        let txid = new_txid();
        let method = match purpose {
            Purpose::Allocate => stun::ALLOCATE,
            Purpose::Refresh => stun::REFRESH,
            Purpose::Permission(_) => stun::CREATE_PERMISSION,
            Purpose::ChannelBind(..) => stun::CHANNEL_BIND,
        };
        let mut m = Message::request(method, txid);
        match purpose {
            Purpose::Allocate => m = m.with(Attr::RequestedTransportUdp),
            Purpose::Refresh => {}
            Purpose::Permission(ip) => m = m.with(Attr::XorPeerAddress(SocketAddr::new(ip, 0))),
            Purpose::ChannelBind(peer, number) => {
                m = m
                    .with(Attr::ChannelNumber(number))
                    .with(Attr::XorPeerAddress(peer))
            }
        }
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            m = m
                .with(Attr::Username(self.username.clone()))
                .with(Attr::Realm(realm.clone()))
                .with(Attr::Nonce(nonce.clone()));
        }
        let bytes = m.encode(self.key.as_ref().map(|k| &k[..]));
        self.send(bytes.clone());
        self.pending.push(Pending {
            purpose,
            tx: match self.transport {
                TurnTransport::Udp => Transaction::start(txid, bytes, now),
                TurnTransport::Tcp => Transaction::start_reliable(txid, bytes, now),
            },
            auth_retries,
        });
    }

    fn response(&mut self, msg: Message, now: Instant) {
        let Some(i) = self.pending.iter().position(|p| p.tx.txid == msg.txid) else {
            return;
        };
        if msg.class == Class::Success && self.key.is_some() && !msg.integrity_ok {
            log::debug!(
                "TURN {}: a response without valid integrity, ignored",
                self.server
            );
            return;
        }
        let p = self.pending.remove(i);
        if msg.class == Class::Error {
            return self.error(p, &msg, now);
        }
        match p.purpose {
            Purpose::Allocate => {
                let relayed = msg.find(|a| match a {
                    Attr::XorRelayedAddress(r) => Some(*r),
                    _ => None,
                });
                let Some(relayed) = relayed else {
                    return self.fail("the Allocate answer has no relayed address".into());
                };
                let mapped = msg.find(|a| match a {
                    Attr::XorMappedAddress(r) => Some(*r),
                    _ => None,
                });
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + refresh_after(&msg),
                };
                log::info!("TURN {}: relayed address {relayed}", self.server);
                self.events
                    .push_back(TurnEvent::Allocated { relayed, mapped });
            }
            Purpose::Refresh => {
                if let State::Allocated { relayed, .. } = self.state {
                    self.state = State::Allocated {
                        relayed,
                        refresh_at: now + refresh_after(&msg),
                    };
                }
            }
            Purpose::Permission(ip) => {
                let queued = match self.permissions.get_mut(&ip) {
                    Some(perm) => {
                        perm.installed = true;
                        perm.refresh_at = Some(now + PERMISSION_REFRESH);
                        std::mem::take(&mut perm.queued)
                    }
                    None => Vec::new(),
                };
                for (peer, data) in queued {
                    self.wrap(peer, &data, now);
                }
            }
            Purpose::ChannelBind(peer, number) => {
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.bound = true;
                    c.refresh_at = Some(now + CHANNEL_REFRESH);
                    self.by_number.insert(number, peer);
                }
            }
        }
    }

    fn error(&mut self, p: Pending, msg: &Message, now: Instant) {
        let code = msg.error_code().unwrap_or(0);
        let realm = msg.find(|a| match a {
            Attr::Realm(r) => Some(r.clone()),
            _ => None,
        });
        let nonce = msg.find(|a| match a {
            Attr::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        if matches!(code, 401 | 438) && p.auth_retries < MAX_AUTH_RETRIES {
            if let Some(nonce) = nonce {
                if let Some(realm) = realm {
                    self.key = Some(stun::long_term_key(&self.username, &realm, &self.password));
                    self.realm = Some(realm);
                }
                self.nonce = Some(nonce);
                if self.realm.is_some() {
                    return self.request(p.purpose, p.auth_retries + 1, now);
                }
            }
        }
        let why = format!("error {code}");
        self.request_failed(p.purpose, &why);
    }

    fn request_failed(&mut self, purpose: Purpose, why: &str) {
        match purpose {
            Purpose::Allocate | Purpose::Refresh => {
                self.fail(format!("{purpose:?} failed: {why}"));
            }
            Purpose::Permission(ip) => {
                log::warn!("TURN {}: no permission for {ip}: {why}", self.server);
                self.permissions.remove(&ip);
            }
            Purpose::ChannelBind(peer, number) => {
                // Send indications go on carrying the peer's data.
                log::info!("TURN {}: no channel for {peer}: {why}", self.server);
                self.by_number.remove(&number);
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.bound = false;
                }
            }
        }
    }

    fn fail(&mut self, why: String) {
        if self.state == State::Failed {
            return;
        }
        log::warn!("TURN {}: {why}", self.server);
        self.state = State::Failed;
        self.pending.clear();
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        self.events.push_back(TurnEvent::Failed(why));
    }
}

/// When to refresh an allocation whose answer carried `msg`'s LIFETIME (600 s if none).
fn refresh_after(msg: &Message) -> Duration {
    let lifetime = msg
        .find(|a| match a {
            Attr::Lifetime(s) => Some(Duration::from_secs((*s).into())),
            _ => None,
        })
        .unwrap_or(Duration::from_secs(600));
    if lifetime > 2 * REFRESH_MARGIN {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

/// A server's answer to a request, for tests and for the lab-less checks of the
/// gatherer: the success or error `class` with `attrs`, signed with `key`.
#[cfg(test)]
pub fn answer(request: &[u8], class: Class, attrs: Vec<Attr>, key: Option<&[u8]>) -> Vec<u8> {
    let req = Message::decode(request, None).expect("a request");
    Message {
        class,
        method: req.method,
        txid: req.txid,
        attrs,
        integrity_ok: false,
    }
    .encode(key)
}

#[cfg(test)]
pub(super) fn request_of(bytes: &[u8]) -> (u16, stun::TransactionId) {
    let m = Message::decode(bytes, None).expect("a request");
    (m.method, m.txid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "alice";
    const PASS: &str = "secret";
    const REALM: &str = "test.local";

    fn addrs() -> (SocketAddr, SocketAddr, SocketAddr, SocketAddr) {
        (
            "10.1.1.2:5000".parse().unwrap(),
            "203.0.113.1:3478".parse().unwrap(),
            "203.0.113.1:49160".parse().unwrap(),
            "203.0.113.20:6000".parse().unwrap(),
        )
    }

    fn key() -> [u8; 16] {
        stun::long_term_key(USER, REALM, PASS)
    }

    /// Allocates: 401 with realm and nonce, then success with the relayed address.
    fn allocated(now: Instant) -> TurnAllocation {
        let (base, server, relayed, _) = addrs();
        let mut a = TurnAllocation::new(base, server, TurnTransport::Udp, USER, PASS, now);
        let first = a.poll_transmit().unwrap();
        assert_eq!((first.source, first.destination), (base, server));
        let m = Message::decode(&first.contents, None).unwrap();
        assert_eq!(m.method, stun::ALLOCATE);
        assert!(m
            .find(|a| matches!(a, Attr::Username(_)).then_some(()))
            .is_none());
        let challenge = answer(
            &first.contents,
            Class::Error,
            vec![
                Attr::ErrorCode(401),
                Attr::Realm(REALM.into()),
                Attr::Nonce("n1".into()),
            ],
            None,
        );
        assert_eq!(a.handle_datagram(&challenge, now), None);
        let second = a.poll_transmit().unwrap();
        let m = Message::decode(&second.contents, Some(&key())).unwrap();
        assert!(m.integrity_ok, "the retry is signed with the long-term key");
        assert_eq!(
            m.find(|a| match a {
                Attr::Username(u) => Some(u.clone()),
                _ => None,
            }),
            Some(USER.into())
        );
        let ok = answer(
            &second.contents,
            Class::Success,
            vec![
                Attr::XorRelayedAddress(relayed),
                Attr::XorMappedAddress("198.51.100.9:7000".parse().unwrap()),
                Attr::Lifetime(600),
            ],
            Some(&key()),
        );
        a.handle_datagram(&ok, now);
        assert_eq!(
            a.poll_event(),
            Some(TurnEvent::Allocated {
                relayed,
                mapped: Some("198.51.100.9:7000".parse().unwrap())
            })
        );
        a
    }

    #[test]
    fn data_waits_for_the_permission_then_goes_by_send_then_by_channel() {
        let t0 = Instant::now();
        let (_, _, _, peer) = addrs();
        let mut a = allocated(t0);
        a.send_to(peer, b"check-1", t0);
        a.send_to(peer, b"check-2", t0);
        let perm = a.poll_transmit().unwrap();
        let (method, _) = request_of(&perm.contents);
        assert_eq!(method, stun::CREATE_PERMISSION);
        assert!(
            a.poll_transmit().is_none(),
            "nothing goes before the permission"
        );
        a.handle_datagram(
            &answer(&perm.contents, Class::Success, vec![], Some(&key())),
            t0,
        );
        // The queue goes out as Send indications, and a channel is asked for.
        let mut sends = 0;
        let mut bind = None;
        while let Some(t) = a.poll_transmit() {
            let m = Message::decode(&t.contents, None).unwrap();
            match m.method {
                stun::SEND => sends += 1,
                stun::CHANNEL_BIND => bind = Some(t.contents),
                other => panic!("unexpected method {other}"),
            }
        }
        assert_eq!(sends, 2);
        let bind = bind.expect("a ChannelBind");
        a.handle_datagram(&answer(&bind, Class::Success, vec![], Some(&key())), t0);
        a.send_to(peer, b"media", t0);
        let t = a.poll_transmit().unwrap();
        assert_eq!(
            stun::parse_channel_data(&t.contents),
            Some((0x4000, &b"media"[..]))
        );
        // Inbound: ChannelData and Data indications unwrap to the peer.
        let cd = stun::channel_data(0x4000, b"back");
        assert_eq!(a.handle_datagram(&cd, t0), Some((peer, b"back".to_vec())));
        let ind = Message::indication(stun::DATA, [7; 12])
            .with(Attr::XorPeerAddress(peer))
            .with(Attr::Data(b"ind".to_vec()))
            .encode(None);
        assert_eq!(a.handle_datagram(&ind, t0), Some((peer, b"ind".to_vec())));
        // Data from an address with no permission, or an unknown channel, is dropped.
        let stranger: SocketAddr = "192.0.2.66:1".parse().unwrap();
        let ind = Message::indication(stun::DATA, [7; 12])
            .with(Attr::XorPeerAddress(stranger))
            .with(Attr::Data(b"x".to_vec()))
            .encode(None);
        assert_eq!(a.handle_datagram(&ind, t0), None);
        assert_eq!(
            a.handle_datagram(&stun::channel_data(0x4009, b"x"), t0),
            None
        );
    }

    #[test]
    fn allocation_permissions_and_channels_are_refreshed_before_they_expire() {
        let t0 = Instant::now();
        let (_, _, _, peer) = addrs();
        let mut a = allocated(t0);
        a.send_to(peer, b"x", t0);
        let perm = a.poll_transmit().unwrap();
        a.handle_datagram(
            &answer(&perm.contents, Class::Success, vec![], Some(&key())),
            t0,
        );
        while let Some(t) = a.poll_transmit() {
            if request_of(&t.contents).0 == stun::CHANNEL_BIND {
                a.handle_datagram(
                    &answer(&t.contents, Class::Success, vec![], Some(&key())),
                    t0,
                );
            }
        }
        // Walk the virtual clock to each deadline for 20 minutes; note what is sent.
        let mut now;
        let mut seen: Vec<(u64, u16)> = Vec::new();
        while let Some(at) = a.poll_timeout() {
            if at > t0 + Duration::from_secs(1200) {
                break;
            }
            now = at;
            a.handle_timeout(now);
            while let Some(t) = a.poll_transmit() {
                let method = request_of(&t.contents).0;
                seen.push(((now - t0).as_secs(), method));
                let ok = answer(
                    &t.contents,
                    Class::Success,
                    vec![Attr::Lifetime(600)],
                    Some(&key()),
                );
                a.handle_datagram(&ok, now);
            }
        }
        let at = |m| {
            seen.iter()
                .filter(|s| s.1 == m)
                .map(|s| s.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(stun::REFRESH), [540, 1080]);
        assert_eq!(at(stun::CREATE_PERMISSION), [240, 480, 720, 960, 1200]);
        assert_eq!(at(stun::CHANNEL_BIND), [540, 1080]);
        assert!(a.relayed().is_some());
    }

    #[test]
    fn a_stale_nonce_is_renewed_and_a_silent_server_fails_the_allocation() {
        let t0 = Instant::now();
        let mut a = allocated(t0);
        let peer = addrs().3;
        a.send_to(peer, b"x", t0);
        let perm = a.poll_transmit().unwrap();
        let stale = answer(
            &perm.contents,
            Class::Error,
            vec![Attr::ErrorCode(438), Attr::Nonce("n2".into())],
            None,
        );
        a.handle_datagram(&stale, t0);
        let again = a.poll_transmit().unwrap();
        let m = Message::decode(&again.contents, Some(&key())).unwrap();
        assert!(m.integrity_ok);
        assert!(m.attrs.contains(&Attr::Nonce("n2".into())));

        let (base, server, ..) = addrs();
        let mut b = TurnAllocation::new(base, server, TurnTransport::Udp, USER, PASS, t0);
        assert!(b.poll_transmit().is_some());
        let mut sends = 0;
        while let Some(at) = b.poll_timeout() {
            b.handle_timeout(at);
            while b.poll_transmit().is_some() {
                sends += 1;
            }
        }
        assert_eq!(sends, 6 - 1, "retransmissions after the first send");
        assert!(b.is_failed());
        assert!(matches!(b.poll_event(), Some(TurnEvent::Failed(_))));
    }

    /// Over TCP a request is sent once (RFC 8489 6.2.2): an unanswered Allocate fails
    /// after 39.5 s with no resend; a lost connection fails an allocation at once.
    #[test]
    fn over_tcp_requests_are_not_resent_and_a_lost_connection_fails_the_allocation() {
        let t0 = Instant::now();
        let (base, server, ..) = addrs();
        let mut a = TurnAllocation::new(base, server, TurnTransport::Tcp, USER, PASS, t0);
        assert!(a.poll_transmit().is_some());
        let mut resends = 0;
        let mut now = t0;
        while let Some(at) = a.poll_timeout() {
            now = at;
            a.handle_timeout(now);
            while a.poll_transmit().is_some() {
                resends += 1;
            }
        }
        assert_eq!(resends, 0);
        assert_eq!(now - t0, Duration::from_millis(39_500));
        assert!(a.is_failed());
        assert!(matches!(a.poll_event(), Some(TurnEvent::Failed(_))));

        let mut b = TurnAllocation::new(base, server, TurnTransport::Tcp, USER, PASS, t0);
        b.poll_transmit();
        b.connection_lost("connection refused");
        assert!(b.is_failed());
        let Some(TurnEvent::Failed(why)) = b.poll_event() else {
            panic!("a failure");
        };
        assert!(why.contains("connection refused"), "{why}");
        assert_eq!(b.poll_timeout(), None, "nothing pending after the failure");
    }

    #[test]
    fn forged_or_garbled_answers_are_ignored() {
        let t0 = Instant::now();
        let (base, server, relayed, _) = addrs();
        let mut a = TurnAllocation::new(base, server, TurnTransport::Udp, USER, PASS, t0);
        let first = a.poll_transmit().unwrap();
        // An answer to another transaction, junk, and truncations: nothing happens.
        let other = Message {
            class: Class::Success,
            method: stun::ALLOCATE,
            txid: [9; 12],
            attrs: vec![Attr::XorRelayedAddress(relayed)],
            integrity_ok: false,
        }
        .encode(None);
        assert_eq!(a.handle_datagram(&other, t0), None);
        let challenge = answer(
            &first.contents,
            Class::Error,
            vec![
                Attr::ErrorCode(401),
                Attr::Realm(REALM.into()),
                Attr::Nonce("n".into()),
            ],
            None,
        );
        for n in 0..challenge.len() {
            assert_eq!(a.handle_datagram(&challenge[..n], t0), None);
        }
        a.handle_datagram(&challenge, t0);
        let second = a.poll_transmit().unwrap();
        // A success signed with the wrong key is not believed.
        let forged = answer(
            &second.contents,
            Class::Success,
            vec![Attr::XorRelayedAddress(relayed)],
            Some(b"wrong key"),
        );
        a.handle_datagram(&forged, t0);
        assert_eq!(a.relayed(), None);
        assert_eq!(a.poll_event(), None);
    }
}
