//! The namespace lab: rebuilds the seed's hosting setup in network
//! namespaces, plus the tools to drive and observe it.

pub mod tap;
