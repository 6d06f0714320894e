//! taskbridge keeps the tasks of a project-management (PM) server and the task lists in
//! Exchange mailboxes in step, over EWS.
//!
//! # Layout
//! Each layer is a module that depends only on those listed before it.
//! - [`ews`]: the EWS wire format (SOAP envelope, typed operations, response codes) and the
//!   transport (HTTP, authentication, throttling back-off).
//! - [`pm`]: the PM side: the project model (projects, tasks, resources, assignments),
//!   project import (MSPDI, JSON), the [`pm::PmHost`] boundary, and the embedded PM host
//!   ([`pm::embedded`]: SQLite store, status updates with approval, PM HTTP API, webhook).
#![warn(missing_docs)]

#[doc(hidden)]
pub mod codegen;
pub mod ews;
pub mod pm;
