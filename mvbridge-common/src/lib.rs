//! Types and packet logic shared by the eBPF programs and the loader.
//!
//! Everything here is `no_std` and free of kernel helpers so that the host
//! can unit-test the exact decision code the programs run: the eBPF crate
//! only adapts `TcContext` to [`frame::Frame`] and [`decide::Tables`] and
//! carries out the returned [`decide::Verdict`].
#![no_std]

pub mod abi;
pub mod decide;
pub mod frame;
pub mod link_local;
pub mod maps;
pub mod parse;
pub mod ratelimit;
pub mod stats;

#[cfg(test)]
mod props;
/// Frame builders and a lab address book, for tests on the host (unit
/// tests here, BPF_PROG_TEST_RUN tests in `tests`).
#[cfg(any(test, feature = "builders"))]
pub mod testing;

#[cfg(any(test, feature = "builders"))]
extern crate std;
