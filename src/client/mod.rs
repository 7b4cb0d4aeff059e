//! `peerconnection_client`: the signaling client ([`PeerConnectionClient`]), the policy
//! ([`ClientApp`]), the call's transport ([`Conductor`]) and media ([`MediaSession`]), the
//! window ([`MainWnd`]), the devices, and the loop that carries their bytes
//! ([`ClientLoop`]).

pub mod audio_alsa;
pub mod audio_devices;
pub mod audio_session;
pub mod chat_input;
pub mod client_app;
pub mod client_loop;
pub mod conductor;
pub mod config;
pub mod devices;
pub mod file_transfer;
pub mod files;
pub mod main_wnd;
pub mod media_session;
pub mod nat;
pub mod netif;
pub mod peer_connection_client;
pub mod resolver;

pub use crate::media::SourceSpec;
pub use client_app::{AppConfig, AppOutput, CallEvent, ClientApp};
pub use client_loop::ClientLoop;
pub use conductor::{CallError, CallOutput, CallStats, Conductor, EndReason};
pub use config::{ClientConfig, ClientError};
pub use main_wnd::MainWnd;
pub use media_session::{MediaConfig, MediaSession, MediaStats};
pub use peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
