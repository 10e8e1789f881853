//! Debian packages for the VM (kernels, a newer qemu), found and fetched
//! with apt and unpacked with `dpkg -x`: nothing is installed on the host.
//! Debian 12's own kernel comes through the host's apt; every other
//! archive (bookworm-backports, Debian 11, Ubuntu 22.04) through a private
//! apt configuration in the cache, so the host's sources stay as they are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use super::cache::{Cache, remove, sibling};
use super::{output, step};

/// Where a package comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// What the host's apt sources offer (Debian 12 on the team's hosts).
    Host,
    /// An archive the host's apt does not know.
    Private(&'static Archive),
}

/// An archive read through a private apt configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct Archive {
    /// What messages call it.
    pub name: &'static str,
    /// Its directory under the cache's `apt/`.
    pub dir: &'static str,
    /// `URI SUITE COMPONENT` of each sources.list line.
    pub sources: &'static [&'static str],
    pub keyring: Keyring,
}

/// What apt checks an archive's signatures against.
#[derive(Debug, PartialEq, Eq)]
pub enum Keyring {
    /// Debian's keyring on the host (debian-archive-keyring: the keys of
    /// Debian 11, 12 and 13).
    Debian,
    /// The keyring in a package of the archive's own, fetched by apt's
    /// downloader from a release pocket that never changes and checked
    /// against the package's SHA-256, so it is trusted because of this
    /// hash, not because of where it came from.
    Pinned {
        url: &'static str,
        sha256: &'static str,
        /// The keyring file inside the package.
        file: &'static str,
    },
}

pub const BACKPORTS: Archive = Archive {
    name: "bookworm-backports",
    dir: "backports",
    sources: &["http://deb.debian.org/debian bookworm-backports main"],
    keyring: Keyring::Debian,
};

/// Debian 11 is in long-term support: its kernels come from the
/// security archive.
pub const BULLSEYE: Archive = Archive {
    name: "Debian 11 (bullseye)",
    dir: "bullseye",
    sources: &[
        "http://deb.debian.org/debian bullseye main",
        "http://deb.debian.org/debian-security bullseye-security main",
    ],
    keyring: Keyring::Debian,
};

/// Ubuntu 22.04: its kernels come from -updates and -security.
pub const JAMMY: Archive = Archive {
    name: "Ubuntu 22.04 (jammy)",
    dir: "jammy",
    sources: &[
        "http://archive.ubuntu.com/ubuntu jammy main",
        "http://archive.ubuntu.com/ubuntu jammy-updates main",
        "http://archive.ubuntu.com/ubuntu jammy-security main",
    ],
    keyring: UBUNTU_KEYRING,
};

/// Ubuntu 20.04, for a kernel older than mvbridge supports.
pub const FOCAL: Archive = Archive {
    name: "Ubuntu 20.04 (focal)",
    dir: "focal",
    sources: &[
        "http://archive.ubuntu.com/ubuntu focal main",
        "http://archive.ubuntu.com/ubuntu focal-updates main",
        "http://archive.ubuntu.com/ubuntu focal-security main",
    ],
    keyring: UBUNTU_KEYRING,
};

/// ubuntu-keyring 2021.03.26 of jammy's release pocket; it holds the
/// archive's signing key of 2018, F6EC B376 2474 EDA9 D21B 7022 8719 20D1
/// 991B C93C (checked with `gpg --show-keys` when pinned), which signs
/// 20.04's and 22.04's archives.
const UBUNTU_KEYRING: Keyring = Keyring::Pinned {
    url: "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb",
    sha256: "0d0e7ed6b112f5d03eabf3c7eb01ebdacf9c57714b279e90495cfc58c8c4520f",
    file: "usr/share/keyrings/ubuntu-archive-keyring.gpg",
};

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How often the private package lists are refreshed: new kernels come
/// out every few weeks, and every run re-downloading the lists would cost
/// more than the run's own downloads when the cache is warm.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    suite: Suite,
    /// apt.conf of a private configuration.
    config: Option<PathBuf>,
}

/// A package file apt can download.
#[derive(Debug, PartialEq, Eq)]
pub struct Deb {
    pub file_name: String,
    pub size: u64,
}

impl Deb {
    /// The file name without `.deb`: names the unpacked cache entry.
    pub fn stem(&self) -> &str {
        self.file_name
            .strip_suffix(".deb")
            .unwrap_or(&self.file_name)
    }
}

impl Apt {
    pub fn new(suite: Suite, cache: &Cache) -> Result<Self> {
        let config = match suite {
            Suite::Host => None,
            Suite::Private(archive) => Some(private_config(archive, cache)?),
        };
        let apt = Self { suite, config };
        if let Suite::Private(archive) = suite {
            apt.refresh(archive, cache)?;
        }
        Ok(apt)
    }

    pub fn name(&self) -> &'static str {
        match self.suite {
            Suite::Host => "the host's apt",
            Suite::Private(archive) => archive.name,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        // apt hands downloads to its unprivileged _apt user, which cannot
        // write into root's home; as root, download as root (quietly).
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    /// The packages `package` depends on (its candidate version's).
    pub fn depends(&self, package: &str) -> Result<Vec<String>> {
        let out = output(self.command("apt-cache").args(["depends", package]))
            .with_context(|| format!("{} does not know {package}", self.name()))?;
        Ok(parse_depends(&out))
    }

    /// The files `apt-get download` would fetch for `packages`.
    pub fn locate(&self, packages: &[&str]) -> Result<Vec<Deb>> {
        let out = output(
            self.command("apt-get")
                .args(["download", "--print-uris"])
                .args(packages),
        )
        .with_context(|| format!("{} cannot find {}", self.name(), packages.join(" ")))?;
        parse_print_uris(&out)
    }

    /// `deb`, from the cache or downloaded into it.
    pub fn fetch(&self, cache: &Cache, deb: &Deb) -> Result<PathBuf> {
        let rel = format!("debs/{}", deb.file_name);
        cache.entry(&rel, |tmp| {
            let what = format!("downloading {} ({} MB)", deb.file_name, deb.size >> 20);
            step(&what, || {
                // apt-get download names the file itself: let it write
                // into an empty directory of its own.
                let dir = sibling(tmp, ".download");
                std::fs::create_dir(&dir)?;
                let fetched = self.download(deb, &dir);
                let moved = fetched.and_then(|file| {
                    std::fs::rename(&file, tmp)
                        .with_context(|| format!("apt-get download wrote no {}", file.display()))
                });
                remove(&dir)?;
                moved
            })
        })
    }

    fn download(&self, deb: &Deb, dir: &Path) -> Result<PathBuf> {
        let package = deb.file_name.split('_').next().unwrap_or_default();
        let status = self
            .command("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .status()
            .context("cannot start apt-get")?;
        if !status.success() {
            bail!(
                "apt-get download {package} failed ({status}); if the archive moved on since \
                 {} last read it, `apt-get update` refreshes its lists",
                self.name()
            );
        }
        Ok(dir.join(&deb.file_name))
    }

    /// Refreshes the private lists once they are a day old. Offline with
    /// old lists, the old lists do: the cached packages still serve.
    fn refresh(&self, archive: &Archive, cache: &Cache) -> Result<()> {
        let stamp = cache.dir(&format!("apt/{}", archive.dir))?.join("updated");
        let age = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_some_and(|a| a < LISTS_MAX_AGE) {
            return Ok(());
        }
        let updated = step(
            &format!("updating the package lists of {}", self.name()),
            || output(self.command("apt-get").args(["update", "-q"])),
        );
        match (updated, age) {
            (Ok(_), _) => Ok(std::fs::write(&stamp, "")?),
            (Err(e), Some(_)) => {
                eprintln!("xtask: vmtest: keeping the old package lists: {e:#}");
                Ok(())
            }
            (Err(e), None) => Err(e),
        }
    }
}

/// An apt.conf that makes apt read and write only under the cache: its
/// own sources, lists, package cache, an empty dpkg status, no pinning,
/// and none of the host's update hooks (PackageKit, appstream: they are
/// about the host's lists). apt reads it after the host's configuration,
/// so the host's proxy settings still apply.
fn private_config(archive: &Archive, cache: &Cache) -> Result<PathBuf> {
    let keyring = keyring(archive, cache)?;
    let dir = cache.dir(&format!("apt/{}", archive.dir))?;
    for sub in ["lists/partial", "cache/archives/partial", "parts"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let sources: String = archive
        .sources
        .iter()
        .map(|line| format!("deb [signed-by={}] {line}\n", keyring.display()))
        .collect();
    std::fs::write(dir.join("sources.list"), sources)?;
    std::fs::write(dir.join("status"), "")?;
    let at = |name: &str| dir.join(name).display().to_string();
    let mut conf = String::new();
    for (key, value) in [
        ("Dir::Etc::sourcelist", at("sources.list")),
        ("Dir::Etc::sourceparts", at("parts")),
        ("Dir::Etc::preferences", at("preferences")),
        ("Dir::Etc::preferencesparts", at("parts")),
        ("Dir::State::Lists", at("lists")),
        ("Dir::State::status", at("status")),
        ("Dir::Cache", at("cache")),
    ] {
        conf.push_str(&format!("{key} \"{value}\";\n"));
    }
    for hook in ["Pre-Invoke", "Post-Invoke", "Post-Invoke-Success"] {
        conf.push_str(&format!("#clear APT::Update::{hook};\n"));
    }
    let path = dir.join("apt.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// The keyring `archive` is checked against.
fn keyring(archive: &Archive, cache: &Cache) -> Result<PathBuf> {
    match archive.keyring {
        Keyring::Debian => {
            if !Path::new(DEBIAN_KEYRING).is_file() {
                bail!(
                    "{DEBIAN_KEYRING} is missing: {} cannot be verified \
                     (apt-get install debian-archive-keyring)",
                    archive.name
                );
            }
            Ok(PathBuf::from(DEBIAN_KEYRING))
        }
        Keyring::Pinned { url, sha256, file } => {
            let name = url.rsplit('/').next().unwrap_or(url);
            let unpacked = cache.entry(
                &format!("keyrings/{}", name.trim_end_matches(".deb")),
                |tmp| {
                    step(&format!("downloading {name} ({})", archive.name), || {
                        let deb = sibling(tmp, ".deb");
                        let fetched = crate::run(
                            Command::new("/usr/lib/apt/apt-helper")
                                .args(["-o", "APT::Sandbox::User=root", "download-file", url])
                                .arg(&deb)
                                .arg(format!("SHA256:{sha256}")),
                        )
                        .with_context(|| {
                            format!("{name} is not the pinned package (or unreachable)")
                        });
                        let unpacked = fetched.and_then(|()| unpack(&deb, tmp));
                        remove(&deb)?;
                        unpacked
                    })
                },
            )?;
            let path = unpacked.join(file);
            if !path.is_file() {
                bail!("{name} has no {file}");
            }
            Ok(path)
        }
    }
}

/// Unpacks a package's files into `dir` (created), as `dpkg -x` does:
/// no maintainer scripts, no dpkg database.
pub fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    crate::run(Command::new("dpkg").arg("-x").arg(deb).arg(dir))
}

/// `apt-cache depends` output: the names after `Depends:`.
fn parse_depends(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// `apt-get download --print-uris` output: `'URL' FILE SIZE HASH` lines.
fn parse_print_uris(out: &str) -> Result<Vec<Deb>> {
    out.lines()
        .filter(|l| l.starts_with('\''))
        .map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let (Some(file_name), Some(size)) = (fields.next(), fields.next()) else {
                bail!("cannot read apt-get's line {line:?}");
            };
            let size = size
                .parse()
                .with_context(|| format!("cannot read the size in apt-get's line {line:?}"))?;
            Ok(Deb {
                file_name: file_name.to_owned(),
                size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_lists_the_dependencies_only() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n\
                   \x20 Recommends: firmware\n  Depends: <virtual>\n";
        assert_eq!(
            parse_depends(out),
            ["linux-image-6.1.0-56-cloud-amd64", "<virtual>"]
        );
    }

    #[test]
    fn print_uris_gives_file_names_and_sizes() {
        let out = "'http://deb.debian.org/debian/pool/main/q/qemu/qemu-system-data_10.0.2%2bds_all.deb' \
                   qemu-system-data_1%3a10.0.2+ds-2+deb13u1~bpo12+1_all.deb 2113148 SHA256:2d83\n\
                   'http://deb.debian.org/debian-security/pool/updates/main/l/linux-signed-amd64/x.deb' \
                   linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb 26713492 SHA256:e7d0\n";
        let debs = parse_print_uris(out).unwrap();
        assert_eq!(
            debs,
            [
                Deb {
                    file_name: "qemu-system-data_1%3a10.0.2+ds-2+deb13u1~bpo12+1_all.deb".into(),
                    size: 2113148
                },
                Deb {
                    file_name: "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb".into(),
                    size: 26713492
                },
            ]
        );
        assert_eq!(
            debs[1].stem(),
            "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64"
        );
        assert!(parse_print_uris("'http://x' only-a-name\n").is_err());
        assert!(parse_print_uris("").unwrap().is_empty());
    }
}
