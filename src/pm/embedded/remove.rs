//! Removing a project from the store: its rows, its status updates and its last import, in one
//! transaction.

use super::EmbeddedError;
use super::sql::{Conn, Tx, args, one};
use crate::pm::model::ProjectGuid;

/// How many rows of each kind a removal took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemovedRows {
    /// Tasks.
    pub tasks: usize,
    /// Resources.
    pub resources: usize,
    /// Assignments.
    pub assignments: usize,
    /// Status updates, whatever their state.
    pub status_updates: usize,
}

/// Removes `guid` and everything of it; [`EmbeddedError::UnknownProject`] if it is not stored.
pub(crate) fn remove(conn: &dyn Conn, guid: ProjectGuid) -> Result<RemovedRows, EmbeddedError> {
    let tx = Tx::begin(conn)?;
    let key = guid.to_string();
    let count = |table: &str| -> Result<usize, EmbeddedError> {
        let n: i64 = one(
            &tx,
            &format!("SELECT COUNT(*) FROM {table} WHERE project = ?1"),
            args![key],
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    };
    let rows = RemovedRows {
        tasks: count("tasks")?,
        resources: count("resources")?,
        assignments: count("assignments")?,
        status_updates: count("status_updates")?,
    };
    // Status updates keep no foreign key to assignments (they outlive a re-import), so they go
    // first; the rest follow the project (ON DELETE CASCADE).
    // Webhook deliveries not yet made of its updates go with them.
    tx.execute(
        "DELETE FROM webhook_outbox WHERE update_id IN
             (SELECT id FROM status_updates WHERE project = ?1)",
        args![key],
    )?;
    tx.execute("DELETE FROM status_updates WHERE project = ?1", args![key])?;
    if tx.execute("DELETE FROM projects WHERE guid = ?1", args![key])? == 0 {
        return Err(EmbeddedError::UnknownProject(guid));
    }
    tx.commit()?;
    Ok(rows)
}
