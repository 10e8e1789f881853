//! Running the lab's commands (iproute2, ping, tcpdump, ...).

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs a command to completion; an error carries its stderr.
pub fn run(args: &[&str]) -> Result<String> {
    let out = output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns whatever happened.
pub fn output(args: &[&str]) -> Result<Output> {
    let (prog, rest) = args.split_first().context("empty command")?;
    Command::new(prog)
        .args(rest)
        .output()
        .with_context(|| format!("cannot start `{prog}` (is it installed?)"))
}
