//! The sync engine: the method of the patent claim.
//!
//! - [`Engine::publish`] publishes a project: creates, updates and deletes mailbox tasks so
//!   that they show the PM's values (claim steps 1 to 3).
//! - [`Engine::sync_mailbox`] handles changes made in a mailbox: what changed, read it, decide
//!   field by field against the baseline ([`decide`]), submit the mailbox's newer values as a
//!   task status update, write the PM's resulting values back (steps 4 to 10).
//! - [`Engine::map_back`] writes the values of a status update decided later by a person.
//! - [`Engine::run`] ties them to notifications, host events, reconciliation and subscriptions.
//!
//! The engine knows no wire format: the mailbox side is a [`MailboxStore`], the PM side a
//! [`crate::pm::PmHost`], and what was synced lives in a [`crate::state::StateStore`].

pub mod config;
mod conflicts;
pub mod decide;
mod engine;
mod inbound;
pub mod mailbox;
mod preview;
mod publish;
mod remove;
mod report;
mod run;
mod streaming;

pub use config::{
    DeletedTaskRule, MAX_SUBSCRIPTIONS_PER_CONNECTION, PushSettings, StreamingSettings, SyncConfig,
};
pub use conflicts::{ConflictError, OpenConflict, Take};
pub use decide::Policy;
pub use engine::{Engine, Metrics, ProjectView, SyncError};
pub use mailbox::{
    BatchLimits, ChangePage, ChangedItem, Delivery, EventStream, FetchRequest, ItemFailure,
    ItemWrite, MailboxError, MailboxItem, MailboxStore, PulledEvents, StreamEvent, Subscription,
};
pub use preview::{PlannedAction, PlannedChange, PlannedField, PublishPreview};
pub use publish::{Progress, PublishOptions};
pub use remove::{RemoveOptions, RemoveReport};
pub use report::{InboundReport, ItemError, PublishReport};
pub use run::{Notice, NotificationOutcome, NotificationSink};
