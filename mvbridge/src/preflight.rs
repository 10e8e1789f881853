//! Checks that the process and the kernel can run the datapath at all,
//! made before anything is changed.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

pub fn privileges(action: &str) -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    if !has(CAP_NET_ADMIN) || !bpf {
        bail!(
            "mvbridge {action} must run as root (it needs CAP_NET_ADMIN and CAP_BPF to manage links and BPF programs); try sudo"
        );
    }
    Ok(())
}

/// TCX (fd-based TC links that can be pinned) arrived in Linux 6.6.
pub fn kernel() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if (major, minor) < (6, 6) {
        bail!(
            "Linux {} is too old: mvbridge attaches its programs as TCX links, which need Linux 6.6 or later",
            release.trim()
        );
    }
    bpf_syscall()
}

/// Creates (and closes) a one-slot array map: the cheapest proof that the
/// bpf() syscall exists and that we may use it.
fn bpf_syscall() -> Result<()> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for
    // BPF_MAP_CREATE and lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) => bail!(
                "this kernel has no BPF support (bpf() returned ENOSYS); mvbridge needs CONFIG_BPF_SYSCALL"
            ),
            Some(libc::EPERM) => bail!(
                "the kernel refused BPF (EPERM): run as root, outside a container that filters bpf()"
            ),
            _ => bail!("the kernel refused BPF: {err}"),
        }
    }
    // SAFETY: `fd` is a descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}
