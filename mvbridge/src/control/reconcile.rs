//! The one reconcile loop's state: it owns the kernel state. Each pass
//! observes the world, plans, and applies the difference; passes are
//! idempotent, and one that finds nothing to do changes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mvbridge_common::abi;
use mvbridge_common::maps::LearnEvent;

use crate::config::Config;
use crate::control::apply::{Applier, Outcome, Pass};
use crate::control::learning::{self, Learnt, RefusalLog};
use crate::control::plan::{self, Plan};
use crate::control::problem_log::ProblemLog;
use crate::control::teardown;
use crate::control::world::{Observer, World};
use crate::datapath::bpffs::{self, PinDir};
use crate::datapath::hooks::{AttachMode, Hooks};
use crate::datapath::layout::{self, Start};
use crate::datapath::maps::PinnedMaps;
use crate::datapath::object::Datapath;
use crate::error::{Error, Result};
use crate::kernel::netlink::Netlink;
use crate::kernel::poll_set::PollSet;
use crate::kernel::rcu::Expedite;

/// How many plan-apply rounds one pass may take: a round that creates
/// links is followed by one that sees them.
const MAX_ROUNDS: usize = 3;

pub struct Reconciler {
    config: Config,
    observer: Observer,
    applier: Applier,
    learnt: Learnt,
    /// The last plan applied: what learning is vetted against.
    last: Option<Plan>,
    /// The world that plan was made from.
    last_world: Option<World>,
    /// Problems already logged, so a pass repeats none of them.
    reported: ProblemLog,
    /// Which learning refusals to log.
    refusals: RefusalLog,
}

impl Reconciler {
    /// Loads (or adopts, or migrates) the datapath and runs a strict first
    /// pass. On a fresh start a failure removes everything again; an
    /// adopted datapath is left running as it was. `news` becomes readable
    /// when a link changes in a VM namespace (see [`Observer::listening`]).
    pub async fn start(config: Config, nl: Netlink, news: PollSet) -> Result<Reconciler> {
        let pins = PinDir::new(&config.bpffs);
        let prepared = bpffs::ensure(&pins.dir)
            .map_err(|e| Error::io(format!("preparing bpffs at {}", pins.dir.display()), e))?;
        let start = layout::start(&pins)?;
        let started = Reconciler::load(config.clone(), nl.clone(), news, pins, start).await;
        match started {
            Ok(r) => Ok(r),
            Err(e) if start == Start::Fresh => {
                if let Err(undo) = teardown::remove(&config, &nl).await {
                    tracing::error!(
                        "rolling back a failed set-up left something behind: {}",
                        crate::errno::chain(&undo)
                    );
                }
                bpffs::undo(&prepared);
                Err(e)
            }
            Err(e) => {
                tracing::error!(
                    "the datapath of the earlier run is left as it was (it keeps forwarding)"
                );
                Err(e)
            }
        }
    }

    async fn load(
        config: Config,
        nl: Netlink,
        news: PollSet,
        pins: PinDir,
        start: Start,
    ) -> Result<Reconciler> {
        layout::verify(&pins, start)?;
        if let Start::Migrate { .. } = start {
            // A migration interrupted earlier left a half-made layout.
            layout::discard(&pins, abi::LAYOUT)?;
        }
        std::fs::create_dir_all(pins.maps())
            .map_err(|e| Error::io(format!("creating {}", pins.maps().display()), e))?;
        let mode = AttachMode::resolve(config.attach)?;
        let mut datapath = Datapath::load(&pins.maps(), config.ebpf_log)?;
        PinnedMaps::create_loader_maps(&pins)?;
        if let Start::Migrate { from } = start {
            let copied = layout::migrate(&pins, from)?;
            tracing::info!(
                from,
                to = abi::LAYOUT,
                entries = copied,
                "carried the pinned maps into the new layout"
            );
        }
        let hooks = Hooks::open(&pins, mode)?;
        tracing::info!(
            mode = mode.name(),
            "hooks attach as {}",
            match mode {
                AttachMode::Tcx => "TCX links",
                AttachMode::Tc => "classic TC filters (this kernel has no TCX, or attach = \"tc\")",
            }
        );
        let adopted = hooks.adopt(&mut datapath);
        if start != Start::Fresh {
            // TCX links were swapped here; classic filters are replaced in
            // place by the first pass.
            let list: Vec<String> = adopted.iter().map(ToString::to_string).collect();
            tracing::info!(swapped = ?list, "adopted the pinned datapath; programs replaced in place");
        }
        if let Start::Migrate { from } = start {
            layout::remove(&pins, from)?;
        }
        let maps = match start {
            Start::Fresh => PinnedMaps::open(&pins)?.just_created(),
            _ => PinnedMaps::open(&pins)?,
        };
        // An adopted datapath still holds what the previous daemon learnt:
        // take it back, or the first pass would forget it.
        let learnt = Learnt::recover(&config, &maps);
        let expedite = Expedite::new(&config.pidfile);
        let applier = Applier::new(nl.clone(), hooks, datapath, maps, expedite)?;
        let mut r = Reconciler {
            config,
            observer: Observer::listening(nl, news),
            applier,
            learnt,
            last: None,
            last_world: None,
            reported: ProblemLog::default(),
            refusals: RefusalLog::new(std::time::Instant::now()),
        };
        r.pass(Pass::Strict).await?;
        Ok(r)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn datapath(&mut self) -> &mut Datapath {
        self.applier.datapath()
    }

    /// A look at the host's namespace for `config` (the running one, or
    /// one about to replace it), through the loop's own connection.
    pub async fn observe_host(&self, config: &Config) -> Result<World> {
        self.observer.observe_host(config).await
    }

    /// Did the kernel announce a change to a VM's link inside a VM
    /// namespace since the last pass? (See [`Observer::heard_of_changes`].)
    pub fn heard_in_namespaces(&mut self) -> bool {
        self.observer
            .heard_of_changes(&self.config, self.last_world.as_ref())
    }

    /// The VMs whose link is present and steered, with its ifindex.
    pub fn live_vms(&self) -> Vec<(String, u32)> {
        let Some(plan) = &self.last else {
            return Vec::new();
        };
        plan.live()
            .map(|(v, l)| (v.name.clone(), l.index))
            .collect()
    }

    /// One pass: observe, plan, apply. See [`Pass`] for how strict it is.
    pub async fn pass(&mut self, pass: Pass) -> Result<Outcome> {
        let mut total = Outcome::default();
        for _ in 0..MAX_ROUNDS {
            let t0 = std::time::Instant::now();
            let settled = match (pass, &self.last) {
                (Pass::Event, Some(last)) => Some(last.settled_namespaces()),
                _ => None,
            };
            let reuse = self.last_world.as_ref().zip(settled.as_ref());
            let world = self.observer.observe_reusing(&self.config, reuse).await?;
            let observed = t0.elapsed();
            let plan = plan::plan(&self.config, &world, &self.learnt)?;
            tracing::debug!(
                observe_us = observed.as_micros() as u64,
                plan_us = (t0.elapsed() - observed).as_micros() as u64,
                "planned"
            );
            let problems = plan.all_problems();
            if pass == Pass::Strict
                && let Some(first) = problems.first()
            {
                return Err(Error::Unfit(first.clone()));
            }
            let out = self
                .applier
                .apply(&self.config, &plan, &world, &self.observer, pass)
                .await?;
            let created = !out.created.is_empty();
            merge(&mut total, out);
            if !created {
                // What a VM learnt goes with its link.
                self.learnt
                    .retain(|name| plan.vm(name).is_some_and(|v| v.link().is_some()));
                self.reported.update(&problems);
                self.last = Some(plan);
                self.last_world = Some(world);
                return Ok(total);
            }
        }
        Err(Error::Unsettled { rounds: MAX_ROUNDS })
    }

    /// Applies a new config. What the kernel cannot change under a running
    /// datapath (uplink, pin directory, shim) needs a restart; the rest is
    /// planned strictly, then applied, touching only what changed.
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
                return Err(Error::NeedsRestart { what });
            }
        }
        self.replace_config(new, Pass::Strict).await
    }

    /// Applies the VMs libvirt declares now. Unlike a reload, problems
    /// are reported (that VM stays out) rather than refusing the change: a
    /// domain's start must not wait on an unrelated unfit VM.
    pub async fn redeclare(&mut self, new: Config) -> Result<Outcome> {
        self.replace_config(new, Pass::Full).await
    }

    /// Runs `new` with a `pass`; on failure, back to the running config.
    async fn replace_config(&mut self, new: Config, pass: Pass) -> Result<Outcome> {
        let previous = std::mem::replace(&mut self.config, new);
        match self.pass(pass).await {
            Ok(out) => Ok(out),
            Err(e) => {
                self.config = previous;
                if let Err(again) = self.pass(Pass::Full).await {
                    tracing::error!(
                        "re-applying the running config: {}",
                        crate::errno::chain(&again)
                    );
                }
                Err(e)
            }
        }
    }

    /// Vets an address a VM used that no table knew. Returns true when it
    /// was learnt (the tables then need a pass).
    pub fn learn(&mut self, event: &LearnEvent) -> bool {
        let Some(plan) = &self.last else {
            return false;
        };
        let Some((vm, _)) = plan.live().find(|(_, l)| l.index == event.ifindex) else {
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
        let name = vm.name.clone();
        match learning::vet(&self.config, plan, &self.learnt, &name, addr) {
            Ok(()) => {
                tracing::info!(vm = %name, address = %addr, "learnt an address from the VM's traffic");
                self.learnt.insert(&name, addr);
                true
            }
            Err(why) => {
                let note = self.refusals.note(&name, addr, std::time::Instant::now());
                for (vm, n) in note.quiet {
                    tracing::warn!(vm = %vm, refusals = n, "refused to learn more addresses than were logged in the last minute");
                }
                if note.log {
                    tracing::warn!(vm = %name, address = %addr, "refused to learn: {why}");
                }
                false
            }
        }
    }
}

fn merge(total: &mut Outcome, out: Outcome) {
    total.changed_entries += out.changed_entries;
    total.attached.extend(out.attached);
    total.detached.extend(out.detached);
    total.created.extend(out.created);
    total.deleted.extend(out.deleted);
}
