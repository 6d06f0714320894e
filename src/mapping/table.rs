//! The mapping itself, as methods of [`FieldTable`]: an assignment to mailbox values
//! ([`FieldTable::to_mail`]), an item to mailbox values ([`FieldTable::from_task`]), values to a
//! new item ([`FieldTable::new_task`]) or to the updates of an existing one
//! ([`FieldTable::updates`]), and a mailbox edit back to a task status update
//! ([`FieldTable::status_update`]).

use chrono::NaiveDateTime;
use chrono_tz::Tz;

use super::config::{Direction, FieldEntry, FieldTable, MailField, PmSource};
use super::convert::{
    Completion, MailImportance, StatusNote, mail_completion_date, mail_date_from_utc,
    mail_date_to_utc, minutes_to_work, pm_to_mail_date, pm_with_mail_date, read_completion,
    work_to_minutes,
};
use super::values::{MailValues, ReadInfo, category_set};
use crate::ews::ops::update_item::ItemUpdate;
use crate::ews::types::{
    BaseShape, Body, BodyType, ExtendedFieldUri, ExtendedProperty, Item, ItemShape, Path, Strings,
    Task, field_uri,
};
use crate::pm::{
    AssignmentKey, FieldChange, FieldValue, Percent, Project, StatusUpdate, SyncUnit, UpdateSource,
};

/// The zone a unit's mailbox dates are in: the resource's own zone, else the project's.
pub fn owner_zone(project: &Project, unit: &SyncUnit<'_>) -> Tz {
    unit.resource.time_zone.unwrap_or(project.time_zone)
}

/// What a mailbox edit means for the PM side: the result of [`FieldTable::status_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The task status update for the two-way fields whose mailbox value differs from the PM
    /// value, in PM units; `None` when there is none (its `changes` are never empty).
    pub update: Option<StatusUpdate>,
    /// Mailbox edits the PM side does not take, in table order: fields that go PM to mailbox
    /// only, and two-way fields the user cleared. The next write puts the PM values back.
    pub overwritten: Vec<MailField>,
    /// `WaitingOnOthers` or `Deferred` as read, to report next to the update. It changes no PM
    /// value.
    pub status_note: Option<StatusNote>,
}

/// A body as compared: `\r\n` and lone `\r` as `\n` (Exchange may store either), trailing
/// whitespace trimmed, and `None` when nothing is left.
fn normalize_body(text: &str) -> Option<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A subject as compared: ends trimmed, `None` when empty.
fn normalize_subject(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// What a two-way field's mailbox value means for the PM value.
enum Back {
    /// The values agree in mailbox terms.
    Same,
    /// The mailbox value differs.
    Change(FieldChange),
    /// The mailbox has no value.
    Cleared,
}

impl FieldTable {
    /// The mailbox values that show `unit`: the state the item should be in.
    ///
    /// `zone` is the mailbox owner's zone ([`owner_zone`] unless the caller knows better); the
    /// PM date-times are local to `project.time_zone`. Fields not in the table stay empty.
    pub fn to_mail(&self, project: &Project, unit: &SyncUnit<'_>, zone: Tz) -> MailValues {
        let mut v = MailValues::empty(zone);
        for entry in &self.entries {
            match entry.field {
                MailField::Subject => {
                    v.subject = normalize_subject(&self.subject.render(
                        &project.name,
                        &unit.task.name,
                        &unit.resource.name,
                    ));
                }
                MailField::Body => v.body = normalize_body(&unit.task.notes),
                MailField::Importance => {
                    v.importance = Some(self.importance.importance(unit.task.priority));
                }
                MailField::StartDate => {
                    let pm = pm_datetime(entry.source, unit);
                    v.start_date = Some(pm_to_mail_date(project.time_zone, pm, zone));
                }
                MailField::DueDate => {
                    let pm = pm_datetime(entry.source, unit);
                    v.due_date = Some(pm_to_mail_date(project.time_zone, pm, zone));
                }
                MailField::TotalWork => v.total_work = Some(work_to_minutes(unit.assignment.work)),
                MailField::ActualWork => {
                    v.actual_work = Some(work_to_minutes(unit.assignment.actual_work));
                }
                MailField::PercentComplete => {
                    v.percent_complete = Some(pm_percent(entry.source, unit));
                }
                MailField::Categories => {
                    let name = project.name.trim();
                    if !name.is_empty() {
                        v.categories = vec![name.to_owned()];
                    }
                }
            }
        }
        v
    }

    /// The mailbox values an item holds: the state it is in.
    ///
    /// `zone` is the owner's zone, in which the item's date instants are read
    /// ([`mail_date_from_utc`]). Completion is read by [`read_completion`]; negative work is read
    /// as 0. Fields not in the table stay empty; [`MailValues::read`] carries the id, change key,
    /// LastModifiedTime and status as read.
    pub fn from_task(&self, task: &Task, zone: Tz) -> MailValues {
        let mut v = MailValues::empty(zone);
        v.read = Some(ReadInfo {
            item_id: task.item_id.clone(),
            last_modified_time: task.last_modified_time,
            status: task.status.clone(),
            complete_date: task.complete_date,
        });
        for entry in &self.entries {
            match entry.field {
                MailField::Subject => {
                    v.subject = task.subject.as_deref().and_then(normalize_subject);
                }
                MailField::Body => {
                    v.body = task.body.as_ref().and_then(|b| normalize_body(&b.text));
                }
                MailField::Importance => {
                    v.importance = task.importance.as_ref().and_then(MailImportance::from_wire);
                }
                MailField::StartDate => {
                    v.start_date = task.start_date.map(|at| mail_date_from_utc(zone, at));
                }
                MailField::DueDate => {
                    v.due_date = task.due_date.map(|at| mail_date_from_utc(zone, at));
                }
                MailField::TotalWork => v.total_work = task.total_work.map(|m| m.max(0)),
                MailField::ActualWork => v.actual_work = task.actual_work.map(|m| m.max(0)),
                MailField::PercentComplete => {
                    let (percent, note) = read_completion(Completion {
                        status: task.status.as_ref(),
                        percent_complete: task.percent_complete,
                        is_complete: task.is_complete,
                        has_complete_date: task.complete_date.is_some(),
                    });
                    v.percent_complete = percent;
                    v.status_note = note;
                }
                MailField::Categories => {
                    v.categories = task
                        .categories
                        .as_ref()
                        .map(|c| c.strings.clone())
                        .unwrap_or_default();
                }
            }
        }
        v
    }

    /// The item to create for `values`, tagged with `key` (for CreateItem).
    ///
    /// Carries the mapped fields that have a value and the key tag. Of Status, PercentComplete
    /// and CompleteDate only PercentComplete is written; Exchange derives the other two.
    pub fn new_task(&self, values: &MailValues, key: &AssignmentKey) -> Task {
        let mut task = Task::default();
        for entry in &self.entries {
            self.put(&mut task, entry.field, values);
        }
        task.extended_properties.push(self.key_property(key));
        task
    }

    /// The changes that turn an item showing `from` into one showing `to` (for UpdateItem), in
    /// table order, one per differing field.
    ///
    /// A value in `to` is a `SetItemField`; a value only in `from` is a `DeleteItemField`. Two
    /// fields differ from that rule:
    /// - **PercentComplete** is written alone, never with Status or CompleteDate (Exchange lets
    ///   the last one processed win), and only when the percentage differs: a status note
    ///   (`WaitingOnOthers`, `Deferred`) is the user's and is never overwritten.
    /// - **Categories** are only ever added to: when `to` has categories that `from` lacks, the
    ///   item gets `from`'s list plus those; categories the user added stay, and none is deleted.
    ///
    /// So `updates` can be empty while [`super::changed_fields`] is not; an empty list means
    /// "nothing to write".
    pub fn updates(&self, from: &MailValues, to: &MailValues) -> Vec<ItemUpdate> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let field = entry.field;
            match field {
                MailField::Categories => {
                    let have = category_set(&from.categories);
                    let mut list: Vec<String> = Vec::new();
                    for c in from.categories.iter().chain(&to.categories) {
                        if !list.contains(c) {
                            list.push(c.clone());
                        }
                    }
                    if list.len() > have.len() {
                        out.push(set_item(
                            field,
                            Task {
                                categories: Some(Strings::from(list)),
                                ..Task::default()
                            },
                        ));
                    }
                    continue;
                }
                MailField::PercentComplete => {
                    if from.percent_complete == to.percent_complete {
                        continue;
                    }
                }
                _ => {
                    if from.same_field(to, field) {
                        continue;
                    }
                }
            }
            let mut task = Task::default();
            out.push(if self.put(&mut task, field, to) {
                set_item(field, task)
            } else {
                ItemUpdate::DeleteItemField { path: field.path() }
            });
        }
        out
    }

    /// The reverse mapping: what the mailbox values `observed` mean for the PM side.
    ///
    /// `fields` are the fields the caller takes from the mailbox (typically those changed only in
    /// the mailbox since the baseline, or won by the mailbox under the conflict policy); others
    /// are not looked at. For each, in table order:
    /// - a field that goes PM to mailbox only is listed in [`Inbound::overwritten`], never in the
    ///   update;
    /// - a two-way field with no mailbox value is listed there too (a cleared date cannot clear a
    ///   PM date);
    /// - a two-way field whose mailbox value equals the PM value in mailbox terms is skipped (so
    ///   7 h 30 min 10 s of PM actual work and 450 mailbox minutes agree);
    /// - any other two-way field becomes a [`FieldChange`] in PM units: minutes as
    ///   [`crate::pm::Work`], the percentage as [`Percent`], a date as the PM date-time moved to
    ///   that date with its time of day kept ([`pm_with_mail_date`]).
    ///
    /// `zone` is the owner's zone, as for [`FieldTable::to_mail`].
    pub fn status_update(
        &self,
        project: &Project,
        unit: &SyncUnit<'_>,
        zone: Tz,
        observed: &MailValues,
        fields: &[MailField],
        source: UpdateSource,
    ) -> Inbound {
        let mut changes = Vec::new();
        let mut overwritten = Vec::new();
        for entry in self.entries.iter().filter(|e| fields.contains(&e.field)) {
            if entry.direction == Direction::PmToMail {
                overwritten.push(entry.field);
                continue;
            }
            match back(entry, project, unit, zone, observed) {
                Back::Same => {}
                Back::Change(change) => changes.push(change),
                Back::Cleared => overwritten.push(entry.field),
            }
        }
        // Completed in the mailbox: the date it says, in the owner's zone, at the planned
        // finish's time of day, is the actual finish.
        let completes = changes.iter().any(|c| {
            c.field == crate::pm::AssignmentField::PercentWorkComplete
                && c.new == FieldValue::Percent(Percent::FULL)
        });
        let completed_on = observed
            .read
            .as_ref()
            .and_then(|r| r.complete_date)
            .filter(|_| completes)
            .map(|at| {
                pm_with_mail_date(
                    project.time_zone,
                    unit.assignment.finish,
                    zone,
                    mail_completion_date(zone, at),
                )
            });
        Inbound {
            update: (!changes.is_empty()).then_some(StatusUpdate {
                key: unit.key,
                changes,
                source,
                status_note: None,
                completed_on,
            }),
            overwritten,
            status_note: observed.status_note,
        }
    }

    /// The key tag's property: a named string property in the configured property set.
    pub fn key_uri(&self) -> ExtendedFieldUri {
        ExtendedFieldUri::named_string(&self.key_set.hyphenated().to_string(), &self.key_name)
    }

    /// The key tag's path, for shapes, restrictions and updates.
    pub fn key_path(&self) -> Path {
        Path::ExtendedFieldUri(self.key_uri())
    }

    /// The key tag with `key` as its value (`<project-guid>:<assignment-uid>`).
    pub fn key_property(&self, key: &AssignmentKey) -> ExtendedProperty {
        ExtendedProperty {
            extended_field_uri: self.key_uri(),
            value: Some(key.to_string()),
            values: None,
        }
    }

    /// An update that (re)writes the key tag, for an item that lost it.
    pub fn key_update(&self, key: &AssignmentKey) -> ItemUpdate {
        ItemUpdate::SetItemField {
            path: self.key_path(),
            item: Box::new(Item::task(Task {
                extended_properties: vec![self.key_property(key)],
                ..Task::default()
            })),
        }
    }

    /// The key an item is tagged with; `None` when it has no tag or the tag does not parse (an
    /// item taskbridge did not create, or one whose tag someone edited).
    pub fn read_key(&self, task: &Task) -> Option<AssignmentKey> {
        task.extended_value(&self.key_uri())?.trim().parse().ok()
    }

    /// The item shape that fetches everything [`FieldTable::from_task`] and
    /// [`FieldTable::read_key`] read: ids, the mapped fields (the body as text), the completion
    /// elements when the percentage is mapped, LastModifiedTime and the key tag.
    pub fn item_shape(&self) -> ItemShape {
        let mut paths: Vec<Path> = self.entries.iter().map(|e| e.field.path()).collect();
        if self.is_mapped(MailField::PercentComplete) {
            for uri in [
                field_uri::STATUS,
                field_uri::IS_COMPLETE,
                field_uri::COMPLETE_DATE,
            ] {
                paths.push(Path::field(uri));
            }
        }
        paths.push(Path::field(field_uri::LAST_MODIFIED_TIME));
        paths.push(self.key_path());
        let mut shape = ItemShape::new(BaseShape::IdOnly, paths);
        if self.is_mapped(MailField::Body) {
            shape.body_type = Some(BodyType::Text);
        }
        shape
    }

    /// Sets `field` of `task` from `values`; false when `values` has no value for it.
    fn put(&self, task: &mut Task, field: MailField, values: &MailValues) -> bool {
        match field {
            MailField::Subject => task.subject = values.subject.clone(),
            MailField::Body => task.body = values.body.as_deref().map(Body::text),
            MailField::Importance => {
                task.importance = values.importance.map(MailImportance::to_wire);
            }
            MailField::StartDate => {
                task.start_date = values.start_date.map(|d| mail_date_to_utc(values.zone, d));
            }
            MailField::DueDate => {
                task.due_date = values.due_date.map(|d| mail_date_to_utc(values.zone, d));
            }
            MailField::TotalWork => task.total_work = values.total_work,
            MailField::ActualWork => task.actual_work = values.actual_work,
            MailField::PercentComplete => {
                task.percent_complete = values.percent_complete.map(|p| f64::from(p.get()));
            }
            MailField::Categories => {
                task.categories = (!values.categories.is_empty())
                    .then(|| Strings::from(values.categories.clone()));
            }
        }
        match field {
            MailField::Subject => task.subject.is_some(),
            MailField::Body => task.body.is_some(),
            MailField::Importance => task.importance.is_some(),
            MailField::StartDate => task.start_date.is_some(),
            MailField::DueDate => task.due_date.is_some(),
            MailField::TotalWork => task.total_work.is_some(),
            MailField::ActualWork => task.actual_work.is_some(),
            MailField::PercentComplete => task.percent_complete.is_some(),
            MailField::Categories => task.categories.is_some(),
        }
    }
}

fn set_item(field: MailField, task: Task) -> ItemUpdate {
    ItemUpdate::SetItemField {
        path: field.path(),
        item: Box::new(Item::task(task)),
    }
}

/// The PM date-time a date field is made from.
fn pm_datetime(source: PmSource, unit: &SyncUnit<'_>) -> NaiveDateTime {
    match source {
        PmSource::TaskStart => unit.task.start,
        PmSource::TaskFinish => unit.task.finish,
        PmSource::AssignmentFinish => unit.assignment.finish,
        // The table only pairs date fields with date sources (checked in from_config).
        _ => unit.assignment.start,
    }
}

/// The PM percentage the percent field is made from.
fn pm_percent(source: PmSource, unit: &SyncUnit<'_>) -> Percent {
    match source {
        PmSource::TaskPercentComplete => unit.task.percent_work_complete,
        _ => unit.assignment.percent_work_complete,
    }
}

/// What the mailbox value of a two-way field means for the PM value.
fn back(
    entry: &FieldEntry,
    project: &Project,
    unit: &SyncUnit<'_>,
    zone: Tz,
    observed: &MailValues,
) -> Back {
    let Some(field) = entry.source.assignment_field() else {
        // from_config allows `both` only for sources with an assignment field.
        return Back::Same;
    };
    let change = |old, new| Back::Change(FieldChange { field, old, new });
    match entry.field {
        MailField::StartDate | MailField::DueDate => {
            let date = if entry.field == MailField::StartDate {
                observed.start_date
            } else {
                observed.due_date
            };
            let Some(date) = date else {
                return Back::Cleared;
            };
            let pm = pm_datetime(entry.source, unit);
            if pm_to_mail_date(project.time_zone, pm, zone) == date {
                return Back::Same;
            }
            let moved = pm_with_mail_date(project.time_zone, pm, zone, date);
            change(FieldValue::DateTime(pm), FieldValue::DateTime(moved))
        }
        MailField::ActualWork => {
            let Some(minutes) = observed.actual_work else {
                return Back::Cleared;
            };
            let pm = unit.assignment.actual_work;
            if work_to_minutes(pm) == minutes {
                return Back::Same;
            }
            change(
                FieldValue::Work(pm),
                FieldValue::Work(minutes_to_work(minutes)),
            )
        }
        MailField::PercentComplete => {
            let Some(percent) = observed.percent_complete else {
                // WaitingOnOthers or Deferred without a percentage keep the PM percentage.
                return if observed.status_note.is_some() {
                    Back::Same
                } else {
                    Back::Cleared
                };
            };
            let pm = pm_percent(entry.source, unit);
            if pm == percent {
                return Back::Same;
            }
            change(FieldValue::Percent(pm), FieldValue::Percent(percent))
        }
        // from_config allows `both` for no other field.
        _ => Back::Same,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use chrono_tz::{Europe, Pacific};
    use uuid::Uuid;

    use super::*;
    use crate::ews::types::{ChangeKey, Importance, ItemId, TaskStatus};
    use crate::mapping::{MappingConfig, changed_fields};
    use crate::pm::{
        Assignment, AssignmentField, AssignmentUid, FieldTimes, ProjectGuid, Resource, ResourceUid,
        Task as PmTask, TaskUid, Work,
    };

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

    fn project(zone: Tz) -> Project {
        Project {
            guid: ProjectGuid(Uuid::from_u128(0x6f9619ff_8b86_d011_b42d_00c04fc964ff)),
            name: "Apollo".into(),
            time_zone: zone,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![PmTask {
                uid: TaskUid(1),
                name: "Design review".into(),
                notes: "Check the draft\r\n".into(),
                start: at(2026, 3, 2, 8, 0),
                finish: at(2026, 3, 6, 17, 0),
                work: Work::from_hours(16),
                priority: 700,
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
                work: Work::from_minutes(450),
                actual_work: Work::from_minutes(90),
                remaining_work: Work::from_minutes(360),
                percent_work_complete: Percent::new(20).expect("in range"),
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

    fn table(toml_text: &str) -> FieldTable {
        let config: MappingConfig = toml::from_str(toml_text).expect("test TOML parses");
        FieldTable::from_config(&config).expect("valid test table")
    }

    fn desired(t: &FieldTable, p: &Project) -> MailValues {
        let units = p.sync_units();
        t.to_mail(p, &units[0], owner_zone(p, &units[0]))
    }

    #[test]
    fn to_mail_default_table_fills_every_field() {
        let p = project(Europe::Berlin);
        let v = desired(&FieldTable::default(), &p);
        assert_eq!(v.zone, Europe::Berlin);
        assert_eq!(v.subject.as_deref(), Some("Apollo: Design review"));
        assert_eq!(v.body.as_deref(), Some("Check the draft"));
        assert_eq!(v.importance, Some(MailImportance::High));
        assert_eq!(v.start_date, Some(date(2026, 3, 2)));
        assert_eq!(v.due_date, Some(date(2026, 3, 6)));
        assert_eq!(v.total_work, Some(450));
        assert_eq!(v.actual_work, Some(90));
        assert_eq!(v.percent_complete.map(Percent::get), Some(20));
        assert_eq!(v.status(), Some(TaskStatus::InProgress));
        assert_eq!(v.status_note, None);
        assert_eq!(v.categories, vec!["Apollo".to_owned()]);
        assert_eq!(v.read, None);
    }

    #[test]
    fn to_mail_resource_zone_takes_dates_there() {
        // Berlin 17:00 on Friday is 05:00 on Saturday in Auckland.
        let mut p = project(Europe::Berlin);
        p.resources[0].time_zone = Some(Pacific::Auckland);
        let v = desired(&FieldTable::default(), &p);
        assert_eq!(v.zone, Pacific::Auckland);
        assert_eq!(v.due_date, Some(date(2026, 3, 7)));
        assert_eq!(v.start_date, Some(date(2026, 3, 2)));
    }

    #[test]
    fn to_mail_dropped_fields_stay_empty() {
        let t = table("[fields]\nbody = \"off\"\ncategories = \"off\"\nsubject = \"off\"");
        let v = desired(&t, &project(Tz::UTC));
        assert_eq!(v.body, None);
        assert_eq!(v.subject, None);
        assert!(v.categories.is_empty());
        assert!(v.due_date.is_some());
    }

    #[test]
    fn to_mail_task_sources_use_task_values() {
        let t = table(
            "[fields]\nstart_date = { source = \"task.start\" }\n\
             percent_complete = { direction = \"pm-to-mail\", source = \"task.percent_work_complete\" }",
        );
        let mut p = project(Tz::UTC);
        p.tasks[0].start = at(2026, 2, 20, 8, 0);
        p.tasks[0].percent_work_complete = Percent::new(75).expect("in range");
        let v = desired(&t, &p);
        assert_eq!(v.start_date, Some(date(2026, 2, 20)));
        assert_eq!(v.percent_complete.map(Percent::get), Some(75));
    }

    #[test]
    fn from_task_reads_mapped_fields_and_read_info() {
        let task = Task {
            item_id: Some(ItemId::new("AAMk1", Some(ChangeKey::from("CK2")))),
            subject: Some("  Apollo: Design review ".into()),
            body: Some(Body::text("Line one\r\nLine two\r\n\r\n")),
            importance: Some(Importance::Low),
            categories: Some(Strings::from(vec!["Apollo".to_owned(), "Red".to_owned()])),
            last_modified_time: Some(utc(2026, 3, 4, 9, 0)),
            actual_work: Some(-5),
            total_work: Some(450),
            start_date: Some(utc(2026, 3, 1, 23, 0)),
            due_date: Some(utc(2026, 3, 5, 23, 0)),
            percent_complete: Some(40.0),
            status: Some(TaskStatus::WaitingOnOthers),
            ..Task::default()
        };
        let v = FieldTable::default().from_task(&task, Europe::Berlin);
        assert_eq!(v.subject.as_deref(), Some("Apollo: Design review"));
        assert_eq!(v.body.as_deref(), Some("Line one\nLine two"));
        assert_eq!(v.importance, Some(MailImportance::Low));
        assert_eq!(v.start_date, Some(date(2026, 3, 2)));
        assert_eq!(v.due_date, Some(date(2026, 3, 6)));
        assert_eq!(v.total_work, Some(450));
        assert_eq!(v.actual_work, Some(0));
        assert_eq!(v.percent_complete.map(Percent::get), Some(40));
        assert_eq!(v.status_note, Some(StatusNote::WaitingOnOthers));
        assert_eq!(v.categories, vec!["Apollo".to_owned(), "Red".to_owned()]);
        let read = v.read.expect("read info");
        assert_eq!(read.item_id, task.item_id);
        assert_eq!(read.last_modified_time, task.last_modified_time);
        assert_eq!(read.status, Some(TaskStatus::WaitingOnOthers));
    }

    #[test]
    fn from_task_unmapped_fields_are_not_read() {
        let t = table("[fields]\nbody = \"off\"\nactual_work = \"off\"");
        let task = Task {
            body: Some(Body::text("notes")),
            actual_work: Some(30),
            ..Task::default()
        };
        let v = t.from_task(&task, Tz::UTC);
        assert_eq!(v.body, None);
        assert_eq!(v.actual_work, None);
    }

    #[test]
    fn new_task_writes_percent_only_and_the_key() {
        let t = FieldTable::default();
        let p = project(Pacific::Tongatapu);
        let v = desired(&t, &p);
        let key = p.key(AssignmentUid(12));
        let task = t.new_task(&v, &key);
        assert_eq!(task.percent_complete, Some(20.0));
        assert_eq!(task.status, None);
        assert_eq!(task.complete_date, None);
        assert_eq!(task.is_complete, None);
        // Local midnight in Tonga (UTC+13) is 11:00 UTC the day before.
        assert_eq!(task.due_date, Some(utc(2026, 3, 5, 11, 0)));
        assert_eq!(task.start_date, Some(utc(2026, 3, 1, 11, 0)));
        assert_eq!(task.total_work, Some(450));
        assert_eq!(task.body, Some(Body::text("Check the draft")));
        assert_eq!(task.importance, Some(Importance::High));
        assert_eq!(t.read_key(&task), Some(key));
        assert_eq!(task.extended_properties.len(), 1);
        assert_eq!(
            task.extended_properties[0].value.as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff:12")
        );
    }

    #[test]
    fn updates_unchanged_values_write_nothing() {
        let t = FieldTable::default();
        let v = desired(&t, &project(Europe::Berlin));
        assert!(t.updates(&v, &v).is_empty());
    }

    #[test]
    fn updates_one_changed_field_is_one_set() {
        let t = FieldTable::default();
        let p = project(Pacific::Honolulu);
        let from = desired(&t, &p);
        let mut to = from.clone();
        to.due_date = Some(date(2026, 3, 9));
        let updates = t.updates(&from, &to);
        let expected = ItemUpdate::SetItemField {
            path: Path::field(field_uri::DUE_DATE),
            item: Box::new(Item::task(Task {
                due_date: Some(utc(2026, 3, 9, 10, 0)),
                ..Task::default()
            })),
        };
        assert_eq!(updates, vec![expected]);
    }

    #[test]
    fn updates_cleared_value_is_delete() {
        let t = FieldTable::default();
        let from = desired(&t, &project(Tz::UTC));
        let mut to = from.clone();
        to.start_date = None;
        to.body = None;
        assert_eq!(
            t.updates(&from, &to),
            vec![
                ItemUpdate::DeleteItemField {
                    path: Path::field(field_uri::BODY)
                },
                ItemUpdate::DeleteItemField {
                    path: Path::field(field_uri::START_DATE)
                },
            ]
        );
    }

    #[test]
    fn updates_percent_never_writes_status_or_complete_date() {
        let t = FieldTable::default();
        let from = desired(&t, &project(Tz::UTC));
        let mut to = from.clone();
        to.percent_complete = Some(Percent::FULL);
        let updates = t.updates(&from, &to);
        assert_eq!(updates.len(), 1);
        let ItemUpdate::SetItemField { path, item } = &updates[0] else {
            panic!("expected a set: {updates:?}");
        };
        assert_eq!(path, &Path::field(field_uri::PERCENT_COMPLETE));
        assert_eq!(
            item.fields,
            Task {
                percent_complete: Some(100.0),
                ..Task::default()
            }
        );
    }

    #[test]
    fn updates_status_note_is_not_overwritten() {
        let t = FieldTable::default();
        let to = desired(&t, &project(Tz::UTC));
        let mut from = to.clone();
        from.status_note = Some(StatusNote::Deferred);
        // The note is its own thing: not a change of the percentage, never written.
        assert!(changed_fields(&from, &to).is_empty());
        assert!(from.status_note_changed(&to));
        assert!(t.updates(&from, &to).is_empty());
    }

    #[test]
    fn updates_categories_are_added_never_removed() {
        let t = FieldTable::default();
        let to = desired(&t, &project(Tz::UTC));
        // The user added a category: nothing to write.
        let mut from = to.clone();
        from.categories = vec!["Red".into(), "Apollo".into()];
        assert!(t.updates(&from, &to).is_empty());
        // The user removed ours: it comes back, theirs stays.
        from.categories = vec!["Red".into()];
        let updates = t.updates(&from, &to);
        let expected = ItemUpdate::SetItemField {
            path: Path::field(field_uri::CATEGORIES),
            item: Box::new(Item::task(Task {
                categories: Some(Strings::from(vec!["Red".to_owned(), "Apollo".to_owned()])),
                ..Task::default()
            })),
        };
        assert_eq!(updates, vec![expected]);
        // No project category wanted: nothing is deleted.
        let mut none = to.clone();
        none.categories.clear();
        assert!(t.updates(&from, &none).is_empty());
    }

    #[test]
    fn status_update_pm_only_field_is_reported_not_updated() {
        let t = FieldTable::default();
        let p = project(Tz::UTC);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.subject = Some("My own subject".into());
        let fields = changed_fields(&desired(&t, &p), &observed);
        let inbound = t.status_update(&p, &units[0], Tz::UTC, &observed, &fields, source());
        assert_eq!(inbound.update, None);
        assert_eq!(inbound.overwritten, vec![MailField::Subject]);
    }

    #[test]
    fn status_update_two_way_fields_become_pm_changes() {
        let t = FieldTable::default();
        let p = project(Tz::UTC);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.actual_work = Some(240);
        observed.percent_complete = Some(Percent::new(50).expect("in range"));
        let fields = changed_fields(&desired(&t, &p), &observed);
        let inbound = t.status_update(&p, &units[0], Tz::UTC, &observed, &fields, source());
        let update = inbound.update.expect("an update");
        assert_eq!(update.key, p.key(AssignmentUid(12)));
        assert_eq!(update.source, source());
        assert_eq!(
            update.changes,
            vec![
                FieldChange {
                    field: AssignmentField::ActualWork,
                    old: FieldValue::Work(Work::from_minutes(90)),
                    new: FieldValue::Work(Work::from_hours(4)),
                },
                FieldChange {
                    field: AssignmentField::PercentWorkComplete,
                    old: FieldValue::Percent(Percent::new(20).expect("in range")),
                    new: FieldValue::Percent(Percent::new(50).expect("in range")),
                },
            ]
        );
        assert!(inbound.overwritten.is_empty());
    }

    #[test]
    fn status_update_sub_minute_pm_work_is_not_a_change() {
        let t = FieldTable::default();
        let mut p = project(Tz::UTC);
        p.assignments[0].actual_work = Work::from_seconds(7 * 3600 + 30 * 60 + 10);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.actual_work = Some(450);
        let inbound = t.status_update(
            &p,
            &units[0],
            Tz::UTC,
            &observed,
            &[MailField::ActualWork],
            source(),
        );
        assert_eq!(inbound.update, None);
        assert!(inbound.overwritten.is_empty());
    }

    #[test]
    fn status_update_due_date_keeps_pm_time_of_day() {
        let t = table("[fields]\ndue_date = \"both\"");
        let p = project(Europe::Berlin);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.due_date = Some(date(2026, 3, 30));
        let inbound = t.status_update(
            &p,
            &units[0],
            Europe::Berlin,
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
                new: FieldValue::DateTime(at(2026, 3, 30, 17, 0)),
            }]
        );
    }

    #[test]
    fn status_update_cleared_two_way_field_is_overwritten() {
        let t = FieldTable::default();
        let p = project(Tz::UTC);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.actual_work = None;
        let inbound = t.status_update(
            &p,
            &units[0],
            Tz::UTC,
            &observed,
            &[MailField::ActualWork],
            source(),
        );
        assert_eq!(inbound.update, None);
        assert_eq!(inbound.overwritten, vec![MailField::ActualWork]);
    }

    #[test]
    fn status_update_deferred_keeps_pm_percent_and_reports_note() {
        let t = FieldTable::default();
        let p = project(Tz::UTC);
        let units = p.sync_units();
        let mut observed = desired(&t, &p);
        observed.status_note = Some(StatusNote::Deferred);
        assert!(changed_fields(&desired(&t, &p), &observed).is_empty());
        let fields = vec![MailField::PercentComplete];
        let inbound = t.status_update(&p, &units[0], Tz::UTC, &observed, &fields, source());
        assert_eq!(inbound.update, None);
        assert!(inbound.overwritten.is_empty());
        assert_eq!(inbound.status_note, Some(StatusNote::Deferred));
        // Without a percentage at all, the PM percentage is kept too.
        observed.percent_complete = None;
        let inbound = t.status_update(&p, &units[0], Tz::UTC, &observed, &fields, source());
        assert_eq!(inbound.update, None);
        assert!(inbound.overwritten.is_empty());
    }

    #[test]
    fn read_key_foreign_or_garbled_tag_is_none() {
        let t = FieldTable::default();
        let key = project(Tz::UTC).key(AssignmentUid(12));
        let mut task = Task::default();
        assert_eq!(t.read_key(&task), None);
        task.extended_properties.push(ExtendedProperty {
            extended_field_uri: ExtendedFieldUri::named_string(
                "00000000-0000-0000-0000-000000000001",
                "taskbridge-key",
            ),
            value: Some(key.to_string()),
            values: None,
        });
        assert_eq!(t.read_key(&task), None);
        let mut garbled = t.key_property(&key);
        garbled.value = Some("not a key".into());
        task.extended_properties.push(garbled);
        assert_eq!(t.read_key(&task), None);
        // The set GUID compares case-insensitively, as Exchange returns it upper-case.
        let mut upper = t.key_property(&key);
        upper.extended_field_uri.property_set_id =
            Some(crate::mapping::DEFAULT_KEY_PROPERTY_SET_ID.to_uppercase());
        task.extended_properties = vec![upper];
        assert_eq!(t.read_key(&task), Some(key));
    }

    #[test]
    fn key_update_sets_the_tag() {
        let t = FieldTable::default();
        let key = project(Tz::UTC).key(AssignmentUid(12));
        let ItemUpdate::SetItemField { path, item } = t.key_update(&key) else {
            panic!("expected a set");
        };
        assert_eq!(path, t.key_path());
        assert_eq!(t.read_key(&item.fields), Some(key));
    }

    #[test]
    fn item_shape_fetches_what_from_task_reads() {
        let shape = FieldTable::default().item_shape();
        assert_eq!(shape.base_shape, BaseShape::IdOnly);
        assert_eq!(shape.body_type, Some(BodyType::Text));
        let paths = shape.additional_properties.expect("paths").0;
        for uri in [
            field_uri::SUBJECT,
            field_uri::BODY,
            field_uri::DUE_DATE,
            field_uri::PERCENT_COMPLETE,
            field_uri::STATUS,
            field_uri::IS_COMPLETE,
            field_uri::COMPLETE_DATE,
            field_uri::LAST_MODIFIED_TIME,
        ] {
            assert!(paths.contains(&Path::field(uri)), "{uri}");
        }
        assert!(paths.contains(&FieldTable::default().key_path()));
        let shape = table("[fields]\nbody = \"off\"\npercent_complete = \"off\"").item_shape();
        let paths = shape.additional_properties.expect("paths").0;
        assert!(!paths.contains(&Path::field(field_uri::STATUS)));
        assert_eq!(shape.body_type, None);
    }
}
