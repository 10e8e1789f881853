//! The steering decision: given where a frame was sent and what it holds,
//! pass it on, hand it to a local link, or drop it.
//!
//! Two hooks call this. The uplink's egress sees what the host's stack sends
//! (its own traffic and what it forwards or NATs for private VMs); a VM's
//! macvtap egress sees what the guest sends. A frame for a local endpoint is
//! redirected into that endpoint's link *ingress*: into the uplink, so the
//! host's stack receives it as if it had come off the wire (its firewall and
//! `rp_filter` see the uplink), or into the macvtap, so the guest receives it.
//! Nothing local is left to the wire.

use crate::frame::Frame;
use crate::maps::{ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Ipv6Key, Mac, Settings};
use crate::parse::{self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Eth};
use crate::stats::{DropReason, Path, Proto};

/// The lookups the decision needs; backed by maps in the programs.
pub trait Tables {
    fn settings(&self) -> Option<Settings>;
    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint>;
    fn local6(&self, addr: &Ipv6Key) -> Option<Endpoint>;
    /// The VM whose macvtap has this MAC.
    fn vm_by_mac(&self, mac: &Mac) -> Option<Endpoint>;
}

/// Which hook is deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Egress of the uplink: the host's stack is sending.
    Uplink,
    /// Egress of a VM's macvtap (`ifindex`): the guest is sending.
    Vm { ifindex: u32 },
}

/// Where a steered frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// Link whose ingress receives the frame.
    pub ifindex: u32,
    /// New destination MAC, when the frame was addressed elsewhere (e.g. to
    /// the gateway by a guest with a /32 and an on-link default route).
    pub dst_mac: Option<Mac>,
    pub path: Path,
    pub proto: Proto,
    /// The VM's counter index, for per-VM accounting.
    pub vm: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: continue as if no program were attached.
    Pass,
    Redirect(Redirect),
    Drop(DropReason),
}

/// The address whose owner must receive a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    V4(Ipv4Key),
    V6(Ipv6Key),
}

/// What a frame carries, as far as steering cares.
enum Carried {
    /// A protocol we steer, for this address.
    For(Target, Proto),
    /// The ethertype promises ARP/IPv4/IPv6 but the header is broken.
    Broken,
    /// Any other protocol: never ours.
    Foreign,
}

/// Decides the fate of one frame. `vlan_tagged` is the skb's out-of-band
/// VLAN tag: tagged frames belong to another network and are never touched.
#[inline(always)]
pub fn decide<F, T>(hook: Hook, frame: &F, vlan_tagged: bool, tables: &T) -> Verdict
where
    F: Frame + ?Sized,
    T: Tables,
{
    if vlan_tagged {
        return Verdict::Pass;
    }
    let Some(settings) = tables.settings() else {
        return Verdict::Pass;
    };
    if settings.uplink_ifindex == 0 {
        return Verdict::Pass;
    }
    let Some(eth) = parse::eth(frame) else {
        return Verdict::Pass;
    };
    let to_host_mac = eth.dst == settings.uplink_mac;
    let (target, proto) = match carried(frame, eth.ethertype) {
        Carried::For(target, proto) => (target, proto),
        Carried::Broken => return malformed(hook, to_host_mac),
        Carried::Foreign => return Verdict::Pass,
    };
    let owner = match target {
        Target::V4(a) => tables.local4(&a),
        Target::V6(a) => tables.local6(&a),
    };
    match (hook, owner) {
        (Hook::Uplink, Some(ep)) if ep.kind == ENDPOINT_VM => steer(hook, &eth, ep, proto),
        // The host addressed a VM's MAC directly for an address we do not
        // track (an IPv6 link-local one, typically its neighbour
        // advertisement to the VM): the VM is local all the same.
        (Hook::Uplink, _) if !parse::is_group(&eth.dst) => match tables.vm_by_mac(&eth.dst) {
            Some(ep) => steer(hook, &eth, ep, proto),
            None => Verdict::Pass,
        },
        (Hook::Uplink, _) => Verdict::Pass,
        (Hook::Vm { .. }, Some(ep)) => steer(hook, &eth, ep, proto),
        (Hook::Vm { .. }, None) => not_local(hook, to_host_mac),
    }
}

/// Finds the address a frame is for: ARP's target, IPv4's destination,
/// a neighbour solicitation's target, or IPv6's destination.
#[inline(always)]
fn carried<F: Frame + ?Sized>(frame: &F, ethertype: u16) -> Carried {
    match ethertype {
        ETH_P_ARP => match parse::arp(frame) {
            Some(arp) => Carried::For(Target::V4(arp.tpa), Proto::Arp),
            None => Carried::Broken,
        },
        ETH_P_IP => match parse::ipv4(frame) {
            Some(ip) => Carried::For(Target::V4(ip.dst), Proto::Ipv4),
            None => Carried::Broken,
        },
        ETH_P_IPV6 => match parse::ipv6(frame) {
            // A solicitation goes to a multicast group; who must answer it
            // is named by its target.
            Some(ip) => match parse::nd(frame, &ip) {
                Some(nd) if nd.is_solicitation() => Carried::For(Target::V6(nd.target), Proto::Nd),
                Some(_) => Carried::For(Target::V6(ip.dst), Proto::Nd),
                None => Carried::For(Target::V6(ip.dst), Proto::Ipv6),
            },
            None => Carried::Broken,
        },
        _ => Carried::Foreign,
    }
}

/// A frame for a local endpoint: redirect it unless it is already on the
/// endpoint's own link (the host talking to itself, a guest to itself).
#[inline(always)]
fn steer(hook: Hook, eth: &Eth, ep: Endpoint, proto: Proto) -> Verdict {
    let path = match (hook, ep.kind) {
        (Hook::Uplink, ENDPOINT_VM) => Path::HostToVm,
        (Hook::Vm { ifindex }, _) if ifindex == ep.ifindex => return Verdict::Pass,
        (Hook::Vm { .. }, ENDPOINT_HOST) => Path::VmToHost,
        (Hook::Vm { .. }, ENDPOINT_VM) => Path::VmToVm,
        _ => return Verdict::Pass,
    };
    // Requests to a group (ARP broadcast, a solicitation to the
    // solicited-node group) keep it, so the receiver sees what it expects;
    // every unicast frame is re-addressed to the endpoint, which also turns
    // a /32 guest's "send to the gateway" into a local delivery.
    let to_group = parse::is_group(&eth.dst) && matches!(proto, Proto::Arp | Proto::Nd);
    let keep = to_group || eth.dst == ep.mac;
    let dst_mac = if keep { None } else { Some(ep.mac) };
    Verdict::Redirect(Redirect {
        ifindex: ep.ifindex,
        dst_mac,
        path,
        proto,
        vm: ep.vm,
    })
}

/// A frame for a non-local address. From a VM to the host's MAC it asks
/// the host to route it (say, into 192.168.122.0/24 or another IPv6
/// network of the host): refused, the host is not the VMs' router.
/// Everything else goes its way.
#[inline(always)]
fn not_local(hook: Hook, to_host_mac: bool) -> Verdict {
    match hook {
        Hook::Vm { .. } if to_host_mac => Verdict::Drop(DropReason::NotForHost),
        _ => Verdict::Pass,
    }
}

/// A frame whose ethertype promises ARP, IPv4 or IPv6 but whose header is
/// broken.
/// Passed along as the kernel would, except from a VM to the host's MAC,
/// where passing it would put it on the wire addressed to the host.
#[inline(always)]
fn malformed(hook: Hook, to_host_mac: bool) -> Verdict {
    match hook {
        Hook::Vm { .. } if to_host_mac => Verdict::Drop(DropReason::Malformed),
        _ => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::vec::Vec;

    struct Row {
        what: &'static str,
        hook: Hook,
        frame: Vec<u8>,
        vlan: bool,
        want: Verdict,
    }

    fn to(ifindex: u32, dst_mac: Option<Mac>, path: Path, proto: Proto, vm: u32) -> Verdict {
        Verdict::Redirect(Redirect {
            ifindex,
            dst_mac,
            path,
            proto,
            vm,
        })
    }

    fn rows() -> Vec<Row> {
        let vm_a = Hook::Vm { ifindex: VM_A_IF };
        let vm_c = Hook::Vm { ifindex: VM_C_IF };
        std::vec![
            Row {
                what: "host pings a VM via its gateway route",
                hook: Hook::Uplink,
                frame: ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                vlan: false,
                want: to(VM_A_IF, Some(VM_A_MAC), Path::HostToVm, Proto::Ipv4, 0),
            },
            Row {
                what: "host sends to a VM it resolved on-link",
                hook: Hook::Uplink,
                frame: ipv4(VM_A_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                vlan: false,
                want: to(VM_A_IF, None, Path::HostToVm, Proto::Ipv4, 0),
            },
            Row {
                what: "host asks who has a VM's address",
                hook: Hook::Uplink,
                frame: arp(BROADCAST, HOST_MAC, 1, HOST_IP, VM_A_IP),
                vlan: false,
                want: to(VM_A_IF, None, Path::HostToVm, Proto::Arp, 0),
            },
            Row {
                what: "host answers a VM's ARP",
                hook: Hook::Uplink,
                frame: arp(VM_C_MAC, HOST_MAC, 2, HOST_IP, VM_C_IP),
                vlan: false,
                want: to(VM_C_IF, None, Path::HostToVm, Proto::Arp, 2),
            },
            Row {
                what: "host talks to the internet",
                hook: Hook::Uplink,
                frame: ipv4(GW_MAC, HOST_MAC, HOST_IP, INET_IP),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "host answers the gateway's ARP",
                hook: Hook::Uplink,
                frame: arp(GW_MAC, HOST_MAC, 2, HOST_IP, GW_IP),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "VLAN-tagged traffic is another network",
                hook: Hook::Uplink,
                frame: ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                vlan: true,
                want: Verdict::Pass,
            },
            Row {
                what: "/26 guest pings the host",
                hook: vm_a,
                frame: ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Ipv4, 0),
            },
            Row {
                what: "/32 guest sends to the host via the gateway",
                hook: vm_c,
                frame: ipv4(GW_MAC, VM_C_MAC, VM_C_IP, HOST_IP),
                vlan: false,
                want: to(UPLINK_IF, Some(HOST_MAC), Path::VmToHost, Proto::Ipv4, 0),
            },
            Row {
                what: "guest asks who has the host's address",
                hook: vm_a,
                frame: arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, HOST_IP),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Arp, 0),
            },
            Row {
                what: "/32 guest reaches another VM via the gateway",
                hook: vm_c,
                frame: ipv4(GW_MAC, VM_C_MAC, VM_C_IP, VM_A_IP),
                vlan: false,
                want: to(VM_A_IF, Some(VM_A_MAC), Path::VmToVm, Proto::Ipv4, 0),
            },
            Row {
                what: "guest talks to the internet",
                hook: vm_a,
                frame: ipv4(GW_MAC, VM_A_MAC, VM_A_IP, INET_IP),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "guest sends to itself",
                hook: vm_a,
                frame: ipv4(VM_A_MAC, VM_A_MAC, VM_A_IP, VM_A_IP),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "guest announces its own address (gratuitous ARP)",
                hook: vm_a,
                frame: arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, VM_A_IP),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "guest routes via the host into a private network",
                hook: vm_a,
                frame: ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, NAT_VM_IP),
                vlan: false,
                want: Verdict::Drop(DropReason::NotForHost),
            },
            Row {
                what: "guest sends a broken IPv4 header to the host's MAC",
                hook: vm_a,
                frame: truncated_ip(ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP)),
                vlan: false,
                want: Verdict::Drop(DropReason::Malformed),
            },
            Row {
                what: "a broken IPv4 header to anyone else is not ours",
                hook: vm_a,
                frame: truncated_ip(ipv4(GW_MAC, VM_A_MAC, VM_A_IP, HOST_IP)),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "host solicits a VM's address on-link",
                hook: Hook::Uplink,
                frame: ns(HOST_MAC, HOST6, VM_A6),
                vlan: false,
                want: to(VM_A_IF, None, Path::HostToVm, Proto::Nd, 0),
            },
            Row {
                what: "host answers a VM's solicitation at its link-local address",
                hook: Hook::Uplink,
                frame: na(VM_A_MAC, HOST_MAC, HOST_LL, VM_A_LL, HOST_LL),
                vlan: false,
                want: to(VM_A_IF, None, Path::HostToVm, Proto::Nd, 0),
            },
            Row {
                what: "host pings a /128 VM on-link",
                hook: Hook::Uplink,
                frame: ping6(VM_C_MAC, HOST_MAC, HOST6, VM_C6),
                vlan: false,
                want: to(VM_C_IF, None, Path::HostToVm, Proto::Ipv6, 2),
            },
            Row {
                what: "host pings a VM via the gateway",
                hook: Hook::Uplink,
                frame: ping6(GW_MAC, HOST_MAC, HOST6, VM_A6),
                vlan: false,
                want: to(VM_A_IF, Some(VM_A_MAC), Path::HostToVm, Proto::Ipv6, 0),
            },
            Row {
                what: "host solicits the gateway",
                hook: Hook::Uplink,
                frame: ns(HOST_MAC, HOST_LL, GW_LL),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "host talks to the internet over IPv6",
                hook: Hook::Uplink,
                frame: ping6(GW_MAC, HOST_MAC, HOST6, INET6),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "/64 guest solicits the host's link-local address",
                hook: vm_a,
                frame: ns(VM_A_MAC, VM_A_LL, HOST_LL),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Nd, 0),
            },
            Row {
                what: "/64 guest solicits the host's global address",
                hook: vm_a,
                frame: ns(VM_A_MAC, VM_A6, HOST6),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Nd, 0),
            },
            Row {
                what: "/128 guest sends to the host via the gateway",
                hook: vm_c,
                frame: ping6(GW_MAC, VM_C_MAC, VM_C6, HOST6),
                vlan: false,
                want: to(UPLINK_IF, Some(HOST_MAC), Path::VmToHost, Proto::Ipv6, 0),
            },
            Row {
                what: "/128 guest answers the host's solicitation",
                hook: vm_c,
                frame: na(HOST_MAC, VM_C_MAC, VM_C6, HOST6, VM_C6),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Nd, 0),
            },
            Row {
                what: "guest solicits the gateway",
                hook: vm_a,
                frame: ns(VM_A_MAC, VM_A_LL, GW_LL),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "guest checks its own address (DAD)",
                hook: vm_a,
                frame: ns(VM_A_MAC, [0; 16], VM_A6),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "guest routes via the host into a private IPv6 network",
                hook: vm_a,
                frame: ping6(HOST_MAC, VM_A_MAC, VM_A6, PRIVATE6),
                vlan: false,
                want: Verdict::Drop(DropReason::NotForHost),
            },
            Row {
                what: "guest talks to the internet over IPv6",
                hook: vm_a,
                frame: ping6(GW_MAC, VM_A_MAC, VM_A6, INET6),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "a routed solicitation (hop limit below 255) is plain IPv6",
                hook: vm_a,
                frame: {
                    let mut f = ns(VM_A_MAC, VM_A_LL, HOST_LL);
                    f[21] = 64;
                    f
                },
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "unknown ethertype passes",
                hook: vm_a,
                frame: ether(HOST_MAC, VM_A_MAC, 0x88cc, &[0u8; 46]),
                vlan: false,
                want: Verdict::Pass,
            },
        ]
    }

    #[test]
    fn golden_rows() {
        let tables = lab_tables();
        for row in rows() {
            let got = decide(row.hook, row.frame.as_slice(), row.vlan, &tables);
            assert_eq!(got, row.want, "{}", row.what);
        }
    }

    #[test]
    fn unconfigured_tables_pass_everything() {
        let tables = TestTables::default();
        for row in rows() {
            let got = decide(row.hook, row.frame.as_slice(), row.vlan, &tables);
            assert_eq!(got, Verdict::Pass, "{}", row.what);
        }
    }

    #[test]
    fn every_truncation_is_safe() {
        let tables = lab_tables();
        for row in rows() {
            // ARP carries Ethernet padding after its 28 bytes; IPv4 claims
            // its whole length in the header.
            let whole = if row.frame[12..14] == ETH_P_ARP.to_be_bytes() {
                42
            } else {
                row.frame.len()
            };
            for len in 0..whole {
                let got = decide(row.hook, &row.frame[..len], row.vlan, &tables);
                // A cut frame is never steered: it would be delivered broken.
                assert!(
                    !matches!(got, Verdict::Redirect(_)),
                    "{} cut to {len} bytes was steered: {got:?}",
                    row.what
                );
            }
        }
    }
}
