//! The PM side of taskbridge: the project model (projects, tasks, resources, assignments with
//! Microsoft Project's MSPDI meaning), reading projects from MSPDI XML and JSON files, the
//! [`PmHost`] boundary a PM product implements, and the embedded PM host ([`embedded`]).
//!
//! This layer knows nothing of EWS or mailboxes; the `mapping` layer turns its assignments into
//! mailbox tasks.

mod any;
pub mod embedded;
pub mod export;
pub mod host;
pub mod import;
mod model;
pub mod redmine;

pub use any::AnyHost;
pub use host::{
    FieldChange, FieldValue, HostError, HostEvent, IdempotencyKey, PlanRevision, PmHost,
    StatusNoteChange, StatusUpdate, StatusUpdateId, Submitted, UnitAddress, UpdateOutcome,
    UpdateSource,
};
pub use import::{ImportError, ImportOptions, import_file};
pub use model::{
    Assignment, AssignmentField, AssignmentKey, AssignmentUid, FieldTimes, ModelError, Percent,
    Project, ProjectGuid, Resource, ResourceUid, SyncUnit, Task, TaskUid, Work, local_to_utc,
    percent_of,
};
