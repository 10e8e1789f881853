//! The VM's root disk: a Debian (minbase) tree with the tools the lab
//! runs, built once with mmdebstrap, plus one kernel's modules and the
//! init script, as a disk image per kernel. qemu opens it with
//! `snapshot=on`, so the cached image is never written.
//!
//! Two kinds: [`image`] for `cargo xtask vmtest` (PID 1 is init.sh), and
//! [`systemd_image`] for `cargo xtask vmtest-package` (PID 1 is systemd,
//! which starts the package tests as a unit; see `package`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use super::cache::{Cache, digest, remove, sibling};
use super::kernel::Unpacked;
use super::{image, step};

/// What the tests run (the lab's tools, kmod for modprobe, xz for a
/// fixture, promtool to lint the metrics), and systemd for tests that
/// boot it as PID 1 instead of [`INIT`].
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "iptables",
    "iperf3",
    "kmod",
    "procps",
    "xz-utils",
    "prometheus",
    "systemd",
    "systemd-sysv",
    "dbus",
];

const MIRROR: &str = "http://deb.debian.org/debian";

/// A Debian release a root tree is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// What `--release` calls it.
    pub version: &'static str,
    pub codename: &'static str,
    /// The series of its own kernel (in `kernel::KERNELS`): Debian 13's
    /// 6.12 is the kernel bookworm-backports rebuilds from it.
    pub kernel: &'static str,
}

/// The suite's tests run on Debian 12; the package tests on 12 (systemd
/// 252) and 13 (systemd 257).
pub const BOOKWORM: Release = Release {
    version: "12",
    codename: "bookworm",
    kernel: "6.1",
};
pub const RELEASES: &[Release] = &[
    BOOKWORM,
    Release {
        version: "13",
        codename: "trixie",
        kernel: "6.12",
    },
];

/// PID 1 by default (`init=`).
pub const INIT: &str = include_str!("init.sh");
pub const INIT_PATH: &str = "/sbin/vmtest-init";

/// How [`image::root_disk`] lays the image out: bump it when that
/// changes, or the cache keeps serving images in the old layout.
const LAYOUT: u8 = 1;

/// Free space in the root file system: the tests write to tmpfs, but
/// systemd, or someone installing a package in the VM, needs some room.
const SPARE: u64 = 256 << 20;

/// What `vmtest-package`'s VM has: systemd as init, with what every
/// Debian host has next to it (udev: without it device units never show
/// up, and the serial getty waits 90 s for its tty; dbus for logind),
/// what the tests drive and check (iproute2: the lab, `tc`; ping; kmod:
/// the kernel's module autoloading runs modprobe), and man-db:
/// `systemd-analyze verify` runs `man` on the unit's `Documentation=`.
/// The package's own dependencies (libc6) are in every Debian; `package`
/// checks the package's Depends against this tree before it boots, so
/// apt in the VM (which has no network) finds all it needs.
const SYSTEMD_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "iproute2",
    "iputils-ping",
    "kmod",
    "procps",
    "man-db",
];

/// Documentation left out of a tree: nobody reads it in the VM, and it is
/// a third of the tree.
const UNREAD: &[&str] = &["man", "doc", "info", "locale"];

/// mmdebstrap's command line after the program name, but for the target.
fn mmdebstrap_args() -> Vec<String> {
    mmdebstrap_args_for(BOOKWORM, PACKAGES, UNREAD, &[])
}

/// The same for a tree of `release` with `packages`, without the
/// documentation under `excluded` (dirs of /usr/share), with `hooks` as
/// extra customize hooks.
fn mmdebstrap_args_for(
    release: Release,
    packages: &[&str],
    excluded: &[&str],
    hooks: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "--variant=minbase".to_owned(),
        format!("--include={}", packages.join(",")),
    ];
    for dir in excluded {
        args.push(format!("--dpkgopt=path-exclude=/usr/share/{dir}/*"));
    }
    // apt's _apt user cannot reach the tree in root's cache; as root,
    // download as root without a warning.
    args.push("--aptopt=APT::Sandbox::User \"root\"".to_owned());
    // mmdebstrap copies the host's hostname; the VM has its own.
    args.push("--customize-hook=echo mvb-vm > \"$1/etc/hostname\"".to_owned());
    args.extend(hooks.iter().map(|h| format!("--customize-hook={h}")));
    args.push(release.codename.to_owned());
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
    base_from(cache, "base", &mmdebstrap_args())
}

/// A base tree made by mmdebstrap with `args`, cached as `rootfs/NAME-KEY`.
fn base_from(cache: &Cache, name: &str, args: &[String]) -> Result<PathBuf> {
    let mut parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    parts.push(MIRROR.as_bytes());
    let key = digest(&parts);
    cache.entry(&format!("rootfs/{name}-{key}"), |tmp| {
        require_root()?;
        step(
            &format!("building the Debian tree ({name}) with mmdebstrap (once)"),
            || crate::run(Command::new("mmdebstrap").args(args).arg(tmp).arg(MIRROR)),
        )
    })
}

/// The systemd root image of `vmtest-package` for `kernel`: the base tree
/// of `release` with [`SYSTEMD_PACKAGES`] and their man pages, the kernel's modules, and
/// `files` (path in the tree, contents, mode; symlinks as
/// [`File::Link`]). Returns the image and the base tree it came from.
pub fn systemd_image(
    cache: &Cache,
    release: Release,
    kernel: &Unpacked,
    files: &[(String, File)],
) -> Result<(PathBuf, PathBuf)> {
    // man-db's trigger would re-index the pages after each package
    // install (it does while this file exists: the debconf question
    // man-db/auto-update): seconds under TCG, for nothing, as `man` finds
    // pages without its index.
    let hooks = ["rm -f \"$1/var/lib/man-db/auto-update\""];
    let excluded: Vec<&str> = UNREAD.iter().copied().filter(|d| *d != "man").collect();
    let base = base_from(
        cache,
        &format!("systemd-{}", release.codename),
        &mmdebstrap_args_for(release, SYSTEMD_PACKAGES, &excluded, &hooks),
    )?;
    let mut parts: Vec<Vec<u8>> = vec![
        base.file_name()
            .unwrap_or_default()
            .as_encoded_bytes()
            .to_vec(),
        kernel.package.as_bytes().to_vec(),
        vec![LAYOUT],
    ];
    for (path, file) in files {
        parts.push(path.as_bytes().to_vec());
        parts.push(file.key());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let key = digest(&refs);
    let rel = format!(
        "rootfs/systemd-{}-{}-{key}.img",
        release.codename, kernel.release
    );
    let image = cache.entry(&rel, |tmp| {
        step(
            &format!("building the systemd root image for {}", kernel.release),
            || {
                let stage = sibling(tmp, ".stage");
                let built = copy_with_modules(&base, kernel, &stage)
                    .and_then(|()| add_files(&stage, files))
                    .and_then(|()| image::root_disk(&stage, tmp, "mvb-root", SPARE));
                remove(&stage)?;
                built
            },
        )
    })?;
    Ok((image, base))
}

/// A file the systemd image gets on top of its base tree.
pub enum File {
    /// Contents and mode.
    Text(&'static str, u32),
    /// A symbolic link to this target (`/dev/null` masks a unit).
    Link(&'static str),
}

impl File {
    /// What names it in the image's cache key.
    fn key(&self) -> Vec<u8> {
        match self {
            File::Text(text, mode) => [text.as_bytes(), &mode.to_le_bytes()].concat(),
            File::Link(target) => [b"->".as_slice(), target.as_bytes()].concat(),
        }
    }
}

fn add_files(stage: &Path, files: &[(String, File)]) -> Result<()> {
    for (path, file) in files {
        let at = stage.join(path.trim_start_matches('/'));
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir)?;
        }
        remove(&at)?;
        match file {
            File::Text(text, mode) => {
                std::fs::write(&at, text)?;
                std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
            }
            File::Link(target) => std::os::unix::fs::symlink(target, &at)?,
        }
    }
    Ok(())
}

/// `stage` = the base tree + the kernel's modules + the init script.
fn fill(base: &Path, kernel: &Unpacked, stage: &Path) -> Result<()> {
    copy_with_modules(base, kernel, stage)?;
    let init = stage.join(INIT_PATH.trim_start_matches('/'));
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // Where the init mounts the payload disk.
    std::fs::create_dir(stage.join("vmtest"))?;
    Ok(())
}

/// `stage` = the base tree + the kernel's modules.
fn copy_with_modules(base: &Path, kernel: &Unpacked, stage: &Path) -> Result<()> {
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
    )
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
