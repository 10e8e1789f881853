//! Hooks as classic TC filters, for kernels without TCX: a direct-action
//! BPF filter at mvbridge's own priority and handle on the link's clsact
//! qdisc (created when missing, and deleted with the last filter on it
//! only if mvbridge created it). A restart replaces the filter's program
//! in place (same priority and handle: the kernel swaps it under RCU), so
//! no frame meets a missing hook. Filters have no pin; a pinned map
//! records them by the name their pin would have.

use aya::maps::{HashMap, Map, MapData};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{Link as _, SchedClassifier, TcAttachType};
use mvbridge_common::abi;
use mvbridge_common::maps::{HOOK_QDISC_OURS, HookName, HookRecord};

use super::HookKey;
use crate::datapath::bpffs::PinDir;
use crate::datapath::object::Role;
use crate::error::{Error, Result};
use crate::kernel::netlink::{Filter, Link, Netlink};
use crate::kernel::netns::InNetns;

/// mvbridge's filters run first (priority 1 is the highest), so no other
/// classifier on the link takes a frame from them.
pub const PRIORITY: u16 = 1;
/// "MV": tells our filter from others at the same priority.
pub const HANDLE: u32 = 0x4d56;

/// The record map of the hooks attached as filters (none pinned yet: no
/// records).
pub struct Records {
    map: Option<HashMap<MapData, HookName, HookRecord>>,
}

fn record_name(key: &HookKey) -> Result<HookName> {
    let name = key.pin_name();
    let mut out = [0u8; 128];
    if name.len() >= out.len() {
        return Err(Error::HookNameTooLong {
            name,
            max: out.len() - 1,
        });
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn key_of(name: &HookName) -> Option<HookKey> {
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    HookKey::from_pin_name(std::str::from_utf8(&name[..end]).ok()?)
}

impl Records {
    pub fn open(pins: &PinDir) -> Result<Records> {
        let path = pins.map(&abi::HOOKS);
        if !path.exists() {
            return Ok(Records { map: None });
        }
        let opening = || format!("opening {}", path.display());
        let data = MapData::from_pin(&path).map_err(|e| Error::bpf(opening(), e))?;
        let map = Map::from_map_data(data).map_err(|e| Error::bpf(opening(), e))?;
        Ok(Records {
            map: Some(map.try_into().map_err(|e| Error::bpf(opening(), e))?),
        })
    }

    pub fn keys(&self) -> Vec<HookKey> {
        let Some(map) = &self.map else {
            return Vec::new();
        };
        map.keys()
            .filter_map(Result::ok)
            .filter_map(|k| key_of(&k))
            .collect()
    }

    /// mvbridge made the clsact qdisc of link `index` in `netns` (for an
    /// earlier hook on it).
    fn made_qdisc(&self, netns: Option<&str>, index: u32) -> bool {
        let Some(map) = &self.map else {
            return false;
        };
        map.iter().filter_map(Result::ok).any(|(name, r)| {
            r.ifindex == index
                && r.flags & HOOK_QDISC_OURS != 0
                && key_of(&name).is_some_and(|k| k.at.netns() == netns)
        })
    }

    fn get(&self, key: &HookKey) -> Result<Option<HookRecord>> {
        let name = record_name(key)?;
        Ok(self.map.as_ref().and_then(|m| m.get(&name, 0).ok()))
    }

    fn insert(&mut self, key: &HookKey, record: HookRecord) -> Result<()> {
        let name = record_name(key)?;
        let map = self
            .map
            .as_mut()
            .ok_or_else(|| Error::NoHookRecords { hook: key.clone() })?;
        map.insert(name, record, 0)
            .map_err(|e| Error::bpf(format!("recording {key}"), e))
    }

    /// Forgets `key`'s record (its link is gone, and the filter with it).
    pub fn forget(&mut self, key: &HookKey) -> Result<()> {
        let name = record_name(key)?;
        let Some(map) = self.map.as_mut() else {
            return Ok(());
        };
        match map.remove(&name) {
            Ok(()) => Ok(()),
            Err(e) if crate::errno::of(&e) == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::bpf(format!("forgetting {key}"), e)),
        }
    }
}

fn ingress(key: &HookKey) -> bool {
    key.role.attach_type() == TcAttachType::Ingress
}

fn is_ours(f: &Filter) -> bool {
    f.priority == PRIORITY && f.handle == HANDLE && f.kind == "bpf"
}

/// Our filter on `key`'s side of `link`, if it is there.
pub async fn ours(key: &HookKey, link: &Link, nl: &Netlink) -> Result<Option<Filter>> {
    Ok(nl
        .filters(link.index, ingress(key))
        .await?
        .into_iter()
        .find(is_ours))
}

/// Attaches `prog` as `key` on `link`, replacing our filter's program in
/// place if it is there; creates the clsact qdisc if the link has none.
/// Refuses (changing nothing) when the link has a plain ingress qdisc or
/// another classifier holds our priority.
pub async fn attach(
    records: &mut Records,
    key: &HookKey,
    link: &Link,
    nl: &Netlink,
    prog: &mut SchedClassifier,
) -> Result<()> {
    let qdiscs = nl.qdiscs(link.index).await?;
    let has_clsact = qdiscs.iter().any(|q| q == "clsact");
    if !has_clsact && qdiscs.iter().any(|q| q == "ingress") {
        return Err(Error::Unfit(format!(
            "{} has an ingress qdisc; mvbridge's filters need a clsact qdisc there (its egress side too): replace it with `tc qdisc add dev {} clsact` after moving its filters",
            key.at,
            key.at.ifname()
        )));
    }
    let filters = nl.filters(link.index, ingress(key)).await?;
    if let Some(f) = filters
        .iter()
        .find(|f| f.priority == PRIORITY && !is_ours(f))
    {
        return Err(Error::Unfit(format!(
            "a {} filter of someone else's (handle {:#x}) holds priority {PRIORITY} on {} {}; mvbridge's filters run first, at priority {PRIORITY} handle {HANDLE:#x}: move that filter to another priority",
            f.kind,
            f.handle,
            key.at,
            key.side()
        )));
    }
    let replace = filters.iter().any(is_ours);
    let ifname = key.at.ifname();
    let attach_type = key.role.attach_type();
    // On a kernel with TCX (attach = "tc" forced), its programs run before
    // any filter: one there could keep frames from ours.
    let tcx = InNetns::run(key.at.netns(), || {
        SchedClassifier::query_tcx(ifname, attach_type)
    })?;
    if let Ok((_, progs)) = tcx
        && let Some(p) = progs.iter().find(|p| {
            let name = p.name_as_str().unwrap_or("?");
            !Role::ALL.iter().any(|r| r.program() == name)
        })
    {
        return Err(Error::Unfit(format!(
            "TCX program {:?} on {} {} runs before any classic filter, mvbridge's too: use attach = \"auto\" on this kernel",
            p.name_as_str().unwrap_or("?"),
            key.at,
            key.side()
        )));
    }
    let created = InNetns::run(key.at.netns(), || -> Result<bool> {
        let created = if has_clsact {
            false
        } else {
            match aya::programs::tc::qdisc_add_clsact(ifname) {
                Ok(()) => true,
                // Someone made it in the meantime: theirs.
                Err(e) if crate::errno::of(&e) == Some(libc::EEXIST) => false,
                Err(e) => {
                    return Err(Error::bpf(
                        format!("adding a clsact qdisc to {}", key.at),
                        e,
                    ));
                }
            }
        };
        let id = if replace {
            let ours = SchedClassifierLink::attached(
                ifname,
                attach_type,
                PRIORITY,
                TcHandle::from(HANDLE),
                None,
            )
            .map_err(|e| Error::io(format!("finding {key}"), e))?;
            prog.attach_to_link(ours)
                .map_err(|e| Error::bpf(format!("replacing the program of {key}"), e))?
        } else {
            let options = NlOptions {
                priority: PRIORITY,
                handle: TcHandle::from(HANDLE),
                classid: None,
            };
            prog.attach_with_options(ifname, attach_type, TcAttachOptions::Netlink(options))
                .map_err(|e| Error::bpf(format!("attaching {key}"), e))?
        };
        let attached = prog
            .take_link(id)
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))?;
        // The filter must outlive this process (dropping the handle would
        // detach it); the handle holds no descriptor, nothing leaks.
        std::mem::forget(attached);
        Ok(created)
    })??;
    // Whichever hook on the link made the qdisc, each of them may delete
    // it: the last one to go does.
    let ours = created || records.made_qdisc(key.at.netns(), link.index);
    let flags = if ours { HOOK_QDISC_OURS } else { 0 };
    records.insert(
        key,
        HookRecord {
            ifindex: link.index,
            flags,
        },
    )
}

/// Removes our filter for `key` (`nl`: a connection into its namespace)
/// and forgets it; deletes the clsact qdisc if mvbridge created it and no
/// filter is left on it. True if the filter was still there.
pub async fn detach(records: &mut Records, key: &HookKey, nl: &Netlink) -> Result<bool> {
    let Some(record) = records.get(key)? else {
        return Ok(false);
    };
    let index = record.ifindex;
    let filters = match nl.filters(index, ingress(key)).await {
        Ok(f) => f,
        // The link is gone, and its filters with it.
        Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::EINVAL)) => {
            records.forget(key)?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let was_there = filters.iter().any(is_ours);
    if was_there {
        InNetns::run(key.at.netns(), || -> Result<()> {
            let name =
                ifname_of(index).map_err(|e| Error::io(format!("finding link {index}"), e))?;
            let ours = SchedClassifierLink::attached(
                &name,
                key.role.attach_type(),
                PRIORITY,
                TcHandle::from(HANDLE),
                None,
            )
            .map_err(|e| Error::io(format!("finding {key}"), e))?;
            ours.detach()
                .map_err(|e| Error::bpf(format!("detaching {key}"), e))
        })??;
    }
    records.forget(key)?;
    if record.flags & HOOK_QDISC_OURS != 0 {
        let left = nl.filters(index, true).await?.len() + nl.filters(index, false).await?.len();
        if left == 0 {
            nl.delete_clsact(index).await?;
        }
    }
    Ok(was_there)
}

/// The name of link `index` in the calling thread's namespace.
fn ifname_of(index: u32) -> std::io::Result<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::hooks::LinkAt;
    use crate::datapath::object::Role;

    #[test]
    fn record_names_read_back() {
        let key = HookKey {
            role: Role::Vm,
            at: LinkAt::new(Some("ctr1"), "eth0"),
        };
        assert_eq!(key_of(&record_name(&key).unwrap()), Some(key));
        let long = HookKey {
            role: Role::Vm,
            at: LinkAt::new(Some(&"n".repeat(200)), "eth0"),
        };
        assert!(
            record_name(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 127 bytes")
        );
    }
}
