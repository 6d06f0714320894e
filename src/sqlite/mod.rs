//! What both SQLite stores (the sync state and the embedded PM store) share: one actor thread
//! that owns the connection ([`actor`]), one migration scheme ([`migrate`]) and the copy of a
//! file before its schema changes ([`backup`]). A bottom layer: it knows nothing of what the
//! stores keep.

pub(crate) mod actor;
pub(crate) mod backup;
pub(crate) mod migrate;

/// How many WAL pages both stores let accumulate before SQLite checkpoints them into the
/// database file (SQLite's default is 1,000). A checkpoint runs on the committing thread with
/// two fsyncs and writes every page the WAL holds; the pages a burst of edits changes are
/// mostly the same few (the tables' last pages, the indexes' upper levels), so a checkpoint
/// eight times rarer writes each of them once where the default wrote it eight times. The WAL
/// file grows to at most about 32 MiB and is reused after each checkpoint.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: i64 = 8000;

/// The plan SQLite chooses for `sql` with `args` (the details of `EXPLAIN QUERY PLAN`, joined
/// by "; "), for the stores' tests of which index a query uses.
#[cfg(test)]
pub(crate) fn query_plan(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare");
    let details: Vec<String> = stmt
        .query_map(args, |row| row.get(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("rows");
    details.join("; ")
}
