//! Parse and write speed of the EWS wire layer, the connector's hot paths: a GetItem response
//! of 1,000 tasks, a full SyncFolderItems page (512 changed tasks), a SendNotification of 50
//! events (what the listener reads), and a CreateItem / UpdateItem of 100 tasks.
//!
//! `cargo bench --bench ews_codec`; `benches/run.sh` puts the estimates into
//! `docs/PERFORMANCE.md`.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use taskbridge::ews::ops::create_item::{CreateItem, ItemsPayload, MessageDisposition};
use taskbridge::ews::ops::get_item::{GetItem, GetItemResponse};
use taskbridge::ews::ops::send_notification::SendNotification;
use taskbridge::ews::ops::sync_folder_items::{
    SyncChange, SyncChanges, SyncFolderItems, SyncFolderItemsPayload, SyncFolderItemsResponse,
};
use taskbridge::ews::ops::update_item::{
    ConflictResolution, ItemChange, ItemChanges, ItemUpdate, UpdateItem, Updates,
};
use taskbridge::ews::ops::{self, OperationResponse};
use taskbridge::ews::soap::{DEFAULT_MAX_MESSAGE_BYTES, RequestHeader, ServerVersionInfo};
use taskbridge::ews::types::{
    BaseFolderId, Body, ChangeKey, ExtendedFieldUri, ExtendedProperty, FolderIds, Importance, Item,
    ItemId, Items, Path, ResponseMessage, Strings, SyncState, Task, TaskStatus, field_uri,
};

fn task(i: usize) -> Task {
    let day = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    Task {
        item_id: Some(ItemId::new(
            format!("AAMkAGI2TG93AAA{i:08}AAAEMAAA="),
            Some(ChangeKey::from(format!("EwAAABYAAAD{i:08}xyz"))),
        )),
        subject: Some(format!("Harbour bridge: Pour deck segment {i}")),
        body: Some(Body::text(
            "Formwork checked; pour with the night shift. Notes from the site meeting follow.",
        )),
        categories: Some(Strings::from(vec!["Harbour bridge".to_string()])),
        importance: Some(Importance::Normal),
        date_time_created: Some(day),
        extended_properties: vec![ExtendedProperty {
            extended_field_uri: ExtendedFieldUri::named_string(
                "c11ff724-aa03-4555-9952-8fa248a11c3e",
                "taskbridge-key",
            ),
            value: Some(format!("2f9a4c1e-7b7d-4f7a-9c55-0d3c2b1a{i:04}:{i}")),
            values: None,
        }],
        last_modified_time: Some(day),
        actual_work: Some(120),
        change_count: Some(3),
        due_date: Some(day),
        percent_complete: Some(25.0),
        start_date: Some(day),
        status: Some(TaskStatus::InProgress),
        total_work: Some(480),
        ..Task::default()
    }
}

fn get_item_response(n: usize) -> Vec<u8> {
    let resp = GetItemResponse::from_messages(
        (0..n)
            .map(|i| {
                ResponseMessage::success(ItemsPayload {
                    items: Some(Items(vec![Item::task(task(i))])),
                })
            })
            .collect(),
    );
    let server = ServerVersionInfo::default();
    ops::encode_response::<GetItem>(Some(&server), &resp)
}

/// A SyncFolderItems page as the simulator answers it: `n` updated tasks (no bodies, as
/// servers send none from folder-level calls).
fn sync_folder_items_response(n: usize) -> Vec<u8> {
    let changes = (0..n)
        .map(|i| {
            let mut t = task(i);
            t.body = None;
            SyncChange::Update(Item::task(t))
        })
        .collect();
    let resp = SyncFolderItemsResponse::from_messages(vec![ResponseMessage::success(
        SyncFolderItemsPayload {
            sync_state: Some(SyncState::from("H4sIAAAAAAAEAGNgYGBk".repeat(8).as_str())),
            includes_last_item_in_range: Some(true),
            changes: Some(SyncChanges(changes)),
        },
    )]);
    let server = ServerVersionInfo::default();
    ops::encode_response::<SyncFolderItems>(Some(&server), &resp)
}

/// A push notification of `n` modified items, as Exchange posts it.
fn send_notification(n: usize) -> Vec<u8> {
    let events: String = (0..n)
        .map(|i| {
            format!(
                "<t:ModifiedEvent><t:Watermark>AQAAAEVYZjM{i:08}AAAAA</t:Watermark>\
                 <t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp>\
                 <t:ItemId Id=\"AAMkAGI2TG93AAA{i:08}AAAEMAAA=\" ChangeKey=\"EwAAABYAAAD{i:08}xyz\"/>\
                 <t:ParentFolderId Id=\"AAMkAGI2TG93AAAtasks\" ChangeKey=\"AQAAAA==\"/>\
                 </t:ModifiedEvent>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\" \
         xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\">\
         <soap:Header><t:RequestServerVersion Version=\"Exchange2016\"/></soap:Header>\
         <soap:Body><m:SendNotification><m:ResponseMessages>\
         <m:SendNotificationResponseMessage ResponseClass=\"Success\">\
         <m:ResponseCode>NoError</m:ResponseCode><m:Notification>\
         <t:SubscriptionId>JgBkYjNkMWYzNi0xNTU3LTQ5ZDItYjA0Mi1hNmJjY2U4ZjI1ZGEQAAAA</t:SubscriptionId>\
         <t:PreviousWatermark>AQAAAEVYZjMAAAAAAAAAAAA</t:PreviousWatermark>\
         <t:MoreEvents>false</t:MoreEvents>{events}</m:Notification>\
         </m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>\
         </soap:Body></soap:Envelope>"
    )
    .into_bytes()
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let body = get_item_response(1000);
    // In bytes, so that the report gives MB/s: the target for parsing is a rate.
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("GetItemResponse 1000 tasks", |b| {
        b.iter(|| {
            let env = ops::decode_response::<GetItem>(black_box(&body), DEFAULT_MAX_MESSAGE_BYTES)
                .expect("decodes");
            black_box(env);
        })
    });
    let body = sync_folder_items_response(512);
    g.throughput(Throughput::Elements(512));
    g.bench_function("SyncFolderItemsResponse 512 changes", |b| {
        b.iter(|| {
            let env = ops::decode_response::<SyncFolderItems>(
                black_box(&body),
                DEFAULT_MAX_MESSAGE_BYTES,
            )
            .expect("decodes");
            black_box(env);
        })
    });
    let body = send_notification(50);
    let (_, call) =
        ops::decode_request::<SendNotification>(&body, DEFAULT_MAX_MESSAGE_BYTES).expect("decodes");
    assert_eq!(
        call.notifications().map(|n| n.events.len()).sum::<usize>(),
        50
    );
    g.throughput(Throughput::Elements(50));
    g.bench_function("SendNotification 50 events", |b| {
        b.iter(|| {
            let call = ops::decode_request::<SendNotification>(
                black_box(&body),
                DEFAULT_MAX_MESSAGE_BYTES,
            )
            .expect("decodes");
            black_box(call);
        })
    });
    g.finish();
}

fn writing(c: &mut Criterion) {
    let header = RequestHeader {
        impersonation: Some(taskbridge::ews::Impersonation::PrimarySmtpAddress(
            "ann@example.com".into(),
        )),
        ..RequestHeader::default()
    };
    let create = CreateItem {
        message_disposition: Some(MessageDisposition::SaveOnly),
        saved_item_folder_id: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(
            "ann@example.com",
        ))])),
        items: Items(
            (0..100)
                .map(|i| {
                    let mut t = task(i);
                    t.item_id = None;
                    t.last_modified_time = None;
                    t.date_time_created = None;
                    t.change_count = None;
                    Item::task(t)
                })
                .collect(),
        ),
    };
    let update = UpdateItem {
        conflict_resolution: ConflictResolution::AutoResolve,
        message_disposition: Some(MessageDisposition::SaveOnly),
        saved_item_folder_id: None,
        item_changes: ItemChanges {
            item_changes: (0..100)
                .map(|i| ItemChange {
                    item_id: task(i).item_id.expect("id"),
                    updates: Updates(vec![ItemUpdate::SetItemField {
                        path: Path::field(field_uri::PERCENT_COMPLETE),
                        item: Box::new(Item::task(Task {
                            percent_complete: Some(50.0),
                            ..Task::default()
                        })),
                    }]),
                })
                .collect(),
        },
    };
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Elements(100));
    g.bench_function("CreateItem 100 tasks", |b| {
        b.iter(|| black_box(ops::encode_request(&header, black_box(&create))))
    });
    g.bench_function("UpdateItem 100 tasks", |b| {
        b.iter(|| black_box(ops::encode_request(&header, black_box(&update))))
    });
    g.finish();
}

criterion_group!(benches, parsing, writing);
criterion_main!(benches);
