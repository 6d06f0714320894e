//! Streaming notifications on a hostile network: `serve` in `listener.mode = "streaming"` (no
//! push listener) holds GetStreamingEvents connections while the simulator throttles 10% of the
//! requests, fails 5% (HTTP 500 or a dropped connection), closes every connection at its
//! (time-scaled) time-out, and every 0.3 to 2 seconds cuts every open stream. Reconciliation
//! is set to an hour, so edits can only arrive over a stream or through the pass that follows
//! a reconnect. The mailboxes are spread over three backends (`--backends 3`), so the
//! connections must keep server affinity. Every edit must reach the PM side exactly once, and
//! both sides converge.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use taskbridge::pm::{Project, ProjectGuid};

use crate::support::*;

const NAME: &str = "streaming";
const MAILBOXES: usize = 6;
const ASSIGNMENTS: usize = 120;
const ROUNDS: usize = 6;
const EDITS_PER_ROUND: usize = 50;

const FAULTS: &[&str] = &[
    "--throttle",
    "0.1",
    "--back-off-ms",
    "100",
    "--fail",
    "0.05",
    "--seed",
    "20261202",
    // Keep-alives every 0.3 s and connection time-outs after 18 s instead of 30 s and 30 min.
    "--push-time-scale",
    "0.01",
    // The mailboxes spread over three Mailbox servers: each connection must keep affinity.
    "--backends",
    "3",
];

async fn pm_percents(ws: &Workspace, guid: ProjectGuid) -> Option<HashMap<String, u8>> {
    let (status, body) = ws
        .pm_api(&format!("/pm/projects/{guid}"), Some(&ws.admin_token()))
        .await;
    if status != 200 {
        return None;
    }
    let project: Project = serde_json::from_value(body["project"].clone()).ok()?;
    Some(
        project
            .assignments
            .iter()
            .map(|a| {
                (
                    project.key(a.uid).to_string(),
                    a.percent_work_complete.get(),
                )
            })
            .collect(),
    )
}

/// A counter of `serve`'s `/metrics`.
async fn metric(ws: &Workspace, family: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", ws.admin_port))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(family) && l[family.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_arrive_over_streams_cut_at_random_with_reconciliation_off() {
    let _serial = serial().await;
    let mut ws = Workspace::new("debug");
    ws.set_env("TASKBRIDGE_LISTENER_MODE", "streaming");
    ws.set_env("TASKBRIDGE_LISTENER_STREAMING_TIMEOUT_MINUTES", 30);
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    ws.set_env("TASKBRIDGE_SYNC_MAX_DEBOUNCE_MS", 1000);
    // No reconciliation during the test: only the streams and the passes after reconnects.
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 3600);
    let boxes = mailboxes(MAILBOXES);
    let guid = ProjectGuid(Uuid::from_u128(0xc4a0_5017));
    let mut sim = SimProc::start(&ws, &boxes, &[]);
    ws.import(&project_json(guid, ASSIGNMENTS, &boxes)).await;
    let out = ws.run(&["publish", &guid.to_string()]).await;
    assert!(out.ok(), "publish: {}", out.stderr);
    let admin = Admin::new(&sim);
    let census0 = census(&admin, &boxes, &keys(guid, ASSIGNMENTS)).await;
    assert!(census0.missing.is_empty() && census0.duplicates == 0);
    let items: BTreeMap<String, (String, String)> = census0
        .by_key
        .iter()
        .map(|(k, v)| {
            let (mailbox, task) = &v[0];
            let id = task["ItemId"]["Id"].as_str().expect("id").to_string();
            (k.clone(), (mailbox.clone(), id))
        })
        .collect();
    sim.restart_with(&ws, &boxes, FAULTS);
    let admin = Admin::new(&sim);
    let mut serve = ws.spawn("serve", &["serve"], false);
    wait_until("streams to be open", Duration::from_secs(120), || async {
        let open = metric(&ws, "taskbridge_streaming_connections").await?;
        (open >= 1).then_some(())
    })
    .await;

    // Cut every open stream now and then, all through the edits.
    let cutting = Arc::new(AtomicBool::new(true));
    let cuts = Arc::new(AtomicU64::new(0));
    let cutter = {
        let (cutting, cuts) = (Arc::clone(&cutting), Arc::clone(&cuts));
        let url = format!("{}/streams/cut", sim.admin);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = StdRng::seed_from_u64(0x5eed_0017);
            while cutting.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2000))).await;
                if let Ok(r) = http.post(&url).send().await
                    && let Ok(answer) = r.json::<serde_json::Value>().await
                {
                    cuts.fetch_add(answer["cut"].as_u64().unwrap_or(0), Ordering::SeqCst);
                }
            }
        })
    };

    let mut rng = StdRng::seed_from_u64(0x5eed_0018);
    let all_keys: Vec<String> = items.keys().cloned().collect();
    let mut expected: HashMap<String, u8> = all_keys.iter().map(|k| (k.clone(), 0)).collect();
    let mut edits = 0usize;
    let mut lost = 0usize;
    let started = std::time::Instant::now();
    for round in 0..ROUNDS {
        let chosen: Vec<String> = all_keys
            .choose_multiple(&mut rng, EDITS_PER_ROUND)
            .cloned()
            .collect();
        for key in &chosen {
            let old = expected[key];
            let mut p = rng.gen_range(1..=99u8);
            if p == old {
                p = if p == 99 { 1 } else { p + 1 };
            }
            let (mailbox, id) = &items[key];
            admin
                .patch(mailbox, id, &json!({ "PercentComplete": p }))
                .await;
            expected.insert(key.clone(), p);
            edits += 1;
        }
        // Bounded: an edit that has not arrived after three minutes is counted as lost (the
        // next reconciliation is an hour away).
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        let missing = loop {
            let missing = match pm_percents(&ws, guid).await {
                Some(pm) => chosen
                    .iter()
                    .filter(|k| pm.get(*k) != expected.get(*k))
                    .count(),
                None => chosen.len(),
            };
            if missing == 0 || std::time::Instant::now() > deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        lost += missing;
        assert!(serve.running(), "serve died in round {round}");
    }
    let edit_time = started.elapsed();
    cutting.store(false, Ordering::SeqCst);
    cutter.await.expect("cutter");

    // Each cut stream is opened again (a connection closed at its time-out counts too).
    let cut = cuts.load(Ordering::SeqCst);
    let reconnects = wait_until(
        "every cut stream to be opened again",
        Duration::from_secs(60),
        || async {
            let n = metric(&ws, "taskbridge_streaming_reconnects_total").await?;
            (n >= cut).then_some(n)
        },
    )
    .await;
    let counters = admin.counters().await;
    let updates = ws.json(&["updates", "--json"]).await;
    let applied = updates
        .as_array()
        .expect("updates")
        .iter()
        .filter(|u| u["state"] == "applied")
        .count();
    assert!(serve.running(), "serve died");
    let exit = serve.terminate().await;

    figure(NAME, "user edits", edits);
    figure(NAME, "edits that reached the PM side", edits - lost);
    figure(NAME, "lost updates", lost);
    figure(NAME, "status updates applied", applied);
    figure(NAME, "streams cut", cut);
    figure(NAME, "streaming reconnects", reconnects);
    figure(NAME, "EWS requests", &counters["requests"]);
    figure(NAME, "throttled", &counters["throttled"]);
    figure(NAME, "failed (HTTP 500 or dropped)", &counters["failed"]);
    figure(
        NAME,
        "seconds for the edits",
        format!("{:.0}", edit_time.as_secs_f64()),
    );

    assert_eq!(lost, 0);
    assert_eq!(applied, edits, "one status update per edit");
    assert_eq!(exit, Some(0), "serve did not stop cleanly");
    sim.restart_with(&ws, &boxes, &[]);
    let admin = Admin::new(&sim);
    let census = census(&admin, &boxes, &keys(guid, ASSIGNMENTS)).await;
    figure(NAME, "duplicates", census.duplicates);
    assert_eq!(census.duplicates, 0);
    assert!(census.missing.is_empty(), "{:?}", census.missing);
    // Every edit is what the mailbox shows too.
    let mut mail: HashMap<String, u8> = HashMap::new();
    for m in &boxes {
        for t in admin.tasks(m).await {
            if let (Some(tag), Some(p)) = (tag_of(&t), t["PercentComplete"].as_f64()) {
                mail.insert(tag, p.round() as u8);
            }
        }
    }
    let differ: Vec<&String> = expected
        .iter()
        .filter(|(k, p)| **p != 0 && mail.get(*k) != Some(p))
        .map(|(k, _)| k)
        .collect();
    assert!(differ.is_empty(), "mailbox and edits differ: {differ:?}");
}
