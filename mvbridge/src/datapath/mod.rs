//! The datapath as the kernel holds it: the eBPF object and its programs
//! ([`object`]), the hooks they run on ([`hooks`]), the pinned tables and
//! counters ([`maps`]), their layout across versions ([`layout`], over raw
//! map operations in [`rawmap`]), and the pin directory on bpffs
//! ([`bpffs`]) where all of it outlives the daemon.

pub mod bpffs;
pub mod hooks;
pub mod layout;
pub mod maps;
pub mod object;
pub mod rawmap;
