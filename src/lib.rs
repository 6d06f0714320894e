//! taskbridge keeps the tasks of a project-management (PM) server and the task lists in
//! Exchange mailboxes in step, over EWS.
//!
//! # Layout
//! The workspace has three product crates, each depending only on those before it (a fourth,
//! `xtask`, holds the development tasks such as `cargo xtask bench` and is not part of the
//! product):
//! - `taskbridge-ews` (`crates/ews`): the EWS protocol, usable on its own by any Rust program
//!   that talks to Exchange: XML codec, SOAP envelope, typed operations, response codes,
//!   transport (HTTP, NTLM/Basic/OAuth, throttling back-off), Autodiscover. Here as [`ews`],
//!   with its [`secret`] newtype.
//! - `taskbridge-sim` (`crates/sim`): an Exchange-like EWS server for tests, benchmarks and
//!   the `sim` and `demo` commands (the default `sim` feature); the library never uses it.
//! - `taskbridge` (this crate): the connector, in layers that each use only those above:
//!   - `sqlite` (crate-internal): what the SQLite files share: the actor thread that owns a
//!     connection, the numbered migrations, the copy of a file before its schema changes.
//!   - `postgres` (crate-internal): what the PostgreSQL stores share: the numbered
//!     migrations, recorded per store in one table, under one advisory lock.
//!   - [`pm`]: the PM side: the project model (projects, tasks, resources, assignments),
//!     project import (MSPDI, JSON), the [`pm::PmHost`] boundary, and the embedded PM host
//!     ([`pm::embedded`]: SQLite store, status updates with approval, PM HTTP API, webhook).
//!   - [`mapping`]: PM assignments to Exchange tasks and back: the field table, the
//!     conversions (work minutes, dates in the mailbox owner's zone, status and percent),
//!     hashes of mapped values.
//!   - [`state`]: what was synced (item ids, change keys, baselines, subscriptions, journal,
//!     audit log); SQLite by default.
//!   - [`sync`]: the engine, the claimed method in the steps publish, notified, request,
//!     decide, audit, status update, write back, settle and reconcile.
//!   - [`exchange`]: the engine's mailbox side over EWS.
//!   - [`listener`]: the push-notification endpoint Exchange posts to, and the admin
//!     endpoint (`/healthz`, `/metrics`); depends only on [`ews`].
//!   - [`console`]: the web console on the admin address (accounts, sessions, pages over
//!     the embedded PM host and the engine).
//!   - [`connector`]: all of it wired together, as `taskbridge serve` runs it.
#![warn(missing_docs)]

/// The EWS protocol crate, under the name the layers above it use.
pub use taskbridge_ews as ews;
/// The [`Secret`](taskbridge_ews::secret::Secret) newtype that keeps passwords and tokens out of logs.
pub use taskbridge_ews::secret;
/// The shared HTTP server (accept loop, connection limits, TLS, graceful shutdown) of the
/// listener, the admin endpoint and the PM API.
pub use taskbridge_ews::server;

pub mod connector;
pub mod console;
pub mod exchange;
pub mod listener;
pub mod mapping;
pub mod pm;
mod postgres;
mod sqlite;
pub mod state;
pub mod sync;
