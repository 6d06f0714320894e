//! Several engines over one state store, as several `serve` instances run: the mailboxes are
//! divided by leases, each engine works only on the ones it holds, a notification received by
//! an instance that does not hold its mailbox reaches the one that does, and a pass under a
//! lease taken over meanwhile commits nothing. The simulator over real HTTP, the embedded PM
//! host, one SQLite state file opened by every engine.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use harness::*;
use taskbridge::pm::AssignmentUid;
use taskbridge::pm::embedded::Policy as ApprovalPolicy;
use taskbridge::state::{
    InstanceId, LeaseTiming, MailboxAddress, SqliteStore, StateStore, lease_round,
};
use taskbridge::sync::{Notice, NotificationOutcome, PublishOptions, SyncConfig, SyncError};

const TIMING: LeaseTiming = LeaseTiming {
    lease: Duration::from_secs(3),
    renew: Duration::from_secs(1),
};

/// Pull subscriptions (made, never polled in these tests), so that every mailbox has a
/// subscription id in the store; no reconciliation during a test.
fn cluster_sync() -> SyncConfig {
    SyncConfig {
        pull_interval: Some(Duration::from_secs(3600)),
        reconcile_interval: Duration::from_secs(3600),
        lease: TIMING,
        ..quick_sync()
    }
}

/// Runs an engine until the returned sender is dropped or used.
fn run(
    engine: &TestEngine,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = engine.clone();
    let handle = tokio::spawn(async move {
        engine
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("run");
    });
    (stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_received_by_the_other_instance_reaches_the_owner_once() {
    let h = harness(9, ApprovalPolicy::Auto, cluster_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (a, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    let (b, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    a.join_cluster(InstanceId::new("a"), TIMING);
    b.join_cluster(InstanceId::new("b"), TIMING);
    let (stop_a, run_a) = run(&a);
    let (stop_b, run_b) = run(&b);
    // Three mailboxes over two instances settle at two and one (the remainder goes to the
    // first id), every mailbox held once. On the way an instance that started first may hold
    // more than its share until its next round hands the surplus back.
    let (held_a, held_b) = wait_for(
        "the leases never settled at two for a and one for b",
        async || {
            let (ha, hb) = (a.leases_held()?, b.leases_held()?);
            (ha.len() == 2 && hb.len() == 1).then_some((ha, hb))
        },
    )
    .await;
    assert!(
        held_a.iter().all(|m| !held_b.contains(m)),
        "{held_a:?} {held_b:?}"
    );
    // An edit in b's mailbox; Exchange's notification reaches a (the load balancer's pick).
    let mailbox = held_b[0].clone();
    let (_, task) = {
        let mut found = None;
        for uid in 1..=9 {
            let (m, t) = h.task_of(uid).await;
            if m == mailbox.as_str() {
                found = Some((uid, t));
                break;
            }
        }
        found.expect("a task in b's mailbox")
    };
    let uid: i64 = tag_of(&task)
        .expect("tag")
        .rsplit(':')
        .next()
        .expect("uid")
        .parse()
        .expect("number");
    h.edit(
        mailbox.as_str(),
        &id_of(&task),
        json!({"PercentComplete": 40}),
    )
    .await;
    let state = SqliteStore::open(&h.dir.path().join("state.sqlite")).expect("state");
    let subscription = wait_for("b never subscribed its mailbox", async || {
        state.mailbox(&mailbox).await.ok()??.subscription_id
    })
    .await;
    let outcome = a.notification_sink().deliver(Notice {
        subscription_id: subscription,
        watermark: None,
        item_ids: vec![id_of(&task)],
        versions: None,
    });
    assert_eq!(outcome, NotificationOutcome::Accepted);
    // b applies it (a holds no lease on the mailbox and never reads it).
    wait_for("the edit never reached the PM side", async || {
        let p = h.host.load_project(h.project).await.ok()??;
        (p.assignment(AssignmentUid(uid))?
            .percent_work_complete
            .get()
            == 40)
            .then_some(())
    })
    .await;
    assert_eq!(updates(&h.host).await.len(), 1, "one status update");
    // A subscription no instance knows is answered Unsubscribe once the store was asked.
    // (At first it is accepted: another instance may have made it a moment ago.)
    let sink = a.notification_sink();
    let unknown = || Notice {
        subscription_id: "no-such-subscription".into(),
        watermark: None,
        item_ids: vec![],
        versions: None,
    };
    assert_eq!(sink.deliver(unknown()), NotificationOutcome::Accepted);
    wait_for("an unknown subscription was never refused", async || {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (sink.deliver(unknown()) == NotificationOutcome::UnknownSubscription).then_some(())
    })
    .await;
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    run_a.await.expect("a stops");
    run_b.await.expect("b stops");
    // Both left: every lease is free again.
    for lease in state.leases().await.expect("leases") {
        assert_eq!(lease.owner, None, "{lease:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_under_a_lease_taken_over_meanwhile_commits_nothing() {
    let h = harness(6, ApprovalPolicy::Auto, cluster_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    // Renewal far apart: a2 takes the leases at its start and then believes it holds them,
    // as a stalled process does.
    let slow = LeaseTiming {
        lease: Duration::from_secs(600),
        renew: Duration::from_secs(200),
    };
    let state = SqliteStore::open(&h.dir.path().join("state.sqlite")).expect("state");
    let (a2, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    a2.join_cluster(InstanceId::new("a2"), slow);
    let (stop_a2, run_a2) = run(&a2);
    wait_for("a2 never took the leases", async || {
        (a2.leases_held()?.len() == 3).then_some(())
    })
    .await;
    // Another instance takes every lease over behind a2's back (a2's clock says they are
    // still held): a later time given to the round makes them expired for the thief.
    let later = chrono::Utc::now() + chrono::Duration::seconds(700);
    let thief = InstanceId::new("thief");
    let taken = lease_round(&state, &thief, &BTreeMap::new(), later, TIMING)
        .await
        .expect("take over");
    assert_eq!(taken.gained.len(), 3, "{taken:?}");
    // a2 works on a mailbox it believes it holds: the edit is read, and its commit refused.
    let (mailbox, task) = h.task_of(2).await;
    let mb = MailboxAddress::new(&mailbox);
    let before = row_of_item(&state, &mb, &id_of(&task)).await;
    h.edit(&mailbox, &id_of(&task), json!({"ActualWork": 120}))
        .await;
    let result = a2.sync_mailbox(&mb).await;
    match result {
        Err(SyncError::State(e)) => assert!(e.to_string().contains("lease"), "{e}"),
        other => panic!("the stale pass was not refused: {other:?}"),
    }
    let held = a2.leases_held().unwrap_or_default();
    assert!(!held.contains(&mb), "a2 stopped working on the mailbox");
    assert_eq!(
        held.len(),
        2,
        "only that lease is dropped at once; the others at the next round"
    );
    // Nothing more of it: a second pass does not even start.
    let again = a2.sync_mailbox(&mb).await.expect("no pass");
    assert_eq!(again.examined, 0, "{again:?}");
    let _ = stop_a2.send(());
    run_a2.await.expect("a2 stops");
    let after = row_of_item(&state, &mb, &id_of(&task)).await;
    assert_eq!(before, after, "nothing of the stale pass was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailboxes_of_an_instance_that_died_are_taken_over_and_handed_back_when_it_returns() {
    let h = harness(6, ApprovalPolicy::Auto, cluster_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (a, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    let (b, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    a.join_cluster(InstanceId::new("a"), TIMING);
    b.join_cluster(InstanceId::new("b"), TIMING);
    let (_stop_a, run_a) = run(&a);
    let (stop_b, run_b) = run(&b);
    wait_for("the leases never settled", async || {
        let (ha, hb) = (a.leases_held()?, b.leases_held()?);
        (ha.len() == 2 && hb.len() == 1).then_some(())
    })
    .await;
    // a dies: its loop is gone without handing anything back.
    run_a.abort();
    let _ = run_a.await;
    wait_for("b never took a's mailboxes over", async || {
        (b.leases_held()?.len() == 3).then_some(())
    })
    .await;
    let state = SqliteStore::open(&h.dir.path().join("state.sqlite")).expect("state");
    for lease in state.leases().await.expect("leases") {
        assert_eq!(lease.owner, Some(InstanceId::new("b")), "{lease:?}");
    }
    // A new instance starts: b hands back the new instance's share.
    let (c, _) = engine(&h.sim, &h.host, h.dir.path(), cluster_sync());
    c.join_cluster(InstanceId::new("c"), TIMING);
    let (stop_c, run_c) = run(&c);
    wait_for("b never handed mailboxes back", async || {
        let (hb, hc) = (b.leases_held()?, c.leases_held()?);
        (hb.len() == 2 && hc.len() == 1).then_some(())
    })
    .await;
    let _ = stop_b.send(());
    let _ = stop_c.send(());
    run_b.await.expect("b stops");
    run_c.await.expect("c stops");
}
