//! Request counters of one [`EwsClient`](crate::client::EwsClient): HTTP exchanges by
//! operation and outcome, and the time spent waiting.
//!
//! The counters are plain numbers; rendering them (Prometheus text) belongs to whoever exposes
//! them (the listener's admin endpoint), not to this layer.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one HTTP exchange with the server came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// A response body with every message successful (or a warning).
    Success,
    /// A response body in which at least one message is an error (ErrorServerBusy on some
    /// items included); the call itself succeeded.
    ItemError,
    /// A SOAP fault other than ErrorServerBusy.
    Fault,
    /// ErrorServerBusy for the whole request, in any shape (fault, HTTP 503/429, every message).
    Throttled,
    /// No usable SOAP answer: connection failure, time-out, TLS, authentication, an HTTP error
    /// status without a SOAP body, or a body that does not decode.
    TransportError,
}

impl RequestOutcome {
    /// Every outcome, in a stable order.
    pub const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Success,
        RequestOutcome::ItemError,
        RequestOutcome::Fault,
        RequestOutcome::Throttled,
        RequestOutcome::TransportError,
    ];

    /// A short snake_case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::ItemError => "item_error",
            RequestOutcome::Fault => "fault",
            RequestOutcome::Throttled => "throttled",
            RequestOutcome::TransportError => "transport_error",
        }
    }
}

/// A snapshot of a client's counters (see [`EwsClient::request_metrics`]).
///
/// [`EwsClient::request_metrics`]: crate::client::EwsClient::request_metrics
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMetrics {
    /// HTTP exchanges by (operation, outcome), sorted. One call can make several (retries);
    /// an NTLM handshake inside one exchange is not counted separately.
    pub requests: BTreeMap<(&'static str, RequestOutcome), u64>,
    /// Time requests spent waiting at the closed back-off gate (ErrorServerBusy), summed over
    /// requests: two requests that wait one second each add two seconds.
    pub back_off_waited: Duration,
    /// Time spent sleeping between attempts after transient failures, summed over calls.
    pub retry_delay: Duration,
}

impl RequestMetrics {
    /// Exchanges of one operation with one outcome.
    pub fn count(&self, operation: &str, outcome: RequestOutcome) -> u64 {
        self.requests
            .iter()
            .filter(|((op, out), _)| *op == operation && *out == outcome)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Adds `other` to this snapshot (for several clients behind one endpoint).
    pub fn merge(&mut self, other: &RequestMetrics) {
        for (key, n) in &other.requests {
            *self.requests.entry(*key).or_default() += n;
        }
        self.back_off_waited += other.back_off_waited;
        self.retry_delay += other.retry_delay;
    }
}

/// The live counters behind [`RequestMetrics`].
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    // A std Mutex: nothing awaits while it is held, and each critical section is one map
    // update; a map keeps the set of operations open without a table to maintain.
    requests: Mutex<BTreeMap<(&'static str, RequestOutcome), u64>>,
    retry_delay_nanos: AtomicU64,
}

impl RequestCounters {
    pub(crate) fn record(&self, operation: &'static str, outcome: RequestOutcome) {
        let mut map = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry((operation, outcome)).or_default() += 1;
    }

    pub(crate) fn add_retry_delay(&self, delay: Duration) {
        self.retry_delay_nanos
            .fetch_add(nanos(delay), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, back_off_waited: Duration) -> RequestMetrics {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        RequestMetrics {
            requests,
            back_off_waited,
            retry_delay: Duration::from_nanos(self.retry_delay_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A duration in nanoseconds, saturating (584 years fit in a u64).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_count_by_operation_and_outcome() {
        let c = RequestCounters::default();
        c.record("GetItem", RequestOutcome::Success);
        c.record("GetItem", RequestOutcome::Success);
        c.record("GetItem", RequestOutcome::Throttled);
        c.record("UpdateItem", RequestOutcome::ItemError);
        c.add_retry_delay(Duration::from_millis(250));
        let snap = c.snapshot(Duration::from_secs(2));
        assert_eq!(snap.count("GetItem", RequestOutcome::Success), 2);
        assert_eq!(snap.count("GetItem", RequestOutcome::Throttled), 1);
        assert_eq!(snap.count("UpdateItem", RequestOutcome::ItemError), 1);
        assert_eq!(snap.count("UpdateItem", RequestOutcome::Success), 0);
        assert_eq!(snap.retry_delay, Duration::from_millis(250));
        assert_eq!(snap.back_off_waited, Duration::from_secs(2));
    }

    #[test]
    fn request_metrics_merge_adds_everything() {
        let a = RequestCounters::default();
        a.record("GetItem", RequestOutcome::Fault);
        let b = RequestCounters::default();
        b.record("GetItem", RequestOutcome::Fault);
        b.record("SyncFolderItems", RequestOutcome::TransportError);
        let mut sum = a.snapshot(Duration::from_secs(1));
        sum.merge(&b.snapshot(Duration::from_secs(3)));
        assert_eq!(sum.count("GetItem", RequestOutcome::Fault), 2);
        assert_eq!(
            sum.count("SyncFolderItems", RequestOutcome::TransportError),
            1
        );
        assert_eq!(sum.back_off_waited, Duration::from_secs(4));
    }
}
