//! Hostile guests in the namespace lab: spoofing and floods must neither
//! hijack nor disturb anyone's traffic, and each is counted. Needs root.

use std::net::Ipv4Addr;
use std::time::Duration;

use mvbridge_common::ratelimit;
use mvbridge_common::testing as t;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{HOST, HOST6, Lab, UPLINK, WIRE};
use mvbridge_tests::traffic::{Flood, arp_request, ping, ping_retry, send_raw, send_raw_for};
use mvbridge_tests::wire::{WireTap, mac_str, parse_mac};

fn up(lab: &mut Lab) -> (Daemon, std::path::PathBuf) {
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let d = Daemon::start(&lab.host, &path).unwrap();
    lab.start_guest("b").unwrap();
    (d, path)
}

fn mac(s: &str) -> [u8; 6] {
    parse_mac(s).unwrap()
}

fn drops_of(lab: &Lab, path: &std::path::Path, reason: &str) -> u64 {
    daemon::drops(&daemon::status(&lab.host, path).unwrap().1, reason)
}

#[test]
fn a_vm_cannot_take_over_anyone_elses_address() {
    let mut lab = Lab::hosted().unwrap();
    let (_d, path) = up(&mut lab);
    let (a, b, c) = (
        lab.spec("a").clone(),
        lab.spec("b").clone(),
        lab.spec("c").clone(),
    );
    let (amac, bmac) = (mac(a.mac), mac(b.mac));
    let uplink = lab.uplink_mac().unwrap();
    // Everyone knows everyone first.
    assert!(ping(lab.guest("b"), c.addr));
    assert!(ping(lab.guest("b"), HOST6));
    assert!(ping(&lab.gw, c.addr));
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();

    // VM a announces VM c's IPv4 and the host's IPv4 as its own.
    let mut garp = arp_request(amac, c.addr, c.addr);
    garp[21] = 2; // a reply: "c.addr is-at a's MAC"
    for frame in [garp, arp_request(amac, HOST, HOST)] {
        send_raw(lab.guest("a"), "eth0", frame).unwrap();
    }
    // ... advertises the host's IPv6 address to all nodes, overriding ...
    let na = t::na(
        [0x33, 0x33, 0, 0, 0, 1],
        amac,
        t::VM_A_LL,
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        HOST6.octets(),
    );
    send_raw(lab.guest("a"), "eth0", na).unwrap();
    // ... sends as VM c, and with VM b's MAC.
    send_raw(
        lab.guest("a"),
        "eth0",
        t::ipv4(mac_for_gw(&lab), amac, c.addr.octets(), [198, 51, 100, 10]),
    )
    .unwrap();
    send_raw(
        lab.guest("a"),
        "eth0",
        t::ipv4(mac_for_gw(&lab), bmac, a.addr.octets(), [198, 51, 100, 10]),
    )
    .unwrap();
    // Every one of them reached VM a's hook before the capture stops.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while drops_of(&lab, &path, "spoofed-address") < 4 || drops_of(&lab, &path, "spoofed-mac") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forged frames were not all counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames = tap.stop().unwrap();

    // Nobody's traffic moved: caches still point at the rightful owners.
    let neigh = |ns: &mvbridge_tests::netns::Netns, addr: &str| {
        ns.ip(&["neigh", "show", addr]).unwrap_or_default()
    };
    assert!(
        neigh(lab.guest("b"), &c.addr.to_string()).contains(c.mac),
        "VM b's entry for c was hijacked"
    );
    assert!(
        neigh(&lab.gw, &c.addr.to_string()).contains(c.mac),
        "the gateway's entry for c was hijacked"
    );
    assert!(
        neigh(lab.guest("b"), &HOST6.to_string()).contains(&mac_str(&uplink)),
        "VM b's entry for the host was hijacked"
    );
    assert!(ping(lab.guest("b"), c.addr) && ping(&lab.gw, c.addr) && ping(lab.guest("b"), HOST6));
    // Nothing of it reached the wire.
    let forged: Vec<_> = frames
        .iter()
        .filter(|f| {
            f.src == amac
                && (f.arp().is_some_and(|x| x.spa != a.addr)
                    || f.ipv4().is_some_and(|(s, _)| s != a.addr))
        })
        .chain(
            frames
                .iter()
                .filter(|f| f.src == bmac && f.ipv4().is_some_and(|(s, _)| s == a.addr)),
        )
        .collect();
    assert!(forged.is_empty(), "forged frames on the wire: {forged:#?}");
    // And every attempt was counted.
    assert!(drops_of(&lab, &path, "spoofed-address") >= 4);
    assert!(drops_of(&lab, &path, "spoofed-mac") >= 1);
    let status = daemon::running_status(&lab.host, &path).unwrap();
    let vm_a = daemon::vm_row(&status, "a");
    assert!(vm_a["counters"]["dropped"].as_u64().unwrap() >= 5, "{vm_a}");
}

fn mac_for_gw(lab: &Lab) -> [u8; 6] {
    let out = lab
        .gw
        .run(&["cat", &format!("/sys/class/net/{WIRE}/address")])
        .unwrap();
    parse_mac(&out).unwrap()
}

#[test]
fn an_arp_and_nd_flood_is_limited_and_disturbs_nobody() {
    let mut lab = Lab::hosted().unwrap();
    let (_d, path) = up(&mut lab);
    let a = lab.spec("a").clone();
    let amac = mac(a.mac);
    let host6 = HOST6.octets();
    let plain = vec![
        arp_request(amac, a.addr, HOST),
        t::ns(amac, a.addr6.octets(), host6),
    ];
    // The same solicitation behind a destination options header: the
    // limit may not be dodged by wrapping ND.
    let wrapped = vec![t::nd_message(
        t::solicited_mac(&host6),
        amac,
        a.addr6.octets(),
        t::solicited(&host6),
        135,
        Some(host6),
        &t::llao(1, amac),
        &[(60, 8)],
    )];
    for (what, frames) in [("ARP/NS", plain), ("NS behind options", wrapped)] {
        flood_is_limited(&lab, &path, what, frames);
    }
    // The flooder itself recovers once it behaves.
    lab.guest("a").ipw("neigh flush all").unwrap();
    assert!(ping_retry(lab.guest("a"), HOST, 5));
}

/// VM a sends `frames` as fast as it can for a second: what reaches the
/// host is what its token bucket allows, the rest is counted, and host
/// -> VM c loses nothing meanwhile.
fn flood_is_limited(lab: &Lab, path: &std::path::Path, what: &str, frames: Vec<Vec<u8>>) {
    let watch = Flood::start(&lab.host, lab.spec("c").addr, 300, 5).unwrap();
    let steered = |status: &serde_json::Value| {
        daemon::path_packets(status, "vm->host", "arp")
            + daemon::path_packets(status, "vm->host", "nd")
    };
    let before = daemon::running_status(&lab.host, path).unwrap();
    let t0 = std::time::Instant::now();
    let sent = send_raw_for(lab.guest("a"), "eth0", frames, Duration::from_secs(1)).unwrap();
    let span = t0.elapsed();
    let r = watch.finish().unwrap();
    let after = daemon::running_status(&lab.host, path).unwrap();
    let (passed, limited) = (
        steered(&after) - steered(&before),
        daemon::drops(&after, "rate-limited") - daemon::drops(&before, "rate-limited"),
    );
    println!(
        "{what} flood: {sent} frames sent in {span:?}; {passed} reached the host, {limited} limited; host -> VM c meanwhile {r:?}"
    );
    assert_eq!(
        r.sent, r.received,
        "VM c lost packets during VM a's {what} flood"
    );
    assert!(
        limited > 1000,
        "the {what} flood was too slow to mean anything ({limited} limited of {sent} sent)"
    );
    // What reached the host is what the token bucket allows, on each CPU
    // (each refills its own): a burst, then the rate.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let allowed = cpus
        * (ratelimit::BURST + ratelimit::RATE_PER_SEC * (span.as_millis() as u64 + 1000) / 1000);
    assert!(
        passed <= allowed,
        "{what}: {passed} frames reached the host; at most {allowed} may"
    );
}

#[test]
fn jumbo_frames_cross_the_datapath() {
    let mut lab = Lab::hosted().unwrap();
    for (ns, dev) in [(&lab.gw, WIRE), (&lab.host, UPLINK)] {
        ns.ipw(&format!("link set {dev} mtu 9000")).unwrap();
    }
    lab.host.ipw("link set macvtap0 mtu 9000").unwrap();
    let (_d, _path) = up(&mut lab);
    lab.guest("a").ipw("link set eth0 mtu 9000").unwrap();
    let a = lab.spec("a").addr;
    let big = |from: &mvbridge_tests::netns::Netns, to: Ipv4Addr| {
        from.output(&[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "8900",
            &to.to_string(),
        ])
        .is_ok_and(|o| o.status.success())
    };
    assert!(big(&lab.host, a), "host -> VM a with 8928-byte packets");
    assert!(
        big(lab.guest("a"), HOST),
        "VM a -> host with 8928-byte packets"
    );
}
