//! The EWS transport: HTTP/1.1 over reqwest, authentication, throttling back-off and
//! concurrency limits.
//!
//! Knows how to carry a SOAP envelope to Exchange and back; knows nothing of what the envelope
//! says beyond the throttling signals (ErrorServerBusy) it must honour.

pub mod auth;
