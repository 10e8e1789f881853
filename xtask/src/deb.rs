//! `cargo xtask deb`: the Debian package, built with cargo-deb from the
//! `cargo xtask build --release` output, then checked with lintian.
//!
//! What goes in is declared in mvbridge/Cargo.toml
//! (`[package.metadata.deb]`) and dist/ (unit, example config, maintainer
//! scripts, copyright, changelog, lintian overrides). The man page and the
//! shell completions are generated here from the freshly built binary
//! (`mvbridge man`, `mvbridge completions SHELL`) into target/deb-assets/,
//! where the metadata expects them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::system::{self, Tool};
use crate::{on_path, run, toolchain, workspace};

/// What building the package runs: dpkg-deb and dpkg-shlibdeps
/// (cargo-deb's `$auto` dependencies), strip, gzip (changelogs).
pub const PACKAGING: &[Tool] = &[
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("gzip", "gzip"),
];

/// What checking it runs.
const CHECKING: &[Tool] = &[("lintian", "lintian")];

/// Where the generated man page and completions go (mvbridge/Cargo.toml
/// names these paths).
const ASSETS: &str = "target/deb-assets";

/// Where the package goes.
const OUT: &str = "target/debian";

/// The shells whose completions are packaged, and the file each script
/// goes to in ASSETS.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "mvbridge.bash"),
    ("zsh", "_mvbridge"),
    ("fish", "mvbridge.fish"),
];

pub fn deb() -> Result<()> {
    system::ensure(CHECKING, "checking the Debian package")?;
    let deb = build()?;
    run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    run(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    // Errors and warnings fail the build; what is overridden
    // (dist/deb/lintian-overrides) says why. Informational tags are shown.
    run(Command::new("lintian")
        .args(["--info", "--display-info", "--fail-on", "error,warning"])
        .arg(&deb))?;
    eprintln!("xtask: {} is lintian clean", deb.display());
    println!("{}", deb.display());
    Ok(())
}

/// Builds the release binary and the package from it, unchecked; returns
/// the package's path (in target/debian/).
pub fn build() -> Result<PathBuf> {
    system::ensure(PACKAGING, "the Debian package")?;
    let cargo_deb = ensure_cargo_deb()?;
    // Only what the package holds: the daemon (its build script builds
    // and embeds the eBPF programs).
    toolchain::ensure()?;
    run(crate::cargo().args(["build", "--release", "-p", "mvbridge", "--bin", "mvbridge"]))?;
    let root = workspace();
    let bin = root.join("target/release/mvbridge");
    let version = binary_version(&bin)?;
    check_changelog(&root.join("dist/deb/changelog"), &version)?;
    generate_assets(&bin, &root.join(ASSETS))?;

    eprintln!("xtask: packaging with cargo-deb");
    let out = Command::new(&cargo_deb)
        .current_dir(&root)
        .args(["-p", "mvbridge", "--no-build", "--output", OUT])
        .output()
        .with_context(|| format!("cannot start {}", cargo_deb.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("cargo-deb failed ({})", out.status);
    }
    // cargo-deb prints the package's path last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(|l| root.join(l))
        .context("cargo-deb did not say where the package is")?;
    finish(&deb)?;
    Ok(deb)
}

/// Where a package's changelog is (cargo-deb puts it there, compressed).
const CHANGELOG: &str = "usr/share/doc/mvbridge/changelog.Debian.gz";

/// `deb` repacked into `dir` as Debian revision `revision` of the same
/// upstream version (0.1.0-1 -> 0.1.0-REVISION), files unchanged but for
/// a changelog entry saying `why`: a package apt takes as an upgrade of
/// `deb` when `revision` sorts after its own.
pub fn repack_as_revision(deb: &Path, revision: &str, why: &str, dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("repack.tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(&tree))?;
    let control_path = tree.join("DEBIAN/control");
    let control = std::fs::read_to_string(&control_path)
        .with_context(|| format!("reading {}", control_path.display()))?;
    let field = |name: &str| {
        control_field(&control, name).with_context(|| format!("{} has no {name}", deb.display()))
    };
    let old = field("Version")?;
    let new = format!("{}-{revision}", upstream_part(&old));
    let name = format!(
        "{}_{}_{}.deb",
        field("Package")?,
        new,
        field("Architecture")?
    );
    write(
        &control_path,
        &control.replace(
            &format!("\nVersion: {old}\n"),
            &format!("\nVersion: {new}\n"),
        ),
    )?;

    let changelog = tree.join(CHANGELOG);
    let text = capture(Command::new("gzip").arg("-dc").arg(&changelog))?;
    let entry = next_entry(&text, &new, why)
        .with_context(|| format!("reading the changelog in {}", deb.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&changelog)?)
        .spawn()
        .context("cannot start gzip")?;
    std::io::Write::write_all(
        gzip.stdin.as_mut().context("gzip's stdin")?,
        (entry + &text).as_bytes(),
    )?;
    drop(gzip.stdin.take());
    if !gzip.wait()?.success() {
        bail!("gzip failed on {}", changelog.display());
    }
    std::fs::remove_file(tree.join("DEBIAN/md5sums")).context("the package has no md5sums")?;
    write_md5sums(&tree)?;
    let out = dir.join(name);
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&out))?;
    std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok(out)
}

/// A control file's single-line field.
fn control_field(control: &str, name: &str) -> Option<String> {
    control
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(|v| v.trim().to_owned())
}

/// A changelog entry for `version` saying `why`, to go on top of
/// `changelog`: the same package, distribution and signature as its
/// latest entry.
fn next_entry(changelog: &str, version: &str, why: &str) -> Option<String> {
    let first = changelog.lines().find(|l| !l.trim().is_empty())?;
    let (package, rest) = first.split_once(" (")?;
    let (_, rest) = rest.split_once(')')?;
    let signature = changelog.lines().find(|l| l.starts_with(" -- "))?;
    Some(format!(
        "{package} ({version}){rest}\n\n  * {why}\n\n{signature}\n\n"
    ))
}

/// cargo-deb on PATH or in ~/.cargo/bin, installed there if missing.
fn ensure_cargo_deb() -> Result<PathBuf> {
    if on_path("cargo-deb") {
        return Ok(PathBuf::from("cargo-deb"));
    }
    let bin = toolchain::cargo_bin("cargo-deb");
    if !bin.is_file() {
        eprintln!(
            "xtask: installing cargo-deb into ~/.cargo/bin (once): cargo install cargo-deb --locked"
        );
        run(crate::cargo().args(["install", "cargo-deb", "--locked"]))?;
    }
    Ok(bin)
}

/// The version `mvbridge --version` reports ("mvbridge 0.1.0").
fn binary_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).with_context(|| format!("unexpected `mvbridge --version` output {text:?}"))
}

fn parse_version(text: &str) -> Option<String> {
    let v = text.trim().strip_prefix("mvbridge ")?;
    (!v.is_empty() && !v.contains(char::is_whitespace)).then(|| v.to_owned())
}

/// The top entry of the Debian changelog is for this version (lintian
/// and `apt changelog` read it as the package's history).
fn check_changelog(path: &Path, version: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let top = changelog_version(&text)
        .with_context(|| format!("{}: no `mvbridge (VERSION) ...` entry", path.display()))?;
    if upstream_part(&top) != version {
        bail!(
            "{}: the latest entry is for {top}, but the binary is {version}: add an entry for {version}-1",
            path.display()
        );
    }
    Ok(())
}

fn changelog_version(text: &str) -> Option<String> {
    let first = text.lines().find(|l| !l.trim().is_empty())?;
    let rest = first.strip_prefix("mvbridge (")?;
    Some(rest.split_once(')')?.0.to_owned())
}

/// "0.1.0-1" -> "0.1.0" (and an epoch goes too).
fn upstream_part(debian_version: &str) -> &str {
    let v = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

/// The man pages (section 8: mvbridge.8, and mvbridge-run.8 and so on,
/// which it refers to) and the completion scripts, from the binary.
fn generate_assets(bin: &Path, dir: &Path) -> Result<()> {
    let man8 = dir.join("man8");
    if man8.exists() {
        // No page of a subcommand that is gone.
        std::fs::remove_dir_all(&man8).with_context(|| format!("removing {}", man8.display()))?;
    }
    let listed = capture(Command::new(bin).arg("man").arg("--out-dir").arg(&man8))?;
    let mut pages = 0;
    for page in listed.lines().map(Path::new) {
        let roff =
            std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
        if man_section(&roff) != Some("8") || page.extension().is_none_or(|e| e != "8") {
            bail!("`mvbridge man` made {} outside section 8", page.display());
        }
        pages += 1;
    }
    if !man8.join("mvbridge.8").is_file() {
        bail!("`mvbridge man --out-dir` made no mvbridge.8");
    }
    for (shell, file) in COMPLETIONS {
        let script = capture(Command::new(bin).args(["completions", shell]))?;
        write(&dir.join(file), &script)?;
    }
    eprintln!(
        "xtask: generated {pages} man pages and {} completions in {}",
        COMPLETIONS.len(),
        dir.display()
    );
    Ok(())
}

/// The section a man page's `.TH` line gives.
fn man_section(roff: &str) -> Option<&str> {
    roff.lines()
        .find_map(|l| l.strip_prefix(".TH "))?
        .split_whitespace()
        .nth(1)
}

fn capture(cmd: &mut Command) -> Result<String> {
    let shown = crate::display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{shown} printed something not UTF-8"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What cargo-deb leaves out, put in by repacking the package with
/// dpkg-deb (files and maintainer scripts unchanged): DEBIAN/md5sums,
/// which debsums and `dpkg --verify` check the installed files against
/// (as dh_md5sums makes it: conffiles left out, dpkg tracks those
/// itself).
fn finish(deb: &Path) -> Result<()> {
    let tree = deb.with_extension("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(&tree))?;
    if !tree.join("DEBIAN/md5sums").exists() {
        write_md5sums(&tree)?;
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(deb))?;
    std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))
}

/// DEBIAN/md5sums of the package tree `tree`.
fn write_md5sums(tree: &Path) -> Result<()> {
    let conffiles = std::fs::read_to_string(tree.join("DEBIAN/conffiles")).unwrap_or_default();
    let mut files = Vec::new();
    collect_files(tree, Path::new(""), &mut files)?;
    let files = to_sum(files, &conffiles);
    let sums = capture(Command::new("md5sum").current_dir(tree).args(&files))?;
    write(&tree.join("DEBIAN/md5sums"), &sums)
}

/// Which of the package's files md5sums lists: not the control files,
/// not the conffiles; sorted.
fn to_sum(mut files: Vec<String>, conffiles: &str) -> Vec<String> {
    files.retain(|f| {
        !f.starts_with("DEBIAN/") && !conffiles.lines().any(|c| c.trim_start_matches('/') == f)
    });
    files.sort();
    files
}

/// The regular files under `root/rel`, as paths relative to `root`.
fn collect_files(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.to_str().context("a non-UTF-8 file name")?.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_binary() {
        assert_eq!(parse_version("mvbridge 0.1.0\n").as_deref(), Some("0.1.0"));
        assert_eq!(parse_version("other 0.1.0\n"), None);
        assert_eq!(parse_version("mvbridge \n"), None);
    }

    #[test]
    fn the_changelog_names_the_version() {
        let text = "mvbridge (0.1.0-1) unstable; urgency=medium\n\n  * x\n";
        assert_eq!(changelog_version(text).as_deref(), Some("0.1.0-1"));
        assert_eq!(upstream_part("0.1.0-1"), "0.1.0");
        assert_eq!(upstream_part("1:0.2.0~rc1-3"), "0.2.0~rc1");
        assert_eq!(upstream_part("0.1.0"), "0.1.0");
        assert_eq!(changelog_version("other (1.0-1) unstable\n"), None);
        let shipped = std::fs::read_to_string(workspace().join("dist/deb/changelog")).unwrap();
        let top = changelog_version(&shipped).expect("dist/deb/changelog has an entry");
        assert_eq!(upstream_part(&top), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_section_comes_from_the_title_line() {
        let roff = ".ie \\n(.g .ds Aq \\(aq\n.TH mvbridge-run 8  \"mvbridge 0.1.0\"\n.SH NAME\n";
        assert_eq!(man_section(roff), Some("8"));
        assert_eq!(man_section(".TH mvbridge 1\n"), Some("1"));
        assert_eq!(man_section(".SH NAME\n"), None);
    }

    #[test]
    fn a_new_revision_gets_an_entry_like_the_last() {
        let text = "mvbridge (0.1.0-1) unstable; urgency=medium\n\n  * First.\n\n \
                    -- M <m@example> Wed, 25 Nov 2026 04:30:00 +0000\n";
        assert_eq!(
            next_entry(text, "0.1.0-2~vmtest", "Why.").as_deref(),
            Some(
                "mvbridge (0.1.0-2~vmtest) unstable; urgency=medium\n\n  * Why.\n\n \
                 -- M <m@example> Wed, 25 Nov 2026 04:30:00 +0000\n\n"
            )
        );
        assert_eq!(next_entry("", "1", "x"), None);
        let control = "Package: mvbridge\nVersion: 0.1.0-1\nDescription: x\n y\n";
        assert_eq!(
            control_field(control, "Version").as_deref(),
            Some("0.1.0-1")
        );
        assert_eq!(
            control_field(control, "Package").as_deref(),
            Some("mvbridge")
        );
        assert_eq!(control_field(control, "Depends"), None);
    }

    #[test]
    fn md5sums_leaves_out_control_files_and_conffiles() {
        let files = [
            "usr/sbin/mvbridge",
            "DEBIAN/control",
            "etc/mvbridge/mvbridge.toml",
            "usr/share/doc/mvbridge/copyright",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            to_sum(files, "/etc/mvbridge/mvbridge.toml\n"),
            ["usr/sbin/mvbridge", "usr/share/doc/mvbridge/copyright"]
        );
    }
}
