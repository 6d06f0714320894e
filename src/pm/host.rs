//! The PM host boundary: what a project-management product implements to use taskbridge.
//!
//! The connector reads published projects through [`PmHost`], hands each accepted mailbox edit
//! to it as a [`StatusUpdate`] (step "status update" of the list in the [`sync`](crate::sync)
//! module doc), and listens to [`HostEvent`]s to map the PM's resulting values back to
//! mailboxes (step "write back").
//! The embedded host (`pm::embedded`) is one implementation; a PM server loading taskbridge as
//! a library is another.

use std::future::Future;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{
    Assignment, AssignmentField, AssignmentKey, AssignmentUid, Percent, Project, ProjectGuid, Work,
};

/// Where one sync unit of a project goes: the assignment and its resource's mailbox address
/// (trimmed, as [`crate::pm::SyncUnit::email`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitAddress {
    /// The assignment.
    pub uid: AssignmentUid,
    /// Its resource's mailbox address.
    pub email: String,
}

/// A project's plan revision ([`PmHost::plan_revision`]): opaque, compared only for equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanRevision(pub String);

impl std::fmt::Display for PlanRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies a status update within a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusUpdateId(pub String);

impl std::fmt::Display for StatusUpdateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of one assignment field, in PM units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum FieldValue {
    /// Work or actual work.
    Work(Work),
    /// Percent work complete.
    Percent(Percent),
    /// A start or finish date-time, local to the project.
    DateTime(NaiveDateTime),
    /// Task name or notes.
    Text(String),
    /// Task priority, 0 to 1000.
    Priority(u16),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Work(w) => write!(f, "{:.2}h", w.hours_f64()),
            FieldValue::Percent(p) => write!(f, "{p}"),
            FieldValue::DateTime(d) => write!(f, "{d}"),
            FieldValue::Text(t) => write!(f, "{t:?}"),
            FieldValue::Priority(p) => write!(f, "{p}"),
        }
    }
}

/// One changed field of a status update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Which field.
    pub field: AssignmentField,
    /// The PM value the change was computed against.
    pub old: FieldValue,
    /// The value from the mailbox.
    pub new: FieldValue,
}

/// The mailbox item an update came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSource {
    /// The mailbox (SMTP address).
    pub mailbox: String,
    /// The item's store id in that mailbox.
    pub item_id: String,
    /// The item's version when it was read.
    pub change_key: String,
    /// When the mailbox says the item last changed.
    pub modified_at: DateTime<Utc>,
}

/// A task status update: mailbox values that should replace PM values of one assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The assignment.
    pub key: AssignmentKey,
    /// The changed fields; empty only when the update reports a status note alone.
    pub changes: Vec<FieldChange>,
    /// Where the values came from.
    pub source: UpdateSource,
    /// The status note the person set or cleared (Outlook's "Waiting on someone else",
    /// "Deferred"). It never changes a PM value; a host may keep it for the status manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_note: Option<StatusNoteChange>,
    /// When the update completes the assignment: the completion date the mailbox reports, as a
    /// project-local date-time, which becomes the actual finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_on: Option<NaiveDateTime>,
}

impl StatusUpdate {
    /// The update's idempotency key: the assignment, the mailbox item and the item's change key
    /// it was read at. Two submissions with the same key report the same edit (the connector
    /// resubmitting after a crash, or two instances reading one edit during a lease take-over)
    /// and a host applies it once; see [`PmHost::submit_status_update`].
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey {
            key: self.key,
            item_id: self.source.item_id.clone(),
            change_key: self.source.change_key.clone(),
        }
    }
}

/// What identifies one mailbox edit across submissions ([`StatusUpdate::idempotency_key`]).
///
/// The change key is part of it because Exchange gives every version of an item a new one: a
/// later edit of the same item is a new update, the same version seen twice is not. Its
/// [`Display`](std::fmt::Display) form, `{project}:{assignment}/{item_id}/{change_key}`, is one
/// string for a host that keeps the key in a single column or field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The assignment.
    pub key: AssignmentKey,
    /// The item's store id in its mailbox.
    pub item_id: String,
    /// The item's version the update was read at.
    pub change_key: String,
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.key, self.item_id, self.change_key)
    }
}

/// A status note set, changed or cleared in the mailbox. A note is `WaitingOnOthers` or
/// `Deferred` (Exchange's status names); `None` is no note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusNoteChange {
    /// The note before the edit.
    pub old: Option<String>,
    /// The note after it.
    pub new: Option<String>,
}

impl std::fmt::Display for StatusNoteChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |n: &Option<String>| n.clone().unwrap_or_else(|| "none".into());
        write!(f, "{} -> {}", text(&self.old), text(&self.new))
    }
}

/// What the host did with a status update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// Applied at once; `assignment` holds the PM's resulting values.
    Applied {
        /// The update's id.
        id: StatusUpdateId,
        /// The assignment after the update (recomputed remaining work and so on).
        assignment: Assignment,
    },
    /// Waiting for the status manager; nothing is written back until it is decided.
    Pending {
        /// The update's id.
        id: StatusUpdateId,
    },
    /// Refused; `assignment` holds the PM values to restore in the mailbox.
    Rejected {
        /// The update's id.
        id: StatusUpdateId,
        /// The assignment as the PM keeps it.
        assignment: Assignment,
        /// Why.
        reason: String,
    },
}

impl UpdateOutcome {
    /// The update's id.
    pub fn id(&self) -> &StatusUpdateId {
        match self {
            UpdateOutcome::Applied { id, .. }
            | UpdateOutcome::Pending { id }
            | UpdateOutcome::Rejected { id, .. } => id,
        }
    }
}

/// Something the connector must react to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HostEvent {
    /// A project was published or republished, or PM values of its assignments changed other
    /// than through the outcome of a status update (a task's name changed by an update of one
    /// of its assignments changes what every assignment of the task shows): read the project
    /// and publish it to the mailboxes. Publishing writes only what differs from the last-synced
    /// baseline, so a spurious event costs reads, not writes.
    ProjectPublished {
        /// The project.
        project: ProjectGuid,
    },
    /// A pending update was approved or rejected: map the resulting values back.
    UpdateDecided {
        /// The assignment.
        key: AssignmentKey,
        /// The decision and the resulting values.
        outcome: UpdateOutcome,
    },
}

/// Errors a host reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The project is not known to the host.
    #[error("unknown project {0}")]
    UnknownProject(ProjectGuid),
    /// The assignment is not (or no longer) in the project.
    #[error("unknown assignment {0}")]
    UnknownAssignment(AssignmentKey),
    /// The host cannot be reached or failed; the connector retries later.
    #[error("PM host unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("PM host error: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What [`PmHost::submit_status_updates`] did with a list of updates: the outcomes of the
/// first ones, in order, and the error that stopped the others, if any.
#[derive(Debug, Default)]
pub struct Submitted {
    /// One per update taken, in the order given.
    pub outcomes: Vec<UpdateOutcome>,
    /// Why the update after the last outcome was not taken; that one and any after it were
    /// not submitted.
    pub stopped: Option<HostError>,
}

/// The PM side as the connector sees it.
///
/// Implementations must be cheap to share (`Arc` inside) and safe to call concurrently.
pub trait PmHost: Send + Sync + 'static {
    /// The published projects.
    fn projects(&self) -> impl Future<Output = Result<Vec<ProjectGuid>, HostError>> + Send;

    /// A published project with its tasks, resources and assignments.
    fn project(
        &self,
        guid: ProjectGuid,
    ) -> impl Future<Output = Result<Option<Project>, HostError>> + Send;

    /// Part of a published project: the assignments `uids` (those still in it), their tasks
    /// and their resources, with the project's own fields. The connector reads this instead of
    /// the whole plan when it decides a few mailbox edits; the values must be those
    /// [`PmHost::project`] would give. The default reads the whole project; a host with large
    /// plans should answer from an index.
    fn project_part(
        &self,
        guid: ProjectGuid,
        uids: &[AssignmentUid],
    ) -> impl Future<Output = Result<Option<Project>, HostError>> + Send {
        let _ = uids;
        self.project(guid)
    }

    /// The sync units of a project (those [`Project::sync_units`] lists, in its order) with
    /// their resources' addresses, without their values. With them a publish reads each
    /// mailbox's part of the plan in turn ([`PmHost::project_part`]), so that it holds the
    /// values of the mailboxes in progress only, however large the plan.
    ///
    /// `Ok(None)` when the host cannot list them more cheaply than by loading the plan (the
    /// default) or does not know the project: the publish then loads the whole plan, and a
    /// host whose `project_part` is no cheaper than `project` should leave it so.
    fn project_units(
        &self,
        guid: ProjectGuid,
    ) -> impl Future<Output = Result<Option<Vec<UnitAddress>>, HostError>> + Send {
        let _ = guid;
        std::future::ready(Ok(None))
    }

    /// A value that moves whenever anything a publish reads of the project changes: its units,
    /// their values and field times, their tasks and resources (names, addresses), the
    /// project's own fields. With it an unchanged project is published without being read:
    /// the connector records the revision a publish left every mailbox in step at and
    /// compares the next one with it.
    ///
    /// `Ok(None)` (the default) when the host keeps no such value or does not know the
    /// project: every publish then compares the whole plan with the stored rows. A host must
    /// never answer the same revision for different contents; a revision that moves without a
    /// change only costs a full comparison.
    fn plan_revision(
        &self,
        guid: ProjectGuid,
    ) -> impl Future<Output = Result<Option<PlanRevision>, HostError>> + Send {
        let _ = guid;
        std::future::ready(Ok(None))
    }

    /// Accepts a task status update and says whether it was applied, is pending, or was
    /// rejected.
    ///
    /// - `Applied` and `Rejected` carry the PM's assignment values after the decision; the
    ///   connector maps them back to the mailbox. An update the host cannot apply (a value of
    ///   the wrong kind, a finish before the start) should be answered `Rejected` with a reason,
    ///   not `Err`: the mailbox then shows the PM values again.
    /// - A `Pending` update is decided later; the host then emits [`HostEvent::UpdateDecided`].
    ///   A decision returned directly from this call is not emitted again.
    /// - Exactly once: the connector resubmits after a crash, and during a lease take-over two
    ///   instances can submit the same edit. A host should answer a second submission with the
    ///   same [`StatusUpdate::idempotency_key`] (same `key`, `source.item_id` and
    ///   `source.change_key`) with the first submission's outcome instead of applying it again.
    ///   The embedded host records the key in the transaction that records the update (a
    ///   unique index), so this holds across processes and restarts.
    /// - `Err` means the update was not taken at all ([`HostError::Unavailable`]: retry later).
    fn submit_status_update(
        &self,
        update: StatusUpdate,
    ) -> impl Future<Output = Result<UpdateOutcome, HostError>> + Send;

    /// Several status updates, each as [`PmHost::submit_status_update`] would take it, in
    /// order: the outcomes of those taken, then the error that stopped the rest, if one did
    /// (the updates after it were not submitted). The connector hands over the updates of one
    /// read batch of a mailbox at once; a host that can should take them in one transaction
    /// (the embedded host does), since one commit per update is most of what an update costs
    /// it. The default submits them one at a time.
    fn submit_status_updates(
        &self,
        updates: Vec<StatusUpdate>,
    ) -> impl Future<Output = Submitted> + Send {
        async move {
            let mut submitted = Submitted::default();
            for update in updates {
                match self.submit_status_update(update).await {
                    Ok(outcome) => submitted.outcomes.push(outcome),
                    Err(e) => {
                        submitted.stopped = Some(e);
                        break;
                    }
                }
            }
            submitted
        }
    }

    /// Events the connector reacts to. A lagging receiver misses events; the connector then
    /// reconciles every project, so nothing is lost.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostEvent>;
}
