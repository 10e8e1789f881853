//! The real TC programs on crafted frames (BPF_PROG_TEST_RUN): verdict,
//! output bytes and counters for every path, and hostile or broken input
//! of every kind. Needs root.

use std::net::IpAddr;

use mvbridge::datapath::object::Role;
use mvbridge_common::stats::{DropReason, Path, Proto};
use mvbridge_common::testing::{self as t, GW_LL, GW_MAC, INET_IP, INET6};
use mvbridge_tests::bpfrun::{Bench, BenchVm, PASS, REDIRECT, SHOT};
use mvbridge_tests::lab::{Lab, UPLINK, public_vms};
use mvbridge_tests::wire::mac_str;

const A: &str = "macvtap0";
const C: &str = "macvtap2";
const X: &str = "kvm-x";

/// A lab with VMs a (/26, /64) and c (/32, /128, learning) and the bench
/// on its host namespace; `f` runs on a thread inside that namespace.
fn with_bench(f: impl FnOnce(&mut Bench) + Send + 'static) {
    let specs: Vec<_> = public_vms().into_iter().filter(|s| s.key != "b").collect();
    let lab = Lab::build(specs).unwrap();
    // VM x's link, a macvlan the programs take for a bridged VM's (they see
    // no namespaces): what reaches the shim's ingress comes from it.
    lab.host
        .ipw(&format!(
            "link add link {UPLINK} name {X} address {} type macvlan mode bridge",
            mac_str(&t::VM_X_MAC)
        ))
        .unwrap();
    let bpffs = lab.bpffs();
    lab.host
        .in_ns(move || {
            let a: Vec<IpAddr> = vec![
                "203.0.113.161".parse().unwrap(),
                "2001:db8:0:1::161".parse().unwrap(),
            ];
            let c: Vec<IpAddr> = vec![
                "203.0.113.163".parse().unwrap(),
                "2001:db8:0:1::163".parse().unwrap(),
            ];
            let x: Vec<IpAddr> = vec![IpAddr::from(t::VM_X_IP)];
            let vms = [
                BenchVm {
                    interface: A,
                    slot: 0,
                    addresses: &a,
                    learns: false,
                    bridged: false,
                },
                BenchVm {
                    interface: C,
                    slot: 2,
                    addresses: &c,
                    learns: true,
                    bridged: false,
                },
                BenchVm {
                    interface: X,
                    slot: 3,
                    addresses: &x,
                    learns: false,
                    bridged: true,
                },
            ];
            let mut bench = Bench::new(&bpffs, UPLINK, &vms).unwrap();
            f(&mut bench);
        })
        .unwrap();
}

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Pass,
    /// Redirected; the destination MAC afterwards.
    To([u8; 6]),
    Drop(DropReason),
}

struct Row {
    what: &'static str,
    role: Role,
    on: &'static str,
    frame: Vec<u8>,
    want: Want,
    /// The counter that must move by one.
    path: Option<(Path, Proto)>,
}

fn rows(b: &Bench) -> Vec<Row> {
    let host = b.mac(UPLINK);
    // The uplink's EUI-64 link-local address, as the kernel made it.
    let host_ll = t::eui64_ll(host);
    let (amac, cmac) = (t::VM_A_MAC, t::VM_C_MAC);
    let r = |what, role, on, frame, want, path| Row {
        what,
        role,
        on,
        frame,
        want,
        path,
    };
    vec![
        r(
            "host -> VM a via the gateway",
            Role::Uplink,
            UPLINK,
            t::ipv4(GW_MAC, host, t::HOST_IP, t::VM_A_IP),
            Want::To(amac),
            Some((Path::HostToVm, Proto::Ipv4)),
        ),
        r(
            "host ARP for VM c",
            Role::Uplink,
            UPLINK,
            t::arp(t::BROADCAST, host, 1, t::HOST_IP, t::VM_C_IP),
            Want::To(t::BROADCAST),
            Some((Path::HostToVm, Proto::Arp)),
        ),
        r(
            "host -> VM c over IPv6",
            Role::Uplink,
            UPLINK,
            t::ping6(cmac, host, t::HOST6, t::VM_C6),
            Want::To(cmac),
            Some((Path::HostToVm, Proto::Ipv6)),
        ),
        r(
            "host NS for VM a",
            Role::Uplink,
            UPLINK,
            t::ns(host, t::HOST6, t::VM_A6),
            Want::To(t::solicited_mac(&t::VM_A6)),
            Some((Path::HostToVm, Proto::Nd)),
        ),
        r(
            "host NA to VM a's link-local",
            Role::Uplink,
            UPLINK,
            t::na(amac, host, host_ll, t::VM_A_LL, host_ll),
            Want::To(amac),
            Some((Path::HostToVm, Proto::Nd)),
        ),
        r(
            "host -> internet",
            Role::Uplink,
            UPLINK,
            t::ipv4(GW_MAC, host, t::HOST_IP, INET_IP),
            Want::Pass,
            None,
        ),
        r(
            "host -> internet over IPv6",
            Role::Uplink,
            UPLINK,
            t::ping6(GW_MAC, host, t::HOST6, INET6),
            Want::Pass,
            None,
        ),
        r(
            "host NS for the gateway",
            Role::Uplink,
            UPLINK,
            t::ns(host, host_ll, GW_LL),
            Want::Pass,
            None,
        ),
        r(
            "VM a -> host",
            Role::Vm,
            A,
            t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP),
            Want::To(host),
            Some((Path::VmToHost, Proto::Ipv4)),
        ),
        r(
            "VM c (/32) -> host via the gateway",
            Role::Vm,
            C,
            t::ipv4(GW_MAC, cmac, t::VM_C_IP, t::HOST_IP),
            Want::To(host),
            Some((Path::VmToHost, Proto::Ipv4)),
        ),
        r(
            "VM a ARP for the host",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, t::HOST_IP),
            Want::To(t::BROADCAST),
            Some((Path::VmToHost, Proto::Arp)),
        ),
        r(
            "VM a NS for the host's link-local",
            Role::Vm,
            A,
            t::ns(amac, t::VM_A_LL, host_ll),
            Want::To(t::solicited_mac(&host_ll)),
            Some((Path::VmToHost, Proto::Nd)),
        ),
        r(
            "VM c (/128) -> host via fe80::1",
            Role::Vm,
            C,
            t::ping6(GW_MAC, cmac, t::VM_C6, t::HOST6),
            Want::To(host),
            Some((Path::VmToHost, Proto::Ipv6)),
        ),
        r(
            "VM c -> VM a via the gateway",
            Role::Vm,
            C,
            t::ipv4(GW_MAC, cmac, t::VM_C_IP, t::VM_A_IP),
            Want::To(amac),
            Some((Path::VmToVm, Proto::Ipv4)),
        ),
        r(
            "VM a -> internet",
            Role::Vm,
            A,
            t::ipv4(GW_MAC, amac, t::VM_A_IP, INET_IP),
            Want::Pass,
            None,
        ),
        r(
            "VM a ARP for the gateway",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, t::GW_IP),
            Want::Pass,
            None,
        ),
        r(
            "VM a ARP for an address nobody local owns",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, [203, 0, 113, 190]),
            Want::Pass,
            None,
        ),
        r(
            "VM a NS for an address nobody local owns",
            Role::Vm,
            A,
            t::ns(amac, t::VM_A_LL, t::PRIVATE6),
            Want::Pass,
            None,
        ),
        r(
            "VM a broadcast (DHCP-like)",
            Role::Vm,
            A,
            t::ipv4(t::BROADCAST, amac, [0, 0, 0, 0], [255, 255, 255, 255]),
            Want::Pass,
            None,
        ),
        r(
            "VM a multicast",
            Role::Vm,
            A,
            t::ipv4([1, 0, 0x5e, 0, 0, 1], amac, t::VM_A_IP, [224, 0, 0, 1]),
            Want::Pass,
            None,
        ),
        r(
            "VM a routes via the host",
            Role::Vm,
            A,
            t::ipv4(host, amac, t::VM_A_IP, t::NAT_VM_IP),
            Want::Drop(DropReason::NotForHost),
            None,
        ),
        r(
            "VM a routes via the host (IPv6)",
            Role::Vm,
            A,
            t::ping6(host, amac, t::VM_A6, t::PRIVATE6),
            Want::Drop(DropReason::NotForHost),
            None,
        ),
        r(
            "VM a with VM c's MAC",
            Role::Vm,
            A,
            t::ipv4(GW_MAC, cmac, t::VM_A_IP, INET_IP),
            Want::Drop(DropReason::SpoofedMac),
            None,
        ),
        r(
            "VM a claiming the host's IPv4 (ARP)",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 2, t::HOST_IP, t::GW_IP),
            Want::Drop(DropReason::SpoofedAddress),
            None,
        ),
        r(
            "VM a claiming VM c's IPv4",
            Role::Vm,
            A,
            t::ipv4(GW_MAC, amac, t::VM_C_IP, INET_IP),
            Want::Drop(DropReason::SpoofedAddress),
            None,
        ),
        r(
            "VM a advertising the host's IPv6",
            Role::Vm,
            A,
            t::na(GW_MAC, amac, t::VM_A_LL, GW_LL, t::HOST6),
            Want::Drop(DropReason::SpoofedAddress),
            None,
        ),
        r(
            "VM a forging a source towards the host",
            Role::Vm,
            A,
            t::ipv4(host, amac, INET_IP, t::HOST_IP),
            Want::Drop(DropReason::UnknownSource),
            None,
        ),
        r(
            "VM a broken IPv4 to the host's MAC",
            Role::Vm,
            A,
            t::truncated_ip(t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP)),
            Want::Drop(DropReason::Malformed),
            None,
        ),
        r(
            "VM a broken IPv4 to the gateway",
            Role::Vm,
            A,
            t::truncated_ip(t::ipv4(GW_MAC, amac, t::VM_A_IP, INET_IP)),
            Want::Pass,
            None,
        ),
        r(
            "unknown ethertype (LLDP) to the host's MAC",
            Role::Vm,
            A,
            t::ether(host, amac, 0x88cc, &[0u8; 46]),
            Want::Pass,
            None,
        ),
    ]
}

#[test]
fn every_path_through_the_real_programs() {
    with_bench(|b| {
        for row in rows(b) {
            check_row(b, &row);
        }
    });
}

#[test]
fn hostile_frames_through_the_real_programs() {
    with_bench(|b| {
        for row in hostile_rows(b) {
            check_row(b, &row);
        }
    });
}

/// Runs a row's frame and checks verdict, output and counters.
fn check_row(b: &mut Bench, row: &Row) {
    let moved_before = row.path.map(|(p, q)| b.path_packets(p, q));
    let drops_before = match row.want {
        Want::Drop(r) => b.drops(r),
        _ => 0,
    };
    let (ret, out) = b.run(row.role, row.on, &row.frame).unwrap();
    match row.want {
        Want::Pass => {
            assert_eq!(ret, PASS, "{}", row.what);
            assert_eq!(out, row.frame, "{}: passed frame was changed", row.what);
        }
        Want::To(mac) => {
            assert_eq!(ret, REDIRECT, "{}", row.what);
            assert_eq!(out[..6], mac, "{}: destination MAC", row.what);
            assert_eq!(
                out[6..],
                row.frame[6..],
                "{}: only the destination MAC may change",
                row.what
            );
        }
        Want::Drop(reason) => {
            assert_eq!(ret, SHOT, "{}", row.what);
            assert_eq!(
                b.drops(reason),
                drops_before + 1,
                "{}: drop not counted",
                row.what
            );
        }
    }
    if let (Some((p, q)), Some(before)) = (row.path, moved_before) {
        assert_eq!(
            b.path_packets(p, q),
            before + 1,
            "{}: path counter",
            row.what
        );
    }
}

/// What a tenant could forge: link-local and other addresses it does not
/// own, link-layer addresses inside ARP/ND, router messages, ND behind
/// extension headers, VLAN tags; and a bridged VM addressing the shim.
fn hostile_rows(b: &Bench) -> Vec<Row> {
    let host = b.mac(UPLINK);
    let host_ll = t::eui64_ll(host);
    let shim = b.shim_mac();
    let (amac, xmac) = (t::VM_A_MAC, t::VM_X_MAC);
    let spoof = Want::Drop(DropReason::SpoofedAddress);
    let r = |what, role, on, frame, want| Row {
        what,
        role,
        on,
        frame,
        want,
        path: None,
    };
    let nd = |dst_mac, src, dst, icmp_type, target, options: &[u8], ext: &[(u8, usize)]| {
        t::nd_message(dst_mac, amac, src, dst, icmp_type, target, options, ext)
    };
    let ns_host_as = |src| {
        nd(
            host,
            src,
            host_ll,
            135,
            Some(host_ll),
            &t::llao(1, amac),
            &[],
        )
    };
    let mut tagged = t::ipv4(host, t::VM_C_MAC, t::VM_A_IP, t::HOST_IP);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    vec![
        r(
            "VM a soliciting the host in the gateway's link-local name",
            Role::Vm,
            A,
            ns_host_as(GW_LL),
            spoof,
        ),
        r(
            "VM a soliciting the host in the host's link-local name",
            Role::Vm,
            A,
            ns_host_as(host_ll),
            spoof,
        ),
        r(
            "VM a soliciting the host in VM c's link-local name",
            Role::Vm,
            A,
            ns_host_as(t::VM_C_LL),
            spoof,
        ),
        r(
            "VM a soliciting the host from a link-local address not its own yet",
            Role::Vm,
            A,
            ns_host_as(t::STRANGER_LL),
            Want::Drop(DropReason::UnknownSource),
        ),
        r(
            "VM a advertising the gateway's link-local address to the host",
            Role::Vm,
            A,
            nd(
                host,
                t::VM_A_LL,
                host_ll,
                136,
                Some(GW_LL),
                &t::llao(2, amac),
                &[],
            ),
            spoof,
        ),
        r(
            "VM a probing (DAD) the host's address",
            Role::Vm,
            A,
            t::dad(amac, t::HOST6),
            spoof,
        ),
        r(
            "VM a probing (DAD) the gateway's link-local address",
            Role::Vm,
            A,
            t::dad(amac, GW_LL),
            spoof,
        ),
        r(
            "VM a probing (ARP) the host's address",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 1, [0; 4], t::HOST_IP),
            spoof,
        ),
        r(
            "VM a asking the host in the gateway's name (ARP)",
            Role::Vm,
            A,
            t::arp(t::BROADCAST, amac, 1, t::GW_IP, t::HOST_IP),
            spoof,
        ),
        r(
            "VM a's ARP naming the gateway's MAC inside",
            Role::Vm,
            A,
            {
                let mut f = t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, t::HOST_IP);
                f[22..28].copy_from_slice(&GW_MAC);
                f
            },
            Want::Drop(DropReason::ForgedLinkAddress),
        ),
        r(
            "VM a's solicitation naming the gateway's MAC",
            Role::Vm,
            A,
            nd(
                host,
                t::VM_A_LL,
                host_ll,
                135,
                Some(host_ll),
                &t::llao(1, GW_MAC),
                &[],
            ),
            Want::Drop(DropReason::ForgedLinkAddress),
        ),
        r(
            "VM a router advertisement to all nodes",
            Role::Vm,
            A,
            nd(
                t::group_mac(&t::ALL_NODES),
                t::VM_A_LL,
                t::ALL_NODES,
                134,
                None,
                &t::llao(1, amac),
                &[],
            ),
            Want::Drop(DropReason::RouterMessage),
        ),
        r(
            "VM a router advertisement to the host in the gateway's name",
            Role::Vm,
            A,
            nd(host, GW_LL, host_ll, 134, None, &[], &[]),
            Want::Drop(DropReason::RouterMessage),
        ),
        r(
            "VM a redirect to the host",
            Role::Vm,
            A,
            nd(host, t::VM_A_LL, host_ll, 137, None, &[], &[]),
            Want::Drop(DropReason::RouterMessage),
        ),
        r(
            "VM a router solicitation to the host",
            Role::Vm,
            A,
            nd(host, t::VM_A_LL, host_ll, 133, None, &[], &[]),
            Want::Drop(DropReason::RouterMessage),
        ),
        r(
            "VM a router solicitation to all routers (the wire's)",
            Role::Vm,
            A,
            nd(
                t::group_mac(&t::ALL_ROUTERS),
                t::VM_A_LL,
                t::ALL_ROUTERS,
                133,
                None,
                &t::llao(1, amac),
                &[],
            ),
            Want::Pass,
        ),
        r(
            "VM a advertising the gateway's address behind destination options",
            Role::Vm,
            A,
            nd(host, t::VM_A_LL, host_ll, 136, Some(GW_LL), &[], &[(60, 8)]),
            spoof,
        ),
        r(
            "VM a soliciting in the gateway's name behind hop-by-hop and destination options",
            Role::Vm,
            A,
            nd(
                host,
                GW_LL,
                host_ll,
                135,
                Some(host_ll),
                &[],
                &[(0, 8), (60, 16)],
            ),
            spoof,
        ),
        r(
            "VM a ND behind more extension headers than anyone sends",
            Role::Vm,
            A,
            nd(
                host,
                t::VM_A_LL,
                host_ll,
                136,
                Some(GW_LL),
                &[],
                &[(60, 8); 5],
            ),
            Want::Drop(DropReason::Malformed),
        ),
        r(
            "VM a VLAN-tagged frame with VM c's MAC",
            Role::Vm,
            A,
            {
                let mut f = tagged.clone();
                f[6..12].copy_from_slice(&t::VM_C_MAC);
                f
            },
            Want::Drop(DropReason::SpoofedMac),
        ),
        r(
            "VM x (bridged) relayed to the host by the shim",
            Role::ShimIn,
            X,
            t::ipv4(shim, xmac, t::VM_X_IP, t::HOST_IP),
            Want::To(host),
        ),
        r(
            "VM x routing via the shim's MAC into a private network",
            Role::ShimIn,
            X,
            t::ipv4(shim, xmac, t::VM_X_IP, t::NAT_VM_IP),
            Want::Drop(DropReason::NotForHost),
        ),
        r(
            "VM x asking the shim for the gateway (ARP)",
            Role::ShimIn,
            X,
            t::arp(shim, xmac, 1, t::VM_X_IP, t::GW_IP),
            Want::Drop(DropReason::NotForHost),
        ),
        r(
            "VM x asking the host at the shim in the gateway's name",
            Role::ShimIn,
            X,
            t::arp(shim, xmac, 1, t::GW_IP, t::HOST_IP),
            spoof,
        ),
        r(
            "VM x forging a source towards the host at the shim",
            Role::ShimIn,
            X,
            t::ipv4(shim, xmac, t::INET_IP, t::HOST_IP),
            Want::Drop(DropReason::UnknownSource),
        ),
        r(
            "VM a (not bridged) at the shim",
            Role::ShimIn,
            X,
            t::ipv4(shim, amac, t::VM_A_IP, t::HOST_IP),
            Want::Drop(DropReason::SpoofedMac),
        ),
        r(
            "a VM's broadcast reaching the shim",
            Role::ShimIn,
            X,
            t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, t::GW_IP),
            Want::Drop(DropReason::ShimIngress),
        ),
        r(
            "VM x routing via the shim's MAC at its own hook",
            Role::Vm,
            X,
            t::ipv4(shim, xmac, t::VM_X_IP, t::NAT_VM_IP),
            Want::Drop(DropReason::NotForHost),
        ),
    ]
}

#[test]
fn truncated_frames_at_every_length_are_never_steered() {
    with_bench(|b| {
        for row in rows(b) {
            // A frame shorter than its headers claim is never steered. The
            // kernel refuses test runs of IPv4/IPv6 frames shorter than
            // their fixed header (34/54 bytes), so those lengths are left
            // to the host unit tests of the same code (decide.rs).
            let (first, whole) = match [row.frame[12], row.frame[13]] {
                [0x08, 0x06] => (14, 42),
                [0x08, 0x00] => (34, row.frame.len()),
                [0x86, 0xdd] => (54, row.frame.len()),
                _ => (14, row.frame.len()),
            };
            for len in first..whole {
                let cut = &row.frame[..len];
                let (ret, out) = b.run(row.role, row.on, cut).unwrap();
                assert_ne!(ret, REDIRECT, "{} cut to {len} bytes was steered", row.what);
                if ret == PASS {
                    assert_eq!(out, cut, "{} cut to {len} bytes was changed", row.what);
                }
            }
        }
    });
}

#[test]
fn odd_but_valid_frames() {
    with_bench(|b| {
        let host = b.mac(UPLINK);
        let amac = t::VM_A_MAC;
        // IPv4 with options (IHL 15): steered on its destination.
        let mut opts = t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP);
        let mut with_opts = opts[..14].to_vec();
        let mut ip = opts[14..34].to_vec();
        ip[0] = 0x4f;
        let total = (60 + opts.len() - 34) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        with_opts.extend_from_slice(&ip);
        with_opts.extend_from_slice(&[1u8; 40]); // NOP options
        with_opts.extend_from_slice(&opts[34..]);
        assert_eq!(
            b.run(Role::Vm, A, &with_opts).unwrap().0,
            REDIRECT,
            "IPv4 options"
        );
        // A non-first fragment still carries its destination.
        opts[20] = 0x00;
        opts[21] = 0x10; // fragment offset 16
        assert_eq!(
            b.run(Role::Vm, A, &opts).unwrap().0,
            REDIRECT,
            "IPv4 fragment"
        );
        // Bad IHL (4) and a total length under the header, to the host's MAC.
        let mut bad = t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP);
        bad[14] = 0x44;
        assert_eq!(b.run(Role::Vm, A, &bad).unwrap().0, SHOT, "IHL 4");
        let mut bad = t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP);
        bad[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(b.run(Role::Vm, A, &bad).unwrap().0, SHOT, "total length 10");
        // An in-band 802.1Q tag: another network, untouched.
        let plain = t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP);
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&plain[12..]);
        let (ret, out) = b.run(Role::Vm, A, &tagged).unwrap();
        assert_eq!((ret, out), (PASS, tagged), "VLAN-tagged");
        // IPv6 with a hop-by-hop header before ICMPv6: plain IPv6 to the
        // host, steered on its destination.
        let mut hbh = vec![58u8, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        let ext = t::ipv6(host, amac, t::VM_A6, t::HOST6, 0, 64, &hbh);
        assert_eq!(
            b.run(Role::Vm, A, &ext).unwrap().0,
            REDIRECT,
            "IPv6 extension header"
        );
        // A solicitation behind an extension header is neighbour
        // discovery all the same (the host's stack takes it): steered
        // to the host, with its group destination.
        let mut ns = t::ns(amac, t::VM_A_LL, t::HOST6);
        let body = ns.split_off(54);
        let mut ext_ns = vec![58u8, 0, 1, 4, 0, 0, 0, 0];
        ext_ns.extend_from_slice(&body);
        let ns_ext = t::ipv6(
            t::solicited_mac(&t::HOST6),
            amac,
            t::VM_A_LL,
            t::solicited(&t::HOST6),
            0,
            255,
            &ext_ns,
        );
        let (ret, out) = b.run(Role::Vm, A, &ns_ext).unwrap();
        assert_eq!(
            (ret, out),
            (REDIRECT, ns_ext),
            "ND behind an extension header"
        );
        // A large frame (test runs take at most about a page; real 9000-byte
        // jumbo frames cross the lab in the hostile-input tests) and the
        // minimum (60 bytes).
        let mut large = t::ipv4(host, amac, t::VM_A_IP, t::HOST_IP);
        let extra = 3000 - large.len();
        large.extend(std::iter::repeat_n(0u8, extra));
        let total = (3000 - 14) as u16;
        large[16..18].copy_from_slice(&total.to_be_bytes());
        assert_eq!(
            b.run(Role::Vm, A, &large).unwrap().0,
            REDIRECT,
            "large frame"
        );
        let min = t::arp(t::BROADCAST, amac, 1, t::VM_A_IP, t::HOST_IP);
        assert_eq!(min.len(), 60);
        assert_eq!(
            b.run(Role::Vm, A, &min).unwrap().0,
            REDIRECT,
            "minimum frame"
        );
    });
}

#[test]
fn a_learning_vm_reports_new_addresses_once_a_second() {
    with_bench(|b| {
        let cmac = t::VM_C_MAC;
        let new = [203, 0, 113, 170];
        let frame = t::ipv4(GW_MAC, cmac, new, INET_IP);
        let mut ring = b_ring(b);
        for _ in 0..50 {
            assert_eq!(b.run(Role::Vm, C, &frame).unwrap().0, PASS);
        }
        let mut events = 0;
        while let Some(item) = ring.next() {
            assert_eq!(item[8..12], new, "reported the wrong address");
            events += 1;
        }
        assert_eq!(events, 1, "50 packets from one new address: one report");
        // VM a does not learn: nothing reported.
        let frame = t::ipv4(GW_MAC, t::VM_A_MAC, [203, 0, 113, 171], INET_IP);
        assert_eq!(b.run(Role::Vm, A, &frame).unwrap().0, PASS);
        assert!(ring.next().is_none());
    });
}

fn b_ring(b: &mut Bench) -> aya::maps::RingBuf<aya::maps::MapData> {
    b.learn_ring().expect("learning ring")
}
