//! Other network namespaces (a kernel guest's or a container's): which
//! namespace a name stands for right now, and working inside one from the
//! daemon's single thread (enter, do the synchronous work, come back;
//! nothing may await while inside).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where `ip netns` keeps the namespaces it names.
fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// Which namespace a name stands for: the nsfs inode behind
/// `/run/netns/<name>`. A container that restarts under the same name gets
/// a new namespace, hence a new id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    pub fn of(name: &str) -> Result<NetnsId> {
        let meta = std::fs::metadata(path(name))
            .map_err(|e| Error::io(format!("looking up network namespace {name:?}"), e))?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Inside `/run/netns/<name>` until dropped.
pub struct InNetns {
    home: File,
}

fn setns(fd: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a valid namespace fd; affects this thread only.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl InNetns {
    pub fn enter(name: &str) -> Result<InNetns> {
        let entering = || format!("entering network namespace {name:?}");
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| Error::io(entering(), e))?;
        let target = File::open(path(name)).map_err(|e| Error::io(entering(), e))?;
        setns(&target).map_err(|e| Error::io(entering(), e))?;
        Ok(InNetns { home })
    }

    /// Runs `f` inside `name` (or right here when `name` is `None`).
    pub fn run<T>(name: Option<&str>, f: impl FnOnce() -> T) -> Result<T> {
        let _inside = match name {
            Some(n) => Some(InNetns::enter(n)?),
            None => None,
        };
        Ok(f())
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            // Staying in the wrong namespace would make every later step
            // act on the wrong links: stop here.
            panic!("cannot return to the host's network namespace: {e}");
        }
    }
}
