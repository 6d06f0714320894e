//! Streaming subscriptions: GetStreamingEvents holds its HTTP response open and writes one
//! `GetStreamingEventsResponse` envelope per chunk as things happen.
//!
//! - An event in a subscribed folder is sent at once (one envelope with every subscription's
//!   notifications, at most 50 events each per envelope).
//! - While nothing happens, a keep-alive (`ConnectionStatus` OK, no notifications) goes out every
//!   30 seconds.
//! - At the `ConnectionTimeout` (1 to 30 minutes) the last envelope says `ConnectionStatus`
//!   Closed and the response ends.
//! - One connection may carry the subscriptions of several mailboxes when the caller may
//!   impersonate (a service account); an ordinary account streams only its own mailbox's.
//! - A subscription id that is unknown, was unsubscribed, or expired (no connection for 30
//!   minutes) is answered in an Error message, `ErrorSubscriptionNotFound`, naming it in
//!   `ErrorSubscriptionIds`; an id of a push or pull subscription gets
//!   `ErrorInvalidSubscription`. The connection carries on with the good ids, or closes when
//!   there are none.
//!
//! - With `--backends` above 1, the request reaches one backend (its `X-BackEndOverrideCookie`'s,
//!   else its anchor mailbox's) and a subscription held by another backend (the one its
//!   Subscribe was routed to) is `ErrorSubscriptionNotFound` there, as Exchange answers a client
//!   that does not keep affinity. So is one whose mailbox moved to another backend since (a
//!   database fail-over); its old backend keeps it until Unsubscribe (routed there) or expiry.
//!
//! `--push-time-scale` scales the keep-alive interval, the connection time-out and the expiry.
//! [`crate::SimHandle::cut_streams`] (admin: `POST /sim/streams/cut`) breaks every open
//! streaming connection without the final chunk, as a network failure does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auth::Caller;
use crate::fields::ItemError;
use crate::ops::{self, Ctx};
use crate::scaled;
use crate::shared::{Sim, stopped};
use crate::subs::{MAX_EVENTS_PER_NOTIFICATION, Sub, SubKind};
use taskbridge_ews::ops::decode_request_strict;
use taskbridge_ews::ops::encode_response;
use taskbridge_ews::ops::get_streaming_events::{
    CONNECTION_TIMEOUT_MINUTES, ConnectionStatus, GetStreamingEvents, GetStreamingEventsResponse,
    Notifications, StreamingPayload, SubscriptionIds,
};
use taskbridge_ews::soap::{Fault, Header};
use taskbridge_ews::types::{Notification, ResponseCode, ResponseMessage, SubscriptionId};

/// Between keep-alive envelopes (before `--push-time-scale`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A streaming subscription without a connection for this long has expired (before
/// `--push-time-scale`).
pub const EXPIRY: Duration = Duration::from_secs(30 * 60);

/// Why a streaming body ended early: the connection was cut on purpose.
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("streaming connection cut")
    }
}

impl std::error::Error for Cut {}

/// The body of a streaming response: chunks as the connection's task sends them. An `Err`
/// makes hyper abort the connection without the closing chunk.
pub(crate) struct StreamBody {
    rx: mpsc::Receiver<Result<Bytes, Cut>>,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

/// Opens a GetStreamingEvents connection: the response whose body the connection's task
/// writes, or the fault of a request that does not read.
pub(crate) fn open(
    sim: &Sim,
    caller: &Caller,
    header: &Header,
    body: &[u8],
    routed: Option<usize>,
) -> Result<Response<StreamBody>, Box<Fault>> {
    let (_, request) =
        decode_request_strict::<GetStreamingEvents>(body, sim.config.max_request_bytes)
            .map_err(|e| Box::new(ops::schema_fault(&e)))?;
    let minutes = request.connection_timeout;
    if !CONNECTION_TIMEOUT_MINUTES.contains(&minutes) {
        return Err(Box::new(Fault::schema_validation(
            1,
            1,
            &format!(
                "The 'ConnectionTimeout' element is invalid - The value '{minutes}' is invalid according to its datatype 'StreamingSubscriptionConnectionTimeoutType' - The {} constraint failed.",
                if minutes < 1 {
                    "MinInclusive"
                } else {
                    "MaxInclusive"
                }
            ),
        )));
    }
    let (acting, impersonating) = ops::acting_mailbox(sim, caller, header)?;
    let ctx = Ctx {
        sim,
        caller,
        acting,
        impersonating,
        route: ops::Route {
            backend: routed,
            anchor: None,
        },
        now: chrono::Utc::now(),
        acks: Vec::new(),
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for id in &request.subscription_ids.subscription_ids {
        match usable(&ctx, id, routed) {
            Ok(sub) => good.push(sub),
            Err(e) => bad.push((id.clone(), e)),
        }
    }
    let Some(me) = sim.me() else {
        return Err(Box::new(Fault::client(
            ResponseCode::ErrorInternalServerError,
            "The simulator is shutting down.",
        )));
    };
    let (tx, rx) = mpsc::channel(16);
    let timeout = scaled(
        Duration::from_secs(60 * u64::try_from(minutes).unwrap_or(1)),
        sim.config.push_time_scale,
    );
    // Counted from here, before the answer's head leaves, so that a client that sees the
    // response also sees it counted.
    sim.open_streams.fetch_add(1, Ordering::SeqCst);
    let open = OpenGuard(me.clone());
    sim.subs.spawn(run(me, open, good, bad, timeout, tx));
    let mut response = Response::new(StreamBody { rx });
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/xml; charset=utf-8".parse().expect("static header"),
    );
    Ok(response)
}

/// The subscription `id` names, if this connection may stream it.
fn usable(
    ctx: &Ctx<'_>,
    id: &SubscriptionId,
    routed: Option<usize>,
) -> Result<Arc<Sub>, ItemError> {
    let not_found = || {
        (
            ResponseCode::ErrorSubscriptionNotFound,
            "The subscription was not found.".to_string(),
        )
    };
    let sub = ctx.sim.subs.get(id.as_str()).ok_or_else(not_found)?;
    // The subscription lives on the backend its Subscribe was routed to; a request routed to
    // another one does not find it there, which is what Exchange answers a client that mixes
    // backends. One whose mailbox has moved away since is not served by its backend either.
    if routed.is_some_and(|n| n != sub.backend) || sub.is_orphaned() {
        return Err(not_found());
    }
    if sub.kind != SubKind::Streaming {
        return Err((
            ResponseCode::ErrorInvalidSubscription,
            "The subscription is not a streaming subscription.".into(),
        ));
    }
    // One connection carries the subscriptions of many mailboxes when an account that may
    // impersonate them opens it; an ordinary account reads only its own mailbox's.
    let own = ctx
        .caller
        .user
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(&sub.mailbox.smtp));
    if !(ctx.caller.may_impersonate || own) {
        return Err((
            ResponseCode::Other("ErrorSubscriptionAccessDenied".into()),
            "A subscription can only be accessed by the account that created it.".into(),
        ));
    }
    let expiry = scaled(EXPIRY, ctx.sim.config.push_time_scale);
    if sub.last_access().elapsed() > expiry {
        ctx.sim.subs.remove(sub.id.as_str());
        return Err(not_found());
    }
    Ok(sub)
}

fn envelope(sim: &Sim, message: ResponseMessage<StreamingPayload>) -> Bytes {
    let response = GetStreamingEventsResponse {
        response_messages: vec![message],
    };
    Bytes::from(encode_response::<GetStreamingEvents>(
        Some(&sim.config.server_version),
        &response,
    ))
}

fn status(sim: &Sim, status: ConnectionStatus) -> Bytes {
    envelope(
        sim,
        ResponseMessage::success(StreamingPayload {
            connection_status: Some(status),
            ..StreamingPayload::default()
        }),
    )
}

/// Decrements the open-connection count when the connection's task ends.
struct OpenGuard(Arc<Sim>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection's task: writes envelopes into `tx` until the time-out, a cut, the
/// client going away or the simulator stopping.
async fn run(
    sim: Arc<Sim>,
    open: OpenGuard,
    mut subs: Vec<Arc<Sub>>,
    bad: Vec<(SubscriptionId, ItemError)>,
    timeout: Duration,
    tx: mpsc::Sender<Result<Bytes, Cut>>,
) {
    // A local, so that it is dropped before `tx`: a client that sees the body end sees the
    // connection uncounted.
    let _open = open;
    let mut cut = sim.cut_streams.subscribe();
    let mut shutdown = sim.shutdown.clone();
    if let Some(((_, (code, text)), _)) = bad.split_first() {
        let payload = StreamingPayload {
            error_subscription_ids: Some(SubscriptionIds {
                subscription_ids: bad.iter().map(|(id, _)| id.clone()).collect(),
            }),
            connection_status: subs.is_empty().then_some(ConnectionStatus::Closed),
            ..StreamingPayload::default()
        };
        let message = ResponseMessage::error(code.clone(), text.clone(), payload);
        if tx.send(Ok(envelope(&sim, message))).await.is_err() || subs.is_empty() {
            return;
        }
    }
    let deadline = Instant::now() + timeout;
    let keep_alive = scaled(KEEP_ALIVE, sim.config.push_time_scale);
    let mut last_sent = Instant::now();
    loop {
        subs.retain(|s| !s.is_ended());
        let mut heads: Vec<_> = subs.iter().map(|s| s.mailbox.head.subscribe()).collect();
        let (notifications, more) = collect(&subs);
        if !notifications.is_empty() {
            let message = ResponseMessage::success(StreamingPayload {
                notifications: Some(Notifications { notifications }),
                connection_status: Some(ConnectionStatus::Ok),
                ..StreamingPayload::default()
            });
            if tx.send(Ok(envelope(&sim, message))).await.is_err() {
                return;
            }
            last_sent = Instant::now();
            if more {
                continue;
            }
        }
        if Instant::now() >= deadline {
            let _ = tx.send(Ok(status(&sim, ConnectionStatus::Closed))).await;
            return;
        }
        // Decided before waiting, so that a late wake-up near the deadline still sends the
        // keep-alive that was due before it.
        let keep_alive_due = last_sent + keep_alive < deadline;
        let next_keep_alive = (last_sent + keep_alive).min(deadline);
        let grown = async {
            if heads.is_empty() {
                std::future::pending::<()>().await;
            }
            let waits = heads.iter_mut().map(|h| Box::pin(h.changed()));
            let _ = futures::future::select_all(waits).await;
        };
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = cut.changed() => {
                let _ = tx.send(Err(Cut)).await;
                return;
            }
            _ = tx.closed() => return,
            _ = grown => {}
            _ = tokio::time::sleep_until(next_keep_alive) => {
                if keep_alive_due {
                    if tx.send(Ok(status(&sim, ConnectionStatus::Ok))).await.is_err() {
                        return;
                    }
                    last_sent = Instant::now();
                    // A connection in use keeps its subscriptions alive.
                    for s in &subs {
                        s.advance(s.position());
                    }
                }
            }
        }
    }
}

/// Each subscription's new events (moving its position past them), and whether more wait.
fn collect(subs: &[Arc<Sub>]) -> (Vec<Notification>, bool) {
    let mut out = Vec::new();
    let mut more_waiting = false;
    for sub in subs {
        let position = sub.position();
        let (events, scanned, more) = {
            let st = sub.mailbox.lock();
            sub.collect(&st, position, MAX_EVENTS_PER_NOTIFICATION)
        };
        sub.advance(scanned);
        more_waiting |= more;
        if !events.is_empty() {
            out.push(Notification {
                subscription_id: sub.id.clone(),
                previous_watermark: None,
                more_events: None,
                events,
            });
        }
    }
    (out, more_waiting)
}
