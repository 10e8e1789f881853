//! Carrying out a verdict: rewrite, count, redirect or drop.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT},
    helpers::bpf_redirect,
    programs::TcContext,
};
use mvbridge_common::{
    decide::{Redirect, Verdict},
    stats::{DropReason, path_slot},
};

use crate::maps::{MVB_DROPS, MVB_PATHS};

/// `TC_ACT_UNSPEC`: for TCX this is "next", so programs attached after ours
/// still see the frame, exactly as if we were not there.
pub const PASS: i32 = -1;

pub fn apply(ctx: &TcContext, verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Pass => PASS,
        Verdict::Drop(reason) => drop(reason),
        Verdict::Redirect(r) => redirect(ctx, &r),
    }
}

pub fn drop(reason: DropReason) -> i32 {
    if let Some(n) = MVB_DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *n += 1 };
    }
    TC_ACT_SHOT as i32
}

fn redirect(ctx: &TcContext, r: &Redirect) -> i32 {
    if let Some(mac) = r.dst_mac
        && ctx.store(0, &mac, 0).is_err()
    {
        return drop(DropReason::RewriteFailed);
    }
    if let Some(c) = MVB_PATHS.get_ptr_mut(path_slot(r.path, r.proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(ctx.len());
        }
    }
    // Into the target's ingress: the host's stack or the guest receives the
    // frame as if it came off the wire (eth_type_trans runs again there).
    // SAFETY: plain helper call; an unknown ifindex makes the kernel drop
    // the frame when it performs the redirect.
    unsafe { bpf_redirect(r.ifindex, u64::from(BPF_F_INGRESS)) as i32 }
}
