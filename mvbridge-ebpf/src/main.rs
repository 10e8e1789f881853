//! mvbridge's TC programs. Each is a thin adapter: the decision is
//! `mvbridge_common::decide`, unit-tested on the host.
#![no_std]
#![no_main]

mod act;
mod maps;
mod skb;

use aya_ebpf::{macros::classifier, programs::TcContext};
use mvbridge_common::{
    decide::{Hook, decide},
    stats::DropReason,
};

use crate::skb::{Maps, Packet};

/// Egress of the uplink: what the host's stack sends.
#[classifier]
pub fn mvb_uplink(ctx: TcContext) -> i32 {
    let decision = decide(Hook::Uplink, &Packet(&ctx), skb::vlan_tagged(&ctx), &Maps);
    act::apply(&ctx, decision, 0)
}

/// Egress of a VM's macvtap: what the guest sends.
#[classifier]
pub fn mvb_vm(ctx: TcContext) -> i32 {
    let ifindex = skb::ifindex(&ctx);
    let decision = decide(
        Hook::Vm { ifindex },
        &Packet(&ctx),
        skb::vlan_tagged(&ctx),
        &Maps,
    );
    act::apply(&ctx, decision, ifindex)
}

/// Egress of the shim: nothing it sends may reach the wire, where its MAC
/// would show up next to the uplink's.
#[classifier]
pub fn mvb_shim(_ctx: TcContext) -> i32 {
    act::drop(DropReason::ShimTransmit)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
