//! The benchmark's worlds: every way users connect a host and its VMs
//! today, each built in namespaces of its own with a 1 Gbit/s uplink, and
//! the measurements taken in them.
//!
//! - (a) hairpin: a /32 kernel guest; host <-> VM goes through the gateway.
//! - (b) the classic shim: a host macvlan in bridge mode carrying the
//!   host's address, a /32 route per VM; a /26 and a /32 guest.
//! - (c) mvbridge; the same two guests (kernel guests, `netns`), plus a
//!   macvtap guest driven by the guest emulator with vnet headers.
//! - (d) a Linux bridge with a veth guest and a routed /32.
//! - (e) the ceiling: a direct veth pair host <-> guest.
//!
//! Kernel guests are a macvlan on the uplink moved into the guest's
//! namespace: its own stack is the guest, so the datapath is measured, not
//! an emulator.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::daemon::Daemon;
use crate::lab::{GW, HOST, INET, Lab, UPLINK, VmSpec, WIRE};
use crate::netns::Netns;

/// One VM to measure: which world, which namespace, which address.
pub struct Row {
    /// "a/32", "b/26", ..., as the report names it.
    pub name: &'static str,
    pub setup: char,
    pub world: usize,
    pub guest: String,
    pub addr: Ipv4Addr,
    /// The guest reaches the internet host through the uplink.
    pub has_internet: bool,
}

/// A world: a lab plus what its setup adds.
pub struct World {
    pub lab: Lab,
    pub daemon: Option<Daemon>,
    /// Namespaces a setup made outside the lab's own (veth guests).
    pub extra: Vec<Netns>,
    servers: Vec<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn kernel_spec(key: &'static str, mac: &'static str, last: u8, prefix: u8) -> VmSpec {
    VmSpec {
        key,
        interface: "eth0".into(),
        mac,
        addr: Ipv4Addr::new(203, 0, 113, last),
        prefix,
        addr6: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100 + u16::from(last)),
        prefix6: if prefix == 32 { 128 } else { 64 },
        created_by_mvbridge: false,
        kernel: true,
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
    fn new(lab: Lab) -> World {
        World {
            lab,
            daemon: None,
            extra: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// (a) A /32 guest and nothing else: host <-> VM hairpins.
    pub fn hairpin() -> Result<World> {
        let mut lab = Lab::build(Vec::new())?;
        limit_wire(&lab)?;
        lab.add_kernel_guest(kernel_spec("a32", "52:54:00:00:0a:20", 166, 32))?;
        Ok(World::new(lab))
    }

    /// (b) The classic shim: a macvlan with the host's address and a /32
    /// route per VM through it.
    pub fn classic_shim() -> Result<World> {
        let mut lab = Lab::build(Vec::new())?;
        limit_wire(&lab)?;
        lab.add_kernel_guest(kernel_spec("b26", "52:54:00:00:0b:26", 164, 26))?;
        lab.add_kernel_guest(kernel_spec("b32", "52:54:00:00:0b:20", 166, 32))?;
        let h = &lab.host;
        h.ipw(&format!(
            "link add shim0 link {UPLINK} type macvlan mode bridge"
        ))?;
        h.ipw("addr add 203.0.113.157/32 dev shim0")?;
        h.ipw("link set shim0 up")?;
        h.ipw("route add 203.0.113.164/32 dev shim0")?;
        h.ipw("route add 203.0.113.166/32 dev shim0")?;
        // NAT VMs' traffic to the guests leaves through the shim, not the
        // uplink: it needs masquerading there too, as the workaround
        // guides say.
        h.runw("iptables -t nat -A POSTROUTING -s 192.168.122.0/24 -o shim0 -j MASQUERADE")?;
        Ok(World::new(lab))
    }

    /// (c) mvbridge with the same two kernel guests, plus a macvtap guest
    /// on the guest emulator (vnet headers, offloads).
    pub fn mvbridge() -> Result<World> {
        let mut specs = crate::lab::public_vms();
        specs.retain(|s| s.key == "a");
        let mut m = specs.remove(0);
        m.key = "cm";
        m.addr = Ipv4Addr::new(203, 0, 113, 170);
        m.addr6 = "2001:db8:0:1::170".parse()?;
        let mut lab = Lab::build(Vec::new())?;
        limit_wire(&lab)?;
        lab.add_kernel_guest(kernel_spec("c26", "52:54:00:00:0c:26", 164, 26))?;
        lab.add_kernel_guest(kernel_spec("c32", "52:54:00:00:0c:20", 166, 32))?;
        lab.host.ipw(&format!(
            "link add link {UPLINK} name {} address {} type macvtap mode bridge",
            m.interface, m.mac
        ))?;
        lab.host.ipw(&format!("link set {} up", m.interface))?;
        lab.specs.push(m);
        let ns = Netns::new(&format!("{}-vm-cm", lab.id))?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        lab.guest_ns.push(ns);
        lab.start_guest_with("cm", true)?;
        let path = lab.write_config("mvbridge.toml", &lab.config())?;
        let daemon = Daemon::start(&lab.host, &path)?;
        let mut w = World::new(lab);
        w.daemon = Some(daemon);
        Ok(w)
    }

    /// (d) A Linux bridge carrying the host's address, a veth guest with a
    /// routed /32 (the gateway routes it via the host).
    pub fn linux_bridge() -> Result<World> {
        let lab = Lab::build(Vec::new())?;
        limit_wire(&lab)?;
        let guest = Netns::new(&format!("{}-vm-d32", lab.id))?;
        let h = &lab.host;
        h.ipw("link add br0 type bridge")?;
        h.ipw("addr add 203.0.113.157/32 dev br0")?;
        h.ipw("link set br0 up")?;
        h.ipw(&format!(
            "link add vd0 type veth peer name eth0 netns {}",
            guest.name
        ))?;
        h.ipw("link set vd0 master br0 up")?;
        h.ipw("route add 203.0.113.168/32 dev br0")?;
        guest.ipw("addr add 203.0.113.168/32 dev eth0")?;
        guest.ipw("link set eth0 up")?;
        guest.ipw("route add default via 203.0.113.157 dev eth0 onlink")?;
        lab.gw.ipw(&format!(
            "route add 203.0.113.168/32 via 203.0.113.157 dev {WIRE}"
        ))?;
        let mut w = World::new(lab);
        w.extra.push(guest);
        Ok(w)
    }

    /// (e) The ceiling: host and guest joined by a veth pair.
    pub fn direct_veth() -> Result<World> {
        let lab = Lab::build(Vec::new())?;
        let guest = Netns::new(&format!("{}-vm-e", lab.id))?;
        let h = &lab.host;
        h.ipw(&format!(
            "link add ve0 type veth peer name eth0 netns {}",
            guest.name
        ))?;
        h.ipw("addr add 203.0.113.157/32 dev ve0")?;
        h.ipw("link set ve0 up")?;
        h.ipw("route add 203.0.113.172/32 dev ve0")?;
        guest.ipw("addr add 203.0.113.172/32 dev eth0")?;
        guest.ipw("link set eth0 up")?;
        guest.ipw("route add default via 203.0.113.157 dev eth0 onlink")?;
        let mut w = World::new(lab);
        w.extra.push(guest);
        Ok(w)
    }

    /// The namespace of a guest by name (lab guests and extra ones).
    pub fn ns(&self, name: &str) -> &Netns {
        if let Some(n) = self
            .extra
            .iter()
            .find(|n| n.name.ends_with(&format!("-vm-{name}")))
        {
            return n;
        }
        match name {
            "host" => &self.lab.host,
            "natvm" => &self.lab.natvm,
            "inet" => &self.lab.inet,
            vm => self.lab.guest(vm),
        }
    }

    /// iperf3 servers in `names`, for the world's lifetime.
    pub fn serve_iperf(&mut self, names: &[&str]) -> Result<()> {
        for n in names {
            let child = self
                .ns(n)
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
    pub fn wire_bytes(&self) -> u64 {
        let read = |f: &str| -> u64 {
            self.lab
                .gw
                .run(&["cat", &format!("/sys/class/net/{WIRE}/statistics/{f}")])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        read("rx_bytes") + read("tx_bytes")
    }
}

/// A TCP transfer with iperf3 for whole `seconds` (iperf3 reads -t as an
/// integer; 0 would mean forever): bits per second received.
pub fn iperf(from: &Netns, to: Ipv4Addr, seconds: u32, reverse: bool) -> Result<f64> {
    // A path that does not work must cost seconds, not the whole run.
    let limit = format!("{}", seconds + 8);
    let mut args = vec![
        "timeout".to_owned(),
        limit,
        "iperf3".to_owned(),
        "--connect-timeout".into(),
        "2000".into(),
        "-c".into(),
        to.to_string(),
        "-p".into(),
        "5201".into(),
        "-t".into(),
        format!("{seconds}"),
        "-J".into(),
    ];
    if reverse {
        args.push("-R".into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = from.output(&argv)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {to}: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no throughput in iperf3's output")
}

/// Busy CPU time of the whole machine so far (all CPUs), in seconds.
pub fn cpu_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum::<f64>();
    busy / 100.0
}

/// 1-byte TCP ping-pong for `span`: transactions per second and the
/// latencies' p50 and p99, in microseconds.
pub fn ping_pong(
    client: &Netns,
    server: &Netns,
    to: Ipv4Addr,
    port: u16,
    span: Duration,
) -> Result<(f64, f64, f64)> {
    let listener = server.in_ns(move || TcpListener::bind(SocketAddr::from((to, port))))??;
    listener.set_nonblocking(true)?;
    let srv = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        let accepted = loop {
            match listener.accept() {
                Ok((s, _)) => break Some(s),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        if let Some(mut s) = accepted {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
        }
    });
    let lat = client.in_ns(move || -> std::io::Result<Vec<u32>> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [7u8; 1];
        let mut lat = Vec::with_capacity(200_000);
        let t0 = Instant::now();
        while t0.elapsed() < span {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            lat.push(t.elapsed().as_nanos() as u32);
        }
        Ok(lat)
    })??;
    let _ = srv.join();
    let mut lat = lat;
    lat.sort_unstable();
    let pick =
        |q: f64| f64::from(lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)]) / 1000.0;
    Ok((lat.len() as f64 / span.as_secs_f64(), pick(0.5), pick(0.99)))
}

/// The rows measured, world by world: index into the worlds vector.
pub fn rows() -> Vec<Row> {
    let r = |name, setup, world, guest: &str, last, has_internet| Row {
        name,
        setup,
        world,
        guest: guest.to_owned(),
        addr: Ipv4Addr::new(203, 0, 113, last),
        has_internet,
    };
    vec![
        r("a /32 hairpin", 'a', 0, "a32", 166, true),
        r("b /26 shim", 'b', 1, "b26", 164, true),
        r("b /32 shim", 'b', 1, "b32", 166, true),
        r("c /26 mvbridge", 'c', 2, "c26", 164, true),
        r("c /32 mvbridge", 'c', 2, "c32", 166, true),
        r("c macvtap (emulated VM)", 'c', 2, "cm", 170, true),
        r("d /32 bridge", 'd', 3, "d32", 168, true),
        r("e veth ceiling", 'e', 4, "e", 172, false),
    ]
}

pub const HOST_ADDR: Ipv4Addr = HOST;
pub const INET_ADDR: Ipv4Addr = INET;
pub const GW_ADDR: Ipv4Addr = GW;
