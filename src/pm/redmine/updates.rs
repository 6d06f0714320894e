//! The status updates of the Redmine host, kept by taskbridge: Redmine has no approval of its
//! own, so with the approval policy an update waits here until the status manager decides it
//! (`taskbridge updates approve|reject`), and every update is recorded with its outcome so that
//! a resubmission of the same mailbox item version (after a crash or a restart) is answered
//! with the first outcome.
//!
//! One SQLite file of its own (`redmine-updates.sqlite` in the data directory), WAL, a 5 s busy
//! timeout, the numbered migrations every taskbridge file uses. Every decision also adds a row
//! to `decisions`, so that the `serve` process relays a decision taken by another process (the
//! CLI) to its engine: the host reads the rows after the last one it relayed every second.
//! Calls run on the file's own thread (the shared [`crate::sqlite::actor`]), never on a
//! runtime worker.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::pm::embedded::{StatusUpdateRecord, UpdateFilter, UpdateState};
use crate::pm::{AssignmentKey, StatusUpdateId, UpdateOutcome};
use crate::sqlite::actor::{Actor, Quiet};
use crate::sqlite::migrate::{Schema, migrate};

use super::RedmineError;

/// The file's migrations, version 1 first.
const SCHEMA: Schema = Schema {
    store: "Redmine updates",
    migrations: &[
        // The record and the outcome are JSON: the store only finds them by id, by the mailbox
        // item version they came from, by state and by project.
        "CREATE TABLE updates (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            assignment INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            change_key TEXT NOT NULL,
            state TEXT NOT NULL,
            submitted_at TEXT NOT NULL,
            record TEXT NOT NULL,
            outcome TEXT
        );
        CREATE UNIQUE INDEX updates_by_source ON updates(project, assignment, item_id, change_key);
        CREATE INDEX updates_by_state ON updates(state, project);
        CREATE TABLE decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            update_id TEXT NOT NULL REFERENCES updates(id),
            decided_at TEXT NOT NULL
        );",
    ],
};

/// One decision to relay: its sequence number, the assignment and the outcome.
pub(crate) type Decision = (i64, AssignmentKey, UpdateOutcome);

/// The store of the Redmine host's status updates. Cheap to clone.
#[derive(Clone)]
pub(crate) struct UpdateStore {
    actor: Arc<Actor>,
}

impl std::fmt::Debug for UpdateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpdateStore")
    }
}

fn db(e: impl std::fmt::Display) -> RedmineError {
    RedmineError::Store(e.to_string())
}

fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, RedmineError> {
    serde_json::to_string(v).map_err(db)
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, RedmineError> {
    serde_json::from_str(s).map_err(|e| RedmineError::Store(format!("a stored update: {e}")))
}

/// A stored update: the record and, once decided, its outcome.
pub(crate) type Stored = (StatusUpdateRecord, Option<UpdateOutcome>);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Option<String>)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn stored((record, outcome): (String, Option<String>)) -> Result<Stored, RedmineError> {
    Ok((parse(&record)?, outcome.as_deref().map(parse).transpose()?))
}

impl UpdateStore {
    /// Opens (creating and migrating) the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<UpdateStore, RedmineError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                RedmineError::Store(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| RedmineError::Store(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        migrate(&mut conn, &SCHEMA).map_err(db)?;
        let (actor, _opened) = Actor::spawn("taskbridge-redmine-updates", move || {
            Ok::<_, RedmineError>((conn, Quiet))
        })
        .map_err(|e| RedmineError::Store(format!("cannot start the update store's thread: {e}")))?;
        Ok(UpdateStore {
            actor: Arc::new(actor),
        })
    }

    /// Runs `f` on the store's thread.
    async fn call<T, F>(&self, f: F) -> Result<T, RedmineError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RedmineError> + Send + 'static,
    {
        self.actor
            .call(f)
            .await
            .map_err(|_| RedmineError::Store("the update store is closed".into()))?
    }

    /// The update recorded for this mailbox item version, if any.
    pub(crate) async fn by_source(
        &self,
        key: AssignmentKey,
        item_id: String,
        change_key: String,
    ) -> Result<Option<Stored>, RedmineError> {
        self.call(move |c| {
            c.query_row(
                "SELECT record, outcome FROM updates
                 WHERE project = ?1 AND assignment = ?2 AND item_id = ?3 AND change_key = ?4",
                params![
                    key.project.0.to_string(),
                    key.assignment.0,
                    item_id,
                    change_key
                ],
                read_row,
            )
            .optional()
            .map_err(db)?
            .map(stored)
            .transpose()
        })
        .await
    }

    /// One update by id.
    pub(crate) async fn get(&self, id: StatusUpdateId) -> Result<Option<Stored>, RedmineError> {
        self.call(move |c| {
            c.query_row(
                "SELECT record, outcome FROM updates WHERE id = ?1",
                params![id.0],
                read_row,
            )
            .optional()
            .map_err(db)?
            .map(stored)
            .transpose()
        })
        .await
    }

    /// Records a new update. A pending one supersedes the pending updates of the same
    /// assignment (the engine carries their fields into the new one); their ids are returned.
    pub(crate) async fn insert(
        &self,
        record: StatusUpdateRecord,
        outcome: Option<UpdateOutcome>,
    ) -> Result<Vec<StatusUpdateId>, RedmineError> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let mut superseded = Vec::new();
            if record.state == UpdateState::Pending {
                let older: Vec<String> = {
                    let mut st = tx
                        .prepare(
                            "SELECT record FROM updates
                             WHERE project = ?1 AND assignment = ?2 AND state = 'pending'",
                        )
                        .map_err(db)?;
                    st.query_map(
                        params![record.key.project.0.to_string(), record.key.assignment.0],
                        |r| r.get(0),
                    )
                    .map_err(db)?
                    .collect::<Result<_, _>>()
                    .map_err(db)?
                };
                for old in older {
                    let mut old: StatusUpdateRecord = parse(&old)?;
                    old.state = UpdateState::Superseded;
                    old.decided_at = Some(record.submitted_at);
                    old.decider = Some(crate::pm::embedded::DECIDER_TASKBRIDGE.to_owned());
                    old.reason = Some(format!("superseded by {}", record.id));
                    old.superseded_by = Some(record.id.clone());
                    tx.execute(
                        "UPDATE updates SET state = 'superseded', record = ?2 WHERE id = ?1",
                        params![old.id.0, json(&old)?],
                    )
                    .map_err(db)?;
                    superseded.push(old.id);
                }
            }
            tx.execute(
                "INSERT INTO updates (id, project, assignment, item_id, change_key, state,
                                      submitted_at, record, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    record.id.0,
                    record.key.project.0.to_string(),
                    record.key.assignment.0,
                    record.source.item_id,
                    record.source.change_key,
                    record.state.as_str(),
                    text(record.submitted_at),
                    json(&record)?,
                    outcome.as_ref().map(json).transpose()?,
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(superseded)
        })
        .await
    }

    /// Records the decision of a pending update (`record` in its decided state) and returns
    /// the decision's sequence number; [`RedmineError::NotPending`] when another decision came
    /// first.
    pub(crate) async fn decide(
        &self,
        record: StatusUpdateRecord,
        outcome: UpdateOutcome,
    ) -> Result<i64, RedmineError> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let n = tx
                .execute(
                    "UPDATE updates SET state = ?2, record = ?3, outcome = ?4
                     WHERE id = ?1 AND state = 'pending'",
                    params![
                        record.id.0,
                        record.state.as_str(),
                        json(&record)?,
                        json(&outcome)?
                    ],
                )
                .map_err(db)?;
            if n == 0 {
                let state: Option<String> = tx
                    .query_row(
                        "SELECT state FROM updates WHERE id = ?1",
                        params![record.id.0],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                return Err(match state {
                    Some(state) => RedmineError::NotPending {
                        id: record.id,
                        state,
                    },
                    None => RedmineError::UnknownUpdate(record.id),
                });
            }
            tx.execute(
                "INSERT INTO decisions (update_id, decided_at) VALUES (?1, ?2)",
                params![record.id.0, text(Utc::now())],
            )
            .map_err(db)?;
            let seq = tx.last_insert_rowid();
            tx.commit().map_err(db)?;
            Ok(seq)
        })
        .await
    }

    /// The updates `filter` selects, oldest first.
    pub(crate) async fn list(
        &self,
        filter: UpdateFilter,
    ) -> Result<Vec<StatusUpdateRecord>, RedmineError> {
        self.call(move |c| {
            let mut st = c
                .prepare(
                    "SELECT record FROM updates
                     WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR project = ?2)
                     ORDER BY submitted_at, id",
                )
                .map_err(db)?;
            let rows: Vec<String> = st
                .query_map(
                    params![
                        filter.state.map(UpdateState::as_str),
                        filter.project.map(|p| p.0.to_string())
                    ],
                    |r| r.get(0),
                )
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let record: StatusUpdateRecord = parse(&r)?;
                if filter.key.is_none_or(|k| k == record.key) {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The last decision's sequence number (0 for none).
    pub(crate) async fn last_decision(&self) -> Result<i64, RedmineError> {
        self.call(|c| {
            c.query_row("SELECT COALESCE(MAX(seq), 0) FROM decisions", [], |r| {
                r.get(0)
            })
            .map_err(db)
        })
        .await
    }

    /// The decisions after `seq`, oldest first.
    pub(crate) async fn decisions_after(&self, seq: i64) -> Result<Vec<Decision>, RedmineError> {
        self.call(move |c| {
            let mut st = c
                .prepare(
                    "SELECT d.seq, u.record, u.outcome FROM decisions d
                     JOIN updates u ON u.id = d.update_id
                     WHERE d.seq > ?1 ORDER BY d.seq",
                )
                .map_err(db)?;
            let rows: Vec<(i64, String, Option<String>)> = st
                .query_map(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let mut out = Vec::new();
            for (seq, record, outcome) in rows {
                let record: StatusUpdateRecord = parse(&record)?;
                if let Some(outcome) = outcome {
                    out.push((seq, record.key, parse(&outcome)?));
                }
            }
            Ok(out)
        })
        .await
    }
}
