//! Crash safety: the connector or the simulator dies by SIGKILL at random points of a publish
//! of 2,000 assignments and is restarted; afterwards every assignment has exactly one task and
//! both sides agree on every mapped field.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use taskbridge::pm::ProjectGuid;

use crate::support::*;

const ASSIGNMENTS: usize = 2000;
const KILLS: usize = 20;

/// The workspace, simulator and project of the three tests: ten mailboxes of 200 tasks,
/// written in batches of 10, two mailboxes at a time, with 100 ms added to every EWS request.
/// The latency alone makes a publish last at least 10 s (100 rounds of two batches), longer
/// than the 20 kills take (at most 20 x 450 ms of running), however fast the machine.
async fn setup(name: &str, seed: u128) -> (Workspace, SimProc, Vec<String>, ProjectGuid) {
    let mut ws = Workspace::new("debug");
    ws.set_env("TASKBRIDGE_EXCHANGE_BATCH_SIZE", 10);
    ws.set_env("TASKBRIDGE_SYNC_MAILBOX_CONCURRENCY", 2);
    let boxes = mailboxes(10);
    let sim = SimProc::start(&ws, &boxes, &["--latency", "100"]);
    let guid = ProjectGuid(Uuid::from_u128(seed));
    let imported = ws.import(&project_json(guid, ASSIGNMENTS, &boxes)).await;
    assert_eq!(imported, guid);
    figure(name, "assignments published", ASSIGNMENTS);
    (ws, sim, boxes, guid)
}

/// Runs `publish` until it exits 0 (at most `runs` times); returns the last report.
async fn publish_to_the_end(ws: &Workspace, guid: ProjectGuid, runs: usize) -> serde_json::Value {
    let guid = guid.to_string();
    for _ in 0..runs {
        let out = ws.run(&["publish", &guid, "--json"]).await;
        if out.ok() {
            return serde_json::from_str(&out.stdout).expect("report");
        }
    }
    panic!("publish did not finish cleanly in {runs} runs");
}

/// The checks after the storm: one task per assignment, no stray task, every field equal on
/// both sides, and a publish that has nothing left to do.
async fn check_outcome(
    name: &str,
    ws: &Workspace,
    sim: &SimProc,
    boxes: &[String],
    guid: ProjectGuid,
) {
    let admin = Admin::new(sim);
    let census = census(&admin, boxes, &keys(guid, ASSIGNMENTS)).await;
    figure(name, "tasks in the mailboxes", census.tasks);
    figure(name, "duplicates", census.duplicates);
    figure(name, "missing tasks", census.missing.len());
    assert_eq!(
        census.duplicates,
        0,
        "duplicated keys: {:?}",
        dupes(&census)
    );
    assert!(census.missing.is_empty(), "missing: {:?}", census.missing);
    assert_eq!(census.untagged, 0);
    assert_eq!(census.tasks, ASSIGNMENTS);
    let again = publish_to_the_end(ws, guid, 1).await;
    assert_eq!(again["unchanged"], ASSIGNMENTS, "{again}");
    let (compared, mismatches) = compare_values(ws, &sim.url).await;
    figure(name, "fields compared PM vs mailbox", compared);
    figure(name, "fields that differ", mismatches.len());
    assert!(
        mismatches.is_empty(),
        "{} fields differ:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    let status = ws.json(&["status", "--json"]).await;
    let lines = status.as_array().expect("status lines");
    assert_eq!(lines.len(), ASSIGNMENTS);
    assert!(
        lines.iter().all(|l| l["state"] == "synced"),
        "not all synced"
    );
}

fn dupes(c: &Census) -> Vec<&String> {
    c.by_key
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .take(10)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_killed_at_20_random_points_of_a_publish_leaves_no_duplicate_and_no_gap() {
    let _serial = serial().await;
    let name = "crash/connector";
    let (ws, sim, boxes, guid) = setup(name, 0xc4a0_5001).await;
    let admin = Admin::new(&sim);
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let guid_text = guid.to_string();
    let mut kills = Vec::new();
    let mut finished_early = 0;
    while kills.len() < KILLS && finished_early < 3 {
        let mut publish = ws.spawn("publish", &["publish", &guid_text], false);
        let delay = rng.gen_range(150..=450u64);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if publish.running() {
            publish.kill9();
            let tasks = admin.task_count().await.unwrap_or(0);
            kills.push((delay, tasks));
        } else {
            finished_early += 1;
        }
    }
    let mid = kills
        .iter()
        .filter(|(_, t)| *t < ASSIGNMENTS as u64)
        .count();
    eprintln!("kills (delay ms, tasks in the mailboxes after the kill): {kills:?}");
    figure(name, "SIGKILLs of the connector", kills.len());
    figure(name, "kills with tasks still to create", mid);
    assert_eq!(
        kills.len(),
        KILLS,
        "the publish finished before {KILLS} kills"
    );
    let last = publish_to_the_end(&ws, guid, 3).await;
    figure(name, "adopted after the last kill", &last["adopted"]);
    check_outcome(name, &ws, &sim, &boxes, guid).await;
    assert_no_secret_in_logs(name, &ws, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_killed_at_20_random_points_of_a_publish_leaves_no_duplicate_and_no_gap() {
    let _serial = serial().await;
    let name = "crash/simulator";
    let (ws, mut sim, boxes, guid) = setup(name, 0xc4a0_5002).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let guid_text = guid.to_string();
    let mut publish: Option<Proc> = None;
    let mut runs = 0;
    let mut exits = Vec::new();
    let mut kills_mid_publish = 0;
    for _ in 0..KILLS {
        // Keep a publish running: start one whenever the last one ended.
        if publish.as_mut().is_none_or(|p| !p.running()) {
            if let Some(mut p) = publish.take() {
                exits.push(p.wait(Duration::from_secs(5)).await);
            }
            runs += 1;
            publish = Some(ws.spawn("publish", &["publish", &guid_text], false));
        }
        let delay = rng.gen_range(200..=600u64);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if publish.as_mut().is_some_and(Proc::running) {
            kills_mid_publish += 1;
        }
        sim.kill_and_restart(&ws);
    }
    if let Some(mut p) = publish.take() {
        exits.push(p.wait(Duration::from_secs(300)).await);
    }
    eprintln!("publish runs during the kills: {runs}, exit codes {exits:?}");
    figure(name, "SIGKILLs of the simulator", sim.restarts);
    figure(name, "kills while a publish ran", kills_mid_publish);
    figure(name, "publish runs during the kills", runs);
    let last = publish_to_the_end(&ws, guid, 5).await;
    figure(name, "adopted by the last publish", &last["adopted"]);
    check_outcome(name, &ws, &sim, &boxes, guid).await;
    let users: Vec<(String, String)> = (0..boxes.len())
        .map(|i| ("owner password".to_string(), format!("owner-pw-{i}")))
        .collect();
    assert_no_secret_in_logs(name, &ws, &users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_killed_at_20_random_points_while_serve_publishes_and_syncs_loses_nothing() {
    let _serial = serial().await;
    let name = "crash/simulator-serve";
    let (mut ws, mut sim, boxes, guid) = setup(name, 0xc4a0_5006).await;
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    // Subscriptions end with the simulator; reconciliation finds the edits meanwhile.
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 5);
    let mut rng = StdRng::seed_from_u64(0x5eed_0006);
    let mut serve = ws.spawn("serve", &["serve"], false);
    let admin = Admin::new(&sim);
    let mut edits: Vec<(String, u8)> = Vec::new();
    let mut kills_mid_publish = 0;
    for _ in 0..KILLS {
        let delay = rng.gen_range(200..=600u64);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if admin.task_count().await.unwrap_or(0) < ASSIGNMENTS as u64 {
            kills_mid_publish += 1;
        }
        sim.kill_and_restart(&ws);
        // A user edit on a task that exists by now, while the connector catches up.
        let mailbox = &boxes[rng.gen_range(0..boxes.len())];
        let tasks = admin.tasks(mailbox).await;
        if let Some((key, task)) = tasks.iter().find_map(|t| {
            let key = tag_of(t)?;
            (!edits.iter().any(|(k, _)| *k == key)).then_some((key, t))
        }) {
            let p = rng.gen_range(1..=99u8);
            let id = task["ItemId"]["Id"].as_str().expect("id");
            admin
                .patch(mailbox, id, &serde_json::json!({ "PercentComplete": p }))
                .await;
            edits.push((key, p));
        }
        assert!(serve.running(), "serve died");
    }
    figure(name, "SIGKILLs of the simulator", sim.restarts);
    figure(name, "kills before every task existed", kills_mid_publish);
    figure(name, "user edits between the kills", edits.len());
    let token = ws.admin_token();
    wait_until(
        "serve to publish everything and take every edit",
        Duration::from_secs(300),
        || async {
            let tasks = admin.task_count().await?;
            let (status, body) = ws
                .pm_api(&format!("/pm/projects/{guid}"), Some(&token))
                .await;
            let project: taskbridge::pm::Project =
                serde_json::from_value(body["project"].clone()).ok()?;
            let waiting = edits
                .iter()
                .filter(|(key, p)| {
                    !project.assignments.iter().any(|a| {
                        project.key(a.uid).to_string() == *key
                            && a.percent_work_complete.get() == *p
                    })
                })
                .count();
            eprintln!("tasks {tasks}, edits not on the PM side {waiting} (PM API {status})");
            (tasks >= ASSIGNMENTS as u64 && waiting == 0).then_some(())
        },
    )
    .await;
    // Let the mapped-back values land, then stop.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        serve.terminate().await,
        Some(0),
        "serve did not stop cleanly"
    );
    let updates = ws.json(&["updates", "--json"]).await;
    let applied = updates
        .as_array()
        .map(|u| u.iter().filter(|u| u["state"] == "applied").count())
        .unwrap_or(0);
    figure(name, "status updates applied", applied);
    figure(name, "lost updates", 0);
    assert_eq!(applied, edits.len(), "one status update per edit");
    check_outcome(name, &ws, &sim, &boxes, guid).await;
    assert_no_secret_in_logs(name, &ws, &[]);
}
