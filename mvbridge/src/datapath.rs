//! The eBPF object: loading it (or adopting a pinned one), attaching its
//! programs to links as TCX links pinned on bpffs, replacing the programs
//! in pinned links without a gap, and detaching them again.

use std::path::Path;

use aya::maps::MapData;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use mvbridge_common::maps::{
    Counter, Endpoint, LEARN_RING_BYTES, LEARNT_MEMORY, MAP_DROPS, MAP_LEARN, MAP_LEARNT,
    MAP_LINKS, MAP_LOCAL4, MAP_LOCAL6, MAP_MACS, MAP_NDRATE, MAP_PATHS, MAP_SETTINGS, MAP_VMSTATS,
    MAX_ENDPOINTS, MAX_VMS, PROG_SHIM, PROG_SHIM_IN, PROG_UPLINK, PROG_VM, Settings, VmCounters,
    VmLink,
};
use mvbridge_common::stats::{DROP_SLOTS, PATH_SLOTS};
use thiserror::Error;

use crate::bpffs::PinDir;
use crate::errno;

/// The programs, built by build.rs from `mvbridge-ebpf` and embedded.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mvbridge-ebpf"));

/// Which of our programs a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Uplink,
    Shim,
    ShimIn,
    Vm,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Uplink, Role::Shim, Role::ShimIn, Role::Vm];

    pub fn program(self) -> &'static str {
        match self {
            Role::Uplink => PROG_UPLINK,
            Role::Shim => PROG_SHIM,
            Role::ShimIn => PROG_SHIM_IN,
            Role::Vm => PROG_VM,
        }
    }

    /// The role's name in pin paths and status.
    pub fn name(self) -> &'static str {
        match self {
            Role::Uplink => "uplink",
            Role::Shim => "shim",
            Role::ShimIn => "shimin",
            Role::Vm => "vm",
        }
    }

    /// Which side of the link the program hooks.
    pub fn attach_type(self) -> TcAttachType {
        match self {
            Role::ShimIn => TcAttachType::Ingress,
            _ => TcAttachType::Egress,
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
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
    #[error(
        "{0} was pinned by an incompatible mvbridge version ({1}); run `mvbridge down` (a short outage) and start again"
    )]
    Incompatible(String, String),
    #[error("cannot attach {program} to {ifname}: {reason}")]
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

/// The map layouts this binary's programs expect: (name, BPF map type,
/// key size, value size, max entries).
fn expected_maps() -> [(&'static str, u32, u32, u32, u32); 11] {
    use std::mem::size_of;
    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    const PERCPU_ARRAY: u32 = 6;
    const LRU_HASH: u32 = 9;
    const RINGBUF: u32 = 27;
    let s = |n: usize| n as u32;
    [
        (MAP_SETTINGS, ARRAY, 4, s(size_of::<Settings>()), 1),
        (MAP_LOCAL4, HASH, 4, s(size_of::<Endpoint>()), MAX_ENDPOINTS),
        (
            MAP_LOCAL6,
            HASH,
            16,
            s(size_of::<Endpoint>()),
            MAX_ENDPOINTS,
        ),
        (MAP_MACS, HASH, 6, s(size_of::<Endpoint>()), MAX_VMS),
        (MAP_LINKS, HASH, 4, s(size_of::<VmLink>()), MAX_VMS),
        (
            MAP_PATHS,
            PERCPU_ARRAY,
            4,
            s(size_of::<Counter>()),
            PATH_SLOTS,
        ),
        (MAP_DROPS, PERCPU_ARRAY, 4, 8, DROP_SLOTS),
        (
            MAP_VMSTATS,
            PERCPU_ARRAY,
            4,
            s(size_of::<VmCounters>()),
            MAX_VMS,
        ),
        (MAP_LEARN, RINGBUF, 0, 0, LEARN_RING_BYTES),
        (MAP_LEARNT, LRU_HASH, 24, 8, LEARNT_MEMORY),
        (MAP_NDRATE, PERCPU_ARRAY, 4, 16, MAX_VMS),
    ]
}

/// Checks pinned maps before aya reuses them (it would not check): a
/// layout from another version would be misread by the programs.
fn check_pinned_maps(pins: &PinDir) -> Result<(), DatapathError> {
    for (name, ty, key, value, max) in expected_maps() {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let bad = |why: String| DatapathError::Incompatible(path.display().to_string(), why);
        let info = aya::maps::MapInfo::from_pin(&path).map_err(|e| bad(errno::chain(&e)))?;
        let got = (
            info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        if got != (ty, key, value, max) {
            return Err(bad(format!(
                "type/key/value/entries {got:?}, this version needs {:?}",
                (ty, key, value, max)
            )));
        }
    }
    Ok(())
}

/// The loaded object. Dropping it closes the program fds; hooks stay
/// attached through their pins.
pub struct Datapath {
    ebpf: Ebpf,
    /// True when the maps were pinned by an earlier run and adopted.
    pub adopted: bool,
}

impl Datapath {
    /// Loads the object with its maps pinned (by name) under `pins`,
    /// reusing maps an earlier run pinned there, contents and all.
    /// `ebpf_log`: let the programs' debug events through (they are
    /// compiled out by the verifier otherwise).
    pub fn load(pins: &PinDir, ebpf_log: bool) -> Result<Datapath, DatapathError> {
        if OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        check_pinned_maps(pins)?;
        let adopted = pins.map(MAP_LOCAL4).exists();
        let level: u8 = if ebpf_log {
            aya_log_common_level_debug()
        } else {
            0
        };
        // No kernel BTF: the programs use no CO-RE relocations, and parsing
        // /sys/kernel/btf/vmlinux would cost most of the start-up time and
        // memory.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .default_map_pin_directory(&pins.dir)
            .override_global(aya_log::LEVEL, &level, true)
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(explain(&e)))?;
        for role in Role::ALL {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(role.program())
                .ok_or_else(|| DatapathError::Load(format!("program {} missing", role.program())))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| DatapathError::Load(explain(&e)))?;
            prog.load().map_err(|e| DatapathError::Load(explain(&e)))?;
        }
        Ok(Datapath { ebpf, adopted })
    }

    /// A loaded program (not necessarily attached), e.g. for test runs.
    pub fn program(&mut self, role: Role) -> Result<&mut SchedClassifier, String> {
        self.ebpf
            .program_mut(role.program())
            .ok_or_else(|| format!("program {} missing", role.program()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| explain(&e))
    }

    /// The do-nothing program the benchmark measures as its baseline,
    /// loaded on first use.
    pub fn baseline(&mut self) -> Result<&mut SchedClassifier, String> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut("mvb_empty")
            .ok_or("program mvb_empty missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| explain(&e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| explain(&e))?;
        }
        Ok(prog)
    }

    /// The kernel's id of `role`'s program (as TCX queries report it).
    pub fn program_id(&mut self, role: Role) -> Option<u32> {
        self.program(role).ok()?.info().ok().map(|i| i.id())
    }

    /// Swaps this binary's programs into every pinned hook, atomically per
    /// hook (`bpf_link_update`): traffic never meets a missing program.
    /// Pins whose link no longer works (its device is gone) are removed.
    /// Returns the hooks taken over.
    pub fn adopt_hooks(&mut self, pins: &PinDir) -> Vec<String> {
        let mut adopted = Vec::new();
        for (path, role, ifname) in pins.hooks().unwrap_or_default() {
            let Some(role) = Role::from_name(&role) else {
                continue;
            };
            let replaced = PinnedLink::from_pin(&path)
                .map_err(|e| errno::chain(&e))
                .and_then(|pinned| {
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| errno::chain(&e))?;
                    let prog = self.program(role)?;
                    let id = prog.attach_to_link(link).map_err(|e| explain(&e))?;
                    // The pin keeps the link; our fd for it can go.
                    drop(prog.take_link(id).map_err(|e| explain(&e))?);
                    Ok(())
                });
            match replaced {
                Ok(()) => adopted.push(ifname),
                Err(e) => {
                    tracing::info!(hook = %ifname, "dropping a stale hook pin: {e}");
                    let _ = detach(&path);
                }
            }
        }
        adopted
    }

    /// Attaches `role`'s program to `ifname` (in the calling thread's
    /// network namespace) and pins the TCX link under `key`, so the hook
    /// outlives this process until `detach` removes the pin. A stale pin
    /// of the same name (a link that died with its device) is replaced.
    pub fn attach(
        &mut self,
        role: Role,
        ifname: &str,
        key: &str,
        pins: &PinDir,
    ) -> Result<(), DatapathError> {
        let program = role.program();
        let attach_err = |reason: String| DatapathError::Attach {
            program,
            ifname: ifname.to_owned(),
            reason,
        };
        let path = pins.hook(role.name(), key);
        let _ = detach(&path);
        let prog = self.program(role).map_err(attach_err)?;
        let id = prog
            .attach(ifname, role.attach_type())
            .map_err(|e| attach_err(explain(&e)))?;
        let link = prog.take_link(id).map_err(|e| attach_err(explain(&e)))?;
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

    /// A reader of the programs' log events (see `load`'s `ebpf_log`).
    pub fn logger(&mut self) -> Option<aya_log::EbpfLogger<EbpfEvents>> {
        match aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, EbpfEvents) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("eBPF logging unavailable: {e}");
                None
            }
        }
    }

    /// Takes the learning ring out of the object, for the daemon to read.
    pub fn take_learn_ring(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.ebpf
            .take_map(MAP_LEARN)
            .and_then(|m| aya::maps::RingBuf::try_from(m).ok())
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

/// The ids and names of the programs attached to `ifname` on `role`'s side
/// (in the calling thread's network namespace).
pub fn attached_programs(ifname: &str, role: Role) -> Result<Vec<(u32, String)>, String> {
    let (_, progs) =
        SchedClassifier::query_tcx(ifname, role.attach_type()).map_err(|e| errno::chain(&e))?;
    Ok(progs
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect())
}

/// aya-log's `Level::Debug` (levels count up from Error = 1); a value at
/// or above it enables debug events.
const fn aya_log_common_level_debug() -> u8 {
    4
}

/// Hands the programs' events to the daemon's log. They only exist when
/// `ebpf_log` asked for them, so they are logged as they come (at info,
/// whatever level the program gave them), tagged `ebpf`.
pub struct EbpfEvents;

impl log::Log for EbpfEvents {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::info!(target: "ebpf", "{}", record.args());
    }

    fn flush(&self) {}
}
