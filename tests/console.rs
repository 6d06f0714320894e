//! The web console in a real browser: `taskbridge serve` and `taskbridge sim` as child
//! processes, headless Chromium driven over WebDriver (see `external/browser.rs`). A status
//! manager signs in, sees an update a person made in a simulator mailbox, approves it (the
//! value stays in the mailbox and reaches the plan), rejects another with a reason (the plan's
//! value goes back to the mailbox); a manager of another project neither sees nor can act on
//! it, even with a forged form; a form without the session's CSRF token changes nothing; the
//! whole approval works from the keyboard, a rejection of one row with its own reason too; an
//! item parked when the plan's value cannot go back is retried by the admin from Sync health.
//! Without a browser: `/healthz` and the console's banner when Exchange refuses the credentials
//! or most mailboxes fail, and the notices (digests; a rejection's notice owed across a
//! restart). Screenshots at 1280 and 390 pixels wide go to the tests' scratch folder under
//! `target/`, or to `docs/screenshots/` with `TASKBRIDGE_SCREENSHOTS=docs/screenshots`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use serde_json::Value;

mod external;

const BIN: &str = env!("CARGO_BIN_EXE_taskbridge");
const SAMPLE_GUID: &str = "7D0C3E5A-9B21-4F6E-8A47-1C2D3E4F5A6B";
const FERRY_GUID: &str = "2B7E51A0-6C3D-4E8F-9A10-B2C3D4E5F607";

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

fn taskbridge(dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskbridge");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn wait_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let resp = reqwest::get(url).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

async fn patch(url: &str, body: &str) {
    let resp = reqwest::Client::new()
        .patch(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("PATCH");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

/// `taskbridge serve` in `d` under the sync policy `policy`.
fn start_serve(d: &Path, policy: &str) -> Kill {
    Kill(
        Command::new(BIN)
            .current_dir(d)
            .arg("serve")
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "100")
            .env("TASKBRIDGE_SYNC_POLICY", policy)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("serve.log"))
                    .expect("serve log"),
            )
            .spawn()
            .expect("start serve"),
    )
}

/// The site: init, a second project beside the sample, both under approval, the simulator,
/// three console accounts, and `serve`.
struct Site {
    dir: tempfile::TempDir,
    _sim: Kill,
    serve: Kill,
    ews: u16,
    admin: u16,
}

impl Site {
    /// `wrong_password`: the simulator knows the service account by another password, so
    /// every Exchange call is refused.
    fn start(wrong_password: bool) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        taskbridge(d, &["init", "--sample"], None);
        let (ews, listen, admin) = (free_port(), free_port(), free_port());
        let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
        let config = config
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{ews}"))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{listen}"))
            .replace("127.0.0.1:8082", &format!("127.0.0.1:{admin}"));
        // Notices through the simulator: a digest pass every second, Mia the harbour
        // project's status manager (the ferry project has none). Short mailbox leases: a
        // restarted serve takes over the mailboxes of the one stopped within seconds.
        let config = format!(
            "{config}\n[cluster]\nlease_seconds = 4\nrenew_seconds = 2\n\n[notices]\nenabled = true\ndigest_interval_secs = 1\nretry_secs = 1\n\n\
             [notices.status_managers]\n\"Harbour Bridge Refit\" = [\"mia@example.com\"]\n"
        );
        std::fs::write(d.join("taskbridge.toml"), config).expect("write config");
        let password = std::fs::read_to_string(d.join("taskbridge-data/exchange.password"))
            .expect("password written by init");
        let mut sim = Kill(
            Command::new(BIN)
                .current_dir(d)
                .args(["sim", "--listen", &format!("127.0.0.1:{ews}")])
                .args(["--auth", "basic"])
                .args([
                    "--service",
                    &format!(
                        "taskbridge@sim.example:{}",
                        if wrong_password {
                            "not-the-password"
                        } else {
                            password.trim()
                        }
                    ),
                ])
                .args(["--user", "ann@example.com:a", "--user", "bob@example.com:b"])
                .args([
                    "--user",
                    "chen@example.com:c",
                    "--user",
                    "mia@example.com:m",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sim"),
        );
        let mut first = String::new();
        BufReader::new(sim.0.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("sim prints its URL");
        // A second project, for a second manager: the sample with another GUID, title and
        // task names.
        let sample = std::fs::read_to_string(d.join("sample-project.xml")).expect("sample");
        let ferry = sample
            .replace(SAMPLE_GUID, FERRY_GUID)
            .replace("Harbour Bridge Refit", "Ferry Terminal Works")
            .replace("Survey the north abutment", "Survey the ferry ramp")
            .replace("Order bearing pads", "Order mooring lines")
            .replace("Remove old expansion joint", "Remove old gangway")
            .replace("Install bearing pads", "Install fenders");
        std::fs::write(d.join("ferry.xml"), ferry).expect("write ferry");
        for plan in ["sample-project.xml", "ferry.xml"] {
            taskbridge(d, &["import", plan, "--time-zone", "Europe/Berlin"], None);
        }
        for guid in [SAMPLE_GUID, FERRY_GUID] {
            taskbridge(d, &["projects", "set-policy", guid, "approval"], None);
        }
        taskbridge(
            d,
            &["users", "add", "root", "--role", "admin"],
            Some("root password 1\n"),
        );
        taskbridge(
            d,
            &[
                "users",
                "add",
                "mia",
                "--role",
                "manager",
                "--project",
                "Harbour Bridge Refit",
            ],
            Some("mia password 1\n"),
        );
        taskbridge(
            d,
            &[
                "users",
                "add",
                "olaf",
                "--role",
                "manager",
                "--project",
                "Ferry Terminal Works",
            ],
            Some("olaf password 1\n"),
        );
        let serve = start_serve(d, "newer-wins");
        Site {
            dir,
            _sim: sim,
            serve,
            ews,
            admin,
        }
    }

    fn console(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    fn sim(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/sim{path}", self.ews)
    }

    /// The mailbox task whose subject ends with `task`.
    async fn task(&self, mailbox: &str, task: &str) -> Value {
        let url = self.sim(&format!("/mailboxes/{mailbox}/tasks"));
        wait_until(&format!("the task {task} in {mailbox}"), || {
            let url = url.clone();
            async move {
                get_json(&url)
                    .await?
                    .as_array()?
                    .iter()
                    .find(|t| t["Subject"].as_str().is_some_and(|s| s.ends_with(task)))
                    .cloned()
            }
        })
        .await
    }

    /// Sets the percentage of `task` in `mailbox` as the person would.
    async fn report(&self, mailbox: &str, task: &str, percent: u32) {
        let t = self.task(mailbox, task).await;
        let id = t["ItemId"]["Id"].as_str().expect("id");
        patch(
            &self.sim(&format!("/mailboxes/{mailbox}/tasks/{id}")),
            &format!(r#"{{"PercentComplete": {percent}}}"#),
        )
        .await;
    }

    /// Puts `mailbox` over its quota (every create and update in it fails) or back under it.
    async fn quota(&self, mailbox: &str, exceeded: bool) {
        let r = reqwest::Client::new()
            .put(self.sim(&format!("/mailboxes/{mailbox}/quota")))
            .body(format!(r#"{{"exceeded": {exceeded}}}"#))
            .send()
            .await
            .expect("PUT quota");
        assert!(r.status().is_success(), "{mailbox}: {}", r.status());
    }

    /// The sync state of assignment `key` (`taskbridge status --json`).
    fn assignment_state(&self, key: &str) -> String {
        let out = taskbridge(self.dir.path(), &["status", "--json"], None);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let found = v
            .as_array()
            .or_else(|| v["assignments"].as_array())
            .and_then(|a| a.iter().find(|s| s["key"] == key))
            .unwrap_or_else(|| panic!("no assignment {key} in {v}"));
        found["state"].as_str().unwrap_or("").to_owned()
    }

    /// The messages in the Inbox of `mailbox`, oldest first.
    async fn inbox(&self, mailbox: &str) -> Vec<Value> {
        get_json(&self.sim(&format!("/mailboxes/{mailbox}/inbox")))
            .await
            .and_then(|v| v.as_array().cloned())
            .expect("the simulator's Inbox")
    }

    /// The store's status updates (`taskbridge updates --json`).
    fn updates(&self) -> Vec<Value> {
        let out = taskbridge(self.dir.path(), &["updates", "--json"], None);
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn pending_for(&self, task: &str) -> Value {
        wait_until(&format!("a pending update of {task}"), || {
            let found = self
                .updates()
                .into_iter()
                .find(|u| u["state"] == "pending" && u["task_name"] == task);
            async move { found }
        })
        .await
    }

    fn update_state(&self, id: &str) -> (String, Value) {
        let u = self
            .updates()
            .into_iter()
            .find(|u| u["id"] == id)
            .expect("the update");
        (u["state"].as_str().unwrap_or("").to_owned(), u)
    }
}

async fn browser(driver: &external::browser::Driver, name: &str, width: u32) -> Client {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(driver.capabilities(name, width))
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

async fn sign_in(c: &Client, site: &Site, name: &str, password: &str) {
    c.goto(&site.console("/console/")).await.expect("goto");
    c.find(Locator::Id("name"))
        .await
        .expect("name field")
        .send_keys(name)
        .await
        .expect("type");
    let field = c
        .find(Locator::Id("password"))
        .await
        .expect("password field");
    field.send_keys(password).await.expect("type");
    mark_page(c).await;
    field
        .send_keys(&Key::Enter.to_string())
        .await
        .expect("enter");
    wait_for_new_page(c).await;
    wait_for_path(c, "/console/updates").await;
}

async fn wait_for_path(c: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.expect("url");
        if url.path() == path {
            return;
        }
        assert!(Instant::now() < deadline, "still on {url}, expected {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Marks the document now shown, so that [`wait_for_new_page`] can tell when the browser has
/// replaced it: a form posted back to the same path changes neither the path nor, always,
/// the text, and reading the old page while it goes raises stale element references.
async fn mark_page(c: &Client) {
    c.execute("window.__tbOldPage = true", vec![])
        .await
        .expect("mark the page");
}

/// Waits until the page marked by [`mark_page`] has been replaced by a fully loaded one.
async fn wait_for_new_page(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // While the browser navigates, scripts may fail: that is "not yet".
        let loaded = c
            .execute(
                "return !window.__tbOldPage && document.readyState === 'complete'",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(Value::Bool(true))) {
            return;
        }
        assert!(Instant::now() < deadline, "the page did not change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The message a form's answer shows (`#flash`), once the page after the form has loaded (the
/// form's page may be the same path, so the path says nothing).
async fn wait_for_flash(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.find(Locator::Id("flash")).await
            && let Ok(t) = e.text().await
        {
            return t;
        }
        assert!(Instant::now() < deadline, "no message after the form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's text. A page that a script or a late redirect replaces while it is read is read
/// again, not failed on.
async fn text(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = match c.find(Locator::Css("body")).await {
            Ok(body) => body.text().await,
            Err(e) => Err(e),
        };
        match read {
            Ok(t) => return t,
            Err(e) => assert!(Instant::now() < deadline, "the page's text: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a screenshot to the tests' scratch folder under `target/`, so that a test run
/// leaves the working tree as it was; with `TASKBRIDGE_SCREENSHOTS` set to a folder (relative
/// to the repository: `docs/screenshots` refreshes the ones the documentation shows), there.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let dir = match std::env::var_os("TASKBRIDGE_SCREENSHOTS") {
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// Posts a form built in the page (what a forged or foreign form sends): `fields` as hidden
/// inputs, to `action`.
async fn post_form(c: &Client, action: &str, fields: &[(&str, &str)]) {
    let fields: Vec<Value> = fields
        .iter()
        .map(|(k, v)| serde_json::json!([k, v]))
        .collect();
    mark_page(c).await;
    c.execute(
        "const [action, fields] = arguments;
         const f = document.createElement('form');
         f.method = 'post'; f.action = action;
         for (const [k, v] of fields) {
           const i = document.createElement('input');
           i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit();",
        vec![Value::from(action), Value::from(fields)],
    )
    .await
    .expect("post a form");
    wait_for_new_page(c).await;
}

async fn csrf_of(c: &Client) -> String {
    c.find(Locator::Css("input[name=csrf]"))
        .await
        .expect("a form")
        .attr("value")
        .await
        .expect("attr")
        .expect("a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_managers_decide_updates_in_the_console() {
    taskbridge::ews::transport::install_crypto_provider();
    let Some(driver) = external::browser::Driver::start("the web console in a browser") else {
        return;
    };
    let mut site = Site::start(false);
    wait_until("serve to be ready", || async {
        let r = reqwest::get(site.console("/healthz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    wait_until("the subscriptions", || async {
        (get_json(&site.sim("/subscriptions"))
            .await?
            .as_array()?
            .len()
            >= 3)
            .then_some(())
    })
    .await;

    // Ann reports 60 % on the harbour survey, Bob 40 % on the bearing pads, Ann 30 % on the
    // ferry survey.
    site.report("ann@example.com", "Survey the north abutment", 60)
        .await;
    site.report("bob@example.com", "Order bearing pads", 40)
        .await;
    site.report("ann@example.com", "Survey the ferry ramp", 30)
        .await;
    let survey = site.pending_for("Survey the north abutment").await;
    let pads = site.pending_for("Order bearing pads").await;
    let ferry = site.pending_for("Survey the ferry ramp").await;
    let survey_id = survey["id"].as_str().expect("id").to_owned();
    let pads_id = pads["id"].as_str().expect("id").to_owned();
    let ferry_id = ferry["id"].as_str().expect("id").to_owned();

    // Mia, manager of the harbour project, signs in and sees her two updates, not the ferry's.
    let mia = browser(&driver, "mia", 1280).await;
    sign_in(&mia, &site, "mia", "mia password 1").await;
    let page = text(&mia).await;
    assert!(page.contains("Harbour Bridge Refit"), "{page}");
    assert!(page.contains("Survey the north abutment"), "{page}");
    assert!(
        page.contains("Ann Larsen") && page.contains("ann@example.com"),
        "{page}"
    );
    assert!(page.contains("0% → 60%"), "{page}");
    assert!(page.contains("Order bearing pads"), "{page}");
    assert!(!page.contains("Ferry Terminal Works"), "{page}");
    assert!(!page.contains("Survey the ferry ramp"), "{page}");
    screenshot(&mia, "console-updates-1280").await;

    // A form without the session's token changes nothing.
    post_form(
        &mia,
        "/console/updates/decide",
        &[
            ("csrf", "forged"),
            ("single", &format!("approve:{survey_id}")),
        ],
    )
    .await;
    let page = text(&mia).await;
    assert!(page.contains("security token"), "{page}");
    assert_eq!(site.update_state(&survey_id).0, "pending");
    post_form(
        &mia,
        "/console/updates/decide",
        &[("single", &format!("approve:{survey_id}"))],
    )
    .await;
    assert!(text(&mia).await.contains("security token"));
    assert_eq!(site.update_state(&survey_id).0, "pending");

    // Mia cannot act on the ferry's update, with her own valid token and the id forged in.
    mia.goto(&site.console("/console/updates"))
        .await
        .expect("goto");
    let token = csrf_of(&mia).await;
    post_form(
        &mia,
        "/console/updates/decide",
        &[
            ("csrf", &token),
            ("project", SAMPLE_GUID),
            ("single", &format!("approve:{ferry_id}")),
        ],
    )
    .await;
    let page = text(&mia).await;
    assert!(
        page.contains("no such update among your projects"),
        "{page}"
    );
    // Nor with one of her own ids beside it: nothing of the form is done.
    post_form(
        &mia,
        "/console/updates/decide",
        &[
            ("csrf", &token),
            ("action", "approve"),
            ("id", &pads_id),
            ("id", &ferry_id),
        ],
    )
    .await;
    assert_eq!(site.update_state(&ferry_id).0, "pending");
    assert_eq!(site.update_state(&pads_id).0, "pending");
    // Nor switch the ferry project's policy or publish it.
    post_form(
        &mia,
        "/console/projects/policy",
        &[
            ("csrf", &token),
            ("project", FERRY_GUID),
            ("policy", "auto"),
        ],
    )
    .await;
    assert!(text(&mia).await.contains("no such project"));
    mia.goto(&site.console("/console/projects"))
        .await
        .expect("goto");
    let page = text(&mia).await;
    assert!(
        page.contains("Harbour Bridge Refit") && !page.contains("Ferry"),
        "{page}"
    );

    // Approve Ann's survey from the keyboard only: Tab to its Approve button, Enter.
    mia.goto(&site.console("/console/updates"))
        .await
        .expect("goto");
    let mut reached = false;
    for _ in 0..40 {
        mia.active_element()
            .await
            .expect("focus")
            .send_keys(&Key::Tab.to_string())
            .await
            .expect("tab");
        let focused = mia.active_element().await.expect("focus");
        if focused.attr("value").await.ok().flatten().as_deref()
            == Some(&format!("approve:{survey_id}"))
        {
            mark_page(&mia).await;
            focused
                .send_keys(&Key::Enter.to_string())
                .await
                .expect("enter");
            wait_for_new_page(&mia).await;
            reached = true;
            break;
        }
    }
    assert!(reached, "the Approve button is reachable with Tab");
    wait_until("the approval", || {
        let state = site.update_state(&survey_id).0;
        async move { (state == "applied").then_some(()) }
    })
    .await;
    let (_, approved) = site.update_state(&survey_id);
    assert_eq!(approved["decider"], "mia");
    let flash = mia
        .find(Locator::Id("flash"))
        .await
        .expect("a message")
        .text()
        .await
        .expect("text");
    assert_eq!(flash, "1 update approved.");
    // The value stays in Ann's mailbox and is the plan's now.
    let task = site
        .task("ann@example.com", "Survey the north abutment")
        .await;
    assert_eq!(task["PercentComplete"].as_f64(), Some(60.0), "{task}");

    // Reject Bob's pads with a reason: the plan keeps its value, which goes back to his task.
    let row = mia
        .find(Locator::Css(&format!("input[value='{pads_id}']")))
        .await
        .expect("the row's checkbox");
    row.click().await.expect("tick");
    let form = mia
        .find(Locator::Css(&format!(
            "section[aria-labelledby='p-{}'] input[name=reason]",
            SAMPLE_GUID.to_lowercase()
        )))
        .await
        .expect("the reason field");
    form.send_keys("The pads are not delivered yet")
        .await
        .expect("type");
    mark_page(&mia).await;
    mia.find(Locator::Css("button[value=reject]"))
        .await
        .expect("reject")
        .click()
        .await
        .expect("click");
    wait_for_new_page(&mia).await;
    wait_until("the rejection", || {
        let state = site.update_state(&pads_id).0;
        async move { (state == "rejected").then_some(()) }
    })
    .await;
    let (_, rejected) = site.update_state(&pads_id);
    assert_eq!(rejected["reason"], "The pads are not delivered yet");
    assert_eq!(rejected["decider"], "mia");
    wait_until("the plan's value back in Bob's task", || async {
        let t = site.task("bob@example.com", "Order bearing pads").await;
        (t["PercentComplete"].as_f64() == Some(0.0)).then_some(())
    })
    .await;
    let page = text(&mia).await;
    assert!(page.contains("1 update rejected."), "{page}");
    assert!(page.contains("Nothing waits for a decision."), "{page}");
    // Bob is told, by the service account through Exchange, with the reason.
    let notice = wait_until("the rejection notice in Bob's Inbox", || async {
        site.inbox("bob@example.com")
            .await
            .into_iter()
            .find(|m| m["subject"] == "Update rejected: Order bearing pads (Harbour Bridge Refit)")
    })
    .await;
    assert_eq!(notice["from"], "taskbridge@sim.example", "{notice}");
    assert_eq!(
        notice["to"],
        serde_json::json!(["bob@example.com"]),
        "{notice}"
    );
    let body = notice["body"].as_str().unwrap_or("");
    assert!(body.contains("rejected by mia"), "{body}");
    assert!(
        body.contains("Reason: The pads are not delivered yet"),
        "{body}"
    );
    assert!(body.contains("percent work complete: 0% -> 40%"), "{body}");
    // Ann's approved update brings her no notice.
    assert!(
        site.inbox("ann@example.com")
            .await
            .iter()
            .all(|m| !m["subject"]
                .as_str()
                .unwrap_or("")
                .starts_with("Update rejected")),
        "a notice for an approved update"
    );

    // Olaf sees only the ferry's update; 390 pixels wide, as on a phone.
    let olaf = browser(&driver, "olaf", 390).await;
    sign_in(&olaf, &site, "olaf", "olaf password 1").await;
    let page = text(&olaf).await;
    assert!(page.contains("Survey the ferry ramp"), "{page}");
    assert!(!page.contains("Harbour Bridge Refit"), "{page}");
    screenshot(&olaf, "console-updates-390").await;

    // Ann's mailbox goes over its quota: the plan's value cannot go back into her task.
    site.quota("ann@example.com", true).await;
    // Olaf rejects the ferry's update on its own row with its own reason, from the keyboard
    // only: Tab to the row's "Reject…", Enter opens it, Tab to the reason, type it, Tab to
    // the row's Reject button, Enter.
    let summary_id = format!("reject-{ferry_id}");
    let mut opened = false;
    for _ in 0..40 {
        olaf.active_element()
            .await
            .expect("focus")
            .send_keys(&Key::Tab.to_string())
            .await
            .expect("tab");
        let focused = olaf.active_element().await.expect("focus");
        if focused.attr("id").await.ok().flatten().as_deref() == Some(summary_id.as_str()) {
            focused
                .send_keys(&Key::Enter.to_string())
                .await
                .expect("enter");
            opened = true;
            break;
        }
    }
    assert!(opened, "the row's Reject… is reachable with Tab");
    let keys = |k: String| {
        let olaf = olaf.clone();
        async move {
            olaf.active_element()
                .await
                .expect("focus")
                .send_keys(&k)
                .await
                .expect("keys");
        }
    };
    keys(Key::Tab.to_string()).await;
    let focused = olaf.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("name").await.ok().flatten(),
        Some(format!("reason-{ferry_id}")),
        "the row's reason field follows its Reject…"
    );
    keys("The ramp is flooded".to_owned()).await;
    keys(Key::Tab.to_string()).await;
    let focused = olaf.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("value").await.ok().flatten(),
        Some(format!("reject:{ferry_id}"))
    );
    mark_page(&olaf).await;
    keys(Key::Enter.to_string()).await;
    wait_for_new_page(&olaf).await;
    wait_until("the ferry's rejection", || {
        let state = site.update_state(&ferry_id).0;
        async move { (state == "rejected").then_some(()) }
    })
    .await;
    let (_, rejected) = site.update_state(&ferry_id);
    assert_eq!(rejected["reason"], "The ramp is flooded");
    assert_eq!(rejected["decider"], "olaf");
    let flash = wait_for_flash(&olaf).await;
    assert_eq!(flash, "1 update rejected.");

    // The write of the plan's value was refused for good: the item is parked. The admin sees
    // it on Sync health with the reason and a Retry button.
    let root = browser(&driver, "root", 1280).await;
    sign_in(&root, &site, "root", "root password 1").await;
    let parked_row = format!("tr[data-parked^='{}:']", FERRY_GUID.to_lowercase());
    let row_text = wait_until("the ferry survey parked on Sync health", || {
        let root = root.clone();
        let parked_row = parked_row.clone();
        let url = site.console("/console/health");
        async move {
            root.goto(&url).await.ok()?;
            let rows = root.find_all(Locator::Css(&parked_row)).await.ok()?;
            rows.first()?.text().await.ok()
        }
    })
    .await;
    assert!(row_text.contains("Survey the ferry ramp"), "{row_text}");
    assert!(row_text.contains("ann@example.com"), "{row_text}");
    assert!(row_text.contains("ErrorQuotaExceeded"), "{row_text}");
    screenshot(&root, "console-health-parked-1280").await;
    let parked_key = root
        .find(Locator::Css("tr[data-parked] input[name=key]"))
        .await
        .expect("the retry form")
        .attr("value")
        .await
        .expect("attr")
        .expect("a key");
    // A manager cannot retry it, even with her own valid token and the key forged in; nor
    // the admin with a form that lacks the token.
    mia.goto(&site.console("/console/updates"))
        .await
        .expect("goto");
    let token = csrf_of(&mia).await;
    post_form(
        &mia,
        "/console/health/retry",
        &[("csrf", &token), ("key", &parked_key)],
    )
    .await;
    assert!(text(&mia).await.contains("Sync health is for admins."));
    post_form(&root, "/console/health/retry", &[("key", &parked_key)]).await;
    assert!(text(&root).await.contains("security token"));
    assert_eq!(site.assignment_state(&parked_key), "parked");
    // Still over the quota: Retry tries it, and it is parked again with the reason.
    root.goto(&site.console("/console/health"))
        .await
        .expect("goto");
    mark_page(&root).await;
    root.find(Locator::Css("tr[data-parked] button"))
        .await
        .expect("Retry")
        .click()
        .await
        .expect("click");
    wait_for_new_page(&root).await;
    let flash = wait_for_flash(&root).await;
    assert!(flash.contains("parked again"), "{flash}");
    assert!(flash.contains("ErrorQuotaExceeded"), "{flash}");
    assert!(
        root.find(Locator::Css("tr[data-parked]")).await.is_ok(),
        "the item is back in the parked list"
    );
    // The quota is raised: Retry writes the plan's value at once and the list is empty.
    site.quota("ann@example.com", false).await;
    mark_page(&root).await;
    root.find(Locator::Css("tr[data-parked] button"))
        .await
        .expect("Retry")
        .click()
        .await
        .expect("click");
    wait_for_new_page(&root).await;
    let flash = wait_for_flash(&root).await;
    assert!(flash.contains("in step now"), "{flash}");
    let page = text(&root).await;
    assert!(page.contains("No item is parked."), "{page}");
    assert_eq!(site.assignment_state(&parked_key), "synced");
    let t = site.task("ann@example.com", "Survey the ferry ramp").await;
    assert_eq!(t["PercentComplete"].as_f64(), Some(0.0), "{t}");
    let _ = root.close().await;

    // A wrong password is refused, and the sixth try in a row is throttled.
    let guest = browser(&driver, "guest", 1280).await;
    for attempt in 1..=6 {
        guest
            .goto(&site.console("/console/signin"))
            .await
            .expect("goto");
        guest
            .find(Locator::Id("name"))
            .await
            .expect("name")
            .send_keys("olaf")
            .await
            .expect("type");
        let p = guest.find(Locator::Id("password")).await.expect("password");
        p.send_keys("not the password").await.expect("type");
        mark_page(&guest).await;
        p.send_keys(&Key::Enter.to_string()).await.expect("enter");
        wait_for_new_page(&guest).await;
        let message = guest
            .find(Locator::Id("signin-error"))
            .await
            .expect("an error")
            .text()
            .await
            .expect("text");
        if attempt <= 5 {
            assert!(message.contains("not right"), "{attempt}: {message}");
        } else {
            assert!(message.contains("Too many failed sign-ins"), "{message}");
        }
    }
    // The session cookie is HttpOnly and SameSite=Strict: not readable by the page's script.
    let visible: Value = mia
        .execute("return document.cookie", vec![])
        .await
        .expect("js");
    assert_eq!(visible, Value::from(""), "cookies are HttpOnly");

    // A conflict: with serve stopped, the plan says 25 % for Chen's bearing pads and Chen
    // says 50 %; under the manual policy the restarted serve keeps it for a person.
    site.serve.0.kill().expect("stop serve");
    let _ = site.serve.0.wait();
    let d = site.dir.path();
    let plan = std::fs::read_to_string(d.join("sample-project.xml")).expect("sample");
    let old = "<Work>PT32H0M0S</Work></Assignment>";
    assert!(plan.contains(old));
    let plan = plan.replace(
        old,
        "<Work>PT32H0M0S</Work><ActualWork>PT8H0M0S</ActualWork><RemainingWork>PT24H0M0S</RemainingWork><PercentWorkComplete>25</PercentWorkComplete></Assignment>",
    );
    std::fs::write(d.join("plan-v2.xml"), plan).expect("write plan");
    taskbridge(
        d,
        &["import", "plan-v2.xml", "--time-zone", "Europe/Berlin"],
        None,
    );
    site.report(
        "chen@example.com",
        "Harbour Bridge Refit: Install bearing pads",
        50,
    )
    .await;
    site.serve = start_serve(d, "manual");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = taskbridge(d, &["conflicts", "--json"], None);
        let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            let status = taskbridge(d, &["status", "--json"], None);
            let audit = taskbridge(d, &["audit"], None);
            let log = std::fs::read_to_string(d.join("serve.log")).unwrap_or_default();
            panic!(
                "no conflict\n{}\n{}\n{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&audit.stdout),
                log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Olaf cannot settle it, with his own token and the conflict's id forged into a form.
    let conflict_id = {
        let out = taskbridge(d, &["conflicts", "--json"], None);
        let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        list[0]["id"].as_str().expect("an id").to_owned()
    };
    sign_in(&olaf, &site, "olaf", "olaf password 1").await;
    let token = csrf_of(&olaf).await;
    post_form(
        &olaf,
        "/console/conflicts/resolve",
        &[("csrf", &token), ("id", &conflict_id), ("take", "mailbox")],
    )
    .await;
    assert!(
        text(&olaf)
            .await
            .contains("no such conflict among your projects")
    );
    olaf.goto(&site.console("/console/conflicts"))
        .await
        .expect("goto");
    assert!(text(&olaf).await.contains("No open conflicts."));
    // The restart ended the sessions: Mia signs in again.
    sign_in(&mia, &site, "mia", "mia password 1").await;
    mia.goto(&site.console("/console/conflicts"))
        .await
        .expect("goto");
    let page = text(&mia).await;
    assert!(page.contains("Install bearing pads"), "{page}");
    assert!(page.contains("25") && page.contains("50"), "{page}");
    screenshot(&mia, "console-conflicts-1280").await;
    mark_page(&mia).await;
    mia.find(Locator::Css("button[name=take][value=pm]"))
        .await
        .expect("take the plan's")
        .click()
        .await
        .expect("click");
    wait_for_new_page(&mia).await;
    wait_for_path(&mia, "/console/conflicts").await;
    let page = text(&mia).await;
    assert!(page.contains("the plan's value stands"), "{page}");
    assert!(page.contains("No open conflicts."), "{page}");
    wait_until("the plan's 25 % in Chen's task", || async {
        let t = site
            .task(
                "chen@example.com",
                "Harbour Bridge Refit: Install bearing pads",
            )
            .await;
        (t["PercentComplete"].as_f64() == Some(25.0)).then_some(())
    })
    .await;

    // The audit, searched by person: Bob's rejected pads, none of Ann's decisions, nothing of
    // the ferry project.
    mia.goto(&site.console("/console/audit?person=bob"))
        .await
        .expect("goto");
    let page = text(&mia).await;
    assert!(page.contains("Order bearing pads"), "{page}");
    assert!(!page.contains("ann@example.com"), "{page}");
    mia.goto(&site.console("/console/audit"))
        .await
        .expect("goto");
    let page = text(&mia).await;
    assert!(page.contains("Survey the north abutment"), "{page}");
    assert!(!page.contains("ferry"), "{page}");
    // Sync health is the admins': each mailbox with its subscription.
    mia.goto(&site.console("/console/health"))
        .await
        .expect("goto");
    assert!(text(&mia).await.contains("Sync health is for admins."));
    sign_in(&guest, &site, "root", "root password 1").await;
    guest
        .goto(&site.console("/console/health"))
        .await
        .expect("goto");
    let row = guest
        .find(Locator::Css("tr[data-mailbox='chen@example.com']"))
        .await
        .expect("Chen's mailbox")
        .text()
        .await
        .expect("text");
    assert!(row.contains("active"), "{row}");
    screenshot(&guest, "console-health-1280").await;

    for c in [mia, olaf, guest] {
        let _ = c.close().await;
    }
    let _ = PathBuf::new();
}

/// The value of cookie `name` in the `Set-Cookie` headers of `resp`, with its attributes.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v)
        .unwrap_or("")
}

/// When Exchange refuses the service account, `/healthz` says degraded with the reason and the
/// console's header says so on every page. Plain HTTP, no browser: the sign-in is the form a
/// browser would post, cookies as it would keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_header_says_when_exchange_refuses_the_credentials() {
    taskbridge::ews::transport::install_crypto_provider();
    let site = Site::start(true);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let reason = wait_until("/healthz to say degraded", || async {
        let r = reqwest::get(site.console("/healthz")).await.ok()?;
        let status = r.status().as_u16();
        let body = r.text().await.ok()?;
        (status == 503 && body.starts_with("degraded: "))
            .then(|| body["degraded: ".len()..].to_owned())
    })
    .await;
    // Not signed in: the pages send to the sign-in form.
    let r = client
        .get(site.console("/console/updates"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console/signin");
    // Sign in as the admin.
    let session = sign_in_over_http(&client, &site, "root", "root password 1").await;
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && !session.contains("Secure"),
        "{session}"
    );
    for page in [
        "/console/updates",
        "/console/projects",
        "/console/conflicts",
    ] {
        let r = client
            .get(site.console(page))
            .header("cookie", format!("tb_session={}", cookie_value(&session)))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{page}");
        let html = r.text().await.expect("page");
        let banner =
            health_banner(&html).unwrap_or_else(|| panic!("no health banner on {page}: {html}"));
        assert!(banner.contains("Sync degraded"), "{banner}");
        // The reason as /healthz gives it (HTML-escaped in the page).
        let first_words: String = reason.chars().take(20).collect();
        let escaped = first_words
            .replace('&', "&amp;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(banner.contains(&escaped), "{banner} / {reason}");
    }
}

/// Signs in with plain HTTP as a browser would post the form; the session's `Set-Cookie`.
async fn sign_in_over_http(
    client: &reqwest::Client,
    site: &Site,
    name: &str,
    password: &str,
) -> String {
    let r = client
        .get(site.console("/console/signin"))
        .send()
        .await
        .expect("GET");
    let signin_cookie = set_cookie(&r, "tb_signin").expect("a sign-in cookie");
    assert!(signin_cookie.contains("HttpOnly") && signin_cookie.contains("SameSite=Strict"));
    let html = r.text().await.expect("page");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's token")
        .to_owned();
    let r = client
        .post(site.console("/console/signin"))
        .header(
            "cookie",
            format!("tb_signin={}", cookie_value(&signin_cookie)),
        )
        .form(&[
            ("csrf", token.as_str()),
            ("name", name),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 303);
    set_cookie(&r, "tb_session").expect("a session cookie")
}

/// The health banner of a console page (its text between the tags), if any.
fn health_banner(html: &str) -> Option<String> {
    html.split("id=\"health-banner\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .map(str::to_owned)
}

/// When most mailboxes fail (two of the three task lists over their quota, so that the
/// plan's new task names cannot be written), `/healthz` says degraded and names them, and the
/// console's header says so; over real sockets, `serve` against the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_mailboxes_failing_is_degraded_in_healthz_and_in_the_console() {
    taskbridge::ews::transport::install_crypto_provider();
    let mut site = Site::start(false);
    wait_until("serve to be ready", || async {
        let r = reqwest::get(site.console("/healthz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    // Every task list has its tasks.
    site.task("ann@example.com", "Survey the north abutment")
        .await;
    site.task("bob@example.com", "Order bearing pads").await;
    site.task("chen@example.com", "Install bearing pads").await;
    site.serve.0.kill().expect("stop serve");
    let _ = site.serve.0.wait();
    for mailbox in ["ann@example.com", "bob@example.com"] {
        site.quota(mailbox, true).await;
    }
    // The plan renames Ann's and Bob's tasks; Chen's is unchanged.
    let d = site.dir.path();
    let plan = std::fs::read_to_string(d.join("sample-project.xml"))
        .expect("sample")
        .replace(
            "Survey the north abutment",
            "Survey the north abutment again",
        )
        .replace("Order bearing pads", "Order more bearing pads");
    std::fs::write(d.join("plan-renamed.xml"), plan).expect("write plan");
    taskbridge(
        d,
        &["import", "plan-renamed.xml", "--time-zone", "Europe/Berlin"],
        None,
    );
    site.serve = start_serve(d, "newer-wins");
    let reason = wait_until("/healthz to say degraded", || async {
        let r = reqwest::get(site.console("/healthz")).await.ok()?;
        let status = r.status().as_u16();
        let body = r.text().await.ok()?;
        (status == 503 && body.starts_with("degraded: "))
            .then(|| body["degraded: ".len()..].to_owned())
    })
    .await;
    assert!(
        reason.starts_with("2 of 3 mailboxes are failing: ann@example.com ("),
        "{reason}"
    );
    assert!(reason.contains("bob@example.com ("), "{reason}");
    assert!(reason.contains("ErrorQuotaExceeded"), "{reason}");
    assert!(!reason.contains("chen@example.com"), "{reason}");

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = sign_in_over_http(&client, &site, "root", "root password 1").await;
    for page in ["/console/updates", "/console/health"] {
        let html = client
            .get(site.console(page))
            .header("cookie", format!("tb_session={}", cookie_value(&session)))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("page");
        let banner =
            health_banner(&html).unwrap_or_else(|| panic!("no health banner on {page}: {html}"));
        assert!(banner.contains("Sync degraded"), "{banner}");
        assert!(
            banner.contains("2 of 3 mailboxes are failing: ann@example.com"),
            "{banner}"
        );
    }
}

/// The digest: nothing goes to the status manager while nothing waits; when updates wait, a
/// digest naming them reaches her Inbox, and it is not sent again for the same waiting
/// updates. The project without a status manager sends nobody anything. A rejection made
/// with the CLI is announced to the person too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_goes_to_the_status_manager_only_when_updates_wait() {
    taskbridge::ews::transport::install_crypto_provider();
    let mut site = Site::start(false);
    wait_until("serve to be ready", || async {
        let r = reqwest::get(site.console("/healthz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    wait_until("the subscriptions", || async {
        (get_json(&site.sim("/subscriptions"))
            .await?
            .as_array()?
            .len()
            >= 3)
            .then_some(())
    })
    .await;
    // Three digest passes with nothing waiting send nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(site.inbox("mia@example.com").await, Vec::<Value>::new());

    // The ferry's update has no status manager to tell; the harbour's two are Mia's.
    site.report("ann@example.com", "Survey the ferry ramp", 30)
        .await;
    site.report("ann@example.com", "Survey the north abutment", 60)
        .await;
    site.report("bob@example.com", "Order bearing pads", 40)
        .await;
    site.pending_for("Survey the ferry ramp").await;
    site.pending_for("Survey the north abutment").await;
    let pads = site.pending_for("Order bearing pads").await;
    let digest = wait_until("a digest of both harbour updates", || async {
        site.inbox("mia@example.com")
            .await
            .into_iter()
            .find(|m| m["subject"] == "2 updates wait for approval: Harbour Bridge Refit")
    })
    .await;
    assert_eq!(digest["from"], "taskbridge@sim.example", "{digest}");
    let body = digest["body"].as_str().unwrap_or("");
    assert!(body.contains("Survey the north abutment"), "{body}");
    assert!(body.contains("Order bearing pads"), "{body}");
    assert!(body.contains("percent work complete: 0% -> 60%"), "{body}");
    assert!(!body.contains("ferry"), "{body}");
    let sent = site.inbox("mia@example.com").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        site.inbox("mia@example.com").await.len(),
        sent,
        "the same waiting updates were announced again"
    );

    // Rejected from the command line: Bob is told; one update still waits, so Mia gets a
    // digest of that one.
    let id = pads["id"].as_str().expect("id");
    taskbridge(
        site.dir.path(),
        &[
            "updates",
            "reject",
            id,
            "--reason",
            "Not delivered",
            "--by",
            "mia",
        ],
        None,
    );
    let notice = wait_until("the rejection notice in Bob's Inbox", || async {
        site.inbox("bob@example.com").await.into_iter().find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Update rejected"))
        })
    })
    .await;
    assert!(
        notice["body"]
            .as_str()
            .unwrap_or("")
            .contains("Reason: Not delivered"),
        "{notice}"
    );
    wait_until("a digest of the one left", || async {
        site.inbox("mia@example.com")
            .await
            .into_iter()
            .find(|m| m["subject"] == "1 update waits for approval: Harbour Bridge Refit")
    })
    .await;

    // A rejection made while serve is down is owed all the same: the restarted serve tells
    // Ann (the notices owed live in the store, not in the process).
    site.serve.0.kill().expect("stop serve");
    let _ = site.serve.0.wait();
    let ferry = site.pending_for("Survey the ferry ramp").await;
    taskbridge(
        site.dir.path(),
        &[
            "updates",
            "reject",
            ferry["id"].as_str().expect("id"),
            "--reason",
            "The ramp is flooded",
            "--by",
            "olaf",
        ],
        None,
    );
    site.serve = start_serve(site.dir.path(), "newer-wins");
    let notice = wait_until("the ferry's rejection notice in Ann's Inbox", || async {
        site.inbox("ann@example.com").await.into_iter().find(|m| {
            m["subject"] == "Update rejected: Survey the ferry ramp (Ferry Terminal Works)"
        })
    })
    .await;
    let body = notice["body"].as_str().unwrap_or("");
    assert!(body.contains("Reason: The ramp is flooded"), "{body}");
    assert!(body.contains("rejected by olaf"), "{body}");
    // Bob's notice, sent before the restart, is not sent again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to_bob = site
        .inbox("bob@example.com")
        .await
        .into_iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Update rejected"))
        })
        .count();
    assert_eq!(to_bob, 1, "Bob's notice was sent again after the restart");
}
