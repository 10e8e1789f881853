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

/// The link kinds a VM may use: a macvtap (a VM's NIC) in the host's
/// namespace; a macvtap or a macvlan (a kernel guest's or a container's) in
/// another one.
fn fits(vm: &Vm, kind: Option<&str>) -> bool {
    matches!(
        (&vm.netns, kind),
        (_, Some("macvtap")) | (Some(_), Some("macvlan"))
    )
}

/// Finds VM `vm`'s link among `links` (all links of the VM's namespace).
pub fn vm_link(vm: &Vm, links: &[Link], uplink: &Link) -> VmLinkState {
    let on_uplink = |l: &&Link| fits(vm, l.kind.as_deref()) && l.lower == Some(uplink.index);
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
    if !fits(vm, link.kind.as_deref()) {
        return VmLinkState::Unfit(format!(
            "{what} is a {}, not a {}",
            link.kind.as_deref().unwrap_or("physical or unknown link"),
            if vm.netns.is_some() {
                "macvtap or macvlan"
            } else {
                "macvtap"
            }
        ));
    }
    // A VM in another namespace is reached through the bridge: its link
    // must take part in it.
    if vm.netns.is_some() && link.macvlan_mode != Some(MacVlanMode::Bridge) {
        return VmLinkState::Unfit(format!("{what} is not in bridge mode"));
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

/// A bridged VM's link is told apart from the host's links by its ifindex
/// alone (the programs see no namespace): it must not collide.
pub fn unique_ifindex(vm: &Vm, link: Link, host_links: &[Link]) -> VmLinkState {
    match host_links.iter().find(|h| h.index == link.index) {
        Some(h) => VmLinkState::Unfit(format!(
            "[[vm]] {:?}: {} in netns {:?} has ifindex {}, like the host's {}; mvbridge needs them distinct (move the link in again to get a new one)",
            vm.name,
            link.name,
            vm.netns.as_deref().unwrap_or(""),
            link.index,
            h.name
        )),
        None => VmLinkState::Present(link),
    }
}

/// The key of a hook: the interface name, prefixed by its namespace for
/// links outside the host's.
pub fn hook_key(netns: Option<&str>, ifname: &str) -> String {
    match netns {
        Some(ns) => format!("{ns}:{ifname}"),
        None => ifname.to_owned(),
    }
}
