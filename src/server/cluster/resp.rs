//! RESP2, the Redis wire format, without IO: commands out as arrays of bulk strings, replies
//! in as [`Value`]s. Our own few lines rather than the `redis-protocol` crate: the server
//! needs five reply types and one command shape, and the crate would bring its buffer and
//! parser-combinator dependencies into a build shared by every program here.
//!
//! Redis is outside input: sizes and nesting are bounded, and garbage is an error value.

use std::fmt;

/// The largest bulk string accepted from Redis (a queued message is at most a request body).
pub const MAX_BULK: usize = 64 << 20;
/// The most elements in one array (an `HGETALL` of every member has two per member).
pub const MAX_ARRAY: usize = 1 << 22;
/// Arrays inside arrays (pub/sub pushes are one level; nothing we send nests deeper).
const MAX_DEPTH: usize = 4;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(Vec<u8>),
    /// `-ERR ...`
    Error(Vec<u8>),
    Int(i64),
    /// `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// Bytes from Redis that are not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError(pub String);

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not RESP from Redis: {}", self.0)
    }
}

impl std::error::Error for RespError {}

/// Appends one command (`*N` array of bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one value from the front of `buf`: `Ok(None)` until it is whole, else the value
/// and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    let mut at = 0;
    Ok(value(buf, &mut at, 0)?.map(|v| (v, at)))
}

/// The line at `*at` without its CRLF, moving past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, RespError> {
    let rest = &buf[*at..];
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > 64 * 1024 {
            return Err(RespError("a line longer than 64 KiB".into()));
        }
        return Ok(None);
    };
    *at += end + 2;
    Ok(Some(&rest[..end]))
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            RespError(format!(
                "{:?} is not a number",
                String::from_utf8_lossy(text)
            ))
        })
}

/// A length: -1 (nil) or 0..=max.
fn length(text: &[u8], max: usize, what: &str) -> Result<Option<usize>, RespError> {
    match number(text)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        n => Err(RespError(format!("{what} of length {n}"))),
    }
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Value>, RespError> {
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    *at += 1;
    let Some(head) = line(buf, at)? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' => Value::Simple(head.to_vec()),
        b'-' => Value::Error(head.to_vec()),
        b':' => Value::Int(number(head)?),
        b'$' => match length(head, MAX_BULK, "a bulk string")? {
            None => Value::Bulk(None),
            Some(n) => {
                if buf.len() < *at + n + 2 {
                    return Ok(None);
                }
                if &buf[*at + n..*at + n + 2] != b"\r\n" {
                    return Err(RespError("a bulk string not ended by CRLF".into()));
                }
                let bytes = buf[*at..*at + n].to_vec();
                *at += n + 2;
                Value::Bulk(Some(bytes))
            }
        },
        b'*' => match length(head, MAX_ARRAY, "an array")? {
            None => Value::Array(None),
            Some(n) => {
                if depth >= MAX_DEPTH {
                    return Err(RespError(format!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    match value(buf, at, depth + 1)? {
                        Some(v) => items.push(v),
                        None => return Ok(None),
                    }
                }
                Value::Array(Some(items))
            }
        },
        other => {
            return Err(RespError(format!(
                "a value starting with byte {other:#04x}"
            )))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_decodes_and_partial_input_waits() {
        let input: &[u8] =
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n:1\r\n*-1\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while at < input.len() {
            // Every prefix of the next value is incomplete, never an error.
            let (v, n) = decode(&input[at..]).unwrap().unwrap();
            for cut in 0..n {
                assert_eq!(decode(&input[at..at + cut]), Ok(None), "cut {cut}");
            }
            got.push(v);
            at += n;
        }
        assert_eq!(
            got,
            [
                Value::Simple(b"OK".to_vec()),
                Value::Error(b"ERR no".to_vec()),
                Value::Int(42),
                Value::Bulk(Some(b"a\r\n".to_vec())),
                Value::Bulk(None),
                Value::Array(Some(vec![Value::Bulk(Some(b"x".to_vec())), Value::Int(1)])),
                Value::Array(None),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b":12x\r\n",
            b"$-2\r\n",
            b"$99999999999999999999\r\n",
            b"*-5\r\n",
            b"$1\r\nab\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode(&[b'+'; 70_000]).is_err());
    }
}
