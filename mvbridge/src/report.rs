//! What `status` prints and the metrics endpoint serves: hooks, VMs with
//! their addresses and counters, paths and drop reasons, all read from the
//! kernel (pins, TCX queries, netlink), never from the daemon's memory.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Result;
use mvbridge_common::maps::{ENDPOINT_HOST, ENDPOINT_VM, Endpoint, VmCounters};
use serde::Serialize;

use crate::bpffs::PinDir;
use crate::config::{Config, MacAddr};
use crate::datapath::{self, Role};
use crate::netlink::Netlink;
use crate::netns::InNetns;
use crate::observe::{self, VmLinkState};
use crate::tables::{Tables, name_key};

#[derive(Serialize)]
pub struct Report {
    pub attached: bool,
    pub uplink: String,
    pub hooks: Vec<Hook>,
    pub host_addresses: Vec<IpAddr>,
    pub vms: Vec<VmRow>,
    pub paths: Vec<PathRow>,
    pub drops: Vec<DropRow>,
}

#[derive(Serialize)]
pub struct Hook {
    pub interface: String,
    pub role: &'static str,
    pub program: &'static str,
    pub attached: bool,
    pub pinned: bool,
    pub problem: Option<String>,
}

#[derive(Serialize)]
pub struct VmRow {
    pub name: String,
    /// "live" (macvtap present and hooked), "absent" (VM not running) or
    /// the reason its link does not fit.
    pub state: String,
    pub interface: Option<String>,
    pub ifindex: Option<u32>,
    pub mac: Option<String>,
    pub tap: Option<String>,
    pub addresses: Vec<AddressRow>,
    pub counters: VmTraffic,
}

#[derive(Serialize)]
pub struct AddressRow {
    pub address: IpAddr,
    /// "config" or "learnt".
    pub source: &'static str,
}

#[derive(Serialize, Default)]
pub struct VmTraffic {
    pub to_host: Traffic,
    pub from_host: Traffic,
    pub to_vms: Traffic,
    pub from_vms: Traffic,
    pub dropped: u64,
}

#[derive(Serialize, Default)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct PathRow {
    pub path: &'static str,
    pub proto: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct DropRow {
    pub reason: &'static str,
    pub count: u64,
    pub description: &'static str,
}

fn traffic(c: mvbridge_common::maps::Counter) -> Traffic {
    Traffic {
        packets: c.packets,
        bytes: c.bytes,
    }
}

fn vm_traffic(c: VmCounters) -> VmTraffic {
    VmTraffic {
        to_host: traffic(c.to_host),
        from_host: traffic(c.from_host),
        to_vms: traffic(c.to_vms),
        from_vms: traffic(c.from_vms),
        dropped: c.dropped,
    }
}

pub async fn collect(config: &Config, nl: &Netlink) -> Result<Report> {
    let pins = PinDir::new(&config.bpffs);
    let links = nl.links().await?;
    let uplink = links.iter().find(|l| l.name == config.uplink);
    let tables = Tables::open(&pins).ok();

    // Both address tables as one list of (address, endpoint).
    let entries: Vec<(IpAddr, Endpoint)> = tables.as_ref().map(Tables::entries).unwrap_or_default();
    let mut host_addresses: Vec<IpAddr> = entries
        .iter()
        .filter(|(_, e)| e.kind == ENDPOINT_HOST)
        .map(|(a, _)| *a)
        .collect();
    host_addresses.sort();

    let mut hooks = vec![hook(&pins, &config.uplink, Role::Uplink, None)];
    hooks.push(hook(&pins, &config.shim.name, Role::Shim, None));
    hooks.push(hook(&pins, &config.shim.name, Role::ShimIn, None));
    let slots = tables.as_ref().map(|t| t.slots()).unwrap_or_default();
    let mut vms = Vec::new();
    for vm in &config.vms {
        let theirs = match &vm.netns {
            None => Ok(links.clone()),
            Some(ns) => match Netlink::connect_in(ns) {
                Ok(there) => there.links().await.map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            },
        };
        let state = match (uplink, theirs) {
            (Some(u), Ok(theirs)) => observe::vm_link(vm, &theirs, u),
            (Some(_), Err(e)) => VmLinkState::Unfit(format!("netns: {e:#}")),
            (None, _) => VmLinkState::Absent,
        };
        let link = match &state {
            VmLinkState::Present(l) => Some(l.clone()),
            _ => None,
        };
        if let Some(l) = &link {
            hooks.push(hook(&pins, &l.name, Role::Vm, vm.netns.as_deref()));
        }
        let slot = slots.get(&name_key(&vm.name)).copied();
        let configured: BTreeSet<IpAddr> = vm.addresses.iter().copied().collect();
        let mut addresses: Vec<AddressRow> = entries
            .iter()
            .filter(|(_, e)| e.kind == ENDPOINT_VM && link.is_some() && Some(e.vm) == slot)
            .map(|(a, _)| AddressRow {
                address: *a,
                source: if configured.contains(a) {
                    "config"
                } else {
                    "learnt"
                },
            })
            .collect();
        addresses.sort_by_key(|a| a.address);
        let counters = match (&tables, slot) {
            (Some(t), Some(slot)) => vm_traffic(t.vm_counters(slot)),
            _ => VmTraffic::default(),
        };
        vms.push(VmRow {
            name: vm.name.clone(),
            state: match &state {
                VmLinkState::Present(_) => "live".to_owned(),
                VmLinkState::Absent => "absent".to_owned(),
                VmLinkState::Unfit(why) => why.clone(),
            },
            interface: link
                .as_ref()
                .map(|l| l.name.clone())
                .or(vm.interface.clone()),
            ifindex: link.as_ref().map(|l| l.index),
            mac: link
                .as_ref()
                .and_then(|l| l.mac)
                .map(|m| MacAddr(m).to_string()),
            tap: link.as_ref().map(|l| format!("/dev/tap{}", l.index)),
            addresses,
            counters,
        });
    }

    let (paths, drops) = match &tables {
        Some(t) => (
            t.path_counters()
                .into_iter()
                .map(|(path, proto, c)| PathRow {
                    path: path.name(),
                    proto: proto.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect(),
            t.drop_counters()
                .into_iter()
                .map(|(r, count)| DropRow {
                    reason: r.name(),
                    count,
                    description: r.describe(),
                })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(Report {
        attached: tables.is_some() && hooks.iter().all(|h| h.attached && h.pinned),
        uplink: config.uplink.clone(),
        hooks,
        host_addresses,
        vms,
        paths,
        drops,
    })
}

fn hook(pins: &PinDir, ifname: &str, role: Role, netns: Option<&str>) -> Hook {
    let key = observe::hook_key(netns, ifname);
    let pinned = pins.hook(role.name(), &key).exists();
    let query = InNetns::run(netns, || datapath::attached_programs(ifname, role));
    let query = query.map_err(|e| e.to_string()).and_then(|r| r);
    let (attached, problem) = match query {
        Ok(progs) => {
            let ours = progs.iter().any(|(_, name)| name == role.program());
            (ours, (!ours).then(|| "not attached".to_owned()))
        }
        Err(e) => (false, Some(e)),
    };
    Hook {
        interface: key,
        role: role.name(),
        program: role.program(),
        attached,
        pinned,
        problem,
    }
}
