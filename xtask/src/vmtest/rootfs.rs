//! The VM's root disk: a Debian 12 (minbase) tree with the tools the lab
//! runs, built once with mmdebstrap, plus one kernel's modules and the
//! init script, as a disk image per kernel. qemu opens it with
//! `snapshot=on`, so the cached image is never written.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use super::cache::{Cache, digest, remove, sibling};
use super::kernel::Unpacked;
use super::{image, step};

/// What the tests run (the lab's tools, kmod for modprobe, xz for a
/// fixture), and systemd for tests that boot it as PID 1 instead of
/// [`INIT`].
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "iptables",
    "iperf3",
    "kmod",
    "procps",
    "xz-utils",
    "systemd",
    "systemd-sysv",
    "dbus",
];

const MIRROR: &str = "http://deb.debian.org/debian";

/// PID 1 by default (`init=`).
pub const INIT: &str = include_str!("init.sh");
pub const INIT_PATH: &str = "/sbin/vmtest-init";

/// How [`image::root_disk`] lays the image out: bump it when that
/// changes, or the cache keeps serving images in the old layout.
const LAYOUT: u8 = 1;

/// Free space in the root file system: the tests write to tmpfs, but
/// systemd, or someone installing a package in the VM, needs some room.
const SPARE: u64 = 256 << 20;

/// mmdebstrap's command line after the program name, but for the target.
fn mmdebstrap_args() -> Vec<String> {
    let mut args = vec![
        "--variant=minbase".to_owned(),
        format!("--include={}", PACKAGES.join(",")),
    ];
    // Nobody reads documentation in the VM; it is a third of the tree.
    for dir in ["man", "doc", "info", "locale"] {
        args.push(format!("--dpkgopt=path-exclude=/usr/share/{dir}/*"));
    }
    // apt's _apt user cannot reach the tree in root's cache; as root,
    // download as root without a warning.
    args.push("--aptopt=APT::Sandbox::User \"root\"".to_owned());
    // mmdebstrap copies the host's hostname; the VM has its own.
    args.push("--customize-hook=echo mvb-vm > \"$1/etc/hostname\"".to_owned());
    args.push("bookworm".to_owned());
    args
}

/// The root image for `kernel`, from the cache or built.
pub fn image(cache: &Cache, kernel: &Unpacked) -> Result<PathBuf> {
    let base = base(cache)?;
    let key = digest(&[
        base.file_name().unwrap_or_default().as_encoded_bytes(),
        INIT.as_bytes(),
        kernel.package.as_bytes(),
        &[LAYOUT],
    ]);
    let rel = format!("rootfs/root-{}-{key}.img", kernel.release);
    cache.entry(&rel, |tmp| {
        step(
            &format!("building the root image for {}", kernel.release),
            || {
                let stage = sibling(tmp, ".stage");
                let built = fill(&base, kernel, &stage)
                    .and_then(|()| image::root_disk(&stage, tmp, "mvb-root", SPARE));
                remove(&stage)?;
                built
            },
        )
    })
}

/// The base tree, made by mmdebstrap once per package list.
fn base(cache: &Cache) -> Result<PathBuf> {
    let args = mmdebstrap_args();
    let mut parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    parts.push(MIRROR.as_bytes());
    let key = digest(&parts);
    cache.entry(&format!("rootfs/base-{key}"), |tmp| {
        require_root()?;
        step("building the Debian 12 tree with mmdebstrap (once)", || {
            crate::run(Command::new("mmdebstrap").args(&args).arg(tmp).arg(MIRROR))
        })
    })
}

/// `stage` = the base tree + the kernel's modules + the init script.
fn fill(base: &Path, kernel: &Unpacked, stage: &Path) -> Result<()> {
    require_root()?;
    remove(stage)?;
    crate::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(base)
            .arg(stage),
    )?;
    let modules = stage.join("lib/modules");
    std::fs::create_dir_all(&modules)?;
    crate::run(
        Command::new("cp")
            .arg("-a")
            .arg(&kernel.modules)
            .arg(&modules),
    )?;
    // The tree's own depmod: the host may have no kmod.
    crate::run(
        Command::new("chroot")
            .arg(stage)
            .args(["/sbin/depmod", &kernel.release]),
    )?;
    let init = stage.join(INIT_PATH.trim_start_matches('/'));
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Where the init mounts the payload disk.
    std::fs::create_dir(stage.join("vmtest"))?;
    Ok(())
}

/// mmdebstrap and chroot need root, and so do the tree's root-owned files.
fn require_root() -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "building the VM's root file system needs root (mmdebstrap, chroot): \
             run `sudo -E cargo xtask vmtest ...`"
        );
    }
    Ok(())
}
