//! The file-transfer protocol, without IO: one [`FileSender`] or [`FileReceiver`] per
//! data channel, fed the channel's messages and handing back what to write on it and
//! what to do with the file. The [`files`](super::files) driver owns the file handles and
//! carries the actions out.
//!
//! Why a data channel per file, opened in-band: once a call's SCTP association exists
//! (the `chat` channel's `m=application` section in the first offer), either side can open
//! more channels with DCEP (RFC 8832) and no new offer: str0m's
//! `direct_api().create_data_channel`, a browser's `createDataChannel`. A channel per file
//! gives each transfer its own ordering, its own back-pressure (`bufferedAmount`) and its
//! own end (closing it), so files never wait behind each other or behind chat, and the
//! page speaks the same protocol with no multiplexing code. (`sdp_api().add_channel`
//! mid-call would need a new offer and answer through the signaling server; fixed
//! negotiated ids would cap the number of files and collide when both sides send.)
//!
//! On a channel labelled [`FILE_LABEL`], every text message is a JSON object with a `type`;
//! binary messages are the file's bytes in order:
//! ```text
//! sender   -> {"type":"file","name":"a.bin","size":123}
//! receiver -> {"type":"accept"}  |  {"type":"reject","reason":"..."}
//! sender   -> binary chunks (at most CHUNK bytes each), `size` bytes in all
//! sender   -> {"type":"end","sha256":"<hex>"}
//! receiver -> {"type":"received","sha256":"<hex>"}  |  {"type":"error","reason":"..."}
//! ```
//! then the sender closes the channel. A channel that closes before that is a failed
//! transfer on both sides (the receiver deletes its partial file).
//!
//! Memory: a sender reads a chunk only while the channel holds less than [`SEND_WINDOW`]
//! bytes, and holds at most one chunk itself, so a peer that stops reading costs at most
//! `SEND_WINDOW + CHUNK` per file ([`MAX_SENDING`] files at once). A receiver holds no
//! file bytes: each message is written out as it comes (and SCTP's own receive window,
//! 1 MiB in str0m, bounds what the peer can have in flight).

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signaling::message::excerpt;

/// The label of a file transfer's data channel.
pub const FILE_LABEL: &str = "file";
/// The most file bytes in one binary message: under the 64 KiB every WebRTC stack takes.
pub const CHUNK: usize = 32 * 1024;
/// The most bytes one file may have queued or in flight in str0m before the sender stops
/// reading. Smaller is faster here: sctp-proto scans its whole in-flight queue (a hash
/// lookup per chunk) on every send, and that scan is most of a transfer's CPU. 50 MB on
/// loopback, one way / each way at once, MB/s: 1 MiB 7-9 / 4-8; 256 KiB 17-20 / 3-5;
/// 128 KiB 10-20 / 5-9; 64 KiB 21-31 / 7-12; 32 KiB (16 KiB chunks) 27-30 / 5-9.
pub const SEND_WINDOW: usize = 64 * 1024;
/// Files sent at once; the rest wait their turn.
pub const MAX_SENDING: usize = 2;
/// str0m's send buffer for all channels of a call: the files' windows plus room for chat
/// and the hang-up message, so a transfer never crowds those out.
pub const SCTP_SEND_BUFFER: usize = MAX_SENDING * (SEND_WINDOW + CHUNK) + 256 * 1024;
/// The longest file name accepted, in bytes (what most file systems take).
pub const MAX_NAME: usize = 255;
/// The largest control message accepted (an offer with a long name is well under).
const MAX_CONTROL: usize = 4096;
/// How much of a peer's text an error quotes.
const QUOTE: usize = 80;

/// Why a transfer failed or was refused. The text names the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// A file name that could write outside the receive folder, or is not a plain name.
    BadName { name: String, why: &'static str },
    /// More than the receiver allows (`--receive-max-bytes`, or its free disk space).
    TooLarge { name: String, size: u64, room: u64 },
    /// The receiver takes no files (no `--receive-dir`).
    NotAccepting,
    /// The receiver takes this many files at once, and has them.
    TooMany(usize),
    /// A message the protocol does not allow here.
    Protocol(String),
    /// The channel closed or the call ended before the transfer was done.
    Truncated { got: u64, size: u64 },
    /// The bytes received do not hash to what the sender sent.
    HashMismatch { expected: String, got: String },
    /// The peer refused or failed the transfer; its reason.
    Peer(String),
    /// Reading or writing the file failed.
    Io(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::BadName { name, why } => write!(f, "bad file name {name:?}: {why}"),
            FileError::TooLarge { name, size, room } => write!(
                f,
                "{name:?} is {size} bytes, more than the {room} bytes this receiver allows"
            ),
            FileError::NotAccepting => f.write_str("this peer takes no files (no --receive-dir)"),
            FileError::TooMany(n) => write!(f, "this peer takes {n} files at once; try later"),
            FileError::Protocol(what) => write!(f, "protocol error: {what}"),
            FileError::Truncated { got, size } => {
                write!(f, "the transfer stopped after {got} of {size} bytes")
            }
            FileError::HashMismatch { expected, got } => {
                write!(f, "SHA-256 mismatch: sent {expected}, received {got}")
            }
            FileError::Peer(reason) => write!(f, "the peer says: {reason}"),
            FileError::Io(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for FileError {}

/// A control message (sent as a text message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    File { name: String, size: u64 },
    Accept,
    Reject { reason: String },
    End { sha256: String },
    Received { sha256: String },
    Error { reason: String },
}

impl Control {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn parse(data: &[u8]) -> Result<Control, FileError> {
        if data.len() > MAX_CONTROL {
            return Err(FileError::Protocol(format!(
                "a {}-byte control message (at most {MAX_CONTROL})",
                data.len()
            )));
        }
        serde_json::from_slice(data).map_err(|e| {
            FileError::Protocol(format!(
                "not a control message ({e}): {:?}",
                excerpt(&String::from_utf8_lossy(data), QUOTE)
            ))
        })
    }
}

/// A message to write on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub binary: bool,
    pub data: Vec<u8>,
}

impl Outgoing {
    fn control(c: &Control) -> Outgoing {
        Outgoing {
            binary: false,
            data: c.to_bytes(),
        }
    }
}

/// Checks a name a peer gave for a file: one plain component, nothing that could name
/// another folder or a hidden or special file.
pub fn check_name(name: &str) -> Result<&str, FileError> {
    let bad = |why| {
        Err(FileError::BadName {
            name: excerpt(name, QUOTE),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return bad("contains a path separator");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    Ok(name)
}

/// The `n`th name tried for a file whose name is taken: `a.bin`, `a-1.bin`, `a-2.bin`...
pub fn numbered_name(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{n}.{ext}"),
        _ => format!("{name}-{n}"),
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes per second in MB/s (10^6 bytes).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64().max(1e-6);
    bytes as f64 / 1e6 / secs
}

/// Where a sender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// The channel is not open yet.
    Opening,
    /// The offer is out; waiting for accept or reject.
    Offered,
    /// Sending bytes (and then the end message).
    Sending,
    /// The end message is out; waiting for the receipt.
    Ending,
    Done,
    Failed,
}

/// What the driver must do next for a sender.
#[derive(Debug, PartialEq, Eq)]
pub enum SendAction<'a> {
    /// Read the next `len` bytes of the file and hand them to [`FileSender::chunk_read`].
    ReadChunk { len: usize },
    /// Write this message on the channel, then call [`FileSender::written`] if the
    /// channel took it (if not, ask again later: the message stays here).
    Write(&'a Outgoing),
}

/// How a sender ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// The receiver has all the bytes and its hash matches.
    Sent {
        bytes: u64,
        sha256: String,
        elapsed: Duration,
    },
    Failed(FileError),
}

/// One file going out on its own channel.
pub struct FileSender {
    name: String,
    size: u64,
    state: SendState,
    /// Bytes read from the file (and so hashed) so far.
    read: u64,
    /// Bytes the channel took.
    sent: u64,
    hasher: Sha256,
    sha256: Option<String>,
    /// The one message read or made but not yet taken by the channel.
    pending: Option<Outgoing>,
    started: Option<Instant>,
    outcome: Option<SendOutcome>,
}

impl FileSender {
    /// `name` is what the receiver is told (the file's own name, no folders).
    pub fn new(name: String, size: u64) -> FileSender {
        FileSender {
            name,
            size,
            state: SendState::Opening,
            read: 0,
            sent: 0,
            hasher: Sha256::new(),
            sha256: None,
            pending: None,
            started: None,
            outcome: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the channel took so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes of the file held here, not yet taken by the channel (at most [`CHUNK`]).
    pub fn held(&self) -> usize {
        self.pending
            .as_ref()
            .filter(|p| p.binary)
            .map_or(0, |p| p.data.len())
    }

    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, SendState::Done | SendState::Failed)
    }

    /// The channel is open: the offer goes out.
    pub fn opened(&mut self, now: Instant) {
        if self.state != SendState::Opening {
            return;
        }
        self.started = Some(now);
        self.state = SendState::Offered;
        self.pending = Some(Outgoing::control(&Control::File {
            name: self.name.clone(),
            size: self.size,
        }));
    }

    /// The next thing to do, given how many bytes the channel holds unsent; `None` while
    /// waiting (for the peer, or for the channel to drain below [`SEND_WINDOW`]).
    pub fn next(&mut self, buffered: usize) -> Option<SendAction<'_>> {
        if self.pending.is_some() {
            return self.pending.as_ref().map(SendAction::Write);
        }
        if self.state != SendState::Sending {
            return None;
        }
        if self.read < self.size {
            if buffered + CHUNK > SEND_WINDOW {
                return None;
            }
            let len = (self.size - self.read).min(CHUNK as u64) as usize;
            return Some(SendAction::ReadChunk { len });
        }
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        self.pending = Some(Outgoing::control(&Control::End {
            sha256: sha256.clone(),
        }));
        self.sha256 = Some(sha256);
        self.state = SendState::Ending;
        self.pending.as_ref().map(SendAction::Write)
    }

    /// The bytes asked for by [`SendAction::ReadChunk`]. A short read means the file
    /// shrank while being sent: the transfer fails.
    pub fn chunk_read(&mut self, data: Vec<u8>, wanted: usize) -> Result<(), FileError> {
        if data.len() != wanted || self.pending.is_some() {
            let e = FileError::Io(format!(
                "{:?} shrank while being sent: read {} of {} bytes at offset {}",
                self.name,
                data.len(),
                wanted,
                self.read
            ));
            return Err(self.fail(e));
        }
        self.hasher.update(&data);
        self.read += data.len() as u64;
        self.pending = Some(Outgoing { binary: true, data });
        Ok(())
    }

    /// The channel took the pending message.
    pub fn written(&mut self) {
        if let Some(p) = self.pending.take() {
            if p.binary {
                self.sent += p.data.len() as u64;
            }
        }
    }

    /// A message from the receiver.
    pub fn on_message(&mut self, binary: bool, data: &[u8], now: Instant) {
        if self.is_finished() {
            return;
        }
        if binary {
            let e = FileError::Protocol("binary data from the receiver".into());
            self.fail(e);
            return;
        }
        let msg = match Control::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        match (self.state, msg) {
            (SendState::Offered, Control::Accept) => self.state = SendState::Sending,
            (_, Control::Reject { reason } | Control::Error { reason }) => {
                self.fail(FileError::Peer(excerpt(&reason, 200)));
            }
            (SendState::Ending, Control::Received { sha256 }) => {
                let ours = self.sha256.clone().unwrap_or_default();
                if sha256 != ours {
                    self.fail(FileError::HashMismatch {
                        expected: ours,
                        got: excerpt(&sha256, QUOTE),
                    });
                    return;
                }
                self.state = SendState::Done;
                let elapsed = now.saturating_duration_since(self.started.unwrap_or(now));
                self.outcome = Some(SendOutcome::Sent {
                    bytes: self.sent,
                    sha256: ours,
                    elapsed,
                });
            }
            (state, msg) => {
                let e = FileError::Protocol(format!("{msg:?} while {state:?}"));
                self.fail(e);
            }
        }
    }

    /// The channel closed (or the call ended).
    pub fn closed(&mut self) {
        if !self.is_finished() {
            self.fail(FileError::Truncated {
                got: self.sent,
                size: self.size,
            });
        }
    }

    /// Gives the transfer up (the file cannot be read).
    pub fn abort(&mut self, e: FileError) {
        if !self.is_finished() {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: FileError) -> FileError {
        self.state = SendState::Failed;
        self.pending = None;
        self.outcome = Some(SendOutcome::Failed(e.clone()));
        e
    }

    /// How it ended, once (the driver prints it and closes the channel).
    pub fn take_outcome(&mut self) -> Option<SendOutcome> {
        self.outcome.take()
    }
}

/// Where a receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// Waiting for the offer.
    Waiting,
    /// Accepted: bytes come in.
    Receiving,
    Done,
    Failed,
}

/// What the driver must do for a receiver, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvAction {
    /// Create the (temporary) file for this checked name and size; then call
    /// [`FileReceiver::accept`] or, if it cannot be created, [`FileReceiver::refuse`].
    Create { name: String, size: u64 },
    /// Append these bytes to the file.
    Append(Vec<u8>),
    /// All bytes are in and hash right: move the file to its final name, and write
    /// `reply` on the channel.
    Complete {
        sha256: String,
        elapsed: Duration,
        reply: Outgoing,
    },
    /// Write `reply` (a reject or an error) on the channel, delete any partial file, and
    /// close the channel.
    Fail { error: FileError, reply: Outgoing },
}

/// One file coming in on a channel the peer opened.
pub struct FileReceiver {
    state: RecvState,
    name: String,
    size: u64,
    got: u64,
    hasher: Sha256,
    /// The most bytes this file may have (`--receive-max-bytes`, free space), or why
    /// every file is refused.
    room: Result<u64, FileError>,
    started: Instant,
}

impl FileReceiver {
    /// `room`: how many bytes may be written, or why the file is refused whatever it is.
    pub fn new(room: Result<u64, FileError>, now: Instant) -> FileReceiver {
        FileReceiver {
            state: RecvState::Waiting,
            name: String::new(),
            size: 0,
            got: 0,
            hasher: Sha256::new(),
            room,
            started: now,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn got(&self) -> u64 {
        self.got
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, RecvState::Done | RecvState::Failed)
    }

    /// A message from the sender.
    pub fn on_message(&mut self, binary: bool, data: Vec<u8>, now: Instant) -> Option<RecvAction> {
        match self.state {
            RecvState::Done | RecvState::Failed => None,
            RecvState::Waiting if binary => Some(self.fail(FileError::Protocol(format!(
                "{} bytes of data before the file's offer",
                data.len()
            )))),
            RecvState::Waiting => Some(self.offer(&data, now)),
            RecvState::Receiving if binary => Some(self.append(data)),
            RecvState::Receiving => Some(self.control(&data, now)),
        }
    }

    fn offer(&mut self, data: &[u8], now: Instant) -> RecvAction {
        let (name, size) = match Control::parse(data) {
            Ok(Control::File { name, size }) => (name, size),
            Ok(other) => {
                return self.fail(FileError::Protocol(format!(
                    "{other:?} before the file's offer"
                )))
            }
            Err(e) => return self.fail(e),
        };
        self.name = excerpt(&name, MAX_NAME);
        self.size = size;
        self.started = now;
        let room = match self.room.clone() {
            Ok(room) => room,
            Err(e) => return self.fail(e),
        };
        if let Err(e) = check_name(&name) {
            return self.fail(e);
        }
        if size > room {
            return self.fail(FileError::TooLarge { name, size, room });
        }
        RecvAction::Create { name, size }
    }

    /// The file is created: tell the sender to go on.
    pub fn accept(&mut self) -> Outgoing {
        self.state = RecvState::Receiving;
        Outgoing::control(&Control::Accept)
    }

    /// The file could not be created (or written): `error` goes to the sender.
    pub fn refuse(&mut self, error: FileError) -> RecvAction {
        self.fail(error)
    }

    fn append(&mut self, data: Vec<u8>) -> RecvAction {
        let left = self.size - self.got;
        if data.len() as u64 > left {
            return self.fail(FileError::Protocol(format!(
                "{} more bytes than the {} announced",
                data.len() as u64 - left,
                self.size
            )));
        }
        self.hasher.update(&data);
        self.got += data.len() as u64;
        RecvAction::Append(data)
    }

    fn control(&mut self, data: &[u8], now: Instant) -> RecvAction {
        let sha256 = match Control::parse(data) {
            Ok(Control::End { sha256 }) => sha256,
            Ok(other) => {
                return self.fail(FileError::Protocol(format!("{other:?} during the data")))
            }
            Err(e) => return self.fail(e),
        };
        if self.got < self.size {
            return self.fail(FileError::Truncated {
                got: self.got,
                size: self.size,
            });
        }
        let ours = hex(&std::mem::take(&mut self.hasher).finalize());
        if sha256 != ours {
            return self.fail(FileError::HashMismatch {
                expected: excerpt(&sha256, QUOTE),
                got: ours,
            });
        }
        self.state = RecvState::Done;
        RecvAction::Complete {
            reply: Outgoing::control(&Control::Received {
                sha256: ours.clone(),
            }),
            sha256: ours,
            elapsed: now.saturating_duration_since(self.started),
        }
    }

    /// The channel closed (or the call ended) before the end: the partial file goes.
    pub fn closed(&mut self) -> Option<FileError> {
        if self.is_finished() {
            return None;
        }
        self.state = RecvState::Failed;
        Some(FileError::Truncated {
            got: self.got,
            size: self.size,
        })
    }

    fn fail(&mut self, error: FileError) -> RecvAction {
        let reply = match &error {
            FileError::BadName { .. }
            | FileError::TooLarge { .. }
            | FileError::NotAccepting
            | FileError::TooMany(_)
                if self.state == RecvState::Waiting =>
            {
                Control::Reject {
                    reason: error.to_string(),
                }
            }
            _ => Control::Error {
                reason: error.to_string(),
            },
        };
        self.state = RecvState::Failed;
        RecvAction::Fail {
            error,
            reply: Outgoing::control(&reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, size: u64) -> Vec<u8> {
        Control::File {
            name: name.into(),
            size,
        }
        .to_bytes()
    }

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    /// Runs a sender and a receiver against each other in memory, the channel holding
    /// `window_used` bytes whenever the sender asks.
    fn transfer(file: &[u8]) -> (SendOutcome, Vec<u8>, RecvAction) {
        let t0 = Instant::now();
        let mut s = FileSender::new("a.bin".into(), file.len() as u64);
        let mut r = FileReceiver::new(Ok(1 << 30), t0);
        let mut written = Vec::new();
        let mut last = None;
        s.opened(t0);
        for _ in 0..10_000 {
            let msg = match s.next(0) {
                Some(SendAction::ReadChunk { len }) => {
                    let at = s.read as usize;
                    s.chunk_read(file[at..at + len].to_vec(), len).unwrap();
                    continue;
                }
                Some(SendAction::Write(m)) => m.clone(),
                None => break,
            };
            s.written();
            match r.on_message(msg.binary, msg.data, t0) {
                Some(RecvAction::Create { .. }) => {
                    let reply = r.accept();
                    s.on_message(reply.binary, &reply.data, t0);
                }
                Some(RecvAction::Append(d)) => written.extend(d),
                Some(a @ (RecvAction::Complete { .. } | RecvAction::Fail { .. })) => {
                    if let RecvAction::Complete { reply, .. } | RecvAction::Fail { reply, .. } = &a
                    {
                        s.on_message(reply.binary, &reply.data, t0);
                    }
                    last = Some(a);
                }
                None => {}
            }
        }
        (s.take_outcome().unwrap(), written, last.unwrap())
    }

    #[test]
    fn a_file_crosses_in_chunks_and_hashes_the_same() {
        let file: Vec<u8> = (0..CHUNK * 3 + 17).map(|i| (i * 7 % 251) as u8).collect();
        let (outcome, written, last) = transfer(&file);
        assert_eq!(written, file);
        match outcome {
            SendOutcome::Sent { bytes, sha256, .. } => {
                assert_eq!(bytes, file.len() as u64);
                assert_eq!(sha256, sha(&file));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(last, RecvAction::Complete { sha256, .. } if sha256 == sha(&file)));
        // An empty file works too.
        let (outcome, written, _) = transfer(&[]);
        assert!(matches!(outcome, SendOutcome::Sent { bytes: 0, .. }));
        assert!(written.is_empty());
    }

    #[test]
    fn names_that_could_leave_the_folder_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../etc/passwd",
            "/etc/passwd",
            "a\\b",
            ".hidden",
            "a\nb",
            &"x".repeat(256),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(matches!(err, FileError::BadName { .. }), "{bad:?}: {err}");
        }
        for good in ["a.bin", "photo 1.jpg", "caf\u{e9}", "a..b"] {
            assert_eq!(check_name(good), Ok(good));
        }
        let mut r = FileReceiver::new(Ok(100), Instant::now());
        match r.on_message(false, offer("../x", 3), Instant::now()) {
            Some(RecvAction::Fail { error, reply }) => {
                assert_eq!(
                    error.to_string(),
                    r#"bad file name "../x": contains a path separator"#
                );
                let c = Control::parse(&reply.data).unwrap();
                assert!(matches!(c, Control::Reject { .. }), "{c:?}");
            }
            other => panic!("{other:?}"),
        }
        // Nothing more is taken on that channel.
        assert_eq!(r.on_message(true, vec![1, 2, 3], Instant::now()), None);
    }

    #[test]
    fn taken_names_get_a_number() {
        assert_eq!(numbered_name("a.bin", 0), "a.bin");
        assert_eq!(numbered_name("a.bin", 2), "a-2.bin");
        assert_eq!(numbered_name("a.tar.gz", 1), "a.tar-1.gz");
        assert_eq!(numbered_name("README", 1), "README-1");
    }

    #[test]
    fn files_over_the_room_or_with_no_receive_dir_are_refused() {
        let now = Instant::now();
        let mut r = FileReceiver::new(Ok(1000), now);
        match r.on_message(false, offer("big.bin", 1001), now) {
            Some(RecvAction::Fail { error, .. }) => assert_eq!(
                error.to_string(),
                r#""big.bin" is 1001 bytes, more than the 1000 bytes this receiver allows"#
            ),
            other => panic!("{other:?}"),
        }
        let mut r = FileReceiver::new(Ok(1000), now);
        assert_eq!(
            r.on_message(false, offer("ok.bin", 1000), now),
            Some(RecvAction::Create {
                name: "ok.bin".into(),
                size: 1000
            })
        );
        let mut r = FileReceiver::new(Err(FileError::NotAccepting), now);
        assert!(matches!(
            r.on_message(false, offer("ok.bin", 1), now),
            Some(RecvAction::Fail {
                error: FileError::NotAccepting,
                ..
            })
        ));
        let mut r = FileReceiver::new(Err(FileError::TooMany(4)), now);
        match r.on_message(false, offer("ok.bin", 1), now) {
            Some(RecvAction::Fail { error, reply }) => {
                assert_eq!(
                    error.to_string(),
                    "this peer takes 4 files at once; try later"
                );
                let c = Control::parse(&reply.data).unwrap();
                assert!(matches!(c, Control::Reject { .. }), "{c:?}");
            }
            other => panic!("{other:?}"),
        }
        // The sender reports the peer's reason.
        let mut s = FileSender::new("big.bin".into(), 1001);
        s.opened(now);
        s.written();
        let reply = Control::Reject {
            reason: "too big".into(),
        };
        s.on_message(false, &reply.to_bytes(), now);
        assert_eq!(
            s.take_outcome(),
            Some(SendOutcome::Failed(FileError::Peer("too big".into())))
        );
        assert_eq!(s.next(0), None);
    }

    #[test]
    fn truncated_oversized_and_out_of_order_transfers_fail() {
        let now = Instant::now();
        let accepted = || {
            let mut r = FileReceiver::new(Ok(1 << 20), now);
            assert!(matches!(
                r.on_message(false, offer("a.bin", 10), now),
                Some(RecvAction::Create { .. })
            ));
            r.accept();
            r
        };
        let failed = |a: Option<RecvAction>| match a {
            Some(RecvAction::Fail { error, .. }) => error.to_string(),
            other => panic!("{other:?}"),
        };
        // Data before the offer.
        let mut r = FileReceiver::new(Ok(1 << 20), now);
        assert_eq!(
            failed(r.on_message(true, vec![0; 5], now)),
            "protocol error: 5 bytes of data before the file's offer"
        );
        // More bytes than announced.
        let mut r = accepted();
        assert!(matches!(
            r.on_message(true, vec![0; 6], now),
            Some(RecvAction::Append(_))
        ));
        assert_eq!(
            failed(r.on_message(true, vec![0; 6], now)),
            "protocol error: 2 more bytes than the 10 announced"
        );
        // The end before all bytes.
        let mut r = accepted();
        r.on_message(true, vec![0; 4], now);
        let end = Control::End { sha256: "x".into() }.to_bytes();
        assert_eq!(
            failed(r.on_message(false, end, now)),
            "the transfer stopped after 4 of 10 bytes"
        );
        // The channel closing mid-file.
        let mut r = accepted();
        r.on_message(true, vec![0; 4], now);
        assert_eq!(r.closed(), Some(FileError::Truncated { got: 4, size: 10 }));
        // A second offer, and garbage, during the data.
        let mut r = accepted();
        assert!(failed(r.on_message(false, offer("b", 1), now)).starts_with("protocol error"));
        let mut r = accepted();
        assert!(failed(r.on_message(false, b"{not json".to_vec(), now))
            .starts_with("protocol error: not a control message"));
        // A wrong hash.
        let mut r = accepted();
        r.on_message(true, vec![0; 10], now);
        let end = Control::End {
            sha256: "00".into(),
        }
        .to_bytes();
        assert!(failed(r.on_message(false, end, now)).starts_with("SHA-256 mismatch"));
        // A sender told "received" with another hash fails too; an early receipt as well.
        let mut s = FileSender::new("a".into(), 0);
        s.opened(now);
        s.written();
        s.on_message(false, &Control::Accept.to_bytes(), now);
        assert!(matches!(s.next(0), Some(SendAction::Write(_))));
        s.written();
        let bad = Control::Received {
            sha256: "00".into(),
        };
        s.on_message(false, &bad.to_bytes(), now);
        assert!(matches!(
            s.take_outcome(),
            Some(SendOutcome::Failed(FileError::HashMismatch { .. }))
        ));
        let mut s = FileSender::new("a".into(), 5);
        s.opened(now);
        s.written();
        s.on_message(false, &bad.to_bytes(), now);
        assert!(matches!(
            s.take_outcome(),
            Some(SendOutcome::Failed(FileError::Protocol(_)))
        ));
    }

    /// A receiver that stops reading: the channel's buffer stays full, and the sender
    /// reads nothing more; what it holds is one chunk at most.
    #[test]
    fn a_peer_that_stops_reading_holds_the_sender_to_its_window() {
        let now = Instant::now();
        let size = 50 * 1024 * 1024;
        let mut s = FileSender::new("big".into(), size);
        s.opened(now);
        s.written();
        s.on_message(false, &Control::Accept.to_bytes(), now);
        // The channel takes chunks until SEND_WINDOW is buffered, then nothing drains.
        let mut buffered = 0usize;
        let mut reads = 0;
        loop {
            match s.next(buffered) {
                Some(SendAction::ReadChunk { len }) => {
                    reads += 1;
                    s.chunk_read(vec![0; len], len).unwrap();
                }
                Some(SendAction::Write(m)) => {
                    let len = m.data.len();
                    if buffered + len > SEND_WINDOW {
                        break;
                    }
                    buffered += len;
                    s.written();
                }
                None => break,
            }
            assert!(reads < 1000, "the sender kept reading");
        }
        assert_eq!(buffered, SEND_WINDOW);
        assert_eq!(reads, SEND_WINDOW / CHUNK);
        assert!(s.held() <= CHUNK);
        // Asked again and again while nothing drains: still nothing read.
        for _ in 0..100 {
            assert_eq!(s.next(buffered), None);
        }
        assert_eq!(s.sent(), SEND_WINDOW as u64);
        // The receiver drains half: the sender reads again.
        assert!(matches!(
            s.next(SEND_WINDOW / 2),
            Some(SendAction::ReadChunk { .. })
        ));
    }

    #[test]
    fn a_file_that_shrinks_while_sent_fails_clearly() {
        let now = Instant::now();
        let mut s = FileSender::new("a".into(), 100);
        s.opened(now);
        s.written();
        s.on_message(false, &Control::Accept.to_bytes(), now);
        assert_eq!(s.next(0), Some(SendAction::ReadChunk { len: 100 }));
        let e = s.chunk_read(vec![0; 40], 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"a\" shrank while being sent: read 40 of 100 bytes at offset 0"
        );
        assert!(s.is_finished());
    }
}
