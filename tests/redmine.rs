//! The Redmine host against a real Redmine (Debian's package, run by `scripts/redmine.sh`) and
//! the simulator: every test makes its own users, project and issues through Redmine's REST
//! API, publishes them with the engine, plays the owners' Outlook edits on the simulator and
//! reads the result back from Redmine's API (time entries included).

mod external;
mod harness;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use external::redmine::Redmine;
use harness::{id_of, start_sim, urlencode};
use taskbridge::ews::client::{EwsClient, EwsClientConfig};
use taskbridge::ews::transport::Auth;
use taskbridge::exchange::EwsMailboxStore;
use taskbridge::mapping::{FieldTable, MappingConfig};
use taskbridge::pm::embedded::{UpdateFilter, UpdateState};
use taskbridge::pm::redmine::{RedmineConfig, RedmineHost, project_guid};
use taskbridge::pm::{HostEvent, PmHost, ProjectGuid, UpdateOutcome};
use taskbridge::secret::Secret;
use taskbridge::state::{MailboxAddress, SqliteStore, StateStore};
use taskbridge::sync::{BatchLimits, Engine, PublishOptions, SyncConfig};
use taskbridge_sim::{SimConfig, SimHandle};

type RedmineEngine = Engine<RedmineHost, EwsMailboxStore<EwsClient>, SqliteStore>;

/// One test's world: a Redmine project with its members, the simulator with their mailboxes,
/// and an engine over the Redmine host.
struct World {
    /// The host's settings (to connect a second host, as another process would).
    config: RedmineConfig,
    redmine: Redmine,
    sim: SimHandle,
    host: RedmineHost,
    engine: RedmineEngine,
    guid: ProjectGuid,
    project: i64,
    /// (login, mailbox, Redmine user id) of each member.
    users: Vec<(String, String, i64)>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// A fresh world of `members` people, or `None` when Redmine is not installed.
async fn world(what: &str, members: usize, fields: &[(&str, &str)]) -> Option<World> {
    world_with(what, members, fields, false).await
}

/// [`world`], with status updates waiting for approval when `approval`.
async fn world_with(
    what: &str,
    members: usize,
    fields: &[(&str, &str)],
    approval: bool,
) -> Option<World> {
    let redmine = Redmine::start(what)?;
    let turn = external::redmine::TURN.lock().await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let mut users = Vec::new();
    for i in 0..members {
        let login = format!("u{i}{tag}");
        let mail = format!("{login}@example.com");
        let id = redmine.user(&login, &mail).await;
        users.push((login, mail, id));
    }
    let identifier = format!("p{tag}");
    let ids: Vec<i64> = users.iter().map(|u| u.2).collect();
    let project = redmine.project(&identifier, &ids).await;
    let specs: Vec<String> = users.iter().map(|u| format!("{}:pw", u.1)).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let sim = start_sim(SimConfig::for_tests(&specs)).await;
    let mut config = RedmineConfig::new(
        redmine.url.clone(),
        Secret::new(redmine.key.clone()),
        vec![identifier.clone()],
    );
    config.poll_interval = Duration::from_millis(300);
    config.time_entries_poll_interval = Duration::from_millis(300);
    let dir = tempfile::tempdir().expect("tempdir");
    config.updates_file = Some(dir.path().join("redmine-updates.sqlite"));
    config.approval = approval;
    let host = RedmineHost::connect(config.clone()).expect("host");
    let mut mapping = MappingConfig::default();
    for (field, setting) in fields {
        mapping.fields.insert(
            field.to_string(),
            taskbridge::mapping::FieldSetting::Direction(setting.to_string()),
        );
    }
    let table = FieldTable::from_config(&mapping).expect("mapping");
    let client = EwsClient::new(EwsClientConfig::new(sim.url.clone(), Auth::None)).expect("client");
    let store = EwsMailboxStore::new(
        client,
        Arc::new(table.clone()),
        BatchLimits {
            write: 50,
            fetch: 10,
        },
    );
    let state = SqliteStore::open(&dir.path().join("state.sqlite")).expect("state");
    let sync = SyncConfig {
        debounce: Duration::ZERO,
        max_debounce: Duration::ZERO,
        clock_skew: Duration::ZERO,
        ..SyncConfig::default()
    };
    let engine = Engine::new(host.clone(), store, state, table, sync);
    Some(World {
        config,
        guid: project_guid(&redmine.url, &identifier),
        redmine,
        sim,
        host,
        engine,
        project,
        users,
        http: reqwest::Client::new(),
        _dir: dir,
        _turn: turn,
    })
}

impl World {
    async fn publish(&self) {
        self.engine
            .publish(self.guid, PublishOptions::default())
            .await
            .expect("publish");
    }

    async fn tasks(&self, user: usize) -> Vec<Value> {
        self.http
            .get(format!(
                "{}mailboxes/{}/tasks",
                self.sim.admin_url, self.users[user].1
            ))
            .send()
            .await
            .expect("admin")
            .json()
            .await
            .expect("json")
    }

    /// The one task in a member's mailbox.
    async fn task(&self, user: usize) -> Value {
        let tasks = self.tasks(user).await;
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        tasks[0].clone()
    }

    async fn edit(&self, user: usize, change: Value) {
        let id = id_of(&self.task(user).await);
        let resp = self
            .http
            .patch(format!(
                "{}mailboxes/{}/tasks/{}",
                self.sim.admin_url,
                self.users[user].1,
                urlencode(&id)
            ))
            .json(&change)
            .send()
            .await
            .expect("admin");
        assert!(resp.status().is_success(), "edit: {}", resp.status());
    }

    async fn sync(&self, user: usize) -> taskbridge::sync::InboundReport {
        self.engine
            .sync_mailbox(&MailboxAddress::new(&self.users[user].1))
            .await
            .expect("mailbox pass")
    }

    /// An issue of this project assigned to member `user`.
    async fn issue(&self, user: usize, fields: Value) -> i64 {
        let mut f = json!({"assigned_to_id": self.users[user].2, "subject": "Fit the rails"});
        for (k, v) in fields.as_object().expect("fields") {
            f[k] = v.clone();
        }
        self.redmine.issue(self.project, f).await
    }
}

#[tokio::test]
async fn publish_makes_one_task_per_assigned_open_issue_with_redmine_fields() {
    let Some(w) = world("publishing Redmine issues", 2, &[]).await else {
        return;
    };
    let a = w
        .issue(
            0,
            json!({"subject": "Weld the span", "description": "Both ends.",
                   "start_date": "2026-03-02", "due_date": "2026-03-06",
                   "estimated_hours": 8, "priority_id": 4}),
        )
        .await;
    w.issue(1, json!({"subject": "Paint", "priority_id": 1}))
        .await;
    // Not published: no assignee, or closed.
    w.redmine
        .issue(w.project, json!({"subject": "Nobody's"}))
        .await;
    // A new issue starts in the initial status whatever it asks for: close it afterwards.
    let closed = w.issue(1, json!({"subject": "Done already"})).await;
    w.redmine.update(closed, json!({"status_id": 5})).await;
    w.publish().await;

    let t = w.task(0).await;
    assert_eq!(
        t["Subject"],
        format!("Project p{}: #{a} Weld the span", &w.users[0].0[2..])
    );
    let body = t["Body"]["Text"].as_str().unwrap_or_default().to_string();
    assert!(body.contains("Both ends."), "{body}");
    assert!(
        body.contains(&format!("{}/issues/{a}", w.redmine.url)),
        "{body}"
    );
    assert_eq!(t["TotalWork"], 480);
    assert_eq!(t["Importance"], "High");
    assert!(
        t["DueDate"]
            .as_str()
            .unwrap_or_default()
            .starts_with("2026-03-0"),
        "{t}"
    );
    let other = w.task(1).await;
    assert_eq!(other["Importance"], "Low");
    assert_eq!(
        other["Subject"].as_str().map(|s| s.ends_with("Paint")),
        Some(true)
    );
}

#[tokio::test]
async fn mailbox_percent_actual_work_and_completion_arrive_in_redmine() {
    let Some(w) = world("mailbox edits reaching Redmine", 1, &[]).await else {
        return;
    };
    let issue = w.issue(0, json!({"estimated_hours": 10})).await;
    w.publish().await;

    w.edit(0, json!({"PercentComplete": 40, "ActualWork": 90}))
        .await;
    let report = w.sync(0).await;
    assert_eq!(report.applied, 1, "{report:?}");
    let i = w.redmine.read_issue(issue).await;
    assert_eq!(i["done_ratio"], 40);
    let entries = w.redmine.time_entries(issue).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["hours"].as_f64(), Some(1.5));
    assert_eq!(
        entries[0]["user"]["id"], w.users[0].2,
        "booked as the assignee"
    );
    assert!(
        entries[0]["comments"]
            .as_str()
            .unwrap_or_default()
            .contains("Outlook"),
        "{entries:?}"
    );
    // More time: only the difference is booked.
    w.edit(0, json!({"ActualWork": 150})).await;
    assert_eq!(w.sync(0).await.applied, 1);
    let hours: Vec<f64> = w
        .redmine
        .time_entries(issue)
        .await
        .iter()
        .filter_map(|e| e["hours"].as_f64())
        .collect();
    assert_eq!(hours.iter().sum::<f64>(), 2.5, "{hours:?}");

    // Completed in Outlook: the issue is closed, and the closed issue leaves the mailbox.
    w.edit(0, json!({"PercentComplete": 100})).await;
    assert_eq!(w.sync(0).await.applied, 1);
    let i = w.redmine.read_issue(issue).await;
    assert_eq!(i["status"]["name"], "Closed", "{i}");
    w.publish().await;
    assert!(w.tasks(0).await.is_empty());
}

#[tokio::test]
async fn lowering_actual_work_in_a_mailbox_is_refused_and_redmine_value_comes_back() {
    let Some(w) = world("lowering spent time", 1, &[]).await else {
        return;
    };
    let issue = w.issue(0, json!({"estimated_hours": 4})).await;
    w.redmine
        .call(
            reqwest::Method::POST,
            "/time_entries.json",
            Some(json!({"time_entry": {"issue_id": issue, "hours": 2, "activity_id": 9}})),
        )
        .await;
    w.publish().await;
    assert_eq!(w.task(0).await["ActualWork"], 120);
    w.edit(0, json!({"ActualWork": 60})).await;
    let report = w.sync(0).await;
    assert_eq!(report.rejected, 1, "{report:?}");
    assert_eq!(w.task(0).await["ActualWork"], 120);
    assert_eq!(w.redmine.time_entries(issue).await.len(), 1);
}

#[tokio::test]
async fn redmine_edits_are_noticed_by_polling_and_reach_the_mailbox() {
    let Some(w) = world("Redmine edits reaching mailboxes", 1, &[]).await else {
        return;
    };
    let issue = w.issue(0, json!({})).await;
    w.publish().await;
    let mut events = w.host.subscribe();
    w.redmine
        .update(
            issue,
            json!({"subject": "Fit the new rails", "done_ratio": 30}),
        )
        .await;
    // The poller notices the change and asks for a publish of the project.
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(HostEvent::ProjectPublished { project }) if project == w.guid => break,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(event.is_ok(), "no event for the changed issue");
    w.publish().await;
    let t = w.task(0).await;
    assert!(
        t["Subject"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Fit the new rails"),
        "{t}"
    );
    assert_eq!(t["PercentComplete"], 30.0);
}

/// Both sides change % done; the later one (by Redmine's journal time against the item's
/// modification time) wins.
async fn both_changed(redmine_later: bool) -> Option<(i64, f64)> {
    let w = world("newer-wins by journal time", 1, &[]).await?;
    let issue = w.issue(0, json!({})).await;
    w.publish().await;
    // Journal times have whole seconds: a second and a bit between the two edits orders them.
    let gap = Duration::from_millis(1500);
    if redmine_later {
        w.edit(0, json!({"PercentComplete": 30})).await;
        tokio::time::sleep(gap).await;
        w.redmine.update(issue, json!({"done_ratio": 70})).await;
    } else {
        w.redmine.update(issue, json!({"done_ratio": 70})).await;
        tokio::time::sleep(gap).await;
        w.edit(0, json!({"PercentComplete": 30})).await;
    }
    w.sync(0).await;
    w.publish().await;
    let done = w.redmine.read_issue(issue).await["done_ratio"]
        .as_i64()
        .expect("done_ratio");
    let mail = w.task(0).await["PercentComplete"]
        .as_f64()
        .expect("percent");
    Some((done, mail))
}

#[tokio::test]
async fn both_changed_the_newer_wins_by_journal_time() {
    let Some(redmine_wins) = both_changed(true).await else {
        return;
    };
    assert_eq!(redmine_wins, (70, 70.0));
    let Some(mailbox_wins) = both_changed(false).await else {
        return;
    };
    assert_eq!(mailbox_wins, (30, 30.0));
}

#[tokio::test]
async fn reassignment_moves_the_task_to_the_new_assignee() {
    let Some(w) = world("reassignment", 2, &[]).await else {
        return;
    };
    let issue = w.issue(0, json!({"estimated_hours": 2})).await;
    w.publish().await;
    assert_eq!(w.tasks(0).await.len(), 1);
    w.redmine
        .update(issue, json!({"assigned_to_id": w.users[1].2}))
        .await;
    w.publish().await;
    assert!(w.tasks(0).await.is_empty());
    let t = w.task(1).await;
    assert!(
        t["Subject"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("#{issue} ")),
        "{t}"
    );
}

#[tokio::test]
async fn redmine_validation_error_rejects_the_update_and_restores_the_mailbox() {
    let Some(w) = world("a 422 from Redmine", 1, &[("due_date", "both")]).await else {
        return;
    };
    let issue = w
        .issue(
            0,
            json!({"start_date": "2026-03-10", "due_date": "2026-03-20"}),
        )
        .await;
    w.publish().await;
    let due = w.task(0).await["DueDate"].clone();
    // A due date before the start date: Redmine refuses it.
    w.edit(0, json!({"DueDate": "2026-03-05T00:00:00Z"})).await;
    let report = w.sync(0).await;
    assert_eq!(report.rejected, 1, "{report:?}");
    assert_eq!(w.task(0).await["DueDate"], due);
    assert_eq!(w.redmine.read_issue(issue).await["due_date"], "2026-03-20");
}

#[tokio::test]
async fn check_accepts_an_administrator_key_and_names_what_is_wrong_otherwise() {
    let Some(w) = world("taskbridge check --pm", 1, &[]).await else {
        return;
    };
    let identifier = w
        .redmine
        .get(&format!("/projects/{}.json", w.project))
        .await["project"]["identifier"]
        .as_str()
        .expect("identifier")
        .to_string();
    let config = |key: &str| {
        RedmineConfig::new(
            w.redmine.url.clone(),
            Secret::new(key.to_string()),
            vec![identifier.clone()],
        )
    };
    let lines = RedmineHost::connect(config(&w.redmine.key))
        .expect("host")
        .check()
        .await
        .expect("the admin's key passes");
    assert!(lines.iter().any(|l| l.contains(&identifier)), "{lines:?}");
    // A member's own key is valid but not an administrator's.
    let user_key = w
        .redmine
        .get(&format!("/users/{}.json", w.users[0].2))
        .await["user"]["api_key"]
        .as_str()
        .expect("the admin sees the user's key")
        .to_string();
    let e = RedmineHost::connect(config(&user_key))
        .expect("host")
        .check()
        .await
        .expect_err("not an administrator");
    assert!(
        matches!(
            e,
            taskbridge::pm::redmine::RedmineError::Refused { status: 403, .. }
        ),
        "{e}"
    );
    let e = RedmineHost::connect(config("not-a-key"))
        .expect("host")
        .check()
        .await
        .expect_err("a wrong key");
    assert!(
        matches!(
            e,
            taskbridge::pm::redmine::RedmineError::Refused { status: 401, .. }
        ),
        "{e}"
    );
    // An unknown project is named.
    let mut unknown = config(&w.redmine.key);
    unknown.projects = vec![format!("{identifier}-missing")];
    let e = RedmineHost::connect(unknown)
        .expect("host")
        .check()
        .await
        .expect_err("an unknown project");
    assert!(e.to_string().contains("-missing"), "{e}");
}

#[tokio::test]
async fn redmine_down_is_unavailable_and_reported_until_it_answers() {
    // A port nothing listens on: taken and released at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut config = RedmineConfig::new(
        format!("http://127.0.0.1:{port}"),
        Secret::new("k".to_string()),
        vec!["p".into()],
    );
    config.timeout = Duration::from_secs(2);
    let host = RedmineHost::connect(config).expect("host");
    let e = host.projects().await.expect_err("nothing answers");
    assert!(
        matches!(e, taskbridge::pm::HostError::Unavailable(_)),
        "{e}"
    );
    assert!(host.last_error().is_some_and(|e| e.contains("unreachable")));
}

/// The key of member `user`'s one assignment in this world.
fn key_of(w: &World, issue: i64, user: usize) -> taskbridge::pm::AssignmentKey {
    taskbridge::pm::AssignmentKey {
        project: w.guid,
        assignment: taskbridge::pm::redmine::assignment_uid(issue, w.users[user].2),
    }
}

#[tokio::test]
async fn approval_holds_the_update_until_approved_in_another_process_naming_the_approver() {
    let Some(w) = world_with("approval of status updates", 1, &[], true).await else {
        return;
    };
    let issue = w.issue(0, json!({"estimated_hours": 10})).await;
    w.publish().await;
    w.edit(0, json!({"PercentComplete": 40, "ActualWork": 90}))
        .await;
    let report = w.sync(0).await;
    assert_eq!(report.pending, 1, "{report:?}");
    // Nothing reached Redmine yet.
    assert_eq!(w.redmine.read_issue(issue).await["done_ratio"], 0);
    assert!(w.redmine.time_entries(issue).await.is_empty());

    // Another process (`taskbridge updates approve` in a shell) opens the same record.
    let other = RedmineHost::connect(w.config.clone()).expect("second host");
    let pending = other
        .status_updates(UpdateFilter::pending())
        .await
        .expect("list");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, key_of(&w, issue, 0));
    assert_eq!(
        pending[0].task_name.as_deref(),
        Some(format!("#{issue} Fit the rails").as_str())
    );
    let mut events = w.host.subscribe();
    let outcome = other
        .approve(&pending[0].id, "Status Manager", false)
        .await
        .expect("approve");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let again = other.approve(&pending[0].id, "Status Manager", false).await;
    assert!(
        matches!(
            again,
            Err(taskbridge::pm::redmine::RedmineError::NotPending { .. })
        ),
        "{again:?}"
    );
    // Applied to Redmine, the approver named in the journal and on the time entry.
    let i = w.redmine.read_issue(issue).await;
    assert_eq!(i["done_ratio"], 40);
    let journal = w
        .redmine
        .get(&format!("/issues/{issue}.json?include=journals"))
        .await;
    let notes: Vec<String> = journal["issue"]["journals"]
        .as_array()
        .expect("journals")
        .iter()
        .filter_map(|j| j["notes"].as_str().map(str::to_string))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("approved by Status Manager")),
        "{notes:?}"
    );
    let entries = w.redmine.time_entries(issue).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["hours"].as_f64(), Some(1.5));
    assert!(
        entries[0]["comments"]
            .as_str()
            .unwrap_or_default()
            .contains("approved by Status Manager"),
        "{entries:?}"
    );
    // The serving host relays the decision taken elsewhere to its engine.
    let decided = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(HostEvent::UpdateDecided { key, outcome }) => break (key, outcome),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the decision is relayed");
    assert_eq!(decided.0, key_of(&w, issue, 0));
    let mapped = w
        .engine
        .map_back(decided.0, &decided.1)
        .await
        .expect("map back");
    assert_eq!(mapped.applied, 1, "{mapped:?}");
    let t = w.task(0).await;
    assert_eq!(t["PercentComplete"], 40.0);
    assert_eq!(t["ActualWork"], 90);
    let listed = w
        .host
        .status_updates(UpdateFilter::default())
        .await
        .expect("list");
    assert_eq!(listed[0].state, UpdateState::Applied);
    assert_eq!(listed[0].decider.as_deref(), Some("Status Manager"));
}

#[tokio::test]
async fn a_rejected_update_puts_redmine_values_back_and_keeps_the_reason() {
    let Some(w) = world_with("rejecting a status update", 1, &[], true).await else {
        return;
    };
    let issue = w
        .issue(0, json!({"estimated_hours": 4, "done_ratio": 10}))
        .await;
    w.publish().await;
    w.edit(0, json!({"PercentComplete": 90})).await;
    assert_eq!(w.sync(0).await.pending, 1);
    let pending = w
        .host
        .status_updates(UpdateFilter::pending())
        .await
        .expect("list");
    let outcome = w
        .host
        .reject(&pending[0].id, "Status Manager", Some("not that far yet"))
        .await
        .expect("reject");
    let UpdateOutcome::Rejected { reason, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(reason, "not that far yet");
    let mapped = w
        .engine
        .map_back(key_of(&w, issue, 0), &outcome)
        .await
        .expect("map back");
    assert_eq!(mapped.rejected, 1, "{mapped:?}");
    assert_eq!(w.task(0).await["PercentComplete"], 10.0);
    // The audit log says the mailbox's value was put back, and why.
    let audit = w.engine.state().audit(Some(w.guid)).await.expect("audit");
    assert!(
        audit.iter().any(|a| {
            a.rule == taskbridge::state::DecisionRule::Rejected
                && a.note
                    .as_deref()
                    .is_some_and(|n| n.contains("not that far yet"))
        }),
        "{audit:?}"
    );
    assert_eq!(w.redmine.read_issue(issue).await["done_ratio"], 10);
    let listed = w
        .host
        .status_updates(UpdateFilter::default())
        .await
        .expect("list");
    assert_eq!(listed[0].state, UpdateState::Rejected);
    assert_eq!(listed[0].reason.as_deref(), Some("not that far yet"));
    // The record survives the process: a new host reads it from the file.
    drop(w.host.clone());
    let again = RedmineHost::connect(w.config.clone()).expect("host");
    let listed = again
        .status_updates(UpdateFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason.as_deref(), Some("not that far yet"));
}

#[tokio::test]
async fn time_booked_in_redmine_is_noticed_by_the_poll_and_reaches_actual_work() {
    let Some(w) = world("time booked in Redmine", 1, &[]).await else {
        return;
    };
    let issue = w.issue(0, json!({"estimated_hours": 8})).await;
    w.publish().await;
    assert_eq!(w.task(0).await["ActualWork"], 0);
    let before = w.redmine.read_issue(issue).await["updated_on"].clone();
    // Let the poller take its first look before the booking.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut events = w.host.subscribe();
    w.redmine
        .call(
            reqwest::Method::POST,
            "/time_entries.json",
            Some(json!({"time_entry": {"issue_id": issue, "hours": 2, "activity_id": 9}})),
        )
        .await;
    // Redmine does not move the issue's updated_on for a time entry.
    assert_eq!(w.redmine.read_issue(issue).await["updated_on"], before);
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(HostEvent::ProjectPublished { project }) if project == w.guid => break,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(event.is_ok(), "no event for the booked time");
    w.publish().await;
    assert_eq!(w.task(0).await["ActualWork"], 120);
}

/// Polls until `host` has begun `n` polls (at most 30 s).
async fn polls_reach(host: &RedmineHost, n: u64) {
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        while host.polls() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{} polls, not {n}", host.polls());
}

#[tokio::test]
async fn an_unchanged_redmine_costs_one_request_per_poll() {
    let Some(w) = world("the cost of polling", 1, &[]).await else {
        return;
    };
    w.issue(0, json!({})).await;
    let mut config = w.config.clone();
    config.poll_interval = Duration::from_millis(100);
    config.time_entries_poll_interval = Duration::from_secs(3600);
    config.updates_file = None;
    let host = RedmineHost::connect(config).expect("host");
    // The first polls load the catalog and take the first look at issues and time entries.
    polls_reach(&host, 3).await;
    let (polls, requests) = (host.polls(), host.client().requests());
    polls_reach(&host, polls + 10).await;
    let polls = host.polls() - polls;
    let requests = host.client().requests() - requests;
    // A poll under way at either reading counts on one side only: one either way.
    assert!(
        requests <= polls + 1 && requests + 2 >= polls,
        "{requests} requests for {polls} polls of an unchanged Redmine"
    );
}

#[tokio::test]
async fn redmine_validation_error_is_in_the_audit_log_with_redmine_reason() {
    let Some(w) = world("a 422 in the audit", 1, &[("due_date", "both")]).await else {
        return;
    };
    let issue = w
        .issue(
            0,
            json!({"start_date": "2026-03-10", "due_date": "2026-03-20"}),
        )
        .await;
    w.publish().await;
    w.edit(0, json!({"DueDate": "2026-03-05T00:00:00Z"})).await;
    assert_eq!(w.sync(0).await.rejected, 1);
    let audit = w.engine.state().audit(Some(w.guid)).await.expect("audit");
    let rejected: Vec<_> = audit
        .iter()
        .filter(|a| a.rule == taskbridge::state::DecisionRule::Rejected)
        .collect();
    assert_eq!(rejected.len(), 1, "{audit:?}");
    let note = rejected[0].note.clone().unwrap_or_default();
    // Redmine's own words (its English message for a due date before the start date).
    assert!(
        note.contains("Due date must be greater than start date"),
        "{note}"
    );
    assert_eq!(rejected[0].key, key_of(&w, issue, 0));
}

/// A TLS front for the real Redmine with the test certificate (for `localhost`, signed by the
/// test CA), as a reverse proxy on the Redmine machine would be.
async fn tls_front(redmine: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(format!("{dir}/server.pem")).expect("cert"),
    ))
    .collect::<Result<Vec<_>, _>>()
    .expect("certs");
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(format!("{dir}/server.key")).expect("key"),
    ))
    .expect("key")
    .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let upstream = redmine
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test]
async fn tls_to_redmine_trusts_pm_ca_file_and_plain_http_to_another_host_is_refused() {
    let Some(w) = world("TLS to Redmine", 1, &[]).await else {
        return;
    };
    let identifier = w
        .redmine
        .get(&format!("/projects/{}.json", w.project))
        .await["project"]["identifier"]
        .as_str()
        .expect("identifier")
        .to_string();
    let url = tls_front(&w.redmine.url).await;
    let config = |tls: Option<rustls::ClientConfig>| {
        let mut c = RedmineConfig::new(
            url.clone(),
            Secret::new(w.redmine.key.clone()),
            vec![identifier.clone()],
        );
        c.tls = tls;
        c.timeout = Duration::from_secs(10);
        c
    };
    let ca =
        taskbridge::ews::transport::rustls_client_config(&taskbridge::ews::transport::TlsConfig {
            extra_ca_file: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem").into(),
            ),
            ..Default::default()
        })
        .expect("tls config");
    let lines = RedmineHost::connect(config(Some(ca)))
        .expect("host")
        .check()
        .await
        .expect("Redmine over TLS with the private CA");
    assert!(lines.iter().any(|l| l.contains(&identifier)), "{lines:?}");
    // Without the CA the certificate is not trusted: verification is on.
    let e = RedmineHost::connect(config(None))
        .expect("host")
        .check()
        .await
        .expect_err("an untrusted certificate");
    assert!(
        matches!(e, taskbridge::pm::redmine::RedmineError::Unreachable(_)),
        "{e}"
    );
    // The key never goes over plain http:// to another machine.
    let e = RedmineHost::connect(RedmineConfig::new(
        "http://redmine.example.com",
        Secret::new("k".to_string()),
        vec!["p".into()],
    ))
    .expect_err("plain http to another host");
    assert!(
        matches!(e, taskbridge::pm::redmine::RedmineError::PlainHttp { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("https://"), "{e}");
}

/// One request to the PM API: its status and JSON answer.
async fn api_call(
    api: &taskbridge::pm::embedded::PmApi,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", "Bearer the-admin-token");
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = api
        .handle(
            req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .expect("request"),
        )
        .await;
    let status = reply.status().as_u16();
    let bytes = reply.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_pm_api_lists_and_approves_redmine_updates() {
    let Some(w) = world_with("approval through the PM API", 1, &[], true).await else {
        return;
    };
    let issue = w.issue(0, json!({})).await;
    w.publish().await;
    w.edit(0, json!({"PercentComplete": 60})).await;
    assert_eq!(w.sync(0).await.pending, 1);
    let api = taskbridge::pm::embedded::pm_updates_api(
        Arc::new(w.host.clone()),
        Secret::new("the-admin-token".to_string()),
    );
    let (status, list) = api_call(&api, "GET", "/pm/updates?state=pending", None).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("a list").clone();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().expect("id").to_string();
    // Projects live in Redmine: there is no project route.
    assert_eq!(api_call(&api, "GET", "/pm/projects", None).await.0, 404);
    let (status, one) = api_call(&api, "GET", &format!("/pm/updates/{id}"), None).await;
    assert_eq!((status, one["state"].as_str()), (200, Some("pending")));
    let (status, outcome) = api_call(
        &api,
        "POST",
        &format!("/pm/updates/{id}/approve"),
        Some(json!({"by": "Status Manager"})),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["outcome"], "applied", "{outcome}");
    assert_eq!(w.redmine.read_issue(issue).await["done_ratio"], 60);
    let (status, again) = api_call(
        &api,
        "POST",
        &format!("/pm/updates/{id}/reject"),
        Some(json!({"reason": "too late"})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
}

#[tokio::test]
async fn taskbridge_updates_lists_and_approves_redmine_updates_from_the_command_line() {
    let Some(w) = world_with("taskbridge updates with Redmine", 1, &[], true).await else {
        return;
    };
    let issue = w.issue(0, json!({})).await;
    w.publish().await;
    w.edit(0, json!({"PercentComplete": 20})).await;
    assert_eq!(w.sync(0).await.pending, 1);
    let identifier = w
        .redmine
        .get(&format!("/projects/{}.json", w.project))
        .await["project"]["identifier"]
        .as_str()
        .expect("identifier")
        .to_string();
    // The world's update record is where the CLI keeps it: redmine-updates.sqlite in the data
    // directory.
    let dir = w._dir.path();
    let config = dir.join("taskbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[pm]\nkind = \"redmine\"\nurl = \"{}\"\nprojects = [\"{identifier}\"]\n\
             default_policy = \"approval\"\n",
            w.redmine.url
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("TASKBRIDGE_REDMINE_API_KEY", &w.redmine.key)
            .output()
            .expect("taskbridge");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["updates", "--pending", "--json", "--project", &identifier]);
    assert_eq!(code, Some(0), "{err}");
    let list: Value = serde_json::from_str(&out).expect("json");
    let id = list[0]["id"].as_str().expect("an update").to_string();
    let (code, _, err) = run(&["updates", "approve", &id[..8], "--by", "Status Manager"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("applied"), "{err}");
    assert_eq!(w.redmine.read_issue(issue).await["done_ratio"], 20);
    let (code, _, err) = run(&["updates", "reject", &id[..8]]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not pending"), "{err}");
}
