//! What an admin asks systemd and its journal: `systemctl show`,
//! `is-active`, `status`, `journalctl -u` since a mark. For tests that
//! run under a real systemd as PID 1 (tests/tests/package.rs).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A unit, by name.
#[derive(Clone, Copy)]
pub struct Unit(pub &'static str);

impl Unit {
    /// `systemctl VERB UNIT`.
    pub fn systemctl(&self, verb: &str) -> Output {
        self.systemctl_with(&[verb])
    }

    /// `systemctl ARGS... UNIT`.
    pub fn systemctl_with(&self, args: &[&str]) -> Output {
        Command::new("systemctl")
            .args(args)
            .arg(self.0)
            .output()
            .expect("systemctl runs")
    }

    /// One property, as `systemctl show -p NAME --value` prints it.
    pub fn prop(&self, name: &str) -> String {
        let out = self.systemctl_with(&["show", "-p", name, "--value"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// ActiveState/SubState (Result), for messages.
    pub fn state(&self) -> String {
        format!(
            "{}/{} (result {})",
            self.prop("ActiveState"),
            self.prop("SubState"),
            self.prop("Result")
        )
    }

    pub fn main_pid(&self) -> u32 {
        self.prop("MainPID").parse().unwrap_or(0)
    }

    /// `systemctl status UNIT` as an admin reads it (all of it, with the
    /// last journal lines).
    pub fn status(&self) -> String {
        let out = self.systemctl_with(&["status", "--no-pager", "--full", "--lines=30"]);
        text(&out)
    }
}

/// stdout and stderr of a command, for assertions and messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A point in the journal: what is logged after it is the test's.
pub struct Journal {
    cursor: Option<String>,
}

impl Journal {
    pub fn mark() -> Journal {
        let out = Command::new("journalctl")
            .args(["-n", "1", "--show-cursor", "-o", "cat", "--no-pager"])
            .output()
            .expect("journalctl runs");
        let cursor = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("-- cursor: "))
            .map(str::to_owned);
        Journal { cursor }
    }

    /// The messages of `unit` (its processes', and systemd's about it)
    /// since the mark, one a line.
    pub fn of(&self, unit: Unit) -> String {
        let mut cmd = Command::new("journalctl");
        cmd.args(["-u", unit.0, "-o", "cat", "--no-pager"]);
        if let Some(c) = &self.cursor {
            cmd.arg(format!("--after-cursor={c}"));
        }
        let out = cmd.output().expect("journalctl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many lines of `unit` since the mark contain all of `needles`.
    pub fn count(&self, unit: Unit, needles: &[&str]) -> usize {
        self.of(unit)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until a line of `unit` since the mark contains all of
    /// `needles` (the journal takes a moment to get what a process
    /// wrote); returns it.
    pub fn wait_for(&self, unit: Unit, needles: &[&str], timeout: Duration) -> Result<String> {
        let t0 = Instant::now();
        loop {
            let log = self.of(unit);
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.to_owned());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "no line of {} with {needles:?} within {timeout:?}:\n{log}",
                    unit.0
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls `check` until it holds, for at most `timeout`; how long it took.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<Duration> {
    let t0 = Instant::now();
    while !check() {
        if t0.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(t0.elapsed())
}

/// `apt-get ARGS...` as an admin runs it, non-interactively; the VM has
/// no network, so anything apt would fetch fails it.
pub fn apt_get(args: &[&str]) -> Result<Output> {
    Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-q"])
        .args(args)
        .output()
        .context("running apt-get")
}

/// The version dpkg has installed of `package`, if it is installed.
pub fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev} ${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("ii ").map(|v| v.trim().to_owned())
}

/// dpkg's status abbreviation of `package` ("ii ", "rc ", ...), empty if
/// dpkg does not know it.
pub fn dpkg_status(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
