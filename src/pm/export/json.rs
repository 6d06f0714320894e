//! The taskbridge JSON project format (docs/PROJECT-FORMAT.md), written: what the JSON importer
//! reads back to the same project.

use serde_json::{Map, Value, json};

use super::{local_date, roll_up};
use crate::pm::model::Project;

/// `project` as taskbridge JSON, tasks with assignments carrying their rolled-up work and
/// percent.
pub fn write(project: &Project) -> String {
    let rolled = roll_up(project);
    let tasks: Vec<Value> = project
        .tasks
        .iter()
        .map(|t| {
            // Summary tasks carry the roll-up, as Project shows it; a leaf keeps the store's own
            // work and percent (which the embedded host keeps rolled up from its assignments).
            let (work, percent) = match rolled.get(&t.uid) {
                Some(r) if t.summary || t.uid.0 == 0 => (r.work, r.percent_work_complete),
                _ => (t.work, t.percent_work_complete),
            };
            json!({
                "uid": t.uid.0,
                "name": t.name,
                "notes": t.notes,
                "start": local_date(t.start),
                "finish": local_date(t.finish),
                "work": work.to_mspdi(),
                "priority": t.priority,
                "percent_work_complete": percent.get(),
                "summary": t.summary,
                "milestone": t.milestone,
                "outline_level": t.outline_level,
            })
        })
        .collect();
    let resources: Vec<Value> = project
        .resources
        .iter()
        .map(|r| {
            let mut o = Map::new();
            o.insert("uid".into(), json!(r.uid.0));
            o.insert("name".into(), json!(r.name));
            if let Some(email) = &r.email {
                o.insert("email".into(), json!(email));
            }
            if let Some(zone) = r.time_zone {
                o.insert("time_zone".into(), json!(zone.name()));
            }
            Value::Object(o)
        })
        .collect();
    let assignments: Vec<Value> = project
        .assignments
        .iter()
        .map(|a| {
            let mut o = Map::new();
            o.insert("uid".into(), json!(a.uid.0));
            o.insert("task_uid".into(), json!(a.task_uid.0));
            o.insert("resource_uid".into(), json!(a.resource_uid.0));
            o.insert("start".into(), json!(local_date(a.start)));
            o.insert("finish".into(), json!(local_date(a.finish)));
            o.insert("work".into(), json!(a.work.to_mspdi()));
            o.insert("actual_work".into(), json!(a.actual_work.to_mspdi()));
            o.insert("remaining_work".into(), json!(a.remaining_work.to_mspdi()));
            o.insert(
                "percent_work_complete".into(),
                json!(a.percent_work_complete.get()),
            );
            if let Some(done) = a.actual_finish {
                o.insert("actual_finish".into(), json!(local_date(done)));
            }
            Value::Object(o)
        })
        .collect();
    let mut root = Map::new();
    root.insert("guid".into(), json!(project.guid.to_string()));
    root.insert("name".into(), json!(project.name));
    root.insert("time_zone".into(), json!(project.time_zone.name()));
    root.insert("minutes_per_day".into(), json!(project.minutes_per_day));
    root.insert("minutes_per_week".into(), json!(project.minutes_per_week));
    if let Some(start) = project.start {
        root.insert("start".into(), json!(local_date(start)));
    }
    root.insert("tasks".into(), Value::Array(tasks));
    root.insert("resources".into(), Value::Array(resources));
    root.insert("assignments".into(), Value::Array(assignments));
    let mut text = serde_json::to_string_pretty(&Value::Object(root)).unwrap_or_default();
    text.push('\n');
    text
}
