//! What both SQLite stores (the sync state and the embedded PM store) share: one actor thread
//! that owns the connection ([`actor`]), one migration scheme ([`migrate`]) and the copy of a
//! file before its schema changes ([`backup`]). A bottom layer: it knows nothing of what the
//! stores keep.

pub(crate) mod actor;
pub(crate) mod backup;
pub(crate) mod migrate;
