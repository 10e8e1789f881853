//! The two ways hooks attach: TCX links and classic TC filters. A kernel
//! upgrade moves filters to TCX links without a gap; somebody else's
//! programs on the same links stay, and never keep frames from
//! mvbridge's; what would make mvbridge's filters unsafe is refused
//! before anything changes. Needs root.

use aya::programs::TcAttachType;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::foreign::{Foreign, Hang};
use mvbridge_tests::lab::{HOST, Lab, UPLINK, attach_mode, kernel_has_tcx};
use mvbridge_tests::state::{HostState, hook_programs, one_program_per_hook};
use mvbridge_tests::traffic::{Flood, ping};

fn with_attach(lab: &Lab, mode: &str) -> String {
    lab.config().replace(
        &format!("attach = \"{}\"", attach_mode()),
        &format!("attach = \"{mode}\""),
    )
}

fn ours_on(lab: &Lab, kind: &str) -> Vec<String> {
    let filters = lab
        .host
        .run(&["tc", "filter", "show", "dev", UPLINK, "egress"])
        .unwrap_or_default();
    match kind {
        "tc" => filters
            .lines()
            .filter(|l| l.contains("mvb_uplink"))
            .map(str::to_owned)
            .collect(),
        _ => hook_programs(&lab.host)
            .unwrap()
            .into_iter()
            .filter(|(l, _, p)| l == UPLINK && p == "mvb_uplink")
            .map(|(l, s, p)| format!("{l} {s} {p}"))
            .collect(),
    }
}

#[test]
fn a_kernel_upgrade_to_tcx_moves_the_filters_to_tcx_links_without_a_gap() {
    if !kernel_has_tcx() {
        eprintln!("skipped: this kernel has no TCX to upgrade to");
        return;
    }
    let mut lab = Lab::hosted().unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let path = lab
        .write_config("mvbridge.toml", &with_attach(&lab, "tc"))
        .unwrap();
    let mut old = Daemon::start_with(&lab.host, &path, &["--keep"], &[]).unwrap();
    lab.start_guest("b").unwrap();
    assert_eq!(ours_on(&lab, "tc").len(), 1, "a filter on the uplink");
    let qdiscs = lab
        .host
        .run(&["tc", "qdisc", "show", "dev", UPLINK])
        .unwrap();
    assert!(qdiscs.contains("clsact"), "{qdiscs}");

    let a = lab.spec("a").addr;
    let to_vm = Flood::start(&lab.host, a, 1500, 2).unwrap();
    let to_host = Flood::start(lab.guest("a"), HOST, 1500, 2).unwrap();
    daemon::wait_until_steering(&lab.host, &path, "host->vm", "ipv4", 50).unwrap();
    assert!(old.stop_with(libc::SIGTERM).unwrap().success());
    // The kernel "gained" TCX: the next start uses it.
    std::fs::write(&path, with_attach(&lab, "auto")).unwrap();
    let next = Daemon::start_with(&lab.host, &path, &["--keep"], &[]).unwrap();
    let (r1, r2) = (to_vm.finish().unwrap(), to_host.finish().unwrap());
    println!("flood host->VM {r1:?}, VM->host {r2:?}");
    assert_eq!(
        r1.sent, r1.received,
        "host -> VM lost packets moving to TCX"
    );
    assert_eq!(
        r2.sent, r2.received,
        "VM -> host lost packets moving to TCX"
    );

    assert!(ours_on(&lab, "tc").is_empty(), "our filter stayed");
    assert_eq!(ours_on(&lab, "tcx").len(), 1, "no TCX link on the uplink");
    one_program_per_hook(&lab.host).unwrap();
    let clsact = |s: &HostState| -> Vec<String> {
        s.qdiscs
            .iter()
            .filter(|q| q.contains("clsact"))
            .cloned()
            .collect()
    };
    let now = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    assert_eq!(
        clsact(&now),
        clsact(&before),
        "the clsact qdiscs mvbridge made stayed"
    );
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached, "{status}");
    assert!(
        status["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["mode"] == "tcx"),
        "{status}"
    );
    drop(next);
}

#[test]
fn someone_elses_programs_stay_and_never_keep_frames_from_ours() {
    let modes: &[&str] = if kernel_has_tcx() {
        &["tc", "tcx"]
    } else {
        eprintln!("tcx part skipped: this kernel has no TCX");
        &["tc"]
    };
    for &mode in modes {
        let mut lab = Lab::hosted().unwrap();
        // A firewall's qdisc and filter, and a CNI's TCX program, on the
        // uplink's egress: each accepts every frame it sees.
        lab.host
            .run(&["tc", "qdisc", "add", "dev", UPLINK, "clsact"])
            .unwrap();
        let pins = lab.dir.join("foreign");
        let filter = Foreign::attach(
            &lab.host,
            &pins.join("f"),
            UPLINK,
            TcAttachType::Egress,
            Hang::Filter { priority: 100 },
        )
        .unwrap();
        // A TCX program runs before any filter: it can share a link with
        // mvbridge's TCX hooks only (refused below for classic ones).
        let tcx = (mode == "tcx").then(|| {
            Foreign::attach(
                &lab.host,
                &pins.join("t"),
                UPLINK,
                TcAttachType::Egress,
                Hang::Tcx,
            )
            .unwrap()
        });
        let count = 1 + usize::from(tcx.is_some());
        let theirs = |lab: &Lab| -> usize {
            hook_programs(&lab.host)
                .unwrap()
                .iter()
                .filter(|(l, s, p)| l == UPLINK && *s == "egress" && p == "mvb_accept")
                .count()
        };
        assert_eq!(theirs(&lab), count);

        let path = lab
            .write_config("mvbridge.toml", &with_attach(&lab, mode))
            .unwrap();
        let check = daemon::mvbridge(
            &lab.host,
            &["check", "--config", &path.display().to_string()],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            text.contains("bpf filter \"mvb_accept\" (priority 100"),
            "{text}"
        );
        assert_eq!(
            text.contains("TCX program \"mvb_accept\""),
            tcx.is_some(),
            "{text}"
        );

        let mut d = Daemon::start(&lab.host, &path).unwrap();
        lab.start_guest("b").unwrap();
        // Theirs accept everything; had one run first, nothing would be
        // steered and the host would not reach VM a.
        assert!(
            ping(&lab.host, lab.spec("a").addr),
            "{mode}: host -> VM a bypassed"
        );
        assert!(ping(lab.guest("c"), HOST), "{mode}: VM c -> host");
        assert!(d.stop_with(libc::SIGTERM).unwrap().success());
        assert_eq!(
            theirs(&lab),
            count,
            "{mode}: somebody else's programs went with ours"
        );
        let qdiscs = lab
            .host
            .run(&["tc", "qdisc", "show", "dev", UPLINK])
            .unwrap();
        assert!(
            qdiscs.contains("clsact"),
            "{mode}: their qdisc went: {qdiscs}"
        );
        assert!(ours_on(&lab, "tc").is_empty() && ours_on(&lab, "tcx").is_empty());
        drop((filter, tcx));
    }
}

#[test]
fn what_would_put_our_filters_at_risk_is_refused_and_nothing_changes() {
    let lab = Lab::build(Vec::new()).unwrap();
    let path = lab
        .write_config("mvbridge.toml", &with_attach(&lab, "tc"))
        .unwrap();
    let cfg = path.display().to_string();
    let refused = |expect: &str| {
        let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
        let out = daemon::mvbridge(&lab.host, &["run", "--config", &cfg]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(expect),
            "error does not say {expect:?}:\n{err}"
        );
        let after = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
        assert_eq!(
            (after.links, after.qdiscs, after.hooks),
            (before.links, before.qdiscs, before.hooks)
        );
    };
    // Somebody else's filter where ours go.
    lab.host
        .run(&["tc", "qdisc", "add", "dev", UPLINK, "clsact"])
        .unwrap();
    let squatter = Foreign::attach(
        &lab.host,
        &lab.dir.join("foreign"),
        UPLINK,
        TcAttachType::Egress,
        Hang::Filter { priority: 1 },
    )
    .unwrap();
    refused("holds priority 1 on enp9s0 egress");
    drop(squatter);
    // A plain ingress qdisc instead of clsact.
    lab.host
        .run(&["tc", "qdisc", "del", "dev", UPLINK, "clsact"])
        .unwrap();
    lab.host
        .run(&["tc", "qdisc", "add", "dev", UPLINK, "ingress"])
        .unwrap();
    refused("has an ingress qdisc");
    if !kernel_has_tcx() {
        eprintln!("TCX part skipped: this kernel has no TCX");
        return;
    }
    // A TCX program, which would run before classic filters.
    lab.host
        .run(&["tc", "qdisc", "del", "dev", UPLINK, "ingress"])
        .unwrap();
    let first = Foreign::attach(
        &lab.host,
        &lab.dir.join("foreign-tcx"),
        UPLINK,
        TcAttachType::Egress,
        Hang::Tcx,
    )
    .unwrap();
    refused("runs before any classic filter");
    drop(first);
}

/// The kernel's RCU knob (global: not the lab's), put back as the test
/// found it however the test ends.
const RCU_KNOB: &str = "/sys/kernel/rcu_expedited";

struct KnobAsFound(String);

impl Drop for KnobAsFound {
    fn drop(&mut self) {
        let _ = std::fs::write(RCU_KNOB, &self.0);
    }
}

fn knob() -> String {
    std::fs::read_to_string(RCU_KNOB).unwrap().trim().to_owned()
}

fn all_tcx(status: &serde_json::Value) {
    let hooks = status["hooks"].as_array().unwrap();
    assert!(
        !hooks.is_empty() && hooks.iter().all(|h| h["mode"] == "tcx"),
        "{status}"
    );
}

fn back_to_normal(d: &Daemon) -> usize {
    d.log()
        .lines()
        .filter(|l| l.contains("RCU grace periods back to normal"))
        .count()
}

#[test]
fn tcx_changes_expedite_grace_periods_and_the_knob_always_goes_back() {
    if !kernel_has_tcx() || attach_mode() == "tc" {
        eprintln!("skipped: no TCX hooks here");
        return;
    }
    let Ok(found) = std::fs::read_to_string(RCU_KNOB) else {
        eprintln!("skipped: this kernel has no {RCU_KNOB}");
        return;
    };
    if found.trim() != "0" {
        eprintln!("skipped: {RCU_KNOB} is set on this machine");
        return;
    }
    let _restore = KnobAsFound(found.trim().to_owned());
    let lab = Lab::hosted().unwrap();
    let marker = lab.dir.join("mvbridge.rcu_expedited");
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let debug = [("MVBRIDGE_LOG", "debug")];

    // What a run killed while its hooks changed leaves: the knob set, and
    // the marker saying it was ours to put back.
    std::fs::write(&marker, "0\n").unwrap();
    std::fs::write(RCU_KNOB, "1").unwrap();
    let mut d = Daemon::start_with(&lab.host, &path, &[], &debug).unwrap();
    assert!(
        d.log()
            .contains("an earlier run stopped with RCU grace periods expedited"),
        "{}",
        d.log()
    );
    // The start's attaches ran expedited (a burst per round: the shim and
    // a link made, then the hooks), and the knob is back.
    let at_start = back_to_normal(&d);
    assert!(at_start >= 1, "{}", d.log());
    assert_eq!(knob(), "0");
    assert!(!marker.exists(), "the marker outlived the burst");
    all_tcx(&daemon::running_status(&lab.host, &path).unwrap());
    // Stopping detaches every TCX hook: expedited too, and put back.
    assert!(d.stop_with(libc::SIGTERM).unwrap().success());
    assert_eq!(back_to_normal(&d), at_start + 1, "{}", d.log());
    assert_eq!(knob(), "0");
    assert!(!marker.exists());

    // Set by someone else: left as it is, start and stop alike.
    std::fs::write(RCU_KNOB, "1").unwrap();
    let mut d = Daemon::start_with(&lab.host, &path, &[], &debug).unwrap();
    assert_eq!(knob(), "1", "the admin's setting was changed");
    assert!(d.stop_with(libc::SIGTERM).unwrap().success());
    assert_eq!(knob(), "1", "the admin's setting was changed");
    assert_eq!(back_to_normal(&d), 0, "{}", d.log());
    std::fs::write(RCU_KNOB, "0").unwrap();

    // expedite_rcu = false: never touched.
    let off = lab
        .write_config(
            "mvbridge-off.toml",
            &lab.config()
                .replacen("\n\n[shim]", "\nexpedite_rcu = false\n\n[shim]", 1),
        )
        .unwrap();
    let mut d = Daemon::start_with(&lab.host, &off, &[], &debug).unwrap();
    all_tcx(&daemon::running_status(&lab.host, &off).unwrap());
    assert!(d.stop_with(libc::SIGTERM).unwrap().success());
    assert_eq!(back_to_normal(&d), 0, "{}", d.log());
    assert!(!marker.exists());
    assert_eq!(knob(), "0");
}
