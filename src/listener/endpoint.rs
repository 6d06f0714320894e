//! One request to the push listener, from the path check to the answer.
//!
//! In order: the path (404 unless it is exactly `{path}/{secret}`, compared in constant time),
//! the method (405 unless POST), the content type (415 unless XML), the declared length (413
//! if over the cap), the body read under the cap and a deadline (413 as soon as it crosses the
//! cap, 408 when too slow), the envelope (400 unless a SendNotification), then the handler.
//! Nothing is read before the checks that can refuse without it pass.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::metrics::{ListenerMetrics, ListenerOutcome};
use super::notify::{self, NotificationHandler, Reply};
use super::secret::PathDigest;
use crate::ews::ops::decode_request;
use crate::ews::ops::send_notification::{
    SendNotification, SendNotificationResult, SubscriptionStatus,
};
use crate::ews::server::{self, BodyError};
use crate::ews::soap::write_response;

/// After refusing a request whose body is still arriving, the server keeps reading (and
/// discarding) at most this much of it, so that a client that writes its whole body before
/// reading gets the answer instead of a connection reset.
const LINGER_BYTES: u64 = 4 * 1024 * 1024;
/// ... and for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The listener's per-request state, shared by all connections.
pub(crate) struct Endpoint {
    /// Digest of `{path}/{secret}`; the plain path is not kept.
    pub(crate) path: PathDigest,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) handler: Arc<dyn NotificationHandler>,
    pub(crate) metrics: Arc<ListenerMetrics>,
}

impl Endpoint {
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (outcome, response) = self.answer(req).await;
        self.metrics.record(outcome);
        Ok(response)
    }

    async fn answer(&self, req: Request<Incoming>) -> (ListenerOutcome, Response<Full<Bytes>>) {
        let started = Instant::now();
        if !self.path.matches(req.uri().path().as_bytes()) {
            // Never log the path: a near miss would show most of the secret.
            debug!(method = %req.method(), "no such path");
            return (
                ListenerOutcome::NotFound,
                refuse(req, StatusCode::NOT_FOUND),
            );
        }
        if req.method() != Method::POST {
            debug!(method = %req.method(), "notification path with a method other than POST");
            let mut response = refuse(req, StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return (ListenerOutcome::MethodNotAllowed, response);
        }
        if !xml_content_type(req.headers().get(header::CONTENT_TYPE)) {
            debug!(
                content_type = ?req.headers().get(header::CONTENT_TYPE),
                "not an XML content type"
            );
            return (
                ListenerOutcome::UnsupportedMediaType,
                refuse(req, StatusCode::UNSUPPORTED_MEDIA_TYPE),
            );
        }
        let declared = req.body().size_hint().lower();
        if declared > self.max_body_bytes as u64 {
            debug!(
                declared,
                limit = self.max_body_bytes,
                "declared body over the cap"
            );
            return (
                ListenerOutcome::TooLarge,
                refuse(req, StatusCode::PAYLOAD_TOO_LARGE),
            );
        }
        let mut body = req.into_body();
        let bytes = match self.read_body(&mut body, started).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                debug!(limit = self.max_body_bytes, "body crossed the cap");
                linger(body);
                return (
                    ListenerOutcome::TooLarge,
                    closing(StatusCode::PAYLOAD_TOO_LARGE),
                );
            }
            Err(BodyError::Timeout) => {
                debug!(
                    timeout_ms = self.body_timeout.as_millis() as u64,
                    "body too slow"
                );
                return (
                    ListenerOutcome::Timeout,
                    closing(StatusCode::REQUEST_TIMEOUT),
                );
            }
            Err(BodyError::Broken(e)) => {
                debug!(error = %e, "body broke off");
                return (
                    ListenerOutcome::BadRequest,
                    closing(StatusCode::BAD_REQUEST),
                );
            }
        };
        trace!(body = %String::from_utf8_lossy(&bytes), "notification body");
        let call = match decode_request::<SendNotification>(&bytes, self.max_body_bytes) {
            Ok((_, call)) => call,
            Err(e) => {
                // The decode error may quote the body, hence debug.
                debug!(error = %e, bytes = bytes.len(), "not a readable SendNotification");
                return (ListenerOutcome::BadRequest, empty(StatusCode::BAD_REQUEST));
            }
        };
        match notify::answer(&call, self.handler.as_ref()) {
            Reply::Ok => {
                debug!(
                    notifications = call.notifications().count(),
                    "notification taken"
                );
                (ListenerOutcome::Ok, result_response(SubscriptionStatus::Ok))
            }
            Reply::Unsubscribe => {
                info!("notification for an unknown subscription; answered Unsubscribe");
                (
                    ListenerOutcome::Unsubscribe,
                    result_response(SubscriptionStatus::Unsubscribe),
                )
            }
            Reply::Busy => {
                warn!(
                    retry_after_s = retry_after_secs(self.retry_after),
                    "notification handler busy; answered 503 so that Exchange sends it again"
                );
                let mut response = empty(StatusCode::SERVICE_UNAVAILABLE);
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(self.retry_after)),
                );
                (ListenerOutcome::Busy, response)
            }
        }
    }

    /// Reads the body under the cap and the body deadline (see [`server::read_body`]).
    async fn read_body(&self, body: &mut Incoming, started: Instant) -> Result<Bytes, BodyError> {
        server::read_body(body, self.max_body_bytes, started + self.body_timeout).await
    }
}

/// `text/xml` or `application/soap+xml`, case-insensitive, with parameters; a `charset`
/// parameter must say UTF-8 (or US-ASCII, a subset), the only encoding the decoder reads.
fn xml_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !(essence.eq_ignore_ascii_case("text/xml")
        || essence.eq_ignore_ascii_case("application/soap+xml"))
    {
        return false;
    }
    parts.all(|param| {
        let Some((name, val)) = param.split_once('=') else {
            return param.trim().is_empty();
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            return true;
        }
        let charset = val.trim().trim_matches('"');
        charset.eq_ignore_ascii_case("utf-8")
            || charset.eq_ignore_ascii_case("utf8")
            || charset.eq_ignore_ascii_case("us-ascii")
    })
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

fn result_response(status: SubscriptionStatus) -> Response<Full<Bytes>> {
    let body = write_response(
        None,
        "m:SendNotificationResult",
        &SendNotificationResult {
            subscription_status: status,
        },
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// An empty answer that closes the connection afterwards: the request's body was not read to
/// its end, so the connection cannot carry another request.
fn closing(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = empty(status);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Refuses a request before reading its body: an empty answer, and if a body is on its way,
/// the connection is closed after a bounded linger.
fn refuse(req: Request<Incoming>, status: StatusCode) -> Response<Full<Bytes>> {
    let body = req.into_body();
    if body.is_end_stream() {
        return empty(status);
    }
    linger(body);
    closing(status)
}

/// Reads and discards what is left of a refused body, up to [`LINGER_BYTES`] and
/// [`LINGER_TIME`], on a task of its own (the answer can only be written once the service has
/// returned). Nothing is kept; the task ends by itself within `LINGER_TIME`.
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    seen += data.len() as u64;
                    if seen > LINGER_BYTES {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_content_type_accepts_xml_with_utf8_only() {
        let ok = [
            "text/xml",
            "text/xml; charset=utf-8",
            "TEXT/XML;Charset=\"UTF-8\"",
            "application/soap+xml; charset=utf-8; action=\"x\"",
            "text/xml;",
        ];
        let refused = [
            "application/json",
            "text/plain",
            "text/xml; charset=utf-16",
            "text/xmlx",
            "multipart/related; type=\"text/xml\"",
            "",
        ];
        for v in ok {
            assert!(xml_content_type(Some(&HeaderValue::from_static(v))), "{v}");
        }
        for v in refused {
            assert!(!xml_content_type(Some(&HeaderValue::from_static(v))), "{v}");
        }
        assert!(!xml_content_type(None));
    }

    #[test]
    fn endpoint_retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
    }
}
