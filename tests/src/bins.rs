//! Finding the workspace's binaries from a test or the demo.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// `name` next to the running executable (target/<profile>/), or where
/// `MVB_BIN_DIR` points. `cargo xtask` builds them all first.
pub fn path(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MVB_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_owned());
        // Integration tests live in target/<profile>/deps.
        if let Some(up) = dir.parent() {
            dirs.push(up.to_owned());
        }
    }
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "cannot find the {name} binary (looked in {:?}); build it with `cargo xtask build`",
        dirs
    )
}
