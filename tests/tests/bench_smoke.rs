//! The benchmark's smoke mode: one short trial of every setup and every
//! measurement, and the scale section at N = 10, so `cargo xtask bench`
//! cannot rot between real runs. Reads the report back through its types
//! and asserts that everything the bench declares was produced, not what
//! it measured (speed targets belong to the benchmark itself). Needs root
//! and iperf3.

use mvbridge_tests::bench::report::{
    Case, GuestKind, Metric, Report, Setup, Target, limits, pairs,
};
use mvbridge_tests::bench::scale;
use mvbridge_tests::bins;

#[test]
fn the_benchmark_runs_end_to_end() {
    let out_dir = std::env::temp_dir().join(format!("mvb-bench-smoke-{}", std::process::id()));
    let out = std::process::Command::new(bins::path("mvb-bench").unwrap())
        .args(["--smoke", "--out", &out_dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(out_dir.join("bench.json")).unwrap();
    let report: Report = serde_json::from_slice(&text).unwrap();
    assert!(report.smoke);

    // Every declared case has a row with every figure, and nothing else
    // has one.
    let cases = Case::all();
    assert_eq!(
        report.rows.iter().map(|r| r.case).collect::<Vec<_>>(),
        cases,
        "rows are the declared cases, in order"
    );
    for case in &cases {
        let row = report.row(*case).unwrap();
        for metric in Metric::ALL {
            let s = row.figures.get(metric);
            assert!(
                s.is_consistent() && s.min >= 0.0,
                "{case}: {metric:?} = {s:?}"
            );
            assert_eq!(
                s.samples.len(),
                report.trials as usize,
                "{case}: {metric:?}"
            );
        }
        for m in Metric::PATHS {
            assert!(
                row.figures.get(m).median > 0.05,
                "{case} moved nothing: {m:?}"
            );
        }
        assert_eq!(
            row.internet_during_bulk.is_some(),
            case.measures_internet(),
            "{case}: internet during bulk"
        );
        // mvbridge's programs ran on its own transfers, and only there.
        assert_eq!(
            !row.programs.is_empty(),
            case.setup == Setup::Mvbridge,
            "{case}: programs {:?}",
            row.programs
        );
    }
    for (c, b) in pairs() {
        for metric in Metric::COMPARED {
            let r = report
                .ratio(c, b, metric)
                .unwrap_or_else(|| panic!("no ratio {c} vs {b}: {metric:?}"));
            assert!(r.stat.is_consistent(), "{c} vs {b}: {metric:?}");
        }
    }

    // Local traffic of mvbridge's guests never touched the wire; the
    // hairpin's did.
    for g in Setup::Mvbridge.guests() {
        let c = report.row(Case::new(Setup::Mvbridge, *g)).unwrap();
        // A stray neighbour probe may cross; the transfer may not. A smoke
        // transfer is short (on a TCG VM ~0.06 GB), so one stray frame is
        // ~1,500 bytes per GB there; the transfer crossing would be ~1e9,
        // its ACKs hairpinning ~1e6 (b /32's figure).
        assert!(
            c.figures.uplink_bytes_per_gb.max < 100.0 * limits::NO_UPLINK_BYTES,
            "{}: uplink bytes {:?}",
            c.case,
            c.figures.uplink_bytes_per_gb
        );
    }
    for g in Setup::Hairpin.guests() {
        let a = report.row(Case::new(Setup::Hairpin, *g)).unwrap();
        assert!(
            a.figures.uplink_bytes_per_gb.min > 1e8,
            "{}: the hairpin's traffic should cross the wire",
            a.case
        );
    }

    // Per packet: both families at 1 VM and at the most.
    for family in [4, 6] {
        let at: Vec<u32> = report
            .per_packet
            .iter()
            .filter(|p| p.family == family)
            .map(|p| p.vms)
            .collect();
        assert!(at.contains(&1) && at.len() >= 2, "IPv{family}: {at:?}");
    }
    assert!(report.live.empty.runs > 0);
    for p in ["mvb_uplink", "mvb_vm", "mvb_shim", "mvb_shim_in"] {
        assert!(
            report
                .live
                .programs
                .iter()
                .any(|l| l.program == p && l.runs > 0),
            "{p} never ran: {:?}",
            report.live.programs
        );
    }
    assert!(report.control.macvtap_to_live_ms.median > 0.0);

    // The scale section at the smoke's N, every figure there, every VM
    // live, every sampled VM answering.
    let ns: Vec<usize> = report.scale.iter().map(|p| p.vms).collect();
    assert_eq!(ns, scale::SMOKE.to_vec());
    for p in &report.scale {
        assert_eq!(p.live_at_start, p.vms);
        assert_eq!(p.macvtaps + p.netns_vms, p.vms);
        assert!(p.start_to_attached_ms > 0.0 && p.rss_mib > 0.0);
        for s in [
            &p.pass_observe_ms,
            &p.pass_plan_ms,
            &p.pass_apply_ms,
            &p.pass_ms,
            &p.macvtap_to_live_ms,
            &p.netns_to_live_ms,
        ] {
            assert!(s.is_consistent(), "N = {}: {s:?}", p.vms);
        }
        assert!(p.passes_while_idle > 0 && p.idle_cpu_percent.is_finite());
        for kind in [GuestKind::Vm, GuestKind::Kernel] {
            assert!(
                p.pings.iter().any(|x| x.kind == kind),
                "no {kind:?} sampled"
            );
        }
        for ping in &p.pings {
            assert!(ping.v4 && ping.v6, "N = {}: {ping:?}", p.vms);
        }
    }

    // The goals: mvbridge against the shim and the ceiling for every
    // guest it runs with, and the scale targets at the largest N.
    for g in Setup::Mvbridge.guests() {
        for want in [
            |t: &Target, g| matches!(t, Target::OverShim { guest, .. } if *guest == g),
            |t: &Target, g| matches!(t, Target::OverCeiling { guest, .. } if *guest == g),
        ] {
            assert!(
                report.goals.iter().any(|x| want(&x.target, *g)),
                "no goal against the shim and the ceiling for {g}"
            );
        }
    }
    let most = *ns.iter().max().unwrap();
    let at_scale = |t: &Target| match t {
        Target::StartToAttached { vms, .. } => Some(("start", *vms)),
        Target::LinkToLive { vms, .. } => Some(("link to live", *vms)),
        Target::IdleCpu { vms, .. } => Some(("idle CPU", *vms)),
        Target::Rss { vms, .. } => Some(("RSS", *vms)),
        _ => None,
    };
    for kind in ["start", "link to live", "idle CPU", "RSS"] {
        assert!(
            report
                .goals
                .iter()
                .any(|g| at_scale(&g.target) == Some((kind, most))),
            "no {kind} goal at N = {most}"
        );
    }
    for g in &report.goals {
        assert!(!g.measured.is_empty(), "{g:?}");
        assert!(g.measured.iter().all(|m| m.value.is_finite()), "{g:?}");
    }

    assert!(
        std::fs::read_to_string(out_dir.join("bench.svg"))
            .unwrap()
            .starts_with("<svg")
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
