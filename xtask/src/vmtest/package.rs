//! `cargo xtask vmtest-package`: the Debian package and its unit under a
//! real systemd as PID 1, in a Debian 12 VM booted with Debian 12's
//! kernel (6.1: classic TC, systemd 252), or in a Debian 13 VM with its
//! 6.12 (TCX, systemd 257: reloads with systemd 253's handshake).
//!
//! A command of its own rather than a `vmtest` option: what it boots and
//! runs has little in common with vmtest's run of the whole suite. It
//! needs the release package, twice (this tree's, and the same files
//! repacked as the next Debian revision, for the upgrade), one test
//! binary instead of the suite with its sources, a root image that boots
//! systemd (with man-db: `systemd-analyze verify` looks up the unit's man
//! page) instead of init.sh, and a stricter verdict: the binary's tests
//! are `#[ignore]`d everywhere else, so here they must all have run.
//! What it shares with vmtest is the machinery: the kernel download, the
//! cache, the accelerator probe, the qemu choice, disk images, and the
//! VM run with its marker line, console watchdog and timeouts.
//!
//! In the VM, systemd starts `vmtest-package.service` (package-run.service
//! in this directory) after multi-user.target; it runs the payload's
//! run.sh, which runs tests/tests/package.rs as root in the root network
//! namespace (the lab's host is the VM's own), writes the marker to ttyS1
//! and powers off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, deb, system, toolchain, workspace};

use super::artifacts::{self, Executable};
use super::cache::Cache;
use super::payload::{self, MOUNT, quote};
use super::rootfs::{self, File};
use super::vm::{Init, Outcome, Vm};
use super::{kernel, minutes, output, qemu, step};

#[derive(clap::Args)]
pub struct Args {
    /// The Debian release the VM runs.
    #[arg(long, default_value = "12", value_parser = clap::builder::PossibleValuesParser::new(releases()))]
    release: String,
    /// The kernel to boot (by default the release's own).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(series()))]
    kernel: Option<String>,
    /// Stop the VM after this long. The tests take about 10 min under
    /// TCG on two idle cores.
    #[arg(long, default_value_t = 40)]
    timeout_minutes: u64,
    /// Only tests whose name contains this, as `cargo test FILTER`.
    filter: Option<String>,
}

/// The test binary (tests/tests/package.rs) and the one it drives.
const TEST: &str = "package";
const GUEST: &str = "mvb-guest";

/// The revision the upgrade test's package gets: after `-1`, before any
/// real `-2`, and plainly a test build.
const NEXT_REVISION: &str = "2~vmtest";

/// Where the runner lives in the image, and the marker file that tells the
/// tests they are in this VM (they refuse to run anywhere else: they
/// install and purge packages and rebuild the root network namespace).
const RUNNER: &str = "/usr/local/sbin/vmtest-package-run";
const UNIT: &str = "/etc/systemd/system/vmtest-package.service";
pub const MARKER_FILE: &str = "/etc/mvbridge-package-vm";

/// Timers of the base system that would run apt, dpkg or mandb in the
/// middle of the tests (apt's are `Persistent=`: they fire at once on a
/// first boot) and hold the dpkg lock or the CPU.
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];

fn series() -> Vec<&'static str> {
    kernel::KERNELS.iter().map(|k| k.series).collect()
}

fn releases() -> Vec<&'static str> {
    rootfs::RELEASES.iter().map(|r| r.version).collect()
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let release = *rootfs::RELEASES
        .iter()
        .find(|r| r.version == args.release)
        .context("no such release")?;
    let [kernel] = kernel::select(args.kernel.as_deref().unwrap_or(release.kernel))?[..] else {
        bail!("one kernel at a time");
    };
    system::ensure(super::TOOLS, "cargo xtask vmtest-package")?;
    let dir = workspace().join("target/vmtest-package");
    std::fs::create_dir_all(&dir)?;

    let debs = step("building the package and its next revision", || {
        let deb = deb::build()?;
        let next = deb::repack_as_revision(
            &deb,
            NEXT_REVISION,
            "The same build as the previous revision: cargo xtask vmtest-package \
             upgrades to it.",
            &dir.join("debs"),
        )?;
        Ok([deb, next])
    })?;
    let (test, guest) = step("building the package tests", test_binaries)?;

    let cache = Cache::open()?;
    let unpacked = kernel::fetch(kernel, &cache)
        .with_context(|| format!("getting kernel {}", kernel.series))?;
    let (root, base) = rootfs::systemd_image(&cache, release, &unpacked, &image_files())?;
    check_depends(&debs[0], &base)?;
    let disk = payload::disk(&dir, |stage| {
        fill_payload(stage, &test, &guest, &debs, args.filter.as_deref())
    })?;
    let prepared = started.elapsed();

    let accel = super::accel_for(&mut None, &unpacked)?;
    let qemu = qemu::for_kernel(kernel, accel, &cache)?;
    let logs = dir.join(format!("debian{}-{}", release.version, kernel.series));
    let timeout = Duration::from_secs(args.timeout_minutes * 60);
    eprintln!(
        "xtask: vmtest-package: booting Debian {} on {} with systemd ({}, qemu {}), for up to {} min",
        release.version,
        unpacked.release,
        accel.name(),
        qemu.version_string(),
        timeout.as_secs() / 60
    );
    let booted = Instant::now();
    let outcome = Vm {
        qemu: &qemu,
        accel,
        vmlinuz: &unpacked.vmlinuz,
        root: &root,
        payload: &disk,
        logs: &logs,
        timeout,
        init: Init::Systemd,
        disk: kernel.disk,
        cmdline: "",
    }
    .run();
    super::show_console_tail(&outcome, &logs);
    let in_vm = booted.elapsed();
    // The marker says the binary exited 0; that it ran every test (none
    // skipped) the binary's own summary says.
    let verdict = outcome.and_then(|o| match o {
        Outcome::Passed => {
            let out = std::fs::read_to_string(logs.join("output.log"))?;
            tests_ran(&out, args.filter.is_some())
                .map(|n| format!("passed ({n} tests)"))
                .map_err(|why| anyhow::anyhow!("FAILED: {why}"))
        }
        other => Err(anyhow::anyhow!("{other}")),
    });
    eprintln!(
        "\nvmtest-package summary:\n  Debian {} {} ({})  {}  prepared in {}, VM {}, total {}",
        release.version,
        unpacked.release,
        accel.name(),
        match &verdict {
            Ok(v) => v.clone(),
            Err(e) => format!("{e:#}"),
        },
        minutes(prepared),
        minutes(in_vm),
        minutes(started.elapsed()),
    );
    verdict.map(|_| ())
}

/// The package tests' binary and the guest emulator they start (debug
/// builds, as the suite's): the daemon under test is the package's.
fn test_binaries() -> Result<(Executable, Executable)> {
    toolchain::ensure()?;
    let mut found = artifacts::build(cargo().args([
        "build",
        "-p",
        "mvbridge-tests",
        "--test",
        TEST,
        "--bin",
        GUEST,
    ]))?;
    let take = |list: &mut Vec<Executable>, name: &str| {
        let at = list
            .iter()
            .position(|e| e.name == name)
            .with_context(|| format!("cargo built no {name}"))?;
        Ok::<_, anyhow::Error>(list.remove(at))
    };
    Ok((take(&mut found.tests, TEST)?, take(&mut found.bins, GUEST)?))
}

/// What the systemd image has on top of its base tree: the runner and its
/// unit (enabled), the marker file, a machine id (an empty one would make
/// this boot a "first boot"), and the timers that must not fire.
fn image_files() -> Vec<(String, File)> {
    let mut files: Vec<(String, File)> = [
        (RUNNER, File::Text(include_str!("package-run.sh"), 0o755)),
        (UNIT, File::Text(include_str!("package-run.service"), 0o644)),
        (
            "/etc/systemd/system/multi-user.target.wants/vmtest-package.service",
            File::Link(UNIT),
        ),
        (
            MARKER_FILE,
            File::Text(
                "This machine is cargo xtask vmtest-package's VM: tests/tests/package.rs \
                 may install and purge packages and rebuild its network here.\n",
                0o644,
            ),
        ),
        (
            "/etc/machine-id",
            File::Text("6d7662726d7662726d7662726d766272\n", 0o444),
        ),
    ]
    .into_iter()
    .map(|(path, file)| (path.to_owned(), file))
    .collect();
    for unit in MASKED {
        files.push((
            format!("/etc/systemd/system/{unit}"),
            File::Link("/dev/null"),
        ));
    }
    files
}

/// The payload: the test binary, the guest emulator, both packages, and
/// run.sh (which the runner sources: it runs the tests, sets `result`).
fn fill_payload(
    stage: &Path,
    test: &Executable,
    guest: &Executable,
    debs: &[PathBuf; 2],
    filter: Option<&str>,
) -> Result<()> {
    payload::copy_stripped(std::slice::from_ref(test), &stage.join("tests"))?;
    payload::copy_stripped(std::slice::from_ref(guest), &stage.join("bin"))?;
    let debs_dir = stage.join("debs");
    std::fs::create_dir(&debs_dir)?;
    let mut names = Vec::new();
    for deb in debs {
        let name = deb.file_name().context("a package file name")?;
        std::fs::copy(deb, debs_dir.join(name))
            .with_context(|| format!("copying {}", deb.display()))?;
        names.push(format!("{MOUNT}/debs/{}", name.to_string_lossy()));
    }
    std::fs::write(
        stage.join("run.sh"),
        run_script(&names[0], &names[1], filter),
    )?;
    Ok(())
}

/// The script the runner sources.
fn run_script(deb: &str, next: &str, filter: Option<&str>) -> String {
    let mut script = String::from("# Written by cargo xtask vmtest-package for this run.\n");
    let _ = writeln!(
        script,
        "export MVB_BIN_DIR={MOUNT}/bin MVB_PACKAGE_DEB={} MVB_PACKAGE_NEXT_DEB={} \
         RUST_BACKTRACE=1 DEBIAN_FRONTEND=noninteractive\ncd /tmp",
        quote(deb),
        quote(next)
    );
    // The tests are ignored unless asked for: `cargo xtask test` on a host
    // lists them as ignored, and here every one must run.
    // --show-output: what the tests measured (restart, reload, upgrade
    // times) goes into the log, after their results.
    let mut args = vec![
        "--ignored".to_owned(),
        "--test-threads=1".to_owned(),
        "--show-output".to_owned(),
        "--color=never".to_owned(),
    ];
    args.extend(filter.map(quote));
    let _ = writeln!(
        script,
        "echo \"     Running tests/{TEST}.rs\"\n\
         if {MOUNT}/tests/{TEST} {}; then result=0; else result=\"1 {TEST}\"; fi",
        args.join(" ")
    );
    script
}

/// How many tests the binary's summary says passed, when that is all of
/// them: none failed, none ignored (not run), and, without a filter, none
/// filtered out. Otherwise why not.
fn tests_ran(output: &str, filtered: bool) -> Result<u64, String> {
    let summary = output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("test result: "))
        .ok_or("the test binary printed no summary")?;
    let count = |what: &str| -> Result<u64, String> {
        summary
            .split([';', '.'])
            .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
            .ok_or_else(|| format!("no `{what}` count in {summary:?}"))
    };
    let (passed, failed, ignored) = (count("passed")?, count("failed")?, count("ignored")?);
    let filtered_out = count("filtered out")?;
    if failed > 0 {
        return Err(format!("{failed} tests failed: {summary}"));
    }
    if ignored > 0 || passed == 0 || (!filtered && filtered_out > 0) {
        return Err(format!("tests were skipped in the VM: {summary}"));
    }
    Ok(passed)
}

/// Every clause of the package's Depends is met by a package installed in
/// the root tree `base`: apt in the VM has no network to fetch anything.
fn check_depends(deb: &Path, base: &Path) -> Result<()> {
    let depends = output(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .arg("Depends"),
    )?;
    let admindir = base.join("var/lib/dpkg");
    let listed = output(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"]),
    )?;
    // Installed: "ii" ("ii " in the abbreviation, error flag blank).
    let installed: Vec<(&str, &str)> = listed
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, version, "ii"] => Some((name, version)),
            _ => None,
        })
        .collect();
    for clause in depends.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let met = clause.split('|').map(str::trim).any(|alt| {
            let (name, constraint) = parse_relation(alt);
            installed.iter().any(|(n, v)| {
                *n == name
                    && constraint.is_none_or(|(op, want)| {
                        Command::new("dpkg")
                            .args(["--compare-versions", v, op, want])
                            .status()
                            .is_ok_and(|s| s.success())
                    })
            })
        });
        if !met {
            bail!(
                "{} depends on `{clause}`, which the VM's root file system does not have; \
                 apt in the VM has no network: add it to SYSTEMD_PACKAGES in {}",
                deb.display(),
                Path::new(file!()).with_file_name("rootfs.rs").display()
            );
        }
    }
    Ok(())
}

/// `libc6 (>= 2.34)` -> ("libc6", Some((">=", "2.34"))); an architecture
/// qualifier (`:any`) is dropped.
fn parse_relation(text: &str) -> (&str, Option<(&str, &str)>) {
    let (name, rest) = text.split_once('(').unwrap_or((text, ""));
    let name = name.trim();
    let name = name.split_once(':').map_or(name, |(n, _)| n);
    let constraint = rest
        .trim()
        .strip_suffix(')')
        .and_then(|c| c.trim().split_once(' '))
        .map(|(op, v)| (op.trim(), v.trim()));
    (name, constraint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_read_like_dpkg_writes_them() {
        assert_eq!(
            parse_relation("libc6 (>= 2.34)"),
            ("libc6", Some((">=", "2.34")))
        );
        assert_eq!(parse_relation("libgcc-s1"), ("libgcc-s1", None));
        assert_eq!(
            parse_relation("python3:any (<< 3.12)"),
            ("python3", Some(("<<", "3.12")))
        );
    }

    const PASSED: &str = "running 7 tests\ntest a ... ok\n\n\
        test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 412.31s\n\n";

    #[test]
    fn all_tests_must_have_run() {
        assert_eq!(tests_ran(PASSED, false), Ok(7));
        let ignored = "test result: ok. 0 passed; 0 failed; 7 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert!(tests_ran(ignored, false).unwrap_err().contains("skipped"));
        let filtered = "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1s";
        assert!(tests_ran(filtered, false).is_err());
        assert_eq!(tests_ran(filtered, true), Ok(2));
        let none = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out; finished in 0s";
        assert!(tests_ran(none, true).is_err());
        let failed = "test result: FAILED. 6 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s";
        assert!(
            tests_ran(failed, false)
                .unwrap_err()
                .contains("1 tests failed")
        );
        assert!(tests_ran("VMTEST_EXIT=0\n", false).is_err());
    }

    #[test]
    fn the_script_runs_the_ignored_tests_with_the_packages() {
        let script = run_script("/vmtest/debs/a.deb", "/vmtest/debs/b.deb", Some("upgrade"));
        assert!(
            script.contains("MVB_PACKAGE_DEB='/vmtest/debs/a.deb' "),
            "{script}"
        );
        assert!(
            script.contains("MVB_PACKAGE_NEXT_DEB='/vmtest/debs/b.deb' "),
            "{script}"
        );
        assert!(
            script.contains(
                "if /vmtest/tests/package --ignored --test-threads=1 --show-output --color=never \
                 'upgrade'; \
                 then result=0; else result=\"1 package\"; fi"
            ),
            "{script}"
        );
    }

    #[test]
    fn the_image_enables_the_runner_and_masks_the_timers() {
        let files = image_files();
        let link = |path: &str| {
            files.iter().find_map(|(p, f)| match f {
                File::Link(target) if p == path => Some(*target),
                _ => None,
            })
        };
        assert_eq!(
            link("/etc/systemd/system/multi-user.target.wants/vmtest-package.service"),
            Some(UNIT)
        );
        assert_eq!(
            link("/etc/systemd/system/apt-daily.timer"),
            Some("/dev/null")
        );
        let unit = include_str!("package-run.service");
        assert!(unit.contains(&format!("ExecStart={RUNNER}\n")));
        assert!(unit.contains("TimeoutStartSec=infinity"));
    }
}
