//! The kernels vmtest knows: Debian's cloud kernels (small, with NVMe and
//! ext4 built in, so they boot a disk image without an initramfs), the
//! newest build of each series, unpacked into the cache.

use std::cmp::Ordering;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::apt::{self, Apt, Suite};
use super::cache::Cache;

pub struct Kernel {
    /// What `--kernel` calls it.
    pub series: &'static str,
    suite: Suite,
    /// The oldest qemu whose TCG boots it, when older ones do not.
    pub tcg_needs_qemu: Option<(u32, u32)>,
}

/// Debian 12's own kernel (no TCX: mvbridge's legacy attach path) and
/// bookworm-backports' (TCX).
pub const KERNELS: &[Kernel] = &[
    Kernel {
        series: "6.1",
        suite: Suite::Host,
        tcg_needs_qemu: None,
    },
    Kernel {
        series: "6.12",
        suite: Suite::Backports,
        // Under qemu 7.2's TCG (Debian 12's qemu) 6.12 double-faults
        // early in boot, at a cmpxchg16b in the slab allocator, whatever
        // the CPU model; 10.0 (bookworm-backports) boots it every time.
        tcg_needs_qemu: Some((10, 0)),
    },
];

/// The package that always depends on the current cloud kernel.
const META: &str = "linux-image-cloud-amd64";

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
    /// Debian's version of the package, e.g. `6.1.192-2`.
    pub fn version(&self) -> &str {
        self.package.split('_').nth(1).unwrap_or("?")
    }
}

/// The newest kernel of `kernel`'s series, from the cache or downloaded.
pub fn fetch(kernel: &Kernel, cache: &Cache) -> Result<Unpacked> {
    let apt = Apt::new(kernel.suite, cache)?;
    let depends = apt.depends(META)?;
    let Some(package) = newest(kernel.series, &depends) else {
        bail!(
            "{}'s {META} depends on {}, no {} cloud kernel: update KERNELS in {}",
            apt.name(),
            depends.join(", "),
            kernel.series,
            file!()
        );
    };
    let [deb] = apt
        .locate(&[&package])?
        .try_into()
        .map_err(|debs: Vec<_>| {
            anyhow::anyhow!("apt-get offers {} files for {package}", debs.len())
        })?;
    let dir = cache.entry(&format!("kernels/{}", deb.stem()), |tmp| {
        let file = apt.fetch(cache, &deb)?;
        apt::unpack(&file, tmp)
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
        package: deb.stem().to_owned(),
        release,
        vmlinuz,
    })
}

/// The newest image package of `series` among `names`.
fn newest(series: &str, names: &[String]) -> Option<String> {
    names
        .iter()
        .filter(|n| {
            n.strip_prefix("linux-image-")
                .and_then(|v| v.strip_prefix(series))
                .is_some_and(|rest| rest.starts_with('.') && rest.ends_with("-cloud-amd64"))
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

    #[test]
    fn the_newest_cloud_image_of_the_series_wins() {
        let names = strings(&[
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.12.95+deb12-cloud-amd64",
            "linux-image-6.1.0-57-amd64",
        ]);
        assert_eq!(
            newest("6.1", &names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest("6.12", &names).as_deref(),
            Some("linux-image-6.12.95+deb12-cloud-amd64")
        );
        assert_eq!(newest("6.6", &names), None);
    }

    #[test]
    fn the_meta_package_on_another_series_is_no_match() {
        let names = strings(&["linux-image-6.16.3+deb13-cloud-amd64"]);
        assert_eq!(newest("6.1", &names), None);
        assert_eq!(newest("6.12", &names), None);
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
        assert_eq!(names(), ["6.1", "6.12", "all"]);
        assert_eq!(select("all").unwrap().len(), KERNELS.len());
        assert_eq!(select("6.12").unwrap()[0].series, "6.12");
        assert!(select("5.15").is_err());
    }
}
