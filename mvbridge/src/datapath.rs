//! The eBPF object: loading it, attaching its programs to links as TCX
//! links pinned on bpffs, and detaching them again.

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use mvbridge_common::maps::{PROG_SHIM, PROG_UPLINK, PROG_VM};
use thiserror::Error;

use crate::bpffs::PinDir;
use crate::errno;

/// The programs, built by build.rs from `mvbridge-ebpf` and embedded.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mvbridge-ebpf"));

/// Which of our programs a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Uplink,
    Shim,
    Vm,
}

impl Role {
    pub fn program(self) -> &'static str {
        match self {
            Role::Uplink => PROG_UPLINK,
            Role::Shim => PROG_SHIM,
            Role::Vm => PROG_VM,
        }
    }
}

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(
        "this mvbridge binary carries no eBPF object (built with AYA_BUILD_SKIP); rebuild it with `cargo xtask build`"
    )]
    NoObject,
    #[error("the kernel refused to load mvbridge's BPF programs: {0}")]
    Load(String),
    #[error("cannot attach {program} to {ifname} egress: {reason}")]
    Attach {
        program: &'static str,
        ifname: String,
        reason: String,
    },
    #[error("cannot pin the {ifname} hook at {path}: {reason}")]
    Pin {
        ifname: String,
        path: String,
        reason: String,
    },
}

/// Explains a kernel refusal in the admin's terms.
fn explain(err: &(dyn std::error::Error + 'static)) -> String {
    let hint = match errno::of(err) {
        Some(libc::EPERM) => " (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)",
        Some(libc::ENOSYS) => " (this kernel was built without BPF support)",
        _ => "",
    };
    format!("{}{hint}", errno::chain(err))
}

/// The loaded object. Dropping it closes the program fds; hooks stay
/// attached through their pins.
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the object with its maps pinned (by name) under `pins`.
    pub fn load(pins: &PinDir) -> Result<Datapath, DatapathError> {
        if OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.dir)
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(explain(&e)))?;
        for role in [Role::Uplink, Role::Shim, Role::Vm] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(role.program())
                .ok_or_else(|| DatapathError::Load(format!("program {} missing", role.program())))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| DatapathError::Load(explain(&e)))?;
            prog.load().map_err(|e| DatapathError::Load(explain(&e)))?;
        }
        Ok(Datapath { ebpf })
    }

    /// Attaches `role`'s program to `ifname` egress and pins the TCX link,
    /// so the hook outlives this process until `detach` removes the pin.
    pub fn attach(&mut self, role: Role, ifname: &str, pins: &PinDir) -> Result<(), DatapathError> {
        let program = role.program();
        let attach_err = |reason: String| DatapathError::Attach {
            program,
            ifname: ifname.to_owned(),
            reason,
        };
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| attach_err("program missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| attach_err(explain(&e)))?;
        let id = prog
            .attach(ifname, TcAttachType::Egress)
            .map_err(|e| attach_err(explain(&e)))?;
        let link = prog.take_link(id).map_err(|e| attach_err(explain(&e)))?;
        let path = pins.link(ifname);
        let pin_err = |reason: String| DatapathError::Pin {
            ifname: ifname.to_owned(),
            path: path.display().to_string(),
            reason,
        };
        // Only TCX links are fd-based and can be pinned; a netlink (clsact)
        // attachment would not survive us and is refused here.
        let fd_link: FdLink = link.try_into().map_err(|e| {
            pin_err(format!(
                "{} (mvbridge needs TCX, Linux 6.6 or later)",
                errno::chain(&e)
            ))
        })?;
        fd_link.pin(&path).map_err(|e| pin_err(errno::chain(&e)))?;
        Ok(())
    }
}

/// Detaches a pinned hook: dropping the last reference to a TCX link
/// detaches it. A missing pin is not an error (nothing to detach).
pub fn detach(path: &Path) -> std::io::Result<bool> {
    match PinnedLink::from_pin(path) {
        Ok(pinned) => {
            let link = pinned.unpin()?;
            drop(link);
            Ok(true)
        }
        Err(_) if !path.exists() => Ok(false),
        Err(e) => {
            // Not a link (or unreadable): remove the file so nothing of
            // ours lingers, and report what happened.
            std::fs::remove_file(path)?;
            Err(std::io::Error::other(errno::chain(&e)))
        }
    }
}

/// The programs attached to `ifname` egress, by name.
pub fn attached_programs(ifname: &str) -> Result<Vec<String>, String> {
    let (_, progs) =
        SchedClassifier::query_tcx(ifname, TcAttachType::Egress).map_err(|e| errno::chain(&e))?;
    Ok(progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect())
}
