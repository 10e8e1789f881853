//! The seed's hosting setup, rebuilt in network namespaces:
//!
//! ```text
//!  inet (198.51.100.10) --- gw (198.51.100.1 | 203.0.113.129/26)
//!                                     | wire0
//!                                     | (the uplink's cable: a veth)
//!                                     | enp9s0
//!  host 203.0.113.157/32, default via .129 on-link, NAT bridge virbr0
//!   |-- virbr0 192.168.122.1/24 -- natvm 192.168.122.10 (masqueraded)
//!   |-- macvtap0 (bridge) -- guest a: 203.0.113.161/26 via .129
//!   |-- mvt-web  (bridge, created by mvbridge) -- guest b: .162/26
//!   `-- macvtap2 (bridge) -- guest c: 203.0.113.163/32, default via .129 on-link
//! ```
//! Guests are played by `mvb-guest` on the macvtap's tap device, so the
//! real macvtap datapath is exercised. Dropping the lab removes it all.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::guest::Guest;
use crate::netns::Netns;
use crate::sh;
use crate::wire::{Mac, parse_mac};

pub const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 129);
pub const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 157);
pub const INET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const NAT_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
pub const NAT_VM: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 10);
pub const UPLINK: &str = "enp9s0";
pub const WIRE: &str = "wire0";
pub const SHIM: &str = "mvb0";

/// A public VM of the lab.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub key: &'static str,
    pub interface: &'static str,
    pub mac: &'static str,
    pub addr: Ipv4Addr,
    /// 26: the installer's on-link subnet; 32: the old /32 + on-link gateway.
    pub prefix: u8,
    /// True: mvbridge creates the macvtap (`create = true`); false: the
    /// lab creates it first, as libvirt does, and mvbridge adopts it.
    pub created_by_mvbridge: bool,
}

pub fn seed_vms() -> Vec<VmSpec> {
    vec![
        VmSpec {
            key: "a",
            interface: "macvtap0",
            mac: "52:54:00:00:00:a1",
            addr: Ipv4Addr::new(203, 0, 113, 161),
            prefix: 26,
            created_by_mvbridge: false,
        },
        VmSpec {
            key: "b",
            interface: "mvt-web",
            mac: "52:54:00:00:00:b2",
            addr: Ipv4Addr::new(203, 0, 113, 162),
            prefix: 26,
            created_by_mvbridge: true,
        },
        VmSpec {
            key: "c",
            interface: "macvtap2",
            mac: "52:54:00:00:00:c3",
            addr: Ipv4Addr::new(203, 0, 113, 163),
            prefix: 32,
            created_by_mvbridge: false,
        },
    ]
}

pub struct Lab {
    pub id: String,
    pub dir: PathBuf,
    pub gw: Netns,
    pub inet: Netns,
    pub host: Netns,
    pub natvm: Netns,
    pub specs: Vec<VmSpec>,
    pub guests: Vec<Guest>,
    /// Guest namespaces, kept apart from the emulators so a VM can be
    /// stopped and started again.
    pub guest_ns: Vec<Netns>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Builds the seed's topology with guests a and c running; guest b's
    /// macvtap only appears once mvbridge creates it (see `start_guest`).
    pub fn seed() -> Result<Lab> {
        Lab::build(seed_vms())
    }

    pub fn build(specs: Vec<VmSpec>) -> Result<Lab> {
        sweep_stale_labs();
        let id = format!(
            "mvbt-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = PathBuf::from(format!("/tmp/{id}"));
        std::fs::create_dir_all(&dir)?;
        let ns = |role: &str| Netns::new(&format!("{id}-{role}"));
        let mut lab = Lab {
            gw: ns("gw")?,
            inet: ns("inet")?,
            host: ns("host")?,
            natvm: ns("natvm")?,
            guest_ns: Vec::new(),
            guests: Vec::new(),
            specs: specs.clone(),
            dir,
            id: id.clone(),
        };
        for spec in &specs {
            lab.guest_ns.push(ns(&format!("vm-{}", spec.key))?);
        }
        lab.wire_gateway()?;
        lab.wire_host()?;
        for spec in &specs {
            if !spec.created_by_mvbridge {
                lab.host.ip(&[
                    "link",
                    "add",
                    "link",
                    UPLINK,
                    "name",
                    spec.interface,
                    "address",
                    spec.mac,
                    "type",
                    "macvtap",
                    "mode",
                    "bridge",
                ])?;
                lab.host.ip(&["link", "set", spec.interface, "up"])?;
                lab.start_guest(spec.key)?;
            }
        }
        Ok(lab)
    }

    fn wire_gateway(&self) -> Result<()> {
        let (gw, inet) = (&self.gw, &self.inet);
        gw.ip(&[
            "link", "add", "inet0", "type", "veth", "peer", "name", "eth0", "netns", &inet.name,
        ])?;
        gw.ip(&["addr", "add", "198.51.100.1/24", "dev", "inet0"])?;
        gw.ip(&["link", "set", "inet0", "up"])?;
        inet.ip(&["addr", "add", "198.51.100.10/24", "dev", "eth0"])?;
        inet.ip(&["link", "set", "eth0", "up"])?;
        inet.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        gw.ip(&[
            "link",
            "add",
            WIRE,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK,
            "netns",
            &self.host.name,
        ])?;
        gw.ip(&["addr", "add", "203.0.113.129/26", "dev", WIRE])?;
        gw.ip(&["link", "set", WIRE, "up"])?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        // A hoster's router does not redirect customers to each other;
        // redirects would also leave cached routes in the guests.
        gw.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        gw.sysctl(&format!("net.ipv4.conf.{WIRE}.send_redirects"), "0")?;
        Ok(())
    }

    fn wire_host(&self) -> Result<()> {
        let h = &self.host;
        h.ip(&["addr", "add", "203.0.113.157/32", "dev", UPLINK])?;
        h.ip(&["link", "set", UPLINK, "up"])?;
        h.ip(&[
            "route",
            "add",
            "default",
            "via",
            "203.0.113.129",
            "dev",
            UPLINK,
            "onlink",
        ])?;
        h.sysctl("net.ipv4.ip_forward", "1")?;
        // The NAT network, as libvirt's "default" network builds it.
        h.ip(&["link", "add", "virbr0", "type", "bridge"])?;
        h.ip(&["addr", "add", "192.168.122.1/24", "dev", "virbr0"])?;
        h.ip(&["link", "set", "virbr0", "up"])?;
        h.ip(&[
            "link",
            "add",
            "vnet0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.natvm.name,
        ])?;
        h.ip(&["link", "set", "vnet0", "master", "virbr0", "up"])?;
        h.run(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "192.168.122.0/24",
            "!",
            "-d",
            "192.168.122.0/24",
            "-o",
            UPLINK,
            "-j",
            "MASQUERADE",
        ])?;
        let n = &self.natvm;
        n.ip(&["addr", "add", "192.168.122.10/24", "dev", "eth0"])?;
        n.ip(&["link", "set", "eth0", "up"])?;
        n.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
        Ok(())
    }

    pub fn spec(&self, key: &str) -> &VmSpec {
        self.specs
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("no VM {key} in this lab"))
    }

    pub fn guest(&self, key: &str) -> &Netns {
        let i = self
            .specs
            .iter()
            .position(|s| s.key == key)
            .unwrap_or_else(|| panic!("no VM {key} in this lab"));
        &self.guest_ns[i]
    }

    /// Starts the emulator for VM `key` on its macvtap (which must exist)
    /// and configures the guest's stack as its stock config would.
    pub fn start_guest(&mut self, key: &str) -> Result<()> {
        let spec = self.spec(key).clone();
        let ns = self.guest(key);
        let guest = Guest::start(&self.host, &spec, ns, &self.dir)?;
        ns.ip(&["link", "set", "eth0", "address", spec.mac])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/{}", spec.addr, spec.prefix),
            "dev",
            "eth0",
        ])?;
        if spec.prefix == 32 {
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                "203.0.113.129",
                "dev",
                "eth0",
                "onlink",
            ])?;
        } else {
            ns.ip(&["route", "add", "default", "via", "203.0.113.129"])?;
        }
        self.guests.retain(|g| g.key != key);
        self.guests.push(guest);
        Ok(())
    }

    /// Stops VM `key`'s emulator and removes its TAP (the VM shuts down).
    pub fn stop_guest(&mut self, key: &str) {
        self.guests.retain(|g| g.key != key);
        let _ = self.guest(key).ip(&["link", "del", "eth0"]);
    }

    /// The MAC of a link in the host namespace.
    pub fn host_mac(&self, ifname: &str) -> Result<Mac> {
        let out = self
            .host
            .run(&["cat", &format!("/sys/class/net/{ifname}/address")])?;
        parse_mac(&out)
    }

    pub fn uplink_mac(&self) -> Result<Mac> {
        self.host_mac(UPLINK)
    }

    /// Every address a local endpoint can use as a source or destination.
    pub fn local_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![HOST, NAT_GW, NAT_VM];
        v.extend(self.specs.iter().map(|s| s.addr));
        v
    }

    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// mvbridge's config for this lab.
    pub fn config(&self) -> String {
        let mut c = format!(
            "uplink = \"{UPLINK}\"\nbpffs = \"{}\"\n\n[shim]\nname = \"{SHIM}\"\n",
            self.bpffs().display()
        );
        for s in &self.specs {
            c.push_str(&format!(
                "\n[[vm]]\nname = \"{}\"\ninterface = \"{}\"\naddresses = [\"{}\"]\n",
                s.key, s.interface, s.addr
            ));
            if s.created_by_mvbridge {
                c.push_str(&format!("create = true\nmac = \"{}\"\n", s.mac));
            }
        }
        c
    }

    pub fn write_config(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.guests.clear();
        // Unmounting bpffs drops every pin in it: hooks detach, maps go.
        unmount_tree(&self.dir);
        // Deleting the namespaces deletes every link in them.
        self.guest_ns.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unmount_tree(dir: &std::path::Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = sh::output(&["umount", "-l", t]);
    }
}

/// Removes namespaces and directories left by test processes that died
/// without running their destructors (SIGKILL, power loss).
fn sweep_stale_labs() {
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = sh::run(&["ip", "netns", "list"]) {
        for line in out.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(rest) = name.strip_prefix("mvbt-")
                && let Some(pid) = rest.split('-').next()
                && !alive(pid)
            {
                let _ = sh::output(&["ip", "netns", "del", name]);
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("mvbt-")
                && let Some(pid) = rest.split('-').next()
                && !alive(pid)
            {
                unmount_tree(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
