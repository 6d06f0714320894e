//! The plan round trip of a Microsoft Project user over the embedded PM host: a re-import is
//! three-way against the previous import of the same project, so progress that came back from
//! the mailboxes survives a re-import of the plan, and only what the file changed is taken.

mod harness;

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use tempfile::TempDir;

use serde_json::json;

use harness::{Harness, MAILBOXES, engine, id_of, quick_sync, start_sim, tag_of};
use taskbridge::pm::embedded::{DocumentFormat, EmbeddedHost, ImportedDocument, Policy};
use taskbridge::pm::export::ExportFormat;
use taskbridge::pm::import::import_str;
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, HostError, HostEvent,
    ImportOptions, Percent, PmHost, Project, ProjectGuid, StatusUpdate, UpdateOutcome,
    UpdateSource, Work,
};
use taskbridge::state::MailboxAddress;
use taskbridge::sync::{PublishOptions, SyncConfig};
use taskbridge_sim::SimConfig;

const SAMPLE_GUID: &str = "7d0c3e5a-9b21-4f6e-8a47-1c2d3e4f5a6b";

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-project.xml")
}

fn sample() -> String {
    std::fs::read_to_string(sample_path()).expect("sample project readable")
}

fn guid() -> ProjectGuid {
    SAMPLE_GUID.parse().expect("valid guid")
}

fn berlin() -> ImportOptions {
    ImportOptions {
        time_zone: chrono_tz::Europe::Berlin,
        ..ImportOptions::default()
    }
}

fn key(uid: i64) -> AssignmentKey {
    AssignmentKey {
        project: guid(),
        assignment: AssignmentUid(uid),
    }
}

/// A percent edit from a mailbox, as the connector submits it.
fn percent_update(uid: i64, old: u8, new: u8) -> StatusUpdate {
    StatusUpdate {
        key: key(uid),
        changes: vec![FieldChange {
            field: AssignmentField::PercentWorkComplete,
            old: FieldValue::Percent(Percent::new(old).expect("in range")),
            new: FieldValue::Percent(Percent::new(new).expect("in range")),
        }],
        source: UpdateSource {
            mailbox: "ann@example.com".into(),
            item_id: format!("AAMk-item-{uid}"),
            change_key: format!("CK-{uid}-{new}"),
            modified_at: Utc
                .with_ymd_and_hms(2026, 3, 3, 9, 0, 0)
                .single()
                .expect("valid"),
        },
        status_note: None,
        completed_on: None,
    }
}

async fn import_text(host: &EmbeddedHost, dir: &Path, name: &str, text: &str) {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("writable");
    host.import_file(&file, berlin(), None)
        .await
        .expect("imports");
}

async fn assignment(host: &EmbeddedHost, uid: i64) -> taskbridge::pm::Assignment {
    host.load_project(guid())
        .await
        .expect("readable")
        .and_then(|p| p.assignment(AssignmentUid(uid)).cloned())
        .expect("assignment exists")
}

/// Imports the sample, applies 60 % on assignment 1 and 50 % on assignment 2.
async fn sample_with_progress(dir: &Path) -> EmbeddedHost {
    let host = EmbeddedHost::open(dir).await.expect("store opens");
    host.import_file(sample_path(), berlin(), Some(Policy::Auto))
        .await
        .expect("sample imports");
    for (uid, to) in [(1, 60), (2, 50)] {
        let outcome = host
            .submit(percent_update(uid, 0, to))
            .await
            .expect("submitted");
        assert!(
            matches!(outcome, UpdateOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    host
}

#[tokio::test]
async fn reimport_of_the_original_plan_with_two_tasks_changed_keeps_applied_progress() {
    let dir = TempDir::new().expect("temp dir");
    let host = sample_with_progress(dir.path()).await;
    // The PM re-plans two tasks in the file it imported before the updates came back.
    let edited = sample()
        .replace(
            "<Finish>2026-03-10T17:00:00</Finish><Work>PT40H0M0S</Work></Assignment>",
            "<Finish>2026-03-10T17:00:00</Finish><Work>PT48H0M0S</Work></Assignment>",
        )
        .replace(
            "<Name>Install bearing pads</Name>",
            "<Name>Install elastomeric bearing pads</Name>",
        );
    assert_ne!(edited, sample(), "the sample changed; update the test");
    let file = dir.path().join("plan-v2.xml");
    std::fs::write(&file, edited).expect("writable");
    let report = host
        .import_file(&file, berlin(), None)
        .await
        .expect("re-imports");
    assert_eq!(report.changed, 2, "{report:?}");
    assert!(report.overridden.is_empty(), "{report:?}");

    let a1 = assignment(&host, 1).await;
    assert_eq!(a1.percent_work_complete.get(), 60);
    assert_eq!(a1.actual_work, Work::from_minutes(24 * 60 * 60 / 100));
    let a2 = assignment(&host, 2).await;
    assert_eq!(a2.percent_work_complete.get(), 50);
    assert_eq!(a2.actual_work, Work::from_hours(4));
    let a3 = assignment(&host, 3).await;
    assert_eq!(a3.work, Work::from_hours(48));
    assert_eq!(a3.remaining_work, Work::from_hours(48));
    let p = host
        .load_project(guid())
        .await
        .expect("readable")
        .expect("stored");
    let t4 = p.task(taskbridge::pm::TaskUid(4)).expect("task 4");
    assert_eq!(t4.name, "Install elastomeric bearing pads");
}

#[tokio::test]
async fn file_change_of_one_field_is_taken_while_an_applied_update_of_another_stays() {
    let dir = TempDir::new().expect("temp dir");
    let host = sample_with_progress(dir.path()).await;
    let before = assignment(&host, 1).await;
    let edited = sample().replace(
        "<Finish>2026-03-04T17:00:00</Finish><Work>PT24H0M0S</Work><ActualWork>",
        "<Finish>2026-03-05T17:00:00</Finish><Work>PT24H0M0S</Work><ActualWork>",
    );
    assert_ne!(edited, sample(), "the sample changed; update the test");
    let t0 = Utc::now();
    import_text(&host, dir.path(), "plan-v2.xml", &edited).await;
    let a1 = assignment(&host, 1).await;
    assert_eq!(a1.finish.to_string(), "2026-03-05 17:00:00");
    assert!(
        a1.modified
            .get(AssignmentField::Finish)
            .is_some_and(|at| at >= t0)
    );
    // The applied percent and its time stay as the status update left them.
    assert_eq!(a1.percent_work_complete.get(), 60);
    assert_eq!(a1.actual_work, before.actual_work);
    assert_eq!(
        a1.modified.get(AssignmentField::PercentWorkComplete),
        before.modified.get(AssignmentField::PercentWorkComplete)
    );
}

#[tokio::test]
async fn file_wins_over_a_status_update_of_the_same_field_and_the_report_says_so() {
    let dir = TempDir::new().expect("temp dir");
    let host = sample_with_progress(dir.path()).await;
    // The PM types 2 h of actual work for assignment 2 (8 h planned), where the mailbox said 50 %.
    let edited = sample().replace(
        "<Work>PT8H0M0S</Work><ActualWork>PT0H0M0S</ActualWork><RemainingWork>PT8H0M0S</RemainingWork>",
        "<Work>PT8H0M0S</Work><ActualWork>PT2H0M0S</ActualWork><RemainingWork>PT6H0M0S</RemainingWork>",
    );
    assert_ne!(edited, sample(), "the sample changed; update the test");
    let file = dir.path().join("plan-v2.xml");
    std::fs::write(&file, edited).expect("writable");
    let report = host
        .import_file(&file, berlin(), None)
        .await
        .expect("re-imports");
    let a2 = assignment(&host, 2).await;
    assert_eq!(a2.actual_work, Work::from_hours(2));
    assert_eq!(a2.remaining_work, Work::from_hours(6));
    assert_eq!(a2.percent_work_complete.get(), 25);
    let fields: Vec<_> = report
        .overridden
        .iter()
        .map(|o| (o.assignment.0, o.field))
        .collect();
    assert!(
        fields.contains(&(2, AssignmentField::ActualWork))
            && fields.contains(&(2, AssignmentField::RemainingWork)),
        "{report:?}"
    );
    assert!(fields.iter().all(|(uid, _)| *uid == 2), "{report:?}");
    // Assignment 1's progress is untouched.
    assert_eq!(assignment(&host, 1).await.percent_work_complete.get(), 60);
}

#[tokio::test]
async fn reimport_of_the_same_file_after_updates_changes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let host = sample_with_progress(dir.path()).await;
    let before = host.load_project(guid()).await.expect("readable");
    let report = host
        .import_file(sample_path(), berlin(), None)
        .await
        .expect("re-imports");
    assert_eq!((report.added, report.changed, report.removed), (0, 0, 0));
    assert_eq!(host.load_project(guid()).await.expect("readable"), before);
}

/// The sample plan imported and published to the simulator's mailboxes.
async fn published_sample() -> Harness {
    let sim = start_sim(SimConfig::for_tests(&[
        "ann@example.com:pw-ann",
        "bob@example.com:pw-bob",
        "chen@example.com:pw-chen",
    ]))
    .await;
    let dir = TempDir::new().expect("temp dir");
    let host = EmbeddedHost::open(dir.path()).await.expect("store opens");
    host.import_file(sample_path(), berlin(), Some(Policy::Auto))
        .await
        .expect("sample imports");
    let (engine, spy) = engine(&sim, &host, dir.path(), quick_sync());
    let h = Harness {
        sim,
        host,
        engine,
        spy,
        dir,
        http: reqwest::Client::new(),
        project: guid(),
    };
    let report = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.created, 6, "{report:?}");
    h
}

/// Ann reports 60 % on the survey, Bob finishes the joint removal: both in "Outlook".
async fn people_report_progress(h: &Harness) {
    for (uid, percent) in [(1, 60), (3, 100)] {
        let (mailbox, task) = h.task_of(uid).await;
        h.edit(
            &mailbox,
            &id_of(&task),
            json!({ "PercentComplete": percent }),
        )
        .await;
        let report = h
            .engine
            .sync_mailbox(&MailboxAddress::new(&mailbox))
            .await
            .expect("mailbox pass");
        assert_eq!(report.applied, 1, "{report:?}");
    }
}

/// The plan imported again with Bob's address changed to Ann's: his tasks move to her mailbox.
async fn bob_takes_anns_address(h: &Harness) {
    let plan = sample().replace(
        "<EmailAddress>bob@example.com</EmailAddress>",
        "<EmailAddress>ann@example.com</EmailAddress>",
    );
    import_text(&h.host, h.dir.path(), "moved.xml", &plan).await;
}

/// The sample's `<Assignment>` record of `uid`, as the file has it.
fn assignment_record(plan: &str, uid: i64) -> String {
    let open = format!("<Assignment><UID>{uid}</UID>");
    let start = plan.find(&open).expect("record");
    let end = "</Assignment>";
    plan[start..start + plan[start..].find(end).expect("end") + end.len()].to_string()
}

/// An engine whose mass-delete guard refuses any deletion without `--force`.
fn guarding_engine(h: &Harness) -> harness::TestEngine {
    let strict = SyncConfig {
        max_delete_floor: 0,
        max_delete_share: 0.0,
        ..quick_sync()
    };
    engine(&h.sim, &h.host, h.dir.path(), strict).0
}

/// The harness's state store, opened again.
fn state_of(h: &Harness) -> taskbridge::state::SqliteStore {
    taskbridge::state::SqliteStore::open(&h.dir.path().join("state.sqlite")).expect("state")
}

/// The next publish has nothing left to do: no create, no delete, nothing failed or deferred.
async fn next_publish_is_clean(h: &Harness) {
    let again = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert!(again.is_clean() && again.deferred == 0, "{again:?}");
    assert_eq!((again.created, again.deleted), (0, 0), "{again:?}");
}

/// The text of the first `<name>` child of the record `<kind><UID>uid</UID>...` in `doc`.
fn element_of(doc: &str, kind: &str, uid: i64, name: &str) -> Option<String> {
    let open = format!("<{kind}><UID>{uid}</UID>");
    let start = doc.find(&open)?;
    let end = start + doc[start..].find(&format!("</{kind}>"))?;
    let record = &doc[start..end];
    let from = record.find(&format!("<{name}>"))? + name.len() + 2;
    let to = from + record[from..].find(&format!("</{name}>"))?;
    Some(record[from..to].to_string())
}

#[tokio::test]
async fn export_after_mailbox_edits_carries_the_progress_and_reimports_without_a_request() {
    let h = published_sample().await;
    people_report_progress(&h).await;
    let stored = h
        .host
        .load_project(guid())
        .await
        .expect("readable")
        .expect("stored");

    // Re-importing the original file (saved before the progress came back): the dry run shows
    // no lowered progress and no change, and nothing is lost.
    let original = ImportedDocument {
        format: DocumentFormat::Mspdi,
        text: sample(),
    };
    let plan = import_str(&sample(), &berlin()).expect("sample");
    let preview = h
        .host
        .import_document(plan.clone(), Some(original.clone()), None, true)
        .await
        .expect("dry run");
    assert!(preview.dry_run);
    assert!(preview.lowered_progress.is_empty(), "{preview:?}");
    assert!(preview.field_changes.is_empty(), "{preview:?}");
    h.host
        .import_document(plan.clone(), Some(original.clone()), None, false)
        .await
        .expect("re-imports");
    let kept = h
        .host
        .load_project(guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(kept.assignments, stored.assignments);

    let exported = h
        .host
        .export(guid(), ExportFormat::Mspdi)
        .await
        .expect("export");
    assert!(exported.contains("<Project xmlns=\"http://schemas.microsoft.com/project\">"));
    // Field by field, as Microsoft Project would read them.
    let read = import_str(&exported, &berlin()).expect("the export is valid MSPDI");
    for a in &stored.assignments {
        let e = read.assignment(a.uid).expect("exported assignment");
        assert_eq!(
            (e.start, e.finish, e.work, e.actual_work, e.remaining_work),
            (a.start, a.finish, a.work, a.actual_work, a.remaining_work),
            "assignment {}",
            a.uid
        );
        assert_eq!(e.percent_work_complete, a.percent_work_complete);
        assert_eq!(e.actual_finish, a.actual_finish);
    }
    assert_eq!(
        element_of(&exported, "Assignment", 1, "PercentWorkComplete").as_deref(),
        Some("60")
    );
    assert_eq!(
        element_of(&exported, "Assignment", 1, "ActualWork").as_deref(),
        Some("PT14H24M0S")
    );
    assert_eq!(
        element_of(&exported, "Assignment", 1, "ActualStart").as_deref(),
        Some("2026-03-02T08:00:00")
    );
    // Completed in the mailbox: the actual finish is the day the owner completed it (the
    // mailbox's CompleteDate in the owner's zone), not the planned finish.
    let (_, task3) = h.task_of(3).await;
    let completed: chrono::DateTime<Utc> = task3["CompleteDate"]
        .as_str()
        .expect("CompleteDate")
        .parse()
        .expect("a time");
    let finish = stored
        .assignment(AssignmentUid(3))
        .and_then(|a| a.actual_finish)
        .expect("an actual finish");
    assert_eq!(
        finish.date(),
        completed
            .with_timezone(&chrono_tz::Europe::Berlin)
            .date_naive()
    );
    assert_eq!(
        element_of(&exported, "Assignment", 3, "ActualFinish"),
        Some(finish.format("%Y-%m-%dT%H:%M:%S").to_string())
    );
    assert_eq!(
        element_of(&exported, "Assignment", 3, "RemainingWork").as_deref(),
        Some("PT0H0M0S")
    );
    // Rolled up to the tasks and the project summary task: 14.4 h + 40 h of the 120 h the
    // assignments plan (the file's summary said 136 h; Project sums the assignments).
    assert_eq!(
        element_of(&exported, "Task", 3, "PercentWorkComplete").as_deref(),
        Some("100")
    );
    assert_eq!(
        element_of(&exported, "Task", 0, "ActualWork").as_deref(),
        Some("PT54H24M0S")
    );
    assert_eq!(
        element_of(&exported, "Task", 0, "PercentWorkComplete").as_deref(),
        Some("45")
    );
    // Assignment 2 was not touched: its element is byte for byte the original's.
    let a2 = |doc: &str| {
        let s = doc.find("<Assignment><UID>2</UID>").expect("a2");
        let e = s + doc[s..].find("</Assignment>").expect("end");
        doc[s..e].to_string()
    };
    assert_eq!(a2(&exported), a2(&sample()));

    // Re-importing the export changes nothing and sends nothing.
    let file = h.dir.path().join("exported.xml");
    std::fs::write(&file, &exported).expect("writable");
    let report = h
        .host
        .import_file(&file, berlin(), None)
        .await
        .expect("re-imports");
    assert_eq!(
        (report.added, report.changed, report.removed),
        (0, 0, 0),
        "{report:?}"
    );
    assert!(report.field_changes.is_empty(), "{report:?}");
    let after = h
        .host
        .load_project(guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(after.assignments, stored.assignments);
    let before = h.sim.counters();
    let again = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(again.unchanged, 6, "{again:?}");
    for op in ["CreateItem", "UpdateItem", "DeleteItem"] {
        assert_eq!(
            before["operations"][op],
            h.sim.counters()["operations"][op],
            "{op} sent after re-importing the export"
        );
    }

    // The mailboxes still show the progress.
    let (_, survey) = h.task_of(1).await;
    assert_eq!(survey["PercentComplete"], 60.0);
    assert!(MAILBOXES.contains(&"ann@example.com"));

    // The export is now the last import, so the old file is a step back: its dry run warns
    // and names the assignments whose progress it would lower.
    let preview = h
        .host
        .import_document(plan, Some(original), None, true)
        .await
        .expect("dry run");
    assert_eq!(
        preview.lowered_progress,
        vec![AssignmentUid(1), AssignmentUid(3)],
        "{preview:?}"
    );
    let unchanged = h
        .host
        .load_project(guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(
        unchanged.assignments, stored.assignments,
        "a dry run writes nothing"
    );
}

/// Every leaf of an XML document: its path (with a per-name index at each level) and text.
fn leaves(doc: &str) -> std::collections::BTreeMap<String, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::reader::Reader::from_str(doc);
    let mut path: Vec<(String, std::collections::HashMap<String, usize>)> =
        vec![(String::new(), Default::default())];
    let mut out = std::collections::BTreeMap::new();
    let mut text = String::new();
    loop {
        match reader.read_event().expect("well-formed") {
            Event::Start(e) => {
                let name = e.local_name().into_inner().to_owned();
                let counts = &mut path.last_mut().expect("root").1;
                let n = counts.entry(name.clone()).or_default();
                let segment = format!("{name}#{n}");
                *n += 1;
                path.push((segment, Default::default()));
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => text.push_str(&format!("&{};", r.xml10_content())),
            Event::End(_) => {
                let key: Vec<&str> = path.iter().skip(1).map(|(s, _)| s.as_str()).collect();
                if path.last().is_some_and(|(_, c)| c.is_empty()) {
                    out.insert(key.join("/"), text.trim().to_string());
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn export_of_a_project_2019_file_keeps_every_element_it_does_not_change() {
    let dir = TempDir::new().expect("temp dir");
    let host = EmbeddedHost::open(dir.path()).await.expect("store opens");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mspdi/project2019.xml");
    let report = host
        .import_file(&path, berlin(), Some(Policy::Auto))
        .await
        .expect("imports");
    let project = report.project;
    let update = StatusUpdate {
        key: AssignmentKey {
            project,
            assignment: AssignmentUid(2),
        },
        ..percent_update(2, 0, 40)
    };
    let outcome = host.submit(update).await.expect("submitted");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );

    let original = std::fs::read_to_string(&path).expect("readable");
    let exported = host
        .export(project, ExportFormat::Mspdi)
        .await
        .expect("export");
    let (before, after) = (leaves(&original), leaves(&exported));
    // What an update of assignment 2 (task 3, under the summary task 1 and the project summary
    // task 0) may change: its actuals and those rolled up to the three tasks.
    let may_change = [
        "PercentWorkComplete",
        "ActualWork",
        "RemainingWork",
        "ActualStart",
        "ActualFinish",
    ];
    let records = [
        "Tasks#0/Task#0/",
        "Tasks#0/Task#1/",
        "Tasks#0/Task#3/",
        "Assignments#0/Assignment#1/",
    ];
    let allowed = |key: &str| {
        records.iter().any(|r| {
            key.strip_prefix("Project#0/")
                .and_then(|k| k.strip_prefix(r))
                .is_some_and(|field| may_change.contains(&field.split('#').next().unwrap_or("")))
        })
    };
    let mut changed = Vec::new();
    for (key, value) in &before {
        if after.get(key) != Some(value) {
            assert!(allowed(key), "{key}: {value:?} became {:?}", after.get(key));
            changed.push(key.clone());
        }
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        assert!(allowed(key), "{key} was added");
        changed.push(key.clone());
    }
    assert!(
        changed.contains(&"Project#0/Assignments#0/Assignment#1/PercentWorkComplete#0".to_string()),
        "{changed:?}"
    );
    // Calendars, baselines, extended attributes and timephased data are all still there.
    for kept in [
        "Project#0/Calendars#0/Calendar#0/WeekDays#0/WeekDay#1/WorkingTimes#0/WorkingTime#0/FromTime#0",
        "Project#0/Tasks#0/Task#2/Baseline#0/Work#0",
        "Project#0/Tasks#0/Task#2/ExtendedAttribute#0/Value#0",
        "Project#0/Assignments#0/Assignment#0/TimephasedData#0/Value#0",
    ] {
        assert_eq!(before.get(kept), after.get(kept), "{kept}");
        assert!(after.contains_key(kept), "{kept}");
    }
    let read = import_str(&exported, &berlin()).expect("valid MSPDI");
    let a2 = read.assignment(AssignmentUid(2)).expect("a2");
    assert_eq!(a2.percent_work_complete.get(), 40);
    assert_eq!(a2.actual_work, Work::from_hours(6));
}

#[tokio::test]
async fn publish_preview_names_each_planned_write_and_sends_nothing() {
    let h = published_sample().await;
    people_report_progress(&h).await;
    // The PM re-plans the bearing pads (assignment 4, Chen) in the file.
    let edited = sample().replace(
        "<Finish>2026-03-16T17:00:00</Finish><Work>PT32H0M0S</Work></Assignment>",
        "<Finish>2026-03-16T17:00:00</Finish><Work>PT36H0M0S</Work></Assignment>",
    );
    assert_ne!(edited, sample(), "the sample changed; update the test");
    import_text(&h.host, h.dir.path(), "plan-v2.xml", &edited).await;
    let before = h.sim.counters();
    let preview = h
        .engine
        .preview_publish(guid(), false)
        .await
        .expect("preview");
    assert_eq!(
        before["operations"],
        h.sim.counters()["operations"],
        "a preview sent a request"
    );
    assert_eq!(preview.changes.len(), 1, "{preview:?}");
    let change = &preview.changes[0];
    assert_eq!(change.key, key(4));
    assert_eq!(change.mailbox, "chen@example.com");
    assert_eq!(change.action, taskbridge::sync::PlannedAction::Update);
    assert_eq!(change.fields.len(), 1, "{change:?}");
    assert_eq!(preview.unchanged, 5);
    // The publish then does exactly that.
    let report = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!((report.updated, report.unchanged), (1, 5), "{report:?}");
    let again = h
        .engine
        .preview_publish(guid(), false)
        .await
        .expect("preview");
    assert!(again.changes.is_empty(), "{again:?}");
}

#[tokio::test]
async fn remove_project_deletes_its_tasks_and_leaves_no_row_in_either_store() {
    use taskbridge::state::StateStore;
    use taskbridge::sync::RemoveOptions;

    let h = published_sample().await;
    people_report_progress(&h).await;
    let count_tasks = || async {
        let mut n = 0;
        for m in MAILBOXES {
            n += h.tasks(m).await.len();
        }
        n
    };
    assert_eq!(count_tasks().await, 6);
    // A guard of one task per mailbox refuses, and nothing is removed.
    let strict = {
        let mut config = quick_sync();
        config.max_delete_floor = 1;
        config.max_delete_share = 0.0;
        config
    };
    let (guarded, _) = engine(&h.sim, &h.host, h.dir.path(), strict);
    let refused = guarded
        .remove_project(guid(), RemoveOptions::default())
        .await
        .expect("remove");
    assert_eq!(refused.refused_deletes, 6, "{refused:?}");
    assert!(!refused.is_complete());
    assert_eq!(count_tasks().await, 6);
    // A dry run names the mailboxes and sends nothing.
    let before = h.sim.counters();
    let preview = h
        .engine
        .remove_project(
            guid(),
            RemoveOptions {
                dry_run: true,
                ..RemoveOptions::default()
            },
        )
        .await
        .expect("dry run");
    assert_eq!(preview.deleted.values().sum::<usize>(), 6, "{preview:?}");
    assert_eq!(before["operations"], h.sim.counters()["operations"]);
    assert_eq!(count_tasks().await, 6);

    let report = h
        .engine
        .remove_project(guid(), RemoveOptions::default())
        .await
        .expect("remove");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.deleted.values().sum::<usize>(), 6, "{report:?}");
    let rows = h
        .host
        .remove_project(guid())
        .await
        .expect("PM rows removed");
    assert_eq!((rows.assignments, rows.status_updates), (7, 2), "{rows:?}");
    assert_eq!(
        count_tasks().await,
        0,
        "a task of the project is left in a mailbox"
    );
    // No row in either store.
    let state = state_of(&h);
    assert!(
        state
            .project_assignments(guid())
            .await
            .expect("rows")
            .is_empty()
    );
    assert!(state.audit(Some(guid())).await.expect("audit").is_empty());
    assert!(
        h.host
            .load_project(guid())
            .await
            .expect("readable")
            .is_none()
    );
    let updates = h
        .host
        .status_updates(Default::default())
        .await
        .expect("updates");
    assert!(updates.is_empty(), "{updates:?}");
    assert!(h.host.project_guids().await.expect("guids").is_empty());
}

/// A host that lists no units (the trait's default), so that a publish plans from the whole
/// plan, as with a host that can only load whole projects. With `answers_first_only` it also
/// answers only the first of the status updates it is given together, and names no error for
/// the others (a host with a fault of its own).
#[derive(Clone)]
struct WholePlanHost {
    host: EmbeddedHost,
    answers_first_only: bool,
}

impl PmHost for WholePlanHost {
    async fn projects(&self) -> Result<Vec<ProjectGuid>, HostError> {
        self.host.projects().await
    }

    async fn project(&self, guid: ProjectGuid) -> Result<Option<Project>, HostError> {
        PmHost::project(&self.host, guid).await
    }

    async fn project_part(
        &self,
        guid: ProjectGuid,
        uids: &[AssignmentUid],
    ) -> Result<Option<Project>, HostError> {
        self.host.project_part(guid, uids).await
    }

    async fn submit_status_update(&self, update: StatusUpdate) -> Result<UpdateOutcome, HostError> {
        self.host.submit_status_update(update).await
    }

    async fn submit_status_updates(
        &self,
        mut updates: Vec<StatusUpdate>,
    ) -> taskbridge::pm::Submitted {
        if self.answers_first_only {
            updates.truncate(1);
        }
        self.host.submit_status_updates(updates).await
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        self.host.subscribe()
    }
}

/// Two edits of one mailbox read together go to the host in one call; a host that answers
/// the first only, naming no error, fails the pass, so that the mailbox's sync state does not
/// move past the other edit, which the next pass applies.
#[tokio::test]
async fn an_edit_the_host_left_unanswered_is_applied_by_the_next_pass() {
    let h = published_sample().await;
    let mailbox = "ann@example.com";
    let tasks = h.tasks(mailbox).await;
    assert!(tasks.len() >= 2, "{tasks:?}");
    for task in &tasks[..2] {
        h.edit(mailbox, &id_of(task), json!({ "PercentComplete": 40 }))
            .await;
    }
    let state = state_of(&h);
    let faulty = taskbridge::sync::Engine::new(
        WholePlanHost {
            host: h.host.clone(),
            answers_first_only: true,
        },
        h.spy.clone(),
        state,
        taskbridge::mapping::FieldTable::default(),
        quick_sync(),
    );
    let address = MailboxAddress::new(mailbox);
    let error = faulty
        .sync_mailbox(&address)
        .await
        .expect_err("an update without an answer fails the pass");
    assert!(
        error.to_string().contains("fewer status updates"),
        "{error}"
    );
    let taken = |h: &Harness| {
        let host = h.host.clone();
        async move {
            host.status_updates(Default::default())
                .await
                .expect("updates")
                .len()
        }
    };
    assert_eq!(taken(&h).await, 1);
    let report = h.engine.sync_mailbox(&address).await.expect("mailbox pass");
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(taken(&h).await, 2);
}

/// A re-publish after the plan moved and removed assignments, mailbox by mailbox (the
/// embedded host lists its units) and from the whole plan (a host that does not): Bob's
/// address becomes Ann's, so his two tasks (one he finished) leave his mailbox for hers, the
/// milestone leaves Chen's plan, and Ann gets a new assignment. One mailbox at a time, in
/// address order, so the new mailbox (Ann's) is done before the old one (Bob's). Both ways
/// leave the same tasks and the same rows, the finished task keeps its 100 % in its new
/// mailbox, and the next publish sends nothing.
#[tokio::test]
async fn a_republish_moves_and_removes_tasks_the_same_mailbox_by_mailbox_as_from_the_whole_plan() {
    use taskbridge::state::StateStore;

    let mut outcomes = Vec::new();
    for listed in [true, false] {
        let h = published_sample().await;
        people_report_progress(&h).await;
        let milestone = "\t\t<Assignment><UID>6</UID><TaskUID>6</TaskUID><ResourceUID>3</ResourceUID><Start>2026-03-20T17:00:00</Start>\n\t\t\t<Finish>2026-03-20T17:00:00</Finish><Work>PT0H0M0S</Work></Assignment>\n";
        let plan = sample();
        assert!(plan.contains(milestone));
        let plan = plan
            .replace(milestone, "\t\t<Assignment><UID>8</UID><TaskUID>4</TaskUID><ResourceUID>1</ResourceUID><Start>2026-03-11T08:00:00</Start>\n\t\t\t<Finish>2026-03-16T17:00:00</Finish><Work>PT8H0M0S</Work></Assignment>\n")
            .replace(
                "<EmailAddress>bob@example.com</EmailAddress>",
                "<EmailAddress>ann@example.com</EmailAddress>",
            );
        import_text(&h.host, h.dir.path(), "moved.xml", &plan).await;

        let one_at_a_time = SyncConfig {
            mailbox_concurrency: 1,
            ..quick_sync()
        };
        let state = || state_of(&h);
        let table = taskbridge::mapping::FieldTable::default;
        let report = if listed {
            let engine = taskbridge::sync::Engine::new(
                h.host.clone(),
                h.spy.clone(),
                state(),
                table(),
                one_at_a_time,
            );
            engine.publish(guid(), PublishOptions::default()).await
        } else {
            let engine = taskbridge::sync::Engine::new(
                WholePlanHost {
                    host: h.host.clone(),
                    answers_first_only: false,
                },
                h.spy.clone(),
                state(),
                table(),
                one_at_a_time,
            );
            engine.publish(guid(), PublishOptions::default()).await
        }
        .expect("publish");
        assert_eq!(
            (report.created, report.deleted, report.failed),
            (3, 3, 0),
            "listed {listed}: {report:?}"
        );
        let mut tasks = std::collections::BTreeMap::new();
        for m in MAILBOXES {
            let mut here: Vec<(String, Option<f64>)> = h
                .tasks(m)
                .await
                .iter()
                .map(|t| {
                    (
                        t["Subject"].as_str().unwrap_or("").to_owned(),
                        t["PercentComplete"].as_f64(),
                    )
                })
                .collect();
            here.sort_by(|a, b| a.0.cmp(&b.0));
            tasks.insert(m, here);
        }
        assert!(tasks["bob@example.com"].is_empty(), "{tasks:?}");
        assert_eq!(tasks["chen@example.com"].len(), 1, "{tasks:?}");
        assert_eq!(tasks["ann@example.com"].len(), 5, "{tasks:?}");
        assert!(
            tasks["ann@example.com"]
                .iter()
                .any(|(_, percent)| *percent == Some(100.0)),
            "the finished task kept its progress in its new mailbox: {tasks:?}"
        );
        let rows: Vec<(i64, String, bool)> = state()
            .project_assignments(guid())
            .await
            .expect("rows")
            .into_iter()
            .map(|s| (s.key.assignment.0, s.mailbox.to_string(), s.item.is_some()))
            .collect();
        let before = h.sim.counters()["operations"].clone();
        let again = h
            .engine
            .publish(guid(), PublishOptions::default())
            .await
            .expect("publish");
        assert_eq!(again.unchanged, 6, "{again:?}");
        assert_eq!(before, h.sim.counters()["operations"], "a request");
        outcomes.push((tasks, rows));
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

/// Waits (polling) until `f` gives a value; a hang is a bug, so the bound is generous.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn watch_folder_imports_a_saved_plan_and_writes_the_plan_with_progress_beside_it() {
    use taskbridge::pm::embedded::{WatchConfig, run_watch_folder};

    let sim = start_sim(SimConfig::for_tests(&[
        "ann@example.com:pw-ann",
        "bob@example.com:pw-bob",
        "chen@example.com:pw-chen",
    ]))
    .await;
    let dir = TempDir::new().expect("temp dir");
    let watch = dir.path().join("plans");
    std::fs::create_dir(&watch).expect("watch dir");
    let host = EmbeddedHost::open(dir.path().join("data"))
        .await
        .expect("store opens");
    let (engine, spy) = engine(&sim, &host, &dir.path().join("data"), quick_sync());
    let h = Harness {
        sim,
        host,
        engine,
        spy,
        dir,
        http: reqwest::Client::new(),
        project: guid(),
    };
    let mut config = WatchConfig::new(&watch);
    config.import = berlin();
    config.poll_interval = std::time::Duration::from_millis(50);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(run_watch_folder(h.host.clone(), config, async move {
        let _ = stopped.await;
    }));

    // A plan cut off half way (still being written, or broken) is not imported.
    let plan = watch.join("bridge.xml");
    let full = sample();
    std::fs::write(&plan, &full[..full.len() / 2]).expect("writable");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(h.host.project_guids().await.expect("guids").is_empty());
    // Saved completely: imported, then published.
    std::fs::write(&plan, &full).expect("writable");
    eventually("the import", || async {
        (!h.host.project_guids().await.ok()?.is_empty()).then_some(())
    })
    .await;
    let report = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.created, 6, "{report:?}");

    // Ann reports progress in "Outlook": the plan beside the file shows it.
    let (mailbox, task) = h.task_of(1).await;
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 60 }))
        .await;
    h.engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("mailbox pass");
    let exported = watch.join("bridge.taskbridge.xml");
    let text = eventually("the exported plan", || async {
        let text = std::fs::read_to_string(&exported).ok()?;
        text.contains("<PercentWorkComplete>60</PercentWorkComplete>")
            .then_some(text)
    })
    .await;
    let read = import_str(&text, &berlin()).expect("valid MSPDI");
    assert_eq!(
        read.assignment(AssignmentUid(1))
            .expect("a1")
            .percent_work_complete
            .get(),
        60
    );
    // The export is not taken for a plan of its own, and no temporary file is left.
    let names: Vec<String> = std::fs::read_dir(&watch)
        .expect("listable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(h.host.project_guids().await.expect("guids").len(), 1);
    let _ = stop.send(());
    watcher.await.expect("the watcher stops");
}

/// Bob's address becomes Ann's and the mass-delete guard refuses to delete his old tasks:
/// the move is held back whole, not made by halves. His tasks stay in his mailbox, tracked
/// (what he reports there is still heard), Ann gets no copies, and the preview says the same;
/// a forced publish then moves them, leaving nothing behind untracked. Both ways of planning.
#[tokio::test]
async fn a_move_the_delete_guard_refuses_is_held_whole_until_a_forced_publish() {
    use taskbridge::state::StateStore;

    for listed in [true, false] {
        let h = published_sample().await;
        people_report_progress(&h).await;
        bob_takes_anns_address(&h).await;
        let strict = SyncConfig {
            max_delete_floor: 1,
            max_delete_share: 0.0,
            mailbox_concurrency: 1,
            ..quick_sync()
        };
        let state = || state_of(&h);
        let whole_plan = || {
            taskbridge::sync::Engine::new(
                WholePlanHost {
                    host: h.host.clone(),
                    answers_first_only: false,
                },
                h.spy.clone(),
                state(),
                taskbridge::mapping::FieldTable::default(),
                strict.clone(),
            )
        };
        let (listing, _) = engine(&h.sim, &h.host, h.dir.path(), strict.clone());
        let publish = |force: bool| {
            let options = PublishOptions {
                force,
                ..PublishOptions::default()
            };
            let (listing, whole) = (listing.clone(), whole_plan());
            async move {
                if listed {
                    listing.publish(guid(), options).await
                } else {
                    whole.publish(guid(), options).await
                }
                .expect("publish")
            }
        };
        let bobs_rows = || async {
            state()
                .project_assignments(guid())
                .await
                .expect("rows")
                .into_iter()
                .filter(|r| r.mailbox.to_string() == "bob@example.com")
                .count()
        };

        let preview = listing
            .preview_publish(guid(), false)
            .await
            .expect("preview");
        assert_eq!(preview.refused_deletes, 2, "listed {listed}: {preview:?}");
        assert!(
            preview
                .changes
                .iter()
                .all(|c| c.mailbox != "ann@example.com"),
            "listed {listed}: {preview:?}"
        );
        let held = publish(false).await;
        assert_eq!(
            (held.refused_deletes, held.created, held.deleted),
            (2, 0, 0),
            "listed {listed}: {held:?}"
        );
        assert_eq!(h.tasks("bob@example.com").await.len(), 2);
        assert_eq!(h.tasks("ann@example.com").await.len(), 2);
        assert_eq!(bobs_rows().await, 2, "listed {listed}");
        // Held, the tasks are still synced: what Bob reports on one is applied.
        let (mailbox, task) = h.task_of(2).await;
        assert_eq!(mailbox, "bob@example.com");
        h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 40 }))
            .await;
        let pass = listing
            .sync_mailbox(&MailboxAddress::new(&mailbox))
            .await
            .expect("mailbox pass");
        assert_eq!(pass.applied, 1, "listed {listed}: {pass:?}");
        // Asked again, the guard holds them again.
        assert_eq!(publish(false).await.refused_deletes, 2, "listed {listed}");

        let forced = publish(true).await;
        assert_eq!(
            (
                forced.refused_deletes,
                forced.created,
                forced.deleted,
                forced.failed
            ),
            (0, 2, 2, 0),
            "listed {listed}: {forced:?}"
        );
        assert!(
            h.tasks("bob@example.com").await.is_empty(),
            "listed {listed}"
        );
        let ann = h.tasks("ann@example.com").await;
        assert_eq!(ann.len(), 4, "listed {listed}");
        assert!(
            ann.iter()
                .any(|t| t["PercentComplete"].as_f64() == Some(40.0)),
            "the progress reported while held moved with the task: {ann:?}"
        );
        assert_eq!(bobs_rows().await, 0, "listed {listed}");
        let again = publish(false).await;
        assert!(again.is_clean(), "listed {listed}: {again:?}");
        assert_eq!((again.created, again.deleted), (0, 0), "listed {listed}");
    }
}

/// Bob's address becomes Ann's, and the publish that moves his two tasks is killed after each
/// of its mailbox calls in turn (the last call reaching the server or not). A restarted engine
/// finishes the move: Bob's mailbox is empty, Ann has one task per assignment, none twice,
/// and the next publish has nothing to write. Before, a kill between Ann's new tasks and
/// the deletion of Bob's old ones left those in his mailbox for good, untracked.
#[tokio::test]
async fn a_move_killed_at_every_step_leaves_no_task_behind_after_a_restart() {
    async fn moved() -> Harness {
        let h = published_sample().await;
        people_report_progress(&h).await;
        bob_takes_anns_address(&h).await;
        h
    }
    let calls = |h: &Harness| {
        h.ops()
            .as_object()
            .map(|ops| ops.values().filter_map(|n| n.as_u64()).sum::<u64>())
            .unwrap_or(0)
    };
    let probe = moved().await;
    let before = calls(&probe);
    let report = probe
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!((report.created, report.deleted), (2, 2), "{report:?}");
    let steps = calls(&probe) - before;
    assert!(steps >= 3, "steps {steps}");
    let one_at_a_time = SyncConfig {
        mailbox_concurrency: 1,
        ..quick_sync()
    };
    for step in 0..steps as usize {
        for send_last in [false, true] {
            let h = moved().await;
            let (dying, spy) = engine(&h.sim, &h.host, h.dir.path(), one_at_a_time.clone());
            spy.crash_after(step, send_last);
            let _ = dying.publish(guid(), PublishOptions::default()).await;
            drop(dying);
            let (engine, _) = engine(&h.sim, &h.host, h.dir.path(), quick_sync());
            let report = engine
                .publish(guid(), PublishOptions::default())
                .await
                .expect("publish after restart");
            assert_eq!(report.failed, 0, "step {step} ({send_last}): {report:?}");
            let bob = h.tasks("bob@example.com").await;
            assert!(
                bob.is_empty(),
                "step {step} ({send_last}): left behind {bob:?}"
            );
            let mut tags: Vec<String> = h
                .tasks("ann@example.com")
                .await
                .iter()
                .filter_map(tag_of)
                .collect();
            tags.sort();
            let count = tags.len();
            tags.dedup();
            assert_eq!(
                (count, tags.len()),
                (4, 4),
                "step {step} ({send_last}): {tags:?}"
            );
            let again = engine
                .publish(guid(), PublishOptions::default())
                .await
                .expect("publish");
            assert_eq!(
                (again.created, again.updated, again.deleted, again.unchanged),
                (0, 0, 0, 6),
                "step {step} ({send_last}): {again:?}"
            );
        }
    }
}

/// Bob and Chen swap addresses: each mailbox has tasks moving out and in. Every old task is
/// deleted before its new one is made, so the first publish makes the half whose old tasks
/// went first and leaves the rest to the next, which finishes: no task twice, none behind.
#[tokio::test]
async fn two_resources_swapping_addresses_end_with_each_task_once_in_its_new_mailbox() {
    let h = published_sample().await;
    people_report_progress(&h).await;
    let (_, bobs) = h.task_of(2).await;
    let (_, chens) = h.task_of(4).await;
    let plan = sample()
        .replace(
            "<EmailAddress>bob@example.com</EmailAddress>",
            "<EmailAddress>swap</EmailAddress>",
        )
        .replace(
            "<EmailAddress>chen@example.com</EmailAddress>",
            "<EmailAddress>bob@example.com</EmailAddress>",
        )
        .replace(
            "<EmailAddress>swap</EmailAddress>",
            "<EmailAddress>chen@example.com</EmailAddress>",
        );
    import_text(&h.host, h.dir.path(), "swapped.xml", &plan).await;
    let h = &h;
    let tags = |m: &'static str| async move {
        let mut t: Vec<String> = h.tasks(m).await.iter().filter_map(tag_of).collect();
        t.sort();
        t
    };
    let (bob_before, chen_before) = (
        tags("bob@example.com").await,
        tags("chen@example.com").await,
    );
    let mut reports = Vec::new();
    for _ in 0..3 {
        let report = h
            .engine
            .publish(guid(), PublishOptions::default())
            .await
            .expect("publish");
        assert_eq!(report.failed, 0, "{report:?}");
        let done = report.deferred == 0;
        reports.push(report);
        if done {
            break;
        }
    }
    assert!(reports.len() <= 2, "{reports:?}");
    let created: usize = reports.iter().map(|r| r.created).sum();
    let deleted: usize = reports.iter().map(|r| r.deleted).sum();
    assert_eq!(
        (created, deleted),
        (
            bob_before.len() + chen_before.len(),
            bob_before.len() + chen_before.len()
        ),
        "{reports:?}"
    );
    assert_eq!(tags("chen@example.com").await, bob_before);
    assert_eq!(tags("bob@example.com").await, chen_before);
    // The old items themselves are gone.
    let ids: Vec<String> = [
        h.tasks("bob@example.com").await,
        h.tasks("chen@example.com").await,
    ]
    .concat()
    .iter()
    .map(id_of)
    .collect();
    assert!(!ids.contains(&id_of(&bobs)) && !ids.contains(&id_of(&chens)));
    next_publish_is_clean(h).await;
}

/// Bob's address becomes Ann's while his old mailbox can no longer be reached (gone, or no
/// access). His tasks cannot be deleted, so they are not made in Ann's mailbox either: the
/// publish reports the failed deletions and leaves the move to the next publish, and his rows
/// keep tracking the old tasks. Reachable again, the next publish makes the move.
#[tokio::test]
async fn a_move_out_of_a_mailbox_that_cannot_be_reached_waits_unless_forced() {
    use taskbridge::state::StateStore;

    let h = published_sample().await;
    people_report_progress(&h).await;
    bob_takes_anns_address(&h).await;
    h.spy.deny("bob@example.com", true);
    let state = || state_of(&h);
    let bobs_rows = || async {
        state()
            .project_assignments(guid())
            .await
            .expect("rows")
            .into_iter()
            .filter(|r| r.mailbox.to_string() == "bob@example.com" && r.item.is_some())
            .count()
    };
    for _ in 0..2 {
        let waiting = h
            .engine
            .publish(guid(), PublishOptions::default())
            .await
            .expect("publish");
        assert_eq!(
            (waiting.failed, waiting.deferred, waiting.created),
            (2, 2, 0),
            "{waiting:?}"
        );
        assert!(!waiting.is_clean());
        assert_eq!(h.tasks("ann@example.com").await.len(), 2);
        assert_eq!(bobs_rows().await, 2);
    }
    // Reachable again, the next publish finishes the move.
    h.spy.deny("bob@example.com", false);
    let done = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(
        (done.failed, done.deferred, done.created, done.deleted),
        (0, 0, 2, 2),
        "{done:?}"
    );
    assert!(h.tasks("bob@example.com").await.is_empty());
    assert_eq!(h.tasks("ann@example.com").await.len(), 4);
}

/// As above, but the operator gives up on the old mailbox: `--force` makes the move, leaving
/// the old tasks behind, and nothing tracks them any more (the operator chose that).
#[tokio::test]
async fn a_forced_publish_moves_tasks_out_of_a_mailbox_that_cannot_be_reached() {
    use taskbridge::state::StateStore;

    let h = published_sample().await;
    bob_takes_anns_address(&h).await;
    h.spy.deny("bob@example.com", true);
    let forced = h
        .engine
        .publish(
            guid(),
            PublishOptions {
                force: true,
                ..PublishOptions::default()
            },
        )
        .await
        .expect("publish");
    assert_eq!(
        (forced.failed, forced.deferred, forced.created),
        (2, 0, 2),
        "{forced:?}"
    );
    assert_eq!(h.tasks("ann@example.com").await.len(), 4);
    let rows = state_of(&h)
        .project_assignments(guid())
        .await
        .expect("rows");
    assert!(
        rows.iter()
            .all(|r| r.mailbox.to_string() != "bob@example.com"),
        "{rows:?}"
    );
    // Nothing tracks Bob's old mailbox any more: the next publish is clean.
    next_publish_is_clean(&h).await;
}

/// Chen's two assignments leave the plan, and the delete guard refuses their deletion, so his
/// tasks stay in his mailbox. He reports 70 % on one of them anyway, then corrects it to 80 %;
/// the plan then comes back with them (the removal was the mistake the guard is there for).
/// What Chen reported last is taken by the publish that finds the assignment back, and
/// nothing he typed is overwritten meanwhile. Before, the pass took the item's version with
/// nothing applied, and his report never reached the plan.
#[tokio::test]
async fn progress_reported_on_a_task_whose_removal_was_refused_is_taken_when_it_comes_back() {
    let h = published_sample().await;
    let engine = guarding_engine(&h);
    let plan = sample();
    let without_chen = plan
        .replace(&assignment_record(&plan, 4), "")
        .replace(&assignment_record(&plan, 6), "");
    import_text(&h.host, h.dir.path(), "without-chen.xml", &without_chen).await;
    let refused = engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(refused.refused_deletes, 2, "{refused:?}");
    assert_eq!(h.tasks("chen@example.com").await.len(), 2);

    let (mailbox, task) = h.task_of(4).await;
    assert_eq!(mailbox, "chen@example.com");
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 70 }))
        .await;
    let pass = engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("mailbox pass");
    assert_eq!(
        (pass.awaiting_plan, pass.applied, pass.failed),
        (1, 0, 0),
        "{pass:?}"
    );
    let state = || state_of(&h);
    let row = || async {
        use taskbridge::state::StateStore;
        state()
            .assignment(&key(4))
            .await
            .expect("readable")
            .expect("still tracked")
    };
    assert_eq!(row().await.status.name(), "awaiting-plan");
    // He corrects it to 80 %: that waits too, and nothing is written to his task.
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 80 }))
        .await;
    let again = engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("mailbox pass");
    assert_eq!(
        (again.awaiting_plan, again.applied, again.written),
        (1, 0, 0),
        "{again:?}"
    );
    assert_eq!(
        h.tasks("chen@example.com")
            .await
            .iter()
            .filter(|t| t["PercentComplete"].as_f64() == Some(80.0))
            .count(),
        1,
        "the mailbox keeps what Chen typed"
    );

    import_text(&h.host, h.dir.path(), "back.xml", &sample()).await;
    let preview = engine
        .preview_publish(guid(), false)
        .await
        .expect("preview");
    assert_eq!(
        (preview.awaiting, preview.changes.len()),
        (1, 0),
        "{preview:?}"
    );
    let back = engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!((back.taken, back.failed), (1, 0), "{back:?}");
    assert_eq!(row().await.status.name(), "synced");
    let chen = h.tasks("chen@example.com").await;
    assert!(
        chen.iter()
            .any(|t| t["PercentComplete"].as_f64() == Some(80.0)),
        "{chen:?}"
    );
    assert_eq!(
        assignment(&h.host, 4).await.percent_work_complete,
        Percent::new(80).expect("in range"),
        "the progress Chen reported reached the plan"
    );
}

/// As above, but the assignment comes back given to Ann: Chen's report is taken in his mailbox
/// before his task is deleted, so Ann's new task and the plan both show it.
#[tokio::test]
async fn progress_that_waited_for_its_assignment_moves_with_it_to_another_mailbox() {
    let h = published_sample().await;
    let engine = guarding_engine(&h);
    let plan = sample();
    let record = &assignment_record(&plan, 4);
    import_text(
        &h.host,
        h.dir.path(),
        "without-four.xml",
        &plan.replace(record, ""),
    )
    .await;
    let refused = engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(refused.refused_deletes, 1, "{refused:?}");
    let (mailbox, task) = h.task_of(4).await;
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 70 }))
        .await;
    let pass = engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("mailbox pass");
    assert_eq!(pass.awaiting_plan, 1, "{pass:?}");

    let to_ann = record.replace(
        "<ResourceUID>3</ResourceUID>",
        "<ResourceUID>1</ResourceUID>",
    );
    import_text(
        &h.host,
        h.dir.path(),
        "to-ann.xml",
        &plan.replace(record, &to_ann),
    )
    .await;
    let moved = engine
        .publish(
            guid(),
            PublishOptions {
                force: true,
                ..PublishOptions::default()
            },
        )
        .await
        .expect("publish");
    assert_eq!(
        (moved.taken, moved.created, moved.deleted, moved.failed),
        (1, 1, 1, 0),
        "{moved:?}"
    );
    assert_eq!(h.tasks("chen@example.com").await.len(), 1);
    let (now_in, _) = h.task_of(4).await;
    assert_eq!(now_in, "ann@example.com");
    let ann = h.tasks("ann@example.com").await;
    assert!(
        ann.iter()
            .any(|t| t["PercentComplete"].as_f64() == Some(70.0)),
        "Ann's new task shows what Chen reported: {ann:?}"
    );
    assert_eq!(
        assignment(&h.host, 4).await.percent_work_complete,
        Percent::new(70).expect("in range")
    );
}

/// Under approval: Chen's 70 % waits for the status manager when his assignment leaves the
/// plan (the guard keeps his task). The re-import rejects the pending update, and the
/// connector, asking the host again, finds the assignment gone: the edit waits in the
/// mailbox. He corrects it to 80 %; the plan comes back, the publish submits the 80 % for
/// approval, and once approved the plan shows it.
#[tokio::test]
async fn progress_pending_approval_when_its_assignment_left_the_plan_is_submitted_again_when_it_comes_back()
 {
    let h = published_sample().await;
    h.host
        .set_policy(guid(), Policy::Approval)
        .await
        .expect("policy");
    let engine = guarding_engine(&h);
    let (mailbox, task) = h.task_of(4).await;
    let chen = MailboxAddress::new(&mailbox);
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 70 }))
        .await;
    let pass = engine.sync_mailbox(&chen).await.expect("mailbox pass");
    assert_eq!(pass.pending, 1, "{pass:?}");

    let plan = sample();
    let record = &assignment_record(&plan, 4);
    import_text(
        &h.host,
        h.dir.path(),
        "without-four.xml",
        &plan.replace(record, ""),
    )
    .await;
    assert_eq!(
        engine.recheck_pending().await.expect("recheck"),
        1,
        "the rejection is found"
    );
    let refused = engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(refused.refused_deletes, 1, "{refused:?}");
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 80 }))
        .await;
    let pass = engine.sync_mailbox(&chen).await.expect("mailbox pass");
    assert_eq!((pass.awaiting_plan, pass.pending), (1, 0), "{pass:?}");

    import_text(&h.host, h.dir.path(), "back.xml", &plan).await;
    let back = engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!((back.taken, back.failed), (1, 0), "{back:?}");
    let waiting: Vec<_> = harness::updates(&h.host)
        .await
        .into_iter()
        .filter(|u| u["state"] == "pending")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let id = waiting[0]["id"].as_str().expect("id").to_string();
    h.host
        .approve(&taskbridge::pm::StatusUpdateId(id), "sm", false)
        .await
        .expect("approves");
    assert_eq!(engine.recheck_pending().await.expect("recheck"), 1);
    assert_eq!(
        assignment(&h.host, 4).await.percent_work_complete,
        Percent::new(80).expect("in range"),
        "the progress Chen reported last reached the plan"
    );
    let (_, task) = h.task_of(4).await;
    assert_eq!(task["PercentComplete"], 80.0);
}

/// Bob reports 40 % on a task just before his address changes to Ann's and the publish moves
/// his tasks, before any pass of his mailbox took the edit (a notification still in its
/// debounce, or lost). The publish reads the old task before deleting it: the 40 % reaches
/// the plan and Ann's new task shows it.
#[tokio::test]
async fn an_edit_not_yet_taken_moves_with_its_task_to_the_new_mailbox() {
    let h = published_sample().await;
    let (mailbox, task) = h.task_of(2).await;
    assert_eq!(mailbox, "bob@example.com");
    h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": 40 }))
        .await;
    bob_takes_anns_address(&h).await;
    let moved = h
        .engine
        .publish(guid(), PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(
        (moved.created, moved.deleted, moved.failed),
        (2, 2, 0),
        "{moved:?}"
    );
    assert!(h.tasks("bob@example.com").await.is_empty());
    assert_eq!(
        assignment(&h.host, 2).await.percent_work_complete,
        Percent::new(40).expect("in range"),
        "what Bob reported reached the plan"
    );
    let ann = h.tasks("ann@example.com").await;
    assert!(
        ann.iter()
            .any(|t| t["PercentComplete"].as_f64() == Some(40.0)),
        "Ann's new task shows it: {ann:?}"
    );
}
