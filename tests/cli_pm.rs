//! The built `taskbridge` binary against the embedded PM store: `import`, `projects` and
//! `updates`, their `--json` output and their exit codes (0 ok, 1 failure, 2 usage).

mod external;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use taskbridge::pm::embedded::EmbeddedHost;
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, Percent, StatusUpdate,
    UpdateOutcome, UpdateSource,
};

const GUID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

fn store_hash(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        format!("{:x}", Sha256::digest(bytes)),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn import_edge(dir: &Path, extra: &[&str]) -> Output {
    let file = fixture("mspdi/edge-cases.xml");
    let mut args = vec!["import", file.as_str(), "--time-zone", "Europe/Berlin"];
    args.extend_from_slice(extra);
    taskbridge(dir, &args)
}

#[test]
fn import_prints_the_guid_then_a_json_report_on_reimport() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let output = import_edge(&data, &[]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output), format!("{GUID}\n"));
    assert!(stderr(&output).contains("9 added"), "{}", stderr(&output));
    assert!(data.join(EmbeddedHost::FILE_NAME).is_file());

    let output = import_edge(&data, &["--json"]);
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["project"], GUID);
    assert_eq!(report["created"], false);
    assert_eq!(report["unchanged"], 9);
    assert_eq!(report["mailbox_assignments"], 3);

    // A JSON project, and a GUID-less MSPDI file with --guid.
    let output = taskbridge(&data, &["import", &fixture("projects/sample.json")]);
    assert_code(&output, 0);
    let output = taskbridge(
        &data,
        &[
            "import",
            &fixture("mspdi/project2007.xml"),
            "--guid",
            "{A0000000-0000-4000-8000-000000000007}",
        ],
    );
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "a0000000-0000-4000-8000-000000000007\n");
}

#[test]
fn import_broken_file_fails_and_leaves_the_store_byte_identical() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    assert_code(&import_edge(&data, &[]), 0);
    let before = store_hash(&data);
    assert!(!before.is_empty());
    for name in [
        "mspdi/broken-duration.xml",
        "mspdi/broken-truncated.xml",
        "mspdi/broken-unknown-task.xml",
    ] {
        let output = taskbridge(&data, &["import", &fixture(name)]);
        assert_code(&output, 1);
        assert!(stdout(&output).is_empty());
        assert!(
            stderr(&output).starts_with("error: cannot import") && stderr(&output).contains("line"),
            "{name}: {}",
            stderr(&output)
        );
        assert_eq!(store_hash(&data), before, "{name}");
    }
    // A broken file into a fresh directory creates no store at all.
    let fresh = dir.path().join("fresh");
    assert_code(
        &taskbridge(&fresh, &["import", &fixture("mspdi/broken-doctype.xml")]),
        1,
    );
    assert!(!fresh.exists());
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let edge = fixture("mspdi/edge-cases.xml");
    for args in [
        vec!["import", edge.as_str(), "--time-zone", "Mars/Olympus_Mons"],
        vec!["import", edge.as_str(), "--guid", "not-a-guid"],
        vec!["import", edge.as_str(), "--policy", "sometimes"],
        // The file has its own GUID.
        vec![
            "import",
            edge.as_str(),
            "--guid",
            "a0000000-0000-4000-8000-000000000001",
        ],
        // No store yet.
        vec!["projects"],
        vec!["updates", "--pending"],
        vec!["updates", "--pending", "--state", "applied"],
    ] {
        let output = taskbridge(&data, &args);
        assert_code(&output, 2);
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    assert!(!data.exists(), "no command above creates the store");
    // A missing file is a failure of the run, not of the usage.
    assert_code(&taskbridge(&data, &["import", "/no/such/file.xml"]), 1);
}

#[test]
fn projects_lists_shows_sets_policy_and_publishes() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    assert_code(&import_edge(&data, &[]), 0);

    let output = taskbridge(&data, &["projects", "--json"]);
    assert_code(&output, 0);
    let list = json(&output);
    assert_eq!(list[0]["guid"], GUID);
    assert_eq!(list[0]["policy"], "auto");
    assert_eq!(list[0]["assignments"], 9);

    let output = taskbridge(&data, &["projects"]);
    assert_code(&output, 0);
    assert!(stdout(&output).contains(GUID));
    assert!(stdout(&output).starts_with("GUID"));

    let output = taskbridge(&data, &["projects", "set-policy", GUID, "approval"]);
    assert_code(&output, 0);
    assert!(stdout(&output).is_empty());
    let output = taskbridge(&data, &["projects", "--json"]);
    assert_eq!(json(&output)[0]["policy"], "approval");

    let output = taskbridge(&data, &["projects", "show", GUID, "--json"]);
    assert_code(&output, 0);
    let project = json(&output);
    assert_eq!(project["time_zone"], "Europe/Berlin");
    assert_eq!(project["resources"][1]["name"], "佐藤 健二");
    let output = taskbridge(&data, &["projects", "show", GUID]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("Zoë Müller"));
    // Columns start where their header does, whatever the length of the names before them;
    // work is in hours.
    let lines: Vec<Vec<char>> = text.lines().skip(1).map(|l| l.chars().collect()).collect();
    let header: String = lines[0].iter().collect();
    for column in ["TASK", "RESOURCE", "MAILBOX"] {
        let at = header.find(column).expect("a column"); // ASCII header: bytes are chars
        for row in &lines[1..] {
            assert!(
                row[at - 1] == ' ' && row[at] != ' ',
                "{column} shifted in {:?}\n{text}",
                row.iter().collect::<String>()
            );
        }
    }
    assert!(text.contains("h "), "work in hours: {text}");
    assert!(!text.contains(" min"), "{text}");

    // A project by the start of its GUID or by its name.
    let name = list[0]["name"].as_str().expect("a name").to_string();
    for by in [&GUID[..6], name.as_str()] {
        let output = taskbridge(&data, &["projects", "show", by, "--json"]);
        assert_code(&output, 0);
        assert_eq!(json(&output)["guid"], GUID);
    }

    assert_code(&taskbridge(&data, &["projects", "publish", GUID]), 0);
    // An unknown project is a usage error naming it, with the closest names.
    let unknown = "b0000000-0000-4000-8000-000000000002";
    for args in [
        vec!["projects", "publish", unknown],
        vec!["projects", "show", unknown],
        vec!["projects", "set-policy", unknown, "auto"],
        vec!["export", unknown],
    ] {
        let output = taskbridge(&data, &args);
        assert_code(&output, 2);
        assert!(
            stderr(&output).starts_with(&format!("error: unknown project \"{unknown}\"")),
            "{}",
            stderr(&output)
        );
    }
    let typo: String = name.chars().skip(1).collect();
    let output = taskbridge(&data, &["projects", "show", &typo]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains(&format!("closest: {name:?}")),
        "{}",
        stderr(&output)
    );
}

fn percent(uid: i64, change_key: &str, to: u8) -> StatusUpdate {
    StatusUpdate {
        key: AssignmentKey {
            project: GUID.parse().expect("valid guid"),
            assignment: AssignmentUid(uid),
        },
        changes: vec![FieldChange {
            field: AssignmentField::PercentWorkComplete,
            old: FieldValue::Percent(Percent::ZERO),
            new: FieldValue::Percent(Percent::new(to).expect("in range")),
        }],
        source: UpdateSource {
            mailbox: "zoe.mueller@example.de".into(),
            item_id: format!("AAMk-{uid}"),
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

/// Submits updates as the connector would, from this process.
fn submit(data: &Path, updates: Vec<StatusUpdate>) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let host = EmbeddedHost::open_existing(data).await.expect("opens");
        let mut ids = Vec::new();
        for update in updates {
            match host.submit(update).await.expect("accepted") {
                UpdateOutcome::Pending { id } => ids.push(id.0),
                other => panic!("expected Pending, got {other:?}"),
            }
        }
        host.close().await;
        ids
    })
}

#[test]
fn updates_lists_approves_and_rejects_with_json() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    assert_code(&import_edge(&data, &["--policy", "approval"]), 0);
    let ids = submit(&data, vec![percent(3, "ck-1", 50), percent(1, "ck-2", 100)]);

    let output = taskbridge(&data, &["updates", "--pending", "--json"]);
    assert_code(&output, 0);
    let pending = json(&output);
    assert_eq!(pending.as_array().map(Vec::len), Some(2));
    assert_eq!(pending[0]["id"], ids[0].as_str());
    assert_eq!(pending[0]["task_name"], "Wiring");
    // People see a header, short ids as git prints them, and field names in words.
    let output = taskbridge(&data, &["updates"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("DECIDED BY"),
        "{text}"
    );
    assert!(lines[2].starts_with(&ids[1][..8]), "{text}");
    assert!(
        !text.contains(&ids[1]),
        "the whole id is for --json: {text}"
    );
    assert!(text.contains("% complete 0% -> 100%"), "{text}");

    // A unique start of an id names the update.
    let output = taskbridge(
        &data,
        &[
            "updates",
            "approve",
            &ids[0][..6],
            "--by",
            "Status Manager",
            "--json",
        ],
    );
    assert_code(&output, 0);
    let outcome = json(&output);
    assert_eq!(outcome["outcome"], "applied");
    assert_eq!(outcome["assignment"]["actual_work"], 6 * 3600);
    assert!(stderr(&output).contains("applied"));

    let output = taskbridge(
        &data,
        &[
            "updates",
            "reject",
            &ids[1],
            "--reason",
            "noch nicht fertig",
            "--json",
        ],
    );
    assert_code(&output, 0);
    let outcome = json(&output);
    assert_eq!(outcome["outcome"], "rejected");
    assert_eq!(outcome["reason"], "noch nicht fertig");

    let output = taskbridge(&data, &["updates", "--json"]);
    let all = json(&output);
    let states: Vec<&str> = all
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|u| u["state"].as_str())
        .collect();
    assert_eq!(states, ["applied", "rejected"]);
    assert_eq!(all[0]["decider"], "Status Manager");
    let output = taskbridge(&data, &["updates", "--state", "rejected", "--json"]);
    assert_eq!(json(&output).as_array().map(Vec::len), Some(1));
    // The project by the start of its GUID, or by its name.
    let output = taskbridge(&data, &["projects", "--json"]);
    let name = json(&output)[0]["name"].as_str().expect("name").to_string();
    for by in [&GUID[..4], name.as_str()] {
        let output = taskbridge(&data, &["updates", "--project", by, "--json"]);
        assert_code(&output, 0);
        assert_eq!(json(&output).as_array().map(Vec::len), Some(2), "{by}");
    }
    let output = taskbridge(&data, &["updates", "--project", "no such plan"]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("unknown project"),
        "{}",
        stderr(&output)
    );
    let output = taskbridge(&data, &["updates", "--pending", "--json"]);
    assert_eq!(json(&output), serde_json::json!([]));

    let output = taskbridge(&data, &["updates"]);
    let text = stdout(&output);
    assert!(
        text.contains("Status Manager") && text.contains("reason: noch nicht fertig"),
        "decider and reason: {text}"
    );

    // An unknown id is a usage error that says how to list them.
    let output = taskbridge(&data, &["updates", "approve", "no-such-id"]);
    assert_code(&output, 2);
    assert_eq!(
        stderr(&output).trim(),
        "error: unknown update \"no-such-id\" (run `taskbridge updates` to list them)"
    );
    // Deciding again is a failure (exit 1) with one error line.
    for args in [
        vec!["updates", "approve", ids[0].as_str()],
        vec!["updates", "reject", ids[1].as_str()],
    ] {
        let output = taskbridge(&data, &args);
        assert_code(&output, 1);
        assert!(
            stderr(&output).starts_with("error: "),
            "{}",
            stderr(&output)
        );
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    }
}

/// Observation 5 from the command line: approving an update the plan has moved past fails
/// (exit 1) naming the field and both values; `--force` applies it.
#[test]
fn updates_approve_of_a_stale_update_fails_unless_forced() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    assert_code(&import_edge(&data, &["--policy", "approval"]), 0);
    let ids = submit(&data, vec![percent(3, "ck-1", 50)]);
    // The planner sets 30 % after the update was submitted.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let host = EmbeddedHost::open_existing(&data).await.expect("opens");
        let mut p = host
            .load_project(GUID.parse().expect("guid"))
            .await
            .expect("loads")
            .expect("project");
        p.assignment_mut(AssignmentUid(3))
            .expect("assignment 3")
            .apply_percent(Percent::new(30).expect("in range"));
        host.import(p).await.expect("re-imports");
        host.close().await;
    });
    let output = taskbridge(&data, &["updates", "approve", &ids[0]]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert!(
        err.contains("PercentWorkComplete") && err.contains("0%") && err.contains("30%"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    let output = taskbridge(&data, &["updates", "--pending", "--json"]);
    assert_eq!(
        json(&output).as_array().map(Vec::len),
        Some(1),
        "still pending"
    );

    let output = taskbridge(&data, &["updates", "approve", &ids[0], "--force", "--json"]);
    assert_code(&output, 0);
    assert_eq!(json(&output)["assignment"]["percent_work_complete"], 50);
    let output = taskbridge(&data, &["updates", "--json"]);
    let all = json(&output);
    assert!(
        all[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("forced") && r.contains("30%")),
        "{all}"
    );
    // The list shows what was applied, in hours.
    let output = taskbridge(&data, &["updates"]);
    assert!(
        stdout(&output).contains("actual work = 6h"),
        "{}",
        stdout(&output)
    );
}

/// A status note alone changes no value; `updates` and `projects show` show it.
#[test]
fn status_note_is_shown_by_updates_and_projects_show() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    assert_code(&import_edge(&data, &["--policy", "approval"]), 0);
    let mut update = percent(3, "ck-note", 0);
    update.changes.clear();
    update.status_note = Some(taskbridge::pm::StatusNoteChange {
        old: None,
        new: Some("WaitingOnOthers".into()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let host = EmbeddedHost::open_existing(&data).await.expect("opens");
        let outcome = host.submit(update).await.expect("accepted");
        assert!(
            matches!(outcome, UpdateOutcome::Applied { .. }),
            "a note needs no approval: {outcome:?}"
        );
        host.close().await;
    });
    let output = taskbridge(&data, &["updates"]);
    assert_code(&output, 0);
    assert!(
        stdout(&output).contains("status note none -> WaitingOnOthers"),
        "{}",
        stdout(&output)
    );
    let output = taskbridge(&data, &["projects", "show", GUID]);
    assert_code(&output, 0);
    let line = stdout(&output)
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.ends_with("WaitingOnOthers"), "{}", stdout(&output));
}

/// Logs are in colour on a terminal (a pseudo-terminal made by `script`), not with `NO_COLOR`
/// set, and never in a pipe.
#[test]
fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        external::not_checked(
            "log colour on a terminal",
            "script (util-linux)",
            "apt-get install -y bsdutils",
        );
        return;
    }
    let dir = TempDir::new().expect("temp dir");
    // A fresh store logs the schema it creates at DEBUG.
    let on_terminal = |data: &str, no_color: bool| -> String {
        let command = format!(
            "{} --data-dir {} import {}",
            env!("CARGO_BIN_EXE_taskbridge"),
            dir.path().join(data).display(),
            fixture("mspdi/edge-cases.xml")
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env("TASKBRIDGE_LOG", "debug")
            .env_remove("TASKBRIDGE_DATA_DIR");
        if no_color {
            script.env("NO_COLOR", "1");
        } else {
            script.env_remove("NO_COLOR");
        }
        let out = script.output().expect("script runs");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let coloured = on_terminal("a", false);
    assert!(coloured.contains("DEBUG"), "{coloured}");
    assert!(
        coloured.contains("\u{1b}["),
        "colour on a terminal: {coloured}"
    );
    let plain = on_terminal("b", true);
    assert!(plain.contains("DEBUG"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain}");
    let piped = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .arg("--data-dir")
        .arg(dir.path().join("c"))
        .args(["import", &fixture("mspdi/edge-cases.xml")])
        .env("TASKBRIDGE_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .expect("runs");
    assert!(stderr(&piped).contains("DEBUG"), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains('\u{1b}'), "{}", stderr(&piped));
}
