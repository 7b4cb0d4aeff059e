//! The signaling server, compatible with libwebrtc's `peerconnection_server`.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use peerconnection::server::cluster::RedisUrl;
use peerconnection::server::tls::TlsFiles;
use peerconnection::server::{ChannelConfig, Limits, Server, ServerConfig};

/// Signaling server for peerconnection clients (native and browser).
///
/// Speaks the protocol of libwebrtc's examples/peerconnection: /sign_in, /wait, /message,
/// /sign_out. One thread, one event loop. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TCP port to listen on; 0 picks a free port (printed on start).
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Seconds a member may go without a hanging GET before it is removed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Connections held at once; past this, new ones get 503 and are closed.
    #[arg(long, default_value_t = 16_000)]
    max_connections: usize,
    /// Largest request head (request line and headers) in bytes; past it, 431.
    #[arg(long, default_value_t = 8 * 1024)]
    max_header_bytes: usize,
    /// Largest request body in bytes; past it, 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Items queued for one member without a hanging GET; past it the member is removed.
    #[arg(long, default_value_t = 10_000)]
    max_queue: usize,
    /// Bytes queued for one member without a hanging GET; past it the member is removed.
    #[arg(long, default_value_t = 16 << 20)]
    max_queue_bytes: usize,
    /// Seconds a connection gets to send its request (and to take its answer); then 408.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Let anyone stop the server with GET /quit (off: /quit answers 403).
    #[arg(long)]
    allow_quit: bool,
    /// Do not serve the web client at / (then / answers 404).
    #[arg(long)]
    no_web: bool,
    /// Serve GET /metrics in the Prometheus text format (off: /metrics answers 404).
    #[arg(long)]
    metrics: bool,
    /// Serve GET /metrics on this separate address (e.g. 127.0.0.1:9100) and nothing else
    /// there; the protocol's ports answer /metrics with 404 unless --metrics is also given.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds an HTTP/1.1 connection kept alive may sit idle between requests.
    #[arg(long, default_value_t = 15.0)]
    keep_alive_timeout: f64,
    /// Bytes of request buffers, answers, queued messages and notices held at once; past
    /// it new work gets 503 and the members holding the most undelivered data are removed.
    #[arg(long, default_value_t = 256 << 20)]
    max_memory: usize,
    /// Also serve the protocol and the page over HTTPS on this port (0 picks one); needs
    /// --tls-cert and --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_port: Option<u16>,
    /// PEM file with the certificate chain for --tls-port.
    #[arg(long, requires = "tls_port")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the private key for --tls-port.
    #[arg(long, requires = "tls_port")]
    tls_key: Option<PathBuf>,
    /// A STUN or TURN server for the web page's calls, `stun:HOST:PORT` or
    /// `turn:USER:PASS@HOST:PORT[?transport=udp|tcp]` (repeatable), served as
    /// /ice-servers.json. Default: none, and then browsers need a direct route to their
    /// peer.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Share members and messages with other servers through Redis:
    /// redis://[:PASSWORD@]HOST:PORT[/DB]. Without it the server stands alone.
    #[arg(long)]
    redis: Option<String>,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{name} {value}: expected a positive number of seconds"))
}

fn config(args: &Args) -> Result<ServerConfig, String> {
    if args.max_connections == 0 {
        return Err("--max-connections 0: at least one connection is needed".into());
    }
    if args.max_memory < 1 << 20 {
        return Err(format!(
            "--max-memory {}: at least 1048576 bytes (1 MiB) are needed",
            args.max_memory
        ));
    }
    Ok(ServerConfig {
        bind: args.bind,
        port: args.port,
        channel: ChannelConfig {
            timeout: seconds("timeout", args.timeout)?,
            max_queue_items: args.max_queue,
            max_queue_bytes: args.max_queue_bytes,
            allow_quit: args.allow_quit,
            serve_web: !args.no_web,
        },
        limits: Limits {
            max_header_bytes: args.max_header_bytes,
            max_body_bytes: args.max_body_bytes,
        },
        max_connections: args.max_connections,
        request_timeout: seconds("request-timeout", args.request_timeout)?,
        metrics: args.metrics,
        metrics_addr: args.metrics_addr,
        keep_alive_timeout: seconds("keep-alive-timeout", args.keep_alive_timeout)?,
        max_memory: args.max_memory,
        tls: match (args.tls_port, &args.tls_cert, &args.tls_key) {
            (Some(port), Some(cert), Some(key)) => Some((
                port,
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            )),
            _ => None,
        },
        redis: args.redis.as_deref().map(RedisUrl::parse).transpose()?,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    peerconnection::init_logging("info");
    if let Err(e) = peerconnection::server::web::set_ice_servers(&args.ice_servers) {
        eprintln!("peerconnection_server: {e}");
        return ExitCode::from(2);
    }
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::from(2);
        }
    };
    match peerconnection::reactor::raise_fd_limit() {
        Ok(limit) if (limit as usize) < config.max_connections + 16 => log::warn!(
            "open-file limit {limit} is below --max-connections {}: accepts will pause when it runs out",
            config.max_connections
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let mut server = match Server::bind(config) {
        Ok(s) => s,
        // A certificate or key that cannot be used is a bad setting, like the others.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => println!("peerconnection_server listening on {addr}"),
        Err(e) => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::FAILURE;
        }
    }
    match server.metrics_local_addr() {
        Some(Ok(addr)) => println!("peerconnection_server metrics on {addr}"),
        Some(Err(e)) => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    match server.tls_local_addr() {
        Some(Ok(addr)) => println!("peerconnection_server listening for TLS on {addr}"),
        Some(Err(e)) => {
            eprintln!("peerconnection_server: {e}");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    let _ = std::io::stdout().flush();
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerconnection_server: {e}");
            ExitCode::FAILURE
        }
    }
}
