//! Hooks as TCX links (Linux 6.6+): attached first in the link's program
//! chain, pinned on bpffs under the hook's name, replaced in place with
//! `bpf_link_update`.

use std::path::Path;

use aya::programs::SchedClassifier;
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};

use super::HookKey;
use crate::datapath::bpffs::PinDir;
use crate::datapath::object::Datapath;
use crate::error::{Error, Result};
use crate::kernel::netns::InNetns;

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

/// Attaches `prog` as `key`, before any other program on that side of the
/// link (so none can take a frame from us first), and pins the link, so
/// the hook outlives this process until `detach` removes the pin. A stale
/// pin of the same name (a link that died with its device) is replaced.
pub fn attach(pins: &PinDir, key: &HookKey, prog: &mut SchedClassifier) -> Result<()> {
    let path = pins.hook(key);
    detach(&path)?;
    let link = InNetns::run(key.at.netns(), || -> Result<SchedClassifierLink> {
        let id = prog
            .attach_with_options(
                key.at.ifname(),
                key.role.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))?;
        prog.take_link(id)
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))
    })??;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e| Error::bpf(format!("pinning {key}"), e))?;
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
