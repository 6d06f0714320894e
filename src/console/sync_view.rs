//! What the console reads of the sync state: the audit log and each mailbox's health. A trait
//! object over the engine, so that the console needs none of the engine's type parameters.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::pm::{AssignmentKey, PmHost, ProjectGuid};
use crate::state::{AuditRecord, MailboxAddress, StateStore, SyncStatus};
use crate::sync::mailbox::MailboxStore;
use crate::sync::{Engine, RetryError, RetryOutcome};

/// A boxed future of the view.
pub type ViewFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One mailbox's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxHealth {
    /// The mailbox.
    pub mailbox: String,
    /// Whether it has a subscription.
    pub subscribed: bool,
    /// When its subscription last said anything.
    pub last_notification: Option<DateTime<Utc>>,
    /// When the last full reconciliation finished.
    pub last_reconcile: Option<DateTime<Utc>>,
    /// The newest sync of one of its items.
    pub last_pass: Option<DateTime<Utc>>,
    /// The last error of one of its items.
    pub last_error: Option<String>,
    /// Its parked items: (assignment key, why).
    pub parked: Vec<(AssignmentKey, String)>,
    /// Its items edited while their assignments are out of the plan: the edits wait for them.
    pub awaiting_plan: usize,
}

/// Why the service counts as degraded when more than half of the mailboxes have a current
/// error (an item whose last sync failed), naming a few of them; `None` otherwise.
pub fn most_mailboxes_failing(health: &[MailboxHealth]) -> Option<String> {
    let failing: Vec<&MailboxHealth> = health.iter().filter(|m| m.last_error.is_some()).collect();
    if health.is_empty() || failing.len() * 2 <= health.len() {
        return None;
    }
    let mut reason = format!(
        "{} of {} mailboxes are failing",
        failing.len(),
        health.len()
    );
    for (i, m) in failing.iter().take(3).enumerate() {
        reason.push_str(if i == 0 { ": " } else { "; " });
        reason.push_str(&format!(
            "{} ({})",
            m.mailbox,
            m.last_error.as_deref().unwrap_or_default()
        ));
    }
    if failing.len() > 3 {
        reason.push_str(&format!("; and {} more", failing.len() - 3));
    }
    Some(reason)
}

/// The sync state as the console shows it.
pub trait SyncView: Send + Sync + 'static {
    /// The audit log, oldest first, of one project or all.
    fn audit(&self, project: Option<ProjectGuid>) -> ViewFuture<'_, Vec<AuditRecord>>;
    /// Every known mailbox's health.
    fn health(&self) -> ViewFuture<'_, Vec<MailboxHealth>>;
    /// Takes the parked item of `key` back and tries it at once; `None` when it is not parked.
    fn retry_parked(&self, key: AssignmentKey) -> ViewFuture<'_, Option<RetryOutcome>>;
}

impl<H: PmHost, M: MailboxStore, S: StateStore> SyncView for Engine<H, M, S> {
    fn audit(&self, project: Option<ProjectGuid>) -> ViewFuture<'_, Vec<AuditRecord>> {
        Box::pin(async move { self.state().audit(project).await.map_err(|e| e.to_string()) })
    }

    fn retry_parked(&self, key: AssignmentKey) -> ViewFuture<'_, Option<RetryOutcome>> {
        Box::pin(async move {
            match Engine::retry_parked(self, &key).await {
                Ok(outcome) => Ok(Some(outcome)),
                Err(RetryError::NotParked(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn health(&self) -> ViewFuture<'_, Vec<MailboxHealth>> {
        Box::pin(async move {
            let state = self.state();
            let mut out = Vec::new();
            for m in state.mailboxes().await.map_err(|e| e.to_string())? {
                let Some(address) = m.mailbox.clone() else {
                    continue;
                };
                let items = state
                    .mailbox_assignments(&MailboxAddress::new(address.as_str()), None)
                    .await
                    .map_err(|e| e.to_string())?;
                out.push(MailboxHealth {
                    mailbox: address.to_string(),
                    subscribed: m.subscription_id.is_some(),
                    last_notification: m.last_notification,
                    last_reconcile: m.last_reconcile,
                    last_pass: items.iter().filter_map(|a| a.last_sync).max(),
                    last_error: items
                        .iter()
                        .filter(|a| a.last_error.is_some())
                        .max_by_key(|a| a.last_sync)
                        .and_then(|a| a.last_error.clone()),
                    parked: items
                        .iter()
                        .filter_map(|a| match &a.status {
                            SyncStatus::Parked { reason } => Some((a.key, reason.clone())),
                            _ => None,
                        })
                        .collect(),
                    awaiting_plan: items
                        .iter()
                        .filter(|a| matches!(a.status, SyncStatus::AwaitingPlan { .. }))
                        .count(),
                });
            }
            out.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(name: &str, error: Option<&str>) -> MailboxHealth {
        MailboxHealth {
            mailbox: name.into(),
            subscribed: true,
            last_notification: None,
            last_reconcile: None,
            last_pass: None,
            last_error: error.map(str::to_owned),
            parked: Vec::new(),
            awaiting_plan: 0,
        }
    }

    #[test]
    fn degraded_only_when_more_than_half_of_the_mailboxes_fail() {
        assert_eq!(most_mailboxes_failing(&[]), None);
        let half = [
            mailbox("ann@example.com", Some("ErrorQuotaExceeded")),
            mailbox("bob@example.com", None),
        ];
        assert_eq!(most_mailboxes_failing(&half), None);
        let most = [
            mailbox("ann@example.com", Some("ErrorQuotaExceeded")),
            mailbox("bob@example.com", None),
            mailbox("chen@example.com", Some("ErrorAccessDenied")),
        ];
        assert_eq!(
            most_mailboxes_failing(&most).as_deref(),
            Some(
                "2 of 3 mailboxes are failing: ann@example.com (ErrorQuotaExceeded); \
                 chen@example.com (ErrorAccessDenied)"
            )
        );
    }

    #[test]
    fn a_long_list_of_failing_mailboxes_is_cut_short() {
        let all: Vec<MailboxHealth> = (0..5)
            .map(|i| mailbox(&format!("m{i}@example.com"), Some("ErrorServerBusy")))
            .collect();
        let reason = most_mailboxes_failing(&all).expect("degraded");
        assert!(
            reason.starts_with("5 of 5 mailboxes are failing: m0@example.com"),
            "{reason}"
        );
        assert!(reason.ends_with("; and 2 more"), "{reason}");
    }
}
