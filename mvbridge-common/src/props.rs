//! Property tests of the decision on arbitrary and mangled frames: it
//! never panics, never steers what it cannot parse, never steers a VM's
//! frame that does not carry the VM's MAC, only ever steers to an
//! endpoint the tables know, and only offers unknown addresses for
//! learning.

use proptest::prelude::*;
use std::vec::Vec;

use crate::decide::{Fate, Hook, decide};
use crate::parse;
use crate::testing::*;

fn hooks() -> impl Strategy<Value = Hook> {
    prop_oneof![
        Just(Hook::Uplink),
        Just(Hook::Vm { ifindex: VM_A_IF }),
        Just(Hook::Vm { ifindex: VM_C_IF }),
        Just(Hook::Vm { ifindex: 99 }),
    ]
}

/// Well-formed frames of every kind the tests know, to mangle.
fn seeds() -> Vec<Vec<u8>> {
    std::vec![
        ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP),
        ipv4(GW_MAC, VM_C_MAC, VM_C_IP, HOST_IP),
        ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_A_IP),
        arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, HOST_IP),
        arp(VM_C_MAC, HOST_MAC, 2, HOST_IP, VM_C_IP),
        ns(VM_A_MAC, VM_A_LL, HOST_LL),
        ns(HOST_MAC, HOST6, VM_A6),
        na(HOST_MAC, VM_C_MAC, VM_C6, HOST6, VM_C6),
        ping6(GW_MAC, VM_C_MAC, VM_C6, HOST6),
        dad(VM_A_MAC, STRANGER_LL),
        nd_message(
            HOST_MAC,
            VM_A_MAC,
            VM_A_LL,
            HOST_LL,
            136,
            Some(VM_A_LL),
            &llao(2, VM_A_MAC),
            &[(0, 8), (60, 16)],
        ),
        nd_message(HOST_MAC, VM_C_MAC, VM_C_LL, HOST_LL, 134, None, &[], &[]),
    ]
}

/// The endpoint a steered frame must be for, re-derived independently.
fn target_is_known(frame: &[u8], tables: &TestTables) -> bool {
    use crate::decide::Tables as _;
    let Some(eth) = parse::eth(frame) else {
        return false;
    };
    let by_mac = tables.vm_by_mac(&eth.dst).is_some();
    let by_addr = match eth.ethertype {
        parse::ETH_P_ARP => parse::arp(frame).is_some_and(|a| tables.local4(&a.tpa).is_some()),
        parse::ETH_P_IP => parse::ipv4(frame).is_some_and(|ip| tables.local4(&ip.dst).is_some()),
        parse::ETH_P_IPV6 => parse::ipv6(frame).is_some_and(|ip| {
            let nd_target = parse::nd(frame, &ip).ok().flatten().map(|n| n.target);
            tables.local6(&ip.dst).is_some()
                || nd_target.is_some_and(|t| tables.local6(&t).is_some())
        }),
        _ => false,
    };
    by_addr || by_mac
}

fn check(hook: Hook, frame: &[u8]) -> Result<(), TestCaseError> {
    let tables = lab_tables();
    let d = decide(hook, frame, false, &tables);
    if d.verdict.fate == Fate::Redirect {
        let r = d.verdict.redirect;
        prop_assert!(
            target_is_known(frame, &tables),
            "steered an unknown target: {r:?}"
        );
        let known_if = [UPLINK_IF, VM_A_IF, VM_C_IF];
        prop_assert!(known_if.contains(&r.ifindex), "redirect to {}", r.ifindex);
        if let Hook::Vm { ifindex } = hook {
            let me = match ifindex {
                VM_A_IF => VM_A_MAC,
                VM_C_IF => VM_C_MAC,
                _ => return Err(TestCaseError::fail("steered from an unknown link")),
            };
            prop_assert_eq!(
                &frame[6..12],
                &me[..],
                "steered a frame with a foreign source MAC"
            );
            prop_assert_ne!(r.ifindex, ifindex, "steered back to the sender");
        }
    }
    let addr = d.learn;
    if !addr.is_none() {
        let c = hook == Hook::Vm { ifindex: VM_C_IF };
        prop_assert!(
            c || addr.is_link_local(),
            "only VM c learns global addresses"
        );
        let unknown = match addr.family {
            4 => tables.local4.iter().all(|(k, _)| *k != addr.v4_key()),
            _ => tables.local6.iter().all(|(k, _)| *k != addr.bytes),
        };
        prop_assert!(unknown, "offered a known address for learning");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(hook in hooks(), frame in proptest::collection::vec(any::<u8>(), 0..160)) {
        check(hook, &frame)?;
    }

    #[test]
    fn mangled_real_frames(
        hook in hooks(),
        seed in 0usize..12,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
        cut in 0usize..130,
    ) {
        let mut frame = seeds()[seed].clone();
        for (at, byte) in flips {
            if at < frame.len() {
                frame[at] = byte;
            }
        }
        frame.truncate(cut.max(1));
        check(hook, &frame)?;
    }
}
