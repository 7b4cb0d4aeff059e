//! Calls across NATs: the STUN and TURN servers the user names, the candidates they give
//! (server-reflexive from a STUN binding, relayed from a TURN allocation) and the wrapping
//! of relayed packets. str0m gathers nothing and speaks no TURN, so this is ours; like the
//! other machines it reads no clock and owns no socket.

pub mod gatherer;
pub mod pair;
pub mod stun;
pub mod tcp;
pub mod transaction;
pub mod turn;

use std::fmt;
use std::net::SocketAddr;

pub use gatherer::{Delivery, GatherOutput, IceGatherer};
pub use pair::pair_label;

/// A datagram to send from the local socket `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Which local candidates a call offers (`--ice-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcePolicy {
    /// Host, server-reflexive and relayed.
    #[default]
    All,
    /// Relayed only: our addresses stay hidden from the peer.
    Relay,
}

impl IcePolicy {
    pub fn parse(s: &str) -> Result<IcePolicy, String> {
        match s {
            "all" => Ok(IcePolicy::All),
            "relay" => Ok(IcePolicy::Relay),
            _ => Err(format!("{s:?}: expected all or relay")),
        }
    }
}

/// A server named on the command line: a host name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName {
    pub host: String,
    pub port: u16,
}

impl ServerName {
    /// `HOST:PORT` or `[V6]:PORT`.
    pub fn parse(s: &str) -> Result<ServerName, String> {
        let bad = || format!("{s:?}: expected HOST:PORT");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        Ok(ServerName {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the client reaches a TURN server. Peers are reached from the server over UDP
/// either way (no RFC 6062 TCP relaying): TCP only crosses a network that blocks UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TurnTransport {
    #[default]
    Udp,
    /// One TCP connection per allocation, messages framed by their own lengths.
    Tcp,
}

impl fmt::Display for TurnTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
        })
    }
}

/// A TURN server with its long-term credentials
/// (`USER:PASSWORD@HOST:PORT[?transport=udp|tcp]`, the ICE URL convention).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub username: String,
    pub password: String,
    pub server: ServerName,
    pub transport: TurnTransport,
}

impl fmt::Debug for TurnServer {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:***@{}?transport={}",
            self.username, self.server, self.transport
        )
    }
}

impl TurnServer {
    pub fn parse(s: &str) -> Result<TurnServer, String> {
        let bad = |why: &str| {
            format!(
                "{:?}: expected USER:PASSWORD@HOST:PORT[?transport=udp|tcp] ({why})",
                redact(s)
            )
        };
        let (creds, server) = s.rsplit_once('@').ok_or_else(|| bad("no @"))?;
        let (username, password) = creds.split_once(':').ok_or_else(|| bad("no password"))?;
        if username.is_empty() || password.is_empty() {
            return Err(bad("empty user or password"));
        }
        // The query can only follow the host (a password may hold '?').
        let (server, transport) = match server.split_once('?') {
            None => (server, TurnTransport::Udp),
            Some((server, query)) => {
                let value = query
                    .strip_prefix("transport=")
                    .ok_or_else(|| bad(&format!("unknown parameter {query:?}")))?;
                let transport = match value {
                    "udp" => TurnTransport::Udp,
                    "tcp" => TurnTransport::Tcp,
                    other => return Err(bad(&format!("transport {other:?}: expected udp or tcp"))),
                };
                (server, transport)
            }
        };
        let server = ServerName::parse(server).map_err(|_| bad("bad HOST:PORT"))?;
        Ok(TurnServer {
            username: username.to_string(),
            password: password.to_string(),
            server,
            transport,
        })
    }
}

/// `USER:PASSWORD@HOST:PORT` with the password hidden, for error messages.
fn redact(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{creds}@{host}"),
        },
        None => s.to_string(),
    }
}

/// The servers and policy from the command line (none by default: calls then need a
/// direct route between the two machines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServers {
    pub stun: Vec<ServerName>,
    pub turn: Vec<TurnServer>,
    pub policy: IcePolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_flags_parse_and_bad_ones_name_the_value() {
        assert_eq!(
            ServerName::parse("stun.example.org:3478").unwrap(),
            ServerName {
                host: "stun.example.org".into(),
                port: 3478
            }
        );
        assert_eq!(
            ServerName::parse("[2001:db8::1]:3478").unwrap().host,
            "2001:db8::1"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":3478",
            "host:0",
            "host:99999",
            "a@b:1",
        ] {
            let e = ServerName::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let t = TurnServer::parse("alice:se:cr@t@203.0.113.1:3478").unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("alice", "se:cr@t")
        );
        assert_eq!(t.server.port, 3478);
        assert_eq!(t.transport, TurnTransport::Udp);
        assert!(!format!("{t:?}").contains("se:cr@t"));
        let t = TurnServer::parse("alice:p?w@203.0.113.1:3478?transport=tcp").unwrap();
        assert_eq!(
            (t.password.as_str(), t.server.port, t.transport),
            ("p?w", 3478, TurnTransport::Tcp)
        );
        let t = TurnServer::parse("alice:pw@[2001:db8::1]:3478?transport=udp").unwrap();
        assert_eq!(
            (t.server.host.as_str(), t.transport),
            ("2001:db8::1", TurnTransport::Udp)
        );
        for (bad, named) in [
            ("alice:pw@h:1?transport=tls", "\"tls\""),
            ("alice:pw@h:1?transport=", "\"\""),
            ("alice:pw@h:1?proto=tcp", "\"proto=tcp\""),
        ] {
            let e = TurnServer::parse(bad).unwrap_err();
            assert!(e.contains(named), "{e}");
            assert!(!e.contains("pw@"), "the password is not echoed: {e}");
        }
        for bad in ["alice@h:1", "alice:pw@h", ":pw@h:1", "alice:@h:1", "h:1"] {
            let e = TurnServer::parse(bad).unwrap_err();
            assert!(e.contains("USER:PASSWORD@HOST:PORT"), "{e}");
            assert!(!e.contains("pw@"), "the password is not echoed: {e}");
        }
        assert_eq!(IcePolicy::parse("relay"), Ok(IcePolicy::Relay));
        assert!(IcePolicy::parse("none").unwrap_err().contains("\"none\""));
    }
}
