//! `mvbridge check`: a preflight that reads everything `run` depends on and
//! says what `run` would change, without changing anything.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};

use crate::commands::preflight;
use crate::commands::report;
use crate::config::{Config, MacAddr, VmOrigin};
use crate::control::learning::Learnt;
use crate::control::plan::{self, ShimState, VmPlan, VmState};
use crate::control::world::Observer;
use crate::datapath::bpffs::PinDir;
use crate::datapath::hooks::{AttachMode, LinkAt, tc};
use crate::datapath::object::Role;
use crate::error::Error;
use crate::kernel::netlink::Netlink;
use crate::libvirt::{self, view};

/// Collects findings; blocking ones make `check` fail.
#[derive(Default)]
struct Findings {
    lines: Vec<String>,
    blocking: usize,
    warnings: usize,
}

impl Findings {
    fn ok(&mut self, what: impl AsRef<str>) {
        self.lines.push(format!("  ok    {}", what.as_ref()));
    }
    fn warn(&mut self, what: impl AsRef<str>) {
        self.warnings += 1;
        self.lines.push(format!("  warn  {}", what.as_ref()));
    }
    fn fail(&mut self, what: impl AsRef<str>) {
        self.blocking += 1;
        self.lines.push(format!("  FAIL  {}", what.as_ref()));
    }
    fn plan(&mut self, what: impl AsRef<str>) {
        self.lines.push(format!("  would {}", what.as_ref()));
    }
    fn section(&mut self, title: &str) {
        self.lines.push(format!("\n{title}:"));
    }
}

fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

pub async fn check(config_path: &Path) -> Result<ExitCode> {
    let mut f = Findings::default();
    f.section("config");
    let config = match Config::load(config_path) {
        Ok(c) => {
            f.ok(format!(
                "{} parses ({} VMs)",
                config_path.display(),
                c.vms.len()
            ));
            c
        }
        Err(e) => {
            f.fail(e.to_string());
            return finish(f);
        }
    };

    f.section("kernel and privileges");
    match preflight::privileges("check") {
        Ok(()) => f.ok("running with CAP_NET_ADMIN and CAP_BPF"),
        Err(e) => f.fail(format!("{e:#}")),
    }
    match preflight::kernel() {
        Ok(()) => f.ok(format!(
            "Linux {} with bpf() and BPF ring buffers",
            sysctl("kernel/osrelease").unwrap_or_default()
        )),
        Err(e) => f.fail(format!("{e:#}")),
    }
    match AttachMode::resolve(config.attach) {
        Ok(AttachMode::Tcx) => f.ok("hooks attach as TCX links (attach mode tcx)"),
        Ok(AttachMode::Tc) => f.ok(format!(
            "hooks attach as classic TC filters (attach mode tc{}): priority {}, handle {:#x}, on a clsact qdisc",
            if AttachMode::probe() == AttachMode::Tc { ": this kernel has no TCX" } else { ", as configured" },
            tc::PRIORITY,
            tc::HANDLE
        )),
        Err(e) => f.fail(e.to_string()),
    }
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        f.ok("kernel BTF available");
    } else {
        f.warn(
            "no /sys/kernel/btf/vmlinux: fine for mvbridge's programs, noted for debugging tools",
        );
    }

    let mut observer = Observer::new(Netlink::connect()?);
    let world = observer
        .observe(&config)
        .await
        .context("reading the links")?;
    let config = match &config.libvirt {
        Some(settings) => {
            f.section("libvirt");
            let view = view::look(&config, settings, &plan::host_addresses(&config, &world));
            match (libvirt::loadable(), view.source) {
                (Err(e), _) => f.fail(crate::errno::chain(&e)),
                (Ok(()), view::Source::Libvirt) => f.ok(view.summary()),
                (Ok(()), _) => f.warn(view.summary()),
            }
            for vm in &view.declaration.vms {
                f.ok(format!(
                    "{} declares VM {:?}: {}",
                    vm.label(),
                    vm.name,
                    vm.addresses
                        .iter()
                        .map(ToString::to_string)
                        .chain(vm.learn.iter().map(|p| format!("learnt within {p}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for w in &view.warnings {
                f.warn(w);
            }
            for d in &view.declaration.undeclared {
                f.ok(format!(
                    "libvirt domain {d:?} has a macvtap on {} but no mvbridge metadata: not steered",
                    config.uplink
                ));
            }
            view.merged(&config)
        }
        None => config,
    };
    let pins = PinDir::new(&config.bpffs);
    // What the running daemon learnt: the plan keeps it.
    let learnt = match report::pinned(&config) {
        Ok(pinned) => pinned.map(|p| p.learnt).unwrap_or_default(),
        Err(e) => {
            let why = format!(
                "cannot read the pinned maps, so the plan below leaves out what VMs learnt: {}",
                crate::errno::chain(&e)
            );
            // run refuses incompatible pins too; an older layout it
            // carries over, and the rest is this process's to read.
            match e {
                Error::Incompatible { .. } => f.fail(why),
                _ => f.warn(why),
            }
            Learnt::default()
        }
    };
    f.section("uplink");
    let plan = match plan::plan(&config, &world, &learnt) {
        Ok(p) => p,
        Err(e) => {
            f.fail(e.to_string());
            return finish(f);
        }
    };
    let uplink = &plan.uplink;
    f.ok(format!(
        "{} (ifindex {}, MAC {})",
        uplink.name,
        uplink.index,
        MacAddr(uplink.mac.unwrap_or_default())
    ));
    if !uplink.up {
        f.warn(format!(
            "{} is down: the datapath follows once it is up",
            uplink.name
        ));
    }
    if plan.host.is_empty() {
        f.fail("no host address to answer for: the uplink has none and host_addresses is unset");
    } else {
        let list: Vec<String> = plan.host.iter().map(|a| a.to_string()).collect();
        f.ok(format!("host addresses: {}", list.join(", ")));
    }
    if !plan.wire.is_empty() {
        let list: Vec<String> = plan.wire.iter().map(|a| a.to_string()).collect();
        f.ok(format!(
            "routers and neighbours on the wire no VM may claim: {}",
            list.join(", ")
        ));
    }

    f.section("settings");
    let up = &plan.uplink.name;
    for key in [
        "net/ipv4/conf/all/rp_filter".to_owned(),
        format!("net/ipv4/conf/{up}/rp_filter"),
    ] {
        if let Some(v) = sysctl(&key) {
            f.ok(format!(
                "{key} = {v} (any value works: VM traffic arrives on the uplink)"
            ));
        }
    }
    match sysctl(&format!("net/ipv4/conf/{up}/arp_ignore")).as_deref() {
        Some("8") => f.fail(format!("net.ipv4.conf.{up}.arp_ignore = 8: the host answers no ARP at all, VMs cannot resolve it")),
        Some(v) => f.ok(format!("net.ipv4.conf.{up}.arp_ignore = {v}")),
        None => {}
    }
    if let Some(v) = sysctl(&format!("net/ipv4/conf/{up}/arp_announce")) {
        f.ok(format!("net.ipv4.conf.{up}.arp_announce = {v}"));
    }
    let wants_v6 = config
        .vms
        .iter()
        .any(|v| v.addresses.iter().any(|a| a.is_ipv6()));
    if wants_v6 && sysctl(&format!("net/ipv6/conf/{up}/disable_ipv6")).as_deref() == Some("1") {
        f.warn(format!(
            "IPv6 is disabled on {up} but VMs have IPv6 addresses: the host cannot answer them"
        ));
    }

    f.section("other programs and leftovers");
    let nl = observer.netlink();
    for (dir, t) in [
        ("egress", TcAttachType::Egress),
        ("ingress", TcAttachType::Ingress),
    ] {
        if let Ok((_, progs)) = SchedClassifier::query_tcx(up, t) {
            for p in progs {
                let name = p.name_as_str().unwrap_or("?");
                if Role::ALL.iter().any(|r| r.program() == name) {
                    continue;
                }
                match AttachMode::resolve(config.attach) {
                    Ok(AttachMode::Tc) => f.fail(format!(
                        "TCX program {name:?} (id {}) on {up} {dir} runs before any classic filter, mvbridge's too: use attach = \"auto\"",
                        p.id()
                    )),
                    _ => f.warn(format!(
                        "TCX program {name:?} (id {}) on {up} {dir}: it stays, and runs after mvbridge's (attached first)",
                        p.id()
                    )),
                }
            }
        }
        if let Ok(filters) = nl.filters(plan.uplink.index, dir == "ingress").await {
            for x in filters
                .iter()
                .filter(|x| !(x.priority == tc::PRIORITY && x.handle == tc::HANDLE))
            {
                let what = x
                    .name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default();
                if x.priority == tc::PRIORITY {
                    f.fail(format!(
                        "{} filter{what} (handle {:#x}) on {up} {dir} holds priority {}, where mvbridge's classic filters go: move it to another priority",
                        x.kind, x.handle, tc::PRIORITY
                    ));
                } else {
                    f.warn(format!(
                        "{} filter{what} (priority {}, handle {:#x}) on {up} {dir}: it stays, and runs after mvbridge's hooks",
                        x.kind, x.priority, x.handle
                    ));
                }
            }
        }
    }
    let pinned = pins.entries().unwrap_or_default();
    if pinned.is_empty() {
        f.ok(format!("nothing pinned under {}", config.bpffs.display()));
    } else {
        f.ok(format!(
            "{} pins under {}: run would adopt that datapath without a gap",
            pinned.len(),
            config.bpffs.display()
        ));
    }

    f.section("what run would do");
    match &plan.shim {
        ShimState::Present(l) => f.ok(format!("shim {} exists (left by mvbridge)", l.name)),
        ShimState::Missing => f.plan(format!(
            "create the shim {} (bridge-mode macvlan on {up}, silent)",
            config.shim.name
        )),
        ShimState::Stale(l) => f.plan(format!(
            "replace the shim {} (it sits on an earlier {up})",
            l.name
        )),
    }
    for link in &plan.stale {
        f.plan(format!(
            "delete macvtap {} (no configured VM uses it)",
            link.name
        ));
    }
    for vm in &plan.vms {
        let addresses = addresses(&config, vm);
        match &vm.state {
            VmState::Live(l) => f.plan(format!(
                "steer VM {:?} on {}: {addresses}{}",
                vm.name,
                LinkAt::new(vm.netns.as_deref(), &l.name),
                declared_by(&config, &vm.name)
            )),
            VmState::Absent if plan.create.contains(&vm.name) => {
                let cfg = config.vms.iter().find(|v| v.name == vm.name);
                f.plan(format!(
                    "create macvtap {} for VM {:?} and steer {addresses}",
                    cfg.and_then(|v| v.interface.as_deref()).unwrap_or("?"),
                    vm.name
                ))
            }
            VmState::Absent => f.plan(format!(
                "wait for VM {:?}'s link (not there: VM not running?){}",
                vm.name,
                declared_by(&config, &vm.name)
            )),
            VmState::Unfit { reason } => f.fail(reason),
        }
    }
    for problem in &plan.problems {
        f.fail(problem);
    }
    for hook in plan.hooks(&config) {
        f.plan(format!("attach {hook} ({})", hook.side()));
    }
    finish(f)
}

/// " (from libvirt domain ...)" for a VM libvirt declared.
fn declared_by(config: &Config, name: &str) -> String {
    match config.vms.iter().find(|v| v.name == name) {
        Some(vm) if vm.origin != VmOrigin::Config => format!(" (from {})", vm.label()),
        _ => String::new(),
    }
}

fn addresses(config: &Config, vm: &VmPlan) -> String {
    let mut list: Vec<String> = vm.addresses.iter().map(|o| o.addr.to_string()).collect();
    if let Some(cfg) = config.vms.iter().find(|v| v.name == vm.name) {
        list.extend(cfg.learn.iter().map(|p| format!("learnt within {p}")));
    }
    list.join(", ")
}

fn finish(f: Findings) -> Result<ExitCode> {
    for l in &f.lines {
        println!("{l}");
    }
    println!(
        "\n{} blocking problem(s), {} warning(s); nothing was changed.",
        f.blocking, f.warnings
    );
    Ok(if f.blocking == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
