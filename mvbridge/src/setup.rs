//! Bringing the datapath up from a resolved plan, all or nothing: if any
//! step fails, everything done so far is removed again.

use anyhow::{Context, Result};

use crate::bpffs::{self, PinDir};
use crate::config::Config;
use crate::datapath::{Datapath, Role};
use crate::desired::{Desired, VmEntry};
use crate::netlink::{Link, Netlink};
use crate::plan::{self, Plan};
use crate::tables::Tables;
use crate::teardown;

/// A VM's link as the datapath uses it.
#[derive(Clone, Debug)]
pub struct VmLink {
    pub name: String,
    pub link: Link,
    pub created: bool,
}

/// What is running once set-up succeeded.
pub struct Running {
    pub uplink: Link,
    pub shim: Link,
    pub vms: Vec<VmLink>,
}

pub async fn apply(config: &Config, plan: Plan, nl: &Netlink) -> Result<Running> {
    let pins = PinDir::new(&config.bpffs);
    let prepared = bpffs::ensure(&pins.dir)
        .with_context(|| format!("preparing bpffs at {}", pins.dir.display()))?;
    match build(config, plan, nl, &pins).await {
        Ok(running) => Ok(running),
        Err(err) => {
            if let Err(e) = teardown::remove(config, nl).await {
                tracing::error!("rolling back a failed set-up left something behind: {e:#}");
            }
            bpffs::undo(&prepared);
            Err(err)
        }
    }
}

async fn build(config: &Config, plan: Plan, nl: &Netlink, pins: &PinDir) -> Result<Running> {
    let shim = create_shim(config, &plan.uplink, nl).await?;
    let mut vms = Vec::new();
    for vp in plan.vms {
        let (link, created) = match vp.existing {
            Some(link) => (link, false),
            None => (create_vm_link(&vp.vm, &plan.uplink, nl).await?, true),
        };
        vms.push(VmLink {
            name: vp.vm.name.clone(),
            link,
            created,
        });
    }

    let mut datapath = Datapath::load(pins)?;
    let mut tables = Tables::open(pins).map_err(anyhow::Error::msg)?;
    let entries: Vec<VmEntry<'_>> = vms
        .iter()
        .map(|vm| VmEntry {
            link: &vm.link,
            addresses: config
                .vms
                .iter()
                .find(|v| v.name == vm.name)
                .map(|v| v.addresses.as_slice())
                .unwrap_or_default(),
        })
        .collect();
    let desired = Desired::new(&plan.uplink, &shim, &plan.host_addresses, &entries);
    tables.sync(&desired).map_err(anyhow::Error::msg)?;

    // The shim's guard before the shim comes up: bringing a link up makes
    // the stack send (an MLD report for ff02::2 on a forwarding host, from
    // ::), and none of that may reach the wire.
    datapath.attach(Role::Shim, &shim.name, pins)?;
    nl.set_up(shim.index).await?;
    // VM hooks next and the uplink last: host->VM steering only starts
    // once every return path is in place.
    for vm in &vms {
        datapath.attach(Role::Vm, &vm.link.name, pins)?;
    }
    datapath.attach(Role::Uplink, &plan.uplink.name, pins)?;
    Ok(Running {
        uplink: plan.uplink,
        shim,
        vms,
    })
}

/// The shim: a bridge-mode macvlan that never speaks. No ARP, no IPv6
/// address (so no DAD, RS or MLD), and its egress hook drops whatever the
/// stack still tries to send, so its MAC never reaches the wire. Created
/// down; `build` brings it up once the hook is in place.
async fn create_shim(config: &Config, uplink: &Link, nl: &Netlink) -> Result<Link> {
    let name = &config.shim.name;
    let shim = nl
        .create_macvlan(name, uplink.index, config.shim.mac.map(|m| m.0))
        .await?;
    nl.set_alias(shim.index, &plan::shim_alias()).await?;
    nl.disable_ipv6_addresses(shim.index).await?;
    Ok(shim)
}

async fn create_vm_link(vm: &crate::config::Vm, uplink: &Link, nl: &Netlink) -> Result<Link> {
    let mac = vm
        .mac
        .context("create = true without a MAC (the config check should have caught this)")?;
    let link = nl
        .create_macvtap(&vm.interface, uplink.index, mac.0)
        .await?;
    nl.set_alias(link.index, &plan::vm_alias(vm)).await?;
    nl.set_up(link.index).await?;
    Ok(link)
}
