//! The peerconnection wire format, written once: request building, response building and
//! parsing, request-path arguments, peer-entry lines and the JSON messages peers exchange.
//! The server, the client, the load generator and the tests all use this module.

pub mod exchange;
pub mod http;
pub mod message;
pub mod peers;

pub use exchange::{ExchangeError, ExchangeOutcome, HttpExchange};
pub use http::{Response, ResponseParser, Status};
pub use peers::{PeerEntry, PeerId};

/// Default TCP port of the signaling server, as the original.
pub const DEFAULT_PORT: u16 = 8888;

/// Longest member name the server keeps, as the original (`kMaxNameLength`).
pub const MAX_NAME_LEN: usize = 512;

/// Splits a request target into its path and the raw argument text after `?`.
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((path, args)) => (path, args),
        None => (target, ""),
    }
}

/// Finds `key=value` as a whole argument (at the start of `args` or after `&`).
pub fn find_arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split('&').find_map(|pair| {
        let rest = pair.strip_prefix(key)?;
        rest.strip_prefix('=')
    })
}

/// Parses a peer id argument: a non-negative decimal integer that fits a [`PeerId`].
pub fn parse_peer_id(text: &str) -> Option<PeerId> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_at_first_question_mark() {
        assert_eq!(split_target("/sign_in?a?b"), ("/sign_in", "a?b"));
        assert_eq!(split_target("/wait"), ("/wait", ""));
    }

    #[test]
    fn args_match_whole_names_only() {
        assert_eq!(find_arg("peer_id=1&to=2", "to"), Some("2"));
        assert_eq!(find_arg("peer_id=1&xto=2", "to"), None);
        assert_eq!(find_arg("to=3&peer_id=1", "to"), Some("3"));
        assert_eq!(find_arg("peer_id=1", "peer_id"), Some("1"));
        assert_eq!(find_arg("peer_id", "peer_id"), None);
    }

    #[test]
    fn peer_ids_are_strict_decimals() {
        assert_eq!(parse_peer_id("17"), Some(17));
        assert_eq!(parse_peer_id(""), None);
        assert_eq!(parse_peer_id("-1"), None);
        assert_eq!(parse_peer_id("1a"), None);
        assert_eq!(parse_peer_id("99999999999"), None);
    }
}
