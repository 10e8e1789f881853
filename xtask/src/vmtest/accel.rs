//! KVM when it really boots a stock kernel, else TCG. `/dev/kvm` alone
//! proves little: some hosts' KVM only runs specially built guest kernels
//! (a stock one hangs, or qemu aborts on an MSR), and qemu's own
//! `-accel kvm -accel tcg` fallback does not notice, as KVM itself starts.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::qemu::Qemu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// How long a stock kernel may take to reach its root mount under KVM
/// (well under a second where KVM works).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Accel {
    pub fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// `VMTEST_ACCEL` if set, else what the probe finds; says which, and why.
    pub fn choose(qemu: &Qemu, vmlinuz: &Path) -> Result<Self> {
        if let Some(forced) = std::env::var_os("VMTEST_ACCEL") {
            let accel = match forced.to_str() {
                Some("kvm") => Accel::Kvm,
                Some("tcg") => Accel::Tcg,
                _ => bail!("VMTEST_ACCEL={forced:?}: it takes kvm or tcg"),
            };
            eprintln!("xtask: vmtest: accelerator {} (VMTEST_ACCEL)", accel.name());
            return Ok(accel);
        }
        let (accel, why) = match probe(qemu, vmlinuz)? {
            Ok(()) => (Accel::Kvm, "KVM boots a stock kernel".to_owned()),
            Err(why) => (Accel::Tcg, why),
        };
        eprintln!("xtask: vmtest: accelerator {} ({why})", accel.name());
        Ok(accel)
    }
}

/// Boots `vmlinuz` under KVM with no disk: a working KVM gets as far as
/// the kernel's panic for the missing root file system. `Err` says why
/// KVM will not do.
fn probe(qemu: &Qemu, vmlinuz: &Path) -> Result<Result<(), String>> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Ok(Err(format!("no usable /dev/kvm: {e}")));
    }
    let started = Instant::now();
    let mut child = qemu
        .command()
        .args(Accel::Kvm.args())
        .args(["-m", "256", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .args([
            "-append",
            "console=ttyS0 panic=-1 loglevel=4",
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu for the KVM probe")?;
    // Read as it comes: a full pipe would stall qemu short of the panic.
    let console = drain(child.stdout.take());
    let errors = drain(child.stderr.take());
    while child.try_wait()?.is_none() && started.elapsed() < PROBE_TIMEOUT {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The probe's own qemu, killed by its handle (a no-op once it exited).
    let _ = child.kill();
    let status = child.wait()?;
    let console = console.join().unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    if console.contains("VFS: Unable to mount root") {
        return Ok(Ok(()));
    }
    Ok(Err(
        match errors.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(error) => format!("KVM does not boot a stock kernel here: qemu says {error:?}"),
            None if started.elapsed() >= PROBE_TIMEOUT => format!(
                "KVM does not boot a stock kernel here: no sign of life in {} s",
                PROBE_TIMEOUT.as_secs()
            ),
            None => format!("KVM does not boot a stock kernel here: qemu exited ({status})"),
        },
    ))
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}
