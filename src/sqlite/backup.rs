//! A copy of an SQLite file before a migration changes its schema: an upgrade that goes wrong
//! (or a downgrade that is needed after all) starts again from the file as the old version
//! left it. Both stores (the PM store and the sync state) use it, through [`super::migrate`].

use std::path::PathBuf;

use chrono::Utc;
use rusqlite::Connection;

/// Copies the database of `conn`, at schema version `from_version`, to
/// `<file>.schema-v<from_version>.<UTC time>.bak` beside it, unless the file is new
/// (`from_version` 0) or in memory. `VACUUM INTO` makes one consistent file, with what the WAL
/// holds, while other connections keep reading. Must run outside a transaction. Returns the
/// copy's path.
pub(crate) fn before_migration(
    conn: &Connection,
    from_version: i64,
) -> rusqlite::Result<Option<PathBuf>> {
    let Some(path) = conn.path().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if from_version <= 0 {
        return Ok(None);
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{path}.schema-v{from_version}.{stamp}");
    let mut target = PathBuf::from(format!("{base}.bak"));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}.bak"));
        n += 1;
    }
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy()])?;
    tracing::info!(
        backup = %target.display(),
        from_version,
        "copied the database before migrating it"
    );
    Ok(Some(target))
}
