//! Streaming mode end to end over real sockets: the engine subscribes streaming, holds one
//! GetStreamingEvents connection for the three mailboxes (no push listener, no polling), and an
//! owner's edit reaches the PM side; a connection that is cut is reopened, and an edit made
//! while it was down arrives through the pass that follows the reconnection.
//!
//! Server affinity: against a simulator of three Mailbox servers (backends), the engine opens
//! one connection per backend, each with its backend's cookie, and edits in every mailbox
//! arrive; a mailbox moved to another backend (a database fail-over) gets a new subscription
//! whose cookie moves it to a connection of its new backend, and its old subscription is ended
//! on its old backend; and a client that mixes the backends' subscriptions on one connection is
//! refused the way Exchange refuses it.
//!
//! Affinity groups: with the groups Autodiscover's GroupingInformation gives, every Subscribe
//! of a group carries the group's anchor (recorded per subscription by the simulator), so the
//! group's subscriptions are held by the anchor's backend and share one connection.

mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use harness::*;
use taskbridge::pm::AssignmentUid;
use taskbridge::pm::embedded::Policy as ApprovalPolicy;
use taskbridge::state::MailboxAddress;
use taskbridge::sync::{
    Delivery, MailboxStore, PublishOptions, StreamEvent, StreamingSettings, SyncConfig,
};

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
    wait_for(what, async || done().await.then_some(())).await
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

/// Publishes, subscribes, and runs the engine until `stop` fires; one connection is open.
async fn running(h: &Harness) -> RunningEngine {
    running_on(h, 1).await
}

/// Publishes, subscribes, and runs the engine until `stop` fires, once `connections` streaming
/// connections are open.
async fn running_on(h: &Harness, connections: usize) -> RunningEngine {
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
    let (stop, runner) = run_engine(&h.engine);
    // The catch-up pass of every mailbox at start, and the one connection for all three.
    until("catch-up passes and the open streams", async || {
        h.count("SyncFolderItems") >= 3 && h.sim.open_streams() == connections
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

/// A simulator of `backends` backends with Ann, Bob and Chen placed on the given ones.
async fn on_backends(backends: usize, placed: [usize; 3]) -> Harness {
    let mut config = sim_config();
    config.backends = backends;
    let h = harness_on(3, ApprovalPolicy::Auto, streaming_sync(), config).await;
    for (mailbox, backend) in ["ann@example.com", "bob@example.com", "chen@example.com"]
        .into_iter()
        .zip(placed)
    {
        move_mailbox(&h, mailbox, backend).await;
    }
    h
}

/// Moves a mailbox to another backend through the admin API.
async fn move_mailbox(h: &Harness, mailbox: &str, backend: usize) {
    let resp = h
        .http
        .put(format!("{}mailboxes/{mailbox}/backend", h.sim.admin_url))
        .json(&json!({ "backend": backend }))
        .send()
        .await
        .expect("admin");
    assert!(resp.status().is_success(), "move: {}", resp.status());
    assert_eq!(h.sim.backend_of(mailbox), Some(backend));
}

/// Edits every assignment's task (one per mailbox) to `value` and waits until each arrives.
async fn every_edit_arrives(h: &Harness, value: u8) {
    for uid in 1..=3 {
        let (mailbox, task) = h.task_of(uid).await;
        h.edit(&mailbox, &id_of(&task), json!({ "PercentComplete": value }))
            .await;
    }
    for uid in 1..=3 {
        until(
            &format!("the edit of assignment {uid} arrives"),
            async || percent(h, uid).await == value,
        )
        .await;
    }
}

#[tokio::test]
async fn one_connection_per_backend_carries_the_edits_of_every_mailbox() {
    let h = on_backends(3, [0, 1, 2]).await;
    let (stop, runner) = running_on(&h, 3).await;
    assert_eq!(
        h.engine.metrics().streams_open.load(Ordering::Relaxed),
        3,
        "one connection per backend"
    );
    // Each opened once and accepted: a connection mixing backends would have been answered
    // ErrorSubscriptionNotFound, replaced and reopened.
    assert_eq!(h.count("Subscribe"), 3);
    assert_eq!(h.count("GetStreamingEvents"), 3);
    every_edit_arrives(&h, 40).await;
    assert_eq!(h.count("GetEvents"), 0, "no polling in streaming mode");
    assert_eq!(h.count("GetStreamingEvents"), 3, "no connection reopened");
    assert_eq!(h.sim.open_streams(), 3);
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

#[tokio::test]
async fn a_mailbox_moved_to_another_backend_is_regrouped_and_its_edits_still_arrive() {
    // Ann and Bob share backend 0 (one connection), Chen is on backend 1.
    let h = on_backends(3, [0, 0, 1]).await;
    let (stop, runner) = running_on(&h, 2).await;
    every_edit_arrives(&h, 30).await;

    // Bob's database fails over to backend 2: the connections break, his subscription is not
    // found where the old cookie routes, and the new one's cookie names backend 2.
    let old = subscription_of(&h, "bob@example.com").await;
    assert_eq!(old["backend"], 0);
    move_mailbox(&h, "bob@example.com", 2).await;
    until("the mailbox is subscribed again", async || {
        h.count("Subscribe") >= 4
    })
    .await;
    until(
        "three connections: Ann's, Bob's and Chen's backends",
        async || {
            h.sim.open_streams() == 3
                && h.engine.metrics().streams_open.load(Ordering::Relaxed) == 3
        },
    )
    .await;
    every_edit_arrives(&h, 70).await;
    // The old subscription was ended on backend 0 (routed there by its cookie) rather than
    // left to linger until it expires.
    until(
        "the old subscription is gone from its old backend",
        async || subscriptions(&h).await.iter().all(|s| s["id"] != old["id"]),
    )
    .await;
    assert!(h.count("Unsubscribe") >= 1);
    let new = subscription_of(&h, "bob@example.com").await;
    assert_eq!(new["backend"], 2, "{new}");

    // And back: Bob joins Ann's connection again.
    move_mailbox(&h, "bob@example.com", 0).await;
    until("two connections again", async || {
        h.count("Subscribe") >= 5
            && h.sim.open_streams() == 2
            && h.engine.metrics().streams_open.load(Ordering::Relaxed) == 2
    })
    .await;
    every_edit_arrives(&h, 90).await;
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

/// The simulator's live subscriptions.
async fn subscriptions(h: &Harness) -> Vec<serde_json::Value> {
    let subs: serde_json::Value = h
        .http
        .get(format!("{}subscriptions", h.sim.admin_url))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    subs.as_array().expect("list").clone()
}

/// The one live subscription of `mailbox`.
async fn subscription_of(h: &Harness, mailbox: &str) -> serde_json::Value {
    let mut of: Vec<_> = subscriptions(h)
        .await
        .into_iter()
        .filter(|s| s["mailbox"] == mailbox)
        .collect();
    assert_eq!(of.len(), 1, "one subscription of {mailbox}: {of:?}");
    of.remove(0)
}

/// Each mailbox's grouping key, asked of the simulator's SOAP Autodiscover.
async fn groupings(h: &Harness) -> std::collections::HashMap<MailboxAddress, String> {
    use taskbridge::ews::autodiscover::{AutodiscoverSettings, user_groupings};
    use taskbridge::ews::transport::Auth;
    let url = reqwest::Url::parse(&h.sim.url)
        .expect("url")
        .join("/autodiscover/autodiscover.svc")
        .expect("join");
    let addresses: Vec<String> = ["ann@example.com", "bob@example.com", "chen@example.com"]
        .map(String::from)
        .to_vec();
    let found = user_groupings(
        url.as_str(),
        &addresses,
        &AutodiscoverSettings::new(Auth::None),
    )
    .await
    .expect("GetUserSettings");
    found
        .into_iter()
        .map(|g| {
            let key = g.key().expect("GroupingInformation");
            (MailboxAddress::new(&g.address), key)
        })
        .collect()
}

#[tokio::test]
async fn groups_come_from_grouping_information_and_each_subscribe_carries_its_anchor() {
    // Bob and Chen share backend 1, Ann is on backend 0.
    let h = on_backends(3, [0, 1, 1]).await;
    let keys = groupings(&h).await;
    let key = |m: &str| keys[&MailboxAddress::new(m)].clone();
    assert!(key("ann@example.com").starts_with("MBX01|"), "{keys:?}");
    assert!(key("bob@example.com").starts_with("MBX02|"), "{keys:?}");
    assert_eq!(key("bob@example.com"), key("chen@example.com"));
    h.engine.set_affinity_groups(&keys);
    let (stop, runner) = running_on(&h, 2).await;
    // Chen's Subscribe was anchored on Bob, the first of their group, and is held by Bob's
    // backend; Ann's group is Ann alone.
    let anchor = async |m: &str| {
        let s = subscription_of(&h, m).await;
        (
            s["anchor"].as_str().unwrap_or("none").to_string(),
            s["backend"].clone(),
        )
    };
    assert_eq!(
        anchor("ann@example.com").await,
        ("ann@example.com".into(), json!(0))
    );
    assert_eq!(
        anchor("bob@example.com").await,
        ("bob@example.com".into(), json!(1))
    );
    assert_eq!(
        anchor("chen@example.com").await,
        ("bob@example.com".into(), json!(1))
    );
    every_edit_arrives(&h, 35).await;
    let _ = stop.send(());
    runner.await.expect("join").expect("run");

    // A move changes the mailbox's GroupingInformation.
    move_mailbox(&h, "chen@example.com", 2).await;
    let keys = groupings(&h).await;
    assert!(
        keys[&MailboxAddress::new("chen@example.com")].starts_with("MBX03|"),
        "{keys:?}"
    );
}

#[tokio::test]
async fn one_group_is_held_by_its_anchors_backend_and_shares_one_connection() {
    // Three backends, but the grouping puts the three mailboxes in one group: every
    // Subscribe is anchored on Ann, so Ann's backend holds all three subscriptions (Exchange
    // does not refuse a Subscribe anchored on another mailbox) and one connection carries them.
    let h = on_backends(3, [0, 1, 2]).await;
    let one: std::collections::HashMap<MailboxAddress, String> =
        ["ann@example.com", "bob@example.com", "chen@example.com"]
            .into_iter()
            .map(|m| (MailboxAddress::new(m), "MBX01|https://ews".to_string()))
            .collect();
    h.engine.set_affinity_groups(&one);
    let (stop, runner) = running_on(&h, 1).await;
    for s in subscriptions(&h).await {
        assert_eq!(s["anchor"], "ann@example.com", "{s}");
        assert_eq!(s["backend"], 0, "{s}");
    }
    assert_eq!(h.engine.metrics().streams_open.load(Ordering::Relaxed), 1);
    every_edit_arrives(&h, 55).await;
    assert_eq!(h.count("GetStreamingEvents"), 1, "no connection reopened");
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

#[tokio::test]
async fn a_client_that_mixes_backends_on_one_connection_is_refused() {
    let h = on_backends(3, [0, 1, 2]).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let ann = MailboxAddress::new("ann@example.com");
    let bob = MailboxAddress::new("bob@example.com");
    let a = h
        .spy
        .subscribe(&ann, &Delivery::Streaming, None, None)
        .await
        .expect("subscribe Ann");
    let b = h
        .spy
        .subscribe(&bob, &Delivery::Streaming, None, None)
        .await
        .expect("subscribe Bob");
    let (Some(ann_backend), Some(bob_backend)) = (a.backend.clone(), b.backend.clone()) else {
        panic!("Subscribe with server affinity answers the backend cookie: {a:?} {b:?}");
    };
    assert_ne!(
        ann_backend, bob_backend,
        "different backends, different cookies"
    );
    let both = [a.id.clone(), b.id.clone()];
    let first = async |anchor: &MailboxAddress, backend| {
        let mut stream = h
            .spy
            .open_stream(anchor, &both, backend, Duration::from_secs(60))
            .await
            .expect("the connection opens");
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an answer at once")
            .expect("an event")
            .expect("not a failure")
    };
    // Routed by Ann's cookie, or only by Ann as the anchor: Bob's subscription is not there.
    assert_eq!(
        first(&ann, Some(&ann_backend)).await,
        StreamEvent::Gone(vec![b.id.clone()])
    );
    assert_eq!(
        first(&ann, None).await,
        StreamEvent::Gone(vec![b.id.clone()])
    );
    // Bob's cookie wins over Ann as the anchor: Ann's is the one not found.
    assert_eq!(
        first(&ann, Some(&bob_backend)).await,
        StreamEvent::Gone(vec![a.id.clone()])
    );
}

#[tokio::test]
async fn the_backend_cookie_answers_only_a_subscribe_that_asks_for_affinity() {
    use taskbridge::ews::affinity::{BackendCookie, prefer_server_affinity};
    use taskbridge::ews::client::{EwsClient, EwsClientConfig};
    use taskbridge::ews::ops::subscribe::{EventTypes, StreamingSubscriptionRequest, Subscribe};
    use taskbridge::ews::transport::Auth;
    use taskbridge::ews::types::{BaseFolderId, EventType, FolderIds};
    use taskbridge::ews::{CallContext, EwsService};

    let mut config = sim_config();
    config.backends = 3;
    let sim = start_sim(config).await;
    sim.move_mailbox("ann@example.com", 0).expect("move");
    sim.move_mailbox("bob@example.com", 0).expect("move");
    sim.move_mailbox("chen@example.com", 2).expect("move");
    let client = EwsClient::new(EwsClientConfig::new(sim.url.clone(), Auth::None)).expect("client");
    let subscribe = async |mailbox: &str, affinity: bool| {
        let request = Subscribe::Streaming(StreamingSubscriptionRequest {
            folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(mailbox))])),
            event_types: EventTypes {
                event_types: vec![EventType::ModifiedEvent],
            },
        });
        let mut ctx = CallContext::for_mailbox(mailbox);
        if affinity {
            ctx = ctx.with_http_header(prefer_server_affinity());
        }
        let (response, headers) = client
            .send_with_headers(ctx, &request)
            .await
            .expect("Subscribe");
        assert!(response.response_messages[0].is_success());
        BackendCookie::from_response(&headers)
    };
    assert_eq!(subscribe("ann@example.com", false).await, None, "not asked");
    let ann = subscribe("ann@example.com", true).await.expect("a cookie");
    let bob = subscribe("bob@example.com", true).await.expect("a cookie");
    let chen = subscribe("chen@example.com", true).await.expect("a cookie");
    assert_eq!(ann, bob, "one backend, one cookie");
    assert_ne!(ann, chen, "another backend, another cookie");
    sim.shutdown().await;
}
