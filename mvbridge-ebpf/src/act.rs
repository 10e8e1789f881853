//! Carrying out a decision: rewrite, count, redirect or drop, and report
//! addresses to learn.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use mvbridge_common::{
    decide::{Action, Addr, Decision, Fate, NO_SLOT, Redirect},
    maps::{Counter, LearnEvent, VmCounters},
    ratelimit,
    stats::{DropReason, Proto, path_slot},
};

use crate::maps::{MVB_DROPS, MVB_LEARN, MVB_LEARNT, MVB_NDRATE, MVB_PATHS, MVB_VMSTATS};

/// `TC_ACT_UNSPEC`: for TCX this is "next", so programs attached after ours
/// still see the frame, exactly as if we were not there.
pub const PASS: i32 = -1;

const NS_PER_REPORT: u64 = 1_000_000_000;

/// `link`: the ifindex of the VM link the frame came from (0 for the
/// host and the shim), for learning reports.
#[inline(always)]
pub fn apply(ctx: &TcContext, decision: Decision, link: u32) -> i32 {
    if !decision.learn.is_none() && link != 0 {
        report(link, decision.learn);
    }
    let verdict = decision.verdict;
    match verdict.fate {
        Fate::Pass => PASS,
        Fate::Drop => {
            let reason = verdict.reason;
            // Off unless the daemon loads us with `ebpf_log = true`: the
            // level is a frozen global, so the verifier prunes this.
            aya_log_ebpf::debug!(ctx, "drop reason={} ifindex={}", reason as u32, link);
            with_vm(decision.sender, |c| c.dropped += 1);
            drop(reason)
        }
        Fate::Redirect if over_rate(&verdict.redirect) => {
            with_vm(decision.sender, |c| c.dropped += 1);
            drop(DropReason::RateLimited)
        }
        Fate::Redirect => redirect(ctx, &verdict.redirect),
    }
}

/// A VM's ARP/ND to local endpoints beyond its token bucket.
#[inline(always)]
fn over_rate(r: &Redirect) -> bool {
    if r.from_slot == NO_SLOT || !matches!(r.proto, Proto::Arp | Proto::Nd) {
        return false;
    }
    let Some(b) = MVB_NDRATE.get_ptr_mut(r.from_slot) else {
        return false;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot, only this CPU writes it while we run.
    !ratelimit::take(unsafe { &mut *b }, now)
}

#[inline(always)]
pub fn drop(reason: DropReason) -> i32 {
    if let Some(n) = MVB_DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *n += 1 };
    }
    TC_ACT_SHOT
}

#[inline(always)]
fn add(c: &mut Counter, bytes: u64) {
    c.packets += 1;
    c.bytes += bytes;
}

#[inline(always)]
fn with_vm(slot: u32, f: impl FnOnce(&mut VmCounters)) {
    if slot == NO_SLOT {
        return;
    }
    if let Some(c) = MVB_VMSTATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        f(unsafe { &mut *c });
    }
}

#[inline(always)]
fn redirect(ctx: &TcContext, r: &Redirect) -> i32 {
    if r.rewrite && ctx.store(0, &r.dst_mac, 0).is_err() {
        return drop(DropReason::RewriteFailed);
    }
    if r.count {
        count(ctx, r);
    }
    let flags = match r.action {
        // Into the target's ingress: the host's stack or the guest receives
        // the frame as if it came off the wire (eth_type_trans runs again).
        Action::Ingress => u64::from(BPF_F_INGRESS),
        // Out of the shim: the macvlan bridge delivers it by MAC.
        Action::Egress => 0,
        // Re-addressed, on its way through the bridge.
        Action::Continue => return PASS,
    };
    // SAFETY: plain helper call; an unknown ifindex makes the kernel drop
    // the frame when it performs the redirect.
    unsafe { bpf_redirect(r.ifindex, flags) as i32 }
}

#[inline(always)]
fn count(ctx: &TcContext, r: &Redirect) {
    let bytes = u64::from(ctx.len());
    if let Some(c) = MVB_PATHS.get_ptr_mut(path_slot(r.path, r.proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        add(unsafe { &mut *c }, bytes);
    }
    let to_host = r.to_slot == NO_SLOT;
    let from_host = r.from_slot == NO_SLOT;
    with_vm(r.from_slot, |c| {
        add(
            if to_host {
                &mut c.to_host
            } else {
                &mut c.to_vms
            },
            bytes,
        )
    });
    with_vm(r.to_slot, |c| {
        add(
            if from_host {
                &mut c.from_host
            } else {
                &mut c.from_vms
            },
            bytes,
        )
    });
}

/// Tells the daemon about an address a learning VM used, at most about
/// once a second per (link, address).
#[inline(always)]
fn report(ifindex: u32, addr: Addr) {
    let event = LearnEvent {
        ifindex,
        family: addr.family,
        addr: addr.bytes,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is read once.
    if let Some(last) = unsafe { MVB_LEARNT.get(&event) }
        && now.wrapping_sub(*last) < NS_PER_REPORT
    {
        return;
    }
    let _ = MVB_LEARNT.insert(&event, &now, 0);
    let _ = MVB_LEARN.output::<LearnEvent>(&event, 0);
}
