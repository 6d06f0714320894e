//! What the PostgreSQL stores (the state and the embedded PM store) share: one migration
//! scheme, the counterpart of [`crate::sqlite::migrate`] for a database server.
//!
//! Every taskbridge store in a database records its version in one table,
//! `taskbridge_schema` (a row per store). Migration *n* takes a store from version *n - 1* to
//! *n*; never edit a released one, add the next. A store is brought to its latest version in
//! one transaction that holds an advisory lock for its whole length, so that instances starting
//! together (and the two stores of one database) never migrate at once, and a migration that
//! fails leaves the store as it was. A database whose store is newer than this binary is
//! refused.

/// The advisory lock held while a store migrates ("taskbrid" in ASCII): one key for every
/// taskbridge store in the database, so that migrations never interleave.
const MIGRATION_LOCK: i64 = 0x7461_736b_6272_6964;

/// Where the versions of every store in a database are kept.
const VERSIONS: &str = "CREATE TABLE IF NOT EXISTS taskbridge_schema (
    store   TEXT PRIMARY KEY,
    version BIGINT NOT NULL
)";

/// A store's migrations, version 1 first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schema<'a> {
    /// The store's row in `taskbridge_schema` (`state`, `pm`).
    pub(crate) store: &'static str,
    /// Names the store in messages and logs (`state`, `PM store`).
    pub(crate) shown: &'static str,
    /// The migrations in order, as PostgreSQL statements.
    pub(crate) migrations: &'a [&'a str],
}

impl Schema<'_> {
    /// The version the migrations lead to.
    fn latest(&self) -> i64 {
        i64::try_from(self.migrations.len()).unwrap_or(i64::MAX)
    }
}

/// Why a store could not be brought to its latest version.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// The store was written by a newer taskbridge.
    #[error(
        "the {store} database has schema version {found}, newer than this taskbridge knows ({supported}); upgrade taskbridge"
    )]
    TooNew {
        /// [`Schema::shown`].
        store: &'static str,
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The database holds no such store, and the caller did not ask for one to be created.
    #[error("the database holds no {store}")]
    Missing {
        /// [`Schema::shown`].
        store: &'static str,
    },
    /// A migration failed; nothing of the migration was kept.
    #[error("{store} migration {step}: {source}")]
    Step {
        /// [`Schema::shown`].
        store: &'static str,
        /// The migration's number (its version).
        step: usize,
        /// What the server said.
        source: tokio_postgres::Error,
    },
    /// The server failed otherwise.
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// Brings the store of `schema` to its latest version in one transaction under the migration
/// lock; returns the version it was at (0 for a store created now). Without `create`, a
/// database without the store is [`MigrateError::Missing`].
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::ClientWrapper,
    schema: &Schema<'_>,
    create: bool,
) -> Result<i64, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(VERSIONS).await?;
    let current: i64 = tx
        .query_opt(
            "SELECT version FROM taskbridge_schema WHERE store = $1",
            &[&schema.store],
        )
        .await?
        .map(|row| row.get(0))
        .unwrap_or(0);
    let latest = schema.latest();
    if current > latest {
        return Err(MigrateError::TooNew {
            store: schema.shown,
            found: current,
            supported: latest,
        });
    }
    if current == 0 && !create {
        return Err(MigrateError::Missing {
            store: schema.shown,
        });
    }
    if current == latest {
        tx.rollback().await?;
        return Ok(current);
    }
    for (i, sql) in schema
        .migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql)
            .await
            .map_err(|source| MigrateError::Step {
                store: schema.shown,
                step: i + 1,
                source,
            })?;
    }
    tx.execute(
        "INSERT INTO taskbridge_schema (store, version) VALUES ($1, $2)
         ON CONFLICT (store) DO UPDATE SET version = excluded.version",
        &[&schema.store, &latest],
    )
    .await?;
    tx.commit().await?;
    if current > 0 {
        tracing::info!(
            store = schema.shown,
            from = current,
            to = latest,
            "database migrated"
        );
    }
    Ok(current)
}
