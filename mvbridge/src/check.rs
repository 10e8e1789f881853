//! `mvbridge check`: a preflight that reads everything `run` depends on and
//! says what `run` would change, without changing anything.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};

use crate::bpffs::PinDir;
use crate::config::{Config, MacAddr};
use crate::netlink::Netlink;
use crate::observe::{self, VmLinkState};
use crate::preflight;

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
            "Linux {} with bpf() and TCX",
            sysctl("kernel/osrelease").unwrap_or_default()
        )),
        Err(e) => f.fail(format!("{e:#}")),
    }
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        f.ok("kernel BTF available");
    } else {
        f.warn(
            "no /sys/kernel/btf/vmlinux: fine for mvbridge's programs, noted for debugging tools",
        );
    }

    let nl = Netlink::connect().context("opening rtnetlink")?;
    let links = nl.links().await?;
    f.section("uplink");
    let Some(uplink) = links.iter().find(|l| l.name == config.uplink) else {
        f.fail(format!("uplink {:?} does not exist", config.uplink));
        return finish(f);
    };
    match uplink.mac {
        Some(m) => f.ok(format!(
            "{} (ifindex {}, MAC {})",
            uplink.name,
            uplink.index,
            MacAddr(m)
        )),
        None => f.fail(format!("{} has no Ethernet address", uplink.name)),
    }
    if !uplink.up {
        f.warn(format!(
            "{} is down: the datapath follows once it is up",
            uplink.name
        ));
    }
    let host = match &config.host_addresses {
        Some(h) => h.clone(),
        None => nl.addresses(uplink.index).await?,
    };
    if host.is_empty() {
        f.fail("no host address to answer for: the uplink has none and host_addresses is unset");
    } else {
        let list: Vec<String> = host.iter().map(|a| a.to_string()).collect();
        f.ok(format!("host addresses: {}", list.join(", ")));
    }

    f.section("settings");
    let up = &uplink.name;
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
    for (dir, t) in [
        ("egress", TcAttachType::Egress),
        ("ingress", TcAttachType::Ingress),
    ] {
        if let Ok((_, progs)) = SchedClassifier::query_tcx(up, t) {
            for p in progs {
                let name = p.name_as_str().unwrap_or("?");
                if !name.starts_with("mvb_") {
                    f.warn(format!(
                        "foreign TCX program {name:?} (id {}) on {up} {dir}: it runs before mvbridge's and can hide frames from it",
                        p.id()
                    ));
                }
            }
        }
    }
    match links.iter().find(|l| l.name == config.shim.name) {
        Some(l) if observe::is_ours(l) => {
            f.ok(format!("shim {} exists (left by mvbridge)", l.name))
        }
        Some(_) => f.fail(format!(
            "a link named {:?} exists and is not mvbridge's; choose another [shim] name",
            config.shim.name
        )),
        None => {}
    }
    let pins = PinDir::new(&config.bpffs);
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
    if !links.iter().any(|l| l.name == config.shim.name) {
        f.plan(format!(
            "create the shim {} (bridge-mode macvlan on {up}, silent)",
            config.shim.name
        ));
    }
    for vm in &config.vms {
        match observe::vm_link(vm, &links, uplink) {
            VmLinkState::Present(l) => f.plan(format!(
                "steer VM {:?} on {} (/dev/tap{}): {}",
                vm.name,
                l.name,
                l.index,
                addresses(vm)
            )),
            VmLinkState::Absent if vm.create => f.plan(format!(
                "create macvtap {} for VM {:?} and steer {}",
                vm.interface.as_deref().unwrap_or("?"),
                vm.name,
                addresses(vm)
            )),
            VmLinkState::Absent => f.plan(format!(
                "wait for VM {:?}'s {} (not there: VM not running?)",
                vm.name,
                vm.describe_link()
            )),
            VmLinkState::Unfit(why) => f.fail(why),
        }
        if let Some(why) = observe::host_overlap(vm, &host) {
            f.fail(why);
        }
    }
    f.plan(format!(
        "attach mvb_uplink to {up} egress, mvb_shim to {} egress, mvb_vm to each VM's macvtap",
        config.shim.name
    ));
    finish(f)
}

fn addresses(vm: &crate::config::Vm) -> String {
    let mut list: Vec<String> = vm.addresses.iter().map(|a| a.to_string()).collect();
    list.extend(vm.learn.iter().map(|p| format!("learnt within {p}")));
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
