//! mvbridge for IPv6: the hoster's /64 with `gateway6: fe80::1`, guests
//! with an on-link /64 and with a single /128. Needs root.

use std::net::Ipv6Addr;

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{GW_LL, HOST6, INET6, Lab, NAT_GW6, NAT_VM6, SHIM, UPLINK, WIRE};
use mvbridge_tests::matrix::{Family, render};
use mvbridge_tests::traffic::{ping, ping_retry, ping_scoped, udp_refused};
use mvbridge_tests::wire::{WireTap, mac_str};

fn up(lab: &mut Lab) -> (Daemon, std::path::PathBuf) {
    let config = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let daemon = Daemon::start(&lab.host, &config).unwrap();
    lab.start_guest("b").unwrap();
    (daemon, config)
}

#[test]
fn the_ipv6_matrix_is_broken_without_mvbridge_and_whole_with_it() {
    let mut lab = Lab::hosted().unwrap();
    let before = lab.probe_of(Family::V6, &lab.local_pairs_of(Family::V6));
    for (from, to) in [("host", "a"), ("a", "host"), ("host", "c"), ("c", "host")] {
        assert!(
            before.iter().any(|p| p.from == from && p.to == to && !p.ok),
            "{from} -> {to} should fail without mvbridge:\n{}",
            render(&before)
        );
    }

    // Capture from before mvbridge starts: the shim's creation must not
    // put anything on the wire either (no DAD, RS or MLD report).
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    let (_daemon, _) = up(&mut lab);
    let after = lab.probe_of(Family::V6, &lab.local_pairs_of(Family::V6));
    let frames = tap.stop().unwrap();
    assert!(
        after.iter().all(|p| p.ok),
        "IPv6 local matrix with mvbridge:\n{}",
        render(&after)
    );
    let shim = lab.host_mac(SHIM).unwrap();
    let leaked = lab.local_frames(&frames, Some(shim));
    assert!(
        leaked.is_empty(),
        "local IPv6 frames on the wire: {leaked:#?}"
    );

    let internet = lab.probe_of(Family::V6, &lab.internet_pairs_of(Family::V6));
    assert!(
        internet.iter().all(|p| p.ok),
        "IPv6 internet with mvbridge:\n{}",
        render(&internet)
    );
    // And IPv4 is still whole next to it.
    let v4 = lab.probe(&lab.local_pairs());
    assert!(v4.iter().all(|p| p.ok), "{}", render(&v4));
}

#[test]
fn guests_resolve_the_hosts_link_local_address_inside_the_host() {
    let mut lab = Lab::hosted().unwrap();
    let (_daemon, config) = up(&mut lab);
    let host_ll = lab.link_local(&lab.host, UPLINK).unwrap();
    let uplink_mac = lab.uplink_mac().unwrap();

    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    for vm in ["a", "b", "c"] {
        let guest = lab.guest(vm);
        guest.ip(&["-6", "neigh", "flush", "dev", "eth0"]).unwrap();
        assert!(
            ping_scoped(guest, &format!("{host_ll}%eth0")),
            "VM {vm} -> host link-local"
        );
        let neigh = guest
            .ip(&["-6", "neigh", "show", &host_ll.to_string(), "dev", "eth0"])
            .unwrap();
        assert!(
            neigh.contains(&mac_str(&uplink_mac)),
            "VM {vm} resolved the host to: {neigh}"
        );
    }
    let frames = tap.stop().unwrap();
    let solicitations: Vec<_> = frames
        .iter()
        .filter(|f| f.nd_target() == Some(host_ll))
        .collect();
    assert!(
        solicitations.is_empty(),
        "ND for the host crossed the wire: {solicitations:#?}"
    );

    let status = daemon::running_status(&lab.host, &config).unwrap();
    assert!(
        daemon::path_packets(&status, "vm->host", "nd") >= 3,
        "{status}"
    );
    assert!(
        daemon::path_packets(&status, "host->vm", "nd") >= 3,
        "{status}"
    );
}

#[test]
fn the_shim_stays_off_the_wire_and_the_gateway_sees_only_the_uplink() {
    let mut lab = Lab::hosted().unwrap();
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    let (_daemon, _) = up(&mut lab);
    let shim = lab.host_mac(SHIM).unwrap();
    let uplink_mac = lab.uplink_mac().unwrap();
    // The gateway forgets and re-learns the host's addresses.
    lab.gw.ip(&["-6", "neigh", "flush", "dev", WIRE]).unwrap();
    let host_ll = lab.link_local(&lab.host, UPLINK).unwrap();
    assert!(ping(&lab.gw, HOST6));
    assert!(ping_scoped(&lab.gw, &format!("{host_ll}%{WIRE}")));
    // Local traffic meanwhile, which must not teach the gateway anything.
    for vm in ["a", "b", "c"] {
        assert!(ping_retry(lab.guest(vm), HOST6, 2));
    }
    let frames = tap.stop().unwrap();
    let from_shim: Vec<_> = frames
        .iter()
        .filter(|f| f.src == shim || f.dst == shim)
        .collect();
    assert!(
        from_shim.is_empty(),
        "the shim's MAC on the wire: {from_shim:#?}"
    );

    let neigh = lab.gw.ip(&["-6", "neigh", "show", "dev", WIRE]).unwrap();
    for addr in [HOST6, host_ll] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{addr} ")))
            .unwrap_or_else(|| panic!("the gateway has no entry for {addr}:\n{neigh}"));
        assert!(
            line.contains(&mac_str(&uplink_mac)),
            "gateway maps {addr} wrongly: {line}"
        );
    }
    assert!(
        !neigh.contains(&mac_str(&shim)),
        "the gateway learnt the shim:\n{neigh}"
    );
    let shim_addrs = lab.host.ip(&["-6", "addr", "show", "dev", SHIM]).unwrap();
    assert!(
        !shim_addrs.contains("inet6"),
        "the shim has IPv6 addresses: {shim_addrs}"
    );
}

#[test]
fn a_vm_reaches_only_the_hosts_own_ipv6_addresses() {
    let mut lab = Lab::hosted().unwrap();
    let (_daemon, config) = up(&mut lab);
    let a = lab.guest("a");
    let host_ll = lab.link_local(&lab.host, UPLINK).unwrap();
    // Through the host as a router, via its link-local address ...
    a.ip(&[
        "-6",
        "route",
        "add",
        "fd00:122::/64",
        "via",
        &host_ll.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    assert!(!ping(a, NAT_VM6), "VM a reached the NAT VM over IPv6");
    assert!(
        !ping(a, NAT_GW6),
        "VM a reached the host's private IPv6 address"
    );
    let status = daemon::running_status(&lab.host, &config).unwrap();
    assert!(daemon::drops(&status, "not-for-host") >= 2, "{status}");
    // ... or by asking for the private address on the link: nobody answers.
    a.ip(&["-6", "route", "replace", "fd00:122::/64", "dev", "eth0"])
        .unwrap();
    assert!(
        !ping(a, NAT_GW6),
        "the host answered for an address it does not own on the uplink"
    );
    let neigh = a
        .ip(&["-6", "neigh", "show", &NAT_GW6.to_string()])
        .unwrap();
    assert!(
        !neigh.contains("lladdr"),
        "someone answered for {NAT_GW6}: {neigh}"
    );
    // Its own traffic to the host is unaffected.
    assert!(ping(a, HOST6));
}

#[test]
fn icmp_errors_and_path_mtu_messages_get_through() {
    let mut lab = Lab::hosted().unwrap();
    let (_daemon, _) = up(&mut lab);
    for vm in ["a", "c"] {
        let guest = lab.guest(vm);
        assert!(
            udp_refused(guest, HOST6, 9),
            "VM {vm}: no ICMPv6 port unreachable from the host"
        );
        assert!(
            udp_refused(guest, mvbridge_tests::lab::HOST, 9),
            "VM {vm}: no ICMP port unreachable from the host"
        );
        assert!(
            udp_refused(&lab.host, lab.spec(vm).addr6, 9),
            "host: no ICMPv6 error from VM {vm}"
        );
    }

    // The host tells VM a that the path to it only carries 1280 bytes;
    // VM a's kernel must learn it.
    let a6 = lab.spec("a").addr6;
    mvbridge_tests::traffic::send_packet_too_big(&lab.host, HOST6, a6, 1280).unwrap();
    let route = lab
        .guest("a")
        .ip(&["-6", "route", "get", &HOST6.to_string()])
        .unwrap();
    assert!(
        route.contains("mtu 1280"),
        "VM a did not take the PMTU: {route}"
    );
}

#[test]
fn status_shows_ipv6_entries() {
    let mut lab = Lab::hosted().unwrap();
    let (_daemon, config) = up(&mut lab);
    assert!(ping(&lab.host, lab.spec("c").addr6));
    let (ok, status) = daemon::status(&lab.host, &config).unwrap();
    assert!(ok);
    let hosts: Vec<String> = status["host_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let host_ll = lab.link_local(&lab.host, UPLINK).unwrap();
    assert!(
        hosts.contains(&HOST6.to_string()) && hosts.contains(&host_ll.to_string()),
        "{hosts:?}"
    );
    let vm_c = daemon::vm_row(&status, "c");
    assert!(
        vm_c["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "2001:db8:0:1::163"),
        "{vm_c}"
    );
    assert!(
        daemon::path_packets(&status, "host->vm", "ipv6") >= 1,
        "{status}"
    );
    let _: Ipv6Addr = INET6;
    let _: Ipv6Addr = GW_LL;
}
