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
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;
const ND_NEIGHBOUR_SOLICITATION: u8 = 135;
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

/// A neighbour discovery message (RFC 4861).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nd {
    pub icmp_type: u8,
    /// The target of a solicitation or advertisement (the IPv6 destination
    /// for the other types).
    pub target: Ipv6Key,
}

impl Nd {
    pub const fn is_solicitation(&self) -> bool {
        self.icmp_type == ND_NEIGHBOUR_SOLICITATION
    }

    pub const fn is_advertisement(&self) -> bool {
        self.icmp_type == ND_NEIGHBOUR_SOLICITATION + 1
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

/// Recognises neighbour discovery. A message only counts as one when the
/// receiver would accept it: ICMPv6 straight after the fixed header (no
/// extension headers) and a hop limit of 255, i.e. it was not routed.
#[inline(always)]
pub fn nd<F: Frame + ?Sized>(frame: &F, ip: &Ipv6) -> Option<Nd> {
    if ip.next_header != IPPROTO_ICMPV6 || ip.hop_limit != 255 {
        return None;
    }
    let icmp_type: [u8; 1] = frame.read(ETH_HLEN + IPV6_HLEN)?;
    let icmp_type = icmp_type[0];
    if !(ND_FIRST..=ND_LAST).contains(&icmp_type) {
        return None;
    }
    if icmp_type == ND_NEIGHBOUR_SOLICITATION || icmp_type == ND_NEIGHBOUR_SOLICITATION + 1 {
        if usize::from(ip.payload_len) < ND_MIN_LEN {
            return None;
        }
        let target: [u8; 16] = frame.read(ETH_HLEN + IPV6_HLEN + 8)?;
        return Some(Nd { icmp_type, target });
    }
    Some(Nd {
        icmp_type,
        target: ip.dst,
    })
}
