//! `cargo xtask vmtest`: the integration tests as root inside a qemu VM,
//! on the Debian kernels mvbridge supports rather than the host's.
//! Downloads and images are cached across runs and checkouts (see
//! `cache`); each run makes only its payload disk.

mod accel;
mod apt;
mod artifacts;
mod cache;
mod image;
mod kernel;
pub mod package;
mod payload;
mod qemu;
mod rootfs;
mod vm;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::system::{self, Tool};

use self::accel::Accel;
use self::cache::Cache;
use self::kernel::Kernel;
use self::vm::{Outcome, Vm};

/// What vmtest runs on the host.
const TOOLS: &[Tool] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mmdebstrap", "mmdebstrap"),
    ("mke2fs", "e2fsprogs"),
    ("objcopy", "binutils"),
];

#[derive(clap::Args)]
pub struct Args {
    /// The kernel to boot, or all of them one after the other.
    #[arg(long, default_value = "all", value_parser = clap::builder::PossibleValuesParser::new(kernel::names()))]
    kernel: String,
    /// Only this integration test (a file name in tests/tests/ without
    /// `.rs`); repeatable.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Stop a kernel's VM after this long. The whole suite takes about
    /// 15 min under TCG on two idle cores, 35 on busy ones.
    #[arg(long, default_value_t = 90)]
    timeout_minutes: u64,
    /// Only tests whose name contains this, as `cargo test FILTER`.
    filter: Option<String>,
}

/// One kernel's run, for the summary.
struct Report {
    series: &'static str,
    /// Only mvbridge's refusal was tested.
    too_old: bool,
    /// The kernel and the accelerator, once known.
    kernel: Option<String>,
    accel: Option<Accel>,
    wall: Duration,
    result: Result<Outcome>,
}

/// What the kernels' runs share.
struct Session {
    cache: Cache,
    /// target/vmtest: the payload disk, and each kernel's logs.
    dir: PathBuf,
    payload: PathBuf,
    timeout: Duration,
    /// Probed with the first kernel, then kept.
    accel: Option<Accel>,
}

pub fn run(args: &Args) -> Result<()> {
    let kernels = kernel::select(&args.kernel)?;
    system::ensure(TOOLS, "cargo xtask vmtest")?;
    crate::build(false)?;
    // A kernel too old for mvbridge runs the test of its refusal only:
    // the payload must have it.
    let mut tests = args.tests.clone();
    if !tests.is_empty()
        && kernels.iter().any(|k| k.too_old)
        && !tests.iter().any(|t| t == kernel::TOO_OLD_TEST)
    {
        tests.push(kernel::TOO_OLD_TEST.to_owned());
    }
    let artifacts = artifacts::collect(&tests)?;
    let dir = crate::workspace().join("target/vmtest");
    let test_args = payload::TestArgs {
        filter: args.filter.as_deref(),
        color: std::io::stdout().is_terminal(),
    };
    let mut session = Session {
        cache: Cache::open()?,
        payload: payload::build(&artifacts, &test_args, &dir)?,
        dir,
        timeout: Duration::from_secs(args.timeout_minutes * 60),
        accel: None,
    };
    let reports: Vec<Report> = kernels.into_iter().map(|k| session.test(k)).collect();

    eprintln!("\nvmtest summary:");
    let kernels: Vec<String> = reports
        .iter()
        .map(|r| r.kernel.clone().unwrap_or_else(|| "-".into()))
        .collect();
    let width = kernels.iter().map(String::len).max().unwrap_or(0);
    let mut failed = Vec::new();
    for (r, kernel) in reports.iter().zip(&kernels) {
        let result = match &r.result {
            Ok(Outcome::Passed) if r.too_old => {
                "passed: refused with one clear error, as older than supported".to_owned()
            }
            Ok(outcome) => outcome.to_string(),
            Err(e) => format!("could not run: {e:#}"),
        };
        eprintln!(
            "  {:<5} {kernel:<width$}  {:<3}  {:>6}  {result}",
            r.series,
            r.accel.map_or("-", Accel::name),
            minutes(r.wall),
        );
        if !matches!(r.result, Ok(Outcome::Passed)) {
            failed.push(r.series);
        }
    }
    if !failed.is_empty() {
        bail!("vmtest failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

impl Session {
    fn test(&mut self, kernel: &'static Kernel) -> Report {
        let mut report = Report {
            series: kernel.series,
            too_old: kernel.too_old,
            kernel: None,
            accel: None,
            wall: Duration::ZERO,
            result: Ok(Outcome::Passed),
        };
        report.result = self.boot(kernel, &mut report);
        // The kernel's last words, when it had any.
        show_console_tail(&report.result, &self.dir.join(kernel.series));
        report
    }

    /// Fetches what `kernel` needs and runs the tests on it, noting in
    /// `report` how far it got.
    fn boot(&mut self, kernel: &Kernel, report: &mut Report) -> Result<Outcome> {
        let unpacked = kernel::fetch(kernel, &self.cache)
            .with_context(|| format!("getting kernel {}", kernel.series))?;
        report.kernel = Some(format!(
            "{} {} ({})",
            kernel.distribution,
            unpacked.release,
            unpacked.version()
        ));
        let accel = accel_for(&mut self.accel, &unpacked)?;
        report.accel = Some(accel);
        let qemu = qemu::for_kernel(kernel, accel, &self.cache)?;
        let root = rootfs::image(&self.cache, &unpacked)?;
        eprintln!(
            "xtask: vmtest: booting {} ({}, qemu {}), for up to {} min",
            unpacked.release,
            accel.name(),
            qemu.version_string(),
            self.timeout.as_secs() / 60
        );
        let started = Instant::now();
        let outcome = Vm {
            qemu: &qemu,
            accel,
            vmlinuz: &unpacked.vmlinuz,
            root: &root,
            payload: &self.payload,
            logs: &self.dir.join(kernel.series),
            timeout: self.timeout,
            init: vm::Init::Script,
            disk: kernel.disk,
            cmdline: if kernel.too_old {
                payload::TOO_OLD_ARG
            } else {
                ""
            },
        }
        .run();
        report.wall = started.elapsed();
        eprintln!(
            "xtask: vmtest: kernel {} done in {}",
            unpacked.release,
            minutes(report.wall)
        );
        outcome
    }
}

/// The accelerator: probed with the first kernel booted, then kept.
fn accel_for(accel: &mut Option<Accel>, kernel: &kernel::Unpacked) -> Result<Accel> {
    Ok(match *accel {
        Some(accel) => accel,
        None => *accel.insert(Accel::choose(&qemu::Qemu::system()?, &kernel.vmlinuz)?),
    })
}

/// Shows the end of the kernel console in `logs` after a crash or a
/// timeout, when there is one.
fn show_console_tail(outcome: &Result<Outcome>, logs: &std::path::Path) {
    if let Ok(Outcome::Crashed(_) | Outcome::TimedOut(_)) = outcome {
        let (path, tail) = vm::console_tail(logs, 30);
        if !tail.is_empty() {
            eprintln!(
                "xtask: vmtest: the end of the kernel console ({}):\n{tail}",
                path.display()
            );
        }
    }
}

/// Runs `f`, saying what it does and how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("xtask: vmtest: {what}");
    let started = Instant::now();
    let result = f();
    if result.is_ok() {
        eprintln!(
            "xtask: vmtest: {what}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    result
}

/// A command's stdout; its stderr is the error when it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", crate::display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            crate::display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `3m07s`.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}
