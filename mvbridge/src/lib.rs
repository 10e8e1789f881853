//! mvbridge as a library: the loader, the reconcile loop and everything
//! around it. The `mvbridge` binary is a thin CLI over it; the integration
//! tests use it to load the real programs (BPF_PROG_TEST_RUN) and to read
//! the real tables.
//!
//! The loop, in order: [`world`] observes the kernel, [`plan`] decides
//! (pure), [`apply`] changes the difference; [`reconcile`] holds them
//! together for the daemon ([`daemon`]). `status` ([`report`]) and
//! `check` run the same observe and plan.

pub mod apply;
pub mod bpffs;
pub mod check;
pub mod cli;
pub mod config;
pub mod configured;
pub mod contents;
pub mod daemon;
pub mod datapath;
pub mod errno;
pub mod error;
pub mod hooks;
pub mod layout;
pub mod learning;
pub mod libvirt;
pub mod maps;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod notify;
pub mod plan;
pub mod preflight;
pub mod problem_log;
pub mod rawmap;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod teardown;
pub mod watch;
pub mod world;
