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
