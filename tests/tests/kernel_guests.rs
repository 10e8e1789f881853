//! Kernel guests and containers: a macvlan on the uplink moved into a
//! namespace of its own (`netns` in the config). No ifindex of the host's
//! reaches them, so mvbridge goes through the shim: host -> guest leaves
//! the shim into the macvlan bridge, guest -> host is re-addressed to the
//! shim and relayed into the uplink's ingress. Needs root.

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{FREE_IFINDEX, HOST, HOST6, Lab, SHIM, UPLINK, VmSpec, WIRE};
use mvbridge_tests::matrix::{Family, render};
use mvbridge_tests::traffic::{connect, listen, ping};
use mvbridge_tests::wire::WireTap;

fn lab_with_kernel_guests() -> Lab {
    let mut lab = Lab::hosted().unwrap();
    lab.add_kernel_guest(VmSpec::kernel_guest("k", "52:54:00:00:00:d4", 164, 26, 64))
        .unwrap();
    lab.add_kernel_guest(VmSpec::kernel_guest("j", "52:54:00:00:00:d6", 166, 32, 128))
        .unwrap();
    lab
}

/// The daemon on the lab's config with a periodic pass every `seconds`.
fn started_with_resync(lab: &Lab, seconds: u64) -> (Daemon, std::path::PathBuf) {
    let config = lab
        .config()
        .replace("[shim]", &format!("resync_seconds = {seconds}\n\n[shim]"));
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    // Debug: each pass logs an "observed" line.
    let env = [("MVBRIDGE_LOG", "mvbridge=debug")];
    (
        Daemon::start_with(&lab.host, &path, &[], &env).unwrap(),
        path,
    )
}

/// Kernel guest `key` and the host reach each other, and `status` calls
/// it live (`when`: for the messages).
fn live_both_ways(lab: &Lab, path: &std::path::Path, key: &str, when: &str) {
    let addr = lab.spec(key).addr;
    assert!(
        mvbridge_tests::traffic::ping_retry(&lab.host, addr, 3),
        "host -> {key} {when}"
    );
    assert!(ping(lab.guest(key), HOST), "{key} {when} -> host");
    let status = daemon::running_status(&lab.host, path).unwrap();
    assert_eq!(daemon::vm_row(&status, key)["state"], "live", "{status}");
}

#[test]
fn kernel_guests_are_reached_through_the_shim_and_nothing_leaks() {
    let mut lab = lab_with_kernel_guests();
    let before = lab.probe(&[("host".into(), "k".into()), ("k".into(), "host".into())]);
    assert!(
        before.iter().all(|p| !p.ok),
        "kernel guest k reached the host without mvbridge:\n{}",
        render(&before)
    );

    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let daemon = Daemon::start(&lab.host, &path).unwrap();
    lab.start_guest("b").unwrap();
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    let v4 = lab.probe_of(Family::V4, &lab.local_pairs_of(Family::V4));
    let v6 = lab.probe_of(Family::V6, &lab.local_pairs_of(Family::V6));
    let frames = tap.stop().unwrap();
    assert!(
        v4.iter().all(|p| p.ok),
        "IPv4 with kernel guests:\n{}",
        render(&v4)
    );
    assert!(
        v6.iter().all(|p| p.ok),
        "IPv6 with kernel guests:\n{}",
        render(&v6)
    );
    let shim = lab.host_mac(SHIM).unwrap();
    let leaked = lab.local_frames(&frames, Some(shim));
    assert!(leaked.is_empty(), "local frames on the wire: {leaked:#?}");
    let internet = lab.probe(&lab.internet_pairs());
    assert!(internet.iter().all(|p| p.ok), "{}", render(&internet));

    let (attached, status) = daemon::status(&lab.host, &path).unwrap();
    assert!(attached, "{status}");
    for name in ["k", "j"] {
        let row = daemon::vm_row(&status, name);
        assert_eq!(row["state"], "live", "{row}");
        assert_eq!(daemon::steered(row, Some("config")).len(), 2, "{row}");
        assert_eq!(daemon::steered(row, Some("derived")).len(), 1, "{row}");
        assert!(
            row["counters"]["from_host"]["packets"].as_u64().unwrap() > 0,
            "{row}"
        );
    }
    drop(daemon);
}

#[test]
fn the_uplink_firewall_applies_to_kernel_guests_too() {
    let lab = lab_with_kernel_guests();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let _daemon = Daemon::start(&lab.host, &path).unwrap();
    let _ssh = listen(&lab.host, HOST, 22, b"ssh").unwrap();
    let _web = listen(&lab.host, HOST, 8080, b"web").unwrap();
    lab.host
        .runw(&format!(
            "iptables -A INPUT -i {UPLINK} -p tcp --dport 22 -j DROP"
        ))
        .unwrap();
    for vm in ["k", "j"] {
        assert_eq!(
            connect(lab.guest(vm), HOST, 8080).as_deref(),
            Some(&b"web"[..]),
            "{vm} -> :8080"
        );
        assert_eq!(
            connect(lab.guest(vm), HOST, 22),
            None,
            "{vm} got through to :22"
        );
    }
    // Routing through the host stays refused.
    let k = lab.guest("k");
    k.ipw("route add 192.168.122.0/24 via 203.0.113.157")
        .unwrap();
    assert!(!ping(k, mvbridge_tests::lab::NAT_VM));
    assert!(ping(k, HOST) && ping(k, HOST6));
}

#[test]
fn a_container_restarted_under_the_same_name_is_followed_into_its_new_namespace() {
    let mut lab = lab_with_kernel_guests();
    let (daemon, path) = started_with_resync(&lab, 1);
    let k = lab.spec("k").clone();
    assert!(ping(&lab.host, k.addr));

    // A new namespace by the same name: the daemon must look there, not
    // into the one its connection was made in.
    let ready = ["vm ready", "vm=k"];
    let seen = daemon.count_log(&ready);
    let took = lab
        .restart_kernel_guest("k", std::time::Duration::from_secs(5))
        .unwrap();
    println!("the container's MAC was free again after {took:?}");
    daemon
        .wait_for_another_log(&ready, seen, std::time::Duration::from_secs(5))
        .unwrap();
    live_both_ways(&lab, &path, "k", "in its new namespace");
}

#[test]
fn a_guest_link_replaced_inside_its_namespace_is_followed_at_once() {
    let mut lab = lab_with_kernel_guests();
    // No periodic pass within the test: only the kernel's notifications
    // can make the daemon see the change.
    let (daemon, path) = started_with_resync(&lab, 3600);
    let k = lab.spec("k").clone();
    assert!(ping(&lab.host, k.addr));
    let patience = std::time::Duration::from_secs(5);

    // The container's link goes (a `docker network disconnect`), inside
    // its namespace, which stays: an event pass must look there again.
    let gone = ["vm gone", "vm=k"];
    let seen = daemon.count_log(&gone);
    lab.guest("k").ipw("link del eth0").unwrap();
    daemon.wait_for_another_log(&gone, seen, patience).unwrap();
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert_eq!(daemon::vm_row(&status, "k")["state"], "absent", "{status}");
    assert_eq!(daemon::vm_row(&status, "j")["state"], "live", "{status}");

    // And a new one comes (`docker network connect`, as a CNI macvlan
    // plugin makes it): first under a temporary name, which the daemon
    // hears of (the namespace's notification; the uplink's, too, on the
    // kernels here) and has nothing to do with...
    let heard = [&["observed"][..], &["none about a VM's link"][..]];
    let seen = heard.map(|needles| daemon.count_log(needles));
    let tmp = lab.plug_kernel_guest_unnamed("k", FREE_IFINDEX).unwrap();
    mvbridge_tests::systemd::eventually("the daemon hears of the new link", patience, || {
        heard
            .iter()
            .zip(seen)
            .any(|(needles, n)| daemon.count_log(needles) > n)
    })
    .unwrap();
    // ... then renamed eth0 inside the namespace, which only the
    // namespace hears of (the guest, still down, sends nothing the
    // daemon could learn from): live again, hooked.
    let ready = ["vm ready", "vm=k"];
    let seen = daemon.count_log(&ready);
    lab.name_kernel_guest("k", &tmp).unwrap();
    daemon.wait_for_another_log(&ready, seen, patience).unwrap();
    mvbridge_tests::lab::stock_config(lab.guest("k"), &k).unwrap();
    live_both_ways(&lab, &path, "k", "on its new link");
}

#[test]
fn a_tenants_own_links_coming_and_going_start_no_pass() {
    let lab = lab_with_kernel_guests();
    let (daemon, _path) = started_with_resync(&lab, 3600);
    let patience = std::time::Duration::from_secs(5);
    let k = lab.guest("k");

    // Links of the tenant's own (a nested container's veth) come and go
    // in k's namespace: the daemon reads of them, and starts no pass.
    let ignored = ["none about a VM's link"];
    let passes = ["a VM's link changed inside its namespace"];
    let (seen, before) = (daemon.count_log(&ignored), daemon.count_log(&passes));
    for _ in 0..5 {
        k.ipw("link add t0 type veth peer name t1").unwrap();
        k.ipw("link del t0").unwrap();
    }
    daemon
        .wait_for_another_log(&ignored, seen, patience)
        .unwrap();
    assert_eq!(daemon.count_log(&passes), before, "{}", daemon.log());

    // A change to k's own link is looked at.
    k.ipw("link set eth0 mtu 1400").unwrap();
    daemon
        .wait_for_another_log(&passes, before, patience)
        .unwrap();
}

#[test]
fn two_containers_numbering_their_links_alike_are_not_confused() {
    let mut lab = lab_with_kernel_guests();
    let (daemon, path) = started_with_resync(&lab, 3600);
    let (k, j) = (lab.spec("k").clone(), lab.spec("j").clone());
    assert!(ping(&lab.host, j.addr));
    let patience = std::time::Duration::from_secs(5);

    // Both containers get a new link made inside their namespace, each
    // numbered alike: the programs, which see no namespace, could not
    // tell them apart. The first in the config keeps it.
    let refused = ["[[vm]] \"j\"", "like the link of [[vm]] \"k\""];
    let seen = daemon.count_log(&refused);
    for (key, spec) in [("k", &k), ("j", &j)] {
        lab.guest(key).ipw("link del eth0").unwrap();
        let tmp = lab.plug_kernel_guest_unnamed(key, FREE_IFINDEX).unwrap();
        lab.name_kernel_guest(key, &tmp).unwrap();
        mvbridge_tests::lab::stock_config(lab.guest(key), spec).unwrap();
    }
    daemon
        .wait_for_another_log(&refused, seen, patience)
        .unwrap();
    let status = daemon::running_status(&lab.host, &path).unwrap();
    assert_eq!(daemon::vm_row(&status, "k")["state"], "live", "{status}");
    let j_row = daemon::vm_row(&status, "j");
    assert_eq!(j_row["state"], "unfit", "{status}");
    assert!(
        j_row["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("has ifindex {FREE_IFINDEX}"))),
        "{status}"
    );

    // k's frames are judged as k's (with both steered, the one table
    // entry for the ifindex would have judged one of them as the other):
    // it reaches the host both ways. (j, a /32 guest, still reaches the
    // host the way it did before mvbridge: through the provider's router.)
    live_both_ways(&lab, &path, "k", "numbered like j");
    assert!(ping(lab.guest("k"), HOST6), "k -> host (IPv6)");
}
