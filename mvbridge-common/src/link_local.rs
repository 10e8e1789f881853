//! IPv6 link-local addresses: the one a stack derives from a MAC
//! (modified EUI-64, RFC 4291 appendix A), the first a guest uses on a
//! fresh link unless it is set to generate stable-privacy ones.

use crate::maps::{Ipv6Key, Mac};

/// fe80::/64 with the modified EUI-64 interface identifier of `mac`.
pub const fn eui64(mac: &Mac) -> Ipv6Key {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// fe80::/10.
pub const fn is_link_local(addr: &Ipv6Key) -> bool {
    addr[0] == 0xfe && addr[1] & 0xc0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_s_derivation() {
        // 52:54:00:00:00:a1 -> fe80::5054:ff:fe00:a1, as `ip addr` shows.
        let want: std::net::Ipv6Addr = "fe80::5054:ff:fe00:a1".parse().unwrap();
        assert_eq!(eui64(&[0x52, 0x54, 0, 0, 0, 0xa1]), want.octets());
        assert!(is_link_local(&want.octets()));
        assert!(!is_link_local(&[
            0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
        ]));
    }
}
