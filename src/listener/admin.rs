//! The admin endpoint: `GET /healthz`, `GET /metrics`, and whatever else the process mounts
//! (the PM HTTP API) as a fallback, on an address of its own that stays off the internet.
//!
//! It runs on the same server code as the listener (connection cap, head time-out, graceful
//! shutdown). Requests for the fallback reach it whole: the mounted service enforces its own
//! body limits and authentication.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tracing::debug;

use super::config::AdminConfig;
use super::error::ListenerError;
use super::metrics::{self, MetricsSource};
use super::server::{self, Bound, ServerHandle};

/// The error type of [`AdminBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of admin responses (and of the fallback's).
pub type AdminBody = BoxBody<Bytes, BoxError>;

/// The future a [`Fallback`] returns.
pub type FallbackFuture = Pin<Box<dyn Future<Output = Response<AdminBody>> + Send>>;

/// A handler for every request that is not `/healthz` or `/metrics`.
pub type Fallback = Arc<dyn Fn(Request<Incoming>) -> FallbackFuture + Send + Sync>;

/// Wraps a hyper service (such as the PM HTTP API) as a [`Fallback`]. A service error is
/// answered with an empty 500 and logged at debug.
pub fn fallback_from_service<S, B>(service: S) -> Fallback
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let service = Arc::new(service);
    Arc::new(move |req| {
        let future = service.call(req);
        Box::pin(async move {
            match future.await {
                Ok(response) => response.map(|body| body.map_err(Into::into).boxed()),
                Err(e) => {
                    debug!(error = %e, "admin fallback service failed");
                    empty(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        })
    })
}

/// Whether the process is ready to serve and whether it is healthy; `/healthz` answers 200
/// `ok` when it is ready and not degraded, 503 `not ready` before it is ready, and 503
/// `degraded: <reason>` while something it depends on (Exchange) keeps failing; lines the
/// process adds ([`Readiness::set_info`], e.g. its instance id and leases) follow. The process
/// keeps running either way: the answer is for the operator and the supervisor's health check.
/// Cheap to clone; clones share the state.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<ReadinessState>);

struct ReadinessState {
    ready: AtomicBool,
    // A std Mutex: held for a clone or a store, never across an await.
    degraded: Mutex<Option<String>>,
    info: Mutex<Option<InfoFn>>,
}

/// Lines `/healthz` adds after its first, asked at each request.
type InfoFn = Arc<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for ReadinessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessState")
            .field("ready", &self.ready)
            .field("degraded", &self.degraded)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// A flag with the given initial state, not degraded.
    pub fn new(ready: bool) -> Self {
        Readiness(Arc::new(ReadinessState {
            ready: AtomicBool::new(ready),
            degraded: Mutex::new(None),
            info: Mutex::new(None),
        }))
    }

    /// Lines for `/healthz` after its first (`ok`, `not ready`, `degraded: …`), computed at
    /// each request: what tells instances apart behind a load balancer.
    pub fn set_info(&self, info: impl Fn() -> String + Send + Sync + 'static) {
        *self
            .0
            .info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(info));
    }

    /// The lines of [`Readiness::set_info`], if any.
    pub fn info(&self) -> Option<String> {
        let info = self
            .0
            .info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()?;
        Some(info())
    }

    /// Sets the flag.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Relaxed);
    }

    /// Reads the flag.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// Marks the process degraded with a reason a person can act on, or healthy again (`None`).
    pub fn set_degraded(&self, reason: Option<String>) {
        *self
            .0
            .degraded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
    }

    /// Why the process is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        self.0
            .degraded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Default for Readiness {
    /// Not ready: the process says when it is.
    fn default() -> Self {
        Readiness::new(false)
    }
}

/// What the admin endpoint serves: the metric sources, the readiness flag and the fallback.
#[derive(Clone, Default)]
pub struct AdminRoutes {
    /// Rendered in order into `/metrics`.
    pub sources: Vec<Arc<dyn MetricsSource>>,
    /// Behind `/healthz`.
    pub readiness: Readiness,
    /// Everything else; 404 when `None`.
    pub fallback: Option<Fallback>,
}

impl std::fmt::Debug for AdminRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRoutes")
            .field("sources", &self.sources.len())
            .field("readiness", &self.readiness)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl AdminRoutes {
    /// Routes with no sources, not ready, no fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metric source.
    pub fn source(mut self, source: impl MetricsSource) -> Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// Adds a metric source that is shared with its owner (e.g. the listener's metrics).
    pub fn shared_source(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Uses `readiness` for `/healthz`.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Mounts a fallback for every other path.
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The `/metrics` text: every source in order.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        for source in &self.sources {
            source.render(&mut out);
        }
        out
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<AdminBody> {
        let path = req.uri().path();
        if path != "/healthz" && path != "/metrics" {
            return match &self.fallback {
                Some(fallback) => fallback(req).await,
                None => empty(StatusCode::NOT_FOUND),
            };
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if path == "/healthz" {
            let (status, body) = if !self.readiness.is_ready() {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_string())
            } else if let Some(reason) = self.readiness.degraded() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("degraded: {reason}"),
                )
            } else {
                (StatusCode::OK, "ok".to_string())
            };
            let body = match self.readiness.info() {
                Some(info) => format!("{body}\n{info}"),
                None => body,
            };
            return text(status, "text/plain; charset=utf-8", body.into());
        }
        text(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            self.render_metrics().into(),
        )
    }
}

fn empty(status: StatusCode) -> Response<AdminBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The admin server, bound and ready to serve.
pub struct Admin {
    bound: Bound,
    routes: Arc<AdminRoutes>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("local_addr", &self.bound.local_addr())
            .field("routes", &self.routes)
            .finish()
    }
}

impl Admin {
    /// Loads the TLS material (if any) and binds the address.
    pub async fn bind(config: AdminConfig, routes: AdminRoutes) -> Result<Admin, ListenerError> {
        let bound = Bound::bind("admin", config.bind, config.tls.as_ref(), config.limits).await?;
        Ok(Admin {
            bound,
            routes: Arc::new(routes),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        server::run(self.bound, service(self.routes), no_hook(), shutdown).await;
    }

    /// Serves on a task of its own.
    pub fn spawn(self) -> ServerHandle {
        server::spawn(self.bound, service(self.routes), no_hook())
    }
}

fn no_hook() -> server::FailureHook {
    Arc::new(|_| {})
}

fn service(
    routes: Arc<AdminRoutes>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<AdminBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<AdminBody>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    hyper::service::service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(routes.handle(req).await) }
    })
}

/// Binds `config.bind` and serves the admin routes until `shutdown` completes.
pub async fn serve(
    config: AdminConfig,
    routes: AdminRoutes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ListenerError> {
    Admin::bind(config, routes).await?.serve(shutdown).await;
    Ok(())
}

/// Binds `config.bind` and serves the admin routes on a task of their own.
pub async fn start(
    config: AdminConfig,
    routes: AdminRoutes,
) -> Result<ServerHandle, ListenerError> {
    Ok(Admin::bind(config, routes).await?.spawn())
}
