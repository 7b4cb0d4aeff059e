//! The files side of file transfers: `--send-file` and `--receive-dir`. Drives one
//! [`FileSender`] or [`FileReceiver`] per file channel, carrying out their actions on the
//! files and on the [`Conductor`]'s channels, and makes the stdout lines:
//! - `FILE_PROGRESS dir=send|recv name="..." bytes=N size=N mb_per_s=X` every second per
//!   transfer (a sender adds `buffered=` str0m's unsent bytes and `held=` its own);
//! - `FILE_SENT name="..." bytes=N sha256=HEX mb_per_s=X` when the receiver confirmed;
//! - `FILE_RECEIVED name="..." saved="..." bytes=N sha256=HEX mb_per_s=X`;
//! - `FILE_FAILED dir=send|recv name="..." reason="..."`.
//!
//! Files are read and written in place with plain blocking calls: a regular file never
//! reports would-block (epoll refuses it), and each call moves at most one chunk. A
//! received file is written under a temporary dot-name (which no accepted name can
//! take) and linked to its final name only once complete and hashed right; a taken name
//! gets a number (`a-1.bin`) and nothing is ever overwritten.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use str0m::channel::{ChannelData, ChannelId};

use super::conductor::Conductor;
use super::file_transfer::{
    mb_per_s, numbered_name, FileError, FileReceiver, FileSender, Outgoing, RecvAction, SendAction,
    SendOutcome, MAX_SENDING, SEND_WINDOW,
};

/// How often a transfer prints its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Files taken at once; more are refused (each holds a file open and disk space promised).
pub const MAX_RECEIVING: usize = 4;
/// Names tried for a received file before giving up (`a.bin`, `a-1.bin`, ...).
const MAX_NUMBERED: u32 = 1000;

/// What the command line says about files.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// `--send-file`, in order: sent on every call once its channels can open.
    pub send: Vec<PathBuf>,
    /// `--receive-dir`: files are refused without it.
    pub receive_dir: Option<PathBuf>,
    /// `--receive-max-bytes`: the largest file taken (free space also limits).
    pub receive_max_bytes: Option<u64>,
}

impl FileConfig {
    /// Checks the flags before anything starts; the error names the bad value.
    pub fn check(&self) -> Result<(), String> {
        for path in &self.send {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("--send-file {}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!(
                    "--send-file {}: not a regular file",
                    path.display()
                ));
            }
            // The receiver checks the name (`check_name`); here only that there is one,
            // so a name another system finds bad (`..\x`) still reaches it and is refused.
            if file_name(path).is_empty() {
                return Err(format!("--send-file {}: no file name", path.display()));
            }
        }
        if let Some(dir) = &self.receive_dir {
            if !dir.is_dir() {
                return Err(format!("--receive-dir {}: not a folder", dir.display()));
            }
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Outbound {
    machine: FileSender,
    file: File,
}

struct Inbound {
    machine: FileReceiver,
    /// The temporary file while it is written.
    part: Option<(File, PathBuf)>,
}

/// Every transfer of the current call.
pub struct FileTransfers {
    config: FileConfig,
    /// Files still to open a channel for, this call.
    queue: VecDeque<PathBuf>,
    sending: HashMap<ChannelId, Outbound>,
    receiving: HashMap<ChannelId, Inbound>,
    progress_at: Option<Instant>,
    lines: VecDeque<String>,
}

impl FileTransfers {
    pub fn new(config: FileConfig) -> FileTransfers {
        FileTransfers {
            config,
            queue: VecDeque::new(),
            sending: HashMap::new(),
            receiving: HashMap::new(),
            progress_at: None,
            lines: VecDeque::new(),
        }
    }

    /// A line for stdout.
    pub fn poll_line(&mut self) -> Option<String> {
        self.lines.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.progress_at
    }

    /// The call's `chat` channel is open, so its SCTP association is up: the files to
    /// send get their channels.
    pub fn channels_ready(&mut self, conductor: &mut Conductor, now: Instant) {
        self.queue = self.config.send.iter().cloned().collect();
        self.start_more(conductor, now);
    }

    /// Opens channels for queued files while fewer than [`MAX_SENDING`] are going.
    fn start_more(&mut self, conductor: &mut Conductor, now: Instant) {
        while self.sending.len() < MAX_SENDING {
            let Some(path) = self.queue.pop_front() else {
                return;
            };
            let name = file_name(&path);
            let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
            let (size, file) = match opened {
                Ok(x) => x,
                Err(e) => {
                    self.failed("send", &name, &format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let Some(id) = conductor.open_file_channel(now) else {
                self.failed("send", &name, "no open data channel");
                continue;
            };
            log::info!("files: sending {name:?} ({size} bytes) on channel {id:?}");
            let machine = FileSender::new(name, size);
            self.sending.insert(id, Outbound { machine, file });
            self.progress_at.get_or_insert(now + PROGRESS_INTERVAL);
        }
    }

    /// A file channel opened: ours (the offer goes out) or the peer's (a file comes).
    pub fn channel_open(&mut self, id: ChannelId, conductor: &mut Conductor, now: Instant) {
        if let Some(out) = self.sending.get_mut(&id) {
            out.machine.opened(now);
            conductor.set_file_channel_low(id, SEND_WINDOW / 2);
            return self.pump(id, conductor, now);
        }
        let active = self
            .receiving
            .values()
            .filter(|i| !i.machine.is_finished())
            .count();
        let room = match self.config.receive_dir.as_deref() {
            None => Err(FileError::NotAccepting),
            Some(_) if active >= MAX_RECEIVING => Err(FileError::TooMany(MAX_RECEIVING)),
            Some(dir) => Ok(self.room(dir)),
        };
        let machine = FileReceiver::new(room, now);
        self.receiving.insert(
            id,
            Inbound {
                machine,
                part: None,
            },
        );
        self.progress_at.get_or_insert(now + PROGRESS_INTERVAL);
    }

    /// Bytes a new file may have: the free space less what files coming in now still
    /// need, and at most `--receive-max-bytes`.
    fn room(&self, dir: &Path) -> u64 {
        let free = match nix::sys::statvfs::statvfs(dir) {
            Ok(s) => s.blocks_available().saturating_mul(s.fragment_size()),
            Err(e) => {
                log::warn!(
                    "files: cannot read the free space of {}: {e}",
                    dir.display()
                );
                0
            }
        };
        let promised: u64 = self
            .receiving
            .values()
            .filter(|i| !i.machine.is_finished())
            .map(|i| i.machine.size() - i.machine.got())
            .sum();
        free.saturating_sub(promised)
            .min(self.config.receive_max_bytes.unwrap_or(u64::MAX))
    }

    pub fn channel_data(&mut self, data: ChannelData, conductor: &mut Conductor, now: Instant) {
        let id = data.id;
        if let Some(out) = self.sending.get_mut(&id) {
            out.machine.on_message(data.binary, &data.data, now);
            return self.pump(id, conductor, now);
        }
        let Some(inb) = self.receiving.get_mut(&id) else {
            return;
        };
        let mut action = inb.machine.on_message(data.binary, data.data, now);
        while let Some(a) = action.take() {
            action = self.carry_out(id, a, conductor, now);
        }
    }

    /// Carries out a receiver's action; a follow-up when it could not be done.
    fn carry_out(
        &mut self,
        id: ChannelId,
        action: RecvAction,
        conductor: &mut Conductor,
        now: Instant,
    ) -> Option<RecvAction> {
        // Without a receive folder the receiver only ever refuses (`Fail`).
        let dir = self.config.receive_dir.clone().unwrap_or_default();
        let inb = self.receiving.get_mut(&id)?;
        match action {
            RecvAction::Create { name, size } => match create_part(&dir, &name) {
                Ok(part) => {
                    log::info!("files: receiving {name:?} ({size} bytes)");
                    inb.part = Some(part);
                    let reply = inb.machine.accept();
                    write_reply(conductor, id, &reply, now);
                    None
                }
                Err(e) => Some(inb.machine.refuse(FileError::Io(format!(
                    "cannot create a file in {}: {e}",
                    dir.display()
                )))),
            },
            RecvAction::Append(bytes) => {
                let (file, path) = inb.part.as_mut()?;
                match file.write_all(&bytes) {
                    Ok(()) => None,
                    Err(e) => {
                        let e = FileError::Io(format!("cannot write {}: {e}", path.display()));
                        Some(inb.machine.refuse(e))
                    }
                }
            }
            RecvAction::Complete {
                sha256,
                elapsed,
                reply,
            } => {
                let name = inb.machine.name().to_string();
                let bytes = inb.machine.size();
                let (file, part) = inb.part.take()?;
                drop(file);
                match publish(&dir, &part, &name) {
                    Ok(saved) => {
                        write_reply(conductor, id, &reply, now);
                        self.lines.push_back(format!(
                            "FILE_RECEIVED name={name:?} saved={saved:?} bytes={bytes} sha256={sha256} mb_per_s={:.1}",
                            mb_per_s(bytes, elapsed)
                        ));
                        self.receiving.remove(&id);
                        None
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&part);
                        let inb = self.receiving.get_mut(&id)?;
                        Some(inb.machine.refuse(FileError::Io(format!(
                            "cannot save {name:?} in {}: {e}",
                            dir.display()
                        ))))
                    }
                }
            }
            RecvAction::Fail { error, reply } => {
                write_reply(conductor, id, &reply, now);
                let name = inb.machine.name().to_string();
                if let Some((_, part)) = inb.part.take() {
                    let _ = std::fs::remove_file(part);
                }
                self.failed("recv", &name, &error.to_string());
                None
            }
        }
    }

    /// The channel drained: more of its file can go.
    pub fn channel_writable(&mut self, id: ChannelId, conductor: &mut Conductor, now: Instant) {
        self.pump(id, conductor, now);
    }

    pub fn channel_closed(&mut self, id: ChannelId, conductor: &mut Conductor, now: Instant) {
        if let Some(out) = self.sending.get_mut(&id) {
            out.machine.closed();
            return self.pump(id, conductor, now);
        }
        if let Some(mut inb) = self.receiving.remove(&id) {
            if let Some(e) = inb.machine.closed() {
                if let Some((_, part)) = inb.part.take() {
                    let _ = std::fs::remove_file(part);
                }
                self.failed("recv", inb.machine.name(), &e.to_string());
            }
        }
    }

    /// The call ended: every transfer not done failed; partial files go.
    pub fn call_ended(&mut self) {
        self.queue.clear();
        for (_, mut out) in std::mem::take(&mut self.sending) {
            out.machine.closed();
            if let Some(SendOutcome::Failed(e)) = out.machine.take_outcome() {
                self.failed("send", out.machine.name(), &e.to_string());
            }
        }
        for (_, mut inb) in std::mem::take(&mut self.receiving) {
            if let Some(e) = inb.machine.closed() {
                if let Some((_, part)) = inb.part.take() {
                    let _ = std::fs::remove_file(part);
                }
                self.failed("recv", inb.machine.name(), &e.to_string());
            }
        }
        self.progress_at = None;
    }

    /// Writes what a sender has while the channel takes it; ends a finished sender.
    fn pump(&mut self, id: ChannelId, conductor: &mut Conductor, now: Instant) {
        let Some(out) = self.sending.get_mut(&id) else {
            return;
        };
        loop {
            let buffered = conductor.file_channel_buffered(id);
            match out.machine.next(buffered) {
                None => break,
                Some(SendAction::ReadChunk { len }) => {
                    let mut buf = vec![0; len];
                    match read_full(&mut out.file, &mut buf) {
                        Ok(n) => {
                            buf.truncate(n);
                            if out.machine.chunk_read(buf, len).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let name = out.machine.name().to_string();
                            out.machine
                                .abort(FileError::Io(format!("cannot read {name:?}: {e}")));
                            break;
                        }
                    }
                }
                Some(SendAction::Write(msg)) => {
                    match conductor.write_file_channel(id, msg.binary, &msg.data, now) {
                        Ok(true) => out.machine.written(),
                        Ok(false) => break,
                        Err(e) => {
                            out.machine
                                .abort(FileError::Io(format!("cannot send: {e}")));
                            break;
                        }
                    }
                }
            }
        }
        let Some(outcome) = out.machine.take_outcome() else {
            return;
        };
        let name = out.machine.name().to_string();
        match outcome {
            SendOutcome::Sent {
                bytes,
                sha256,
                elapsed,
            } => self.lines.push_back(format!(
                "FILE_SENT name={name:?} bytes={bytes} sha256={sha256} mb_per_s={:.1}",
                mb_per_s(bytes, elapsed)
            )),
            SendOutcome::Failed(e) => self.failed("send", &name, &e.to_string()),
        }
        self.sending.remove(&id);
        conductor.close_file_channel(id, now);
        self.start_more(conductor, now);
    }

    fn failed(&mut self, dir: &str, name: &str, reason: &str) {
        log::warn!("files: {dir} {name:?} failed: {reason}");
        self.lines.push_back(format!(
            "FILE_FAILED dir={dir} name={name:?} reason={reason:?}"
        ));
    }

    /// Progress lines, once a second while anything moves.
    pub fn handle_timeout(&mut self, conductor: &mut Conductor, now: Instant) {
        if self.progress_at.is_none_or(|t| t > now) {
            return;
        }
        if self.sending.is_empty() && self.receiving.is_empty() {
            self.progress_at = None;
            return;
        }
        self.progress_at = Some(now + PROGRESS_INTERVAL);
        let mut ids: Vec<ChannelId> = self.sending.keys().copied().collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        for id in ids {
            let buffered = conductor.file_channel_buffered(id);
            let Some(out) = self.sending.get(&id) else {
                continue;
            };
            let m = &out.machine;
            let elapsed = now.saturating_duration_since(m.started().unwrap_or(now));
            self.lines.push_back(format!(
                "FILE_PROGRESS dir=send name={:?} bytes={} size={} mb_per_s={:.1} buffered={buffered} held={}",
                m.name(),
                m.sent(),
                m.size(),
                mb_per_s(m.sent(), elapsed),
                m.held()
            ));
            // A fall-back for a drain event that never came (the buffer shared with chat).
            self.pump(id, conductor, now);
        }
        for inb in self.receiving.values().filter(|i| !i.machine.is_finished()) {
            let m = &inb.machine;
            let elapsed = now.saturating_duration_since(m.started());
            self.lines.push_back(format!(
                "FILE_PROGRESS dir=recv name={:?} bytes={} size={} mb_per_s={:.1}",
                m.name(),
                m.got(),
                m.size(),
                mb_per_s(m.got(), elapsed)
            ));
        }
    }
}

/// Writes a reply on the channel. One short message: if the buffer is full the peer
/// will see the channel close instead.
fn write_reply(conductor: &mut Conductor, id: ChannelId, reply: &Outgoing, now: Instant) {
    match conductor.write_file_channel(id, reply.binary, &reply.data, now) {
        Ok(true) => {}
        Ok(false) => log::warn!("files: the channel's buffer is full: a reply was not sent"),
        Err(e) => log::warn!("files: cannot reply: {e}"),
    }
}

/// Creates the temporary file for `name` in `dir`: `.name.part`, numbered if taken.
fn create_part(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    for n in 0..MAX_NUMBERED {
        let path = dir.join(numbered_name(&format!(".{name}.part"), n));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many partial files of that name",
    ))
}

/// Gives the complete file its name (numbered if taken; never overwriting), returns it.
fn publish(dir: &Path, part: &Path, name: &str) -> io::Result<String> {
    for n in 0..MAX_NUMBERED {
        let saved = numbered_name(name, n);
        match std::fs::hard_link(part, dir.join(&saved)) {
            Ok(()) => {
                std::fs::remove_file(part)?;
                return Ok(saved);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{name:?} and {MAX_NUMBERED} numbered names are taken"),
    ))
}

/// Reads until `buf` is full or the file ends; the count read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn received_files_never_overwrite_and_partials_are_hidden() {
        let dir = temp_dir("publish");
        std::fs::write(dir.join("a.bin"), b"old").unwrap();
        let (mut f, part) = create_part(&dir, "a.bin").unwrap();
        assert_eq!(file_name(&part), ".a.bin.part");
        let (_, part2) = create_part(&dir, "a.bin").unwrap();
        assert_eq!(file_name(&part2), ".a.bin-1.part");
        f.write_all(b"new").unwrap();
        assert_eq!(publish(&dir, &part, "a.bin").unwrap(), "a-1.bin");
        assert_eq!(std::fs::read(dir.join("a.bin")).unwrap(), b"old");
        assert_eq!(std::fs::read(dir.join("a-1.bin")).unwrap(), b"new");
        assert!(!part.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The room a new file gets: the folder's free space less what files coming in still
    /// need, capped by `--receive-max-bytes`.
    #[test]
    fn room_is_free_space_less_promises_and_at_most_the_cap() {
        let dir = temp_dir("room");
        let s = nix::sys::statvfs::statvfs(&dir).unwrap();
        let free = s.blocks_available() * s.fragment_size();
        let mut t = FileTransfers::new(FileConfig {
            receive_dir: Some(dir.clone()),
            ..Default::default()
        });
        let room = t.room(&dir);
        assert!(room.abs_diff(free) < 256 << 20, "{room} vs {free}");
        // A file of half the room is coming in: the next one gets the rest at most.
        let now = Instant::now();
        let mut incoming = FileReceiver::new(Ok(u64::MAX), now);
        let offer = super::super::file_transfer::Control::File {
            name: "half.bin".into(),
            size: room / 2,
        };
        assert!(matches!(
            incoming.on_message(false, offer.to_bytes(), now),
            Some(RecvAction::Create { .. })
        ));
        let _ = incoming.accept();
        let id = str0m::Rtc::new(now).sdp_api().add_channel("any".into());
        t.receiving.insert(
            id,
            Inbound {
                machine: incoming,
                part: None,
            },
        );
        // Other programs write to the disk meanwhile: a margin for what they do.
        let margin = 256 << 20;
        let s = nix::sys::statvfs::statvfs(&dir).unwrap();
        let free_now = s.blocks_available() * s.fragment_size();
        assert!(t.room(&dir) + room / 2 <= free_now + margin);
        t.config.receive_max_bytes = Some(1000);
        assert_eq!(t.room(&dir), 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_flags_are_named() {
        let dir = temp_dir("flags");
        let c = FileConfig {
            receive_dir: Some(dir.join("missing")),
            ..Default::default()
        };
        assert!(c.check().unwrap_err().starts_with("--receive-dir "));
        let c = FileConfig {
            send: vec![dir.clone()],
            ..Default::default()
        };
        assert!(c.check().unwrap_err().ends_with(": not a regular file"));
        let c = FileConfig {
            send: vec![dir.join("missing.bin")],
            ..Default::default()
        };
        assert!(c.check().unwrap_err().starts_with("--send-file "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
