//! A rebuild of libwebrtc's `examples/peerconnection`: the signaling server, the native
//! video-call client and the pieces they share. Each program is one thread running one
//! `mio` loop ([`reactor`]); everything that decides is a state machine without IO.

pub mod client;
pub mod media;
pub mod reactor;
pub mod server;
pub mod signaling;

/// Sets up `env_logger` with `default_level` (`RUST_LOG` overrides it).
pub fn init_logging(default_level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
}
