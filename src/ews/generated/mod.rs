//! Code generated from `wsdl/`; never edited by hand (see [`crate::codegen`]).

mod operations;

pub use operations::{EwsOperations, OPERATIONS, OperationInfo};
