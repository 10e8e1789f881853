//! A snapshot of what the host namespace holds that mvbridge could have
//! touched: links, qdiscs, TC/TCX programs, pins and loaded programs.
//! Two snapshots compare equal when nothing was left behind or changed.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;
use aya::programs::{SchedClassifier, TcAttachType};

use crate::netns::Netns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// `name kind alias` of every link.
    pub links: BTreeSet<String>,
    /// `tc qdisc show` lines.
    pub qdiscs: BTreeSet<String>,
    /// `ifname ingress|egress program` for every TCX attachment.
    pub tcx: BTreeSet<String>,
    /// Entries in the pin directory.
    pub pins: BTreeSet<String>,
    /// Loaded BPF programs named like ours, machine-wide.
    pub programs: BTreeSet<String>,
}

impl HostState {
    pub fn capture(host: &Netns, pin_dir: &Path) -> Result<HostState> {
        let mut links = BTreeSet::new();
        let detail = host.ip(&["-d", "-o", "link", "show"])?;
        let mut names = Vec::new();
        for line in detail.lines() {
            let mut parts = line.split(": ");
            let _ = parts.next();
            let name = parts
                .next()
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap_or("")
                .to_owned();
            let kind = ["macvtap", "macvlan", "veth", "bridge"]
                .iter()
                .find(|k| line.contains(&format!(" {k} ")))
                .copied()
                .unwrap_or("other");
            let alias = line
                .split("alias ")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or(""))
                .unwrap_or("");
            links.insert(format!("{name} {kind} {alias}").trim().to_owned());
            names.push(name);
        }
        let qdiscs = host
            .run(&["tc", "qdisc", "show"])?
            .lines()
            .filter(|l| !l.contains("noqueue") && !l.contains("qdisc noop"))
            .map(str::to_owned)
            .collect();
        let tcx = host.in_ns(move || {
            let mut out = BTreeSet::new();
            for name in names {
                for (dir, t) in [
                    ("ingress", TcAttachType::Ingress),
                    ("egress", TcAttachType::Egress),
                ] {
                    if let Ok((_, progs)) = SchedClassifier::query_tcx(&name, t) {
                        for p in progs {
                            out.insert(format!("{name} {dir} {}", p.name_as_str().unwrap_or("?")));
                        }
                    }
                }
            }
            out
        })?;
        let pins = match std::fs::read_dir(pin_dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "maps.debug" && n != "progs.debug")
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        Ok(HostState {
            links,
            qdiscs,
            tcx,
            pins,
            programs: our_programs(),
        })
    }
}

/// Loaded programs with mvbridge's names. Freeing a program after its last
/// reference goes is deferred (RCU), so callers poll.
pub fn our_programs() -> BTreeSet<String> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("mvb_"))
        .collect()
}

/// Waits up to two seconds for the kernel to free programs nobody holds.
pub fn wait_programs_gone() -> BTreeSet<String> {
    for _ in 0..40 {
        let left = our_programs();
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    our_programs()
}
