//! Finding the workspace's binaries from a test or the demo.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

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

/// A copy of `name` that any user can execute, in `dir/bin` (created
/// world-traversable). The checkout itself may sit in a directory only
/// root can enter (root's home is 0700), so a test that runs a binary
/// as another user must not run it from `target/`. `dir` must be the
/// caller's own directory, reachable by everyone and removed with it.
pub fn copy_for_anyone(name: &str, dir: &Path) -> Result<PathBuf> {
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    for d in [dir, bin_dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to everyone", d.display()))?;
    }
    let copy = bin_dir.join(name);
    std::fs::copy(path(name)?, &copy).with_context(|| format!("copying {name}"))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}
