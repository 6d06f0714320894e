//! The HTTP side: the shared server of `taskbridge_ews::server` (plain or TLS, one service per
//! connection for NTLM's state), routing to the EWS endpoint and the admin API, authentication, fault injection and recording around each
//! EWS request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::ConnState;
use crate::auth::{AuthMode, Caller};
use crate::faults::{Failure, ThrottleShape};
use crate::ids::FolderKind;
use crate::record::{Direction, Exchange};
use crate::shared::{Resp, Sim, respond};
use crate::store::Mailbox;
use crate::streaming::{self, StreamBody};
use crate::{ADMIN_PATH, EWS_PATH, SimError, TlsFiles, admin, autodiscover, ops};
use taskbridge_ews::affinity::{BackendCookie, prefers_affinity};
use taskbridge_ews::server::{self as http_server, ServerLimits};
use taskbridge_ews::soap::{self, Fault};
use taskbridge_ews::transport::channel_binding::{ChannelBindings, tls_server_end_point_data};

/// The TLS side of the listener: the acceptor, and the channel bindings its certificate gives
/// (what an NTLM client under Extended Protection must send).
#[derive(Clone)]
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub bindings: ChannelBindings,
    /// The same bindings' application data, as a Kerberos acceptor checks them.
    pub end_point: Arc<[u8]>,
}

/// Builds the TLS acceptor from PEM files.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> Result<Tls, SimError> {
    let loaded = http_server::load_tls(files).map_err(|e| match e {
        http_server::ServerError::Tls(what) => SimError::Tls(what),
        other => SimError::Tls(other.to_string()),
    })?;
    Ok(Tls {
        bindings: ChannelBindings::tls_server_end_point(&loaded.certificate),
        end_point: tls_server_end_point_data(&loaded.certificate).into(),
        acceptor: loaded.acceptor,
    })
}

/// The simulator's connection limits: a test peer, not a door to the internet. Room for every
/// client a test or benchmark opens, and no head time-out short enough to matter; the accept
/// loop, TLS and graceful shutdown are the shared server's.
pub(crate) fn limits() -> ServerLimits {
    ServerLimits {
        max_connections: 4096,
        max_connections_per_address: 4096,
        header_timeout: Duration::from_secs(600),
        pressure_header_timeout: Duration::from_secs(600),
        body_timeout: Duration::from_secs(600),
        max_header_bytes: 1024 * 1024,
        shutdown_grace: Duration::from_secs(5),
    }
}

/// Serves `bound` until `shutdown` completes, then drains the connections and stops push
/// deliveries and persistence.
pub(crate) async fn run(
    sim: Arc<Sim>,
    bound: http_server::Bound,
    channel: Option<(ChannelBindings, Arc<[u8]>)>,
    stop_all: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    // NTLM authenticates the connection: each one gets a service with its own state.
    let connection_service = {
        let sim = sim.clone();
        move || {
            let sim = sim.clone();
            let conn_state = Arc::new(ConnState {
                ntlm: Default::default(),
                negotiate: Default::default(),
                channel: channel.as_ref().map(|(bindings, _)| *bindings),
                end_point: channel.as_ref().map(|(_, data)| data.clone()),
            });
            service_fn(move |req| {
                let sim = sim.clone();
                let conn_state = conn_state.clone();
                async move { handle(sim, conn_state, req).await }
            })
        }
    };
    let shutdown = async move {
        shutdown.await;
        // Push deliveries stop with the connections.
        let _ = stop_all.send(true);
    };
    http_server::run(bound, connection_service, Arc::new(|_| {}), shutdown).await;
    sim.subs.stop_all().await;
    if let Some(p) = &sim.persist {
        p.close().await;
    }
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

const XML: &str = "text/xml; charset=utf-8";

/// A whole answer, or a streaming one (GetStreamingEvents).
pub(crate) type SimBody = http_body_util::Either<http_body_util::Full<Bytes>, StreamBody>;

async fn handle(
    sim: Arc<Sim>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Dropped> {
    let mut stream = None;
    let whole = handle_whole(sim, conn.clone(), req, &mut stream).await?;
    let mut response = match stream {
        Some(s) => s.map(http_body_util::Either::Right),
        None => whole.map(http_body_util::Either::Left),
    };
    // Negotiate's mutual authentication: the answer to a request that carried a ticket proves
    // the server holds the service key.
    if let Some(token) = crate::auth::take_negotiate_reply(&conn)
        && let Ok(value) = token.parse()
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    Ok(response)
}

/// Handles a request; a streaming answer goes to `stream` (and the returned one is unused).
async fn handle_whole(
    sim: Arc<Sim>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
    stream: &mut Option<Response<StreamBody>>,
) -> Result<Resp, Dropped> {
    let path = req.uri().path().to_string();
    if path == "/sim" || path.starts_with(ADMIN_PATH) {
        return Ok(admin::handle(&sim, req).await);
    }
    let autodiscover = autodiscover::is_autodiscover_path(&path);
    if !path.eq_ignore_ascii_case(EWS_PATH) && !autodiscover {
        return Ok(respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"));
    }
    if req.method() != Method::POST {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "EWS and Autodiscover take requests by POST\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, "POST".parse().expect("static header"));
        return Ok(r);
    }
    let caller = match authenticate(&sim, &conn, &req) {
        Ok(c) => c,
        Err(challenge) => return Ok(unauthorized(&challenge)),
    };
    let headers = req.headers().clone();
    let anchor = req
        .headers()
        .get("X-AnchorMailbox")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), sim.config.max_request_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Ok(if too_large {
                respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    "request too large\n",
                )
            } else {
                respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "cannot read the request body\n",
                )
            });
        }
    };
    if autodiscover {
        let scheme = if conn.channel.is_some() {
            "https"
        } else {
            "http"
        };
        return Ok(autodiscover::answer(&sim, &path, scheme, &headers, &body));
    }
    let _in_flight = sim.counters.begin();
    ews(&sim, &caller, &body, anchor.as_deref(), &headers, stream).await
}

/// The caller, or the `WWW-Authenticate` challenge of a 401.
fn authenticate(sim: &Sim, conn: &ConnState, req: &Request<Incoming>) -> Result<Caller, String> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match sim.config.auth {
        AuthMode::None => Ok(Caller::anonymous()),
        AuthMode::Basic => authorization
            .and_then(|h| sim.users.check_basic(h))
            .ok_or_else(|| "Basic realm=\"taskbridge sim\"".to_string()),
        AuthMode::Ntlm => crate::auth::ntlm_step(
            &sim.users,
            conn,
            authorization,
            sim.config.extended_protection,
        ),
        AuthMode::Negotiate => match &sim.kerberos {
            Some(keys) => crate::auth::negotiate_step(
                &sim.users,
                keys,
                conn,
                authorization,
                sim.config.extended_protection,
            ),
            None => Err(crate::auth::NEGOTIATE_OFFER.to_string()),
        },
    }
}

fn unauthorized(challenge: &str) -> Resp {
    let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "401 Unauthorized\n");
    if let Ok(v) = challenge.parse() {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Decrements a mailbox's in-flight count when the request ends.
struct MailboxGuard(Arc<Mailbox>);

impl Drop for MailboxGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn ews(
    sim: &Sim,
    caller: &Caller,
    body: &Bytes,
    anchor: Option<&str>,
    headers: &http::HeaderMap,
    stream: &mut Option<Response<StreamBody>>,
) -> Result<Resp, Dropped> {
    let server = Some(&sim.config.server_version);
    sim.counters.arrived(caller.name());
    let peek = ops::peek(body, sim.config.max_request_bytes);
    let op = match &peek {
        Ok((_, name)) => name.clone(),
        Err(_) => "Unknown".to_string(),
    };
    sim.counters.count_op(&op);
    let record = |status: u16, response: Option<&[u8]>| {
        sim.record(Exchange {
            operation: &op,
            direction: Direction::Inbound,
            request: body,
            response,
            status,
        })
    };

    if let Some(failure) = sim.faults.failure() {
        sim.counters.failed.fetch_add(1, Ordering::Relaxed);
        return match failure {
            Failure::Http500 => {
                record(500, None);
                Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, "", Bytes::new()))
            }
            Failure::Drop => {
                record(0, None);
                Err(Dropped)
            }
        };
    }

    let header = match &peek {
        Ok((h, _)) => Some(h),
        Err(_) => None,
    };
    let mailbox = header.and_then(|h| ops::anchor_mailbox(sim, caller, h, anchor));
    let _guard = match (&mailbox, sim.config.faults.max_concurrency) {
        (Some(mb), Some(max)) => {
            let now = mb.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let guard = MailboxGuard(mb.clone());
            if now > max {
                sim.counters.throttled.fetch_add(1, Ordering::Relaxed);
                sim.counters
                    .announced(caller.name(), sim.config.faults.back_off);
                let bytes =
                    soap::write_fault(server, &Fault::server_busy(sim.config.faults.back_off));
                record(500, Some(&bytes));
                return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, XML, bytes));
            }
            Some(guard)
        }
        _ => None,
    };

    if !sim.config.faults.latency.is_zero() {
        tokio::time::sleep(sim.config.faults.latency).await;
    }

    let back_off = sim.config.faults.back_off;
    let throttle = sim.faults.throttle();
    if throttle.is_some() {
        sim.counters.throttled.fetch_add(1, Ordering::Relaxed);
    }
    match throttle {
        Some(ThrottleShape::Fault | ThrottleShape::Message) => {
            sim.counters.announced(caller.name(), back_off);
        }
        Some(ThrottleShape::Http503) => {
            sim.counters.announced(
                caller.name(),
                Duration::from_secs(retry_after_secs(back_off)),
            );
        }
        None => {}
    }
    match throttle {
        Some(ThrottleShape::Fault) => {
            let bytes = soap::write_fault(server, &Fault::server_busy(back_off));
            record(500, Some(&bytes));
            return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, XML, bytes));
        }
        Some(ThrottleShape::Http503) => {
            record(503, None);
            let mut r = respond(StatusCode::SERVICE_UNAVAILABLE, "", Bytes::new());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_secs(back_off)
                    .to_string()
                    .parse()
                    .expect("digits"),
            );
            return Ok(r);
        }
        _ => {}
    }

    let busy = (throttle == Some(ThrottleShape::Message)).then_some(back_off);
    let route = route_of(sim, headers, anchor, mailbox.as_deref());
    if let (Ok((header, name)), None) = (&peek, busy)
        && name == "GetStreamingEvents"
    {
        return match streaming::open(sim, caller, header, body, route.backend) {
            Ok(response) => {
                // The envelopes are written as events happen; none is recorded.
                record(200, None);
                *stream = Some(response);
                Ok(respond(StatusCode::OK, XML, Bytes::new()))
            }
            Err(fault) => {
                sim.counters.faults.fetch_add(1, Ordering::Relaxed);
                let bytes = soap::write_fault(server, &fault);
                record(500, Some(&bytes));
                Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, XML, bytes))
            }
        };
    }
    let mut out = match peek {
        Ok((header, name)) => ops::dispatch(sim, caller, header, &name, body, busy, &route),
        Err(fault) => ops::Dispatched::fault(*fault),
    };
    for ack in std::mem::take(&mut out.acks) {
        let ok = matches!(ack.await, Ok(Ok(())));
        if !ok {
            sim.counters.failed.fetch_add(1, Ordering::Relaxed);
            out = ops::Dispatched::fault(Fault::client(
                taskbridge_ews::types::ResponseCode::ErrorInternalServerError,
                "The state file could not be written.",
            ));
            break;
        }
    }
    let bytes = match out.fault {
        Some(fault) => {
            sim.counters.faults.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                soap::write_fault(server, &fault),
            )
        }
        None => (StatusCode::OK, out.body),
    };
    if let Some(mb) = &mailbox
        && sim.faults.spontaneous_changekey()
    {
        spontaneous_change_key(sim, mb).await;
    }
    record(bytes.0.as_u16(), Some(&bytes.1));
    let affinity = bytes.0 == StatusCode::OK && op == "Subscribe" && prefers_affinity(headers);
    let mut response = respond(bytes.0, XML, bytes.1);
    if affinity && let Some(backend) = route.backend {
        // Exchange names the backend the Subscribe reached (the anchor mailbox's), which now
        // holds the subscription, for the later requests to send back.
        response.headers_mut().append(
            header::SET_COOKIE,
            sim.backend_cookie(backend).set_cookie_header(),
        );
    }
    Ok(response)
}

/// Where a Client Access server sends the request: to the backend its
/// `X-BackEndOverrideCookie` names, else to the `X-AnchorMailbox`'s, else to the mailbox it
/// acts for.
fn route_of(
    sim: &Sim,
    headers: &http::HeaderMap,
    anchor: Option<&str>,
    mailbox: Option<&Mailbox>,
) -> ops::Route {
    let backend = BackendCookie::from_request(headers)
        .and_then(|c| sim.backend_named(&c))
        .or_else(|| {
            anchor
                .and_then(|a| sim.store.by_smtp(a))
                .map(|mb| sim.backend_of(&mb.smtp))
        })
        .or_else(|| mailbox.map(|mb| sim.backend_of(&mb.smtp)));
    ops::Route {
        backend,
        anchor: anchor.map(str::to_string),
    }
}

/// `Retry-After` is in whole seconds: the back-off rounded up, at least 1.
fn retry_after_secs(back_off: Duration) -> u64 {
    u64::try_from(back_off.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Gives a random task of the mailbox a new change key, as Exchange sometimes does by itself.
async fn spontaneous_change_key(sim: &Sim, mb: &Arc<Mailbox>) {
    let ack = {
        let mut st = mb.lock();
        let tasks: Vec<u64> = st
            .folder_items(FolderKind::Tasks)
            .iter()
            .map(|i| i.no)
            .collect();
        if tasks.is_empty() {
            return;
        }
        let no = tasks[sim.faults.pick(tasks.len())];
        if st.bump(mb, no, chrono::Utc::now()).is_err() {
            return;
        }
        sim.counters.spontaneous.fetch_add(1, Ordering::Relaxed);
        ops::commit(sim, mb, &mut st)
    };
    if let Some(ack) = ack {
        let _ = ack.await;
    }
}
