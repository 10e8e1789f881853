//! The daemon's side of libvirt: the domains it knows, by UUID, as
//! libvirt last showed them; whether libvirt answers; which of their VMs
//! are steered. Written down after every change ([`State`]): `status`
//! reads it when libvirt does not answer, and the next daemon starts
//! from it, so neither a restart nor a libvirtd that is down drops a VM.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::{Config, Libvirt};
use crate::control::problem_log::ProblemLog;
use crate::error::Result;

use super::declare::{self, Declaration};
use super::state::{self, State};
use super::watch::{self, Update};
use super::{Snapshot, parse_all};

pub struct Follower {
    settings: Libvirt,
    updates: UnboundedReceiver<Update>,
    domains: BTreeMap<String, Snapshot>,
    reachable: bool,
    /// When `reachable` last changed.
    since: u64,
    error: Option<String>,
    steered: BTreeSet<String>,
    /// Warnings already logged, so each is logged once.
    reported: ProblemLog,
}

impl Follower {
    /// Starts following libvirt, from the record the last daemon left.
    /// Fails when libvirt cannot be loaded (not installed).
    pub fn start(settings: &Libvirt) -> Result<Follower> {
        let record = State::load(&settings.state_file).unwrap_or_else(|e| {
            tracing::warn!("ignoring the libvirt record: {}", crate::errno::chain(&e));
            None
        });
        let updates = watch::spawn(&settings.uri)?;
        let mut f = Follower {
            settings: settings.clone(),
            updates,
            domains: BTreeMap::new(),
            reachable: false,
            since: state::now(),
            error: Some("not connected yet".into()),
            steered: BTreeSet::new(),
            reported: ProblemLog::default(),
        };
        if let Some(r) = record.filter(|r| r.uri == settings.uri) {
            tracing::info!(
                domains = r.domains.len(),
                "starting from the libvirt domains the last run knew ({})",
                settings.state_file.display()
            );
            f.domains = r.domains.into_iter().map(|d| (d.uuid.clone(), d)).collect();
            f.steered = r.steered.into_iter().collect();
        }
        Ok(f)
    }

    /// The next word from libvirt's thread (which never stops while
    /// the daemon listens).
    pub async fn next(&mut self) -> Update {
        match self.updates.recv().await {
            Some(u) => u,
            None => std::future::pending().await,
        }
    }

    /// Takes in what libvirt said, logging what changed.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::All(all) => {
                if !self.reachable {
                    tracing::info!(uri = %self.settings.uri, domains = all.len(), "libvirt connected");
                    self.reachable = true;
                    self.since = state::now();
                    self.error = None;
                }
                self.domains = all.into_iter().map(|d| (d.uuid.clone(), d)).collect();
            }
            Update::Changed(changes) => {
                for (uuid, now) in changes {
                    let name = |s: &Snapshot| {
                        parse_all(std::slice::from_ref(s))
                            .0
                            .pop()
                            .map(|d| d.name)
                            .unwrap_or_else(|| uuid.clone())
                    };
                    match now {
                        Some(s) => {
                            tracing::info!(domain = %name(&s), running = s.active, "libvirt domain changed");
                            self.domains.insert(uuid.clone(), s);
                        }
                        None => {
                            if let Some(old) = self.domains.remove(&uuid) {
                                tracing::info!(domain = %name(&old), "libvirt domain undefined");
                            }
                        }
                    }
                }
            }
            Update::Lost(why) => {
                if self.reachable {
                    tracing::warn!(
                        uri = %self.settings.uri,
                        "libvirt unreachable ({why}); keeping the {} VMs it declared, reconnecting",
                        self.steered.len()
                    );
                    self.reachable = false;
                    self.since = state::now();
                } else if self.error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(uri = %self.settings.uri, "libvirt still unreachable: {why}");
                }
                self.error = Some(why);
            }
        }
    }

    /// The VMs libvirt declares now; each warning is logged once, and a
    /// warning that went away is said to be resolved.
    pub fn declare(&mut self, config: &Config, host: &[IpAddr]) -> Declaration {
        let snapshots: Vec<Snapshot> = self.domains.values().cloned().collect();
        let (domains, mut problems) = parse_all(&snapshots);
        let mut decl = declare::declare(config, host, &domains, &self.steered);
        problems.extend(decl.warnings.iter().cloned());
        self.reported.update(&problems);
        decl.warnings = problems;
        decl
    }

    /// Records which VMs are steered now and writes the record down.
    pub fn settle(&mut self, steered: &Declaration) {
        self.steered = steered.vms.iter().map(|v| v.name.clone()).collect();
        let record = State {
            uri: self.settings.uri.clone(),
            reachable: self.reachable,
            since: self.since,
            error: self.error.clone(),
            steered: self.steered.iter().cloned().collect(),
            domains: self.domains.values().cloned().collect(),
        };
        if let Err(e) = record.save(&self.settings.state_file) {
            tracing::warn!("{}", crate::errno::chain(&e));
        }
    }
}
