//! Writing a project back out, MSPDI or taskbridge JSON, with the progress that came from the
//! mailboxes: per assignment its work, actual and remaining work, percent complete, actual start
//! and finish, rolled up to the tasks, the summary tasks and the project summary task as
//! Microsoft Project rolls them up (sums of work, percent from the sums, the earliest actual
//! start, the latest actual finish once everything below is finished).
//!
//! An MSPDI export of a project that came from an MSPDI file is that file with the changed
//! values written into it ([`mspdi::write_into`]): everything taskbridge does not model
//! (calendars, baselines, custom fields, links, timephased data, outline) stays as it was.

pub mod json;
pub mod mspdi;

use std::collections::HashMap;

use chrono::NaiveDateTime;

use super::model::{Assignment, Percent, Project, TaskUid, Work, percent_of};

/// The format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Microsoft Project XML.
    Mspdi,
    /// taskbridge JSON (docs/PROJECT-FORMAT.md).
    Json,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The document to write into is not well-formed MSPDI.
    #[error("the imported MSPDI document cannot be rewritten: {0}")]
    Document(String),
}

/// The progress values of one assignment as an export writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentActuals {
    /// Total work.
    pub work: Work,
    /// Work done.
    pub actual_work: Work,
    /// Work left.
    pub remaining_work: Work,
    /// Percent of work complete.
    pub percent_work_complete: Percent,
    /// When work started: the assignment's start once any work is reported (the model keeps no
    /// separate actual start, and Project sets it to the start when progress is first entered).
    pub actual_start: Option<NaiveDateTime>,
    /// When the work was finished.
    pub actual_finish: Option<NaiveDateTime>,
}

impl AssignmentActuals {
    /// The actuals of `a`.
    pub fn of(a: &Assignment) -> AssignmentActuals {
        let started = !a.actual_work.is_zero() || a.percent_work_complete.get() > 0;
        AssignmentActuals {
            work: a.work,
            actual_work: a.actual_work,
            remaining_work: a.remaining_work,
            percent_work_complete: a.percent_work_complete,
            actual_start: started.then_some(a.start),
            actual_finish: a.actual_finish,
        }
    }

    fn finished(&self) -> bool {
        self.actual_finish.is_some() || self.percent_work_complete == Percent::FULL
    }
}

/// The rolled-up values of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskActuals {
    /// Total work.
    pub work: Work,
    /// Work done.
    pub actual_work: Work,
    /// Work left.
    pub remaining_work: Work,
    /// Percent of work complete.
    pub percent_work_complete: Percent,
    /// The earliest actual start below.
    pub actual_start: Option<NaiveDateTime>,
    /// The latest actual finish below, once everything below is finished.
    pub actual_finish: Option<NaiveDateTime>,
}

/// Rolls the assignments' actuals up to every task that has assignments or subtasks.
///
/// A task with assignments sums them. A summary task sums the tasks of its outline (the tasks
/// after it with a deeper outline level, up to the next one at its level or above) that are not
/// summaries themselves; the project summary task (UID 0) sums every such task. A task with
/// neither assignments nor subtasks gets no entry: its own values stand.
pub fn roll_up(project: &Project) -> HashMap<TaskUid, TaskActuals> {
    let mut per_task: HashMap<TaskUid, Vec<AssignmentActuals>> = HashMap::new();
    for a in &project.assignments {
        per_task
            .entry(a.task_uid)
            .or_default()
            .push(AssignmentActuals::of(a));
    }
    let mut out = HashMap::new();
    // Leaf tasks first: a task with assignments sums them.
    let mut leaf: HashMap<TaskUid, TaskActuals> = HashMap::new();
    for task in project.tasks.iter().filter(|t| !t.summary && t.uid.0 != 0) {
        let Some(list) = per_task.get(&task.uid) else {
            // No assignments: the task's own work and percent.
            let actual = own_actual(task.work, task.percent_work_complete);
            leaf.insert(
                task.uid,
                TaskActuals {
                    work: task.work,
                    actual_work: actual,
                    remaining_work: task.work.saturating_sub(actual),
                    percent_work_complete: task.percent_work_complete,
                    actual_start: None,
                    actual_finish: None,
                },
            );
            continue;
        };
        let sum = sum(list.iter().map(|a| {
            (
                a.work,
                a.actual_work,
                a.remaining_work,
                a.actual_start,
                a.actual_finish,
                a.finished(),
            )
        }));
        out.insert(task.uid, sum);
        leaf.insert(task.uid, sum);
    }
    // Summary tasks: their outline's leaves.
    for (i, task) in project.tasks.iter().enumerate() {
        if !(task.summary || task.uid.0 == 0) {
            continue;
        }
        let below = project.tasks[i + 1..]
            .iter()
            .take_while(|t| task.uid.0 == 0 || t.outline_level > task.outline_level)
            .filter_map(|t| leaf.get(&t.uid));
        let list: Vec<&TaskActuals> = below.collect();
        if list.is_empty() {
            continue;
        }
        let sum = sum(list.iter().map(|t| {
            (
                t.work,
                t.actual_work,
                t.remaining_work,
                t.actual_start,
                t.actual_finish,
                t.actual_finish.is_some() || t.percent_work_complete == Percent::FULL,
            )
        }));
        out.insert(task.uid, sum);
    }
    out
}

/// A task's own actual work from its percent, for a task without assignments.
fn own_actual(work: Work, percent: Percent) -> Work {
    let seconds = i128::from(work.seconds().max(0)) * i128::from(percent.get());
    Work::from_seconds(i64::try_from((seconds + 50) / 100).unwrap_or(i64::MAX))
}

type Part = (
    Work,
    Work,
    Work,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    bool,
);

fn sum(parts: impl Iterator<Item = Part>) -> TaskActuals {
    let mut work = Work::ZERO;
    let mut actual = Work::ZERO;
    let mut remaining = Work::ZERO;
    let mut start: Option<NaiveDateTime> = None;
    let mut finish: Option<NaiveDateTime> = None;
    let mut all_finished = true;
    for (w, a, r, s, f, done) in parts {
        work = work.saturating_add(w);
        actual = actual.saturating_add(a);
        remaining = remaining.saturating_add(r);
        if let Some(s) = s {
            start = Some(start.map_or(s, |x| x.min(s)));
        }
        if let Some(f) = f {
            finish = Some(finish.map_or(f, |x| x.max(f)));
        }
        all_finished &= done;
    }
    TaskActuals {
        work,
        actual_work: actual,
        remaining_work: remaining,
        percent_work_complete: percent_of(actual, work),
        actual_start: start,
        actual_finish: if all_finished { finish } else { None },
    }
}

/// A zone-less local date as MSPDI and the JSON format write it.
pub(crate) fn local_date(at: NaiveDateTime) -> String {
    if at.and_utc().timestamp_subsec_nanos() == 0 {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pm::import::{ImportOptions, import_str};

    const PLAN: &str = r#"{"guid": "11111111-2222-4333-8444-555555555555", "name": "p",
      "tasks": [
        {"uid": 0, "name": "p", "summary": true, "outline_level": 0,
         "start": "2026-03-02T08:00", "finish": "2026-03-06T17:00", "work": "PT24H"},
        {"uid": 1, "name": "Phase", "summary": true, "outline_level": 1,
         "start": "2026-03-02T08:00", "finish": "2026-03-03T17:00", "work": "PT16H"},
        {"uid": 2, "name": "A", "outline_level": 2, "start": "2026-03-02T08:00",
         "finish": "2026-03-02T17:00", "work": "PT8H"},
        {"uid": 3, "name": "B", "outline_level": 2, "start": "2026-03-03T08:00",
         "finish": "2026-03-03T17:00", "work": "PT8H"},
        {"uid": 4, "name": "C", "outline_level": 1, "start": "2026-03-04T08:00",
         "finish": "2026-03-06T17:00", "work": "PT8H"}],
      "resources": [{"uid": 1, "name": "Ann", "email": "ann@example.com"},
                    {"uid": 2, "name": "Bob", "email": "bob@example.com"}],
      "assignments": [
        {"uid": 1, "task_uid": 2, "resource_uid": 1, "work": "PT4H", "actual_work": "PT4H",
         "actual_finish": "2026-03-02T12:00"},
        {"uid": 2, "task_uid": 2, "resource_uid": 2, "work": "PT4H", "actual_work": "PT1H"},
        {"uid": 3, "task_uid": 3, "resource_uid": 1, "work": "PT8H", "actual_work": "PT8H",
         "actual_finish": "2026-03-03T17:00"},
        {"uid": 4, "task_uid": 4, "resource_uid": 2, "work": "PT8H"}]}"#;

    #[test]
    fn roll_up_sums_assignments_then_outlines_as_project_does() {
        let project = import_str(PLAN, &ImportOptions::default()).expect("valid");
        let r = roll_up(&project);
        let a = r[&TaskUid(2)];
        assert_eq!(
            (a.work, a.actual_work, a.remaining_work),
            (
                Work::from_hours(8),
                Work::from_hours(5),
                Work::from_hours(3)
            )
        );
        assert_eq!(a.percent_work_complete.get(), 63);
        assert_eq!(
            a.actual_start.map(|d| d.to_string()).as_deref(),
            Some("2026-03-02 08:00:00")
        );
        // One of the two assignments is not finished: no actual finish for the task.
        assert_eq!(a.actual_finish, None);
        let b = r[&TaskUid(3)];
        assert_eq!(b.percent_work_complete, Percent::FULL);
        assert_eq!(
            b.actual_finish.map(|d| d.to_string()).as_deref(),
            Some("2026-03-03 17:00:00")
        );
        // The phase sums A and B; the project sums A, B and C.
        let phase = r[&TaskUid(1)];
        assert_eq!(
            (phase.work, phase.actual_work),
            (Work::from_hours(16), Work::from_hours(13))
        );
        assert_eq!(phase.percent_work_complete.get(), 81);
        assert_eq!(phase.actual_finish, None);
        let all = r[&TaskUid(0)];
        assert_eq!(
            (all.work, all.actual_work),
            (Work::from_hours(24), Work::from_hours(13))
        );
        assert_eq!(all.remaining_work, Work::from_hours(11));
        assert_eq!(all.percent_work_complete.get(), 54);
    }
}
