//! The pinned maps, opened by path: the daemon writes them, `status`
//! reads them, from any process.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use mvbridge_common::maps::{
    Counter, Endpoint, Ipv4Key, MAP_DROPS, MAP_LOCAL4, MAP_PATHS, MAP_SETTINGS, Settings,
};
use mvbridge_common::stats::{DropReason, Path, Proto, path_slot};

use crate::bpffs::PinDir;
use crate::errno;

pub struct Tables {
    settings: Array<MapData, Settings>,
    local4: HashMap<MapData, Ipv4Key, Endpoint>,
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
            paths: open(pins, MAP_PATHS)?,
            drops: open(pins, MAP_DROPS)?,
        })
    }

    pub fn set_settings(&mut self, s: &Settings) -> Result<(), String> {
        self.settings
            .set(0, s, 0)
            .map_err(|e| format!("writing settings: {}", errno::chain(&e)))
    }

    /// Makes the IPv4 table hold exactly `want`: new and changed entries
    /// first, so live traffic never sees a hole, then stale ones go.
    pub fn sync_local4(&mut self, want: &BTreeMap<Ipv4Key, Endpoint>) -> Result<(), String> {
        for (k, v) in want {
            self.local4.insert(k, v, 0).map_err(|e| {
                format!(
                    "adding {} to the address table: {}",
                    std::net::Ipv4Addr::from(*k),
                    errno::chain(&e)
                )
            })?;
        }
        let stale: Vec<Ipv4Key> = self
            .local4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(k))
            .collect();
        for k in stale {
            self.local4
                .remove(&k)
                .map_err(|e| format!("removing a stale address: {}", errno::chain(&e)))?;
        }
        Ok(())
    }

    pub fn local4(&self) -> Vec<(Ipv4Key, Endpoint)> {
        self.local4.iter().filter_map(Result::ok).collect()
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
