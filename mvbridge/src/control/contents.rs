//! What the datapath's tables must hold, derived from a plan once its
//! links exist (the shim's ifindex, each live VM's counter slot). Pure
//! data: the loop writes it, tests compare it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mvbridge_common::link_local;
use mvbridge_common::maps::{
    ENDPOINT_BRIDGED, ENDPOINT_HOST, ENDPOINT_VM, ENDPOINT_WIRE, Endpoint, Ipv4Key, Ipv6Key, Mac,
    Settings, VMLINK_BRIDGED, VMLINK_LEARN, VMLINK_PRESENT, VmLink,
};

use crate::control::plan::Plan;
use crate::kernel::netlink::Link;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub settings: Settings,
    pub local4: BTreeMap<Ipv4Key, Endpoint>,
    pub local6: BTreeMap<Ipv6Key, Endpoint>,
    pub macs: BTreeMap<Mac, Endpoint>,
    pub links: BTreeMap<u32, VmLink>,
}

impl Contents {
    /// The tables for `plan`, with the shim's link and each live VM's
    /// counter slot (a VM without one is left out).
    pub fn new(plan: &Plan, shim: &Link, slots: &BTreeMap<String, u32>) -> Contents {
        let uplink_mac = plan.uplink.mac.unwrap_or_default();
        let mut c = Contents {
            settings: Settings {
                uplink_ifindex: plan.uplink.index,
                uplink_mac,
                shim_mac: shim.mac.unwrap_or_default(),
            },
            ..Contents::default()
        };
        // Lowest precedence first: a VM's or the host's claim on an address
        // wins over a stale neighbour entry, and the host's over a VM's.
        let wire = Endpoint {
            ifindex: plan.uplink.index,
            mac: [0; 6],
            kind: ENDPOINT_WIRE,
            flags: 0,
            vm: 0,
        };
        for a in &plan.wire {
            c.insert(*a, wire);
        }
        for (vm, link) in plan.live() {
            let Some(&slot) = slots.get(&vm.name) else {
                continue;
            };
            let mac = link.mac.unwrap_or_default();
            let bridged = vm.netns.is_some();
            // A bridged VM is reached through the shim's egress: the
            // macvlan bridge finds it by MAC in whatever namespace it is.
            let ep = Endpoint {
                ifindex: if bridged { shim.index } else { link.index },
                mac,
                kind: ENDPOINT_VM,
                flags: if bridged { ENDPOINT_BRIDGED } else { 0 },
                vm: slot,
            };
            c.macs.insert(mac, ep);
            // Its usual addresses, for the programs' fast path.
            let first = |pick: &dyn Fn(&IpAddr) -> bool| {
                vm.addresses.iter().map(|o| o.addr).find(|a| pick(a))
            };
            let own4 = match first(&|a| a.is_ipv4()) {
                Some(IpAddr::V4(a)) => a.octets(),
                _ => [0; 4],
            };
            let v6 = |ll: bool| match first(
                &|a| matches!(a, IpAddr::V6(v) if link_local::is_link_local(&v.octets()) == ll),
            ) {
                Some(IpAddr::V6(a)) => a.octets(),
                _ => [0; 16],
            };
            c.links.insert(
                link.index,
                VmLink {
                    slot,
                    flags: VMLINK_PRESENT
                        | if vm.learns { VMLINK_LEARN } else { 0 }
                        | if bridged { VMLINK_BRIDGED } else { 0 },
                    mac,
                    _pad: [0; 2],
                    own4,
                    own6: v6(false),
                    own_ll: v6(true),
                },
            );
            for owned in &vm.addresses {
                c.insert(owned.addr, ep);
            }
        }
        let host = Endpoint {
            ifindex: plan.uplink.index,
            mac: uplink_mac,
            kind: ENDPOINT_HOST,
            flags: 0,
            vm: 0,
        };
        for a in &plan.host {
            c.insert(*a, host);
        }
        c
    }

    fn insert(&mut self, addr: IpAddr, ep: Endpoint) {
        match addr {
            IpAddr::V4(a) => {
                self.local4.insert(a.octets(), ep);
            }
            IpAddr::V6(a) => {
                self.local6.insert(a.octets(), ep);
            }
        }
    }
}
