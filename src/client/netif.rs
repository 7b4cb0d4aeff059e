//! The machine's own addresses, for the host ICE candidates the client offers.

use std::net::{IpAddr, Ipv4Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

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

#[cfg(test)]
mod tests {
    use super::*;

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
