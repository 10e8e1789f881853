//! The daemon's record of what libvirt declared: a small JSON file
//! (`[libvirt] state_file`). `status` and `check` read it when libvirt
//! cannot be reached; the daemon reads it when it starts, so a restart
//! (or a libvirt that is down) keeps the libvirt VMs steered.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::Snapshot;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub uri: String,
    /// The daemon's connection to libvirt is up.
    pub reachable: bool,
    /// Since when (Unix seconds) it is up, or down.
    pub since: u64,
    /// Why it is down.
    pub error: Option<String>,
    /// The libvirt VMs the daemon steers: they keep their addresses when
    /// another domain claims them too.
    pub steered: Vec<String>,
    pub domains: Vec<Snapshot>,
}

impl State {
    /// The file at `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::io(
                format!("{} does not parse", path.display()),
                std::io::Error::other(e),
            )
        })
    }

    /// Writes it whole or not at all (a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |e| Error::io(format!("writing {}", path.display()), e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.new");
        let text = serde_json::to_string_pretty(self)
            .map_err(std::io::Error::other)
            .map_err(io)?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as `2026-11-25 19:55:49 UTC`.
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_630_778), "2026-11-25 18:19:38 UTC");
    }

    #[test]
    fn saved_and_loaded() {
        let dir = std::env::temp_dir().join(format!("mvbridge-lvstate-{}", std::process::id()));
        let path = dir.join("sub/libvirt.json");
        assert_eq!(State::load(&path).unwrap(), None);
        let state = State {
            uri: "qemu:///system".into(),
            reachable: false,
            since: 1_795_630_778,
            error: Some("connection refused".into()),
            steered: vec!["vm1".into()],
            domains: vec![Snapshot {
                uuid: "u".into(),
                active: true,
                xml: "<domain/>".into(),
            }],
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state));
        std::fs::write(&path, "{").unwrap();
        let e = State::load(&path).unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
