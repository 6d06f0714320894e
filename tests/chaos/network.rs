//! A hostile network and server: 1,000 user edits while the simulator throttles 20% of the
//! requests (all three shapes), fails 5% (HTTP 500 or a dropped connection), loses 30% of the
//! push deliveries and gives 1% of the tasks a new change key by itself. Every edit must reach
//! the PM side, both sides must converge, nothing may be duplicated, no request may arrive
//! inside a back-off window the simulator announced, and retries must stay bounded.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use taskbridge::mapping::FieldTable;
use taskbridge::pm::{Project, ProjectGuid};
use taskbridge::sync::ProjectView;

use crate::support::*;

const NAME: &str = "network";
const MAILBOXES: usize = 6;
const ASSIGNMENTS: usize = 300;
const ROUNDS: usize = 10;
const EDITS_PER_ROUND: usize = 100;
/// Attempts of a write before an item is parked (the `sync.max_attempts` default).
const MAX_ATTEMPTS: u64 = 3;
/// How long the items of a mailbox over its quota are watched while parked.
const PARKED_WINDOW: Duration = Duration::from_secs(10);
/// Edits of the one task a user keeps changing at the end (one every 10 ms).
const STORM_EDITS: usize = 300;

const FAULTS: &[&str] = &[
    "--throttle",
    "0.2",
    "--back-off-ms",
    "100",
    "--fail",
    "0.05",
    "--drop-push",
    "0.3",
    "--spontaneous-changekey",
    "0.01",
    "--seed",
    "20260310",
    "--push-time-scale",
    "0.01",
];

/// The project as the PM API shows it.
async fn pm_project(ws: &Workspace, guid: ProjectGuid) -> Option<Project> {
    let (status, body) = ws
        .pm_api(&format!("/pm/projects/{guid}"), Some(&ws.admin_token()))
        .await;
    if status != 200 {
        return None;
    }
    serde_json::from_value(body["project"].clone()).ok()
}

/// Percent complete per assignment key on the PM side.
fn pm_percents(project: &Project) -> HashMap<String, u8> {
    project
        .assignments
        .iter()
        .map(|a| {
            (
                project.key(a.uid).to_string(),
                a.percent_work_complete.get(),
            )
        })
        .collect()
}

/// Keys whose mailbox task does not yet show the PM's percent complete, actual work and total
/// work (the PM side may recompute the total when the percent drops: that write-back is the
/// last one of its edit, and until it is done the connector is not idle).
async fn not_converged(
    ws: &Workspace,
    admin: &Admin,
    boxes: &[String],
    guid: ProjectGuid,
) -> Option<Vec<String>> {
    let project = pm_project(ws, guid).await?;
    let view = ProjectView::new(project);
    let table = FieldTable::default();
    let mut mail: HashMap<String, Value> = HashMap::new();
    for m in boxes {
        for t in admin.tasks(m).await {
            if let Some(tag) = tag_of(&t) {
                mail.insert(tag, t);
            }
        }
    }
    let mut off = Vec::new();
    for unit in view.units() {
        let (desired, _) = view.desired(&table, unit.assignment.uid)?;
        let key = unit.key.to_string();
        let Some(task) = mail.get(&key) else {
            off.push(format!("{key}: no task"));
            continue;
        };
        let percent = task["PercentComplete"].as_f64().map(|p| p.round() as i64);
        let want_percent = desired.percent_complete.map(|p| i64::from(p.get()));
        let actual = task["ActualWork"].as_i64();
        let want_actual = desired.actual_work.map(i64::from);
        let total = task["TotalWork"].as_i64();
        let want_total = desired.total_work.map(i64::from);
        if percent != want_percent || actual != want_actual || total != want_total {
            off.push(format!(
                "{key}: mail {percent:?}% {actual:?} of {total:?} min, \
                 pm {want_percent:?}% {want_actual:?} of {want_total:?} min"
            ));
        }
    }
    Some(off)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_edits_through_throttling_failures_and_lost_pushes_all_reach_the_pm_side() {
    let _serial = serial().await;
    let mut ws = Workspace::new("debug");
    // One request in flight per caller makes the simulator's count of requests inside a
    // back-off window exact (see docs/SIMULATOR.md); the engine still works on every mailbox
    // at once, they queue for the one slot.
    ws.set_env("TASKBRIDGE_EXCHANGE_TOTAL_IN_FLIGHT", 1);
    ws.set_env("TASKBRIDGE_EXCHANGE_PER_MAILBOX_IN_FLIGHT", 1);
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    ws.set_env("TASKBRIDGE_SYNC_MAX_DEBOUNCE_MS", 1000);
    // Reconciliation heals what the lost push deliveries did not say.
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 3);
    let boxes = mailboxes(MAILBOXES);
    let guid = ProjectGuid(Uuid::from_u128(0xc4a0_5003));
    // Publish on a quiet simulator; the storm is for the edits.
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
    wait_until("serve to be ready", Duration::from_secs(60), || async {
        let (status, _) = ws.pm_api("/pm/projects", Some(&ws.admin_token())).await;
        (status == 200).then_some(())
    })
    .await;

    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
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
        // Bounded: an edit that has not arrived after five minutes is counted as lost.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let missing = loop {
            let missing = match pm_project(&ws, guid).await {
                Some(project) => {
                    let pm = pm_percents(&project);
                    chosen
                        .iter()
                        .filter(|k| pm.get(*k) != expected.get(*k))
                        .count()
                }
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
    wait_until(
        "both sides to converge",
        Duration::from_secs(300),
        || async {
            let off = not_converged(&ws, &admin, &boxes, guid).await?;
            off.is_empty().then_some(())
        },
    )
    .await;
    let converge_time = started.elapsed();

    let counters = admin.counters().await;
    eprintln!("simulator counters after the edits: {counters}");
    let status = ws.json(&["status", "--json"]).await;
    let lines = status.as_array().expect("status lines").clone();
    let parked = lines.iter().filter(|l| l["state"] == "parked").count();
    let most_attempts = lines
        .iter()
        .filter_map(|l| l["attempts"].as_u64())
        .max()
        .unwrap_or(0);
    let updates = ws.json(&["updates", "--json"]).await;
    let updates = updates.as_array().expect("updates").clone();
    let applied = updates.iter().filter(|u| u["state"] == "applied").count();

    // Idle: after convergence nothing is written, whatever the faults do meanwhile.
    admin.reset_counters().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = admin.counters().await;
    let idle_writes: u64 = ["CreateItem", "UpdateItem", "DeleteItem"]
        .iter()
        .filter_map(|op| idle["operations"][op].as_u64())
        .sum();
    let idle_requests = idle["requests"].as_u64().unwrap_or(0);
    let idle_inside = idle["inside_back_off"].as_u64().unwrap_or(0);

    // A user who edits one task faster than the connector can write it back: every write
    // back meets a stale change key. The attempts stay bounded (the item is parked and
    // reported after `max_attempts` failed passes), and the last edit still arrives.
    let (storm_key, (storm_mailbox, storm_id)) = items.iter().next().expect("a task");
    let storm_admin = admin.clone();
    let (m, id) = (storm_mailbox.clone(), storm_id.clone());
    let storm = tokio::spawn(async move {
        let mut last = 0u8;
        for i in 0..STORM_EDITS {
            last = (i % 97) as u8 + 2;
            storm_admin
                .patch(&m, &id, &json!({ "PercentComplete": last }))
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    });
    let mut storm_attempts = 0u64;
    let mut storm_parked = false;
    while !storm.is_finished() {
        let status = ws.json(&["status", "--json"]).await;
        if let Some(line) = status
            .as_array()
            .and_then(|a| a.iter().find(|l| l["key"] == storm_key.as_str()))
        {
            storm_attempts = storm_attempts.max(line["attempts"].as_u64().unwrap_or(0));
            storm_parked |= line["state"] == "parked";
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let storm_last = storm.await.expect("storm");
    wait_until(
        "the last edit of the storm on the PM side, the task synced",
        Duration::from_secs(300),
        || async {
            let project = pm_project(&ws, guid).await?;
            let status = ws.json(&["status", "--json"]).await;
            let synced = status
                .as_array()?
                .iter()
                .find(|l| l["key"] == storm_key.as_str())?["state"]
                == "synced";
            (pm_percents(&project).get(storm_key) == Some(&storm_last) && synced).then_some(())
        },
    )
    .await;
    wait_until(
        "both sides to converge after the storm",
        Duration::from_secs(300),
        || async {
            let off = not_converged(&ws, &admin, &boxes, guid).await?;
            off.is_empty().then_some(())
        },
    )
    .await;

    // A mailbox over its quota refuses every write for good: the items whose values must go
    // back to it are parked and reported, their edits still reach the PM side, and they are
    // not retried on every pass. Once the quota is cleared, reconciliation finishes them.
    let full = &boxes[0];
    admin.set_quota(full, true).await;
    let parked_keys: Vec<String> = items
        .iter()
        .filter(|(_, (m, _))| m == full)
        .map(|(k, _)| k.clone())
        .take(3)
        .collect();
    for key in &parked_keys {
        let (m, id) = &items[key];
        let p = expected[key] % 97 + 2;
        admin.patch(m, id, &json!({ "PercentComplete": p })).await;
        expected.insert(key.clone(), p);
    }
    let parked_lines = wait_until(
        "the items of the full mailbox to be parked",
        Duration::from_secs(300),
        || async {
            let status = ws.json(&["status", "--json"]).await;
            let lines: Vec<Value> = status
                .as_array()?
                .iter()
                .filter(|l| parked_keys.iter().any(|k| l["key"] == k.as_str()))
                .cloned()
                .collect();
            lines
                .iter()
                .all(|l| l["state"] == "parked")
                .then_some(lines)
        },
    )
    .await;
    let pm_has_edits = pm_project(&ws, guid)
        .await
        .map(|p| {
            let pm = pm_percents(&p);
            parked_keys.iter().all(|k| pm.get(k) == expected.get(k))
        })
        .unwrap_or(false);
    // Other tasks of the full mailbox keep changing (new change keys, no new values), so
    // that its passes come one after the other; a parked item must wait through them.
    let bumped: Vec<&String> = items
        .iter()
        .filter(|(k, (m, _))| m == full && !parked_keys.contains(k))
        .map(|(_, (_, id))| id)
        .take(5)
        .collect();
    let before = admin.counters().await;
    let window = std::time::Instant::now();
    let mut bumps = 0usize;
    while window.elapsed() < PARKED_WINDOW {
        let id = bumped[bumps % bumped.len()];
        admin.bump(full, id).await;
        bumps += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = admin.counters().await;
    let parked_writes = after["operations"]["UpdateItem"].as_u64().unwrap_or(0)
        - before["operations"]["UpdateItem"].as_u64().unwrap_or(0);
    let status = ws.json(&["status", "--json"]).await;
    let parked_attempts = status
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| parked_keys.iter().any(|k| l["key"] == k.as_str()))
                .filter_map(|l| l["attempts"].as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    admin.set_quota(full, false).await;
    wait_until(
        "both sides to converge once the quota is cleared",
        Duration::from_secs(300),
        || async {
            let off = not_converged(&ws, &admin, &boxes, guid).await?;
            off.is_empty().then_some(())
        },
    )
    .await;

    assert!(serve.running(), "serve died");
    let exit = serve.terminate().await;

    figure(NAME, "user edits", edits);
    figure(NAME, "edits that reached the PM side", edits - lost);
    figure(NAME, "lost updates", lost);
    figure(NAME, "status updates applied", applied);
    figure(NAME, "EWS requests", &counters["requests"]);
    figure(NAME, "throttled (all three shapes)", &counters["throttled"]);
    figure(NAME, "failed (HTTP 500 or dropped)", &counters["failed"]);
    figure(NAME, "push deliveries dropped", &counters["push_dropped"]);
    figure(NAME, "push deliveries made", &counters["push_sent"]);
    figure(
        NAME,
        "spontaneous change keys",
        &counters["spontaneous_changekeys"],
    );
    figure(
        NAME,
        "requests inside an announced back-off window",
        &counters["inside_back_off"],
    );
    figure(
        NAME,
        "most requests in flight at once",
        &counters["max_in_flight"],
    );
    figure(NAME, "parked items", parked);
    figure(NAME, "most attempts of an item", most_attempts);
    figure(
        NAME,
        "seconds for the edits / until converged",
        format!(
            "{:.0} / {:.0}",
            edit_time.as_secs_f64(),
            converge_time.as_secs_f64()
        ),
    );
    figure(
        NAME,
        "requests / writes in 10 s idle",
        format!("{idle_requests} / {idle_writes}"),
    );
    figure(
        NAME,
        "mailbox over quota: items parked / bumps of other tasks / UpdateItem while parked (10 s) / most attempts",
        format!(
            "{} / {bumps} / {parked_writes} / {parked_attempts}",
            parked_lines.len()
        ),
    );
    figure(
        NAME,
        "edit storm on one task: edits / most attempts seen / parked seen",
        format!("{STORM_EDITS} / {storm_attempts} / {storm_parked}"),
    );

    assert_eq!(lost, 0);
    assert_eq!(exit, Some(0), "serve did not stop cleanly");
    assert_eq!(counters["max_in_flight"], 1, "{counters}");
    assert_eq!(counters["inside_back_off"], 0, "{counters}");
    assert_eq!(idle_inside, 0, "{idle}");
    assert_eq!(idle_writes, 0, "writes while idle: {idle}");
    assert!(
        most_attempts <= MAX_ATTEMPTS,
        "an item took {most_attempts} attempts"
    );
    assert!(
        storm_attempts <= MAX_ATTEMPTS,
        "attempts grew past the bound"
    );
    assert!(
        pm_has_edits,
        "the edits in the full mailbox did not reach the PM side"
    );
    assert!(
        parked_lines.iter().all(|l| l["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ErrorQuotaExceeded")),
        "{parked_lines:?}"
    );
    // At most one write per parked item per reconciliation (every 3 s) in the window, however
    // many passes the bumps caused.
    let bound = parked_keys.len() as u64 * (PARKED_WINDOW.as_secs() / 3 + 2);
    assert!(
        parked_writes <= bound,
        "{parked_writes} writes of parked items in {PARKED_WINDOW:?} ({bumps} bumps)"
    );
    assert_eq!(parked, 0, "parked items after the edits");
    assert!(
        lines.iter().all(|l| l["state"] == "synced"),
        "not all synced"
    );
    // Each edit became one status update, whatever was retried.
    assert_eq!(applied, edits, "status updates applied");

    // The whole picture, on a quiet simulator over the same state.
    sim.restart_with(&ws, &boxes, &[]);
    let admin = Admin::new(&sim);
    let census = census(&admin, &boxes, &keys(guid, ASSIGNMENTS)).await;
    figure(NAME, "duplicates", census.duplicates);
    figure(NAME, "missing tasks", census.missing.len());
    assert_eq!(census.duplicates, 0);
    assert!(census.missing.is_empty(), "{:?}", census.missing);
    assert_eq!(census.tasks, ASSIGNMENTS);
    let (compared, mismatches) = compare_values(&ws, &sim.url).await;
    figure(NAME, "fields compared PM vs mailbox", compared);
    figure(NAME, "fields that differ", mismatches.len());
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    let users: Vec<(String, String)> = (0..MAILBOXES)
        .map(|i| ("owner password".to_string(), format!("owner-pw-{i}")))
        .collect();
    assert_no_secret_in_logs(NAME, &ws, &users);
}
