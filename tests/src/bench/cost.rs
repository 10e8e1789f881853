//! What the programs cost per packet (BPF_PROG_TEST_RUN and the kernel's
//! live statistics), and the daemon's control plane with the demo's three
//! VMs and with a 10,000-VM config.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mvbridge::datapath::object::Role;

use super::measure::{self, least};
use super::report::{Control, Live, LiveProgram, PerPacket, Stat};
use crate::bpfrun::{Bench, BenchVm};
use crate::daemon::Daemon;
use crate::lab::{Lab, UPLINK, public_vms};

/// VM counts the per-packet cost is taken at.
pub const PER_PACKET_VMS: [u32; 4] = [1, 100, 1_000, 10_000];

/// Per-packet cost with 1 to 10,000 VMs in the tables (VM a of the lab,
/// plus others that only the tables know), IPv4 and IPv6, each the least
/// of 7 kernel-timed averages over `repeat` runs.
pub fn per_packet(smoke: bool) -> Result<Vec<PerPacket>> {
    let specs: Vec<_> = public_vms().into_iter().filter(|s| s.key != "b").collect();
    let lab = Lab::build(specs)?;
    let bpffs = lab.bpffs();
    let repeat = if smoke { 20_000 } else { 500_000 };
    let counts: Vec<u32> = if smoke {
        vec![1, 10_000]
    } else {
        PER_PACKET_VMS.to_vec()
    };
    lab.host.in_ns(move || -> Result<Vec<PerPacket>> {
        use mvbridge_common::testing as t;
        let mut b = Bench::new(&bpffs, UPLINK, &[])?;
        let host_mac = b.mac(UPLINK);
        let frames = [
            (
                4u8,
                t::ipv4(t::GW_MAC, host_mac, t::HOST_IP, t::VM_A_IP),
                t::ipv4(host_mac, t::VM_A_MAC, t::VM_A_IP, t::HOST_IP),
            ),
            (
                6u8,
                t::ping6(t::GW_MAC, host_mac, t::HOST6, t::VM_A6),
                t::ping6(host_mac, t::VM_A_MAC, t::VM_A6, t::HOST6),
            ),
        ];
        let own: Vec<std::net::IpAddr> =
            vec!["203.0.113.161".parse()?, "2001:db8:0:1::161".parse()?];
        let mut out = Vec::new();
        for n in counts {
            b.fill_with_others(
                UPLINK,
                &[BenchVm {
                    interface: "macvtap0",
                    slot: 0,
                    addresses: &own,
                    learns: false,
                    bridged: false,
                }],
                n - 1,
            )?;
            for (family, to_vm, to_host) in &frames {
                let mut best = |role: Option<Role>, ifname: &str, frame: &[u8]| -> Result<f64> {
                    let mut v = Vec::new();
                    for _ in 0..7 {
                        v.push(b.time(role, ifname, frame, repeat)?.as_nanos() as f64);
                    }
                    Ok(least(&v))
                };
                // The verdicts first: a timing of a program that passes the
                // frame on measures the wrong path.
                let empty_ns = best(None, UPLINK, to_vm)?;
                let uplink_ns = best(Some(Role::Uplink), UPLINK, to_vm)?;
                let vm_ns = best(Some(Role::Vm), "macvtap0", to_host)?;
                let (v_up, _) = b.run(Role::Uplink, UPLINK, to_vm)?;
                let (v_vm, _) = b.run(Role::Vm, "macvtap0", to_host)?;
                anyhow::ensure!(
                    v_up == crate::bpfrun::REDIRECT && v_vm == crate::bpfrun::REDIRECT,
                    "IPv{family} with {n} VMs: verdicts {v_up}/{v_vm}, not redirects"
                );
                out.push(PerPacket {
                    vms: n,
                    family: *family,
                    empty_ns,
                    uplink_ns,
                    vm_ns,
                });
            }
        }
        Ok(out)
    })?
}

/// mvb_empty attached to the egress of a link the way mvbridge attaches
/// its hooks (TCX where the kernel has it), for the live baseline.
pub struct Baseline {
    _datapath: mvbridge::datapath::object::Datapath,
    pub id: u32,
}

/// Attaches the empty program to `ifname`'s egress in `ns`, the way
/// mvbridge's are attached.
pub fn attach_baseline(lab: &Lab, ns: &crate::netns::Netns, ifname: &str) -> Result<Baseline> {
    let pins = mvbridge::datapath::bpffs::PinDir::new(&lab.dir.join("baseline-bpf"));
    mvbridge::datapath::bpffs::ensure(&pins.dir)?;
    std::fs::create_dir_all(pins.maps())?;
    let mut dp = mvbridge::datapath::object::Datapath::load(&pins.maps(), false)?;
    let prog = dp.baseline()?;
    let id = prog.info()?.id();
    // Attach from inside the namespace; the link lives as long as the
    // program object (kept in Baseline).
    let guard = mvbridge::kernel::netns::InNetns::enter(&ns.name)?;
    // Without TCX, aya attaches a classic filter, which needs the clsact
    // qdisc mvbridge's own hooks would have made.
    if !crate::lab::kernel_has_tcx() {
        aya::programs::tc::qdisc_add_clsact(ifname)?;
    }
    prog.attach(ifname, aya::programs::TcAttachType::Egress)?;
    drop(guard);
    Ok(Baseline { _datapath: dp, id })
}

/// Average run time of the empty program and of mvbridge's programs
/// between two snapshots of the kernel's statistics.
pub fn live(
    baseline: &Baseline,
    before: &HashMap<u32, (String, u64, u64)>,
    after: &HashMap<u32, (String, u64, u64)>,
) -> Result<Live> {
    let per = |ns: u64, runs: u64| ns as f64 / runs as f64;
    let (_, ns1, r1) = after
        .get(&baseline.id)
        .context("the empty program is gone")?;
    let (ns0, r0) = before
        .get(&baseline.id)
        .map(|b| (b.1, b.2))
        .unwrap_or((0, 0));
    anyhow::ensure!(
        r1 > &r0,
        "the empty program never ran (no traffic on the ceiling?)"
    );
    let empty = LiveProgram {
        program: "mvb_empty".into(),
        ns_per_run: per(ns1 - ns0, r1 - r0),
        runs: r1 - r0,
    };
    let programs = measure::bpf_delta(before, after)
        .into_iter()
        .filter(|(name, _)| name.starts_with("mvb_") && name != "mvb_empty")
        .map(|(program, (ns, runs))| LiveProgram {
            program,
            ns_per_run: per(ns, runs),
            runs,
        })
        .collect();
    Ok(Live { empty, programs })
}

/// The daemon with the demo's VMs a and c: start to attached, a macvtap
/// appearing -> live, RSS; then a 10,000-VM config.
pub fn control_plane(smoke: bool) -> Result<Control> {
    let rounds = if smoke { 1 } else { 5 };
    let lab = Lab::build(public_vms().into_iter().filter(|s| s.key != "b").collect())?;
    // VM x: libvirt's, matched by MAC, absent until we "start" it.
    let config = format!(
        "{}\n[[vm]]\nname = \"x\"\nmac = \"52:54:00:00:00:99\"\naddresses = [\"203.0.113.180\"]\n",
        lab.config()
    );
    let path = lab.write_config("mvbridge.toml", &config)?;
    let mut attach_ms = Vec::new();
    let mut live_ms = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..rounds {
        let mut d = Daemon::start(&lab.host, &path)?;
        let line = d.wait_for_log(&["datapath attached"], Duration::from_secs(5))?;
        attach_ms.push(measure::field(&line, "elapsed_us")? as f64 / 1000.0);
        rss.push(measure::rss_mib(d.pid().context("daemon pid")?)?);
        lab.host.ipw(&format!(
            "link add link {UPLINK} name macvtap9 address 52:54:00:00:00:99 type macvtap mode bridge"
        ))?;
        lab.host.ipw("link set macvtap9 up")?;
        let ready = d.wait_for_log(&["vm ready", "vm=x", "reaction_us"], Duration::from_secs(5))?;
        live_ms.push(measure::field(&ready, "reaction_us")? as f64 / 1000.0);
        lab.host.ipw("link del macvtap9")?;
        d.stop_with(libc::SIGTERM)?;
    }
    // 10,000 VMs: the config, and the tables filled for that many.
    let mut big = lab.config();
    for i in 0..10_000u32 {
        let _ = write!(
            big,
            "\n[[vm]]\nname = \"vm{i}\"\nmac = \"52:54:01:{:02x}:{:02x}:{:02x}\"\naddresses = [\"2001:db8:3::{:x}\"]\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            i + 1
        );
    }
    let t = Instant::now();
    mvbridge::config::Config::parse(&big).map_err(|e| anyhow!("{e:?}"))?;
    let parse_ms = t.elapsed().as_secs_f64() * 1000.0;
    let path10k = lab.write_config("mvbridge-10k.toml", &big)?;
    let d = Daemon::start(&lab.host, &path10k)?;
    let line = d.wait_for_log(&["datapath attached"], Duration::from_secs(30))?;
    let start10k_ms = measure::field(&line, "elapsed_us")? as f64 / 1000.0;
    let rss10k = measure::rss_mib(d.pid().context("daemon pid")?)?;
    drop(d);
    let fill_ms = fill_10k(&lab)?;
    Ok(Control {
        vms: 3,
        start_to_attached_ms: Stat::of(attach_ms)?,
        macvtap_to_live_ms: Stat::of(live_ms)?,
        rss_mib: Stat::of(rss)?,
        config_10k_parse_ms: parse_ms,
        config_10k_start_to_attached_ms: start10k_ms,
        config_10k_fill_ms: fill_ms,
        config_10k_rss_mib: rss10k,
    })
}

/// Time to fill empty tables with 10,000 VMs (a MAC, a link and an
/// address each), as the daemon's table sync writes them.
fn fill_10k(lab: &Lab) -> Result<f64> {
    let bpffs = lab.dir.join("fill-bpf");
    lab.host.in_ns(move || -> Result<f64> {
        let mut b = Bench::new(&bpffs, UPLINK, &[])?;
        Ok(b.fill_with_others(UPLINK, &[], 10_000)?.as_secs_f64() * 1000.0)
    })?
}
