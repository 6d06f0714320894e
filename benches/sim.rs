//! GetItem throughput of the simulator: 100,000 tasks across 1,000 mailboxes, clients and server
//! in one process on the current machine (so the clients' cost is included: a conservative
//! number). The target is 1,000 GetItem requests per second on 2 cores.
//!
//! `cargo bench --bench sim` (env: `SIM_BENCH_SECS`, `SIM_BENCH_CLIENTS`, `SIM_BENCH_MAILBOXES`,
//! `SIM_BENCH_TASKS`). Prints requests per second for single-id requests and for batches of 10.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use taskbridge::ews::ops::create_item::{CreateItem, CreateItemResponse, MessageDisposition};
use taskbridge::ews::ops::get_item::{GetItem, GetItemResponse};
use taskbridge::ews::ops::{self};
use taskbridge::ews::soap::{Body, Impersonation, RequestHeader};
use taskbridge::ews::types::{
    BaseShape, ExtendedFieldUri, ExtendedProperty, Item, ItemId, ItemShape, Items, Path, Task,
};
use taskbridge_sim::{self as sim, SimConfig};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key() -> ExtendedFieldUri {
    ExtendedFieldUri::named_string("c11ff724-aa03-4555-9952-8fa248a11c3e", "taskbridge-key")
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> bytes::Bytes {
    let r = http
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    r.bytes().await.expect("body")
}

fn main() {
    let secs = env("SIM_BENCH_SECS", 10);
    let clients = env("SIM_BENCH_CLIENTS", 8) as usize;
    let mailboxes = env("SIM_BENCH_MAILBOXES", 1000) as usize;
    let per_mailbox = env("SIM_BENCH_TASKS", 100) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let users: Vec<String> = (0..mailboxes).map(|i| format!("user{i}@example.com:pw")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let h = sim::start(SimConfig::for_tests(&refs)).await.expect("sim");
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");

        let t0 = Instant::now();
        let mut ids: Vec<(String, ItemId)> = Vec::with_capacity(mailboxes * per_mailbox);
        for i in 0..mailboxes {
            let smtp = format!("user{i}@example.com");
            let header = RequestHeader {
                impersonation: Some(Impersonation::PrimarySmtpAddress(smtp.clone())),
                ..RequestHeader::default()
            };
            let items = (0..per_mailbox)
                .map(|n| {
                    Item::task(Task {
                        subject: Some(format!("Task {n} of {smtp}")),
                        percent_complete: Some((n % 100) as f64),
                        total_work: Some(480),
                        extended_properties: vec![ExtendedProperty {
                            extended_field_uri: key(),
                            value: Some(format!("project:{n}")),
                            values: None,
                        }],
                        ..Task::default()
                    })
                })
                .collect();
            let req = CreateItem {
                message_disposition: Some(MessageDisposition::SaveOnly),
                saved_item_folder_id: None,
                items: Items(items),
            };
            let bytes = post(&http, &h.url, ops::encode_request(&header, &req)).await;
            let env = ops::decode_response::<CreateItem>(&bytes, 1 << 26).expect("decode");
            let Body::Content(CreateItemResponse { response_messages }) = env.body else {
                panic!("fault while seeding")
            };
            for m in response_messages {
                let id = m.payload.items.expect("items").0[0].fields.item_id.clone().expect("id");
                ids.push((smtp.clone(), id));
            }
        }
        println!(
            "seeded {} tasks in {} mailboxes in {:.1} s",
            ids.len(),
            mailboxes,
            t0.elapsed().as_secs_f64()
        );
        let ids = Arc::new(ids);
        for batch in [1usize, 10] {
            let done = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (http, url, ids, done) = (http.clone(), h.url.clone(), ids.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = c * 7919;
                    while Instant::now() < deadline {
                        n = (n + 104_729) % ids.len();
                        let smtp = &ids[n].0;
                        // A batch stays in one mailbox, as the engine batches per mailbox.
                        let base = n - n % per_mailbox;
                        let chosen: Vec<ItemId> = (0..batch)
                            .map(|k| ids[base + (n + k * 13) % per_mailbox].1.clone())
                            .collect();
                        let header = RequestHeader {
                            impersonation: Some(Impersonation::PrimarySmtpAddress(smtp.clone())),
                            ..RequestHeader::default()
                        };
                        let req = GetItem {
                            item_shape: ItemShape::new(BaseShape::AllProperties, vec![Path::ExtendedFieldUri(key())]),
                            item_ids: chosen.into(),
                        };
                        let bytes = post(&http, &url, ops::encode_request(&header, &req)).await;
                        let env = ops::decode_response::<GetItem>(&bytes, 1 << 26).expect("decode");
                        let Body::Content(GetItemResponse { response_messages }) = env.body else {
                            panic!("fault")
                        };
                        assert!(response_messages.iter().all(|m| m.is_success()));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client");
            }
            let n = done.load(Ordering::Relaxed);
            println!(
                "GetItem, {batch} id(s) per request, {clients} clients, {secs} s: {:.0} requests/s ({:.0} items/s)",
                n as f64 / secs as f64,
                (n as usize * batch) as f64 / secs as f64
            );
        }
        println!("counters: {}", h.counters());
        h.shutdown().await;
    });
}
