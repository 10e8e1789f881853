//! What the programs count: steered traffic per path and protocol, and the
//! one shared list of drop reasons shown by `mvbridge status`.

/// Who talks to whom on a steered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Path {
    /// Sent by the host's stack (itself or NAT'd on behalf of a private VM).
    HostToVm = 0,
    /// Sent by a VM to one of the host's addresses.
    VmToHost = 1,
    /// Sent by a VM to another local VM that would otherwise hairpin.
    VmToVm = 2,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::HostToVm, Path::VmToHost, Path::VmToVm];

    pub const fn name(self) -> &'static str {
        match self {
            Path::HostToVm => "host->vm",
            Path::VmToHost => "vm->host",
            Path::VmToVm => "vm->vm",
        }
    }
}

/// The protocol of a steered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Proto {
    Arp = 0,
    Ipv4 = 1,
    Nd = 2,
    Ipv6 = 3,
}

impl Proto {
    pub const ALL: [Proto; 4] = [Proto::Arp, Proto::Ipv4, Proto::Nd, Proto::Ipv6];

    pub const fn name(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Ipv4 => "ipv4",
            Proto::Nd => "nd",
            Proto::Ipv6 => "ipv6",
        }
    }
}

/// Slots in the per-path counter array.
pub const PATH_SLOTS: u32 = (Path::ALL.len() * Proto::ALL.len()) as u32;

/// The counter slot of one path and protocol.
pub const fn path_slot(path: Path, proto: Proto) -> u32 {
    path as u32 * Proto::ALL.len() as u32 + proto as u32
}

/// Why a program dropped a frame. One list for every program, counted per
/// CPU in [`crate::abi::DROPS`] at the reason's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DropReason {
    /// A VM addressed the host's MAC with a destination that is not one of
    /// the host's addresses: the host would route it, e.g. into its private
    /// networks. A real wire would not deliver that either.
    NotForHost = 0,
    /// The shim tried to transmit. Its MAC must never reach the wire, so
    /// nothing it sends gets past its egress hook.
    ShimTransmit = 1,
    /// A VM sent a frame to the host's MAC whose ARP or IP header is
    /// broken (passing it would put it on the wire addressed to the
    /// host), or neighbour discovery whose options cannot be read.
    Malformed = 2,
    /// The kernel refused to rewrite the destination MAC of a frame we were
    /// about to steer (e.g. it could not make the skb writable).
    RewriteFailed = 3,
    /// A VM sent a frame whose source MAC is not its own.
    SpoofedMac = 4,
    /// A VM claimed an address the host, a neighbour on the wire or
    /// another VM owns (as a source, in ARP, in a neighbour advertisement
    /// or a duplicate address probe), link-local addresses included.
    SpoofedAddress = 5,
    /// A VM sent to a local endpoint from an address that is not its own
    /// (nor learnt): the host's firewall would trust a forged source.
    UnknownSource = 6,
    /// A VM sent ARP or neighbour discovery to local endpoints faster than
    /// any stack needs (see `ratelimit`).
    RateLimited = 7,
    /// A VM's ARP names another sender MAC than the frame's, or its
    /// neighbour solicitation or advertisement carries a link-layer
    /// address option with another MAC: neighbour caches would believe it.
    ForgedLinkAddress = 8,
    /// A VM sent a router advertisement or a redirect (it is a host on
    /// this segment, not a router), or a router solicitation to the host.
    RouterMessage = 9,
    /// A frame reached the shim that is not a bridged VM's frame for the
    /// host: the host's stack takes nothing else from the shim (broadcasts
    /// and multicasts of the VMs land here too).
    ShimIngress = 10,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::NotForHost,
        DropReason::ShimTransmit,
        DropReason::Malformed,
        DropReason::RewriteFailed,
        DropReason::SpoofedMac,
        DropReason::SpoofedAddress,
        DropReason::UnknownSource,
        DropReason::RateLimited,
        DropReason::ForgedLinkAddress,
        DropReason::RouterMessage,
        DropReason::ShimIngress,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NotForHost => "not-for-host",
            DropReason::ShimTransmit => "shim-transmit",
            DropReason::Malformed => "malformed",
            DropReason::RewriteFailed => "rewrite-failed",
            DropReason::SpoofedMac => "spoofed-mac",
            DropReason::SpoofedAddress => "spoofed-address",
            DropReason::UnknownSource => "unknown-source",
            DropReason::RateLimited => "rate-limited",
            DropReason::ForgedLinkAddress => "forged-link-address",
            DropReason::RouterMessage => "router-message",
            DropReason::ShimIngress => "shim-ingress",
        }
    }

    pub const fn describe(self) -> &'static str {
        match self {
            DropReason::NotForHost => {
                "VM frame to the host's MAC for an address the host does not own"
            }
            DropReason::ShimTransmit => "frame sent by the shim (kept off the wire)",
            DropReason::Malformed => {
                "VM frame to the host with a broken header, or ND options that cannot be read"
            }
            DropReason::RewriteFailed => "the kernel refused to rewrite a steered frame",
            DropReason::SpoofedMac => "VM frame with a source MAC that is not the VM's",
            DropReason::SpoofedAddress => {
                "VM claimed an address of the host, a neighbour on the wire or another VM"
            }
            DropReason::UnknownSource => "VM sent to a local endpoint from an address not its own",
            DropReason::RateLimited => "VM flooded local endpoints with ARP or neighbour discovery",
            DropReason::ForgedLinkAddress => {
                "VM ARP/ND naming a link-layer address that is not the frame's source"
            }
            DropReason::RouterMessage => {
                "VM router advertisement or redirect, or router solicitation to the host"
            }
            DropReason::ShimIngress => "frame at the shim that is not a bridged VM's for the host",
        }
    }
}

/// Slots in the drop counter array: room to grow, so a new reason does
/// not change the pinned map's layout.
pub const DROP_SLOTS: u32 = 32;
const _: () = assert!(DropReason::ALL.len() as u32 <= DROP_SLOTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_slots_are_distinct_and_in_range() {
        let mut seen = [false; PATH_SLOTS as usize];
        for path in Path::ALL {
            for proto in Proto::ALL {
                let slot = path_slot(path, proto) as usize;
                assert!(!seen[slot], "slot {slot} used twice");
                seen[slot] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn drop_reasons_index_their_own_slot() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{} out of place", reason.name());
        }
    }
}
