//! The pinned maps, opened by path: the daemon writes them, `status`
//! reads them, from any process.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::Pod;
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use mvbridge_common::maps::{
    Counter, Endpoint, Ipv4Key, Ipv6Key, MAP_DROPS, MAP_LOCAL4, MAP_LOCAL6, MAP_MACS, MAP_PATHS,
    MAP_SETTINGS, Mac, Settings,
};
use mvbridge_common::stats::{DropReason, Path, Proto, path_slot};

use crate::bpffs::PinDir;
use crate::config::MacAddr;
use crate::desired::Desired;
use crate::errno;

pub struct Tables {
    settings: Array<MapData, Settings>,
    local4: HashMap<MapData, Ipv4Key, Endpoint>,
    local6: HashMap<MapData, Ipv6Key, Endpoint>,
    macs: HashMap<MapData, Mac, Endpoint>,
    paths: PerCpuArray<MapData, Counter>,
    drops: PerCpuArray<MapData, u64>,
}

fn open<T>(pins: &PinDir, name: &str) -> Result<T, String>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::error::Error + 'static,
{
    let path = pins.map(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| format!("cannot open {}: {}", path.display(), errno::chain(&e)))?;
    let map = Map::from_map_data(data)
        .map_err(|e| format!("cannot open {}: {}", path.display(), errno::chain(&e)))?;
    T::try_from(map).map_err(|e| {
        format!(
            "{} has an unexpected layout (left by another mvbridge version? run `mvbridge down`): {}",
            path.display(),
            errno::chain(&e)
        )
    })
}

impl Tables {
    pub fn open(pins: &PinDir) -> Result<Tables, String> {
        Ok(Tables {
            settings: open(pins, MAP_SETTINGS)?,
            local4: open(pins, MAP_LOCAL4)?,
            local6: open(pins, MAP_LOCAL6)?,
            macs: open(pins, MAP_MACS)?,
            paths: open(pins, MAP_PATHS)?,
            drops: open(pins, MAP_DROPS)?,
        })
    }

    /// Makes the tables hold exactly `want`. Within each table new and
    /// changed entries go in first, so live traffic never sees a hole, then
    /// stale ones go; settings last, once every endpoint they imply exists.
    pub fn sync(&mut self, want: &Desired) -> Result<(), String> {
        sync_map(&mut self.local4, &want.local4, |k| {
            Ipv4Addr::from(*k).to_string()
        })?;
        sync_map(&mut self.local6, &want.local6, |k| {
            Ipv6Addr::from(*k).to_string()
        })?;
        sync_map(&mut self.macs, &want.macs, |k| {
            format!("MAC {}", MacAddr(*k))
        })?;
        self.settings
            .set(0, want.settings, 0)
            .map_err(|e| format!("writing settings: {}", errno::chain(&e)))
    }

    pub fn local4(&self) -> Vec<(Ipv4Key, Endpoint)> {
        self.local4.iter().filter_map(Result::ok).collect()
    }

    pub fn local6(&self) -> Vec<(Ipv6Key, Endpoint)> {
        self.local6.iter().filter_map(Result::ok).collect()
    }

    /// Steered traffic, summed over CPUs, for every path and protocol.
    pub fn path_counters(&self) -> Vec<(Path, Proto, Counter)> {
        let mut out = Vec::new();
        for path in Path::ALL {
            for proto in Proto::ALL {
                let mut sum = Counter::default();
                if let Ok(per_cpu) = self.paths.get(&path_slot(path, proto), 0) {
                    for c in per_cpu.iter() {
                        sum.packets += c.packets;
                        sum.bytes += c.bytes;
                    }
                }
                out.push((path, proto, sum));
            }
        }
        out
    }

    pub fn drop_counters(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| {
                let n = self
                    .drops
                    .get(&(*r as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*r, n)
            })
            .collect()
    }
}

fn sync_map<K, V>(
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
    show: impl Fn(&K) -> String,
) -> Result<(), String>
where
    K: Pod + Ord,
    V: Pod,
{
    for (k, v) in want {
        map.insert(k, v, 0)
            .map_err(|e| format!("adding {} to the datapath: {}", show(k), errno::chain(&e)))?;
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        map.remove(&k)
            .map_err(|e| format!("removing stale {}: {}", show(&k), errno::chain(&e)))?;
    }
    Ok(())
}
