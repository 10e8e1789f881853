//! The library's one error type. Each variant keeps what failed as a
//! typed source; messages say what mvbridge was doing, the source says
//! why, and `{:#}` (anyhow, at the edges) prints the chain.

use std::path::PathBuf;

use thiserror::Error;

use crate::config::ConfigError;

/// The library error behind a kernel refusal (aya's several error types,
/// rtnetlink's), boxed: each says what the kernel refused and keeps the
/// errno.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A netlink request the kernel refused (or that could not be sent).
    #[error("{doing}{}", hint(.source.as_ref()))]
    Netlink {
        doing: String,
        #[source]
        source: Cause,
    },

    /// A bpf() operation: loading, attaching, pinning, map access.
    #[error("{doing}{}", hint(.source.as_ref()))]
    Bpf {
        doing: String,
        #[source]
        source: Cause,
    },

    /// A file, namespace or mount operation.
    #[error("{doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },

    /// What the plan found wrong with the links and the config: the admin's
    /// to fix, with the field or link named.
    #[error("{0}")]
    Unfit(String),

    /// A setting the running daemon cannot change in place.
    #[error("{what} changed: that takes a restart, not a reload")]
    NeedsRestart { what: &'static str },

    /// Passes kept finding links created or changed under them.
    #[error(
        "links kept changing under mvbridge for {rounds} rounds; trying again on the next change"
    )]
    Unsettled { rounds: usize },

    /// The plan names a VM the config it was made from does not have.
    #[error("the plan creates unknown VM {name:?}")]
    UnplannedVm { name: String },

    /// The connection into a VM's namespace went away between the look at
    /// the world and applying the plan.
    #[error("lost the connection into netns {netns:?}")]
    NetnsLost { netns: String },

    /// The eBPF object embedded in this binary lacks one of the programs.
    #[error("the embedded eBPF object has no program {name}")]
    NoProgram { name: String },

    /// A hook's name does not fit the record map's key.
    #[error(
        "the hook name {name:?} is longer than {max} bytes (a shorter netns or interface name helps)"
    )]
    HookNameTooLong { name: String, max: usize },

    /// A hook attached as a classic filter has nowhere to be recorded.
    #[error("no record map pinned to record {hook} in")]
    NoHookRecords {
        hook: crate::datapath::hooks::HookKey,
    },

    /// A pinned map of layout `from` has no rule to carry it into this
    /// binary's layout.
    #[error(
        "this mvbridge cannot carry map {map} of layout {from} over (it knows layout 1); run `mvbridge down` first"
    )]
    NoMigration { map: &'static str, from: u32 },

    /// A pinned map's entries changed shape with no conversion for them.
    #[error("{map}: {change} without a conversion")]
    Unconvertible { map: &'static str, change: String },

    /// The only maps pinned are an older mvbridge's, which this binary
    /// reads only once its daemon has carried them over.
    #[error(
        "{path} holds map layout {found}, an older mvbridge's; this one reads layout {wanted} once its daemon starts and carries the maps over"
    )]
    OlderLayout {
        path: PathBuf,
        found: u32,
        wanted: u32,
    },

    /// Loading libvirt, or a call into it.
    #[error(transparent)]
    Libvirt(#[from] crate::libvirt::LibvirtError),

    #[error(
        "{path} was pinned by an incompatible mvbridge version ({found}; this one needs {wanted}); run `mvbridge down` (a short outage) and start again"
    )]
    Incompatible {
        path: PathBuf,
        found: String,
        wanted: String,
    },

    #[error(
        "this mvbridge binary carries no eBPF object (built with AYA_BUILD_SKIP); rebuild it with `cargo xtask build`"
    )]
    NoObject,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn netlink(doing: impl Into<String>, source: impl Into<Cause>) -> Error {
        Error::Netlink {
            doing: doing.into(),
            source: source.into(),
        }
    }

    pub fn bpf(doing: impl Into<String>, source: impl Into<Cause>) -> Error {
        Error::Bpf {
            doing: doing.into(),
            source: source.into(),
        }
    }

    pub fn io(doing: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            doing: doing.into(),
            source,
        }
    }

    /// The errno behind the error, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        crate::errno::of(self)
    }
}

/// What an errno usually means for mvbridge, as a hint after the message.
fn hint(source: &(dyn std::error::Error + 'static)) -> &'static str {
    match crate::errno::of(source) {
        Some(libc::EPERM) => " (EPERM: needs root, or CAP_NET_ADMIN + CAP_BPF + CAP_PERFMON)",
        Some(libc::ENOSYS) => " (ENOSYS: this kernel was built without BPF support)",
        Some(libc::EADDRINUSE) => " (EADDRINUSE: another link on this device uses that MAC)",
        Some(libc::EOPNOTSUPP) => " (EOPNOTSUPP: the kernel lacks this link type or feature)",
        Some(libc::E2BIG) => " (E2BIG: the table is full)",
        _ => "",
    }
}
