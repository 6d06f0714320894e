//! The end-to-end harness: the bundled simulator on loopback, the embedded PM host and SQLite
//! state in a temporary directory, and the engine over the real EWS client.
#![allow(dead_code)] // each test binary uses part of it

pub mod replay;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};
use uuid::Uuid;

use taskbridge::ews::client::{EwsClient, EwsClientConfig};
use taskbridge::ews::transport::Auth;
use taskbridge::exchange::EwsMailboxStore;
use taskbridge::mapping::{FieldTable, MailValues};
use taskbridge::pm::embedded::{EmbeddedHost, Policy};
use taskbridge::pm::{
    Assignment, AssignmentKey, AssignmentUid, FieldTimes, Percent, Project, ProjectGuid, Resource,
    ResourceUid, Task, TaskUid, Work,
};
use taskbridge::state::{AssignmentState, ItemRef, MailboxAddress, SqliteStore, StateStore};
use taskbridge::sync::{
    Affinity, Backend, BatchLimits, ChangePage, Delivery, Engine, EventStream, FetchRequest,
    ItemFailure, ItemWrite, MailboxError, MailboxItem, MailboxStore, PulledEvents, Subscription,
    SyncConfig,
};
pub use taskbridge_sim::ConflictModel;
use taskbridge_sim::{self as sim, SimConfig, SimHandle};

/// The mailboxes of the test project.
pub const MAILBOXES: [&str; 3] = ["ann@example.com", "bob@example.com", "chen@example.com"];

/// The engine as the tests build it.
pub type TestEngine = Engine<EmbeddedHost, Spy<EwsMailboxStore<EwsClient>>, SqliteStore>;

/// Everything one test needs.
pub struct Harness {
    pub sim: SimHandle,
    pub host: EmbeddedHost,
    pub engine: TestEngine,
    pub spy: Spy<EwsMailboxStore<EwsClient>>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub project: ProjectGuid,
}

/// A project of `tasks` tasks, each assigned to one of the three mailboxes in turn, with a
/// summary task (UID 0) and an assignment without a resource that must not sync.
pub fn project(assignments: usize) -> Project {
    let guid = ProjectGuid(Uuid::from_u128(0x2f9a4c1e_7b7d_4f7a_9c55_0d3c2b1a0001));
    let day = |d: u32, h: u32| -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 3, d)
            .expect("date")
            .and_hms_opt(h, 0, 0)
            .expect("time")
    };
    let mut tasks = vec![Task {
        uid: TaskUid(0),
        name: "Harbour bridge".into(),
        notes: String::new(),
        start: day(2, 8),
        finish: day(27, 17),
        work: Work::from_hours(8 * assignments as i64),
        priority: 500,
        percent_work_complete: Percent::ZERO,
        summary: true,
        milestone: false,
        outline_level: 0,
    }];
    let resources: Vec<Resource> = MAILBOXES
        .iter()
        .enumerate()
        .map(|(i, m)| Resource {
            uid: ResourceUid(i as i64 + 1),
            name: m.split('@').next().unwrap_or_default().to_string(),
            email: Some(m.to_string()),
            time_zone: Some(chrono_tz::Europe::Berlin),
        })
        .collect();
    let mut list = Vec::new();
    for n in 1..=assignments {
        let start = day(2 + (n as u32 % 20), 8);
        let finish = day(3 + (n as u32 % 20), 17);
        tasks.push(Task {
            uid: TaskUid(n as i64),
            name: format!("Pour deck segment {n}"),
            notes: format!("Segment {n}: formwork first."),
            start,
            finish,
            work: Work::from_hours(8),
            priority: if n % 3 == 0 { 700 } else { 500 },
            percent_work_complete: Percent::ZERO,
            summary: false,
            milestone: false,
            outline_level: 1,
        });
        list.push(Assignment {
            uid: AssignmentUid(n as i64),
            task_uid: TaskUid(n as i64),
            resource_uid: ResourceUid(((n - 1) % 3) as i64 + 1),
            start,
            finish,
            work: Work::from_hours(8),
            actual_work: Work::ZERO,
            remaining_work: Work::from_hours(8),
            percent_work_complete: Percent::ZERO,
            modified: FieldTimes::new(),
            actual_finish: None,
        });
    }
    // An assignment without a resource: never a mailbox task.
    list.push(Assignment {
        uid: AssignmentUid(9999),
        task_uid: TaskUid(1),
        resource_uid: ResourceUid::NONE,
        start: day(2, 8),
        finish: day(3, 17),
        work: Work::from_hours(2),
        actual_work: Work::ZERO,
        remaining_work: Work::from_hours(2),
        percent_work_complete: Percent::ZERO,
        modified: FieldTimes::new(),
        actual_finish: None,
    });
    Project {
        guid,
        name: "Harbour bridge".into(),
        time_zone: chrono_tz::Europe::Berlin,
        minutes_per_day: 480,
        minutes_per_week: 2400,
        start: Some(day(2, 8)),
        tasks,
        resources,
        assignments: list,
    }
}

/// Starts the simulator (recording into `TASKBRIDGE_RECORD_DIR` when CI asks for it).
pub async fn start_sim(config: SimConfig) -> SimHandle {
    let mut config = config;
    if config.record.is_none()
        && let Some(dir) = std::env::var_os("TASKBRIDGE_RECORD_DIR")
    {
        let sub = format!("engine-{}", Uuid::new_v4());
        config.record = Some(std::path::PathBuf::from(dir).join(sub));
    }
    sim::start(config).await.expect("simulator starts")
}

/// Builds the harness with a project of `assignments` assignments imported under `policy`,
/// against a simulator as strict about change keys as Exchange.
pub async fn harness(assignments: usize, policy: Policy, sync: SyncConfig) -> Harness {
    harness_with(assignments, policy, sync, ConflictModel::Strict).await
}

/// Like [`harness`], with the simulator's conflict model chosen.
pub async fn harness_with(
    assignments: usize,
    policy: Policy,
    sync: SyncConfig,
    conflict_model: ConflictModel,
) -> Harness {
    let mut config = sim_config();
    config.conflict_model = conflict_model;
    harness_on(assignments, policy, sync, config).await
}

/// The simulator configuration of the harness: Ann, Bob and Chen, no authentication.
pub fn sim_config() -> SimConfig {
    SimConfig::for_tests(&[
        "ann@example.com:pw-ann",
        "bob@example.com:pw-bob",
        "chen@example.com:pw-chen",
    ])
}

/// Like [`harness`], against a simulator started with `config` (Ann, Bob and Chen must be
/// among its mailboxes: see [`sim_config`]).
pub async fn harness_on(
    assignments: usize,
    policy: Policy,
    sync: SyncConfig,
    config: SimConfig,
) -> Harness {
    let sim = start_sim(config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let host = EmbeddedHost::open(dir.path()).await.expect("pm store");
    let p = project(assignments);
    let guid = p.guid;
    host.import_with_policy(p, Some(policy))
        .await
        .expect("import");
    let (engine, spy) = engine(&sim, &host, dir.path(), sync);
    Harness {
        sim,
        host,
        engine,
        spy,
        dir,
        http: reqwest::Client::new(),
        project: guid,
    }
}

/// An engine over the simulator with state in `dir` (a second call on the same `dir` is the
/// connector after a restart).
pub fn engine(
    sim: &SimHandle,
    host: &EmbeddedHost,
    dir: &std::path::Path,
    sync: SyncConfig,
) -> (TestEngine, Spy<EwsMailboxStore<EwsClient>>) {
    engine_at(&sim.url, host, dir, sync)
}

/// An engine talking to the EWS endpoint at `url`.
pub fn engine_at(
    url: &str,
    host: &EmbeddedHost,
    dir: &std::path::Path,
    sync: SyncConfig,
) -> (TestEngine, Spy<EwsMailboxStore<EwsClient>>) {
    let client = EwsClient::new(EwsClientConfig::new(url.to_string(), Auth::None)).expect("client");
    let table = Arc::new(FieldTable::default());
    let store = Spy::new(EwsMailboxStore::new(
        client,
        table.clone(),
        BatchLimits {
            write: 50,
            fetch: 10,
        },
    ));
    let state = SqliteStore::open(&dir.join("state.sqlite")).expect("state");
    let engine = Engine::new(
        host.clone(),
        store.clone(),
        state,
        FieldTable::default(),
        sync,
    );
    (engine, store)
}

impl Harness {
    /// The tasks in a mailbox, as the simulator's admin API lists them.
    pub async fn tasks(&self, mailbox: &str) -> Vec<Value> {
        self.http
            .get(format!("{}mailboxes/{mailbox}/tasks", self.sim.admin_url))
            .send()
            .await
            .expect("admin")
            .json()
            .await
            .expect("json")
    }

    /// Changes a task as its owner would in Outlook.
    pub async fn edit(&self, mailbox: &str, item_id: &str, change: Value) -> Value {
        let resp = self
            .http
            .patch(format!(
                "{}mailboxes/{mailbox}/tasks/{}",
                self.sim.admin_url,
                urlencode(item_id)
            ))
            .json(&change)
            .send()
            .await
            .expect("admin");
        assert!(resp.status().is_success(), "edit failed: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// Creates a task in the mailbox as its owner would (one taskbridge does not track).
    pub async fn create_task(&self, mailbox: &str, subject: &str) -> Value {
        let resp = self
            .http
            .post(format!("{}mailboxes/{mailbox}/tasks", self.sim.admin_url))
            .json(&json!({ "Subject": subject }))
            .send()
            .await
            .expect("admin");
        assert!(
            resp.status().is_success(),
            "create failed: {}",
            resp.status()
        );
        resp.json().await.expect("json")
    }

    /// A new change key without a field change, as Exchange sometimes does by itself.
    pub async fn bump(&self, mailbox: &str, item_id: &str) {
        let resp = self
            .http
            .post(format!(
                "{}mailboxes/{mailbox}/tasks/{}/bump",
                self.sim.admin_url,
                urlencode(item_id)
            ))
            .send()
            .await
            .expect("admin");
        assert!(resp.status().is_success());
    }

    /// Deletes a task as its owner would.
    pub async fn delete(&self, mailbox: &str, item_id: &str) {
        let resp = self
            .http
            .delete(format!(
                "{}mailboxes/{mailbox}/tasks/{}",
                self.sim.admin_url,
                urlencode(item_id)
            ))
            .send()
            .await
            .expect("admin");
        assert!(resp.status().is_success());
    }

    /// The simulator's request counters by operation.
    pub fn ops(&self) -> Value {
        self.sim.counters()["operations"].clone()
    }

    /// Requests of one operation so far.
    pub fn count(&self, op: &str) -> u64 {
        self.ops()[op].as_u64().unwrap_or(0)
    }

    /// The task of an assignment in its mailbox.
    pub async fn task_of(&self, uid: i64) -> (String, Value) {
        let key = AssignmentKey {
            project: self.project,
            assignment: AssignmentUid(uid),
        }
        .to_string();
        for m in MAILBOXES {
            for t in self.tasks(m).await {
                if tag_of(&t).as_deref() == Some(key.as_str()) {
                    return (m.to_string(), t);
                }
            }
        }
        panic!("no task for assignment {uid}");
    }
}

/// The taskbridge key tag of a task as the admin API shows it.
pub fn tag_of(task: &Value) -> Option<String> {
    task["ExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["ExtendedFieldUri"]["PropertyName"] == "taskbridge-key")
        .and_then(|p| p["Value"].as_str())
        .map(str::to_string)
}

/// The item id of a task.
pub fn id_of(task: &Value) -> String {
    task["ItemId"]["Id"].as_str().expect("item id").to_string()
}

/// The state row of the item `item_id` in `mailbox`, if one is stored.
pub async fn row_of_item(
    state: &impl StateStore,
    mailbox: &MailboxAddress,
    item_id: &str,
) -> Option<AssignmentState> {
    state
        .assignments_by_items(mailbox, vec![item_id.to_string()])
        .await
        .expect("read the state row")
        .pop()
}

/// The version (id and change key) of a task as the admin API lists it.
pub fn version_of(task: &Value) -> ItemRef {
    ItemRef {
        item_id: id_of(task),
        change_key: task["ItemId"]["ChangeKey"]
            .as_str()
            .expect("change key")
            .to_string(),
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A mailbox store that counts what the engine asks for, and can "crash": after a number of
/// calls every call fails, and the call that crosses the line may reach the server first
/// (the answer is lost), as when the process dies mid-request.
#[derive(Clone)]
pub struct Spy<M> {
    inner: M,
    pub creates: Arc<AtomicUsize>,
    pub updates: Arc<AtomicUsize>,
    pub fields_set: Arc<AtomicUsize>,
    pub deletes: Arc<AtomicUsize>,
    pub fetches: Arc<AtomicUsize>,
    /// Calls left before the crash (`usize::MAX`: never).
    pub budget: Arc<AtomicUsize>,
    /// Whether the crossing call reaches the server.
    pub send_last: Arc<std::sync::atomic::AtomicBool>,
    /// Create calls that reach the server but whose answer is lost (a dropped connection):
    /// each one counts down, the process lives on.
    pub lose_create_answers: Arc<AtomicUsize>,
    /// Run once, right before the next update call reaches the server: an owner's edit that
    /// lands between the engine's read and its write.
    pub before_next_update: Arc<std::sync::Mutex<Option<BeforeUpdate>>>,
    /// Read calls left to fail as a dropped connection would (counting down); the process
    /// lives on.
    pub fail_fetches: Arc<AtomicUsize>,
    /// While true, opening a streaming connection waits (the connection stays down).
    pub hold_streams: Arc<tokio::sync::watch::Sender<bool>>,
    /// Streaming connections opened (or tried).
    pub stream_opens: Arc<AtomicUsize>,
    /// Mailboxes every call to which is refused, as for a mailbox that no longer exists.
    pub denied: Arc<std::sync::Mutex<std::collections::HashSet<MailboxAddress>>>,
    table: FieldTable,
}

/// What runs before the next update call.
pub type BeforeUpdate = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<M> Spy<M> {
    pub fn new(inner: M) -> Self {
        Spy {
            inner,
            creates: Arc::default(),
            updates: Arc::default(),
            fields_set: Arc::default(),
            deletes: Arc::default(),
            fetches: Arc::default(),
            budget: Arc::new(AtomicUsize::new(usize::MAX)),
            send_last: Arc::default(),
            lose_create_answers: Arc::default(),
            before_next_update: Arc::default(),
            fail_fetches: Arc::default(),
            hold_streams: Arc::new(tokio::sync::watch::channel(false).0),
            stream_opens: Arc::default(),
            denied: Arc::default(),
            table: FieldTable::default(),
        }
    }

    /// Refuses every later call to `mailbox` (`false`: lets them through again).
    pub fn deny(&self, mailbox: &str, denied: bool) {
        let mut set = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        let mailbox = MailboxAddress::new(mailbox);
        if denied {
            set.insert(mailbox);
        } else {
            set.remove(&mailbox);
        }
    }

    fn check_access(&self, mailbox: &MailboxAddress) -> Result<(), MailboxError> {
        let set = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(mailbox) {
            return Err(MailboxError::AccessDenied {
                mailbox: mailbox.to_string(),
                detail: "The SMTP address has no mailbox associated with it.".into(),
            });
        }
        Ok(())
    }

    /// Writes (create, update, delete items) seen so far.
    pub fn writes(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
            + self.updates.load(Ordering::SeqCst)
            + self.deletes.load(Ordering::SeqCst)
    }

    /// Crash after `calls` more calls.
    pub fn crash_after(&self, calls: usize, send_last: bool) {
        self.budget.store(calls, Ordering::SeqCst);
        self.send_last.store(send_last, Ordering::SeqCst);
    }

    /// `Ok(true)`: go on; `Ok(false)`: send, then report a crash; `Err`: dead.
    fn gate(&self) -> Result<bool, MailboxError> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == usize::MAX {
            return Ok(true);
        }
        if left == 0 {
            return Err(MailboxError::Unavailable("process killed".into()));
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        if left == 1 {
            return if self.send_last.load(Ordering::SeqCst) {
                Ok(false)
            } else {
                Err(MailboxError::Unavailable("process killed".into()))
            };
        }
        Ok(true)
    }
}

macro_rules! gated {
    ($self:ident, $call:expr) => {{
        let go_on = $self.gate()?;
        let result = $call.await;
        if go_on {
            result
        } else {
            drop(result);
            Err(MailboxError::Unavailable(
                "process killed after sending".into(),
            ))
        }
    }};
}

impl<M: MailboxStore + Clone> MailboxStore for Spy<M> {
    fn limits(&self) -> BatchLimits {
        self.inner.limits()
    }

    async fn tasks_folder(&self, mailbox: &MailboxAddress) -> Result<String, MailboxError> {
        self.check_access(mailbox)?;
        gated!(self, self.inner.tasks_folder(mailbox))
    }

    async fn find_tagged(
        &self,
        mailbox: &MailboxAddress,
        project: ProjectGuid,
    ) -> Result<Vec<(AssignmentKey, ItemRef)>, MailboxError> {
        self.check_access(mailbox)?;
        gated!(self, self.inner.find_tagged(mailbox, project))
    }

    async fn create(
        &self,
        mailbox: &MailboxAddress,
        items: &[(AssignmentKey, MailValues)],
    ) -> Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError> {
        self.check_access(mailbox)?;
        self.creates.fetch_add(items.len(), Ordering::SeqCst);
        let lose = self
            .lose_create_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = gated!(self, self.inner.create(mailbox, items));
        if lose {
            drop(result);
            return Err(MailboxError::Unavailable(
                "connection dropped before the answer".into(),
            ));
        }
        result
    }

    async fn update(
        &self,
        mailbox: &MailboxAddress,
        writes: &[ItemWrite],
    ) -> Result<Vec<Result<ItemRef, ItemFailure>>, MailboxError> {
        self.check_access(mailbox)?;
        for w in writes {
            let n = self.table.updates(&w.from, &w.to).len();
            if n > 0 {
                self.updates.fetch_add(1, Ordering::SeqCst);
                self.fields_set.fetch_add(n, Ordering::SeqCst);
            }
        }
        let before = self
            .before_next_update
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(before) = before {
            before.await;
        }
        gated!(self, self.inner.update(mailbox, writes))
    }

    async fn delete(
        &self,
        mailbox: &MailboxAddress,
        items: &[ItemRef],
    ) -> Result<Vec<Result<(), ItemFailure>>, MailboxError> {
        self.check_access(mailbox)?;
        self.deletes.fetch_add(items.len(), Ordering::SeqCst);
        gated!(self, self.inner.delete(mailbox, items))
    }

    async fn fetch(
        &self,
        mailbox: &MailboxAddress,
        items: &[FetchRequest],
    ) -> Result<Vec<Result<MailboxItem, ItemFailure>>, MailboxError> {
        self.check_access(mailbox)?;
        self.fetches.fetch_add(items.len(), Ordering::SeqCst);
        if self
            .fail_fetches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(MailboxError::Unavailable(
                "connection dropped before the answer".into(),
            ));
        }
        gated!(self, self.inner.fetch(mailbox, items))
    }

    async fn changes(
        &self,
        mailbox: &MailboxAddress,
        sync_state: Option<&str>,
        zones: &std::collections::HashMap<String, chrono_tz::Tz>,
    ) -> Result<ChangePage, MailboxError> {
        self.check_access(mailbox)?;
        gated!(self, self.inner.changes(mailbox, sync_state, zones))
    }

    async fn subscribe(
        &self,
        mailbox: &MailboxAddress,
        delivery: &Delivery,
        watermark: Option<&str>,
        affinity: Option<&Affinity>,
    ) -> Result<Subscription, MailboxError> {
        gated!(
            self,
            self.inner.subscribe(mailbox, delivery, watermark, affinity)
        )
    }

    async fn unsubscribe(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        backend: Option<&Backend>,
    ) -> Result<(), MailboxError> {
        gated!(
            self,
            self.inner.unsubscribe(mailbox, subscription_id, backend)
        )
    }

    async fn pull(
        &self,
        mailbox: &MailboxAddress,
        subscription_id: &str,
        watermark: &str,
    ) -> Result<PulledEvents, MailboxError> {
        gated!(self, self.inner.pull(mailbox, subscription_id, watermark))
    }

    async fn open_stream(
        &self,
        anchor: &MailboxAddress,
        subscription_ids: &[String],
        backend: Option<&Backend>,
        timeout: Duration,
    ) -> Result<EventStream, MailboxError> {
        self.stream_opens.fetch_add(1, Ordering::SeqCst);
        // Held while a test keeps the connection down.
        let mut held = self.hold_streams.subscribe();
        let _ = held.wait_for(|h| !*h).await;
        gated!(
            self,
            self.inner
                .open_stream(anchor, subscription_ids, backend, timeout)
        )
    }
}

/// An engine's loop running in a task: stop it by sending on (or dropping) the sender, then
/// await the handle for the loop's result.
pub type RunningEngine = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), taskbridge::sync::SyncError>>,
);

/// Runs `engine`'s loop (`Engine::run`) in a task until stopped.
pub fn run_engine(engine: &TestEngine) -> RunningEngine {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = engine.clone();
    let runner = tokio::spawn(async move {
        engine
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    (stop, runner)
}

/// Waits (up to 20 s, looking every 20 ms) until `f` gives a value, and returns it; fails
/// naming `what` otherwise.
pub async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A quiet engine configuration for tests: no debounce, fast reconciliation off.
pub fn quick_sync() -> SyncConfig {
    SyncConfig {
        debounce: Duration::ZERO,
        max_debounce: Duration::ZERO,
        ..SyncConfig::default()
    }
}

/// The status updates the host has, as JSON, for assertions.
pub async fn updates(host: &EmbeddedHost) -> Vec<Value> {
    let list = host
        .status_updates(Default::default())
        .await
        .expect("status updates");
    list.into_iter()
        .map(|u| serde_json::to_value(u).expect("json"))
        .collect()
}

/// Shorthand for `json!`.
pub fn j(v: Value) -> Value {
    json!(v)
}
