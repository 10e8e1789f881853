//! A namespace's links through a plain rtnetlink socket, read
//! synchronously into a buffer the caller shares between all of them:
//! what the daemon keeps open in each VM namespace. A full rtnetlink
//! connection (a task, and a 64 KiB read buffer the kernel writes into)
//! cost ~55 KiB of resident memory per namespace: 27 MiB with 500
//! containers. The socket also listens to the namespace's link
//! notifications, to tell whether anything changed since its last dump.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};

use crate::error::{Error, Result};
use crate::kernel::netlink::Link;
use crate::kernel::netns::InNetns;

/// Room for one message batch of a dump: the kernel sizes a dump's
/// batches to the reader's buffer, up to 32 KiB.
pub const BUFFER: usize = 32 * 1024;

/// How long a dump may keep us waiting: the kernel answers at once, but
/// the daemon's single thread must never hang on one namespace.
const PATIENCE: libc::timeval = libc::timeval {
    tv_sec: 2,
    tv_usec: 0,
};

pub struct LinkSocket {
    socket: Socket,
    netns: String,
    seq: u32,
    /// A notification about a link of concern came that the last dump
    /// may not reflect: sticky until the next dump.
    news: bool,
}

/// `RTNLGRP_LINK`: link notifications.
const LINK_GROUP: u32 = 1;

/// How many times a dump the kernel marks inconsistent
/// (`NLM_F_DUMP_INTR`: links changed under it) is started again.
const DUMP_TRIES: usize = 3;

/// Readable when a link notification waits (for a [`PollSet`]).
///
/// [`PollSet`]: crate::kernel::poll_set::PollSet
impl AsFd for LinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl LinkSocket {
    /// A socket made in namespace `name`, which it stays in.
    pub fn open_in(name: &str) -> Result<LinkSocket> {
        let opening = || format!("opening rtnetlink in netns {name:?}");
        let socket = InNetns::run(Some(name), || -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
            s.add_membership(LINK_GROUP)?;
            Ok(s)
        })?
        .map_err(|e| Error::io(opening(), e))?;
        // SAFETY: setsockopt on our own socket with a timeval of the right
        // size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&PATIENCE as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(Error::io(opening(), io::Error::last_os_error()));
        }
        Ok(LinkSocket {
            socket,
            netns: name.to_owned(),
            seq: 0,
            news: false,
        })
    }

    /// Did the kernel announce a change to a link that `concerns` us in
    /// the namespace since the last dump began? Reads what notifications
    /// wait: a link's own (a link as it is now, or as it was when it
    /// went) is matched against `concerns`; a full queue that lost some,
    /// or anything unreadable, counts as a change.
    pub fn heard_of_changes(
        &mut self,
        buf: &mut Vec<u8>,
        concerns: &dyn Fn(&Link) -> bool,
    ) -> bool {
        loop {
            buf.clear();
            buf.reserve(BUFFER);
            match self.socket.recv(buf, libc::MSG_DONTWAIT) {
                Ok(n) => self.news |= notifies(&buf[..n], concerns),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.news,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.news = true,
                // Until a dump, whatever it missed may have been news.
                Err(_) => {
                    self.news = true;
                    return true;
                }
            }
        }
    }

    /// Was news heard that no dump has answered yet? (Reads nothing.)
    pub fn has_news(&self) -> bool {
        self.news
    }

    /// The namespace's links, without counters. `buf` is scratch space;
    /// notifications that come with the dump, about links that `concerns`
    /// us, are news for the next [`LinkSocket::heard_of_changes`].
    pub fn links(
        &mut self,
        buf: &mut Vec<u8>,
        concerns: &dyn Fn(&Link) -> bool,
    ) -> Result<Vec<Link>> {
        let mut tries = 1;
        loop {
            match self.dump(buf, concerns) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < DUMP_TRIES => {
                    tries += 1;
                }
                other => {
                    return other.map_err(|e| {
                        Error::io(format!("listing the links of netns {:?}", self.netns), e)
                    });
                }
            }
        }
    }

    /// One dump; EAGAIN when the kernel says links changed during it.
    fn dump(
        &mut self,
        buf: &mut Vec<u8>,
        concerns: &dyn Fn(&Link) -> bool,
    ) -> io::Result<Vec<Link>> {
        // What was announced so far, this dump shows.
        self.heard_of_changes(buf, &|_| false);
        self.news = false;
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(request));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut links = Vec::new();
        loop {
            buf.clear();
            buf.reserve(BUFFER);
            let n = match self.socket.recv(buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let batch = read_batch(&buf[..n], self.seq, &mut links, concerns)?;
            // A change announced while the dump ran may be missing from it.
            self.news |= batch.news;
            if batch.done {
                return Ok(links);
            }
        }
    }
}

/// Does a batch of notifications announce a change to a link that
/// `concerns` us? Anything unreadable is taken as one.
fn notifies(mut batch: &[u8], concerns: &dyn Fn(&Link) -> bool) -> bool {
    while !batch.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(batch) else {
            return true;
        };
        let len = msg.header.length as usize;
        if len == 0 || len > batch.len() || is_news(msg.payload, concerns) {
            return true;
        }
        batch = batch.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    false
}

/// A message that is not a reply to our dump: a link's own notification
/// (a link as it is now, or as it was when it went) is news if it
/// `concerns` us; anything else (a reply to an earlier request that timed
/// out) is taken as news.
fn is_news(payload: NetlinkPayload<RouteNetlinkMessage>, concerns: &dyn Fn(&Link) -> bool) -> bool {
    match payload {
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m),
        ) => concerns(&Link::from_message(&m)),
        _ => true,
    }
}

/// What one batch held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Batch {
    /// The dump is complete.
    done: bool,
    /// Messages that were not the dump's and are news (see [`is_news`]).
    news: bool,
}

/// Reads one batch of a dump answering request `seq` into `links`. A dump
/// the kernel marks inconsistent is EAGAIN; one that ends in an error is
/// that error.
fn read_batch(
    mut batch: &[u8],
    seq: u32,
    links: &mut Vec<Link>,
    concerns: &dyn Fn(&Link) -> bool,
) -> io::Result<Batch> {
    let mut out = Batch::default();
    while !batch.is_empty() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(batch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.header.length as usize;
        if len == 0 || len > batch.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a netlink message longer than its batch",
            ));
        }
        if msg.header.sequence_number != seq {
            out.news |= is_news(msg.payload, concerns);
        } else if msg.header.flags & NLM_F_DUMP_INTR != 0 {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        } else {
            match msg.payload {
                NetlinkPayload::Done(d) if d.code < 0 => {
                    return Err(io::Error::from_raw_os_error(-d.code));
                }
                NetlinkPayload::Done(_) => {
                    out.done = true;
                    return Ok(out);
                }
                NetlinkPayload::Error(e) => {
                    let errno = e.code.map_or(libc::EIO, |c| -c.get());
                    return Err(io::Error::from_raw_os_error(errno));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    links.push(Link::from_message(&m));
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned in a batch.
        batch = batch.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{DoneMessage, ErrorMessage, NetlinkHeader};
    use rtnetlink::packet_route::link::LinkHeader;

    fn encode(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), payload);
        m.header.sequence_number = seq;
        m.finalize();
        let mut out = vec![0; m.buffer_len()];
        m.serialize(&mut out);
        out
    }

    fn link(index: u32, name: &str) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header = LinkHeader {
            index,
            ..LinkHeader::default()
        };
        m.attributes.push(LinkAttribute::IfName(name.into()));
        encode(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)),
            7,
        )
    }

    /// One batch of a dump with sequence 7, links thrown away.
    fn read_alone(batch: &[u8]) -> io::Result<Batch> {
        read_batch(batch, 7, &mut Vec::new(), &|_| true)
    }

    #[test]
    fn a_dump_reads_across_batches_and_ends_at_done() {
        let mut links = Vec::new();
        let first = [link(1, "lo"), link(5, "eth0")].concat();
        let b = read_batch(&first, 7, &mut links, &|_| true).unwrap();
        assert_eq!(b, Batch::default());
        // A notification (sequence 0) in the middle of the dump.
        let mut news = link(9, "new");
        news[8..12].copy_from_slice(&0u32.to_ne_bytes());
        let second = [
            news,
            encode(NetlinkPayload::Done(DoneMessage::default()), 7),
        ]
        .concat();
        let b = read_batch(&second, 7, &mut links, &|l| l.name == "new").unwrap();
        assert_eq!(
            b,
            Batch {
                done: true,
                news: true
            }
        );
        // The same notification about a link of no concern is no news.
        let b = read_batch(&second, 7, &mut Vec::new(), &|_| false).unwrap();
        assert_eq!(
            b,
            Batch {
                done: true,
                news: false
            }
        );
        let names: Vec<(u32, &str)> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
        assert_eq!(
            names,
            [(1, "lo"), (5, "eth0")],
            "the notification was taken"
        );
    }

    #[test]
    fn only_notifications_about_links_that_concern_us_are_news() {
        let eth0 = |l: &Link| l.name == "eth0";
        let mut gone = link(5, "eth0");
        gone[4..6].copy_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
        assert!(notifies(&[link(9, "dummy0"), gone].concat(), &eth0));
        assert!(notifies(&link(5, "eth0"), &eth0));
        assert!(!notifies(
            &[link(9, "dummy0"), link(10, "tun0")].concat(),
            &eth0
        ));
        // Anything else, or anything unreadable, is news.
        let done = encode(NetlinkPayload::Done(DoneMessage::default()), 0);
        assert!(notifies(&[link(9, "dummy0"), done].concat(), &eth0));
        let whole = link(9, "dummy0");
        assert!(notifies(&whole[..whole.len() - 4], &eth0));
        assert!(!notifies(&[], &eth0));
    }

    #[test]
    fn kernel_errors_interrupted_dumps_and_cut_messages_are_errors() {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-libc::EPERM);
        let err = read_alone(&encode(NetlinkPayload::Error(e), 7)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let mut done = DoneMessage::default();
        done.code = -libc::ENOBUFS;
        let err = read_alone(&encode(NetlinkPayload::Done(done), 7)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS));
        let mut torn = link(1, "lo");
        torn[6..8].copy_from_slice(&NLM_F_DUMP_INTR.to_ne_bytes());
        let err = read_alone(&torn).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        let whole = link(1, "lo");
        assert!(read_alone(&whole[..whole.len() - 4]).is_err());
        assert!(read_alone(&[0u8; 3]).is_err());
    }
}
