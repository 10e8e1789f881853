//! Hooks as TCX links (Linux 6.6+): attached first in the link's program
//! chain, pinned on bpffs under the hook's name, replaced in place with
//! `bpf_link_update`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};

use super::HookKey;
use crate::datapath::bpffs::PinDir;
use crate::datapath::object::Datapath;
use crate::error::{Error, Result};
use crate::kernel::netns::InNetns;

/// The programs attached on `key`'s link and side, as (id, name).
pub fn programs_on(key: &HookKey) -> Result<Vec<(u32, String)>> {
    let ifname = key.at.ifname();
    let (_, progs) = InNetns::run(key.at.netns(), || {
        SchedClassifier::query_tcx(ifname, key.role.attach_type())
    })?
    .map_err(|e| Error::bpf(format!("querying the programs on {}", key.at), e))?;
    Ok(progs
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect())
}

/// Does `prog_id` run as `key` on the link with `ifindex`? Read from our
/// pin of the hook: a TCX link still attached (the kernel reports ifindex
/// 0 once it was detached or its device went) to that link and side,
/// running that program. Enters no namespace and lists no chain: the
/// periodic pass asks this of every hook.
pub fn runs(pins: &PinDir, key: &HookKey, ifindex: u32, prog_id: u32) -> Result<bool> {
    let path = pins.hook(key);
    let reading = || format!("reading {}", path.display());
    let fd = match open_pin(&path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(reading(), e)),
    };
    let info = link_info(fd.as_fd()).map_err(|e| Error::io(reading(), e))?;
    let side = match key.role.attach_type() {
        TcAttachType::Ingress => BPF_TCX_INGRESS,
        _ => BPF_TCX_EGRESS,
    };
    Ok(info.prog_id == prog_id
        && info.ifindex == ifindex
        && ifindex != 0
        && info.attach_type == side)
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `struct bpf_link_info` as far as a TCX link fills it.
#[repr(C)]
#[derive(Default)]
struct TcxLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
    /// The rest of the union, zero as the kernel wants it.
    _rest: [u64; 6],
}

/// Opens a pinned BPF object (`BPF_OBJ_GET`).
pub fn open_pin(path: &Path) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGet {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET with a NUL-terminated path that outlives the
    // call; on success the kernel returns a new fd, which we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link_info(fd: BorrowedFd<'_>) -> std::io::Result<TcxLinkInfo> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = TcxLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<TcxLinkInfo>() as u32,
        info: &mut info as *mut TcxLinkInfo as u64,
    };
    crate::datapath::rawmap::call(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// Attaches `prog` as `key`, before any other program on that side of the
/// link (so none can take a frame from us first), and pins the link, so
/// the hook outlives this process until `detach` removes the pin. A stale
/// pin of the same name (a link that died with its device) is replaced.
pub fn attach(pins: &PinDir, key: &HookKey, prog: &mut SchedClassifier) -> Result<()> {
    let path = pins.hook(key);
    detach(&path)?;
    let link = InNetns::run(key.at.netns(), || -> Result<SchedClassifierLink> {
        let id = prog
            .attach_with_options(
                key.at.ifname(),
                key.role.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))?;
        prog.take_link(id)
            .map_err(|e| Error::bpf(format!("attaching {key}"), e))
    })??;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e| Error::bpf(format!("pinning {key}"), e))?;
    fd_link
        .pin(&path)
        .map_err(|e| Error::bpf(format!("pinning {key} at {}", path.display()), e))?;
    Ok(())
}

/// Detaches a pinned hook: dropping the last reference to a TCX link
/// detaches it. A missing pin is not an error (nothing to detach); a pin
/// that is not a link is removed all the same. True if a hook went.
pub fn detach(path: &Path) -> Result<bool> {
    match PinnedLink::from_pin(path) {
        Ok(pinned) => {
            let link = pinned
                .unpin()
                .map_err(|e| Error::io(format!("unpinning {}", path.display()), e))?;
            drop(link);
            Ok(true)
        }
        Err(_) if !path.exists() => Ok(false),
        Err(e) => {
            std::fs::remove_file(path)
                .map_err(|io| Error::io(format!("removing {}", path.display()), io))?;
            Err(Error::bpf(
                format!("{} was not a hook; removed it", path.display()),
                e,
            ))
        }
    }
}

/// Swaps this binary's programs into every pinned hook, atomically per
/// hook (`bpf_link_update`): traffic never meets a missing program. Pins
/// whose link no longer works (its device is gone) are removed. Returns
/// the hooks taken over.
pub fn adopt(pins: &PinDir, datapath: &mut Datapath) -> Vec<HookKey> {
    let mut adopted = Vec::new();
    for (key, path) in pins.hooks() {
        let replaced = PinnedLink::from_pin(&path)
            .map_err(|e| Error::bpf(format!("opening {}", path.display()), e))
            .and_then(|pinned| {
                let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                    .map_err(|e| Error::bpf(format!("reading {}", path.display()), e))?;
                let prog = datapath.program(key.role)?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| Error::bpf(format!("replacing the program of {key}"), e))?;
                // The pin keeps the link; our handle on it can go.
                drop(
                    prog.take_link(id)
                        .map_err(|e| Error::bpf(format!("replacing {key}"), e))?,
                );
                Ok(())
            });
        match replaced {
            Ok(()) => adopted.push(key),
            Err(e) => {
                tracing::info!(hook = %key, "dropping a stale hook pin: {}", crate::errno::chain(&e));
                if let Err(e) = detach(&path) {
                    tracing::warn!(hook = %key, "{}", crate::errno::chain(&e));
                }
            }
        }
    }
    adopted
}
