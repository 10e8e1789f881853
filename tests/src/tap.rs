//! TAP plumbing for the guest emulator: the guest side of a macvtap
//! (`/dev/tapN`) and a TAP device inside the guest's namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// Size of `struct virtio_net_hdr_mrg_rxbuf`, what qemu uses.
pub const VNET_HDR_LEN: libc::c_int = 12;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_short) -> IfReq {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    let n = name.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    req
}

fn ioctl<T>(file: &File, request: libc::c_ulong, arg: *const T) -> io::Result<()> {
    // SAFETY: `arg` points to a value of the type the request expects and
    // outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_int(file: &File, request: libc::c_ulong, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes its argument by value.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, value) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn queue_flags(vnet_hdr: bool) -> libc::c_short {
    IFF_TAP | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 }
}

/// Opens the guest side of a macvtap. Its queue starts with a virtio-net
/// header on every frame; `vnet_hdr = false` switches it to plain frames.
pub fn open_macvtap(dev: &str, vnet_hdr: bool) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(dev)?;
    ioctl(&file, TUNSETIFF, &ifreq("", queue_flags(vnet_hdr)))?;
    if vnet_hdr {
        ioctl(&file, TUNSETVNETHDRSZ, &VNET_HDR_LEN)?;
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        ioctl_int(&file, TUNSETOFFLOAD, offloads.into())?;
    }
    Ok(file)
}

/// Creates TAP device `name` in the calling thread's network namespace.
pub fn create_tap(name: &str, vnet_hdr: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    ioctl(&file, TUNSETIFF, &ifreq(name, queue_flags(vnet_hdr)))?;
    if vnet_hdr {
        ioctl(&file, TUNSETVNETHDRSZ, &VNET_HDR_LEN)?;
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        ioctl_int(&file, TUNSETOFFLOAD, offloads.into())?;
    }
    Ok(file)
}

/// Moves the calling thread into network namespace `name` (`ip netns`).
pub fn enter_netns(name: &str) -> io::Result<()> {
    let ns = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: plain syscall on a valid namespace fd.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
