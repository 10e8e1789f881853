//! mvbridge as a library: the loader, the reconcile loop and everything
//! around it. The `mvbridge` binary is a thin CLI over it; the integration
//! tests use it to load the real programs (BPF_PROG_TEST_RUN) and to read
//! the real tables.
//!
//! The loop, in order ([`control`]): [`world`] observes the kernel,
//! [`plan`] decides (pure), [`apply`] changes the difference;
//! [`reconcile`] holds them together for the daemon ([`daemon`]).
//! `status` ([`report`]) and `check` run the same observe and plan. The
//! loaded programs, their hooks and pinned tables are in [`datapath`];
//! rtnetlink and other namespaces in [`kernel`]; the CLI's commands in
//! [`commands`].
//!
//! [`world`]: control::world
//! [`plan`]: control::plan
//! [`apply`]: control::apply
//! [`reconcile`]: control::reconcile
//! [`daemon`]: control::daemon
//! [`report`]: commands::report

pub mod commands;
pub mod config;
pub mod control;
pub mod datapath;
pub mod errno;
pub mod error;
pub mod kernel;
pub mod libvirt;
