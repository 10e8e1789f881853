//! `mvbridge run` and `mvbridge down`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::netlink::Netlink;
use crate::{plan, preflight, setup, teardown};

pub async fn run(config_path: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("run")?;
    preflight::kernel()?;
    let nl = Netlink::connect().context("opening rtnetlink")?;
    let plan = plan::resolve(&config, &nl).await?;
    // Signals are taken over before set-up so a SIGTERM during it still
    // leads to a clean removal instead of a half-built datapath.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let running = setup::apply(&config, plan, &nl).await?;
    tracing::info!(
        uplink = %running.uplink.name,
        shim = %running.shim.name,
        vms = running.vms.len(),
        "datapath attached"
    );
    for vm in &running.vms {
        tracing::info!(
            vm = %vm.name,
            interface = %vm.link.name,
            tap = %format!("/dev/tap{}", vm.link.index),
            created = vm.created,
            "vm ready"
        );
    }

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: removing the datapath"),
        _ = int.recv() => tracing::info!("SIGINT: removing the datapath"),
    }
    let removed = teardown::remove(&config, &nl).await?;
    tracing::info!(
        hooks = removed.hooks.len(),
        pins = removed.pins,
        links = ?removed.links,
        "datapath removed"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn down(config_path: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    preflight::privileges("down")?;
    let nl = Netlink::connect().context("opening rtnetlink")?;
    let removed = teardown::remove(&config, &nl).await?;
    if removed.hooks.is_empty() && removed.pins == 0 && removed.links.is_empty() {
        println!("nothing to remove");
    } else {
        println!(
            "removed {} hooks ({}), {} pins, links: {}",
            removed.hooks.len(),
            removed.hooks.join(", "),
            removed.pins,
            if removed.links.is_empty() {
                "none".to_owned()
            } else {
                removed.links.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
