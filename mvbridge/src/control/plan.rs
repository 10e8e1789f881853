//! What the datapath must look like, given the config, one look at the
//! world and what VMs have learnt: which link is each VM's and whether it
//! is fit, which addresses are whose, which links to create or delete,
//! which hooks to run. Pure: no kernel access, so it is unit-tested here,
//! and the daemon's loop, `status`, `check` and `reload` share its verdicts.

use std::collections::BTreeSet;
use std::net::IpAddr;

use mvbridge_common::link_local;
use rtnetlink::packet_route::link::MacVlanMode;

use crate::config::{Config, MacAddr, Vm};
use crate::control::learning::Learnt;
use crate::control::world::{Namespace, World};
use crate::datapath::hooks::{HookKey, LinkAt};
use crate::datapath::object::Role;
use crate::error::{Error, Result};
use crate::kernel::netlink::Link;

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

fn is_our_vm_link(link: &Link) -> bool {
    link.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(&format!("{ALIAS_PREFIX}vm:")))
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub uplink: Link,
    /// The host's addresses: see [`host_addresses`].
    pub host: Vec<IpAddr>,
    /// Addresses that are neither the host's nor any VM's, and that no VM
    /// may claim: routers and neighbours on the wire, and the uplink's own
    /// addresses that `host_addresses` leaves out (its link-local one,
    /// say).
    pub wire: Vec<IpAddr>,
    pub shim: ShimState,
    pub vms: Vec<VmPlan>,
    /// VMs whose link mvbridge is to create now.
    pub create: Vec<String>,
    /// Links mvbridge created for VMs that are no longer configured.
    pub stale: Vec<Link>,
    /// What is wrong beyond a VM's unfitness (which its state holds).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShimState {
    Present(Link),
    Missing,
    /// Ours, but on a previous incarnation of the uplink: to be replaced.
    Stale(Link),
}

#[derive(Clone, Debug)]
pub struct VmPlan {
    pub name: String,
    pub state: VmState,
    pub netns: Option<String>,
    /// Every address the VM owns, with where it comes from.
    pub addresses: Vec<Owned>,
    pub learns: bool,
}

/// Where a configured VM stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Its link is there and fits: steer it.
    Live(Link),
    /// No link for it: the VM is not running (or mvbridge creates it).
    Absent,
    /// A link matches it but does not fit, or it cannot be looked for:
    /// why, naming the VM and the link.
    Unfit { reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owned {
    pub addr: IpAddr,
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Config,
    Learnt,
    /// The link-local address the guest derives from its MAC.
    Derived,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Learnt => "learnt",
            Origin::Derived => "derived",
        }
    }
}

impl VmPlan {
    pub fn link(&self) -> Option<&Link> {
        match &self.state {
            VmState::Live(l) => Some(l),
            _ => None,
        }
    }

    /// Where its hook runs, when it is live.
    pub fn hook(&self) -> Option<HookKey> {
        let link = self.link()?;
        Some(HookKey {
            role: Role::Vm,
            at: LinkAt::new(self.netns.as_deref(), &link.name),
        })
    }
}

impl Plan {
    /// The hooks the datapath runs: the uplink's, the shim's two, and one
    /// per live VM.
    pub fn hooks(&self, config: &Config) -> BTreeSet<HookKey> {
        let mut hooks = base_hooks(config);
        hooks.extend(self.vms.iter().filter_map(VmPlan::hook));
        hooks
    }

    /// Everything wrong that does not stop the rest, unfit VMs first: fatal
    /// at start-up and on reload, reported otherwise.
    pub fn all_problems(&self) -> Vec<String> {
        let unfit = self.vms.iter().filter_map(|v| match &v.state {
            VmState::Unfit { reason } => Some(reason.clone()),
            _ => None,
        });
        unfit.chain(self.problems.iter().cloned()).collect()
    }

    pub fn vm(&self, name: &str) -> Option<&VmPlan> {
        self.vms.iter().find(|v| v.name == name)
    }

    pub fn live(&self) -> impl Iterator<Item = (&VmPlan, &Link)> {
        self.vms.iter().filter_map(|v| Some((v, v.link()?)))
    }

    /// The VM namespaces all of whose VMs are live: no event in the host's
    /// namespace can mean something waits there.
    pub fn settled_namespaces(&self) -> BTreeSet<String> {
        let mut waiting = BTreeSet::new();
        let mut settled = BTreeSet::new();
        for vm in &self.vms {
            let Some(ns) = &vm.netns else {
                continue;
            };
            if vm.link().is_some() {
                settled.insert(ns.clone());
            } else {
                waiting.insert(ns.clone());
            }
        }
        &settled - &waiting
    }

    /// Who owns `addr`, if anyone: "the host", a neighbour, or a VM.
    pub fn owner_of(&self, addr: &IpAddr) -> Option<String> {
        if self.host.contains(addr) {
            return Some("the host".into());
        }
        if self.wire.contains(addr) {
            return Some("a router or neighbour on the wire".into());
        }
        self.vms
            .iter()
            .find(|v| v.addresses.iter().any(|o| o.addr == *addr))
            .map(|v| format!("VM {:?}", v.name))
    }
}

/// The hooks every datapath runs, VMs or not: the uplink's and the
/// shim's two.
pub fn base_hooks(config: &Config) -> BTreeSet<HookKey> {
    let host = |role, name: &str| HookKey {
        role,
        at: LinkAt::Host(name.to_owned()),
    };
    BTreeSet::from([
        host(Role::Uplink, &config.uplink),
        host(Role::Shim, &config.shim.name),
        host(Role::ShimIn, &config.shim.name),
    ])
}

/// The host's addresses, the one rule for everything that asks: those
/// `host_addresses` lists, or else the uplink's own (none while there is
/// no uplink).
pub fn host_addresses(config: &Config, world: &World) -> Vec<IpAddr> {
    config
        .host_addresses
        .clone()
        .unwrap_or_else(|| world.uplink_addresses.clone())
}

/// Plans the datapath. Errors are what nothing can be done without (no
/// uplink, a foreign link holding the shim's name); everything else is a
/// problem in the plan.
pub fn plan(config: &Config, world: &World, learnt: &Learnt) -> Result<Plan> {
    let Some(uplink) = world.link(&config.uplink).cloned() else {
        let mut names: Vec<&str> = world.links.iter().map(|l| l.name.as_str()).collect();
        names.sort();
        return Err(Error::Unfit(format!(
            "uplink {:?} does not exist (links here: {})",
            config.uplink,
            names.join(", ")
        )));
    };
    let Some(uplink_mac) = uplink.mac else {
        return Err(Error::Unfit(format!(
            "uplink {} has no Ethernet address; mvbridge needs an Ethernet NIC",
            uplink.name
        )));
    };
    let shim = match world.link(&config.shim.name) {
        Some(l) if !is_ours(l) => {
            return Err(Error::Unfit(format!(
                "a link named {:?} already exists and is not mvbridge's; choose another [shim] name",
                config.shim.name
            )));
        }
        Some(l) if l.lower == Some(uplink.index) => ShimState::Present(l.clone()),
        Some(l) => ShimState::Stale(l.clone()),
        None => ShimState::Missing,
    };

    let mut problems = Vec::new();
    let host = host_addresses(config, world);
    if config.host_addresses.is_none() && !host.iter().any(is_global) {
        problems.push(format!(
            "uplink {} has no global address; give the host's addresses in host_addresses",
            uplink.name
        ));
    }
    // What the uplink really has beyond the host's addresses (its
    // link-local address, when host_addresses leaves it out): the
    // kernel answers for them there, so no VM may own them either.
    let uplink_own: Vec<IpAddr> = world
        .uplink_addresses
        .iter()
        .filter(|a| !host.contains(a))
        .copied()
        .collect();
    let not_vms: Vec<IpAddr> = host.iter().chain(&uplink_own).copied().collect();

    let mut vms: Vec<VmPlan> = Vec::new();
    let mut create = Vec::new();
    for vm in &config.vms {
        let state = locate(vm, world, &uplink, &vms);
        if state == VmState::Absent && vm.create {
            create.push(vm.name.clone());
        }
        if let Some(a) = vm.addresses.iter().find(|a| host.contains(a)) {
            problems.push(format!(
                "{}: {a} is one of the host's addresses",
                vm.label()
            ));
        }
        if let Some(a) = vm.addresses.iter().find(|a| uplink_own.contains(a)) {
            problems.push(format!(
                "{}: {a} is an address of the uplink {} (one host_addresses leaves out)",
                vm.label(),
                uplink.name
            ));
        }
        vms.push(VmPlan {
            name: vm.name.clone(),
            addresses: owned(vm, &state, &not_vms, learnt),
            state,
            netns: vm.netns.clone(),
            learns: !vm.learn.is_empty(),
        });
    }

    let stale = world
        .links
        .iter()
        .filter(|l| is_our_vm_link(l) && l.lower == Some(uplink.index))
        .filter(|l| {
            let claimed = |v: &Vm| v.create && v.interface.as_deref() == Some(&l.name);
            !config.vms.iter().any(claimed)
        })
        .cloned()
        .collect();

    let vm_macs: BTreeSet<[u8; 6]> = vms
        .iter()
        .filter_map(|v| v.link()?.mac)
        .chain(config.vms.iter().filter_map(|v| v.mac.map(|m| m.0)))
        .collect();
    let mut wire: Vec<IpAddr> = world
        .wire
        .iter()
        .filter(|n| {
            n.mac
                .is_none_or(|m| m != uplink_mac && !vm_macs.contains(&m))
        })
        .map(|n| n.addr)
        .filter(|a| {
            !not_vms.contains(a) && !vms.iter().any(|v| v.addresses.iter().any(|o| o.addr == *a))
        })
        .collect();
    wire.extend(&uplink_own);
    wire.sort();
    wire.dedup();

    Ok(Plan {
        uplink,
        host,
        wire,
        shim,
        vms,
        create,
        stale,
        problems,
    })
}

fn is_global(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => !link_local::is_link_local(&v6.octets()),
    }
}

/// The addresses a VM owns: configured, learnt, and the link-local
/// address its link's MAC gives it; none of `host` (the host's and the
/// uplink's own addresses, which win).
fn owned(vm: &Vm, state: &VmState, host: &[IpAddr], learnt: &Learnt) -> Vec<Owned> {
    let mut out: Vec<Owned> = vm
        .addresses
        .iter()
        .filter(|a| !host.contains(a))
        .map(|a| Owned {
            addr: *a,
            origin: Origin::Config,
        })
        .collect();
    if let VmState::Live(link) = state {
        if let Some(mac) = link.mac {
            let ll = IpAddr::from(link_local::eui64(&mac));
            if !host.contains(&ll) && !out.iter().any(|o| o.addr == ll) {
                out.push(Owned {
                    addr: ll,
                    origin: Origin::Derived,
                });
            }
        }
        for a in learnt.of(&vm.name) {
            if !out.iter().any(|o| o.addr == *a) && !host.contains(a) {
                out.push(Owned {
                    addr: *a,
                    origin: Origin::Learnt,
                });
            }
        }
    }
    out
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

fn unfit(reason: String) -> VmState {
    VmState::Unfit { reason }
}

/// Finds VM `vm`'s link and says whether it fits. `earlier`: the VMs
/// planned so far (two VMs must not share a link).
fn locate(vm: &Vm, world: &World, uplink: &Link, earlier: &[VmPlan]) -> VmState {
    let what = || format!("{}: {}", vm.label(), vm.describe_link());
    let links = match &vm.netns {
        None => &world.links,
        Some(ns) => match world.namespaces.get(ns) {
            Some(Namespace::Seen { links, .. }) => links,
            Some(Namespace::Missing) | None => return VmState::Absent,
            Some(Namespace::Unreachable(why)) => {
                return VmState::Unfit {
                    reason: format!(
                        "[[vm]] {:?}: cannot look into netns {ns:?}: {}",
                        vm.name,
                        crate::errno::chain(why.as_ref())
                    ),
                };
            }
        },
    };
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
        return VmState::Absent;
    };
    // A link mvbridge is to create must not be someone else's.
    if vm.create && vm.netns.is_none() && !is_ours(link) {
        return unfit(format!(
            "[[vm]] {:?}: interface {:?} already exists and is not mvbridge's; set create = false to adopt it",
            vm.name, link.name
        ));
    }
    if !fits(vm, link.kind.as_deref()) {
        return unfit(format!(
            "{} is a {}, not a {}",
            what(),
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
        return unfit(format!("{} is not in bridge mode", what()));
    }
    if link.lower != Some(uplink.index) {
        return unfit(format!(
            "{} does not sit on the uplink {}",
            what(),
            uplink.name
        ));
    }
    match (link.mac, vm.mac) {
        (None, _) => return unfit(format!("{} has no MAC", what())),
        (Some(have), Some(want)) if have != want.0 => {
            return unfit(format!(
                "{} has MAC {} but the config says {want}",
                what(),
                MacAddr(have)
            ));
        }
        _ => {}
    }
    // The programs tell links apart by ifindex alone (they see no
    // namespace): a link in another namespace must not share one with a
    // link of the host's.
    if let Some(ns) = &vm.netns
        && let Some(h) = world.links.iter().find(|h| h.index == link.index)
    {
        return unfit(format!(
            "[[vm]] {:?}: {} in netns {ns:?} has ifindex {}, like the host's {}; mvbridge needs them distinct (move the link in again to get a new one)",
            vm.name, link.name, link.index, h.name
        ));
    }
    // Nor with another VM's, in whatever namespace: its hook would check
    // this VM's frames against that VM's addresses.
    if let Some(other) = earlier
        .iter()
        .find(|p| p.link().is_some_and(|l| l.index == link.index))
    {
        if other.netns == vm.netns {
            return unfit(format!(
                "[[vm]] {:?} and {:?} both resolve to {}",
                other.name, vm.name, link.name
            ));
        }
        return unfit(format!(
            "{} has ifindex {}, like the link of [[vm]] {:?}{}; mvbridge needs them distinct (make the link in the host's namespace and move it in: the host numbers it apart from all others)",
            what(),
            link.index,
            other.name,
            other
                .netns
                .as_ref()
                .map(|ns| format!(" in netns {ns:?}"))
                .unwrap_or_default()
        ));
    }
    VmState::Live(link.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::learning;
    use crate::kernel::netlink::Neighbour;
    use crate::kernel::netns::NetnsId;
    use std::collections::BTreeMap;

    const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

    fn link(index: u32, name: &str, kind: Option<&str>, mac: [u8; 6], lower: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(mac),
            kind: kind.map(str::to_owned),
            lower,
            macvlan_mode: Some(MacVlanMode::Bridge),
            alias: None,
            up: true,
            allmulti: false,
            ipv6: None,
        }
    }

    /// A container's bridge-mode macvlan on the uplink, the only link of
    /// namespace `ns` (seen as inode `ino`), named eth0 there.
    fn in_netns(w: &mut World, ns: &str, ino: u64, index: u32, last: u8) -> Link {
        let eth0 = link(
            index,
            "eth0",
            Some("macvlan"),
            [0x52, 0x54, 0, 0, 0, last],
            Some(2),
        );
        w.namespaces.insert(
            ns.into(),
            Namespace::Seen {
                id: NetnsId { dev: 4, ino },
                links: vec![eth0.clone()],
            },
        );
        eth0
    }

    fn macvtap(index: u32, name: &str, last: u8) -> Link {
        link(
            index,
            name,
            Some("macvtap"),
            [0x52, 0x54, 0, 0, 0, last],
            Some(2),
        )
    }

    fn world(mut extra: Vec<Link>) -> World {
        let mut links = vec![link(2, "enp9s0", None, UPLINK_MAC, None)];
        links.append(&mut extra);
        World {
            links,
            uplink_addresses: vec!["203.0.113.157".parse().unwrap(), "fe80::2".parse().unwrap()],
            wire: vec![
                Neighbour {
                    addr: "203.0.113.129".parse().unwrap(),
                    mac: None,
                },
                Neighbour {
                    addr: "fe80::1".parse().unwrap(),
                    mac: Some(GW_MAC),
                },
                // The host resolved VM a: not a neighbour on the wire.
                Neighbour {
                    addr: "203.0.113.161".parse().unwrap(),
                    mac: Some([0x52, 0x54, 0, 0, 0, 0xa1]),
                },
            ],
            namespaces: BTreeMap::new(),
        }
    }

    fn config(vms: &str) -> Config {
        Config::parse(&format!("uplink = \"enp9s0\"\n{vms}")).unwrap()
    }

    fn vm(name: &str, how: &str, addr: &str) -> String {
        format!("[[vm]]\nname = \"{name}\"\n{how}\naddresses = [\"{addr}\"]\n")
    }

    fn state(p: &Plan, name: &str) -> VmState {
        p.vm(name).unwrap().state.clone()
    }

    /// VM a on macvtap0, the only VM link: its config and its plan.
    fn one_macvtap() -> (Config, Plan) {
        let c = config(&vm("a", "interface = \"macvtap0\"", "203.0.113.161"));
        let p = plan(
            &c,
            &world(vec![macvtap(7, "macvtap0", 0xa1)]),
            &Learnt::default(),
        )
        .unwrap();
        (c, p)
    }

    #[test]
    fn a_fitting_macvtap_is_live_with_its_derived_link_local() {
        let (c, p) = one_macvtap();
        assert_eq!(state(&p, "a"), VmState::Live(macvtap(7, "macvtap0", 0xa1)));
        let addrs = &p.vm("a").unwrap().addresses;
        let ll: IpAddr = "fe80::5054:ff:fe00:a1".parse().unwrap();
        assert!(addrs.contains(&Owned {
            addr: ll,
            origin: Origin::Derived
        }));
        assert!(p.all_problems().is_empty(), "{:?}", p.all_problems());
        // The datapath runs the fixed hooks and this VM's, nothing else.
        let hook = p.vm("a").unwrap().hook().unwrap();
        assert_eq!(hook.at, LinkAt::Host("macvtap0".into()));
        let mut want = base_hooks(&c);
        assert!(!want.contains(&hook));
        want.insert(hook.clone());
        assert!(p.hooks(&c).contains(&hook));
        assert_eq!(p.hooks(&c), want);
    }

    #[test]
    fn the_wire_holds_routers_and_foreign_neighbours_only() {
        let (_, p) = one_macvtap();
        let want: Vec<IpAddr> = vec!["203.0.113.129".parse().unwrap(), "fe80::1".parse().unwrap()];
        assert_eq!(p.wire, want);
        assert_eq!(
            p.owner_of(&"fe80::1".parse().unwrap()).as_deref(),
            Some("a router or neighbour on the wire")
        );
    }

    #[test]
    fn the_uplinks_own_addresses_stay_out_of_vms_reach_when_host_addresses_omit_them() {
        // host_addresses lists the global address only; the uplink also
        // has fe80::2.
        let c = Config::parse(&format!(
            "uplink = \"enp9s0\"\nhost_addresses = [\"203.0.113.157\"]\n{}",
            vm("a", "interface = \"macvtap0\"", "203.0.113.161")
                + "learn = [\"203.0.113.160/28\"]\n"
        ))
        .unwrap();
        let w = world(vec![macvtap(7, "macvtap0", 0xa1)]);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        let uplink_ll: IpAddr = "fe80::2".parse().unwrap();
        assert!(!p.host.contains(&uplink_ll));
        assert!(p.wire.contains(&uplink_ll), "{:?}", p.wire);
        assert!(p.owner_of(&uplink_ll).is_some());
        // VM a using it as its source is not learnt.
        let claim = learning::vet(&c, &p, &Learnt::default(), "a", uplink_ll);
        assert!(
            matches!(claim, Err(learning::Refusal::Owned(_))),
            "{claim:?}"
        );

        // Nor may a VM be configured with it.
        let c = Config::parse(&format!(
            "uplink = \"enp9s0\"\nhost_addresses = [\"203.0.113.157\"]\n{}",
            vm("a", "interface = \"macvtap0\"", "fe80::2")
        ))
        .unwrap();
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert!(
            !p.vm("a")
                .unwrap()
                .addresses
                .iter()
                .any(|o| o.addr == uplink_ll)
        );
        assert!(p.wire.contains(&uplink_ll));
        assert!(
            p.all_problems()
                .iter()
                .any(|w| w.contains("fe80::2 is an address of the uplink enp9s0")),
            "{:?}",
            p.all_problems()
        );
    }

    #[test]
    fn links_that_do_not_fit_are_unfit_with_a_reason() {
        let cases: Vec<(String, Vec<Link>, &str)> = vec![
            (
                vm("a", "interface = \"veth0\"", "203.0.113.161"),
                vec![link(7, "veth0", Some("veth"), [2, 0, 0, 0, 0, 7], None)],
                "is a veth, not a macvtap",
            ),
            (
                vm(
                    "a",
                    "interface = \"macvtap0\"\nmac = \"52:54:00:00:00:aa\"",
                    "203.0.113.161",
                ),
                vec![macvtap(7, "macvtap0", 0xa1)],
                "but the config says 52:54:00:00:00:aa",
            ),
            (
                vm("a", "interface = \"macvtap0\"", "203.0.113.161"),
                vec![link(
                    7,
                    "macvtap0",
                    Some("macvtap"),
                    [2, 0, 0, 0, 0, 7],
                    Some(99),
                )],
                "does not sit on the uplink",
            ),
            (
                vm(
                    "a",
                    "interface = \"mvt\"\ncreate = true\nmac = \"52:54:00:00:00:a1\"",
                    "203.0.113.161",
                ),
                vec![macvtap(7, "mvt", 0xa1)],
                "is not mvbridge's; set create = false",
            ),
            (
                vm("a", "mac = \"52:54:00:00:00:a1\"", "203.0.113.161")
                    + &vm("b", "interface = \"macvtap0\"", "203.0.113.162"),
                vec![macvtap(7, "macvtap0", 0xa1)],
                "both resolve to macvtap0",
            ),
        ];
        for (vms, links, want) in cases {
            let p = plan(&config(&vms), &world(links), &Learnt::default()).unwrap();
            let unfit: Vec<&String> = p
                .vms
                .iter()
                .filter_map(|v| match &v.state {
                    VmState::Unfit { reason } => Some(reason),
                    _ => None,
                })
                .collect();
            assert!(
                unfit.iter().any(|w| w.contains(want)),
                "{want:?} not among {unfit:?}"
            );
            assert!(p.all_problems().iter().any(|w| w.contains(want)));
        }
    }

    #[test]
    fn netns_vms_are_looked_up_in_their_namespace_only() {
        let c = config(&vm(
            "x",
            "interface = \"eth0\"\nnetns = \"ctr1\"",
            "203.0.113.165",
        ));
        // A host link named eth0 is not the container's.
        let host_eth0 = link(9, "eth0", Some("veth"), [2, 0, 0, 0, 0, 9], None);
        let mut w = world(vec![host_eth0]);
        let theirs = in_netns(&mut w, "ctr1", 1, 30, 0xe5);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert_eq!(state(&p, "x"), VmState::Live(theirs.clone()));
        assert!(p.all_problems().is_empty(), "{:?}", p.all_problems());
        let hook = p.vm("x").unwrap().hook().unwrap();
        assert_eq!(hook.at, LinkAt::new(Some("ctr1"), "eth0"));

        assert_eq!(p.settled_namespaces(), BTreeSet::from(["ctr1".to_owned()]));

        // Its namespace not there (the container is stopped): absent.
        w.namespaces.insert("ctr1".into(), Namespace::Missing);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert_eq!(state(&p, "x"), VmState::Absent);
        assert!(p.settled_namespaces().is_empty());

        // Its ifindex colliding with a host link's: unfit, said so.
        in_netns(&mut w, "ctr1", 2, 9, 0xe5);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert!(
            matches!(state(&p, "x"), VmState::Unfit { reason } if reason.contains("has ifindex 9, like the host's eth0"))
        );
    }

    #[test]
    fn a_namespace_with_one_vm_waiting_is_not_settled() {
        let c = config(&format!(
            "{}{}{}",
            vm(
                "x",
                "interface = \"eth0\"\nnetns = \"ctr1\"",
                "203.0.113.165"
            ),
            vm(
                "y",
                "interface = \"eth1\"\nnetns = \"ctr1\"",
                "203.0.113.166"
            ),
            vm(
                "z",
                "interface = \"eth0\"\nnetns = \"ctr2\"",
                "203.0.113.167"
            ),
        ));
        let mut w = world(vec![]);
        in_netns(&mut w, "ctr1", 1, 30, 0xe5);
        in_netns(&mut w, "ctr2", 2, 31, 0xe6);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert_eq!(state(&p, "y"), VmState::Absent);
        assert_eq!(p.settled_namespaces(), BTreeSet::from(["ctr2".to_owned()]));
    }

    #[test]
    fn links_in_two_namespaces_with_one_ifindex_are_not_both_steered() {
        // Links made inside a namespace (as CNI plugins make them) are
        // numbered by that namespace: two containers can hold the same
        // ifindex, which the programs cannot tell apart.
        let c = config(&format!(
            "{}{}",
            vm(
                "x",
                "interface = \"eth0\"\nnetns = \"ctr1\"",
                "203.0.113.165"
            ),
            vm(
                "z",
                "interface = \"eth0\"\nnetns = \"ctr2\"",
                "203.0.113.167"
            ),
        ));
        let mut w = world(vec![]);
        in_netns(&mut w, "ctr1", 1, 40, 0xe5);
        in_netns(&mut w, "ctr2", 2, 40, 0xe7);
        let p = plan(&c, &w, &Learnt::default()).unwrap();
        assert!(matches!(state(&p, "x"), VmState::Live(_)));
        let VmState::Unfit { reason } = state(&p, "z") else {
            panic!("z steered with x's ifindex: {:?}", state(&p, "z"));
        };
        assert!(
            reason.contains("has ifindex 40, like the link of [[vm]] \"x\" in netns \"ctr1\""),
            "{reason}"
        );
        assert!(p.vm("z").unwrap().hook().is_none());
    }

    #[test]
    fn what_cannot_be_planned_at_all() {
        let c = config("");
        let mut w = world(vec![]);
        w.links.retain(|l| l.name != "enp9s0");
        let e = plan(&c, &w, &Learnt::default()).unwrap_err();
        assert!(e.to_string().contains("uplink \"enp9s0\" does not exist"));
        let w = world(vec![link(
            5,
            "mvb0",
            Some("dummy"),
            [2, 0, 0, 0, 0, 5],
            None,
        )]);
        let e = plan(&c, &w, &Learnt::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("already exists and is not mvbridge's; choose another [shim] name")
        );
    }

    #[test]
    fn creation_and_stale_links() {
        let c = config(&vm(
            "b",
            "interface = \"mvt-b\"\ncreate = true\nmac = \"52:54:00:00:00:b2\"",
            "203.0.113.162",
        ));
        let mut leftover = macvtap(8, "mvt-old", 0xb9);
        leftover.alias = Some("mvbridge:vm:old".into());
        let p = plan(&c, &world(vec![leftover.clone()]), &Learnt::default()).unwrap();
        assert_eq!(p.create, vec!["b".to_owned()]);
        assert_eq!(p.stale, vec![leftover]);
        assert_eq!(state(&p, "b"), VmState::Absent);
    }

    #[test]
    fn learnt_addresses_join_a_live_vm_and_the_host_wins() {
        let c = config(&vm("a", "interface = \"macvtap0\"", "203.0.113.161"));
        let mut learnt = Learnt::default();
        learnt.insert("a", "203.0.113.170".parse().unwrap());
        learnt.insert("a", "203.0.113.157".parse().unwrap());
        let p = plan(&c, &world(vec![macvtap(7, "macvtap0", 0xa1)]), &learnt).unwrap();
        let a = p.vm("a").unwrap();
        assert!(a.addresses.contains(&Owned {
            addr: "203.0.113.170".parse().unwrap(),
            origin: Origin::Learnt
        }));
        assert!(
            !a.addresses
                .iter()
                .any(|o| o.addr.to_string() == "203.0.113.157")
        );
        // Absent VMs own nothing learnt.
        let p = plan(&c, &world(vec![]), &learnt).unwrap();
        assert_eq!(p.vm("a").unwrap().addresses.len(), 1);
    }
}
