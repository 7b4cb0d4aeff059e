//! Name resolution that never blocks the loop. `getaddrinfo` (what `ToSocketAddrs` calls)
//! blocks the calling thread for as long as DNS takes, and the client has one thread: a slow
//! or dead nameserver would freeze the window, the call and the signaling timers. This is
//! the lookup as a sans-IO state machine, in the manner of the other machines here:
//!
//! - a literal IPv4/IPv6 address, a name from `/etc/hosts` and `localhost` answer at once;
//! - any other name is asked over UDP of the nameservers from `/etc/resolv.conf` (A first,
//!   AAAA when there is no A), one at a time, the next one after each attempt's time-out,
//!   until the lookup's time-out; the loop sends the datagrams on a UDP socket it
//!   registers, and hands back what arrives and the clock.
//!
//! Answers are accepted only from the nameserver asked, with the query's id and question.
//! The machine reads no clock and touches no socket; only [`Resolver::from_system`] reads
//! the two files.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{
    header_buffer, Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE,
};

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// How long one nameserver is given to answer before the next is asked.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// As the C library: only the first three `nameserver` lines count.
const MAX_NAMESERVERS: usize = 3;
/// CNAME links followed inside one answer.
const MAX_CNAME_CHAIN: usize = 8;

/// Why a name did not resolve. Every message starts with the host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Not something that can be looked up.
    InvalidName { host: String, why: &'static str },
    /// The nameserver says the name does not exist (NXDOMAIN).
    NoSuchName { host: String, server: SocketAddr },
    /// The name exists but has no A or AAAA record.
    NoAddress { host: String, server: SocketAddr },
    /// Every nameserver asked answered with an error (SERVFAIL, REFUSED, ...); the last one.
    ServerError {
        host: String,
        server: SocketAddr,
        rcode: String,
    },
    /// The answer did not fit in a datagram (TC bit set); there is no fallback to TCP.
    Truncated { host: String, server: SocketAddr },
    /// No usable answer from any nameserver in the time allowed.
    TimedOut {
        host: String,
        servers: Vec<SocketAddr>,
        after: Duration,
    },
}

impl ResolveError {
    /// The name that did not resolve.
    pub fn host(&self) -> &str {
        match self {
            ResolveError::InvalidName { host, .. }
            | ResolveError::NoSuchName { host, .. }
            | ResolveError::NoAddress { host, .. }
            | ResolveError::ServerError { host, .. }
            | ResolveError::Truncated { host, .. }
            | ResolveError::TimedOut { host, .. } => host,
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::InvalidName { host, why } => {
                write!(f, "{host:?}: not a valid host name ({why})")
            }
            ResolveError::NoSuchName { host, server } => {
                write!(f, "{host}: no such name (NXDOMAIN from {server})")
            }
            ResolveError::NoAddress { host, server } => write!(
                f,
                "{host}: the name exists but has no address records (A or AAAA) at {server}"
            ),
            ResolveError::ServerError {
                host,
                server,
                rcode,
            } => write!(f, "{host}: the nameserver {server} answered {rcode}"),
            ResolveError::Truncated { host, server } => write!(
                f,
                "{host}: the answer from {server} was truncated (too large for UDP; TCP is not tried)"
            ),
            ResolveError::TimedOut {
                host,
                servers,
                after,
            } => {
                write!(f, "{host}: no answer within {} s from ", after.as_secs_f32())?;
                for (i, s) in servers.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ResolveError {}

/// One lookup in flight.
#[derive(Debug)]
struct Lookup {
    /// As the caller wrote it, for messages.
    host: String,
    /// Lower case, without a final dot: what the question carries and answers must match.
    name: String,
    port: u16,
    /// `A`, then `AAAA` if the name has no A record.
    qtype: TYPE,
    id: u16,
    /// Index of the nameserver asked last.
    server: usize,
    /// Nameservers that answered with an error, not asked again.
    failed: Vec<bool>,
    /// Nameservers asked so far, in order, for the time-out message.
    asked: Vec<SocketAddr>,
    attempt_deadline: Instant,
    deadline: Instant,
}

/// The resolver: hosts table, nameservers, and at most one lookup at a time.
#[derive(Debug)]
pub struct Resolver {
    hosts: Vec<(String, IpAddr)>,
    nameservers: Vec<SocketAddr>,
    attempt_timeout: Duration,
    lookup_timeout: Duration,
    lookup: Option<Lookup>,
    transmit: Option<(SocketAddr, Vec<u8>)>,
    result: Option<Result<SocketAddr, ResolveError>>,
}

impl Resolver {
    /// A resolver configured from `/etc/hosts` and `/etc/resolv.conf` (a missing file counts
    /// as empty). The only method that reads anything.
    pub fn from_system() -> Resolver {
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                log::debug!("resolver: cannot read {path}: {e}");
                String::new()
            }
        };
        Resolver::new(&read("/etc/hosts"), &read("/etc/resolv.conf"))
    }

    /// A resolver from the texts of a hosts file and a resolv.conf.
    pub fn new(hosts_text: &str, resolv_conf_text: &str) -> Resolver {
        let mut r = Resolver::with_nameservers(parse_nameservers(resolv_conf_text));
        r.hosts = parse_hosts(hosts_text);
        r
    }

    /// A resolver with no hosts table that asks `nameservers` (127.0.0.1:53 if empty).
    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> Resolver {
        let nameservers = if nameservers.is_empty() {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT)]
        } else {
            nameservers
        };
        Resolver {
            hosts: Vec::new(),
            nameservers,
            attempt_timeout: ATTEMPT_TIMEOUT,
            lookup_timeout: LOOKUP_TIMEOUT,
            lookup: None,
            transmit: None,
            result: None,
        }
    }

    /// Other time-outs than [`ATTEMPT_TIMEOUT`] per nameserver and [`LOOKUP_TIMEOUT`] in all.
    pub fn with_timeouts(mut self, attempt: Duration, lookup: Duration) -> Resolver {
        self.attempt_timeout = attempt;
        self.lookup_timeout = lookup;
        self
    }

    /// The nameservers asked, in order (the loop binds its UDP socket to match their family).
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// The address `/etc/hosts` gives `name` (IPv4 preferred), or none.
    pub fn hosts_entry(&self, name: &str) -> Option<IpAddr> {
        let name = normalize(name);
        let mut matches = self.hosts.iter().filter(|(n, _)| *n == name).map(|e| e.1);
        let first = matches.next()?;
        Some(if first.is_ipv4() {
            first
        } else {
            matches.find(IpAddr::is_ipv4).unwrap_or(first)
        })
    }

    /// A lookup is waiting for an answer.
    pub fn is_busy(&self) -> bool {
        self.lookup.is_some()
    }

    /// Starts resolving `host` for `port`, cancelling any lookup in flight. `Some` is the
    /// answer, given at once (an address, a hosts entry, or an invalid name); `None` means
    /// a DNS query is on its way: see [`Resolver::poll_transmit`] and
    /// [`Resolver::poll_result`].
    pub fn start(
        &mut self,
        host: &str,
        port: u16,
        now: Instant,
    ) -> Option<Result<SocketAddr, ResolveError>> {
        self.lookup = None;
        self.transmit = None;
        self.result = None;
        let text = host.trim();
        let literal = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Some(Ok(SocketAddr::new(ip, port)));
        }
        let name = normalize(text);
        if let Err(why) = check_host_name(&name) {
            return Some(Err(ResolveError::InvalidName {
                host: host.to_string(),
                why,
            }));
        }
        if let Some(ip) = self.hosts_entry(&name) {
            return Some(Ok(SocketAddr::new(ip, port)));
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Some(Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
        }
        log::debug!("resolver: asking {} for {name}", self.nameservers[0]);
        self.lookup = Some(Lookup {
            host: text.to_string(),
            name,
            port,
            qtype: TYPE::A,
            id: 0,
            server: 0,
            failed: vec![false; self.nameservers.len()],
            asked: Vec::new(),
            attempt_deadline: now,
            deadline: now + self.lookup_timeout,
        });
        self.send_query(now);
        None
    }

    /// Drops the lookup in flight, if any; its answers are ignored from now on.
    pub fn cancel(&mut self) {
        self.lookup = None;
        self.transmit = None;
    }

    /// A datagram to send: (nameserver, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.take()
    }

    /// When [`Resolver::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lookup
            .as_ref()
            .map(|l| l.attempt_deadline.min(l.deadline))
    }

    /// The outcome of the lookup started by [`Resolver::start`], once there is one.
    pub fn poll_result(&mut self) -> Option<Result<SocketAddr, ResolveError>> {
        self.result.take()
    }

    /// Time passes: ask the next nameserver after an attempt's time-out, give up after the
    /// lookup's.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(l) = self.lookup.as_mut() else {
            return;
        };
        if now >= l.deadline {
            let err = ResolveError::TimedOut {
                host: l.host.clone(),
                servers: l.asked.clone(),
                after: self.lookup_timeout,
            };
            return self.finish(Err(err));
        }
        if now >= l.attempt_deadline {
            log::debug!(
                "resolver: no answer from {} for {} within {:?}",
                self.nameservers[l.server],
                l.name,
                self.attempt_timeout
            );
            if let Some(next) = next_server(&l.failed, l.server) {
                l.server = next;
            }
            self.send_query(now);
        }
    }

    /// A datagram arrived on the loop's resolver socket from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(l) = self.lookup.as_ref() else {
            return;
        };
        let server = self.nameservers[l.server];
        if from != server {
            log::debug!("resolver: ignoring a datagram from {from} (asked {server})");
            return;
        }
        if header_buffer::id(bytes) != Ok(l.id)
            || header_buffer::has_flags(bytes, PacketFlag::RESPONSE) != Ok(true)
        {
            log::debug!("resolver: ignoring a datagram that answers no query of ours");
            return;
        }
        if header_buffer::has_flags(bytes, PacketFlag::TRUNCATION) == Ok(true) {
            let err = ResolveError::Truncated {
                host: l.host.clone(),
                server,
            };
            return self.finish(Err(err));
        }
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("resolver: ignoring a malformed answer from {from}: {e}");
                return;
            }
        };
        if !answers_question(&packet, &l.name, l.qtype) {
            log::debug!("resolver: ignoring an answer to another question from {from}");
            return;
        }
        match packet.rcode() {
            RCODE::NoError => {}
            RCODE::NameError => {
                let err = ResolveError::NoSuchName {
                    host: l.host.clone(),
                    server,
                };
                return self.finish(Err(err));
            }
            rcode => return self.server_failed(rcode, now),
        }
        let addrs = addresses(&packet, &l.name, l.qtype);
        if let Some(ip) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
        {
            log::debug!("resolver: {} is {ip} (from {server})", l.name);
            let addr = SocketAddr::new(ip, l.port);
            return self.finish(Ok(addr));
        }
        if l.qtype == TYPE::A {
            // No IPv4 address: the name may have only IPv6 ones. Same nameserver, fresh
            // attempt time-out, same overall deadline.
            if let Some(l) = self.lookup.as_mut() {
                l.qtype = TYPE::AAAA;
            }
            return self.send_query(now);
        }
        let err = ResolveError::NoAddress {
            host: l.host.clone(),
            server,
        };
        self.finish(Err(err))
    }

    /// The nameserver asked answered with an error: ask the next one that has not, or give up.
    fn server_failed(&mut self, rcode: RCODE, now: Instant) {
        let Some(l) = self.lookup.as_mut() else {
            return;
        };
        let server = self.nameservers[l.server];
        log::debug!("resolver: {server} answered {rcode:?} for {}", l.name);
        l.failed[l.server] = true;
        match next_server(&l.failed, l.server) {
            Some(next) => {
                l.server = next;
                self.send_query(now);
            }
            None => {
                let err = ResolveError::ServerError {
                    host: l.host.clone(),
                    server,
                    rcode: rcode_text(rcode),
                };
                self.finish(Err(err));
            }
        }
    }

    /// Queues the current question for the current nameserver, with a new id.
    fn send_query(&mut self, now: Instant) {
        let Some(l) = self.lookup.as_mut() else {
            return;
        };
        l.id = rand::random();
        l.attempt_deadline = now + self.attempt_timeout;
        let server = self.nameservers[l.server];
        if !l.asked.contains(&server) {
            l.asked.push(server);
        }
        match build_query(l.id, &l.name, l.qtype) {
            Ok(bytes) => self.transmit = Some((server, bytes)),
            Err(why) => {
                let err = ResolveError::InvalidName {
                    host: l.host.clone(),
                    why,
                };
                self.finish(Err(err));
            }
        }
    }

    fn finish(&mut self, result: Result<SocketAddr, ResolveError>) {
        self.lookup = None;
        self.transmit = None;
        self.result = Some(result);
    }
}

/// The next nameserver after `current` that has not answered with an error, round robin
/// (`current` itself if it is the only one left).
fn next_server(failed: &[bool], current: usize) -> Option<usize> {
    let n = failed.len();
    (1..=n).map(|i| (current + i) % n).find(|&i| !failed[i])
}

/// Lower case, surrounding space and one final dot removed.
pub(crate) fn normalize(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63 bytes, 253 in all.
pub(crate) fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
    }
    Ok(())
}

/// A standard query, recursion desired, for `name`'s `qtype` records.
fn build_query(id: u16, name: &str, qtype: TYPE) -> Result<Vec<u8>, &'static str> {
    let qname = Name::new(name).map_err(|_| "not encodable as a DNS name")?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet
        .questions
        .push(Question::new(qname, qtype.into(), CLASS::IN.into(), false));
    packet
        .build_bytes_vec()
        .map_err(|_| "not encodable as a DNS name")
}

/// A DNS name as text, compared the way [`normalize`] writes names.
fn name_text(name: &Name) -> String {
    normalize(&name.to_string())
}

/// The answer repeats our question: one question, same name, type and class.
fn answers_question(packet: &Packet, name: &str, qtype: TYPE) -> bool {
    match packet.questions.as_slice() {
        [q] => {
            name_text(&q.qname) == name
                && q.qtype == QTYPE::TYPE(qtype)
                && q.qclass == QCLASS::CLASS(CLASS::IN)
        }
        _ => false,
    }
}

/// The addresses of `qtype` the answer section gives `name`, following CNAMEs.
fn addresses(packet: &Packet, name: &str, qtype: TYPE) -> Vec<IpAddr> {
    let mut names = vec![name.to_string()];
    for _ in 0..MAX_CNAME_CHAIN {
        let mut grew = false;
        for rr in &packet.answers {
            if let RData::CNAME(target) = &rr.rdata {
                let target = name_text(&target.0);
                if names.contains(&name_text(&rr.name)) && !names.contains(&target) {
                    names.push(target);
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    packet
        .answers
        .iter()
        .filter(|rr| rr.class == CLASS::IN && names.contains(&name_text(&rr.name)))
        .filter_map(|rr| match (&rr.rdata, qtype) {
            (RData::A(a), TYPE::A) => Some(IpAddr::from(a.address.to_be_bytes())),
            (RData::AAAA(a), TYPE::AAAA) => Some(IpAddr::from(a.address.to_be_bytes())),
            _ => None,
        })
        .collect()
}

fn rcode_text(rcode: RCODE) -> String {
    match rcode {
        RCODE::FormatError => "FORMERR (it could not read the query)".into(),
        RCODE::ServerFailure => "SERVFAIL".into(),
        RCODE::NotImplemented => "NOTIMP".into(),
        RCODE::Refused => "REFUSED".into(),
        other => format!("error code {}", other as u16),
    }
}

/// The entries of a hosts file: (lower-case name, address) for every name and alias, in
/// file order. `#` starts a comment; lines whose address does not parse are skipped.
pub fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            out.push((normalize(name), ip));
        }
    }
    out
}

/// The nameservers of a resolv.conf (`nameserver ADDRESS` lines, the first three), on port
/// 53. Lines starting with `#` or `;` are comments; addresses that do not parse (an IPv6
/// address with a `%zone`, for one) are skipped.
pub fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next()? != "nameserver" {
                return None;
            }
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            Some(SocketAddr::new(ip, DNS_PORT))
        })
        .take(MAX_NAMESERVERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, UdpSocket};

    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{ResourceRecord, OPCODE};

    use super::*;

    const NS1: &str = "192.0.2.53:53";
    const NS2: &str = "198.51.100.53:53";

    fn ns(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn two_servers() -> Resolver {
        Resolver::with_nameservers(vec![ns(NS1), ns(NS2)])
    }

    fn a(name: &str, ip: [u8; 4]) -> ResourceRecord<'_> {
        let rdata = RData::A(A {
            address: u32::from_be_bytes(ip),
        });
        ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 60, rdata)
    }

    /// A nameserver's reply to `query`: same id and question, then `fill` adds the rest.
    fn reply(query: &[u8], fill: impl FnOnce(&mut Packet)) -> Vec<u8> {
        let q = Packet::parse(query).unwrap();
        let mut r = Packet::new_reply(q.id());
        r.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
        r.questions = q.questions.clone();
        fill(&mut r);
        r.build_bytes_vec().unwrap()
    }

    /// Starts a lookup that needs DNS and returns its first datagram.
    fn ask(r: &mut Resolver, host: &str, now: Instant) -> (SocketAddr, Vec<u8>) {
        assert_eq!(r.start(host, 8888, now), None);
        r.poll_transmit().expect("a query to send")
    }

    #[test]
    fn literal_addresses_answer_at_once() {
        let mut r = two_servers();
        let now = Instant::now();
        assert_eq!(
            r.start("192.0.2.7", 8888, now),
            Some(Ok(ns("192.0.2.7:8888")))
        );
        assert_eq!(r.start(" ::1 ", 80, now), Some(Ok(ns("[::1]:80"))));
        assert_eq!(
            r.start("[2001:db8::1]", 80, now),
            Some(Ok(ns("[2001:db8::1]:80")))
        );
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(r.poll_timeout(), None);
        assert!(!r.is_busy());
    }

    #[test]
    fn hosts_file_names_and_aliases_answer_at_once() {
        let hosts = "# The hosts file\n\
            127.0.0.1\tlocalhost\n\
            ::1     localhost ip6-localhost ip6-loopback  # IPv6\n\
            10.1.2.3   Server.Example.org server   # the signaling box\n\
            2001:db8::5 v6only\n\
            fe80::1%eth0 zoned\n\
            not-an-address bogus\n\
               \n\
            #192.0.2.1 commented\n";
        let table = parse_hosts(hosts);
        assert!(table.contains(&("server.example.org".into(), "10.1.2.3".parse().unwrap())));
        assert!(table.contains(&("ip6-loopback".into(), "::1".parse().unwrap())));
        assert!(!table.iter().any(|(n, _)| n == "bogus" || n == "commented"));
        assert!(!table.iter().any(|(n, _)| n == "zoned" || n == "ipv6"));
        let mut r = Resolver::new(hosts, "nameserver 192.0.2.53\n");
        let now = Instant::now();
        // Names are case-blind, a final dot is allowed, aliases count, IPv4 comes first.
        assert_eq!(
            r.start("SERVER.example.org.", 8888, now),
            Some(Ok(ns("10.1.2.3:8888")))
        );
        assert_eq!(r.start("server", 1, now), Some(Ok(ns("10.1.2.3:1"))));
        assert_eq!(r.start("localhost", 2, now), Some(Ok(ns("127.0.0.1:2"))));
        assert_eq!(r.start("v6only", 3, now), Some(Ok(ns("[2001:db8::5]:3"))));
        assert_eq!(r.poll_transmit(), None);
        // localhost answers without a hosts file too, and never goes to DNS.
        let mut bare = Resolver::new("", "");
        assert_eq!(
            bare.start("localhost", 8888, now),
            Some(Ok(ns("127.0.0.1:8888")))
        );
        assert_eq!(
            bare.start("db.localhost", 8888, now),
            Some(Ok(ns("127.0.0.1:8888")))
        );
        assert_eq!(bare.poll_transmit(), None);
    }

    #[test]
    fn resolv_conf_gives_up_to_three_nameservers() {
        let conf = "# generated\n\
            ; another comment\n\
            search example.org\n\
            options timeout:1\n\
            nameserver 192.0.2.53\n\
            #nameserver 192.0.2.99\n\
            nameserver   2001:db8::53  # trailing words are ignored\n\
            nameserver fe80::1%eth0\n\
            nameserver garbage\n\
            nameserver 198.51.100.53\n\
            nameserver 203.0.113.53\n";
        assert_eq!(
            parse_nameservers(conf),
            vec![ns("192.0.2.53:53"), ns("[2001:db8::53]:53"), ns(NS2)]
        );
        // None at all: the C library's default, a server on this machine.
        assert_eq!(
            Resolver::new("", "search example.org\n").nameservers(),
            &[ns("127.0.0.1:53")]
        );
    }

    #[test]
    fn invalid_names_are_refused_at_once() {
        let mut r = two_servers();
        let now = Instant::now();
        for bad in ["", "a..b", "bad name", "x/y", &"a".repeat(64)] {
            let got = r.start(bad, 8888, now);
            assert!(
                matches!(got, Some(Err(ResolveError::InvalidName { .. }))),
                "{bad:?}: {got:?}"
            );
        }
        assert_eq!(r.poll_transmit(), None);
    }

    #[test]
    fn the_query_is_a_proper_recursive_a_query() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, bytes) = ask(&mut r, "Signal.Example.COM", now);
        assert_eq!(to, ns(NS1));
        assert_eq!(r.poll_transmit(), None);
        let q = Packet::parse(&bytes).unwrap();
        assert!(!q.has_flags(PacketFlag::RESPONSE));
        assert!(q.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(q.opcode(), OPCODE::StandardQuery);
        assert_eq!(q.questions.len(), 1);
        assert_eq!(q.questions[0].qname.to_string(), "signal.example.com");
        assert_eq!(q.questions[0].qtype, QTYPE::TYPE(TYPE::A));
        assert_eq!(q.questions[0].qclass, QCLASS::CLASS(CLASS::IN));
        assert!(q.answers.is_empty());
        assert_eq!(r.poll_timeout(), Some(now + ATTEMPT_TIMEOUT));
        assert!(r.is_busy());
    }

    #[test]
    fn an_answer_resolves_through_cnames() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "www.example.com", now);
        let answer = reply(&query, |p| {
            let cname = RData::CNAME(CNAME(Name::new_unchecked("Web.Example.NET")));
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked("www.example.com"),
                CLASS::IN,
                60,
                cname,
            ));
            p.answers.push(a("unrelated.example", [192, 0, 2, 99]));
            p.answers.push(a("web.example.net", [192, 0, 2, 10]));
        });
        r.handle_datagram(to, &answer, now + Duration::from_millis(20));
        assert_eq!(r.poll_result(), Some(Ok(ns("192.0.2.10:8888"))));
        assert_eq!(r.poll_result(), None);
        assert_eq!(r.poll_timeout(), None);
        assert!(!r.is_busy());
    }

    #[test]
    fn nxdomain_is_an_error_naming_the_host() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "nosuch.example", now);
        let answer = reply(&query, |p| *p.rcode_mut() = RCODE::NameError);
        r.handle_datagram(to, &answer, now);
        let err = r.poll_result().unwrap().unwrap_err();
        assert_eq!(
            err,
            ResolveError::NoSuchName {
                host: "nosuch.example".into(),
                server: ns(NS1)
            }
        );
        assert_eq!(
            err.to_string(),
            "nosuch.example: no such name (NXDOMAIN from 192.0.2.53:53)"
        );
        // A definite "no": the other nameserver is not asked.
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn strangers_wrong_ids_and_other_questions_are_ignored() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "example.com", now);
        let good = reply(&query, |p| p.answers.push(a("example.com", [192, 0, 2, 1])));
        // Wrong id.
        let mut wrong_id = good.clone();
        wrong_id[0] ^= 0x5a;
        r.handle_datagram(to, &wrong_id, now);
        // Right bytes, but from a server we did not ask.
        r.handle_datagram(ns(NS2), &good, now);
        r.handle_datagram(ns("192.0.2.53:5353"), &good, now);
        // Right id, another question.
        let q = Packet::parse(&query).unwrap();
        let mut other = Packet::new_reply(q.id());
        other.questions.push(Question::new(
            Name::new_unchecked("evil.example"),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        other.answers.push(a("evil.example", [203, 0, 113, 66]));
        r.handle_datagram(to, &other.build_bytes_vec().unwrap(), now);
        // Our own query echoed back (not a response), and garbage.
        r.handle_datagram(to, &query, now);
        r.handle_datagram(to, b"\x00", now);
        assert_eq!(r.poll_result(), None);
        assert!(r.is_busy());
        r.handle_datagram(to, &good, now);
        assert_eq!(r.poll_result(), Some(Ok(ns("192.0.2.1:8888"))));
    }

    #[test]
    fn no_a_record_asks_for_aaaa_then_gives_up() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "v6.example", now);
        let t1 = now + Duration::from_millis(1500);
        r.handle_datagram(to, &reply(&query, |_| {}), t1);
        let (to2, query2) = r.poll_transmit().expect("an AAAA query");
        assert_eq!(to2, to);
        let q = Packet::parse(&query2).unwrap();
        assert_eq!(q.questions[0].qtype, QTYPE::TYPE(TYPE::AAAA));
        assert_eq!(r.poll_timeout(), Some(t1 + ATTEMPT_TIMEOUT));
        // The A answer again (an old id now) changes nothing.
        r.handle_datagram(to, &reply(&query, |_| {}), t1);
        assert_eq!(r.poll_result(), None);
        let aaaa = reply(&query2, |p| {
            let rdata = RData::AAAA(AAAA {
                address: u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            });
            let name = Name::new_unchecked("v6.example");
            p.answers
                .push(ResourceRecord::new(name, CLASS::IN, 60, rdata));
        });
        r.handle_datagram(to, &aaaa, t1);
        assert_eq!(r.poll_result(), Some(Ok(ns("[2001:db8::7]:8888"))));

        // And a name with neither.
        let (to, query) = ask(&mut r, "txt-only.example", now);
        r.handle_datagram(to, &reply(&query, |_| {}), now);
        let (_, query2) = r.poll_transmit().unwrap();
        r.handle_datagram(to, &reply(&query2, |_| {}), now);
        let err = r.poll_result().unwrap().unwrap_err();
        assert!(matches!(err, ResolveError::NoAddress { .. }), "{err:?}");
        assert!(err.to_string().starts_with("txt-only.example: "), "{err}");
    }

    #[test]
    fn a_silent_nameserver_passes_to_the_next_then_the_lookup_times_out() {
        let mut r = two_servers();
        let t0 = Instant::now();
        let (to, first) = ask(&mut r, "slow.example", t0);
        assert_eq!(to, ns(NS1));
        r.handle_timeout(t0 + Duration::from_millis(1999));
        assert_eq!(r.poll_transmit(), None);
        let t2 = t0 + ATTEMPT_TIMEOUT;
        assert_eq!(r.poll_timeout(), Some(t2));
        r.handle_timeout(t2);
        let (to, second) = r.poll_transmit().expect("a query to the next nameserver");
        assert_eq!(to, ns(NS2));
        assert_ne!(first[..2], second[..2], "a new query id");
        // The first server's late answer is no longer taken.
        let late = reply(&first, |p| {
            p.answers.push(a("slow.example", [192, 0, 2, 2]))
        });
        r.handle_datagram(ns(NS1), &late, t2);
        assert_eq!(r.poll_result(), None);
        let t4 = t2 + ATTEMPT_TIMEOUT;
        assert_eq!(r.poll_timeout(), Some(t4));
        r.handle_timeout(t4);
        assert_eq!(r.poll_transmit().map(|t| t.0), Some(ns(NS1)));
        // The last attempt is cut short by the lookup's own time-out.
        assert_eq!(r.poll_timeout(), Some(t0 + LOOKUP_TIMEOUT));
        r.handle_timeout(t0 + LOOKUP_TIMEOUT);
        let err = r.poll_result().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "slow.example: no answer within 5 s from 192.0.2.53:53, 198.51.100.53:53"
        );
        assert_eq!(err.host(), "slow.example");
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.poll_transmit(), None);
    }

    #[test]
    fn server_failures_move_on_and_then_give_up() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "broken.example", now);
        r.handle_datagram(
            to,
            &reply(&query, |p| *p.rcode_mut() = RCODE::ServerFailure),
            now,
        );
        let (to, query) = r.poll_transmit().expect("the next nameserver");
        assert_eq!(to, ns(NS2));
        r.handle_datagram(to, &reply(&query, |p| *p.rcode_mut() = RCODE::Refused), now);
        let err = r.poll_result().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "broken.example: the nameserver 198.51.100.53:53 answered REFUSED"
        );
    }

    #[test]
    fn a_truncated_answer_is_an_error() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, query) = ask(&mut r, "big.example", now);
        r.handle_datagram(
            to,
            &reply(&query, |p| p.set_flags(PacketFlag::TRUNCATION)),
            now,
        );
        let err = r.poll_result().unwrap().unwrap_err();
        assert!(matches!(err, ResolveError::Truncated { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_new_lookup_cancels_the_old_one() {
        let mut r = two_servers();
        let now = Instant::now();
        let (to, old) = ask(&mut r, "old.example", now);
        let (_, new) = ask(&mut r, "new.example", now);
        r.handle_datagram(
            to,
            &reply(&old, |p| p.answers.push(a("old.example", [192, 0, 2, 1]))),
            now,
        );
        assert_eq!(r.poll_result(), None);
        r.handle_datagram(
            to,
            &reply(&new, |p| p.answers.push(a("new.example", [192, 0, 2, 2]))),
            now,
        );
        assert_eq!(r.poll_result(), Some(Ok(ns("192.0.2.2:8888"))));
        // An answer at once drops the lookup in flight as well.
        let (_, q) = ask(&mut r, "third.example", now);
        assert!(r.start("127.0.0.1", 1, now).is_some());
        r.handle_datagram(
            to,
            &reply(&q, |p| p.answers.push(a("third.example", [192, 0, 2, 3]))),
            now,
        );
        assert_eq!(r.poll_result(), None);
        assert_eq!(r.poll_timeout(), None);
    }

    /// The resolver's datagrams over real loopback sockets, to a nameserver played by the
    /// test.
    #[test]
    fn resolves_against_a_nameserver_on_loopback() {
        let nameserver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&nameserver, &client] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let mut r = Resolver::with_nameservers(vec![nameserver.local_addr().unwrap()]);
        let now = Instant::now();
        assert_eq!(r.start("signal.test", 8888, now), None);
        let (to, bytes) = r.poll_transmit().unwrap();
        client.send_to(&bytes, to).unwrap();

        let mut buf = [0u8; 512];
        let (n, from) = nameserver.recv_from(&mut buf).unwrap();
        assert_eq!(from, client.local_addr().unwrap());
        let answer = reply(&buf[..n], |p| {
            p.answers.push(a("signal.test", [127, 0, 0, 9]))
        });
        nameserver.send_to(&answer, from).unwrap();

        let (n, from) = client.recv_from(&mut buf).unwrap();
        r.handle_datagram(from, &buf[..n], Instant::now());
        assert_eq!(r.poll_result(), Some(Ok(ns("127.0.0.9:8888"))));
    }
}
