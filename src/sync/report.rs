//! What a run did, as values the CLI turns into output and exit codes.

use serde::Serialize;

use crate::pm::AssignmentKey;
use crate::state::MailboxAddress;

/// One item that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// The assignment.
    pub key: AssignmentKey,
    /// The mailbox.
    pub mailbox: String,
    /// What went wrong.
    pub error: String,
}

impl ItemError {
    /// The failure of one assignment's item in a mailbox.
    pub fn new(
        key: AssignmentKey,
        mailbox: &MailboxAddress,
        error: impl std::fmt::Display,
    ) -> Self {
        ItemError {
            key,
            mailbox: mailbox.to_string(),
            error: error.to_string(),
        }
    }
}

/// The outcome of publishing a project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    /// Tasks created.
    pub created: usize,
    /// Tasks updated.
    pub updated: usize,
    /// Tasks deleted.
    pub deleted: usize,
    /// Assignments whose task needed nothing.
    pub unchanged: usize,
    /// Tasks found already tagged (after a crash) and taken over instead of created again.
    pub adopted: usize,
    /// Deletions refused by the mass-delete guard.
    pub refused_deletes: usize,
    /// Items left to the next publish: those a mailbox pass handled while this publish waited
    /// for the mailbox (the next publish plans from what that pass stored), and tasks moving
    /// to another mailbox whose old task was not deleted yet.
    pub deferred: usize,
    /// Items that failed (they are retried at the next publish).
    pub failed: usize,
    /// Mailbox edits that waited for their assignment to come back into the plan
    /// ([`crate::state::SyncStatus::AwaitingPlan`]), read and decided by this publish.
    pub taken: usize,
    /// Of the unchanged assignments, those of mailboxes (or a whole project) a publish mark
    /// showed unchanged since the last publish, without reading them.
    pub skipped: usize,
    /// The failures, for the report.
    pub errors: Vec<ItemError>,
}

impl PublishReport {
    /// Adds another mailbox's numbers.
    pub fn merge(&mut self, other: PublishReport) {
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
        self.adopted += other.adopted;
        self.refused_deletes += other.refused_deletes;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.taken += other.taken;
        self.errors.extend(other.errors);
    }

    /// Counts one item as failed and keeps why.
    pub fn fail(
        &mut self,
        key: AssignmentKey,
        mailbox: &MailboxAddress,
        error: impl std::fmt::Display,
    ) {
        self.failed += 1;
        self.errors.push(ItemError::new(key, mailbox, error));
    }

    /// Takes over the failures of items a publish sent through the inbound path (stale change
    /// keys, takeovers, items found gone); its other numbers are the inbound side's.
    pub fn take_failures(&mut self, inbound: InboundReport) {
        self.failed += inbound.failed;
        self.errors.extend(inbound.errors);
    }

    /// Whether every item went through.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.refused_deletes == 0
    }

    /// Assignments whose tasks show the plan after this publish: what a later publish that
    /// finds them unchanged reports as unchanged.
    pub(crate) fn in_step(&self) -> usize {
        self.created + self.updated + self.unchanged + self.adopted
    }
}

/// The outcome of reading a mailbox's changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InboundReport {
    /// Items looked at.
    pub examined: usize,
    /// Status updates applied on the PM side.
    pub applied: usize,
    /// Status updates waiting for approval.
    pub pending: usize,
    /// Status updates the PM side rejected (values restored in the mailbox).
    pub rejected: usize,
    /// Items written back to the mailbox.
    pub written: usize,
    /// Change-key bumps and echoes of our own writes: nothing to do.
    pub unchanged: usize,
    /// Conflicts kept for a person.
    pub conflicts: usize,
    /// Tasks found deleted in the mailbox.
    pub deleted: usize,
    /// Items that failed.
    pub failed: usize,
    /// Of the failed items, those parked: not tried again until they change or the
    /// reconciliation publishes their project.
    pub parked: usize,
    /// Items edited while their assignment is out of the plan: the edit is not taken and waits
    /// in the mailbox until a publish finds the assignment in the plan again
    /// ([`crate::state::SyncStatus::AwaitingPlan`]).
    pub awaiting_plan: usize,
    /// The failures.
    pub errors: Vec<ItemError>,
}

impl InboundReport {
    /// Counts one item as failed and keeps why.
    pub fn fail(
        &mut self,
        key: AssignmentKey,
        mailbox: &MailboxAddress,
        error: impl std::fmt::Display,
    ) {
        self.failed += 1;
        self.errors.push(ItemError::new(key, mailbox, error));
    }

    /// Adds another report's numbers.
    pub fn merge(&mut self, other: InboundReport) {
        self.examined += other.examined;
        self.applied += other.applied;
        self.pending += other.pending;
        self.rejected += other.rejected;
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.conflicts += other.conflicts;
        self.deleted += other.deleted;
        self.failed += other.failed;
        self.parked += other.parked;
        self.awaiting_plan += other.awaiting_plan;
        self.errors.extend(other.errors);
    }
}
