//! The maps the programs and the loader share, in one table: name, kind,
//! key and value types (by size), capacity; and the layout version pinned
//! maps carry. The programs declare their maps from it (checked when the
//! eBPF crate compiles), the loader checks pinned maps against it before
//! adopting them, and a test compares it with the built object.
//!
//! Any change to a row is a new layout: bump [`LAYOUT`], and teach the
//! loader's migration how to carry entries over from the previous one.

use core::mem::size_of;

use crate::maps::{
    Counter, Endpoint, HookName, HookRecord, Ipv4Key, Ipv6Key, LearnEvent, Mac, Settings,
    VmCounters, VmLink,
};
use crate::ratelimit::Bucket;
use crate::stats::{DROP_SLOTS, PATH_SLOTS};

/// The layout of the pinned maps. Layout 1 (mvbridge before this table)
/// pinned its maps at the root of the pin directory; later layouts pin
/// them in a directory of their own, named after the version.
pub const LAYOUT: u32 = 2;

/// BPF map types, as the kernel numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHash = 9,
    RingBuf = 27,
}

/// One map of the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The name it is pinned under (and its symbol in the object).
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl MapSpec {
    pub const fn of<K, V>(name: &'static str, kind: MapKind, max_entries: u32) -> MapSpec {
        MapSpec {
            name,
            kind,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
        }
    }

    /// `self` is named `name` (for compile-time checks of declarations).
    pub const fn is_named(&self, name: &str) -> bool {
        let (a, b) = (self.name.as_bytes(), name.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// Capacity of the address tables: 10,000 VMs with a few addresses each.
pub const MAX_ENDPOINTS: u32 = 65_536;
/// Capacity of the VM tables: one entry per VM.
pub const MAX_VMS: u32 = 16_384;
/// Size of the learning event ring, in bytes.
pub const LEARN_RING_BYTES: u32 = 64 * 1024;
/// How many (link, address) pairs the programs remember having reported.
pub const LEARNT_MEMORY: u32 = 4096;

/// Settings that apply to every program: slot 0.
pub const SETTINGS: MapSpec = MapSpec::of::<u32, Settings>("MVB_SETTINGS", MapKind::Array, 1);
/// Local IPv4 addresses: the host's, the VMs', and neighbours on the wire.
pub const LOCAL4: MapSpec =
    MapSpec::of::<Ipv4Key, Endpoint>("MVB_LOCAL4", MapKind::Hash, MAX_ENDPOINTS);
/// Local IPv6 addresses, link-local ones included.
pub const LOCAL6: MapSpec =
    MapSpec::of::<Ipv6Key, Endpoint>("MVB_LOCAL6", MapKind::Hash, MAX_ENDPOINTS);
/// The VMs by their MAC.
pub const MACS: MapSpec = MapSpec::of::<Mac, Endpoint>("MVB_MACS", MapKind::Hash, MAX_VMS);
/// The VMs by their link's ifindex, for ifindexes below [`LINKS_ARRAY`]:
/// an array, which the verifier turns into plain arithmetic (no helper
/// call) on every frame a VM sends.
pub const LINKS: MapSpec = MapSpec::of::<u32, VmLink>("MVB_LINKS", MapKind::Array, LINKS_ARRAY);
/// The VMs whose link's ifindex is past the array (a host that has
/// started VMs for months: libvirt makes a new macvtap, with a new
/// ifindex, every time).
pub const LINKS_HIGH: MapSpec =
    MapSpec::of::<u32, VmLink>("MVB_LINKS_HIGH", MapKind::Hash, MAX_VMS);
/// Ifindexes served by the [`LINKS`] array.
pub const LINKS_ARRAY: u32 = 65_536;
/// Steered traffic per path and protocol, per CPU.
pub const PATHS: MapSpec =
    MapSpec::of::<u32, Counter>("MVB_PATHS", MapKind::PerCpuArray, PATH_SLOTS);
/// Drops per reason, per CPU.
pub const DROPS: MapSpec = MapSpec::of::<u32, u64>("MVB_DROPS", MapKind::PerCpuArray, DROP_SLOTS);
/// Per-VM traffic, per CPU, by counter slot.
pub const VMSTATS: MapSpec =
    MapSpec::of::<u32, VmCounters>("MVB_VMSTATS", MapKind::PerCpuArray, MAX_VMS);
/// Addresses learning VMs used that no table knew, for the daemon to vet.
pub const LEARN: MapSpec = MapSpec {
    name: "MVB_LEARN",
    kind: MapKind::RingBuf,
    key_size: 0,
    value_size: 0,
    max_entries: LEARN_RING_BYTES,
};
/// When each (link, address) was last reported.
pub const LEARNT: MapSpec =
    MapSpec::of::<LearnEvent, u64>("MVB_LEARNT", MapKind::LruHash, LEARNT_MEMORY);
/// Per VM slot, per CPU: the token bucket for its ARP/ND to local
/// endpoints.
pub const NDRATE: MapSpec = MapSpec::of::<u32, Bucket>("MVB_NDRATE", MapKind::PerCpuArray, MAX_VMS);

/// Every map the programs declare.
pub const PROGRAM_MAPS: [MapSpec; 12] = [
    SETTINGS, LOCAL4, LOCAL6, MACS, LINKS, LINKS_HIGH, PATHS, DROPS, VMSTATS, LEARN, LEARNT, NDRATE,
];

/// VM name hash -> counter slot. Created and pinned by the loader (the
/// programs never read it), so a restarted daemon gives every VM its old
/// slot back.
pub const SLOTS: MapSpec = MapSpec::of::<u64, u32>("MVB_SLOTS", MapKind::Hash, MAX_VMS);
/// Hooks attached as classic TC filters (which, unlike TCX links, have no
/// pin to find them by): created and pinned by the loader.
pub const HOOKS: MapSpec =
    MapSpec::of::<HookName, HookRecord>("MVB_HOOKS", MapKind::Hash, 2 * MAX_VMS);

/// The maps the loader creates (the programs never see them).
pub const LOADER_MAPS: [MapSpec; 2] = [SLOTS, HOOKS];

/// Program names as the kernel shows them (at most 15 bytes).
pub const PROG_UPLINK: &str = "mvb_uplink";
pub const PROG_VM: &str = "mvb_vm";
pub const PROG_SHIM: &str = "mvb_shim";
pub const PROG_SHIM_IN: &str = "mvb_shim_in";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_checked() {
        let mut all = PROGRAM_MAPS.to_vec();
        all.extend(LOADER_MAPS);
        for (i, a) in all.iter().enumerate() {
            assert!(a.is_named(a.name));
            for b in &all[i + 1..] {
                assert!(!a.is_named(b.name), "{} twice", a.name);
            }
        }
        assert!(!LOCAL4.is_named("MVB_LOCAL6"));
        assert!(!LOCAL4.is_named("MVB_LOCAL"));
    }
}
