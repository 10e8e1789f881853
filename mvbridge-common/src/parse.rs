//! Header parsing: turns the first bytes of a frame into the few fields the
//! decision needs. Every read is bounds-checked by [`Frame::read`]; anything
//! that does not parse is reported as `None` and left alone by the caller.

use crate::frame::Frame;
use crate::maps::{Ipv4Key, Ipv6Key, Mac};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

const ARP_HTYPE_ETHER: u16 = 1;
const ARP_LEN: usize = 28;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;
/// Neighbour discovery messages: router solicitation (133) to redirect (137).
const ND_FIRST: u8 = ND_ROUTER_SOLICIT;
const ND_LAST: u8 = ND_REDIRECT;
/// ICMPv6 header (4) + reserved (4) + target address (16).
const ND_MIN_LEN: usize = 24;

/// The Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eth {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Key,
    pub tpa: Ipv4Key,
}

/// The addresses of an IPv4 header whose basic shape is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: Ipv4Key,
    pub dst: Ipv4Key,
}

/// True for group (multicast and broadcast) Ethernet addresses.
#[inline(always)]
pub const fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

#[inline(always)]
pub fn eth<F: Frame + ?Sized>(frame: &F) -> Option<Eth> {
    let h: [u8; ETH_HLEN] = frame.read(0)?;
    Some(Eth {
        dst: [h[0], h[1], h[2], h[3], h[4], h[5]],
        src: [h[6], h[7], h[8], h[9], h[10], h[11]],
        ethertype: u16::from_be_bytes([h[12], h[13]]),
    })
}

/// Parses the ARP payload after the Ethernet header. Only Ethernet/IPv4 ARP
/// is understood; anything else (other hardware or protocol types, wrong
/// address lengths, a truncated body) is `None`.
#[inline(always)]
pub fn arp<F: Frame + ?Sized>(frame: &F) -> Option<Arp> {
    let a: [u8; ARP_LEN] = frame.read(ETH_HLEN)?;
    let htype = u16::from_be_bytes([a[0], a[1]]);
    let ptype = u16::from_be_bytes([a[2], a[3]]);
    if htype != ARP_HTYPE_ETHER || ptype != ETH_P_IP || a[4] != 6 || a[5] != 4 {
        return None;
    }
    Some(Arp {
        oper: u16::from_be_bytes([a[6], a[7]]),
        sha: [a[8], a[9], a[10], a[11], a[12], a[13]],
        spa: [a[14], a[15], a[16], a[17]],
        tpa: [a[24], a[25], a[26], a[27]],
    })
}

/// Parses an IPv4 header after the Ethernet header. The version, header
/// length and total length must be consistent with each other and with the
/// frame, as the receiving stack would require; otherwise `None`.
#[inline(always)]
pub fn ipv4<F: Frame + ?Sized>(frame: &F) -> Option<Ipv4> {
    let h: [u8; IPV4_MIN_HLEN] = frame.read(ETH_HLEN)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // BIG TCP super-packets (over 64 KiB) carry a total length of 0.
    let big_tcp = total == 0 && frame.len() > ETH_HLEN + usize::from(u16::MAX);
    if hlen < IPV4_MIN_HLEN || (!big_tcp && (total < hlen || ETH_HLEN + total > frame.len())) {
        return None;
    }
    Some(Ipv4 {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
    })
}

/// The fixed IPv6 header fields the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Key,
    pub dst: Ipv6Key,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: u16,
}

/// ICMPv6 neighbour discovery message types (RFC 4861).
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_ROUTER_ADVERT: u8 = 134;
pub const ND_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOUR_ADVERT: u8 = 136;
pub const ND_REDIRECT: u8 = 137;

/// What the link-layer address options of a neighbour solicitation or
/// advertisement say about the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkAddress {
    /// None, or every one equals the frame's source MAC.
    Consistent = 0,
    /// An option names another MAC than the frame's source.
    Forged = 1,
    /// A zero-length option, a truncated one, or more options than
    /// [`MAX_ND_OPTIONS`]: not something we can vouch for.
    Unreadable = 2,
}

/// A neighbour discovery message (RFC 4861), as a receiver would take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nd {
    pub icmp_type: u8,
    /// The target of a solicitation or advertisement (the IPv6 destination
    /// for the other types).
    pub target: Ipv6Key,
    /// Link-layer address options (solicitations and advertisements only;
    /// `Consistent` for the other types, which carry none we check).
    pub link_address: LinkAddress,
}

impl Nd {
    pub const fn is_solicitation(&self) -> bool {
        self.icmp_type == ND_NEIGHBOUR_SOLICIT
    }

    pub const fn is_advertisement(&self) -> bool {
        self.icmp_type == ND_NEIGHBOUR_ADVERT
    }

    /// Router solicitations, advertisements and redirects: a host's
    /// routing follows them.
    pub const fn is_router_message(&self) -> bool {
        matches!(
            self.icmp_type,
            ND_ROUTER_SOLICIT | ND_ROUTER_ADVERT | ND_REDIRECT
        )
    }
}

/// Parses the fixed IPv6 header. The payload length must fit the frame
/// (0 fits always: an empty payload, or a jumbo/BIG TCP super-packet whose
/// length lives elsewhere).
#[inline(always)]
pub fn ipv6<F: Frame + ?Sized>(frame: &F) -> Option<Ipv6> {
    let h: [u8; IPV6_HLEN] = frame.read(ETH_HLEN)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]);
    if ETH_HLEN + IPV6_HLEN + usize::from(payload_len) > frame.len() {
        return None;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Some(Ipv6 {
        src,
        dst,
        next_header: h[6],
        hop_limit: h[7],
        payload_len,
    })
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers followed to find the upper-layer protocol. A
/// receiver processes any number; a chain longer than this is reported as
/// unreadable, never as "not neighbour discovery".
pub const MAX_EXT_HEADERS: usize = 4;
/// Options of one solicitation or advertisement that are checked. Real
/// stacks send one or two (link-layer address, nonce); more is reported
/// as unreadable.
pub const MAX_ND_OPTIONS: usize = 8;

/// The upper-layer protocol of an IPv6 packet and where its header
/// starts, behind the extension headers a receiver processes before it
/// (hop-by-hop, routing, destination options). A fragment header ends the
/// walk: the protocol is then 44, and the payload is a fragment. `None`:
/// the chain is truncated or longer than [`MAX_EXT_HEADERS`].
#[inline(always)]
pub fn upper_layer<F: Frame + ?Sized>(frame: &F, ip: &Ipv6) -> Option<(u8, usize)> {
    let end = ETH_HLEN + IPV6_HLEN + usize::from(ip.payload_len);
    let mut next = ip.next_header;
    let mut at = ETH_HLEN + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        if !matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
            return Some((next, at));
        }
        let h: [u8; 2] = frame.read_at(at)?;
        next = h[0];
        // Each of these headers is (length + 1) * 8 bytes long.
        at += (usize::from(h[1]) + 1) * 8;
        if at > end {
            return None;
        }
    }
    if matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
        return None;
    }
    Some((next, at))
}

/// An IPv6 packet whose extension header chain cannot be followed (or
/// whose neighbour discovery header is cut short): whether it is neighbour
/// discovery is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Recognises neighbour discovery, also behind extension headers. A
/// message only counts as one when the receiver would accept it: ICMPv6
/// with a hop limit of 255, i.e. it was not routed.
#[inline(always)]
pub fn nd<F: Frame + ?Sized>(frame: &F, ip: &Ipv6) -> Result<Option<Nd>, Unreadable> {
    let Some((proto, at)) = upper_layer(frame, ip) else {
        return Err(Unreadable);
    };
    if proto != IPPROTO_ICMPV6 || ip.hop_limit != 255 {
        return Ok(None);
    }
    let Some(icmp_type) = frame.read_at::<1>(at) else {
        return Err(Unreadable);
    };
    let icmp_type = icmp_type[0];
    if !(ND_FIRST..=ND_LAST).contains(&icmp_type) {
        return Ok(None);
    }
    if icmp_type != ND_NEIGHBOUR_SOLICIT && icmp_type != ND_NEIGHBOUR_ADVERT {
        return Ok(Some(Nd {
            icmp_type,
            target: ip.dst,
            link_address: LinkAddress::Consistent,
        }));
    }
    let end = ETH_HLEN + IPV6_HLEN + usize::from(ip.payload_len);
    if at + ND_MIN_LEN > end {
        return Err(Unreadable);
    }
    let Some(target) = frame.read_at::<16>(at + 8) else {
        return Err(Unreadable);
    };
    Ok(Some(Nd {
        icmp_type,
        target,
        link_address: link_address(frame, at + ND_MIN_LEN, end),
    }))
}

/// Source (1) and target (2) link-layer address options.
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;

/// Checks the link-layer address options in `[at, end)` against the
/// frame's source MAC.
#[inline(always)]
fn link_address<F: Frame + ?Sized>(frame: &F, mut at: usize, end: usize) -> LinkAddress {
    let Some(src) = frame.read::<6>(6) else {
        return LinkAddress::Unreadable;
    };
    for _ in 0..MAX_ND_OPTIONS {
        if at >= end {
            return LinkAddress::Consistent;
        }
        // Type, length in units of 8 bytes, then (for ours) the MAC.
        let Some(opt) = frame.read_at::<8>(at) else {
            return LinkAddress::Unreadable;
        };
        let len = usize::from(opt[1]) * 8;
        if len == 0 || at + len > end {
            return LinkAddress::Unreadable;
        }
        let names_mac = opt[0] == ND_OPT_SOURCE_LL || opt[0] == ND_OPT_TARGET_LL;
        if names_mac && opt[2..8] != src {
            return LinkAddress::Forged;
        }
        at += len;
    }
    if at >= end {
        LinkAddress::Consistent
    } else {
        LinkAddress::Unreadable
    }
}
