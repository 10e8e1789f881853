//! Frame builders and a small address book for the host-side unit tests.
#![allow(dead_code)]

use std::vec::Vec;

use crate::decide::Tables;
use crate::maps::{ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Mac, Settings};
use crate::parse::{ETH_P_ARP, ETH_P_IP};

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
pub const HOST_IP: Ipv4Key = [203, 0, 113, 157];
pub const GW_IP: Ipv4Key = [203, 0, 113, 129];
pub const VM_A_IP: Ipv4Key = [203, 0, 113, 161];
pub const VM_C_IP: Ipv4Key = [203, 0, 113, 163];
pub const INET_IP: Ipv4Key = [198, 51, 100, 10];
pub const NAT_VM_IP: Ipv4Key = [192, 168, 122, 10];

#[derive(Default)]
pub struct TestTables {
    pub settings: Option<Settings>,
    pub local4: Vec<(Ipv4Key, Endpoint)>,
}

impl Tables for TestTables {
    fn settings(&self) -> Option<Settings> {
        self.settings
    }

    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint> {
        self.local4.iter().find(|(a, _)| a == addr).map(|(_, e)| *e)
    }
}

pub fn endpoint(ifindex: u32, mac: Mac, kind: u8, vm: u32) -> Endpoint {
    Endpoint {
        ifindex,
        mac,
        kind,
        _pad: 0,
        vm,
    }
}

/// The seed's host with VM a (/26 guest) and VM c (/32 guest).
pub fn lab_tables() -> TestTables {
    TestTables {
        settings: Some(Settings {
            uplink_ifindex: UPLINK_IF,
            uplink_mac: HOST_MAC,
            shim_mac: SHIM_MAC,
            shim_ifindex: SHIM_IF,
        }),
        local4: std::vec![
            (HOST_IP, endpoint(UPLINK_IF, HOST_MAC, ENDPOINT_HOST, 0)),
            (VM_A_IP, endpoint(VM_A_IF, VM_A_MAC, ENDPOINT_VM, 0)),
            (VM_C_IP, endpoint(VM_C_IF, VM_C_MAC, ENDPOINT_VM, 2)),
        ],
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
