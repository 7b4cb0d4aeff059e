//! HTTPS on `--tls-port`: rustls driven sans-IO from the server's one loop. Each TLS
//! connection's `rustls::ServerConnection` takes the ciphertext the loop reads
//! (`read_tls`), turns it into plaintext (`process_new_packets`, `reader`), and hands back
//! records (`write_tls`) that go through the same output buffer plain connections use, so
//! partial writes, writable interest and the memory budget work the same for both.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;

use crate::reactor::{read_available, read_once, BufferedStream, ReadStep};

/// Where the certificate chain and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the TLS set-up failed, naming the file.
#[derive(Debug)]
pub struct TlsSetupError(String);

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

/// Reads the PEM files and builds the rustls configuration every TLS connection shares.
pub fn load(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let bad = |path: &Path, why: String| TlsSetupError(format!("{}: {why}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(&files.key, format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&files.key, format!("key does not fit the certificate: {e}")))?;
    // Browsers ask for h2 first: offering only HTTP/1.1 keeps them on the one protocol
    // the server speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Memory a TLS connection holds beyond what the loop counts itself (rustls's record
/// buffers), counted against `--max-memory`.
pub const TLS_CONNECTION_COST: usize = 32 * 1024;

/// One accepted connection's byte stream: plain TCP, or TLS over it.
#[derive(Debug)]
pub struct ServerStream {
    /// The socket and its output buffer (ciphertext for TLS).
    out: BufferedStream<TcpStream>,
    tls: Option<Box<ServerConnection>>,
    /// TLS records made but not yet handed to `out`.
    records: Vec<u8>,
}

impl ServerStream {
    pub fn plain(socket: TcpStream) -> ServerStream {
        ServerStream {
            out: BufferedStream::new(socket),
            tls: None,
            records: Vec::new(),
        }
    }

    pub fn tls(
        socket: TcpStream,
        config: &Arc<rustls::ServerConfig>,
    ) -> Result<ServerStream, rustls::Error> {
        let mut conn = ServerConnection::new(config.clone())?;
        // Answers are bounded by the loop's own limits and counted in its budget.
        conn.set_buffer_limit(None);
        Ok(ServerStream {
            out: BufferedStream::new(socket),
            tls: Some(Box::new(conn)),
            records: Vec::new(),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The socket, for registering with the poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.out.io
    }

    /// Bytes written by the program and not yet taken by the kernel.
    pub fn pending(&self) -> usize {
        self.out.pending()
    }

    /// One read of plaintext. For TLS, reads and processes ciphertext until some plaintext
    /// comes out or the socket would block, sending what the handshake asks for on the way;
    /// a TLS error (a bad handshake, plain HTTP on the TLS port) sends its alert and reads
    /// as closed.
    pub fn read(&mut self, buf: &mut [u8]) -> ReadStep {
        if self.tls.is_none() {
            return read_once(&mut self.out.io, buf);
        }
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return ReadStep::Closed;
            };
            match tls.reader().read(buf) {
                Ok(0) => return ReadStep::Closed,
                Ok(n) => return ReadStep::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return ReadStep::Closed,
            }
            match tls.read_tls(&mut self.out.io) {
                Ok(0) => return ReadStep::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStep::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadStep::Closed,
            }
            let processed = tls.process_new_packets();
            // Handshake records, or the alert for an error.
            if self.send_records().is_err() {
                return ReadStep::Closed;
            }
            if let Err(e) = processed {
                log::debug!("TLS error: {e}");
                return ReadStep::Closed;
            }
        }
    }

    /// Reads and drops what arrives (an answered connection about to close), bounded.
    pub fn discard(&mut self, scratch: &mut Vec<u8>, limit: usize) {
        scratch.clear();
        read_available(&mut self.out.io, scratch, limit);
    }

    /// Sends plaintext: as it is, or as TLS records. Writes what the socket takes now and
    /// keeps the rest.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => self.out.send(bytes),
            Some(tls) => {
                tls.writer().write_all(bytes)?;
                self.send_records()
            }
        }
    }

    /// Ends a TLS session properly (`close_notify`) before the socket closes; a client
    /// reading to the end then sees a clean end, not a truncation.
    pub fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = self.send_records();
        }
    }

    /// Writes buffered bytes until done or the socket would block. True when all is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        self.out.flush()
    }

    /// Moves the records rustls has made into the output buffer and writes.
    fn send_records(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        self.records.clear();
        while tls.wants_write() {
            tls.write_tls(&mut self.records)?;
        }
        if self.records.is_empty() {
            return Ok(());
        }
        self.out.send(&self.records)
    }
}
