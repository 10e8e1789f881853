//! The report as BENCHMARKS.md and as an SVG chart.

use std::fmt::Write as _;

use super::report::{Case, Metric, Report, Setup, Stat, pairs};

/// The heading the hand-written analysis starts with; everything from it
/// on is kept from the previous BENCHMARKS.md.
pub const ANALYSIS_HEADING: &str = "## Analysis of the goals not met";

fn fmt_stat(s: &Stat, digits: usize) -> String {
    format!(
        "{:.digits$} ({:.digits$}-{:.digits$})",
        s.median, s.min, s.max
    )
}

fn fmt_value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    match unit {
        "x" => format!("{v:.2}x"),
        "" => format!("{v:.digits$}"),
        u => format!("{v:.digits$} {u}"),
    }
}

/// BENCHMARKS.md's generated part, followed by `analysis` (the
/// hand-written part, heading included).
pub fn markdown(r: &Report, analysis: Option<&str>) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench`{} on {} ({} cores, {} GiB), Linux {}; {} trials; the run took {:.0} s. Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        if r.smoke {
            " --smoke (one short trial: not representative)"
        } else {
            ""
        },
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        r.trials,
        r.took_s,
        m.load_start,
        m.load_end
    );
    if !m.others.is_empty() {
        let list: Vec<String> = m
            .others
            .iter()
            .map(|(n, s)| format!("{n} {s:.0} s"))
            .collect();
        let _ = writeln!(
            s,
            "Other users' processes took CPU during the data-path trials (taken out of the CPU figures): {}.\n",
            list.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "Every figure: median (min-max) over the trials; ratios are taken trial by trial (configurations interleaved), then summarised, and read \"above 1.0 is better for the first\" (case/baseline for throughput and request rate, baseline/case for CPU per GB). The uplink is a veth to the gateway namespace with `tbf` at 1 Gbit/s on both ends. Kernel guests are a macvlan in the guest's namespace (a veth in d and e); VM guests are the guest emulator with virtio-net headers and offloads, on a macvtap (a tap in d and e), as qemu runs a VM. CPU per GB is the whole machine's busy time during the transfer without other users' processes.\n"
    );

    let _ = writeln!(
        s,
        "## Goals\n\n| goal | met | measured |\n| --- | --- | --- |"
    );
    for g in &r.goals {
        let measured: Vec<String> = g
            .measured
            .iter()
            .map(|x| {
                let v = fmt_value(x.value, &x.unit);
                if x.what.is_empty() {
                    v
                } else {
                    format!("{} {v}", x.what)
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            g.target.describe(),
            if g.met { "yes" } else { "**no**" },
            measured.join(", ")
        );
    }

    let _ = write!(s, "\n## Data path\n\n| setup | guest |");
    for metric in Metric::ALL {
        let _ = write!(s, " {} |", metric.label());
    }
    let _ = writeln!(s, " VM internet during bulk / alone |");
    let _ = writeln!(s, "|{}", " --- |".repeat(Metric::ALL.len() + 3));
    for row in &r.rows {
        let _ = write!(
            s,
            "| {} {} | {} |",
            row.case.setup.letter(),
            row.case.setup.name(),
            row.case.guest
        );
        for metric in Metric::ALL {
            let _ = write!(
                s,
                " {} |",
                fmt_stat(row.figures.get(metric), metric.digits())
            );
        }
        let _ = writeln!(
            s,
            " {} |",
            row.internet_during_bulk
                .as_ref()
                .map(|x| fmt_stat(x, 2))
                .unwrap_or_else(|| "-".into())
        );
    }

    let _ = writeln!(
        s,
        "\n## Ratios (trial by trial; above 1.0: the first is better)\n"
    );
    let _ = write!(s, "| pair |");
    for metric in Metric::COMPARED {
        let _ = write!(s, " {} |", metric.short());
    }
    let _ = writeln!(s, "\n|{}", " --- |".repeat(Metric::COMPARED.len() + 1));
    for (c, b) in pairs() {
        let _ = write!(s, "| {} vs {} |", short(c), short(b));
        for metric in Metric::COMPARED {
            let cell = r
                .ratio(c, b, metric)
                .map(|x| fmt_stat(&x.stat, 2))
                .unwrap_or_else(|| "-".into());
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(
        s,
        "\n## mvbridge's programs on each transfer (kernel BPF statistics, summed over the trials)\n\nRuns per GB and bytes per run say whether GSO packets pass the hooks whole (~64 KiB a run) or as frames.\n\n| case | direction | program | runs/GB | bytes/run | ns/run | us/GB |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in &r.rows {
        for p in &row.programs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                short(row.case),
                p.direction,
                p.program,
                p.runs_per_gb,
                p.bytes_per_run,
                p.ns_per_run,
                p.ns_per_gb / 1000.0
            );
        }
    }

    let _ = writeln!(
        s,
        "\n## Per-packet cost (BPF_PROG_TEST_RUN, kernel-timed average over many runs, least of 7)\n\nVM a of the lab plus VMs only the tables know (their MACs, links and addresses: IPv6 for all, IPv4 for the first 380, which is what the documentation prefixes hold).\n\n| VMs | family | empty program | mvb_uplink (host->VM) | minus empty | mvb_vm (VM->host) | minus empty |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for p in &r.per_packet {
        let _ = writeln!(
            s,
            "| {} | IPv{} | {:.0} ns | {:.0} ns | {:.0} ns | {:.0} ns | {:.0} ns |",
            p.vms,
            p.family,
            p.empty_ns,
            p.uplink_ns,
            p.uplink_over_empty(),
            p.vm_ns,
            p.vm_over_empty()
        );
    }
    let live: Vec<String> = r
        .live
        .programs
        .iter()
        .map(|p| {
            format!(
                "{} {:.0} ns/run over {} runs",
                p.program, p.ns_per_run, p.runs
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "\nLive, from the kernel's BPF statistics over the data-path trials (the empty program attached to the egress hook of the ceiling's host veth): empty {:.0} ns/run over {} runs; {}.",
        r.live.empty.ns_per_run,
        r.live.empty.runs,
        live.join(", ")
    );

    let c = &r.control;
    let _ = writeln!(
        s,
        "\n## Control plane ({} VMs, the demo's)\n\n| what | figure |\n| --- | --- |",
        c.vms
    );
    let _ = writeln!(
        s,
        "| start to attached | {} ms |",
        fmt_stat(&c.start_to_attached_ms, 1)
    );
    let _ = writeln!(
        s,
        "| macvtap appears -> VM live | {} ms |",
        fmt_stat(&c.macvtap_to_live_ms, 1)
    );
    let _ = writeln!(s, "| daemon RSS | {} MiB |", fmt_stat(&c.rss_mib, 1));
    let _ = writeln!(
        s,
        "| parse + check a 10,000-VM config | {:.1} ms |",
        c.config_10k_parse_ms
    );
    let _ = writeln!(
        s,
        "| start to attached with a 10,000-VM config (no links present) | {:.1} ms |",
        c.config_10k_start_to_attached_ms
    );
    let _ = writeln!(
        s,
        "| write the tables for 10,000 VMs | {:.1} ms |",
        c.config_10k_fill_ms
    );
    let _ = writeln!(
        s,
        "| daemon RSS with the 10,000-VM config | {:.1} MiB |",
        c.config_10k_rss_mib
    );

    let _ = write!(
        s,
        "\n## Scale (VM links present on one uplink: half macvtaps, half macvlans in namespaces of their own)\n\n| N VM links |"
    );
    for p in &r.scale {
        let _ = write!(s, " {} |", p.vms);
    }
    let _ = writeln!(s, "\n|{}", " --- |".repeat(r.scale.len() + 1));
    let line = |s: &mut String, label: &str, f: &dyn Fn(&super::report::ScalePoint) -> String| {
        let _ = write!(s, "| {label} |");
        for p in &r.scale {
            let _ = write!(s, " {} |", f(p));
        }
        let _ = writeln!(s);
    };
    line(&mut s, "macvtaps / netns macvlans", &|p| {
        format!("{} / {}", p.macvtaps, p.netns_vms)
    });
    line(&mut s, "making the links (ip -batch)", &|p| {
        format!("{:.1} s", p.setup_s)
    });
    line(&mut s, "VMs live at start", &|p| {
        p.live_at_start.to_string()
    });
    line(&mut s, "start to attached", &|p| {
        format!("{:.0} ms", p.start_to_attached_ms)
    });
    line(&mut s, "full pass: observe (debug log)", &|p| {
        format!("{} ms", fmt_stat(&p.pass_observe_ms, 1))
    });
    line(&mut s, "full pass: plan (debug log)", &|p| {
        format!("{} ms", fmt_stat(&p.pass_plan_ms, 2))
    });
    line(&mut s, "full pass: apply (links, tables, hooks)", &|p| {
        format!("{} ms", fmt_stat(&p.pass_apply_ms, 1))
    });
    line(&mut s, "full pass: total", &|p| {
        format!("{} ms", fmt_stat(&p.pass_ms, 1))
    });
    line(&mut s, "full pass: daemon CPU per pass", &|p| {
        format!("{:.1} ms", p.pass_cpu_ms)
    });
    line(&mut s, "`mvbridge check` (wall)", &|p| {
        format!("{:.0} ms", p.check_ms)
    });
    line(&mut s, "macvtap appears -> live", &|p| {
        format!("{} ms", fmt_stat(&p.macvtap_to_live_ms, 1))
    });
    line(&mut s, "netns macvlan moved in -> live", &|p| {
        format!("{} ms", fmt_stat(&p.netns_to_live_ms, 1))
    });
    line(&mut s, "idle daemon CPU", &|p| {
        format!(
            "{:.2} % over {:.0} s ({} passes)",
            p.idle_cpu_percent, p.idle_s, p.passes_while_idle
        )
    });
    line(&mut s, "daemon RSS", &|p| format!("{:.1} MiB", p.rss_mib));
    line(&mut s, "host <-> sampled VMs ping (v4, v6)", &|p| {
        let ok = p.pings.iter().filter(|x| x.v4 && x.v6).count();
        format!("{ok}/{} answer both", p.pings.len())
    });

    let _ = writeln!(
        s,
        "\nRaw data: `target/bench/bench.json` (its types: `tests/src/bench/report.rs`); chart: `target/bench/bench.svg`.\n"
    );
    if let Some(a) = analysis {
        s.push_str(a.trim_end());
        s.push('\n');
    }
    s
}

/// "c kernel /26".
fn short(c: Case) -> String {
    format!("{} {}", c.setup.letter(), c.guest)
}

/// The hand-written analysis of an earlier BENCHMARKS.md: from its
/// heading to the end.
pub fn analysis_of(previous: &str) -> Option<String> {
    let at = previous.find(ANALYSIS_HEADING)?;
    Some(previous[at..].to_owned())
}

/// A bar chart of median host->VM throughput and request/response rate.
pub fn svg(r: &Report) -> String {
    let w = 900.0;
    let bar_h = 22.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        60.0 + r.rows.len() as f64 * bar_h * 2.0 + 40.0
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"15\">mvbridge bench: host->VM throughput (Gbit/s, blue) and 1-byte TCP RR (k/s, orange), medians</text>"
    );
    let max_t = r
        .rows
        .iter()
        .map(|x| x.figures.host_to_vm_gbps.median)
        .fold(0.1, f64::max);
    let max_r = r
        .rows
        .iter()
        .map(|x| x.figures.rr_per_s.median)
        .fold(1.0, f64::max);
    for (i, row) in r.rows.iter().enumerate() {
        let y = 50.0 + i as f64 * bar_h * 2.0;
        let t = row.figures.host_to_vm_gbps.median;
        let rr = row.figures.rr_per_s.median;
        let label = format!(
            "{} {}, {}",
            row.case.setup.letter(),
            row.case.setup.name(),
            row.case.guest
        );
        let _ = writeln!(s, "<text x=\"10\" y=\"{}\">{label}</text>", y + 15.0);
        let tw = 600.0 * t / max_t;
        let rw = 600.0 * rr / max_r;
        let colour = if row.case.setup == Setup::Mvbridge {
            "#2a4f8a"
        } else {
            "#3b6fb6"
        };
        let _ = writeln!(
            s,
            "<rect x=\"200\" y=\"{y}\" width=\"{tw:.1}\" height=\"{}\" fill=\"{colour}\"/>",
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
    s
}
