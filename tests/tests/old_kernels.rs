//! What old kernels do differently. The oldest kernel mvbridge supports
//! is Linux 5.10. On an older one (Ubuntu 20.04's 5.4 has no BPF ring
//! buffers) `run` stops with one error that says so, and `check` names
//! it, before anything changes; on a supported kernel neither says a word
//! about it. Before 5.11, BPF memory counts against RLIMIT_MEMLOCK.
//!
//! Which case this kernel is comes from outside mvbridge: `cargo xtask
//! vmtest` sets `MVB_KERNEL_TOO_OLD=1` for the kernels its table lists as
//! older than supported, and runs only the first test on them.

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{Lab, UPLINK, attach_mode};
use mvbridge_tests::state::HostState;
use mvbridge_tests::traffic::ping;

const REFUSAL: &str = "mvbridge needs Linux 5.10 or later";

#[test]
fn kernels_older_than_5_10_get_one_clear_error_and_nothing_changes() {
    let too_old = std::env::var_os("MVB_KERNEL_TOO_OLD").is_some();
    let lab = Lab::build(Vec::new()).unwrap();
    let config = format!(
        "uplink = \"{UPLINK}\"\nbpffs = \"{}\"\nattach = \"{}\"\n",
        lab.bpffs().display(),
        attach_mode()
    );
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let path = path.display().to_string();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();

    let check = daemon::mvbridge(&lab.host, &["check", "--config", &path]).unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    if !too_old {
        assert!(
            !said.contains(REFUSAL),
            "a supported kernel refused:\n{said}"
        );
        assert!(
            said.contains("with bpf() and BPF ring buffers"),
            "check says nothing of the kernel:\n{said}"
        );
        return;
    }
    assert!(!check.status.success(), "check passed:\n{said}");
    assert!(
        said.contains(REFUSAL),
        "check does not say {REFUSAL:?}:\n{said}"
    );

    let run = daemon::mvbridge(&lab.host, &["run", "--config", &path]).unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "run started:\n{stderr}");
    assert!(
        stderr.contains(REFUSAL),
        "run does not say {REFUSAL:?}:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "want one clear error:\n{stderr}"
    );
    let after = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    assert_eq!(after, before, "the host changed: {stderr}");
    println!("Linux {}: {}", release(), stderr.trim());
}

/// A shell's `mvbridge run`, not the unit (which lifts the limit
/// itself): Debian's default limit on locked memory is 8 MiB, Ubuntu
/// 20.04's 64 KiB. On Linux before 5.11 the maps of a daemon that left
/// its datapath pinned (`--keep`) still count against it, so it is the
/// second start that ran out (EPERM on Debian 11's 5.10). Both starts
/// must attach, and the VMs stay reachable; later kernels ignore the
/// limit, and there this holds anyway.
#[test]
fn a_small_locked_memory_limit_stops_neither_the_first_start_nor_the_next() {
    let lab = Lab::hosted().unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let a = lab.spec("a").addr;
    for start in ["first", "second"] {
        let mut daemon = with_memlock_limit(64 << 10, || {
            Daemon::start_with(&lab.host, &path, &["--keep"], &[])
        })
        .unwrap_or_else(|e| panic!("the {start} start under a 64 KiB limit: {e:#}"));
        assert!(ping(&lab.host, a), "host -> VM a after the {start} start");
        let status = daemon.stop_with(libc::SIGTERM).unwrap();
        assert!(status.success(), "{}", daemon.log());
    }
    let down = daemon::mvbridge(
        &lab.host,
        &["down", "--config", &path.display().to_string()],
    )
    .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

/// Runs `f` with this process's RLIMIT_MEMLOCK at `bytes` (the soft
/// limit, which is what a shell's `ulimit -l` shows and the kernel
/// checks), which the children it starts inherit; restored after. The
/// hard limit stays: without CAP_SYS_RESOURCE (some sandboxes' root) a
/// lowered hard limit could not be raised again.
fn with_memlock_limit<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved), 0);
        let low = libc::rlimit {
            rlim_cur: bytes.min(saved.rlim_max),
            rlim_max: saved.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &low), 0);
    }
    let out = f();
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &saved), 0) };
    out
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_owned()
}
