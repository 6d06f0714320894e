//! E-mail notices sent through Exchange itself: a digest to each project's status manager when
//! updates wait for approval, and a notice to the person whose update was rejected, with the
//! reason. Each is a message created with CreateItem and the `SendOnly` disposition by the
//! service account (no impersonation), so no SMTP relay is needed.
//!
//! The decisions are the embedded host's and are recorded before any notice is thought of; a
//! notice that cannot be sent is logged and kept for another attempt, and never undoes or holds
//! up a decision. What is owed is kept in the PM store (`notice_outbox`, with the rejections
//! already announced in `rejection_notices`) until Exchange takes it: a restart between a
//! rejection and its notice, or while a notice waits for another attempt, loses nothing, and a
//! rejection made while the service was down is announced at the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::ews::ops::create_item::{CreateItem, MessageDisposition};
use crate::ews::service::{CallContext, EwsService};
use crate::ews::types::{Item, Items, Mailbox};
use crate::pm::ProjectGuid;
use crate::pm::embedded::{
    EmbeddedError, EmbeddedHost, OwedNotice, StatusUpdateRecord, UpdateFilter, UpdateState,
};
use crate::pm::host::{FieldValue, StatusUpdateId};

/// How notices are sent.
#[derive(Debug, Clone)]
pub struct NoticeConfig {
    /// How often the waiting updates are looked at for a digest.
    pub digest_interval: Duration,
    /// The status managers' addresses per project, named by its GUID or its name.
    pub status_managers: BTreeMap<String, Vec<String>>,
    /// The wait before a notice that could not be sent is tried again (doubled per failure, up
    /// to ten times this).
    pub retry_after: Duration,
    /// How often rejections are looked for when nothing wakes the notifier.
    pub poll: Duration,
}

impl Default for NoticeConfig {
    fn default() -> Self {
        NoticeConfig {
            digest_interval: Duration::from_secs(3600),
            status_managers: BTreeMap::new(),
            retry_after: Duration::from_secs(30),
            poll: Duration::from_secs(10),
        }
    }
}

/// Why a notice was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The call failed (transport, credentials, a SOAP fault).
    #[error("the CreateItem call failed: {0}")]
    Call(#[from] crate::ews::error::Error),
    /// Exchange answered the message with an error.
    #[error("Exchange refused the message: {code}: {text}")]
    Refused {
        /// The response code.
        code: String,
        /// Exchange's message text.
        text: String,
    },
    /// The PM store could not be read.
    #[error("the PM store: {0}")]
    Store(#[from] EmbeddedError),
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The recipients' addresses.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// Sends the notices; run it with [`Notifier::run`].
pub struct Notifier<S> {
    host: EmbeddedHost,
    ews: S,
    config: NoticeConfig,
    wake: Arc<Notify>,
}

impl<S: EwsService + Send + Sync + 'static> Notifier<S> {
    /// A notifier reading `host` and sending over `ews` as its authenticated account.
    pub fn new(host: EmbeddedHost, ews: S, config: NoticeConfig) -> Self {
        Notifier {
            host,
            ews,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The signal that makes the notifier look for new rejections at once (the console
    /// raises it after each decision).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Sends one notice.
    pub async fn send(&self, notice: &Notice) -> Result<(), NoticeError> {
        let request = CreateItem {
            message_disposition: Some(MessageDisposition::SendOnly),
            saved_item_folder_id: None,
            items: Items(vec![Item::message(
                notice.to.iter().map(Mailbox::smtp).collect(),
                &notice.subject,
                &notice.body,
            )]),
        };
        let response = self.ews.send(CallContext::default(), &request).await?;
        for message in &response.response_messages {
            if !message.is_success() {
                return Err(NoticeError::Refused {
                    code: message.code().as_str().to_string(),
                    text: message.message_text.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// Runs until `stop` completes: digests every `digest_interval`, rejection notices as
    /// soon as the waker is raised (or every `poll`), and what is owed from before (a restart
    /// included) and retries of what failed.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut state = State::default();
        let mut digest = tokio::time::interval(self.config.digest_interval);
        digest.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.config.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = digest.tick() => {
                    if let Err(e) = self.queue_digests(&mut state).await {
                        warn!(error = %e, "notices: cannot read the waiting updates");
                    }
                }
                _ = poll.tick() => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.queue_rejections().await {
                warn!(error = %e, "notices: cannot read the rejected updates");
            }
            if let Err(e) = self.send_due().await {
                warn!(error = %e, "notices: cannot read the notices owed");
            }
        }
    }

    async fn rejected(&self) -> Result<Vec<StatusUpdateRecord>, EmbeddedError> {
        self.host
            .status_updates(UpdateFilter {
                state: Some(UpdateState::Rejected),
                ..UpdateFilter::default()
            })
            .await
    }

    /// Owes a notice for each rejection not announced yet. Kept in the store with the mark
    /// that it is owed, in one transaction: a second process on the same store, or this one
    /// after a restart, does not owe it again.
    async fn queue_rejections(&self) -> Result<(), EmbeddedError> {
        let announced = self.host.announced_rejections().await?;
        let fresh: Vec<StatusUpdateRecord> = self
            .rejected()
            .await?
            .into_iter()
            .filter(|r| !announced.contains(&r.id))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let names = self.project_names().await?;
        for record in fresh {
            let project = names
                .get(&record.key.project)
                .map_or_else(|| record.key.project.to_string(), Clone::clone);
            let notice = rejection_notice(&record, &project);
            if self
                .host
                .owe_rejection_notice(&record.id, notice.to, notice.subject, notice.body)
                .await?
            {
                info!(update = %record.id.0, to = %record.source.mailbox, "notices: rejection notice queued");
            }
        }
        Ok(())
    }

    async fn queue_digests(&self, state: &mut State) -> Result<(), EmbeddedError> {
        let names = self.project_names().await?;
        let mut waiting: BTreeMap<ProjectGuid, Vec<StatusUpdateRecord>> = BTreeMap::new();
        for record in self.host.status_updates(UpdateFilter::pending()).await? {
            waiting.entry(record.key.project).or_default().push(record);
        }
        // A project whose queue emptied is forgotten, so that a later wait is announced.
        state.digested.retain(|p, _| waiting.contains_key(p));
        for (project, records) in waiting {
            let name = names
                .get(&project)
                .map_or_else(|| project.to_string(), Clone::clone);
            let managers = &self.config.status_managers;
            let Some(to) = managers
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(&project.to_string()))
                .or_else(|| managers.iter().find(|(k, _)| k.trim() == name))
                .map(|(_, to)| to)
                .filter(|to| !to.is_empty())
            else {
                debug!(%project, "notices: no status manager's address for the project");
                continue;
            };
            let ids: BTreeSet<StatusUpdateId> = records.iter().map(|r| r.id.clone()).collect();
            if state.digested.get(&project) == Some(&ids) {
                continue;
            }
            info!(%project, waiting = ids.len(), "notices: digest queued");
            let notice = digest_notice(to.clone(), &name, &records);
            self.host
                .owe_digest(project, notice.to, notice.subject, notice.body)
                .await?;
            state.digested.insert(project, ids);
        }
        Ok(())
    }

    /// Sends every notice owed whose wait after a failure is over; each one Exchange takes is
    /// owed no more. Each is claimed first, so that another `serve` on the same store does not
    /// send it too.
    async fn send_due(&self) -> Result<(), EmbeddedError> {
        for owed in self.host.owed_notices().await? {
            let OwedNotice {
                seq,
                to,
                subject,
                body,
                attempts,
            } = owed;
            if !self
                .host
                .claim_notice(seq, chrono::Utc::now() + SEND_CLAIM)
                .await?
            {
                continue;
            }
            let notice = Notice { to, subject, body };
            match self.send(&notice).await {
                Ok(()) => {
                    info!(
                        to = %notice.to.join(", "),
                        subject = %notice.subject,
                        "notices: sent"
                    );
                    self.host.notice_sent(seq).await?;
                }
                Err(e) => {
                    let failures = attempts.saturating_add(1);
                    let wait = self
                        .config
                        .retry_after
                        .saturating_mul(1 << failures.min(10).saturating_sub(1))
                        .min(self.config.retry_after.saturating_mul(10));
                    warn!(
                        error = %e,
                        to = %notice.to.join(", "),
                        failures,
                        retry_in_secs = wait.as_secs(),
                        "notices: not sent; kept for another attempt"
                    );
                    let retry_at = chrono::Utc::now()
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    self.host
                        .notice_failed(seq, &e.to_string(), retry_at)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn project_names(&self) -> Result<BTreeMap<ProjectGuid, String>, EmbeddedError> {
        Ok(self
            .host
            .project_summaries()
            .await?
            .into_iter()
            .map(|p| (p.guid, p.name))
            .collect())
    }
}

#[derive(Default)]
struct State {
    /// Per project, the waiting set the last digest announced.
    digested: BTreeMap<ProjectGuid, BTreeSet<StatusUpdateId>>,
}

/// How long a send may take before another process may take the notice over (this one
/// having died meanwhile).
const SEND_CLAIM: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// The notice to the person whose update was rejected.
pub fn rejection_notice(record: &StatusUpdateRecord, project: &str) -> Notice {
    let task = record.task_name.as_deref().unwrap_or("a task");
    let mut body = format!(
        "Your update of \"{task}\" in {project} was rejected by {}.\n\nReason: {}\n\n",
        record.decider.as_deref().unwrap_or("the status manager"),
        record.reason.as_deref().unwrap_or("(none given)"),
    );
    body.push_str("What you reported:\n");
    push_changes(&mut body, record);
    body.push_str("\nThe plan's values are back in your task list.\n");
    Notice {
        to: vec![record.source.mailbox.clone()],
        subject: format!("Update rejected: {task} ({project})"),
        body,
    }
}

/// The digest of a project's waiting updates, oldest first.
pub fn digest_notice(to: Vec<String>, project: &str, records: &[StatusUpdateRecord]) -> Notice {
    let n = records.len();
    let mut body = format!(
        "{n} update{} in {project} wait{} for your approval:\n\n",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" },
    );
    for record in records {
        body.push_str(&format!(
            "{} ({}), reported {}:\n",
            record.task_name.as_deref().unwrap_or("a task"),
            record
                .resource_name
                .as_deref()
                .unwrap_or(&record.source.mailbox),
            record.submitted_at.format("%Y-%m-%d %H:%M UTC"),
        ));
        push_changes(&mut body, record);
    }
    body.push_str("\nApprove or reject them on the console's Pending updates page.\n");
    Notice {
        to,
        subject: format!(
            "{n} update{} wait{} for approval: {project}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
        ),
        body,
    }
}

fn push_changes(body: &mut String, record: &StatusUpdateRecord) {
    for change in &record.changes {
        let field = words(
            &serde_json::to_value(change.field)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", change.field)),
        );
        body.push_str(&format!(
            "  {field}: {} -> {}\n",
            value(&change.old),
            value(&change.new)
        ));
    }
}

/// `PercentWorkComplete` as people write it: `percent work complete`.
fn words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out.replace('_', " ")
}

/// A value for people: work in hours.
fn value(v: &FieldValue) -> String {
    match v {
        FieldValue::Work(w) => format!("{:.2} h", w.hours_f64()).replace(".00 h", " h"),
        other => other.to_string(),
    }
}
