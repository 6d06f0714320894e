//! The SQLite state store: one file, WAL, numbered migrations, one dedicated thread.
//!
//! rusqlite is synchronous, so the connection lives on the shared actor thread
//! ([`crate::sqlite::actor`]) and the async methods send it closures; nothing blocks the tokio
//! runtime. Migrations follow the shared scheme ([`crate::sqlite::migrate`]). The baseline is
//! stored in a compact binary form ([`super::codec`]: every row a publish or a pass reads carries
//! one), as a BLOB; rows written before that hold it as JSON text and are still read. The status
//! stays JSON text, which a query filters on, so that column reads in the `sqlite3` shell.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::codec;
use super::lease::{from_millis, millis};
use super::*;
use crate::sqlite::actor::{Actor, Quiet};
use crate::sqlite::migrate::{self, Schema};

/// Migrations in order, version 1 first.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE assignment (
        project    TEXT NOT NULL,
        assignment INTEGER NOT NULL,
        mailbox    TEXT NOT NULL,
        item_id    TEXT,
        change_key TEXT,
        baseline   TEXT,
        pm_hash    TEXT,
        mail_hash  TEXT,
        status     TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_sync  TEXT,
        PRIMARY KEY (project, assignment)
    );
    CREATE INDEX assignment_mailbox ON assignment (mailbox);
    CREATE INDEX assignment_item ON assignment (mailbox, item_id);
    CREATE TABLE mailbox (
        mailbox           TEXT PRIMARY KEY,
        folder_id         TEXT,
        subscription_id   TEXT,
        watermark         TEXT,
        last_notification TEXT,
        sync_state        TEXT,
        last_reconcile    TEXT,
        lease_owner       TEXT,
        lease_until       INTEGER
    );
    CREATE INDEX mailbox_subscription ON mailbox (subscription_id);
    CREATE TABLE journal (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox    TEXT NOT NULL,
        project    TEXT NOT NULL,
        assignment INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        at         TEXT NOT NULL
    );
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,
        project    TEXT NOT NULL,
        assignment INTEGER NOT NULL,
        mailbox    TEXT NOT NULL,
        field      TEXT NOT NULL,
        pm_value   TEXT NOT NULL,
        mail_value TEXT NOT NULL,
        rule       TEXT NOT NULL,
        winner     TEXT NOT NULL
    );
    CREATE INDEX audit_project ON audit (project, id);",
    // Who settled a conflict and why.
    "ALTER TABLE audit ADD COLUMN note TEXT;",
    // 3: instances, mailbox leases and the queue of notifications handed to a lease's owner.
    "CREATE TABLE instance (
        id      TEXT PRIMARY KEY,
        expires INTEGER NOT NULL
    );
    CREATE TABLE lease (
        mailbox    TEXT PRIMARY KEY,
        owner      TEXT,
        expires    INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE notice_queue (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox         TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        watermark       TEXT,
        item_ids        TEXT NOT NULL
    );
    CREATE INDEX notice_queue_mailbox ON notice_queue (mailbox, id);",
    // 4: baselines written in the binary form (`state::codec`). Nothing to rewrite (rows take
    // the form as they are next written, JSON rows stay readable), but the version moves so
    // that an older release, which reads baselines as text only, refuses the file as too new
    // instead of failing on its rows, and the file is copied before it first changes.
    "-- the binary baseline: no statement",
    // 5: publish marks (`PublishMark`): a mailbox's rows of a project, or the whole project's
    // (mailbox ''), as a publish left them in step with the plan at a revision. `revision` is
    // NULL while reserved. Every write of a mailbox's rows deletes its mark and the project's
    // (but the reserving publish's own).
    "CREATE TABLE publish_mark (
        project  TEXT NOT NULL,
        mailbox  TEXT NOT NULL,
        token    INTEGER NOT NULL,
        revision TEXT,
        mapping  TEXT,
        units    INTEGER,
        PRIMARY KEY (project, mailbox)
    );",
    // 6: the index on `mailbox` alone goes: `assignment_item (mailbox, item_id)` finds a
    // mailbox's rows by the same prefix, and every row written paid for a fourth B-tree.
    "DROP INDEX IF EXISTS assignment_mailbox;",
];

/// The state store's schema for the shared migration scheme.
const SCHEMA: Schema = Schema {
    store: "state",
    migrations: MIGRATIONS,
};

/// The SQLite [`StateStore`].
#[derive(Clone)]
pub struct SqliteStore {
    actor: Arc<Actor>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn db(e: rusqlite::Error) -> StateError {
    StateError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StateError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        crate::pm::embedded::create_private_file(path)
            .map_err(|e| StateError::Database(format!("cannot create {}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(db)?;
        Self::start(conn)
    }

    fn start(mut conn: Connection) -> Result<SqliteStore, StateError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        // WAL with NORMAL is durable across process crashes (only an OS crash can lose the
        // last transactions), which is what the journal needs.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        // SQLite's default page cache is 2 MiB: a store of a few thousand assignments no longer
        // fits, and every pass read its mailbox's rows from the file again (a tenth of `serve`'s
        // CPU at 100 edits/s was page reads). 16 MiB at most, taken only as pages are read, so
        // that `serve` stays far below 100 MB with 100,000 assignments.
        conn.pragma_update(None, "cache_size", -16 * 1024)
            .map_err(db)?;
        // Checkpoints in a burst of edits were 6 % of `serve`'s CPU: see the constant.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            crate::sqlite::WAL_AUTOCHECKPOINT_PAGES,
        )
        .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        migrate::migrate(&mut conn, &SCHEMA).map_err(|e| match e {
            migrate::MigrateError::Sqlite(e) => db(e),
            too_new => StateError::Database(too_new.to_string()),
        })?;
        let (actor, _opened) = Actor::spawn("taskbridge-state", move || {
            Ok::<_, StateError>((conn, Quiet))
        })
        .map_err(|e| StateError::Database(format!("cannot start the state thread: {e}")))?;
        Ok(SqliteStore {
            actor: Arc::new(actor),
        })
    }

    /// Every assignment row, ordered by key (for copying the store elsewhere).
    pub async fn all_assignments(&self) -> Result<Vec<AssignmentState>, StateError> {
        self.call(|c| query_assignments(c, "1 = 1 ORDER BY project, assignment", []))
            .await
    }

    /// Runs `f` on the database thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        self.actor.call(f).await.map_err(|_| StateError::Closed)?
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("state values serialize to JSON")
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

const ASSIGNMENT_COLUMNS: &str = "project, assignment, mailbox, item_id, change_key, baseline, \
     pm_hash, mail_hash, status, attempts, last_error, last_sync";

/// A stored baseline: the binary form, or JSON text in rows written before it.
fn read_baseline(what: &str, value: ValueRef<'_>) -> Result<Option<Baseline>, StateError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => codec::decode(bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                what: what.to_string(),
                detail: e.to_string(),
            }),
        ValueRef::Text(text) => from_json(what, &String::from_utf8_lossy(text)).map(Some),
        ValueRef::Integer(_) | ValueRef::Real(_) => Err(StateError::Corrupt {
            what: what.to_string(),
            detail: "baseline is a number".into(),
        }),
    }
}

/// [`SyncStatus::Synced`] as JSON: nearly every row's status, written and read without serde.
const SYNCED: &str = r#"{"state":"synced"}"#;

fn status_text(status: &SyncStatus) -> String {
    match status {
        SyncStatus::Synced => SYNCED.to_string(),
        other => to_json(other),
    }
}

fn read_status(what: &str, text: &str) -> Result<SyncStatus, StateError> {
    if text == SYNCED {
        return Ok(SyncStatus::Synced);
    }
    from_json(what, text)
}

fn read_assignment(row: &Row<'_>) -> Result<AssignmentState, StateError> {
    // Which row, for an error only: formatting it for every row read was a cost of its own.
    let named = |e: StateError| match e {
        StateError::Corrupt { what, detail } if what.is_empty() => StateError::Corrupt {
            what: format!(
                "{}:{}",
                row.get::<_, String>(0).unwrap_or_default(),
                row.get::<_, i64>(1).unwrap_or_default()
            ),
            detail,
        },
        e => e,
    };
    read_assignment_fields(row).map_err(named)
}

/// [`read_assignment`] with errors that do not name the row yet.
fn read_assignment_fields(row: &Row<'_>) -> Result<AssignmentState, StateError> {
    let what = "";
    let project = match row.get_ref(0).map_err(db)? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|t| t.parse().ok()),
        _ => None,
    }
    .ok_or_else(|| StateError::Corrupt {
        what: what.into(),
        detail: "project is not a GUID".into(),
    })?;
    let uid: i64 = row.get(1).map_err(db)?;
    let item_id: Option<String> = row.get(3).map_err(db)?;
    let change_key: Option<String> = row.get(4).map_err(db)?;
    let status = match row.get_ref(8).map_err(db)? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
    .ok_or_else(|| StateError::Corrupt {
        what: what.into(),
        detail: "status is not text".into(),
    })?;
    Ok(AssignmentState {
        key: AssignmentKey {
            project,
            assignment: AssignmentUid(uid),
        },
        mailbox: MailboxAddress(row.get(2).map_err(db)?),
        item: item_id.map(|item_id| ItemRef {
            item_id,
            change_key: change_key.unwrap_or_default(),
        }),
        baseline: read_baseline(what, row.get_ref(5).map_err(db)?)?,
        pm_hash: parse_hash(what, row.get(6).map_err(db)?)?,
        mail_hash: parse_hash(what, row.get(7).map_err(db)?)?,
        status: read_status(what, status)?,
        attempts: row.get::<_, i64>(9).map_err(db)? as u32,
        last_error: row.get(10).map_err(db)?,
        last_sync: parse_time(what, row.get(11).map_err(db)?)?,
    })
}

/// A mailbox's rows of one project. `+project` keeps SQLite from using the primary key
/// `(project, assignment)` for this query: without statistics the planner prefers it, since it
/// also gives the order, and then reads every row of the project to find the mailbox's few
/// (a publish of 10,000 assignments over 100 mailboxes read a million rows). The index by
/// mailbox and item finds its rows; sorting them is cheap.
const MAILBOX_PROJECT_ROWS: &str = "mailbox = ?1 AND +project = ?2 ORDER BY assignment";

fn query_assignments(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<AssignmentState>, StateError> {
    let sql = format!("SELECT {ASSIGNMENT_COLUMNS} FROM assignment WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(args).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(read_assignment(row)?);
    }
    Ok(out)
}

fn select_mailbox(c: &Connection, mailbox: &str) -> Result<Option<MailboxState>, StateError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailbox WHERE mailbox = ?1"
        ))
        .map_err(db)?;
    let row = stmt
        .query_row(params![mailbox], |r| Ok(read_mailbox(r)))
        .optional()
        .map_err(db)?;
    row.transpose()
}

fn write_mailbox(c: &Connection, state: &MailboxState) -> Result<(), StateError> {
    let Some(mailbox) = &state.mailbox else {
        return Err(StateError::Database(
            "mailbox state without a mailbox".into(),
        ));
    };
    c.prepare_cached(
        "INSERT INTO mailbox (mailbox, folder_id, subscription_id, watermark, \
         last_notification, sync_state, last_reconcile) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (mailbox) DO UPDATE SET folder_id = ?2, subscription_id = ?3, \
         watermark = ?4, last_notification = ?5, sync_state = ?6, last_reconcile = ?7",
    )
    .map_err(db)?
    .execute(params![
        mailbox.0,
        state.folder_id,
        state.subscription_id,
        state.watermark,
        state.last_notification.as_ref().map(time_text),
        state.sync_state,
        state.last_reconcile.as_ref().map(time_text),
    ])
    .map_err(db)?;
    Ok(())
}

fn read_mailbox(row: &Row<'_>) -> Result<MailboxState, StateError> {
    let mailbox: String = row.get(0).map_err(db)?;
    Ok(MailboxState {
        folder_id: row.get(1).map_err(db)?,
        subscription_id: row.get(2).map_err(db)?,
        watermark: row.get(3).map_err(db)?,
        last_notification: parse_time(&mailbox, row.get(4).map_err(db)?)?,
        sync_state: row.get(5).map_err(db)?,
        last_reconcile: parse_time(&mailbox, row.get(6).map_err(db)?)?,
        mailbox: Some(MailboxAddress(mailbox)),
    })
}

const MAILBOX_COLUMNS: &str =
    "mailbox, folder_id, subscription_id, watermark, last_notification, sync_state, last_reconcile";

/// Refuses a transaction made under a lease that has moved since ([`StateError::LeaseLost`]).
fn check_fences(tx: &Connection, fences: &[Fence]) -> Result<(), StateError> {
    for fence in fences {
        let row: Option<(Option<String>, i64)> = tx
            .prepare_cached("SELECT owner, generation FROM lease WHERE mailbox = ?1")
            .map_err(db)?
            .query_row(params![fence.mailbox.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)?;
        if row != Some((Some(fence.owner.as_str().to_string()), fence.generation)) {
            return Err(StateError::LeaseLost {
                mailbox: fence.mailbox.0.clone(),
            });
        }
    }
    Ok(())
}

/// The rows of a commit: assignments stored and removed, journal entries closed.
fn write_commit(tx: &Connection, commit: &Commit) -> Result<(), StateError> {
    if !commit.put.is_empty() {
        let mut put = tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO assignment ({ASSIGNMENT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .map_err(db)?;
        for s in &commit.put {
            put.execute(params![
                s.key.project.to_string(),
                s.key.assignment.0,
                s.mailbox.0,
                s.item.as_ref().map(|i| &i.item_id),
                s.item.as_ref().map(|i| &i.change_key),
                s.baseline.as_ref().map(codec::encode),
                s.pm_hash.map(|h| h.to_string()),
                s.mail_hash.map(|h| h.to_string()),
                status_text(&s.status),
                s.attempts as i64,
                s.last_error,
                s.last_sync.as_ref().map(time_text),
            ])
            .map_err(db)?;
        }
    }
    if !commit.delete.is_empty() {
        let mut delete = tx
            .prepare_cached(
                "DELETE FROM assignment WHERE project = ?1 AND assignment = ?2 AND mailbox = ?3",
            )
            .map_err(db)?;
        for (k, mailbox) in &commit.delete {
            delete
                .execute(params![k.project.to_string(), k.assignment.0, mailbox.0])
                .map_err(db)?;
        }
    }
    if !commit.close_journal.is_empty() {
        // A batch's entries were opened together, so their ids are mostly one run: a statement
        // per run rather than per id.
        let mut close = tx
            .prepare_cached("DELETE FROM journal WHERE id BETWEEN ?1 AND ?2")
            .map_err(db)?;
        for (first, last) in id_runs(&commit.close_journal) {
            close.execute(params![first, last]).map_err(db)?;
        }
    }
    // After the rows: the marks of what changed go, but the reservations of the publish that
    // writes them (see `StateStore::reserve_publish_mark`).
    let touched = commit.touched_scopes();
    if !touched.is_empty() {
        let mut unmark = tx
            .prepare_cached(
                "DELETE FROM publish_mark WHERE project = ?1 AND mailbox IN (?2, '') \
                 AND (revision IS NOT NULL OR token IS NOT ?3)",
            )
            .map_err(db)?;
        for (project, mailbox) in touched {
            unmark
                .execute(params![
                    project.to_string(),
                    mailbox.0,
                    commit.publish_token
                ])
                .map_err(db)?;
        }
    }
    Ok(())
}

/// Appends audit records.
fn insert_audit(tx: &Connection, records: &[AuditRecord]) -> Result<(), StateError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut ins = tx
        .prepare_cached(
            "INSERT INTO audit (at, project, assignment, mailbox, field, pm_value, \
             mail_value, rule, winner, note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(db)?;
    for r in records {
        ins.execute(params![
            time_text(&r.at),
            r.key.project.to_string(),
            r.key.assignment.0,
            r.mailbox.0,
            r.field.name(),
            r.pm_value,
            r.mail_value,
            to_json(&r.rule).trim_matches('"'),
            to_json(&r.winner).trim_matches('"'),
            r.note,
        ])
        .map_err(db)?;
    }
    Ok(())
}

/// `ids` as runs of consecutive ids, `(first, last)` each, in order: every id of a run is one
/// of `ids`, so deleting the runs deletes exactly them.
fn id_runs(ids: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs
}

/// Opens journal entries; their ids in order.
fn insert_journal(tx: &Connection, entries: &[JournalEntry]) -> Result<Vec<i64>, StateError> {
    let mut ids = Vec::with_capacity(entries.len());
    if entries.is_empty() {
        return Ok(ids);
    }
    let mut ins = tx
        .prepare_cached(
            "INSERT INTO journal (mailbox, project, assignment, kind, at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for e in entries {
        ins.execute(params![
            e.mailbox.0,
            e.key.project.to_string(),
            e.key.assignment.0,
            e.kind.as_str(),
            time_text(&e.at),
        ])
        .map_err(db)?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

impl StateStore for SqliteStore {
    async fn assignment(&self, key: &AssignmentKey) -> Result<Option<AssignmentState>, StateError> {
        let (p, a) = (key.project.to_string(), key.assignment.0);
        self.call(move |c| {
            Ok(query_assignments(c, "project = ?1 AND assignment = ?2", params![p, a])?.pop())
        })
        .await
    }

    async fn project_assignments(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        let p = project.to_string();
        self.call(move |c| query_assignments(c, "project = ?1 ORDER BY assignment", params![p]))
            .await
    }

    async fn assignment_mailboxes(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<(AssignmentUid, MailboxAddress)>, StateError> {
        let p = project.to_string();
        self.call(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT assignment, mailbox FROM assignment WHERE project = ?1")
                .map_err(db)?;
            let mut rows = stmt.query(params![p]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push((
                    AssignmentUid(row.get(0).map_err(db)?),
                    MailboxAddress(row.get(1).map_err(db)?),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn mailbox_assignments(
        &self,
        mailbox: &MailboxAddress,
        project: Option<ProjectGuid>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        let m = mailbox.0.clone();
        self.call(move |c| match project {
            None => query_assignments(c, "mailbox = ?1 ORDER BY project, assignment", params![m]),
            Some(p) => query_assignments(c, MAILBOX_PROJECT_ROWS, params![m, p.to_string()]),
        })
        .await
    }

    async fn pending_approvals(&self) -> Result<Vec<AssignmentState>, StateError> {
        // Filtered in SQL: reconciliation asks for these every interval, and parsing every
        // row's baseline to find the few pending ones would cost a full read each time.
        self.call(|c| {
            query_assignments(
                c,
                "json_extract(status, '$.state') = 'pending_approval' \
                 ORDER BY mailbox, project, assignment",
                [],
            )
        })
        .await
    }

    async fn mailbox_items(
        &self,
        mailbox: &MailboxAddress,
    ) -> Result<Vec<TrackedItem>, StateError> {
        let m = mailbox.0.clone();
        self.call(move |c| {
            // Only the zone, from the head of the binary form or by SQLite from a JSON one:
            // reading whole baselines for every row of the mailbox was most of an incremental
            // pass.
            let mut stmt = c
                .prepare_cached(
                    "SELECT item_id, project, assignment, CASE typeof(baseline) \
                     WHEN 'text' THEN json_extract(baseline, '$.values.zone') ELSE baseline END \
                     FROM assignment WHERE mailbox = ?1 AND item_id IS NOT NULL",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![m]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let project: &str = row
                    .get_ref(1)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(db)?;
                let uid: i64 = row.get(2).map_err(db)?;
                let zone = match row.get_ref(3).map_err(db)? {
                    ValueRef::Null => Ok(None),
                    ValueRef::Blob(bytes) => codec::decode_zone(bytes)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    ValueRef::Text(name) => String::from_utf8_lossy(name)
                        .parse::<chrono_tz::Tz>()
                        .map(Some)
                        .map_err(|e| format!("zone: {e}")),
                    _ => Err("zone: not text".to_string()),
                };
                // The row's name is formatted for an error only, as in `read_assignment`.
                let (project, zone) = project
                    .parse()
                    .map_err(|e| format!("{e}"))
                    .and_then(|project| Ok((project, zone?)))
                    .map_err(|detail| StateError::Corrupt {
                        what: format!("{project}:{uid}"),
                        detail,
                    })?;
                out.push(TrackedItem {
                    item_id: row.get(0).map_err(db)?,
                    key: AssignmentKey {
                        project,
                        assignment: AssignmentUid(uid),
                    },
                    zone,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn assignments_by_items(
        &self,
        mailbox: &MailboxAddress,
        item_ids: Vec<String>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        let m = mailbox.0.clone();
        self.call(move |c| {
            // One indexed look-up per id with the one cached statement, all in this call.
            let mut out = Vec::with_capacity(item_ids.len());
            for i in &item_ids {
                out.extend(query_assignments(
                    c,
                    "mailbox = ?1 AND item_id = ?2",
                    params![m, i],
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn transact(&self, transaction: Transaction) -> Result<Vec<i64>, StateError> {
        if transaction.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |c| {
            let Transaction {
                commit,
                audit,
                open_journal,
            } = transaction;
            // Immediate when fenced: the lease row read below cannot change before the commit.
            let behavior = if commit.fences.is_empty() {
                rusqlite::TransactionBehavior::Deferred
            } else {
                rusqlite::TransactionBehavior::Immediate
            };
            let tx = c.transaction_with_behavior(behavior).map_err(db)?;
            check_fences(&tx, &commit.fences)?;
            write_commit(&tx, &commit)?;
            insert_audit(&tx, &audit)?;
            let ids = insert_journal(&tx, &open_journal)?;
            tx.commit().map_err(db)?;
            Ok(ids)
        })
        .await
    }

    async fn open_journal(&self, entries: Vec<JournalEntry>) -> Result<Vec<i64>, StateError> {
        self.transact(Transaction {
            open_journal: entries,
            ..Transaction::default()
        })
        .await
    }

    async fn unfinished_journal(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.call(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, mailbox, project, assignment, kind, at FROM journal ORDER BY id",
                )
                .map_err(db)?;
            let mut rows = stmt.query([]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let id: i64 = row.get(0).map_err(db)?;
                let what = format!("journal {id}");
                let project: String = row.get(2).map_err(db)?;
                let kind: String = row.get(4).map_err(db)?;
                out.push(JournalEntry {
                    id,
                    mailbox: MailboxAddress(row.get(1).map_err(db)?),
                    key: AssignmentKey {
                        project: project.parse().map_err(|e| StateError::Corrupt {
                            what: what.clone(),
                            detail: format!("{e}"),
                        })?,
                        assignment: AssignmentUid(row.get(3).map_err(db)?),
                    },
                    kind: WriteKind::parse(&kind).ok_or_else(|| StateError::Corrupt {
                        what: what.clone(),
                        detail: format!("unknown write kind {kind}"),
                    })?,
                    at: parse_time(&what, row.get(5).map_err(db)?)?.unwrap_or_else(Utc::now),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mailbox(&self, mailbox: &MailboxAddress) -> Result<Option<MailboxState>, StateError> {
        let m = mailbox.0.clone();
        self.call(move |c| select_mailbox(c, &m)).await
    }

    async fn mailboxes(&self) -> Result<Vec<MailboxState>, StateError> {
        self.call(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailbox ORDER BY mailbox"
                ))
                .map_err(db)?;
            let mut rows = stmt.query([]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(read_mailbox(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_mailbox(
        &self,
        mailbox: &MailboxAddress,
        change: impl FnOnce(&mut MailboxState) + Send + 'static,
    ) -> Result<MailboxState, StateError> {
        let m = mailbox.clone();
        self.call(move |c| {
            // Immediate: another process sharing the file cannot slip a write in between.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let mut state = select_mailbox(&tx, &m.0)?.unwrap_or_default();
            state.mailbox = Some(m);
            change(&mut state);
            write_mailbox(&tx, &state)?;
            tx.commit().map_err(db)?;
            Ok(state)
        })
        .await
    }

    async fn note_heard(
        &self,
        heard: Vec<(MailboxAddress, Option<String>)>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        if heard.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO mailbox (mailbox, watermark, last_notification) \
                         VALUES (?1, ?2, ?3) ON CONFLICT (mailbox) DO UPDATE SET \
                         watermark = coalesce(excluded.watermark, watermark), \
                         last_notification = excluded.last_notification",
                    )
                    .map_err(db)?;
                let at = time_text(&at);
                for (mailbox, watermark) in &heard {
                    stmt.execute(params![mailbox.0, watermark, at])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StateError> {
        self.transact(Transaction {
            audit: records,
            ..Transaction::default()
        })
        .await
        .map(drop)
    }

    async fn audit(&self, project: Option<ProjectGuid>) -> Result<Vec<AuditRecord>, StateError> {
        let p = project.map(|p| p.to_string());
        self.call(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT at, project, assignment, mailbox, field, pm_value, mail_value, rule, \
                     winner, note FROM audit WHERE ?1 IS NULL OR project = ?1 ORDER BY id",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![p]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let project: String = row.get(1).map_err(db)?;
                let what = format!("audit {project}");
                let field: String = row.get(4).map_err(db)?;
                let rule: String = row.get(7).map_err(db)?;
                let winner: String = row.get(8).map_err(db)?;
                out.push(AuditRecord {
                    at: parse_time(&what, row.get(0).map_err(db)?)?.unwrap_or_else(Utc::now),
                    key: AssignmentKey {
                        project: project.parse().map_err(|e| StateError::Corrupt {
                            what: what.clone(),
                            detail: format!("{e}"),
                        })?,
                        assignment: AssignmentUid(row.get(2).map_err(db)?),
                    },
                    mailbox: MailboxAddress(row.get(3).map_err(db)?),
                    field: MailField::from_name(&field).ok_or_else(|| StateError::Corrupt {
                        what: what.clone(),
                        detail: format!("unknown field {field}"),
                    })?,
                    pm_value: row.get(5).map_err(db)?,
                    mail_value: row.get(6).map_err(db)?,
                    rule: from_json(&what, &format!("\"{rule}\""))?,
                    winner: from_json(&what, &format!("\"{winner}\""))?,
                    note: row.get(9).map_err(db)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn forget_project(&self, project: ProjectGuid) -> Result<u64, StateError> {
        let key = project.to_string();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let mut n = 0u64;
            for table in ["assignment", "journal", "audit"] {
                n += tx
                    .execute(&format!("DELETE FROM {table} WHERE project = ?1"), [&key])
                    .map_err(db)? as u64;
            }
            tx.execute("DELETE FROM publish_mark WHERE project = ?1", [&key])
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(n)
        })
        .await
    }

    async fn publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
    ) -> Result<Option<PublishMark>, StateError> {
        self.call(move |c| {
            c.prepare_cached(
                "SELECT revision, mapping, units FROM publish_mark \
                 WHERE project = ?1 AND mailbox = ?2 AND revision IS NOT NULL",
            )
            .map_err(db)?
            .query_row(params![project.to_string(), scope.key()], |r| {
                Ok(PublishMark {
                    revision: r.get(0)?,
                    mapping: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    units: r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64,
                })
            })
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn reserve_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
    ) -> Result<(), StateError> {
        // One statement, so it waits for any write under way (SQLite has one writer at a
        // time) and every write after it sees the reservation.
        self.call(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO publish_mark (project, mailbox, token) VALUES (?1, ?2, ?3)",
            )
            .map_err(db)?
            .execute(params![project.to_string(), scope.key(), token])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn confirm_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
        mark: PublishMark,
    ) -> Result<bool, StateError> {
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE publish_mark SET revision = ?4, mapping = ?5, units = ?6 \
                     WHERE project = ?1 AND mailbox = ?2 AND token = ?3 AND revision IS NULL",
                )
                .map_err(db)?
                .execute(params![
                    project.to_string(),
                    scope.key(),
                    token,
                    mark.revision,
                    mark.mapping,
                    i64::try_from(mark.units).unwrap_or(i64::MAX),
                ])
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn heartbeat(
        &self,
        instance: &InstanceId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<InstanceRow>, StateError> {
        let (id, now, until) = (instance.as_str().to_string(), millis(now), millis(until));
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            tx.execute(
                "INSERT INTO instance (id, expires) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET expires = ?2",
                params![id, until],
            )
            .map_err(db)?;
            let live = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, expires FROM instance WHERE expires > ?1 ORDER BY id",
                    )
                    .map_err(db)?;
                let rows = stmt
                    .query_map(params![now], |r| {
                        Ok(InstanceRow {
                            id: InstanceId::new(&r.get::<_, String>(0)?),
                            expires: from_millis(r.get(1)?),
                        })
                    })
                    .map_err(db)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db)?
            };
            tx.commit().map_err(db)?;
            Ok(live)
        })
        .await
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), StateError> {
        let id = instance.as_str().to_string();
        self.call(move |c| {
            c.execute("DELETE FROM instance WHERE id = ?1", params![id])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StateError> {
        self.call(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT mailbox, owner, expires, generation FROM lease ORDER BY mailbox",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Lease {
                        mailbox: MailboxAddress(r.get(0)?),
                        owner: r.get::<_, Option<String>>(1)?.map(|o| InstanceId::new(&o)),
                        expires: from_millis(r.get(2)?),
                        generation: r.get(3)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }

    async fn add_leases(&self, mailboxes: Vec<MailboxAddress>) -> Result<(), StateError> {
        if mailboxes.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            {
                let mut ins = tx
                    .prepare_cached("INSERT OR IGNORE INTO lease (mailbox) VALUES (?1)")
                    .map_err(db)?;
                for m in &mailboxes {
                    ins.execute(params![m.0]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn take_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>, StateError> {
        let (m, id) = (mailbox.0.clone(), instance.as_str().to_string());
        let (now, until) = (millis(now), millis(until));
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE lease SET owner = ?2, expires = ?5, generation = generation + 1 \
                     WHERE mailbox = ?1 AND generation = ?3 AND (owner IS NULL OR expires <= ?4)",
                )
                .map_err(db)?
                .execute(params![m, id, generation, now, until])
                .map_err(db)?;
            Ok((n == 1).then_some(generation + 1))
        })
        .await
    }

    async fn renew_leases(
        &self,
        instance: &InstanceId,
        leases: &[(MailboxAddress, i64)],
        until: DateTime<Utc>,
    ) -> Result<std::collections::BTreeSet<MailboxAddress>, StateError> {
        let (leases, id, until) = (
            leases.to_vec(),
            instance.as_str().to_string(),
            millis(until),
        );
        // One transaction: one fsync for the round, as PostgreSQL's one statement.
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let mut renewed = std::collections::BTreeSet::new();
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE lease SET expires = ?4 \
                         WHERE mailbox = ?1 AND owner = ?2 AND generation = ?3",
                    )
                    .map_err(db)?;
                for (mailbox, generation) in leases {
                    if update
                        .execute(params![mailbox.0, id, generation, until])
                        .map_err(db)?
                        == 1
                    {
                        renewed.insert(mailbox);
                    }
                }
            }
            tx.commit().map_err(db)?;
            Ok(renewed)
        })
        .await
    }

    async fn release_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
    ) -> Result<(), StateError> {
        let (m, id) = (mailbox.0.clone(), instance.as_str().to_string());
        self.call(move |c| {
            c.prepare_cached(
                "UPDATE lease SET owner = NULL, expires = 0 \
                 WHERE mailbox = ?1 AND owner = ?2 AND generation = ?3",
            )
            .map_err(db)?
            .execute(params![m, id, generation])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn enqueue_notice(&self, notice: QueuedNotice) -> Result<(), StateError> {
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO notice_queue (mailbox, subscription_id, watermark, item_ids) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(db)?
            .execute(params![
                notice.mailbox.0,
                notice.subscription_id,
                notice.watermark,
                to_json(&notice.item_ids),
            ])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn take_notices(
        &self,
        mailboxes: Vec<MailboxAddress>,
    ) -> Result<Vec<QueuedNotice>, StateError> {
        if mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let mut out = Vec::new();
            {
                let mut select = tx
                    .prepare_cached(
                        "SELECT id, subscription_id, watermark, item_ids FROM notice_queue \
                         WHERE mailbox = ?1 ORDER BY id",
                    )
                    .map_err(db)?;
                let mut delete = tx
                    .prepare_cached("DELETE FROM notice_queue WHERE mailbox = ?1 AND id <= ?2")
                    .map_err(db)?;
                for m in &mailboxes {
                    let rows = select
                        .query_map(params![m.0], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, Option<String>>(2)?,
                                r.get::<_, String>(3)?,
                            ))
                        })
                        .map_err(db)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db)?;
                    let Some(last) = rows.last().map(|r| r.0) else {
                        continue;
                    };
                    for (id, subscription_id, watermark, items) in rows {
                        out.push(QueuedNotice {
                            mailbox: m.clone(),
                            subscription_id,
                            watermark,
                            item_ids: from_json(&format!("notice {id}"), &items)?,
                        });
                    }
                    delete.execute(params![m.0, last]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_ids_close_as_runs_of_exactly_those_ids() {
        assert_eq!(id_runs(&[]), []);
        assert_eq!(id_runs(&[7]), [(7, 7)]);
        assert_eq!(id_runs(&[3, 4, 5, 6]), [(3, 6)]);
        // Unordered, repeated and with gaps: no id outside the list falls in a run.
        assert_eq!(
            id_runs(&[12, 10, 11, 11, 20, 14, 15, 2]),
            [(2, 2), (10, 12), (14, 15), (20, 20)]
        );
    }

    #[cfg(unix)]
    #[test]
    fn state_file_is_created_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        drop(store);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// The plan SQLite chooses for `filter` with `args` on the assignment table of a new state
    /// file.
    fn query_plan(filter: &str, args: &[&str]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.sqlite");
        drop(SqliteStore::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("open");
        let sql = format!("SELECT {ASSIGNMENT_COLUMNS} FROM assignment WHERE {filter}");
        crate::sqlite::query_plan(&conn, &sql, rusqlite::params_from_iter(args))
    }

    // A publish reads each mailbox's rows of the project: read by the project's key, every
    // mailbox cost a read of the whole project.
    #[test]
    fn a_mailboxs_rows_of_a_project_are_found_by_the_mailbox_index() {
        let plan = query_plan(MAILBOX_PROJECT_ROWS, &["m@example.com", "p"]);
        assert!(plan.contains("(mailbox=?)"), "{plan}");
        assert!(!plan.contains("project=?"), "{plan}");
    }

    // Each row written pays for every index of the table: a mailbox's rows are found by the
    // prefix of `assignment_item`, so there is no index on `mailbox` alone to pay for.
    #[test]
    fn a_mailboxs_rows_are_found_by_the_item_index() {
        for (filter, args) in [
            (
                "mailbox = ?1 ORDER BY project, assignment",
                &["m@example.com"][..],
            ),
            (MAILBOX_PROJECT_ROWS, &["m@example.com", "p"]),
            ("mailbox = ?1 AND item_id = ?2", &["m@example.com", "AAMk1"]),
        ] {
            let plan = query_plan(filter, args);
            assert!(
                plan.contains("USING INDEX assignment_item (mailbox=?"),
                "{plan}"
            );
        }
    }

    /// A synced row as a publish leaves it, with a baseline that has change times.
    fn synced_row(uid: i64, zone: chrono_tz::Tz) -> AssignmentState {
        let mut values = MailValues::empty(zone);
        values.subject = Some(format!("Task {uid} \u{e9}"));
        values.total_work = Some(450);
        values.percent_complete = crate::pm::Percent::new(40).ok();
        values.categories = vec!["Plan".into()];
        let mut s = AssignmentState::new(
            AssignmentKey {
                project: ProjectGuid(uuid::Uuid::from_u128(9)),
                assignment: AssignmentUid(uid),
            },
            MailboxAddress::new("m@example.com"),
        );
        s.item = Some(ItemRef {
            item_id: format!("AAMk{uid}"),
            change_key: "CK1".into(),
        });
        s.pm_hash = Some(values.hash());
        s.mail_hash = s.pm_hash;
        let mut baseline = Baseline::new(values);
        let at = chrono::DateTime::from_timestamp(1_780_000_000, 123_456_789).expect("valid");
        baseline.pm_changed.insert(MailField::PercentComplete, at);
        baseline.mail_changed.insert(MailField::TotalWork, at);
        s.baseline = Some(baseline);
        s.last_sync = Some(at);
        s
    }

    /// Stores `row` as a publish or a pass would.
    async fn put(store: &SqliteStore, row: AssignmentState) {
        store
            .commit(Commit {
                put: vec![row],
                ..Commit::default()
            })
            .await
            .expect("commit");
    }

    // Rows written before the binary baseline hold JSON text: they must read as they were
    // after the file moves to schema step 4, list with their zone, and take the binary form
    // when next written.
    #[tokio::test]
    async fn baselines_stored_as_json_are_read_and_rewritten_in_the_binary_form() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.sqlite");
        let old = synced_row(1, chrono_tz::Tz::Europe__Berlin);
        let new = synced_row(2, chrono_tz::Tz::America__New_York);
        {
            // A file as the release before step 4 left it: row 1's baseline is JSON text.
            let conn = Connection::open(&path).expect("open");
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.pragma_update(None, "user_version", 3)
                .expect("version");
            // Today's `write_commit` also ends publish marks (step 5), which this file has no
            // table for: a table of this connection only stands in for it.
            conn.execute_batch(
                "CREATE TEMP TABLE publish_mark (project TEXT, mailbox TEXT, token INTEGER, revision TEXT)",
            )
            .expect("temp table");
            write_commit(
                &conn,
                &Commit {
                    put: vec![old.clone(), new.clone()],
                    ..Commit::default()
                },
            )
            .expect("rows");
            let json =
                serde_json::to_string(old.baseline.as_ref().expect("baseline")).expect("json");
            conn.execute(
                "UPDATE assignment SET baseline = ?1 WHERE assignment = 1",
                params![json],
            )
            .expect("update");
        }
        let store = SqliteStore::open(&path).expect("open migrates");
        let typeof_baseline = |uid: i64| -> String {
            let conn = Connection::open(&path).expect("open");
            conn.query_row(
                "SELECT typeof(baseline) FROM assignment WHERE assignment = ?1",
                params![uid],
                |r| r.get(0),
            )
            .expect("row")
        };
        let version: i64 = Connection::open(&path)
            .expect("open")
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(typeof_baseline(2), "blob");
        assert_eq!(typeof_baseline(1), "text");
        assert_eq!(
            store.assignment(&old.key).await.expect("read"),
            Some(old.clone())
        );
        assert_eq!(
            store.assignment(&new.key).await.expect("read"),
            Some(new.clone())
        );
        let mut zones: Vec<_> = store
            .mailbox_items(&old.mailbox)
            .await
            .expect("items")
            .into_iter()
            .map(|i| (i.key.assignment.0, i.zone))
            .collect();
        zones.sort_by_key(|(uid, _)| *uid);
        assert_eq!(
            zones,
            vec![
                (1, Some(chrono_tz::Tz::Europe__Berlin)),
                (2, Some(chrono_tz::Tz::America__New_York)),
            ]
        );
        put(&store, old.clone()).await;
        assert_eq!(typeof_baseline(1), "blob");
        assert_eq!(store.assignment(&old.key).await.expect("read"), Some(old));
    }

    #[tokio::test]
    async fn a_damaged_binary_baseline_is_a_corrupt_row_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        let row = synced_row(1, chrono_tz::Tz::UTC);
        put(&store, row.clone()).await;
        let conn = Connection::open(&path).expect("open");
        conn.execute(
            "UPDATE assignment SET baseline = substr(baseline, 1, 12) WHERE assignment = 1",
            [],
        )
        .expect("cut");
        match store.assignment(&row.key).await {
            Err(StateError::Corrupt { what, detail }) => {
                assert!(what.ends_with(":1"), "{what}");
                assert!(detail.contains("cut short"), "{detail}");
            }
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }

    #[test]
    fn the_synced_status_text_is_what_serde_writes() {
        assert_eq!(to_json(&SyncStatus::Synced), SYNCED);
        assert_eq!(status_text(&SyncStatus::Synced), SYNCED);
        assert_eq!(read_status("x", SYNCED).ok(), Some(SyncStatus::Synced));
        let parked = SyncStatus::Parked {
            reason: "boom".into(),
        };
        assert_eq!(read_status("x", &status_text(&parked)).ok(), Some(parked));
    }

    #[tokio::test]
    async fn opening_an_older_state_file_copies_it_before_migrating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.sqlite");
        let older = MIGRATIONS.len() - 1;
        {
            // A file as the previous release left it.
            let conn = Connection::open(&path).expect("open");
            for sql in &MIGRATIONS[..older] {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.pragma_update(None, "user_version", older as i64)
                .expect("version");
        }
        let store = SqliteStore::open(&path).expect("open migrates");
        drop(store);
        let backups: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".bak"))
            .collect();
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert!(
            backups[0]
                .to_string_lossy()
                .contains(&format!("state.sqlite.schema-v{older}.")),
            "{backups:?}"
        );
        let copy = Connection::open(&backups[0]).expect("open the copy");
        let version: i64 = copy
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, older as i64);
        let now = Connection::open(&path).expect("open");
        let version: i64 = now
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        // Opening at the latest version copies nothing.
        drop(SqliteStore::open(&path).expect("reopen"));
        let count = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .path()
                    .to_string_lossy()
                    .ends_with(".bak")
            })
            .count();
        assert_eq!(count, 1);
    }
}
