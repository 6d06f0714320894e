//! Imports the hand-written fixtures under `fixtures/mspdi/` and `fixtures/projects/` and checks
//! concrete values, the mailbox filtering of `sync_units`, and where each broken file fails.

use std::path::PathBuf;

use taskbridge::pm::import::{ImportError, ImportOptions, Place, import_file};
use taskbridge::pm::{AssignmentUid, Project, ProjectGuid, ResourceUid, TaskUid, Work};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn options() -> ImportOptions {
    ImportOptions::default()
}

fn with_fallback() -> ImportOptions {
    ImportOptions {
        fallback_guid: Some(
            "a0000000-0000-4000-8000-000000000001"
                .parse()
                .expect("valid guid"),
        ),
        ..ImportOptions::default()
    }
}

fn import(name: &str, options: &ImportOptions) -> Project {
    match import_file(fixture(name), options) {
        Ok(project) => project,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn import_err(name: &str) -> ImportError {
    match import_file(fixture(name), &options()) {
        Ok(_) => panic!("{name} imported, but should have failed"),
        Err(e) => e,
    }
}

fn place(err: &ImportError) -> Place {
    match err.place() {
        Some(place) => place.clone(),
        None => panic!("no place in {err:?}"),
    }
}

fn minutes(work: Work) -> i64 {
    work.minutes_rounded()
}

fn synced(project: &Project) -> Vec<(i64, &str)> {
    project
        .sync_units()
        .iter()
        .map(|u| (u.assignment.uid.0, u.email))
        .collect()
}

#[test]
fn project2007_without_guid_needs_fallback() {
    assert!(matches!(
        import_file(fixture("mspdi/project2007.xml"), &options()),
        Err(ImportError::MissingGuid)
    ));
}

#[test]
fn project2007_fixture_reads_values() {
    let options = with_fallback();
    let p = import("mspdi/project2007.xml", &options);
    assert_eq!(p.guid, options.fallback_guid.expect("set above"));
    assert_eq!(p.name, "Office Move");
    assert_eq!((p.minutes_per_day, p.minutes_per_week), (480, 2400));
    assert_eq!(
        p.start.map(|s| s.to_string()).as_deref(),
        Some("2026-03-02 08:00:00")
    );
    assert_eq!(p.tasks.len(), 4);
    let summary = p.task(TaskUid::PROJECT_SUMMARY).expect("task 0");
    assert!(summary.summary);
    assert_eq!(summary.outline_level, 0);
    let plan = p.task(TaskUid(1)).expect("task 1");
    assert_eq!(plan.name, "Plan the move");
    assert_eq!(plan.notes, "Agree the floor plan with facilities & IT.");
    assert_eq!(plan.priority, 700);
    assert_eq!(minutes(plan.work), 960);
    assert_eq!(plan.percent_work_complete.get(), 25);
    assert!(p.task(TaskUid(3)).expect("task 3").milestone);

    let placeholder = p.resource(ResourceUid(0)).expect("resource 0");
    assert_eq!(placeholder.email, None);
    assert_eq!(
        p.resource(ResourceUid(2)).and_then(|r| r.email.as_deref()),
        Some("bo.berg@example.com")
    );

    let a3 = p.assignment(AssignmentUid(3)).expect("assignment 3");
    assert_eq!((a3.task_uid, a3.resource_uid), (TaskUid(2), ResourceUid(2)));
    assert_eq!(
        (
            minutes(a3.work),
            minutes(a3.actual_work),
            minutes(a3.remaining_work)
        ),
        (1200, 600, 600)
    );
    assert_eq!(a3.percent_work_complete.get(), 50);
    assert_eq!(a3.start.to_string(), "2026-03-04 08:00:00");

    assert_eq!(
        synced(&p),
        vec![
            (1, "ann.archer@example.com"),
            (2, "ann.archer@example.com"),
            (3, "bo.berg@example.com"),
            (4, "bo.berg@example.com"),
        ]
    );
}

#[test]
fn project2019_fixture_skips_baselines_and_timephased_data() {
    let options = ImportOptions {
        time_zone: chrono_tz::Europe::Berlin,
        ..ImportOptions::default()
    };
    let p = import("mspdi/project2019.xml", &options);
    assert_eq!(p.guid.to_string(), "3f2b8c1e-6a4d-4e2b-9c7a-5d1e0f9b2a64");
    assert_eq!(p.name, "Website Relaunch");
    assert_eq!((p.minutes_per_day, p.minutes_per_week), (450, 2250));
    let wireframes = p.task(TaskUid(2)).expect("task 2");
    // The task's Baseline has PT99H0M0S and its own Start; neither may leak into the task.
    assert_eq!(minutes(wireframes.work), 1800);
    assert_eq!(wireframes.start.to_string(), "2026-03-23 09:00:00");
    assert_eq!(wireframes.priority, 800);
    assert_eq!(wireframes.outline_level, 2);
    assert_eq!(
        wireframes.notes,
        "Mobile first.\nCheck the <nav> against the brand guide."
    );
    assert!(p.task(TaskUid(1)).expect("task 1").summary);
    assert!(p.task(TaskUid(4)).expect("task 4").milestone);

    let a1 = p.assignment(AssignmentUid(1)).expect("assignment 1");
    // Baseline Work PT30H0M0S and the TimephasedData Value must not be taken for these.
    assert_eq!(
        (
            minutes(a1.work),
            minutes(a1.actual_work),
            minutes(a1.remaining_work)
        ),
        (1350, 450, 900)
    );
    assert_eq!(a1.percent_work_complete.get(), 33);
    assert_eq!(a1.start.to_string(), "2026-03-23 09:00:00");
    // 09:00 in Berlin in March, before the switch to summer time on the 29th, is 08:00 UTC.
    assert_eq!(p.to_utc(a1.start).to_rfc3339(), "2026-03-23T08:00:00+00:00");

    assert_eq!(
        p.resource(ResourceUid(1)).map(|r| r.name.as_str()),
        Some("Carla Díaz")
    );
    // A cost resource keeps no address even though the file gives one.
    assert_eq!(p.resource(ResourceUid(3)).expect("resource 3").email, None);
    assert_eq!(
        p.assignment(AssignmentUid(4)).map(|a| a.resource_uid),
        Some(ResourceUid::NONE)
    );
    assert_eq!(
        synced(&p),
        vec![(1, "carla.diaz@example.org"), (2, "carla.diaz@example.org")]
    );
}

#[test]
fn projectlibre_fixture_reads_lowercase_guid_and_empty_elements() {
    let p = import("mspdi/projectlibre.xml", &options());
    assert_eq!(
        p.guid,
        "9A1C2B3D-4E5F-4A6B-8C7D-0E1F2A3B4C5D"
            .parse::<ProjectGuid>()
            .expect("valid guid")
    );
    // No Title: the Name is used.
    assert_eq!(p.name, "Kitchen Renovation");
    assert_eq!(p.task(TaskUid(1)).map(|t| t.notes.as_str()), Some(""));
    assert_eq!(p.resource(ResourceUid(2)).expect("resource 2").email, None);
    // A material resource keeps no address even though the file gives one.
    assert_eq!(p.resource(ResourceUid(3)).expect("resource 3").email, None);
    let a1 = p.assignment(AssignmentUid(1)).expect("assignment 1");
    assert_eq!(a1.percent_work_complete.get(), 100);
    assert_eq!(a1.remaining_work, Work::ZERO);
    let a2 = p.assignment(AssignmentUid(2)).expect("assignment 2");
    assert_eq!(
        (
            minutes(a2.work),
            minutes(a2.actual_work),
            minutes(a2.remaining_work)
        ),
        (1440, 360, 1080)
    );
    assert_eq!(
        synced(&p),
        vec![(1, "dana.ek@example.net"), (2, "dana.ek@example.net")]
    );
}

#[test]
fn ganttproject_fixture_without_namespace_derives_missing_values() {
    assert!(matches!(
        import_file(fixture("mspdi/ganttproject.xml"), &options()),
        Err(ImportError::MissingGuid)
    ));
    let p = import("mspdi/ganttproject.xml", &with_fallback());
    assert_eq!(p.name, "Garden Shed");
    assert_eq!((p.minutes_per_day, p.minutes_per_week), (480, 2400));
    assert_eq!(p.tasks.len(), 3);
    assert!(p.task(TaskUid(3)).expect("task 3").milestone);
    assert_eq!(p.task(TaskUid(3)).expect("task 3").outline_level, 1);
    let a1 = p.assignment(AssignmentUid(1)).expect("assignment 1");
    assert_eq!(
        (
            minutes(a1.work),
            minutes(a1.actual_work),
            minutes(a1.remaining_work)
        ),
        (960, 240, 720)
    );
    assert_eq!(a1.percent_work_complete.get(), 25);
    // Dates come from the task when the assignment has none.
    assert_eq!(a1.start.to_string(), "2026-06-01 08:00:00");
    assert_eq!(a1.finish.to_string(), "2026-06-02 17:00:00");
    assert_eq!(
        synced(&p),
        vec![
            (1, "gus.hale@example.com"),
            (2, "gus.hale@example.com"),
            (3, "ida.jung@example.com"),
        ]
    );
}

#[test]
fn edge_cases_fixture_filters_and_decodes() {
    let p = import("mspdi/edge-cases.xml", &options());
    assert_eq!(p.guid.to_string(), "c0ffee00-1234-4abc-8def-0123456789ab");
    // A blank Title falls back to the Name.
    assert_eq!(p.name, "edge-cases.xml");
    // The IsNull blank row is skipped.
    assert_eq!(p.tasks.len(), 6);
    assert!(p.task(TaskUid(6)).is_none());
    let levels: Vec<(i64, u16, bool)> = p
        .tasks
        .iter()
        .map(|t| (t.uid.0, t.outline_level, t.summary))
        .collect();
    assert_eq!(
        levels,
        vec![
            (0, 0, true),
            (1, 1, true),
            (2, 2, false),
            (3, 2, true),
            (4, 3, false),
            (5, 1, false)
        ]
    );
    assert_eq!(
        p.task(TaskUid(1)).map(|t| t.name.as_str()),
        Some("東京 office fit-out")
    );
    assert_eq!(
        p.task(TaskUid(4)).map(|t| t.notes.as_str()),
        Some("Use <b>only</b> certified cable & plugs. Café ☕ corner.")
    );
    assert_eq!(p.task(TaskUid(4)).map(|t| t.priority), Some(0));
    assert_eq!(p.task(TaskUid(2)).map(|t| t.priority), Some(1000));
    assert!(p.task(TaskUid(5)).expect("task 5").milestone);
    assert_eq!(
        p.resource(ResourceUid(1)).map(|r| r.name.as_str()),
        Some("Zoë Müller")
    );
    assert_eq!(p.resource(ResourceUid(2)).expect("resource 2").email, None);
    assert_eq!(p.resource(ResourceUid(3)).expect("resource 3").email, None);

    let a1 = p.assignment(AssignmentUid(1)).expect("assignment 1");
    assert_eq!(minutes(a1.work), 450);
    // PT2H0M0.5S rounds to 7201 s; remaining and percent are derived from it.
    assert_eq!(a1.actual_work, Work::from_seconds(7201));
    assert_eq!(a1.remaining_work, Work::from_seconds(27_000 - 7201));
    assert_eq!(a1.percent_work_complete.get(), 27);
    assert_eq!(a1.start, p.task(TaskUid(2)).expect("task 2").start);

    // 2: summary task; 4: no address; 5: blank address; 6, 7: no resource; 9: project summary.
    let units = p.sync_units();
    assert_eq!(
        units.iter().map(|u| u.assignment.uid.0).collect::<Vec<_>>(),
        vec![1, 3, 8]
    );
    assert!(units.iter().all(|u| u.email == "zoe.mueller@example.de"));
    assert_eq!(
        units[0].key.to_string(),
        "c0ffee00-1234-4abc-8def-0123456789ab:1"
    );
}

#[test]
fn broken_truncated_fails_at_end_inside_open_element() {
    let err = import_err("mspdi/broken-truncated.xml");
    assert!(
        matches!(
            err,
            ImportError::UnexpectedEof {
                opened_line: 17,
                ..
            }
        ),
        "{err:?}"
    );
    let at = place(&err);
    assert_eq!(at.path, "Project/Assignments/Assignment/ActualWork");
    assert_eq!(at.line, Some(17));
}

#[test]
fn broken_deep_nesting_names_a_bounded_path() {
    let depth = 20_000;
    let text = format!("<Project>{}", "<Nested>".repeat(depth));
    let err = taskbridge::pm::import::import_str(&text, &options()).expect_err("truncated");
    let at = place(&err);
    assert!(at.path.len() <= 256, "path of {} bytes", at.path.len());
    assert!(
        at.path.starts_with("Project/Nested/.../") && at.path.ends_with("/Nested"),
        "{}",
        at.path
    );
    assert!(err.to_string().len() < 1024, "{err}");
}

#[test]
fn broken_duration_fails_at_work_element() {
    let err = import_err("mspdi/broken-duration.xml");
    assert!(
        matches!(&err, ImportError::InvalidValue { value, .. } if value == "8 hours"),
        "{err:?}"
    );
    let at = place(&err);
    assert_eq!(at.path, "Project/Assignments/Assignment/Work");
    assert_eq!((at.line, at.column), (Some(21), Some(4)));
    assert!(err.to_string().contains("line 21"), "{err}");
}

#[test]
fn broken_unknown_task_fails_at_task_reference() {
    let err = import_err("mspdi/broken-unknown-task.xml");
    assert!(
        matches!(
            err,
            ImportError::UnknownTask {
                assignment: AssignmentUid(2),
                task: TaskUid(99),
                ..
            }
        ),
        "{err:?}"
    );
    let at = place(&err);
    assert_eq!(at.path, "Project/Assignments/Assignment/TaskUID");
    assert_eq!(at.line, Some(19));
}

#[test]
fn broken_unknown_resource_fails_at_resource_reference() {
    let err = import_err("mspdi/broken-unknown-resource.xml");
    assert!(
        matches!(
            err,
            ImportError::UnknownResource {
                resource: ResourceUid(7),
                ..
            }
        ),
        "{err:?}"
    );
    let at = place(&err);
    assert_eq!(at.path, "Project/Assignments/Assignment/ResourceUID");
    assert_eq!(at.line, Some(17));
}

#[test]
fn broken_doctype_is_refused_before_expansion() {
    let err = import_err("mspdi/broken-doctype.xml");
    assert!(matches!(err, ImportError::DocType { .. }), "{err:?}");
    assert_eq!(place(&err).line, Some(6));
}

#[test]
fn sample_json_fixture_reads_values() {
    let p = import("projects/sample.json", &options());
    assert_eq!(p.guid.to_string(), "7d3f1a52-9c4e-4b8a-a1d6-2e5f8c0b9a47");
    assert_eq!(p.name, "Customer conference 2026");
    assert_eq!(p.time_zone, chrono_tz::Europe::Berlin);
    let book = p.task(TaskUid(2)).expect("task 2");
    assert_eq!((book.priority, book.percent_work_complete.get()), (800, 25));
    assert_eq!(minutes(p.task(TaskUid(3)).expect("task 3").work), 450);
    assert_eq!(
        p.resource(ResourceUid(2)).and_then(|r| r.time_zone),
        Some(chrono_tz::America::New_York)
    );
    let a11 = p.assignment(AssignmentUid(11)).expect("assignment 11");
    assert_eq!(
        (
            minutes(a11.work),
            minutes(a11.remaining_work),
            a11.percent_work_complete.get()
        ),
        (450, 450, 0)
    );
    assert_eq!(a11.start.to_string(), "2026-04-01 09:00:00");
    assert_eq!(
        p.assignment(AssignmentUid(13)).map(|a| a.resource_uid),
        Some(ResourceUid::NONE)
    );
    assert_eq!(
        synced(&p),
        vec![
            (10, "zoe.mueller@example.de"),
            (11, "sam.ortiz@example.com")
        ]
    );
}

#[test]
fn project_format_doc_example_matches_fixture() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/PROJECT-FORMAT.md"),
    )
    .expect("docs/PROJECT-FORMAT.md is readable");
    let fixture_text =
        std::fs::read_to_string(fixture("projects/sample.json")).expect("fixture is readable");
    let example = doc
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the doc has a ```json block");
    assert_eq!(example, fixture_text);
}

#[test]
fn import_file_missing_file_is_io_error() {
    assert!(matches!(
        import_file(fixture("mspdi/no-such-file.xml"), &options()),
        Err(ImportError::Io { .. })
    ));
}

#[test]
fn import_file_over_limit_is_too_large() {
    let small = ImportOptions {
        max_bytes: 100,
        ..with_fallback()
    };
    assert!(matches!(
        import_file(fixture("mspdi/project2007.xml"), &small),
        Err(ImportError::TooLarge { limit: 100 })
    ));
}

fn sample_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("projects/sample.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn email_with_a_line_break_or_no_at_is_refused_naming_the_resource() {
    for bad in [
        "zoe.mueller@example.de\r\nX-Injected: yes",
        "zoe mueller@example.de",
        "zoe.mueller.example.de",
        "zoe@@example.de",
    ] {
        let mut project = sample_json();
        project["resources"][0]["email"] = bad.into();
        let err =
            taskbridge::pm::import::import_str(&project.to_string(), &options()).expect_err(bad);
        assert!(
            matches!(
                err,
                ImportError::InvalidEmail {
                    resource: ResourceUid(1),
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}

#[test]
fn assignments_over_the_project_or_mailbox_cap_are_refused_with_the_numbers() {
    let text = sample_json().to_string();
    let project = taskbridge::pm::import::import_str(&text, &options()).expect("imports");
    let units = project.sync_units();
    let mut per_mailbox = std::collections::HashMap::<&str, usize>::new();
    for u in &units {
        *per_mailbox.entry(u.email).or_default() += 1;
    }
    let busiest = per_mailbox.values().copied().max().expect("a mailbox");
    let capped = ImportOptions {
        max_assignments_per_project: units.len() - 1,
        ..options()
    };
    let err = taskbridge::pm::import::import_str(&text, &capped).expect_err("project cap");
    assert!(
        matches!(err, ImportError::TooManyAssignments { mailbox: None, count, limit }
            if count == units.len() && limit == units.len() - 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("max_assignments_per_project"),
        "{err}"
    );
    let capped = ImportOptions {
        max_assignments_per_mailbox: busiest - 1,
        ..options()
    };
    let err = taskbridge::pm::import::import_str(&text, &capped).expect_err("mailbox cap");
    assert!(
        matches!(&err, ImportError::TooManyAssignments { mailbox: Some(_), count, .. } if *count == busiest),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("max_assignments_per_mailbox"),
        "{err}"
    );
    let fits = ImportOptions {
        max_assignments_per_project: units.len(),
        max_assignments_per_mailbox: busiest,
        ..options()
    };
    taskbridge::pm::import::import_str(&text, &fits).expect("at the caps");
}
