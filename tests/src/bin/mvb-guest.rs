//! The guest emulator: plays a VM on a macvtap without a hypervisor.
//!
//! It does what qemu does with `-netdev tap,fd=N`: it owns the macvtap's
//! `/dev/tapN` and copies frames between it and a TAP device inside the
//! guest's network namespace, whose stack then is the guest's.
//!
//! With `--tap NAME` instead of `--dev`, it plays a VM on a plain tap
//! device: it creates tap NAME in its own network namespace and owns its
//! queue, as qemu's `-netdev tap,ifname=NAME` does (a Linux bridge's port,
//! or a routed tap).
//!
//! usage: mvb-guest (--dev /dev/tapN | --tap NAME) --netns NS --ifname eth0 [--vnet-hdr]
//! It prints "ready" once both ends are open and runs until killed or until
//! the macvtap goes away.

use std::fs::File;
use std::io::{Read, Write};
use std::thread;

use anyhow::{Context, Result, bail};
use mvbridge_tests::tap;

/// The host's end of the VM's NIC.
enum HostEnd {
    /// A macvtap's character device.
    Macvtap(String),
    /// A tap device to create, by name.
    Tap(String),
}

struct Args {
    host: HostEnd,
    netns: String,
    ifname: String,
    vnet_hdr: bool,
}

fn args() -> Result<Args> {
    let mut dev = None;
    let mut tap = None;
    let mut netns = None;
    let mut ifname = "eth0".to_string();
    let mut vnet_hdr = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dev" => dev = it.next(),
            "--tap" => tap = it.next(),
            "--netns" => netns = it.next(),
            "--ifname" => ifname = it.next().context("--ifname needs a value")?,
            "--vnet-hdr" => vnet_hdr = true,
            other => bail!("unknown argument {other}"),
        }
    }
    let host = match (dev, tap) {
        (Some(d), None) => HostEnd::Macvtap(d),
        (None, Some(t)) => HostEnd::Tap(t),
        _ => bail!("one of --dev /dev/tapN or --tap NAME is required"),
    };
    Ok(Args {
        host,
        netns: netns.context("--netns NAME is required")?,
        ifname,
        vnet_hdr,
    })
}

/// Copies frames from `from` to `to` until either side fails.
fn pump(mut from: File, mut to: File) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65_536 + 64];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        // A frame the other side refuses (e.g. too big) is dropped like a
        // real NIC would; only a dead device ends the pump.
        if let Err(e) = to.write(&buf[..n])
            && e.raw_os_error() == Some(libc::EBADFD)
        {
            return Err(e);
        }
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let host_end = match &args.host {
        HostEnd::Macvtap(dev) => {
            tap::open_macvtap(dev, args.vnet_hdr).with_context(|| format!("opening {dev}"))?
        }
        // Created here, before entering the guest's namespace: the tap is
        // the host's.
        HostEnd::Tap(name) => {
            tap::create_tap(name, args.vnet_hdr).with_context(|| format!("creating tap {name}"))?
        }
    };
    tap::enter_netns(&args.netns).with_context(|| format!("entering netns {}", args.netns))?;
    let guest = tap::create_tap(&args.ifname, args.vnet_hdr)
        .with_context(|| format!("creating tap {} in {}", args.ifname, args.netns))?;
    println!("ready");
    std::io::stdout().flush()?;

    let (tx_in, tx_out) = (guest.try_clone()?, host_end.try_clone()?);
    let up = thread::spawn(move || pump(tx_in, tx_out));
    let down = pump(host_end, guest);
    // Either direction ending means the VM is gone.
    if let Err(e) = down {
        eprintln!("mvb-guest: host side closed: {e}");
    }
    drop(up);
    Ok(())
}
