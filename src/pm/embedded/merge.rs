//! Re-importing a project over the stored one: pure, no I/O.
//!
//! A re-import is three-way: the file (`new`), what the file said at the previous import of
//! the same project (`base`), and what the store holds now (`old`, which status updates from
//! the mailboxes may have moved since). A field whose file value equals the base was not
//! changed in the PM tool, so the store keeps its value and its time; a field the file changed
//! is taken, and stamped `now` if that changes the stored value. When a status update had
//! changed the same field, the file wins (it is the PM's newer decision) and the merge says so
//! in [`Merge::overridden`]. Without a base (a project stored before taskbridge kept one) the
//! store itself is the base: every value that differs from the file is taken.
//!
//! Work, actual work, remaining work and percent are coupled; when the result mixes the
//! file's and the store's values of these, they are brought in step again as Microsoft Project
//! keeps them (`work = actual + remaining`, the percent following the work done).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::apply::field_value;
use super::types::{FileOverride, ImportFieldChange};
use crate::pm::host::FieldValue;
use crate::pm::model::{
    Assignment, AssignmentField, AssignmentUid, Project, Resource, Task, percent_of,
};

/// The outcome of [`merge_import`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Merge {
    /// The project to store: the new one, with modification times carried over and stamped.
    pub(crate) project: Project,
    /// Assignments new to the store.
    pub(crate) added: Vec<AssignmentUid>,
    /// Assignments whose values, task, resource or mailbox changed.
    pub(crate) changed: Vec<AssignmentUid>,
    /// Assignments no longer in the project.
    pub(crate) removed: Vec<AssignmentUid>,
    /// Assignments that are the same as stored.
    pub(crate) unchanged: usize,
    /// Per assignment and field, the stored value and the value after the merge, for every
    /// field whose value changes.
    pub(crate) field_changes: Vec<ImportFieldChange>,
    /// Fields a status update had changed and the file changed too: the file's value is taken.
    pub(crate) overridden: Vec<FileOverride>,
}

/// The work fields, which move together.
const WORK_FIELDS: [AssignmentField; 4] = [
    AssignmentField::Work,
    AssignmentField::ActualWork,
    AssignmentField::RemainingWork,
    AssignmentField::PercentWorkComplete,
];

/// The value of `field`; `None` without the task (the importer guarantees it exists).
fn value_of(task: Option<&Task>, a: &Assignment, field: AssignmentField) -> Option<FieldValue> {
    task.map(|t| field_value(t, a, field))
}

/// Whether `a` and `b` hold the same value of the assignment field `field`.
fn same_amount(a: &Assignment, b: &Assignment, field: AssignmentField) -> bool {
    match field {
        AssignmentField::Work => a.work == b.work,
        AssignmentField::ActualWork => a.actual_work == b.actual_work,
        AssignmentField::RemainingWork => a.remaining_work == b.remaining_work,
        AssignmentField::PercentWorkComplete => a.percent_work_complete == b.percent_work_complete,
        _ => true,
    }
}

/// Copies one assignment field's value from `from` into `to`.
fn copy_field(to: &mut Assignment, from: &Assignment, field: AssignmentField) {
    match field {
        AssignmentField::Start => to.start = from.start,
        AssignmentField::Finish => to.finish = from.finish,
        AssignmentField::Work => to.work = from.work,
        AssignmentField::ActualWork => to.actual_work = from.actual_work,
        AssignmentField::RemainingWork => to.remaining_work = from.remaining_work,
        AssignmentField::PercentWorkComplete => {
            to.percent_work_complete = from.percent_work_complete;
        }
        // Task fields are merged on the task.
        AssignmentField::Name | AssignmentField::Notes | AssignmentField::Priority => {}
    }
}

/// Brings work, actual, remaining and percent in step after some of them were taken from the
/// file (`taken`) and the rest kept from the store.
fn reconcile_work(result: &mut Assignment, taken: &BTreeSet<AssignmentField>) {
    let has = |f| taken.contains(&f);
    let amounts_taken = has(AssignmentField::Work)
        || has(AssignmentField::ActualWork)
        || has(AssignmentField::RemainingWork);
    if !amounts_taken {
        if has(AssignmentField::PercentWorkComplete) {
            // Only the percent was typed in the plan: the work done follows from it.
            result.apply_percent(result.percent_work_complete);
        }
        return;
    }
    if has(AssignmentField::RemainingWork) && !has(AssignmentField::Work) {
        result.work = result.actual_work.saturating_add(result.remaining_work);
    } else {
        if result.work < result.actual_work {
            result.work = result.actual_work;
        }
        result.remaining_work = result.work.saturating_sub(result.actual_work);
    }
    if !(result.work.is_zero() && result.actual_work.is_zero()) {
        result.percent_work_complete = percent_of(result.actual_work, result.work);
    }
}

/// Merges `new` (fresh from a file) over `old` (the stored project, if any), three-way against
/// `base` (what the file said at the previous import, if known).
pub(crate) fn merge_import(
    old: Option<&Project>,
    base: Option<&Project>,
    mut new: Project,
    now: DateTime<Utc>,
) -> Merge {
    let Some(old) = old else {
        let added = new.assignments.iter().map(|a| a.uid).collect();
        return Merge {
            project: new,
            added,
            changed: Vec::new(),
            removed: Vec::new(),
            unchanged: 0,
            field_changes: Vec::new(),
            overridden: Vec::new(),
        };
    };
    // Without a record of the previous import, the store is the base: two-way.
    let base = base.unwrap_or(old);
    let old_by_uid: HashMap<AssignmentUid, &Assignment> =
        old.assignments.iter().map(|a| (a.uid, a)).collect();
    let base_by_uid: HashMap<AssignmentUid, &Assignment> =
        base.assignments.iter().map(|a| (a.uid, a)).collect();
    // The tasks as the file has them, before the task-level merge below.
    let file_tasks = new.tasks.clone();
    for task in &mut new.tasks {
        let Some(current) = old.task(task.uid) else {
            continue;
        };
        let before = base.task(task.uid).unwrap_or(current);
        // Fields a status update can move (name, notes, priority through an update; work and
        // percent through the roll-up of an assignment's update) keep the store's value unless
        // the file changed them.
        if task.name == before.name {
            task.name.clone_from(&current.name);
        }
        if task.notes == before.notes {
            task.notes.clone_from(&current.notes);
        }
        if task.priority == before.priority {
            task.priority = current.priority;
        }
        if task.work == before.work {
            task.work = current.work;
        }
        if task.percent_work_complete == before.percent_work_complete {
            task.percent_work_complete = current.percent_work_complete;
        }
    }
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    let mut field_changes = Vec::new();
    let mut overridden = Vec::new();
    let tasks = new.tasks.clone();
    let resources = new.resources.clone();
    for assignment in &mut new.assignments {
        let Some(current) = old_by_uid.get(&assignment.uid).copied() else {
            added.push(assignment.uid);
            continue;
        };
        let before = base_by_uid.get(&assignment.uid).copied().unwrap_or(current);
        let file = assignment.clone();
        let file_task = file_tasks.iter().find(|t| t.uid == file.task_uid);
        let base_task = base
            .task(before.task_uid)
            .or_else(|| old.task(before.task_uid));
        let old_task = old.task(current.task_uid);
        let new_task = tasks.iter().find(|t| t.uid == file.task_uid);

        let mut result = current.clone();
        result.task_uid = file.task_uid;
        result.resource_uid = file.resource_uid;
        let mut taken = BTreeSet::new();
        for field in AssignmentField::ALL {
            let in_file = value_of(file_task, &file, field);
            let in_base = value_of(base_task, before, field);
            if in_file == in_base {
                continue;
            }
            taken.insert(field);
            copy_field(&mut result, &file, field);
            let in_store = value_of(old_task, current, field);
            if in_store != in_base
                && in_store != in_file
                && let (Some(store), Some(file_value)) = (in_store, in_file)
            {
                overridden.push(FileOverride {
                    assignment: file.uid,
                    field,
                    status_update_value: store,
                    file_value,
                });
            }
        }
        if file.actual_finish != before.actual_finish {
            result.actual_finish = file.actual_finish;
        }
        // Mixed only if a work field kept from the store differs from the file's.
        let mixed = WORK_FIELDS
            .iter()
            .any(|f| !taken.contains(f) && !same_amount(&file, current, *f));
        if mixed {
            reconcile_work(&mut result, &taken);
        }

        let mut any = false;
        for field in AssignmentField::ALL {
            let was = value_of(old_task, current, field);
            let is = value_of(new_task, &result, field);
            if was != is {
                result.modified.touch(field, now);
                any = true;
                if let (Some(old_value), Some(new_value)) = (was, is) {
                    field_changes.push(ImportFieldChange {
                        assignment: result.uid,
                        field,
                        old: old_value,
                        new: new_value,
                    });
                }
            }
        }
        // A move to another task or resource, or a new address, is a change for the mailbox
        // side (the item moves) though no field time says so.
        let mailbox = |project_resources: &[Resource], uid| {
            project_resources
                .iter()
                .find(|r| r.uid == uid)
                .and_then(|r| r.email.clone())
        };
        any |= current.task_uid != result.task_uid
            || current.resource_uid != result.resource_uid
            || current.actual_finish != result.actual_finish
            || mailbox(&old.resources, current.resource_uid)
                != mailbox(&resources, result.resource_uid)
            || old_task.is_some_and(|t| t.summary) != new_task.is_some_and(|t| t.summary);
        if any {
            changed.push(result.uid);
        } else {
            unchanged += 1;
        }
        *assignment = result;
    }
    let kept: HashSet<AssignmentUid> = new.assignments.iter().map(|a| a.uid).collect();
    let removed = old
        .assignments
        .iter()
        .map(|a| a.uid)
        .filter(|uid| !kept.contains(uid))
        .collect();
    Merge {
        project: new,
        added,
        changed,
        removed,
        unchanged,
        field_changes,
        overridden,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::pm::import::{ImportOptions, import_str};
    use crate::pm::model::Work;

    const BASE: &str = r#"{"guid": "11111111-2222-4333-8444-555555555555", "name": "p",
      "tasks": [
        {"uid": 1, "name": "One", "start": "2026-03-02T08:00", "finish": "2026-03-02T17:00"},
        {"uid": 2, "name": "Two", "start": "2026-03-03T08:00", "finish": "2026-03-03T17:00"}],
      "resources": [{"uid": 1, "name": "Ann", "email": "ann@example.com"},
                    {"uid": 2, "name": "Bob", "email": "bob@example.com"}],
      "assignments": [
        {"uid": 1, "task_uid": 1, "resource_uid": 1, "work": "PT8H"},
        {"uid": 2, "task_uid": 2, "resource_uid": 1, "work": "PT8H"},
        {"uid": 3, "task_uid": 2, "resource_uid": 2, "work": "PT8H"}]}"#;

    fn parse(text: &str) -> Project {
        import_str(text, &ImportOptions::default()).expect("valid test project")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 9, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn merge_import_first_time_adds_everything_without_times() {
        let merge = merge_import(None, None, parse(BASE), now());
        assert_eq!(merge.added.len(), 3);
        assert!(
            merge
                .project
                .assignments
                .iter()
                .all(|a| a.modified.iter().next().is_none())
        );
    }

    #[test]
    fn merge_import_same_file_changes_nothing() {
        let old = parse(BASE);
        let merge = merge_import(Some(&old), None, parse(BASE), now());
        assert_eq!(
            (merge.added.len(), merge.changed.len(), merge.removed.len()),
            (0, 0, 0)
        );
        assert_eq!(merge.unchanged, 3);
        assert_eq!(merge.project, old);
    }

    #[test]
    fn merge_import_changes_stamp_changed_fields_only() {
        let mut old = parse(BASE);
        let earlier = now() - chrono::TimeDelta::days(1);
        old.assignments[1]
            .modified
            .set(AssignmentField::Notes, earlier);
        let new_text = BASE
            .replace(r#""name": "Two""#, r#""name": "Two (renamed)""#)
            .replace(
                r#"{"uid": 1, "task_uid": 1, "resource_uid": 1, "work": "PT8H"},"#,
                r#"{"uid": 1, "task_uid": 1, "resource_uid": 1, "work": "PT10H"},
                   {"uid": 4, "task_uid": 1, "resource_uid": 2, "work": "PT1H"},"#,
            )
            .replace(
                r#",
        {"uid": 3, "task_uid": 2, "resource_uid": 2, "work": "PT8H"}"#,
                "",
            );
        let merge = merge_import(Some(&old), None, parse(&new_text), now());
        assert_eq!(merge.added, vec![AssignmentUid(4)]);
        assert_eq!(merge.changed, vec![AssignmentUid(1), AssignmentUid(2)]);
        assert_eq!(merge.removed, vec![AssignmentUid(3)]);
        assert_eq!(merge.unchanged, 0);
        let a1 = merge.project.assignment(AssignmentUid(1)).expect("a1");
        assert_eq!(a1.work, Work::from_hours(10));
        let stamped: Vec<_> = a1.modified.iter().map(|(f, _)| f).collect();
        assert_eq!(
            stamped,
            vec![AssignmentField::Work, AssignmentField::RemainingWork]
        );
        let a2 = merge.project.assignment(AssignmentUid(2)).expect("a2");
        assert_eq!(a2.modified.get(AssignmentField::Name), Some(now()));
        // An unchanged field keeps its stored time.
        assert_eq!(a2.modified.get(AssignmentField::Notes), Some(earlier));
        let a4 = merge.project.assignment(AssignmentUid(4)).expect("a4");
        assert!(a4.modified.iter().next().is_none());
    }

    #[test]
    fn merge_import_new_mailbox_counts_as_changed_without_field_times() {
        let old = parse(BASE);
        let new_text = BASE.replace("ann@example.com", "ann.smith@example.com");
        let merge = merge_import(Some(&old), None, parse(&new_text), now());
        assert_eq!(merge.changed, vec![AssignmentUid(1), AssignmentUid(2)]);
        assert!(
            merge
                .project
                .assignments
                .iter()
                .all(|a| a.modified.iter().next().is_none())
        );
    }
}
