//! The web client served at `/`: static files compiled into the binary, so a browser can
//! join the same peer list and call the native clients. Off with `--no-web`.

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
        _ => None,
    }
}
