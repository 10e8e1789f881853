//! mvbridge end to end for IPv4, on a hosted server's topology in namespaces.
//! Needs root; `cargo xtask test` runs these one at a time.

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{GW, HOST, Lab, NAT_VM, SHIM, UPLINK, WIRE};
use mvbridge_tests::matrix::render;
use mvbridge_tests::traffic::{arp_request, connect, listen, ping, ping_retry, send_raw};
use mvbridge_tests::wire::{WireTap, mac_str};

fn up(lab: &mut Lab) -> Daemon {
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let daemon = Daemon::start(&lab.host, &config).unwrap();
    lab.start_guest("b").unwrap();
    daemon
}

#[test]
fn the_ping_matrix_is_broken_without_mvbridge_and_whole_with_it() {
    let mut lab = Lab::hosted().unwrap();

    // Before: the write-up's failures, reproduced.
    let before = lab.probe(&lab.local_pairs());
    let failing =
        |from: &str, to: &str| before.iter().any(|p| p.from == from && p.to == to && !p.ok);
    assert!(
        failing("host", "a"),
        "host -> /26 VM should fail:\n{}",
        render(&before)
    );
    assert!(
        failing("a", "host"),
        "/26 VM -> host should fail:\n{}",
        render(&before)
    );
    assert!(
        failing("natvm", "a"),
        "NAT VM -> /26 VM should fail:\n{}",
        render(&before)
    );
    assert!(
        !failing("c", "host"),
        "the /32 VM hairpins to the host:\n{}",
        render(&before)
    );

    let _daemon = up(&mut lab);
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    let after = lab.probe(&lab.local_pairs());
    let frames = tap.stop().unwrap();
    assert!(
        after.iter().all(|p| p.ok),
        "local matrix with mvbridge:\n{}",
        render(&after)
    );
    let shim_mac = lab.host_mac(SHIM).unwrap();
    let leaked = lab.local_frames(&frames, Some(shim_mac));
    assert!(leaked.is_empty(), "local frames on the wire: {leaked:#?}");

    let internet = lab.probe(&lab.internet_pairs());
    assert!(
        internet.iter().all(|p| p.ok),
        "internet with mvbridge:\n{}",
        render(&internet)
    );
}

#[test]
fn a_32_guest_no_longer_hairpins() {
    let mut lab = Lab::hosted().unwrap();
    let c = lab.spec("c").addr;

    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    assert!(ping_retry(&lab.host, c, 2));
    let frames = tap.stop().unwrap();
    let hairpin = lab.local_frames(&frames, None);
    assert!(
        !hairpin.is_empty(),
        "without mvbridge the /32 guest's traffic should cross the wire"
    );

    let _daemon = up(&mut lab);
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    for _ in 0..5 {
        assert!(ping(&lab.host, c));
        assert!(ping(lab.guest("c"), HOST));
        assert!(ping(&lab.natvm, c));
    }
    let frames = tap.stop().unwrap();
    let leaked = lab.local_frames(&frames, None);
    assert!(
        leaked.is_empty(),
        "the /32 guest's traffic still crosses the wire: {leaked:#?}"
    );
}

#[test]
fn the_shim_never_reaches_the_wire_and_the_host_answers_arp_from_the_uplink_only() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let _daemon = up(&mut lab);
    let shim_mac = lab.host_mac(SHIM).unwrap();
    let uplink_mac = lab.uplink_mac().unwrap();

    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    // The gateway forgets the host and asks again: exactly one answer,
    // from the uplink.
    lab.gw.ip(&["neigh", "flush", "dev", WIRE]).unwrap();
    assert!(ping(&lab.gw, HOST));
    // Even a program that writes straight to the shim puts nothing on the
    // wire with the shim's MAC.
    for _ in 0..3 {
        // The drop shows as ENOBUFS to the sender; the counter below
        // proves the frames reached the shim's hook.
        send_raw(&lab.host, SHIM, arp_request(shim_mac, HOST, GW)).unwrap();
    }
    // And a VM's ARP for the host is answered inside the host.
    lab.guest("a")
        .ip(&["neigh", "flush", "dev", "eth0"])
        .unwrap();
    assert!(ping(lab.guest("a"), HOST));
    let frames = tap.stop().unwrap();

    let with_shim: Vec<_> = frames
        .iter()
        .filter(|f| f.src == shim_mac || f.dst == shim_mac)
        .collect();
    assert!(
        with_shim.is_empty(),
        "the shim's MAC {} on the wire: {with_shim:#?}",
        mac_str(&shim_mac)
    );
    let answers: Vec<_> = frames
        .iter()
        .filter_map(|f| f.arp().map(|a| (f, a)))
        .filter(|(_, a)| a.oper == 2 && a.spa == HOST)
        .collect();
    assert_eq!(answers.len(), 1, "ARP answers for the host: {answers:#?}");
    assert_eq!(answers[0].1.sha, uplink_mac, "answered with the wrong MAC");
    let neigh = lab
        .gw
        .ip(&["neigh", "show", &HOST.to_string(), "dev", WIRE])
        .unwrap();
    assert!(
        neigh.contains(&mac_str(&uplink_mac)),
        "the gateway maps the host to something else: {neigh}"
    );
    let vm_arp: Vec<_> = frames
        .iter()
        .filter_map(|f| f.arp())
        .filter(|a| a.tpa == HOST && a.spa != lab.spec("a").addr)
        .collect();
    assert!(vm_arp.iter().all(|a| a.spa == GW), "stray ARP: {vm_arp:?}");

    let status = daemon::running_status(&lab.host, &config).unwrap();
    assert!(
        daemon::drops(&status, "shim-transmit") >= 3,
        "the shim's send attempts should be counted: {status}"
    );
}

#[test]
fn strict_rp_filter_everywhere_keeps_everything_working() {
    let mut lab = Lab::hosted().unwrap();
    let _daemon = up(&mut lab);
    let links = lab.host.run(&["ls", "/proc/sys/net/ipv4/conf"]).unwrap();
    for link in links.split_whitespace() {
        lab.host
            .sysctl(&format!("net.ipv4.conf.{link}.rp_filter"), "1")
            .unwrap();
    }
    assert_eq!(
        lab.host
            .read_sysctl(&format!("net.ipv4.conf.{SHIM}.rp_filter"))
            .unwrap(),
        "1"
    );
    let all = [lab.local_pairs(), lab.internet_pairs()].concat();
    let probes = lab.probe(&all);
    assert!(
        probes.iter().all(|p| p.ok),
        "with rp_filter=1:\n{}",
        render(&probes)
    );
}

#[test]
fn the_hosts_uplink_firewall_applies_to_vms() {
    let mut lab = Lab::hosted().unwrap();
    let _daemon = up(&mut lab);
    let _ssh = listen(&lab.host, HOST, 22, b"ssh").unwrap();
    let _web = listen(&lab.host, HOST, 8080, b"web").unwrap();
    lab.host
        .run(&[
            "iptables", "-A", "INPUT", "-i", UPLINK, "-p", "tcp", "--dport", "22", "-j", "DROP",
        ])
        .unwrap();

    for vm in ["a", "b", "c"] {
        assert_eq!(
            connect(lab.guest(vm), HOST, 8080).as_deref(),
            Some(&b"web"[..]),
            "VM {vm} -> :8080"
        );
        assert_eq!(
            connect(lab.guest(vm), HOST, 22),
            None,
            "VM {vm} got through to :22"
        );
    }
    let counters = lab
        .host
        .run(&["iptables", "-L", "INPUT", "-v", "-n", "-x"])
        .unwrap();
    let dropped: u64 = counters
        .lines()
        .find(|l| l.contains("dpt:22"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 3,
        "the uplink rule did not see the VMs' SYNs:\n{counters}"
    );
}

#[test]
fn a_vm_cannot_route_through_the_host_into_its_private_network() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let _daemon = up(&mut lab);
    let a = lab.guest("a");
    a.ip(&["route", "add", "192.168.122.0/24", "via", &HOST.to_string()])
        .unwrap();

    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    assert!(!ping(a, NAT_VM), "VM a reached the NAT VM through the host");
    assert!(
        !ping(a, mvbridge_tests::lab::NAT_GW),
        "VM a reached the host's private address"
    );
    let frames = tap.stop().unwrap();
    let uplink_mac = lab.uplink_mac().unwrap();
    let leaked: Vec<_> = frames
        .iter()
        .filter(|f| f.dst == uplink_mac && f.ipv4().is_some())
        .collect();
    assert!(
        leaked.is_empty(),
        "VM frames for the host's MAC on the wire: {leaked:#?}"
    );

    let status = daemon::running_status(&lab.host, &config).unwrap();
    assert!(daemon::drops(&status, "not-for-host") >= 2, "{status}");
    // The route the VM added does not hurt what it may reach.
    assert!(ping(a, HOST));
}

#[test]
fn traffic_the_programs_do_not_own_passes_untouched() {
    let mut lab = Lab::hosted().unwrap();
    let _daemon = up(&mut lab);
    // IPv6 link-local between two VMs and from a VM to the gateway is not
    // steered by the IPv4 datapath and must keep working.
    let gw_ll = lab
        .gw
        .run(&["ip", "-6", "-br", "addr", "show", "dev", WIRE])
        .unwrap();
    let gw_ll = gw_ll
        .split_whitespace()
        .find(|w| w.starts_with("fe80"))
        .and_then(|w| w.split('/').next())
        .unwrap()
        .to_owned();
    // The guest's link-local address is tentative for a second (DAD).
    let target = format!("{gw_ll}%eth0");
    let ok = (0..5).any(|_| {
        let out = lab
            .guest("a")
            .output(&["ping", "-6", "-c", "1", "-W", "1", &target]);
        let ok = out.is_ok_and(|o| o.status.success());
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        ok
    });
    assert!(ok, "VM -> gateway over IPv6 link-local failed");
    let internet = lab.probe(&lab.internet_pairs());
    assert!(internet.iter().all(|p| p.ok), "{}", render(&internet));
}

#[test]
fn status_reports_the_datapath_and_its_counters() {
    let mut lab = Lab::hosted().unwrap();
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let (ok, _) = daemon::status(&lab.host, &config).unwrap();
    assert!(!ok, "status exits 0 before anything is attached");

    let mut daemon = up(&mut lab);
    let (ok, before) = daemon::status(&lab.host, &config).unwrap();
    assert!(ok, "status exits non-zero while attached: {before}");
    assert_eq!(before["attached"], true);
    for hook in before["hooks"].as_array().unwrap() {
        assert_eq!(hook["attached"], true, "{hook}");
    }
    let vm_b = daemon::vm_row(&before, "b");
    assert_eq!(vm_b["addresses"][0]["address"], "203.0.113.162");
    assert_eq!(vm_b["addresses"][0]["source"], "config");
    assert_eq!(vm_b["state"], "live");
    assert!(vm_b["tap"].as_str().unwrap().starts_with("/dev/tap"));

    for _ in 0..3 {
        assert!(ping(&lab.host, lab.spec("a").addr));
    }
    let after = daemon::running_status(&lab.host, &config).unwrap();
    let moved = |path, proto| {
        daemon::path_packets(&after, path, proto) - daemon::path_packets(&before, path, proto)
    };
    assert!(moved("host->vm", "ipv4") >= 3, "{after}");
    assert!(moved("vm->host", "ipv4") >= 3, "{after}");

    let human = daemon::mvbridge(
        &lab.host,
        &["status", "--config", &config.display().to_string()],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("datapath: attached") && text.contains("203.0.113.161"),
        "{text}"
    );

    daemon.stop_with(libc::SIGTERM).unwrap();
    let (ok, _) = daemon::status(&lab.host, &config).unwrap();
    assert!(!ok, "status exits 0 after the daemon removed the datapath");
}
