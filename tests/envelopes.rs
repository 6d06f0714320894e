//! Writes one envelope for every request variant the client produces, and the answers a push
//! subscriber writes, to `target/envelopes/` (or `$TASKBRIDGE_ENVELOPE_DIR`), then validates
//! them against the repository's schema subset (`wsdl/validate.sh`). CI validates the same
//! folder against the official schema as well.

mod external;

use std::path::{Path as FsPath, PathBuf};

use taskbridge::ews::ops::create_item::{CreateItem, MessageDisposition};
use taskbridge::ews::ops::delete_item::{AffectedTaskOccurrences, DeleteItem, DeleteType};
use taskbridge::ews::ops::find_item::{FindItem, ItemTraversal};
use taskbridge::ews::ops::get_events::GetEvents;
use taskbridge::ews::ops::get_folder::GetFolder;
use taskbridge::ews::ops::get_item::GetItem;
use taskbridge::ews::ops::get_streaming_events::{GetStreamingEvents, SubscriptionIds};
use taskbridge::ews::ops::send_notification::{SendNotificationResult, SubscriptionStatus};
use taskbridge::ews::ops::subscribe::{
    EventTypes, PullSubscriptionRequest, PushSubscriptionRequest, StreamingSubscriptionRequest,
    Subscribe,
};
use taskbridge::ews::ops::sync_folder_items::SyncFolderItems;
use taskbridge::ews::ops::unsubscribe::Unsubscribe;
use taskbridge::ews::ops::update_item::{
    ConflictResolution, ItemChange, ItemChanges, ItemUpdate, UpdateItem, Updates,
};
use taskbridge::ews::ops::{self, Operation};
use taskbridge::ews::soap::{self, ExchangeVersion, Impersonation, RequestHeader, TimeZoneContext};
use taskbridge::ews::types::*;

const KEY_SET: &str = "c11ff724-aa03-4555-9952-8fa248a11c3e";

fn key_path() -> ExtendedFieldUri {
    ExtendedFieldUri::named_string(KEY_SET, "taskbridge-key")
}

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("TASKBRIDGE_ENVELOPE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| FsPath::new(env!("CARGO_MANIFEST_DIR")).join("target/envelopes"));
    std::fs::create_dir_all(&dir).expect("create envelope dir");
    dir
}

fn plain() -> RequestHeader {
    RequestHeader::default()
}

fn impersonated() -> RequestHeader {
    RequestHeader {
        version: ExchangeVersion::Exchange2013Sp1,
        impersonation: Some(Impersonation::PrimarySmtpAddress("ann@example.com".into())),
        time_zone: None,
    }
}

fn with_time_zone() -> RequestHeader {
    RequestHeader {
        time_zone: Some(TimeZoneContext {
            id: "W. Europe Standard Time".into(),
        }),
        ..impersonated()
    }
}

fn tasks() -> FolderIds {
    FolderIds(vec![BaseFolderId::tasks_of(Some("ann@example.com"))])
}

fn full_task() -> Task {
    let day = chrono::DateTime::parse_from_rfc3339("2026-03-02T23:00:00Z")
        .expect("date")
        .with_timezone(&chrono::Utc);
    Task {
        subject: Some("Harbour bridge: Pour deck".into()),
        body: Some(Body::text("Pour with the night shift.")),
        categories: Some(Strings::from(vec!["Harbour bridge".to_string()])),
        importance: Some(Importance::High),
        extended_properties: vec![ExtendedProperty {
            extended_field_uri: key_path(),
            value: Some("2f9a4c1e-7b7d-4f7a-9c55-0d3c2b1a0001:7".into()),
            values: None,
        }],
        actual_work: Some(120),
        due_date: Some(day),
        percent_complete: Some(25.0),
        start_date: Some(day),
        total_work: Some(450),
        ..Task::default()
    }
}

fn write<O: Operation>(dir: &FsPath, name: &str, header: &RequestHeader, request: &O) -> PathBuf {
    let path = dir.join(format!("request-{name}.xml"));
    std::fs::write(&path, ops::encode_request(header, request)).expect("write envelope");
    path
}

fn all_variants(dir: &FsPath) -> Vec<PathBuf> {
    let set_percent = ItemUpdate::SetItemField {
        path: Path::field(field_uri::PERCENT_COMPLETE),
        item: Box::new(Item::task(Task {
            percent_complete: Some(60.0),
            ..Task::default()
        })),
    };
    let set_subject = ItemUpdate::SetItemField {
        path: Path::field(field_uri::SUBJECT),
        item: Box::new(Item::task(Task {
            subject: Some("Renamed".into()),
            ..Task::default()
        })),
    };
    let delete_start = ItemUpdate::DeleteItemField {
        path: Path::field(field_uri::START_DATE),
    };
    let set_tag = ItemUpdate::SetItemField {
        path: Path::ExtendedFieldUri(key_path()),
        item: Box::new(Item::task(Task {
            extended_properties: full_task().extended_properties,
            ..Task::default()
        })),
    };
    let mut files = vec![
        write(
            dir,
            "create-item",
            &impersonated(),
            &CreateItem {
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: Some(tasks()),
                items: Items(vec![Item::task(full_task()), Item::task(full_task())]),
            },
        ),
        write(
            dir,
            "create-item-send-message",
            &plain(),
            &CreateItem {
                message_disposition: Some(MessageDisposition::SendOnly),
                saved_item_folder_id: None,
                items: Items(vec![Item::message(
                    vec![
                        Mailbox::smtp("mia@example.com"),
                        Mailbox::smtp("ann@example.com"),
                    ],
                    "taskbridge: 2 updates wait for your approval",
                    "Harbour Bridge Refit\n  Design review (ann): work 12 h -> 16 h",
                )]),
            },
        ),
        write(
            dir,
            "create-item-time-zone",
            &with_time_zone(),
            &CreateItem {
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                items: Items(vec![Item::task(full_task())]),
            },
        ),
        write(
            dir,
            "update-item-set-and-delete",
            &impersonated(),
            &UpdateItem {
                conflict_resolution: ConflictResolution::AutoResolve,
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                item_changes: ItemChanges {
                    item_changes: vec![ItemChange {
                        item_id: ItemId::new("AAMk1", Some(ChangeKey::from("CK1"))),
                        updates: Updates(vec![set_subject, set_percent, delete_start, set_tag]),
                    }],
                },
            },
        ),
        write(
            dir,
            "get-item",
            &impersonated(),
            &GetItem {
                item_shape: ItemShape::new(
                    BaseShape::AllProperties,
                    vec![Path::ExtendedFieldUri(key_path())],
                ),
                item_ids: vec![ItemId::new("AAMk1", None), ItemId::new("AAMk2", None)].into(),
            },
        ),
        write(
            dir,
            "delete-item",
            &impersonated(),
            &DeleteItem {
                delete_type: DeleteType::MoveToDeletedItems,
                affected_task_occurrences: Some(AffectedTaskOccurrences::AllOccurrences),
                item_ids: vec![ItemId::new("AAMk1", Some(ChangeKey::from("CK2")))].into(),
            },
        ),
        write(
            dir,
            "find-item-extended-restriction",
            &impersonated(),
            &FindItem {
                traversal: ItemTraversal::Shallow,
                item_shape: ItemShape::new(
                    BaseShape::IdOnly,
                    vec![Path::ExtendedFieldUri(key_path())],
                ),
                indexed_page_item_view: Some(IndexedPageView {
                    max_entries_returned: Some(500),
                    offset: 0,
                    base_point: BasePoint::Beginning,
                }),
                restriction: Some(Restriction::equals(
                    Path::ExtendedFieldUri(key_path()),
                    "2f9a4c1e-7b7d-4f7a-9c55-0d3c2b1a0001:7",
                )),
                parent_folder_ids: tasks(),
            },
        ),
        write(
            dir,
            "sync-folder-items",
            &impersonated(),
            &SyncFolderItems {
                item_shape: ItemShape::new(BaseShape::IdOnly, vec![]),
                sync_folder_id: tasks(),
                sync_state: Some(SyncState::from("H4sIAAAAAAAEAO29B2")),
                ignore: Some(vec![ItemId::new("AAMk9", None)].into()),
                max_changes_returned: 512,
            },
        ),
        write(
            dir,
            "get-folder",
            &plain(),
            &GetFolder {
                folder_shape: FolderShape {
                    base_shape: BaseShape::IdOnly,
                    additional_properties: None,
                },
                folder_ids: tasks(),
            },
        ),
        write(
            dir,
            "subscribe-push",
            &impersonated(),
            &Subscribe::Push(PushSubscriptionRequest {
                folder_ids: Some(tasks()),
                event_types: EventTypes {
                    event_types: vec![
                        EventType::CreatedEvent,
                        EventType::ModifiedEvent,
                        EventType::DeletedEvent,
                        EventType::MovedEvent,
                    ],
                },
                watermark: Some(Watermark::from("AQAAAA==")),
                status_frequency: 30,
                url: "https://tb.example.com/ews/notify/0123456789abcdef".into(),
            }),
        ),
        write(
            dir,
            "subscribe-pull",
            &impersonated(),
            &Subscribe::Pull(PullSubscriptionRequest {
                folder_ids: Some(tasks()),
                event_types: EventTypes {
                    event_types: vec![EventType::ModifiedEvent],
                },
                watermark: None,
                timeout: 30,
            }),
        ),
        write(
            dir,
            "get-events",
            &impersonated(),
            &GetEvents {
                subscription_id: SubscriptionId::from("pull-1"),
                watermark: Watermark::from("AQAAAA=="),
            },
        ),
        write(
            dir,
            "unsubscribe",
            &impersonated(),
            &Unsubscribe {
                subscription_id: SubscriptionId::from("pull-1"),
            },
        ),
        write(
            dir,
            "subscribe-streaming",
            &impersonated(),
            &Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(tasks()),
                event_types: EventTypes {
                    event_types: vec![EventType::CreatedEvent, EventType::ModifiedEvent],
                },
            }),
        ),
        write(
            dir,
            "get-streaming-events",
            &impersonated(),
            &GetStreamingEvents {
                subscription_ids: SubscriptionIds {
                    subscription_ids: vec![
                        SubscriptionId::from("stream-1"),
                        SubscriptionId::from("stream-2"),
                    ],
                },
                connection_timeout: 30,
            },
        ),
    ];
    for (name, status) in [
        ("ok", SubscriptionStatus::Ok),
        ("unsubscribe", SubscriptionStatus::Unsubscribe),
    ] {
        let path = dir.join(format!("notification-result-{name}.xml"));
        let body = soap::write_response(
            None,
            "m:SendNotificationResult",
            &SendNotificationResult {
                subscription_status: status,
            },
        );
        std::fs::write(&path, body).expect("write");
        files.push(path);
    }
    files
}

#[test]
fn every_request_variant_validates_against_the_schema_subset() {
    let dir = out_dir();
    let files = all_variants(&dir);
    assert!(files.len() >= 16);
    external::assert_well_formed(&files);
    if !external::schema_tools("the client's request envelopes against wsdl/") {
        return;
    }
    if let Err(report) = external::validate(&external::subset_validator(), &files) {
        panic!("envelopes do not validate:\n{report}");
    }
}
