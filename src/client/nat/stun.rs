//! The few STUN (RFC 8489) and TURN (RFC 8656) messages the client sends and reads, and
//! TURN's ChannelData framing. Written here rather than taken from a crate: we need only
//! Binding, Allocate, Refresh, CreatePermission, ChannelBind and Send/Data indications,
//! and owning the codec keeps it on the loop's `std::time::Instant` and free of panics on
//! whatever a server or an attacker sends (every read is bounds-checked and returns None).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

// Methods.
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
const MAPPED_ADDRESS: u16 = 0x0001;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const CHANNEL_NUMBER: u16 = 0x000C;
const LIFETIME: u16 = 0x000D;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA_ATTR: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;

/// UDP, for REQUESTED-TRANSPORT.
const TRANSPORT_UDP: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

pub type TransactionId = [u8; 12];

/// One attribute we know, decoded or to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Username(String),
    Realm(String),
    Nonce(String),
    ErrorCode(u16),
    Lifetime(u32),
    ChannelNumber(u16),
    XorMappedAddress(SocketAddr),
    MappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    Data(Vec<u8>),
    RequestedTransportUdp,
}

/// A STUN message: what we build and what we parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub class: Class,
    pub method: u16,
    pub txid: TransactionId,
    pub attrs: Vec<Attr>,
    /// The parsed message carried MESSAGE-INTEGRITY that checked against the key given.
    pub integrity_ok: bool,
}

/// The long-term credential key, MD5(username ":" realm ":" password) (RFC 8489 9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

impl Message {
    pub fn request(method: u16, txid: TransactionId) -> Message {
        Message {
            class: Class::Request,
            method,
            txid,
            attrs: Vec::new(),
            integrity_ok: false,
        }
    }

    pub fn indication(method: u16, txid: TransactionId) -> Message {
        Message {
            class: Class::Indication,
            ..Message::request(method, txid)
        }
    }

    pub fn with(mut self, attr: Attr) -> Message {
        self.attrs.push(attr);
        self
    }

    /// The wire form; with a key, MESSAGE-INTEGRITY (HMAC-SHA1) is added. FINGERPRINT
    /// always ends the message.
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let class_bits: u16 = match self.class {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        };
        let m = self.method;
        let t = (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class_bits;
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.txid);
        for a in &self.attrs {
            encode_attr(a, &self.txid, &mut out);
        }
        if let Some(key) = key {
            // The length covers MESSAGE-INTEGRITY itself while the HMAC is computed.
            let len = out.len() - HEADER_LEN + 24;
            set_len(&mut out, len);
            let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
            let tag = hmac::sign(&k, &out);
            push_attr(&mut out, MESSAGE_INTEGRITY, tag.as_ref());
        }
        let len = out.len() - HEADER_LEN + 8;
        set_len(&mut out, len);
        let crc = crc32fast::hash(&out) ^ FINGERPRINT_XOR;
        push_attr(&mut out, FINGERPRINT, &crc.to_be_bytes());
        out
    }

    /// Parses a STUN message; None for anything malformed or with a wrong FINGERPRINT.
    /// With `key`, MESSAGE-INTEGRITY (when present) is checked into `integrity_ok`.
    pub fn decode(bytes: &[u8], key: Option<&[u8]>) -> Option<Message> {
        if !is_stun(bytes) {
            return None;
        }
        let t = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if bytes.len() != HEADER_LEN + len || !len.is_multiple_of(4) {
            return None;
        }
        let class = match t & 0x0110 {
            0x000 => Class::Request,
            0x010 => Class::Indication,
            0x100 => Class::Success,
            _ => Class::Error,
        };
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&bytes[8..20]);
        let mut msg = Message {
            class,
            method,
            txid,
            attrs: Vec::new(),
            integrity_ok: false,
        };
        let mut pos = HEADER_LEN;
        while pos + 4 <= bytes.len() {
            let kind = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let alen = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            let value = bytes.get(pos + 4..pos + 4 + alen)?;
            match kind {
                MESSAGE_INTEGRITY => {
                    if let (Some(key), 20) = (key, alen) {
                        let mut signed = bytes[..pos].to_vec();
                        set_len(&mut signed, pos + 24 - HEADER_LEN);
                        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
                        msg.integrity_ok = hmac::verify(&k, &signed, value).is_ok();
                    }
                }
                FINGERPRINT => {
                    let mut signed = bytes[..pos].to_vec();
                    set_len(&mut signed, pos + 8 - HEADER_LEN);
                    let want = crc32fast::hash(&signed) ^ FINGERPRINT_XOR;
                    if value != want.to_be_bytes() {
                        return None;
                    }
                }
                _ => {
                    if let Some(a) = decode_attr(kind, value, &txid) {
                        msg.attrs.push(a);
                    }
                }
            }
            pos += 4 + alen.div_ceil(4) * 4;
        }
        Some(msg)
    }

    pub fn error_code(&self) -> Option<u16> {
        self.attrs.iter().find_map(|a| match a {
            Attr::ErrorCode(c) => Some(*c),
            _ => None,
        })
    }

    /// The first attribute `pick` accepts.
    pub fn find<T>(&self, pick: impl Fn(&Attr) -> Option<T>) -> Option<T> {
        self.attrs.iter().find_map(pick)
    }
}

/// The first two bits are zero and the magic cookie is in place.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// A TURN ChannelData message: channel number 0x4000..=0x4FFF, then the length.
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The channel and payload of a ChannelData message (UDP may pad it to 4 bytes).
pub fn parse_channel_data(bytes: &[u8]) -> Option<(u16, &[u8])> {
    if bytes.len() < 4 || !(0x40..=0x4F).contains(&bytes[0]) {
        return None;
    }
    let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    Some((channel, bytes.get(4..4 + len)?))
}

fn set_len(out: &mut [u8], len: usize) {
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn encode_attr(a: &Attr, txid: &TransactionId, out: &mut Vec<u8>) {
    match a {
        Attr::Username(s) => push_attr(out, USERNAME, s.as_bytes()),
        Attr::Realm(s) => push_attr(out, REALM, s.as_bytes()),
        Attr::Nonce(s) => push_attr(out, NONCE, s.as_bytes()),
        Attr::ErrorCode(c) => {
            let v = [0, 0, (c / 100) as u8, (c % 100) as u8];
            push_attr(out, ERROR_CODE, &v)
        }
        Attr::Lifetime(s) => push_attr(out, LIFETIME, &s.to_be_bytes()),
        Attr::ChannelNumber(c) => {
            let mut v = c.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 0]);
            push_attr(out, CHANNEL_NUMBER, &v)
        }
        Attr::XorMappedAddress(addr) => push_attr(out, XOR_MAPPED_ADDRESS, &xor_addr(*addr, txid)),
        Attr::XorPeerAddress(addr) => push_attr(out, XOR_PEER_ADDRESS, &xor_addr(*addr, txid)),
        Attr::XorRelayedAddress(addr) => {
            push_attr(out, XOR_RELAYED_ADDRESS, &xor_addr(*addr, txid))
        }
        Attr::MappedAddress(addr) => push_attr(out, MAPPED_ADDRESS, &plain_addr(*addr)),
        Attr::Data(d) => push_attr(out, DATA_ATTR, d),
        Attr::RequestedTransportUdp => {
            push_attr(out, REQUESTED_TRANSPORT, &[TRANSPORT_UDP, 0, 0, 0])
        }
    }
}

fn decode_attr(kind: u16, v: &[u8], txid: &TransactionId) -> Option<Attr> {
    let text = || Some(String::from_utf8_lossy(v).into_owned());
    Some(match kind {
        USERNAME => Attr::Username(text()?),
        REALM => Attr::Realm(text()?),
        NONCE => Attr::Nonce(text()?),
        ERROR_CODE if v.len() >= 4 => {
            Attr::ErrorCode(u16::from(v[2] & 0x7) * 100 + u16::from(v[3] % 100))
        }
        LIFETIME if v.len() == 4 => Attr::Lifetime(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        CHANNEL_NUMBER if v.len() == 4 => Attr::ChannelNumber(u16::from_be_bytes([v[0], v[1]])),
        XOR_MAPPED_ADDRESS => Attr::XorMappedAddress(read_xor_addr(v, txid)?),
        XOR_PEER_ADDRESS => Attr::XorPeerAddress(read_xor_addr(v, txid)?),
        XOR_RELAYED_ADDRESS => Attr::XorRelayedAddress(read_xor_addr(v, txid)?),
        MAPPED_ADDRESS => Attr::MappedAddress(read_plain_addr(v)?),
        DATA_ATTR => Attr::Data(v.to_vec()),
        _ => return None,
    })
}

fn plain_addr(addr: SocketAddr) -> Vec<u8> {
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&addr.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&addr.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

fn read_plain_addr(v: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    let ip: IpAddr = match v.get(1)? {
        1 => {
            let o: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            Ipv4Addr::from(o).into()
        }
        2 => {
            let o: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            Ipv6Addr::from(o).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// XOR with the cookie (and, for IPv6, the transaction id): its own inverse.
fn xor_bytes(v: &mut [u8], txid: &TransactionId) {
    let mask: Vec<u8> = MAGIC_COOKIE
        .to_be_bytes()
        .iter()
        .chain(txid.iter())
        .copied()
        .collect();
    if v.len() >= 4 {
        v[2] ^= mask[0];
        v[3] ^= mask[1];
    }
    for (b, m) in v.iter_mut().skip(4).zip(mask.iter()) {
        *b ^= m;
    }
}

fn xor_addr(addr: SocketAddr, txid: &TransactionId) -> Vec<u8> {
    let mut v = plain_addr(addr);
    xor_bytes(&mut v, txid);
    v
}

fn read_xor_addr(v: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    let mut v = v.to_vec();
    xor_bytes(&mut v, txid);
    read_plain_addr(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn a_message_round_trips_with_integrity_and_fingerprint() {
        let key = long_term_key("alice", "test.local", "secret");
        let peer: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let m = Message::request(CREATE_PERMISSION, TX)
            .with(Attr::XorPeerAddress(peer))
            .with(Attr::XorRelayedAddress(v6))
            .with(Attr::Username("alice".into()))
            .with(Attr::Nonce("abc".into()));
        let bytes = m.encode(Some(&key));
        let back = Message::decode(&bytes, Some(&key)).unwrap();
        assert!(back.integrity_ok);
        assert_eq!(back.method, CREATE_PERMISSION);
        assert_eq!(back.class, Class::Request);
        assert_eq!(back.attrs, m.attrs);
        let wrong = long_term_key("alice", "test.local", "nope");
        assert!(!Message::decode(&bytes, Some(&wrong)).unwrap().integrity_ok);
    }

    #[test]
    fn the_rfc_5769_response_decodes() {
        // RFC 5769 2.2: a Binding success with XOR-MAPPED-ADDRESS 192.0.2.1:32853, a
        // SOFTWARE attribute, MESSAGE-INTEGRITY (key "VOkJxbRl1RmTxUk/WvJxBt") and
        // FINGERPRINT.
        let hex = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 \
                   20766563 746f7220 00200008 0001a147 e112a643 00080014 \
                   2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7 80280004 c07d4c96";
        let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let m = Message::decode(&bytes, Some(b"VOkJxbRl1RmTxUk/WvJxBt")).unwrap();
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.method, BINDING);
        assert!(m.integrity_ok);
        assert_eq!(
            m.find(|a| match a {
                Attr::XorMappedAddress(a) => Some(*a),
                _ => None,
            }),
            Some("192.0.2.1:32853".parse().unwrap())
        );
    }

    #[test]
    fn garbage_never_panics_and_is_refused() {
        let good = Message::request(BINDING, TX).encode(None);
        assert!(Message::decode(&good, None).is_some());
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n], None).is_none());
        }
        let mut flipped = good.clone();
        flipped[good.len() - 1] ^= 1;
        assert!(Message::decode(&flipped, None).is_none(), "bad fingerprint");
        // Attribute lengths that run past the end, on every byte value.
        for b in 0..=255u8 {
            let mut m = good.clone();
            m[HEADER_LEN + 3] = b;
            let _ = Message::decode(&m, None);
            let mut cd = vec![0x40, 0x00, 0xff, b];
            cd.extend_from_slice(&[0; 8]);
            assert!(parse_channel_data(&cd).is_none());
        }
    }

    #[test]
    fn channel_data_round_trips() {
        let framed = channel_data(0x4001, b"hello");
        assert_eq!(parse_channel_data(&framed), Some((0x4001, &b"hello"[..])));
        let mut padded = framed.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(parse_channel_data(&padded), Some((0x4001, &b"hello"[..])));
        assert!(parse_channel_data(&[0x01, 0, 0, 0]).is_none());
    }
}
