//! The mapping between PM assignments and Exchange tasks, end to end through the wire `Task`
//! type: one test per documented pitfall (docs/MAPPING.md, "Pitfalls"), and the properties the
//! issue asks for (round trip, single-field edits, dates across zones).
//!
//! `exchange_*` below stand in for the mailbox: they store what taskbridge writes and derive
//! Status, IsComplete and CompleteDate from PercentComplete as Exchange does ("the last
//! processed property determines the value", see
//! <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/status>).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::{America, Europe, Pacific, TZ_VARIANTS, Tz};
use proptest::prelude::*;
use uuid::Uuid;

use taskbridge::ews::ops::update_item::ItemUpdate;
use taskbridge::ews::types::{
    Body, ChangeKey, Importance, ItemId, Path, Strings, Task, TaskStatus, field_uri,
};
use taskbridge::mapping::convert::{
    mail_date_from_utc, mail_date_to_utc, pm_to_mail_date, pm_with_mail_date,
};
use taskbridge::mapping::{
    Direction, FieldTable, MailField, MailImportance, MailValues, MappingConfig, changed_fields,
    owner_zone,
};
use taskbridge::pm::{
    Assignment, AssignmentField, AssignmentUid, FieldChange, FieldTimes, FieldValue, Percent,
    Project, ProjectGuid, Resource, ResourceUid, Task as PmTask, TaskUid, UpdateSource, Work,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(h, mi, 0))
        .expect("valid test time")
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
}

fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&at(y, m, d, h, mi))
}

fn percent(p: u8) -> Percent {
    Percent::new(p).expect("in range")
}

/// One task, one resource, one assignment: the smallest project that syncs.
fn project(zone: Tz) -> Project {
    Project {
        guid: ProjectGuid(Uuid::from_u128(0x7b1c_0000_0000_4000_8000_0000_0000_0001)),
        name: "Apollo".into(),
        time_zone: zone,
        minutes_per_day: 480,
        minutes_per_week: 2400,
        start: None,
        tasks: vec![PmTask {
            uid: TaskUid(1),
            name: "Design review".into(),
            notes: "Check the draft".into(),
            start: at(2026, 3, 2, 8, 0),
            finish: at(2026, 3, 6, 17, 0),
            work: Work::from_hours(8),
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
            uid: AssignmentUid(12),
            task_uid: TaskUid(1),
            resource_uid: ResourceUid(1),
            start: at(2026, 3, 2, 8, 0),
            finish: at(2026, 3, 6, 17, 0),
            work: Work::from_hours(8),
            actual_work: Work::ZERO,
            remaining_work: Work::from_hours(8),
            percent_work_complete: Percent::ZERO,
            modified: FieldTimes::new(),
            actual_finish: None,
        }],
    }
}

fn source() -> UpdateSource {
    UpdateSource {
        mailbox: "ann@example.com".into(),
        item_id: "AAMk1".into(),
        change_key: "CK2".into(),
        modified_at: utc(2026, 3, 4, 9, 0),
    }
}

/// The default table with every field that may go both ways set to `both`.
fn all_both() -> FieldTable {
    let config: MappingConfig =
        toml::from_str("[fields]\nstart_date = \"both\"\ndue_date = \"both\"").expect("parses");
    FieldTable::from_config(&config).expect("valid")
}

/// What the mailbox stores for a CreateItem of `task`.
fn exchange_create(mut task: Task) -> Task {
    task.item_id = Some(ItemId::new("AAMk1", Some(ChangeKey::from("CK1"))));
    task.last_modified_time = Some(utc(2026, 3, 1, 12, 0));
    exchange_couple(&mut task);
    task
}

/// Exchange's coupling of PercentComplete, Status, IsComplete and CompleteDate.
fn exchange_couple(task: &mut Task) {
    let p = task.percent_complete.unwrap_or(0.0);
    task.percent_complete = Some(p);
    task.status = Some(if p >= 100.0 {
        TaskStatus::Completed
    } else if p <= 0.0 {
        TaskStatus::NotStarted
    } else {
        TaskStatus::InProgress
    });
    task.is_complete = Some(p >= 100.0);
    task.complete_date = (p >= 100.0).then(|| utc(2026, 3, 4, 9, 0));
}

/// What the mailbox stores after an UpdateItem with `updates`.
fn exchange_apply(task: &mut Task, updates: &[ItemUpdate]) {
    for update in updates {
        let (path, value) = match update {
            ItemUpdate::SetItemField { path, item } => (path, Some(&item.fields)),
            ItemUpdate::DeleteItemField { path } => (path, None),
        };
        let Path::FieldUri(uri) = path else {
            let Some(v) = value else {
                task.extended_properties.clear();
                continue;
            };
            task.extended_properties = v.extended_properties.clone();
            continue;
        };
        macro_rules! copy {
            ($($f:ident),*) => {{ $( task.$f = value.and_then(|v| v.$f.clone()); )* }};
        }
        match uri.as_str() {
            field_uri::SUBJECT => copy!(subject),
            field_uri::BODY => copy!(body),
            field_uri::IMPORTANCE => copy!(importance),
            field_uri::CATEGORIES => copy!(categories),
            field_uri::START_DATE => copy!(start_date),
            field_uri::DUE_DATE => copy!(due_date),
            field_uri::TOTAL_WORK => copy!(total_work),
            field_uri::ACTUAL_WORK => copy!(actual_work),
            field_uri::PERCENT_COMPLETE => {
                copy!(percent_complete);
                exchange_couple(task);
            }
            other => panic!("taskbridge never writes {other}"),
        }
    }
}

/// Whether `date` exists in `zone` at all (Samoa skipped 2011-12-30).
fn date_exists(zone: Tz, date: NaiveDate) -> bool {
    (0..48).any(|half_hours| {
        let time = NaiveTime::MIN + TimeDelta::minutes(30 * half_hours);
        zone.from_local_datetime(&date.and_time(time))
            .earliest()
            .is_some()
    })
}

struct Synced {
    project: Project,
    want: MailValues,
    item: Task,
    got: MailValues,
    zone: Tz,
}

/// Publishes the first unit of `project` into a mailbox and reads it back.
fn sync(table: &FieldTable, project: Project) -> Synced {
    let units = project.sync_units();
    let unit = &units[0];
    let zone = owner_zone(&project, unit);
    let want = table.to_mail(&project, unit, zone);
    let item = exchange_create(table.new_task(&want, &unit.key));
    let got = table.from_task(&item, zone);
    Synced {
        want,
        item,
        got,
        zone,
        project,
    }
}

// ---------------------------------------------------------------------------------------------
// Pitfalls

#[test]
fn due_date_utc_plus_13_keeps_calendar_date() {
    // Tonga is UTC+13 all year; Auckland is UTC+13 in the southern summer (NZDT).
    for zone in [Pacific::Tongatapu, Pacific::Auckland] {
        let mut p = project(zone);
        p.assignments[0].finish = at(2026, 1, 16, 17, 0);
        let s = sync(&FieldTable::default(), p);
        assert_eq!(s.want.due_date, Some(date(2026, 1, 16)), "{zone}");
        // Local midnight of the 16th is 11:00 UTC on the 15th ...
        assert_eq!(s.item.due_date, Some(utc(2026, 1, 15, 11, 0)), "{zone}");
        // ... which reads back as the 16th, not the 15th.
        assert_eq!(s.got.due_date, Some(date(2026, 1, 16)), "{zone}");
        // A client that stored midnight UTC means the 16th too.
        assert_eq!(
            mail_date_from_utc(zone, utc(2026, 1, 16, 0, 0)),
            date(2026, 1, 16)
        );
        assert!(changed_fields(&s.want, &s.got).is_empty());
    }
}

#[test]
fn due_date_utc_minus_10_keeps_calendar_date() {
    let s = sync(&FieldTable::default(), project(Pacific::Honolulu));
    assert_eq!(s.want.due_date, Some(date(2026, 3, 6)));
    assert_eq!(s.item.due_date, Some(utc(2026, 3, 6, 10, 0)));
    assert_eq!(s.got.due_date, Some(date(2026, 3, 6)));
    // Midnight UTC of the 6th is 14:00 on the 5th in Honolulu; it still means the 6th.
    assert_eq!(
        mail_date_from_utc(Pacific::Honolulu, utc(2026, 3, 6, 0, 0)),
        date(2026, 3, 6)
    );
    assert!(changed_fields(&s.want, &s.got).is_empty());
}

#[test]
fn due_date_extreme_zones_keep_calendar_date() {
    // UTC+14 and UTC-12, the ends of the range.
    for zone in [
        Pacific::Kiritimati,
        "Etc/GMT+12".parse::<Tz>().expect("zone"),
    ] {
        let s = sync(&FieldTable::default(), project(zone));
        assert_eq!(s.got.due_date, Some(date(2026, 3, 6)), "{zone}");
        assert_eq!(s.got.start_date, Some(date(2026, 3, 2)), "{zone}");
    }
}

#[test]
fn due_date_on_dst_change_days_keeps_calendar_date() {
    let cases = [
        (Europe::Berlin, date(2026, 3, 29)),
        (Europe::Berlin, date(2026, 10, 25)),
        (America::New_York, date(2026, 3, 8)),
        (America::New_York, date(2026, 11, 1)),
        // Midnight itself was skipped (Sao Paulo 2018) or repeated (Havana 2026).
        (America::Sao_Paulo, date(2018, 11, 4)),
        (America::Havana, date(2026, 11, 1)),
    ];
    for (zone, day) in cases {
        let mut p = project(zone);
        p.assignments[0].finish = day.and_hms_opt(17, 0, 0).expect("valid");
        p.assignments[0].start = day.and_hms_opt(0, 30, 0).expect("valid");
        let s = sync(&FieldTable::default(), p);
        assert_eq!(s.got.due_date, Some(day), "{zone} {day}");
        assert_eq!(s.got.start_date, Some(day), "{zone} {day}");
    }
}

#[test]
fn due_date_owner_in_other_zone_is_owner_date() {
    // The project plans in Berlin; Ann works from Auckland. Friday 17:00 in Berlin is
    // Saturday 05:00 for her, so her due date is Saturday; moving it to Monday in Outlook
    // moves the PM finish to Sunday 17:00 Berlin time (Monday 05:00 hers).
    let mut p = project(Europe::Berlin);
    p.resources[0].time_zone = Some(Pacific::Auckland);
    let table = all_both();
    let s = sync(&table, p);
    assert_eq!(s.zone, Pacific::Auckland);
    assert_eq!(s.got.due_date, Some(date(2026, 3, 7)));
    let mut observed = s.got.clone();
    observed.due_date = Some(date(2026, 3, 9));
    let units = s.project.sync_units();
    let inbound = table.status_update(
        &s.project,
        &units[0],
        s.zone,
        &observed,
        &[MailField::DueDate],
        source(),
    );
    let update = inbound.update.expect("an update");
    assert_eq!(
        update.changes,
        vec![FieldChange {
            field: AssignmentField::Finish,
            old: FieldValue::DateTime(at(2026, 3, 6, 17, 0)),
            new: FieldValue::DateTime(at(2026, 3, 8, 17, 0)),
        }]
    );
}

#[test]
fn percent_100_completed_and_complete_date_all_read_as_done() {
    let table = FieldTable::default();
    let mut p = project(Tz::UTC);
    p.assignments[0].percent_work_complete = percent(40);
    let units = p.sync_units();
    let done = [
        (
            "PercentComplete 100",
            Task {
                percent_complete: Some(100.0),
                ..Task::default()
            },
        ),
        (
            "Status Completed",
            Task {
                status: Some(TaskStatus::Completed),
                ..Task::default()
            },
        ),
        (
            "CompleteDate",
            Task {
                complete_date: Some(utc(2026, 3, 4, 9, 0)),
                ..Task::default()
            },
        ),
        (
            "IsComplete",
            Task {
                is_complete: Some(true),
                ..Task::default()
            },
        ),
        (
            "Completed with a stale 40",
            Task {
                status: Some(TaskStatus::Completed),
                percent_complete: Some(40.0),
                ..Task::default()
            },
        ),
    ];
    for (what, task) in done {
        let got = table.from_task(&task, Tz::UTC);
        assert_eq!(got.percent_complete, Some(Percent::FULL), "{what}");
        assert_eq!(got.status(), Some(TaskStatus::Completed), "{what}");
        let inbound = table.status_update(
            &p,
            &units[0],
            Tz::UTC,
            &got,
            &[MailField::PercentComplete],
            source(),
        );
        let update = inbound.update.expect(what);
        assert_eq!(
            update.changes,
            vec![FieldChange {
                field: AssignmentField::PercentWorkComplete,
                old: FieldValue::Percent(percent(40)),
                new: FieldValue::Percent(Percent::FULL),
            }],
            "{what}"
        );
    }
}

#[test]
fn percent_100_is_written_as_percent_complete_only() {
    let table = FieldTable::default();
    let mut p = project(Tz::UTC);
    let before = sync(&table, p.clone());
    p.assignments[0].percent_work_complete = Percent::FULL;
    let after = table.to_mail(&p, &p.sync_units()[0], Tz::UTC);
    let updates = table.updates(&before.got, &after);
    let paths: Vec<_> = updates
        .iter()
        .map(|u| match u {
            ItemUpdate::SetItemField { path, .. } | ItemUpdate::DeleteItemField { path } => {
                path.clone()
            }
        })
        .collect();
    assert_eq!(paths, vec![Path::field(field_uri::PERCENT_COMPLETE)]);
    let mut item = before.item.clone();
    exchange_apply(&mut item, &updates);
    assert_eq!(item.status, Some(TaskStatus::Completed));
    let got = table.from_task(&item, Tz::UTC);
    assert!(changed_fields(&after, &got).is_empty());
    // A created item at 100 % carries only PercentComplete too.
    let created = table.new_task(&after, &p.key(AssignmentUid(12)));
    assert_eq!(created.percent_complete, Some(100.0));
    assert_eq!((created.status, created.complete_date), (None, None));
}

#[test]
fn percent_waiting_on_others_keeps_pm_percent_and_is_noted() {
    let table = FieldTable::default();
    let mut p = project(Tz::UTC);
    p.assignments[0].percent_work_complete = percent(30);
    let s = sync(&table, p);
    let mut item = s.item.clone();
    item.status = Some(TaskStatus::WaitingOnOthers);
    let got = table.from_task(&item, Tz::UTC);
    // The note is not a change of the percentage; it is noticed on its own.
    assert!(changed_fields(&s.want, &got).is_empty());
    assert!(s.want.status_note_changed(&got));
    let fields = vec![MailField::PercentComplete];
    let units = s.project.sync_units();
    let inbound = table.status_update(&s.project, &units[0], Tz::UTC, &got, &fields, source());
    assert_eq!(inbound.update, None);
    assert_eq!(
        inbound.status_note,
        Some(taskbridge::mapping::StatusNote::WaitingOnOthers)
    );
    // Nothing is written back over the user's status.
    assert!(table.updates(&got, &s.want).is_empty());
}

#[test]
fn work_seven_and_a_half_hours_is_450_minutes() {
    let table = FieldTable::default();
    let mut p = project(Tz::UTC);
    p.assignments[0].work = Work::parse_mspdi("PT7H30M0S").expect("valid");
    p.assignments[0].actual_work = Work::parse_mspdi("PT7.5H").expect("valid");
    let s = sync(&table, p);
    assert_eq!(s.item.total_work, Some(450));
    assert_eq!(s.item.actual_work, Some(450));
    assert!(changed_fields(&s.want, &s.got).is_empty());
    // The way back: 450 minutes reported in the mailbox against 7 h of PM actual work.
    let mut p = s.project.clone();
    p.assignments[0].actual_work = Work::from_hours(7);
    let units = p.sync_units();
    let inbound = table.status_update(
        &p,
        &units[0],
        Tz::UTC,
        &s.got,
        &[MailField::ActualWork],
        source(),
    );
    let update = inbound.update.expect("an update");
    assert_eq!(
        update.changes,
        vec![FieldChange {
            field: AssignmentField::ActualWork,
            old: FieldValue::Work(Work::from_hours(7)),
            new: FieldValue::Work(Work::from_seconds(27_000)),
        }]
    );
}

#[test]
fn priority_500_is_normal_and_501_is_high() {
    let table = FieldTable::default();
    let cases = [
        (0, MailImportance::Low, Importance::Low),
        (499, MailImportance::Low, Importance::Low),
        (500, MailImportance::Normal, Importance::Normal),
        (501, MailImportance::High, Importance::High),
        (1000, MailImportance::High, Importance::High),
    ];
    for (priority, level, wire) in cases {
        let mut p = project(Tz::UTC);
        p.tasks[0].priority = priority;
        let s = sync(&table, p);
        assert_eq!(s.want.importance, Some(level), "{priority}");
        assert_eq!(s.item.importance, Some(wire), "{priority}");
        assert_eq!(s.got.importance, Some(level), "{priority}");
    }
}

#[test]
fn priority_changed_in_mailbox_is_overwritten_not_taken() {
    let table = FieldTable::default();
    let s = sync(&table, project(Tz::UTC));
    let mut item = s.item.clone();
    item.importance = Some(Importance::High);
    let got = table.from_task(&item, Tz::UTC);
    let fields = changed_fields(&s.want, &got);
    let units = s.project.sync_units();
    let inbound = table.status_update(&s.project, &units[0], Tz::UTC, &got, &fields, source());
    assert_eq!(inbound.update, None);
    assert_eq!(inbound.overwritten, vec![MailField::Importance]);
    let mut restored = item.clone();
    exchange_apply(&mut restored, &table.updates(&got, &s.want));
    assert_eq!(restored.importance, Some(Importance::Normal));
}

#[test]
fn task_without_resource_gets_no_mailbox_item() {
    let mut p = project(Tz::UTC);
    p.assignments[0].resource_uid = ResourceUid::NONE;
    assert!(p.sync_units().is_empty());
    // A resource without a mailbox address (material, cost, or nobody entered one) neither.
    let mut p = project(Tz::UTC);
    p.resources[0].email = None;
    assert!(p.sync_units().is_empty());
    let mut p = project(Tz::UTC);
    p.resources[0].email = Some("  ".into());
    assert!(p.sync_units().is_empty());
}

#[test]
fn summary_task_gets_no_mailbox_item() {
    let mut p = project(Tz::UTC);
    p.tasks[0].summary = true;
    assert!(p.sync_units().is_empty());
    // The project summary task, UID 0, neither, even when a file does not flag it.
    let mut p = project(Tz::UTC);
    p.tasks[0].uid = TaskUid::PROJECT_SUMMARY;
    p.assignments[0].task_uid = TaskUid::PROJECT_SUMMARY;
    assert!(p.sync_units().is_empty());
}

#[test]
fn milestone_without_work_maps_to_zero_minutes() {
    let mut p = project(Tz::UTC);
    p.tasks[0].milestone = true;
    p.assignments[0].work = Work::ZERO;
    p.assignments[0].remaining_work = Work::ZERO;
    p.assignments[0].finish = p.assignments[0].start;
    let s = sync(&FieldTable::default(), p);
    assert_eq!(s.item.total_work, Some(0));
    assert_eq!(s.got.start_date, s.got.due_date);
    assert!(changed_fields(&s.want, &s.got).is_empty());
}

#[test]
fn config_file_mapping_section_builds_table() {
    // The [mapping] section as it sits in taskbridge.toml, next to other sections.
    #[derive(serde::Deserialize)]
    struct File {
        mapping: MappingConfig,
    }
    let text = r#"
        [mapping]
        subject_template = "{task} ({project})"
        importance_low_below = 400

        [mapping.fields]
        body = "off"
        due_date = "both"
    "#;
    let file: File = toml::from_str(text).expect("parses");
    let table = FieldTable::from_config(&file.mapping).expect("valid");
    assert!(!table.is_mapped(MailField::Body));
    assert_eq!(table.direction(MailField::DueDate), Some(Direction::Both));
    let s = sync(&table, project(Tz::UTC));
    assert_eq!(s.got.subject.as_deref(), Some("Design review (Apollo)"));
    assert_eq!(s.item.body, None);
}

// ---------------------------------------------------------------------------------------------
// Properties

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(TZ_VARIANTS.to_vec())
}

/// A date from 1950 to 2099.
fn day() -> impl Strategy<Value = NaiveDate> {
    (0i64..150 * 365).prop_map(|d| date(1950, 1, 1) + TimeDelta::days(d))
}

fn time() -> impl Strategy<Value = NaiveTime> {
    (0i64..86_400).prop_map(|s| NaiveTime::MIN + TimeDelta::seconds(s))
}

fn text() -> impl Strategy<Value = String> {
    "[ a-zA-Z0-9äöüÆøß漢字{}:\n\t-]{0,30}"
}

prop_compose! {
    /// Any project with one valid assignment that syncs: any zones for project and resource,
    /// names and notes with odd characters, any priority, dates from 1950 on, work up to
    /// about 27,000 hours with actual work not above it, any percentage.
    fn any_project()(
        project_zone in zone(),
        resource_zone in prop::option::of(zone()),
        names in (text(), text(), text(), text()),
        priority in 0u16..=1000,
        start in (day(), time()),
        length in 0i64..90 * 86_400,
        work in 0i64..100_000_000,
        actual_share in 0u32..=100,
        pct in 0u8..=100,
    ) -> Project {
        let mut p = project(project_zone);
        let (project_name, task_name, resource_name, notes) = names;
        p.name = project_name;
        p.tasks[0].name = task_name;
        p.tasks[0].notes = notes;
        p.tasks[0].priority = priority;
        p.resources[0].name = resource_name;
        p.resources[0].time_zone = resource_zone;
        let a = &mut p.assignments[0];
        a.start = start.0.and_time(start.1);
        a.finish = a.start + TimeDelta::seconds(length);
        a.work = Work::from_seconds(work);
        a.actual_work = Work::from_seconds(work * i64::from(actual_share) / 100);
        a.remaining_work = a.work.saturating_sub(a.actual_work);
        a.percent_work_complete = percent(pct);
        p
    }
}

/// Whether the project's PM dates exist in its zone (a date a zone skipped has no mailbox date).
fn dates_exist(p: &Project) -> bool {
    let a = &p.assignments[0];
    date_exists(p.time_zone, a.start.date()) && date_exists(p.time_zone, a.finish.date())
}

fn tables() -> impl Strategy<Value = FieldTable> {
    prop_oneof![Just(FieldTable::default()), Just(all_both())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Mapping any valid assignment to an item and reading it back changes nothing: no changed
    /// field, equal hashes, no status update even when every field is offered, nothing to
    /// write, and the key tag found.
    #[test]
    fn round_trip_any_assignment_yields_no_status_update(p in any_project(), table in tables()) {
        prop_assume!(dates_exist(&p));
        let s = sync(&table, p);
        prop_assert_eq!(changed_fields(&s.want, &s.got), Vec::<MailField>::new());
        prop_assert_eq!(s.want.hash(), s.got.hash());
        let units = s.project.sync_units();
        let inbound = table.status_update(
            &s.project, &units[0], s.zone, &s.got, &MailField::ALL, source(),
        );
        prop_assert_eq!(inbound.update, None);
        prop_assert!(table.updates(&s.got, &s.want).is_empty());
        prop_assert_eq!(table.read_key(&s.item), Some(units[0].key));
    }

    /// Any single-field edit in the mailbox shows up as exactly that field: in the status update
    /// (in PM units) when it goes both ways, in the overwritten list otherwise; and writing the
    /// PM values back restores the item.
    #[test]
    fn single_mailbox_edit_yields_exactly_that_field(
        p in any_project(),
        table in tables(),
        field in prop::sample::select(MailField::ALL.to_vec()),
        shift in 1i64..400,
        later: bool,
        amount in 1i32..100_000,
        new_text in "[a-zA-Z]{1,20}",
    ) {
        prop_assume!(dates_exist(&p));
        let s = sync(&table, p);
        let mut item = s.item.clone();
        let zone = s.zone;
        let moved = |d: Option<NaiveDate>| {
            let d = d.expect("dates are mapped");
            if later { d + TimeDelta::days(shift) } else { d - TimeDelta::days(shift) }
        };
        match field {
            MailField::Subject => item.subject = Some(format!("{} {new_text}", s.want.subject.clone().unwrap_or_default())),
            MailField::Body => item.body = Some(Body::text(format!("{} {new_text}", s.want.body.clone().unwrap_or_default()))),
            MailField::Importance => item.importance = Some(match s.want.importance {
                Some(MailImportance::High) => Importance::Low,
                _ => Importance::High,
            }),
            MailField::StartDate => {
                let d = moved(s.want.start_date);
                prop_assume!(date_exists(zone, d));
                item.start_date = Some(mail_date_to_utc(zone, d));
            }
            MailField::DueDate => {
                let d = moved(s.want.due_date);
                prop_assume!(date_exists(zone, d));
                item.due_date = Some(mail_date_to_utc(zone, d));
            }
            MailField::TotalWork => item.total_work = item.total_work.map(|m| m.saturating_add(amount)),
            MailField::ActualWork => item.actual_work = item.actual_work.map(|m| m.saturating_add(amount)),
            MailField::PercentComplete => {
                let now = item.percent_complete.unwrap_or(0.0);
                let new = (now + f64::from(amount % 100 + 1)) % 101.0;
                prop_assume!(new != now);
                item.percent_complete = Some(new);
                exchange_couple(&mut item);
            }
            MailField::Categories => {
                let mut list = item.categories.clone().map(|c| c.strings).unwrap_or_default();
                list.push(format!("x-{new_text}"));
                item.categories = Some(Strings::from(list));
            }
        }
        prop_assume!(item != s.item);
        let got = table.from_task(&item, zone);
        let fields = changed_fields(&s.want, &got);
        prop_assert_eq!(&fields, &vec![field]);
        for f in MailField::ALL {
            prop_assert_eq!(f == field, s.want.field_hash(f) != got.field_hash(f));
        }

        let units = s.project.sync_units();
        let inbound = table.status_update(&s.project, &units[0], zone, &got, &fields, source());
        if table.direction(field) == Some(Direction::Both) {
            let update = inbound.update.expect("a two-way edit gives an update");
            prop_assert_eq!(update.changes.len(), 1);
            let change = &update.changes[0];
            let a = &s.project.assignments[0];
            match field {
                MailField::ActualWork => {
                    prop_assert_eq!(change.field, AssignmentField::ActualWork);
                    prop_assert_eq!(&change.old, &FieldValue::Work(a.actual_work));
                    let minutes = got.actual_work.expect("read");
                    prop_assert_eq!(&change.new, &FieldValue::Work(Work::from_minutes(i64::from(minutes))));
                }
                MailField::PercentComplete => {
                    prop_assert_eq!(change.field, AssignmentField::PercentWorkComplete);
                    prop_assert_eq!(&change.new, &FieldValue::Percent(got.percent_complete.expect("read")));
                }
                MailField::StartDate | MailField::DueDate => {
                    let (assignment_field, pm, mail) = if field == MailField::StartDate {
                        (AssignmentField::Start, a.start, got.start_date)
                    } else {
                        (AssignmentField::Finish, a.finish, got.due_date)
                    };
                    prop_assert_eq!(change.field, assignment_field);
                    prop_assert_eq!(&change.old, &FieldValue::DateTime(pm));
                    let FieldValue::DateTime(new) = change.new else {
                        panic!("a date change carries a date-time: {change:?}");
                    };
                    // Same zone: the PM wall-clock time of day is kept exactly.
                    if s.project.time_zone == zone {
                        prop_assert_eq!(new.time(), pm.time());
                        prop_assert_eq!(Some(new.date()), mail);
                    }
                }
                other => panic!("{other} cannot go both ways"),
            }
            prop_assert!(inbound.overwritten.is_empty());
        } else {
            prop_assert_eq!(inbound.update, None);
            prop_assert_eq!(inbound.overwritten, vec![field]);
            // Writing the PM values back restores the item (categories are only ever added to).
            let updates = table.updates(&got, &s.want);
            let mut restored = item.clone();
            exchange_apply(&mut restored, &updates);
            let back = table.from_task(&restored, zone);
            if field == MailField::Categories {
                prop_assert!(updates.is_empty());
            } else {
                prop_assert_eq!(updates.len(), 1);
                prop_assert_eq!(changed_fields(&s.want, &back), Vec::<MailField>::new());
            }
        }
    }

    /// Updates between any two PM states, applied by the mailbox, give the second state (apart
    /// from categories, which are only added to), and never touch Status or CompleteDate.
    #[test]
    fn updates_between_any_states_reach_the_target(a in any_project(), b in any_project()) {
        prop_assume!(dates_exist(&a));
        let table = FieldTable::default();
        let s = sync(&table, a);
        // b in the same zones as a, so that both describe the same mailbox.
        let mut b = b;
        b.time_zone = s.project.time_zone;
        b.resources[0].time_zone = s.project.resources[0].time_zone;
        prop_assume!(dates_exist(&b));
        let units = b.sync_units();
        let want = table.to_mail(&b, &units[0], s.zone);
        let updates = table.updates(&s.got, &want);
        let mut item = s.item.clone();
        exchange_apply(&mut item, &updates);
        let got = table.from_task(&item, s.zone);
        let left: Vec<_> = changed_fields(&want, &got)
            .into_iter()
            .filter(|f| *f != MailField::Categories)
            .collect();
        prop_assert_eq!(left, Vec::<MailField>::new());
        for c in &want.categories {
            prop_assert!(got.categories.contains(c));
        }
        prop_assert_eq!(table.updates(&got, &want), Vec::new());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No date moves, across 1,000 random zones and dates: a mailbox date written as its first
    /// instant reads back as itself, so does the "floating" midnight-UTC form, a PM date-time in
    /// the owner's zone maps to its own date, and a mailbox date taken back keeps the PM time
    /// of day and maps to that date again, also when project and owner are in different zones.
    #[test]
    fn dates_across_random_zones_never_move(
        owner in zone(),
        project_zone in zone(),
        d in day(),
        t in time(),
        target in day(),
    ) {
        prop_assume!(date_exists(owner, d));
        prop_assert_eq!(mail_date_from_utc(owner, mail_date_to_utc(owner, d)), d);
        let floating = Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN));
        prop_assert_eq!(mail_date_from_utc(owner, floating), d);

        let pm = d.and_time(t);
        prop_assert_eq!(pm_to_mail_date(owner, pm, owner), d);
        let back = pm_with_mail_date(owner, pm, owner, target);
        prop_assert_eq!(back, target.and_time(t));
        prop_assert_eq!(pm_to_mail_date(owner, back, owner), target);

        // Across zones: only wall-clock times that exist once in both zones have one answer.
        let single = |zone: Tz, local: NaiveDateTime| zone.from_local_datetime(&local).single().is_some();
        prop_assume!(single(project_zone, pm));
        let mail = pm_to_mail_date(project_zone, pm, owner);
        prop_assert_eq!(mail_date_from_utc(owner, mail_date_to_utc(owner, mail)), mail);
        let owner_time = project_zone
            .from_local_datetime(&pm)
            .single()
            .map(|at| at.with_timezone(&owner).time())
            .expect("checked single");
        prop_assume!(single(owner, target.and_time(owner_time)));
        let back = pm_with_mail_date(project_zone, pm, owner, target);
        prop_assume!(single(project_zone, back));
        prop_assert_eq!(pm_to_mail_date(project_zone, back, owner), target);
    }
}
