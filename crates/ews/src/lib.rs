//! The EWS protocol layer: SOAP envelope and headers, typed operations, response codes.
//!
//! Owns everything about the wire and nothing about projects or sync. Wire types are
//! hand-written over quick-xml (see [`xml`] for why not serde or yaserde), one module per
//! operation under [`ops`], shared types under [`types`]. The transport ([`transport`]: HTTP,
//! authentication, throttling) builds on these, and [`client::EwsClient`] puts it together;
//! [`check`] is the connection test behind `taskbridge check`, and [`autodiscover`] finds a
//! mailbox's EWS URL from its address. [`secret::Secret`] keeps passwords and tokens out of
//! logs. [`server`] serves HTTP for EWS peers: the push endpoint Exchange posts to, and test
//! servers that play Exchange.
//!
#![doc = include_str!("../README.md")]

pub mod affinity;
pub mod autodiscover;
pub mod check;
pub mod client;
pub mod decode;
pub mod error;
pub mod generated;
pub mod ops;
pub mod secret;
pub mod server;
pub mod service;
pub mod soap;
pub mod streaming;
pub mod transport;
pub mod types;
pub mod xml;

pub use client::{EwsClient, EwsClientConfig};
pub use error::{DecodeError, Error};
pub use streaming::StreamingEvents;

pub use generated::EwsOperations;
pub use ops::{Operation, OperationResponse};
pub use service::{CallContext, EwsService};
pub use soap::{
    ExchangeVersion, Fault, Impersonation, RequestHeader, ServerVersionInfo, TimeZoneContext,
};
