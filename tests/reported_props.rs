//! The property behind "what people report is never lost": no sequence of mailbox edits
//! (percent, actual work, status transitions as Exchange applies them, Completed and reopened)
//! ever lowers the PM's actual work, except an explicit ActualWork edit.
//!
//! Each step plays the whole round the connector makes, without the network: the edit applied
//! to the item with Exchange's Status / PercentComplete / CompleteDate coupling (the
//! simulator's own), the item read by the mapping, the mailbox's changed fields turned into a
//! status update, the update applied by the embedded host's arithmetic, and the PM's values
//! written back to the item as the engine writes them.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use uuid::Uuid;

use taskbridge::ews::ops::update_item::ItemUpdate;
use taskbridge::ews::types::{Path, Task, TaskStatus, field_uri};
use taskbridge::mapping::{FieldTable, changed_fields, owner_zone};
use taskbridge::pm::embedded::apply_update;
use taskbridge::pm::{
    Assignment, AssignmentField, AssignmentUid, FieldTimes, FieldValue, Percent, Project,
    ProjectGuid, Resource, ResourceUid, Task as PmTask, TaskUid, UpdateSource, Work,
};
use taskbridge_sim::fields::{Coupled, couple};

/// What a person does to the task in Outlook.
#[derive(Clone, Debug)]
enum Edit {
    /// Types a percentage.
    Percent(u8),
    /// Types actual work, in minutes.
    Actual(i32),
    /// Types both in one edit.
    PercentAndActual(u8, i32),
    /// Picks a status (Completed, NotStarted, InProgress, WaitingOnOthers, Deferred).
    Status(TaskStatus),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0u8..=100).prop_map(Edit::Percent),
        (0i32..=1200).prop_map(Edit::Actual),
        ((0u8..=100), (0i32..=1200)).prop_map(|(p, a)| Edit::PercentAndActual(p, a)),
        prop_oneof![
            Just(TaskStatus::Completed),
            Just(TaskStatus::NotStarted),
            Just(TaskStatus::InProgress),
            Just(TaskStatus::WaitingOnOthers),
            Just(TaskStatus::Deferred),
        ]
        .prop_map(Edit::Status),
    ]
}

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, h, 0, 0)
        .single()
        .expect("valid")
}

fn project(work_hours: i64) -> Project {
    let day = |d, h| {
        NaiveDate::from_ymd_opt(2026, 3, d)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .expect("valid")
    };
    Project {
        guid: ProjectGuid(Uuid::from_u128(0x5e1f_0000_0000_4000_8000_0000_0000_0001)),
        name: "Apollo".into(),
        time_zone: chrono_tz::Europe::Berlin,
        minutes_per_day: 480,
        minutes_per_week: 2400,
        start: None,
        tasks: vec![PmTask {
            uid: TaskUid(1),
            name: "Design review".into(),
            notes: String::new(),
            start: day(2, 8),
            finish: day(6, 17),
            work: Work::from_hours(work_hours),
            priority: PmTask::DEFAULT_PRIORITY,
            percent_work_complete: Percent::ZERO,
            summary: false,
            milestone: false,
            outline_level: 1,
        }],
        resources: vec![Resource {
            uid: ResourceUid(1),
            name: "Ann".into(),
            email: Some("ann@example.com".into()),
            time_zone: None,
        }],
        assignments: vec![Assignment {
            uid: AssignmentUid(1),
            task_uid: TaskUid(1),
            resource_uid: ResourceUid(1),
            start: day(2, 8),
            finish: day(6, 17),
            work: Work::from_hours(work_hours),
            actual_work: Work::ZERO,
            remaining_work: Work::from_hours(work_hours),
            percent_work_complete: Percent::ZERO,
            modified: FieldTimes::new(),
            actual_finish: None,
        }],
    }
}

/// The engine's write of `updates` as Exchange applies it.
fn write_back(item: &mut Task, updates: &[ItemUpdate], now: DateTime<Utc>) {
    for update in updates {
        let ItemUpdate::SetItemField { path, item: value } = update else {
            continue;
        };
        let Path::FieldUri(uri) = path else { continue };
        let v = &value.fields;
        match uri.as_str() {
            field_uri::ACTUAL_WORK => item.actual_work = v.actual_work,
            field_uri::TOTAL_WORK => item.total_work = v.total_work,
            field_uri::PERCENT_COMPLETE => {
                item.percent_complete = v.percent_complete;
                couple(item, Coupled::PercentComplete, now);
            }
            _ => {}
        }
    }
}

fn source(n: usize) -> UpdateSource {
    UpdateSource {
        mailbox: "ann@example.com".into(),
        item_id: "AAMk1".into(),
        change_key: format!("CK{n}"),
        modified_at: at(9),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_mailbox_edit_lowers_actual_work_except_actual_work(
        work_hours in 0i64..=40,
        edits in proptest::collection::vec(edit(), 1..12),
    ) {
        let table = FieldTable::default();
        let mut project = project(work_hours);
        let zone: Tz = {
            let units = project.sync_units();
            owner_zone(&project, &units[0])
        };
        let now = at(10);
        let mut item = {
            let units = project.sync_units();
            let want = table.to_mail(&project, &units[0], zone);
            let mut item = table.new_task(&want, &units[0].key);
            couple(&mut item, Coupled::PercentComplete, now);
            item
        };
        for (n, e) in edits.iter().enumerate() {
            let before = project.assignments[0].actual_work;
            match e {
                Edit::Percent(p) => {
                    item.percent_complete = Some(f64::from(*p));
                    couple(&mut item, Coupled::PercentComplete, now);
                }
                Edit::Actual(m) => item.actual_work = Some(*m),
                Edit::PercentAndActual(p, m) => {
                    item.actual_work = Some(*m);
                    item.percent_complete = Some(f64::from(*p));
                    couple(&mut item, Coupled::PercentComplete, now);
                }
                Edit::Status(s) => {
                    item.status = Some(s.clone());
                    couple(&mut item, Coupled::Status, now);
                }
            }
            let observed = table.from_task(&item, zone);
            let update = {
                let units = project.sync_units();
                let want = table.to_mail(&project, &units[0], zone);
                let fields = changed_fields(&want, &observed);
                table
                    .status_update(&project, &units[0], zone, &observed, &fields, source(n))
                    .update
            };
            let mut explicit_actual = false;
            if let Some(update) = update {
                explicit_actual = update.changes.iter().any(|c| {
                    c.field == AssignmentField::ActualWork
                        && matches!(c.new, FieldValue::Work(w) if w < before)
                });
                apply_update(
                    &mut project,
                    AssignmentUid(1),
                    &update.changes,
                    update.completed_on,
                    now,
                )
                .map_err(|e| TestCaseError::fail(format!("{e} applying {update:?}")))?;
            }
            let after = project.assignments[0].actual_work;
            prop_assert!(
                explicit_actual || after >= before,
                "step {n} {e:?} lowered actual work {before:?} -> {after:?}"
            );
            let a = &project.assignments[0];
            prop_assert_eq!(a.actual_work.saturating_add(a.remaining_work), a.work);
            // The PM's values go back to the item.
            let units = project.sync_units();
            let want = table.to_mail(&project, &units[0], zone);
            write_back(&mut item, &table.updates(&observed, &want), now);
        }
    }
}
