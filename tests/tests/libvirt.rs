//! VMs declared in libvirt: a real libvirtd in the lab's host namespace,
//! real qemu guests (TCG) on macvtaps it makes, mvbridge told only
//! `[libvirt] enable = true`. Every lifecycle event is followed live, and
//! after each the host reaches the VMs and they the host (IPv4 and IPv6),
//! the NAT VM reaches them, no local frame crosses the wire and the host
//! says nothing with a guest's MAC. Timings are printed (`--nocapture`).
//! Needs root; boots guests, so it takes minutes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{HOST, HOST6, Lab, NAT_GW, NAT_VM, UPLINK, WIRE};
use mvbridge_tests::libvirt::{GuestSpec, Libvirtd, NicSpec, metadata};
use mvbridge_tests::traffic::{ping, ping_retry};
use mvbridge_tests::wire::{Frame, WireTap, mac_str, parse_mac};

const BOOT: Duration = Duration::from_secs(180);
const SOON: Duration = Duration::from_secs(30);

/// A guest of these tests: domain, NIC MAC, IPv4 and IPv6 address.
#[derive(Clone, Copy)]
struct Vm {
    domain: &'static str,
    mac: &'static str,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
    /// Pings from the guest use this source (a NIC plugged later).
    source: Option<Ipv4Addr>,
}

const VM1: Vm = Vm {
    domain: "vm1",
    mac: "52:54:00:aa:00:01",
    v4: Ipv4Addr::new(203, 0, 113, 171),
    v6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x171)),
    source: None,
};
/// The /32 + /128 guest, gateways on-link.
const VM2: Vm = Vm {
    domain: "vm2",
    mac: "52:54:00:aa:00:02",
    v4: Ipv4Addr::new(203, 0, 113, 172),
    v6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x172)),
    source: None,
};
/// vm1's second NIC, hot-plugged.
const VM1_NIC2: Vm = Vm {
    domain: "vm1",
    mac: "52:54:00:aa:00:03",
    v4: Ipv4Addr::new(203, 0, 113, 173),
    v6: None,
    source: Some(Ipv4Addr::new(203, 0, 113, 173)),
};
/// An address vm1's guest has on its first NIC from the start, which
/// its metadata declares only for a while.
const EXTRA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 174);

fn vm1_spec() -> GuestSpec {
    GuestSpec {
        name: "vm1".into(),
        nics: vec![NicSpec::new(
            VM1.mac,
            &[
                "203.0.113.171/26",
                "2001:db8:0:1::171/64",
                "203.0.113.174/26",
            ],
        )],
        later: vec![NicSpec::new(VM1_NIC2.mac, &["203.0.113.173/26"])],
        metadata: vm1_metadata(false, false),
    }
}

fn vm1_metadata(nic2: bool, extra: bool) -> String {
    let mut first = vec!["203.0.113.171", "2001:db8:0:1::171"];
    if extra {
        first.push("203.0.113.174");
    }
    let mut ifaces: Vec<(&str, &[&str])> = vec![(VM1.mac, &first)];
    if nic2 {
        ifaces.push((VM1_NIC2.mac, &["203.0.113.173"]));
    }
    metadata(&ifaces)
}

fn vm2_spec() -> GuestSpec {
    GuestSpec {
        name: "vm2".into(),
        nics: vec![NicSpec::new(
            VM2.mac,
            &["203.0.113.172/32", "2001:db8:0:1::172/128"],
        )],
        later: vec![],
        metadata: metadata(&[(VM2.mac, &["203.0.113.172", "2001:db8:0:1::172"])]),
    }
}

/// The lab's config with no `[[vm]]` (but `extra`) and libvirt on,
/// told where this lab's libvirtd listens and where the record goes.
fn write_config(lab: &Lab, lv: &Libvirtd, extra: &str) -> PathBuf {
    let text = format!(
        "{}{extra}\n[libvirt]\nenable = true\nuri = \"{}\"\nstate_file = \"{}\"\n",
        lab.config(),
        lv.ro_uri(),
        lab.dir.join("libvirt.json").display()
    );
    lab.write_config("mvbridge.toml", &text).unwrap()
}

/// Timings of the events tried, printed at the end.
#[derive(Default)]
struct Timings(Vec<(String, Duration)>);

impl Timings {
    fn note(&mut self, what: &str, took: Duration) {
        println!("timing: {what}: {} ms", took.as_millis());
        self.0.push((what.to_owned(), took));
    }

    fn print(&self) {
        println!("\nlifecycle events, from the command to mvbridge's verdict:");
        for (what, took) in &self.0 {
            println!("  {what:<58} {:>7} ms", took.as_millis());
        }
    }
}

/// Polls `status` until the datapath is attached and `pred` holds; the
/// report and how long it took.
fn wait_status(
    lab: &Lab,
    config: &Path,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let t0 = Instant::now();
    loop {
        let (attached, status) = daemon::status(&lab.host, config).unwrap();
        if attached && pred(&status) {
            return (status, t0.elapsed());
        }
        assert!(
            t0.elapsed() < SOON,
            "{what}: not within {SOON:?}:\n{status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
}

fn state_of(status: &serde_json::Value, name: &str) -> String {
    row(status, name)
        .and_then(|r| r["state"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

fn is_live(name: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |s| state_of(s, name) == "live"
}

/// Waits until the daemon logs a line with all of `needles` after
/// `seen` such lines; returns how long after `t0` that was.
fn logged(d: &Daemon, needles: &[&str], seen: usize, t0: Instant) -> Duration {
    d.wait_for_another_log(needles, seen, SOON).unwrap();
    t0.elapsed()
}

/// The guest pings `to` (from its address `from` when given).
fn guest_pings(lv: &Libvirtd, vm: Vm, to: IpAddr) -> bool {
    let from = vm.source.map(|s| format!("-I {s} ")).unwrap_or_default();
    let cmd = format!("ping -c 1 -W 2 {from}{to}");
    (0..3).any(|_| {
        lv.guest(vm.domain, &cmd, Duration::from_secs(10))
            .is_some_and(|(ok, _)| ok)
    })
}

/// Host <-> VM (IPv4 and IPv6), NAT VM -> VM, VM <-> VM for every VM in
/// `vms`; panics naming the first pair that fails.
fn reachable(lab: &Lab, lv: &Libvirtd, vms: &[Vm]) {
    for vm in vms {
        assert!(
            ping_retry(&lab.host, vm.v4, 3),
            "host -> {} {}",
            vm.domain,
            vm.v4
        );
        assert!(
            ping_retry(&lab.natvm, vm.v4, 3),
            "natvm -> {} {}",
            vm.domain,
            vm.v4
        );
        assert!(
            guest_pings(lv, *vm, HOST.into()),
            "{} {} -> host",
            vm.domain,
            vm.v4
        );
        if let Some(v6) = vm.v6 {
            assert!(ping_retry(&lab.host, v6, 3), "host -> {} {v6}", vm.domain);
            assert!(
                guest_pings(lv, *vm, HOST6.into()),
                "{} -> host {HOST6}",
                vm.domain
            );
        }
        for other in vms
            .iter()
            .filter(|o| o.domain != vm.domain && o.source.is_none())
        {
            if vm.source.is_none() {
                assert!(
                    guest_pings(lv, *vm, other.v4.into()),
                    "{} -> {} {}",
                    vm.domain,
                    other.domain,
                    other.v4
                );
            }
        }
    }
}

/// The EUI-64 link-local address a MAC gives: the host side of a macvtap
/// would use it (the guests here use random ones).
fn eui64(mac: &str) -> Ipv6Addr {
    let m = parse_mac(mac).unwrap();
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Frames between two local endpoints that crossed the wire: IPv4, ARP,
/// IPv6, and neighbour discovery between local addresses.
fn local_leaks(frames: &[Frame]) -> Vec<&Frame> {
    let local4: Vec<Ipv4Addr> = [HOST, NAT_GW, NAT_VM, VM1.v4, VM2.v4, VM1_NIC2.v4, EXTRA].into();
    let local6: Vec<Ipv6Addr> = [HOST6, VM1.v6.unwrap(), VM2.v6.unwrap()].into();
    frames
        .iter()
        .filter(|f| {
            let v4 = f
                .ipv4()
                .is_some_and(|(s, d)| local4.contains(&s) && local4.contains(&d));
            let arp = f
                .arp()
                .is_some_and(|a| local4.contains(&a.spa) && local4.contains(&a.tpa));
            let v6 = f
                .ipv6()
                .is_some_and(|(s, d)| local6.contains(&s) && local6.contains(&d));
            // A solicitation between two local endpoints, or the answer
            // to one (not the gateway resolving a guest, and its answer).
            let solicitation = f.bytes.get(54) == Some(&135);
            let nd = f.nd_target().is_some_and(|t| local6.contains(&t))
                && f.ipv6().is_some_and(|(s, d)| {
                    local6.contains(&s) && (solicitation || local6.contains(&d))
                });
            v4 || arp || v6 || nd
        })
        .collect()
}

/// IPv6 the host's side of a guest's macvtap sent: the guest's MAC with
/// the link-local address that MAC gives the host side (source, or the
/// target of a duplicate address probe). The guests use random ones.
fn host_speech<'a>(frames: &'a [Frame], macs: &[&str]) -> Vec<&'a Frame> {
    let guests: Vec<([u8; 6], Ipv6Addr)> = macs
        .iter()
        .map(|m| (parse_mac(m).unwrap(), eui64(m)))
        .collect();
    frames
        .iter()
        .filter(|f| {
            guests.iter().any(|(mac, ll)| {
                f.src == *mac
                    && (f.ipv6().is_some_and(|(s, _)| s == *ll) || f.nd_target() == Some(*ll))
            })
        })
        .collect()
}

fn describe(frames: &[&Frame]) -> String {
    frames
        .iter()
        .take(10)
        .map(|f| {
            format!(
                "{} -> {} type {:#06x} {:?} {:?}",
                mac_str(&f.src),
                mac_str(&f.dst),
                f.ethertype,
                f.ipv4(),
                f.ipv6()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `step` under a capture of the wire, then checks reachability for
/// `vms` and that nothing local crossed the wire meanwhile. From the end
/// of `step` (mvbridge adopted the macvtaps) the host's side of a guest's
/// macvtap must say nothing at all: its IPv6 would send its multicast
/// listener reports again within a second or two of coming up.
fn quietly(lab: &Lab, lv: &Libvirtd, vms: &[Vm], step: impl FnOnce()) {
    let whole = WireTap::start(&lab.gw, WIRE).unwrap();
    step();
    let adopted = WireTap::start(&lab.gw, WIRE).unwrap();
    reachable(lab, lv, vms);
    let after = adopted.stop().unwrap();
    let frames = whole.stop().unwrap();
    let bad = local_leaks(&frames);
    assert!(
        bad.is_empty(),
        "local frames on the wire:\n{}",
        describe(&bad)
    );
    let macs: Vec<&str> = vms.iter().map(|v| v.mac).collect();
    let bad = host_speech(&after, &macs);
    assert!(
        bad.is_empty(),
        "the host spoke on a guest's macvtap:\n{}",
        describe(&bad)
    );
    // Said before mvbridge adopted the link (libvirt brings a macvtap up
    // as it creates it): reported, not failed.
    for f in host_speech(&frames, &macs) {
        println!(
            "note: before adoption, the host side sent {}",
            describe(&[f])
        );
    }
}

#[test]
fn libvirt_vms_are_followed_through_their_lifecycle() {
    let lab = Lab::build(vec![]).unwrap();
    let mut lv = Libvirtd::start(&lab).unwrap();
    let mut t = Timings::default();

    // VMs running before mvbridge starts.
    let t0 = Instant::now();
    for spec in [vm1_spec(), vm2_spec()] {
        lv.define(&spec).unwrap();
        lv.virsh(&["start", &spec.name]).unwrap();
    }
    lv.wait_guest_nic("vm1", VM1.mac, BOOT).unwrap();
    lv.wait_guest_nic("vm2", VM2.mac, BOOT).unwrap();
    t.note("(two guests boot on TCG)", t0.elapsed());
    let config = write_config(&lab, &lv, "");
    let cfg = config.display().to_string();
    // Without mvbridge the host cannot reach them.
    assert!(!ping(&lab.host, VM1.v4));

    let t0 = Instant::now();
    let mut d = Daemon::start(&lab.host, &config).unwrap();
    let (status, _) = wait_status(&lab, &config, "running VMs found", |s| {
        is_live("vm1")(s) && is_live("vm2")(s)
    });
    t.note("mvbridge started after the VMs: both live", t0.elapsed());
    for vm in ["vm1", "vm2"] {
        let r = row(&status, vm).unwrap();
        assert_eq!(r["origin"]["source"], "libvirt", "{r}");
        assert_eq!(r["origin"]["domain"], vm, "{r}");
        assert!(
            daemon::steered(r, Some("config")).contains(&format!("203.0.113.17{}", &vm[2..])),
            "{r}"
        );
    }
    assert_eq!(status["libvirt"]["source"], "libvirt", "{status:#}");
    let check = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("libvirt domain \"vm1\" interface 52:54:00:aa:00:01 declares VM \"vm1\": 203.0.113.171, 2001:db8:0:1::171"),
        "{text}"
    );
    assert!(text.contains("(from libvirt domain \"vm2\""), "{text}");
    let human = daemon::mvbridge(&lab.host, &["status", "--config", &cfg]).unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("libvirt:vm1") && human.contains("2 VMs declared"),
        "{human}"
    );
    // Adopted: reachable, nothing local on the wire, and the host's side
    // of their macvtaps silent from now on.
    quietly(&lab, &lv, &[VM1, VM2], || {});

    // destroy: the macvtap goes, the VM with it.
    quietly(&lab, &lv, &[VM1], || {
        let seen = d.count_log(&["vm gone", "vm=vm2"]);
        let t0 = Instant::now();
        lv.virsh(&["destroy", "vm2"]).unwrap();
        t.note(
            "destroy vm2 -> vm gone",
            logged(&d, &["vm gone", "vm=vm2"], seen, t0),
        );
        wait_status(&lab, &config, "vm2 absent", |s| {
            state_of(s, "vm2") == "absent"
        });
    });

    // start: a new macvtap.
    quietly(&lab, &lv, &[VM1, VM2], || {
        let seen = d.count_log(&["vm ready", "vm=vm2"]);
        let t0 = Instant::now();
        lv.virsh(&["start", "vm2"]).unwrap();
        t.note(
            "start vm2 -> vm ready",
            logged(&d, &["vm ready", "vm=vm2"], seen, t0),
        );
        lv.wait_guest_nic("vm2", VM2.mac, BOOT).unwrap();
        t.note("start vm2 -> guest answers", t0.elapsed());
    });

    // reset: same macvtap, the guest reboots.
    quietly(&lab, &lv, &[VM1, VM2], || {
        let configured = lv.configured("vm1", VM1.mac);
        let t0 = Instant::now();
        lv.virsh(&["reset", "vm1"]).unwrap();
        // qemu carries out a reset after virsh returns: wait for the
        // rebooted guest to configure its NIC anew.
        while lv.configured("vm1", VM1.mac) <= configured {
            assert!(t0.elapsed() < BOOT, "vm1 did not come back after reset");
            std::thread::sleep(Duration::from_millis(50));
        }
        lv.wait_guest_nic("vm1", VM1.mac, BOOT).unwrap();
        assert_eq!(
            state_of(&daemon::status(&lab.host, &config).unwrap().1, "vm1"),
            "live"
        );
        t.note(
            "reset vm1 -> guest answers again (vm1 live throughout)",
            t0.elapsed(),
        );
    });

    // Hot-plug: declared first, then plugged.
    let nic2 = format!("vm1/{}", VM1_NIC2.mac);
    quietly(&lab, &lv, &[VM1, VM2, VM1_NIC2], || {
        lv.set_metadata("vm1", &vm1_metadata(true, false)).unwrap();
        let (status, took) = wait_status(&lab, &config, "nic2 declared", |s| {
            state_of(s, &nic2) == "absent"
        });
        t.note("metadata declares a second NIC -> listed, absent", took);
        assert_eq!(row(&status, &nic2).unwrap()["origin"]["domain"], "vm1");
        let seen = d.count_log(&["vm ready", &format!("vm={nic2}")]);
        let xml = lab.dir.join("nic2.xml");
        std::fs::write(&xml, NicSpec::new(VM1_NIC2.mac, &[]).xml()).unwrap();
        let t0 = Instant::now();
        lv.virsh(&["attach-device", "vm1", &xml.display().to_string(), "--live"])
            .unwrap();
        t.note(
            "hot-plug (attach-device) -> vm ready",
            logged(&d, &["vm ready", &format!("vm={nic2}")], seen, t0),
        );
        lv.wait_guest_nic("vm1", VM1_NIC2.mac, BOOT).unwrap();
        t.note("hot-plug -> guest answers on it", t0.elapsed());
    });

    // Hot-unplug.
    quietly(&lab, &lv, &[VM1, VM2], || {
        let seen = d.count_log(&["vm gone", &format!("vm={nic2}")]);
        let xml = lab.dir.join("nic2.xml");
        let t0 = Instant::now();
        lv.virsh(&["detach-device", "vm1", &xml.display().to_string(), "--live"])
            .unwrap();
        t.note(
            "hot-unplug (detach-device) -> vm gone",
            logged(&d, &["vm gone", &format!("vm={nic2}")], seen, t0),
        );
    });
    // (Outside the capture: unsteered, the ping goes to the wire.)
    assert!(!ping(&lab.host, VM1_NIC2.v4));

    // A live metadata edit: an address steered, then no longer.
    assert!(
        !ping(&lab.host, EXTRA),
        "{EXTRA} reachable before it is declared"
    );
    quietly(&lab, &lv, &[VM1, VM2], || {
        let t0 = Instant::now();
        lv.set_metadata("vm1", &vm1_metadata(true, true)).unwrap();
        let (_, took) = wait_status(&lab, &config, "extra address steered", |s| {
            row(s, "vm1")
                .is_some_and(|r| daemon::steered(r, Some("config")).contains(&EXTRA.to_string()))
        });
        t.note(
            "virsh metadata adds an address -> steered",
            t0.elapsed().max(took),
        );
        assert!(ping_retry(&lab.host, EXTRA, 3), "host -> {EXTRA}");
        assert!(ping_retry(&lab.natvm, EXTRA, 3), "natvm -> {EXTRA}");
    });
    let t0 = Instant::now();
    lv.set_metadata("vm1", &vm1_metadata(true, false)).unwrap();
    wait_status(&lab, &config, "extra address no longer steered", |s| {
        row(s, "vm1").is_some_and(|r| !daemon::steered(r, None).contains(&EXTRA.to_string()))
    });
    t.note("virsh metadata removes it -> not steered", t0.elapsed());
    assert!(!ping(&lab.host, EXTRA), "{EXTRA} still reachable");
    quietly(&lab, &lv, &[VM1, VM2], || {});

    // libvirtd stops: the VMs stay, and status says why.
    let seen = d.count_log(&["libvirt unreachable"]);
    let t0 = Instant::now();
    lv.stop().unwrap();
    t.note(
        "libvirtd stopped -> daemon notices",
        logged(&d, &["libvirt unreachable"], seen, t0),
    );
    let (status, _) = wait_status(&lab, &config, "status on the record", |s| {
        s["libvirt"]["source"] == "state-file"
    });
    assert_eq!(status["libvirt"]["reachable"], false);
    assert!(
        status["libvirt"]["unreachable_since"].as_str().is_some(),
        "{status:#}"
    );
    assert_eq!(
        (state_of(&status, "vm1"), state_of(&status, "vm2")),
        ("live".into(), "live".into())
    );
    let human = daemon::mvbridge(&lab.host, &["status", "--config", &cfg]).unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("unreachable since") && human.contains("keeping 3 VMs"),
        "{human}"
    );
    quietly(&lab, &lv, &[VM1, VM2], || {});
    let seen = d.count_log(&["libvirt connected"]);
    let t0 = Instant::now();
    lv.restart().unwrap();
    t.note(
        "libvirtd back -> daemon reconnected",
        logged(&d, &["libvirt connected"], seen, t0),
    );
    wait_status(&lab, &config, "status from libvirt again", |s| {
        s["libvirt"]["source"] == "libvirt"
    });

    // undefine: the domain's VMs are gone, not just absent.
    lv.virsh(&["destroy", "vm2"]).unwrap();
    wait_status(&lab, &config, "vm2 absent", |s| {
        state_of(s, "vm2") == "absent"
    });
    let t0 = Instant::now();
    lv.virsh(&["undefine", "vm2"]).unwrap();
    let (_, took) = wait_status(&lab, &config, "vm2 gone", |s| row(s, "vm2").is_none());
    t.note("undefine vm2 -> no longer listed", t0.elapsed().max(took));
    quietly(&lab, &lv, &[VM1], || {});

    // The host-side check can fail: with mvbridge gone and the host's
    // IPv6 back on vm1's macvtap, the host side speaks (its listener
    // reports come at once, and again within two seconds).
    d.stop_with(libc::SIGTERM).unwrap();
    let tap = lv.macvtap_of("vm1", VM1.mac).unwrap().unwrap();
    let wire = WireTap::start(&lab.gw, WIRE).unwrap();
    lab.host
        .sysctl(&format!("net.ipv6.conf.{tap}.disable_ipv6"), "0")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let frames = wire.stop().unwrap();
    assert!(
        !host_speech(&frames, &[VM1.mac]).is_empty(),
        "the host side of {tap} said nothing with its IPv6 on"
    );
    t.print();
}

const GOOD: Vm = Vm {
    domain: "good",
    mac: "52:54:00:aa:00:11",
    v4: Ipv4Addr::new(203, 0, 113, 171),
    v6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x171)),
    source: None,
};

/// A stopped domain with one NIC (`source`: its lower device) and
/// `meta` for metadata.
fn stopped(name: &str, mac: &str, source: &str, meta: String) -> GuestSpec {
    let mut nic = NicSpec::new(mac, &["203.0.113.190/26"]);
    nic.source = source.into();
    GuestSpec {
        name: name.into(),
        nics: vec![nic],
        later: vec![],
        metadata: meta,
    }
}

#[test]
fn bad_declarations_leave_only_their_vm_out() {
    let lab = Lab::build(vec![]).unwrap();
    let mut lv = Libvirtd::start(&lab).unwrap();
    let good_meta = metadata(&[(GOOD.mac, &["203.0.113.171", "2001:db8:0:1::171"])]);
    lv.define(&GuestSpec {
        name: "good".into(),
        nics: vec![NicSpec::new(
            GOOD.mac,
            &["203.0.113.171/26", "2001:db8:0:1::171/64"],
        )],
        later: vec![],
        metadata: good_meta.clone(),
    })
    .unwrap();
    lv.virsh(&["start", "good"]).unwrap();
    let bad = [
        stopped(
            "garbled",
            "52:54:00:aa:00:12",
            "enp9s0",
            "<vm><interface><address>203.0.113.182</address></interface></vm>".into(),
        ),
        stopped(
            "hostaddr",
            "52:54:00:aa:00:13",
            "enp9s0",
            metadata(&[("52:54:00:aa:00:13", &["203.0.113.157"])]),
        ),
        stopped(
            "elsewhere",
            "52:54:00:aa:00:14",
            "eth9",
            metadata(&[("52:54:00:aa:00:14", &["203.0.113.184"])]),
        ),
        stopped(
            "clash",
            "52:54:00:aa:00:15",
            "enp9s0",
            metadata(&[("52:54:00:aa:00:15", &["203.0.113.185"])]),
        ),
        stopped(
            "dup",
            "52:54:00:aa:00:16",
            "enp9s0",
            metadata(&[("52:54:00:aa:00:16", &["203.0.113.171"])]),
        ),
    ];
    for spec in &bad {
        lv.define(spec).unwrap();
    }
    let warnings = [
        "libvirt domain \"garbled\": mvbridge metadata: interface 1 has no mac attribute; its VMs are left out",
        "libvirt domain \"hostaddr\" interface 52:54:00:aa:00:13: address 203.0.113.157 is the host's; VM left out",
        "libvirt domain \"elsewhere\" interface 52:54:00:aa:00:14: source dev \"eth9\" is not the uplink \"enp9s0\"; VM left out",
        "libvirt domain \"clash\" interface 52:54:00:aa:00:15: mac 52:54:00:aa:00:15 is also [[vm]] \"cfg\"'s; the [[vm]] section wins, VM left out",
        "libvirt domain \"dup\" interface 52:54:00:aa:00:16: address 203.0.113.171 is libvirt domain \"good\" interface 52:54:00:aa:00:11's; VM left out",
    ];
    lv.wait_guest_nic("good", GOOD.mac, BOOT).unwrap();
    let config = write_config(
        &lab,
        &lv,
        "\n[[vm]]\nname = \"cfg\"\nmac = \"52:54:00:aa:00:15\"\naddresses = [\"203.0.113.186\"]\n\n[[vm]]\nname = \"odd\"\ninterface = \"odd0\"\naddresses = [\"203.0.113.187\"]\n",
    );
    let cfg = config.display().to_string();
    let d = Daemon::start(&lab.host, &config).unwrap();
    let (status, _) = wait_status(&lab, &config, "good live", is_live("good"));
    for w in warnings {
        d.wait_for_log(&[w], SOON).unwrap();
        let problems = status["problems"].to_string();
        assert!(
            problems.contains(&w.replace('"', "\\\"")),
            "status lacks {w}: {problems}"
        );
    }
    for vm in ["garbled", "hostaddr", "elsewhere", "clash", "dup"] {
        assert!(row(&status, vm).is_none(), "{vm} listed: {status:#}");
    }
    assert_eq!(row(&status, "cfg").unwrap()["origin"]["source"], "config");
    assert_eq!(row(&status, "good").unwrap()["origin"]["source"], "libvirt");
    let check = daemon::mvbridge(&lab.host, &["check", "--config", &cfg]).unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    for w in warnings {
        assert!(
            text.contains(&format!("warn  {w}")),
            "check lacks {w}:\n{text}"
        );
    }
    quietly(&lab, &lv, &[GOOD], || {});

    // A [[vm]] of the file turns unfit (its link is a macvlan, not a
    // macvtap): what libvirt declares from now on must still apply.
    lab.host
        .ipw(&format!(
            "link add link {UPLINK} name odd0 address 52:54:00:aa:00:17 type macvlan mode bridge"
        ))
        .unwrap();
    d.wait_for_log(&["odd0", "not a macvtap"], SOON).unwrap();

    // Metadata edited into nonsense on the running VM: that VM goes, the
    // rest stays.
    lv.set_metadata(
        "good",
        "<vm><interface mac='52:54:00:aa:00:11'><adress>203.0.113.171</adress></interface></vm>",
    )
    .unwrap();
    d.wait_for_log(
        &["libvirt domain \"good\": mvbridge metadata: interface 52:54:00:aa:00:11: unknown element <adress>"],
        SOON,
    )
    .unwrap();
    let (status, _) = wait_status(&lab, &config, "good left out", |s| row(s, "good").is_none());
    assert!(row(&status, "cfg").is_some(), "{status:#}");
    assert!(
        !ping(&lab.host, GOOD.v4),
        "good left out but reached:\n{status:#}\n{}",
        d.log()
    );
    lv.set_metadata("good", &good_meta).unwrap();
    wait_status(&lab, &config, "good back", is_live("good"));
    quietly(&lab, &lv, &[GOOD], || {});
}

#[test]
fn libvirt_is_followed_whenever_it_comes_and_never_waits_for_mvbridge() {
    let lab = Lab::build(vec![]).unwrap();
    let mut lv = Libvirtd::prepare(&lab).unwrap();
    let config = write_config(&lab, &lv, "");
    let cfg = config.display().to_string();

    // No libvirtd, no record: status says so.
    let human = daemon::mvbridge(&lab.host, &["status", "--config", &cfg]).unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("unreachable and no record"), "{human}");
    // mvbridge runs, and records that libvirt does not answer.
    let d = Daemon::start(&lab.host, &config).unwrap();
    let (status, _) = wait_status(&lab, &config, "libvirt unreachable", |s| {
        s["libvirt"]["source"] == "state-file"
    });
    assert_eq!(status["libvirt"]["reachable"], false, "{status:#}");
    assert!(
        status["libvirt"]["unreachable_since"].is_string(),
        "{status:#}"
    );

    // libvirtd comes: its domains are picked up.
    let seen = d.count_log(&["libvirt connected"]);
    let t0 = Instant::now();
    lv.launch().unwrap();
    d.wait_for_another_log(&["libvirt connected"], seen, Duration::from_secs(60))
        .unwrap();
    println!(
        "timing: libvirtd started -> daemon connected: {} ms",
        t0.elapsed().as_millis()
    );
    lv.define(&vm1_spec()).unwrap();
    wait_status(&lab, &config, "vm1 declared", |s| {
        state_of(s, "vm1") == "absent"
    });

    // A daemon that hangs holds up no VM start.
    let pid = d.pid().unwrap() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t0 = Instant::now();
    let started = lv.virsh(&["start", "vm1"]);
    let took = t0.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    started.unwrap();
    println!(
        "timing: virsh start with mvbridge stopped: {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(20), "virsh start took {took:?}");
    wait_status(&lab, &config, "vm1 live", is_live("vm1"));
    lv.wait_guest_nic("vm1", VM1.mac, BOOT).unwrap();
    let vm1 = Vm { v6: None, ..VM1 };
    quietly(&lab, &lv, &[vm1], || {});
}
