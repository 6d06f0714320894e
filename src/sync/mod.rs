//! The sync engine: the method of the patent claim (US 8,028,070, claim 1).
//!
//! # The steps
//!
//! This is the one list of the claim's steps, with the engine's own beside them; the other module
//! docs and the code name them by these words, and each entry names where it is done.
//!
//! - **publish**: publish a project, map its tasks' attributes to the mailbox's (a subset, the
//!   [`FieldTable`](crate::mapping::FieldTable)) and send them with web services:
//!   [`Engine::publish`] (`publish.rs`), writing through the [`MailboxStore`].
//! - **notified**: a mailbox says that a task was updated: [`NotificationSink::deliver`]
//!   (push), the GetStreamingEvents connections the engine holds open (streaming,
//!   `streaming.rs`), or the poll of a pull subscription; the scheduler (`scheduler.rs`) turns
//!   notifications into debounced mailbox passes for [`Engine::run`], and makes none for
//!   notifications that named only versions the engine wrote itself (`echo.rs`).
//! - **request**: request the updated task's attributes and receive them:
//!   [`Engine::sync_mailbox`] (what changed, SyncFolderItems) and `Engine::process_rows` (the
//!   items, GetItem), in `inbound.rs`; [`Engine::sync_items`] reads the items named by
//!   notifications that named nothing but versions of tracked items, without the listing.
//! - **decide**: determine, field by field against the baseline, whether the mailbox's
//!   attributes are newer than the PM's: [`decide::decide`], and for one item `decide_item`
//!   (`decide.rs`).
//! - **audit** (the engine's own): every decision that changes something is logged and written
//!   to the audit log, in the item's next state transaction with the state it explains:
//!   `Engine::audit`.
//! - **status update**: replace the PM's attributes with the newer ones through a task status
//!   update: `Engine::submit_decided`, which hands a read batch's updates to
//!   [`PmHost::submit_status_updates`](crate::pm::PmHost::submit_status_updates) in one call,
//!   and `Engine::status_update_taken`, which, once the host applied an item's update, makes
//!   the fields taken the item's baseline, stored by the item's next
//!   transaction before anything else is tried (a later failure must not leave the PM's copy of
//!   the edit looking like a PM change).
//! - **write back**: map the attributes the status update left back to the mailbox task (the
//!   claim's last step): `Engine::write_back`, with its retry in `Engine::after_write` (a
//!   write that meets a stale change key reads the item again, `Engine::reread`, and takes it
//!   through the steps again, `Engine::prepare`); [`Engine::map_back`] does it for an update a
//!   person decided later.
//! - **settle** (the engine's own): commit what the item's round left (baseline, hashes,
//!   status, and the audit records not stored before a write back) together with the journal
//!   entry of its write: `Engine::settle`. An applied edit costs one state transaction, or a
//!   share of two per write batch when its values are written back (`inbound.rs`, "State
//!   transactions of an item").
//! - **reconcile** (the engine's own): every `reconcile_interval` each mailbox gets a pass and
//!   every project is published again (`Engine::reconcile`, `Engine::publish_all`), so a lost
//!   notification costs at most one interval.
//!
//! One item read from a mailbox goes through decide and audit (`Engine::decide` in
//! `inbound.rs`), status update and write back (each together with the other items of its read
//! batch) and settle; a write back that meets a stale change key reads the item again and goes
//! through them again, alone (`Engine::prepare`).
//!
//! The engine knows no wire format: the mailbox side is a [`MailboxStore`], the PM side a
//! [`crate::pm::PmHost`], and what was synced lives in a [`crate::state::StateStore`].

mod affinity;
pub mod config;
mod conflicts;
pub mod decide;
mod echo;
mod engine;
mod inbound;
pub mod mailbox;
mod metrics;
mod notify;
mod parked;
mod preview;
mod publish;
mod remove;
mod report;
mod run;
mod scheduler;
mod streaming;

pub use config::{
    DeletedTaskRule, MAX_SUBSCRIPTIONS_PER_CONNECTION, PushSettings, StreamingSettings, SyncConfig,
};
pub use conflicts::{ConflictError, OpenConflict, Take};
pub use decide::Policy;
pub use engine::{Engine, ProjectView, SyncError};
pub use mailbox::{
    Affinity, Backend, BatchLimits, ChangePage, ChangedItem, Delivery, EventStream, FetchRequest,
    ItemFailure, ItemWrite, MailboxError, MailboxItem, MailboxStore, PulledEvents, StreamEvent,
    Subscription,
};
pub use metrics::Metrics;
pub use notify::{Notice, NotificationOutcome, NotificationSink};
pub use parked::{RetryError, RetryOutcome};
pub use preview::{PlannedAction, PlannedChange, PlannedField, PublishPreview};
pub use publish::{Progress, PublishOptions};
pub use remove::{RemoveOptions, RemoveReport};
pub use report::{InboundReport, ItemError, PublishReport};
