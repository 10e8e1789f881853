//! Carrying out a plan, changing only what differs: links first (the shim,
//! silent and guarded before it comes up; VM links mvbridge creates; stale
//! ones deleted; VM links kept quiet on the host's side), then the tables,
//! then the hooks that read them.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::config::Config;
use crate::control::contents::Contents;
use crate::control::plan::{self, Plan, ShimState};
use crate::control::world::{Namespace, Observer, World};
use crate::datapath::hooks::{AttachMode, HookKey, Hooks, LinkAt};
use crate::datapath::maps::PinnedMaps;
use crate::datapath::object::{Datapath, Role};
use crate::error::{Error, Result};
use crate::kernel::netlink::{Link, Netlink};
use crate::kernel::netns::NetnsId;
use crate::kernel::rcu::Expedite;

/// How much a pass checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Start-up and reload: every problem is an error (set-up is all or
    /// nothing); every hook is checked in the kernel.
    Strict,
    /// A netlink event: problems are reported and the rest goes on; only
    /// hooks on links that changed are checked in the kernel.
    Event,
    /// The periodic pass: every hook is checked in the kernel, to catch
    /// what sends no event (a program detached by hand).
    Full,
}

/// What a pass changed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changed_entries: usize,
    pub attached: Vec<HookKey>,
    pub detached: Vec<HookKey>,
    pub created: Vec<String>,
    pub deleted: Vec<String>,
}

impl Outcome {
    pub fn changed_anything(&self) -> bool {
        self.changed_entries > 0
            || !self.attached.is_empty()
            || !self.detached.is_empty()
            || !self.created.is_empty()
            || !self.deleted.is_empty()
    }
}

/// The datapath's kernel side as the daemon holds it.
pub struct Applier {
    nl: Netlink,
    hooks: Hooks,
    datapath: Datapath,
    maps: PinnedMaps,
    prog_ids: HashMap<Role, u32>,
    /// Hooks known to be attached, with the link they were attached to
    /// (its namespace, for links in other namespaces, and its ifindex).
    hooked: HashMap<HookKey, (Option<NetnsId>, u32)>,
    /// Held from a pass's first TCX change to its end.
    expedite: Expedite,
    /// The config's `expedite_rcu`, as of the pass.
    expedite_allowed: bool,
}

impl Applier {
    pub fn new(
        nl: Netlink,
        hooks: Hooks,
        mut datapath: Datapath,
        maps: PinnedMaps,
        expedite: Expedite,
    ) -> Result<Applier> {
        let mut prog_ids = HashMap::new();
        for role in Role::ALL {
            prog_ids.insert(role, datapath.program_id(role)?);
        }
        Ok(Applier {
            nl,
            hooks,
            datapath,
            maps,
            prog_ids,
            hooked: HashMap::new(),
            expedite,
            expedite_allowed: false,
        })
    }

    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    pub fn maps(&self) -> &PinnedMaps {
        &self.maps
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Carries out `plan`. When it had to create VM links it stops after
    /// creating them (`Outcome::created`): the caller plans again with the
    /// links there.
    pub async fn apply(
        &mut self,
        config: &Config,
        plan: &Plan,
        world: &World,
        observer: &Observer,
        pass: Pass,
    ) -> Result<Outcome> {
        self.expedite_allowed = config.expedite_rcu;
        let out = self.carry_out(config, plan, world, observer, pass).await;
        // This pass's hook changes are over, failed or not.
        self.expedite.end();
        out
    }

    async fn carry_out(
        &mut self,
        config: &Config,
        plan: &Plan,
        world: &World,
        observer: &Observer,
        pass: Pass,
    ) -> Result<Outcome> {
        let mut out = Outcome::default();
        let t0 = std::time::Instant::now();
        let shim = self.shim(config, plan, pass, &mut out).await?;
        for link in &plan.stale {
            tracing::info!(interface = %link.name, "removing a macvtap no configured VM uses");
            self.nl.delete(link.index).await?;
            out.deleted.push(link.name.clone());
        }
        for name in &plan.create {
            let vm = config
                .vms
                .iter()
                .find(|v| &v.name == name)
                .ok_or_else(|| Error::UnplannedVm { name: name.clone() })?;
            let (Some(ifname), Some(mac)) = (&vm.interface, vm.mac) else {
                return Err(Error::Unfit(format!(
                    "[[vm]] {name:?}: create = true needs interface and mac"
                )));
            };
            let link = self
                .nl
                .create_macvtap(ifname, plan.uplink.index, mac.0)
                .await?;
            self.nl.set_alias(link.index, &plan::vm_alias(vm)).await?;
            self.nl.disable_ipv6_addresses(link.index).await?;
            self.quiet(&link).await?;
            self.nl.set_up(link.index).await?;
            out.created.push(link.name);
        }
        if !out.created.is_empty() {
            return Ok(out);
        }
        for (vm, link) in plan.live() {
            // An event pass leaves the links it hooked earlier alone (the
            // periodic pass checks them all); a new one is made quiet now.
            let settled = pass == Pass::Event
                && vm
                    .hook()
                    .is_some_and(|k| self.hooked.get(&k) == Some(&(None, link.index)));
            if vm.netns.is_none() && !settled {
                self.quiet(link).await?;
            }
        }
        let links_done = t0.elapsed();

        // Tables: slots, then every entry, then the hooks that read them.
        let names: Vec<&str> = config.vms.iter().map(|v| v.name.as_str()).collect();
        self.maps.release_slots(&names)?;
        let slots = self
            .maps
            .slots_for(plan.live().map(|(vm, _)| vm.name.as_str()))?;
        out.changed_entries = self.maps.sync(&Contents::new(plan, &shim, &slots))?;
        let tables_done = t0.elapsed();

        // VM hooks before the uplink's: host->VM steering only starts once
        // every return path is in place.
        for (vm, link) in plan.live() {
            let ns = vm
                .netns
                .as_deref()
                .and_then(|n| match world.namespaces.get(n) {
                    Some(Namespace::Seen { id, .. }) => Some(*id),
                    _ => None,
                });
            let key = vm.hook().expect("a live VM has a hook");
            let nl = if self.hooks.needs_netlink() {
                let nl =
                    observer
                        .netlink_in(vm.netns.as_deref())
                        .ok_or_else(|| Error::NetnsLost {
                            netns: vm.netns.clone().unwrap_or_default(),
                        })?;
                Some(nl.clone())
            } else {
                None
            };
            self.hook(&key, link, nl.as_ref(), ns, pass, &mut out)
                .await?;
        }
        let uplink = HookKey {
            role: Role::Uplink,
            at: LinkAt::Host(plan.uplink.name.clone()),
        };
        let nl = self.nl.clone();
        self.hook(&uplink, &plan.uplink, Some(&nl), None, pass, &mut out)
            .await?;
        self.remove_stale_hooks(&plan.hooks(config), observer, &mut out)
            .await;
        tracing::debug!(
            links_us = links_done.as_micros() as u64,
            tables_us = (tables_done - links_done).as_micros() as u64,
            hooks_us = (t0.elapsed() - tables_done).as_micros() as u64,
            "applied"
        );
        Ok(out)
    }

    /// The shim, created if missing: a bridge-mode macvlan that never
    /// speaks. No ARP, no IPv6 (so no DAD, RS, MLD, and no router
    /// advertisement taken from it), and its egress hook, attached before
    /// it comes up, drops whatever the stack still tries to send (a
    /// forwarding host sends an MLD report for ff02::2 on every link it
    /// brings up), so its MAC never reaches the wire.
    async fn shim(
        &mut self,
        config: &Config,
        plan: &Plan,
        pass: Pass,
        out: &mut Outcome,
    ) -> Result<Link> {
        let name = &config.shim.name;
        let shim = match &plan.shim {
            ShimState::Present(l) => l.clone(),
            ShimState::Stale(l) => {
                self.nl.delete(l.index).await?;
                out.deleted.push(l.name.clone());
                self.create_shim(config, plan, out).await?
            }
            ShimState::Missing => self.create_shim(config, plan, out).await?,
        };
        // Before it comes up, and on every pass for a shim made earlier
        // (by another release) or changed behind our back: the host's
        // stack takes nothing from it.
        shim_silent(&shim)?;
        let nl = self.nl.clone();
        for role in [Role::Shim, Role::ShimIn] {
            let key = HookKey {
                role,
                at: LinkAt::Host(name.clone()),
            };
            self.hook(&key, &shim, Some(&nl), None, pass, out).await?;
        }
        if !shim.up {
            self.nl.set_up(shim.index).await?;
        }
        Ok(shim)
    }

    async fn create_shim(
        &mut self,
        config: &Config,
        plan: &Plan,
        out: &mut Outcome,
    ) -> Result<Link> {
        let name = &config.shim.name;
        let shim = self
            .nl
            .create_macvlan(name, plan.uplink.index, config.shim.mac.map(|m| m.0))
            .await?;
        self.nl.set_alias(shim.index, &plan::shim_alias()).await?;
        self.nl.disable_ipv6_addresses(shim.index).await?;
        out.created.push(name.clone());
        Ok(shim)
    }

    /// A VM's macvtap on the host's side: every multicast group passes (so
    /// the router's solicitations for any of the guest's addresses reach
    /// it), and the host's IPv6 stack is off there (no address, so no
    /// DAD, router solicitation or MLD report under the guest's MAC).
    async fn quiet(&mut self, link: &Link) -> Result<()> {
        if !link.allmulti {
            self.nl.set_allmulticast(link.index).await?;
        }
        ipv6_off(link)
    }

    /// Makes sure `key`'s program runs on `link` (`nl` speaks to its
    /// namespace, `ns`, for links outside the host's).
    async fn hook(
        &mut self,
        key: &HookKey,
        link: &Link,
        nl: Option<&Netlink>,
        ns: Option<NetnsId>,
        pass: Pass,
        out: &mut Outcome,
    ) -> Result<()> {
        let known = self.hooked.get(key) == Some(&(ns, link.index));
        if known && pass == Pass::Event {
            return Ok(());
        }
        let id = self.prog_ids[&key.role];
        let runs = match self.hooks.runs(key, link, nl, id, known).await {
            Ok(runs) => runs,
            // Attaching says what is wrong, if anything is.
            Err(e) => {
                tracing::debug!(hook = %key, "{}", crate::errno::chain(&e));
                false
            }
        };
        if !runs {
            self.tcx_change();
            let prog = self.datapath.program(key.role)?;
            self.hooks.attach(key, link, nl, prog).await?;
            tracing::info!(hook = %key, mode = self.hooks.mode().name(), "hook attached");
            out.attached.push(key.clone());
        }
        self.hooked.insert(key.clone(), (ns, link.index));
        Ok(())
    }

    /// Removes hooks no plan wants any more, and hooks attached the other
    /// way (the kernel gained TCX: the classic filters go once the TCX
    /// links run).
    async fn remove_stale_hooks(
        &mut self,
        wanted: &BTreeSet<HookKey>,
        observer: &Observer,
        out: &mut Outcome,
    ) {
        let mode = self.hooks.mode();
        for found in self.hooks.found() {
            if found.mode == mode && wanted.contains(&found.key) {
                continue;
            }
            // Only a classic filter is removed through netlink.
            let nl = match found.mode {
                AttachMode::Tc => observer.netlink_in(found.key.at.netns()).cloned(),
                AttachMode::Tcx => None,
            };
            if found.mode == AttachMode::Tcx {
                self.tcx_change();
            }
            match self.hooks.remove(&found, nl.as_ref()).await {
                Ok(true) => {
                    tracing::info!(hook = %found.key, mode = found.mode.name(), "hook removed");
                    out.detached.push(found.key);
                }
                // Gone with its link (or its namespace): only its record
                // or pin was left, and that is gone now.
                Ok(false) => {
                    tracing::debug!(hook = %found.key, mode = found.mode.name(), "forgot a hook that was already gone");
                }
                Err(e) => tracing::warn!(
                    hook = %found.key,
                    "cannot remove a stale hook: {}",
                    crate::errno::chain(&e)
                ),
            }
        }
        self.hooked.retain(|k, _| wanted.contains(k));
    }

    /// A TCX hook is about to change: each change waits for a grace period.
    fn tcx_change(&mut self) {
        if self.hooks.mode() == AttachMode::Tcx {
            self.expedite.begin(self.expedite_allowed);
        }
    }
}

/// Sets a link's IPv6 knob `key` (a boolean) to `on`.
fn set_ipv6_knob(ifname: &str, key: &str, on: bool) -> Result<()> {
    let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}"));
    std::fs::write(&path, if on { "1" } else { "0" })
        .map_err(|e| Error::io(format!("setting {}", path.display()), e))
}

/// The shim's IPv6 off, and router advertisements refused there should
/// it ever come back on.
fn shim_silent(shim: &Link) -> Result<()> {
    ipv6_off(shim)?;
    if shim.ipv6.is_some_and(|c| c.accept_ra) {
        set_ipv6_knob(&shim.name, "accept_ra", false)?;
    }
    Ok(())
}

/// The host's IPv6 off on a link (removes its addresses too), unless the
/// link's last dump says it is; a kernel without IPv6 has nothing to set.
fn ipv6_off(link: &Link) -> Result<()> {
    if link.ipv6.is_some_and(|c| !c.disabled) {
        set_ipv6_knob(&link.name, "disable_ipv6", true)?;
    }
    Ok(())
}
