//! Somebody else's BPF programs on a lab link (a firewall's TC filter, a
//! CNI's TCX program): what mvbridge must neither remove nor be bypassed
//! by. A program that accepts every frame (which ends the hook's chain:
//! run before mvbridge's, it would keep frames from it) stands in for
//! them; it stays attached while the value lives.

use std::path::Path;

use anyhow::Result;
use aya::programs::TcAttachType;
use aya::programs::tc::{NlOptions, TcAttachOptions, TcHandle};
use mvbridge::datapath::object::Datapath;

use crate::netns::Netns;

pub struct Foreign {
    _datapath: Datapath,
}

/// How the foreign program hangs on the link.
#[derive(Clone, Copy, Debug)]
pub enum Hang {
    /// A classic filter at this priority (on a clsact qdisc that must be
    /// there).
    Filter { priority: u16 },
    /// A TCX program, last in the chain.
    Tcx,
}

impl Foreign {
    /// Attaches a foreign program to `ifname`'s `side` in `ns`; its maps
    /// are pinned under `pins` (a directory of the lab's).
    pub fn attach(
        ns: &Netns,
        pins: &Path,
        ifname: &str,
        side: TcAttachType,
        hang: Hang,
    ) -> Result<Foreign> {
        let pins = mvbridge::datapath::bpffs::PinDir::new(pins);
        mvbridge::datapath::bpffs::ensure(&pins.dir)?;
        std::fs::create_dir_all(pins.maps())?;
        let mut datapath = Datapath::load(&pins.maps(), false)?;
        let prog = datapath.accept_all()?;
        let guard = mvbridge::kernel::netns::InNetns::enter(&ns.name)?;
        let options = match hang {
            Hang::Filter { priority } => TcAttachOptions::Netlink(NlOptions {
                priority,
                handle: TcHandle::new(0, 7),
                classid: None,
            }),
            Hang::Tcx => TcAttachOptions::TcxOrder(aya::programs::LinkOrder::last()),
        };
        prog.attach_with_options(ifname, side, options)?;
        drop(guard);
        Ok(Foreign {
            _datapath: datapath,
        })
    }
}
