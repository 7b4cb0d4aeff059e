//! The bodies peers send each other through `/message`: session descriptions and ICE
//! candidates as JSON (the original client's field names), and the bare text `BYE`.

use std::fmt;

use serde_json::{json, Value};

/// Whether a session description is an offer or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

impl SdpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        }
    }
}

/// One message between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    Sdp {
        kind: SdpKind,
        sdp: String,
    },
    Candidate {
        mid: Option<String>,
        mline_index: Option<u32>,
        /// `candidate:...` text; empty means end of candidates.
        candidate: String,
    },
    Bye,
}

/// Why a message body was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    NotJson(String),
    UnknownType(String),
    Missing(&'static str),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotJson(e) => write!(f, "message is neither BYE nor JSON: {e}"),
            MessageError::UnknownType(t) => write!(f, "unknown session description type {t:?}"),
            MessageError::Missing(field) => write!(f, "message lacks the field {field:?}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// At most `max` characters of `text` on one line, for logs and reasons: a peer's message
/// or a parser's error is never quoted whole (a hostile SDP can be a megabyte, and some
/// parsers' errors are multi-line dumps of their input).
pub fn excerpt(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut out: String = line.chars().take(max).collect();
    if out.len() < line.len() || text.trim().lines().nth(1).is_some() {
        out.push_str("...");
    }
    out
}

/// The content type every message is posted with (a CORS "simple" type).
pub const CONTENT_TYPE: &str = "text/plain";

impl PeerMessage {
    pub fn parse(body: &[u8]) -> Result<PeerMessage, MessageError> {
        if body.trim_ascii() == b"BYE" {
            return Ok(PeerMessage::Bye);
        }
        let v: Value =
            serde_json::from_slice(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
        if let Some(kind) = v.get("type") {
            let kind = match kind.as_str() {
                Some("offer") => SdpKind::Offer,
                Some("answer") => SdpKind::Answer,
                _ => return Err(MessageError::UnknownType(excerpt(&kind.to_string(), 40))),
            };
            let sdp = v
                .get("sdp")
                .and_then(Value::as_str)
                .ok_or(MessageError::Missing("sdp"))?;
            return Ok(PeerMessage::Sdp {
                kind,
                sdp: sdp.to_string(),
            });
        }
        let candidate = v
            .get("candidate")
            .and_then(Value::as_str)
            .ok_or(MessageError::Missing("candidate"))?;
        Ok(PeerMessage::Candidate {
            mid: v.get("sdpMid").and_then(Value::as_str).map(str::to_string),
            mline_index: v
                .get("sdpMLineIndex")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            candidate: candidate.to_string(),
        })
    }

    pub fn to_body(&self) -> Vec<u8> {
        match self {
            PeerMessage::Bye => b"BYE".to_vec(),
            PeerMessage::Sdp { kind, sdp } => {
                serde_json::to_vec(&json!({"type": kind.as_str(), "sdp": sdp})).unwrap_or_default()
            }
            PeerMessage::Candidate {
                mid,
                mline_index,
                candidate,
            } => serde_json::to_vec(&json!({
                "sdpMid": mid,
                "sdpMLineIndex": mline_index,
                "candidate": candidate,
            }))
            .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for m in [
            PeerMessage::Bye,
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                sdp: "v=0\r\n".into(),
            },
            PeerMessage::Candidate {
                mid: Some("0".into()),
                mline_index: Some(0),
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
            },
        ] {
            assert_eq!(PeerMessage::parse(&m.to_body()).unwrap(), m);
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(matches!(
            PeerMessage::parse(b"{not json"),
            Err(MessageError::NotJson(_))
        ));
        assert!(matches!(
            PeerMessage::parse(br#"{"type":"pranswer","sdp":""}"#),
            Err(MessageError::UnknownType(_))
        ));
        assert_eq!(
            PeerMessage::parse(br#"{"type":"offer"}"#),
            Err(MessageError::Missing("sdp"))
        );
        assert_eq!(
            PeerMessage::parse(br#"{"sdpMid":"0"}"#),
            Err(MessageError::Missing("candidate"))
        );
        assert_eq!(PeerMessage::parse(b"BYE\r\n"), Ok(PeerMessage::Bye));
        let huge = format!(r#"{{"type":"{}","sdp":""}}"#, "x".repeat(100_000));
        let e = PeerMessage::parse(huge.as_bytes()).unwrap_err().to_string();
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcde...");
        assert_eq!(excerpt("first line\nsecond\n", 40), "first line...");
        assert_eq!(excerpt("\n\n  x  \n", 40), "x");
    }
}
