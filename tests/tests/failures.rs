//! Failures of the kernel or the host under mvbridge: each is reported
//! clearly and leaves the host working (as it was, for a start that fails).
//! Needs root.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use mvbridge_tests::bins;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{HOST, Lab, UPLINK, WIRE};
use mvbridge_tests::state::{HostState, wait_programs_gone};
use mvbridge_tests::traffic::ping;

const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;

fn run_refused(lab: &Lab, cmd: u32, expect: &str) {
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let mut run = lab
        .host
        .command(bins::path("mvbridge").unwrap().to_str().unwrap())
        .unwrap();
    run.args(["run", "--config", &path.display().to_string()]);
    // SAFETY: only prctl between fork and exec.
    unsafe { run.pre_exec(mvbridge_tests::sandbox::refuse_bpf(Some(cmd), libc::EPERM)) };
    let out = run.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started although the kernel refused: {err}"
    );
    assert!(
        err.contains(expect),
        "error does not say {expect:?}:\n{err}"
    );
    let mut after = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    if !after.programs.is_empty() {
        after.programs = wait_programs_gone();
    }
    assert_eq!(after, before, "a refused start changed the host");
    // The host works as before mvbridge: the /32 VM still hairpins.
    assert!(ping(&lab.host, lab.spec("c").addr));
}

#[test]
fn the_kernel_refusing_a_program_or_a_map_update_changes_nothing() {
    let lab = Lab::hosted().unwrap();
    run_refused(
        &lab,
        BPF_PROG_LOAD,
        "the kernel refused to load mvbridge's BPF programs",
    );
    run_refused(&lab, BPF_MAP_UPDATE_ELEM, "Operation not permitted");
}

#[test]
fn an_unusable_pin_directory_is_reported_before_anything_changes() {
    let lab = Lab::hosted().unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    for bpffs in ["/proc/mvbridge-cannot-be-here", "/etc/hostname/pins"] {
        let config = lab
            .config()
            .replace(&lab.bpffs().display().to_string(), bpffs);
        let path = lab.write_config("bad.toml", &config).unwrap();
        let out =
            daemon::mvbridge(&lab.host, &["run", "--config", &path.display().to_string()]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("preparing bpffs at {bpffs}")),
            "{err}"
        );
        assert_eq!(HostState::capture(&lab.host, &lab.bpffs()).unwrap(), before);
    }
}

#[test]
fn a_full_table_rejects_the_reload_and_keeps_the_running_config() {
    let mut lab = Lab::hosted().unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let daemon = Daemon::start(&lab.host, &path).unwrap();
    lab.start_guest("b").unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    // 66,000 more addresses for VM a: more than the IPv4 table holds.
    let many: Vec<String> = (0..66_000u32)
        .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x6440_0001 + i)))
        .collect();
    let huge = good.replace(
        "addresses = [\"203.0.113.161\"",
        &format!("addresses = [{}, \"203.0.113.161\"", many.join(", ")),
    );
    std::fs::write(&path, huge).unwrap();
    let out = daemon::mvbridge(
        &lab.host,
        &["reload", "--config", &path.display().to_string()],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = daemon
        .wait_for_log(&["reload rejected"], Duration::from_secs(30))
        .unwrap();
    assert!(line.contains("the table is full"), "{line}");
    // The old tables are back and traffic flows.
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached);
    let addrs: usize = status["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| daemon::steered(v, Some("config")).len())
        .sum();
    assert_eq!(
        addrs, 6,
        "the running config's entries are not back: {addrs}"
    );
    assert!(ping(&lab.host, lab.spec("a").addr) && ping(lab.guest("c"), HOST));
}

#[test]
fn the_uplink_vanishing_mid_run_is_survived() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab
        .config()
        .replace("[shim]", "resync_seconds = 1\n\n[shim]");
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let daemon = Daemon::start(&lab.host, &path).unwrap();
    lab.start_guest("b").unwrap();
    let pid = daemon.pid().unwrap();

    // The NIC goes away (driver unbound, say): its macvtaps and the shim
    // go with it.
    lab.host.ipw(&format!("link del {UPLINK}")).unwrap();
    daemon
        .wait_for_log(
            &["reconcile failed", "uplink \"enp9s0\" does not exist"],
            Duration::from_secs(5),
        )
        .unwrap();
    let (attached, _) = daemon::status(&lab.host, &path).unwrap();
    assert!(
        !attached,
        "status claims an attached datapath without an uplink"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon died"
    );

    // It comes back; libvirt restarts the VMs; mvbridge follows.
    lab.stop_guest("a");
    lab.gw
        .ipw(&format!(
            "link add {WIRE} type veth peer name {UPLINK} netns {}",
            lab.host.name
        ))
        .unwrap();
    lab.gw
        .ipw(&format!("addr add 203.0.113.129/26 dev {WIRE}"))
        .unwrap();
    lab.gw.ipw(&format!("link set {WIRE} up")).unwrap();
    lab.host
        .ipw(&format!("addr add 203.0.113.157/32 dev {UPLINK}"))
        .unwrap();
    lab.host.ipw(&format!("link set {UPLINK} up")).unwrap();
    lab.host
        .ipw(&format!(
            "route add default via 203.0.113.129 dev {UPLINK} onlink"
        ))
        .unwrap();
    lab.libvirt_start("a", "macvtap0").unwrap();
    daemon
        .wait_for_log(&["vm ready", "vm=a", "reaction_us"], Duration::from_secs(5))
        .unwrap();
    let ok = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        ping(&lab.host, lab.spec("a").addr)
    });
    assert!(
        ok,
        "host -> VM a after the uplink came back:\n{}",
        daemon.log()
    );
    assert!(ping(lab.guest("a"), HOST));
}
