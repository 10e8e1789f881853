//! `mvbridge status`: what is attached, the address table and counters,
//! read from the kernel (pins, TCX queries, netlink), never from the daemon.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mvbridge_common::maps::{ENDPOINT_HOST, Endpoint};
use serde::Serialize;

use crate::bpffs::PinDir;
use crate::config::{Config, MacAddr};
use crate::datapath::{self, Role};
use crate::netlink::Netlink;
use crate::preflight;
use crate::tables::Tables;

#[derive(Serialize)]
struct Report {
    attached: bool,
    uplink: String,
    hooks: Vec<Hook>,
    host_addresses: Vec<IpAddr>,
    vms: Vec<VmRow>,
    paths: Vec<PathRow>,
    drops: Vec<DropRow>,
}

#[derive(Serialize)]
struct Hook {
    interface: String,
    role: &'static str,
    program: &'static str,
    attached: bool,
    pinned: bool,
    problem: Option<String>,
}

#[derive(Serialize)]
struct VmRow {
    name: String,
    interface: String,
    ifindex: Option<u32>,
    mac: Option<String>,
    tap: Option<String>,
    addresses: Vec<IpAddr>,
}

#[derive(Serialize)]
struct PathRow {
    path: &'static str,
    proto: &'static str,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct DropRow {
    reason: &'static str,
    count: u64,
    description: &'static str,
}

pub async fn status(config_path: &Path, json: bool) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("status")?;
    let nl = Netlink::connect().context("opening rtnetlink")?;
    let report = collect(&config, &nl).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if report.attached {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn collect(config: &Config, nl: &Netlink) -> Result<Report> {
    let pins = PinDir::new(&config.bpffs);
    let mut hooks = vec![hook(&pins, &config.uplink, Role::Uplink, "uplink")];
    hooks.push(hook(&pins, &config.shim.name, Role::Shim, "shim"));
    for vm in &config.vms {
        hooks.push(hook(&pins, &vm.interface, Role::Vm, "vm"));
    }

    let tables = Tables::open(&pins).ok();
    // Both address tables as one list of (address, endpoint).
    let entries: Vec<(IpAddr, Endpoint)> = match &tables {
        Some(t) => t
            .local4()
            .into_iter()
            .map(|(k, e)| (IpAddr::from(Ipv4Addr::from(k)), e))
            .chain(
                t.local6()
                    .into_iter()
                    .map(|(k, e)| (IpAddr::from(Ipv6Addr::from(k)), e)),
            )
            .collect(),
        None => Vec::new(),
    };
    let mut host_addresses: Vec<IpAddr> = entries
        .iter()
        .filter(|(_, e)| e.kind == ENDPOINT_HOST)
        .map(|(a, _)| *a)
        .collect();
    host_addresses.sort();

    let mut vms = Vec::new();
    for vm in &config.vms {
        let link = nl.link_by_name(&vm.interface).await?;
        let ifindex = link.as_ref().map(|l| l.index);
        let mut addresses: Vec<IpAddr> = entries
            .iter()
            .filter(|(_, e)| e.kind != ENDPOINT_HOST && Some(e.ifindex) == ifindex)
            .map(|(a, _)| *a)
            .collect();
        addresses.sort();
        vms.push(VmRow {
            name: vm.name.clone(),
            interface: vm.interface.clone(),
            ifindex,
            mac: link
                .as_ref()
                .and_then(|l| l.mac)
                .map(|m| MacAddr(m).to_string()),
            tap: ifindex.map(|i| format!("/dev/tap{i}")),
            addresses,
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

fn hook(pins: &PinDir, ifname: &str, role: Role, label: &'static str) -> Hook {
    let pinned = pins.link(ifname).exists();
    let (attached, problem) = match datapath::attached_programs(ifname) {
        Ok(progs) => {
            let ours = progs.iter().any(|p| p == role.program());
            (ours, (!ours).then(|| "not attached".to_owned()))
        }
        Err(e) => (false, Some(e)),
    };
    Hook {
        interface: ifname.to_owned(),
        role: label,
        program: role.program(),
        attached,
        pinned,
        problem,
    }
}

fn print_human(r: &Report) {
    println!(
        "datapath: {}",
        if r.attached {
            "attached"
        } else {
            "NOT attached"
        }
    );
    println!("\nhooks (egress):");
    for h in &r.hooks {
        let state = match (&h.problem, h.pinned) {
            (None, true) => "attached".to_owned(),
            (None, false) => "attached, pin missing".to_owned(),
            (Some(p), _) => p.clone(),
        };
        println!(
            "  {:<6} {:<16} {:<11} {}",
            h.role, h.interface, h.program, state
        );
    }
    let hosts: Vec<String> = r.host_addresses.iter().map(|a| a.to_string()).collect();
    println!("\nhost addresses on {}: {}", r.uplink, hosts.join(", "));
    println!("\nvms:");
    println!(
        "  {:<12} {:<16} {:<18} {:<12} addresses",
        "name", "interface", "mac", "tap"
    );
    for v in &r.vms {
        let addrs: Vec<String> = v.addresses.iter().map(|a| a.to_string()).collect();
        println!(
            "  {:<12} {:<16} {:<18} {:<12} {}",
            v.name,
            v.interface,
            v.mac.as_deref().unwrap_or("-"),
            v.tap.as_deref().unwrap_or("(missing)"),
            if addrs.is_empty() {
                "-".to_owned()
            } else {
                addrs.join(", ")
            }
        );
    }
    println!("\nsteered traffic:");
    println!(
        "  {:<10} {:<6} {:>12} {:>16}",
        "path", "proto", "packets", "bytes"
    );
    for p in r.paths.iter().filter(|p| p.packets > 0) {
        println!(
            "  {:<10} {:<6} {:>12} {:>16}",
            p.path, p.proto, p.packets, p.bytes
        );
    }
    println!("\ndrops:");
    for d in &r.drops {
        println!("  {:<15} {:>10}  {}", d.reason, d.count, d.description);
    }
}
