//! `taskbridge.toml`: the raw configuration (file + `TASKBRIDGE_*` environment variables), its
//! validation into the library's typed settings, and the starter file `taskbridge init` writes.
//!
//! Every key can be overridden by an environment variable named after its path:
//! `[exchange] url` is `TASKBRIDGE_EXCHANGE_URL`, `[sync] debounce_ms` is
//! `TASKBRIDGE_SYNC_DEBOUNCE_MS`. Passwords and tokens are never written inline: the file names
//! an environment variable or a file that holds them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use taskbridge::ews::ExchangeVersion;
use taskbridge::ews::client::EwsClientConfig;
use taskbridge::ews::transport::{Auth, Limits, TlsConfig};
use taskbridge::mapping::{FieldTable, MappingConfig};
use taskbridge::pm::embedded::{EmbeddedHost, PmLocation, PostgresPm};
use taskbridge::secret::Secret;
use taskbridge::state::StateLocation;
use taskbridge::sync::{
    DeletedTaskRule, MAX_SUBSCRIPTIONS_PER_CONNECTION, Policy, StreamingSettings, SyncConfig,
};

use super::CliError;

/// The value of `exchange.url` that asks for Autodiscover.
pub const AUTODISCOVER: &str = "autodiscover";
/// The cache file, in the data directory.
pub const CACHE_FILE: &str = "autodiscover.json";

/// What the Autodiscover cache holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AutodiscoverFound {
    /// The address looked up.
    pub address: String,
    /// The EWS URL found.
    pub ews_url: String,
    /// The Autodiscover URL that answered (absent in caches written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autodiscover_url: Option<String>,
    /// When.
    pub found_at: chrono::DateTime<chrono::Utc>,
}

/// The cache of the mailboxes' server-affinity groups, in the data directory.
pub const GROUPS_CACHE_FILE: &str = "autodiscover-groups.json";

/// What the affinity-group cache holds: each mailbox's grouping key (GroupingInformation and
/// EWS URL), as SOAP Autodiscover gave them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AffinityGroupsFound {
    /// Grouping key by mailbox address (lowercase).
    pub groups: std::collections::BTreeMap<String, String>,
    /// When.
    pub found_at: chrono::DateTime<chrono::Utc>,
}

/// The whole file, as written (defaults filled in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where the data files live (state, PM store, secrets).
    pub data_dir: PathBuf,
    /// The Exchange server.
    pub exchange: RawExchange,
    /// The push listener.
    pub listener: RawListener,
    /// The admin endpoint (health, metrics, PM API).
    pub admin: RawAdmin,
    /// The embedded PM store.
    pub pm: RawPm,
    /// The sync state store.
    pub state: RawState,
    /// Several instances over one state store.
    pub cluster: RawCluster,
    /// The sync engine.
    pub sync: RawSync,
    /// The field table.
    pub mapping: MappingConfig,
    /// The web console.
    pub ui: RawUi,
    /// E-mail notices sent through Exchange.
    pub notices: RawNotices,
}

/// `[notices]`: digests to status managers and rejection notices, sent through Exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotices {
    /// Send notices (off by default: the service account then sends mail).
    pub enabled: bool,
    /// How often waiting updates are looked at for a digest, in seconds.
    pub digest_interval_secs: u64,
    /// The first wait before a notice that could not be sent is tried again, in seconds
    /// (doubled per failure, up to ten times this).
    pub retry_secs: u64,
    /// Per project (its name or GUID), the status managers' addresses that get the digest.
    pub status_managers: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for RawNotices {
    fn default() -> Self {
        RawNotices {
            enabled: false,
            digest_interval_secs: 3600,
            retry_secs: 30,
            status_managers: std::collections::BTreeMap::new(),
        }
    }
}

/// `[ui]`: the web console on the admin address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUi {
    /// The console's accounts (written by `taskbridge users`).
    pub users_file: String,
    /// A header a reverse proxy sets to the signed-in user's name, for single sign-on (empty:
    /// none). Believed only from `trusted_proxies`.
    pub trusted_user_header: String,
    /// The reverse proxies' addresses (IP addresses).
    pub trusted_proxies: Vec<String>,
    /// Mark the console's cookies `Secure` on plain HTTP too (TLS ends at a proxy in front).
    pub secure_cookies: bool,
}

impl Default for RawUi {
    fn default() -> Self {
        RawUi {
            users_file: "console-users.json".into(),
            trusted_user_header: String::new(),
            trusted_proxies: Vec::new(),
            secure_cookies: false,
        }
    }
}

/// `[exchange]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExchange {
    /// The EWS endpoint URL, or `autodiscover` to find it by Autodiscover (see
    /// `autodiscover_address`).
    pub url: String,
    /// With `url = "autodiscover"`: the address whose EWS URL is looked up (a mailbox on the
    /// right site); empty means `user` when that is an address.
    pub autodiscover_address: String,
    /// With `url = "autodiscover"`: an Autodiscover URL to ask first (`.svc` for SOAP, `.xml`
    /// for POX) instead of the standard places.
    pub autodiscover_url: String,
    /// With `url = "autodiscover"`: how long a found URL is used before it is looked up again.
    pub autodiscover_cache_hours: u64,
    /// With `url = "autodiscover"`: the time-out of each Autodiscover step.
    pub autodiscover_timeout_secs: u64,
    /// `RequestServerVersion`.
    pub version: String,
    /// `none`, `basic`, `ntlm`, `negotiate`, `bearer` or `oauth`.
    pub auth: String,
    /// With `auth = "negotiate"`: the service principal name (`HTTP/host`); empty means
    /// `HTTP/<host of url>`. Kerberos credentials come from the process's ticket cache
    /// (`KRB5CCNAME`) or client keytab (`KRB5_CLIENT_KTNAME`).
    pub spn: String,
    /// The service account (`DOMAIN\user` or `user@domain`).
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// File holding the password (used when the variable is unset).
    pub password_file: String,
    /// Environment variable holding a bearer token.
    pub token_env: String,
    /// File holding a bearer token.
    pub token_file: String,
    /// OAuth token endpoint (client-credentials flow).
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// Environment variable holding the OAuth client secret.
    pub client_secret_env: String,
    /// File holding the OAuth client secret.
    pub client_secret_file: String,
    /// OAuth scope.
    pub scope: String,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: String,
    /// Accept any certificate (never in production).
    pub accept_invalid_certs: bool,
    /// Allow credentials over plain http to a host other than loopback.
    pub allow_plaintext: bool,
    /// Requests in flight per mailbox.
    pub per_mailbox_in_flight: usize,
    /// Requests in flight in total.
    pub total_in_flight: usize,
    /// Items per create/update/delete batch.
    pub batch_size: usize,
    /// Items per GetItem batch.
    pub get_item_batch: usize,
}

impl Default for RawExchange {
    fn default() -> Self {
        let limits = Limits::default();
        RawExchange {
            url: "http://127.0.0.1:8443/EWS/Exchange.asmx".into(),
            autodiscover_address: String::new(),
            autodiscover_url: String::new(),
            autodiscover_cache_hours: 24,
            autodiscover_timeout_secs: 10,
            version: "Exchange2013_SP1".into(),
            auth: "basic".into(),
            spn: String::new(),
            user: "taskbridge@sim.example".into(),
            password_env: "TASKBRIDGE_EXCHANGE_PASSWORD".into(),
            password_file: "exchange.password".into(),
            token_env: String::new(),
            token_file: String::new(),
            token_url: String::new(),
            client_id: String::new(),
            client_secret_env: String::new(),
            client_secret_file: String::new(),
            scope: "https://outlook.office365.com/.default".into(),
            ca_file: String::new(),
            accept_invalid_certs: false,
            allow_plaintext: false,
            per_mailbox_in_flight: limits.per_mailbox_in_flight,
            total_in_flight: limits.total_in_flight,
            batch_size: limits.batch_size,
            get_item_batch: limits.get_item_batch,
        }
    }
}

/// `[listener]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListener {
    /// How mailbox changes are heard of: `push` (Exchange posts to this listener), `streaming`
    /// (taskbridge holds GetStreamingEvents connections; nothing listens) or `pull` (taskbridge
    /// polls GetEvents every `sync.pull_interval_secs`).
    pub mode: String,
    /// In push mode, whether to listen (off: as pull, polling every `sync.pull_interval_secs`
    /// when that is not 0).
    pub enabled: bool,
    /// Address to listen on.
    pub listen: String,
    /// The URL Exchange posts to, without the secret (what the firewall / reverse proxy
    /// exposes).
    pub public_url: String,
    /// File holding the path secret (created by `taskbridge init`).
    pub secret_file: String,
    /// Largest notification body accepted.
    pub max_body_bytes: usize,
    /// Connections open at once (the longest idle is closed to make room for a new one).
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_address: usize,
    /// TLS certificate chain (PEM); HTTPS when set with `tls_key`.
    pub tls_cert: String,
    /// TLS private key (PEM).
    pub tls_key: String,
    /// Minutes between Exchange's status notifications.
    pub status_frequency_minutes: u64,
    /// Streaming mode: minutes each GetStreamingEvents connection stays open (1 to 30); it is
    /// reopened at once.
    pub streaming_timeout_minutes: u64,
    /// Streaming mode: subscriptions per connection (1 to 200).
    pub streaming_subscriptions_per_connection: usize,
}

/// `listener.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerMode {
    /// Exchange posts notifications to the listener.
    Push,
    /// taskbridge holds streaming connections.
    Streaming,
    /// taskbridge polls pull subscriptions.
    Pull,
}

impl Default for RawListener {
    fn default() -> Self {
        RawListener {
            enabled: true,
            listen: "127.0.0.1:8081".into(),
            public_url: "http://127.0.0.1:8081/ews/notify".into(),
            secret_file: "listener.secret".into(),
            max_body_bytes: 1 << 20,
            max_connections: 256,
            max_connections_per_address: 64,
            tls_cert: String::new(),
            tls_key: String::new(),
            status_frequency_minutes: 1,
            mode: "push".into(),
            streaming_timeout_minutes: 30,
            streaming_subscriptions_per_connection: 200,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Address of `/healthz`, `/metrics` and the PM API.
    pub listen: String,
    /// File holding the bearer token of the PM API (created by `taskbridge init`).
    pub token_file: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:8082".into(),
            token_file: "admin.token".into(),
        }
    }
}

/// `[pm]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPm {
    /// Status update policy of newly imported projects: `auto` or `approval`.
    pub default_policy: String,
    /// Outgoing webhook for applied updates (empty: none).
    pub webhook_url: String,
    /// File holding the webhook's HMAC secret.
    pub webhook_secret_file: String,
    /// A folder `serve` watches for plans (MSPDI or JSON) to import and publish, writing
    /// `NAME.taskbridge.xml` beside each once progress is applied (empty: none).
    pub watch_dir: String,
    /// The IANA time zone the dates of plans in the watch folder are local to.
    pub watch_time_zone: String,
    /// The PM host: `embedded` (projects imported into taskbridge) or `redmine`.
    pub kind: String,
    /// Where the PM side is. `kind = "embedded"`: empty for `pm.sqlite` in the data
    /// directory, else a `postgres://` URL (without the password; see `password_env`), shared by
    /// every instance. `kind = "redmine"`: Redmine's URL.
    pub url: String,
    /// Environment variable holding the PM database's password (`kind = "embedded"`).
    pub password_env: String,
    /// File holding the PM database's password (used when the variable is unset).
    pub password_file: String,
    /// Extra trusted CA certificates (PEM) for the PM database's TLS, or Redmine's
    /// (`kind = "redmine"`).
    pub ca_file: String,
    /// Environment variable holding the Redmine administrator's API key.
    pub api_key_env: String,
    /// File holding the API key (used when the variable is unset).
    pub api_key_file: String,
    /// The Redmine projects to sync, by identifier.
    pub projects: Vec<String>,
    /// Whether the projects' subprojects are synced with them.
    pub subprojects: bool,
    /// Tracker names in scope (empty: all).
    pub trackers: Vec<String>,
    /// Open status names in scope (empty: every open status).
    pub statuses: Vec<String>,
    /// The status a task completed in a mailbox sets (empty: the first closed status).
    pub closed_status: String,
    /// The activity of time entries booked from mailboxes (empty: Redmine's default).
    pub activity: String,
    /// Seconds between two polls of Redmine for changed issues.
    pub poll_interval_secs: u64,
    /// Seconds between two looks at Redmine's newest time entries (time booked in Redmine
    /// itself moves no issue's `updated_on`); at least `poll_interval_secs`.
    pub time_entries_poll_secs: u64,
    /// Where Redmine takes % done from: `issue_field` or `issue_status` (Redmine's
    /// "Calculate the issue done ratio with" setting).
    pub done_ratio: String,
    /// The IANA time zone Redmine's dates are local to.
    pub time_zone: String,
}

impl Default for RawPm {
    fn default() -> Self {
        RawPm {
            default_policy: "auto".into(),
            webhook_url: String::new(),
            webhook_secret_file: String::new(),
            watch_dir: String::new(),
            watch_time_zone: "UTC".into(),
            kind: "embedded".into(),
            url: String::new(),
            password_env: "TASKBRIDGE_PM_PASSWORD".into(),
            password_file: "pm.password".into(),
            ca_file: String::new(),
            api_key_env: "TASKBRIDGE_REDMINE_API_KEY".into(),
            api_key_file: "redmine.key".into(),
            projects: Vec::new(),
            subprojects: false,
            trackers: Vec::new(),
            statuses: Vec::new(),
            closed_status: String::new(),
            activity: String::new(),
            poll_interval_secs: 30,
            time_entries_poll_secs: 300,
            done_ratio: "issue_field".into(),
            time_zone: "UTC".into(),
        }
    }
}

/// `[state]`: where the sync state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    /// Empty: `state.sqlite` in the data directory. Else a `postgres://` URL (without the
    /// password; see `password_env`), shared by every instance.
    pub url: String,
    /// Environment variable holding the database password.
    pub password_env: String,
    /// File holding the database password (used when the variable is unset).
    pub password_file: String,
    /// Extra trusted CA certificates (PEM) for the database's TLS.
    pub ca_file: String,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            url: String::new(),
            password_env: "TASKBRIDGE_STATE_PASSWORD".into(),
            password_file: "state.password".into(),
            ca_file: String::new(),
        }
    }
}

/// `[cluster]`: how `serve` instances sharing one state store divide the mailboxes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// How long a mailbox lease lasts without renewal: after an instance dies, its mailboxes
    /// wait at most this long for another instance.
    pub lease_seconds: u64,
    /// How often an instance renews its leases (well under `lease_seconds`).
    pub renew_seconds: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            lease_seconds: 30,
            renew_seconds: 10,
        }
    }
}

/// `[sync]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    /// `newer-wins`, `pm-wins`, `mail-wins` or `manual`.
    pub policy: String,
    /// Under `newer-wins`, change times closer than this are a tie (the PM side wins).
    pub clock_skew_ms: u64,
    /// Quiet time after a notification before a mailbox is read.
    pub debounce_ms: u64,
    /// Longest wait under a stream of notifications.
    pub max_debounce_ms: u64,
    /// Seconds between reconciliation passes.
    pub reconcile_interval_secs: u64,
    /// `detach`, `recreate` or `complete-on-pm`.
    pub deleted_task: String,
    /// Largest share of a mailbox's tasks one publish may delete without `--force`.
    pub max_delete_share: f64,
    /// Deletions up to this many are always allowed.
    pub max_delete_floor: usize,
    /// Attempts of a write before the item is parked.
    pub max_attempts: u32,
    /// Mailboxes worked on at once.
    pub mailbox_concurrency: usize,
    /// Notifications queued before the listener answers "busy".
    pub queue_capacity: usize,
    /// With the listener off: seconds between polls of a pull subscription per mailbox (0: no
    /// subscription, reconciliation alone).
    pub pull_interval_secs: u64,
}

impl Default for RawSync {
    fn default() -> Self {
        let d = SyncConfig::default();
        RawSync {
            policy: "newer-wins".into(),
            clock_skew_ms: d.clock_skew.as_millis() as u64,
            debounce_ms: d.debounce.as_millis() as u64,
            max_debounce_ms: d.max_debounce.as_millis() as u64,
            reconcile_interval_secs: d.reconcile_interval.as_secs(),
            deleted_task: "detach".into(),
            max_delete_share: d.max_delete_share,
            max_delete_floor: d.max_delete_floor,
            max_attempts: d.max_attempts,
            mailbox_concurrency: d.mailbox_concurrency,
            queue_capacity: d.queue_capacity,
            pull_interval_secs: 15,
        }
    }
}

/// The data directory when neither the file nor `--data-dir` names one.
pub const DEFAULT_DATA_DIR: &str = "taskbridge-data";

/// `TASKBRIDGE_*` variables that are not keys and are not refused: the command line's own
/// (`--config`, `--data-dir`, `--log`, `--log-format`), the default password variable, and the
/// test suite's, which every process it starts inherits.
const OTHER_VARIABLES: &[&str] = &[
    "TASKBRIDGE_CONFIG",
    "TASKBRIDGE_DATA_DIR",
    "TASKBRIDGE_LOG",
    "TASKBRIDGE_LOG_FORMAT",
    "TASKBRIDGE_EXCHANGE_PASSWORD",
    "TASKBRIDGE_TEST_REQUIRE_ALL",
    "TASKBRIDGE_EWS_SCHEMA_DIR",
    "TASKBRIDGE_ENVELOPE_DIR",
    "TASKBRIDGE_RECORD_DIR",
    "TASKBRIDGE_RECORD_FIXTURES",
    "TASKBRIDGE_CHAOS_KEEP",
    "TASKBRIDGE_CHAOS_CONFLICT_MODEL",
    // The test harnesses' own settings (tests/external, scripts/redmine.sh), which may be set
    // in a shell that also runs taskbridge.
    "TASKBRIDGE_PG_BIN",
    "TASKBRIDGE_CHROMIUM",
    "TASKBRIDGE_CHROMEDRIVER",
    "TASKBRIDGE_REDMINE_DIR",
    "TASKBRIDGE_REDMINE_PORT",
];

/// Where a value of the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// A `TASKBRIDGE_*` environment variable (its name).
    Variable(String),
}

/// The configuration with the source of each key.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub raw: RawConfig,
    /// The dotted key paths the file sets.
    file_keys: std::collections::BTreeSet<String>,
    /// Dotted key path -> the variable that set it.
    variables: BTreeMap<String, String>,
}

impl Loaded {
    /// Where the value at `path` (`section.key`) came from.
    pub fn source(&self, path: &str) -> Source {
        if let Some(var) = self.variables.get(path) {
            Source::Variable(var.clone())
        } else if self.file_keys.contains(path) {
            Source::File
        } else {
            Source::Default
        }
    }
}

/// Reads the file (when it exists; defaults otherwise) and applies `TASKBRIDGE_*` overrides.
pub fn load(path: &Path, must_exist: bool) -> Result<RawConfig, CliError> {
    load_with_sources(path, must_exist, std::env::vars()).map(|l| l.raw)
}

/// [`load`] with the source of each value; `vars` are the process's environment variables.
/// A file that `must_exist` (named explicitly) and is missing, an unknown `TASKBRIDGE_*`
/// variable and a value of the wrong type are usage errors that name the file, the variable or
/// the key and line.
pub fn load_with_sources(
    path: &Path,
    must_exist: bool,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Loaded, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Usage(format!(
                "configuration file {} does not exist (named by --config or TASKBRIDGE_CONFIG)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot read configuration {}: {e}",
                path.display()
            )));
        }
    };
    let mut value: toml::Table =
        toml::from_str(&text).map_err(|e| CliError::Usage(located(path, &text, &e, None)))?;
    let mut file_keys = std::collections::BTreeSet::new();
    leaf_paths(&[], &value, &mut |p| {
        file_keys.insert(p.join("."));
    });
    let vars: Vec<(String, String)> = vars
        .filter(|(name, _)| name.starts_with("TASKBRIDGE_"))
        .collect();
    let applied = apply_env(&mut value, vars.iter().cloned())?;
    let mut raw: RawConfig = RawConfig::deserialize(value).map_err(|e| {
        let key = error_key(&e);
        match key
            .as_ref()
            .and_then(|k| applied.iter().find(|(_, p)| p == k))
        {
            Some((var, key)) => CliError::Usage(format!("{var} ({key}): {}", e.message().trim())),
            None => {
                // The file alone gives the same error with its position.
                let spanned = toml::from_str::<RawConfig>(&text).err();
                CliError::Usage(located(path, &text, spanned.as_ref().unwrap_or(&e), key))
            }
        }
    })?;
    if raw.data_dir.as_os_str().is_empty() {
        raw.data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    }
    // Variables named by the file itself (where a password or token is) are not keys either.
    let named = [
        &raw.state.password_env,
        &raw.pm.password_env,
        &raw.exchange.password_env,
        &raw.exchange.token_env,
        &raw.exchange.client_secret_env,
        &raw.pm.api_key_env,
    ];
    let known = known_paths();
    for (name, _) in &vars {
        if known.contains_key(name)
            || OTHER_VARIABLES.contains(&name.as_str())
            || named.contains(&name)
        {
            continue;
        }
        let candidates = known
            .keys()
            .map(String::as_str)
            .chain(OTHER_VARIABLES.iter().copied());
        let hint = closest(name, candidates)
            .map(|c| format!(" (did you mean {c}?)"))
            .unwrap_or_default();
        return Err(CliError::Usage(format!(
            "unknown environment variable {name}{hint}: TASKBRIDGE_* variables override keys of \
             the configuration"
        )));
    }
    Ok(Loaded {
        raw,
        file_keys,
        variables: applied.into_iter().map(|(var, key)| (key, var)).collect(),
    })
}

/// The dotted key a deserialization error names (toml prints it as "in `a.b`" when it has no
/// position).
fn error_key(e: &toml::de::Error) -> Option<String> {
    let text = e.to_string();
    let start = text.rfind("in `")? + 4;
    let end = start + text[start..].find('`')?;
    Some(text[start..end].to_string())
}

/// "FILE: line N: KEY: message", with what is known of each.
fn located(path: &Path, text: &str, e: &toml::de::Error, key: Option<String>) -> String {
    let mut out = format!("{}", path.display());
    if let Some(span) = e.span() {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        out.push_str(&format!(": line {line}"));
    }
    if let Some(key) = key.or_else(|| error_key(e)) {
        out.push_str(&format!(": {key}"));
    }
    out.push_str(&format!(": {}", e.message().trim()));
    out
}

/// The known name closest to `name`, if it is close enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// Calls `f` with the path of every value that is not a non-empty table.
fn leaf_paths(prefix: &[String], table: &toml::Table, f: &mut dyn FnMut(&[String])) {
    for (k, v) in table {
        let mut path = prefix.to_vec();
        path.push(k.clone());
        match v {
            toml::Value::Table(t) if !t.is_empty() => leaf_paths(&path, t, f),
            _ => f(&path),
        }
    }
}

/// The built-in defaults as a table.
pub fn default_table() -> toml::Table {
    toml::Table::try_from(RawConfig::default()).expect("defaults serialize")
}

/// The keys of the file: variable name -> (path, whether the default is a string).
fn known_paths() -> BTreeMap<String, (Vec<String>, bool)> {
    let defaults = default_table();
    let mut paths = BTreeMap::new();
    leaf_paths(&[], &defaults, &mut |path| {
        let env = format!("TASKBRIDGE_{}", path.join("_").to_ascii_uppercase());
        let mut v = &toml::Value::Table(defaults.clone());
        for part in path {
            v = &v[part.as_str()];
        }
        paths.insert(env, (path.to_vec(), v.is_str()));
    });
    paths
}

/// Applies `TASKBRIDGE_<SECTION>_<KEY>` variables and returns (variable, dotted key) of each
/// applied. A key whose default is a string takes the value as it is; any other key reads it
/// as a number or a boolean when it parses as one (else a string, which deserialization then
/// refuses naming the variable).
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, CliError> {
    // Variables that are not keys are left alone here (`load_with_sources` refuses unknown ones).
    let known = known_paths();
    let mut applied = Vec::new();
    for (name, value) in vars {
        let Some((path, is_string)) = known.get(&name) else {
            continue;
        };
        let parsed = if *is_string {
            toml::Value::String(value)
        } else if let Ok(i) = value.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(f) = value.parse::<f64>() {
            toml::Value::Float(f)
        } else if let Ok(b) = value.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(value)
        };
        let mut t = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = t
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| {
                CliError::Usage(format!("{name}: [{part}] is not a table in the file"))
            })?;
        }
        t.insert(path[path.len() - 1].clone(), parsed);
        applied.push((name, path.join(".")));
    }
    Ok(applied)
}

/// Refuses a secret file that the group or others may read, naming the `chmod` that fixes it.
pub fn refuse_if_readable_by_others(key: &str, path: &Path) -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(
                    key,
                    format!(
                        "{} is readable by others (mode {mode:o}); run: chmod 600 {}",
                        path.display(),
                        path.display()
                    ),
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (key, path);
    Ok(())
}

fn bad(key: &str, reason: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("invalid configuration: {key}: {reason}"))
}

impl RawConfig {
    /// A path relative to the data directory (absolute paths stay as they are).
    /// The web console's settings from `[ui]`.
    pub fn console(&self) -> Result<taskbridge::console::ConsoleConfig, CliError> {
        let trusted_proxies = self
            .ui
            .trusted_proxies
            .iter()
            .map(|a| {
                a.trim()
                    .parse()
                    .map_err(|_| bad("ui.trusted_proxies", format!("{a:?} is not an IP address")))
            })
            .collect::<Result<Vec<std::net::IpAddr>, CliError>>()?;
        let header = self.ui.trusted_user_header.trim();
        if !header.is_empty() && http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(bad("ui.trusted_user_header", "not a header name"));
        }
        if !header.is_empty() && trusted_proxies.is_empty() {
            return Err(bad(
                "ui.trusted_user_header",
                "needs ui.trusted_proxies: the header is believed only from those addresses",
            ));
        }
        Ok(taskbridge::console::ConsoleConfig {
            users_file: self.data_path(&self.ui.users_file),
            trusted_user_header: (!header.is_empty()).then(|| header.to_owned()),
            trusted_proxies,
            secure_cookies: self.ui.secure_cookies,
        })
    }

    /// The notices' settings from `[notices]`, or `None` when they are off.
    pub fn notices(&self) -> Result<Option<taskbridge::exchange::notices::NoticeConfig>, CliError> {
        if !self.notices.enabled {
            return Ok(None);
        }
        if self.notices.digest_interval_secs == 0 {
            return Err(bad("notices.digest_interval_secs", "must be at least 1"));
        }
        if self.notices.retry_secs == 0 {
            return Err(bad("notices.retry_secs", "must be at least 1"));
        }
        for (project, to) in &self.notices.status_managers {
            if let Some(a) = to.iter().find(|a| !a.contains('@')) {
                return Err(bad(
                    "notices.status_managers",
                    format!("{project:?}: {a:?} is not an e-mail address"),
                ));
            }
        }
        Ok(Some(taskbridge::exchange::notices::NoticeConfig {
            digest_interval: std::time::Duration::from_secs(self.notices.digest_interval_secs),
            status_managers: self.notices.status_managers.clone(),
            retry_after: std::time::Duration::from_secs(self.notices.retry_secs),
            ..Default::default()
        }))
    }

    /// `file` under the data directory unless it is absolute.
    pub fn data_path(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }

    fn read_secret(&self, key: &str, env: &str, file: &str) -> Result<Option<Secret>, CliError> {
        if !env.is_empty()
            && let Ok(v) = std::env::var(env)
            && !v.is_empty()
        {
            return Ok(Some(Secret::new(v)));
        }
        if file.is_empty() {
            return Ok(None);
        }
        let path = self.data_path(file);
        match std::fs::read_to_string(&path) {
            Ok(v) => {
                refuse_if_readable_by_others(key, &path)?;
                Ok(Some(Secret::new(
                    v.trim_end_matches(['\r', '\n']).to_string(),
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(key, format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// The Redmine host's settings when `pm.kind` is `redmine` (`None` for the embedded host),
    /// with the API key from `api_key_env` or `api_key_file`.
    pub fn redmine(&self) -> Result<Option<taskbridge::pm::redmine::RedmineConfig>, CliError> {
        use taskbridge::pm::redmine::{DoneRatio, RedmineConfig};
        let pm = &self.pm;
        match pm.kind.as_str() {
            "embedded" => return Ok(None),
            "redmine" => {}
            other => {
                return Err(bad(
                    "pm.kind",
                    format!("must be embedded or redmine, not {other:?}"),
                ));
            }
        }
        let url = reqwest::Url::parse(pm.url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| bad("pm.url", "must be Redmine's http:// or https:// URL"))?;
        if pm.projects.is_empty() {
            return Err(bad(
                "pm.projects",
                "name at least one Redmine project identifier",
            ));
        }
        let key = self
            .read_secret("pm.api_key_file", &pm.api_key_env, &pm.api_key_file)?
            .ok_or_else(|| {
                bad(
                    "pm.api_key_env",
                    format!(
                        "no Redmine API key: set {} or write it to {}",
                        pm.api_key_env,
                        self.data_path(&pm.api_key_file).display()
                    ),
                )
            })?;
        let mut config =
            RedmineConfig::new(url.as_str().trim_end_matches('/'), key, pm.projects.clone());
        config.subprojects = pm.subprojects;
        config.trackers = pm.trackers.clone();
        config.statuses = pm.statuses.clone();
        config.closed_status = pm.closed_status.clone();
        config.activity = pm.activity.clone();
        if !pm.ca_file.is_empty() {
            let tls = taskbridge::ews::transport::rustls_client_config(
                &taskbridge::ews::transport::TlsConfig {
                    extra_ca_file: Some(PathBuf::from(&pm.ca_file)),
                    ..Default::default()
                },
            )
            .map_err(|e| bad("pm.ca_file", e.to_string()))?;
            config.tls = Some(tls);
        }
        // Redmine has no approval of status updates: taskbridge keeps them (pending ones, and
        // every outcome for resubmissions) in a file of its own in the data directory.
        config.updates_file = Some(self.data_path(REDMINE_UPDATES_FILE));
        config.approval = match pm.default_policy.as_str() {
            "auto" => false,
            "approval" => true,
            _ => return Err(bad("pm.default_policy", "must be auto or approval")),
        };
        if pm.poll_interval_secs == 0 {
            return Err(bad("pm.poll_interval_secs", "must be at least 1"));
        }
        config.poll_interval = std::time::Duration::from_secs(pm.poll_interval_secs);
        if pm.time_entries_poll_secs < pm.poll_interval_secs {
            return Err(bad(
                "pm.time_entries_poll_secs",
                "must be at least pm.poll_interval_secs",
            ));
        }
        config.time_entries_poll_interval =
            std::time::Duration::from_secs(pm.time_entries_poll_secs);
        config.done_ratio = match pm.done_ratio.as_str() {
            "issue_field" => DoneRatio::IssueField,
            "issue_status" => DoneRatio::IssueStatus,
            _ => return Err(bad("pm.done_ratio", "must be issue_field or issue_status")),
        };
        config.time_zone = pm.time_zone.parse().map_err(|_| {
            bad(
                "pm.time_zone",
                format!("unknown time zone {:?}", pm.time_zone),
            )
        })?;
        Ok(Some(config))
    }

    /// Where the sync state lives: `state.sqlite` in the data directory, or the PostgreSQL
    /// database of `state.url` with its password from `password_env` or `password_file`.
    pub fn state_location(&self) -> Result<StateLocation, CliError> {
        let st = &self.state;
        if st.url.trim().is_empty() {
            return Ok(StateLocation::Sqlite(self.data_path("state.sqlite")));
        }
        let url = st.url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "state.url",
                "must be empty (SQLite in the data directory) or a postgres:// URL",
            ));
        }
        if taskbridge::state::without_password(url) != url {
            return Err(bad(
                "state.url",
                format!(
                    "holds a password; put it in {} or {} instead",
                    st.password_env,
                    self.data_path(&st.password_file).display()
                ),
            ));
        }
        let password =
            self.read_secret("state.password_env", &st.password_env, &st.password_file)?;
        Ok(StateLocation::Postgres {
            url: url.to_string(),
            password,
            tls: taskbridge::state::PostgresTls {
                extra_ca_file: (!st.ca_file.is_empty()).then(|| PathBuf::from(&st.ca_file)),
            },
        })
    }

    /// Where the PM store lives: `pm.sqlite` in the data directory, or the PostgreSQL
    /// database of `pm.url` with its password from `password_env` or `password_file` (TLS as
    /// the EWS client trusts, plus `ca_file`). With `kind = "redmine"`, `pm.url` is Redmine's
    /// and the store is the file in the data directory.
    pub fn pm_location(&self) -> Result<PmLocation, CliError> {
        let pm = &self.pm;
        let url = pm.url.trim();
        if url.is_empty() || pm.kind == "redmine" {
            return Ok(PmLocation::Sqlite(self.data_path(EmbeddedHost::FILE_NAME)));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "pm.url",
                "must be empty (SQLite in the data directory) or a postgres:// URL",
            ));
        }
        if taskbridge::state::without_password(url) != url {
            return Err(bad(
                "pm.url",
                format!(
                    "holds a password; put it in {} or {} instead",
                    pm.password_env,
                    self.data_path(&pm.password_file).display()
                ),
            ));
        }
        let password = self.read_secret("pm.password_env", &pm.password_env, &pm.password_file)?;
        let tls = taskbridge::ews::transport::rustls_client_config(
            &taskbridge::ews::transport::TlsConfig {
                extra_ca_file: (!pm.ca_file.is_empty()).then(|| PathBuf::from(&pm.ca_file)),
                ..Default::default()
            },
        )
        .map_err(|e| bad("pm.ca_file", e.to_string()))?;
        Ok(PmLocation::Postgres(PostgresPm {
            url: url.to_string(),
            password,
            tls: std::sync::Arc::new(tls),
        }))
    }

    /// The EWS client settings. With `url = "autodiscover"` the URL is the one Autodiscover
    /// found last (the `autodiscover` command module looks it up when the cache is stale).
    pub fn exchange(&self) -> Result<EwsClientConfig, CliError> {
        let endpoint = if self.exchange.url == AUTODISCOVER {
            self.autodiscover_cached_url()?
        } else {
            self.exchange.url.clone()
        };
        self.exchange_at(endpoint)
    }

    /// The address whose EWS URL is looked up.
    pub fn autodiscover_address(&self) -> Result<String, CliError> {
        let x = &self.exchange;
        let address = if x.autodiscover_address.trim().is_empty() {
            x.user.trim()
        } else {
            x.autodiscover_address.trim()
        };
        if address.contains('@') && !address.starts_with('@') && !address.ends_with('@') {
            Ok(address.to_string())
        } else {
            Err(bad(
                "exchange.autodiscover_address",
                "url = \"autodiscover\" needs an e-mail address to look up: set \
                 autodiscover_address (or a user of the form name@domain)",
            ))
        }
    }

    /// The cache of `url = "autodiscover"`, if there is one.
    pub fn autodiscover_cache(&self) -> Result<Option<AutodiscoverFound>, CliError> {
        let path = self.data_path(CACHE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                bad(
                    "exchange.url",
                    format!(
                        "{} is damaged ({e}): delete it to look the URL up again",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(
                "exchange.url",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// The EWS URL Autodiscover found last for the configured address.
    pub fn autodiscover_cached_url(&self) -> Result<String, CliError> {
        let address = self.autodiscover_address()?;
        match self.autodiscover_cache()? {
            Some(found) if found.address.eq_ignore_ascii_case(&address) => Ok(found.ews_url),
            _ => Err(bad(
                "exchange.url",
                format!(
                    "Autodiscover has not found an EWS URL for {address} yet: run `taskbridge \
                     check --autodiscover {address}` to see each step"
                ),
            )),
        }
    }

    /// Checks `[exchange]` without talking to Exchange: with `url = "autodiscover"` the URL is
    /// found when a command starts, so only what Autodiscover needs is checked.
    pub fn check_exchange(&self) -> Result<(), CliError> {
        if self.exchange.url == AUTODISCOVER {
            self.autodiscover_address()?;
            self.exchange_for_autodiscover().map(|_| ())
        } else {
            self.exchange().map(|_| ())
        }
    }

    /// The credentials and TLS settings Autodiscover uses (those of EWS; the URL is a
    /// placeholder).
    pub fn exchange_for_autodiscover(&self) -> Result<EwsClientConfig, CliError> {
        self.exchange_at("https://autodiscover.invalid/EWS/Exchange.asmx".into())
    }

    /// The EWS client settings with `endpoint` as the URL.
    fn exchange_at(&self, endpoint: String) -> Result<EwsClientConfig, CliError> {
        let x = &self.exchange;
        let url = reqwest::Url::parse(&endpoint).map_err(|e| bad("exchange.url", e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("exchange.url", "must be an http or https URL"));
        }
        let version: ExchangeVersion = x.version.parse().unwrap_or_else(|e| match e {});
        if let ExchangeVersion::Other(v) = &version {
            return Err(bad("exchange.version", format!("unknown version {v:?}")));
        }
        let need_password = |key: &str| -> Result<Secret, CliError> {
            self.read_secret(key, &x.password_env, &x.password_file)?
                .ok_or_else(|| {
                    bad(
                        key,
                        format!(
                            "no password: set {} or write it to {}",
                            if x.password_env.is_empty() {
                                "password_env"
                            } else {
                                &x.password_env
                            },
                            self.data_path(&x.password_file).display()
                        ),
                    )
                })
        };
        let auth = match x.auth.as_str() {
            "none" => Auth::None,
            "basic" | "ntlm" => {
                if x.user.trim().is_empty() {
                    return Err(bad("exchange.user", "required for basic and ntlm"));
                }
                let password = need_password("exchange.password_env")?;
                if x.auth == "basic" {
                    Auth::Basic {
                        user: x.user.clone(),
                        password,
                    }
                } else {
                    Auth::Ntlm {
                        user: x.user.clone(),
                        password,
                    }
                }
            }
            "negotiate" => {
                let spn = x.spn.trim();
                if !spn.is_empty()
                    && !spn
                        .split_once('/')
                        .is_some_and(|(s, h)| !s.is_empty() && !h.is_empty() && !h.contains('/'))
                {
                    return Err(bad(
                        "exchange.spn",
                        format!("{spn:?} is not SERVICE/host (e.g. HTTP/mail.contoso.com)"),
                    ));
                }
                Auth::Negotiate {
                    spn: (!spn.is_empty()).then(|| spn.to_string()),
                }
            }
            "bearer" => Auth::Bearer {
                token: self
                    .read_secret("exchange.token_env", &x.token_env, &x.token_file)?
                    .ok_or_else(|| {
                        bad("exchange.token_env", "no token in token_env or token_file")
                    })?,
            },
            "oauth" => {
                if x.token_url.is_empty() || x.client_id.is_empty() {
                    return Err(bad(
                        "exchange.token_url",
                        "oauth needs token_url and client_id",
                    ));
                }
                Auth::OAuthClientCredentials {
                    token_url: x.token_url.clone(),
                    client_id: x.client_id.clone(),
                    client_secret: self
                        .read_secret(
                            "exchange.client_secret_env",
                            &x.client_secret_env,
                            &x.client_secret_file,
                        )?
                        .ok_or_else(|| bad("exchange.client_secret_env", "no client secret"))?,
                    scope: x.scope.clone(),
                }
            }
            other => {
                return Err(bad(
                    "exchange.auth",
                    format!(
                        "unknown scheme {other:?} (none, basic, ntlm, negotiate, bearer, oauth)"
                    ),
                ));
            }
        };
        for (key, v) in [
            ("exchange.per_mailbox_in_flight", x.per_mailbox_in_flight),
            ("exchange.total_in_flight", x.total_in_flight),
            ("exchange.batch_size", x.batch_size),
            ("exchange.get_item_batch", x.get_item_batch),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        let mut config = EwsClientConfig::new(endpoint, auth);
        config.allow_plaintext = x.allow_plaintext;
        config.version = version;
        config.tls = TlsConfig {
            extra_ca_file: (!x.ca_file.is_empty()).then(|| PathBuf::from(&x.ca_file)),
            accept_invalid_certs: x.accept_invalid_certs,
        };
        config.limits = Limits {
            per_mailbox_in_flight: x.per_mailbox_in_flight,
            total_in_flight: x.total_in_flight,
            batch_size: x.batch_size,
            get_item_batch: x.get_item_batch,
        };
        Ok(config)
    }

    /// The field table.
    pub fn field_table(&self) -> Result<FieldTable, CliError> {
        FieldTable::from_config(&self.mapping).map_err(|e| bad("mapping", e))
    }

    /// `listener.mode`.
    pub fn listener_mode(&self) -> Result<ListenerMode, CliError> {
        match self.listener.mode.as_str() {
            "push" => Ok(ListenerMode::Push),
            "streaming" => Ok(ListenerMode::Streaming),
            "pull" => Ok(ListenerMode::Pull),
            other => Err(bad(
                "listener.mode",
                format!("{other:?} is not push, streaming or pull"),
            )),
        }
    }

    /// Whether the push listener runs (push mode, enabled).
    pub fn push_listener(&self) -> bool {
        self.listener.enabled && matches!(self.listener_mode(), Ok(ListenerMode::Push))
    }

    /// The engine settings (without push; the connector adds the listener URL).
    pub fn sync(&self) -> Result<SyncConfig, CliError> {
        let s = &self.sync;
        let mode = self.listener_mode()?;
        let streaming = match mode {
            ListenerMode::Streaming => {
                let l = &self.listener;
                if !(1..=30).contains(&l.streaming_timeout_minutes) {
                    return Err(bad("listener.streaming_timeout_minutes", "must be 1 to 30"));
                }
                if !(1..=MAX_SUBSCRIPTIONS_PER_CONNECTION)
                    .contains(&l.streaming_subscriptions_per_connection)
                {
                    return Err(bad(
                        "listener.streaming_subscriptions_per_connection",
                        format!("must be 1 to {MAX_SUBSCRIPTIONS_PER_CONNECTION}"),
                    ));
                }
                Some(StreamingSettings {
                    connection_timeout: Duration::from_secs(60 * l.streaming_timeout_minutes),
                    subscriptions_per_connection: l.streaming_subscriptions_per_connection,
                })
            }
            _ => None,
        };
        let polls = match mode {
            ListenerMode::Pull => true,
            ListenerMode::Push => !self.listener.enabled,
            ListenerMode::Streaming => false,
        };
        let policy: Policy = s.policy.parse().map_err(|e| bad("sync.policy", e))?;
        let deleted_task: DeletedTaskRule = s
            .deleted_task
            .parse()
            .map_err(|e| bad("sync.deleted_task", e))?;
        if !(0.0..=1.0).contains(&s.max_delete_share) {
            return Err(bad("sync.max_delete_share", "must be between 0 and 1"));
        }
        if s.max_attempts == 0 {
            return Err(bad("sync.max_attempts", "must be at least 1"));
        }
        if s.reconcile_interval_secs == 0 {
            return Err(bad("sync.reconcile_interval_secs", "must be at least 1"));
        }
        let c = &self.cluster;
        if c.renew_seconds == 0 || c.renew_seconds * 2 > c.lease_seconds {
            return Err(bad(
                "cluster.renew_seconds",
                "must be at least 1 and at most half of cluster.lease_seconds",
            ));
        }
        Ok(SyncConfig {
            lease: taskbridge::state::LeaseTiming {
                lease: Duration::from_secs(c.lease_seconds),
                renew: Duration::from_secs(c.renew_seconds),
            },
            policy,
            clock_skew: Duration::from_millis(s.clock_skew_ms),
            debounce: Duration::from_millis(s.debounce_ms),
            max_debounce: Duration::from_millis(s.max_debounce_ms.max(s.debounce_ms)),
            reconcile_interval: Duration::from_secs(s.reconcile_interval_secs),
            deleted_task,
            max_delete_share: s.max_delete_share,
            max_delete_floor: s.max_delete_floor,
            max_attempts: s.max_attempts,
            mailbox_concurrency: s.mailbox_concurrency.max(1),
            push: None,
            queue_capacity: s.queue_capacity.max(1),
            pull_interval: (polls && s.pull_interval_secs > 0)
                .then(|| Duration::from_secs(s.pull_interval_secs)),
            streaming,
        })
    }

    /// An address key.
    pub fn socket(&self, key: &str, value: &str) -> Result<SocketAddr, CliError> {
        value
            .parse()
            .map_err(|e| bad(key, format!("{value:?} is not an address: {e}")))
    }

    /// Validates everything that can be checked without side effects.
    pub fn validate(&self) -> Result<(), CliError> {
        self.check_exchange()?;
        self.field_table()?;
        self.sync()?;
        if !matches!(self.pm.kind.as_str(), "embedded" | "redmine") {
            return Err(bad("pm.kind", "must be embedded or redmine"));
        }
        if self.push_listener() {
            self.socket("listener.listen", &self.listener.listen)?;
            let url = reqwest::Url::parse(&self.listener.public_url)
                .map_err(|e| bad("listener.public_url", e))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad("listener.public_url", "must be an http or https URL"));
            }
            if !(1..=1440).contains(&self.listener.status_frequency_minutes) {
                return Err(bad(
                    "listener.status_frequency_minutes",
                    "must be 1 to 1440",
                ));
            }
            let ceiling = taskbridge::listener::MAX_BODY_CEILING;
            if !(1..=ceiling).contains(&self.listener.max_body_bytes) {
                return Err(bad(
                    "listener.max_body_bytes",
                    format!("must be 1 to {ceiling} (16 MiB)"),
                ));
            }
            if self.listener.tls_cert.is_empty() != self.listener.tls_key.is_empty() {
                return Err(bad("listener.tls_cert", "tls_cert and tls_key go together"));
            }
        }
        self.socket("admin.listen", &self.admin.listen)?;
        self.console()?;
        if !matches!(self.pm.default_policy.as_str(), "auto" | "approval") {
            return Err(bad("pm.default_policy", "must be auto or approval"));
        }
        Ok(())
    }
}

/// The file in the data directory where taskbridge keeps the Redmine host's status updates.
pub const REDMINE_UPDATES_FILE: &str = "redmine-updates.sqlite";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_mode_chooses_push_streaming_or_pull() {
        let raw = |toml: &str| {
            RawConfig::deserialize(toml.parse::<toml::Table>().expect("toml")).expect("deserialize")
        };
        // The default is push: a listener, no polling, no streaming.
        let push = raw("");
        assert!(push.push_listener());
        let s = push.sync().expect("sync");
        assert_eq!((s.pull_interval, s.streaming), (None, None));
        // Push with the listener off polls, as before modes existed.
        let off = raw("[listener]\nenabled = false");
        assert!(!off.push_listener());
        assert!(off.sync().expect("sync").pull_interval.is_some());

        let streaming = raw("[listener]\nmode = \"streaming\"\nstreaming_timeout_minutes = 10");
        assert!(!streaming.push_listener());
        let s = streaming.sync().expect("sync");
        assert_eq!(s.pull_interval, None);
        assert_eq!(
            s.streaming,
            Some(StreamingSettings {
                connection_timeout: Duration::from_secs(600),
                subscriptions_per_connection: 200,
            })
        );

        let pull = raw("[listener]\nmode = \"pull\"");
        assert!(!pull.push_listener());
        let s = pull.sync().expect("sync");
        assert_eq!(s.pull_interval, Some(Duration::from_secs(15)));
        assert_eq!(s.streaming, None);

        let err = raw("[listener]\nmode = \"carrier-pigeon\"")
            .sync()
            .unwrap_err();
        assert!(err.to_string().contains("listener.mode"), "{err}");
        let err = raw("[listener]\nmode = \"streaming\"\nstreaming_timeout_minutes = 31")
            .sync()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("listener.streaming_timeout_minutes"),
            "{err}"
        );
    }

    #[test]
    fn env_override_reaches_nested_keys_with_underscores() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            [
                (
                    "TASKBRIDGE_LISTENER_PUBLIC_URL".to_string(),
                    "https://tb.example.com/n".to_string(),
                ),
                ("TASKBRIDGE_SYNC_DEBOUNCE_MS".to_string(), "0".to_string()),
                (
                    "TASKBRIDGE_EXCHANGE_PASSWORD".to_string(),
                    "not a key".to_string(),
                ),
                ("PATH".to_string(), "/bin".to_string()),
            ]
            .into_iter(),
        )
        .expect("apply");
        let raw = RawConfig::deserialize(t).expect("deserialize");
        assert_eq!(raw.listener.public_url, "https://tb.example.com/n");
        assert_eq!(raw.sync.debounce_ms, 0);
    }

    #[test]
    fn validate_names_the_bad_key() {
        let mut raw = RawConfig::default();
        raw.exchange.auth = "none".into();
        raw.sync.policy = "newest".into();
        let err = raw.validate().expect_err("bad policy");
        assert!(err.to_string().contains("sync.policy"), "{err}");
        raw.sync.policy = "pm-wins".into();
        raw.listener.status_frequency_minutes = 0;
        let err = raw.validate().expect_err("bad frequency");
        assert!(
            err.to_string()
                .contains("listener.status_frequency_minutes"),
            "{err}"
        );
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, CliError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("taskbridge.toml");
        std::fs::write(&path, text).expect("write");
        load_with_sources(
            &path,
            true,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn unknown_variable_is_refused_naming_the_closest_key() {
        let err = load_text("", &[("TASKBRIDGE_EXCHNGE_URL", "https://x")]).expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("TASKBRIDGE_EXCHNGE_URL"), "{msg}");
        assert!(
            msg.contains("did you mean TASKBRIDGE_EXCHANGE_URL?"),
            "{msg}"
        );
        // The command line's own variables and the one the file names for the password pass.
        let loaded = load_text(
            "[exchange]\npassword_env = \"TASKBRIDGE_SVC_PW\"\n",
            &[
                ("TASKBRIDGE_SVC_PW", "x"),
                ("TASKBRIDGE_LOG", "debug"),
                (
                    "TASKBRIDGE_EXCHANGE_URL",
                    "https://mail.example.com/EWS/Exchange.asmx",
                ),
            ],
        )
        .expect("known variables");
        assert_eq!(
            loaded.source("exchange.url"),
            Source::Variable("TASKBRIDGE_EXCHANGE_URL".into())
        );
        assert_eq!(loaded.source("exchange.password_env"), Source::File);
        assert_eq!(loaded.source("sync.policy"), Source::Default);
    }

    #[test]
    fn type_error_names_the_key_and_the_line() {
        let err = load_text("data_dir = \"d\"\n\n[exchange]\nurl = 42\n", &[]).expect_err("type");
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("exchange.url"), "{msg}");
        let err = load_text("", &[("TASKBRIDGE_SYNC_DEBOUNCE_MS", "soon")]).expect_err("type");
        let msg = err.to_string();
        assert!(
            msg.contains("TASKBRIDGE_SYNC_DEBOUNCE_MS (sync.debounce_ms)"),
            "{msg}"
        );
    }

    #[test]
    fn string_key_from_a_variable_stays_a_string() {
        let loaded = load_text("", &[("TASKBRIDGE_EXCHANGE_USER", "12345")]).expect("string");
        assert_eq!(loaded.raw.exchange.user, "12345");
    }

    #[test]
    fn explicit_missing_file_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml");
        let err = load_with_sources(&missing, true, std::iter::empty()).expect_err("missing");
        assert!(err.to_string().contains("nope.toml"), "{err}");
        load_with_sources(&missing, false, std::iter::empty()).expect("default may be absent");
    }

    #[test]
    fn listener_max_body_bytes_over_the_ceiling_is_refused_naming_the_key() {
        let mut raw = RawConfig::default();
        raw.exchange.auth = "none".into();
        raw.listener.max_body_bytes = 999_999_999_999;
        let err = raw.validate().expect_err("over the ceiling");
        assert!(err.to_string().contains("listener.max_body_bytes"), "{err}");
        raw.listener.max_body_bytes = 1 << 20;
        raw.validate().expect("the default is fine");
    }

    #[cfg(unix)]
    #[test]
    fn password_file_readable_by_others_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw = RawConfig {
            data_dir: dir.path().to_path_buf(),
            ..RawConfig::default()
        };
        raw.exchange.password_env = String::new();
        let file = dir.path().join("exchange.password");
        std::fs::write(&file, "pw-value\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = raw.exchange().expect_err("group-readable");
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(text.contains("exchange.password"), "{text}");
        assert!(!text.contains("pw-value"), "{text}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        raw.exchange().expect("owner-only");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let t: toml::Table = toml::from_str("[sync]\ndebounce = 5\n").expect("toml");
        let err = RawConfig::deserialize(t).expect_err("unknown key");
        assert!(err.to_string().contains("debounce"), "{err}");
    }
}
