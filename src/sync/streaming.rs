//! Step notified of the list in the [`sync`](super) module doc, for streaming subscriptions:
//! the engine holds GetStreamingEvents connections open and feeds what they carry into the same
//! queue the push listener fills.
//!
//! The subscriptions are grouped by the server (backend) that holds them, as Exchange 2013 and
//! later require: a GetStreamingEvents reaches one backend (the one its
//! `X-BackEndOverrideCookie` names), which knows only its own subscriptions. So subscriptions
//! of different backends never share a connection, at most `subscriptions_per_connection`
//! (Exchange allows 200) share one, and each connection sends its group's cookie and is
//! anchored (`X-AnchorMailbox`) on the group's first subscribed mailbox. Groups are stable: a
//! new subscription joins a group of its backend with room, a vanished one leaves its group,
//! and only the groups that changed are reconnected. A mailbox whose new subscription names
//! another backend (a database fail-over moved it) leaves its old group for one of the new
//! backend. Subscriptions whose backend is unknown (made before a restart) share groups of
//! their own; the server answers ErrorSubscriptionNotFound for those it routed elsewhere, and
//! their replacements name their backend. Each group's task
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
use super::mailbox::{Backend, MailboxError, MailboxStore, StreamEvent};
use super::metrics::Metrics;
use super::notify::NotificationOutcome;
use crate::pm::PmHost;
use crate::state::{MailboxAddress, StateStore};

/// The longest wait before reopening a connection that keeps failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// One connection's subscriptions, all held by one backend.
struct Group {
    /// The backend holding them (`None`: not known).
    backend: Option<Backend>,
    /// The mailbox the connection is anchored on: the group's first subscribed one.
    anchor: MailboxAddress,
    ids: BTreeMap<String, MailboxAddress>,
    task: Option<AbortHandle>,
    changed: bool,
}

/// Every subscription the engine holds: its mailbox and the backend holding it.
type Current = HashMap<String, (MailboxAddress, Option<Backend>)>;

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
            let current: Current =
                self.inner
                    .runtime
                    .with_subscriptions(|subscriptions, backends| {
                        subscriptions
                            .iter()
                            .map(|(id, m)| (id.clone(), (m.clone(), backends.get(id).cloned())))
                            .collect()
                    });
            for moved in regroup(&mut groups, &current, per_connection) {
                info!(
                    mailbox = %moved.mailbox,
                    from = moved.from.as_ref().map_or("unknown", |b| b.0.as_str()),
                    to = moved.to.as_ref().map_or("unknown", |b| b.0.as_str()),
                    "the mailbox's subscription is on another backend now; its streaming connection moves"
                );
                // The old backend would keep the old subscription until it expires: end it
                // there (its cookie routes the request). A failure costs nothing but that
                // wait, so it is logged and left.
                if let Some(old_backend) = moved.from {
                    let engine = self.clone();
                    tasks.spawn(async move {
                        match engine
                            .inner
                            .mailboxes
                            .unsubscribe(&moved.mailbox, &moved.old_id, Some(&old_backend))
                            .await
                        {
                            Ok(()) => debug!(mailbox = %moved.mailbox, backend = %old_backend, "old subscription ended on its old backend"),
                            Err(e) => warn!(mailbox = %moved.mailbox, backend = %old_backend, error = %e, "cannot end the old subscription on its old backend; it expires by itself"),
                        }
                    });
                }
            }
            for group in groups.iter_mut().filter(|g| g.changed) {
                if let Some(task) = group.task.take() {
                    task.abort();
                }
                group.task = Some(tasks.spawn(self.clone().hold_connection(
                    Target {
                        ids: group.ids.clone(),
                        anchor: group.anchor.clone(),
                        backend: group.backend.clone(),
                    },
                    settings.connection_timeout,
                    Arc::clone(&shared),
                )));
                group.changed = false;
            }
            debug!(
                connections = groups.len(),
                backends = groups
                    .iter()
                    .map(|g| &g.backend)
                    .collect::<HashSet<_>>()
                    .len(),
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
    async fn hold_connection(self, target: Target, timeout: Duration, shared: Arc<Shared>) {
        let Target {
            ids,
            anchor,
            backend,
        } = target;
        let mut mailboxes: Vec<MailboxAddress> = ids.values().cloned().collect();
        mailboxes.sort();
        mailboxes.dedup();
        if mailboxes.is_empty() {
            return;
        }
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
                .open_stream(&anchor, &list, backend.as_ref(), timeout)
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
            debug!(%anchor, backend = backend.as_ref().map_or("unknown", |b| b.0.as_str()), subscriptions = list.len(), "streaming connection open");
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
                                // Its group's backend lost it (a fail-over may have moved the
                                // mailbox): the new one goes where the mailbox lives.
                                engine.leave_affinity_group(&m);
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

/// What one connection is for.
struct Target {
    ids: BTreeMap<String, MailboxAddress>,
    anchor: MailboxAddress,
    backend: Option<Backend>,
}

/// A mailbox whose new subscription is held by another backend than its old one.
#[derive(Debug, PartialEq, Eq)]
struct Moved {
    mailbox: MailboxAddress,
    /// The subscription it had.
    old_id: String,
    from: Option<Backend>,
    to: Option<Backend>,
}

/// Fits the groups to the subscriptions `current`: vanished ids (and ids whose backend is no
/// longer the group's) leave, new ones join a group of their backend with room (or a new
/// group); every group that changed is marked. Returns the mailboxes whose subscription moved
/// to another backend.
fn regroup(groups: &mut Vec<Group>, current: &Current, per_connection: usize) -> Vec<Moved> {
    let before: HashMap<MailboxAddress, (String, Option<Backend>)> = groups
        .iter()
        .flat_map(|g| {
            g.ids
                .iter()
                .map(|(id, m)| (m.clone(), (id.clone(), g.backend.clone())))
        })
        .collect();
    for g in groups.iter_mut() {
        let count = g.ids.len();
        g.ids.retain(|id, m| {
            current
                .get(id)
                .is_some_and(|(cm, cb)| cm == m && *cb == g.backend)
        });
        g.changed |= g.ids.len() != count;
        if !g.ids.values().any(|m| *m == g.anchor)
            && let Some(next) = g.ids.values().min()
        {
            // The anchor left: the connection is routed by another of the group's mailboxes.
            g.anchor = next.clone();
            g.changed = true;
        }
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
    let mut new: Vec<(&String, &MailboxAddress, &Option<Backend>)> = current
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .map(|(id, (m, b))| (id, m, b))
        .collect();
    new.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    let mut moved = Vec::new();
    for (id, m, backend) in new {
        if let Some((old_id, old)) = before.get(m)
            && old != backend
            && old_id != id
        {
            moved.push(Moved {
                mailbox: m.clone(),
                old_id: old_id.clone(),
                from: old.clone(),
                to: backend.clone(),
            });
        }
        match groups
            .iter_mut()
            .find(|g| g.backend == *backend && g.ids.len() < per_connection)
        {
            Some(g) => {
                g.ids.insert(id.clone(), m.clone());
                g.changed = true;
            }
            None => groups.push(Group {
                backend: backend.clone(),
                anchor: m.clone(),
                ids: BTreeMap::from([(id.clone(), m.clone())]),
                task: None,
                changed: true,
            }),
        }
    }
    moved
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

    fn subs(pairs: &[(&str, &str)]) -> Current {
        pairs
            .iter()
            .map(|(id, m)| (id.to_string(), (MailboxAddress::new(m), None)))
            .collect()
    }

    fn on(triples: &[(&str, &str, &str)]) -> Current {
        triples
            .iter()
            .map(|(id, m, b)| {
                (
                    id.to_string(),
                    (MailboxAddress::new(m), Some(Backend(b.to_string()))),
                )
            })
            .collect()
    }

    fn anchors(groups: &[Group]) -> Vec<&str> {
        groups.iter().map(|g| g.anchor.as_str()).collect()
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
    fn backends_never_share_a_group_and_each_is_anchored_on_its_first_mailbox() {
        let mut groups = Vec::new();
        let current = on(&[
            ("a", "ann@example.com", "MBX1"),
            ("b", "bob@example.com", "MBX2"),
            ("c", "chen@example.com", "MBX1"),
            ("d", "dana@example.com", "MBX2"),
            ("e", "eve@example.com", "MBX1"),
        ]);
        let moved = regroup(&mut groups, &current, 2);
        assert!(moved.is_empty());
        // MBX1 holds three: two groups of it; MBX2 one group.
        assert_eq!(
            ids(&groups),
            vec![vec!["a", "c"], vec!["b", "d"], vec!["e"]]
        );
        assert_eq!(
            anchors(&groups),
            vec!["ann@example.com", "bob@example.com", "eve@example.com"]
        );
        for g in &groups {
            let backends: HashSet<_> = g.ids.keys().map(|id| &current[id].1).collect();
            assert_eq!(backends.len(), 1, "one backend per group");
            assert_eq!(backends.into_iter().next().unwrap(), &g.backend);
        }
        groups.iter_mut().for_each(|g| g.changed = false);

        // Ann's mailbox fails over to MBX2: her new subscription joins a group of MBX2 (with
        // room: Eve's group is MBX1's), her old group is re-anchored on Chen.
        let mut moved_on = current.clone();
        moved_on.remove("a");
        moved_on.insert(
            "a2".into(),
            (
                MailboxAddress::new("ann@example.com"),
                Some(Backend("MBX2".into())),
            ),
        );
        let moved = regroup(&mut groups, &moved_on, 2);
        assert_eq!(
            moved,
            vec![Moved {
                mailbox: MailboxAddress::new("ann@example.com"),
                old_id: "a".into(),
                from: Some(Backend("MBX1".into())),
                to: Some(Backend("MBX2".into()))
            }]
        );
        assert_eq!(
            ids(&groups),
            vec![vec!["c"], vec!["b", "d"], vec!["e"], vec!["a2"]]
        );
        assert_eq!(groups[0].anchor.as_str(), "chen@example.com");
        assert_eq!(groups[3].backend, Some(Backend("MBX2".into())));
        assert_eq!(
            groups.iter().map(|g| g.changed).collect::<Vec<_>>(),
            vec![true, false, false, true]
        );
    }

    #[test]
    fn a_subscription_whose_backend_becomes_known_leaves_the_unknown_group() {
        let mut groups = Vec::new();
        regroup(&mut groups, &subs(&[("a", "ann@example.com")]), 200);
        assert_eq!(groups[0].backend, None);
        groups.iter_mut().for_each(|g| g.changed = false);
        let known = on(&[("a", "ann@example.com", "MBX1")]);
        regroup(&mut groups, &known, 200);
        assert_eq!(ids(&groups), vec![vec!["a"]]);
        assert_eq!(groups[0].backend, Some(Backend("MBX1".into())));
        assert!(groups[0].changed);
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
