//! taskbridge: keeps project-management assignments and Exchange mailbox tasks in step over EWS.

pub mod pm;
