//! Step notified of the list in the [`sync`](super) module doc: where notifications enter the
//! engine. The listener hands each one to a [`NotificationSink`], which knows the engine's
//! subscriptions and queues the notification for the engine's loop without waiting (a full
//! queue makes the listener answer so that Exchange sends it again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::metrics::Metrics;
use crate::state::MailboxAddress;

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

/// The notification parts that belong to one engine: the queue and the subscriptions.
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
            metrics,
        }
    }

    /// Notifications of subscription `id` are about `mailbox` (whose older subscription is
    /// forgotten).
    pub(crate) fn remember(&self, id: &str, mailbox: &MailboxAddress) {
        let mut map = self
            .subscriptions
            .write()
            .expect("subscription map poisoned");
        let changed = map.get(id) != Some(mailbox)
            || map.iter().any(|(other, m)| m == mailbox && other != id);
        map.retain(|_, m| m != mailbox);
        map.insert(id.to_string(), mailbox.clone());
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
