//! Where mvbridge's programs run: typed hook keys, and attaching,
//! querying, replacing and detaching the hooks themselves. A hook is a
//! TCX link pinned on bpffs, so it outlives the daemon; its pin's name is
//! its key.

use std::fmt;
use std::path::Path;

use aya::programs::SchedClassifier;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;

use crate::bpffs::PinDir;
use crate::datapath::{Datapath, Role};
use crate::error::{Error, Result};
use crate::netns::InNetns;

/// A link, in the host's namespace or in a named one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkAt {
    Host(String),
    Netns { netns: String, ifname: String },
}

impl LinkAt {
    pub fn new(netns: Option<&str>, ifname: &str) -> LinkAt {
        match netns {
            Some(ns) => LinkAt::Netns {
                netns: ns.to_owned(),
                ifname: ifname.to_owned(),
            },
            None => LinkAt::Host(ifname.to_owned()),
        }
    }

    pub fn ifname(&self) -> &str {
        match self {
            LinkAt::Host(i) | LinkAt::Netns { ifname: i, .. } => i,
        }
    }

    pub fn netns(&self) -> Option<&str> {
        match self {
            LinkAt::Host(_) => None,
            LinkAt::Netns { netns, .. } => Some(netns),
        }
    }
}

impl fmt::Display for LinkAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAt::Host(i) => f.write_str(i),
            LinkAt::Netns { netns, ifname } => write!(f, "{netns}:{ifname}"),
        }
    }
}

/// One of our hooks: which program, on which link.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookKey {
    pub role: Role,
    pub at: LinkAt,
}

const PIN_PREFIX: &str = "hook_";

impl HookKey {
    /// The pin's file name: `hook_<role>_<ifname>`, or
    /// `hook_<role>_<netns>:<ifname>` for a link in another namespace.
    /// Role names hold no `_` and interface names no `:`, so the name reads
    /// back unambiguously; mvbridge has named its pins so since its first
    /// release.
    pub fn pin_name(&self) -> String {
        format!("{PIN_PREFIX}{}_{}", self.role.name(), self.at)
    }

    pub fn from_pin_name(name: &str) -> Option<HookKey> {
        let (role, at) = name.strip_prefix(PIN_PREFIX)?.split_once('_')?;
        let role = Role::from_name(role)?;
        let at = match at.rsplit_once(':') {
            Some((netns, ifname)) if !netns.is_empty() && !ifname.is_empty() => {
                LinkAt::new(Some(netns), ifname)
            }
            Some(_) => return None,
            None if !at.is_empty() => LinkAt::Host(at.to_owned()),
            None => return None,
        };
        Some(HookKey { role, at })
    }
}

impl fmt::Display for HookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.role.program(), self.at)
    }
}

/// The programs attached on `key`'s link and side, as (id, name).
pub fn programs_on(key: &HookKey) -> Result<Vec<(u32, String)>> {
    let ifname = key.at.ifname();
    let (_, progs) = InNetns::run(key.at.netns(), || {
        SchedClassifier::query_tcx(ifname, key.role.attach_type())
    })?
    .map_err(|e| Error::bpf(format!("querying the programs on {}", key.at), e))?;
    Ok(progs
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect())
}

/// Attaches `prog` as `key` and pins the link, so the hook outlives this
/// process until `detach` removes the pin. A stale pin of the same name (a
/// link that died with its device) is replaced.
pub fn attach(pins: &PinDir, key: &HookKey, prog: &mut SchedClassifier) -> Result<()> {
    let path = pins.hook(key);
    detach(&path)?;
    let link = InNetns::run(key.at.netns(), || -> Result<SchedClassifierLink> {
        let id = prog
            .attach(key.at.ifname(), key.role.attach_type())
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))?;
        prog.take_link(id)
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))
    })??;
    let fd_link: FdLink = link.try_into().map_err(|e| {
        Error::bpf(
            format!("pinning {key}: the kernel gave a netlink filter, not a TCX link (mvbridge needs Linux 6.6 or later)"),
            e,
        )
    })?;
    fd_link
        .pin(&path)
        .map_err(|e| Error::bpf(format!("pinning {key} at {}", path.display()), e))?;
    Ok(())
}

/// Detaches a pinned hook: dropping the last reference to a TCX link
/// detaches it. A missing pin is not an error (nothing to detach); a pin
/// that is not a link is removed all the same. True if a hook went.
pub fn detach(path: &Path) -> Result<bool> {
    match PinnedLink::from_pin(path) {
        Ok(pinned) => {
            let link = pinned
                .unpin()
                .map_err(|e| Error::io(format!("unpinning {}", path.display()), e))?;
            drop(link);
            Ok(true)
        }
        Err(_) if !path.exists() => Ok(false),
        Err(e) => {
            std::fs::remove_file(path)
                .map_err(|io| Error::io(format!("removing {}", path.display()), io))?;
            Err(Error::bpf(
                format!("{} was not a hook; removed it", path.display()),
                e,
            ))
        }
    }
}

/// Swaps this binary's programs into every pinned hook, atomically per
/// hook (`bpf_link_update`): traffic never meets a missing program. Pins
/// whose link no longer works (its device is gone) are removed. Returns
/// the hooks taken over.
pub fn adopt(pins: &PinDir, datapath: &mut Datapath) -> Vec<HookKey> {
    let mut adopted = Vec::new();
    for (key, path) in pins.hooks() {
        let replaced = PinnedLink::from_pin(&path)
            .map_err(|e| Error::bpf(format!("opening {}", path.display()), e))
            .and_then(|pinned| {
                let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                    .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))?;
                let prog = datapath.program(key.role)?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| Error::bpf(format!("replacing the program of {key}"), e))?;
                // The pin keeps the link; our handle on it can go.
                drop(
                    prog.take_link(id)
                        .map_err(|e| Error::bpf(format!("replacing {key}"), e))?,
                );
                Ok(())
            });
        match replaced {
            Ok(()) => adopted.push(key),
            Err(e) => {
                tracing::info!(hook = %key, "dropping a stale hook pin: {}", crate::errno::chain(&e));
                if let Err(e) = detach(&path) {
                    tracing::warn!(hook = %key, "{}", crate::errno::chain(&e));
                }
            }
        }
    }
    adopted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_read_back() {
        let keys = [
            HookKey {
                role: Role::Uplink,
                at: LinkAt::new(None, "enp9s0"),
            },
            HookKey {
                role: Role::ShimIn,
                at: LinkAt::new(None, "mvb0"),
            },
            HookKey {
                role: Role::Vm,
                at: LinkAt::new(None, "mvt_web"),
            },
            HookKey {
                role: Role::Vm,
                at: LinkAt::new(Some("ctr:1"), "eth0"),
            },
        ];
        for k in keys {
            assert_eq!(
                HookKey::from_pin_name(&k.pin_name()),
                Some(k.clone()),
                "{k}"
            );
        }
        // Names layout 1 wrote.
        assert_eq!(
            HookKey::from_pin_name("hook_vm_mvbt-1-0-vm-x:eth0"),
            Some(HookKey {
                role: Role::Vm,
                at: LinkAt::new(Some("mvbt-1-0-vm-x"), "eth0"),
            })
        );
        for bad in [
            "MVB_LOCAL4",
            "hook_",
            "hook_vm_",
            "hook_bogus_eth0",
            "hook_vm_ns:",
            "hook_vm_:eth0",
        ] {
            assert_eq!(HookKey::from_pin_name(bad), None, "{bad}");
        }
    }
}
