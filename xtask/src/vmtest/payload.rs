//! The payload disk of a run: the test executables, the workspace's
//! binaries, what the tests read from the source tree, and `run.sh`, which
//! the VM's init sources to run the tests.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::artifacts::{Artifacts, Executable};
use super::cache::remove;
use super::kernel::TOO_OLD_TEST;
use super::{image, step};

/// Where the init mounts the disk, and how it finds it (init.sh, and
/// package-run.sh for `vmtest-package`).
pub const MOUNT: &str = "/vmtest";
const LABEL: &str = "mvb-payload";

/// What of the source tree stays behind: build output, git's store, the
/// fuzzers' corpora. The tests read the rest at run time by the paths
/// `env!("CARGO_MANIFEST_DIR")` gave them on the host (the shipped unit
/// and config, fixtures).
const NOT_SHIPPED: &[&str] = &[".git", "target", "fuzz"];

/// On the kernel's command line of a kernel older than mvbridge supports:
/// run.sh then runs only [`kernel::TOO_OLD_TEST`], and tells it so.
///
/// [`kernel::TOO_OLD_TEST`]: super::kernel::TOO_OLD_TEST
pub const TOO_OLD_ARG: &str = "mvb.too_old";

/// The test of [`TOO_OLD_TEST`] that such a kernel runs, whatever the
/// run's filter: the others there are about supported kernels.
const TOO_OLD_FILTER: &str = "kernels_older_than_5_10";

/// What each test binary is run with.
pub struct TestArgs<'a> {
    pub filter: Option<&'a str>,
    pub color: bool,
}

/// Builds `dir/payload.ext4` for `artifacts`.
pub fn build(artifacts: &Artifacts, args: &TestArgs, dir: &Path) -> Result<PathBuf> {
    disk(dir, |stage| {
        copy_stripped(&artifacts.tests, &stage.join("tests"))?;
        copy_stripped(&artifacts.bins, &stage.join("bin"))?;
        let workspace = crate::workspace();
        copy_sources(&workspace, &stage.join("workspace"))?;
        std::fs::write(
            stage.join("run.sh"),
            run_script(&artifacts.tests, args, &workspace),
        )?;
        Ok(())
    })
}

/// Builds `dir/payload.ext4` from what `fill` puts into the empty
/// directory it gets (`dir/payload`); the VM mounts it at [`MOUNT`].
/// `run.sh` at its top is what the VM's runner sources.
pub fn disk(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let stage = dir.join("payload");
    let disk = dir.join("payload.ext4");
    step("making the payload disk", || {
        remove(&stage)?;
        std::fs::create_dir_all(&stage)?;
        fill(&stage)?;
        remove(&disk)?;
        image::ext4(&stage, &disk, LABEL, 0)
    })?;
    Ok(disk)
}

/// The top of the source tree but [`NOT_SHIPPED`], into `to`.
fn copy_sources(workspace: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir(to)?;
    let mut cp = Command::new("cp");
    cp.arg("-a");
    for entry in std::fs::read_dir(workspace)? {
        let name = entry?.file_name();
        if !NOT_SHIPPED.iter().any(|n| name == *n) {
            cp.arg(workspace.join(name));
        }
    }
    crate::run(cp.arg(to))
}

/// Copies without debug info: a fifth of the size (less to write and for
/// the VM to read), and panics still name their functions.
pub fn copy_stripped(executables: &[Executable], to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for exe in executables {
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&exe.path)
            .arg(to.join(&exe.name))
            .status()
            .context("cannot start objcopy")?;
        if !status.success() {
            bail!(
                "objcopy --strip-debug {} failed ({status})",
                exe.path.display()
            );
        }
    }
    Ok(())
}

/// The script the init sources: the environment, then `run_test NAME
/// ARGS...` per test binary.
fn run_script(tests: &[Executable], args: &TestArgs, workspace: &Path) -> String {
    let mut script = String::from("# Written by cargo xtask vmtest for this run.\n");
    // The tests find the source tree where it was on the host.
    if let Some(parent) = workspace.parent() {
        let _ = writeln!(
            script,
            "mkdir -p {} && ln -s {MOUNT}/workspace {}",
            quote(&parent.display().to_string()),
            quote(&workspace.display().to_string())
        );
    }
    let _ = writeln!(
        script,
        "export MVB_BIN_DIR={MOUNT}/bin RUST_BACKTRACE=1\ncd /tmp"
    );
    // One test at a time, as `cargo xtask test` runs them: they share the
    // kernel's state (ifindexes, /dev/tapN, bpffs).
    let options = format!(
        "--test-threads=1 --color={}",
        if args.color { "always" } else { "never" }
    );
    let filter = args.filter.map(|f| quote(f) + " ").unwrap_or_default();
    let _ = writeln!(
        script,
        "if grep -qw {TOO_OLD_ARG} /proc/cmdline; then\n\
         \x20   export MVB_KERNEL_TOO_OLD=1\n\
         \x20   run_test {} {} {options}\n\
         else",
        quote(TOO_OLD_TEST),
        quote(TOO_OLD_FILTER),
    );
    let args = format!("{filter}{options}");
    for test in tests {
        let _ = writeln!(script, "    run_test {} {args}", quote(&test.name));
    }
    script.push_str("fi\n");
    script
}

/// `s` as one word for sh, whatever it holds.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's a $test"), r"'it'\''s a $test'");
    }

    #[test]
    fn the_script_runs_each_test_with_the_filter() {
        let tests = [
            Executable {
                name: "packets".into(),
                path: "/w/target/debug/deps/packets-1".into(),
            },
            Executable {
                name: "ipv4".into(),
                path: "/w/target/debug/deps/ipv4-2".into(),
            },
        ];
        let args = TestArgs {
            filter: Some("arp's"),
            color: false,
        };
        assert_eq!(
            run_script(&tests, &args, Path::new("/work/main")),
            "# Written by cargo xtask vmtest for this run.\n\
             mkdir -p '/work' && ln -s /vmtest/workspace '/work/main'\n\
             export MVB_BIN_DIR=/vmtest/bin RUST_BACKTRACE=1\n\
             cd /tmp\n\
             if grep -qw mvb.too_old /proc/cmdline; then\n\
             \x20   export MVB_KERNEL_TOO_OLD=1\n\
             \x20   run_test 'old_kernels' 'kernels_older_than_5_10' --test-threads=1 --color=never\n\
             else\n\
             \x20   run_test 'packets' 'arp'\\''s' --test-threads=1 --color=never\n\
             \x20   run_test 'ipv4' 'arp'\\''s' --test-threads=1 --color=never\n\
             fi\n"
        );
    }
}
