//! The embedded PM host: the default PM side of the standalone connector, for teams without a
//! PM server. It keeps projects imported from Microsoft Project XML (MSPDI) or JSON files, and
//! the task status updates that come back from mailboxes, in its own SQLite file (`pm.sqlite`
//! in the data directory) or in a PostgreSQL database ([`PmLocation`]), and implements
//! [`PmHost`] over them. Both backends run the same statements in the same transactions (see
//! `sql`).
//!
//! - **Import** ([`EmbeddedHost::import_file`]): importing is publishing. Re-importing a
//!   project with the same GUID updates it in place and stamps the fields that changed (see
//!   `merge`), so the connector's newer-wins can compare them with mailbox edits.
//! - **Status updates** ([`PmHost::submit_status_update`], [`EmbeddedHost::approve`],
//!   [`EmbeddedHost::reject`]): per project [`Policy`], `auto` or `approval`, with the work
//!   arithmetic of [`apply_changes`].
//! - **Events**: kept in the file and relayed to [`PmHost::subscribe`] receivers of every
//!   process that has the file open, so a decision taken with the CLI reaches a running
//!   connector.
//! - **PM HTTP API** ([`pm_api`], [`serve_pm_api`]) and the outgoing **webhook**
//!   ([`run_webhook`]).
//!
//! See `docs/PM-HOST.md`. This module knows nothing of EWS.

mod api;
mod apply;
mod copy;
mod merge;
mod notice_outbox;
mod ops;
mod postgres;
mod relay;
mod remove;
mod rows;
mod schema;
mod snapshot;
mod sql;
mod store;
mod types;
mod watch;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::sync::{Notify, broadcast};

use self::relay::Relay;
use self::store::Db;
use super::export::ExportFormat;
use super::host::{
    HostError, HostEvent, PlanRevision, PmHost, StatusUpdate, StatusUpdateId, Submitted,
    UnitAddress, UpdateOutcome,
};
use super::import::{ImportError, ImportOptions};
use super::model::{AssignmentKey, AssignmentUid, Project, ProjectGuid};

pub use crate::secret::Secret;
pub use api::{
    ConflictDesk, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DeskError, DeskFuture, PmApi,
    UpdateDesk, UpdateDeskFuture, pm_api, pm_updates_api, serve_pm_api,
};
pub use apply::{Applied, ApplyError, apply_changes, apply_update, field_value};
pub use copy::TableCount;
pub use notice_outbox::OwedNotice;
pub use postgres::PostgresPm;
pub use remove::RemovedRows;
pub use snapshot::{DocumentFormat, ImportedDocument};
pub(crate) use store::create_private_file;
pub use types::{
    AppliedValue, DECIDER_AUTO, DECIDER_TASKBRIDGE, FileOverride, ImportFieldChange, ImportReport,
    Policy, ProjectSummary, StaleField, StatusUpdateRecord, UnknownPolicy, UnknownState,
    UpdateFilter, UpdateState,
};
pub use watch::{WatchConfig, export_path, run_watch_folder, write_atomically};
pub use webhook::{SIGNATURE_HEADER, WebhookConfig, WebhookError, run_webhook, sign, verify};

/// The current time at the store's precision (microseconds), so that a value returned by an
/// operation equals the value read back later.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}

/// Why an embedded-host operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The project file could not be imported; the store is unchanged.
    #[error(transparent)]
    Import(Box<ImportError>),
    /// No project with this GUID is stored.
    #[error("unknown project {0}")]
    UnknownProject(ProjectGuid),
    /// The project has no assignment with this UID.
    #[error("unknown assignment {0}")]
    UnknownAssignment(AssignmentKey),
    /// No status update with this id.
    #[error("unknown status update {0}")]
    UnknownUpdate(StatusUpdateId),
    /// The update was already decided.
    #[error("status update {id} is {state}, not pending")]
    NotPending {
        /// The update.
        id: StatusUpdateId,
        /// Its state.
        state: UpdateState,
    },
    /// The update's values no longer fit the assignment; it stays pending.
    #[error("status update {id} cannot be applied: {reason}")]
    CannotApply {
        /// The update.
        id: StatusUpdateId,
        /// Why.
        reason: ApplyError,
    },
    /// A field of the update no longer holds the PM value the mailbox edit was made against;
    /// the update stays pending (approve with force to apply it anyway, or reject it).
    #[error(
        "status update {id} is stale: {} (approve with --force to apply it anyway)",
        .fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Stale {
        /// The update.
        id: StatusUpdateId,
        /// The fields whose PM value moved.
        fields: Vec<StaleField>,
    },
    /// There is no store at this path (and it was not to be created).
    #[error("no PM store at {} (import a project first)", .0.display())]
    NoStore(PathBuf),
    /// The file was written by a newer taskbridge.
    #[error("the PM store has schema version {found}; this taskbridge supports up to {supported}")]
    SchemaTooNew {
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The target of a copy already holds rows (and they were not to be replaced).
    #[error("the target PM store already holds data")]
    NotEmpty,
    /// There is no PM store in this PostgreSQL database (and it was not to be created).
    #[error("no PM store in {0} (import a project first)")]
    NoDatabaseStore(String),
    /// SQLite failed.
    #[error("PM store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL answered with an error.
    #[error("PM store: PostgreSQL: {0}")]
    Postgres(String),
    /// PostgreSQL cannot be reached (or the connection broke); a later call may succeed.
    #[error("PM store: PostgreSQL unavailable: {0}")]
    DatabaseUnavailable(String),
    /// A stored value cannot be read back.
    #[error("PM store is corrupt: {0}")]
    Corrupt(String),
    /// The project could not be written out.
    #[error(transparent)]
    Export(#[from] super::export::ExportError),
    /// The file system failed.
    #[error("PM store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store's thread has ended (or a job on it panicked).
    #[error("the PM store has shut down")]
    Closed,
}

impl From<ImportError> for EmbeddedError {
    fn from(e: ImportError) -> Self {
        EmbeddedError::Import(Box::new(e))
    }
}

impl From<EmbeddedError> for HostError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::UnknownProject(guid) => HostError::UnknownProject(guid),
            EmbeddedError::UnknownAssignment(key) => HostError::UnknownAssignment(key),
            EmbeddedError::Closed | EmbeddedError::DatabaseUnavailable(_) => {
                HostError::Unavailable(e.to_string())
            }
            // Another process held the write lock past the busy timeout: retry later.
            EmbeddedError::Sqlite(ref sqlite)
                if matches!(
                    sqlite.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                HostError::Unavailable(e.to_string())
            }
            other => HostError::Other(Box::new(other)),
        }
    }
}

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Create the file (and its directory) when missing; otherwise a missing file is
    /// [`EmbeddedError::NoStore`].
    pub create: bool,
    /// How often the store looks for events written by other processes.
    pub poll_interval: Duration,
    /// Events buffered per subscriber before a slow one starts missing them.
    pub event_capacity: usize,
    /// Queue a webhook delivery for every applied update ([`run_webhook`] sends them). Every
    /// process writing to one store must agree: the `serve` that delivers may not be the
    /// process that applied the update. Without a webhook, queueing would cost each applied
    /// update a serialisation and an insert for nothing to deliver (pruned after 7 days).
    pub webhook: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            create: true,
            poll_interval: Duration::from_secs(1),
            event_capacity: 1024,
            webhook: true,
        }
    }
}

/// The embedded PM host. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct EmbeddedHost {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    events: broadcast::Sender<HostEvent>,
    outbox: Arc<Notify>,
    /// The SQLite file; empty on PostgreSQL.
    path: PathBuf,
    /// Where the store is, for messages (never a password).
    shown: String,
    /// [`HostOptions::webhook`].
    webhook: bool,
}

impl std::fmt::Debug for EmbeddedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedHost")
            .field("store", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

/// Where the PM store lives.
#[derive(Clone, Debug)]
pub enum PmLocation {
    /// An SQLite file on this machine (the default: [`EmbeddedHost::FILE_NAME`] in the data
    /// directory).
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several instances and CLI processes may share.
    Postgres(PostgresPm),
}

impl PmLocation {
    /// A description for messages, without any password.
    pub fn describe(&self) -> String {
        match self {
            PmLocation::Sqlite(path) => format!("SQLite {}", path.display()),
            PmLocation::Postgres(pg) => postgres::describe(&pg.url),
        }
    }
}

impl EmbeddedHost {
    /// The store's file name inside the data directory.
    pub const FILE_NAME: &'static str = "pm.sqlite";

    /// Opens the store in `data_dir`, creating the directory and the file when missing.
    pub async fn open(data_dir: impl AsRef<Path>) -> Result<EmbeddedHost, EmbeddedError> {
        EmbeddedHost::open_with(
            data_dir.as_ref().join(Self::FILE_NAME),
            HostOptions::default(),
        )
        .await
    }

    /// Opens the store in `data_dir`, which must exist ([`EmbeddedError::NoStore`] otherwise).
    pub async fn open_existing(data_dir: impl AsRef<Path>) -> Result<EmbeddedHost, EmbeddedError> {
        EmbeddedHost::open_with(
            data_dir.as_ref().join(Self::FILE_NAME),
            HostOptions {
                create: false,
                ..HostOptions::default()
            },
        )
        .await
    }

    /// Opens the store at `location`: an SQLite file as [`EmbeddedHost::open_with`] opens it,
    /// or a PostgreSQL database, migrated on opening (without [`HostOptions::create`], a
    /// database holding no PM store is [`EmbeddedError::NoDatabaseStore`]).
    pub async fn open_at(
        location: &PmLocation,
        options: HostOptions,
    ) -> Result<EmbeddedHost, EmbeddedError> {
        let target = match location {
            PmLocation::Sqlite(path) => return EmbeddedHost::open_with(path, options).await,
            PmLocation::Postgres(target) => target.clone(),
        };
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let outbox = Arc::new(Notify::new());
        let relay = Relay {
            events: events.clone(),
            outbox: outbox.clone(),
        };
        let shown = location.describe();
        let db = postgres::PgDb::open(target, options.create, relay, options.poll_interval).await?;
        Ok(EmbeddedHost {
            inner: Arc::new(Inner {
                db: Db::Postgres(db),
                events,
                outbox,
                path: PathBuf::new(),
                shown,
                webhook: options.webhook,
            }),
        })
    }

    /// Opens the store file at `path`.
    pub async fn open_with(
        path: impl Into<PathBuf>,
        options: HostOptions,
    ) -> Result<EmbeddedHost, EmbeddedError> {
        let path = path.into();
        if options.create
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            tokio::fs::create_dir_all(dir).await?;
        }
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let outbox = Arc::new(Notify::new());
        let relay = Relay {
            events: events.clone(),
            outbox: outbox.clone(),
        };
        let db = Db::open(path.clone(), options.create, relay, options.poll_interval).await?;
        Ok(EmbeddedHost {
            inner: Arc::new(Inner {
                db,
                events,
                outbox,
                shown: format!("SQLite {}", path.display()),
                path,
                webhook: options.webhook,
            }),
        })
    }

    /// The store file; empty for a store on PostgreSQL.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where the store is, for messages (never a password).
    pub fn describe(&self) -> &str {
        &self.inner.shown
    }

    /// Closes the store if this is the last handle, waiting until SQLite has closed the file;
    /// otherwise only drops this handle. Dropping the last handle also closes the store, but
    /// without waiting, which a process about to exit should not rely on.
    pub async fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            inner.db.close().await;
        }
    }

    /// Imports (publishes) a project: see [`EmbeddedHost::import_with_policy`]. A new project
    /// gets the `auto` policy; a known one keeps its policy.
    pub async fn import(&self, project: Project) -> Result<ImportReport, EmbeddedError> {
        self.import_with_policy(project, None).await
    }

    /// Imports (publishes) a project and emits [`HostEvent::ProjectPublished`].
    ///
    /// A project with a GUID already stored is updated in place: assignments are added,
    /// changed or removed to match, fields whose values changed are stamped with the current
    /// time, and pending updates of removed assignments are rejected. With `policy`, the
    /// project's policy is set in the same transaction.
    pub async fn import_with_policy(
        &self,
        project: Project,
        policy: Option<Policy>,
    ) -> Result<ImportReport, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| ops::import(conn, project, None, policy, now(), false))
            .await
    }

    /// Imports a project read from `document` (see [`EmbeddedHost::import_with_policy`]),
    /// keeping the document as the project's last import: the next import of the project is
    /// compared with it (three-way), and an MSPDI export writes its changes into it. With
    /// `dry_run`, nothing is written and the report says what the import would change.
    pub async fn import_document(
        &self,
        project: Project,
        document: Option<ImportedDocument>,
        policy: Option<Policy>,
        dry_run: bool,
    ) -> Result<ImportReport, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| ops::import(conn, project, document, policy, now(), dry_run))
            .await
    }

    /// Reads a project file (MSPDI or JSON) and imports it. A file that cannot be read leaves
    /// the store untouched: the file is parsed before the store is written.
    pub async fn import_file(
        &self,
        path: impl Into<PathBuf>,
        options: ImportOptions,
        policy: Option<Policy>,
    ) -> Result<ImportReport, EmbeddedError> {
        let path = path.into();
        let (project, text) =
            tokio::task::spawn_blocking(move || super::import::read_document(path, &options))
                .await
                .map_err(|_| EmbeddedError::Closed)??;
        let document = DocumentFormat::of(&text).map(|format| ImportedDocument { format, text });
        self.import_document(project, document, policy, false).await
    }

    /// Emits [`HostEvent::ProjectPublished`] again, so that the connector publishes the project
    /// to the mailboxes again.
    pub async fn publish(&self, guid: ProjectGuid) -> Result<(), EmbeddedError> {
        self.inner
            .db
            .call(move |conn| ops::publish(conn, guid, now()))
            .await
    }

    /// Sets how the project handles status updates. Pending updates stay pending.
    pub async fn set_policy(&self, guid: ProjectGuid, policy: Policy) -> Result<(), EmbeddedError> {
        self.inner
            .db
            .call(move |conn| ops::set_policy(conn, guid, policy))
            .await
    }

    /// All stored projects, in name order.
    pub async fn project_summaries(&self) -> Result<Vec<ProjectSummary>, EmbeddedError> {
        self.inner.db.call(|conn| rows::summaries(conn)).await
    }

    /// One project's summary.
    pub async fn project_summary(
        &self,
        guid: ProjectGuid,
    ) -> Result<Option<ProjectSummary>, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| rows::summary(conn, guid))
            .await
    }

    /// A stored project with its tasks, resources and assignments.
    pub async fn load_project(&self, guid: ProjectGuid) -> Result<Option<Project>, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| rows::load_project(conn, guid))
            .await
    }

    /// Part of a stored project: the assignments `uids`, their tasks and their resources (see
    /// [`PmHost::project_part`]).
    pub async fn load_project_part(
        &self,
        guid: ProjectGuid,
        uids: Vec<AssignmentUid>,
    ) -> Result<Option<Project>, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| rows::load_project_part(conn, guid, &uids, false))
            .await
    }

    /// The project as the store holds it, with the progress from the mailboxes, written as
    /// `format` (see [`crate::pm::export`]). An MSPDI export of a project imported from an
    /// MSPDI file is that file with the changed values written into it.
    pub async fn export(
        &self,
        guid: ProjectGuid,
        format: ExportFormat,
    ) -> Result<String, EmbeddedError> {
        let (project, snapshot) = self
            .inner
            .db
            .call(move |conn| Ok((rows::load_project(conn, guid)?, snapshot::load(conn, guid)?)))
            .await?;
        let project = project.ok_or(EmbeddedError::UnknownProject(guid))?;
        Ok(match format {
            ExportFormat::Json => super::export::json::write(&project),
            ExportFormat::Mspdi => match snapshot {
                Some(snapshot::Snapshot {
                    project: imported,
                    document:
                        Some(ImportedDocument {
                            format: DocumentFormat::Mspdi,
                            text,
                        }),
                }) => super::export::mspdi::write_into(&text, &imported, &project)?,
                _ => super::export::mspdi::write(&project),
            },
        })
    }

    /// Removes a project with its tasks, resources, assignments, status updates and last
    /// import. The mailbox side is the connector's (`Engine::remove_project`): remove that
    /// first, while the project can still be read.
    pub async fn remove_project(&self, guid: ProjectGuid) -> Result<RemovedRows, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| remove::remove(conn, guid))
            .await
    }

    /// The GUIDs of all stored projects.
    pub async fn project_guids(&self) -> Result<Vec<ProjectGuid>, EmbeddedError> {
        self.inner.db.call(|conn| rows::project_guids(conn)).await
    }

    /// Accepts a status update under the project's policy (see [`PmHost::submit_status_update`]).
    ///
    /// An update whose values cannot be applied (wrong kind of value, a finish before the start,
    /// no changes) is stored as rejected and answered with
    /// [`UpdateOutcome::Rejected`]. Resubmitting the same mailbox item version (same key, item
    /// id and change key) returns the first submission's outcome.
    pub async fn submit(&self, update: StatusUpdate) -> Result<UpdateOutcome, EmbeddedError> {
        let webhook = self.inner.webhook;
        self.inner
            .db
            .call(move |conn| ops::submit(conn, update, webhook, now()))
            .await
    }

    /// Approves a pending update: applies it, records `decider`, and emits
    /// [`HostEvent::UpdateDecided`]. Refused with [`EmbeddedError::Stale`] when the plan changed
    /// a field of the update since it was submitted, unless `force`.
    pub async fn approve(
        &self,
        id: &StatusUpdateId,
        decider: &str,
        force: bool,
    ) -> Result<UpdateOutcome, EmbeddedError> {
        let (id, decider) = (id.clone(), decider.to_owned());
        let webhook = self.inner.webhook;
        self.inner
            .db
            .call(move |conn| ops::approve(conn, &id, &decider, force, webhook, now()))
            .await
    }

    /// Rejects a pending update, records `decider` and `reason`, and emits
    /// [`HostEvent::UpdateDecided`] with the PM values the mailbox should show again.
    pub async fn reject(
        &self,
        id: &StatusUpdateId,
        decider: &str,
        reason: Option<&str>,
    ) -> Result<UpdateOutcome, EmbeddedError> {
        let (id, decider, reason) = (id.clone(), decider.to_owned(), reason.map(str::to_owned));
        self.inner
            .db
            .call(move |conn| ops::reject(conn, &id, &decider, reason.as_deref(), now()))
            .await
    }

    /// Status updates matching `filter`, oldest first.
    pub async fn status_updates(
        &self,
        filter: UpdateFilter,
    ) -> Result<Vec<StatusUpdateRecord>, EmbeddedError> {
        self.inner
            .db
            .call(move |conn| rows::list_updates(conn, &filter))
            .await
    }

    /// One status update.
    pub async fn status_update(
        &self,
        id: &StatusUpdateId,
    ) -> Result<Option<StatusUpdateRecord>, EmbeddedError> {
        let id = id.clone();
        self.inner
            .db
            .call(move |conn| rows::load_update(conn, &id))
            .await
    }

    /// Woken when the webhook outbox may have new rows.
    pub(crate) fn outbox_notify(&self) -> Arc<Notify> {
        self.inner.outbox.clone()
    }

    /// Runs `f` on the store's thread.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, EmbeddedError>
    where
        F: FnOnce(&dyn sql::Conn) -> Result<R, EmbeddedError> + Send + 'static,
        R: Send + 'static,
    {
        self.inner.db.call(f).await
    }
}

impl PmHost for EmbeddedHost {
    async fn projects(&self) -> Result<Vec<ProjectGuid>, HostError> {
        Ok(self.project_guids().await?)
    }

    async fn project(&self, guid: ProjectGuid) -> Result<Option<Project>, HostError> {
        Ok(self.load_project(guid).await?)
    }

    async fn project_part(
        &self,
        guid: ProjectGuid,
        uids: &[AssignmentUid],
    ) -> Result<Option<Project>, HostError> {
        Ok(self.load_project_part(guid, uids.to_vec()).await?)
    }

    async fn project_units(
        &self,
        guid: ProjectGuid,
    ) -> Result<Option<Vec<UnitAddress>>, HostError> {
        Ok(self
            .call(move |c| rows::sync_unit_addresses(c, guid))
            .await?)
    }

    async fn plan_revision(&self, guid: ProjectGuid) -> Result<Option<PlanRevision>, HostError> {
        Ok(self
            .call(move |c| rows::plan_revision(c, guid))
            .await?
            .map(PlanRevision))
    }

    async fn submit_status_update(&self, update: StatusUpdate) -> Result<UpdateOutcome, HostError> {
        Ok(self.submit(update).await?)
    }

    /// In one transaction (`ops::submit_many`).
    async fn submit_status_updates(&self, updates: Vec<StatusUpdate>) -> Submitted {
        if updates.is_empty() {
            return Submitted::default();
        }
        let webhook = self.inner.webhook;
        let (outcomes, stopped) = match self
            .inner
            .db
            .call(move |conn| Ok(ops::submit_many(conn, updates, webhook, now())))
            .await
        {
            Ok(taken) => taken,
            Err(e) => (Vec::new(), Some(e)),
        };
        Submitted {
            outcomes,
            stopped: stopped.map(HostError::from),
        }
    }

    /// Events of this process's handles as soon as they are committed (before the call that
    /// caused them returns), and of other processes on the same file within
    /// [`HostOptions::poll_interval`].
    fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.events.subscribe()
    }
}
