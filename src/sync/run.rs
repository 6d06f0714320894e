//! The engine at work: the steps notified and reconcile of the list in the [`sync`](super)
//! module doc. Notifications in, debounced mailbox passes out (when is the scheduler's to say,
//! `scheduler.rs`); host events; reconciliation (every mailbox read, every project published
//! again); subscriptions kept alive.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::SyncConfig;
use super::engine::{Engine, SyncError};
use super::mailbox::{Delivery, MailboxError, MailboxStore};
use super::metrics::Metrics;
use super::notify::{Notice, NotificationSink};
use super::publish::PublishOptions;
use super::scheduler::Scheduler;
use crate::pm::{HostEvent, PmHost};
use crate::state::{MailboxAddress, StateStore, SyncStatus};

/// The right to publish every project, held by one [`Engine::publish_all`] at a time; given
/// back when dropped, also when the publish is cancelled.
struct RepublishTurn<'a>(&'a AtomicBool);

impl<'a> RepublishTurn<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::SeqCst)).then_some(RepublishTurn(flag))
    }
}

impl Drop for RepublishTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The engine's work in flight: each task names the mailbox whose pass it is, if it is one.
type Work = JoinSet<(Option<MailboxAddress>, Result<(), SyncError>)>;

/// What woke [`Engine::run`].
enum Wake {
    /// A notification for a mailbox.
    Notice(MailboxAddress, Notice),
    /// A mailbox whose notifications may have been missed (a streaming connection broke or
    /// was reopened).
    Missed(MailboxAddress),
    /// A host event, or news that some were missed.
    Host(Result<HostEvent, broadcast::error::RecvError>),
    /// Time to start the passes whose debounce is over.
    Debounce,
    /// Time to reconcile.
    Reconcile,
    /// Time to poll the pull subscriptions.
    Poll,
    /// Time to look for silent subscriptions.
    Watchdog,
    /// A task ended.
    Done(Result<(Option<MailboxAddress>, Result<(), SyncError>), tokio::task::JoinError>),
}

/// The engine's clocks, on tokio time (tests can pause it).
struct Clocks {
    /// A quarter of the debounce at start (5 to 250 ms): how often due mailboxes are looked
    /// for.
    debounce: tokio::time::Interval,
    reconcile: tokio::time::Interval,
    /// Every StatusFrequency (a minute without push).
    watchdog: tokio::time::Interval,
    /// Every `pull_interval`, when polling pull subscriptions (no listener, no streaming).
    poll: tokio::time::Interval,
    polling: bool,
}

impl Clocks {
    fn new(config: &SyncConfig) -> Self {
        let reconcile = tokio::time::interval_at(
            Instant::now() + config.reconcile_interval,
            config.reconcile_interval,
        );
        let watch_every = config
            .push
            .as_ref()
            .map(|p| p.status_frequency)
            .unwrap_or(Duration::from_secs(60));
        let watchdog = tokio::time::interval_at(Instant::now() + watch_every, watch_every);
        let poll_every = match (&config.push, config.pull_interval, &config.streaming) {
            (None, Some(every), None) => Some(every),
            _ => None,
        };
        let poll = tokio::time::interval_at(
            Instant::now() + poll_every.unwrap_or(Duration::from_secs(3600)),
            poll_every.unwrap_or(Duration::from_secs(3600)),
        );
        let tick =
            (config.debounce / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut debounce = tokio::time::interval(tick);
        debounce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Clocks {
            debounce,
            reconcile,
            watchdog,
            poll,
            polling: poll_every.is_some(),
        }
    }
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// The sink the listener delivers notifications to.
    pub fn notification_sink(&self) -> NotificationSink {
        self.inner.runtime.sink(Arc::clone(&self.inner.metrics))
    }

    fn remember_subscription(&self, id: &str, mailbox: &MailboxAddress) {
        self.inner.runtime.remember(id, mailbox);
    }

    /// Subscribes every known mailbox that has no live subscription (push when a listener URL
    /// is configured). Call it once the listener accepts connections.
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
    ///
    /// The loop waits for the next event, tells the scheduler (`scheduler.rs`) what happened,
    /// and starts the work it says is due.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), SyncError> {
        let Some(mut notices) = self.inner.runtime.take_queue() else {
            return Ok(()); // already running elsewhere
        };
        let mut resyncs = self.inner.runtime.take_resyncs();
        // Streaming (no push listener): the connections are held by their own tasks, which
        // feed the same queue.
        let streams = match (&self.inner.config.push, &self.inner.config.streaming) {
            (None, Some(settings)) => {
                Some(tokio::spawn(self.clone().hold_streams(settings.clone())))
            }
            _ => None,
        };
        let mut host_events = self.inner.host.subscribe();
        let mut clocks = Clocks::new(&self.inner.config);
        let mut scheduler = Scheduler::new(Instant::now(), self.inner.config.mailbox_concurrency);
        let mut tasks = Work::new();
        tokio::pin!(shutdown);
        // Catch up with what happened while the connector was not running: a pass for every
        // mailbox, and the status updates decided meanwhile.
        scheduler.catch_up(self.known_mailboxes().await?);
        {
            let engine = self.clone();
            tasks.spawn(async move {
                let resumed = engine.resume().await;
                let rechecked = engine.recheck_pending().await;
                (None, resumed.and(rechecked).map(|_| ()))
            });
        }
        loop {
            let wake = tokio::select! {
                _ = &mut shutdown => break,
                Some(mailbox) = resyncs.recv() => Wake::Missed(mailbox),
                Some((mailbox, notice)) = notices.recv() => Wake::Notice(mailbox, notice),
                event = host_events.recv() => Wake::Host(event),
                _ = clocks.debounce.tick() => Wake::Debounce,
                _ = clocks.reconcile.tick() => Wake::Reconcile,
                _ = clocks.poll.tick(), if clocks.polling => Wake::Poll,
                _ = clocks.watchdog.tick() => Wake::Watchdog,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => Wake::Done(done),
            };
            match wake {
                Wake::Notice(mailbox, notice) => {
                    let changed = !notice.item_ids.is_empty();
                    scheduler.heard(mailbox.clone(), Instant::now(), changed);
                    self.note_notification(&mailbox, &notice).await?;
                }
                Wake::Missed(mailbox) => scheduler.missed(mailbox, Instant::now()),
                Wake::Host(Ok(event)) => self.on_host_event(event, &mut tasks),
                Wake::Host(Err(broadcast::error::RecvError::Lagged(n))) => {
                    // Missed host events: decisions taken meanwhile are asked for again, and
                    // every mailbox gets a pass.
                    warn!(missed = n, "host events missed; rechecking pending updates");
                    let engine = self.clone();
                    tasks.spawn(async move { (None, engine.recheck_pending().await.map(|_| ())) });
                    scheduler.catch_up(self.known_mailboxes().await?);
                }
                Wake::Host(Err(broadcast::error::RecvError::Closed)) => {
                    host_events = broadcast::channel(1).1;
                }
                Wake::Debounce => self.start_passes(&mut scheduler, &mut tasks),
                Wake::Reconcile => self.reconcile(&mut scheduler, &mut tasks).await?,
                Wake::Poll => {
                    let now = Instant::now();
                    for m in self.poll_all().await? {
                        scheduler.heard(m, now, true);
                    }
                }
                Wake::Watchdog => self.watch_subscriptions(&mut scheduler).await?,
                Wake::Done(Ok((mailbox, result))) => {
                    if let Err(e) = result {
                        warn!(error = %e, "sync work failed; it is retried");
                    }
                    if let Some(m) = mailbox {
                        scheduler.finished(&m, Instant::now());
                        // A slot is free: the next due mailbox need not wait for a tick.
                        self.start_passes(&mut scheduler, &mut tasks);
                    }
                }
                Wake::Done(Err(e)) => warn!(error = %e, "sync task panicked or was cancelled"),
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

    /// A host event: a published project is published here (and its new mailboxes
    /// subscribed), a decided status update mapped back.
    fn on_host_event(&self, event: HostEvent, tasks: &mut Work) {
        match event {
            HostEvent::ProjectPublished { project } => {
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
            HostEvent::UpdateDecided { key, outcome } => {
                let engine = self.clone();
                tasks
                    .spawn(async move { (None, engine.map_back(key, &outcome).await.map(|_| ())) });
            }
        }
    }

    /// Step "reconcile": every mailbox gets a pass, the host is asked again about pending
    /// updates, and every project is published again.
    async fn reconcile(
        &self,
        scheduler: &mut Scheduler,
        tasks: &mut Work,
    ) -> Result<(), SyncError> {
        Metrics::add(&self.inner.metrics.reconciles, 1);
        // A decision whose event was lost (taken while the connector was down) is found here
        // at the latest.
        let engine = self.clone();
        tasks.spawn(async move { (None, engine.recheck_pending().await.map(|_| ())) });
        scheduler.catch_up(self.known_mailboxes().await?);
        // Publishing every project again finishes what a publish could not (a server that was
        // down, a call that failed); an unchanged project sends nothing. One at a time: see
        // publish_all.
        let engine = self.clone();
        tasks.spawn(async move { (None, engine.publish_all().await) });
        Ok(())
    }

    /// Re-creates the subscriptions silent for twice their StatusFrequency; each such mailbox
    /// gets a pass.
    async fn watch_subscriptions(&self, scheduler: &mut Scheduler) -> Result<(), SyncError> {
        let Some(push) = &self.inner.config.push else {
            return Ok(());
        };
        let now = Instant::now();
        let silent = scheduler.silent(
            self.known_mailboxes().await?,
            now,
            push.status_frequency * 2,
        );
        if !silent.is_empty() {
            warn!(
                count = silent.len(),
                "subscriptions silent for 2 x StatusFrequency; re-subscribing"
            );
            for m in silent {
                self.resubscribe(&m).await?;
                scheduler.resubscribed(m, now);
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
            self.process_rows(&m, rows, super::decide::Mode::Normal, &mut report)
                .await?;
        }
        Ok(rechecked)
    }

    /// Publishes every project of the host (subscribing mailboxes that are new), going on
    /// after a project that fails: what the reconciliation and the connector's start run.
    ///
    /// One at a time: while one runs, another call returns at once, since the running one
    /// publishes the same projects (an unchanged project sends nothing).
    pub(crate) async fn publish_all(&self) -> Result<(), SyncError> {
        let Some(_turn) = RepublishTurn::take(&self.inner.republishing) else {
            debug!("every project is being published already");
            return Ok(());
        };
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

    /// Starts the passes the scheduler says are due. At most `mailbox_concurrency` run: a
    /// reconciliation makes every mailbox due at once, and each pass holds its mailbox's rows;
    /// unbounded, a thousand mailboxes would all be in memory together.
    fn start_passes(&self, scheduler: &mut Scheduler, tasks: &mut Work) {
        let (debounce, max_debounce) = self.debounce();
        for mailbox in scheduler.start_due(Instant::now(), debounce, max_debounce) {
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
