//! Push delivery with Exchange's retry schedule (the subscriptions themselves are
//! [`crate::subs`]).
//!
//! A push subscription gets its own task. It waits for the mailbox's event log to grow (a
//! `watch` on the newest sequence number) or for StatusFrequency to pass, then posts
//! `SendNotification` to the subscriber. A failed delivery (connection error, non-200 answer,
//! an answer that does not read) is retried 30 s after the first try and then at doubling
//! times (30 s, 60 s, 120 s, ... after the first try) until the next retry would fall after
//! StatusFrequency; then the subscription ends, as on Exchange. An `Unsubscribe` answer ends it
//! at once. `--push-time-scale` scales all of these durations, and `--drop-push` loses
//! deliveries (they count as delivered, so the subscriber never sees those events).
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/statusfrequency>.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::{self};
use crate::record::{Direction, Exchange};
use crate::scaled;
use crate::shared::{Sim, stopped};
use crate::subs::{MAX_EVENTS_PER_NOTIFICATION, Sub, SubKind};
use taskbridge_ews::ops::send_notification::{
    NotificationPayload, SendNotification, SubscriptionStatus,
};
use taskbridge_ews::ops::{decode_response, encode_request, soap_action};
use taskbridge_ews::soap::{Body, ExchangeVersion, RequestHeader};
use taskbridge_ews::types::{Event, Notification, ResponseMessage};

/// Resolves once the mailbox's newest event is after `seq`; false when the mailbox is gone.
/// Starts the delivery task of a push subscription.
pub(crate) fn spawn(sim: Arc<Sim>, sub: Arc<Sub>) {
    sim.subs.spawn(deliver_loop(sim.clone(), sub));
}

async fn grown(head: &mut tokio::sync::watch::Receiver<u64>, seq: u64) -> bool {
    head.wait_for(|h| *h > seq).await.map(|_| ()).is_ok()
}

enum Delivery {
    Delivered,
    Unsubscribe,
    GaveUp,
    Shutdown,
}

async fn deliver_loop(sim: Arc<Sim>, sub: Arc<Sub>) {
    let SubKind::Push {
        url,
        status_frequency,
    } = &sub.kind
    else {
        return;
    };
    let scale = sim.config.push_time_scale;
    let status_every = scaled(
        Duration::from_secs(60 * u64::from(*status_frequency)),
        scale,
    );
    let mut head = sub.mailbox.head.subscribe();
    let mut shutdown = sim.shutdown.clone();
    let mut last_sent = Instant::now();
    loop {
        if sub.is_ended() || *shutdown.borrow() {
            return;
        }
        let position = sub.position();
        let (events, scanned, more) = {
            let st = sub.mailbox.lock();
            sub.collect(&st, position, MAX_EVENTS_PER_NOTIFICATION)
        };
        let (notification, next) = if events.is_empty() {
            if scanned > position {
                // Nothing this subscription wants: move past it without a delivery.
                sub.advance(scanned);
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                alive = grown(&mut head, scanned) => {
                    if !alive { return; }
                    continue;
                }
                _ = tokio::time::sleep_until(last_sent + status_every) => {
                    let wm = ids::watermark(sub.mailbox.no, scanned);
                    (Notification {
                        subscription_id: sub.id.clone(),
                        previous_watermark: Some(wm.clone()),
                        more_events: Some(false),
                        events: vec![Event::StatusEvent { watermark: Some(wm) }],
                    }, scanned)
                }
            }
        } else {
            (
                Notification {
                    subscription_id: sub.id.clone(),
                    previous_watermark: Some(ids::watermark(sub.mailbox.no, position)),
                    more_events: Some(more),
                    events,
                },
                scanned,
            )
        };
        match deliver(
            &sim,
            &sub,
            url,
            *status_frequency,
            notification,
            &mut shutdown,
        )
        .await
        {
            Delivery::Delivered => {
                sub.advance(next);
                last_sent = Instant::now();
            }
            Delivery::Unsubscribe => {
                tracing::info!(subscription = %sub.id, "subscriber answered Unsubscribe");
                sim.subs.remove(sub.id.as_str());
                return;
            }
            Delivery::GaveUp => {
                tracing::warn!(subscription = %sub.id, url = %loggable_url(url), "push retries used up StatusFrequency; subscription ended");
                sim.subs.remove(sub.id.as_str());
                return;
            }
            Delivery::Shutdown => return,
        }
    }
}

async fn deliver(
    sim: &Sim,
    sub: &Sub,
    url: &str,
    status_frequency: u32,
    notification: Notification,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Delivery {
    let scale = sim.config.push_time_scale;
    let call = SendNotification {
        response_messages: vec![ResponseMessage::success(NotificationPayload {
            notification: Some(notification),
        })],
    };
    let header = RequestHeader {
        version: ExchangeVersion::V2017_07_11,
        ..RequestHeader::default()
    };
    let body = encode_request(&header, &call);
    let budget = scaled(Duration::from_secs(60 * u64::from(status_frequency)), scale);
    let timeout = scaled(Duration::from_secs(30), scale)
        .clamp(Duration::from_secs(2), Duration::from_secs(30));
    let first = Instant::now();
    let mut retry = 0u32;
    loop {
        if sub.is_ended() {
            return Delivery::Shutdown;
        }
        if sim.faults.drop_push() {
            sim.counters.push_dropped.fetch_add(1, Ordering::Relaxed);
            return Delivery::Delivered;
        }
        let result = post(sim, url, &body, timeout).await;
        match result {
            Ok(SubscriptionStatus::Unsubscribe) => {
                sim.counters.push_sent.fetch_add(1, Ordering::Relaxed);
                return Delivery::Unsubscribe;
            }
            Ok(_) => {
                sim.counters.push_sent.fetch_add(1, Ordering::Relaxed);
                return Delivery::Delivered;
            }
            Err(e) => {
                sim.counters.push_failed.fetch_add(1, Ordering::Relaxed);
                retry += 1;
                // Retry n goes out 30 s x 2^(n-1) after the first try.
                let at = scaled(
                    Duration::from_secs(30) * 2u32.saturating_pow(retry - 1),
                    scale,
                );
                tracing::warn!(subscription = %sub.id, url = %loggable_url(url), error = %e, retry, "push delivery failed");
                if at > budget {
                    return Delivery::GaveUp;
                }
                tokio::select! {
                    _ = stopped(shutdown) => return Delivery::Shutdown,
                    _ = tokio::time::sleep_until(first + at) => {}
                }
            }
        }
    }
}

/// A subscriber's URL as the simulator logs it: subscribers (taskbridge among them) make the
/// last path segment a secret, so that only Exchange can post to them; it is replaced by `***`,
/// and any query or user info is left out.
fn loggable_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let path = u.path();
            let parent = path.rfind('/').map_or("", |i| &path[..i]);
            format!("{}{parent}/***", u.origin().ascii_serialization())
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

async fn post(
    sim: &Sim,
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<SubscriptionStatus, String> {
    let sent = sim
        .http
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", soap_action("SendNotification"))
        .timeout(timeout)
        .body(body.to_vec())
        .send()
        .await;
    let record = |status: u16, response: Option<&[u8]>| {
        sim.record(Exchange {
            operation: "SendNotification",
            direction: Direction::Push,
            request: body,
            response,
            status,
        })
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            record(0, None);
            // Without the URL: it carries the subscriber's secret (see `loggable_url`).
            return Err(format!(
                "cannot reach the subscriber: {}",
                taskbridge_ews::transport::http::chain(&e.without_url())
            ));
        }
    };
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    record(status, Some(&bytes));
    if status != 200 {
        return Err(format!("the subscriber answered HTTP {status}"));
    }
    match decode_response::<SendNotification>(&bytes, 1 << 20) {
        Ok(env) => match env.body {
            Body::Content(result) => Ok(result.subscription_status),
            Body::Fault(f) => Err(format!("the subscriber answered a fault: {f}")),
        },
        Err(e) => Err(format!("the subscriber's answer does not read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_url;

    // Found by the chaos suite: a failed push delivery logged the subscriber's URL, secret
    // included (tests/chaos/secrets.rs).
    #[test]
    fn push_url_in_logs_hides_the_subscriber_secret() {
        assert_eq!(
            loggable_url("http://127.0.0.1:8081/ews/notify/5388de7eb49b188e?x=1"),
            "http://127.0.0.1:8081/ews/notify/***"
        );
        assert_eq!(
            loggable_url("https://user:pw@tb.example.com/S3cret"),
            "https://tb.example.com/***"
        );
        assert_eq!(loggable_url("not a url"), "(not a URL)");
    }
}
