//! The kernels vmtest knows: the ones our users' distributions run, each
//! the newest build of its series from the distribution's own archive,
//! unpacked into the cache. Debian's cloud kernels have NVMe and ext4
//! built in, Ubuntu's generic one the PIIX IDE controller and ext4: each
//! boots a disk image without an initramfs.

use std::cmp::Ordering;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::apt::{self, Apt, Suite};
use super::cache::Cache;

pub struct Kernel {
    /// What `--kernel` calls it.
    pub series: &'static str,
    /// Whose kernel it is, for the summary.
    pub distribution: &'static str,
    suite: Suite,
    /// The package that always depends on the current image.
    meta: &'static str,
    /// How the image packages' names end (`linux-image-6.1.0-56-cloud-amd64`).
    flavour: &'static str,
    /// The modules are in a package of their own (Ubuntu's
    /// `linux-modules-RELEASE`), not in the image's.
    separate_modules: bool,
    /// The disk controller its built-in drivers can boot from.
    pub disk: Disk,
    /// The oldest qemu whose TCG boots it, when older ones do not.
    pub tcg_needs_qemu: Option<(u32, u32)>,
    /// Older than mvbridge supports: the VM runs only the test that
    /// mvbridge refuses it (tests/tests/old_kernels.rs).
    pub too_old: bool,
}

/// The test that runs on kernels older than mvbridge supports.
pub const TOO_OLD_TEST: &str = "old_kernels";

/// How the VM's disks are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    Nvme,
    /// On the PIIX controller of qemu's default machine.
    Ide,
}

/// Oldest first. Linux 5.10 is the oldest kernel mvbridge supports (5.4
/// is there to be refused); no kernel but 6.12 has TCX, so the others run
/// mvbridge's classic TC path.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        series: "5.4",
        distribution: "Ubuntu 20.04",
        suite: Suite::Private(&apt::FOCAL),
        meta: "linux-image-generic",
        flavour: "-generic",
        separate_modules: true,
        disk: Disk::Ide,
        tcg_needs_qemu: None,
        too_old: true,
    },
    Kernel {
        series: "5.10",
        distribution: "Debian 11",
        suite: Suite::Private(&apt::BULLSEYE),
        meta: DEBIAN_META,
        flavour: DEBIAN_FLAVOUR,
        separate_modules: false,
        disk: Disk::Nvme,
        tcg_needs_qemu: None,
        too_old: false,
    },
    Kernel {
        series: "5.15",
        distribution: "Ubuntu 22.04",
        suite: Suite::Private(&apt::JAMMY),
        meta: "linux-image-generic",
        flavour: "-generic",
        separate_modules: true,
        disk: Disk::Ide,
        tcg_needs_qemu: None,
        too_old: false,
    },
    Kernel {
        series: "6.1",
        distribution: "Debian 12",
        suite: Suite::Host,
        meta: DEBIAN_META,
        flavour: DEBIAN_FLAVOUR,
        separate_modules: false,
        disk: Disk::Nvme,
        tcg_needs_qemu: None,
        too_old: false,
    },
    Kernel {
        series: "6.12",
        distribution: "Debian 12 backports",
        suite: Suite::Private(&apt::BACKPORTS),
        meta: DEBIAN_META,
        flavour: DEBIAN_FLAVOUR,
        separate_modules: false,
        disk: Disk::Nvme,
        // Under qemu 7.2's TCG (Debian 12's qemu) 6.12 double-faults
        // early in boot, at a cmpxchg16b in the slab allocator, whatever
        // the CPU model; 10.0 (bookworm-backports) boots it every time.
        tcg_needs_qemu: Some((10, 0)),
        too_old: false,
    },
];

const DEBIAN_META: &str = "linux-image-cloud-amd64";
const DEBIAN_FLAVOUR: &str = "-cloud-amd64";

/// `--kernel`'s value: one series, or `all`.
pub fn select(choice: &str) -> Result<Vec<&'static Kernel>> {
    if choice == "all" {
        return Ok(KERNELS.iter().collect());
    }
    let kernel = KERNELS
        .iter()
        .find(|k| k.series == choice)
        .with_context(|| format!("no kernel {choice} (known: {})", names().join(", ")))?;
    Ok(vec![kernel])
}

/// The values `--kernel` takes.
pub fn names() -> Vec<&'static str> {
    KERNELS.iter().map(|k| k.series).chain(["all"]).collect()
}

/// An unpacked kernel package.
pub struct Unpacked {
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The package file it came from, without `.deb`.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
}

impl Unpacked {
    /// The distribution's version of the package, e.g. `6.1.192-2`.
    pub fn version(&self) -> &str {
        self.package.split('_').nth(1).unwrap_or("?")
    }
}

/// The newest kernel of `kernel`'s series, from the cache or downloaded.
pub fn fetch(kernel: &Kernel, cache: &Cache) -> Result<Unpacked> {
    let apt = Apt::new(kernel.suite, cache)?;
    let depends = apt.depends(kernel.meta)?;
    let Some(package) = newest(kernel, &depends) else {
        bail!(
            "{}'s {} depends on {}, no {} kernel: update KERNELS in {}",
            apt.name(),
            kernel.meta,
            depends.join(", "),
            kernel.series,
            file!()
        );
    };
    let mut packages = vec![package.clone()];
    if kernel.separate_modules {
        packages.push(package.replacen("linux-image-", "linux-modules-", 1));
    }
    let names: Vec<&str> = packages.iter().map(String::as_str).collect();
    let debs = apt.locate(&names)?;
    let image = debs
        .iter()
        .find(|d| d.file_name.starts_with(&format!("{package}_")))
        .with_context(|| format!("apt-get offers no file for {package}"))?;
    if debs.len() != packages.len() {
        bail!(
            "apt-get offers {} files for {}",
            debs.len(),
            packages.join(" ")
        );
    }
    let dir = cache.entry(&format!("kernels/{}", image.stem()), |tmp| {
        for deb in &debs {
            apt::unpack(&apt.fetch(cache, deb)?, tmp)?;
        }
        Ok(())
    })?;
    let modules_dir = dir.join("lib/modules");
    let release = std::fs::read_dir(&modules_dir)
        .with_context(|| format!("reading {}", modules_dir.display()))?
        .next()
        .context("the kernel package has no modules")??
        .file_name()
        .to_string_lossy()
        .into_owned();
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("the kernel package has no {}", vmlinuz.display());
    }
    Ok(Unpacked {
        modules: modules_dir.join(&release),
        package: image.stem().to_owned(),
        release,
        vmlinuz,
    })
}

/// The newest image package of `kernel`'s series and flavour among
/// `names`.
fn newest(kernel: &Kernel, names: &[String]) -> Option<String> {
    names
        .iter()
        .filter(|n| {
            n.strip_prefix("linux-image-")
                .and_then(|v| v.strip_prefix(kernel.series))
                .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(kernel.flavour))
        })
        .max_by(|a, b| natural_cmp(a, b))
        .cloned()
}

/// Compares like `sort -V`: runs of digits as numbers, the rest as text,
/// so 6.1.0-56 comes after 6.1.0-9.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(first) = rest.chars().next() {
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            out.push((digit, &rest[..end]));
            rest = &rest[end..];
        }
        out
    }
    let (a, b) = (chunks(a), chunks(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn series(name: &str) -> &'static Kernel {
        select(name).unwrap()[0]
    }

    #[test]
    fn the_newest_image_of_the_series_and_flavour_wins() {
        let names = strings(&[
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.12.95+deb12-cloud-amd64",
            "linux-image-6.1.0-57-amd64",
        ]);
        assert_eq!(
            newest(series("6.1"), &names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest(series("6.12"), &names).as_deref(),
            Some("linux-image-6.12.95+deb12-cloud-amd64")
        );
        assert_eq!(newest(series("5.10"), &names), None);
        // Ubuntu's meta package: the generic image, not the -extra
        // modules, firmware or microcode it also depends on.
        let ubuntu = strings(&[
            "linux-image-5.15.0-204-generic",
            "linux-modules-extra-5.15.0-204-generic",
            "linux-firmware",
        ]);
        assert_eq!(
            newest(series("5.15"), &ubuntu).as_deref(),
            Some("linux-image-5.15.0-204-generic")
        );
    }

    #[test]
    fn the_meta_package_on_another_series_is_no_match() {
        let names = strings(&["linux-image-6.16.3+deb13-cloud-amd64"]);
        assert_eq!(newest(series("6.1"), &names), None);
        assert_eq!(newest(series("6.12"), &names), None);
    }

    #[test]
    fn numbers_compare_as_numbers() {
        assert_eq!(natural_cmp("6.1.0-56", "6.1.0-9"), Ordering::Greater);
        assert_eq!(natural_cmp("6.12.95", "6.12.100"), Ordering::Less);
        assert_eq!(natural_cmp("6.1.0-09", "6.1.0-9"), Ordering::Equal);
        assert_eq!(natural_cmp("6.1.0", "6.1.0-1"), Ordering::Less);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
    }

    #[test]
    fn kernel_names_come_from_the_table() {
        assert_eq!(names(), ["5.4", "5.10", "5.15", "6.1", "6.12", "all"]);
        assert_eq!(select("all").unwrap().len(), KERNELS.len());
        assert_eq!(select("6.12").unwrap()[0].series, "6.12");
        assert!(select("4.19").is_err());
    }
}
