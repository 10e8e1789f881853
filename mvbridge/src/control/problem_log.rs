//! Problems said once: a pass that finds the same problem again logs
//! nothing, and one that no longer finds it says it is resolved.

use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct ProblemLog {
    reported: HashSet<String>,
}

impl ProblemLog {
    /// Logs what in `problems` is new, and what went away as resolved.
    pub fn update<'a>(&mut self, problems: impl IntoIterator<Item = &'a String>) {
        let now: HashSet<String> = problems.into_iter().cloned().collect();
        for p in now.difference(&self.reported) {
            tracing::warn!("{p}");
        }
        for p in self.reported.difference(&now) {
            tracing::info!("resolved: {p}");
        }
        self.reported = now;
    }
}
