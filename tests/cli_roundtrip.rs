//! The built `taskbridge` binary for the plan round trip: `import --dry-run`, the `--guid`
//! advice for a file without a project GUID, and `export`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

const SAMPLE_GUID: &str = "7d0c3e5a-9b21-4f6e-8a47-1c2d3e4f5a6b";

fn path_of(relative: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(relative)
        .display()
        .to_string()
}

/// Runs the binary with `--data-dir dir`.
fn taskbridge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("TASKBRIDGE_LOG", "warn")
        .env_remove("TASKBRIDGE_DATA_DIR")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn import_dry_run_previews_creates_and_field_changes_and_writes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let sample = path_of("examples/sample-project.xml");
    // Before any store exists: every assignment would be created, and no store appears.
    let out = taskbridge(&data, &["import", &sample, "--dry-run"]);
    assert_code(&out, 0);
    assert!(
        text(&out.stdout).contains("create assignment 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(!data.exists(), "a dry run created the store");

    assert_code(
        &taskbridge(&data, &["import", &sample, "--time-zone", "Europe/Berlin"]),
        0,
    );
    let store = std::fs::read(data.join("pm.sqlite")).expect("store");
    let edited = std::fs::read_to_string(&sample).expect("sample").replace(
        "<Work>PT40H0M0S</Work></Assignment>",
        "<Work>PT48H0M0S</Work></Assignment>",
    );
    let file = dir.path().join("plan-v2.xml");
    std::fs::write(&file, edited).expect("writable");
    let file = file.display().to_string();
    let out = taskbridge(
        &data,
        &["import", &file, "--time-zone", "Europe/Berlin", "--dry-run"],
    );
    assert_code(&out, 0);
    let preview = text(&out.stdout);
    assert!(
        preview.contains("update assignment 3 Work: 40.00h -> 48.00h"),
        "{preview}"
    );
    assert!(
        text(&out.stderr).contains("would update"),
        "{}",
        text(&out.stderr)
    );
    let out = taskbridge(
        &data,
        &[
            "import",
            &file,
            "--time-zone",
            "Europe/Berlin",
            "--dry-run",
            "--json",
        ],
    );
    assert_code(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["changed"], 1);
    assert_eq!(report["lowered_progress"], serde_json::json!([]));
    assert_eq!(
        std::fs::read(data.join("pm.sqlite")).expect("store"),
        store,
        "a dry run wrote to the store"
    );
}

#[test]
fn file_without_a_project_guid_is_refused_naming_guid_with_a_suggestion() {
    let dir = TempDir::new().expect("temp dir");
    let out = taskbridge(
        dir.path(),
        &["import", &path_of("fixtures/mspdi/project2007.xml")],
    );
    assert_code(&out, 2);
    let message = text(&out.stderr);
    assert!(message.contains("--guid"), "{message}");
    // The suggestion is a GUID that works as given.
    let suggested = message
        .rsplit("--guid ")
        .next()
        .map(str::trim)
        .expect("a suggestion");
    assert!(suggested.parse::<uuid::Uuid>().is_ok(), "{message}");
    let out = taskbridge(
        dir.path(),
        &[
            "import",
            &path_of("fixtures/mspdi/project2007.xml"),
            "--guid",
            suggested,
        ],
    );
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout).trim(), suggested);
}

#[test]
fn export_writes_mspdi_and_json_that_import_back_unchanged() {
    let dir = TempDir::new().expect("temp dir");
    let sample = path_of("examples/sample-project.xml");
    assert_code(
        &taskbridge(
            dir.path(),
            &["import", &sample, "--time-zone", "Europe/Berlin"],
        ),
        0,
    );
    // Nothing changed since the import: the MSPDI export is the imported file itself.
    let out = taskbridge(dir.path(), &["export", SAMPLE_GUID]);
    assert_code(&out, 0);
    let original = std::fs::read_to_string(&sample).expect("sample");
    assert_eq!(text(&out.stdout).trim_end(), original.trim_end());
    let json_file = dir.path().join("out").join("plan.json");
    std::fs::create_dir_all(json_file.parent().expect("dir")).expect("dir");
    let json_path = json_file.display().to_string();
    let out = taskbridge(
        dir.path(),
        &["export", SAMPLE_GUID, "--format", "json", "-o", &json_path],
    );
    assert_code(&out, 0);
    let names: Vec<_> = std::fs::read_dir(json_file.parent().expect("dir"))
        .expect("listable")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("plan.json")],
        "no temporary file left"
    );
    let out = taskbridge(dir.path(), &["import", &json_path, "--json"]);
    assert_code(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["changed"], 0, "{report}");
    assert_eq!(report["added"], 0, "{report}");
    assert_eq!(report["removed"], 0, "{report}");
    // An unknown project is a usage error that names it.
    let out = taskbridge(
        dir.path(),
        &["export", "11111111-2222-4333-8444-555555555555"],
    );
    assert_code(&out, 2);
    assert!(
        text(&out.stderr).contains("unknown project"),
        "{}",
        text(&out.stderr)
    );
    // The project by its name.
    let out = taskbridge(dir.path(), &["export", "Harbour Bridge Refit"]);
    assert_code(&out, 0);
    assert!(
        text(&out.stdout).contains("<GUID>7D0C3E5A-9B21-4F6E-8A47-1C2D3E4F5A6B</GUID>"),
        "{}",
        text(&out.stdout)
    );
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The tasks of a mailbox, as the simulator's admin API lists them.
fn sim_tasks(ews: u16, mailbox: &str) -> Vec<Value> {
    taskbridge::ews::transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::get(format!(
            "http://127.0.0.1:{ews}/sim/mailboxes/{mailbox}/tasks"
        ))
        .await
        .expect("admin API")
        .json()
        .await
        .expect("JSON")
    })
}

/// Runs the binary in `dir` (where `taskbridge.toml` is), without `--data-dir`.
fn in_dir(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .current_dir(dir)
        .args(args)
        .env("TASKBRIDGE_LOG", "warn")
        .env_remove("TASKBRIDGE_DATA_DIR")
        .env_remove("TASKBRIDGE_CONFIG")
        .output()
        .expect("the binary runs")
}

/// `init` in `d` with free ports, and the simulator with three mailboxes as a child process.
/// Returns the simulator and its port, and the admin port.
fn init_with_sim(d: &Path) -> (Kill, u16, u16) {
    use std::io::{BufRead, BufReader};

    assert_code(&in_dir(d, &["init"]), 0);
    let (ews, listen, admin) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(d.join("taskbridge.toml"))
        .expect("config")
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{ews}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{admin}"));
    std::fs::write(d.join("taskbridge.toml"), config).expect("write config");
    let password = std::fs::read_to_string(d.join("taskbridge-data/exchange.password"))
        .expect("password written by init");
    let mut sim = Kill(
        Command::new(env!("CARGO_BIN_EXE_taskbridge"))
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
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sim"),
    );
    let mut first = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("sim prints its URL");
    (sim, ews, admin)
}

#[test]
fn projects_remove_against_the_simulator_leaves_no_task_and_no_row() {
    let dir = TempDir::new().expect("temp dir");
    let d = dir.path();
    let (sim, ews, _) = init_with_sim(d);
    let sample = path_of("examples/sample-project.xml");
    assert_code(
        &in_dir(d, &["import", &sample, "--time-zone", "Europe/Berlin"]),
        0,
    );
    assert_code(&in_dir(d, &["publish", SAMPLE_GUID]), 0);
    let mailboxes = ["ann@example.com", "bob@example.com", "chen@example.com"];
    let count = || {
        mailboxes
            .iter()
            .map(|m| sim_tasks(ews, m).len())
            .sum::<usize>()
    };
    assert_eq!(count(), 6);

    let out = in_dir(
        d,
        &["projects", "remove", SAMPLE_GUID, "--dry-run", "--json"],
    );
    assert_code(&out, 0);
    let preview: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        preview["mailboxes"]["deleted"]["bob@example.com"], 2,
        "{preview}"
    );
    assert_eq!(count(), 6, "a dry run deleted tasks");

    let out = in_dir(d, &["projects", "remove", SAMPLE_GUID]);
    assert_code(&out, 0);
    assert_eq!(count(), 0, "a task of the project is left in a mailbox");
    let out = in_dir(d, &["projects", "--json"]);
    assert_code(&out, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        serde_json::json!([])
    );
    let out = in_dir(d, &["status", "--json"]);
    assert_code(&out, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        serde_json::json!([])
    );
    let out = in_dir(d, &["audit", "--json"]);
    assert_code(&out, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        serde_json::json!([])
    );
    drop(sim);
}

/// One HTTP request to the simulator's admin API; `None` unless it got a 2xx answer.
fn http(method: &str, url: &str, body: Option<&str>) -> Option<String> {
    taskbridge::ews::transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut req = reqwest::Client::new().request(method, url);
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

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn serve_watch_publishes_a_saved_plan_and_writes_the_progress_beside_it() {
    let dir = TempDir::new().expect("temp dir");
    let d = dir.path();
    let (sim, ews, admin) = init_with_sim(d);
    let plans = d.join("plans");
    std::fs::create_dir(&plans).expect("plans dir");
    let serve = Kill(
        Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .current_dir(d)
            .args(["serve", "--watch", "plans"])
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .env_remove("TASKBRIDGE_DATA_DIR")
            .env_remove("TASKBRIDGE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    wait_until("serve to be ready", || {
        http("GET", &format!("http://127.0.0.1:{admin}/healthz"), None)
    });
    // The PM saves the plan into the folder (here: a copy, written in one go).
    let text = std::fs::read_to_string(path_of("examples/sample-project.xml")).expect("sample");
    std::fs::write(plans.join("bridge.xml"), text).expect("writable");
    let sim_admin = format!("http://127.0.0.1:{ews}/sim");
    let task = wait_until("the published task", || {
        sim_tasks(ews, "ann@example.com").into_iter().find(|t| {
            t["Subject"]
                .as_str()
                .is_some_and(|s| s.ends_with("Survey the north abutment"))
        })
    });
    wait_until("the subscriptions", || {
        let subs: Value =
            serde_json::from_str(&http("GET", &format!("{sim_admin}/subscriptions"), None)?)
                .ok()?;
        (subs.as_array()?.len() >= 3).then_some(())
    });
    let id = task["ItemId"]["Id"].as_str().expect("id");
    let encoded: String = id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    assert!(
        http(
            "PATCH",
            &format!("{sim_admin}/mailboxes/ann@example.com/tasks/{encoded}"),
            Some(r#"{"PercentComplete": 60}"#),
        )
        .is_some(),
        "the edit was refused"
    );
    let exported = wait_until("the exported plan with the progress", || {
        let text = std::fs::read_to_string(plans.join("bridge.taskbridge.xml")).ok()?;
        text.contains("<PercentWorkComplete>60</PercentWorkComplete>")
            .then_some(text)
    });
    assert!(
        exported.contains("<ActualWork>PT14H24M0S</ActualWork>"),
        "{exported}"
    );
    drop(serve);
    drop(sim);
}
