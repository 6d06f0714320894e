//! Changes made in mailboxes (claim steps "receiving a notification", "requesting the task
//! attributes", "determining whether they are newer", "replacing" them "via a task status
//! update", and "mapping" the result back).
//!
//! A mailbox pass asks SyncFolderItems what changed since the last pass, skips items whose
//! change key is the one taskbridge last wrote or read (its own writes, never echoed), reads the
//! others with GetItem, decides each field against the baseline, submits the mailbox's newer
//! values to the PM host as one status update per item, and writes the PM's resulting values
//! back.

use std::collections::HashMap;

use chrono::Utc;
use tracing::{debug, info, instrument, warn};

use super::config::DeletedTaskRule;
use super::decide::{Verdict, decide, status_note_changed};
use super::engine::{
    Engine, Metrics, ProjectCache, SyncError, copy_field, field_text, pm_modified,
};
use super::mailbox::{
    FetchRequest, ItemFailure, ItemWrite, MailboxError, MailboxItem, MailboxStore,
};
use super::publish::{item_error, journal_entries};
use super::report::InboundReport;
use crate::mapping::{MailField, MailValues, changed_fields, owner_zone};
use crate::pm::{
    AssignmentField, AssignmentKey, FieldChange, FieldValue, Percent, PmHost, StatusNoteChange,
    StatusUpdate, UpdateOutcome, UpdateSource,
};
use crate::state::{
    AssignmentState, AuditRecord, Baseline, Commit, DecisionRule, MailboxAddress, MailboxState,
    Side, StateStore, SyncStatus, WriteKind,
};

/// How an item is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Decide field by field against the baseline.
    Normal,
    /// The item was found tagged after a crash: what it held when created is unknown, so
    /// every field the two sides disagree on is decided by the policy.
    Adopt,
    /// The status manager rejected the mailbox's values: restore the PM values everywhere.
    Restore,
}

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
        let state = self.ensure_mailbox(mailbox).await?;
        let mut report = InboundReport::default();
        // A full pass compares every tracked row with the listing; an incremental one reads
        // only the rows of the items its pages name, found by the mailbox's item list.
        let (mut rows, zones) = if state.sync_state.is_none() {
            let rows = self.tracked_rows(mailbox).await?;
            let zones: HashMap<String, chrono_tz::Tz> = rows
                .iter()
                .filter_map(|(id, r)| Some((id.clone(), r.baseline.as_ref()?.values.zone)))
                .collect();
            (Some(rows), zones)
        } else {
            let zones = self
                .inner
                .state
                .mailbox_items(mailbox)
                .await?
                .into_iter()
                .filter_map(|i| Some((i.item_id, i.zone?)))
                .collect();
            (None, zones)
        };
        // Items already taken from `rows` (or read one by one): each is handled once per pass.
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut sync_state = state.sync_state.clone();
        let mut changed = Vec::new();
        let mut deleted = Vec::new();
        let mut rebased = false;
        loop {
            match self
                .inner
                .mailboxes
                .changes(mailbox, sync_state.as_deref(), &zones)
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
                    // Start over with a full pass: it lists every item, and items are only
                    // ever compared, so nothing is duplicated or deleted.
                    warn!("sync state rejected; re-basing on a full pass");
                    rebased = true;
                    sync_state = None;
                    changed.clear();
                    deleted.clear();
                }
                Err(e) => return Err(SyncError::mailbox(mailbox, e)),
            }
        }
        let full_pass = state.sync_state.is_none() || rebased;
        let mut todo = Vec::new();
        for change in changed {
            let Some(row) = self
                .take_row(mailbox, &mut rows, &mut seen, &change.item.item_id)
                .await?
            else {
                continue; // not ours
            };
            report.examined += 1;
            let seen = row.item.as_ref().map(|i| i.change_key.as_str());
            if seen == Some(change.item.change_key.as_str()) {
                // The version we wrote or read last: our own write is never echoed back,
                // unless the server merged someone's edit into it (the content says so).
                let merged = match (&change.values, &row.baseline) {
                    (Some(values), Some(base)) => {
                        changed_fields(&base.values, values)
                            .into_iter()
                            .any(|f| f != MailField::Body)
                            || base.values.status_note_changed(values)
                    }
                    _ => false,
                };
                if !merged {
                    report.unchanged += 1;
                    continue;
                }
            }
            todo.push(row);
        }
        for id in &deleted {
            if let Some(row) = self.take_row(mailbox, &mut rows, &mut seen, id).await? {
                self.item_deleted(mailbox, row, &mut report).await?;
            }
        }
        if full_pass {
            // A full pass lists every item: tracked items it did not list are gone.
            let rows = match rows {
                Some(rows) => rows,
                // Re-based from an incremental pass: every row but those handled above.
                None => {
                    let mut all = self.tracked_rows(mailbox).await?;
                    all.retain(|id, _| !seen.contains(id));
                    all
                }
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
        }
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
        Ok(report)
    }

    /// The mailbox's tracked rows, by item id.
    async fn tracked_rows(
        &self,
        mailbox: &MailboxAddress,
    ) -> Result<HashMap<String, AssignmentState>, SyncError> {
        Ok(self
            .inner
            .state
            .mailbox_assignments(mailbox)
            .await?
            .into_iter()
            .filter_map(|s| Some((s.item.as_ref()?.item_id.clone(), s)))
            .collect())
    }

    /// The tracked row of an item named by a change page, once per pass: from `rows` when the
    /// pass read them all, else from the store.
    async fn take_row(
        &self,
        mailbox: &MailboxAddress,
        rows: &mut Option<HashMap<String, AssignmentState>>,
        seen: &mut std::collections::HashSet<String>,
        item_id: &str,
    ) -> Result<Option<AssignmentState>, SyncError> {
        if !seen.insert(item_id.to_string()) {
            return Ok(None);
        }
        Ok(match rows {
            Some(rows) => rows.remove(item_id),
            None => self
                .inner
                .state
                .assignment_by_item(mailbox, item_id)
                .await?
                .filter(|r| r.item.is_some()),
        })
    }

    /// Reads the items of `rows` and handles each.
    pub(crate) async fn process_rows(
        &self,
        mailbox: &MailboxAddress,
        rows: Vec<AssignmentState>,
        mode: Mode,
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
                        report.failed += 1;
                        report
                            .errors
                            .push(item_error(&r.key, mailbox, &e.to_string()));
                    }
                    continue;
                }
            };
            for (row, result) in chunk.iter().zip(results) {
                match result {
                    Ok(item) => {
                        self.apply_item(mailbox, row.clone(), item, mode, &mut cache, report)
                            .await?
                    }
                    Err(ItemFailure::NotFound) => {
                        self.item_deleted(mailbox, row.clone(), report).await?
                    }
                    Err(f) => {
                        report.failed += 1;
                        report
                            .errors
                            .push(item_error(&row.key, mailbox, &f.to_string()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Decides and applies one item read from the mailbox.
    async fn apply_item(
        &self,
        mailbox: &MailboxAddress,
        mut row: AssignmentState,
        mut item: MailboxItem,
        mode: Mode,
        cache: &mut ProjectCache,
        report: &mut InboundReport,
    ) -> Result<(), SyncError> {
        let table = self.inner.table.clone();
        let config = &self.inner.config;
        let Some(mut view) = cache.get(self, &row.key).await? else {
            debug!(key = %row.key, "project no longer published; left to the next publish");
            return Ok(());
        };
        let mut attempts = 0u32;
        loop {
            let Some(unit) = view.unit(row.key.assignment) else {
                debug!(key = %row.key, "assignment left the project; left to the next publish");
                return Ok(());
            };
            let zone = owner_zone(&view.project, &unit);
            let pm = table.to_mail(&view.project, &unit, zone);
            let mail = item.values.clone();
            let base = row
                .baseline
                .clone()
                .unwrap_or_else(|| Baseline::new(pm.clone()));
            if let SyncStatus::PendingApproval { observed, .. } = &row.status
                && *observed == mail.hash()
            {
                // The edit already waits for approval; only the version moved.
                row.item = Some(item.item.clone());
                self.inner
                    .state
                    .commit(Commit {
                        put: vec![row],
                        ..Commit::default()
                    })
                    .await?;
                report.unchanged += 1;
                return Ok(());
            }
            let now = Utc::now();
            let skew = chrono::Duration::from_std(config.clock_skew)
                .unwrap_or_else(|_| chrono::Duration::zero());
            // The status note is the mailbox's alone: decided once, against the baseline.
            let note_changed = mode != Mode::Restore && status_note_changed(&table, &base, &mail);
            let decisions = match mode {
                Mode::Normal => decide(
                    &table,
                    &base,
                    &pm,
                    &mail,
                    item.modified_at,
                    |f| pm_modified(&unit, f),
                    config.policy,
                    skew,
                ),
                // Nothing is known of what a taken-over item held when it was created, nor of
                // who changed it since: every field the two sides disagree on is settled by the
                // policy (an owner's edit after the create is newer than the PM's value); fields
                // they agree on are kept, without a record.
                Mode::Adopt => decide(
                    &table,
                    &Baseline::new(MailValues::empty(pm.zone)),
                    &pm,
                    &mail,
                    item.modified_at,
                    |f| pm_modified(&unit, f),
                    config.policy,
                    skew,
                )
                .into_iter()
                .map(|d| match d.verdict {
                    Verdict::Converged => super::decide::FieldDecision {
                        verdict: Verdict::Keep,
                        rule: None,
                        ..d
                    },
                    _ => d,
                })
                .collect(),
                // Restored items take the PM values in every field.
                Mode::Restore => table
                    .entries()
                    .iter()
                    .map(|e| super::decide::FieldDecision {
                        field: e.field,
                        verdict: if pm.encode_field(e.field) == mail.encode_field(e.field) {
                            Verdict::Keep
                        } else {
                            Verdict::WriteMail
                        },
                        rule: Some(DecisionRule::Rejected),
                        winner: Side::Pm,
                    })
                    .collect(),
            };
            // A conflict already open on a field is not audited again on every pass.
            let open_conflicts: Vec<MailField> = match &row.status {
                SyncStatus::Conflict { fields, .. } => fields.clone(),
                _ => Vec::new(),
            };
            // Fields of an update waiting for approval whose mailbox value is still the one
            // submitted: held (neither submitted again nor overwritten) until it is decided.
            let mut held: Vec<MailField> = match &row.status {
                SyncStatus::PendingApproval { fields, .. } => decisions
                    .iter()
                    .filter(|d| {
                        d.verdict == Verdict::TakeMail
                            && fields.get(&d.field) == Some(&mail.field_hash(d.field))
                    })
                    .map(|d| d.field)
                    .collect(),
                _ => Vec::new(),
            };
            let mut audit: Vec<AuditRecord> = decisions
                .iter()
                .filter(|d| !(d.verdict == Verdict::Conflict && open_conflicts.contains(&d.field)))
                .filter(|d| !held.contains(&d.field))
                .filter_map(|d| {
                    let rule = d.rule?;
                    (d.verdict != Verdict::Keep).then(|| AuditRecord {
                        at: now,
                        key: row.key,
                        mailbox: mailbox.clone(),
                        field: d.field,
                        pm_value: field_text(&pm, d.field),
                        mail_value: field_text(&mail, d.field),
                        rule,
                        winner: d.winner,
                        note: None,
                    })
                })
                .collect();
            if note_changed {
                audit.push(AuditRecord {
                    at: now,
                    key: row.key,
                    mailbox: mailbox.clone(),
                    field: MailField::PercentComplete,
                    pm_value: note_text(base.values.status_note),
                    mail_value: note_text(mail.status_note),
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
            let conflicts_by_policy = decisions
                .iter()
                .filter(|d| {
                    matches!(
                        d.rule,
                        Some(
                            DecisionRule::NewerWins
                                | DecisionRule::PmWins
                                | DecisionRule::MailWins
                                | DecisionRule::Manual
                        )
                    )
                })
                .count();
            Metrics::add(&self.inner.metrics.conflicts, conflicts_by_policy);
            self.inner.state.append_audit(audit).await?;
            let mut take: Vec<MailField> = decisions
                .iter()
                .filter(|d| d.verdict == Verdict::TakeMail && !held.contains(&d.field))
                .map(|d| d.field)
                .collect();
            if !take.is_empty() && !held.is_empty() {
                // A new update supersedes the pending one: it carries the held fields too.
                take.append(&mut held);
                take.sort_by_key(|f| MailField::ALL.iter().position(|x| x == f));
            }
            let conflicts: Vec<MailField> = decisions
                .iter()
                .filter(|d| d.verdict == Verdict::Conflict)
                .map(|d| d.field)
                .collect();
            // What the item keeps of its own: conflicts and held fields.
            let kept: Vec<MailField> = conflicts.iter().chain(&held).copied().collect();
            // The note is never written: what the item shows of it is what the mailbox holds.
            let mut target_pm = MailValues {
                status_note: mail.status_note,
                ..pm.clone()
            };
            if !take.is_empty() || note_changed {
                let source = UpdateSource {
                    mailbox: mailbox.to_string(),
                    item_id: item.item.item_id.clone(),
                    change_key: item.item.change_key.clone(),
                    modified_at: item.modified_at.unwrap_or(now),
                };
                let inbound =
                    table.status_update(&view.project, &unit, zone, &mail, &take, source.clone());
                let note = note_changed.then(|| StatusNoteChange {
                    old: base.values.status_note.map(|n| n.as_str().to_owned()),
                    new: mail.status_note.map(|n| n.as_str().to_owned()),
                });
                if let Some(note) = &note {
                    info!(key = %row.key, %note, "status note from the mailbox");
                }
                let update = match (inbound.update, note) {
                    (Some(update), note) => Some(StatusUpdate {
                        status_note: note,
                        ..update
                    }),
                    (None, Some(note)) => Some(StatusUpdate {
                        key: row.key,
                        changes: Vec::new(),
                        source,
                        status_note: Some(note),
                        completed_on: None,
                    }),
                    (None, None) => None,
                };
                if let Some(update) = update {
                    match self.inner.host.submit_status_update(update).await? {
                        UpdateOutcome::Applied { assignment, .. } => {
                            report.applied += 1;
                            Metrics::add(&self.inner.metrics.updates_applied, 1);
                            // Both sides hold this version's values for the fields taken: that
                            // is the baseline from now on, stored before anything else is tried.
                            // Whatever then fails (the write-back, the read after a stale
                            // change key, the process), the next decision starts from it;
                            // otherwise the PM's copy of the edit would count as a change of
                            // its own and could win a tie over a newer edit made meanwhile.
                            row.baseline =
                                Some(baseline_taken(&base, &mail, &take, item.modified_at));
                            self.inner
                                .state
                                .commit(Commit {
                                    put: vec![row.clone()],
                                    ..Commit::default()
                                })
                                .await?;
                            let new_view = std::sync::Arc::new(view.with_assignment(assignment));
                            cache.put(new_view.clone());
                            view = new_view;
                            let unit = view
                                .unit(row.key.assignment)
                                .expect("the assignment is still in the project");
                            target_pm = MailValues {
                                status_note: mail.status_note,
                                ..table.to_mail(&view.project, &unit, zone)
                            };
                        }
                        UpdateOutcome::Pending { id } => {
                            // Nothing goes back to the mailbox until the status manager decides.
                            report.pending += 1;
                            Metrics::add(&self.inner.metrics.updates_pending, 1);
                            row.status = SyncStatus::PendingApproval {
                                update: id,
                                observed: mail.hash(),
                                fields: take.iter().map(|f| (*f, mail.field_hash(*f))).collect(),
                            };
                            // The note went with the update: decided.
                            if let Some(b) = row.baseline.as_mut() {
                                b.values.status_note = mail.status_note;
                            }
                            row.item = Some(item.item.clone());
                            row.last_sync = Some(now);
                            self.inner
                                .state
                                .commit(Commit {
                                    put: vec![row],
                                    ..Commit::default()
                                })
                                .await?;
                            return Ok(());
                        }
                        UpdateOutcome::Rejected {
                            assignment, reason, ..
                        } => {
                            report.rejected += 1;
                            Metrics::add(&self.inner.metrics.updates_rejected, 1);
                            info!(key = %row.key, %reason, "status update rejected; restoring PM values");
                            let new_view = std::sync::Arc::new(view.with_assignment(assignment));
                            cache.put(new_view.clone());
                            view = new_view;
                            let unit = view
                                .unit(row.key.assignment)
                                .expect("the assignment is still in the project");
                            target_pm = MailValues {
                                status_note: mail.status_note,
                                ..table.to_mail(&view.project, &unit, zone)
                            };
                        }
                    }
                }
            }
            // What the item should show: the PM's values, except fields kept in conflict or
            // held for a pending update.
            let mut target = target_pm.clone();
            for f in &kept {
                copy_field(&mut target, &mail, *f);
            }
            let mut item_ref = item.item.clone();
            let mut journal = Vec::new();
            if !table.updates(&mail, &target).is_empty() {
                journal = self
                    .inner
                    .state
                    .open_journal(journal_entries(
                        mailbox,
                        std::iter::once(row.key),
                        WriteKind::Update,
                    ))
                    .await?;
                let write = ItemWrite {
                    key: row.key,
                    item: item.item.clone(),
                    from: mail.clone(),
                    to: target.clone(),
                };
                let result = self
                    .inner
                    .mailboxes
                    .update(mailbox, std::slice::from_ref(&write))
                    .await
                    .map_err(|e| SyncError::mailbox(mailbox, e))
                    .map(|mut r| {
                        r.pop()
                            .unwrap_or(Err(ItemFailure::Transient("no answer".into())))
                    });
                match result {
                    Ok(Ok(new_ref)) => {
                        item_ref = new_ref;
                        report.written += 1;
                        Metrics::add(&self.inner.metrics.written, 1);
                    }
                    Ok(Err(ItemFailure::StaleChangeKey)) if attempts + 1 < config.max_attempts => {
                        // Changed again while we decided: read it again and decide again.
                        attempts += 1;
                        self.inner
                            .state
                            .commit(Commit {
                                close_journal: journal,
                                ..Commit::default()
                            })
                            .await?;
                        match self.refetch(mailbox, &item.item.item_id, zone).await? {
                            Some(fresh) => {
                                // Decided again from the baseline stored above when the PM
                                // side took this version's values.
                                item = fresh;
                                continue;
                            }
                            None => return self.item_deleted(mailbox, row, report).await,
                        }
                    }
                    Ok(Err(ItemFailure::NotFound)) => {
                        self.inner
                            .state
                            .commit(Commit {
                                close_journal: journal,
                                ..Commit::default()
                            })
                            .await?;
                        return self.item_deleted(mailbox, row, report).await;
                    }
                    Ok(Err(f)) => {
                        row.attempts += 1;
                        row.last_error = Some(f.to_string());
                        if !f.is_retryable() || row.attempts >= config.max_attempts {
                            warn!(key = %row.key, error = %f, "parking item after repeated failures");
                            row.status = SyncStatus::Parked {
                                reason: f.to_string(),
                            };
                            Metrics::add(&self.inner.metrics.parked, 1);
                            // The version read is taken (its edits went to the PM side): the
                            // passes skip it until it changes again, and what must still be
                            // written waits for the reconciliation's publish, which finds the
                            // baseline (what the item shows) behind the PM values. Not every
                            // pass of the mailbox tries it again, and its sync state moves on.
                            row.baseline =
                                Some(baseline_after(&base, &mail, &kept, &mail, item.modified_at));
                            row.item = Some(item.item.clone());
                            row.pm_hash = Some(target_pm.hash());
                            row.mail_hash = Some(mail.hash());
                            row.last_sync = Some(now);
                            report.parked += 1;
                        }
                        report.failed += 1;
                        report
                            .errors
                            .push(item_error(&row.key, mailbox, &f.to_string()));
                        self.inner
                            .state
                            .commit(Commit {
                                put: vec![row],
                                close_journal: journal,
                                ..Commit::default()
                            })
                            .await?;
                        return Ok(());
                    }
                    Err(e) => {
                        // The call failed as a whole: keep the journal open and try next pass
                        // (what the PM side took is already the stored baseline).
                        report.failed += 1;
                        report
                            .errors
                            .push(item_error(&row.key, mailbox, &e.to_string()));
                        return Ok(());
                    }
                }
            } else if changed_fields(&mail, &target).is_empty() && take.is_empty() {
                report.unchanged += 1;
            }
            // The new baseline: what both sides hold now.
            let mut baseline = baseline_after(&base, &target, &kept, &mail, item.modified_at);
            if let Some(unit) = view.unit(row.key.assignment) {
                for f in changed_fields(&base.values, &target_pm) {
                    baseline
                        .pm_changed
                        .insert(f, pm_modified(&unit, f).unwrap_or(now));
                }
            }
            row.baseline = Some(baseline);
            row.item = Some(item_ref);
            row.pm_hash = Some(target_pm.hash());
            row.mail_hash = Some(target.hash());
            row.attempts = 0;
            row.last_error = None;
            row.last_sync = Some(now);
            row.status = if !held.is_empty() {
                // Still waiting for the status manager; this version of the item is known.
                match row.status {
                    SyncStatus::PendingApproval { update, fields, .. } => {
                        SyncStatus::PendingApproval {
                            update,
                            observed: mail.hash(),
                            fields,
                        }
                    }
                    other => other,
                }
            } else if conflicts.is_empty() {
                SyncStatus::Synced
            } else {
                report.conflicts += 1;
                let since = match &row.status {
                    SyncStatus::Conflict { since, .. } => *since,
                    _ => None,
                };
                SyncStatus::Conflict {
                    fields: conflicts,
                    since: Some(since.unwrap_or(now)),
                    mail: Some(Box::new(mail.clone())),
                }
            };
            self.inner
                .state
                .commit(Commit {
                    put: vec![row],
                    close_journal: journal,
                    ..Commit::default()
                })
                .await?;
            return Ok(());
        }
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
        self.inner
            .state
            .commit(Commit {
                put: vec![row],
                ..Commit::default()
            })
            .await?;
        Ok(())
    }

    /// The PM side decided a pending status update: map the resulting values back.
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
        let mode = match outcome {
            UpdateOutcome::Applied { .. } => {
                report.applied += 1;
                Mode::Normal
            }
            UpdateOutcome::Rejected { .. } => {
                report.rejected += 1;
                Mode::Restore
            }
            UpdateOutcome::Pending { .. } => return Ok(report),
        };
        row.status = SyncStatus::Synced;
        self.process_rows(&mailbox, vec![row], mode, &mut report)
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

/// A status note as the audit shows it.
fn note_text(note: Option<crate::mapping::StatusNote>) -> String {
    note.map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "none".into())
}

/// The baseline after a decision: `values`, except the fields in conflict, which keep the old
/// baseline so that they stay in conflict until someone decides; and the time of the mailbox's
/// edit on every field the mailbox changed.
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
