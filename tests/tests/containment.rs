//! A guest cannot touch the host's neighbour or route state. Hostile VMs
//! (on a macvtap, and a kernel guest behind the shim) send what a tenant
//! could forge: link-local sources and targets that are not theirs,
//! router messages, link-layer addresses that are not theirs, duplicate
//! address probes, ND behind extension headers, frames to the shim's MAC.
//! After each: the host's routes, addresses and neighbours are as they
//! were, the host still reaches the internet over IPv4 and IPv6, and the
//! drop counter says why. Needs root.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mvbridge_common::testing as t;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{
    GW, GW_LL, GW6, HOST, HOST6, INET, INET6, Lab, NAT_VM, NAT_VM6, SHIM, UPLINK, VmSpec, WIRE,
};
use mvbridge_tests::netns::Netns;
use mvbridge_tests::state::RoutingState;
use mvbridge_tests::traffic::{ping, ping_retry, send_raw, send_raw_for};
use mvbridge_tests::wire::{Mac, WireTap, parse_mac};

const SECOND: Duration = Duration::from_secs(1);

/// The lab's addresses and MACs an attacker would use.
struct Book {
    host_mac: Mac,
    host_ll: [u8; 16],
    gw_mac: Mac,
    shim_mac: Mac,
}

fn book(lab: &Lab) -> Book {
    let gw = lab
        .gw
        .run(&["cat", &format!("/sys/class/net/{WIRE}/address")])
        .unwrap();
    Book {
        host_mac: lab.uplink_mac().unwrap(),
        host_ll: lab.link_local(&lab.host, UPLINK).unwrap().octets(),
        gw_mac: parse_mac(&gw).unwrap(),
        shim_mac: lab.host_mac(SHIM).unwrap(),
    }
}

fn kernel_guest() -> VmSpec {
    VmSpec::kernel_guest("k", "52:54:00:00:00:d4", 164, 26, 64)
}

/// A lab whose host takes router advertisements (as a host with SLAAC
/// would: `accept_ra = 2` since it forwards), with mvbridge running and
/// every neighbour the host relies on resolved.
fn up(args: &[&str]) -> (Lab, Daemon, PathBuf) {
    let mut lab = Lab::hosted().unwrap();
    lab.add_kernel_guest(kernel_guest()).unwrap();
    lab.host
        .sysctl(&format!("net.ipv6.conf.{UPLINK}.accept_ra"), "2")
        .unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let daemon = Daemon::start_with(&lab.host, &path, args, &[]).unwrap();
    lab.start_guest("b").unwrap();
    for to in [
        INET.into(),
        INET6.into(),
        lab.spec("a").addr.into(),
        lab.spec("c").addr6.into(),
    ] {
        let to: std::net::IpAddr = to;
        assert!(
            ping_retry(&lab.host, to, 3),
            "host -> {to} before any attack"
        );
    }
    (lab, daemon, path)
}

fn drops(lab: &Lab, path: &Path, reason: &str) -> u64 {
    daemon::drops(&daemon::status(&lab.host, path).unwrap().1, reason)
}

/// Sends `frames` from `from`'s eth0 and checks that each was dropped for
/// `reason` and that the host is as it was and still reaches the
/// internet.
fn refused(lab: &Lab, path: &Path, from: &Netns, what: &str, frames: Vec<Vec<u8>>, reason: &str) {
    let before = RoutingState::capture(&lab.host).unwrap();
    let counted = drops(lab, path, reason);
    let n = frames.len() as u64;
    for f in frames {
        send_raw(from, "eth0", f).unwrap();
    }
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let now = drops(lab, path, reason);
        if now >= counted + n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {reason} moved by {} of {n}",
            now - counted
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = RoutingState::capture(&lab.host).unwrap();
    assert_eq!(
        (&before.routes, &before.addresses),
        (&after.routes, &after.addresses),
        "{what} changed the host's routes or addresses"
    );
    // A guest's own neighbour refresh may add a true entry meanwhile (a
    // slow kernel makes that likely); nothing else may appear or move.
    let truth = lab.true_neighbours();
    let gained: Vec<&String> = after
        .neighbours
        .difference(&before.neighbours)
        .filter(|n| !truth.contains(*n))
        .collect();
    assert!(gained.is_empty(), "{what}: the host now holds {gained:?}");
    assert!(ping(&lab.host, INET), "{what}: host -> internet over IPv4");
    assert!(ping(&lab.host, INET6), "{what}: host -> internet over IPv6");
}

fn gw_mac_on_host(lab: &Lab) -> Option<String> {
    RoutingState::capture(&lab.host)
        .unwrap()
        .neighbour(&GW_LL.to_string())
}

/// Who attacks, and where its frames for the host go: the host's MAC for
/// a VM on a macvtap, the shim's for a VM behind the shim (what its
/// tcpdump shows it).
struct Attacker {
    mac: Mac,
    addr: [u8; 4],
    ll: [u8; 16],
    to_host: Mac,
}

/// One forged message: what it is, its frames, the drop reason.
struct Attack {
    what: String,
    frames: Vec<Vec<u8>>,
    reason: &'static str,
}

/// Everything a tenant could forge against the host's neighbour and
/// route state, from `who`: link-local and global sources and targets of
/// the gateway, the host and VM c, duplicate address probes for them,
/// router messages, link-layer addresses that are not its own, ARP in
/// other names, a VLAN tag with another VM's MAC.
fn attacks(lab: &Lab, b: &Book, who: &Attacker) -> Vec<Attack> {
    let c = lab.spec("c");
    let cmac = parse_mac(c.mac).unwrap();
    let c_ll = t::eui64_ll(cmac);
    let (c6, gw6, host6) = (c.addr6.octets(), GW6.octets(), HOST6.octets());
    let gw_ll = GW_LL.octets();
    let nd = |src, dst, icmp_type, target, options: &[u8], ext: &[(u8, usize)]| {
        t::nd_message(
            who.to_host,
            who.mac,
            src,
            dst,
            icmp_type,
            target,
            options,
            ext,
        )
    };
    let sllao = t::llao(1, who.mac);
    let tllao = t::llao(2, who.mac);
    // A router advertisement with a prefix to autoconfigure.
    let pio = {
        let mut o = vec![
            3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
        ];
        o.extend_from_slice(&"2001:db8:dead::".parse::<Ipv6Addr>().unwrap().octets());
        o
    };
    let ra_options: Vec<u8> = sllao.iter().chain(pio.iter()).copied().collect();
    let mut out = Vec::new();
    let mut add = |what: String, frames: Vec<Vec<u8>>, reason| {
        out.push(Attack {
            what,
            frames,
            reason,
        })
    };

    let others: [(&str, [u8; 16]); 6] = [
        ("the gateway's link-local", gw_ll),
        ("the host's link-local", b.host_ll),
        ("VM c's link-local", c_ll),
        ("the gateway's global", gw6),
        ("the host's global", host6),
        ("VM c's global", c6),
    ];
    for (name, addr) in others {
        // An address the host knows nobody by (the gateway's global one:
        // the host routes via fe80::1 and never resolved it) is no ground
        // to reach the host; one somebody owns is a spoofing attempt. (A
        // probe for such an address goes to the wire, where its owner
        // defends it: the host's state is not in it.)
        let (claim, probe) = if addr == gw6 {
            ("unknown-source", false)
        } else {
            ("spoofed-address", true)
        };
        add(
            format!("a solicitation in {name} name"),
            vec![nd(addr, b.host_ll, 135, Some(b.host_ll), &sllao, &[])],
            claim,
        );
        add(
            format!("an advertisement of {name} address"),
            vec![nd(who.ll, b.host_ll, 136, Some(addr), &tllao, &[])],
            claim,
        );
        if probe {
            add(
                format!("a duplicate address probe for {name} address"),
                vec![t::dad(who.mac, addr)],
                "spoofed-address",
            );
        }
    }
    add(
        "a solicitation in the gateway's link-local name to the host's solicited-node group".into(),
        vec![t::nd_message(
            t::solicited_mac(&host6),
            who.mac,
            gw_ll,
            t::solicited(&host6),
            135,
            Some(host6),
            &sllao,
            &[],
        )],
        "spoofed-address",
    );
    add(
        "an advertisement of the gateway's link-local address behind a destination options header"
            .into(),
        vec![nd(who.ll, b.host_ll, 136, Some(gw_ll), &tllao, &[(60, 8)])],
        "spoofed-address",
    );
    add(
        "a solicitation in the gateway's name behind hop-by-hop and destination options".into(),
        vec![nd(
            gw_ll,
            b.host_ll,
            135,
            Some(b.host_ll),
            &sllao,
            &[(0, 8), (60, 16)],
        )],
        "spoofed-address",
    );
    add(
        "a router advertisement in the gateway's name".into(),
        vec![nd(gw_ll, b.host_ll, 134, None, &ra_options, &[])],
        "router-message",
    );
    add(
        "a router advertisement from its own address".into(),
        vec![nd(who.ll, b.host_ll, 134, None, &ra_options, &[])],
        "router-message",
    );
    add(
        "a router advertisement to all nodes".into(),
        vec![t::nd_message(
            t::group_mac(&t::ALL_NODES),
            who.mac,
            who.ll,
            t::ALL_NODES,
            134,
            None,
            &ra_options,
            &[],
        )],
        "router-message",
    );
    add(
        "a redirect in the gateway's name".into(),
        vec![nd(gw_ll, b.host_ll, 137, Some(who.ll), &[], &[])],
        "router-message",
    );
    add(
        "a router solicitation".into(),
        vec![nd(who.ll, b.host_ll, 133, None, &sllao, &[])],
        "router-message",
    );
    add(
        "a solicitation naming the gateway's MAC".into(),
        vec![nd(
            who.ll,
            b.host_ll,
            135,
            Some(b.host_ll),
            &t::llao(1, b.gw_mac),
            &[],
        )],
        "forged-link-address",
    );
    add(
        "an advertisement of its own address naming the gateway's MAC".into(),
        vec![nd(
            who.ll,
            b.host_ll,
            136,
            Some(who.ll),
            &t::llao(2, b.gw_mac),
            &[],
        )],
        "forged-link-address",
    );
    add(
        "an ARP whose sender MAC is the gateway's".into(),
        vec![{
            let mut f = t::arp(who.to_host, who.mac, 1, who.addr, HOST.octets());
            f[22..28].copy_from_slice(&b.gw_mac);
            f
        }],
        "forged-link-address",
    );
    for (name, addr) in [
        ("the gateway's", GW.octets()),
        ("the host's", HOST.octets()),
        ("VM c's", c.addr.octets()),
    ] {
        add(
            format!("an ARP in {name} name"),
            vec![t::arp(who.to_host, who.mac, 1, addr, HOST.octets())],
            "spoofed-address",
        );
    }
    add(
        "an ARP probe for the host's address".into(),
        vec![t::arp(who.to_host, who.mac, 1, [0; 4], HOST.octets())],
        "spoofed-address",
    );
    add(
        "a VLAN-tagged frame with VM c's MAC".into(),
        vec![{
            let mut f = t::ipv4(who.to_host, cmac, who.addr, HOST.octets());
            f.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
            f
        }],
        "spoofed-mac",
    );
    out
}

fn attacker(lab: &Lab, key: &str, to_host: Mac) -> Attacker {
    let spec = lab.spec(key);
    let mac = parse_mac(spec.mac).unwrap();
    Attacker {
        mac,
        addr: spec.addr.octets(),
        ll: t::eui64_ll(mac),
        to_host,
    }
}

/// Runs every attack from `key`'s eth0 that `runs` keeps.
fn refuse_all(
    lab: &Lab,
    path: &Path,
    key: &str,
    to_host: Mac,
    label: &str,
    runs: impl Fn(&Attack) -> bool,
) {
    let b = book(lab);
    let who = attacker(lab, key, to_host);
    let gw_before = gw_mac_on_host(lab);
    assert_eq!(
        gw_before.as_deref(),
        Some(mvbridge_tests::wire::mac_str(&b.gw_mac).as_str())
    );
    for attack in attacks(lab, &b, &who).into_iter().filter(|a| runs(a)) {
        let what = format!("{label}: {}", attack.what);
        refused(
            lab,
            path,
            lab.guest(key),
            &what,
            attack.frames,
            attack.reason,
        );
    }
    assert_eq!(
        gw_mac_on_host(lab),
        gw_before,
        "{label}: the host's entry for fe80::1 moved"
    );
}

#[test]
fn a_vm_on_a_macvtap_cannot_touch_the_hosts_routing() {
    let (lab, _daemon, path) = up(&[]);
    let host_mac = book(&lab).host_mac;
    refuse_all(&lab, &path, "a", host_mac, "VM a", |_| true);
}

#[test]
fn a_kernel_guest_cannot_use_the_shim_to_reach_what_the_uplink_refuses() {
    let (lab, mut daemon, path) = up(&["--keep"]);
    let b = book(&lab);
    let k = lab.spec("k").clone();
    let kmac = parse_mac(k.mac).unwrap();
    let guest = lab.guest("k");
    let via_shim = vec![
        t::ipv4(b.shim_mac, kmac, k.addr.octets(), NAT_VM.octets()),
        t::arp(b.shim_mac, kmac, 1, k.addr.octets(), GW.octets()),
    ];

    // Its own hook refuses everything a VM on a macvtap may not do.
    refuse_all(&lab, &path, "k", b.shim_mac, "VM k", |_| true);
    refused(
        &lab,
        &path,
        guest,
        "routing via the shim's MAC",
        via_shim.clone(),
        "not-for-host",
    );
    // A route through the shim into the NAT network reaches nothing.
    let shim_mac = mvbridge_tests::wire::mac_str(&b.shim_mac);
    for (host, private) in [
        (std::net::IpAddr::from(HOST), "192.168.122.0/24"),
        (HOST6.into(), "fd00:122::/64"),
    ] {
        guest
            .ipw(&format!(
                "neigh replace {host} lladdr {shim_mac} dev eth0 nud permanent"
            ))
            .unwrap();
        guest
            .ipw(&format!("route add {private} via {host}"))
            .unwrap();
    }
    assert!(
        !ping(guest, NAT_VM),
        "a kernel guest reached the NAT VM via the shim"
    );
    assert!(
        !ping(guest, NAT_VM6),
        "a kernel guest reached the NAT VM over IPv6 via the shim"
    );

    // Without its hook (a container may own its namespace), the shim's
    // ingress refuses the same. The daemon goes first, or it would put the
    // hook back; the datapath stays.
    assert!(daemon.stop_with(libc::SIGTERM).unwrap().success());
    let pin = lab.bpffs().join(format!("hook_vm_{}-vm-k:eth0", lab.id));
    mvbridge_tests::state::detach_behind_its_back(guest, &pin, "eth0", "egress").unwrap();
    // Only what is addressed to the shim reaches its ingress: the macvlan
    // bridge hands the shim no multicast, as it joined no group (its IPv6
    // is off), and its ingress refuses any frame not for its MAC (the
    // `shim_ingress` rows of the decision's and the programs' tests).
    refuse_all(&lab, &path, "k", b.shim_mac, "VM k unhooked", |a| {
        a.frames.iter().all(|f| f[0..6] == b.shim_mac)
    });
    refused(
        &lab,
        &path,
        guest,
        "routing via the shim's MAC, unhooked",
        via_shim,
        "not-for-host",
    );
    assert!(
        !ping(guest, NAT_VM),
        "the unhooked kernel guest reached the NAT VM"
    );
    assert!(
        !ping(guest, NAT_VM6),
        "the unhooked kernel guest reached the NAT VM over IPv6"
    );
}

#[test]
fn the_routers_solicitations_reach_every_address_of_a_guest() {
    let mut lab = Lab::hosted().unwrap();
    // Addresses whose solicited-node groups are not their guest's MAC's:
    // configured on an adopted macvtap (a) and on one mvbridge creates
    // (b), and learnt (c, inside its `learn` prefix).
    let extra = |last: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last);
    let (a5, b6, c7) = (extra(5), extra(6), extra(7));
    let config = lab
        .config()
        .replace(
            "addresses = [\"203.0.113.161\", \"2001:db8:0:1::161\"]",
            &format!("addresses = [\"203.0.113.161\", \"2001:db8:0:1::161\", \"{a5}\"]"),
        )
        .replace(
            "addresses = [\"203.0.113.162\", \"2001:db8:0:1::162\"]",
            &format!("addresses = [\"203.0.113.162\", \"2001:db8:0:1::162\", \"{b6}\"]"),
        )
        .replace(
            "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]",
            "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]\nlearn = [\"2001:db8:0:1::/64\"]",
        );
    assert!(
        config.contains(&a5.to_string())
            && config.contains(&b6.to_string())
            && config.contains("learn ="),
        "{config}"
    );
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let _daemon = Daemon::start(&lab.host, &path).unwrap();
    lab.start_guest("b").unwrap();
    for (key, addr) in [("a", a5), ("b", b6), ("c", c7)] {
        lab.guest(key)
            .ipw(&format!("addr add {addr}/64 dev eth0 nodad"))
            .unwrap();
    }
    for (key, addr) in [("a", a5), ("b", b6), ("c", c7)] {
        lab.gw.ipw(&format!("-6 neigh flush dev {WIRE}")).unwrap();
        assert!(
            ping_retry(&lab.inet, addr, 3),
            "the internet cannot reach {addr} on VM {key}"
        );
        assert!(
            ping_retry(&lab.host, addr, 3),
            "the host cannot reach {addr} on VM {key}"
        );
    }
}

#[test]
fn the_host_side_of_a_vm_link_stays_silent() {
    let mut lab = Lab::hosted().unwrap();
    let path = lab.write_config("mvbridge.toml", &lab.config()).unwrap();
    let _daemon = Daemon::start(&lab.host, &path).unwrap();
    // With the guest stopped, nothing may carry its MAC: a link that comes
    // up again would send DAD, router solicitations and MLD reports from
    // the host's side if the host's IPv6 ran there.
    lab.stop_guest("a");
    let amac = parse_mac(lab.spec("a").mac).unwrap();
    let tap = WireTap::start(&lab.gw, WIRE).unwrap();
    for _ in 0..2 {
        lab.host.ipw("link set macvtap0 down").unwrap();
        lab.host.ipw("link set macvtap0 up").unwrap();
    }
    // Nothing to poll for: this is the silence. Two seconds cover the MLD
    // reports (sent at once) and a router solicitation (up to one second
    // after the link comes up).
    std::thread::sleep(2 * SECOND);
    let frames = tap.stop().unwrap();
    let spoken: Vec<_> = frames.iter().filter(|f| f.src == amac).collect();
    assert!(
        spoken.is_empty(),
        "the host spoke with VM a's MAC: {spoken:#?}"
    );
    let addrs = lab
        .host
        .ip(&["-6", "addr", "show", "dev", "macvtap0"])
        .unwrap();
    assert!(!addrs.contains("inet6"), "{addrs}");
}

#[test]
fn a_vm_sending_from_random_sources_delays_nothing() {
    let mut lab = Lab::hosted().unwrap();
    // VM c may learn inside 203.0.113.160/28; it will send from thousands
    // of other addresses, each one reported and refused.
    // VM a is matched by MAC, as libvirt's VMs are: it will come back
    // under another name.
    let config = lab
        .config()
        .replace(
            "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]",
            "addresses = [\"203.0.113.163\", \"2001:db8:0:1::163\"]\nlearn = [\"203.0.113.160/28\"]",
        )
        .replace("interface = \"macvtap0\"", "mac = \"52:54:00:00:00:a1\"")
        .replacen("\n\n[shim]", "\nresync_seconds = 1\n\n[shim]", 1);
    assert!(config.contains("resync_seconds = 1"), "{config}");
    let path = lab.write_config("mvbridge.toml", &config).unwrap();
    let mut daemon = Daemon::start(&lab.host, &path).unwrap();
    let ready = ["vm ready", "vm=a"];
    // The baseline: VM a restarted with nothing else going on.
    lab.libvirt_stop("a").unwrap();
    let seen = daemon.count_log(&ready);
    lab.libvirt_start("a", "macvtap6").unwrap();
    let line = daemon
        .wait_for_another_log(&ready, seen, 5 * SECOND)
        .unwrap();
    let calm = daemon::log_field(&line, "reaction_us").unwrap();
    lab.libvirt_stop("a").unwrap();
    let cmac = parse_mac(lab.spec("c").mac).unwrap();
    let host_mac = lab.uplink_mac().unwrap();
    let frames: Vec<Vec<u8>> = (0..4000u32)
        .map(|i| {
            t::ipv4(
                host_mac,
                cmac,
                (0x0a00_0000 + i).to_be_bytes(),
                HOST.octets(),
            )
        })
        .collect();
    let sender = Netns::borrowed(&lab.guest("c").name);
    // Long enough to outlast what follows on a slow (emulated) machine:
    // "delays nothing" means nothing waits for the flood to end.
    let flood = std::thread::spawn(move || send_raw_for(&sender, "eth0", frames, 15 * SECOND));

    // Once refusals pour in, a VM link appearing is handled at once...
    daemon
        .wait_for_log(&["refused to learn"], 5 * SECOND)
        .unwrap();
    let seen = daemon.count_log(&ready);
    lab.libvirt_start("a", "macvtap7").unwrap();
    let line = daemon
        .wait_for_another_log(&ready, seen, 5 * SECOND)
        .unwrap();
    let reaction = daemon::log_field(&line, "reaction_us").unwrap();
    assert!(
        !flood.is_finished(),
        "VM a went live only as the flood ended ({reaction} us after its link came)"
    );
    // A few times the calm figure at most (plus a scheduling slice: the
    // flood's sender and the daemon share the machine's cores).
    assert!(
        reaction <= 4 * calm + 100_000,
        "VM a went live {reaction} us after its link came during the flood, {calm} us without"
    );
    // ... the periodic pass still runs: a hook taken away behind the
    // daemon's back (no netlink event says so) is put back ...
    let attached = ["hook attached", "mvb_uplink"];
    let seen = daemon.count_log(&attached);
    let pin = lab.bpffs().join(format!("hook_uplink_{UPLINK}"));
    mvbridge_tests::state::detach_behind_its_back(&lab.host, &pin, UPLINK, "egress").unwrap();
    daemon
        .wait_for_another_log(&attached, seen, 5 * SECOND)
        .unwrap();
    assert!(
        !flood.is_finished(),
        "the uplink hook came back only as the flood ended"
    );
    // ... and so is SIGTERM.
    let t0 = Instant::now();
    assert!(daemon.stop_with(libc::SIGTERM).unwrap().success());
    let took = t0.elapsed();
    assert!(
        !flood.is_finished(),
        "SIGTERM took effect only as the flood ended ({took:?})"
    );
    let sent = flood.join().unwrap().unwrap();
    let logged = daemon.count_log(&["refused to learn:"]);
    println!(
        "{sent} frames from 4000 sources; VM a live {reaction} us after its link came ({calm} us without the flood); {logged} refusals logged; exit in {took:?}"
    );
    assert!(
        sent >= 4000,
        "the flood was too short to mean anything ({sent})"
    );
    assert!(
        logged <= 10,
        "{logged} refusal lines for one VM in a few seconds"
    );
}
