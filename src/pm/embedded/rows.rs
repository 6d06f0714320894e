//! Reading and writing the embedded host's rows. Every function takes a connection (or a
//! transaction, which derefs to one) and is called on the SQLite thread; the caller owns the
//! transaction.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::EmbeddedError;
use super::sql::{Conn, Row, Value, args, one};
use super::types::{Policy, ProjectSummary, StatusUpdateRecord, UpdateFilter, UpdateState};
use crate::pm::host::{FieldChange, HostEvent, IdempotencyKey, StatusUpdateId, UpdateSource};
use crate::pm::model::{
    Assignment, AssignmentField, AssignmentKey, AssignmentUid, FieldTimes, Percent, Project,
    ProjectGuid, Resource, ResourceUid, Task, TaskUid, Work,
};

/// An instant as stored: RFC 3339 UTC with microseconds, so that text order is time order.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, EmbeddedError> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| corrupt("instant", text))
}

/// A zone-less project date as stored.
fn local(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

fn parse_local(text: &str) -> Result<NaiveDateTime, EmbeddedError> {
    // Loading a plan reads four of these per assignment: the form `local` writes is read by
    // hand, anything else (never written by us, but accepted before) by chrono's format parser.
    local_as_written(text)
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .ok_or_else(|| corrupt("date", text))
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional fraction of one to nine digits, as `local` writes
/// it; `None` for anything else, including dates and times that do not exist.
fn local_as_written(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |part: &[u8]| {
        part.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let year = i32::try_from(digits(&b[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&b[5..7])?, digits(&b[8..10])?)?.and_hms_nano_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
        nanos,
    )
}

fn corrupt(what: &str, text: &str) -> EmbeddedError {
    EmbeddedError::Corrupt(format!("stored {what} {text:?} cannot be read"))
}

fn field_name(field: AssignmentField) -> &'static str {
    match field {
        AssignmentField::Start => "Start",
        AssignmentField::Finish => "Finish",
        AssignmentField::Work => "Work",
        AssignmentField::ActualWork => "ActualWork",
        AssignmentField::RemainingWork => "RemainingWork",
        AssignmentField::PercentWorkComplete => "PercentWorkComplete",
        AssignmentField::Name => "Name",
        AssignmentField::Notes => "Notes",
        AssignmentField::Priority => "Priority",
    }
}

fn parse_field(text: &str) -> Result<AssignmentField, EmbeddedError> {
    AssignmentField::ALL
        .into_iter()
        .find(|f| field_name(*f) == text)
        .ok_or_else(|| corrupt("field name", text))
}

fn parse_guid(text: &str) -> Result<ProjectGuid, EmbeddedError> {
    ProjectGuid::from_str(text).map_err(|_| corrupt("project GUID", text))
}

fn parse_zone(text: &str) -> Result<Tz, EmbeddedError> {
    text.parse::<Tz>().map_err(|_| corrupt("time zone", text))
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The stored project row beyond the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectMeta {
    pub(crate) policy: Policy,
    pub(crate) revision: i64,
    pub(crate) imported_at: DateTime<Utc>,
    pub(crate) published_at: DateTime<Utc>,
}

/// The GUIDs of all stored projects, in name order.
pub(crate) fn project_guids(conn: &dyn Conn) -> Result<Vec<ProjectGuid>, EmbeddedError> {
    conn.query("SELECT guid FROM projects ORDER BY name, guid", &[])?
        .iter()
        .map(|row| parse_guid(&row.get::<String>(0)?))
        .collect()
}

/// The project's policy and bookkeeping, if the project is stored.
pub(crate) fn project_meta(
    conn: &dyn Conn,
    guid: ProjectGuid,
) -> Result<Option<ProjectMeta>, EmbeddedError> {
    let row = conn.query_opt(
        "SELECT policy, revision, imported_at, published_at FROM projects WHERE guid = ?1",
        args![guid.to_string()],
    )?;
    row.map(|row| {
        let (policy, revision, imported_at, published_at) = (
            row.get::<String>(0)?,
            row.get::<i64>(1)?,
            row.get::<String>(2)?,
            row.get::<String>(3)?,
        );
        Ok(ProjectMeta {
            policy: policy.parse().map_err(|_| corrupt("policy", &policy))?,
            revision,
            imported_at: parse_ts(&imported_at)?,
            published_at: parse_ts(&published_at)?,
        })
    })
    .transpose()
}

/// A stored project with all its rows.
pub(crate) fn load_project(
    conn: &dyn Conn,
    guid: ProjectGuid,
) -> Result<Option<Project>, EmbeddedError> {
    let key = guid.to_string();
    let Some(mut project) = load_head(conn, guid)? else {
        return Ok(None);
    };
    project.tasks = query_tasks(conn, "project = ?1 ORDER BY position", args![key])?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    project.resources = query_resources(conn, "project = ?1 ORDER BY position", args![key])?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    project.assignments = query_assignments(conn, "project = ?1 ORDER BY position", args![key])?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let times = conn
        .query(
            "SELECT assignment_uid, field, modified_at FROM assignment_field_times WHERE project = ?1",
            args![key],
        )?
        .iter()
        .map(|row| {
            Ok((
                row.get::<i64>(0)?,
                row.get::<String>(1)?,
                row.get::<String>(2)?,
            ))
        })
        .collect::<Result<Vec<_>, EmbeddedError>>()?;
    // Indexed by UID: a plan of tens of thousands of assignments, each with a few stamped
    // fields, must not be joined by a linear search per row.
    let at: std::collections::HashMap<i64, usize> = project
        .assignments
        .iter()
        .enumerate()
        .map(|(i, a)| (a.uid.0, i))
        .collect();
    for (uid, field, when) in times {
        let field = parse_field(&field)?;
        let when = parse_ts(&when)?;
        if let Some(&i) = at.get(&uid) {
            project.assignments[i].modified.set(field, when);
        }
    }
    Ok(Some(project))
}

/// Part of a stored project: the assignments `uids` (those that exist), with `siblings` every
/// other assignment of their tasks too, their tasks and their resources, in file order. Enough
/// to map and decide those assignments, and (with siblings) to apply a status update to one of
/// them, without reading the whole plan. Rows are read by their keys a chunk at a time: a
/// publish reads a whole mailbox's part this way.
pub(crate) fn load_project_part(
    conn: &dyn Conn,
    guid: ProjectGuid,
    uids: &[AssignmentUid],
    siblings: bool,
) -> Result<Option<Project>, EmbeddedError> {
    let key = guid.to_string();
    let Some(mut project) = load_head(conn, guid)? else {
        return Ok(None);
    };
    let mut assignments: std::collections::BTreeMap<i64, (i64, Assignment)> = Default::default();
    let wanted: std::collections::BTreeSet<i64> = uids.iter().map(|u| u.0).collect();
    by_keys(&key, "uid", &wanted, |filter, args| {
        for (position, a) in query_assignments(conn, filter, args)? {
            assignments.insert(a.uid.0, (position, a));
        }
        Ok(())
    })?;
    let task_uids: std::collections::BTreeSet<i64> =
        assignments.values().map(|(_, a)| a.task_uid.0).collect();
    if siblings {
        by_keys(&key, "task_uid", &task_uids, |filter, args| {
            for (position, a) in query_assignments(conn, filter, args)? {
                assignments.insert(a.uid.0, (position, a));
            }
            Ok(())
        })?;
    }
    let resource_uids: std::collections::BTreeSet<i64> = assignments
        .values()
        .map(|(_, a)| a.resource_uid.0)
        .collect();
    let mut tasks = Vec::new();
    by_keys(&key, "uid", &task_uids, |filter, args| {
        tasks.extend(query_tasks(conn, filter, args)?);
        Ok(())
    })?;
    let mut resources = Vec::new();
    by_keys(&key, "uid", &resource_uids, |filter, args| {
        resources.extend(query_resources(conn, filter, args)?);
        Ok(())
    })?;
    let read: std::collections::BTreeSet<i64> = assignments.keys().copied().collect();
    by_keys(&key, "assignment_uid", &read, |filter, args| {
        let sql = format!(
            "SELECT assignment_uid, field, modified_at FROM assignment_field_times WHERE {filter}"
        );
        for row in conn.query(&sql, args)? {
            if let Some((_, a)) = assignments.get_mut(&row.get::<i64>(0)?) {
                a.modified
                    .set(parse_field(row.text(1)?)?, parse_ts(row.text(2)?)?);
            }
        }
        Ok(())
    })?;
    let mut assignments: Vec<(i64, Assignment)> = assignments.into_values().collect();
    assignments.sort_by_key(|(position, _)| *position);
    tasks.sort_by_key(|(position, _)| *position);
    resources.sort_by_key(|(position, _)| *position);
    project.assignments = assignments.into_iter().map(|(_, a)| a).collect();
    project.tasks = tasks.into_iter().map(|(_, t)| t).collect();
    project.resources = resources.into_iter().map(|(_, r)| r).collect();
    Ok(Some(project))
}

/// Calls `read` with a filter `project = ?1 AND {column} IN (?2, ...)` and its arguments for
/// `ids` a chunk at a time. A chunk is padded with its last id to one of six sizes, so that
/// the statement cache holds six statements per query however many ids come (a repeated id
/// matches a row once).
fn by_keys(
    project: &str,
    column: &str,
    ids: &std::collections::BTreeSet<i64>,
    mut read: impl FnMut(&str, &[Value]) -> Result<(), EmbeddedError>,
) -> Result<(), EmbeddedError> {
    // Sizes apart by a factor of two: SQLite builds an index of an IN list's values for every
    // query, so each padding value costs something (about a twentieth of a key read: 100 keys
    // padded to 128 rather than 256 took 8 % off reading a plan part). Five queries of six
    // sizes fit the connection's statement cache (`store`).
    const SIZES: [usize; 6] = [8, 16, 32, 64, 128, 256];
    // The placeholder lists `?2, ?3, ...` of each size, written once: writing 256 of them for
    // every chunk was about a tenth of an unchanged publish's instructions.
    static LISTS: std::sync::OnceLock<[String; 6]> = std::sync::OnceLock::new();
    let lists = LISTS.get_or_init(|| {
        SIZES.map(|size| {
            (2..size + 2)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    });
    let ids: Vec<i64> = ids.iter().copied().collect();
    for chunk in ids.chunks(SIZES[SIZES.len() - 1]) {
        let Some(&last) = chunk.last() else {
            continue;
        };
        let Some(at) = SIZES.iter().position(|s| *s >= chunk.len()) else {
            continue;
        };
        let size = SIZES[at];
        let filter = format!("project = ?1 AND {column} IN ({})", lists[at]);
        let mut args = Vec::with_capacity(size + 1);
        args.push(Value::Text(project.to_owned()));
        args.extend(chunk.iter().map(|id| Value::Int(*id)));
        args.resize(size + 1, Value::Int(last));
        read(&filter, &args)?;
    }
    Ok(())
}

/// The sync units of a stored project with their resources' addresses, in file order, by the
/// rule of [`Project::sync_units`] without loading the plan (see [`count_sync_units`]);
/// `None` for a project not stored.
pub(crate) fn sync_unit_addresses(
    conn: &dyn Conn,
    guid: ProjectGuid,
) -> Result<Option<Vec<crate::pm::UnitAddress>>, EmbeddedError> {
    let key = guid.to_string();
    if conn
        .query_opt("SELECT 1 FROM projects WHERE guid = ?1", args![key])?
        .is_none()
    {
        return Ok(None);
    }
    let addresses = resource_addresses(conn, &key)?;
    let mut units = Vec::new();
    for row in conn.query(
        "SELECT a.uid, a.resource_uid FROM assignments a
         JOIN tasks t ON t.project = a.project AND t.uid = a.task_uid
         WHERE a.project = ?1 AND a.task_uid <> ?2 AND t.summary = 0
         ORDER BY a.position",
        args![key, TaskUid::PROJECT_SUMMARY.0],
    )? {
        if let Some(email) = addresses.get(&row.get::<i64>(1)?) {
            units.push(crate::pm::UnitAddress {
                uid: AssignmentUid(row.get(0)?),
                email: email.clone(),
            });
        }
    }
    Ok(Some(units))
}

/// The trimmed, non-blank addresses of a project's resources (the rule of
/// [`Project::sync_units`]: Rust's `trim`, not SQL's), by resource UID.
fn resource_addresses(
    conn: &dyn Conn,
    project: &str,
) -> Result<std::collections::HashMap<i64, String>, EmbeddedError> {
    let mut with_address = std::collections::HashMap::new();
    for row in conn.query(
        "SELECT uid, email FROM resources WHERE project = ?1 AND email IS NOT NULL",
        args![project],
    )? {
        let uid = row.get::<i64>(0)?;
        let email = row.get::<String>(1)?;
        let email = email.trim();
        if uid != ResourceUid::NONE.0 && !email.is_empty() {
            with_address.insert(uid, email.to_owned());
        }
    }
    Ok(with_address)
}

/// The project row, with no tasks, resources or assignments yet.
fn load_head(conn: &dyn Conn, guid: ProjectGuid) -> Result<Option<Project>, EmbeddedError> {
    let key = guid.to_string();
    let head = conn
        .query_opt(
            "SELECT name, time_zone, minutes_per_day, minutes_per_week, start
             FROM projects WHERE guid = ?1",
            args![key],
        )?
        .map(|row| {
            Ok::<_, EmbeddedError>((
                row.get::<String>(0)?,
                row.get::<String>(1)?,
                row.get::<u32>(2)?,
                row.get::<u32>(3)?,
                row.get::<Option<String>>(4)?,
            ))
        })
        .transpose()?;
    let Some((name, zone, minutes_per_day, minutes_per_week, start)) = head else {
        return Ok(None);
    };
    Ok(Some(Project {
        guid,
        name,
        time_zone: parse_zone(&zone)?,
        minutes_per_day,
        minutes_per_week,
        start: start.as_deref().map(parse_local).transpose()?,
        tasks: Vec::new(),
        resources: Vec::new(),
        assignments: Vec::new(),
    }))
}

/// Tasks matching `filter` (a `WHERE` clause over `tasks`), with their positions.
fn query_tasks(
    conn: &dyn Conn,
    filter: &str,
    args: &[Value],
) -> Result<Vec<(i64, Task)>, EmbeddedError> {
    let sql = format!(
        "SELECT uid, name, notes, start, finish, work, priority, percent_work_complete,
                summary, milestone, outline_level, position
         FROM tasks WHERE {filter}"
    );
    conn.query(&sql, args)?
        .into_iter()
        .map(|mut row| {
            let percent = row.get::<i64>(7)?;
            Ok((
                row.get::<i64>(11)?,
                Task {
                    uid: TaskUid(row.get(0)?),
                    name: row.take_text(1)?,
                    notes: row.take_text(2)?,
                    start: parse_local(row.text(3)?)?,
                    finish: parse_local(row.text(4)?)?,
                    work: Work::from_seconds(row.get(5)?),
                    priority: row.get(6)?,
                    percent_work_complete: Percent::from_i64(percent)
                        .map_err(|_| corrupt("percent", &percent.to_string()))?,
                    summary: row.get(8)?,
                    milestone: row.get(9)?,
                    outline_level: row.get(10)?,
                },
            ))
        })
        .collect()
}

/// Resources matching `filter`, with their positions.
fn query_resources(
    conn: &dyn Conn,
    filter: &str,
    args: &[Value],
) -> Result<Vec<(i64, Resource)>, EmbeddedError> {
    let sql = format!("SELECT uid, name, email, time_zone, position FROM resources WHERE {filter}");
    let raw = conn
        .query(&sql, args)?
        .iter()
        .map(|row| {
            Ok((
                row.get::<i64>(0)?,
                row.get::<String>(1)?,
                row.get::<Option<String>>(2)?,
                row.get::<Option<String>>(3)?,
                row.get::<i64>(4)?,
            ))
        })
        .collect::<Result<Vec<_>, EmbeddedError>>()?;
    raw.into_iter()
        .map(|(uid, name, email, zone, position)| {
            Ok((
                position,
                Resource {
                    uid: ResourceUid(uid),
                    name,
                    email,
                    time_zone: zone.as_deref().map(parse_zone).transpose()?,
                },
            ))
        })
        .collect()
}

/// Assignments matching `filter`, with their positions (field times not yet read).
fn query_assignments(
    conn: &dyn Conn,
    filter: &str,
    args: &[Value],
) -> Result<Vec<(i64, Assignment)>, EmbeddedError> {
    let sql = format!(
        "SELECT uid, task_uid, resource_uid, start, finish, work, actual_work, remaining_work,
                percent_work_complete, actual_finish, position
         FROM assignments WHERE {filter}"
    );
    conn.query(&sql, args)?
        .into_iter()
        .map(|row| {
            let percent = row.get::<i64>(8)?;
            Ok((
                row.get::<i64>(10)?,
                Assignment {
                    uid: AssignmentUid(row.get(0)?),
                    task_uid: TaskUid(row.get(1)?),
                    resource_uid: ResourceUid(row.get(2)?),
                    start: parse_local(row.text(3)?)?,
                    finish: parse_local(row.text(4)?)?,
                    work: Work::from_seconds(row.get(5)?),
                    actual_work: Work::from_seconds(row.get(6)?),
                    remaining_work: Work::from_seconds(row.get(7)?),
                    percent_work_complete: Percent::from_i64(percent)
                        .map_err(|_| corrupt("percent", &percent.to_string()))?,
                    actual_finish: row.opt_text(9)?.map(parse_local).transpose()?,
                    modified: FieldTimes::new(),
                },
            ))
        })
        .collect()
}

/// Writes `project` in full over what is stored (its tasks, resources and assignments are
/// replaced), as imported and published `now`. A new project gets `policy` (or the default);
/// a stored one keeps its policy unless `policy` is given.
pub(crate) fn write_project(
    conn: &dyn Conn,
    project: &Project,
    policy: Option<Policy>,
    now: DateTime<Utc>,
) -> Result<Policy, EmbeddedError> {
    let key = project.guid.to_string();
    let stamp = ts(now);
    conn.execute(
        "INSERT INTO projects (guid, name, time_zone, minutes_per_day, minutes_per_week, start,
                               policy, revision, imported_at, published_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
         ON CONFLICT (guid) DO UPDATE SET
             name = excluded.name, time_zone = excluded.time_zone,
             minutes_per_day = excluded.minutes_per_day,
             minutes_per_week = excluded.minutes_per_week, start = excluded.start,
             policy = COALESCE(?9, projects.policy), revision = projects.revision + 1,
             plan_version = projects.plan_version + 1, imported_at = excluded.imported_at, published_at = excluded.published_at",
        args![
            key,
            project.name,
            project.time_zone.name(),
            project.minutes_per_day,
            project.minutes_per_week,
            project.start.map(local),
            policy.unwrap_or_default().as_str(),
            stamp,
            policy.map(Policy::as_str),
        ],
    )?;
    for table in ["assignments", "tasks", "resources"] {
        // Field times go with their assignments (ON DELETE CASCADE).
        conn.execute(
            &format!("DELETE FROM {table} WHERE project = ?1"),
            args![key],
        )?;
    }
    {
        let insert = "INSERT INTO tasks (project, uid, position, name, notes, start, finish, work,
                                priority, percent_work_complete, summary, milestone,
                                outline_level)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
        for (position, t) in project.tasks.iter().enumerate() {
            conn.execute(
                insert,
                args![
                    key,
                    t.uid.0,
                    i64::try_from(position).unwrap_or(i64::MAX),
                    t.name,
                    t.notes,
                    local(t.start),
                    local(t.finish),
                    t.work.seconds(),
                    t.priority,
                    t.percent_work_complete.get(),
                    t.summary,
                    t.milestone,
                    t.outline_level,
                ],
            )?;
        }
    }
    {
        let insert = "INSERT INTO resources (project, uid, position, name, email, time_zone)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        for (position, r) in project.resources.iter().enumerate() {
            conn.execute(
                insert,
                args![
                    key,
                    r.uid.0,
                    i64::try_from(position).unwrap_or(i64::MAX),
                    r.name,
                    r.email,
                    r.time_zone.map(|z| z.name()),
                ],
            )?;
        }
    }
    {
        let insert =
            "INSERT INTO assignments (project, uid, position, task_uid, resource_uid, start,
                                      finish, work, actual_work, remaining_work,
                                      percent_work_complete, actual_finish)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
        for (position, a) in project.assignments.iter().enumerate() {
            conn.execute(
                insert,
                args![
                    key,
                    a.uid.0,
                    i64::try_from(position).unwrap_or(i64::MAX),
                    a.task_uid.0,
                    a.resource_uid.0,
                    local(a.start),
                    local(a.finish),
                    a.work.seconds(),
                    a.actual_work.seconds(),
                    a.remaining_work.seconds(),
                    a.percent_work_complete.get(),
                    a.actual_finish.map(local),
                ],
            )?;
            write_field_times(conn, &key, a)?;
        }
    }
    let meta = project_meta(conn, project.guid)?.ok_or_else(|| {
        EmbeddedError::Corrupt(format!("project {} vanished while written", project.guid))
    })?;
    Ok(meta.policy)
}

fn write_field_times(conn: &dyn Conn, project: &str, a: &Assignment) -> Result<(), EmbeddedError> {
    let upsert = "INSERT INTO assignment_field_times (project, assignment_uid, field, modified_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (project, assignment_uid, field) DO UPDATE SET modified_at = excluded.modified_at";
    for (field, at) in a.modified.iter() {
        conn.execute(upsert, args![project, a.uid.0, field_name(field), ts(at)])?;
    }
    Ok(())
}

/// Writes the values of one assignment (not its position) and its field times. The caller
/// moves the plan version ([`touch_plan`]).
pub(crate) fn save_assignment(
    conn: &dyn Conn,
    project: ProjectGuid,
    a: &Assignment,
) -> Result<(), EmbeddedError> {
    let key = project.to_string();
    conn.execute(
        "UPDATE assignments SET task_uid = ?3, resource_uid = ?4, start = ?5, finish = ?6,
                work = ?7, actual_work = ?8, remaining_work = ?9, percent_work_complete = ?10,
                actual_finish = ?11
         WHERE project = ?1 AND uid = ?2",
        args![
            key,
            a.uid.0,
            a.task_uid.0,
            a.resource_uid.0,
            local(a.start),
            local(a.finish),
            a.work.seconds(),
            a.actual_work.seconds(),
            a.remaining_work.seconds(),
            a.percent_work_complete.get(),
            a.actual_finish.map(local),
        ],
    )?;
    write_field_times(conn, &key, a)
}

/// Moves the project's plan version: something a publish reads changed. Every transaction that
/// saves an assignment or a task calls it once ([`write_project`] moves it itself).
pub(crate) fn touch_plan(conn: &dyn Conn, project: ProjectGuid) -> Result<(), EmbeddedError> {
    conn.execute(
        "UPDATE projects SET plan_version = plan_version + 1 WHERE guid = ?1",
        args![project.to_string()],
    )?;
    Ok(())
}

/// What [`crate::pm::PmHost::plan_revision`] answers for the project: its import stamp, import
/// count and plan version, which together move with every write of what a publish reads (the
/// stamp tells a project removed and imported again from the one before it). `None` when the
/// project is not stored.
pub(crate) fn plan_revision(
    conn: &dyn Conn,
    guid: ProjectGuid,
) -> Result<Option<String>, EmbeddedError> {
    let row = conn.query_opt(
        "SELECT imported_at, revision, plan_version FROM projects WHERE guid = ?1",
        args![guid.to_string()],
    )?;
    row.map(|row| {
        Ok(format!(
            "{}/{}/{}",
            row.get::<String>(0)?,
            row.get::<i64>(1)?,
            row.get::<i64>(2)?
        ))
    })
    .transpose()
}

/// Writes the values of one task (not its position). The caller moves the plan version
/// ([`touch_plan`]).
pub(crate) fn save_task(
    conn: &dyn Conn,
    project: ProjectGuid,
    t: &Task,
) -> Result<(), EmbeddedError> {
    conn.execute(
        "UPDATE tasks SET name = ?3, notes = ?4, start = ?5, finish = ?6, work = ?7,
                priority = ?8, percent_work_complete = ?9, summary = ?10, milestone = ?11,
                outline_level = ?12
         WHERE project = ?1 AND uid = ?2",
        args![
            project.to_string(),
            t.uid.0,
            t.name,
            t.notes,
            local(t.start),
            local(t.finish),
            t.work.seconds(),
            t.priority,
            t.percent_work_complete.get(),
            t.summary,
            t.milestone,
            t.outline_level,
        ],
    )?;
    Ok(())
}

/// Sets the project's policy; `false` when there is no such project.
pub(crate) fn set_policy(
    conn: &dyn Conn,
    guid: ProjectGuid,
    policy: Policy,
) -> Result<bool, EmbeddedError> {
    let n = conn.execute(
        "UPDATE projects SET policy = ?2 WHERE guid = ?1",
        args![guid.to_string(), policy.as_str()],
    )?;
    Ok(n > 0)
}

/// Records a (re)publication; `false` when there is no such project.
pub(crate) fn touch_published(
    conn: &dyn Conn,
    guid: ProjectGuid,
    now: DateTime<Utc>,
) -> Result<bool, EmbeddedError> {
    let n = conn.execute(
        "UPDATE projects SET published_at = ?2 WHERE guid = ?1",
        args![guid.to_string(), ts(now)],
    )?;
    Ok(n > 0)
}

/// Summaries of all projects, in name order.
pub(crate) fn summaries(conn: &dyn Conn) -> Result<Vec<ProjectSummary>, EmbeddedError> {
    let mut out = Vec::new();
    for guid in project_guids(conn)? {
        if let Some(summary) = summary(conn, guid)? {
            out.push(summary);
        }
    }
    Ok(out)
}

/// The summary of one project.
pub(crate) fn summary(
    conn: &dyn Conn,
    guid: ProjectGuid,
) -> Result<Option<ProjectSummary>, EmbeddedError> {
    let Some(meta) = project_meta(conn, guid)? else {
        return Ok(None);
    };
    // Counted, not loaded: resolving a project's name reads every project's summary, and a
    // plan of 100,000 assignments took 80 MB to count.
    let Some(head) = load_head(conn, guid)? else {
        return Ok(None);
    };
    let key = guid.to_string();
    let rows_of = |table: &str| -> Result<usize, EmbeddedError> {
        let n: i64 = one(
            conn,
            &format!("SELECT COUNT(*) FROM {table} WHERE project = ?1"),
            args![key],
        )?;
        Ok(count(n))
    };
    let pending: i64 = one(conn, PENDING_OF_PROJECT, args![key])?;
    Ok(Some(ProjectSummary {
        guid,
        name: head.name,
        time_zone: head.time_zone.name().to_owned(),
        policy: meta.policy,
        tasks: rows_of("tasks")?,
        resources: rows_of("resources")?,
        assignments: rows_of("assignments")?,
        mailbox_assignments: count_sync_units(conn, guid)?,
        pending_updates: count(pending),
        revision: meta.revision,
        imported_at: meta.imported_at,
        published_at: meta.published_at,
    }))
}

/// How many assignments of a stored project are sync units, by the rule of
/// [`Project::sync_units`] without loading the plan: a non-summary task and a resource whose
/// address is not blank. Addresses are judged here, with Rust's `trim`, as the rule does.
fn count_sync_units(conn: &dyn Conn, guid: ProjectGuid) -> Result<usize, EmbeddedError> {
    let key = guid.to_string();
    let with_address = resource_addresses(conn, &key)?;
    let mut units = 0;
    for row in conn.query(
        "SELECT a.resource_uid, COUNT(*) FROM assignments a
         JOIN tasks t ON t.project = a.project AND t.uid = a.task_uid
         WHERE a.project = ?1 AND a.task_uid <> ?2 AND t.summary = 0
         GROUP BY a.resource_uid",
        args![key, TaskUid::PROJECT_SUMMARY.0],
    )? {
        if with_address.contains_key(&row.get::<i64>(0)?) {
            units += count(row.get::<i64>(1)?);
        }
    }
    Ok(units)
}

/// Appends `event` to the event log, for every process's subscribers.
pub(crate) fn emit(
    conn: &dyn Conn,
    event: &HostEvent,
    now: DateTime<Utc>,
) -> Result<(), EmbeddedError> {
    let body = serde_json::to_string(event).map_err(|e| EmbeddedError::Corrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO events (body, created_at) VALUES (?1, ?2)",
        args![body, ts(now)],
    )?;
    Ok(())
}

/// Stores a new status update.
pub(crate) fn insert_update(
    conn: &dyn Conn,
    record: &StatusUpdateRecord,
) -> Result<(), EmbeddedError> {
    let changes = serde_json::to_string(&record.changes)
        .map_err(|e| EmbeddedError::Corrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO status_updates (id, project, assignment_uid, changes, mailbox, item_id,
                                     change_key, mail_modified_at, state, submitted_at,
                                     decided_at, decider, reason, superseded_by, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        args![
            record.id.0,
            record.key.project.to_string(),
            record.key.assignment.0,
            changes,
            record.source.mailbox,
            record.source.item_id,
            record.source.change_key,
            ts(record.source.modified_at),
            record.state.as_str(),
            ts(record.submitted_at),
            record.decided_at.map(ts),
            record.decider,
            record.reason,
            record.superseded_by.as_ref().map(|id| id.0.clone()),
            details(record)?,
        ],
    )?;
    Ok(())
}

/// What a record keeps in its `details` column.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct UpdateDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_note: Option<crate::pm::host::StatusNoteChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_on: Option<chrono::NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    applied: Vec<super::types::AppliedValue>,
}

fn details(record: &StatusUpdateRecord) -> Result<String, EmbeddedError> {
    serde_json::to_string(&UpdateDetails {
        status_note: record.status_note.clone(),
        completed_on: record.completed_on,
        applied: record.applied.clone(),
    })
    .map_err(|e| EmbeddedError::Corrupt(e.to_string()))
}

/// Records the values an update applied.
pub(crate) fn save_details(
    conn: &dyn Conn,
    record: &StatusUpdateRecord,
) -> Result<(), EmbeddedError> {
    conn.execute(
        "UPDATE status_updates SET details = ?2 WHERE id = ?1",
        args![record.id.0, details(record)?],
    )?;
    Ok(())
}

/// Records a decision on an update.
pub(crate) fn decide_update(
    conn: &dyn Conn,
    id: &StatusUpdateId,
    state: UpdateState,
    at: DateTime<Utc>,
    decider: &str,
    reason: Option<&str>,
    superseded_by: Option<&StatusUpdateId>,
) -> Result<(), EmbeddedError> {
    conn.execute(
        "UPDATE status_updates SET state = ?2, decided_at = ?3, decider = ?4, reason = ?5,
                superseded_by = ?6
         WHERE id = ?1",
        args![
            id.0,
            state.as_str(),
            ts(at),
            decider,
            reason,
            superseded_by.map(|s| s.0.clone())
        ],
    )?;
    Ok(())
}

const SELECT_UPDATES: &str = "
    SELECT su.id, su.project, su.assignment_uid, su.changes, su.mailbox, su.item_id,
           su.change_key, su.mail_modified_at, su.state, su.submitted_at, su.decided_at,
           su.decider, su.reason, su.superseded_by, t.name, r.name, su.details
    FROM status_updates su
    LEFT JOIN assignments a ON a.project = su.project AND a.uid = su.assignment_uid
    LEFT JOIN tasks t ON t.project = a.project AND t.uid = a.task_uid
    LEFT JOIN resources r ON r.project = a.project AND r.uid = a.resource_uid";

/// The columns of [`SELECT_UPDATES`], as read.
type RawUpdate = (
    (String, String, i64, String),
    (String, String, String, String),
    (String, String, Option<String>),
    (Option<String>, Option<String>, Option<String>),
    (Option<String>, Option<String>, Option<String>),
);

fn raw_update(row: &Row) -> Result<RawUpdate, EmbeddedError> {
    Ok((
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?),
        (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?),
        (row.get(8)?, row.get(9)?, row.get(10)?),
        (row.get(11)?, row.get(12)?, row.get(13)?),
        (row.get(14)?, row.get(15)?, row.get(16)?),
    ))
}

fn record(raw: RawUpdate) -> Result<StatusUpdateRecord, EmbeddedError> {
    let (
        (id, project, uid, changes),
        (mailbox, item_id, change_key, mail_modified_at),
        (state, submitted_at, decided_at),
        (decider, reason, superseded_by),
        (task_name, resource_name, details),
    ) = raw;
    let details: UpdateDetails = match details {
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("details", &text))?,
        None => UpdateDetails::default(),
    };
    Ok(StatusUpdateRecord {
        id: StatusUpdateId(id),
        key: AssignmentKey {
            project: parse_guid(&project)?,
            assignment: AssignmentUid(uid),
        },
        changes: serde_json::from_str::<Vec<FieldChange>>(&changes)
            .map_err(|_| corrupt("changes", &changes))?,
        source: UpdateSource {
            mailbox,
            item_id,
            change_key,
            modified_at: parse_ts(&mail_modified_at)?,
        },
        state: state.parse().map_err(|_| corrupt("state", &state))?,
        submitted_at: parse_ts(&submitted_at)?,
        decided_at: decided_at.as_deref().map(parse_ts).transpose()?,
        decider,
        reason,
        superseded_by: superseded_by.map(StatusUpdateId),
        task_name,
        resource_name,
        status_note: details.status_note,
        completed_on: details.completed_on,
        applied: details.applied,
    })
}

/// One status update by id.
pub(crate) fn load_update(
    conn: &dyn Conn,
    id: &StatusUpdateId,
) -> Result<Option<StatusUpdateRecord>, EmbeddedError> {
    let raw = conn.query_opt(&format!("{SELECT_UPDATES} WHERE su.id = ?1"), args![id.0])?;
    raw.map(|row| record(raw_update(&row)?)).transpose()
}

/// The update already stored under this idempotency key (one mailbox item version), if any.
pub(crate) fn find_update_by_key(
    conn: &dyn Conn,
    key: &IdempotencyKey,
) -> Result<Option<StatusUpdateId>, EmbeddedError> {
    conn.query_opt(
        "SELECT id FROM status_updates
         WHERE project = ?1 AND assignment_uid = ?2 AND item_id = ?3 AND change_key = ?4",
        args![
            key.key.project.to_string(),
            key.key.assignment.0,
            key.item_id,
            key.change_key
        ],
    )?
    .map(|row| Ok(StatusUpdateId(row.get::<String>(0)?)))
    .transpose()
}

/// How many updates of a project wait for a decision.
const PENDING_OF_PROJECT: &str =
    "SELECT COUNT(*) FROM status_updates WHERE project = ?1 AND state = 'pending'";

/// The statement and arguments of [`list_updates`] for `filter`: only the conditions the filter
/// sets, so that the database can use an index for them (a condition written as `?n IS NULL OR
/// column = ?n` made every lookup of one assignment's pending updates, which each submit under
/// the approval policy does, scan the whole table).
fn updates_query(filter: &UpdateFilter) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    if let Some(state) = filter.state {
        args.push(Value::Text(state.as_str().to_owned()));
        conditions.push(format!("su.state = ?{}", args.len()));
    }
    if let Some(project) = filter.project.or(filter.key.map(|k| k.project)) {
        args.push(Value::Text(project.to_string()));
        conditions.push(format!("su.project = ?{}", args.len()));
    }
    if let Some(key) = filter.key {
        args.push(Value::Int(key.assignment.0));
        conditions.push(format!("su.assignment_uid = ?{}", args.len()));
    }
    let sql = if conditions.is_empty() {
        format!("{SELECT_UPDATES} ORDER BY su.seq")
    } else {
        format!(
            "{SELECT_UPDATES} WHERE {} ORDER BY su.seq",
            conditions.join(" AND ")
        )
    };
    (sql, args)
}

/// Status updates matching `filter`, oldest first.
pub(crate) fn list_updates(
    conn: &dyn Conn,
    filter: &UpdateFilter,
) -> Result<Vec<StatusUpdateRecord>, EmbeddedError> {
    if let (Some(project), Some(key)) = (filter.project, filter.key)
        && project != key.project
    {
        return Ok(Vec::new());
    }
    let (sql, args) = updates_query(filter);
    conn.query(&sql, &args)?
        .iter()
        .map(|row| record(raw_update(row)?))
        .collect()
}

/// A webhook delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) seq: i64,
    pub(crate) update_id: StatusUpdateId,
    pub(crate) body: String,
    pub(crate) attempts: u32,
}

/// Queues a webhook delivery.
pub(crate) fn enqueue_webhook(
    conn: &dyn Conn,
    update_id: &StatusUpdateId,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(), EmbeddedError> {
    conn.execute(
        "INSERT INTO webhook_outbox (update_id, body, created_at) VALUES (?1, ?2, ?3)",
        args![update_id.0, body, ts(now)],
    )?;
    Ok(())
}

/// The oldest deliveries not yet delivered nor given up on.
pub(crate) fn outbox_due(conn: &dyn Conn, limit: usize) -> Result<Vec<OutboxRow>, EmbeddedError> {
    conn.query(
        "SELECT seq, update_id, body, attempts FROM webhook_outbox
         WHERE failed_at IS NULL ORDER BY seq LIMIT ?1",
        args![i64::try_from(limit).unwrap_or(i64::MAX)],
    )?
    .iter()
    .map(|row| {
        Ok(OutboxRow {
            seq: row.get(0)?,
            update_id: StatusUpdateId(row.get(1)?),
            body: row.get(2)?,
            attempts: row.get(3)?,
        })
    })
    .collect()
}

/// Removes a delivered row.
pub(crate) fn outbox_delivered(conn: &dyn Conn, seq: i64) -> Result<(), EmbeddedError> {
    conn.execute("DELETE FROM webhook_outbox WHERE seq = ?1", args![seq])?;
    Ok(())
}

/// Records a failed attempt; with `give_up`, the row is kept but no longer due.
pub(crate) fn outbox_failed(
    conn: &dyn Conn,
    seq: i64,
    error: &str,
    give_up: bool,
    now: DateTime<Utc>,
) -> Result<(), EmbeddedError> {
    conn.execute(
        "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?2,
                failed_at = CASE WHEN ?3 THEN ?4 ELSE NULL END
         WHERE seq = ?1",
        args![seq, error, give_up, ts(now)],
    )?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    #[test]
    fn local_dates_round_trip_with_and_without_fractions() {
        let plain = NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|d| d.and_hms_opt(8, 0, 0))
            .expect("valid");
        let fraction = NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|d| d.and_hms_milli_opt(8, 0, 0, 500))
            .expect("valid");
        assert_eq!(local(plain), "2026-03-02T08:00:00");
        for at in [plain, fraction] {
            assert_eq!(parse_local(&local(at)).ok(), Some(at));
        }
    }

    /// The plan the database chooses for `sql` with `args` on a new PM store.
    fn query_plan(sql: &str, args: &[Value]) -> String {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let args = args.iter().map(|v| match v {
            Value::Null => rusqlite::types::Value::Null,
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
        });
        crate::sqlite::query_plan(&conn, sql, rusqlite::params_from_iter(args))
    }

    // Each submit under the approval policy looks up its assignment's pending updates (to
    // supersede them): a scan of every update ever stored made it slower with each one.
    #[test]
    fn an_assignments_updates_are_found_by_index() {
        let key = AssignmentKey {
            project: "6f1f3a2e-0000-4000-8000-000000000001"
                .parse()
                .expect("guid"),
            assignment: crate::pm::model::AssignmentUid(7),
        };
        // An assignment's pending updates, and all of its updates.
        for (state, index) in [
            (Some(UpdateState::Pending), "status_updates_pending"),
            (None, "status_updates_by_source"),
        ] {
            let filter = UpdateFilter {
                state,
                key: Some(key),
                ..UpdateFilter::default()
            };
            let (sql, args) = updates_query(&filter);
            let plan = query_plan(&sql, &args);
            let search = format!("SEARCH su USING INDEX {index} (project=? AND assignment_uid=?)");
            assert!(plan.contains(&search), "{state:?}: {plan}");
        }
        let plan = query_plan(PENDING_OF_PROJECT, &[Value::Text(key.project.to_string())]);
        assert!(plan.contains("status_updates_pending"), "{plan}");
    }

    proptest::proptest! {
        /// The hand-written reader agrees with chrono's format parser on what `local` writes
        /// and on text close to it, and a text it refuses is still read by the fallback.
        #[test]
        fn local_dates_are_read_as_chrono_reads_them(
            secs in 0i64..8_000_000_000i64,
            nanos in 0u32..1_000_000_000u32,
            cut in 0usize..32,
            noise in "[0-9T:.\\-]{0,4}",
        ) {
            let at = chrono::DateTime::from_timestamp(secs, nanos).expect("in range").naive_utc();
            let written = local(at);
            proptest::prop_assert_eq!(local_as_written(&written), Some(at));
            proptest::prop_assert_eq!(parse_local(&written).ok(), Some(at));
            let mut bent = written[..cut.min(written.len())].to_string();
            bent.push_str(&noise);
            let chrono = NaiveDateTime::parse_from_str(&bent, "%Y-%m-%dT%H:%M:%S%.f").ok();
            if let Some(fast) = local_as_written(&bent) {
                proptest::prop_assert_eq!(Some(fast), chrono);
            }
            proptest::prop_assert_eq!(parse_local(&bent).ok(), chrono);
        }
    }

    #[test]
    fn impossible_local_dates_are_refused() {
        for text in [
            "2026-02-30T08:00:00",
            "2026-03-02T24:00:00",
            "2026-03-02T08:00:00.",
            "2026-03-02T08:00:00.1234567890",
            "2026-03-02 08:00:00",
            "2026-3-02T08:00:00",
        ] {
            assert_eq!(local_as_written(text), None, "{text}");
        }
        assert!(parse_local("2026-02-30T08:00:00").is_err());
    }

    #[test]
    fn instants_sort_as_text_in_time_order() {
        let a = Utc
            .with_ymd_and_hms(2026, 3, 2, 8, 0, 0)
            .single()
            .expect("valid");
        let b = a + chrono::TimeDelta::microseconds(1);
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(b)).ok(), Some(b));
    }

    /// Task 1 with assignments 1 (r1) and 2 (r2), task 2 with assignment 3 (r3) stored after
    /// a stamped update; the part of assignment 1 must equal the same rows of the whole plan.
    #[test]
    fn project_part_equals_the_same_rows_of_the_whole_project() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let guid = ProjectGuid(uuid::Uuid::from_u128(7));
        let mut project = Project {
            guid,
            name: "p".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![task(2, false), task(1, false)],
            resources: (1..=3)
                .map(|uid| resource(uid, Some(&format!("r{uid}@example.com"))))
                .collect(),
            assignments: vec![
                assignment(3, 2, 3),
                assignment(2, 1, 2),
                assignment(1, 1, 1),
            ],
        };
        let now = Utc
            .with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid");
        write_project(&conn, &project, None, now).expect("write");
        project.assignments[2]
            .modified
            .touch(AssignmentField::PercentWorkComplete, now);
        save_assignment(&conn, guid, &project.assignments[2]).expect("stamp");
        let whole = load_project(&conn, guid).expect("load").expect("stored");

        let part = load_project_part(&conn, guid, &[AssignmentUid(1)], false)
            .expect("load")
            .expect("stored");
        assert_eq!(part.name, whole.name);
        assert_eq!(part.assignments, vec![whole.assignments[2].clone()]);
        assert_eq!(part.tasks, vec![whole.tasks[1].clone()]);
        assert_eq!(part.resources, vec![whole.resources[0].clone()]);
        assert!(
            part.assignments[0]
                .modified
                .get(AssignmentField::PercentWorkComplete)
                .is_some()
        );

        // With the task's other assignments, in file order: what applying an update reads.
        let with_siblings = load_project_part(&conn, guid, &[AssignmentUid(1)], true)
            .expect("load")
            .expect("stored");
        assert_eq!(with_siblings.assignments, whole.assignments[1..].to_vec());
        assert_eq!(with_siblings.resources, whole.resources[..2].to_vec());

        // Unknown assignments and projects.
        let none = load_project_part(&conn, guid, &[AssignmentUid(99)], true)
            .expect("load")
            .expect("stored");
        assert!(none.assignments.is_empty() && none.tasks.is_empty());
        let other = ProjectGuid(uuid::Uuid::from_u128(8));
        assert!(
            load_project_part(&conn, other, &[AssignmentUid(1)], true)
                .expect("load")
                .is_none()
        );
    }

    /// The day every fixture task and assignment starts and ends.
    fn day() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|x| x.and_hms_opt(8, 0, 0))
            .expect("valid")
    }

    /// A one-day task of 8 hours.
    pub(in crate::pm::embedded) fn task(uid: i64, summary: bool) -> Task {
        Task {
            uid: TaskUid(uid),
            name: format!("task {uid}"),
            notes: String::new(),
            start: day(),
            finish: day(),
            work: Work::from_hours(8),
            priority: Task::DEFAULT_PRIORITY,
            percent_work_complete: Percent::ZERO,
            summary,
            milestone: false,
            outline_level: 1,
        }
    }

    /// A resource with `email` as its address.
    pub(in crate::pm::embedded) fn resource(uid: i64, email: Option<&str>) -> Resource {
        Resource {
            uid: ResourceUid(uid),
            name: format!("r{uid}"),
            email: email.map(str::to_owned),
            time_zone: None,
        }
    }

    /// A one-day assignment of 8 hours, not started.
    pub(in crate::pm::embedded) fn assignment(uid: i64, task: i64, resource: i64) -> Assignment {
        Assignment {
            uid: AssignmentUid(uid),
            task_uid: TaskUid(task),
            resource_uid: ResourceUid(resource),
            start: day(),
            finish: day(),
            work: Work::from_hours(8),
            actual_work: Work::ZERO,
            remaining_work: Work::from_hours(8),
            percent_work_complete: Percent::ZERO,
            actual_finish: None,
            modified: FieldTimes::new(),
        }
    }

    /// A part of hundreds of assignments (read in chunks of padded key lists) is the same rows
    /// as the whole plan has, every field time with its assignment, nothing else.
    #[test]
    fn a_large_part_is_read_in_chunks_as_the_whole_plan_has_it() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let guid = ProjectGuid(uuid::Uuid::from_u128(11));
        let mut project = Project {
            guid,
            name: "large".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: (1..=700).map(|uid| task(uid, false)).collect(),
            resources: (1..=7)
                .map(|uid| resource(uid, Some(&format!("r{uid}@example.com"))))
                .collect(),
            assignments: (1..=700)
                .map(|uid| assignment(uid, uid, uid % 7 + 1))
                .collect(),
        };
        let now = Utc
            .with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid");
        write_project(&conn, &project, None, now).expect("write");
        for a in project.assignments.iter_mut().filter(|a| a.uid.0 % 3 == 0) {
            a.modified.touch(AssignmentField::PercentWorkComplete, now);
            save_assignment(&conn, guid, a).expect("stamp");
        }
        let whole = load_project(&conn, guid).expect("load").expect("stored");
        // Every other assignment: 350 keys, one full chunk of 256 and one padded to 256; and
        // 9 keys, padded to 64.
        for every in [2usize, 70] {
            let uids: Vec<AssignmentUid> = whole
                .assignments
                .iter()
                .step_by(every)
                .map(|a| a.uid)
                .collect();
            let part = load_project_part(&conn, guid, &uids, false)
                .expect("load")
                .expect("stored");
            let expected: Vec<Assignment> =
                whole.assignments.iter().step_by(every).cloned().collect();
            assert_eq!(part.assignments, expected, "every {every}");
            assert_eq!(part.tasks.len(), uids.len());
            assert!(part.resources.len() <= 7);
        }

        // The units with their addresses, as the loaded plan gives them.
        let units = sync_unit_addresses(&conn, guid)
            .expect("units")
            .expect("stored");
        let loaded: Vec<(AssignmentUid, String)> = whole
            .sync_units()
            .iter()
            .map(|u| (u.assignment.uid, u.email.to_owned()))
            .collect();
        let listed: Vec<(AssignmentUid, String)> =
            units.into_iter().map(|u| (u.uid, u.email)).collect();
        assert_eq!(listed, loaded);
        let other = ProjectGuid(uuid::Uuid::from_u128(12));
        assert!(sync_unit_addresses(&conn, other).expect("units").is_none());
    }

    /// A summary counts what loading the plan would: every kind of assignment that is not a
    /// sync unit (summary task, the project summary task, no resource, a blank or missing
    /// address, a task or resource not in the plan) is left out, as `sync_units` leaves it out.
    #[test]
    fn summary_counts_sync_units_as_the_loaded_plan_does() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::migrate::migrate(&mut conn, &super::super::schema::SCHEMA).expect("migrate");
        let guid = ProjectGuid(uuid::Uuid::from_u128(9));
        let project = Project {
            guid,
            name: "counted".into(),
            time_zone: Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![
                task(0, false),
                task(1, false),
                task(2, true),
                task(3, false),
            ],
            resources: vec![
                resource(1, Some(" ann@example.com ")),
                resource(2, Some(" \t\u{a0}")),
                resource(3, None),
                resource(ResourceUid::NONE.0, Some("none@example.com")),
            ],
            assignments: vec![
                assignment(1, 1, 1),
                assignment(2, 2, 1),
                assignment(3, 1, 2),
                assignment(4, 1, 3),
                assignment(5, 1, ResourceUid::NONE.0),
                assignment(6, 0, 1),
                assignment(7, 99, 1),
                assignment(8, 1, 42),
                assignment(9, 3, 1),
            ],
        };
        let now = Utc
            .with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
            .single()
            .expect("valid");
        write_project(&conn, &project, None, now).expect("write");
        let summary = summary(&conn, guid).expect("summary").expect("stored");
        assert_eq!(project.sync_units().len(), 2);
        assert_eq!(summary.mailbox_assignments, project.sync_units().len());
        // The units listed without the plan are the loaded plan's, addresses trimmed.
        let listed: Vec<(AssignmentUid, String)> = sync_unit_addresses(&conn, guid)
            .expect("units")
            .expect("stored")
            .into_iter()
            .map(|u| (u.uid, u.email))
            .collect();
        let loaded: Vec<(AssignmentUid, String)> = project
            .sync_units()
            .iter()
            .map(|u| (u.assignment.uid, u.email.to_owned()))
            .collect();
        assert_eq!(listed, loaded);
        assert_eq!(
            (summary.tasks, summary.resources, summary.assignments),
            (4, 4, 9)
        );
        assert_eq!(summary.name, "counted");
    }

    #[test]
    fn field_names_round_trip() {
        for field in AssignmentField::ALL {
            assert_eq!(parse_field(field_name(field)).ok(), Some(field));
        }
    }
}
