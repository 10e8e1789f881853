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
//!
//! The host is trusted; a VM is not. A VM's frames must carry its own MAC,
//! may not claim an address another endpoint owns, and are only steered
//! when they come from one of the VM's own addresses: otherwise a guest
//! could reach the host's firewall with any source it likes.

use crate::frame::Frame;
use crate::maps::{
    ENDPOINT_BRIDGED, ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Ipv6Key, Mac, Settings,
    VMLINK_BRIDGED, VMLINK_LEARN, VmLink,
};
use crate::parse::{self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Eth};
use crate::stats::{DropReason, Path, Proto};

/// The slot of "no VM" (the host) in redirects.
pub const NO_SLOT: u32 = u32::MAX;

/// The lookups the decision needs; backed by maps in the programs.
pub trait Tables {
    fn settings(&self) -> Option<Settings>;
    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint>;
    fn local6(&self, addr: &Ipv6Key) -> Option<Endpoint>;
    /// The VM whose macvtap has this MAC.
    fn vm_by_mac(&self, mac: &Mac) -> Option<Endpoint>;
    /// The VM behind a macvtap, by the macvtap's ifindex.
    fn vm_link(&self, ifindex: u32) -> Option<VmLink>;
}

/// Which hook is deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Egress of the uplink: the host's stack is sending.
    Uplink,
    /// Egress of a VM's macvtap (`ifindex`): the guest is sending.
    Vm { ifindex: u32 },
}

/// An IPv4 or IPv6 address as it sits in the packet, with every byte
/// defined (IPv4 in the first four, the rest zero; `family` 0: none). An
/// enum or an `Option` here would leave bytes undefined, and the compiler
/// may copy those; the verifier refuses to read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    /// 4, 6, or 0 for no address.
    pub family: u8,
    pub bytes: [u8; 16],
}

impl Addr {
    pub const NONE: Addr = Addr {
        family: 0,
        bytes: [0; 16],
    };

    pub const fn v4(a: Ipv4Key) -> Addr {
        let mut bytes = [0; 16];
        bytes[0] = a[0];
        bytes[1] = a[1];
        bytes[2] = a[2];
        bytes[3] = a[3];
        Addr { family: 4, bytes }
    }

    pub const fn v6(bytes: Ipv6Key) -> Addr {
        Addr { family: 6, bytes }
    }

    pub const fn is_none(&self) -> bool {
        self.family == 0
    }

    pub const fn v4_key(&self) -> Ipv4Key {
        [self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]
    }
}

/// How a steered frame moves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Into `ifindex`'s ingress: its stack (the host) or its guest
    /// (a macvtap) receives it.
    Ingress,
    /// Out of `ifindex` (the shim): the macvlan bridge delivers it to the
    /// sibling with the destination MAC, in whatever namespace it is.
    Egress,
    /// On its way, re-addressed: the sender is a bridged VM, whose link the
    /// bridge serves (to the shim for the host, to a sibling for a VM).
    Continue,
}

/// Where a steered frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// Link that takes the frame (unused for `Action::Continue`).
    pub ifindex: u32,
    pub action: Action,
    /// False for the shim's relay of frames a VM hook already counted.
    pub count: bool,
    /// New destination MAC, when the frame was addressed elsewhere (e.g. to
    /// the gateway by a guest with a /32 and an on-link default route).
    pub dst_mac: Option<Mac>,
    pub path: Path,
    pub proto: Proto,
    /// Per-VM counter slots of the receiver and the sender (`NO_SLOT`: the
    /// host).
    pub to_slot: u32,
    pub from_slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: continue as if no program were attached.
    Pass,
    Redirect(Redirect),
    Drop(DropReason),
}

/// The verdict, plus an address the sending VM used that no table knows
/// yet and that it may have learnt (only for VMs that learn; else
/// `Addr::NONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub learn: Addr,
}

impl Decision {
    pub const fn just(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            learn: Addr::NONE,
        }
    }
}

/// Who a frame claims to come from, at L3: an address, or `Addr::NONE`
/// when the claim does not matter (an unspecified source, as in DAD, ARP
/// probes and DHCP, or an IPv6 link-local one, which cannot leave the
/// segment).
type Source = Addr;

/// What a frame carries, as far as steering cares.
enum Carried {
    /// A protocol we steer: the address whose owner must receive it, the
    /// identity the sender claims, the protocol.
    For(Addr, Source, Proto),
    /// The ethertype promises ARP/IPv4/IPv6 but the header is broken.
    Broken,
    /// Any other protocol: never ours.
    Foreign,
}

/// Decides the fate of one frame. `vlan_tagged` is the skb's out-of-band
/// VLAN tag: tagged frames belong to another network and are never touched.
#[inline(always)]
pub fn decide<F, T>(hook: Hook, frame: &F, vlan_tagged: bool, tables: &T) -> Decision
where
    F: Frame + ?Sized,
    T: Tables,
{
    if vlan_tagged {
        return Decision::just(Verdict::Pass);
    }
    let Some(settings) = tables.settings() else {
        return Decision::just(Verdict::Pass);
    };
    if settings.uplink_ifindex == 0 {
        return Decision::just(Verdict::Pass);
    }
    let Some(eth) = parse::eth(frame) else {
        return Decision::just(Verdict::Pass);
    };
    match hook {
        Hook::Uplink => Decision::just(from_host(frame, &eth, tables)),
        Hook::Vm { ifindex } => from_vm(ifindex, frame, &eth, &settings, tables),
    }
}

#[inline(always)]
fn lookup<T: Tables>(tables: &T, addr: Addr) -> Option<Endpoint> {
    match addr.family {
        6 => tables.local6(&addr.bytes),
        4 => tables.local4(&addr.v4_key()),
        _ => None,
    }
}

/// The host's stack sent this: steer it if it is for a VM.
#[inline(always)]
fn from_host<F: Frame + ?Sized, T: Tables>(frame: &F, eth: &Eth, tables: &T) -> Verdict {
    let (target, proto) = match carried(frame, eth.ethertype) {
        Carried::For(target, _, proto) => (target, proto),
        Carried::Broken | Carried::Foreign => return Verdict::Pass,
    };
    if let Some(ep) = lookup(tables, target)
        && ep.kind == ENDPOINT_VM
    {
        return steer(Path::HostToVm, eth, ep, proto, NO_SLOT, None);
    }
    // The host addressed a VM's MAC directly for an address we do not
    // track (an IPv6 link-local one, typically its neighbour advertisement
    // to the VM): the VM is local all the same.
    if !parse::is_group(&eth.dst)
        && let Some(ep) = tables.vm_by_mac(&eth.dst)
    {
        return steer(Path::HostToVm, eth, ep, proto, NO_SLOT, None);
    }
    Verdict::Pass
}

/// A guest sent this on its macvtap.
#[inline(always)]
fn from_vm<F: Frame + ?Sized, T: Tables>(
    ifindex: u32,
    frame: &F,
    eth: &Eth,
    settings: &Settings,
    tables: &T,
) -> Decision {
    // A link we have no VM for (yet): leave it alone.
    let Some(me) = tables.vm_link(ifindex) else {
        return Decision::just(Verdict::Pass);
    };
    if eth.src != me.mac {
        return Decision::just(Verdict::Drop(DropReason::SpoofedMac));
    }
    let to_host_mac = eth.dst == settings.uplink_mac;
    let (target, source, proto) = match carried(frame, eth.ethertype) {
        Carried::For(target, source, proto) => (target, source, proto),
        Carried::Broken if to_host_mac => {
            return Decision::just(Verdict::Drop(DropReason::Malformed));
        }
        Carried::Broken | Carried::Foreign => return Decision::just(Verdict::Pass),
    };
    let mine = |ep: &Endpoint| ep.kind == ENDPOINT_VM && ep.vm == me.slot;
    let (own_source, learn) = if source.is_none() {
        (true, Addr::NONE)
    } else {
        match lookup(tables, source) {
            Some(owner) if mine(&owner) => (true, Addr::NONE),
            // Claiming the host's or another VM's address: an attempt to
            // take over its traffic, whoever it is sent to.
            Some(_) => return Decision::just(Verdict::Drop(DropReason::SpoofedAddress)),
            None if me.flags & VMLINK_LEARN != 0 => (false, source),
            None => (false, Addr::NONE),
        }
    };
    let bridged = me.flags & VMLINK_BRIDGED != 0;
    let verdict = match lookup(tables, target) {
        Some(ep) if mine(&ep) => Verdict::Pass,
        Some(_) if !own_source => Verdict::Drop(DropReason::UnknownSource),
        Some(ep) => {
            let path = if ep.kind == ENDPOINT_HOST {
                Path::VmToHost
            } else {
                Path::VmToVm
            };
            // A bridged VM's frames stay in the bridge, re-addressed: to
            // the shim (which relays them to the host) or to the VM. So do
            // frames to a bridged VM: the bridge reaches it, we cannot.
            let to_bridged = ep.flags & ENDPOINT_BRIDGED != 0;
            let via = match (bridged, ep.kind) {
                (true, ENDPOINT_HOST) => Some(settings.shim_mac),
                (true, _) => Some(ep.mac),
                (false, _) if to_bridged => Some(ep.mac),
                (false, _) => None,
            };
            steer(path, eth, ep, proto, me.slot, via)
        }
        // For the host's MAC but no address of the host's: a request to
        // route it (into 192.168.122.0/24, a private IPv6 prefix, ...).
        // The host is not the VMs' router, and a real wire would not
        // deliver it either.
        None if to_host_mac => Verdict::Drop(DropReason::NotForHost),
        None => Verdict::Pass,
    };
    Decision { verdict, learn }
}

/// Finds who must receive a frame and who it claims to come from: ARP's
/// target and sender, IPv4's destination and source, a neighbour
/// solicitation's target, an advertisement's target (the address it
/// claims), IPv6's destination and source.
#[inline(always)]
fn carried<F: Frame + ?Sized>(frame: &F, ethertype: u16) -> Carried {
    match ethertype {
        ETH_P_ARP => match parse::arp(frame) {
            Some(arp) => {
                let source = if arp.spa == [0; 4] {
                    Addr::NONE
                } else {
                    Addr::v4(arp.spa)
                };
                Carried::For(Addr::v4(arp.tpa), source, Proto::Arp)
            }
            None => Carried::Broken,
        },
        ETH_P_IP => match parse::ipv4(frame) {
            Some(ip) => {
                let source = if ip.src == [0; 4] {
                    Addr::NONE
                } else {
                    Addr::v4(ip.src)
                };
                Carried::For(Addr::v4(ip.dst), source, Proto::Ipv4)
            }
            None => Carried::Broken,
        },
        ETH_P_IPV6 => match parse::ipv6(frame) {
            Some(ip) => {
                let source = source6(&ip.src);
                match parse::nd(frame, &ip) {
                    // A solicitation goes to a multicast group; who must
                    // answer it is named by its target.
                    Some(nd) if nd.is_solicitation() => {
                        Carried::For(Addr::v6(nd.target), source, Proto::Nd)
                    }
                    // An advertisement claims its target for the sender.
                    Some(nd) if nd.is_advertisement() => {
                        Carried::For(Addr::v6(ip.dst), source6(&nd.target), Proto::Nd)
                    }
                    Some(_) => Carried::For(Addr::v6(ip.dst), source, Proto::Nd),
                    None => Carried::For(Addr::v6(ip.dst), source, Proto::Ipv6),
                }
            }
            None => Carried::Broken,
        },
        _ => Carried::Foreign,
    }
}

#[inline(always)]
fn source6(addr: &Ipv6Key) -> Source {
    let unspecified = *addr == [0; 16];
    let link_local = addr[0] == 0xfe && addr[1] & 0xc0 == 0x80;
    if unspecified || link_local {
        Addr::NONE
    } else {
        Addr::v6(*addr)
    }
}

/// A frame for a local endpoint on another link: send it there. `via`:
/// the sender is a bridged VM and the frame continues into the bridge,
/// addressed to this MAC.
#[inline(always)]
fn steer(
    path: Path,
    eth: &Eth,
    ep: Endpoint,
    proto: Proto,
    from_slot: u32,
    via: Option<Mac>,
) -> Verdict {
    let to_slot = if ep.kind == ENDPOINT_VM {
        ep.vm
    } else {
        NO_SLOT
    };
    // In the bridge every frame must be unicast to its receiver, or the
    // bridge floods it to every sibling and the wire. Otherwise requests
    // to a group (ARP broadcast, a solicitation to the solicited-node
    // group) keep it, so the receiver sees what it expects; every unicast
    // frame is re-addressed to the endpoint, which also turns a /32 guest's
    // "send to the gateway" into a local delivery. One construction for
    // all cases: the programs must never copy a half-defined value.
    let bridged = ep.flags & ENDPOINT_BRIDGED != 0;
    let to_group = parse::is_group(&eth.dst) && matches!(proto, Proto::Arp | Proto::Nd);
    let continues = via.is_some();
    let target = match via {
        Some(mac) => mac,
        None => ep.mac,
    };
    let keep = (to_group && !bridged && !continues) || eth.dst == target;
    let action = if continues {
        Action::Continue
    } else if bridged {
        Action::Egress
    } else {
        Action::Ingress
    };
    Verdict::Redirect(Redirect {
        ifindex: if continues { 0 } else { ep.ifindex },
        action,
        count: true,
        dst_mac: if keep { None } else { Some(target) },
        path,
        proto,
        to_slot,
        from_slot,
    })
}

/// The shim's egress: nothing the host's stack sends through the shim may
/// leave (its MAC would reach the wire); only frames the uplink hook hands
/// to bridged VMs pass, and only to them.
#[inline(always)]
pub fn shim_egress<F: Frame + ?Sized, T: Tables>(frame: &F, tables: &T) -> Verdict {
    let (Some(eth), Some(settings)) = (parse::eth(frame), tables.settings()) else {
        return Verdict::Drop(DropReason::ShimTransmit);
    };
    let to_bridged = tables
        .vm_by_mac(&eth.dst)
        .is_some_and(|ep| ep.flags & ENDPOINT_BRIDGED != 0);
    if to_bridged && eth.src == settings.uplink_mac {
        Verdict::Pass
    } else {
        Verdict::Drop(DropReason::ShimTransmit)
    }
}

/// The shim's ingress: bridged VMs address their frames for the host to
/// the shim (their hook re-addressed them); relay those into the uplink's
/// ingress, as if they came off the wire. Nothing else is the shim's.
#[inline(always)]
pub fn shim_ingress<F: Frame + ?Sized, T: Tables>(frame: &F, tables: &T) -> Verdict {
    let (Some(eth), Some(settings)) = (parse::eth(frame), tables.settings()) else {
        return Verdict::Pass;
    };
    if eth.dst != settings.shim_mac || settings.uplink_ifindex == 0 {
        return Verdict::Pass;
    }
    let from_bridged = tables
        .vm_by_mac(&eth.src)
        .is_some_and(|ep| ep.flags & ENDPOINT_BRIDGED != 0);
    if !from_bridged {
        return Verdict::Drop(DropReason::SpoofedMac);
    }
    Verdict::Redirect(Redirect {
        ifindex: settings.uplink_ifindex,
        action: Action::Ingress,
        count: false,
        dst_mac: Some(settings.uplink_mac),
        path: Path::VmToHost,
        proto: Proto::Ipv4,
        to_slot: NO_SLOT,
        from_slot: NO_SLOT,
    })
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

    /// A redirect; the counter slots follow from the lab's tables: VM a
    /// is slot 0, VM c slot 2, the host has none.
    fn to(ifindex: u32, dst_mac: Option<Mac>, path: Path, proto: Proto, _: u32) -> Verdict {
        let slot = |i: u32| match i {
            VM_A_IF => 0,
            VM_C_IF => 2,
            _ => NO_SLOT,
        };
        Verdict::Redirect(Redirect {
            ifindex,
            action: Action::Ingress,
            count: true,
            dst_mac,
            path,
            proto,
            to_slot: slot(ifindex),
            from_slot: NO_SLOT, // the sender's, by `with_sender`
        })
    }

    /// Puts the sending VM's slot into an expected redirect.
    fn with_sender(want: Verdict, hook: Hook) -> Verdict {
        match (want, hook) {
            (Verdict::Redirect(mut r), Hook::Vm { ifindex }) => {
                r.from_slot = match ifindex {
                    VM_A_IF => 0,
                    VM_C_IF => 2,
                    _ => NO_SLOT,
                };
                Verdict::Redirect(r)
            }
            (v, _) => v,
        }
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
                what: "a guest sending with another VM's MAC",
                hook: vm_a,
                frame: ipv4(GW_MAC, VM_C_MAC, VM_A_IP, INET_IP),
                vlan: false,
                want: Verdict::Drop(DropReason::SpoofedMac),
            },
            Row {
                what: "a guest announcing the host's address (ARP)",
                hook: vm_a,
                frame: arp(BROADCAST, VM_A_MAC, 1, HOST_IP, HOST_IP),
                vlan: false,
                want: Verdict::Drop(DropReason::SpoofedAddress),
            },
            Row {
                what: "a guest advertising the host's IPv6 address",
                hook: vm_a,
                frame: na(GW_MAC, VM_A_MAC, VM_A_LL, GW_LL, HOST6),
                vlan: false,
                want: Verdict::Drop(DropReason::SpoofedAddress),
            },
            Row {
                what: "a guest sending as another VM, even to the internet",
                hook: vm_a,
                frame: ipv4(GW_MAC, VM_A_MAC, VM_C_IP, INET_IP),
                vlan: false,
                want: Verdict::Drop(DropReason::SpoofedAddress),
            },
            Row {
                what: "a guest forging an internet source towards the host",
                hook: vm_a,
                frame: ipv4(HOST_MAC, VM_A_MAC, INET_IP, HOST_IP),
                vlan: false,
                want: Verdict::Drop(DropReason::UnknownSource),
            },
            Row {
                what: "an unknown source towards the internet is the wire's business",
                hook: vm_a,
                frame: ipv4(GW_MAC, VM_A_MAC, INET_IP, [198, 51, 100, 20]),
                vlan: false,
                want: Verdict::Pass,
            },
            Row {
                what: "a guest's link-local source may talk to the host",
                hook: vm_a,
                frame: ping6(HOST_MAC, VM_A_MAC, VM_A_LL, HOST_LL),
                vlan: false,
                want: to(UPLINK_IF, None, Path::VmToHost, Proto::Ipv6, 0),
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
            assert_eq!(got.verdict, with_sender(row.want, row.hook), "{}", row.what);
        }
    }

    #[test]
    fn unconfigured_tables_pass_everything() {
        let tables = TestTables::default();
        for row in rows() {
            let got = decide(row.hook, row.frame.as_slice(), row.vlan, &tables);
            assert_eq!(got.verdict, Verdict::Pass, "{}", row.what);
        }
    }

    #[test]
    fn bridged_vms_are_reached_through_the_shim_and_the_bridge() {
        let t = lab_tables_bridged();
        let x = Hook::Vm { ifindex: VM_X_IF };
        let run = |hook, frame: Vec<u8>| decide(hook, frame.as_slice(), false, &t).verdict;
        let redirect = |ifindex, action, dst_mac, path, proto, to_slot, from_slot| {
            Verdict::Redirect(Redirect {
                ifindex,
                action,
                count: true,
                dst_mac,
                path,
                proto,
                to_slot,
                from_slot,
            })
        };
        // Host -> x: out of the shim, to x's MAC, even for a broadcast ARP.
        assert_eq!(
            run(Hook::Uplink, ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_X_IP)),
            redirect(
                SHIM_IF,
                Action::Egress,
                Some(VM_X_MAC),
                Path::HostToVm,
                Proto::Ipv4,
                3,
                NO_SLOT
            )
        );
        assert_eq!(
            run(Hook::Uplink, arp(BROADCAST, HOST_MAC, 1, HOST_IP, VM_X_IP)),
            redirect(
                SHIM_IF,
                Action::Egress,
                Some(VM_X_MAC),
                Path::HostToVm,
                Proto::Arp,
                3,
                NO_SLOT
            )
        );
        // x -> host: on into the bridge, to the shim; its ARP broadcast too.
        assert_eq!(
            run(x, ipv4(HOST_MAC, VM_X_MAC, VM_X_IP, HOST_IP)),
            redirect(
                0,
                Action::Continue,
                Some(SHIM_MAC),
                Path::VmToHost,
                Proto::Ipv4,
                NO_SLOT,
                3
            )
        );
        assert_eq!(
            run(x, arp(BROADCAST, VM_X_MAC, 1, VM_X_IP, HOST_IP)),
            redirect(
                0,
                Action::Continue,
                Some(SHIM_MAC),
                Path::VmToHost,
                Proto::Arp,
                NO_SLOT,
                3
            )
        );
        // VM a -> x (its ARP too): to x's MAC, in the bridge.
        assert_eq!(
            run(
                Hook::Vm { ifindex: VM_A_IF },
                arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, VM_X_IP)
            ),
            redirect(
                0,
                Action::Continue,
                Some(VM_X_MAC),
                Path::VmToVm,
                Proto::Arp,
                3,
                0
            )
        );
        // x -> VM a via the gateway: to a's MAC, in the bridge.
        assert_eq!(
            run(x, ipv4(GW_MAC, VM_X_MAC, VM_X_IP, VM_A_IP)),
            redirect(
                0,
                Action::Continue,
                Some(VM_A_MAC),
                Path::VmToVm,
                Proto::Ipv4,
                0,
                3
            )
        );
        // x to itself, and x spoofing: as for any VM.
        assert_eq!(
            run(x, ipv4(VM_X_MAC, VM_X_MAC, VM_X_IP, VM_X_IP)),
            Verdict::Pass
        );
        assert_eq!(
            run(x, ipv4(GW_MAC, VM_X_MAC, VM_A_IP, INET_IP)),
            Verdict::Drop(DropReason::SpoofedAddress)
        );
    }

    #[test]
    fn the_shim_lets_through_only_what_it_relays() {
        let t = lab_tables_bridged();
        let e = |f: Vec<u8>| shim_egress(f.as_slice(), &t);
        assert_eq!(e(ipv4(VM_X_MAC, HOST_MAC, HOST_IP, VM_X_IP)), Verdict::Pass);
        for leak in [
            ipv4(VM_X_MAC, SHIM_MAC, HOST_IP, VM_X_IP),
            ipv4(VM_A_MAC, HOST_MAC, HOST_IP, VM_A_IP),
            arp(BROADCAST, SHIM_MAC, 1, HOST_IP, GW_IP),
            std::vec![0u8; 10],
        ] {
            assert_eq!(e(leak), Verdict::Drop(DropReason::ShimTransmit));
        }
        let i = |f: Vec<u8>| shim_ingress(f.as_slice(), &t);
        assert_eq!(
            i(ipv4(SHIM_MAC, VM_X_MAC, VM_X_IP, HOST_IP)),
            Verdict::Redirect(Redirect {
                ifindex: UPLINK_IF,
                action: Action::Ingress,
                count: false,
                dst_mac: Some(HOST_MAC),
                path: Path::VmToHost,
                proto: Proto::Ipv4,
                to_slot: NO_SLOT,
                from_slot: NO_SLOT,
            })
        );
        assert_eq!(
            i(ipv4(SHIM_MAC, VM_A_MAC, VM_A_IP, HOST_IP)),
            Verdict::Drop(DropReason::SpoofedMac),
            "only bridged VMs use the shim"
        );
        assert_eq!(i(arp(BROADCAST, GW_MAC, 1, GW_IP, HOST_IP)), Verdict::Pass);
    }

    #[test]
    fn only_learning_vms_report_unknown_sources() {
        let tables = lab_tables();
        let new4 = [203, 0, 113, 170];
        let new6 = {
            let mut a = VM_C6;
            a[15] = 0x70;
            a
        };
        let c = Hook::Vm { ifindex: VM_C_IF };
        let got = decide(
            c,
            ipv4(GW_MAC, VM_C_MAC, new4, INET_IP).as_slice(),
            false,
            &tables,
        );
        assert_eq!(got.learn, Addr::v4(new4));
        assert_eq!(got.verdict, Verdict::Pass);
        let got = decide(c, ns(VM_C_MAC, new6, HOST6).as_slice(), false, &tables);
        assert_eq!(got.learn, Addr::v6(new6));
        // Not learnt yet, so not steered yet.
        assert_eq!(got.verdict, Verdict::Drop(DropReason::UnknownSource));
        let got = decide(
            c,
            ipv4(GW_MAC, VM_C_MAC, VM_C_IP, INET_IP).as_slice(),
            false,
            &tables,
        );
        assert_eq!(got.learn, Addr::NONE, "a known address is not reported");

        let a = Hook::Vm { ifindex: VM_A_IF };
        let got = decide(
            a,
            ipv4(GW_MAC, VM_A_MAC, new4, INET_IP).as_slice(),
            false,
            &tables,
        );
        assert_eq!(got.learn, Addr::NONE, "VM a does not learn");
        let got = decide(
            c,
            ipv4(GW_MAC, VM_C_MAC, HOST_IP, INET_IP).as_slice(),
            false,
            &tables,
        );
        assert_eq!(
            got.learn,
            Addr::NONE,
            "an address owned by another is never offered"
        );
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
                let got = decide(row.hook, &row.frame[..len], row.vlan, &tables).verdict;
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
