//! Code generated from the workspace's `wsdl/`; never edited by hand. The generator is the
//! test `tests/generated.rs` of this crate, which rewrites these files when the WSDL or the
//! schema changed.
//!
//! - `operations`: the operation surface from `wsdl/services.wsdl`;
//! - `types`: the `t:` wire types from `wsdl/types.xsd`;
//! - `messages`: requests, response payloads and response bodies from `wsdl/messages.xsd`.
//!
//! The wire types are re-exported where callers find them (`ops::<operation>`, `types`).

pub(crate) mod messages;
mod operations;
pub(crate) mod types;

pub use operations::{EwsOperations, OPERATIONS, OperationInfo};
