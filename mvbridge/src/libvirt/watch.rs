//! Following libvirt: a thread of ours keeps a read-only connection,
//! turns libvirt's event callbacks (which only say "look at this domain
//! again") into fresh looks at the domain, and sends what it saw to the
//! daemon. A look at every domain follows each (re)connection and comes
//! every minute anyway, in case an event was lost. When the connection
//! closes (libvirtd stopped or restarted) it says so, waits, and
//! connects again, backing off up to five seconds.
//!
//! Nothing here ever calls into libvirt from a callback, and nothing of
//! libvirt's waits for mvbridge: a VM starts whatever mvbridge does.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::{Error, Result};

use super::Snapshot;
use super::ffi::{self, Connection, Hint};

/// How long hints are gathered before the domains they name are read:
/// one start sends several events.
const SETTLE: Duration = Duration::from_millis(20);
/// A full look at every domain, however quiet libvirt has been.
const RESYNC: Duration = Duration::from_secs(60);
/// Between attempts to connect: short, since a failed connection to a
/// local socket costs nothing, and at boot the service starts before
/// libvirtd, whose autostarted VMs wait for the first connection.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the daemon hears.
#[derive(Debug)]
pub enum Update {
    /// Connected (again), or the minute's resync: every domain there is.
    All(Vec<Snapshot>),
    /// These domains changed: how each is now (`None`: undefined).
    Changed(Vec<(String, Option<Snapshot>)>),
    /// The connection failed or closed: why. The thread keeps trying.
    Lost(String),
}

/// Starts following libvirt at `uri`. Fails only when libvirt cannot be
/// loaded at all; an unreachable libvirtd is an [`Update::Lost`].
pub fn spawn(uri: &str) -> Result<UnboundedReceiver<Update>> {
    ffi::start_event_loop()?;
    let (tx, rx) = unbounded_channel();
    let uri = uri.to_owned();
    std::thread::Builder::new()
        .name("libvirt-watch".into())
        .spawn(move || follow(&uri, &tx))
        .map_err(|e| Error::io("starting the libvirt thread", e))?;
    Ok(rx)
}

/// Connects, follows, and connects again, until the daemon stops
/// listening.
fn follow(uri: &str, tx: &UnboundedSender<Update>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let (hint_tx, hints) = mpsc::channel();
        let outcome = Connection::open_read_only(uri).and_then(|mut conn| {
            conn.subscribe(&hint_tx)?;
            Ok(conn)
        });
        let lost = match outcome {
            Ok(conn) => match session(&conn, &hints, tx, &mut backoff) {
                Some(why) => why,
                // The daemon is gone.
                None => return,
            },
            Err(e) => crate::errno::chain(&e),
        };
        if tx.send(Update::Lost(lost)).is_err() {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follows one connection; returns why it ended, or `None` when the
/// daemon stopped listening.
fn session(
    conn: &Connection,
    hints: &mpsc::Receiver<Hint>,
    tx: &UnboundedSender<Update>,
    backoff: &mut Duration,
) -> Option<String> {
    let mut next_resync = Instant::now();
    loop {
        if Instant::now() >= next_resync {
            match conn.domains() {
                Ok(all) => tx.send(Update::All(all)).ok()?,
                Err(e) => return Some(crate::errno::chain(&e)),
            }
            // A connection that answered is a good one.
            *backoff = BACKOFF_MIN;
            next_resync = Instant::now() + RESYNC;
        }
        let mut dirty = BTreeSet::new();
        let wait = next_resync.saturating_duration_since(Instant::now());
        match hints.recv_timeout(wait) {
            Ok(Hint::Domain(uuid)) => {
                dirty.insert(uuid);
            }
            Ok(Hint::Closed(why)) => return Some(format!("the connection closed: {why}")),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return Some("libvirt dropped its callbacks".into());
            }
        }
        let settle = Instant::now() + SETTLE;
        while let Some(left) = settle.checked_duration_since(Instant::now()) {
            match hints.recv_timeout(left) {
                Ok(Hint::Domain(uuid)) => {
                    dirty.insert(uuid);
                }
                Ok(Hint::Closed(why)) => {
                    return Some(format!("the connection closed: {why}"));
                }
                Err(_) => break,
            }
        }
        let mut changed = Vec::new();
        for uuid in dirty {
            match conn.domain(&uuid) {
                Ok(now) => changed.push((uuid, now)),
                Err(e) => return Some(crate::errno::chain(&e)),
            }
        }
        tx.send(Update::Changed(changed)).ok()?;
    }
}
