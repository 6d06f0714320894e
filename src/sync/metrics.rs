//! The engine's counters, which the connector serves on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Push notifications received for known subscriptions.
    pub notifications: AtomicU64,
    /// Mailbox syncs queued by notifications.
    pub events_queued: AtomicU64,
    /// Mailbox passes not made: the notifications named only item versions taskbridge wrote
    /// itself (the echo of its own writes).
    pub own_echoes: AtomicU64,
    /// Mailbox passes that listed the folder's changes (SyncFolderItems).
    pub listing_passes: AtomicU64,
    /// Mailbox passes that read the items notifications named by their ids, without a listing.
    pub item_passes: AtomicU64,
    /// Status updates applied on the PM side.
    pub updates_applied: AtomicU64,
    /// Status updates waiting for approval.
    pub updates_pending: AtomicU64,
    /// Status updates rejected.
    pub updates_rejected: AtomicU64,
    /// Conflicts decided by policy or kept for a person.
    pub conflicts: AtomicU64,
    /// Items created.
    pub created: AtomicU64,
    /// Items updated.
    pub written: AtomicU64,
    /// Items deleted.
    pub deleted: AtomicU64,
    /// Items parked after repeated failures.
    pub parked: AtomicU64,
    /// Reconciliation passes.
    pub reconciles: AtomicU64,
    /// Rounds of publishing every project (at start, after a lease gain, at a reconciliation).
    pub publish_rounds: AtomicU64,
    /// Streaming connections open now.
    pub streams_open: AtomicU64,
    /// Streaming connections opened again after one closed or failed.
    pub stream_reconnects: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
