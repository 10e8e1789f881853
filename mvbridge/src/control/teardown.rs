//! Removing everything mvbridge put into the kernel, from the daemon at
//! exit or from `mvbridge down` in another process, even after a crash:
//! hooks and maps are found through their pins (every layout's), links
//! through their alias.

use std::path::Path;

use crate::config::Config;
use crate::control::plan;
use crate::datapath::bpffs::PinDir;
use crate::datapath::hooks::{AttachMode, HookKey, Hooks};
use crate::datapath::object::Role;
use crate::error::{Error, Result};
use crate::kernel::netlink::Netlink;
use crate::kernel::rcu::Expedite;

/// What was removed, for the log and for `down`'s report.
#[derive(Debug, Default)]
pub struct Removed {
    pub hooks: Vec<HookKey>,
    pub pins: usize,
    pub links: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.pins == 0 && self.links.is_empty()
    }
}

pub async fn remove(config: &Config, nl: &Netlink) -> Result<Removed> {
    let mut removed = Removed::default();
    let mut problems = Vec::new();
    let pins = PinDir::new(&config.bpffs);

    // Hooks first, the uplink's before the others, so steering stops
    // before the links it points to go away; however they were attached.
    let mut hooks = Hooks::open(&pins, AttachMode::probe())?;
    let mut found = hooks.found();
    found.sort_by_key(|f| (f.key.role != Role::Uplink, f.key.clone()));
    // Each TCX detach waits for a grace period; put back when this returns.
    let mut expedite = Expedite::new(&config.pidfile);
    if found.iter().any(|f| f.mode == AttachMode::Tcx) {
        expedite.begin(config.expedite_rcu);
    }
    for f in found {
        let there = match f.key.at.netns() {
            None => Some(nl.clone()),
            // A namespace that is gone took its links and their filters.
            Some(ns) => Netlink::connect_in(ns).ok(),
        };
        match hooks.remove(&f, there.as_ref()).await {
            Ok(true) => removed.hooks.push(f.key),
            Ok(false) => {}
            Err(e) => problems.push(crate::errno::chain(&e)),
        }
    }
    for path in pins
        .entries()
        .map_err(|e| Error::io("listing the pin directory", e))?
    {
        match remove_pin(&path) {
            Ok(n) => removed.pins += n,
            Err(e) => problems.push(format!("removing {}: {e}", path.display())),
        }
    }

    // Links we created carry our alias; only those on this uplink go.
    let links = nl.links().await?;
    let uplink = links
        .iter()
        .find(|l| l.name == config.uplink)
        .map(|l| l.index);
    for link in &links {
        let on_uplink = uplink.is_some() && link.lower == uplink;
        if plan::is_ours(link) && on_uplink {
            match nl.delete(link.index).await {
                Ok(()) => removed.links.push(link.name.clone()),
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                Err(e) => problems.push(crate::errno::chain(&e)),
            }
        }
    }
    if problems.is_empty() {
        Ok(removed)
    } else {
        Err(Error::Unfit(format!(
            "could not remove everything: {}",
            problems.join("; ")
        )))
    }
}

/// Removes a pin, or a layout's directory of pins; how many pins went.
fn remove_pin(path: &Path) -> std::io::Result<usize> {
    if path.is_dir() {
        let mut n = 0;
        for e in std::fs::read_dir(path)? {
            std::fs::remove_file(e?.path())?;
            n += 1;
        }
        std::fs::remove_dir(path)?;
        Ok(n)
    } else {
        std::fs::remove_file(path)?;
        Ok(1)
    }
}
