//! Adapts a `TcContext` to the shared decision code.

use aya_ebpf::programs::TcContext;
use mvbridge_common::{
    decide::Tables,
    frame::Frame,
    maps::{Endpoint, Ipv4Key, Ipv6Key, Mac, Settings, VmLink},
};

use crate::maps::{MVB_LINKS, MVB_LOCAL4, MVB_LOCAL6, MVB_MACS, MVB_SETTINGS};

/// Packet bytes through `bpf_skb_load_bytes`: it copies to the stack, works
/// on non-linear skbs and bounds-checks against the skb for us.
pub struct Packet<'a>(pub &'a TcContext);

impl Frame for Packet<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
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
        unsafe { MVB_LINKS.get(ifindex).copied() }
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
