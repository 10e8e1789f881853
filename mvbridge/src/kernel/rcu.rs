//! Expedited RCU grace periods while hooks change. Every TCX attach and
//! detach swaps the link's program list and waits for an RCU grace period
//! (`synchronize_rcu`) with the rtnl lock held: 12-20 ms each, one after
//! the other, so 1,000 hooks took 13 s to attach. With
//! `/sys/kernel/rcu_expedited` set the kernel expedites those waits (tens
//! of microseconds, at the price of an IPI to every busy CPU per grace
//! period). The knob is global, so it is set only around a burst of hook
//! changes and put back right after; a file next to the pidfile records
//! that it is ours to put back, for the next start after a crash.
//!
//! Anything in the way (no such knob, a read-only /sys, another value set
//! by the admin) leaves the knob alone: the hooks attach all the same, at
//! the normal speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

const KNOB: &str = "/sys/kernel/rcu_expedited";

/// The knob as this process holds it.
pub struct Expedite {
    /// It cannot be set here (no knob, read-only): tried once, not again.
    unusable: bool,
    knob: PathBuf,
    marker: PathBuf,
    /// Since when the knob is set by us, if it is.
    held: Option<Instant>,
}

impl Expedite {
    /// The marker goes next to `pidfile`; one a crashed run left behind is
    /// acted on now.
    pub fn new(pidfile: &Path) -> Expedite {
        Expedite::at(Path::new(KNOB), &pidfile.with_extension("rcu_expedited"))
    }

    /// Puts the knob back if a crashed run left it set: first thing at a
    /// start, so a start that fails (a config that does not parse, say,
    /// which the unit does not retry) does not leave it set either.
    pub fn recover(pidfile: &Path) {
        drop(Expedite::new(pidfile));
    }

    fn at(knob: &Path, marker: &Path) -> Expedite {
        let e = Expedite {
            unusable: false,
            knob: knob.to_owned(),
            marker: marker.to_owned(),
            held: None,
        };
        if e.marker.exists() {
            tracing::info!(
                knob = %e.knob.display(),
                "an earlier run stopped with RCU grace periods expedited: putting the knob back"
            );
            e.restore();
        }
        e
    }

    /// Expedites grace periods until [`Expedite::end`] (or drop); a no-op
    /// unless `allowed` (the config's `expedite_rcu`), when held already,
    /// or when someone else set the knob.
    pub fn begin(&mut self, allowed: bool) {
        if !allowed || self.unusable || self.held.is_some() {
            return;
        }
        match std::fs::read_to_string(&self.knob) {
            Ok(v) if v.trim() == "0" => {}
            // Set already (by the admin, or left so on purpose): theirs.
            Ok(_) => return,
            Err(e) => {
                self.give_up(&e);
                return;
            }
        }
        // The marker first: a crash between the two writes must not leave
        // the knob set with nothing saying it is ours.
        if let Err(e) = std::fs::write(&self.marker, "0\n") {
            self.give_up(&format!("{}: {e}", self.marker.display()));
            return;
        }
        match std::fs::write(&self.knob, "1") {
            Ok(()) => self.held = Some(Instant::now()),
            Err(e) => {
                self.give_up(&e);
                let _ = std::fs::remove_file(&self.marker);
            }
        }
    }

    /// Puts the knob back, if this process set it.
    pub fn end(&mut self) {
        if let Some(since) = self.held.take() {
            self.restore();
            tracing::debug!(
                held_us = since.elapsed().as_micros() as u64,
                "RCU grace periods back to normal"
            );
        }
    }

    fn give_up(&mut self, why: &dyn std::fmt::Display) {
        tracing::info!(
            knob = %self.knob.display(),
            "not expediting RCU grace periods ({why}): TCX hooks attach at the normal pace, a grace period each"
        );
        self.unusable = true;
    }

    fn restore(&self) {
        if let Err(e) = std::fs::write(&self.knob, "0") {
            tracing::warn!(knob = %self.knob.display(), "cannot put RCU grace periods back to normal: {e}");
            // The marker stays: the next start tries again.
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.marker) {
            tracing::warn!(marker = %self.marker.display(), "cannot remove: {e}");
        }
    }
}

impl Drop for Expedite {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(knob: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("rcu_expedited");
        std::fs::write(&k, knob).unwrap();
        let m = dir.path().join("mvbridge.rcu_expedited");
        (dir, k, m)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_owned()
    }

    #[test]
    fn set_for_a_burst_and_put_back() {
        let (_d, k, m) = files("0\n");
        let mut e = Expedite::at(&k, &m);
        e.begin(true);
        assert_eq!(read(&k), "1");
        assert!(m.exists(), "no marker while held");
        e.begin(true);
        e.end();
        assert_eq!(read(&k), "0");
        assert!(!m.exists());
        e.begin(true);
        drop(e);
        assert_eq!(read(&k), "0", "dropping must put it back");
    }

    #[test]
    fn a_knob_set_by_someone_else_is_left_alone() {
        let (_d, k, m) = files("1\n");
        let mut e = Expedite::at(&k, &m);
        e.begin(true);
        e.end();
        assert_eq!(read(&k), "1");
        assert!(!m.exists());
    }

    #[test]
    fn disabled_touches_nothing() {
        let (_d, k, m) = files("0\n");
        let mut e = Expedite::at(&k, &m);
        e.begin(false);
        assert_eq!(read(&k), "0");
        assert!(!m.exists());
    }

    #[test]
    fn a_crashed_runs_knob_is_put_back_at_the_next_start() {
        let (_d, k, m) = files("0\n");
        let mut e = Expedite::at(&k, &m);
        e.begin(true);
        std::mem::forget(e);
        assert_eq!(read(&k), "1");
        let next = Expedite::at(&k, &m);
        assert_eq!(read(&k), "0");
        assert!(!m.exists());
        drop(next);
    }

    #[test]
    fn no_knob_means_normal_speed_and_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("marker");
        let mut e = Expedite::at(&dir.path().join("absent"), &m);
        e.begin(true);
        e.end();
        assert!(!m.exists());
    }
}
