//! Naming the pair that carries a call, `LOCAL/REMOTE` with the candidate types, for the
//! STATS line and the overlay. str0m reports the selected pair as two addresses (the
//! local one being the socket or relayed address it sends from); the types come from the
//! candidates on each side.

use std::net::SocketAddr;

use str0m::{Candidate, CandidateKind};

/// `host`, `srflx`, `prflx` or `relay`.
fn kind_name(kind: CandidateKind) -> &'static str {
    match kind {
        CandidateKind::Host => "host",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::Relayed => "relay",
    }
}

/// The pair str0m sends on, from `source` to `destination`, as `LOCAL/REMOTE`.
///
/// Remote: the type of the peer's candidate at `destination`, `prflx` when the peer never
/// told us that address (its NAT's mapping, learnt from its checks). Local: `relay` when
/// we send from a relayed address; `srflx` when we send from a host socket that has a
/// server-reflexive address and the peer is not reached at one of its host addresses
/// (the packets leave through our NAT, so the peer sees the reflexive address); else
/// `host`.
pub fn pair_label(
    local: &[Candidate],
    remote: &[Candidate],
    source: SocketAddr,
    destination: SocketAddr,
) -> String {
    let remote_kind = remote
        .iter()
        .find(|c| c.addr() == destination)
        .map_or(CandidateKind::PeerReflexive, Candidate::kind);
    let relayed = local
        .iter()
        .any(|c| c.kind() == CandidateKind::Relayed && c.addr() == source);
    let local_kind = if relayed {
        CandidateKind::Relayed
    } else if remote_kind != CandidateKind::Host
        && local
            .iter()
            .any(|c| c.kind() == CandidateKind::ServerReflexive && c.local() == source)
    {
        CandidateKind::ServerReflexive
    } else {
        CandidateKind::Host
    };
    format!("{}/{}", kind_name(local_kind), kind_name(remote_kind))
}

/// The UDP candidates in a session description's `a=candidate` lines (others skipped).
pub fn candidates_in_sdp(sdp: &str) -> Vec<Candidate> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate"))
        .filter_map(|l| Candidate::from_sdp_string(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_are_named_by_their_candidates() {
        let host = a("10.1.1.2:5000");
        let srflx = a("203.0.113.10:5000");
        let relayed = a("203.0.113.1:49160");
        let local = [
            Candidate::host(host, "udp").unwrap(),
            Candidate::server_reflexive(srflx, host, "udp").unwrap(),
            Candidate::relayed(relayed, host, "udp").unwrap(),
        ];
        let peer_host = a("10.2.1.2:6000");
        let peer_srflx = a("203.0.113.20:6000");
        let peer_relay = a("203.0.113.1:49170");
        let remote = [
            Candidate::host(peer_host, "udp").unwrap(),
            Candidate::server_reflexive(peer_srflx, peer_host, "udp").unwrap(),
            Candidate::relayed(peer_relay, peer_host, "udp").unwrap(),
        ];
        assert_eq!(pair_label(&local, &remote, host, peer_host), "host/host");
        assert_eq!(pair_label(&local, &remote, host, peer_srflx), "srflx/srflx");
        assert_eq!(
            pair_label(&local, &remote, host, a("203.0.113.20:6001")),
            "srflx/prflx"
        );
        assert_eq!(
            pair_label(&local, &remote, relayed, peer_srflx),
            "relay/srflx"
        );
        assert_eq!(
            pair_label(&local, &remote, relayed, peer_relay),
            "relay/relay"
        );
        assert_eq!(pair_label(&local[..1], &[], host, peer_host), "host/prflx");
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.2.1.2 6000 typ host\r\n\
                   a=candidate:2 1 udp 1 203.0.113.1 49170 typ relay raddr 0.0.0.0 rport 0\r\n\
                   a=candidate:bad\r\n";
        let found = candidates_in_sdp(sdp);
        assert_eq!(
            pair_label(&local, &found, relayed, peer_relay),
            "relay/relay"
        );
        assert_eq!(found.len(), 2);
    }
}
