//! The PostgreSQL state store: the same rows and transactions as the SQLite store, on a
//! database that several connector instances can share.
//!
//! The driver is `tokio-postgres` (native async, the maintained PostgreSQL client of the tokio
//! ecosystem) behind a `deadpool-postgres` pool, so no call blocks the runtime and a dropped
//! connection is replaced on the next checkout. TLS is rustls with the system's trust store,
//! chosen by the URL's `sslmode` (`disable`, `prefer`, `require`).
//!
//! Every method is one transaction, as in SQLite. The read-modify-write of a mailbox's state
//! locks its row (`SELECT ... FOR UPDATE`), so two instances changing different columns never
//! put back each other's older values. Times are kept as RFC 3339 text, exactly as written,
//! because the engine compares stored rows with rows it holds (a `timestamptz` would round to
//! microseconds); baselines and statuses are `jsonb`, which the pending-approval query reads.

use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::lease::{from_millis, millis};
use super::*;

/// Migrations in order, version 1 first: the same steps as the SQLite store's, in
/// PostgreSQL's dialect, so that one version number means one schema on either backend (a test
/// in `state` keeps the two lists the same length; `tests/state_store.rs` runs one behaviour
/// suite on both).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE assignment (
        project    TEXT NOT NULL,
        assignment BIGINT NOT NULL,
        mailbox    TEXT NOT NULL,
        item_id    TEXT,
        change_key TEXT,
        baseline   JSONB,
        pm_hash    TEXT,
        mail_hash  TEXT,
        status     JSONB NOT NULL,
        attempts   BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        last_sync  TEXT,
        PRIMARY KEY (project, assignment)
    );
    CREATE INDEX assignment_mailbox ON assignment (mailbox, project, assignment);
    CREATE INDEX assignment_item ON assignment (mailbox, item_id);
    CREATE TABLE mailbox (
        mailbox           TEXT PRIMARY KEY,
        folder_id         TEXT,
        subscription_id   TEXT,
        watermark         TEXT,
        last_notification TEXT,
        sync_state        TEXT,
        last_reconcile    TEXT
    );
    CREATE INDEX mailbox_subscription ON mailbox (subscription_id);
    CREATE TABLE journal (
        id         BIGSERIAL PRIMARY KEY,
        mailbox    TEXT NOT NULL,
        project    TEXT NOT NULL,
        assignment BIGINT NOT NULL,
        kind       TEXT NOT NULL,
        at         TEXT NOT NULL
    );
    CREATE TABLE audit (
        id         BIGSERIAL PRIMARY KEY,
        at         TEXT NOT NULL,
        project    TEXT NOT NULL,
        assignment BIGINT NOT NULL,
        mailbox    TEXT NOT NULL,
        field      TEXT NOT NULL,
        pm_value   TEXT NOT NULL,
        mail_value TEXT NOT NULL,
        rule       TEXT NOT NULL,
        winner     TEXT NOT NULL
    );
    CREATE INDEX audit_project ON audit (project, id);",
    // 2: who settled a conflict and why.
    "ALTER TABLE audit ADD COLUMN note TEXT;",
    // 3: instances, mailbox leases and the queue of notifications handed to a lease's owner.
    "CREATE TABLE instance (
        id      TEXT PRIMARY KEY,
        expires BIGINT NOT NULL
    );
    CREATE TABLE lease (
        mailbox    TEXT PRIMARY KEY,
        owner      TEXT,
        expires    BIGINT NOT NULL DEFAULT 0,
        generation BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE notice_queue (
        id              BIGSERIAL PRIMARY KEY,
        mailbox         TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        watermark       TEXT,
        item_ids        TEXT NOT NULL
    );
    CREATE INDEX notice_queue_mailbox ON notice_queue (mailbox, id);",
    // 4: SQLite's step to the binary baseline; PostgreSQL keeps `jsonb`, but one version
    // number means one step on both stores.
    "-- the binary baseline is SQLite's: no statement",
    // 5: publish marks, as on SQLite.
    "CREATE TABLE publish_mark (
        project  TEXT NOT NULL,
        mailbox  TEXT NOT NULL,
        token    BIGINT NOT NULL,
        revision TEXT,
        mapping  TEXT,
        units    BIGINT,
        PRIMARY KEY (project, mailbox)
    );",
    // 6: SQLite drops its index on `mailbox` alone. This store's `assignment_mailbox` is
    // `(mailbox, project, assignment)`, which gives a mailbox's rows in order: it stays.
    "-- SQLite's index on mailbox alone: no statement",
];

/// The channel `enqueue_notice` notifies on (the payload is the mailbox), so that the instance
/// holding the mailbox hears of it at once instead of at its next poll.
pub const NOTICE_CHANNEL: &str = "taskbridge_notice";

/// The PostgreSQL [`StateStore`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For the connection that listens for queued notifications, outside the pool.
    listen: Arc<(
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    )>,
    /// Set once the schema is known to be current: the first call migrates.
    ready: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never shown.
        f.write_str("PostgresStore")
    }
}

/// The server's own words when it answered with an error (the driver's `Display` says only
/// "db error"), else the driver's error with its cause.
fn db(e: tokio_postgres::Error) -> StateError {
    let text = match e.as_db_error() {
        Some(d) => format!("PostgreSQL: {} ({})", d.message(), d.code().code()),
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        },
    };
    StateError::Database(text)
}

/// How the store reaches PostgreSQL over TLS.
#[derive(Clone, Debug, Default)]
pub struct PostgresTls {
    /// PEM file of extra CA certificates to trust besides the system's.
    pub extra_ca_file: Option<std::path::PathBuf>,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq key-value string),
    /// and runs pending migrations: an unreachable database or a bad schema fails here.
    ///
    /// `password`, when given, overrides one in the URL (so that it can come from a variable
    /// or a file instead of the configuration).
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        tls: &PostgresTls,
    ) -> Result<PostgresStore, StateError> {
        let store = Self::new(url, password, tls)?;
        drop(store.client().await?);
        Ok(store)
    }

    /// Like [`PostgresStore::connect`] without waiting for the database: the URL and TLS
    /// settings are checked now, the connection and migrations happen on the first call.
    pub fn new(
        url: &str,
        password: Option<&str>,
        tls: &PostgresTls,
    ) -> Result<PostgresStore, StateError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StateError::Database(format!("PostgreSQL URL: {e}")))?;
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_application_name().is_none() {
            config.application_name("taskbridge");
        }
        let connector = tls_connector(tls)?;
        let listen = Arc::new((config.clone(), connector.clone()));
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .build()
            .map_err(|e| StateError::Database(format!("PostgreSQL pool: {e}")))?;
        Ok(PostgresStore {
            pool,
            listen,
            ready: Arc::default(),
        })
    }

    /// Mailboxes as notifications are queued for them (by any instance), from a connection
    /// of its own that `LISTEN`s on `taskbridge_notice` and is opened again when it breaks.
    /// Dropping the receiver ends it.
    pub fn listen(&self) -> tokio::sync::mpsc::Receiver<MailboxAddress> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let listen = Arc::clone(&self.listen);
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (config, tls) = &*listen;
                match config.connect(tls.clone()).await {
                    Ok((client, mut connection)) => {
                        let mut messages =
                            futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        let listening = async {
                            client
                                .batch_execute(&format!("LISTEN {NOTICE_CHANNEL}"))
                                .await
                        };
                        // The connection must be polled for the LISTEN to be answered.
                        let mut listening = std::pin::pin!(listening);
                        let mut listened = false;
                        loop {
                            tokio::select! {
                                r = &mut listening, if !listened => {
                                    listened = true;
                                    if let Err(e) = r {
                                        tracing::warn!(error = %db(e), "LISTEN failed");
                                        break;
                                    }
                                }
                                m = futures::StreamExt::next(&mut messages) => match m {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                        if tx.send(MailboxAddress::new(n.payload())).await.is_err() {
                                            return;
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(e)) => {
                                        tracing::debug!(error = %db(e), "the LISTEN connection broke");
                                        break;
                                    }
                                    None => break,
                                },
                                _ = tx.closed() => return,
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %db(e), "cannot open the LISTEN connection"),
                }
                // Polling covers the time without it.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        rx
    }

    /// A pooled connection to a database whose schema is current.
    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.ready.get_or_try_init(|| self.migrate()).await?;
        self.pooled().await
    }

    async fn pooled(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool
            .get()
            .await
            .map_err(|e| StateError::Database(format!("PostgreSQL: {e}")))
    }

    /// Brings the schema to the latest version (the scheme of [`crate::postgres`]).
    async fn migrate(&self) -> Result<(), StateError> {
        let mut client = self.pooled().await?;
        let schema = crate::postgres::Schema {
            store: "state",
            shown: "state",
            migrations: MIGRATIONS,
        };
        crate::postgres::migrate(&mut client, &schema, true)
            .await
            .map(drop)
            .map_err(|e| match e {
                crate::postgres::MigrateError::Database(e) => db(e),
                other => StateError::Database(other.to_string()),
            })
    }

    /// Every assignment row, ordered by key.
    pub async fn all_assignments(&self) -> Result<Vec<AssignmentState>, StateError> {
        self.query_assignments("TRUE ORDER BY project, assignment", &[])
            .await
    }

    /// Whether any table of the state holds a row.
    pub async fn holds_state(&self) -> Result<bool, StateError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM assignment) OR EXISTS (SELECT 1 FROM mailbox) \
                 OR EXISTS (SELECT 1 FROM journal) OR EXISTS (SELECT 1 FROM audit)",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.get(0))
    }

    /// Removes every row of the state (the schema stays), in one transaction.
    pub async fn clear(&self) -> Result<(), StateError> {
        let client = self.client().await?;
        client
            .batch_execute(
                "TRUNCATE assignment, mailbox, journal, audit, instance, lease, notice_queue \
                 RESTART IDENTITY",
            )
            .await
            .map_err(db)
    }

    async fn query_assignments(
        &self,
        filter: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<AssignmentState>, StateError> {
        let client = self.client().await?;
        let sql = format!("SELECT {ASSIGNMENT_COLUMNS} FROM assignment WHERE {filter}");
        let stmt = client.prepare_cached(&sql).await.map_err(db)?;
        client
            .query(&stmt, args)
            .await
            .map_err(db)?
            .iter()
            .map(read_assignment)
            .collect()
    }
}

/// rustls with the system's roots (and `extra_ca_file`), as the EWS transport uses.
fn tls_connector(
    tls: &PostgresTls,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StateError> {
    let mut config =
        crate::ews::transport::rustls_client_config(&crate::ews::transport::TlsConfig {
            extra_ca_file: tls.extra_ca_file.clone(),
            ..Default::default()
        })
        .map_err(|e| StateError::Database(format!("PostgreSQL TLS: {e}")))?;
    // The EWS configuration offers HTTP/1.1 by ALPN; PostgreSQL must not see that.
    config.alpn_protocols.clear();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("state values serialize to JSON")
}

fn from_json<T: for<'de> Deserialize<'de>>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, StateError> {
    serde_json::from_value(value).map_err(|e| StateError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn parse_key(what: &str, project: &str, uid: i64) -> Result<AssignmentKey, StateError> {
    Ok(AssignmentKey {
        project: project.parse().map_err(|e| StateError::Corrupt {
            what: what.to_string(),
            detail: format!("{e}"),
        })?,
        assignment: AssignmentUid(uid),
    })
}

const ASSIGNMENT_COLUMNS: &str = "project, assignment, mailbox, item_id, change_key, baseline, \
     pm_hash, mail_hash, status, attempts, last_error, last_sync";

fn read_assignment(row: &Row) -> Result<AssignmentState, StateError> {
    let project: String = row.try_get(0).map_err(db)?;
    let uid: i64 = row.try_get(1).map_err(db)?;
    let what = format!("{project}:{uid}");
    let item_id: Option<String> = row.try_get(3).map_err(db)?;
    let change_key: Option<String> = row.try_get(4).map_err(db)?;
    let baseline: Option<serde_json::Value> = row.try_get(5).map_err(db)?;
    let status: serde_json::Value = row.try_get(8).map_err(db)?;
    let attempts: i64 = row.try_get(9).map_err(db)?;
    Ok(AssignmentState {
        key: parse_key(&what, &project, uid)?,
        mailbox: MailboxAddress(row.try_get(2).map_err(db)?),
        item: item_id.map(|item_id| ItemRef {
            item_id,
            change_key: change_key.unwrap_or_default(),
        }),
        baseline: baseline.map(|b| from_json(&what, b)).transpose()?,
        pm_hash: parse_hash(&what, row.try_get(6).map_err(db)?)?,
        mail_hash: parse_hash(&what, row.try_get(7).map_err(db)?)?,
        status: from_json(&what, status)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: row.try_get(10).map_err(db)?,
        last_sync: parse_time(&what, row.try_get(11).map_err(db)?)?,
    })
}

const MAILBOX_COLUMNS: &str =
    "mailbox, folder_id, subscription_id, watermark, last_notification, sync_state, last_reconcile";

fn read_mailbox(row: &Row) -> Result<MailboxState, StateError> {
    let mailbox: String = row.try_get(0).map_err(db)?;
    Ok(MailboxState {
        folder_id: row.try_get(1).map_err(db)?,
        subscription_id: row.try_get(2).map_err(db)?,
        watermark: row.try_get(3).map_err(db)?,
        last_notification: parse_time(&mailbox, row.try_get(4).map_err(db)?)?,
        sync_state: row.try_get(5).map_err(db)?,
        last_reconcile: parse_time(&mailbox, row.try_get(6).map_err(db)?)?,
        mailbox: Some(MailboxAddress(mailbox)),
    })
}

/// Refuses a transaction made under a lease that has moved since ([`StateError::LeaseLost`]).
async fn check_fences(
    tx: &deadpool_postgres::Transaction<'_>,
    fences: &[Fence],
) -> Result<(), StateError> {
    for fence in fences {
        // FOR SHARE: a take-over (an UPDATE of the row) waits for this commit, and this
        // commit never follows one it did not see.
        let row = tx
            .query_opt(
                "SELECT owner, generation FROM lease WHERE mailbox = $1 FOR SHARE",
                &[&fence.mailbox.0],
            )
            .await
            .map_err(db)?;
        let held = row.is_some_and(|r| {
            r.get::<_, Option<String>>(0).as_deref() == Some(fence.owner.as_str())
                && r.get::<_, i64>(1) == fence.generation
        });
        if !held {
            return Err(StateError::LeaseLost {
                mailbox: fence.mailbox.0.clone(),
            });
        }
    }
    Ok(())
}

/// The rows of a commit: assignments stored and removed, journal entries closed.
async fn write_commit(
    tx: &deadpool_postgres::Transaction<'_>,
    commit: &Commit,
) -> Result<(), StateError> {
    if !commit.put.is_empty() {
        let put = tx
            .prepare_cached(&format!(
                "INSERT INTO assignment ({ASSIGNMENT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (project, assignment) DO UPDATE SET mailbox = $3, \
                 item_id = $4, change_key = $5, baseline = $6, pm_hash = $7, \
                 mail_hash = $8, status = $9, attempts = $10, last_error = $11, \
                 last_sync = $12"
            ))
            .await
            .map_err(db)?;
        for s in &commit.put {
            tx.execute(
                &put,
                &[
                    &s.key.project.to_string(),
                    &s.key.assignment.0,
                    &s.mailbox.0,
                    &s.item.as_ref().map(|i| i.item_id.as_str()),
                    &s.item.as_ref().map(|i| i.change_key.as_str()),
                    &s.baseline.as_ref().map(to_json),
                    &s.pm_hash.map(|h| h.to_string()),
                    &s.mail_hash.map(|h| h.to_string()),
                    &to_json(&s.status),
                    &i64::from(s.attempts),
                    &s.last_error,
                    &s.last_sync.as_ref().map(time_text),
                ],
            )
            .await
            .map_err(db)?;
        }
    }
    if !commit.delete.is_empty() {
        let delete = tx
            .prepare_cached(
                "DELETE FROM assignment WHERE project = $1 AND assignment = $2 AND mailbox = $3",
            )
            .await
            .map_err(db)?;
        for (k, mailbox) in &commit.delete {
            tx.execute(
                &delete,
                &[&k.project.to_string(), &k.assignment.0, &mailbox.0],
            )
            .await
            .map_err(db)?;
        }
    }
    if !commit.close_journal.is_empty() {
        tx.execute(
            "DELETE FROM journal WHERE id = ANY($1)",
            &[&commit.close_journal],
        )
        .await
        .map_err(db)?;
    }
    // After the rows, so that this transaction holds its lock on `assignment` by now: a
    // reservation (which waits for that lock) is either made before this statement, which
    // then removes it (unless this is the reserving publish's own write), or after this
    // transaction commits.
    let touched = commit.touched_scopes();
    if !touched.is_empty() {
        let unmark = tx
            .prepare_cached(
                "DELETE FROM publish_mark WHERE project = $1 AND mailbox IN ($2, '') \
                 AND (revision IS NOT NULL OR token IS DISTINCT FROM $3)",
            )
            .await
            .map_err(db)?;
        for (project, mailbox) in touched {
            tx.execute(
                &unmark,
                &[&project.to_string(), &mailbox.0, &commit.publish_token],
            )
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}

/// Appends audit records.
async fn insert_audit(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &[AuditRecord],
) -> Result<(), StateError> {
    if records.is_empty() {
        return Ok(());
    }
    let ins = tx
        .prepare_cached(
            "INSERT INTO audit (at, project, assignment, mailbox, field, pm_value, \
             mail_value, rule, winner, note) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(db)?;
    for r in records {
        let rule = to_json(&r.rule);
        let winner = to_json(&r.winner);
        tx.execute(
            &ins,
            &[
                &time_text(&r.at),
                &r.key.project.to_string(),
                &r.key.assignment.0,
                &r.mailbox.0,
                &r.field.name(),
                &r.pm_value,
                &r.mail_value,
                &rule.as_str().unwrap_or_default(),
                &winner.as_str().unwrap_or_default(),
                &r.note,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Opens journal entries; their ids in order.
async fn insert_journal(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[JournalEntry],
) -> Result<Vec<i64>, StateError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ins = tx
        .prepare_cached(
            "INSERT INTO journal (mailbox, project, assignment, kind, at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await
        .map_err(db)?;
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries {
        let row = tx
            .query_one(
                &ins,
                &[
                    &e.mailbox.0,
                    &e.key.project.to_string(),
                    &e.key.assignment.0,
                    &e.kind.as_str(),
                    &time_text(&e.at),
                ],
            )
            .await
            .map_err(db)?;
        ids.push(row.get(0));
    }
    Ok(ids)
}

impl StateStore for PostgresStore {
    async fn assignment(&self, key: &AssignmentKey) -> Result<Option<AssignmentState>, StateError> {
        let (p, a) = (key.project.to_string(), key.assignment.0);
        Ok(self
            .query_assignments("project = $1 AND assignment = $2", &[&p, &a])
            .await?
            .pop())
    }

    async fn project_assignments(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        let p = project.to_string();
        self.query_assignments("project = $1 ORDER BY assignment", &[&p])
            .await
    }

    async fn assignment_mailboxes(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<(AssignmentUid, MailboxAddress)>, StateError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT assignment, mailbox FROM assignment WHERE project = $1")
            .await
            .map_err(db)?;
        client
            .query(&stmt, &[&project.to_string()])
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                Ok((
                    AssignmentUid(row.try_get(0).map_err(db)?),
                    MailboxAddress(row.try_get(1).map_err(db)?),
                ))
            })
            .collect()
    }

    async fn mailbox_assignments(
        &self,
        mailbox: &MailboxAddress,
        project: Option<ProjectGuid>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        match project {
            None => {
                self.query_assignments("mailbox = $1 ORDER BY project, assignment", &[&mailbox.0])
                    .await
            }
            Some(p) => {
                self.query_assignments(
                    "mailbox = $1 AND project = $2 ORDER BY assignment",
                    &[&mailbox.0, &p.to_string()],
                )
                .await
            }
        }
    }

    async fn pending_approvals(&self) -> Result<Vec<AssignmentState>, StateError> {
        self.query_assignments(
            "status->>'state' = 'pending_approval' ORDER BY mailbox, project, assignment",
            &[],
        )
        .await
    }

    async fn mailbox_items(
        &self,
        mailbox: &MailboxAddress,
    ) -> Result<Vec<TrackedItem>, StateError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT item_id, project, assignment, baseline->'values'->>'zone' \
                 FROM assignment WHERE mailbox = $1 AND item_id IS NOT NULL \
                 ORDER BY project, assignment",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&stmt, &[&mailbox.0]).await.map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let project: String = row.try_get(1).map_err(db)?;
            let uid: i64 = row.try_get(2).map_err(db)?;
            let what = format!("{project}:{uid}");
            let zone: Option<String> = row.try_get(3).map_err(db)?;
            out.push(TrackedItem {
                item_id: row.try_get(0).map_err(db)?,
                key: parse_key(&what, &project, uid)?,
                zone: zone
                    .map(|z| {
                        z.parse::<chrono_tz::Tz>().map_err(|e| StateError::Corrupt {
                            what: what.clone(),
                            detail: format!("zone: {e}"),
                        })
                    })
                    .transpose()?,
            });
        }
        Ok(out)
    }

    async fn assignments_by_items(
        &self,
        mailbox: &MailboxAddress,
        item_ids: Vec<String>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        if item_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.query_assignments(
            "mailbox = $1 AND item_id = ANY($2)",
            &[&mailbox.0, &item_ids],
        )
        .await
    }

    async fn transact(&self, transaction: Transaction) -> Result<Vec<i64>, StateError> {
        if transaction.is_empty() {
            return Ok(Vec::new());
        }
        let Transaction {
            commit,
            audit,
            open_journal,
        } = transaction;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The fences first, in the same transaction as everything they guard.
        check_fences(&tx, &commit.fences).await?;
        write_commit(&tx, &commit).await?;
        insert_audit(&tx, &audit).await?;
        let ids = insert_journal(&tx, &open_journal).await?;
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn open_journal(&self, entries: Vec<JournalEntry>) -> Result<Vec<i64>, StateError> {
        self.transact(Transaction {
            open_journal: entries,
            ..Transaction::default()
        })
        .await
    }

    async fn unfinished_journal(&self) -> Result<Vec<JournalEntry>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, mailbox, project, assignment, kind, at FROM journal ORDER BY id",
                &[],
            )
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0).map_err(db)?;
            let what = format!("journal {id}");
            let project: String = row.try_get(2).map_err(db)?;
            let kind: String = row.try_get(4).map_err(db)?;
            out.push(JournalEntry {
                id,
                mailbox: MailboxAddress(row.try_get(1).map_err(db)?),
                key: parse_key(&what, &project, row.try_get(3).map_err(db)?)?,
                kind: WriteKind::parse(&kind).ok_or_else(|| StateError::Corrupt {
                    what: what.clone(),
                    detail: format!("unknown write kind {kind}"),
                })?,
                at: parse_time(&what, row.try_get(5).map_err(db)?)?.unwrap_or_else(Utc::now),
            });
        }
        Ok(out)
    }

    async fn mailbox(&self, mailbox: &MailboxAddress) -> Result<Option<MailboxState>, StateError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {MAILBOX_COLUMNS} FROM mailbox WHERE mailbox = $1"),
                &[&mailbox.0],
            )
            .await
            .map_err(db)?
            .as_ref()
            .map(read_mailbox)
            .transpose()
    }

    async fn mailboxes(&self) -> Result<Vec<MailboxState>, StateError> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT {MAILBOX_COLUMNS} FROM mailbox ORDER BY mailbox"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(read_mailbox)
            .collect()
    }

    async fn update_mailbox(
        &self,
        mailbox: &MailboxAddress,
        change: impl FnOnce(&mut MailboxState) + Send + 'static,
    ) -> Result<MailboxState, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The row exists and is locked before it is read: another instance changing another
        // column of it waits, then reads what this one wrote.
        tx.execute(
            "INSERT INTO mailbox (mailbox) VALUES ($1) ON CONFLICT (mailbox) DO NOTHING",
            &[&mailbox.0],
        )
        .await
        .map_err(db)?;
        let row = tx
            .query_one(
                &format!("SELECT {MAILBOX_COLUMNS} FROM mailbox WHERE mailbox = $1 FOR UPDATE"),
                &[&mailbox.0],
            )
            .await
            .map_err(db)?;
        let mut state = read_mailbox(&row)?;
        state.mailbox = Some(mailbox.clone());
        change(&mut state);
        tx.execute(
            "UPDATE mailbox SET folder_id = $2, subscription_id = $3, watermark = $4, \
             last_notification = $5, sync_state = $6, last_reconcile = $7 WHERE mailbox = $1",
            &[
                &mailbox.0,
                &state.folder_id,
                &state.subscription_id,
                &state.watermark,
                &state.last_notification.as_ref().map(time_text),
                &state.sync_state,
                &state.last_reconcile.as_ref().map(time_text),
            ],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(state)
    }

    async fn note_heard(
        &self,
        heard: Vec<(MailboxAddress, Option<String>)>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        if heard.is_empty() {
            return Ok(());
        }
        // In one order, so that two instances writing some of the same rows (a lease moving
        // meanwhile) wait for each other instead of deadlocking.
        let mut heard = heard;
        heard.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let stmt = tx
            .prepare(
                "INSERT INTO mailbox (mailbox, watermark, last_notification) VALUES ($1, $2, $3) \
                 ON CONFLICT (mailbox) DO UPDATE SET \
                 watermark = COALESCE(EXCLUDED.watermark, mailbox.watermark), \
                 last_notification = EXCLUDED.last_notification",
            )
            .await
            .map_err(db)?;
        let at = time_text(&at);
        for (mailbox, watermark) in &heard {
            tx.execute(&stmt, &[&mailbox.0, watermark, &at])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
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
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at, project, assignment, mailbox, field, pm_value, mail_value, rule, \
                 winner, note FROM audit WHERE $1::text IS NULL OR project = $1 ORDER BY id",
                &[&p],
            )
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let project: String = row.try_get(1).map_err(db)?;
            let what = format!("audit {project}");
            let field: String = row.try_get(4).map_err(db)?;
            let rule: String = row.try_get(7).map_err(db)?;
            let winner: String = row.try_get(8).map_err(db)?;
            out.push(AuditRecord {
                at: parse_time(&what, row.try_get(0).map_err(db)?)?.unwrap_or_else(Utc::now),
                key: parse_key(&what, &project, row.try_get(2).map_err(db)?)?,
                mailbox: MailboxAddress(row.try_get(3).map_err(db)?),
                field: MailField::from_name(&field).ok_or_else(|| StateError::Corrupt {
                    what: what.clone(),
                    detail: format!("unknown field {field}"),
                })?,
                pm_value: row.try_get(5).map_err(db)?,
                mail_value: row.try_get(6).map_err(db)?,
                rule: from_json(&what, serde_json::Value::String(rule))?,
                winner: from_json(&what, serde_json::Value::String(winner))?,
                note: row.try_get(9).map_err(db)?,
            });
        }
        Ok(out)
    }

    async fn forget_project(&self, project: ProjectGuid) -> Result<u64, StateError> {
        let key = project.to_string();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut n = 0u64;
        for table in ["assignment", "journal", "audit"] {
            n += tx
                .execute(&format!("DELETE FROM {table} WHERE project = $1"), &[&key])
                .await
                .map_err(db)?;
        }
        tx.execute("DELETE FROM publish_mark WHERE project = $1", &[&key])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn heartbeat(
        &self,
        instance: &InstanceId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<InstanceRow>, StateError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO instance (id, expires) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET expires = $2",
                &[&instance.as_str(), &millis(until)],
            )
            .await
            .map_err(db)?;
        let rows = client
            .query(
                "SELECT id, expires FROM instance WHERE expires > $1 ORDER BY id",
                &[&millis(now)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: InstanceId::new(r.try_get::<_, &str>(0).map_err(db)?),
                    expires: from_millis(r.try_get(1).map_err(db)?),
                })
            })
            .collect()
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), StateError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM instance WHERE id = $1", &[&instance.as_str()])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT mailbox, owner, expires, generation FROM lease ORDER BY mailbox",
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    mailbox: MailboxAddress(r.try_get(0).map_err(db)?),
                    owner: r
                        .try_get::<_, Option<&str>>(1)
                        .map_err(db)?
                        .map(InstanceId::new),
                    expires: from_millis(r.try_get(2).map_err(db)?),
                    generation: r.try_get(3).map_err(db)?,
                })
            })
            .collect()
    }

    async fn add_leases(&self, mailboxes: Vec<MailboxAddress>) -> Result<(), StateError> {
        if mailboxes.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = mailboxes.iter().map(|m| m.as_str()).collect();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO lease (mailbox) SELECT unnest($1::text[]) \
                 ON CONFLICT (mailbox) DO NOTHING",
                &[&names],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn take_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>, StateError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE lease SET owner = $2, expires = $5, generation = generation + 1 \
                 WHERE mailbox = $1 AND generation = $3 AND (owner IS NULL OR expires <= $4) \
                 RETURNING generation",
                &[
                    &mailbox.0,
                    &instance.as_str(),
                    &generation,
                    &millis(now),
                    &millis(until),
                ],
            )
            .await
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }

    async fn renew_leases(
        &self,
        instance: &InstanceId,
        leases: &[(MailboxAddress, i64)],
        until: DateTime<Utc>,
    ) -> Result<std::collections::BTreeSet<MailboxAddress>, StateError> {
        if leases.is_empty() {
            return Ok(std::collections::BTreeSet::new());
        }
        let mailboxes: Vec<&str> = leases.iter().map(|(m, _)| m.0.as_str()).collect();
        let generations: Vec<i64> = leases.iter().map(|(_, g)| *g).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE lease SET expires = $4 \
                 FROM unnest($1::text[], $2::bigint[]) AS held (mailbox, generation) \
                 WHERE lease.mailbox = held.mailbox AND lease.generation = held.generation \
                   AND lease.owner = $3 \
                 RETURNING lease.mailbox",
                &[&mailboxes, &generations, &instance.as_str(), &millis(until)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok(MailboxAddress(r.try_get::<_, String>(0).map_err(db)?)))
            .collect()
    }

    async fn publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
    ) -> Result<Option<PublishMark>, StateError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT revision, mapping, units FROM publish_mark \
                 WHERE project = $1 AND mailbox = $2 AND revision IS NOT NULL",
                &[&project.to_string(), &scope.key()],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| PublishMark {
            revision: r.get(0),
            mapping: r.get::<_, Option<String>>(1).unwrap_or_default(),
            units: r.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64,
        }))
    }

    async fn reserve_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
    ) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // SHARE waits for every transaction writing assignments to end (a write that read
        // nothing of the reservation must be visible to the publish's reads after it) and
        // holds new ones back until the reservation is committed; see `write_commit`.
        tx.batch_execute("LOCK TABLE assignment IN SHARE MODE")
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO publish_mark (project, mailbox, token) VALUES ($1, $2, $3) \
             ON CONFLICT (project, mailbox) DO UPDATE SET token = $3, revision = NULL, \
             mapping = NULL, units = NULL",
            &[&project.to_string(), &scope.key(), &token],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn confirm_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
        mark: PublishMark,
    ) -> Result<bool, StateError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE publish_mark SET revision = $4, mapping = $5, units = $6 \
                 WHERE project = $1 AND mailbox = $2 AND token = $3 AND revision IS NULL",
                &[
                    &project.to_string(),
                    &scope.key(),
                    &token,
                    &mark.revision,
                    &mark.mapping,
                    &i64::try_from(mark.units).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    async fn release_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
    ) -> Result<(), StateError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE lease SET owner = NULL, expires = 0 \
                 WHERE mailbox = $1 AND owner = $2 AND generation = $3",
                &[&mailbox.0, &instance.as_str(), &generation],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    fn listen_notices(&self) -> Option<tokio::sync::mpsc::Receiver<MailboxAddress>> {
        Some(self.listen())
    }

    async fn enqueue_notice(&self, notice: QueuedNotice) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO notice_queue (mailbox, subscription_id, watermark, item_ids) \
             VALUES ($1, $2, $3, $4)",
            &[
                &notice.mailbox.0,
                &notice.subscription_id,
                &notice.watermark,
                &to_json(&notice.item_ids).to_string(),
            ],
        )
        .await
        .map_err(db)?;
        // Delivered at commit, to every session listening (the owner among them).
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&NOTICE_CHANNEL, &notice.mailbox.0],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn take_notices(
        &self,
        mailboxes: Vec<MailboxAddress>,
    ) -> Result<Vec<QueuedNotice>, StateError> {
        if mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = mailboxes.iter().map(|m| m.as_str()).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH taken AS (DELETE FROM notice_queue WHERE mailbox = ANY($1) \
                 RETURNING id, mailbox, subscription_id, watermark, item_ids) \
                 SELECT mailbox, subscription_id, watermark, item_ids FROM taken ORDER BY id",
                &[&names],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let items: String = r.try_get(3).map_err(db)?;
                Ok(QueuedNotice {
                    mailbox: MailboxAddress(r.try_get(0).map_err(db)?),
                    subscription_id: r.try_get(1).map_err(db)?,
                    watermark: r.try_get(2).map_err(db)?,
                    item_ids: serde_json::from_str(&items).map_err(|e| StateError::Corrupt {
                        what: "queued notice".into(),
                        detail: e.to_string(),
                    })?,
                })
            })
            .collect()
    }
}
