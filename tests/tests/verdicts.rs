//! One verdict per VM, wherever it is asked for: the daemon's loop (its
//! log), `status`, `check` and `reload` read the same world through the
//! same plan. Each case here is one where they used to disagree. Needs
//! root.

use std::time::Duration;

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{Lab, UPLINK, VmSpec};
use mvbridge_tests::netns::Netns;

const SECOND: Duration = Duration::from_secs(1);

fn kernel_guest(key: &'static str, mac: &'static str, last: u8) -> VmSpec {
    VmSpec::kernel_guest(key, mac, last, 26, 64)
}

fn state(status: &serde_json::Value, vm: &str) -> (String, String) {
    let row = daemon::vm_row(status, vm);
    (
        row["state"].as_str().unwrap_or("?").to_owned(),
        row["reason"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn the_loop_status_check_and_reload_agree_on_every_vm() {
    let mut lab = Lab::hosted().unwrap();
    lab.add_kernel_guest(kernel_guest("k", "52:54:00:00:00:d4", 164))
        .unwrap();
    // A host link named like the container's: not the container's link.
    lab.host
        .ipw("link add eth0 type veth peer name eth0-peer")
        .unwrap();
    // Two VMs that will both match one macvtap (d1 by name, d2 by MAC),
    // and a container whose link will share an ifindex with a host link;
    // none of those links exists yet.
    let x_ns = format!("{}-vm-x", lab.id);
    let extra = format!(
        "\n[[vm]]\nname = \"d1\"\ninterface = \"mvt-d\"\naddresses = [\"203.0.113.170\"]\n\
         \n[[vm]]\nname = \"d2\"\nmac = \"52:54:00:00:00:dd\"\naddresses = [\"203.0.113.171\"]\n\
         \n[[vm]]\nname = \"x\"\ninterface = \"eth0\"\nnetns = \"{x_ns}\"\naddresses = [\"203.0.113.172\"]\n"
    );
    let config = lab.config() + &extra;
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let cfg = path.display().to_string();
    let daemon = Daemon::start(&lab.host, &path).unwrap();

    // A container VM named like a host link reloads fine, and is live.
    let out = daemon::mvbridge(&lab.host, &["reload", "--config", &cfg]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon
        .wait_for_log(&["config reloaded"], 10 * SECOND)
        .unwrap();
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert_eq!(state(&status, "k").0, "live", "{status}");
    let check = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    let k_at = format!("would steer VM \"k\" on {}-vm-k:eth0", lab.id);
    assert!(text.contains(&k_at), "check lacks {k_at:?}:\n{text}");

    // Now the links that do not fit appear.
    lab.host
        .ipw(&format!(
            "link add link {UPLINK} name mvt-d address 52:54:00:00:00:dd type macvtap mode bridge"
        ))
        .unwrap();
    let x = Netns::new(&x_ns).unwrap();
    // The clash: x's link and a host link share an ifindex, one unused
    // so far in either namespace. x's is made first: kernels before 6.x
    // refuse `index N netns X` while N is taken where `ip` runs.
    let index = 4242;
    lab.host
        .ipw(&format!(
            "link add link {UPLINK} name eth0 index {index} netns {} address 52:54:00:00:00:ee type macvlan mode bridge",
            x.name
        ))
        .unwrap();
    lab.host
        .ipw(&format!("link add clash0 index {index} type bridge"))
        .unwrap();

    let both = "[[vm]] \"d1\" and \"d2\" both resolve to mvt-d";
    let clash = format!("has ifindex {index}, like the host's clash0");
    // The loop says so...
    daemon.wait_for_log(&[both], 10 * SECOND).unwrap();
    daemon.wait_for_log(&[&clash], 10 * SECOND).unwrap();
    // ... status says the same ...
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert_eq!(state(&status, "d1").0, "live", "{status}");
    let (d2, why) = state(&status, "d2");
    assert_eq!(
        (d2.as_str(), why.contains(both)),
        ("unfit", true),
        "{status}"
    );
    let (x_state, why) = state(&status, "x");
    assert_eq!(
        (x_state.as_str(), why.contains(&clash)),
        ("unfit", true),
        "{status}"
    );
    for vm in ["a", "c", "k"] {
        assert_eq!(state(&status, vm).0, "live", "{vm}: {status}");
    }
    // ... and so do check ...
    let check = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{text}");
    assert!(text.contains(&format!("FAIL  {both}")), "{text}");
    assert!(text.contains(&clash), "{text}");
    assert!(text.contains(&k_at), "{text}");
    // ... and reload, which refuses a config with unfit VMs.
    let out = daemon::mvbridge(&lab.host, &["reload", "--config", &cfg]).unwrap();
    assert!(out.status.success());
    let line = daemon
        .wait_for_log(&["reload rejected"], 10 * SECOND)
        .unwrap();
    assert!(line.contains(both) || line.contains(&clash), "{line}");
}

#[test]
fn a_vm_restarted_while_the_daemon_is_down_is_not_called_live() {
    let mut lab = Lab::hosted().unwrap();
    // libvirt's VMs are best matched by MAC: their macvtaps are renamed.
    let config = lab
        .config()
        .replace("interface = \"macvtap0\"", "mac = \"52:54:00:00:00:a1\"");
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let mut daemon = Daemon::start_with(&lab.host, &path, &["--keep"], &[]).unwrap();
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached && state(&status, "a").0 == "live", "{status}");

    daemon.stop_with(libc::SIGKILL).unwrap();
    lab.libvirt_stop("a").unwrap();
    lab.libvirt_start("a", "macvtap9").unwrap();
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    let (a, why) = state(&status, "a");
    assert_eq!(a, "unsteered", "{status}");
    assert!(
        why.contains("macvtap9") && why.contains("no mvb_vm hook"),
        "{why}"
    );
    assert!(
        !attached,
        "status called a datapath with an unhooked VM attached"
    );

    // The next daemon adopts the datapath and hooks the new link.
    let _next = Daemon::start(&lab.host, &path).unwrap();
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached && state(&status, "a").0 == "live", "{status}");
}
