//! The machine's own addresses, for the host ICE candidates the client offers, and the
//! kernel's word when they change (a netlink socket the loop polls), so a call can move to
//! a new address.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::libc;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Every IPv4 address of an interface that is up, loopback included, link-local excluded,
/// each once, in the order the kernel lists them. If the interfaces cannot be listed at all,
/// only 127.0.0.1.
pub fn local_ipv4_addresses() -> Vec<IpAddr> {
    match getifaddrs() {
        Ok(ifaddrs) => usable_ipv4(ifaddrs.map(|ifa| {
            let up = ifa.flags.contains(InterfaceFlags::IFF_UP);
            let ip = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|sin| sin.ip());
            (up, ip)
        })),
        Err(e) => {
            log::warn!("cannot list the network interfaces ({e}); offering 127.0.0.1 only");
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        }
    }
}

/// The choice [`local_ipv4_addresses`] makes from `(interface is up, its IPv4 address)`.
fn usable_ipv4(entries: impl IntoIterator<Item = (bool, Option<Ipv4Addr>)>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (up, ip) in entries {
        let Some(ip) = ip.filter(|ip| up && !ip.is_link_local()) else {
            continue;
        };
        if !out.contains(&IpAddr::V4(ip)) {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

/// A `NETLINK_ROUTE` socket subscribed to address and link changes: readable when the
/// kernel adds or removes an address or an interface goes up or down. Its messages are not
/// parsed; any of them means "list the addresses again" ([`HostAddresses`]).
pub struct AddressWatch {
    fd: OwnedFd,
}

impl AddressWatch {
    /// The non-blocking socket, subscribed to IPv4 and IPv6 address changes and link
    /// changes of the network namespace the process runs in.
    pub fn open() -> nix::Result<AddressWatch> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let groups = libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_LINK;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups as u32))?;
        Ok(AddressWatch { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending message; true if there was any (or the kernel dropped some
    /// because we were slow: something changed all the same).
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return any,
                Err(e) => {
                    log::debug!("address watch: {e}");
                    return true;
                }
            }
        }
    }
}

/// How long after the kernel's first word the addresses are listed again: `ip addr del`
/// then `ip addr add` (a DHCP renewal, a hand-over) come as separate messages a few
/// milliseconds apart, and one look after both gives one change, not two.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Addresses added and removed since the last look.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AddressChange {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

impl AddressChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The host addresses the client has sockets on, and when to look again: the decisions
/// behind re-gathering, without the sockets (the loop binds and closes them).
#[derive(Debug)]
pub struct HostAddresses {
    current: Vec<IpAddr>,
    look_at: Option<Instant>,
}

impl HostAddresses {
    pub fn new(current: Vec<IpAddr>) -> HostAddresses {
        HostAddresses {
            current,
            look_at: None,
        }
    }

    /// The kernel said something changed: look [`SETTLE`] after its first word.
    pub fn notified(&mut self, now: Instant) {
        self.look_at.get_or_insert(now + SETTLE);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.look_at
    }

    /// True when it is time to list the addresses (then give them to [`HostAddresses::update`]).
    pub fn is_due(&self, now: Instant) -> bool {
        self.look_at.is_some_and(|t| t <= now)
    }

    /// The addresses listed now: which to open sockets on, which to close. Loopback is
    /// never closed (it cannot go away, and a listing that failed gives only it).
    pub fn update(&mut self, listed: &[IpAddr]) -> AddressChange {
        self.look_at = None;
        let added: Vec<IpAddr> = listed
            .iter()
            .filter(|ip| !self.current.contains(ip))
            .copied()
            .collect();
        let removed: Vec<IpAddr> = self
            .current
            .iter()
            .filter(|ip| !ip.is_loopback() && !listed.contains(ip))
            .copied()
            .collect();
        self.current.retain(|ip| !removed.contains(ip));
        self.current.extend(&added);
        AddressChange { added, removed }
    }

    /// An address whose socket could not be opened: forgotten, so the next look tries again.
    pub fn forget(&mut self, ip: IpAddr) {
        self.current.retain(|c| *c != ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_looked_at_once_after_they_settle() {
        let t0 = Instant::now();
        let (lo, old, new) = (
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([10, 1, 0, 2]),
            IpAddr::from([10, 1, 0, 3]),
        );
        let mut h = HostAddresses::new(vec![lo, old]);
        assert_eq!(h.poll_timeout(), None);
        // `ip addr del` then `ip addr add` 5 ms later: one look, SETTLE after the first.
        h.notified(t0);
        h.notified(t0 + Duration::from_millis(5));
        assert_eq!(h.poll_timeout(), Some(t0 + SETTLE));
        assert!(!h.is_due(t0 + Duration::from_millis(199)));
        assert!(h.is_due(t0 + SETTLE));
        let change = h.update(&[lo, new]);
        assert_eq!(
            change,
            AddressChange {
                added: vec![new],
                removed: vec![old]
            }
        );
        assert_eq!(h.poll_timeout(), None);
        // Nothing new: an empty change. A failed listing (loopback only) keeps loopback.
        assert!(h.update(&[lo, new]).is_empty());
        let change = h.update(&[lo]);
        assert_eq!((change.added, change.removed), (vec![], vec![new]));
        let change = h.update(&[]);
        assert!(change.is_empty(), "loopback is never closed: {change:?}");
        // A socket that could not be opened is tried again at the next look.
        let change = h.update(&[lo, new]);
        assert_eq!(change.added, vec![new]);
        h.forget(new);
        assert_eq!(h.update(&[lo, new]).added, vec![new]);
    }

    /// The watch opens in this process's namespace and reads nothing when nothing changes
    /// (without blocking).
    #[test]
    fn the_address_watch_opens_and_does_not_block() {
        let w = AddressWatch::open().expect("a netlink route socket");
        assert!(w.raw_fd() >= 0);
        let _ = w.drain();
    }

    #[test]
    fn keeps_up_ipv4_once_and_drops_down_link_local_and_non_ipv4() {
        let ip = |a, b, c, d| Some(Ipv4Addr::new(a, b, c, d));
        let chosen = usable_ipv4([
            (true, ip(127, 0, 0, 1)),
            (true, None), // an IPv6 or packet address
            (true, ip(192, 168, 1, 20)),
            (false, ip(10, 0, 0, 5)),    // interface down
            (true, ip(169, 254, 3, 4)),  // link-local
            (true, ip(192, 168, 1, 20)), // the same address listed again
            (true, ip(172, 17, 0, 1)),
        ]);
        assert_eq!(
            chosen,
            [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([192, 168, 1, 20]),
                IpAddr::from([172, 17, 0, 1]),
            ]
        );
    }

    #[test]
    fn this_machine_offers_loopback() {
        let addrs = local_ipv4_addresses();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        assert!(addrs.iter().all(|a| a.is_ipv4()));
        let mut unique = addrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len());
    }
}
