//! What the VM runs: the integration test executables of mvbridge-tests
//! and the workspace's binaries (the tests find those through
//! `MVB_BIN_DIR`), as cargo reports them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace};

use super::output;

/// A named executable.
#[derive(Debug, PartialEq, Eq)]
pub struct Executable {
    pub name: String,
    pub path: PathBuf,
}

pub struct Artifacts {
    pub tests: Vec<Executable>,
    pub bins: Vec<Executable>,
}

/// The integration tests' package.
const TESTS_PACKAGE: &str = "mvbridge-tests";
/// The packages with the binaries the tests run (and the tests).
const PACKAGES: &[&str] = &["mvbridge", TESTS_PACKAGE];

/// Integration tests vmtest leaves out, and where they run instead: the
/// package tests need a VM with systemd as PID 1 (here they would only
/// report themselves ignored); the libvirt tests need libvirtd, which the
/// VM has not, and boot qemu guests of their own, which under TCG inside
/// a TCG VM would take hours. What they drive in the kernel (the hooks on
/// libvirt's macvtaps) the rest of the suite covers on every kernel.
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "package",
        "in a VM of its own: `cargo xtask vmtest-package`",
    ),
    ("libvirt", "on the host only: `cargo xtask test`"),
];

/// The test executables (only those named in `only`, when any) and the
/// binaries of the build `cargo xtask build` just made: cargo lists them
/// without building anything.
pub fn collect(only: &[String]) -> Result<Artifacts> {
    let mut cmd = cargo();
    cmd.arg("build");
    for package in PACKAGES {
        cmd.args(["-p", package]);
    }
    cmd.args(["--bins", "--tests"]);
    let mut found = build(&mut cmd)?;
    if found.tests.is_empty() {
        bail!("cargo lists no integration tests of {TESTS_PACKAGE}");
    }
    found.tests = pick(found.tests, only)?;
    Ok(found)
}

/// Runs `cmd` (a `cargo build` of some of the workspace) and returns what
/// it built or found built: `cmd` gets the JSON message format here.
pub fn build(cmd: &mut std::process::Command) -> Result<Artifacts> {
    cmd.arg("--message-format=json").current_dir(workspace());
    let messages = output(cmd)?;
    parse(&messages, &workspace().join("tests/Cargo.toml"))
}

/// Reads cargo's `compiler-artifact` messages: integration tests (a
/// `test` target built as a test) of the package at `tests_manifest`,
/// and binaries (a `bin` target built normally). Each sorted by name.
fn parse(messages: &str, tests_manifest: &Path) -> Result<Artifacts> {
    let mut tests = Vec::new();
    let mut bins = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let msg: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cannot read cargo's {line}"))?;
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(path) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = Path::new(msg["manifest_path"].as_str().unwrap_or_default());
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is_test = msg["profile"]["test"] == true;
        let exe = Executable {
            name: msg["target"]["name"]
                .as_str()
                .context("an artifact without a target name")?
                .to_owned(),
            path: PathBuf::from(path),
        };
        if is_test && manifest == tests_manifest && kinds.iter().any(|k| k == "test") {
            tests.push(exe);
        } else if !is_test && kinds.iter().any(|k| k == "bin") {
            bins.push(exe);
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Artifacts { tests, bins })
}

/// The tests named in `only` (all when empty, but those run
/// [`ELSEWHERE`]), in `only`'s order.
fn pick(mut tests: Vec<Executable>, only: &[String]) -> Result<Vec<Executable>> {
    if only.is_empty() {
        tests.retain(|t| !ELSEWHERE.iter().any(|(name, _)| t.name == *name));
        return Ok(tests);
    }
    let mut picked = Vec::new();
    for name in only {
        if let Some((_, command)) = ELSEWHERE.iter().find(|(n, _)| n == name) {
            bail!("the integration test {name:?} runs {command}");
        }
        let Some(at) = tests.iter().position(|t| &t.name == name) else {
            if picked.iter().any(|t: &Executable| &t.name == name) {
                continue;
            }
            let known: Vec<_> = tests
                .iter()
                .chain(&picked)
                .map(|t| t.name.as_str())
                .collect();
            bail!(
                "no integration test {name:?} (there are: {})",
                known.join(", ")
            );
        };
        picked.push(tests.remove(at));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#mvbridge-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"packets","src_path":"/w/tests/tests/packets.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/packets-b7ac"],"executable":"/w/target/debug/deps/packets-b7ac","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"name":"ipv4"},"profile":{"test":true},"executable":"/w/target/debug/deps/ipv4-3219","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"name":"mvbridge_tests"},"profile":{"test":true},"executable":"/w/target/debug/deps/mvbridge_tests-1","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"name":"mvbridge_tests"},"profile":{"test":false},"executable":null,"fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["bin"],"name":"mvb-guest"},"profile":{"test":false},"executable":"/w/target/debug/mvb-guest","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["bin"],"name":"mvb-guest"},"profile":{"test":true},"executable":"/w/target/debug/deps/mvb_guest-9","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/mvbridge/Cargo.toml","target":{"kind":["bin"],"name":"mvbridge"},"profile":{"test":false},"executable":"/w/target/debug/mvbridge","fresh":true}
{"reason":"compiler-artifact","manifest_path":"/w/mvbridge/Cargo.toml","target":{"kind":["test"],"name":"elsewhere"},"profile":{"test":true},"executable":"/w/target/debug/deps/elsewhere-1","fresh":true}
{"reason":"build-finished","success":true}"#;

    fn exe(name: &str, path: &str) -> Executable {
        Executable {
            name: name.into(),
            path: path.into(),
        }
    }

    fn parsed() -> Artifacts {
        parse(MESSAGES, Path::new("/w/tests/Cargo.toml")).unwrap()
    }

    #[test]
    fn integration_tests_and_binaries_from_cargo_messages() {
        let found = parsed();
        assert_eq!(
            found.tests,
            [
                exe("ipv4", "/w/target/debug/deps/ipv4-3219"),
                exe("packets", "/w/target/debug/deps/packets-b7ac"),
            ]
        );
        assert_eq!(
            found.bins,
            [
                exe("mvb-guest", "/w/target/debug/mvb-guest"),
                exe("mvbridge", "/w/target/debug/mvbridge"),
            ]
        );
    }

    #[test]
    fn only_the_named_tests_in_the_order_given() {
        let only = [
            "packets".to_owned(),
            "ipv4".to_owned(),
            "packets".to_owned(),
        ];
        let names: Vec<_> = pick(parsed().tests, &only)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["packets", "ipv4"]);
        let err = pick(parsed().tests, &["ipv5".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no integration test "ipv5" (there are: ipv4, packets)"#
        );
    }

    #[test]
    fn tests_that_run_elsewhere_are_left_out() {
        let mut found = parsed().tests;
        found.push(exe("package", "/w/target/debug/deps/package-5"));
        found.push(exe("libvirt", "/w/target/debug/deps/libvirt-6"));
        let names: Vec<_> = pick(found, &[])
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["ipv4", "packets"]);
        let mut found = parsed().tests;
        found.push(exe("package", "/w/target/debug/deps/package-5"));
        let err = pick(found, &["package".to_owned()]).unwrap_err();
        assert!(
            err.to_string().contains("cargo xtask vmtest-package"),
            "{err}"
        );
        let err = pick(parsed().tests, &["libvirt".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("on the host only"), "{err}");
    }

    #[test]
    fn broken_json_is_an_error() {
        assert!(parse("{oops", Path::new("/t")).is_err());
    }
}
