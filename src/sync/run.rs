//! The engine at work: the steps notified and reconcile of the list in the [`sync`](super)
//! module doc. Notifications in, debounced mailbox passes out (when is the scheduler's to say,
//! `scheduler.rs`); host events; reconciliation (every mailbox read, every project published
//! again); subscriptions kept alive.

use std::collections::HashMap;
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
use crate::state::{ItemRef, LeaseTiming, MailboxAddress, QueuedNotice, StateStore, SyncStatus};

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
    /// Time to renew the mailbox leases.
    Lease,
    /// Time to look for notifications other instances queued for this one.
    Queue,
    /// Time to write the watermarks of the notifications heard.
    Note,
    /// A notification on a subscription not known here.
    Unrouted(Notice),
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
    /// Every lease renewal period, in a cluster.
    lease: tokio::time::Interval,
    /// Every second, in a cluster: the notifications queued for this instance.
    queue: tokio::time::Interval,
    clustered: bool,
    /// Every [`NOTE_EVERY`]: the watermarks of the notifications heard meanwhile are written.
    note: tokio::time::Interval,
}

impl Clocks {
    fn new(config: &SyncConfig, leases: Option<LeaseTiming>) -> Self {
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
        let renew = leases.map_or(Duration::from_secs(3600), |t| t.renew);
        let mut lease = tokio::time::interval_at(Instant::now() + renew, renew);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue = tokio::time::interval(Duration::from_secs(1));
        queue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut note = tokio::time::interval(NOTE_EVERY);
        note.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Clocks {
            debounce,
            reconcile,
            watchdog,
            poll,
            polling: poll_every.is_some(),
            lease,
            queue,
            clustered: leases.is_some(),
            note,
        }
    }
}

/// Notifications taken from the queue at once at most.
const NOTICE_BATCH: usize = 1024;

/// How often the watermarks of the notifications heard are written ([`Heard`]).
const NOTE_EVERY: Duration = Duration::from_secs(1);

/// The mailboxes heard from since their watermarks were last written, each with the last
/// watermark heard (`None`: none came).
///
/// Written every [`NOTE_EVERY`], before a lease round and when the loop stops, in one state
/// transaction, rather than one per notification (two state writes per edit at low rates, one
/// for the edit's notification and one for the echo of the write back). A watermark only says
/// where a new subscription resumes: one a second old, or lost with the process, makes Exchange
/// send some notifications again, each of which costs at most a pass that finds nothing new.
#[derive(Default)]
struct Heard(HashMap<MailboxAddress, Option<String>>);

impl Heard {
    fn note(&mut self, mailbox: MailboxAddress, watermark: Option<String>) {
        let last = self.0.entry(mailbox).or_default();
        if watermark.is_some() {
            *last = watermark;
        }
    }
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// The sink the listener delivers notifications to.
    pub fn notification_sink(&self) -> NotificationSink {
        self.inner.runtime.sink(Arc::clone(&self.inner.metrics))
    }

    fn remember_subscription(
        &self,
        id: &str,
        mailbox: &MailboxAddress,
        backend: Option<&super::mailbox::Backend>,
    ) {
        self.inner.runtime.remember(id, mailbox, backend);
    }

    /// Subscribes every known mailbox (held here, in a cluster) that has no live subscription
    /// (push when a listener URL is configured). Call it once the listener accepts connections.
    pub async fn subscribe_all(&self, renew: bool) -> Result<(), SyncError> {
        if self.delivery().is_none() {
            return Ok(());
        }
        for state in self.inner.state.mailboxes().await? {
            if let Some(mailbox) = &state.mailbox
                && self.holds(mailbox)
            {
                self.subscribe_one(state.clone(), renew).await?;
            }
        }
        Ok(())
    }

    /// Subscribes one mailbox unless it has a subscription (and `renew` is off): a
    /// subscription made by another instance serves this one as well, since Exchange posts
    /// to the shared URL and any instance may open a stream on it.
    async fn subscribe_one(
        &self,
        state: crate::state::MailboxState,
        renew: bool,
    ) -> Result<(), SyncError> {
        let (Some(delivery), Some(mailbox)) = (self.delivery(), state.mailbox.clone()) else {
            return Ok(());
        };
        // One at a time, each looking at the stored state afresh: two callers at once (the
        // start-up, leases gained, a publish) would otherwise both find no subscription and
        // subscribe the mailbox twice.
        let _one = self.inner.runtime.subscribing.lock().await;
        let state = match self.inner.state.mailbox(&mailbox).await? {
            Some(fresh) if !renew => fresh,
            _ => state,
        };
        if !renew && let Some(id) = &state.subscription_id {
            // Made by another instance (or before a restart), which server holds it is not
            // known; a streaming connection that misses it replaces it.
            let known = self
                .inner
                .runtime
                .backends
                .read()
                .expect("backend map poisoned")
                .get(id)
                .cloned();
            self.remember_subscription(id, &mailbox, known.as_ref());
            return Ok(());
        }
        // Resume after the last watermark when there is one: events since then are
        // delivered and nothing is missed. A streaming subscription is anchored on its
        // affinity group, when the mailbox has one.
        let affinity = self.affinity_for(&mailbox, &delivery);
        let result = match self
            .inner
            .mailboxes
            .subscribe(
                &mailbox,
                &delivery,
                state.watermark.as_deref(),
                affinity.as_ref(),
            )
            .await
        {
            Err(MailboxError::SubscriptionGone(_)) if state.watermark.is_some() => {
                self.inner
                    .mailboxes
                    .subscribe(&mailbox, &delivery, None, affinity.as_ref())
                    .await
            }
            other => other,
        };
        match result {
            Ok(sub) => {
                self.remember_subscription(&sub.id, &mailbox, sub.backend.as_ref());
                self.heard_from(&mailbox, Some(sub.id), sub.watermark)
                    .await?;
            }
            Err(e) => warn!(%mailbox, error = %e, "cannot subscribe; reconciliation covers it"),
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
        let cluster = self.inner.cluster.get().cloned();
        let mut clocks = Clocks::new(&self.inner.config, cluster.as_ref().map(|c| c.timing));
        let mut scheduler = Scheduler::new(Instant::now(), self.inner.config.mailbox_concurrency);
        let mut tasks = Work::new();
        let mut unrouted = self.inner.runtime.take_unrouted();
        // Woken at once when another instance queues a notification (PostgreSQL); the queue
        // is polled every second besides.
        let mut queued = match &cluster {
            Some(_) => self.inner.state.listen_notices(),
            None => None,
        }
        .unwrap_or_else(|| tokio::sync::mpsc::channel(1).1);
        // Subscriptions no instance knew, since when: buried after two lease periods (one made
        // by another instance a moment ago is in the store by then).
        let mut unknown: std::collections::HashMap<String, Instant> =
            std::collections::HashMap::new();
        tokio::pin!(shutdown);
        if let Some(c) = &cluster {
            info!(instance = %c.me, lease_s = c.timing.lease.as_secs(), renew_s = c.timing.renew.as_secs(), "joining the cluster");
            // Lease rows for every mailbox known so far (publishes add rows for new ones).
            let known: Vec<MailboxAddress> = self
                .inner
                .state
                .mailboxes()
                .await?
                .into_iter()
                .filter_map(|m| m.mailbox)
                .collect();
            self.inner.state.add_leases(known).await?;
            // The first round before anything else: catch-up and resume work only on what
            // this instance holds.
            self.lease_tick(&mut scheduler, &mut tasks).await;
            self.inner.first_lease_round.send_replace(true);
        }
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
        let mut heard = Heard::default();
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
                _ = clocks.lease.tick(), if clocks.clustered => Wake::Lease,
                _ = clocks.queue.tick(), if clocks.clustered => Wake::Queue,
                _ = clocks.note.tick(), if !heard.0.is_empty() => Wake::Note,
                Some(_) = queued.recv() => Wake::Queue,
                Some(notice) = unrouted.recv() => Wake::Unrouted(notice),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => Wake::Done(done),
            };
            match wake {
                Wake::Notice(mailbox, notice) => {
                    // With it, every notification queued meanwhile, so that under load the loop
                    // keeps up with the listener and the queue does not fill (a full queue
                    // answers Exchange "busy", and Exchange sends again only 30 s later).
                    let mut batch = vec![(mailbox, notice)];
                    while batch.len() < NOTICE_BATCH
                        && let Ok(next) = notices.try_recv()
                    {
                        batch.push(next);
                    }
                    let r = self.on_notices(batch, &mut scheduler, &mut heard).await;
                    outlive_outage(r, "handling a notification")?;
                }
                Wake::Unrouted(notice) => {
                    let id = notice.subscription_id.clone();
                    let mut mailbox = self.inner.runtime.mailbox_of(&id);
                    if mailbox.is_none() {
                        let r = self.refresh_foreign().await;
                        outlive_outage(r, "reading the other instances' subscriptions")?;
                        mailbox = self.inner.runtime.mailbox_of(&id);
                    }
                    match (mailbox, &cluster) {
                        (Some(m), _) => {
                            unknown.remove(&id);
                            let r = self
                                .on_notices(vec![(m, notice)], &mut scheduler, &mut heard)
                                .await;
                            outlive_outage(r, "handling a notification")?;
                        }
                        (None, Some(c)) => {
                            let now = Instant::now();
                            let first = *unknown.entry(id.clone()).or_insert(now);
                            if now.duration_since(first) > c.timing.lease * 2 {
                                debug!(subscription = %id, "no instance knows the subscription; unsubscribing it");
                                unknown.remove(&id);
                                self.inner.runtime.bury(id);
                            }
                        }
                        (None, None) => {}
                    }
                }
                Wake::Lease => {
                    // Written while the leases are surely held.
                    let r = self.write_heard(&mut heard).await;
                    outlive_outage(r, "recording notifications")?;
                    self.lease_tick(&mut scheduler, &mut tasks).await
                }
                Wake::Note => {
                    let r = self.write_heard(&mut heard).await;
                    outlive_outage(r, "recording notifications")?;
                }
                Wake::Queue => {
                    if let Some(held) = self.leases_held()
                        && !held.is_empty()
                    {
                        match self.inner.state.take_notices(held).await {
                            Ok(queued) => {
                                let batch = queued
                                    .into_iter()
                                    .map(|q| (q.mailbox.clone(), Notice::from(q)))
                                    .collect();
                                let r = self.on_notices(batch, &mut scheduler, &mut heard).await;
                                outlive_outage(r, "handling a queued notification")?;
                            }
                            Err(e) => warn!(error = %e, "reading the notification queue failed"),
                        }
                    }
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
                Wake::Reconcile => {
                    let r = self.reconcile(&mut scheduler, &mut tasks).await;
                    outlive_outage(r, "reconciling")?;
                }
                Wake::Poll => {
                    let now = Instant::now();
                    match self.poll_all().await {
                        Ok(changed) => {
                            for (m, versions) in changed {
                                match versions {
                                    Some(v) => scheduler.heard_versions(m, now, v),
                                    None => scheduler.heard(m, now, true),
                                }
                            }
                        }
                        Err(e) => outlive_outage(Err(e), "polling")?,
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
        if let Err(e) = self.write_heard(&mut heard).await {
            warn!(error = %e, "cannot record the last notifications' watermarks");
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
        if let Some(c) = &cluster {
            // Handed back now, so that the others take these mailboxes at their next round
            // rather than after the expiry.
            if let Err(e) = crate::state::lease::leave(&self.inner.state, &c.me, &c.held()).await {
                warn!(error = %e, "cannot hand the leases back; they expire instead");
            }
            c.set(Default::default(), Instant::now());
        }
        Ok(())
    }

    /// Notifications, in the order they came: for a mailbox this instance holds, its pass is
    /// due after the debounce, and its last watermark is noted in `heard` (written by
    /// [`Engine::write_heard`]); one for a mailbox held elsewhere is queued in the store for the
    /// instance that does. A failed write does not stop the others; the first failure is
    /// returned.
    async fn on_notices(
        &self,
        batch: Vec<(MailboxAddress, Notice)>,
        scheduler: &mut Scheduler,
        heard: &mut Heard,
    ) -> Result<(), SyncError> {
        let now = Instant::now();
        let mut first_failure = Ok(());
        for (mailbox, notice) in batch {
            if !self.holds(&mailbox) {
                debug!(%mailbox, "notification for a mailbox held elsewhere; handed over");
                let queued = self
                    .inner
                    .state
                    .enqueue_notice(QueuedNotice {
                        mailbox,
                        subscription_id: notice.subscription_id,
                        watermark: notice.watermark,
                        item_ids: notice.item_ids,
                    })
                    .await;
                if let Err(e) = queued {
                    first_failure = first_failure.and(Err(e.into()));
                }
                continue;
            }
            debug!(%mailbox, items = notice.item_ids.len(), "notification");
            match notice.versions {
                Some(versions) => scheduler.heard_versions(mailbox.clone(), now, versions),
                None => scheduler.heard(mailbox.clone(), now, !notice.item_ids.is_empty()),
            }
            heard.note(mailbox, notice.watermark);
        }
        first_failure
    }

    /// Writes the watermarks noted in `heard`, every mailbox's in one state transaction; a
    /// mailbox whose lease went meanwhile is dropped (its holder records its own). When the
    /// write fails, they stay noted for the next time.
    async fn write_heard(&self, heard: &mut Heard) -> Result<(), SyncError> {
        let noted: Vec<(MailboxAddress, Option<String>)> = std::mem::take(&mut heard.0)
            .into_iter()
            .filter(|(mailbox, _)| self.holds(mailbox))
            .collect();
        if let Err(e) = self
            .inner
            .state
            .note_heard(noted.clone(), chrono::Utc::now())
            .await
        {
            for (mailbox, watermark) in noted {
                heard.note(mailbox, watermark);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// One lease round: renewal, hand-back and take-over (`state::lease`). A mailbox gained gets
    /// its subscription, a catch-up pass, its interrupted writes resumed and its tasks
    /// published; a mailbox lost is dropped from the subscriptions and the waiting passes.
    async fn lease_tick(&self, scheduler: &mut Scheduler, tasks: &mut Work) {
        let Some(c) = self.inner.cluster.get() else {
            return;
        };
        let started = Instant::now();
        let round = match crate::state::lease_round(
            &self.inner.state,
            &c.me,
            &c.held(),
            chrono::Utc::now(),
            c.timing,
        )
        .await
        {
            Ok(round) => round,
            Err(e) => {
                warn!(error = %e, "renewing the mailbox leases failed; they lapse unless the next round succeeds");
                return;
            }
        };
        c.set(round.held.clone(), started);
        for m in &round.lost {
            info!(mailbox = %m, "mailbox lease handed back or lost");
            self.inner.runtime.forget(m);
            scheduler.forget(m);
        }
        if !round.gained.is_empty() {
            info!(
                gained = round.gained.len(),
                held = round.held.len(),
                instances = round.live.len(),
                "mailbox leases taken"
            );
            scheduler.catch_up(round.gained.clone());
            // Any round of publishing that starts from now on finds these leases held.
            let rounds = self.publish_rounds_started();
            let engine = self.clone();
            let gained = round.gained.clone();
            tasks.spawn(async move {
                // The catch-up pass reads everything queued notifications were about.
                let r = engine.inner.state.take_notices(gained.clone()).await;
                if let Err(e) = r {
                    return (None, Err(e.into()));
                }
                for m in &gained {
                    if let Some(state) = engine.inner.state.mailbox(m).await.ok().flatten()
                        && engine.holds(m)
                        && let Err(e) = engine.subscribe_one(state, false).await
                    {
                        return (None, Err(e));
                    }
                }
                let resumed = engine.resume().await.map(|_| ());
                (None, resumed.and(engine.publish_all_after(rounds).await))
            });
        }
        if let Err(e) = self.refresh_foreign().await {
            warn!(error = %e, "cannot read the other instances' subscriptions");
        }
    }

    /// Reads the subscriptions of the mailboxes held elsewhere, so that their notifications
    /// received here are handed over.
    async fn refresh_foreign(&self) -> Result<(), SyncError> {
        if self.inner.cluster.get().is_none() {
            return Ok(());
        }
        let foreign = self
            .inner
            .state
            .mailboxes()
            .await?
            .into_iter()
            .filter_map(|s| Some((s.subscription_id?, s.mailbox?)))
            .filter(|(_, m)| !self.holds(m))
            .collect();
        self.inner.runtime.set_foreign(foreign);
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
        let mut open = self.inner.state.unfinished_journal().await?;
        // In a cluster, only the entries of mailboxes held here: the others are another
        // instance's writes, maybe still in flight.
        open.retain(|e| self.holds(&e.mailbox));
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
        self.commit(crate::state::Commit {
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
            if !self.holds(&row.mailbox) {
                continue;
            }
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
            self.inner.republish_again.store(true, Ordering::SeqCst);
            return Ok(());
        };
        let result = self.publish_rounds().await;
        release_freed_memory();
        result
    }

    /// [`Engine::publish_all`], unless a round started after `rounds` rounds had started
    /// (see [`Engine::publish_rounds_started`]): that round, done or still running, covers
    /// what made the caller ask (the start-up and the first lease round ask for the same).
    pub(crate) async fn publish_all_after(&self, rounds: u64) -> Result<(), SyncError> {
        if self.publish_rounds_started() > rounds {
            debug!("a round of publishing every project started since; not starting another");
            return Ok(());
        }
        self.publish_all().await
    }

    /// How many rounds of publishing every project have started.
    pub(crate) fn publish_rounds_started(&self) -> u64 {
        self.inner.metrics.publish_rounds.load(Ordering::SeqCst)
    }

    /// [`Engine::publish_all`] once it has the turn.
    async fn publish_rounds(&self) -> Result<(), SyncError> {
        loop {
            self.inner.republish_again.store(false, Ordering::SeqCst);
            self.inner.republish_skipped.store(false, Ordering::SeqCst);
            // Counted as it starts: `publish_all_after` relies on it.
            self.inner
                .metrics
                .publish_rounds
                .fetch_add(1, Ordering::SeqCst);
            self.publish_every_project().await?;
            // Asked again meanwhile: a reconciliation is answered by the round that just ran,
            // and so is a lease gain unless the round skipped a mailbox for its lease. Without
            // this, every start published everything twice (the start-up round and the first
            // lease round's), reading every row and the whole plan a second time.
            let asked = self.inner.republish_again.swap(false, Ordering::SeqCst);
            if !(asked && self.inner.republish_skipped.load(Ordering::SeqCst)) {
                return Ok(());
            }
        }
    }

    async fn publish_every_project(&self) -> Result<(), SyncError> {
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
        let now = Instant::now();
        let own = |versions: &[ItemRef]| self.inner.own_writes.own_prefix(versions);
        let due = scheduler.start_due(now, debounce, max_debounce, own);
        for mailbox in &due.echoes {
            debug!(%mailbox, "notified of our own writes only; no pass");
        }
        Metrics::add(&self.inner.metrics.own_echoes, due.echoes.len());
        let mut items = due.items;
        for mailbox in due.start {
            if !self.holds(&mailbox) {
                scheduler.finished(&mailbox, now);
                continue;
            }
            let engine = self.clone();
            // Notified of item versions only: those items are read by their ids.
            let versions = items.remove(&mailbox);
            tasks.spawn(async move {
                let r = match versions {
                    Some(versions) => engine.sync_items(&mailbox, versions).await,
                    None => engine.sync_mailbox(&mailbox).await,
                };
                (Some(mailbox), r.map(|_| ()))
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
            .filter(|m| self.holds(m))
            .collect())
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

    /// Polls the pull subscription of every mailbox; returns the mailboxes with changes, each
    /// with the item versions its events named when they named nothing else.
    async fn poll_all(&self) -> Result<Vec<(MailboxAddress, Option<Vec<ItemRef>>)>, SyncError> {
        let mut changed = Vec::new();
        for state in self.inner.state.mailboxes().await? {
            let (Some(mailbox), Some(sub)) = (state.mailbox.clone(), state.subscription_id.clone())
            else {
                continue;
            };
            if !self.holds(&mailbox) {
                continue;
            }
            let watermark = state.watermark.clone().unwrap_or_default();
            match self.inner.mailboxes.pull(&mailbox, &sub, &watermark).await {
                Ok(events) => {
                    self.heard_from(&mailbox, None, events.watermark.clone())
                        .await?;
                    if !events.items.is_empty() {
                        Metrics::add(&self.inner.metrics.events_queued, 1);
                        changed.push((mailbox, events.versions));
                    }
                }
                Err(MailboxError::SubscriptionGone(why)) => {
                    warn!(%mailbox, %why, "pull subscription gone; subscribing again");
                    self.resubscribe(&mailbox).await?;
                    changed.push((mailbox, None));
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
        let affinity = self.affinity_for(mailbox, &delivery);
        match self
            .inner
            .mailboxes
            .subscribe(mailbox, &delivery, None, affinity.as_ref())
            .await
        {
            Ok(sub) => {
                // remember_subscription forgets the mailbox's old subscription id.
                self.remember_subscription(&sub.id, mailbox, sub.backend.as_ref());
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

/// The run loop's answer to a step that failed: a state database that cannot be reached (a
/// restart, a fail-over of PostgreSQL) is waited out with a warning, since every such step is
/// done again later (the next reconciliation reads every change a lost notification was about,
/// the next lease round renews or takes leases); any other error ends the loop.
fn outlive_outage(result: Result<(), SyncError>, what: &str) -> Result<(), SyncError> {
    match result {
        Err(SyncError::State(crate::state::StateError::Database(e))) => {
            warn!(error = %e, "{what} failed: the state database is unreachable; done again at the next reconciliation");
            Ok(())
        }
        other => other,
    }
}

/// Hands memory freed by a round of publishing every project back to the operating system.
///
/// Publishing a whole plan holds its state rows and the plan at once (about 2 KiB per
/// assignment); glibc keeps what the worker threads freed in their arenas, so without this a
/// connector that started with 100,000 tracked assignments would stay at the start-up peak for
/// good, though it keeps nothing per assignment in memory afterwards (the state is in the
/// store).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
