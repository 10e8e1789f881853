//! `cargo xtask bench`: mvbridge against every way users connect a host
//! and its VMs today, in one run, configurations interleaved, each
//! measured several times; ratios are taken trial by trial.
//!
//! usage: mvb-bench [--smoke] [--out DIR] [--markdown FILE]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mvbridge::datapath::Role;
use mvbridge_tests::bench::{self, HOST_ADDR, INET_ADDR, World, cpu_busy, iperf, ping_pong};
use mvbridge_tests::bpfrun::{Bench, BenchVm};
use mvbridge_tests::daemon::{Daemon, log_field, rss_kib};
use mvbridge_tests::lab::{HOST, Lab, UPLINK, public_vms};
use serde_json::{Value, json};

struct Opts {
    smoke: bool,
    out: PathBuf,
    markdown: Option<PathBuf>,
}

fn opts() -> Opts {
    let mut o = Opts {
        smoke: false,
        out: PathBuf::from("target/bench"),
        markdown: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => o.smoke = true,
            "--out" => o.out = it.next().map(PathBuf::from).unwrap_or(o.out),
            "--markdown" => o.markdown = it.next().map(PathBuf::from),
            _ => {}
        }
    }
    o
}

/// Samples of one metric, one per trial.
type Samples = Vec<f64>;

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max)
}

fn stat(v: &[f64]) -> Value {
    json!({ "median": median(v), "min": min(v), "max": max(v), "samples": v })
}

/// Trial-by-trial ratio of two sample lists.
fn ratio(a: &[f64], b: &[f64]) -> Samples {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

const METRICS: [&str; 9] = [
    "host_to_vm_gbps",
    "vm_to_host_gbps",
    "natvm_to_vm_gbps",
    "cpu_s_per_gb",
    "uplink_bytes_per_gb",
    "rr_per_s",
    "rr_p50_us",
    "rr_p99_us",
    "vm_internet_ratio",
];

fn main() -> Result<()> {
    let o = opts();
    let t_start = Instant::now();
    let (secs, rr_span, trials) = if o.smoke {
        (1u32, Duration::from_millis(300), 1)
    } else {
        (2u32, Duration::from_millis(1500), 5)
    };
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();

    eprintln!(
        "bench: building the worlds (a hairpin, b classic shim, c mvbridge, d Linux bridge, e veth)"
    );
    let mut worlds = vec![
        World::hairpin()?,
        World::classic_shim()?,
        World::mvbridge()?,
        World::linux_bridge()?,
        World::direct_veth()?,
    ];
    let rows = bench::rows();
    for (i, w) in worlds.iter_mut().enumerate() {
        let mut names: Vec<&str> = rows
            .iter()
            .filter(|r| r.world == i)
            .map(|r| r.guest.as_str())
            .collect();
        if i != 4 {
            names.push("inet");
        }
        w.serve_iperf(&names)?;
    }
    // The baseline program, attached the same way as mvbridge's (TCX,
    // egress) on the ceiling's host-side veth, for the live per-packet cost.
    let baseline = attach_baseline(&worlds[4])?;
    for r in &rows {
        let w = &worlds[r.world];
        anyhow::ensure!(
            mvbridge_tests::traffic::ping_retry(&w.lab.host, r.addr, 3),
            "{}: host cannot reach the guest",
            r.name
        );
    }

    let mut data: BTreeMap<&str, BTreeMap<&str, Samples>> = BTreeMap::new();
    for trial in 0..trials {
        eprintln!("bench: trial {}/{trials}", trial + 1);
        for (ri, r) in rows.iter().enumerate() {
            let w = &worlds[r.world];
            let guest = w.ns(&r.guest);
            let m = data.entry(r.name).or_default();
            let push = |m: &mut BTreeMap<&str, Samples>, k: &'static str, v: f64| {
                m.entry(k).or_default().push(v)
            };

            eprintln!("bench:   {}", r.name);
            let (cpu0, wire0, t0) = (cpu_busy(), w.wire_bytes(), Instant::now());
            let bps = iperf(&w.lab.host, r.addr, secs, false).unwrap_or(f64::NAN);
            let elapsed = t0.elapsed().as_secs_f64();
            let secs_f = f64::from(secs);
            let gb = bps * secs_f / 8.0 / 1e9;
            push(m, "host_to_vm_gbps", bps / 1e9);
            // iperf3 runs a little longer than -t; scale CPU to the bytes.
            push(
                m,
                "cpu_s_per_gb",
                (cpu_busy() - cpu0) * (secs_f / elapsed) / gb,
            );
            push(
                m,
                "uplink_bytes_per_gb",
                (w.wire_bytes() - wire0) as f64 / gb,
            );
            push(
                m,
                "vm_to_host_gbps",
                iperf(&w.lab.host, r.addr, secs, true).unwrap_or(f64::NAN) / 1e9,
            );
            push(
                m,
                "natvm_to_vm_gbps",
                iperf(&w.lab.natvm, r.addr, secs, false).unwrap_or(f64::NAN) / 1e9,
            );
            let port = 6000 + (trial * 32 + ri) as u16;
            let (rate, p50, p99) = ping_pong(&w.lab.host, guest, r.addr, port, rr_span)
                .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            push(m, "rr_per_s", rate);
            push(m, "rr_p50_us", p50);
            push(m, "rr_p99_us", p99);
            if r.has_internet && r.guest != "cm" && r.setup != 'd' {
                // The VM's internet throughput with a local bulk transfer
                // running, over the same alone.
                let alone = iperf(guest, INET_ADDR, secs, false).unwrap_or(f64::NAN);
                let bulk = {
                    let host = w.lab.host.name.clone();
                    let addr = r.addr;
                    let s = secs + 1;
                    std::thread::spawn(move || {
                        iperf(
                            &mvbridge_tests::netns::Netns::borrowed(&host),
                            addr,
                            s,
                            false,
                        )
                    })
                };
                std::thread::sleep(Duration::from_millis(300));
                let during = iperf(guest, INET_ADDR, secs, false).unwrap_or(f64::NAN);
                let _ = bulk.join();
                push(m, "vm_internet_ratio", during / alone);
                push(m, "vm_internet_alone_mbps", alone / 1e6);
                push(m, "vm_internet_during_mbps", during / 1e6);
            }
        }
    }

    eprintln!("bench: per-packet cost (BPF_PROG_TEST_RUN and live BPF stats)");
    let per_packet = per_packet_cost(o.smoke)?;
    let live = live_cost(&baseline);
    drop(baseline);
    eprintln!("bench: control plane");
    let control = control_plane(o.smoke)?;
    drop(worlds);

    let report = build_report(
        &rows,
        &data,
        per_packet,
        live,
        control,
        o.smoke,
        t_start.elapsed(),
    );
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(
        o.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(o.out.join("bench.svg"), svg(&report))?;
    let text = markdown(&report);
    println!("{text}");
    if let Some(md) = &o.markdown {
        std::fs::write(md, &text).with_context(|| format!("writing {}", md.display()))?;
    }
    eprintln!(
        "bench: done in {:.0} s; {}/bench.json and bench.svg written",
        t_start.elapsed().as_secs_f64(),
        o.out.display()
    );
    Ok(())
}

/// mvb_empty attached to TCX egress of the ceiling's host veth.
struct Baseline {
    _datapath: mvbridge::datapath::Datapath,
    id: u32,
}

fn attach_baseline(w: &World) -> Result<Baseline> {
    let pins = mvbridge::bpffs::PinDir::new(&w.lab.dir.join("baseline-bpf"));
    mvbridge::bpffs::ensure(&pins.dir)?;
    std::fs::create_dir_all(pins.maps())?;
    let mut dp = mvbridge::datapath::Datapath::load(&pins.maps(), false)?;
    let prog = dp.baseline()?;
    let id = prog.info()?.id();
    let host = w.lab.host.name.clone();
    // Attach from inside the host namespace; the link lives as long as
    // the program object (kept in Baseline).
    let guard = mvbridge::netns::InNetns::enter(&host)?;
    prog.attach("ve0", aya::programs::TcAttachType::Egress)?;
    drop(guard);
    Ok(Baseline { _datapath: dp, id })
}

/// Average run time per packet of a loaded program, from the kernel's
/// BPF stats, by program name or id.
fn prog_ns(name: Option<&str>, id: Option<u32>) -> Option<(f64, u64)> {
    aya::programs::loaded_programs().flatten().find_map(|p| {
        let hit = name.is_some_and(|n| p.name_as_str() == Some(n)) || id == Some(p.id());
        (hit && p.run_count() > 0).then(|| {
            (
                p.run_time().as_nanos() as f64 / p.run_count() as f64,
                p.run_count(),
            )
        })
    })
}

fn live_cost(b: &Baseline) -> Value {
    let empty = prog_ns(None, Some(b.id));
    let mut out = json!({ "empty_ns": empty.map(|e| e.0), "empty_runs": empty.map(|e| e.1) });
    for name in ["mvb_uplink", "mvb_vm", "mvb_shim", "mvb_shim_in"] {
        if let Some((ns, runs)) = prog_ns(Some(name), None) {
            out[name] =
                json!({ "ns": ns, "runs": runs, "minus_empty_ns": empty.map(|e| ns - e.0) });
        }
    }
    out
}

/// Per-packet cost with 1, 100 and 10,000 VM addresses in the tables,
/// from BPF_PROG_TEST_RUN (the kernel times `repeat` runs), minus the
/// empty program run the same way.
fn per_packet_cost(smoke: bool) -> Result<Value> {
    let specs: Vec<_> = public_vms().into_iter().filter(|s| s.key != "b").collect();
    let lab = Lab::build(specs)?;
    let bpffs = lab.bpffs();
    let repeat = if smoke { 20_000 } else { 500_000 };
    let v = lab.host.in_ns(move || -> Result<Value> {
        use mvbridge_common::testing as t;
        let mut b = Bench::new(&bpffs, UPLINK, &[])?;
        let host_mac = b.mac(UPLINK);
        let to_vm = t::ipv4(t::GW_MAC, host_mac, t::HOST_IP, t::VM_A_IP);
        let to_host = t::ipv4(host_mac, t::VM_A_MAC, t::VM_A_IP, t::HOST_IP);
        let mut out = json!({});
        for n in [1usize, 100, 10_000] {
            let mut addrs: Vec<std::net::IpAddr> = vec!["203.0.113.161".parse()?];
            addrs.extend(
                (1..n as u32)
                    .map(|i| std::net::IpAddr::from(std::net::Ipv4Addr::from(0x6440_0000 + i))),
            );
            b.fill(
                UPLINK,
                &[BenchVm {
                    interface: "macvtap0",
                    slot: 0,
                    addresses: &addrs,
                    learns: false,
                    bridged: false,
                }],
            )?;
            let mut best = |role: Option<Role>, ifname: &str, frame: &[u8]| -> Result<f64> {
                // The least disturbed of several long runs: interrupts and
                // the other core only ever add time.
                let mut v = Vec::new();
                for _ in 0..7 {
                    v.push(b.time(role, ifname, frame, repeat)?.as_nanos() as f64);
                }
                Ok(min(&v))
            };
            let empty = best(None, UPLINK, &to_vm)?;
            let up = best(Some(Role::Uplink), UPLINK, &to_vm)?;
            let vm = best(Some(Role::Vm), "macvtap0", &to_host)?;
            out[format!("{n}")] = json!({
                "empty_ns": empty,
                "uplink_ns": up, "uplink_minus_empty_ns": up - empty,
                "vm_ns": vm, "vm_minus_empty_ns": vm - empty,
            });
        }
        Ok(out)
    })??;
    Ok(v)
}

fn control_plane(smoke: bool) -> Result<Value> {
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
        attach_ms.push(log_field(&line, "elapsed_us").unwrap_or(0) as f64 / 1000.0);
        rss.push(rss_kib(d.pid().unwrap_or(0)) as f64 / 1024.0);
        lab.host
            .ipw(&format!("link add link {UPLINK} name macvtap9 address 52:54:00:00:00:99 type macvtap mode bridge"))?;
        lab.host.ipw("link set macvtap9 up")?;
        let ready = d.wait_for_log(&["vm ready", "vm=x", "reaction_us"], Duration::from_secs(5))?;
        live_ms.push(log_field(&ready, "reaction_us").unwrap_or(0) as f64 / 1000.0);
        lab.host.ipw("link del macvtap9")?;
        d.stop_with(libc::SIGTERM)?;
    }
    // 10,000 VMs: the config, and the tables filled for that many.
    let mut big = lab.config();
    for i in 0..10_000u32 {
        let _ = write!(
            big,
            "\n[[vm]]\nname = \"vm{i}\"\nmac = \"52:54:01:{:02x}:{:02x}:{:02x}\"\naddresses = [\"{}\"]\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            std::net::Ipv4Addr::from(0x6440_0000 + i)
        );
    }
    let t = Instant::now();
    let parsed = mvbridge::config::Config::parse(&big).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let parse_ms = t.elapsed().as_secs_f64() * 1000.0;
    let path10k = lab.write_config("mvbridge-10k.toml", &big)?;
    let d = Daemon::start(&lab.host, &path10k)?;
    let line = d.wait_for_log(&["datapath attached"], Duration::from_secs(30))?;
    let start10k_ms = log_field(&line, "elapsed_us").unwrap_or(0) as f64 / 1000.0;
    let rss10k = rss_kib(d.pid().unwrap_or(0)) as f64 / 1024.0;
    drop(d);
    let sync10k_ms = fill_tables(&lab, parsed.vms.len())?;
    Ok(json!({
        "start_to_attached_ms": stat(&attach_ms),
        "macvtap_to_live_ms": stat(&live_ms),
        "rss_mib": stat(&rss),
        "config_10k_parse_ms": parse_ms,
        "config_10k_start_to_attached_ms": start10k_ms,
        "tables_10k_fill_ms": sync10k_ms,
        "rss_10k_mib": rss10k,
    }))
}

/// Time to fill the tables with `n` VMs (an address, a MAC, a link each).
fn fill_tables(lab: &Lab, n: usize) -> Result<f64> {
    use mvbridge::netlink::Link;
    use mvbridge::plan::{Origin, Owned, Plan, ShimState, VmPlan, VmState};
    let pins = mvbridge::bpffs::PinDir::new(&lab.dir.join("fill-bpf"));
    mvbridge::bpffs::ensure(&pins.dir)?;
    std::fs::create_dir_all(pins.maps())?;
    let _dp = mvbridge::datapath::Datapath::load(&pins.maps(), false)?;
    mvbridge::maps::PinnedMaps::create_loader_maps(&pins)?;
    let mut maps = mvbridge::maps::PinnedMaps::open(&pins)?;
    let link = |i: u32| Link {
        index: 1000 + i,
        name: format!("mvt{i}"),
        mac: Some([0x52, 0x54, 1, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        kind: Some("macvtap".into()),
        lower: Some(2),
        macvlan_mode: None,
        alias: None,
        up: true,
        allmulti: true,
    };
    let uplink = link(1_000_000);
    let vms: Vec<VmPlan> = (0..n as u32)
        .map(|i| VmPlan {
            name: format!("vm{i}"),
            state: VmState::Live(link(i)),
            netns: None,
            addresses: vec![Owned {
                addr: std::net::Ipv4Addr::from(0x6440_0000 + i).into(),
                origin: Origin::Config,
            }],
            learns: false,
        })
        .collect();
    let slots = vms
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i as u32))
        .collect();
    let plan = Plan {
        uplink: uplink.clone(),
        host: vec![HOST.into()],
        wire: Vec::new(),
        shim: ShimState::Present(uplink.clone()),
        vms,
        create: Vec::new(),
        stale: Vec::new(),
        problems: Vec::new(),
    };
    let t = Instant::now();
    maps.sync(&mvbridge::contents::Contents::new(&plan, &uplink, &slots))?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn build_report(
    rows: &[bench::Row],
    data: &BTreeMap<&str, BTreeMap<&str, Samples>>,
    per_packet: Value,
    live: Value,
    control: Value,
    smoke: bool,
    took: Duration,
) -> Value {
    let mut table = json!({});
    for r in rows {
        let mut m = json!({ "setup": r.setup.to_string() });
        if let Some(d) = data.get(r.name) {
            for (k, v) in d {
                m[*k] = stat(v);
            }
        }
        table[r.name] = m;
    }
    let get = |row: &str, k: &str| {
        data.get(row)
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or_default()
    };
    let pairs: [(&str, &str, &str); 8] = [
        ("c vs a", "c /32 mvbridge", "a /32 hairpin"),
        ("c /26 vs a", "c /26 mvbridge", "a /32 hairpin"),
        ("c vs b /26", "c /26 mvbridge", "b /26 shim"),
        ("c vs b /32", "c /32 mvbridge", "b /32 shim"),
        ("c /26 vs e", "c /26 mvbridge", "e veth ceiling"),
        ("c /32 vs e", "c /32 mvbridge", "e veth ceiling"),
        (
            "c macvtap vs e",
            "c macvtap (emulated VM)",
            "e veth ceiling",
        ),
        ("b /26 vs e", "b /26 shim", "e veth ceiling"),
    ];
    let mut ratios = json!({});
    for (label, x, y) in pairs {
        let mut m = json!({});
        for k in [
            "host_to_vm_gbps",
            "vm_to_host_gbps",
            "natvm_to_vm_gbps",
            "rr_per_s",
        ] {
            m[k] = stat(&ratio(&get(x, k), &get(y, k)));
        }
        ratios[label] = m;
    }
    let med = |row: &str, k: &str| median(&get(row, k));
    let rmed = |x: &str, y: &str, k: &str| median(&ratio(&get(x, k), &get(y, k)));
    let pp = |n: &str, k: &str| per_packet[n][k].as_f64().unwrap_or(f64::NAN);
    let cp = |k: &str| {
        control[k]["median"]
            .as_f64()
            .or(control[k].as_f64())
            .unwrap_or(f64::NAN)
    };
    let flat = |k: &str| {
        let (a, b) = (pp("1", k), pp("10000", k));
        (b - a).abs() <= 0.1 * a.max(1.0)
    };
    let mut goals = Vec::new();
    let mut goal = |name: &str, met: bool, measured: String| {
        goals.push(json!({ "goal": name, "met": met, "measured": measured }));
    };
    let c_a = rmed("c /32 mvbridge", "a /32 hairpin", "host_to_vm_gbps").min(rmed(
        "c /32 mvbridge",
        "a /32 hairpin",
        "vm_to_host_gbps",
    ));
    goal(
        "(c) vs (a): host <-> VM throughput >= 20x",
        c_a >= 20.0,
        format!("{c_a:.1}x (lower of the two directions)"),
    );
    let up = med("c /26 mvbridge", "uplink_bytes_per_gb")
        .max(med("c /32 mvbridge", "uplink_bytes_per_gb"));
    goal(
        "(c): 0 bytes on the uplink for host <-> VM",
        up < 1_000.0,
        format!("{up:.0} bytes/GB"),
    );
    let inet = med("c /32 mvbridge", "vm_internet_ratio");
    goal(
        "(c): VM internet throughput during a local bulk transfer >= 0.9x alone",
        inet >= 0.9,
        format!("{inet:.2}x"),
    );
    for (g, b) in [
        ("c /26 mvbridge", "b /26 shim"),
        ("c /32 mvbridge", "b /32 shim"),
    ] {
        let t = rmed(g, b, "host_to_vm_gbps").min(rmed(g, b, "vm_to_host_gbps"));
        let rr = rmed(g, b, "rr_per_s");
        goal(
            &format!("{g} vs {b}: throughput and request/response >= 1.0x"),
            t >= 1.0 && rr >= 1.0,
            format!("throughput {t:.2}x, rr {rr:.2}x"),
        );
    }
    let b32 = med("b /32 shim", "uplink_bytes_per_gb");
    let c32 = med("c /32 mvbridge", "uplink_bytes_per_gb");
    goal(
        "(c) 0 uplink bytes where (b) still sends the /32 guest's traffic out",
        c32 < 1_000.0 && b32 > c32,
        format!("b /32 {b32:.0} bytes/GB, c /32 {c32:.0} bytes/GB"),
    );
    for g in ["c /26 mvbridge", "c /32 mvbridge"] {
        let t = rmed(g, "e veth ceiling", "host_to_vm_gbps").min(rmed(
            g,
            "e veth ceiling",
            "vm_to_host_gbps",
        ));
        let rr = rmed(g, "e veth ceiling", "rr_per_s");
        goal(
            &format!("{g} vs (e): >= 0.9x throughput and request/response"),
            t >= 0.9 && rr >= 0.9,
            format!("throughput {t:.2}x, rr {rr:.2}x"),
        );
    }
    let worst = pp("1", "uplink_minus_empty_ns")
        .max(pp("1", "vm_minus_empty_ns"))
        .max(pp("10000", "uplink_minus_empty_ns"))
        .max(pp("10000", "vm_minus_empty_ns"));
    goal(
        "per-packet program cost <= 100 ns",
        worst <= 100.0,
        format!("worst {worst:.0} ns over the empty program"),
    );
    goal(
        "per-packet cost flat (within 10%) from 1 to 10,000 VMs",
        flat("uplink_ns") && flat("vm_ns"),
        format!(
            "uplink {:.0} -> {:.0} ns, vm {:.0} -> {:.0} ns",
            pp("1", "uplink_ns"),
            pp("10000", "uplink_ns"),
            pp("1", "vm_ns"),
            pp("10000", "vm_ns")
        ),
    );
    let s = cp("start_to_attached_ms");
    goal(
        "start to attached <= 100 ms",
        s <= 100.0,
        format!("{s:.0} ms"),
    );
    let l = cp("macvtap_to_live_ms");
    goal(
        "macvtap appears -> live <= 100 ms",
        l <= 100.0,
        format!("{l:.1} ms"),
    );
    let big = control["config_10k_start_to_attached_ms"]
        .as_f64()
        .unwrap_or(f64::NAN)
        + control["tables_10k_fill_ms"].as_f64().unwrap_or(f64::NAN);
    goal(
        "10,000-VM config <= 1 s",
        big <= 1000.0,
        format!("{big:.0} ms (start with the config + filling the tables)"),
    );
    let rss = cp("rss_mib");
    goal(
        "daemon RSS <= 16 MiB",
        rss <= 16.0,
        format!(
            "{rss:.1} MiB ({:.1} MiB with the 10,000-VM config)",
            control["rss_10k_mib"].as_f64().unwrap_or(f64::NAN)
        ),
    );

    json!({
        "smoke": smoke,
        "took_s": took.as_secs_f64(),
        "machine": machine(),
        "rows": table,
        "ratios": ratios,
        "per_packet": per_packet,
        "live_bpf_stats": live,
        "control_plane": control,
        "goals": goals,
        "metrics": METRICS,
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel.trim(),
        "memory": mem.split_whitespace().nth(1).map(|k| format!("{} GiB", k.parse::<u64>().unwrap_or(0) / 1024 / 1024)),
    })
}

fn fmt(v: &Value, digits: usize) -> String {
    let m = v["median"].as_f64();
    match m {
        Some(m) if m.is_finite() => format!(
            "{m:.digits$} ({:.digits$}-{:.digits$})",
            v["min"].as_f64().unwrap_or(f64::NAN),
            v["max"].as_f64().unwrap_or(f64::NAN)
        ),
        _ => "-".to_owned(),
    }
}

fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench`{} on {} ({} cores, {}), Linux {}; the run took {:.0} s.\n",
        if r["smoke"].as_bool() == Some(true) {
            " --smoke (one short trial: not representative)"
        } else {
            ""
        },
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        r["took_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        s,
        "Every figure: median (min-max) over the trials; ratios are taken trial by trial (configurations interleaved), then summarised. The uplink is a veth to the gateway namespace with `tbf` at 1 Gbit/s on both ends. Guests are kernel guests (a macvlan in the guest's namespace), except the macvtap row (the guest emulator with vnet headers and offloads).\n"
    );
    let _ = writeln!(
        s,
        "## Goals\n\n| goal | met | measured |\n| --- | --- | --- |"
    );
    for g in r["goals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            g["goal"].as_str().unwrap_or(""),
            if g["met"].as_bool() == Some(true) {
                "yes"
            } else {
                "**no**"
            },
            g["measured"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        s,
        "\n## Data path\n\n| setup | host->VM Gbit/s | VM->host Gbit/s | NAT VM->VM Gbit/s | CPU s/GB | uplink bytes/GB | 1-byte RR /s | p50 us | p99 us | VM internet during bulk / alone |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    if let Some(rows) = r["rows"].as_object() {
        for name in bench::rows().iter().map(|x| x.name) {
            let v = &rows[name];
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt(&v["host_to_vm_gbps"], 2),
                fmt(&v["vm_to_host_gbps"], 2),
                fmt(&v["natvm_to_vm_gbps"], 2),
                fmt(&v["cpu_s_per_gb"], 2),
                fmt(&v["uplink_bytes_per_gb"], 0),
                fmt(&v["rr_per_s"], 0),
                fmt(&v["rr_p50_us"], 1),
                fmt(&v["rr_p99_us"], 1),
                fmt(&v["vm_internet_ratio"], 2),
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Ratios (trial by trial)\n\n| pair | host->VM | VM->host | NAT VM->VM | RR rate |\n| --- | --- | --- | --- | --- |"
    );
    if let Some(rs) = r["ratios"].as_object() {
        for (k, v) in rs {
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} | {} |",
                fmt(&v["host_to_vm_gbps"], 2),
                fmt(&v["vm_to_host_gbps"], 2),
                fmt(&v["natvm_to_vm_gbps"], 2),
                fmt(&v["rr_per_s"], 2)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Per-packet cost (BPF_PROG_TEST_RUN, kernel-timed average over many runs, best of 7)\n\n| VM addresses | empty program | mvb_uplink (host->VM) | minus empty | mvb_vm (VM->host) | minus empty |\n| --- | --- | --- | --- | --- | --- |"
    );
    for n in ["1", "100", "10000"] {
        let p = &r["per_packet"][n];
        let f = |k: &str| {
            p[k].as_f64()
                .map(|x| format!("{x:.0} ns"))
                .unwrap_or("-".into())
        };
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} | {} |",
            f("empty_ns"),
            f("uplink_ns"),
            f("uplink_minus_empty_ns"),
            f("vm_ns"),
            f("vm_minus_empty_ns")
        );
    }
    let live = &r["live_bpf_stats"];
    let _ = writeln!(
        s,
        "\nLive, from the kernel's BPF stats over the whole run (the empty program attached to TCX egress of the ceiling's host veth): empty {}, {}.",
        live["empty_ns"]
            .as_f64()
            .map(|x| format!("{x:.0} ns/packet"))
            .unwrap_or("-".into()),
        ["mvb_uplink", "mvb_vm", "mvb_shim", "mvb_shim_in"]
            .iter()
            .filter_map(|p| {
                live[*p]["ns"]
                    .as_f64()
                    .map(|x| format!("{p} {x:.0} ns/packet over {} runs", live[*p]["runs"]))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let c = &r["control_plane"];
    let _ = writeln!(s, "\n## Control plane\n\n| what | figure |\n| --- | --- |");
    let _ = writeln!(
        s,
        "| start to attached | {} ms |",
        fmt(&c["start_to_attached_ms"], 0)
    );
    let _ = writeln!(
        s,
        "| macvtap appears -> VM live | {} ms |",
        fmt(&c["macvtap_to_live_ms"], 1)
    );
    let _ = writeln!(s, "| daemon RSS | {} MiB |", fmt(&c["rss_mib"], 1));
    for (k, label) in [
        ("config_10k_parse_ms", "parse + check a 10,000-VM config"),
        (
            "config_10k_start_to_attached_ms",
            "start to attached with a 10,000-VM config",
        ),
        ("tables_10k_fill_ms", "fill the tables for 10,000 VMs"),
        ("rss_10k_mib", "daemon RSS with the 10,000-VM config (MiB)"),
    ] {
        let _ = writeln!(s, "| {label} | {:.1} |", c[k].as_f64().unwrap_or(f64::NAN));
    }
    let _ = writeln!(
        s,
        "\nRaw data: `target/bench/bench.json`; chart: `target/bench/bench.svg`."
    );
    // The hand-written reading of the goals not met goes with every run.
    if let Ok(analysis) = std::fs::read_to_string("docs/bench-analysis.md") {
        let _ = writeln!(s, "\n{analysis}");
    }
    s
}

/// A bar chart of median host->VM throughput and request/response rate.
fn svg(r: &Value) -> String {
    let rows = bench::rows();
    let w = 900.0;
    let bar_h = 22.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        60.0 + rows.len() as f64 * bar_h * 2.0 + 40.0
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"15\">mvbridge bench: host->VM throughput (Gbit/s, blue) and 1-byte TCP RR (k/s, orange), medians</text>"
    );
    let val = |name: &str, k: &str| r["rows"][name][k]["median"].as_f64().unwrap_or(0.0);
    let max_t = rows
        .iter()
        .map(|x| val(x.name, "host_to_vm_gbps"))
        .fold(0.1, f64::max);
    let max_r = rows
        .iter()
        .map(|x| val(x.name, "rr_per_s"))
        .fold(1.0, f64::max);
    for (i, row) in rows.iter().enumerate() {
        let y = 50.0 + i as f64 * bar_h * 2.0;
        let t = val(row.name, "host_to_vm_gbps");
        let rr = val(row.name, "rr_per_s");
        let _ = writeln!(s, "<text x=\"10\" y=\"{}\">{}</text>", y + 15.0, row.name);
        let tw = 600.0 * t / max_t;
        let rw = 600.0 * rr / max_r;
        let _ = writeln!(
            s,
            "<rect x=\"200\" y=\"{y}\" width=\"{tw:.1}\" height=\"{}\" fill=\"#3b6fb6\"/>",
            bar_h - 4.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{t:.2}</text>",
            205.0 + tw,
            y + 14.0
        );
        let _ = writeln!(
            s,
            "<rect x=\"200\" y=\"{}\" width=\"{rw:.1}\" height=\"{}\" fill=\"#e08a2c\"/>",
            y + bar_h - 2.0,
            bar_h - 6.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{:.1}k</text>",
            205.0 + rw,
            y + bar_h + 11.0,
            rr / 1000.0
        );
    }
    s.push_str("</svg>\n");
    let _ = HOST_ADDR;
    s
}
