//! The eBPF object: its programs, loaded with their maps pinned (fresh,
//! or the pinned ones an earlier run left, contents and all).

use std::path::Path;

use aya::maps::MapData;
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use mvbridge_common::abi::{self, PROG_SHIM, PROG_SHIM_IN, PROG_UPLINK, PROG_VM};

use crate::error::{Error, Result};

/// The programs, built by build.rs from `mvbridge-ebpf` and embedded.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mvbridge-ebpf"));

/// Which of our programs a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The role's name in pin names and status.
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

/// aya-log's `Level::Debug` (levels count up from Error = 1); a value at
/// or above it enables debug events.
const LOG_LEVEL_DEBUG: u8 = 4;

/// The loaded object. Dropping it closes the program fds; hooks stay
/// attached through their pins.
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the object with its maps pinned (by name) in `maps_dir`,
    /// reusing maps pinned there, contents and all; the caller has checked
    /// their layout. `ebpf_log`: let the programs' debug events through
    /// (the verifier prunes them otherwise).
    pub fn load(maps_dir: &Path, ebpf_log: bool) -> Result<Datapath> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        let level: u8 = if ebpf_log { LOG_LEVEL_DEBUG } else { 0 };
        let loading = "the kernel refused to load mvbridge's BPF programs";
        let t0 = std::time::Instant::now();
        // No kernel BTF: the programs use no CO-RE relocations, and parsing
        // /sys/kernel/btf/vmlinux would cost most of the start-up time and
        // memory.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .default_map_pin_directory(maps_dir)
            .override_global(aya_log::LEVEL, &level, true)
            .load(OBJECT)
            .map_err(|e| Error::bpf(loading, e))?;
        tracing::debug!(object_us = t0.elapsed().as_micros() as u64, "object loaded");
        // The verifier checks each program on its own; privileged loads run
        // concurrently in the kernel, so the slowest program sets the time.
        let mut ours: Vec<(Role, &mut SchedClassifier)> = Vec::new();
        for (name, prog) in ebpf.programs_mut() {
            if let Some(role) = Role::ALL.into_iter().find(|r| r.program() == name) {
                let prog: &mut SchedClassifier = prog
                    .try_into()
                    .map_err(|e| Error::bpf(format!("{name} is not a TC program"), e))?;
                ours.push((role, prog));
            }
        }
        if let Some(role) = Role::ALL
            .into_iter()
            .find(|r| !ours.iter().any(|(have, _)| have == r))
        {
            return Err(Error::NoProgram {
                name: role.program().to_owned(),
            });
        }
        std::thread::scope(|scope| {
            let loads: Vec<_> = ours
                .into_iter()
                .map(|(role, prog)| {
                    scope.spawn(move || {
                        let t = std::time::Instant::now();
                        let loaded = prog
                            .load()
                            .map_err(|e| Error::bpf(format!("{loading}: {}", role.program()), e));
                        tracing::debug!(
                            program = role.program(),
                            load_us = t.elapsed().as_micros() as u64,
                            "loaded"
                        );
                        loaded
                    })
                })
                .collect();
            loads
                .into_iter()
                .map(|l| l.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(Datapath { ebpf })
    }

    /// A loaded program (not necessarily attached), e.g. for test runs.
    pub fn program(&mut self, role: Role) -> Result<&mut SchedClassifier> {
        program(&mut self.ebpf, role.program())
    }

    /// The do-nothing program the benchmark measures as its baseline,
    /// loaded on first use.
    pub fn baseline(&mut self) -> Result<&mut SchedClassifier> {
        self.standalone("mvb_empty")
    }

    /// The program that accepts every frame, which tests hang on a link as
    /// somebody else's; loaded on first use.
    pub fn accept_all(&mut self) -> Result<&mut SchedClassifier> {
        self.standalone("mvb_accept")
    }

    fn standalone(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        let prog = program(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
        }
        Ok(prog)
    }

    /// The kernel's id of `role`'s program (as hook queries report it).
    pub fn program_id(&mut self, role: Role) -> Result<u32> {
        let info = self
            .program(role)?
            .info()
            .map_err(|e| Error::bpf(format!("reading the id of {}", role.program()), e))?;
        Ok(info.id())
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
            .take_map(abi::LEARN.name)
            .and_then(|m| aya::maps::RingBuf::try_from(m).ok())
    }
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut SchedClassifier> {
    let missing = || Error::NoProgram {
        name: name.to_owned(),
    };
    ebpf.program_mut(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|e| Error::bpf(format!("program {name}"), e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The object's maps are the ABI table's, row for row: what the loader
    /// checks pinned maps against is what the programs were built with.
    #[test]
    fn the_object_declares_the_abi_table() {
        if OBJECT.is_empty() {
            panic!("built without the eBPF object (AYA_BUILD_SKIP): nothing to compare");
        }
        let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        let mut seen: Vec<&str> = Vec::new();
        for (name, map) in &obj.maps {
            if name.starts_with('.') || name.starts_with("AYA_LOG") {
                continue;
            }
            let spec = abi::PROGRAM_MAPS
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("map {name} is not in the ABI table"));
            assert_eq!(map.map_type(), spec.kind as u32, "{name}: kind");
            assert_eq!(map.key_size(), spec.key_size, "{name}: key size");
            assert_eq!(map.value_size(), spec.value_size, "{name}: value size");
            assert_eq!(map.max_entries(), spec.max_entries, "{name}: capacity");
            seen.push(name);
        }
        for spec in abi::PROGRAM_MAPS {
            assert!(
                seen.contains(&spec.name),
                "{} is not in the object",
                spec.name
            );
        }
        for role in Role::ALL {
            assert!(
                obj.programs.contains_key(role.program()),
                "program {} missing",
                role.program()
            );
        }
    }
}
