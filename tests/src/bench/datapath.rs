//! The data-path trials: every case of every world, interleaved, several
//! times; then the rows and the trial-by-trial ratios.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use super::measure::{self, CpuMark, Transfer, bpf_delta, bpf_stats, iperf, ping_pong};
use super::report::{Case, Figures, Metric, ProgramRuns, Ratio, Row, Setup, Stat, pairs};
use super::worlds::World;
use crate::lab::INET;
use crate::netns::Netns;

/// How long each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Spans {
    /// iperf3 seconds per transfer.
    pub secs: u32,
    /// Request/response span.
    pub rr: Duration,
    pub trials: u32,
}

/// Samples of every metric of every case, trial by trial.
#[derive(Default)]
pub struct Samples {
    by_case: BTreeMap<Case, BTreeMap<Metric, Vec<f64>>>,
    internet: BTreeMap<Case, Vec<f64>>,
    /// (case, direction, program) -> (run time ns, runs, bytes moved).
    programs: BTreeMap<(Case, &'static str, String), (u64, u64, f64)>,
    /// CPU seconds of other users' processes, by name.
    pub others: BTreeMap<String, f64>,
}

impl Samples {
    fn push(&mut self, case: Case, metric: Metric, v: f64) {
        self.by_case
            .entry(case)
            .or_default()
            .entry(metric)
            .or_default()
            .push(v);
    }

    fn get(&self, case: Case, metric: Metric) -> Result<&Vec<f64>> {
        self.by_case
            .get(&case)
            .and_then(|m| m.get(&metric))
            .with_context(|| format!("{case}: {metric:?} was never measured"))
    }
}

/// Tries a measurement twice: a transfer can fail to connect once when
/// the previous one's server is still winding down; twice is an error.
fn twice<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    match f() {
        Ok(v) => Ok(v),
        Err(e) => {
            eprintln!("bench:     {what} failed once ({e:#}); again");
            std::thread::sleep(Duration::from_millis(500));
            f().with_context(|| what.to_owned())
        }
    }
}

/// A transfer with the machine's CPU and the programs' runs around it.
struct Measured {
    t: Transfer,
    cpu_s: f64,
    programs: BTreeMap<String, (u64, u64)>,
}

fn measured(s: &mut Samples, f: impl Fn() -> Result<Transfer>) -> Result<Measured> {
    let b0 = bpf_stats();
    let mark = CpuMark::now();
    let t = f()?;
    let (cpu_s, others) = mark.ours_since();
    let b1 = bpf_stats();
    for (k, v) in others {
        *s.others.entry(k).or_default() += v;
    }
    Ok(Measured {
        t,
        cpu_s,
        programs: bpf_delta(&b0, &b1),
    })
}

/// mvbridge's programs on a transfer of mvbridge's world (the other
/// worlds have none; its programs only see that world's background
/// neighbour traffic while other worlds are measured).
fn note_programs(s: &mut Samples, case: Case, dir: &'static str, m: &Measured) {
    if case.setup != Setup::Mvbridge {
        return;
    }
    for (name, (ns, runs)) in &m.programs {
        if !name.starts_with("mvb_") || name == "mvb_empty" {
            continue;
        }
        let e = s
            .programs
            .entry((case, dir, name.clone()))
            .or_insert((0, 0, 0.0));
        e.0 += ns;
        e.1 += runs;
        e.2 += m.t.bytes;
    }
}

/// One trial of one case.
fn measure_case(s: &mut Samples, w: &World, case: Case, spans: &Spans, port: u16) -> Result<()> {
    let g = w.guest(case.guest)?;
    let addr = IpAddr::V4(g.addr);
    let guest = Netns::borrowed(&g.netns);
    let host = &w.lab.host;
    let secs = spans.secs;

    let wire0 = w.wire_bytes()?;
    let down = twice("host->VM", || {
        measured(s, || iperf(host, addr, secs, false))
    })?;
    let wire1 = w.wire_bytes()?;
    let gb = down.t.bytes / 1e9;
    s.push(case, Metric::HostToVmGbps, down.t.bps / 1e9);
    s.push(case, Metric::CpuSPerGbHostToVm, down.cpu_s / gb);
    s.push(case, Metric::UplinkBytesPerGb, (wire1 - wire0) as f64 / gb);
    note_programs(s, case, "host->VM", &down);

    let up = twice("VM->host", || measured(s, || iperf(host, addr, secs, true)))?;
    s.push(case, Metric::VmToHostGbps, up.t.bps / 1e9);
    s.push(
        case,
        Metric::CpuSPerGbVmToHost,
        up.cpu_s / (up.t.bytes / 1e9),
    );
    note_programs(s, case, "VM->host", &up);

    let nat = twice("NAT VM->VM", || iperf(&w.lab.natvm, addr, secs, false))?;
    s.push(case, Metric::NatvmToVmGbps, nat.bps / 1e9);

    let (rate, p50, p99) = twice("request/response", || {
        ping_pong(host, &guest, addr, port, spans.rr)
    })?;
    s.push(case, Metric::RrPerS, rate);
    s.push(case, Metric::RrP50Us, p50);
    s.push(case, Metric::RrP99Us, p99);

    if case.measures_internet() {
        // The VM's internet throughput with a local bulk transfer running,
        // over the same alone.
        let inet = IpAddr::V4(INET);
        let alone = twice("internet alone", || iperf(&guest, inet, secs, false))?;
        let bulk = {
            let host = host.name.clone();
            let s2 = secs + 1;
            std::thread::spawn(move || iperf(&Netns::borrowed(&host), addr, s2, false))
        };
        std::thread::sleep(Duration::from_millis(300));
        let during = iperf(&guest, inet, secs, false).context("internet during a bulk transfer");
        let bulk = bulk
            .join()
            .map_err(|_| anyhow::anyhow!("bulk transfer thread panicked"))?;
        let during = during?;
        bulk.context("the bulk transfer beside the internet one")?;
        s.internet
            .entry(case)
            .or_default()
            .push(during.bps / alone.bps);
    }
    Ok(())
}

/// Runs every trial: all cases of all worlds, in declared order, one
/// after the other, `spans.trials` times.
pub fn trials(worlds: &[World], spans: &Spans, stop: &dyn Fn() -> Result<()>) -> Result<Samples> {
    let world = |setup: Setup| {
        worlds
            .iter()
            .find(|w| w.setup == setup)
            .with_context(|| format!("no world for {}", setup.name()))
    };
    let cases = Case::all();
    let mut s = Samples::default();
    for trial in 0..spans.trials {
        eprintln!("bench: trial {}/{}", trial + 1, spans.trials);
        for (i, case) in cases.iter().enumerate() {
            stop()?;
            eprintln!("bench:   {case}");
            let port = 6000 + (trial as u16) * 64 + i as u16;
            measure_case(&mut s, world(case.setup)?, *case, spans, port)
                .with_context(|| format!("{case}, trial {}", trial + 1))?;
        }
    }
    Ok(s)
}

/// The rows and ratios of the samples.
pub fn summarise(s: &Samples) -> Result<(Vec<Row>, Vec<Ratio>)> {
    let mut rows = Vec::new();
    for case in Case::all() {
        let figures = Figures::from_samples(|m| {
            Stat::of(s.get(case, m)?.clone()).with_context(|| format!("{case}: {m:?}"))
        })?;
        let internet_during_bulk = if case.measures_internet() {
            Some(Stat::of(s.internet.get(&case).cloned().with_context(
                || format!("{case}: internet during bulk never measured"),
            )?)?)
        } else {
            None
        };
        let programs = s
            .programs
            .iter()
            .filter(|((c, _, _), _)| *c == case)
            .map(|((_, dir, name), (ns, runs, bytes))| {
                let gb = bytes / 1e9;
                ProgramRuns {
                    program: name.clone(),
                    direction: (*dir).to_owned(),
                    runs_per_gb: *runs as f64 / gb,
                    bytes_per_run: bytes / *runs as f64,
                    ns_per_gb: *ns as f64 / gb,
                    ns_per_run: *ns as f64 / *runs as f64,
                }
            })
            .collect();
        rows.push(Row {
            case,
            figures,
            internet_during_bulk,
            programs,
        });
    }
    let mut ratios = Vec::new();
    for (c, b) in pairs() {
        for metric in Metric::COMPARED {
            let (x, y) = (s.get(c, metric)?, s.get(b, metric)?);
            let r: Vec<f64> = x
                .iter()
                .zip(y)
                .map(|(x, y)| match metric.better() {
                    super::report::Better::Higher => x / y,
                    super::report::Better::Lower => y / x,
                })
                .collect();
            ratios.push(Ratio {
                case: c,
                baseline: b,
                metric,
                stat: Stat::of(r).with_context(|| format!("{c} vs {b}: {metric:?}"))?,
            });
        }
    }
    Ok((rows, ratios))
}

/// The worlds, one per setup, with their iperf3 servers, each guest
/// reachable from the host.
pub fn build_worlds() -> Result<Vec<World>> {
    let mut worlds = Vec::new();
    for setup in Setup::ALL {
        eprintln!("bench: building ({}) {}", setup.letter(), setup.name());
        let mut w = World::build(setup).with_context(|| format!("building {}", setup.name()))?;
        w.serve_iperf()?;
        worlds.push(w);
    }
    for w in &worlds {
        w.check_reachable()?;
    }
    Ok(worlds)
}

/// Seconds of every stat map summed (for the machine's "others").
pub fn sorted_others(m: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m
        .iter()
        .filter(|(_, s)| **s >= 1.0)
        .map(|(k, s)| (k.clone(), *s))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// The snapshot type of [`measure::bpf_stats`].
pub type BpfSnapshot = HashMap<u32, (String, u64, u64)>;

pub fn snapshot() -> BpfSnapshot {
    measure::bpf_stats()
}
