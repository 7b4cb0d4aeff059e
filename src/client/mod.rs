//! `peerconnection_client`: the signaling client ([`PeerConnectionClient`]), the call
//! ([`Conductor`]) and the loop that carries their bytes ([`ClientLoop`]).

pub mod peer_connection_client;

pub use peer_connection_client::{
    Channel, ClientEvent, ClientOutput, ClientState, PeerConnectionClient, RequestError,
};
