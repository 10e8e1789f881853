//! A running guest emulator (`mvb-guest`) for one VM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::lab::VmSpec;
use crate::netns::Netns;

pub struct Guest {
    pub key: &'static str,
    child: Child,
}

impl Guest {
    /// Opens the guest side of `spec.interface` (a macvtap in `host`) and
    /// connects it to a TAP named eth0 in `guest`.
    ///
    /// The tap device is reached through a private device node made from
    /// the numbers sysfs gives: `/dev/tapN` names collide when several
    /// namespaces hold a macvtap with the same ifindex.
    pub fn start(host: &Netns, spec: &VmSpec, guest: &Netns, dir: &Path) -> Result<Guest> {
        Guest::start_with(host, spec, guest, dir, false)
    }

    pub fn start_with(
        host: &Netns,
        spec: &VmSpec,
        guest: &Netns,
        dir: &Path,
        vnet_hdr: bool,
    ) -> Result<Guest> {
        let ifname = spec.interface.as_str();
        let index = host.run(&["cat", &format!("/sys/class/net/{ifname}/ifindex")])?;
        let numbers = host.run(&[
            "cat",
            &format!("/sys/class/net/{ifname}/tap{}/dev", index.trim()),
        ])?;
        let (major, minor) = numbers
            .trim()
            .split_once(':')
            .with_context(|| format!("odd device numbers {numbers:?}"))?;
        // In /dev, not in the lab's directory: /tmp is often a tmpfs
        // mounted nodev (Debian 13's is), where a device node cannot be
        // opened. The node goes as soon as the emulator holds it open.
        let lab = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("the lab's directory has no name")?;
        let node = std::path::PathBuf::from(format!("/dev/{lab}-tap-{ifname}"));
        let _ = std::fs::remove_file(&node);
        let c_node = std::ffi::CString::new(node.display().to_string())?;
        let dev = libc::makedev(major.parse()?, minor.parse()?);
        // SAFETY: valid C string; creates a device node in our own dir.
        if unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o600, dev) } != 0 {
            return Err(std::io::Error::last_os_error()).context("mknod for the tap device");
        }
        let mut cmd = Command::new(bins::path("mvb-guest")?);
        cmd.args(["--dev", &node.display().to_string(), "--netns", &guest.name]);
        if vnet_hdr {
            cmd.arg("--vnet-hdr");
        }
        let child = spawn_until_ready(cmd, ifname);
        std::fs::remove_file(&node).with_context(|| format!("removing {}", node.display()))?;
        Ok(Guest {
            key: spec.key,
            child: child?,
        })
    }
}

/// Spawns `mvb-guest` and waits for its "ready": its side of the link is
/// open and eth0 exists in the guest's namespace. `link` names what it
/// serves, for the error.
pub fn spawn_until_ready(mut cmd: Command, link: &str) -> Result<Child> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting mvb-guest")?;
    let stdout = child.stdout.take().context("mvb-guest stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("mvb-guest for {link} did not start: {line:?}");
    }
    Ok(child)
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
