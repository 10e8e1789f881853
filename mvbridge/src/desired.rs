//! What the datapath's tables must hold, derived from the links and
//! addresses the reconcile loop found. Pure data: the loop writes it,
//! tests compare it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mvbridge_common::maps::{
    ENDPOINT_BRIDGED, ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Ipv6Key, Mac, Settings,
    VMLINK_BRIDGED, VMLINK_LEARN, VmLink,
};

use crate::netlink::Link;

/// A VM as the datapath sees it.
#[derive(Clone, Debug)]
pub struct VmEntry<'a> {
    pub link: &'a Link,
    /// Configured and learnt addresses.
    pub addresses: Vec<IpAddr>,
    pub slot: u32,
    pub learns: bool,
    /// The link is in another network namespace (see `ENDPOINT_BRIDGED`).
    pub bridged: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub settings: Settings,
    pub local4: BTreeMap<Ipv4Key, Endpoint>,
    pub local6: BTreeMap<Ipv6Key, Endpoint>,
    pub macs: BTreeMap<Mac, Endpoint>,
    pub links: BTreeMap<u32, VmLink>,
}

impl Desired {
    pub fn new(uplink: &Link, shim: &Link, host: &[IpAddr], vms: &[VmEntry<'_>]) -> Desired {
        let mut d = Desired {
            settings: Settings {
                uplink_ifindex: uplink.index,
                uplink_mac: uplink.mac.unwrap_or_default(),
                shim_mac: shim.mac.unwrap_or_default(),
            },
            ..Desired::default()
        };
        let host_ep = Endpoint {
            ifindex: uplink.index,
            mac: uplink.mac.unwrap_or_default(),
            kind: ENDPOINT_HOST,
            flags: 0,
            vm: 0,
        };
        for vm in vms {
            let mac = vm.link.mac.unwrap_or_default();
            // A bridged VM is reached through the shim's egress: the
            // macvlan bridge finds it by MAC in whatever namespace it is.
            let ep = Endpoint {
                ifindex: if vm.bridged {
                    shim.index
                } else {
                    vm.link.index
                },
                mac,
                kind: ENDPOINT_VM,
                flags: if vm.bridged { ENDPOINT_BRIDGED } else { 0 },
                vm: vm.slot,
            };
            d.macs.insert(mac, ep);
            d.links.insert(
                vm.link.index,
                VmLink {
                    slot: vm.slot,
                    flags: if vm.learns { VMLINK_LEARN } else { 0 }
                        | if vm.bridged { VMLINK_BRIDGED } else { 0 },
                    mac,
                    _pad: [0; 2],
                },
            );
            for a in &vm.addresses {
                d.insert(*a, ep);
            }
            // The link-local address the guest's stack derives from its
            // MAC is the VM's from the start; others it may come to own
            // (configured, or learnt first come).
            let ll = mvbridge_common::link_local::eui64(&mac);
            d.local6.insert(ll, ep);
        }
        // The host's addresses last: they win over anything a VM claims.
        for a in host {
            d.insert(*a, host_ep);
        }
        d
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
