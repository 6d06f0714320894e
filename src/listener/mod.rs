//! The push listener: the HTTP(S) endpoint Exchange posts `SendNotification` to, and the admin
//! endpoint (`/healthz`, `/metrics`, mounted routes).
//!
//! Owns the notification URL (`POST {path}/{secret}`), its defences against hostile clients
//! (constant-time secret check, body cap, content type, time-outs, connection cap) and the
//! `SendNotificationResult` answer. It depends only on [`crate::ews`] and [`crate::secret`]: it
//! knows nothing of projects or the engine, and hands each notification to a
//! [`NotificationHandler`], which the wiring adapts to the engine's notification sink.
//!
//! - [`Listener`] / [`serve`] / [`start`]: the notification endpoint.
//! - [`admin`]: the admin endpoint.
//! - [`health`]: whether recent Exchange calls succeed, for `/healthz`.
//! - [`metrics`]: the Prometheus text format and the metric sources.
//! - [`ListenerSecret`]: the secret path segment, generated and kept in a file.
//!
//! See `docs/LISTENER.md` for the URL layout, the answers, the limits and the metrics.

pub mod admin;
mod config;
mod endpoint;
mod error;
pub mod health;
pub mod metrics;
mod notify;
mod secret;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use admin::{Admin, AdminRoutes, Fallback, Readiness};
pub use config::{
    AdminConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_PATH, ListenerConfig, MAX_BODY_CEILING,
    ServerLimits, TlsFiles,
};
pub use error::ListenerError;
pub use metrics::{EngineCounters, ListenerMetrics, ListenerOutcome, MetricsSource};
pub use notify::{HandlerAnswer, ListenerNotice, NotificationHandler};
pub use secret::ListenerSecret;
pub use server::ServerHandle;

use endpoint::Endpoint;
use secret::PathDigest;
use server::{Bound, ConnectionFailure, FailureHook};

/// The push listener, bound and ready to serve.
pub struct Listener {
    bound: Bound,
    endpoint: Arc<Endpoint>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.bound.local_addr())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Checks the configuration, loads the TLS material (if any) and binds the address.
    pub async fn bind(
        config: ListenerConfig,
        handler: impl NotificationHandler,
    ) -> Result<Listener, ListenerError> {
        config.validate()?;
        let path = PathDigest::of(config.notify_path()?.expose().as_bytes());
        let bound = Bound::bind(
            "listener",
            config.bind,
            config.tls.as_ref(),
            config.limits.clone(),
        )
        .await?;
        Ok(Listener {
            bound,
            endpoint: Arc::new(Endpoint {
                path,
                max_body_bytes: config.max_body_bytes.min(config::MAX_BODY_CEILING),
                body_timeout: config.limits.body_timeout,
                retry_after: config.retry_after,
                handler: Arc::new(handler),
                metrics: Arc::default(),
            }),
        })
    }

    /// The address bound (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// The listener's request counters, to pass to the admin endpoint.
    pub fn metrics(&self) -> Arc<ListenerMetrics> {
        self.endpoint.metrics.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (within
    /// `limits.shutdown_grace`).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let hook = failure_hook(&self.endpoint.metrics);
        server::run(self.bound, service(self.endpoint), hook, shutdown).await;
    }

    /// Serves on a task of its own.
    pub fn spawn(self) -> ListenerHandle {
        let metrics = self.metrics();
        let hook = failure_hook(&metrics);
        ListenerHandle {
            server: server::spawn(self.bound, service(self.endpoint), hook),
            metrics,
        }
    }
}

fn failure_hook(metrics: &Arc<ListenerMetrics>) -> FailureHook {
    let metrics = metrics.clone();
    Arc::new(move |failure| {
        metrics.record(match failure {
            ConnectionFailure::Timeout => ListenerOutcome::Timeout,
            ConnectionFailure::Malformed => ListenerOutcome::BadRequest,
            ConnectionFailure::HeadTooLarge => ListenerOutcome::TooLarge,
            ConnectionFailure::Shed => ListenerOutcome::Shed,
        })
    })
}

fn service(
    endpoint: Arc<Endpoint>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<
            hyper::Response<http_body_util::Full<bytes::Bytes>>,
            std::convert::Infallible,
        >,
    > + Send
             + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    hyper::service::service_fn(move |req| endpoint.clone().handle(req))
}

/// A listener running on a task of its own (see [`start`]). Dropping it stops the listener.
#[derive(Debug)]
pub struct ListenerHandle {
    server: ServerHandle,
    metrics: Arc<ListenerMetrics>,
}

impl ListenerHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The listener's request counters.
    pub fn metrics(&self) -> Arc<ListenerMetrics> {
        self.metrics.clone()
    }

    /// Stops accepting, lets requests in flight finish and returns when the listener is down.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Binds `config.bind` and serves notifications to `handler` until `shutdown` completes.
pub async fn serve(
    config: ListenerConfig,
    handler: impl NotificationHandler,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ListenerError> {
    Listener::bind(config, handler).await?.serve(shutdown).await;
    Ok(())
}

/// Binds `config.bind` and serves notifications to `handler` on a task of its own (tests, and
/// processes that keep a handle to stop it).
pub async fn start(
    config: ListenerConfig,
    handler: impl NotificationHandler,
) -> Result<ListenerHandle, ListenerError> {
    Ok(Listener::bind(config, handler).await?.spawn())
}
