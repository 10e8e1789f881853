//! A namespace's links through a plain rtnetlink socket, read
//! synchronously into a buffer the caller shares between all of them:
//! what the daemon keeps open in each VM namespace. A full rtnetlink
//! connection (a task, and a 64 KiB read buffer the kernel writes into)
//! cost ~55 KiB of resident memory per namespace: 27 MiB with 500
//! containers.

use std::io;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
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
}

impl LinkSocket {
    /// A socket made in namespace `name`, which it stays in.
    pub fn open_in(name: &str) -> Result<LinkSocket> {
        let opening = || format!("opening rtnetlink in netns {name:?}");
        let socket = InNetns::run(Some(name), || -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
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
        })
    }

    /// The namespace's links, without counters. `buf` is scratch space.
    pub fn links(&mut self, buf: &mut Vec<u8>) -> Result<Vec<Link>> {
        let listing = || format!("listing the links of netns {:?}", self.netns);
        self.seq = self.seq.wrapping_add(1);
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
        self.socket
            .send(&out, 0)
            .map_err(|e| Error::io(listing(), e))?;
        let mut links = Vec::new();
        loop {
            buf.clear();
            buf.reserve(BUFFER);
            let n = self
                .socket
                .recv(buf, 0)
                .map_err(|e| Error::io(listing(), e))?;
            match read_batch(&buf[..n], self.seq, &mut links) {
                Ok(true) => return Ok(links),
                Ok(false) => {}
                Err(e) => return Err(Error::io(listing(), e)),
            }
        }
    }
}

/// Reads one batch of a dump answering request `seq` into `links`; true
/// once the dump is complete. Replies to an earlier request (one that
/// timed out) are skipped.
fn read_batch(mut batch: &[u8], seq: u32, links: &mut Vec<Link>) -> io::Result<bool> {
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
        if msg.header.sequence_number == seq {
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(true),
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
    Ok(false)
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

    #[test]
    fn a_dump_reads_across_batches_and_ends_at_done() {
        let mut links = Vec::new();
        let first = [link(1, "lo"), link(5, "eth0")].concat();
        assert!(!read_batch(&first, 7, &mut links).unwrap());
        let mut stale = link(9, "old");
        stale[8..12].copy_from_slice(&6u32.to_ne_bytes());
        let second = [
            stale,
            encode(NetlinkPayload::Done(DoneMessage::default()), 7),
        ]
        .concat();
        assert!(read_batch(&second, 7, &mut links).unwrap());
        let names: Vec<(u32, &str)> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
        assert_eq!(names, [(1, "lo"), (5, "eth0")], "the stale reply was taken");
    }

    #[test]
    fn a_kernel_error_and_a_cut_message_are_errors() {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-libc::EPERM);
        let err = read_batch(&encode(NetlinkPayload::Error(e), 7), 7, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let whole = link(1, "lo");
        assert!(read_batch(&whole[..whole.len() - 4], 7, &mut Vec::new()).is_err());
        assert!(read_batch(&[0u8; 3], 7, &mut Vec::new()).is_err());
    }
}
