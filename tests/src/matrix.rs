//! The ping matrix of a hosted server: who reaches whom.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::lab::{HOST, HOST6, INET, INET6, Lab, NAT_VM};
use crate::netns::Netns;
use crate::traffic::ping_retry;
use crate::wire::Frame;

/// Which address family a probe uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One probe and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub ok: bool,
}

impl Lab {
    /// The namespace and address of a named endpoint: "host", "natvm",
    /// "inet" or a VM key.
    pub fn endpoint(&self, name: &str) -> (&Netns, Ipv4Addr) {
        match name {
            "host" => (&self.host, HOST),
            "natvm" => (&self.natvm, NAT_VM),
            "inet" => (&self.inet, INET),
            vm => (self.guest(vm), self.spec(vm).addr),
        }
    }

    /// The VMs that are up: emulated guests and kernel guests.
    pub fn running_vms(&self) -> Vec<String> {
        self.specs
            .iter()
            .filter(|s| s.kernel || self.guests.iter().any(|g| g.key == s.key))
            .map(|s| s.key.to_string())
            .collect()
    }

    /// The IPv6 address of a named endpoint (the NAT VM has no public one).
    pub fn endpoint6(&self, name: &str) -> (&Netns, Ipv6Addr) {
        match name {
            "host" => (&self.host, HOST6),
            "inet" => (&self.inet, INET6),
            vm => (self.guest(vm), self.spec(vm).addr6),
        }
    }

    /// Pairs whose traffic is local to the host: host/NAT VM <-> VMs and
    /// VM <-> VM. None of it may cross the uplink.
    pub fn local_pairs(&self) -> Vec<(String, String)> {
        self.local_pairs_of(Family::V4)
    }

    /// Local pairs for one family: over IPv6 the NAT VM has no public
    /// address (libvirt's default network does not NAT IPv6).
    pub fn local_pairs_of(&self, family: Family) -> Vec<(String, String)> {
        let vms = self.running_vms();
        let mut pairs = Vec::new();
        for vm in &vms {
            pairs.push(("host".to_string(), vm.clone()));
            pairs.push((vm.clone(), "host".to_string()));
            if family == Family::V4 {
                pairs.push(("natvm".to_string(), vm.clone()));
            }
            for other in &vms {
                if other != vm {
                    pairs.push((vm.clone(), other.clone()));
                }
            }
        }
        pairs
    }

    /// Pairs that leave the host: everyone to the internet host.
    pub fn internet_pairs(&self) -> Vec<(String, String)> {
        self.internet_pairs_of(Family::V4)
    }

    pub fn internet_pairs_of(&self, family: Family) -> Vec<(String, String)> {
        let from: &[&str] = match family {
            Family::V4 => &["host", "natvm"],
            Family::V6 => &["host"],
        };
        let mut pairs: Vec<(String, String)> = from
            .iter()
            .map(|f| (f.to_string(), "inet".to_string()))
            .collect();
        for vm in self.running_vms() {
            pairs.push((vm, "inet".to_string()));
        }
        pairs
    }

    pub fn probe(&self, pairs: &[(String, String)]) -> Vec<Probe> {
        self.probe_of(Family::V4, pairs)
    }

    pub fn probe_of(&self, family: Family, pairs: &[(String, String)]) -> Vec<Probe> {
        pairs
            .iter()
            .map(|(from, to)| {
                let (ns, addr): (&Netns, IpAddr) = match family {
                    Family::V4 => (self.endpoint(from).0, self.endpoint(to).1.into()),
                    Family::V6 => (self.endpoint6(from).0, self.endpoint6(to).1.into()),
                };
                Probe {
                    from: from.clone(),
                    to: to.clone(),
                    ok: ping_retry(ns, addr, 2),
                }
            })
            .collect()
    }

    /// Frames on the wire that belong to local traffic: IPv4 between two
    /// local addresses, ARP between two local addresses, or anything
    /// carrying the shim's MAC.
    pub fn local_frames<'a>(
        &self,
        frames: &'a [Frame],
        shim_mac: Option<[u8; 6]>,
    ) -> Vec<&'a Frame> {
        let local = self.local_addresses();
        frames
            .iter()
            .filter(|f| {
                let ip_local = f
                    .ipv4()
                    .is_some_and(|(s, d)| local.contains(&s) && local.contains(&d));
                let arp_local = f
                    .arp()
                    .is_some_and(|a| local.contains(&a.spa) && local.contains(&a.tpa));
                let shim = shim_mac.is_some_and(|m| f.src == m || f.dst == m);
                ip_local || arp_local || shim
            })
            .collect()
    }
}

/// Renders probes as "from -> to: ok/FAIL" lines.
pub fn render(probes: &[Probe]) -> String {
    probes
        .iter()
        .map(|p| {
            format!(
                "{:>6} -> {:<6} {}",
                p.from,
                p.to,
                if p.ok { "ok" } else { "FAIL" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
