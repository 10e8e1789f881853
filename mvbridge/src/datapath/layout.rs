//! The pinned maps' layout across versions: checking pinned maps before
//! they are adopted (aya would reuse a pin without looking), and carrying
//! an older layout's entries into this one, so an upgrade whose maps
//! changed is still a restart without a gap.
//!
//! A migration loads this binary's programs with fresh maps in the new
//! layout's directory, copies every entry over, swaps the programs into
//! the pinned hooks (each swap atomic; old programs keep using the old
//! maps until their own swap), then removes the old layout's pins.
//! Interrupted anywhere, the next start finds both layouts and does it
//! again from the old one.

use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{MapData, MapInfo};
use mvbridge_common::abi::{self, MapKind, MapSpec};
use mvbridge_common::maps::{VMLINK_PRESENT, VmLink};

use crate::datapath::bpffs::PinDir;
use crate::datapath::maps::PinnedMaps;
use crate::datapath::rawmap as raw;
use crate::error::{Error, Result};

/// What a start finds pinned, and so what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing: create everything.
    Fresh,
    /// This layout: adopt the maps as they are.
    Adopt,
    /// An older layout: carry it into this one.
    Migrate { from: u32 },
}

/// Decides how to start from what is pinned under `pins`. A layout newer
/// than this binary's is refused: its maps would be misread.
pub fn start(pins: &PinDir) -> Result<Start> {
    let found = pins.layouts();
    if let Some(newer) = found.iter().find(|l| **l > abi::LAYOUT) {
        return Err(Error::Incompatible {
            path: pins.maps_of(*newer),
            found: format!("map layout {newer}, from a newer mvbridge"),
            wanted: format!("layout {}", abi::LAYOUT),
        });
    }
    let older = found.iter().copied().filter(|l| *l < abi::LAYOUT).max();
    Ok(match older {
        Some(from) => Start::Migrate { from },
        None if found.contains(&abi::LAYOUT) => Start::Adopt,
        None => Start::Fresh,
    })
}

/// The pinned maps, for a process that only reads them (`status`, the
/// metrics, `check`). `None` when nothing is pinned (no datapath); an
/// error when what is pinned cannot be read: another layout than this
/// binary's, maps that do not match it, no permission.
pub fn open_pinned(pins: &PinDir) -> Result<Option<PinnedMaps>> {
    // What `layouts` would take for an empty directory, when it cannot
    // be read.
    pins.entries()
        .map_err(|e| Error::io(format!("reading {}", pins.dir.display()), e))?;
    let found = pins.layouts();
    let Some(&newest) = found.last() else {
        return Ok(None);
    };
    // A newer layout is refused as a start would refuse it.
    start(pins)?;
    if !found.contains(&abi::LAYOUT) {
        return Err(Error::OlderLayout {
            path: pins.maps_of(newest),
            found: newest,
            wanted: abi::LAYOUT,
        });
    }
    check(&pins.maps(), &specs_of(abi::LAYOUT).unwrap_or_default())?;
    PinnedMaps::open(pins).map(Some)
}

/// Checks, before anything changes, that what `start` will adopt or
/// migrate from is what it should be.
pub fn verify(pins: &PinDir, start: Start) -> Result<()> {
    match start {
        Start::Fresh => Ok(()),
        Start::Adopt => check(&pins.maps(), &specs_of(abi::LAYOUT).unwrap_or_default()),
        Start::Migrate { from } => {
            let specs = specs_of(from).ok_or_else(|| Error::Incompatible {
                path: pins.maps_of(from),
                found: format!("map layout {from}"),
                wanted: format!("layout {} or one it can carry over", abi::LAYOUT),
            })?;
            check(&pins.maps_of(from), &specs)
        }
    }
}

/// Checks that the maps pinned in `dir` are the ones `specs` describe
/// (those pinned at all: a missing one is created on load).
pub fn check(dir: &Path, specs: &[MapSpec]) -> Result<()> {
    for spec in specs {
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)
            .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))?;
        let got = (
            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let want = (
            spec.kind as u32,
            spec.key_size,
            spec.value_size,
            spec.max_entries,
        );
        if got != want {
            return Err(Error::Incompatible {
                path,
                found: format!("type/key/value/entries {got:?}"),
                wanted: format!("{want:?}"),
            });
        }
    }
    Ok(())
}

/// How one map's entries cross from layout `from` to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Entry for entry, byte for byte.
    Same,
    /// Slot for slot (arrays), each value cut or zero-extended to the new
    /// size: for values the new layout only grew or shrank at the end.
    Prefix,
    /// Not carried: memory of the programs' own (report throttling),
    /// rebuilt as traffic comes, or a ring with nothing to keep.
    Fresh,
    /// Layout 1's link table, a hash of 16-byte entries, into the array
    /// (and its hash for large ifindexes) of larger entries; the first
    /// pass fills in the VMs' usual addresses.
    LinksFromHash,
}

/// The maps of layout `layout` (those this binary can migrate from).
pub fn specs_of(layout: u32) -> Option<Vec<MapSpec>> {
    let now = abi::PROGRAM_MAPS.iter().chain(&abi::LOADER_MAPS).copied();
    match layout {
        l if l == abi::LAYOUT => Some(now.collect()),
        1 => Some(
            // Layout 1 attached TCX links only (no hook records) and had
            // one link table.
            now.filter(|spec| spec.name != abi::HOOKS.name && spec.name != abi::LINKS_HIGH.name)
                .map(|spec| match spec.name {
                    // A hash of slot, flags, MAC and padding.
                    "MVB_LINKS" => MapSpec {
                        kind: MapKind::Hash,
                        value_size: 16,
                        max_entries: abi::MAX_VMS,
                        ..spec
                    },
                    // Settings carried the shim's ifindex at the end.
                    "MVB_SETTINGS" => MapSpec {
                        value_size: 20,
                        ..spec
                    },
                    // One drop counter per reason, 8 reasons.
                    "MVB_DROPS" => MapSpec {
                        max_entries: 8,
                        ..spec
                    },
                    _ => spec,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Every migration this binary knows, per map.
pub fn carry(from: u32, spec: &MapSpec) -> Option<Carry> {
    match (from, spec.name) {
        // Layout 1: Settings had a trailing field no program read; the
        // drop counters had one slot per reason, now room to grow.
        (1, "MVB_SETTINGS") | (1, "MVB_DROPS") => Some(Carry::Prefix),
        (1, "MVB_LEARN") | (1, "MVB_LEARNT") | (1, "MVB_HOOKS") | (1, "MVB_LINKS_HIGH") => {
            Some(Carry::Fresh)
        }
        (1, "MVB_LINKS") => Some(Carry::LinksFromHash),
        (1, _) => Some(Carry::Same),
        _ => None,
    }
}

/// Copies the entries of layout `from` (pinned under `pins`) into this
/// layout's freshly created maps.
pub fn migrate(pins: &PinDir, from: u32) -> Result<usize> {
    let old_dir = pins.maps_of(from);
    let mut copied = 0;
    for spec in abi::PROGRAM_MAPS.iter().chain(&abi::LOADER_MAPS) {
        let rule = carry(from, spec).ok_or(Error::NoMigration {
            map: spec.name,
            from,
        })?;
        let old_path = old_dir.join(spec.name);
        if rule == Carry::Fresh || !old_path.exists() {
            continue;
        }
        let open = |path: &Path| {
            MapData::from_pin(path)
                .map_err(|e| Error::bpf(format!("opening {}", path.display()), e))
        };
        let old = open(&old_path)?;
        let new = open(&pins.map(spec))?;
        let old_info = info(&old_path)?;
        if rule == Carry::LinksFromHash {
            let high = open(&pins.map(&abi::LINKS_HIGH))?;
            copied += links_from_hash(&old, &new, &high)?;
            continue;
        }
        copied += match spec.kind {
            MapKind::Hash | MapKind::LruHash => copy_hash(&old, &new, spec, &old_info)?,
            MapKind::Array | MapKind::PerCpuArray => copy_array(&old, &new, spec, &old_info, rule)?,
            MapKind::RingBuf => 0,
        };
    }
    Ok(copied)
}

/// Removes layout `from`'s map pins (its maps live on while a program
/// still uses them).
pub fn remove(pins: &PinDir, from: u32) -> Result<()> {
    let dir = pins.maps_of(from);
    for spec in abi::PROGRAM_MAPS.iter().chain(&abi::LOADER_MAPS) {
        let path = dir.join(spec.name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    if from != 1 {
        std::fs::remove_dir(&dir)
            .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
    }
    Ok(())
}

/// Forgets a half-made layout directory (an interrupted migration).
pub fn discard(pins: &PinDir, layout: u32) -> Result<()> {
    let dir = pins.maps_of(layout);
    if layout == 1 || !dir.exists() {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for e in entries.flatten() {
        std::fs::remove_file(e.path())
            .map_err(|io| Error::io(format!("removing {}", e.path().display()), io))?;
    }
    std::fs::remove_dir(&dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

struct Info {
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

fn info(path: &Path) -> Result<Info> {
    let i = MapInfo::from_pin(path)
        .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))?;
    Ok(Info {
        key_size: i.key_size(),
        value_size: i.value_size(),
        max_entries: i.max_entries(),
    })
}

/// Layout 1's link entries (slot, flags, MAC, padding: 16 bytes) into
/// this layout's, marked present.
fn links_from_hash(old: &MapData, array: &MapData, high: &MapData) -> Result<usize> {
    let mut copied = 0;
    let mut key: Option<Vec<u8>> = None;
    let mut value = [0u8; 16];
    while let Some(next) = raw::next_key(old.fd().as_fd(), key.as_deref(), 4)? {
        if raw::lookup(old.fd().as_fd(), &next, &mut value)? {
            let ifindex = u32::from_ne_bytes([next[0], next[1], next[2], next[3]]);
            let link = VmLink {
                slot: u32::from_ne_bytes([value[0], value[1], value[2], value[3]]),
                flags: u32::from_ne_bytes([value[4], value[5], value[6], value[7]])
                    | VMLINK_PRESENT,
                mac: [
                    value[8], value[9], value[10], value[11], value[12], value[13],
                ],
                ..VmLink::default()
            };
            // SAFETY: VmLink is plain old data; read as its bytes.
            let bytes: &[u8] = unsafe {
                std::slice::from_raw_parts(
                    (&link as *const VmLink).cast(),
                    std::mem::size_of::<VmLink>(),
                )
            };
            let to = if ifindex < abi::LINKS_ARRAY {
                array
            } else {
                high
            };
            raw::update(to.fd().as_fd(), &next, bytes)?;
            copied += 1;
        }
        key = Some(next);
    }
    Ok(copied)
}

fn copy_hash(old: &MapData, new: &MapData, spec: &MapSpec, from: &Info) -> Result<usize> {
    if (from.key_size, from.value_size) != (spec.key_size, spec.value_size) {
        return Err(Error::Unconvertible {
            map: spec.name,
            change: format!(
                "key/value sizes changed ({}/{} -> {}/{})",
                from.key_size, from.value_size, spec.key_size, spec.value_size
            ),
        });
    }
    let mut copied = 0;
    let mut key: Option<Vec<u8>> = None;
    let mut value = vec![0u8; spec.value_size as usize];
    while let Some(next) = raw::next_key(old.fd().as_fd(), key.as_deref(), spec.key_size)? {
        if raw::lookup(old.fd().as_fd(), &next, &mut value)? {
            raw::update(new.fd().as_fd(), &next, &value)?;
            copied += 1;
        }
        key = Some(next);
    }
    Ok(copied)
}

fn copy_array(
    old: &MapData,
    new: &MapData,
    spec: &MapSpec,
    from: &Info,
    rule: Carry,
) -> Result<usize> {
    let per_cpu = spec.kind == MapKind::PerCpuArray;
    if rule == Carry::Same && from.value_size != spec.value_size {
        return Err(Error::Unconvertible {
            map: spec.name,
            change: format!(
                "value size changed ({} -> {})",
                from.value_size, spec.value_size
            ),
        });
    }
    let cpus = if per_cpu {
        aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting CPUs", e))?
    } else {
        1
    };
    // Per-CPU values come one per possible CPU, each rounded up to 8 bytes.
    let stride = |size: u32| {
        if per_cpu {
            (size as usize).div_ceil(8) * 8
        } else {
            size as usize
        }
    };
    let (old_stride, new_stride) = (stride(from.value_size), stride(spec.value_size));
    let keep = from.value_size.min(spec.value_size) as usize;
    let mut old_value = vec![0u8; old_stride * cpus];
    let mut copied = 0;
    for slot in 0..from.max_entries.min(spec.max_entries) {
        let key = slot.to_ne_bytes();
        // Fresh maps hold zeros: only slots in use need copying.
        if !raw::lookup(old.fd().as_fd(), &key, &mut old_value)?
            || old_value.iter().all(|b| *b == 0)
        {
            continue;
        }
        let mut new_value = vec![0u8; new_stride * cpus];
        for cpu in 0..cpus {
            new_value[cpu * new_stride..cpu * new_stride + keep]
                .copy_from_slice(&old_value[cpu * old_stride..cpu * old_stride + keep]);
        }
        raw::update(new.fd().as_fd(), &key, &new_value)?;
        copied += 1;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_of_layout_1_has_a_rule() {
        for spec in abi::PROGRAM_MAPS.iter().chain(&abi::LOADER_MAPS) {
            assert!(carry(1, spec).is_some(), "{}", spec.name);
        }
        assert_eq!(carry(1, &abi::SETTINGS), Some(Carry::Prefix));
        assert_eq!(carry(1, &abi::LOCAL4), Some(Carry::Same));
        assert_eq!(carry(7, &abi::LOCAL4), None);
    }
}
