//! The command line: parses arguments, builds configuration, calls the library.
//!
//! Exit codes: 0 success, 1 runtime failure (including a run that finished with failed items),
//! 2 usage or configuration error. Data goes to stdout, messages and progress to stderr.

mod autodiscover;
mod check;
mod config;
mod config_cmd;
mod conflicts;
#[cfg(feature = "sim")]
mod demo;
mod ews;
mod export;
mod import;
mod init;
mod logs;
mod migrate;
mod names;
mod projects;
mod serve;
#[cfg(feature = "sim")]
mod sim;
mod sync;
mod table;
mod updates;
mod users;

use std::path::PathBuf;
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
    /// Log filter: a default level and `target=level` pairs, e.g. `info` or `info,taskbridge=debug`.
    #[arg(long, global = true, default_value = "info", env = "TASKBRIDGE_LOG")]
    pub log: String,
    /// The configuration file [default: ./taskbridge.toml; when that is missing, built-in
    /// defaults for the bundled simulator]. A file named here must exist.
    #[arg(long, global = true, value_name = "FILE", env = "TASKBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory (overrides `data_dir` of the configuration; default
    /// `./taskbridge-data`): the PM store, the state store and the secrets live here.
    #[arg(long, global = true, value_name = "DIR", env = "TASKBRIDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// Run the whole story on embedded defaults, narrated: the simulator, the sample project,
    /// publish, people updating tasks in "Outlook", status updates, values mapped back. Exits 0
    /// only if every step checked out.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// Write a commented starter configuration (./taskbridge.toml) and the data directory
    /// with its secrets; the defaults run against the bundled simulator on this machine.
    Init(init::InitArgs),
    /// Work with raw EWS messages.
    #[command(subcommand)]
    Ews(ews::EwsCommand),
    /// Test EWS settings against the server: reachability, certificate, credentials, server
    /// version, and the Tasks folder and impersonation of --mailbox. Each failure has its own
    /// exit code (see --help).
    Check(Box<check::CheckArgs>),
    /// Import (publish) a project file, MSPDI XML or taskbridge JSON, into the embedded PM
    /// store; re-importing a project updates it in place. Prints the project GUID.
    Import(import::ImportArgs),
    /// Write a project of the embedded PM store, with the progress from the mailboxes rolled up
    /// as Microsoft Project does, as MSPDI (default) or JSON; to stdout or -o FILE.
    Export(export::ExportArgs),
    /// List the projects of the embedded PM store, show one, set its status update policy, or
    /// publish it again.
    Projects(projects::ProjectsArgs),
    /// List task status updates of the embedded PM store, or approve or reject one.
    Updates(updates::UpdatesArgs),
    /// Run an Exchange-like EWS server (mailboxes with Tasks folders) for tests and demos.
    #[cfg(feature = "sim")]
    Sim(Box<sim::SimArgs>),
    /// Run the connector: the push listener, the sync engine and the admin endpoint (health,
    /// metrics, PM API) over the embedded PM store, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Publish a project to the mailboxes: create, update and delete tasks so that they show
    /// the PM's values. A progress bar on a terminal, a summary line otherwise.
    Publish(sync::PublishArgs),
    /// Validate the configuration without starting anything (`config check`), or print the
    /// effective configuration with the source of each value (`config show`).
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Each assignment: task, mailbox, state (synced, pending, conflict, parked, detached,
    /// awaiting-plan, failed), last sync, item, detail or last error; then a summary line and
    /// the last error of each mailbox with failures. Exits 1 when an assignment failed or is
    /// parked (0 with --json, whose states say it).
    Status(sync::StatusArgs),
    /// The audit log of sync decisions: field, both values, the rule applied, the winner.
    Audit(sync::AuditArgs),
    /// The conflicts the `manual` policy keeps for a person (field, both values and when each
    /// side changed it), or settle one with `conflicts resolve ID --take pm|mailbox`.
    Conflicts(conflicts::ConflictsArgs),
    /// The web console's accounts: list them, or `users add|remove|passwd NAME --role
    /// admin|manager [--project P...]` (the password is read from standard input).
    Users(users::UsersArgs),
    /// Copy the sync state from state.sqlite into a PostgreSQL database (--to URL), then read
    /// it back and compare; refuses a database that holds state unless --force.
    Migrate(migrate::MigrateArgs),
}

/// An error that maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl Command {
    fn is_demo(&self) -> bool {
        #[cfg(feature = "sim")]
        if matches!(self, Command::Demo(_)) {
            return true;
        }
        false
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The demo narrates on stdout; its logs stay quiet unless asked for.
    let quiet = cli.command.is_demo() && cli.log == "info";
    logs::init(cli.log_format, if quiet { "warn" } else { &cli.log })?;
    let result = run_command(cli);
    logs::flush_repeats();
    result
}

fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
    // A file named by --config (or TASKBRIDGE_CONFIG) must exist; the default may be absent.
    let explicit = cli.config.is_some();
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let settings = || settings(&config_path, explicit, cli.data_dir.as_deref());
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args),
        Command::Init(args) => init::run(args, &config_path, cli.data_dir.as_deref()),
        Command::Ews(cmd) => ews::run(cmd),
        Command::Check(args) => check::run(*args, settings),
        Command::Import(args) => import::run(args, &settings()?),
        Command::Export(args) => export::run(args, &settings()?),
        Command::Projects(projects::ProjectsArgs {
            command:
                Some(projects::ProjectsCommand::Remove {
                    guid,
                    keep_tasks,
                    force,
                    dry_run,
                    json,
                }),
            ..
        }) => projects::remove(
            guid,
            taskbridge::sync::RemoveOptions {
                keep_tasks,
                force,
                dry_run,
            },
            json,
            &settings()?,
        ),
        Command::Projects(args) => projects::run(args, &settings()?),
        Command::Updates(args) => updates::run(args, &settings()?),
        #[cfg(feature = "sim")]
        Command::Sim(args) => sim::run(*args),
        Command::Serve(args) => {
            let (path, dir) = (config_path.clone(), cli.data_dir.clone());
            let reload: serve::Reload =
                Box::new(move || self::settings(&path, explicit, dir.as_deref()));
            serve::run(args, &settings()?, reload)
        }
        Command::Publish(args) => sync::publish(args, &settings()?),
        Command::Status(args) => sync::status(args, &settings()?),
        Command::Audit(args) => sync::audit(args, &settings()?),
        Command::Conflicts(args) => conflicts::run(args, &settings()?),
        Command::Migrate(args) => migrate::run(args, &settings()?),
        Command::Users(args) => users::run(args, &settings()?),
        Command::Config(cmd) => config_cmd::run(
            cmd,
            &config_cmd::Origin {
                path: &config_path,
                explicit,
                data_dir: cli.data_dir.as_deref(),
            },
        ),
    }
}

/// The configuration file when `--config` names none.
pub const DEFAULT_CONFIG: &str = "./taskbridge.toml";

/// The configuration: the file (which must exist when `explicit`; defaults otherwise),
/// `TASKBRIDGE_*` overrides, and `--data-dir`.
fn settings(
    path: &std::path::Path,
    explicit: bool,
    data_dir: Option<&std::path::Path>,
) -> Result<config::RawConfig, CliError> {
    let mut raw = config::load(path, explicit)?;
    if let Some(dir) = data_dir {
        raw.data_dir = dir.to_path_buf();
    }
    Ok(raw)
}

/// A runtime for the commands that talk to the store: one thread is plenty for a CLI.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// How this configuration opens the PM store: webhook deliveries are queued only when `[pm]
/// webhook_url` is set (every process reading the same configuration agrees).
fn host_options(raw: &config::RawConfig) -> taskbridge::pm::embedded::HostOptions {
    taskbridge::pm::embedded::HostOptions {
        webhook: !raw.pm.webhook_url.is_empty(),
        ..Default::default()
    }
}

/// Opens the PM store (`[pm] url`, else `pm.sqlite` in the data directory), which must exist:
/// a missing store is a wrong `--data-dir` or URL (exit 2).
async fn open_existing_store(
    raw: &config::RawConfig,
) -> anyhow::Result<taskbridge::pm::embedded::EmbeddedHost> {
    use taskbridge::pm::embedded::{EmbeddedError, EmbeddedHost, HostOptions};
    let options = HostOptions {
        create: false,
        ..host_options(raw)
    };
    match EmbeddedHost::open_at(&raw.pm_location()?, options).await {
        Ok(host) => Ok(host),
        Err(
            e @ (EmbeddedError::NoStore(_)
            | EmbeddedError::NoDatabaseStore(_)
            | EmbeddedError::SchemaTooNew { .. }),
        ) => Err(CliError::Usage(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Opens the PM store (`[pm] url`, else `pm.sqlite` in the data directory), creating it when
/// missing.
async fn open_store(
    raw: &config::RawConfig,
) -> anyhow::Result<taskbridge::pm::embedded::EmbeddedHost> {
    use taskbridge::pm::embedded::EmbeddedHost;
    let location = raw.pm_location()?;
    EmbeddedHost::open_at(&location, host_options(raw))
        .await
        .map_err(|e| {
            anyhow::anyhow!(e).context(format!(
                "cannot open the PM store ({})",
                location.describe()
            ))
        })
}

/// Writes `text` and a newline to stdout; a closed stdout (`| head`) is not a failure.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Pretty JSON for `--json`.
fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// Maps an error to its exit code and prints it once.
pub fn report(err: &anyhow::Error) -> ExitCode {
    // The causes in turn, but not one its predecessor's text already holds (an error that
    // prints its source would otherwise say it twice).
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    eprintln!("error: {text}");
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
