//! A hosted server's setup, rebuilt in network namespaces:
//!
//! ```text
//!  inet 198.51.100.10, 2001:db8:ffff::10
//!   |
//!  gw 203.0.113.129/26, 2001:db8:0:1::1/64 and fe80::1 on wire0
//!   | wire0 (the uplink's cable: a veth)
//!   | enp9s0
//!  host 203.0.113.157/32 default via .129 on-link; 2001:db8:0:1::2/64 default via fe80::1
//!   |-- virbr0 192.168.122.1/24, fd00:122::1/64 -- natvm .10 (IPv4 masqueraded)
//!   |-- macvtap0 (bridge) -- guest a: 203.0.113.161/26, 2001:db8:0:1::161/64
//!   |-- mvt-web  (bridge, created by mvbridge) -- guest b: .162/26, ::162/64
//!   `-- macvtap2 (bridge) -- guest c: 203.0.113.163/32 and ::163/128, on-link gateways
//! ```
//! Every guest's IPv6 default route is `via fe80::1`, as hosters document.
//! Guests are played by `mvb-guest` on the macvtap's tap device, so the
//! real macvtap datapath is exercised. Dropping the lab removes it all.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::guest::Guest;
use crate::netns::Netns;
use crate::sh;
use crate::wire::{Mac, parse_mac};

/// An ifindex past any link the lab's host namespace makes, for links
/// made straight inside a guest's namespace.
pub const FREE_IFINDEX: u32 = 900;

pub const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 129);
pub const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 157);
pub const INET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const NAT_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
pub const NAT_VM: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 10);
pub const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
pub const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);
pub const GW_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const INET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10);
pub const NAT_GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 1);
pub const NAT_VM6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x10);
pub const UPLINK: &str = "enp9s0";
pub const WIRE: &str = "wire0";
pub const SHIM: &str = "mvb0";

/// A public VM of the lab.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub key: &'static str,
    pub interface: String,
    pub mac: &'static str,
    pub addr: Ipv4Addr,
    /// 26: the installer's on-link subnet; 32: the old /32 + on-link gateway.
    pub prefix: u8,
    pub addr6: Ipv6Addr,
    /// 64: on-link /64; 128: a single address. Both route via fe80::1.
    pub prefix6: u8,
    /// True: mvbridge creates the macvtap (`create = true`); false: the
    /// lab creates it first, as libvirt does, and mvbridge adopts it.
    pub created_by_mvbridge: bool,
    /// A kernel guest: a macvlan moved into the guest's namespace, whose
    /// own stack is the guest (no tap, no emulator). mvbridge reaches it
    /// through the shim (`netns` in its config).
    pub kernel: bool,
}

impl VmSpec {
    /// A kernel guest (a container's macvlan, reached through the shim) at
    /// 203.0.113.`last`/`prefix` and 2001:db8:0:1::(0x100 + `last`)/`prefix6`.
    pub fn kernel_guest(
        key: &'static str,
        mac: &'static str,
        last: u8,
        prefix: u8,
        prefix6: u8,
    ) -> VmSpec {
        VmSpec {
            key,
            interface: "eth0".into(),
            mac,
            addr: Ipv4Addr::new(203, 0, 113, last),
            prefix,
            addr6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100 + u16::from(last)),
            prefix6,
            created_by_mvbridge: false,
            kernel: true,
        }
    }
}

pub fn public_vms() -> Vec<VmSpec> {
    vec![
        VmSpec {
            key: "a",
            interface: "macvtap0".into(),
            mac: "52:54:00:00:00:a1",
            addr: Ipv4Addr::new(203, 0, 113, 161),
            prefix: 26,
            addr6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x161),
            prefix6: 64,
            created_by_mvbridge: false,
            kernel: false,
        },
        VmSpec {
            key: "b",
            interface: "mvt-web".into(),
            mac: "52:54:00:00:00:b2",
            addr: Ipv4Addr::new(203, 0, 113, 162),
            prefix: 26,
            addr6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x162),
            prefix6: 64,
            created_by_mvbridge: true,
            kernel: false,
        },
        VmSpec {
            key: "c",
            interface: "macvtap2".into(),
            mac: "52:54:00:00:00:c3",
            addr: Ipv4Addr::new(203, 0, 113, 163),
            prefix: 32,
            addr6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x163),
            prefix6: 128,
            created_by_mvbridge: false,
            kernel: false,
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
    /// Builds a hosted server's topology with guests a and c running; guest b's
    /// macvtap only appears once mvbridge creates it (see `start_guest`).
    pub fn hosted() -> Result<Lab> {
        Lab::build(public_vms())
    }

    pub fn build(specs: Vec<VmSpec>) -> Result<Lab> {
        hold_the_lab_lock()?;
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
        // DAD would make every fresh address wait a second or two; the lab
        // has no duplicates to detect.
        for n in [&lab.gw, &lab.inet, &lab.host, &lab.natvm]
            .into_iter()
            .chain(lab.guest_ns.iter())
        {
            n.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            n.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        lab.wire_gateway()?;
        lab.wire_host()?;
        for spec in &specs {
            if !spec.created_by_mvbridge {
                lab.host.ipw(&format!(
                    "link add link {UPLINK} name {} address {} type macvtap mode bridge",
                    spec.interface, spec.mac
                ))?;
                lab.host.ipw(&format!("link set {} up", spec.interface))?;
                lab.start_guest(spec.key)?;
            }
        }
        Ok(lab)
    }

    fn wire_gateway(&self) -> Result<()> {
        let (gw, inet) = (&self.gw, &self.inet);
        gw.ipw(&format!(
            "link add inet0 type veth peer name eth0 netns {}",
            inet.name
        ))?;
        gw.ipw("addr add 198.51.100.1/24 dev inet0")?;
        gw.ipw("addr add 2001:db8:ffff::1/64 dev inet0")?;
        gw.ipw("link set inet0 up")?;
        inet.ipw("addr add 198.51.100.10/24 dev eth0")?;
        inet.ipw("addr add 2001:db8:ffff::10/64 dev eth0")?;
        inet.ipw("link set eth0 up")?;
        inet.ipw("route add default via 198.51.100.1")?;
        inet.ipw("-6 route add default via 2001:db8:ffff::1")?;

        gw.ipw(&format!(
            "link add {WIRE} type veth peer name {UPLINK} netns {}",
            self.host.name
        ))?;
        gw.ipw(&format!("addr add 203.0.113.129/26 dev {WIRE}"))?;
        gw.ipw(&format!("addr add 2001:db8:0:1::1/64 dev {WIRE}"))?;
        gw.ipw(&format!("addr add fe80::1/64 dev {WIRE}"))?;
        gw.ipw(&format!("link set {WIRE} up"))?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // A hoster's router does not redirect customers to each other;
        // redirects would also leave cached routes in the guests.
        gw.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        gw.sysctl(&format!("net.ipv4.conf.{WIRE}.send_redirects"), "0")?;
        Ok(())
    }

    fn wire_host(&self) -> Result<()> {
        let h = &self.host;
        h.sysctl("net.ipv4.ip_forward", "1")?;
        h.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        h.ipw(&format!("addr add 203.0.113.157/32 dev {UPLINK}"))?;
        h.ipw(&format!("addr add 2001:db8:0:1::2/64 dev {UPLINK}"))?;
        h.ipw(&format!("link set {UPLINK} up"))?;
        h.ipw(&format!(
            "route add default via 203.0.113.129 dev {UPLINK} onlink"
        ))?;
        h.ipw(&format!("-6 route add default via fe80::1 dev {UPLINK}"))?;

        // The NAT network, as libvirt's "default" network builds it (plus a
        // private IPv6 prefix, which VMs must not reach either).
        h.ipw("link add virbr0 type bridge")?;
        h.ipw("addr add 192.168.122.1/24 dev virbr0")?;
        h.ipw("addr add fd00:122::1/64 dev virbr0")?;
        h.ipw("link set virbr0 up")?;
        h.ipw(&format!(
            "link add vnet0 type veth peer name eth0 netns {}",
            self.natvm.name
        ))?;
        h.ipw("link set vnet0 master virbr0 up")?;
        h.runw(&format!(
            "iptables -t nat -A POSTROUTING -s 192.168.122.0/24 ! -d 192.168.122.0/24 -o {UPLINK} -j MASQUERADE"
        ))?;
        let n = &self.natvm;
        n.ipw("addr add 192.168.122.10/24 dev eth0")?;
        n.ipw("addr add fd00:122::10/64 dev eth0")?;
        n.ipw("link set eth0 up")?;
        n.ipw("route add default via 192.168.122.1")?;
        n.ipw("-6 route add default via fd00:122::1")?;
        // The kernel announces the bridge's operstate (linkwatch) up to a
        // second after its port came up: a host notification, and a daemon
        // pass, that would come in the middle of a test.
        crate::systemd::eventually("virbr0 up", std::time::Duration::from_secs(5), || {
            h.ip(&["-o", "link", "show", "virbr0"])
                .is_ok_and(|l| l.contains("state UP"))
        })?;
        Ok(())
    }

    /// The neighbour entries the host may rightly hold for the lab's VMs
    /// (each address a VM owns, its EUI-64 link-local included, with its
    /// own MAC), as `RoutingState` lists them: a guest refreshing its
    /// neighbours legitimately adds these at any time.
    pub fn true_neighbours(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for s in &self.specs {
            let Ok(mac) = parse_mac(s.mac) else { continue };
            let ll = Ipv6Addr::from(mvbridge_common::link_local::eui64(&mac));
            for ip in [s.addr.to_string(), s.addr6.to_string(), ll.to_string()] {
                out.insert(format!("{ip} {UPLINK} {}", s.mac));
            }
        }
        out
    }

    pub fn spec(&self, key: &str) -> &VmSpec {
        &self.specs[spec_index(&self.specs, key)]
    }

    pub fn guest(&self, key: &str) -> &Netns {
        &self.guest_ns[spec_index(&self.specs, key)]
    }

    /// Starts the emulator for VM `key` on its macvtap (which must exist)
    /// and configures the guest's stack as its stock config would.
    pub fn start_guest(&mut self, key: &str) -> Result<()> {
        self.start_guest_with(key, false)
    }

    /// `start_guest`, with virtio-net headers and offloads (TSO, checksum)
    /// on both ends when `vnet_hdr`, as qemu runs a VM.
    pub fn start_guest_with(&mut self, key: &str, vnet_hdr: bool) -> Result<()> {
        let spec = self.spec(key).clone();
        let ns = self.guest(key);
        let guest = boot_guest(&self.host, &spec, ns, &self.dir, vnet_hdr)?;
        replace_guest(&mut self.guests, guest);
        Ok(())
    }

    /// Adds a kernel guest: a bridge-mode macvlan on the uplink, moved into
    /// a namespace of its own and named eth0 there, configured as `spec`
    /// says (its `interface` becomes "eth0").
    pub fn add_kernel_guest(&mut self, mut spec: VmSpec) -> Result<()> {
        spec.kernel = true;
        spec.interface = "eth0".into();
        let ns = Netns::new(&format!("{}-vm-{}", self.id, spec.key))?;
        for key in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
        }
        self.specs.push(spec);
        self.guest_ns.push(ns);
        self.plug_kernel_guest(self.specs.last().expect("pushed").key)
    }

    /// Gives kernel guest `key` its link: a bridge-mode macvlan with its
    /// MAC made on the uplink, moved into its namespace and named eth0
    /// there (what Docker's macvlan driver does), configured as the
    /// guest's stock config would.
    pub fn plug_kernel_guest(&mut self, key: &str) -> Result<()> {
        let i = spec_index(&self.specs, key);
        let (spec, ns) = (&self.specs[i], &self.guest_ns[i]);
        let tmp = format!("kvm-{key}");
        self.host.ipw(&format!(
            "link add link {UPLINK} name {tmp} address {} type macvlan mode bridge",
            spec.mac
        ))?;
        self.host
            .ipw(&format!("link set {tmp} netns {}", ns.name))?;
        self.name_kernel_guest(key, &tmp)?;
        stock_config(&self.guest_ns[i], &self.specs[i])
    }

    /// The first half of what a CNI macvlan plugin does: a bridge-mode
    /// macvlan with the guest's MAC, made on the uplink straight into the
    /// guest's namespace under a temporary name, which it returns. Made
    /// there, a link is numbered by the namespace (2 after lo, likely
    /// the host's uplink's, which mvbridge refuses): it gets `ifindex`
    /// instead (see [`FREE_IFINDEX`]).
    pub fn plug_kernel_guest_unnamed(&mut self, key: &str, ifindex: u32) -> Result<String> {
        let i = spec_index(&self.specs, key);
        let (spec, ns) = (&self.specs[i], &self.guest_ns[i]);
        let tmp = format!("kvm-{key}");
        self.host.ipw(&format!(
            "link add link {UPLINK} name {tmp} netns {} index {ifindex} address {} \
             type macvlan mode bridge",
            ns.name, spec.mac
        ))?;
        Ok(tmp)
    }

    /// The second half: inside the namespace, link `tmp` becomes eth0 (it
    /// stays down, and the guest silent, until `stock_config`).
    pub fn name_kernel_guest(&self, key: &str, tmp: &str) -> Result<()> {
        let i = spec_index(&self.specs, key);
        self.guest_ns[i].ipw(&format!("link set {tmp} name eth0"))?;
        Ok(())
    }

    /// What a container runtime does when a container restarts: its network
    /// namespace goes, and a new one by the same name comes, with a new
    /// macvlan with the same MAC. That MAC is only free once nothing holds
    /// the old namespace; returns how long that took (polled, giving up
    /// after `patience`).
    pub fn restart_kernel_guest(
        &mut self,
        key: &str,
        patience: std::time::Duration,
    ) -> Result<std::time::Duration> {
        let i = self
            .specs
            .iter()
            .position(|s| s.key == key && s.kernel)
            .with_context(|| format!("no kernel guest {key}"))?;
        let spec = self.specs[i].clone();
        let name = self.guest_ns[i].name.clone();
        // Dropping the owned handle deletes the namespace's name.
        self.guest_ns[i] = Netns::borrowed(&name);
        let ns = Netns::new(&name)?;
        for k in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{k}.accept_dad"), "0")?;
        }
        let tmp = format!("kvm-{key}");
        let t0 = std::time::Instant::now();
        // The kernel tears the old namespace down in the background; its
        // macvlan holds the MAC until then, and a link with a busy MAC can
        // be made but not brought up.
        loop {
            self.host.ipw(&format!(
                "link add link {UPLINK} name {tmp} address {} type macvlan mode bridge",
                spec.mac
            ))?;
            match self.host.ipw(&format!("link set {tmp} up")) {
                Ok(_) => break,
                Err(e) if t0.elapsed() > patience => {
                    return Err(e.context(format!("the old namespace of {key} is still held")));
                }
                Err(_) => {
                    self.host.ipw(&format!("link del {tmp}"))?;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        let took = t0.elapsed();
        self.host.ipw(&format!("link set {tmp} netns {name}"))?;
        ns.ipw(&format!("link set {tmp} name eth0"))?;
        stock_config(&ns, &spec)?;
        self.guest_ns[i] = ns;
        Ok(took)
    }

    /// What libvirt does when a VM stops: the emulator goes, then the
    /// macvtap is deleted.
    pub fn libvirt_stop(&mut self, key: &str) -> Result<()> {
        self.stop_guest(key);
        let interface = self.spec(key).interface.clone();
        self.host.ipw(&format!("link del {interface}"))?;
        Ok(())
    }

    /// What libvirt does when a VM starts: a new macvtap with the VM's MAC
    /// (under `interface`, which may differ from last time), then the VM.
    pub fn libvirt_start(&mut self, key: &str, interface: &str) -> Result<()> {
        let mac = self.spec(key).mac;
        self.host.ipw(&format!(
            "link add link {UPLINK} name {interface} address {mac} type macvtap mode bridge"
        ))?;
        self.host.ipw(&format!("link set {interface} up"))?;
        if let Some(spec) = self.specs.iter_mut().find(|s| s.key == key) {
            spec.interface = interface.to_owned();
        }
        self.start_guest(key)
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

    /// Every IPv4 address a local endpoint can use.
    pub fn local_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![HOST, NAT_GW, NAT_VM];
        v.extend(self.specs.iter().map(|s| s.addr));
        v
    }

    /// Every IPv6 address a local endpoint can use, link-local included.
    pub fn local_addresses6(&self) -> Vec<Ipv6Addr> {
        let mut v = vec![HOST6, NAT_GW6, NAT_VM6];
        v.extend(self.specs.iter().map(|s| s.addr6));
        let mut lls = vec![self.link_local(&self.host, UPLINK)];
        for (i, _) in self.specs.iter().enumerate() {
            lls.push(self.link_local(&self.guest_ns[i], "eth0"));
        }
        v.extend(lls.into_iter().flatten());
        v
    }

    /// The link-local address of `ifname` in `ns`, if it has one.
    pub fn link_local(&self, ns: &Netns, ifname: &str) -> Option<Ipv6Addr> {
        let out = ns.ip(&["-6", "-br", "addr", "show", "dev", ifname]).ok()?;
        out.split_whitespace()
            .filter_map(|w| w.split('/').next())
            .filter_map(|a| a.parse::<Ipv6Addr>().ok())
            .find(|a| a.segments()[0] == 0xfe80)
    }

    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// mvbridge's config for this lab. `MVB_ATTACH` (auto, tcx, tc) sets
    /// how it attaches its hooks: `cargo xtask test` runs the suite with
    /// each mode the kernel has.
    pub fn config(&self) -> String {
        let mut c = format!(
            "uplink = \"{UPLINK}\"\nbpffs = \"{}\"\npidfile = \"{}\"\nattach = \"{}\"\n\n[shim]\nname = \"{SHIM}\"\n",
            self.bpffs().display(),
            self.dir.join("mvbridge.pid").display(),
            attach_mode()
        );
        for s in &self.specs {
            c.push_str(&format!(
                "\n[[vm]]\nname = \"{}\"\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\n",
                s.key, s.interface, s.addr, s.addr6
            ));
            if s.created_by_mvbridge {
                c.push_str(&format!("create = true\nmac = \"{}\"\n", s.mac));
            }
            if s.kernel {
                c.push_str(&format!("netns = \"{}-vm-{}\"\n", self.id, s.key));
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

/// The attach mode the lab's configs ask for (`MVB_ATTACH`, default
/// auto).
pub fn attach_mode() -> String {
    std::env::var("MVB_ATTACH").unwrap_or_else(|_| "auto".into())
}

/// Whether the running kernel has TCX (6.6+): its attach code is in the
/// symbol table. Tests of TCX itself say so and skip that part when not.
pub fn kernel_has_tcx() -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|s| s.contains(" tcx_prog_attach"))
}

/// Where VM `key` is in `specs` (and in the lists kept in step with it).
pub fn spec_index(specs: &[VmSpec], key: &str) -> usize {
    specs
        .iter()
        .position(|s| s.key == key)
        .unwrap_or_else(|| panic!("no VM {key} in this lab"))
}

/// Starts the guest emulator on `spec`'s macvtap and configures its eth0
/// as the guest's installer would have: its MAC, then the stock config.
pub fn boot_guest(
    host: &Netns,
    spec: &VmSpec,
    ns: &Netns,
    dir: &std::path::Path,
    vnet_hdr: bool,
) -> Result<Guest> {
    let guest = Guest::start_with(host, spec, ns, dir, vnet_hdr)?;
    ns.ipw(&format!("link set eth0 address {}", spec.mac))?;
    stock_config(ns, spec)?;
    Ok(guest)
}

/// A lab's running guests hold one emulator per VM: a restarted one
/// replaces (and so stops) the one before.
pub fn replace_guest(guests: &mut Vec<Guest>, guest: Guest) {
    guests.retain(|g| g.key != guest.key);
    guests.push(guest);
}

/// A guest's stock network config, as its installer wrote it: eth0 up with
/// its addresses, the default route via the gateway (on-link for a /32),
/// IPv6 via fe80::1.
pub fn stock_config(ns: &Netns, spec: &VmSpec) -> Result<()> {
    ns.ipw("link set eth0 up")?;
    ns.ipw(&format!("addr add {}/{} dev eth0", spec.addr, spec.prefix))?;
    ns.ipw(&format!(
        "addr add {}/{} dev eth0",
        spec.addr6, spec.prefix6
    ))?;
    if spec.prefix == 32 {
        ns.ipw("route add default via 203.0.113.129 dev eth0 onlink")?;
    } else {
        ns.ipw("route add default via 203.0.113.129")?;
    }
    ns.ipw("-6 route add default via fe80::1 dev eth0")?;
    Ok(())
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

/// Where labs take turns. A lab shares what no name can keep apart
/// (`/dev/tapN` nodes, the uplink's MAC range, the CPU a benchmark
/// measures), so two never run at once on a machine: not two test
/// binaries, not two checkouts.
const LAB_LOCK: &str = "/run/lock/mvbridge-lab.lock";

/// Takes the machine's lab lock for the rest of this process (a test
/// binary builds its labs one after another), waiting for another
/// process's lab to finish first.
fn hold_the_lab_lock() -> Result<()> {
    static HELD: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.is_some() {
        return Ok(());
    }
    let path = std::path::Path::new(LAB_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {LAB_LOCK}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("lab: another lab is running on this machine; waiting for it ({LAB_LOCK})");
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking the lab");
        }
    }
    *held = Some(file);
    Ok(())
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
