//! The embedded host's SQLite connection: one connection, owned by the shared actor thread
//! ([`crate::sqlite::actor`]), fed closures over a channel, so that no SQLite call ever runs on
//! a tokio worker; migrated by the shared scheme ([`crate::sqlite::migrate`]).
//!
//! The same thread relays the durable event log (`events` table) to the in-process broadcast
//! channel: after every job, and every `poll_interval` when idle, it reads the events committed
//! since its cursor and broadcasts them. Events written by *another process* on the same file
//! (a `taskbridge updates approve` next to a running `taskbridge serve`) therefore reach this
//! process's subscribers too, at most one poll interval late. It also wakes the webhook worker
//! when the outbox grew.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, broadcast};

use super::EmbeddedError;
use super::rows::ts;
use super::schema::SCHEMA;
use super::sql::{Conn, args, one};
use crate::pm::HostEvent;
use crate::sqlite::actor::{Actor, Housekeeping};
use crate::sqlite::migrate::MigrateError;

/// How long SQLite waits for another process's write lock before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Events older than this are pruned: they only exist to reach other processes' subscribers.
const EVENT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Outbox rows older than this are pruned, delivered or not (see `docs/PM-HOST.md`).
pub(crate) const OUTBOX_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// How often the idle thread prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The handle to the store's thread: SQLite's ([`crate::sqlite::actor`]) or PostgreSQL's
/// ([`super::postgres`]). Dropping the last handle ends the thread.
pub(crate) enum Db {
    /// An SQLite file.
    Sqlite(Actor),
    /// A PostgreSQL database.
    Postgres(super::postgres::PgDb),
}

/// What the SQLite thread relays to the async side.
pub(crate) struct Relay {
    /// Where host events go.
    pub(crate) events: broadcast::Sender<HostEvent>,
    /// Woken when the webhook outbox has new rows.
    pub(crate) outbox: Arc<Notify>,
}

impl Db {
    /// Opens (or, with `create`, creates) the database file, migrates it, and starts the thread.
    pub(crate) async fn open(
        path: PathBuf,
        create: bool,
        relay: Relay,
        poll_interval: Duration,
    ) -> Result<Db, EmbeddedError> {
        let (actor, ready) = Actor::spawn("taskbridge-pm-sqlite", move || {
            let conn = open_connection(&path, create)?;
            let cursors = Cursors::at_end(&conn as &dyn Conn);
            Ok::<_, EmbeddedError>((
                conn,
                Relaying {
                    relay,
                    cursors,
                    poll_interval,
                },
            ))
        })
        .map_err(EmbeddedError::Io)?;
        ready.await.map_err(|_| EmbeddedError::Closed)??;
        Ok(Db::Sqlite(actor))
    }

    /// Ends the thread and waits until it has closed the connection (which checkpoints the
    /// WAL into the main file).
    pub(crate) async fn close(self) {
        match self {
            Db::Sqlite(actor) => actor.close().await,
            Db::Postgres(db) => db.close().await,
        }
    }

    /// Runs `f` on the SQLite thread and returns its result.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, EmbeddedError>
    where
        F: FnOnce(&dyn Conn) -> Result<R, EmbeddedError> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            // `Closed` also when the job panicked (a bug, caught on the thread).
            Db::Sqlite(actor) => actor
                .call(move |conn| f(conn))
                .await
                .map_err(|_| EmbeddedError::Closed)?,
            Db::Postgres(db) => db.call(f).await,
        }
    }
}

/// The thread's housekeeping: the relay after every job and at every idle poll, pruning every
/// hour. No pruning at open: opening a store must not write to it (a failed import leaves the
/// file byte-identical), and a short-lived CLI process has no reason to prune.
pub(crate) struct Relaying {
    pub(crate) relay: Relay,
    pub(crate) cursors: Cursors,
    pub(crate) poll_interval: Duration,
}

impl Relaying {
    /// After each job.
    pub(crate) fn after_job(&mut self, conn: &dyn Conn) {
        pump(conn, &self.relay, &mut self.cursors);
    }

    /// At each idle poll.
    pub(crate) fn when_idle(&mut self, conn: &dyn Conn) {
        pump(conn, &self.relay, &mut self.cursors);
        if self.cursors.last_prune.elapsed() >= PRUNE_EVERY {
            prune(conn);
            self.cursors.last_prune = Instant::now();
        }
    }
}

impl Housekeeping for Relaying {
    fn after_job(&mut self, conn: &Connection) {
        Relaying::after_job(self, conn);
    }

    fn when_idle(&mut self, conn: &Connection) {
        Relaying::when_idle(self, conn);
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.poll_interval)
    }
}

/// Where the relay has got to in the events and the outbox.
pub(crate) struct Cursors {
    event: i64,
    outbox: i64,
    last_prune: Instant,
}

impl Cursors {
    /// Starts after everything already committed: events from before this process opened the
    /// store are history, not news.
    pub(crate) fn at_end(conn: &dyn Conn) -> Cursors {
        let max = |sql| one::<i64>(conn, sql, &[]).unwrap_or(0);
        Cursors {
            event: max("SELECT COALESCE(MAX(seq), 0) FROM events"),
            // The outbox is durable work, not news: a worker started now must see old rows, so
            // the first pump wakes it.
            outbox: -1,
            last_prune: Instant::now(),
        }
    }
}

/// Broadcasts the events committed since the cursor and wakes the webhook worker on new outbox
/// rows.
fn pump(conn: &dyn Conn, relay: &Relay, cursors: &mut Cursors) {
    let result = (|| -> Result<(), EmbeddedError> {
        let rows = conn.query(
            "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq",
            args![cursors.event],
        )?;
        for row in rows {
            let (seq, body) = (row.get::<i64>(0)?, row.get::<String>(1)?);
            cursors.event = seq;
            match serde_json::from_str::<HostEvent>(&body) {
                // No receiver is not an error: nobody listens in a CLI process.
                Ok(event) => {
                    let _ = relay.events.send(event);
                }
                Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable stored event"),
            }
        }
        let outbox: i64 = one(
            conn,
            "SELECT COALESCE(MAX(seq), 0) FROM webhook_outbox",
            &[],
        )?;
        if outbox > cursors.outbox {
            cursors.outbox = outbox;
            relay.outbox.notify_one();
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot read the PM event log; retrying at the next poll");
    }
}

fn prune(conn: &dyn Conn) {
    let now = Utc::now();
    let result = conn
        .execute(
            "DELETE FROM events WHERE created_at < ?1",
            args![ts(now - EVENT_RETENTION)],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM webhook_outbox WHERE created_at < ?1",
                args![ts(now - OUTBOX_RETENTION)],
            )
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot prune the PM event log");
    }
}

/// Creates `path` empty, readable and writable by its owner only (0600 on Unix), unless it
/// exists. SQLite then opens it as a new database and gives its `-wal` and `-shm` files the same
/// mode: the stores hold names, e-mail addresses and notes, not for other local users.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens the file with the connection settings every connection needs, and migrates it.
fn open_connection(path: &Path, create: bool) -> Result<Connection, EmbeddedError> {
    if !create && !path.exists() {
        return Err(EmbeddedError::NoStore(path.to_owned()));
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        create_private_file(path).map_err(EmbeddedError::Io)?;
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers (another CLI process) proceed while this one writes. Setting it again on
    // a WAL file writes nothing, which keeps a failed import from touching the file.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "SQLite refused WAL mode; continuing with its journal mode");
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Brings the file to the latest schema ([`crate::sqlite::migrate`]).
///
/// A file at the latest version is only read, never written.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), EmbeddedError> {
    crate::sqlite::migrate::migrate(conn, &SCHEMA).map_err(|e| match e {
        MigrateError::TooNew {
            found, supported, ..
        } => EmbeddedError::SchemaTooNew { found, supported },
        MigrateError::Sqlite(e) => EmbeddedError::Sqlite(e),
    })
}

#[cfg(test)]
mod tests {
    use super::super::schema::MIGRATIONS;
    use super::*;
    use crate::sqlite::migrate::version as schema_version;

    #[test]
    fn migrate_new_file_reaches_latest_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        migrate(&mut conn).expect("migrates");
        let latest = i64::try_from(MIGRATIONS.len()).expect("small");
        assert_eq!(schema_version(&conn).expect("readable"), latest);
        migrate(&mut conn).expect("second run is a no-op");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .expect("readable");
        assert_eq!(rows, latest);
    }

    #[test]
    fn migrate_copies_an_existing_file_before_changing_its_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pm.sqlite");
        let backups = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.to_string_lossy().ends_with(".bak"))
                .collect()
        };
        let older = i64::try_from(MIGRATIONS.len() - 1).expect("small");
        {
            // A file as the previous release left it.
            let mut conn = Connection::open(&path).expect("open");
            conn.execute_batch("PRAGMA journal_mode = WAL")
                .expect("wal");
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)",
            )
            .expect("schema_version");
            for (i, sql) in MIGRATIONS[..MIGRATIONS.len() - 1].iter().enumerate() {
                tx.execute_batch(sql).expect("old migration");
                tx.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?1, 'then')",
                    [i64::try_from(i + 1).expect("small")],
                )
                .expect("version row");
            }
            tx.commit().expect("commit");
        }
        let mut conn = Connection::open(&path).expect("reopen");
        migrate(&mut conn).expect("migrates");
        assert_eq!(
            schema_version(&conn).expect("version"),
            older + 1,
            "the file reached the latest version"
        );
        let found = backups();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .to_string_lossy()
                .contains(&format!("pm.sqlite.schema-v{older}.")),
            "{found:?}"
        );
        let copy = Connection::open(&found[0]).expect("open the copy");
        assert_eq!(schema_version(&copy).expect("version"), older);
        // At the latest version nothing is copied again, and a new file is never copied.
        migrate(&mut conn).expect("no-op");
        let mut fresh = Connection::open(dir.path().join("new.sqlite")).expect("new");
        migrate(&mut fresh).expect("migrates");
        assert_eq!(backups().len(), 1);
    }

    #[test]
    fn migrate_newer_file_is_refused() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        migrate(&mut conn).expect("migrates");
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (999, 'x')",
            [],
        )
        .expect("insert");
        assert!(matches!(
            migrate(&mut conn),
            Err(EmbeddedError::SchemaTooNew { found: 999, .. })
        ));
    }
}
