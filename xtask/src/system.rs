//! System packages the commands need, installed with apt when missing
//! (a fresh Debian or Ubuntu machine has none of the lab's tools). Each
//! tool is looked up first, so a second run installs nothing.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{on_path, run};

/// A program a command runs, and the Debian/Ubuntu package that has it.
pub type Tool = (&'static str, &'static str);

/// What the namespace lab runs: iproute2 builds it, ping and iperf3
/// drive traffic, tcpdump watches the wire, iptables NATs the private VMs,
/// xz unpacks the earlier release the upgrade test starts from, promtool
/// lints the metrics, sysctl reads and sets the lab's kernel knobs.
pub const LAB: &[Tool] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("sysctl", "procps"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    ("iptables", "iptables"),
    ("iperf3", "iperf3"),
    ("xz", "xz-utils"),
    ("promtool", "prometheus"),
];

/// What the libvirt tests run (tests/tests/libvirt.rs): libvirtd with
/// its qemu driver, virsh, and qemu for the guests; `unshare` gives
/// libvirtd directories of the lab's own. The guests' kernel and busybox
/// are downloaded by the tests (`apt-get download`), not installed.
pub const LIBVIRT: &[Tool] = &[
    ("libvirtd", "libvirt-daemon"),
    // A library, not a program: comes with libvirtd when that is missing.
    ("libvirtd", "libvirt-daemon-driver-qemu"),
    ("virsh", "libvirt-clients"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("unshare", "util-linux"),
];

/// Installs the packages of the tools in `tools` that are not on PATH,
/// saying what and why.
pub fn ensure(tools: &[Tool], why: &str) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "this machine has no apt-get to install what {why} needs: {}",
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask: installing {} with apt-get, for {why}",
        missing.join(" ")
    );
    run(apt().args(["update", "-q"]))?;
    run(apt()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}
