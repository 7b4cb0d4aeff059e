//! `peerconnection_client`: the signaling client ([`PeerConnectionClient`]), the call
//! ([`Conductor`]) and the loop that carries their bytes ([`ClientLoop`]).

pub mod client_loop;
pub mod conductor;
pub mod peer_connection_client;

pub use crate::media::SourceSpec;
pub use client_loop::{ClientConfig, ClientLoop};
pub use conductor::{CallOutput, CallStats, Conductor, MediaConfig};
pub use peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
