//! mvbridge as a library: the loader, the reconcile loop and everything
//! around it. The `mvbridge` binary is a thin CLI over it; the integration
//! tests use it to load the real programs (BPF_PROG_TEST_RUN) and to read
//! the real tables.

pub mod bpffs;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod desired;
pub mod errno;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod notify;
pub mod observe;
pub mod preflight;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod tables;
pub mod teardown;
pub mod watch;
