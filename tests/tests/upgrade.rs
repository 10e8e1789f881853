//! Upgrades whose pinned maps changed layout: a real earlier mvbridge
//! (`tests/fixtures`, map layout 1) runs the datapath, and this one takes
//! it over under a ping flood: entries carried into the new layout, the
//! programs swapped in place, the old layout's pins gone. Needs root.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aya::maps::{Map, MapData, PerCpuArray};
use mvbridge_common::abi;
use mvbridge_common::maps::Counter;
use mvbridge_common::stats::{Path as StatPath, Proto, path_slot};
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{HOST, Lab, kernel_has_tcx};
use mvbridge_tests::traffic::{Flood, ping};

/// The layout-1 release binary, unpacked into the lab's directory.
fn layout1_binary(lab: &Lab) -> PathBuf {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mvbridge-layout1.xz");
    let out = Command::new("xz")
        .args(["-dc", &fixture.display().to_string()])
        .output()
        .expect("xz runs (xz-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = lab.dir.join("mvbridge-layout1");
    std::fs::write(&path, out.stdout).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Host -> VM IPv4 packets as counted in the maps pinned in `dir`.
fn host_to_vm_ipv4(dir: &std::path::Path) -> u64 {
    let data = MapData::from_pin(dir.join(abi::PATHS.name)).unwrap();
    let map: PerCpuArray<MapData, Counter> = Map::from_map_data(data).unwrap().try_into().unwrap();
    map.get(&path_slot(StatPath::HostToVm, Proto::Ipv4), 0)
        .unwrap()
        .iter()
        .map(|c| c.packets)
        .sum()
}

#[test]
fn an_upgrade_from_layout_1_is_a_restart_without_a_gap() {
    if !kernel_has_tcx() {
        eprintln!("skipped: the layout-1 release ran on TCX kernels only");
        return;
    }
    let mut lab = Lab::hosted().unwrap();
    let old = layout1_binary(&lab);
    // The first release knows no `attach` setting (it attached TCX links
    // only): the config both releases read leaves it out.
    let config: String = lab
        .config()
        .lines()
        .filter(|l| !l.starts_with("attach = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let mut v1 = Daemon::start_binary(&lab.host, &old, &path, &["--keep"], &[]).unwrap();
    lab.start_guest("b").unwrap();
    let a = lab.spec("a").addr;
    assert!(ping(&lab.host, a));
    let root = lab.bpffs();
    assert!(
        root.join("MVB_LOCAL4").exists(),
        "layout 1 pins its maps at the root"
    );

    let to_vm = Flood::start(&lab.host, a, 1500, 2).unwrap();
    let to_host = Flood::start(lab.guest("a"), HOST, 1500, 2).unwrap();
    // The floods run through the old datapath before the upgrade starts.
    let deadline = std::time::Instant::now() + 5 * Duration::from_secs(1);
    let counted_by_v1 = loop {
        let n = host_to_vm_ipv4(&root);
        if n >= 100 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old datapath counted {n} packets of the flood"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(v1.stop_with(libc::SIGTERM).unwrap().success());
    // A migration interrupted earlier would have left a half-made layout.
    let half = root.join(format!("layout-{}", abi::LAYOUT));
    std::fs::create_dir(&half).unwrap();
    let stray = aya::maps::HashMap::<MapData, u32, u32>::create(1, 0).unwrap();
    stray.pin(half.join(abi::LOCAL4.name)).unwrap();

    let next = Daemon::start(&lab.host, &path).unwrap();
    let carried = next
        .wait_for_log(
            &["carried the pinned maps into the new layout", "from=1"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        next.log().contains("adopted the pinned datapath"),
        "{}",
        next.log()
    );

    let (r1, r2) = (to_vm.finish().unwrap(), to_host.finish().unwrap());
    println!("{carried}\nflood host->VM {r1:?}, VM->host {r2:?}");
    assert_eq!(
        r1.sent, r1.received,
        "host -> VM lost packets across the upgrade"
    );
    assert_eq!(
        r2.sent, r2.received,
        "VM -> host lost packets across the upgrade"
    );

    // The old layout is gone; the new one holds what the old one counted.
    for spec in abi::PROGRAM_MAPS {
        assert!(
            !root.join(spec.name).exists(),
            "{} left at the root",
            spec.name
        );
    }
    assert!(host_to_vm_ipv4(&half) >= counted_by_v1);
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached, "{status}");
    for vm in ["a", "b", "c"] {
        assert_eq!(daemon::vm_row(&status, vm)["state"], "live", "{status}");
    }
    assert!(ping(&lab.host, a) && ping(lab.guest("c"), HOST));
}
