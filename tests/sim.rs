//! The simulator over real HTTP on 127.0.0.1:0: every Exchange rule it promises, driven through
//! the project's `EwsClient` with retries off (so that throttling and failures reach the test),
//! and with plain reqwest where the raw wire shape itself is the point (faults, 401, throttling).

mod external;

use std::collections::VecDeque;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use taskbridge::ews::ops::create_item::{CreateItem, ItemsPayload, MessageDisposition};
use taskbridge::ews::ops::delete_item::{AffectedTaskOccurrences, DeleteItem, DeleteType};
use taskbridge::ews::ops::find_item::{FindItem, ItemTraversal};
use taskbridge::ews::ops::get_events::GetEvents;
use taskbridge::ews::ops::get_folder::GetFolder;
use taskbridge::ews::ops::get_item::GetItem;
use taskbridge::ews::ops::send_notification::{
    SendNotification, SendNotificationResult, SubscriptionStatus,
};
use taskbridge::ews::ops::subscribe::{
    EventTypes, PullSubscriptionRequest, PushSubscriptionRequest, Subscribe,
};
use taskbridge::ews::ops::sync_folder_items::{SyncChange, SyncFolderItems};
use taskbridge::ews::ops::unsubscribe::Unsubscribe;
use taskbridge::ews::ops::update_item::{
    ConflictResolution, ItemChange, ItemChanges, ItemUpdate, UpdateItem, UpdateItemPayload, Updates,
};
use taskbridge::ews::ops::{self, soap_action};
use taskbridge::ews::soap::{Body, Fault, Impersonation, RequestHeader};
use taskbridge::ews::transport::Auth;
use taskbridge::ews::types::{
    BaseFolderId, BasePoint, BaseShape, Event, EventType, ExtendedFieldUri, ExtendedProperty,
    FolderIds, FolderShape, IndexedPageView, Item, ItemId, ItemShape, Items, Notification, Path,
    ResponseClass, ResponseCode, ResponseMessage, Restriction, SyncState, Task, TaskStatus,
    Watermark, field_uri,
};
use taskbridge::ews::{CallContext, EwsClient, EwsClientConfig, EwsService, Operation};
use taskbridge::secret::Secret;
use taskbridge_sim::{self as sim, AuthMode, SimConfig, SimHandle, ThrottleShape, UserSpec};

const GUID: &str = "c11ff724-aa03-4555-9952-8fa248a11c3e";
const ANN: &str = "ann@example.com";
const BOB: &str = "bob@example.com";
const SVC: &str = "svc@example.com";

fn key_path() -> ExtendedFieldUri {
    ExtendedFieldUri::named_string(GUID, "taskbridge-key")
}

/// A simulator with Ann and Bob (owners) and a service account, push times x0.001. With
/// `TASKBRIDGE_RECORD_DIR` set (CI), it records into a fresh folder below it, and CI validates
/// every recorded message against the official schema.
fn config() -> SimConfig {
    let mut c = unrecorded_config();
    if let Some(dir) = std::env::var_os("TASKBRIDGE_RECORD_DIR") {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.record =
            Some(std::path::PathBuf::from(dir).join(format!("sim-{}-{n}", std::process::id())));
    }
    c
}

/// For tests that send invalid requests on purpose: nothing recorded.
fn unrecorded_config() -> SimConfig {
    let mut c = SimConfig::for_tests(&["ann@example.com:ann-pw", "bob@example.com:bob-pw"]);
    c.users
        .push(UserSpec::parse("svc@example.com:svc-pw", true).expect("service"));
    c.push_time_scale = 0.001;
    c
}

async fn start(c: SimConfig) -> SimHandle {
    sim::start(c).await.expect("simulator starts")
}

/// The project's own client for typed calls, and reqwest for checking raw wire shapes.
struct Ews {
    client: EwsClient,
    http: reqwest::Client,
    url: String,
    basic: Option<(String, String)>,
}

type Answer<R> = Result<R, Box<Fault>>;

impl Ews {
    fn with(url: &str, auth: Auth, basic: Option<(String, String)>) -> Self {
        let mut config = EwsClientConfig::new(url, auth);
        // Throttling and failures are asserted on the wire, not retried away.
        config.retry.max_attempts = 1;
        Ews {
            client: EwsClient::new(config).expect("client"),
            http: reqwest::Client::new(),
            url: url.to_string(),
            basic,
        }
    }

    fn new(h: &SimHandle) -> Self {
        Ews::with(&h.url, Auth::None, None)
    }

    fn login(h: &SimHandle, user: &str, password: &str) -> Self {
        Ews::with(
            &h.url,
            Auth::Basic {
                user: user.into(),
                password: Secret::new(password),
            },
            Some((user.into(), password.into())),
        )
    }

    async fn raw(&self, body: Vec<u8>) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(body);
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        req.send().await.expect("the simulator answers")
    }

    /// Calls through `EwsClient`; a SOAP fault is `Err`, anything else unexpected panics.
    async fn call<O: Operation>(&self, who: Option<&str>, request: &O) -> Answer<O::Response> {
        let ctx = CallContext {
            mailbox: who.map(str::to_string),
            ..CallContext::default()
        };
        let result = self.client.send(ctx, request).await;
        assert!(
            self.client.server_version().is_some(),
            "ServerVersionInfo on every response"
        );
        match result {
            Ok(r) => Ok(r),
            Err(taskbridge::ews::Error::Fault(f)) => Err(f),
            Err(e) => panic!("{}: {e}", O::NAME),
        }
    }

    async fn create(&self, who: &str, task: Task) -> ItemId {
        let resp = self
            .call(
                Some(who),
                &CreateItem {
                    message_disposition: Some(MessageDisposition::SaveOnly),
                    saved_item_folder_id: None,
                    items: Items(vec![Item::task(task)]),
                },
            )
            .await
            .expect("no fault");
        let msg = &resp.response_messages[0];
        assert_eq!(
            msg.response_class,
            ResponseClass::Success,
            "{:?}",
            msg.message_text
        );
        item_of(&msg.payload).item_id.clone().expect("id")
    }

    async fn get(
        &self,
        who: &str,
        ids: Vec<ItemId>,
        shape: ItemShape,
    ) -> Vec<ResponseMessage<ItemsPayload>> {
        self.call(
            Some(who),
            &GetItem {
                item_shape: shape,
                item_ids: ids.into(),
            },
        )
        .await
        .expect("no fault")
        .response_messages
    }

    async fn get_task(&self, who: &str, id: &ItemId) -> Task {
        let msgs = self
            .get(
                who,
                vec![id.clone()],
                ItemShape::new(
                    BaseShape::AllProperties,
                    vec![Path::ExtendedFieldUri(key_path())],
                ),
            )
            .await;
        item_of(&msgs[0].payload).clone()
    }

    async fn update(
        &self,
        who: &str,
        id: ItemId,
        resolution: ConflictResolution,
        updates: Vec<ItemUpdate>,
    ) -> ResponseMessage<UpdateItemPayload> {
        self.call(
            Some(who),
            &UpdateItem {
                conflict_resolution: resolution,
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                item_changes: ItemChanges {
                    item_changes: vec![ItemChange {
                        item_id: id,
                        updates: Updates(updates),
                    }],
                },
            },
        )
        .await
        .expect("no fault")
        .response_messages
        .remove(0)
    }
}

fn item_of(p: &ItemsPayload) -> &Task {
    &p.items.as_ref().expect("items").0[0].fields
}

fn tagged(subject: &str, key: &str) -> Task {
    Task {
        subject: Some(subject.into()),
        extended_properties: vec![ExtendedProperty {
            extended_field_uri: key_path(),
            value: Some(key.into()),
            values: None,
        }],
        ..Task::default()
    }
}

fn set(uri: &str, task: Task) -> ItemUpdate {
    ItemUpdate::SetItemField {
        path: Path::field(uri),
        item: Box::new(Item::task(task)),
    }
}

fn set_subject(s: &str) -> ItemUpdate {
    set(
        field_uri::SUBJECT,
        Task {
            subject: Some(s.into()),
            ..Task::default()
        },
    )
}

fn set_percent(p: f64) -> ItemUpdate {
    set(
        field_uri::PERCENT_COMPLETE,
        Task {
            percent_complete: Some(p),
            ..Task::default()
        },
    )
}

fn set_status(s: TaskStatus) -> ItemUpdate {
    set(
        field_uri::STATUS,
        Task {
            status: Some(s),
            ..Task::default()
        },
    )
}

fn tasks_of(m: &str) -> FolderIds {
    FolderIds(vec![BaseFolderId::tasks_of(Some(m))])
}

#[tokio::test]
async fn change_key_moves_on_every_change_with_count_and_time() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("Design review", "p:1")).await;
    let t1 = ews.get_task(ANN, &id).await;
    assert_eq!(t1.change_count, Some(1));
    assert_eq!(t1.extended_value(&key_path()), Some("p:1"));
    assert_eq!(t1.status, Some(TaskStatus::NotStarted));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let upd = ews
        .update(
            ANN,
            t1.item_id.clone().expect("id"),
            ConflictResolution::AutoResolve,
            vec![set_subject("Review")],
        )
        .await;
    assert_eq!(upd.response_class, ResponseClass::Success);
    let new_id = item_of_update(&upd);
    let t2 = ews.get_task(ANN, &id).await;
    assert_ne!(
        t1.item_id.as_ref().and_then(|i| i.change_key.clone()),
        new_id.change_key
    );
    assert_eq!(
        t2.item_id.as_ref().map(|i| &i.change_key),
        Some(&new_id.change_key)
    );
    assert_eq!(t2.change_count, Some(2));
    assert!(t2.last_modified_time > t1.last_modified_time);
    // Setting the same value again still makes a new change key.
    let again = ews
        .update(
            ANN,
            new_id.clone(),
            ConflictResolution::AutoResolve,
            vec![set_subject("Review")],
        )
        .await;
    assert_ne!(item_of_update(&again).change_key, new_id.change_key);
    // The admin bump moves the key without a field change.
    let before = ews.get_task(ANN, &id).await;
    let bumped: serde_json::Value = admin(
        &h,
        "POST",
        &format!("mailboxes/{ANN}/tasks/{}/bump", id.id),
        None,
    )
    .await;
    let after = ews.get_task(ANN, &id).await;
    assert_ne!(before.item_id, after.item_id);
    assert_eq!(before.subject, after.subject);
    assert_eq!(
        bumped["ItemId"]["ChangeKey"],
        after.item_id.expect("id").change_key.expect("ck").0
    );
    h.shutdown().await;
}

fn item_of_update(m: &ResponseMessage<UpdateItemPayload>) -> ItemId {
    m.payload.items.as_ref().expect("items").0[0]
        .fields
        .item_id
        .clone()
        .expect("id")
}

#[tokio::test]
async fn update_conflicts_follow_each_conflict_resolution() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("a", "p:1")).await;
    let stale = id.clone();
    let fresh = item_of_update(
        &ews.update(
            ANN,
            id.clone(),
            ConflictResolution::NeverOverwrite,
            vec![set_subject("b")],
        )
        .await,
    );
    // Stale key, same property: NeverOverwrite and AutoResolve refuse.
    for r in [
        ConflictResolution::NeverOverwrite,
        ConflictResolution::AutoResolve,
    ] {
        let m = ews
            .update(ANN, stale.clone(), r, vec![set_subject("c")])
            .await;
        assert_eq!(m.code(), ResponseCode::ErrorIrresolvableConflict);
        assert_eq!(m.payload.conflict_results.map(|c| c.count), Some(1));
    }
    // AlwaysOverwrite wins and counts the conflict.
    let m = ews
        .update(
            ANN,
            stale.clone(),
            ConflictResolution::AlwaysOverwrite,
            vec![set_subject("d")],
        )
        .await;
    assert_eq!(m.response_class, ResponseClass::Success);
    assert_eq!(m.payload.conflict_results.map(|c| c.count), Some(1));
    // Stale key, another property: refused as strictly as Exchange refuses it (no property
    // it sets changed, so no conflict is counted); the merge model is tested below.
    let m = ews
        .update(
            ANN,
            stale.clone(),
            ConflictResolution::AutoResolve,
            vec![set_percent(25.0)],
        )
        .await;
    assert_eq!(m.code(), ResponseCode::ErrorIrresolvableConflict);
    assert_eq!(m.payload.conflict_results.map(|c| c.count), Some(0));
    // No change key: AutoResolve needs one, NeverOverwrite applies.
    let bare = ItemId::new(id.id.0.clone(), None);
    let m = ews
        .update(
            ANN,
            bare.clone(),
            ConflictResolution::AutoResolve,
            vec![set_subject("e")],
        )
        .await;
    assert_eq!(
        m.code(),
        ResponseCode::ErrorChangeKeyRequiredForWriteOperations
    );
    let m = ews
        .update(
            ANN,
            bare,
            ConflictResolution::NeverOverwrite,
            vec![set_subject("f")],
        )
        .await;
    assert_eq!(m.response_class, ResponseClass::Success);
    // A change key that was never issued is invalid.
    let m = ews
        .update(
            ANN,
            ItemId::new(id.id.0.clone(), Some("garbage".into())),
            ConflictResolution::AutoResolve,
            vec![set_subject("g")],
        )
        .await;
    assert_eq!(m.code(), ResponseCode::ErrorInvalidChangeKey);
    assert_ne!(fresh.change_key, stale.change_key);
    h.shutdown().await;
}

#[tokio::test]
async fn status_percent_and_complete_date_are_coupled_last_one_wins() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("t", "p:1")).await;
    let cur = |t: &Task| t.item_id.clone().expect("id");
    // Percent then Status in one request: the status (last) wins.
    let t = ews.get_task(ANN, &id).await;
    ews.update(
        ANN,
        cur(&t),
        ConflictResolution::AutoResolve,
        vec![set_percent(30.0), set_status(TaskStatus::Completed)],
    )
    .await;
    let t = ews.get_task(ANN, &id).await;
    assert_eq!(
        (t.status.clone(), t.percent_complete, t.is_complete),
        (Some(TaskStatus::Completed), Some(100.0), Some(true))
    );
    assert!(t.complete_date.is_some());
    // Status then Percent: the percent wins; leaving Completed clears CompleteDate.
    ews.update(
        ANN,
        cur(&t),
        ConflictResolution::AutoResolve,
        vec![set_status(TaskStatus::Completed), set_percent(50.0)],
    )
    .await;
    let t = ews.get_task(ANN, &id).await;
    assert_eq!(
        (t.status.clone(), t.percent_complete, t.is_complete),
        (Some(TaskStatus::InProgress), Some(50.0), Some(false))
    );
    assert_eq!(t.complete_date, None);
    ews.update(
        ANN,
        cur(&t),
        ConflictResolution::AutoResolve,
        vec![set_percent(0.0)],
    )
    .await;
    let t = ews.get_task(ANN, &id).await;
    assert_eq!(t.status, Some(TaskStatus::NotStarted));
    ews.update(
        ANN,
        cur(&t),
        ConflictResolution::AutoResolve,
        vec![set_percent(100.0)],
    )
    .await;
    let t = ews.get_task(ANN, &id).await;
    assert_eq!(t.status, Some(TaskStatus::Completed));
    assert_eq!(t.status_description.as_deref(), Some("Completed"));
    // Out of range and read-only fields are refused per item.
    let m = ews
        .update(
            ANN,
            cur(&t),
            ConflictResolution::AutoResolve,
            vec![set_percent(150.0)],
        )
        .await;
    assert_eq!(m.code().as_str(), "ErrorInvalidPercentCompleteValue");
    let m = ews
        .update(
            ANN,
            cur(&t),
            ConflictResolution::AutoResolve,
            vec![set(
                field_uri::IS_COMPLETE,
                Task {
                    is_complete: Some(false),
                    ..Task::default()
                },
            )],
        )
        .await;
    assert_eq!(m.code().as_str(), "ErrorInvalidPropertySet");
    // CreateItem applies the coupling too (Status is processed after PercentComplete).
    let id2 = ews
        .create(
            ANN,
            Task {
                subject: Some("c".into()),
                percent_complete: Some(40.0),
                status: Some(TaskStatus::Completed),
                ..Task::default()
            },
        )
        .await;
    let t2 = ews.get_task(ANN, &id2).await;
    assert_eq!(t2.percent_complete, Some(100.0));
    h.shutdown().await;
}

#[tokio::test]
async fn get_item_shapes_return_only_extended_properties_asked_for() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let mut task = tagged("shaped", "p:9");
    task.body = Some(taskbridge::ews::types::Body::text("notes"));
    task.extended_properties.push(ExtendedProperty {
        extended_field_uri: ExtendedFieldUri::named_string(GUID, "other"),
        value: Some("x".into()),
        values: None,
    });
    let id = ews.create(ANN, task).await;
    let get = |shape| ews.get(ANN, vec![id.clone()], shape);
    let id_only = get(ItemShape::new(BaseShape::IdOnly, vec![])).await;
    let t = item_of(&id_only[0].payload);
    assert!(t.item_id.is_some() && t.subject.is_none() && t.extended_properties.is_empty());
    let default = get(ItemShape::new(BaseShape::Default, vec![])).await;
    let t = item_of(&default[0].payload);
    assert!(t.subject.is_some() && t.status.is_some() && t.body.is_none());
    let all = get(ItemShape::new(BaseShape::AllProperties, vec![])).await;
    let t = item_of(&all[0].payload);
    assert!(t.body.is_some() && t.change_count.is_some() && t.extended_properties.is_empty());
    let extra = get(ItemShape::new(
        BaseShape::IdOnly,
        vec![
            Path::ExtendedFieldUri(key_path()),
            Path::field(field_uri::PERCENT_COMPLETE),
        ],
    ))
    .await;
    let t = item_of(&extra[0].payload);
    assert_eq!(t.extended_properties.len(), 1);
    assert_eq!(t.extended_value(&key_path()), Some("p:9"));
    assert_eq!(t.percent_complete, Some(0.0));
    h.shutdown().await;
}

#[tokio::test]
async fn batches_answer_per_item_and_delete_needs_task_occurrences() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let a = ews.create(ANN, tagged("a", "p:a")).await;
    let b = ews.create(ANN, tagged("b", "p:b")).await;
    let msgs = ews
        .get(
            ANN,
            vec![a.clone(), ItemId::new("not-an-id", None), b.clone()],
            ItemShape::new(BaseShape::IdOnly, vec![]),
        )
        .await;
    let codes: Vec<ResponseCode> = msgs.iter().map(|m| m.code()).collect();
    assert_eq!(
        codes,
        vec![
            ResponseCode::NoError,
            ResponseCode::ErrorInvalidIdMalformed,
            ResponseCode::NoError
        ]
    );
    let delete = |occ| DeleteItem {
        delete_type: DeleteType::HardDelete,
        affected_task_occurrences: occ,
        item_ids: vec![a.clone()].into(),
    };
    let r = ews.call(Some(ANN), &delete(None)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].code().as_str(),
        "ErrorAffectedTaskOccurrencesRequired"
    );
    let r = ews
        .call(
            Some(ANN),
            &delete(Some(AffectedTaskOccurrences::AllOccurrences)),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    let r = ews
        .call(
            Some(ANN),
            &delete(Some(AffectedTaskOccurrences::AllOccurrences)),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorItemNotFound
    );
    // MoveToDeletedItems moves the task out of Tasks under a new id.
    let r = ews
        .call(
            Some(ANN),
            &DeleteItem {
                delete_type: DeleteType::MoveToDeletedItems,
                affected_task_occurrences: Some(AffectedTaskOccurrences::AllOccurrences),
                item_ids: vec![b.clone()].into(),
            },
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    let msgs = ews
        .get(ANN, vec![b], ItemShape::new(BaseShape::IdOnly, vec![]))
        .await;
    assert_eq!(msgs[0].code(), ResponseCode::ErrorItemNotFound);
    h.shutdown().await;
}

#[tokio::test]
async fn mailbox_over_quota_refuses_creates_and_updates_until_cleared() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let a = ews.create(ANN, tagged("a", "p:a")).await;
    let _: serde_json::Value = admin(
        &h,
        "PUT",
        &format!("mailboxes/{ANN}/quota"),
        Some(serde_json::json!({"exceeded": true})),
    )
    .await;
    let m = ews
        .update(
            ANN,
            a.clone(),
            ConflictResolution::AlwaysOverwrite,
            vec![set_subject("b")],
        )
        .await;
    assert_eq!(m.code().as_str(), "ErrorQuotaExceeded");
    let r = ews
        .call(
            Some(ANN),
            &CreateItem {
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                items: Items(vec![Item::task(tagged("c", "p:c"))]),
            },
        )
        .await
        .expect("no fault");
    assert_eq!(r.response_messages[0].code().as_str(), "ErrorQuotaExceeded");
    let _: serde_json::Value = admin(
        &h,
        "PUT",
        &format!("mailboxes/{ANN}/quota"),
        Some(serde_json::json!({"exceeded": false})),
    )
    .await;
    let m = ews
        .update(
            ANN,
            a,
            ConflictResolution::AlwaysOverwrite,
            vec![set_subject("b")],
        )
        .await;
    assert_eq!(m.code(), ResponseCode::NoError);
    h.shutdown().await;
}

#[tokio::test]
async fn find_item_by_extended_property_with_paging() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    for i in 0..5 {
        ews.create(
            ANN,
            tagged(
                &format!("t{i}"),
                if i % 2 == 0 { "proj:even" } else { "proj:odd" },
            ),
        )
        .await;
    }
    let find = |offset, key: &str| FindItem {
        traversal: ItemTraversal::Shallow,
        item_shape: ItemShape::new(BaseShape::IdOnly, vec![Path::ExtendedFieldUri(key_path())]),
        indexed_page_item_view: Some(IndexedPageView {
            max_entries_returned: Some(2),
            offset,
            base_point: BasePoint::Beginning,
        }),
        restriction: Some(Restriction::equals(Path::ExtendedFieldUri(key_path()), key)),
        parent_folder_ids: tasks_of(ANN),
    };
    let page1 = ews
        .call(Some(ANN), &find(0, "PROJ:EVEN"))
        .await
        .expect("no fault");
    let root = page1.response_messages[0]
        .payload
        .root_folder
        .clone()
        .expect("root");
    assert_eq!(root.total_items_in_view, Some(3));
    assert_eq!(root.includes_last_item_in_range, Some(false));
    assert_eq!(root.indexed_paging_offset, Some(2));
    assert_eq!(root.items.as_ref().map(|i| i.0.len()), Some(2));
    assert!(
        root.items
            .expect("items")
            .tasks()
            .all(|t| t.extended_value(&key_path()) == Some("proj:even"))
    );
    let page2 = ews
        .call(Some(ANN), &find(2, "proj:even"))
        .await
        .expect("no fault");
    let root = page2.response_messages[0]
        .payload
        .root_folder
        .clone()
        .expect("root");
    assert_eq!(root.includes_last_item_in_range, Some(true));
    assert_eq!(root.items.map(|i| i.0.len()), Some(1));
    let none = ews
        .call(Some(ANN), &find(0, "proj:none"))
        .await
        .expect("no fault");
    assert_eq!(
        none.response_messages[0]
            .payload
            .root_folder
            .as_ref()
            .and_then(|r| r.total_items_in_view),
        Some(0)
    );
    h.shutdown().await;
}

fn sync_req(state: Option<SyncState>, ignore: Vec<ItemId>, max: i32) -> SyncFolderItems {
    SyncFolderItems {
        item_shape: ItemShape::new(BaseShape::IdOnly, vec![]),
        sync_folder_id: tasks_of(ANN),
        sync_state: state,
        ignore: (!ignore.is_empty()).then(|| ignore.into()),
        max_changes_returned: max,
    }
}

#[tokio::test]
async fn sync_folder_items_pages_ignores_and_refuses_bad_states() {
    // Sends MaxChangesReturned out of range on purpose: not recorded.
    let h = start(unrecorded_config()).await;
    let ews = Ews::new(&h);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            ews.create(ANN, tagged(&format!("t{i}"), &format!("p:{i}")))
                .await,
        );
    }
    let r = ews
        .call(Some(ANN), &sync_req(None, vec![], 3))
        .await
        .expect("no fault");
    let p = &r.response_messages[0].payload;
    assert_eq!(p.includes_last_item_in_range, Some(false));
    assert_eq!(p.changes.as_ref().map(|c| c.0.len()), Some(3));
    let r = ews
        .call(Some(ANN), &sync_req(p.sync_state.clone(), vec![], 3))
        .await
        .expect("no fault");
    let p = r.response_messages[0].payload.clone();
    assert_eq!(p.includes_last_item_in_range, Some(true));
    assert!(
        p.changes
            .as_ref()
            .expect("changes")
            .0
            .iter()
            .all(|c| matches!(c, SyncChange::Create(_)))
    );
    // Changes since: an update, a delete, and an ignored update.
    ews.update(
        ANN,
        ItemId::new(ids[0].id.0.clone(), None),
        ConflictResolution::AlwaysOverwrite,
        vec![set_subject("x")],
    )
    .await;
    ews.update(
        ANN,
        ItemId::new(ids[1].id.0.clone(), None),
        ConflictResolution::AlwaysOverwrite,
        vec![set_subject("y")],
    )
    .await;
    ews.call(
        Some(ANN),
        &DeleteItem {
            delete_type: DeleteType::HardDelete,
            affected_task_occurrences: Some(AffectedTaskOccurrences::AllOccurrences),
            item_ids: vec![ids[2].clone()].into(),
        },
    )
    .await
    .expect("no fault");
    let r = ews
        .call(
            Some(ANN),
            &sync_req(p.sync_state.clone(), vec![ids[1].clone()], 512),
        )
        .await
        .expect("no fault");
    let changes = r.response_messages[0]
        .payload
        .changes
        .clone()
        .expect("changes")
        .0;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        matches!(&changes[0], SyncChange::Update(i) if i.fields.item_id.as_ref().map(|x| &x.id) == Some(&ids[0].id))
    );
    assert!(matches!(&changes[1], SyncChange::Delete(i) if i.id == ids[2].id));
    // Invalid state: per-message error. Out-of-range page size: schema fault.
    let r = ews
        .call(
            Some(ANN),
            &sync_req(Some(SyncState::from("H4sIAAAAAAAEAO29B2AcSZ")), vec![], 10),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorInvalidSyncStateData
    );
    for bad in [0, 513] {
        let f = ews
            .call(Some(ANN), &sync_req(None, vec![], bad))
            .await
            .expect_err("schema fault");
        assert_eq!(f.response_code, Some(ResponseCode::ErrorSchemaValidation));
    }
    // A state of Ann's folder is not valid for Bob's.
    let mut other = sync_req(p.sync_state.clone(), vec![], 10);
    other.sync_folder_id = tasks_of(BOB);
    let r = ews.call(Some(BOB), &other).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorInvalidSyncStateData
    );
    h.shutdown().await;
}

#[tokio::test]
async fn impersonation_and_access_rules() {
    let mut c = config();
    c.auth = AuthMode::Basic;
    let h = start(c).await;
    let ann = Ews::login(&h, ANN, "ann-pw");
    let svc = Ews::login(&h, SVC, "svc-pw");
    // The owner acts on their own mailbox without impersonation.
    let gf = |m: &str| GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: tasks_of(m),
    };
    let r = ann.call(None, &gf(ANN)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    // ... but not on another mailbox, and may not impersonate.
    let r = ann.call(None, &gf(BOB)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorAccessDenied
    );
    let f = ann.call(Some(BOB), &gf(BOB)).await.expect_err("fault");
    assert_eq!(
        f.response_code.as_ref().map(|c| c.as_str()),
        Some("ErrorImpersonateUserDenied")
    );
    // The service account impersonates anyone, but only acts on the impersonated mailbox.
    let r = svc.call(Some(BOB), &gf(BOB)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    let r = svc.call(Some(BOB), &gf(ANN)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorAccessDenied
    );
    let r = svc.call(None, &gf(ANN)).await.expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorAccessDenied
    );
    let f = svc
        .call(Some("nobody@example.com"), &gf(ANN))
        .await
        .expect_err("fault");
    assert_eq!(f.response_code, Some(ResponseCode::ErrorNonExistentMailbox));
    // An item of Ann's is out of Bob's reach.
    let id = svc.create(ANN, tagged("secret", "p:1")).await;
    let bob = Ews::login(&h, BOB, "bob-pw");
    let msgs = bob
        .call(
            None,
            &GetItem {
                item_shape: ItemShape::new(BaseShape::IdOnly, vec![]),
                item_ids: vec![id].into(),
            },
        )
        .await
        .expect("no fault");
    assert_eq!(
        msgs.response_messages[0].code(),
        ResponseCode::ErrorAccessDenied
    );
    // Wrong password or none: 401 with a challenge.
    for who in [Ews::login(&h, ANN, "wrong"), Ews::new(&h)] {
        let resp = who
            .raw(ops::encode_request(&RequestHeader::default(), &gf(ANN)))
            .await;
        assert_eq!(resp.status().as_u16(), 401);
        assert!(resp.headers().get("www-authenticate").is_some());
    }
    h.shutdown().await;
}

/// A push subscriber: records every SendNotification and answers as scripted.
struct Subscriber {
    url: String,
    rx: mpsc::UnboundedReceiver<Notification>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Ok,
    Unsubscribe,
    Fail,
}

impl Subscriber {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/ews/notify", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let default = Arc::new(Mutex::new(Reply::Ok));
        let (s, d) = (script.clone(), default.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, s, d) = (tx.clone(), s.clone(), d.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (tx, s, d) = (tx.clone(), s.clone(), d.clone());
                            async move {
                                let body =
                                    req.into_body().collect().await.expect("body").to_bytes();
                                let (_, call) =
                                    ops::decode_request::<SendNotification>(&body, 1 << 24)
                                        .expect("SendNotification decodes");
                                let reply =
                                    s.lock().unwrap().pop_front().unwrap_or(*d.lock().unwrap());
                                let status = match reply {
                                    Reply::Ok => SubscriptionStatus::Ok,
                                    Reply::Unsubscribe => SubscriptionStatus::Unsubscribe,
                                    Reply::Fail => {
                                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                        for n in call.notifications() {
                                            let _ = tx.send(n.clone());
                                        }
                                        return Ok::<_, std::convert::Infallible>(r);
                                    }
                                };
                                for n in call.notifications() {
                                    let _ = tx.send(n.clone());
                                }
                                let out = ops::encode_response::<SendNotification>(
                                    None,
                                    &SendNotificationResult {
                                        subscription_status: status,
                                    },
                                );
                                Ok(hyper::Response::new(Full::new(Bytes::from(out))))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Subscriber {
            url,
            rx,
            script,
            default,
        }
    }

    async fn next(&mut self) -> Notification {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a notification within 10 s")
            .expect("subscriber alive")
    }

    /// The next notification that carries something other than a StatusEvent.
    async fn next_change(&mut self) -> Notification {
        loop {
            let n = self.next().await;
            if n.events
                .iter()
                .any(|e| !matches!(e, Event::StatusEvent { .. }))
            {
                return n;
            }
        }
    }
}

fn push_req(url: &str, watermark: Option<Watermark>, freq: i32) -> Subscribe {
    Subscribe::Push(PushSubscriptionRequest {
        folder_ids: Some(tasks_of(ANN)),
        event_types: EventTypes {
            event_types: vec![
                EventType::CreatedEvent,
                EventType::ModifiedEvent,
                EventType::DeletedEvent,
                EventType::MovedEvent,
            ],
        },
        watermark,
        status_frequency: freq,
        url: url.into(),
    })
}

async fn admin<T: serde::de::DeserializeOwned>(
    h: &SimHandle,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> T {
    let url = format!("{}{}", h.admin_url, path);
    let client = reqwest::Client::new();
    let req = match method {
        "GET" => client.get(&url),
        "POST" => client.post(&url),
        "PATCH" => client.patch(&url),
        "PUT" => client.put(&url),
        "DELETE" => client.delete(&url),
        other => panic!("method {other}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.expect("admin answers");
    assert!(
        resp.status().is_success(),
        "admin {method} {path}: {}",
        resp.status()
    );
    resp.json().await.expect("JSON")
}

#[tokio::test]
async fn push_delivers_events_with_watermarks_status_and_ends_on_unsubscribe() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let mut sub = Subscriber::start().await;
    let r = ews
        .call(Some(ANN), &push_req(&sub.url, None, 1))
        .await
        .expect("no fault");
    let p = r.response_messages[0].payload.clone();
    let (sid, wm0) = (p.subscription_id.expect("id"), p.watermark.expect("wm"));
    let id = ews.create(ANN, tagged("pushed", "p:1")).await;
    let n = sub.next_change().await;
    assert_eq!(n.subscription_id, sid);
    assert_eq!(n.previous_watermark.as_ref(), Some(&wm0));
    let Event::CreatedEvent(created) = &n.events[0] else {
        panic!("created event expected: {n:?}")
    };
    assert_eq!(created.item_id().map(|i| &i.id), Some(&id.id));
    let wm1 = created.watermark.clone().expect("event watermark");
    // A change made "in Outlook" (admin API) raises a ModifiedEvent after the last watermark.
    let patched: serde_json::Value = admin(
        &h,
        "PATCH",
        &format!("mailboxes/{ANN}/tasks/{}", id.id),
        Some(serde_json::json!([["PercentComplete", 60]])),
    )
    .await;
    assert_eq!(patched["Status"], "InProgress");
    let n = sub.next_change().await;
    assert_eq!(n.previous_watermark.as_ref(), Some(&wm1));
    assert!(
        matches!(&n.events[0], Event::ModifiedEvent(o) if o.item_id().map(|i| &i.id) == Some(&id.id))
    );
    // With nothing happening, a StatusEvent comes every StatusFrequency (1 min x 0.001).
    let n = sub.next().await;
    assert!(matches!(n.events[..], [Event::StatusEvent { .. }]), "{n:?}");
    // Answering Unsubscribe ends the subscription.
    *sub.default.lock().unwrap() = Reply::Unsubscribe;
    ews.create(ANN, tagged("last", "p:2")).await;
    let _ = sub.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let subs: Vec<serde_json::Value> = admin(&h, "GET", "subscriptions", None).await;
    assert!(subs.is_empty(), "{subs:?}");
    if let Ok(n) = sub.rx.try_recv() {
        panic!("nothing after Unsubscribe, got {n:?}");
    }
    // Unsubscribe (the operation) is for pull subscriptions only.
    let r = ews
        .call(
            Some(ANN),
            &Unsubscribe {
                subscription_id: sid,
            },
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorSubscriptionNotFound
    );
    h.shutdown().await;
}

#[tokio::test]
async fn push_retries_on_exchange_schedule_then_gives_up() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let mut sub = Subscriber::start().await;
    sub.script
        .lock()
        .unwrap()
        .extend([Reply::Fail, Reply::Fail]);
    ews.call(Some(ANN), &push_req(&sub.url, None, 1))
        .await
        .expect("no fault");
    ews.create(ANN, tagged("retried", "p:1")).await;
    // The same notification three times: two failures, then delivered.
    let a = sub.next_change().await;
    let b = sub.next_change().await;
    let c = sub.next_change().await;
    assert_eq!(a, b);
    assert_eq!(b, c);
    let counters = h.counters();
    assert_eq!(counters["push_failed"], 2);
    // A subscriber that never answers: retries at 30 and 60 (x0.001) fit in StatusFrequency
    // (60); the one at 120 does not, so the subscription ends after three tries.
    *sub.default.lock().unwrap() = Reply::Fail;
    ews.create(ANN, tagged("lost", "p:2")).await;
    for _ in 0..3 {
        sub.next_change().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(sub.rx.try_recv().is_err(), "no fourth try");
    let subs: Vec<serde_json::Value> = admin(&h, "GET", "subscriptions", None).await;
    assert!(subs.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn push_resumes_from_a_subscribe_watermark() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    ews.create(ANN, tagged("before", "p:1")).await;
    let boxes: Vec<serde_json::Value> = admin(&h, "GET", "mailboxes", None).await;
    let wm = boxes.iter().find(|b| b["smtp"] == ANN).expect("ann")["watermark"]
        .as_str()
        .expect("wm")
        .to_string();
    let after = ews.create(ANN, tagged("after", "p:2")).await;
    let mut sub = Subscriber::start().await;
    let r = ews
        .call(
            Some(ANN),
            &push_req(&sub.url, Some(Watermark::from(wm.as_str())), 30),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0]
            .payload
            .watermark
            .as_ref()
            .map(|w| w.as_str()),
        Some(wm.as_str())
    );
    let n = sub.next_change().await;
    assert_eq!(
        n.previous_watermark.as_ref().map(|w| w.as_str()),
        Some(wm.as_str())
    );
    assert_eq!(n.events.len(), 1, "only what happened after the watermark");
    assert!(
        matches!(&n.events[0], Event::CreatedEvent(o) if o.item_id().map(|i| &i.id) == Some(&after.id))
    );
    let r = ews
        .call(
            Some(ANN),
            &push_req(&sub.url, Some(Watermark::from("bogus")), 30),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorInvalidWatermark
    );
    h.shutdown().await;
}

#[tokio::test]
async fn pull_subscription_get_events_and_unsubscribe() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let r = ews
        .call(
            Some(ANN),
            &Subscribe::Pull(PullSubscriptionRequest {
                folder_ids: Some(tasks_of(ANN)),
                event_types: EventTypes {
                    event_types: vec![EventType::CreatedEvent, EventType::ModifiedEvent],
                },
                watermark: None,
                timeout: 10,
            }),
        )
        .await
        .expect("no fault");
    let p = r.response_messages[0].payload.clone();
    let (sid, wm) = (p.subscription_id.expect("id"), p.watermark.expect("wm"));
    let get = |wm: Watermark| GetEvents {
        subscription_id: sid.clone(),
        watermark: wm,
    };
    let r = ews
        .call(Some(ANN), &get(wm.clone()))
        .await
        .expect("no fault");
    let n = r.response_messages[0]
        .payload
        .notification
        .clone()
        .expect("n");
    assert!(matches!(n.events[..], [Event::StatusEvent { .. }]));
    let id = ews.create(ANN, tagged("pulled", "p:1")).await;
    let r = ews
        .call(Some(ANN), &get(wm.clone()))
        .await
        .expect("no fault");
    let n = r.response_messages[0]
        .payload
        .notification
        .clone()
        .expect("n");
    assert_eq!(n.previous_watermark, Some(wm));
    assert!(
        matches!(&n.events[0], Event::CreatedEvent(o) if o.item_id().map(|i| &i.id) == Some(&id.id))
    );
    // Bob may not read Ann's subscription.
    let r = ews
        .call(
            Some(BOB),
            &get(n.events[0].watermark().cloned().expect("wm")),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code().as_str(),
        "ErrorSubscriptionAccessDenied"
    );
    let r = ews
        .call(
            Some(ANN),
            &Unsubscribe {
                subscription_id: sid.clone(),
            },
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    let r = ews
        .call(
            Some(ANN),
            &get(n.events[0].watermark().cloned().expect("wm")),
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].code(),
        ResponseCode::ErrorSubscriptionNotFound
    );
    h.shutdown().await;
}

fn gf_body() -> Vec<u8> {
    ops::encode_request(
        &RequestHeader {
            impersonation: Some(Impersonation::PrimarySmtpAddress(ANN.into())),
            ..RequestHeader::default()
        },
        &GetFolder {
            folder_shape: FolderShape {
                base_shape: BaseShape::IdOnly,
                additional_properties: None,
            },
            folder_ids: tasks_of(ANN),
        },
    )
}

#[tokio::test]
async fn throttling_comes_in_all_three_wire_shapes() {
    for shape in [
        ThrottleShape::Fault,
        ThrottleShape::Message,
        ThrottleShape::Http503,
    ] {
        let mut c = config();
        c.faults.throttle = 1.0;
        c.faults.throttle_shape = Some(shape);
        c.faults.back_off = Duration::from_millis(1500);
        let h = start(c).await;
        let ews = Ews::new(&h);
        let resp = ews.raw(gf_body()).await;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let bytes = resp.bytes().await.expect("body");
        match shape {
            ThrottleShape::Fault => {
                assert_eq!(status, 500);
                let env = ops::decode_response::<GetFolder>(&bytes, 1 << 20).expect("decodes");
                let Body::Fault(f) = env.body else {
                    panic!("fault expected")
                };
                assert!(f.is_server_busy());
                assert_eq!(f.back_off(), Some(Duration::from_millis(1500)));
            }
            ThrottleShape::Message => {
                assert_eq!(status, 200);
                let env = ops::decode_response::<GetFolder>(&bytes, 1 << 20).expect("decodes");
                let Body::Content(c) = env.body else {
                    panic!("content expected")
                };
                assert_eq!(
                    c.response_messages[0].back_off(),
                    Some(Duration::from_millis(1500))
                );
            }
            ThrottleShape::Http503 => {
                assert_eq!(status, 503);
                assert_eq!(retry_after.as_deref(), Some("2"));
                assert!(bytes.is_empty());
            }
        }
        assert_eq!(h.counters()["throttled"], 1);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn requests_inside_an_announced_back_off_window_are_counted_per_caller() {
    for shape in [
        ThrottleShape::Fault,
        ThrottleShape::Message,
        ThrottleShape::Http503,
    ] {
        let mut c = config();
        c.auth = AuthMode::Basic;
        c.faults.throttle = 1.0;
        c.faults.throttle_shape = Some(shape);
        // Far longer than the test: the second request is inside the window for sure.
        c.faults.back_off = Duration::from_secs(600);
        let h = start(c).await;
        let svc = Ews::login(&h, "svc@example.com", "svc-pw");
        let bob = Ews::login(&h, "bob@example.com", "bob-pw");
        svc.raw(gf_body()).await;
        let after_one = h.counters();
        assert_eq!(after_one["inside_back_off"], 0, "{shape:?}: {after_one}");
        assert_eq!(after_one["back_off"]["svc@example.com"]["announced"], 1);
        // Another caller was told nothing: its request is not inside a window.
        bob.raw(gf_body()).await;
        svc.raw(gf_body()).await;
        let counters = h.counters();
        assert_eq!(counters["inside_back_off"], 1, "{shape:?}: {counters}");
        assert_eq!(
            counters["back_off"]["svc@example.com"]["inside_window"], 1,
            "{counters}"
        );
        assert_eq!(
            counters["back_off"]["bob@example.com"]["inside_window"], 0,
            "{counters}"
        );
        h.shutdown().await;
    }
}

#[tokio::test]
async fn max_concurrency_per_mailbox_answers_server_busy() {
    let mut c = config();
    c.faults.max_concurrency = Some(1);
    c.faults.latency = Duration::from_millis(300);
    let h = start(c).await;
    let (a, b) = (Ews::new(&h), Ews::new(&h));
    let (ra, rb) = tokio::join!(a.raw(gf_body()), b.raw(gf_body()));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 500]);
    let counters = h.counters();
    assert_eq!(counters["throttled"], 1);
    assert!(counters["max_in_flight"].as_i64() >= Some(2));
    h.shutdown().await;
}

#[tokio::test]
async fn fail_injection_gives_empty_500_or_a_dropped_connection() {
    let mut c = config();
    c.faults.fail = 1.0;
    let h = start(c).await;
    let client = reqwest::Client::new();
    let (mut empty_500, mut dropped) = (0, 0);
    for _ in 0..20 {
        match client.post(&h.url).body(gf_body()).send().await {
            Ok(r) => {
                assert_eq!(r.status().as_u16(), 500);
                assert!(r.bytes().await.expect("body").is_empty());
                empty_500 += 1;
            }
            Err(_) => dropped += 1,
        }
    }
    assert!(
        empty_500 > 0 && dropped > 0,
        "both shapes in 20 tries: {empty_500} / {dropped}"
    );
    assert_eq!(h.counters()["failed"], 20);
    h.shutdown().await;
}

/// The simulator's operations are the generated surface's: every operation of `wsdl/` (as
/// generated into `OPERATIONS`) reaches a handler (an empty request is refused by that
/// operation's schema check), so an operation added to the WSDL fails here until the simulator
/// answers it.
#[tokio::test]
async fn every_operation_of_the_wsdl_subset_has_a_handler() {
    // Sends invalid requests on purpose: not recorded.
    let h = start(unrecorded_config()).await;
    let ews = Ews::new(&h);
    for op in taskbridge::ews::generated::OPERATIONS {
        let envelope = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Body><m:{}/></soap:Body></soap:Envelope>"#,
            op.request
        );
        let resp = tokio::time::timeout(Duration::from_secs(10), ews.raw(envelope.into_bytes()))
            .await
            .unwrap_or_else(|_| panic!("{} was not answered", op.name));
        let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
            .await
            .unwrap_or_else(|_| panic!("{}'s answer did not end", op.name))
            .expect("text");
        assert!(
            !text.contains("not handled") && !text.contains("does not implement"),
            "{}: {text}",
            op.name
        );
        assert!(
            text.contains("ErrorSchemaValidation") || text.contains("ResponseCode"),
            "{}: {text}",
            op.name
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_operations_and_out_of_order_requests_get_faults() {
    // Sends an out-of-order request on purpose: not recorded.
    let h = start(unrecorded_config()).await;
    let ews = Ews::new(&h);
    let envelope = |body: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Body>{body}</soap:Body></soap:Envelope>"#
        )
    };
    let resp = ews.raw(envelope(r#"<m:ResolveNames ReturnFullContactData="true"><m:UnresolvedEntry>ann</m:UnresolvedEntry></m:ResolveNames>"#).into_bytes()).await;
    assert_eq!(resp.status().as_u16(), 500);
    let text = resp.text().await.expect("text");
    assert!(
        text.contains("ErrorInvalidRequest") && text.contains("ResolveNames"),
        "{text}"
    );
    let resp = ews.raw(envelope(r#"<m:GetItem><m:ItemIds><t:ItemId Id="x"/></m:ItemIds><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape></m:GetItem>"#).into_bytes()).await;
    assert_eq!(resp.status().as_u16(), 500);
    assert!(
        resp.text()
            .await
            .expect("text")
            .contains("ErrorSchemaValidation")
    );
    // The server still answers.
    let r = ews
        .call(
            Some(ANN),
            &GetFolder {
                folder_shape: FolderShape {
                    base_shape: BaseShape::Default,
                    additional_properties: None,
                },
                folder_ids: tasks_of(ANN),
            },
        )
        .await
        .expect("no fault");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    h.shutdown().await;
}

#[tokio::test]
async fn spontaneous_change_keys_move_keys_without_field_changes() {
    let mut c = config();
    c.faults.spontaneous_changekey = 1.0;
    let h = start(c).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("drifts", "p:1")).await;
    let t = ews.get_task(ANN, &id).await;
    assert_ne!(
        t.item_id.as_ref().and_then(|i| i.change_key.clone()),
        id.change_key
    );
    assert_eq!(t.subject.as_deref(), Some("drifts"));
    // A stale key from a spontaneous change is refused, as Exchange refuses it.
    let m = ews
        .update(
            ANN,
            id.clone(),
            ConflictResolution::AutoResolve,
            vec![set_subject("ok")],
        )
        .await;
    assert_eq!(m.code(), ResponseCode::ErrorIrresolvableConflict);
    h.shutdown().await;
}

#[tokio::test]
async fn the_merge_model_merges_a_stale_key_when_nothing_it_sets_changed() {
    let mut c = config();
    c.conflict_model = sim::ConflictModel::Merge;
    c.faults.spontaneous_changekey = 1.0;
    let h = start(c).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("drifts", "p:1")).await;
    // The key moved by itself: the update is merged without a conflict.
    let m = ews
        .update(
            ANN,
            id.clone(),
            ConflictResolution::AutoResolve,
            vec![set_subject("ok")],
        )
        .await;
    assert_eq!(m.response_class, ResponseClass::Success);
    assert_eq!(m.payload.conflict_results.map(|c| c.count), Some(0));
    // The same property changed since the key: still a conflict under the merge model.
    let m = ews
        .update(
            ANN,
            id,
            ConflictResolution::NeverOverwrite,
            vec![set_subject("again")],
        )
        .await;
    assert_eq!(m.code(), ResponseCode::ErrorIrresolvableConflict);
    assert_eq!(m.payload.conflict_results.map(|c| c.count), Some(1));
    h.shutdown().await;
}

/// Runs `wsdl/validate.sh -m both` over `files` where the schema tools are installed; checks
/// only that they are well-formed XML where they are not.
fn validate_subset(files: &[std::path::PathBuf]) {
    external::assert_well_formed(files);
    if !external::schema_tools("recorded simulator messages against wsdl/") {
        return;
    }
    if let Err(report) = external::validate(&external::subset_validator(), files) {
        panic!("recorded messages fail the wsdl/ subset:\n{report}");
    }
}

#[tokio::test]
async fn record_writes_request_response_pairs_that_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = unrecorded_config();
    c.record = Some(dir.path().to_path_buf());
    let h = start(c).await;
    let ews = Ews::new(&h);
    let mut sub = Subscriber::start().await;
    ews.call(Some(ANN), &push_req(&sub.url, None, 1))
        .await
        .expect("no fault");
    let id = ews.create(ANN, tagged("recorded", "p:1")).await;
    sub.next_change().await;
    let t = ews.get_task(ANN, &id).await;
    ews.update(
        ANN,
        t.item_id.clone().expect("id"),
        ConflictResolution::AutoResolve,
        vec![set_percent(100.0)],
    )
    .await;
    ews.update(
        ANN,
        id.clone(),
        ConflictResolution::NeverOverwrite,
        vec![set_subject("stale")],
    )
    .await;
    ews.call(Some(ANN), &sync_req(None, vec![], 10))
        .await
        .expect("no fault");
    ews.call(
        Some(ANN),
        &GetItem {
            item_shape: ItemShape::new(BaseShape::Default, vec![]),
            item_ids: vec![ItemId::new("bad", None)].into(),
        },
    )
    .await
    .expect("no fault");
    sub.next_change().await;
    h.shutdown().await;
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "0001-Subscribe.request.xml",
        "0001-Subscribe.response.xml",
        "0002-CreateItem.response.xml",
        "index.jsonl",
        "session.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("-SendNotification.request.xml"))
    );
    // Each response file is exactly what was sent: it decodes as its operation's response.
    let create = std::fs::read(dir.path().join("0002-CreateItem.response.xml")).expect("file");
    assert!(ops::decode_response::<CreateItem>(&create, 1 << 20).is_ok());
    let index = std::fs::read_to_string(dir.path().join("index.jsonl")).expect("index");
    assert!(index.lines().count() >= 8);
    // Every response the simulator wrote, and every notification it posted.
    let mut files: Vec<std::path::PathBuf> = names
        .iter()
        .filter(|n| {
            (n.ends_with(".response.xml") && !n.contains("SendNotification"))
                || n.ends_with("-SendNotification.request.xml")
        })
        .map(|n| dir.path().join(n))
        .collect();
    files.sort();
    validate_subset(&files);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config();
    c.state = Some(dir.path().join("sim.sqlite"));
    let h = start(c.clone()).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("kept", "p:1")).await;
    let t = ews.get_task(ANN, &id).await;
    ews.update(
        ANN,
        t.item_id.clone().expect("id"),
        ConflictResolution::AutoResolve,
        vec![set_percent(40.0)],
    )
    .await;
    let before = ews.get_task(ANN, &id).await;
    let r = ews
        .call(Some(ANN), &sync_req(None, vec![], 512))
        .await
        .expect("no fault");
    let state = r.response_messages[0].payload.sync_state.clone();
    h.shutdown().await;

    let h = start(c).await;
    let ews = Ews::new(&h);
    let after = ews.get_task(ANN, &id).await;
    assert_eq!(before, after, "the same item, the same change key");
    let r = ews
        .call(Some(ANN), &sync_req(state, vec![], 512))
        .await
        .expect("no fault");
    let p = &r.response_messages[0].payload;
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success,
        "the old sync state is valid"
    );
    assert_eq!(p.changes.as_ref().map(|c| c.0.len()), Some(0));
    let id2 = ews.create(ANN, tagged("new", "p:2")).await;
    assert_ne!(id2.id, id.id, "item numbers are not reused");
    h.shutdown().await;
}

#[tokio::test]
async fn state_survives_sigkill_of_the_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("sim.sqlite");
    let spawn = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--user",
                "ann@example.com:pw",
                "--state",
            ])
            .arg(&state)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("taskbridge sim starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        (child, line.trim().to_string())
    };
    let (mut child, url) = spawn();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/EWS/Exchange.asmx"),
        "{url}"
    );
    let ews = Ews::with(&url, Auth::None, None);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(ews.create(ANN, tagged(&format!("t{i}"), "p")).await);
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (mut child, url) = spawn();
    let ews = Ews::with(&url, Auth::None, None);
    let msgs = ews
        .get(ANN, ids.clone(), ItemShape::new(BaseShape::IdOnly, vec![]))
        .await;
    for (m, id) in msgs.iter().zip(&ids) {
        assert_eq!(
            m.response_class,
            ResponseClass::Success,
            "every acknowledged create survived"
        );
        assert_eq!(item_of(&m.payload).item_id.as_ref(), Some(id));
    }
    child.kill().expect("kill");
    let _ = child.wait();
}

#[tokio::test]
async fn admin_lists_mailboxes_tasks_and_counters() {
    let h = start(config()).await;
    let ews = Ews::new(&h);
    let id = ews.create(ANN, tagged("listed", "p:1")).await;
    let boxes: Vec<serde_json::Value> = admin(&h, "GET", "mailboxes", None).await;
    assert_eq!(boxes.len(), 2, "service accounts have no mailbox");
    let tasks: Vec<serde_json::Value> =
        admin(&h, "GET", &format!("mailboxes/{ANN}/tasks"), None).await;
    assert_eq!(tasks[0]["Subject"], "listed");
    assert_eq!(tasks[0]["ExtendedProperties"][0]["Value"], "p:1");
    let created: serde_json::Value = admin(
        &h,
        "POST",
        &format!("mailboxes/{ANN}/tasks"),
        Some(serde_json::json!({"Subject": "from outlook", "Status": "Completed"})),
    )
    .await;
    assert_eq!(created["PercentComplete"], 100.0);
    let _: serde_json::Value = admin(
        &h,
        "DELETE",
        &format!("mailboxes/{ANN}/tasks/{}", id.id),
        None,
    )
    .await;
    let tasks: Vec<serde_json::Value> =
        admin(&h, "GET", &format!("mailboxes/{ANN}/tasks"), None).await;
    assert_eq!(tasks.len(), 1);
    let counters: serde_json::Value = admin(&h, "GET", "counters", None).await;
    assert_eq!(counters["operations"]["CreateItem"], 1);
    let reset: serde_json::Value = admin(&h, "POST", "counters/reset", None).await;
    assert_eq!(reset["requests"], 0);
    h.shutdown().await;
}

#[test]
fn soap_action_names_the_operation() {
    assert!(soap_action("GetItem").ends_with("/GetItem\""));
}

#[tokio::test]
async fn ntlm_over_tls_authenticates_the_connection_once() {
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut c = config();
    c.auth = AuthMode::Ntlm;
    c.tls = Some(sim::TlsFiles {
        cert: tls.join("server.pem"),
        key: tls.join("server.key"),
    });
    let h = start(c).await;
    assert!(h.url.starts_with("https://"), "{}", h.url);
    let client = |user: &str, password: &str| {
        let mut cfg = EwsClientConfig::new(
            h.url.as_str(),
            Auth::Ntlm {
                user: user.into(),
                password: Secret::new(password),
            },
        );
        cfg.tls.extra_ca_file = Some(tls.join("ca.pem"));
        cfg.retry.max_attempts = 1;
        EwsClient::new(cfg).expect("client")
    };
    let svc = client("EXAMPLE\\svc", "svc-pw");
    let gf = GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: tasks_of(BOB),
    };
    for _ in 0..3 {
        let r = svc
            .send(CallContext::for_mailbox(BOB), &gf)
            .await
            .expect("NTLM and impersonation work");
        assert_eq!(
            r.response_messages[0].response_class,
            ResponseClass::Success
        );
    }
    assert_eq!(
        svc.ntlm_handshakes(),
        1,
        "one handshake authenticates the connection"
    );
    // Ann over NTLM may not impersonate; a wrong password is refused.
    let ann = client("ann@example.com", "ann-pw");
    match ann.send(CallContext::for_mailbox(BOB), &gf).await {
        Err(taskbridge::ews::Error::Fault(f)) => {
            assert_eq!(
                f.response_code.as_ref().map(|c| c.as_str()),
                Some("ErrorImpersonateUserDenied")
            )
        }
        other => panic!("impersonation denied expected, got {other:?}"),
    }
    let wrong = client("ann@example.com", "nope");
    assert!(matches!(
        wrong.send(CallContext::default(), &gf).await,
        Err(taskbridge::ews::Error::Unauthorized { .. })
    ));
    h.shutdown().await;
}

#[tokio::test]
async fn the_client_rides_out_seeded_throttling() {
    let mut c = config();
    // HTTP 503 carries whole seconds in Retry-After, so keep the rate low.
    c.faults.throttle = 0.3;
    c.faults.back_off = Duration::from_millis(20);
    c.faults.seed = 7;
    let h = start(c).await;
    let mut cfg = EwsClientConfig::new(h.url.as_str(), Auth::None);
    cfg.retry.max_attempts = 30;
    cfg.retry.base_delay = Duration::from_millis(5);
    let client = EwsClient::new(cfg).expect("client");
    let mut created = 0;
    for i in 0..10 {
        let r = client
            .send(
                CallContext::for_mailbox(ANN),
                &CreateItem {
                    message_disposition: Some(MessageDisposition::SaveOnly),
                    saved_item_folder_id: None,
                    items: Items(vec![Item::task(tagged(&format!("t{i}"), "p"))]),
                },
            )
            .await
            .expect("retried through throttling");
        // A per-message ErrorServerBusy comes back as data: the caller retries that item.
        if r.response_messages[0].response_class == ResponseClass::Success {
            created += 1;
        }
    }
    let counters = h.counters();
    assert!(counters["throttled"].as_u64() > Some(0));
    let tasks: Vec<serde_json::Value> =
        admin(&h, "GET", &format!("mailboxes/{ANN}/tasks"), None).await;
    assert_eq!(tasks.len(), created, "no duplicate from a retried request");
    h.shutdown().await;
}

/// A simulator over TLS with NTLM and the given Extended Protection setting.
async fn start_extended_protection(policy: sim::ExtendedProtection) -> SimHandle {
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut c = config();
    c.auth = AuthMode::Ntlm;
    c.extended_protection = policy;
    c.tls = Some(sim::TlsFiles {
        cert: tls.join("server.pem"),
        key: tls.join("server.key"),
    });
    start(c).await
}

/// taskbridge's own client over NTLM, trusting the test CA.
fn ntlm_client(url: &str, user: &str, password: &str) -> EwsClient {
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut cfg = EwsClientConfig::new(
        url,
        Auth::Ntlm {
            user: user.into(),
            password: Secret::new(password),
        },
    );
    cfg.tls.extra_ca_file = Some(tls.join("ca.pem"));
    cfg.retry.max_attempts = 1;
    EwsClient::new(cfg).expect("client")
}

/// An NTLM client as older libraries are: NTLMv2 without channel bindings or MIC (the
/// `ntlmclient` crate's own AUTHENTICATE), over one TLS connection that trusts the test CA.
/// Returns the status of the AUTHENTICATE request.
async fn unbound_ntlm_status(url: &str, user: &str, password: &str) -> u16 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let tls_dir = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(tls_dir.join("ca.pem")).expect("ca");
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = reqwest::Url::parse(url).expect("url");
    let host = url.host_str().expect("host").to_string();
    let port = url.port().expect("port");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(host.clone()).expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1");
    tokio::spawn(conn);
    let body = ops::encode_request(
        &RequestHeader::default(),
        &GetFolder {
            folder_shape: FolderShape {
                base_shape: BaseShape::IdOnly,
                additional_properties: None,
            },
            folder_ids: tasks_of(ANN),
        },
    );
    let body = Bytes::from(body);
    let request = |auth: String, body: Bytes| {
        http::Request::post(url.path())
            .header("host", format!("{host}:{port}"))
            .header("content-type", "text/xml; charset=utf-8")
            .header("authorization", auth)
            .body(Full::new(body))
            .expect("request")
    };
    let negotiate = ntlmclient::Message::Negotiate(ntlmclient::NegotiateMessage {
        flags: ntlmclient::Flags::NEGOTIATE_UNICODE
            | ntlmclient::Flags::REQUEST_TARGET
            | ntlmclient::Flags::NEGOTIATE_NTLM,
        supplied_domain: String::new(),
        supplied_workstation: "OLD".into(),
        os_version: Default::default(),
    })
    .to_bytes()
    .expect("negotiate");
    let first = sender
        .send_request(request(
            format!("NTLM {}", B64.encode(negotiate)),
            Bytes::new(),
        ))
        .await
        .expect("negotiate sent");
    assert_eq!(first.status(), 401);
    let challenge = first.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .strip_prefix("NTLM ")
        .map(|t| B64.decode(t).expect("base64"))
        .expect("a challenge");
    let _ = first.into_body().collect().await;
    let ntlmclient::Message::Challenge(c) =
        ntlmclient::Message::try_from(challenge.as_slice()).expect("challenge")
    else {
        panic!("not a challenge")
    };
    let info: Vec<u8> = c
        .target_information
        .iter()
        .flat_map(|e| e.to_bytes())
        .collect();
    let creds = ntlmclient::Credentials {
        username: user.into(),
        password: password.into(),
        domain: String::new(),
    };
    let response = ntlmclient::respond_challenge_ntlm_v2(
        c.challenge,
        &info,
        ntlmclient::get_ntlm_time(),
        &creds,
    );
    let authenticate = response
        .to_message(
            &creds,
            "OLD",
            ntlmclient::Flags::NEGOTIATE_UNICODE | ntlmclient::Flags::NEGOTIATE_NTLM,
        )
        .to_bytes()
        .expect("authenticate");
    let second = sender
        .send_request(request(format!("NTLM {}", B64.encode(authenticate)), body))
        .await
        .expect("authenticate sent");
    second.status().as_u16()
}

#[tokio::test]
async fn extended_protection_require_admits_taskbridge_and_refuses_a_client_without_bindings() {
    let h = start_extended_protection(sim::ExtendedProtection::Require).await;
    let gf = GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: tasks_of(ANN),
    };
    let ours = ntlm_client(&h.url, "ann@example.com", "ann-pw");
    let r = ours
        .send(CallContext::default(), &gf)
        .await
        .expect("channel bindings and MIC are accepted under require");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    assert_eq!(
        unbound_ntlm_status(&h.url, "ann@example.com", "ann-pw").await,
        401,
        "a right password without channel bindings is refused, as IIS refuses it"
    );
    let wrong = ntlm_client(&h.url, "ann@example.com", "nope");
    assert!(matches!(
        wrong.send(CallContext::default(), &gf).await,
        Err(taskbridge::ews::Error::Unauthorized { .. })
    ));
    h.shutdown().await;
}

#[tokio::test]
async fn extended_protection_allow_admits_clients_without_bindings() {
    let h = start_extended_protection(sim::ExtendedProtection::Allow).await;
    assert_eq!(
        unbound_ntlm_status(&h.url, "ann@example.com", "ann-pw").await,
        200
    );
    let ours = ntlm_client(&h.url, "ann@example.com", "ann-pw");
    let gf = GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: tasks_of(ANN),
    };
    ours.send(CallContext::default(), &gf)
        .await
        .expect("bindings that match are accepted under allow");
    h.shutdown().await;
}

/// A plain-HTTP server that answers every request with a redirect to `location`, as a front
/// door or an old Client Access server does; returns its address.
async fn redirect_server(location: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let location = location.clone();
                    async move {
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::FOUND;
                        r.headers_mut()
                            .insert("location", location.parse().expect("header"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Autodiscover as Ann (NTLM), trusting the test CA, with `step_secs` a step.
fn ntlm_autodiscover_settings(
    user: &str,
    password: &str,
    step_secs: u64,
) -> taskbridge::ews::autodiscover::AutodiscoverSettings {
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut settings = taskbridge::ews::autodiscover::AutodiscoverSettings::new(Auth::Ntlm {
        user: user.into(),
        password: Secret::new(password),
    });
    settings.tls.extra_ca_file = Some(tls.join("ca.pem"));
    settings.step_timeout = Duration::from_secs(step_secs);
    settings
}

#[tokio::test]
async fn autodiscover_follows_an_https_redirect_to_the_simulator_and_finds_its_ews_url() {
    use taskbridge::ews::autodiscover::discover;
    let h = start_extended_protection(sim::ExtendedProtection::Require).await;
    let sim_autodiscover = h
        .url
        .replace("/EWS/Exchange.asmx", "/autodiscover/autodiscover.xml");
    let front = redirect_server(sim_autodiscover.clone()).await;
    let plain_front =
        redirect_server("http://127.0.0.1:9/autodiscover/autodiscover.xml".into()).await;
    let mut settings = ntlm_autodiscover_settings("ann@example.com", "ann-pw", 5);
    settings.start_urls = vec![
        format!(
            "https://127.0.0.1:{}/autodiscover/autodiscover.xml",
            closed_port()
        ),
        format!("http://{plain_front}/autodiscover/autodiscover.xml"),
        format!("http://{front}/autodiscover/autodiscover.xml"),
    ];
    let found = discover("ann@example.com", &settings)
        .await
        .expect("the simulator answers");
    assert_eq!(found.ews_url, h.url, "{:#?}", found.attempts);
    let results: Vec<&str> = found.attempts.iter().map(|a| a.result.as_str()).collect();
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(results[0].contains("connect"), "{results:?}");
    assert!(
        results[1].contains("refused: only https is followed"),
        "{results:?}"
    );
    assert_eq!(results[2], format!("redirected to {sim_autodiscover}"));
    assert_eq!(results[3], format!("EWS URL {}", h.url));

    // An address the server does not know: every place fails, each is reported.
    settings.start_urls = vec![sim_autodiscover.clone()];
    let err = discover("nobody@example.com", &settings)
        .await
        .expect_err("unknown address");
    assert!(
        err.attempts()[0].result.contains("Autodiscover error 500"),
        "{:?}",
        err.attempts()
    );
    // Wrong credentials are reported as such, not as a missing address.
    settings.auth = Auth::Ntlm {
        user: "ann@example.com".into(),
        password: Secret::new("wrong"),
    };
    let err = discover("ann@example.com", &settings)
        .await
        .expect_err("wrong password");
    assert!(
        err.attempts()[0].result.contains("credentials refused"),
        "{:?}",
        err.attempts()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn soap_autodiscover_get_user_settings_finds_the_ews_url_and_reports_unknown_users() {
    use taskbridge::ews::autodiscover::discover;
    let h = start_extended_protection(sim::ExtendedProtection::Require).await;
    let svc = h
        .url
        .replace("/EWS/Exchange.asmx", "/Autodiscover/Autodiscover.svc");
    let pox = h
        .url
        .replace("/EWS/Exchange.asmx", "/autodiscover/autodiscover.xml");
    let mut settings = ntlm_autodiscover_settings("ann@example.com", "ann-pw", 5);
    settings.start_urls = vec![svc.clone(), pox.clone()];
    let found = discover("ann@example.com", &settings)
        .await
        .expect("the simulator answers over SOAP");
    assert_eq!(found.ews_url, h.url, "{:#?}", found.attempts);
    assert_eq!(found.attempts.len(), 1, "{:#?}", found.attempts);
    assert_eq!(found.attempts[0].url, svc);

    // An unknown user: SOAP says InvalidUser, POX says 500; both steps are reported.
    let err = discover("nobody@example.com", &settings)
        .await
        .expect_err("unknown address");
    let results: Vec<&str> = err.attempts().iter().map(|a| a.result.as_str()).collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].contains("Autodiscover error InvalidUser"),
        "{results:?}"
    );
    assert!(results[1].contains("Autodiscover error 500"), "{results:?}");

    h.shutdown().await;
}

/// A name server on a UDP socket that answers the SRV question of `_autodiscover._tcp.<any>`
/// with one record pointing at `localhost:port`, as a zone publishing the record would.
async fn srv_name_server(port: u16) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let q = &buf[..n];
            if n < 17 {
                continue;
            }
            let mut out = q.to_vec();
            out[2] = 0x81; // an answer, recursion desired
            out[3] = 0x80; // recursion available, no error
            out[6..8].copy_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 1, 44]);
            let mut data = vec![0, 0, 0, 100];
            data.extend_from_slice(&port.to_be_bytes());
            data.extend_from_slice(b"\x09localhost\x00");
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
            let _ = socket.send_to(&out, from).await;
        }
    });
    addr
}

#[tokio::test]
async fn autodiscover_falls_back_to_the_srv_record_when_the_standard_places_fail() {
    use taskbridge::ews::autodiscover::discover;
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    // A mailbox in a domain with no web server: only the SRV record leads to Autodiscover.
    let mut c = SimConfig::for_tests(&["ann@sim.invalid:ann-pw"]);
    c.auth = AuthMode::Ntlm;
    c.tls = Some(sim::TlsFiles {
        cert: tls.join("server.pem"),
        key: tls.join("server.key"),
    });
    let h = start(c).await;
    let port = reqwest::Url::parse(&h.url)
        .expect("url")
        .port()
        .expect("port");
    let dns = srv_name_server(port).await;
    let mut settings = ntlm_autodiscover_settings("ann@sim.invalid", "ann-pw", 3);
    settings.name_servers = vec![dns];
    let found = discover("ann@sim.invalid", &settings)
        .await
        .expect("found through the SRV record");
    let steps: Vec<String> = found
        .attempts
        .iter()
        .map(|a| format!("{} {} -> {}", a.method, a.url, a.result))
        .collect();
    assert_eq!(
        found.ews_url,
        format!("https://localhost:{port}/EWS/Exchange.asmx"),
        "{steps:#?}"
    );
    assert_eq!(steps.len(), 7, "{steps:#?}");
    assert_eq!(
        steps[5],
        format!("SRV _autodiscover._tcp.sim.invalid -> points to localhost:{port}"),
        "{steps:#?}"
    );
    assert!(
        steps[6].starts_with(&format!(
            "POST https://localhost:{port}/autodiscover/autodiscover.svc -> EWS URL"
        )),
        "{steps:#?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn check_with_autodiscover_reports_each_step_and_checks_the_url_it_found() {
    let h = start_extended_protection(sim::ExtendedProtection::Require).await;
    let sim_autodiscover = h
        .url
        .replace("/EWS/Exchange.asmx", "/autodiscover/autodiscover.xml");
    let tls = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let run = |address: &'static str| {
        let tls = tls.clone();
        let start = sim_autodiscover.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
                .args([
                    "check",
                    "--autodiscover",
                    address,
                    "--autodiscover-url",
                    &start,
                ])
                .args(["--auth", "ntlm", "--user", "ann@example.com"])
                .args(["--password-env", "TB_TEST_PW", "--ca-file"])
                .arg(tls.join("ca.pem"))
                .env("TB_TEST_PW", "ann-pw")
                .output()
                .expect("taskbridge runs")
        })
    };
    let out = run("ann@example.com").await.expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "autodiscover:    POST {sim_autodiscover} -> EWS URL {}",
            h.url
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("endpoint:        {}", h.url)),
        "{stdout}"
    );
    let out = run("nobody@example.com").await.expect("join");
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    h.shutdown().await;
}
