//! The pinned maps, opened by path: the daemon writes them, `status` and
//! the metrics endpoint read them, from any process.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use aya::Pod;
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use mvbridge_common::abi::{self, MapSpec};
use mvbridge_common::maps::{
    Counter, Endpoint, HookName, HookRecord, Ipv4Key, Ipv6Key, Mac, Settings, VMLINK_PRESENT,
    VmCounters, VmLink,
};
use mvbridge_common::stats::{DropReason, Path, Proto, path_slot};

use crate::config::MacAddr;
use crate::control::contents::Contents;
use crate::datapath::bpffs::PinDir;
use crate::error::{Error, Result};

/// The datapath's tables and counters, as pinned by this binary's layout.
pub struct PinnedMaps {
    settings: Array<MapData, Settings>,
    local4: HashMap<MapData, Ipv4Key, Endpoint>,
    local6: HashMap<MapData, Ipv6Key, Endpoint>,
    macs: HashMap<MapData, Mac, Endpoint>,
    links: Array<MapData, VmLink>,
    /// The same array, for reading it whole (aya reads one slot a call).
    links_raw: MapData,
    links_high: HashMap<MapData, u32, VmLink>,
    paths: PerCpuArray<MapData, Counter>,
    drops: PerCpuArray<MapData, u64>,
    vmstats: PerCpuArray<MapData, VmCounters>,
    /// VM name hash -> counter slot. The programs never read it; it is
    /// pinned so a restarted daemon gives every VM its old slot back.
    slots: HashMap<MapData, u64, u32>,
    /// The slot table as this process last wrote or read it (the daemon
    /// is its only writer): a pass reads no table back. Dropped on any
    /// failure, so the next use reads it again.
    slots_held: Option<BTreeMap<u64, u32>>,
    /// What the tables hold, as this process last wrote or read them: the
    /// daemon is their only writer, so a pass compares with this instead
    /// of reading every table back (read from the kernel on the first
    /// sync, and again after any failure).
    written: Option<Contents>,
}

fn open<T>(pins: &PinDir, spec: &MapSpec) -> Result<T>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::error::Error + Send + Sync + 'static,
{
    let path = pins.map(spec);
    let opening = || format!("opening {}", path.display());
    let data = MapData::from_pin(&path).map_err(|e| Error::bpf(opening(), e))?;
    let map = Map::from_map_data(data).map_err(|e| Error::bpf(opening(), e))?;
    T::try_from(map).map_err(|e| Error::bpf(opening(), e))
}

/// Stable 64-bit FNV-1a of a VM's name: the key of its slot.
pub fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl PinnedMaps {
    /// Creates and pins the maps the loader keeps (counter slots, hook
    /// records), unless an earlier run did. Only the daemon does this;
    /// readers never change the pin directory.
    pub fn create_loader_maps(pins: &PinDir) -> Result<()> {
        create::<u64, u32>(pins, &abi::SLOTS)?;
        create::<HookName, HookRecord>(pins, &abi::HOOKS)
    }

    /// Opens the pinned maps.
    pub fn open(pins: &PinDir) -> Result<PinnedMaps> {
        Ok(PinnedMaps {
            settings: open(pins, &abi::SETTINGS)?,
            local4: open(pins, &abi::LOCAL4)?,
            local6: open(pins, &abi::LOCAL6)?,
            macs: open(pins, &abi::MACS)?,
            links: open(pins, &abi::LINKS)?,
            links_raw: MapData::from_pin(pins.map(&abi::LINKS))
                .map_err(|e| Error::bpf("opening the link table", e))?,
            links_high: open(pins, &abi::LINKS_HIGH)?,
            paths: open(pins, &abi::PATHS)?,
            drops: open(pins, &abi::DROPS)?,
            vmstats: open(pins, &abi::VMSTATS)?,
            slots: open(pins, &abi::SLOTS)?,
            slots_held: None,
            written: None,
        })
    }

    /// Maps this run created a moment ago hold nothing (zeros): the first
    /// sync need not read them back (reading the link array costs tens of
    /// milliseconds).
    pub fn just_created(mut self) -> PinnedMaps {
        self.written = Some(Contents::default());
        self
    }

    /// What the tables hold, read from the kernel.
    fn read(&self) -> Result<Contents> {
        let values = crate::datapath::rawmap::read_array(
            self.links_raw.fd().as_fd(),
            abi::LINKS.max_entries,
            abi::LINKS.value_size,
        )?;
        let size = abi::LINKS.value_size as usize;
        let mut links: BTreeMap<u32, VmLink> = values
            .chunks_exact(size)
            .enumerate()
            .filter_map(|(i, raw)| {
                // SAFETY: VmLink is plain old data of exactly `size` bytes.
                let link: VmLink = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
                (link.flags & VMLINK_PRESENT != 0).then_some((i as u32, link))
            })
            .collect();
        links.extend(self.links_high.iter().filter_map(Result::ok));
        Ok(Contents {
            settings: self.settings.get(&0, 0).unwrap_or_default(),
            local4: self.local4.iter().filter_map(Result::ok).collect(),
            local6: self.local6.iter().filter_map(Result::ok).collect(),
            macs: self.macs.iter().filter_map(Result::ok).collect(),
            links,
        })
    }

    /// Makes the tables hold exactly `want`, touching only entries that
    /// differ: new and changed ones first, so live traffic never sees a
    /// hole, then stale ones; settings last, once every endpoint they imply
    /// exists. Returns how many entries changed.
    pub fn sync(&mut self, want: &Contents) -> Result<usize> {
        let t0 = std::time::Instant::now();
        let have = match self.written.take() {
            Some(have) => have,
            None => self.read()?,
        };
        let read = t0.elapsed();
        let changed = self.write(&have, want)?;
        tracing::debug!(
            read_us = read.as_micros() as u64,
            write_us = (t0.elapsed() - read).as_micros() as u64,
            changed,
            "tables synced"
        );
        self.written = Some(want.clone());
        Ok(changed)
    }

    fn write(&mut self, have: &Contents, want: &Contents) -> Result<usize> {
        let mut changed = 0;
        changed += sync_map(&mut self.local4, &have.local4, &want.local4, |k| {
            Ipv4Addr::from(*k).to_string()
        })?;
        changed += sync_map(&mut self.local6, &have.local6, &want.local6, |k| {
            Ipv6Addr::from(*k).to_string()
        })?;
        changed += sync_map(&mut self.macs, &have.macs, &want.macs, |k| {
            format!("MAC {}", MacAddr(*k))
        })?;
        let (low, high): (BTreeMap<u32, VmLink>, BTreeMap<u32, VmLink>) =
            want.links.iter().partition(|(i, _)| **i < abi::LINKS_ARRAY);
        let (had_low, had_high): (BTreeMap<u32, VmLink>, BTreeMap<u32, VmLink>) =
            have.links.iter().partition(|(i, _)| **i < abi::LINKS_ARRAY);
        changed += sync_map(&mut self.links_high, &had_high, &high, |k| {
            format!("link {k}")
        })?;
        for (i, link) in &low {
            if had_low.get(i) != Some(link) {
                self.links
                    .set(*i, *link, 0)
                    .map_err(|e| Error::bpf(format!("adding link {i} to the datapath"), e))?;
                changed += 1;
            }
        }
        for i in had_low.keys().filter(|i| !low.contains_key(i)) {
            self.links
                .set(*i, VmLink::default(), 0)
                .map_err(|e| Error::bpf(format!("removing stale link {i} from the datapath"), e))?;
            changed += 1;
        }
        if have.settings != want.settings {
            self.settings
                .set(0, want.settings, 0)
                .map_err(|e| Error::bpf("writing the settings", e))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Entries in the IPv4, IPv6, MAC and link tables: what a leak would
    /// grow.
    pub fn entry_counts(&self) -> Result<[usize; 4]> {
        let c = self.read()?;
        Ok([c.local4.len(), c.local6.len(), c.macs.len(), c.links.len()])
    }

    /// Both address tables as one list.
    pub fn entries(&self) -> Vec<(IpAddr, Endpoint)> {
        self.local4()
            .into_iter()
            .map(|(k, e)| (Ipv4Addr::from(k).into(), e))
            .chain(
                self.local6()
                    .into_iter()
                    .map(|(k, e)| (Ipv6Addr::from(k).into(), e)),
            )
            .collect()
    }

    pub fn local4(&self) -> Vec<(Ipv4Key, Endpoint)> {
        self.local4.iter().filter_map(Result::ok).collect()
    }

    pub fn local6(&self) -> Vec<(Ipv6Key, Endpoint)> {
        self.local6.iter().filter_map(Result::ok).collect()
    }

    /// The MAC table: VMs' links by MAC.
    pub fn macs(&self) -> Vec<(Mac, Endpoint)> {
        self.macs.iter().filter_map(Result::ok).collect()
    }

    /// The counter slot of VM `name`, if it has one.
    pub fn slot_of(&self, name: &str) -> Option<u32> {
        self.slots.get(&name_key(name), 0).ok()
    }

    /// The counter slot of every VM that has one, by name hash.
    pub fn slots(&self) -> BTreeMap<u64, u32> {
        self.slots.iter().filter_map(Result::ok).collect()
    }

    /// The slot table as held in memory, read whole if it is not: a read
    /// that fails fails here (a partial table, kept, would hand out taken
    /// slots).
    fn held_slots(&mut self) -> Result<BTreeMap<u64, u32>> {
        match self.slots_held.take() {
            Some(held) => Ok(held),
            None => self
                .slots
                .iter()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::bpf("reading the counter slots", e)),
        }
    }

    /// Gives each of `names` a counter slot (its old one if it had one),
    /// zeroing fresh slots so none inherits a removed VM's counts. The slot
    /// table is read once for all of them: a scan per new VM made a fresh
    /// start at 1,000 VMs spend 0.8 s here.
    pub fn slots_for<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, u32>> {
        let mut held = self.held_slots()?;
        let used: std::collections::BTreeSet<u32> = held.values().copied().collect();
        let mut free = (0..abi::SLOTS.max_entries).filter(|s| !used.contains(s));
        let mut fresh = Vec::new();
        let mut out = BTreeMap::new();
        for name in names {
            let key = name_key(name);
            let slot = match held.get(&key) {
                Some(s) => *s,
                None => {
                    let max = abi::SLOTS.max_entries;
                    let s = free.next().ok_or_else(|| {
                        Error::Unfit(format!(
                            "no counter slot left for VM {name:?} ({max} in use)"
                        ))
                    })?;
                    fresh.push((key, s));
                    s
                }
            };
            held.insert(key, slot);
            out.insert(name.to_owned(), slot);
        }
        if fresh.is_empty() {
            self.slots_held = Some(held);
            return Ok(out);
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting CPUs", e))?;
        for (key, slot) in fresh {
            let zero = aya::maps::PerCpuValues::try_from(vec![VmCounters::default(); cpus])
                .map_err(|e| Error::io("sizing a counter slot", e))?;
            self.vmstats
                .set(slot, zero, 0)
                .map_err(|e| Error::bpf(format!("clearing counter slot {slot}"), e))?;
            self.slots
                .insert(key, slot, 0)
                .map_err(|e| Error::bpf(format!("recording counter slot {slot}"), e))?;
        }
        self.slots_held = Some(held);
        Ok(out)
    }

    /// Frees the slots of VMs no longer configured.
    pub fn release_slots(&mut self, keep: &[&str]) -> Result<()> {
        let keep: std::collections::BTreeSet<u64> = keep.iter().map(|n| name_key(n)).collect();
        let mut held = self.held_slots()?;
        let gone: Vec<u64> = held.keys().filter(|k| !keep.contains(k)).copied().collect();
        for k in gone {
            self.slots
                .remove(&k)
                .map_err(|e| Error::bpf("freeing a counter slot", e))?;
            held.remove(&k);
        }
        self.slots_held = Some(held);
        Ok(())
    }

    /// A VM's traffic, summed over CPUs.
    pub fn vm_counters(&self, slot: u32) -> VmCounters {
        let mut sum = VmCounters::default();
        if let Ok(per_cpu) = self.vmstats.get(&slot, 0) {
            for c in per_cpu.iter() {
                for (s, x) in [
                    (&mut sum.to_host, c.to_host),
                    (&mut sum.from_host, c.from_host),
                    (&mut sum.to_vms, c.to_vms),
                    (&mut sum.from_vms, c.from_vms),
                ] {
                    s.packets += x.packets;
                    s.bytes += x.bytes;
                }
                sum.dropped += c.dropped;
            }
        }
        sum
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

fn create<K: Pod, V: Pod>(pins: &PinDir, spec: &MapSpec) -> Result<()> {
    let path = pins.map(spec);
    if path.exists() {
        return Ok(());
    }
    let fresh = HashMap::<MapData, K, V>::create(spec.max_entries, 0)
        .map_err(|e| Error::bpf(format!("creating {}", spec.name), e))?;
    fresh
        .pin(&path)
        .map_err(|e| Error::bpf(format!("pinning {} at {}", spec.name, path.display()), e))
}

fn sync_map<K, V>(
    map: &mut HashMap<MapData, K, V>,
    have: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    show: impl Fn(&K) -> String,
) -> Result<usize>
where
    K: Pod + Ord,
    V: Pod + PartialEq,
{
    let mut changed = 0;
    for (k, v) in want {
        if have.get(k) == Some(v) {
            continue;
        }
        map.insert(k, v, 0)
            .map_err(|e| Error::bpf(format!("adding {} to the datapath", show(k)), e))?;
        changed += 1;
    }
    for k in have.keys().filter(|k| !want.contains_key(k)) {
        map.remove(k)
            .map_err(|e| Error::bpf(format!("removing stale {} from the datapath", show(k)), e))?;
        changed += 1;
    }
    Ok(changed)
}
