//! The maps, pinned by name so `mvbridge status` and `down` can open them
//! from another process and a restarted daemon can adopt them with their
//! contents (hitless restarts).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mvbridge_common::{
    maps::{
        Counter, Endpoint, Ipv4Key, Ipv6Key, LEARN_RING_BYTES, LEARNT_MEMORY, LearnEvent,
        MAX_ENDPOINTS, MAX_VMS, Mac, Settings, VmCounters, VmLink,
    },
    ratelimit::Bucket,
    stats::{DROP_SLOTS, PATH_SLOTS},
};

#[map]
pub static MVB_SETTINGS: Array<Settings> = Array::pinned(1, 0);

#[map]
pub static MVB_LOCAL4: HashMap<Ipv4Key, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static MVB_LOCAL6: HashMap<Ipv6Key, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map]
pub static MVB_MACS: HashMap<Mac, Endpoint> = HashMap::pinned(MAX_VMS, 0);

#[map]
pub static MVB_LINKS: HashMap<u32, VmLink> = HashMap::pinned(MAX_VMS, 0);

#[map]
pub static MVB_PATHS: PerCpuArray<Counter> = PerCpuArray::pinned(PATH_SLOTS, 0);

#[map]
pub static MVB_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DROP_SLOTS, 0);

#[map]
pub static MVB_VMSTATS: PerCpuArray<VmCounters> = PerCpuArray::pinned(MAX_VMS, 0);

/// Addresses learning VMs used that no table knew, for the daemon to vet.
#[map]
pub static MVB_LEARN: RingBuf = RingBuf::pinned(LEARN_RING_BYTES, 0);

/// When each (link, address) was last reported, so a VM talking from a new
/// address is reported about once a second, not once a packet.
#[map]
pub static MVB_LEARNT: LruHashMap<LearnEvent, u64> = LruHashMap::pinned(LEARNT_MEMORY, 0);

/// Per VM slot: the token bucket for its ARP/ND to local endpoints.
#[map]
pub static MVB_NDRATE: PerCpuArray<Bucket> = PerCpuArray::pinned(MAX_VMS, 0);
