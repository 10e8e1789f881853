//! Traffic between the lab's namespaces, and only between them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;

/// One echo request with a one-second deadline.
pub fn ping(from: &Netns, to: Ipv4Addr) -> bool {
    from.output(&["ping", "-c", "1", "-W", "1", "-q", &to.to_string()])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer comes back (ARP or a just-attached hook may
/// cost the first one), at most `tries` times.
pub fn ping_retry(from: &Netns, to: Ipv4Addr, tries: u32) -> bool {
    (0..tries).any(|_| ping(from, to))
}

/// A TCP listener in `ns` that answers every connection with `greeting`.
pub struct Listener {
    pub port: u16,
}

pub fn listen(ns: &Netns, addr: Ipv4Addr, port: u16, greeting: &'static [u8]) -> Result<Listener> {
    let listener = ns.in_ns(move || TcpListener::bind(SocketAddr::from((addr, port))))??;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.write_all(greeting);
        }
    });
    Ok(Listener { port })
}

/// Connects from `ns` and reads what the server says; `None` when the
/// connection fails or times out.
pub fn connect(ns: &Netns, addr: Ipv4Addr, port: u16) -> Option<Vec<u8>> {
    ns.in_ns(move || {
        let target = SocketAddr::from((addr, port));
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Some(buf)
    })
    .ok()
    .flatten()
}

/// Sends one raw Ethernet frame out of `ifname` in `ns` (an AF_PACKET
/// socket: what any program on the host could do to a link).
pub fn send_raw(ns: &Netns, ifname: &str, frame: Vec<u8>) -> Result<()> {
    let ifname = std::ffi::CString::new(ifname)?;
    ns.in_ns(move || -> std::io::Result<()> {
        // SAFETY: plain socket calls with valid arguments; the fd is closed
        // before returning.
        unsafe {
            let index = libc::if_nametoindex(ifname.as_ptr());
            if index == 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let rc = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if rc < 0 { Err(err) } else { Ok(()) }
        }
    })??;
    Ok(())
}

/// A broadcast ARP request from `sha`/`spa` for `tpa`.
pub fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}
