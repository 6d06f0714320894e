//! The listener's and the admin endpoint's use of the shared HTTP server
//! ([`crate::ews::server`]: accept loop, slot table, TLS, time-outs, graceful shutdown): one
//! service cloned for every connection, and start-up errors as [`ListenerError`]s.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};

use super::config::{ServerLimits, TlsFiles};
use super::error::ListenerError;

pub use crate::ews::server::ServerHandle;
pub(crate) use crate::ews::server::{ConnectionFailure, FailureHook};

/// A bound socket with what it takes to serve it.
pub(crate) struct Bound(crate::ews::server::Bound);

impl Bound {
    /// Validates the limits, loads the TLS material and binds `addr`.
    pub(crate) async fn bind(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<&TlsFiles>,
        limits: ServerLimits,
    ) -> Result<Bound, ListenerError> {
        Ok(Bound(
            crate::ews::server::Bound::bind(name, addr, tls, limits).await?,
        ))
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }
}

/// Runs `bound` on a task of its own.
pub(crate) fn spawn<S, B>(bound: Bound, service: S, on_failure: FailureHook) -> ServerHandle
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::ews::server::spawn(bound.0, move || service.clone(), on_failure)
}

/// Serves `bound` until `shutdown` completes, then drains the connections.
pub(crate) async fn run<S, B>(
    bound: Bound,
    service: S,
    on_failure: FailureHook,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::ews::server::run(bound.0, move || service.clone(), on_failure, shutdown).await;
}
