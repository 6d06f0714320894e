//! The registry of push, pull and streaming subscriptions: each subscription's kind, watermark and
//! filter, and the table of live ones with their delivery tasks. Delivery itself is
//! [`crate::push`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ids::FolderKind;
use crate::store::{EventKind, LoggedEvent, Mailbox, MailboxState};
use taskbridge_ews::types::{Event, EventType, SubscriptionId};

/// Most events in one notification or GetEvents answer (MoreEvents says the rest are waiting).
pub const MAX_EVENTS_PER_NOTIFICATION: usize = 50;

/// Push, pull or streaming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubKind {
    /// Exchange posts to `url`.
    Push {
        /// The subscriber's endpoint.
        url: String,
        /// Minutes between status events and the retry budget.
        status_frequency: u32,
    },
    /// The client calls GetEvents.
    Pull {
        /// Minutes without GetEvents after which the subscription expires.
        timeout: u32,
    },
    /// The client holds GetStreamingEvents connections ([`crate::streaming`]).
    Streaming,
}

/// One subscription.
#[derive(Debug)]
pub struct Sub {
    /// Its id.
    pub id: SubscriptionId,
    /// The mailbox.
    pub mailbox: Arc<Mailbox>,
    /// The folders (empty: all).
    pub folders: Vec<FolderKind>,
    /// The event types.
    pub types: Vec<EventType>,
    /// Push or pull.
    pub kind: SubKind,
    /// The backend (Mailbox server) holding it: the one its Subscribe was routed to.
    pub backend: usize,
    /// The `X-AnchorMailbox` its Subscribe carried, if any.
    pub anchor: Option<String>,
    state: Mutex<SubState>,
    ended: AtomicBool,
    /// Its mailbox moved to another backend since: that backend keeps it (until Unsubscribe
    /// or expiry) but has nothing to deliver for it any more.
    orphaned: AtomicBool,
}

#[derive(Debug)]
struct SubState {
    /// The sequence number of the last event delivered (or skipped).
    position: u64,
    /// Last GetEvents (pull) or delivery (push).
    last_access: Instant,
}

impl Sub {
    /// A subscription starting after event `position`.
    pub fn new(
        mailbox: Arc<Mailbox>,
        folders: Vec<FolderKind>,
        types: Vec<EventType>,
        kind: SubKind,
        position: u64,
    ) -> Self {
        let random: [u8; 16] = rand::random();
        let mut raw = vec![0x53, 0x42];
        raw.extend_from_slice(&mailbox.no.to_be_bytes());
        raw.extend_from_slice(&random);
        Sub {
            id: SubscriptionId(STANDARD.encode(raw)),
            mailbox,
            folders,
            types,
            kind,
            backend: 0,
            anchor: None,
            state: Mutex::new(SubState {
                position,
                last_access: Instant::now(),
            }),
            ended: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
        }
    }

    /// The same subscription, held by `backend` and made with `anchor` as `X-AnchorMailbox`.
    pub fn placed(mut self, backend: usize, anchor: Option<String>) -> Self {
        self.backend = backend;
        self.anchor = anchor;
        self
    }

    /// Marks it as left behind by its mailbox's move to another backend.
    pub fn orphan(&self) {
        self.orphaned.store(true, Ordering::SeqCst);
    }

    /// Whether its mailbox moved away from its backend since it was made.
    pub fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sequence number of the last event delivered.
    pub fn position(&self) -> u64 {
        self.lock().position
    }

    /// Moves the position and marks the subscription used.
    pub fn advance(&self, position: u64) {
        let mut s = self.lock();
        s.position = position;
        s.last_access = Instant::now();
    }

    /// When the subscription was last used.
    pub fn last_access(&self) -> Instant {
        self.lock().last_access
    }

    /// Whether it has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    fn wants(&self, e: &LoggedEvent) -> bool {
        let t = match e.kind {
            EventKind::Created => EventType::CreatedEvent,
            EventKind::Modified => EventType::ModifiedEvent,
            EventKind::Deleted => EventType::DeletedEvent,
            EventKind::Moved => EventType::MovedEvent,
        };
        e.touches(&self.folders) && self.types.contains(&t)
    }

    /// The events after `from` this subscription wants (at most `max`), the sequence number
    /// scanned up to, and whether more events follow.
    pub fn collect(&self, st: &MailboxState, from: u64, max: usize) -> (Vec<Event>, u64, bool) {
        let mut events = Vec::new();
        let mut scanned = from;
        let mut more = false;
        for e in st.events_after(from) {
            if events.len() == max {
                more = true;
                break;
            }
            scanned = e.seq;
            if self.wants(e) {
                events.push(e.to_wire(self.mailbox.no));
            }
        }
        (events, scanned.max(from), more)
    }
}

/// Every live subscription, and the push delivery tasks.
#[derive(Debug, Default)]
pub struct Subscriptions {
    // std Mutexes: map and task-set operations only, never held across an await.
    map: Mutex<HashMap<String, Arc<Sub>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Subscriptions {
    /// Registers a subscription.
    pub fn insert(&self, sub: Arc<Sub>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sub.id.0.clone(), sub);
    }

    /// Finds a subscription.
    pub fn get(&self, id: &str) -> Option<Arc<Sub>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id.trim())
            .cloned()
    }

    /// Ends a subscription.
    pub fn remove(&self, id: &str) -> Option<Arc<Sub>> {
        let sub = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.trim());
        if let Some(s) = &sub {
            s.ended.store(true, Ordering::SeqCst);
        }
        sub
    }

    /// All subscriptions, for the admin API.
    pub fn list(&self) -> Vec<Arc<Sub>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Runs a push subscription's delivery task among the others (finished ones are reaped).
    pub(crate) fn spawn(&self, delivery: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(delivery);
    }

    /// Waits for the delivery tasks to see the shutdown (they watch it), then aborts stragglers.
    pub async fn stop_all(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            // The set is dropped here, which aborts what is left.
        }
    }
}
