//! Builds `mvbridge-ebpf` for the BPF target and leaves the object in
//! OUT_DIR, where `datapath/object.rs` embeds it: one self-contained binary.
//!
//! Needs the nightly toolchain with rust-src and bpf-linker on PATH;
//! `cargo xtask` installs both. With AYA_BUILD_SKIP=1 an empty object is
//! embedded instead, so host-only checks (clippy, docs) work without them;
//! such a binary refuses to run.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        std::fs::write(out.join("mvbridge-ebpf"), [])?;
        return Ok(());
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = root.join("../mvbridge-ebpf");
    let common = root.join("../mvbridge-common");
    println!("cargo:rerun-if-changed={}", common.display());
    // aya-build relays everything the inner cargo prints as build-script
    // warnings; quiet keeps that to real diagnostics.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mvbridge-ebpf",
            root_dir: ebpf.to_str().expect("utf-8 path"),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
