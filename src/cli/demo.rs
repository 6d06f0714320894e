//! `taskbridge demo`: the whole story on embedded defaults, in one process, narrated.
//!
//! Starts the bundled simulator with three mailboxes, imports the sample project, runs the
//! connector (push listener, engine, SQLite state) against it, shows the tasks as they sit in
//! the mailboxes, plays two people updating their tasks in "Outlook", waits for the push
//! notifications and the status updates on the PM side, checks the values mapped back, switches
//! the project to approval and approves a third update, and ends with a table of every check. Exits 0 only if every check passed.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use taskbridge::connector::{Connector, ConnectorConfig, PushListener};
use taskbridge::ews::client::EwsClientConfig;
use taskbridge::ews::transport::Auth;
use taskbridge::listener::{ListenerConfig, ListenerSecret};
use taskbridge::mapping::FieldTable;
use taskbridge::pm::AnyHost;
use taskbridge::pm::embedded::{EmbeddedHost, Policy, UpdateFilter, UpdateState};
use taskbridge::pm::import::{ImportOptions, import_bytes};
use taskbridge::secret::Secret;
use taskbridge::sync::SyncConfig;
use taskbridge_sim::{AuthMode, SimConfig, UserSpec};

use super::EXIT_FAILURE;

/// The bundled sample project.
const SAMPLE: &str = super::init::SAMPLE_PROJECT;

const SERVICE: &str = "taskbridge@sim.example";
const PEOPLE: [(&str, &str); 3] = [
    ("ann@example.com", "Ann Larsen"),
    ("bob@example.com", "Bob Okafor"),
    ("chen@example.com", "Chen Wei"),
];

/// Arguments of `taskbridge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the data directory (its path is printed) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

struct Checks(Vec<(String, bool, String)>);

impl Checks {
    fn record(&mut self, what: &str, ok: bool, detail: String) -> bool {
        println!("  {} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        self.0.push((what.to_string(), ok, detail));
        ok
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `taskbridge demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("taskbridge-demo-{}", std::process::id()));
    let result = rt.block_on(demo(dir.clone()));
    if args.keep {
        eprintln!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn demo(dir: PathBuf) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut checks = Checks(Vec::new());
    std::fs::create_dir_all(&dir)?;
    let http = reqwest::Client::new();

    println!("1. Exchange: the bundled simulator with three mailboxes (Basic auth, impersonation)");
    let password = format!("demo-{}", std::process::id());
    let mut users =
        vec![UserSpec::parse(&format!("{SERVICE}:{password}"), true).map_err(anyhow::Error::msg)?];
    for (smtp, _) in PEOPLE {
        users.push(UserSpec::parse(&format!("{smtp}:pw"), false).map_err(anyhow::Error::msg)?);
    }
    let sim = taskbridge_sim::start(SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        users,
        auth: AuthMode::Basic,
        ..SimConfig::default()
    })
    .await?;
    println!("   EWS endpoint {}", sim.url);
    let admin = sim.admin_url.clone();

    println!(
        "2. PM side: importing the sample project (Microsoft Project XML) into the embedded store"
    );
    let host = EmbeddedHost::open(&dir).await?;
    let project = import_bytes(
        SAMPLE.as_bytes(),
        &ImportOptions {
            time_zone: chrono_tz::Europe::Berlin,
            ..ImportOptions::default()
        },
    )?;
    let guid = project.guid;
    let units = project.sync_units().len();
    let report = host.import(project).await?;
    println!(
        "   \"{}\" ({guid}): {} assignments, {units} of them go to mailboxes",
        report.name, report.added
    );

    println!(
        "3. The connector: push listener, engine, SQLite state in {}",
        dir.display()
    );
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let secret = ListenerSecret::generate();
    let mut exchange = EwsClientConfig::new(
        sim.url.clone(),
        Auth::Basic {
            user: SERVICE.into(),
            password: Secret::new(password),
        },
    );
    exchange.retry.max_attempts = 3;
    let mut listener = ListenerConfig::new(listen, secret);
    listener.path = "/ews/notify".into();
    let connector = Connector::new(
        ConnectorConfig {
            exchange,
            table: FieldTable::default(),
            sync: SyncConfig {
                debounce: Duration::from_millis(300),
                max_debounce: Duration::from_secs(2),
                ..SyncConfig::default()
            },
            state: taskbridge::state::StateLocation::Sqlite(dir.join("state.sqlite")),
            listener: Some(PushListener {
                config: listener,
                public_url: format!("http://{listen}/ews/notify"),
                status_frequency: Duration::from_secs(60),
            }),
            admin: None,
        },
        AnyHost::Embedded(host.clone()),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let connector = std::sync::Arc::new(connector);
        let c = connector.clone();
        let task = tokio::spawn(async move {
            c.run(None, |_| {}, async move {
                let _ = stopped.await;
            })
            .await
        });
        (connector, task)
    };
    let (connector, task) = running;

    println!("4. Publish: one task per assignment in its person's mailbox");
    let tasks_of = |smtp: &'static str| {
        let http = http.clone();
        let admin = admin.clone();
        async move {
            http.get(format!("{admin}mailboxes/{smtp}/tasks"))
                .send()
                .await
                .ok()?
                .json::<Vec<Value>>()
                .await
                .ok()
        }
    };
    let all_tasks = || async {
        let mut all = Vec::new();
        for (smtp, _) in PEOPLE {
            for t in tasks_of(smtp).await? {
                all.push((smtp, t));
            }
        }
        Some(all)
    };
    let published = wait_for(Duration::from_secs(15), || async {
        let all = all_tasks().await?;
        (all.len() >= units).then_some(all)
    })
    .await
    .unwrap_or_default();
    for (smtp, t) in &published {
        println!(
            "   {smtp:<18} {:<50} due {:<10} {:>3}%  {:>6} work",
            t["Subject"].as_str().unwrap_or_default(),
            local_date(&t["DueDate"]),
            t["PercentComplete"].as_f64().unwrap_or_default(),
            minutes_as_hours(&t["TotalWork"])
        );
    }
    checks.record(
        "tasks created in the mailboxes",
        published.len() == units,
        format!("{} of {units}", published.len()),
    );
    let subscribed = wait_for(Duration::from_secs(10), || async {
        let v: Value = http
            .get(format!("{admin}subscriptions"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let n = v.as_array().map(Vec::len).unwrap_or(0);
        (n >= PEOPLE.len()).then_some(n)
    })
    .await;
    checks.record(
        "push subscriptions on the Tasks folders",
        subscribed.is_some(),
        format!("{}", subscribed.unwrap_or(0)),
    );

    let find = |name: &str| {
        published
            .iter()
            .find(|(_, t)| t["Subject"].as_str().is_some_and(|s| s.ends_with(name)))
            .map(|(m, t)| {
                (
                    m.to_string(),
                    t["ItemId"]["Id"].as_str().unwrap_or_default().to_string(),
                )
            })
    };
    println!("5. In \"Outlook\": Ann marks her survey 60% done; Bob completes the order");
    let edits = [
        ("Survey the north abutment", json!({"PercentComplete": 60})),
        ("Order bearing pads", json!({"Status": "Completed"})),
    ];
    for (name, change) in &edits {
        if let Some((smtp, id)) = find(name) {
            let url = format!("{admin}mailboxes/{smtp}/tasks/{}", urlencode(&id));
            let ok = http
                .patch(url)
                .json(change)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            println!(
                "   {smtp}: \"{name}\" {change}  {}",
                if ok { "saved" } else { "FAILED" }
            );
        }
    }

    println!(
        "6. Exchange notifies the listener; the engine reads the items and submits status updates"
    );
    let applied = wait_for(Duration::from_secs(15), || async {
        let list = host
            .status_updates(UpdateFilter {
                project: Some(guid),
                ..UpdateFilter::default()
            })
            .await
            .ok()?;
        let done: Vec<_> = list
            .into_iter()
            .filter(|u| u.state == UpdateState::Applied)
            .collect();
        (done.len() >= edits.len()).then_some(done)
    })
    .await
    .unwrap_or_default();
    let notifications = connector
        .engine()
        .metrics()
        .notifications
        .load(std::sync::atomic::Ordering::Relaxed);
    // Each edit notifies once, and so does the write-back of the PM's values that follows it
    // (Exchange notifies every change, ours too; the engine recognises its own and stops).
    checks.record(
        "push notifications received",
        notifications > 0,
        format!(
            "{notifications} for {} edits: each edit and each write-back of its result notify",
            edits.len()
        ),
    );
    for u in &applied {
        let changes: Vec<String> = u
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} {} -> {}",
                    super::updates::field_name(c.field),
                    super::updates::value(&c.old),
                    super::updates::value(&c.new)
                )
            })
            .collect();
        println!(
            "   status update {} ({}, {}): {}  [{:?}]",
            super::names::short(&u.id.0),
            u.resource_name.as_deref().unwrap_or("?"),
            u.task_name.as_deref().unwrap_or("?"),
            changes.join(", "),
            u.state
        );
    }
    checks.record(
        "status updates applied on the PM side",
        applied.len() == edits.len(),
        format!("{} of {}", applied.len(), edits.len()),
    );

    println!("7. The PM's recomputed values go back to the mailboxes");
    let expected = [
        ("Survey the north abutment", 60.0, 864),
        ("Order bearing pads", 100.0, 480),
    ];
    for (name, percent, actual) in expected {
        let seen = wait_for(Duration::from_secs(10), || async {
            let all = all_tasks().await?;
            let (_, t) = all
                .into_iter()
                .find(|(_, t)| t["Subject"].as_str().is_some_and(|s| s.ends_with(name)))?;
            let ok = t["PercentComplete"].as_f64() == Some(percent)
                && t["ActualWork"].as_i64() == Some(actual);
            ok.then_some(t)
        })
        .await;
        checks.record(
            &format!("\"{name}\" shows the PM's values"),
            seen.is_some(),
            format!(
                "{percent}% done, {} actual work",
                minutes_as_hours(&json!(actual))
            ),
        );
    }

    println!("8. Nothing echoes: our own writes are recognised and not sent back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total = host
        .status_updates(UpdateFilter {
            project: Some(guid),
            ..UpdateFilter::default()
        })
        .await?
        .len();
    checks.record(
        "no further status update after the write-back",
        total == edits.len(),
        format!("{total} in all"),
    );

    println!(
        "9. Approval: the project now asks a status manager first; Ann reports 80% and the \
         update waits"
    );
    host.set_policy(guid, Policy::Approval).await?;
    println!("   taskbridge projects set-policy {guid} approval");
    let mut approved = false;
    if let Some((smtp, id)) = find("Survey the north abutment") {
        let url = format!("{admin}mailboxes/{smtp}/tasks/{}", urlencode(&id));
        let _ = http
            .patch(url)
            .json(&json!({"PercentComplete": 80}))
            .send()
            .await;
        let pending = wait_for(Duration::from_secs(15), || async {
            let list = host
                .status_updates(UpdateFilter {
                    project: Some(guid),
                    state: Some(UpdateState::Pending),
                    ..UpdateFilter::default()
                })
                .await
                .ok()?;
            list.into_iter().next()
        })
        .await;
        checks.record(
            "with approval, the update waits for the status manager",
            pending.is_some(),
            pending
                .as_ref()
                .map(|u| format!("update {} pending", super::names::short(&u.id.0)))
                .unwrap_or_else(|| "none pending".into()),
        );
        if let Some(u) = pending {
            println!(
                "   taskbridge updates approve {}   (the status manager approves)",
                super::names::short(&u.id.0)
            );
            host.approve(&u.id, "status manager", false).await?;
            let seen = wait_for(Duration::from_secs(10), || async {
                let all = all_tasks().await?;
                let (_, t) = all.into_iter().find(|(_, t)| {
                    t["Subject"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("Survey the north abutment"))
                })?;
                (t["PercentComplete"].as_f64() == Some(80.0)).then_some(t)
            })
            .await;
            approved = seen.is_some();
        }
    }
    checks.record(
        "the approved update is applied and mapped back",
        approved,
        if approved {
            "80% in the plan and the mailbox".into()
        } else {
            "not seen".into()
        },
    );

    let _ = stop.send(());
    let run_result = task.await?;
    checks.record(
        "connector stopped cleanly",
        run_result.is_ok(),
        run_result
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ok".into()),
    );
    sim.shutdown().await;
    host.close().await;

    println!();
    let mut table = super::table::Table::new(&[
        super::table::Column::left("CHECK", 60),
        super::table::Column::left("RESULT", 6),
        super::table::Column::left("DETAIL", 0),
    ]);
    for (what, ok, detail) in &checks.0 {
        table.row(vec![
            what.clone(),
            if *ok { "ok" } else { "FAIL" }.to_string(),
            detail.clone(),
        ]);
    }
    println!("{}", table.render());
    let failed = checks.0.iter().filter(|c| !c.1).count();
    println!(
        "\n{} checks, {failed} failed, {:.1} s",
        checks.0.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Whole minutes of a task's work as hours for people (`1440` is `24h`).
fn minutes_as_hours(v: &Value) -> String {
    super::table::hours(v.as_f64().unwrap_or_default() * 60.0)
}

/// A due date as the owner sees it: Exchange stores local midnight as a UTC instant.
fn local_date(v: &Value) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| {
            d.with_timezone(&chrono_tz::Europe::Berlin)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
