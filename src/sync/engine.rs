//! The engine's shared parts: who it talks to, per-mailbox locks, project views, metrics, the
//! journal of intended writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::config::SyncConfig;
use super::mailbox::{MailboxError, MailboxStore};
use super::metrics::Metrics;
use super::notify::Runtime;
use crate::mapping::{FieldTable, MailField, MailValues, owner_zone};
use crate::pm::{
    Assignment, AssignmentField, AssignmentKey, AssignmentUid, HostError, PmHost, Project,
    ProjectGuid, ResourceUid, SyncUnit, TaskUid,
};
use crate::state::{
    Commit, Fence, InstanceId, JournalEntry, LeaseTiming, MailboxAddress, StateError, StateStore,
    Transaction, WriteKind,
};

/// Errors that stop a whole operation (item failures are counted in reports instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The PM host failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The mailbox store failed for a whole call.
    #[error("mailbox {mailbox}: {source}")]
    Mailbox {
        /// The mailbox.
        mailbox: String,
        /// What failed.
        #[source]
        source: MailboxError,
    },
    /// The project is not published on the PM side.
    #[error("project {0} is not published")]
    UnknownProject(ProjectGuid),
}

impl SyncError {
    pub(crate) fn mailbox(mailbox: &MailboxAddress, source: MailboxError) -> Self {
        SyncError::Mailbox {
            mailbox: mailbox.to_string(),
            source,
        }
    }
}

/// A project with its sync units indexed by assignment.
#[derive(Debug)]
pub struct ProjectView {
    /// The project.
    pub project: Project,
    /// For each assignment that is a sync unit: indices of the assignment, its task and its
    /// resource in the project.
    units: HashMap<AssignmentUid, (usize, usize, usize)>,
    /// The sync units in the project's order, so that every run sends the same requests.
    order: Vec<AssignmentUid>,
}

impl ProjectView {
    /// Indexes the sync units of `project`.
    pub fn new(project: Project) -> Self {
        let task_at: HashMap<TaskUid, usize> = project
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.uid, i))
            .collect();
        let resource_at: HashMap<ResourceUid, usize> = project
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.uid, i))
            .collect();
        let assignment_at: HashMap<AssignmentUid, usize> = project
            .assignments
            .iter()
            .enumerate()
            .map(|(i, a)| (a.uid, i))
            .collect();
        let listed: Vec<(AssignmentUid, (usize, usize, usize))> = project
            .sync_units()
            .iter()
            .filter_map(|u| {
                Some((
                    u.assignment.uid,
                    (
                        *assignment_at.get(&u.assignment.uid)?,
                        *task_at.get(&u.task.uid)?,
                        *resource_at.get(&u.resource.uid)?,
                    ),
                ))
            })
            .collect();
        let order = listed.iter().map(|(uid, _)| *uid).collect();
        ProjectView {
            project,
            units: listed.into_iter().collect(),
            order,
        }
    }

    /// The sync unit of an assignment, if it is one.
    pub fn unit(&self, uid: AssignmentUid) -> Option<SyncUnit<'_>> {
        let &(a, t, r) = self.units.get(&uid)?;
        let resource = &self.project.resources[r];
        Some(SyncUnit {
            key: self.project.key(uid),
            assignment: &self.project.assignments[a],
            task: &self.project.tasks[t],
            resource,
            email: resource.email.as_deref().map(str::trim).unwrap_or_default(),
        })
    }

    /// Every sync unit, in the project's order.
    pub fn units(&self) -> impl Iterator<Item = SyncUnit<'_>> {
        self.order.iter().filter_map(|uid| self.unit(*uid))
    }

    /// The mailbox values the PM side wants for an assignment, with the owner's zone.
    pub fn desired(&self, table: &FieldTable, uid: AssignmentUid) -> Option<(MailValues, Tz)> {
        let unit = self.unit(uid)?;
        let zone = owner_zone(&self.project, &unit);
        Some((table.to_mail(&self.project, &unit, zone), zone))
    }

    /// The view with one assignment replaced (after the host applied a status update).
    pub fn with_assignment(&self, assignment: Assignment) -> ProjectView {
        let mut project = self.project.clone();
        let Some(a) = project.assignment_mut(assignment.uid) else {
            return ProjectView::new(project);
        };
        // Which assignments are sync units, and where, depends only on each one's task and
        // resource: with those unchanged the index stands as it is.
        let same_place =
            a.task_uid == assignment.task_uid && a.resource_uid == assignment.resource_uid;
        *a = assignment;
        if !same_place {
            return ProjectView::new(project);
        }
        ProjectView {
            project,
            units: self.units.clone(),
            order: self.order.clone(),
        }
    }
}

/// The PM modification time of the field behind a mailbox field.
pub fn pm_modified(unit: &SyncUnit<'_>, field: MailField) -> Option<DateTime<Utc>> {
    let pm_field = match field {
        MailField::Subject => AssignmentField::Name,
        MailField::Body => AssignmentField::Notes,
        MailField::Importance => AssignmentField::Priority,
        MailField::StartDate => AssignmentField::Start,
        MailField::DueDate => AssignmentField::Finish,
        MailField::TotalWork => AssignmentField::Work,
        MailField::ActualWork => AssignmentField::ActualWork,
        MailField::PercentComplete => AssignmentField::PercentWorkComplete,
        MailField::Categories => return None,
    };
    unit.assignment.modified.get(pm_field)
}

/// Copies one field's value from `src` to `dst`.
pub fn copy_field(dst: &mut MailValues, src: &MailValues, field: MailField) {
    match field {
        MailField::Subject => dst.subject.clone_from(&src.subject),
        MailField::Body => dst.body.clone_from(&src.body),
        MailField::Importance => dst.importance = src.importance,
        MailField::StartDate => dst.start_date = src.start_date,
        MailField::DueDate => dst.due_date = src.due_date,
        MailField::TotalWork => dst.total_work = src.total_work,
        MailField::ActualWork => dst.actual_work = src.actual_work,
        MailField::PercentComplete => {
            dst.percent_complete = src.percent_complete;
            dst.status_note = src.status_note;
        }
        MailField::Categories => dst.categories.clone_from(&src.categories),
    }
}

/// A short text of one field's value, for the audit log.
pub fn field_text(values: &MailValues, field: MailField) -> String {
    fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    }
    match field {
        MailField::Subject => opt(&values.subject),
        MailField::Body => values
            .body
            .as_deref()
            .map(|b| b.chars().take(60).collect())
            .unwrap_or_else(|| "-".into()),
        MailField::Importance => opt(&values.importance.map(|i| i.as_str())),
        MailField::StartDate => opt(&values.start_date),
        MailField::DueDate => opt(&values.due_date),
        // Hours with two decimals, as `updates` shows PM work.
        MailField::TotalWork => opt(&values.total_work.map(minutes_as_hours)),
        MailField::ActualWork => opt(&values.actual_work.map(minutes_as_hours)),
        MailField::PercentComplete => {
            let mut s = opt(&values.percent_complete.map(|p| p.to_string()));
            if let Some(note) = values.status_note {
                s.push_str(&format!(" ({})", note.as_str()));
            }
            s
        }
        MailField::Categories => values.categories.join(", "),
    }
}

/// Whole minutes as hours with two decimals (`450` is `7.50h`).
pub fn minutes_as_hours(minutes: i32) -> String {
    format!("{:.2}h", f64::from(minutes) / 60.0)
}

/// The sync engine: the steps publish, notified, request, decide, audit, status update, write
/// back, settle and reconcile of the list in the [`sync`](super) module doc.
///
/// Cheap to clone; clones share everything.
pub struct Engine<H, M, S> {
    pub(crate) inner: Arc<Inner<H, M, S>>,
}

impl<H, M, S> Clone for Engine<H, M, S> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
        }
    }
}

pub(crate) struct Inner<H, M, S> {
    pub host: H,
    pub mailboxes: M,
    pub state: S,
    pub table: Arc<FieldTable>,
    pub config: SyncConfig,
    /// What a publish mark records of the mapping and settings ([`crate::state::PublishMark`]).
    pub mapping_fingerprint: String,
    pub metrics: Arc<Metrics>,
    /// Notification queue and subscription map.
    pub runtime: Runtime,
    /// Whether a publish of every project runs (`Engine::publish_all`: one at a time).
    pub republishing: AtomicBool,
    /// A publish of every project was asked for while one ran: the running one goes round
    /// once more if it skipped a mailbox (`republish_skipped`), since a lease taken meanwhile
    /// brings mailboxes it did not publish.
    pub republish_again: AtomicBool,
    /// A publish skipped a mailbox whose lease was held elsewhere or not yet taken.
    pub republish_skipped: AtomicBool,
    /// The item versions this process wrote lately, to tell the echo of its writes.
    pub own_writes: super::echo::OwnWrites,
    /// What this process knows of each mailbox's listings (a mailbox absent: nothing yet).
    /// Read by every pass over named items, so that it needs no read of the mailbox's row.
    pub listings: Mutex<HashMap<MailboxAddress, Listing>>,
    /// Becomes true once [`Engine::run`] has taken its first round of leases.
    pub first_lease_round: tokio::sync::watch::Sender<bool>,
    /// One lock per mailbox: publish, inbound changes and mapping back never work on the same
    /// mailbox at once. A std mutex guards the map (held only to look up or insert).
    locks: Mutex<HashMap<MailboxAddress, Arc<tokio::sync::Mutex<()>>>>,
    /// The debounce and its cap, which a running engine may be given anew
    /// ([`Engine::set_debounce`]); starts as `config.debounce` / `config.max_debounce`.
    debounce: Mutex<(Duration, Duration)>,
    /// This instance's mailbox leases, once it joined a cluster ([`Engine::join_cluster`]);
    /// without, the engine works on every mailbox and fences nothing (one-shot commands).
    pub cluster: std::sync::OnceLock<Arc<Cluster>>,
}

/// What this process knows of a mailbox's listings (SyncFolderItems passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// The mailbox has a stored sync state (its last listing here stored it, or a read of its
    /// row found one), and no listing here left an item to take again since. Nothing clears a
    /// stored sync state (a rejected one is replaced by a full pass's), so once known it stays
    /// true.
    Stored,
    /// The last listing left an item to take again (its sync state was not moved): the
    /// next pass lists, even one notified of item versions only, so that the item is retried
    /// as soon as it would have been without passes over named items.
    Owed,
}

/// An instance's part in a cluster: its id, and the leases it holds.
pub(crate) struct Cluster {
    /// This instance.
    pub me: InstanceId,
    /// Lease length and renewal period.
    pub timing: LeaseTiming,
    /// The leases held after the last round, with their generations.
    held: Mutex<std::collections::BTreeMap<MailboxAddress, i64>>,
    /// Until when the leases are surely held: the start of the last successful round plus the
    /// lease length. Past it (the database unreachable), nothing is held.
    valid_until: Mutex<Option<tokio::time::Instant>>,
}

impl Cluster {
    /// Whether `mailbox` is held now.
    pub fn holds(&self, mailbox: &MailboxAddress) -> bool {
        self.generation(mailbox).is_some()
    }

    /// The generation `mailbox` is held at, if it is held now.
    pub fn generation(&self, mailbox: &MailboxAddress) -> Option<i64> {
        let valid = self
            .valid_until
            .lock()
            .expect("lease lock poisoned")
            .is_some_and(|t| tokio::time::Instant::now() < t);
        if !valid {
            return None;
        }
        self.held
            .lock()
            .expect("lease lock poisoned")
            .get(mailbox)
            .copied()
    }

    /// The leases held (whatever their validity), for the next round.
    pub fn held(&self) -> std::collections::BTreeMap<MailboxAddress, i64> {
        self.held.lock().expect("lease lock poisoned").clone()
    }

    /// A round that started at `started` left `held`.
    pub fn set(
        &self,
        held: std::collections::BTreeMap<MailboxAddress, i64>,
        started: tokio::time::Instant,
    ) {
        *self.held.lock().expect("lease lock poisoned") = held;
        *self.valid_until.lock().expect("lease lock poisoned") = Some(started + self.timing.lease);
    }

    /// `mailbox` turned out lost (a fenced commit was refused).
    pub fn drop_lease(&self, mailbox: &MailboxAddress) {
        self.held
            .lock()
            .expect("lease lock poisoned")
            .remove(mailbox);
    }
}

/// What decides, beside the plan and the stored rows, what a publish writes: the field table,
/// the rule for tasks deleted in the mailbox, and the release (whose mapping code may differ).
/// A publish mark made under another fingerprint is not trusted.
fn mapping_fingerprint(table: &FieldTable, config: &SyncConfig) -> String {
    use sha2::{Digest, Sha256};
    let text = format!(
        "{}|{table:?}|{:?}",
        env!("CARGO_PKG_VERSION"),
        config.deleted_task
    );
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// An engine over a PM host, a mailbox store and a state store.
    pub fn new(host: H, mailboxes: M, state: S, table: FieldTable, config: SyncConfig) -> Self {
        Engine {
            inner: Arc::new(Inner {
                host,
                mailboxes,
                state,
                mapping_fingerprint: mapping_fingerprint(&table, &config),
                table: Arc::new(table),
                config: config.clone(),
                metrics: Arc::new(Metrics::default()),
                runtime: Runtime::new(config.queue_capacity),
                republishing: AtomicBool::new(false),
                republish_again: AtomicBool::new(false),
                republish_skipped: AtomicBool::new(false),
                own_writes: Default::default(),
                listings: Mutex::new(HashMap::new()),
                first_lease_round: tokio::sync::watch::Sender::new(false),
                locks: Mutex::new(HashMap::new()),
                debounce: Mutex::new((config.debounce, config.max_debounce)),
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Makes this engine one instance of a cluster sharing the state store: from now on it
    /// works only on the mailboxes whose leases it holds (taken by [`Engine::run`]), and
    /// every commit about a mailbox is fenced by its lease. With one instance (SQLite) it holds
    /// every lease. Call it before `run`; a second call changes nothing.
    pub fn join_cluster(&self, me: InstanceId, timing: LeaseTiming) {
        self.hold_leases(me, timing);
        self.inner.runtime.set_clustered();
    }

    /// Runs this engine as the one instance of a store no other process shares (an SQLite
    /// file): the same lease code path as [`Engine::join_cluster`], holding every lease, but a
    /// notification on a subscription unknown here is refused (Unsubscribe) at once, since no
    /// other instance can know it. Call it before `run`.
    pub fn run_alone(&self, me: InstanceId, timing: LeaseTiming) {
        self.hold_leases(me, timing);
    }

    fn hold_leases(&self, me: InstanceId, timing: LeaseTiming) {
        let _ = self.inner.cluster.set(Arc::new(Cluster {
            me,
            timing,
            held: Mutex::default(),
            valid_until: Mutex::new(None),
        }));
    }

    /// This instance's id, when it is part of a cluster.
    pub fn instance(&self) -> Option<InstanceId> {
        self.inner.cluster.get().map(|c| c.me.clone())
    }

    /// The mailboxes whose leases this instance holds now (`None` outside a cluster).
    pub fn leases_held(&self) -> Option<Vec<MailboxAddress>> {
        let c = self.inner.cluster.get()?;
        Some(c.held().into_keys().filter(|m| c.holds(m)).collect())
    }

    /// Whether this instance may work on `mailbox` now: it holds its lease, or it is not part
    /// of a cluster.
    /// Returns once [`Engine::run`] has taken its first round of leases (at once outside a
    /// cluster): work on every mailbox started earlier would find none held and skip them all.
    pub(crate) async fn leases_taken(&self) {
        if self.inner.cluster.get().is_none() {
            return;
        }
        let mut ready = self.inner.first_lease_round.subscribe();
        // The sender lives as long as the engine, which `self` keeps alive.
        let _ = ready.wait_for(|taken| *taken).await;
    }

    pub(crate) fn holds(&self, mailbox: &MailboxAddress) -> bool {
        self.inner.cluster.get().is_none_or(|c| c.holds(mailbox))
    }

    /// Commits to the state store, fenced by the leases of the mailboxes of the rows put: a
    /// lease lost meanwhile refuses the whole commit ([`StateError::LeaseLost`]) and the
    /// engine stops working on that mailbox.
    pub(crate) async fn commit(&self, commit: Commit) -> Result<(), SyncError> {
        self.transact(Transaction {
            commit,
            ..Transaction::default()
        })
        .await
        .map(drop)
    }

    /// Commits a [`Transaction`] (rows, audit records, journal entries opened) to the state
    /// store in one transaction, fenced like [`Engine::commit`] by the leases of the mailboxes
    /// of its rows and of the writes it journals; returns the ids of the entries opened.
    pub(crate) async fn transact(
        &self,
        mut transaction: Transaction,
    ) -> Result<Vec<i64>, SyncError> {
        let commit = &mut transaction.commit;
        if let Some(c) = self.inner.cluster.get() {
            let mut mailboxes: Vec<&MailboxAddress> = commit
                .put
                .iter()
                .map(|s| &s.mailbox)
                .chain(transaction.open_journal.iter().map(|e| &e.mailbox))
                .collect();
            mailboxes.sort();
            mailboxes.dedup();
            let mut fences = Vec::with_capacity(mailboxes.len());
            for m in mailboxes {
                let Some(generation) = c.generation(m) else {
                    self.lost_lease(m);
                    return Err(StateError::LeaseLost {
                        mailbox: m.to_string(),
                    }
                    .into());
                };
                fences.push(Fence {
                    mailbox: m.clone(),
                    owner: c.me.clone(),
                    generation,
                });
            }
            commit.fences = fences;
        }
        match self.inner.state.transact(transaction).await {
            Err(StateError::LeaseLost { mailbox }) => {
                self.lost_lease(&MailboxAddress::new(&mailbox));
                Err(StateError::LeaseLost { mailbox }.into())
            }
            other => Ok(other?),
        }
    }

    /// Stops working on `mailbox`: its lease is gone.
    pub(crate) fn lost_lease(&self, mailbox: &MailboxAddress) {
        if let Some(c) = self.inner.cluster.get() {
            c.drop_lease(mailbox);
        }
        self.inner.runtime.forget(mailbox);
    }

    /// Changes the quiet time after a notification and its cap under a stream of
    /// notifications, for the passes not yet started (the cap is at least the quiet time). The
    /// loop checks for due mailboxes at the pace the starting debounce set (a quarter of it,
    /// 5 to 250 ms), so a shorter debounce can wait up to that much longer.
    pub fn set_debounce(&self, debounce: Duration, max_debounce: Duration) {
        *self.inner.debounce.lock().expect("debounce lock poisoned") =
            (debounce, max_debounce.max(debounce));
    }

    /// The debounce and its cap in force.
    pub fn debounce(&self) -> (Duration, Duration) {
        *self.inner.debounce.lock().expect("debounce lock poisoned")
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// The PM host.
    pub fn host(&self) -> &H {
        &self.inner.host
    }

    /// The state store.
    pub fn state(&self) -> &S {
        &self.inner.state
    }

    /// The mailbox store.
    pub fn mailboxes(&self) -> &M {
        &self.inner.mailboxes
    }

    /// The field table.
    pub fn table(&self) -> &FieldTable {
        &self.inner.table
    }

    /// The settings.
    pub fn config(&self) -> &SyncConfig {
        &self.inner.config
    }

    /// Locks a mailbox for the duration of the returned guard.
    pub(crate) async fn lock(&self, mailbox: &MailboxAddress) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.inner.locks.lock().expect("mailbox lock map poisoned");
            Arc::clone(map.entry(mailbox.clone()).or_default())
        };
        lock.lock_owned().await
    }

    /// Records in the journal that writes of `kind` to the items of `keys` are about to be
    /// sent (each key once), so that a crash before their commit is resumed; returns the
    /// entries the commit of their outcome closes.
    pub(crate) async fn open_journal(
        &self,
        mailbox: &MailboxAddress,
        keys: impl Iterator<Item = AssignmentKey>,
        kind: WriteKind,
    ) -> Result<Vec<i64>, SyncError> {
        let entries = journal_entries(mailbox, keys, kind);
        Ok(self.inner.state.open_journal(entries).await?)
    }

    /// Loads a project and indexes it.
    pub(crate) async fn view(&self, project: ProjectGuid) -> Result<Arc<ProjectView>, SyncError> {
        match self.inner.host.project(project).await? {
            Some(p) => Ok(Arc::new(ProjectView::new(p))),
            None => Err(SyncError::UnknownProject(project)),
        }
    }
}

/// Journal entries for writes of `kind` to the items of `keys` in `mailbox`, each key once.
pub(crate) fn journal_entries(
    mailbox: &MailboxAddress,
    keys: impl Iterator<Item = AssignmentKey>,
    kind: WriteKind,
) -> Vec<JournalEntry> {
    let at = Utc::now();
    let mut seen = HashSet::new();
    keys.filter(|k| seen.insert(*k))
        .map(|key| JournalEntry {
            id: 0,
            mailbox: mailbox.clone(),
            key,
            kind,
            at,
        })
        .collect()
}

/// Projects loaded during one pass, so each is fetched once.
#[derive(Default)]
pub(crate) struct ProjectCache {
    views: HashMap<ProjectGuid, Option<Arc<ProjectView>>>,
}

impl ProjectCache {
    pub async fn get<H: PmHost, M: MailboxStore, S: StateStore>(
        &mut self,
        engine: &Engine<H, M, S>,
        key: &AssignmentKey,
    ) -> Result<Option<Arc<ProjectView>>, SyncError> {
        if let Some(v) = self.views.get(&key.project) {
            return Ok(v.clone());
        }
        let view = match engine.view(key.project).await {
            Ok(v) => Some(v),
            Err(SyncError::UnknownProject(_)) => None,
            Err(e) => return Err(e),
        };
        self.views.insert(key.project, view.clone());
        Ok(view)
    }

    /// Reads, per project, only the assignments of `keys` (with their tasks and resources)
    /// from the host, so that deciding a few items never loads a whole plan. Keys looked up
    /// later must be among these.
    pub async fn load_parts<H: PmHost, M: MailboxStore, S: StateStore>(
        &mut self,
        engine: &Engine<H, M, S>,
        keys: impl Iterator<Item = AssignmentKey>,
    ) -> Result<(), SyncError> {
        let mut by_project: HashMap<ProjectGuid, Vec<AssignmentUid>> = HashMap::new();
        for key in keys {
            by_project
                .entry(key.project)
                .or_default()
                .push(key.assignment);
        }
        for (project, uids) in by_project {
            let view = engine
                .inner
                .host
                .project_part(project, &uids)
                .await?
                .map(|p| Arc::new(ProjectView::new(p)));
            self.views.insert(project, view);
        }
        Ok(())
    }

    /// The cached view of `project`, if one was read: the latest the pass knows.
    pub fn latest(&self, project: ProjectGuid) -> Option<Arc<ProjectView>> {
        self.views.get(&project).cloned().flatten()
    }

    /// Replaces a cached project after the host changed it.
    pub fn put(&mut self, view: Arc<ProjectView>) {
        self.views.insert(view.project.guid, Some(view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappingConfig;
    use crate::sync::config::DeletedTaskRule;

    // A publish mark made under one mapping must not skip a publish under another.
    #[test]
    fn the_mapping_fingerprint_moves_with_what_shapes_a_publish() {
        let table = FieldTable::default();
        let config = SyncConfig::default();
        let fingerprint = mapping_fingerprint(&table, &config);
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(
            fingerprint,
            mapping_fingerprint(&FieldTable::default(), &SyncConfig::default()),
            "the same settings, the same fingerprint"
        );
        let recreate = SyncConfig {
            deleted_task: DeletedTaskRule::Recreate,
            ..SyncConfig::default()
        };
        assert_ne!(fingerprint, mapping_fingerprint(&table, &recreate));
        let subject = FieldTable::from_config(&MappingConfig {
            subject_template: "{task}".into(),
            ..MappingConfig::default()
        })
        .expect("valid mapping");
        assert_ne!(fingerprint, mapping_fingerprint(&subject, &config));
    }
}
