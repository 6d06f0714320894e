//! MSPDI written: a new document for a project that did not come from one ([`write()`]), or the
//! imported document with the changed values written into it ([`write_into`]).
//!
//! Element order follows Microsoft's MSPDI schema (`mspdi_pj12.xsd` and later), durations are
//! `PT..H..M..S`, dates zone-less local. [`write_into`] edits the document's text in place: each
//! changed value replaces the text of its element, a value new to the record is inserted before
//! the first sibling that the schema orders after it, and every other byte stays as it was.

use std::collections::HashMap;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::{AssignmentActuals, ExportError, TaskActuals, local_date, roll_up};
use crate::pm::import::MSPDI_NAMESPACE;
use crate::pm::model::{Assignment, Project, Task};

/// The children of `Task` that taskbridge writes, among their schema neighbours, in schema order.
const TASK_ORDER: &[&str] = &[
    "UID",
    "GUID",
    "ID",
    "Name",
    "Active",
    "Manual",
    "Type",
    "IsNull",
    "CreateDate",
    "Contact",
    "WBS",
    "WBSLevel",
    "OutlineNumber",
    "OutlineLevel",
    "Priority",
    "Start",
    "Finish",
    "Duration",
    "ManualStart",
    "ManualFinish",
    "ManualDuration",
    "DurationFormat",
    "Work",
    "Stop",
    "Resume",
    "ResumeValid",
    "EffortDriven",
    "Recurring",
    "OverAllocated",
    "Estimated",
    "Milestone",
    "Summary",
    "DisplayAsSummary",
    "Critical",
    "IsSubproject",
    "IsSubprojectReadOnly",
    "SubprojectName",
    "ExternalTask",
    "ExternalTaskProject",
    "EarlyStart",
    "EarlyFinish",
    "LateStart",
    "LateFinish",
    "StartVariance",
    "FinishVariance",
    "WorkVariance",
    "FreeSlack",
    "TotalSlack",
    "StartSlack",
    "FinishSlack",
    "FixedCost",
    "FixedCostAccrual",
    "PercentComplete",
    "PercentWorkComplete",
    "Cost",
    "OvertimeCost",
    "OvertimeWork",
    "ActualStart",
    "ActualFinish",
    "ActualDuration",
    "ActualCost",
    "ActualOvertimeCost",
    "ActualWork",
    "ActualOvertimeWork",
    "RegularWork",
    "RemainingDuration",
    "RemainingCost",
    "RemainingWork",
    "RemainingOvertimeCost",
    "RemainingOvertimeWork",
    "ACWP",
    "CV",
    "ConstraintType",
    "CalendarUID",
    "ConstraintDate",
    "Deadline",
    "LevelAssignments",
    "LevelingCanSplit",
    "LevelingDelay",
    "LevelingDelayFormat",
    "PreLeveledStart",
    "PreLeveledFinish",
    "Hyperlink",
    "HyperlinkAddress",
    "HyperlinkSubAddress",
    "IgnoreResourceCalendar",
    "Notes",
    "HideBar",
    "Rollup",
    "BCWS",
    "BCWP",
    "PhysicalPercentComplete",
    "EarnedValueMethod",
    "PredecessorLink",
    "ActualWorkProtected",
    "ActualOvertimeWorkProtected",
    "ExtendedAttribute",
    "Baseline",
    "OutlineCode",
    "IsPublished",
    "StatusManager",
    "CommitmentStart",
    "CommitmentFinish",
    "CommitmentType",
    "TimephasedData",
];

/// The children of `Assignment`, in schema order.
const ASSIGNMENT_ORDER: &[&str] = &[
    "UID",
    "GUID",
    "TaskUID",
    "ResourceUID",
    "PercentWorkComplete",
    "ActualCost",
    "ActualFinish",
    "ActualOvertimeCost",
    "ActualOvertimeWork",
    "ActualStart",
    "ActualWork",
    "ACWP",
    "Confirmed",
    "Cost",
    "CostRateTable",
    "RateScale",
    "CostVariance",
    "CV",
    "Delay",
    "Finish",
    "FinishVariance",
    "Hyperlink",
    "HyperlinkAddress",
    "HyperlinkSubAddress",
    "WorkVariance",
    "HasFixedRateUnits",
    "FixedMaterial",
    "LevelingDelay",
    "LevelingDelayFormat",
    "LinkedFields",
    "Milestone",
    "Notes",
    "Overallocated",
    "OvertimeCost",
    "OvertimeWork",
    "PeakUnits",
    "RegularWork",
    "RemainingCost",
    "RemainingOvertimeCost",
    "RemainingOvertimeWork",
    "RemainingWork",
    "ResponsePending",
    "Start",
    "Stop",
    "Resume",
    "StartVariance",
    "Summary",
    "SV",
    "Units",
    "UpdateNeeded",
    "VAC",
    "Work",
    "WorkContour",
    "BCWS",
    "BCWP",
    "BookingType",
    "ActualWorkProtected",
    "ActualOvertimeWorkProtected",
    "CreationDate",
    "AssnOwner",
    "AssnOwnerGuid",
    "BudgetCost",
    "BudgetWork",
    "ExtendedAttribute",
    "Baseline",
    "TimephasedData",
];

/// One element value to write: `Some(text)` sets it, `None` removes the element.
type Value = (&'static str, Option<String>);

fn percent_text(p: crate::pm::model::Percent) -> String {
    p.get().to_string()
}

/// The assignment values an export writes, in schema order.
fn assignment_values(a: &Assignment) -> Vec<Value> {
    let act = AssignmentActuals::of(a);
    vec![
        (
            "PercentWorkComplete",
            Some(percent_text(act.percent_work_complete)),
        ),
        ("ActualFinish", act.actual_finish.map(local_date)),
        ("ActualStart", act.actual_start.map(local_date)),
        ("ActualWork", Some(act.actual_work.to_mspdi())),
        ("Finish", Some(local_date(a.finish))),
        ("RemainingWork", Some(act.remaining_work.to_mspdi())),
        ("Start", Some(local_date(a.start))),
        ("Work", Some(act.work.to_mspdi())),
    ]
}

/// The task values an export writes, in schema order: the task's own fields, and the roll-up
/// when the task has one.
fn task_values(t: &Task, rolled: Option<&TaskActuals>) -> Vec<Value> {
    let mut out = vec![
        ("Name", Some(t.name.clone())),
        ("Priority", Some(t.priority.to_string())),
    ];
    if let Some(r) = rolled {
        out.extend([
            ("Work", Some(r.work.to_mspdi())),
            (
                "PercentWorkComplete",
                Some(percent_text(r.percent_work_complete)),
            ),
            ("ActualStart", r.actual_start.map(local_date)),
            ("ActualFinish", r.actual_finish.map(local_date)),
            ("ActualWork", Some(r.actual_work.to_mspdi())),
            ("RemainingWork", Some(r.remaining_work.to_mspdi())),
        ]);
    }
    out.push(("Notes", (!t.notes.is_empty()).then(|| t.notes.clone())));
    out
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// A new MSPDI document for `project`.
pub fn write(project: &Project) -> String {
    let rolled = roll_up(project);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n");
    x.push_str(&format!("<Project xmlns=\"{MSPDI_NAMESPACE}\">\n"));
    x.push_str("\t<SaveVersion>14</SaveVersion>\n");
    x.push_str(&format!(
        "\t<GUID>{}</GUID>\n",
        project.guid.to_string().to_uppercase()
    ));
    x.push_str(&format!("\t<Title>{}</Title>\n", escape(&project.name)));
    if let Some(start) = project.start {
        x.push_str(&format!("\t<StartDate>{}</StartDate>\n", local_date(start)));
    }
    x.push_str(&format!(
        "\t<MinutesPerDay>{}</MinutesPerDay>\n\t<MinutesPerWeek>{}</MinutesPerWeek>\n",
        project.minutes_per_day, project.minutes_per_week
    ));
    x.push_str("\t<Tasks>\n");
    for (id, t) in project.tasks.iter().enumerate() {
        let mut fields: Vec<(&'static str, Option<String>)> = vec![
            ("UID", Some(t.uid.0.to_string())),
            ("ID", Some(id.to_string())),
            ("OutlineLevel", Some(t.outline_level.to_string())),
            ("Start", Some(local_date(t.start))),
            ("Finish", Some(local_date(t.finish))),
            ("Milestone", Some(u8::from(t.milestone).to_string())),
            ("Summary", Some(u8::from(t.summary).to_string())),
        ];
        let own = TaskActuals {
            work: t.work,
            actual_work: super::own_actual(t.work, t.percent_work_complete),
            remaining_work: t
                .work
                .saturating_sub(super::own_actual(t.work, t.percent_work_complete)),
            percent_work_complete: t.percent_work_complete,
            actual_start: None,
            actual_finish: None,
        };
        fields.extend(task_values(t, Some(rolled.get(&t.uid).unwrap_or(&own))));
        x.push_str("\t\t<Task>");
        push_ordered(&mut x, fields, TASK_ORDER);
        x.push_str("</Task>\n");
    }
    x.push_str("\t</Tasks>\n\t<Resources>\n");
    for (id, r) in project.resources.iter().enumerate() {
        x.push_str(&format!(
            "\t\t<Resource><UID>{}</UID><ID>{id}</ID><Name>{}</Name><Type>1</Type>",
            r.uid.0,
            escape(&r.name)
        ));
        if let Some(email) = &r.email {
            x.push_str(&format!("<EmailAddress>{}</EmailAddress>", escape(email)));
        }
        x.push_str("</Resource>\n");
    }
    x.push_str("\t</Resources>\n\t<Assignments>\n");
    for a in &project.assignments {
        let mut fields: Vec<(&'static str, Option<String>)> = vec![
            ("UID", Some(a.uid.0.to_string())),
            ("TaskUID", Some(a.task_uid.0.to_string())),
            ("ResourceUID", Some(a.resource_uid.0.to_string())),
        ];
        fields.extend(assignment_values(a));
        x.push_str("\t\t<Assignment>");
        push_ordered(&mut x, fields, ASSIGNMENT_ORDER);
        x.push_str("</Assignment>\n");
    }
    x.push_str("\t</Assignments>\n</Project>\n");
    x
}

fn order_of(order: &[&str], name: &str) -> Option<usize> {
    order.iter().position(|n| *n == name)
}

fn push_ordered(x: &mut String, mut fields: Vec<Value>, order: &[&str]) {
    fields.sort_by_key(|(name, _)| order_of(order, name).unwrap_or(usize::MAX));
    for (name, value) in fields {
        if let Some(v) = value {
            x.push_str(&format!("<{name}>{}</{name}>", escape(&v)));
        }
    }
}

/// A direct child of a record in the document.
#[derive(Debug)]
struct Child {
    name: String,
    /// Byte range of the whole element.
    start: usize,
    end: usize,
    /// Byte range of its text, for `<X>text</X>` (none for `<X/>`).
    content: Option<(usize, usize)>,
}

/// A `Task` or `Assignment` element of the document.
#[derive(Debug, Default)]
struct Record {
    uid: Option<i64>,
    prefix: String,
    children: Vec<Child>,
    /// Where its end tag starts.
    close: usize,
}

/// Records of one kind by UID.
type Records = HashMap<i64, Record>;

/// The `Task` and `Assignment` records of an MSPDI document, by UID.
fn scan(text: &str) -> Result<(Records, Records), ExportError> {
    let bad = |e: &dyn std::fmt::Display| ExportError::Document(e.to_string());
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut path: Vec<String> = Vec::new();
    let mut tasks = HashMap::new();
    let mut assignments = HashMap::new();
    let mut record: Option<Record> = None;
    let mut child: Option<(String, usize, usize)> = None;
    let mut uid_text = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| bad(&e))?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(e) => {
                let name = e.local_name().into_inner().to_owned();
                if path.is_empty() && name != "Project" {
                    return Err(ExportError::Document("the root is not Project".into()));
                }
                path.push(name.clone());
                if is_record(&path) {
                    let prefix = e
                        .name()
                        .prefix()
                        .map(|p| format!("{}:", p.into_inner()))
                        .unwrap_or_default();
                    record = Some(Record {
                        prefix,
                        ..Record::default()
                    });
                } else if path.len() == 4 && record.is_some() {
                    child = Some((name, before, after));
                    uid_text.clear();
                }
            }
            Event::Empty(e) => {
                if path.len() == 3
                    && let Some(r) = record.as_mut()
                {
                    let name = e.local_name().into_inner().to_owned();
                    r.children.push(Child {
                        name,
                        start: before,
                        end: after,
                        content: None,
                    });
                }
            }
            Event::Text(t) if child.as_ref().is_some_and(|(n, _, _)| n == "UID") => {
                uid_text.push_str(&t.xml10_content());
            }
            Event::End(_) => {
                if path.len() == 4
                    && let (Some(r), Some((name, start, content_start))) =
                        (record.as_mut(), child.take())
                {
                    if name == "UID" {
                        r.uid = uid_text.trim().parse().ok();
                    }
                    r.children.push(Child {
                        name,
                        start,
                        end: after,
                        content: Some((content_start, before)),
                    });
                } else if is_record(&path)
                    && let Some(mut r) = record.take()
                {
                    r.close = before;
                    if let Some(uid) = r.uid {
                        let into = if path[2] == "Task" {
                            &mut tasks
                        } else {
                            &mut assignments
                        };
                        into.insert(uid, r);
                    }
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((tasks, assignments))
}

fn is_record(path: &[String]) -> bool {
    path.len() == 3
        && path[0] == "Project"
        && ((path[1] == "Tasks" && path[2] == "Task")
            || (path[1] == "Assignments" && path[2] == "Assignment"))
}

/// One text edit: replace `start..end` with `text`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// The edits that make `record` show `values` (only those given).
fn edits_for(record: &Record, values: Vec<Value>, order: &[&str], edits: &mut Vec<Edit>) {
    for (name, value) in values {
        let existing = record.children.iter().find(|c| c.name == name);
        match (existing, value) {
            (Some(c), Some(v)) => match c.content {
                Some((from, to)) => edits.push(Edit {
                    start: from,
                    end: to,
                    text: escape(&v),
                }),
                None => edits.push(Edit {
                    start: c.start,
                    end: c.end,
                    text: element(&record.prefix, name, &v),
                }),
            },
            (Some(c), None) => edits.push(Edit {
                start: c.start,
                end: c.end,
                text: String::new(),
            }),
            (None, Some(v)) => {
                let rank = order_of(order, name).unwrap_or(usize::MAX);
                let at = record
                    .children
                    .iter()
                    .find(|c| order_of(order, &c.name).is_some_and(|r| r > rank))
                    .map_or(record.close, |c| c.start);
                edits.push(Edit {
                    start: at,
                    end: at,
                    text: element(&record.prefix, name, &v),
                });
            }
            (None, None) => {}
        }
    }
}

fn element(prefix: &str, name: &str, value: &str) -> String {
    format!("<{prefix}{name}>{}</{prefix}{name}>", escape(value))
}

/// Writes into `document` (the MSPDI file `imported` was read from) the values of `current`
/// that differ from `imported`: per assignment its dates and actuals, per task its name,
/// priority, notes and roll-up. Everything else in the document is kept byte for byte.
pub fn write_into(
    document: &str,
    imported: &Project,
    current: &Project,
) -> Result<String, ExportError> {
    let (task_records, assignment_records) = scan(document)?;
    let (was_rolled, now_rolled) = (roll_up(imported), roll_up(current));
    let mut edits = Vec::new();
    for t in &current.tasks {
        let (Some(record), Some(before)) = (task_records.get(&t.uid.0), imported.task(t.uid))
        else {
            continue;
        };
        let old = task_values(before, was_rolled.get(&t.uid));
        let new = task_values(t, now_rolled.get(&t.uid));
        let changed = changed_values(old, new);
        edits_for(record, changed, TASK_ORDER, &mut edits);
    }
    for a in &current.assignments {
        let (Some(record), Some(before)) =
            (assignment_records.get(&a.uid.0), imported.assignment(a.uid))
        else {
            continue;
        };
        let changed = changed_values(assignment_values(before), assignment_values(a));
        edits_for(record, changed, ASSIGNMENT_ORDER, &mut edits);
    }
    // Inserts at one place keep the order they were made in (schema order per record).
    edits.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(document.len() + edits.len() * 40);
    let mut cursor = 0;
    for e in edits {
        if e.start < cursor {
            return Err(ExportError::Document("overlapping edits".into()));
        }
        out.push_str(&document[cursor..e.start]);
        out.push_str(&e.text);
        cursor = e.end;
    }
    out.push_str(&document[cursor..]);
    Ok(out)
}

/// The values of `new` that differ from `old` (same names, same order).
fn changed_values(old: Vec<Value>, new: Vec<Value>) -> Vec<Value> {
    new.into_iter()
        .zip(old)
        .filter(|(n, o)| n != o)
        .map(|(n, _)| n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pm::import::{ImportOptions, import_str};

    const PLAN: &str = r#"{"guid": "11111111-2222-4333-8444-555555555555", "name": "Fish & chips",
      "tasks": [
        {"uid": 0, "name": "p", "summary": true, "outline_level": 0,
         "start": "2026-03-02T08:00", "finish": "2026-03-03T17:00", "work": "PT16H"},
        {"uid": 1, "name": "A <first>", "notes": "n", "outline_level": 1,
         "percent_work_complete": 100,
         "start": "2026-03-02T08:00", "finish": "2026-03-03T17:00", "work": "PT16H"}],
      "resources": [{"uid": 1, "name": "Ann", "email": "ann@example.com"}],
      "assignments": [
        {"uid": 1, "task_uid": 1, "resource_uid": 1, "work": "PT16H", "actual_work": "PT16H",
         "actual_finish": "2026-03-03T17:00"}]}"#;

    /// Whether every record's known children follow the schema order.
    fn in_schema_order(doc: &str) -> bool {
        let (tasks, assignments) = scan(doc).expect("well-formed");
        let ordered = |records: &Records, order: &[&str]| {
            records.values().all(|r| {
                let ranks: Vec<usize> = r
                    .children
                    .iter()
                    .filter_map(|c| order_of(order, &c.name))
                    .collect();
                ranks.windows(2).all(|w| w[0] < w[1])
            })
        };
        ordered(&tasks, TASK_ORDER) && ordered(&assignments, ASSIGNMENT_ORDER)
    }

    #[test]
    fn new_document_is_mspdi_in_schema_order_and_reads_back_the_same() {
        let project = import_str(PLAN, &ImportOptions::default()).expect("valid");
        let doc = write(&project);
        assert!(doc.contains(r#"<Project xmlns="http://schemas.microsoft.com/project">"#));
        assert!(doc.contains("<Title>Fish &amp; chips</Title>"));
        assert!(doc.contains("<ActualFinish>2026-03-03T17:00:00</ActualFinish>"));
        assert!(in_schema_order(&doc), "{doc}");
        let back = import_str(&doc, &ImportOptions::default()).expect("reads back");
        assert_eq!(back.assignments, project.assignments);
        assert_eq!(
            back.task(crate::pm::model::TaskUid(1)),
            project.task(crate::pm::model::TaskUid(1))
        );
    }

    #[test]
    fn values_inserted_into_a_document_keep_its_schema_order() {
        let doc = r#"<Project xmlns="http://schemas.microsoft.com/project"><GUID>11111111-2222-4333-8444-555555555555</GUID><Tasks><Task><UID>1</UID><Name>A</Name><Start>2026-03-02T08:00:00</Start><Finish>2026-03-03T17:00:00</Finish><Work>PT16H0M0S</Work><Baseline><Number>0</Number><Work>PT1H0M0S</Work></Baseline></Task></Tasks><Resources><Resource><UID>1</UID><Name>Ann</Name><EmailAddress>ann@example.com</EmailAddress></Resource></Resources><Assignments><Assignment><UID>1</UID><TaskUID>1</TaskUID><ResourceUID>1</ResourceUID><Finish>2026-03-03T17:00:00</Finish><Start>2026-03-02T08:00:00</Start><Work>PT16H0M0S</Work><TimephasedData><Type>1</Type></TimephasedData></Assignment></Assignments></Project>"#;
        let imported = import_str(doc, &ImportOptions::default()).expect("valid");
        let mut current = imported.clone();
        current.assignments[0].apply_percent(crate::pm::model::Percent::new(50).expect("valid"));
        let out = write_into(doc, &imported, &current).expect("rewritten");
        assert!(in_schema_order(&out), "{out}");
        assert!(out.contains("<Baseline><Number>0</Number><Work>PT1H0M0S</Work></Baseline>"));
        assert!(out.contains("<TimephasedData><Type>1</Type></TimephasedData></Assignment>"));
        let back = import_str(&out, &ImportOptions::default()).expect("reads back");
        assert_eq!(
            back.assignments[0].actual_work,
            current.assignments[0].actual_work
        );
        assert_eq!(back.assignments[0].percent_work_complete.get(), 50);
    }
}
