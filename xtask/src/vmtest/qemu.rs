//! Which qemu boots a kernel: the system's, unless the kernel needs a
//! newer one under TCG; then bookworm-backports' qemu, unpacked into the
//! cache and run from there (its firmware from the system's packages).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::accel::Accel;
use super::apt::{self, Apt, Suite};
use super::cache::Cache;
use super::kernel::Kernel;
use super::output;

pub struct Qemu {
    binary: PathBuf,
    version: (u32, u32, u32),
    /// The unpacked tree of a qemu that is not installed.
    unpacked: Option<PathBuf>,
}

impl Qemu {
    pub fn system() -> Result<Self> {
        Self::at(PathBuf::from("qemu-system-x86_64"), None)
    }

    fn at(binary: PathBuf, unpacked: Option<PathBuf>) -> Result<Self> {
        let out = output(Command::new(&binary).arg("--version"))?;
        let version =
            parse_version(&out).with_context(|| format!("cannot read the version in {out:?}"))?;
        Ok(Self {
            binary,
            version,
            unpacked,
        })
    }

    fn at_least(&self, (major, minor): (u32, u32)) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    pub fn version_string(&self) -> String {
        let (major, minor, patch) = self.version;
        format!("{major}.{minor}.{patch}")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        if let Some(root) = &self.unpacked {
            // The unpacked qemu would load the installed qemu's modules
            // (another build: it refuses them, loudly); it needs none.
            cmd.env("QEMU_MODULE_DIR", root.join("usr/lib/qemu-modules"));
            // Its own option ROMs first; the BIOS lives in the seabios
            // package, which the installed qemu brought along.
            cmd.arg("-L").arg(root.join("usr/share/qemu"));
            cmd.args(["-L", "/usr/share/seabios"]);
        }
        cmd
    }
}

/// The qemu to boot `kernel` with under `accel`: the system's if it can.
pub fn for_kernel(kernel: &Kernel, accel: Accel, cache: &Cache) -> Result<Qemu> {
    let system = Qemu::system()?;
    let Some(needs) = kernel.tcg_needs_qemu else {
        return Ok(system);
    };
    if accel != Accel::Tcg || system.at_least(needs) {
        return Ok(system);
    }
    eprintln!(
        "xtask: vmtest: qemu {} cannot run kernel {} under TCG; taking qemu from \
         bookworm-backports (not installed: unpacked into the cache)",
        system.version_string(),
        kernel.series
    );
    let newer = backports(cache)?;
    if !newer.at_least(needs) {
        bail!(
            "bookworm-backports' qemu is {}, kernel {} needs {}.{} under TCG",
            newer.version_string(),
            kernel.series,
            needs.0,
            needs.1
        );
    }
    Ok(newer)
}

/// bookworm-backports' qemu-system-x86, unpacked once into the cache.
fn backports(cache: &Cache) -> Result<Qemu> {
    let apt = Apt::new(Suite::Private(&apt::BACKPORTS), cache)?;
    // qemu-system-data has its option ROMs and keymaps.
    let debs = apt.locate(&["qemu-system-x86", "qemu-system-data"])?;
    let main = debs
        .iter()
        .find(|d| d.file_name.starts_with("qemu-system-x86_"))
        .context("bookworm-backports has no qemu-system-x86")?;
    let dir = cache.entry(&format!("qemu/{}", main.stem()), |tmp| {
        for deb in &debs {
            apt::unpack(&apt.fetch(cache, deb)?, tmp)?;
        }
        Ok(std::fs::create_dir_all(tmp.join("usr/lib/qemu-modules"))?)
    })?;
    Qemu::at(dir.join("usr/bin/qemu-system-x86_64"), Some(dir))
}

/// Escapes a path for a qemu option value (`,` separates options).
pub fn option_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
fn parse_version(out: &str) -> Option<(u32, u32, u32)> {
    let rest = out.lines().next()?.split("version ").nth(1)?;
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_debian_builds() {
        assert_eq!(
            parse_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2, 22))
        );
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some((10, 0, 2))
        );
        assert_eq!(parse_version("QEMU emulator version 9.1"), Some((9, 1, 0)));
        assert_eq!(parse_version("qemu-system-x86_64: not found"), None);
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        assert_eq!(option_path(Path::new("/a,b/c")), "/a,,b/c");
    }
}
