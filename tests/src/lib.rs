//! The namespace lab: rebuilds a hosted server's setup in network
//! namespaces, plus the tools to drive and observe it. Used by the
//! integration tests and by `cargo xtask demo`.

pub mod bench;
pub mod bins;
pub mod bpfrun;
pub mod daemon;
pub mod foreign;
pub mod guest;
pub mod hostlab;
pub mod lab;
pub mod libvirt;
pub mod matrix;
pub mod netns;
pub mod sandbox;
pub mod sh;
pub mod state;
pub mod systemd;
pub mod tap;
pub mod traffic;
pub mod wire;
