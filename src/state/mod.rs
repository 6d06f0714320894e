//! What was synced: per assignment the mailbox item, its change key and the baseline (the
//! last-synced values of every mapped field, with when each side last changed them); per mailbox
//! the Tasks folder, subscription, watermark and SyncFolderItems state; a journal of intended
//! remote writes; and the audit log of sync decisions.
//!
//! [`StateStore`] is the boundary, as wide as the engine and the commands use it. Two stores
//! implement it with the same rows and the same transactions: [`SqliteStore`] (one file, the
//! default) and [`PostgresStore`] (a database several instances can share); a
//! [`StateLocation`] chooses one at run time as an [`AnyStateStore`]. Every write is one
//! transaction over rows keyed by (project, assignment) or by mailbox. Several connector
//! instances sharing one store divide the mailboxes by leases ([`lease`]); a commit made under a
//! lease carries a [`Fence`] that the store checks in the same transaction (the `lease_*`
//! columns of SQLite's first schema version are unused: leases have a table of their own).
//!
//! Rule of use: a state change is committed only after the remote write it records succeeded.
//! A [`JournalEntry`] is opened before the write and closed in the same transaction that stores
//! its result, so after a crash the open entries say which mailboxes need a look before anything
//! is written again.

mod codec;
pub mod lease;
mod location;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mapping::{MailField, MailValues, ValueHash};
use crate::pm::{AssignmentKey, AssignmentUid, ProjectGuid, StatusUpdateId};

pub use lease::{
    Fence, InstanceId, InstanceRow, Lease, LeaseRound, LeaseTiming, QueuedNotice, fair_share,
    lease_round,
};
pub use location::{AnyStateStore, StateLocation, without_password};
pub use postgres::{PostgresStore, PostgresTls};
pub use sqlite::SqliteStore;

/// A mailbox, by its primary SMTP address (lower-cased).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MailboxAddress(String);

impl MailboxAddress {
    /// The address, normalised to lower case (SMTP addresses compare case-insensitively).
    pub fn new(address: &str) -> Self {
        MailboxAddress(address.trim().to_ascii_lowercase())
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MailboxAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The mailbox item that stands for an assignment, at the version last seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRef {
    /// The item's store id.
    pub item_id: String,
    /// Its change key when taskbridge last wrote or read it.
    pub change_key: String,
}

/// The last-synced state of one assignment's mapped fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// The values both sides agreed on at the last sync.
    pub values: MailValues,
    /// When the PM side last changed each field (as the PM reported it).
    #[serde(default)]
    pub pm_changed: BTreeMap<MailField, DateTime<Utc>>,
    /// When the mailbox last changed each field (the item's LastModifiedTime).
    #[serde(default)]
    pub mail_changed: BTreeMap<MailField, DateTime<Utc>>,
}

impl Baseline {
    /// A baseline of `values` with no change times yet.
    pub fn new(values: MailValues) -> Self {
        Baseline {
            values,
            pm_changed: BTreeMap::new(),
            mail_changed: BTreeMap::new(),
        }
    }
}

/// Where an assignment stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncStatus {
    /// Both sides agree with the baseline.
    Synced,
    /// A status update waits for the status manager; `observed` is the hash of the mailbox
    /// values it carries, so the same edit is not submitted twice.
    PendingApproval {
        /// The update.
        update: StatusUpdateId,
        /// Hash of the mailbox values submitted.
        observed: ValueHash,
        /// The fields the update carries, with the hash of each submitted value: only these are
        /// held back while it waits; the others keep syncing both ways. Empty in rows written
        /// before fields were recorded, which hold back the whole item.
        #[serde(default)]
        fields: BTreeMap<MailField, ValueHash>,
    },
    /// Both sides changed and the policy is `manual`: a person must decide.
    Conflict {
        /// The fields in conflict.
        fields: Vec<MailField>,
        /// When the conflict was first found (`None` in rows from before this was recorded).
        #[serde(default)]
        since: Option<DateTime<Utc>>,
        /// The mailbox's values when it was last read, so that a person can see and settle the
        /// conflict without another read (`None` in rows from before this was recorded).
        #[serde(default)]
        mail: Option<Box<MailValues>>,
    },
    /// Given up after repeated failures; the rest of the sync goes on.
    Parked {
        /// Why.
        reason: String,
    },
    /// The user deleted the item in the mailbox and the rule is `detach`.
    Detached,
    /// The item changed in the mailbox while its assignment was out of the plan (its deletion
    /// held by the mass-delete guard): the edit has no assignment to go to, so it is not taken.
    /// The row keeps the version it took last, and the edit waits in the mailbox; the publish
    /// that finds the assignment in the plan again reads the item and decides it, and a forced
    /// deletion of the task discards it (with a warning in the log).
    AwaitingPlan {
        /// When the first edit that waits was seen.
        since: DateTime<Utc>,
    },
}

impl SyncStatus {
    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::PendingApproval { .. } => "pending",
            SyncStatus::Conflict { .. } => "conflict",
            SyncStatus::Parked { .. } => "parked",
            SyncStatus::Detached => "detached",
            SyncStatus::AwaitingPlan { .. } => "awaiting-plan",
        }
    }
}

/// Everything taskbridge remembers about one assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentState {
    /// The assignment.
    pub key: AssignmentKey,
    /// The mailbox its task lives in.
    pub mailbox: MailboxAddress,
    /// The item, once created (or found).
    pub item: Option<ItemRef>,
    /// The last-synced values.
    pub baseline: Option<Baseline>,
    /// Hash of the PM side's mapped values at the last sync.
    pub pm_hash: Option<ValueHash>,
    /// Hash of the mailbox side's mapped values at the last sync.
    pub mail_hash: Option<ValueHash>,
    /// Where it stands.
    pub status: SyncStatus,
    /// Consecutive failed attempts (reset on success).
    pub attempts: u32,
    /// The last error, for `taskbridge status`.
    pub last_error: Option<String>,
    /// When it was last synced.
    pub last_sync: Option<DateTime<Utc>>,
}

impl AssignmentState {
    /// A new, not yet created assignment.
    pub fn new(key: AssignmentKey, mailbox: MailboxAddress) -> Self {
        AssignmentState {
            key,
            mailbox,
            item: None,
            baseline: None,
            pm_hash: None,
            mail_hash: None,
            status: SyncStatus::Synced,
            attempts: 0,
            last_error: None,
            last_sync: None,
        }
    }
}

/// An item tracked in a mailbox, as [`StateStore::mailbox_items`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedItem {
    /// The item's store id.
    pub item_id: String,
    /// The assignment it stands for.
    pub key: AssignmentKey,
    /// The owner's zone of its baseline (`None` without a baseline).
    pub zone: Option<chrono_tz::Tz>,
}

/// Everything taskbridge remembers about one mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MailboxState {
    /// The mailbox.
    pub mailbox: Option<MailboxAddress>,
    /// The Tasks folder's id.
    pub folder_id: Option<String>,
    /// The push (or pull) subscription.
    pub subscription_id: Option<String>,
    /// The last watermark received.
    pub watermark: Option<String>,
    /// When the subscription last said anything.
    pub last_notification: Option<DateTime<Utc>>,
    /// The SyncFolderItems state after the last pass.
    pub sync_state: Option<String>,
    /// When the last full reconciliation finished.
    pub last_reconcile: Option<DateTime<Utc>>,
}

/// What a journal entry intends to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// CreateItem.
    Create,
    /// UpdateItem.
    Update,
    /// DeleteItem.
    Delete,
}

impl WriteKind {
    fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<WriteKind> {
        match s {
            "create" => Some(WriteKind::Create),
            "update" => Some(WriteKind::Update),
            "delete" => Some(WriteKind::Delete),
            _ => None,
        }
    }
}

/// An intended remote write, recorded before it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Set by the store.
    pub id: i64,
    /// The mailbox written to.
    pub mailbox: MailboxAddress,
    /// The assignment.
    pub key: AssignmentKey,
    /// What is being done.
    pub kind: WriteKind,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// The rule that decided a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionRule {
    /// Only the mailbox changed it.
    MailOnly,
    /// Only the PM side changed it.
    PmOnly,
    /// Both changed it to the same value.
    Converged,
    /// Both changed it; the newer change won.
    NewerWins,
    /// Both changed it; the PM side wins by policy.
    PmWins,
    /// Both changed it; the mailbox wins by policy.
    MailWins,
    /// Both changed it; kept for a person to decide.
    Manual,
    /// The mailbox changed a field that only flows from the PM side; the PM value is restored.
    PmOwned,
    /// The status manager rejected the mailbox value; the PM value is restored.
    Rejected,
    /// Both changed it within the clock-skew tolerance of each other (`sync.clock_skew_ms`):
    /// too close to tell which is newer, so the policy's tie rule decided (the PM side wins).
    Tie,
    /// The status note (Waiting on someone else, Deferred) was set, changed or cleared in the
    /// mailbox; recorded on the status update, never a change of the percentage.
    StatusNote,
    /// A person settled a conflict (`taskbridge conflicts resolve`).
    Resolved,
}

/// Which side's value a decision kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The PM side.
    Pm,
    /// The mailbox.
    Mail,
    /// Neither (a conflict kept for a person).
    Neither,
}

/// One line of the audit log: a decision about one field of one assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// The assignment.
    pub key: AssignmentKey,
    /// The mailbox.
    pub mailbox: MailboxAddress,
    /// The field.
    pub field: MailField,
    /// The PM side's value, as text.
    pub pm_value: String,
    /// The mailbox's value, as text.
    pub mail_value: String,
    /// The rule applied.
    pub rule: DecisionRule,
    /// The winner.
    pub winner: Side,
    /// Who decided and why, when a person did (`taskbridge conflicts resolve`), or the PM
    /// side's reason for a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a publish mark is of: one mailbox's rows of a project, or every row of the project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkScope {
    /// The project's rows in one mailbox.
    Mailbox(MailboxAddress),
    /// All the project's rows.
    Project,
}

impl MarkScope {
    /// The scope's key in the store's `publish_mark` table: the mailbox, or the empty string
    /// (no mailbox address is empty).
    fn key(&self) -> &str {
        match self {
            MarkScope::Mailbox(m) => m.as_str(),
            MarkScope::Project => "",
        }
    }
}

/// What a publish that left a scope's rows in step with the plan leaves, so that the next publish can
/// skip the scope without reading it: the plan revision and the mapping it compared against.
/// A store removes a scope's mark with any write of its rows (a mailbox's rows also end the
/// project's mark) but the confirming publish's own, so a mark present and equal to what a
/// publish would compare against says the comparison would find nothing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishMark {
    /// The project's plan revision ([`crate::pm::PmHost::plan_revision`]) the publish read
    /// before it read the plan.
    pub revision: String,
    /// A fingerprint of the field mapping and the settings that shape what a publish writes.
    pub mapping: String,
    /// How many assignments the scope held (reported as unchanged when it is skipped).
    pub units: u64,
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The database failed.
    #[error("state database error: {0}")]
    Database(String),
    /// A stored row could not be read back.
    #[error("corrupt state row for {what}: {detail}")]
    Corrupt {
        /// Which row.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The store is closed (the process is shutting down).
    #[error("the state store is closed")]
    Closed,
    /// A commit was fenced by a mailbox lease this instance no longer holds (another instance
    /// took it over): nothing of the commit was written.
    #[error("the lease of mailbox {mailbox} was lost; the write was not committed")]
    LeaseLost {
        /// The mailbox.
        mailbox: String,
    },
}

/// The state store as the engine sees it.
pub trait StateStore: Send + Sync + 'static {
    /// One assignment.
    fn assignment(
        &self,
        key: &AssignmentKey,
    ) -> impl Future<Output = Result<Option<AssignmentState>, StateError>> + Send;
    /// The assignments of a project.
    fn project_assignments(
        &self,
        project: ProjectGuid,
    ) -> impl Future<Output = Result<Vec<AssignmentState>, StateError>> + Send;
    /// Where each tracked assignment of a project has its task, without the rows: what a
    /// publish plans its mailboxes from, so that it never holds the whole project's rows.
    fn assignment_mailboxes(
        &self,
        project: ProjectGuid,
    ) -> impl Future<Output = Result<Vec<(AssignmentUid, MailboxAddress)>, StateError>> + Send;
    /// The assignments whose tasks live in a mailbox; with `project`, that project's only (a
    /// publish reads a mailbox's rows once per project).
    fn mailbox_assignments(
        &self,
        mailbox: &MailboxAddress,
        project: Option<ProjectGuid>,
    ) -> impl Future<Output = Result<Vec<AssignmentState>, StateError>> + Send;
    /// The assignments whose mailbox edit waits for the status manager's decision
    /// ([`SyncStatus::PendingApproval`]), ordered by mailbox.
    fn pending_approvals(
        &self,
    ) -> impl Future<Output = Result<Vec<AssignmentState>, StateError>> + Send;
    /// The items tracked in a mailbox, without whole rows: what an incremental mailbox pass
    /// needs to recognise the items a change page names (it then reads only their rows).
    fn mailbox_items(
        &self,
        mailbox: &MailboxAddress,
    ) -> impl Future<Output = Result<Vec<TrackedItem>, StateError>> + Send;
    /// The assignments whose items these are, in no particular order; ids no row has are
    /// left out. One call for all the items a change page names: an incremental pass used to
    /// ask once per item, each a hand-off to the store and back.
    fn assignments_by_items(
        &self,
        mailbox: &MailboxAddress,
        item_ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<AssignmentState>, StateError>> + Send;
    /// Stores assignments, closes journal entries and deletes assignments, in one transaction:
    /// a [`StateStore::transact`] with nothing else in it.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<(), StateError>> + Send {
        let done = self.transact(Transaction {
            commit,
            ..Transaction::default()
        });
        async move { done.await.map(drop) }
    }
    /// A [`Commit`], the audit records that explain it and the journal entries of the writes
    /// about to follow it, in one transaction (under the commit's fences); returns the ids of
    /// the journal entries opened, in order. What one step of an item records, so that an
    /// applied edit costs one transaction where it used to cost one per kind of row.
    fn transact(
        &self,
        transaction: Transaction,
    ) -> impl Future<Output = Result<Vec<i64>, StateError>> + Send;
    /// Records intended writes; returns their ids in order.
    fn open_journal(
        &self,
        entries: Vec<JournalEntry>,
    ) -> impl Future<Output = Result<Vec<i64>, StateError>> + Send;
    /// Journal entries never closed (the process died during the write).
    fn unfinished_journal(
        &self,
    ) -> impl Future<Output = Result<Vec<JournalEntry>, StateError>> + Send;
    /// One mailbox's state.
    fn mailbox(
        &self,
        mailbox: &MailboxAddress,
    ) -> impl Future<Output = Result<Option<MailboxState>, StateError>> + Send;
    /// All known mailboxes.
    fn mailboxes(&self) -> impl Future<Output = Result<Vec<MailboxState>, StateError>> + Send;
    /// Changes some of one mailbox's state (a default state when it has none yet) as one
    /// atomic read-modify-write, and returns the state stored. Callers that own different
    /// columns (a notification's watermark, a pass's sync state) each change only their own, so
    /// that neither puts back the other's older value.
    fn update_mailbox(
        &self,
        mailbox: &MailboxAddress,
        change: impl FnOnce(&mut MailboxState) + Send + 'static,
    ) -> impl Future<Output = Result<MailboxState, StateError>> + Send;
    /// Records, in one transaction, that the server spoke for each of `heard`'s mailboxes at
    /// `at` (`last_notification`), with the last watermark it gave (`None`: the stored one
    /// stays). Only these two columns, as [`StateStore::update_mailbox`] would change them; a
    /// mailbox without a row gets one.
    fn note_heard(
        &self,
        heard: Vec<(MailboxAddress, Option<String>)>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Appends to the audit log.
    fn append_audit(
        &self,
        records: Vec<AuditRecord>,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// The audit log, oldest first, of one project or all.
    fn audit(
        &self,
        project: Option<ProjectGuid>,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StateError>> + Send;
    /// Removes every row of `project`: its assignments, journal entries and audit records (a
    /// project taken out of service). Returns how many rows went.
    fn forget_project(
        &self,
        project: ProjectGuid,
    ) -> impl Future<Output = Result<u64, StateError>> + Send;

    /// The publish mark of `scope`, when one is confirmed ([`PublishMark`]).
    fn publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
    ) -> impl Future<Output = Result<Option<PublishMark>, StateError>> + Send {
        let _ = (project, scope);
        std::future::ready(Ok(None))
    }
    /// Reserves the publish mark of `scope` for the publish `token` (replacing any mark there):
    /// from now on any write of the scope's rows removes the reservation, except the
    /// publish's own (a [`Commit`] with its [`Commit::publish_token`]), so that
    /// [`StateStore::confirm_publish_mark`] can tell whether the rows are as the publish read
    /// and wrote them. A write that began before the reservation is finished before it returns.
    fn reserve_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
    ) -> impl Future<Output = Result<(), StateError>> + Send {
        let _ = (project, scope, token);
        std::future::ready(Ok(()))
    }
    /// Turns the reservation of `token` into `mark`, if no write of the scope's rows came
    /// since it was made; `false` (and nothing stored) otherwise. A store that keeps no marks
    /// (the default) answers `false`: every publish then compares in full.
    fn confirm_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
        mark: PublishMark,
    ) -> impl Future<Output = Result<bool, StateError>> + Send {
        let _ = (project, scope, token, mark);
        std::future::ready(Ok(false))
    }

    /// Records that `instance` is alive until `until`, and returns every instance alive at
    /// `now` (with this one), in id order.
    fn heartbeat(
        &self,
        instance: &InstanceId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<InstanceRow>, StateError>> + Send;
    /// Removes an instance's heartbeat (it is leaving).
    fn remove_instance(
        &self,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Every lease row, in mailbox order.
    fn leases(&self) -> impl Future<Output = Result<Vec<Lease>, StateError>> + Send;
    /// Makes a free lease row for each mailbox that has none.
    fn add_leases(
        &self,
        mailboxes: Vec<MailboxAddress>,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Takes the lease of `mailbox` for `instance` until `until`, if it is still at
    /// `generation` and free or expired at `now`; returns the new generation (one more).
    fn take_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<i64>, StateError>> + Send;
    /// Extends every lease in `leases` (mailbox and generation) that `instance` still holds at
    /// that generation to `until`, in one statement (one round trip however many leases an
    /// instance holds); the mailboxes renewed, the others were lost.
    fn renew_leases(
        &self,
        instance: &InstanceId,
        leases: &[(MailboxAddress, i64)],
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<std::collections::BTreeSet<MailboxAddress>, StateError>> + Send;
    /// Frees a lease `instance` holds at `generation` (the generation stays: the next owner
    /// raises it).
    fn release_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Queues a notification for the instance that holds its mailbox (and wakes it where the
    /// database can).
    fn enqueue_notice(
        &self,
        notice: QueuedNotice,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Mailboxes as notifications are queued for them, where the database can tell at once
    /// (PostgreSQL's `LISTEN`); `None` where the queue must be polled.
    fn listen_notices(&self) -> Option<tokio::sync::mpsc::Receiver<MailboxAddress>> {
        None
    }
    /// Takes (removes and returns, oldest first) the queued notifications of `mailboxes`.
    fn take_notices(
        &self,
        mailboxes: Vec<MailboxAddress>,
    ) -> impl Future<Output = Result<Vec<QueuedNotice>, StateError>> + Send;
}

/// One transaction of results: rows to store, rows to remove, journal entries to close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// Assignments to insert or replace.
    pub put: Vec<AssignmentState>,
    /// Assignments to forget, each only while its row is still in the mailbox named with it:
    /// a publish that moves a task to another mailbox may record the new task (the same key)
    /// before the old one is deleted, and that row must stay.
    pub delete: Vec<(AssignmentKey, MailboxAddress)>,
    /// Journal entries whose writes finished (whatever their outcome).
    pub close_journal: Vec<i64>,
    /// The leases the rows were worked out under: when one of them has moved, the store
    /// commits nothing and answers [`StateError::LeaseLost`].
    pub fences: Vec<Fence>,
    /// The publish that writes these rows, by the token of its publish-mark reservations
    /// ([`StateStore::reserve_publish_mark`]): a publish's own writes keep its reservations,
    /// every other write of the rows ends them.
    pub publish_token: Option<i64>,
}

impl Commit {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty() && self.close_journal.is_empty()
    }

    /// The (project, mailbox) pairs whose rows the commit writes, each once: their publish
    /// marks go with the commit.
    fn touched_scopes(&self) -> Vec<(ProjectGuid, &MailboxAddress)> {
        let mut pairs: Vec<(ProjectGuid, &MailboxAddress)> = self
            .put
            .iter()
            .map(|s| (s.key.project, &s.mailbox))
            .chain(self.delete.iter().map(|(k, m)| (k.project, m)))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}

/// One transaction of [`StateStore::transact`]: a [`Commit`] with the audit records of the
/// decisions it stores and the journal entries of the remote writes that will follow it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Rows to store and remove, journal entries to close, and the fences of all of it.
    pub commit: Commit,
    /// Audit records to append.
    pub audit: Vec<AuditRecord>,
    /// Intended writes to record (their ids are the store's).
    pub open_journal: Vec<JournalEntry>,
}

impl Transaction {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.commit.is_empty() && self.audit.is_empty() && self.open_journal.is_empty()
    }
}

// Text forms both stores write: times as RFC 3339 exactly as held (the engine compares stored
// rows with rows it holds), hashes in their own text form.

fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn parse_time(what: &str, text: Option<String>) -> Result<Option<DateTime<Utc>>, StateError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| StateError::Corrupt {
                what: what.to_string(),
                detail: e.to_string(),
            })
    })
    .transpose()
}

fn parse_hash(what: &str, text: Option<String>) -> Result<Option<ValueHash>, StateError> {
    text.map(|t| {
        t.parse().map_err(|e| StateError::Corrupt {
            what: what.to_string(),
            detail: format!("{e}"),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migration_steps() {
        // A step added to one store's schema and not the other's would give one version
        // number two meanings.
        assert_eq!(
            super::sqlite::MIGRATIONS.len(),
            super::postgres::MIGRATIONS.len()
        );
    }
}
