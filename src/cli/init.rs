//! `taskbridge init`: writes a commented starter configuration and the data directory with its
//! secrets, ready to run against the bundled simulator on this machine.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use rand::RngCore;

use super::CliError;
use super::config::{self, RawConfig};

/// Arguments of `taskbridge init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing configuration file (and sample project).
    #[arg(long)]
    pub force: bool,
    /// Also write the sample project (`sample-project.xml`, Microsoft Project XML) beside the
    /// configuration, for the README's tour.
    #[arg(long)]
    pub sample: bool,
}

/// The sample project of the README's tour and of `taskbridge demo`.
pub const SAMPLE_PROJECT: &str = include_str!("../../examples/sample-project.xml");

/// The sample project's file name, beside the configuration.
pub const SAMPLE_FILE: &str = "sample-project.xml";

/// The starter file. Every key is listed with its default; `config_template_matches_defaults`
/// keeps it in step with the code.
pub const TEMPLATE: &str = r#"# taskbridge configuration.
#
# Every key can be overridden by an environment variable named after its path, e.g.
# TASKBRIDGE_EXCHANGE_URL or TASKBRIDGE_SYNC_DEBOUNCE_MS. Passwords and tokens never go in this
# file: name an environment variable or a file (relative paths are inside data_dir).
# These defaults run against the bundled simulator: `taskbridge sim --auth basic --users FILE`,
# FILE (mode 600) a JSON array with {"smtp": "taskbridge@sim.example", "password": the content
# of taskbridge-data/exchange.password, "service": true} and the mailbox owners (README).

# Where the PM store (pm.sqlite), the sync state (state.sqlite) and the secrets live.
data_dir = "taskbridge-data"

[exchange]
# The EWS endpoint. For Exchange on premises: https://mail.example.com/EWS/Exchange.asmx
url = "http://127.0.0.1:8443/EWS/Exchange.asmx"
# RequestServerVersion: Exchange2010_SP2, Exchange2013_SP1, Exchange2016, V2017_07_11, ...
version = "Exchange2013_SP1"
# none, basic, ntlm, negotiate, bearer or oauth. On premises use ntlm or negotiate (Kerberos:
# ticket cache KRB5CCNAME or client keytab KRB5_CLIENT_KTNAME; spn defaults to HTTP/<host of url>).
auth = "basic"
# The service account with the ApplicationImpersonation role (DOMAIN\user or user@domain).
user = "taskbridge@sim.example"
# The password: this environment variable, else this file.
password_env = "TASKBRIDGE_EXCHANGE_PASSWORD"
password_file = "exchange.password"
# bearer: the token, from a variable or a file.
token_env = ""
token_file = ""
# oauth (client credentials): token endpoint, client id, secret and scope.
token_url = ""
client_id = ""
client_secret_env = ""
client_secret_file = ""
scope = "https://outlook.office365.com/.default"
# An extra CA certificate file (PEM) for an internal CA. Certificates are always verified
# unless accept_invalid_certs is true (never do that in production).
ca_file = ""
accept_invalid_certs = false
# Credentials over plain http to a host other than this one are refused unless this is true.
allow_plaintext = false
# Requests in flight per mailbox and in total; items per batch.
per_mailbox_in_flight = 2
total_in_flight = 8
batch_size = 50
get_item_batch = 10

[listener]
# How mailbox changes are heard of: "push" (Exchange posts to this listener), "streaming"
# (taskbridge holds GetStreamingEvents connections to Exchange and nothing listens) or "pull"
# (taskbridge polls every [sync] pull_interval_secs). See docs/LISTENER.md.
mode = "push"
# Push notifications from Exchange. Exchange posts to public_url + "/" + the secret in
# secret_file, so the secret must stay private; open the firewall for this URL only.
enabled = true
listen = "127.0.0.1:8081"
public_url = "http://127.0.0.1:8081/ews/notify"
secret_file = "listener.secret"
max_body_bytes = 1048576
# Connections open at once, and from one address (Exchange sends from a few servers); when all
# are taken, the connection idle the longest is closed to make room.
max_connections = 256
max_connections_per_address = 64
# HTTPS with a certificate and key (PEM); both or neither.
tls_cert = ""
tls_key = ""
# Minutes between Exchange's "still alive" notifications (1 to 1440).
status_frequency_minutes = 1
# Streaming mode: minutes each connection stays open before it is reopened (1 to 30), and
# subscriptions per connection of one Mailbox server (1 to 200; mailboxes on different servers
# never share a connection: see docs/LISTENER.md).
streaming_timeout_minutes = 30
streaming_subscriptions_per_connection = 200

[admin]
# /healthz, /metrics, the PM API (bearer token in token_file) and the web console.
listen = "127.0.0.1:8082"
token_file = "admin.token"

[ui]
# The web console at /console/ on the admin address (docs/CONSOLE.md). Accounts: taskbridge users.
users_file = "console-users.json"
# Single sign-on: the header a reverse proxy sets to the user's name, believed only from the
# proxies' addresses; empty: off.
trusted_user_header = ""
trusted_proxies = []
# Mark cookies Secure on plain HTTP too (TLS ends at a proxy in front).
secure_cookies = false

[pm]
# Status updates of newly imported projects: auto (applied at once) or approval. With
# kind = "redmine": of every Redmine project (waiting in redmine-updates.sqlite here).
default_policy = "auto"
# Tell an external PM tool about applied updates (HMAC-SHA256 signed); empty: off.
webhook_url = ""
webhook_secret_file = ""
# A folder serve watches for plans (MSPDI or JSON) saved by Microsoft Project & co.: each is
# imported (three-way: progress from the mailboxes survives) and published, and
# NAME.taskbridge.xml is written beside it once progress is applied; empty: off.
watch_dir = ""
# The time zone the dates of those plans are local to (MSPDI names none).
watch_time_zone = "UTC"
# The PM side: "embedded" (the projects above, imported into taskbridge) or "redmine" (the
# issues of a Redmine server; see the README's "Syncing a Redmine").
kind = "embedded"
# Where the PM side is. embedded: empty for pm.sqlite in the data directory, or a postgres://
# URL (without the password; it may be the [state] database) that puts the projects and status
# updates in PostgreSQL, shared by every instance and CLI process; the password comes from the
# variable, else the file. redmine: Redmine's https:// URL (plain http:// only on this machine).
url = ""
password_env = "TASKBRIDGE_PM_PASSWORD"
password_file = "pm.password"
# Extra CA certificates (PEM) trusted for the PM database's TLS (sslmode=require in the URL),
# or for Redmine's certificate.
ca_file = ""
# Redmine: an administrator's API key in the variable or, when it is unset, the file (readable
# by its owner only).
api_key_env = "TASKBRIDGE_REDMINE_API_KEY"
api_key_file = "redmine.key"
# The Redmine projects by identifier, with their subprojects or not; the trackers and open
# statuses in scope (empty: all).
projects = []
subprojects = false
trackers = []
statuses = []
# The status a task completed in Outlook sets (empty: the first closed one); the activity of
# time booked from Outlook (empty: Redmine's default).
closed_status = ""
activity = ""
# Seconds between two polls for changed issues (one small request when nothing changed),
# and between two looks at the newest time entries (time booked in Redmine itself); where
# Redmine takes % done from ("issue_field" or "issue_status"); the zone of Redmine's dates.
poll_interval_secs = 30
time_entries_poll_secs = 300
done_ratio = "issue_field"
time_zone = "UTC"

[state]
# Where the sync state lives. Empty: state.sqlite in the data directory. A postgres:// URL
# (without the password) puts it in PostgreSQL, where several instances can share it; the
# password comes from the variable, else the file.
url = ""
password_env = "TASKBRIDGE_STATE_PASSWORD"
password_file = "state.password"
# Extra CA certificates (PEM) trusted for the database's TLS (sslmode=require in the URL).
ca_file = ""

[sync]
# When both sides changed a field: newer-wins, pm-wins, mail-wins or manual.
policy = "newer-wins"
# Under newer-wins, changes this close in time (ms) are a tie, which the PM side wins: Exchange
# gives one LastModifiedTime per item, and its clock is not the PM host's.
clock_skew_ms = 2000
# Quiet time after a notification before the mailbox is read, and the longest wait.
debounce_ms = 2000
max_debounce_ms = 10000
# Every mailbox is reconciled and every project published again this often (heals lost
# notifications and publishes that could not finish).
reconcile_interval_secs = 900
# A task deleted in Outlook: detach, recreate or complete-on-pm.
deleted_task = "detach"
# One publish deletes at most this share of a mailbox's tasks without --force, beyond
# max_delete_floor deletions; beyond it, tasks whose resource's address changed stay in
# that mailbox too.
max_delete_share = 0.5
max_delete_floor = 10
# Attempts of a write before the item is parked and reported.
max_attempts = 3
mailbox_concurrency = 8
queue_capacity = 4096
# In pull mode (or push with [listener] enabled = false): poll a pull subscription per mailbox
# this often (0: rely on reconciliation alone).
pull_interval_secs = 15

[mapping]
# Subject of each task: {project}, {task}, {resource}.
subject_template = "{project}: {task}"
# Task priority (0 to 1000) below this is Low importance, above that is High.
importance_low_below = 500
importance_high_above = 500
# The extended property that tags every task with its assignment (never change it once
# tasks were published: existing tasks would no longer be recognised).
key_property_set_id = "c11ff724-aa03-4555-9952-8fa248a11c3e"
key_property_name = "taskbridge-key"

[mapping.fields]
# Per field: "pm-to-mail", "both" or "off" (see docs/MAPPING.md). Defaults: actual_work and
# percent_complete go both ways, the rest from the PM side only. For example:
# start_date = "both"
# body = "off"
"#;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `content` to `path` readable by the owner only, unless it exists.
fn write_secret(path: &Path, content: &str) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{content}")?;
    Ok(true)
}

/// Runs `taskbridge init`.
pub fn run(args: InitArgs, path: &Path, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if path.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} exists; use --force to overwrite it",
            path.display()
        ))
        .into());
    }
    std::fs::write(path, TEMPLATE)?;
    let raw = config::load(path, true)?;
    let dir = data_dir
        .map(Path::to_path_buf)
        .unwrap_or(raw.data_dir.clone());
    std::fs::create_dir_all(&dir)?;
    let raw = RawConfig {
        data_dir: dir.clone(),
        ..raw
    };
    for (file, bytes) in [
        (&raw.listener.secret_file, 24),
        (&raw.admin.token_file, 24),
        (&raw.exchange.password_file, 16),
    ] {
        let p = raw.data_path(file);
        if write_secret(&p, &random_hex(bytes))? {
            eprintln!("wrote {}", p.display());
        }
    }
    eprintln!("wrote {}", path.display());
    if args.sample {
        let sample = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(SAMPLE_FILE);
        if sample.exists() && !args.force {
            eprintln!("kept {} (use --force to overwrite it)", sample.display());
        } else {
            std::fs::write(&sample, SAMPLE_PROJECT)?;
            eprintln!("wrote {}", sample.display());
        }
        eprintln!(
            "next: taskbridge sim (see the comment at the top of the file), taskbridge import \
             {} --time-zone Europe/Berlin, then taskbridge serve",
            sample.display()
        );
    } else {
        eprintln!(
            "next: taskbridge sim (see the comment at the top of the file), then taskbridge serve"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn config_template_matches_defaults() {
        let table: toml::Table = toml::from_str(TEMPLATE).expect("template parses");
        let from_template = RawConfig::deserialize(table).expect("template has known keys only");
        let defaults = RawConfig {
            data_dir: config::DEFAULT_DATA_DIR.into(),
            ..RawConfig::default()
        };
        assert_eq!(
            toml::to_string(&from_template).expect("serialize"),
            toml::to_string(&defaults).expect("serialize"),
            "the starter file and the built-in defaults differ"
        );
    }
}
