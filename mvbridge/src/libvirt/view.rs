//! What `status` and `check` know of libvirt: they run in a process of
//! their own and never ask the daemon, so they read libvirt themselves
//! (read-only) or, when it cannot be reached, the daemon's state file:
//! the VMs the daemon keeps.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{Config, Libvirt};

use super::declare::{self, Declaration};
use super::ffi::Connection;
use super::state::{self, State};
use super::{Snapshot, parse_all};

/// Where the domains came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// libvirt answered.
    Libvirt,
    /// libvirt did not; the daemon's record.
    StateFile,
    /// Neither.
    Nothing,
}

#[derive(Clone, Debug, Serialize)]
pub struct View {
    pub uri: String,
    pub source: Source,
    pub reachable: bool,
    /// Unreachable since (as the daemon saw it, if it did).
    pub unreachable_since: Option<String>,
    /// Why libvirt (or the state file) could not be read.
    pub error: Option<String>,
    pub domains: usize,
    /// The VMs libvirt declares, by name, and what was left out.
    #[serde(skip)]
    pub declaration: Declaration,
    pub warnings: Vec<String>,
}

impl View {
    /// `config` with the libvirt VMs added.
    pub fn merged(&self, config: &Config) -> Config {
        self.declaration.merged_into(config)
    }

    /// One line on where libvirt's VMs come from, for people.
    pub fn summary(&self) -> String {
        let n = self.declaration.vms.len();
        match self.source {
            Source::Libvirt => format!(
                "libvirt at {}: {} domains, {n} VMs declared",
                self.uri, self.domains
            ),
            Source::StateFile => format!(
                "libvirt at {} unreachable since {}, keeping {n} VMs (the daemon's record): {}",
                self.uri,
                self.unreachable_since.as_deref().unwrap_or("now"),
                self.error.as_deref().unwrap_or("")
            ),
            Source::Nothing => format!(
                "libvirt at {} unreachable and no record of the daemon's: {}",
                self.uri,
                self.error.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Reads libvirt's domains (or the daemon's record of them) and declares
/// their VMs against `config` and the host's addresses `host`.
pub fn look(config: &Config, settings: &Libvirt, host: &[IpAddr]) -> View {
    let record = State::load(&settings.state_file);
    let live = Connection::open_read_only(&settings.uri).and_then(|c| c.domains());
    let (source, snapshots, error, since, steered): (_, Vec<Snapshot>, _, _, Vec<String>) =
        match live {
            Ok(all) => {
                // The daemon's record still says which VMs it steers.
                let steered = record.ok().flatten().map(|r| r.steered);
                (
                    Source::Libvirt,
                    all,
                    None,
                    None,
                    steered.unwrap_or_default(),
                )
            }
            Err(e) => {
                let why = crate::errno::chain(&e);
                match record {
                    Ok(Some(r)) => (
                        Source::StateFile,
                        r.domains,
                        Some(why),
                        (!r.reachable).then_some(r.since),
                        r.steered,
                    ),
                    Ok(None) => (Source::Nothing, Vec::new(), Some(why), None, Vec::new()),
                    Err(bad) => (
                        Source::Nothing,
                        Vec::new(),
                        Some(format!("{why}; {}", crate::errno::chain(&bad))),
                        None,
                        Vec::new(),
                    ),
                }
            }
        };
    let steered: BTreeSet<String> = steered.into_iter().collect();
    let (domains, mut warnings) = parse_all(&snapshots);
    let declaration = declare::declare(config, host, &domains, &steered);
    warnings.extend(declaration.warnings.iter().cloned());
    View {
        uri: settings.uri.clone(),
        source,
        reachable: source == Source::Libvirt,
        unreachable_since: since.map(state::utc),
        error,
        domains: domains.len(),
        declaration,
        warnings,
    }
}
