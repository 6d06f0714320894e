//! The connector: the engine, the push listener and the admin endpoint wired together over a
//! PM host, as `taskbridge serve` runs them and as a PM product runs them inside its own
//! process.
//!
//! [`Connector::new`] builds everything from typed settings (no I/O beyond opening the state
//! store); [`Connector::run`] binds the listener and the admin endpoint, resumes or creates
//! the push subscriptions once the listener accepts connections, publishes every project the
//! host has (unchanged projects send nothing), and runs the engine until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use crate::ews::client::{EwsClient, EwsClientConfig};
use crate::exchange::EwsMailboxStore;
use crate::listener::admin::{self, AdminRoutes, Fallback, Readiness};
use crate::listener::{
    AdminConfig, EngineCounters, HandlerAnswer, Listener, ListenerConfig, ListenerNotice,
    MetricsSource, NotificationHandler,
};
use crate::mapping::FieldTable;
use crate::pm::PmHost;
use crate::state::{AnyStateStore, InstanceId, StateLocation};
use crate::sync::{
    BatchLimits, Engine, Metrics, Notice, NotificationOutcome, NotificationSink, PushSettings,
    SyncConfig,
};

/// The engine of a connector.
pub type ConnectorEngine<H> = Engine<H, EwsMailboxStore<EwsClient>, AnyStateStore>;

/// The push listener of a connector.
#[derive(Clone, Debug)]
pub struct PushListener {
    /// Where and how to listen.
    pub config: ListenerConfig,
    /// The URL Exchange reaches the listener at, without the secret: scheme, host, port and
    /// path prefix (e.g. `https://tb.contoso.com:8443/ews/notify`).
    pub public_url: String,
    /// Between Exchange's status notifications.
    pub status_frequency: Duration,
}

/// Everything a connector needs.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// The EWS endpoint and credentials.
    pub exchange: EwsClientConfig,
    /// The field table.
    pub table: FieldTable,
    /// The engine's settings (its `push` is filled in from `listener`).
    pub sync: SyncConfig,
    /// Where the sync state lives: an SQLite file, or a PostgreSQL database.
    pub state: StateLocation,
    /// Push notifications; without them, reconciliation alone finds mailbox edits.
    pub listener: Option<PushListener>,
    /// `/healthz`, `/metrics` and mounted routes.
    pub admin: Option<AdminConfig>,
}

/// Why a connector could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The EWS client settings are invalid.
    #[error(transparent)]
    Ews(#[from] crate::ews::Error),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The listener or admin endpoint failed.
    #[error(transparent)]
    Listener(#[from] crate::listener::ListenerError),
    /// The engine failed.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
}

/// A connector over the PM host `H`.
pub struct Connector<H> {
    engine: ConnectorEngine<H>,
    client: EwsClient,
    listener: Option<PushListener>,
    admin: Option<AdminConfig>,
    readiness: Readiness,
}

/// Hands notifications from the listener to the engine.
struct SinkHandler(NotificationSink);

impl NotificationHandler for SinkHandler {
    fn handle(&self, notice: ListenerNotice) -> HandlerAnswer {
        match self.0.deliver(Notice {
            subscription_id: notice.subscription_id,
            watermark: notice.watermark,
            item_ids: notice.item_ids,
            versions: notice
                .versions
                .map(|v| v.iter().map(crate::exchange::item_ref).collect()),
        }) {
            NotificationOutcome::Accepted => HandlerAnswer::Ok,
            NotificationOutcome::UnknownSubscription => HandlerAnswer::Unsubscribe,
            NotificationOutcome::QueueFull => HandlerAnswer::Busy,
        }
    }
}

/// The engine's counters as a metrics source.
struct EngineMetrics(Arc<Metrics>);

impl MetricsSource for EngineMetrics {
    fn render(&self, out: &mut String) {
        let m = &self.0;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        EngineCounters {
            notifications: get(&m.notifications),
            events_queued: get(&m.events_queued),
            own_echoes: get(&m.own_echoes),
            listing_passes: get(&m.listing_passes),
            item_passes: get(&m.item_passes),
            updates_applied: get(&m.updates_applied),
            updates_pending: get(&m.updates_pending),
            updates_rejected: get(&m.updates_rejected),
            conflicts: get(&m.conflicts),
            created: get(&m.created),
            written: get(&m.written),
            deleted: get(&m.deleted),
            parked: get(&m.parked),
            reconciles: get(&m.reconciles),
            publish_rounds: get(&m.publish_rounds),
            streams_open: get(&m.streams_open),
            stream_reconnects: get(&m.stream_reconnects),
        }
        .render(out);
    }
}

/// The instance and its mailbox leases as a metrics source.
struct LeaseMetrics(Box<dyn Fn() -> (String, usize) + Send + Sync>);

impl MetricsSource for LeaseMetrics {
    fn render(&self, out: &mut String) {
        let (instance, held) = (self.0)();
        let instance = instance.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "# HELP taskbridge_leases_held Mailbox leases this instance holds.\n\
             # TYPE taskbridge_leases_held gauge\n\
             taskbridge_leases_held{{instance=\"{instance}\"}} {held}\n\
             # HELP taskbridge_instance_info This instance's id.\n\
             # TYPE taskbridge_instance_info gauge\n\
             taskbridge_instance_info{{instance=\"{instance}\"}} 1\n"
        ));
    }
}

impl<H: PmHost> Connector<H> {
    /// Builds the connector; nothing is bound or sent yet.
    pub fn new(config: ConnectorConfig, host: H) -> Result<Self, ConnectorError> {
        let limits = BatchLimits {
            write: config.exchange.limits.batch_size,
            fetch: config.exchange.limits.get_item_batch,
        };
        let client = EwsClient::new(config.exchange)?;
        let store = EwsMailboxStore::new(client.clone(), Arc::new(config.table.clone()), limits);
        let state = config.state.open()?;
        info!(state = %config.state.describe(), "sync state store");
        let shared = matches!(config.state, StateLocation::Postgres { .. });
        let mut sync = config.sync;
        if let Some(l) = &config.listener {
            sync.push = Some(PushSettings {
                url: format!(
                    "{}/{}",
                    l.public_url.trim_end_matches('/'),
                    l.config.secret.expose()
                ),
                status_frequency: l.status_frequency,
            });
        }
        let lease = sync.lease;
        let engine = Engine::new(host, store, state, config.table, sync);
        // Every serve is an instance of a cluster, alone on SQLite (it then holds every
        // lease): one code path whatever the store. Only a shared store makes a notification on
        // a subscription unknown here possibly another instance's.
        let instance = InstanceId::generate();
        info!(%instance, "instance id");
        if shared {
            engine.join_cluster(instance, lease);
        } else {
            engine.run_alone(instance, lease);
        }
        let engine_for_health = engine.clone();
        Ok(Connector {
            engine,
            client,
            listener: config.listener,
            admin: config.admin,
            readiness: {
                let readiness = Readiness::new(false);
                let engine = engine_for_health;
                readiness.set_info(move || {
                    format!(
                        "instance: {}\nleases: {}",
                        engine.instance().map(|i| i.to_string()).unwrap_or_default(),
                        engine.leases_held().map_or(0, |l| l.len())
                    )
                });
                readiness
            },
        })
    }

    /// The engine (to publish, sync a mailbox or map back by hand).
    pub fn engine(&self) -> &ConnectorEngine<H> {
        &self.engine
    }

    /// The EWS client (its counters, the server version).
    pub fn client(&self) -> &EwsClient {
        &self.client
    }

    /// Whether the connector is up (what `/healthz` answers).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs until `shutdown` resolves. `routes` are served on the admin address besides
    /// `/healthz` and `/metrics` (e.g. the PM API). `on_ready` is called with the bound
    /// addresses once the connector accepts notifications.
    pub async fn run(
        &self,
        routes: Option<Fallback>,
        on_ready: impl FnOnce(Bound),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ConnectorError> {
        let mut bound = Bound::default();
        let listener = match &self.listener {
            Some(l) => {
                let listener = Listener::bind(
                    l.config.clone(),
                    SinkHandler(self.engine.notification_sink()),
                )
                .await?;
                bound.listener = Some(listener.local_addr());
                Some(listener)
            }
            None => None,
        };
        let listener_metrics = listener.as_ref().map(|l| l.metrics());
        let admin = match &self.admin {
            Some(config) => {
                let engine = self.engine.clone();
                let leases = move || {
                    (
                        engine.instance().map(|i| i.to_string()).unwrap_or_default(),
                        engine.leases_held().map_or(0, |l| l.len()),
                    )
                };
                let mut r = AdminRoutes::new()
                    .source(EngineMetrics(self.engine.metrics()))
                    .source(LeaseMetrics(Box::new(leases)))
                    .source(self.client.clone())
                    .readiness(self.readiness.clone());
                if let Some(m) = listener_metrics {
                    r = r.shared_source(m);
                }
                if let Some(f) = routes {
                    r = r.fallback(f);
                }
                let admin = admin::Admin::bind(config.clone(), r).await?;
                bound.admin = Some(admin.local_addr());
                Some(admin.spawn())
            }
            None => None,
        };
        let listener = listener.map(Listener::spawn);
        // Exchange may post as soon as a subscription exists: subscribe only now that the
        // listener accepts connections.
        if let Err(e) = self.engine.subscribe_all(false).await {
            warn!(error = %e, "resuming subscriptions failed; the watchdog retries");
        }
        self.readiness.set_ready(true);
        info!(listener = ?bound.listener, admin = ?bound.admin, "connector ready");
        on_ready(bound);
        let engine = self.engine.clone();
        let startup = tokio::spawn(async move {
            // Bring every project in step once (unchanged projects send no write), one publish
            // of every project at a time with the reconciliation's, once the mailboxes' leases
            // are held (earlier, it would skip every mailbox and have to go round again). The
            // first lease round asks for the same: whichever starts first serves both.
            engine.leases_taken().await;
            if let Err(e) = engine.publish_all_after(0).await {
                warn!(error = %e, "publishing at start failed");
            }
        });
        let result = self.engine.run(shutdown).await;
        startup.abort();
        self.readiness.set_ready(false);
        if let Some(l) = listener {
            l.shutdown().await;
        }
        if let Some(a) = admin {
            a.shutdown().await;
        }
        result.map_err(Into::into)
    }
}

/// The addresses a running connector is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    /// The push listener.
    pub listener: Option<std::net::SocketAddr>,
    /// The admin endpoint.
    pub admin: Option<std::net::SocketAddr>,
}
