//! mvbridge as a long-running host service: VMs coming and going the way
//! libvirt does it, uplink flaps, repairs, reloads, restarts without loss,
//! metrics, readiness, address learning, the preflight. Needs root.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use mvbridge_tests::daemon::{self, Daemon, log_field};
use mvbridge_tests::lab::{HOST, HOST6, Lab, SHIM, UPLINK};
use mvbridge_tests::state::HostState;
use mvbridge_tests::traffic::{Flood, http_get, ping, ping_retry};

const SECOND: Duration = Duration::from_secs(1);

/// Starts mvbridge on `config` (text) and guest b once its macvtap exists.
fn up_with(lab: &mut Lab, config: &str, args: &[&str]) -> (Daemon, std::path::PathBuf) {
    let path = lab.write_config("mvbridge.toml", config).unwrap();
    let daemon = Daemon::start_with(&lab.host, &path, args, &[]).unwrap();
    if lab.guests.iter().all(|g| g.key != "b") {
        lab.start_guest("b").unwrap();
    }
    (daemon, path)
}

/// Waits until `check` holds, polling; how long it took.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check() {
        assert!(
            t0.elapsed() < timeout,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

#[test]
fn a_vm_libvirt_restarts_under_another_name_goes_live_again() {
    let mut lab = Lab::hosted().unwrap();
    // VM a is matched by MAC alone, as libvirt VMs should be: libvirt
    // numbers macvtapN in start order.
    let config = lab
        .config()
        .replace("interface = \"macvtap0\"", "mac = \"52:54:00:00:00:a1\"");
    let (daemon, path) = up_with(&mut lab, &config, &[]);
    let a = lab.spec("a").addr;
    assert!(ping(&lab.host, a));

    lab.libvirt_stop("a").unwrap();
    daemon
        .wait_for_log(&["vm gone", "vm=a"], 5 * SECOND)
        .unwrap();
    let status = daemon::running_status(&lab.host, &path).unwrap();
    let row = daemon::vm_row(&status, "a").clone();
    assert_eq!(row["state"], "absent", "{row}");
    assert!(
        daemon::steered(&row, None).is_empty(),
        "stale entries: {row}"
    );

    for (round, name) in ["macvtap5", "macvtap0"].iter().enumerate() {
        let t0 = Instant::now();
        lab.libvirt_start("a", name).unwrap();
        let ready = daemon
            .wait_for_log(&["vm ready", "vm=a", "reaction_us"], 5 * SECOND)
            .unwrap();
        let reachable = eventually("host -> VM a after its restart", 5 * SECOND, || {
            ping(&lab.host, a)
        });
        println!(
            "round {round}: macvtap {name} appeared -> live in {} us (daemon's view); host ping answered {:?} after the link was added",
            log_field(&ready, "reaction_us").unwrap_or(0),
            t0.elapsed().min(reachable + t0.elapsed())
        );
        assert!(
            ping(lab.guest("a"), HOST),
            "VM a -> host after restart as {name}"
        );
        assert!(
            ping_retry(lab.guest("a"), HOST6, 3),
            "VM a -> host over IPv6 after restart"
        );
        lab.libvirt_stop("a").unwrap();
        daemon
            .wait_for_log(&["vm gone", "vm=a"], 5 * SECOND)
            .unwrap();
        // Clear the log marks for the next round.
        daemon.log.lock().unwrap().clear();
    }
    // The other VMs never noticed.
    assert!(ping(&lab.host, lab.spec("c").addr));
}

#[test]
fn the_datapath_follows_uplink_flaps_and_address_changes() {
    let mut lab = Lab::hosted().unwrap();
    let (daemon, path) = {
        let c = lab.config();
        up_with(&mut lab, &c, &[])
    };
    let a = lab.spec("a");
    let (a4, a6) = (a.addr, a.addr6);

    lab.host.ipw(&format!("link set {UPLINK} down")).unwrap();
    lab.host.ipw(&format!("link set {UPLINK} up")).unwrap();
    // The kernel drops the routes (and IPv6 addresses) of a link that goes
    // down; the host's network manager puts them back (the lab plays
    // networkd here).
    lab.host
        .ipw(&format!(
            "route replace default via 203.0.113.129 dev {UPLINK} onlink"
        ))
        .unwrap();
    lab.host
        .ipw(&format!("addr replace 2001:db8:0:1::2/64 dev {UPLINK}"))
        .unwrap();
    lab.host
        .ipw(&format!(
            "-6 route replace default via fe80::1 dev {UPLINK}"
        ))
        .unwrap();
    eventually("IPv4 after the flap", 5 * SECOND, || ping(&lab.host, a4));
    eventually("IPv6 after the flap", 5 * SECOND, || ping(&lab.host, a6));
    assert!(ping(lab.guest("a"), HOST));

    // A new host address is answered for within a pass.
    lab.host
        .ipw(&format!("addr add 203.0.113.158/32 dev {UPLINK}"))
        .unwrap();
    let extra: IpAddr = "203.0.113.158".parse().unwrap();
    eventually("the new host address is steered", 5 * SECOND, || {
        daemon::status(&lab.host, &path).unwrap().1["host_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == &extra.to_string())
    });
    assert!(
        ping_retry(lab.guest("a"), extra, 2),
        "VM a -> the host's new address"
    );
    lab.host
        .ipw(&format!("addr del 203.0.113.158/32 dev {UPLINK}"))
        .unwrap();
    eventually("the removed host address is dropped", 5 * SECOND, || {
        !daemon::status(&lab.host, &path).unwrap().1["host_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == &extra.to_string())
    });
    assert!(!ping(lab.guest("a"), extra));
    drop(daemon);
}

#[test]
fn whatever_is_removed_behind_its_back_is_restored() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab
        .config()
        .replace("[shim]", "resync_seconds = 1\n\n[shim]");
    let (daemon, _path) = up_with(&mut lab, &config, &[]);
    let a = lab.spec("a").addr;

    lab.host.ipw(&format!("link del {SHIM}")).unwrap();
    let took = eventually("the shim is recreated", 5 * SECOND, || {
        lab.host.ipw(&format!("link show {SHIM}")).is_ok()
            && HostState::capture(&lab.host, &lab.bpffs())
                .unwrap()
                .hooks
                .contains(&format!("{SHIM} egress mvb_shim"))
    });
    println!("shim recreated and guarded after {took:?}");

    // Someone turns the shim's IPv6 back on (and lets it take router
    // advertisements): the periodic pass silences it again.
    let knob = |key: &str| format!("net.ipv6.conf.{SHIM}.{key}");
    lab.host.sysctl(&knob("accept_ra"), "2").unwrap();
    lab.host.sysctl(&knob("disable_ipv6"), "0").unwrap();
    let took = eventually("the shim's IPv6 is off again", 5 * SECOND, || {
        lab.host.read_sysctl(&knob("disable_ipv6")).unwrap() == "1"
            && lab.host.read_sysctl(&knob("accept_ra")).unwrap() == "0"
    });
    println!("shim silenced again after {took:?}");

    // Someone takes our uplink hook away: no netlink event tells us, the
    // periodic pass finds it.
    let pin = lab.bpffs().join(format!("hook_uplink_{UPLINK}"));
    let tcx = pin.exists();
    // Absence is not polled for: the next pass may restore the hook
    // before a ping could notice. The daemon's new attach line is the
    // proof it found the hook gone.
    let attached = ["hook attached", "mvb_uplink"];
    let restored_after = |take_away: &dyn Fn()| {
        let seen = daemon.count_log(&attached);
        let gone = Instant::now();
        take_away();
        daemon
            .wait_for_another_log(&attached, seen, 5 * SECOND)
            .unwrap();
        let hooks = HostState::capture(&lab.host, &lab.bpffs()).unwrap().hooks;
        assert!(
            hooks.contains(&format!("{UPLINK} egress mvb_uplink")),
            "{hooks:?}"
        );
        assert!(ping(&lab.host, a), "host -> VM a after the restore");
        gone.elapsed()
    };
    let took = restored_after(&|| {
        mvbridge_tests::state::detach_behind_its_back(&lab.host, &pin, UPLINK, "egress").unwrap()
    });
    println!("uplink hook restored after {took:?}");
    assert_eq!(pin.exists(), tcx, "attached the other way");

    // Someone detaches the TCX link itself (`bpftool link detach`): its
    // pin stays, the link is defunct; the periodic pass finds that too.
    if tcx {
        let took = restored_after(&|| {
            mvbridge_tests::state::detach_tcx_link_keeping_its_pin(&pin).unwrap()
        });
        println!("detached TCX link replaced after {took:?}");
    }
    drop(daemon);
}

#[test]
fn sighup_applies_a_good_config_without_a_gap_and_keeps_the_old_one_on_a_bad_one() {
    let mut lab = Lab::hosted().unwrap();
    let (daemon, path) = {
        let c = lab.config();
        up_with(&mut lab, &c, &[])
    };
    let cfg = path.display().to_string();
    let c = lab.spec("c").addr;

    // Good: VM a gains an address, VM b goes away. VM c must not notice.
    let flood = Flood::start(&lab.host, c, 600, 5).unwrap();
    daemon::wait_until_steering(&lab.host, &path, "host->vm", "ipv4", 20).unwrap();
    let good = lab.config().replace(
        "\"203.0.113.161\", ",
        "\"203.0.113.161\", \"203.0.113.170\", ",
    );
    let without_b = remove_vm(&good, "b");
    std::fs::write(&path, &without_b).unwrap();
    let out = daemon::mvbridge(&lab.host, &["reload", "--config", &cfg]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon
        .wait_for_log(&["config reloaded"], 5 * SECOND)
        .unwrap();
    let result = flood.finish().unwrap();
    assert_eq!(
        result.sent, result.received,
        "VM c lost packets across the reload: {result:?}"
    );
    let status = daemon::running_status(&lab.host, &path).unwrap();
    let vm_a = daemon::vm_row(&status, "a");
    assert!(
        vm_a["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["address"] == "203.0.113.170"),
        "{vm_a}"
    );
    assert!(
        lab.host.ipw("link show mvt-web").is_err(),
        "VM b's macvtap survived its removal"
    );

    // Bad, caught before signalling: a syntax error.
    std::fs::write(&path, "uplink = \n").unwrap();
    let out = daemon::mvbridge(&lab.host, &["reload", "--config", &cfg]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOML parse error"));

    // Bad, caught by the daemon: a VM interface that is not a macvtap.
    lab.host
        .ipw("link add notatap type veth peer name notatap1")
        .unwrap();
    std::fs::write(&path, format!("{without_b}\n[[vm]]\nname = \"x\"\ninterface = \"notatap\"\naddresses = [\"203.0.113.171\"]\n")).unwrap();
    let out = daemon::mvbridge(&lab.host, &["reload", "--config", &cfg]).unwrap();
    assert!(out.status.success());
    daemon
        .wait_for_log(&["reload rejected", "not a macvtap"], 5 * SECOND)
        .unwrap();
    let (attached, status) = daemon::status(&lab.host, &std::path::PathBuf::from(&cfg)).unwrap();
    assert!(attached, "{status}");
    assert!(
        ping(&lab.host, c) && ping(&lab.host, lab.spec("a").addr),
        "the running config broke"
    );
}

/// The config text without the [[vm]] entry named `name`.
fn remove_vm(config: &str, name: &str) -> String {
    config
        .split("\n[[vm]]")
        .filter(|part| !part.contains(&format!("name = \"{name}\"")))
        .collect::<Vec<_>>()
        .join("\n[[vm]]")
}

#[test]
fn a_restart_with_keep_loses_no_packet() {
    let mut lab = Lab::hosted().unwrap();
    let (mut daemon, path) = {
        let c = lab.config();
        up_with(&mut lab, &c, &["--keep"])
    };
    let a = lab.spec("a").addr;
    let to_vm = Flood::start(&lab.host, a, 1500, 2).unwrap();
    let to_host = Flood::start(lab.guest("a"), HOST, 1500, 2).unwrap();
    daemon::wait_until_steering(&lab.host, &path, "vm->host", "ipv4", 50).unwrap();

    let status = daemon.stop_with(libc::SIGTERM).unwrap();
    assert!(status.success());
    assert!(daemon.log().contains("leaving the datapath in place"));
    let t0 = Instant::now();
    let next = Daemon::start_with(&lab.host, &path, &["--keep"], &[]).unwrap();
    println!(
        "restart: new daemon attached {:?} after the old one exited",
        t0.elapsed()
    );
    assert!(
        next.log().contains("adopted the pinned datapath"),
        "{}",
        next.log()
    );

    let (r1, r2) = (to_vm.finish().unwrap(), to_host.finish().unwrap());
    println!("flood host->VM {r1:?}, VM->host {r2:?}");
    assert_eq!(
        r1.sent, r1.received,
        "host -> VM lost packets across the restart"
    );
    assert_eq!(
        r2.sent, r2.received,
        "VM -> host lost packets across the restart"
    );
    mvbridge_tests::state::one_program_per_hook(&lab.host).unwrap();
    drop(next);
    // --keep again: still in place; `down` removes it.
    let out = daemon::mvbridge(
        &lab.host,
        &["down", "--config", &path.display().to_string()],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ping(&lab.host, a));
}

#[test]
fn after_sigkill_the_datapath_forwards_and_the_next_start_adopts_it() {
    let mut lab = Lab::hosted().unwrap();
    let (mut daemon, path) = {
        let c = lab.config();
        up_with(&mut lab, &c, &[])
    };
    let a = lab.spec("a").addr;
    // 10 s: enough to span the kill, the unattended stretch and the next
    // start even on an emulated machine.
    let flood = Flood::start(&lab.host, a, 2000, 5).unwrap();
    daemon::wait_until_steering(&lab.host, &path, "host->vm", "ipv4", 20).unwrap();
    daemon.stop_with(libc::SIGKILL).unwrap();
    // Nobody tends the datapath now; it keeps forwarding all the same.
    daemon::wait_until_steering(&lab.host, &path, "host->vm", "ipv4", 20).unwrap();
    let next = Daemon::start(&lab.host, &path).unwrap();
    assert!(
        next.log().contains("adopted the pinned datapath"),
        "{}",
        next.log()
    );
    let r = flood.finish().unwrap();
    assert_eq!(
        r.sent, r.received,
        "lost packets across SIGKILL and restart: {r:?}"
    );
    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached, "{status}");
    mvbridge_tests::state::one_program_per_hook(&lab.host).unwrap();
}

#[test]
fn the_metrics_endpoint_serves_what_status_reports() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab
        .config()
        .replace("[shim]", "metrics_listen = \"127.0.0.1:9810\"\n\n[shim]");
    let (_daemon, path) = up_with(&mut lab, &config, &[]);
    for _ in 0..3 {
        assert!(ping(&lab.host, lab.spec("a").addr));
        assert!(ping(lab.guest("c"), HOST6));
    }
    let addr: SocketAddr = "127.0.0.1:9810".parse().unwrap();
    let metrics = http_get(&lab.host, addr, "/metrics").unwrap();
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert!(metrics.contains("mvbridge_attached 1"));
    let value = |line_start: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
    };
    for (path, proto) in [
        ("host->vm", "ipv4"),
        ("vm->host", "ipv6"),
        ("vm->host", "nd"),
    ] {
        let m = value(&format!(
            "mvbridge_path_packets_total{{path=\"{path}\",proto=\"{proto}\"}}"
        ));
        assert_eq!(
            m,
            daemon::path_packets(&status, path, proto),
            "{path} {proto}"
        );
        assert!(m > 0, "{path} {proto} did not move");
    }
    let vm_a = daemon::vm_row(&status, "a");
    let from_host = value("mvbridge_vm_packets_total{direction=\"from_host\",vm=\"a\"}");
    assert_eq!(
        from_host,
        vm_a["counters"]["from_host"]["packets"].as_u64().unwrap()
    );
    assert!(from_host >= 3);
    assert_eq!(value("mvbridge_vm_live{vm=\"b\"}"), 1);
    assert_eq!(
        value("mvbridge_drops_total{reason=\"not-for-host\"}"),
        daemon::drops(&status, "not-for-host")
    );

    // Prometheus' own linter finds nothing to say.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success() && linted.stdout.is_empty() && linted.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    // Idle connections take slots; one over the limit is closed at once,
    // and a client that never sends its request is let go.
    let (refused, held_for) = lab
        .host
        .in_ns(move || {
            use std::io::Read;
            let idle: Vec<std::net::TcpStream> = (0..mvbridge::commands::metrics::MAX_CONNECTIONS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // The server accepts in the order of its accept queue: the
            // idle ones hold every slot when this one is taken. Closed at
            // once means end of stream or a reset; a read that times out
            // means it was held open, i.e. served.
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            extra.set_read_timeout(Some(2 * SECOND)).unwrap();
            let refused = match extra.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            let t0 = Instant::now();
            let mut first = &idle[0];
            first.set_read_timeout(Some(20 * SECOND)).unwrap();
            let closed = matches!(first.read(&mut [0u8; 1]), Ok(0));
            (refused, (closed, t0.elapsed()))
        })
        .unwrap();
    let (closed, held_for) = held_for;
    assert!(refused, "a connection over the limit was served");
    assert!(closed, "an idle client was not let go");
    assert!(
        held_for <= mvbridge::commands::metrics::HEAD_TIMEOUT + 2 * SECOND,
        "an idle client was kept {held_for:?}"
    );
    // And the endpoint serves again.
    assert!(
        http_get(&lab.host, addr, "/metrics")
            .unwrap()
            .contains("mvbridge_attached 1")
    );
}

#[test]
fn systemd_hears_ready_only_once_the_datapath_is_attached() {
    let mut lab = Lab::hosted().unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let sock_path = lab.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(10 * SECOND)).unwrap();
    let daemon = Daemon::start_with(
        &lab.host,
        &path,
        &[],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    let (attached, _) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached, "READY=1 came before the datapath was attached");
    lab.start_guest("b").unwrap();

    // A reload (what `systemctl reload` sends): RELOADING=1 with the
    // monotonic time it began, which systemd 253 and later match against
    // the time of the request, then READY=1 once it is done.
    let asked = monotonic_usec();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon.pid().unwrap() as i32, libc::SIGHUP) };
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let fields: Vec<&str> = msg.lines().collect();
    assert!(fields.contains(&"RELOADING=1"), "{msg}");
    let began: u64 = fields
        .iter()
        .find_map(|f| f.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {msg:?}"))
        .parse()
        .unwrap();
    assert!(
        (asked..=monotonic_usec()).contains(&began),
        "MONOTONIC_USEC={began} is not the time of the reload (asked at {asked})"
    );
    let n = sock.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "no READY=1 after the reload"
    );

    drop(daemon);
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd's MONOTONIC_USEC
/// is on. The test's own reading, not the daemon's function: the value
/// the daemon sends is what is under test.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn addresses_are_learnt_inside_allowed_prefixes_only() {
    let mut lab = Lab::hosted().unwrap();
    // VM c has no configured addresses: it may use what it likes inside
    // 203.0.113.160/28 and the /64.
    let config = lab.config().replace(
        "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]",
        "learn = [\"203.0.113.160/28\", \"2001:db8:0:1::/64\"]",
    );
    let (daemon, path) = up_with(&mut lab, &config, &[]);
    let c = lab.guest("c");
    let c_addr = lab.spec("c").addr;
    // Global addresses: its link-local ones it learns from its very first
    // frames (duplicate address detection at boot), whatever `learn` says.
    let learnt = |status: &serde_json::Value| -> usize {
        daemon::steered(daemon::vm_row(status, "c"), Some("learnt"))
            .iter()
            .filter(|a| !a.starts_with("fe80:"))
            .count()
    };
    assert_eq!(
        learnt(&daemon::status(&lab.host, &path).unwrap().1),
        0,
        "learnt before any traffic"
    );

    // The VM's own traffic teaches mvbridge its addresses.
    let took = eventually("learning VM c's address", 5 * SECOND, || ping(c, HOST));
    println!("VM c reached the host after {took:?} (learning on the way)");
    daemon
        .wait_for_log(&["learnt an address", "203.0.113.163"], 2 * SECOND)
        .unwrap();
    // Learnt means steered: host <-> VM c no longer hairpins.
    let tap = mvbridge_tests::wire::WireTap::start(&lab.gw, mvbridge_tests::lab::WIRE).unwrap();
    assert!(ping(&lab.host, c_addr));
    let frames = tap.stop().unwrap();
    assert!(
        lab.local_frames(&frames, None).is_empty(),
        "VM c's learnt address still hairpins"
    );
    eventually("learning VM c's IPv6 address", 5 * SECOND, || {
        ping(c, HOST6)
    });
    let status = daemon::running_status(&lab.host, &path).unwrap();
    let row = daemon::vm_row(&status, "c");
    let sources: Vec<String> = row["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["address"], a["source"]))
        .collect();
    assert!(
        sources
            .iter()
            .any(|s| s.contains("203.0.113.163") && s.contains("learnt")),
        "{sources:?}"
    );

    // Outside the prefix: refused and logged.
    c.ipw("addr add 203.0.113.200/32 dev eth0").unwrap();
    assert!(
        !c.output(&[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "203.0.113.200",
            "203.0.113.157"
        ])
        .unwrap()
        .status
        .success()
    );
    daemon
        .wait_for_log(
            &["refused to learn", "203.0.113.200", "outside"],
            3 * SECOND,
        )
        .unwrap();
    // Another VM's address: never offered, dropped as spoofing.
    c.ipw("addr add 203.0.113.161/32 dev eth0").unwrap();
    assert!(
        !c.output(&[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "203.0.113.161",
            "203.0.113.157"
        ])
        .unwrap()
        .status
        .success()
    );
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert!(daemon::drops(&status, "spoofed-address") > 0, "{status}");
    assert!(
        ping(&lab.host, lab.spec("a").addr),
        "VM a's traffic was disturbed"
    );
}

#[test]
fn check_reports_without_changing_anything() {
    let lab = Lab::hosted().unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let cfg = path.display().to_string();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let out = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "ok    Linux",
        "host addresses: 203.0.113.157",
        "rp_filter",
        "would create the shim mvb0",
        "would steer VM \"a\" on macvtap0",
        "would create macvtap mvt-web",
        "nothing was changed",
    ] {
        assert!(text.contains(want), "check output lacks {want:?}:\n{text}");
    }
    assert_eq!(HostState::capture(&lab.host, &lab.bpffs()).unwrap(), before);

    lab.host.ipw("link add mvb0 type bridge").unwrap();
    let out = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  a link named \"mvb0\" already exists and is not mvbridge's"),
        "{text}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_cli() {
    let lab = Lab::build(Vec::new()).unwrap();
    let bash = daemon::mvbridge(&lab.host, &["completions", "bash"]).unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    for sub in ["run", "down", "status", "reload", "check"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    let man = daemon::mvbridge(&lab.host, &["man"]).unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH mvbridge") && man.contains("reload"),
        "{man}"
    );
}

#[test]
fn the_programs_report_drops_to_the_log_only_when_asked() {
    let mut lab = Lab::hosted().unwrap();
    for (ebpf_log, expect) in [(false, 0), (true, 1)] {
        let config = lab
            .config()
            .replace("[shim]", &format!("ebpf_log = {ebpf_log}\n\n[shim]"));
        let (daemon, path) = up_with(&mut lab, &config, &[]);
        let a = lab.guest("a");
        a.ipw("route replace 192.168.122.0/24 via 203.0.113.157")
            .unwrap();
        assert!(!ping(a, mvbridge_tests::lab::NAT_VM));
        if expect == 1 {
            daemon.wait_for_log(&["drop reason=0"], 2 * SECOND).unwrap();
        } else {
            // The drops were counted; an event the programs did send would
            // reach the log within milliseconds. Absence has no condition
            // to poll for.
            assert!(
                daemon::drops(&daemon::status(&lab.host, &path).unwrap().1, "not-for-host") > 0
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let lines = daemon.count_log(&["drop reason=0"]);
        assert_eq!(
            lines.min(1),
            expect,
            "ebpf_log = {ebpf_log}:\n{}",
            daemon.log()
        );
        drop(daemon);
        let out = daemon::mvbridge(
            &lab.host,
            &["down", "--config", &path.display().to_string()],
        )
        .unwrap();
        assert!(out.status.success());
    }
}

#[test]
fn the_shipped_unit_and_config_fit_this_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(root.join("dist/mvbridge.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    // A command line of the unit (`key` is "ExecStart=" or
    // "ExecCondition="), its arguments, with `config` for the config.
    let command = |key: &str, config: &std::path::Path| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"));
        let mut args: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
        let at = args.iter().position(|a| a == "--config").unwrap();
        args[at + 1] = config.display().to_string();
        args
    };
    // An empty namespace: no enp9s0, so the run stops before it changes
    // anything (the example config points at the real /sys/fs/bpf).
    let bare =
        mvbridge_tests::netns::Netns::new(&format!("mvbt-{}-bare", std::process::id())).unwrap();
    let run = |args: &[String]| {
        daemon::mvbridge(&bare, &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
    };
    let example = root.join("dist/mvbridge.toml");

    // As shipped, the example names no uplink: the unit's start condition
    // fails with 1, so systemd skips the start quietly.
    let out = run(&command("ExecCondition=", &example));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("names no uplink"), "{err}");

    // The admin names the uplink: the condition holds, and the unit's
    // ExecStart gets past argument parsing and the config check, and
    // stops only at the missing uplink.
    let edited = std::env::temp_dir().join(format!("mvbt-{}-unit.toml", std::process::id()));
    let shipped = std::fs::read_to_string(&example).unwrap();
    let named = shipped.replacen("\n#uplink = ", "\nuplink = ", 1);
    assert_ne!(named, shipped, "the example has a #uplink line");
    std::fs::write(&edited, named).unwrap();
    let condition = run(&command("ExecCondition=", &edited));
    let out = run(&command("ExecStart=", &edited));
    std::fs::remove_file(&edited).ok();
    assert!(
        condition.status.success(),
        "{}",
        String::from_utf8_lossy(&condition.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uplink \"enp9s0\" does not exist"), "{err}");
    assert!(!err.contains("Usage"), "{err}");
    let missing_uplink = out.status.code().unwrap();
    // Restarts (and package upgrades) leave the datapath in place.
    assert!(command("ExecStart=", &edited).contains(&"--keep".to_owned()));

    // A config that does not parse ends the start with the status the
    // unit does not restart on (the admin must edit it first).
    let prevent: Vec<i32> = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("the unit restarts on every failure")
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    let broken = std::env::temp_dir().join(format!("mvbt-{}-broken.toml", std::process::id()));
    std::fs::write(&broken, "uplink = \"enp9s0\"\n[[vm]\n").unwrap();
    let out = run(&command("ExecStart=", &broken));
    std::fs::remove_file(&broken).ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not parse"), "{err}");
    let code = out.status.code().unwrap();
    assert!(prevent.contains(&code), "exit status {code}: {err}");
    // ... while a missing uplink (above) is tried again.
    assert!(!prevent.contains(&missing_uplink), "{prevent:?}");
}

#[test]
fn learnt_addresses_survive_a_restart() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.config().replace(
        "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]",
        "learn = [\"203.0.113.160/28\"]",
    );
    let (mut daemon, path) = up_with(&mut lab, &config, &["--keep"]);
    eventually("learning VM c's address", 5 * SECOND, || {
        ping(lab.guest("c"), HOST)
    });
    daemon.stop_with(libc::SIGTERM).unwrap();
    let next = Daemon::start_with(&lab.host, &path, &["--keep"], &[]).unwrap();
    // No traffic from VM c since: the address is known from the tables.
    let status = daemon::running_status(&lab.host, &path).unwrap();
    let row = daemon::vm_row(&status, "c");
    assert!(
        row["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "203.0.113.163" && a["source"] == "learnt"),
        "{row}"
    );
    let tap = mvbridge_tests::wire::WireTap::start(&lab.gw, mvbridge_tests::lab::WIRE).unwrap();
    assert!(ping(&lab.host, lab.spec("c").addr));
    let frames = tap.stop().unwrap();
    assert!(
        lab.local_frames(&frames, None).is_empty(),
        "the learnt address was forgotten"
    );
    drop(next);
    let out = daemon::mvbridge(
        &lab.host,
        &["down", "--config", &path.display().to_string()],
    )
    .unwrap();
    assert!(out.status.success());
}
