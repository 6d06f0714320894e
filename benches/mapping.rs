//! The connector's per-item work above the wire: the mapping of an assignment to mailbox values
//! (`FieldTable::to_mail`), of a read task to mailbox values (`FieldTable::from_task`), of two
//! value sets to UpdateItem changes (`FieldTable::updates`), and the three-way decision
//! (`sync::decide::decide`), each for one item with the default field table.
//!
//! `cargo bench --bench mapping`; `benches/run.sh` puts the estimates into
//! `docs/PERFORMANCE.md`.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use taskbridge::ews::types::{
    Body, ChangeKey, ExtendedFieldUri, ExtendedProperty, Importance, ItemId, Strings, Task,
    TaskStatus,
};
use taskbridge::mapping::{FieldTable, owner_zone};
use taskbridge::pm::import::{ImportOptions, import_bytes};
use taskbridge::state::Baseline;
use taskbridge::sync::Policy;
use taskbridge::sync::decide::decide;

/// One task with one resource, as the bench's project has thousands of.
const PROJECT: &str = r#"{
  "guid": "5b0c7f3e-2d1a-4c55-8e7b-0a9d3c2b1e47", "name": "Harbour bridge",
  "time_zone": "Europe/Berlin",
  "tasks": [{ "uid": 1, "name": "Pour deck segment 7",
              "notes": "Formwork checked; pour with the night shift.",
              "start": "2026-03-02T08:00:00", "finish": "2026-03-03T17:00:00",
              "work": "PT16H", "priority": 700 }],
  "resources": [{ "uid": 1, "name": "Ann Larsen", "email": "ann@example.com" }],
  "assignments": [{ "uid": 1, "task_uid": 1, "resource_uid": 1, "work": "PT16H",
                    "actual_work": "PT4H" }]
}"#;

/// The item as GetItem returns it after a user set 60 % in Outlook.
fn read_task() -> Task {
    let day = Utc.with_ymd_and_hms(2026, 3, 1, 23, 0, 0).unwrap();
    Task {
        item_id: Some(ItemId::new(
            "AAMkAGI2TG93AAA00000007AAAEMAAA=".to_string(),
            Some(ChangeKey::from("EwAAABYAAAD00000007xyz")),
        )),
        subject: Some("Harbour bridge: Pour deck segment 7".into()),
        body: Some(Body::text("Formwork checked; pour with the night shift.")),
        categories: Some(Strings::from(vec!["Harbour bridge".to_string()])),
        importance: Some(Importance::High),
        extended_properties: vec![ExtendedProperty {
            extended_field_uri: ExtendedFieldUri::named_string(
                "c11ff724-aa03-4555-9952-8fa248a11c3e",
                "taskbridge-key",
            ),
            value: Some("5b0c7f3e-2d1a-4c55-8e7b-0a9d3c2b1e47:1".into()),
            values: None,
        }],
        last_modified_time: Some(Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()),
        actual_work: Some(240),
        due_date: Some(day + chrono::Duration::days(1)),
        percent_complete: Some(60.0),
        start_date: Some(day),
        status: Some(TaskStatus::InProgress),
        total_work: Some(960),
        ..Task::default()
    }
}

fn mapping(c: &mut Criterion) {
    let project = import_bytes(PROJECT.as_bytes(), &ImportOptions::default()).expect("imports");
    let units = project.sync_units();
    let unit = &units[0];
    let zone = owner_zone(&project, unit);
    let table = FieldTable::default();
    let task = read_task();
    let pm = table.to_mail(&project, unit, zone);
    let mail = table.from_task(&task, zone);
    let base = Baseline::new(pm.clone());
    assert!(
        !table.updates(&mail, &pm).is_empty(),
        "the edit must differ"
    );

    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(1));
    g.bench_function("FieldTable::to_mail", |b| {
        b.iter(|| black_box(table.to_mail(black_box(&project), black_box(unit), zone)))
    });
    g.bench_function("FieldTable::from_task", |b| {
        b.iter(|| black_box(table.from_task(black_box(&task), zone)))
    });
    g.bench_function("FieldTable::updates", |b| {
        b.iter(|| black_box(table.updates(black_box(&mail), black_box(&pm))))
    });
    g.finish();

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decide (one edited item, newer-wins)", |b| {
        b.iter(|| {
            black_box(decide(
                &table,
                black_box(&base),
                black_box(&pm),
                black_box(&mail),
                task.last_modified_time,
                |_| None,
                Policy::NewerWins,
                chrono::Duration::milliseconds(2000),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
