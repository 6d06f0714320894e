//! The outgoing webhook: tells an external PM tool about every applied status update.
//!
//! Applying an update queues its delivery in the store's outbox in the same transaction, so a
//! delivery survives a crash and an update approved from the CLI in another process is
//! delivered by the process running [`run_webhook`]. Deliveries go out one at a time, oldest
//! first; a failed one is retried with exponential back-off (on tokio time) before the next is
//! tried, so the receiver sees updates in order. See `docs/PM-HOST.md` for the payload.
//!
//! Each request is a `POST` of the JSON payload with
//! `X-Taskbridge-Signature: sha256=<hex HMAC-SHA256 of the body under the shared secret>`,
//! `X-Taskbridge-Event: status_update.applied` and `X-Taskbridge-Delivery: <update id>` (the
//! same on every retry, for the receiver to drop duplicates).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::rows::{self, OutboxRow};
use super::{EmbeddedError, EmbeddedHost, Secret};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Taskbridge-Signature";
/// The event header.
pub const EVENT_HEADER: &str = "X-Taskbridge-Event";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "X-Taskbridge-Delivery";

/// How many outbox rows are read at a time.
const BATCH: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver's URL (`http` or `https`).
    pub url: String,
    /// The shared HMAC key; never empty.
    pub secret: Secret,
    /// Attempts per delivery before it is given up (kept in the outbox as failed).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each further one.
    pub initial_backoff: Duration,
    /// The longest wait between attempts (also the cap on a receiver's `Retry-After`).
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often the outbox is checked for rows queued by other processes.
    pub poll_interval: Duration,
}

impl WebhookConfig {
    /// A configuration with the default retry schedule: 8 attempts, 1 s doubling to at most
    /// 5 min, 10 s per request, outbox checked every 5 s.
    pub fn new(url: impl Into<String>, secret: Secret) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret,
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Why the webhook worker stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an `http` or `https` URL.
    #[error("invalid webhook URL {0:?}")]
    InvalidUrl(String),
    /// The secret is empty.
    #[error("the webhook secret is empty")]
    EmptySecret,
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] EmbeddedError),
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as sent in [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `header` is a valid [`SIGNATURE_HEADER`] value for `body` under `secret`, compared
/// in constant time. For receivers (and tests).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth retrying, after the receiver's `Retry-After` when it gave one.
    Retry(String, Option<Duration>),
    /// Retrying cannot help (a 4xx other than 408 and 429, a redirect).
    Permanent(String),
}

/// What a delivery came to.
enum Delivery {
    Delivered,
    GaveUp,
    Shutdown,
}

/// Delivers the outbox until `shutdown` completes.
///
/// Returns an error at once for a bad URL or secret, and later only if the store fails.
pub async fn run_webhook(
    host: EmbeddedHost,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let url = reqwest::Url::parse(&config.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| WebhookError::InvalidUrl(config.url.clone()))?;
    if config.secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    // reqwest is built without a default crypto provider; an error here only means one is
    // installed already.
    // reqwest is built without a TLS provider; install ring unless one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        // A signed POST is not followed anywhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("taskbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(WebhookError::Client)?;
    let notify = host.outbox_notify();
    tokio::pin!(shutdown);
    loop {
        let idle = match pass(&host, &client, &url, &config, &mut shutdown).await {
            Ok(Pass::Shutdown) => return Ok(()),
            Ok(Pass::Worked) => continue,
            Ok(Pass::Idle) => true,
            Err(EmbeddedError::Closed) => return Err(EmbeddedError::Closed.into()),
            // A busy or failing store: deliveries stay queued; try again later.
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox unavailable; retrying");
                false
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = notify.notified(), if idle => {}
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// What one pass over the outbox came to.
enum Pass {
    /// Nothing was due.
    Idle,
    /// Some rows were delivered or given up; look again at once.
    Worked,
    /// Shutdown came while waiting to retry.
    Shutdown,
}

async fn pass(
    host: &EmbeddedHost,
    client: &reqwest::Client,
    url: &reqwest::Url,
    config: &WebhookConfig,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Pass, EmbeddedError> {
    let due = host.call(|conn| rows::outbox_due(conn, BATCH)).await?;
    if due.is_empty() {
        return Ok(Pass::Idle);
    }
    for row in due {
        match deliver(host, client, url, config, &row, shutdown).await? {
            Delivery::Delivered => {
                let seq = row.seq;
                host.call(move |conn| rows::outbox_delivered(conn, seq))
                    .await?;
                tracing::info!(update = %row.update_id, "webhook delivered");
            }
            Delivery::GaveUp => {}
            Delivery::Shutdown => return Ok(Pass::Shutdown),
        }
    }
    Ok(Pass::Worked)
}

async fn deliver(
    host: &EmbeddedHost,
    client: &reqwest::Client,
    url: &reqwest::Url,
    config: &WebhookConfig,
    row: &OutboxRow,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Delivery, EmbeddedError> {
    let signature = sign(config.secret.expose().as_bytes(), row.body.as_bytes());
    let mut attempt = row.attempts;
    loop {
        attempt = attempt.saturating_add(1);
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_HEADER, super::ops::WEBHOOK_EVENT)
            .header(DELIVERY_HEADER, &row.update_id.0)
            .body(row.body.clone())
            .send()
            .await;
        let (error, retry_after, permanent) = match classify(sent) {
            Attempt::Delivered => return Ok(Delivery::Delivered),
            Attempt::Retry(e, after) => (e, after, false),
            Attempt::Permanent(e) => (e, None, true),
        };
        let give_up = permanent || attempt >= config.max_attempts;
        let (seq, recorded) = (row.seq, error.clone());
        host.call(move |conn| rows::outbox_failed(conn, seq, &recorded, give_up, Utc::now()))
            .await?;
        if give_up {
            tracing::error!(update = %row.update_id, attempt, %error, "webhook delivery given up");
            return Ok(Delivery::GaveUp);
        }
        let wait = retry_after
            .unwrap_or_else(|| config.backoff(attempt))
            .min(config.max_backoff);
        tracing::warn!(update = %row.update_id, attempt, %error, ?wait, "webhook delivery failed; retrying");
        tokio::select! {
            () = shutdown.as_mut() => return Ok(Delivery::Shutdown),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn classify(sent: Result<reqwest::Response, reqwest::Error>) -> Attempt {
    let response = match sent {
        Ok(response) => response,
        // Connection refused, reset, timed out: the receiver may be back later.
        Err(e) => return Attempt::Retry(e.to_string(), None),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let error = format!("HTTP {status}");
    match status.as_u16() {
        408 | 429 | 500..=599 => Attempt::Retry(error, retry_after),
        _ => Attempt::Permanent(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_known_hmac_sha256() {
        // RFC 4231, test case 2.
        let signature = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &signature));
    }

    #[test]
    fn verify_wrong_key_body_or_format_fails() {
        let signature = sign(b"key", b"body");
        assert!(!verify(b"other", b"body", &signature));
        assert!(!verify(b"key", b"body!", &signature));
        assert!(!verify(
            b"key",
            b"body",
            signature.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"key", b"body", "sha256=zz"));
        assert!(!verify(b"key", b"body", ""));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut config = WebhookConfig::new("http://x", Secret::new("k"));
        config.initial_backoff = Duration::from_secs(1);
        config.max_backoff = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=6).map(|a| config.backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(10));
    }
}
