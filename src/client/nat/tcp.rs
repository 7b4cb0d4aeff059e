//! TURN over TCP, the stream's side: the one place that frames and unframes (RFC 8656
//! 12.5: on a stream, STUN messages and ChannelData messages follow each other, each
//! framed by its own length field, and ChannelData is padded to a multiple of 4 bytes).
//! Like the other machines it owns no socket: the loop reads into it and writes from it.
//!
//! The write side is bounded: media must not queue behind a stalled connection for
//! seconds, and the loop must never block. A relayed packet (ChannelData or a Send
//! indication) that does not fit in [`MAX_PENDING`] is dropped, as a full UDP send buffer
//! drops a datagram (str0m's congestion control sees the loss); a STUN request or its
//! kin always goes in (they are few and small, and over TCP a lost one waits 39.5 s).

use super::stun;

/// Bytes queued for the connection beyond which relayed media is dropped (about 200 ms
/// of a 2.5 Mbit/s call).
pub const MAX_PENDING: usize = 64 * 1024;
/// STUN header length.
const STUN_HEADER: usize = 20;
/// ChannelData header length.
const CHANNEL_HEADER: usize = 4;

/// The bytes on the stream are neither STUN nor ChannelData: the stream cannot be
/// resynchronised and must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub String);

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length on the stream of the message whose first four bytes are `head`.
pub fn frame_len(head: [u8; 4]) -> Result<usize, FramingError> {
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] {
        // STUN: the top two bits are zero and the length (attributes) a multiple of 4.
        0x00..=0x3F if len % 4 == 0 => Ok(STUN_HEADER + len),
        0x00..=0x3F => Err(FramingError(format!(
            "a STUN header with length {len}, not a multiple of 4"
        ))),
        0x40..=0x4F => Ok(CHANNEL_HEADER + len.next_multiple_of(4)),
        b => Err(FramingError(format!(
            "a message starting with {b:#04x} (neither STUN nor ChannelData)"
        ))),
    }
}

/// Whether `contents` is relayed media (dropped when the stream is full) rather than a
/// request to the server.
fn is_media(contents: &[u8]) -> bool {
    if contents.first().is_some_and(|b| (0x40..=0x4F).contains(b)) {
        return true;
    }
    // A Send indication: class bits 01 (0x0010), method 0x006.
    contents.len() >= 2 && u16::from_be_bytes([contents[0], contents[1]]) == 0x0010 | stun::SEND
}

/// One TCP connection's buffers to a TURN server.
#[derive(Debug, Default)]
pub struct TurnStream {
    read: Vec<u8>,
    read_pos: usize,
    write: Vec<u8>,
    write_pos: usize,
    /// Relayed packets dropped because the connection was not taking bytes fast enough.
    pub dropped: u64,
}

impl TurnStream {
    pub fn new() -> TurnStream {
        TurnStream::default()
    }

    /// Queues one message for the server, padded as the stream wants it. False when it
    /// was relayed media and the queue was full (dropped).
    pub fn queue(&mut self, contents: &[u8]) -> bool {
        if is_media(contents) && self.pending() + contents.len() > MAX_PENDING {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                log::debug!(
                    "TURN over TCP: {} relayed packets dropped (the connection is full)",
                    self.dropped
                );
            }
            return false;
        }
        if self.write_pos == self.write.len() {
            self.write.clear();
            self.write_pos = 0;
        }
        self.write.extend_from_slice(contents);
        if contents.first().is_some_and(|b| (0x40..=0x4F).contains(b)) {
            let padded = contents.len().next_multiple_of(4);
            self.write
                .resize(self.write.len() + padded - contents.len(), 0);
        }
        true
    }

    /// Bytes queued and not yet taken by the kernel.
    pub fn pending(&self) -> usize {
        self.write.len() - self.write_pos
    }

    /// What to write next.
    pub fn to_write(&self) -> &[u8] {
        &self.write[self.write_pos..]
    }

    /// The kernel took `n` bytes of [`TurnStream::to_write`].
    pub fn written(&mut self, n: usize) {
        self.write_pos = (self.write_pos + n).min(self.write.len());
        if self.write_pos == self.write.len() {
            self.write.clear();
            self.write_pos = 0;
        }
    }

    /// Bytes read from the connection.
    pub fn received(&mut self, bytes: &[u8]) {
        if self.read_pos == self.read.len() {
            self.read.clear();
            self.read_pos = 0;
        } else if self.read_pos > self.read.len() / 2 {
            self.read.drain(..self.read_pos);
            self.read_pos = 0;
        }
        self.read.extend_from_slice(bytes);
    }

    /// The next whole message read (ChannelData with its padding), None until one is
    /// complete. An error means the stream is garbage from here on.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let rest = &self.read[self.read_pos..];
        let Some(head) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = frame_len(*head)?;
        if rest.len() < len {
            return Ok(None);
        }
        let start = self.read_pos;
        self.read_pos += len;
        Ok(Some(&self.read[start..start + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::nat::stun::{channel_data, parse_channel_data, Attr, Message};

    fn all(s: &mut TurnStream) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            v.push(m.to_vec());
        }
        v
    }

    #[test]
    fn channel_data_is_padded_on_the_stream_and_unpadded_by_its_length() {
        let mut s = TurnStream::new();
        for n in 0..8 {
            let payload = vec![n as u8; n];
            assert!(s.queue(&channel_data(0x4001, &payload)));
            let wire = s.to_write().to_vec();
            assert_eq!(wire.len(), (4 + n).next_multiple_of(4), "{n} bytes");
            assert!(wire[4 + n..].iter().all(|b| *b == 0));
            s.written(wire.len());
            let mut r = TurnStream::new();
            r.received(&wire);
            let got = all(&mut r);
            assert_eq!(got, std::slice::from_ref(&wire));
            assert_eq!(parse_channel_data(&got[0]), Some((0x4001, &payload[..])));
        }
        // STUN is a multiple of 4 already: written as it is.
        let stun = Message::request(stun::ALLOCATE, [1; 12])
            .with(Attr::RequestedTransportUdp)
            .encode(None);
        s.queue(&stun);
        assert_eq!(s.to_write(), &stun[..]);
    }

    #[test]
    fn messages_are_reassembled_across_reads_and_split_when_several_arrive_at_once() {
        let stun = Message::request(stun::BINDING, [2; 12]).encode(None);
        let cd1 = channel_data(0x4000, b"hello");
        let cd2 = channel_data(0x4FFF, &[7; 1200]);
        let mut w = TurnStream::new();
        for m in [&stun, &cd1, &cd2, &stun] {
            w.queue(m);
        }
        let wire = w.to_write().to_vec();
        let expected: Vec<Vec<u8>> = vec![
            stun.clone(),
            [&cd1[..], &[0, 0, 0]].concat(),
            cd2.clone(),
            stun.clone(),
        ];
        // Every split into reads of n bytes (1 byte at a time, headers cut in half, ...),
        // and all at once.
        for n in [1, 2, 3, 5, 17, 20, 24, 100, 1000, wire.len()] {
            let mut r = TurnStream::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(n) {
                r.received(chunk);
                got.extend(all(&mut r));
            }
            assert_eq!(got, expected, "reads of {n} bytes");
            assert_eq!(r.next_message(), Ok(None));
        }
    }

    #[test]
    fn garbage_on_the_stream_is_an_error_not_a_panic() {
        for head in [[0x80, 0, 0, 0], [0x50, 0, 0, 4], [0x00, 0x01, 0, 3]] {
            let mut r = TurnStream::new();
            r.received(&head);
            assert!(r.next_message().is_err(), "{head:?}");
        }
        // A header alone waits for its body.
        let mut r = TurnStream::new();
        r.received(&[0x40, 0x00, 0xFF, 0xFF]);
        assert_eq!(r.next_message(), Ok(None));
    }

    #[test]
    fn a_full_stream_drops_media_but_keeps_requests() {
        let mut s = TurnStream::new();
        let media = channel_data(0x4000, &[0; 1000]);
        let mut queued = 0;
        while s.queue(&media) {
            queued += 1;
        }
        assert_eq!(queued, MAX_PENDING / 1004);
        let send = Message::indication(stun::SEND, [3; 12])
            .with(Attr::Data(vec![0; 1000]))
            .encode(None);
        assert!(!s.queue(&send), "a Send indication is media");
        let refresh = Message::request(stun::REFRESH, [4; 12]).encode(None);
        assert!(s.queue(&refresh), "a request always goes in");
        assert_eq!(s.dropped, 2);
        // Once the kernel takes bytes, media goes in again.
        let n = s.pending();
        s.written(n);
        assert_eq!(s.pending(), 0);
        assert!(s.queue(&media));
    }
}
