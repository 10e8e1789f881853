//! The download and build cache, shared by every checkout on the machine
//! (`$XDG_CACHE_HOME/mvbridge/vmtest`, else `~/.cache/mvbridge/vmtest`).
//! Two checkouts may fill it at the same time: each entry is built under
//! a temporary name and renamed into place, so a reader sees a complete
//! entry or none. Entries nobody used for a month are removed: each
//! change to the package list, the init or the kernel makes new ones, of
//! hundreds of MB.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

pub struct Cache {
    root: PathBuf,
}

const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The cache's directory that holds no entries: apt's private state,
/// refreshed by its own rule.
const NOT_ENTRIES: &str = "apt";

impl Cache {
    pub fn open() -> Result<Self> {
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache"))
                .context("neither XDG_CACHE_HOME nor HOME is set: no place for the vmtest cache")?,
        };
        let root = base.join("mvbridge/vmtest");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the vmtest cache {}", root.display()))?;
        let cache = Self { root };
        cache.prune();
        Ok(cache)
    }

    /// Removes the entries (and what killed runs left) unused for
    /// [`UNUSED_FOR`]. Housekeeping: a failure is only reported.
    fn prune(&self) {
        let unused = |path: &Path| {
            std::fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > UNUSED_FOR))
        };
        let kinds = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten();
        for kind in kinds.filter(|k| k.file_name() != NOT_ENTRIES && k.path().is_dir()) {
            for entry in std::fs::read_dir(kind.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if !unused(&path) {
                    continue;
                }
                eprintln!(
                    "xtask: vmtest: removing {} (unused for {} days)",
                    path.display(),
                    UNUSED_FOR.as_secs() / 86400
                );
                if let Err(e) = remove(&path) {
                    eprintln!("xtask: vmtest: cannot remove it: {e:#}");
                }
            }
        }
    }

    /// `rel` under the cache, created (with its parents) if missing.
    pub fn dir(&self, rel: &str) -> Result<PathBuf> {
        let dir = self.root.join(rel);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The entry `rel` (a file or a directory), made by `make` unless it
    /// is already there. `make` gets the temporary path to fill.
    pub fn entry(&self, rel: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let path = self.root.join(rel);
        if path.exists() {
            touch(&path);
            return Ok(path);
        }
        let parent = path.parent().context("a cache entry has a parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let name = path.file_name().context("a cache entry has a name")?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        remove(&tmp)?;
        if let Err(e) = make(&tmp) {
            let _ = remove(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            // Another run finished the same entry first: keep its copy.
            remove(&tmp)?;
            if !path.exists() {
                return Err(e).with_context(|| format!("moving {} into place", path.display()));
            }
        }
        touch(&path);
        Ok(path)
    }
}

/// Marks an entry used now: pruning goes by its modification time (which
/// for an unpacked package starts out as the package's build date).
fn touch(path: &Path) {
    let _ = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
}

/// Removes a file or a directory tree; a missing one is fine. A tree
/// with file systems mounted in it (what a killed mmdebstrap leaves, /dev
/// included) is left alone: removing it would reach into them.
pub fn remove(path: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if let Some(mount) = mount_under(path)? {
                bail!(
                    "{} has {mount} mounted in it: unmount it (umount -R), then remove the tree",
                    path.display()
                );
            }
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.with_context(|| format!("removing {}", path.display()))
}

/// A mount point inside `dir`, if there is one.
fn mount_under(dir: &Path) -> Result<Option<String>> {
    let dir = dir.canonicalize()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .find(|m| Path::new(m).starts_with(&dir)))
}

/// A mountinfo path: space, tab, newline and backslash come as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `path` with `suffix` appended to its name: scratch space next to a
/// temporary entry, as unique as the entry's own name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A short, stable digest of `parts` for naming cache entries (FNV-1a:
/// std's hasher may change between Rust releases, this may not).
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // The length first, so ["ab", "c"] and ["a", "bc"] differ.
        for byte in (part.len() as u64).to_le_bytes().iter().chain(*part) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_stable_and_sees_part_boundaries() {
        assert_eq!(digest(&[b"iproute2"]), digest(&[b"iproute2"]));
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[]), "cbf29ce484222325");
        assert_eq!(digest(&[b"x"]).len(), 16);
    }

    #[test]
    fn entries_unused_for_a_month_are_pruned() {
        let root = std::env::temp_dir().join(format!("xtask-prune-test-{}", std::process::id()));
        let cache = Cache { root: root.clone() };
        let old = cache
            .entry("kernels/old", |tmp| Ok(std::fs::create_dir(tmp)?))
            .unwrap();
        // Made with an old date, as `dpkg -x` does: new all the same.
        let new = cache
            .entry("kernels/new", |tmp| {
                std::fs::create_dir(tmp)?;
                let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30);
                Ok(std::fs::File::open(tmp)?.set_modified(long_ago)?)
            })
            .unwrap();
        let apt = cache.dir("apt/lists").unwrap();
        let month_ago = SystemTime::now() - UNUSED_FOR - Duration::from_secs(60);
        for dir in [&old, &apt] {
            std::fs::File::open(dir)
                .unwrap()
                .set_modified(month_ago)
                .unwrap();
        }
        cache.prune();
        assert!(!old.exists());
        assert!(new.exists());
        assert!(apt.exists());
        remove(&root).unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/odd\x"), r"/odd\x");
    }

    #[test]
    fn mount_points_inside_a_tree_are_found() {
        // /proc is always a mount point under /.
        assert!(mount_under(Path::new("/")).unwrap().is_some());
        let dir = std::env::temp_dir().join(format!("xtask-mount-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(mount_under(&dir).unwrap(), None);
        remove(&dir).unwrap();
    }

    #[test]
    fn an_entry_is_made_once_and_a_failed_one_leaves_nothing() {
        let root = std::env::temp_dir().join(format!("xtask-cache-test-{}", std::process::id()));
        let cache = Cache { root: root.clone() };
        let made = cache
            .entry("a/file", |tmp| Ok(std::fs::write(tmp, "1")?))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&made).unwrap(), "1");
        let again = cache.entry("a/file", |_| panic!("made twice")).unwrap();
        assert_eq!(again, made);
        let failed = cache.entry("a/dir", |tmp| {
            std::fs::create_dir(tmp)?;
            anyhow::bail!("no")
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(root.join("a")).unwrap().count(), 1);
        remove(&root).unwrap();
    }
}
