//! The steering decision on arbitrary frames from every hook: it must
//! never panic and never steer to an endpoint the tables do not hold;
//! the shim's ingress relays only into the uplink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mvbridge_common::decide::{Fate, Hook, decide, shim_ingress};
use mvbridge_common::testing::{UPLINK_IF, VM_A_IF, VM_C_IF, lab_tables};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let hook = match selector % 4 {
        0 => Hook::Uplink,
        1 => Hook::Vm { ifindex: VM_A_IF },
        2 => Hook::Vm { ifindex: VM_C_IF },
        _ => Hook::Vm { ifindex: 77 },
    };
    let tables = lab_tables();
    let d = decide(hook, frame, selector & 0x80 != 0, &tables);
    if d.verdict.fate == Fate::Redirect {
        let r = d.verdict.redirect;
        assert!([UPLINK_IF, VM_A_IF, VM_C_IF].contains(&r.ifindex));
        assert!(selector & 0x80 == 0, "steered a VLAN-tagged frame");
    }
    // The shim relays only into the uplink.
    let d = shim_ingress(frame, &tables);
    if d.verdict.fate == Fate::Redirect {
        assert_eq!(d.verdict.redirect.ifindex, UPLINK_IF);
    }
});
