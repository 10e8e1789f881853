//! Resolving a config against the kernel: which links exist, which must be
//! created, the host's addresses. Every check that can fail happens here,
//! before anything is changed.

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::{Result, bail};
use rtnetlink::packet_route::link::MacVlanMode;

use crate::bpffs::PinDir;
use crate::config::{Config, Vm};
use crate::netlink::{Link, Mac, Netlink};

/// Prefix of the alias mvbridge gives every link it creates: the mark by
/// which `down` finds them, even after a crash.
pub const ALIAS_PREFIX: &str = "mvbridge:";

pub fn shim_alias() -> String {
    format!("{ALIAS_PREFIX}shim")
}

pub fn vm_alias(vm: &Vm) -> String {
    format!("{ALIAS_PREFIX}vm:{}", vm.name)
}

pub fn is_ours(link: &Link) -> bool {
    link.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
}

#[derive(Debug)]
pub struct Plan {
    pub uplink: Link,
    pub host_addresses: Vec<IpAddr>,
    pub vms: Vec<VmPlan>,
}

#[derive(Debug)]
pub struct VmPlan {
    pub vm: Vm,
    /// The macvtap to adopt; `None` when mvbridge creates it.
    pub existing: Option<Link>,
}

pub async fn resolve(config: &Config, nl: &Netlink) -> Result<Plan> {
    let links = nl.links().await?;
    let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();

    let Some(uplink) = by_name.get(config.uplink.as_str()).copied() else {
        let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        names.sort();
        bail!(
            "uplink {:?} does not exist (links here: {})",
            config.uplink,
            names.join(", ")
        );
    };
    let Some(uplink_mac) = uplink.mac else {
        bail!(
            "uplink {} has no Ethernet address; mvbridge needs an Ethernet NIC",
            uplink.name
        );
    };

    let host_addresses = match &config.host_addresses {
        Some(list) => list.clone(),
        None => {
            let found = nl.addresses(uplink.index).await?;
            if !found.iter().any(|a| a.is_ipv4() || is_global6(a)) {
                bail!(
                    "uplink {} has no global address; give the host's addresses in host_addresses",
                    uplink.name
                );
            }
            found
        }
    };

    if let Some(existing) = by_name.get(config.shim.name.as_str()) {
        bail!(
            "a link named {:?} already exists{}; {}",
            config.shim.name,
            if is_ours(existing) {
                " (left by an earlier mvbridge)"
            } else {
                ""
            },
            if is_ours(existing) {
                "run `mvbridge down` first"
            } else {
                "choose another [shim] name"
            }
        );
    }

    let mut vms = Vec::new();
    let mut macs: HashMap<Mac, String> = HashMap::new();
    macs.insert(uplink_mac, format!("the uplink {}", uplink.name));
    if let Some(m) = config.shim.mac {
        macs.insert(m.0, "the shim".into());
    }
    for vm in &config.vms {
        let existing = by_name.get(vm.interface.as_str()).copied();
        let mac = if vm.create {
            if let Some(l) = existing {
                bail!(
                    "[[vm]] {:?}: interface {:?} already exists{}",
                    vm.name,
                    vm.interface,
                    if is_ours(l) {
                        " (left by an earlier mvbridge); run `mvbridge down` first"
                    } else {
                        "; set create = false to adopt it"
                    }
                );
            }
            vm.mac.map(|m| m.0).unwrap_or_default()
        } else {
            check_adoptable(vm, existing, uplink)?
        };
        for addr in &vm.addresses {
            if host_addresses.contains(addr) {
                bail!(
                    "[[vm]] {:?}: {addr} is one of the host's addresses on {}",
                    vm.name,
                    uplink.name
                );
            }
        }
        if let Some(prev) = macs.insert(mac, format!("[[vm]] {:?}", vm.name)) {
            bail!(
                "[[vm]] {:?}: MAC {} is already used by {prev}",
                vm.name,
                crate::config::MacAddr(mac)
            );
        }
        vms.push(VmPlan {
            vm: vm.clone(),
            existing: existing.filter(|_| !vm.create).cloned(),
        });
    }

    let pins = PinDir::new(&config.bpffs);
    let leftovers = pins.entries()?;
    if !leftovers.is_empty() {
        bail!(
            "{} holds pinned state from an earlier mvbridge ({} entries); run `mvbridge down` first",
            config.bpffs.display(),
            leftovers.len()
        );
    }

    Ok(Plan {
        uplink: uplink.clone(),
        host_addresses,
        vms,
    })
}

fn check_adoptable(vm: &Vm, link: Option<&Link>, uplink: &Link) -> Result<Mac> {
    let Some(link) = link else {
        bail!(
            "[[vm]] {:?}: interface {:?} does not exist (is the VM running? set create = true to have mvbridge create it)",
            vm.name,
            vm.interface
        );
    };
    if link.kind.as_deref() != Some("macvtap") {
        bail!(
            "[[vm]] {:?}: interface {:?} is a {}, not a macvtap",
            vm.name,
            vm.interface,
            link.kind.as_deref().unwrap_or("physical or unknown link")
        );
    }
    if link.lower != Some(uplink.index) {
        bail!(
            "[[vm]] {:?}: macvtap {:?} does not sit on the uplink {}",
            vm.name,
            vm.interface,
            uplink.name
        );
    }
    let Some(mac) = link.mac else {
        bail!(
            "[[vm]] {:?}: macvtap {:?} has no MAC",
            vm.name,
            vm.interface
        );
    };
    if let Some(want) = vm.mac
        && want.0 != mac
    {
        bail!(
            "[[vm]] {:?}: macvtap {:?} has MAC {} but the config says {}",
            vm.name,
            vm.interface,
            crate::config::MacAddr(mac),
            want
        );
    }
    if link.macvlan_mode != Some(MacVlanMode::Bridge) {
        tracing::warn!(
            vm = %vm.name,
            interface = %vm.interface,
            "macvtap is not in bridge mode: host <-> VM works, but VM <-> VM on-link traffic depends on the switch"
        );
    }
    Ok(mac)
}

fn is_global6(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80)
}
