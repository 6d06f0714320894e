//! The typed client end to end on the wire, against a recorded session: a publish and a
//! mailbox pass after an edit in "Outlook", recorded from the bundled simulator into
//! `fixtures/sessions/publish-edit-sync/` and replayed over real HTTP. Every request must
//! match the recording byte for byte, so a change in what the client writes (element order,
//! values, headers) shows up here.
//!
//! Re-record after an intended change of the wire format with
//! `TASKBRIDGE_RECORD_FIXTURES=1 cargo test --test replay`.

mod harness;

use std::path::{Path, PathBuf};

use serde_json::json;

use harness::replay::{Replay, store_recording};
use harness::*;
use taskbridge::pm::embedded::{EmbeddedHost, Policy};
use taskbridge::state::MailboxAddress;
use taskbridge::sync::{PublishOptions, SyncConfig};

fn session() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sessions/publish-edit-sync")
}

fn config() -> SyncConfig {
    // One mailbox at a time: the order of requests is then fixed.
    SyncConfig {
        mailbox_concurrency: 1,
        ..quick_sync()
    }
}

/// The scenario, against any endpoint. `edit` plays the user's edit (only when recording).
async fn scenario(url: &str, edit: impl AsyncFnOnce()) -> Result<(usize, usize), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = EmbeddedHost::open(dir.path()).await.expect("pm store");
    host.import_with_policy(project(6), Some(Policy::Auto))
        .await
        .expect("import");
    let (engine, _) = engine_at(url, &host, dir.path(), config());
    let published = engine
        .publish(project(6).guid, PublishOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    edit().await;
    let pass = engine
        .sync_mailbox(&MailboxAddress::new(MAILBOXES[0]))
        .await
        .map_err(|e| e.to_string())?;
    Ok((published.created, pass.applied))
}

#[tokio::test]
async fn replay_publish_and_edit_session_matches_the_recorded_wire_traffic() {
    if std::env::var_os("TASKBRIDGE_RECORD_FIXTURES").is_some() {
        let rec = tempfile::tempdir().expect("tempdir");
        let mut config = taskbridge_sim::SimConfig::for_tests(&[
            "ann@example.com:pw-ann",
            "bob@example.com:pw-bob",
            "chen@example.com:pw-chen",
        ]);
        config.record = Some(rec.path().to_path_buf());
        let sim = taskbridge_sim::start(config).await.expect("sim");
        let admin = sim.admin_url.clone();
        let (created, applied) = scenario(&sim.url, async || {
            let http = reqwest::Client::new();
            let tasks: Vec<serde_json::Value> = http
                .get(format!("{admin}mailboxes/{}/tasks", MAILBOXES[0]))
                .send()
                .await
                .expect("admin")
                .json()
                .await
                .expect("json");
            let id = id_of(&tasks[0]);
            http.patch(format!("{admin}mailboxes/{}/tasks/{id}", MAILBOXES[0]))
                .json(&json!({"PercentComplete": 60}))
                .send()
                .await
                .expect("edit");
        })
        .await
        .expect("the recorded scenario runs");
        assert_eq!((created, applied), (6, 1));
        sim.shutdown().await;
        store_recording(rec.path(), &session());
    }
    let replay = Replay::start(&session()).await;
    let result = scenario(&replay.url, async || {}).await;
    let outcome = replay.outcome();
    assert!(
        outcome.mismatches.is_empty(),
        "the client's requests differ from the recording:\n{}",
        outcome.mismatches.join("\n")
    );
    assert_eq!(
        replay.remaining(),
        0,
        "recorded exchanges the client never asked for"
    );
    assert!(outcome.served >= 12, "served {}", outcome.served);
    assert_eq!(
        result,
        Ok((6, 1)),
        "the recorded answers read as they did live"
    );
}
