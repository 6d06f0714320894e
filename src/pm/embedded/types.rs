//! The embedded host's public records: policies, update states, stored status updates, project
//! summaries and import reports.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use chrono::NaiveDateTime;

use crate::pm::host::{FieldChange, FieldValue, StatusNoteChange, StatusUpdateId, UpdateSource};
use crate::pm::model::{AssignmentField, AssignmentKey, AssignmentUid, ProjectGuid};

/// Who decided automatically under the `auto` policy.
pub const DECIDER_AUTO: &str = "auto";
/// Who decided when taskbridge itself did (an invalid update, a superseded one, an update whose
/// assignment a re-import removed).
pub const DECIDER_TASKBRIDGE: &str = "taskbridge";

/// What a project does with incoming status updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Apply each update at once.
    #[default]
    Auto,
    /// Keep each update pending until a status manager approves or rejects it; a newer update
    /// for the same assignment supersedes an older pending one.
    Approval,
}

impl Policy {
    /// The name used in the store, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Auto => "auto",
            Policy::Approval => "approval",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is neither `auto` nor `approval`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?} (expected auto or approval)")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Policy::Auto),
            "approval" => Ok(Policy::Approval),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

/// Where a status update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Waiting for the status manager.
    Pending,
    /// Applied to the assignment.
    Applied,
    /// Refused (by the status manager, or by taskbridge for an invalid update).
    Rejected,
    /// Replaced by a newer update for the same assignment while pending.
    Superseded,
}

impl UpdateState {
    /// The name used in the store, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Pending => "pending",
            UpdateState::Applied => "applied",
            UpdateState::Rejected => "rejected",
            UpdateState::Superseded => "superseded",
        }
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown update state {0:?} (expected pending, applied, rejected or superseded)")]
pub struct UnknownState(pub String);

impl FromStr for UpdateState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(UpdateState::Pending),
            "applied" => Ok(UpdateState::Applied),
            "rejected" => Ok(UpdateState::Rejected),
            "superseded" => Ok(UpdateState::Superseded),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// A status update as the embedded host keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdateRecord {
    /// The update's id.
    pub id: StatusUpdateId,
    /// The assignment.
    pub key: AssignmentKey,
    /// The changed fields, old (the PM value the mailbox side saw) and new.
    pub changes: Vec<FieldChange>,
    /// The mailbox item the values came from.
    pub source: UpdateSource,
    /// Where the update stands.
    pub state: UpdateState,
    /// When the host received it.
    pub submitted_at: DateTime<Utc>,
    /// When it was applied, rejected or superseded.
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided: [`DECIDER_AUTO`], [`DECIDER_TASKBRIDGE`] or the status manager's name.
    pub decider: Option<String>,
    /// Why it was rejected or superseded.
    pub reason: Option<String>,
    /// The newer update that superseded it.
    pub superseded_by: Option<StatusUpdateId>,
    /// The task's name, while the assignment exists (for display).
    pub task_name: Option<String>,
    /// The resource's name, while the assignment exists (for display).
    pub resource_name: Option<String>,
    /// The status note the mailbox reported with the update, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_note: Option<StatusNoteChange>,
    /// The completion date the mailbox reported, if the update completes the assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_on: Option<NaiveDateTime>,
    /// Once applied: the assignment's values after the update, for every field the update named
    /// or the PM arithmetic changed (what the PM keeps, which may differ from what was typed).
    #[serde(default)]
    pub applied: Vec<AppliedValue>,
}

/// One field's value after a status update was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedValue {
    /// The field.
    pub field: AssignmentField,
    /// Its value after the update.
    pub value: FieldValue,
}

/// Which status updates to list; every `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFilter {
    /// Only updates in this state.
    pub state: Option<UpdateState>,
    /// Only updates of this project.
    pub project: Option<ProjectGuid>,
    /// Only updates of this assignment.
    pub key: Option<AssignmentKey>,
}

impl UpdateFilter {
    /// Pending updates only.
    pub fn pending() -> UpdateFilter {
        UpdateFilter {
            state: Some(UpdateState::Pending),
            ..UpdateFilter::default()
        }
    }
}

/// One project in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSummary {
    /// The project.
    pub guid: ProjectGuid,
    /// Its name.
    pub name: String,
    /// The zone its dates are local to (IANA name).
    pub time_zone: String,
    /// What it does with status updates.
    pub policy: Policy,
    /// Number of tasks.
    pub tasks: usize,
    /// Number of resources.
    pub resources: usize,
    /// Number of assignments.
    pub assignments: usize,
    /// Number of assignments that become mailbox tasks (see `Project::sync_units`).
    pub mailbox_assignments: usize,
    /// Number of status updates waiting for approval.
    pub pending_updates: usize,
    /// How many times it was imported.
    pub revision: i64,
    /// When it was last imported.
    pub imported_at: DateTime<Utc>,
    /// When it was last published (imported or re-published).
    pub published_at: DateTime<Utc>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The project.
    pub project: ProjectGuid,
    /// Its name.
    pub name: String,
    /// Whether the project was new to the store.
    pub created: bool,
    /// The project's policy after the import.
    pub policy: Policy,
    /// Assignments new to the store.
    pub added: usize,
    /// Assignments whose values, task, resource or mailbox changed.
    pub changed: usize,
    /// Assignments no longer in the file, removed from the store.
    pub removed: usize,
    /// Assignments as they were.
    pub unchanged: usize,
    /// Assignments that become mailbox tasks.
    pub mailbox_assignments: usize,
    /// Pending status updates of removed assignments, now rejected.
    pub closed_updates: usize,
    /// The assignments new to the store.
    #[serde(default)]
    pub added_assignments: Vec<AssignmentUid>,
    /// The assignments removed from the store.
    #[serde(default)]
    pub removed_assignments: Vec<AssignmentUid>,
    /// Per assignment and field, the stored value and the imported one, for every field the
    /// import changes (a dry run's preview).
    #[serde(default)]
    pub field_changes: Vec<ImportFieldChange>,
    /// Fields that a status update had changed and the file changed as well: the file's value
    /// was taken (the PM's newer decision).
    #[serde(default)]
    pub overridden: Vec<FileOverride>,
    /// Assignments whose reported progress (actual work or percent) the import lowers.
    #[serde(default)]
    pub lowered_progress: Vec<AssignmentUid>,
    /// Whether the project had a previous import to compare with (three-way); `false` for a
    /// new project, and for one stored before taskbridge kept its imports (then every value
    /// that differs from the file is taken).
    #[serde(default)]
    pub three_way: bool,
    /// Whether this was a dry run: nothing was written.
    #[serde(default)]
    pub dry_run: bool,
}

/// One field an import changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFieldChange {
    /// The assignment.
    pub assignment: AssignmentUid,
    /// The field.
    pub field: AssignmentField,
    /// The value in the store before the import.
    pub old: FieldValue,
    /// The value after it.
    pub new: FieldValue,
}

impl ImportFieldChange {
    /// Whether this change lowers reported progress (actual work or percent complete).
    pub fn lowers_progress(&self) -> bool {
        match (self.field, &self.old, &self.new) {
            (AssignmentField::ActualWork, FieldValue::Work(old), FieldValue::Work(new)) => {
                new < old
            }
            (
                AssignmentField::PercentWorkComplete,
                FieldValue::Percent(old),
                FieldValue::Percent(new),
            ) => new < old,
            _ => false,
        }
    }
}

/// A field where the file's value replaced one a status update had set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOverride {
    /// The assignment.
    pub assignment: AssignmentUid,
    /// The field.
    pub field: AssignmentField,
    /// The value the status update had set (the store's before the import).
    pub status_update_value: FieldValue,
    /// The file's value, now the store's.
    pub file_value: FieldValue,
}

/// A field of a pending update whose PM value changed after the update was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleField {
    /// The field.
    pub field: AssignmentField,
    /// The PM value the mailbox edit was made against.
    pub submitted_against: FieldValue,
    /// The PM value now.
    pub current: FieldValue,
}

impl fmt::Display for StaleField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} was {} when the update was submitted and is {} now",
            self.field, self.submitted_against, self.current
        )
    }
}
