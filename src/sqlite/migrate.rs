//! One migration scheme for every SQLite file: numbered, forward-only migrations, each applied
//! once in a transaction of its own that records it. Migration *n* takes the file from version
//! *n - 1* to *n*; never edit a released one, add the next.
//!
//! The version is recorded twice in the same transaction: a row per migration in the
//! `schema_version` table (with when it ran) and `PRAGMA user_version` (what the `sqlite3` shell
//! shows). A file's version is the larger of the two, so files written before the stores shared
//! this scheme open as they are: the PM store recorded only the table, the state store only the
//! pragma, with the same numbers.
//!
//! An existing file is copied before its schema changes ([`super::backup`]); a file at the
//! latest version is only read, never written. Each transaction takes the write lock first
//! and reads the version again, so two processes opening an old file migrate it once.

use chrono::{SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// A store's migrations, version 1 first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schema {
    /// Names the store in messages and logs (`state`, `PM store`).
    pub(crate) store: &'static str,
    /// The migrations in order.
    pub(crate) migrations: &'static [&'static str],
}

impl Schema {
    /// The version the migrations lead to.
    pub(crate) fn latest(&self) -> i64 {
        i64::try_from(self.migrations.len()).unwrap_or(i64::MAX)
    }
}

/// Why a file could not be brought to the latest version.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// The file was written by a newer taskbridge.
    #[error(
        "the {store} database has schema version {found}, newer than this taskbridge knows ({supported})"
    )]
    TooNew {
        /// The store.
        store: &'static str,
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// SQLite failed (the migration that failed was rolled back).
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// The version of the file: the larger of `user_version` and the `schema_version` table's; 0
/// for a new file.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    let pragma: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .optional()?;
    let recorded = match table {
        Some(_) => conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )?,
        None => 0,
    };
    Ok(pragma.max(recorded))
}

/// Applies the migrations the file lacks, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection, schema: &Schema) -> Result<(), MigrateError> {
    let latest = schema.latest();
    let found = version(conn)?;
    if found == latest {
        return Ok(());
    }
    if found > latest {
        return Err(MigrateError::TooNew {
            store: schema.store,
            found,
            supported: latest,
        });
    }
    // An existing file is copied first; a new one (version 0) has nothing to keep.
    super::backup::before_migration(conn, found)?;
    for (index, sql) in schema.migrations.iter().enumerate() {
        let next = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read again under the write lock: another process may have migrated meanwhile.
        if version(&tx)? >= next {
            continue;
        }
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version INTEGER PRIMARY KEY NOT NULL,
                 applied_at TEXT NOT NULL
             )",
        )?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![
                next,
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
            ],
        )?;
        tx.pragma_update(None, "user_version", next)?;
        tx.commit()?;
        // Upgrading an existing file is worth an operator's attention; creating a new one is not
        // (it would be noise on every first command in a fresh data directory).
        if found > 0 {
            tracing::info!(store = schema.store, version = next, "database migrated");
        } else {
            tracing::debug!(store = schema.store, version = next, "database created");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        store: "test",
        migrations: &[
            "CREATE TABLE a (x INTEGER);",
            "ALTER TABLE a ADD COLUMN y TEXT;",
        ],
    };

    #[test]
    fn a_new_file_reaches_the_latest_version_once_recorded_both_ways() {
        let mut conn = Connection::open_in_memory().expect("db");
        migrate(&mut conn, &SCHEMA).expect("migrates");
        migrate(&mut conn, &SCHEMA).expect("a second run does nothing");
        assert_eq!(version(&conn).expect("version"), 2);
        let pragma: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("pragma");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .expect("rows");
        assert_eq!((pragma, rows), (2, 2));
    }

    #[test]
    fn a_file_versioned_by_the_pragma_alone_continues_from_it() {
        let mut conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(SCHEMA.migrations[0]).expect("v1");
        conn.pragma_update(None, "user_version", 1).expect("pragma");
        migrate(&mut conn, &SCHEMA).expect("migrates from 1");
        assert_eq!(version(&conn).expect("version"), 2);
        conn.execute("INSERT INTO a (x, y) VALUES (1, 'y')", [])
            .expect("migration 2 ran, migration 1 did not run again");
    }

    #[test]
    fn a_newer_file_is_refused() {
        let mut conn = Connection::open_in_memory().expect("db");
        conn.pragma_update(None, "user_version", 9).expect("pragma");
        assert!(matches!(
            migrate(&mut conn, &SCHEMA),
            Err(MigrateError::TooNew {
                found: 9,
                supported: 2,
                ..
            })
        ));
    }
}
