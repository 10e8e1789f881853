//! The values (and keys) of the maps the loader fills and the programs
//! read; which map holds which is in [`crate::abi`].
//!
//! Values are `#[repr(C)]`, `Copy`, with explicit padding and no `bool`,
//! `Option` or enums, so both sides agree on every byte.

/// An Ethernet address.
pub type Mac = [u8; 6];

/// An IPv4 address in network byte order, as it sits in the packet.
pub type Ipv4Key = [u8; 4];

/// An IPv6 address in network byte order.
pub type Ipv6Key = [u8; 16];

/// `Endpoint::kind` of one of the host's own addresses (reached on the uplink).
pub const ENDPOINT_HOST: u8 = 1;
/// `Endpoint::kind` of a VM's address (reached on its macvtap).
pub const ENDPOINT_VM: u8 = 2;
/// `Endpoint::kind` of a neighbour on the wire the host relies on (its
/// default routers, the neighbours it has resolved on the uplink): not
/// local, but no VM may claim it.
pub const ENDPOINT_WIRE: u8 = 3;
/// `Endpoint::flags`: deliver through the shim into the macvlan bridge
/// (the VM's link is in another network namespace, where no ifindex of
/// ours can reach it).
pub const ENDPOINT_BRIDGED: u8 = 1;

/// Where one local address lives: the link that delivers to it and the MAC
/// frames for it must carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The uplink for host addresses, the VM's macvtap for VM addresses.
    pub ifindex: u32,
    pub mac: Mac,
    /// `ENDPOINT_HOST`, `ENDPOINT_VM` or `ENDPOINT_WIRE`.
    pub kind: u8,
    /// `ENDPOINT_BRIDGED`: the VM's link lives in another network
    /// namespace; frames reach it through the shim and the macvlan bridge.
    pub flags: u8,
    /// Index of the VM in the per-VM counters; unused for the host.
    pub vm: u32,
}

/// `VmLink::flags`: the VM's addresses may be learnt from its traffic.
pub const VMLINK_LEARN: u32 = 1;
/// `VmLink::flags`: the entry holds a VM (array slots are zero when not).
pub const VMLINK_PRESENT: u32 = 4;
/// `VmLink::flags`: the VM's link is in another network namespace; its
/// steered frames continue into the macvlan bridge instead of being
/// redirected (see `ENDPOINT_BRIDGED`).
pub const VMLINK_BRIDGED: u32 = 2;

/// A VM's link, at its ifindex in [`crate::abi::LINKS`] (or, for an
/// ifindex past that array, in [`crate::abi::LINKS_HIGH`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmLink {
    /// The VM's per-VM counter slot.
    pub slot: u32,
    /// `VMLINK_*` bits; an array slot without `VMLINK_PRESENT` holds no VM.
    pub flags: u32,
    /// The guest's MAC: every frame it sends must carry it.
    pub mac: Mac,
    pub _pad: [u8; 2],
    /// Addresses the VM owns that its frames carry most (its first IPv4
    /// and global IPv6 address, its derived link-local one): a source
    /// equal to one of them needs no table lookup. Zero: none.
    pub own4: Ipv4Key,
    pub own6: Ipv6Key,
    pub own_ll: Ipv6Key,
}

/// Per-VM traffic, in slot `VmLink::slot` of [`crate::abi::VMSTATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmCounters {
    pub to_host: Counter,
    pub from_host: Counter,
    pub to_vms: Counter,
    pub from_vms: Counter,
    pub dropped: u64,
    pub _pad: u64,
}

/// An address a learning VM used that no table knew, for the daemon to
/// vet; sent through [`crate::abi::LEARN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LearnEvent {
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u32,
    /// IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

/// Settings that apply to every program; slot 0 of [`crate::abi::SETTINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    pub uplink_ifindex: u32,
    pub uplink_mac: Mac,
    pub shim_mac: Mac,
}

/// `HookRecord::flags`: mvbridge created the link's clsact qdisc, so it
/// may delete it once no filter is left on it.
pub const HOOK_QDISC_OURS: u32 = 1;

/// A hook attached as a classic TC filter (kernels without TCX), by the
/// name its TCX pin would have: what `down` and the loop remove later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HookRecord {
    /// The link's ifindex in its namespace when the filter was attached.
    pub ifindex: u32,
    /// `HOOK_*` bits.
    pub flags: u32,
}

/// The key of a [`HookRecord`]: a hook's name, NUL-padded.
pub type HookName = [u8; 128];

/// Packets and bytes, summed over CPUs by the reader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are `repr(C)`, `Copy`, have no implicit padding
    // (checked by the size asserts below) and every bit pattern is valid.
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::VmLink {}
    unsafe impl aya::Pod for super::VmCounters {}
    unsafe impl aya::Pod for super::LearnEvent {}
    unsafe impl aya::Pod for super::HookRecord {}
    unsafe impl aya::Pod for crate::ratelimit::Bucket {}
}

const _: () = assert!(core::mem::size_of::<Endpoint>() == 16);
const _: () = assert!(core::mem::size_of::<Settings>() == 16);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<VmLink>() == 52);
const _: () = assert!(core::mem::size_of::<VmCounters>() == 80);
const _: () = assert!(core::mem::size_of::<LearnEvent>() == 24);
const _: () = assert!(core::mem::size_of::<HookRecord>() == 8);
