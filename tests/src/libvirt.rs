//! A real libvirtd with real qemu guests in the lab's host namespace.
//!
//! libvirtd runs as `libvirtd -d` (no systemd), in a mount namespace of
//! its own where /etc/libvirt, /run/libvirt, /var/lib/libvirt and
//! /var/log/libvirt are directories of the lab: the machine's libvirt
//! configuration is never touched, and everything goes with the lab.
//! Its sockets are reached by path (`?socket=` in the URI).
//!
//! Guests boot Debian's cloud kernel directly, with an initramfs of
//! busybox (static) whose /init configures each NIC from the kernel
//! command line (`mvb.net=MAC,ADDR/LEN,...`, a NIC plugged later too) and
//! serves a shell on the second serial port: the tests run commands in a
//! guest without any network. Guests run on TCG (this machine's KVM
//! boots only special kernels): slow, so tests reuse them.
//!
//! Kernel and busybox come from Debian's archive (`apt-get download`, no
//! install), cached under ~/.cache/mvbridge/libvirt-guest; each lab gets
//! world-readable copies in its own /tmp directory, so the suite runs
//! from a checkout only root can enter.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::{Lab, UPLINK};
use crate::sh;

/// The virtio modules the guest loads to get its NICs, each after the
/// ones it depends on.
const MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
];

/// The guest's /init.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp/cfg
# No DAD (the lab has no duplicates); a random link-local address, so
# the guest's own IPv6 never looks like the host side of its macvtap.
for k in all default; do
  echo 0 > /proc/sys/net/ipv6/conf/$k/accept_dad
  echo 0 > /proc/sys/net/ipv6/conf/$k/accept_ra
done
echo 3 > /proc/sys/net/ipv6/conf/default/addr_gen_mode
for m in MODULES; do insmod /lib/modules/$m; done
ip link set lo up

# A shell on ttyS1: a command per line, its output, then @@rc=N.
agent() {
  stty -F /dev/ttyS1 raw -echo
  while true; do
    while IFS= read -r line; do
      sh -c "$line" 2>&1
      echo "@@rc=$?"
    done </dev/ttyS1 >/dev/ttyS1
    sleep 1
  done
}
agent &

# The first NIC as a stock install has it (main table); NICs plugged
# later answer from their own addresses through a table of their own.
configure() {
  dev=$1; shift
  n=$(ls /tmp/cfg | wc -l)
  t=$((100 + n))
  ip link set "$dev" up
  for a in "$@"; do
    ip addr add "$a" dev "$dev"
    if [ "$n" -gt 0 ]; then
      case "$a" in
        *:*) ip -6 rule add from "${a%/*}" table $t ;;
        *) ip rule add from "${a%/*}" table $t ;;
      esac
    fi
  done
  if [ "$n" -eq 0 ]; then
    case "$1" in
      */32) ip route add default via 203.0.113.129 dev "$dev" onlink ;;
      *) ip route add default via 203.0.113.129 dev "$dev" ;;
    esac
    ip -6 route add default via fe80::1 dev "$dev"
  else
    ip route add default via 203.0.113.129 dev "$dev" onlink table $t
    ip -6 route add default via fe80::1 dev "$dev" table $t
  fi
}

while true; do
  for d in /sys/class/net/*; do
    name=${d##*/}
    [ "$name" = lo ] && continue
    index=$(cat "$d/ifindex")
    [ -e /tmp/cfg/$index ] && continue
    mac=$(cat "$d/address")
    for arg in $(cat /proc/cmdline); do
      case "$arg" in
        mvb.net=$mac,*)
          configure "$name" $(echo "${arg#mvb.net=$mac,}" | tr , ' ')
          echo "$name" > /tmp/cfg/$index
          echo "mvb-guest: $name $mac configured" > /dev/console
          ;;
      esac
    done
  done
  sleep 1
done
"#;

/// A NIC of a guest: a bridge-mode macvtap on the uplink (`source` and
/// `mode` to say otherwise).
#[derive(Clone, Debug)]
pub struct NicSpec {
    pub mac: String,
    /// The guest's addresses on it, with prefix lengths.
    pub addrs: Vec<String>,
    pub source: String,
    pub mode: String,
}

impl NicSpec {
    pub fn new(mac: &str, addrs: &[&str]) -> NicSpec {
        NicSpec {
            mac: mac.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            source: UPLINK.into(),
            mode: "bridge".into(),
        }
    }

    /// The `<interface>` element, for the domain or `attach-device`.
    pub fn xml(&self) -> String {
        format!(
            "<interface type='direct'><mac address='{}'/><source dev='{}' mode='{}'/><model type='virtio'/></interface>",
            self.mac, self.source, self.mode
        )
    }
}

/// A guest: its NICs at boot, NICs it will get later (configured when
/// they come), and what its `<metadata>` holds.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub nics: Vec<NicSpec>,
    pub later: Vec<NicSpec>,
    pub metadata: String,
}

/// mvbridge's metadata for a guest: each (MAC, addresses) an interface.
pub fn metadata(interfaces: &[(&str, &[&str])]) -> String {
    let mut s = String::from("<vm>");
    for (mac, addrs) in interfaces {
        s.push_str(&format!("<interface mac='{mac}'>"));
        for a in *addrs {
            s.push_str(&format!("<address>{a}</address>"));
        }
        s.push_str("</interface>");
    }
    s.push_str("</vm>");
    s
}

/// Kernel and initramfs for the guests, world-readable in the lab.
struct GuestFiles {
    kernel: PathBuf,
    initrd: PathBuf,
}

pub struct Libvirtd {
    /// The lab's libvirt directory.
    pub root: PathBuf,
    netns: String,
    pid: Option<i32>,
    files: GuestFiles,
    /// Domains defined here, destroyed and undefined on drop.
    domains: Vec<String>,
}

/// The namespace URI and key of mvbridge's metadata.
pub const NAMESPACE: &str = "urn:mvbridge:vm:1";

impl Libvirtd {
    /// Starts libvirtd in `lab`'s host namespace and waits until it
    /// answers.
    pub fn start(lab: &Lab) -> Result<Libvirtd> {
        let mut d = Libvirtd::prepare(lab)?;
        d.launch()?;
        Ok(d)
    }

    /// Everything [`Libvirtd::start`] does but starting it (see
    /// [`Libvirtd::launch`]).
    pub fn prepare(lab: &Lab) -> Result<Libvirtd> {
        ensure_qemu_user()?;
        let cache = cache_dir();
        std::fs::create_dir_all(&cache)?;
        let root = lab.dir.join("libvirt");
        for d in ["etc", "run", "lib", "log", "guests"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        // qemu (as root here, but as libvirt-qemu on a stock libvirt) reads
        // the guest files: world-readable, under a world-searchable path.
        for dir in [&lab.dir, &root, &root.join("guests")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let files = guest_files(&cache, &root.join("guests"))?;
        std::fs::write(
            root.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\n\
             cgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = \"file\"\n",
        )?;
        std::fs::write(
            root.join("etc/libvirtd.conf"),
            format!(
                "auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n\
                 log_outputs = \"3:file:{}\"\n",
                root.join("log/libvirtd.log").display()
            ),
        )?;
        Ok(Libvirtd {
            netns: lab.host.name.clone(),
            pid: None,
            files,
            domains: Vec::new(),
            root,
        })
    }

    /// Starts the prepared libvirtd and waits until it answers.
    pub fn launch(&mut self) -> Result<()> {
        let r = self.root.display().to_string();
        // The QEMU capabilities cache is kept across labs: probing qemu
        // costs seconds on TCG.
        let caps = cache_dir().join("libvirt-cache");
        std::fs::create_dir_all(&caps)?;
        let script = format!(
            "set -e\n\
             for d in /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mkdir -p $d; done\n\
             mount --bind {r}/etc /etc/libvirt\n\
             mount --bind {r}/run /run/libvirt\n\
             mount --bind {r}/lib /var/lib/libvirt\n\
             mount --bind {caps} /var/cache/libvirt\n\
             mount --bind {r}/log /var/log/libvirt\n\
             exec ip netns exec {ns} /usr/sbin/libvirtd -d -p {r}/run/libvirtd.pid -f {r}/etc/libvirtd.conf\n",
            caps = caps.display(),
            ns = self.netns,
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .context("starting libvirtd (is util-linux's unshare there?)")?;
        if !out.status.success() {
            bail!(
                "libvirtd did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        let pidfile = self.root.join("run/libvirtd.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.pid.is_none() {
                self.pid = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
            }
            if self.pid.is_some() && self.virsh(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("libvirtd did not answer within 60 s\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URI mvbridge is given (read-only socket).
    pub fn ro_uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.root.join("run/libvirt-sock-ro").display()
        )
    }

    fn rw_uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.root.join("run/libvirt-sock").display()
        )
    }

    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let uri = self.rw_uri();
        let mut full = vec!["virsh", "-q", "-c", uri.as_str()];
        full.extend_from_slice(args);
        sh::run(&full)
    }

    /// The last lines of libvirtd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("log/libvirtd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A domain's XML for `spec`.
    pub fn domain_xml(&self, spec: &GuestSpec) -> String {
        let nets: Vec<String> = spec
            .nics
            .iter()
            .chain(&spec.later)
            .map(|n| format!("mvb.net={},{}", n.mac, n.addrs.join(",")))
            .collect();
        let dir = self.root.join("guests");
        let nics: String = spec.nics.iter().map(NicSpec::xml).collect();
        format!(
            "<domain type='qemu'>\
               <name>{name}</name><memory unit='MiB'>160</memory><vcpu>1</vcpu>\
               {metadata}\
               <os><type arch='x86_64' machine='pc'>hvm</type>\
                 <kernel>{kernel}</kernel><initrd>{initrd}</initrd>\
                 <cmdline>console=ttyS0 quiet panic=-1 {nets}</cmdline></os>\
               <features><acpi/></features>\
               <on_reboot>restart</on_reboot>\
               <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{nics}\
                 <serial type='file'><source path='{console}'/><target port='0'/></serial>\
                 <serial type='unix'><source mode='bind' path='{agent}'/><target port='1'/></serial>\
                 <memballoon model='none'/>\
               </devices></domain>",
            name = spec.name,
            kernel = self.files.kernel.display(),
            initrd = self.files.initrd.display(),
            nets = nets.join(" "),
            console = dir.join(format!("{}.console", spec.name)).display(),
            agent = self.agent_path(&spec.name).display(),
            // In a domain's XML the metadata carries its namespace (here
            // as the default one, so its children are in it too).
            metadata = if spec.metadata.is_empty() {
                String::new()
            } else {
                format!(
                    "<metadata>{}</metadata>",
                    spec.metadata
                        .replacen("<vm>", &format!("<vm xmlns='{NAMESPACE}'>"), 1)
                )
            },
        )
    }

    /// Defines a guest (persistent, not started).
    pub fn define(&mut self, spec: &GuestSpec) -> Result<()> {
        let path = self.root.join(format!("{}.xml", spec.name));
        std::fs::write(&path, self.domain_xml(spec))?;
        self.virsh(&["define", &path.display().to_string()])?;
        if !self.domains.contains(&spec.name) {
            self.domains.push(spec.name.clone());
        }
        Ok(())
    }

    /// Sets a domain's mvbridge metadata, live and in its config, as an
    /// admin would with `virsh metadata`.
    pub fn set_metadata(&self, domain: &str, xml: &str) -> Result<()> {
        let mut args = vec![
            "metadata", domain, NAMESPACE, "--key", "mvbridge", "--config",
        ];
        if self.is_running(domain)? {
            args.push("--live");
        }
        args.extend(["--set", xml]);
        self.virsh(&args).map(|_| ())
    }

    pub fn is_running(&self, domain: &str) -> Result<bool> {
        Ok(self.virsh(&["domstate", domain])?.trim() == "running")
    }

    /// The macvtap a running domain's NIC got.
    pub fn macvtap_of(&self, domain: &str, mac: &str) -> Result<Option<String>> {
        let out = self.virsh(&["domiflist", domain])?;
        Ok(out
            .lines()
            .find(|l| l.contains(mac))
            .and_then(|l| l.split_whitespace().next())
            .filter(|n| *n != "-")
            .map(str::to_owned))
    }

    fn agent_path(&self, domain: &str) -> PathBuf {
        self.root.join("guests").join(format!("{domain}.agent"))
    }

    /// Runs `cmd` in the guest's shell; its output and whether it
    /// succeeded. `None` while the guest's shell is not up.
    pub fn guest(&self, domain: &str, cmd: &str, timeout: Duration) -> Option<(bool, String)> {
        let mut s = UnixStream::connect(self.agent_path(domain)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(format!("{cmd}\n").as_bytes()).ok()?;
        let mut out = String::new();
        let mut reader = BufReader::new(s);
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            if let Some(rc) = line.trim().strip_prefix("@@rc=") {
                return Some((rc == "0", out));
            }
            out.push_str(&line);
        }
        None
    }

    /// Waits until the guest's NIC with `mac` is configured (its /init
    /// says so); returns how long that took.
    pub fn wait_guest_nic(&self, domain: &str, mac: &str, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        // The MACs of the NICs the guest's /init configured.
        let cmd = "for f in /tmp/cfg/*; do cat /sys/class/net/$(cat $f)/address; done";
        loop {
            if let Some((true, out)) = self.guest(domain, cmd, Duration::from_secs(10))
                && out.lines().any(|l| l.trim() == mac)
            {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "guest {domain}'s NIC {mac} not configured within {timeout:?}; console:\n{}",
                    self.console(domain)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// How many times the guest's init has configured its NIC `mac`
    /// (once per boot, and per plug), from its console.
    pub fn configured(&self, domain: &str, mac: &str) -> usize {
        std::fs::read_to_string(self.root.join("guests").join(format!("{domain}.console")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("mvb-guest: ") && l.contains(&format!(" {mac} configured")))
            .count()
    }

    /// The guest's serial console so far.
    pub fn console(&self, domain: &str) -> String {
        let text =
            std::fs::read_to_string(self.root.join("guests").join(format!("{domain}.console")))
                .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops libvirtd (SIGTERM, waited for); its guests keep running.
    pub fn stop(&mut self) -> Result<()> {
        let Some(pid) = self.pid.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on the libvirtd this lab started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.root.join("run/libvirtd.pid"));
        Ok(())
    }

    /// Starts libvirtd again (it takes its running guests back).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// The pids of this lab's qemu processes, from libvirt's pid files.
    fn qemu_pids(&self) -> Vec<i32> {
        std::fs::read_dir(self.root.join("run/qemu"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if self.pid.is_some() {
            for d in self.domains.clone() {
                let _ = self.virsh(&["destroy", &d]);
                let _ = self.virsh(&["undefine", &d]);
            }
        }
        let _ = self.stop();
        // Guests libvirtd no longer knew (stopped meanwhile).
        for pid in self.qemu_pids() {
            // SAFETY: kill(2) on a qemu this lab's libvirtd started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Debian's qemu driver looks up its default user and group at start,
/// whatever qemu.conf says: they must exist (libvirt-daemon-system makes
/// them; the lab does without that package and its services).
fn ensure_qemu_user() -> Result<()> {
    if sh::output(&["getent", "passwd", "libvirt-qemu"])?
        .status
        .success()
    {
        return Ok(());
    }
    sh::run(&[
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "libvirt-qemu",
    ])?;
    Ok(())
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("mvbridge/libvirt-guest")
}

/// Downloads a package into the cache and unpacks it (once).
fn unpacked(cache: &Path, package: &str) -> Result<PathBuf> {
    let dir = cache.join(package);
    if dir.join(".done").exists() {
        return Ok(dir);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&debs)
            .output()
    };
    let mut out = download()?;
    if !out.status.success() {
        sh::run(&["apt-get", "update", "-q"])?;
        out = download()?;
    }
    if !out.status.success() {
        bail!(
            "apt-get download {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("no .deb for {package} in {}", debs.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    sh::run(&[
        "dpkg",
        "-x",
        &deb.display().to_string(),
        &dir.display().to_string(),
    ])?;
    std::fs::write(dir.join(".done"), "")?;
    Ok(dir)
}

/// The kernel package the cloud meta package depends on now.
fn kernel_package() -> Result<String> {
    let out = sh::run(&["apt-cache", "depends", "linux-image-cloud-amd64"])?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_owned)
        .context("linux-image-cloud-amd64 depends on no cloud kernel (apt-get update?)")
}

/// Kernel and initramfs in `into`, made from the cached packages.
fn guest_files(cache: &Path, into: &Path) -> Result<GuestFiles> {
    let kernel_pkg = match kernel_package() {
        Ok(p) => p,
        Err(_) => {
            sh::run(&["apt-get", "update", "-q"])?;
            kernel_package()?
        }
    };
    let kdir = unpacked(cache, &kernel_pkg)?;
    let busybox = unpacked(cache, "busybox-static")?.join("bin/busybox");
    let release = std::fs::read_dir(kdir.join("lib/modules"))?
        .next()
        .context("the kernel package has no modules")??
        .file_name();
    let modules = kdir.join("lib/modules").join(&release);
    let vmlinuz = kdir.join(format!("boot/vmlinuz-{}", release.to_string_lossy()));
    let kernel = into.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kernel).with_context(|| format!("copying {}", vmlinuz.display()))?;
    let initrd = into.join("initrd.cpio");
    let names: Vec<&str> = MODULES
        .iter()
        .map(|m| m.rsplit('/').next().unwrap_or(m))
        .collect();
    let init = INIT.replace(
        "for m in MODULES;",
        &format!("for m in {};", names.join(" ")),
    );
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.console();
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("bin/busybox", 0o755, &std::fs::read(&busybox)?);
    for (m, name) in MODULES.iter().zip(&names) {
        let path = modules.join(m);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &bytes);
    }
    std::fs::write(&initrd, cpio.finish())?;
    for f in [&kernel, &initrd] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(GuestFiles { kernel, initrd })
}

/// An uncompressed initramfs ("newc" cpio), which the kernel takes as
/// it is.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    /// /dev/console, so /init has its stdin and stdout before devtmpfs.
    fn console(&mut self) {
        self.entry("dev/console", 0o020_600, (5, 1), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
