//! Fail-over: two `serve` instances over one PostgreSQL (sync state and PM store both) and the
//! simulator, 1,000 assignments over 50 mailboxes, user edits all along while one instance is
//! SIGKILLed every 10 seconds and restarted. Every edit is applied once on the PM side and
//! mapped back, no task is duplicated or missing, every mailbox is owned again within one lease
//! period, and the push notifications (all sent to one instance, as a load balancer might) reach
//! the owner through the database. A second run restarts the database under a running pair.
//!
//! Leases are short (4 s, renewed every 2 s) so that the run stays near two minutes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

use taskbridge::pm::ProjectGuid;

use crate::external::postgres::Cluster;
use crate::support::*;

const ASSIGNMENTS: usize = 1000;
const MAILBOXES: usize = 50;
const LEASE_SECONDS: u64 = 4;
const RENEW_SECONDS: u64 = 2;

/// One `serve` instance of the pair: its own listener and admin ports.
struct Instance {
    proc: Option<Proc>,
    listen_port: u16,
    admin_port: u16,
    starts: usize,
}

impl Instance {
    fn new(listen_port: u16, admin_port: u16) -> Instance {
        Instance {
            proc: None,
            listen_port,
            admin_port,
            starts: 0,
        }
    }

    /// Starts `serve`; every instance's subscriptions name `push_port` (the load balancer's
    /// choice), so the other instance's notifications arrive here.
    fn start(&mut self, ws: &Workspace, push_port: u16) {
        let log = ws.log_file(&format!("serve-{}-{}", self.admin_port, self.starts));
        let file = std::fs::File::create(&log).expect("log file");
        let out = std::fs::File::create(log.with_extension("out")).expect("out file");
        let child = ws
            .command(&["serve"])
            .env(
                "TASKBRIDGE_LISTENER_LISTEN",
                format!("127.0.0.1:{}", self.listen_port),
            )
            .env(
                "TASKBRIDGE_LISTENER_PUBLIC_URL",
                format!("http://127.0.0.1:{push_port}/ews/notify"),
            )
            .env(
                "TASKBRIDGE_ADMIN_LISTEN",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .expect("spawn serve");
        self.starts += 1;
        self.proc = Some(Proc { child, log });
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }

    /// The last lines of the running process's log, for a failure message.
    fn log_tail(&self) -> String {
        let Some(p) = &self.proc else {
            return String::new();
        };
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A line of `/healthz` (`instance: …`, `leases: …`), once the instance answers.
    async fn health(&self, prefix: &str) -> Option<String> {
        let body = reqwest::get(format!("http://127.0.0.1:{}/healthz", self.admin_port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
    }

    /// The instance id `/healthz` names.
    async fn id(&self) -> Option<String> {
        self.health("instance: ").await
    }

    /// How many mailbox leases `/healthz` says the instance holds.
    async fn leases(&self) -> Option<usize> {
        self.health("leases: ").await?.parse().ok()
    }
}

/// The owner of every mailbox, as `taskbridge status --json` shows it.
async fn owners(ws: &Workspace) -> BTreeMap<String, String> {
    let out = ws.run(&["status", "--json"]).await;
    let Ok(Value::Array(lines)) = serde_json::from_str::<Value>(&out.stdout) else {
        return BTreeMap::new();
    };
    lines
        .iter()
        .filter_map(|l| {
            Some((
                l["mailbox"].as_str()?.to_string(),
                l["owner"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The PM side's percent complete of every assignment, read through whichever instance's
/// PM API answers.
async fn pm_percents(
    ws: &Workspace,
    instances: &[Instance],
    guid: ProjectGuid,
) -> Option<BTreeMap<String, u8>> {
    let token = ws.admin_token();
    for i in instances {
        let Ok(resp) = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/pm/projects/{guid}",
                i.admin_port
            ))
            .bearer_auth(&token)
            .send()
            .await
        else {
            continue;
        };
        let Ok(body) = resp.json::<Value>().await else {
            continue;
        };
        let Ok(project) =
            serde_json::from_value::<taskbridge::pm::Project>(body["project"].clone())
        else {
            continue;
        };
        return Some(
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
        );
    }
    None
}

/// How many notifications the instances handed to another instance (their debug lines).
fn handed_over(ws: &Workspace) -> usize {
    std::fs::read_dir(ws.log_dir())
        .expect("log dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("serve"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|log| {
            log.lines()
                .filter(|l| l.contains("notification for a mailbox held elsewhere; handed over"))
                .count()
        })
        .sum()
}

/// Notifications still waiting in the state store's queue.
async fn queued_notices(url: &str) -> Option<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT count(*) FROM notice_queue", &[])
        .await
        .ok()?;
    Some(row.get(0))
}

/// The workspace on `cluster`'s databases, the simulator, the imported project and the pair.
async fn setup(
    name: &str,
    cluster: &Cluster,
    seed: u128,
) -> (Workspace, SimProc, Vec<String>, ProjectGuid, [Instance; 2]) {
    // Debug for the engine's run loop: it logs each notification handed to another instance.
    let mut ws = Workspace::new("info,taskbridge::sync::run=debug");
    let db = name.replace(['/', '-'], "_");
    let url = cluster.create_database(&db);
    ws.set_env("TASKBRIDGE_STATE_URL", &url);
    ws.set_env("TASKBRIDGE_PM_URL", &url);
    ws.set_env("TASKBRIDGE_CLUSTER_LEASE_SECONDS", LEASE_SECONDS);
    ws.set_env("TASKBRIDGE_CLUSTER_RENEW_SECONDS", RENEW_SECONDS);
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    // A push lost with a killed instance is found by the next reconciliation.
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 5);
    let boxes = mailboxes(MAILBOXES);
    let sim = SimProc::start(&ws, &boxes, &[]);
    let guid = ProjectGuid(Uuid::from_u128(seed));
    let imported = ws.import(&project_json(guid, ASSIGNMENTS, &boxes)).await;
    assert_eq!(imported, guid);
    let push_port = ws.listen_port;
    let mut pair = [
        Instance::new(push_port, ws.admin_port),
        Instance::new(free_port(), free_port()),
    ];
    for i in &mut pair {
        i.start(&ws, push_port);
    }
    figure(name, "assignments", ASSIGNMENTS);
    figure(name, "mailboxes", MAILBOXES);
    (ws, sim, boxes, guid, pair)
}

/// Edits the percent complete of one task no edit touched yet, in a random mailbox.
async fn edit_one(
    admin: &Admin,
    boxes: &[String],
    rng: &mut StdRng,
    edits: &mut BTreeMap<String, u8>,
) {
    let mailbox = &boxes[rng.gen_range(0..boxes.len())];
    let tasks = admin.tasks(mailbox).await;
    let Some((key, task)) = tasks.iter().find_map(|t| {
        let key = tag_of(t)?;
        (!edits.contains_key(&key)).then_some((key, t))
    }) else {
        return;
    };
    let p = rng.gen_range(1..=99u8);
    let Some(id) = task["ItemId"]["Id"].as_str() else {
        return;
    };
    admin
        .patch(mailbox, id, &serde_json::json!({ "PercentComplete": p }))
        .await;
    edits.insert(key, p);
}

/// Waits until every edit is on the PM side, then checks the outcome: one applied status
/// update per edit, the edited value in the mailbox (mapped back, not reverted), one task per
/// assignment and none extra.
async fn check_outcome(
    name: &str,
    ws: &Workspace,
    sim: &SimProc,
    boxes: &[String],
    guid: ProjectGuid,
    pair: &[Instance],
    edits: &BTreeMap<String, u8>,
) {
    let admin = Admin::new(sim);
    wait_until(
        "every edit on the PM side",
        Duration::from_secs(180),
        || async {
            let pm = pm_percents(ws, pair, guid).await?;
            let waiting = edits.iter().filter(|(k, p)| pm.get(*k) != Some(p)).count();
            eprintln!("edits not on the PM side yet: {waiting}");
            (waiting == 0).then_some(())
        },
    )
    .await;
    let updates = ws.json(&["updates", "--json"]).await;
    let updates = updates.as_array().cloned().unwrap_or_default();
    let applied: Vec<&Value> = updates.iter().filter(|u| u["state"] == "applied").collect();
    figure(name, "status updates applied", applied.len());
    assert_eq!(
        applied.len(),
        edits.len(),
        "one applied status update per edit, no edit applied twice"
    );
    // Mapped back: the mailbox keeps the edited value once the PM's outcome is written.
    wait_until(
        "every edited value in its mailbox",
        Duration::from_secs(120),
        || async {
            let census = census(&admin, boxes, &keys(guid, ASSIGNMENTS)).await;
            let wrong = edits
                .iter()
                .filter(|(k, p)| {
                    census.by_key.get(*k).is_none_or(|tasks| {
                        tasks
                            .iter()
                            .any(|(_, t)| t["PercentComplete"].as_f64() != Some(f64::from(**p)))
                    })
                })
                .count();
            eprintln!("edited tasks not showing their value: {wrong}");
            (wrong == 0).then_some(census)
        },
    )
    .await;
    let census = census(&admin, boxes, &keys(guid, ASSIGNMENTS)).await;
    figure(name, "tasks in the mailboxes", census.tasks);
    figure(name, "duplicates", census.duplicates);
    figure(name, "missing tasks", census.missing.len());
    assert_eq!(census.duplicates, 0, "no task duplicated");
    assert!(census.missing.is_empty(), "missing: {:?}", census.missing);
    assert_eq!(census.untagged, 0);
    assert_eq!(census.tasks, ASSIGNMENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_killed_every_10_s_loses_and_doubles_nothing() {
    let _serial = serial().await;
    let name = "failover/sigkill";
    let Some(cluster) = Cluster::start("the fail-over chaos test") else {
        return;
    };
    let (ws, sim, boxes, guid, mut pair) = setup(name, &cluster, 0xfa11_0001).await;
    let url = ws
        .env
        .iter()
        .find_map(|(k, v)| (k == "TASKBRIDGE_STATE_URL").then(|| v.clone()))
        .expect("state url");
    let admin = Admin::new(&sim);
    wait_until("the first publish", Duration::from_secs(180), || async {
        (admin.task_count().await? >= ASSIGNMENTS as u64).then_some(())
    })
    .await;
    let mut rng = StdRng::seed_from_u64(0x5eed_fa11);
    let mut edits = BTreeMap::new();
    let mut takeovers = Vec::new();
    for round in 0..6 {
        // Ten seconds of edits, then a kill of one instance, alternating.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            edit_one(&admin, &boxes, &mut rng, &mut edits).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let victim = round % 2;
        let Some(dead) = pair[victim].id().await else {
            panic!(
                "instance {victim} does not answer /healthz ({}); the end of its log:\n{}",
                if pair[victim].running() {
                    "still running"
                } else {
                    "exited"
                },
                pair[victim].log_tail()
            );
        };
        assert!(pair[1 - victim].running(), "the other instance died");
        pair[victim].kill9();
        let killed_at = Instant::now();
        // The survivor takes the dead instance's mailboxes over: all of them once the dead
        // one's heartbeat and leases ran out.
        let survivor = &pair[1 - victim];
        let taken = wait_until(
            "the survivor to hold every mailbox",
            Duration::from_secs(60),
            || async { (survivor.leases().await? == MAILBOXES).then(|| killed_at.elapsed()) },
        )
        .await;
        takeovers.push(taken);
        // The dead instance renewed at most one lease period before its leases run out; the
        // survivor's lease rounds come every renewal period. One more round of slack for a
        // loaded machine: this bounds the protocol, not the speed.
        assert!(
            taken <= Duration::from_secs(LEASE_SECONDS + 2 * RENEW_SECONDS),
            "mailboxes owned again after {taken:?}"
        );
        let owners = owners(&ws).await;
        assert!(
            owners.len() == MAILBOXES && owners.values().all(|o| !o.is_empty() && *o != dead),
            "`status` names a live owner for every mailbox: {owners:?}"
        );
        pair[victim].start(&ws, ws.listen_port);
    }
    let worst = takeovers.iter().max().copied().unwrap_or_default();
    figure(name, "SIGKILLs", takeovers.len());
    figure(name, "user edits", edits.len());
    figure(name, "longest take-over (ms)", worst.as_millis());
    check_outcome(name, &ws, &sim, &boxes, guid, &pair, &edits).await;
    // Every subscription pushes to the first instance: the second one's mailboxes were told of
    // their edits through the queue, and the owners took every queued notification.
    let handed = handed_over(&ws);
    figure(name, "notifications handed to the owner", handed);
    assert!(handed > 0, "no notification reached the non-owner instance");
    wait_until(
        "the notice queue drained",
        Duration::from_secs(30),
        || async { (queued_notices(&url).await? == 0).then_some(()) },
    )
    .await;
    for i in &mut pair {
        if let Some(p) = i.proc.as_mut() {
            assert_eq!(p.terminate().await, Some(0), "serve did not stop cleanly");
        }
    }
    assert_no_secret_in_logs(name, &ws, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_under_two_instances_loses_nothing() {
    let _serial = serial().await;
    let name = "failover/database-restart";
    let Some(cluster) = Cluster::start("the database-restart chaos test") else {
        return;
    };
    let (ws, sim, boxes, guid, mut pair) = setup(name, &cluster, 0xfa11_0002).await;
    let admin = Admin::new(&sim);
    wait_until("the first publish", Duration::from_secs(180), || async {
        (admin.task_count().await? >= ASSIGNMENTS as u64).then_some(())
    })
    .await;
    let mut rng = StdRng::seed_from_u64(0x5eed_db00);
    let mut edits = BTreeMap::new();
    for _ in 0..20 {
        edit_one(&admin, &boxes, &mut rng, &mut edits).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The database goes away for longer than a lease, with edits made meanwhile.
    // pg_ctl waits for the server: off the runtime's worker.
    tokio::task::block_in_place(|| cluster.kill());
    for _ in 0..24 {
        edit_one(&admin, &boxes, &mut rng, &mut edits).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::task::block_in_place(|| cluster.restart());
    for _ in 0..20 {
        edit_one(&admin, &boxes, &mut rng, &mut edits).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (n, i) in pair.iter_mut().enumerate() {
        assert!(i.running(), "instance {n} died with the database");
    }
    figure(name, "user edits", edits.len());
    check_outcome(name, &ws, &sim, &boxes, guid, &pair, &edits).await;
    let owners = owners(&ws).await;
    assert_eq!(owners.len(), MAILBOXES);
    assert!(owners.values().all(|o| !o.is_empty()), "{owners:?}");
    for i in &mut pair {
        if let Some(p) = i.proc.as_mut() {
            assert_eq!(p.terminate().await, Some(0), "serve did not stop cleanly");
        }
    }
}
