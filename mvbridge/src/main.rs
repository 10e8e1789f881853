//! mvbridge: lets a KVM host talk to its own macvtap-attached VMs.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use mvbridge::commands::cli::{Cli, Command};
use mvbridge::commands::{check, configured, status};
use mvbridge::control::daemon;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mvbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mvbridge: error: {e:#}");
            exit_code(&e)
        }
    }
}

/// sysexits' EX_CONFIG: the config cannot be read or is wrong. Trying
/// again will not help until somebody edits it, so the unit does not
/// restart on it (`RestartPreventExitStatus=`): it stays failed, with the
/// error in `systemctl status`.
pub const EXIT_CONFIG: u8 = 78;

fn exit_code(e: &anyhow::Error) -> ExitCode {
    let config = e
        .chain()
        .any(|c| c.downcast_ref::<mvbridge::config::ConfigError>().is_some());
    if config {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// Logs go to stderr. Under systemd (JOURNAL_STREAM set) the journal adds
/// timestamps itself, so lines carry none, and no colours anywhere but a
/// terminal.
fn init_logging() {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = EnvFilter::try_from_env("MVBRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour);
    if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config, keep } => daemon::run(&config, keep).await,
        Command::Down { config } => daemon::down(&config).await,
        Command::Status { config, json } => status::status(&config, json).await,
        Command::Reload { config } => daemon::request_reload(&config).await,
        Command::Check { config } => check::check(&config).await,
        Command::Configured { config } => Ok(configured::command(&config)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mvbridge",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            // No `help` subcommand: it would get a page of its own.
            let cli = Cli::command().disable_help_subcommand(true);
            match out_dir {
                None => man_page(cli).render(&mut std::io::stdout())?,
                Some(dir) => {
                    for page in write_man_pages(cli, &dir)? {
                        println!("{}", page.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The man page of the CLI or of one of its subcommands, in section 8.
fn man_page(cmd: clap::Command) -> clap_mangen::Man {
    let source = format!("mvbridge {}", env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd)
        .section(mvbridge::commands::cli::MAN_SECTION)
        .source(source)
}

/// mvbridge.8 and a page per subcommand (mvbridge-run.8, ...), which the
/// first one refers to, into `dir`: clap_mangen::generate_to, in section 8.
fn write_man_pages(
    mut cmd: clap::Command,
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    cmd.build();
    std::fs::create_dir_all(dir)?;
    let mut pages = Vec::new();
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        pages.push(man_page(cmd).generate_to(dir)?);
    }
    Ok(pages)
}
