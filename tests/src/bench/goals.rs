//! The goals, computed from the report's data: medians of one run, ratios
//! taken trial by trial.

use anyhow::{Context, Result};

use super::report::{
    Case, Control, Goal, Guest, Measured, Metric, PerPacket, Ratio, Row, ScalePoint, Setup, Target,
    limits,
};

fn m(what: impl Into<String>, value: f64, unit: &str) -> Measured {
    Measured {
        what: what.into(),
        value,
        unit: unit.into(),
    }
}

struct Data<'a> {
    rows: &'a [Row],
    ratios: &'a [Ratio],
}

impl Data<'_> {
    fn row(&self, c: Case) -> Result<&Row> {
        self.rows
            .iter()
            .find(|r| r.case == c)
            .with_context(|| format!("no row for {c}"))
    }

    fn ratio(&self, c: Case, b: Case, metric: Metric) -> Result<f64> {
        self.ratios
            .iter()
            .find(|r| r.case == c && r.baseline == b && r.metric == metric)
            .map(|r| r.stat.median)
            .with_context(|| format!("no ratio {c} vs {b} for {metric:?}"))
    }

    /// `c` against `b` on every compared figure, each at least `min`.
    fn versus(&self, c: Case, b: Case, min: f64) -> Result<(bool, Vec<Measured>)> {
        let mut met = true;
        let mut measured = Vec::new();
        for metric in Metric::COMPARED {
            let r = self.ratio(c, b, metric)?;
            met &= r >= min;
            measured.push(m(metric.short(), r, "x"));
        }
        Ok((met, measured))
    }
}

pub fn compute(
    rows: &[Row],
    ratios: &[Ratio],
    per_packet: &[PerPacket],
    control: &Control,
    scale: &[ScalePoint],
) -> Result<Vec<Goal>> {
    let d = Data { rows, ratios };
    let mut goals = Vec::new();
    let mvb = |g: Guest| Case::new(Setup::Mvbridge, g);

    for g in Setup::Mvbridge.guests() {
        let c = mvb(*g);
        let a = Case::new(Setup::Hairpin, g.routed());
        let lower =
            d.ratio(c, a, Metric::HostToVmGbps)?
                .min(d.ratio(c, a, Metric::VmToHostGbps)?);
        goals.push(Goal {
            target: Target::OverHairpin {
                guest: *g,
                min: limits::HAIRPIN_RATIO,
            },
            met: lower >= limits::HAIRPIN_RATIO,
            measured: vec![m("lower of the two directions", lower, "x")],
        });
    }
    for g in Setup::Mvbridge.guests() {
        let up = d.row(mvb(*g))?.figures.uplink_bytes_per_gb.median;
        goals.push(Goal {
            target: Target::NoUplinkBytes { guest: *g },
            met: up < limits::NO_UPLINK_BYTES,
            measured: vec![m("uplink", up, "bytes/GB")],
        });
    }
    for g in [Guest::KERNEL32, Guest::VM32] {
        let b = d
            .row(Case::new(Setup::ClassicShim, g))?
            .figures
            .uplink_bytes_per_gb
            .median;
        let c = d.row(mvb(g))?.figures.uplink_bytes_per_gb.median;
        // b's host -> VM goes through the shim; it is the guest's replies
        // (ACKs) that hairpin: a little, but on the wire.
        goals.push(Goal {
            target: Target::UplinkSparedWhereShimSends { guest: g },
            met: c < limits::NO_UPLINK_BYTES && b > c,
            measured: vec![m("b", b, "bytes/GB"), m("c", c, "bytes/GB")],
        });
    }
    for g in Setup::Mvbridge.guests() {
        if let Some(s) = &d.row(mvb(*g))?.internet_during_bulk {
            goals.push(Goal {
                target: Target::InternetDuringBulk {
                    guest: *g,
                    min: limits::INTERNET_DURING_BULK,
                },
                met: s.median >= limits::INTERNET_DURING_BULK,
                measured: vec![m("during / alone", s.median, "x")],
            });
        }
    }
    for g in Setup::Mvbridge.guests() {
        let (met, measured) = d.versus(
            mvb(*g),
            Case::new(Setup::ClassicShim, *g),
            limits::VERSUS_SHIM,
        )?;
        goals.push(Goal {
            target: Target::OverShim {
                guest: *g,
                metrics: Metric::COMPARED.to_vec(),
                min: limits::VERSUS_SHIM,
            },
            met,
            measured,
        });
    }
    for g in Setup::Mvbridge.guests() {
        let (met, measured) = d.versus(
            mvb(*g),
            Case::new(Setup::Ceiling, g.routed()),
            limits::VERSUS_CEILING,
        )?;
        goals.push(Goal {
            target: Target::OverCeiling {
                guest: *g,
                metrics: Metric::COMPARED.to_vec(),
                min: limits::VERSUS_CEILING,
            },
            met,
            measured,
        });
    }

    // Per packet.
    let worst = per_packet
        .iter()
        .flat_map(|p| [p.uplink_over_empty(), p.vm_over_empty()])
        .fold(f64::NEG_INFINITY, f64::max);
    let worst_of =
        |f: fn(&PerPacket) -> f64| per_packet.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    goals.push(Goal {
        target: Target::PerPacket {
            max_ns: limits::PER_PACKET_NS,
        },
        met: worst <= limits::PER_PACKET_NS,
        measured: vec![
            m(
                "mvb_uplink worst",
                worst_of(PerPacket::uplink_over_empty),
                "ns",
            ),
            m("mvb_vm worst", worst_of(PerPacket::vm_over_empty), "ns"),
        ],
    });
    let most = per_packet
        .iter()
        .map(|p| p.vms)
        .max()
        .context("no per-packet figures")?;
    let mut flat = true;
    let mut measured = Vec::new();
    for family in [4u8, 6] {
        let at = |n: u32| {
            per_packet
                .iter()
                .find(|p| p.vms == n && p.family == family)
                .with_context(|| format!("no per-packet figure for {n} VMs, IPv{family}"))
        };
        let (one, many) = (at(1)?, at(most)?);
        for (name, a, b) in [
            ("mvb_uplink", one.uplink_ns, many.uplink_ns),
            ("mvb_vm", one.vm_ns, many.vm_ns),
        ] {
            flat &= (b - a).abs() <= limits::FLAT_WITHIN * a;
            measured.push(m(format!("{name} IPv{family} at 1"), a, "ns"));
            measured.push(m(format!("at {most}"), b, "ns"));
        }
    }
    goals.push(Goal {
        target: Target::PerPacketFlat {
            vms: most,
            within: limits::FLAT_WITHIN,
        },
        met: flat,
        measured,
    });

    // Control plane and scale.
    let s = control.start_to_attached_ms.median;
    goals.push(Goal {
        target: Target::StartToAttached {
            vms: control.vms,
            max_ms: limits::START_SMALL_MS,
        },
        met: s <= limits::START_SMALL_MS,
        measured: vec![m("median", s, "ms")],
    });
    let big = scale
        .iter()
        .max_by_key(|p| p.vms)
        .context("no scale figures")?;
    goals.push(Goal {
        target: Target::StartToAttached {
            vms: big.vms,
            max_ms: limits::START_1000_MS,
        },
        met: big.start_to_attached_ms <= limits::START_1000_MS,
        measured: vec![m("", big.start_to_attached_ms, "ms")],
    });
    let live = big
        .macvtap_to_live_ms
        .median
        .max(big.netns_to_live_ms.median);
    goals.push(Goal {
        target: Target::LinkToLive {
            vms: big.vms,
            max_ms: limits::LINK_TO_LIVE_MS,
        },
        met: live <= limits::LINK_TO_LIVE_MS,
        measured: vec![
            m("macvtap", big.macvtap_to_live_ms.median, "ms"),
            m("netns macvlan", big.netns_to_live_ms.median, "ms"),
        ],
    });
    goals.push(Goal {
        target: Target::IdleCpu {
            vms: big.vms,
            max_percent: limits::IDLE_CPU_PERCENT,
        },
        met: big.idle_cpu_percent < limits::IDLE_CPU_PERCENT,
        measured: vec![
            m(
                format!("over {:.0} s", big.idle_s),
                big.idle_cpu_percent,
                "%",
            ),
            m("per full pass", big.pass_cpu_ms, "ms CPU"),
        ],
    });
    goals.push(Goal {
        target: Target::Rss {
            vms: big.vms,
            max_mib: limits::RSS_MIB,
        },
        met: big.rss_mib <= limits::RSS_MIB,
        measured: vec![m("", big.rss_mib, "MiB")],
    });
    let cfg = control.config_10k_start_to_attached_ms + control.config_10k_fill_ms;
    goals.push(Goal {
        target: Target::Config10k {
            max_ms: limits::CONFIG_10K_MS,
        },
        met: cfg <= limits::CONFIG_10K_MS,
        measured: vec![
            m("start", control.config_10k_start_to_attached_ms, "ms"),
            m("fill", control.config_10k_fill_ms, "ms"),
        ],
    });
    let (ok, all) = scale
        .iter()
        .flat_map(|p| &p.pings)
        .fold((0, 0), |(ok, all), p| {
            (ok + usize::from(p.v4) + usize::from(p.v6), all + 2)
        });
    goals.push(Goal {
        target: Target::PingsAtScale,
        met: ok == all && all > 0,
        measured: vec![m("answered", ok as f64, &format!("of {all}"))],
    });
    Ok(goals)
}
