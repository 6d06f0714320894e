//! Streaming mode end to end over real sockets: the engine subscribes streaming, holds one
//! GetStreamingEvents connection for the three mailboxes (no push listener, no polling), and an
//! owner's edit reaches the PM side; a connection that is cut is reopened, and an edit made
//! while it was down arrives through the pass that follows the reconnection.

mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use harness::*;
use taskbridge::pm::AssignmentUid;
use taskbridge::pm::embedded::Policy as ApprovalPolicy;
use taskbridge::sync::{PublishOptions, StreamingSettings, SyncConfig};

fn streaming_sync() -> SyncConfig {
    SyncConfig {
        streaming: Some(StreamingSettings {
            connection_timeout: Duration::from_secs(60),
            subscriptions_per_connection: 200,
        }),
        // Neither reconciliation nor polling may find the edit.
        reconcile_interval: Duration::from_secs(3600),
        pull_interval: Some(Duration::from_secs(3600)),
        ..quick_sync()
    }
}

/// Waits (up to 20 s) until `done` holds.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn percent(h: &Harness, uid: i64) -> u8 {
    let p = h
        .host
        .load_project(h.project)
        .await
        .expect("load")
        .expect("project");
    p.assignment(AssignmentUid(uid))
        .expect("assignment")
        .percent_work_complete
        .get()
}

/// Publishes, subscribes, and runs the engine until `stop` fires.
async fn running(
    h: &Harness,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), taskbridge::sync::SyncError>>,
) {
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    h.engine.subscribe_all(false).await.expect("subscribe");
    let subs: serde_json::Value = h
        .http
        .get(format!("{}subscriptions", h.sim.admin_url))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    let subs = subs.as_array().expect("list");
    assert_eq!(subs.len(), 3, "one subscription per mailbox");
    assert!(subs.iter().all(|s| s["kind"] == "streaming"), "{subs:?}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = h.engine.clone();
    let runner = tokio::spawn(async move {
        engine
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    // The catch-up pass of every mailbox at start, and the one connection for all three.
    until("catch-up passes and an open stream", async || {
        h.count("SyncFolderItems") >= 3 && h.sim.open_streams() == 1
    })
    .await;
    (stop, runner)
}

#[tokio::test]
async fn an_owner_edit_reaches_the_pm_side_over_a_streaming_connection() {
    let h = harness(3, ApprovalPolicy::Auto, streaming_sync()).await;
    let (stop, runner) = running(&h).await;
    let (mailbox, task) = h.task_of(2).await;
    let notified = h.engine.metrics().notifications.load(Ordering::Relaxed);
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 40}))
        .await;
    until("the edit reaches the PM side", async || {
        percent(&h, 2).await == 40
    })
    .await;
    assert!(
        h.engine.metrics().notifications.load(Ordering::Relaxed) > notified,
        "it came as a notification"
    );
    assert_eq!(h.count("GetEvents"), 0, "no polling in streaming mode");
    assert_eq!(h.count("GetStreamingEvents"), 1, "one connection for all");
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

#[tokio::test]
async fn a_cut_connection_is_reopened_and_an_edit_made_while_it_was_down_arrives() {
    let h = harness(3, ApprovalPolicy::Auto, streaming_sync()).await;
    let (stop, runner) = running(&h).await;
    let (mailbox, task) = h.task_of(2).await;
    let opens = h.spy.stream_opens.load(Ordering::SeqCst);
    let passes = h.count("SyncFolderItems");

    // The connection breaks and cannot be reopened yet; the server also loses the
    // subscriptions (a fail-over), so the edit below is in no subscription's events.
    h.spy.hold_streams.send_replace(true);
    assert_eq!(h.sim.forget_subscriptions(), 3);
    assert_eq!(h.sim.cut_streams(), 1);
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 60}))
        .await;
    until("the engine tries to reopen", async || {
        h.spy.stream_opens.load(Ordering::SeqCst) > opens
    })
    .await;
    h.spy.hold_streams.send_replace(false);

    // Reopened: the server no longer knows the subscriptions, the engine subscribes again,
    // and the pass after reconnecting reads the edit.
    until("the edit made while down reaches the PM side", async || {
        percent(&h, 2).await == 60
    })
    .await;
    assert!(
        h.count("SyncFolderItems") > passes,
        "a pass after the reconnection"
    );
    until("the lost subscriptions are replaced", async || {
        h.count("Subscribe") >= 6
    })
    .await;
    until("a connection is open again", async || {
        h.sim.open_streams() == 1 && h.engine.metrics().streams_open.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(
        h.engine.metrics().stream_reconnects.load(Ordering::Relaxed) >= 1,
        "the reconnection is counted"
    );

    // And the new connection carries the next edit.
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 80}))
        .await;
    until("an edit over the new connection", async || {
        percent(&h, 2).await == 80
    })
    .await;
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}
