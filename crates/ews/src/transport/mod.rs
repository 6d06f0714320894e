//! The EWS transport: HTTP/1.1, authentication, throttling back-off and concurrency limits,
//! under [`EwsClient`](crate::client::EwsClient).
//!
//! Knows how to carry a SOAP envelope to Exchange and back; knows nothing of what the envelope
//! says beyond the throttling signals (ErrorServerBusy) it must honour.
//! - [`http`]: TLS, the pooled client, dedicated connections, error mapping.
//! - [`auth`]: Basic, NTLM, bearer and OAuth client credentials (and the NTLM acceptor).
//! - [`channel_binding`]: the TLS channel bindings of Extended Protection.
//! - [`backoff`]: the shared back-off gate and the retry policy.
//! - [`limits`]: requests in flight per mailbox and in total; batch sizes.
//! - [`metrics`]: requests by operation and outcome, time spent backing off.
//!
//! See `docs/TRANSPORT.md` for the behaviour as a whole.

pub mod auth;
pub mod backoff;
pub mod channel_binding;
pub mod http;
pub mod limits;
pub mod metrics;

pub use auth::Auth;
pub use backoff::{BackoffGate, RetryPolicy};
pub use http::{Timeouts, TlsConfig, install_crypto_provider, rustls_client_config};
pub use limits::Limits;
pub use metrics::{RequestMetrics, RequestOutcome};
