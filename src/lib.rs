//! taskbridge keeps the tasks of a project-management (PM) server and the task lists in
//! Exchange mailboxes in step, over EWS.
//!
//! # Layout
//! Each layer is a module that depends only on those listed before it.
//! - [`secret`]: the [`secret::Secret`] newtype that keeps passwords and tokens out of logs.
//! - [`ews`]: the EWS wire format (SOAP envelope, typed operations, response codes) and the
//!   transport (HTTP, authentication, throttling back-off).
//! - [`pm`]: the PM side: the project model (projects, tasks, resources, assignments),
//!   project import (MSPDI, JSON), the [`pm::PmHost`] boundary, and the embedded PM host
//!   ([`pm::embedded`]: SQLite store, status updates with approval, PM HTTP API, webhook).
//! - [`mapping`]: PM assignments to Exchange tasks and back: the field table, the conversions
//!   (work minutes, dates in the mailbox owner's zone, status and percent), hashes of mapped
//!   values.
//! - [`state`]: what was synced (item ids, change keys, baselines, subscriptions, journal,
//!   audit log); SQLite by default.
//! - [`sync`]: the engine: publish, mailbox changes, decisions, status updates, map back,
//!   reconciliation.
//! - [`exchange`]: the engine's mailbox side over EWS.
//! - [`listener`]: the push-notification endpoint Exchange posts to, and the admin endpoint
//!   (`/healthz`, `/metrics`); depends only on [`ews`].
//! - [`sim`]: an Exchange-like EWS server for tests, benchmarks and the demo.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod codegen;
pub mod connector;
pub mod ews;
pub mod exchange;
pub mod listener;
pub mod mapping;
pub mod pm;
pub mod secret;
pub mod sim;
pub mod state;
pub mod sync;
