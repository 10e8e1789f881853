//! `mvbridge run` and `mvbridge down`: the daemon around the reconcile loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use crate::commands::{metrics, preflight};
use crate::config::Config;
use crate::control::apply::{Outcome, Pass};
use crate::control::reconcile::Reconciler;
use crate::control::world::Observer;
use crate::control::{notify, plan, teardown};
use crate::kernel::netlink::Netlink;
use crate::kernel::poll_set::PollSet;
use crate::kernel::rcu::Expedite;
use crate::kernel::watch;
use crate::libvirt::declare::Declaration;
use crate::libvirt::follow::Follower;

/// How long a burst of netlink events (a link comes with several
/// NEWLINKs) is let settle before the pass that handles it.
const SETTLE: Duration = Duration::from_millis(2);

/// The least time between two passes for changes inside VM namespaces: a
/// tenant flapping its own link there must not keep the daemon busy.
const NAMESPACE_PASS_GAP: Duration = Duration::from_millis(100);

/// Learning reports handled per wake-up: a VM sending from random sources
/// fills the ring as fast as it can, and must not delay events, resyncs
/// or a SIGTERM; what is left waits for the next turn.
const LEARN_EVENTS_PER_TURN: usize = 256;

pub async fn run(config_path: &Path, keep: bool) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("run")?;
    Expedite::recover(&config.pidfile);
    preflight::kernel()?;
    let nl = Netlink::connect()?;
    // Signals and notifications are taken over before set-up: a SIGTERM
    // during it still leads to a clean exit, and no change is missed.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut events = watch::subscribe().context("subscribing to rtnetlink notifications")?;
    // Link changes inside VM namespaces (a container runtime renaming the
    // link it moved in) reach the host's subscription only in part.
    let namespace_news = PollSet::new().context("creating an epoll set for VM namespaces")?;

    // libvirt's VMs join the config's; the config as the file has it
    // stays apart, for reloads and for re-declaring them.
    let mut base = config.clone();
    let mut libvirt = config.libvirt.as_ref().map(Follower::start).transpose()?;
    let config = match libvirt.as_mut() {
        Some(f) => {
            // The loop's own look at the world comes with it, below; this
            // one is only for the host's addresses.
            let world = Observer::new(nl.clone())
                .observe_host(&base)
                .await
                .context("reading the host's addresses")?;
            let decl = f.declare(&base, &plan::host_addresses(&base, &world));
            let merged = decl.merged_into(&base);
            f.settle(&decl);
            merged
        }
        None => config,
    };
    // A change libvirt declared that could not be applied: tried again
    // with every resync.
    let mut libvirt_pending = false;

    let t0 = Instant::now();
    let mut rec = Reconciler::start(config.clone(), nl.clone(), namespace_news.clone()).await?;
    tracing::info!(
        uplink = %config.uplink,
        shim = %config.shim.name,
        vms = rec.live_vms().len(),
        elapsed_us = t0.elapsed().as_micros() as u64,
        "datapath attached"
    );
    let mut live = rec.live_vms();
    for (vm, ifindex) in &live {
        tracing::info!(vm = %vm, tap = %format!("/dev/tap{ifindex}"), "vm ready");
    }
    let pidfile = PidFile::write(&config.pidfile)?;
    notify::send("READY=1\nSTATUS=datapath attached");

    let shared = Arc::new(RwLock::new(config.clone()));
    if let Some(addr) = config.metrics_listen {
        metrics::spawn(addr, shared.clone(), nl.clone())
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
    }
    let mut ring = match rec.datapath().take_learn_ring() {
        // SAFETY: the ring buffer owns its fd and outlives the AsyncFd,
        // which owns the ring.
        Some(r) => Some(
            unsafe { AsyncFd::register(r) }
                .map_err(|e| e.into_parts().1)
                .context("watching the learning ring")?,
        ),
        None => None,
    };
    let mut ebpf_log = match config.ebpf_log.then(|| rec.datapath().logger()).flatten() {
        // SAFETY: the logger owns its ring buffer fd and outlives the
        // AsyncFd, which owns the logger.
        Some(l) => Some(
            unsafe { AsyncFd::register(l) }
                .map_err(|e| e.into_parts().1)
                .context("watching the eBPF log")?,
        ),
        None => None,
    };
    // SAFETY: the set's fd is shared (Arc) and closes only when the last
    // clone goes, and the AsyncFd holds one.
    let namespace_news = unsafe { AsyncFd::register(namespace_news) }
        .map_err(|e| e.into_parts().1)
        .context("watching the VM namespaces' link notifications")?;
    let mut tick = tokio::time::interval(Duration::from_secs(config.resync_seconds));
    tick.tick().await;
    // When the last pass for namespace notifications began; when the next
    // is due (and when its notification came).
    let mut last_namespace_pass: Option<Instant> = None;
    let mut namespace_pass: Option<(Instant, Instant)> = None;

    loop {
        let due = namespace_pass.map(|(_, at)| at);
        tokio::select! {
            Some(_) = events.recv() => {
                event_pass(&mut rec, &mut events, Instant::now(), &mut live).await;
            }
            guard = namespace_news.readable() => {
                let seen = Instant::now();
                // Reading every namespace socket's notifications makes the
                // set quiet; any that come after make it readable again.
                guard?.clear_ready();
                if rec.heard_in_namespaces() {
                    let earliest = last_namespace_pass.map_or(seen, |t| (t + NAMESPACE_PASS_GAP).max(seen));
                    namespace_pass.get_or_insert((seen, earliest));
                } else {
                    tracing::debug!("link notifications in VM namespaces, none about a VM's link");
                }
            }
            _ = async { tokio::time::sleep_until(due.expect("guarded").into()).await }, if due.is_some() => {
                let (seen, _) = namespace_pass.take().expect("guarded");
                last_namespace_pass = Some(Instant::now());
                tracing::debug!("a VM's link changed inside its namespace");
                event_pass(&mut rec, &mut events, seen, &mut live).await;
            }
            _ = tick.tick() => {
                pass(&mut rec, Pass::Full, Instant::now(), &mut live).await;
                if libvirt_pending && let Some(f) = libvirt.as_mut() {
                    libvirt_pending = !redeclare(&mut rec, f, &base, &shared, &mut live, Instant::now()).await;
                }
            }
            _ = hup.recv() => {
                reload(&mut rec, config_path, &mut base, libvirt.as_mut(), &shared, &mut live).await;
            }
            update = async { libvirt.as_mut().expect("guarded").next().await }, if libvirt.is_some() => {
                let seen = Instant::now();
                let f = libvirt.as_mut().expect("guarded");
                f.apply(update);
                libvirt_pending = !redeclare(&mut rec, f, &base, &shared, &mut live, seen).await;
            }
            guard = async { ring.as_mut().expect("guarded").readable_mut().await }, if ring.is_some() => {
                let seen = Instant::now();
                let mut guard = guard?;
                let mut learnt = false;
                let mut handled = 0;
                while handled < LEARN_EVENTS_PER_TURN {
                    let Some(item) = guard.get_inner_mut().next() else {
                        // Drained: wait for the kernel to say there is more.
                        guard.clear_ready();
                        break;
                    };
                    if let Some(event) = learn_event(&item) {
                        learnt |= rec.learn(&event);
                    }
                    handled += 1;
                }
                if learnt {
                    pass(&mut rec, Pass::Event, seen, &mut live).await;
                }
            }
            guard = async { ebpf_log.as_mut().expect("guarded").readable_mut().await }, if ebpf_log.is_some() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = term.recv() => { tracing::info!("SIGTERM"); break; }
            _ = int.recv() => { tracing::info!("SIGINT"); break; }
        }
    }

    notify::send("STOPPING=1");
    drop(pidfile);
    if keep {
        tracing::info!("leaving the datapath in place (--keep); `mvbridge down` removes it");
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!("removing the datapath");
    let removed = teardown::remove(rec.config(), &nl).await?;
    let hooks: Vec<String> = removed.hooks.iter().map(ToString::to_string).collect();
    tracing::info!(hooks = ?hooks, pins = removed.pins, links = ?removed.links, "datapath removed");
    Ok(ExitCode::SUCCESS)
}

fn learn_event(item: &[u8]) -> Option<mvbridge_common::maps::LearnEvent> {
    let size = std::mem::size_of::<mvbridge_common::maps::LearnEvent>();
    if item.len() < size {
        return None;
    }
    // SAFETY: LearnEvent is plain old data and the slice holds at least
    // one; read_unaligned copes with the ring's alignment.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
}

/// A pass for notifications, once a burst of them (a link comes with
/// several) has had `SETTLE` to arrive.
async fn event_pass(
    rec: &mut Reconciler,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<watch::Changed>,
    seen: Instant,
    live: &mut Vec<(String, u32)>,
) {
    tokio::time::sleep(SETTLE).await;
    while events.try_recv().is_ok() {}
    pass(rec, Pass::Event, seen, live).await;
}

/// One pass, logged: what changed, how long after the trigger, and which
/// VMs went live or away.
async fn pass(rec: &mut Reconciler, kind: Pass, since: Instant, live: &mut Vec<(String, u32)>) {
    match rec.pass(kind).await {
        Ok(out) => {
            let now = rec.live_vms();
            let took = since.elapsed().as_micros() as u64;
            for (vm, ifindex) in now.iter().filter(|v| !live.contains(v)) {
                tracing::info!(vm = %vm, tap = %format!("/dev/tap{ifindex}"), reaction_us = took, "vm ready");
            }
            for (vm, _) in live.iter().filter(|v| !now.contains(v)) {
                tracing::info!(vm = %vm, reaction_us = took, "vm gone");
            }
            if out.changed_anything() {
                let attached: Vec<String> = out.attached.iter().map(ToString::to_string).collect();
                tracing::info!(
                    entries = out.changed_entries,
                    attached = ?attached,
                    created = ?out.created,
                    deleted = ?out.deleted,
                    reaction_us = took,
                    "datapath updated"
                );
            }
            *live = now;
        }
        Err(e) => tracing::error!(
            "reconcile failed (retrying on the next change): {}",
            crate::errno::chain(&e)
        ),
    }
}

async fn reload(
    rec: &mut Reconciler,
    config_path: &Path,
    base: &mut Config,
    libvirt: Option<&mut Follower>,
    shared: &Arc<RwLock<Config>>,
    live: &mut Vec<(String, u32)>,
) {
    notify::reloading();
    let applied = match Config::load(config_path) {
        Ok(new) => reload_config(rec, new, base, libvirt).await,
        Err(e) => Err(e.into()),
    };
    match applied {
        Ok(_) => {
            if let Ok(mut c) = shared.write() {
                *c = rec.config().clone();
            }
            tracing::info!(config = %config_path.display(), "config reloaded");
            went_live(rec, live, None);
        }
        Err(e) => tracing::error!(
            "reload rejected, the running config stays: {}",
            crate::errno::chain(&e)
        ),
    }
    notify::send("READY=1");
}

/// Applies `new`, with the VMs libvirt declares against it; on success
/// it becomes the `base`.
async fn reload_config(
    rec: &mut Reconciler,
    new: Config,
    base: &mut Config,
    libvirt: Option<&mut Follower>,
) -> crate::error::Result<Outcome> {
    if new.libvirt != base.libvirt {
        return Err(crate::error::Error::NeedsRestart { what: "[libvirt]" });
    }
    let (merged, decl) = match libvirt {
        Some(f) => {
            let decl = declare(rec, &mut *f, &new).await?;
            (decl.merged_into(&new), Some((f, decl)))
        }
        None => (new.clone(), None),
    };
    let out = rec.reload(merged).await?;
    *base = new;
    if let Some((f, decl)) = decl {
        f.settle(&decl);
    }
    Ok(out)
}

/// What libvirt declares against `config`, and the host's addresses as
/// the plan takes them from a look at the host's namespace now.
async fn declare(
    rec: &Reconciler,
    libvirt: &mut Follower,
    config: &Config,
) -> crate::error::Result<Declaration> {
    let world = rec.observe_host(config).await?;
    Ok(libvirt.declare(config, &plan::host_addresses(config, &world)))
}

/// Applies what libvirt declares now, if it changed anything; true when
/// done (false: tried again at the next resync).
async fn redeclare(
    rec: &mut Reconciler,
    libvirt: &mut Follower,
    base: &Config,
    shared: &Arc<RwLock<Config>>,
    live: &mut Vec<(String, u32)>,
    since: Instant,
) -> bool {
    let declared = match declare(rec, libvirt, base).await {
        Ok(decl) => {
            let merged = decl.merged_into(base);
            if merged == *rec.config() {
                libvirt.settle(&decl);
                return true;
            }
            rec.redeclare(merged).await.map(|out| (decl, out))
        }
        Err(e) => Err(e),
    };
    match declared {
        Ok((decl, out)) => {
            libvirt.settle(&decl);
            if let Ok(mut c) = shared.write() {
                *c = rec.config().clone();
            }
            let took = since.elapsed().as_micros() as u64;
            tracing::info!(
                vms = decl.vms.len(),
                entries = out.changed_entries,
                reaction_us = took,
                "libvirt's VMs applied"
            );
            went_live(rec, live, Some(took));
            true
        }
        Err(e) => {
            tracing::error!(
                "libvirt's VMs not applied, the running ones stay (trying again at the next resync): {}",
                crate::errno::chain(&e)
            );
            false
        }
    }
}

/// Logs the VMs that went live or away since `live`, and updates it.
fn went_live(rec: &Reconciler, live: &mut Vec<(String, u32)>, took: Option<u64>) {
    let now = rec.live_vms();
    for (vm, ifindex) in now.iter().filter(|v| !live.contains(v)) {
        let tap = format!("/dev/tap{ifindex}");
        match took {
            Some(us) => tracing::info!(vm = %vm, tap = %tap, reaction_us = us, "vm ready"),
            None => tracing::info!(vm = %vm, tap = %tap, "vm ready"),
        }
    }
    for (vm, _) in live.iter().filter(|v| !now.contains(v)) {
        match took {
            Some(us) => tracing::info!(vm = %vm, reaction_us = us, "vm gone"),
            None => tracing::info!(vm = %vm, "vm gone"),
        }
    }
    *live = now;
}

pub async fn down(config_path: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("down")?;
    let nl = Netlink::connect()?;
    if let Some(pid) = PidFile::running(&config.pidfile) {
        anyhow::bail!(
            "mvbridge is running (pid {pid}); stop it first, or it would put everything back"
        );
    }
    let removed = teardown::remove(&config, &nl).await?;
    if removed.is_empty() {
        println!("nothing to remove");
    } else {
        let hooks: Vec<String> = removed.hooks.iter().map(ToString::to_string).collect();
        println!(
            "removed {} hooks ({}), {} pins, links: {}",
            hooks.len(),
            hooks.join(", "),
            removed.pins,
            if removed.links.is_empty() {
                "none".to_owned()
            } else {
                removed.links.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mvbridge reload`: checks the config first (so a mistake is reported
/// here, not only in the daemon's log), then signals the daemon.
pub async fn request_reload(config_path: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let Some(pid) = PidFile::running(&config.pidfile) else {
        anyhow::bail!(
            "no running mvbridge found (pidfile {})",
            config.pidfile.display()
        );
    };
    // SAFETY: kill(2) with a pid read from our pidfile.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("signalling pid {pid}"));
    }
    println!("reload requested (pid {pid}); the daemon logs the outcome");
    Ok(ExitCode::SUCCESS)
}

/// The daemon's pidfile, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile> {
        if let Some(pid) = PidFile::running(path) {
            anyhow::bail!("another mvbridge (pid {pid}) is running with this pidfile");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidFile(path.to_owned()))
    }

    /// The pid in `path`, if that process is alive.
    fn running(path: &Path) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        // SAFETY: signal 0 only checks existence.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && pid != std::process::id() as i32)
            .then_some(pid)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
