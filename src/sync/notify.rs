//! Step notified of the list in the [`sync`](super) module doc: where notifications enter the
//! engine. The listener hands each one to a [`NotificationSink`], which knows the engine's
//! subscriptions and queues the notification for the engine's loop without waiting (a full
//! queue makes the listener answer so that Exchange sends it again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::mailbox::Backend;
use super::metrics::Metrics;
use crate::state::{ItemRef, MailboxAddress};

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
    /// The item versions (id and change key) the events name, when they name nothing but
    /// creations and modifications with their change keys; `None` otherwise, or when not known.
    /// A mailbox whose notices named only versions the engine wrote (the echo of its own
    /// writes) gets no pass (`echo.rs`).
    pub versions: Option<Vec<ItemRef>>,
}

impl From<crate::state::QueuedNotice> for Notice {
    fn from(q: crate::state::QueuedNotice) -> Self {
        Notice {
            subscription_id: q.subscription_id,
            watermark: q.watermark,
            item_ids: q.item_ids,
            // Not kept in the store's queue: the holder makes the pass.
            versions: None,
        }
    }
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
///
/// In a cluster any instance may receive a notification for any mailbox (Exchange posts to the
/// load-balanced URL): one for a mailbox another instance holds is accepted and queued too; the
/// engine's loop hands it to the holder through the state store. One whose subscription is not
/// known here yet (made by another instance a moment ago) is accepted and looked up in the
/// store; only one the store did not know either for a while is answered Unsubscribe.
#[derive(Clone)]
pub struct NotificationSink {
    tx: mpsc::Sender<(MailboxAddress, Notice)>,
    subscriptions: Arc<RwLock<HashMap<String, MailboxAddress>>>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

/// What the sink knows of the other instances' subscriptions.
#[derive(Default)]
pub(crate) struct Shared {
    /// Whether the engine is part of a cluster.
    clustered: AtomicBool,
    /// Subscriptions of mailboxes held elsewhere, from the store.
    foreign: RwLock<HashMap<String, MailboxAddress>>,
    /// Subscriptions the store did not know for a while: answered Unsubscribe.
    dead: RwLock<HashSet<String>>,
    /// Notices on subscriptions not known here, for the loop to look up.
    unrouted: Mutex<Option<mpsc::Sender<Notice>>>,
}

impl NotificationSink {
    /// Whether a subscription id is one of ours.
    pub fn knows(&self, subscription_id: &str) -> bool {
        self.subscriptions
            .read()
            .expect("subscription map poisoned")
            .contains_key(subscription_id)
            || self
                .shared
                .foreign
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
            .cloned()
            .or_else(|| {
                self.shared
                    .foreign
                    .read()
                    .expect("subscription map poisoned")
                    .get(&notice.subscription_id)
                    .cloned()
            });
        let Some(mailbox) = mailbox else {
            if !self.shared.clustered.load(Ordering::Relaxed)
                || self
                    .shared
                    .dead
                    .read()
                    .expect("subscription map poisoned")
                    .contains(&notice.subscription_id)
            {
                return NotificationOutcome::UnknownSubscription;
            }
            let unrouted = self
                .shared
                .unrouted
                .lock()
                .expect("runtime lock poisoned")
                .clone();
            return match unrouted.map(|tx| tx.try_send(notice)) {
                Some(Ok(())) => {
                    Metrics::add(&self.metrics.notifications, 1);
                    NotificationOutcome::Accepted
                }
                _ => NotificationOutcome::QueueFull,
            };
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

/// The notification parts that belong to one engine: the queue and the subscriptions.
pub(crate) struct Runtime {
    tx: mpsc::Sender<(MailboxAddress, Notice)>,
    rx: Mutex<Option<mpsc::Receiver<(MailboxAddress, Notice)>>>,
    pub(crate) subscriptions: Arc<RwLock<HashMap<String, MailboxAddress>>>,
    /// The server holding each subscription of `subscriptions`, where the store said.
    pub(crate) backends: RwLock<HashMap<String, Backend>>,
    /// Held while a mailbox is subscribed: two at once (start-up and gained leases, say)
    /// would both find it without a subscription and subscribe it twice.
    pub(crate) subscribing: tokio::sync::Mutex<()>,
    /// Each grouped mailbox's affinity anchor (`affinity.rs`).
    pub(crate) anchors: RwLock<HashMap<MailboxAddress, MailboxAddress>>,
    /// Bumped whenever `subscriptions` changes (streaming regroups its connections).
    pub(crate) subscriptions_changed: tokio::sync::watch::Sender<u64>,
    /// Mailboxes that need a pass because their notifications may have been missed (a
    /// streaming connection that broke or was reopened).
    pub(crate) resync_tx: mpsc::UnboundedSender<MailboxAddress>,
    resync_rx: Mutex<Option<mpsc::UnboundedReceiver<MailboxAddress>>>,
    /// What the sink knows of other instances' subscriptions.
    pub(crate) shared: Arc<Shared>,
    unrouted_rx: Mutex<Option<mpsc::Receiver<Notice>>>,
}

impl Runtime {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (resync_tx, resync_rx) = mpsc::unbounded_channel();
        let (unrouted_tx, unrouted_rx) = mpsc::channel(capacity.max(1));
        let shared = Shared {
            unrouted: Mutex::new(Some(unrouted_tx)),
            ..Shared::default()
        };
        Runtime {
            shared: Arc::new(shared),
            unrouted_rx: Mutex::new(Some(unrouted_rx)),
            tx,
            rx: Mutex::new(Some(rx)),
            subscriptions: Arc::default(),
            backends: RwLock::default(),
            subscribing: tokio::sync::Mutex::new(()),
            anchors: RwLock::default(),
            subscriptions_changed: tokio::sync::watch::channel(0).0,
            resync_tx,
            resync_rx: Mutex::new(Some(resync_rx)),
        }
    }

    /// Runs `read` over the subscriptions (id to mailbox) and the backends holding them (id to
    /// backend, where known), both read at once in the order `remember` takes them.
    pub(crate) fn with_subscriptions<R>(
        &self,
        read: impl FnOnce(&HashMap<String, MailboxAddress>, &HashMap<String, Backend>) -> R,
    ) -> R {
        let subscriptions = self
            .subscriptions
            .read()
            .expect("subscription map poisoned");
        let backends = self.backends.read().expect("backend map poisoned");
        read(&subscriptions, &backends)
    }

    /// The receiving end of the resync requests, for the one running engine loop (a closed
    /// one once taken).
    pub(crate) fn take_resyncs(&self) -> mpsc::UnboundedReceiver<MailboxAddress> {
        self.resync_rx
            .lock()
            .expect("runtime lock poisoned")
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1)
    }

    /// A sink delivering to this queue, counting in `metrics`.
    pub(crate) fn sink(&self, metrics: Arc<Metrics>) -> NotificationSink {
        NotificationSink {
            tx: self.tx.clone(),
            subscriptions: Arc::clone(&self.subscriptions),
            shared: Arc::clone(&self.shared),
            metrics,
        }
    }

    /// The engine is part of a cluster: notifications on subscriptions unknown here are looked
    /// up in the store instead of refused.
    pub(crate) fn set_clustered(&self) {
        self.shared.clustered.store(true, Ordering::Relaxed);
    }

    /// The receiving end of the notices on unknown subscriptions (a closed one once taken).
    pub(crate) fn take_unrouted(&self) -> mpsc::Receiver<Notice> {
        self.unrouted_rx
            .lock()
            .expect("runtime lock poisoned")
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// Replaces what is known of the subscriptions of mailboxes held elsewhere.
    pub(crate) fn set_foreign(&self, foreign: HashMap<String, MailboxAddress>) {
        *self
            .shared
            .foreign
            .write()
            .expect("subscription map poisoned") = foreign;
    }

    /// The mailbox a subscription (held here or elsewhere) is about.
    pub(crate) fn mailbox_of(&self, subscription_id: &str) -> Option<MailboxAddress> {
        let local = self
            .subscriptions
            .read()
            .expect("subscription map poisoned")
            .get(subscription_id)
            .cloned();
        local.or_else(|| {
            self.shared
                .foreign
                .read()
                .expect("subscription map poisoned")
                .get(subscription_id)
                .cloned()
        })
    }

    /// A subscription no instance knows: answered Unsubscribe from now on.
    pub(crate) fn bury(&self, subscription_id: String) {
        self.shared
            .dead
            .write()
            .expect("subscription map poisoned")
            .insert(subscription_id);
    }

    /// The mailbox's subscription is no longer this instance's to hold (its lease went).
    pub(crate) fn forget(&self, mailbox: &MailboxAddress) {
        let mut map = self
            .subscriptions
            .write()
            .expect("subscription map poisoned");
        let before = map.len();
        map.retain(|_, m| m != mailbox);
        let changed = map.len() != before;
        drop(map);
        if changed {
            self.subscriptions_changed.send_modify(|n| *n += 1);
        }
    }

    /// Notifications of subscription `id` are about `mailbox` (whose older subscription is
    /// forgotten); `backend` holds it, when known.
    pub(crate) fn remember(&self, id: &str, mailbox: &MailboxAddress, backend: Option<&Backend>) {
        let mut map = self
            .subscriptions
            .write()
            .expect("subscription map poisoned");
        let mut backends = self.backends.write().expect("backend map poisoned");
        let changed = map.get(id) != Some(mailbox)
            || map.iter().any(|(other, m)| m == mailbox && other != id)
            || backends.get(id) != backend;
        map.retain(|_, m| m != mailbox);
        map.insert(id.to_string(), mailbox.clone());
        match backend {
            Some(b) => backends.insert(id.to_string(), b.clone()),
            None => backends.remove(id),
        };
        backends.retain(|id, _| map.contains_key(id));
        drop(backends);
        drop(map);
        if changed {
            self.subscriptions_changed.send_modify(|n| *n += 1);
        }
    }

    /// The receiving end of the queue, for the one running engine loop (`None` once taken).
    pub(crate) fn take_queue(&self) -> Option<mpsc::Receiver<(MailboxAddress, Notice)>> {
        self.rx.lock().expect("runtime lock poisoned").take()
    }
}
