//! What a person reports in Outlook is never lost: status notes, percent and work typed
//! together, completing and reopening, approvals of stale updates, and items waiting for a
//! decision. Each test plays the edit against the simulator over real HTTP, with the embedded
//! PM host and SQLite state, as `tests/engine.rs` does.

mod harness;

use std::time::Duration;

use serde_json::{Value, json};

use harness::*;
use taskbridge::mapping::MailField;
use taskbridge::pm::embedded::{EmbeddedError, Policy as ApprovalPolicy};
use taskbridge::pm::{
    Assignment, AssignmentKey, AssignmentUid, HostEvent, Percent, PmHost, StatusUpdateId, Work,
};
use taskbridge::state::{DecisionRule, MailboxAddress, StateStore, SyncStatus};
use taskbridge::sync::{ConflictError, Policy, PublishOptions, SyncConfig, Take};

fn key(h: &Harness, uid: i64) -> AssignmentKey {
    AssignmentKey {
        project: h.project,
        assignment: AssignmentUid(uid),
    }
}

async fn assignment(h: &Harness, uid: i64) -> Assignment {
    h.host
        .load_project(h.project)
        .await
        .expect("load")
        .expect("project")
        .assignment(AssignmentUid(uid))
        .expect("assignment")
        .clone()
}

/// Changes assignment `uid` on the PM side (a re-import, as a planner's edit arrives).
async fn pm_edit(h: &Harness, uid: i64, edit: impl FnOnce(&mut taskbridge::pm::Project)) {
    let mut p = h.host.load_project(h.project).await.unwrap().unwrap();
    edit(&mut p);
    assert!(p.assignment(AssignmentUid(uid)).is_some());
    h.host.import(p).await.expect("re-import");
}

async fn published(assignments: usize, policy: ApprovalPolicy, sync: SyncConfig) -> Harness {
    let h = harness(assignments, policy, sync).await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    h
}

async fn pass(h: &Harness, mailbox: &str) -> taskbridge::sync::InboundReport {
    h.engine
        .sync_mailbox(&MailboxAddress::new(mailbox))
        .await
        .expect("sync")
}

/// Observation 1: "Waiting on someone else" set in Outlook while the plan has a newer percent
/// that is not yet published. The note must not count as a percent change.
#[tokio::test]
async fn status_note_alone_never_changes_pm_percent_or_work() {
    // No tie tolerance: the Outlook edit is plainly the newer one.
    let h = published(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            clock_skew: Duration::ZERO,
            ..quick_sync()
        },
    )
    .await;
    let (mailbox, task) = h.task_of(1).await;
    pm_edit(&h, 1, |p| {
        p.assignment_mut(AssignmentUid(1))
            .expect("a1")
            .apply_percent(Percent::new(50).expect("percent"));
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.edit(
        &mailbox,
        &id_of(&task),
        json!({"Status": "WaitingOnOthers"}),
    )
    .await;
    pass(&h, &mailbox).await;

    let a = assignment(&h, 1).await;
    assert_eq!(a.percent_work_complete.get(), 50, "the PM percent stands");
    assert_eq!(a.actual_work, Work::from_hours(4), "actual work kept");
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 50.0, "the plan's percent is shown");
    assert_eq!(
        task["Status"], "WaitingOnOthers",
        "the note is left as typed"
    );
    // The note is recorded on a status update that changes no field, and in the audit.
    let list = updates(&h.host).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["changes"], json!([]), "{list:?}");
    assert_eq!(list[0]["status_note"]["new"], "WaitingOnOthers", "{list:?}");
    let notes = note_audit(&h).await;
    assert_eq!(notes, 1, "one audit line for the note");
    // Decided once: further passes, incremental and full, neither audit nor submit it again.
    pass(&h, &mailbox).await;
    h.engine
        .state()
        .update_mailbox(&MailboxAddress::new(&mailbox), |s| s.sync_state = None)
        .await
        .expect("forget sync state");
    pass(&h, &mailbox).await;
    assert_eq!(note_audit(&h).await, 1);
    assert_eq!(updates(&h.host).await.len(), 1);
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 50);
}

async fn note_audit(h: &Harness) -> usize {
    h.engine
        .state()
        .audit(Some(h.project))
        .await
        .expect("audit")
        .into_iter()
        .filter(|a| a.rule == DecisionRule::StatusNote)
        .count()
}

/// Observation 2: 480 min of actual work and 90 % typed in one edit of an 8 h assignment.
#[tokio::test]
async fn percent_and_actual_work_typed_together_are_both_kept() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(2).await;
    h.edit(
        &mailbox,
        &id_of(&task),
        json!([["ActualWork", 480], ["PercentComplete", 90]]),
    )
    .await;
    pass(&h, &mailbox).await;
    let a = assignment(&h, 2).await;
    assert_eq!(a.actual_work, Work::from_hours(8), "actual work as typed");
    assert_eq!(a.percent_work_complete.get(), 90, "the percent holds");
    // Remaining work re-estimated: 480 min is 90 %, so 53 min 20 s are left.
    assert_eq!(a.remaining_work, Work::from_seconds(3200));
    assert_eq!(a.work, Work::from_seconds(32000));
    let (_, task) = h.task_of(2).await;
    assert_eq!(task["PercentComplete"], 90.0);
    assert_eq!(task["ActualWork"], 480);
    // The update records what was applied.
    let list = updates(&h.host).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let applied = applied_values(&list[0]);
    assert_eq!(
        applied.get("PercentWorkComplete"),
        Some(&json!({"type": "percent", "value": 90})),
        "{list:?}"
    );
    assert_eq!(
        applied.get("ActualWork"),
        Some(&json!({"type": "work", "value": 28800})),
        "{list:?}"
    );
}

fn applied_values(update: &Value) -> std::collections::HashMap<String, Value> {
    update["applied"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or("").to_string(),
                c["value"].clone(),
            )
        })
        .collect()
}

/// Observation 3: a completed task reopened in Outlook (Exchange sets 0 % when a task leaves
/// Completed) keeps its actual work.
#[tokio::test]
async fn reopening_a_completed_task_keeps_actual_work_and_clears_actual_finish() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(3).await;
    h.edit(&mailbox, &id_of(&task), json!({"Status": "Completed"}))
        .await;
    pass(&h, &mailbox).await;
    let done = assignment(&h, 3).await;
    assert_eq!(done.actual_work, Work::from_hours(8));
    assert!(done.actual_finish.is_some());

    h.edit(&mailbox, &id_of(&task), json!({"Status": "InProgress"}))
        .await;
    let (_, reopened) = h.task_of(3).await;
    assert_eq!(reopened["PercentComplete"], 0.0, "as Exchange applies it");
    pass(&h, &mailbox).await;
    let a = assignment(&h, 3).await;
    assert_eq!(a.actual_work, Work::from_hours(8), "actual work kept");
    assert_eq!(a.actual_finish, None, "no longer finished");
    assert!(a.percent_work_complete < Percent::FULL, "{a:?}");
    let (_, task) = h.task_of(3).await;
    assert_eq!(task["ActualWork"], 480);
    assert_ne!(task["Status"], "Completed");
}

/// Observation 4: completing a task takes the actual finish from the mailbox's CompleteDate,
/// read in the owner's zone (Berlin: 23:30 UTC on the 5th is the 6th).
#[tokio::test]
async fn completing_takes_the_actual_finish_from_complete_date_in_the_owner_zone() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(1).await;
    h.edit(
        &mailbox,
        &id_of(&task),
        json!({"CompleteDate": "2026-03-05T23:30:00Z"}),
    )
    .await;
    pass(&h, &mailbox).await;
    let a = assignment(&h, 1).await;
    assert_eq!(a.percent_work_complete, Percent::FULL);
    let finish = a.actual_finish.expect("actual finish");
    assert_eq!(
        finish.date(),
        chrono::NaiveDate::from_ymd_opt(2026, 3, 6).unwrap(),
        "not the planned finish {}",
        a.finish
    );
    assert_eq!(finish.time(), a.finish.time(), "the planned time of day");
}

/// Observation 5: approving an update whose old values the plan has moved past is refused,
/// naming the field and both values; `force` applies it and records that.
#[tokio::test]
async fn approving_a_stale_update_is_refused_unless_forced() {
    let h = published(3, ApprovalPolicy::Approval, quick_sync()).await;
    let (mailbox, task) = h.task_of(2).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 60}))
        .await;
    assert_eq!(pass(&h, &mailbox).await.pending, 1);
    let id = StatusUpdateId(updates(&h.host).await[0]["id"].as_str().unwrap().into());
    // The planner moves the percent after the update was submitted.
    pm_edit(&h, 2, |p| {
        p.assignment_mut(AssignmentUid(2))
            .unwrap()
            .apply_percent(Percent::new(30).unwrap());
    })
    .await;
    let err = h.host.approve(&id, "pm", false).await.expect_err("stale");
    let EmbeddedError::Stale { fields, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(fields.len(), 1, "{err}");
    let text = err.to_string();
    assert!(text.contains("PercentWorkComplete"), "{text}");
    assert!(text.contains("0%") && text.contains("30%"), "{text}");
    assert_eq!(assignment(&h, 2).await.percent_work_complete.get(), 30);
    assert_eq!(updates(&h.host).await[0]["state"], "pending");
    // Forced: applied, and the record says so.
    h.host.approve(&id, "pm", true).await.expect("forced");
    assert_eq!(assignment(&h, 2).await.percent_work_complete.get(), 60);
    let list = updates(&h.host).await;
    assert_eq!(list[0]["state"], "applied");
    assert!(
        list[0]["reason"].as_str().unwrap_or("").contains("forced"),
        "{list:?}"
    );
}

/// Observation 7: while the percent waits for approval, a new subject from the plan is still
/// published; the pending edit is neither submitted again nor overwritten.
#[tokio::test]
async fn pending_update_holds_back_only_its_own_fields() {
    let h = published(3, ApprovalPolicy::Approval, quick_sync()).await;
    let (mailbox, task) = h.task_of(1).await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 40}))
        .await;
    assert_eq!(pass(&h, &mailbox).await.pending, 1);
    pm_edit(&h, 1, |p| {
        p.tasks.iter_mut().find(|t| t.uid.0 == 1).unwrap().name =
            "Pour deck segment 1 (rain)".into();
    })
    .await;
    let report = h
        .engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(report.updated, 1, "{report:?}");
    let (_, task) = h.task_of(1).await;
    assert_eq!(
        task["Subject"],
        "Harbour bridge: Pour deck segment 1 (rain)"
    );
    assert_eq!(task["PercentComplete"], 40.0, "the pending edit stays");
    // The next pass sees our write, not a new edit: no second update.
    pass(&h, &mailbox).await;
    let list = updates(&h.host).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "pending");
    let row = h
        .engine
        .state()
        .assignment(&key(&h, 1))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(row.status, SyncStatus::PendingApproval { .. }),
        "{row:?}"
    );
    // Approved: mapped back, in step.
    let mut events = h.host.subscribe();
    let id = StatusUpdateId(list[0]["id"].as_str().unwrap().into());
    h.host.approve(&id, "pm", false).await.expect("approve");
    let HostEvent::UpdateDecided { key: k, outcome } =
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event")
            .expect("event")
    else {
        panic!("unexpected event");
    };
    h.engine.map_back(k, &outcome).await.expect("map back");
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 40);
    let row = h
        .engine
        .state()
        .assignment(&key(&h, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SyncStatus::Synced);
}

/// Observation 6 (engine side): a manual conflict on the percent does not hold back a new
/// subject, and is audited once, not on every pass.
#[tokio::test]
async fn manual_conflict_blocks_only_its_field_and_is_audited_once() {
    let h = published(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            policy: Policy::Manual,
            ..quick_sync()
        },
    )
    .await;
    let (mailbox, task) = h.task_of(1).await;
    pm_edit(&h, 1, |p| {
        p.assignment_mut(AssignmentUid(1))
            .unwrap()
            .apply_percent(Percent::new(30).unwrap());
    })
    .await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 70}))
        .await;
    pass(&h, &mailbox).await;
    let manual = |h: &Harness| {
        let state = h.engine.state().clone();
        let project = h.project;
        async move {
            state
                .audit(Some(project))
                .await
                .expect("audit")
                .into_iter()
                .filter(|a| a.rule == DecisionRule::Manual && a.field == MailField::PercentComplete)
                .count()
        }
    };
    assert_eq!(manual(&h).await, 1);
    for _ in 0..2 {
        h.engine
            .state()
            .update_mailbox(&MailboxAddress::new(&mailbox), |s| s.sync_state = None)
            .await
            .expect("forget sync state");
        pass(&h, &mailbox).await;
    }
    assert_eq!(manual(&h).await, 1, "not re-audited on every pass");
    pm_edit(&h, 1, |p| {
        p.tasks.iter_mut().find(|t| t.uid.0 == 1).unwrap().name =
            "Pour deck segment 1 (rain)".into();
    })
    .await;
    h.engine
        .publish(h.project, PublishOptions::default())
        .await
        .expect("publish");
    let (_, task) = h.task_of(1).await;
    assert_eq!(
        task["Subject"],
        "Harbour bridge: Pour deck segment 1 (rain)"
    );
    assert_eq!(task["PercentComplete"], 70.0, "the conflict is left alone");
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 30);
}

/// A manual conflict on assignment 1's percent: the plan says 30 %, the mailbox 70 %.
async fn manual_conflict() -> (Harness, String) {
    let h = published(
        3,
        ApprovalPolicy::Auto,
        SyncConfig {
            policy: Policy::Manual,
            ..quick_sync()
        },
    )
    .await;
    let (mailbox, task) = h.task_of(1).await;
    pm_edit(&h, 1, |p| {
        p.assignment_mut(AssignmentUid(1))
            .unwrap()
            .apply_percent(Percent::new(30).unwrap());
    })
    .await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 70}))
        .await;
    pass(&h, &mailbox).await;
    (h, mailbox)
}

/// Observation 6: the conflict is listed with both values, and settled by taking the mailbox:
/// the PM takes 70 %, the audit says who and why, and nothing is left open.
#[tokio::test]
async fn manual_conflict_is_listed_and_settled_by_taking_the_mailbox() {
    let (h, _) = manual_conflict().await;
    let list = h.engine.conflicts(Some(h.project)).await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    assert_eq!(c.field, MailField::PercentComplete);
    assert_eq!((c.pm_value.as_str(), c.mail_value.as_str()), ("30%", "70%"));
    assert!(c.since.is_some() && c.mail_changed_at.is_some(), "{c:?}");
    h.engine
        .resolve_conflict(&c.id, Take::Mailbox, "ann", Some("she did the work"))
        .await
        .expect("resolve");
    let a = assignment(&h, 1).await;
    assert_eq!(a.percent_work_complete.get(), 70);
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 70.0);
    assert!(
        h.engine
            .conflicts(Some(h.project))
            .await
            .unwrap()
            .is_empty()
    );
    let row = h
        .engine
        .state()
        .assignment(&key(&h, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, SyncStatus::Synced);
    let audit = h.engine.state().audit(Some(h.project)).await.unwrap();
    let settled = audit
        .iter()
        .find(|r| r.rule == DecisionRule::Resolved)
        .expect("a resolved record");
    assert_eq!(settled.note.as_deref(), Some("ann: she did the work"));
    assert_eq!(settled.winner, taskbridge::state::Side::Mail);
    // An unknown or settled conflict is refused.
    assert!(matches!(
        h.engine
            .resolve_conflict(&c.id, Take::Pm, "ann", None)
            .await,
        Err(ConflictError::NotFound(_))
    ));
}

/// Observation 6 over the PM HTTP API, served on a socket: `GET /pm/conflicts` lists it,
/// `POST /pm/conflicts/{id}/resolve` with `take: pm` writes the plan's 30 % to the mailbox.
#[tokio::test]
async fn manual_conflict_is_settled_over_the_pm_api_by_taking_the_plan() {
    let (h, _) = manual_conflict().await;
    let api = taskbridge::pm::embedded::pm_api(h.host.clone(), "tok".into())
        .with_conflicts(std::sync::Arc::new(h.engine.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let api = api.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), api)
                    .await;
            });
        }
    });
    let base = format!("http://{addr}/pm/conflicts");
    let list: Value = h
        .http
        .get(&base)
        .bearer_auth("tok")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["pm_value"], "30%");
    assert_eq!(list[0]["mail_value"], "70%");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let resp = h
        .http
        .post(format!("{base}/{id}/resolve"))
        .bearer_auth("tok")
        .json(&json!({"take": "pm", "reason": "the plan was re-estimated", "by": "pm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, task) = h.task_of(1).await;
    assert_eq!(
        task["PercentComplete"], 30.0,
        "the plan's value went to the mailbox"
    );
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 30);
    let again = h
        .http
        .post(format!("{base}/{id}/resolve"))
        .bearer_auth("tok")
        .json(&json!({"take": "pm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let bad = h.http.get(&base).send().await.unwrap();
    assert_eq!(
        bad.status(),
        401,
        "behind the token like the rest of the API"
    );
}

/// Observation 6 from the command line: `taskbridge conflicts --json` lists it and
/// `taskbridge conflicts resolve ID --take mailbox --reason ...` settles it, against the
/// simulator the harness runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_conflict_is_listed_and_settled_from_the_cli() {
    let (h, _) = manual_conflict().await;
    let data = h.dir.path().to_path_buf();
    let url = h.sim.url.clone();
    // An empty file: the built-in defaults, with the variables below (a --config that names a
    // missing file is refused).
    std::fs::write(data.join("defaults.toml"), "").expect("write an empty configuration");
    let run = move |args: Vec<String>| {
        let (data, url) = (data.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
                .arg("--config")
                .arg(data.join("defaults.toml"))
                .arg("--data-dir")
                .arg(&data)
                .args(&args)
                .env("TASKBRIDGE_EXCHANGE_URL", &url)
                .env("TASKBRIDGE_EXCHANGE_AUTH", "none")
                .env("TASKBRIDGE_SYNC_POLICY", "manual")
                .env("TASKBRIDGE_LOG", "warn")
                .output()
                .expect("runs")
        })
    };
    let out = run(vec!["conflicts".into(), "--json".into()])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let out = run(vec![
        "conflicts".into(),
        "resolve".into(),
        id.clone(),
        "--take".into(),
        "mailbox".into(),
        "--reason".into(),
        "reported on site".into(),
        "--by".into(),
        "site lead".into(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 70);
    let out = run(vec!["audit".into()]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("by site lead: reported on site"), "{text}");
    // Settled: listing shows nothing, resolving again fails with exit 1.
    let out = run(vec!["conflicts".into(), "--json".into()])
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    let out = run(vec![
        "conflicts".into(),
        "resolve".into(),
        id,
        "--take".into(),
        "pm".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// The other edges of the percent/work/status table (`docs/MAPPING.md`), each played in the
/// mailbox of an 8 h assignment: (what the person does, in order; PM actual work, remaining
/// work and percent after the last pass; the mailbox's percent after the map-back).
#[tokio::test]
async fn percent_work_status_table_edges_against_the_simulator() {
    type Case = (&'static str, Vec<Value>, (i64, i64, u8), f64);
    let cases: Vec<Case> = vec![
        (
            "a lower percent keeps the work done",
            vec![
                json!({"PercentComplete": 50}),
                json!({"PercentComplete": 20}),
            ],
            (4 * 60, 16 * 60, 20),
            20.0,
        ),
        (
            "Not started with work done keeps actual and remaining work",
            vec![
                json!({"PercentComplete": 50}),
                json!({"Status": "NotStarted"}),
            ],
            (4 * 60, 4 * 60, 50),
            50.0,
        ),
        (
            "an explicit actual work edit may lower it",
            vec![json!({"PercentComplete": 50}), json!({"ActualWork": 60})],
            (60, 7 * 60, 13),
            13.0,
        ),
        (
            "actual work with 100 % closes the work at the actual",
            vec![json!([["ActualWork", 360], ["PercentComplete", 100]])],
            (6 * 60, 0, 100),
            100.0,
        ),
        (
            "Deferred after progress changes nothing",
            vec![
                json!({"PercentComplete": 50}),
                json!({"Status": "Deferred"}),
            ],
            (4 * 60, 4 * 60, 50),
            50.0,
        ),
    ];
    for (case, edits, (actual, remaining, percent), shown) in cases {
        let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
        let (mailbox, task) = h.task_of(2).await;
        for e in edits {
            h.edit(&mailbox, &id_of(&task), e).await;
            pass(&h, &mailbox).await;
        }
        let a = assignment(&h, 2).await;
        assert_eq!(
            (
                a.actual_work.minutes_rounded(),
                a.remaining_work.minutes_rounded(),
                a.percent_work_complete.get()
            ),
            (actual, remaining, percent),
            "{case}"
        );
        let (_, task) = h.task_of(2).await;
        assert_eq!(task["PercentComplete"], shown, "{case}");
        assert_eq!(task["ActualWork"], actual, "{case}");
    }
}

/// Both sides change the percent within `sync.clock_skew_ms` (default 2 s) of each other: too
/// close to call, so the tie rule gives it to the plan, and the audit says it was a tie.
#[tokio::test]
async fn both_changed_within_the_clock_skew_is_a_tie_won_by_the_plan() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(1).await;
    pm_edit(&h, 1, |p| {
        p.assignment_mut(AssignmentUid(1))
            .unwrap()
            .apply_percent(Percent::new(30).unwrap());
    })
    .await;
    h.edit(&mailbox, &id_of(&task), json!({"PercentComplete": 70}))
        .await;
    pass(&h, &mailbox).await;
    assert_eq!(assignment(&h, 1).await.percent_work_complete.get(), 30);
    let (_, task) = h.task_of(1).await;
    assert_eq!(task["PercentComplete"], 30.0);
    let audit = h.engine.state().audit(Some(h.project)).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.rule == DecisionRule::Tie && r.field == MailField::PercentComplete),
        "{audit:?}"
    );
}

/// As above, but the read after the stale change key fails too (a dropped connection): the pass
/// ends with an error, and the next pass must still know that the plan's value is only the
/// first edit applied. The second edit wins, even within the clock-skew tolerance.
#[tokio::test]
async fn an_edit_made_during_the_write_back_survives_a_failed_read_after_it() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(2).await;
    let id = id_of(&task);
    h.edit(&mailbox, &id, json!({"PercentComplete": 30})).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}mailboxes/{mailbox}/tasks/{}",
        h.sim.admin_url,
        urlencode(&id)
    );
    let fail_fetches = h.spy.fail_fetches.clone();
    *h.spy.before_next_update.lock().unwrap() = Some(Box::pin(async move {
        let r = http
            .patch(url)
            .json(&json!({"PercentComplete": 40}))
            .send()
            .await
            .expect("admin");
        assert!(r.status().is_success());
        // The write meets a stale change key; the read of the new version is lost.
        fail_fetches.store(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let first = h.engine.sync_mailbox(&MailboxAddress::new(&mailbox)).await;
    assert!(first.is_err(), "the failed read ends the pass: {first:?}");
    assert_eq!(
        h.spy.fail_fetches.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the read after the stale write was the one that failed"
    );
    pass(&h, &mailbox).await;
    pass(&h, &mailbox).await;
    let a = assignment(&h, 2).await;
    assert_eq!(
        a.percent_work_complete.get(),
        40,
        "the newest edit is the plan's"
    );
    let (_, task) = h.task_of(2).await;
    assert_eq!(task["PercentComplete"], 40.0, "and the mailbox keeps it");
}

/// An owner's second edit that lands after taskbridge applied the first and before it wrote
/// the plan's resulting values back (the write meets a stale change key): the second edit is
/// the newest thing anyone said and must win, even within the clock-skew tolerance, because
/// the plan's value is only the first edit applied, not a change of its own.
#[tokio::test]
async fn an_edit_made_while_the_previous_one_is_written_back_is_not_lost() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let (mailbox, task) = h.task_of(2).await;
    let id = id_of(&task);
    h.edit(&mailbox, &id, json!({"PercentComplete": 30})).await;
    // Right before the write-back of 30 % (its actual work): the owner types 40 %.
    let http = reqwest::Client::new();
    let url = format!(
        "{}mailboxes/{mailbox}/tasks/{}",
        h.sim.admin_url,
        urlencode(&id)
    );
    *h.spy.before_next_update.lock().unwrap() = Some(Box::pin(async move {
        let r = http
            .patch(url)
            .json(&json!({"PercentComplete": 40}))
            .send()
            .await
            .expect("admin");
        assert!(r.status().is_success());
    }));
    pass(&h, &mailbox).await;
    assert!(
        h.spy.before_next_update.lock().unwrap().is_none(),
        "the write-back happened"
    );
    // Settle whatever the stale write left for later.
    pass(&h, &mailbox).await;
    let a = assignment(&h, 2).await;
    assert_eq!(
        a.percent_work_complete.get(),
        40,
        "the newest edit is the plan's"
    );
    let (_, task) = h.task_of(2).await;
    assert_eq!(task["PercentComplete"], 40.0, "and the mailbox keeps it");
}

/// Arms the spy so that the owner sets `percent` right before the next write-back, and 10 %
/// more before each of the `left - 1` write-backs after it.
fn edit_before_next_write(
    slot: std::sync::Arc<std::sync::Mutex<Option<BeforeUpdate>>>,
    url: String,
    percent: u32,
    left: u32,
) {
    let again = slot.clone();
    *slot.lock().unwrap() = Some(Box::pin(async move {
        let r = reqwest::Client::new()
            .patch(&url)
            .json(&json!({ "PercentComplete": percent }))
            .send()
            .await
            .expect("admin");
        assert!(r.status().is_success());
        if left > 1 {
            edit_before_next_write(again, url, percent + 10, left - 1);
        }
    }));
}

/// The owner edits again before every write-back of a pass, so that each of its
/// `max_attempts` writes meets a stale change key and the pass gives up (an edit storm in
/// small). Each edit read was applied on the PM side; the next pass must start from the last
/// one applied, not from an older one: otherwise the plan's copy of that edit would count as a
/// change of the plan's own and win the clock-skew tie over the owner's newest edit.
#[tokio::test]
async fn an_edit_made_during_the_last_write_back_attempt_is_not_lost() {
    let h = published(3, ApprovalPolicy::Auto, quick_sync()).await;
    let attempts = SyncConfig::default().max_attempts;
    let (mailbox, task) = h.task_of(2).await;
    let id = id_of(&task);
    h.edit(&mailbox, &id, json!({"PercentComplete": 30})).await;
    let url = format!(
        "{}mailboxes/{mailbox}/tasks/{}",
        h.sim.admin_url,
        urlencode(&id)
    );
    // Before each write-back, the owner types 10 % more.
    edit_before_next_write(h.spy.before_next_update.clone(), url, 40, attempts);
    let first = pass(&h, &mailbox).await;
    assert_eq!(first.failed, 1, "every write met a stale key: {first:?}");
    assert_eq!(first.parked, 0, "one failed pass parks nothing: {first:?}");
    assert!(
        h.spy.before_next_update.lock().unwrap().is_none(),
        "the owner edited before each write-back"
    );
    let newest = 30 + 10 * attempts;
    assert_eq!(
        assignment(&h, 2).await.percent_work_complete.get(),
        u8::try_from(newest - 10).unwrap(),
        "the last edit read was applied"
    );
    pass(&h, &mailbox).await;
    pass(&h, &mailbox).await;
    assert_eq!(
        u32::from(assignment(&h, 2).await.percent_work_complete.get()),
        newest,
        "the newest edit is the plan's"
    );
    let (_, task) = h.task_of(2).await;
    assert_eq!(
        task["PercentComplete"],
        f64::from(newest),
        "and the mailbox keeps it"
    );
}
