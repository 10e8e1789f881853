//! Working inside another network namespace (a kernel guest's or a
//! container's), from the daemon's single thread: enter, do the
//! synchronous work, come back. Nothing may await while inside.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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
    pub fn enter(name: &str) -> io::Result<InNetns> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{name}"))
            .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?}: {e}")))?;
        setns(&target)?;
        Ok(InNetns { home })
    }

    /// Runs `f` inside `name` (or right here when `name` is `None`).
    pub fn run<T>(name: Option<&str>, f: impl FnOnce() -> T) -> io::Result<T> {
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
