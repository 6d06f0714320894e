//! A real Redmine for the tests: Redmine 5 from Debian's packages, started (or found running) by
//! `scripts/redmine.sh start`, which writes the URL and the admin's API key to files. Every test
//! makes its own users, project and issues through the REST API ([`Redmine`]), with names no
//! other test uses, so tests do not depend on each other or on what earlier runs left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::not_checked;

/// How to get Redmine on this machine.
pub const INSTALL_REDMINE: &str = "sudo scripts/redmine.sh start (installs Redmine 5 from \
                                   Debian's packages: apt-get install -y redmine redmine-sqlite \
                                   ruby-webrick)";

/// A running Redmine, as its administrator.
#[derive(Clone, Debug)]
pub struct Redmine {
    /// Its URL.
    pub url: String,
    /// The admin's API key.
    pub key: String,
    http: reqwest::Client,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redmine.sh")
}

fn state_dir() -> PathBuf {
    std::env::var_os("TASKBRIDGE_REDMINE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/taskbridge-redmine"))
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "redmine"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
}

/// Held by each test that uses Redmine: Redmine on SQLite takes one writer at a time and
/// answers 500 to the others, so the tests of a binary take turns.
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts Redmine once per test process (or finds it running).
fn started() -> Result<(String, String), String> {
    static STARTED: OnceLock<Result<(String, String), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let running = Command::new("bash")
                .arg(script())
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success());
            if !running {
                if !installed() && !super::require_all() {
                    return Err("not installed".into());
                }
                let out = Command::new("bash")
                    .arg(script())
                    .arg("start")
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "scripts/redmine.sh start failed:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            let dir = state_dir();
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("{}: {e}", dir.join(name).display()))
            };
            Ok((read("url")?, read("api.key")?))
        })
        .clone()
}

impl Redmine {
    /// Redmine, started if needed; `None` (reported as not checking `what`, a failure under
    /// `TASKBRIDGE_TEST_REQUIRE_ALL`) when it is not installed.
    pub fn start(what: &str) -> Option<Redmine> {
        match started() {
            Ok((url, key)) => Some(Redmine {
                // reqwest is built without a TLS provider (loopback HTTP needs none, but the
                // client will not build without one).
                http: {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    reqwest::Client::new()
                },
                url,
                key,
            }),
            Err(e) if e == "not installed" => {
                not_checked(what, "Redmine", INSTALL_REDMINE);
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// One API call as the admin (or as `switch_user`): the status and the JSON answer.
    pub async fn call_as(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        switch_user: Option<&str>,
    ) -> (u16, Value) {
        // Redmine on SQLite may answer 500 while the database is locked by another writer (the
        // host's own poll, another test binary): a read is tried again. A write is not, since
        // part of it may have been committed.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .header("X-Redmine-API-Key", &self.key);
            if let Some(u) = switch_user {
                req = req.header("X-Redmine-Switch-User", u);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("Redmine answers");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            if status == 500 && method == reqwest::Method::GET && attempt <= 10 {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                continue;
            }
            let value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            return (status, value);
        }
    }

    /// A call that must succeed.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call_as(method, path, body, None).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A user with this login and e-mail address; its id.
    pub async fn user(&self, login: &str, mail: &str) -> i64 {
        let v = self
            .call(
                reqwest::Method::POST,
                "/users.json",
                Some(json!({"user": {
                    "login": login, "firstname": login, "lastname": "Tester",
                    "mail": mail, "password": "secret-password-1",
                    "must_change_passwd": false
                }})),
            )
            .await;
        v["user"]["id"].as_i64().expect("user id")
    }

    /// A project with this identifier whose members are `developers` (Developer role);
    /// its id.
    pub async fn project(&self, identifier: &str, developers: &[i64]) -> i64 {
        let v = self
            .call(
                reqwest::Method::POST,
                "/projects.json",
                Some(json!({"project": {
                    "name": format!("Project {identifier}"), "identifier": identifier,
                    "enabled_module_names": ["issue_tracking", "time_tracking"]
                }})),
            )
            .await;
        let id = v["project"]["id"].as_i64().expect("project id");
        let roles = self.get("/roles.json").await;
        let developer = roles["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .find(|r| r["name"] == "Developer")
            .and_then(|r| r["id"].as_i64())
            .expect("a Developer role (Redmine's default data)");
        for user in developers {
            self.call(
                reqwest::Method::POST,
                &format!("/projects/{id}/memberships.json"),
                Some(json!({"membership": {"user_id": user, "role_ids": [developer]}})),
            )
            .await;
        }
        id
    }

    /// An issue; its id.
    pub async fn issue(&self, project: i64, fields: Value) -> i64 {
        let mut issue = json!({"project_id": project, "tracker_id": 1});
        for (k, v) in fields.as_object().expect("fields") {
            issue[k] = v.clone();
        }
        let v = self
            .call(
                reqwest::Method::POST,
                "/issues.json",
                Some(json!({ "issue": issue })),
            )
            .await;
        v["issue"]["id"].as_i64().expect("issue id")
    }

    /// Changes an issue as the admin.
    pub async fn update(&self, issue: i64, fields: Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/issues/{issue}.json"),
            Some(json!({ "issue": fields })),
        )
        .await;
    }

    /// An issue with its journal.
    pub async fn read_issue(&self, issue: i64) -> Value {
        self.get(&format!("/issues/{issue}.json?include=journals"))
            .await["issue"]
            .clone()
    }

    /// The time entries of an issue.
    pub async fn time_entries(&self, issue: i64) -> Vec<Value> {
        self.get(&format!("/time_entries.json?issue_id={issue}&limit=100"))
            .await["time_entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
