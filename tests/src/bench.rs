//! `cargo xtask bench`: every way users connect a host and its VMs today,
//! each built in namespaces of its own with a 1 Gbit/s uplink, measured
//! side by side, and mvbridge's daemon at scale. `mvb-bench` drives it;
//! the smoke test reads its report back through [`report`].
//!
//! - (a) hairpin: /32 guests; host <-> VM goes through the gateway.
//! - (b) the classic shim: a host macvlan in bridge mode carrying the
//!   host's address, a /32 route per VM.
//! - (c) mvbridge.
//! - (d) a Linux bridge with a veth or tap guest and a routed /32.
//! - (e) the ceiling: the guest's veth or tap straight into the host.
//!
//! Each is measured with kernel guests and with VMs (the guest emulator,
//! vnet headers and offloads), see [`report::Setup::guests`].

pub mod cost;
pub mod datapath;
pub mod goals;
pub mod measure;
pub mod profile;
pub mod render;
pub mod report;
pub mod scale;
pub mod worlds;

pub use crate::lab::{GW as GW_ADDR, HOST as HOST_ADDR, INET as INET_ADDR};
