//! `cargo xtask bench`: mvbridge against every way users connect a host
//! and its VMs today, in one run, configurations interleaved, each
//! measured several times; ratios are taken trial by trial. Then the
//! programs' per-packet cost, the control plane, and the daemon at scale.
//!
//! usage: mvb-bench [--smoke] [--out DIR] [--markdown FILE] [--only scale|cost|profile] [--scale N,N,...]
//!
//! `--only scale|cost` runs one section and prints its figures as JSON,
//! writing nothing (for working on that section); `--only profile` profiles
//! mvbridge's paths against the classic shim with perf and writes
//! DIR/profile/profile.md (see `mvbridge_tests::bench::profile`).
//!
//! Writes DIR/bench.json (the typed report, `mvbridge_tests::bench::report`)
//! and DIR/bench.svg; with --markdown, FILE (BENCHMARKS.md), keeping the
//! hand-written analysis FILE already has. Every lab it builds is removed
//! again, also on failure or SIGINT/SIGTERM (checked between measurements).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mvbridge_tests::bench::datapath::{self, Spans};
use mvbridge_tests::bench::report::{Guest, Machine, Report, Setup};
use mvbridge_tests::bench::{cost, goals, profile, render, scale, worlds};

struct Opts {
    smoke: bool,
    out: PathBuf,
    markdown: Option<PathBuf>,
    only: Option<String>,
    /// The scale section's N, instead of the defaults.
    scale: Option<Vec<usize>>,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        smoke: false,
        out: PathBuf::from("target/bench"),
        markdown: None,
        only: None,
        scale: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => o.smoke = true,
            "--out" => o.out = it.next().map(PathBuf::from).context("--out DIR")?,
            "--only" => o.only = Some(it.next().context("--only SECTION")?),
            "--scale" => {
                let list = it.next().context("--scale N,N,...")?;
                o.scale = Some(
                    list.split(',')
                        .map(|n| n.parse().with_context(|| format!("--scale {list}")))
                        .collect::<Result<_>>()?,
                );
            }
            "--markdown" => {
                o.markdown = Some(it.next().map(PathBuf::from).context("--markdown FILE")?)
            }
            other => bail!(
                "unknown argument {other}; usage: mvb-bench [--smoke] [--out DIR] [--markdown FILE] [--only scale|cost|profile] [--scale N,N,...]"
            ),
        }
    }
    Ok(o)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM ask the bench to stop at the next measurement, so the
/// labs' destructors run. A handler (not a blocked mask) because children
/// inherit masks but not handlers: the daemon must still get its SIGTERM.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn main() -> Result<()> {
    let o = opts()?;
    catch_signals();
    let t_start = Instant::now();
    let load_start = loadavg();
    let spans = if o.smoke {
        Spans {
            secs: 1,
            rr: Duration::from_millis(300),
            trials: 1,
        }
    } else {
        Spans {
            secs: 2,
            rr: Duration::from_millis(1500),
            trials: 5,
        }
    };
    // Held for the whole run: the kernel counts programs' run time only
    // while somebody holds this.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling the kernel's BPF run-time statistics")?;

    let counts: &[usize] = match (&o.scale, o.smoke) {
        (Some(list), _) => list,
        (None, true) => &scale::SMOKE,
        (None, false) => &scale::FULL,
    };
    match o.only.as_deref() {
        None => {}
        Some("scale") => {
            let v = scale::run(counts, o.smoke, &o.out, &stop)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        Some("cost") => {
            let pp = cost::per_packet(o.smoke)?;
            let c = cost::control_plane(o.smoke)?;
            println!("{}", serde_json::to_string_pretty(&(pp, c))?);
            return Ok(());
        }
        Some("profile") => {
            let text = profile::run(&o.out.join("profile"), if o.smoke { 1 } else { 5 })?;
            println!("{text}");
            return Ok(());
        }
        Some(other) => bail!("--only {other}: scale, cost or profile"),
    }

    let worlds = datapath::build_worlds()?;
    // The empty program, attached the way mvbridge's are (TCX egress), on
    // the ceiling's host-side veth: the live baseline.
    let ceiling = worlds
        .iter()
        .find(|w| w.setup == Setup::Ceiling)
        .context("no ceiling")?;
    let baseline = cost::attach_baseline(
        &ceiling.lab,
        &ceiling.lab.host,
        &worlds::routed_link(Guest::KERNEL32),
    )?;
    let before = datapath::snapshot();
    let samples = datapath::trials(&worlds, &spans, &stop)?;
    let after = datapath::snapshot();
    let live = cost::live(&baseline, &before, &after)?;
    drop(baseline);
    drop(worlds);
    let (rows, ratios) = datapath::summarise(&samples)?;

    stop()?;
    eprintln!("bench: per-packet cost (BPF_PROG_TEST_RUN)");
    let per_packet = cost::per_packet(o.smoke)?;
    stop()?;
    eprintln!("bench: control plane");
    let control = cost::control_plane(o.smoke)?;
    let scale = scale::run(counts, o.smoke, &o.out, &stop)?;

    let goals = goals::compute(&rows, &ratios, &per_packet, &control, &scale)?;
    let report = Report {
        smoke: o.smoke,
        trials: spans.trials,
        took_s: t_start.elapsed().as_secs_f64(),
        machine: machine(load_start, datapath::sorted_others(&samples.others)),
        rows,
        ratios,
        per_packet,
        live,
        control,
        scale,
        goals,
    };
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(
        o.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(o.out.join("bench.svg"), render::svg(&report))?;
    let analysis = o.markdown.as_ref().and_then(|md| {
        std::fs::read_to_string(md)
            .ok()
            .and_then(|t| render::analysis_of(&t))
    });
    let text = render::markdown(&report, analysis.as_deref());
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine(load_start: String, others: Vec<(String, f64)>) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        memory_gib: (mem_kib + 512 * 1024) / 1024 / 1024,
        kernel: kernel.trim().to_owned(),
        load_start,
        load_end: loadavg(),
        others,
    }
}
