//! The command line. Completions and the man page are generated from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/mvbridge/mvbridge.toml";

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
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}
