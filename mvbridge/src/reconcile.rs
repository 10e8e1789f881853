//! The one reconcile loop: it owns the kernel state. Each pass reads what
//! netlink reports, derives what the config wants from it, and changes
//! only what differs: links (the shim, macvtaps mvbridge creates), the
//! tables, and the hooks. Passes are idempotent; a pass that finds nothing
//! to do changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use mvbridge_common::maps::{LearnEvent, MAP_LOCAL4};

use crate::bpffs::{self, PinDir};
use crate::config::{Config, Vm};
use crate::datapath::{self, Datapath, Role};
use crate::desired::{Desired, VmEntry};
use crate::netlink::{Link, Netlink};
use crate::observe::{self, VmLinkState};
use crate::tables::Tables;
use crate::teardown;

/// At most this many learnt addresses per VM: a VM cycling through
/// addresses cannot fill the tables.
pub const MAX_LEARNT_PER_VM: usize = 64;

/// How strict a pass is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Start-up: any problem is an error (set-up is all or nothing).
    Strict,
    /// Running: problems are reported and the rest goes on; only links
    /// that changed are checked for their hook.
    Event,
    /// Running, periodic: every hook is checked in the kernel, to catch
    /// changes that send no netlink event (a program detached by hand).
    Full,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changed_entries: usize,
    pub attached: Vec<String>,
    pub created: Vec<String>,
    pub problems: Vec<String>,
}

pub struct Reconciler {
    config: Config,
    nl: Netlink,
    pins: PinDir,
    datapath: Datapath,
    tables: Tables,
    prog_ids: HashMap<Role, u32>,
    /// Hooks known to be attached: ifname -> (role, ifindex).
    hooked: HashMap<String, (Role, u32)>,
    /// Addresses learnt from each VM's traffic, by VM name.
    learnt: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The VM behind each present macvtap, by ifindex.
    vm_by_ifindex: HashMap<u32, String>,
    host_addresses: Vec<IpAddr>,
    /// Problems already logged, so a pass repeats none of them.
    reported: HashSet<String>,
    /// rtnetlink connections into the namespaces of bridged VMs.
    netns_links: HashMap<String, Netlink>,
}

impl Reconciler {
    /// Loads (or adopts) the datapath and runs a strict first pass. On a
    /// fresh start a failure removes everything again; an adopted datapath
    /// is left running as it was.
    pub async fn start(config: Config, nl: Netlink) -> Result<Reconciler> {
        let pins = PinDir::new(&config.bpffs);
        let prepared = bpffs::ensure(&pins.dir)
            .with_context(|| format!("preparing bpffs at {}", pins.dir.display()))?;
        let fresh = !pins.map(MAP_LOCAL4).exists();
        let started = Reconciler::load(config.clone(), nl.clone(), pins).await;
        match started {
            Ok(r) => Ok(r),
            Err(e) if fresh => {
                if let Err(undo) = teardown::remove(&config, &nl).await {
                    tracing::error!("rolling back a failed set-up left something behind: {undo:#}");
                }
                bpffs::undo(&prepared);
                Err(e)
            }
            Err(e) => Err(e.context(
                "the datapath of the earlier run is left as it was (it keeps forwarding)",
            )),
        }
    }

    async fn load(config: Config, nl: Netlink, pins: PinDir) -> Result<Reconciler> {
        let mut datapath = Datapath::load(&pins, config.ebpf_log)?;
        let adopted = datapath.adopt_hooks(&pins);
        if datapath.adopted {
            tracing::info!(hooks = ?adopted, "adopted the pinned datapath; programs replaced in place");
        }
        Tables::create_slots(&pins).map_err(anyhow::Error::msg)?;
        let tables = Tables::open(&pins).map_err(anyhow::Error::msg)?;
        let mut prog_ids = HashMap::new();
        for role in Role::ALL {
            let id = datapath
                .program_id(role)
                .with_context(|| format!("reading the id of {}", role.program()))?;
            prog_ids.insert(role, id);
        }
        // An adopted datapath still holds what the previous daemon learnt:
        // take it back, or the first pass would forget it.
        let learnt = recover_learnt(&config, &tables);
        let mut r = Reconciler {
            config,
            nl,
            pins,
            datapath,
            tables,
            prog_ids,
            hooked: HashMap::new(),
            learnt,
            vm_by_ifindex: HashMap::new(),
            host_addresses: Vec::new(),
            reported: HashSet::new(),
            netns_links: HashMap::new(),
        };
        r.reconcile(Pass::Strict).await?;
        Ok(r)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// The VMs whose macvtap is present, with their links' ifindex.
    pub fn present_vms(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .vm_by_ifindex
            .iter()
            .map(|(i, n)| (n.clone(), *i))
            .collect();
        v.sort();
        v
    }

    /// One pass. See [`Pass`] for how strict it is.
    pub async fn reconcile(&mut self, pass: Pass) -> Result<Outcome> {
        let mut out = Outcome::default();
        let strict = pass == Pass::Strict;
        let links = self.nl.links().await?;
        let Some(uplink) = links.iter().find(|l| l.name == self.config.uplink).cloned() else {
            let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            names.sort();
            bail!(
                "uplink {:?} does not exist (links here: {})",
                self.config.uplink,
                names.join(", ")
            );
        };
        if uplink.mac.is_none() {
            bail!(
                "uplink {} has no Ethernet address; mvbridge needs an Ethernet NIC",
                uplink.name
            );
        }

        // Everything that can be refused is checked before anything is
        // created: set-up is all or nothing.
        if let Some(conflict) = observe::shim_conflict(&self.config, &links) {
            bail!(conflict);
        }
        let mut vm_states: Vec<(Vm, VmLinkState)> = Vec::new();
        let vms = self.config.vms.clone();
        for vm in &vms {
            // A link mvbridge is to create must not be someone else's.
            let taken = links.iter().find(|l| {
                vm.create && Some(&l.name) == vm.interface.as_ref() && !observe::is_ours(l)
            });
            let state = match taken {
                Some(l) => VmLinkState::Unfit(format!(
                    "[[vm]] {:?}: interface {:?} already exists and is not mvbridge's; set create = false to adopt it",
                    vm.name, l.name
                )),
                None => match &vm.netns {
                    None => observe::vm_link(vm, &links, &uplink),
                    Some(ns) => match self.links_in(ns).await {
                        Ok(theirs) => match observe::vm_link(vm, &theirs, &uplink) {
                            VmLinkState::Present(l) => observe::unique_ifindex(vm, l, &links),
                            other => other,
                        },
                        Err(e) => VmLinkState::Unfit(format!(
                            "[[vm]] {:?}: cannot look into netns {ns:?}: {e:#}",
                            vm.name
                        )),
                    },
                },
            };
            // Two VMs must not resolve to one macvtap.
            let state = match state {
                VmLinkState::Present(l) => match vm_states
                    .iter()
                    .find(|(_, s)| matches!(s, VmLinkState::Present(o) if o.index == l.index))
                {
                    Some((other, _)) => VmLinkState::Unfit(format!(
                        "[[vm]] {:?} and {:?} both resolve to macvtap {}",
                        other.name, vm.name, l.name
                    )),
                    None => VmLinkState::Present(l),
                },
                s => s,
            };
            if let VmLinkState::Unfit(why) = &state {
                if strict {
                    bail!(why.clone());
                }
                out.problems.push(why.clone());
            }
            vm_states.push((vm.clone(), state));
        }
        let host = self.host_addresses(&uplink, strict).await?;
        for (vm, _) in &vm_states {
            if let Some(why) = observe::host_overlap(vm, &host) {
                if strict {
                    bail!(why);
                }
                out.problems.push(why);
            }
        }

        let shim = self.ensure_shim(&links, &uplink, pass, &mut out).await?;

        let mut present: Vec<(Vm, Link)> = Vec::new();
        for (vm, state) in vm_states {
            match state {
                VmLinkState::Present(link) => {
                    if !self.vm_by_ifindex.contains_key(&link.index) {
                        observe::warn_mode(&vm, &link);
                    }
                    present.push((vm, link));
                }
                VmLinkState::Absent if vm.create => {
                    let link = self.create_vm_link(&vm, &uplink).await?;
                    out.created.push(link.name.clone());
                    present.push((vm, link));
                }
                VmLinkState::Absent | VmLinkState::Unfit(_) => {}
            }
        }
        self.remove_unclaimed_links(&links, &uplink, &present)
            .await?;

        // Tables: slots, then every entry, then the hooks that read them.
        let names: Vec<&str> = self.config.vms.iter().map(|v| v.name.as_str()).collect();
        self.tables
            .release_slots(&names)
            .map_err(anyhow::Error::msg)?;
        self.learnt
            .retain(|name, _| present.iter().any(|(vm, _)| &vm.name == name));
        let mut entries = Vec::new();
        for (vm, link) in &present {
            let slot = self.tables.slot_for(&vm.name).map_err(anyhow::Error::msg)?;
            let mut addresses: Vec<IpAddr> = vm
                .addresses
                .iter()
                .filter(|a| !host.contains(a))
                .copied()
                .collect();
            addresses.extend(self.learnt.get(&vm.name).into_iter().flatten().copied());
            entries.push(VmEntry {
                link,
                addresses,
                slot,
                learns: !vm.learn.is_empty(),
                bridged: vm.netns.is_some(),
            });
        }
        let desired = Desired::new(&uplink, &shim, &host, &entries);
        out.changed_entries = self.tables.sync(&desired).map_err(anyhow::Error::msg)?;

        // VM hooks before the uplink's: host->VM steering only starts once
        // every return path is in place.
        for (vm, link) in &present {
            self.ensure_hook(Role::Vm, link, vm.netns.as_deref(), pass, &mut out)?;
        }
        self.ensure_hook(Role::Uplink, &uplink, None, pass, &mut out)?;
        let mut wanted: HashSet<(Role, String)> = present
            .iter()
            .map(|(vm, l)| (Role::Vm, observe::hook_key(vm.netns.as_deref(), &l.name)))
            .collect();
        wanted.insert((Role::Uplink, uplink.name.clone()));
        wanted.insert((Role::Shim, shim.name.clone()));
        wanted.insert((Role::ShimIn, shim.name.clone()));
        self.remove_stale_hooks(&wanted);

        self.vm_by_ifindex = present
            .iter()
            .map(|(vm, l)| (l.index, vm.name.clone()))
            .collect();
        self.host_addresses = host;
        self.report(&out.problems);
        Ok(out)
    }

    async fn host_addresses(&self, uplink: &Link, strict: bool) -> Result<Vec<IpAddr>> {
        if let Some(list) = &self.config.host_addresses {
            return Ok(list.clone());
        }
        let found = self.nl.addresses(uplink.index).await?;
        let global = found.iter().any(|a| match a {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        });
        if strict && !global {
            bail!(
                "uplink {} has no global address; give the host's addresses in host_addresses",
                uplink.name
            );
        }
        Ok(found)
    }

    /// The shim, created if missing: a bridge-mode macvlan that never
    /// speaks. No ARP, no IPv6 address (so no DAD, RS or MLD), and its
    /// egress hook, attached before it comes up, drops whatever the stack
    /// still tries to send (a forwarding host sends an MLD report for
    /// ff02::2 on every link it brings up), so its MAC never reaches the
    /// wire.
    async fn ensure_shim(
        &mut self,
        links: &[Link],
        uplink: &Link,
        pass: Pass,
        out: &mut Outcome,
    ) -> Result<Link> {
        let name = self.config.shim.name.clone();
        let shim = match links.iter().find(|l| l.name == name) {
            Some(l) if l.lower == Some(uplink.index) => l.clone(),
            Some(stale) => {
                // Ours, but on a previous incarnation of the uplink.
                self.nl.delete(stale.index).await?;
                self.create_shim(uplink, out).await?
            }
            None => self.create_shim(uplink, out).await?,
        };
        self.ensure_hook(Role::Shim, &shim, None, pass, out)?;
        self.ensure_hook(Role::ShimIn, &shim, None, pass, out)?;
        if !shim.up {
            self.nl.set_up(shim.index).await?;
        }
        Ok(shim)
    }

    async fn create_shim(&mut self, uplink: &Link, out: &mut Outcome) -> Result<Link> {
        let name = &self.config.shim.name;
        let shim = self
            .nl
            .create_macvlan(name, uplink.index, self.config.shim.mac.map(|m| m.0))
            .await?;
        self.nl
            .set_alias(shim.index, &observe::shim_alias())
            .await?;
        self.nl.disable_ipv6_addresses(shim.index).await?;
        out.created.push(name.clone());
        Ok(shim)
    }

    async fn create_vm_link(&mut self, vm: &Vm, uplink: &Link) -> Result<Link> {
        let (Some(name), Some(mac)) = (&vm.interface, vm.mac) else {
            bail!(
                "[[vm]] {:?}: create = true needs interface and mac",
                vm.name
            );
        };
        let link = self.nl.create_macvtap(name, uplink.index, mac.0).await?;
        self.nl
            .set_alias(link.index, &observe::vm_alias(vm))
            .await?;
        // The host's stack has no business on a VM's link: without an IPv6
        // address it sends no DAD or MLD there under the guest's MAC.
        self.nl.disable_ipv6_addresses(link.index).await?;
        self.nl.set_up(link.index).await?;
        Ok(link)
    }

    /// Deletes macvtaps mvbridge created for VMs no longer configured.
    async fn remove_unclaimed_links(
        &mut self,
        links: &[Link],
        uplink: &Link,
        present: &[(Vm, Link)],
    ) -> Result<()> {
        let vm_prefix = format!("{}vm:", observe::ALIAS_PREFIX);
        for l in links {
            let ours = l
                .alias
                .as_deref()
                .is_some_and(|a| a.starts_with(&vm_prefix));
            let claimed = present
                .iter()
                .any(|(vm, p)| vm.create && p.index == l.index);
            if ours && l.lower == Some(uplink.index) && !claimed {
                tracing::info!(interface = %l.name, "removing a macvtap no configured VM uses");
                self.nl.delete(l.index).await?;
            }
        }
        Ok(())
    }

    /// Makes sure `role`'s program runs on `link` (in `netns`, or the
    /// host's namespace).
    fn ensure_hook(
        &mut self,
        role: Role,
        link: &Link,
        netns: Option<&str>,
        pass: Pass,
        out: &mut Outcome,
    ) -> Result<()> {
        let key = observe::hook_key(netns, &link.name);
        let slot = format!("{}:{key}", role.name());
        let known = self.hooked.get(&slot) == Some(&(role, link.index));
        if known && pass == Pass::Event {
            return Ok(());
        }
        let id = self.prog_ids[&role];
        let (datapath, pins) = (&mut self.datapath, &self.pins);
        crate::netns::InNetns::run(netns, || -> Result<()> {
            let attached = datapath::attached_programs(&link.name, role)
                .map(|progs| progs.iter().any(|(pid, _)| *pid == id))
                .unwrap_or(false);
            if !attached {
                datapath.attach(role, &link.name, &key, pins)?;
                tracing::info!(interface = %key, program = role.program(), "hook attached");
                out.attached.push(key.clone());
            }
            Ok(())
        })??;
        self.hooked.insert(slot, (role, link.index));
        Ok(())
    }

    /// The links of network namespace `ns`, through a connection kept for
    /// it.
    async fn links_in(&mut self, ns: &str) -> Result<Vec<Link>> {
        if !self.netns_links.contains_key(ns) {
            let nl = Netlink::connect_in(ns)?;
            self.netns_links.insert(ns.to_owned(), nl);
        }
        match self.netns_links[ns].links().await {
            Ok(links) => Ok(links),
            Err(e) => {
                // The namespace may be gone and come back: reconnect next time.
                self.netns_links.remove(ns);
                Err(e.into())
            }
        }
    }

    fn remove_stale_hooks(&mut self, wanted: &HashSet<(Role, String)>) {
        for (path, role, ifname) in self.pins.hooks().unwrap_or_default() {
            let keep =
                Role::from_name(&role).is_some_and(|r| wanted.contains(&(r, ifname.clone())));
            if !keep {
                let _ = datapath::detach(&path);
                tracing::info!(interface = %ifname, "hook removed");
            }
        }
        self.hooked.retain(|slot, (role, _)| {
            let key = slot.split_once(':').map(|(_, k)| k).unwrap_or(slot);
            wanted.contains(&(*role, key.to_owned()))
        });
    }

    /// Logs problems once, and says when one went away.
    fn report(&mut self, problems: &[String]) {
        let now: HashSet<String> = problems.iter().cloned().collect();
        for p in now.difference(&self.reported) {
            tracing::warn!("{p}");
        }
        for p in self.reported.difference(&now) {
            tracing::info!("resolved: {p}");
        }
        self.reported = now;
    }

    /// Vets an address a learning VM used. Returns true when it was learnt
    /// (the tables then need a pass).
    pub fn learn(&mut self, event: &LearnEvent) -> bool {
        let Some(name) = self.vm_by_ifindex.get(&event.ifindex).cloned() else {
            return false;
        };
        let addr = match event.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                event.addr[0],
                event.addr[1],
                event.addr[2],
                event.addr[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(event.addr)),
            _ => return false,
        };
        match self.vet(&name, addr) {
            Ok(()) => {
                tracing::info!(vm = %name, address = %addr, "learnt an address from the VM's traffic");
                self.learnt.entry(name).or_default().insert(addr);
                true
            }
            Err(why) => {
                let key = format!("learn {name} {addr}");
                if self.reported.insert(key) {
                    tracing::warn!(vm = %name, address = %addr, "refused to learn: {why}");
                }
                false
            }
        }
    }

    fn vet(&self, name: &str, addr: IpAddr) -> std::result::Result<(), String> {
        let vm = self
            .config
            .vms
            .iter()
            .find(|v| v.name == name)
            .ok_or("the VM is no longer configured")?;
        if !vm.learn.iter().any(|p| p.contains(&addr)) {
            return Err(format!(
                "outside the prefixes it may learn ({})",
                vm.learn
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.host_addresses.contains(&addr) {
            return Err("the host owns it".into());
        }
        for other in &self.config.vms {
            let learnt = self.learnt.get(&other.name);
            let owns = other.addresses.contains(&addr) || learnt.is_some_and(|l| l.contains(&addr));
            if other.name != name && owns {
                return Err(format!("VM {:?} owns it", other.name));
            }
        }
        if self
            .learnt
            .get(name)
            .is_some_and(|l| l.len() >= MAX_LEARNT_PER_VM)
        {
            return Err(format!("it already learnt {MAX_LEARNT_PER_VM} addresses"));
        }
        Ok(())
    }

    /// Applies a new config. What the kernel cannot change under a running
    /// datapath (uplink, pin directory, shim name) needs a restart; the rest
    /// is reconciled in place, touching only what changed.
    pub async fn reload(&mut self, new: Config) -> Result<Outcome> {
        let old = &self.config;
        for (what, same) in [
            ("uplink", old.uplink == new.uplink),
            ("bpffs", old.bpffs == new.bpffs),
            ("[shim]", old.shim == new.shim),
            ("pidfile", old.pidfile == new.pidfile),
            ("metrics_listen", old.metrics_listen == new.metrics_listen),
        ] {
            if !same {
                bail!("{what} changed: that takes a restart, not a reload");
            }
        }
        // Refuse a config whose VMs do not fit the links that are there,
        // before touching anything.
        let links = self.nl.links().await?;
        if let Some(uplink) = links.iter().find(|l| l.name == new.uplink) {
            for vm in &new.vms {
                if let VmLinkState::Unfit(why) = observe::vm_link(vm, &links, uplink) {
                    bail!(why);
                }
            }
        }
        let previous = std::mem::replace(&mut self.config, new);
        match self.reconcile(Pass::Full).await {
            Ok(out) => Ok(out),
            Err(e) => {
                self.config = previous;
                let _ = self.reconcile(Pass::Full).await;
                Err(e.context("the new config could not be applied; the old one stays"))
            }
        }
    }
}

/// The learnt addresses in the tables: a learning VM's entries (by its
/// counter slot) that its config does not list but its prefixes allow.
fn recover_learnt(config: &Config, tables: &Tables) -> BTreeMap<String, BTreeSet<IpAddr>> {
    let slots = tables.slots();
    let entries = tables.entries();
    let mut out: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for vm in config.vms.iter().filter(|v| !v.learn.is_empty()) {
        let Some(slot) = slots.get(&crate::tables::name_key(&vm.name)) else {
            continue;
        };
        for (addr, ep) in &entries {
            let theirs = ep.kind == mvbridge_common::maps::ENDPOINT_VM && ep.vm == *slot;
            if theirs && !vm.addresses.contains(addr) && vm.learn.iter().any(|p| p.contains(addr)) {
                out.entry(vm.name.clone()).or_default().insert(*addr);
            }
        }
    }
    out
}
