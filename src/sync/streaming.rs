//! Streaming notifications: the engine holds GetStreamingEvents connections open and feeds
//! what they carry into the same queue the push listener fills.
//!
//! The subscriptions are grouped, at most `subscriptions_per_connection` (Exchange allows 200)
//! to a connection. Groups are stable: a new subscription joins a group with room, a vanished
//! one leaves its group, and only the groups that changed are reconnected. Each group's task
//! reopens its connection at once when the server closes it at the time-out, and after a
//! failure with a growing delay (none the first time, then 1 s doubling to 60 s, or the
//! server's back-off). Whenever a connection is (re)opened for a mailbox that was streamed
//! before, the mailbox gets a pass (SyncFolderItems from its sync state), so whatever happened
//! while no connection was open is read even if the server lost it. A subscription the server
//! does not know any more is replaced by a new one, which regroups the connections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use super::config::StreamingSettings;
use super::engine::Engine;
use super::mailbox::{MailboxError, MailboxStore, StreamEvent};
use super::metrics::Metrics;
use super::notify::NotificationOutcome;
use crate::pm::PmHost;
use crate::state::{MailboxAddress, StateStore};

/// The longest wait before reopening a connection that keeps failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// One connection's subscriptions.
struct Group {
    ids: BTreeMap<String, MailboxAddress>,
    task: Option<AbortHandle>,
    changed: bool,
}

/// What the connection tasks share.
#[derive(Default)]
struct Shared {
    /// The mailboxes that have had a streaming connection: reopening one for them means a
    /// pass.
    streamed: Mutex<HashSet<MailboxAddress>>,
    /// Mailboxes being subscribed again right now.
    resubscribing: Arc<Mutex<HashSet<MailboxAddress>>>,
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Holds the streaming connections of every subscription the engine knows, regrouping
    /// when subscriptions come and go; runs until aborted.
    pub(crate) async fn hold_streams(self, settings: StreamingSettings) {
        let per_connection = settings
            .subscriptions_per_connection
            .clamp(1, super::config::MAX_SUBSCRIPTIONS_PER_CONNECTION);
        let shared: Arc<Shared> = Arc::default();
        let mut changed = self.inner.runtime.subscriptions_changed.subscribe();
        let mut groups: Vec<Group> = Vec::new();
        let mut tasks = JoinSet::new();
        loop {
            changed.borrow_and_update();
            let current: HashMap<String, MailboxAddress> = self
                .inner
                .runtime
                .subscriptions
                .read()
                .expect("subscription map poisoned")
                .clone();
            regroup(&mut groups, &current, per_connection);
            for group in groups.iter_mut().filter(|g| g.changed) {
                if let Some(task) = group.task.take() {
                    task.abort();
                }
                group.task = Some(tasks.spawn(self.clone().hold_connection(
                    group.ids.clone(),
                    settings.connection_timeout,
                    Arc::clone(&shared),
                )));
                group.changed = false;
            }
            debug!(
                connections = groups.len(),
                subscriptions = current.len(),
                "streaming connections grouped"
            );
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            // A burst of (re)subscriptions (start-up, a lost group) settles into one regrouping.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Holds one group's connection open, reopening it for as long as the task lives.
    async fn hold_connection(
        self,
        ids: BTreeMap<String, MailboxAddress>,
        timeout: Duration,
        shared: Arc<Shared>,
    ) {
        let mut mailboxes: Vec<MailboxAddress> = ids.values().cloned().collect();
        mailboxes.sort();
        mailboxes.dedup();
        let Some(anchor) = mailboxes.first().cloned() else {
            return;
        };
        let list: Vec<String> = ids.keys().cloned().collect();
        let sink = self.notification_sink();
        let resync = self.inner.runtime.resync_tx.clone();
        let resubscribing = Arc::clone(&shared.resubscribing);
        let streamed = &shared.streamed;
        let mut failures = 0u32;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                Metrics::add(&self.inner.metrics.stream_reconnects, 1);
            }
            {
                let mut seen = streamed.lock().expect("streamed set poisoned");
                for m in &mailboxes {
                    if !seen.insert(m.clone()) {
                        let _ = resync.send(m.clone());
                    }
                }
            }
            let mut stream = match self
                .inner
                .mailboxes
                .open_stream(&anchor, &list, timeout)
                .await
            {
                Ok(stream) => stream,
                Err(e) => {
                    failures += 1;
                    let delay = retry_delay(failures, &e);
                    warn!(%anchor, subscriptions = list.len(), error = %e, delay_ms = delay.as_millis() as u64, "cannot open the streaming connection; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            debug!(%anchor, subscriptions = list.len(), "streaming connection open");
            let _open = OpenGauge::new(&self.inner.metrics);
            let mut closed = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(StreamEvent::Notices(notices)) => {
                        failures = 0;
                        for notice in notices {
                            let mailbox = ids.get(&notice.subscription_id).cloned();
                            if sink.deliver(notice) == NotificationOutcome::QueueFull
                                && let Some(m) = mailbox
                            {
                                // The queue is full: a pass reads what the notice said.
                                let _ = resync.send(m);
                            }
                        }
                    }
                    Ok(StreamEvent::KeepAlive) => failures = 0,
                    Ok(StreamEvent::Closed) => {
                        closed = true;
                        break;
                    }
                    Ok(StreamEvent::Gone(gone)) => {
                        let lost: Vec<MailboxAddress> =
                            gone.iter().filter_map(|id| ids.get(id).cloned()).collect();
                        if lost.is_empty() {
                            continue;
                        }
                        // On a task of their own: each new subscription regroups the
                        // connections, which ends this task, and must not cut the others
                        // short. A mailbox already being subscribed again is left to that.
                        let lost: Vec<MailboxAddress> = {
                            let mut busy = resubscribing.lock().expect("set poisoned");
                            lost.into_iter()
                                .filter(|m| busy.insert(m.clone()))
                                .collect()
                        };
                        let engine = self.clone();
                        let busy = Arc::clone(&resubscribing);
                        let replaced = tokio::spawn(async move {
                            let mut replaced = false;
                            for m in lost {
                                info!(mailbox = %m, "the server lost the streaming subscription; subscribing again");
                                match engine.resubscribe(&m).await {
                                    Ok(made) => replaced |= made,
                                    Err(e) => warn!(mailbox = %m, error = %e, "re-subscription failed"),
                                }
                                busy.lock().expect("set poisoned").remove(&m);
                            }
                            replaced
                        })
                        .await;
                        if matches!(replaced, Ok(true)) {
                            // The groups change: a task with the new ids replaces this one.
                            return;
                        }
                        // Nothing replaced: reopen after a delay and try again.
                        failures += 1;
                        break;
                    }
                    Err(e) => {
                        warn!(%anchor, error = %e, "streaming connection failed; reopening");
                        failures += 1;
                        break;
                    }
                }
            }
            if !closed {
                // Ended without saying Closed: the connection broke.
                failures = failures.max(1);
                let delay = retry_delay(failures, &MailboxError::Unavailable(String::new()));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Counts a streaming connection as open while it lives (also when its task is aborted).
struct OpenGauge(Arc<Metrics>);

impl OpenGauge {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.streams_open.fetch_add(1, Ordering::Relaxed);
        OpenGauge(Arc::clone(metrics))
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Fits the groups to the subscriptions `current`: vanished ids leave, new ones join a group
/// with room (or a new group); every group that changed is marked.
fn regroup(
    groups: &mut Vec<Group>,
    current: &HashMap<String, MailboxAddress>,
    per_connection: usize,
) {
    for g in groups.iter_mut() {
        let before = g.ids.len();
        g.ids.retain(|id, m| current.get(id) == Some(m));
        g.changed |= g.ids.len() != before;
    }
    groups.retain(|g| {
        if g.ids.is_empty()
            && let Some(task) = &g.task
        {
            task.abort();
        }
        !g.ids.is_empty()
    });
    let known: HashSet<String> = groups.iter().flat_map(|g| g.ids.keys().cloned()).collect();
    let mut new: Vec<(&String, &MailboxAddress)> = current
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .collect();
    new.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    for (id, m) in new {
        match groups.iter_mut().find(|g| g.ids.len() < per_connection) {
            Some(g) => {
                g.ids.insert(id.clone(), m.clone());
                g.changed = true;
            }
            None => groups.push(Group {
                ids: BTreeMap::from([(id.clone(), m.clone())]),
                task: None,
                changed: true,
            }),
        }
    }
}

/// How long to wait before the `failures`-th reopening: none the first time, then 1 s doubling
/// to a minute; at least the back-off a throttling server asked for.
fn retry_delay(failures: u32, error: &MailboxError) -> Duration {
    let delay = match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_RETRY_DELAY),
    };
    match error {
        MailboxError::Throttled { back_off } => delay.max(*back_off),
        _ => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(pairs: &[(&str, &str)]) -> HashMap<String, MailboxAddress> {
        pairs
            .iter()
            .map(|(id, m)| (id.to_string(), MailboxAddress::new(m)))
            .collect()
    }

    fn ids(groups: &[Group]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.ids.keys().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn groups_fill_up_to_the_limit_and_only_changed_groups_are_marked() {
        let mut groups = Vec::new();
        let current = subs(&[
            ("a", "ann@example.com"),
            ("b", "bob@example.com"),
            ("c", "chen@example.com"),
        ]);
        regroup(&mut groups, &current, 2);
        assert_eq!(ids(&groups), vec![vec!["a", "b"], vec!["c"]]);
        groups.iter_mut().for_each(|g| g.changed = false);

        // Bob's subscription is replaced: only the first group changes.
        let current = subs(&[
            ("a", "ann@example.com"),
            ("b2", "bob@example.com"),
            ("c", "chen@example.com"),
        ]);
        regroup(&mut groups, &current, 2);
        assert_eq!(ids(&groups), vec![vec!["a", "b2"], vec!["c"]]);
        assert_eq!(
            groups.iter().map(|g| g.changed).collect::<Vec<_>>(),
            vec![true, false]
        );

        // Every subscription gone: no group left.
        regroup(&mut groups, &HashMap::new(), 2);
        assert!(groups.is_empty());
    }

    #[test]
    fn retries_start_at_once_then_double_up_to_a_minute_or_the_servers_back_off() {
        let other = MailboxError::Unavailable("down".into());
        assert_eq!(retry_delay(1, &other), Duration::ZERO);
        assert_eq!(retry_delay(2, &other), Duration::from_secs(1));
        assert_eq!(retry_delay(3, &other), Duration::from_secs(2));
        assert_eq!(retry_delay(30, &other), MAX_RETRY_DELAY);
        let busy = MailboxError::Throttled {
            back_off: Duration::from_secs(5),
        };
        assert_eq!(retry_delay(1, &busy), Duration::from_secs(5));
    }
}
