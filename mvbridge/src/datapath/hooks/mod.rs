//! Where mvbridge's programs run: typed hook keys, and attaching,
//! querying, replacing and detaching the hooks themselves, in either of
//! the kernel's two ways. On kernels with TCX (Linux 6.6+, RHEL 9.4+) a
//! hook is a TCX link pinned on bpffs ([`tcx`]); elsewhere it is a classic
//! direct-action BPF filter on the link's clsact qdisc ([`tc`]), recorded
//! in a pinned map. Both outlive the daemon, and both are replaced in
//! place on a restart.

pub mod tc;
pub mod tcx;

use std::fmt;

use aya::programs::{SchedClassifier, TcAttachType};
use serde::Deserialize;

use crate::datapath::bpffs::PinDir;
use crate::datapath::object::{Datapath, Role};
use crate::error::{Error, Result};
use crate::kernel::netlink::{Link, Netlink};

/// A link, in the host's namespace or in a named one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkAt {
    Host(String),
    Netns { netns: String, ifname: String },
}

impl LinkAt {
    pub fn new(netns: Option<&str>, ifname: &str) -> LinkAt {
        match netns {
            Some(ns) => LinkAt::Netns {
                netns: ns.to_owned(),
                ifname: ifname.to_owned(),
            },
            None => LinkAt::Host(ifname.to_owned()),
        }
    }

    pub fn ifname(&self) -> &str {
        match self {
            LinkAt::Host(i) | LinkAt::Netns { ifname: i, .. } => i,
        }
    }

    pub fn netns(&self) -> Option<&str> {
        match self {
            LinkAt::Host(_) => None,
            LinkAt::Netns { netns, .. } => Some(netns),
        }
    }
}

impl fmt::Display for LinkAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAt::Host(i) => f.write_str(i),
            LinkAt::Netns { netns, ifname } => write!(f, "{netns}:{ifname}"),
        }
    }
}

/// One of our hooks: which program, on which link.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookKey {
    pub role: Role,
    pub at: LinkAt,
}

const PIN_PREFIX: &str = "hook_";

impl HookKey {
    /// The pin's file name: `hook_<role>_<ifname>`, or
    /// `hook_<role>_<netns>:<ifname>` for a link in another namespace.
    /// Role names hold no `_` and interface names no `:`, so the name reads
    /// back unambiguously; mvbridge has named its pins so since its first
    /// release.
    pub fn pin_name(&self) -> String {
        format!("{PIN_PREFIX}{}_{}", self.role.name(), self.at)
    }

    pub fn from_pin_name(name: &str) -> Option<HookKey> {
        let (role, at) = name.strip_prefix(PIN_PREFIX)?.split_once('_')?;
        let role = Role::from_name(role)?;
        let at = match at.rsplit_once(':') {
            Some((netns, ifname)) if !netns.is_empty() && !ifname.is_empty() => {
                LinkAt::new(Some(netns), ifname)
            }
            Some(_) => return None,
            None if !at.is_empty() => LinkAt::Host(at.to_owned()),
            None => return None,
        };
        Some(HookKey { role, at })
    }

    /// The side of the link its program runs on.
    pub fn side(&self) -> &'static str {
        match self.role.attach_type() {
            TcAttachType::Ingress => "ingress",
            _ => "egress",
        }
    }
}

impl fmt::Display for HookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.role.program(), self.at)
    }
}

/// How hooks are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (fd based, pinned), Linux 6.6 and later.
    Tcx,
    /// Classic clsact filters in direct-action mode, through netlink.
    Tc,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Tc => "tc",
        }
    }

    /// What this kernel offers: TCX where it answers a TCX query (a kernel
    /// without TCX refuses the query type), classic TC otherwise. A version
    /// number would not do: RHEL 9.4 backports TCX to a 5.14 kernel.
    pub fn probe() -> AttachMode {
        match SchedClassifier::query_tcx("lo", TcAttachType::Ingress) {
            Ok(_) => AttachMode::Tcx,
            Err(_) => AttachMode::Tc,
        }
    }

    /// The mode for `setting` on this kernel.
    pub fn resolve(setting: AttachSetting) -> Result<AttachMode> {
        let kernel = AttachMode::probe();
        match (setting, kernel) {
            (AttachSetting::Auto, m) => Ok(m),
            (AttachSetting::Tc, _) => Ok(AttachMode::Tc),
            (AttachSetting::Tcx, AttachMode::Tcx) => Ok(AttachMode::Tcx),
            (AttachSetting::Tcx, AttachMode::Tc) => Err(Error::Unfit(
                "attach = \"tcx\", but this kernel has no TCX (Linux 6.6 or later); use \"auto\" or \"tc\"".into(),
            )),
        }
    }
}

/// The `attach` setting of the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachSetting {
    /// TCX where the kernel has it, classic TC otherwise.
    #[default]
    Auto,
    Tcx,
    Tc,
}

/// The program a look at a hook is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// This process's own program, by id (the daemon).
    Id(u32),
    /// Any mvbridge's program for the role, by name: what another process
    /// (`status`) can tell.
    Of(Role),
}

impl Program {
    fn is(self, id: Option<u32>, name: Option<&str>) -> bool {
        match self {
            Program::Id(want) => id == Some(want),
            Program::Of(role) => name == Some(role.program()),
        }
    }
}

/// Does `program` run as `key`, attached `mode`'s way: as a TCX link on
/// that side of the link, or as our classic filter there? `on`: the link
/// and a connection into its namespace (without them there is no filter
/// to look for).
pub async fn runs_as(
    mode: AttachMode,
    key: &HookKey,
    on: Option<(&Link, &Netlink)>,
    program: Program,
) -> Result<bool> {
    match (mode, on) {
        (AttachMode::Tcx, _) => Ok(tcx::programs_on(key)?
            .iter()
            .any(|(id, name)| program.is(Some(*id), Some(name)))),
        (AttachMode::Tc, Some((link, nl))) => Ok(tc::ours(key, link, nl)
            .await?
            .is_some_and(|f| program.is(f.prog_id, f.name.as_deref()))),
        (AttachMode::Tc, None) => Ok(false),
    }
}

/// How `program` runs as `key`, whichever way it was attached (`None`:
/// neither way). `on` gives the link and a connection into its namespace,
/// asked for only if a classic filter is to be looked for (a connection
/// per container namespace is costly). A failed look fails the answer
/// only when the other way does not find it either.
pub async fn attached_as<'a>(
    key: &HookKey,
    on: impl FnOnce() -> Option<(&'a Link, &'a Netlink)>,
    program: Program,
) -> Result<Option<AttachMode>> {
    let mut failed = None;
    match runs_as(AttachMode::Tcx, key, None, program).await {
        Ok(true) => return Ok(Some(AttachMode::Tcx)),
        Ok(false) => {}
        Err(e) => failed = Some(e),
    }
    match runs_as(AttachMode::Tc, key, on(), program).await {
        Ok(true) => return Ok(Some(AttachMode::Tc)),
        Ok(false) => {}
        Err(e) => {
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// One of our hooks as the kernel's state shows it, and how it is
/// attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub key: HookKey,
    pub mode: AttachMode,
}

/// Our hooks in the kernel, attached one way.
pub struct Hooks {
    mode: AttachMode,
    pins: PinDir,
    records: tc::Records,
}

impl Hooks {
    /// The hooks under `pins` (the record map must exist: the daemon
    /// creates it with the other loader maps).
    pub fn open(pins: &PinDir, mode: AttachMode) -> Result<Hooks> {
        Ok(Hooks {
            mode,
            pins: pins.clone(),
            records: tc::Records::open(pins)?,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Is the program `prog_id` the one running as `key`, on `link` (whose
    /// namespace `nl` speaks to: classic filters are read through it)? A
    /// TCX hook is looked for on the link, by name, in its namespace; one
    /// this process `verified` on that very link (same namespace, same
    /// ifindex) is checked from our pin alone (still attached to that
    /// ifindex and side, running that program), which enters no namespace.
    /// The pin cannot tell namespaces apart: a container restarted into a
    /// new namespace may reuse the ifindex while its old namespace lingers.
    pub async fn runs(
        &self,
        key: &HookKey,
        link: &Link,
        nl: Option<&Netlink>,
        prog_id: u32,
        verified: bool,
    ) -> Result<bool> {
        match self.mode {
            AttachMode::Tcx if verified => tcx::runs(&self.pins, key, link.index, prog_id),
            _ => {
                runs_as(
                    self.mode,
                    key,
                    nl.map(|nl| (link, nl)),
                    Program::Id(prog_id),
                )
                .await
            }
        }
    }

    /// Does this mode need a connection into a hook's namespace?
    pub fn needs_netlink(&self) -> bool {
        self.mode == AttachMode::Tc
    }

    /// Attaches `prog` as `key` on `link`, replacing in place what runs
    /// there (an older program of ours): no frame meets a missing hook.
    pub async fn attach(
        &mut self,
        key: &HookKey,
        link: &Link,
        nl: Option<&Netlink>,
        prog: &mut SchedClassifier,
    ) -> Result<()> {
        match (self.mode, nl) {
            (AttachMode::Tcx, _) => tcx::attach(&self.pins, key, prog),
            (AttachMode::Tc, Some(nl)) => tc::attach(&mut self.records, key, link, nl, prog).await,
            (AttachMode::Tc, None) => Err(Error::NetnsLost {
                netns: key.at.netns().unwrap_or_default().to_owned(),
            }),
        }
    }

    /// Every hook of ours, however attached.
    pub fn found(&self) -> Vec<Found> {
        let pinned = self.pins.hooks().into_iter().map(|(key, _)| Found {
            key,
            mode: AttachMode::Tcx,
        });
        let recorded = self.records.keys().into_iter().map(|key| Found {
            key,
            mode: AttachMode::Tc,
        });
        pinned.chain(recorded).collect()
    }

    /// Removes a hook of ours (`nl`: a connection into its namespace;
    /// `None` when that namespace is gone, and its links with it). True if
    /// it was still attached.
    pub async fn remove(&mut self, found: &Found, nl: Option<&Netlink>) -> Result<bool> {
        match (found.mode, nl) {
            (AttachMode::Tcx, _) => tcx::detach(&self.pins.hook(&found.key)),
            (AttachMode::Tc, Some(nl)) => tc::detach(&mut self.records, &found.key, nl).await,
            (AttachMode::Tc, None) => {
                self.records.forget(&found.key)?;
                Ok(false)
            }
        }
    }

    /// Swaps `datapath`'s programs into the pinned TCX hooks (classic
    /// filters are replaced by the first pass, which attaches in place).
    pub fn adopt(&self, datapath: &mut Datapath) -> Vec<HookKey> {
        tcx::adopt(&self.pins, datapath)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_read_back() {
        let keys = [
            HookKey {
                role: Role::Uplink,
                at: LinkAt::new(None, "enp9s0"),
            },
            HookKey {
                role: Role::ShimIn,
                at: LinkAt::new(None, "mvb0"),
            },
            HookKey {
                role: Role::Vm,
                at: LinkAt::new(None, "mvt_web"),
            },
            HookKey {
                role: Role::Vm,
                at: LinkAt::new(Some("ctr:1"), "eth0"),
            },
        ];
        for k in keys {
            assert_eq!(
                HookKey::from_pin_name(&k.pin_name()),
                Some(k.clone()),
                "{k}"
            );
        }
        // Names layout 1 wrote.
        assert_eq!(
            HookKey::from_pin_name("hook_vm_mvbt-1-0-vm-x:eth0"),
            Some(HookKey {
                role: Role::Vm,
                at: LinkAt::new(Some("mvbt-1-0-vm-x"), "eth0"),
            })
        );
        for bad in [
            "MVB_LOCAL4",
            "hook_",
            "hook_vm_",
            "hook_bogus_eth0",
            "hook_vm_ns:",
            "hook_vm_:eth0",
        ] {
            assert_eq!(HookKey::from_pin_name(bad), None, "{bad}");
        }
    }
}
