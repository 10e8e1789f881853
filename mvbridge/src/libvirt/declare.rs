//! From libvirt's domains to VMs the plan knows: each interface a
//! domain's metadata declares becomes a `Vm` matched by MAC, carrying its
//! origin. Pure, so the daemon, `status` and `check` reach the same
//! verdict on every domain.
//!
//! What cannot be steered is left out with a warning naming the domain
//! and the field, and only that VM: metadata that does not parse (the
//! domain's VMs), an interface that is no bridge-mode macvtap on the
//! uplink, an address the host or another VM owns, a MAC or macvtap of a
//! `[[vm]]`. `[[vm]]` sections win every conflict. Between two domains,
//! a running one wins over a stopped one (a stopped domain holds nothing
//! against a VM that runs), then the VM that was steered already, then
//! the domain whose name sorts first.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::{Config, MacAddr, Vm, VmOrigin};

use super::domain::{Domain, Metadata};

/// The VMs libvirt declares, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declaration {
    pub vms: Vec<Vm>,
    /// One per VM or domain left out: the domain, the field, why.
    pub warnings: Vec<String>,
    /// Domains with a macvtap on the uplink but no mvbridge metadata:
    /// not steered, said in `check`.
    pub undeclared: Vec<String>,
}

impl Declaration {
    /// `config` with these VMs after its own.
    pub fn merged_into(&self, config: &Config) -> Config {
        let mut c = config.clone();
        c.vms.extend(self.vms.iter().cloned());
        c
    }
}

/// A VM a domain declares, before conflicts are settled.
struct Candidate {
    vm: Vm,
    active: bool,
    /// Its macvtap's name while the domain runs.
    target: Option<String>,
}

/// The name of the VM for the `index`th interface a domain declares: the
/// domain's own name for the first (the usual single NIC), with the MAC
/// for the others. It stays put when NICs are hot-plugged, so a VM's
/// counters and entries are not renamed under it.
pub fn vm_name(domain: &str, index: usize, mac: MacAddr) -> String {
    if index == 0 {
        domain.to_owned()
    } else {
        format!("{domain}/{mac}")
    }
}

/// The VMs `domains` declare, given the config (which wins) and the
/// host's addresses. `incumbents`: the names of the libvirt VMs steered
/// so far, which keep what they have.
pub fn declare(
    config: &Config,
    host: &[IpAddr],
    domains: &[Domain],
    incumbents: &BTreeSet<String>,
) -> Declaration {
    let mut out = Declaration::default();
    let mut candidates = Vec::new();
    let mut sorted: Vec<&Domain> = domains.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for d in sorted {
        let domain = format!("libvirt domain {:?}", d.name);
        let declared = match &d.metadata {
            Metadata::Absent => {
                if d.nics.iter().any(|n| {
                    n.kind == "direct" && n.source.as_deref() == Some(config.uplink.as_str())
                }) {
                    out.undeclared.push(d.name.clone());
                }
                continue;
            }
            Metadata::Invalid(why) => {
                out.warnings.push(format!(
                    "{domain}: mvbridge metadata: {why}; its VMs are left out"
                ));
                continue;
            }
            Metadata::Declared(declared) => declared,
        };
        for (i, decl) in declared.iter().enumerate() {
            let vm = Vm {
                name: vm_name(&d.name, i, decl.mac),
                interface: None,
                create: false,
                mac: Some(decl.mac),
                addresses: decl.addresses.clone(),
                learn: decl.learn.clone(),
                netns: None,
                origin: VmOrigin::Libvirt {
                    domain: d.name.clone(),
                    uuid: d.uuid.clone(),
                },
            };
            let at = format!("{domain} interface {}", decl.mac);
            // No such NIC (yet): declared ahead of a hot-plug, absent
            // until it comes.
            let nic = d.nic(decl.mac);
            let unfit = nic.and_then(|n| {
                if n.kind != "direct" {
                    Some(format!(
                        "{at}: type {:?}, not a direct (macvtap) interface",
                        n.kind
                    ))
                } else if n.source.as_deref() != Some(config.uplink.as_str()) {
                    Some(format!(
                        "{at}: source dev {:?} is not the uplink {:?}",
                        n.source.as_deref().unwrap_or(""),
                        config.uplink
                    ))
                } else if n.mode.as_deref() != Some("bridge") {
                    Some(format!(
                        "{at}: source mode {:?} (mvbridge needs mode='bridge')",
                        n.mode.as_deref().unwrap_or("vepa")
                    ))
                } else {
                    None
                }
            });
            if let Some(why) = unfit {
                out.warnings.push(format!("{why}; VM left out"));
                continue;
            }
            candidates.push(Candidate {
                vm,
                active: d.active,
                target: nic.and_then(|n| n.target.clone()),
            });
        }
    }

    // Who holds what so far: the host, then the config's VMs.
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for a in host {
        owners.insert(*a, "the host's".into());
    }
    let mut macs: HashMap<MacAddr, String> = HashMap::new();
    if let Some(m) = config.shim.mac {
        macs.insert(m, "the shim's".into());
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for vm in &config.vms {
        let whose = format!("{}'s", vm.label());
        for a in &vm.addresses {
            owners.entry(*a).or_insert_with(|| whose.clone());
        }
        if let Some(m) = vm.mac {
            macs.insert(m, whose.clone());
        }
        if let (Some(i), None) = (&vm.interface, &vm.netns) {
            links.insert(i.clone(), whose.clone());
        }
        names.insert(vm.name.clone(), whose);
    }

    // Running domains first, then what was steered already; the sort is
    // stable, so domain names (then metadata order) settle the rest.
    candidates.sort_by_key(|c| (!c.active, !incumbents.contains(&c.vm.name)));
    for c in candidates {
        let at = c.vm.label();
        let mac = c.vm.mac.expect("libvirt VMs have a MAC");
        let conflict = if let Some(whose) = names.get(&c.vm.name) {
            Some(format!("name {:?} is also {whose}", c.vm.name))
        } else if let Some(whose) = macs.get(&mac) {
            Some(format!("mac {mac} is also {whose}"))
        } else if let Some((t, whose)) = c.target.as_ref().and_then(|t| Some((t, links.get(t)?))) {
            Some(format!("target dev {t} is also {whose}"))
        } else {
            c.vm.addresses
                .iter()
                .find_map(|a| Some(format!("address {a} is {}", owners.get(a)?)))
        };
        if let Some(why) = conflict {
            let wins = if why.contains("[[vm]]") {
                "the [[vm]] section wins, "
            } else {
                ""
            };
            out.warnings.push(format!("{at}: {why}; {wins}VM left out"));
            continue;
        }
        let whose = format!("{at}'s");
        for a in &c.vm.addresses {
            owners.insert(*a, whose.clone());
        }
        macs.insert(mac, whose.clone());
        if let Some(t) = &c.target {
            links.insert(t.clone(), whose.clone());
        }
        names.insert(c.vm.name.clone(), whose);
        out.vms.push(c.vm);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::domain::{Declared, MetadataError, Nic};

    const UPLINK: &str = "enp9s0";

    fn config(extra: &str) -> Config {
        Config::parse(&format!("uplink = \"{UPLINK}\"\n{extra}")).unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0xaa, 0, last])
    }

    fn nic(last: u8, target: Option<&str>) -> Nic {
        Nic {
            mac: mac(last),
            kind: "direct".into(),
            source: Some(UPLINK.into()),
            mode: Some("bridge".into()),
            target: target.map(str::to_owned),
        }
    }

    fn declared(last: u8, addresses: &[&str]) -> Declared {
        Declared {
            mac: mac(last),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            learn: vec![],
        }
    }

    fn domain(name: &str, active: bool, nics: Vec<Nic>, decl: Vec<Declared>) -> Domain {
        Domain {
            name: name.into(),
            uuid: format!("uuid-{name}"),
            active,
            nics,
            metadata: Metadata::Declared(decl),
        }
    }

    fn names(d: &Declaration) -> Vec<&str> {
        d.vms.iter().map(|v| v.name.as_str()).collect()
    }

    fn one_warning(d: &Declaration, want: &[&str]) {
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        for w in want {
            assert!(d.warnings[0].contains(w), "{:?} lacks {w:?}", d.warnings[0]);
        }
    }

    #[test]
    fn each_declared_interface_is_a_vm_matched_by_mac() {
        let d = domain(
            "vm1",
            true,
            vec![nic(1, Some("macvtap0")), nic(2, Some("macvtap1"))],
            vec![
                declared(1, &["203.0.113.171"]),
                declared(2, &["203.0.113.172"]),
            ],
        );
        let out = declare(&config(""), &[], &[d], &BTreeSet::new());
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(names(&out), ["vm1", "vm1/52:54:00:aa:00:02"]);
        let vm = &out.vms[0];
        assert_eq!((vm.interface.as_ref(), vm.mac), (None, Some(mac(1))));
        assert!(!vm.create && vm.netns.is_none());
        assert_eq!(
            vm.origin,
            VmOrigin::Libvirt {
                domain: "vm1".into(),
                uuid: "uuid-vm1".into()
            }
        );
        assert_eq!(
            out.vms[1].label(),
            "libvirt domain \"vm1\" interface 52:54:00:aa:00:02"
        );
        // Merged after the config's own.
        let merged = out.merged_into(&config(
            "[[vm]]\nname = \"a\"\nmac = \"52:54:00:00:00:a1\"\naddresses = [\"203.0.113.161\"]\n",
        ));
        let all: Vec<&str> = merged.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(all, ["a", "vm1", "vm1/52:54:00:aa:00:02"]);
    }

    #[test]
    fn stopped_domains_and_interfaces_not_plugged_yet_are_declared() {
        let stopped = domain(
            "off",
            false,
            vec![nic(3, None)],
            vec![declared(3, &["203.0.113.173"])],
        );
        let ahead = domain("ahead", true, vec![], vec![declared(4, &["203.0.113.174"])]);
        let out = declare(&config(""), &[], &[stopped, ahead], &BTreeSet::new());
        assert_eq!(names(&out), ["ahead", "off"]);
    }

    #[test]
    fn interfaces_that_cannot_be_steered_are_left_out_with_the_field() {
        let mut other = nic(1, Some("macvtap0"));
        other.source = Some("eth1".into());
        let mut vepa = nic(2, Some("macvtap1"));
        vepa.mode = None;
        let mut network = nic(3, Some("vnet0"));
        network.kind = "network".into();
        let cases = [
            (other, "source dev \"eth1\" is not the uplink \"enp9s0\""),
            (vepa, "source mode \"vepa\" (mvbridge needs mode='bridge')"),
            (
                network,
                "type \"network\", not a direct (macvtap) interface",
            ),
        ];
        for (n, want) in cases {
            let last = n.mac.0[5];
            let bad = domain("bad", true, vec![n], vec![declared(last, &["203.0.113.9"])]);
            let good = domain(
                "good",
                true,
                vec![nic(9, None)],
                vec![declared(9, &["203.0.113.10"])],
            );
            let out = declare(&config(""), &[], &[bad, good], &BTreeSet::new());
            assert_eq!(names(&out), ["good"]);
            one_warning(
                &out,
                &["libvirt domain \"bad\" interface", want, "VM left out"],
            );
        }
    }

    #[test]
    fn metadata_that_does_not_parse_leaves_the_domain_out() {
        let mut bad = domain("bad", true, vec![nic(1, None)], vec![]);
        bad.metadata = Metadata::Invalid(MetadataError::NoMac {
            at: "interface 1".into(),
        });
        let mut plain = domain("plain", true, vec![nic(2, Some("macvtap3"))], vec![]);
        plain.metadata = Metadata::Absent;
        let good = domain(
            "good",
            true,
            vec![nic(9, None)],
            vec![declared(9, &["203.0.113.10"])],
        );
        let out = declare(&config(""), &[], &[bad, plain, good], &BTreeSet::new());
        assert_eq!(names(&out), ["good"]);
        one_warning(
            &out,
            &[
                "libvirt domain \"bad\": mvbridge metadata: interface 1 has no mac attribute",
                "its VMs are left out",
            ],
        );
        assert_eq!(out.undeclared, ["plain"]);
    }

    #[test]
    fn the_config_wins_every_conflict() {
        let section = "[[vm]]\nname = \"a\"\ninterface = \"macvtap5\"\nmac = \"52:54:00:00:00:a1\"\naddresses = [\"203.0.113.161\"]\n";
        let cases: Vec<(Domain, &str)> = vec![
            (
                domain(
                    "x",
                    true,
                    vec![nic(1, None)],
                    vec![declared(1, &["203.0.113.161"])],
                ),
                "address 203.0.113.161 is [[vm]] \"a\"'s; the [[vm]] section wins",
            ),
            (
                {
                    let mut n = nic(1, None);
                    n.mac = MacAddr([0x52, 0x54, 0, 0, 0, 0xa1]);
                    let mut d = declared(1, &["203.0.113.9"]);
                    d.mac = n.mac;
                    domain("x", true, vec![n], vec![d])
                },
                "mac 52:54:00:00:00:a1 is also [[vm]] \"a\"'s",
            ),
            (
                domain(
                    "x",
                    true,
                    vec![nic(1, Some("macvtap5"))],
                    vec![declared(1, &["203.0.113.9"])],
                ),
                "target dev macvtap5 is also [[vm]] \"a\"'s",
            ),
            (
                domain(
                    "a",
                    true,
                    vec![nic(1, None)],
                    vec![declared(1, &["203.0.113.9"])],
                ),
                "name \"a\" is also [[vm]] \"a\"'s",
            ),
        ];
        for (d, want) in cases {
            let out = declare(&config(section), &[], &[d], &BTreeSet::new());
            assert!(out.vms.is_empty(), "{:?}", out.vms);
            one_warning(&out, &["libvirt domain", want, "VM left out"]);
        }
    }

    #[test]
    fn the_host_keeps_its_addresses() {
        let d = domain(
            "x",
            true,
            vec![nic(1, None)],
            vec![declared(1, &["203.0.113.157"])],
        );
        let host: Vec<IpAddr> = vec!["203.0.113.157".parse().unwrap()];
        let out = declare(&config(""), &host, &[d], &BTreeSet::new());
        assert!(out.vms.is_empty());
        one_warning(
            &out,
            &[
                "libvirt domain \"x\" interface 52:54:00:aa:00:01: address 203.0.113.157 is the host's; VM left out",
            ],
        );
    }

    #[test]
    fn between_domains_the_running_then_the_steered_vm_wins() {
        let first = || {
            domain(
                "a-first",
                false,
                vec![nic(1, None)],
                vec![declared(1, &["203.0.113.9"])],
            )
        };
        let second = || {
            domain(
                "b-second",
                true,
                vec![nic(2, None)],
                vec![declared(2, &["203.0.113.9"])],
            )
        };
        // The running one wins over a stopped one that sorts first.
        let out = declare(&config(""), &[], &[first(), second()], &BTreeSet::new());
        assert_eq!(names(&out), ["b-second"]);
        one_warning(
            &out,
            &[
                "libvirt domain \"a-first\" interface 52:54:00:aa:00:01: address 203.0.113.9 is libvirt domain \"b-second\" interface 52:54:00:aa:00:02's; VM left out",
            ],
        );
        // ... even when the stopped one was steered before (its metadata
        // was broken for a while, say).
        let a_steered = BTreeSet::from(["a-first".to_owned()]);
        let out = declare(&config(""), &[], &[first(), second()], &a_steered);
        assert_eq!(names(&out), ["b-second"]);
        // Two running ones: the name that sorts first ...
        let mut a = first();
        a.active = true;
        let out = declare(&config(""), &[], &[second(), a.clone()], &BTreeSet::new());
        assert_eq!(names(&out), ["a-first"]);
        // ... unless the other one was steered already: it keeps them.
        let b_steered = BTreeSet::from(["b-second".to_owned()]);
        let out = declare(&config(""), &[], &[second(), a], &b_steered);
        assert_eq!(names(&out), ["b-second"]);
        // Two domains with one MAC.
        let mut twin = second();
        twin.nics[0].mac = mac(1);
        twin.metadata = Metadata::Declared(vec![declared(1, &["203.0.113.10"])]);
        let out = declare(&config(""), &[], &[first(), twin], &BTreeSet::new());
        assert_eq!(out.vms.len(), 1);
        assert!(
            out.warnings[0].contains("mac 52:54:00:aa:00:01 is also"),
            "{:?}",
            out.warnings
        );
    }
}
