//! Watching the uplink's wire: tcpdump on the gateway's end of the veth,
//! so every frame counted really crossed the "cable".

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

pub type Mac = [u8; 6];

/// One captured frame with the fields the tests look at.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub bytes: Vec<u8>,
}

/// An ARP packet, as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tpa: Ipv4Addr,
}

impl Frame {
    pub fn ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        if self.ethertype != 0x0800 || self.bytes.len() < 34 {
            return None;
        }
        let b = &self.bytes;
        Some((
            Ipv4Addr::new(b[26], b[27], b[28], b[29]),
            Ipv4Addr::new(b[30], b[31], b[32], b[33]),
        ))
    }

    pub fn arp(&self) -> Option<Arp> {
        if self.ethertype != 0x0806 || self.bytes.len() < 42 {
            return None;
        }
        let b = &self.bytes;
        Some(Arp {
            oper: u16::from_be_bytes([b[20], b[21]]),
            sha: b[22..28].try_into().ok()?,
            spa: Ipv4Addr::new(b[28], b[29], b[30], b[31]),
            tpa: Ipv4Addr::new(b[38], b[39], b[40], b[41]),
        })
    }

    /// The target of a neighbour solicitation or advertisement.
    pub fn nd_target(&self) -> Option<std::net::Ipv6Addr> {
        let b = &self.bytes;
        if self.ethertype != 0x86dd || b.len() < 78 || b[20] != 58 || !(135..=136).contains(&b[54])
        {
            return None;
        }
        let t: [u8; 16] = b[62..78].try_into().ok()?;
        Some(t.into())
    }

    /// IPv6 source and destination.
    pub fn ipv6(&self) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)> {
        if self.ethertype != 0x86dd || self.bytes.len() < 54 {
            return None;
        }
        let src: [u8; 16] = self.bytes[22..38].try_into().ok()?;
        let dst: [u8; 16] = self.bytes[38..54].try_into().ok()?;
        Some((src.into(), dst.into()))
    }
}

/// A running capture.
pub struct WireTap {
    child: Child,
    /// What tcpdump wrote so far, filled by a reader thread.
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    ns: String,
    ifname: String,
}

/// The ethertype of the frame that marks the end of a capture (IEEE's
/// local experimental one: nothing in the lab speaks it).
const MARKER_ETHERTYPE: u16 = 0x88b5;

impl WireTap {
    /// Starts tcpdump on `ifname` inside `ns` and waits until it listens.
    pub fn start(ns: &Netns, ifname: &str) -> Result<WireTap> {
        let mut child = ns
            .command("tcpdump")?
            .args([
                "-i",
                ifname,
                "-U",
                "-n",
                "--immediate-mode",
                "-s",
                "256",
                "-w",
                "-",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (is it installed?)")?;
        let mut stdout = child.stdout.take().context("tcpdump stdout")?;
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // EOF or an error both mean tcpdump is gone; what it wrote stays.
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => bail!("tcpdump on {ifname} did not start"),
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(WireTap {
            child,
            bytes,
            reader: Some(reader),
            ns: ns.name.clone(),
            ifname: ifname.to_owned(),
        })
    }

    /// Stops the capture and returns every frame seen. Before stopping, a
    /// marker frame goes out of the captured link and the capture runs
    /// until tcpdump has written it: everything the link carried before
    /// has been written too.
    pub fn stop(mut self) -> Result<Vec<Frame>> {
        let marker = self.marker();
        crate::traffic::send_raw(&Netns::borrowed(&self.ns), &self.ifname, marker.clone())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut scanned = 0;
        loop {
            {
                let bytes = self.bytes.lock().unwrap();
                if contains(&bytes[scanned..], &marker) {
                    break;
                }
                scanned = bytes.len().saturating_sub(marker.len());
            }
            if Instant::now() > deadline {
                bail!("tcpdump on {} never wrote the end marker", self.ifname);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().context("waiting for tcpdump")?;
        self.reader
            .take()
            .context("capture already stopped")?
            .join()
            .map_err(|_| anyhow::anyhow!("capture reader panicked"))?;
        let bytes = std::mem::take(&mut *self.bytes.lock().unwrap());
        Ok(parse_pcap(&bytes)?
            .into_iter()
            .filter(|f| f.ethertype != MARKER_ETHERTYPE)
            .collect())
    }

    /// A frame no test sends: between two locally administered MACs
    /// nobody has (so no guest's emulator receives it), the local
    /// experimental ethertype, this capture's process id and time as
    /// payload.
    fn marker(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0x6d, 0x76, 0x62, 0x00, 0xff];
        f.extend_from_slice(&[0x02, 0x6d, 0x76, 0x62, 0x00, 0xfe]);
        f.extend_from_slice(&MARKER_ETHERTYPE.to_be_bytes());
        f.extend_from_slice(&self.child.id().to_be_bytes());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        f.extend_from_slice(&nanos.to_be_bytes());
        f.resize(60, 0);
        f
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a classic pcap stream (what `tcpdump -w -` writes).
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<Frame>> {
    if bytes.len() < 24 {
        bail!("pcap stream too short ({} bytes)", bytes.len());
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("not a pcap stream (magic {magic:#x})"),
    };
    let u32_at = |b: &[u8]| -> u32 {
        let a: [u8; 4] = b[..4].try_into().unwrap_or_default();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let caplen = u32_at(&bytes[off + 8..]) as usize;
        let start = off + 16;
        let Some(data) = bytes.get(start..start + caplen) else {
            break;
        };
        if data.len() >= 14 {
            frames.push(Frame {
                dst: data[0..6].try_into()?,
                src: data[6..12].try_into()?,
                ethertype: u16::from_be_bytes([data[12], data[13]]),
                bytes: data.to_vec(),
            });
        }
        off = start + caplen;
    }
    Ok(frames)
}

pub fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

pub fn parse_mac(s: &str) -> Result<Mac> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))
}
