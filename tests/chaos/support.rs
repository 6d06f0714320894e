//! The chaos suite's machinery: a workspace made by `taskbridge init`, the simulator and the
//! connector as child processes (stderr captured to log files), the simulator's admin API, the
//! census of mailbox tasks, the field-by-field comparison of both sides, RSS and log scans.
//!
//! Every wait is bounded and generous; nothing here asserts on time.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use taskbridge::ews::client::{EwsClient, EwsClientConfig};
use taskbridge::ews::transport::Auth;
use taskbridge::exchange::EwsMailboxStore;
use taskbridge::mapping::FieldTable;
use taskbridge::pm::embedded::EmbeddedHost;
use taskbridge::pm::{AssignmentKey, PmHost, ProjectGuid};
use taskbridge::secret::Secret;
use taskbridge::state::{ItemRef, MailboxAddress};
use taskbridge::sync::{BatchLimits, FetchRequest, MailboxStore, ProjectView};

pub const BIN: &str = env!("CARGO_BIN_EXE_taskbridge");

/// The service account `taskbridge init` configures.
pub const SERVICE: &str = "taskbridge@sim.example";

/// One chaos test at a time: each one loads the machine with child processes, and their
/// figures should not be blurred by another's. (A tokio mutex: the guard is held across the
/// whole async test, and a failed test releases it without poisoning.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    taskbridge::ews::transport::install_crypto_provider();
    LOCK.lock().await
}

/// A figure line for `docs/RELIABILITY.md`; `scripts/chaos.sh` collects them.
pub fn figure(test: &str, what: &str, value: impl std::fmt::Display) {
    eprintln!("CHAOS-FIGURE {test} | {what} | {value}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 100 ms until it gives `Some`, failing the test after `timeout` (a safety
/// net far above the expected time, not a timing assertion).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The mailbox owners of a test, `user{i}@example.com`.
pub fn mailboxes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}@example.com")).collect()
}

/// A project of `n` assignments, one task each, spread over `mailboxes` in turn, in the JSON
/// project format (docs/PROJECT-FORMAT.md).
pub fn project_json(guid: ProjectGuid, n: usize, mailboxes: &[String]) -> String {
    let mut tasks = vec![json!({
        "uid": 0, "name": "Chaos", "start": "2026-03-02T08:00:00",
        "finish": "2026-06-30T17:00:00", "summary": true
    })];
    let resources: Vec<Value> = mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"uid": i + 1, "name": format!("user {i}"), "email": m}))
        .collect();
    let mut assignments = Vec::new();
    for k in 1..=n {
        let day = 2 + k % 20;
        tasks.push(json!({
            "uid": k,
            "name": format!("Task {k}"),
            "notes": format!("Notes of task {k}: <check> & \"quote\"."),
            "start": format!("2026-03-{day:02}T08:00:00"),
            "finish": format!("2026-03-{:02}T17:00:00", day + 1),
            "work": "PT8H",
            "priority": if k % 3 == 0 { 700 } else { 500 },
        }));
        assignments.push(json!({
            "uid": k, "task_uid": k, "resource_uid": (k - 1) % mailboxes.len() + 1, "work": "PT8H"
        }));
    }
    json!({
        "guid": guid.to_string(),
        "name": "Chaos",
        "time_zone": "Europe/Berlin",
        "tasks": tasks,
        "resources": resources,
        "assignments": assignments,
    })
    .to_string()
}

/// The keys a project of `n` assignments syncs.
pub fn keys(guid: ProjectGuid, n: usize) -> Vec<String> {
    (1..=n).map(|k| format!("{guid}:{k}")).collect()
}

/// A directory made by `taskbridge init`, with its own ports, logs and environment.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub ews_port: u16,
    pub listen_port: u16,
    pub admin_port: u16,
    /// `TASKBRIDGE_*` overrides given to every connector command.
    pub env: Vec<(String, String)>,
    /// The log level of every child (`--log`).
    pub log: String,
    logs: AtomicUsize,
}

/// What a finished command printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Workspace {
    /// `taskbridge init` in a fresh directory, with free ports written into the file.
    pub fn new(log: &str) -> Workspace {
        let mut dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("TASKBRIDGE_CHAOS_KEEP").is_some() {
            // For a post-mortem: the logs, the state files and the configuration stay.
            dir.disable_cleanup(true);
            eprintln!("chaos workspace kept: {}", dir.path().display());
        }
        let ws = Workspace {
            dir,
            ews_port: free_port(),
            listen_port: free_port(),
            admin_port: free_port(),
            env: Vec::new(),
            log: log.to_string(),
            logs: AtomicUsize::new(0),
        };
        std::fs::create_dir_all(ws.log_dir()).expect("log dir");
        let out = ws.run_sync(&["init"]);
        assert!(out.ok(), "init: {}", out.stderr);
        let path = ws.path().join("taskbridge.toml");
        let config = std::fs::read_to_string(&path).expect("config");
        let config = config
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{}", ws.ews_port))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ws.listen_port))
            .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", ws.admin_port));
        std::fs::write(&path, config).expect("write config");
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("taskbridge-data")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.path().join("logs")
    }

    fn secret_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .to_string()
    }

    /// The EWS password `init` wrote.
    pub fn password(&self) -> String {
        self.secret_file("exchange.password")
    }

    /// The PM API token `init` wrote.
    pub fn admin_token(&self) -> String {
        self.secret_file("admin.token")
    }

    /// The listener secret (written by `init` or on the first `serve`).
    pub fn listener_secret(&self) -> String {
        self.secret_file("listener.secret")
    }

    /// The secrets no log line may show.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut s = vec![
            ("exchange password".to_string(), self.password()),
            ("admin token".to_string(), self.admin_token()),
        ];
        if self.data_dir().join("listener.secret").exists() {
            s.push(("listener secret".to_string(), self.listener_secret()));
        }
        s
    }

    pub fn set_env(&mut self, key: &str, value: impl ToString) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// A new log file for a child named `name`.
    pub fn log_file(&self, name: &str) -> PathBuf {
        let n = self.logs.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.log_dir().join(format!("{n:04}-{safe}.log"))
    }

    /// The command line of `taskbridge args` in this workspace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.path())
            .env_remove("TASKBRIDGE_LOG")
            .env_remove("TASKBRIDGE_LOG_FORMAT")
            .arg("--log")
            .arg(&self.log)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Runs a command to its end; stderr is also kept in a log file.
    pub fn run_sync(&self, args: &[&str]) -> Ran {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run taskbridge");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::write(self.log_file(args[0]), &stderr);
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        }
    }

    /// [`run_sync`](Self::run_sync) off the async runtime.
    pub async fn run(&self, args: &[&str]) -> Ran {
        let mut c = self.command(args);
        let log = self.log_file(args[0]);
        tokio::task::spawn_blocking(move || {
            let out = c.stdin(Stdio::null()).output().expect("run taskbridge");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = std::fs::write(log, &stderr);
            Ran {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr,
            }
        })
        .await
        .expect("join")
    }

    /// Runs a command that prints JSON and must succeed.
    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert!(out.ok(), "{args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Starts a long-running command; its stderr goes to a log file, its stdout to a pipe
    /// (`piped`: read it with [`Proc::first_line`]) or to the file `{log}.out`.
    pub fn spawn(&self, name: &str, args: &[&str], piped: bool) -> Proc {
        let log = self.log_file(name);
        let file = std::fs::File::create(&log).expect("log file");
        let stdout = if piped {
            Stdio::piped()
        } else {
            Stdio::from(std::fs::File::create(log.with_extension("out")).expect("out file"))
        };
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .expect("spawn taskbridge");
        Proc { child, log }
    }

    /// Imports a project file and returns its GUID.
    pub async fn import(&self, json: &str) -> ProjectGuid {
        let file = self
            .path()
            .join(format!("project-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, json).expect("project file");
        let out = self
            .run(&["import", file.to_str().expect("utf-8 path")])
            .await;
        assert!(out.ok(), "import: {}", out.stderr);
        out.stdout.trim().parse().expect("import prints the GUID")
    }

    /// The PM API on the admin port: GET `path` with `token`, the status and the body.
    pub async fn pm_api(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client.get(format!("http://127.0.0.1:{}{path}", self.admin_port));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(_) => (0, Value::Null),
        }
    }
}

/// A child process, SIGKILLed when dropped.
pub struct Proc {
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (std's `kill` is SIGKILL on Unix) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill9();
        None
    }

    /// Waits for the exit, bounded.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The first line of stdout, read on a thread (bounded).
    pub fn first_line(&mut self, timeout: Duration) -> Option<String> {
        let stdout = self.child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so that the child never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        rx.recv_timeout(timeout).ok().filter(|l| !l.is_empty())
    }

    /// Resident set size in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The simulator as a child process on the workspace's EWS port, restartable on the same state
/// file.
pub struct SimProc {
    pub proc: Proc,
    args: Vec<String>,
    pub admin: String,
    pub url: String,
    pub restarts: usize,
}

impl SimProc {
    /// Starts `taskbridge sim` with the workspace's service account, one owner per mailbox,
    /// basic authentication, `--state sim.sqlite` and `extra` flags.
    pub fn start(ws: &Workspace, mailboxes: &[String], extra: &[&str]) -> SimProc {
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ws.ews_port),
            "--auth".into(),
            "basic".into(),
            "--service".into(),
            format!("{SERVICE}:{}", ws.password()),
            "--state".into(),
            ws.path().join("sim.sqlite").display().to_string(),
        ];
        for (i, m) in mailboxes.iter().enumerate() {
            args.push("--user".into());
            args.push(format!("{m}:owner-pw-{i}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // Exchange's strict change keys, as the simulator's default; a run can ask for the
        // property-level merge model instead (`TASKBRIDGE_CHAOS_CONFLICT_MODEL=merge`).
        let model = std::env::var("TASKBRIDGE_CHAOS_CONFLICT_MODEL")
            .unwrap_or_else(|_| "strict".to_string());
        args.push("--conflict-model".into());
        args.push(model);
        let mut sim = SimProc {
            proc: spawn_sim(ws, &args),
            args,
            admin: format!("http://127.0.0.1:{}/sim", ws.ews_port),
            url: format!("http://127.0.0.1:{}/EWS/Exchange.asmx", ws.ews_port),
            restarts: 0,
        };
        sim.await_ready(ws);
        sim
    }

    fn await_ready(&mut self, ws: &Workspace) {
        // The port may still be held for a moment after a kill: try a few times.
        for _ in 0..50 {
            if let Some(line) = self.proc.first_line(Duration::from_secs(60))
                && line.contains("/EWS/Exchange.asmx")
            {
                return;
            }
            self.proc.kill9();
            std::thread::sleep(Duration::from_millis(200));
            self.proc = spawn_sim(ws, &self.args);
        }
        panic!(
            "the simulator does not start (see {})",
            self.proc.log.display()
        );
    }

    /// SIGKILL, then the same command line again (same port, same state file).
    pub fn kill_and_restart(&mut self, ws: &Workspace) {
        self.proc.kill9();
        self.restarts += 1;
        self.proc = spawn_sim(ws, &self.args);
        self.await_ready(ws);
    }

    /// Stops it and starts it again with other fault flags (same state file).
    pub fn restart_with(&mut self, ws: &Workspace, mailboxes: &[String], extra: &[&str]) {
        self.proc.kill9();
        *self = SimProc::start(ws, mailboxes, extra);
    }
}

fn spawn_sim(ws: &Workspace, args: &[String]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.spawn("sim", &args, true)
}

/// The simulator's admin API.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub fn new(sim: &SimProc) -> Admin {
        Admin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: sim.admin.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// The tasks of a mailbox (retried while the simulator restarts).
    pub async fn tasks(&self, mailbox: &str) -> Vec<Value> {
        wait_until("the task list", Duration::from_secs(120), || async {
            self.get(&format!("/mailboxes/{mailbox}/tasks"))
                .await?
                .as_array()
                .cloned()
        })
        .await
    }

    pub async fn counters(&self) -> Value {
        wait_until("the counters", Duration::from_secs(60), || async {
            self.get("/counters").await
        })
        .await
    }

    /// Tasks per mailbox, from `/sim/mailboxes` (cheap).
    pub async fn task_count(&self) -> Option<u64> {
        let list = self.get("/mailboxes").await?;
        Some(
            list.as_array()?
                .iter()
                .filter_map(|m| m["tasks"].as_u64())
                .sum(),
        )
    }

    pub async fn reset_counters(&self) {
        let _ = self
            .http
            .post(format!("{}/counters/reset", self.base))
            .send()
            .await;
    }

    pub async fn subscriptions(&self) -> Vec<Value> {
        self.get("/subscriptions")
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// A new change key for a task, no field changed (as Exchange sometimes does by itself).
    pub async fn bump(&self, mailbox: &str, item_id: &str) {
        let url = format!("{}/mailboxes/{mailbox}/tasks/{item_id}/bump", self.base);
        let resp = self.http.post(&url).send().await.expect("admin POST");
        assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
    }

    /// Puts a mailbox over its quota (every create and update fails) or back under it.
    pub async fn set_quota(&self, mailbox: &str, exceeded: bool) {
        let url = format!("{}/mailboxes/{mailbox}/quota", self.base);
        let resp = self
            .http
            .put(&url)
            .json(&json!({ "exceeded": exceeded }))
            .send()
            .await
            .expect("admin PUT");
        assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    }

    /// Changes a task as its owner would in Outlook.
    pub async fn patch(&self, mailbox: &str, item_id: &str, change: &Value) -> Value {
        let url = format!("{}/mailboxes/{mailbox}/tasks/{item_id}", self.base);
        let resp = self
            .http
            .patch(&url)
            .json(change)
            .send()
            .await
            .expect("admin PATCH");
        assert!(resp.status().is_success(), "PATCH {url}: {}", resp.status());
        resp.json().await.expect("json")
    }
}

/// The taskbridge key a task is tagged with, as the admin API shows it.
pub fn tag_of(task: &Value) -> Option<String> {
    task["ExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["ExtendedFieldUri"]["PropertyName"] == "taskbridge-key")
        .and_then(|p| p["Value"].as_str())
        .map(str::to_string)
}

/// What the mailboxes hold, by tag.
#[derive(Debug, Default)]
pub struct Census {
    /// Tasks in all Tasks folders.
    pub tasks: usize,
    /// Tasks per key.
    pub by_key: BTreeMap<String, Vec<(String, Value)>>,
    /// Extra copies of a key (a key on two tasks counts one duplicate).
    pub duplicates: usize,
    /// Expected keys without a task.
    pub missing: Vec<String>,
    /// Tasks without a tag.
    pub untagged: usize,
}

pub async fn census(admin: &Admin, mailboxes: &[String], expected: &[String]) -> Census {
    let mut c = Census::default();
    for m in mailboxes {
        for t in admin.tasks(m).await {
            c.tasks += 1;
            match tag_of(&t) {
                Some(tag) => c.by_key.entry(tag).or_default().push((m.clone(), t)),
                None => c.untagged += 1,
            }
        }
    }
    c.duplicates = c.by_key.values().map(|v| v.len().saturating_sub(1)).sum();
    c.missing = expected
        .iter()
        .filter(|k| !c.by_key.contains_key(*k))
        .cloned()
        .collect();
    c
}

/// Reads every tagged task over EWS (as the service account) and compares each mapped field
/// with what the PM side's values map to. Returns (fields compared, mismatches).
///
/// Needs the connector stopped (it opens the PM store) and a simulator without faults.
pub async fn compare_values(ws: &Workspace, ews_url: &str) -> (usize, Vec<String>) {
    let host = EmbeddedHost::open_existing(ws.data_dir())
        .await
        .expect("PM store");
    let table = FieldTable::default();
    let mut config = EwsClientConfig::new(
        ews_url,
        Auth::Basic {
            user: SERVICE.into(),
            password: Secret::new(ws.password()),
        },
    );
    config.retry.max_attempts = 10;
    let client = EwsClient::new(config).expect("client");
    let store = EwsMailboxStore::new(
        client,
        Arc::new(table.clone()),
        BatchLimits {
            write: 50,
            fetch: 10,
        },
    );
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for guid in host.projects().await.expect("projects") {
        let project = host.project(guid).await.expect("project").expect("exists");
        let view = ProjectView::new(project);
        let mut by_mailbox: BTreeMap<String, Vec<AssignmentKey>> = BTreeMap::new();
        for unit in view.units() {
            by_mailbox
                .entry(unit.email.to_ascii_lowercase())
                .or_default()
                .push(unit.key);
        }
        for (mailbox, keys) in by_mailbox {
            let address = MailboxAddress::new(&mailbox);
            let tagged: BTreeMap<AssignmentKey, Vec<ItemRef>> = {
                let mut m: BTreeMap<AssignmentKey, Vec<ItemRef>> = BTreeMap::new();
                for (k, item) in store
                    .find_tagged(&address, guid)
                    .await
                    .expect("find tagged")
                {
                    m.entry(k).or_default().push(item);
                }
                m
            };
            let mut requests = Vec::new();
            let mut wanted = Vec::new();
            for key in &keys {
                let Some((desired, zone)) = view.desired(&table, key.assignment) else {
                    continue;
                };
                match tagged.get(key).map(Vec::as_slice) {
                    Some([item]) => {
                        requests.push(FetchRequest {
                            item_id: item.item_id.clone(),
                            zone,
                        });
                        wanted.push((*key, desired));
                    }
                    Some(many) => mismatches.push(format!("{key}: {} tasks", many.len())),
                    None => mismatches.push(format!("{key}: no task in {mailbox}")),
                }
            }
            for (chunk, wanted) in requests.chunks(10).zip(wanted.chunks(10)) {
                let got = store.fetch(&address, chunk).await.expect("GetItem");
                for ((key, desired), result) in wanted.iter().zip(got) {
                    let item = match result {
                        Ok(item) => item,
                        Err(e) => {
                            mismatches.push(format!("{key}: {e}"));
                            continue;
                        }
                    };
                    for e in table.entries() {
                        compared += 1;
                        if desired.encode_field(e.field) != item.values.encode_field(e.field) {
                            mismatches.push(format!(
                                "{key} {}: pm {:?} mail {:?}",
                                e.field.name(),
                                String::from_utf8_lossy(&desired.encode_field(e.field)),
                                String::from_utf8_lossy(&item.values.encode_field(e.field)),
                            ));
                        }
                    }
                }
            }
        }
    }
    host.close().await;
    (compared, mismatches)
}

/// Lines of the workspace's logs that show a secret; every 12-character piece of each secret
/// is searched, so that a truncated or split secret is found too.
pub fn scan_logs(dir: &Path, secrets: &[(String, String)]) -> (usize, Vec<String>) {
    let mut hits = Vec::new();
    let mut lines = 0;
    let mut pieces: Vec<(String, String)> = Vec::new();
    for (name, s) in secrets {
        let chars: Vec<char> = s.chars().collect();
        let n = 12.min(chars.len());
        let mut seen = HashSet::new();
        for w in chars.windows(n) {
            let piece: String = w.iter().collect();
            if seen.insert(piece.clone()) {
                pieces.push((name.clone(), piece));
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (no, line) in text.lines().enumerate() {
            lines += 1;
            for (name, piece) in &pieces {
                if line.contains(piece.as_str()) {
                    hits.push(format!(
                        "{}:{}: {name}: {}",
                        file.file_name().unwrap_or_default().to_string_lossy(),
                        no + 1,
                        line.chars().take(300).collect::<String>()
                    ));
                    break;
                }
            }
        }
    }
    (lines, hits)
}

/// Asserts that no log line of the workspace shows one of its secrets (or `extra` ones).
pub fn assert_no_secret_in_logs(test: &str, ws: &Workspace, extra: &[(String, String)]) {
    let mut secrets = ws.secrets();
    secrets.extend(extra.iter().cloned());
    let (lines, hits) = scan_logs(&ws.log_dir(), &secrets);
    figure(test, "log lines searched for secrets", lines);
    assert!(
        hits.is_empty(),
        "{} log lines show a secret:\n{}",
        hits.len(),
        hits.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
