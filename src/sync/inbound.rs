//! Changes made in mailboxes: the steps request, decide, audit, status update, write back and
//! settle of the list in the [`sync`](super) module doc.
//!
//! A mailbox pass (request: [`Engine::sync_mailbox`]) asks SyncFolderItems what changed since
//! the last pass, skips items whose change key is the one taskbridge last wrote or read (its own
//! writes, never echoed), and reads the others with GetItem (`process_rows`, a batch at a
//! time). Each item of a batch is decided (`decide`: `decide_item`, then `audit`); then comes
//! the status update (`submit_decided`: the mailbox's newer values of each item go to the PM
//! host as one task status update, the batch's updates in one call that the embedded host
//! takes in one transaction, and `status_update_taken` handles each answer); then the batch's
//! items whose PM values go back are written back together (`write_back`: one journal
//! transaction, one UpdateItem), and each is settled (`after_write`, `settle`: one commit of
//! what its round left). A write back that meets a stale change key reads the item again
//! (`reread`) and goes through the steps again, alone (`prepare`).
//!
//! # State transactions of an item
//!
//! An item's round stores what it decided in as few state transactions as crash safety allows,
//! each one [`StateStore::transact`](crate::state::StateStore::transact): audit records, rows,
//! journal entries opened and closed together. The audit records and, once the host applied a
//! status update, the baseline of the fields it took are held in the round until the item's
//! next transaction, which is one of two:
//!
//! - with a write back: the transaction that opens the journal entries of the batch's write
//!   backs stores them, then the UpdateItem goes out, then the settles of the batch's items
//!   store their results and close their entries, in one transaction once all are settled
//!   (before that when an item's write met a stale change key: its re-read and second round
//!   come after the others' settles are stored). Two transactions per write batch, and neither
//!   can go: the journal entry must be durable before the write (after a crash it says which
//!   mailbox needs a pass), the result only after it (the rule of use of [`crate::state`]).
//! - without one (nothing to write back, a pending update, a refusal): the settle stores them
//!   with the result. One transaction.
//!
//! Why this keeps the guarantees the separate commits gave:
//!
//! - The baseline of what the PM side took was committed at once after the host applied the
//!   update, so that no later failure (the write back, the read after a stale change key, the
//!   process) leaves the PM's copy of the edit looking like a PM change that could win a tie
//!   over a newer edit. It still is stored before any call to the mailbox: the batch's status
//!   updates go in one call, and when the host stops at one of them, the rounds it answered
//!   are stored before the error is returned (`keep_staged`); a write back, a re-read or a
//!   next round all come after it. A crash before that transaction is the window the early
//!   commit had too (host applied, nothing stored), for the batch's updates together.
//! - The audit was appended before the status update went to the host. It now goes in the
//!   transaction that stores the decision's result, so the log holds exactly the decisions
//!   whose results are stored: a host that fails, or a crash before the submit, no longer
//!   leaves a record of a decision nothing carried out (nor one more per retry). The one window
//!   without its line is a crash between the host's apply and the next transaction: the edit
//!   is then not lost (the host holds the status update with its old and new values, source
//!   item, change key and time; the next pass finds both sides agree and submits nothing), but
//!   the audit log has no line for it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, info, instrument, warn};

use super::config::DeletedTaskRule;
use super::decide::{ItemDecision, ItemSides, Mode, decide_item};
use super::engine::{
    Engine, Listing, ProjectCache, ProjectView, SyncError, copy_field, field_text, journal_entries,
    pm_modified,
};
use super::mailbox::{
    ChangedItem, FetchRequest, ItemFailure, ItemWrite, MailboxError, MailboxItem, MailboxStore,
};
use super::metrics::Metrics;
use super::report::InboundReport;
use crate::mapping::{FieldTable, MailField, MailValues, changed_fields, owner_zone};
use crate::pm::{
    Assignment, AssignmentField, AssignmentKey, FieldChange, FieldValue, HostError, Percent,
    PmHost, StatusNoteChange, StatusUpdate, StatusUpdateId, Submitted, UpdateOutcome, UpdateSource,
};
use crate::state::{
    AssignmentState, AuditRecord, Baseline, Commit, DecisionRule, ItemRef, MailboxAddress,
    MailboxState, Side, StateStore, SyncStatus, Transaction, WriteKind,
};

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// The mailbox's state, with its Tasks folder resolved on first use.
    pub(crate) async fn ensure_mailbox(
        &self,
        mailbox: &MailboxAddress,
    ) -> Result<MailboxState, SyncError> {
        if let Some(s) = self.inner.state.mailbox(mailbox).await?
            && s.folder_id.is_some()
        {
            return Ok(s);
        }
        let folder = self
            .inner
            .mailboxes
            .tasks_folder(mailbox)
            .await
            .map_err(|e| SyncError::mailbox(mailbox, e))?;
        Ok(self
            .inner
            .state
            .update_mailbox(mailbox, move |s| s.folder_id = Some(folder))
            .await?)
    }

    /// Reads what changed in a mailbox since the last pass and brings both sides in step.
    ///
    /// This is what a notification triggers (after the debounce) and what reconciliation runs
    /// periodically, so a lost notification costs at most one reconciliation interval.
    #[instrument(skip_all, fields(mailbox = %mailbox))]
    pub async fn sync_mailbox(&self, mailbox: &MailboxAddress) -> Result<InboundReport, SyncError> {
        let _guard = self.lock(mailbox).await;
        if !self.holds(mailbox) {
            // Another instance holds the mailbox's lease: its pass is that one's.
            return Ok(InboundReport::default());
        }
        // Owed until this listing ends with nothing left to take again: a listing that stops
        // with an error leaves the next pass a listing too.
        self.note_listing(mailbox, Listing::Owed);
        Metrics::add(&self.inner.metrics.listing_passes, 1);
        let state = self.ensure_mailbox(mailbox).await?;
        let mut report = InboundReport::default();
        let (all_rows, zones) = self.pass_rows(mailbox, state.sync_state.is_none()).await?;
        // Whether `rows` holds every tracked row (a full pass) or only those the pages name.
        let listed_all = all_rows.is_some();
        // Items already taken from `rows`: each is handled once per pass.
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let Changes {
            changed,
            deleted,
            sync_state,
            rebased,
        } = self
            .list_changes(mailbox, state.sync_state.clone(), &zones)
            .await?;
        let full_pass = state.sync_state.is_none() || rebased;
        let mut rows = match all_rows {
            Some(rows) => rows,
            // An incremental pass: the rows of the items its pages name, in one store call.
            None => self.named_rows(mailbox, &changed, &deleted).await?,
        };
        let mut todo = Vec::new();
        for change in changed {
            let Some(row) = take_row(&mut rows, &mut seen, &change.item.item_id) else {
                continue; // not ours
            };
            report.examined += 1;
            if is_own_version(&change, &row) {
                report.unchanged += 1;
                continue;
            }
            todo.push(row);
        }
        for id in &deleted {
            if let Some(row) = take_row(&mut rows, &mut seen, id) {
                self.item_deleted(mailbox, row, &mut report).await?;
            }
        }
        if full_pass {
            // A full pass lists every item: tracked items it did not list are gone.
            let rows = if listed_all {
                rows
            } else {
                // Re-based from an incremental pass: every row but those handled above.
                let mut all = self.tracked_rows(mailbox).await?;
                all.retain(|id, _| !seen.contains(id));
                all
            };
            let missing: Vec<_> = rows
                .into_values()
                .filter(|r| !matches!(r.status, SyncStatus::Detached))
                .collect();
            for row in missing {
                self.item_deleted(mailbox, row, &mut report).await?;
            }
        }
        self.process_rows(mailbox, todo, Mode::Normal, &mut report)
            .await?;
        // Advance only when nothing needs another look: the same page is read again otherwise,
        // and items already handled are skipped by their change keys. Parked items wait for
        // the reconciliation's publish instead.
        // Only the pass's own columns: notifications of this mailbox keep arriving meanwhile
        // and record their watermarks.
        if report.failed == report.parked {
            let now = Utc::now();
            self.inner
                .state
                .update_mailbox(mailbox, move |s| {
                    s.sync_state = sync_state;
                    if full_pass {
                        s.last_reconcile = Some(now);
                    }
                })
                .await?;
            self.note_listing(mailbox, Listing::Stored);
        }
        log_handled(&report);
        Ok(report)
    }

    /// A pass over the items a mailbox's notifications named, read by their ids: step request
    /// without SyncFolderItems, when the notifications named nothing but `versions` of items
    /// (created or modified). The listing would name the same items and cost a round trip to
    /// the server and a read of the mailbox's item list for nothing.
    ///
    /// The listing is still made ([`Engine::sync_mailbox`]) when it knows more: for an item
    /// not tracked (a task someone created, or a write whose answer is not stored yet), a
    /// mailbox never listed, after an item failed here, and while the last listing left an
    /// item to take again (the listing's stored sync state is what takes a failed item
    /// again). The stored sync state is not moved: the next listing names these items again
    /// and skips each by the change key stored for it.
    #[instrument(skip_all, fields(mailbox = %mailbox))]
    pub async fn sync_items(
        &self,
        mailbox: &MailboxAddress,
        versions: Vec<ItemRef>,
    ) -> Result<InboundReport, SyncError> {
        let first = {
            let _guard = self.lock(mailbox).await;
            if !self.holds(mailbox) {
                return Ok(InboundReport::default());
            }
            match self.item_pass(mailbox, versions).await? {
                ItemPassEnd::Done(report) => {
                    Metrics::add(&self.inner.metrics.item_passes, 1);
                    log_handled(&report);
                    return Ok(report);
                }
                ItemPassEnd::List(report) => report,
            }
        };
        let mut report = self.sync_mailbox(mailbox).await?;
        report.merge(first);
        Ok(report)
    }

    /// Notes how the mailbox's listing ended: `Owed` from its start until it ends with
    /// nothing left to take again and its sync state stored.
    fn note_listing(&self, mailbox: &MailboxAddress, listing: Listing) {
        self.inner
            .listings
            .lock()
            .expect("listing map poisoned")
            .insert(mailbox.clone(), listing);
    }

    /// What this process knows of the mailbox's listings.
    fn listing(&self, mailbox: &MailboxAddress) -> Option<Listing> {
        self.inner
            .listings
            .lock()
            .expect("listing map poisoned")
            .get(mailbox)
            .copied()
    }

    /// Whether a pass over named items can do without a listing first: the mailbox has a
    /// stored sync state and no listing owes an item. Known after this process's first
    /// listing of the mailbox, or its first read of the mailbox's row that found a sync state,
    /// so that an item pass costs no read of the row (a hand-off to the store's thread).
    async fn listed(&self, mailbox: &MailboxAddress) -> Result<bool, SyncError> {
        match self.listing(mailbox) {
            Some(Listing::Stored) => Ok(true),
            Some(Listing::Owed) => Ok(false),
            None => {
                let stored = self.ensure_mailbox(mailbox).await?.sync_state.is_some();
                if stored {
                    self.note_listing(mailbox, Listing::Stored);
                }
                Ok(stored)
            }
        }
    }

    /// The body of [`Engine::sync_items`], under the mailbox's lock.
    async fn item_pass(
        &self,
        mailbox: &MailboxAddress,
        mut versions: Vec<ItemRef>,
    ) -> Result<ItemPassEnd, SyncError> {
        let listing = ItemPassEnd::List(InboundReport::default());
        if !self.listed(mailbox).await? {
            return Ok(listing);
        }
        // Versions written since the scheduler asked are the echo of the engine's own writes.
        self.inner.own_writes.drop_own(&mut versions);
        // An item named twice is read once, at its newest version.
        let mut newest: HashMap<&str, &str> = HashMap::with_capacity(versions.len());
        let mut ids = Vec::with_capacity(versions.len());
        for v in &versions {
            if newest
                .insert(v.item_id.as_str(), v.change_key.as_str())
                .is_none()
            {
                ids.push(v.item_id.clone());
            }
        }
        let mut report = InboundReport::default();
        if ids.is_empty() {
            return Ok(ItemPassEnd::Done(report));
        }
        let mut rows = by_item_id(
            self.inner
                .state
                .assignments_by_items(mailbox, ids.clone())
                .await?,
        );
        let mut todo = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(row) = rows.remove(id) else {
                return Ok(listing);
            };
            report.examined += 1;
            // The version this pass would read was read or written already.
            if row
                .item
                .as_ref()
                .is_some_and(|i| Some(i.change_key.as_str()) == newest.get(id.as_str()).copied())
            {
                report.unchanged += 1;
                continue;
            }
            todo.push(row);
        }
        self.process_rows(mailbox, todo, Mode::Normal, &mut report)
            .await?;
        if report.failed > report.parked {
            return Ok(ItemPassEnd::List(report));
        }
        Ok(ItemPassEnd::Done(report))
    }

    /// The rows a pass starts from, and the owner's zone of each item. A full pass compares
    /// every tracked row with the listing (`Some`); an incremental one reads only the rows of
    /// the items its pages name, found by the mailbox's item list.
    async fn pass_rows(
        &self,
        mailbox: &MailboxAddress,
        full_pass: bool,
    ) -> Result<(Option<Rows>, HashMap<String, chrono_tz::Tz>), SyncError> {
        if full_pass {
            let rows = self.tracked_rows(mailbox).await?;
            let zones = rows
                .iter()
                .filter_map(|(id, r)| Some((id.clone(), r.baseline.as_ref()?.values.zone)))
                .collect();
            return Ok((Some(rows), zones));
        }
        let zones = self
            .inner
            .state
            .mailbox_items(mailbox)
            .await?
            .into_iter()
            .filter_map(|i| Some((i.item_id, i.zone?)))
            .collect();
        Ok((None, zones))
    }

    /// Everything SyncFolderItems lists after `sync_state`, page by page. A sync state the
    /// server rejects is dropped once for a full pass: it lists every item, and items are only
    /// ever compared, so nothing is duplicated or deleted.
    async fn list_changes(
        &self,
        mailbox: &MailboxAddress,
        mut sync_state: Option<String>,
        zones: &HashMap<String, chrono_tz::Tz>,
    ) -> Result<Changes, SyncError> {
        let mut changed = Vec::new();
        let mut deleted = Vec::new();
        let mut rebased = false;
        loop {
            match self
                .inner
                .mailboxes
                .changes(mailbox, sync_state.as_deref(), zones)
                .await
            {
                Ok(page) => {
                    changed.extend(page.changed);
                    deleted.extend(page.deleted);
                    sync_state = Some(page.sync_state);
                    if !page.more {
                        break;
                    }
                }
                Err(MailboxError::InvalidSyncState) if !rebased => {
                    warn!("sync state rejected; re-basing on a full pass");
                    rebased = true;
                    sync_state = None;
                    changed.clear();
                    deleted.clear();
                }
                Err(e) => return Err(SyncError::mailbox(mailbox, e)),
            }
        }
        Ok(Changes {
            changed,
            deleted,
            sync_state,
            rebased,
        })
    }

    /// The mailbox's tracked rows, by item id.
    async fn tracked_rows(&self, mailbox: &MailboxAddress) -> Result<Rows, SyncError> {
        let rows = self.inner.state.mailbox_assignments(mailbox, None).await?;
        Ok(by_item_id(rows))
    }

    /// The tracked rows of the items an incremental pass's pages name, by item id.
    async fn named_rows(
        &self,
        mailbox: &MailboxAddress,
        changed: &[ChangedItem],
        deleted: &[String],
    ) -> Result<Rows, SyncError> {
        let ids: Vec<String> = changed
            .iter()
            .map(|c| c.item.item_id.clone())
            .chain(deleted.iter().cloned())
            .collect();
        if ids.is_empty() {
            return Ok(Rows::new());
        }
        let rows = self.inner.state.assignments_by_items(mailbox, ids).await?;
        Ok(by_item_id(rows))
    }

    /// Reads the items of `rows` and handles each.
    pub(crate) async fn process_rows(
        &self,
        mailbox: &MailboxAddress,
        rows: Vec<AssignmentState>,
        mode: Mode,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        self.process_rows_noted(mailbox, rows, mode, None, report)
            .await
    }

    /// [`Engine::process_rows`], with `rejection`, the PM side's reason for a rejection, noted
    /// on the audit records of the fields it restores.
    async fn process_rows_noted(
        &self,
        mailbox: &MailboxAddress,
        rows: Vec<AssignmentState>,
        mode: Mode,
        rejection: Option<&str>,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        let mut cache = ProjectCache::default();
        cache.load_parts(self, rows.iter().map(|r| r.key)).await?;
        let batch = self.inner.mailboxes.limits().fetch.max(1);
        for chunk in rows.chunks(batch) {
            let requests: Vec<FetchRequest> = chunk
                .iter()
                .filter_map(|r| {
                    Some(FetchRequest {
                        item_id: r.item.as_ref()?.item_id.clone(),
                        zone: r
                            .baseline
                            .as_ref()
                            .map(|b| b.values.zone)
                            .unwrap_or(chrono_tz::UTC),
                    })
                })
                .collect();
            let results = match self.inner.mailboxes.fetch(mailbox, &requests).await {
                Ok(r) => r,
                Err(e) => {
                    for r in chunk {
                        report.fail(r.key, mailbox, &e);
                    }
                    continue;
                }
            };
            // Each item through decide and audit; the batch's status updates go to the PM host
            // in one call, and each item through its outcome; then the values of those that
            // need them go back in one UpdateItem, under one journal transaction.
            let mut pass = ItemPass {
                mailbox,
                cache: &mut cache,
                report,
                settled: Vec::new(),
            };
            let mut decided = Vec::new();
            for (row, result) in chunk.iter().zip(results) {
                self.decide_read(&mut pass, row, result, (mode, rejection), &mut decided)
                    .await?;
            }
            let mut staged = Vec::new();
            if let Err(e) = self.submit_decided(&mut pass, decided, &mut staged).await {
                self.keep_staged(&mut staged).await;
                return Err(e);
            }
            self.write_back_staged(&mut pass, staged, (mode, rejection))
                .await?;
        }
        Ok(())
    }

    /// Steps decide, audit and status update of one version of an item. What needs no write
    /// back of the PM's values (a version waiting for approval, a pending update, an
    /// assignment that left the project) is settled here.
    async fn prepare(
        &self,
        pass: &mut ItemPass<'_>,
        row: AssignmentState,
        item: MailboxItem,
        view: Arc<ProjectView>,
        modes: (Mode, Option<&str>),
    ) -> Result<Option<Staged>, SyncError> {
        let Some(mut decided) = self.decide(pass, row, item, view, modes).await? else {
            return Ok(None);
        };
        let outcome = match decided.update.take() {
            Some(update) => Some(self.inner.host.submit_status_update(update).await?),
            None => None,
        };
        self.take_outcome(pass, decided, outcome).await
    }

    /// Steps decide and audit of one version of an item, and the status update it makes, if
    /// any. A version already waiting for approval, or whose assignment left the project, is
    /// settled here (`None`).
    async fn decide(
        &self,
        pass: &mut ItemPass<'_>,
        row: AssignmentState,
        item: MailboxItem,
        view: Arc<ProjectView>,
        (mode, rejection): (Mode, Option<&str>),
    ) -> Result<Option<Decided>, SyncError> {
        let Some(sides) = self.sides(&view, &row, &item) else {
            self.await_plan(row, pass.report).await?;
            return Ok(None);
        };
        if awaits_approval(&row, &sides.mail) {
            self.settle_new_version(row, &item, pass.report).await?;
            return Ok(None);
        }
        let decision = self.decide_item(&view, &row, &sides, mode);
        let mut round = Round::new(view, sides, decision);
        round.audit = self.audit(pass.mailbox, row.key, &round, rejection);
        let update = self.status_update(pass.mailbox, row.key, &item, &round);
        Ok(Some(Decided {
            row,
            item,
            round,
            update,
        }))
    }

    /// One item read (or its failure) through steps decide and audit; a round that goes on
    /// to the status update and the write back is added to `decided`.
    async fn decide_read(
        &self,
        pass: &mut ItemPass<'_>,
        row: &AssignmentState,
        read: Result<MailboxItem, ItemFailure>,
        modes: (Mode, Option<&str>),
        decided: &mut Vec<Decided>,
    ) -> Result<(), SyncError> {
        match read {
            Ok(item) => {
                let Some(view) = pass.cache.get(self, &row.key).await? else {
                    debug!(key = %row.key, "project no longer published; left to the next publish");
                    return Ok(());
                };
                if let Some(d) = self.decide(pass, row.clone(), item, view, modes).await? {
                    decided.push(d);
                }
            }
            Err(ItemFailure::NotFound) => {
                self.item_deleted(pass.mailbox, row.clone(), pass.report)
                    .await?
            }
            Err(f) => pass.report.fail(row.key, pass.mailbox, &f),
        }
        Ok(())
    }

    /// Step "status update" for the rounds of a read batch: their updates go to the PM host
    /// in one call ([`PmHost::submit_status_updates`]), then each round takes its outcome in
    /// order; those going on to the write back are added to `staged`. When the host stopped
    /// at an update, the rounds before it are handled and its error returned: that round and
    /// those after it were not submitted, and the next pass decides them again.
    async fn submit_decided(
        &self,
        pass: &mut ItemPass<'_>,
        mut decided: Vec<Decided>,
        staged: &mut Vec<Staged>,
    ) -> Result<(), SyncError> {
        let submits: Vec<bool> = decided.iter().map(|d| d.update.is_some()).collect();
        let updates: Vec<StatusUpdate> =
            decided.iter_mut().filter_map(|d| d.update.take()).collect();
        let Submitted { outcomes, stopped } = if updates.is_empty() {
            Submitted::default()
        } else {
            self.inner.host.submit_status_updates(updates).await
        };
        let mut outcomes = outcomes.into_iter();
        // Set when an update is left without an outcome: it and those after it were not taken.
        let mut unanswered = false;
        for (d, submits) in decided.into_iter().zip(submits) {
            let outcome = match submits {
                false => None,
                true => match outcomes.next() {
                    Some(outcome) => Some(outcome),
                    None => {
                        unanswered = true;
                        break;
                    }
                },
            };
            if let Some(round) = self.take_outcome(pass, d, outcome).await? {
                staged.push(round);
            }
        }
        match stopped {
            Some(e) => Err(e.into()),
            // A host that answered fewer updates than it was given and named no error: the
            // rest were not taken, as far as the connector can know, and the pass must not
            // advance past them (the next pass decides them again).
            None if unanswered => Err(HostError::Other(
                "the PM host answered fewer status updates than it was given".into(),
            )
            .into()),
            None => Ok(()),
        }
    }

    /// A decided round with its status update's outcome (`None`: it made none). A pending
    /// update is settled here; anything else goes on to the write back.
    async fn take_outcome(
        &self,
        pass: &mut ItemPass<'_>,
        decided: Decided,
        outcome: Option<UpdateOutcome>,
    ) -> Result<Option<Staged>, SyncError> {
        let Decided {
            mut row,
            item,
            mut round,
            ..
        } = decided;
        if let Some(outcome) = outcome
            && let Some(update) = self
                .status_update_taken(pass, &mut row, &mut round, outcome)
                .await?
        {
            self.settle_pending(row, &item, &mut round, update).await?;
            return Ok(None);
        }
        Ok(Some(Staged { row, item, round }))
    }

    /// When the batch stops on an error: the baselines of what the PM side took and the audit
    /// records of the rounds already staged are stored (as their write backs' transaction
    /// would have), so that the next pass does not count the PM's copy of an applied edit as
    /// a PM change. Best effort: the error that stopped the batch is the one reported.
    async fn keep_staged(&self, staged: &mut [Staged]) {
        let mut transaction = Transaction::default();
        for Staged { row, round, .. } in staged.iter_mut() {
            transaction.commit.put.extend(round.unsaved_row(row));
            transaction.audit.append(&mut round.audit);
        }
        if transaction.commit.put.is_empty() && transaction.audit.is_empty() {
            return;
        }
        if let Err(e) = self.transact(transaction).await {
            warn!(error = %e, "cannot store what the PM side took before the failure");
        }
    }

    /// The prepared items of a read batch written back, at most the write batch size per
    /// UpdateItem, and each settled (`after_write`). When a part fails, the rounds of the
    /// parts not written yet are stored as `keep_staged` does.
    async fn write_back_staged(
        &self,
        pass: &mut ItemPass<'_>,
        staged: Vec<Staged>,
        modes: (Mode, Option<&str>),
    ) -> Result<(), SyncError> {
        let batch = self.inner.mailboxes.limits().write.max(1);
        let mut staged = staged.into_iter();
        loop {
            let part: Vec<Staged> = staged.by_ref().take(batch).collect();
            if part.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.write_back_part(pass, part, modes).await {
                let mut rest: Vec<Staged> = staged.collect();
                self.keep_staged(&mut rest).await;
                return Err(e);
            }
        }
    }

    /// One UpdateItem's worth of [`Engine::write_back_staged`]. The settles of its items are
    /// committed together, once all are settled, and before an item whose write met a stale
    /// change key goes back to the mailbox and the host: each settled item's journal entry
    /// stays open until then, so a crash meanwhile leaves the mailbox due for a pass, as a
    /// crash between a write and its settle always did.
    async fn write_back_part(
        &self,
        pass: &mut ItemPass<'_>,
        mut part: Vec<Staged>,
        modes: (Mode, Option<&str>),
    ) -> Result<(), SyncError> {
        let written = self
            .write_back(
                pass,
                part.iter_mut()
                    .map(|s| (&s.row, &s.item, &mut s.round))
                    .collect(),
            )
            .await?;
        let mut result = Ok(());
        for (Staged { row, item, round }, written) in part.into_iter().zip(written) {
            let stale = matches!(
                written,
                WriteBack::Refused {
                    failure: ItemFailure::StaleChangeKey,
                    ..
                }
            );
            if stale && let Err(e) = self.commit_settled(pass).await {
                result = Err(e);
                break;
            }
            if let Err(e) = self
                .after_write(pass, row, item, round, written, modes)
                .await
            {
                result = Err(e);
                break;
            }
        }
        // Stored even when an item failed: those settled before it are done.
        let committed = self.commit_settled(pass).await;
        result.and(committed)
    }

    /// Commits the settles waiting in `pass` as one transaction.
    async fn commit_settled(&self, pass: &mut ItemPass<'_>) -> Result<(), SyncError> {
        let settled = std::mem::take(&mut pass.settled);
        if settled.is_empty() {
            return Ok(());
        }
        let mut all = Transaction::default();
        for t in settled {
            all.commit.put.extend(t.commit.put);
            all.commit.close_journal.extend(t.commit.close_journal);
            all.audit.extend(t.audit);
        }
        self.transact(all).await?;
        Ok(())
    }

    /// After the write back: a stale change key reads the item again and goes through the
    /// steps again (up to `max_attempts` in all); anything else is settled.
    async fn after_write(
        &self,
        pass: &mut ItemPass<'_>,
        mut row: AssignmentState,
        mut item: MailboxItem,
        mut round: Round,
        mut written: WriteBack,
        modes: (Mode, Option<&str>),
    ) -> Result<(), SyncError> {
        let mut attempts = 0u32;
        loop {
            match written {
                WriteBack::Refused {
                    failure: ItemFailure::StaleChangeKey,
                    journal,
                } if attempts + 1 < self.inner.config.max_attempts => {
                    // Changed again while we decided: read it again and decide again.
                    attempts += 1;
                    let fresh = self.reread(pass.mailbox, &item, &round, journal).await?;
                    let Some(fresh) = fresh else {
                        return self.item_deleted(pass.mailbox, row, pass.report).await;
                    };
                    match self.prepare(pass, row, fresh, round.view, modes).await? {
                        None => return Ok(()),
                        Some(next) => (row, item, round) = (next.row, next.item, next.round),
                    }
                    written = self.write_back_one(pass, &row, &item, &mut round).await?;
                }
                written => {
                    return self.settle(pass, row, &item, &mut round, written).await;
                }
            }
        }
    }

    /// The two sides of an item's version, or `None` when its assignment left the project.
    fn sides(
        &self,
        view: &ProjectView,
        row: &AssignmentState,
        item: &MailboxItem,
    ) -> Option<ItemSides> {
        let unit = view.unit(row.key.assignment)?;
        let zone = owner_zone(&view.project, &unit);
        let pm = self.inner.table.to_mail(&view.project, &unit, zone);
        let base = row
            .baseline
            .clone()
            .unwrap_or_else(|| Baseline::new(pm.clone()));
        Some(ItemSides {
            zone,
            pm,
            mail: item.values.clone(),
            base,
            mail_modified: item.modified_at,
        })
    }

    /// Step "decide" for one item, with the engine's table, policy and clock-skew tolerance.
    fn decide_item(
        &self,
        view: &ProjectView,
        row: &AssignmentState,
        sides: &ItemSides,
        mode: Mode,
    ) -> ItemDecision {
        let config = &self.inner.config;
        let skew = chrono::Duration::from_std(config.clock_skew)
            .unwrap_or_else(|_| chrono::Duration::zero());
        decide_item(
            &self.inner.table,
            mode,
            &row.status,
            sides,
            |f| {
                view.unit(row.key.assignment)
                    .and_then(|unit| pm_modified(&unit, f))
            },
            config.policy,
            skew,
        )
    }

    /// Step "audit": every decision that changes something, and a changed status note, is
    /// logged; the records returned go to the audit log in the item's next transaction, with
    /// the state they explain (the one before the write back, or the settle).
    fn audit(
        &self,
        mailbox: &MailboxAddress,
        key: AssignmentKey,
        round: &Round,
        rejection: Option<&str>,
    ) -> Vec<AuditRecord> {
        let Round {
            sides,
            decision,
            now,
            ..
        } = round;
        let mut audit: Vec<AuditRecord> = decision
            .audited
            .iter()
            .filter_map(|d| {
                Some(AuditRecord {
                    at: *now,
                    key,
                    mailbox: mailbox.clone(),
                    field: d.field,
                    pm_value: field_text(&sides.pm, d.field),
                    mail_value: field_text(&sides.mail, d.field),
                    rule: d.rule?,
                    winner: d.winner,
                    note: rejection
                        .filter(|_| d.rule == Some(DecisionRule::Rejected))
                        .map(|reason| format!("rejected by the PM side: {reason}")),
                })
            })
            .collect();
        if decision.note_changed {
            audit.push(AuditRecord {
                at: *now,
                key,
                mailbox: mailbox.clone(),
                field: MailField::PercentComplete,
                pm_value: note_text(sides.base.values.status_note),
                mail_value: note_text(sides.mail.status_note),
                rule: DecisionRule::StatusNote,
                winner: Side::Mail,
                note: None,
            });
        }
        for a in &audit {
            info!(
                key = %a.key,
                mailbox = %a.mailbox,
                field = a.field.name(),
                pm = %a.pm_value,
                mail = %a.mail_value,
                rule = ?a.rule,
                winner = ?a.winner,
                "sync decision"
            );
        }
        Metrics::add(&self.inner.metrics.conflicts, decision.by_policy);
        audit
    }

    /// Step "status update", the host's answer: the fields taken from the mailbox, and a
    /// changed status note, went to the PM host as one task status update. Applied or
    /// rejected, `round` then holds the PM's resulting values; applied, the row's baseline of
    /// the fields taken is stored by the item's next transaction, before any other remote
    /// call; pending, its id is returned and nothing goes back to the mailbox until the status
    /// manager decides.
    async fn status_update_taken(
        &self,
        pass: &mut ItemPass<'_>,
        row: &mut AssignmentState,
        round: &mut Round,
        outcome: UpdateOutcome,
    ) -> Result<Option<StatusUpdateId>, SyncError> {
        let metrics = &self.inner.metrics;
        match outcome {
            UpdateOutcome::Applied { assignment, .. } => {
                pass.report.applied += 1;
                Metrics::add(&metrics.updates_applied, 1);
                // Both sides hold this version's values for the fields taken: that is the
                // baseline from now on, stored before anything else is tried: by the
                // transaction that opens the write back's journal entry, or by the settle when
                // nothing is written back (no remote call comes between). Whatever then fails
                // (the write back, the read after a stale change key, the process), the next
                // decision starts from it; otherwise the PM's copy of the edit would count as a
                // change of its own and could win a tie over a newer edit made meanwhile.
                row.baseline = Some(round.baseline_taken());
                round.row_unsaved = true;
                round.pm_decided(&self.inner.table, pass.cache, row.key, assignment);
                Ok(None)
            }
            UpdateOutcome::Pending { id } => {
                pass.report.pending += 1;
                Metrics::add(&metrics.updates_pending, 1);
                Ok(Some(id))
            }
            UpdateOutcome::Rejected {
                assignment, reason, ..
            } => {
                pass.report.rejected += 1;
                Metrics::add(&metrics.updates_rejected, 1);
                info!(key = %row.key, %reason, "status update rejected; restoring PM values");
                round.pm_decided(&self.inner.table, pass.cache, row.key, assignment);
                // The audit said the mailbox's values were taken; it also says that the PM
                // side refused them, and its reason (a validation message, a rule of the
                // host), so that nothing a person reported disappears without a trace.
                let target = round.target();
                let note = format!("rejected by the PM side: {reason}");
                let records = round
                    .decision
                    .take
                    .iter()
                    .map(|f| AuditRecord {
                        at: round.now,
                        key: row.key,
                        mailbox: pass.mailbox.clone(),
                        field: *f,
                        pm_value: field_text(&target, *f),
                        mail_value: field_text(&round.sides.mail, *f),
                        rule: DecisionRule::Rejected,
                        winner: Side::Pm,
                        note: Some(note.clone()),
                    })
                    .collect();
                self.inner.state.append_audit(records).await?;
                Ok(None)
            }
        }
    }

    /// The status update of a round: the fields taken and a changed note; `None` when there is
    /// nothing to submit.
    fn status_update(
        &self,
        mailbox: &MailboxAddress,
        key: AssignmentKey,
        item: &MailboxItem,
        round: &Round,
    ) -> Option<StatusUpdate> {
        let Round {
            view,
            sides,
            decision,
            now,
            ..
        } = round;
        if decision.take.is_empty() && !decision.note_changed {
            return None;
        }
        let unit = view.unit(key.assignment)?;
        let source = UpdateSource {
            mailbox: mailbox.to_string(),
            item_id: item.item.item_id.clone(),
            change_key: item.item.change_key.clone(),
            modified_at: item.modified_at.unwrap_or(*now),
        };
        let inbound = self.inner.table.status_update(
            &view.project,
            &unit,
            sides.zone,
            &sides.mail,
            &decision.take,
            source.clone(),
        );
        let note = decision.note_changed.then(|| StatusNoteChange {
            old: sides.base.values.status_note.map(|n| n.as_str().to_owned()),
            new: sides.mail.status_note.map(|n| n.as_str().to_owned()),
        });
        if let Some(note) = &note {
            info!(key = %key, %note, "status note from the mailbox");
        }
        match (inbound.update, note) {
            (Some(update), note) => Some(StatusUpdate {
                status_note: note,
                ..update
            }),
            (None, Some(note)) => Some(StatusUpdate {
                key,
                changes: Vec::new(),
                source,
                status_note: Some(note),
                completed_on: None,
            }),
            (None, None) => None,
        }
    }

    /// Step "write back" (the claim's mapping back): the PM's values go to the items where
    /// they show others, under the journal, each with the change key read (a stale key is
    /// refused). The items' journal entries are opened in one transaction with what their
    /// rounds have not stored yet (audit records, the baselines of what the PM side took), and
    /// the writes go out in one UpdateItem. One answer per item, in order.
    async fn write_back(
        &self,
        pass: &mut ItemPass<'_>,
        items: Vec<(&AssignmentState, &MailboxItem, &mut Round)>,
    ) -> Result<Vec<WriteBack>, SyncError> {
        let mailbox = pass.mailbox;
        let mut answers: Vec<Option<WriteBack>> = Vec::with_capacity(items.len());
        let mut transaction = Transaction::default();
        let mut writes = Vec::new();
        for (row, item, round) in items {
            let target = round.target();
            if self
                .inner
                .table
                .updates(&round.sides.mail, &target)
                .is_empty()
            {
                answers.push(Some(WriteBack::Unneeded));
                continue;
            }
            answers.push(None);
            transaction.commit.put.extend(round.unsaved_row(row));
            transaction.audit.append(&mut round.audit);
            writes.push(ItemWrite {
                key: row.key,
                item: item.item.clone(),
                from: round.sides.mail.clone(),
                to: target,
            });
        }
        if writes.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        transaction.open_journal =
            journal_entries(mailbox, writes.iter().map(|w| w.key), WriteKind::Update);
        let journal = self.transact(transaction).await?;
        let results = self
            .inner
            .mailboxes
            .update(mailbox, &writes)
            .await
            .map_err(|e| Arc::new(SyncError::mailbox(mailbox, e)));
        let mut results = match results {
            Ok(r) => {
                self.inner.own_writes.wrote(r.iter().flatten());
                r.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(e) => writes.iter().map(|_| Err(Arc::clone(&e))).collect(),
        }
        .into_iter();
        let mut journal = journal.into_iter();
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    let journal: Vec<i64> = journal.next().into_iter().collect();
                    match results.next() {
                        Some(Ok(Ok(item))) => {
                            pass.report.written += 1;
                            Metrics::add(&self.inner.metrics.written, 1);
                            WriteBack::Written { item, journal }
                        }
                        Some(Ok(Err(failure))) => WriteBack::Refused { failure, journal },
                        None => WriteBack::Refused {
                            failure: ItemFailure::Transient("no answer".into()),
                            journal,
                        },
                        Some(Err(e)) => WriteBack::CallFailed(e),
                    }
                })
            })
            .collect())
    }

    /// [`Engine::write_back`] of one item.
    async fn write_back_one(
        &self,
        pass: &mut ItemPass<'_>,
        row: &AssignmentState,
        item: &MailboxItem,
        round: &mut Round,
    ) -> Result<WriteBack, SyncError> {
        let mut answers = self.write_back(pass, vec![(row, item, round)]).await?;
        Ok(answers.pop().unwrap_or(WriteBack::Refused {
            failure: ItemFailure::Transient("no answer".into()),
            journal: Vec::new(),
        }))
    }

    /// After a stale change key: closes the write's journal entry and reads the item again
    /// (`None`: it is gone). The next round decides from the row's baseline, which step
    /// "status update" already moved to what the PM side took.
    async fn reread(
        &self,
        mailbox: &MailboxAddress,
        item: &MailboxItem,
        round: &Round,
        journal: Vec<i64>,
    ) -> Result<Option<MailboxItem>, SyncError> {
        self.close_journal(journal).await?;
        self.refetch(mailbox, &item.item.item_id, round.sides.zone)
            .await
    }

    /// Step "settle": records what the round left, in one commit with the write's journal
    /// entry: the new baseline when the item is in step, the failure when it was refused (parked
    /// after repeated failures), only the failure when the write failed as a whole.
    async fn settle(
        &self,
        pass: &mut ItemPass<'_>,
        row: AssignmentState,
        item: &MailboxItem,
        round: &mut Round,
        written: WriteBack,
    ) -> Result<(), SyncError> {
        match written {
            WriteBack::Unneeded => {
                if changed_fields(&round.sides.mail, &round.target()).is_empty()
                    && round.decision.take.is_empty()
                {
                    pass.report.unchanged += 1;
                }
                self.settle_in_step(pass, row, item.item.clone(), round, Vec::new());
                Ok(())
            }
            WriteBack::Written { item, journal } => {
                self.settle_in_step(pass, row, item, round, journal);
                Ok(())
            }
            WriteBack::Refused {
                failure: ItemFailure::NotFound,
                journal,
            } => {
                self.close_journal(journal).await?;
                self.item_deleted(pass.mailbox, row, pass.report).await
            }
            WriteBack::Refused { failure, journal } => {
                self.settle_refused(pass, row, item, round, failure, journal);
                Ok(())
            }
            WriteBack::CallFailed(e) => {
                // The call failed as a whole: the journal stays open and the next pass tries
                // again (what the PM side took is already the stored baseline: the journal's
                // transaction stored it).
                pass.report.fail(row.key, pass.mailbox, &e);
                Ok(())
            }
        }
    }

    /// Settles an item in step: the new baseline (what both sides hold now), hashes, and the
    /// status that is left (synced, still pending, or in conflict). Its transaction waits in
    /// `pass` for those of the write batch's other items.
    fn settle_in_step(
        &self,
        pass: &mut ItemPass<'_>,
        mut row: AssignmentState,
        item: ItemRef,
        round: &mut Round,
        journal: Vec<i64>,
    ) {
        let target = round.target();
        let Round {
            view,
            sides,
            decision,
            target_pm,
            now,
            ..
        } = &*round;
        let mut baseline = baseline_after(
            &sides.base,
            &target,
            &decision.kept(),
            &sides.mail,
            sides.mail_modified,
        );
        if let Some(unit) = view.unit(row.key.assignment) {
            for f in changed_fields(&sides.base.values, target_pm) {
                baseline
                    .pm_changed
                    .insert(f, pm_modified(&unit, f).unwrap_or(*now));
            }
        }
        row.baseline = Some(baseline);
        row.item = Some(item);
        row.pm_hash = Some(target_pm.hash());
        row.mail_hash = Some(target.hash());
        row.attempts = 0;
        row.last_error = None;
        row.last_sync = Some(*now);
        row.status = if !decision.held.is_empty() {
            // Still waiting for the status manager; this version of the item is known.
            match row.status {
                SyncStatus::PendingApproval { update, fields, .. } => SyncStatus::PendingApproval {
                    update,
                    observed: sides.mail.hash(),
                    fields,
                },
                other => other,
            }
        } else if decision.conflicts.is_empty() {
            SyncStatus::Synced
        } else {
            pass.report.conflicts += 1;
            let since = match &row.status {
                SyncStatus::Conflict { since, .. } => *since,
                _ => None,
            };
            SyncStatus::Conflict {
                fields: decision.conflicts.clone(),
                since: Some(since.unwrap_or(*now)),
                mail: Some(Box::new(sides.mail.clone())),
            }
        };
        pass.settled.push(settle_transaction(round, row, journal));
    }

    /// Settles an item whose write was refused: the failure is counted, and after repeated or
    /// final failures the item is parked. Its transaction waits in `pass` as
    /// [`Engine::settle_in_step`]'s does.
    fn settle_refused(
        &self,
        pass: &mut ItemPass<'_>,
        mut row: AssignmentState,
        item: &MailboxItem,
        round: &mut Round,
        failure: ItemFailure,
        journal: Vec<i64>,
    ) {
        let mail = &round.sides.mail;
        row.attempts += 1;
        row.last_error = Some(failure.to_string());
        if !failure.is_retryable() || row.attempts >= self.inner.config.max_attempts {
            warn!(key = %row.key, error = %failure, "parking item after repeated failures");
            row.status = SyncStatus::Parked {
                reason: failure.to_string(),
            };
            Metrics::add(&self.inner.metrics.parked, 1);
            // The version read is taken (its edits went to the PM side): the passes skip it
            // until it changes again, and what must still be written waits for the
            // reconciliation's publish, which finds the baseline (what the item shows) behind
            // the PM values. Not every pass of the mailbox tries it again, and its sync state
            // moves on.
            row.baseline = Some(baseline_after(
                &round.sides.base,
                mail,
                &round.decision.kept(),
                mail,
                round.sides.mail_modified,
            ));
            row.item = Some(item.item.clone());
            row.pm_hash = Some(round.target_pm.hash());
            row.mail_hash = Some(mail.hash());
            row.last_sync = Some(round.now);
            pass.report.parked += 1;
        }
        pass.report.fail(row.key, pass.mailbox, &failure);
        pass.settled.push(settle_transaction(round, row, journal));
    }

    /// Settles an item whose status update waits for approval: its fields are held, the note
    /// that went with it is decided, and this version of the item is known.
    async fn settle_pending(
        &self,
        mut row: AssignmentState,
        item: &MailboxItem,
        round: &mut Round,
        update: StatusUpdateId,
    ) -> Result<(), SyncError> {
        let mail = &round.sides.mail;
        row.status = SyncStatus::PendingApproval {
            update,
            observed: mail.hash(),
            fields: round
                .decision
                .take
                .iter()
                .map(|f| (*f, mail.field_hash(*f)))
                .collect(),
        };
        if let Some(b) = row.baseline.as_mut() {
            b.values.status_note = mail.status_note;
        }
        row.item = Some(item.item.clone());
        row.last_sync = Some(round.now);
        self.transact(settle_transaction(round, row, Vec::new()))
            .await?;
        Ok(())
    }

    /// An item edited while its assignment is out of the plan (its deletion held by the
    /// mass-delete guard): there is no assignment to submit the edit to, and taking the
    /// version would lose it (the baseline would then say the mailbox agrees, and the plan's
    /// values would overwrite the edit when the assignment comes back). The row is marked
    /// [`SyncStatus::AwaitingPlan`] and keeps the version it took last, so the edit waits in
    /// the mailbox; the publish that finds the assignment in the plan again reads and decides
    /// the item. A row waiting for the status manager keeps waiting: that update is the
    /// host's to settle.
    async fn await_plan(
        &self,
        mut row: AssignmentState,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        report.awaiting_plan += 1;
        if matches!(
            row.status,
            SyncStatus::AwaitingPlan { .. } | SyncStatus::PendingApproval { .. }
        ) {
            debug!(key = %row.key, "assignment still out of the plan; the edit waits");
            return Ok(());
        }
        warn!(
            key = %row.key,
            "a mailbox edit waits: its assignment is no longer in the plan"
        );
        row.status = SyncStatus::AwaitingPlan { since: Utc::now() };
        self.commit(Commit {
            put: vec![row],
            ..Commit::default()
        })
        .await?;
        Ok(())
    }

    /// Settles an item whose edit already waits for approval: only its version moved.
    async fn settle_new_version(
        &self,
        mut row: AssignmentState,
        item: &MailboxItem,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        row.item = Some(item.item.clone());
        self.commit(Commit {
            put: vec![row],
            ..Commit::default()
        })
        .await?;
        report.unchanged += 1;
        Ok(())
    }

    /// Closes journal entries whose writes' outcome is known and needs no other record.
    async fn close_journal(&self, journal: Vec<i64>) -> Result<(), SyncError> {
        self.commit(Commit {
            close_journal: journal,
            ..Commit::default()
        })
        .await?;
        Ok(())
    }

    async fn refetch(
        &self,
        mailbox: &MailboxAddress,
        item_id: &str,
        zone: chrono_tz::Tz,
    ) -> Result<Option<MailboxItem>, SyncError> {
        let request = FetchRequest {
            item_id: item_id.to_string(),
            zone,
        };
        let mut r = self
            .inner
            .mailboxes
            .fetch(mailbox, std::slice::from_ref(&request))
            .await
            .map_err(|e| SyncError::mailbox(mailbox, e))?;
        match r.pop() {
            Some(Ok(item)) => Ok(Some(item)),
            Some(Err(ItemFailure::NotFound)) | None => Ok(None),
            Some(Err(f)) => Err(SyncError::mailbox(
                mailbox,
                MailboxError::Unavailable(f.to_string()),
            )),
        }
    }

    /// A tracked task is gone from its mailbox: follow the configured rule.
    pub(crate) async fn item_deleted(
        &self,
        mailbox: &MailboxAddress,
        mut row: AssignmentState,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        report.deleted += 1;
        let rule = self.inner.config.deleted_task;
        info!(key = %row.key, %mailbox, ?rule, "task deleted in the mailbox");
        if rule == DeletedTaskRule::CompleteOnPm
            && let Some(view) = ProjectCache::default().get(self, &row.key).await?
            && let Some(unit) = view.unit(row.key.assignment)
        {
            let old = unit.assignment.percent_work_complete;
            if old != Percent::FULL {
                let update = StatusUpdate {
                    key: row.key,
                    changes: vec![FieldChange {
                        field: AssignmentField::PercentWorkComplete,
                        old: FieldValue::Percent(old),
                        new: FieldValue::Percent(Percent::FULL),
                    }],
                    source: UpdateSource {
                        mailbox: mailbox.to_string(),
                        item_id: row
                            .item
                            .as_ref()
                            .map(|i| i.item_id.clone())
                            .unwrap_or_default(),
                        change_key: row
                            .item
                            .as_ref()
                            .map(|i| i.change_key.clone())
                            .unwrap_or_default(),
                        modified_at: Utc::now(),
                    },
                    status_note: None,
                    completed_on: None,
                };
                match self.inner.host.submit_status_update(update).await? {
                    UpdateOutcome::Applied { .. } => report.applied += 1,
                    UpdateOutcome::Pending { .. } => report.pending += 1,
                    UpdateOutcome::Rejected { .. } => report.rejected += 1,
                }
            }
        }
        row.item = None;
        row.status = if rule == DeletedTaskRule::Recreate {
            // The next publish creates it again.
            SyncStatus::Synced
        } else {
            SyncStatus::Detached
        };
        row.last_sync = Some(Utc::now());
        self.commit(Commit {
            put: vec![row],
            ..Commit::default()
        })
        .await?;
        Ok(())
    }

    /// The PM side decided a pending status update: step write back (see the [`sync`](super)
    /// module doc) for its resulting values, or the PM values restored after a rejection.
    #[instrument(skip_all, fields(key = %key))]
    pub async fn map_back(
        &self,
        key: AssignmentKey,
        outcome: &UpdateOutcome,
    ) -> Result<InboundReport, SyncError> {
        let mut report = InboundReport::default();
        let Some(mut row) = self.inner.state.assignment(&key).await? else {
            return Ok(report);
        };
        if row.item.is_none() {
            return Ok(report);
        }
        let mailbox = row.mailbox.clone();
        let _guard = self.lock(&mailbox).await;
        if !self.holds(&mailbox) {
            // The holder maps it back when it asks the host again (recheck_pending).
            return Ok(report);
        }
        let (mode, rejection) = match outcome {
            UpdateOutcome::Applied { .. } => {
                report.applied += 1;
                (Mode::Normal, None)
            }
            UpdateOutcome::Rejected { reason, .. } => {
                report.rejected += 1;
                (Mode::Restore, Some(reason.as_str()))
            }
            UpdateOutcome::Pending { .. } => return Ok(report),
        };
        row.status = SyncStatus::Synced;
        self.process_rows_noted(&mailbox, vec![row], mode, rejection, &mut report)
            .await?;
        Ok(report)
    }

    /// Brings every tracked assignment of a mailbox back in step after a decision or a lost
    /// state, item by item (no SyncFolderItems).
    pub async fn refresh(
        &self,
        mailbox: &MailboxAddress,
        keys: &[AssignmentKey],
    ) -> Result<InboundReport, SyncError> {
        let _guard = self.lock(mailbox).await;
        let mut rows = Vec::new();
        for k in keys {
            if let Some(r) = self.inner.state.assignment(k).await?
                && r.item.is_some()
            {
                rows.push(r);
            }
        }
        let mut report = InboundReport::default();
        self.process_rows(mailbox, rows, Mode::Normal, &mut report)
            .await?;
        Ok(report)
    }
}

/// A mailbox's tracked rows, by item id.
type Rows = HashMap<String, AssignmentState>;

/// How a pass over named items ended.
enum ItemPassEnd {
    /// Done: its report.
    Done(InboundReport),
    /// The listing is needed (after what this report says was done).
    List(InboundReport),
}

/// Logs a pass's report when it changed something.
fn log_handled(report: &InboundReport) {
    if report.applied + report.written + report.deleted + report.conflicts > 0 {
        info!(
            examined = report.examined,
            applied = report.applied,
            pending = report.pending,
            written = report.written,
            conflicts = report.conflicts,
            deleted = report.deleted,
            failed = report.failed,
            "mailbox changes handled"
        );
    }
}

/// What a mailbox's change pages listed.
struct Changes {
    changed: Vec<ChangedItem>,
    /// Ids of items deleted.
    deleted: Vec<String>,
    /// The state the next pass resumes from.
    sync_state: Option<String>,
    /// The stored sync state was rejected: these are the pages of a full pass.
    rebased: bool,
}

/// Rows with an item, by its id.
fn by_item_id(rows: Vec<AssignmentState>) -> Rows {
    rows.into_iter()
        .filter_map(|s| Some((s.item.as_ref()?.item_id.clone(), s)))
        .collect()
}

/// The tracked row of an item named by a change page, once per pass.
fn take_row(
    rows: &mut Rows,
    seen: &mut std::collections::HashSet<String>,
    item_id: &str,
) -> Option<AssignmentState> {
    if !seen.insert(item_id.to_string()) {
        return None;
    }
    rows.remove(item_id)
}

/// Whether a listed change is the version taskbridge wrote or read last: its own write is
/// never echoed back, unless the server merged someone's edit into it (the content says so).
fn is_own_version(change: &ChangedItem, row: &AssignmentState) -> bool {
    let known = row.item.as_ref().map(|i| i.change_key.as_str());
    if known != Some(change.item.change_key.as_str()) {
        return false;
    }
    let merged = match (&change.values, &row.baseline) {
        (Some(values), Some(base)) => {
            changed_fields(&base.values, values)
                .into_iter()
                .any(|f| f != MailField::Body)
                || base.values.status_note_changed(values)
        }
        _ => false,
    };
    !merged
}

/// What the steps of one item share with the pass that reads it.
struct ItemPass<'a> {
    mailbox: &'a MailboxAddress,
    /// The projects of the pass, updated when the host applies or rejects a status update.
    cache: &'a mut ProjectCache,
    report: &'a mut InboundReport,
    /// Settles of a write batch's items, committed together (`Engine::commit_settled`).
    settled: Vec<Transaction>,
}

/// One round of an item's steps (`Engine::prepare`): a version of the item decided, and what
/// the PM side holds after the status update.
struct Round {
    /// The project; after a status update the host applied or rejected, its resulting values.
    view: Arc<ProjectView>,
    sides: ItemSides,
    decision: ItemDecision,
    /// What the PM side holds for the item, with the item's status note (the note is never
    /// written: what the item shows of it is what the mailbox holds).
    target_pm: MailValues,
    now: DateTime<Utc>,
    /// The audit records of the decision, until a transaction of the item stores them.
    audit: Vec<AuditRecord>,
    /// The row holds a baseline no transaction has stored yet (what the PM side took).
    row_unsaved: bool,
}

impl Round {
    fn new(view: Arc<ProjectView>, sides: ItemSides, decision: ItemDecision) -> Self {
        let target_pm = MailValues {
            status_note: sides.mail.status_note,
            ..sides.pm.clone()
        };
        Round {
            view,
            sides,
            decision,
            target_pm,
            now: Utc::now(),
            audit: Vec::new(),
            row_unsaved: false,
        }
    }

    /// The row to store with the round's next transaction: `row` when it holds a baseline not
    /// stored yet (then it counts as stored).
    fn unsaved_row(&mut self, row: &AssignmentState) -> Vec<AssignmentState> {
        if std::mem::take(&mut self.row_unsaved) {
            vec![row.clone()]
        } else {
            Vec::new()
        }
    }

    /// What the item should show: the PM's values, except fields kept in conflict or held for
    /// a pending update.
    fn target(&self) -> MailValues {
        let mut target = self.target_pm.clone();
        for f in self.decision.kept() {
            copy_field(&mut target, &self.sides.mail, f);
        }
        target
    }

    /// The host applied or rejected the status update: `assignment` is what it keeps.
    fn pm_decided(
        &mut self,
        table: &FieldTable,
        cache: &mut ProjectCache,
        key: AssignmentKey,
        assignment: Assignment,
    ) {
        // From the pass's latest view of the project: the rounds of a read batch were decided
        // before any of their updates was taken, and each puts its own assignment in.
        let base = cache
            .latest(key.project)
            .filter(|v| v.unit(key.assignment).is_some())
            .unwrap_or_else(|| Arc::clone(&self.view));
        let view = Arc::new(base.with_assignment(assignment));
        cache.put(Arc::clone(&view));
        self.view = view;
        let unit = self
            .view
            .unit(key.assignment)
            .expect("the assignment is still in the project");
        self.target_pm = MailValues {
            status_note: self.sides.mail.status_note,
            ..table.to_mail(&self.view.project, &unit, self.sides.zone)
        };
    }

    /// The baseline once the PM side took the fields of this round's status update.
    fn baseline_taken(&self) -> Baseline {
        baseline_taken(
            &self.sides.base,
            &self.sides.mail,
            &self.decision.take,
            self.sides.mail_modified,
        )
    }
}

/// An item's version through steps decide and audit (`Engine::decide`), with the status
/// update it makes, on its way to the PM host.
struct Decided {
    row: AssignmentState,
    item: MailboxItem,
    round: Round,
    /// `None` when the round takes nothing from the mailbox.
    update: Option<StatusUpdate>,
}

/// An item's version through steps decide, audit and status update (`Engine::prepare`), on
/// its way to the write back.
struct Staged {
    row: AssignmentState,
    item: MailboxItem,
    round: Round,
}

/// What the step "write back" gave.
enum WriteBack {
    /// The item shows the PM's values already: nothing was written.
    Unneeded,
    /// Written: the item's new version, and the journal entry its commit closes.
    Written { item: ItemRef, journal: Vec<i64> },
    /// The mailbox refused the write of this item.
    Refused {
        failure: ItemFailure,
        journal: Vec<i64>,
    },
    /// The call failed as a whole: whether the item was written is unknown, so its journal
    /// entry stays open. (Shared by the items of the call.)
    CallFailed(Arc<SyncError>),
}

/// A settle's transaction: the row as the round leaves it, the journal entry of its write
/// closed, and the audit records not stored before the write back (all of them when nothing
/// was written).
fn settle_transaction(round: &mut Round, row: AssignmentState, journal: Vec<i64>) -> Transaction {
    round.row_unsaved = false;
    Transaction {
        commit: Commit {
            put: vec![row],
            close_journal: journal,
            ..Commit::default()
        },
        audit: std::mem::take(&mut round.audit),
        open_journal: Vec::new(),
    }
}

/// Whether the version read is the edit that already waits for approval (only its change key
/// moved).
fn awaits_approval(row: &AssignmentState, mail: &MailValues) -> bool {
    matches!(&row.status, SyncStatus::PendingApproval { observed, .. } if *observed == mail.hash())
}

/// A status note as the audit shows it.
fn note_text(note: Option<crate::mapping::StatusNote>) -> String {
    note.map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "none".into())
}

/// The baseline once the PM side has taken `taken` fields of `mail` (read at `read_at`): those
/// fields, and the status note, hold the mailbox's values on both sides.
fn baseline_taken(
    base: &Baseline,
    mail: &MailValues,
    taken: &[MailField],
    read_at: Option<chrono::DateTime<Utc>>,
) -> Baseline {
    let mut baseline = base.clone();
    for f in taken {
        copy_field(&mut baseline.values, mail, *f);
        if let Some(at) = read_at {
            baseline.mail_changed.insert(*f, at);
        }
    }
    baseline.values.status_note = mail.status_note;
    baseline
}

/// The baseline after a decision: `values`, except the fields in conflict, which keep the old
/// baseline so that they stay in conflict until someone decides; and the time of the mailbox's
/// edit on every field the mailbox changed.
fn baseline_after(
    base: &Baseline,
    values: &MailValues,
    conflicts: &[MailField],
    mail: &MailValues,
    modified_at: Option<chrono::DateTime<Utc>>,
) -> Baseline {
    let mut baseline = base.clone();
    let mut values = values.clone();
    for f in conflicts {
        copy_field(&mut values, &base.values, *f);
    }
    if let Some(at) = modified_at {
        for f in changed_fields(&base.values, mail) {
            baseline.mail_changed.insert(f, at);
        }
    }
    baseline.values = values;
    baseline
}
