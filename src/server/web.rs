//! The web client served at `/`: static files compiled into the binary, so a browser can
//! join the same peer list and call the native clients. Off with `--no-web`.
//!
//! `/ice-servers.json` tells the page which STUN and TURN servers to give its
//! `RTCPeerConnection` (`--ice-server`; an empty list by default), so a browser behind a
//! NAT can call a native client behind another.

use std::sync::OnceLock;

/// The page's `iceServers`, set once at start by [`set_ice_servers`].
static ICE_SERVERS: OnceLock<&'static [u8]> = OnceLock::new();

/// The file at `path`, with its content type, or `None`.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static [u8])> {
    match path {
        "/" | "/index.html" => Some((
            b"text/html; charset=utf-8",
            include_bytes!("../../web/index.html"),
        )),
        "/channels.js" => Some((
            b"text/javascript; charset=utf-8",
            include_bytes!("../../web/channels.js"),
        )),
        "/app.js" => Some((
            b"text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        )),
        "/ice-servers.json" => Some((
            b"application/json",
            ICE_SERVERS.get().copied().unwrap_or(b"[]"),
        )),
        _ => None,
    }
}

/// Serves `urls` (`--ice-server` values) to the page from now on; set once, before the
/// server runs (a process serves one configuration, and assets are `'static`).
pub fn set_ice_servers(urls: &[String]) -> Result<(), String> {
    let json = ice_servers_json(urls)?;
    let leaked: &'static [u8] = Box::leak(json.into_bytes().into_boxed_slice());
    ICE_SERVERS
        .set(leaked)
        .map_err(|_| "the ICE servers are already set".to_string())
}

/// `stun:HOST:PORT` and `turn:USER:PASS@HOST:PORT[?transport=udp|tcp]` as the JSON of
/// `RTCIceServer`s (browsers understand the `transport` query of a TURN URL).
pub fn ice_servers_json(urls: &[String]) -> Result<String, String> {
    let mut servers = Vec::new();
    for url in urls {
        let bad = |why: &str| format!("--ice-server {url:?}: {why}");
        let host_port = |s: &str| -> Result<(), String> {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !host.is_empty() && !host.contains(['/', '?', ' ']) => Ok(()),
                _ => Err(bad("expected HOST:PORT")),
            }
        };
        if let Some(rest) = url.strip_prefix("stun:") {
            host_port(rest)?;
            servers.push(serde_json::json!({ "urls": url }));
        } else if let Some(rest) = url.strip_prefix("turn:") {
            let (creds, server) = rest
                .rsplit_once('@')
                .ok_or_else(|| bad("expected turn:USER:PASS@HOST:PORT"))?;
            let (user, pass) = creds
                .split_once(':')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or_else(|| bad("expected turn:USER:PASS@HOST:PORT"))?;
            let host = match server.split_once('?') {
                None => server,
                Some((host, "transport=udp" | "transport=tcp")) => host,
                Some((_, query)) => {
                    return Err(bad(&format!(
                        "{query:?}: expected ?transport=udp or ?transport=tcp"
                    )))
                }
            };
            host_port(host)?;
            servers.push(serde_json::json!({
                "urls": format!("turn:{server}"),
                "username": user,
                "credential": pass,
            }));
        } else {
            return Err(bad("expected stun:HOST:PORT or turn:USER:PASS@HOST:PORT"));
        }
    }
    Ok(serde_json::Value::Array(servers).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_server_urls_become_the_pages_ice_servers() {
        let json = ice_servers_json(&[
            "stun:203.0.113.1:3478".into(),
            "turn:alice:s3cret@turn.example.org:3478".into(),
            "turn:bob:pw@203.0.113.1:3478?transport=tcp".into(),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["urls"], "stun:203.0.113.1:3478");
        assert_eq!(v[1]["urls"], "turn:turn.example.org:3478");
        assert_eq!(v[1]["username"], "alice");
        assert_eq!(v[1]["credential"], "s3cret");
        assert_eq!(v[2]["urls"], "turn:203.0.113.1:3478?transport=tcp");
        assert_eq!(ice_servers_json(&[]).unwrap(), "[]");
        for bad in [
            "stun:host",
            "stun:host:0",
            "turn:host:3478",
            "turn:alice@host:3478",
            "http://x",
            "stun::3478",
            "turn:a:b@host:3478?transport=tls",
            "turn:a:b@host:3478?x=1",
        ] {
            let e = ice_servers_json(&[bad.into()]).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
