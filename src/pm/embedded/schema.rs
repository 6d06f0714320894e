//! The embedded host's numbered migrations, the one source of truth for both backends.
//! Migration *n* takes the store from version *n - 1* to *n*; on SQLite the shared scheme
//! (`crate::sqlite::migrate`) records each, on PostgreSQL `super::postgres` does. Never edit a
//! released migration: add the next one.
//!
//! The list is written in SQLite's dialect and [`postgres`] derives PostgreSQL's from it by two
//! rules, so that one version number means one schema on either backend: every `INTEGER` is a
//! `BIGINT` (the store's integers are 64-bit on both sides), and SQLite's
//! `INTEGER PRIMARY KEY AUTOINCREMENT` is an identity column. A migration must keep to what
//! both engines read alike after those rules (a unit test runs them all on each).
//!
//! Conventions: GUIDs and ids are text; work is whole seconds; zone-less project dates are text
//! `YYYY-MM-DDTHH:MM:SS[.fff]`; instants are RFC 3339 UTC text with microseconds (so that text
//! order is time order); `position` keeps the file order of tasks, resources and assignments.

/// The migrations, version 1 first.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The PM store's schema for the shared migration scheme.
pub(crate) const SCHEMA: crate::sqlite::migrate::Schema = crate::sqlite::migrate::Schema {
    store: "PM store",
    migrations: MIGRATIONS,
};

/// Version 1: projects, their rows, status updates, the event log and the webhook outbox.
const V1: &str = "
CREATE TABLE projects (
    guid TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    minutes_per_day INTEGER NOT NULL,
    minutes_per_week INTEGER NOT NULL,
    start TEXT,
    policy TEXT NOT NULL CHECK (policy IN ('auto', 'approval')),
    -- How many times the project was imported; 1 after the first import.
    revision INTEGER NOT NULL,
    imported_at TEXT NOT NULL,
    published_at TEXT NOT NULL
);

CREATE TABLE tasks (
    project TEXT NOT NULL REFERENCES projects (guid) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    notes TEXT NOT NULL,
    start TEXT NOT NULL,
    finish TEXT NOT NULL,
    work INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    percent_work_complete INTEGER NOT NULL,
    summary INTEGER NOT NULL,
    milestone INTEGER NOT NULL,
    outline_level INTEGER NOT NULL,
    PRIMARY KEY (project, uid)
);

CREATE TABLE resources (
    project TEXT NOT NULL REFERENCES projects (guid) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    time_zone TEXT,
    PRIMARY KEY (project, uid)
);

CREATE TABLE assignments (
    project TEXT NOT NULL REFERENCES projects (guid) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    position INTEGER NOT NULL,
    task_uid INTEGER NOT NULL,
    resource_uid INTEGER NOT NULL,
    start TEXT NOT NULL,
    finish TEXT NOT NULL,
    work INTEGER NOT NULL,
    actual_work INTEGER NOT NULL,
    remaining_work INTEGER NOT NULL,
    percent_work_complete INTEGER NOT NULL,
    actual_finish TEXT,
    PRIMARY KEY (project, uid)
);

-- When each field of an assignment last changed on the PM side (FieldTimes); one row per field
-- with a known time, none for a field never changed since the first import.
CREATE TABLE assignment_field_times (
    project TEXT NOT NULL,
    assignment_uid INTEGER NOT NULL,
    field TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (project, assignment_uid, field),
    FOREIGN KEY (project, assignment_uid)
        REFERENCES assignments (project, uid) ON DELETE CASCADE
);

-- Kept after their assignment is gone (history for the status manager), hence no foreign key
-- to assignments.
CREATE TABLE status_updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL REFERENCES projects (guid),
    assignment_uid INTEGER NOT NULL,
    -- JSON array of FieldChange.
    changes TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    item_id TEXT NOT NULL,
    change_key TEXT NOT NULL,
    mail_modified_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'rejected', 'superseded')),
    submitted_at TEXT NOT NULL,
    decided_at TEXT,
    decider TEXT,
    reason TEXT,
    superseded_by TEXT
);
CREATE INDEX status_updates_by_assignment ON status_updates (project, assignment_uid, state);
-- One mailbox item version is one update: a resubmission after a crash finds the first.
CREATE UNIQUE INDEX status_updates_by_source
    ON status_updates (project, assignment_uid, item_id, change_key);

-- HostEvents as JSON, relayed to every process's subscribers, then pruned.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Applied updates waiting for the outgoing webhook; deleted once delivered.
CREATE TABLE webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    update_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failed_at TEXT,
    last_error TEXT
);
";

/// Version 2: the assignments of a task by index, so that applying a status update reads only
/// the task's assignments (for the task's roll-up) instead of the whole plan.
const V2: &str = "
CREATE INDEX assignments_by_task ON assignments (project, task_uid);
";

/// Version 3: what a status update reported beyond its field changes (a status note, a
/// completion date) and the values it applied, as one JSON object (`UpdateDetails`).
const V3: &str = "
ALTER TABLE status_updates ADD COLUMN details TEXT;
";

/// Version 4: what each project's file said at its last import, so that the next import is
/// three-way (only what the PM changed in the file since is taken), and the file's own text,
/// so that an export keeps everything taskbridge does not model.
const V4: &str = "
CREATE TABLE import_snapshots (
    project TEXT PRIMARY KEY NOT NULL REFERENCES projects (guid) ON DELETE CASCADE,
    -- The project as taskbridge read it from the file (JSON of the model).
    project_json TEXT NOT NULL,
    -- 'mspdi' or 'json' for an imported file; 'model' for a project handed over in memory.
    format TEXT NOT NULL CHECK (format IN ('mspdi', 'json', 'model')),
    -- The file's text; NULL for a project handed over in memory.
    document TEXT,
    imported_at TEXT NOT NULL
);
";

/// Version 5: the e-mail notices owed (kept until Exchange takes them, so that a restart loses
/// none) and the rejections already announced. Rejections from before this version count as
/// announced: the service never told of them before either, and an upgrade must not send a
/// notice for each old rejection at once.
const V5: &str = "
CREATE TABLE notice_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The rejected update it announces, or NULL.
    update_id TEXT,
    -- The project whose waiting updates a digest names, or NULL.
    project TEXT,
    -- JSON array of addresses.
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- Not tried before this instant: a send under way (claimed by one process) or the wait
    -- after a failure. NULL: due now.
    not_before TEXT
);

CREATE TABLE rejection_notices (
    update_id TEXT PRIMARY KEY NOT NULL,
    queued_at TEXT NOT NULL
);
INSERT INTO rejection_notices (update_id, queued_at)
    SELECT id, COALESCE(decided_at, submitted_at) FROM status_updates WHERE state = 'rejected';
";

/// Version 6: a project's plan version, moved by every write of what a publish reads (an
/// import, an assignment's or a task's values), so that the connector can tell an unchanged
/// plan without reading it (`PmHost::plan_revision`). `revision` keeps counting imports only.
const V6: &str = "
ALTER TABLE projects ADD COLUMN plan_version INTEGER NOT NULL DEFAULT 0;
";

/// Version 7: only pending updates indexed by assignment. Every status update was an entry in
/// `status_updates_by_assignment`, at its assignment's place in the index: one more page
/// written to the WAL at each commit, for an index only the pending lookups use (the count of
/// a project's pending updates, an assignment's pending updates to supersede). Under the
/// `auto` policy no update is ever pending, so the partial index stays empty; under
/// `approval` it holds the updates waiting for a decision.
const V7: &str = "
DROP INDEX status_updates_by_assignment;
CREATE INDEX status_updates_pending ON status_updates (project, assignment_uid)
    WHERE state = 'pending';
";

/// Migration `sql` (one of [`MIGRATIONS`]) in PostgreSQL's dialect.
pub(crate) fn postgres(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_dialect_keeps_no_sqlite_only_type() {
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let pg = postgres(sql);
            assert!(!pg.contains("AUTOINCREMENT"), "migration {}", i + 1);
            assert!(!pg.contains("INTEGER"), "migration {}", i + 1);
            // Everything else is the same text: the two dialects cannot drift apart.
            assert_eq!(
                pg.replace("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "S")
                    .replace("BIGINT", "I"),
                sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "S")
                    .replace("INTEGER", "I"),
            );
        }
    }
}
