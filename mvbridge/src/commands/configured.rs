//! `mvbridge configured`: whether the config names an uplink, the
//! service's start condition (`ExecCondition=` in the unit).
//!
//! The package enables the service on install but ships an example config
//! that names no uplink: until the admin sets one, a start is skipped
//! quietly (exit 1). Once `uplink` is set, every start goes on to `run`,
//! even if the rest of the file is broken: `run` then fails and
//! `systemctl status mvbridge` shows why. So the only question asked here
//! is "did the admin name an uplink", answered leniently: a file TOML
//! cannot read still counts if one of its lines assigns `uplink`, and so
//! does an `uplink` in the wrong table.

use std::path::Path;
use std::process::ExitCode;

/// What `configured` makes of a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The file sets `uplink` (the rest may still be wrong: `run` says).
    Configured,
    /// It sets none: the shipped example, not edited yet.
    NoUplink,
    /// There is no file at all.
    Missing,
}

impl Verdict {
    /// The exit status: 0 lets systemd go on to `ExecStart=`; 1 (any of
    /// 1-254) makes it skip the start without marking the unit failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Configured => 0,
            Verdict::NoUplink | Verdict::Missing => 1,
        }
    }
}

/// The verdict on a config's text.
pub fn decide(text: &str) -> Verdict {
    let set = match toml::from_str::<toml::Table>(text) {
        Ok(table) => names_uplink(&table),
        // Not TOML: look for the assignment line by line.
        Err(_) => text.lines().any(assigns_uplink),
    };
    if set {
        Verdict::Configured
    } else {
        Verdict::NoUplink
    }
}

/// The verdict on the file at `path`. A file that exists but cannot be
/// read counts as configured: `run` reports the error where the admin
/// looks for it.
pub fn examine(path: &Path) -> Verdict {
    match std::fs::read(path) {
        Ok(bytes) => decide(&String::from_utf8_lossy(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Verdict::Missing,
        Err(_) => Verdict::Configured,
    }
}

/// `mvbridge configured --config FILE`: silent when configured; otherwise
/// one line for the journal (and `systemctl status`) saying why the
/// service does not start.
pub fn command(path: &Path) -> ExitCode {
    let verdict = examine(path);
    match verdict {
        Verdict::Configured => {}
        Verdict::NoUplink => eprintln!(
            "mvbridge: {} names no uplink yet, so mvbridge does not start; \
             set `uplink` (the file's comments explain), then `systemctl start mvbridge`",
            path.display()
        ),
        Verdict::Missing => eprintln!(
            "mvbridge: {} does not exist, so mvbridge does not start",
            path.display()
        ),
    }
    ExitCode::from(verdict.exit_code())
}

/// An `uplink` key at the top, where it belongs, or in any table (a
/// misplaced one is a mistake `run` explains).
fn names_uplink(table: &toml::Table) -> bool {
    table
        .iter()
        .any(|(key, value)| key == "uplink" || in_value(value))
}

fn in_value(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(t) => names_uplink(t),
        toml::Value::Array(items) => items.iter().any(in_value),
        _ => false,
    }
}

/// A line such as `uplink = "enp9s0"` (also with the key quoted, or a
/// value TOML would reject); not a comment.
fn assigns_uplink(line: &str) -> bool {
    let line = line.trim_start();
    if line.starts_with('#') {
        return false;
    }
    let Some((key, _)) = line.split_once('=') else {
        return false;
    };
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(key);
    key == "uplink"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The example the package installs as /etc/mvbridge/mvbridge.toml.
    const SHIPPED: &str = include_str!("../../../dist/mvbridge.toml");

    /// The shipped example with every commented-out setting switched on:
    /// settings are commented with `#` right before the key or table
    /// (`#uplink = ...`, `#[[vm]]`), prose with `# `.
    fn everything_on(example: &str) -> String {
        example
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_shipped_example_does_not_start_the_service() {
        assert_eq!(decide(SHIPPED), Verdict::NoUplink);
        assert_eq!(Verdict::NoUplink.exit_code(), 1);
        // It is valid TOML that names no uplink, nothing else.
        toml::from_str::<toml::Table>(SHIPPED).expect("the example is TOML");
    }

    #[test]
    fn every_setting_in_the_shipped_example_is_valid() {
        let all = everything_on(SHIPPED);
        assert_eq!(decide(&all), Verdict::Configured);
        let config = Config::parse(&all).unwrap_or_else(|e| panic!("{e:?}\n{all}"));
        assert_eq!(config.uplink, "enp9s0");
        assert!(config.vms.len() >= 3, "{config:?}");
        assert!(config.vms.iter().any(|v| v.create));
        assert!(config.vms.iter().any(|v| v.netns.is_some()));
        assert!(config.vms.iter().any(|v| !v.learn.is_empty()));
        assert!(config.metrics_listen.is_some() && config.shim.mac.is_some());
    }

    #[test]
    fn naming_the_uplink_alone_starts_it() {
        let edited = SHIPPED.replacen("\n#uplink = ", "\nuplink = ", 1);
        assert_ne!(edited, SHIPPED, "the example has a #uplink line");
        assert_eq!(decide(&edited), Verdict::Configured);
        assert_eq!(Verdict::Configured.exit_code(), 0);
        Config::parse(&edited).unwrap();
    }

    #[test]
    fn an_uplink_counts_even_when_the_rest_is_broken() {
        for text in [
            // TOML cannot read these at all.
            "uplink = \"enp9s0\"\n[[vm]\nname = \"a\"\n",
            "uplink = enp9s0\n",
            "  \"uplink\" = \"enp9s0\"\nresync_seconds = = 5\n",
            "'uplink'='eth0'\n[shim\n",
            // TOML reads these; `run` rejects them.
            "uplink = \"\"\n",
            "uplink = \"enp9s0\"\nbogus = 1\n",
            "uplink = 7\n",
            // In the wrong table.
            "[shim]\nuplink = \"enp9s0\"\n",
            "[[vm]]\nname = \"a\"\nuplink = \"enp9s0\"\n",
        ] {
            assert_eq!(decide(text), Verdict::Configured, "{text:?}");
        }
    }

    #[test]
    fn no_uplink_means_not_configured() {
        for text in [
            "",
            "\n\n",
            "# only comments\n#uplink = \"enp9s0\"\n",
            "   # uplink = \"enp9s0\"\n",
            "bpffs = \"/sys/fs/bpf/mvbridge\"\n",
            "[[vm]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\naddresses = [\"203.0.113.1\"]\n",
            // The word in a value or a comment is not the key.
            "pidfile = \"/run/uplink = x\"\n",
            "[[vm]]\nname = \"uplink\"\n",
            "uplinks = \"x\"\n",
            // Broken, and no uplink anywhere.
            "[[vm]\nname = \"a\"\n",
            "#uplink = \"enp9s0\"\n[shim\n",
        ] {
            assert_eq!(decide(text), Verdict::NoUplink, "{text:?}");
        }
    }

    #[test]
    fn files_that_are_missing_or_unreadable() {
        let dir = std::env::temp_dir().join(format!("mvbridge-configured-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(examine(&dir.join("absent.toml")), Verdict::Missing);
        assert_eq!(Verdict::Missing.exit_code(), 1);
        // A directory cannot be read as a file: `run` says so.
        assert_eq!(examine(&dir), Verdict::Configured);
        let file = dir.join("mvbridge.toml");
        std::fs::write(&file, b"uplink = \"eth0\"\n\xff\xfe\n").unwrap();
        assert_eq!(examine(&file), Verdict::Configured);
        std::fs::write(&file, SHIPPED).unwrap();
        assert_eq!(examine(&file), Verdict::NoUplink);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
