//! Serving HTTP for EWS peers: the push endpoint Exchange posts notifications to, and the test
//! servers that play Exchange. One accept loop with connection limits, TLS from PEM files, head
//! time-outs and graceful shutdown, used by taskbridge's listener and admin endpoint, its PM
//! API, and the simulator.
//!
//! The caller passes the shutdown as a future; each connection is a task in a [`JoinSet`] owned
//! by the loop; on shutdown a watch channel asks every connection to finish its request and
//! close, and what is still running after the grace period is aborted.
//!
//! Connections are admitted by a slot table so that clients who never send a request cannot
//! keep out one that does: at most `max_connections_per_address` from one address (a new one
//! over the cap replaces that address's keep-alive connection idle the longest, if one has been
//! idle a second; otherwise it waits unread, for at most the head time-out, until one can be
//! replaced or closes), and when all `max_connections` slots are
//! taken, the connection that has been waiting for a request head the longest (idle, or sending
//! its head slowly) is closed to make room (taken from the address holding the most
//! connections). A connection in the middle of a request is never closed for room. When the
//! table is half full, new connections get the shorter `pressure_header_timeout` for their
//! heads. Request bodies are the service's to read: [`read_body`] reads one under a cap and a
//! deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, warn};

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::BodyExt;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A limit is invalid.
    #[error("{0}")]
    Config(String),
    /// The certificate or key file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The address of a socket bound elsewhere could not be read.
    #[error("cannot read the listening socket's address: {0}")]
    Socket(std::io::Error),
}

/// A certificate chain and its private key, both PEM files, for serving HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits that protect a server from slow or greedy clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once. When all are taken, the one that has waited for a request head
    /// the longest is closed to make room; connections in the middle of a request are kept, and
    /// only when every one is, new connections wait.
    pub max_connections: usize,
    /// Connections open at once from one IP address. A new connection over the cap takes the
    /// place of the address's connection that answered a request and has waited for the next
    /// one the longest, at least a second; when the address has none, the new connection waits
    /// for one (at most `header_timeout`, then it is closed unserved).
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake and for each request's head (request line and
    /// headers). It also bounds how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// The head time-out of connections accepted while at least half of `max_connections` are
    /// open (the shorter of the two applies).
    pub pressure_header_timeout: Duration,
    /// Time allowed to receive a whole request body, from the end of the head.
    pub body_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// On shutdown, how long requests in flight may take to finish before they are cut off.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_connections_per_address: 64,
            header_timeout: Duration::from_secs(10),
            pressure_header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerLimits {
    /// Checks the limits, naming the first bad one.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |what: &str| Err(ServerError::Config(what.to_string()));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.max_connections_per_address == 0 {
            return bad("max_connections_per_address must be at least 1");
        }
        if self.header_timeout.is_zero() || self.pressure_header_timeout.is_zero() {
            return bad("header_timeout must be longer than zero");
        }
        if self.body_timeout.is_zero() {
            return bad("body_timeout must be longer than zero");
        }
        if self.max_header_bytes < 8192 {
            return bad("max_header_bytes must be at least 8192");
        }
        Ok(())
    }
}

/// The error type services and bodies convert into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a connection-level failure (one hyper reports, outside any request) was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionFailure {
    /// The TLS handshake or a request head took longer than `header_timeout`.
    Timeout,
    /// The request head was not HTTP/1.
    Malformed,
    /// The request head was over `max_header_bytes`.
    HeadTooLarge,
    /// The connection was closed unserved: over the per-address limit for longer than the
    /// head time-out, or waiting for a head when a new connection needed its slot. (An idle
    /// keep-alive connection replaced by a new one from its address is not counted: it had
    /// been served.)
    Shed,
}

/// Called once per connection-level failure, for the metrics.
pub type FailureHook = Arc<dyn Fn(ConnectionFailure) + Send + Sync>;

/// A bound socket with what it takes to serve it.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    local_addr: SocketAddr,
    /// Names the server in logs (`listener`, `admin`, `sim`, `pm-api`).
    name: &'static str,
}

impl Bound {
    /// Validates the limits, loads the TLS material and binds `addr`.
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<&TlsFiles>,
        limits: ServerLimits,
    ) -> Result<Bound, ServerError> {
        limits.validate()?;
        let tls = tls.map(load_tls).transpose()?.map(|tls| tls.acceptor);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Bound::new(name, listener, tls, limits)
    }

    /// Serves a socket bound already, with TLS when `tls` is given.
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        limits: ServerLimits,
    ) -> Result<Bound, ServerError> {
        limits.validate()?;
        let local_addr = listener.local_addr().map_err(ServerError::Socket)?;
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

    /// The address bound (the real port when the caller asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A TLS acceptor and the certificate it presents.
#[derive(Clone)]
pub struct LoadedTls {
    /// The acceptor (HTTP/1.1 only).
    pub acceptor: TlsAcceptor,
    /// The leaf certificate, from which channel bindings are derived.
    pub certificate: rustls::pki_types::CertificateDer<'static>,
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTls").finish_non_exhaustive()
    }
}

/// Loads a certificate chain and key from PEM files into a rustls acceptor (HTTP/1.1 only).
pub fn load_tls(files: &TlsFiles) -> Result<LoadedTls, ServerError> {
    let open = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(&files.key)?)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ServerError::Tls(format!("{} holds no PEM private key", files.key.display()))
        })?;
    let certificate = certs[0].clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoadedTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificate,
    })
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

/// Runs `bound` on a task of its own; `connection_service` makes each connection's service.
pub fn spawn<F, S, B>(bound: Bound, connection_service: F, on_failure: FailureHook) -> ServerHandle
where
    F: Fn() -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let local_addr = bound.local_addr;
    let task = tokio::spawn(run(bound, connection_service, on_failure, async move {
        // A dropped handle stops the server as well.
        let _ = stopped.await;
    }));
    ServerHandle {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// The connection a request arrived on, in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's address (a reverse proxy's, behind one).
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Serves `bound` until `shutdown` completes, then drains the connections. `connection_service`
/// makes each connection's service (state that lives as long as a connection, such as NTLM's,
/// belongs in it).
pub async fn run<F, S, B>(
    bound: Bound,
    connection_service: F,
    on_failure: FailureHook,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn() -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Bound {
        listener,
        tls,
        limits,
        local_addr,
        name,
    } = bound;
    let limits = Arc::new(limits);
    let slots = Arc::new(Slots::new(&limits));
    let tarpit = Tarpit::new(&limits);
    // `true` asks every connection to finish its request and close.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener, name) => accepted,
            () = &mut shutdown => break,
        };
        let start = match slots.admit(peer.ip()) {
            Admission::Admitted { slot, pressure } => Start::Admitted(slot, pressure),
            // The address's requests end within the body time-out, and then one of its
            // connections can be replaced; the new one waits for that off the accept loop,
            // unread. Exchange would otherwise send its notification again only 30 s later.
            Admission::OverAddressLimit => match tarpit.take() {
                Some(held) => Start::Waiting(held),
                None => {
                    on_failure(ConnectionFailure::Shed);
                    continue;
                }
            },
            Admission::OverFairShare => {
                debug!(server = name, %peer, "over the address's share of a full table");
                on_failure(ConnectionFailure::Shed);
                tarpit.hold(stream, &limits);
                continue;
            }
            Admission::Full => {
                // Every slot is in the middle of a request; those end within the body time-out.
                // Wait for one, as the kernel's accept queue would have.
                tokio::select! {
                    slot = slots.admit_when_free(peer.ip()) => match slot {
                        Some((slot, pressure)) => Start::Admitted(slot, pressure),
                        None => {
                            on_failure(ConnectionFailure::Shed);
                            tarpit.hold(stream, &limits);
                            continue;
                        }
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        // Reap finished connections so that the set does not grow with the server's age.
        while connections.try_join_next().is_some() {}
        let tls = tls.clone();
        let service = connection_service();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        let on_failure = on_failure.clone();
        let slots = slots.clone();
        let span = tracing::debug_span!("connection", server = name, %peer);
        connections.spawn(
            async move {
                let (slot, pressure) = match start {
                    Start::Admitted(slot, pressure) => (slot, pressure),
                    Start::Waiting(held) => {
                        let wait = slots.admit_when_address_frees(peer.ip());
                        let waited = tokio::time::timeout(limits.header_timeout, wait).await;
                        drop(held);
                        match waited {
                            Ok(Some(admitted)) => admitted,
                            _ => {
                                debug!("no slot of its address freed in time");
                                on_failure(ConnectionFailure::Shed);
                                return;
                            }
                        }
                    }
                };
                match slot.evicted {
                    Some(Eviction::ForRoom(evicted)) => {
                        debug!(peer = %evicted, "closed a connection waiting for a head to make room");
                        on_failure(ConnectionFailure::Shed);
                    }
                    // The client had finished with it, as far as the server can tell: not a
                    // failure.
                    Some(Eviction::Replaced) => {
                        debug!("closed an idle keep-alive connection of this address for this one");
                    }
                    None => {}
                }
                // Held for the connection's lifetime; dropping it frees the slot.
                let slot = slot.guard;
                let evict = slot.state.clone();
                let _ = stream.set_nodelay(true);
                let header_timeout = if pressure {
                    limits.header_timeout.min(limits.pressure_header_timeout)
                } else {
                    limits.header_timeout
                };
                let service = {
                    let state = slot.state.clone();
                    let slots = slot.slots.clone();
                    let tls = tls.is_some();
                    hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        // Handlers that care who is calling (a console trusting a proxy's
                        // header, throttling by address) read it here.
                        req.extensions_mut().insert(Peer { addr: peer, tls });
                        state.served.store(true, Ordering::Relaxed);
                        state.busy.store(true, Ordering::Relaxed);
                        let state = state.clone();
                        let slots = slots.clone();
                        let call = service.call(req);
                        async move {
                            let answer = call.await;
                            slots.request_done(&state);
                            answer
                        }
                    })
                };
                let served_connection = async {
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => {
                                    serve_connection(stream, service, &limits, header_timeout, stop)
                                        .await
                                }
                                Ok(Err(e)) => {
                                    debug!(error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    debug!("TLS handshake timed out");
                                    on_failure(ConnectionFailure::Timeout);
                                    Ok(())
                                }
                            }
                        }
                        None => {
                            serve_connection(stream, service, &limits, header_timeout, stop).await
                        }
                    }
                };
                let result = tokio::select! {
                    result = served_connection => result,
                    // Closed to make room for a new connection: dropping the future closes
                    // the socket.
                    () = evict.evict.notified() => return,
                };
                if let Err(e) = result {
                    // A head time-out after a request is an idle keep-alive connection being
                    // closed, not a slow client.
                    if e.is_timeout() && evict.served.load(Ordering::Relaxed) {
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

/// How an accepted connection starts.
enum Start {
    /// With a slot; `true` when the table was at least half full.
    Admitted(Slot, bool),
    /// Waiting for a slot of its address, counted among the held connections.
    Waiting(Held),
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
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also closes
        // idle keep-alive connections.
        .header_read_timeout(header_timeout)
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

/// Why a request body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// It crossed the cap.
    TooLarge,
    /// It did not arrive by the deadline.
    Timeout,
    /// The connection broke or the framing was wrong (e.g. shorter than its Content-Length).
    Broken(hyper::Error),
}

/// The first allocation for a body; it doubles with what arrives, up to the cap.
const INITIAL_BODY_BUFFER: usize = 8 * 1024;

/// Reads a request body as it arrives into one buffer that never grows past `cap`, by
/// `deadline`. The declared length plays no part in the allocation: the buffer starts small and
/// doubles with what actually arrived, so a client that announces a large body and sends
/// nothing costs nothing.
pub async fn read_body(
    body: &mut Incoming,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, BodyError> {
    // A Vec grown with `reserve_exact` never allocates past the cap (BytesMut would double).
    let mut buf: Vec<u8> = Vec::with_capacity(INITIAL_BODY_BUFFER.min(cap));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let needed = buf.len().saturating_add(data.len());
            if needed > cap {
                return Err(BodyError::TooLarge);
            }
            if needed > buf.capacity() {
                let grown = buf.capacity().saturating_mul(2).clamp(needed, cap);
                buf.reserve_exact(grown - buf.len());
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// One connection's entry in the [`Slots`] table.
struct SlotState {
    peer: IpAddr,
    /// In the middle of a request (from the head read to the answer): never closed for room.
    busy: AtomicBool,
    /// Has answered at least one request: when it is not busy, it is an idle keep-alive
    /// connection the client may reuse or drop.
    served: AtomicBool,
    /// When the connection last started waiting for a head (accept, or the end of an answer),
    /// in milliseconds since the table was made.
    idle_since: AtomicU64,
    /// Notified when the connection is to close to make room.
    evict: Notify,
}

/// The open connections, per address and in total.
pub struct Slots {
    table: std::sync::Mutex<SlotTable>,
    /// Notified (all waiters) when a slot frees or a request ends.
    freed: Notify,
    max_total: usize,
    max_per_address: usize,
    started: std::time::Instant,
    /// How long a keep-alive connection must have been idle to be replaced by a new one from
    /// its address (milliseconds).
    replace_idle_after_ms: u64,
}

/// A keep-alive connection idle for less than this may be about to carry the client's next
/// request: closing it then resets that request (Exchange sends it again 30 s later). Clients'
/// pools reuse the connection returned last, so one idle for a second is one the client is not
/// about to pick.
const REPLACE_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How often a connection waiting for a slot of its address looks again for a connection that
/// has become replaceable by being idle long enough (other changes wake it at once).
const ADDRESS_WAIT_RECHECK: Duration = Duration::from_millis(250);

#[derive(Default)]
struct SlotTable {
    next_id: u64,
    open: HashMap<u64, Arc<SlotState>>,
    per_address: HashMap<IpAddr, usize>,
}

impl SlotTable {
    /// The connection waiting for a head the longest among those `eligible` (ties: the oldest).
    fn idlest(&self, eligible: impl Fn(&SlotState) -> bool) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, s)| eligible(s))
            .min_by_key(|(id, s)| (s.idle_since.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id)
    }

    fn remove(&mut self, id: u64) -> Option<Arc<SlotState>> {
        let state = self.open.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&state.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&state.peer);
            }
        }
        Some(state)
    }
}

/// A connection's hold on its slot; dropping it frees the slot.
pub struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    state: Arc<SlotState>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Already gone when the connection was closed to make room.
        if self.slots.lock().remove(self.id).is_some() {
            self.slots.freed.notify_waiters();
        }
    }
}

/// An admitted connection.
pub struct Slot {
    guard: SlotGuard,
    /// The connection closed to make room for this one, if any.
    evicted: Option<Eviction>,
}

/// Which connection was closed for a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The table was full: the busiest address's connection waiting for a head the longest.
    ForRoom(IpAddr),
    /// The address was at its cap: its own keep-alive connection idle the longest. Exchange
    /// opens one connection per subscription with a notification in flight; refusing the new
    /// one would make Exchange resend 30 s later, while the idle one was finished with.
    Replaced,
}

/// What [`Slots::admit`] decided.
pub enum Admission {
    /// Served; `pressure` when the table is at least half full.
    Admitted { slot: Slot, pressure: bool },
    /// The address already has its share of connections, none of them replaceable (an idle
    /// keep-alive one, idle for a second or more).
    OverAddressLimit,
    /// The table is full and the address, which holds some, would hold as many as the busiest.
    OverFairShare,
    /// Every slot is in the middle of a request.
    Full,
}

impl Slots {
    pub fn new(limits: &ServerLimits) -> Self {
        Slots {
            table: std::sync::Mutex::default(),
            freed: Notify::new(),
            max_total: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            started: std::time::Instant::now(),
            replace_idle_after_ms: REPLACE_IDLE_AFTER.as_millis() as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        // The table stays consistent between statements; a panic elsewhere does not spoil it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes a slot for a connection from `peer`. When the address is at its cap, closes its
    /// keep-alive connection idle the longest (a second or more); when the table is full,
    /// closes the connection waiting for a head the longest among those of the address with the
    /// most connections.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let mut table = self.lock();
        let mut evicted = None;
        if table.per_address.get(&peer).copied().unwrap_or(0) >= self.max_per_address {
            // Only a connection that has answered a request and been idle a while is replaced:
            // one that never sent a whole head may be a slow client of the same address, and
            // replacing those would let a flood from one address cycle through its own
            // connections as fast as it reconnects.
            let now = self.now_ms();
            let idlest = table.idlest(|s| {
                s.peer == peer
                    && s.served.load(Ordering::Relaxed)
                    && !s.busy.load(Ordering::Relaxed)
                    && now.saturating_sub(s.idle_since.load(Ordering::Relaxed))
                        >= self.replace_idle_after_ms
            });
            let Some(id) = idlest else {
                return Admission::OverAddressLimit;
            };
            if let Some(state) = table.remove(id) {
                state.evict.notify_one();
                evicted = Some(Eviction::Replaced);
            }
        } else if table.open.len() >= self.max_total {
            // Room is made only for an address with fewer connections than the busiest one,
            // by closing the busiest address's connection idle the longest: a flood comes from
            // few addresses, Exchange's notifications from others. Making room for the flood's
            // own addresses would only make the flood cycle through the table.
            let mine = table.per_address.get(&peer).copied().unwrap_or(0);
            let Some((busiest, most)) = table
                .per_address
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(ip, n)| (*ip, *n))
            else {
                return Admission::Full;
            };
            // An address with no connection always gets one; another only while it would
            // still hold fewer than the busiest.
            if mine > 0 && mine + 1 >= most {
                return Admission::OverFairShare;
            }
            let idlest = table.idlest(|s| s.peer == busiest && !s.busy.load(Ordering::Relaxed));
            let Some(id) = idlest else {
                return Admission::Full;
            };
            if let Some(state) = table.remove(id) {
                // `notify_one` keeps the wake-up for a task not yet waiting.
                state.evict.notify_one();
                evicted = Some(Eviction::ForRoom(state.peer));
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(SlotState {
            peer,
            busy: AtomicBool::new(false),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        table.open.insert(id, state.clone());
        *table.per_address.entry(peer).or_default() += 1;
        let pressure = table.open.len() * 2 > self.max_total;
        Admission::Admitted {
            slot: Slot {
                guard: SlotGuard {
                    slots: self.clone(),
                    id,
                    state,
                },
                evicted,
            },
            pressure,
        }
    }

    /// Waits until a slot frees and takes it; `None` if the address has reached its limit
    /// meanwhile.
    async fn admit_when_free(self: &Arc<Self>, peer: IpAddr) -> Option<(Slot, bool)> {
        loop {
            // Created before the check, so that a slot freed in between still wakes it.
            let freed = self.freed.notified();
            match self.admit(peer) {
                Admission::Admitted { slot, pressure } => return Some((slot, pressure)),
                Admission::OverAddressLimit | Admission::OverFairShare => return None,
                Admission::Full => freed.await,
            }
        }
    }

    /// Waits until `peer` may have another connection (one of its connections closed, or has
    /// been idle long enough to be replaced) and takes the slot; `None` if the table is full
    /// of others.
    async fn admit_when_address_frees(self: &Arc<Self>, peer: IpAddr) -> Option<(Slot, bool)> {
        loop {
            let freed = self.freed.notified();
            match self.admit(peer) {
                Admission::Admitted { slot, pressure } => return Some((slot, pressure)),
                Admission::OverAddressLimit | Admission::Full => {
                    tokio::select! {
                        () = freed => {}
                        () = tokio::time::sleep(ADDRESS_WAIT_RECHECK) => {}
                    }
                }
                Admission::OverFairShare => return None,
            }
        }
    }

    /// A connection's request was answered: it waits for a head again, and may be replaced.
    fn request_done(&self, state: &SlotState) {
        state.busy.store(false, Ordering::Relaxed);
        state.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    /// Open connections now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

/// Connections refused a slot are held open, unread, for the head time-out, then
/// closed: closing them at once only invites the client to reconnect at once, and a flood of
/// reconnections costs more than an idle socket. Connections waiting for a slot of their
/// address count among them. Bounded by the open-file limit, past which they are closed at
/// once.
struct Tarpit {
    held: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl Tarpit {
    fn new(limits: &ServerLimits) -> Self {
        // Leave room for the served connections and the rest of the process (databases, EWS).
        let max = open_file_limit()
            .saturating_sub(limits.max_connections + 256)
            .min(limits.max_connections * 8);
        Tarpit {
            held: Arc::default(),
            max,
        }
    }

    /// Counts one more held connection; `None` when there are as many as allowed.
    fn take(&self) -> Option<Held> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Held(self.held.clone()))
    }

    fn hold(&self, stream: TcpStream, limits: &ServerLimits) {
        let Some(held) = self.take() else {
            return;
        };
        let for_how_long = limits.header_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(for_how_long).await;
            drop(stream);
            drop(held);
        });
    }
}

/// One connection counted by the [`Tarpit`]; dropping it uncounts it.
struct Held(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The soft limit on open files (1024 where it cannot be read).
fn open_file_limit() -> usize {
    #[cfg(unix)]
    // SAFETY: getrlimit writes into the rlimit we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            return usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
        }
    }
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_address: usize) -> Arc<Slots> {
        let mut slots = Slots::new(&ServerLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            ..ServerLimits::default()
        });
        // Replaceable as soon as idle, unless a test says otherwise.
        slots.replace_idle_after_ms = 0;
        Arc::new(slots)
    }

    fn admitted(a: Admission) -> Slot {
        match a {
            Admission::Admitted { slot, .. } => slot,
            Admission::OverAddressLimit => panic!("over the address limit"),
            Admission::OverFairShare => panic!("over the fair share"),
            Admission::Full => panic!("full"),
        }
    }

    /// Whether the connection holding `slot` was told to close.
    fn told_to_close(slot: &Slot) -> bool {
        let notified = std::pin::pin!(slot.guard.state.evict.notified());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        notified.poll(&mut cx).is_ready()
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn slots_refuse_an_address_over_its_limit_and_free_on_drop() {
        let s = slots(10, 2);
        let a1 = admitted(s.admit(A));
        let _a2 = admitted(s.admit(A));
        assert!(matches!(s.admit(A), Admission::OverAddressLimit));
        let _b = admitted(s.admit(B));
        drop(a1);
        let _a3 = admitted(s.admit(A));
        assert_eq!(s.open(), 3);
    }

    #[test]
    fn slots_at_an_address_cap_replace_its_idlest_keep_alive_connection_only() {
        let s = slots(10, 2);
        let first = admitted(s.admit(A));
        let second = admitted(s.admit(A));
        // Neither has answered a request: they may be slow clients, and stay.
        assert!(matches!(s.admit(A), Admission::OverAddressLimit));
        // Both have answered one; the first is in the middle of its next.
        for slot in [&first, &second] {
            slot.guard.state.served.store(true, Ordering::Relaxed);
        }
        first.guard.state.busy.store(true, Ordering::Relaxed);
        let third = admitted(s.admit(A));
        assert_eq!(third.evicted, Some(Eviction::Replaced));
        assert!(told_to_close(&second), "the idle one was told to close");
        drop(second);
        assert_eq!(s.open(), 2);
        // The busy one and the new one, which has answered nothing yet: no room.
        assert!(matches!(s.admit(A), Admission::OverAddressLimit));
        // Another address is not affected by A's cap.
        let _b = admitted(s.admit(B));
        assert_eq!(s.open(), 3);
    }

    #[test]
    fn a_keep_alive_connection_idle_for_less_than_a_second_is_not_replaced() {
        let mut s = Slots::new(&ServerLimits {
            max_connections_per_address: 1,
            ..ServerLimits::default()
        });
        s.replace_idle_after_ms = 60_000;
        let s = Arc::new(s);
        let only = admitted(s.admit(A));
        // Just answered: the client may be writing its next request on it.
        s.request_done(&only.guard.state);
        only.guard.state.served.store(true, Ordering::Relaxed);
        assert!(matches!(s.admit(A), Admission::OverAddressLimit));
    }

    #[tokio::test]
    async fn a_connection_over_its_address_cap_waits_for_one_of_its_requests_to_end() {
        let s = slots(10, 1);
        let busy = admitted(s.admit(A));
        busy.guard.state.served.store(true, Ordering::Relaxed);
        busy.guard.state.busy.store(true, Ordering::Relaxed);
        let waiting = tokio::spawn({
            let s = s.clone();
            async move {
                s.admit_when_address_frees(A)
                    .await
                    .map(|(slot, _)| slot.evicted)
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "admitted while A's only connection was busy"
        );
        s.request_done(&busy.guard.state);
        let evicted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the request ended")
            .unwrap();
        assert_eq!(evicted, Some(Some(Eviction::Replaced)));
    }

    #[test]
    fn slots_when_full_close_the_busiest_address_idlest_connection_never_a_busy_one() {
        let s = slots(3, 10);
        let first = admitted(s.admit(A));
        let second = admitted(s.admit(A));
        let _b = admitted(s.admit(B));
        // A's first connection is in the middle of a request: its second goes.
        first.guard.state.busy.store(true, Ordering::Relaxed);
        let c = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
        let third = admitted(s.admit(c));
        assert_eq!(third.evicted, Some(Eviction::ForRoom(A)));
        assert!(
            told_to_close(&second),
            "the evicted connection was told to close"
        );
        drop(second);
        assert_eq!(s.open(), 3);
        // One each now: no address has fewer than the busiest, so nobody is closed for A.
        assert!(matches!(s.admit(A), Admission::OverFairShare));
    }
}
