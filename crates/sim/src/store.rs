//! The simulated mailboxes: items, change numbers, the event log and sync.
//!
//! Each mailbox keeps its state behind its own `std::sync::Mutex`: every critical section is a
//! few map operations and never awaits, so a blocking lock is cheaper than an async one and
//! mailboxes never wait on each other. Items are indexed by number in a `HashMap`; their ids
//! carry the mailbox number, so no global index is needed.
//!
//! Every modification takes the mailbox's next *change number* (cn), as the Exchange store
//! does. The change key is issued at that number, sync states remember up to which number a
//! client has seen, and each property remembers the number it last changed at, which is how
//! UpdateItem tells a real conflict from a stale key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::fields::{self, ItemError};
use crate::ids::{self, FolderKind, SyncPoint};
use taskbridge_ews::types::{
    ChangeKey, Event, FolderId, Item, ItemId, ItemKind, ItemShape, ObjectEvent, Path, ResponseCode,
    Task,
};

/// How many events a mailbox keeps; a watermark older than that is refused.
pub const EVENT_LOG_CAP: usize = 20_000;

/// The kinds of event the simulator logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// An item was created.
    Created,
    /// An item was modified.
    Modified,
    /// An item was deleted.
    Deleted,
    /// An item was moved (to Deleted Items).
    Moved,
}

/// One entry of a mailbox's event log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoggedEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The item (its new number for a move).
    pub item: u64,
    /// The change number of the item after the event (for its change key).
    pub cn: u64,
    /// The folder the item is in after the event (before, for a delete).
    pub folder: FolderKind,
    /// The item's number before a move.
    pub old_item: Option<u64>,
    /// The folder before a move.
    pub old_folder: Option<FolderKind>,
    /// When it happened.
    pub time: DateTime<Utc>,
}

impl LoggedEvent {
    /// The folders the event concerns (for subscription filters).
    pub fn touches(&self, folders: &[FolderKind]) -> bool {
        folders.is_empty()
            || folders.contains(&self.folder)
            || self.old_folder.is_some_and(|f| folders.contains(&f))
    }

    /// The wire form of the event.
    pub fn to_wire(&self, mailbox: u32) -> Event {
        let item_id = |no: u64, cn: Option<u64>| {
            taskbridge_ews::types::ChangedObject::ItemId(ItemId {
                id: ids::item_id(mailbox, no),
                change_key: cn.map(|cn| ids::change_key(mailbox, cn)),
            })
        };
        let folder_id = |f: FolderKind| FolderId {
            id: ids::folder_id(mailbox, f),
            change_key: Some(ids::folder_change_key(mailbox, f)),
        };
        let deleted = self.kind == EventKind::Deleted;
        let o = ObjectEvent {
            watermark: Some(ids::watermark(mailbox, self.seq)),
            time_stamp: self.time,
            object: item_id(self.item, (!deleted).then_some(self.cn)),
            parent_folder_id: folder_id(self.folder),
            old_object: self.old_item.map(|no| item_id(no, None)),
            old_parent_folder_id: self.old_folder.map(folder_id),
            unread_count: None,
        };
        match self.kind {
            EventKind::Created => Event::CreatedEvent(o),
            EventKind::Modified => Event::ModifiedEvent(o),
            EventKind::Deleted => Event::DeletedEvent(o),
            EventKind::Moved => Event::MovedEvent(o),
        }
    }
}

/// One stored item.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredItem {
    /// The item number (unique within the mailbox, never reused).
    pub no: u64,
    /// The folder holding it.
    pub folder: FolderKind,
    /// Its element kind (`Task` for tasks).
    pub kind: ItemKind,
    /// The properties a client can set (server-computed ones are filled in on read).
    pub task: Task,
    /// The change number of the last modification (the change key's).
    pub cn: u64,
    /// The change number of the creation.
    pub created_cn: u64,
    /// How often the item was changed (`task:ChangeCount`).
    pub change_count: i32,
    /// `DateTimeCreated`.
    pub created: DateTime<Utc>,
    /// `LastModifiedTime`.
    pub modified: DateTime<Utc>,
    /// `LastModifiedName`.
    pub modified_by: String,
    /// Change number at which each property last changed (see [`fields::conflict_key`]).
    pub prop_cn: HashMap<String, u64>,
}

impl StoredItem {
    /// The item's id with its current change key.
    pub fn item_id(&self, mailbox: u32) -> ItemId {
        ItemId {
            id: ids::item_id(mailbox, self.no),
            change_key: Some(ids::change_key(mailbox, self.cn)),
        }
    }

    /// Every property of the item, computed ones included, extended properties included.
    pub fn full_view(&self, mailbox: &Mailbox) -> Task {
        let mut t = self.task.clone();
        t.item_id = Some(self.item_id(mailbox.no));
        t.parent_folder_id = Some(FolderId {
            id: ids::folder_id(mailbox.no, self.folder),
            change_key: Some(ids::folder_change_key(mailbox.no, self.folder)),
        });
        if t.item_class.is_none() {
            t.item_class = Some(match self.kind {
                ItemKind::Task => "IPM.Task".into(),
                _ => "IPM.Note".into(),
            });
        }
        t.sensitivity
            .get_or_insert(taskbridge_ews::types::Sensitivity::Normal);
        t.date_time_received = Some(self.created);
        t.size = Some(estimate_size(&t));
        t.importance
            .get_or_insert(taskbridge_ews::types::Importance::Normal);
        t.date_time_sent = Some(self.created);
        t.date_time_created = Some(self.created);
        t.reminder_is_set.get_or_insert(false);
        t.has_attachments = Some(false);
        t.last_modified_name = Some(self.modified_by.clone());
        t.last_modified_time = Some(self.modified);
        if self.kind == ItemKind::Task {
            t.change_count = Some(self.change_count);
            t.is_recurring = Some(false);
            t.owner = Some(mailbox.display_name.clone());
            fields::normalize(&mut t);
        }
        t
    }

    /// The item as a response shows it.
    pub fn shaped(&self, mailbox: &Mailbox, shape: &ItemShape, drop_body: bool) -> Item {
        Item {
            kind: self.kind.clone(),
            fields: fields::apply_shape(&self.full_view(mailbox), shape, drop_body),
            to_recipients: None,
        }
    }
}

fn estimate_size(t: &Task) -> i32 {
    let text = t.subject.as_ref().map_or(0, String::len)
        + t.body.as_ref().map_or(0, |b| b.text.len())
        + t.extended_properties
            .iter()
            .map(|p| p.value.as_ref().map_or(0, String::len) + 64)
            .sum::<usize>();
    i32::try_from(text + 512).unwrap_or(i32::MAX)
}

/// What a mutation left for the persistence layer to write.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Items whose row must be rewritten (or removed, if gone).
    pub items: Vec<u64>,
    /// Items that got a tombstone.
    pub tombstones: Vec<u64>,
    /// Events appended.
    pub events: Vec<u64>,
    /// Whether the counters moved.
    pub counters: bool,
}

impl Dirty {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
            && self.tombstones.is_empty()
            && self.events.is_empty()
            && !self.counters
    }
}

/// The mutable state of a mailbox.
#[derive(Debug, Default)]
pub struct MailboxState {
    /// The last change number issued.
    pub cn: u64,
    /// The next item number.
    pub next_item: u64,
    /// Live items by number.
    pub items: HashMap<u64, StoredItem>,
    /// Items that left a folder: number -> (folder, change number of the removal).
    pub tombstones: HashMap<u64, (FolderKind, u64)>,
    /// The event log (the newest [`EVENT_LOG_CAP`] events).
    pub events: VecDeque<LoggedEvent>,
    /// The last event sequence number issued.
    pub event_seq: u64,
    /// What changed since the last persistence pass.
    pub dirty: Dirty,
}

/// A mailbox.
#[derive(Debug)]
pub struct Mailbox {
    /// Its number (stable across restarts when state is persisted).
    pub no: u32,
    /// Primary SMTP address, lower case.
    pub smtp: String,
    /// Display name (the local part of the address).
    pub display_name: String,
    state: Mutex<MailboxState>,
    /// The newest event sequence number, for push deliveries to wait on.
    pub head: watch::Sender<u64>,
    /// Requests currently working on this mailbox (for `--max-concurrency`).
    pub in_flight: AtomicU32,
    /// Set through the admin API: the mailbox is over its size quota, so every create and
    /// update in it fails with ErrorQuotaExceeded until it is cleared (not persisted).
    pub quota_exceeded: AtomicBool,
    /// Mail delivered to this mailbox's Inbox (CreateItem of a message with a sending
    /// disposition), oldest first; read through the admin API, not persisted.
    pub inbox: Mutex<Vec<InboxMessage>>,
}

/// A message delivered to an Inbox.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InboxMessage {
    /// The sender's address (the mailbox it was sent as).
    pub from: String,
    /// Every `ToRecipients` address, as sent.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The body's text.
    pub body: String,
    /// When it was delivered.
    pub received: DateTime<Utc>,
}

impl Mailbox {
    /// Delivers a message to the Inbox.
    pub fn deliver(&self, message: InboxMessage) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// The Inbox's messages, oldest first.
    pub fn inbox(&self) -> Vec<InboxMessage> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Mailbox {
    /// A new, empty mailbox.
    pub fn new(no: u32, smtp: &str) -> Self {
        let smtp = smtp.to_ascii_lowercase();
        let display_name = smtp.split('@').next().unwrap_or(&smtp).to_string();
        Mailbox {
            no,
            smtp,
            display_name,
            state: Mutex::new(MailboxState {
                next_item: 1,
                ..MailboxState::default()
            }),
            head: watch::Sender::new(0),
            in_flight: AtomicU32::new(0),
            quota_exceeded: AtomicBool::new(false),
            inbox: Mutex::new(Vec::new()),
        }
    }

    /// A mailbox with loaded state (from the state file).
    pub fn with_state(no: u32, smtp: &str, state: MailboxState) -> Self {
        let mb = Mailbox::new(no, smtp);
        mb.head.send_replace(state.event_seq);
        *mb.lock() = state;
        mb
    }

    /// Locks the state. A poisoned lock (a panic in another request) still holds consistent
    /// data: every mutation completes its map updates before anything can panic.
    pub fn lock(&self) -> MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watermark of the newest event.
    pub fn head_watermark(&self) -> taskbridge_ews::types::Watermark {
        ids::watermark(self.no, *self.head.borrow())
    }
}

/// Why an update was refused.
#[derive(Debug)]
pub enum UpdateError {
    /// A per-item error.
    Item(ItemError),
    /// The change key is stale and the same properties changed; `usize` conflicts.
    Conflict(usize),
}

/// How an update treats a stale change key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Fail when a property being set changed since the key.
    NeverOverwrite,
    /// Like NeverOverwrite, but a change key is required.
    AutoResolve,
    /// Overwrite regardless.
    AlwaysOverwrite,
}

/// What counts as a conflict when an update's change key is stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictModel {
    /// As Exchange does: under NeverOverwrite and AutoResolve any stale change key is refused
    /// with ErrorIrresolvableConflict, whatever changed since, even a change key that moved
    /// with no property changed (Exchange moves keys by itself, for instance when it
    /// recalculates an item).
    #[default]
    Strict,
    /// Kinder than Exchange: a stale key is refused only when a property the update sets
    /// changed since the key; other changes are merged.
    Merge,
}

/// One change of an UpdateItem.
#[derive(Clone, Debug)]
pub enum FieldChange {
    /// Set a property to its value in the task.
    Set(Path, Box<Task>),
    /// Remove a property.
    Delete(Path),
}

impl FieldChange {
    fn path(&self) -> &Path {
        match self {
            FieldChange::Set(p, _) | FieldChange::Delete(p) => p,
        }
    }
}

/// One change of a SyncFolderItems page.
#[derive(Clone, Debug)]
pub enum SyncEntry {
    /// Report a creation.
    Create(u64),
    /// Report an update.
    Update(u64),
    /// Report a deletion.
    Delete(u64),
}

/// A SyncFolderItems page.
#[derive(Debug)]
pub struct SyncPage {
    /// The changes, in change order.
    pub entries: Vec<SyncEntry>,
    /// The state after this page.
    pub next: SyncPoint,
    /// Whether the page reaches the current end.
    pub last: bool,
}

fn ms(now: DateTime<Utc>) -> DateTime<Utc> {
    // Exchange stores times to the millisecond.
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

impl MailboxState {
    fn next_cn(&mut self) -> u64 {
        self.cn += 1;
        self.dirty.counters = true;
        self.cn
    }

    /// Appends an event and wakes push deliveries.
    pub fn log_event(&mut self, mailbox: &Mailbox, mut event: LoggedEvent) {
        self.event_seq += 1;
        event.seq = self.event_seq;
        self.events.push_back(event);
        while self.events.len() > EVENT_LOG_CAP {
            self.events.pop_front();
        }
        self.dirty.events.push(self.event_seq);
        self.dirty.counters = true;
        mailbox.head.send_replace(self.event_seq);
    }

    /// The oldest sequence number a watermark may name (events after it are all retained).
    pub fn oldest_resumable(&self) -> u64 {
        self.events.front().map_or(self.event_seq, |e| e.seq - 1)
    }

    /// The events after `seq`, oldest first.
    pub fn events_after(&self, seq: u64) -> impl Iterator<Item = &LoggedEvent> {
        let first = self.events.front().map_or(u64::MAX, |e| e.seq);
        let skip =
            usize::try_from(seq.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.events.iter().skip(skip)
    }

    /// Creates an item.
    pub fn create(
        &mut self,
        mailbox: &Mailbox,
        folder: FolderKind,
        kind: ItemKind,
        mut task: Task,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<u64, ItemError> {
        fields::check_create(&task)?;
        let now = ms(now);
        if kind == ItemKind::Task {
            fields::couple_created(&mut task, now);
        }
        strip_computed(&mut task);
        let cn = self.next_cn();
        let no = self.next_item;
        self.next_item += 1;
        let prop_cn = prop_keys(&task).into_iter().map(|k| (k, cn)).collect();
        self.items.insert(
            no,
            StoredItem {
                no,
                folder,
                kind,
                task,
                cn,
                created_cn: cn,
                change_count: 1,
                created: now,
                modified: now,
                modified_by: by.to_string(),
                prop_cn,
            },
        );
        self.dirty.items.push(no);
        self.log_event(
            mailbox,
            LoggedEvent {
                seq: 0,
                kind: EventKind::Created,
                item: no,
                cn,
                folder,
                old_item: None,
                old_folder: None,
                time: now,
            },
        );
        Ok(no)
    }

    /// Applies the changes of one UpdateItem item change; returns the number of conflicts
    /// overwritten (AlwaysOverwrite) or resolved.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        mailbox: &Mailbox,
        no: u64,
        change_key: Option<&ChangeKey>,
        resolution: Resolution,
        model: ConflictModel,
        changes: &[FieldChange],
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<usize, UpdateError> {
        let now = ms(now);
        let current = self.items.get(&no).ok_or_else(not_found)?;
        let mut conflicts = 0;
        match change_key {
            None if resolution == Resolution::AutoResolve => {
                return Err(UpdateError::Item((
                    ResponseCode::ErrorChangeKeyRequiredForWriteOperations,
                    "Update operations require a change key to support AutoResolve.".into(),
                )));
            }
            None => {}
            Some(ck) => {
                let base = match ids::parse_change_key(ck.as_str()) {
                    Some((mb, cn)) if mb == mailbox.no && cn <= current.cn => cn,
                    _ => {
                        return Err(UpdateError::Item((
                            ResponseCode::ErrorInvalidChangeKey,
                            "The change key is invalid.".into(),
                        )));
                    }
                };
                if base < current.cn {
                    let touched: HashSet<String> = changes
                        .iter()
                        .map(|c| fields::conflict_key(c.path()))
                        .collect();
                    conflicts = touched
                        .iter()
                        .filter(|k| current.prop_cn.get(*k).is_some_and(|&cn| cn > base))
                        .count();
                    let refused = match model {
                        ConflictModel::Strict => true,
                        ConflictModel::Merge => conflicts > 0,
                    };
                    if refused && resolution != Resolution::AlwaysOverwrite {
                        return Err(UpdateError::Conflict(conflicts));
                    }
                }
            }
        }
        let mut task = current.task.clone();
        if current.kind == ItemKind::Task {
            fields::normalize(&mut task);
        }
        for change in changes {
            match change {
                FieldChange::Set(path, value) => fields::apply_set(&mut task, path, value, now),
                FieldChange::Delete(path) => fields::apply_delete(&mut task, path, now),
            }
            .map_err(UpdateError::Item)?;
        }
        strip_computed(&mut task);
        let cn = self.next_cn();
        let item = self.items.get_mut(&no).expect("checked above");
        for change in changes {
            item.prop_cn.insert(fields::conflict_key(change.path()), cn);
        }
        item.task = task;
        item.cn = cn;
        item.change_count += 1;
        item.modified = now;
        item.modified_by = by.to_string();
        let folder = item.folder;
        self.dirty.items.push(no);
        self.log_modified(mailbox, no, cn, folder, now);
        Ok(conflicts)
    }

    fn log_modified(
        &mut self,
        mailbox: &Mailbox,
        no: u64,
        cn: u64,
        folder: FolderKind,
        now: DateTime<Utc>,
    ) {
        self.log_event(
            mailbox,
            LoggedEvent {
                seq: 0,
                kind: EventKind::Modified,
                item: no,
                cn,
                folder,
                old_item: None,
                old_folder: None,
                time: now,
            },
        );
    }

    /// Gives an item a new change key without changing a property, as Exchange sometimes
    /// does by itself.
    pub fn bump(
        &mut self,
        mailbox: &Mailbox,
        no: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ItemError> {
        let now = ms(now);
        if !self.items.contains_key(&no) {
            return Err(not_found_item());
        }
        let cn = self.next_cn();
        let item = self.items.get_mut(&no).expect("checked above");
        item.cn = cn;
        item.modified = now;
        let folder = item.folder;
        self.dirty.items.push(no);
        self.log_modified(mailbox, no, cn, folder, now);
        Ok(())
    }

    /// Deletes an item for good (HardDelete / SoftDelete).
    pub fn delete(
        &mut self,
        mailbox: &Mailbox,
        no: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ItemError> {
        let now = ms(now);
        let item = self.items.remove(&no).ok_or_else(not_found_item)?;
        let cn = self.next_cn();
        self.tombstones.insert(no, (item.folder, cn));
        self.dirty.items.push(no);
        self.dirty.tombstones.push(no);
        self.log_event(
            mailbox,
            LoggedEvent {
                seq: 0,
                kind: EventKind::Deleted,
                item: no,
                cn,
                folder: item.folder,
                old_item: None,
                old_folder: None,
                time: now,
            },
        );
        Ok(())
    }

    /// Moves an item to another folder; like Exchange, the moved item gets a new id.
    pub fn move_to(
        &mut self,
        mailbox: &Mailbox,
        no: u64,
        to: FolderKind,
        now: DateTime<Utc>,
    ) -> Result<u64, ItemError> {
        let now = ms(now);
        let mut item = self.items.remove(&no).ok_or_else(not_found_item)?;
        let cn = self.next_cn();
        let from = item.folder;
        self.tombstones.insert(no, (from, cn));
        let new_no = self.next_item;
        self.next_item += 1;
        item.no = new_no;
        item.folder = to;
        item.cn = cn;
        item.created_cn = cn;
        self.items.insert(new_no, item);
        self.dirty.items.extend([no, new_no]);
        self.dirty.tombstones.push(no);
        self.log_event(
            mailbox,
            LoggedEvent {
                seq: 0,
                kind: EventKind::Moved,
                item: new_no,
                cn,
                folder: to,
                old_item: Some(no),
                old_folder: Some(from),
                time: now,
            },
        );
        Ok(new_no)
    }

    /// The items of a folder in creation order.
    pub fn folder_items(&self, folder: FolderKind) -> Vec<&StoredItem> {
        let mut v: Vec<&StoredItem> = self.items.values().filter(|i| i.folder == folder).collect();
        v.sort_by_key(|i| i.no);
        v
    }

    /// The next page of changes for a client at `point`.
    pub fn sync(&self, point: &SyncPoint, ignore: &HashSet<u64>, max: usize) -> SyncPage {
        let known: HashSet<u64> = point.known.iter().copied().collect();
        // (change number, entry) for every change the client has not seen.
        let mut pending: Vec<(u64, SyncEntry)> = Vec::new();
        for item in self.items.values() {
            if item.folder != point.folder || item.cn <= point.cn && known.contains(&item.no) {
                continue;
            }
            if known.contains(&item.no) {
                pending.push((item.cn, SyncEntry::Update(item.no)));
            } else {
                pending.push((item.cn, SyncEntry::Create(item.no)));
            }
        }
        for &no in &known {
            let live = self
                .items
                .get(&no)
                .is_some_and(|i| i.folder == point.folder);
            if !live {
                let cn = self.tombstones.get(&no).map_or(0, |t| t.1);
                pending.push((cn, SyncEntry::Delete(no)));
            }
        }
        pending.sort_by_key(|(cn, e)| (*cn, entry_no(e)));
        let mut next_known = known;
        let mut entries = Vec::new();
        let mut last_cn = None;
        let mut taken = 0;
        let mut rest = pending.into_iter().peekable();
        while taken < max {
            let Some((cn, entry)) = rest.next() else {
                break;
            };
            last_cn = Some(cn);
            match &entry {
                SyncEntry::Create(no) | SyncEntry::Update(no) => {
                    next_known.insert(*no);
                    if ignore.contains(no) {
                        continue;
                    }
                }
                SyncEntry::Delete(no) => {
                    next_known.remove(no);
                    if ignore.contains(no) {
                        continue;
                    }
                }
            }
            entries.push(entry);
            taken += 1;
        }
        let last = rest.peek().is_none();
        let cn = if last {
            self.cn
        } else {
            last_cn.unwrap_or(point.cn).max(point.cn)
        };
        let mut known: Vec<u64> = next_known.into_iter().collect();
        known.sort_unstable();
        SyncPage {
            entries,
            next: SyncPoint {
                mailbox: point.mailbox,
                folder: point.folder,
                cn,
                known,
            },
            last,
        }
    }
}

fn entry_no(e: &SyncEntry) -> u64 {
    match e {
        SyncEntry::Create(n) | SyncEntry::Update(n) | SyncEntry::Delete(n) => *n,
    }
}

fn not_found_item() -> ItemError {
    (
        ResponseCode::ErrorItemNotFound,
        "The specified object was not found in the store., The process failed to get the correct properties.".into(),
    )
}

fn not_found() -> UpdateError {
    UpdateError::Item(not_found_item())
}

/// Removes what the server computes, so the stored task holds client-set values only.
fn strip_computed(task: &mut Task) {
    let empty = Task::default();
    for uri in fields::FIELD_URIS {
        if fields::is_writable(uri) == Some(false) {
            // Copying from an empty task clears the field.
            fields::copy_field(uri, &empty, task);
        }
    }
}

fn prop_keys(task: &Task) -> Vec<String> {
    let mut keys: Vec<String> = fields::present_fields(task)
        .into_iter()
        .map(|uri| fields::conflict_key(&Path::field(uri)))
        .collect();
    keys.extend(
        task.extended_properties
            .iter()
            .map(|p| fields::extended_key(&p.extended_field_uri)),
    );
    keys
}

/// All mailboxes, by number and by address.
#[derive(Debug)]
pub struct Store {
    by_no: HashMap<u32, Arc<Mailbox>>,
    by_smtp: HashMap<String, Arc<Mailbox>>,
    /// Key that authenticates sync states.
    pub secret: Vec<u8>,
}

impl Store {
    /// A store of the given mailboxes.
    pub fn new(mailboxes: Vec<Mailbox>, secret: Vec<u8>) -> Self {
        let mut by_no = HashMap::new();
        let mut by_smtp = HashMap::new();
        for m in mailboxes {
            let m = Arc::new(m);
            by_smtp.insert(m.smtp.clone(), m.clone());
            by_no.insert(m.no, m);
        }
        Store {
            by_no,
            by_smtp,
            secret,
        }
    }

    /// The mailbox with this address (case-insensitive).
    pub fn by_smtp(&self, smtp: &str) -> Option<&Arc<Mailbox>> {
        self.by_smtp.get(&smtp.trim().to_ascii_lowercase())
    }

    /// The mailbox with this number.
    pub fn by_no(&self, no: u32) -> Option<&Arc<Mailbox>> {
        self.by_no.get(&no)
    }

    /// All mailboxes, by number.
    pub fn all(&self) -> Vec<&Arc<Mailbox>> {
        let mut v: Vec<_> = self.by_no.values().collect();
        v.sort_by_key(|m| m.no);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskbridge_ews::types::TaskStatus;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn task(subject: &str) -> Task {
        Task {
            subject: Some(subject.into()),
            ..Task::default()
        }
    }

    fn set_subject(s: &str) -> FieldChange {
        FieldChange::Set(Path::field("item:Subject"), Box::new(task(s)))
    }

    #[test]
    fn strictly_any_stale_change_key_is_a_conflict_but_always_overwrite_applies() {
        let mb = Mailbox::new(1, "ann@example.com");
        let mut st = mb.lock();
        let no = st
            .create(
                &mb,
                FolderKind::Tasks,
                ItemKind::Task,
                task("a"),
                now(),
                "ann",
            )
            .expect("create");
        let ck1 = st.items[&no].item_id(1).change_key.expect("ck");
        // The key moves with no property changed, as Exchange moves keys by itself.
        st.bump(&mb, no, now()).expect("bump");
        let pct = FieldChange::Set(
            Path::field("task:PercentComplete"),
            Box::new(Task {
                percent_complete: Some(50.0),
                ..Task::default()
            }),
        );
        for r in [Resolution::NeverOverwrite, Resolution::AutoResolve] {
            assert!(matches!(
                st.update(
                    &mb,
                    no,
                    Some(&ck1),
                    r,
                    ConflictModel::Strict,
                    std::slice::from_ref(&pct),
                    now(),
                    "x"
                ),
                Err(UpdateError::Conflict(0))
            ));
        }
        // The merge model lets it through: nothing it sets changed since the key.
        assert!(matches!(
            st.update(
                &mb,
                no,
                Some(&ck1),
                Resolution::NeverOverwrite,
                ConflictModel::Merge,
                std::slice::from_ref(&pct),
                now(),
                "x"
            ),
            Ok(0)
        ));
        // AlwaysOverwrite applies whatever the model, counting the property changed since.
        assert!(matches!(
            st.update(
                &mb,
                no,
                Some(&ck1),
                Resolution::AlwaysOverwrite,
                ConflictModel::Strict,
                &[pct],
                now(),
                "x"
            ),
            Ok(1)
        ));
        // The current key is never a conflict.
        let ck = st.items[&no].item_id(1).change_key.expect("ck");
        assert!(
            st.update(
                &mb,
                no,
                Some(&ck),
                Resolution::NeverOverwrite,
                ConflictModel::Strict,
                &[set_subject("b")],
                now(),
                "x"
            )
            .is_ok()
        );
    }

    #[test]
    fn change_key_moves_and_conflicts_need_the_same_property() {
        let mb = Mailbox::new(1, "ann@example.com");
        let mut st = mb.lock();
        let no = st
            .create(
                &mb,
                FolderKind::Tasks,
                ItemKind::Task,
                task("a"),
                now(),
                "ann",
            )
            .expect("create");
        let ck1 = st.items[&no].item_id(1).change_key.expect("ck");
        st.update(
            &mb,
            no,
            Some(&ck1),
            Resolution::NeverOverwrite,
            ConflictModel::Merge,
            &[set_subject("b")],
            now(),
            "x",
        )
        .expect("fresh key");
        let ck2 = st.items[&no].item_id(1).change_key.expect("ck");
        assert_ne!(ck1, ck2);
        // Stale key, same property: conflict under NeverOverwrite and AutoResolve.
        for r in [Resolution::NeverOverwrite, Resolution::AutoResolve] {
            assert!(matches!(
                st.update(
                    &mb,
                    no,
                    Some(&ck1),
                    r,
                    ConflictModel::Merge,
                    &[set_subject("c")],
                    now(),
                    "x"
                ),
                Err(UpdateError::Conflict(1))
            ));
        }
        // Stale key, other property: merged.
        let pct = FieldChange::Set(
            Path::field("task:PercentComplete"),
            Box::new(Task {
                percent_complete: Some(50.0),
                ..Task::default()
            }),
        );
        assert_eq!(
            st.update(
                &mb,
                no,
                Some(&ck1),
                Resolution::AutoResolve,
                ConflictModel::Merge,
                &[pct],
                now(),
                "x"
            )
            .expect("merge"),
            0
        );
        assert_eq!(st.items[&no].task.status, Some(TaskStatus::InProgress));
        assert_eq!(
            st.update(
                &mb,
                no,
                Some(&ck1),
                Resolution::AlwaysOverwrite,
                ConflictModel::Merge,
                &[set_subject("d")],
                now(),
                "x"
            )
            .expect("overwrite"),
            1
        );
        assert!(matches!(
            st.update(
                &mb,
                no,
                None,
                Resolution::AutoResolve,
                ConflictModel::Merge,
                &[set_subject("e")],
                now(),
                "x"
            ),
            Err(UpdateError::Item((
                ResponseCode::ErrorChangeKeyRequiredForWriteOperations,
                _
            )))
        ));
    }

    #[test]
    fn sync_pages_creates_updates_deletes_and_ignore() {
        let mb = Mailbox::new(1, "ann@example.com");
        let mut st = mb.lock();
        let nos: Vec<u64> = (0..5)
            .map(|i| {
                st.create(
                    &mb,
                    FolderKind::Tasks,
                    ItemKind::Task,
                    task(&i.to_string()),
                    now(),
                    "a",
                )
                .expect("create")
            })
            .collect();
        let start = SyncPoint {
            mailbox: 1,
            folder: FolderKind::Tasks,
            cn: 0,
            known: vec![],
        };
        let p1 = st.sync(&start, &HashSet::new(), 3);
        assert_eq!(p1.entries.len(), 3);
        assert!(!p1.last);
        let p2 = st.sync(&p1.next, &HashSet::new(), 3);
        assert_eq!(p2.entries.len(), 2);
        assert!(p2.last);
        st.update(
            &mb,
            nos[0],
            None,
            Resolution::AlwaysOverwrite,
            ConflictModel::Merge,
            &[set_subject("x")],
            now(),
            "a",
        )
        .expect("update");
        st.delete(&mb, nos[1], now()).expect("delete");
        st.update(
            &mb,
            nos[2],
            None,
            Resolution::AlwaysOverwrite,
            ConflictModel::Merge,
            &[set_subject("y")],
            now(),
            "a",
        )
        .expect("update");
        let ignore: HashSet<u64> = [nos[2]].into();
        let p3 = st.sync(&p2.next, &ignore, 10);
        assert!(
            matches!(p3.entries[..], [SyncEntry::Update(a), SyncEntry::Delete(b)] if a == nos[0] && b == nos[1])
        );
        assert!(p3.last);
        let p4 = st.sync(&p3.next, &HashSet::new(), 10);
        assert!(p4.entries.is_empty());
    }
}
