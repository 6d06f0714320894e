//! The sync engine end to end: the simulator over real HTTP, the embedded PM host, SQLite
//! state. One test per promise of the engine.

mod harness;

use std::time::Duration;

use serde_json::json;

use harness::*;
use taskbridge::pm::embedded::Policy as ApprovalPolicy;
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, Percent, PmHost,
    StatusUpdate, UpdateOutcome, UpdateSource,
};
use taskbridge::state::{Commit, DecisionRule, MailboxAddress, Side, StateStore, SyncStatus};
use taskbridge::sync::{Policy, PublishOptions, RetryError, RetryOutcome, SyncConfig};

#[tokio::test]
async fn publish_creates_one_task_per_assignment_and_republish_writes_nothing() {
    let h = harness(20, ApprovalPolicy::Auto, quick_sync()).await;
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.created, 20, "{report:?}");
    assert_eq!(report.failed, 0);
    // Exactly 20 tasks, in the right mailboxes (assignment n goes to mailbox (n-1) % 3), with
    // the mapped values.
    let mut total = 0;
    for (i, m) in MAILBOXES.iter().enumerate() {
        let tasks = h.tasks(m).await;
        total += tasks.len();
        for t in &tasks {
            let tag = tag_of(t).expect("tagged");
            let uid: i64 = tag.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(((uid - 1) % 3) as usize, i, "assignment {uid} in {m}");
            assert_eq!(
                t["Subject"],
                format!("Harbour bridge: Pour deck segment {uid}")
            );
            assert_eq!(t["TotalWork"], 480);
            assert_eq!(t["PercentComplete"], 0.0);
        }
    }
    assert_eq!(total, 20);
    // One CreateItem per mailbox batch; one lookup per mailbox.
    assert_eq!(h.count("CreateItem"), 3);
    assert_eq!(h.count("FindItem"), 3);

    // Publishing again unchanged sends no write request at all.
    let before = h.sim.counters();
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish again");
    assert_eq!(again.unchanged, 20, "{again:?}");
    let after = h.sim.counters();
    for op in ["CreateItem", "UpdateItem", "DeleteItem"] {
        assert_eq!(
            before["operations"][op], after["operations"][op],
            "{op} was sent on an unchanged publish"
        );
    }
}

/// A publish that leaves a project in step with its plan marks it, and the next publish at
/// the same plan revision sends nothing and reads no row; but a change on either side, however
/// it was made, is compared and published again.
#[tokio::test]
async fn an_unchanged_project_is_skipped_by_its_mark_and_any_change_is_published_again() {
    let h = harness(20, ApprovalPolicy::Auto, quick_sync()).await;
    let publish = || h.engine.publish(h.project, PublishOptions::default());
    let first = publish().await.expect("publish");
    assert_eq!((first.created, first.skipped), (20, 0), "{first:?}");
    let ops = h.ops();
    let skipped = publish().await.expect("publish");
    assert_eq!(
        (skipped.unchanged, skipped.skipped),
        (20, 20),
        "{skipped:?}"
    );
    assert_eq!(h.ops(), ops, "no request of any kind");
    // Asked to, a publish compares everything anyway (and marks again).
    let full = h
        .engine
        .publish(
            h.project,
            PublishOptions {
                full: true,
                ..PublishOptions::default()
            },
        )
        .await
        .expect("publish");
    assert_eq!((full.unchanged, full.skipped), (20, 0), "{full:?}");
    assert_eq!(publish().await.expect("publish").skipped, 20);

    // A PM change that is no import: an update the host applied on its own (its API, or
    // another connector instance), never written to the mailbox.
    let outcome = h
        .host
        .submit(StatusUpdate {
            key: AssignmentKey {
                project: h.project,
                assignment: AssignmentUid(5),
            },
            changes: vec![FieldChange {
                field: AssignmentField::PercentWorkComplete,
                old: FieldValue::Percent(Percent::new(0).expect("percent")),
                new: FieldValue::Percent(Percent::new(30).expect("percent")),
            }],
            source: UpdateSource {
                mailbox: "pm-api".into(),
                item_id: "none".into(),
                change_key: "1".into(),
                modified_at: chrono::Utc::now(),
            },
            status_note: None,
            completed_on: None,
        })
        .await
        .expect("applied");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let after = publish().await.expect("publish");
    assert_eq!((after.updated, after.skipped), (1, 0), "{after:?}");
    assert_eq!(h.task_of(5).await.1["PercentComplete"], 30.0);
    assert_eq!(publish().await.expect("publish").skipped, 20);

    // A change of the stored rows alone (a pass, `conflicts resolve`, another process): only
    // that mailbox is compared again, the others stay skipped by their own marks. Assignment
    // 7 is in ann's mailbox with six others.
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(7),
    };
    let state = h.engine.state();
    let mut row = state.assignment(&key).await.expect("read").expect("row");
    let baseline = row.baseline.as_mut().expect("baseline");
    baseline.values.subject = Some("What the mailbox showed before".into());
    state
        .commit(Commit {
            put: vec![row],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let updates = h.count("UpdateItem");
    let after = publish().await.expect("publish");
    assert_eq!((after.updated, after.skipped), (1, 13), "{after:?}");
    assert_eq!(h.count("UpdateItem"), updates + 1);
}

/// Found while reworking the create path for the chaos suite: the `created` metric added the
/// mailbox's running total after each batch, so 120 tasks in batches of 50 counted 270.
#[tokio::test]
async fn publish_metric_counts_each_created_task_once() {
    let h = harness(360, ApprovalPolicy::Auto, quick_sync()).await;
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.created, 360, "{report:?}");
    // 120 tasks per mailbox: three create calls each.
    assert_eq!(h.count("CreateItem"), 9);
    let created = h
        .engine
        .metrics()
        .created
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(created, 360);
}

#[tokio::test]
async fn publish_after_one_pm_change_sends_one_update_with_one_field() {
    let h = harness(20, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let mut p = h.host.load_project(h.project).await.unwrap().unwrap();
    let t = p.tasks.iter_mut().find(|t| t.uid.0 == 7).expect("task 7");
    t.name = "Pour deck segment 7 (night shift)".into();
    h.host.import(p).await.expect("re-import");
    let updates_before = h.count("UpdateItem");
    let fields_before = h.spy.fields_set.load(std::sync::atomic::Ordering::SeqCst);
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(h.count("UpdateItem") - updates_before, 1);
    assert_eq!(
        h.spy.fields_set.load(std::sync::atomic::Ordering::SeqCst) - fields_before,
        1,
        "exactly one SetItemField"
    );
    let (_, task) = h.task_of(7).await;
    assert_eq!(
        task["Subject"],
        "Harbour bridge: Pour deck segment 7 (night shift)"
    );
}

#[tokio::test]
async fn mailbox_edit_of_percent_becomes_one_status_update_and_comes_back_without_echo() {
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(4).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 60}))
        .await;
    let mb = MailboxAddress::new(&mailbox);
    let report = h.engine.sync_mailbox(&mb).await.expect("sync");
    assert_eq!(report.applied, 1, "{report:?}");
    let list = updates(&h.host).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "applied");
    // The PM recomputed the assignment: 60% of 8 h is 4.8 h of actual work, and that comes back
    // to the item.
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    let a = p.assignment(AssignmentUid(4)).expect("assignment");
    assert_eq!(a.percent_work_complete.get(), 60);
    assert_eq!(a.actual_work.minutes_rounded(), 288);
    let (_, task) = h.task_of(4).await;
    assert_eq!(task["PercentComplete"], 60.0);
    assert_eq!(task["ActualWork"], 288);
    // No echo: the next passes see our own write and do nothing.
    let writes = h.spy.writes();
    for _ in 0..2 {
        let again = h.engine.sync_mailbox(&mb).await.expect("sync");
        assert_eq!(again.applied, 0, "{again:?}");
        assert_eq!(again.written, 0, "{again:?}");
    }
    assert_eq!(updates(&h.host).await.len(), 1, "no second status update");
    assert_eq!(h.spy.writes(), writes, "no further write");
}

#[tokio::test]
async fn edits_read_together_are_written_back_in_one_update_item() {
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    // Two assignments whose tasks are in one mailbox, edited before its pass.
    let mut by_mailbox: std::collections::HashMap<String, Vec<(i64, String)>> = Default::default();
    for uid in 1..=6 {
        let (mailbox, task) = h.task_of(uid).await;
        by_mailbox
            .entry(mailbox)
            .or_default()
            .push((uid, id_of(&task)));
    }
    let (mailbox, tasks) = by_mailbox
        .into_iter()
        .find(|(_, t)| t.len() >= 2)
        .expect("a mailbox with two tasks");
    let ((a, a_id), (b, b_id)) = (tasks[0].clone(), tasks[1].clone());
    h.edit(&mailbox, &a_id, json!({"PercentComplete": 25}))
        .await;
    h.edit(&mailbox, &b_id, json!({"PercentComplete": 50}))
        .await;
    let updates_before = h.count("UpdateItem");
    let report = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!((report.applied, report.written), (2, 2), "{report:?}");
    assert_eq!(
        h.count("UpdateItem"),
        updates_before + 1,
        "one call for both"
    );
    // Each item got its own PM values back (8 h of work each).
    for (uid, percent) in [(a, 25.0), (b, 50.0)] {
        let (_, task) = h.task_of(uid).await;
        assert_eq!(task["PercentComplete"], percent);
        assert_eq!(task["ActualWork"], percent / 100.0 * 480.0);
    }
    // Both settled: the next pass finds nothing to do, and the journal is closed.
    let again = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!((again.applied, again.written), (0, 0), "{again:?}");
    assert!(
        h.engine
            .state()
            .unfinished_journal()
            .await
            .expect("journal")
            .is_empty()
    );
}

#[tokio::test]
async fn spontaneous_change_key_bump_causes_no_update_and_no_write() {
    let h = harness(3, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(2).await;
    h.bump(&mailbox, &id_of(&task)).await;
    let writes = h.spy.writes();
    let report = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(report.examined, 1, "{report:?}");
    assert_eq!(report.unchanged, 1, "{report:?}");
    assert_eq!(report.applied + report.written, 0, "{report:?}");
    assert_eq!(h.spy.writes(), writes);
    assert!(updates(&h.host).await.is_empty());
    // The new change key is remembered: a second pass does not even read the item.
    let fetches = h.spy.fetches.load(std::sync::atomic::Ordering::SeqCst);
    h.engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(
        h.spy.fetches.load(std::sync::atomic::Ordering::SeqCst),
        fetches
    );
}

/// Both sides change percent complete; returns (the PM's percent, the mailbox's percent, the
/// audit record) after the pass.
async fn both_sides_change(policy: Policy, pm_later: bool) -> (u8, f64, Vec<(DecisionRule, Side)>) {
    // The two edits are 1.1 s apart: closer than the default tolerance, so it is narrowed.
    let clock_skew = Duration::from_millis(500);
    let h = harness(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            policy,
            clock_skew,
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    let pm_change = async {
        let mut p = h.host.load_project(h.project).await.unwrap().unwrap();
        let a = p.assignment_mut(AssignmentUid(1)).expect("assignment");
        a.apply_percent(taskbridge::pm::Percent::new(30).unwrap());
        h.host.import(p).await.expect("re-import");
    };
    if pm_later {
        h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 70}))
            .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        pm_change.await;
    } else {
        pm_change.await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 70}))
            .await;
    }
    h.engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    let pm = p
        .assignment(AssignmentUid(1))
        .unwrap()
        .percent_work_complete
        .get();
    let (_, task) = h.task_of(1).await;
    let audit = h
        .engine
        .state()
        .audit(Some(h.project))
        .await
        .expect("audit")
        .into_iter()
        .filter(|a| a.field == taskbridge::mapping::MailField::PercentComplete)
        .map(|a| (a.rule, a.winner))
        .collect();
    (pm, task["PercentComplete"].as_f64().unwrap_or(-1.0), audit)
}

#[tokio::test]
async fn both_changed_newer_wins_takes_the_later_edit() {
    let (pm, mail, audit) = both_sides_change(Policy::NewerWins, false).await;
    assert_eq!((pm, mail), (70, 70.0), "the Outlook edit was later");
    assert!(
        audit.contains(&(DecisionRule::NewerWins, Side::Mail)),
        "{audit:?}"
    );
    let (pm, mail, audit) = both_sides_change(Policy::NewerWins, true).await;
    assert_eq!((pm, mail), (30, 30.0), "the plan change was later");
    assert!(
        audit.contains(&(DecisionRule::NewerWins, Side::Pm)),
        "{audit:?}"
    );
}

#[tokio::test]
async fn both_changed_pm_wins_and_mail_wins_follow_policy() {
    let (pm, mail, audit) = both_sides_change(Policy::PmWins, false).await;
    assert_eq!((pm, mail), (30, 30.0));
    assert!(
        audit.contains(&(DecisionRule::PmWins, Side::Pm)),
        "{audit:?}"
    );
    let (pm, mail, audit) = both_sides_change(Policy::MailWins, true).await;
    assert_eq!((pm, mail), (70, 70.0));
    assert!(
        audit.contains(&(DecisionRule::MailWins, Side::Mail)),
        "{audit:?}"
    );
}

#[tokio::test]
async fn both_changed_manual_keeps_both_and_records_a_conflict() {
    let (pm, mail, audit) = both_sides_change(Policy::Manual, false).await;
    assert_eq!((pm, mail), (30, 70.0), "neither side is overwritten");
    assert!(
        audit.contains(&(DecisionRule::Manual, Side::Neither)),
        "{audit:?}"
    );
}

#[tokio::test]
async fn approval_policy_waits_then_maps_back_the_decision() {
    let h = harness(3, ApprovalPolicy::Approval, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(3).await;
    let mb = MailboxAddress::new(&mailbox);
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 100}))
        .await;
    let report = h.engine.sync_mailbox(&mb).await.expect("sync");
    assert_eq!(report.pending, 1, "{report:?}");
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(3),
    };
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert!(matches!(row.status, SyncStatus::PendingApproval { .. }));
    // A ChangeKey bump while pending submits nothing new.
    h.bump(&mailbox, &id_of(&task)).await;
    h.engine.sync_mailbox(&mb).await.expect("sync");
    let list = updates(&h.host).await;
    assert_eq!(list.len(), 1, "{list:?}");
    // The status manager rejects it: the PM values are restored in the mailbox.
    let id = list[0]["id"].as_str().expect("id").to_string();
    let mut events = h.host.subscribe();
    h.host
        .reject(&taskbridge::pm::StatusUpdateId(id), "pm", Some("not yet"))
        .await
        .expect("reject");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event")
        .expect("event");
    let taskbridge::pm::HostEvent::UpdateDecided { key: k, outcome } = event else {
        panic!("unexpected event {event:?}");
    };
    assert_eq!(k, key);
    let back = h.engine.map_back(k, &outcome).await.expect("map back");
    assert_eq!(back.written, 1, "{back:?}");
    let (_, task) = h.task_of(3).await;
    assert_eq!(task["PercentComplete"], 0.0);
    assert_eq!(task["Status"], "NotStarted");
    // And nothing echoes.
    let again = h.engine.sync_mailbox(&mb).await.expect("sync");
    assert_eq!(
        again.applied + again.pending + again.written,
        0,
        "{again:?}"
    );
}

#[tokio::test]
async fn deleted_in_outlook_is_detached_by_default_and_not_recreated() {
    let h = harness(3, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(2).await;
    h.delete(&mailbox, &id_of(&task)).await;
    let report = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(report.deleted, 1, "{report:?}");
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(2),
    };
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status, SyncStatus::Detached);
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(again.created, 0, "{again:?}");
}

#[tokio::test]
async fn publish_killed_at_every_step_resumes_without_duplicates_or_gaps() {
    // Count the mailbox calls of a whole publish, then kill a fresh run after each of them
    // (with the last call reaching the server or not), restart, and finish.
    let probe = harness(12, ApprovalPolicy::Auto, quick_sync()).await;
    probe
        .engine
        .publish(probe.project, PublishOptions::default())
        .await
        .expect("publish");
    let steps = probe.count("GetFolder") + probe.count("FindItem") + probe.count("CreateItem");
    assert!(steps >= 9, "steps {steps}");
    for step in 0..steps as usize {
        for send_last in [false, true] {
            let h = harness(12, ApprovalPolicy::Auto, quick_sync()).await;
            h.spy.crash_after(step, send_last);
            let _ = h.engine.publish(h.project, PublishOptions::default()).await;
            // Restart: a new engine on the same state file.
            let (engine, _) = engine(&h.sim, &h.host, h.dir.path(), quick_sync());
            let report = engine
                .publish(h.project, PublishOptions::default())
                .await
                .expect("publish after restart");
            assert_eq!(report.failed, 0, "step {step}: {report:?}");
            let mut tags = Vec::new();
            for m in MAILBOXES {
                tags.extend(h.tasks(m).await.iter().filter_map(tag_of));
            }
            let mut unique = tags.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                tags.len(),
                unique.len(),
                "step {step} ({send_last}): duplicates"
            );
            assert_eq!(unique.len(), 12, "step {step} ({send_last}): missing tasks");
            // And the restarted engine knows every item: nothing more to write.
            let again = engine
                .publish(h.project, PublishOptions::default())
                .await
                .expect("publish");
            assert_eq!(again.unchanged, 12, "step {step}: {again:?}");
        }
    }
}

/// Found by the chaos suite (a mailbox over its quota): an item parked because its write-back
/// was refused for good was tried again on every pass of its mailbox, with its attempts growing
/// past the bound and the mailbox's sync state held back. A parked item waits: the passes skip
/// it until it changes again, and the reconciliation's publish tries the write once per interval.
#[tokio::test]
async fn parked_item_is_not_retried_on_every_pass_and_the_next_publish_finishes_it() {
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    let quota = |exceeded: bool| {
        let url = format!("{}mailboxes/{mailbox}/quota", h.sim.admin_url);
        let http = h.http.clone();
        async move {
            let r = http
                .put(url)
                .json(&json!({ "exceeded": exceeded }))
                .send()
                .await
                .expect("admin");
            assert!(r.status().is_success());
        }
    };
    quota(true).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 50}))
        .await;
    let address = MailboxAddress::new(&mailbox);
    let report = h.engine.sync_mailbox(&address).await.expect("pass");
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(1),
    };
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status.name(), "parked", "{row:?}");
    let attempts = row.attempts;
    // The edit reached the PM side all the same.
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    assert_eq!(
        p.assignment(AssignmentUid(1))
            .unwrap()
            .percent_work_complete
            .get(),
        50
    );
    // More passes (another task of the mailbox changes): the parked item is not written again.
    let (_, other) = h.task_of(4).await;
    let writes = h.count("UpdateItem");
    for _ in 0..3 {
        h.bump(&mailbox, &id_of(&other)).await;
        h.engine.sync_mailbox(&address).await.expect("pass");
    }
    assert_eq!(
        h.count("UpdateItem"),
        writes,
        "the parked item was written again"
    );
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.attempts, attempts);
    // The quota is cleared; the reconciliation's publish writes what is still due.
    quota(false).await;
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.updated, 1, "{report:?}");
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status.name(), "synced", "{row:?}");
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 50.0);
    assert_eq!(task["ActualWork"], 240);
}

/// A person takes a parked item back once the cause is fixed (`Engine::retry_parked`, the
/// console's Retry): the item is tried at once and is in step, without waiting for the
/// reconciliation. Retried while the cause lasts, it is parked again with the error; an item
/// that is not parked is refused.
#[tokio::test]
async fn a_parked_item_taken_back_is_written_at_once_or_parked_again() {
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    let quota = |exceeded: bool| {
        let url = format!("{}mailboxes/{mailbox}/quota", h.sim.admin_url);
        let http = h.http.clone();
        async move {
            let r = http
                .put(url)
                .json(&json!({ "exceeded": exceeded }))
                .send()
                .await
                .expect("admin");
            assert!(r.status().is_success());
        }
    };
    quota(true).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 50}))
        .await;
    let address = MailboxAddress::new(&mailbox);
    h.engine.sync_mailbox(&address).await.expect("pass");
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(1),
    };
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status.name(), "parked", "{row:?}");
    // Still over the quota: tried, refused, parked again with the reason.
    let writes = h.count("UpdateItem");
    match h.engine.retry_parked(&key).await.expect("retried") {
        RetryOutcome::Failed {
            parked: true,
            error,
        } => {
            assert!(error.contains("ErrorQuotaExceeded"), "{error}")
        }
        other => panic!("expected parked again, got {other:?}"),
    }
    assert!(h.count("UpdateItem") > writes, "the retry wrote nothing");
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status.name(), "parked", "{row:?}");
    // The quota is raised: the retry writes what the plan owes the item, at once.
    quota(false).await;
    assert_eq!(
        h.engine.retry_parked(&key).await.expect("retried"),
        RetryOutcome::Synced
    );
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status.name(), "synced", "{row:?}");
    assert_eq!(row.attempts, 0);
    assert_eq!(row.last_error, None);
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 50.0);
    assert_eq!(task["ActualWork"], 240);
    // Not parked (any more): refused, nothing written.
    let writes = h.count("UpdateItem");
    assert!(matches!(
        h.engine.retry_parked(&key).await,
        Err(RetryError::NotParked(k)) if k == key
    ));
    assert_eq!(h.count("UpdateItem"), writes);
}

/// Found by the chaos suite (the simulator killed while `serve` published, a user editing the
/// new tasks): a task created just before a crash, then edited by its owner, was taken over
/// with the PM values written over the edit, so the edit never reached the PM side. Taken-over
/// tasks are decided like any other, against a baseline that knows nothing: the owner's later
/// edit wins by the policy (newer wins).
#[tokio::test]
async fn owner_edit_of_a_task_created_before_a_crash_survives_its_takeover() {
    let h = harness(1, ApprovalPolicy::Auto, quick_sync()).await;
    // GetFolder, FindItem, CreateItem: the create reaches the server, then the process dies.
    h.spy.crash_after(3, true);
    let _ = h.engine.publish(h.project, PublishOptions::default()).await;
    let (mailbox, task) = h.task_of(1).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 50}))
        .await;
    let (engine, _) = engine(&h.sim, &h.host, h.dir.path(), quick_sync());
    let report = engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish after restart");
    assert_eq!(report.adopted, 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    let a = p.assignment(AssignmentUid(1)).unwrap();
    assert_eq!(
        a.percent_work_complete.get(),
        50,
        "the edit reached the PM side"
    );
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 50.0);
    assert_eq!(task["ActualWork"], 240);
    assert_eq!(updates(&h.host).await.len(), 1);
    // A task nobody touched is taken over without a write or a status update (see
    // publish_killed_at_every_step_resumes_without_duplicates_or_gaps).
}

/// A CreateItem whose answer was lost may have created its items, and the transport no longer
/// sends it twice (the chaos suite found duplicates when it did). The same publish looks for
/// the tagged items, takes them over, and creates nothing twice.
#[tokio::test]
async fn create_call_that_lost_its_answer_is_found_and_not_duplicated_in_the_same_publish() {
    let h = harness(120, ApprovalPolicy::Auto, quick_sync()).await;
    h.spy
        .lose_create_answers
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    // One batch of 40 per mailbox; two of them lost their answers.
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.adopted, 80, "{report:?}");
    assert_eq!(report.created, 40, "{report:?}");
    let mut total = 0;
    for m in MAILBOXES {
        total += h.tasks(m).await.len();
    }
    assert_eq!(total, 120, "no task twice");
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish again");
    assert_eq!(again.unchanged, 120, "{again:?}");
}

#[tokio::test]
async fn lost_notifications_are_healed_within_one_reconciliation_interval() {
    // No push at all: only reconciliation finds the edit.
    let h = harness(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            reconcile_interval: Duration::from_millis(300),
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    let (stop, runner) = run_engine(&h.engine);
    h.edit(&mailbox, &id_of(&task), json!({"ActualWork": 240}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = h.host.load_project(h.project).await.unwrap().unwrap();
        if p.assignment(AssignmentUid(1))
            .unwrap()
            .actual_work
            .minutes_rounded()
            == 240
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

/// Found by the chaos suite (the simulator killed while `serve` published): a publish that
/// could not finish (the server down through every attempt) was never tried again, so tasks
/// stayed missing until a restart. Reconciliation publishes every project again.
#[tokio::test]
async fn publish_cut_short_by_an_unreachable_server_is_finished_by_the_next_reconciliation() {
    let h = harness(
        12,
        ApprovalPolicy::Auto,
        SyncConfig {
            reconcile_interval: Duration::from_millis(300),
            ..quick_sync()
        },
    )
    .await;
    // The server is down for the whole first publish.
    h.spy.crash_after(0, false);
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.failed, 12, "{report:?}");
    // It is back; nobody publishes by hand.
    h.spy
        .budget
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let (stop, runner) = run_engine(&h.engine);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut total = 0;
        for m in MAILBOXES {
            total += h.tasks(m).await.len();
        }
        if total == 12 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publish was never finished ({total} tasks)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish again");
    assert_eq!(again.unchanged, 12, "{again:?}");
}

#[tokio::test]
async fn outlook_edit_merged_into_our_write_is_still_taken() {
    // A server kinder than Exchange merges a write with a stale change key into an item when
    // the properties do not overlap, and answers with a change key of its own: the edit must
    // not hide behind it.
    let h = harness_with(3, ApprovalPolicy::Auto, quick_sync(), ConflictModel::Merge).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 50}))
        .await;
    let mut p = h.host.load_project(h.project).await.unwrap().unwrap();
    p.tasks.iter_mut().find(|t| t.uid.0 == 1).unwrap().name = "Renamed".into();
    h.host.import(p).await.expect("re-import");
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.failed, 0, "{report:?}");
    let sync = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(sync.applied, 1, "{sync:?}");
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    assert_eq!(
        p.assignment(AssignmentUid(1))
            .unwrap()
            .percent_work_complete
            .get(),
        50
    );
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["Subject"], "Harbour bridge: Renamed");
    assert_eq!(task["PercentComplete"], 50.0);
}

#[tokio::test]
async fn outlook_edit_refused_our_stale_write_and_both_changes_arrive() {
    // Exchange refuses a write with a stale change key whatever changed since
    // (ErrorIrresolvableConflict): the engine reads the item again, decides field by field, and
    // both the plan's rename and the owner's percent end up on both sides.
    let h = harness(3, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 50}))
        .await;
    let mut p = h.host.load_project(h.project).await.unwrap().unwrap();
    p.tasks.iter_mut().find(|t| t.uid.0 == 1).unwrap().name = "Renamed".into();
    h.host.import(p).await.expect("re-import");
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.failed, 0, "{report:?}");
    h.engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    assert_eq!(
        p.assignment(AssignmentUid(1))
            .unwrap()
            .percent_work_complete
            .get(),
        50
    );
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["Subject"], "Harbour bridge: Renamed");
    assert_eq!(task["PercentComplete"], 50.0);
    assert!(
        h.count("UpdateItem") >= 2,
        "the refused write was made again with the current change key"
    );
}

#[tokio::test]
async fn pull_subscription_without_a_listener_finds_the_edit_before_reconciliation() {
    let h = harness(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            pull_interval: Some(Duration::from_millis(200)),
            reconcile_interval: Duration::from_secs(3600),
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    h.engine.subscribe_all(false).await.expect("subscribe");
    assert!(
        h.count("Subscribe") >= 3,
        "one pull subscription per mailbox"
    );
    let (mailbox, task) = h.task_of(2).await;
    let (stop, runner) = run_engine(&h.engine);
    // Let the catch-up pass at start finish first: after it, only polling can find the edit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.count("SyncFolderItems") < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no catch-up pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let polls_before = h.count("GetEvents");
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 40}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = h.host.load_project(h.project).await.unwrap().unwrap();
        if p.assignment(AssignmentUid(2))
            .unwrap()
            .percent_work_complete
            .get()
            == 40
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.count("GetEvents") > polls_before, "found by polling");
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

#[tokio::test]
async fn decision_taken_while_the_event_was_lost_is_found_by_recheck() {
    let h = harness(3, ApprovalPolicy::Approval, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(2).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 100}))
        .await;
    let report = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(report.pending, 1, "{report:?}");
    let id = updates(&h.host).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Approved while nobody listens: the event is lost.
    h.host
        .approve(&taskbridge::pm::StatusUpdateId(id), "pm", false)
        .await
        .expect("approve");
    let rechecked = h.engine.recheck_pending().await.expect("recheck");
    assert_eq!(rechecked, 1);
    let (_, task) = h.task_of(2).await;
    assert_eq!(task["PercentComplete"], 100.0);
    assert_eq!(task["ActualWork"], 480, "the approved values came back");
    assert_eq!(updates(&h.host).await.len(), 1, "no second status update");
    let key = AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(2),
    };
    let row = h.engine.state().assignment(&key).await.unwrap().unwrap();
    assert_eq!(row.status, SyncStatus::Synced);
}

#[tokio::test]
async fn invalid_sync_state_is_rebased_on_a_full_pass_without_duplicates_or_deletes() {
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let mb = MailboxAddress::new(MAILBOXES[0]);
    h.engine.sync_mailbox(&mb).await.expect("first pass");
    let (_, task) = h.task_of(1).await;
    h.edit(MAILBOXES[0], &id_of(&task), json!({"ActualWork": 60}))
        .await;
    // The stored state goes bad (a restored backup, a server that forgot it).
    h.engine
        .state()
        .update_mailbox(&mb, |state| {
            state.sync_state = Some("H4sIAAAAAAAEAGNgYGBgBGJOAA==".into());
        })
        .await
        .unwrap();
    let writes = h.spy.writes();
    let report = h.engine.sync_mailbox(&mb).await.expect("rebased pass");
    assert_eq!(report.applied, 1, "the edit is still found: {report:?}");
    assert_eq!(report.deleted, 0, "{report:?}");
    assert_eq!(h.spy.creates.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(h.spy.deletes.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        h.spy.writes() <= writes + 1,
        "only the write-back of the edit"
    );
    assert_eq!(h.tasks(MAILBOXES[0]).await.len(), 2, "no duplicate");
    let state = h.engine.state().mailbox(&mb).await.unwrap().unwrap();
    assert_ne!(
        state.sync_state.as_deref(),
        Some("H4sIAAAAAAAEAGNgYGBgBGJOAA=="),
        "a fresh state is stored"
    );
}

#[tokio::test]
async fn deleted_in_outlook_with_recreate_comes_back_at_the_next_publish() {
    let h = harness(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            deleted_task: taskbridge::sync::DeletedTaskRule::Recreate,
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(3).await;
    h.delete(&mailbox, &id_of(&task)).await;
    h.engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(again.created, 1, "{again:?}");
    let (_, back) = h.task_of(3).await;
    assert_ne!(id_of(&back), id_of(&task), "a new item");
}

#[tokio::test]
async fn deleted_in_outlook_with_complete_on_pm_reports_the_assignment_done() {
    let h = harness(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            deleted_task: taskbridge::sync::DeletedTaskRule::CompleteOnPm,
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(1).await;
    h.delete(&mailbox, &id_of(&task)).await;
    let report = h
        .engine
        .sync_mailbox(&MailboxAddress::new(&mailbox))
        .await
        .expect("sync");
    assert_eq!(report.applied, 1, "{report:?}");
    let p = h.host.load_project(h.project).await.unwrap().unwrap();
    assert_eq!(
        p.assignment(AssignmentUid(1))
            .unwrap()
            .percent_work_complete
            .get(),
        100
    );
    let again = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(again.created, 0, "detached after reporting: {again:?}");
}

#[tokio::test]
async fn journal_of_a_crashed_publish_is_resumed_at_start() {
    let one_at_a_time = SyncConfig {
        mailbox_concurrency: 1,
        ..quick_sync()
    };
    let h = harness(9, ApprovalPolicy::Auto, one_at_a_time.clone()).await;
    // Die right after the first CreateItem reached the server (GetFolder, FindItem, CreateItem).
    h.spy.crash_after(3, true);
    let _ = h.engine.publish(h.project, PublishOptions::default()).await;
    assert!(
        !h.engine
            .state()
            .unfinished_journal()
            .await
            .unwrap()
            .is_empty(),
        "the interrupted create stays in the journal"
    );
    let (engine, _) = engine(&h.sim, &h.host, h.dir.path(), one_at_a_time);
    let resumed = engine.resume().await.expect("resume");
    assert!(resumed >= 3, "resumed {resumed}");
    assert!(
        engine
            .state()
            .unfinished_journal()
            .await
            .unwrap()
            .is_empty()
    );
    let mut tags = Vec::new();
    for m in MAILBOXES {
        tags.extend(h.tasks(m).await.iter().filter_map(tag_of));
    }
    let n = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!((n, tags.len()), (9, 9), "every task once");
}

/// Notifications that queue up while the loop is busy are noted together, one state write per
/// mailbox: each mailbox keeps the last watermark it was sent (a status notification without
/// one does not erase it), as if they had been noted one by one.
#[tokio::test]
async fn queued_notifications_leave_each_mailbox_its_last_watermark() {
    use taskbridge::sync::{Notice, NotificationOutcome};
    let (h, (stop, runner)) = published_and_subscribed().await;
    let state = h.engine.state();
    let (ann, bob) = (
        MailboxAddress::new(MAILBOXES[0]),
        MailboxAddress::new(MAILBOXES[1]),
    );
    let sink = h.engine.notification_sink();
    let subscriptions = [
        subscription_of(&h, &ann).await,
        subscription_of(&h, &bob).await,
    ];
    let notice = |sub: &str, watermark: Option<&str>| Notice {
        subscription_id: sub.to_string(),
        watermark: watermark.map(str::to_string),
        item_ids: Vec::new(),
        versions: None,
    };
    for (sub, watermark) in [
        (&subscriptions[0], Some("ann-1")),
        (&subscriptions[1], Some("bob-1")),
        (&subscriptions[0], Some("ann-2")),
        (&subscriptions[0], None),
        (&subscriptions[1], Some("bob-2")),
    ] {
        assert_eq!(
            sink.deliver(notice(sub, watermark)),
            NotificationOutcome::Accepted
        );
    }
    wait_for("the last watermarks were never recorded", async || {
        let a = state.mailbox(&ann).await.unwrap()?.watermark;
        let b = state.mailbox(&bob).await.unwrap()?.watermark;
        (a.as_deref() == Some("ann-2") && b.as_deref() == Some("bob-2")).then_some(())
    })
    .await;
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

#[tokio::test]
async fn the_notification_of_our_own_write_is_noted_without_a_pass() {
    use std::sync::atomic::Ordering;
    use taskbridge::state::ItemRef;
    use taskbridge::sync::{Notice, NotificationOutcome};
    let (h, (stop, runner)) = published_and_subscribed().await;
    let state = h.engine.state();
    let metrics = h.engine.metrics();
    let (mailbox, task) = h.task_of(2).await;
    let mb = MailboxAddress::new(&mailbox);
    let id = id_of(&task);
    let sink = h.engine.notification_sink();
    let subscription = subscription_of(&h, &mb).await;
    // The passes the engine makes by itself at start are over once the count stands still.
    let mut passes = h.count("SyncFolderItems");
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.count("SyncFolderItems");
        if now == passes {
            break;
        }
        passes = now;
    }
    let notice = |versions: Option<Vec<ItemRef>>| Notice {
        subscription_id: subscription.clone(),
        watermark: None,
        item_ids: vec![id.clone()],
        versions,
    };

    // The owner's edit names a version the engine never wrote: a pass takes it and writes the
    // PM's resulting values back. It reads the item by its id: nothing but versions of tracked
    // items were named, so the folder's changes are not listed.
    let reads = h.count("GetItem");
    let edited = h.edit(&mailbox, &id, json!({"PercentComplete": 40})).await;
    assert_eq!(
        sink.deliver(notice(Some(vec![version_of(&edited)]))),
        NotificationOutcome::Accepted
    );
    let written = wait_for("the edit was never applied and written back", async || {
        let row = row_of_item(state, &mb, &id).await?;
        let stored = row.item?.change_key;
        let (_, now) = h.task_of(2).await;
        (stored != version_of(&edited).change_key && stored == version_of(&now).change_key)
            .then_some(now)
    })
    .await;
    assert_eq!(
        h.count("SyncFolderItems"),
        passes,
        "the edit's pass listed nothing"
    );
    assert!(h.count("GetItem") > reads, "the edit's pass read the item");
    assert_eq!(written["ActualWork"], 192, "40 % of 8 h came back");
    assert_eq!(metrics.own_echoes.load(Ordering::Relaxed), 0);

    // The notification of that write names the version the engine wrote: noted, no pass.
    let passes = h.count("SyncFolderItems");
    assert_eq!(
        sink.deliver(notice(Some(vec![version_of(&written)]))),
        NotificationOutcome::Accepted
    );
    wait_for("the echo was never noted", async || {
        (metrics.own_echoes.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.count("SyncFolderItems"), passes, "no pass for the echo");

    // The same item without its versions (a notification that cannot be compared) gets its
    // pass, which finds nothing to do.
    assert_eq!(sink.deliver(notice(None)), NotificationOutcome::Accepted);
    wait_for("no pass for a notification without versions", async || {
        (h.count("SyncFolderItems") > passes).then_some(())
    })
    .await;
    assert_eq!(updates(&h.host).await.len(), 1, "one status update in all");

    // A task the owner created is not tracked: its version brings the listing, which tells
    // what it is.
    let created = h.create_task(&mailbox, "Call the crane hire").await;
    let passes = h.count("SyncFolderItems");
    assert_eq!(
        sink.deliver(notice(Some(vec![version_of(&created)]))),
        NotificationOutcome::Accepted
    );
    wait_for(
        "an untracked item's version brought no listing",
        async || (h.count("SyncFolderItems") > passes).then_some(()),
    )
    .await;
    assert_eq!(updates(&h.host).await.len(), 1, "still one status update");
    let _ = stop.send(());
    runner.await.expect("join").expect("run");
}

/// A pass over the items notifications named (`Engine::sync_items`): an edit is read by its
/// id without a listing; a version already read is not read again; an item whose read failed
/// brings the listing, which reads it again, and a listing that failed too makes the
/// mailbox's next pass a listing: the failure loses nothing and waits for no reconciliation.
#[tokio::test]
async fn a_pass_over_named_items_lists_nothing_unless_an_item_failed() {
    use std::sync::atomic::Ordering;
    use taskbridge::state::ItemRef;
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(3).await;
    let mb = MailboxAddress::new(&mailbox);
    let id = id_of(&task);
    // Listed once, as the catch-up at start does: the mailbox has a sync state.
    h.engine.sync_mailbox(&mb).await.expect("first pass");
    let pass =
        async |versions: Vec<ItemRef>| h.engine.sync_items(&mb, versions).await.expect("pass");
    let percent = async || {
        let p = h.host.load_project(h.project).await.unwrap().unwrap();
        p.assignment(AssignmentUid(3))
            .unwrap()
            .percent_work_complete
            .get()
    };

    let listings = h.count("SyncFolderItems");
    let edited = h.edit(&mailbox, &id, json!({"PercentComplete": 30})).await;
    let report = pass(vec![version_of(&edited)]).await;
    assert_eq!((report.applied, report.failed), (1, 0), "{report:?}");
    assert_eq!(percent().await, 30);
    assert_eq!(h.count("SyncFolderItems"), listings, "nothing listed");
    let metrics = h.engine.metrics();
    assert_eq!(metrics.item_passes.load(Ordering::Relaxed), 1);
    assert_eq!(
        metrics.listing_passes.load(Ordering::Relaxed),
        1,
        "the first pass"
    );

    // The version the pass wrote back is the engine's own: named, it is not even looked up.
    let (_, written) = h.task_of(3).await;
    let reads = h.spy.fetches.load(Ordering::SeqCst);
    let report = pass(vec![version_of(&written)]).await;
    assert_eq!(report.examined, 0, "{report:?}");
    // A new change key without a field change is read once; named again, it is known by its
    // change key and not read again.
    h.bump(&mailbox, &id).await;
    let (_, bumped) = h.task_of(3).await;
    pass(vec![version_of(&bumped)]).await;
    assert_eq!(h.spy.fetches.load(Ordering::SeqCst), reads + 1);
    let report = pass(vec![version_of(&bumped), version_of(&bumped)]).await;
    assert_eq!((report.examined, report.unchanged), (1, 1), "{report:?}");
    assert_eq!(
        h.spy.fetches.load(Ordering::SeqCst),
        reads + 1,
        "not read again"
    );

    // The read fails (a dropped connection): the listing follows and takes the edit.
    let edited = h.edit(&mailbox, &id, json!({"PercentComplete": 70})).await;
    h.spy.fail_fetches.store(1, Ordering::SeqCst);
    let report = pass(vec![version_of(&edited)]).await;
    assert_eq!((report.applied, report.failed), (1, 1), "{report:?}");
    assert_eq!(percent().await, 70);
    assert_eq!(h.count("SyncFolderItems"), listings + 1, "one listing");

    // The listing's read fails too: the mailbox's next pass lists, whatever its notifications
    // named, and takes the edit.
    let edited = h.edit(&mailbox, &id, json!({"PercentComplete": 90})).await;
    h.spy.fail_fetches.store(2, Ordering::SeqCst);
    let report = pass(vec![version_of(&edited)]).await;
    assert_eq!((report.applied, report.failed), (0, 2), "{report:?}");
    assert_eq!(percent().await, 70);
    let listings = h.count("SyncFolderItems");
    let report = pass(vec![version_of(&bumped)]).await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(percent().await, 90);
    assert_eq!(h.count("SyncFolderItems"), listings + 1, "the listing owed");
}

/// A pass over named items of a mailbox this process has listed reads no row of the mailbox's
/// state: the listing told it that a sync state is stored, and nothing clears one. Shown with a
/// row whose Tasks folder is forgotten, which a read of the row would resolve again by a
/// GetFolder: the pass takes the edit without one; the next listing resolves it.
#[tokio::test]
async fn a_pass_over_named_items_of_a_listed_mailbox_reads_no_mailbox_row() {
    use taskbridge::state::StateStore;
    let h = harness(6, ApprovalPolicy::Auto, quick_sync()).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (mailbox, task) = h.task_of(2).await;
    let mb = MailboxAddress::new(&mailbox);
    h.engine.sync_mailbox(&mb).await.expect("first pass");
    h.engine
        .state()
        .update_mailbox(&mb, |s| s.folder_id = None)
        .await
        .expect("forget the folder");
    let folders = h.count("GetFolder");
    let edited = h
        .edit(&mailbox, &id_of(&task), json!({"PercentComplete": 40}))
        .await;
    let report = h
        .engine
        .sync_items(&mb, vec![version_of(&edited)])
        .await
        .expect("pass");
    assert_eq!((report.applied, report.failed), (1, 0), "{report:?}");
    assert_eq!(
        h.count("GetFolder"),
        folders,
        "no read of the mailbox's row"
    );
    h.engine.sync_mailbox(&mb).await.expect("listing");
    assert_eq!(h.count("GetFolder"), folders + 1, "the listing reads it");
}

/// Six assignments published, every mailbox with a pull subscription that is never polled (so
/// the only notifications are the test's, handed to the engine's sink), and the engine's loop
/// running.
async fn published_and_subscribed() -> (Harness, RunningEngine) {
    let h = harness(
        6,
        ApprovalPolicy::Auto,
        SyncConfig {
            pull_interval: Some(Duration::from_secs(3600)),
            reconcile_interval: Duration::from_secs(3600),
            ..quick_sync()
        },
    )
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    // As the connector does once its listener is up.
    h.engine.subscribe_all(false).await.expect("subscribe");
    let running = run_engine(&h.engine);
    (h, running)
}

/// The subscription of `mailbox`, once the engine's sink knows it.
async fn subscription_of(h: &Harness, mailbox: &MailboxAddress) -> String {
    let (state, sink) = (h.engine.state(), h.engine.notification_sink());
    wait_for(&format!("{mailbox} never subscribed"), async || {
        let id = state.mailbox(mailbox).await.unwrap()?.subscription_id?;
        sink.knows(&id).then_some(id)
    })
    .await
}
