//! Addresses VMs come to own from their own traffic: link-local ones
//! first come (any VM), global ones within the prefixes a VM may learn.
//! The programs report what they saw; the policy here decides.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mvbridge_common::link_local;
use mvbridge_common::maps::ENDPOINT_VM;

use crate::config::{Config, Prefix};
use crate::control::plan::Plan;
use crate::datapath::maps::{PinnedMaps, name_key};

/// At most this many learnt global addresses per VM: a VM cycling through
/// addresses cannot fill the tables.
pub const MAX_LEARNT_PER_VM: usize = 64;
/// At most this many learnt link-local addresses per VM (a stack has one
/// per link; a few more allow for a changed stable-privacy secret).
pub const MAX_LINK_LOCAL_PER_VM: usize = 8;

/// What VMs learnt, by VM name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    by_vm: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Learnt {
    pub fn of(&self, vm: &str) -> impl Iterator<Item = &IpAddr> {
        self.by_vm.get(vm).into_iter().flatten()
    }

    pub fn insert(&mut self, vm: &str, addr: IpAddr) {
        self.by_vm.entry(vm.to_owned()).or_default().insert(addr);
    }

    /// Forgets the VMs `keep` does not name (their link went).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_vm.retain(|name, _| keep(name));
    }

    fn count(&self, vm: &str, link_local: bool) -> usize {
        self.of(vm)
            .filter(|a| is_link_local(a) == link_local)
            .count()
    }

    /// What the tables hold that VMs learnt (an adopted datapath keeps
    /// what the previous daemon learnt; `status` shows it): a VM's entries,
    /// by its counter slot, that its config does not list and that are not
    /// the link-local address of one of its MACs, which plans derive.
    pub fn recover(config: &Config, maps: &PinnedMaps) -> Learnt {
        // Each table read once (a read per VM made a restart at 1,000 VMs
        // spend 1.5 s here), then grouped by counter slot.
        let slots = maps.slots();
        let mut macs: HashMap<u32, Vec<[u8; 6]>> = HashMap::new();
        for (mac, ep) in maps.macs() {
            macs.entry(ep.vm).or_default().push(mac);
        }
        let mut owned: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        for (addr, ep) in maps.entries() {
            if ep.kind == ENDPOINT_VM {
                owned.entry(ep.vm).or_default().push(addr);
            }
        }
        let mut learnt = Learnt::default();
        for vm in &config.vms {
            let Some(slot) = slots.get(&name_key(&vm.name)) else {
                continue;
            };
            let derived: Vec<IpAddr> = macs
                .get(slot)
                .into_iter()
                .flatten()
                .map(|m| IpAddr::from(link_local::eui64(m)))
                .collect();
            for addr in owned.get(slot).into_iter().flatten() {
                if !vm.addresses.contains(addr) && !derived.contains(addr) {
                    learnt.insert(&vm.name, *addr);
                }
            }
        }
        learnt
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if link_local::is_link_local(&v6.octets()))
}

/// Why an address was not learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSuchVm,
    OutsidePrefixes(Vec<Prefix>),
    /// The network or broadcast address of a prefix it may learn in.
    PrefixEdge(Prefix),
    Owned(String),
    TooMany(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoSuchVm => write!(f, "the VM is no longer configured"),
            Refusal::OutsidePrefixes(p) => {
                let list: Vec<String> = p.iter().map(Prefix::to_string).collect();
                write!(f, "outside the prefixes it may learn ({})", list.join(", "))
            }
            Refusal::PrefixEdge(p) => write!(f, "the network or broadcast address of {p}"),
            Refusal::Owned(by) => write!(f, "{by} owns it"),
            Refusal::TooMany(n) => write!(f, "it already learnt {n} such addresses"),
        }
    }
}

/// May VM `vm` come to own `addr`? Nobody else may own it (the host, a
/// neighbour on the wire, another VM, learnt or configured); a global
/// address must lie inside one of the VM's prefixes and not at its edge.
pub fn vet(
    config: &Config,
    plan: &Plan,
    learnt: &Learnt,
    vm: &str,
    addr: IpAddr,
) -> Result<(), Refusal> {
    let Some(cfg) = config.vms.iter().find(|v| v.name == vm) else {
        return Err(Refusal::NoSuchVm);
    };
    if let Some(by) = plan.owner_of(&addr) {
        return Err(Refusal::Owned(by));
    }
    let link_local = is_link_local(&addr);
    if !link_local {
        let Some(prefix) = cfg.learn.iter().find(|p| p.contains(&addr)) else {
            return Err(Refusal::OutsidePrefixes(cfg.learn.clone()));
        };
        if at_edge(prefix, &addr) {
            return Err(Refusal::PrefixEdge(*prefix));
        }
    }
    let max = if link_local {
        MAX_LINK_LOCAL_PER_VM
    } else {
        MAX_LEARNT_PER_VM
    };
    if learnt.count(vm, link_local) >= max {
        return Err(Refusal::TooMany(max));
    }
    Ok(())
}

/// The all-zeros host part (IPv4's network address, IPv6's subnet-router
/// anycast address) and IPv4's all-ones broadcast address, for prefixes
/// that have them.
fn at_edge(p: &Prefix, addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) if p.len <= 30 => {
            let host = u32::MAX >> p.len;
            let bits = u32::from(*a) & host;
            bits == 0 || bits == host
        }
        IpAddr::V6(a) if p.len <= 126 => u128::from(*a) & (u128::MAX >> p.len) == 0,
        _ => false,
    }
}

/// Which refusals to log: each (VM, address) once, at most
/// [`RefusalLog::PER_VM_PER_WINDOW`] per VM per window, and how many were
/// kept quiet. A VM sending from random sources must grow neither the
/// daemon's memory nor its log.
#[derive(Debug)]
pub struct RefusalLog {
    seen: BTreeSet<(String, IpAddr)>,
    order: VecDeque<(String, IpAddr)>,
    window_start: Instant,
    /// Per VM in this window: lines logged, refusals kept quiet.
    window: BTreeMap<String, (u32, u64)>,
}

/// What to do with one refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Log this refusal.
    pub log: bool,
    /// Refusals kept quiet per VM in the window that just ended, to be
    /// summed up in the log.
    pub quiet: Vec<(String, u64)>,
}

impl RefusalLog {
    /// (VM, address) pairs remembered as logged.
    pub const CAPACITY: usize = 1024;
    pub const PER_VM_PER_WINDOW: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);

    pub fn new(now: Instant) -> RefusalLog {
        RefusalLog {
            seen: BTreeSet::new(),
            order: VecDeque::new(),
            window_start: now,
            window: BTreeMap::new(),
        }
    }

    pub fn note(&mut self, vm: &str, addr: IpAddr, now: Instant) -> Verdict {
        let mut quiet = Vec::new();
        if now.duration_since(self.window_start) >= Self::WINDOW {
            quiet = std::mem::take(&mut self.window)
                .into_iter()
                .filter(|(_, (_, q))| *q > 0)
                .map(|(vm, (_, q))| (vm, q))
                .collect();
            self.window_start = now;
        }
        let key = (vm.to_owned(), addr);
        if self.seen.contains(&key) {
            return Verdict { log: false, quiet };
        }
        let (logged, kept) = self.window.entry(vm.to_owned()).or_default();
        if *logged >= Self::PER_VM_PER_WINDOW {
            *kept += 1;
            return Verdict { log: false, quiet };
        }
        *logged += 1;
        if self.order.len() == Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        Verdict { log: true, quiet }
    }

    pub fn remembered(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::plan::{Origin, Owned, ShimState, VmPlan, VmState};
    use crate::kernel::netlink::Link;

    fn config() -> Config {
        Config::parse(
            "uplink = \"enp9s0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.161\"]\nlearn = [\"203.0.113.160/28\", \"2001:db8:0:1::/64\"]\n[[vm]]\nname = \"b\"\ninterface = \"t1\"\naddresses = [\"203.0.113.162\"]\n",
        )
        .unwrap()
    }

    fn plan() -> Plan {
        let link = Link {
            index: 2,
            name: "enp9s0".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            kind: None,
            lower: None,
            macvlan_mode: None,
            alias: None,
            up: true,
            allmulti: false,
            ipv6: None,
        };
        let owned = |a: &str| Owned {
            addr: a.parse().unwrap(),
            origin: Origin::Config,
        };
        Plan {
            uplink: link,
            host: vec!["203.0.113.157".parse().unwrap()],
            wire: vec!["fe80::1".parse().unwrap(), "203.0.113.174".parse().unwrap()],
            shim: ShimState::Missing,
            vms: vec![
                VmPlan {
                    name: "a".into(),
                    state: VmState::Absent,
                    netns: None,
                    addresses: vec![owned("203.0.113.161")],
                    learns: true,
                },
                VmPlan {
                    name: "b".into(),
                    state: VmState::Absent,
                    netns: None,
                    addresses: vec![owned("203.0.113.162"), owned("fe80::b")],
                    learns: false,
                },
            ],
            create: vec![],
            stale: vec![],
            problems: vec![],
        }
    }

    fn vet_a(addr: &str, learnt: &Learnt) -> Result<(), Refusal> {
        vet(&config(), &plan(), learnt, "a", addr.parse().unwrap())
    }

    #[test]
    fn who_may_learn_what() {
        let none = Learnt::default();
        assert_eq!(vet_a("203.0.113.170", &none), Ok(()));
        assert_eq!(vet_a("2001:db8:0:1::5", &none), Ok(()));
        assert_eq!(vet_a("fe80::1234", &none), Ok(()), "link-local: first come");
        for (addr, why) in [
            ("203.0.113.157", "the host owns it"),
            ("203.0.113.174", "a router or neighbour on the wire owns it"),
            ("fe80::1", "a router or neighbour on the wire owns it"),
            ("203.0.113.162", "VM \"b\" owns it"),
            ("fe80::b", "VM \"b\" owns it"),
            ("198.51.100.7", "outside the prefixes"),
            (
                "203.0.113.160",
                "network or broadcast address of 203.0.113.160/28",
            ),
            (
                "203.0.113.175",
                "network or broadcast address of 203.0.113.160/28",
            ),
            (
                "2001:db8:0:1::",
                "network or broadcast address of 2001:db8:0:1::/64",
            ),
        ] {
            let got = vet_a(addr, &none).unwrap_err().to_string();
            assert!(got.contains(why), "{addr}: {got:?} lacks {why:?}");
        }
        let got = vet(&config(), &plan(), &none, "zz", "fe80::9".parse().unwrap());
        assert_eq!(got, Err(Refusal::NoSuchVm));
    }

    #[test]
    fn learning_is_bounded_per_vm() {
        let mut learnt = Learnt::default();
        for i in 0..MAX_LINK_LOCAL_PER_VM {
            learnt.insert("a", format!("fe80::{:x}", i + 0x100).parse().unwrap());
        }
        assert_eq!(
            vet_a("fe80::9999", &learnt),
            Err(Refusal::TooMany(MAX_LINK_LOCAL_PER_VM))
        );
        assert_eq!(vet_a("203.0.113.170", &learnt), Ok(()), "counted apart");
    }

    #[test]
    fn refusals_are_logged_boundedly() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(log.note("a", a, t0).log);
        assert!(!log.note("a", a, t0).log, "once per address");
        let mut logged = 1;
        for i in 0..5000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            logged += u32::from(log.note("a", addr, t0).log);
        }
        assert_eq!(logged, RefusalLog::PER_VM_PER_WINDOW, "per VM per window");
        assert!(log.note("b", a, t0).log, "another VM has its own budget");
        assert!(log.remembered() <= RefusalLog::CAPACITY);
        // The next window says how many were kept quiet, and logs again.
        let later = t0 + RefusalLog::WINDOW;
        let v = log.note("a", "10.9.9.9".parse().unwrap(), later);
        assert_eq!(v.quiet, vec![("a".to_owned(), 5000 - 9)]);
        assert!(v.log, "a new window logs again");
        for i in 0..(RefusalLog::CAPACITY as u32 * 3) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            log.note(&format!("vm{i}"), addr, later);
        }
        assert_eq!(log.remembered(), RefusalLog::CAPACITY, "memory is bounded");
    }
}
