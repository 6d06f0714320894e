//! `taskbridge config check` and `taskbridge config show`: validate a configuration (and the
//! files and variables it points to) without starting anything, and print the effective
//! configuration with the source of each value, secrets redacted.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use super::config::{self, Loaded, RawConfig, Source};

/// `taskbridge config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and what it points to (password, token and secret files,
    /// the CA file, the data directory, the listener's public URL) without starting anything.
    /// Prints one line per problem; exit 0 when there is none, 2 otherwise.
    Check,
    /// Print the effective configuration (file, `TASKBRIDGE_*` variables, defaults) with the
    /// source of each value. Passwords, tokens and secrets are never printed.
    Show(ShowArgs),
}

/// Flags of `taskbridge config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print JSON: an array of `{key, value, source}`.
    #[arg(long)]
    pub json: bool,
}

/// Where the configuration comes from: the file, whether it was named explicitly, and
/// `--data-dir`.
pub struct Origin<'a> {
    /// The configuration file.
    pub path: &'a Path,
    /// Named by `--config` or `TASKBRIDGE_CONFIG` (then it must exist).
    pub explicit: bool,
    /// `--data-dir`.
    pub data_dir: Option<&'a Path>,
}

fn load(origin: &Origin<'_>) -> Result<Loaded, CliError> {
    let mut loaded = config::load_with_sources(origin.path, origin.explicit, std::env::vars())?;
    if let Some(dir) = origin.data_dir {
        loaded.raw.data_dir = dir.to_path_buf();
    }
    Ok(loaded)
}

/// Runs `taskbridge config`.
pub fn run(cmd: ConfigCommand, origin: &Origin<'_>) -> anyhow::Result<ExitCode> {
    let loaded = load(origin)?;
    match cmd {
        ConfigCommand::Check => check(&loaded.raw, origin),
        ConfigCommand::Show(args) => show(&loaded, origin, args.json),
    }
}

/// Every problem of the configuration, one line each (`key: reason`).
pub fn problems(raw: &RawConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |r: Result<(), CliError>| {
        if let Err(e) = r {
            let text = e.to_string();
            out.push(
                text.strip_prefix("invalid configuration: ")
                    .unwrap_or(&text)
                    .to_string(),
            );
        }
    };
    // The typed settings (credentials are read here: a password that is neither in its
    // variable nor in its file is a problem).
    push(raw.check_exchange());
    if raw.exchange.auth == "negotiate" {
        // Kerberos is loaded when the client is built: say now if it cannot be.
        push(
            taskbridge::ews::transport::auth::gssapi::available()
                .map_err(|e| bad("exchange.auth", e)),
        );
    }
    push(raw.field_table().map(|_| ()));
    push(raw.sync().map(|_| ()));
    push(raw.socket("admin.listen", &raw.admin.listen).map(|_| ()));
    if !matches!(raw.pm.default_policy.as_str(), "auto" | "approval") {
        push(Err(bad("pm.default_policy", "must be auto or approval")));
    }
    if !raw.exchange.ca_file.is_empty() {
        push(ca_file(
            "exchange.ca_file",
            Path::new(&raw.exchange.ca_file),
        ));
    }
    push(data_dir(&raw.data_dir));
    push(raw.state_location().map(|_| ()));
    push(raw.pm_location().map(|_| ()));
    push(raw.redmine().map(|_| ()));
    if !raw.pm.ca_file.is_empty() {
        push(ca_file("pm.ca_file", Path::new(&raw.pm.ca_file)));
    }
    if !raw.state.ca_file.is_empty() {
        push(ca_file("state.ca_file", Path::new(&raw.state.ca_file)));
    }
    push(readable(
        "admin.token_file",
        &raw.data_path(&raw.admin.token_file),
        " (run taskbridge init)",
    ));
    if raw.push_listener() {
        push(
            raw.socket("listener.listen", &raw.listener.listen)
                .map(|_| ()),
        );
        push(public_url(&raw.listener.public_url));
        if !(1..=1440).contains(&raw.listener.status_frequency_minutes) {
            push(Err(bad(
                "listener.status_frequency_minutes",
                "must be 1 to 1440",
            )));
        }
        // A missing secret is created at start; one that exists must be readable.
        let secret = raw.data_path(&raw.listener.secret_file);
        if secret.exists() {
            push(readable("listener.secret_file", &secret, ""));
        }
        match (
            raw.listener.tls_cert.is_empty(),
            raw.listener.tls_key.is_empty(),
        ) {
            (true, true) => {}
            (false, false) => {
                push(readable(
                    "listener.tls_cert",
                    &raw.data_path(&raw.listener.tls_cert),
                    "",
                ));
                push(readable(
                    "listener.tls_key",
                    &raw.data_path(&raw.listener.tls_key),
                    "",
                ));
            }
            _ => push(Err(bad(
                "listener.tls_cert",
                "tls_cert and tls_key go together",
            ))),
        }
    }
    if !raw.pm.webhook_url.is_empty() {
        push(
            reqwest::Url::parse(&raw.pm.webhook_url)
                .map(|_| ())
                .map_err(|e| bad("pm.webhook_url", e)),
        );
        if raw.pm.webhook_secret_file.is_empty() {
            push(Err(bad(
                "pm.webhook_secret_file",
                "required with pm.webhook_url",
            )));
        } else {
            push(readable(
                "pm.webhook_secret_file",
                &raw.data_path(&raw.pm.webhook_secret_file),
                "",
            ));
        }
    }
    out
}

fn bad(key: &str, reason: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{key}: {reason}"))
}

fn readable(key: &str, path: &Path, hint: &str) -> Result<(), CliError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| bad(key, format!("cannot read {}: {e}{hint}", path.display())))
}

/// The CA file holds at least one PEM certificate (what the transport loads at start).
fn ca_file(key: &str, path: &Path) -> Result<(), CliError> {
    let file = std::fs::File::open(path)
        .map_err(|e| bad(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(())
}

/// The data directory exists and takes a new file, or can be created.
fn data_dir(dir: &Path) -> Result<(), CliError> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(bad(
                "data_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        let probe = dir.join(format!(".taskbridge-check-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| {
            bad(
                "data_dir",
                format!("{} is not writable: {e}", dir.display()),
            )
        })?;
        let _ = std::fs::remove_file(&probe);
        return Ok(());
    }
    // Created at start: the nearest existing ancestor must take it.
    let mut parent = dir.parent();
    while let Some(p) = parent {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        if p.exists() {
            let writable = std::fs::metadata(p)
                .map(|m| m.is_dir() && !m.permissions().readonly())
                .unwrap_or(false);
            return if writable {
                Ok(())
            } else {
                Err(bad(
                    "data_dir",
                    format!(
                        "{} does not exist and {} does not take it",
                        dir.display(),
                        p.display()
                    ),
                ))
            };
        }
        parent = p.parent();
    }
    Err(bad(
        "data_dir",
        format!("{} cannot be created", dir.display()),
    ))
}

/// The URL Exchange posts to: http(s), a host Exchange can reach (not an unspecified address),
/// no query or fragment (the secret is appended as the last path segment).
fn public_url(value: &str) -> Result<(), CliError> {
    const KEY: &str = "listener.public_url";
    let url = reqwest::Url::parse(value).map_err(|e| bad(KEY, e))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(KEY, "must be an http or https URL"));
    }
    let Some(host) = url.host_str() else {
        return Err(bad(KEY, "has no host"));
    };
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        && ip.is_unspecified()
    {
        return Err(bad(
            KEY,
            format!("{ip} is a listen address, not one Exchange can post to"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            KEY,
            "must not have a query or fragment (the secret is appended to the path)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(KEY, "must not carry credentials"));
    }
    Ok(())
}

fn check(raw: &RawConfig, origin: &Origin<'_>) -> anyhow::Result<ExitCode> {
    let what = if origin.path.exists() {
        origin.path.display().to_string()
    } else {
        format!(
            "the built-in defaults ({} does not exist)",
            origin.path.display()
        )
    };
    let found = problems(raw);
    if found.is_empty() {
        super::print_out(&format!("configuration ok: {what}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in &found {
        super::print_out(p)?;
    }
    eprintln!(
        "error: {} problem{} in {what}",
        found.len(),
        if found.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::from(super::EXIT_USAGE))
}

/// What `show` prints for a value: variables that hold secrets are named with whether they
/// are set, never their value; URLs lose any password; a key that would hold a secret inline
/// is masked.
fn shown(key: &str, value: &toml::Value) -> (String, Option<String>) {
    let name = key.rsplit('.').next().unwrap_or(key);
    if let toml::Value::String(s) = value {
        if name.ends_with("_env") && !s.is_empty() {
            let set = std::env::var_os(s).is_some_and(|v| !v.is_empty());
            return (
                value.to_string(),
                Some(if set { "set" } else { "not set" }.to_string()),
            );
        }
        if name.ends_with("url")
            && let Ok(mut url) = reqwest::Url::parse(s)
            && url.password().is_some()
        {
            let _ = url.set_password(Some("***"));
            return (toml::Value::String(url.to_string()).to_string(), None);
        }
    }
    let secretish = ["password", "secret", "token"]
        .iter()
        .any(|w| name.contains(w));
    let names_a_place = name.ends_with("_env") || name.ends_with("_file") || name.ends_with("_url");
    if secretish && !names_a_place {
        return ("\"***\"".to_string(), None);
    }
    (value.to_string(), None)
}

fn show(loaded: &Loaded, origin: &Origin<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let table = toml::Table::try_from(&loaded.raw)?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) if !t.is_empty() => walk(&key, t, out),
                _ => out.push((key, v.clone())),
            }
        }
    }
    let mut leaves = Vec::new();
    walk("", &table, &mut leaves);
    for (key, value) in leaves {
        let (text, note) = shown(&key, &value);
        let mut source = match loaded.source(&key) {
            Source::Default => "default".to_string(),
            Source::File => "file".to_string(),
            Source::Variable(v) => format!("variable {v}"),
        };
        if key == "data_dir" && origin.data_dir.is_some() {
            // clap takes --data-dir from TASKBRIDGE_DATA_DIR when the flag is absent.
            let from_variable = std::env::var_os("TASKBRIDGE_DATA_DIR")
                .is_some_and(|v| Some(Path::new(&v)) == origin.data_dir);
            source = if from_variable {
                "variable TASKBRIDGE_DATA_DIR".into()
            } else {
                "--data-dir".into()
            };
        }
        if let Some(n) = note {
            source = format!("{source}; {n}");
        }
        rows.push((key, text, source));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(k, v, s)| serde_json::json!({ "key": k, "value": v, "source": s }))
            .collect();
        super::print_out(&super::to_json(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let file = if origin.path.exists() {
        origin.path.display().to_string()
    } else {
        format!("{} (absent)", origin.path.display())
    };
    let width = rows
        .iter()
        .map(|(k, v, _)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0);
    let mut text = format!("# effective configuration; file: {file}\n");
    for (k, v, s) in &rows {
        let line = format!("{k} = {v}");
        text.push_str(&format!("{line:<width$}  # {s}\n"));
    }
    super::print_out(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
