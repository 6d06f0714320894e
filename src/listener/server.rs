//! The HTTP(S) server both endpoints run on: accept loop, connection cap, TLS, time-outs,
//! graceful shutdown.
//!
//! Shaped like mini-redis's `server.rs`: the caller passes the shutdown as a future; a
//! [`Semaphore`] caps connections (a permit is taken before `accept`, so excess connections wait
//! in the kernel's queue instead of costing memory here); each connection is a task in a
//! [`JoinSet`] owned by the loop; on shutdown a watch channel asks every connection to finish
//! its request and close, and what is still running after the grace period is aborted.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, warn};

use super::config::{ServerLimits, TlsFiles};
use super::error::ListenerError;

/// What a connection-level failure (one hyper reports, outside any request) was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionFailure {
    /// The TLS handshake or a request head took longer than `header_timeout`.
    Timeout,
    /// The request head was not HTTP/1.
    Malformed,
    /// The request head was over `max_header_bytes`.
    HeadTooLarge,
}

/// Called once per connection-level failure, for the metrics.
pub(crate) type FailureHook = Arc<dyn Fn(ConnectionFailure) + Send + Sync>;

/// A bound socket with what it takes to serve it.
pub(crate) struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    local_addr: SocketAddr,
    /// Names the server in logs (`listener`, `admin`).
    name: &'static str,
}

impl Bound {
    /// Validates the limits, loads the TLS material and binds `addr`.
    pub(crate) async fn bind(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<&TlsFiles>,
        limits: ServerLimits,
    ) -> Result<Bound, ListenerError> {
        limits.validate()?;
        let tls = tls.map(load_tls).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ListenerError::Bind { addr, source })?;
        info!(
            server = name,
            %local_addr,
            tls = tls.is_some(),
            "listening"
        );
        Ok(Bound {
            listener,
            tls,
            limits,
            local_addr,
            name,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Loads a certificate chain and key into a rustls acceptor (HTTP/1.1 only).
pub(crate) fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ListenerError> {
    let open = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| ListenerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ListenerError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ListenerError::Tls(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(&files.key)?)
        .map_err(|e| ListenerError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ListenerError::Tls(format!("{} holds no PEM private key", files.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ListenerError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A running server started with `spawn`. Dropping it shuts the server down too (without
/// waiting).
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (within the shutdown grace period) and
    /// returns when the server is down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
    let (stop, stopped) = oneshot::channel::<()>();
    let local_addr = bound.local_addr;
    let task = tokio::spawn(run(bound, service, on_failure, async move {
        // A dropped handle stops the server as well.
        let _ = stopped.await;
    }));
    ServerHandle {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    }
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
    let Bound {
        listener,
        tls,
        limits,
        local_addr,
        name,
    } = bound;
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // `true` asks every connection to finish its request and close.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener, name) => accepted,
            () = &mut shutdown => break,
        };
        // Reap finished connections so that the set does not grow with the server's age.
        while connections.try_join_next().is_some() {}
        let tls = tls.clone();
        let service = service.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        let on_failure = on_failure.clone();
        let span = tracing::debug_span!("connection", server = name, %peer);
        connections.spawn(
            async move {
                // Held for the connection's lifetime.
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                // Whether a request was served: a head time-out afterwards is an idle keep-alive
                // connection being closed, not a slow client.
                let served = Arc::new(AtomicBool::new(false));
                let service = {
                    let served = served.clone();
                    hyper::service::service_fn(move |req| {
                        served.store(true, Ordering::Relaxed);
                        service.call(req)
                    })
                };
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                serve_connection(stream, service, &limits, stop).await
                            }
                            Ok(Err(e)) => {
                                debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!("TLS handshake timed out");
                                on_failure(ConnectionFailure::Timeout);
                                return;
                            }
                        }
                    }
                    None => serve_connection(stream, service, &limits, stop).await,
                };
                if let Err(e) = result {
                    if e.is_timeout() && served.load(Ordering::Relaxed) {
                        debug!("idle keep-alive connection closed");
                    } else if e.is_timeout() {
                        debug!("request head timed out");
                        on_failure(ConnectionFailure::Timeout);
                    } else if e.is_parse_too_large() {
                        debug!("request head too large");
                        on_failure(ConnectionFailure::HeadTooLarge);
                    } else if e.is_parse() {
                        debug!(error = %e, "malformed request head");
                        on_failure(ConnectionFailure::Malformed);
                    } else {
                        debug!(error = %e, "connection ended with an error");
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    if open > 0 {
        debug!(server = name, open, "waiting for connections to finish");
    }
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            server = name,
            left = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
    info!(server = name, %local_addr, "stopped");
}

/// Accepts the next connection. Errors (out of file descriptors, a connection reset before it
/// was accepted) are retried with a doubling pause up to one second; the loop never gives up,
/// since a listener that exits on a transient error is worse than one that waits.
async fn accept(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    let mut pause = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                warn!(server = name, error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    limits: &ServerLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also closes
        // idle keep-alive connections.
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        // An error means the server is gone: stop as well. The guard `wait_for` returns is
        // dropped at once (it is not Send).
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
