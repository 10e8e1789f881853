//! A snapshot of what the host namespace holds that mvbridge could have
//! touched: links, qdiscs, TC/TCX programs, pins and loaded programs.
//! Two snapshots compare equal when nothing was left behind or changed.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};

use crate::netns::Netns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// `name kind alias` of every link.
    pub links: BTreeSet<String>,
    /// `tc qdisc show` lines.
    pub qdiscs: BTreeSet<String>,
    /// `ifname ingress|egress program` for every BPF hook: TCX programs
    /// and classic TC filters alike.
    pub hooks: BTreeSet<String>,
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
        let hooks = hook_programs(host)?
            .into_iter()
            .map(|(link, side, prog)| format!("{link} {side} {prog}"))
            .collect();
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
            hooks,
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

/// What a guest must never be able to change on the host: its routes,
/// addresses, and the MAC each neighbour resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingState {
    /// `ip route show table all` lines, both families, minus the timers
    /// the kernel counts down.
    pub routes: BTreeSet<String>,
    /// `address mac` of every resolved neighbour.
    pub neighbours: BTreeSet<String>,
    /// `ip -br addr` lines.
    pub addresses: BTreeSet<String>,
}

impl RoutingState {
    pub fn capture(host: &Netns) -> Result<RoutingState> {
        let mut routes = BTreeSet::new();
        for family in ["-4", "-6"] {
            for line in host.ip(&[family, "route", "show", "table", "all"])?.lines() {
                let kept: Vec<&str> = line.split_whitespace().collect();
                let mut clean = Vec::new();
                let mut skip = false;
                for w in kept {
                    if skip {
                        skip = false;
                        continue;
                    }
                    if w == "expires" {
                        skip = true;
                        continue;
                    }
                    clean.push(w);
                }
                routes.insert(clean.join(" "));
            }
        }
        let mut neighbours = BTreeSet::new();
        for family in ["-4", "-6"] {
            for line in host.ip(&[family, "neigh", "show"])?.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "lladdr") {
                    let dev = words
                        .iter()
                        .position(|w| *w == "dev")
                        .and_then(|d| words.get(d + 1))
                        .unwrap_or(&"?");
                    neighbours.insert(format!(
                        "{} {} {}",
                        words[0],
                        dev,
                        words.get(i + 1).unwrap_or(&"?")
                    ));
                }
            }
        }
        let addresses = host
            .ip(&["-br", "addr", "show"])?
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        Ok(RoutingState {
            routes,
            neighbours,
            addresses,
        })
    }

    /// The MAC `addr` resolves to on the host, if it is resolved.
    pub fn neighbour(&self, addr: &str) -> Option<String> {
        self.neighbours
            .iter()
            .find(|n| n.split_whitespace().next() == Some(addr))
            .and_then(|n| n.split_whitespace().nth(2))
            .map(str::to_owned)
    }
}

/// Every BPF program hooked to a link of `ns` as (link, side, program),
/// TCX programs and classic TC filters alike, duplicates kept: a restart
/// that attached twice shows here.
pub fn hook_programs(ns: &Netns) -> Result<Vec<(String, &'static str, String)>> {
    let names: Vec<String> = ns
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    let mut out = Vec::new();
    for name in &names {
        for side in ["ingress", "egress"] {
            // A link without a clsact qdisc has no filters to show.
            let Ok(shown) = ns.run(&["tc", "filter", "show", "dev", name, side]) else {
                continue;
            };
            for line in shown.lines().filter(|l| l.contains(" bpf ")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(at) = words.iter().position(|w| *w == "handle")
                    && let Some(prog) = words.get(at + 2)
                {
                    out.push((name.clone(), side, (*prog).to_owned()));
                }
            }
        }
    }
    let tcx = ns.in_ns(move || {
        let mut found = Vec::new();
        for name in names {
            for (side, t) in [
                ("ingress", TcAttachType::Ingress),
                ("egress", TcAttachType::Egress),
            ] {
                if let Ok((_, progs)) = SchedClassifier::query_tcx(&name, t) {
                    for p in progs {
                        found.push((
                            name.clone(),
                            side,
                            p.name_as_str().unwrap_or("?").to_owned(),
                        ));
                    }
                }
            }
        }
        found
    })?;
    out.extend(tcx);
    Ok(out)
}

/// Takes one of mvbridge's hooks away behind its back, as an admin or a
/// container's root could: unpins its TCX link, or deletes its classic
/// filter.
pub fn detach_behind_its_back(ns: &Netns, pin: &Path, ifname: &str, side: &str) -> Result<()> {
    if pin.exists() {
        std::fs::remove_file(pin)?;
    } else {
        ns.run(&[
            "tc", "filter", "del", "dev", ifname, side, "pref", "1", "handle", "0x4d56", "bpf",
        ])?;
    }
    Ok(())
}

/// Detaches a TCX link of mvbridge's as `bpftool link detach` does
/// (`BPF_LINK_DETACH`), leaving its pin in place: the link stays, defunct.
pub fn detach_tcx_link_keeping_its_pin(pin: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = mvbridge::datapath::hooks::tcx::open_pin(pin)
        .with_context(|| format!("opening {}", pin.display()))?;
    let mut detach = [fd.as_raw_fd() as u32, 0u32];
    // SAFETY: BPF_LINK_DETACH (34) on the link fd just opened (the fd
    // closes when dropped).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 34, detach.as_mut_ptr(), 8usize) };
    anyhow::ensure!(
        rc == 0,
        "detaching {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// One of our programs per hooked link and side, never two.
pub fn one_program_per_hook(host: &Netns) -> Result<()> {
    let all = hook_programs(host)?;
    let ours: Vec<_> = all
        .iter()
        .filter(|(_, _, p)| p.starts_with("mvb_"))
        .collect();
    for (i, a) in ours.iter().enumerate() {
        if ours[i + 1..].iter().any(|b| b.0 == a.0 && b.1 == a.1) {
            anyhow::bail!("two of our programs on {} {}: {ours:?}", a.0, a.1);
        }
    }
    Ok(())
}
