//! `taskbridge sim`: runs the Exchange-like EWS simulator until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use taskbridge_sim::auth::parse_users_file;
use taskbridge_sim::{
    self, AuthMode, ConflictModel, ExtendedProtection, FaultConfig, SimConfig, ThrottleShape,
    TlsFiles, UserSpec,
};

use super::CliError;

/// Flags of `taskbridge sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port; the first line of output names it).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM); serves HTTPS together with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Users file: a JSON array of {"smtp", "password", "service"} or lines of smtp:password.
    #[arg(long)]
    users: Option<PathBuf>,
    /// A mailbox owner, as smtp:password (repeatable).
    #[arg(long = "user", value_name = "SMTP:PASSWORD")]
    user: Vec<String>,
    /// A service account with the impersonation right, as smtp:password (repeatable).
    #[arg(long = "service", value_name = "SMTP:PASSWORD")]
    service: Vec<String>,
    /// How clients authenticate.
    #[arg(long, value_enum, default_value_t = AuthArg::None)]
    auth: AuthArg,
    /// The keytab with the service key (HTTP/host@REALM) for --auth negotiate.
    #[arg(long, value_name = "FILE")]
    keytab: Option<PathBuf>,
    /// Extended Protection on the TLS listener, as IIS enforces it for Exchange: `require`
    /// refuses an NTLM or Kerberos authentication without channel bindings that match the
    /// certificate, `allow` refuses only wrong ones.
    #[arg(long, value_enum, default_value_t = ExtendedProtectionArg::None)]
    extended_protection: ExtendedProtectionArg,
    /// What UpdateItem with a stale ChangeKey meets under NeverOverwrite and AutoResolve:
    /// `strict` refuses it with ErrorIrresolvableConflict whatever changed since, as Exchange
    /// does; `merge` refuses it only when a property it sets changed since.
    #[arg(long, value_enum, default_value_t = ConflictModelArg::Strict)]
    conflict_model: ConflictModelArg,
    /// Persist state in this SQLite file (written through; survives restarts and SIGKILL).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Record every request/response pair into this directory (fixtures format).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Fraction of requests answered with ErrorServerBusy.
    #[arg(long, default_value_t = 0.0)]
    throttle: f64,
    /// Shape of throttling answers (default: a random one of the three each time).
    #[arg(long, value_enum)]
    throttle_shape: Option<ShapeArg>,
    /// BackOffMilliseconds (and Retry-After) of throttling answers.
    #[arg(long, default_value_t = 500)]
    back_off_ms: u64,
    /// Fraction of requests that fail (HTTP 500 without a body, or a dropped connection).
    #[arg(long, default_value_t = 0.0)]
    fail: f64,
    /// Milliseconds added to every request.
    #[arg(long, default_value_t = 0)]
    latency: u64,
    /// Fraction of push deliveries lost.
    #[arg(long, default_value_t = 0.0)]
    drop_push: f64,
    /// Requests in flight per mailbox beyond which ErrorServerBusy is answered.
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Fraction of requests after which a random task gets a new ChangeKey by itself.
    #[arg(long, default_value_t = 0.0)]
    spontaneous_changekey: f64,
    /// Seed of every random decision (reproducible runs).
    #[arg(long)]
    seed: Option<u64>,
    /// Multiplies push retry times, StatusFrequency, pull timeouts and the streaming
    /// keep-alive, connection time-out and expiry (0.001: minutes become tens of milliseconds).
    #[arg(long, default_value_t = 1.0)]
    push_time_scale: f64,
    /// Mailbox servers the mailboxes are spread over (server affinity for subscriptions;
    /// move a mailbox with PUT /sim/mailboxes/{smtp}/backend).
    #[arg(long, default_value_t = 1)]
    backends: usize,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthArg {
    /// No authentication.
    None,
    /// HTTP Basic.
    Basic,
    /// NTLM.
    Ntlm,
    /// Negotiate (Kerberos tickets for the service key in --keytab).
    Negotiate,
}

/// `--extended-protection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExtendedProtectionArg {
    /// Channel bindings are not checked.
    None,
    /// Channel bindings that are sent must match.
    Allow,
    /// Channel bindings must be sent and match.
    Require,
}

/// `--conflict-model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConflictModelArg {
    /// Any stale change key is a conflict (Exchange).
    Strict,
    /// Only a property changed since the key is a conflict.
    Merge,
}

/// `--throttle-shape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ShapeArg {
    /// SOAP fault in HTTP 500.
    Fault,
    /// Per-message ErrorServerBusy in HTTP 200.
    Message,
    /// HTTP 503 with Retry-After.
    Http503,
}

fn config(args: SimArgs) -> Result<SimConfig, CliError> {
    let mut users = Vec::new();
    if let Some(path) = &args.users {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--users {}: {e}", path.display())))?;
        users.extend(
            parse_users_file(&text)
                .map_err(|e| CliError::Usage(format!("--users {}: {e}", path.display())))?,
        );
    }
    for u in &args.user {
        users.push(UserSpec::parse(u, false).map_err(|e| CliError::Usage(format!("--user: {e}")))?);
    }
    for u in &args.service {
        users.push(
            UserSpec::parse(u, true).map_err(|e| CliError::Usage(format!("--service: {e}")))?,
        );
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let defaults = FaultConfig::default();
    Ok(SimConfig {
        listen: args.listen,
        tls,
        users,
        auth: match args.auth {
            AuthArg::None => AuthMode::None,
            AuthArg::Basic => AuthMode::Basic,
            AuthArg::Ntlm => AuthMode::Ntlm,
            AuthArg::Negotiate => AuthMode::Negotiate,
        },
        keytab: args.keytab,
        extended_protection: match args.extended_protection {
            ExtendedProtectionArg::None => ExtendedProtection::None,
            ExtendedProtectionArg::Allow => ExtendedProtection::Allow,
            ExtendedProtectionArg::Require => ExtendedProtection::Require,
        },
        conflict_model: match args.conflict_model {
            ConflictModelArg::Strict => ConflictModel::Strict,
            ConflictModelArg::Merge => ConflictModel::Merge,
        },
        state: args.state,
        record: args.record,
        faults: FaultConfig {
            throttle: args.throttle,
            throttle_shape: args.throttle_shape.map(|s| match s {
                ShapeArg::Fault => ThrottleShape::Fault,
                ShapeArg::Message => ThrottleShape::Message,
                ShapeArg::Http503 => ThrottleShape::Http503,
            }),
            back_off: Duration::from_millis(args.back_off_ms),
            fail: args.fail,
            latency: Duration::from_millis(args.latency),
            drop_push: args.drop_push,
            max_concurrency: args.max_concurrency,
            spontaneous_changekey: args.spontaneous_changekey,
            seed: args.seed.unwrap_or(defaults.seed),
        },
        push_time_scale: args.push_time_scale,
        backends: args.backends,
        ..SimConfig::default()
    })
}

/// Runs the simulator; prints the endpoint URL as the first line of stdout once it accepts
/// connections.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = taskbridge_sim::start(config).await.map_err(|e| match e {
            taskbridge_sim::SimError::Config(m) => anyhow::Error::new(CliError::Usage(m)),
            other => anyhow::Error::new(other),
        })?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", handle.url)?;
            out.flush()?;
        }
        tracing::info!(url = %handle.url, admin = %handle.admin_url, "simulator listening");
        wait_for_signal().await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
