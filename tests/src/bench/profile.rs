//! `mvb-bench --only profile`: where mvbridge's paths spend their time,
//! against the classic shim's, for one kind of guest at a time. Not part
//! of the timed run (perf itself costs CPU); its output is read by people.
//!
//! For each guest (kernel /26, VM /26) and direction of (b) and (c):
//! - every skb event of the network stack per GB moved, by device, from
//!   the kernel's tracepoints: `net_dev_start_xmit` (a driver's transmit,
//!   with its GSO state and checksum state), `netif_receive_skb` (a
//!   receive by the stack of that device), `netif_rx` (a trip through a
//!   CPU's backlog queue, what a redirect into ingress or a veth forward
//!   costs);
//! - the kernel's BPF statistics of mvbridge's programs per GB;
//! - a CPU profile (`perf record -a`, samples of the bench's own
//!   processes), as CPU milliseconds per GB by symbol, (c) against (b):
//!   the symbols that differ most.
//!
//! And the same events per request/response transaction (1-byte TCP).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::measure::{bpf_delta, bpf_stats, iperf, ping_pong};
use super::report::{Case, Guest, Setup};
use super::worlds::World;
use crate::netns::Netns;

const EVENTS: [&str; 3] = [
    "net:net_dev_start_xmit",
    "net:netif_receive_skb",
    "net:netif_rx",
];

/// perf's sampling rate for the CPU profiles.
const HZ: f64 = 999.0;

/// Counts of one event on one device.
#[derive(Default, Clone, Copy)]
struct Count {
    n: u64,
    bytes: u64,
    /// GSO packets among them (gso_size > 0).
    gso: u64,
    /// ip_summed = CHECKSUM_PARTIAL (3) among them.
    partial: u64,
}

/// Runs `perf record` with `args` for `secs` while `work` runs (started
/// 200 ms in); returns `work`'s result.
fn under_perf<T>(
    file: &Path,
    args: &[&str],
    secs: u32,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let mut perf = std::process::Command::new("perf")
        .arg("record")
        .args(args)
        .args(["-a", "-o"])
        .arg(file)
        .args(["--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf (apt-get install linux-perf)")?;
    std::thread::sleep(Duration::from_millis(200));
    let out = work();
    let status = perf.wait()?;
    if !status.success() {
        bail!("perf record failed ({status})");
    }
    out
}

fn events(file: &Path) -> Result<BTreeMap<(String, String), Count>> {
    let out = crate::sh::run(&[
        "perf",
        "script",
        "-i",
        &file.display().to_string(),
        "-F",
        "event,trace",
    ])?;
    let mut counts: BTreeMap<(String, String), Count> = BTreeMap::new();
    for line in out.lines() {
        let line = line.trim();
        let Some((event, rest)) = line.split_once(": ") else {
            continue;
        };
        let kv: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let dev = kv.get("dev").copied().unwrap_or("?").to_owned();
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let c = counts
            .entry((event.trim_end_matches(':').to_owned(), dev))
            .or_default();
        c.n += 1;
        c.bytes += num("len");
        c.gso += u64::from(num("gso_size") > 0);
        c.partial += u64::from(num("ip_summed") == 3);
    }
    Ok(counts)
}

/// Samples by symbol of the bench's processes (iperf3, the emulator,
/// softirq threads, the daemon), and their total.
fn symbol_samples(file: &Path) -> Result<(BTreeMap<String, u64>, u64)> {
    let out = crate::sh::run(&[
        "perf",
        "report",
        "-i",
        &file.display().to_string(),
        "--stdio",
        "-n",
        "--no-children",
        "--comms",
        "iperf3,mvb-guest,ksoftirqd/0,ksoftirqd/1,mvbridge",
        "--sort",
        "sym",
        "-g",
        "none",
    ])?;
    let mut by = BTreeMap::new();
    let mut total = 0;
    for l in out.lines() {
        let mut w = l.split_whitespace();
        let (Some(pct), Some(n)) = (w.next(), w.next()) else {
            continue;
        };
        if !pct.ends_with('%') {
            continue;
        }
        let Ok(n) = n.parse::<u64>() else { continue };
        let sym: Vec<&str> = w.collect();
        total += n;
        *by.entry(sym.join(" ")).or_default() += n;
    }
    Ok((by, total))
}

/// CPU ms per GB by symbol, (b) against (c): the symbols that differ
/// most, and the totals.
fn cpu_diff(
    s: &mut String,
    b: &(BTreeMap<String, u64>, u64, f64),
    c: &(BTreeMap<String, u64>, u64, f64),
) {
    let ms = |n: u64, gb: f64| n as f64 / HZ * 1000.0 / gb;
    let _ = writeln!(
        s,
        "CPU of the bench's processes (perf samples at {HZ} Hz, in ms per GB): b {:.0}, c {:.0}. Symbols that differ most:\n\n| symbol | b ms/GB | c ms/GB | c - b |\n| --- | --- | --- | --- |",
        ms(b.1, b.2),
        ms(c.1, c.2)
    );
    let mut syms: Vec<(&String, f64, f64)> =
        b.0.keys()
            .chain(c.0.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|k| {
                (
                    k,
                    ms(b.0.get(k).copied().unwrap_or(0), b.2),
                    ms(c.0.get(k).copied().unwrap_or(0), c.2),
                )
            })
            .collect();
    syms.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
    for (k, vb, vc) in syms.into_iter().take(20) {
        let _ = writeln!(s, "| `{k}` | {vb:.1} | {vc:.1} | {:+.1} |", vc - vb);
    }
    let _ = writeln!(s);
}

fn table(s: &mut String, counts: &BTreeMap<(String, String), Count>, per: f64, unit: &str) {
    let _ = writeln!(
        s,
        "| event | device | per {unit} | bytes each | GSO | CHECKSUM_PARTIAL |\n| --- | --- | --- | --- | --- | --- |"
    );
    // Neighbour and multicast chatter of the labs is not the transfer.
    let most = counts.values().map(|c| c.n).max().unwrap_or(0);
    for ((event, dev), c) in counts.iter().filter(|(_, c)| c.n * 100 >= most) {
        let _ = writeln!(
            s,
            "| {} | {dev} | {:.1} | {:.0} | {:.0} % | {:.0} % |",
            event.trim_start_matches("net:"),
            c.n as f64 / per,
            c.bytes as f64 / c.n as f64,
            100.0 * c.gso as f64 / c.n as f64,
            100.0 * c.partial as f64 / c.n as f64
        );
    }
}

fn programs_line(progs: &BTreeMap<String, (u64, u64)>, per: f64, unit: &str) -> String {
    let v: Vec<String> = progs
        .iter()
        .filter(|(n, _)| n.starts_with("mvb_"))
        .map(|(n, (ns, runs))| {
            format!(
                "{n} {:.2} runs/{unit}, {:.0} ns/run",
                *runs as f64 / per,
                *ns as f64 / *runs as f64
            )
        })
        .collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join("; ")
    }
}

/// Profiles (b) and (c) with kernel and VM /26 guests; returns the
/// markdown and writes it and the perf data under `dir`.
pub fn run(dir: &Path, secs: u32) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let mut worlds = Vec::new();
    for setup in [Setup::ClassicShim, Setup::Mvbridge] {
        let mut w = World::build(setup)?;
        w.serve_iperf()?;
        w.check_reachable()?;
        worlds.push(w);
    }
    let ev_args: Vec<&str> = EVENTS.iter().flat_map(|e| ["-e", *e]).collect();
    let hz = format!("{HZ}");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Profile: mvbridge's paths against the classic shim\n\nProduced by `mvb-bench --only profile`: {secs} s transfers, perf data in `{}`. Event counts are per GB moved (per transaction for request/response); ns/run from the kernel's BPF statistics.\n",
        dir.display()
    );
    for guest in [Guest::KERNEL26, Guest::VM26] {
        for (dir_name, reverse) in [("host->VM", false), ("VM->host", true)] {
            let mut cpu = Vec::new();
            for w in &worlds {
                let case = Case::new(w.setup, guest);
                let g = w.guest(guest)?;
                let addr = IpAddr::V4(g.addr);
                let host = &w.lab.host;
                let base = format!(
                    "{}-{:?}-{}",
                    w.setup.letter(),
                    guest.kind,
                    if reverse { "up" } else { "down" }
                )
                .to_lowercase();
                let ev_file = dir.join(format!("{base}-events.data"));
                let b0 = bpf_stats();
                let t = under_perf(&ev_file, &ev_args, secs + 1, || {
                    iperf(host, addr, secs, reverse)
                })?;
                let progs = bpf_delta(&b0, &bpf_stats());
                let gb = t.bytes / 1e9;
                let _ = writeln!(
                    s,
                    "## {case}, {dir_name}\n\n{:.2} Gbit/s under the event trace.\n",
                    t.bps / 1e9
                );
                table(&mut s, &events(&ev_file)?, gb, "GB");
                let _ = writeln!(s, "\nPrograms: {}.\n", programs_line(&progs, gb, "GB"));
                let cpu_file = dir.join(format!("{base}-cpu.data"));
                let t2 = under_perf(&cpu_file, &["-g", "-F", &hz], secs + 1, || {
                    iperf(host, addr, secs, reverse)
                })?;
                let (by, total) = symbol_samples(&cpu_file)?;
                cpu.push((by, total, t2.bytes / 1e9));
            }
            let _ = writeln!(s, "### CPU, {guest}, {dir_name}\n");
            cpu_diff(&mut s, &cpu[0], &cpu[1]);
        }
        for w in &worlds {
            let case = Case::new(w.setup, guest);
            let g = w.guest(guest)?;
            let addr = IpAddr::V4(g.addr);
            let ev_file = dir.join(
                format!("{}-{:?}-rr-events.data", w.setup.letter(), guest.kind).to_lowercase(),
            );
            let guest_ns = Netns::borrowed(&g.netns);
            let span = Duration::from_secs(u64::from(secs));
            let b0 = bpf_stats();
            let (rate, p50, _) = under_perf(&ev_file, &ev_args, secs + 1, || {
                ping_pong(&w.lab.host, &guest_ns, addr, 7000, span)
            })?;
            let progs = bpf_delta(&b0, &bpf_stats());
            let n = rate * span.as_secs_f64();
            let _ = writeln!(
                s,
                "## {case}, 1-byte request/response\n\n{rate:.0} transactions/s, p50 {p50:.1} us (under the event trace).\n"
            );
            table(&mut s, &events(&ev_file)?, n, "transaction");
            let _ = writeln!(
                s,
                "\nPrograms: {}.\n",
                programs_line(&progs, n, "transaction")
            );
        }
    }
    std::fs::write(dir.join("profile.md"), &s)?;
    Ok(s)
}
