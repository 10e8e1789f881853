//! Driving the real `mvbridge` binary inside the lab's host namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::netns::Netns;

/// `mvbridge run` as a child process; SIGTERM (and a wait) on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `mvbridge run -c config` in `host` and waits until the
    /// datapath is attached (or the daemon gives up).
    pub fn start(host: &Netns, config: &Path) -> Result<Daemon> {
        Daemon::start_with(host, config, &[], &[])
    }

    /// Like `start`, with extra arguments (`--keep`) and environment.
    pub fn start_with(
        host: &Netns,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        Daemon::start_binary(host, &bins::path("mvbridge")?, config, args, env)
    }

    /// `start_with` for another `mvbridge` binary (an earlier release).
    pub fn start_binary(
        host: &Netns,
        binary: &Path,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut child = host
            .command(binary.to_str().context("utf-8 path")?)?
            .args(["run", "--config", &config.display().to_string()])
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mvbridge")?;
        let stderr = child.stderr.take().context("mvbridge stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("datapath attached") {
                    let _ = tx.send(());
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(daemon);
            }
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                std::thread::sleep(Duration::from_millis(50));
                bail!(
                    "mvbridge exited ({status}) before attaching:\n{}",
                    daemon.log()
                );
            }
            if Instant::now() > deadline {
                bail!("mvbridge did not attach within 20 s:\n{}", daemon.log());
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until a log line contains all of `needles`; returns the line.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                bail!(
                    "no log line with {needles:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until more than `seen` log lines contain all of `needles`
    /// (`seen`: `count_log` before the action whose line is awaited);
    /// returns the newest.
    pub fn wait_for_another_log(
        &self,
        needles: &[&str],
        seen: usize,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .collect();
            if lines.len() > seen {
                return Ok(lines[lines.len() - 1].to_owned());
            }
            if Instant::now() > deadline {
                bail!("no new log line with {needles:?} within {timeout:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many log lines contain all of `needles`.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Sends `signal` and waits for the daemon to exit; returns its status.
    pub fn stop_with(&mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("daemon already stopped")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                // Give the log reader a moment to catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("mvbridge did not exit within 10 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_with(libc::SIGTERM);
        }
    }
}

/// Runs a one-shot `mvbridge` command (status, down, run that should fail)
/// inside `host`. A command still running after 20 s is killed (a `run`
/// that should have refused would otherwise hang the test).
pub fn mvbridge(host: &Netns, args: &[&str]) -> Result<Output> {
    let child = host
        .command(bins::path("mvbridge")?.to_str().context("utf-8 path")?)?
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running mvbridge")?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            // SAFETY: kill(2) on our own child, which did not finish.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().context("waiting for mvbridge")?;
    let _ = tx.send(());
    Ok(out)
}

/// `mvbridge status --json`, parsed, with the exit status.
pub fn status(host: &Netns, config: &Path) -> Result<(bool, serde_json::Value)> {
    let out = mvbridge(
        host,
        &[
            "status",
            "--json",
            "--config",
            &config.display().to_string(),
        ],
    )?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "status printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.success(), json))
}

/// `status --json` of a datapath that must be attached: a status that
/// says otherwise is an error, with what it reported.
pub fn running_status(host: &Netns, config: &Path) -> Result<serde_json::Value> {
    let (attached, json) = status(host, config)?;
    if !attached {
        bail!("status says the datapath is not attached: {json:#}");
    }
    Ok(json)
}

/// Packets counted on one path/protocol in a status report.
pub fn path_packets(status: &serde_json::Value, path: &str, proto: &str) -> u64 {
    status["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["path"] == path && p["proto"] == proto)
        .filter_map(|p| p["packets"].as_u64())
        .sum()
}

pub fn drops(status: &serde_json::Value, reason: &str) -> u64 {
    status["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["reason"] == reason)
        .filter_map(|d| d["count"].as_u64())
        .sum()
}

/// A `key=value` field of a log line (`reaction_us=1234`).
pub fn log_field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Resident memory of a process, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A VM's row in a status report.
pub fn vm_row<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no VM {name} in {status}"))
}

/// The addresses of a VM's status row from `source` ("config", "learnt",
/// "derived"; any when `None`) that the datapath steers for it.
pub fn steered(row: &serde_json::Value, source: Option<&str>) -> Vec<String> {
    row["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["steered"] == true && source.is_none_or(|s| a["source"] == s))
        .filter_map(|a| a["address"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the datapath has steered `more` further packets on
/// `path`/`proto` (a flood is under way through it): what a test waits
/// for before changing something under traffic.
pub fn wait_until_steering(
    host: &Netns,
    config: &Path,
    path: &str,
    proto: &str,
    more: u64,
) -> Result<()> {
    let from = path_packets(&status(host, config)?.1, path, proto);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = path_packets(&status(host, config)?.1, path, proto);
        if now >= from + more {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{path} {proto}: only {} packets steered within 10 s",
                now - from
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
