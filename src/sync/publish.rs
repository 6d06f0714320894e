//! Step publish of the list in the [`sync`](super) module doc: create the tasks of new
//! assignments, update only the fields the plan changed, delete the tasks of assignments that
//! left the project. An item found changed in its mailbox meanwhile (a stale change key) goes
//! through the request and decide steps like a notified one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use tracing::{debug, info, instrument, warn};

use super::decide::Mode;
use super::engine::{Engine, ProjectView, SyncError, copy_field, journal_entries, pm_modified};
use super::mailbox::{ItemFailure, ItemWrite, MailboxError, MailboxStore};
use super::metrics::Metrics;
use super::report::{InboundReport, PublishReport};
use crate::mapping::{MailField, MailValues, changed_fields};
use crate::pm::{AssignmentKey, AssignmentUid, PmHost, ProjectGuid, UnitAddress};
use crate::state::{
    AssignmentState, Baseline, Commit, MailboxAddress, MarkScope, PublishMark, StateStore,
    SyncStatus, Transaction, WriteKind,
};

/// Told how far a publish is: assignments handled so far, and in all.
pub type Progress = std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Options of one publish.
#[derive(Clone, Default)]
pub struct PublishOptions {
    /// Delete even beyond the mass-delete guard, and make moves whose old task could not be
    /// deleted (an old mailbox that can no longer be reached), leaving that task behind.
    pub force: bool,
    /// Compare every assignment, even where a publish mark says the last publish at the same
    /// plan revision left it in step (the marks are still made again).
    pub full: bool,
    /// Called as mailboxes finish (for a progress bar).
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishOptions")
            .field("force", &self.force)
            .field("full", &self.full)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The publish mark a publish works toward: the plan revision it read before the plan, and
/// the token of its reservations ([`StateStore::reserve_publish_mark`]).
struct Marking {
    revision: String,
    token: i64,
    /// Whether marks found may skip a scope (not with [`PublishOptions::full`]).
    trusted: bool,
}

impl Marking {
    /// Whether `mark` says a publish at this revision would find nothing to do.
    fn matches(&self, mark: &PublishMark, fingerprint: &str) -> bool {
        self.trusted && mark.revision == self.revision && mark.mapping == fingerprint
    }

    /// The mark this publish leaves on a scope of `units` assignments in step.
    fn mark(&self, units: usize, fingerprint: &str) -> PublishMark {
        PublishMark {
            revision: self.revision.clone(),
            mapping: fingerprint.to_string(),
            units: units as u64,
        }
    }
}

/// What one mailbox has to do.
#[derive(Default)]
struct MailboxPlan {
    /// Assignments that should have a task here, with their current state. Their desired values
    /// are mapped from the plan when the mailbox's turn comes, so that a publish holds the
    /// values of the mailboxes in progress only, not of the whole project. Boxed: a row is
    /// large and a first publish has none, so an inline `None` would cost a row's size for
    /// every assignment of the project.
    desired: Vec<(AssignmentKey, Option<Box<AssignmentState>>)>,
    /// Assignments whose task here must go: they left the plan (under the mass-delete guard).
    leaving: Vec<AssignmentState>,
    /// Assignments whose resource's address changed: their task here goes, the new mailbox
    /// makes one. Not under the guard here: the plan held back the moves it refuses
    /// ([`held_moves`]), and a move made by halves would leave this task untracked.
    moved_away: Vec<AssignmentState>,
    /// Of `desired`, the assignments moving here from another mailbox: each is created only
    /// once its old task is gone (see `defer_moves_in`).
    moved_in: Vec<AssignmentUid>,
}

/// What a publish does in one mailbox, as planned before the mailbox's turn.
enum MailboxWork {
    /// Planned from the whole plan and every row of the project, read before it: for a host
    /// that cannot list a project's units without loading its plan.
    Planned {
        plan: MailboxPlan,
        view: Arc<ProjectView>,
    },
    /// Planned from the units the host listed: the mailbox's rows and its part of the plan
    /// are read when its turn comes, under its lock, so that a publish holds the rows and
    /// values of the mailboxes in progress only.
    Listed(Listed),
}

/// A mailbox's share of a project's units, as [`PmHost::project_units`] lists them.
#[derive(Default)]
struct Listed {
    /// The units whose tasks belong here.
    desired: Vec<AssignmentUid>,
    /// Assignments with a task here that are no units any more.
    leaving: Vec<AssignmentUid>,
    /// Rows of units whose resource's address changed, read when the plan was made (they are
    /// no rows of `leaving`): their tasks here go, in the first wave, before the new mailbox
    /// makes new ones.
    moved_out: Vec<AssignmentState>,
    /// Of `desired`, the assignments moving here from another mailbox.
    moved_in: Vec<AssignmentUid>,
}

impl MailboxWork {
    /// Assignments handled, for the progress.
    fn size(&self) -> usize {
        match self {
            MailboxWork::Planned { plan, .. } => {
                plan.desired.len() + plan.leaving.len() + plan.moved_away.len()
            }
            MailboxWork::Listed(l) => l.desired.len() + l.leaving.len() + l.moved_out.len(),
        }
    }

    /// Whether tasks move into or out of the mailbox: what its publish mark recorded is then
    /// not what this publish does (a move the guard held back, made by a forced publish).
    fn moves(&self) -> bool {
        match self {
            MailboxWork::Planned { plan, .. } => {
                !plan.moved_away.is_empty() || !plan.moved_in.is_empty()
            }
            MailboxWork::Listed(l) => !l.moved_in.is_empty() || !l.moved_out.is_empty(),
        }
    }

    /// Whether tasks move out of the mailbox: such mailboxes are published first, so that a
    /// task moving away is gone before its new mailbox's turn creates the new one.
    fn moves_out(&self) -> bool {
        match self {
            MailboxWork::Planned { plan, .. } => !plan.moved_away.is_empty(),
            MailboxWork::Listed(l) => !l.moved_out.is_empty(),
        }
    }
}

/// The moves the mass-delete guard holds back, each with the mailbox its task stays in.
///
/// An assignment whose resource's address changed moves: its task in the old mailbox goes and
/// the new mailbox gets one. The guard counts, per mailbox, the tasks a publish would delete
/// there (assignments that left the plan and assignments moving away) against the tasks the
/// mailbox has; where that is beyond it, and the publish is not forced, the assignments moving
/// away stay where they are, tracked and kept in step, and count as refused deletions. The
/// guard decides this before any mailbox is published: refusing the old task's deletion after
/// the new mailbox made its task would leave the old one in its mailbox untracked, with
/// whatever its person reports there unheard, and no later publish would know to delete it.
pub(super) fn held_moves(
    config: &super::config::SyncConfig,
    force: bool,
    placed: impl IntoIterator<Item = (AssignmentUid, MailboxAddress)>,
    desired: &HashMap<AssignmentUid, MailboxAddress>,
) -> HashMap<AssignmentUid, MailboxAddress> {
    let mut held = HashMap::new();
    if force {
        return held;
    }
    // Per mailbox: its tasks, those it would delete, and which of those move.
    let mut per_mailbox: HashMap<MailboxAddress, (usize, usize, Vec<AssignmentUid>)> =
        HashMap::new();
    for (uid, mailbox) in placed {
        let to = desired.get(&uid);
        let entry = per_mailbox.entry(mailbox.clone()).or_default();
        entry.0 += 1;
        if to != Some(&mailbox) {
            entry.1 += 1;
            if to.is_some() {
                entry.2.push(uid);
            }
        }
    }
    for (mailbox, (tasks, deletes, moving)) in per_mailbox {
        if !moving.is_empty() && config.guard_refuses(deletes, tasks) {
            warn!(
                %mailbox,
                moves = moving.len(),
                deletes,
                tasks,
                "mass-delete guard: tasks whose resource's address changed stay here until a \
                 publish with --force"
            );
            held.extend(moving.into_iter().map(|uid| (uid, mailbox.clone())));
        }
    }
    held
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Publishes `project`: after this, every assignment of the project has a task in its
    /// resource's mailbox showing the PM's values, and assignments that left have none.
    ///
    /// Safe to repeat: an unchanged project sends no write at all, and a publish cut short by a
    /// crash finds the tasks it already created (they carry the assignment's key) instead of
    /// creating them twice.
    ///
    /// Mailbox by mailbox when the host lists the project's units
    /// ([`PmHost::project_units`]): then only the mailboxes in progress
    /// (`mailbox_concurrency`) have their rows and values in memory.
    #[instrument(skip_all, fields(project = %project))]
    pub async fn publish(
        &self,
        project: ProjectGuid,
        options: PublishOptions,
    ) -> Result<PublishReport, SyncError> {
        // The revision before the plan is read: a PM change after this moves it past what a
        // mark made by this publish records, so the next publish compares again.
        let marking = self
            .inner
            .host
            .plan_revision(project)
            .await?
            .map(|revision| Marking {
                revision: revision.0,
                token: rand::random(),
                trusted: !options.full,
            });
        if let Some(marking) = &marking {
            let state = &self.inner.state;
            if let Some(mark) = state.publish_mark(project, MarkScope::Project).await?
                && marking.matches(&mark, &self.inner.mapping_fingerprint)
            {
                let units = usize::try_from(mark.units).unwrap_or(usize::MAX);
                if let Some(progress) = &options.progress {
                    progress(units, units);
                }
                info!(
                    unchanged = units,
                    "published: nothing changed since the last publish at this plan revision"
                );
                return Ok(PublishReport {
                    unchanged: units,
                    skipped: units,
                    ..PublishReport::default()
                });
            }
            state
                .reserve_publish_mark(project, MarkScope::Project, marking.token)
                .await?;
        }
        let (works, held) = match self.inner.host.project_units(project).await? {
            Some(units) => self.plan_listed(project, units, options.force).await?,
            None => self.plan_whole(project, options.force).await?,
        };
        if self.inner.cluster.get().is_some() {
            // Lease rows for mailboxes new to the store: some instance takes each at its next
            // round and publishes there.
            self.inner
                .state
                .add_leases(works.keys().cloned().collect())
                .await?;
        }
        let mut report = PublishReport::default();
        let total: usize = works.values().map(MailboxWork::size).sum();
        let mut done = 0usize;
        let mut all_marked = true;
        let marking_ref = marking.as_ref();
        // Two waves: the mailboxes that tasks move out of first, so that an old task is
        // deleted before its new mailbox's turn (which waits for that: `defer_moves_in`).
        let (first, then): (Vec<_>, Vec<_>) =
            works.into_iter().partition(|(_, work)| work.moves_out());
        for wave in [first, then] {
            let mut runs = futures::stream::iter(wave.into_iter().map(|(mailbox, work)| {
                let options = options.clone();
                let size = work.size();
                async move {
                    let r = self
                        .publish_mailbox(&mailbox, project, work, &options, marking_ref)
                        .await;
                    (size, r)
                }
            }))
            .buffer_unordered(self.inner.config.mailbox_concurrency.max(1));
            while let Some((size, r)) = runs.next().await {
                let (mailbox_report, marked) = r?;
                all_marked &= marked;
                report.merge(mailbox_report);
                done += size;
                if let Some(progress) = &options.progress {
                    progress(done, total);
                }
            }
        }
        // Moves held back: their old tasks' deletions are the ones refused.
        report.refused_deletes += held;
        // Every mailbox marked (in step, or skipped by its own mark): the next publish at this
        // revision needs no read at all. Any write of the project's rows since the
        // reservation but this publish's own has ended it.
        if let Some(marking) = &marking
            && all_marked
            && report.is_clean()
            && report.deferred == 0
        {
            let mark = marking.mark(report.in_step(), &self.inner.mapping_fingerprint);
            self.inner
                .state
                .confirm_publish_mark(project, MarkScope::Project, marking.token, mark)
                .await?;
        }
        info!(
            created = report.created,
            updated = report.updated,
            deleted = report.deleted,
            unchanged = report.unchanged,
            adopted = report.adopted,
            failed = report.failed,
            refused_deletes = report.refused_deletes,
            "published"
        );
        Ok(report)
    }

    /// Plans from the units the host listed and where the store has each tracked assignment's
    /// task: a unit goes to its resource's mailbox, and leaves the mailbox its task is in when
    /// that is another (the resource's address changed) or it is no unit any more.
    async fn plan_listed(
        &self,
        project: ProjectGuid,
        units: Vec<UnitAddress>,
        force: bool,
    ) -> Result<(BTreeMap<MailboxAddress, MailboxWork>, usize), SyncError> {
        let placed = self.inner.state.assignment_mailboxes(project).await?;
        let desired: HashMap<AssignmentUid, MailboxAddress> = units
            .iter()
            .map(|u| (u.uid, MailboxAddress::new(&u.email)))
            .collect();
        let held = held_moves(&self.inner.config, force, placed.iter().cloned(), &desired);
        let mut placed: HashMap<AssignmentUid, MailboxAddress> = placed.into_iter().collect();
        let mut lists: BTreeMap<MailboxAddress, Listed> = BTreeMap::new();
        let mut moved = Vec::new();
        for unit in units {
            let mailbox = match held.get(&unit.uid) {
                Some(old) => old.clone(),
                None => MailboxAddress::new(&unit.email),
            };
            let list = lists.entry(mailbox.clone()).or_default();
            if let Some(old) = placed.remove(&unit.uid)
                && old != mailbox
            {
                moved.push(unit.uid);
                list.moved_in.push(unit.uid);
            }
            list.desired.push(unit.uid);
        }
        for (uid, mailbox) in placed {
            lists.entry(mailbox).or_default().leaving.push(uid);
        }
        // Address changes are rare: their rows are read one by one.
        for uid in moved {
            let key = AssignmentKey {
                project,
                assignment: uid,
            };
            if let Some(row) = self.inner.state.assignment(&key).await? {
                lists
                    .entry(row.mailbox.clone())
                    .or_default()
                    .moved_out
                    .push(row);
            }
        }
        let works = lists
            .into_iter()
            .map(|(mailbox, listed)| (mailbox, MailboxWork::Listed(listed)))
            .collect();
        Ok((works, held.len()))
    }

    /// Plans from the whole plan and every row of the project.
    async fn plan_whole(
        &self,
        project: ProjectGuid,
        force: bool,
    ) -> Result<(BTreeMap<MailboxAddress, MailboxWork>, usize), SyncError> {
        // The rows before the plan: a row never shows a pass newer than the plan's values
        // (that pass's write would otherwise be undone by older values under a current change
        // key). A row older than the plan carries an old change key: the write meets a stale
        // key and the item is decided again. See also `publish_mailbox`.
        let mut known: HashMap<AssignmentKey, AssignmentState> = self
            .inner
            .state
            .project_assignments(project)
            .await?
            .into_iter()
            .map(|s| (s.key, s))
            .collect();
        let view = self.view(project).await?;
        let desired: HashMap<AssignmentUid, MailboxAddress> = view
            .units()
            .map(|u| (u.key.assignment, MailboxAddress::new(u.email)))
            .collect();
        let held = held_moves(
            &self.inner.config,
            force,
            known
                .values()
                .map(|s| (s.key.assignment, s.mailbox.clone())),
            &desired,
        );
        let mut plans: BTreeMap<MailboxAddress, MailboxPlan> = BTreeMap::new();
        for unit in view.units() {
            let mailbox = match held.get(&unit.key.assignment) {
                Some(old) => old.clone(),
                None => MailboxAddress::new(unit.email),
            };
            let mut state = known.remove(&unit.key).map(Box::new);
            // The resource's address changed: the old task goes, a new one comes.
            if let Some(old) = state.take_if(|s| s.mailbox != mailbox) {
                plans
                    .entry(old.mailbox.clone())
                    .or_default()
                    .moved_away
                    .push(*old);
                plans
                    .entry(mailbox.clone())
                    .or_default()
                    .moved_in
                    .push(unit.key.assignment);
            }
            plans
                .entry(mailbox)
                .or_default()
                .desired
                .push((unit.key, state));
        }
        for (_, state) in known {
            plans
                .entry(state.mailbox.clone())
                .or_default()
                .leaving
                .push(state);
        }
        let works = plans
            .into_iter()
            .map(|(mailbox, plan)| {
                let view = view.clone();
                (mailbox, MailboxWork::Planned { plan, view })
            })
            .collect();
        Ok((works, held.len()))
    }

    /// A listed mailbox's rows of `project` and its part of the plan. The rows first, under the
    /// mailbox's lock: no pass of the mailbox can settle an item between the two reads, so no
    /// row is newer than the values (see `plan_whole`).
    async fn read_listed(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
        listed: Listed,
    ) -> Result<(MailboxPlan, Arc<ProjectView>), SyncError> {
        let Listed {
            desired,
            leaving,
            moved_out,
            moved_in,
        } = listed;
        let mut rows: HashMap<AssignmentUid, AssignmentState> = self
            .inner
            .state
            .mailbox_assignments(mailbox, Some(project))
            .await?
            .into_iter()
            .map(|s| (s.key.assignment, s))
            .collect();
        let view = match self.inner.host.project_part(project, &desired).await? {
            Some(part) => Arc::new(ProjectView::new(part)),
            None => return Err(SyncError::UnknownProject(project)),
        };
        let plan = MailboxPlan {
            desired: desired
                .into_iter()
                .map(|uid| {
                    let key = AssignmentKey {
                        project,
                        assignment: uid,
                    };
                    (key, rows.remove(&uid).map(Box::new))
                })
                .collect(),
            // A row that came since the plan was made is left to the next publish.
            leaving: leaving
                .into_iter()
                .filter_map(|uid| rows.remove(&uid))
                .collect(),
            moved_away: moved_out,
            moved_in,
        };
        Ok((plan, view))
    }

    /// Publishes the project's part in one mailbox under the mailbox's lock; says whether the
    /// mailbox's publish mark is confirmed (or was already there) at `marking`'s revision: the
    /// mailbox is in step with the plan (nothing failed, refused or left) and nothing but this
    /// publish wrote its rows since it read them.
    #[instrument(skip_all, fields(mailbox = %mailbox))]
    async fn publish_mailbox(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
        work: MailboxWork,
        options: &PublishOptions,
        marking: Option<&Marking>,
    ) -> Result<(PublishReport, bool), SyncError> {
        let _guard = self.lock(mailbox).await;
        if !self.holds(mailbox) {
            // Another instance holds the mailbox's lease and publishes there (or nobody yet:
            // a round of publishing every project then goes again once leases are taken).
            self.inner
                .republish_skipped
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok((PublishReport::default(), false));
        }
        // A planned mailbox's rows were read before its lock and before any reservation: only
        // listed mailboxes, whose rows are read under both, are marked.
        let marking = marking.filter(|_| matches!(work, MailboxWork::Listed(_)));
        let Some(marking) = marking else {
            let report = self
                .publish_mailbox_locked(mailbox, project, work, options, None)
                .await?;
            return Ok((report, false));
        };
        let state = &self.inner.state;
        let scope = MarkScope::Mailbox(mailbox.clone());
        // Under the lock: no pass of this mailbox can write between this read and the skip.
        if !work.moves()
            && let Some(mark) = state.publish_mark(project, scope.clone()).await?
            && marking.matches(&mark, &self.inner.mapping_fingerprint)
        {
            debug!("unchanged since the last publish at this plan revision");
            let size = work.size();
            let report = PublishReport {
                unchanged: size,
                skipped: size,
                ..PublishReport::default()
            };
            return Ok((report, true));
        }
        // Before the rows are read: a write of them from now on, but this publish's own, ends
        // the reservation. What this publish sends through the inbound path (items found
        // changed, gone or to take over) is written as a pass writes it, and ends it too.
        state
            .reserve_publish_mark(project, scope.clone(), marking.token)
            .await?;
        let report = self
            .publish_mailbox_locked(mailbox, project, work, options, Some(marking.token))
            .await?;
        let marked = report.is_clean()
            && report.deferred == 0
            && state
                .confirm_publish_mark(
                    project,
                    scope,
                    marking.token,
                    marking.mark(report.in_step(), &self.inner.mapping_fingerprint),
                )
                .await?;
        Ok((report, marked))
    }

    /// [`Engine::publish_mailbox`] with the mailbox's lock held and its lease checked; its
    /// commits carry `token` ([`Commit::publish_token`]).
    async fn publish_mailbox_locked(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
        work: MailboxWork,
        options: &PublishOptions,
        token: Option<i64>,
    ) -> Result<PublishReport, SyncError> {
        let mut report = PublishReport::default();
        // Rows read under this lock are current; rows planned before it are checked again
        // before anything is written (below).
        let (mut plan, view, rows_current) = match work {
            MailboxWork::Planned { plan, view } => (plan, view, false),
            MailboxWork::Listed(listed) => {
                let (plan, view) = self.read_listed(mailbox, project, listed).await?;
                (plan, view, true)
            }
        };
        let view = &*view;
        self.defer_moves_in(mailbox, project, &mut plan, options.force, &mut report)
            .await?;
        if let Err(e) = self.ensure_mailbox(mailbox).await {
            // The mailbox cannot be reached: every task of it failed this time, the deletions
            // of tasks leaving it too.
            warn!(error = %e, "mailbox unavailable");
            for (key, _) in &plan.desired {
                report.fail(*key, mailbox, &e);
            }
            for s in plan.leaving.iter().chain(&plan.moved_away) {
                if s.item.is_some() {
                    report.fail(s.key, mailbox, &e);
                }
            }
            let never_created = plan
                .desired
                .into_iter()
                .filter(|(_, s)| {
                    s.as_ref()
                        .is_none_or(|s| s.item.is_none() && s.status != SyncStatus::Detached)
                })
                .map(|(key, s)| {
                    s.map_or_else(|| AssignmentState::new(key, mailbox.clone()), |s| *s)
                });
            self.record_not_created(never_created, &e.to_string())
                .await?;
            return Ok(report);
        }
        let rule = self.inner.config.deleted_task;
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        // Items edited while their assignment was out of the plan: read and decided below.
        let mut waiting = Vec::new();
        let mut with_items = 0usize;
        // Assignments with no row at all when the plan was made.
        let mut unrecorded = std::collections::HashSet::new();
        let table = &self.inner.table;
        for (key, state) in plan.desired {
            // The plan named this assignment's unit: the same view maps it.
            let Some((desired, _zone)) = view.desired(table, key.assignment) else {
                continue;
            };
            match state {
                None => {
                    unrecorded.insert(key);
                    creates.push((key, desired, AssignmentState::new(key, mailbox.clone())));
                }
                Some(s) if s.item.is_none() => {
                    if s.status == SyncStatus::Detached
                        && rule != super::config::DeletedTaskRule::Recreate
                    {
                        report.unchanged += 1;
                    } else {
                        creates.push((key, desired, *s));
                    }
                }
                Some(s) if matches!(s.status, SyncStatus::AwaitingPlan { .. }) => {
                    with_items += 1;
                    waiting.push(key);
                }
                Some(s) => {
                    with_items += 1;
                    let base = s.baseline.as_ref().map(|b| &b.values);
                    // A pending update or an open conflict holds back only its own fields:
                    // they keep what the baseline says, the inbound side owns them.
                    let held: Option<Vec<MailField>> = match &s.status {
                        SyncStatus::PendingApproval { fields, .. } if fields.is_empty() => None,
                        SyncStatus::PendingApproval { fields, .. } => {
                            Some(fields.keys().copied().collect())
                        }
                        SyncStatus::Conflict { fields, .. } => Some(fields.clone()),
                        _ => Some(Vec::new()),
                    };
                    let mut desired = desired;
                    if let (Some(held), Some(b)) = (&held, base) {
                        for f in held {
                            copy_field(&mut desired, b, *f);
                        }
                    }
                    match base {
                        // A row from before fields were recorded: the whole item waits.
                        _ if held.is_none() => report.unchanged += 1,
                        Some(b) if changed_fields(b, &desired).is_empty() => report.unchanged += 1,
                        _ => updates.push((key, desired, *s)),
                    }
                }
            }
        }
        // Rows planned before the lock: a pass of this mailbox may have run between the plan
        // and the lock, with fresher PM values than the plan's: the items it settled are left
        // to the next publish, which plans from what it stored. Only items this publish would
        // write are looked at (an unchanged re-publish reads nothing more).
        if !rows_current && (!creates.is_empty() || !updates.is_empty()) {
            let now_rows: HashMap<AssignmentKey, AssignmentState> = self
                .inner
                .state
                .mailbox_assignments(mailbox, Some(project))
                .await?
                .into_iter()
                .map(|s| (s.key, s))
                .collect();
            let planned = creates.len() + updates.len();
            creates.retain(|(key, _, s)| {
                if unrecorded.contains(key) {
                    !now_rows.contains_key(key)
                } else {
                    now_rows.get(key) == Some(s)
                }
            });
            updates.retain(|(key, _, s)| now_rows.get(key) == Some(s));
            let moved = planned - creates.len() - updates.len();
            if moved > 0 {
                debug!(
                    count = moved,
                    "items changed since the plan was made; left to the next publish"
                );
                report.deferred += moved;
            }
        }
        let mut deletes: Vec<AssignmentState> = Vec::new();
        let mut forget = Vec::new();
        for s in plan.leaving {
            if s.item.is_some() {
                deletes.push(s);
            } else {
                forget.push((s.key, s.mailbox));
            }
        }
        with_items += deletes.len();
        if !options.force && self.inner.config.guard_refuses(deletes.len(), with_items) {
            warn!(
                deletes = deletes.len(),
                tasks = with_items,
                "mass-delete guard: refusing to delete without --force"
            );
            report.refused_deletes = deletes.len();
            deletes.clear();
        }
        for s in &deletes {
            if let SyncStatus::AwaitingPlan { since } = &s.status {
                warn!(
                    key = %s.key,
                    %since,
                    "deleting a task whose mailbox edit waited for its assignment: the edit is discarded"
                );
            }
        }
        // Moves the guard let through when the plan was made (`held_moves`). Their old tasks
        // are read before they are deleted (below).
        let mut moving = Vec::new();
        for s in plan.moved_away {
            if s.item.is_some() {
                moving.push(s.key);
                deletes.push(s);
            } else {
                forget.push((s.key, s.mailbox));
            }
        }
        if !creates.is_empty() {
            self.publish_creates(mailbox, view, creates, token, &mut report)
                .await?;
        }
        let stale = if updates.is_empty() {
            Vec::new()
        } else {
            self.publish_updates(mailbox, view, updates, token, &mut report)
                .await?
        };
        if !stale.is_empty() {
            // Someone changed these items since we last saw them: read them and decide again.
            let mut inbound = InboundReport::default();
            let n = stale.len();
            self.process_rows(mailbox, stale, Mode::Normal, &mut inbound)
                .await?;
            report.updated += n.saturating_sub(inbound.failed);
            report.take_failures(inbound);
        }
        if !waiting.is_empty() || !moving.is_empty() {
            let failed = self
                .read_before_writing(mailbox, waiting, moving, &mut report)
                .await?;
            // An old task that could not be read is not deleted: it may hold an edit. The move
            // waits for the next publish (the new mailbox defers its task until then).
            deletes.retain(|s| !failed.contains(&s.key));
        }
        if !deletes.is_empty() {
            self.publish_deletes(mailbox, deletes, token, &mut report)
                .await?;
        }
        if !forget.is_empty() {
            self.commit(Commit {
                delete: forget,
                publish_token: token,
                ..Commit::default()
            })
            .await?;
        }
        Ok(report)
    }

    /// Reads and decides, as a pass would, the items a publish must not write or delete
    /// unread: those whose edit waited for their assignment to come back into the plan
    /// (`waiting`, [`SyncStatus::AwaitingPlan`]), and the old tasks of assignments moving to
    /// another mailbox (`moving`), which may hold an edit no pass has taken yet (its
    /// notification still in the debounce, or lost) that would otherwise be deleted with the
    /// task. What they report goes to the plan first, and so into the new task. The rows are
    /// read again under the lock, since a pass may have taken an edit since the plan was made.
    /// Returns the keys whose item failed.
    async fn read_before_writing(
        &self,
        mailbox: &MailboxAddress,
        waiting: Vec<AssignmentKey>,
        moving: Vec<AssignmentKey>,
        report: &mut PublishReport,
    ) -> Result<std::collections::HashSet<AssignmentKey>, SyncError> {
        let mut rows = Vec::with_capacity(waiting.len() + moving.len());
        let mut awaiting = std::collections::HashSet::new();
        let keys = waiting.into_iter().map(|k| (k, false));
        for (key, moves) in keys.chain(moving.into_iter().map(|k| (k, true))) {
            let Some(now) = self.inner.state.assignment(&key).await? else {
                continue;
            };
            let waits = matches!(now.status, SyncStatus::AwaitingPlan { .. });
            // A waiting edit a pass has taken meanwhile needs nothing more.
            if now.mailbox == *mailbox && now.item.is_some() && (moves || waits) {
                if waits {
                    awaiting.insert(key);
                }
                rows.push(now);
            }
        }
        let mut inbound = InboundReport::default();
        self.process_rows(mailbox, rows, Mode::Normal, &mut inbound)
            .await?;
        let failed: std::collections::HashSet<AssignmentKey> =
            inbound.errors.iter().map(|e| e.key).collect();
        report.taken += awaiting.difference(&failed).count();
        report.take_failures(inbound);
        Ok(failed)
    }

    /// Takes out of `plan` the assignments moving here whose old task is still tracked in
    /// another mailbox (its deletion failed, was cut short by a crash, or has not come yet):
    /// creating the new task would record it under the same key and leave the old one in its
    /// mailbox untracked, for good. They are left to the next publish, which deletes the old
    /// task first. Mailboxes that tasks move out of are published first (see
    /// [`Engine::publish`]), so a move normally takes one publish. A forced publish makes the
    /// move anyway, leaving an old task it could not delete behind (an old mailbox that no
    /// longer exists or may not be accessed); it says so in the log.
    async fn defer_moves_in(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
        plan: &mut MailboxPlan,
        force: bool,
        report: &mut PublishReport,
    ) -> Result<(), SyncError> {
        let mut waiting = std::collections::HashSet::new();
        for uid in std::mem::take(&mut plan.moved_in) {
            let key = AssignmentKey {
                project,
                assignment: uid,
            };
            if let Some(row) = self.inner.state.assignment(&key).await?
                && row.mailbox != *mailbox
                && row.item.is_some()
            {
                waiting.insert(key);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if force {
            warn!(
                count = waiting.len(),
                "tasks moving here are made though their old tasks could not be deleted \
                 (--force): the old tasks stay in their mailbox, no longer synced"
            );
        } else {
            debug!(
                count = waiting.len(),
                "tasks moving here wait for the deletion of their old tasks"
            );
            plan.desired.retain(|(key, _)| !waiting.contains(key));
            report.deferred += waiting.len();
        }
        Ok(())
    }

    /// Creates tasks, after looking for tasks already tagged with their keys (left by a
    /// publish that died before it recorded them).
    ///
    /// A create call that fails as a whole may still have created its items (the connection
    /// dropped after the server ran it; the transport does not send a CreateItem twice). Its
    /// items are looked for again, taken over when found and created again when not, up to
    /// `max_attempts` rounds; after that they are reported failed and the next publish goes on.
    async fn publish_creates(
        &self,
        mailbox: &MailboxAddress,
        view: &ProjectView,
        creates: Vec<(AssignmentKey, MailValues, AssignmentState)>,
        token: Option<i64>,
        report: &mut PublishReport,
    ) -> Result<(), SyncError> {
        let store = &self.inner.mailboxes;
        let rounds = self.inner.config.max_attempts.max(1);
        let mut todo = creates;
        // Journal entries of calls that failed as a whole: closed once their items were looked
        // for, since what happened to them is known from then on.
        let mut uncertain: Vec<i64> = Vec::new();
        for round in 1..=rounds {
            let tagged: HashMap<AssignmentKey, crate::state::ItemRef> = match store
                .find_tagged(mailbox, view.project.guid)
                .await
            {
                Ok(found) => found.into_iter().collect(),
                Err(e) => {
                    for (key, _, _) in &todo {
                        report.fail(*key, mailbox, &e);
                    }
                    self.record_not_created(todo.into_iter().map(|(_, _, s)| s), &e.to_string())
                        .await?;
                    return Ok(());
                }
            };
            if !uncertain.is_empty() {
                self.commit(Commit {
                    close_journal: std::mem::take(&mut uncertain),
                    ..Commit::default()
                })
                .await?;
            }
            let (adopt, fresh): (Vec<_>, Vec<_>) = todo
                .into_iter()
                .partition(|(key, _, _)| tagged.contains_key(key));
            if !adopt.is_empty() {
                self.adopt(mailbox, adopt, &tagged, report).await?;
            }
            let mut again = Vec::new();
            let batch = store.limits().write.max(1);
            let mut stored_later = None;
            for chunk in fresh.chunks(batch) {
                if !again.is_empty() {
                    // The server just failed a call: the rest waits for the next round
                    // rather than meet the same fate.
                    again.extend(chunk.iter().cloned());
                    continue;
                }
                let journal = self
                    .open_journal_after(
                        &mut stored_later,
                        mailbox,
                        chunk.iter().map(|c| c.0),
                        WriteKind::Create,
                    )
                    .await?;
                let items: Vec<(AssignmentKey, MailValues)> =
                    chunk.iter().map(|(k, v, _)| (*k, v.clone())).collect();
                let results = match store.create(mailbox, &items).await {
                    Ok(r) => {
                        self.inner.own_writes.wrote(r.iter().flatten());
                        r
                    }
                    Err(e) => {
                        // Unknown whether anything was created: the journal stays open until
                        // the items are looked for (here, or by the next publish).
                        let retry = round < rounds
                            && matches!(
                                e,
                                MailboxError::Unavailable(_) | MailboxError::Throttled { .. }
                            );
                        if retry {
                            warn!(error = %e, "create batch failed; looking for what it created before trying again");
                            uncertain.extend(journal);
                            again.extend(chunk.iter().cloned());
                        } else {
                            warn!(error = %e, "create batch failed");
                            for (key, _, _) in chunk {
                                report.fail(*key, mailbox, &e);
                            }
                            self.record_not_created(
                                chunk.iter().map(|(_, _, s)| s.clone()),
                                &e.to_string(),
                            )
                            .await?;
                        }
                        continue;
                    }
                };
                let (mut commit, created) =
                    self.record_creates(mailbox, view, chunk, results, journal, report);
                commit.publish_token = token;
                report.created += created;
                Metrics::add(&self.inner.metrics.created, created);
                stored_later = Some(commit);
            }
            if let Some(commit) = stored_later {
                self.commit(commit).await?;
            }
            if again.is_empty() {
                break;
            }
            todo = again;
        }
        Ok(())
    }

    /// Records `error` on assignments whose task could not be created because the call failed
    /// as a whole, so that `taskbridge status` lists them as failed with the reason. Their rows
    /// have no item: the next publish creates them (after looking for tagged tasks), and its
    /// success clears the error.
    async fn record_not_created(
        &self,
        rows: impl IntoIterator<Item = AssignmentState>,
        error: &str,
    ) -> Result<(), SyncError> {
        let put: Vec<AssignmentState> = rows
            .into_iter()
            .map(|mut s| {
                s.attempts += 1;
                s.last_error = Some(error.to_string());
                s
            })
            .collect();
        if put.is_empty() {
            return Ok(());
        }
        self.commit(Commit {
            put,
            ..Commit::default()
        })
        .await?;
        Ok(())
    }

    /// The rows a create batch leaves: created items with their baselines, failed ones with
    /// their attempt counted; returns them with the journal entries they close, and how many
    /// were created.
    fn record_creates(
        &self,
        mailbox: &MailboxAddress,
        view: &ProjectView,
        chunk: &[(AssignmentKey, MailValues, AssignmentState)],
        results: Vec<Result<crate::state::ItemRef, ItemFailure>>,
        journal: Vec<i64>,
        report: &mut PublishReport,
    ) -> (Commit, usize) {
        let now = Utc::now();
        let mut commit = Commit {
            close_journal: journal,
            ..Commit::default()
        };
        let mut created = 0;
        for ((key, desired, state), result) in chunk.iter().zip(results) {
            let mut s = state.clone();
            match result {
                Ok(item) => {
                    s.item = Some(item);
                    let mut baseline = Baseline::new(desired.clone());
                    if let Some(unit) = view.unit(key.assignment) {
                        for e in self.inner.table.entries() {
                            let at = pm_modified(&unit, e.field).unwrap_or(now);
                            baseline.pm_changed.insert(e.field, at);
                        }
                    }
                    s.baseline = Some(baseline);
                    // Both sides hold the values just written: one hash serves both.
                    let hash = desired.hash();
                    s.pm_hash = Some(hash);
                    s.mail_hash = Some(hash);
                    s.status = SyncStatus::Synced;
                    s.attempts = 0;
                    s.last_error = None;
                    s.last_sync = Some(now);
                    created += 1;
                }
                Err(f) => {
                    s.attempts += 1;
                    s.last_error = Some(f.to_string());
                    report.fail(*key, mailbox, &f);
                }
            }
            commit.put.push(s);
        }
        (commit, created)
    }

    /// Takes over tasks found tagged with the keys of assignments not yet recorded: their
    /// content is unknown, so they are read and each field the two sides disagree on is
    /// decided by the policy (an owner may have edited the task since it was created).
    async fn adopt(
        &self,
        mailbox: &MailboxAddress,
        adopt: Vec<(AssignmentKey, MailValues, AssignmentState)>,
        tagged: &HashMap<AssignmentKey, crate::state::ItemRef>,
        report: &mut PublishReport,
    ) -> Result<(), SyncError> {
        report.adopted += adopt.len();
        info!(
            count = adopt.len(),
            "found tasks created before a crash or a failed call; taking them over"
        );
        let rows = adopt
            .into_iter()
            .map(|(key, desired, mut s)| {
                s.item = tagged.get(&key).cloned();
                // Nothing is known of what the item holds: it is read, and every field
                // the two sides disagree on is decided by the policy.
                s.baseline = Some(Baseline::new(desired));
                s.status = SyncStatus::Synced;
                s
            })
            .collect();
        let mut inbound = InboundReport::default();
        self.process_rows(mailbox, rows, Mode::Adopt, &mut inbound)
            .await?;
        report.take_failures(inbound);
        Ok(())
    }

    /// Sends the fields the plan changed; returns the items found changed in the mailbox
    /// meanwhile (stale change key), to be decided again.
    async fn publish_updates(
        &self,
        mailbox: &MailboxAddress,
        view: &ProjectView,
        updates: Vec<(AssignmentKey, MailValues, AssignmentState)>,
        token: Option<i64>,
        report: &mut PublishReport,
    ) -> Result<Vec<AssignmentState>, SyncError> {
        let store = &self.inner.mailboxes;
        let batch = store.limits().write.max(1);
        let mut stale = Vec::new();
        let mut gone = Vec::new();
        let mut stored_later = None;
        for chunk in updates.chunks(batch) {
            let writes: Vec<ItemWrite> = chunk
                .iter()
                .filter_map(|(key, desired, s)| {
                    Some(ItemWrite {
                        key: *key,
                        item: s.item.clone()?,
                        from: s
                            .baseline
                            .as_ref()
                            .map(|b| b.values.clone())
                            .unwrap_or_else(|| MailValues::empty(desired.zone)),
                        to: desired.clone(),
                    })
                })
                .collect();
            let journal = self
                .open_journal_after(
                    &mut stored_later,
                    mailbox,
                    writes.iter().map(|w| w.key),
                    WriteKind::Update,
                )
                .await?;
            let results = match store.update(mailbox, &writes).await {
                Ok(r) => {
                    self.inner.own_writes.wrote(r.iter().flatten());
                    r
                }
                Err(e) => {
                    warn!(error = %e, "update batch failed");
                    for w in &writes {
                        report.fail(w.key, mailbox, &e);
                    }
                    continue;
                }
            };
            let now = Utc::now();
            let mut commit = Commit {
                close_journal: journal,
                publish_token: token,
                ..Commit::default()
            };
            for ((key, desired, state), result) in chunk.iter().zip(results) {
                let mut s = state.clone();
                match result {
                    Ok(item) => {
                        let mut baseline = s
                            .baseline
                            .take()
                            .unwrap_or_else(|| Baseline::new(desired.clone()));
                        if let Some(unit) = view.unit(key.assignment) {
                            for f in changed_fields(&baseline.values, desired) {
                                baseline
                                    .pm_changed
                                    .insert(f, pm_modified(&unit, f).unwrap_or(now));
                            }
                        }
                        // The status note is never written: the item keeps the one it has.
                        let note = baseline.values.status_note;
                        baseline.values = desired.clone();
                        baseline.values.status_note = note;
                        s.baseline = Some(baseline);
                        s.item = Some(item);
                        let hash = desired.hash();
                        s.pm_hash = Some(hash);
                        s.mail_hash = Some(hash);
                        s.attempts = 0;
                        s.last_error = None;
                        s.last_sync = Some(now);
                        // A pending update or a conflict is still open on its fields.
                        if !matches!(
                            s.status,
                            SyncStatus::PendingApproval { .. } | SyncStatus::Conflict { .. }
                        ) {
                            s.status = SyncStatus::Synced;
                        }
                        report.updated += 1;
                        commit.put.push(s);
                    }
                    Err(ItemFailure::StaleChangeKey) => stale.push(s),
                    Err(ItemFailure::NotFound) => gone.push(s),
                    Err(f) => {
                        s.attempts += 1;
                        s.last_error = Some(f.to_string());
                        if s.attempts >= self.inner.config.max_attempts && !f.is_retryable() {
                            s.status = SyncStatus::Parked {
                                reason: f.to_string(),
                            };
                            Metrics::add(&self.inner.metrics.parked, 1);
                        }
                        report.fail(*key, mailbox, &f);
                        commit.put.push(s);
                    }
                }
            }
            stored_later = Some(commit);
        }
        if let Some(commit) = stored_later {
            self.commit(commit).await?;
        }
        Metrics::add(&self.inner.metrics.written, report.updated);
        if !gone.is_empty() {
            let mut inbound = InboundReport::default();
            for s in gone {
                self.item_deleted(mailbox, s, &mut inbound).await?;
            }
            report.take_failures(inbound);
        }
        Ok(stale)
    }

    /// Opens the journal entries of a batch's writes in one transaction with the results of
    /// the batch before (`stored_later`), if any. Those results are stored before the next
    /// remote write is sent, as a commit of their own would store them, with no remote call
    /// between their answer and their transaction: one state transaction per batch instead of
    /// two, and a crash leaves exactly what it left before (the open journal entries of the
    /// batch whose answer was not stored, for the next publish to look for).
    async fn open_journal_after(
        &self,
        stored_later: &mut Option<Commit>,
        mailbox: &MailboxAddress,
        keys: impl Iterator<Item = AssignmentKey>,
        kind: WriteKind,
    ) -> Result<Vec<i64>, SyncError> {
        match stored_later.take() {
            None => self.open_journal(mailbox, keys, kind).await,
            Some(commit) => {
                self.transact(Transaction {
                    commit,
                    open_journal: journal_entries(mailbox, keys, kind),
                    ..Transaction::default()
                })
                .await
            }
        }
    }

    /// Deletes the tasks of assignments that left; the commits carry `token`
    /// ([`Commit::publish_token`]).
    pub(crate) async fn publish_deletes(
        &self,
        mailbox: &MailboxAddress,
        deletes: Vec<AssignmentState>,
        token: Option<i64>,
        report: &mut PublishReport,
    ) -> Result<(), SyncError> {
        let store = &self.inner.mailboxes;
        let batch = store.limits().write.max(1);
        let mut stored_later = None;
        for chunk in deletes.chunks(batch) {
            let journal = self
                .open_journal_after(
                    &mut stored_later,
                    mailbox,
                    chunk.iter().map(|s| s.key),
                    WriteKind::Delete,
                )
                .await?;
            let items: Vec<_> = chunk.iter().filter_map(|s| s.item.clone()).collect();
            let results = match store.delete(mailbox, &items).await {
                Ok(r) => r,
                Err(e) => {
                    for s in chunk {
                        report.fail(s.key, mailbox, &e);
                    }
                    continue;
                }
            };
            let mut commit = Commit {
                close_journal: journal,
                publish_token: token,
                ..Commit::default()
            };
            for (s, result) in chunk.iter().zip(results) {
                match result {
                    // Already gone is as good as deleted.
                    Ok(()) | Err(ItemFailure::NotFound) => {
                        commit.delete.push((s.key, s.mailbox.clone()));
                        report.deleted += 1;
                    }
                    Err(f) => {
                        let mut s = s.clone();
                        s.attempts += 1;
                        s.last_error = Some(f.to_string());
                        report.fail(s.key, mailbox, &f);
                        commit.put.push(s);
                    }
                }
            }
            stored_later = Some(commit);
        }
        if let Some(commit) = stored_later {
            self.commit(commit).await?;
        }
        Metrics::add(&self.inner.metrics.deleted, report.deleted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(uid: i64, mailbox: &str) -> (AssignmentUid, MailboxAddress) {
        (AssignmentUid(uid), MailboxAddress::new(mailbox))
    }

    /// The guard of the starter configuration: more than 10 deletions and more than half.
    fn guard() -> super::super::config::SyncConfig {
        super::super::config::SyncConfig::default()
    }

    #[test]
    fn moves_are_held_where_the_deletions_they_add_to_pass_the_guard() {
        // Twelve tasks in a@x: eight move to b@x, four leave the plan; c@x keeps its one.
        let placed: Vec<_> = (1..=12)
            .map(|uid| at(uid, "a@x"))
            .chain([at(20, "c@x")])
            .collect();
        let desired: HashMap<_, _> = (1..=8)
            .map(|uid| at(uid, "b@x"))
            .chain([at(20, "c@x")])
            .collect();
        let held = held_moves(&guard(), false, placed.clone(), &desired);
        let mut uids: Vec<i64> = held.keys().map(|u| u.0).collect();
        uids.sort();
        assert_eq!(uids, (1..=8).collect::<Vec<_>>());
        assert!(held.values().all(|m| m.as_str() == "a@x"));
        // Forced, nothing is held.
        assert!(held_moves(&guard(), true, placed.clone(), &desired).is_empty());
        // Within the guard (the four leaving stay in the plan), the moves are made.
        let staying: HashMap<_, _> = desired
            .clone()
            .into_iter()
            .chain((9..=12).map(|uid| at(uid, "a@x")))
            .collect();
        assert!(held_moves(&guard(), false, placed.clone(), &staying).is_empty());
        // Deletions alone beyond the guard hold no move: the mailbox's turn refuses them.
        let gone: HashMap<_, _> = [at(20, "c@x")].into_iter().collect();
        assert!(held_moves(&guard(), false, placed, &gone).is_empty());
    }
}
