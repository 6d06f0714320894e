//! The command line: parses arguments, builds configuration, calls the library.
//!
//! Exit codes: 0 success, 1 runtime failure (including a run that finished with failed items),
//! 2 usage or configuration error. Data goes to stdout, messages and progress to stderr.

mod check;
mod ews;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// taskbridge keeps project assignments and Exchange mailbox tasks in step.
#[derive(Debug, Parser)]
#[command(name = "taskbridge", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TASKBRIDGE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `taskbridge=debug`.
    #[arg(long, global = true, default_value = "info", env = "TASKBRIDGE_LOG")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with raw EWS messages.
    #[command(subcommand)]
    Ews(ews::EwsCommand),
    /// Test EWS settings against the server: reachability, certificate, credentials, server
    /// version, and the Tasks folder and impersonation of --mailbox. Each failure has its own
    /// exit code (see --help).
    Check(Box<check::CheckArgs>),
    /// Run an Exchange-like EWS server (mailboxes with Tasks folders) for tests and demos.
    Sim(Box<sim::SimArgs>),
}

/// An error that maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.log_format, &cli.log)?;
    match cli.command {
        Command::Ews(cmd) => ews::run(cmd),
        Command::Check(args) => check::run(*args),
        Command::Sim(args) => sim::run(*args),
    }
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| CliError::Usage(format!("invalid --log filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests that call `run` twice) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// Maps an error to its exit code and prints it once.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    if err.downcast_ref::<CliError>().is_some() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// A closed stdout (`| head`) is not a failure.
pub(crate) fn ignore_broken_pipe(err: std::io::Error) -> std::io::Result<()> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(err)
    }
}
