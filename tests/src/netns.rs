//! A network namespace owned by a test: created on construction, deleted
//! (with everything inside it) on drop, also when the test fails.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use anyhow::{Context, Result};

use crate::sh;

pub struct Netns {
    pub name: String,
    /// Deleted on drop; false for a handle on somebody else's namespace.
    owned: bool,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        sh::run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `args` run inside the namespace (mount namespace included, as
    /// `ip netns exec` does, so /sys shows this namespace's devices).
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        sh::output(&full)
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        sh::run(&full)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh::run(&full)
    }

    /// `ip` with its arguments in one string, split on whitespace:
    /// `ns.ipw("route add default via 203.0.113.129")`.
    pub fn ipw(&self, args: &str) -> Result<String> {
        let args: Vec<&str> = args.split_whitespace().collect();
        self.ip(&args)
    }

    /// A command in one string, split on whitespace, run inside.
    pub fn runw(&self, cmd: &str) -> Result<String> {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        self.run(&args)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        Ok(self.run(&["sysctl", "-n", key])?.trim().to_owned())
    }

    /// A command that runs in this network namespace only, keeping the
    /// caller's mount namespace (so bpffs pins outside stay visible, unlike
    /// under `ip netns exec`, which remounts /sys).
    pub fn command(&self, program: &str) -> Result<Command> {
        let ns = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        let mut cmd = Command::new(program);
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns` stays open until the
        // Command is dropped because the closure owns it.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let _keep = &ns;
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a thread inside this namespace (sockets it opens live
    /// there).
    pub fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || -> Result<T> {
            let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: plain syscall on a valid fd; affects this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
    }
}

impl Netns {
    /// A handle on a namespace someone else owns (another thread's lab):
    /// dropping it leaves the namespace alone.
    pub fn borrowed(name: &str) -> Netns {
        Netns {
            name: name.to_owned(),
            owned: false,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = sh::output(&["ip", "netns", "del", &self.name]);
        }
    }
}
