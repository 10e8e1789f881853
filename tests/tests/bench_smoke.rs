//! The benchmark's smoke mode: one short trial of every setup and every
//! measurement, so `cargo xtask bench` cannot rot between real runs.
//! Asserts that every figure was produced, not what it is (speed targets
//! belong to the benchmark itself). Needs root and iperf3.

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
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("bench.json")).unwrap()).unwrap();
    let rows = report["rows"].as_object().unwrap();
    assert_eq!(rows.len(), 8, "{rows:?}");
    for (name, row) in rows {
        for k in [
            "host_to_vm_gbps",
            "vm_to_host_gbps",
            "natvm_to_vm_gbps",
            "rr_per_s",
            "rr_p99_us",
            "uplink_bytes_per_gb",
        ] {
            let v = row[k]["median"].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v >= 0.0, "{name}: {k} = {v}");
        }
        assert!(
            row["host_to_vm_gbps"]["median"].as_f64().unwrap() > 0.05,
            "{name} moved nothing"
        );
    }
    // Local traffic of mvbridge's guests never touched the wire; the
    // hairpin's did.
    assert_eq!(rows["c /26 mvbridge"]["uplink_bytes_per_gb"]["median"], 0.0);
    assert!(
        rows["a /32 hairpin"]["uplink_bytes_per_gb"]["median"]
            .as_f64()
            .unwrap()
            > 1e9
    );
    for n in ["1", "100", "10000"] {
        assert!(report["per_packet"][n]["vm_ns"].as_f64().unwrap() > 0.0);
    }
    assert!(
        report["control_plane"]["macvtap_to_live_ms"]["median"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(report["goals"].as_array().unwrap().len(), 14);
    assert!(
        std::fs::read_to_string(out_dir.join("bench.svg"))
            .unwrap()
            .starts_with("<svg")
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
