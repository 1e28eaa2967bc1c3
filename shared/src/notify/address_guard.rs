//! Which addresses a webhook may reach (docs/design.md, "Events"): a
//! tenant's URL is data a customer chose, so without this guard the
//! notifier would fetch whatever they name — the instance metadata
//! service, our VPC, the Lambda runtime on loopback (server-side request
//! forgery). Only public unicast addresses pass; loopback passes only when
//! the local setting `WEBHOOKS_ALLOW_LOOPBACK=true` says so. The notifier
//! applies this to the very address it then connects to, never to a name,
//! so a name that resolves differently on the second lookup gains nothing.
//! Pure functions, no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, for the status and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonPublic {
    Loopback,
    Private,
    LinkLocal,
    /// Unspecified, documentation, benchmarking, reserved, multicast, broadcast.
    Special,
}

impl NonPublic {
    pub fn describe(self) -> &'static str {
        match self {
            NonPublic::Loopback => "a loopback address",
            NonPublic::Private => "a private address",
            NonPublic::LinkLocal => "a link-local address (instance metadata lives there)",
            NonPublic::Special => "a special-purpose address (not public unicast)",
        }
    }
}

/// `Ok` for a public unicast address (or loopback, when `allow_loopback`).
pub fn check_address(address: IpAddr, allow_loopback: bool) -> Result<(), NonPublic> {
    let class = match address {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    };
    match class {
        None => Ok(()),
        Some(NonPublic::Loopback) if allow_loopback => Ok(()),
        Some(refused) => Err(refused),
    }
}

fn in_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn class_v4(address: Ipv4Addr) -> Option<NonPublic> {
    const LOOPBACK: &[([u8; 4], u32)] = &[([127, 0, 0, 0], 8)];
    const PRIVATE: &[([u8; 4], u32)] = &[
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        // Carrier-grade NAT: not reachable from the internet.
        ([100, 64, 0, 0], 10),
    ];
    const LINK_LOCAL: &[([u8; 4], u32)] = &[([169, 254, 0, 0], 16)];
    const SPECIAL: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),
        ([192, 0, 0, 0], 24),
        ([192, 0, 2, 0], 24),
        ([192, 88, 99, 0], 24),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([224, 0, 0, 0], 4),
        ([240, 0, 0, 0], 4),
    ];
    let within = |ranges: &[([u8; 4], u32)]| ranges.iter().any(|(network, prefix)| in_v4(address, *network, *prefix));
    if within(LOOPBACK) {
        Some(NonPublic::Loopback)
    } else if within(PRIVATE) {
        Some(NonPublic::Private)
    } else if within(LINK_LOCAL) {
        Some(NonPublic::LinkLocal)
    } else if within(SPECIAL) {
        Some(NonPublic::Special)
    } else {
        None
    }
}

fn class_v6(address: Ipv6Addr) -> Option<NonPublic> {
    let segments = address.segments();
    if address == Ipv6Addr::LOCALHOST {
        return Some(NonPublic::Loopback);
    }
    if address.is_unspecified() {
        return Some(NonPublic::Special);
    }
    // IPv4 inside IPv6 (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64
    // 64:ff9b::a.b.c.d, 6to4 2002:AABB:CCDD::) reaches that IPv4 address:
    // it is judged as that address.
    let octets = address.octets();
    let mapped = segments[..5] == [0, 0, 0, 0, 0] && (segments[5] == 0xffff || segments[5] == 0);
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let embedded = if mapped || nat64 {
        Some(Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]))
    } else if segments[0] == 0x2002 {
        Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return class_v4(v4);
    }
    let first = segments[0];
    if first & 0xfe00 == 0xfc00 {
        // Unique local, fd00:ec2::254 (the instance metadata service over IPv6) included.
        Some(NonPublic::Private)
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some(NonPublic::LinkLocal)
    } else if first & 0xff00 == 0xff00
        || (first == 0x2001 && segments[1] < 0x0200)
        || (first == 0x2001 && segments[1] == 0x0db8)
        || (first == 0x0100 && segments[1..4] == [0, 0, 0])
        || first & 0xe000 != 0x2000
    {
        // Multicast, IETF protocol assignments (Teredo included),
        // documentation, discard, and anything outside global unicast 2000::/3.
        Some(NonPublic::Special)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, allow_loopback: bool) -> Result<(), NonPublic> {
        check_address(text.parse().unwrap(), allow_loopback)
    }

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_refused_in_both_families() {
        let refused = [
            ("127.0.0.1", NonPublic::Loopback),
            ("127.255.0.9", NonPublic::Loopback),
            ("::1", NonPublic::Loopback),
            ("::ffff:127.0.0.1", NonPublic::Loopback),
            ("10.0.0.1", NonPublic::Private),
            ("172.16.5.4", NonPublic::Private),
            ("172.31.255.255", NonPublic::Private),
            ("192.168.1.1", NonPublic::Private),
            ("100.64.0.1", NonPublic::Private),
            ("::ffff:10.0.0.1", NonPublic::Private),
            ("64:ff9b::a00:1", NonPublic::Private),
            ("2002:a00:1::", NonPublic::Private),
            ("fd00:ec2::254", NonPublic::Private),
            ("fc00::1", NonPublic::Private),
            ("169.254.169.254", NonPublic::LinkLocal),
            ("::ffff:169.254.169.254", NonPublic::LinkLocal),
            ("fe80::1", NonPublic::LinkLocal),
            ("0.0.0.0", NonPublic::Special),
            ("::", NonPublic::Special),
            ("224.0.0.1", NonPublic::Special),
            ("255.255.255.255", NonPublic::Special),
            ("192.0.2.10", NonPublic::Special),
            ("ff02::1", NonPublic::Special),
            ("2001:db8::1", NonPublic::Special),
            ("2001::1", NonPublic::Special),
        ];
        for (address, why) in refused {
            assert_eq!(check(address, false), Err(why), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass_and_loopback_only_with_the_local_setting() {
        for address in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(check(address, false), Ok(()), "{address}");
        }
        assert_eq!(check("127.0.0.1", true), Ok(()));
        assert_eq!(check("::1", true), Ok(()));
        assert_eq!(check("10.0.0.1", true), Err(NonPublic::Private), "the setting allows loopback alone");
        assert_eq!(check("169.254.169.254", true), Err(NonPublic::LinkLocal));
    }
}
