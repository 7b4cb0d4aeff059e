//! Non-blocking reads and buffered writes: a partial write keeps the rest and is flushed on
//! the next writable event.

use std::io::{self, Read, Write};

/// What a read pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub bytes: usize,
    /// The peer closed its side (or the connection broke).
    pub closed: bool,
}

/// Reads until the source would block, appending to `buf`, and stops once `buf` holds more
/// than `limit` bytes so a flood cannot grow memory without bound.
pub fn read_available<R: Read>(src: &mut R, buf: &mut Vec<u8>, limit: usize) -> ReadOutcome {
    let mut total = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if buf.len() > limit {
            return ReadOutcome {
                bytes: total,
                closed: false,
            };
        }
        match src.read(&mut chunk) {
            Ok(0) => {
                return ReadOutcome {
                    bytes: total,
                    closed: true,
                }
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return ReadOutcome {
                    bytes: total,
                    closed: false,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                return ReadOutcome {
                    bytes: total,
                    closed: true,
                }
            }
        }
    }
}

/// What one non-blocking read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStep {
    /// This many bytes, at the start of the buffer.
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed its side (or the connection broke).
    Closed,
}

/// One non-blocking read into `buf`, retried only when interrupted. For callers that stop
/// reading as soon as they have what they need (a whole request) instead of reading until
/// the socket would block: on Linux a stream socket registered edge-triggered is reported
/// again for every later arrival, so nothing is missed by stopping early.
pub fn read_once<R: Read>(src: &mut R, buf: &mut [u8]) -> ReadStep {
    loop {
        match src.read(buf) {
            Ok(0) => return ReadStep::Closed,
            Ok(n) => return ReadStep::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStep::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadStep::Closed,
        }
    }
}

/// A stream with an output buffer.
#[derive(Debug)]
pub struct BufferedStream<S> {
    pub io: S,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S: Read + Write> BufferedStream<S> {
    pub fn new(io: S) -> Self {
        BufferedStream {
            io,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Bytes written by the program but not yet taken by the kernel.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queues bytes and writes as much as the socket takes now.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.pending() == 0 {
            self.out.clear();
            self.out_pos = 0;
            // Fast path: write straight from the caller's slice, buffer only the rest.
            let n = write_some(&mut self.io, bytes)?;
            self.out.extend_from_slice(&bytes[n..]);
            return Ok(());
        }
        self.out.extend_from_slice(bytes);
        self.flush().map(|_| ())
    }

    /// Writes buffered bytes until done or the socket would block. True when all is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            let n = write_some(&mut self.io, &self.out[self.out_pos..])?;
            if n == 0 {
                return Ok(false);
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }
}

/// One non-blocking write; `Ok(0)` means it would block.
fn write_some<W: Write>(w: &mut W, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match w.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call and then blocks once.
    struct Trickle {
        taken: Vec<u8>,
        cap: usize,
        block_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.block_next {
                self.block_next = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            let n = buf.len().min(self.cap);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_are_kept_and_flushed_in_order() {
        let mut s = BufferedStream::new(Trickle {
            taken: vec![],
            cap: 3,
            block_next: false,
        });
        s.send(b"hello ").unwrap();
        assert_eq!(s.pending(), 3);
        s.send(b"world").unwrap();
        while !s.flush().unwrap() {}
        assert_eq!(s.io.taken, b"hello world");
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let data = vec![7u8; 100_000];
        let mut src = &data[..];
        let mut buf = Vec::new();
        let out = read_available(&mut src, &mut buf, 20_000);
        assert!(!out.closed);
        assert!(buf.len() > 20_000 && buf.len() < 40_000);
    }
}
