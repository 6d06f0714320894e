//! Taking a project out of service (`taskbridge projects remove`): its mailbox tasks are
//! deleted (moved to Deleted Items) or detached (left in the mailboxes, no longer synced), and
//! its sync state is removed. The PM side's rows are the host's to remove.

use std::collections::BTreeMap;

use serde::Serialize;

use super::engine::{Engine, SyncError};
use super::mailbox::MailboxStore;
use super::report::{ItemError, PublishReport};
use crate::pm::{PmHost, ProjectGuid};
use crate::state::{AssignmentState, MailboxAddress, StateStore};

/// How to remove a project.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Leave the tasks in the mailboxes (detached) instead of deleting them.
    pub keep_tasks: bool,
    /// Delete beyond the mass-delete guard.
    pub force: bool,
    /// Work out what would happen; send and write nothing.
    pub dry_run: bool,
}

/// What removing a project did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    /// Tasks deleted (moved to Deleted Items), per mailbox.
    pub deleted: BTreeMap<String, usize>,
    /// Tasks left in the mailboxes, no longer synced, per mailbox.
    pub detached: BTreeMap<String, usize>,
    /// Deletions the mass-delete guard refused (nothing of the project was removed).
    pub refused_deletes: usize,
    /// Deletions that failed (nothing of the project was removed; run it again).
    pub failed: usize,
    /// The failures.
    pub errors: Vec<ItemError>,
    /// Rows of sync state removed.
    pub state_rows: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl RemoveReport {
    /// Whether every task went and the state was removed (or, in a dry run, would be).
    pub fn is_complete(&self) -> bool {
        self.refused_deletes == 0 && self.failed == 0
    }

    /// Takes over the failures of a mailbox's deletions (`deleted` is counted by the caller,
    /// per mailbox).
    fn take_failures(&mut self, deletes: PublishReport) {
        self.failed += deletes.failed;
        self.errors.extend(deletes.errors);
    }
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Removes `project` from the mailboxes and the sync state.
    ///
    /// Without `keep_tasks`, each mailbox's tasks of the project are deleted (moved to Deleted
    /// Items) under the mass-delete guard of a publish: more than `max_delete_floor` tasks of a
    /// mailbox beyond `max_delete_share` of the project's tasks there (which removing them all
    /// always is) need `force`. The sync state is removed only when every task went; otherwise
    /// the report says what is left, and running it again finishes the job.
    pub async fn remove_project(
        &self,
        project: ProjectGuid,
        options: RemoveOptions,
    ) -> Result<RemoveReport, SyncError> {
        let config = &self.inner.config;
        let mut report = RemoveReport {
            dry_run: options.dry_run,
            ..RemoveReport::default()
        };
        let mut per_mailbox: BTreeMap<MailboxAddress, Vec<AssignmentState>> = BTreeMap::new();
        for s in self.inner.state.project_assignments(project).await? {
            per_mailbox.entry(s.mailbox.clone()).or_default().push(s);
        }
        for (mailbox, states) in per_mailbox {
            let with_items: Vec<AssignmentState> =
                states.into_iter().filter(|s| s.item.is_some()).collect();
            if with_items.is_empty() {
                continue;
            }
            let n = with_items.len();
            if options.keep_tasks {
                report.detached.insert(mailbox.to_string(), n);
                continue;
            }
            if !options.force && config.guard_refuses(n, n) {
                report.refused_deletes += n;
                continue;
            }
            if options.dry_run {
                report.deleted.insert(mailbox.to_string(), n);
                continue;
            }
            let _guard = self.lock(&mailbox).await;
            let mut deletes = PublishReport::default();
            self.publish_deletes(&mailbox, with_items, None, &mut deletes)
                .await?;
            report.deleted.insert(mailbox.to_string(), deletes.deleted);
            report.take_failures(deletes);
        }
        if report.is_complete() && !options.dry_run {
            report.state_rows = self.inner.state.forget_project(project).await?;
        }
        Ok(report)
    }
}
