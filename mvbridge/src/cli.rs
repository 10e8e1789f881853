//! The command line.

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
    /// Set up the datapath and keep it up until SIGINT/SIGTERM, then remove it.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Remove everything mvbridge set up (also after a crash).
    Down {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show hooks, VMs and counters; exits 0 only while the datapath is attached.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}
