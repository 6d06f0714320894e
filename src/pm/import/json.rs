//! taskbridge's JSON project format, for PM systems that can write JSON more easily than MSPDI and
//! for hand-written test projects. The format is described, with a complete example, in
//! `docs/PROJECT-FORMAT.md`.
//!
//! The file is read in two steps: serde reads the shape (unknown fields are ignored, so that
//! newer writers can add fields), then each value is converted and checked with its field path,
//! so an error reads `tasks[2].work` rather than a bare serde message.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde::Deserialize;

use super::{
    DEFAULT_MINUTES_PER_DAY, DEFAULT_MINUTES_PER_WEEK, Ids, ImportError, ImportOptions,
    MINUTES_PER_DAY_RANGE, MINUTES_PER_WEEK_RANGE, OUTLINE_LEVEL_RANGE, PRIORITY_RANGE, Place,
    Site, ValueError, check_range, check_references, check_size, parse_local_datetime,
};
use crate::pm::model::{
    Assignment, AssignmentUid, FieldTimes, Percent, Project, ProjectGuid, Resource, ResourceUid,
    Task, TaskUid, Work, percent_of,
};

#[derive(Debug, Deserialize)]
struct RawProject {
    guid: Option<String>,
    #[serde(default)]
    name: String,
    time_zone: Option<String>,
    minutes_per_day: Option<i64>,
    minutes_per_week: Option<i64>,
    start: Option<String>,
    #[serde(default)]
    tasks: Vec<RawTask>,
    #[serde(default)]
    resources: Vec<RawResource>,
    #[serde(default)]
    assignments: Vec<RawAssignment>,
}

#[derive(Debug, Deserialize)]
struct RawTask {
    uid: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    notes: String,
    start: String,
    finish: String,
    work: Option<String>,
    priority: Option<i64>,
    percent_work_complete: Option<i64>,
    #[serde(default)]
    summary: bool,
    #[serde(default)]
    milestone: bool,
    outline_level: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RawResource {
    uid: i64,
    #[serde(default)]
    name: String,
    email: Option<String>,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawAssignment {
    uid: i64,
    task_uid: i64,
    resource_uid: Option<i64>,
    start: Option<String>,
    finish: Option<String>,
    work: Option<String>,
    actual_work: Option<String>,
    remaining_work: Option<String>,
    percent_work_complete: Option<i64>,
    actual_finish: Option<String>,
}

/// Reads a JSON project (see `docs/PROJECT-FORMAT.md`).
///
/// The same checks as for MSPDI apply; `time_zone` in the file, when given, wins over
/// [`ImportOptions::time_zone`], and `guid`, when absent, is taken from
/// [`ImportOptions::fallback_guid`].
pub fn parse_json(text: &str, options: &ImportOptions) -> Result<Project, ImportError> {
    check_size(text, options)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw: RawProject = serde_json::from_str(text).map_err(|source| ImportError::Json {
        line: source.line(),
        column: source.column(),
        source,
    })?;

    let links: Vec<_> = raw
        .assignments
        .iter()
        .map(|a| {
            (
                AssignmentUid(a.uid),
                TaskUid(a.task_uid),
                a.resource_uid.map_or(ResourceUid::NONE, ResourceUid),
            )
        })
        .collect();
    let task_uids: Vec<_> = raw.tasks.iter().map(|t| TaskUid(t.uid)).collect();
    let resource_uids: Vec<_> = raw.resources.iter().map(|r| ResourceUid(r.uid)).collect();
    check_references(
        Ids {
            tasks: &task_uids,
            resources: &resource_uids,
            assignments: &links,
        },
        |site| {
            Place::at_path(match site {
                Site::TaskUid(i) => format!("tasks[{i}].uid"),
                Site::ResourceUid(i) => format!("resources[{i}].uid"),
                Site::AssignmentUid(i) => format!("assignments[{i}].uid"),
                Site::AssignmentTask(i) => format!("assignments[{i}].task_uid"),
                Site::AssignmentResource(i) => format!("assignments[{i}].resource_uid"),
            })
        },
    )?;

    let guid = match &raw.guid {
        Some(text) => Some(convert("guid".into(), text, |t| {
            Ok(t.parse::<ProjectGuid>()?)
        })?),
        None => None,
    }
    .or(options.fallback_guid)
    .ok_or(ImportError::MissingGuid)?;
    let time_zone = match &raw.time_zone {
        Some(name) => convert("time_zone".into(), name, parse_zone)?,
        None => options.time_zone,
    };
    let minutes_per_day = match raw.minutes_per_day {
        Some(n) => number("minutes_per_day".into(), n, MINUTES_PER_DAY_RANGE)?,
        None => DEFAULT_MINUTES_PER_DAY,
    };
    let minutes_per_week = match raw.minutes_per_week {
        Some(n) => number("minutes_per_week".into(), n, MINUTES_PER_WEEK_RANGE)?,
        None => DEFAULT_MINUTES_PER_WEEK,
    };
    let start = optional_date("start".into(), raw.start.as_deref())?;

    let tasks = raw
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| task(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = raw
        .resources
        .into_iter()
        .enumerate()
        .map(|(i, r)| resource(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let by_uid: HashMap<TaskUid, &Task> = tasks.iter().map(|t| (t.uid, t)).collect();
    let assignments = raw
        .assignments
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            // check_references has confirmed that the task exists.
            let task = by_uid.get(&TaskUid(a.task_uid)).copied();
            assignment(i, a, task)
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Project {
        guid,
        name: raw.name,
        time_zone,
        minutes_per_day,
        minutes_per_week,
        start,
        tasks,
        resources,
        assignments,
    })
}

fn task(i: usize, raw: RawTask) -> Result<Task, ImportError> {
    let path = |field: &str| format!("tasks[{i}].{field}");
    let default_level = if raw.uid == 0 { 0 } else { 1 };
    Ok(Task {
        uid: TaskUid(raw.uid),
        name: raw.name,
        notes: raw.notes,
        start: convert(path("start"), &raw.start, parse_local_datetime)?,
        finish: convert(path("finish"), &raw.finish, parse_local_datetime)?,
        work: optional_work(path("work"), raw.work.as_deref())?.unwrap_or_default(),
        priority: match raw.priority {
            Some(n) => number(path("priority"), n, PRIORITY_RANGE)?,
            None => Task::DEFAULT_PRIORITY,
        },
        percent_work_complete: optional_percent(
            path("percent_work_complete"),
            raw.percent_work_complete,
        )?
        .unwrap_or_default(),
        summary: raw.summary,
        milestone: raw.milestone,
        outline_level: match raw.outline_level {
            Some(n) => number(path("outline_level"), n, OUTLINE_LEVEL_RANGE)?,
            None => default_level,
        },
    })
}

fn resource(i: usize, raw: RawResource) -> Result<Resource, ImportError> {
    let time_zone = match &raw.time_zone {
        Some(name) => Some(convert(
            format!("resources[{i}].time_zone"),
            name,
            parse_zone,
        )?),
        None => None,
    };
    Ok(Resource {
        uid: ResourceUid(raw.uid),
        name: raw.name,
        email: raw
            .email
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty()),
        time_zone,
    })
}

fn assignment(
    i: usize,
    raw: RawAssignment,
    task: Option<&Task>,
) -> Result<Assignment, ImportError> {
    let path = |field: &str| format!("assignments[{i}].{field}");
    let work = optional_work(path("work"), raw.work.as_deref())?.unwrap_or_default();
    let actual_work =
        optional_work(path("actual_work"), raw.actual_work.as_deref())?.unwrap_or_default();
    let remaining_work = optional_work(path("remaining_work"), raw.remaining_work.as_deref())?
        .unwrap_or_else(|| work.saturating_sub(actual_work).max(Work::ZERO));
    let percent_work_complete =
        optional_percent(path("percent_work_complete"), raw.percent_work_complete)?
            .unwrap_or_else(|| percent_of(actual_work, work));
    // The task exists (checked by the caller), so both dates always resolve; the epoch default
    // is never reached.
    let start = optional_date(path("start"), raw.start.as_deref())?
        .or(task.map(|t| t.start))
        .unwrap_or_default();
    let finish = optional_date(path("finish"), raw.finish.as_deref())?
        .or(task.map(|t| t.finish))
        .unwrap_or_default();
    let actual_finish = optional_date(path("actual_finish"), raw.actual_finish.as_deref())?;
    Ok(Assignment {
        uid: AssignmentUid(raw.uid),
        task_uid: TaskUid(raw.task_uid),
        resource_uid: raw.resource_uid.map_or(ResourceUid::NONE, ResourceUid),
        start,
        finish,
        work,
        actual_work,
        remaining_work,
        percent_work_complete,
        actual_finish,
        modified: FieldTimes::new(),
    })
}

/// Converts one text value, naming `path` on failure.
fn convert<T>(
    path: String,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Result<T, ImportError> {
    parse(text).map_err(|source| ImportError::InvalidValue {
        at: Place::at_path(path),
        value: text.to_owned(),
        source: Box::new(source),
    })
}

/// Checks one number against its range, naming `path` on failure.
fn number<T: TryFrom<i64>>(path: String, value: i64, range: (i64, i64)) -> Result<T, ImportError> {
    check_range(value, range.0, range.1).map_err(|source| ImportError::InvalidValue {
        at: Place::at_path(path),
        value: value.to_string(),
        source: Box::new(source),
    })
}

fn optional_work(path: String, text: Option<&str>) -> Result<Option<Work>, ImportError> {
    text.map(|t| convert(path, t, |t| Ok(Work::parse_mspdi(t)?)))
        .transpose()
}

fn optional_date(path: String, text: Option<&str>) -> Result<Option<NaiveDateTime>, ImportError> {
    text.map(|t| convert(path, t, parse_local_datetime))
        .transpose()
}

fn optional_percent(path: String, value: Option<i64>) -> Result<Option<Percent>, ImportError> {
    value
        .map(|n| {
            Percent::from_i64(n).map_err(|e| ImportError::InvalidValue {
                at: Place::at_path(path),
                value: n.to_string(),
                source: Box::new(e.into()),
            })
        })
        .transpose()
}

fn parse_zone(name: &str) -> Result<Tz, ValueError> {
    name.trim().parse::<Tz>().map_err(|_| ValueError::TimeZone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ImportOptions {
        ImportOptions {
            fallback_guid: Some(ProjectGuid(uuid::Uuid::nil())),
            ..ImportOptions::default()
        }
    }

    #[test]
    fn parse_json_minimal_fills_defaults() {
        let text = r#"{"name": "p", "tasks": [{"uid": 1, "start": "2026-03-02T08:00:00", "finish": "2026-03-02T17:00:00"}],
            "assignments": [{"uid": 3, "task_uid": 1, "work": "PT8H", "actual_work": "PT4H"}]}"#;
        let project = parse_json(text, &options()).expect("valid");
        assert_eq!(project.time_zone, Tz::UTC);
        assert_eq!(project.minutes_per_week, 2400);
        assert_eq!(project.tasks[0].priority, 500);
        let a = &project.assignments[0];
        assert_eq!(a.resource_uid, ResourceUid::NONE);
        assert_eq!(a.remaining_work, Work::from_hours(4));
        assert_eq!(a.percent_work_complete.get(), 50);
        assert_eq!(a.finish, project.tasks[0].finish);
    }

    #[test]
    fn parse_json_bad_work_names_field_path() {
        let text = r#"{"tasks": [{"uid": 1, "start": "2026-03-02T08:00:00", "finish": "2026-03-02T17:00:00", "work": "8 hours"}]}"#;
        match parse_json(text, &options()) {
            Err(ImportError::InvalidValue { at, value, .. }) => {
                assert_eq!(at.path, "tasks[0].work");
                assert_eq!(value, "8 hours");
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn parse_json_percent_out_of_range_is_invalid() {
        let text = r#"{"tasks": [{"uid": 1, "start": "2026-03-02T08:00:00", "finish": "2026-03-02T17:00:00"}],
            "assignments": [{"uid": 3, "task_uid": 1, "percent_work_complete": 120}]}"#;
        match parse_json(text, &options()) {
            Err(ImportError::InvalidValue { at, source, .. }) => {
                assert_eq!(at.path, "assignments[0].percent_work_complete");
                assert!(matches!(*source, ValueError::Model(_)));
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn parse_json_unknown_resource_is_refused() {
        let text = r#"{"tasks": [{"uid": 1, "start": "2026-03-02T08:00:00", "finish": "2026-03-02T17:00:00"}],
            "assignments": [{"uid": 3, "task_uid": 1, "resource_uid": 7}]}"#;
        match parse_json(text, &options()) {
            Err(ImportError::UnknownResource { at, resource, .. }) => {
                assert_eq!(at.path, "assignments[0].resource_uid");
                assert_eq!(resource, ResourceUid(7));
            }
            other => panic!("expected UnknownResource, got {other:?}"),
        }
    }

    #[test]
    fn parse_json_work_as_number_is_a_shape_error_with_line() {
        let text = "{\n  \"tasks\": [{\"uid\": 1, \"start\": \"2026-03-02T08:00:00\",\n  \"finish\": \"2026-03-02T17:00:00\", \"work\": 480}]}";
        match parse_json(text, &options()) {
            Err(ImportError::Json { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected Json, got {other:?}"),
        }
    }

    #[test]
    fn parse_json_bad_time_zone_is_invalid() {
        let text = r#"{"time_zone": "Mars/Olympus"}"#;
        match parse_json(text, &options()) {
            Err(ImportError::InvalidValue { at, source, .. }) => {
                assert_eq!(at.path, "time_zone");
                assert_eq!(*source, ValueError::TimeZone);
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn parse_json_unknown_fields_are_ignored() {
        let text = r#"{"name": "p", "format_version": 2, "owner": {"x": 1}}"#;
        assert_eq!(
            parse_json(text, &options()).map(|p| p.name).ok(),
            Some("p".to_owned())
        );
    }
}
