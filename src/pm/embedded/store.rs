//! The embedded host's SQLite connection: one connection, owned by the shared actor thread
//! ([`crate::sqlite::actor`]), fed closures over a channel, so that no SQLite call ever runs on
//! a tokio worker; migrated by the shared scheme ([`crate::sqlite::migrate`]).
//! The same thread relays the durable event log to subscribers (`relay`). `Db` is the handle
//! to either backend's thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::EmbeddedError;
use super::relay::{Cursors, Relay, Relaying};
use super::schema::SCHEMA;
use super::sql::Conn;
use crate::sqlite::actor::{Actor, Housekeeping};
use crate::sqlite::migrate::MigrateError;

/// How long SQLite waits for another process's write lock before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle to the store's thread: SQLite's ([`crate::sqlite::actor`]) or PostgreSQL's
/// ([`super::postgres`]). Dropping the last handle ends the thread.
pub(crate) enum Db {
    /// An SQLite file.
    Sqlite(Actor),
    /// A PostgreSQL database.
    Postgres(super::postgres::PgDb),
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
    // rusqlite keeps 16 prepared statements by default; reading a plan part by key lists uses
    // up to 30 (`rows::by_keys`), and a statement prepared again costs more than it reads.
    conn.set_prepared_statement_cache_capacity(64);
    // WAL lets readers (another CLI process) proceed while this one writes. Setting it again on
    // a WAL file writes nothing, which keeps a failed import from touching the file.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "SQLite refused WAL mode; continuing with its journal mode");
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // As the state store's (`state::sqlite`): the default 2 MiB page cache is smaller than a
    // plan of a few thousand assignments.
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    // Fewer, larger checkpoints write a page changed often once (see the constant).
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        crate::sqlite::WAL_AUTOCHECKPOINT_PAGES,
    )?;
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

    /// Version 5 counts the rejections already in the store as announced, so that an upgrade
    /// does not send a notice for every old rejection at once; later ones are not counted.
    #[test]
    fn migration_5_counts_earlier_rejections_as_announced() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        let tx = conn.transaction().expect("tx");
        tx.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)",
        )
        .expect("schema_version");
        for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
            tx.execute_batch(sql).expect("old migration");
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, 'then')",
                [i64::try_from(i + 1).expect("small")],
            )
            .expect("version row");
        }
        tx.execute_batch(
            "INSERT INTO projects (guid, name, time_zone, minutes_per_day, minutes_per_week,
                 policy, revision, imported_at, published_at)
             VALUES ('p', 'P', 'UTC', 480, 2400, 'approval', 1, 't', 't');
             INSERT INTO status_updates (id, project, assignment_uid, changes, mailbox, item_id,
                 change_key, mail_modified_at, state, submitted_at, decided_at)
             VALUES ('old-rejected', 'p', 1, '[]', 'ann@example.com', 'i1', 'k1', 't',
                     'rejected', '2026-01-01T00:00:00.000000Z', '2026-01-02T00:00:00.000000Z'),
                    ('old-applied', 'p', 1, '[]', 'ann@example.com', 'i1', 'k2', 't',
                     'applied', '2026-01-01T00:00:00.000000Z', '2026-01-02T00:00:00.000000Z'),
                    ('old-pending', 'p', 1, '[]', 'ann@example.com', 'i1', 'k3', 't',
                     'pending', '2026-01-01T00:00:00.000000Z', NULL);",
        )
        .expect("rows of the old version");
        tx.commit().expect("commit");
        migrate(&mut conn).expect("migrates");
        let announced: Vec<(String, String)> = conn
            .prepare("SELECT update_id, queued_at FROM rejection_notices")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            announced,
            vec![(
                "old-rejected".to_owned(),
                "2026-01-02T00:00:00.000000Z".to_owned()
            )]
        );
        let owed: i64 = conn
            .query_row("SELECT COUNT(*) FROM notice_outbox", [], |r| r.get(0))
            .expect("count");
        assert_eq!(owed, 0);
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
