//! The maps, declared from the ABI table (`mvbridge_common::abi`): each
//! declaration is checked against its row when this crate compiles (name,
//! kind, key and value sizes), and takes its capacity from it. Pinned by
//! name, so `mvbridge status` and `down` can open them from another
//! process and a restarted daemon can adopt them with their contents.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mvbridge_common::{
    abi::{self, MapKind, MapSpec},
    maps::{Counter, Endpoint, Ipv4Key, Ipv6Key, LearnEvent, Mac, Settings, VmCounters, VmLink},
    ratelimit::Bucket,
};

/// `spec` describes a map named `name` of `kind` with these key and value
/// sizes.
const fn agrees(spec: MapSpec, name: &str, kind: MapKind, key: usize, value: usize) -> bool {
    spec.is_named(name)
        && spec.kind as u32 == kind as u32
        && spec.key_size as usize == key
        && spec.value_size as usize == value
}

/// Declares a keyed map (`Kind<K, V>`) from its ABI row.
macro_rules! keyed {
    ($name:ident: $ty:ident<$k:ty, $v:ty> = $spec:expr, $kind:expr) => {
        #[map]
        pub static $name: $ty<$k, $v> = $ty::pinned($spec.max_entries, 0);
        const _: () = assert!(agrees(
            $spec,
            stringify!($name),
            $kind,
            core::mem::size_of::<$k>(),
            core::mem::size_of::<$v>()
        ));
    };
}

/// Declares an array (`Kind<V>`, keyed by slot) from its ABI row.
macro_rules! array {
    ($name:ident: $ty:ident<$v:ty> = $spec:expr, $kind:expr) => {
        #[map]
        pub static $name: $ty<$v> = $ty::pinned($spec.max_entries, 0);
        const _: () = assert!(agrees(
            $spec,
            stringify!($name),
            $kind,
            core::mem::size_of::<u32>(),
            core::mem::size_of::<$v>()
        ));
    };
}

array!(MVB_SETTINGS: Array<Settings> = abi::SETTINGS, MapKind::Array);
keyed!(MVB_LOCAL4: HashMap<Ipv4Key, Endpoint> = abi::LOCAL4, MapKind::Hash);
keyed!(MVB_LOCAL6: HashMap<Ipv6Key, Endpoint> = abi::LOCAL6, MapKind::Hash);
keyed!(MVB_MACS: HashMap<Mac, Endpoint> = abi::MACS, MapKind::Hash);
array!(MVB_LINKS: Array<VmLink> = abi::LINKS, MapKind::Array);
keyed!(MVB_LINKS_HIGH: HashMap<u32, VmLink> = abi::LINKS_HIGH, MapKind::Hash);
array!(MVB_PATHS: PerCpuArray<Counter> = abi::PATHS, MapKind::PerCpuArray);
array!(MVB_DROPS: PerCpuArray<u64> = abi::DROPS, MapKind::PerCpuArray);
array!(MVB_VMSTATS: PerCpuArray<VmCounters> = abi::VMSTATS, MapKind::PerCpuArray);
array!(MVB_NDRATE: PerCpuArray<Bucket> = abi::NDRATE, MapKind::PerCpuArray);
keyed!(MVB_LEARNT: LruHashMap<LearnEvent, u64> = abi::LEARNT, MapKind::LruHash);

#[map]
pub static MVB_LEARN: RingBuf = RingBuf::pinned(abi::LEARN.max_entries, 0);
const _: () = assert!(agrees(abi::LEARN, "MVB_LEARN", MapKind::RingBuf, 0, 0));
