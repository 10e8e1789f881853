//! Adapts a `TcContext` to the shared decision code.

use aya_ebpf::programs::TcContext;
use mvbridge_common::{
    abi,
    decide::Tables,
    frame::Frame,
    maps::{Endpoint, Ipv4Key, Ipv6Key, Mac, Settings, VMLINK_PRESENT, VmLink},
};

use crate::maps::{MVB_LINKS, MVB_LINKS_HIGH, MVB_LOCAL4, MVB_LOCAL6, MVB_MACS, MVB_SETTINGS};

/// Packet bytes: straight from the linear head when the bytes are there
/// (direct packet access, bounds-checked against `data_end` where the
/// verifier sees it), else through `bpf_skb_load_bytes`, which also reads
/// non-linear skbs. Headers are nearly always in the head; the helper is
/// the slow path.
pub struct Packet<'a>(pub &'a TcContext);

impl Frame for Packet<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + offset + N <= end {
            // SAFETY: the N bytes at `offset` lie before `data_end`, checked
            // just above on the packet pointers themselves.
            return Some(unsafe { ((start + offset) as *const [u8; N]).read_unaligned() });
        }
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn read_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }
}

/// The tables, straight from the maps.
pub struct Maps;

impl Tables for Maps {
    #[inline(always)]
    fn settings(&self) -> Option<Settings> {
        MVB_SETTINGS.get(0).copied()
    }

    #[inline(always)]
    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint> {
        // SAFETY (all of them): the value is copied out at once; a concurrent
        // update by the loader replaces the entry as a whole.
        unsafe { MVB_LOCAL4.get(addr).copied() }
    }

    #[inline(always)]
    fn local6(&self, addr: &Ipv6Key) -> Option<Endpoint> {
        unsafe { MVB_LOCAL6.get(addr).copied() }
    }

    #[inline(always)]
    fn vm_by_mac(&self, mac: &Mac) -> Option<Endpoint> {
        unsafe { MVB_MACS.get(mac).copied() }
    }

    #[inline(always)]
    fn vm_link(&self, ifindex: u32) -> Option<VmLink> {
        let link = if ifindex < abi::LINKS_ARRAY {
            MVB_LINKS.get(ifindex).copied()
        } else {
            unsafe { MVB_LINKS_HIGH.get(&ifindex).copied() }
        };
        link.filter(|l| l.flags & VMLINK_PRESENT != 0)
    }
}

/// Fields of the skb that are not packet bytes.
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; reading a
    // field of `__sk_buff` is a verified context access.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// True when the VLAN tag travels out of band (hardware-accelerated tag).
pub fn vlan_tagged(ctx: &TcContext) -> bool {
    // SAFETY: as in `ifindex`.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}
