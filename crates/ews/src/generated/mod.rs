//! Code generated from the workspace's `wsdl/`; never edited by hand. The generator is the
//! test `tests/generated.rs` of this crate, which rewrites these files when the WSDL changed.

mod operations;

pub use operations::{EwsOperations, OPERATIONS, OperationInfo};
