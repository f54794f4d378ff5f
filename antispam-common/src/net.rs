//! Address and port classification shared by kernel and agent.

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// Word and bit of `port` in the port bitmap.
#[inline(always)]
pub const fn port_slot(port: u16) -> (u32, u64) {
    ((port / 64) as u32, 1u64 << (port % 64))
}

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), given the IPv6
/// address as four big-endian `u32` words as the kernel stores them (each word in network byte
/// order, read as a native integer).
#[inline(always)]
pub const fn ipv4_mapped(words: &[u32; 4]) -> Option<u32> {
    if words[0] == 0 && words[1] == 0 && words[2] == u32::from_be(0x0000_ffff) {
        Some(words[3])
    } else {
        None
    }
}

/// The 16 address bytes of four kernel-order words.
#[inline(always)]
pub const fn ip6_bytes(words: &[u32; 4]) -> [u8; 16] {
    let a = words[0].to_ne_bytes();
    let b = words[1].to_ne_bytes();
    let c = words[2].to_ne_bytes();
    let d = words[3].to_ne_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Is the destination a loopback address (127.0.0.0/8, ::1)? `addr` as in
/// [`crate::event::Event::daddr`].
#[inline(always)]
pub const fn is_loopback(family: u16, addr: &[u8; 16]) -> bool {
    if family == AF_INET {
        return addr[0] == 127;
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] == 1
}

/// The key of an address in [`crate::maps::LOCAL_ADDRS`]: IPv6 as is, IPv4 as
/// `::ffff:a.b.c.d`.
#[inline(always)]
pub const fn local_key(family: u16, addr: &[u8; 16]) -> [u8; 16] {
    if family == AF_INET {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
        ]
    } else {
        *addr
    }
}

/// Value of [`crate::maps::VETHS`]: a container's host-side veth the SYN check runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Veth {
    /// The id (nsid) the host gives the network namespace of the device's peer.
    pub nsid: u32,
    /// The tc filter's handle and priority (to replace or remove it later).
    pub handle: u32,
    pub priority: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Veth>() == 16);

crate::user_pod!(Veth);

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: [u8; 16]) -> [u32; 4] {
        [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        ]
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[192, 0, 2, 7]);
        let v4 = ipv4_mapped(&words(b)).expect("mapped");
        assert_eq!(v4.to_ne_bytes(), [192, 0, 2, 7]);
        assert_eq!(ip6_bytes(&words(b)), b);
    }

    #[test]
    fn other_addresses_are_not() {
        let mut b = [0u8; 16];
        b[15] = 1; // ::1
        assert!(ipv4_mapped(&words(b)).is_none());
        b[0] = 0xfd; // fd00::1
        assert!(ipv4_mapped(&words(b)).is_none());
        let mut compat = [0u8; 16]; // ::192.0.2.7 (deprecated compatible form) is not mapped
        compat[12..].copy_from_slice(&[192, 0, 2, 7]);
        assert!(ipv4_mapped(&words(compat)).is_none());
    }

    #[test]
    fn loopback_and_local_keys() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 53]);
        assert!(is_loopback(AF_INET, &v4));
        v4[0] = 10;
        assert!(!is_loopback(AF_INET, &v4));
        assert_eq!(local_key(AF_INET, &v4)[10..], [0xff, 0xff, 10, 0, 0, 53]);
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert!(is_loopback(AF_INET6, &v6));
        assert_eq!(local_key(AF_INET6, &v6), v6);
        v6[0] = 0xfe;
        assert!(!is_loopback(AF_INET6, &v6));
    }

    #[test]
    fn port_slots() {
        assert_eq!(port_slot(25), (0, 1 << 25));
        assert_eq!(port_slot(587), (9, 1 << (587 - 576)));
        assert_eq!(port_slot(65535), (1023, 1 << 63));
    }
}
