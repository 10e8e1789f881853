//! The command line. Completions and the man page are generated from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/mvbridge/mvbridge.toml";

/// The man page's section: mvbridge is run by root to manage the host.
pub const MAN_SECTION: &str = "8";

/// Lets a KVM host talk to its own macvtap-attached VMs.
#[derive(Debug, Parser)]
#[command(name = "mvbridge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up the datapath and keep it in line with the config and the
    /// links until SIGINT/SIGTERM (SIGHUP reloads the config).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// On exit, leave the datapath in place (for restarts without a
        /// gap; `mvbridge down` removes it).
        #[arg(long)]
        keep: bool,
    },
    /// Remove everything mvbridge set up (also after a crash).
    Down {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show hooks, VMs and counters; exits 0 only while the datapath is
    /// attached.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Check the config and ask the running daemon to apply it.
    Reload {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Report kernel features, the uplink, conflicting settings and what
    /// `run` would change, without changing anything.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Exit 0 if the config names an uplink, 1 if not: the service's start
    /// condition.
    ///
    /// The shipped example names no uplink, so the service it enables stays
    /// off (skipped, not failed) until the admin sets one. Nothing else is
    /// checked: once an uplink is named, `run` reports any other mistake.
    Configured {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff, section 8: system administration).
    Man {
        /// Write it and one page per subcommand (mvbridge-run.8, ...) into
        /// this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}
