//! Exchange's part of `/healthz`: whether the connector's recent EWS calls succeed.
//!
//! A connector whose every call fails (a wrong password answers 401 to each) keeps running, as
//! it must through an outage, but it is of no use: `/healthz` says so with the reason until a
//! call succeeds again. The verdict comes from the client's request counters, compared between
//! two looks, so it costs nothing on the request path.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ews::client::EwsClient;
use crate::ews::transport::metrics::{RequestMetrics, RequestOutcome};

use super::admin::Readiness;

/// What the calls since the previous look came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeVerdict {
    /// At least one call succeeded (a batch with failed items counts: the server answered),
    /// or no call has failed since the last one that did.
    Healthy,
    /// Calls failed and none succeeded since `since`.
    Failing {
        /// Calls failed since the last success.
        failed: u64,
        /// When the first of them was seen.
        since: DateTime<Utc>,
    },
}

/// Follows a client's request counters from look to look.
#[derive(Debug, Default)]
pub struct ExchangeHealth {
    last: RequestMetrics,
    failing: Option<(u64, DateTime<Utc>)>,
}

impl ExchangeHealth {
    /// Starts with nothing seen: healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the counters as they are `now` and says what the calls since the previous look
    /// came to. Throttling is neither a success nor a failure: the server is there and busy.
    pub fn observe(&mut self, now: RequestMetrics, at: DateTime<Utc>) -> ExchangeVerdict {
        let delta = |outcomes: &[RequestOutcome]| -> u64 {
            now.requests
                .iter()
                .filter(|((_, outcome), _)| outcomes.contains(outcome))
                .map(|(key, n)| n.saturating_sub(self.last.requests.get(key).copied().unwrap_or(0)))
                .sum()
        };
        let succeeded = delta(&[RequestOutcome::Success, RequestOutcome::ItemError]);
        let failed = delta(&[RequestOutcome::Fault, RequestOutcome::TransportError]);
        self.last = now;
        if succeeded > 0 {
            self.failing = None;
        } else if failed > 0 {
            self.failing.get_or_insert((0, at)).0 += failed;
        }
        match self.failing {
            Some((failed, since)) => ExchangeVerdict::Failing { failed, since },
            None => ExchangeVerdict::Healthy,
        }
    }
}

/// Looks at `client`'s counters every `every` and marks `readiness` degraded while Exchange
/// calls fail and none succeeds, healthy again at the first success. `last_error` supplies
/// the text of the latest failure for the reason, when the caller keeps one (the command line
/// takes it from its log). Runs until dropped or aborted.
pub async fn watch_exchange(
    client: EwsClient,
    readiness: Readiness,
    every: Duration,
    last_error: impl Fn() -> Option<String> + Send + 'static,
) {
    watch_exchange_and(client, readiness, every, last_error, || {
        Box::pin(async { None })
    })
    .await
}

/// A further check of `watch_exchange_and`: the reason to report degraded, or `None`.
pub type HealthCheck =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'static>>;

/// As [`watch_exchange`], and, while Exchange calls do not all fail, degraded with the reason
/// `more` gives at each look (e.g. most mailboxes failing), healthy when it gives none.
pub async fn watch_exchange_and(
    client: EwsClient,
    readiness: Readiness,
    every: Duration,
    last_error: impl Fn() -> Option<String> + Send + 'static,
    mut more: impl FnMut() -> HealthCheck + Send + 'static,
) {
    let mut health = ExchangeHealth::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match health.observe(client.request_metrics(), Utc::now()) {
            ExchangeVerdict::Healthy => readiness.set_degraded(more().await),
            ExchangeVerdict::Failing { failed, since } => {
                let mut reason = format!(
                    "Exchange calls are failing: {failed} failed and none succeeded since {} UTC",
                    since.format("%Y-%m-%d %H:%M:%S")
                );
                if let Some(e) = last_error() {
                    reason.push_str("; last error: ");
                    reason.push_str(&e);
                }
                readiness.set_degraded(Some(reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&'static str, RequestOutcome, u64)]) -> RequestMetrics {
        let mut m = RequestMetrics::default();
        for (op, outcome, n) in pairs {
            m.requests.insert((*op, *outcome), *n);
        }
        m
    }

    #[test]
    fn failing_until_a_call_succeeds() {
        let t0 = Utc::now();
        let mut h = ExchangeHealth::new();
        assert_eq!(h.observe(counts(&[]), t0), ExchangeVerdict::Healthy);
        let failing = counts(&[("FindItem", RequestOutcome::TransportError, 3)]);
        assert_eq!(
            h.observe(failing, t0),
            ExchangeVerdict::Failing {
                failed: 3,
                since: t0
            }
        );
        // Nothing happened since: still failing, with the same start.
        let later = t0 + chrono::Duration::seconds(5);
        let same = counts(&[
            ("FindItem", RequestOutcome::TransportError, 4),
            ("GetItem", RequestOutcome::Throttled, 2),
        ]);
        assert_eq!(
            h.observe(same, later),
            ExchangeVerdict::Failing {
                failed: 4,
                since: t0
            }
        );
        let recovered = counts(&[
            ("FindItem", RequestOutcome::TransportError, 4),
            ("GetItem", RequestOutcome::Throttled, 2),
            ("GetItem", RequestOutcome::ItemError, 1),
        ]);
        assert_eq!(h.observe(recovered, later), ExchangeVerdict::Healthy);
    }

    #[test]
    fn a_success_beside_failures_is_healthy() {
        let mut h = ExchangeHealth::new();
        let mixed = counts(&[
            ("FindItem", RequestOutcome::Fault, 2),
            ("FindItem", RequestOutcome::Success, 1),
        ]);
        assert_eq!(h.observe(mixed, Utc::now()), ExchangeVerdict::Healthy);
    }
}
