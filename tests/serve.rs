//! `taskbridge serve` as a child process against `taskbridge sim` as another, with the
//! configuration `taskbridge init` writes (edited only for ports): a user edit made through the
//! simulator's admin API arrives in `taskbridge updates --json` and `taskbridge status --json`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod external;

const BIN: &str = env!("CARGO_BIN_EXE_taskbridge");

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn taskbridge(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run taskbridge")
}

fn json_of(dir: &Path, args: &[&str]) -> Value {
    let out = taskbridge(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP request; `None` unless it got a 2xx answer.
fn http(method: &str, url: &str, body: Option<&str>) -> Option<String> {
    taskbridge::ews::transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut req = client.request(method, url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    })
}

fn get(url: &str) -> Option<Value> {
    serde_json::from_str(&http("GET", url, None)?).ok()
}

#[test]
fn serve_against_sim_brings_a_mailbox_edit_to_updates_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = taskbridge(d, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Edit only the ports.
    let (ews, listen, admin) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let config = config
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{ews}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{admin}"));
    std::fs::write(d.join("taskbridge.toml"), config).expect("write config");
    let password = std::fs::read_to_string(d.join("taskbridge-data/exchange.password"))
        .expect("password written by init");
    let mut sim_cmd = Command::new(BIN);
    sim_cmd
        .current_dir(d)
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{ews}"),
            "--auth",
            "basic",
        ])
        .args([
            "--service",
            &format!("taskbridge@sim.example:{}", password.trim()),
        ])
        .args(["--user", "ann@example.com:a", "--user", "bob@example.com:b"])
        .args(["--user", "chen@example.com:c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(rec) = std::env::var_os("TASKBRIDGE_RECORD_DIR") {
        sim_cmd
            .arg("--record")
            .arg(PathBuf::from(rec).join("serve-e2e"));
    }
    let mut sim = Kill(sim_cmd.spawn().expect("start sim"));
    let mut first = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("sim prints its URL");
    assert!(
        first.contains(&format!(":{ews}/EWS/Exchange.asmx")),
        "{first}"
    );
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-project.xml");
    let out = taskbridge(
        d,
        &[
            "import",
            sample.to_str().expect("path"),
            "--time-zone",
            "Europe/Berlin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_until("serve to be ready", Duration::from_secs(20), || {
        http("GET", &format!("{admin_url}/healthz"), None)
    });
    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    let task = wait_until("the published task", Duration::from_secs(20), || {
        let tasks = get(&format!("{sim_admin}/mailboxes/ann@example.com/tasks"))?;
        tasks
            .as_array()?
            .iter()
            .find(|t| {
                t["Subject"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("Survey the north abutment"))
            })
            .cloned()
    });
    wait_until("the subscriptions", Duration::from_secs(20), || {
        let subs = get(&format!("{sim_admin}/subscriptions"))?;
        (subs.as_array()?.len() >= 3).then_some(())
    });
    let id = task["ItemId"]["Id"].as_str().expect("id");
    let patched = http(
        "PATCH",
        &format!("{sim_admin}/mailboxes/ann@example.com/tasks/{id}"),
        Some(r#"{"PercentComplete": 60}"#),
    );
    assert!(patched.is_some(), "the edit was refused");
    let update = wait_until("the status update", Duration::from_secs(20), || {
        let list = json_of(d, &["updates", "--json"]);
        list.as_array()?
            .iter()
            .find(|u| u["state"] == "applied")
            .cloned()
    });
    assert_eq!(update["source"]["mailbox"], "ann@example.com");
    // The decision is in the audit log, as JSON and as text.
    let audit = json_of(d, &["audit", "--json"]);
    let record = audit
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["field"] == "PercentComplete" || r["field"] == "percent_complete")
        .cloned()
        .unwrap_or_else(|| panic!("no percent decision in {audit}"));
    assert_eq!(record["rule"], "mail-only");
    assert_eq!(record["winner"], "mail");
    assert_eq!(record["mail_value"], "60%");
    // In words for people: a header, the task's name, the decision and its reason.
    let text = taskbridge(d, &["audit"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("TIME (UTC)"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("percent_complete"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("Survey the north abutment")
            && line.contains("mailbox value taken: only the mailbox changed"),
        "{line}"
    );
    assert!(!text.contains("MailOnly"), "no internal rule names: {text}");
    // Filters.
    let only = json_of(
        d,
        &[
            "audit",
            "--json",
            "--field",
            "percent_complete",
            "--since",
            "1h",
        ],
    );
    assert!(
        only.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|r| r["field"] == record["field"])),
        "{only}"
    );
    let last = json_of(d, &["audit", "--json", "--limit", "1"]);
    assert_eq!(last.as_array().map(Vec::len), Some(1), "{last}");
    let bob = json_of(
        d,
        &[
            "audit",
            "--json",
            "--mailbox",
            "bob@example.com",
            "--field",
            "percent_complete",
        ],
    );
    assert_eq!(bob, serde_json::json!([]), "ann's edit only");
    let future = json_of(d, &["audit", "--json", "--since", "2999-01-01"]);
    assert_eq!(future, serde_json::json!([]));
    let status = json_of(d, &["status", "--json"]);
    let lines = status.as_array().expect("array");
    assert_eq!(lines.len(), 6, "{status}");
    assert!(lines.iter().all(|l| l["state"] == "synced"), "{status}");
    // One instance alone holds every mailbox's lease: /healthz and /metrics say which instance
    // it is and how many it holds, and `status` names it as each mailbox's owner.
    let health = http("GET", &format!("{admin_url}/healthz"), None).expect("healthz");
    let instance = health
        .lines()
        .find_map(|l| l.strip_prefix("instance: "))
        .expect("the instance id in /healthz")
        .to_string();
    assert!(health.lines().any(|l| l == "leases: 3"), "{health}");
    assert!(
        lines.iter().all(|l| l["owner"] == instance.as_str()),
        "{status}"
    );
    let metrics = http("GET", &format!("{admin_url}/metrics"), None).expect("metrics");
    assert!(
        metrics.contains(&format!(
            "taskbridge_leases_held{{instance=\"{instance}\"}} 3"
        )),
        "{metrics}"
    );
    // Published at start in two rounds: the project's mailboxes were new, so the first round
    // added their leases and skipped them, and the round after the lease was taken published.
    assert!(
        metrics.contains("taskbridge_publish_rounds_total 2\n"),
        "{metrics}"
    );
    // A clean stop on SIGTERM.
    let pid = serve.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut serve = serve;
    let code = wait_until("serve to stop", Duration::from_secs(20), || {
        serve.0.try_wait().ok().flatten()
    });
    assert!(code.success(), "serve exited with {code}");
    drop(sim);
}

/// `taskbridge init` in `d` with free ports, the simulator on the EWS port (the service
/// account's password is the one init wrote) and the sample project imported. Returns the
/// simulator, the EWS port and the admin port.
fn site_with_sim(d: &Path) -> (Kill, u16, u16) {
    site_with_sim_password(d, None)
}

/// [`site_with_sim`], with the simulator knowing the service account by `password` when one
/// is given instead of the one init wrote.
fn site_with_sim_password(d: &Path, password: Option<&str>) -> (Kill, u16, u16) {
    site_with_sim_configured(d, password, |config| config)
}

/// [`site_with_sim_password`], with the configuration `init` wrote changed by `edit` before
/// anything is imported.
fn site_with_sim_configured(
    d: &Path,
    password: Option<&str>,
    edit: impl FnOnce(String) -> String,
) -> (Kill, u16, u16) {
    // As the README's tour does it: from an empty folder, with the sample `init` writes.
    let out = taskbridge(d, &["init", "--sample"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ews, listen, admin) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let config = config
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{ews}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{admin}"));
    std::fs::write(d.join("taskbridge.toml"), edit(config)).expect("write config");
    let written = std::fs::read_to_string(d.join("taskbridge-data/exchange.password"))
        .expect("password written by init");
    let sim = start_sim(d, ews, password.unwrap_or(written.trim()));
    assert_eq!(
        std::fs::read(d.join("sample-project.xml")).expect("init --sample wrote the sample"),
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-project.xml"))
            .expect("the repository's sample"),
    );
    let out = taskbridge(
        d,
        &[
            "import",
            "sample-project.xml",
            "--time-zone",
            "Europe/Berlin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (sim, ews, admin)
}

/// The simulator on `ews` with the three mailboxes of the sample and the service account's
/// `password`; returns once it listens.
fn start_sim(d: &Path, ews: u16, password: &str) -> Kill {
    start_sim_with(d, ews, password, &[])
}

/// [`start_sim`] with further arguments.
fn start_sim_with(d: &Path, ews: u16, password: &str, extra: &[&str]) -> Kill {
    let mut sim = Kill(
        Command::new(BIN)
            .current_dir(d)
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{ews}"),
                "--auth",
                "basic",
            ])
            .args(["--service", &format!("taskbridge@sim.example:{password}")])
            .args(["--user", "ann@example.com:a", "--user", "bob@example.com:b"])
            .args(["--user", "chen@example.com:c"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(d.join("sim.log")).expect("sim log"))
            .spawn()
            .expect("start sim"),
    );
    let mut first = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("sim prints its URL");
    sim
}

/// Against a healthy simulator `check` says plainly that the service account has no mailbox of
/// its own (no Exchange error code); the simulator's log in a file has no colour codes; a
/// port already taken stops `serve` with one line naming the key that moves it.
#[test]
fn check_the_simulator_log_and_a_taken_port_say_it_plainly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (_sim, _ews, _admin) = site_with_sim(d);
    let out = taskbridge(d, &["check", "--mailbox", "ann@example.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("impersonation:   works"), "{text}");
    assert!(!text.contains("ErrorMissingEmailAddress"), "{text}");
    assert!(text.contains("no mailbox of its own"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("plain HTTP"),
        "nothing alarming about the local simulator: {err}"
    );

    let log = std::fs::read_to_string(d.join("sim.log")).expect("sim log");
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = Command::new(BIN)
        .current_dir(d)
        .arg("serve")
        .env("TASKBRIDGE_LISTENER_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("already in use").count(), 1, "{err}");
    assert!(
        err.contains("listener.listen") && err.contains("TASKBRIDGE_LISTENER_LISTEN"),
        "{err}"
    );
}

/// A GET whatever its status: the status and the body.
fn get_any(url: &str) -> Option<(u16, String)> {
    taskbridge::ews::transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = reqwest::Client::new().get(url).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    })
}

/// With a wrong Exchange password every call gets 401: `publish` says so once for its six
/// assignments and exits 1; `status` lists them as failed with the error, under a header and
/// over a summary, and exits 1; `serve` keeps running but `/healthz` answers 503 "degraded"
/// with the reason, until Exchange accepts the password (the simulator restarted with it),
/// when it answers 200 again and the tasks are published.
#[test]
fn a_wrong_password_shows_in_publish_status_and_healthz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sim, ews, admin) = site_with_sim_password(d, Some("not-the-password"));

    // An unknown project is named as such, with the closest one.
    let out = taskbridge(d, &["publish", "Harbour Bridge"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: unknown project \"Harbour Bridge\"; closest: \"Harbour Bridge Refit\""
    );

    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}'), "no colour codes in a pipe: {err}");
    let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("failed:")).collect();
    assert_eq!(failed.len(), 1, "one line for one error: {err}");
    assert!(
        failed[0].contains("6 assignments in ann@example.com, bob@example.com, chen@example.com")
            && failed[0].contains("HTTP 401"),
        "{err}"
    );
    assert_eq!(err.matches("HTTP 401").count(), 2, "{err}");
    assert!(err.contains("was repeated 2 more times"), "{err}");

    let out = taskbridge(d, &["status"]);
    assert_eq!(out.status.code(), Some(1), "failures make status exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("TASK") && lines[0].contains("STATE"),
        "{text}"
    );
    assert!(text.contains("Survey the north abutment"), "{text}");
    assert!(!text.contains(":1 "), "task names, not keys: {text}");
    assert!(
        text.contains("6 assignments: 0 synced, 0 pending, 0 conflict, 0 parked, 6 failed"),
        "{text}"
    );
    assert!(
        text.contains("ann@example.com: 2 failing, last error: authentication failed"),
        "{text}"
    );
    let out = taskbridge(d, &["status", "--failed", "--mailbox", "bob@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "header and bob's two: {text}");
    assert!(
        text.contains("LAST ERROR") && text.contains("HTTP 401"),
        "{text}"
    );

    let serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    let healthz = format!("http://127.0.0.1:{admin}/healthz");
    let reason = wait_until("/healthz to say degraded", Duration::from_secs(30), || {
        let (status, body) = get_any(&healthz)?;
        (status == 503 && body.starts_with("degraded:")).then_some(body)
    });
    assert!(
        reason.contains("Exchange calls are failing") && reason.contains("HTTP 401"),
        "{reason}"
    );

    // The password is put right on the Exchange side.
    drop(sim);
    let password =
        std::fs::read_to_string(d.join("taskbridge-data/exchange.password")).expect("password");
    let _sim = start_sim(d, ews, password.trim());
    wait_until("/healthz to say ok", Duration::from_secs(30), || {
        let (status, body) = get_any(&healthz)?;
        (status == 200 && body.lines().next() == Some("ok")).then_some(())
    });
    let status = wait_until("the tasks to be published", Duration::from_secs(30), || {
        let out = taskbridge(d, &["status"]);
        out.status.success().then_some(out)
    });
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("6 assignments: 6 synced, 0 pending, 0 conflict, 0 parked, 0 failed"),
        "{text}"
    );
    drop(serve);
}

/// Under systemd's `Type=notify`: `serve` sends READY=1 to `$NOTIFY_SOCKET` once it answers
/// `/healthz`; on SIGHUP it applies a new debounce (an edit that a ten-minute debounce would
/// hold arrives in seconds), names the other changed keys as needing a restart, and keeps
/// running; it sends STOPPING=1 on SIGTERM.
#[cfg(target_os = "linux")]
#[test]
fn serve_notifies_systemd_and_reports_a_reload_on_sighup() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (_sim, ews, admin) = site_with_sim(d);
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let slow = config
        .replace("max_debounce_ms = 10000", "max_debounce_ms = 600000")
        .replace("\ndebounce_ms = 2000", "\ndebounce_ms = 600000");
    assert_eq!(
        slow.matches("600000").count(),
        2,
        "the template names both keys"
    );
    std::fs::write(d.join("taskbridge.toml"), &slow).expect("slow debounce");
    let socket_path = d.join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve"),
    );
    // Collect stderr lines as they come.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = serve.0.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means ready: the admin endpoint answers at once.
    assert!(
        http("GET", &format!("http://127.0.0.1:{admin}/healthz"), None).is_some(),
        "READY=1 came before /healthz answered"
    );

    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    let task = wait_until("the published task", Duration::from_secs(20), || {
        let tasks = get(&format!("{sim_admin}/mailboxes/ann@example.com/tasks"))?;
        tasks
            .as_array()?
            .iter()
            .find(|t| {
                t["Subject"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("Survey the north abutment"))
            })
            .cloned()
    });
    wait_until("the subscriptions", Duration::from_secs(20), || {
        let subs = get(&format!("{sim_admin}/subscriptions"))?;
        (subs.as_array()?.len() >= 3).then_some(())
    });

    let edited = slow
        .replace("max_debounce_ms = 600000", "max_debounce_ms = 1000")
        .replace("\ndebounce_ms = 600000", "\ndebounce_ms = 100")
        .replace("max_body_bytes = 1048576", "max_body_bytes = 2097152");
    assert!(
        edited.contains("max_body_bytes = 2097152"),
        "the template names max_body_bytes"
    );
    std::fs::write(d.join("taskbridge.toml"), edited).expect("edit config");
    let pid = serve.0.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut applied, mut restart) = (None, None);
    while applied.is_none() || restart.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("both SIGHUP lines within 20 s");
        if line.contains("SIGHUP") && line.contains("applied") {
            applied = Some(line);
        } else if line.contains("SIGHUP") && line.contains("restart") {
            restart = Some(line);
        }
    }
    let (applied, restart) = (applied.expect("applied"), restart.expect("restart"));
    assert!(applied.contains("sync.debounce_ms"), "{applied}");
    assert!(applied.contains("sync.max_debounce_ms"), "{applied}");
    assert!(restart.contains("listener.max_body_bytes"), "{restart}");
    assert!(!restart.contains("debounce"), "{restart}");
    assert!(
        serve.0.try_wait().expect("wait").is_none(),
        "serve died on SIGHUP"
    );
    assert!(http("GET", &format!("http://127.0.0.1:{admin}/healthz"), None).is_some());

    // The new debounce is the one in force: under the old one this edit would wait ten minutes.
    let id = task["ItemId"]["Id"].as_str().expect("id");
    let patched = http(
        "PATCH",
        &format!("{sim_admin}/mailboxes/ann@example.com/tasks/{id}"),
        Some(r#"{"PercentComplete": 60}"#),
    );
    assert!(patched.is_some(), "the edit was refused");
    wait_until("the status update", Duration::from_secs(20), || {
        let list = json_of(d, &["updates", "--json"]);
        list.as_array()?
            .iter()
            .find(|u| u["state"] == "applied")
            .cloned()
    });

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let n = notify.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `url = "autodiscover"`: `publish` finds the EWS URL through the simulator's SOAP
/// Autodiscover, keeps it in `autodiscover.json`, uses the kept URL while it is fresh, falls
/// back to it when a later lookup fails, and fails with every step when there is none.
#[test]
fn exchange_url_autodiscover_finds_caches_and_falls_back_to_the_ews_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (_sim, ews, _admin) = site_with_sim(d);
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let ews_url = format!("http://127.0.0.1:{ews}/EWS/Exchange.asmx");
    assert!(config.contains(&ews_url), "{config}");
    let with = |autodiscover_url: &str, hours: u64| {
        let text = config.replace(
            &format!("url = \"{ews_url}\""),
            &format!(
                "url = \"autodiscover\"\nautodiscover_address = \"ann@example.com\"\n\
                 autodiscover_url = \"{autodiscover_url}\"\nautodiscover_cache_hours = {hours}\n\
                 autodiscover_timeout_secs = 3"
            ),
        );
        assert_ne!(text, config, "the url line is replaced");
        std::fs::write(d.join("taskbridge.toml"), text).expect("write config");
    };
    let svc = format!("http://127.0.0.1:{ews}/autodiscover/autodiscover.svc");
    with(&svc, 24);
    let out = taskbridge(d, &["config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache: Value = serde_json::from_slice(
        &std::fs::read(d.join("taskbridge-data/autodiscover.json")).expect("cache written"),
    )
    .expect("json");
    assert_eq!(cache["address"], "ann@example.com");
    assert_eq!(cache["ews_url"], ews_url.as_str());
    let status = json_of(d, &["status", "--json"]);
    assert_eq!(status.as_array().map(Vec::len), Some(6), "{status}");

    // Autodiscover unreachable: a fresh cached URL is used without asking.
    let dead = format!(
        "http://127.0.0.1:{}/autodiscover/autodiscover.svc",
        free_port()
    );
    with(&dead, 24);
    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Autodiscover failed"));

    // A stale cache is looked up again; the lookup fails, so the URL found before is used and
    // the failure is logged.
    with(&dead, 0);
    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Autodiscover failed; using the EWS URL it found before"),
        "{err}"
    );

    // No URL known and none found: the command fails and lists the step it tried.
    std::fs::remove_file(d.join("taskbridge-data/autodiscover.json")).expect("remove cache");
    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("exchange.url = \"autodiscover\""), "{err}");
    assert!(err.contains(&format!("POST {dead} -> ")), "{err}");
}

/// `[state] url` and `[pm] url` set to `url`.
fn on_postgres(config: String, url: &str) -> String {
    let edited = config
        .replace(
            "url = \"\"\npassword_env = \"TASKBRIDGE_STATE_PASSWORD\"",
            &format!("url = \"{url}\"\npassword_env = \"TASKBRIDGE_STATE_PASSWORD\""),
        )
        .replace(
            "url = \"\"\npassword_env = \"TASKBRIDGE_PM_PASSWORD\"",
            &format!("url = \"{url}\"\npassword_env = \"TASKBRIDGE_PM_PASSWORD\""),
        );
    assert_eq!(
        edited.matches(url).count(),
        2,
        "init writes a [state] url and a [pm] url to edit"
    );
    edited
}

/// A query's single number, on a connection of its own.
fn count_in(url: &str, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client.query_one(sql, &[]).await.expect("count").get(0)
    })
}

/// The tour with both stores on PostgreSQL (`[state] url` and `[pm] url`): import, publish,
/// status, audit, updates and `serve` keep every row in the database, none in a local file, and
/// an Outlook edit arrives as a status update applied in the PM store there.
#[test]
fn with_state_and_pm_urls_set_the_tour_keeps_both_stores_in_postgres() {
    let Some(cluster) = external::postgres::Cluster::start("serve on PostgreSQL stores") else {
        return;
    };
    let url = cluster.create_database("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sim, ews, admin) = site_with_sim_configured(d, None, |c| on_postgres(c, &url));
    assert_eq!(
        count_in(&url, "SELECT count(*) FROM assignments"),
        7,
        "the import wrote the plan (seven assignments, six for mailboxes) into PostgreSQL"
    );

    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let no_local_files = || {
        for file in ["state.sqlite", "pm.sqlite"] {
            assert!(
                !d.join("taskbridge-data").join(file).exists(),
                "no {file} beside a database"
            );
        }
    };
    no_local_files();
    assert_eq!(
        count_in(
            &url,
            "SELECT count(*) FROM assignment WHERE status->>'state' = 'synced'"
        ),
        6,
        "the six assignments are rows in PostgreSQL"
    );

    let serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("serve.log")).expect("serve log"))
            .spawn()
            .expect("start serve"),
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_until("serve to be ready", Duration::from_secs(20), || {
        http("GET", &format!("{admin_url}/healthz"), None)
    });
    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    wait_until("the subscriptions", Duration::from_secs(20), || {
        let subs = get(&format!("{sim_admin}/subscriptions"))?;
        (subs.as_array()?.len() >= 3).then_some(())
    });
    let tasks = get(&format!("{sim_admin}/mailboxes/ann@example.com/tasks")).expect("tasks");
    let id = tasks.as_array().expect("array")[0]["ItemId"]["Id"]
        .as_str()
        .expect("id")
        .to_string();
    let patched = http(
        "PATCH",
        &format!("{sim_admin}/mailboxes/ann@example.com/tasks/{id}"),
        Some(r#"{"PercentComplete": 60}"#),
    );
    assert!(patched.is_some(), "the edit was refused");
    wait_until("the status update", Duration::from_secs(30), || {
        let list = json_of(d, &["updates", "--json"]);
        list.as_array()?
            .iter()
            .any(|u| u["state"] == "applied")
            .then_some(())
    });
    let audit = json_of(d, &["audit", "--json", "--field", "percent_complete"]);
    assert!(
        audit.as_array().is_some_and(|a| a.len() == 1),
        "the decision is audited in the database: {audit}"
    );
    let status = json_of(d, &["status", "--json"]);
    let lines = status.as_array().expect("array");
    assert_eq!(lines.len(), 6, "{status}");
    assert_eq!(
        count_in(
            &url,
            "SELECT count(*) FROM status_updates WHERE state = 'applied'"
        ),
        1,
        "the edit is an applied status update in the PM store on PostgreSQL"
    );
    assert_eq!(
        count_in(
            &url,
            "SELECT count(*) FROM assignments WHERE percent_work_complete = 60"
        ),
        1,
        "the plan holds the edited progress"
    );
    no_local_files();
    drop(serve);
    drop(sim);
    let log = std::fs::read_to_string(d.join("serve.log")).unwrap_or_default();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `taskbridge migrate --to URL` copies both SQLite stores (state and PM) into PostgreSQL,
/// after which the same configuration pointed at the database shows the same status, projects
/// and updates; a database that holds either store is refused without `--force`.
#[test]
fn migrate_copies_both_sqlite_stores_into_postgres_and_refuses_a_full_target() {
    let Some(cluster) = external::postgres::Cluster::start("taskbridge migrate to PostgreSQL")
    else {
        return;
    };
    let url = cluster.create_database("migrate");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sim, _ews, _admin) = site_with_sim(d);
    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = json_of(d, &["status", "--json"]);
    assert_eq!(before.as_array().map(Vec::len), Some(6), "{before}");
    let projects_before = json_of(d, &["projects", "--json"]);
    assert_eq!(projects_before.as_array().map(Vec::len), Some(1));

    let out = taskbridge(d, &["migrate", "--to", "sqlite:///tmp/x"]);
    assert_eq!(out.status.code(), Some(2), "only PostgreSQL is a target");

    let out = taskbridge(d, &["migrate", "--to", &url]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("copied 6 assignments, 3 mailboxes"), "{said}");
    assert!(
        said.contains("copied the PM store") && said.contains("1 projects, "),
        "{said}"
    );
    assert_eq!(count_in(&url, "SELECT count(*) FROM assignments"), 7);
    let out = taskbridge(d, &["migrate", "--to", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("already holds sync state and a PM store; --force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = taskbridge(d, &["migrate", "--to", &url, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        count_in(&url, "SELECT count(*) FROM assignments"),
        7,
        "--force replaced the copy instead of adding a second one"
    );

    // The configuration pointed at the database: the same status and projects, read from
    // PostgreSQL.
    std::fs::remove_file(d.join("taskbridge-data/state.sqlite")).expect("remove the file");
    std::fs::remove_file(d.join("taskbridge-data/pm.sqlite")).expect("remove the file");
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    std::fs::write(d.join("taskbridge.toml"), on_postgres(config, &url)).expect("write config");
    let after = json_of(d, &["status", "--json"]);
    assert_eq!(after, before);
    assert_eq!(json_of(d, &["projects", "--json"]), projects_before);
    drop(sim);
}

/// `[listener] mode = "streaming"` (set here through its environment variable): `serve`
/// subscribes streaming, listens on no notification port, holds a GetStreamingEvents
/// connection to the simulator, and an owner's edit arrives as an applied status update.
#[test]
fn serve_in_streaming_mode_brings_an_edit_over_a_held_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (_sim, ews, admin) = site_with_sim(d);
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let listen = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|rest| rest.trim_end_matches('"').parse::<u16>().ok())
        .expect("the listener's port in the configuration");
    let mut serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_LISTENER_MODE", "streaming")
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_until("serve to be ready", Duration::from_secs(20), || {
        http("GET", &format!("{admin_url}/healthz"), None)
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "nothing listens for push notifications"
    );
    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    wait_until(
        "three streaming subscriptions and a connection",
        Duration::from_secs(20),
        || {
            let subs = get(&format!("{sim_admin}/subscriptions"))?;
            let subs = subs.as_array()?;
            let counters = get(&format!("{sim_admin}/counters"))?;
            (subs.len() >= 3
                && subs.iter().all(|s| s["kind"] == "streaming")
                && counters["operations"]["GetStreamingEvents"].as_u64() >= Some(1))
            .then_some(())
        },
    );
    let task = wait_until("the published task", Duration::from_secs(20), || {
        let tasks = get(&format!("{sim_admin}/mailboxes/ann@example.com/tasks"))?;
        tasks.as_array()?.first().cloned()
    });
    let id = task["ItemId"]["Id"].as_str().expect("id");
    let patched = http(
        "PATCH",
        &format!("{sim_admin}/mailboxes/ann@example.com/tasks/{id}"),
        Some(r#"{"PercentComplete": 60}"#),
    );
    assert!(patched.is_some(), "the edit was refused");
    let update = wait_until("the status update", Duration::from_secs(20), || {
        let list = json_of(d, &["updates", "--json"]);
        list.as_array()?
            .iter()
            .find(|u| u["state"] == "applied")
            .cloned()
    });
    assert_eq!(update["source"]["mailbox"], "ann@example.com");
    let counters = get(&format!("{sim_admin}/counters")).expect("counters");
    assert_eq!(
        counters["operations"]["GetEvents"].as_u64().unwrap_or(0),
        0,
        "no polling"
    );
    let pid = serve.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let code = wait_until("serve to stop", Duration::from_secs(20), || {
        serve.0.try_wait().ok().flatten()
    });
    assert!(code.success(), "serve exited with {code}");
}

/// Streaming with `url = "autodiscover"`: `serve` asks the simulator's SOAP Autodiscover for
/// the published mailboxes' GroupingInformation (kept in `autodiscover-groups.json`) and
/// anchors every Subscribe of a group on the group's first mailbox, so the group's
/// subscriptions are held by one backend.
#[test]
fn serve_in_streaming_mode_anchors_each_group_from_grouping_information() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sim, ews, admin) = site_with_sim(d);
    drop(sim);
    let password = std::fs::read_to_string(d.join("taskbridge-data/exchange.password"))
        .expect("password written by init");
    let _sim = start_sim_with(d, ews, password.trim(), &["--backends", "2"]);
    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    // Ann and Chen on backend 0, Bob on backend 1.
    for (mailbox, backend) in [
        ("ann@example.com", 0),
        ("bob@example.com", 1),
        ("chen@example.com", 0),
    ] {
        let moved = http(
            "PUT",
            &format!("{sim_admin}/mailboxes/{mailbox}/backend"),
            Some(&format!("{{\"backend\": {backend}}}")),
        );
        assert!(moved.is_some(), "move {mailbox}");
    }
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let ews_url = format!("http://127.0.0.1:{ews}/EWS/Exchange.asmx");
    let text = config.replace(
        &format!("url = \"{ews_url}\""),
        &format!(
            "url = \"autodiscover\"\nautodiscover_address = \"ann@example.com\"\n\
             autodiscover_url = \"http://127.0.0.1:{ews}/autodiscover/autodiscover.svc\"\n\
             autodiscover_timeout_secs = 3"
        ),
    );
    assert_ne!(text, config, "the url line is replaced");
    std::fs::write(d.join("taskbridge.toml"), text).expect("write config");
    // Published first, so that serve knows the mailboxes when it starts.
    let out = taskbridge(d, &["publish", "Harbour Bridge Refit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut serve = Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_LISTENER_MODE", "streaming")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("serve.log")).expect("serve log"))
            .spawn()
            .expect("start serve"),
    );
    wait_until("serve to be ready", Duration::from_secs(20), || {
        http("GET", &format!("http://127.0.0.1:{admin}/healthz"), None)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let subs = loop {
        let subs = get(&format!("{sim_admin}/subscriptions"))
            .and_then(|s| s.as_array().cloned())
            .unwrap_or_default();
        if subs.len() == 3 {
            break subs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for three subscriptions: {subs:?}\nserve said: {}",
            std::fs::read_to_string(d.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let of = |m: &str| {
        subs.iter()
            .find(|s| s["mailbox"] == m)
            .cloned()
            .unwrap_or_else(|| panic!("a subscription of {m}: {subs:?}"))
    };
    assert_eq!(of("ann@example.com")["anchor"], "ann@example.com");
    assert_eq!(of("chen@example.com")["anchor"], "ann@example.com");
    assert_eq!(of("chen@example.com")["backend"], 0);
    assert_eq!(of("bob@example.com")["anchor"], "bob@example.com");
    assert_eq!(of("bob@example.com")["backend"], 1);
    let groups: Value = serde_json::from_slice(
        &std::fs::read(d.join("taskbridge-data/autodiscover-groups.json")).expect("groups cached"),
    )
    .expect("json");
    let key = |m: &str| groups["groups"][m].as_str().unwrap_or_default().to_string();
    assert!(key("ann@example.com").starts_with("MBX01|"), "{groups}");
    assert!(key("bob@example.com").starts_with("MBX02|"), "{groups}");
    assert_eq!(key("ann@example.com"), key("chen@example.com"));
    // The mailboxes were known at start: one round of publishing every project, not a second
    // one for the first lease round's request (which read every row and the plan again).
    wait_until("the start-up publish", Duration::from_secs(20), || {
        std::fs::read_to_string(d.join("serve.log"))
            .ok()
            .filter(|log| log.contains("published"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http("GET", &format!("http://127.0.0.1:{admin}/metrics"), None).expect("metrics");
    assert!(
        metrics.contains("taskbridge_publish_rounds_total 1\n"),
        "{metrics}\nserve said: {}",
        std::fs::read_to_string(d.join("serve.log")).unwrap_or_default()
    );
    let pid = serve.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let code = wait_until("serve to stop", Duration::from_secs(20), || {
        serve.0.try_wait().ok().flatten()
    });
    assert!(code.success(), "serve exited with {code}");
}
