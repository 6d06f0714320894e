//! A PM host in a few dozen lines, with the connector inside the host's own tokio runtime.
//!
//! The "PM product" here keeps its projects in memory and applies every status update at once
//! (with the same work arithmetic as the embedded host). It loads the bundled sample project,
//! starts the connector against an Exchange server (by default the bundled simulator, started
//! in-process), and prints each status update that arrives from a mailbox.
//!
//! ```sh
//! cargo run --example minimal_host
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use taskbridge::connector::{Connector, ConnectorConfig};
use taskbridge::ews::client::EwsClientConfig;
use taskbridge::ews::transport::Auth;
use taskbridge::mapping::FieldTable;
use taskbridge::pm::embedded::apply_changes;
use taskbridge::pm::{
    HostError, HostEvent, PmHost, Project, ProjectGuid, StatusUpdate, StatusUpdateId, UpdateOutcome,
};
use taskbridge::sync::SyncConfig;

/// The host: projects in memory, every update applied.
#[derive(Clone)]
struct MyPm {
    projects: Arc<Mutex<HashMap<ProjectGuid, Project>>>,
    events: broadcast::Sender<HostEvent>,
}

impl MyPm {
    fn new(projects: Vec<Project>) -> Self {
        MyPm {
            projects: Arc::new(Mutex::new(
                projects.into_iter().map(|p| (p.guid, p)).collect(),
            )),
            events: broadcast::channel(64).0,
        }
    }
}

impl PmHost for MyPm {
    async fn projects(&self) -> Result<Vec<ProjectGuid>, HostError> {
        Ok(self
            .projects
            .lock()
            .expect("lock")
            .keys()
            .copied()
            .collect())
    }

    async fn project(&self, guid: ProjectGuid) -> Result<Option<Project>, HostError> {
        Ok(self.projects.lock().expect("lock").get(&guid).cloned())
    }

    async fn submit_status_update(&self, update: StatusUpdate) -> Result<UpdateOutcome, HostError> {
        let mut projects = self.projects.lock().expect("lock");
        let project = projects
            .get_mut(&update.key.project)
            .ok_or(HostError::UnknownProject(update.key.project))?;
        let id = StatusUpdateId(format!("{}@{}", update.key, update.source.change_key));
        match apply_changes(
            project,
            update.key.assignment,
            &update.changes,
            chrono::Utc::now(),
        ) {
            Ok(_) => {
                let assignment = project
                    .assignment(update.key.assignment)
                    .cloned()
                    .ok_or(HostError::UnknownAssignment(update.key))?;
                println!("status update applied: {} {:?}", update.key, update.changes);
                Ok(UpdateOutcome::Applied { id, assignment })
            }
            Err(e) => Ok(UpdateOutcome::Rejected {
                id,
                assignment: project
                    .assignment(update.key.assignment)
                    .cloned()
                    .ok_or(HostError::UnknownAssignment(update.key))?,
                reason: e.to_string(),
            }),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }
}

/// The connector for `host` against the EWS endpoint at `url` (no listener: reconciliation
/// every second finds mailbox edits).
fn connector(host: MyPm, url: &str, state: &std::path::Path) -> Connector<MyPm> {
    Connector::new(
        ConnectorConfig {
            exchange: EwsClientConfig::new(url.to_string(), Auth::None),
            table: FieldTable::default(),
            sync: SyncConfig {
                reconcile_interval: Duration::from_secs(1),
                ..SyncConfig::default()
            },
            state: taskbridge::state::StateLocation::Sqlite(state.join("state.sqlite")),
            listener: None,
            admin: None,
        },
        host,
    )
    .expect("connector")
}

fn sample() -> Project {
    let xml = include_str!("sample-project.xml");
    taskbridge::pm::import::import_bytes(xml.as_bytes(), &Default::default()).expect("sample")
}

#[tokio::main]
async fn main() {
    taskbridge::ews::transport::install_crypto_provider();
    let sim = taskbridge_sim::start(taskbridge_sim::SimConfig::for_tests(&[
        "ann@example.com:a",
        "bob@example.com:b",
        "chen@example.com:c",
    ]))
    .await
    .expect("simulator");
    let url = std::env::var("EWS_URL").unwrap_or(sim.url.clone());
    let state = std::env::temp_dir().join(format!("minimal-host-{}", std::process::id()));
    let host = MyPm::new(vec![sample()]);
    let connector = connector(host, &url, &state);
    println!("connector running against {url}; Ctrl-C to stop");
    connector
        .run(None, |_| {}, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("run");
    let _ = std::fs::remove_dir_all(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full round trip against the simulator: the sample project is published, a person
    /// reports 50% in "Outlook", the host applies it, and the recomputed values come back.
    #[tokio::test]
    async fn minimal_host_round_trip_against_the_simulator() {
        taskbridge::ews::transport::install_crypto_provider();
        let sim = taskbridge_sim::start(taskbridge_sim::SimConfig::for_tests(&[
            "ann@example.com:a",
            "bob@example.com:b",
            "chen@example.com:c",
        ]))
        .await
        .expect("simulator");
        let dir = std::env::temp_dir().join(format!("minimal-host-test-{}", std::process::id()));
        let host = MyPm::new(vec![sample()]);
        let connector = Arc::new(connector(host.clone(), &sim.url, &dir));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = connector.clone();
        let running = tokio::spawn(async move {
            c.run(None, |_| {}, async move {
                let _ = stopped.await;
            })
            .await
        });
        let http = reqwest::Client::new();
        let tasks_url = format!("{}mailboxes/ann@example.com/tasks", sim.admin_url);
        let mut task = serde_json::Value::Null;
        for _ in 0..100 {
            let tasks: Vec<serde_json::Value> = http
                .get(&tasks_url)
                .send()
                .await
                .expect("admin")
                .json()
                .await
                .expect("json");
            if let Some(t) = tasks.iter().find(|t| {
                t["Subject"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("Survey the north abutment"))
            }) {
                task = t.clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = task["ItemId"]["Id"]
            .as_str()
            .expect("the task was published");
        http.patch(format!("{tasks_url}/{id}"))
            .json(&serde_json::json!({"PercentComplete": 50}))
            .send()
            .await
            .expect("edit");
        let guid = sample().guid;
        let mut applied = false;
        for _ in 0..100 {
            let p = host.project(guid).await.expect("project").expect("exists");
            let a = p
                .assignment(taskbridge::pm::AssignmentUid(1))
                .expect("assignment");
            if a.percent_work_complete.get() == 50 {
                // 50% of 24 h is 12 h of actual work, written back to the item.
                assert_eq!(a.actual_work.minutes_rounded(), 720);
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(applied, "the edit never reached the host");
        let mut mapped_back = false;
        for _ in 0..100 {
            let t: serde_json::Value = http
                .get(format!("{tasks_url}/{id}"))
                .send()
                .await
                .expect("admin")
                .json()
                .await
                .expect("json");
            if t["ActualWork"] == 720 {
                mapped_back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(mapped_back, "the host's values never came back to the item");
        let _ = stop.send(());
        running.await.expect("join").expect("run");
        let _ = std::fs::remove_dir_all(dir);
    }
}
