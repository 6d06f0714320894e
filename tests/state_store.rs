//! The state store's behaviour, run against both backends: SQLite (a file per case) and
//! PostgreSQL (a database per case in a throw-away cluster; see `external/postgres.rs`). What
//! only one backend has (SQLite's file permissions and pre-migration copies) is tested beside
//! it in `src/state/`.

mod external;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::Utc;
use taskbridge::mapping::{MailField, MailValues};
use taskbridge::pm::{AssignmentKey, AssignmentUid, ProjectGuid};
use taskbridge::state::{
    AssignmentState, AuditRecord, Baseline, Commit, DecisionRule, Fence, InstanceId, ItemRef,
    JournalEntry, LeaseRound, LeaseTiming, MailboxAddress, MarkScope, PostgresStore, PostgresTls,
    PublishMark, QueuedNotice, Side, SqliteStore, StateError, StateStore, SyncStatus, TrackedItem,
    WriteKind, lease_round,
};

use external::postgres::Cluster;

fn key(uid: i64) -> AssignmentKey {
    AssignmentKey {
        project: ProjectGuid(uuid::Uuid::from_u128(
            0x2f9a4c1e_7b7d_4f7a_9c55_0d3c2b1a0001,
        )),
        assignment: AssignmentUid(uid),
    }
}

fn state(uid: i64, mailbox: &str) -> AssignmentState {
    let mut values = MailValues::empty(chrono_tz::Europe::Berlin);
    values.subject = Some(format!("Task {uid}"));
    values.total_work = Some(450);
    let mut s = AssignmentState::new(key(uid), MailboxAddress::new(mailbox));
    s.item = Some(ItemRef {
        item_id: format!("AAMk{uid}"),
        change_key: "CK1".into(),
    });
    s.mail_hash = Some(values.hash());
    s.pm_hash = Some(values.hash());
    let mut baseline = Baseline::new(values);
    baseline.pm_changed.insert(MailField::Subject, Utc::now());
    s.baseline = Some(baseline);
    s.last_sync = Some(Utc::now());
    s
}

/// Where a case's store lives: opening it again gives a second handle on the same data (a
/// restarted process, or a second instance).
trait Backend {
    type Store: StateStore;
    fn open(&self) -> impl Future<Output = Self::Store>;
}

struct Sqlite(std::path::PathBuf);

impl Backend for Sqlite {
    type Store = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0).expect("open SQLite")
    }
}

struct Postgres(String);

impl Backend for Postgres {
    type Store = PostgresStore;
    async fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.0, None, &PostgresTls::default())
            .await
            .expect("connect to PostgreSQL")
    }
}

/// Every case, each on a fresh store of `backend`'s kind made by `fresh`.
async fn suite<B: Backend>(mut fresh: impl FnMut(&str) -> B) {
    an_assignment_round_trips_every_column(fresh("round_trip").open().await).await;
    the_journal_stays_open_until_committed(fresh("journal").open().await).await;
    pending_approvals_lists_only_rows_waiting_for_a_decision(fresh("pending").open().await).await;
    update_mailbox_changes_only_what_the_caller_owns(fresh("mailbox").open().await).await;
    noting_heard_mailboxes_changes_only_their_watermarks_and_time(fresh("heard").open().await)
        .await;
    the_audit_filters_by_project_in_order(fresh("audit").open().await).await;
    what_is_stored_is_there_after_reopening(&fresh("reopen")).await;
    forgetting_a_project_removes_only_its_rows(fresh("forget").open().await).await;
    two_handles_changing_one_mailbox_at_once_lose_nothing(&fresh("two_handles")).await;
    a_lone_instance_takes_and_renews_every_lease(fresh("lease_alone").open().await).await;
    one_statement_renews_only_the_leases_still_held(fresh("lease_batch").open().await).await;
    an_expired_lease_is_taken_over_with_a_new_generation(fresh("lease_expiry").open().await).await;
    leases_spread_evenly_and_move_back_when_an_instance_joins(fresh("lease_spread").open().await)
        .await;
    a_commit_under_a_lost_lease_is_refused(&fresh("lease_fence")).await;
    queued_notices_reach_the_owner_once(fresh("notice_queue").open().await).await;
    a_publish_mark_ends_with_any_write_of_its_rows(&fresh("publish_mark")).await;
}

#[tokio::test]
async fn the_sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    suite(|name| Sqlite(dir.path().join(format!("{name}.sqlite")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_suite() {
    let Some(cluster) = Cluster::start("the PostgreSQL state store") else {
        return;
    };
    suite(|name| Postgres(cluster.create_database(name))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_newer_than_the_binary_is_refused_and_migrations_run_once() {
    let Some(cluster) = Cluster::start("PostgreSQL state migrations") else {
        return;
    };
    let url = cluster.create_database("versions");
    // Four instances starting together: one migrates, the others find it done.
    let tls = PostgresTls::default();
    let opened =
        futures::future::join_all((0..4).map(|_| PostgresStore::connect(&url, None, &tls))).await;
    let stores: Vec<PostgresStore> = opened.into_iter().map(|r| r.expect("connect")).collect();
    drop(stores);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("psql-like connection");
    tokio::spawn(conn);
    let version: i64 = client
        .query_one(
            "SELECT version FROM taskbridge_schema WHERE store = 'state'",
            &[],
        )
        .await
        .expect("one version row")
        .get(0);
    assert!(version >= 2, "{version}");
    client
        .execute(
            "UPDATE taskbridge_schema SET version = 999 WHERE store = 'state'",
            &[],
        )
        .await
        .expect("pretend a newer release migrated");
    let err = PostgresStore::connect(&url, None, &PostgresTls::default())
        .await
        .expect_err("a newer schema is refused");
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_rides_out_a_database_restart() {
    let Some(cluster) = Cluster::start("PostgreSQL restarts") else {
        return;
    };
    let store = Postgres(cluster.create_database("restart")).open().await;
    store
        .commit(Commit {
            put: vec![state(1, "ann@example.com")],
            ..Commit::default()
        })
        .await
        .expect("commit");
    cluster.kill();
    let down = store.assignment(&key(1)).await;
    assert!(down.is_err(), "a dead database is an error, not a panic");
    cluster.restart();
    // The pool drops the broken connections and opens new ones.
    let mut back = None;
    for _ in 0..50 {
        if let Ok(row) = store.assignment(&key(1)).await {
            back = row;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(back.map(|r| r.key), Some(key(1)));
}

async fn what_is_stored_is_there_after_reopening<B: Backend>(backend: &B) {
    let written = state(1, "ann@example.com");
    {
        let store = backend.open().await;
        store
            .commit(Commit {
                put: vec![written.clone()],
                ..Commit::default()
            })
            .await
            .expect("commit");
        store
            .update_mailbox(&MailboxAddress::new("ann@example.com"), |m| {
                m.folder_id = Some("AQMkTasks".into());
                m.subscription_id = Some("sub-1".into());
                m.watermark = Some("wm-9".into());
            })
            .await
            .expect("mailbox");
    }
    let store = backend.open().await;
    assert_eq!(
        store.assignment(&key(1)).await.expect("read"),
        Some(written)
    );
    let mb = store
        .mailbox(&MailboxAddress::new("ann@example.com"))
        .await
        .expect("read")
        .expect("mailbox");
    assert_eq!(mb.folder_id.as_deref(), Some("AQMkTasks"));
    assert_eq!(mb.subscription_id.as_deref(), Some("sub-1"));
    assert_eq!(mb.watermark.as_deref(), Some("wm-9"));
    assert_eq!(store.mailboxes().await.expect("list").len(), 1);
}

async fn forgetting_a_project_removes_only_its_rows<S: StateStore>(store: S) {
    let other = AssignmentKey {
        project: ProjectGuid(uuid::Uuid::from_u128(9)),
        assignment: AssignmentUid(1),
    };
    let mut theirs = state(1, "ann@example.com");
    theirs.key = other;
    store
        .commit(Commit {
            put: vec![
                state(1, "ann@example.com"),
                state(2, "bob@example.com"),
                theirs,
            ],
            ..Commit::default()
        })
        .await
        .expect("commit");
    // Where each of the project's assignments has its task, and only the project's.
    let mut placed = store
        .assignment_mailboxes(key(1).project)
        .await
        .expect("placed");
    placed.sort();
    assert_eq!(
        placed,
        vec![
            (AssignmentUid(1), MailboxAddress::new("ann@example.com")),
            (AssignmentUid(2), MailboxAddress::new("bob@example.com")),
        ]
    );
    // A mailbox's rows, of every project or of one.
    let ann = MailboxAddress::new("ann@example.com");
    let all = store.mailbox_assignments(&ann, None).await.expect("rows");
    assert_eq!(all.len(), 2, "{all:?}");
    let ours = store
        .mailbox_assignments(&ann, Some(key(1).project))
        .await
        .expect("rows");
    assert_eq!(ours.iter().map(|s| s.key).collect::<Vec<_>>(), vec![key(1)]);
    // A row is forgotten only from the mailbox named with it: one that moved on stays.
    store
        .commit(Commit {
            delete: vec![(key(2), MailboxAddress::new("ann@example.com"))],
            ..Commit::default()
        })
        .await
        .expect("commit");
    assert!(store.assignment(&key(2)).await.expect("read").is_some());
    store
        .open_journal(vec![JournalEntry {
            id: 0,
            mailbox: MailboxAddress::new("ann@example.com"),
            key: key(1),
            kind: WriteKind::Update,
            at: Utc::now(),
        }])
        .await
        .expect("journal");
    let gone = store.forget_project(key(1).project).await.expect("forget");
    assert_eq!(gone, 3, "two rows and one journal entry");
    assert!(store.assignment(&key(1)).await.expect("read").is_none());
    assert!(store.assignment(&other).await.expect("read").is_some());
    assert!(
        store
            .unfinished_journal()
            .await
            .expect("journal")
            .is_empty()
    );
}

/// Two handles (two processes, or two instances on one database) each change their own column
/// of one mailbox, many times, at the same time: neither puts back the other's older value.
async fn two_handles_changing_one_mailbox_at_once_lose_nothing<B: Backend>(backend: &B) {
    let (a, b) = (backend.open().await, backend.open().await);
    let mb = MailboxAddress::new("ann@example.com");
    let rounds = 40;
    let watermarks = async {
        for i in 0..rounds {
            a.update_mailbox(&mb, move |s| s.watermark = Some(format!("wm-{i}")))
                .await
                .expect("watermark");
        }
    };
    let states = async {
        for i in 0..rounds {
            b.update_mailbox(&mb, move |s| s.sync_state = Some(format!("ss-{i}")))
                .await
                .expect("sync state");
        }
    };
    futures::join!(watermarks, states);
    let now = a.mailbox(&mb).await.expect("read").expect("row");
    assert_eq!(now.watermark, Some(format!("wm-{}", rounds - 1)));
    assert_eq!(now.sync_state, Some(format!("ss-{}", rounds - 1)));
}

async fn an_assignment_round_trips_every_column<S: StateStore>(store: S) {
    let mut a = state(7, "Ann@Example.com");
    a.status = SyncStatus::Parked {
        reason: "stale change key 3 times".into(),
    };
    a.attempts = 3;
    a.last_error = Some("ErrorIrresolvableConflict".into());
    store
        .commit(Commit {
            put: vec![a.clone(), state(8, "bob@example.com")],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let back = store.assignment(&key(7)).await.expect("read").expect("row");
    assert_eq!(back, a);
    assert_eq!(back.mailbox.as_str(), "ann@example.com");
    let by_item = store
        .assignments_by_items(
            &MailboxAddress::new("ann@example.com"),
            vec!["AAMk7".into()],
        )
        .await
        .expect("read")
        .pop()
        .expect("row");
    assert_eq!(by_item.key, key(7));
    assert_eq!(
        store
            .mailbox_assignments(&MailboxAddress::new("bob@example.com"), None)
            .await
            .expect("read")
            .len(),
        1
    );
    assert_eq!(
        store
            .project_assignments(key(7).project)
            .await
            .expect("read")
            .len(),
        2
    );
    let items = store
        .mailbox_items(&MailboxAddress::new("ann@example.com"))
        .await
        .expect("items");
    assert_eq!(
        items,
        vec![TrackedItem {
            item_id: "AAMk7".into(),
            key: key(7),
            zone: Some(chrono_tz::Europe::Berlin),
        }]
    );
    // Several items in one call: each row found once; the ids of another mailbox's item and of
    // no item are left out.
    store
        .commit(Commit {
            put: vec![state(9, "ann@example.com")],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let mut found: Vec<i64> = store
        .assignments_by_items(
            &MailboxAddress::new("ann@example.com"),
            ["AAMk9", "AAMk8", "nothing", "AAMk7"]
                .map(String::from)
                .to_vec(),
        )
        .await
        .expect("read")
        .iter()
        .map(|s| s.key.assignment.0)
        .collect();
    found.sort();
    assert_eq!(found, [7, 9]);
    assert!(
        store
            .assignments_by_items(&MailboxAddress::new("ann@example.com"), Vec::new())
            .await
            .expect("read")
            .is_empty()
    );
}

async fn the_journal_stays_open_until_committed<S: StateStore>(store: S) {
    let mailbox = MailboxAddress::new("ann@example.com");
    let entries = (1..=3)
        .map(|uid| JournalEntry {
            id: 0,
            mailbox: mailbox.clone(),
            key: key(uid),
            kind: WriteKind::Create,
            at: Utc::now(),
        })
        .collect();
    let ids = store.open_journal(entries).await.expect("journal");
    assert_eq!(ids.len(), 3);
    // The process "dies" after the write of the first two: only they are closed.
    store
        .commit(Commit {
            put: vec![state(1, "ann@example.com"), state(2, "ann@example.com")],
            delete: vec![],
            close_journal: ids[..2].to_vec(),
            fences: vec![],
            publish_token: None,
        })
        .await
        .expect("commit");
    let open = store.unfinished_journal().await.expect("journal");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, key(3));
    assert_eq!(open[0].kind, WriteKind::Create);
}

async fn pending_approvals_lists_only_rows_waiting_for_a_decision<S: StateStore>(store: S) {
    let mut rows: Vec<_> = (1..=4)
        .map(|uid| {
            state(
                uid,
                if uid % 2 == 0 {
                    "bob@example.com"
                } else {
                    "ann@example.com"
                },
            )
        })
        .collect();
    for uid in [2, 3] {
        rows[uid - 1].status = SyncStatus::PendingApproval {
            update: taskbridge::pm::StatusUpdateId(format!("u{uid}")),
            observed: taskbridge::mapping::ValueHash([uid as u8; 32]),
            fields: Default::default(),
        };
    }
    rows[3].status = SyncStatus::Parked {
        reason: "pending_approval".into(),
    };
    store
        .commit(Commit {
            put: rows,
            ..Commit::default()
        })
        .await
        .expect("commit");
    let pending = store.pending_approvals().await.expect("list");
    let listed: Vec<_> = pending
        .iter()
        .map(|r| (r.mailbox.as_str().to_string(), r.key.assignment.0))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("ann@example.com".to_string(), 3),
            ("bob@example.com".to_string(), 2)
        ]
    );
}

async fn update_mailbox_changes_only_what_the_caller_owns<S: StateStore>(store: S) {
    let mb = MailboxAddress::new("ann@example.com");
    let created = store
        .update_mailbox(&mb, |s| s.folder_id = Some("AQMkTasks".into()))
        .await
        .expect("create");
    assert_eq!(created.mailbox.as_ref(), Some(&mb));
    // A pass read the state before a notification arrived; each writes only its column.
    let read_by_pass = store.mailbox(&mb).await.expect("read").expect("row");
    store
        .update_mailbox(&mb, |s| s.watermark = Some("wm-2".into()))
        .await
        .expect("notification");
    store
        .update_mailbox(&mb, |s| s.sync_state = Some("ss-7".into()))
        .await
        .expect("pass");
    let now = store.mailbox(&mb).await.expect("read").expect("row");
    assert_eq!(read_by_pass.watermark, None);
    assert_eq!(now.watermark.as_deref(), Some("wm-2"));
    assert_eq!(now.sync_state.as_deref(), Some("ss-7"));
    assert_eq!(now.folder_id.as_deref(), Some("AQMkTasks"));
}

/// The watermarks of a second's notifications, every mailbox's in one write: a watermark
/// given replaces the stored one, none keeps it, each gets the time given, a mailbox never seen
/// gets a row, and the other columns (a pass's sync state, the folder) stay.
async fn noting_heard_mailboxes_changes_only_their_watermarks_and_time<S: StateStore>(store: S) {
    let (ann, bob, cy) = (
        MailboxAddress::new("ann@example.com"),
        MailboxAddress::new("bob@example.com"),
        MailboxAddress::new("cy@example.com"),
    );
    for (mb, wm) in [(&ann, "wm-a1"), (&bob, "wm-b1")] {
        store
            .update_mailbox(mb, move |s| {
                s.folder_id = Some("AQMkTasks".into());
                s.sync_state = Some("ss-1".into());
                s.watermark = Some(wm.into());
            })
            .await
            .expect("create");
    }
    store.note_heard(Vec::new(), at(5)).await.expect("nothing");
    store
        .note_heard(
            vec![
                (ann.clone(), Some("wm-a2".into())),
                (bob.clone(), None),
                (cy.clone(), Some("wm-c1".into())),
            ],
            at(10),
        )
        .await
        .expect("heard");
    let read = async |mb: &MailboxAddress| store.mailbox(mb).await.expect("read").expect("row");
    let (a, b, c) = (read(&ann).await, read(&bob).await, read(&cy).await);
    assert_eq!(a.watermark.as_deref(), Some("wm-a2"));
    assert_eq!(b.watermark.as_deref(), Some("wm-b1"), "kept");
    assert_eq!(c.watermark.as_deref(), Some("wm-c1"));
    for s in [&a, &b, &c] {
        assert_eq!(s.last_notification, Some(at(10)), "{s:?}");
    }
    for s in [&a, &b] {
        assert_eq!(s.sync_state.as_deref(), Some("ss-1"), "{s:?}");
        assert_eq!(s.folder_id.as_deref(), Some("AQMkTasks"), "{s:?}");
    }
    assert_eq!((c.sync_state, c.folder_id), (None, None));
}

async fn the_audit_filters_by_project_in_order<S: StateStore>(store: S) {
    let other = AssignmentKey {
        project: ProjectGuid(uuid::Uuid::from_u128(9)),
        assignment: AssignmentUid(1),
    };
    let rec = |k: AssignmentKey, rule| AuditRecord {
        at: Utc::now(),
        key: k,
        mailbox: MailboxAddress::new("ann@example.com"),
        field: MailField::PercentComplete,
        pm_value: "20%".into(),
        mail_value: "60%".into(),
        rule,
        winner: Side::Mail,
        note: None,
    };
    store
        .append_audit(vec![
            rec(key(1), DecisionRule::MailOnly),
            rec(other, DecisionRule::PmWins),
            rec(key(2), DecisionRule::NewerWins),
        ])
        .await
        .expect("append");
    let mine = store.audit(Some(key(1).project)).await.expect("audit");
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].rule, DecisionRule::MailOnly);
    assert_eq!(mine[1].rule, DecisionRule::NewerWins);
    assert_eq!(store.audit(None).await.expect("all").len(), 3);
}

// Leases: instances are handles with ids of their own on one store; times are given, so that
// expiry is a matter of the clock passed in, never of waiting.

const TIMING: LeaseTiming = LeaseTiming {
    lease: std::time::Duration::from_secs(30),
    renew: std::time::Duration::from_secs(10),
};

fn mailboxes(n: usize) -> Vec<MailboxAddress> {
    (0..n)
        .map(|i| MailboxAddress::new(&format!("user{i:02}@example.com")))
        .collect()
}

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
}

/// One instance's view: its id and the leases it held after its last round.
struct Member {
    id: InstanceId,
    held: BTreeMap<MailboxAddress, i64>,
}

impl Member {
    fn new(name: &str) -> Self {
        Member {
            id: InstanceId::new(name),
            held: BTreeMap::new(),
        }
    }

    async fn round<S: StateStore>(&mut self, store: &S, now: i64) -> LeaseRound {
        let round = lease_round(store, &self.id, &self.held, at(now), TIMING)
            .await
            .expect("lease round");
        self.held = round.held.clone();
        round
    }
}

/// Who owns each mailbox, by the rows.
async fn owners<S: StateStore>(store: &S) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for lease in store.leases().await.expect("leases") {
        let owner = lease.owner.map(|o| o.to_string()).unwrap_or_default();
        *count.entry(owner).or_insert(0) += 1;
    }
    count
}

async fn a_lone_instance_takes_and_renews_every_lease<S: StateStore>(store: S) {
    store.add_leases(mailboxes(5)).await.expect("rows");
    let mut a = Member::new("a");
    let first = a.round(&store, 0).await;
    assert_eq!(first.gained.len(), 5);
    assert_eq!(first.live, vec![InstanceId::new("a")]);
    let generations: Vec<i64> = first.held.values().copied().collect();
    assert_eq!(generations, vec![1; 5], "taking raises the generation");
    // Renewal keeps the generation and pushes the expiry.
    let second = a.round(&store, 10).await;
    assert!(
        second.gained.is_empty() && second.lost.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.held, first.held);
    for lease in store.leases().await.expect("leases") {
        assert_eq!(lease.expires, at(40));
        assert_eq!(lease.owner, Some(InstanceId::new("a")));
    }
    // Adding rows again changes nothing held.
    store.add_leases(mailboxes(5)).await.expect("rows again");
    assert_eq!(owners(&store).await.get("a"), Some(&5));
}

/// The batched renewal extends the leases still held at their generation and names them; a
/// lease taken over meanwhile (a new owner and generation) and one asked at a stale generation
/// are left alone.
async fn one_statement_renews_only_the_leases_still_held<S: StateStore>(store: S) {
    store.add_leases(mailboxes(4)).await.expect("rows");
    let mut a = Member::new("a");
    let first = a.round(&store, 0).await;
    assert_eq!(first.held.len(), 4);
    let boxes: Vec<MailboxAddress> = first.held.keys().cloned().collect();
    // b takes the first mailbox's lease over as if a's had run out.
    let b = InstanceId::new("b");
    let taken = store
        .take_lease(&boxes[0], &b, first.held[&boxes[0]], at(100), at(130))
        .await
        .expect("take");
    assert_eq!(taken, Some(2));
    let mut asked: Vec<(MailboxAddress, i64)> =
        boxes.iter().map(|m| (m.clone(), first.held[m])).collect();
    // A generation a never held.
    asked[1].1 += 7;
    let renewed = store
        .renew_leases(&InstanceId::new("a"), &asked, at(200))
        .await
        .expect("renew");
    let expected: std::collections::BTreeSet<MailboxAddress> = boxes[2..].iter().cloned().collect();
    assert_eq!(renewed, expected);
    for lease in store.leases().await.expect("leases") {
        let want = if lease.mailbox == boxes[0] {
            (Some(b.clone()), at(130))
        } else if lease.mailbox == boxes[1] {
            (Some(InstanceId::new("a")), at(30))
        } else {
            (Some(InstanceId::new("a")), at(200))
        };
        assert_eq!((lease.owner.clone(), lease.expires), want, "{lease:?}");
    }
    assert!(
        store
            .renew_leases(&InstanceId::new("a"), &[], at(300))
            .await
            .expect("nothing to renew")
            .is_empty()
    );
}

async fn an_expired_lease_is_taken_over_with_a_new_generation<S: StateStore>(store: S) {
    store.add_leases(mailboxes(4)).await.expect("rows");
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    a.round(&store, 0).await;
    // b joins while a is alive: it gets nothing until a hands back its surplus.
    let joined = b.round(&store, 5).await;
    assert!(joined.held.is_empty(), "{joined:?}");
    // a dies (no more rounds). Before the expiry b still may not take a's leases.
    let early = b.round(&store, 29).await;
    assert!(early.held.is_empty(), "{early:?}");
    // After it, b takes all: a's heartbeat ran out too, so b's share is everything.
    let late = b.round(&store, 31).await;
    assert_eq!(late.gained.len(), 4, "{late:?}");
    assert!(late.held.values().all(|g| *g == 2), "{late:?}");
    // a comes back (a process that was stopped, not dead): its leases are gone.
    let back = a.round(&store, 32).await;
    assert_eq!(back.lost.len(), 4, "{back:?}");
    assert!(back.held.is_empty(), "a over its share takes nothing");
}

async fn leases_spread_evenly_and_move_back_when_an_instance_joins<S: StateStore>(store: S) {
    store.add_leases(mailboxes(10)).await.expect("rows");
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    let mut c = Member::new("c");
    a.round(&store, 0).await;
    assert_eq!(owners(&store).await.get("a"), Some(&10));
    // b joins: registered at its first round, it sees a over its share.
    b.round(&store, 1).await;
    let handed = a.round(&store, 10).await;
    assert_eq!(handed.lost.len(), 5, "a releases its surplus: {handed:?}");
    b.round(&store, 11).await;
    let two = owners(&store).await;
    assert_eq!(
        (two.get("a"), two.get("b")),
        (Some(&5), Some(&5)),
        "{two:?}"
    );
    // c joins: the split becomes 4, 3, 3 (the remainder to the first ids).
    c.round(&store, 12).await;
    a.round(&store, 20).await;
    b.round(&store, 20).await;
    c.round(&store, 21).await;
    let three = owners(&store).await;
    assert_eq!(
        (three.get("a"), three.get("b"), three.get("c")),
        (Some(&4), Some(&3), Some(&3)),
        "{three:?}"
    );
    // Every mailbox has exactly one owner, and each member's view matches the rows.
    let held: usize = [&a, &b, &c].iter().map(|m| m.held.len()).sum();
    assert_eq!(held, 10);
    // c leaves cleanly: the others take its mailboxes at their next rounds, without waiting
    // for the expiry.
    taskbridge::state::lease::leave(&store, &c.id, &c.held)
        .await
        .expect("leave");
    a.round(&store, 22).await;
    b.round(&store, 22).await;
    let after = owners(&store).await;
    assert_eq!(
        (after.get("a"), after.get("b"), after.get("c")),
        (Some(&5), Some(&5), None),
        "{after:?}"
    );
}

async fn a_commit_under_a_lost_lease_is_refused<B: Backend>(backend: &B) {
    let old = backend.open().await;
    let new = backend.open().await;
    let mailbox = MailboxAddress::new("ann@example.com");
    old.add_leases(vec![mailbox.clone()]).await.expect("row");
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    a.round(&old, 0).await;
    let fence_a = Fence {
        mailbox: mailbox.clone(),
        owner: a.id.clone(),
        generation: a.held[&mailbox],
    };
    let mut row = state(1, "ann@example.com");
    old.commit(Commit {
        put: vec![row.clone()],
        fences: vec![fence_a.clone()],
        ..Commit::default()
    })
    .await
    .expect("a commit under a held lease");
    // a stalls past its lease; b takes over and commits.
    let taken = b.round(&new, 40).await;
    assert_eq!(taken.gained, vec![mailbox.clone()]);
    row.last_error = Some("b's row".into());
    new.commit(Commit {
        put: vec![row.clone()],
        fences: vec![Fence {
            mailbox: mailbox.clone(),
            owner: b.id.clone(),
            generation: b.held[&mailbox],
        }],
        ..Commit::default()
    })
    .await
    .expect("b's commit");
    // a wakes up and commits what it worked out under its old lease: refused, nothing written.
    let mut stale = row.clone();
    stale.last_error = Some("a's stale row".into());
    let ids = old
        .open_journal(vec![JournalEntry {
            id: 0,
            mailbox: mailbox.clone(),
            key: key(1),
            kind: WriteKind::Update,
            at: Utc::now(),
        }])
        .await
        .expect("journal");
    let err = old
        .commit(Commit {
            put: vec![stale],
            close_journal: ids,
            fences: vec![fence_a],
            ..Commit::default()
        })
        .await
        .expect_err("a stale owner's commit is refused");
    assert!(
        matches!(&err, StateError::LeaseLost { mailbox: m } if m == "ann@example.com"),
        "{err:?}"
    );
    let stored = new.assignment(&key(1)).await.expect("read").expect("row");
    assert_eq!(stored.last_error.as_deref(), Some("b's row"));
    assert_eq!(
        new.unfinished_journal().await.expect("journal").len(),
        1,
        "the refused commit closed no journal entry either"
    );
}

async fn queued_notices_reach_the_owner_once<S: StateStore>(store: S) {
    let ann = MailboxAddress::new("ann@example.com");
    let bob = MailboxAddress::new("bob@example.com");
    for (m, sub, items) in [(&ann, "s1", 1), (&bob, "s2", 2), (&ann, "s1", 3)] {
        store
            .enqueue_notice(QueuedNotice {
                mailbox: m.clone(),
                subscription_id: sub.into(),
                watermark: Some(format!("w{items}")),
                item_ids: (0..items).map(|i| format!("item{i}")).collect(),
            })
            .await
            .expect("enqueue");
    }
    let taken = store.take_notices(vec![ann.clone()]).await.expect("take");
    assert_eq!(taken.len(), 2);
    assert_eq!(taken[0].watermark.as_deref(), Some("w1"));
    assert_eq!(taken[1].item_ids.len(), 3);
    assert!(taken.iter().all(|n| n.mailbox == ann));
    assert!(
        store
            .take_notices(vec![ann])
            .await
            .expect("again")
            .is_empty()
    );
    let bobs = store.take_notices(vec![bob]).await.expect("bob's");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].subscription_id, "s2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_listener_hears_of_a_notice_queued_by_another_instance() {
    let Some(cluster) = Cluster::start("PostgreSQL LISTEN/NOTIFY") else {
        return;
    };
    let backend = Postgres(cluster.create_database("listen"));
    let owner = backend.open().await;
    let other = backend.open().await;
    let mut heard = owner
        .listen_notices()
        .expect("PostgreSQL can wake the owner");
    let ann = MailboxAddress::new("ann@example.com");
    // The listening connection opens in the background: queue until it hears one.
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            other
                .enqueue_notice(QueuedNotice {
                    mailbox: ann.clone(),
                    subscription_id: "s1".into(),
                    watermark: None,
                    item_ids: vec!["item".into()],
                })
                .await
                .expect("enqueue");
            if let Ok(Some(m)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), heard.recv()).await
            {
                return m;
            }
        }
    })
    .await
    .expect("the owner was never woken");
    assert_eq!(got, ann);
    assert!(
        !owner
            .take_notices(vec![ann])
            .await
            .expect("take")
            .is_empty()
    );
}

/// A publish mark lets a publish skip rows it did not read, so it may only stand while those
/// rows are exactly as the publish that confirmed it found them: any write of them, from
/// another handle too, before or after the confirmation, ends it; writes of other rows do not.
async fn a_publish_mark_ends_with_any_write_of_its_rows<B: Backend>(backend: &B) {
    let (store, other) = (backend.open().await, backend.open().await);
    let project = key(1).project;
    let ann = MarkScope::Mailbox(MailboxAddress::new("ann@example.com"));
    let bob = MarkScope::Mailbox(MailboxAddress::new("bob@example.com"));
    let mark = |units| PublishMark {
        revision: "r1".into(),
        mapping: "m1".into(),
        units,
    };
    let confirm = |scope: &MarkScope, token: i64, units: u64| {
        let scope = scope.clone();
        let store = &store;
        async move {
            store
                .confirm_publish_mark(project, scope, token, mark(units))
                .await
                .expect("confirm")
        }
    };
    let read = |scope: &MarkScope| {
        let scope = scope.clone();
        let store = &store;
        async move { store.publish_mark(project, scope).await.expect("read") }
    };
    put(&store, state(1, "ann@example.com")).await;
    put(&store, state(2, "bob@example.com")).await;

    // Nothing until a reservation is confirmed, and only by its own token.
    assert_eq!(read(&ann).await, None);
    assert!(!confirm(&ann, 1, 1).await, "no reservation");
    store
        .reserve_publish_mark(project, ann.clone(), 1)
        .await
        .expect("reserve");
    assert_eq!(read(&ann).await, None, "a reservation is no mark");
    assert!(!confirm(&ann, 2, 1).await, "another publish's token");
    assert!(confirm(&ann, 1, 1).await);
    assert_eq!(read(&ann).await, Some(mark(1)));
    assert!(!confirm(&ann, 1, 1).await, "confirmed once");

    // The project's reservation and bob's: a write of bob's rows (by another handle) ends
    // both, and leaves ann's mark alone.
    for scope in [&MarkScope::Project, &bob] {
        store
            .reserve_publish_mark(project, scope.clone(), 3)
            .await
            .expect("reserve");
    }
    let mut changed = state(2, "bob@example.com");
    changed.attempts = 1;
    put(&other, changed).await;
    assert!(!confirm(&bob, 3, 1).await, "bob's rows were written");
    assert!(
        !confirm(&MarkScope::Project, 3, 2).await,
        "the project's rows were"
    );
    assert_eq!(read(&ann).await, Some(mark(1)));

    // A confirmed mark goes with a later write, a delete as well as a put.
    store
        .reserve_publish_mark(project, MarkScope::Project, 4)
        .await
        .expect("reserve");
    assert!(confirm(&MarkScope::Project, 4, 2).await);
    other
        .commit(Commit {
            delete: vec![(key(1), MailboxAddress::new("ann@example.com"))],
            ..Commit::default()
        })
        .await
        .expect("delete");
    assert_eq!(read(&ann).await, None, "ann's row was deleted");
    assert_eq!(read(&MarkScope::Project).await, None);

    // The reserving publish's own writes keep its reservation; another publish's end it.
    store
        .reserve_publish_mark(project, ann.clone(), 6)
        .await
        .expect("reserve");
    let own = |token| Commit {
        put: vec![state(1, "ann@example.com")],
        publish_token: Some(token),
        ..Commit::default()
    };
    other.commit(own(6)).await.expect("commit");
    assert!(confirm(&ann, 6, 1).await, "the publish's own write");
    store
        .reserve_publish_mark(project, ann.clone(), 7)
        .await
        .expect("reserve");
    other.commit(own(8)).await.expect("commit");
    assert!(!confirm(&ann, 7, 1).await, "another publish's write");
    // A confirmed mark goes with any later write, its publish's token or not.
    store
        .reserve_publish_mark(project, ann.clone(), 9)
        .await
        .expect("reserve");
    assert!(confirm(&ann, 9, 1).await);
    other.commit(own(9)).await.expect("commit");
    assert_eq!(read(&ann).await, None, "written after it was confirmed");

    // Another project's rows are no write of this one's; forgetting the project ends its marks.
    store
        .reserve_publish_mark(project, bob.clone(), 5)
        .await
        .expect("reserve");
    let mut theirs = state(1, "bob@example.com");
    theirs.key.project = ProjectGuid(uuid::Uuid::from_u128(9));
    put(&other, theirs).await;
    assert!(confirm(&bob, 5, 1).await, "another project's row");
    store.forget_project(project).await.expect("forget");
    assert_eq!(read(&bob).await, None, "forgotten with the project");
}

async fn put<S: StateStore>(store: &S, row: AssignmentState) {
    store
        .commit(Commit {
            put: vec![row],
            ..Commit::default()
        })
        .await
        .expect("commit");
}
