//! `mvbridge status`: the report as tables or JSON; the exit code says
//! whether the whole datapath is attached.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::commands::preflight;
use crate::commands::report::{self, Report};
use crate::config::Config;
use crate::control::world::Observer;
use crate::kernel::netlink::Netlink;

pub async fn status(config_path: &Path, json: bool) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("status")?;
    let mut observer = Observer::new(Netlink::connect()?);
    let report = report::collect_all(&config, &mut observer)
        .await
        .context("reading the datapath's state")?;
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

fn print_human(r: &Report) {
    println!(
        "datapath: {}",
        if r.attached {
            "attached"
        } else {
            "NOT attached"
        }
    );
    println!("\nhooks:");
    for h in &r.hooks {
        let state = match (&h.problem, h.kept, h.mode) {
            (None, true, Some(mode)) => format!("attached ({mode})"),
            (None, _, Some(mode)) => format!("attached ({mode}), not kept for a restart"),
            (Some(p), _, _) => p.clone(),
            (None, _, None) => "not attached".to_owned(),
        };
        println!(
            "  {:<6} {:<16} {:<11} {}",
            h.role, h.interface, h.program, state
        );
    }
    let hosts: Vec<String> = r.host_addresses.iter().map(|a| a.to_string()).collect();
    println!("\nhost addresses on {}: {}", r.uplink, hosts.join(", "));
    if let Some(lv) = &r.libvirt {
        println!("\n{}", lv.summary());
    }
    println!("\nvms:");
    println!(
        "  {:<12} {:<14} {:<8} {:<16} {:<18} {:<12} addresses",
        "name", "from", "state", "interface", "mac", "tap"
    );
    for v in &r.vms {
        let addrs: Vec<String> = v
            .addresses
            .iter()
            .map(|a| match a.source {
                "config" => a.address.to_string(),
                other => format!("{} ({other})", a.address),
            })
            .collect();
        let state = v.status.name();
        println!(
            "  {:<12} {:<14} {:<8} {:<16} {:<18} {:<12} {}",
            v.name,
            v.origin.short(),
            state,
            v.interface.as_deref().unwrap_or("-"),
            v.mac.as_deref().unwrap_or("-"),
            v.tap.as_deref().unwrap_or("-"),
            if addrs.is_empty() {
                "-".to_owned()
            } else {
                addrs.join(", ")
            }
        );
        if let Some(why) = v.status.reason() {
            println!("  {:<12} {why}", "");
        }
    }
    println!("\nper-VM traffic (packets):");
    println!(
        "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "name", "to host", "from host", "to VMs", "from VMs", "dropped"
    );
    for v in &r.vms {
        let c = &v.counters;
        println!(
            "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>8}",
            v.name,
            c.to_host.packets,
            c.from_host.packets,
            c.to_vms.packets,
            c.from_vms.packets,
            c.dropped
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
        println!("  {:<19} {:>10}  {}", d.reason, d.count, d.description);
    }
    if !r.problems.is_empty() {
        println!("\nproblems:");
        for p in &r.problems {
            println!("  {p}");
        }
    }
}
