//! Chat typed on stdin (`--chat-stdin`): the loop polls stdin as a non-blocking descriptor,
//! reads until it would block, and hands the lines to the policy. [`LineSplitter`] is the
//! IO-free part (lines bounded by [`MAX_CHAT_LINE`]); [`StdinReader`] does the reads.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::client_app::{ChatInput, MAX_CHAT_LINE};

/// Splits bytes into lines of at most [`MAX_CHAT_LINE`] bytes. A longer line is reported
/// once as [`ChatInput::TooLong`] as soon as it passes the limit, and its remaining bytes
/// are discarded up to its newline: the buffer never holds more than the limit (and one
/// byte for a `\r`).
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    /// Feeds bytes; complete lines (and overlong ones) are pushed to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<ChatInput>) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, ends_line) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            if !self.discarding {
                // Room for one more byte: the '\r' of a CRLF line ending.
                if self.line.len() + body.len() > MAX_CHAT_LINE + 1 {
                    self.line.clear();
                    self.discarding = true;
                    out.push(ChatInput::TooLong);
                } else {
                    self.line.extend_from_slice(body);
                }
            }
            if ends_line {
                if !std::mem::take(&mut self.discarding) {
                    out.push(line(&mut self.line));
                }
                self.line.clear();
            }
        }
    }

    /// End of input: a last line without its newline still counts.
    pub fn finish(&mut self, out: &mut Vec<ChatInput>) {
        if !self.line.is_empty() && !self.discarding {
            out.push(line(&mut self.line));
        }
        self.line.clear();
        self.discarding = false;
    }
}

fn line(bytes: &mut Vec<u8>) -> ChatInput {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.len() > MAX_CHAT_LINE {
        return ChatInput::TooLong;
    }
    ChatInput::Line(String::from_utf8_lossy(bytes).into_owned())
}

/// Stdin, switched to non-blocking for the loop's poll; its flags are restored on drop
/// (a terminal's file description is shared with the shell).
pub struct StdinReader {
    file: File,
    old_flags: Option<OFlag>,
    splitter: LineSplitter,
    eof: bool,
}

impl StdinReader {
    /// A duplicate of stdin, made non-blocking.
    pub fn open() -> io::Result<StdinReader> {
        let file = File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
        fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(StdinReader {
            file,
            old_flags: Some(flags),
            splitter: LineSplitter::new(),
            eof: false,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// True once stdin is at its end (or failed): reading stops.
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Reads until stdin would block (or ends); the lines read so far.
    pub fn read_lines(&mut self) -> Vec<ChatInput> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !self.eof {
            match self.file.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    self.splitter.finish(&mut out);
                }
                Ok(n) => self.splitter.push(&buf[..n], &mut out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("chat: cannot read stdin ({e}): chat input stops");
                    self.eof = true;
                    self.splitter.finish(&mut out);
                }
            }
        }
        out
    }
}

impl Drop for StdinReader {
    fn drop(&mut self) {
        if let Some(flags) = self.old_flags.take() {
            let _ = fcntl(&self.file, FcntlArg::F_SETFL(flags));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], finish: bool) -> Vec<ChatInput> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        if finish {
            s.finish(&mut out);
        }
        out
    }

    fn l(s: &str) -> ChatInput {
        ChatInput::Line(s.into())
    }

    #[test]
    fn lines_split_across_reads_and_line_endings() {
        assert_eq!(
            split(&[b"hel", b"lo\nwor", b"ld\r\n\nlast"], false),
            [l("hello"), l("world"), l("")]
        );
        assert_eq!(split(&[b"a\nlast"], true), [l("a"), l("last")]);
        assert_eq!(split(&[b"\xff\xfeok\n"], false), [l("\u{fffd}\u{fffd}ok")]);
    }

    #[test]
    fn long_lines_are_refused_once_and_never_buffered() {
        let max = "x".repeat(MAX_CHAT_LINE);
        let line = format!("{max}\n");
        assert_eq!(split(&[line.as_bytes()], false), [l(&max)]);
        let crlf = format!("{max}\r\n");
        assert_eq!(split(&[crlf.as_bytes()], false), [l(&max)]);
        // One over, in pieces: one TooLong, then the next line is fine.
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for _ in 0..100 {
            s.push(&[b'y'; 1000], &mut out);
            assert!(s.line.len() <= MAX_CHAT_LINE + 1);
        }
        s.push(b"tail\nnext\n", &mut out);
        assert_eq!(out, [ChatInput::TooLong, l("next")]);
        let over = "z".repeat(MAX_CHAT_LINE + 1);
        assert_eq!(split(&[over.as_bytes()], true), [ChatInput::TooLong]);
    }
}
