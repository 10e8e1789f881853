//! Frame builders and a small address book for the host-side unit tests.

use std::vec::Vec;

use crate::decide::Tables;
use crate::maps::{
    ENDPOINT_BRIDGED, ENDPOINT_HOST, ENDPOINT_VM, ENDPOINT_WIRE, Endpoint, Ipv4Key, Ipv6Key, Mac,
    Settings, VMLINK_BRIDGED, VMLINK_LEARN, VmLink,
};
use crate::parse::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};

pub const BROADCAST: Mac = [0xff; 6];
pub const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const GW_MAC: Mac = [0x02, 0, 0, 0, 0, 0xfe];
pub const SHIM_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0f];
pub const VM_A_MAC: Mac = [0x52, 0x54, 0, 0, 0, 0xa1];
pub const VM_C_MAC: Mac = [0x52, 0x54, 0, 0, 0, 0xc3];
pub const UPLINK_IF: u32 = 2;
pub const SHIM_IF: u32 = 3;
pub const VM_A_IF: u32 = 10;
pub const VM_C_IF: u32 = 12;
/// VM x: a kernel guest or container, its macvlan in another namespace.
pub const VM_X_IF: u32 = 20;
pub const VM_X_MAC: Mac = [0x52, 0x54, 0, 0, 0, 0xe5];
pub const VM_X_IP: Ipv4Key = [203, 0, 113, 165];
pub const HOST_IP: Ipv4Key = [203, 0, 113, 157];
pub const GW_IP: Ipv4Key = [203, 0, 113, 129];
pub const VM_A_IP: Ipv4Key = [203, 0, 113, 161];
pub const VM_C_IP: Ipv4Key = [203, 0, 113, 163];
pub const INET_IP: Ipv4Key = [198, 51, 100, 10];
pub const NAT_VM_IP: Ipv4Key = [192, 168, 122, 10];

const fn v6(last: u16) -> Ipv6Key {
    let [hi, lo] = last.to_be_bytes();
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, hi, lo]
}
pub const HOST6: Ipv6Key = v6(0x2);
pub const HOST_LL: Ipv6Key = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
pub const GW_LL: Ipv6Key = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
pub const VM_A6: Ipv6Key = v6(0x161);
pub const VM_A_LL: Ipv6Key = crate::link_local::eui64(&VM_A_MAC);
pub const VM_C_LL: Ipv6Key = crate::link_local::eui64(&VM_C_MAC);
/// A link-local address no table knows (a guest's stable-privacy one).
pub const STRANGER_LL: Ipv6Key = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
];
pub const ALL_NODES: Ipv6Key = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const ALL_ROUTERS: Ipv6Key = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const VM_C6: Ipv6Key = v6(0x163);
pub const INET6: Ipv6Key = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const PRIVATE6: Ipv6Key = [0xfd, 0, 0x01, 0x22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

#[derive(Default)]
pub struct TestTables {
    pub settings: Option<Settings>,
    pub local4: Vec<(Ipv4Key, Endpoint)>,
    pub local6: Vec<(Ipv6Key, Endpoint)>,
    pub macs: Vec<(Mac, Endpoint)>,
    pub links: Vec<(u32, VmLink)>,
}

impl Tables for TestTables {
    fn settings(&self) -> Option<Settings> {
        self.settings
    }

    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint> {
        self.local4.iter().find(|(a, _)| a == addr).map(|(_, e)| *e)
    }

    fn local6(&self, addr: &Ipv6Key) -> Option<Endpoint> {
        self.local6.iter().find(|(a, _)| a == addr).map(|(_, e)| *e)
    }

    fn vm_by_mac(&self, mac: &Mac) -> Option<Endpoint> {
        self.macs.iter().find(|(m, _)| m == mac).map(|(_, e)| *e)
    }

    fn vm_link(&self, ifindex: u32) -> Option<VmLink> {
        self.links
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, l)| *l)
    }
}

/// A VM's link entry without usual addresses (every source is looked
/// up); `with_usual` adds them.
pub fn vm_link(slot: u32, mac: Mac, flags: u32) -> VmLink {
    VmLink {
        slot,
        flags: flags | crate::maps::VMLINK_PRESENT,
        mac,
        ..VmLink::default()
    }
}

/// `link` knowing `own4`, `own6` and the link-local address of its MAC.
pub fn with_usual(mut link: VmLink, own4: Ipv4Key, own6: Ipv6Key) -> VmLink {
    link.own4 = own4;
    link.own6 = own6;
    link.own_ll = crate::link_local::eui64(&link.mac);
    link
}

pub fn endpoint(ifindex: u32, mac: Mac, kind: u8, vm: u32) -> Endpoint {
    Endpoint {
        ifindex,
        mac,
        kind,
        flags: 0,
        vm,
    }
}

/// The hosted server with VM a (/26 and /64 guest, slot 0) and VM c (/32
/// and /128, slot 2, learning), each with its EUI-64 link-local address,
/// and the gateway as a neighbour on the wire.
pub fn lab_tables() -> TestTables {
    let host = endpoint(UPLINK_IF, HOST_MAC, ENDPOINT_HOST, 0);
    let a = endpoint(VM_A_IF, VM_A_MAC, ENDPOINT_VM, 0);
    let c = endpoint(VM_C_IF, VM_C_MAC, ENDPOINT_VM, 2);
    let gw = endpoint(UPLINK_IF, GW_MAC, ENDPOINT_WIRE, 0);
    TestTables {
        local6: std::vec![
            (HOST6, host),
            (HOST_LL, host),
            (GW_LL, gw),
            (VM_A6, a),
            (VM_A_LL, a),
            (VM_C6, c),
            (VM_C_LL, c),
        ],
        macs: std::vec![(VM_A_MAC, a), (VM_C_MAC, c)],
        // VM a's usual addresses are in its link entry (its frames take the
        // fast path), VM c's are not (every source is looked up): the rows
        // must come out the same either way.
        links: std::vec![
            (VM_A_IF, with_usual(vm_link(0, VM_A_MAC, 0), VM_A_IP, VM_A6)),
            (VM_C_IF, vm_link(2, VM_C_MAC, VMLINK_LEARN)),
        ],
        ..lab_tables4()
    }
}

/// `lab_tables` plus VM x (slot 3), bridged: its link is in another
/// namespace, reached through the shim.
pub fn lab_tables_bridged() -> TestTables {
    let mut t = lab_tables();
    let mut x = endpoint(SHIM_IF, VM_X_MAC, ENDPOINT_VM, 3);
    x.flags = ENDPOINT_BRIDGED;
    t.local4.push((VM_X_IP, x));
    t.macs.push((VM_X_MAC, x));
    t.links
        .push((VM_X_IF, vm_link(3, VM_X_MAC, VMLINK_BRIDGED)));
    t
}

fn lab_tables4() -> TestTables {
    TestTables {
        settings: Some(Settings {
            uplink_ifindex: UPLINK_IF,
            uplink_mac: HOST_MAC,
            shim_mac: SHIM_MAC,
        }),
        local4: std::vec![
            (HOST_IP, endpoint(UPLINK_IF, HOST_MAC, ENDPOINT_HOST, 0)),
            (GW_IP, endpoint(UPLINK_IF, GW_MAC, ENDPOINT_WIRE, 0)),
            (VM_A_IP, endpoint(VM_A_IF, VM_A_MAC, ENDPOINT_VM, 0)),
            (VM_C_IP, endpoint(VM_C_IF, VM_C_MAC, ENDPOINT_VM, 2)),
        ],
        ..TestTables::default()
    }
}

pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn arp(dst: Mac, sha: Mac, oper: u16, spa: Ipv4Key, tpa: Ipv4Key) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    a.extend_from_slice(&oper.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(if oper == 1 { &[0; 6] } else { &dst });
    a.extend_from_slice(&tpa);
    a.extend_from_slice(&[0; 18]); // Ethernet minimum frame padding
    ether(dst, sha, ETH_P_ARP, &a)
}

/// An ICMP echo request with a 20-byte IPv4 header.
pub fn ipv4(dst_mac: Mac, src_mac: Mac, src: Ipv4Key, dst: Ipv4Key) -> Vec<u8> {
    let payload = [8u8, 0, 0, 0, 0, 1, 0, 1, b'm', b'v', b'b', b'r'];
    let total = (20 + payload.len()) as u16;
    let mut ip = std::vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    ip.extend_from_slice(&payload);
    ether(dst_mac, src_mac, ETH_P_IP, &ip)
}

/// Cuts an IPv4 frame so its total length claims more than it carries.
pub fn truncated_ip(mut frame: Vec<u8>) -> Vec<u8> {
    frame.truncate(frame.len() - 4);
    frame
}

pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The solicited-node multicast MAC of an IPv6 address.
pub fn solicited_mac(addr: &Ipv6Key) -> Mac {
    [0x33, 0x33, 0xff, addr[13], addr[14], addr[15]]
}

/// The solicited-node multicast address of an IPv6 address.
pub fn solicited(addr: &Ipv6Key) -> Ipv6Key {
    let mut g = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    g[13..].copy_from_slice(&addr[13..]);
    g
}

/// An IPv6 packet with `next` header and `payload`, hop limit `hops`.
pub fn ipv6(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Key,
    dst: Ipv6Key,
    next: u8,
    hops: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = std::vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    ip.push(next);
    ip.push(hops);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(payload);
    ether(dst_mac, src_mac, ETH_P_IPV6, &ip)
}

/// An ICMPv6 echo request (checksum left zero: the decision never reads it).
pub fn ping6(dst_mac: Mac, src_mac: Mac, src: Ipv6Key, dst: Ipv6Key) -> Vec<u8> {
    ipv6(
        dst_mac,
        src_mac,
        src,
        dst,
        58,
        64,
        &[128, 0, 0, 0, 0, 1, 0, 1, b'm', b'v'],
    )
}

/// A neighbour solicitation for `target`, sent to its solicited-node group.
pub fn ns(src_mac: Mac, src: Ipv6Key, target: Ipv6Key) -> Vec<u8> {
    let mut body = std::vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src_mac);
    ipv6(
        solicited_mac(&target),
        src_mac,
        src,
        solicited(&target),
        58,
        255,
        &body,
    )
}

/// A solicited neighbour advertisement for `target`, unicast to `dst`.
pub fn na(dst_mac: Mac, src_mac: Mac, src: Ipv6Key, dst: Ipv6Key, target: Ipv6Key) -> Vec<u8> {
    let mut body = std::vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    body.extend_from_slice(&target);
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&src_mac);
    ipv6(dst_mac, src_mac, src, dst, 58, 255, &body)
}

/// A neighbour discovery message of `icmp_type` (hop limit 255) with its
/// type-specific body (`target` for solicitations and advertisements,
/// empty otherwise) and `options`, behind the extension headers `ext`
/// (each: next-header value, whole header bytes; filled in here). Every
/// argument is one of the frame's fields.
#[allow(clippy::too_many_arguments)]
pub fn nd_message(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Key,
    dst: Ipv6Key,
    icmp_type: u8,
    target: Option<Ipv6Key>,
    options: &[u8],
    ext: &[(u8, usize)],
) -> Vec<u8> {
    let mut icmp = std::vec![icmp_type, 0, 0, 0];
    match icmp_type {
        // Router advertisement: hop limit, flags, lifetime; reachable and
        // retrans timers.
        134 => icmp.extend_from_slice(&[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]),
        // Redirect: reserved, target, destination.
        137 => {
            icmp.extend_from_slice(&[0; 4]);
            icmp.extend_from_slice(&target.unwrap_or(GW_LL));
            icmp.extend_from_slice(&INET6);
        }
        135 | 136 => {
            icmp.extend_from_slice(if icmp_type == 136 {
                &[0x60, 0, 0, 0]
            } else {
                &[0; 4]
            });
            icmp.extend_from_slice(&target.unwrap_or([0; 16]));
        }
        _ => icmp.extend_from_slice(&[0; 4]),
    }
    icmp.extend_from_slice(options);
    let (next, payload) = behind(58, ext, &icmp);
    ipv6(dst_mac, src_mac, src, dst, next, 255, &payload)
}

/// `body` of protocol `proto` behind extension headers `ext` (next-header
/// value and total length of each, a multiple of 8): the first header's
/// value and the bytes.
pub fn behind(proto: u8, ext: &[(u8, usize)], body: &[u8]) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    for (i, (_, len)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, |(n, _)| *n);
        out.push(next);
        out.push((len / 8 - 1) as u8);
        // PadN filling the rest of the header.
        out.push(1);
        out.push((len - 4) as u8);
        out.extend(core::iter::repeat_n(0u8, len - 4));
    }
    out.extend_from_slice(body);
    (ext.first().map_or(proto, |(n, _)| *n), out)
}

/// A link-layer address option (1: source, 2: target).
pub fn llao(kind: u8, mac: Mac) -> [u8; 8] {
    [kind, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// A duplicate address probe: a solicitation for `target` from `::`,
/// without a link-layer option (RFC 4862).
pub fn dad(src_mac: Mac, target: Ipv6Key) -> Vec<u8> {
    nd_message(
        solicited_mac(&target),
        src_mac,
        [0; 16],
        solicited(&target),
        135,
        Some(target),
        &[],
        &[],
    )
}

/// The multicast MAC of an IPv6 group.
pub fn group_mac(group: &Ipv6Key) -> Mac {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

/// The EUI-64 link-local address of `mac`.
pub fn eui64_ll(mac: Mac) -> Ipv6Key {
    crate::link_local::eui64(&mac)
}
