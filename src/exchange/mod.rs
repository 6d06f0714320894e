//! The mailbox store over EWS: the engine's [`MailboxStore`] in Exchange terms.
//!
//! Each call acts for the mailbox by impersonation (`ExchangeImpersonation` and
//! `X-AnchorMailbox`), batches as the transport's limits say, and turns each response message
//! into a per-item outcome: a stale change key, a missing item, throttling and the rest are
//! values the engine matches on, never a failed batch.
//!
//! Every item is tagged with two extended properties in taskbridge's property set: the
//! assignment key (`project-guid:assignment-uid`) and the project GUID, so that the tasks of a
//! project are found with one FindItem per mailbox (`IsEqualTo` on the project property).

pub mod notices;

use std::collections::HashMap;
use std::time::Duration;

use chrono_tz::Tz;

use crate::ews::ops::create_item::{CreateItem, MessageDisposition};
use crate::ews::ops::delete_item::{AffectedTaskOccurrences, DeleteItem, DeleteType};
use crate::ews::ops::find_item::{FindItem, ItemTraversal};
use crate::ews::ops::get_events::GetEvents;
use crate::ews::ops::get_folder::GetFolder;
use crate::ews::ops::get_item::GetItem;
use crate::ews::ops::get_streaming_events::{
    CONNECTION_TIMEOUT_MINUTES, ConnectionStatus, GetStreamingEvents, GetStreamingEventsResponse,
    SubscriptionIds,
};
use crate::ews::ops::subscribe::{
    EventTypes, PullSubscriptionRequest, PushSubscriptionRequest, StreamingSubscriptionRequest,
    Subscribe,
};
use crate::ews::ops::sync_folder_items::{SyncChange, SyncFolderItems};
use crate::ews::ops::unsubscribe::Unsubscribe;
use crate::ews::ops::update_item::{
    ConflictResolution, ItemChange, ItemChanges, UpdateItem, Updates,
};
use crate::ews::service::Headers;
use crate::ews::types::{
    BaseFolderId, BasePoint, BaseShape, ChangeKey, EventType, ExtendedFieldUri, ExtendedProperty,
    FolderIds, FolderShape, IndexedPageView, Item, ItemId, ItemShape, Items, Path, ResponseCode,
    ResponseMessage, Restriction, SyncState, Watermark,
};
use crate::ews::{CallContext, EwsOperations, EwsService};
use crate::mapping::{FieldTable, MailValues};
use crate::pm::{AssignmentKey, ProjectGuid};
use crate::state::{ItemRef, MailboxAddress};
use crate::sync::{
    Affinity, Backend, BatchLimits, ChangePage, ChangedItem, Delivery, EventStream, FetchRequest,
    ItemFailure, ItemWrite, MailboxError, MailboxItem, MailboxStore, Notice, PulledEvents,
    StreamEvent, Subscription,
};

/// Name of the extended property holding the project GUID.
pub const PROJECT_PROPERTY_NAME: &str = "taskbridge-project";

/// Page size of FindItem lookups.
const FIND_PAGE: i32 = 500;

/// SyncFolderItems page size (the most Exchange allows).
const SYNC_PAGE: i32 = 512;

/// The EWS mailbox store.
#[derive(Clone)]
pub struct EwsMailboxStore<C> {
    client: C,
    table: std::sync::Arc<FieldTable>,
    limits: BatchLimits,
}

impl<C: EwsService> EwsMailboxStore<C> {
    /// A store over an EWS client, writing items as `table` says.
    pub fn new(client: C, table: std::sync::Arc<FieldTable>, limits: BatchLimits) -> Self {
        EwsMailboxStore {
            client,
            table,
            limits,
        }
    }

    /// The client.
    pub fn client(&self) -> &C {
        &self.client
    }

    fn ctx(mailbox: &MailboxAddress) -> CallContext {
        CallContext::for_mailbox(mailbox.as_str())
    }

    fn tasks(mailbox: &MailboxAddress) -> FolderIds {
        FolderIds(vec![BaseFolderId::tasks_of(Some(mailbox.as_str()))])
    }

    /// What SyncFolderItems returns: the mapped fields without the body (which servers do not
    /// return from folder-level calls), enough to tell our own write from a merged edit.
    fn sync_shape(&self) -> ItemShape {
        let mut shape = self.table.item_shape();
        shape.body_type = None;
        if let Some(paths) = &mut shape.additional_properties {
            paths.0.retain(
                |p| !matches!(p, Path::FieldUri(uri) if uri == crate::ews::types::field_uri::BODY),
            );
        }
        shape
    }

    fn project_uri(&self) -> ExtendedFieldUri {
        ExtendedFieldUri::named_string(
            &self.table.key_property_set_id().hyphenated().to_string(),
            PROJECT_PROPERTY_NAME,
        )
    }

    fn project_property(&self, project: ProjectGuid) -> ExtendedProperty {
        ExtendedProperty {
            extended_field_uri: self.project_uri(),
            value: Some(project.to_string()),
            values: None,
        }
    }
}

/// A whole-call EWS error in mailbox terms.
fn call_error(mailbox: &MailboxAddress, e: crate::ews::Error) -> MailboxError {
    use crate::ews::Error;
    match e {
        Error::Throttled { back_off } => MailboxError::Throttled { back_off },
        Error::Fault(f) if f.is_server_busy() => MailboxError::Throttled {
            back_off: f.back_off().unwrap_or(Duration::from_secs(1)),
        },
        Error::Fault(f)
            if matches!(
                f.response_code,
                Some(
                    ResponseCode::ErrorImpersonateUserDenied
                        | ResponseCode::ErrorImpersonationDenied
                        | ResponseCode::ErrorNonExistentMailbox
                        | ResponseCode::ErrorAccessDenied
                )
            ) =>
        {
            MailboxError::AccessDenied {
                mailbox: mailbox.to_string(),
                detail: f.to_string(),
            }
        }
        other => MailboxError::Unavailable(other.to_string()),
    }
}

/// A failed response message in per-item terms.
fn item_failure<T>(m: &ResponseMessage<T>) -> ItemFailure {
    let code = m.code();
    match code {
        ResponseCode::ErrorIrresolvableConflict
        | ResponseCode::ErrorStaleObject
        | ResponseCode::ErrorInvalidChangeKey
        | ResponseCode::ErrorChangeKeyRequiredForWriteOperations => ItemFailure::StaleChangeKey,
        ResponseCode::ErrorItemNotFound | ResponseCode::ErrorInvalidIdMalformed => {
            ItemFailure::NotFound
        }
        ResponseCode::ErrorServerBusy => ItemFailure::Throttled {
            back_off: m.back_off().unwrap_or(Duration::from_secs(1)),
        },
        c if c.is_transient() => ItemFailure::Transient(format!(
            "{c}: {}",
            m.message_text.as_deref().unwrap_or_default()
        )),
        c => ItemFailure::Refused {
            code: c.to_string(),
            message: m.message_text.clone().unwrap_or_default(),
        },
    }
}

/// The one response message of a mailbox-wide call (a folder, a sync page, a subscription),
/// or the mailbox's failure it reports.
fn only_message<T>(
    mailbox: &MailboxAddress,
    operation: &str,
    messages: Vec<ResponseMessage<T>>,
) -> Result<ResponseMessage<T>, MailboxError> {
    let message = messages
        .into_iter()
        .next()
        .ok_or_else(|| MailboxError::Unavailable(format!("empty {operation} response")))?;
    if !message.is_success() {
        return Err(mailbox_failure(mailbox, &message));
    }
    Ok(message)
}

/// A message that is not about a single item but about the mailbox.
fn mailbox_failure<T>(mailbox: &MailboxAddress, m: &ResponseMessage<T>) -> MailboxError {
    match m.code() {
        ResponseCode::ErrorServerBusy => MailboxError::Throttled {
            back_off: m.back_off().unwrap_or(Duration::from_secs(1)),
        },
        ResponseCode::ErrorInvalidSyncStateData => MailboxError::InvalidSyncState,
        ResponseCode::ErrorImpersonateUserDenied
        | ResponseCode::ErrorImpersonationDenied
        | ResponseCode::ErrorNonExistentMailbox
        | ResponseCode::ErrorAccessDenied
        | ResponseCode::ErrorFolderNotFound => MailboxError::AccessDenied {
            mailbox: mailbox.to_string(),
            detail: format!(
                "{}: {}",
                m.code(),
                m.message_text.as_deref().unwrap_or_default()
            ),
        },
        ResponseCode::ErrorInvalidWatermark
        | ResponseCode::ErrorExpiredSubscription
        | ResponseCode::ErrorSubscriptionNotFound
        | ResponseCode::ErrorInvalidSubscription
        | ResponseCode::ErrorInvalidPullSubscriptionId => {
            MailboxError::SubscriptionGone(m.code().to_string())
        }
        c => MailboxError::Unavailable(format!(
            "{c}: {}",
            m.message_text.as_deref().unwrap_or_default()
        )),
    }
}

/// An EWS item id in the engine's terms (an empty change key where it has none).
pub fn item_ref(id: &ItemId) -> ItemRef {
    ItemRef {
        item_id: id.id.to_string(),
        change_key: id
            .change_key
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    }
}

fn first_item_id(items: &Option<Items>) -> Option<&ItemId> {
    items.as_ref()?.0.first()?.fields.item_id.as_ref()
}

/// Pairs each request item with its response message; a missing message is a transient
/// failure of that item.
fn per_item<T, R>(
    n: usize,
    messages: Vec<ResponseMessage<T>>,
    mut ok: impl FnMut(&ResponseMessage<T>) -> Result<R, ItemFailure>,
) -> Vec<Result<R, ItemFailure>> {
    let mut out: Vec<Result<R, ItemFailure>> = messages
        .iter()
        .take(n)
        .map(|m| {
            if m.is_success() {
                ok(m)
            } else {
                Err(item_failure(m))
            }
        })
        .collect();
    while out.len() < n {
        out.push(Err(ItemFailure::Transient(
            "the server sent fewer answers than items".into(),
        )));
    }
    out
}

impl<C: EwsService + Clone + 'static> MailboxStore for EwsMailboxStore<C> {
    fn limits(&self) -> BatchLimits {
        self.limits
    }

    async fn tasks_folder(&self, mailbox: &MailboxAddress) -> Result<String, MailboxError> {
        let request = GetFolder {
            folder_shape: FolderShape {
                base_shape: BaseShape::IdOnly,
                additional_properties: None,
            },
            folder_ids: Self::tasks(mailbox),
        };
        let response = self
            .client
            .get_folder(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        let message = only_message(mailbox, "GetFolder", response.response_messages)?;
        message
            .payload
            .folders
            .and_then(|f| f.0.into_iter().next())
            .and_then(|f| f.folder.folder_id)
            .map(|id| id.id.to_string())
            .ok_or_else(|| MailboxError::Unavailable("GetFolder returned no folder id".into()))
    }

    async fn find_tagged(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
    ) -> Result<Vec<(AssignmentKey, ItemRef)>, MailboxError> {
        let mut found = Vec::new();
        let mut offset = 0;
        loop {
            let request = FindItem {
                traversal: ItemTraversal::Shallow,
                item_shape: ItemShape::new(BaseShape::IdOnly, vec![self.table.key_path()]),
                indexed_page_item_view: Some(IndexedPageView {
                    max_entries_returned: Some(FIND_PAGE),
                    offset,
                    base_point: BasePoint::Beginning,
                }),
                restriction: Some(Restriction::equals(
                    Path::ExtendedFieldUri(self.project_uri()),
                    project.to_string(),
                )),
                parent_folder_ids: Self::tasks(mailbox),
            };
            let response = self
                .client
                .find_item(&Self::ctx(mailbox), &request)
                .await
                .map_err(|e| call_error(mailbox, e))?;
            let message = only_message(mailbox, "FindItem", response.response_messages)?;
            let Some(root) = message.payload.root_folder else {
                break;
            };
            let page_len = root.items.as_ref().map_or(0, |i| i.0.len());
            for item in root.items.iter().flat_map(|i| &i.0) {
                if let (Some(key), Some(id)) =
                    (self.table.read_key(&item.fields), &item.fields.item_id)
                {
                    found.push((key, item_ref(id)));
                }
            }
            let last = root.includes_last_item_in_range.unwrap_or(true);
            if last || page_len == 0 {
                break;
            }
            offset = root
                .indexed_paging_offset
                .unwrap_or(offset + page_len as i32);
        }
        Ok(found)
    }

    async fn create(
        &self,
        mailbox: &MailboxAddress,
        items: &[(AssignmentKey, MailValues)],
    ) -> Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = CreateItem {
            message_disposition: Some(MessageDisposition::SaveOnly),
            saved_item_folder_id: Some(Self::tasks(mailbox)),
            items: Items(
                items
                    .iter()
                    .map(|(key, values)| {
                        let mut task = self.table.new_task(values, key);
                        task.extended_properties
                            .push(self.project_property(key.project));
                        Item::task(task)
                    })
                    .collect(),
            ),
        };
        let response = self
            .client
            .create_item(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        Ok(per_item(items.len(), response.response_messages, |m| {
            first_item_id(&m.payload.items)
                .map(item_ref)
                .ok_or_else(|| ItemFailure::Transient("created item without an id".into()))
        }))
    }

    async fn update(
        &self,
        mailbox: &MailboxAddress,
        writes: &[ItemWrite],
    ) -> Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError> {
        // Exchange refuses an ItemChange without updates: those are answered here.
        let mut results: Vec<Option<Result<ItemRef, ItemFailure>>> = vec![None; writes.len()];
        let mut changes = Vec::new();
        let mut sent = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let updates = self.table.updates(&w.from, &w.to);
            if updates.is_empty() {
                results[i] = Some(Ok(w.item.clone()));
                continue;
            }
            changes.push(ItemChange {
                item_id: ItemId::new(
                    w.item.item_id.clone(),
                    Some(ChangeKey::from(w.item.change_key.as_str())).filter(|c| !c.0.is_empty()),
                ),
                updates: Updates(updates),
            });
            sent.push(i);
        }
        if !changes.is_empty() {
            // NeverOverwrite: any change since the key was read fails the item, so that an
            // edit made in Outlook meanwhile is read and decided, never silently merged.
            let request = UpdateItem {
                conflict_resolution: ConflictResolution::NeverOverwrite,
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                item_changes: ItemChanges {
                    item_changes: changes,
                },
            };
            let response = self
                .client
                .update_item(&Self::ctx(mailbox), &request)
                .await
                .map_err(|e| call_error(mailbox, e))?;
            let answers = per_item(sent.len(), response.response_messages, |m| {
                first_item_id(&m.payload.items)
                    .map(item_ref)
                    .ok_or_else(|| ItemFailure::Transient("updated item without an id".into()))
            });
            for (i, answer) in sent.into_iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ItemFailure::Transient("not sent".into()))))
            .collect())
    }

    async fn delete(
        &self,
        mailbox: &MailboxAddress,
        items: &[ItemRef],
    ) -> Result<Vec<Result<(), ItemFailure>>, MailboxError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = DeleteItem {
            delete_type: DeleteType::MoveToDeletedItems,
            affected_task_occurrences: Some(AffectedTaskOccurrences::AllOccurrences),
            item_ids: items
                .iter()
                .map(|i| ItemId::new(i.item_id.clone(), None))
                .collect::<Vec<_>>()
                .into(),
        };
        let response = self
            .client
            .delete_item(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        Ok(per_item(
            items.len(),
            response.response_messages,
            |_| Ok(()),
        ))
    }

    async fn fetch(
        &self,
        mailbox: &MailboxAddress,
        items: &[FetchRequest],
    ) -> Result<Vec<Result<MailboxItem, ItemFailure>>, MailboxError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = GetItem {
            item_shape: self.table.item_shape(),
            item_ids: items
                .iter()
                .map(|r| ItemId::new(r.item_id.clone(), None))
                .collect::<Vec<_>>()
                .into(),
        };
        let response = self
            .client
            .get_item(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        let zones: Vec<Tz> = items.iter().map(|r| r.zone).collect();
        let mut index = 0;
        Ok(per_item(items.len(), response.response_messages, |m| {
            let zone = zones.get(index).copied().unwrap_or(chrono_tz::UTC);
            index += 1;
            let item = m
                .payload
                .items
                .as_ref()
                .and_then(|i| i.0.first())
                .ok_or_else(|| ItemFailure::Transient("GetItem returned no item".into()))?;
            let task = &item.fields;
            let id = task
                .item_id
                .as_ref()
                .ok_or_else(|| ItemFailure::Transient("GetItem returned no item id".into()))?;
            Ok(MailboxItem {
                item: item_ref(id),
                key: self.table.read_key(task),
                values: self.table.from_task(task, zone),
                modified_at: task.last_modified_time,
            })
        }))
    }

    async fn changes(
        &self,
        mailbox: &MailboxAddress,
        sync_state: Option<&str>,
        zones: &HashMap<String, Tz>,
    ) -> Result<ChangePage, MailboxError> {
        let request = SyncFolderItems {
            item_shape: self.sync_shape(),
            sync_folder_id: Self::tasks(mailbox),
            sync_state: sync_state.map(SyncState::from),
            ignore: None,
            max_changes_returned: SYNC_PAGE,
        };
        let response = self
            .client
            .sync_folder_items(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        let message = only_message(mailbox, "SyncFolderItems", response.response_messages)?;
        let p = message.payload;
        let mut page = ChangePage {
            sync_state: p.sync_state.map(|s| s.0).ok_or_else(|| {
                MailboxError::Unavailable("SyncFolderItems without a state".into())
            })?,
            more: !p.includes_last_item_in_range.unwrap_or(true),
            ..ChangePage::default()
        };
        for change in p.changes.map(|c| c.0).unwrap_or_default() {
            match change {
                SyncChange::Create(item) | SyncChange::Update(item) => {
                    if let Some(id) = &item.fields.item_id {
                        let values = zones
                            .get(id.id.as_str())
                            .filter(|_| item.as_task().is_some())
                            .map(|zone| self.table.from_task(&item.fields, *zone));
                        page.changed.push(ChangedItem {
                            item: item_ref(id),
                            values,
                        });
                    }
                }
                SyncChange::Delete(id) => page.deleted.push(id.id.to_string()),
                SyncChange::ReadFlagChange { .. } => {}
            }
        }
        Ok(page)
    }

    async fn subscribe(
        &self,
        mailbox: &MailboxAddress,
        delivery: &Delivery,
        watermark: Option<&str>,
        affinity: Option<&Affinity>,
    ) -> Result<Subscription, MailboxError> {
        let event_types = EventTypes {
            event_types: vec![
                EventType::CreatedEvent,
                EventType::ModifiedEvent,
                EventType::DeletedEvent,
                EventType::MovedEvent,
                EventType::CopiedEvent,
            ],
        };
        let minutes = |d: &Duration| (d.as_secs() / 60).clamp(1, 1440) as i32;
        let request = match delivery {
            Delivery::Push {
                url,
                status_frequency,
            } => Subscribe::Push(PushSubscriptionRequest {
                folder_ids: Some(Self::tasks(mailbox)),
                event_types,
                watermark: watermark.map(Watermark::from),
                status_frequency: minutes(status_frequency),
                url: url.clone(),
            }),
            Delivery::Pull { timeout } => Subscribe::Pull(PullSubscriptionRequest {
                folder_ids: Some(Self::tasks(mailbox)),
                event_types,
                watermark: watermark.map(Watermark::from),
                timeout: minutes(timeout),
            }),
            // A streaming subscription cannot resume after a watermark; the pass after
            // subscribing catches up.
            Delivery::Streaming => Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(Self::tasks(mailbox)),
                event_types,
            }),
        };
        // Server affinity (Exchange 2013 and later): the anchor routes the request
        // (X-AnchorMailbox: the mailbox itself, or its group's anchor so that the group's
        // subscriptions share a backend, whose cookie is sent back once known) and the
        // answer's cookie names the backend that holds the subscription, for its streaming
        // connection to reach.
        let mut ctx =
            Self::ctx(mailbox).with_http_header(crate::ews::affinity::prefer_server_affinity());
        if let Some(affinity) = affinity {
            ctx = ctx.with_http_header(anchor_header(&affinity.anchor)?);
            if let Some(cookie) = affinity
                .backend
                .as_ref()
                .and_then(|b| crate::ews::affinity::BackendCookie::new(b.0.clone()))
            {
                ctx = ctx.with_http_header(cookie.request_header());
            }
        }
        let ctx = ctx.restricted(Headers {
            impersonation: true,
            time_zone: false,
        });
        let (response, headers) = self
            .client
            .send_with_headers(ctx, &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        let backend = crate::ews::affinity::BackendCookie::from_response(&headers)
            .map(|c| Backend(c.as_str().to_string()));
        let message = only_message(mailbox, "Subscribe", response.response_messages)?;
        Ok(Subscription {
            backend,
            id: message
                .payload
                .subscription_id
                .map(|s| s.0)
                .ok_or_else(|| MailboxError::Unavailable("Subscribe without an id".into()))?,
            watermark: message.payload.watermark.map(|w| w.0),
        })
    }

    async fn unsubscribe(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        backend: Option<&Backend>,
    ) -> Result<(), MailboxError> {
        let request = Unsubscribe {
            subscription_id: subscription_id.into(),
        };
        // Only the backend holding the subscription knows it: its cookie routes the request.
        let mut ctx = Self::ctx(mailbox);
        if let Some(cookie) =
            backend.and_then(|b| crate::ews::affinity::BackendCookie::new(b.0.clone()))
        {
            ctx = ctx.with_http_header(cookie.request_header());
        }
        let response = self
            .client
            .unsubscribe(&ctx, &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        match response.response_messages.first() {
            Some(m) if !m.is_success() => Err(mailbox_failure(mailbox, m)),
            _ => Ok(()),
        }
    }

    async fn pull(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        watermark: &str,
    ) -> Result<PulledEvents, MailboxError> {
        let request = GetEvents {
            subscription_id: subscription_id.into(),
            watermark: watermark.into(),
        };
        let response = self
            .client
            .get_events(&Self::ctx(mailbox), &request)
            .await
            .map_err(|e| call_error(mailbox, e))?;
        let message = only_message(mailbox, "GetEvents", response.response_messages)?;
        let mut out = PulledEvents {
            items: Vec::new(),
            watermark: None,
            more: false,
            versions: None,
        };
        if let Some(n) = message.payload.notification {
            out.more = n.more_events.unwrap_or(false);
            out.versions = n
                .item_versions()
                .map(|v| v.into_iter().map(item_ref).collect());
            for e in &n.events {
                if let Some(w) = e.watermark() {
                    out.watermark = Some(w.0.clone());
                }
                if let Some(id) = e.object().and_then(|o| o.item_id()) {
                    out.items.push(id.id.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn open_stream(
        &self,
        anchor: &MailboxAddress,
        subscription_ids: &[String],
        backend: Option<&Backend>,
        timeout: Duration,
    ) -> Result<EventStream, MailboxError> {
        let minutes = i32::try_from(timeout.as_secs() / 60)
            .unwrap_or(i32::MAX)
            .clamp(
                *CONNECTION_TIMEOUT_MINUTES.start(),
                *CONNECTION_TIMEOUT_MINUTES.end(),
            );
        let request = GetStreamingEvents {
            subscription_ids: SubscriptionIds {
                subscription_ids: subscription_ids.iter().map(|s| s.as_str().into()).collect(),
            },
            connection_timeout: minutes,
        };
        let mut ctx = Self::ctx(anchor);
        if let Some(cookie) =
            backend.and_then(|b| crate::ews::affinity::BackendCookie::new(b.0.clone()))
        {
            ctx = ctx.with_http_header(cookie.request_header());
        }
        let stream = self
            .client
            .get_streaming_events(ctx, &request)
            .await
            .map_err(|e| call_error(anchor, e))?;
        let anchor = anchor.clone();
        let events = futures::stream::unfold(
            (stream, std::collections::VecDeque::new(), anchor),
            |(mut stream, mut ready, anchor)| async move {
                loop {
                    if let Some(event) = ready.pop_front() {
                        return Some((event, (stream, ready, anchor)));
                    }
                    match stream.next().await? {
                        Ok(response) => ready.extend(stream_events(&anchor, response)),
                        Err(e) => ready.push_back(Err(call_error(&anchor, e))),
                    }
                }
            },
        );
        Ok(Box::pin(events))
    }
}

/// `X-AnchorMailbox: <anchor>`, replacing the one sent for the impersonated mailbox.
fn anchor_header(
    anchor: &MailboxAddress,
) -> Result<(http::HeaderName, http::HeaderValue), MailboxError> {
    let value = http::HeaderValue::from_str(anchor.as_str()).map_err(|_| {
        MailboxError::Unavailable(format!("{anchor} cannot be sent as X-AnchorMailbox"))
    })?;
    Ok((http::HeaderName::from_static("x-anchormailbox"), value))
}

/// What one GetStreamingEvents envelope says, in order: notifications, subscriptions the server
/// does not know, a failed message, and the connection's end.
fn stream_events(
    anchor: &MailboxAddress,
    response: GetStreamingEventsResponse,
) -> Vec<Result<StreamEvent, MailboxError>> {
    let mut out = Vec::new();
    for message in response.response_messages {
        let gone = matches!(
            message.code(),
            ResponseCode::ErrorSubscriptionNotFound
                | ResponseCode::ErrorInvalidSubscription
                | ResponseCode::ErrorExpiredSubscription
        ) || message.code().as_str() == "ErrorSubscriptionAccessDenied";
        if let Some(n) = &message.payload.notifications {
            let notices: Vec<Notice> = n
                .notifications
                .iter()
                .map(|n| Notice {
                    subscription_id: n.subscription_id.as_str().to_string(),
                    watermark: n.resume_watermark().map(|w| w.as_str().to_string()),
                    item_ids: n.item_ids(),
                    versions: n
                        .item_versions()
                        .map(|v| v.into_iter().map(item_ref).collect()),
                })
                .collect();
            if !notices.is_empty() {
                out.push(Ok(StreamEvent::Notices(notices)));
            }
        }
        if !message.is_success() {
            let ids: Vec<String> = message
                .payload
                .error_subscription_ids
                .iter()
                .flat_map(|ids| &ids.subscription_ids)
                .map(|id| id.as_str().to_string())
                .collect();
            if gone {
                out.push(Ok(StreamEvent::Gone(ids)));
            } else {
                out.push(Err(mailbox_failure(anchor, &message)));
            }
        }
        match message.payload.connection_status {
            Some(ConnectionStatus::Closed) => out.push(Ok(StreamEvent::Closed)),
            _ if out.is_empty() => out.push(Ok(StreamEvent::KeepAlive)),
            _ => {}
        }
    }
    out
}
