//! Choosing the state store at run time: an SQLite file (the default) or a PostgreSQL database.

use std::path::PathBuf;

use super::*;
use crate::secret::Secret;

/// Where the sync state lives.
#[derive(Clone, Debug)]
pub enum StateLocation {
    /// One SQLite file on this machine.
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several instances may share.
    Postgres {
        /// `postgres://user@host:port/database?sslmode=require`, or libpq key-value pairs.
        url: String,
        /// The password, when it is not in the URL (from a variable or a file).
        password: Option<Secret>,
        /// TLS settings.
        tls: PostgresTls,
    },
}

impl StateLocation {
    /// Opens the store. A PostgreSQL database is connected to (and migrated) on first use, so
    /// that building a connector needs no I/O; SQLite files are opened and migrated now.
    pub fn open(&self) -> Result<AnyStateStore, StateError> {
        Ok(match self {
            StateLocation::Sqlite(path) => AnyStateStore::Sqlite(SqliteStore::open(path)?),
            StateLocation::Postgres { url, password, tls } => AnyStateStore::Postgres(
                PostgresStore::new(url, password.as_ref().map(|p| p.expose()), tls)?,
            ),
        })
    }

    /// A description for logs and `status`, without any password.
    pub fn describe(&self) -> String {
        match self {
            StateLocation::Sqlite(path) => format!("SQLite {}", path.display()),
            StateLocation::Postgres { url, .. } => format!("PostgreSQL {}", without_password(url)),
        }
    }
}

/// `url` with any password replaced by `***` (URL form and key-value form).
pub fn without_password(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some((userinfo, host)) = rest.split_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}{user}:***@{host}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The store chosen by a [`StateLocation`].
#[derive(Clone, Debug)]
pub enum AnyStateStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
}

/// Calls the same method on whichever store it is.
macro_rules! either {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStateStore::Sqlite($s) => $call.await,
            AnyStateStore::Postgres($s) => $call.await,
        }
    };
}

impl StateStore for AnyStateStore {
    async fn assignment(&self, key: &AssignmentKey) -> Result<Option<AssignmentState>, StateError> {
        either!(self, s => s.assignment(key))
    }

    async fn project_assignments(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        either!(self, s => s.project_assignments(project))
    }

    async fn assignment_mailboxes(
        &self,
        project: ProjectGuid,
    ) -> Result<Vec<(AssignmentUid, MailboxAddress)>, StateError> {
        either!(self, s => s.assignment_mailboxes(project))
    }

    async fn mailbox_assignments(
        &self,
        mailbox: &MailboxAddress,
        project: Option<ProjectGuid>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        either!(self, s => s.mailbox_assignments(mailbox, project))
    }

    async fn pending_approvals(&self) -> Result<Vec<AssignmentState>, StateError> {
        either!(self, s => s.pending_approvals())
    }

    async fn mailbox_items(
        &self,
        mailbox: &MailboxAddress,
    ) -> Result<Vec<TrackedItem>, StateError> {
        either!(self, s => s.mailbox_items(mailbox))
    }

    async fn assignments_by_items(
        &self,
        mailbox: &MailboxAddress,
        item_ids: Vec<String>,
    ) -> Result<Vec<AssignmentState>, StateError> {
        either!(self, s => s.assignments_by_items(mailbox, item_ids))
    }

    async fn transact(&self, transaction: Transaction) -> Result<Vec<i64>, StateError> {
        either!(self, s => s.transact(transaction))
    }

    async fn open_journal(&self, entries: Vec<JournalEntry>) -> Result<Vec<i64>, StateError> {
        either!(self, s => s.open_journal(entries))
    }

    async fn unfinished_journal(&self) -> Result<Vec<JournalEntry>, StateError> {
        either!(self, s => s.unfinished_journal())
    }

    async fn mailbox(&self, mailbox: &MailboxAddress) -> Result<Option<MailboxState>, StateError> {
        either!(self, s => s.mailbox(mailbox))
    }

    async fn mailboxes(&self) -> Result<Vec<MailboxState>, StateError> {
        either!(self, s => s.mailboxes())
    }

    async fn update_mailbox(
        &self,
        mailbox: &MailboxAddress,
        change: impl FnOnce(&mut MailboxState) + Send + 'static,
    ) -> Result<MailboxState, StateError> {
        either!(self, s => s.update_mailbox(mailbox, change))
    }

    async fn note_heard(
        &self,
        heard: Vec<(MailboxAddress, Option<String>)>,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        either!(self, s => s.note_heard(heard, at))
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StateError> {
        either!(self, s => s.append_audit(records))
    }

    async fn audit(&self, project: Option<ProjectGuid>) -> Result<Vec<AuditRecord>, StateError> {
        either!(self, s => s.audit(project))
    }

    async fn forget_project(&self, project: ProjectGuid) -> Result<u64, StateError> {
        either!(self, s => s.forget_project(project))
    }

    async fn publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
    ) -> Result<Option<PublishMark>, StateError> {
        either!(self, s => s.publish_mark(project, scope))
    }

    async fn reserve_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
    ) -> Result<(), StateError> {
        either!(self, s => s.reserve_publish_mark(project, scope, token))
    }

    async fn confirm_publish_mark(
        &self,
        project: ProjectGuid,
        scope: MarkScope,
        token: i64,
        mark: PublishMark,
    ) -> Result<bool, StateError> {
        either!(self, s => s.confirm_publish_mark(project, scope, token, mark))
    }

    async fn heartbeat(
        &self,
        instance: &InstanceId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<InstanceRow>, StateError> {
        either!(self, s => s.heartbeat(instance, now, until))
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), StateError> {
        either!(self, s => s.remove_instance(instance))
    }

    async fn leases(&self) -> Result<Vec<Lease>, StateError> {
        either!(self, s => s.leases())
    }

    async fn add_leases(&self, mailboxes: Vec<MailboxAddress>) -> Result<(), StateError> {
        either!(self, s => s.add_leases(mailboxes))
    }

    async fn take_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>, StateError> {
        either!(self, s => s.take_lease(mailbox, instance, generation, now, until))
    }

    async fn renew_leases(
        &self,
        instance: &InstanceId,
        leases: &[(MailboxAddress, i64)],
        until: DateTime<Utc>,
    ) -> Result<std::collections::BTreeSet<MailboxAddress>, StateError> {
        either!(self, s => s.renew_leases(instance, leases, until))
    }

    async fn release_lease(
        &self,
        mailbox: &MailboxAddress,
        instance: &InstanceId,
        generation: i64,
    ) -> Result<(), StateError> {
        either!(self, s => s.release_lease(mailbox, instance, generation))
    }

    async fn enqueue_notice(&self, notice: QueuedNotice) -> Result<(), StateError> {
        either!(self, s => s.enqueue_notice(notice))
    }

    fn listen_notices(&self) -> Option<tokio::sync::mpsc::Receiver<MailboxAddress>> {
        match self {
            AnyStateStore::Sqlite(s) => s.listen_notices(),
            AnyStateStore::Postgres(p) => StateStore::listen_notices(p),
        }
    }

    async fn take_notices(
        &self,
        mailboxes: Vec<MailboxAddress>,
    ) -> Result<Vec<QueuedNotice>, StateError> {
        either!(self, s => s.take_notices(mailboxes))
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_never_reach_a_description() {
        assert_eq!(
            without_password("postgres://tb:s3cret@db.example:5432/tb?sslmode=require"),
            "postgres://tb:***@db.example:5432/tb?sslmode=require"
        );
        assert_eq!(
            without_password("postgresql://tb@db/tb"),
            "postgresql://tb@db/tb"
        );
        assert_eq!(
            without_password("host=db user=tb password=s3cret dbname=tb"),
            "host=db user=tb password=*** dbname=tb"
        );
    }
}
