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
    lift_memlock_limit();
    Ok(())
}

/// Linux before 5.11 charges BPF maps and programs to RLIMIT_MEMLOCK of
/// the user that made them, for as long as they live: the pinned maps of
/// an earlier run count against the next run's limit (on Debian 11's 5.10
/// the second start of a shell's `mvbridge run`, with its 8 MiB, failed
/// with EPERM). Later kernels charge the memory cgroup and ignore the
/// limit. So lift it, as libbpf does: to unlimited with CAP_SYS_RESOURCE
/// (root has it, but a container may not), else to the hard limit. The
/// unit sets `LimitMEMLOCK=infinity` too.
fn lift_memlock_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit pointers, used by the calls only.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
            return;
        }
        let refused = std::io::Error::last_os_error();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
        tracing::debug!("RLIMIT_MEMLOCK kept at its hard limit: {refused}");
    }
}

/// The limit on locked memory, when there is one.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The kernel can run the datapath: the bpf() syscall, and the map kinds
/// the programs use. The newest of them, the ring buffer, came with Linux
/// 5.8; mvbridge is tested from Linux 6.1 (Debian 12) up and supports
/// 5.10 and later. Attaching works either way (see `hooks::AttachMode`):
/// it is probed, not read off the version.
pub fn kernel() -> Result<()> {
    bpf_syscall()?;
    if !aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        bail!(
            "Linux {} lacks BPF ring buffers (Linux 5.8); mvbridge needs Linux 5.10 or later",
            release.trim()
        );
    }
    Ok(())
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
            Some(libc::EPERM) => match memlock_limit() {
                // Kernels before 5.11 say EPERM when the limit is used up.
                Some(limit) => bail!(
                    "the kernel refused BPF (EPERM) with locked memory limited to {} KiB: \
                     on Linux before 5.11 BPF maps count against it; raise it \
                     (ulimit -l unlimited, or LimitMEMLOCK=infinity in a unit)",
                    limit / 1024
                ),
                None => bail!(
                    "the kernel refused BPF (EPERM): run as root, outside a container that filters bpf()"
                ),
            },
            _ => bail!("the kernel refused BPF: {err}"),
        }
    }
    // SAFETY: `fd` is a descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}
