//! The engine at work: notifications in, debounced mailbox passes out; host events; periodic
//! reconciliation (every mailbox read, every project published again); subscriptions kept
//! alive.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::engine::{Engine, Metrics, SyncError};
use super::mailbox::{Delivery, MailboxError, MailboxStore};
use super::publish::PublishOptions;
use crate::pm::{HostEvent, PmHost};
use crate::state::{MailboxAddress, StateStore, SyncStatus};

/// A notification, in engine terms: which subscription, up to which watermark, about which
/// items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The subscription it came on.
    pub subscription_id: String,
    /// The last watermark in it.
    pub watermark: Option<String>,
    /// Items created, changed, moved or deleted (empty for a status notification).
    pub item_ids: Vec<String>,
}

/// What the listener should answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// Queued (or a status notification noted): answer OK.
    Accepted,
    /// Not a subscription of ours: answer Unsubscribe.
    UnknownSubscription,
    /// The queue is full: answer an HTTP error so that Exchange retries later.
    QueueFull,
}

/// Where the listener hands notifications to the engine. Cheap to clone.
#[derive(Clone)]
pub struct NotificationSink {
    tx: mpsc::Sender<(MailboxAddress, Notice)>,
    subscriptions: Arc<RwLock<HashMap<String, MailboxAddress>>>,
    metrics: Arc<Metrics>,
}

impl NotificationSink {
    /// Whether a subscription id is one of ours.
    pub fn knows(&self, subscription_id: &str) -> bool {
        self.subscriptions
            .read()
            .expect("subscription map poisoned")
            .contains_key(subscription_id)
    }

    /// Hands a notification over without waiting.
    pub fn deliver(&self, notice: Notice) -> NotificationOutcome {
        let mailbox = self
            .subscriptions
            .read()
            .expect("subscription map poisoned")
            .get(&notice.subscription_id)
            .cloned();
        let Some(mailbox) = mailbox else {
            return NotificationOutcome::UnknownSubscription;
        };
        Metrics::add(&self.metrics.notifications, 1);
        match self.tx.try_send((mailbox, notice)) {
            Ok(()) => {
                Metrics::add(&self.metrics.events_queued, 1);
                NotificationOutcome::Accepted
            }
            Err(_) => NotificationOutcome::QueueFull,
        }
    }
}

/// The running parts that belong to one engine: the notification queue and the subscriptions.
pub(crate) struct Runtime {
    tx: mpsc::Sender<(MailboxAddress, Notice)>,
    rx: Mutex<Option<mpsc::Receiver<(MailboxAddress, Notice)>>>,
    pub(crate) subscriptions: Arc<RwLock<HashMap<String, MailboxAddress>>>,
    /// Bumped whenever `subscriptions` changes (streaming regroups its connections).
    pub(crate) subscriptions_changed: tokio::sync::watch::Sender<u64>,
    /// Mailboxes that need a pass because their notifications may have been missed (a
    /// streaming connection that broke or was reopened).
    pub(crate) resync_tx: mpsc::UnboundedSender<MailboxAddress>,
    resync_rx: Mutex<Option<mpsc::UnboundedReceiver<MailboxAddress>>>,
}

impl Runtime {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (resync_tx, resync_rx) = mpsc::unbounded_channel();
        Runtime {
            tx,
            rx: Mutex::new(Some(rx)),
            subscriptions: Arc::default(),
            subscriptions_changed: tokio::sync::watch::channel(0).0,
            resync_tx,
            resync_rx: Mutex::new(Some(resync_rx)),
        }
    }
}

/// A mailbox waiting for its debounced pass.
struct Pending {
    first: Instant,
    last: Instant,
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// The sink the listener delivers notifications to.
    pub fn notification_sink(&self) -> NotificationSink {
        NotificationSink {
            tx: self.inner.runtime.tx.clone(),
            subscriptions: Arc::clone(&self.inner.runtime.subscriptions),
            metrics: Arc::clone(&self.inner.metrics),
        }
    }

    fn remember_subscription(&self, id: &str, mailbox: &MailboxAddress) {
        let mut map = self
            .inner
            .runtime
            .subscriptions
            .write()
            .expect("subscription map poisoned");
        let changed = map.get(id) != Some(mailbox)
            || map.iter().any(|(other, m)| m == mailbox && other != id);
        map.retain(|_, m| m != mailbox);
        map.insert(id.to_string(), mailbox.clone());
        drop(map);
        if changed {
            self.inner
                .runtime
                .subscriptions_changed
                .send_modify(|n| *n += 1);
        }
    }

    /// Subscribes every known mailbox that has no live subscription (push when a listener URL
    /// is configured, else streaming or pull as configured). Call it once the listener accepts
    /// connections.
    pub async fn subscribe_all(&self, renew: bool) -> Result<(), SyncError> {
        let Some(delivery) = self.delivery() else {
            return Ok(());
        };
        for state in self.inner.state.mailboxes().await? {
            let Some(mailbox) = state.mailbox.clone() else {
                continue;
            };
            if !renew && let Some(id) = &state.subscription_id {
                self.remember_subscription(id, &mailbox);
                continue;
            }
            // Resume after the last watermark when there is one: events since then are
            // delivered and nothing is missed.
            let result = match self
                .inner
                .mailboxes
                .subscribe(&mailbox, &delivery, state.watermark.as_deref())
                .await
            {
                Err(MailboxError::SubscriptionGone(_)) if state.watermark.is_some() => {
                    self.inner
                        .mailboxes
                        .subscribe(&mailbox, &delivery, None)
                        .await
                }
                other => other,
            };
            match result {
                Ok(sub) => {
                    self.remember_subscription(&sub.id, &mailbox);
                    self.heard_from(&mailbox, Some(sub.id), sub.watermark)
                        .await?;
                }
                Err(e) => warn!(%mailbox, error = %e, "cannot subscribe; reconciliation covers it"),
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves: debounced passes for notified mailboxes, publishes and
    /// map-backs for host events, reconciliation every interval (every mailbox read, every
    /// project published again), and re-subscription of mailboxes whose subscription fell
    /// silent. Work in progress finishes before it returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), SyncError> {
        let Some(mut notices) = self
            .inner
            .runtime
            .rx
            .lock()
            .expect("runtime lock poisoned")
            .take()
        else {
            return Ok(()); // already running elsewhere
        };
        let mut resyncs = self
            .inner
            .runtime
            .resync_rx
            .lock()
            .expect("runtime lock poisoned")
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let streams = match (&self.inner.config.push, &self.inner.config.streaming) {
            (None, Some(settings)) => {
                Some(tokio::spawn(self.clone().hold_streams(settings.clone())))
            }
            _ => None,
        };
        let mut host_events = self.inner.host.subscribe();
        let config = self.inner.config.clone();
        let mut pending: HashMap<MailboxAddress, Pending> = HashMap::new();
        let mut running: HashSet<MailboxAddress> = HashSet::new();
        let mut again: HashSet<MailboxAddress> = HashSet::new();
        let mut last_heard: HashMap<MailboxAddress, Instant> = HashMap::new();
        let republishing = Arc::new(AtomicBool::new(false));
        let mut tasks: JoinSet<(Option<MailboxAddress>, Result<(), SyncError>)> = JoinSet::new();
        let mut reconcile = tokio::time::interval_at(
            Instant::now() + config.reconcile_interval,
            config.reconcile_interval,
        );
        let watch_every = config
            .push
            .as_ref()
            .map(|p| p.status_frequency)
            .unwrap_or(Duration::from_secs(60));
        let mut watchdog = tokio::time::interval_at(Instant::now() + watch_every, watch_every);
        let poll_every = match (&config.push, config.pull_interval, &config.streaming) {
            (None, Some(every), None) => Some(every),
            _ => None,
        };
        let mut pull_tick = tokio::time::interval_at(
            Instant::now() + poll_every.unwrap_or(Duration::from_secs(3600)),
            poll_every.unwrap_or(Duration::from_secs(3600)),
        );
        let tick =
            (config.debounce / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut debounce_tick = tokio::time::interval(tick);
        debounce_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let start = Instant::now();
        // Catch up with what happened while the connector was not running: a pass for every
        // mailbox, and the status updates decided meanwhile.
        for m in self.known_mailboxes().await? {
            pending.insert(
                m,
                Pending {
                    first: start,
                    last: start,
                },
            );
        }
        {
            let engine = self.clone();
            tasks.spawn(async move {
                let resumed = engine.resume().await;
                let rechecked = engine.recheck_pending().await;
                (None, resumed.and(rechecked).map(|_| ()))
            });
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(mailbox) = resyncs.recv() => {
                    // Notifications may have been missed: read the mailbox's changes.
                    let now = Instant::now();
                    pending
                        .entry(mailbox)
                        .and_modify(|p| p.last = now)
                        .or_insert(Pending { first: now, last: now });
                }
                Some((mailbox, notice)) = notices.recv() => {
                    let now = Instant::now();
                    last_heard.insert(mailbox.clone(), now);
                    self.note_notification(&mailbox, &notice).await?;
                    if !notice.item_ids.is_empty() {
                        pending
                            .entry(mailbox)
                            .and_modify(|p| p.last = now)
                            .or_insert(Pending { first: now, last: now });
                    }
                }
                event = host_events.recv() => match event {
                    Ok(HostEvent::ProjectPublished { project }) => {
                        let engine = self.clone();
                        tasks.spawn(async move {
                            let r = engine.publish(project, PublishOptions::default()).await;
                            let r = match r {
                                Ok(_) => engine.subscribe_all(false).await,
                                Err(e) => Err(e),
                            };
                            (None, r)
                        });
                    }
                    Ok(HostEvent::UpdateDecided { key, outcome }) => {
                        let engine = self.clone();
                        tasks.spawn(async move {
                            (None, engine.map_back(key, &outcome).await.map(|_| ()))
                        });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Missed host events: decisions taken meanwhile are asked for again,
                        // and every mailbox gets a pass.
                        warn!(missed = n, "host events missed; rechecking pending updates");
                        let engine = self.clone();
                        tasks.spawn(async move { (None, engine.recheck_pending().await.map(|_| ())) });
                        for m in self.known_mailboxes().await? {
                            pending.entry(m).or_insert(Pending { first: start, last: start });
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        host_events = broadcast::channel(1).1;
                    }
                },
                _ = debounce_tick.tick() => {
                    self.start_due(&mut pending, &mut running, &mut again, &mut tasks);
                }
                _ = reconcile.tick() => {
                    Metrics::add(&self.inner.metrics.reconciles, 1);
                    // A decision whose event was lost (taken while the connector was down)
                    // is found here at the latest.
                    let engine = self.clone();
                    tasks.spawn(async move { (None, engine.recheck_pending().await.map(|_| ())) });
                    for m in self.known_mailboxes().await? {
                        pending.entry(m).or_insert(Pending { first: start, last: start });
                    }
                    // Publishing every project again finishes what a publish could not (a
                    // server that was down, a call that failed); an unchanged project sends
                    // nothing. One at a time.
                    if !republishing.swap(true, Ordering::SeqCst) {
                        let engine = self.clone();
                        let flag = Arc::clone(&republishing);
                        tasks.spawn(async move {
                            let r = engine.publish_all().await;
                            flag.store(false, Ordering::SeqCst);
                            (None, r)
                        });
                    }
                }
                _ = pull_tick.tick(), if poll_every.is_some() => {
                    let now = Instant::now();
                    for m in self.poll_all().await? {
                        last_heard.insert(m.clone(), now);
                        pending
                            .entry(m)
                            .and_modify(|p| p.last = now)
                            .or_insert(Pending { first: now, last: now });
                    }
                }
                _ = watchdog.tick() => {
                    if let Some(push) = &config.push {
                        let silent_after = push.status_frequency * 2;
                        let now = Instant::now();
                        let silent: Vec<MailboxAddress> = self
                            .known_mailboxes()
                            .await?
                            .into_iter()
                            .filter(|m| {
                                last_heard.get(m).is_none_or(|t| now.duration_since(*t) > silent_after)
                                    && now.duration_since(start) > silent_after
                            })
                            .collect();
                        if !silent.is_empty() {
                            warn!(count = silent.len(), "subscriptions silent for 2 x StatusFrequency; re-subscribing");
                            for m in &silent {
                                self.resubscribe(m).await?;
                                last_heard.insert(m.clone(), now);
                                pending.entry(m.clone()).or_insert(Pending { first: start, last: start });
                            }
                        }
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Ok((mailbox, result)) => {
                            if let Err(e) = result {
                                warn!(error = %e, "sync work failed; it is retried");
                            }
                            if let Some(m) = mailbox {
                                running.remove(&m);
                                if again.remove(&m) {
                                    let now = Instant::now();
                                    pending.entry(m).or_insert(Pending { first: now, last: now });
                                }
                                // A slot is free: the next due mailbox need not wait for a tick.
                                self.start_due(&mut pending, &mut running, &mut again, &mut tasks);
                            }
                        }
                        Err(e) => warn!(error = %e, "sync task panicked or was cancelled"),
                    }
                }
            }
        }
        if let Some(streams) = streams {
            streams.abort();
        }
        info!(
            in_flight = tasks.len(),
            "stopping: finishing work in progress"
        );
        while let Some(done) = tasks.join_next().await {
            if let Ok((_, Err(e))) = done {
                warn!(error = %e, "sync work failed during shutdown");
            }
        }
        Ok(())
    }

    /// Finishes what a crash interrupted, from the journal of intended writes: projects with
    /// creates in flight are published again (tagged items are found, never duplicated), and
    /// mailboxes with updates or deletes in flight get a pass. Returns the entries resumed.
    pub async fn resume(&self) -> Result<usize, SyncError> {
        let open = self.inner.state.unfinished_journal().await?;
        if open.is_empty() {
            return Ok(0);
        }
        let mut projects = std::collections::BTreeSet::new();
        let mut mailboxes = std::collections::BTreeSet::new();
        for e in &open {
            match e.kind {
                crate::state::WriteKind::Create | crate::state::WriteKind::Delete => {
                    projects.insert(e.key.project);
                }
                crate::state::WriteKind::Update => {
                    mailboxes.insert(e.mailbox.clone());
                }
            }
        }
        info!(
            entries = open.len(),
            projects = projects.len(),
            mailboxes = mailboxes.len(),
            "resuming writes interrupted by a crash"
        );
        for p in projects {
            match self.publish(p, PublishOptions::default()).await {
                Ok(_) | Err(SyncError::UnknownProject(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for m in mailboxes {
            self.sync_mailbox(&m).await?;
        }
        // Every interrupted write is settled now (done, found, or redone).
        self.inner
            .state
            .commit(crate::state::Commit {
                close_journal: open.iter().map(|e| e.id).collect(),
                ..crate::state::Commit::default()
            })
            .await?;
        Ok(open.len())
    }

    /// Asks the host again about every status update still pending here.
    ///
    /// Host events can be missed (a lagging receiver, a decision taken while the connector was
    /// down). Hosts answer a resubmitted update with its outcome (the same key, item and change
    /// key identify it), so submitting again maps back whatever was decided, and leaves the
    /// rest pending.
    pub async fn recheck_pending(&self) -> Result<usize, SyncError> {
        let mut by_mailbox: std::collections::BTreeMap<MailboxAddress, Vec<_>> =
            std::collections::BTreeMap::new();
        for row in self.inner.state.pending_approvals().await? {
            by_mailbox
                .entry(row.mailbox.clone())
                .or_default()
                .push(row.key);
        }
        let mut rechecked = 0;
        for (m, keys) in by_mailbox {
            let _guard = self.lock(&m).await;
            // Read again under the lock: a pass may have settled a row since the listing.
            let mut rows = Vec::new();
            for key in keys {
                if let Some(mut row) = self.inner.state.assignment(&key).await?
                    && matches!(row.status, SyncStatus::PendingApproval { .. })
                {
                    row.status = SyncStatus::Synced;
                    rows.push(row);
                }
            }
            rechecked += rows.len();
            let mut report = crate::sync::InboundReport::default();
            self.process_rows(&m, rows, super::inbound::Mode::Normal, &mut report)
                .await?;
        }
        Ok(rechecked)
    }

    /// Publishes every project of the host (subscribing mailboxes that are new), going on
    /// after a project that fails.
    async fn publish_all(&self) -> Result<(), SyncError> {
        for project in self.inner.host.projects().await? {
            match self.publish(project, PublishOptions::default()).await {
                Ok(report) if report.failed > 0 => {
                    warn!(%project, failed = report.failed, "publish left items failed; retried at the next reconciliation");
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(%project, error = %e, "publish failed; retried at the next reconciliation")
                }
            }
        }
        self.subscribe_all(false).await
    }

    /// Starts the passes of the mailboxes whose debounce is over, oldest first, while fewer
    /// than `mailbox_concurrency` passes run; the others stay pending until a pass ends. A
    /// reconciliation makes every mailbox due at once, and each pass holds its mailbox's rows:
    /// unbounded, a thousand mailboxes would all be in memory together.
    fn start_due(
        &self,
        pending: &mut HashMap<MailboxAddress, Pending>,
        running: &mut HashSet<MailboxAddress>,
        again: &mut HashSet<MailboxAddress>,
        tasks: &mut JoinSet<(Option<MailboxAddress>, Result<(), SyncError>)>,
    ) {
        let config = &self.inner.config;
        let (debounce, max_debounce) = self.debounce();
        let now = Instant::now();
        let mut due: Vec<(Instant, MailboxAddress)> = pending
            .iter()
            .filter(|(_, p)| now >= p.last + debounce || now >= p.first + max_debounce)
            .map(|(m, p)| (p.first, m.clone()))
            .collect();
        due.sort();
        for (_, mailbox) in due {
            if running.contains(&mailbox) {
                pending.remove(&mailbox);
                again.insert(mailbox);
                continue;
            }
            if running.len() >= config.mailbox_concurrency.max(1) {
                continue;
            }
            pending.remove(&mailbox);
            running.insert(mailbox.clone());
            let engine = self.clone();
            tasks.spawn(async move {
                let r = engine.sync_mailbox(&mailbox).await.map(|_| ());
                (Some(mailbox), r)
            });
        }
    }

    async fn known_mailboxes(&self) -> Result<Vec<MailboxAddress>, SyncError> {
        Ok(self
            .inner
            .state
            .mailboxes()
            .await?
            .into_iter()
            .filter_map(|m| m.mailbox)
            .collect())
    }

    async fn note_notification(
        &self,
        mailbox: &MailboxAddress,
        notice: &Notice,
    ) -> Result<(), SyncError> {
        self.heard_from(mailbox, None, notice.watermark.clone())
            .await?;
        debug!(%mailbox, items = notice.item_ids.len(), "notification");
        Ok(())
    }

    /// How subscriptions deliver: push when a listener is configured, else streaming when
    /// configured, else pull when polling is configured, else not at all.
    fn delivery(&self) -> Option<Delivery> {
        let config = &self.inner.config;
        match (&config.push, config.pull_interval) {
            (Some(push), _) => Some(Delivery::Push {
                url: push.url.clone(),
                status_frequency: push.status_frequency,
            }),
            (None, _) if config.streaming.is_some() => Some(Delivery::Streaming),
            (None, Some(every)) => Some(Delivery::Pull {
                // Exchange drops a pull subscription not polled within its time-out.
                timeout: (every * 4).max(Duration::from_secs(600)),
            }),
            (None, None) => None,
        }
    }

    /// Records that the server spoke for a mailbox: now, and the subscription and watermark it
    /// gave, where it gave them. Only these columns: a pass of the same mailbox may be running
    /// and writes its sync state meanwhile.
    async fn heard_from(
        &self,
        mailbox: &MailboxAddress,
        subscription: Option<String>,
        watermark: Option<String>,
    ) -> Result<(), SyncError> {
        let now = chrono::Utc::now();
        self.inner
            .state
            .update_mailbox(mailbox, move |s| {
                if subscription.is_some() {
                    s.subscription_id = subscription;
                }
                if watermark.is_some() {
                    s.watermark = watermark;
                }
                s.last_notification = Some(now);
            })
            .await?;
        Ok(())
    }

    /// Polls the pull subscription of every mailbox; returns the mailboxes with changes.
    async fn poll_all(&self) -> Result<Vec<MailboxAddress>, SyncError> {
        let mut changed = Vec::new();
        for state in self.inner.state.mailboxes().await? {
            let (Some(mailbox), Some(sub)) = (state.mailbox.clone(), state.subscription_id.clone())
            else {
                continue;
            };
            let watermark = state.watermark.clone().unwrap_or_default();
            match self.inner.mailboxes.pull(&mailbox, &sub, &watermark).await {
                Ok(events) => {
                    self.heard_from(&mailbox, None, events.watermark.clone())
                        .await?;
                    if !events.items.is_empty() {
                        Metrics::add(&self.inner.metrics.events_queued, 1);
                        changed.push(mailbox);
                    }
                }
                Err(MailboxError::SubscriptionGone(why)) => {
                    warn!(%mailbox, %why, "pull subscription gone; subscribing again");
                    self.resubscribe(&mailbox).await?;
                    changed.push(mailbox);
                }
                Err(e) => warn!(%mailbox, error = %e, "polling failed; retried at the next poll"),
            }
        }
        Ok(changed)
    }

    /// Replaces a silent subscription with a new one (without its watermark; the pass that
    /// follows catches up). Whether a new subscription was made.
    pub(crate) async fn resubscribe(&self, mailbox: &MailboxAddress) -> Result<bool, SyncError> {
        let Some(delivery) = self.delivery() else {
            return Ok(false);
        };
        match self
            .inner
            .mailboxes
            .subscribe(mailbox, &delivery, None)
            .await
        {
            Ok(sub) => {
                // remember_subscription forgets the mailbox's old subscription id.
                self.remember_subscription(&sub.id, mailbox);
                let now = chrono::Utc::now();
                self.inner
                    .state
                    .update_mailbox(mailbox, move |s| {
                        s.subscription_id = Some(sub.id);
                        s.watermark = sub.watermark;
                        s.last_notification = Some(now);
                    })
                    .await?;
                Ok(true)
            }
            Err(e) => {
                warn!(%mailbox, error = %e, "re-subscription failed; retried later");
                Ok(false)
            }
        }
    }
}
