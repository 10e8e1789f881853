//! The pin directory on bpffs: where maps and links outlive the daemon.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mvbridge_common::abi::{self, MapSpec};

use crate::datapath::hooks::HookKey;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const STANDARD_MOUNT: &str = "/sys/fs/bpf";
const KERNEL_PRELOADED: [&str; 2] = ["maps.debug", "progs.debug"];
const LAYOUT_DIR_PREFIX: &str = "layout-";

/// The pin paths under the configured directory: the maps of each layout
/// (see `mvbridge_common::abi::LAYOUT`) and the hooks.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub dir: PathBuf,
}

impl PinDir {
    pub fn new(dir: &Path) -> PinDir {
        PinDir {
            dir: dir.to_owned(),
        }
    }

    /// Where layout `layout` pins its maps: layout 1 at the root, later
    /// ones in a directory of their own, so two layouts can coexist while
    /// one is migrated into the other.
    pub fn maps_of(&self, layout: u32) -> PathBuf {
        if layout == 1 {
            self.dir.clone()
        } else {
            self.dir.join(format!("{LAYOUT_DIR_PREFIX}{layout}"))
        }
    }

    /// This binary's maps.
    pub fn maps(&self) -> PathBuf {
        self.maps_of(abi::LAYOUT)
    }

    pub fn map(&self, spec: &MapSpec) -> PathBuf {
        self.maps().join(spec.name)
    }

    /// The layouts whose maps are pinned here, oldest first.
    pub fn layouts(&self) -> Vec<u32> {
        let mut found = Vec::new();
        if self.dir.join(abi::LOCAL4.name).exists() {
            found.push(1);
        }
        for p in self.entries().unwrap_or_default() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(n) = name
                .strip_prefix(LAYOUT_DIR_PREFIX)
                .and_then(|v| v.parse().ok())
            {
                found.push(n);
            }
        }
        found.sort();
        found
    }

    pub fn hook(&self, key: &HookKey) -> PathBuf {
        self.dir.join(key.pin_name())
    }

    /// The hook pins present, with their keys.
    pub fn hooks(&self) -> Vec<(HookKey, PathBuf)> {
        self.entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let key = HookKey::from_pin_name(p.file_name()?.to_str()?)?;
                Some((key, p))
            })
            .collect()
    }

    /// Every pin and layout directory at the top of the directory (empty
    /// if it does not exist). The iterators the kernel preloads at the
    /// root of each bpffs mount are not ours and are skipped.
    pub fn entries(&self) -> io::Result<Vec<PathBuf>> {
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                let mut out = Vec::new();
                for e in rd {
                    let path = e?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if !KERNEL_PRELOADED.contains(&name) {
                        out.push(path);
                    }
                }
                Ok(out)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: `c` is a valid C string; `st` is written by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `ensure` had to do, so a failed set-up can undo it.
#[derive(Debug, Default)]
pub struct Prepared {
    pub created_dirs: Vec<PathBuf>,
    pub mounted: Option<PathBuf>,
}

/// Makes `dir` a directory on bpffs, mounting bpffs where needed: at the
/// standard place when `dir` lives under it (as systemd would), otherwise on
/// `dir` itself.
pub fn ensure(dir: &Path) -> io::Result<Prepared> {
    let mut prepared = Prepared::default();
    if dir.exists() && is_bpffs(dir)? {
        return Ok(prepared);
    }
    let standard = Path::new(STANDARD_MOUNT);
    if dir.starts_with(standard) && standard.is_dir() && !is_bpffs(standard)? {
        mount_bpffs(standard)?;
        prepared.mounted = Some(standard.to_owned());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_owned());
        p = p
            .parent()
            .ok_or_else(|| io::Error::other("no existing parent directory"))?;
    }
    for d in missing.iter().rev() {
        std::fs::create_dir(d)?;
        prepared.created_dirs.push(d.clone());
    }
    if !is_bpffs(dir)? {
        mount_bpffs(dir)?;
        prepared.mounted = Some(dir.to_owned());
    }
    Ok(prepared)
}

/// Undoes `ensure` (only what it did).
pub fn undo(prepared: &Prepared) {
    if let Some(at) = &prepared.mounted
        && let Ok(c) = CString::new(at.as_os_str().as_bytes())
    {
        // SAFETY: valid C string; failure only leaves the mount in place.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    for d in prepared.created_dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}
