//! What `status` prints and the metrics endpoint serves: hooks, VMs with
//! their addresses and counters, paths and drop reasons. Built from the
//! same look at the world and the same plan as the daemon's loop, plus
//! what the kernel says is attached and counted; never from the daemon's
//! memory.

use std::net::IpAddr;

use mvbridge_common::maps::{Counter, ENDPOINT_VM, Endpoint, VmCounters};
use serde::Serialize;

use crate::config::{Config, MacAddr, Vm, VmOrigin};
use crate::control::learning::Learnt;
use crate::control::plan::{self, VmPlan, VmState};
use crate::control::world::{Namespace, Observer, World};
use crate::datapath::bpffs::PinDir;
use crate::datapath::hooks::{self, AttachMode, Found, HookKey, Hooks, LinkAt, Program};
use crate::datapath::layout;
use crate::datapath::maps::PinnedMaps;
use crate::datapath::object::Role;
use crate::error::Result;
use crate::kernel::netlink::Link;
use crate::libvirt::view::{self, View};

#[derive(Serialize)]
pub struct Report {
    /// Every hook the plan wants is attached.
    pub attached: bool,
    pub uplink: String,
    pub hooks: Vec<HookRow>,
    pub host_addresses: Vec<IpAddr>,
    pub vms: Vec<VmRow>,
    pub paths: Vec<PathRow>,
    pub drops: Vec<DropRow>,
    /// What the plan finds wrong (as the daemon logs it), and the
    /// libvirt domains whose VMs were left out.
    pub problems: Vec<String>,
    /// With `[libvirt]`: where its VMs were read, and whether it answers.
    pub libvirt: Option<View>,
}

#[derive(Serialize)]
pub struct HookRow {
    /// Which hook the row is (what `interface` and `role` spell out).
    #[serde(skip)]
    pub key: HookKey,
    pub interface: String,
    pub role: &'static str,
    pub program: &'static str,
    pub attached: bool,
    /// How it is attached: "tcx" or "tc" (none when it is not).
    pub mode: Option<&'static str>,
    /// Kept for the next daemon: its TCX link pinned, its filter recorded.
    pub kept: bool,
    pub problem: Option<String>,
}

/// A VM's state as a user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum VmStatus {
    /// Its link is present and fits, and its hook is attached: steered.
    Live,
    /// No link: the VM is not running.
    Absent,
    /// A link matches it but does not fit: why.
    Unfit { reason: String },
    /// Its link is fit but not hooked (yet): the daemon has not seen it,
    /// or is not running.
    Unsteered { reason: String },
}

impl VmStatus {
    pub fn is_live(&self) -> bool {
        *self == VmStatus::Live
    }

    pub fn name(&self) -> &'static str {
        match self {
            VmStatus::Live => "live",
            VmStatus::Absent => "absent",
            VmStatus::Unfit { .. } => "unfit",
            VmStatus::Unsteered { .. } => "unsteered",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            VmStatus::Unfit { reason } | VmStatus::Unsteered { reason } => Some(reason),
            _ => None,
        }
    }
}

#[derive(Serialize)]
pub struct VmRow {
    pub name: String,
    /// Where it was declared.
    pub origin: OriginRow,
    #[serde(flatten)]
    pub status: VmStatus,
    pub interface: Option<String>,
    pub ifindex: Option<u32>,
    pub mac: Option<String>,
    pub tap: Option<String>,
    pub addresses: Vec<AddressRow>,
    pub counters: VmTraffic,
}

#[derive(Serialize)]
pub struct OriginRow {
    /// "config" (a `[[vm]]` section) or "libvirt".
    pub source: &'static str,
    /// The libvirt domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

impl OriginRow {
    fn of(vm: Option<&Vm>) -> OriginRow {
        match vm.map(|v| &v.origin) {
            Some(VmOrigin::Libvirt { domain, uuid }) => OriginRow {
                source: "libvirt",
                domain: Some(domain.clone()),
                uuid: Some(uuid.clone()),
            },
            _ => OriginRow {
                source: "config",
                domain: None,
                uuid: None,
            },
        }
    }

    /// For people: `config` or `libvirt:DOMAIN`.
    pub fn short(&self) -> String {
        match &self.domain {
            Some(d) => format!("libvirt:{d}"),
            None => self.source.to_owned(),
        }
    }
}

#[derive(Serialize)]
pub struct AddressRow {
    pub address: IpAddr,
    /// "config", "learnt" or "derived" (the link-local address of the
    /// VM's MAC).
    pub source: &'static str,
    /// The datapath's tables hold it for this VM.
    pub steered: bool,
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

fn traffic(c: Counter) -> Traffic {
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

/// The running datapath as its pins hold it: its tables and counters,
/// and what its VMs learnt (which the daemon plans with).
pub struct Pinned {
    pub maps: PinnedMaps,
    pub learnt: Learnt,
}

/// Opens the pinned datapath for reading, as `status`, the metrics and
/// `check` plan with it. `None` when nothing is pinned; an error when
/// something is, but cannot be read (another layout, no permission).
pub fn pinned(config: &Config) -> Result<Option<Pinned>> {
    let Some(maps) = layout::open_pinned(&PinDir::new(&config.bpffs))? else {
        return Ok(None);
    };
    let learnt = Learnt::recover(config, &maps);
    Ok(Some(Pinned { maps, learnt }))
}

/// `status`'s report: with `[libvirt]`, the VMs libvirt declares join the
/// config's, read from libvirt itself or, when it does not answer, from
/// the daemon's record. (The daemon's metrics use [`collect`] with the
/// VMs it already merged.)
pub async fn collect_all(config: &Config, observer: &mut Observer) -> Result<Report> {
    let Some(settings) = &config.libvirt else {
        return collect(config, observer).await;
    };
    let world = observer.observe_host(config).await?;
    let view = view::look(config, settings, &plan::host_addresses(config, &world));
    let mut report = collect(&view.merged(config), observer).await?;
    report.problems.extend(view.warnings.iter().cloned());
    report.libvirt = Some(view);
    Ok(report)
}

pub async fn collect(config: &Config, observer: &mut Observer) -> Result<Report> {
    let pins = PinDir::new(&config.bpffs);
    // Maps that are there but cannot be read are a problem to show, not
    // a datapath that is simply not running.
    let (pinned, unreadable) = match pinned(config) {
        Ok(p) => (p, None),
        Err(e) => (
            None,
            Some(format!(
                "cannot read the datapath's pinned maps: {}",
                crate::errno::chain(&e)
            )),
        ),
    };
    let maps = pinned.as_ref().map(|p| &p.maps);
    let world = observer.observe(config).await?;
    let entries = maps.map(PinnedMaps::entries).unwrap_or_default();
    // What the running daemon learnt is in the tables: plan with it.
    let nothing_learnt = Learnt::default();
    let learnt = pinned.as_ref().map_or(&nothing_learnt, |p| &p.learnt);
    // Without a plan (no uplink, say) there is still a report: what is
    // pinned, what is counted, and why nothing is steered.
    let planned = plan::plan(config, &world, learnt);
    let (wanted, mut problems, host) = match &planned {
        Ok(p) => (p.hooks(config), p.all_problems(), p.host.clone()),
        Err(e) => (
            plan::base_hooks(config),
            vec![e.to_string()],
            plan::host_addresses(config, &world),
        ),
    };
    problems.extend(unreadable);
    let hooks_kept = Hooks::open(&pins, AttachMode::probe())
        .map(|h| h.found())
        .unwrap_or_default();
    let mut hooks = Vec::new();
    for key in &wanted {
        let link = world_link(&world, key);
        hooks.push(hook_row(key, link, observer, &hooks_kept).await);
    }
    let hooked =
        |key: Option<HookKey>| key.is_some_and(|k| hooks.iter().any(|h| h.key == k && h.attached));
    let vms = match &planned {
        Ok(plan) => plan
            .vms
            .iter()
            .map(|vm| vm_row(config, vm, hooked(vm.hook()), maps, &entries))
            .collect(),
        Err(_) => config
            .vms
            .iter()
            .map(|vm| VmRow {
                name: vm.name.clone(),
                origin: OriginRow::of(Some(vm)),
                status: VmStatus::Absent,
                interface: vm.interface.clone(),
                ifindex: None,
                mac: None,
                tap: None,
                addresses: Vec::new(),
                counters: VmTraffic::default(),
            })
            .collect(),
    };
    let (paths, drops) = match maps {
        Some(m) => (path_rows(m), drop_rows(m)),
        None => (Vec::new(), Vec::new()),
    };
    Ok(Report {
        attached: maps.is_some() && hooks.iter().all(|h| h.attached && h.kept),
        uplink: config.uplink.clone(),
        hooks,
        host_addresses: {
            let mut h = host;
            h.sort();
            h
        },
        vms,
        paths,
        drops,
        problems,
        libvirt: None,
    })
}

fn vm_row(
    config: &Config,
    vm: &VmPlan,
    hooked: bool,
    maps: Option<&PinnedMaps>,
    entries: &[(IpAddr, Endpoint)],
) -> VmRow {
    let status = match &vm.state {
        VmState::Live(_) if hooked => VmStatus::Live,
        VmState::Live(link) => VmStatus::Unsteered {
            reason: format!(
                "{} is there but has no {} hook yet (is the daemon running?)",
                LinkAt::new(vm.netns.as_deref(), &link.name),
                Role::Vm.program()
            ),
        },
        VmState::Absent => VmStatus::Absent,
        VmState::Unfit { reason } => VmStatus::Unfit {
            reason: reason.clone(),
        },
    };
    let link = vm.link();
    let slot = maps.and_then(|m| m.slot_of(&vm.name));
    let mut addresses: Vec<AddressRow> = vm
        .addresses
        .iter()
        .map(|o| AddressRow {
            address: o.addr,
            source: o.origin.name(),
            steered: entries
                .iter()
                .any(|(a, ep)| *a == o.addr && ep.kind == ENDPOINT_VM && Some(ep.vm) == slot),
        })
        .collect();
    addresses.sort_by_key(|a| a.address);
    let configured = config.vms.iter().find(|v| v.name == vm.name);
    VmRow {
        name: vm.name.clone(),
        origin: OriginRow::of(configured),
        status,
        interface: link
            .map(|l| l.name.clone())
            .or_else(|| configured.and_then(|v| v.interface.clone())),
        ifindex: link.map(|l| l.index),
        mac: link.and_then(|l| l.mac).map(|m| MacAddr(m).to_string()),
        tap: link
            .filter(|l| l.kind.as_deref() == Some("macvtap") && vm.netns.is_none())
            .map(|l| format!("/dev/tap{}", l.index)),
        addresses,
        counters: match (maps, slot) {
            (Some(m), Some(slot)) => vm_traffic(m.vm_counters(slot)),
            _ => VmTraffic::default(),
        },
    }
}

fn path_rows(m: &PinnedMaps) -> Vec<PathRow> {
    m.path_counters()
        .into_iter()
        .map(|(path, proto, c)| PathRow {
            path: path.name(),
            proto: proto.name(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect()
}

fn drop_rows(m: &PinnedMaps) -> Vec<DropRow> {
    m.drop_counters()
        .into_iter()
        .map(|(r, count)| DropRow {
            reason: r.name(),
            count,
            description: r.describe(),
        })
        .collect()
}

/// The link a hook is for, as this look at the world saw it.
fn world_link<'w>(world: &'w World, key: &HookKey) -> Option<&'w Link> {
    let links = match key.at.netns() {
        None => &world.links,
        Some(ns) => match world.namespaces.get(ns) {
            Some(Namespace::Seen { links, .. }) => links,
            _ => return None,
        },
    };
    links.iter().find(|l| l.name == key.at.ifname())
}

/// Whether our program runs as `key`, whichever way it was attached.
async fn hook_row(
    key: &HookKey,
    link: Option<&Link>,
    observer: &Observer,
    kept: &[Found],
) -> HookRow {
    let on = || link.zip(observer.netlink_in(key.at.netns()));
    let (mode, problem) = match hooks::attached_as(key, on, Program::Of(key.role)).await {
        Ok(Some(mode)) => (Some(mode), None),
        Ok(None) => (None, Some("not attached".to_owned())),
        Err(e) => (None, Some(crate::errno::chain(&e))),
    };
    HookRow {
        key: key.clone(),
        interface: key.at.to_string(),
        role: key.role.name(),
        program: key.role.program(),
        attached: mode.is_some(),
        mode: mode.map(AttachMode::name),
        kept: kept.iter().any(|f| &f.key == key && Some(f.mode) == mode),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_vm_status_serializes_as_a_tagged_state() {
        let cases = [
            (VmStatus::Live, json!({"state": "live"})),
            (VmStatus::Absent, json!({"state": "absent"})),
            (
                VmStatus::Unfit {
                    reason: "macvtap0 has no MAC".into(),
                },
                json!({"state": "unfit", "reason": "macvtap0 has no MAC"}),
            ),
            (
                VmStatus::Unsteered {
                    reason: "no mvb_vm hook yet".into(),
                },
                json!({"state": "unsteered", "reason": "no mvb_vm hook yet"}),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(serde_json::to_value(&status).unwrap(), want);
            assert_eq!(status.name(), want["state"]);
            assert_eq!(status.reason(), want["reason"].as_str());
        }
    }

    #[test]
    fn a_vm_row_carries_its_state_and_reason_at_the_top() {
        let row = VmRow {
            name: "a".into(),
            origin: OriginRow::of(None),
            status: VmStatus::Unfit {
                reason: "macvtap0 has no MAC".into(),
            },
            interface: Some("macvtap0".into()),
            ifindex: None,
            mac: None,
            tap: None,
            addresses: Vec::new(),
            counters: VmTraffic::default(),
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["name"], "a");
        assert_eq!(v["state"], "unfit");
        assert_eq!(v["reason"], "macvtap0 has no MAC");
        assert_eq!(v["origin"], json!({"source": "config"}));
    }
}
