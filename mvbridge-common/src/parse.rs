//! Header parsing: turns the first bytes of a frame into the few fields the
//! decision needs. Every read is bounds-checked by [`Frame::read`]; anything
//! that does not parse is reported as `None` and left alone by the caller.

use crate::frame::Frame;
use crate::maps::{Ipv4Key, Mac};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

const ARP_HTYPE_ETHER: u16 = 1;
const ARP_LEN: usize = 28;
const IPV4_MIN_HLEN: usize = 20;

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
