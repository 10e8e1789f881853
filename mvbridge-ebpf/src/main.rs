//! mvbridge's TC programs. Each is a thin adapter: the decision is
//! `mvbridge_common::decide`, unit-tested on the host.
#![no_std]
#![no_main]

mod act;
mod maps;
mod skb;

use aya_ebpf::{macros::classifier, programs::TcContext};
use mvbridge_common::{
    decide::{Decision, Fate, Hook, decide, shim_egress, shim_ingress},
    stats::DropReason,
};

use crate::skb::{Maps, Packet};

/// Egress of the uplink: what the host's stack sends.
#[classifier]
pub fn mvb_uplink(ctx: TcContext) -> i32 {
    let decision = decide(Hook::Uplink, &Packet(&ctx), skb::vlan_tagged(&ctx), &Maps);
    act::apply(&ctx, decision, 0)
}

/// Egress of a VM's link: what the guest sends.
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

/// Egress of the shim: nothing the host's stack sends through it may reach
/// the wire, where its MAC would show up next to the uplink's; only what
/// the uplink hook hands to bridged VMs passes.
#[classifier]
pub fn mvb_shim(ctx: TcContext) -> i32 {
    match shim_egress(&Packet(&ctx), &Maps).fate {
        Fate::Pass => act::PASS,
        _ => act::drop(DropReason::ShimTransmit),
    }
}

/// Ingress of the shim: bridged VMs' frames for the host, checked again
/// and relayed into the uplink's ingress; nothing else.
#[classifier]
pub fn mvb_shim_in(ctx: TcContext) -> i32 {
    let decision: Decision = shim_ingress(&Packet(&ctx), &Maps);
    act::apply(&ctx, decision, 0)
}

/// Does nothing. Never attached by the daemon: `cargo xtask bench`
/// measures it, attached or run the same way, as the baseline that the
/// per-packet cost of the real programs is given against.
#[classifier]
pub fn mvb_empty(_ctx: TcContext) -> i32 {
    act::PASS
}

/// Accepts every frame (`TC_ACT_OK`), which ends the hook's chain. Never
/// attached by the daemon: tests hang it on a link as somebody else's
/// program, one that would keep frames from mvbridge's if it ran first.
#[classifier]
pub fn mvb_accept(_ctx: TcContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
