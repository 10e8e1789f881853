//! Reading the kernel's link state against the config: which link is the
//! uplink, the shim, each VM's macvtap, and what is wrong with them.

use std::net::IpAddr;

use rtnetlink::packet_route::link::MacVlanMode;

use crate::config::{Config, MacAddr, Vm};
use crate::netlink::Link;

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

/// Where a configured VM stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmLinkState {
    /// Its macvtap is there and fits.
    Present(Link),
    /// No link for it (the VM is not running), or mvbridge is to create it.
    Absent,
    /// A link matches its name but is not its macvtap: the reason.
    Unfit(String),
}

/// Finds VM `vm`'s macvtap among `links` (all links of the namespace).
pub fn vm_link(vm: &Vm, links: &[Link], uplink: &Link) -> VmLinkState {
    let on_uplink =
        |l: &&Link| l.kind.as_deref() == Some("macvtap") && l.lower == Some(uplink.index);
    let found = match (&vm.interface, vm.mac) {
        (Some(name), _) => links.iter().find(|l| &l.name == name),
        (None, Some(mac)) => links
            .iter()
            .filter(on_uplink)
            .find(|l| l.mac == Some(mac.0)),
        (None, None) => None,
    };
    let Some(link) = found else {
        return VmLinkState::Absent;
    };
    let what = format!("[[vm]] {:?}: {}", vm.name, vm.describe_link());
    if link.kind.as_deref() != Some("macvtap") {
        return VmLinkState::Unfit(format!(
            "{what} is a {}, not a macvtap",
            link.kind.as_deref().unwrap_or("physical or unknown link")
        ));
    }
    if link.lower != Some(uplink.index) {
        return VmLinkState::Unfit(format!(
            "{what} is a macvtap that does not sit on the uplink {}",
            uplink.name
        ));
    }
    match (link.mac, vm.mac) {
        (None, _) => return VmLinkState::Unfit(format!("{what} has no MAC")),
        (Some(have), Some(want)) if have != want.0 => {
            return VmLinkState::Unfit(format!(
                "{what} has MAC {} but the config says {want}",
                MacAddr(have)
            ));
        }
        _ => {}
    }
    VmLinkState::Present(link.clone())
}

/// Says once (per link) that a macvtap is not in bridge mode.
pub fn warn_mode(vm: &Vm, link: &Link) {
    if link.macvlan_mode != Some(MacVlanMode::Bridge) {
        tracing::warn!(
            vm = %vm.name,
            interface = %link.name,
            "macvtap is not in bridge mode: host <-> VM works, but VM <-> VM on-link traffic depends on the switch"
        );
    }
}

/// What is wrong with the shim's name, if anything: a foreign link holds
/// it.
pub fn shim_conflict(config: &Config, links: &[Link]) -> Option<String> {
    let l = links.iter().find(|l| l.name == config.shim.name)?;
    if is_ours(l) {
        return None;
    }
    Some(format!(
        "a link named {:?} already exists and is not mvbridge's; choose another [shim] name",
        config.shim.name
    ))
}

/// A VM address that the host owns: the host wins, the VM is told.
pub fn host_overlap(vm: &Vm, host: &[IpAddr]) -> Option<String> {
    vm.addresses
        .iter()
        .find(|a| host.contains(a))
        .map(|a| format!("[[vm]] {:?}: {a} is one of the host's addresses", vm.name))
}
