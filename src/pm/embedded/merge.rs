//! Re-importing a project over the stored one: pure, no I/O.
//!
//! A file carries no modification times, so they come from the comparison: a field whose value
//! differs from the stored one is stamped `now`; an unchanged field keeps its stored time; an
//! assignment new to the store starts with the times the file gave (none), as on a first import.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::apply::field_value;
use crate::pm::model::{Assignment, AssignmentField, AssignmentUid, Project, Resource};

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
}

/// Merges `new` (fresh from a file) over `old` (the stored project, if any).
pub(crate) fn merge_import(old: Option<&Project>, mut new: Project, now: DateTime<Utc>) -> Merge {
    let Some(old) = old else {
        let added = new.assignments.iter().map(|a| a.uid).collect();
        return Merge {
            project: new,
            added,
            changed: Vec::new(),
            removed: Vec::new(),
            unchanged: 0,
        };
    };
    let old_by_uid: HashMap<AssignmentUid, &Assignment> =
        old.assignments.iter().map(|a| (a.uid, a)).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    // Compare against the new project's tasks and resources while assignments are updated.
    let tasks = new.tasks.clone();
    let resources = new.resources.clone();
    for assignment in &mut new.assignments {
        let Some(before) = old_by_uid.get(&assignment.uid) else {
            added.push(assignment.uid);
            continue;
        };
        assignment.modified = before.modified.clone();
        let old_task = old.task(before.task_uid);
        let new_task = tasks.iter().find(|t| t.uid == assignment.task_uid);
        let mut any = false;
        for field in AssignmentField::ALL {
            let differs = match (old_task, new_task) {
                (Some(ot), Some(nt)) => {
                    field_value(ot, before, field) != field_value(nt, assignment, field)
                }
                // The importer guarantees the task exists; a missing one counts as a change.
                _ => true,
            };
            if differs {
                assignment.modified.touch(field, now);
                any = true;
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
        any |= before.task_uid != assignment.task_uid
            || before.resource_uid != assignment.resource_uid
            || before.actual_finish != assignment.actual_finish
            || mailbox(&old.resources, before.resource_uid)
                != mailbox(&resources, assignment.resource_uid)
            || old_task.is_some_and(|t| t.summary) != new_task.is_some_and(|t| t.summary);
        if any {
            changed.push(assignment.uid);
        } else {
            unchanged += 1;
        }
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
        let merge = merge_import(None, parse(BASE), now());
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
        let merge = merge_import(Some(&old), parse(BASE), now());
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
        let merge = merge_import(Some(&old), parse(&new_text), now());
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
        let merge = merge_import(Some(&old), parse(&new_text), now());
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
