//! What `status` prints and the metrics endpoint serves: hooks, VMs with
//! their addresses and counters, paths and drop reasons. Built from the
//! same look at the world and the same plan as the daemon's loop, plus
//! what the kernel says is attached and counted; never from the daemon's
//! memory.

use std::net::IpAddr;

use mvbridge_common::maps::{Counter, ENDPOINT_VM, Endpoint, VmCounters};
use serde::Serialize;

use crate::bpffs::PinDir;
use crate::config::{Config, MacAddr, Vm, VmOrigin};
use crate::datapath::Role;
use crate::error::Result;
use crate::hooks::{AttachMode, Found, HookKey, Hooks, LinkAt, tc, tcx};
use crate::learning::Learnt;
use crate::libvirt::view::{self, View};
use crate::maps::PinnedMaps;
use crate::netlink::Link;
use crate::plan::{self, VmPlan, VmState};
use crate::world::{Namespace, Observer, World};

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

/// The host's addresses as a plan takes them: configured, or the
/// uplink's own.
pub fn host_addresses(config: &Config, world: &World) -> Vec<IpAddr> {
    config
        .host_addresses
        .clone()
        .unwrap_or_else(|| world.uplink_addresses.clone())
}

/// `status`'s report: with `[libvirt]`, the VMs libvirt declares join the
/// config's, read from libvirt itself or, when it does not answer, from
/// the daemon's record. (The daemon's metrics use [`collect`] with the
/// VMs it already merged.)
pub async fn collect_all(config: &Config, observer: &mut Observer) -> Result<Report> {
    let Some(settings) = &config.libvirt else {
        return collect(config, observer).await;
    };
    let world = observer.observe(config).await?;
    let view = view::look(config, settings, &host_addresses(config, &world));
    let mut report = collect(&view.merged(config), observer).await?;
    report.problems.extend(view.warnings.iter().cloned());
    report.libvirt = Some(view);
    Ok(report)
}

pub async fn collect(config: &Config, observer: &mut Observer) -> Result<Report> {
    let pins = PinDir::new(&config.bpffs);
    let maps = PinnedMaps::open(&pins).ok();
    let world = observer.observe(config).await?;
    let entries = maps.as_ref().map(PinnedMaps::entries).unwrap_or_default();
    // What the running daemon learnt is in the tables: plan with it.
    let learnt = maps
        .as_ref()
        .map(|m| Learnt::recover(config, m))
        .unwrap_or_default();
    // Without a plan (no uplink, say) there is still a report: what is
    // pinned, what is counted, and why nothing is steered.
    let planned = plan::plan(config, &world, &learnt);
    let (wanted, problems, host) = match &planned {
        Ok(p) => (p.hooks(config), p.all_problems(), p.host.clone()),
        Err(e) => (
            plan::base_hooks(config),
            vec![e.to_string()],
            config.host_addresses.clone().unwrap_or_default(),
        ),
    };
    let hooks_kept = Hooks::open(&pins, AttachMode::probe())
        .map(|h| h.found())
        .unwrap_or_default();
    let mut hooks = Vec::new();
    for key in &wanted {
        let link = world_link(&world, key);
        hooks.push(hook_row(key, link, observer, &hooks_kept).await);
    }
    let hooked = |key: Option<HookKey>| {
        key.and_then(|k| {
            hooks
                .iter()
                .find(|h| h.interface == k.at.to_string() && h.role == k.role.name())
        })
        .is_some_and(|h| h.attached)
    };
    let vms = match &planned {
        Ok(plan) => plan
            .vms
            .iter()
            .map(|vm| vm_row(config, vm, hooked(vm.hook()), maps.as_ref(), &entries))
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
    let (paths, drops) = match &maps {
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
        VmState::Unfit(why) => VmStatus::Unfit {
            reason: why.clone(),
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
    let named = |name: &str| name == key.role.program();
    let mut problem = None;
    let tcx = match tcx::programs_on(key) {
        Ok(progs) => progs.iter().any(|(_, n)| named(n)),
        Err(e) => {
            problem = Some(crate::errno::chain(&e));
            false
        }
    };
    let filter = match (link, observer.netlink_in(key.at.netns())) {
        (Some(link), Some(nl)) => tc::ours(key, link, nl)
            .await
            .ok()
            .flatten()
            .is_some_and(|f| f.name.as_deref().is_some_and(named)),
        _ => false,
    };
    let mode = if tcx {
        Some(AttachMode::Tcx)
    } else if filter {
        Some(AttachMode::Tc)
    } else {
        None
    };
    if mode.is_some() {
        problem = None;
    } else if problem.is_none() {
        problem = Some("not attached".to_owned());
    }
    HookRow {
        interface: key.at.to_string(),
        role: key.role.name(),
        program: key.role.program(),
        attached: mode.is_some(),
        mode: mode.map(AttachMode::name),
        kept: kept.iter().any(|f| &f.key == key && Some(f.mode) == mode),
        problem,
    }
}
