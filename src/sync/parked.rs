//! Parked items taken back by a person: an item parked after repeated failures waits until it
//! changes or the reconciliation's publish tries its write again; once the cause is fixed (the
//! mailbox's quota raised, a permission granted) an operator need not wait for either.
//! [`Engine::retry_parked`] clears the park and brings the item in step at once.

use super::engine::{Engine, SyncError};
use super::mailbox::MailboxStore;
use super::report::InboundReport;
use crate::pm::{AssignmentKey, PmHost};
use crate::state::{Commit, StateStore, SyncStatus};

/// What a retry of a parked item did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// The item was tried at once and is in step now.
    Synced,
    /// The item was tried at once and failed again: parked again (`parked`) or left for the
    /// next pass, with the error.
    Failed {
        /// Whether the failure parked it again.
        parked: bool,
        /// Why it failed.
        error: String,
    },
    /// Another instance holds the item's mailbox: the park is cleared, and that instance's
    /// next reconciliation writes what is due.
    Queued,
}

/// Why a retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The assignment has no parked item (never parked, or taken back already).
    #[error("assignment {0} has no parked item")]
    NotParked(AssignmentKey),
    /// Syncing failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Takes a parked item back: its park, attempts and error are cleared and, when its
    /// mailbox is held here, the item is read and brought in step at once (what the plan still
    /// owes it is written), as a pass of its mailbox would.
    pub async fn retry_parked(&self, key: &AssignmentKey) -> Result<RetryOutcome, RetryError> {
        let state = &self.inner.state;
        let mailbox = state
            .assignment(key)
            .await
            .map_err(SyncError::from)?
            .ok_or(RetryError::NotParked(*key))?
            .mailbox;
        let _guard = self.lock(&mailbox).await;
        // Read again under the mailbox lock: a pass may have changed the row meanwhile.
        let mut row = state
            .assignment(key)
            .await
            .map_err(SyncError::from)?
            .filter(|r| matches!(r.status, SyncStatus::Parked { .. }))
            .ok_or(RetryError::NotParked(*key))?;
        tracing::info!(%key, %mailbox, "parked item taken back");
        row.status = SyncStatus::Synced;
        row.attempts = 0;
        row.last_error = None;
        if !self.holds(&mailbox) {
            self.commit(Commit {
                put: vec![row],
                ..Commit::default()
            })
            .await?;
            return Ok(RetryOutcome::Queued);
        }
        let mut report = InboundReport::default();
        self.process_rows(
            &mailbox,
            vec![row],
            super::decide::Mode::Normal,
            &mut report,
        )
        .await?;
        let after = state.assignment(key).await.map_err(SyncError::from)?;
        // This attempt's error; a read that failed as a whole commits nothing, and the row
        // keeps its park and its older error.
        let error = report.errors.first().map(|e| e.error.clone());
        Ok(match after {
            Some(r) if matches!(r.status, SyncStatus::Parked { .. }) => RetryOutcome::Failed {
                parked: true,
                error: error.or(r.last_error).unwrap_or_default(),
            },
            _ if report.failed > 0 => RetryOutcome::Failed {
                parked: false,
                error: error.unwrap_or_default(),
            },
            _ => RetryOutcome::Synced,
        })
    }
}
