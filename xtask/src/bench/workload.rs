//! The benchmark's inputs: a project of A assignments over M mailboxes (taskbridge JSON, see
//! `docs/PROJECT-FORMAT.md`) and the simulator's users.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The domain of every benchmark mailbox.
pub const DOMAIN: &str = "bench.example";

/// The address of the connector's mailbox `i`.
pub fn mailbox(i: usize) -> String {
    format!("user{i}@{DOMAIN}")
}

/// The address of the comparison client's mailbox `i` (its own mailboxes in the same
/// simulator, so that the two clients' tasks never meet).
pub fn other_mailbox(i: usize) -> String {
    format!("xl{i}@{DOMAIN}")
}

/// A project of `assignments` one-resource tasks, assignment `i` in mailbox `(i - 1) % mailboxes`:
/// every mailbox gets the same share, as a company's plan spreads work over its people.
pub fn project(guid: &str, name: &str, assignments: usize, mailboxes: usize) -> Value {
    let tasks: Vec<Value> = (1..=assignments)
        .map(|i| {
            json!({
                "uid": i,
                "name": format!("Task {i}"),
                "notes": format!("Notes of task {i}: check the drawings, then report."),
                "start": "2026-03-02T08:00:00",
                "finish": "2026-03-03T17:00:00",
                "work": "PT16H",
                "priority": 500,
            })
        })
        .collect();
    let resources: Vec<Value> = (0..mailboxes)
        .map(|r| {
            json!({
                "uid": r + 1,
                "name": format!("User {r}"),
                "email": mailbox(r),
            })
        })
        .collect();
    let list: Vec<Value> = (1..=assignments)
        .map(|i| {
            json!({
                "uid": i,
                "task_uid": i,
                "resource_uid": (i - 1) % mailboxes + 1,
                "work": "PT16H",
            })
        })
        .collect();
    json!({
        "guid": guid,
        "name": name,
        "time_zone": "Europe/Berlin",
        "start": "2026-03-02T08:00:00",
        "tasks": tasks,
        "resources": resources,
        "assignments": list,
    })
}

/// The assignments each mailbox gets from [`project`].
pub fn per_mailbox(assignments: usize, mailboxes: usize) -> Vec<usize> {
    (0..mailboxes)
        .map(|m| assignments / mailboxes + usize::from(m < assignments % mailboxes))
        .collect()
}

/// The simulator's users file: one `smtp:password` line per mailbox.
pub fn users_file(addresses: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for a in addresses {
        let _ = writeln!(out, "{a}:pw-{a}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_spreads_assignments_evenly_and_imports() {
        let p = project("5b0c7f3e-2d1a-4c55-8e7b-0a9d3c2b1e47", "Bench", 7, 3);
        assert_eq!(per_mailbox(7, 3), vec![3, 2, 2]);
        let text = serde_json::to_vec(&p).expect("json");
        let imported = taskbridge::pm::import::import_bytes(
            &text,
            &taskbridge::pm::import::ImportOptions::default(),
        )
        .expect("imports");
        assert_eq!(imported.sync_units().len(), 7);
        let in_first = imported
            .sync_units()
            .iter()
            .filter(|u| u.email == mailbox(0))
            .count();
        assert_eq!(in_first, 3);
    }
}
