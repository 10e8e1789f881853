//! `cargo xtask`: the project's commands. Bootstraps the eBPF toolchain,
//! builds, runs the tests (as root, in network namespaces) and the demo.

mod deb;
mod system;
mod toolchain;
mod vmtest;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (if missing) and build everything.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Unit tests, then the integration tests in network namespaces (root).
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Build the hosted-server lab, show it broken, start mvbridge, show it fixed.
    Demo,
    /// rustfmt and clippy (-D warnings) on the host crates.
    Lint,
    /// Every way to connect host and VMs, measured side by side, and the
    /// daemon at scale (about 15 minutes); writes target/bench/ and
    /// BENCHMARKS.md.
    Bench {
        /// One short trial of everything (what the test suite runs).
        #[arg(long)]
        smoke: bool,
    },
    /// The soak test for longer than the test suite's 20 s.
    Soak {
        #[arg(long, default_value_t = 5)]
        minutes: u64,
    },
    /// Fuzz the config parser and the steering decision with cargo-fuzz
    /// (libFuzzer), each for the given time.
    Fuzz {
        /// `config`, `decide`, or both when omitted.
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// The integration tests as root in a qemu VM, on Debian's kernels
    /// rather than the host's (downloads and images cached in
    /// ~/.cache/mvbridge/vmtest).
    Vmtest(vmtest::Args),
    /// The Debian package (cargo-deb, from the release build), checked
    /// with lintian; in target/debian/.
    Deb,
    /// The Debian package and its systemd unit under a real systemd as
    /// PID 1: install, start, reload, restart, upgrade, purge, in a
    /// Debian 12 VM (kernel 6.1, systemd 252) or a Debian 13 one (6.12,
    /// systemd 257) (qemu; cached with vmtest's downloads).
    VmtestPackage(vmtest::package::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Build { release } => build(release),
        Cmd::Test { filter } => test(filter.as_deref()),
        Cmd::Demo => demo(),
        Cmd::Lint => lint(),
        Cmd::Fuzz { target, seconds } => fuzz(target.as_deref(), seconds),
        Cmd::Soak { minutes } => soak(minutes),
        Cmd::Bench { smoke } => bench(smoke),
        Cmd::Vmtest(args) => vmtest::run(&args),
        Cmd::Deb => deb::deb(),
        Cmd::VmtestPackage(args) => vmtest::package::run(&args),
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs a command in the workspace, echoing it, and fails on non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", display(cmd));
    let status = cmd
        .current_dir(workspace())
        .status()
        .with_context(|| format!("cannot start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build(release: bool) -> Result<()> {
    toolchain::ensure()?;
    let mut cmd = cargo();
    // Everything but the eBPF crate, which build.rs compiles for the BPF
    // target: the default members and the integration tests (not a default
    // member, so a plain `cargo test` runs only what needs no root).
    cmd.args([
        "build",
        "--workspace",
        "--exclude",
        "mvbridge-ebpf",
        "--bins",
        "--tests",
    ]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces, BPF): run `sudo -E cargo xtask ...`");
    }
    Ok(())
}

fn ensure_lab_tools() -> Result<()> {
    system::ensure(system::LAB, "the namespace lab")
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(tool).is_file())
    })
}

fn lint() -> Result<()> {
    toolchain::ensure()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "mvbridge-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test(filter: Option<&str>) -> Result<()> {
    require_root("the test suite")?;
    ensure_lab_tools()?;
    system::ensure(system::LIBVIRT, "the libvirt tests")?;
    build(false)?;
    if filter.is_none() {
        lint()?;
    }
    let mut unit = cargo();
    unit.args([
        "test",
        "-p",
        "mvbridge-common",
        "-p",
        "mvbridge",
        "-p",
        "xtask",
    ]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    run(&mut unit)?;
    // Integration tests share kernel state (ifindexes, /dev/tapN, bpffs):
    // one at a time, as aya's own suite does. Once with the attach mode
    // the kernel offers, and on a kernel with TCX once more with classic
    // TC filters, the way kernels without TCX run.
    let mut modes = vec![("auto", Vec::new())];
    if kernel_has_tcx() {
        modes.push(("tc", integration_tests(TC_PASS_LEAVES_OUT)?));
    }
    let mut failed = Vec::new();
    for (mode, only) in modes {
        eprintln!("xtask: integration tests with attach = {mode}");
        let mut integration = cargo();
        integration.env("MVB_ATTACH", mode).args([
            "test",
            "-p",
            "mvbridge-tests",
            "--no-fail-fast",
        ]);
        for t in &only {
            integration.args(["--test", t]);
        }
        integration.args(["--", "--test-threads=1"]);
        if let Some(f) = filter {
            integration.arg(f);
        }
        if let Err(e) = run(&mut integration) {
            failed.push(format!("attach = {mode}: {e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("integration tests failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Integration tests the classic-TC pass leaves out: the benchmark's
/// smoke run measures, it does not need a second go; the libvirt tests
/// drive the same hooks through libvirt's events (slow TCG guests), and
/// the hooks' modes are covered by the rest.
const TC_PASS_LEAVES_OUT: &[&str] = &["bench_smoke", "libvirt"];

/// The integration test targets (tests/tests/*.rs) but `leave_out`.
fn integration_tests(leave_out: &[&str]) -> Result<Vec<String>> {
    let dir = workspace().join("tests/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && !leave_out.contains(&stem)
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The running kernel has TCX (its attach code is in the symbol table).
fn kernel_has_tcx() -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|s| s.contains(" tcx_prog_attach"))
}

fn demo() -> Result<()> {
    require_root("the demo")?;
    ensure_lab_tools()?;
    build(false)?;
    let bin = workspace().join("target/debug/mvb-demo");
    run(&mut Command::new(bin))
}

fn fuzz(target: Option<&str>, seconds: u32) -> Result<()> {
    toolchain::ensure()?;
    if !on_path("cargo-fuzz") && !toolchain::cargo_bin("cargo-fuzz").is_file() {
        eprintln!("xtask: installing cargo-fuzz (once)");
        run(cargo().args(["install", "cargo-fuzz"]))?;
    }
    let targets: Vec<&str> = match target {
        Some(t) => vec![t],
        None => vec!["config", "decide"],
    };
    for t in targets {
        // The fuzzed code needs no eBPF object: skip building it under the
        // sanitizer flags.
        run(Command::new("cargo")
            .env("AYA_BUILD_SKIP", "1")
            .args(["+nightly", "fuzz", "run"])
            .arg(t)
            .args(["--", &format!("-max_total_time={seconds}")]))?;
    }
    Ok(())
}

fn soak(minutes: u64) -> Result<()> {
    require_root("the soak test")?;
    ensure_lab_tools()?;
    build(false)?;
    run(cargo()
        .env("MVB_SOAK_SECONDS", (minutes * 60).to_string())
        .args([
            "test",
            "-p",
            "mvbridge-tests",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ]))
}

fn bench(smoke: bool) -> Result<()> {
    require_root("the benchmark")?;
    ensure_lab_tools()?;
    build(true)?;
    let mut cmd = Command::new(workspace().join("target/release/mvb-bench"));
    cmd.args(["--out", "target/bench"]);
    if smoke {
        cmd.arg("--smoke");
    } else {
        cmd.args(["--markdown", "BENCHMARKS.md"]);
    }
    run(&mut cmd)
}
