//! Code generated from the workspace's `wsdl/`; never edited by hand. The generator is the
//! test `tests/generated.rs` of this crate, which rewrites these files when the WSDL or the
//! schema changed.
//!
//! - `operations`: the operation surface from `wsdl/services.wsdl`;
//! - `types`: the `t:` wire types from `wsdl/types.xsd`;
//! - `messages`: requests, response payloads and response bodies from `wsdl/messages.xsd`;
//! - `dispatch`: every message body element with its operation, role and JSON reader, from
//!   `wsdl/services.wsdl`, `wsdl/notification.wsdl` and the schema (what `ews decode` routes
//!   by, and the operation list a server can route by).
//!
//! The wire types are re-exported where callers find them (`ops::<operation>`, `types`).

mod dispatch;
pub(crate) mod messages;
mod operations;
pub(crate) mod types;

pub use dispatch::{BodyRole, MESSAGE_BODIES, MessageBody, message_body};
pub use operations::{EwsOperations, OPERATIONS, OperationInfo};
