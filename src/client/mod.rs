//! `peerconnection_client`: signaling client, conductor and the client loop.
