//! The one SQL surface the PM store's rows and operations are written against, so that the same
//! statements and transactions run on SQLite and on PostgreSQL.
//!
//! Statements use SQLite's numbered placeholders (`?1`); the PostgreSQL side rewrites them to
//! `$1`. Values are integers, text or NULL, the only kinds the schema stores: PostgreSQL's
//! columns are `BIGINT` and `TEXT` (see `schema`), and a value is encoded as the type the server
//! inferred for its placeholder. A write transaction ([`Tx`]) takes the store's write lock up
//! front on either backend (SQLite's `BEGIN IMMEDIATE`, a transaction-scoped advisory lock on
//! PostgreSQL), so writers from any number of processes apply one after the other, as they do
//! on one SQLite file.

use super::EmbeddedError;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// Text.
    Text(String),
}

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    /// Column `i` as text, borrowed: for a value parsed at once (a date, a field name).
    pub(crate) fn text(&self, i: usize) -> Result<&str, EmbeddedError> {
        match self.0.get(i) {
            Some(Value::Text(t)) => Ok(t),
            other => Err(EmbeddedError::Corrupt(format!(
                "column {i} holds {other:?}, not text"
            ))),
        }
    }

    /// Column `i` as text or NULL, borrowed.
    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<&str>, EmbeddedError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// Column `i` as text, moved out of the row (which then holds an empty text there): for a
    /// value kept as it is (a name, notes), so that it is not copied.
    pub(crate) fn take_text(&mut self, i: usize) -> Result<String, EmbeddedError> {
        match self.0.get_mut(i) {
            Some(Value::Text(t)) => Ok(std::mem::take(t)),
            other => Err(EmbeddedError::Corrupt(format!(
                "column {i} holds {other:?}, not text"
            ))),
        }
    }

    /// Column `i` as `T`.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T, EmbeddedError> {
        let value = self
            .0
            .get(i)
            .ok_or_else(|| EmbeddedError::Corrupt(format!("no column {i} in a result row")))?;
        T::from_value(value).ok_or_else(|| {
            EmbeddedError::Corrupt(format!(
                "column {i} holds {value:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A connection (or an open transaction on one).
pub(crate) trait Conn {
    /// Runs a statement; the number of rows it changed.
    fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, EmbeddedError>;
    /// Runs a query; every row.
    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, EmbeddedError>;
    /// Runs statements without arguments (transaction control, schema).
    fn batch(&self, sql: &str) -> Result<(), EmbeddedError>;
    /// Which engine this is.
    fn backend(&self) -> Backend;

    /// The first row of a query, if any.
    fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>, EmbeddedError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}

/// The first column of the first row of a query, which must exist.
pub(crate) fn one<T: FromValue>(
    conn: &dyn Conn,
    sql: &str,
    args: &[Value],
) -> Result<T, EmbeddedError> {
    conn.query_opt(sql, args)?
        .ok_or_else(|| EmbeddedError::Corrupt(format!("no row from {sql}")))?
        .get(0)
}

/// The advisory lock key of the PM store's writers on PostgreSQL ("tbpmstor" in ASCII).
pub(crate) const WRITE_LOCK: i64 = 0x7462_706d_7374_6f72;

/// A write transaction: committed by [`Tx::commit`], rolled back by [`Tx::rollback`] or when
/// dropped (an error returned with `?`, or a panic), so no connection is left inside one.
pub(crate) struct Tx<'c> {
    conn: &'c (dyn Conn + 'c),
    open: bool,
}

impl<'c> Tx<'c> {
    /// Begins a transaction holding the store's write lock.
    pub(crate) fn begin(conn: &'c (dyn Conn + 'c)) -> Result<Tx<'c>, EmbeddedError> {
        match conn.backend() {
            // Immediate: take the write lock up front, so that a concurrent writer in another
            // process makes us wait (busy timeout) instead of failing a read-then-write upgrade.
            Backend::Sqlite => conn.batch("BEGIN IMMEDIATE")?,
            Backend::Postgres => {
                conn.batch("BEGIN")?;
                let tx = Tx { conn, open: true };
                // The same single writer as SQLite's: what a transaction read stays true until
                // it commits, whichever instance or CLI process writes next.
                tx.conn.execute(
                    "SELECT pg_advisory_xact_lock(?1)",
                    &[Value::Int(WRITE_LOCK)],
                )?;
                return Ok(tx);
            }
        }
        Ok(Tx { conn, open: true })
    }

    /// Commits.
    pub(crate) fn commit(mut self) -> Result<(), EmbeddedError> {
        self.open = false;
        self.conn.batch("COMMIT")
    }

    /// Rolls back.
    pub(crate) fn rollback(mut self) -> Result<(), EmbeddedError> {
        self.open = false;
        self.conn.batch("ROLLBACK")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the error that ended the transaction is already on its way.
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

// The transaction's statements run on its connection.
impl Conn for Tx<'_> {
    fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, EmbeddedError> {
        self.conn.execute(sql, args)
    }

    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, EmbeddedError> {
        self.conn.query(sql, args)
    }

    fn batch(&self, sql: &str) -> Result<(), EmbeddedError> {
        self.conn.batch(sql)
    }

    fn backend(&self) -> Backend {
        self.conn.backend()
    }
}

/// A value stored from Rust.
pub(crate) trait ToValue {
    /// The stored form.
    fn to_value(&self) -> Value;
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
        impl FromValue for $t {
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
int_values!(i64, i32, u32, u16, u8);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The arguments of a statement, each expression borrowed.
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$($crate::pm::embedded::sql::ToValue::to_value(&$e)),*][..]
    };
}
pub(crate) use args;

/// A value read back into Rust.
pub(crate) trait FromValue: Sized {
    /// `None` when the stored value is of another kind.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

// SQLite.

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Conn for rusqlite::Connection {
    fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, EmbeddedError> {
        let mut stmt = self.prepare_cached(sql)?;
        let n = stmt.execute(rusqlite::params_from_iter(args))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, EmbeddedError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|_| {
                                EmbeddedError::Corrupt(format!("column {i} is not UTF-8"))
                            })?
                            .to_owned(),
                    ),
                    other => {
                        return Err(EmbeddedError::Corrupt(format!(
                            "column {i} holds a {:?}, which the PM store never writes",
                            other.data_type()
                        )));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<(), EmbeddedError> {
        Ok(self.execute_batch(sql)?)
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_transaction_leaves_nothing_and_the_connection_usable() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.batch("CREATE TABLE t (x INTEGER)").expect("table");
        {
            let tx = Tx::begin(&conn).expect("begin");
            tx.execute("INSERT INTO t (x) VALUES (?1)", args![1_i64])
                .expect("insert");
            // Dropped without a commit, as an error returned with `?` drops it.
        }
        let n: i64 = one(&conn, "SELECT COUNT(*) FROM t", &[]).expect("count");
        assert_eq!(n, 0);
        let tx = Tx::begin(&conn).expect("a new transaction can begin");
        tx.execute("INSERT INTO t (x) VALUES (?1)", args![Some(2_u16)])
            .expect("insert");
        tx.commit().expect("commit");
        let rows = conn
            .query("SELECT x, NULL, 'a' FROM t", &[])
            .expect("query");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<u16>(0).expect("int"), 2);
        assert_eq!(rows[0].get::<Option<String>>(1).expect("null"), None);
        assert_eq!(rows[0].get::<String>(2).expect("text"), "a");
        assert!(rows[0].get::<String>(0).is_err(), "an integer is not text");
    }
}
