//! The plan round trip of a Microsoft Project user over the embedded PM host: a re-import is
//! three-way against the previous import of the same project, so progress that came back from
//! the mailboxes survives a re-import of the plan, and only what the file changed is taken.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use tempfile::TempDir;

use taskbridge::pm::embedded::{EmbeddedHost, Policy};
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, ImportOptions, Percent,
    ProjectGuid, StatusUpdate, UpdateOutcome, UpdateSource, Work,
};

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
