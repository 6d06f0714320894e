//! An Exchange-like EWS server for tests, benchmarks and the demo (`taskbridge sim`).
//!
//! It owns simulated mailboxes with a Tasks folder and speaks the EWS operations taskbridge
//! uses, with Exchange's rules where they matter for task sync: change keys that move on every
//! change, the ConflictResolution rules, the Status / PercentComplete / CompleteDate coupling,
//! push and pull notifications with watermarks and retries, throttling in all three shapes,
//! impersonation and authentication. It knows nothing of the connector: it shares only the
//! wire types of [`taskbridge_ews`].
//!
//! # Entry points
//! - [`start`] binds, spawns the server on the current tokio runtime and returns a
//!   [`SimHandle`] with the endpoint URL; what tests and benchmarks use.
//! - [`serve`] runs until a shutdown future completes (mini-redis style).
//!
//! # Layout
//! - `server`: the hyper HTTP/1 server (plain or TLS), one task per connection, routing.
//! - `auth`: users, Basic and NTLM authentication, the access rules.
//! - [`ntlm_server`]: the acceptor half of NTLM (challenge, verification with MIC and channel
//!   bindings), over the message codec of `taskbridge_ews::transport::auth::ntlm_message`.
//! - `autodiscover`: POX Autodiscover at `/autodiscover/autodiscover.xml` and SOAP Autodiscover
//!   (GetUserSettings with GroupingInformation), pointing at the simulator's own EWS URL.
//! - `store`: mailboxes, items, change numbers, the event log, sync pages.
//! - `fields`: task properties by field URI, response shapes, the status coupling.
//! - `ops`: one handler per EWS operation, routed by name through the generated
//!   `taskbridge_ews::generated::visit_operation`.
//! - `shared`: the running simulator's state, its counters, the response helpers.
//! - `subs`: push, pull and streaming subscriptions (kind, watermark, filter, backend) and the
//!   table of live ones.
//! - [`streaming`]: GetStreamingEvents connections, held open and fed as events arrive.
//! - `ids`: the simulator's opaque tokens: ids, change keys, watermarks and sync states.
//! - `push`: push delivery with Exchange's retry schedule.
//! - `admin`: the JSON admin API under `/sim/` (what a user does in Outlook; counters).
//! - `faults`: throttling, failures, latency and other injected misbehaviour.
//! - `record`: `--record DIR`, every exchange as files in the fixtures format.
//! - `persist`: `--state FILE`, write-through SQLite persistence.

pub mod admin;
pub mod auth;
mod autodiscover;
pub mod faults;
pub mod fields;
pub mod ids;
pub mod ntlm_server;
mod ops;
pub mod persist;
pub mod push;
pub mod record;
mod server;
mod shared;
pub mod store;
pub mod streaming;
pub mod subs;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use crate::ntlm_server::ExtendedProtection;
pub use auth::{AuthMode, Password, UserSpec};
pub use faults::{FaultConfig, ThrottleShape};
pub use store::ConflictModel;
use taskbridge_ews::soap::ServerVersionInfo;

/// The endpoint path, as on Exchange.
pub const EWS_PATH: &str = "/EWS/Exchange.asmx";
/// The prefix of the admin API.
pub const ADMIN_PATH: &str = "/sim/";

/// Everything the simulator is started with (built by the CLI from flags, or by tests).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Mailbox owners and service accounts.
    pub users: Vec<UserSpec>,
    /// How clients authenticate.
    pub auth: AuthMode,
    /// How NTLM channel bindings are checked on the TLS listener (Extended Protection, as IIS
    /// enforces it for Exchange 2019 CU14 and later); plain HTTP has no channel to bind.
    pub extended_protection: ExtendedProtection,
    /// The keytab holding the service key (`HTTP/host@REALM`) that `AuthMode::Negotiate`
    /// accepts Kerberos tickets for.
    pub keytab: Option<PathBuf>,
    /// What a stale change key in UpdateItem meets: Exchange's strictness (the default) or a
    /// property-level merge.
    pub conflict_model: ConflictModel,
    /// Persist state in this SQLite file.
    pub state: Option<PathBuf>,
    /// Record every exchange into this directory.
    pub record: Option<PathBuf>,
    /// Injected misbehaviour.
    pub faults: FaultConfig,
    /// Multiplies every subscription duration (push retry schedule, StatusFrequency, pull
    /// Timeout, streaming keep-alive, ConnectionTimeout and expiry), so tests run in
    /// milliseconds what Exchange does in minutes.
    pub push_time_scale: f64,
    /// How many Mailbox servers (backends) the mailboxes are spread over (at least 1). Each
    /// mailbox is on one, by a hash of its address until the admin API moves it; a
    /// Subscribe asking for server affinity gets the `X-BackEndOverrideCookie` of its
    /// mailbox's backend, and a GetStreamingEvents finds only the subscriptions of the backend
    /// it is routed to (its cookie's, else its anchor mailbox's).
    pub backends: usize,
    /// Largest request body accepted (413 beyond).
    pub max_request_bytes: usize,
    /// The `ServerVersionInfo` header of every response.
    pub server_version: ServerVersionInfo,
}

/// PEM files for TLS.
pub use taskbridge_ews::server::TlsFiles;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: None,
            users: Vec::new(),
            auth: AuthMode::None,
            extended_protection: ExtendedProtection::None,
            keytab: None,
            conflict_model: ConflictModel::Strict,
            state: None,
            record: None,
            faults: FaultConfig::default(),
            push_time_scale: 1.0,
            backends: 1,
            max_request_bytes: taskbridge_ews::soap::DEFAULT_MAX_MESSAGE_BYTES,
            server_version: exchange_2019(),
        }
    }
}

/// The version the simulator claims: Exchange 2019 CU-style, schema `V2017_07_11`.
pub fn exchange_2019() -> ServerVersionInfo {
    ServerVersionInfo {
        major_version: Some(15),
        minor_version: Some(2),
        major_build_number: Some(1544),
        minor_build_number: Some(4),
        version: Some("V2017_07_11".into()),
    }
}

impl SimConfig {
    /// A config on `127.0.0.1:0` with these mailbox owners (`smtp:password`), no auth.
    pub fn for_tests(users: &[&str]) -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: users
                .iter()
                .map(|u| UserSpec::parse(u, false).expect("test user is smtp:password"))
                .collect(),
            ..SimConfig::default()
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The state file could not be opened or read.
    #[error("state file: {0}")]
    State(String),
    /// The record directory could not be prepared.
    #[error("record directory: {0}")]
    Record(String),
    /// The configuration is inconsistent.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    /// The EWS endpoint, e.g. `http://127.0.0.1:41234/EWS/Exchange.asmx`.
    pub url: String,
    /// The admin API base, e.g. `http://127.0.0.1:41234/sim/`.
    pub admin_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    sim: Arc<shared::Sim>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Stops accepting, lets requests in flight finish, ends push deliveries and flushes the
    /// state file.
    pub async fn shutdown(mut self) {
        self.stop_and_wait().await;
    }

    async fn stop_and_wait(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }

    /// Breaks every open GetStreamingEvents connection without its closing chunk, as a
    /// network failure would; returns how many were open.
    pub fn cut_streams(&self) -> usize {
        self.sim.cut_streams()
    }

    /// Forgets every subscription, as a server restart or a mailbox fail-over does: the next
    /// GetEvents or GetStreamingEvents for one of them answers ErrorSubscriptionNotFound, and
    /// push deliveries stop. Returns how many there were.
    pub fn forget_subscriptions(&self) -> usize {
        let all = self.sim.subs.list();
        for s in &all {
            self.sim.subs.remove(s.id.as_str());
        }
        all.len()
    }

    /// The backend (0-based) the mailbox `smtp` is on; `None` for an unknown mailbox.
    pub fn backend_of(&self, smtp: &str) -> Option<usize> {
        self.sim
            .store
            .by_smtp(smtp)
            .map(|mb| self.sim.backend_of(&mb.smtp))
    }

    /// Moves the mailbox `smtp` to `backend`, as a database fail-over does: its subscriptions
    /// are now found only through that backend, and every open streaming connection breaks.
    pub fn move_mailbox(&self, smtp: &str, backend: usize) -> Result<(), String> {
        self.sim.move_mailbox(smtp, backend)
    }

    /// GetStreamingEvents connections open now.
    pub fn open_streams(&self) -> usize {
        self.sim
            .open_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The counters, as the admin API reports them.
    pub fn counters(&self) -> serde_json::Value {
        self.sim.counters.snapshot()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Dropped without shutdown (a failing test): stop the server task anyway.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds, spawns the simulator on the current tokio runtime and returns once it accepts
/// connections.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    validate(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let tls = match &config.tls {
        Some(files) => Some(server::tls_acceptor(files)?),
        None => None,
    };
    let host = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
            SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
        }
    } else {
        addr.to_string()
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sim = Arc::new(shared::Sim::new(config, shutdown_rx)?);
    sim.set_me();
    let channel = tls
        .as_ref()
        .map(|tls| (tls.bindings, tls.end_point.clone()));
    let bound = taskbridge_ews::server::Bound::new(
        "sim",
        listener,
        tls.map(|tls| tls.acceptor),
        server::limits(),
    )
    .map_err(|e| SimError::Config(e.to_string()))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(server::run(
        sim.clone(),
        bound,
        channel,
        shutdown_tx,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(SimHandle {
        url: format!("{scheme}://{host}{EWS_PATH}"),
        admin_url: format!("{scheme}://{host}{ADMIN_PATH}"),
        addr,
        sim,
        stop: Some(stop),
        join: Some(join),
    })
}

/// Runs the simulator until `shutdown` completes, then shuts it down cleanly.
pub async fn serve(config: SimConfig, shutdown: impl Future) -> Result<(), SimError> {
    let handle = start(config).await?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

fn validate(config: &SimConfig) -> Result<(), SimError> {
    let f = &config.faults;
    for (name, p) in [
        ("--throttle", f.throttle),
        ("--fail", f.fail),
        ("--drop-push", f.drop_push),
        ("--spontaneous-changekey", f.spontaneous_changekey),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(SimError::Config(format!(
                "{name} is a probability between 0 and 1, got {p}"
            )));
        }
    }
    if !(config.push_time_scale > 0.0 && config.push_time_scale.is_finite()) {
        return Err(SimError::Config(
            "--push-time-scale must be a positive number".into(),
        ));
    }
    if config.backends == 0 {
        return Err(SimError::Config("--backends must be at least 1".into()));
    }
    if config.auth != AuthMode::None && config.users.is_empty() {
        return Err(SimError::Config(
            "authentication needs at least one --user or --service".into(),
        ));
    }
    if config.auth == AuthMode::Negotiate && config.keytab.is_none() {
        return Err(SimError::Config(
            "--auth negotiate needs --keytab with the service key".into(),
        ));
    }
    if f.max_concurrency == Some(0) {
        return Err(SimError::Config(
            "--max-concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Scales a push/pull duration by `--push-time-scale`.
pub(crate) fn scaled(d: Duration, scale: f64) -> Duration {
    Duration::from_secs_f64((d.as_secs_f64() * scale).max(0.001))
}
