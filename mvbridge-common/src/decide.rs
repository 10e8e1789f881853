//! The steering decision: given where a frame was sent and what it holds,
//! pass it on, hand it to a local link, or drop it.
//!
//! Three hooks call this. The uplink's egress sees what the host's stack
//! sends (its own traffic and what it forwards or NATs for private VMs); a
//! VM's link egress sees what the guest sends; the shim's ingress sees
//! what bridged VMs (links in other namespaces) send to the host. A frame
//! for a local endpoint is redirected into that endpoint's link *ingress*:
//! into the uplink, so the host's stack receives it as if it had come off
//! the wire (its firewall and `rp_filter` see the uplink), or into the
//! macvtap, so the guest receives it. Nothing local is left to the wire.
//!
//! The host is trusted; a VM is not. Every address a VM's frame claims
//! for its sender (IPv4/IPv6 source, ARP sender, a neighbour
//! advertisement's target, a duplicate address probe's target) must be
//! the VM's own, link-local addresses included; the link-layer addresses
//! inside ARP and neighbour discovery must be the frame's own source MAC;
//! and a VM is never a router to the host. Claiming an address someone
//! else owns (the host, another VM, a neighbour on the wire) is dropped
//! wherever the frame was going; an address nobody owns is no ground to
//! reach a local endpoint.

use crate::frame::Frame;
use crate::maps::{
    ENDPOINT_BRIDGED, ENDPOINT_HOST, ENDPOINT_VM, Endpoint, Ipv4Key, Ipv6Key, Mac, Settings,
    VMLINK_BRIDGED, VMLINK_LEARN, VMLINK_PRESENT, VmLink,
};
use crate::parse::{
    self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Eth, LinkAddress, ND_REDIRECT, ND_ROUTER_ADVERT,
};
use crate::stats::{DropReason, Path, Proto};

/// The slot of "no VM" (the host) in redirects.
pub const NO_SLOT: u32 = u32::MAX;

/// The lookups the decision needs; backed by maps in the programs.
pub trait Tables {
    fn settings(&self) -> Option<Settings>;
    fn local4(&self, addr: &Ipv4Key) -> Option<Endpoint>;
    fn local6(&self, addr: &Ipv6Key) -> Option<Endpoint>;
    /// The VM whose link has this MAC.
    fn vm_by_mac(&self, mac: &Mac) -> Option<Endpoint>;
    /// The VM behind a link, by the link's ifindex.
    fn vm_link(&self, ifindex: u32) -> Option<VmLink>;
}

/// Which hook is deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Egress of the uplink: the host's stack is sending.
    Uplink,
    /// Egress of a VM's link (`ifindex`): the guest is sending.
    Vm { ifindex: u32 },
}

/// An IPv4 or IPv6 address as it sits in the packet, with every byte
/// defined (IPv4 in the first four, the rest zero; `family` 0: none). An
/// enum or an `Option` here would leave bytes undefined, and the compiler
/// may copy those; the verifier refuses to read them.
///
/// The same goes for padding: this type and the verdict types below are
/// `repr(C)` with no padding at all (fields wide enough to fill every
/// gap, checked by [`no_padding`] at compile time). Ubuntu 22.04's 5.15
/// refused a copy of a `Decision` that read its padding ("invalid read
/// from stack": a read of uninitialised stack), which Debian's 5.10, 6.1
/// and 6.18 let pass: only the kernels themselves tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Addr {
    pub bytes: [u8; 16],
    /// 4, 6, or 0 for no address.
    pub family: u32,
}

impl Addr {
    pub const NONE: Addr = Addr {
        family: 0,
        bytes: [0; 16],
    };

    pub const fn v4(a: Ipv4Key) -> Addr {
        let mut bytes = [0; 16];
        bytes[0] = a[0];
        bytes[1] = a[1];
        bytes[2] = a[2];
        bytes[3] = a[3];
        Addr { family: 4, bytes }
    }

    pub const fn v6(bytes: Ipv6Key) -> Addr {
        Addr { family: 6, bytes }
    }

    pub const fn is_none(&self) -> bool {
        self.family == 0
    }

    pub const fn v4_key(&self) -> Ipv4Key {
        [self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]
    }

    /// fe80::/10: only meaningful on the segment, so any VM may come to
    /// own one first (they are learnt whatever the VM's `learn` says).
    pub const fn is_link_local(&self) -> bool {
        self.family == 6 && crate::link_local::is_link_local(&self.bytes)
    }

    /// 0.0.0.0 and `::` are no address: they claim nothing.
    const fn v4_or_none(a: Ipv4Key) -> Addr {
        if a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 {
            Addr::NONE
        } else {
            Addr::v4(a)
        }
    }

    fn v6_or_none(a: Ipv6Key) -> Addr {
        if a == [0; 16] {
            Addr::NONE
        } else {
            Addr::v6(a)
        }
    }
}

/// How a steered frame moves on (as wide as a `u32`: see [`Addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// Into `ifindex`'s ingress: its stack (the host) or its guest
    /// (a macvtap) receives it.
    Ingress,
    /// Out of `ifindex` (the shim): the macvlan bridge delivers it to the
    /// sibling with the destination MAC, in whatever namespace it is.
    Egress,
    /// On its way, re-addressed: the sender is a bridged VM, whose link the
    /// bridge serves (to the shim for the host, to a sibling for a VM).
    Continue,
}

/// Where a steered frame goes. Plain data with every byte defined (see
/// [`Addr`]): no `Option`, no enum with a payload, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Redirect {
    /// Link that takes the frame (unused for `Action::Continue`).
    pub ifindex: u32,
    pub action: Action,
    pub path: Path,
    pub proto: Proto,
    /// Per-VM counter slots of the receiver and the sender (`NO_SLOT`: the
    /// host).
    pub to_slot: u32,
    pub from_slot: u32,
    pub dst_mac: Mac,
    /// False for the shim's relay of frames a VM hook already counted.
    pub count: bool,
    /// Rewrite the destination MAC to `dst_mac` first: the frame was
    /// addressed elsewhere (e.g. to the gateway by a guest with a /32 and
    /// an on-link default route).
    pub rewrite: bool,
}

impl Redirect {
    /// The unused redirect of a verdict that does not redirect.
    pub const NONE: Redirect = Redirect {
        ifindex: 0,
        action: Action::Ingress,
        count: false,
        rewrite: false,
        dst_mac: [0; 6],
        path: Path::HostToVm,
        proto: Proto::Arp,
        to_slot: NO_SLOT,
        from_slot: NO_SLOT,
    };
}

/// What happens to a frame (as wide as a `u32`: see [`Addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Fate {
    /// Not ours: continue as if no program were attached.
    Pass,
    /// Dropped, for `Verdict::reason`.
    Drop,
    /// Steered, as `Verdict::redirect` says.
    Redirect,
}

/// A frame's fate with what it needs; fields a fate does not use hold
/// fixed placeholders, so equal verdicts compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Verdict {
    pub fate: Fate,
    pub reason: DropReason,
    pub redirect: Redirect,
}

impl Verdict {
    pub const PASS: Verdict = Verdict {
        fate: Fate::Pass,
        reason: DropReason::NotForHost,
        redirect: Redirect::NONE,
    };

    pub const fn drop(reason: DropReason) -> Verdict {
        Verdict {
            fate: Fate::Drop,
            reason,
            redirect: Redirect::NONE,
        }
    }

    pub const fn redirect(redirect: Redirect) -> Verdict {
        Verdict {
            fate: Fate::Redirect,
            reason: DropReason::NotForHost,
            redirect,
        }
    }
}

/// The verdict, who sent the frame, and an address the sending VM used
/// that no table knows yet and that it may come to own (a link-local one,
/// or one within its `learn` prefixes; else `Addr::NONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Decision {
    pub verdict: Verdict,
    pub learn: Addr,
    /// The sending VM's counter slot (`NO_SLOT`: the host, or a link we
    /// have no VM for).
    pub sender: u32,
}

/// Every byte of the verdict types is a field's (see [`Addr`]): each
/// size is the sum of its fields' sizes.
const fn no_padding() {
    use core::mem::size_of;
    assert!(size_of::<Addr>() == 16 + 4);
    assert!(size_of::<Redirect>() == 6 * 4 + size_of::<Mac>() + 2);
    assert!(size_of::<Verdict>() == 4 + 4 + size_of::<Redirect>());
    assert!(size_of::<Decision>() == size_of::<Verdict>() + size_of::<Addr>() + 4);
}
const _: () = no_padding();

impl Decision {
    pub const PASS: Decision = Decision::just(Verdict::PASS);

    pub const fn just(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            learn: Addr::NONE,
            sender: NO_SLOT,
        }
    }
}

/// Decides the fate of one frame. `vlan_tagged` is the skb's out-of-band
/// VLAN tag: tagged frames belong to another network and are never
/// steered (a VM's still must carry its own MAC).
#[inline(always)]
pub fn decide<F, T>(hook: Hook, frame: &F, vlan_tagged: bool, tables: &T) -> Decision
where
    F: Frame + ?Sized,
    T: Tables,
{
    let Some(settings) = tables.settings() else {
        return Decision::PASS;
    };
    if settings.uplink_ifindex == 0 {
        return Decision::PASS;
    }
    let Some(eth) = parse::eth(frame) else {
        return Decision::PASS;
    };
    match hook {
        Hook::Uplink if vlan_tagged => Decision::PASS,
        Hook::Uplink => Decision::just(from_host(frame, &eth, tables)),
        Hook::Vm { ifindex } => match tables.vm_link(ifindex) {
            Some(me) => from_vm(&me, frame, &eth, vlan_tagged, &settings, tables),
            // A link we have no VM for (yet): leave it alone.
            None => Decision::PASS,
        },
    }
}

#[inline(always)]
fn lookup<T: Tables>(tables: &T, addr: Addr) -> Option<Endpoint> {
    match addr.family {
        6 => tables.local6(&addr.bytes),
        4 => tables.local4(&addr.v4_key()),
        _ => None,
    }
}

/// The endpoint of `addr` if it is local (the host or a VM); a neighbour
/// on the wire is not.
#[inline(always)]
fn local<T: Tables>(tables: &T, addr: Addr) -> Option<Endpoint> {
    lookup(tables, addr).filter(|ep| ep.kind == ENDPOINT_HOST || ep.kind == ENDPOINT_VM)
}

/// The host's stack sent this: steer it if it is for a VM.
#[inline(always)]
fn from_host<F: Frame + ?Sized, T: Tables>(frame: &F, eth: &Eth, tables: &T) -> Verdict {
    let msg = inspect(frame, eth);
    if msg.kind != Kind::Steerable {
        return Verdict::PASS;
    }
    if let Some(ep) = local(tables, msg.target)
        && ep.kind == ENDPOINT_VM
    {
        return steer(Path::HostToVm, eth, ep, msg.proto, NO_SLOT, false, [0; 6]);
    }
    // The host addressed a VM's MAC directly for an address we do not
    // track: a link-local one the VM has not used yet, in neighbour
    // discovery or not. The VM is local all the same. (The host cannot
    // have resolved any other untracked address of a VM: its requests
    // never reach VMs but through us.) Not looked up for the rest, the
    // host's traffic to the internet.
    let untracked = msg.target.is_link_local() || matches!(msg.proto, Proto::Arp | Proto::Nd);
    if untracked
        && !parse::is_group(&eth.dst)
        && let Some(ep) = tables.vm_by_mac(&eth.dst)
    {
        return steer(Path::HostToVm, eth, ep, msg.proto, NO_SLOT, false, [0; 6]);
    }
    Verdict::PASS
}

/// Who owns an address a VM's frame claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The frame claims nothing here.
    Nobody,
    Me,
    /// The host, another VM, or a neighbour on the wire.
    Other,
    /// No table knows it.
    Unknown,
}

#[inline(always)]
fn owner<T: Tables>(tables: &T, me: &VmLink, addr: Addr) -> Owner {
    if addr.is_none() {
        return Owner::Nobody;
    }
    // The VM's usual addresses, known from its link entry: no lookup.
    let usual = match addr.family {
        4 => addr.v4_key() == me.own4,
        _ => addr.bytes == me.own6 || addr.bytes == me.own_ll,
    };
    if usual {
        return Owner::Me;
    }
    match lookup(tables, addr) {
        Some(ep) if ep.kind == ENDPOINT_VM && ep.vm == me.slot => Owner::Me,
        Some(_) => Owner::Other,
        None => Owner::Unknown,
    }
}

/// An unknown address the VM may come to own: link-local ones always
/// (first come), others within its `learn` prefixes (the daemon vets it).
#[inline(always)]
fn learnable(me: &VmLink, addr: Addr, owner: Owner) -> bool {
    owner == Owner::Unknown && (addr.is_link_local() || me.flags & VMLINK_LEARN != 0)
}

/// A guest sent this on its link (`me`).
#[inline(always)]
fn from_vm<F: Frame + ?Sized, T: Tables>(
    me: &VmLink,
    frame: &F,
    eth: &Eth,
    vlan_tagged: bool,
    settings: &Settings,
    tables: &T,
) -> Decision {
    let refuse = |reason| Decision {
        verdict: Verdict::drop(reason),
        learn: Addr::NONE,
        sender: me.slot,
    };
    if eth.src != me.mac {
        return refuse(DropReason::SpoofedMac);
    }
    let pass = Decision {
        verdict: Verdict::PASS,
        learn: Addr::NONE,
        sender: me.slot,
    };
    if vlan_tagged {
        return pass;
    }
    // The shim's MAC is the host's too: bridged VMs reach the host there.
    let to_host_mac = eth.dst == settings.uplink_mac || eth.dst == settings.shim_mac;
    let msg = inspect(frame, eth);
    match msg.kind {
        Kind::Foreign => return pass,
        Kind::Broken if to_host_mac => return refuse(DropReason::Malformed),
        Kind::Broken => return pass,
        Kind::Steerable => {}
    }
    // A neighbour cache entry takes its MAC from these, not from the
    // frame's header: they must agree, wherever the frame goes.
    match msg.link_address {
        LinkAddress::Forged => return refuse(DropReason::ForgedLinkAddress),
        LinkAddress::Unreadable => return refuse(DropReason::Malformed),
        LinkAddress::Consistent => {}
    }
    // A VM is a host on this segment, never a router: its advertisements
    // and redirects would move the routes of whoever takes them.
    if msg.router == ND_ROUTER_ADVERT || msg.router == ND_REDIRECT {
        return refuse(DropReason::RouterMessage);
    }
    let source = owner(tables, me, msg.source);
    let claim = owner(tables, me, msg.claim);
    // Claiming the host's, a neighbour's or another VM's address: an
    // attempt to take over its traffic, whoever it is sent to.
    if source == Owner::Other || claim == Owner::Other {
        return refuse(DropReason::SpoofedAddress);
    }
    let learn = if learnable(me, msg.source, source) {
        msg.source
    } else if learnable(me, msg.claim, claim) {
        msg.claim
    } else {
        Addr::NONE
    };
    // Only a frame whose every claim is the VM's may reach a local
    // endpoint: the host's firewall and neighbour code trust what arrives.
    let own = source == Owner::Me && claim != Owner::Unknown;
    let bridged = me.flags & VMLINK_BRIDGED != 0;
    let verdict = match local(tables, msg.target) {
        // To itself (a gratuitous ARP, a duplicate address probe): the
        // wire's and the bridge's business.
        Some(ep) if ep.kind == ENDPOINT_VM && ep.vm == me.slot => Verdict::PASS,
        Some(_) if msg.router != 0 => Verdict::drop(DropReason::RouterMessage),
        Some(_) if !own => Verdict::drop(DropReason::UnknownSource),
        Some(ep) => {
            let path = if ep.kind == ENDPOINT_HOST {
                Path::VmToHost
            } else {
                Path::VmToVm
            };
            // A bridged VM's frames stay in the bridge, re-addressed: to
            // the shim (which relays them to the host) or to the VM. So do
            // frames to a bridged VM: the bridge reaches it, we cannot.
            let to_bridged = ep.flags & ENDPOINT_BRIDGED != 0;
            let (continues, via) = if bridged && ep.kind == ENDPOINT_HOST {
                (true, settings.shim_mac)
            } else if bridged || to_bridged {
                (true, ep.mac)
            } else {
                (false, [0; 6])
            };
            steer(path, eth, ep, msg.proto, me.slot, continues, via)
        }
        // For the host's MAC but no address of the host's: a request to
        // route it (into 192.168.122.0/24, a private IPv6 prefix, a VLAN
        // of the host's, ...). The host is not the VMs' router, and a real
        // wire would not deliver it either.
        None if to_host_mac && msg.router != 0 => Verdict::drop(DropReason::RouterMessage),
        None if to_host_mac => Verdict::drop(DropReason::NotForHost),
        None => Verdict::PASS,
    };
    Decision {
        verdict,
        learn,
        sender: me.slot,
    }
}

/// How far a frame could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// Any protocol we do not steer: never ours.
    Foreign,
    /// The ethertype promises ARP/IPv4/IPv6 but the headers are broken
    /// (or an IPv6 extension header chain we cannot follow).
    Broken,
    /// ARP, IPv4 or IPv6 with the fields below.
    Steerable,
}

/// What a frame carries, as far as steering and ownership care. A plain
/// struct (see [`Addr`]) filled for every kind.
#[derive(Clone, Copy, Debug)]
struct Msg {
    kind: Kind,
    proto: Proto,
    /// The address whose owner must receive it: ARP's target, IPv4's and
    /// IPv6's destination, a neighbour solicitation's target.
    target: Addr,
    /// The sender's address: IPv4/IPv6 source, ARP sender (`NONE` when
    /// unspecified).
    source: Addr,
    /// A further address the frame claims for its sender: an
    /// advertisement's target, the target of a duplicate address probe
    /// (a solicitation from `::`) or of an ARP probe (from 0.0.0.0).
    claim: Addr,
    /// ARP's sender MAC or neighbour discovery's link-layer options
    /// against the frame's source MAC.
    link_address: LinkAddress,
    /// The ND type of a router solicitation, advertisement or redirect; 0
    /// for anything else.
    router: u8,
}

impl Msg {
    const fn unsteerable(kind: Kind) -> Msg {
        Msg {
            kind,
            proto: Proto::Arp,
            target: Addr::NONE,
            source: Addr::NONE,
            claim: Addr::NONE,
            link_address: LinkAddress::Consistent,
            router: 0,
        }
    }

    const fn steerable(proto: Proto, target: Addr, source: Addr) -> Msg {
        Msg {
            kind: Kind::Steerable,
            proto,
            target,
            source,
            claim: Addr::NONE,
            link_address: LinkAddress::Consistent,
            router: 0,
        }
    }
}

#[inline(always)]
fn inspect<F: Frame + ?Sized>(frame: &F, eth: &Eth) -> Msg {
    match eth.ethertype {
        ETH_P_ARP => match parse::arp(frame) {
            Some(arp) => {
                let source = Addr::v4_or_none(arp.spa);
                let mut msg = Msg::steerable(Proto::Arp, Addr::v4(arp.tpa), source);
                if source.is_none() {
                    // An ARP probe (RFC 5227) asks to use its target.
                    msg.claim = Addr::v4(arp.tpa);
                }
                if arp.sha != eth.src {
                    msg.link_address = LinkAddress::Forged;
                }
                msg
            }
            None => Msg::unsteerable(Kind::Broken),
        },
        ETH_P_IP => match parse::ipv4(frame) {
            Some(ip) => Msg::steerable(Proto::Ipv4, Addr::v4(ip.dst), Addr::v4_or_none(ip.src)),
            None => Msg::unsteerable(Kind::Broken),
        },
        ETH_P_IPV6 => match parse::ipv6(frame) {
            Some(ip) => inspect6(frame, &ip),
            None => Msg::unsteerable(Kind::Broken),
        },
        _ => Msg::unsteerable(Kind::Foreign),
    }
}

#[inline(always)]
fn inspect6<F: Frame + ?Sized>(frame: &F, ip: &parse::Ipv6) -> Msg {
    let source = Addr::v6_or_none(ip.src);
    let nd = match parse::nd(frame, ip) {
        Ok(Some(nd)) => nd,
        Ok(None) => return Msg::steerable(Proto::Ipv6, Addr::v6(ip.dst), source),
        Err(parse::Unreadable) => return Msg::unsteerable(Kind::Broken),
    };
    let mut msg = Msg::steerable(Proto::Nd, Addr::v6(ip.dst), source);
    msg.link_address = nd.link_address;
    if nd.is_solicitation() {
        // Sent to a group; who must answer is named by the target. From
        // `::` it is a duplicate address probe: it asks to use the target.
        msg.target = Addr::v6(nd.target);
        if source.is_none() {
            msg.claim = Addr::v6(nd.target);
        }
    } else if nd.is_advertisement() {
        msg.claim = Addr::v6(nd.target);
    } else {
        msg.router = nd.icmp_type;
    }
    msg
}

/// A frame for a local endpoint on another link: send it there.
/// `continues`: the sender is a bridged VM, or the receiver is; the frame
/// continues into the bridge, addressed to `via`.
#[inline(always)]
fn steer(
    path: Path,
    eth: &Eth,
    ep: Endpoint,
    proto: Proto,
    from_slot: u32,
    continues: bool,
    via: Mac,
) -> Verdict {
    let to_slot = if ep.kind == ENDPOINT_VM {
        ep.vm
    } else {
        NO_SLOT
    };
    // In the bridge every frame must be unicast to its receiver, or the
    // bridge floods it to every sibling and the wire. Otherwise requests
    // to a group (ARP broadcast, a solicitation to the solicited-node
    // group) keep it, so the receiver sees what it expects; every unicast
    // frame is re-addressed to the endpoint, which also turns a /32 guest's
    // "send to the gateway" into a local delivery.
    let bridged = ep.flags & ENDPOINT_BRIDGED != 0;
    let to_group = parse::is_group(&eth.dst) && matches!(proto, Proto::Arp | Proto::Nd);
    let target = if continues { via } else { ep.mac };
    let keep = (to_group && !bridged && !continues) || eth.dst == target;
    let action = if continues {
        Action::Continue
    } else if bridged {
        Action::Egress
    } else {
        Action::Ingress
    };
    Verdict::redirect(Redirect {
        ifindex: if continues { 0 } else { ep.ifindex },
        action,
        count: true,
        rewrite: !keep,
        dst_mac: if keep { [0; 6] } else { target },
        path,
        proto,
        to_slot,
        from_slot,
    })
}

/// The shim's egress: nothing the host's stack sends through the shim may
/// leave (its MAC would reach the wire); only frames the uplink hook hands
/// to bridged VMs pass, and only to them.
#[inline(always)]
pub fn shim_egress<F: Frame + ?Sized, T: Tables>(frame: &F, tables: &T) -> Verdict {
    let (Some(eth), Some(settings)) = (parse::eth(frame), tables.settings()) else {
        return Verdict::drop(DropReason::ShimTransmit);
    };
    let to_bridged = tables
        .vm_by_mac(&eth.dst)
        .is_some_and(|ep| ep.flags & ENDPOINT_BRIDGED != 0);
    if to_bridged && eth.src == settings.uplink_mac {
        Verdict::PASS
    } else {
        Verdict::drop(DropReason::ShimTransmit)
    }
}

/// The shim's ingress: bridged VMs address their frames for the host to
/// the shim (their hook re-addressed them). Such a frame gets every check
/// a VM's hook makes, again: the hook runs in a namespace the VM may
/// control, and a VM can address the shim by itself. What passes is
/// relayed into the uplink's ingress, as if it came off the wire; the
/// host's stack takes nothing else from the shim.
#[inline(always)]
pub fn shim_ingress<F: Frame + ?Sized, T: Tables>(frame: &F, tables: &T) -> Decision {
    let refuse = |reason| Decision::just(Verdict::drop(reason));
    let (Some(eth), Some(settings)) = (parse::eth(frame), tables.settings()) else {
        return refuse(DropReason::ShimIngress);
    };
    if eth.dst != settings.shim_mac || settings.uplink_ifindex == 0 {
        return refuse(DropReason::ShimIngress);
    }
    let Some(ep) = tables
        .vm_by_mac(&eth.src)
        .filter(|ep| ep.flags & ENDPOINT_BRIDGED != 0)
    else {
        return refuse(DropReason::SpoofedMac);
    };
    // Learning is left to the VM's own hook, which reports its link.
    let me = VmLink {
        slot: ep.vm,
        flags: VMLINK_BRIDGED | VMLINK_PRESENT,
        mac: ep.mac,
        ..VmLink::default()
    };
    let d = from_vm(&me, frame, &eth, false, &settings, tables);
    let r = d.verdict.redirect;
    let verdict = match d.verdict.fate {
        Fate::Redirect if r.path == Path::VmToHost => Verdict::redirect(Redirect {
            ifindex: settings.uplink_ifindex,
            action: Action::Ingress,
            count: false,
            rewrite: true,
            dst_mac: settings.uplink_mac,
            path: Path::VmToHost,
            proto: r.proto,
            to_slot: NO_SLOT,
            from_slot: me.slot,
        }),
        Fate::Drop => d.verdict,
        _ => Verdict::drop(DropReason::NotForHost),
    };
    Decision {
        verdict,
        learn: Addr::NONE,
        sender: me.slot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::vec::Vec;

    struct Row {
        what: &'static str,
        hook: Hook,
        frame: Vec<u8>,
        vlan: bool,
        want: Verdict,
    }

    fn slot_of(ifindex: u32) -> u32 {
        match ifindex {
            VM_A_IF => 0,
            VM_C_IF => 2,
            _ => NO_SLOT,
        }
    }

    /// A redirect into `ifindex`'s ingress; the counter slots follow from
    /// the lab's tables: VM a is slot 0, VM c slot 2, the host has none.
    fn to(ifindex: u32, dst_mac: Option<Mac>, path: Path, proto: Proto) -> Verdict {
        Verdict::redirect(Redirect {
            ifindex,
            action: Action::Ingress,
            count: true,
            rewrite: dst_mac.is_some(),
            dst_mac: dst_mac.unwrap_or([0; 6]),
            path,
            proto,
            to_slot: slot_of(ifindex),
            from_slot: NO_SLOT, // the sender's, by `with_sender`
        })
    }

    fn refused(reason: DropReason) -> Verdict {
        Verdict::drop(reason)
    }

    /// Puts the sending VM's slot into an expected redirect.
    fn with_sender(mut want: Verdict, hook: Hook) -> Verdict {
        if let (Fate::Redirect, Hook::Vm { ifindex }) = (want.fate, hook) {
            want.redirect.from_slot = slot_of(ifindex);
        }
        want
    }

    fn with_ll(kind: u8, mac: Mac) -> [u8; 8] {
        llao(kind, mac)
    }

    fn rows() -> Vec<Row> {
        let vm_a = Hook::Vm { ifindex: VM_A_IF };
        let vm_c = Hook::Vm { ifindex: VM_C_IF };
        let row = |what, hook, frame, want| Row {
            what,
            hook,
            frame,
            vlan: false,
            want,
        };
        let nd = |src_mac, src, dst, icmp_type, target, options: &[u8], ext: &[(u8, usize)]| {
            let dst_mac = if dst == HOST_LL || dst == HOST6 {
                HOST_MAC
            } else {
                group_mac(&dst)
            };
            nd_message(dst_mac, src_mac, src, dst, icmp_type, target, options, ext)
        };
        let dstopts = [(60u8, 8usize)];
        std::vec![
            row(
                "host pings a VM via its gateway route",
                Hook::Uplink,
                ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                to(VM_A_IF, Some(VM_A_MAC), Path::HostToVm, Proto::Ipv4),
            ),
            row(
                "host sends to a VM it resolved on-link",
                Hook::Uplink,
                ipv4(VM_A_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                to(VM_A_IF, None, Path::HostToVm, Proto::Ipv4),
            ),
            row(
                "host asks who has a VM's address",
                Hook::Uplink,
                arp(BROADCAST, HOST_MAC, 1, HOST_IP, VM_A_IP),
                to(VM_A_IF, None, Path::HostToVm, Proto::Arp),
            ),
            row(
                "host answers a VM's ARP",
                Hook::Uplink,
                arp(VM_C_MAC, HOST_MAC, 2, HOST_IP, VM_C_IP),
                to(VM_C_IF, None, Path::HostToVm, Proto::Arp),
            ),
            row(
                "host talks to the internet",
                Hook::Uplink,
                ipv4(GW_MAC, HOST_MAC, HOST_IP, INET_IP),
                Verdict::PASS,
            ),
            row(
                "host answers the gateway's ARP",
                Hook::Uplink,
                arp(GW_MAC, HOST_MAC, 2, HOST_IP, GW_IP),
                Verdict::PASS,
            ),
            Row {
                what: "VLAN-tagged traffic is another network",
                hook: Hook::Uplink,
                frame: ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_A_IP),
                vlan: true,
                want: Verdict::PASS,
            },
            row(
                "/26 guest pings the host",
                vm_a,
                ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Ipv4),
            ),
            row(
                "/32 guest sends to the host via the gateway",
                vm_c,
                ipv4(GW_MAC, VM_C_MAC, VM_C_IP, HOST_IP),
                to(UPLINK_IF, Some(HOST_MAC), Path::VmToHost, Proto::Ipv4),
            ),
            row(
                "guest asks who has the host's address",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, HOST_IP),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Arp),
            ),
            row(
                "/32 guest reaches another VM via the gateway",
                vm_c,
                ipv4(GW_MAC, VM_C_MAC, VM_C_IP, VM_A_IP),
                to(VM_A_IF, Some(VM_A_MAC), Path::VmToVm, Proto::Ipv4),
            ),
            row(
                "guest talks to the internet",
                vm_a,
                ipv4(GW_MAC, VM_A_MAC, VM_A_IP, INET_IP),
                Verdict::PASS,
            ),
            row(
                "guest resolves the gateway",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, GW_IP),
                Verdict::PASS,
            ),
            row(
                "guest sends to itself",
                vm_a,
                ipv4(VM_A_MAC, VM_A_MAC, VM_A_IP, VM_A_IP),
                Verdict::PASS,
            ),
            row(
                "guest announces its own address (gratuitous ARP)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, VM_A_IP),
                Verdict::PASS,
            ),
            row(
                "guest probes its own address (ARP probe)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, [0; 4], VM_A_IP),
                Verdict::PASS,
            ),
            row(
                "guest routes via the host into a private network",
                vm_a,
                ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, NAT_VM_IP),
                refused(DropReason::NotForHost),
            ),
            row(
                "guest sends a broken IPv4 header to the host's MAC",
                vm_a,
                truncated_ip(ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP)),
                refused(DropReason::Malformed),
            ),
            row(
                "a broken IPv4 header to anyone else is not ours",
                vm_a,
                truncated_ip(ipv4(GW_MAC, VM_A_MAC, VM_A_IP, HOST_IP)),
                Verdict::PASS,
            ),
            row(
                "host solicits a VM's address on-link",
                Hook::Uplink,
                ns(HOST_MAC, HOST6, VM_A6),
                to(VM_A_IF, None, Path::HostToVm, Proto::Nd),
            ),
            row(
                "host answers a VM's solicitation at its link-local address",
                Hook::Uplink,
                na(VM_A_MAC, HOST_MAC, HOST_LL, VM_A_LL, HOST_LL),
                to(VM_A_IF, None, Path::HostToVm, Proto::Nd),
            ),
            row(
                "host answers a VM at a link-local address no table knows",
                Hook::Uplink,
                na(VM_C_MAC, HOST_MAC, HOST_LL, STRANGER_LL, HOST_LL),
                to(VM_C_IF, None, Path::HostToVm, Proto::Nd),
            ),
            row(
                "host pings a /128 VM on-link",
                Hook::Uplink,
                ping6(VM_C_MAC, HOST_MAC, HOST6, VM_C6),
                to(VM_C_IF, None, Path::HostToVm, Proto::Ipv6),
            ),
            row(
                "host pings a VM via the gateway",
                Hook::Uplink,
                ping6(GW_MAC, HOST_MAC, HOST6, VM_A6),
                to(VM_A_IF, Some(VM_A_MAC), Path::HostToVm, Proto::Ipv6),
            ),
            row(
                "host solicits the gateway",
                Hook::Uplink,
                ns(HOST_MAC, HOST_LL, GW_LL),
                Verdict::PASS,
            ),
            row(
                "host talks to the internet over IPv6",
                Hook::Uplink,
                ping6(GW_MAC, HOST_MAC, HOST6, INET6),
                Verdict::PASS,
            ),
            row(
                "/64 guest solicits the host's link-local address",
                vm_a,
                ns(VM_A_MAC, VM_A_LL, HOST_LL),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Nd),
            ),
            row(
                "/64 guest solicits the host's global address",
                vm_a,
                ns(VM_A_MAC, VM_A6, HOST6),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Nd),
            ),
            row(
                "/128 guest sends to the host via the gateway",
                vm_c,
                ping6(GW_MAC, VM_C_MAC, VM_C6, HOST6),
                to(UPLINK_IF, Some(HOST_MAC), Path::VmToHost, Proto::Ipv6),
            ),
            row(
                "/128 guest answers the host's solicitation",
                vm_c,
                na(HOST_MAC, VM_C_MAC, VM_C6, HOST6, VM_C6),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Nd),
            ),
            row(
                "guest solicits the gateway",
                vm_a,
                ns(VM_A_MAC, VM_A_LL, GW_LL),
                Verdict::PASS,
            ),
            row(
                "guest checks its own address (DAD)",
                vm_a,
                dad(VM_A_MAC, VM_A6),
                Verdict::PASS,
            ),
            row(
                "guest checks its own link-local address (DAD)",
                vm_a,
                dad(VM_A_MAC, VM_A_LL),
                Verdict::PASS,
            ),
            row(
                "guest routes via the host into a private IPv6 network",
                vm_a,
                ping6(HOST_MAC, VM_A_MAC, VM_A6, PRIVATE6),
                refused(DropReason::NotForHost),
            ),
            row(
                "guest talks to the internet over IPv6",
                vm_a,
                ping6(GW_MAC, VM_A_MAC, VM_A6, INET6),
                Verdict::PASS,
            ),
            row(
                "a routed solicitation (hop limit below 255) is plain IPv6",
                vm_a,
                {
                    let mut f = ns(VM_A_MAC, VM_A_LL, HOST_LL);
                    f[21] = 64;
                    f
                },
                Verdict::PASS,
            ),
            row(
                "a guest sending with another VM's MAC",
                vm_a,
                ipv4(GW_MAC, VM_C_MAC, VM_A_IP, INET_IP),
                refused(DropReason::SpoofedMac),
            ),
            Row {
                what: "a VLAN-tagged frame with another VM's MAC",
                hook: vm_a,
                frame: ipv4(GW_MAC, VM_C_MAC, VM_A_IP, INET_IP),
                vlan: true,
                want: refused(DropReason::SpoofedMac),
            },
            Row {
                what: "a VLAN-tagged frame with the VM's own MAC is another network",
                hook: vm_a,
                frame: ipv4(HOST_MAC, VM_A_MAC, VM_A_IP, HOST_IP),
                vlan: true,
                want: Verdict::PASS,
            },
            row(
                "a guest announcing the host's address (ARP)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, HOST_IP, HOST_IP),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest asking the host in the gateway's name (ARP)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, GW_IP, HOST_IP),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest probing the host's address (ARP probe)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, [0; 4], HOST_IP),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest probing another VM's address (ARP probe)",
                vm_a,
                arp(BROADCAST, VM_A_MAC, 1, [0; 4], VM_C_IP),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest's ARP naming another MAC inside",
                vm_a,
                {
                    let mut f = arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, HOST_IP);
                    f[22..28].copy_from_slice(&GW_MAC);
                    f
                },
                refused(DropReason::ForgedLinkAddress),
            ),
            row(
                "a guest advertising the host's IPv6 address",
                vm_a,
                na(GW_MAC, VM_A_MAC, VM_A_LL, GW_LL, HOST6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest sending as another VM, even to the internet",
                vm_a,
                ipv4(GW_MAC, VM_A_MAC, VM_C_IP, INET_IP),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest forging an internet source towards the host",
                vm_a,
                ipv4(HOST_MAC, VM_A_MAC, INET_IP, HOST_IP),
                refused(DropReason::UnknownSource),
            ),
            row(
                "a guest sending from 0.0.0.0 to the host",
                vm_a,
                ipv4(HOST_MAC, VM_A_MAC, [0; 4], HOST_IP),
                refused(DropReason::UnknownSource),
            ),
            row(
                "an unknown source towards the internet is the wire's business",
                vm_a,
                ipv4(GW_MAC, VM_A_MAC, INET_IP, [198, 51, 100, 20]),
                Verdict::PASS,
            ),
            row(
                "a guest's own link-local source may talk to the host",
                vm_a,
                ping6(HOST_MAC, VM_A_MAC, VM_A_LL, HOST_LL),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Ipv6),
            ),
            row(
                "an unknown link-local source may not reach the host (yet)",
                vm_a,
                ping6(HOST_MAC, VM_A_MAC, STRANGER_LL, HOST_LL),
                refused(DropReason::UnknownSource),
            ),
            row(
                "an unknown link-local source may resolve the gateway",
                vm_a,
                ns(VM_A_MAC, STRANGER_LL, GW_LL),
                Verdict::PASS,
            ),
            // The attack this rule set closes: a solicitation in the
            // gateway's name would move the host's entry for fe80::1.
            row(
                "a guest soliciting the host in the gateway's link-local name",
                vm_a,
                ns(VM_A_MAC, GW_LL, HOST6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest soliciting the host in the host's own link-local name",
                vm_a,
                ns(VM_A_MAC, HOST_LL, HOST6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest soliciting the host in another VM's link-local name",
                vm_a,
                ns(VM_A_MAC, VM_C_LL, HOST6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest advertising the gateway's link-local address to the host",
                vm_a,
                na(HOST_MAC, VM_A_MAC, VM_A_LL, HOST_LL, GW_LL),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest advertising its own address from the gateway's",
                vm_a,
                na(HOST_MAC, VM_A_MAC, GW_LL, HOST_LL, VM_A_LL),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a guest advertising another VM's link-local address to all",
                vm_a,
                na(group_mac(&ALL_NODES), VM_A_MAC, VM_A_LL, ALL_NODES, VM_C_LL),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a duplicate address probe for the host's address",
                vm_a,
                dad(VM_A_MAC, HOST6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a duplicate address probe for the gateway's link-local address",
                vm_a,
                dad(VM_A_MAC, GW_LL),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a duplicate address probe for another VM's address",
                vm_a,
                dad(VM_A_MAC, VM_C6),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a duplicate address probe for an address nobody owns",
                vm_a,
                dad(VM_A_MAC, STRANGER_LL),
                Verdict::PASS,
            ),
            row(
                "a solicitation naming another MAC as its source",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    135,
                    Some(HOST_LL),
                    &with_ll(1, GW_MAC),
                    &[]
                ),
                refused(DropReason::ForgedLinkAddress),
            ),
            row(
                "an advertisement naming another MAC as its target's",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    136,
                    Some(VM_A_LL),
                    &with_ll(2, GW_MAC),
                    &[]
                ),
                refused(DropReason::ForgedLinkAddress),
            ),
            row(
                "a forged link-layer option after a good one",
                vm_a,
                {
                    let mut opts = Vec::new();
                    opts.extend_from_slice(&with_ll(1, VM_A_MAC));
                    opts.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]); // nonce
                    opts.extend_from_slice(&with_ll(1, GW_MAC));
                    nd(VM_A_MAC, VM_A_LL, HOST_LL, 135, Some(HOST_LL), &opts, &[])
                },
                refused(DropReason::ForgedLinkAddress),
            ),
            row(
                "a solicitation with a zero-length option",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    135,
                    Some(HOST_LL),
                    &[1, 0, 0, 0, 0, 0, 0, 0],
                    &[]
                ),
                refused(DropReason::Malformed),
            ),
            row(
                "a solicitation with more options than any stack sends",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    135,
                    Some(HOST_LL),
                    &[14, 1, 0, 0, 0, 0, 0, 0].repeat(9),
                    &[]
                ),
                refused(DropReason::Malformed),
            ),
            row(
                "a router advertisement to all nodes",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    ALL_NODES,
                    134,
                    None,
                    &with_ll(1, VM_A_MAC),
                    &[]
                ),
                refused(DropReason::RouterMessage),
            ),
            row(
                "a router advertisement to the host in the gateway's name",
                vm_a,
                nd(VM_A_MAC, GW_LL, HOST_LL, 134, None, &[], &[]),
                refused(DropReason::RouterMessage),
            ),
            row(
                "a redirect to the host",
                vm_a,
                nd(VM_A_MAC, VM_A_LL, HOST_LL, 137, None, &[], &[]),
                refused(DropReason::RouterMessage),
            ),
            row(
                "a router solicitation to the host",
                vm_a,
                nd(VM_A_MAC, VM_A_LL, HOST_LL, 133, None, &[], &[]),
                refused(DropReason::RouterMessage),
            ),
            row(
                "a router solicitation to all routers is the wire's business",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    ALL_ROUTERS,
                    133,
                    None,
                    &with_ll(1, VM_A_MAC),
                    &[]
                ),
                Verdict::PASS,
            ),
            row(
                "a solicitation behind a destination options header is checked",
                vm_a,
                nd(
                    VM_A_MAC,
                    GW_LL,
                    HOST_LL,
                    135,
                    Some(HOST_LL),
                    &with_ll(1, VM_A_MAC),
                    &dstopts
                ),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "an advertisement behind hop-by-hop and destination options is checked",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    136,
                    Some(GW_LL),
                    &[],
                    &[(0, 8), (60, 16)]
                ),
                refused(DropReason::SpoofedAddress),
            ),
            row(
                "a good solicitation behind a destination options header is steered",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    135,
                    Some(HOST_LL),
                    &with_ll(1, VM_A_MAC),
                    &dstopts
                ),
                to(UPLINK_IF, None, Path::VmToHost, Proto::Nd),
            ),
            row(
                "a router advertisement behind a destination options header",
                vm_a,
                nd(VM_A_MAC, VM_A_LL, ALL_NODES, 134, None, &[], &dstopts),
                refused(DropReason::RouterMessage),
            ),
            row(
                "an extension header chain too long to follow, to the host",
                vm_a,
                nd(
                    VM_A_MAC,
                    VM_A_LL,
                    HOST_LL,
                    136,
                    Some(GW_LL),
                    &[],
                    &[(60, 8); 5]
                ),
                refused(DropReason::Malformed),
            ),
            row(
                "unknown ethertype passes",
                vm_a,
                ether(HOST_MAC, VM_A_MAC, 0x88cc, &[0u8; 46]),
                Verdict::PASS,
            ),
        ]
    }

    #[test]
    fn golden_rows() {
        let tables = lab_tables();
        for row in rows() {
            let got = decide(row.hook, row.frame.as_slice(), row.vlan, &tables);
            assert_eq!(got.verdict, with_sender(row.want, row.hook), "{}", row.what);
            if let Hook::Vm { ifindex } = row.hook {
                assert_eq!(got.sender, slot_of(ifindex), "{}: sender", row.what);
            }
        }
    }

    #[test]
    fn unconfigured_tables_pass_everything() {
        let tables = TestTables::default();
        for row in rows() {
            let got = decide(row.hook, row.frame.as_slice(), row.vlan, &tables);
            assert_eq!(got.verdict, Verdict::PASS, "{}", row.what);
        }
    }

    fn redirect(
        ifindex: u32,
        action: Action,
        dst_mac: Option<Mac>,
        path: Path,
        proto: Proto,
        slots: (u32, u32),
    ) -> Verdict {
        Verdict::redirect(Redirect {
            ifindex,
            action,
            count: true,
            rewrite: dst_mac.is_some(),
            dst_mac: dst_mac.unwrap_or([0; 6]),
            path,
            proto,
            to_slot: slots.0,
            from_slot: slots.1,
        })
    }

    #[test]
    fn bridged_vms_are_reached_through_the_shim_and_the_bridge() {
        let t = lab_tables_bridged();
        let x = Hook::Vm { ifindex: VM_X_IF };
        let run = |hook, frame: Vec<u8>| decide(hook, frame.as_slice(), false, &t).verdict;
        // Host -> x: out of the shim, to x's MAC, even for a broadcast ARP.
        assert_eq!(
            run(Hook::Uplink, ipv4(GW_MAC, HOST_MAC, HOST_IP, VM_X_IP)),
            redirect(
                SHIM_IF,
                Action::Egress,
                Some(VM_X_MAC),
                Path::HostToVm,
                Proto::Ipv4,
                (3, NO_SLOT)
            )
        );
        assert_eq!(
            run(Hook::Uplink, arp(BROADCAST, HOST_MAC, 1, HOST_IP, VM_X_IP)),
            redirect(
                SHIM_IF,
                Action::Egress,
                Some(VM_X_MAC),
                Path::HostToVm,
                Proto::Arp,
                (3, NO_SLOT)
            )
        );
        // x -> host: on into the bridge, to the shim; its ARP broadcast too.
        assert_eq!(
            run(x, ipv4(HOST_MAC, VM_X_MAC, VM_X_IP, HOST_IP)),
            redirect(
                0,
                Action::Continue,
                Some(SHIM_MAC),
                Path::VmToHost,
                Proto::Ipv4,
                (NO_SLOT, 3)
            )
        );
        assert_eq!(
            run(x, arp(BROADCAST, VM_X_MAC, 1, VM_X_IP, HOST_IP)),
            redirect(
                0,
                Action::Continue,
                Some(SHIM_MAC),
                Path::VmToHost,
                Proto::Arp,
                (NO_SLOT, 3)
            )
        );
        // VM a -> x (its ARP too): to x's MAC, in the bridge.
        assert_eq!(
            run(
                Hook::Vm { ifindex: VM_A_IF },
                arp(BROADCAST, VM_A_MAC, 1, VM_A_IP, VM_X_IP)
            ),
            redirect(
                0,
                Action::Continue,
                Some(VM_X_MAC),
                Path::VmToVm,
                Proto::Arp,
                (3, 0)
            )
        );
        // x -> VM a via the gateway: to a's MAC, in the bridge.
        assert_eq!(
            run(x, ipv4(GW_MAC, VM_X_MAC, VM_X_IP, VM_A_IP)),
            redirect(
                0,
                Action::Continue,
                Some(VM_A_MAC),
                Path::VmToVm,
                Proto::Ipv4,
                (0, 3)
            )
        );
        // x to itself, and x spoofing: as for any VM.
        assert_eq!(
            run(x, ipv4(VM_X_MAC, VM_X_MAC, VM_X_IP, VM_X_IP)),
            Verdict::PASS
        );
        assert_eq!(
            run(x, ipv4(GW_MAC, VM_X_MAC, VM_A_IP, INET_IP)),
            Verdict::drop(DropReason::SpoofedAddress)
        );
        // x addressing the shim by itself is addressing the host.
        assert_eq!(
            run(x, ipv4(SHIM_MAC, VM_X_MAC, VM_X_IP, NAT_VM_IP)),
            Verdict::drop(DropReason::NotForHost)
        );
    }

    #[test]
    fn the_shim_lets_through_only_what_it_relays() {
        let t = lab_tables_bridged();
        let e = |f: Vec<u8>| shim_egress(f.as_slice(), &t);
        assert_eq!(e(ipv4(VM_X_MAC, HOST_MAC, HOST_IP, VM_X_IP)), Verdict::PASS);
        for leak in [
            ipv4(VM_X_MAC, SHIM_MAC, HOST_IP, VM_X_IP),
            ipv4(VM_A_MAC, HOST_MAC, HOST_IP, VM_A_IP),
            arp(BROADCAST, SHIM_MAC, 1, HOST_IP, GW_IP),
            std::vec![0u8; 10],
        ] {
            assert_eq!(e(leak), Verdict::drop(DropReason::ShimTransmit));
        }
        let i = |f: Vec<u8>| shim_ingress(f.as_slice(), &t);
        let relayed = Verdict::redirect(Redirect {
            ifindex: UPLINK_IF,
            action: Action::Ingress,
            count: false,
            rewrite: true,
            dst_mac: HOST_MAC,
            path: Path::VmToHost,
            proto: Proto::Ipv4,
            to_slot: NO_SLOT,
            from_slot: 3,
        });
        let got = i(ipv4(SHIM_MAC, VM_X_MAC, VM_X_IP, HOST_IP));
        assert_eq!(got.verdict, relayed);
        assert_eq!(got.sender, 3);
        let refused = |f, reason, why| {
            assert_eq!(i(f).verdict, Verdict::drop(reason), "{why}");
        };
        refused(
            ipv4(SHIM_MAC, VM_A_MAC, VM_A_IP, HOST_IP),
            DropReason::SpoofedMac,
            "only bridged VMs use the shim",
        );
        refused(
            arp(BROADCAST, GW_MAC, 1, GW_IP, HOST_IP),
            DropReason::ShimIngress,
            "the host's stack takes nothing else from the shim",
        );
        refused(
            ipv4(SHIM_MAC, VM_X_MAC, VM_X_IP, NAT_VM_IP),
            DropReason::NotForHost,
            "a bridged VM routing via the shim into a private network",
        );
        refused(
            arp(SHIM_MAC, VM_X_MAC, 1, VM_X_IP, GW_IP),
            DropReason::NotForHost,
            "a bridged VM asking the shim for the gateway",
        );
        refused(
            arp(SHIM_MAC, VM_X_MAC, 1, GW_IP, HOST_IP),
            DropReason::SpoofedAddress,
            "a bridged VM asking the host in the gateway's name",
        );
        refused(
            ipv4(SHIM_MAC, VM_X_MAC, INET_IP, HOST_IP),
            DropReason::UnknownSource,
            "a bridged VM forging a source towards the host",
        );
        refused(
            nd_message(
                SHIM_MAC,
                VM_X_MAC,
                GW_LL,
                HOST_LL,
                135,
                Some(HOST6),
                &[],
                &[],
            ),
            DropReason::SpoofedAddress,
            "a bridged VM soliciting the host in the gateway's name",
        );
        refused(
            nd_message(SHIM_MAC, VM_X_MAC, GW_LL, HOST_LL, 134, None, &[], &[]),
            DropReason::RouterMessage,
            "a bridged VM advertising itself as a router",
        );
    }

    #[test]
    fn who_may_learn_what() {
        let tables = lab_tables();
        let new4 = [203, 0, 113, 170];
        let new6 = {
            let mut a = VM_C6;
            a[15] = 0x70;
            a
        };
        let c = Hook::Vm { ifindex: VM_C_IF };
        let a = Hook::Vm { ifindex: VM_A_IF };
        let run = |hook, frame: Vec<u8>| decide(hook, frame.as_slice(), false, &tables);
        let got = run(c, ipv4(GW_MAC, VM_C_MAC, new4, INET_IP));
        assert_eq!(got.learn, Addr::v4(new4));
        assert_eq!(got.verdict, Verdict::PASS);
        let got = run(c, ns(VM_C_MAC, new6, HOST6));
        assert_eq!(got.learn, Addr::v6(new6));
        // Not learnt yet, so not steered yet.
        assert_eq!(got.verdict, Verdict::drop(DropReason::UnknownSource));
        let got = run(c, ipv4(GW_MAC, VM_C_MAC, VM_C_IP, INET_IP));
        assert_eq!(got.learn, Addr::NONE, "a known address is not reported");
        let got = run(a, ipv4(GW_MAC, VM_A_MAC, new4, INET_IP));
        assert_eq!(
            got.learn,
            Addr::NONE,
            "VM a does not learn global addresses"
        );
        // Link-local addresses are anybody's, first come.
        let got = run(a, ns(VM_A_MAC, STRANGER_LL, GW_LL));
        assert_eq!(got.learn, Addr::v6(STRANGER_LL));
        let got = run(a, dad(VM_A_MAC, STRANGER_LL));
        assert_eq!(got.learn, Addr::v6(STRANGER_LL), "a probe names its target");
        for (what, frame) in [
            ("the host's", ipv4(GW_MAC, VM_C_MAC, HOST_IP, INET_IP)),
            ("the gateway's", ns(VM_C_MAC, GW_LL, HOST6)),
            ("another VM's", ns(VM_C_MAC, VM_A_LL, GW_LL)),
        ] {
            assert_eq!(
                run(c, frame).learn,
                Addr::NONE,
                "{what} address was offered for learning"
            );
        }
    }

    #[test]
    fn every_truncation_is_safe() {
        let tables = lab_tables();
        for row in rows() {
            // ARP carries Ethernet padding after its 28 bytes; IPv4 claims
            // its whole length in the header.
            let whole = if row.frame[12..14] == ETH_P_ARP.to_be_bytes() {
                42
            } else {
                row.frame.len()
            };
            for len in 0..whole {
                let got = decide(row.hook, &row.frame[..len], row.vlan, &tables).verdict;
                // A cut frame is never steered: it would be delivered broken.
                assert_ne!(
                    got.fate,
                    Fate::Redirect,
                    "{} cut to {len} bytes was steered: {got:?}",
                    row.what
                );
            }
        }
    }
}
