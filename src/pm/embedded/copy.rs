//! Copying a whole store into another (`taskbridge migrate`: an SQLite file into PostgreSQL):
//! every table, every column, row for row, in one transaction of the target, then the counts
//! of both compared table by table.

use super::sql::{Backend, Conn, Tx, Value, one};
use super::{EmbeddedError, EmbeddedHost};

/// The store's tables, each before the tables that refer to it.
const TABLES: &[&str] = &[
    "projects",
    "tasks",
    "resources",
    "assignments",
    "assignment_field_times",
    "status_updates",
    "events",
    "webhook_outbox",
    "import_snapshots",
    "notice_outbox",
    "rejection_notices",
];

/// The tables whose `seq` numbers new rows: after a copy the target's next number must follow
/// the copied ones.
const NUMBERED: &[&str] = &[
    "status_updates",
    "events",
    "webhook_outbox",
    "notice_outbox",
];

/// One table's rows in the source and in the copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    /// The table.
    pub table: &'static str,
    /// Rows in the source.
    pub source: u64,
    /// Rows in the target after the copy.
    pub copied: u64,
}

fn counts(conn: &dyn Conn) -> Result<Vec<u64>, EmbeddedError> {
    TABLES
        .iter()
        .map(|t| {
            let n: i64 = one(conn, &format!("SELECT COUNT(*) FROM {t}"), &[])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .collect()
}

/// The columns of `table` in the store's schema, in their order.
fn columns(conn: &dyn Conn, table: &str) -> Result<Vec<String>, EmbeddedError> {
    let names: Vec<String> = match conn.backend() {
        Backend::Sqlite => conn
            .query(
                &format!("SELECT name FROM pragma_table_info('{table}')"),
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?,
        Backend::Postgres => conn
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?1
                 ORDER BY ordinal_position",
                &[Value::Text(table.to_owned())],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?,
    };
    Ok(names)
}

impl EmbeddedHost {
    /// Whether any table of the store holds a row.
    pub async fn holds_data(&self) -> Result<bool, EmbeddedError> {
        self.call(|conn| Ok(counts(conn)?.iter().any(|n| *n > 0)))
            .await
    }

    /// Copies every row of this store into `target`, in one transaction of the target; with
    /// `replace`, what the target held is deleted in the same transaction (without it, a
    /// target holding rows is refused with [`EmbeddedError::NotEmpty`]). Returns each table's
    /// count in both stores, read after the copy; the caller decides what a difference means.
    pub async fn copy_to(
        &self,
        target: &EmbeddedHost,
        replace: bool,
    ) -> Result<Vec<TableCount>, EmbeddedError> {
        let (names, rows, source) = self
            .call(|conn| {
                let mut names = Vec::new();
                let mut rows = Vec::new();
                for table in TABLES {
                    let cols = columns(conn, table)?;
                    rows.push(
                        conn.query(&format!("SELECT {} FROM {table}", cols.join(", ")), &[])?,
                    );
                    names.push(cols);
                }
                Ok((names, rows, counts(conn)?))
            })
            .await?;
        let copied = target
            .call(move |conn| {
                let tx = Tx::begin(conn)?;
                if counts(&tx)?.iter().any(|n| *n > 0) {
                    if !replace {
                        return Err(EmbeddedError::NotEmpty);
                    }
                    for table in TABLES.iter().rev() {
                        tx.execute(&format!("DELETE FROM {table}"), &[])?;
                    }
                }
                for ((table, cols), rows) in TABLES.iter().zip(&names).zip(rows) {
                    let target_cols = columns(&tx, table)?;
                    if &target_cols != cols {
                        return Err(EmbeddedError::Corrupt(format!(
                            "table {table} has columns {cols:?} in the source and \
                             {target_cols:?} in the target"
                        )));
                    }
                    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                    let insert = format!(
                        "INSERT INTO {table} ({}) VALUES ({})",
                        cols.join(", "),
                        marks.join(", ")
                    );
                    for row in rows {
                        tx.execute(&insert, &row.0)?;
                    }
                }
                if tx.backend() == Backend::Postgres {
                    for table in NUMBERED {
                        tx.query(
                            &format!(
                                "SELECT setval(pg_get_serial_sequence('{table}', 'seq'),
                                               COALESCE(MAX(seq), 1), MAX(seq) IS NOT NULL)::text
                                 FROM {table}"
                            ),
                            &[],
                        )?;
                    }
                }
                tx.commit()?;
                counts(conn)
            })
            .await?;
        Ok(TABLES
            .iter()
            .zip(source.into_iter().zip(copied))
            .map(|(table, (source, copied))| TableCount {
                table,
                source,
                copied,
            })
            .collect())
    }
}
