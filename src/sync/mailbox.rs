//! The mailbox side as the engine sees it: a store of tasks in people's mailboxes.
//!
//! EWS is the first implementation (`crate::exchange`); a Microsoft Graph (To Do) or CalDAV
//! (VTODO) store can be added without touching the engine, because everything here is in
//! mailbox terms ([`MailValues`]), not wire terms.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::mapping::MailValues;
use crate::pm::{AssignmentKey, ProjectGuid};
use crate::state::{ItemRef, MailboxAddress};

/// An item as read from a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxItem {
    /// Its id and current change key.
    pub item: ItemRef,
    /// The assignment it is tagged with, if any.
    pub key: Option<AssignmentKey>,
    /// Its mapped values.
    pub values: MailValues,
    /// When the mailbox last changed it.
    pub modified_at: Option<DateTime<Utc>>,
}

/// Why one item of a batch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemFailure {
    /// The item changed since the change key was read: re-read and decide again.
    #[error("the item changed since it was read (stale change key)")]
    StaleChangeKey,
    /// The item is gone (deleted by its owner).
    #[error("the item no longer exists")]
    NotFound,
    /// The server is throttling: try this item again after the back-off.
    #[error("throttled: back off {back_off:?}")]
    Throttled {
        /// How long to wait.
        back_off: Duration,
    },
    /// A transient server failure: try again later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The server refused the item for good.
    #[error("refused: {code}: {message}")]
    Refused {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
}

impl ItemFailure {
    /// Whether trying the same write again later can work.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ItemFailure::Throttled { .. } | ItemFailure::Transient(_) | ItemFailure::StaleChangeKey
        )
    }
}

/// Why a whole call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The server is throttling; nothing was done.
    #[error("throttled: back off {back_off:?}")]
    Throttled {
        /// How long to wait.
        back_off: Duration,
    },
    /// The sync state is no longer valid: start a full pass.
    #[error("the sync state is not valid any more")]
    InvalidSyncState,
    /// The mailbox does not exist or may not be accessed.
    #[error("mailbox {mailbox} cannot be accessed: {detail}")]
    AccessDenied {
        /// The mailbox.
        mailbox: String,
        /// What the server said.
        detail: String,
    },
    /// The subscription is gone (expired, unknown).
    #[error("the subscription is gone: {0}")]
    SubscriptionGone(String),
    /// Any other failure of the call (connection, server error); try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// One update of a batch.
#[derive(Clone, Debug)]
pub struct ItemWrite {
    /// The assignment.
    pub key: AssignmentKey,
    /// The item and the change key the update was computed against.
    pub item: ItemRef,
    /// What the item holds now (as far as taskbridge knows).
    pub from: MailValues,
    /// What it should hold.
    pub to: MailValues,
}

/// An item that changed, with its values when the caller knows its owner's zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedItem {
    /// Its id and current change key.
    pub item: ItemRef,
    /// Its mapped values (all but the body), for items whose zone was given.
    pub values: Option<MailValues>,
}

/// A page of changes in a Tasks folder since a sync state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangePage {
    /// Items created or changed, with their current change keys.
    pub changed: Vec<ChangedItem>,
    /// Ids of items deleted.
    pub deleted: Vec<String>,
    /// The state to resume from.
    pub sync_state: String,
    /// Whether more changes wait.
    pub more: bool,
}

/// How a subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Exchange posts to `url`, with a status notification every `status_frequency`.
    Push {
        /// The listener URL (with its secret).
        url: String,
        /// Between status notifications.
        status_frequency: Duration,
    },
    /// The connector polls; the subscription expires after `timeout` without a poll.
    Pull {
        /// Expiry without a poll.
        timeout: Duration,
    },
    /// The connector holds streaming connections open ([`MailboxStore::open_stream`]).
    Streaming,
}

/// What a streaming connection says, one thing at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Notifications, one per subscription with news.
    Notices(Vec<crate::sync::Notice>),
    /// The connection is alive and nothing happened.
    KeepAlive,
    /// The server ended the connection at its time-out; open the next one at once.
    Closed,
    /// The server does not know these subscriptions (expired, unsubscribed, lost in a
    /// fail-over): subscribe their mailboxes again.
    Gone(Vec<String>),
}

/// The events of one open streaming connection, as they arrive. It ends when the connection
/// does; an `Err` is a failure of the connection or of one of its messages.
pub type EventStream = futures::stream::BoxStream<'static, Result<StreamEvent, MailboxError>>;

/// The server that holds a subscription, as the store names it (Exchange's
/// `X-BackEndOverrideCookie`): subscriptions held on different servers never share a
/// streaming connection, and a connection is routed to its group's server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend(pub String);

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server affinity for a Subscribe: the mailbox whose backend should hold the subscription
/// (its group's anchor, sent as `X-AnchorMailbox`) and, when known, that backend (its cookie,
/// sent back), so that every subscription of the group lands on one server and one streaming
/// connection can carry them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// The group's anchor mailbox: its first address in alphabetical order.
    pub anchor: MailboxAddress,
    /// The backend already holding the group's subscriptions, if one answered.
    pub backend: Option<Backend>,
}

/// A subscription to a Tasks folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its id.
    pub id: String,
    /// The watermark it starts after.
    pub watermark: Option<String>,
    /// The server holding it, when the store said (server affinity).
    pub backend: Option<Backend>,
}

/// An event a pull subscription delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledEvents {
    /// Items the events are about (any kind of change).
    pub items: Vec<String>,
    /// The last watermark.
    pub watermark: Option<String>,
    /// Whether more events wait.
    pub more: bool,
    /// The item versions the events name, as [`Notice::versions`](super::Notice::versions).
    pub versions: Option<Vec<ItemRef>>,
}

/// One item to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The item's id.
    pub item_id: String,
    /// The owner's time zone.
    pub zone: chrono_tz::Tz,
}

/// Batch sizes the store works best with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Items per create, update or delete call.
    pub write: usize,
    /// Items per fetch call.
    pub fetch: usize,
}

/// A store of tasks in mailboxes. Per-item failures come back per item; an `Err` means the
/// whole call failed and nothing (or an unknown part) was done.
pub trait MailboxStore: Send + Sync + 'static {
    /// Batch sizes.
    fn limits(&self) -> BatchLimits;

    /// The id of the mailbox's Tasks folder (checks that the mailbox can be reached).
    fn tasks_folder(
        &self,
        mailbox: &MailboxAddress,
    ) -> impl Future<Output = Result<String, MailboxError>> + Send;

    /// Every item in the mailbox tagged with an assignment of `project`.
    fn find_tagged(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
    ) -> impl Future<Output = Result<Vec<(AssignmentKey, ItemRef)>, MailboxError>> + Send;

    /// Creates one tagged item per entry.
    fn create(
        &self,
        mailbox: &MailboxAddress,
        items: &[(AssignmentKey, MailValues)],
    ) -> impl Future<Output = Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError>> + Send;

    /// Updates items, each only in the fields that differ, guarded by its change key.
    fn update(
        &self,
        mailbox: &MailboxAddress,
        writes: &[ItemWrite],
    ) -> impl Future<Output = Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError>> + Send;

    /// Deletes items.
    fn delete(
        &self,
        mailbox: &MailboxAddress,
        items: &[ItemRef],
    ) -> impl Future<Output = Result<Vec<Result<(), ItemFailure>>, MailboxError>> + Send;

    /// Reads items; dates are read as calendar dates in each request's zone (the mailbox
    /// owner's).
    fn fetch(
        &self,
        mailbox: &MailboxAddress,
        items: &[FetchRequest],
    ) -> impl Future<Output = Result<Vec<Result<MailboxItem, ItemFailure>>, MailboxError>> + Send;

    /// The changes since `sync_state` (all items when `None`), with the values of the items
    /// whose owner's zone `zones` gives (by item id).
    ///
    /// The values let a change key that taskbridge wrote be checked for content: a server that
    /// merged someone else's edit into our write returns our change key on an item that holds
    /// more than we wrote.
    fn changes(
        &self,
        mailbox: &MailboxAddress,
        sync_state: Option<&str>,
        zones: &std::collections::HashMap<String, chrono_tz::Tz>,
    ) -> impl Future<Output = Result<ChangePage, MailboxError>> + Send;

    /// Subscribes to changes in the Tasks folder, resuming after `watermark` when given; with
    /// `affinity`, on the backend of the group's anchor rather than the mailbox's own.
    fn subscribe(
        &self,
        mailbox: &MailboxAddress,
        delivery: &Delivery,
        watermark: Option<&str>,
        affinity: Option<&Affinity>,
    ) -> impl Future<Output = Result<Subscription, MailboxError>> + Send;

    /// Ends a pull or streaming subscription (push subscriptions end by answering
    /// `Unsubscribe`), on `backend` when given (the one holding it).
    fn unsubscribe(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        backend: Option<&Backend>,
    ) -> impl Future<Output = Result<(), MailboxError>> + Send;

    /// Fetches the events of a pull subscription.
    fn pull(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        watermark: &str,
    ) -> impl Future<Output = Result<PulledEvents, MailboxError>> + Send;

    /// Opens one streaming connection for `subscription_ids` (streaming subscriptions, all
    /// held by `backend` when it is known), acting for `anchor` (one of their mailboxes), held
    /// open for up to `timeout`. A store without streaming answers
    /// [`MailboxError::Unavailable`].
    fn open_stream(
        &self,
        anchor: &MailboxAddress,
        subscription_ids: &[String],
        backend: Option<&Backend>,
        timeout: Duration,
    ) -> impl Future<Output = Result<EventStream, MailboxError>> + Send {
        let _ = (anchor, subscription_ids, backend, timeout);
        std::future::ready(Err(MailboxError::Unavailable(
            "this mailbox store offers no streaming notifications".into(),
        )))
    }
}
