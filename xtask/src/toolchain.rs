//! The eBPF crate's toolchain: nightly with rust-src (for
//! `-Z build-std=core`) and bpf-linker built against the nightly's own
//! LLVM. Each piece is checked first, so a second run costs nothing.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

const NIGHTLY: &str = "nightly";

pub fn ensure() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_nightly() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain (the eBPF crate needs it)");
    run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to nightly (for -Z build-std=core on bpfel-unknown-none)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The nightly's libLLVM (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(rest) = name.strip_prefix("libLLVM.so.") {
            let major = rest
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .with_context(|| format!("cannot read the LLVM version from {name}"))?;
            return Ok((path, major));
        }
    }
    bail!(
        "the nightly toolchain ships no libLLVM.so.* in {}",
        lib.display()
    )
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn ensure_bpf_linker() -> Result<()> {
    let (llvm, major) = nightly_llvm()?;
    let prefix = home()?.join(".local/llvm-rust");
    let stamp = prefix.join("bpf-linker.stamp");
    let want = llvm.display().to_string();
    let have_linker =
        crate::on_path("bpf-linker") || home()?.join(".cargo/bin/bpf-linker").is_file();
    if have_linker && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        return Ok(());
    }
    // bpf-linker links against an LLVM of the same major version as the
    // nightly's; the nightly's own libLLVM serves, once it is reachable
    // under the names the build expects.
    eprintln!(
        "xtask: installing bpf-linker for LLVM {major} (the nightly's), about a minute, once"
    );
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    let file_name = llvm.file_name().context("libLLVM has no file name")?;
    for link in [libdir.join("libLLVM.so"), libdir.join(file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo").env("LLVM_PREFIX", &prefix).args([
        "install",
        "bpf-linker",
        "--force",
        "--version",
        "^0.13",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ]))?;
    std::fs::write(&stamp, want)?;
    Ok(())
}

/// A binary `cargo install` put in ~/.cargo/bin.
pub fn cargo_bin(name: &str) -> PathBuf {
    home()
        .map(|h| h.join(".cargo/bin").join(name))
        .unwrap_or_default()
}
