//! The signaling client (after the original's `PeerConnectionClient`): sign in, keep a
//! hanging GET, follow the peer list, send messages in order, sign out, and rejoin when the
//! server goes away. No IO: it asks the loop to resolve and to open request connections,
//! and is told what came back.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::signaling::http::{
    message_request, sign_in_request, sign_out_request, wait_request, ParsedResponse,
};
use crate::signaling::{PeerEntry, PeerId};

/// How long to wait before trying the server again, as the original (`kReconnectDelay`).
pub const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The original's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    NotConnected,
    Resolving,
    SigningIn,
    Connected,
    SigningOutWaiting,
    SigningOut,
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientState::NotConnected => "NOT_CONNECTED",
            ClientState::Resolving => "RESOLVING",
            ClientState::SigningIn => "SIGNING_IN",
            ClientState::Connected => "CONNECTED",
            ClientState::SigningOutWaiting => "SIGNING_OUT_WAITING",
            ClientState::SigningOut => "SIGNING_OUT",
        })
    }
}

/// The two connections the client keeps, as the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// sign_in, message posts and sign_out, one at a time.
    Control,
    /// The hanging GET.
    HangingGet,
}

/// Why a request connection produced no response: the HTTP exchange's error, under the
/// name this module has always used.
pub use crate::signaling::exchange::ExchangeError as RequestError;

/// What the application hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    StateChanged(ClientState),
    SignedIn {
        id: PeerId,
    },
    PeerConnected {
        id: PeerId,
        name: String,
    },
    PeerDisconnected {
        id: PeerId,
    },
    Message {
        from: PeerId,
        body: Vec<u8>,
    },
    /// A message the server could not deliver (the peer is gone).
    MessageFailed {
        to: PeerId,
        reason: String,
    },
    /// Resolving or signing in failed; the client tries again after [`RECONNECT_DELAY`].
    SignInFailed {
        reason: String,
    },
    /// The server went away or forgot us; the client is rejoining.
    ServerLost {
        reason: String,
    },
    SignedOut,
}

/// What the loop must do for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Resolve the server's host name and call [`PeerConnectionClient::resolved`].
    Resolve {
        host: String,
        port: u16,
    },
    /// Open a connection on `channel`, send `request`, and hand the response to
    /// [`PeerConnectionClient::handle_response`].
    Open {
        channel: Channel,
        addr: SocketAddr,
        request: Vec<u8>,
    },
    /// Drop whatever connection `channel` has open.
    Cancel {
        channel: Channel,
    },
    Event(ClientEvent),
}

#[derive(Debug)]
pub struct PeerConnectionClient {
    state: ClientState,
    name: String,
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
    my_id: Option<PeerId>,
    peers: BTreeMap<PeerId, String>,
    /// Messages not yet accepted by the server, oldest first.
    outgoing: VecDeque<(PeerId, Vec<u8>)>,
    control_busy: bool,
    hanging_busy: bool,
    retry_at: Option<Instant>,
    out: VecDeque<ClientOutput>,
}

impl PeerConnectionClient {
    pub fn new(name: &str) -> PeerConnectionClient {
        PeerConnectionClient {
            state: ClientState::NotConnected,
            name: name.to_string(),
            host: String::new(),
            port: 0,
            addr: None,
            my_id: None,
            peers: BTreeMap::new(),
            outgoing: VecDeque::new(),
            control_busy: false,
            hanging_busy: false,
            retry_at: None,
            out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn id(&self) -> Option<PeerId> {
        self.my_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other members, by id.
    pub fn peers(&self) -> &BTreeMap<PeerId, String> {
        &self.peers
    }

    pub fn is_connected(&self) -> bool {
        self.state == ClientState::Connected
    }

    fn set_state(&mut self, state: ClientState) {
        if self.state != state {
            log::info!("signaling: {} -> {}", self.state, state);
            self.state = state;
            self.out
                .push_back(ClientOutput::Event(ClientEvent::StateChanged(state)));
        }
    }

    fn event(&mut self, e: ClientEvent) {
        self.out.push_back(ClientOutput::Event(e));
    }

    /// Starts signing in to `host:port`.
    pub fn connect(&mut self, host: &str, port: u16) {
        self.host = host.to_string();
        self.port = port;
        self.addr = None;
        self.start_resolve();
    }

    fn start_resolve(&mut self) {
        self.retry_at = None;
        self.set_state(ClientState::Resolving);
        self.out.push_back(ClientOutput::Resolve {
            host: self.host.clone(),
            port: self.port,
        });
    }

    /// The loop's answer to [`ClientOutput::Resolve`].
    pub fn resolved(&mut self, result: Result<SocketAddr, String>, now: Instant) {
        if self.state != ClientState::Resolving {
            return;
        }
        match result {
            Ok(addr) => {
                self.addr = Some(addr);
                self.sign_in();
            }
            Err(e) => {
                log::warn!(
                    "cannot resolve {}:{}: {e}; retrying in {RECONNECT_DELAY:?}",
                    self.host,
                    self.port
                );
                self.event(ClientEvent::SignInFailed {
                    reason: format!("cannot resolve {e}"),
                });
                self.retry_at = Some(now + RECONNECT_DELAY);
            }
        }
    }

    fn sign_in(&mut self) {
        let Some(addr) = self.addr else {
            return self.start_resolve();
        };
        self.retry_at = None;
        self.set_state(ClientState::SigningIn);
        self.control_busy = true;
        self.out.push_back(ClientOutput::Open {
            channel: Channel::Control,
            addr,
            request: sign_in_request(&self.name),
        });
    }

    /// Queues a message for `to`; messages go out one at a time, in order.
    pub fn send_to_peer(&mut self, to: PeerId, body: Vec<u8>) {
        self.outgoing.push_back((to, body));
        self.pump();
    }

    /// Signs out once queued messages are delivered.
    pub fn sign_out(&mut self) {
        match self.state {
            ClientState::Connected => {
                self.set_state(ClientState::SigningOutWaiting);
                self.out.push_back(ClientOutput::Cancel {
                    channel: Channel::HangingGet,
                });
                self.hanging_busy = false;
                self.pump();
            }
            ClientState::Resolving | ClientState::SigningIn => {
                self.out.push_back(ClientOutput::Cancel {
                    channel: Channel::Control,
                });
                self.control_busy = false;
                self.retry_at = None;
                self.set_state(ClientState::NotConnected);
                self.event(ClientEvent::SignedOut);
            }
            _ => {}
        }
    }

    fn pump(&mut self) {
        if self.control_busy {
            return;
        }
        let (Some(addr), Some(my_id)) = (self.addr, self.my_id) else {
            return;
        };
        match self.state {
            ClientState::Connected | ClientState::SigningOutWaiting => {
                if let Some((to, body)) = self.outgoing.front() {
                    self.control_busy = true;
                    let request =
                        message_request(my_id, *to, crate::signaling::message::CONTENT_TYPE, body);
                    self.out.push_back(ClientOutput::Open {
                        channel: Channel::Control,
                        addr,
                        request,
                    });
                } else if self.state == ClientState::SigningOutWaiting {
                    self.set_state(ClientState::SigningOut);
                    self.control_busy = true;
                    self.out.push_back(ClientOutput::Open {
                        channel: Channel::Control,
                        addr,
                        request: sign_out_request(my_id),
                    });
                }
            }
            _ => {}
        }
    }

    fn arm_hanging_get(&mut self) {
        if self.state != ClientState::Connected || self.hanging_busy {
            return;
        }
        if let (Some(addr), Some(id)) = (self.addr, self.my_id) {
            self.hanging_busy = true;
            self.out.push_back(ClientOutput::Open {
                channel: Channel::HangingGet,
                addr,
                request: wait_request(id),
            });
        }
    }

    /// The outcome of a request opened by [`ClientOutput::Open`].
    pub fn handle_response(
        &mut self,
        channel: Channel,
        result: Result<ParsedResponse, RequestError>,
        now: Instant,
    ) {
        match channel {
            Channel::Control => {
                self.control_busy = false;
                self.control_response(result, now);
            }
            Channel::HangingGet => {
                self.hanging_busy = false;
                self.hanging_get_response(result, now);
            }
        }
        self.pump();
    }

    fn control_response(&mut self, result: Result<ParsedResponse, RequestError>, now: Instant) {
        match self.state {
            ClientState::SigningIn => {
                match result.map_err(|e| e.to_string()).and_then(parse_sign_in) {
                    Ok((id, peers)) => {
                        self.my_id = Some(id);
                        self.set_state(ClientState::Connected);
                        self.event(ClientEvent::SignedIn { id });
                        for p in peers.into_iter().filter(|p| p.id != id && p.connected) {
                            self.peers.insert(p.id, p.name.clone());
                            self.event(ClientEvent::PeerConnected {
                                id: p.id,
                                name: p.name,
                            });
                        }
                        self.arm_hanging_get();
                    }
                    Err(e) => {
                        log::warn!(
                            "sign in to {}:{} failed: {e}; retrying in {RECONNECT_DELAY:?}",
                            self.host,
                            self.port
                        );
                        self.event(ClientEvent::SignInFailed { reason: e });
                        self.retry_at = Some(now + RECONNECT_DELAY);
                    }
                }
            }
            ClientState::Connected | ClientState::SigningOutWaiting => {
                let Some((to, _)) = self.outgoing.pop_front() else {
                    return;
                };
                let failure = match result {
                    Ok(r) if r.code == 200 => None,
                    Ok(r) => Some(format!(
                        "{} {}: {}",
                        r.code,
                        r.reason,
                        String::from_utf8_lossy(&r.body).trim()
                    )),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(reason) = failure {
                    log::warn!("message to peer {to} failed: {reason}");
                    self.event(ClientEvent::MessageFailed { to, reason });
                }
            }
            ClientState::SigningOut => {
                if let Err(e) = result {
                    log::warn!("sign out: {e}");
                }
                self.signed_out();
            }
            ClientState::NotConnected | ClientState::Resolving => {}
        }
    }

    fn signed_out(&mut self) {
        self.my_id = None;
        self.outgoing.clear();
        for id in std::mem::take(&mut self.peers).into_keys() {
            self.event(ClientEvent::PeerDisconnected { id });
        }
        self.set_state(ClientState::NotConnected);
        self.event(ClientEvent::SignedOut);
    }

    fn hanging_get_response(&mut self, result: Result<ParsedResponse, RequestError>, now: Instant) {
        if self.state != ClientState::Connected {
            return;
        }
        let resp = match result {
            Ok(r) if r.code == 200 => r,
            Ok(r) => {
                return self
                    .server_lost(format!("hanging GET answered {} {}", r.code, r.reason), now)
            }
            Err(e) => return self.server_lost(e.to_string(), now),
        };
        let Some(from) = resp.pragma else {
            return self.server_lost("hanging GET answer without Pragma".into(), now);
        };
        if Some(from) == self.my_id {
            let text = String::from_utf8_lossy(&resp.body);
            match PeerEntry::parse_list(&text) {
                Ok(entries) => {
                    for e in entries {
                        if Some(e.id) == self.my_id {
                            if !e.connected {
                                return self.server_lost("the server signed us out".into(), now);
                            }
                        } else if e.connected {
                            self.peers.insert(e.id, e.name.clone());
                            self.event(ClientEvent::PeerConnected {
                                id: e.id,
                                name: e.name,
                            });
                        } else if self.peers.remove(&e.id).is_some() {
                            self.event(ClientEvent::PeerDisconnected { id: e.id });
                        }
                    }
                }
                Err(e) => log::warn!("ignoring a notification: {e}"),
            }
        } else {
            self.event(ClientEvent::Message {
                from,
                body: resp.body,
            });
        }
        self.arm_hanging_get();
    }

    /// The server is gone or forgot us: forget the peer list and sign in again (new id).
    fn server_lost(&mut self, reason: String, now: Instant) {
        log::warn!("lost the server ({reason}); rejoining every {RECONNECT_DELAY:?}");
        self.my_id = None;
        self.outgoing.clear();
        // The app hears of the outage first, so it does not take the peers' departures
        // that follow for peers hanging up.
        self.event(ClientEvent::ServerLost { reason });
        for id in std::mem::take(&mut self.peers).into_keys() {
            self.event(ClientEvent::PeerDisconnected { id });
        }
        self.out.push_back(ClientOutput::Cancel {
            channel: Channel::Control,
        });
        self.control_busy = false;
        self.set_state(ClientState::SigningIn);
        self.retry_at = Some(now + RECONNECT_DELAY);
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            match self.state {
                ClientState::Resolving => self.start_resolve(),
                ClientState::SigningIn => self.sign_in(),
                _ => {}
            }
        }
    }
}

/// A sign-in answer: `200`, `Pragma` with our id, and the member list.
fn parse_sign_in(resp: ParsedResponse) -> Result<(PeerId, Vec<PeerEntry>), String> {
    if resp.code != 200 {
        return Err(format!(
            "{} {}: {}",
            resp.code,
            resp.reason,
            String::from_utf8_lossy(&resp.body).trim()
        ));
    }
    let id = resp.pragma.ok_or("sign-in answer has no Pragma peer id")?;
    let peers =
        PeerEntry::parse_list(&String::from_utf8_lossy(&resp.body)).map_err(|e| e.to_string())?;
    Ok((id, peers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::http::parse_response;
    use crate::signaling::{Response, Status};

    fn addr() -> SocketAddr {
        "127.0.0.1:8888".parse().unwrap()
    }

    fn response(status: Status, pragma: Option<PeerId>, body: &[u8]) -> ParsedResponse {
        let bytes = Response {
            status,
            content_type: b"text/plain",
            pragma,
            body,
        }
        .to_bytes();
        parse_response(&bytes).unwrap().unwrap()
    }

    fn drain(c: &mut PeerConnectionClient) -> Vec<ClientOutput> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn opens(outs: &[ClientOutput]) -> Vec<(Channel, String)> {
        outs.iter()
            .filter_map(|o| match o {
                ClientOutput::Open {
                    channel, request, ..
                } => Some((*channel, String::from_utf8_lossy(request).into_owned())),
                _ => None,
            })
            .collect()
    }

    /// A client signed in as id 2 with alice (1) on the list.
    fn signed_in(now: Instant) -> PeerConnectionClient {
        let mut c = PeerConnectionClient::new("bob");
        c.connect("localhost", 8888);
        assert!(matches!(
            drain(&mut c)[..],
            [ClientOutput::Event(_), ClientOutput::Resolve { .. }]
        ));
        c.resolved(Ok(addr()), now);
        let outs = drain(&mut c);
        assert_eq!(
            opens(&outs),
            vec![(Channel::Control, "GET /sign_in?bob HTTP/1.0\r\n\r\n".into())]
        );
        c.handle_response(
            Channel::Control,
            Ok(response(Status::Added, Some(2), b"bob,2,1\nalice,1,1\n")),
            now,
        );
        c
    }

    #[test]
    fn sign_in_lists_peers_and_arms_the_hanging_get() {
        let now = Instant::now();
        let mut c = signed_in(now);
        assert_eq!(c.state(), ClientState::Connected);
        assert_eq!(c.id(), Some(2));
        assert_eq!(c.peers().get(&1).map(String::as_str), Some("alice"));
        let outs = drain(&mut c);
        assert!(
            outs.contains(&ClientOutput::Event(ClientEvent::PeerConnected {
                id: 1,
                name: "alice".into()
            }))
        );
        assert_eq!(
            opens(&outs),
            vec![(
                Channel::HangingGet,
                "GET /wait?peer_id=2 HTTP/1.0\r\n\r\n".into()
            )]
        );
    }

    #[test]
    fn notifications_and_messages_are_told_apart_by_pragma() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.handle_response(
            Channel::HangingGet,
            Ok(response(Status::Ok, Some(2), b"carol,3,1\n")),
            now,
        );
        c.handle_response(
            Channel::HangingGet,
            Ok(response(Status::Ok, Some(1), b"{\"x\":1}")),
            now,
        );
        c.handle_response(
            Channel::HangingGet,
            Ok(response(Status::Ok, Some(2), b"alice,1,0\n")),
            now,
        );
        let outs = drain(&mut c);
        let events: Vec<_> = outs
            .iter()
            .filter_map(|o| match o {
                ClientOutput::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ClientEvent::PeerConnected {
                    id: 3,
                    name: "carol".into()
                },
                ClientEvent::Message {
                    from: 1,
                    body: b"{\"x\":1}".to_vec()
                },
                ClientEvent::PeerDisconnected { id: 1 },
            ]
        );
        // The hanging GET is re-armed after every answer.
        assert_eq!(opens(&outs).len(), 3);
        assert!(opens(&outs)
            .iter()
            .all(|(ch, _)| *ch == Channel::HangingGet));
    }

    #[test]
    fn messages_go_one_at_a_time_in_order() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.send_to_peer(1, b"first".to_vec());
        c.send_to_peer(1, b"second".to_vec());
        let outs = drain(&mut c);
        let o = opens(&outs);
        assert_eq!(o.len(), 1);
        assert!(o[0].1.ends_with("\r\n\r\nfirst"));
        assert!(o[0]
            .1
            .starts_with("POST /message?peer_id=2&to=1 HTTP/1.0\r\n"));
        c.handle_response(Channel::Control, Ok(response(Status::Ok, None, b"")), now);
        let o = opens(&drain(&mut c));
        assert_eq!(o.len(), 1);
        assert!(o[0].1.ends_with("second"));
    }

    #[test]
    fn a_failed_message_is_reported_and_the_queue_goes_on() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.send_to_peer(9, b"a".to_vec());
        c.send_to_peer(1, b"b".to_vec());
        drain(&mut c);
        c.handle_response(
            Channel::Control,
            Ok(response(Status::Error, None, b"Peer most likely gone.")),
            now,
        );
        let outs = drain(&mut c);
        assert!(outs.iter().any(|o| matches!(
            o,
            ClientOutput::Event(ClientEvent::MessageFailed { to: 9, .. })
        )));
        assert!(opens(&outs)[0].1.ends_with("b"));
    }

    #[test]
    fn refused_sign_in_is_retried_after_two_seconds() {
        let now = Instant::now();
        let mut c = PeerConnectionClient::new("bob");
        c.connect("localhost", 8888);
        c.resolved(Ok(addr()), now);
        drain(&mut c);
        c.handle_response(
            Channel::Control,
            Err(RequestError::Unreachable {
                addr: addr(),
                kind: std::io::ErrorKind::ConnectionRefused,
                detail: "Connection refused (os error 111)".into(),
            }),
            now,
        );
        assert_eq!(c.poll_timeout(), Some(now + RECONNECT_DELAY));
        c.handle_timeout(now + Duration::from_millis(1999));
        assert!(opens(&drain(&mut c)).is_empty());
        c.handle_timeout(now + RECONNECT_DELAY);
        assert_eq!(opens(&drain(&mut c))[0].0, Channel::Control);
        // A 500 or garbage is an error too, never a panic.
        c.handle_response(
            Channel::Control,
            Ok(response(Status::Error, None, b"x")),
            now,
        );
        assert_eq!(c.state(), ClientState::SigningIn);
        assert!(c.poll_timeout().is_some());
    }

    #[test]
    fn losing_the_server_forgets_peers_and_rejoins() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.handle_response(
            Channel::HangingGet,
            Err(RequestError::BadResponse {
                addr: addr(),
                error: crate::signaling::http::ResponseError::Truncated { have: 0 },
            }),
            now,
        );
        assert_eq!(c.state(), ClientState::SigningIn);
        assert!(c.peers().is_empty());
        assert_eq!(c.id(), None);
        let outs = drain(&mut c);
        assert!(
            outs.contains(&ClientOutput::Event(ClientEvent::PeerDisconnected {
                id: 1
            }))
        );
        c.handle_timeout(now + RECONNECT_DELAY);
        assert_eq!(
            opens(&drain(&mut c)),
            vec![(Channel::Control, "GET /sign_in?bob HTTP/1.0\r\n\r\n".into())]
        );
    }

    #[test]
    fn server_shutdown_notice_about_ourselves_rejoins() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.handle_response(
            Channel::HangingGet,
            Ok(response(Status::Ok, Some(2), b"bob,2,0\n")),
            now,
        );
        assert_eq!(c.state(), ClientState::SigningIn);
    }

    #[test]
    fn sign_out_waits_for_queued_messages() {
        let now = Instant::now();
        let mut c = signed_in(now);
        drain(&mut c);
        c.send_to_peer(1, b"BYE".to_vec());
        c.sign_out();
        assert_eq!(c.state(), ClientState::SigningOutWaiting);
        let outs = drain(&mut c);
        assert!(outs.contains(&ClientOutput::Cancel {
            channel: Channel::HangingGet
        }));
        c.handle_response(Channel::Control, Ok(response(Status::Ok, None, b"")), now);
        assert_eq!(c.state(), ClientState::SigningOut);
        assert_eq!(
            opens(&drain(&mut c)),
            vec![(
                Channel::Control,
                "GET /sign_out?peer_id=2 HTTP/1.0\r\n\r\n".into()
            )]
        );
        c.handle_response(Channel::Control, Ok(response(Status::Ok, None, b"")), now);
        assert_eq!(c.state(), ClientState::NotConnected);
    }
}
