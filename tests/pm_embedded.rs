//! The embedded PM host on both backends: import and re-import of our MSPDI/JSON fixtures and
//! status updates under both policies with the events their decisions emit, run as one suite on
//! SQLite (a file per case) and on PostgreSQL (a database per case in a throw-away cluster; see
//! `external/postgres.rs`); a broken file leaving the SQLite file byte-identical, and what only
//! one backend has, beside it.

mod external;
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::broadcast;

use external::postgres::Cluster;

use taskbridge::pm::embedded::{
    DECIDER_AUTO, DECIDER_TASKBRIDGE, EmbeddedError, EmbeddedHost, HostOptions, PmLocation, Policy,
    PostgresPm, UpdateFilter, UpdateState,
};
use taskbridge::pm::import::import_file;
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, HostError, HostEvent,
    ImportOptions, Percent, PmHost, Project, ProjectGuid, StatusUpdate, UpdateOutcome,
    UpdateSource, Work,
};

const EDGE_GUID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn berlin() -> ImportOptions {
    ImportOptions {
        time_zone: chrono_tz::Europe::Berlin,
        fallback_guid: Some(
            "a0000000-0000-4000-8000-000000000001"
                .parse()
                .expect("valid guid"),
        ),
        ..ImportOptions::default()
    }
}

fn edge_guid() -> ProjectGuid {
    EDGE_GUID.parse().expect("valid guid")
}

fn key(uid: i64) -> AssignmentKey {
    AssignmentKey {
        project: edge_guid(),
        assignment: AssignmentUid(uid),
    }
}

/// Where a case's store lives: a folder for its files, and the PM store in it (SQLite) or in
/// a PostgreSQL database of its own. Opening it again gives a second handle on the same data
/// (a restarted process, or a CLI process beside `serve`).
struct Store {
    dir: TempDir,
    url: Option<String>,
}

impl Store {
    fn sqlite() -> Store {
        Store {
            dir: TempDir::new().expect("temp dir"),
            url: None,
        }
    }

    fn postgres(url: String) -> Store {
        Store {
            dir: TempDir::new().expect("temp dir"),
            url: Some(url),
        }
    }

    fn location(&self) -> PmLocation {
        match &self.url {
            None => PmLocation::Sqlite(self.dir.path().join(EmbeddedHost::FILE_NAME)),
            Some(url) => PmLocation::Postgres(PostgresPm {
                url: url.clone(),
                password: None,
                tls: std::sync::Arc::new(
                    taskbridge::ews::transport::rustls_client_config(&Default::default())
                        .expect("TLS configuration"),
                ),
            }),
        }
    }

    async fn open_with(&self, options: HostOptions) -> EmbeddedHost {
        EmbeddedHost::open_at(&self.location(), options)
            .await
            .expect("store opens")
    }
}

async fn open(store: &Store) -> EmbeddedHost {
    store.open_with(HostOptions::default()).await
}

/// A host on `store` with the edge-cases fixture imported.
async fn edge_host(store: &Store, policy: Policy) -> EmbeddedHost {
    let host = open(store).await;
    host.import_file(fixture("mspdi/edge-cases.xml"), berlin(), Some(policy))
        .await
        .expect("edge-cases.xml imports");
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_without_the_store_is_no_store_and_a_newer_one_is_refused() {
    let Some(cluster) = Cluster::start("PostgreSQL PM store migrations") else {
        return;
    };
    let store = Store::postgres(cluster.create_database("versions"));
    let existing = HostOptions {
        create: false,
        ..HostOptions::default()
    };
    let missing = EmbeddedHost::open_at(&store.location(), existing.clone()).await;
    assert!(
        matches!(missing, Err(EmbeddedError::NoDatabaseStore(_))),
        "{missing:?}"
    );
    // Four processes opening together: one migrates, the others find it done.
    let hosts = futures::future::join_all((0..4).map(|_| open(&store))).await;
    for host in hosts {
        host.close().await;
    }
    open(&store).await.close().await;
    store.open_with(existing.clone()).await.close().await;
    let (client, conn) =
        tokio_postgres::connect(store.url.as_deref().expect("url"), tokio_postgres::NoTls)
            .await
            .expect("psql-like connection");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE taskbridge_schema SET version = 999 WHERE store = 'pm'",
            &[],
        )
        .await
        .expect("pretend a newer release migrated");
    let newer = EmbeddedHost::open_at(&store.location(), existing).await;
    assert!(
        matches!(newer, Err(EmbeddedError::SchemaTooNew { found: 999, .. })),
        "{newer:?}"
    );
}

/// A plan imported into a fresh database is analysed by the store itself: without statistics
/// the planner read each key list by scanning the project's rows until autovacuum came round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_pm_store_analyses_the_tables_it_reads_by_keys_once_they_filled() {
    let Some(cluster) = Cluster::start("PostgreSQL PM store statistics") else {
        return;
    };
    let store = Store::postgres(cluster.create_database("statistics"));
    let host = open(&store).await;
    let project = harness::project(600);
    let guid = project.guid;
    host.import(project).await.expect("imports");
    let (client, conn) =
        tokio_postgres::connect(store.url.as_deref().expect("url"), tokio_postgres::NoTls)
            .await
            .expect("psql-like connection");
    tokio::spawn(conn);
    let analysed = async || -> bool {
        client
            .query_one(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables \
                 WHERE relname = 'assignments'",
                &[],
            )
            .await
            .expect("statistics view")
            .get(0)
    };
    let mut seen = false;
    for _ in 0..60 {
        // Jobs are what the store checks after.
        PmHost::project(&host, guid).await.expect("reads");
        if analysed().await {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen, "600 assignments imported and never analysed");
    host.close().await;
}

/// A database restart costs the calls made while it is down (an error the connector retries,
/// never a panic or a dead store); afterwards the pool's fresh connections serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_pm_store_rides_out_a_database_restart() {
    let Some(cluster) = Cluster::start("PostgreSQL PM store restarts") else {
        return;
    };
    let store = Store::postgres(cluster.create_database("restart"));
    let host = edge_host(&store, Policy::Auto).await;
    cluster.kill();
    let down = PmHost::project(&host, edge_guid()).await;
    assert!(
        matches!(down, Err(HostError::Unavailable(_))),
        "a dead database is a temporary failure: {down:?}"
    );
    cluster.restart();
    let mut back = None;
    for _ in 0..50 {
        if let Ok(project) = PmHost::project(&host, edge_guid()).await {
            back = project;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back.map(|p| p.guid), Some(edge_guid()));
    let outcome = host
        .submit(update(3, "ck-1", vec![percent_change(0, 75)]))
        .await
        .expect("writes again");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

async fn open_dir(dir: &Path) -> EmbeddedHost {
    EmbeddedHost::open(dir).await.expect("store opens")
}

async fn edge_host_dir(dir: &Path, policy: Policy) -> EmbeddedHost {
    let host = open_dir(dir).await;
    host.import_file(fixture("mspdi/edge-cases.xml"), berlin(), Some(policy))
        .await
        .expect("edge-cases.xml imports");
    host
}

/// Every case that holds for either backend, each on a fresh store made by `fresh`.
async fn suite(mut fresh: impl FnMut(&str) -> Store) {
    import_edge_cases_round_trips_through_the_store(fresh("edge")).await;
    import_every_fixture_round_trips_through_the_store(fresh("fixtures")).await;
    reimport_with_changes_counts_and_stamps_changed_fields(fresh("reimport")).await;
    reimport_same_file_changes_nothing(fresh("reimport_same")).await;
    auto_policy_applies_percent_on_seven_and_a_half_hours(fresh("auto_percent")).await;
    auto_policy_work_arithmetic_full_hours_and_zero_work(fresh("auto_work")).await;
    approval_policy_supersedes_then_approves_and_emits_decision(fresh("approve")).await;
    approval_policy_reject_keeps_plan_and_emits_pm_values(fresh("reject")).await;
    invalid_update_is_rejected_at_once_under_either_policy([
        fresh("invalid_auto"),
        fresh("invalid_approval"),
    ])
    .await;
    resubmitting_the_same_item_version_returns_the_first_outcome(fresh("resubmit")).await;
    unknown_project_or_assignment_is_an_error(fresh("unknown")).await;
    task_field_change_republishes_and_stamps_sibling_assignments(fresh("task_field")).await;
    reimport_removing_an_assignment_closes_its_pending_updates(fresh("reimport_removing")).await;
    decision_in_another_process_reaches_this_ones_subscribers(fresh("two_processes")).await;
    two_processes_approving_one_update_apply_it_once(fresh("approve_race")).await;
    two_instances_submitting_one_edit_apply_it_once(fresh("submit_race")).await;
    project_part_equals_the_same_rows_of_the_whole_project(fresh("part")).await;
    notices_owed_outlive_the_process_and_are_owed_once(fresh("notices")).await;
    the_plan_revision_moves_with_every_write_a_publish_reads(fresh("revision")).await;
    updates_submitted_together_are_taken_in_order_until_one_fails(fresh("submit_many")).await;
}

/// The connector hands a read batch's status updates over in one call, which the embedded
/// host takes in one transaction: each is taken as it would be alone (the same item version
/// twice is one update), and one that fails leaves nothing of itself, keeps those before it
/// and stops those after it, which are not submitted.
async fn updates_submitted_together_are_taken_in_order_until_one_fails(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let before_3 = assignment(&host, 3).await;
    let mut unknown = update(1, "ck-x", vec![percent_change(27, 50)]);
    unknown.key = AssignmentKey {
        project: edge_guid(),
        assignment: AssignmentUid(999),
    };
    let taken = host
        .submit_status_updates(vec![
            update(1, "ck-1", vec![percent_change(27, 60)]),
            update(1, "ck-1", vec![percent_change(27, 60)]),
            unknown,
            update(3, "ck-1", vec![percent_change(0, 75)]),
        ])
        .await;
    let [first, again] = &taken.outcomes[..] else {
        panic!("two outcomes before the failure: {taken:?}");
    };
    let UpdateOutcome::Applied { id, assignment: a } = first else {
        panic!("expected Applied, got {first:?}");
    };
    assert_eq!(a.percent_work_complete, Percent::new(60).expect("in range"));
    assert_eq!(again, first, "the same item version is the same update");
    assert!(
        matches!(taken.stopped, Some(HostError::UnknownAssignment(k)) if k.assignment == AssignmentUid(999)),
        "{:?}",
        taken.stopped
    );
    assert_eq!(
        assignment(&host, 1).await.percent_work_complete,
        Percent::new(60).expect("in range"),
        "kept: taken before the failure"
    );
    assert_eq!(
        assignment(&host, 3).await,
        before_3,
        "after the failure: not submitted"
    );
    let records = host
        .status_updates(UpdateFilter::default())
        .await
        .expect("lists");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(&records[0].id, id);
    // Taken alone afterwards as if never tried.
    let outcome = host
        .submit_status_updates(vec![update(3, "ck-1", vec![percent_change(0, 75)])])
        .await;
    assert!(outcome.stopped.is_none(), "{:?}", outcome.stopped);
    assert!(
        matches!(&outcome.outcomes[..], [UpdateOutcome::Applied { .. }]),
        "{:?}",
        outcome.outcomes
    );
    assert!(
        host.submit_status_updates(Vec::new())
            .await
            .outcomes
            .is_empty()
    );
    // A batch whose first update fails takes nothing, and says why.
    let mut unknown = update(2, "ck-y", vec![percent_change(0, 10)]);
    unknown.key.assignment = AssignmentUid(998);
    let before_2 = assignment(&host, 2).await;
    let taken = host
        .submit_status_updates(vec![
            unknown,
            update(2, "ck-2", vec![percent_change(0, 20)]),
        ])
        .await;
    assert!(taken.outcomes.is_empty(), "{:?}", taken.outcomes);
    assert!(
        matches!(taken.stopped, Some(HostError::UnknownAssignment(k)) if k.assignment == AssignmentUid(998)),
        "{:?}",
        taken.stopped
    );
    assert_eq!(assignment(&host, 2).await, before_2);
}

/// The connector skips publishing a project whose plan revision it already published; so the
/// revision must move with every write that changes what a publish reads (an applied update,
/// in this process or another, and an import) and stay put with those that change nothing of
/// it (a pending update, a policy change).
async fn the_plan_revision_moves_with_every_write_a_publish_reads(store: Store) {
    let host = edge_host(&store, Policy::Approval).await;
    let revision = |host: &EmbeddedHost| {
        let host = host.clone();
        async move {
            host.plan_revision(edge_guid())
                .await
                .expect("readable")
                .expect("the project has a revision")
        }
    };
    let first = revision(&host).await;
    assert_eq!(revision(&host).await, first, "reading moves nothing");
    assert_eq!(
        host.plan_revision(ProjectGuid(uuid::Uuid::from_u128(7)))
            .await
            .expect("readable"),
        None,
        "an unknown project has none"
    );
    // Waiting for the status manager changes no PM value.
    let UpdateOutcome::Pending { id } = host
        .submit(update(9, "ck-1", vec![percent_change(0, 10)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    assert_eq!(revision(&host).await, first, "a pending update");
    host.set_policy(edge_guid(), Policy::Auto)
        .await
        .expect("policy");
    assert_eq!(revision(&host).await, first, "a policy change");
    // Approved in another process: the values change, and so does the revision.
    let other = open(&store).await;
    other
        .approve(&id, "pm@example.com", false)
        .await
        .expect("approved");
    let approved = revision(&host).await;
    assert_ne!(approved, first, "an approval applies values");
    // Applied at once under the auto policy.
    let outcome = host
        .submit(update(9, "ck-2", vec![percent_change(10, 20)]))
        .await
        .expect("accepted");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let applied = revision(&host).await;
    assert_ne!(applied, approved, "an applied update");
    // An import, even of the same file.
    host.import_file(fixture("mspdi/edge-cases.xml"), berlin(), None)
        .await
        .expect("imports again");
    assert_ne!(revision(&host).await, applied, "an import");
}

/// The e-mail notices owed are kept in the store: a second process (or this one after a
/// restart) finds them, owes a rejection's notice only once, and a new digest of a project
/// replaces one not sent yet. A failure is counted; a notice sent is owed no more.
async fn notices_owed_outlive_the_process_and_are_owed_once(store: Store) {
    let host = edge_host(&store, Policy::Approval).await;
    let UpdateOutcome::Pending { id } = host
        .submit(update(3, "ck-notice", vec![percent_change(0, 40)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    host.reject(&id, "mia", Some("not yet"))
        .await
        .expect("rejects");
    assert!(
        host.announced_rejections()
            .await
            .expect("readable")
            .is_empty(),
        "a rejection made after the store's upgrade is not announced by itself"
    );
    let to = vec!["zoe.mueller@example.de".to_owned()];
    assert!(
        host.owe_rejection_notice(&id, to.clone(), "rejected".into(), "why".into())
            .await
            .expect("owed")
    );
    let project = key(3).project;
    let mia = vec!["mia@example.com".to_owned()];
    host.owe_digest(project, mia.clone(), "2 wait".into(), "a, b".into())
        .await
        .expect("owed");
    host.owe_digest(project, mia.clone(), "1 waits".into(), "a".into())
        .await
        .expect("owed");
    let owed = host.owed_notices().await.expect("readable");
    assert_eq!(owed.len(), 2, "{owed:?}");
    // One process claims the rejection's notice to send it: another one on the same store
    // cannot claim it too, nor sees it due.
    let minute = chrono::Duration::seconds(60);
    assert!(
        host.claim_notice(owed[0].seq, Utc::now() + minute)
            .await
            .expect("claims")
    );
    let other = open(&store).await;
    assert!(
        !other
            .claim_notice(owed[0].seq, Utc::now() + minute)
            .await
            .expect("readable"),
        "a notice claimed twice"
    );
    let due: Vec<String> = other
        .owed_notices()
        .await
        .expect("readable")
        .into_iter()
        .map(|n| n.subject)
        .collect();
    assert_eq!(due, vec!["1 waits".to_owned()]);
    other.close().await;
    // The send failed; it is due again at once (a wait that is over).
    host.notice_failed(owed[0].seq, "ErrorServerBusy", Utc::now() - minute)
        .await
        .expect("recorded");
    host.close().await;

    let again = open(&store).await;
    assert!(
        !again
            .owe_rejection_notice(&id, to.clone(), "rejected".into(), "why".into())
            .await
            .expect("readable"),
        "the same rejection was owed twice"
    );
    assert!(
        again
            .announced_rejections()
            .await
            .expect("readable")
            .contains(&id)
    );
    let owed = again.owed_notices().await.expect("readable");
    let summary: Vec<(&str, &[String], u32)> = owed
        .iter()
        .map(|n| (n.subject.as_str(), n.to.as_slice(), n.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("rejected", to.as_slice(), 1),
            ("1 waits", mia.as_slice(), 0)
        ]
    );
    again.notice_sent(owed[0].seq).await.expect("sent");
    let left = again.owed_notices().await.expect("readable");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].subject, "1 waits");
    // A failure's wait that is not over keeps a notice owed but not due.
    again
        .notice_failed(left[0].seq, "ErrorServerBusy", Utc::now() + minute)
        .await
        .expect("recorded");
    assert_eq!(again.owed_notices().await.expect("readable"), Vec::new());
    again.close().await;
}

/// One mailbox edit submitted by two instances at once (the old owner of a mailbox and the one
/// taking its lease over) and once more after a restart: one update is recorded and applied,
/// every submission answers with its outcome. The next version of the item is a new update.
async fn two_instances_submitting_one_edit_apply_it_once(store: Store) {
    let first = edge_host(&store, Policy::Auto).await;
    let second = open(&store).await;
    let edit = update(3, "ck-race", vec![percent_change(0, 40)]);
    assert_eq!(
        edit.idempotency_key().to_string(),
        format!("{}/AAMk-item-3/ck-race", key(3))
    );
    let (a, b) = tokio::join!(
        first.submit(edit.clone()),
        second.submit_status_update(edit.clone())
    );
    let a = a.expect("first instance's submission accepted");
    let b = b.expect("second instance's submission accepted");
    assert!(matches!(a, UpdateOutcome::Applied { .. }), "{a:?}");
    assert_eq!(a, b, "both instances are answered with the one outcome");
    let restarted = open(&store).await;
    let again = restarted
        .submit(edit.clone())
        .await
        .expect("resubmission accepted");
    assert_eq!(
        again, a,
        "a restarted instance is answered with the first outcome"
    );
    let updates = restarted
        .status_updates(UpdateFilter::default())
        .await
        .expect("lists");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].state, UpdateState::Applied);
    assert_eq!(&updates[0].id, a.id());

    // The item edited again has a new change key: a second update, applied on its own.
    let next = update(3, "ck-race-2", vec![percent_change(40, 70)]);
    let later = second.submit(next).await.expect("accepted");
    assert_ne!(later.id(), a.id());
    let UpdateOutcome::Applied { assignment, .. } = later else {
        panic!("expected Applied: {later:?}");
    };
    assert_eq!(assignment.percent_work_complete.get(), 70);
    assert_eq!(
        first
            .status_updates(UpdateFilter::default())
            .await
            .expect("lists")
            .len(),
        2
    );
}

/// Two processes approving the same pending update at once: the write lock makes one decide
/// it and tells the other it is no longer pending, and the update is applied once.
async fn two_processes_approving_one_update_apply_it_once(store: Store) {
    let first = edge_host(&store, Policy::Approval).await;
    let second = open(&store).await;
    let UpdateOutcome::Pending { id } = first
        .submit(update(3, "ck-1", vec![percent_change(0, 75)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let (a, b) = tokio::join!(
        first.approve(&id, "one", false),
        second.approve(&id, "two", false)
    );
    assert_eq!(
        [&a, &b].iter().filter(|r| r.is_ok()).count(),
        1,
        "{a:?} {b:?}"
    );
    assert!(
        [&a, &b]
            .iter()
            .any(|r| matches!(r, Err(EmbeddedError::NotPending { .. }))),
        "{a:?} {b:?}"
    );
    let applied = second
        .status_updates(UpdateFilter {
            state: Some(UpdateState::Applied),
            ..UpdateFilter::default()
        })
        .await
        .expect("readable");
    assert_eq!(applied.len(), 1);
    assert_eq!(
        assignment(&second, 3).await.percent_work_complete,
        Percent::new(75).expect("valid")
    );
}

/// The part of a project for one assignment (what the connector reads to map and decide it)
/// equals the same rows of the whole project, field times included.
async fn project_part_equals_the_same_rows_of_the_whole_project(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let outcome = host
        .submit(update(3, "ck-1", vec![percent_change(0, 75)]))
        .await
        .expect("answered");
    assert!(
        matches!(outcome, UpdateOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let whole = host
        .load_project(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    let part = host
        .load_project_part(edge_guid(), vec![AssignmentUid(3)])
        .await
        .expect("readable")
        .expect("stored");
    let a3 = whole
        .assignment(AssignmentUid(3))
        .cloned()
        .expect("assignment 3");
    assert_eq!(part.assignments, vec![a3.clone()]);
    assert_eq!(
        part.tasks,
        whole
            .tasks
            .iter()
            .filter(|t| t.uid == a3.task_uid)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        part.resources,
        whole
            .resources
            .iter()
            .filter(|r| r.uid == a3.resource_uid)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (part.guid, &part.name, part.time_zone),
        (whole.guid, &whole.name, whole.time_zone)
    );
    let none = host
        .load_project_part(edge_guid(), vec![AssignmentUid(99)])
        .await
        .expect("readable")
        .expect("the project is there");
    assert!(none.assignments.is_empty() && none.tasks.is_empty());
    let other: ProjectGuid = "b0000000-0000-4000-8000-000000000002"
        .parse()
        .expect("valid guid");
    assert_eq!(
        host.load_project_part(other, vec![AssignmentUid(3)])
            .await
            .expect("readable"),
        None
    );
}

#[tokio::test]
async fn the_sqlite_store_passes_the_suite() {
    suite(|_| Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_suite() {
    let Some(cluster) = Cluster::start("the PM store on PostgreSQL") else {
        return;
    };
    suite(|name| Store::postgres(cluster.create_database(name))).await;
}

fn update(uid: i64, change_key: &str, changes: Vec<FieldChange>) -> StatusUpdate {
    StatusUpdate {
        key: key(uid),
        changes,
        source: UpdateSource {
            mailbox: "zoe.mueller@example.de".into(),
            item_id: format!("AAMk-item-{uid}"),
            change_key: change_key.into(),
            modified_at: Utc
                .with_ymd_and_hms(2026, 3, 31, 9, 0, 0)
                .single()
                .expect("valid"),
        },
        status_note: None,
        completed_on: None,
    }
}

fn percent_change(old: u8, new: u8) -> FieldChange {
    FieldChange {
        field: AssignmentField::PercentWorkComplete,
        old: FieldValue::Percent(Percent::new(old).expect("in range")),
        new: FieldValue::Percent(Percent::new(new).expect("in range")),
    }
}

fn work_change(field: AssignmentField, old: Work, new: Work) -> FieldChange {
    FieldChange {
        field,
        old: FieldValue::Work(old),
        new: FieldValue::Work(new),
    }
}

async fn assignment(host: &EmbeddedHost, uid: i64) -> taskbridge::pm::Assignment {
    host.load_project(edge_guid())
        .await
        .expect("readable")
        .and_then(|p| p.assignment(AssignmentUid(uid)).cloned())
        .expect("assignment exists")
}

/// Receives events until one matches, failing after a generous bound (a hang is a bug).
async fn next_event(rx: &mut broadcast::Receiver<HostEvent>) -> HostEvent {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Ok(event)) => event,
        other => panic!("no event: {other:?}"),
    }
}

/// Asserts that no event is waiting now, by publishing and seeing the publication come first.
async fn assert_no_event_before_publish(
    host: &EmbeddedHost,
    rx: &mut broadcast::Receiver<HostEvent>,
) {
    host.publish(edge_guid()).await.expect("publishes");
    assert_eq!(
        next_event(rx).await,
        HostEvent::ProjectPublished {
            project: edge_guid()
        }
    );
}

fn hash_file(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| format!("{:x}", Sha256::digest(bytes)))
}

/// The store's bytes: the main file and the write-ahead log.
fn store_hash(db: &Path) -> (Option<String>, Option<String>) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    (hash_file(db), hash_file(&wal))
}

fn within(at: Option<DateTime<Utc>>, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    at.is_some_and(|at| from <= at && at <= to)
}

// ---------------------------------------------------------------------------------------------
// Import.

async fn import_edge_cases_round_trips_through_the_store(store: Store) {
    let host = open(&store).await;
    let mut events = host.subscribe();
    let report = host
        .import_file(fixture("mspdi/edge-cases.xml"), berlin(), None)
        .await
        .expect("imports");
    assert!(report.created);
    assert_eq!(report.project, edge_guid());
    assert_eq!((report.added, report.changed, report.removed), (9, 0, 0));
    // Only Survey/Wiring/Sign-off for Zoë reach a mailbox: no resource, summary tasks, the
    // project summary task, a resource without and one with a blank address are left out.
    assert_eq!(report.mailbox_assignments, 3);
    assert_eq!(report.policy, Policy::Auto);
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::ProjectPublished {
            project: edge_guid()
        }
    );

    let parsed = import_file(fixture("mspdi/edge-cases.xml"), &berlin()).expect("parses");
    let stored = host
        .load_project(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(stored, parsed);
    // Non-ASCII names, the summary hierarchy and the no-resource placeholder survive the store.
    assert_eq!(
        stored
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        [
            "Edge cases",
            "東京 office fit-out",
            "Survey",
            "Electrical",
            "Wiring",
            "Sign-off"
        ]
    );
    assert_eq!(
        stored
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["Zoë Müller", "佐藤 健二", "Priya Rao"]
    );
    assert_eq!(
        stored
            .tasks
            .iter()
            .map(|t| t.outline_level)
            .collect::<Vec<_>>(),
        [0, 1, 2, 2, 3, 1]
    );
    let summary = host
        .project_summary(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(summary.time_zone, "Europe/Berlin");
    assert_eq!(
        (summary.tasks, summary.resources, summary.assignments),
        (6, 3, 9)
    );
    assert_eq!(summary.revision, 1);
    assert_eq!(
        PmHost::projects(&host).await.expect("lists"),
        vec![edge_guid()]
    );
}

async fn import_every_fixture_round_trips_through_the_store(store: Store) {
    let host = open(&store).await;
    let names = [
        "mspdi/project2007.xml",
        "mspdi/project2019.xml",
        "mspdi/projectlibre.xml",
        "mspdi/ganttproject.xml",
        "mspdi/edge-cases.xml",
        "projects/sample.json",
    ];
    for name in names {
        // Files without a GUID each get their own.
        let options = ImportOptions {
            fallback_guid: Some(ProjectGuid(uuid::Uuid::new_v4())),
            ..berlin()
        };
        let parsed: Project = import_file(fixture(name), &options).expect(name);
        let report = host
            .import_file(fixture(name), options.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stored = host
            .load_project(report.project)
            .await
            .expect("readable")
            .expect("stored");
        assert_eq!(stored, parsed, "{name}");
    }
    let summaries = host.project_summaries().await.expect("lists");
    assert_eq!(summaries.len(), names.len());
}

async fn reimport_with_changes_counts_and_stamps_changed_fields(store: Store) {
    let dir = &store.dir;
    let host = edge_host(&store, Policy::Auto).await;
    let original = std::fs::read_to_string(fixture("mspdi/edge-cases.xml")).expect("readable");
    let a1 = "<Assignment><UID>1</UID><TaskUID>2</TaskUID><ResourceUID>1</ResourceUID><Work>PT7H30M0S</Work>";
    let a9 = "\t\t<Assignment><UID>9</UID><TaskUID>0</TaskUID><ResourceUID>1</ResourceUID><Work>PT0H0M0S</Work></Assignment>\n";
    assert!(
        original.contains(a1) && original.contains(a9),
        "fixture changed"
    );
    let changed = original
        .replace(a1, &a1.replace("PT7H30M0S", "PT9H0M0S"))
        .replace(
            a9,
            "\t\t<Assignment><UID>10</UID><TaskUID>2</TaskUID><ResourceUID>2</ResourceUID><Work>PT1H0M0S</Work></Assignment>\n",
        )
        .replace("<Name>Sign-off</Name>", "<Name>Abnahme ✓</Name>");
    let file = dir.path().join("edge-cases-v2.xml");
    std::fs::write(&file, changed).expect("writable");

    let before = Utc::now();
    let report = host
        .import_file(&file, berlin(), None)
        .await
        .expect("re-imports");
    let after = Utc::now();
    assert!(!report.created);
    assert_eq!(report.added, 1, "{report:?}");
    // Assignment 1 (work) and the two Sign-off assignments (task renamed).
    assert_eq!(report.changed, 3, "{report:?}");
    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(report.unchanged, 5, "{report:?}");

    let a1 = assignment(&host, 1).await;
    assert_eq!(a1.work, Work::from_hours(9));
    for field in [
        AssignmentField::Work,
        AssignmentField::RemainingWork,
        AssignmentField::PercentWorkComplete,
    ] {
        assert!(within(a1.modified.get(field), before, after), "{field:?}");
    }
    assert_eq!(a1.modified.get(AssignmentField::ActualWork), None);
    assert_eq!(a1.modified.get(AssignmentField::Name), None);
    let a8 = assignment(&host, 8).await;
    assert!(within(
        a8.modified.get(AssignmentField::Name),
        before,
        after
    ));
    assert_eq!(a8.modified.get(AssignmentField::Work), None);
    let project = host
        .load_project(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert!(project.assignment(AssignmentUid(9)).is_none());
    assert!(project.assignment(AssignmentUid(10)).is_some());
    let summary = host
        .project_summary(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(summary.revision, 2);

    // The times survive the store being closed and reopened.
    host.close().await;
    let host = open(&store).await;
    assert_eq!(assignment(&host, 1).await.modified, a1.modified);
}

async fn reimport_same_file_changes_nothing(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let first = host.load_project(edge_guid()).await.expect("readable");
    let report = host
        .import_file(fixture("mspdi/edge-cases.xml"), berlin(), None)
        .await
        .expect("re-imports");
    assert_eq!(
        (
            report.added,
            report.changed,
            report.removed,
            report.unchanged
        ),
        (0, 0, 0, 9)
    );
    assert_eq!(
        host.load_project(edge_guid()).await.expect("readable"),
        first
    );
}

const BROKEN: [&str; 5] = [
    "mspdi/broken-doctype.xml",
    "mspdi/broken-duration.xml",
    "mspdi/broken-truncated.xml",
    "mspdi/broken-unknown-resource.xml",
    "mspdi/broken-unknown-task.xml",
];

#[tokio::test]
async fn import_broken_file_leaves_open_store_byte_identical() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host_dir(dir.path(), Policy::Auto).await;
    let db = host.path().to_owned();
    let before = store_hash(&db);
    for name in BROKEN {
        match host.import_file(fixture(name), berlin(), None).await {
            Err(EmbeddedError::Import(e)) => {
                let place = e
                    .place()
                    .unwrap_or_else(|| panic!("{name}: no place in {e}"));
                assert!(place.line.is_some(), "{name}: {place}");
            }
            other => panic!("{name}: expected an import error, got {other:?}"),
        }
        assert_eq!(store_hash(&db), before, "{name}");
    }
}

#[tokio::test]
async fn import_broken_file_leaves_closed_store_byte_identical() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host_dir(dir.path(), Policy::Auto).await;
    let db = host.path().to_owned();
    host.close().await;
    let before = store_hash(&db);
    assert!(before.0.is_some());
    for name in BROKEN {
        let host = open_dir(dir.path()).await;
        let result = host.import_file(fixture(name), berlin(), None).await;
        assert!(matches!(result, Err(EmbeddedError::Import(_))), "{name}");
        host.close().await;
        assert_eq!(store_hash(&db), before, "{name}");
    }
}

#[tokio::test]
async fn open_existing_without_store_is_no_store() {
    let dir = TempDir::new().expect("temp dir");
    let result = EmbeddedHost::open_existing(dir.path().join("nowhere")).await;
    assert!(matches!(result, Err(EmbeddedError::NoStore(_))));
    assert!(!dir.path().join("nowhere").exists());
}

// ---------------------------------------------------------------------------------------------
// Status updates.

async fn auto_policy_applies_percent_on_seven_and_a_half_hours(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let mut events = host.subscribe();
    let before = Utc::now();
    let outcome = host
        .submit_status_update(update(1, "ck-1", vec![percent_change(27, 50)]))
        .await
        .expect("accepted");
    let after = Utc::now();
    let UpdateOutcome::Applied { id, assignment: a } = outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    // Half of 7.5 h.
    assert_eq!(a.work, Work::from_minutes(450));
    assert_eq!(a.actual_work, Work::from_minutes(225));
    assert_eq!(a.remaining_work, Work::from_minutes(225));
    assert_eq!(a.percent_work_complete.get(), 50);
    assert!(within(
        a.modified.get(AssignmentField::ActualWork),
        before,
        after
    ));
    assert_eq!(a.modified.get(AssignmentField::Work), None);
    assert_eq!(assignment(&host, 1).await, a);

    let record = host
        .status_update(&id)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.state, UpdateState::Applied);
    assert_eq!(record.decider.as_deref(), Some(DECIDER_AUTO));
    assert_eq!(record.task_name.as_deref(), Some("Survey"));
    assert_eq!(record.resource_name.as_deref(), Some("Zoë Müller"));
    // A decision returned directly is not emitted again.
    assert_no_event_before_publish(&host, &mut events).await;
}

async fn auto_policy_work_arithmetic_full_hours_and_zero_work(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    // 3 h of 7.5 h reported: 40 %, 4.5 h remaining.
    let outcome = host
        .submit(update(
            1,
            "ck-1",
            vec![work_change(
                AssignmentField::ActualWork,
                Work::from_seconds(7201),
                Work::from_hours(3),
            )],
        ))
        .await
        .expect("accepted");
    let UpdateOutcome::Applied { assignment: a, .. } = outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    assert_eq!(
        (
            a.actual_work,
            a.remaining_work,
            a.percent_work_complete.get()
        ),
        (Work::from_hours(3), Work::from_minutes(270), 40)
    );
    assert_eq!(a.actual_finish, None);

    // Marked complete: everything done, nothing remaining, actual finish = finish.
    let outcome = host
        .submit(update(1, "ck-2", vec![percent_change(40, 100)]))
        .await
        .expect("accepted");
    let UpdateOutcome::Applied { assignment: a, .. } = outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    assert_eq!(a.actual_work, Work::from_minutes(450));
    assert_eq!(a.remaining_work, Work::ZERO);
    assert_eq!(a.percent_work_complete, Percent::FULL);
    assert_eq!(a.actual_finish, Some(a.finish));

    // The milestone (no work) reopened: only the percent moves, and the actual finish goes.
    let outcome = host
        .submit(update(8, "ck-3", vec![percent_change(100, 0)]))
        .await
        .expect("accepted");
    let UpdateOutcome::Applied { assignment: m, .. } = outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    assert_eq!(
        (
            m.work,
            m.actual_work,
            m.remaining_work,
            m.percent_work_complete
        ),
        (Work::ZERO, Work::ZERO, Work::ZERO, Percent::ZERO)
    );
    assert_eq!(m.actual_finish, None);
    // The task rolls up.
    let project = host
        .load_project(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    let survey = project
        .task(taskbridge::pm::TaskUid(2))
        .expect("Survey exists");
    assert_eq!(survey.percent_work_complete, Percent::FULL);
}

async fn approval_policy_supersedes_then_approves_and_emits_decision(store: Store) {
    let host = edge_host(&store, Policy::Approval).await;
    let mut events = host.subscribe();
    let untouched = assignment(&host, 3).await;

    let first = host
        .submit(update(3, "ck-1", vec![percent_change(0, 25)]))
        .await
        .expect("accepted");
    let UpdateOutcome::Pending { id: first } = first else {
        panic!("expected Pending, got {first:?}");
    };
    assert_eq!(
        assignment(&host, 3).await,
        untouched,
        "pending changes nothing"
    );
    let second = host
        .submit(update(3, "ck-2", vec![percent_change(0, 50)]))
        .await
        .expect("accepted");
    let UpdateOutcome::Pending { id: second } = second else {
        panic!("expected Pending, got {second:?}");
    };

    let old = host
        .status_update(&first)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(old.state, UpdateState::Superseded);
    assert_eq!(old.superseded_by.as_ref(), Some(&second));
    assert_eq!(old.decider.as_deref(), Some(DECIDER_TASKBRIDGE));
    let pending = host
        .status_updates(UpdateFilter::pending())
        .await
        .expect("lists");
    assert_eq!(
        pending.iter().map(|u| &u.id).collect::<Vec<_>>(),
        vec![&second]
    );
    let summary = host
        .project_summary(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(summary.pending_updates, 1);

    let outcome = host
        .approve(&second, "status.manager", false)
        .await
        .expect("approves");
    let UpdateOutcome::Applied { assignment: a, .. } = &outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    assert_eq!(a.actual_work, Work::from_hours(6));
    assert_eq!(a.percent_work_complete.get(), 50);
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::UpdateDecided {
            key: key(3),
            outcome: outcome.clone()
        }
    );
    let record = host
        .status_update(&second)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.state, UpdateState::Applied);
    assert_eq!(record.decider.as_deref(), Some("status.manager"));
    assert!(record.decided_at.is_some());

    // Decided updates cannot be decided again.
    assert!(matches!(
        host.approve(&second, "x", false).await,
        Err(EmbeddedError::NotPending {
            state: UpdateState::Applied,
            ..
        })
    ));
    assert!(matches!(
        host.reject(&first, "x", None).await,
        Err(EmbeddedError::NotPending {
            state: UpdateState::Superseded,
            ..
        })
    ));
}

async fn approval_policy_reject_keeps_plan_and_emits_pm_values(store: Store) {
    let host = edge_host(&store, Policy::Approval).await;
    let mut events = host.subscribe();
    let plan = assignment(&host, 3).await;
    let UpdateOutcome::Pending { id } = host
        .submit(update(3, "ck-1", vec![percent_change(0, 90)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let outcome = host
        .reject(&id, "status.manager", Some("not started yet, see the plan"))
        .await
        .expect("rejects");
    assert_eq!(
        outcome,
        UpdateOutcome::Rejected {
            id: id.clone(),
            assignment: plan.clone(),
            reason: "not started yet, see the plan".into()
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::UpdateDecided {
            key: key(3),
            outcome
        }
    );
    assert_eq!(assignment(&host, 3).await, plan);
    let record = host
        .status_update(&id)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.state, UpdateState::Rejected);
    assert_eq!(
        record.reason.as_deref(),
        Some("not started yet, see the plan")
    );

    // Without a reason, a default one is recorded.
    let UpdateOutcome::Pending { id } = host
        .submit(update(3, "ck-2", vec![percent_change(0, 10)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let UpdateOutcome::Rejected { reason, .. } =
        host.reject(&id, "sm", None).await.expect("rejects")
    else {
        panic!("expected Rejected");
    };
    assert_eq!(reason, "rejected by the status manager");
}

async fn invalid_update_is_rejected_at_once_under_either_policy(stores: [Store; 2]) {
    for (policy, store) in [Policy::Auto, Policy::Approval].into_iter().zip(&stores) {
        let host = edge_host(store, policy).await;
        let plan = assignment(&host, 1).await;
        let outcome = host
            .submit(update(
                1,
                "ck-1",
                vec![FieldChange {
                    field: AssignmentField::Work,
                    old: FieldValue::Work(Work::from_minutes(450)),
                    new: FieldValue::Text("eight hours".into()),
                }],
            ))
            .await
            .expect("answered");
        let UpdateOutcome::Rejected {
            id,
            assignment: a,
            reason,
        } = outcome
        else {
            panic!("{policy}: expected Rejected, got {outcome:?}");
        };
        assert_eq!(a, plan);
        assert!(reason.contains("Work"), "{reason}");
        let record = host
            .status_update(&id)
            .await
            .expect("readable")
            .expect("stored");
        assert_eq!(record.state, UpdateState::Rejected);
        assert_eq!(record.decider.as_deref(), Some(DECIDER_TASKBRIDGE));
    }
}

async fn resubmitting_the_same_item_version_returns_the_first_outcome(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let first = host
        .submit(update(1, "ck-1", vec![percent_change(27, 60)]))
        .await
        .expect("accepted");
    let again = host
        .submit(update(1, "ck-1", vec![percent_change(27, 60)]))
        .await
        .expect("accepted");
    assert_eq!(again, first);
    assert_eq!(
        host.status_updates(UpdateFilter::default())
            .await
            .expect("lists")
            .len(),
        1
    );

    // Under approval, a resubmission of a superseded update answers with its successor.
    host.set_policy(edge_guid(), Policy::Approval)
        .await
        .expect("sets");
    let UpdateOutcome::Pending { id: older } = host
        .submit(update(3, "ck-a", vec![percent_change(0, 10)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let newer = host
        .submit(update(3, "ck-b", vec![percent_change(0, 20)]))
        .await
        .expect("accepted");
    let replay = host
        .submit(update(3, "ck-a", vec![percent_change(0, 10)]))
        .await
        .expect("accepted");
    assert_eq!(replay, newer);
    assert_ne!(replay.id(), &older);
}

async fn unknown_project_or_assignment_is_an_error(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let result = host
        .submit_status_update(update(99, "ck", vec![percent_change(0, 10)]))
        .await;
    assert!(matches!(result, Err(HostError::UnknownAssignment(k)) if k == key(99)));
    let mut elsewhere = update(1, "ck", vec![percent_change(0, 10)]);
    elsewhere.key.project = "b0000000-0000-4000-8000-000000000002"
        .parse()
        .expect("valid guid");
    let result = host.submit_status_update(elsewhere).await;
    assert!(matches!(result, Err(HostError::UnknownProject(_))));
    assert!(matches!(
        host.publish(
            "b0000000-0000-4000-8000-000000000002"
                .parse()
                .expect("valid guid")
        )
        .await,
        Err(EmbeddedError::UnknownProject(_))
    ));
    assert!(
        PmHost::project(
            &host,
            "b0000000-0000-4000-8000-000000000002"
                .parse()
                .expect("guid")
        )
        .await
        .expect("answers")
        .is_none()
    );
}

async fn task_field_change_republishes_and_stamps_sibling_assignments(store: Store) {
    let host = edge_host(&store, Policy::Auto).await;
    let mut events = host.subscribe();
    let outcome = host
        .submit(update(
            3,
            "ck-1",
            vec![FieldChange {
                field: AssignmentField::Name,
                old: FieldValue::Text("Wiring".into()),
                new: FieldValue::Text("Verkabelung".into()),
            }],
        ))
        .await
        .expect("accepted");
    assert!(matches!(outcome, UpdateOutcome::Applied { .. }));
    // Wiring's other assignments (4 and 5) show the new name too.
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::ProjectPublished {
            project: edge_guid()
        }
    );
    let sibling = assignment(&host, 4).await;
    assert!(sibling.modified.get(AssignmentField::Name).is_some());
    let project = host
        .load_project(edge_guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(
        project
            .task(taskbridge::pm::TaskUid(4))
            .map(|t| t.name.as_str()),
        Some("Verkabelung")
    );
}

async fn reimport_removing_an_assignment_closes_its_pending_updates(store: Store) {
    let dir = &store.dir;
    let host = edge_host(&store, Policy::Approval).await;
    let UpdateOutcome::Pending { id } = host
        .submit(update(9, "ck-1", vec![percent_change(0, 10)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let original = std::fs::read_to_string(fixture("mspdi/edge-cases.xml")).expect("readable");
    let a9 = "\t\t<Assignment><UID>9</UID><TaskUID>0</TaskUID><ResourceUID>1</ResourceUID><Work>PT0H0M0S</Work></Assignment>\n";
    let file = dir.path().join("without-9.xml");
    std::fs::write(&file, original.replace(a9, "")).expect("writable");
    let report = host
        .import_file(&file, berlin(), None)
        .await
        .expect("re-imports");
    assert_eq!((report.removed, report.closed_updates), (1, 1));
    assert_eq!(
        report.policy,
        Policy::Approval,
        "re-import keeps the policy"
    );
    let record = host
        .status_update(&id)
        .await
        .expect("readable")
        .expect("kept as history");
    assert_eq!(record.state, UpdateState::Rejected);
    assert_eq!(record.task_name, None);
}

async fn decision_in_another_process_reaches_this_ones_subscribers(store: Store) {
    let options = HostOptions {
        poll_interval: Duration::from_millis(20),
        ..HostOptions::default()
    };
    let connector = store.open_with(options.clone()).await;
    connector
        .import_file(
            fixture("mspdi/edge-cases.xml"),
            berlin(),
            Some(Policy::Approval),
        )
        .await
        .expect("imports");
    let UpdateOutcome::Pending { id } = connector
        .submit(update(3, "ck-1", vec![percent_change(0, 75)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Pending");
    };
    let mut events = connector.subscribe();
    // A second, independent store handle on the same file stands in for `taskbridge updates
    // approve` run from a shell.
    let cli = store.open_with(options).await;
    let outcome = cli
        .approve(&id, "status.manager", false)
        .await
        .expect("approves");
    cli.close().await;
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::UpdateDecided {
            key: key(3),
            outcome
        }
    );
}

#[cfg(unix)]
#[tokio::test]
async fn store_file_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let host = open_dir(dir.path()).await;
    drop(host);
    for name in ["pm.sqlite", "pm.sqlite-wal"] {
        let path = dir.path().join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        } else {
            assert_ne!(name, "pm.sqlite", "the store file exists");
        }
    }
}
