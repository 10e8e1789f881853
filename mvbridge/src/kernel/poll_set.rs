//! A set of file descriptors that is itself one file descriptor (an
//! epoll instance, level-triggered): readable while any member is. The
//! daemon waits on it for the link notifications of every VM namespace
//! at once; members leave the set when they are closed.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Cheap to clone: the clones share one set.
#[derive(Clone, Debug)]
pub struct PollSet(Arc<OwnedFd>);

impl PollSet {
    pub fn new() -> io::Result<PollSet> {
        // SAFETY: no pointer arguments; the fd is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(PollSet(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Adds `fd`, for reading. It stays in the set until it is closed.
    pub fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd.as_raw_fd() as u64,
        };
        // SAFETY: both fds are open for the call; `event` outlives it.
        let r = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The members readable now, of at most `members` (does not wait).
    pub fn ready(&self, members: usize) -> io::Result<Vec<RawFd>> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; members.max(1)];
        loop {
            // SAFETY: room for `events.len()` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            if n >= 0 {
                return Ok(events[..n as usize]
                    .iter()
                    .map(|e| e.u64 as RawFd)
                    .collect());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for PollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_while_a_member_is_and_forgets_closed_members() {
        let set = PollSet::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        set.add(b.as_fd()).unwrap();
        assert!(set.ready(1).unwrap().is_empty());
        a.write_all(b"x").unwrap();
        assert!(!set.ready(1).unwrap().is_empty());
        // Level-triggered: still ready until read.
        assert!(!set.ready(1).unwrap().is_empty());
        drop(b);
        assert!(
            set.ready(1).unwrap().is_empty(),
            "a closed member left the set"
        );
    }

    #[test]
    fn says_which_members_are_readable() {
        let set = PollSet::new().unwrap();
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        for (_, b) in &pairs {
            set.add(b.as_fd()).unwrap();
        }
        assert!(set.ready(3).unwrap().is_empty());
        (&pairs[0].0).write_all(b"x").unwrap();
        (&pairs[2].0).write_all(b"x").unwrap();
        let mut ready = set.ready(3).unwrap();
        ready.sort();
        let mut want = vec![pairs[0].1.as_raw_fd(), pairs[2].1.as_raw_fd()];
        want.sort();
        assert_eq!(ready, want);
    }

    #[test]
    fn one_fd_cannot_join_twice() {
        let set = PollSet::new().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        set.add(b.as_fd()).unwrap();
        let e = set.add(b.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    }
}
