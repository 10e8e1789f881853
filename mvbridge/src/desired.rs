//! What the datapath's tables must hold, derived from the resolved links
//! and addresses. Pure data: the loader writes it, tests compare it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mvbridge_common::maps::{
    ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Ipv6Key, Mac, Settings,
};

use crate::netlink::Link;

/// A VM as the datapath sees it: its link and its addresses.
#[derive(Clone, Debug)]
pub struct VmEntry<'a> {
    pub link: &'a Link,
    pub addresses: &'a [IpAddr],
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub settings: Settings,
    pub local4: BTreeMap<Ipv4Key, Endpoint>,
    pub local6: BTreeMap<Ipv6Key, Endpoint>,
    pub macs: BTreeMap<Mac, Endpoint>,
}

impl Desired {
    pub fn new(uplink: &Link, shim: &Link, host: &[IpAddr], vms: &[VmEntry<'_>]) -> Desired {
        let mut d = Desired {
            settings: Settings {
                uplink_ifindex: uplink.index,
                uplink_mac: uplink.mac.unwrap_or_default(),
                shim_mac: shim.mac.unwrap_or_default(),
                shim_ifindex: shim.index,
            },
            ..Desired::default()
        };
        let host_ep = Endpoint {
            ifindex: uplink.index,
            mac: uplink.mac.unwrap_or_default(),
            kind: ENDPOINT_HOST,
            _pad: 0,
            vm: 0,
        };
        for a in host {
            d.insert(*a, host_ep);
        }
        for (i, vm) in vms.iter().enumerate() {
            let ep = Endpoint {
                ifindex: vm.link.index,
                mac: vm.link.mac.unwrap_or_default(),
                kind: ENDPOINT_VM,
                _pad: 0,
                vm: i as u32,
            };
            d.macs.insert(ep.mac, ep);
            for a in vm.addresses {
                d.insert(*a, ep);
            }
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
