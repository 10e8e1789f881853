//! Set-up and teardown: SIGTERM and `down` leave no link, qdisc, program
//! or pin of mvbridge's behind, also after a crash.

use std::os::unix::process::ExitStatusExt;

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{Lab, SHIM};
use mvbridge_tests::state::{HostState, wait_programs_gone};
use mvbridge_tests::traffic::{ping, ping_retry};

fn is_bpffs(path: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(path.display().to_string()).unwrap();
    // SAFETY: valid C string, zeroed out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == 0xcafe_4a11 }
}

/// No link, qdisc, TC program, pin or loaded program of mvbridge's is
/// left: the host is as `before` mvbridge ran.
fn assert_nothing_left(lab: &Lab, before: &HostState) {
    let after = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    assert_eq!(after.links, before.links);
    assert_eq!(after.qdiscs, before.qdiscs);
    assert_eq!(after.hooks, before.hooks);
    assert!(after.pins.is_empty(), "pins left: {:?}", after.pins);
    assert!(wait_programs_gone().is_empty(), "programs left loaded");
}

#[test]
fn sigterm_removes_everything_mvbridge_created() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    assert!(!lab.bpffs().exists());

    let mut daemon = Daemon::start(&lab.host, &config).unwrap();
    lab.start_guest("b").unwrap();
    let running = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    assert!(
        is_bpffs(&lab.bpffs()),
        "mvbridge should have mounted bpffs at its pin directory"
    );
    assert!(
        running
            .links
            .iter()
            .any(|l| l.starts_with(&format!("{SHIM} macvlan mvbridge:shim"))),
        "{running:#?}"
    );
    assert!(
        running
            .links
            .iter()
            .any(|l| l.starts_with("mvt-web macvtap mvbridge:vm:b")),
        "{running:#?}"
    );
    for hook in [
        "enp9s0 egress mvb_uplink",
        "mvb0 egress mvb_shim",
        "mvb0 ingress mvb_shim_in",
        "macvtap0 egress mvb_vm",
        "mvt-web egress mvb_vm",
        "macvtap2 egress mvb_vm",
    ] {
        assert!(
            running.hooks.contains(hook),
            "missing {hook}: {:#?}",
            running.hooks
        );
    }
    let details = lab.host.ip(&["-d", "link", "show", "mvt-web"]).unwrap();
    assert!(
        details.contains("52:54:00:00:00:b2") && details.contains("macvtap mode bridge"),
        "{details}"
    );
    assert!(ping(&lab.host, lab.spec("b").addr));

    let status = daemon.stop_with(libc::SIGTERM).unwrap();
    assert!(
        status.success(),
        "mvbridge exited with {status}:\n{}",
        daemon.log()
    );
    assert_nothing_left(&lab, &before);
    // Back to the broken state of a host without mvbridge: the fix really is gone.
    assert!(!ping(&lab.host, lab.spec("a").addr));
}

#[test]
fn the_datapath_survives_a_crash_and_down_removes_it() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let mut daemon = Daemon::start(&lab.host, &config).unwrap();
    lab.start_guest("b").unwrap();

    let status = daemon.stop_with(libc::SIGKILL).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Pinned hooks keep forwarding without the daemon.
    assert!(
        ping_retry(&lab.host, lab.spec("a").addr, 2),
        "datapath died with the daemon"
    );
    let kept =
        daemon::running_status(&lab.host, &config).expect("status should see the pinned datapath");
    let hooks = kept["hooks"].as_array().map_or(0, Vec::len);
    assert!(hooks > 0, "status lists no hooks: {kept:#}");

    let cfg = config.display().to_string();
    let out = daemon::mvbridge(&lab.host, &["down", "--config", &cfg]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("removed {hooks} hooks"))
            && report.contains("mvb0")
            && report.contains("mvt-web"),
        "{report}"
    );

    assert_nothing_left(&lab, &before);
    let (attached, _) = daemon::status(&lab.host, &config).unwrap();
    assert!(!attached);

    let again = daemon::mvbridge(&lab.host, &["down", "--config", &cfg]).unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}
