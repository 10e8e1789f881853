//! The command line ([`cli`]) and the commands around the loop: the
//! report ([`report`]) that `status` ([`status`]) prints and the metrics
//! endpoint ([`metrics`]) serves, `check` ([`check`]), the preflight
//! ([`preflight`]) and the service's start condition ([`configured`]).

pub mod check;
pub mod cli;
pub mod configured;
pub mod metrics;
pub mod preflight;
pub mod report;
pub mod status;
