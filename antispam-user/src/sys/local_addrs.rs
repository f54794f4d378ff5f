//! The host's own addresses: an SMTP connect to one of them (or to loopback) hands mail to the
//! local MTA. Read with getifaddrs(3); the agent compares them every second and writes changes.

use std::{collections::BTreeSet, net::IpAddr};

/// Every address configured on an interface of this network namespace, loopback excluded (the
/// kernel programs know loopback by itself).
pub fn current() -> std::io::Result<BTreeSet<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| {
            let sa = a.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            (!ip.is_loopback()).then_some(ip)
        })
        .collect())
}

/// The key of an address in the kernel's map (IPv4 as `::ffff:a.b.c.d`).
pub fn key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_kernel_side() {
        use antispam_common::net::{local_key, AF_INET, AF_INET6};
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(key(v4), local_key(AF_INET, &daddr));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let IpAddr::V6(o) = v6 else { unreachable!() };
        assert_eq!(key(v6), local_key(AF_INET6, &o.octets()));
    }

    #[test]
    fn lists_this_hosts_addresses_without_loopback() {
        let addrs = current().expect("getifaddrs");
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
    }
}
