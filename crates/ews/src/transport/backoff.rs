//! Waiting: the shared back-off gate that ErrorServerBusy closes, and the retry policy for
//! transient failures (exponential back-off with jitter).
//!
//! Everything here runs on tokio time, so tests can pause and advance it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How often and how long the client retries on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call in total, the first included (at least 1). Throttled attempts and
    /// transient failures both count.
    pub max_attempts: u32,
    /// Delay before the first retry of a transient failure; it doubles with each retry.
    pub base_delay: Duration,
    /// Cap on the delay between two attempts after a transient failure.
    pub max_delay: Duration,
    /// The longest server-requested back-off the client waits out by itself; a longer one is
    /// returned at once as [`Error::Throttled`](crate::Error::Throttled) (the gate stays
    /// closed for everyone all the same).
    pub max_server_back_off: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_server_back_off: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `retry + 1` after `retry` transient failures (from 1), with
    /// `jitter` in `[0, 1]`: half the exponential delay is fixed and half is scaled by the jitter
    /// ("equal jitter"), so clients that failed together do not come back together, and none
    /// comes back sooner than half the delay.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1).min(30)));
        let full = exp.min(self.max_delay);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// [`delay`](Self::delay) with a random jitter.
    pub fn jittered_delay(&self, retry: u32) -> Duration {
        self.delay(retry, rand::random::<f64>())
    }
}

/// The gate that ErrorServerBusy closes: while it is closed, no request leaves.
///
/// The longest the gate stays closed for one answer, whatever the server asked for.
pub const MAX_GATE_CLOSED: Duration = Duration::from_secs(3600);

/// One per endpoint + credential, shared by every call of an [`EwsClient`] and its clones.
///
/// [`EwsClient`]: crate::client::EwsClient
#[derive(Debug, Default)]
pub struct BackoffGate {
    // A std Mutex: nothing awaits while it is held, and each critical section is one
    // comparison or assignment.
    closed_until: std::sync::Mutex<Option<Instant>>,
    /// Time spent in [`wait_open`](Self::wait_open), summed over waiters, for the metrics.
    waited_nanos: AtomicU64,
}

impl BackoffGate {
    /// A gate that is open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the gate for `back_off` from now (at most [`MAX_GATE_CLOSED`]), unless it is
    /// already closed for longer.
    pub fn close_for(&self, back_off: Duration) -> Instant {
        // The back-off comes from the server (Retry-After, BackOffMilliseconds): bounded and
        // added with a check, so an absurd value neither panics nor shuts the client for ever.
        let now = Instant::now();
        let until = now
            .checked_add(back_off.min(MAX_GATE_CLOSED))
            .unwrap_or(now);
        let mut closed = self.lock();
        let until = match *closed {
            Some(existing) if existing > until => existing,
            _ => until,
        };
        *closed = Some(until);
        until
    }

    /// When the gate reopens, if it is closed now.
    pub fn closed_until(&self) -> Option<Instant> {
        let closed = self.lock();
        closed.filter(|until| *until > Instant::now())
    }

    /// Waits until the gate is open. Re-checks after each wait, since another response may have
    /// closed it again meanwhile.
    pub async fn wait_open(&self) {
        while let Some(until) = self.closed_until() {
            let start = Instant::now();
            tokio::time::sleep_until(until).await;
            // Counted per sleep, so that a waiter cancelled later still counts what it waited.
            self.waited_nanos
                .fetch_add(super::metrics::nanos(start.elapsed()), Ordering::Relaxed);
        }
    }

    /// Time spent waiting for this gate to open so far, summed over all waiters.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A poisoned lock only means a panic elsewhere while holding an Option<Instant>;
        // the value is still meaningful.
        self.closed_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // A date before 1970 or past what SystemTime holds is no delay we can honour.
    let at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(date.timestamp()).ok()?))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_server_back_off: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_delay_doubles_per_retry() {
        let p = policy();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(400));
    }

    #[test]
    fn backoff_delay_is_capped() {
        let p = policy();
        assert_eq!(p.delay(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(60, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_stays_between_half_and_full() {
        let p = policy();
        assert_eq!(p.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(300));
        for _ in 0..100 {
            let d = p.jittered_delay(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
        // Out-of-range jitter is clamped.
        assert_eq!(p.delay(3, 7.0), Duration::from_millis(400));
    }

    #[test]
    fn backoff_retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = chrono::DateTime::<chrono::Utc>::from(now + Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&later.to_rfc2822(), now),
            Some(Duration::from_secs(10))
        );
        let past = chrono::DateTime::<chrono::Utc>::from(now - Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&past.to_rfc2822(), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gate_holds_until_reopened() {
        let gate = BackoffGate::new();
        let start = Instant::now();
        gate.wait_open().await;
        assert_eq!(Instant::now(), start, "an open gate does not wait");
        gate.close_for(Duration::from_millis(300));
        gate.wait_open().await;
        assert!(Instant::now() - start >= Duration::from_millis(300));
        assert_eq!(gate.waited(), Duration::from_millis(300));
    }

    #[test]
    fn backoff_absurd_server_delays_are_bounded_not_a_panic() {
        let gate = BackoffGate::new();
        let before = Instant::now();
        let until = gate.close_for(Duration::MAX);
        assert!(until > before && until <= Instant::now() + MAX_GATE_CLOSED);
        let now = SystemTime::now();
        let huge = parse_retry_after("18446744073709551615", now).expect("a delay");
        assert!(gate.close_for(huge) <= Instant::now() + MAX_GATE_CLOSED);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1965 23:59:59 +0000", now),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gate_keeps_the_longer_closure() {
        let gate = BackoffGate::new();
        let start = Instant::now();
        gate.close_for(Duration::from_secs(2));
        gate.close_for(Duration::from_millis(100));
        gate.wait_open().await;
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gate_closed_again_while_waiting_waits_again() {
        let gate = std::sync::Arc::new(BackoffGate::new());
        let start = Instant::now();
        gate.close_for(Duration::from_millis(100));
        let g = gate.clone();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            g.close_for(Duration::from_millis(500));
        });
        gate.wait_open().await;
        closer.await.expect("closer");
        assert!(Instant::now() - start >= Duration::from_millis(550));
    }
}
