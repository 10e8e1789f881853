//! Removing everything mvbridge put into the kernel, from the daemon at
//! exit or from `mvbridge down` in another process, even after a crash:
//! hooks and maps are found through their pins, links through their alias.

use anyhow::Result;

use crate::bpffs::PinDir;
use crate::config::Config;
use crate::datapath;
use crate::netlink::Netlink;
use crate::observe;

/// What was removed, for the log and for `down`'s report.
#[derive(Debug, Default)]
pub struct Removed {
    pub hooks: Vec<String>,
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
    // before the links it points to go away.
    let mut hooks = pins.hooks()?;
    hooks.sort_by_key(|(_, role, ifname)| (role != "uplink", ifname.clone()));
    for (path, _, ifname) in &hooks {
        match datapath::detach(path) {
            Ok(true) => removed.hooks.push(ifname.clone()),
            Ok(false) => {}
            Err(e) => problems.push(format!("detaching {ifname}: {e}")),
        }
    }
    for path in pins.entries()? {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.pins += 1,
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
        if observe::is_ours(link) && on_uplink {
            match nl.delete(link.index).await {
                Ok(()) => removed.links.push(link.name.clone()),
                Err(e) if e.errno == Some(libc::ENODEV) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if problems.is_empty() {
        Ok(removed)
    } else {
        anyhow::bail!("could not remove everything: {}", problems.join("; "))
    }
}
