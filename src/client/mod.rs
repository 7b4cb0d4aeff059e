//! `peerconnection_client`: the signaling client ([`PeerConnectionClient`]), the call
//! ([`Conductor`]), the window ([`MainWnd`]) and the loop that carries their bytes
//! ([`ClientLoop`]).

pub mod client_loop;
pub mod conductor;
pub mod main_wnd;
pub mod netif;
pub mod peer_connection_client;

pub use crate::media::SourceSpec;
pub use client_loop::{ClientConfig, ClientLoop};
pub use conductor::{CallOutput, CallStats, Conductor, MediaConfig};
pub use main_wnd::MainWnd;
pub use peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
