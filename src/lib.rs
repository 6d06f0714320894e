//! taskbridge keeps the tasks of a project-management (PM) server and the task lists in
//! Exchange mailboxes in step, over EWS.
//!
//! # Layout
//! Each layer is a module that depends only on those listed before it.
//! - [`ews`]: the EWS wire format (SOAP envelope, typed operations, response codes) and the
//!   transport (HTTP, authentication, throttling back-off).
//! - [`pm`]: the PM side: the project model (projects, tasks, resources, assignments) and
//!   project import (MSPDI, JSON).
//! - [`sim`]: an Exchange-like EWS server for tests, benchmarks and the demo.
//! - [`secret`]: the [`secret::Secret`] newtype that keeps passwords and tokens out of logs.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod codegen;
pub mod ews;
pub mod pm;
pub mod secret;
pub mod sim;
