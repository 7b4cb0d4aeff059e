//! Peer-entry lines: `name,id,connected\n`, as the sign-in body and notifications carry them.

use std::fmt;

/// A member id as the server hands it out (the first is 1).
pub type PeerId = u32;

/// One member as the protocol describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub name: String,
    pub id: PeerId,
    pub connected: bool,
}

/// Why a peer-entry line did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry(pub String);

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad peer entry {:?}: expected name,id,connected", self.0)
    }
}

impl std::error::Error for BadEntry {}

/// Appends `name,id,1\n` (or `,0`) to `out`; `name` is raw bytes, already free of commas.
pub fn write_entry(out: &mut Vec<u8>, name: &[u8], id: PeerId, connected: bool) {
    out.extend_from_slice(name);
    out.push(b',');
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(if connected { b",1\n" } else { b",0\n" });
}

impl PeerEntry {
    /// Parses one line (without its `\n`). The name is everything before the id, so the
    /// line is split from the right.
    pub fn parse(line: &str) -> Result<PeerEntry, BadEntry> {
        let bad = || BadEntry(line.to_string());
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (rest, connected) = line.rsplit_once(',').ok_or_else(bad)?;
        let (name, id) = rest.rsplit_once(',').ok_or_else(bad)?;
        let id = super::parse_peer_id(id).ok_or_else(bad)?;
        let connected = match connected {
            "1" => true,
            "0" => false,
            _ => return Err(bad()),
        };
        Ok(PeerEntry {
            name: name.to_string(),
            id,
            connected,
        })
    }

    /// Parses a body of entries, one per line; empty lines are skipped.
    pub fn parse_list(body: &str) -> Result<Vec<PeerEntry>, BadEntry> {
        body.split('\n')
            .filter(|l| !l.trim().is_empty())
            .map(PeerEntry::parse)
            .collect()
    }

    /// The entry as a line, ending in `\n`.
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        write_entry(&mut out, self.name.as_bytes(), self.id, self.connected);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = PeerEntry {
            name: "alice@host".into(),
            id: 7,
            connected: true,
        };
        assert_eq!(e.to_line(), "alice@host,7,1\n");
        assert_eq!(PeerEntry::parse("alice@host,7,1").unwrap(), e);
    }

    #[test]
    fn list_and_errors() {
        let list = PeerEntry::parse_list("a,1,1\nb,2,0\n").unwrap();
        assert_eq!(list.len(), 2);
        assert!(!list[1].connected);
        assert!(PeerEntry::parse("nocommas").is_err());
        assert!(PeerEntry::parse("a,x,1").is_err());
        assert!(PeerEntry::parse("a,1,2").is_err());
    }
}
