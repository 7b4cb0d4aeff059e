//! Calls across NATs: the STUN and TURN servers the user names, the candidates they give
//! (server-reflexive from a STUN binding, relayed from a TURN allocation) and the wrapping
//! of relayed packets. str0m gathers nothing and speaks no TURN, so this is ours; like the
//! other machines it reads no clock and owns no socket.

pub mod gatherer;
pub mod pair;
pub mod stun;
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

/// A TURN server with its long-term credentials (`USER:PASSWORD@HOST:PORT`).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub username: String,
    pub password: String,
    pub server: ServerName,
}

impl fmt::Debug for TurnServer {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***@{}", self.username, self.server)
    }
}

impl TurnServer {
    pub fn parse(s: &str) -> Result<TurnServer, String> {
        let bad = |why: &str| format!("{:?}: expected USER:PASSWORD@HOST:PORT ({why})", redact(s));
        let (creds, server) = s.rsplit_once('@').ok_or_else(|| bad("no @"))?;
        let (username, password) = creds.split_once(':').ok_or_else(|| bad("no password"))?;
        if username.is_empty() || password.is_empty() {
            return Err(bad("empty user or password"));
        }
        let server = ServerName::parse(server).map_err(|_| bad("bad HOST:PORT"))?;
        Ok(TurnServer {
            username: username.to_string(),
            password: password.to_string(),
            server,
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
        assert!(!format!("{t:?}").contains("se:cr@t"));
        for bad in ["alice@h:1", "alice:pw@h", ":pw@h:1", "alice:@h:1", "h:1"] {
            let e = TurnServer::parse(bad).unwrap_err();
            assert!(e.contains("USER:PASSWORD@HOST:PORT"), "{e}");
            assert!(!e.contains("pw@"), "the password is not echoed: {e}");
        }
        assert_eq!(IcePolicy::parse("relay"), Ok(IcePolicy::Relay));
        assert!(IcePolicy::parse("none").unwrap_err().contains("\"none\""));
    }
}
