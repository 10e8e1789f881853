//! VMs declared in libvirt (`[libvirt]` in the config): each domain may
//! declare its interfaces and their addresses in its `<metadata>`, in
//! mvbridge's namespace ([`domain`]). libvirt only supplies declarations:
//! they become config `Vm`s carrying their origin ([`declare`]), and the
//! one reconcile loop plans and applies them like `[[vm]]` sections.
//!
//! The daemon follows libvirt through its event API, not hook scripts:
//! hooks are not called for hot-plug or metadata edits, run inside
//! libvirt's start of a VM (a slow or failing hook delays or kills it),
//! and need libvirtd reloaded when installed. Events come on a connection
//! of libvirt's own, loaded at run time (`ffi`); a thread of ours turns
//! them into fresh looks at the domains ([`watch`]); the daemon keeps what
//! it learnt ([`follow`]) and writes it down ([`state`]) for `status`,
//! `check` ([`view`]) and its own next start, so a libvirt that went away
//! takes no VM with it.

pub mod declare;
pub mod domain;
mod ffi;
pub mod follow;
pub mod state;
pub mod view;
pub mod watch;

use serde::{Deserialize, Serialize};

pub use ffi::{LibvirtError, Reported};

/// One domain as libvirt showed it: what the daemon keeps and writes
/// down, parsed anew wherever it is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub uuid: String,
    pub active: bool,
    /// The live XML of a running domain, the persistent one otherwise.
    pub xml: String,
}

/// Whether libvirt can be loaded: the error says what to install.
pub fn loadable() -> crate::error::Result<()> {
    ffi::available()
}

/// The domains in `snapshots`, and a line for each whose XML does not
/// read (libvirt's own output: not expected).
pub fn parse_all(snapshots: &[Snapshot]) -> (Vec<domain::Domain>, Vec<String>) {
    let mut domains = Vec::new();
    let mut problems = Vec::new();
    for s in snapshots {
        match domain::Domain::parse(&s.xml, s.active) {
            Ok(d) => domains.push(d),
            Err(why) => problems.push(format!(
                "libvirt domain {}: {}",
                s.uuid,
                crate::errno::chain(&why)
            )),
        }
    }
    (domains, problems)
}
