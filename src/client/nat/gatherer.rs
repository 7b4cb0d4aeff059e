//! The candidates beyond the host ones: a STUN binding from each host socket to each STUN
//! server (server-reflexive), a TURN allocation from each host socket on each TURN server
//! (relayed, plus the server-reflexive address its answer carries). Each candidate is
//! handed out as soon as it is known, for the conductor to trickle. The gatherer also
//! sits between str0m and the sockets for relayed traffic: what str0m sends from a relayed
//! address is wrapped to the TURN server, and what the server relays is unwrapped.
//!
//! Host sockets come and go with the machine's addresses ([`IceGatherer::add_base`],
//! [`IceGatherer::remove_base`]): a new one is asked from at once, a vanished one's
//! candidates are withdrawn. A failed allocation is made again after a pause.
//!
//! A TURN server reached over TCP (`?transport=tcp`) gets one connection per host socket,
//! which the loop opens, carries and closes when told ([`GatherOutput::Connect`],
//! [`GatherOutput::StreamTransmit`], [`GatherOutput::Disconnect`]); only the gatherer
//! knows that a relayed candidate's way to its server is a stream: for str0m it is UDP
//! like any other.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Candidate;

use super::stun::{self, Attr, Class, Message};
use super::transaction::{new_txid, Tick, Transaction};
use super::turn::{TurnAllocation, TurnEvent};
use super::{IcePolicy, IceServers, ServerName, Transmit, TurnTransport};
use crate::client::resolver::{self, Resolver};

/// What the loop must do for the gatherer.
#[derive(Debug)]
pub enum GatherOutput {
    Transmit(Transmit),
    /// Open a TCP connection from `base`'s IP to the TURN server `server`, for the
    /// allocation made from `base`.
    Connect {
        base: SocketAddr,
        server: SocketAddr,
    },
    /// A message for the TCP connection of (`source`, `destination`) = (base, server),
    /// unframed (the stream's [`super::tcp::TurnStream`] frames it). Dropped if that
    /// connection is gone.
    StreamTransmit(Transmit),
    /// Close the TCP connection of (`base`, `server`): its allocation is gone.
    Disconnect {
        base: SocketAddr,
        server: SocketAddr,
    },
    /// A DNS query for a server name, to send to the nameserver `server` from the loop's
    /// DNS socket (answers come back through [`IceGatherer::handle_dns`]).
    Dns {
        server: SocketAddr,
        query: Vec<u8>,
    },
    /// A new local candidate (server-reflexive or relayed).
    Candidate(Candidate),
    /// A candidate handed out before that is gone: its host socket closed, or its
    /// allocation failed.
    Withdrawn(Candidate),
}

/// Whose a received datagram is.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The gatherer's (a STUN or TURN answer): nothing more to do.
    Consumed,
    /// Relayed by the TURN server: str0m receives it as from `source` (the peer) to
    /// `destination` (our relayed address).
    Relayed {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Not the gatherer's: str0m's, as it came.
    Direct,
}

/// One binding request from a host socket to a STUN server.
#[derive(Debug)]
struct Binding {
    base: SocketAddr,
    server: SocketAddr,
    /// In flight; None once answered or given up.
    tx: Option<Transaction>,
}

/// The first pause before a failed allocation is made again; it doubles up to
/// [`RETRY_MAX`] while the server keeps failing, and starts over after a success.
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// A candidate handed out, with what it came from (to withdraw it when that goes).
#[derive(Debug)]
struct Handed {
    candidate: Candidate,
    base: SocketAddr,
    /// The TURN server of a relayed candidate.
    turn: Option<(SocketAddr, TurnTransport)>,
}

/// A new allocation due at `at`, after one failed.
#[derive(Debug)]
struct Retry {
    base: SocketAddr,
    turn: TurnCredentials,
    at: Instant,
}

/// The gatherer for the client's life (allocations outlive calls, so a second call has
/// its candidates at once).
#[derive(Debug)]
pub struct IceGatherer {
    /// The host sockets every server is asked from.
    bases: Vec<SocketAddr>,
    bindings: Vec<Binding>,
    allocations: Vec<TurnAllocation>,
    out: VecDeque<GatherOutput>,
    /// Server-reflexive (address, base) pairs already handed out.
    reflexive: Vec<(SocketAddr, SocketAddr)>,
    policy: IcePolicy,
    /// Server names waiting for DNS.
    names: ServerNames,
    /// The servers known so far (resolved), for host sockets that come later.
    stun_servers: Vec<SocketAddr>,
    turn_servers: Vec<TurnCredentials>,
    handed: Vec<Handed>,
    retries: Vec<Retry>,
    /// The next pause per (base, TURN server, transport) after a failure.
    backoff: HashMap<(SocketAddr, SocketAddr, TurnTransport), Duration>,
    /// The latest instant the gatherer was given (failures are noticed while collecting).
    clock: Instant,
}

/// A TURN server's address and credentials.
#[derive(Debug, Clone)]
pub struct TurnCredentials {
    pub server: SocketAddr,
    pub transport: TurnTransport,
    pub username: String,
    pub password: String,
}

/// A base can reach a server: same family, and loopback only to loopback.
fn reaches(base: SocketAddr, server: SocketAddr) -> bool {
    base.is_ipv4() == server.is_ipv4() && base.ip().is_loopback() == server.ip().is_loopback()
}

impl IceGatherer {
    /// Starts gathering from every host socket in `bases`. With [`IcePolicy::Relay`] no
    /// STUN binding is made and no server-reflexive candidate is handed out.
    pub fn new(
        bases: &[SocketAddr],
        stun_servers: &[SocketAddr],
        turn_servers: &[TurnCredentials],
        policy: IcePolicy,
        now: Instant,
    ) -> IceGatherer {
        let mut g = IceGatherer {
            bases: bases.to_vec(),
            bindings: Vec::new(),
            allocations: Vec::new(),
            out: VecDeque::new(),
            reflexive: Vec::new(),
            policy,
            names: ServerNames::default(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            handed: Vec::new(),
            retries: Vec::new(),
            backoff: HashMap::new(),
            clock: now,
        };
        for &server in stun_servers {
            g.add_stun_server(server, now);
        }
        for t in turn_servers {
            g.add_turn_server(t, now);
        }
        g
    }

    /// A STUN server to ask from every host socket that reaches it.
    fn add_stun_server(&mut self, server: SocketAddr, now: Instant) {
        if self.policy != IcePolicy::All {
            return;
        }
        self.stun_servers.push(server);
        for base in self.bases.clone() {
            self.bind(base, server, now);
        }
    }

    /// A binding request from `base` to `server`, if it reaches it.
    fn bind(&mut self, base: SocketAddr, server: SocketAddr, now: Instant) {
        if !reaches(base, server) {
            return;
        }
        let txid = new_txid();
        let bytes = Message::request(stun::BINDING, txid).encode(None);
        self.transmit(base, server, bytes.clone());
        self.bindings.push(Binding {
            base,
            server,
            tx: Some(Transaction::start(txid, bytes, now)),
        });
    }

    /// A TURN server to allocate on from every host socket that reaches it.
    /// The same server and transport twice (two names for one address) is used once:
    /// allocations are told apart by (base, server, transport).
    fn add_turn_server(&mut self, t: &TurnCredentials, now: Instant) {
        if self
            .turn_servers
            .iter()
            .any(|k| k.server == t.server && k.transport == t.transport)
        {
            log::info!(
                "TURN {} ({}) is named twice: used once",
                t.server,
                t.transport
            );
            return;
        }
        self.turn_servers.push(t.clone());
        for base in self.bases.clone() {
            self.allocate(base, t, now);
        }
    }

    /// An allocation on `t` from `base`, if it reaches it.
    fn allocate(&mut self, base: SocketAddr, t: &TurnCredentials, now: Instant) {
        if reaches(base, t.server) {
            if t.transport == TurnTransport::Tcp {
                self.out.push_back(GatherOutput::Connect {
                    base,
                    server: t.server,
                });
            }
            let a = TurnAllocation::new(base, t.server, t.transport, &t.username, &t.password, now);
            self.allocations.push(a);
        }
    }

    /// A new host socket (the machine has a new address): every known server is asked
    /// from it at once.
    pub fn add_base(&mut self, base: SocketAddr, now: Instant) {
        self.clock = now;
        if self.bases.contains(&base) {
            return;
        }
        self.bases.push(base);
        for server in self.stun_servers.clone() {
            self.bind(base, server, now);
        }
        for t in self.turn_servers.clone() {
            self.allocate(base, &t, now);
        }
    }

    /// A host socket closed (its address is gone): its bindings and allocations are
    /// dropped (nothing can reach their servers from it any more; the server lets an
    /// orphaned allocation expire) and the candidates they gave are withdrawn.
    pub fn remove_base(&mut self, base: SocketAddr) {
        self.bases.retain(|b| *b != base);
        self.bindings.retain(|b| b.base != base);
        for a in self.allocations.iter().filter(|a| a.base() == base) {
            if a.transport() == TurnTransport::Tcp {
                self.out.push_back(GatherOutput::Disconnect {
                    base,
                    server: a.server(),
                });
            }
        }
        self.allocations.retain(|a| a.base() != base);
        self.retries.retain(|r| r.base != base);
        self.backoff.retain(|(b, ..), _| *b != base);
        self.reflexive.retain(|(_, b)| *b != base);
        self.withdraw(|h| h.base == base);
    }

    /// Withdraws the handed-out candidates `which` picks.
    fn withdraw(&mut self, which: impl Fn(&Handed) -> bool) {
        let (gone, kept): (Vec<Handed>, Vec<Handed>) = std::mem::take(&mut self.handed)
            .into_iter()
            .partition(|h| which(h));
        self.handed = kept;
        for h in gone {
            log::info!("candidate {} withdrawn", h.candidate.addr());
            self.out.push_back(GatherOutput::Withdrawn(h.candidate));
        }
    }

    /// A datagram from a nameserver (on the loop's DNS socket): an answer for a server
    /// name, maybe. Answers for other lookups are ignored by the resolver.
    pub fn handle_dns(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.clock = now;
        if let Some(r) = self.names.resolver.as_mut() {
            r.handle_datagram(from, bytes, now);
        }
        self.resolved(now);
    }

    /// Takes the name lookups' outcomes: servers to use, names that failed.
    fn resolved(&mut self, now: Instant) {
        for (server, outcome) in self.names.poll(now) {
            match (server, outcome) {
                (Named::Stun, Ok(addr)) => self.add_stun_server(addr, now),
                (
                    Named::Turn {
                        username,
                        password,
                        transport,
                    },
                    Ok(server),
                ) => {
                    let t = TurnCredentials {
                        server,
                        transport,
                        username,
                        password,
                    };
                    self.add_turn_server(&t, now);
                }
                (_, Err(e)) => log::warn!("{e}: going on without it"),
            }
        }
        if let Some(r) = self.names.resolver.as_mut() {
            while let Some((server, query)) = r.poll_transmit() {
                self.out.push_back(GatherOutput::Dns { server, query });
            }
        }
    }

    /// True while a binding or an allocation is still on its way.
    pub fn is_gathering(&self) -> bool {
        self.bindings.iter().any(|b| b.tx.is_some())
            || self
                .allocations
                .iter()
                .any(|a| a.relayed().is_none() && !a.is_failed())
    }

    /// Is `addr` one of our relayed addresses?
    pub fn is_relayed(&self, addr: SocketAddr) -> bool {
        self.allocations.iter().any(|a| a.relayed() == Some(addr))
    }

    fn transmit(&mut self, source: SocketAddr, destination: SocketAddr, contents: Vec<u8>) {
        self.out.push_back(GatherOutput::Transmit(Transmit {
            source,
            destination,
            contents,
        }));
    }

    /// str0m's datagram from `source`: if that is a relayed address, it is wrapped to the
    /// TURN server (true); else it is not the gatherer's (false).
    pub fn send_relayed(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) -> bool {
        self.clock = now;
        let Some(a) = self
            .allocations
            .iter_mut()
            .find(|a| a.relayed() == Some(source))
        else {
            return false;
        };
        a.send_to(destination, contents, now);
        self.collect();
        true
    }

    /// A datagram from `source` on the host socket `destination`.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Delivery {
        self.clock = now;
        // A binding's answer first: a STUN server that is also the TURN server answers
        // both on the same 5-tuple.
        let binding_answer = Message::decode(bytes, None).is_some_and(|m| {
            self.bindings.iter().any(|b| {
                b.server == source
                    && b.base == destination
                    && b.tx.as_ref().is_some_and(|t| t.txid == m.txid)
            })
        });
        if !binding_answer {
            if let Some(d) =
                self.deliver_to_allocation(destination, source, TurnTransport::Udp, bytes, now)
            {
                return d;
            }
        }
        let Some(b) = self.bindings.iter_mut().find(|b| {
            b.server == source && b.base == destination && b.tx.is_some() && stun::is_stun(bytes)
        }) else {
            return Delivery::Direct;
        };
        let Some(msg) = Message::decode(bytes, None) else {
            return Delivery::Consumed;
        };
        if b.tx.as_ref().is_none_or(|t| t.txid != msg.txid) {
            return Delivery::Consumed;
        }
        match msg.class {
            Class::Success => {
                let mapped = msg.find(|a| match a {
                    Attr::XorMappedAddress(m) | Attr::MappedAddress(m) => Some(*m),
                    _ => None,
                });
                b.tx = None;
                let base = b.base;
                match mapped {
                    Some(mapped) => self.reflexive(mapped, base),
                    None => log::info!("STUN {source}: an answer with no mapped address"),
                }
            }
            Class::Error => {
                log::info!(
                    "STUN {source}: binding refused (error {})",
                    msg.error_code().unwrap_or(0)
                );
                b.tx = None;
            }
            _ => {}
        }
        Delivery::Consumed
    }

    /// A message from the TURN server `server` on the TCP connection made for `base`.
    /// [`Delivery::Direct`] when no allocation owns that connection (any more).
    pub fn handle_stream_message(
        &mut self,
        base: SocketAddr,
        server: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Delivery {
        self.clock = now;
        self.deliver_to_allocation(base, server, TurnTransport::Tcp, bytes, now)
            .unwrap_or(Delivery::Direct)
    }

    /// The TCP connection of (`base`, `server`) failed or closed (the loop has closed
    /// it): its allocation fails and is made again after the usual pause.
    pub fn stream_closed(&mut self, base: SocketAddr, server: SocketAddr, why: &str, now: Instant) {
        self.clock = now;
        if let Some(a) = self.allocations.iter_mut().find(|a| {
            a.base() == base && a.server() == server && a.transport() == TurnTransport::Tcp
        }) {
            a.connection_lost(why);
        }
        self.collect();
    }

    /// Hands `bytes` from `server` to the allocation made from `base` over `transport`,
    /// if there is one: its answer is consumed, relayed data is for str0m.
    fn deliver_to_allocation(
        &mut self,
        base: SocketAddr,
        server: SocketAddr,
        transport: TurnTransport,
        bytes: &[u8],
        now: Instant,
    ) -> Option<Delivery> {
        let a = self
            .allocations
            .iter_mut()
            .find(|a| a.server() == server && a.base() == base && a.transport() == transport)?;
        let relayed = a.relayed();
        let got = a.handle_datagram(bytes, now);
        self.collect();
        Some(match (got, relayed) {
            (Some((peer, contents)), Some(relayed)) => Delivery::Relayed {
                source: peer,
                destination: relayed,
                contents,
            },
            _ => Delivery::Consumed,
        })
    }

    /// Hands out a server-reflexive candidate once per (address, base); one equal to its
    /// base (no NAT on the way) adds nothing to the host candidate.
    fn reflexive(&mut self, mapped: SocketAddr, base: SocketAddr) {
        if self.policy == IcePolicy::Relay
            || mapped == base
            || self.reflexive.contains(&(mapped, base))
        {
            return;
        }
        match Candidate::server_reflexive(mapped, base, "udp") {
            Ok(c) => {
                log::info!("server-reflexive candidate {mapped} (base {base})");
                self.reflexive.push((mapped, base));
                self.hand_out(c, base, None);
            }
            Err(e) => log::info!("no server-reflexive candidate for {mapped}: {e}"),
        }
    }

    fn hand_out(
        &mut self,
        candidate: Candidate,
        base: SocketAddr,
        turn: Option<(SocketAddr, TurnTransport)>,
    ) {
        self.out
            .push_back(GatherOutput::Candidate(candidate.clone()));
        self.handed.push(Handed {
            candidate,
            base,
            turn,
        });
    }

    /// Moves the allocations' datagrams and news into the output. A failed allocation
    /// is replaced by a new one after a pause (the server may be back, or its refusal
    /// over), and its relayed candidate is withdrawn.
    fn collect(&mut self) {
        let mut found = Vec::new();
        for a in &mut self.allocations {
            let tcp = a.transport() == TurnTransport::Tcp;
            while let Some(t) = a.poll_transmit() {
                self.out.push_back(if tcp {
                    GatherOutput::StreamTransmit(t)
                } else {
                    GatherOutput::Transmit(t)
                });
            }
            while let Some(e) = a.poll_event() {
                found.push((a.base(), a.server(), a.transport(), e));
            }
        }
        for (base, server, transport, e) in found {
            let key = (base, server, transport);
            match e {
                TurnEvent::Allocated { relayed, mapped } => {
                    self.backoff.remove(&key);
                    // Over TCP the mapped address is the connection's: no UDP candidate.
                    if let Some(m) = mapped.filter(|_| transport == TurnTransport::Udp) {
                        self.reflexive(m, base);
                    }
                    match Candidate::relayed(relayed, base, "udp") {
                        Ok(c) => self.hand_out(c, base, Some((server, transport))),
                        Err(e) => log::warn!("no relayed candidate for {relayed}: {e}"),
                    }
                }
                TurnEvent::Failed(why) => {
                    self.allocations.retain(|a| {
                        !((a.base(), a.server(), a.transport()) == key && a.is_failed())
                    });
                    self.withdraw(|h| h.base == base && h.turn == Some((server, transport)));
                    if transport == TurnTransport::Tcp {
                        self.out
                            .push_back(GatherOutput::Disconnect { base, server });
                    }
                    let Some(turn) = self
                        .turn_servers
                        .iter()
                        .find(|t| t.server == server && t.transport == transport)
                    else {
                        continue;
                    };
                    let pause = *self.backoff.get(&key).unwrap_or(&RETRY_FIRST);
                    self.backoff.insert(key, (pause * 2).min(RETRY_MAX));
                    log::warn!(
                        "TURN {server} ({transport}) allocation from {base}: {why}; allocating again in {} s",
                        pause.as_secs()
                    );
                    self.retries.push(Retry {
                        base,
                        turn: turn.clone(),
                        at: self.clock + pause,
                    });
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<GatherOutput> {
        self.collect();
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let dns = self
            .names
            .resolver
            .as_ref()
            .and_then(Resolver::poll_timeout);
        let bindings = self
            .bindings
            .iter()
            .filter_map(|b| b.tx.as_ref().map(Transaction::deadline));
        let allocations = self
            .allocations
            .iter()
            .filter_map(TurnAllocation::poll_timeout);
        let retries = self.retries.iter().map(|r| r.at);
        bindings.chain(allocations).chain(dns).chain(retries).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        let (due, waiting): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = waiting;
        for r in due {
            log::info!(
                "TURN {} ({}): allocating again from {}",
                r.turn.server,
                r.turn.transport,
                r.base
            );
            self.allocate(r.base, &r.turn, now);
        }
        if let Some(r) = self.names.resolver.as_mut() {
            r.handle_timeout(now);
        }
        self.resolved(now);
        let mut resend = Vec::new();
        for b in &mut self.bindings {
            let Some(tx) = b.tx.as_mut() else {
                continue;
            };
            match tx.tick(now) {
                Tick::Wait => {}
                Tick::Resend => resend.push((b.base, b.server, tx.bytes.clone())),
                Tick::TimedOut => {
                    log::warn!("STUN {}: no answer from {}", b.server, b.base);
                    b.tx = None;
                }
            }
        }
        for (base, server, bytes) in resend {
            self.transmit(base, server, bytes);
        }
        for a in &mut self.allocations {
            a.handle_timeout(now);
        }
        self.collect();
    }
}

/// The gatherer for the command line's servers, from the host sockets `bases`. Names are
/// resolved as the signaling server's are: an address, an `/etc/hosts` name or
/// `localhost` at once, any other name over DNS in the loop, one at a time (the
/// servers join as their names resolve). A name that cannot be a host name is an error
/// naming the flag.
pub fn start(
    servers: &IceServers,
    bases: &[SocketAddr],
    resolver: Resolver,
    now: Instant,
) -> Result<IceGatherer, String> {
    let mut g = IceGatherer::new(bases, &[], &[], servers.policy, now);
    g.names.resolver = Some(resolver);
    let stun = servers.stun.iter().map(|s| ("--stun", s, Named::Stun));
    let turn = servers.turn.iter().map(|t| {
        let named = Named::Turn {
            username: t.username.clone(),
            password: t.password.clone(),
            transport: t.transport,
        };
        ("--turn", &t.server, named)
    });
    for (flag, name, named) in stun.chain(turn) {
        // A name that can never resolve is a bad setting (exit 2), found before the loop.
        if name.host.parse::<std::net::IpAddr>().is_err() {
            if let Err(why) = resolver::check_host_name(&resolver::normalize(&name.host)) {
                return Err(format!("{flag} {name}: not a host name ({why})"));
            }
        }
        g.names.queue.push_back((flag, name.clone(), named));
    }
    g.resolved(now);
    Ok(g)
}

/// What a name is for.
#[derive(Debug, Clone)]
enum Named {
    Stun,
    Turn {
        username: String,
        password: String,
        transport: TurnTransport,
    },
}

/// Server names resolved one after another through the client's sans-IO resolver (it
/// runs one lookup at a time).
#[derive(Debug, Default)]
struct ServerNames {
    resolver: Option<Resolver>,
    queue: VecDeque<(&'static str, ServerName, Named)>,
    /// The lookup in flight.
    asking: Option<(&'static str, ServerName, Named)>,
}

impl ServerNames {
    /// Outcomes ready now: each server with its address, or an error naming the flag.
    fn poll(&mut self, now: Instant) -> Vec<(Named, Result<SocketAddr, String>)> {
        let mut done = Vec::new();
        let Some(resolver) = self.resolver.as_mut() else {
            return done;
        };
        loop {
            if let Some((flag, name, named)) = self.asking.take() {
                match resolver.poll_result() {
                    Some(r) => done.push((named, r.map_err(|e| format!("{flag} {name}: {e}")))),
                    None => {
                        self.asking = Some((flag, name, named));
                        return done;
                    }
                }
            }
            let Some((flag, name, named)) = self.queue.pop_front() else {
                return done;
            };
            match resolver.start(&name.host, name.port, now) {
                Some(r) => done.push((named, r.map_err(|e| format!("{flag} {name}: {e}")))),
                None => self.asking = Some((flag, name, named)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::nat::turn::{answer, request_of};
    use std::time::Duration;
    use str0m::CandidateKind;

    fn transmits(g: &mut IceGatherer) -> Vec<Transmit> {
        let mut v = Vec::new();
        while let Some(o) = g.poll_output() {
            if let GatherOutput::Transmit(t) = o {
                v.push(t);
            }
        }
        v
    }

    /// Everything the gatherer has to say: datagrams, new candidates, withdrawn ones.
    fn drain(g: &mut IceGatherer) -> (Vec<Transmit>, Vec<Candidate>, Vec<Candidate>) {
        let (mut sent, mut new, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(o) = g.poll_output() {
            match o {
                GatherOutput::Transmit(t) => sent.push(t),
                GatherOutput::Candidate(c) => new.push(c),
                GatherOutput::Withdrawn(c) => gone.push(c),
                GatherOutput::Dns { .. }
                | GatherOutput::Connect { .. }
                | GatherOutput::StreamTransmit(_)
                | GatherOutput::Disconnect { .. } => {}
            }
        }
        (sent, new, gone)
    }

    fn turn_creds() -> TurnCredentials {
        TurnCredentials {
            server: "203.0.113.1:3478".parse().unwrap(),
            transport: TurnTransport::Udp,
            username: "alice".into(),
            password: "secret".into(),
        }
    }

    /// The TURN server's 401 to an unsigned `request` (realm "r", nonce "n").
    fn challenge(request: &[u8]) -> Vec<u8> {
        let attrs = vec![
            Attr::ErrorCode(401),
            Attr::Realm("r".into()),
            Attr::Nonce("n".into()),
        ];
        answer(request, Class::Error, attrs, None)
    }

    /// Answers an unsigned Allocate with the 401 challenge, then the signed retry with
    /// success (`relayed`); returns what the gatherer handed out.
    fn allocate_ok(
        g: &mut IceGatherer,
        first: &Transmit,
        relayed: SocketAddr,
        now: Instant,
    ) -> Vec<Candidate> {
        let challenge = challenge(&first.contents);
        g.handle_datagram(first.destination, first.source, &challenge, now);
        let (sent, ..) = drain(g);
        let key = stun::long_term_key("alice", "r", "secret");
        let ok = answer(
            &sent[0].contents,
            Class::Success,
            vec![Attr::XorRelayedAddress(relayed), Attr::Lifetime(600)],
            Some(&key),
        );
        g.handle_datagram(first.destination, first.source, &ok, now);
        drain(g).1
    }

    /// A new host socket is asked from at once (STUN and TURN); a closed one's bindings
    /// and allocations stop and its candidates (server-reflexive and relayed) are
    /// withdrawn, the other socket's kept.
    #[test]
    fn host_sockets_that_come_and_go_are_asked_from_and_withdrawn() {
        let t0 = Instant::now();
        let old: SocketAddr = "10.1.0.2:5000".parse().unwrap();
        let new: SocketAddr = "10.1.0.3:5002".parse().unwrap();
        let stun_server: SocketAddr = "203.0.113.1:3479".parse().unwrap();
        let turn = turn_creds();
        let mut g = IceGatherer::new(
            &[old],
            &[stun_server],
            std::slice::from_ref(&turn),
            IcePolicy::All,
            t0,
        );
        let (sent, ..) = drain(&mut g);
        assert_eq!(sent.len(), 2);
        let (binding, alloc) = if sent[0].destination == stun_server {
            (&sent[0], &sent[1])
        } else {
            (&sent[1], &sent[0])
        };
        let mapped: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let ok = answer(
            &binding.contents,
            Class::Success,
            vec![Attr::XorMappedAddress(mapped)],
            None,
        );
        g.handle_datagram(stun_server, old, &ok, t0);
        let relayed: SocketAddr = "203.0.113.1:49170".parse().unwrap();
        let mut handed = drain(&mut g).1;
        handed.extend(allocate_ok(&mut g, alloc, relayed, t0));
        assert_eq!(handed.len(), 2, "srflx and relay from the first socket");

        g.add_base(new, t0);
        g.add_base(new, t0); // told twice: asked once
        let (sent, new_candidates, gone) = drain(&mut g);
        let mut asked: Vec<_> = sent.iter().map(|t| (t.source, t.destination)).collect();
        asked.sort();
        assert_eq!(asked, [(new, turn.server), (new, stun_server)]);
        assert!(new_candidates.is_empty() && gone.is_empty());

        g.remove_base(old);
        let (sent, new_candidates, gone) = drain(&mut g);
        assert!(sent.is_empty() && new_candidates.is_empty());
        let mut gone: Vec<_> = gone.iter().map(|c| (c.kind(), c.addr())).collect();
        gone.sort_by_key(|(_, a)| *a);
        assert_eq!(
            gone,
            [
                (CandidateKind::ServerReflexive, mapped),
                (CandidateKind::Relayed, relayed)
            ]
        );
        assert!(!g.is_relayed(relayed));
        let peer: SocketAddr = "198.51.100.20:7000".parse().unwrap();
        assert!(
            !g.send_relayed(relayed, peer, b"x", t0),
            "its allocation is gone"
        );
        // Nothing is retried from the closed socket.
        while let Some(at) = g
            .poll_timeout()
            .filter(|at| *at < t0 + Duration::from_secs(30))
        {
            g.handle_timeout(at);
            let (sent, ..) = drain(&mut g);
            assert!(sent.iter().all(|t| t.source == new), "{sent:?}");
        }
        // Removing it again is harmless.
        g.remove_base(old);
        assert!(drain(&mut g).2.is_empty());
    }

    /// A TURN server that never answers: the allocation fails, and a new one starts
    /// RETRY_FIRST later, then twice that after the next failure. Once one succeeds and
    /// later dies (its refresh unanswered), its relayed candidate is withdrawn and the
    /// pause starts over.
    #[test]
    fn a_failed_allocation_is_made_again_after_a_growing_pause() {
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let turn = turn_creds();
        let mut g = IceGatherer::new(
            &[host],
            &[],
            std::slice::from_ref(&turn),
            IcePolicy::All,
            t0,
        );
        let mut txids = Vec::new();
        let mut starts: Vec<(Instant, Transmit)> = Vec::new();
        let mut gone = Vec::new();
        let mut step =
            |g: &mut IceGatherer, now: Instant, starts: &mut Vec<(Instant, Transmit)>| {
                let (sent, _, withdrawn) = drain(g);
                gone.extend(withdrawn);
                for t in sent {
                    let m = Message::decode(&t.contents, None).unwrap();
                    if m.method == stun::ALLOCATE && !txids.contains(&m.txid) {
                        txids.push(m.txid);
                        starts.push((now, t));
                    }
                }
            };
        step(&mut g, t0, &mut starts);
        let mut now = t0;
        while starts.len() < 3 {
            now = g.poll_timeout().expect("a retry is always due");
            g.handle_timeout(now);
            step(&mut g, now, &mut starts);
        }
        // The transaction gives up 6.55 s after its first send.
        let give_up = Duration::from_millis(6550);
        assert_eq!(starts[1].0 - starts[0].0, give_up + RETRY_FIRST);
        assert_eq!(starts[2].0 - starts[1].0, give_up + 2 * RETRY_FIRST);
        let relayed: SocketAddr = "203.0.113.1:49171".parse().unwrap();
        let got = allocate_ok(&mut g, &starts[2].1, relayed, now);
        assert_eq!(got.len(), 1);
        assert!(g.is_relayed(relayed));
        // The refresh (at lifetime - 60 s) goes unanswered: the allocation fails.
        let allocated_at = now;
        let before = starts.len();
        while starts.len() == before {
            now = g.poll_timeout().unwrap();
            g.handle_timeout(now);
            step(&mut g, now, &mut starts);
        }
        let failed_at = allocated_at + Duration::from_secs(540) + give_up;
        assert_eq!(now, failed_at + RETRY_FIRST, "the pause started over");
        assert!(!g.is_relayed(relayed));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].addr(), relayed);
    }

    #[test]
    fn a_binding_answer_gives_one_srflx_candidate_with_its_base() {
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut g = IceGatherer::new(&[lo, host], &[server], &[], IcePolicy::All, t0);
        let sent = transmits(&mut g);
        assert_eq!(sent.len(), 1, "loopback does not ask a server elsewhere");
        assert_eq!((sent[0].source, sent[0].destination), (host, server));
        let mapped: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let ok = answer(
            &sent[0].contents,
            Class::Success,
            vec![Attr::XorMappedAddress(mapped)],
            None,
        );
        // From another address, or on another socket: not the gatherer's.
        let other: SocketAddr = "203.0.113.9:3478".parse().unwrap();
        assert_eq!(g.handle_datagram(other, host, &ok, t0), Delivery::Direct);
        assert_eq!(g.handle_datagram(server, host, &ok, t0), Delivery::Consumed);
        let Some(GatherOutput::Candidate(c)) = g.poll_output() else {
            panic!("a candidate");
        };
        assert_eq!(c.kind(), CandidateKind::ServerReflexive);
        assert_eq!((c.addr(), c.local()), (mapped, host));
        // A duplicate answer changes nothing; the gatherer is done.
        assert_eq!(g.handle_datagram(server, host, &ok, t0), Delivery::Direct);
        assert!(g.poll_output().is_none());
        assert!(!g.is_gathering());
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn server_names_resolve_over_dns_one_after_another() {
        use simple_dns::rdata::{RData, A};
        use simple_dns::{Name, Packet, ResourceRecord, CLASS};
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let ns: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let name = |host: &str| ServerName {
            host: host.into(),
            port: 3478,
        };
        let servers = IceServers {
            stun: vec![name("stun.test"), name("203.0.113.9"), name("gone.test")],
            turn: vec![],
            policy: IcePolicy::All,
        };
        let resolver = Resolver::with_nameservers(vec![ns]);
        let mut g = start(&servers, &[host], resolver, t0).unwrap();
        // The literal address is asked at once; stun.test waits for DNS.
        let mut queries = Vec::new();
        let mut bindings = Vec::new();
        let drain = |g: &mut IceGatherer, q: &mut Vec<Vec<u8>>, b: &mut Vec<SocketAddr>| {
            while let Some(o) = g.poll_output() {
                match o {
                    GatherOutput::Dns { server, query } => {
                        assert_eq!(server, ns);
                        q.push(query)
                    }
                    GatherOutput::Transmit(t) => b.push(t.destination),
                    _ => {}
                }
            }
        };
        drain(&mut g, &mut queries, &mut bindings);
        assert_eq!(queries.len(), 1, "one lookup at a time");
        let q = Packet::parse(&queries[0]).unwrap();
        let mut r = Packet::new_reply(q.id());
        r.questions = q.questions.clone();
        let rdata = RData::A(A {
            address: u32::from_be_bytes([203, 0, 113, 7]),
        });
        r.answers.push(ResourceRecord::new(
            Name::new_unchecked("stun.test"),
            CLASS::IN,
            60,
            rdata,
        ));
        g.handle_dns(ns, &r.build_bytes_vec().unwrap(), t0);
        queries.clear();
        drain(&mut g, &mut queries, &mut bindings);
        bindings.sort();
        assert_eq!(
            bindings,
            [
                "203.0.113.7:3478".parse().unwrap(),
                "203.0.113.9:3478".parse().unwrap()
            ]
        );
        assert_eq!(queries.len(), 1, "then gone.test is asked");
        // gone.test never answers: the lookup times out with a warning, nothing breaks.
        let mut now = t0;
        while let Some(at) = g.poll_timeout() {
            now = at;
            g.handle_timeout(now);
            drain(&mut g, &mut queries, &mut bindings);
        }
        assert!(now - t0 < Duration::from_secs(10));
        // A name that can never resolve is refused before anything starts.
        let bad = IceServers {
            stun: vec![name("bad name!")],
            ..servers
        };
        let e = start(&bad, &[host], Resolver::with_nameservers(vec![ns]), t0).unwrap_err();
        assert!(e.contains("--stun") && e.contains("bad name!"), "{e}");
    }

    #[test]
    fn a_silent_stun_server_is_retried_then_given_up_and_bad_answers_never_panic() {
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let mut g = IceGatherer::new(&[host], &[server], &[], IcePolicy::All, t0);
        let first = transmits(&mut g).remove(0);
        let len = first.contents.len();
        for n in (0..len + 4).filter(|n| *n != len) {
            let mut junk = first.contents.clone();
            junk.resize(n, 0xA5);
            let _ = g.handle_datagram(server, host, &junk, t0);
        }
        let wrong_tx = Message {
            class: Class::Success,
            method: stun::BINDING,
            txid: [0; 12],
            attrs: vec![Attr::XorMappedAddress(server)],
            integrity_ok: false,
        }
        .encode(None);
        g.handle_datagram(server, host, &wrong_tx, t0);
        let mut resends = 0;
        let mut now = t0;
        while let Some(at) = g.poll_timeout() {
            assert!(at >= now);
            now = at;
            g.handle_timeout(now);
            resends += transmits(&mut g).len();
        }
        assert_eq!(resends, 5);
        assert!(!g.is_gathering());
        assert!(now - t0 < Duration::from_secs(8));
    }

    #[test]
    fn relay_policy_asks_no_stun_and_wraps_what_str0m_sends_from_the_relay() {
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let stun_server: SocketAddr = "203.0.113.1:3479".parse().unwrap();
        let turn = TurnCredentials {
            server: "203.0.113.1:3478".parse().unwrap(),
            transport: TurnTransport::Udp,
            username: "alice".into(),
            password: "secret".into(),
        };
        let mut g = IceGatherer::new(
            &[host],
            &[stun_server],
            std::slice::from_ref(&turn),
            IcePolicy::Relay,
            t0,
        );
        let sent = transmits(&mut g);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].destination, turn.server, "only the Allocate");
        let key = stun::long_term_key("alice", "r", "secret");
        let challenge = challenge(&sent[0].contents);
        assert_eq!(
            g.handle_datagram(turn.server, host, &challenge, t0),
            Delivery::Consumed
        );
        let retry = transmits(&mut g).remove(0);
        let relayed: SocketAddr = "203.0.113.1:49170".parse().unwrap();
        let ok = answer(
            &retry.contents,
            Class::Success,
            vec![
                Attr::XorRelayedAddress(relayed),
                Attr::XorMappedAddress("198.51.100.9:4000".parse().unwrap()),
            ],
            Some(&key),
        );
        g.handle_datagram(turn.server, host, &ok, t0);
        let mut kinds = Vec::new();
        while let Some(o) = g.poll_output() {
            if let GatherOutput::Candidate(c) = o {
                kinds.push((c.kind(), c.addr()));
            }
        }
        assert_eq!(
            kinds,
            [(CandidateKind::Relayed, relayed)],
            "no srflx under relay"
        );
        assert!(g.is_relayed(relayed));
        let peer: SocketAddr = "198.51.100.20:7000".parse().unwrap();
        assert!(g.send_relayed(relayed, peer, b"check", t0));
        assert!(!g.send_relayed(host, peer, b"direct", t0));
        let perm = transmits(&mut g);
        assert_eq!(perm.len(), 1);
        assert_eq!((perm[0].source, perm[0].destination), (host, turn.server));
        g.handle_datagram(
            turn.server,
            host,
            &answer(&perm[0].contents, Class::Success, vec![], Some(&key)),
            t0,
        );
        let wrapped = transmits(&mut g);
        assert!(wrapped.iter().all(|t| t.destination == turn.server));
        let data = Message::indication(stun::DATA, [3; 12])
            .with(Attr::XorPeerAddress(peer))
            .with(Attr::Data(b"reply".to_vec()))
            .encode(None);
        assert_eq!(
            g.handle_datagram(turn.server, host, &data, t0),
            Delivery::Relayed {
                source: peer,
                destination: relayed,
                contents: b"reply".to_vec()
            }
        );
    }

    /// Over TCP: the loop is told to connect before anything is sent; every message goes
    /// to that connection (none as a datagram); the Allocate answer's mapped address
    /// (the connection's) gives no srflx candidate; relayed traffic goes both ways on the
    /// stream; a closed connection fails the allocation, withdraws its candidate, and a
    /// new connection and allocation follow after the usual pause.
    #[test]
    fn a_tcp_turn_server_is_reached_on_a_connection_the_loop_opens_and_reopens() {
        let t0 = Instant::now();
        let host: SocketAddr = "10.1.1.2:5000".parse().unwrap();
        let turn = TurnCredentials {
            transport: TurnTransport::Tcp,
            ..turn_creds()
        };
        let server = turn.server;
        let mut g = IceGatherer::new(
            &[host],
            &[],
            std::slice::from_ref(&turn),
            IcePolicy::All,
            t0,
        );
        #[derive(Debug, Default)]
        struct Seen {
            connects: Vec<(SocketAddr, SocketAddr)>,
            disconnects: Vec<(SocketAddr, SocketAddr)>,
            stream: Vec<Transmit>,
            datagrams: usize,
            new: Vec<Candidate>,
            gone: Vec<Candidate>,
        }
        let see = |g: &mut IceGatherer| {
            let mut s = Seen::default();
            while let Some(o) = g.poll_output() {
                match o {
                    GatherOutput::Connect { base, server } => {
                        assert!(s.stream.is_empty(), "connect comes first");
                        s.connects.push((base, server))
                    }
                    GatherOutput::Disconnect { base, server } => s.disconnects.push((base, server)),
                    GatherOutput::StreamTransmit(t) => s.stream.push(t),
                    GatherOutput::Transmit(_) => s.datagrams += 1,
                    GatherOutput::Candidate(c) => s.new.push(c),
                    GatherOutput::Withdrawn(c) => s.gone.push(c),
                    GatherOutput::Dns { .. } => {}
                }
            }
            s
        };
        let s = see(&mut g);
        assert_eq!(s.connects, [(host, server)]);
        assert_eq!(s.stream.len(), 1);
        assert_eq!(
            (s.stream[0].source, s.stream[0].destination),
            (host, server)
        );
        assert_eq!(s.datagrams, 0);
        // Not retransmitted: the next deadline is the request's 39.5 s time-out.
        assert_eq!(
            g.poll_timeout(),
            Some(t0 + crate::client::nat::transaction::RELIABLE_TIMEOUT)
        );
        let challenge = challenge(&s.stream[0].contents);
        // The same bytes as a datagram from that address are not this allocation's.
        assert_eq!(
            g.handle_datagram(server, host, &challenge, t0),
            Delivery::Direct
        );
        assert_eq!(
            g.handle_stream_message(host, server, &challenge, t0),
            Delivery::Consumed
        );
        let retry = see(&mut g).stream.remove(0);
        let key = stun::long_term_key("alice", "r", "secret");
        let relayed: SocketAddr = "203.0.113.1:49170".parse().unwrap();
        let ok = answer(
            &retry.contents,
            Class::Success,
            vec![
                Attr::XorRelayedAddress(relayed),
                Attr::XorMappedAddress("198.51.100.9:40001".parse().unwrap()),
            ],
            Some(&key),
        );
        g.handle_stream_message(host, server, &ok, t0);
        let s = see(&mut g);
        let kinds: Vec<_> = s.new.iter().map(|c| (c.kind(), c.addr())).collect();
        assert_eq!(
            kinds,
            [(CandidateKind::Relayed, relayed)],
            "no srflx from TCP"
        );
        // str0m's packet from the relayed address: a permission first, on the stream.
        let peer: SocketAddr = "198.51.100.20:7000".parse().unwrap();
        assert!(g.send_relayed(relayed, peer, b"check", t0));
        let s = see(&mut g);
        assert_eq!((s.stream.len(), s.datagrams), (1, 0));
        g.handle_stream_message(
            host,
            server,
            &answer(&s.stream[0].contents, Class::Success, vec![], Some(&key)),
            t0,
        );
        assert!(see(&mut g).stream.iter().all(|t| t.destination == server));
        let data = Message::indication(stun::DATA, [3; 12])
            .with(Attr::XorPeerAddress(peer))
            .with(Attr::Data(b"reply".to_vec()))
            .encode(None);
        assert_eq!(
            g.handle_stream_message(host, server, &data, t0),
            Delivery::Relayed {
                source: peer,
                destination: relayed,
                contents: b"reply".to_vec()
            }
        );
        // The connection closes: the candidate goes, and after RETRY_FIRST a new
        // connection and a new Allocate.
        let t1 = t0 + Duration::from_secs(5);
        g.stream_closed(host, server, "closed by the server", t1);
        let s = see(&mut g);
        assert_eq!(s.gone.len(), 1);
        assert_eq!(s.gone[0].addr(), relayed);
        assert_eq!(s.disconnects, [(host, server)]);
        assert!(!g.is_relayed(relayed));
        assert_eq!(g.poll_timeout(), Some(t1 + RETRY_FIRST));
        g.handle_timeout(t1 + RETRY_FIRST);
        let s = see(&mut g);
        assert_eq!(s.connects, [(host, server)]);
        assert_eq!(s.stream.len(), 1);
        assert_eq!(
            request_of(&s.stream[0].contents).0,
            stun::ALLOCATE,
            "a new allocation"
        );
        // The same server named again (another name for it): nothing new starts.
        g.add_turn_server(&turn, t1);
        assert!(see(&mut g).connects.is_empty());
        // A close reported for no allocation (twice, or a stale one) changes nothing.
        g.stream_closed(host, "203.0.113.9:3478".parse().unwrap(), "x", t1);
        assert!(see(&mut g).gone.is_empty());
    }
}
