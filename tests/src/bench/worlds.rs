//! The benchmark's worlds: one lab per [`Setup`], with a 1 Gbit/s uplink,
//! holding every guest that setup is measured with ([`Setup::guests`]).
//!
//! Kernel guests are a macvlan on the uplink moved into the guest's
//! namespace (a veth in the bridge and the ceiling): their own stack is the
//! guest, so the datapath is measured, not an emulator. VM guests are the
//! guest emulator with virtio-net headers and offloads, as qemu runs a VM,
//! on a macvtap (a tap in the bridge and the ceiling).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::{Guest, GuestKind, Prefix, Setup};
use crate::daemon::Daemon;
use crate::lab::{HOST, Lab, UPLINK, VmSpec, WIRE};
use crate::netns::Netns;

/// Where a guest lives: its namespace and address.
pub struct GuestAt {
    pub guest: Guest,
    pub netns: String,
    pub addr: Ipv4Addr,
}

/// A lab plus what its setup adds. Dropping it stops the servers, the
/// emulators and the daemon, then removes the namespaces.
pub struct World {
    pub setup: Setup,
    servers: Vec<Child>,
    /// Guest emulators on taps (the lab owns those on macvtaps).
    taps: Vec<Child>,
    pub daemon: Option<Daemon>,
    pub guests: Vec<GuestAt>,
    /// Namespaces the setup made outside the lab's own (veth and tap
    /// guests).
    extra: Vec<Netns>,
    pub lab: Lab,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.servers.iter_mut().chain(self.taps.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The daemon goes before the namespaces (field order), so it can
        // take its datapath down while the links are still there.
    }
}

/// The guest's address: the same in every world (each has its own
/// namespaces), distinct per guest.
pub fn address(g: Guest) -> Ipv4Addr {
    let last = match (g.kind, g.prefix) {
        (GuestKind::Kernel, Prefix::Subnet26) => 164,
        (GuestKind::Kernel, Prefix::Single32) => 166,
        (GuestKind::Vm, Prefix::Subnet26) => 170,
        (GuestKind::Vm, Prefix::Single32) => 171,
    };
    Ipv4Addr::new(203, 0, 113, last)
}

/// A MAC per setup and guest.
fn mac(setup: Setup, g: Guest) -> &'static str {
    // Leaked once per world: VmSpec wants &'static.
    let kind = match g.kind {
        GuestKind::Kernel => 0x0b,
        GuestKind::Vm => 0x0e,
    };
    Box::leak(
        format!(
            "52:54:00:0{}:{kind:02x}:{:02x}",
            setup as u8 + 1,
            g.prefix.bits()
        )
        .into_boxed_str(),
    )
}

/// The lab's key for a guest.
fn key(g: Guest) -> &'static str {
    match (g.kind, g.prefix) {
        (GuestKind::Kernel, Prefix::Subnet26) => "k26",
        (GuestKind::Kernel, Prefix::Single32) => "k32",
        (GuestKind::Vm, Prefix::Subnet26) => "v26",
        (GuestKind::Vm, Prefix::Single32) => "v32",
    }
}

fn spec(setup: Setup, g: Guest) -> VmSpec {
    let addr = address(g);
    VmSpec {
        key: key(g),
        interface: format!("mvt-{}", key(g)),
        mac: mac(setup, g),
        addr,
        prefix: g.prefix.bits(),
        addr6: std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            1,
            0,
            0,
            0,
            0x100 + addr.octets()[3] as u16,
        ),
        prefix6: if g.prefix == Prefix::Single32 {
            128
        } else {
            64
        },
        created_by_mvbridge: false,
        kernel: g.kind == GuestKind::Kernel,
    }
}

/// Limits both ends of the uplink's cable to 1 Gbit/s, as a hosted
/// server's port is.
fn limit_wire(lab: &Lab) -> Result<()> {
    for (ns, dev) in [(&lab.host, UPLINK), (&lab.gw, WIRE)] {
        ns.runw(&format!(
            "tc qdisc replace dev {dev} root tbf rate 1gbit burst 256kb latency 20ms"
        ))?;
    }
    Ok(())
}

impl World {
    /// Builds `setup`'s lab with every guest it is measured with. A
    /// failure half-way removes what was built (dropping the world).
    pub fn build(setup: Setup) -> Result<World> {
        let lab = Lab::build(Vec::new())?;
        if setup.has_uplink() {
            limit_wire(&lab)?;
        }
        let mut w = World {
            setup,
            servers: Vec::new(),
            taps: Vec::new(),
            daemon: None,
            guests: Vec::new(),
            extra: Vec::new(),
            lab,
        };
        match setup {
            Setup::Hairpin => {
                // Nothing between host and guests: a /32 guest's traffic
                // to the host goes to the gateway and back.
                for g in setup.guests() {
                    w.add_on_uplink(*g)?;
                }
            }
            Setup::ClassicShim => {
                for g in setup.guests() {
                    w.add_on_uplink(*g)?;
                }
                let h = &w.lab.host;
                h.ipw(&format!(
                    "link add shim0 link {UPLINK} type macvlan mode bridge"
                ))?;
                h.ipw(&format!("addr add {HOST}/32 dev shim0"))?;
                h.ipw("link set shim0 up")?;
                for g in setup.guests() {
                    h.ipw(&format!("route add {}/32 dev shim0", address(*g)))?;
                }
                // NAT VMs' traffic to the guests leaves through the shim,
                // not the uplink: it needs masquerading there too, as the
                // workaround guides say.
                h.runw(
                    "iptables -t nat -A POSTROUTING -s 192.168.122.0/24 -o shim0 -j MASQUERADE",
                )?;
            }
            Setup::Mvbridge => {
                for g in setup.guests() {
                    w.add_on_uplink(*g)?;
                }
                let path = w.lab.write_config("mvbridge.toml", &w.lab.config())?;
                w.daemon = Some(Daemon::start(&w.lab.host, &path)?);
            }
            Setup::LinuxBridge => {
                let h = &w.lab.host;
                h.ipw("link add br0 type bridge")?;
                h.ipw(&format!("addr add {HOST}/32 dev br0"))?;
                h.ipw("link set br0 up")?;
                for g in setup.guests() {
                    let dev = w.add_routed(*g)?;
                    let h = &w.lab.host;
                    h.ipw(&format!("link set {dev} master br0 up"))?;
                    h.ipw(&format!("route add {}/32 dev br0", address(*g)))?;
                    // The hoster routes the address to the host.
                    w.lab.gw.ipw(&format!(
                        "route add {}/32 via {HOST} dev {WIRE}",
                        address(*g)
                    ))?;
                }
            }
            Setup::Ceiling => {
                for g in setup.guests() {
                    let dev = w.add_routed(*g)?;
                    let h = &w.lab.host;
                    h.ipw(&format!("addr add {HOST}/32 dev {dev}"))?;
                    h.ipw(&format!("link set {dev} up"))?;
                    h.ipw(&format!("route add {}/32 dev {dev}", address(*g)))?;
                }
            }
        }
        Ok(w)
    }

    /// A guest on the uplink: a kernel guest's macvlan, or a VM's macvtap
    /// with the emulator (vnet headers) on it.
    fn add_on_uplink(&mut self, g: Guest) -> Result<()> {
        let s = spec(self.setup, g);
        match g.kind {
            GuestKind::Kernel => self.lab.add_kernel_guest(s)?,
            GuestKind::Vm => {
                let lab = &mut self.lab;
                lab.host.ipw(&format!(
                    "link add link {UPLINK} name {} address {} type macvtap mode bridge",
                    s.interface, s.mac
                ))?;
                lab.host.ipw(&format!("link set {} up", s.interface))?;
                let ns = Netns::new(&format!("{}-vm-{}", lab.id, s.key))?;
                ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
                lab.specs.push(s.clone());
                lab.guest_ns.push(ns);
                lab.start_guest_with(s.key, true)?;
            }
        }
        let netns = self.lab.guest(key(g)).name.clone();
        self.guests.push(GuestAt {
            guest: g,
            netns,
            addr: address(g),
        });
        Ok(())
    }

    /// A guest with a link of its own into the host's namespace: a veth
    /// for a kernel guest, a tap with the emulator for a VM. Configured
    /// as a /32 with the host as its on-link gateway. Returns the host's
    /// side of the link.
    fn add_routed(&mut self, g: Guest) -> Result<String> {
        let k = key(g);
        let ns = Netns::new(&format!("{}-vm-{k}", self.lab.id))?;
        let dev = routed_link(g);
        match g.kind {
            GuestKind::Kernel => {
                self.lab.host.ipw(&format!(
                    "link add {dev} type veth peer name eth0 netns {}",
                    ns.name
                ))?;
            }
            GuestKind::Vm => {
                let child = start_tap_guest(&self.lab.host, &dev, &ns)?;
                self.taps.push(child);
                ns.ipw(&format!("link set eth0 address {}", mac(self.setup, g)))?;
            }
        }
        ns.ipw(&format!("addr add {}/32 dev eth0", address(g)))?;
        ns.ipw("link set eth0 up")?;
        ns.ipw(&format!("route add default via {HOST} dev eth0 onlink"))?;
        self.guests.push(GuestAt {
            guest: g,
            netns: ns.name.clone(),
            addr: address(g),
        });
        self.extra.push(ns);
        Ok(dev)
    }

    pub fn guest(&self, g: Guest) -> Result<&GuestAt> {
        self.guests
            .iter()
            .find(|x| x.guest == g)
            .with_context(|| format!("no {g} guest in {}", self.setup.name()))
    }

    /// iperf3 servers in every guest and the internet host, for the
    /// world's lifetime.
    pub fn serve_iperf(&mut self) -> Result<()> {
        let mut names: Vec<String> = self.guests.iter().map(|g| g.netns.clone()).collect();
        names.push(self.lab.inet.name.clone());
        for n in names {
            let child = Netns::borrowed(&n)
                .command("iperf3")?
                .args(["-s", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting iperf3 (is it installed?)")?;
            self.servers.push(child);
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Bytes the gateway's end of the wire has seen, both ways.
    pub fn wire_bytes(&self) -> Result<u64> {
        let mut sum = 0;
        for f in ["rx_bytes", "tx_bytes"] {
            let s = self
                .lab
                .gw
                .run(&["cat", &format!("/sys/class/net/{WIRE}/statistics/{f}")])?;
            sum += s
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{WIRE} {f}: {s:?}"))?;
        }
        Ok(sum)
    }

    /// Checks that the host reaches every guest.
    pub fn check_reachable(&self) -> Result<()> {
        for g in &self.guests {
            if !crate::traffic::ping_retry(&self.lab.host, IpAddr::V4(g.addr), 3) {
                bail!(
                    "{} {}: the host cannot reach the guest at {}",
                    self.setup.name(),
                    g.guest,
                    g.addr
                );
            }
        }
        Ok(())
    }
}

/// The host's side of a routed guest's link (bridge and ceiling).
pub fn routed_link(g: Guest) -> String {
    format!("h{}", key(g))
}

/// Starts the guest emulator on a tap named `dev` in `host` (what qemu's
/// `-netdev tap` makes), its guest side as eth0 in `guest`.
fn start_tap_guest(host: &Netns, dev: &str, guest: &Netns) -> Result<Child> {
    let mut cmd = host.command(
        crate::bins::path("mvb-guest")?
            .to_str()
            .context("utf-8 path")?,
    )?;
    cmd.args(["--tap", dev, "--netns", &guest.name, "--vnet-hdr"]);
    crate::guest::spawn_until_ready(cmd, &format!("tap {dev}"))
}
