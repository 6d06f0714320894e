//! Applying a status update's values to a project, as a PM tool would: pure, no I/O.
//!
//! The rules follow Microsoft Project's meaning (work = actual + remaining; % work complete =
//! actual / work), in the order they run (`docs/MAPPING.md` has the table of cases):
//! 1. Start and finish take the new dates; a finish before the start is refused.
//! 2. Name, notes and priority belong to the task, so they change for every assignment of it.
//! 3. Work: `work = max(new, actual)` (a PM tool never lets planned work fall below the work
//!    already done), and `remaining = work - actual`.
//! 4. Actual work, as typed: [`Assignment::apply_actual_work`] (`remaining = work - actual`;
//!    work is raised when the actual exceeds it). This is the only rule that lowers actual work.
//! 5. Remaining work: `work = actual + remaining`.
//! 6. Percent work complete, unless the update also gives remaining work:
//!    - 100 % closes the remaining work: with actual work in the same update, the work becomes
//!      that actual work (the reported hours were all there was); without, the actual work
//!      becomes the work.
//!    - 0 < p < 100 with actual work in the same update: the actual work stands as typed and the
//!      remaining work is re-estimated so that the percent holds.
//!    - 0 < p < 100 alone: actual work becomes p of the work when that is at least the work
//!      already done; otherwise the actual work is kept and the remaining work re-estimated so
//!      that the percent holds.
//!    - 0 % with no work done: nothing done, all remaining. 0 % with work done (what Exchange
//!      sends when a task leaves Completed) cannot hold without lowering actual work, so the
//!      actual work is kept; an assignment that was complete is reopened at 99 % (remaining work
//!      re-estimated), one that was not keeps its values.
//! 7. Reaching 100 % sets the actual finish to the completion date the mailbox reported, else
//!    to the assignment's finish (as Microsoft Project does when a task is marked complete);
//!    falling below 100 % clears it.
//! 8. The task's work moves by the assignment's change of work, and the task's percent complete
//!    is recomputed over its assignments.
//!
//! Every field whose value changed is stamped with `now` in [`Assignment::modified`].

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::pm::host::{FieldChange, FieldValue};
use crate::pm::model::{
    Assignment, AssignmentField, AssignmentUid, Percent, Project, Task, TaskUid, Work, percent_of,
};

/// Why a status update cannot be applied. Its `Display` is the rejection reason stored with the
/// update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The update changes nothing.
    #[error("the update has no changes")]
    NoChanges,
    /// One field appears twice.
    #[error("field {0:?} appears more than once")]
    DuplicateField(AssignmentField),
    /// A value of the wrong kind for its field (text for work, say).
    #[error("field {field:?} cannot take the value {value}")]
    WrongValue {
        /// The field.
        field: AssignmentField,
        /// The value given.
        value: FieldValue,
    },
    /// Negative work.
    #[error("field {field:?} must not be negative, got {work}")]
    NegativeWork {
        /// The field.
        field: AssignmentField,
        /// The value given.
        work: Work,
    },
    /// A priority above 1000.
    #[error("priority {0} is outside 0..=1000")]
    PriorityOutOfRange(u16),
    /// The resulting finish is before the start.
    #[error("the finish {finish} would be before the start {start}")]
    FinishBeforeStart {
        /// The resulting start.
        start: NaiveDateTime,
        /// The resulting finish.
        finish: NaiveDateTime,
    },
    /// The assignment is not in the project.
    #[error("assignment {0} is not in the project")]
    UnknownAssignment(AssignmentUid),
    /// The assignment's task is not in the project.
    #[error("task {0} is not in the project")]
    UnknownTask(TaskUid),
}

/// What applying an update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Per assignment whose values changed (the updated one, and for a task-level field every
    /// assignment of the task), the fields that changed, in [`AssignmentField::ALL`] order.
    pub fields: Vec<(AssignmentUid, Vec<AssignmentField>)>,
    /// Whether the task itself changed (its name, notes, priority, work or percent).
    pub task_changed: bool,
}

impl Applied {
    /// Whether assignments other than `uid` changed (a task-level field did).
    pub fn touches_others(&self, uid: AssignmentUid) -> bool {
        self.fields.iter().any(|(other, _)| *other != uid)
    }
}

/// The value `field` has for `assignment`, reading task-level fields from `task`.
pub fn field_value(task: &Task, assignment: &Assignment, field: AssignmentField) -> FieldValue {
    match field {
        AssignmentField::Start => FieldValue::DateTime(assignment.start),
        AssignmentField::Finish => FieldValue::DateTime(assignment.finish),
        AssignmentField::Work => FieldValue::Work(assignment.work),
        AssignmentField::ActualWork => FieldValue::Work(assignment.actual_work),
        AssignmentField::RemainingWork => FieldValue::Work(assignment.remaining_work),
        AssignmentField::PercentWorkComplete => {
            FieldValue::Percent(assignment.percent_work_complete)
        }
        AssignmentField::Name => FieldValue::Text(task.name.clone()),
        AssignmentField::Notes => FieldValue::Text(task.notes.clone()),
        AssignmentField::Priority => FieldValue::Priority(task.priority),
    }
}

/// Whether `field` belongs to the task rather than to the assignment.
pub(crate) fn is_task_field(field: AssignmentField) -> bool {
    matches!(
        field,
        AssignmentField::Name | AssignmentField::Notes | AssignmentField::Priority
    )
}

/// The typed new values of an update, each at most once.
#[derive(Default)]
struct NewValues {
    start: Option<NaiveDateTime>,
    finish: Option<NaiveDateTime>,
    work: Option<Work>,
    actual: Option<Work>,
    remaining: Option<Work>,
    percent: Option<Percent>,
    name: Option<String>,
    notes: Option<String>,
    priority: Option<u16>,
}

impl NewValues {
    fn read(changes: &[FieldChange]) -> Result<NewValues, ApplyError> {
        if changes.is_empty() {
            return Err(ApplyError::NoChanges);
        }
        let mut values = NewValues::default();
        let mut seen = Vec::with_capacity(changes.len());
        for change in changes {
            let field = change.field;
            if seen.contains(&field) {
                return Err(ApplyError::DuplicateField(field));
            }
            seen.push(field);
            let wrong = || ApplyError::WrongValue {
                field,
                value: change.new.clone(),
            };
            let work = |value: &FieldValue| match value {
                FieldValue::Work(w) if *w < Work::ZERO => {
                    Err(ApplyError::NegativeWork { field, work: *w })
                }
                FieldValue::Work(w) => Ok(Some(*w)),
                _ => Err(wrong()),
            };
            match (field, &change.new) {
                (AssignmentField::Start, FieldValue::DateTime(d)) => values.start = Some(*d),
                (AssignmentField::Finish, FieldValue::DateTime(d)) => values.finish = Some(*d),
                (AssignmentField::Work, v) => values.work = work(v)?,
                (AssignmentField::ActualWork, v) => values.actual = work(v)?,
                (AssignmentField::RemainingWork, v) => values.remaining = work(v)?,
                (AssignmentField::PercentWorkComplete, FieldValue::Percent(p)) => {
                    values.percent = Some(*p);
                }
                (AssignmentField::Name, FieldValue::Text(t)) => values.name = Some(t.clone()),
                (AssignmentField::Notes, FieldValue::Text(t)) => values.notes = Some(t.clone()),
                (AssignmentField::Priority, FieldValue::Priority(p)) => {
                    if *p > Task::MAX_PRIORITY {
                        return Err(ApplyError::PriorityOutOfRange(*p));
                    }
                    values.priority = Some(*p);
                }
                _ => return Err(wrong()),
            }
        }
        Ok(values)
    }
}

/// Applies `changes` to assignment `uid` of `project` (see the module doc for the rules) and
/// stamps the changed fields with `now`. On error the project is left as it was.
pub fn apply_changes(
    project: &mut Project,
    uid: AssignmentUid,
    changes: &[FieldChange],
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    apply_update(project, uid, changes, None, now)
}

/// [`apply_changes`] with the completion date the mailbox reported (`completed_on`, a
/// project-local date-time), which becomes the actual finish when the update completes the
/// assignment.
pub fn apply_update(
    project: &mut Project,
    uid: AssignmentUid,
    changes: &[FieldChange],
    completed_on: Option<NaiveDateTime>,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let new = NewValues::read(changes)?;
    let index = project
        .assignments
        .iter()
        .position(|a| a.uid == uid)
        .ok_or(ApplyError::UnknownAssignment(uid))?;
    let before = project.assignments[index].clone();
    let task_index = project
        .tasks
        .iter()
        .position(|t| t.uid == before.task_uid)
        .ok_or(ApplyError::UnknownTask(before.task_uid))?;
    let task_before = project.tasks[task_index].clone();

    let mut a = before.clone();
    let mut task = task_before.clone();

    // 1. Dates.
    a.start = new.start.unwrap_or(a.start);
    a.finish = new.finish.unwrap_or(a.finish);
    if a.finish < a.start {
        return Err(ApplyError::FinishBeforeStart {
            start: a.start,
            finish: a.finish,
        });
    }
    // 2. Task-level fields.
    task.name = new.name.unwrap_or(task.name);
    task.notes = new.notes.unwrap_or(task.notes);
    task.priority = new.priority.unwrap_or(task.priority);
    // 3. Work.
    if let Some(work) = new.work {
        a.work = work.max(a.actual_work);
        a.remaining_work = a.work.saturating_sub(a.actual_work);
        recompute_percent(&mut a);
    }
    // 4. Actual work. Negative values were refused while reading.
    if let Some(actual) = new.actual {
        a.apply_actual_work(actual)
            .map_err(|_| ApplyError::NegativeWork {
                field: AssignmentField::ActualWork,
                work: actual,
            })?;
    }
    // 5. Remaining work.
    if let Some(remaining) = new.remaining {
        a.work = a.actual_work.saturating_add(remaining);
        a.remaining_work = remaining;
        recompute_percent(&mut a);
    }
    // 6. Percent.
    let done = new.percent == Some(Percent::FULL);
    if done {
        if new.actual.is_some() {
            a.work = a.actual_work;
            a.remaining_work = Work::ZERO;
            a.percent_work_complete = Percent::FULL;
        } else {
            // The actual work never exceeds the work, so this never lowers it.
            a.apply_percent(Percent::FULL);
        }
    } else if new.remaining.is_none()
        && let Some(percent) = new.percent
    {
        apply_percent_keeping_actual(&mut a, percent, new.actual.is_some());
    }
    // 7. Actual finish. Only a change to 100 % (or an explicit 100 %) sets it, so that an
    // unrelated update of an assignment imported as complete does not invent one.
    if a.percent_work_complete == Percent::FULL {
        if done && let Some(on) = completed_on {
            a.actual_finish = Some(on);
        } else if a.actual_finish.is_none()
            && (before.percent_work_complete != Percent::FULL || done)
        {
            a.actual_finish = Some(a.finish);
        }
    } else {
        a.actual_finish = None;
    }
    // 8. Task roll-up.
    task.work = task
        .work
        .saturating_add(a.work.saturating_sub(before.work))
        .max(Work::ZERO);
    project.assignments[index] = a;
    let (actual_sum, work_sum) = project
        .assignments
        .iter()
        .filter(|other| other.task_uid == task.uid)
        .fold((Work::ZERO, Work::ZERO), |(actual, work), other| {
            (
                actual.saturating_add(other.actual_work),
                work.saturating_add(other.work),
            )
        });
    if !work_sum.is_zero() {
        task.percent_work_complete = percent_of(actual_sum, work_sum);
    }
    let task_changed = task != task_before;
    project.tasks[task_index] = task;

    // Stamp what changed.
    let task = &project.tasks[task_index];
    let mut applied = Applied {
        fields: Vec::new(),
        task_changed,
    };
    for other in project.assignments.iter_mut() {
        let own = other.uid == uid;
        if !own && other.task_uid != task.uid {
            continue;
        }
        let fields: Vec<AssignmentField> = AssignmentField::ALL
            .into_iter()
            .filter(|field| {
                let previous = if own {
                    field_value(&task_before, &before, *field)
                } else if is_task_field(*field) {
                    field_value(&task_before, other, *field)
                } else {
                    return false;
                };
                previous != field_value(task, other, *field)
            })
            .collect();
        if fields.is_empty() {
            continue;
        }
        for field in &fields {
            other.modified.touch(*field, now);
        }
        applied.fields.push((other.uid, fields));
    }
    Ok(applied)
}

/// Rule 6 for a percent below 100: never lowers actual work (see the module doc).
/// `actual_typed` says whether the same update gave the actual work.
fn apply_percent_keeping_actual(a: &mut Assignment, percent: Percent, actual_typed: bool) {
    let p = i128::from(percent.get());
    let actual = i128::from(a.actual_work.seconds().max(0));
    let work = i128::from(a.work.seconds().max(0));
    if actual == 0 {
        if !actual_typed {
            a.apply_percent(percent);
        }
        // Typed as no work done: the percent follows from that.
        return;
    }
    let hold = if p == 0 {
        if !a.remaining_work.is_zero() {
            // Work is done and some is left: both stand, the percent follows from them.
            recompute_percent(a);
            return;
        }
        // A complete assignment reopened: as close to the 0 % as the work done allows.
        99
    } else if !actual_typed && (work * p + 50) / 100 >= actual {
        // Percent of the planned work, at least what is done (Microsoft Project's rule).
        a.apply_percent(percent);
        return;
    } else {
        p
    };
    // Remaining work such that actual / (actual + remaining) is the percent, to the second.
    let remaining = ((actual * (100 - hold) * 2 + hold) / (hold * 2)).max(1);
    let remaining = Work::from_seconds(i64::try_from(remaining).unwrap_or(i64::MAX));
    a.remaining_work = remaining;
    a.work = a.actual_work.saturating_add(remaining);
    recompute_percent(a);
}

/// Percent from actual and work, unless there is no work to take a ratio of.
fn recompute_percent(a: &mut Assignment) {
    if !a.work.is_zero() {
        a.percent_work_complete = percent_of(a.actual_work, a.work);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use chrono_tz::Tz;

    use super::*;
    use crate::pm::model::{FieldTimes, ProjectGuid, Resource, ResourceUid};

    fn at(d: u32, h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 3, d)
            .and_then(|date| date.and_hms_opt(h, 0, 0))
            .expect("valid date")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid")
    }

    /// Task 1 with two assignments (1: Ann, 2: Bob), task 2 with assignment 3, `work` seconds
    /// each.
    fn project(work: Work) -> Project {
        let task = |uid| Task {
            uid: TaskUid(uid),
            name: format!("task {uid}"),
            notes: String::new(),
            start: at(2, 8),
            finish: at(6, 17),
            work: Work::from_seconds(work.seconds() * 2),
            priority: Task::DEFAULT_PRIORITY,
            percent_work_complete: Percent::ZERO,
            summary: false,
            milestone: false,
            outline_level: 1,
        };
        let assignment = |uid, task| Assignment {
            uid: AssignmentUid(uid),
            task_uid: TaskUid(task),
            resource_uid: ResourceUid(uid),
            start: at(2, 8),
            finish: at(6, 17),
            work,
            actual_work: Work::ZERO,
            remaining_work: work,
            percent_work_complete: Percent::ZERO,
            actual_finish: None,
            modified: FieldTimes::new(),
        };
        Project {
            guid: ProjectGuid(uuid::Uuid::nil()),
            name: "p".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![task(1), task(2)],
            resources: (1..=3)
                .map(|uid| Resource {
                    uid: ResourceUid(uid),
                    name: format!("r{uid}"),
                    email: Some(format!("r{uid}@example.com")),
                    time_zone: None,
                })
                .collect(),
            assignments: vec![assignment(1, 1), assignment(2, 1), assignment(3, 2)],
        }
    }

    fn change(field: AssignmentField, new: FieldValue) -> FieldChange {
        // `old` is informational for the host; these tests do not look at it.
        FieldChange {
            field,
            old: new.clone(),
            new,
        }
    }

    fn percent(p: u8) -> FieldValue {
        FieldValue::Percent(Percent::new(p).expect("in range"))
    }

    fn hours(h: i64) -> FieldValue {
        FieldValue::Work(Work::from_hours(h))
    }

    fn minutes(m: i64) -> FieldValue {
        FieldValue::Work(Work::from_minutes(m))
    }

    fn a1(p: &Project) -> &Assignment {
        p.assignment(AssignmentUid(1)).expect("assignment 1")
    }

    /// (work, actual, remaining in minutes, percent, actual finish set?)
    type Shape = (i64, i64, i64, u8, bool);

    fn shape(a: &Assignment) -> Shape {
        (
            a.work.seconds() / 60,
            a.actual_work.seconds() / 60,
            a.remaining_work.seconds() / 60,
            a.percent_work_complete.get(),
            a.actual_finish.is_some(),
        )
    }

    #[test]
    fn apply_changes_work_arithmetic_table() {
        use AssignmentField::{ActualWork, PercentWorkComplete, RemainingWork};
        // (planned work in minutes, changes, expected (work, actual, remaining, %, finished) in
        // minutes)
        let rows: Vec<(i64, Vec<FieldChange>, Shape)> = vec![
            // Outlook's "% complete" on a 7.5 h assignment: half of 450 minutes.
            (
                450,
                vec![change(PercentWorkComplete, percent(50))],
                (450, 225, 225, 50, false),
            ),
            // "Mark complete" on 7.5 h: all work done, actual finish set.
            (
                450,
                vec![change(PercentWorkComplete, percent(100))],
                (450, 450, 0, 100, true),
            ),
            // Hours reported: 3 of 7.5 h is 40 %.
            (
                450,
                vec![change(ActualWork, hours(3))],
                (450, 180, 270, 40, false),
            ),
            // More hours than planned raise the work and complete the assignment.
            (
                450,
                vec![change(ActualWork, hours(9))],
                (540, 540, 0, 100, true),
            ),
            // Hours and percent together: the hours as typed, remaining work re-estimated so
            // that the percent holds (2 h is 90 %: 13 min 20 s left).
            (
                480,
                vec![
                    change(ActualWork, hours(2)),
                    change(PercentWorkComplete, percent(90)),
                ],
                (133, 120, 13, 90, false),
            ),
            // Hours lowered explicitly with a percent: the only way actual work goes down.
            (
                480,
                vec![
                    change(ActualWork, minutes(0)),
                    change(PercentWorkComplete, percent(0)),
                ],
                (480, 0, 480, 0, false),
            ),
            // Hours with 100 %: the reported hours were all the work there was.
            (
                480,
                vec![
                    change(ActualWork, hours(6)),
                    change(PercentWorkComplete, percent(100)),
                ],
                (360, 360, 0, 100, true),
            ),
            // Total work changed in the mailbox: remaining follows.
            (
                480,
                vec![change(AssignmentField::Work, hours(10))],
                (600, 0, 600, 0, false),
            ),
            // Remaining work reported: work = actual + remaining.
            (
                480,
                vec![
                    change(ActualWork, hours(2)),
                    change(RemainingWork, hours(1)),
                ],
                (180, 120, 60, 67, false),
            ),
            // A milestone (no work) marked complete: only the percent and the actual finish.
            (
                0,
                vec![change(PercentWorkComplete, percent(100))],
                (0, 0, 0, 100, true),
            ),
            // A milestone reopened.
            (
                0,
                vec![change(PercentWorkComplete, percent(0))],
                (0, 0, 0, 0, false),
            ),
            // Zero work with hours reported: the hours become the work.
            (
                0,
                vec![change(ActualWork, minutes(30))],
                (30, 30, 0, 100, true),
            ),
        ];
        for (i, (work, changes, expected)) in rows.into_iter().enumerate() {
            let mut p = project(Work::from_minutes(work));
            apply_changes(&mut p, AssignmentUid(1), &changes, now())
                .unwrap_or_else(|e| panic!("row {i}: {e}"));
            let a = a1(&p);
            assert_eq!(shape(a), expected, "row {i}");
            assert_eq!(
                a.actual_work.saturating_add(a.remaining_work),
                a.work,
                "row {i}: actual + remaining = work"
            );
        }
    }

    #[test]
    fn apply_changes_full_percent_sets_actual_finish_to_finish() {
        let mut p = project(Work::from_hours(8));
        let changes = [
            change(AssignmentField::Finish, FieldValue::DateTime(at(5, 12))),
            change(AssignmentField::PercentWorkComplete, percent(100)),
        ];
        apply_changes(&mut p, AssignmentUid(1), &changes, now()).expect("applies");
        assert_eq!(a1(&p).actual_finish, Some(at(5, 12)));
        // Reopening at 80 % clears it and keeps the 8 h done: 2 h are left.
        let reopen = [change(AssignmentField::PercentWorkComplete, percent(80))];
        apply_changes(&mut p, AssignmentUid(1), &reopen, now()).expect("applies");
        assert_eq!(a1(&p).actual_finish, None);
        assert_eq!(shape(a1(&p)), (600, 480, 120, 80, false));
    }

    #[test]
    fn apply_changes_reopen_at_zero_percent_keeps_actual_work() {
        // Exchange sends 0 % when a task leaves Completed.
        let mut p = project(Work::from_hours(8));
        let pct = |v| [change(AssignmentField::PercentWorkComplete, percent(v))];
        apply_changes(&mut p, AssignmentUid(1), &pct(100), now()).expect("applies");
        apply_changes(&mut p, AssignmentUid(1), &pct(0), now()).expect("applies");
        let a = a1(&p);
        assert_eq!(a.actual_work, Work::from_hours(8));
        assert_eq!(a.percent_work_complete.get(), 99);
        assert_eq!(a.actual_finish, None);
        // 0 % on an assignment in progress: both stand.
        let mut p = project(Work::from_hours(8));
        apply_changes(&mut p, AssignmentUid(1), &pct(50), now()).expect("applies");
        apply_changes(&mut p, AssignmentUid(1), &pct(0), now()).expect("applies");
        assert_eq!(shape(a1(&p)), (480, 240, 240, 50, false));
        // A lower percent keeps the work done and re-estimates what is left.
        apply_changes(&mut p, AssignmentUid(1), &pct(20), now()).expect("applies");
        assert_eq!(shape(a1(&p)), (1200, 240, 960, 20, false));
    }

    #[test]
    fn apply_update_completion_date_becomes_the_actual_finish() {
        let mut p = project(Work::from_hours(8));
        let done = [change(AssignmentField::PercentWorkComplete, percent(100))];
        apply_update(&mut p, AssignmentUid(1), &done, Some(at(5, 17)), now()).expect("applies");
        assert_eq!(a1(&p).actual_finish, Some(at(5, 17)));
    }

    #[test]
    fn apply_changes_unrelated_update_of_complete_assignment_keeps_actual_finish_unset() {
        let mut p = project(Work::from_hours(8));
        p.assignments[0].apply_percent(Percent::FULL);
        let changes = [change(
            AssignmentField::Name,
            FieldValue::Text("renamed".into()),
        )];
        apply_changes(&mut p, AssignmentUid(1), &changes, now()).expect("applies");
        assert_eq!(a1(&p).actual_finish, None);
    }

    #[test]
    fn apply_changes_stamps_only_changed_fields() {
        let mut p = project(Work::from_hours(8));
        let applied = apply_changes(
            &mut p,
            AssignmentUid(1),
            &[change(AssignmentField::PercentWorkComplete, percent(25))],
            now(),
        )
        .expect("applies");
        use AssignmentField::{ActualWork, PercentWorkComplete, RemainingWork};
        assert_eq!(
            applied.fields,
            vec![(
                AssignmentUid(1),
                vec![ActualWork, RemainingWork, PercentWorkComplete]
            )]
        );
        let a = a1(&p);
        assert_eq!(a.modified.get(ActualWork), Some(now()));
        assert_eq!(a.modified.get(AssignmentField::Work), None);
        assert!(!applied.touches_others(AssignmentUid(1)));
    }

    #[test]
    fn apply_changes_task_field_touches_every_assignment_of_the_task() {
        let mut p = project(Work::from_hours(8));
        let applied = apply_changes(
            &mut p,
            AssignmentUid(1),
            &[change(
                AssignmentField::Name,
                FieldValue::Text("Café".into()),
            )],
            now(),
        )
        .expect("applies");
        assert_eq!(
            applied.fields,
            vec![
                (AssignmentUid(1), vec![AssignmentField::Name]),
                (AssignmentUid(2), vec![AssignmentField::Name]),
            ]
        );
        assert!(applied.task_changed);
        assert!(applied.touches_others(AssignmentUid(1)));
        assert_eq!(p.tasks[0].name, "Café");
        let a2 = p.assignment(AssignmentUid(2)).expect("a2");
        assert_eq!(a2.modified.get(AssignmentField::Name), Some(now()));
        let a3 = p.assignment(AssignmentUid(3)).expect("a3");
        assert_eq!(a3.modified.get(AssignmentField::Name), None);
    }

    #[test]
    fn apply_changes_rolls_work_and_percent_up_to_the_task() {
        let mut p = project(Work::from_hours(8));
        apply_changes(
            &mut p,
            AssignmentUid(1),
            &[change(AssignmentField::ActualWork, hours(10))],
            now(),
        )
        .expect("applies");
        // Task work 16 h + 2 h; 10 h of 18 h done.
        assert_eq!(p.tasks[0].work, Work::from_hours(18));
        assert_eq!(p.tasks[0].percent_work_complete.get(), 56);
    }

    #[test]
    fn apply_changes_invalid_updates_are_refused_and_change_nothing() {
        use AssignmentField::{ActualWork, Finish, PercentWorkComplete, Priority};
        type Check = fn(&ApplyError) -> bool;
        let cases: Vec<(Vec<FieldChange>, Check)> = vec![
            (vec![], |e| matches!(e, ApplyError::NoChanges)),
            (
                vec![change(AssignmentField::Work, FieldValue::Text("8h".into()))],
                |e| {
                    matches!(
                        e,
                        ApplyError::WrongValue {
                            field: AssignmentField::Work,
                            ..
                        }
                    )
                },
            ),
            (vec![change(ActualWork, hours(-1))], |e| {
                matches!(e, ApplyError::NegativeWork { .. })
            }),
            (
                vec![
                    change(PercentWorkComplete, percent(10)),
                    change(PercentWorkComplete, percent(20)),
                ],
                |e| matches!(e, ApplyError::DuplicateField(PercentWorkComplete)),
            ),
            (vec![change(Priority, FieldValue::Priority(1001))], |e| {
                matches!(e, ApplyError::PriorityOutOfRange(1001))
            }),
            (vec![change(Finish, FieldValue::DateTime(at(1, 8)))], |e| {
                matches!(e, ApplyError::FinishBeforeStart { .. })
            }),
        ];
        for (i, (changes, expected)) in cases.into_iter().enumerate() {
            let mut p = project(Work::from_hours(8));
            let before = p.clone();
            let err = apply_changes(&mut p, AssignmentUid(1), &changes, now())
                .expect_err("must be refused");
            assert!(expected(&err), "case {i}: {err:?}");
            assert_eq!(p, before, "case {i}");
        }
        let mut p = project(Work::from_hours(8));
        assert_eq!(
            apply_changes(
                &mut p,
                AssignmentUid(99),
                &[change(PercentWorkComplete, percent(10))],
                now()
            ),
            Err(ApplyError::UnknownAssignment(AssignmentUid(99)))
        );
    }

    proptest::proptest! {
        #[test]
        fn apply_changes_keeps_work_invariants(
            planned in 0i64..200 * 3600,
            done in 0i64..200 * 3600,
            work in proptest::option::of(0i64..200 * 3600),
            actual in proptest::option::of(0i64..200 * 3600),
            remaining in proptest::option::of(0i64..200 * 3600),
            percent in proptest::option::of(0u8..=100),
        ) {
            let mut p = project(Work::from_seconds(planned));
            p.assignments[0]
                .apply_actual_work(Work::from_seconds(done.min(planned)))
                .expect("non-negative");
            let mut changes = Vec::new();
            let seconds = |s| FieldValue::Work(Work::from_seconds(s));
            if let Some(w) = work {
                changes.push(change(AssignmentField::Work, seconds(w)));
            }
            if let Some(a) = actual {
                changes.push(change(AssignmentField::ActualWork, seconds(a)));
            }
            if let Some(r) = remaining {
                changes.push(change(AssignmentField::RemainingWork, seconds(r)));
            }
            if let Some(pc) = percent {
                changes.push(change(AssignmentField::PercentWorkComplete, FieldValue::Percent(
                    Percent::new(pc).expect("in range"),
                )));
            }
            proptest::prop_assume!(!changes.is_empty());
            apply_changes(&mut p, AssignmentUid(1), &changes, now()).expect("valid update");
            let a = a1(&p);
            proptest::prop_assert_eq!(a.actual_work.saturating_add(a.remaining_work), a.work);
            proptest::prop_assert!(a.actual_work >= Work::ZERO && a.remaining_work >= Work::ZERO);
            if !a.work.is_zero() {
                let full = a.percent_work_complete == Percent::FULL;
                proptest::prop_assert_eq!(full, a.remaining_work.is_zero());
                let none = a.percent_work_complete == Percent::ZERO;
                proptest::prop_assert_eq!(none, a.actual_work.is_zero());
            }
            if a.actual_finish.is_some() {
                proptest::prop_assert_eq!(a.percent_work_complete, Percent::FULL);
            }
            if percent == Some(100) {
                proptest::prop_assert!(a.remaining_work.is_zero());
                proptest::prop_assert_eq!(a.percent_work_complete, Percent::FULL);
            }
        }
    }

    #[test]
    fn apply_changes_work_below_actual_keeps_actual() {
        let mut p = project(Work::from_hours(8));
        p.assignments[0]
            .apply_actual_work(Work::from_hours(5))
            .expect("valid");
        apply_changes(
            &mut p,
            AssignmentUid(1),
            &[change(AssignmentField::Work, hours(3))],
            now(),
        )
        .expect("applies");
        assert_eq!(shape(a1(&p)), (300, 300, 0, 100, true));
    }
}
