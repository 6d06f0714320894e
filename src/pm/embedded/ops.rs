//! The embedded host's operations as synchronous transactions, run on the store's thread. Each
//! one is a single immediate transaction: its rows, its events and its webhook deliveries are
//! committed together or not at all.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::EmbeddedError;
use super::apply::{Applied, ApplyError, apply_update, field_value};
use super::merge::merge_import;
use super::rows;
use super::snapshot::{self, ImportedDocument};
use super::sql::{Conn, Tx};
use super::types::{
    AppliedValue, DECIDER_AUTO, DECIDER_TASKBRIDGE, ImportReport, Policy, StaleField,
    StatusUpdateRecord, UpdateFilter, UpdateState,
};
use crate::pm::host::{HostEvent, StatusUpdate, StatusUpdateId, UpdateOutcome};
use crate::pm::model::{Assignment, AssignmentKey, AssignmentUid, Project, ProjectGuid};

/// The reason given when a status manager rejects without saying why.
pub(crate) const DEFAULT_REJECT_REASON: &str = "rejected by the status manager";
/// The reason given to pending updates whose assignment a re-import removed.
const REMOVED_REASON: &str = "the assignment was removed from the project by a re-import";
/// How far [`outcome_of`] follows a chain of superseding updates before calling it a loop.
const MAX_SUPERSEDE_CHAIN: usize = 10_000;

/// The event name and payload of a webhook delivery.
pub(crate) const WEBHOOK_EVENT: &str = "status_update.applied";

/// Begins a transaction holding the store's write lock ([`Tx::begin`]).
fn begin(conn: &dyn Conn) -> Result<Tx<'_>, EmbeddedError> {
    Tx::begin(conn)
}

/// Stores `project`, merging it three-way over the stored one with the same GUID against the
/// previous import, records it (and `document`) as the last import, and publishes it. A dry
/// run computes the same report and rolls back.
pub(crate) fn import(
    conn: &dyn Conn,
    project: Project,
    document: Option<ImportedDocument>,
    policy: Option<Policy>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ImportReport, EmbeddedError> {
    let tx = begin(conn)?;
    let guid = project.guid;
    let old = rows::load_project(&tx, guid)?;
    let base = snapshot::load(&tx, guid)?;
    let three_way = old.is_some() && base.is_some();
    let merge = merge_import(
        old.as_ref(),
        base.as_ref().map(|b| &b.project),
        project.clone(),
        now,
    );
    let policy = rows::write_project(&tx, &merge.project, policy, now)?;
    snapshot::save(&tx, &project, document.as_ref(), now)?;
    let mut closed_updates = 0;
    for uid in &merge.removed {
        let filter = UpdateFilter {
            state: Some(UpdateState::Pending),
            key: Some(merge.project.key(*uid)),
            ..UpdateFilter::default()
        };
        for pending in rows::list_updates(&tx, &filter)? {
            rows::decide_update(
                &tx,
                &pending.id,
                UpdateState::Rejected,
                now,
                DECIDER_TASKBRIDGE,
                Some(REMOVED_REASON),
                None,
            )?;
            closed_updates += 1;
        }
    }
    rows::emit(&tx, &HostEvent::ProjectPublished { project: guid }, now)?;
    if dry_run {
        tx.rollback()?;
    } else {
        tx.commit()?;
    }
    let mut lowered_progress: Vec<_> = merge
        .field_changes
        .iter()
        .filter(|c| c.lowers_progress())
        .map(|c| c.assignment)
        .collect();
    lowered_progress.dedup();
    Ok(ImportReport {
        project: guid,
        name: merge.project.name.clone(),
        created: old.is_none(),
        policy,
        added: merge.added.len(),
        changed: merge.changed.len(),
        removed: merge.removed.len(),
        unchanged: merge.unchanged,
        mailbox_assignments: merge.project.sync_units().len(),
        closed_updates,
        added_assignments: merge.added,
        removed_assignments: merge.removed,
        field_changes: merge.field_changes,
        overridden: merge.overridden,
        lowered_progress,
        three_way,
        dry_run,
    })
}

/// Re-emits `ProjectPublished`.
pub(crate) fn publish(
    conn: &dyn Conn,
    guid: ProjectGuid,
    now: DateTime<Utc>,
) -> Result<(), EmbeddedError> {
    let tx = begin(conn)?;
    if !rows::touch_published(&tx, guid, now)? {
        return Err(EmbeddedError::UnknownProject(guid));
    }
    rows::emit(&tx, &HostEvent::ProjectPublished { project: guid }, now)?;
    tx.commit()?;
    Ok(())
}

/// Sets a project's policy. Pending updates stay pending under either policy.
pub(crate) fn set_policy(
    conn: &dyn Conn,
    guid: ProjectGuid,
    policy: Policy,
) -> Result<(), EmbeddedError> {
    let tx = begin(conn)?;
    if !rows::set_policy(&tx, guid, policy)? {
        return Err(EmbeddedError::UnknownProject(guid));
    }
    tx.commit()?;
    Ok(())
}

/// Accepts a status update under the project's policy.
pub(crate) fn submit(
    conn: &dyn Conn,
    update: StatusUpdate,
    webhook: bool,
    now: DateTime<Utc>,
) -> Result<UpdateOutcome, EmbeddedError> {
    let tx = begin(conn)?;
    let mut taken = Vec::with_capacity(1);
    let mut parts = Parts::of(std::slice::from_ref(&update));
    let outcome = submit_in(&tx, update, webhook, now, &mut parts, &mut taken)?;
    tx.commit()?;
    taken.iter().for_each(Taken::log);
    Ok(outcome)
}

/// What taking a status update says in the log. Written once its transaction committed, as
/// approvals and rejections are: a batch taken again after a failed update, or a commit that
/// failed, must neither log an update twice nor log one that was not kept.
enum Taken {
    NoteRecorded(StatusUpdateId, AssignmentKey),
    Refused(StatusUpdateId, AssignmentKey, String),
    Applied(StatusUpdateId, AssignmentKey),
    Superseded(StatusUpdateId, StatusUpdateId, AssignmentKey),
    Pending(StatusUpdateId, AssignmentKey),
}

impl Taken {
    fn log(&self) {
        match self {
            Taken::NoteRecorded(id, key) => tracing::info!(%id, %key, "status note recorded"),
            Taken::Refused(id, key, reason) => {
                tracing::info!(%id, %key, %reason, "status update refused");
            }
            Taken::Applied(id, key) => tracing::info!(%id, %key, "status update applied"),
            Taken::Superseded(id, by, key) => {
                tracing::info!(%id, %by, %key, "status update superseded");
            }
            Taken::Pending(id, key) => tracing::info!(%id, %key, "status update pending approval"),
        }
    }
}

/// Status updates in order, in one transaction (one commit is most of what an update costs):
/// the outcomes of those taken, and the error that stopped the rest. An update that fails
/// leaves nothing of itself; the ones before it are kept, unless the commit fails, which takes
/// none.
///
/// There is no savepoint per update: SQLite copies every page a savepoint's statements touch
/// into a statement journal first (a tenth of the PM store's time in a burst of edits), and
/// PostgreSQL makes each one a subtransaction. When an update fails, the transaction is rolled
/// back and the updates before it are taken again in a new one, each decided again against
/// what is stored, as it would be had it come alone. Failures are rare (an unknown assignment,
/// a database error), so the common case pays nothing for them.
pub(crate) fn submit_many(
    conn: &dyn Conn,
    mut updates: Vec<StatusUpdate>,
    webhook: bool,
    now: DateTime<Utc>,
) -> (Vec<UpdateOutcome>, Option<EmbeddedError>) {
    let mut stopped = None;
    // Each round is shorter than the one before: it ends at the first failure.
    while !updates.is_empty() {
        let tx = match begin(conn) {
            Ok(tx) => tx,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut outcomes = Vec::with_capacity(updates.len());
        let mut taken = Vec::with_capacity(updates.len());
        let mut failed = None;
        let mut parts = Parts::of(&updates);
        for (at, update) in updates.iter().enumerate() {
            match submit_in(&tx, update.clone(), webhook, now, &mut parts, &mut taken) {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    failed = Some((at, e));
                    break;
                }
            }
        }
        let Some((at, e)) = failed else {
            return match tx.commit() {
                Ok(()) => {
                    taken.iter().for_each(Taken::log);
                    (outcomes, stopped)
                }
                Err(e) => (Vec::new(), Some(e)),
            };
        };
        // The update's error is the one to report; a rollback that fails leaves the next
        // round's `begin` to fail, which takes nothing.
        let _ = tx.rollback();
        tracing::debug!(taken_again = at, error = %e, "a status update of a batch failed; taking the ones before it again");
        updates.truncate(at);
        stopped = Some(e);
    }
    (Vec::new(), stopped)
}

/// The parts of the projects a batch of status updates touches, read once per transaction:
/// each project's part holds every assignment of the batch in it (with their tasks' other
/// assignments, for the roll-ups), and each update applies to the part as the updates before
/// it left it, which is what it would read from the database inside the same transaction.
/// Read per update, the part was over a quarter of the time a burst of edits spent in the PM
/// store.
struct Parts {
    /// The batch's assignments of each project.
    wanted: HashMap<ProjectGuid, Vec<AssignmentUid>>,
    /// Read so far: the project's policy and part, `None` for a project not stored.
    read: HashMap<ProjectGuid, Option<(Policy, Project)>>,
}

impl Parts {
    fn of(updates: &[StatusUpdate]) -> Parts {
        let mut wanted: HashMap<ProjectGuid, Vec<AssignmentUid>> = HashMap::new();
        for u in updates {
            wanted
                .entry(u.key.project)
                .or_default()
                .push(u.key.assignment);
        }
        Parts {
            wanted,
            read: HashMap::new(),
        }
    }

    /// The policy and part of `project`, read on first use.
    fn get(
        &mut self,
        tx: &dyn Conn,
        project: ProjectGuid,
    ) -> Result<&(Policy, Project), EmbeddedError> {
        if !self.read.contains_key(&project) {
            let read = match rows::project_meta(tx, project)? {
                None => None,
                Some(meta) => {
                    let uids = self.wanted.get(&project).map_or(&[][..], Vec::as_slice);
                    rows::load_project_part(tx, project, uids, true)?.map(|p| (meta.policy, p))
                }
            };
            self.read.insert(project, read);
        }
        self.read
            .get(&project)
            .and_then(Option::as_ref)
            .ok_or(EmbeddedError::UnknownProject(project))
    }

    /// `project` as an update applied in this transaction left it.
    fn put(&mut self, policy: Policy, project: Project) {
        self.read.insert(project.guid, Some((policy, project)));
    }
}

/// [`submit`] inside the caller's transaction, reading and keeping the projects' parts in
/// `parts`; what it did is added to `taken`, for the log once the transaction commits.
fn submit_in(
    tx: &dyn Conn,
    update: StatusUpdate,
    webhook: bool,
    now: DateTime<Utc>,
    parts: &mut Parts,
    taken: &mut Vec<Taken>,
) -> Result<UpdateOutcome, EmbeddedError> {
    let key = update.key;
    // The same mailbox item version twice is one update: the connector resubmits after a crash,
    // and two instances can both read an edit during a lease take-over. The write lock makes
    // the second submission wait for the first one's commit, so this read sees it; the unique
    // index `status_updates_by_source` backs the key up in the schema.
    if let Some(id) = rows::find_update_by_key(tx, &update.idempotency_key())? {
        tracing::debug!(%id, %key, "status update submitted again: answered with its outcome");
        return outcome_of(tx, &id);
    }
    // The assignment's task with all its assignments is all an update touches (the task's
    // roll-up reads them); the rest of the plan is not read.
    let (policy, project) = parts.get(tx, key.project)?;
    let policy = *policy;
    let current = project
        .assignment(key.assignment)
        .cloned()
        .ok_or(EmbeddedError::UnknownAssignment(key))?;
    let (task_name, resource_name) = names(project, &current);
    let id = StatusUpdateId(uuid::Uuid::new_v4().to_string());
    let mut record = StatusUpdateRecord {
        id: id.clone(),
        key,
        changes: update.changes,
        source: update.source,
        state: UpdateState::Pending,
        submitted_at: now,
        decided_at: None,
        decider: None,
        reason: None,
        superseded_by: None,
        task_name,
        resource_name,
        status_note: update.status_note,
        completed_on: update.completed_on,
        applied: Vec::new(),
    };
    if record.changes.is_empty() && record.status_note.is_some() {
        // A status note alone changes no PM value: kept at once, under either policy.
        record.state = UpdateState::Applied;
        record.decided_at = Some(now);
        record.decider = Some(DECIDER_AUTO.to_owned());
        rows::insert_update(tx, &record)?;
        taken.push(Taken::NoteRecorded(id.clone(), key));
        return Ok(UpdateOutcome::Applied {
            id,
            assignment: current,
        });
    }
    // A trial run decides validity under either policy, against today's values.
    let mut after = project.clone();
    let completed_on = record.completed_on;
    let applied = match apply_update(
        &mut after,
        key.assignment,
        &record.changes,
        completed_on,
        now,
    ) {
        Ok(applied) => applied,
        Err(e) => {
            let reason = e.to_string();
            record.state = UpdateState::Rejected;
            record.decided_at = Some(now);
            record.decider = Some(DECIDER_TASKBRIDGE.to_owned());
            record.reason = Some(reason.clone());
            rows::insert_update(tx, &record)?;
            taken.push(Taken::Refused(id.clone(), key, reason.clone()));
            return Ok(UpdateOutcome::Rejected {
                id,
                assignment: current,
                reason,
            });
        }
    };
    let outcome = match policy {
        Policy::Auto => {
            record.state = UpdateState::Applied;
            record.decided_at = Some(now);
            record.decider = Some(DECIDER_AUTO.to_owned());
            record.applied = applied_values(&after, &record, &applied);
            rows::insert_update(tx, &record)?;
            let assignment = persist_applied(tx, &after, &applied, &record, webhook, now)?;
            parts.put(policy, after);
            taken.push(Taken::Applied(id.clone(), key));
            UpdateOutcome::Applied { id, assignment }
        }
        Policy::Approval => {
            let older = rows::list_updates(
                tx,
                &UpdateFilter {
                    state: Some(UpdateState::Pending),
                    key: Some(key),
                    ..UpdateFilter::default()
                },
            )?;
            rows::insert_update(tx, &record)?;
            for old in older {
                rows::decide_update(
                    tx,
                    &old.id,
                    UpdateState::Superseded,
                    now,
                    DECIDER_TASKBRIDGE,
                    Some(&format!("superseded by {id}")),
                    Some(&id),
                )?;
                taken.push(Taken::Superseded(old.id, id.clone(), key));
            }
            taken.push(Taken::Pending(id.clone(), key));
            UpdateOutcome::Pending { id }
        }
    };
    Ok(outcome)
}

/// Applies a pending update on the status manager's word.
///
/// Every field's `old` value (the PM value the mailbox edit was made against) must still be the
/// PM's value: a plan changed since the update was submitted refuses the approval with
/// [`EmbeddedError::Stale`], naming each field and both values, unless `force`, which applies it
/// anyway and records that in the update's reason.
pub(crate) fn approve(
    conn: &dyn Conn,
    id: &StatusUpdateId,
    decider: &str,
    force: bool,
    webhook: bool,
    now: DateTime<Utc>,
) -> Result<UpdateOutcome, EmbeddedError> {
    let tx = begin(conn)?;
    let mut record = pending_record(&tx, id)?;
    let key = record.key;
    let mut project = rows::load_project_part(&tx, key.project, &[key.assignment], true)?
        .ok_or(EmbeddedError::UnknownProject(key.project))?;
    let stale = stale_fields(&project, &record)?;
    let applied = match apply_update(
        &mut project,
        key.assignment,
        &record.changes,
        record.completed_on,
        now,
    ) {
        Ok(applied) => applied,
        Err(ApplyError::UnknownAssignment(_)) => {
            return Err(EmbeddedError::UnknownAssignment(key));
        }
        // Left pending: the values no longer fit the plan (a re-import moved the start, say);
        // the status manager can still reject it.
        Err(reason) => {
            return Err(EmbeddedError::CannotApply {
                id: id.clone(),
                reason,
            });
        }
    };
    // Checked once the values are known to fit: an update that cannot apply is that first.
    if !stale.is_empty() && !force {
        return Err(EmbeddedError::Stale {
            id: id.clone(),
            fields: stale,
        });
    }
    let forced = (!stale.is_empty()).then(|| {
        let list: Vec<String> = stale.iter().map(StaleField::to_string).collect();
        format!("forced over newer PM values: {}", list.join("; "))
    });
    rows::decide_update(
        &tx,
        id,
        UpdateState::Applied,
        now,
        decider,
        forced.as_deref(),
        None,
    )?;
    record.state = UpdateState::Applied;
    record.decided_at = Some(now);
    record.decider = Some(decider.to_owned());
    record.reason = forced;
    record.applied = applied_values(&project, &record, &applied);
    rows::save_details(&tx, &record)?;
    let assignment = persist_applied(&tx, &project, &applied, &record, webhook, now)?;
    let outcome = UpdateOutcome::Applied {
        id: id.clone(),
        assignment,
    };
    rows::emit(
        &tx,
        &HostEvent::UpdateDecided {
            key,
            outcome: outcome.clone(),
        },
        now,
    )?;
    tx.commit()?;
    tracing::info!(%id, %key, decider, force, "status update approved");
    Ok(outcome)
}

/// The fields of a pending update whose PM value moved since it was submitted.
fn stale_fields(
    project: &Project,
    record: &StatusUpdateRecord,
) -> Result<Vec<StaleField>, EmbeddedError> {
    let key = record.key;
    let a = project
        .assignment(key.assignment)
        .ok_or(EmbeddedError::UnknownAssignment(key))?;
    let task = project
        .task(a.task_uid)
        .ok_or(EmbeddedError::UnknownAssignment(key))?;
    Ok(record
        .changes
        .iter()
        .filter_map(|c| {
            let now = field_value(task, a, c.field);
            (now != c.old).then(|| StaleField {
                field: c.field,
                submitted_against: c.old.clone(),
                current: now,
            })
        })
        .collect())
}

/// The values an applied update left: every field it named and every field the PM arithmetic
/// changed, of its own assignment, after the update.
fn applied_values(
    project: &Project,
    record: &StatusUpdateRecord,
    applied: &Applied,
) -> Vec<AppliedValue> {
    let key = record.key;
    let (Some(a), changed) = (
        project.assignment(key.assignment),
        applied
            .fields
            .iter()
            .find(|(uid, _)| *uid == key.assignment)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]),
    ) else {
        return Vec::new();
    };
    let Some(task) = project.task(a.task_uid) else {
        return Vec::new();
    };
    crate::pm::model::AssignmentField::ALL
        .into_iter()
        .filter(|f| changed.contains(f) || record.changes.iter().any(|c| c.field == *f))
        .map(|field| AppliedValue {
            field,
            value: field_value(task, a, field),
        })
        .collect()
}

/// Refuses a pending update on the status manager's word.
pub(crate) fn reject(
    conn: &dyn Conn,
    id: &StatusUpdateId,
    decider: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<UpdateOutcome, EmbeddedError> {
    let tx = begin(conn)?;
    let record = pending_record(&tx, id)?;
    let key = record.key;
    let project = rows::load_project_part(&tx, key.project, &[key.assignment], false)?
        .ok_or(EmbeddedError::UnknownProject(key.project))?;
    let assignment = project
        .assignment(key.assignment)
        .cloned()
        .ok_or(EmbeddedError::UnknownAssignment(key))?;
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REJECT_REASON)
        .to_owned();
    rows::decide_update(
        &tx,
        id,
        UpdateState::Rejected,
        now,
        decider,
        Some(&reason),
        None,
    )?;
    let outcome = UpdateOutcome::Rejected {
        id: id.clone(),
        assignment,
        reason,
    };
    rows::emit(
        &tx,
        &HostEvent::UpdateDecided {
            key,
            outcome: outcome.clone(),
        },
        now,
    )?;
    tx.commit()?;
    tracing::info!(%id, %key, decider, "status update rejected");
    Ok(outcome)
}

/// The update, which must be pending.
fn pending_record(
    conn: &dyn Conn,
    id: &StatusUpdateId,
) -> Result<StatusUpdateRecord, EmbeddedError> {
    let record =
        rows::load_update(conn, id)?.ok_or_else(|| EmbeddedError::UnknownUpdate(id.clone()))?;
    if record.state != UpdateState::Pending {
        return Err(EmbeddedError::NotPending {
            id: id.clone(),
            state: record.state,
        });
    }
    Ok(record)
}

/// The task and resource names shown with an update.
fn names(project: &Project, a: &Assignment) -> (Option<String>, Option<String>) {
    (
        project.task(a.task_uid).map(|t| t.name.clone()),
        project.resource(a.resource_uid).map(|r| r.name.clone()),
    )
}

/// What the webhook receives for an applied update.
#[derive(Serialize)]
struct WebhookBody<'a> {
    event: &'static str,
    project: ProjectGuid,
    update: &'a StatusUpdateRecord,
    assignment: &'a Assignment,
}

/// Writes what [`apply_changes`] changed in `project`, queues the webhook delivery (when
/// `webhook`), and returns the updated assignment.
fn persist_applied(
    tx: &dyn Conn,
    project: &Project,
    applied: &Applied,
    record: &StatusUpdateRecord,
    webhook: bool,
    now: DateTime<Utc>,
) -> Result<Assignment, EmbeddedError> {
    let key = record.key;
    let assignment = project
        .assignment(key.assignment)
        .cloned()
        .ok_or(EmbeddedError::UnknownAssignment(key))?;
    rows::touch_plan(tx, key.project)?;
    rows::save_assignment(tx, key.project, &assignment)?;
    for (uid, _) in &applied.fields {
        if *uid != key.assignment
            && let Some(other) = project.assignment(*uid)
        {
            rows::save_assignment(tx, key.project, other)?;
        }
    }
    if applied.task_changed
        && let Some(task) = project.task(assignment.task_uid)
    {
        rows::save_task(tx, key.project, task)?;
    }
    // A task-level field (name, notes, priority) changed the other assignments of the task too;
    // the connector learns of those the way it learns of any PM-side change.
    if applied.touches_others(key.assignment) {
        rows::emit(
            tx,
            &HostEvent::ProjectPublished {
                project: key.project,
            },
            now,
        )?;
    }
    if !webhook {
        return Ok(assignment);
    }
    let body = serde_json::to_string(&WebhookBody {
        event: WEBHOOK_EVENT,
        project: key.project,
        update: record,
        assignment: &assignment,
    })
    .map_err(|e| EmbeddedError::Corrupt(e.to_string()))?;
    rows::enqueue_webhook(tx, &record.id, &body, now)?;
    Ok(assignment)
}

/// The outcome of a stored update, as a resubmission of it is answered. A superseded update
/// answers with the outcome of the update that superseded it (following the chain).
fn outcome_of(conn: &dyn Conn, id: &StatusUpdateId) -> Result<UpdateOutcome, EmbeddedError> {
    let mut id = id.clone();
    for _ in 0..MAX_SUPERSEDE_CHAIN {
        let record = rows::load_update(conn, &id)?
            .ok_or_else(|| EmbeddedError::UnknownUpdate(id.clone()))?;
        let current = |key: AssignmentKey| -> Result<Assignment, EmbeddedError> {
            rows::load_project_part(conn, key.project, &[key.assignment], false)?
                .and_then(|p| p.assignment(key.assignment).cloned())
                .ok_or(EmbeddedError::UnknownAssignment(key))
        };
        return Ok(match record.state {
            UpdateState::Pending => UpdateOutcome::Pending { id },
            UpdateState::Applied => UpdateOutcome::Applied {
                assignment: current(record.key)?,
                id,
            },
            UpdateState::Rejected => UpdateOutcome::Rejected {
                assignment: current(record.key)?,
                id,
                reason: record.reason.unwrap_or_default(),
            },
            UpdateState::Superseded => match record.superseded_by {
                Some(next) => {
                    id = next;
                    continue;
                }
                None => UpdateOutcome::Pending { id },
            },
        });
    }
    Err(EmbeddedError::Corrupt(format!(
        "status update {id} is superseded in a loop"
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeZone;
    use chrono_tz::Tz;

    use super::*;
    use crate::pm::host::UpdateSource;
    use crate::pm::model::{AssignmentField, AssignmentUid, Percent};
    use crate::pm::{FieldChange, FieldValue};
    use rows::tests::{assignment, resource, task};

    /// What the log says, captured.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn update(guid: ProjectGuid, uid: i64, percent: u8) -> StatusUpdate {
        StatusUpdate {
            key: AssignmentKey {
                project: guid,
                assignment: AssignmentUid(uid),
            },
            changes: vec![FieldChange {
                field: AssignmentField::PercentWorkComplete,
                old: FieldValue::Percent(Percent::ZERO),
                new: FieldValue::Percent(Percent::new(percent).expect("in range")),
            }],
            source: UpdateSource {
                mailbox: "r1@example.com".into(),
                item_id: format!("AAMk-{uid}"),
                change_key: "ck-1".into(),
                modified_at: Utc
                    .with_ymd_and_hms(2026, 3, 4, 9, 0, 0)
                    .single()
                    .expect("valid"),
            },
            status_note: None,
            completed_on: None,
        }
    }

    // A batch whose second update fails is rolled back and its first update taken again in a
    // new transaction: the log says "applied" once, for the update that was kept, not once
    // per try.
    #[test]
    fn an_update_taken_again_after_a_failure_in_its_batch_is_logged_once() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let guid = ProjectGuid(uuid::Uuid::from_u128(21));
        let project = Project {
            guid,
            name: "logged".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![task(1, false)],
            resources: vec![resource(1, Some("r1@example.com"))],
            assignments: vec![assignment(1, 1, 1)],
        };
        let now = Utc
            .with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid");
        rows::write_project(&conn, &project, None, now).expect("write");
        set_policy(&conn, guid, Policy::Auto).expect("policy");
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let (outcomes, stopped) = tracing::subscriber::with_default(subscriber, || {
            submit_many(
                &conn,
                vec![update(guid, 1, 60), update(guid, 999, 10)],
                false,
                now,
            )
        });
        assert!(
            matches!(&outcomes[..], [UpdateOutcome::Applied { .. }]),
            "{outcomes:?}"
        );
        assert!(
            matches!(stopped, Some(EmbeddedError::UnknownAssignment(_))),
            "{stopped:?}"
        );
        let log = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
        assert_eq!(log.matches("status update applied").count(), 1, "{log}");
    }

    /// A stored project of two tasks: task 1 with assignments 1 and 2, task 2 with 3.
    fn two_tasks(guid: ProjectGuid, now: DateTime<Utc>) -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let project = Project {
            guid,
            name: "batched".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![task(1, false), task(2, false)],
            resources: vec![resource(1, Some("r1@example.com"))],
            assignments: vec![
                assignment(1, 1, 1),
                assignment(2, 1, 1),
                assignment(3, 2, 1),
            ],
        };
        rows::write_project(&conn, &project, None, now).expect("write");
        set_policy(&conn, guid, Policy::Auto).expect("policy");
        conn
    }

    // A batch reads each project's part once and applies its updates to it in order: the
    // second update of a task's assignments must see the first in the task's roll-up, and a
    // second update of the same assignment must start from the first one's values, as when
    // each is submitted alone.
    #[test]
    fn a_batch_leaves_the_plan_as_its_updates_one_by_one_do() {
        let guid = ProjectGuid(uuid::Uuid::from_u128(22));
        let now = Utc
            .with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid");
        let mut again = update(guid, 1, 100);
        again.source.change_key = "ck-2".into();
        let updates = vec![
            update(guid, 1, 50),
            update(guid, 2, 25),
            update(guid, 3, 100),
            again,
        ];
        let batched = two_tasks(guid, now);
        let (outcomes, stopped) = submit_many(&batched, updates.clone(), false, now);
        assert!(stopped.is_none(), "{stopped:?}");
        let one_by_one = two_tasks(guid, now);
        let alone: Vec<UpdateOutcome> = updates
            .into_iter()
            .map(|u| submit(&one_by_one, u, false, now).expect("taken"))
            .collect();
        let applied = |o: &[UpdateOutcome]| -> Vec<Assignment> {
            o.iter()
                .map(|o| match o {
                    UpdateOutcome::Applied { assignment, .. } => assignment.clone(),
                    other => panic!("expected Applied, got {other:?}"),
                })
                .collect()
        };
        assert_eq!(applied(&outcomes), applied(&alone));
        let plan =
            |c: &rusqlite::Connection| rows::load_project(c, guid).expect("read").expect("stored");
        let (batched, alone) = (plan(&batched), plan(&one_by_one));
        assert_eq!(batched.assignments, alone.assignments);
        assert_eq!(batched.tasks, alone.tasks);
        // Task 1's roll-up holds both of its assignments' actual work: 8 + 2 of 16 hours.
        let task1 = batched.task(crate::pm::model::TaskUid(1)).expect("task 1");
        assert_eq!(
            task1.percent_work_complete,
            Percent::new(63).expect("in range")
        );
    }
}
