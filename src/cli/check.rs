//! `taskbridge check`: tests EWS settings against the server and says what works.
//!
//! The flags become an [`EwsClientConfig`]; the work is [`run_check`] in the library, so the
//! config file (later) and the PM host go through the same code. With a mailbox named, it then
//! reports one line per notification mode ([`check_modes`]) and the one recommended from here;
//! a mode that fails does not change the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use taskbridge::ews::EwsClientConfig;
use taskbridge::ews::autodiscover::{Attempt, AutodiscoverError, AutodiscoverSettings, discover};
use taskbridge::ews::check::{CheckFailure, CheckReport, ModesReport, check_modes, run_check};
use taskbridge::ews::transport::Auth;
use taskbridge::secret::Secret;

use super::CliError;

/// Exit code: the endpoint cannot be reached (DNS, refused, time-out).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: TLS failed for a reason other than the certificate.
pub const EXIT_TLS: u8 = 4;
/// Exit code: the server's certificate is not trusted.
pub const EXIT_UNTRUSTED_CERTIFICATE: u8 = 5;
/// Exit code: the credentials were refused.
pub const EXIT_UNAUTHORIZED: u8 = 6;
/// Exit code: the account may not impersonate the mailbox.
pub const EXIT_IMPERSONATION_DENIED: u8 = 7;
/// Exit code: the mailbox does not exist.
pub const EXIT_MAILBOX_NOT_FOUND: u8 = 8;
/// Exit code: Autodiscover found no EWS URL.
pub const EXIT_AUTODISCOVER: u8 = 9;

const EXIT_CODES: &str = "\
Exit codes:
  0  everything checked works
  1  another failure (SOAP fault, throttling, unexpected HTTP status)
  2  usage or configuration error (bad flag, missing password, unreadable CA file)
  3  the endpoint cannot be reached (DNS, connection refused, time-out)
  4  TLS handshake failed (protocol or cipher mismatch)
  5  the server's certificate is not trusted (use --ca-file with its CA)
  6  authentication failed (wrong user or password, token refused)
  7  the account may not impersonate --mailbox (ApplicationImpersonation role)
  8  --mailbox does not exist
  9  --autodiscover found no EWS URL (each place tried is listed)";

/// Authentication schemes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// No authentication.
    None,
    /// HTTP Basic (--user, --password-env/--password-file).
    Basic,
    /// NTLMv2 (--user as DOMAIN\user or user@domain, --password-env/--password-file).
    Ntlm,
    /// Kerberos through Negotiate, with the ticket cache (KRB5CCNAME) or client keytab
    /// (KRB5_CLIENT_KTNAME); --spn names the service if it is not HTTP/<host of --url>.
    Negotiate,
    /// A static OAuth bearer token (--token-env).
    Bearer,
    /// OAuth client credentials (--token-url, --client-id, --client-secret-env, --scope).
    Oauth,
}

/// Flags of `taskbridge check`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct CheckArgs {
    /// The EWS URL, e.g. https://mail.contoso.com/EWS/Exchange.asmx. Without it (and without
    /// --autodiscover), every setting comes from the configuration file ([exchange]) and the
    /// other connection flags are ignored.
    #[arg(long, conflicts_with = "autodiscover")]
    pub url: Option<String>,
    /// Find the EWS URL of this address by Autodiscover (SOAP then POX at https://DOMAIN, then
    /// at https://autodiscover.DOMAIN, then a redirect from http://autodiscover.DOMAIN), report
    /// each step, then check the URL found. Uses the connection flags, like --url.
    #[arg(long, value_name = "ADDRESS")]
    pub autodiscover: Option<String>,
    /// Start Autodiscover at this URL instead of the standard places (repeatable; a URL ending
    /// in .svc is asked with SOAP, any other with POX).
    #[arg(long, value_name = "URL", requires = "autodiscover")]
    pub autodiscover_url: Vec<String>,
    /// Time-out of each Autodiscover step, in seconds.
    #[arg(long, default_value_t = 10, requires = "autodiscover")]
    pub autodiscover_timeout: u64,
    /// Authentication scheme.
    #[arg(long, value_enum, default_value_t = AuthKind::Ntlm)]
    pub auth: AuthKind,
    /// User name for basic and ntlm: DOMAIN\user or user@domain.
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The service principal name for --auth negotiate (default HTTP/<host of the URL>).
    #[arg(long, value_name = "SERVICE/HOST")]
    pub spn: Option<String>,
    /// Read the bearer token from this environment variable (--auth bearer).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// OAuth token endpoint (--auth oauth).
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// OAuth application (client) id (--auth oauth).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Read the OAuth client secret from this environment variable (--auth oauth).
    #[arg(long, value_name = "VAR")]
    pub client_secret_env: Option<String>,
    /// OAuth scope (--auth oauth).
    #[arg(long, default_value = "https://outlook.office365.com/.default")]
    pub scope: String,
    /// Mailbox to impersonate: reports its Tasks folder id and whether impersonation works,
    /// then which notification modes (streaming, push, pull) work for it from here.
    #[arg(long)]
    pub mailbox: Option<String>,
    /// The public URL of the push listener to probe (default: listener.public_url of the
    /// configuration when it is read, i.e. without --url and --autodiscover).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// PEM file of extra CA certificates to trust besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Dangerous: for test servers only.
    #[arg(long)]
    pub insecure: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Check the PM side of the configuration file instead of Exchange: for `[pm] kind =
    /// "redmine"`, Redmine reachable, the API key valid and an administrator's, the REST API
    /// enabled, the projects, statuses, trackers and activity found.
    #[arg(long, conflicts_with_all = ["url", "autodiscover", "mailbox"])]
    pub pm: bool,
}

/// `taskbridge check --pm`.
fn run_pm(raw: &super::config::RawConfig) -> anyhow::Result<ExitCode> {
    use taskbridge::pm::redmine::{RedmineError, RedmineHost};
    let Some(config) = raw.redmine()? else {
        println!("PM host: embedded (projects imported into taskbridge); nothing to reach");
        return Ok(ExitCode::SUCCESS);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let host = RedmineHost::connect(config)?;
        host.check().await
    });
    match result {
        Ok(lines) => {
            for line in lines {
                println!("ok: {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(match e {
                RedmineError::Unreachable(_) => EXIT_UNREACHABLE,
                RedmineError::Refused { .. } => EXIT_UNAUTHORIZED,
                _ => super::EXIT_FAILURE,
            }))
        }
    }
}

fn env_secret(var: &str, what: &str) -> Result<Secret, CliError> {
    std::env::var(var)
        .map(Secret::new)
        .map_err(|_| CliError::Usage(format!("{what}: environment variable {var} is not set")))
}

fn password(args: &CheckArgs) -> Result<Secret, CliError> {
    if let Some(var) = &args.password_env {
        return env_secret(var, "--password-env");
    }
    if let Some(file) = &args.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            CliError::Usage(format!(
                "--password-file: cannot read {}: {e}",
                file.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or("");
        return Ok(Secret::new(line));
    }
    Err(needs(args.auth, "--password-env or --password-file"))
}

/// "--auth X needs FLAG", saying that ntlm is the default when it is the scheme: a user who gave
/// no --auth would not otherwise know which one asked.
fn needs(auth: AuthKind, flag: &str) -> CliError {
    let name = auth
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    let default = if auth == AuthKind::Ntlm {
        " (--auth defaults to ntlm; --auth none, basic, negotiate, bearer or oauth picks another)"
    } else {
        ""
    };
    CliError::Usage(format!("--auth {name} needs {flag}{default}"))
}

fn required<'a>(
    value: &'a Option<String>,
    flag: &str,
    auth: AuthKind,
) -> Result<&'a str, CliError> {
    value.as_deref().ok_or_else(|| needs(auth, flag))
}

/// Builds the library configuration from the flags, or from the configuration file when no
/// `--url` is given; with it, the push listener's public URL to probe (if any).
fn config(
    args: &CheckArgs,
    file: impl FnOnce() -> Result<super::config::RawConfig, CliError>,
) -> Result<(EwsClientConfig, Option<String>), CliError> {
    // Autodiscover replaces the URL once it has found one.
    let url = match (&args.url, &args.autodiscover) {
        (Some(url), _) => url,
        (None, Some(_)) => &"https://autodiscover.invalid/EWS/Exchange.asmx".to_string(),
        (None, None) => {
            let raw = file()?;
            let mut config = raw.exchange()?;
            quick(&mut config);
            let public_url = args
                .public_url
                .clone()
                .or_else(|| Some(raw.listener.public_url.clone()).filter(|u| !u.trim().is_empty()));
            return Ok((config, public_url));
        }
    };
    let auth = match args.auth {
        AuthKind::None => Auth::None,
        AuthKind::Basic => Auth::Basic {
            user: required(&args.user, "--user", args.auth)?.to_string(),
            password: password(args)?,
        },
        AuthKind::Ntlm => Auth::Ntlm {
            user: required(&args.user, "--user", args.auth)?.to_string(),
            password: password(args)?,
        },
        AuthKind::Negotiate => Auth::Negotiate {
            spn: args.spn.clone(),
        },
        AuthKind::Bearer => Auth::Bearer {
            token: env_secret(
                required(&args.token_env, "--token-env", args.auth)?,
                "--token-env",
            )?,
        },
        AuthKind::Oauth => Auth::OAuthClientCredentials {
            token_url: required(&args.token_url, "--token-url", args.auth)?.to_string(),
            client_id: required(&args.client_id, "--client-id", args.auth)?.to_string(),
            client_secret: env_secret(
                required(&args.client_secret_env, "--client-secret-env", args.auth)?,
                "--client-secret-env",
            )?,
            scope: args.scope.clone(),
        },
    };
    let mut config = EwsClientConfig::new(url.clone(), auth);
    config.tls.extra_ca_file = args.ca_file.clone();
    config.tls.accept_invalid_certs = args.insecure;
    quick(&mut config);
    Ok((config, args.public_url.clone()))
}

/// A check should answer quickly: one retry, short waits.
fn quick(config: &mut EwsClientConfig) {
    config.retry.max_attempts = 2;
    config.retry.base_delay = Duration::from_millis(500);
    config.retry.max_server_back_off = Duration::from_secs(10);
}

/// The exit code for a failure.
pub fn exit_code(failure: &CheckFailure) -> u8 {
    match failure {
        CheckFailure::Config(_) => super::EXIT_USAGE,
        CheckFailure::Unreachable(_) => EXIT_UNREACHABLE,
        CheckFailure::Tls(_) => EXIT_TLS,
        CheckFailure::UntrustedCertificate(_) => EXIT_UNTRUSTED_CERTIFICATE,
        CheckFailure::Unauthorized(_) => EXIT_UNAUTHORIZED,
        CheckFailure::ImpersonationDenied(_) => EXIT_IMPERSONATION_DENIED,
        CheckFailure::MailboxNotFound(_) => EXIT_MAILBOX_NOT_FOUND,
        _ => super::EXIT_FAILURE,
    }
}

fn print_text(out: &mut impl Write, report: &CheckReport) -> std::io::Result<()> {
    writeln!(out, "endpoint:        {}", report.endpoint)?;
    let accepted = if report.authenticated {
        "accepted"
    } else {
        "not confirmed"
    };
    writeln!(out, "auth:            {} ({accepted})", report.auth_scheme)?;
    if let Some(v) = &report.server_version_text {
        writeln!(out, "server version:  {v}")?;
    }
    if let Some(m) = &report.mailbox {
        writeln!(out, "mailbox:         {m}")?;
    }
    if let Some(id) = &report.tasks_folder_id {
        writeln!(out, "tasks folder:    {id}")?;
    }
    match report.impersonation {
        Some(true) => writeln!(out, "impersonation:   works")?,
        Some(false) => writeln!(out, "impersonation:   denied")?,
        None => {}
    }
    for note in &report.notes {
        // A service account without a mailbox of its own is the usual setup (it reaches the
        // owners' mailboxes by impersonation): said plainly, not as Exchange's error code.
        if note.contains("ErrorMissingEmailAddress") {
            writeln!(
                out,
                "account:         no mailbox of its own (usual for a service account; \
                 mailboxes are reached by impersonation)"
            )?;
        } else {
            writeln!(out, "note:            {note}")?;
        }
    }
    Ok(())
}

/// One line per notification mode, then the recommended one.
fn print_modes(out: &mut impl Write, modes: &ModesReport) -> std::io::Result<()> {
    for m in &modes.modes {
        let verdict = match m.works {
            Some(true) => "works",
            Some(false) => "fails",
            None => "not checked",
        };
        let label = format!("{} mode:", m.mode);
        writeln!(out, "{label:<17}{verdict} ({})", m.detail)?;
    }
    match modes.recommended {
        Some(mode) => writeln!(
            out,
            "recommended:     listener.mode = \"{mode}\" (see docs/LISTENER.md)"
        ),
        None => writeln!(out, "recommended:     none works from here"),
    }
}

/// One line per Autodiscover step.
fn print_attempts(out: &mut impl Write, attempts: &[Attempt]) -> std::io::Result<()> {
    for a in attempts {
        writeln!(
            out,
            "autodiscover:    {} {} -> {}",
            a.method, a.url, a.result
        )?;
    }
    Ok(())
}

/// Runs `taskbridge check`.
pub fn run(
    args: CheckArgs,
    file: impl FnOnce() -> Result<super::config::RawConfig, CliError>,
) -> anyhow::Result<ExitCode> {
    if args.pm {
        return run_pm(&file()?);
    }
    let (mut config, public_url) = config(&args, file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut discovery = None;
    if let Some(address) = &args.autodiscover {
        let settings = AutodiscoverSettings {
            auth: config.auth.clone(),
            tls: config.tls.clone(),
            step_timeout: Duration::from_secs(args.autodiscover_timeout.max(1)),
            start_urls: args.autodiscover_url.clone(),
            name_servers: Vec::new(),
        };
        match runtime.block_on(discover(address, &settings)) {
            Ok(found) => {
                config.endpoint = found.ews_url.clone();
                discovery = Some(found);
            }
            Err(e) => {
                let mut out = std::io::stdout().lock();
                let printed = if args.json {
                    let value = serde_json::json!({
                        "autodiscover": { "address": address, "attempts": e.attempts() },
                        "failure": e.to_string(),
                    });
                    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)
                } else {
                    print_attempts(&mut out, e.attempts())
                };
                printed.or_else(super::ignore_broken_pipe)?;
                eprintln!("error: {e}");
                return Ok(ExitCode::from(match e {
                    AutodiscoverError::InvalidAddress(_) | AutodiscoverError::Config(_) => {
                        super::EXIT_USAGE
                    }
                    _ => EXIT_AUTODISCOVER,
                }));
            }
        }
    }
    let report = runtime.block_on(run_check(&config, args.mailbox.as_deref()));
    // The modes are tried only for a mailbox that checked out: any other failure would repeat
    // in every mode's line.
    let modes = match (&args.mailbox, &report.failure) {
        (Some(mailbox), None) => {
            Some(runtime.block_on(check_modes(&config, mailbox, public_url.as_deref())))
        }
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let (Some(found), Some(map)) = (&discovery, value.as_object_mut()) {
            map.insert("autodiscover".into(), serde_json::to_value(found)?);
        }
        if let (Some(modes), Some(map)) = (&modes, value.as_object_mut()) {
            map.insert("notification_modes".into(), serde_json::to_value(modes)?);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)
    } else {
        let attempts = discovery.as_ref().map_or(&[][..], |d| &d.attempts[..]);
        print_attempts(&mut out, attempts)
            .and_then(|()| print_text(&mut out, &report))
            .and_then(|()| modes.as_ref().map_or(Ok(()), |m| print_modes(&mut out, m)))
    };
    printed.or_else(super::ignore_broken_pipe)?;
    match &report.failure {
        None => Ok(ExitCode::SUCCESS),
        Some(failure) => {
            eprintln!("error: {failure}");
            Ok(ExitCode::from(exit_code(failure)))
        }
    }
}
