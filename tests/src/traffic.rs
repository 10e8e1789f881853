//! Traffic between the lab's namespaces, and only between them.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;

/// One echo request with a one-second deadline (IPv4 or IPv6; a
/// link-local IPv6 target needs `ping_scoped`).
pub fn ping(from: &Netns, to: impl Into<IpAddr>) -> bool {
    ping_scoped(from, &to.into().to_string())
}

/// Pings a target given as text, e.g. `fe80::1%eth0`.
pub fn ping_scoped(from: &Netns, target: &str) -> bool {
    from.output(&["ping", "-c", "1", "-W", "1", "-q", target])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer comes back (ARP/ND or a just-attached hook may
/// cost the first one), at most `tries` times.
pub fn ping_retry(from: &Netns, to: impl Into<IpAddr>, tries: u32) -> bool {
    let to = to.into();
    (0..tries).any(|_| ping(from, to))
}

/// A TCP listener in `ns` that answers every connection with `greeting`.
pub struct Listener {
    pub port: u16,
}

pub fn listen(
    ns: &Netns,
    addr: impl Into<IpAddr>,
    port: u16,
    greeting: &'static [u8],
) -> Result<Listener> {
    let addr = addr.into();
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
pub fn connect(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> Option<Vec<u8>> {
    let addr = addr.into();
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
    send_raw_for(ns, ifname, vec![frame], Duration::ZERO).map(|_| ())
}

/// Sends `frames` round-robin out of `ifname` in `ns` as fast as the
/// socket takes them, for `span` (at least one round); returns how many
/// were sent.
pub fn send_raw_for(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>, span: Duration) -> Result<u64> {
    let ifname = std::ffi::CString::new(ifname)?;
    let sent = ns.in_ns(move || -> std::io::Result<u64> {
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
            let t0 = std::time::Instant::now();
            let (mut sent, mut last_err) = (0u64, None);
            'outer: loop {
                for frame in &frames {
                    let rc = libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    let err = (rc < 0).then(std::io::Error::last_os_error);
                    match err {
                        // A program on the sending link dropped it: the
                        // frame was sent, and refused on its way.
                        Some(e) if e.raw_os_error() == Some(libc::ENOBUFS) => sent += 1,
                        Some(e) => last_err = Some(e),
                        None => sent += 1,
                    }
                    if t0.elapsed() >= span
                        && sent + u64::from(last_err.is_some()) >= frames.len() as u64
                    {
                        break 'outer;
                    }
                }
            }
            libc::close(fd);
            match (sent, last_err) {
                (0, Some(e)) => Err(e),
                _ => Ok(sent),
            }
        }
    })??;
    Ok(sent)
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

/// Sends a UDP datagram from `ns` to a port nobody listens on and reports
/// whether the ICMP(v6) "port unreachable" made it back (the socket then
/// fails with ECONNREFUSED).
pub fn udp_refused(ns: &Netns, addr: impl Into<IpAddr>, port: u16) -> bool {
    let target = SocketAddr::from((addr.into(), port));
    ns.in_ns(move || {
        let any: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let s = UdpSocket::bind(any).ok()?;
        s.connect(target).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        for _ in 0..3 {
            let _ = s.send(b"mvbridge");
            let mut buf = [0u8; 16];
            if let Err(e) = s.recv(&mut buf)
                && e.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Some(true);
            }
        }
        Some(false)
    })
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Sends an ICMPv6 "packet too big" from `from` (in `ns`) to `to`, about an
/// echo request `to` sent to `from`: the message a router on the path
/// would send, which `to` must accept.
pub fn send_packet_too_big(
    ns: &Netns,
    from: std::net::Ipv6Addr,
    to: std::net::Ipv6Addr,
    mtu: u32,
) -> Result<()> {
    // The invoking packet: IPv6 header + an echo request, as `to` sent it.
    let mut inner = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
    inner.extend_from_slice(&to.octets());
    inner.extend_from_slice(&from.octets());
    inner.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    let mut msg = vec![2, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(&inner);
    ns.in_ns(move || -> std::io::Result<()> {
        // SAFETY: plain socket calls with valid arguments; the fd is
        // closed before returning. The kernel fills in the checksum.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut src: libc::sockaddr_in6 = std::mem::zeroed();
            src.sin6_family = libc::AF_INET6 as u16;
            src.sin6_addr.s6_addr = from.octets();
            let size = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            let mut dst = src;
            dst.sin6_addr.s6_addr = to.octets();
            let ok = libc::bind(fd, (&src as *const libc::sockaddr_in6).cast(), size) == 0
                && libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&dst as *const libc::sockaddr_in6).cast(),
                    size,
                ) >= 0;
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if ok { Ok(()) } else { Err(err) }
        }
    })??;
    Ok(())
}

/// A ping flood running in the background (`ping -i`), for counting what
/// a change in the middle of it costs.
pub struct Flood {
    child: std::process::Child,
}

/// What a flood saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodResult {
    pub sent: u64,
    pub received: u64,
}

impl Flood {
    /// `count` echo requests every `interval_ms` from `ns` to `to`.
    pub fn start(ns: &Netns, to: impl Into<IpAddr>, count: u32, interval_ms: u32) -> Result<Flood> {
        let to = to.into().to_string();
        let interval = format!("{}", f64::from(interval_ms) / 1000.0);
        let child = ns
            .command("ping")?
            .args([
                "-q",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                &interval,
                "-W",
                "1",
                &to,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Flood { child })
    }

    pub fn finish(self) -> Result<FloodResult> {
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| anyhow::anyhow!("no ping summary in {text:?}"))?;
        let num = |key: &str| -> u64 {
            line.split(',')
                .find(|p| p.contains(key))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(FloodResult {
            sent: num("transmitted"),
            received: num("received"),
        })
    }
}

/// GET `path` from an HTTP server in `ns`; the response body.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<String> {
    let path = path.to_owned();
    let body = ns.in_ns(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: mvbridge\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })??;
    let (head, body) = body
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response: {body:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("HTTP error: {head}\n\n{body}");
    }
    Ok(body.to_owned())
}

/// An IPv4 echo flood that lasts exactly as long as the change under
/// test: started before it, finished after it. Unlike [`Flood`] (`ping
/// -c`, which must be sized to outlast the change, a guess on a slow
/// machine), it has no count; and unlike stopping ping with SIGINT, the
/// requests still in flight when it stops are waited for (up to a second,
/// as `ping -W 1`), not counted lost.
pub struct EchoFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<std::io::Result<FloodResult>>,
}

impl EchoFlood {
    /// Echo requests from `ns` to `to` every `interval`.
    pub fn start(ns: &Netns, to: Ipv4Addr, interval: Duration) -> Result<EchoFlood> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let path = format!("/run/netns/{}", ns.name);
        let file =
            std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("opening {path}: {e}"))?;
        let thread = {
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) on a valid namespace fd; this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                echo_flood(to, interval, &stop, &received)
            })
        };
        Ok(EchoFlood {
            stop,
            received,
            thread,
        })
    }

    /// Replies received so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` replies beyond `from` came back (the flood is
    /// flowing), for at most `timeout`.
    pub fn wait_for_replies(&self, from: u64, more: u64, timeout: Duration) -> Result<()> {
        let t0 = std::time::Instant::now();
        while self.received() < from + more {
            if t0.elapsed() > timeout || self.thread.is_finished() {
                anyhow::bail!(
                    "only {} echo replies within {timeout:?} (waiting for {more})",
                    self.received() - from.min(self.received())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops sending, waits for what is in flight, and counts.
    pub fn finish(self) -> Result<FloodResult> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the echo flood's thread panicked"))??;
        Ok(result)
    }
}

/// The flood's loop: one raw ICMP socket connected to `to` (so it sees
/// only `to`'s packets), requests with this process's identifier and a
/// sequence number, replies matched back to their request.
fn echo_flood(
    to: Ipv4Addr,
    interval: Duration,
    stop: &std::sync::atomic::AtomicBool,
    received: &std::sync::atomic::AtomicU64,
) -> std::io::Result<FloodResult> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns; closed when dropped.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = socket.as_raw_fd();
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    let size = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a valid address of the size given.
    if unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_in).cast(), size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let id = (std::process::id() as u16) ^ 0x6d76;
    let mut answered: Vec<bool> = Vec::new();
    let mut next = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        match stopped_at {
            Some(at) if answered.iter().all(|a| *a) || at.elapsed() > Duration::from_secs(1) => {
                break;
            }
            Some(_) => {}
            None if now >= next => {
                let seq = answered.len() as u16;
                let request = echo_request(id, seq);
                // A send the kernel refuses (no route, no neighbour) is a
                // request sent and never answered: a loss, as for ping.
                // SAFETY: a valid buffer on a connected socket.
                unsafe { libc::send(fd, request.as_ptr().cast(), request.len(), 0) };
                answered.push(false);
                next += interval;
            }
            None => {}
        }
        let wait = next.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = if stopped_at.is_some() {
            10
        } else {
            wait.as_millis().min(10) as i32
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 1500];
        loop {
            // SAFETY: a valid buffer; non-blocking receive.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
            let Some(seq) = echo_reply_seq(&buf[..n as usize], id) else {
                continue;
            };
            // The newest request with this sequence number (it wraps).
            let last = answered.len() as u64 - 1;
            let back = u64::from((last as u16).wrapping_sub(seq));
            if back <= last && !answered[(last - back) as usize] {
                answered[(last - back) as usize] = true;
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    drop(socket);
    Ok(FloodResult {
        sent: answered.len() as u64,
        received: answered.iter().filter(|a| **a).count() as u64,
    })
}

/// An ICMP echo request: identifier, sequence number, 16 bytes of data.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"mvbridge-package");
    let sum = inet_checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// The sequence number of an echo reply to identifier `id`, from what a
/// raw socket reads (the IPv4 header first).
fn echo_reply_seq(packet: &[u8], id: u16) -> Option<u16> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(header..header + 8)?;
    (icmp[0] == 0 && icmp[1] == 0 && icmp[4..6] == id.to_be_bytes())
        .then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// The Internet checksum (RFC 1071).
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum_and_replies_are_matched() {
        let request = echo_request(0x1234, 7);
        assert_eq!(
            inet_checksum(&request),
            0,
            "a packet with its checksum sums to 0"
        );
        // The reply as a raw socket reads it: a 20-byte IPv4 header, then
        // the request turned around (type 0).
        let mut reply = vec![0x45; 1];
        reply.resize(20, 0);
        let mut icmp = request.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(echo_reply_seq(&reply, 0x1234), Some(7));
        assert_eq!(echo_reply_seq(&reply, 0x4321), None, "somebody else's");
        reply[20] = 8;
        assert_eq!(
            echo_reply_seq(&reply, 0x1234),
            None,
            "a request, not a reply"
        );
        assert_eq!(echo_reply_seq(&reply[..24], 0x1234), None, "cut short");
    }
}
