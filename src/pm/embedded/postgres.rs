//! The PM store on PostgreSQL: the same rows, statements and transactions as on SQLite
//! (`rows`, `ops` over [`Conn`]), on a database several connector instances and CLI processes
//! share.
//!
//! The driver and pool are the state store's: `tokio-postgres` behind `deadpool-postgres`
//! (a broken connection is replaced at the next checkout, so a database restart costs the calls
//! made while it is down), TLS by rustls with the configuration the caller gives. The
//! operations are synchronous code written once for both backends, so they run on a thread of
//! the store's own, as SQLite's do: it owns a single-threaded tokio runtime, takes a pooled
//! connection per job and drives the driver's futures to completion, and it relays the event
//! log to subscribers after every job and at every poll, as SQLite's thread does.

use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_postgres::types::{ToSql, Type};

use super::EmbeddedError;
use super::relay::{Cursors, Relay, Relaying};
use super::schema::{self, MIGRATIONS};
use super::sql::{Backend, Conn, Row, Value};
use crate::secret::Secret;

/// Where a PM store on PostgreSQL is.
#[derive(Clone, Debug)]
pub struct PostgresPm {
    /// `postgres://user@host:port/database?sslmode=require`, or libpq key-value pairs.
    pub url: String,
    /// The password, when it is not in the URL (from a variable or a file).
    pub password: Option<Secret>,
    /// The TLS client configuration (`sslmode` in the URL says whether it is used).
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

/// A job: runs on the store's thread with a connection (or the reason there is none), and
/// returns the reply to send once the relay after it ran.
type Job = Box<dyn FnOnce(Result<&dyn Conn, EmbeddedError>) -> Reply + Send>;
/// Sends a job's result to its caller.
type Reply = Box<dyn FnOnce() + Send>;

/// The handle to the store's thread. Dropping the last handle ends the thread.
pub(crate) struct PgDb {
    jobs: mpsc::Sender<Job>,
    done: oneshot::Receiver<()>,
}

/// The server's own words when it answered with an error (the driver's `Display` says only
/// "db error"), else an unreachable database.
fn pg(e: tokio_postgres::Error) -> EmbeddedError {
    match e.as_db_error() {
        Some(d) => EmbeddedError::Postgres(format!("{} ({})", d.message(), d.code().code())),
        None => EmbeddedError::DatabaseUnavailable(match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }),
    }
}

impl PgDb {
    /// Connects, migrates (or, without `create`, requires a store to be there), and starts the
    /// thread.
    pub(crate) async fn open(
        target: PostgresPm,
        create: bool,
        relay: Relay,
        poll_interval: Duration,
    ) -> Result<PgDb, EmbeddedError> {
        let pool = pool(&target)?;
        let shown = describe(&target.url);
        let (jobs, jobs_rx) = mpsc::channel::<Job>();
        let (ready, ready_rx) = oneshot::channel::<Result<(), EmbeddedError>>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("taskbridge-pm-postgres".into())
            .spawn(move || {
                let opened = (|| -> Result<(Runtime, Cursors), EmbeddedError> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let mut client = rt.block_on(pool.get()).map_err(|e| {
                        EmbeddedError::DatabaseUnavailable(format!("PostgreSQL {shown}: {e}"))
                    })?;
                    rt.block_on(migrate(&mut client, create, &shown))?;
                    let conn = PgConn {
                        rt: &rt,
                        client: &client,
                    };
                    let cursors = Cursors::at_end(&conn);
                    drop(client);
                    Ok((rt, cursors))
                })();
                match opened {
                    Ok((rt, cursors)) => {
                        let _ = ready.send(Ok(()));
                        run(
                            &rt,
                            &pool,
                            &jobs_rx,
                            Relaying {
                                relay,
                                cursors,
                                poll_interval,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
                let _ = done_tx.send(());
            })?;
        ready_rx.await.map_err(|_| EmbeddedError::Closed)??;
        Ok(PgDb { jobs, done })
    }

    /// Ends the thread and waits until it has closed its connections.
    pub(crate) async fn close(self) {
        let PgDb { jobs, done } = self;
        drop(jobs);
        let _ = done.await;
    }

    /// Runs `f` on the thread with a pooled connection.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, EmbeddedError>
    where
        F: FnOnce(&dyn Conn) -> Result<R, EmbeddedError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = conn.and_then(f);
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| EmbeddedError::Closed)?;
        // A job that panicked drops its sender: `Closed`, as on SQLite.
        rx.await.map_err(|_| EmbeddedError::Closed)?
    }
}

/// The thread's loop: jobs in order, the relay after each and at every idle poll, and the
/// planner's statistics kept fresh after jobs.
fn run(rt: &Runtime, pool: &Pool, jobs: &mpsc::Receiver<Job>, mut relaying: Relaying) {
    let mut statistics = Statistics::new();
    loop {
        match jobs.recv_timeout(relaying.poll_interval) {
            Ok(job) => match rt.block_on(pool.get()) {
                Ok(client) => {
                    let conn = PgConn {
                        rt,
                        client: &client,
                    };
                    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(&conn))));
                    relaying.after_job(&conn);
                    statistics.after_job(&conn);
                    if let Ok(reply) = reply {
                        reply();
                    }
                }
                Err(e) => job(Err(EmbeddedError::DatabaseUnavailable(format!(
                    "PostgreSQL: {e}"
                ))))(),
            },
            Err(RecvTimeoutError::Timeout) => {
                // A database that is down is tried again at the next poll.
                if let Ok(client) = rt.block_on(pool.get()) {
                    relaying.when_idle(&PgConn {
                        rt,
                        client: &client,
                    });
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Keeps the planner's statistics of the tables read by key lists (`rows::load_project_part`)
/// fresh. Without statistics (a table imported or filled since its last analysis) the
/// planner takes `project = $1` for a handful of rows and reads a key list by scanning all of
/// the project's rows: measured in the bench's first minute on a fresh database, where
/// autovacuum (every minute by default) had not analysed yet, as 1-10 ms per key list and half
/// of the server's CPU per edit. So the store analyses such a table itself once a fifth of its
/// rows (at least 100) changed since its last analysis, checking at most once a second, after
/// a job (what autovacuum does, without waiting for its next round).
struct Statistics {
    checked: std::time::Instant,
}

impl Statistics {
    /// How often the counters are looked at.
    const EVERY: Duration = Duration::from_secs(1);
    /// The tables whose rows jobs read by key lists, and the rule for analysing one.
    const STALE: &'static str = "SELECT relname FROM pg_stat_user_tables \
         WHERE schemaname = current_schema() \
         AND relname IN ('tasks', 'resources', 'assignments', 'assignment_field_times', \
         'status_updates') \
         AND n_mod_since_analyze >= greatest(100, n_live_tup / 5)";

    fn new() -> Statistics {
        Statistics {
            checked: std::time::Instant::now(),
        }
    }

    fn after_job(&mut self, conn: &PgConn<'_>) {
        if self.checked.elapsed() < Self::EVERY {
            return;
        }
        self.checked = std::time::Instant::now();
        if let Err(e) = Self::refresh(conn) {
            tracing::debug!(error = %e, "PM store statistics not refreshed");
        }
    }

    /// Analyses the tables that changed enough; the names come from [`Statistics::STALE`].
    fn refresh(conn: &PgConn<'_>) -> Result<(), EmbeddedError> {
        for row in conn.query(Self::STALE, &[])? {
            let table = row.text(0)?;
            if table.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                conn.batch(&format!("ANALYZE {table}"))?;
                tracing::debug!(table, "PM store table analysed");
            }
        }
        Ok(())
    }
}

/// The database of `url` for messages: hosts and database name, never a password.
pub(crate) fn describe(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!(
                "PostgreSQL {}/{}",
                hosts.join(","),
                config.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "PostgreSQL (an unreadable URL)".to_owned(),
    }
}

/// The pool, as the state store builds its own.
fn pool(target: &PostgresPm) -> Result<Pool, EmbeddedError> {
    let mut config = tokio_postgres::Config::from_str(&target.url)
        .map_err(|e| EmbeddedError::Postgres(format!("PostgreSQL URL: {e}")))?;
    if let Some(p) = &target.password {
        config.password(p.expose());
    }
    if config.get_application_name().is_none() {
        config.application_name("taskbridge");
    }
    let mut tls = (*target.tls).clone();
    // A configuration made for HTTPS offers HTTP/1.1 by ALPN; PostgreSQL must not see that.
    tls.alpn_protocols.clear();
    let manager = Manager::from_config(
        config,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // One thread takes one connection at a time; a spare one covers a broken connection being
    // replaced.
    Pool::builder(manager)
        .max_size(2)
        .build()
        .map_err(|e| EmbeddedError::Postgres(format!("PostgreSQL pool: {e}")))
}

/// Brings the schema to the latest version (the scheme of [`crate::postgres`], the SQLite
/// migrations written for PostgreSQL); without `create` a database without the PM store is
/// [`EmbeddedError::NoDatabaseStore`].
async fn migrate(
    client: &mut deadpool_postgres::ClientWrapper,
    create: bool,
    shown: &str,
) -> Result<(), EmbeddedError> {
    use crate::postgres::MigrateError;
    let written: Vec<String> = MIGRATIONS.iter().map(|m| schema::postgres(m)).collect();
    let migrations: Vec<&str> = written.iter().map(String::as_str).collect();
    let schema = crate::postgres::Schema {
        store: "pm",
        shown: "PM store",
        migrations: &migrations,
    };
    match crate::postgres::migrate(client, &schema, create).await {
        Ok(_) => Ok(()),
        Err(MigrateError::TooNew {
            found, supported, ..
        }) => Err(EmbeddedError::SchemaTooNew { found, supported }),
        Err(MigrateError::Missing { .. }) => Err(EmbeddedError::NoDatabaseStore(shown.to_owned())),
        Err(MigrateError::Database(e)) => Err(pg(e)),
        Err(e) => Err(EmbeddedError::Postgres(e.to_string())),
    }
}

/// A pooled connection seen through [`Conn`], its futures driven by the thread's runtime.
pub(crate) struct PgConn<'a> {
    rt: &'a Runtime,
    client: &'a deadpool_postgres::Object,
}

impl PgConn<'_> {
    fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, EmbeddedError> {
        self.rt
            .block_on(self.client.prepare_cached(&numbered(sql)))
            .map_err(pg)
    }
}

/// SQLite's `?1` placeholders as PostgreSQL's `$1` (outside quoted text).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// `value` encoded as the type the server inferred for its placeholder.
fn bind(value: &Value, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, EmbeddedError> {
    let narrow = |what: &str| EmbeddedError::Postgres(format!("{value:?} does not fit {what}"));
    Ok(match value {
        Value::Null if *ty == Type::INT8 => Box::new(None::<i64>),
        Value::Null if *ty == Type::INT4 => Box::new(None::<i32>),
        Value::Null if *ty == Type::INT2 => Box::new(None::<i16>),
        Value::Null if *ty == Type::BOOL => Box::new(None::<bool>),
        Value::Null => Box::new(None::<String>),
        Value::Int(i) if *ty == Type::INT8 => Box::new(*i),
        Value::Int(i) if *ty == Type::INT4 => {
            Box::new(i32::try_from(*i).map_err(|_| narrow("int4"))?)
        }
        Value::Int(i) if *ty == Type::INT2 => {
            Box::new(i16::try_from(*i).map_err(|_| narrow("int2"))?)
        }
        Value::Int(i) if *ty == Type::BOOL => Box::new(*i != 0),
        Value::Int(i) => Box::new(i.to_string()),
        Value::Text(s) => Box::new(s.clone()),
    })
}

fn read(row: &tokio_postgres::Row) -> Result<Row, EmbeddedError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let int = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
        values.push(if *ty == Type::INT8 {
            int(row.try_get::<_, Option<i64>>(i).map_err(pg)?)
        } else if *ty == Type::INT4 {
            int(row.try_get::<_, Option<i32>>(i).map_err(pg)?.map(i64::from))
        } else if *ty == Type::INT2 {
            int(row.try_get::<_, Option<i16>>(i).map_err(pg)?.map(i64::from))
        } else if *ty == Type::BOOL {
            int(row
                .try_get::<_, Option<bool>>(i)
                .map_err(pg)?
                .map(i64::from))
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(ty) {
            row.try_get::<_, Option<String>>(i)
                .map_err(pg)?
                .map_or(Value::Null, Value::Text)
        } else {
            return Err(EmbeddedError::Postgres(format!(
                "column {} has type {ty}, which the PM store never reads",
                column.name()
            )));
        });
    }
    Ok(Row(values))
}

impl Conn for PgConn<'_> {
    fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, EmbeddedError> {
        let stmt = self.prepare(sql)?;
        let bound = bound(args, stmt.params())?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b as _).collect();
        self.rt
            .block_on(self.client.execute(&stmt, &refs))
            .map_err(pg)
    }

    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, EmbeddedError> {
        let stmt = self.prepare(sql)?;
        let bound = bound(args, stmt.params())?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b as _).collect();
        self.rt
            .block_on(self.client.query(&stmt, &refs))
            .map_err(pg)?
            .iter()
            .map(read)
            .collect()
    }

    fn batch(&self, sql: &str) -> Result<(), EmbeddedError> {
        self.rt.block_on(self.client.batch_execute(sql)).map_err(pg)
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

fn bound(
    args: &[Value],
    types: &[Type],
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, EmbeddedError> {
    if args.len() != types.len() {
        return Err(EmbeddedError::Postgres(format!(
            "{} arguments for {} placeholders",
            args.len(),
            types.len()
        )));
    }
    args.iter().zip(types).map(|(v, t)| bind(v, t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            numbered("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12 OR c ? 'k'"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12 OR c ? 'k'"
        );
    }
}
