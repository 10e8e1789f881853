//! The maps, pinned by name so `mvbridge status` and `down` can open them
//! from another process and a restarted daemon can adopt them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use mvbridge_common::{
    maps::{Counter, Endpoint, Ipv4Key, Ipv6Key, MAX_ENDPOINTS, MAX_VMS, Mac, Settings},
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
pub static MVB_PATHS: PerCpuArray<Counter> = PerCpuArray::pinned(PATH_SLOTS, 0);

#[map]
pub static MVB_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DROP_SLOTS, 0);
