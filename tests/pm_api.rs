//! The PM HTTP API over a real socket, every route with and without the token, and the outgoing
//! webhook against a local receiver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use taskbridge::pm::embedded::{
    EmbeddedHost, HostOptions, Policy, SIGNATURE_HEADER, Secret, UpdateState, WebhookConfig,
    run_webhook, serve_pm_api, verify,
};
use taskbridge::pm::{
    AssignmentField, AssignmentKey, AssignmentUid, FieldChange, FieldValue, HostEvent,
    ImportOptions, Percent, PmHost, ProjectGuid, StatusUpdate, StatusUpdateId, UpdateOutcome,
    UpdateSource,
};

const TOKEN: &str = "pm-api-test-token";
const GUID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn guid() -> ProjectGuid {
    GUID.parse().expect("valid guid")
}

fn update(uid: i64, change_key: &str, changes: Vec<FieldChange>) -> StatusUpdate {
    StatusUpdate {
        key: AssignmentKey {
            project: guid(),
            assignment: AssignmentUid(uid),
        },
        changes,
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

fn percent(old: u8, new: u8) -> FieldChange {
    FieldChange {
        field: AssignmentField::PercentWorkComplete,
        old: FieldValue::Percent(Percent::new(old).expect("in range")),
        new: FieldValue::Percent(Percent::new(new).expect("in range")),
    }
}

async fn edge_host(dir: &Path, policy: Policy) -> EmbeddedHost {
    let host = EmbeddedHost::open(dir).await.expect("opens");
    host.import_file(
        fixture("mspdi/edge-cases.xml"),
        ImportOptions {
            time_zone: chrono_tz::Europe::Berlin,
            ..ImportOptions::default()
        },
        Some(policy),
    )
    .await
    .expect("imports");
    host
}

/// An assignment's percent complete as the PM store holds it now.
async fn current_percent(host: &EmbeddedHost, uid: i64) -> u8 {
    host.load_project(guid())
        .await
        .expect("loads")
        .and_then(|p| p.assignment(AssignmentUid(uid)).cloned())
        .expect("assignment")
        .percent_work_complete
        .get()
}

async fn pending(host: &EmbeddedHost, uid: i64, change_key: &str, to: u8) -> StatusUpdateId {
    // Made against the PM's current percent, as the connector makes it (approval checks it).
    let now = current_percent(host, uid).await;
    match host
        .submit(update(uid, change_key, vec![percent(now, to)]))
        .await
        .expect("accepted")
    {
        UpdateOutcome::Pending { id } => id,
        other => panic!("expected Pending, got {other:?}"),
    }
}

/// A running API server; dropping it does not stop it, `stop` does.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(host: EmbeddedHost) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_pm_api(
            listener,
            host,
            Secret::new(TOKEN),
            async move {
                let _ = stopped.await;
            },
        ));
        Server { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops");
        result.expect("server task").expect("server ends cleanly");
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One raw HTTP/1.1 request on its own connection.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    // The server may answer (413) before reading a large body and close; a failed write of the
    // rest is then expected.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, Some(&bearer()), None, b"").await
}

async fn post_json(addr: SocketAddr, method: &str, path: &str, body: Value) -> Reply {
    send(
        addr,
        method,
        path,
        Some(&bearer()),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .await
}

fn routes(update: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/pm/projects".to_owned()),
        ("GET", format!("/pm/projects/{GUID}")),
        ("POST", format!("/pm/projects/{GUID}/publish")),
        ("PUT", format!("/pm/projects/{GUID}/policy")),
        ("GET", "/pm/updates".to_owned()),
        ("GET", format!("/pm/updates/{update}")),
        ("POST", format!("/pm/updates/{update}/approve")),
        ("POST", format!("/pm/updates/{update}/reject")),
        ("GET", "/pm/no-such-route".to_owned()),
    ]
}

#[tokio::test]
async fn api_without_or_with_wrong_token_is_unauthorized_on_every_route() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Approval).await;
    let id = pending(&host, 3, "ck-1", 50).await;
    let server = Server::start(host.clone()).await;
    let wrong = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for (method, path) in routes(&id.0) {
        for auth in &wrong {
            let reply = send(
                server.addr,
                method,
                &path,
                auth.as_deref(),
                Some("application/json"),
                br#"{"policy":"auto"}"#,
            )
            .await;
            assert_eq!(reply.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"taskbridge-pm\"")
            );
            assert_eq!(reply.header("content-type"), Some("application/json"));
            // The reply must not echo the token back.
            assert!(!String::from_utf8_lossy(&reply.body).contains(TOKEN));
        }
    }
    // Nothing was decided or changed by the refused requests.
    let record = host
        .status_update(&id)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.state, UpdateState::Pending);
    server.stop().await;
}

#[tokio::test]
async fn api_project_routes_list_get_publish_and_set_policy() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Auto).await;
    let mut events = host.subscribe();
    let server = Server::start(host.clone()).await;
    let addr = server.addr;

    let reply = get(addr, "/pm/projects").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let list = reply.json();
    assert_eq!(list[0]["guid"], GUID);
    assert_eq!(list[0]["policy"], "auto");
    assert_eq!(list[0]["mailbox_assignments"], 3);

    let reply = get(addr, &format!("/pm/projects/{GUID}")).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["summary"]["name"], "edge-cases.xml");
    assert_eq!(
        body["project"]["assignments"].as_array().map(Vec::len),
        Some(9)
    );
    assert_eq!(body["project"]["resources"][0]["name"], "Zoë Müller");
    // A trailing slash is the same route.
    assert_eq!(
        get(addr, &format!("/pm/projects/{GUID}/")).await.status,
        200
    );
    for path in [
        "/pm/projects/b0000000-0000-4000-8000-000000000002".to_owned(),
        "/pm/projects/not-a-guid".to_owned(),
    ] {
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.json()["error"].is_string());
    }

    let reply = send(
        addr,
        "POST",
        &format!("/pm/projects/{GUID}/publish"),
        Some(&bearer()),
        None,
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["published"], GUID);
    assert_eq!(
        events.recv().await.expect("an event"),
        HostEvent::ProjectPublished { project: guid() }
    );

    let path = format!("/pm/projects/{GUID}/policy");
    let reply = post_json(addr, "PUT", &path, json!({"policy": "approval"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["policy"], "approval");
    let summary = host
        .project_summary(guid())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(summary.policy, Policy::Approval);
    for (body, status) in [
        (json!({"policy": "sometimes"}), 400),
        (json!({"policy": "auto", "extra": 1}), 400),
        (json!({}), 400),
    ] {
        assert_eq!(
            post_json(addr, "PUT", &path, body.clone()).await.status,
            status,
            "{body}"
        );
    }
    let reply = send(addr, "PUT", &path, Some(&bearer()), None, b"").await;
    assert_eq!(reply.status, 400, "a policy body is required");
    let reply = send(
        addr,
        "PUT",
        &path,
        Some(&bearer()),
        Some("text/plain"),
        b"policy=auto",
    )
    .await;
    assert_eq!(reply.status, 415);
    let reply = send(
        addr,
        "PUT",
        &path,
        Some(&bearer()),
        Some("application/json"),
        b"{",
    )
    .await;
    assert_eq!(reply.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn api_update_routes_list_get_approve_and_reject() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Approval).await;
    let first = pending(&host, 3, "ck-1", 50).await;
    let second = pending(&host, 1, "ck-2", 100).await;
    let mut events = host.subscribe();
    let server = Server::start(host.clone()).await;
    let addr = server.addr;

    let reply = get(addr, "/pm/updates?state=pending").await;
    assert_eq!(reply.status, 200);
    let ids: Vec<Value> = reply
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(first.0), json!(second.0)]);
    let reply = get(addr, &format!("/pm/updates?project={GUID}&state=applied")).await;
    assert_eq!(reply.json(), json!([]));
    for bad in ["state=maybe", "project=nope", "colour=blue"] {
        assert_eq!(
            get(addr, &format!("/pm/updates?{bad}")).await.status,
            400,
            "{bad}"
        );
    }

    let reply = get(addr, &format!("/pm/updates/{}", first.0)).await;
    assert_eq!(reply.status, 200);
    let record = reply.json();
    assert_eq!(record["state"], "pending");
    assert_eq!(record["task_name"], "Wiring");
    assert_eq!(record["changes"][0]["field"], "PercentWorkComplete");
    assert_eq!(get(addr, "/pm/updates/no-such-id").await.status, 404);

    let path = format!("/pm/updates/{}/approve", first.0);
    let reply = post_json(addr, "POST", &path, json!({"by": "Status Manager"})).await;
    assert_eq!(reply.status, 200);
    let outcome = reply.json();
    assert_eq!(outcome["outcome"], "applied");
    assert_eq!(outcome["assignment"]["percent_work_complete"], 50);
    match events.recv().await.expect("an event") {
        HostEvent::UpdateDecided { key, outcome } => {
            assert_eq!(key.assignment, AssignmentUid(3));
            assert!(matches!(outcome, UpdateOutcome::Applied { .. }));
        }
        other => panic!("expected UpdateDecided, got {other:?}"),
    }
    let record = host
        .status_update(&first)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.decider.as_deref(), Some("Status Manager"));
    // Deciding twice is a conflict.
    assert_eq!(post_json(addr, "POST", &path, json!({})).await.status, 409);
    assert_eq!(
        post_json(addr, "POST", "/pm/updates/no-such-id/approve", json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        post_json(addr, "POST", &path, json!({"by": "x", "typo": 1}))
            .await
            .status,
        400
    );

    // Reject with an empty body: default decider and reason.
    let path = format!("/pm/updates/{}/reject", second.0);
    let reply = send(addr, "POST", &path, Some(&bearer()), None, b"").await;
    assert_eq!(reply.status, 200);
    let outcome = reply.json();
    assert_eq!(outcome["outcome"], "rejected");
    assert_eq!(outcome["reason"], "rejected by the status manager");
    let record = host
        .status_update(&second)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.decider.as_deref(), Some("api"));
    let third = pending(&host, 3, "ck-3", 80).await;
    let reply = post_json(
        addr,
        "POST",
        &format!("/pm/updates/{}/reject", third.0),
        json!({"reason": "Bitte erst nächste Woche", "by": "SM"}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["reason"], "Bitte erst nächste Woche");
    server.stop().await;
}

#[tokio::test]
async fn api_approval_that_no_longer_fits_is_unprocessable_and_stays_pending() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Approval).await;
    // Wiring for Zoë runs 2026-03-31 08:00 to 2026-04-01 12:00; the mailbox moves the finish.
    let id = match host
        .submit(update(
            3,
            "ck-1",
            vec![FieldChange {
                field: AssignmentField::Finish,
                old: FieldValue::DateTime(
                    chrono::NaiveDate::from_ymd_opt(2026, 4, 1)
                        .and_then(|d| d.and_hms_opt(12, 0, 0))
                        .expect("valid"),
                ),
                new: FieldValue::DateTime(
                    chrono::NaiveDate::from_ymd_opt(2026, 4, 2)
                        .and_then(|d| d.and_hms_opt(12, 0, 0))
                        .expect("valid"),
                ),
            }],
        ))
        .await
        .expect("accepted")
    {
        UpdateOutcome::Pending { id } => id,
        other => panic!("expected Pending, got {other:?}"),
    };
    // The plan moves Wiring to start after that finish.
    let text = std::fs::read_to_string(fixture("mspdi/edge-cases.xml")).expect("readable");
    let moved = text.replace(
        "<Name>Wiring</Name><OutlineLevel>3</OutlineLevel><Start>2026-03-31T08:00:00</Start><Finish>2026-04-01T12:00:00</Finish>",
        "<Name>Wiring</Name><OutlineLevel>3</OutlineLevel><Start>2026-04-06T08:00:00</Start><Finish>2026-04-07T12:00:00</Finish>",
    );
    assert_ne!(moved, text, "fixture changed");
    let file = dir.path().join("moved.xml");
    std::fs::write(&file, moved).expect("writable");
    host.import_file(
        &file,
        ImportOptions {
            time_zone: chrono_tz::Europe::Berlin,
            ..ImportOptions::default()
        },
        None,
    )
    .await
    .expect("re-imports");

    let server = Server::start(host.clone()).await;
    let reply = post_json(
        server.addr,
        "POST",
        &format!("/pm/updates/{}/approve", id.0),
        json!({}),
    )
    .await;
    assert_eq!(reply.status, 422);
    assert!(
        reply.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("before the start")),
        "{:?}",
        reply.json()
    );
    let record = host
        .status_update(&id)
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(record.state, UpdateState::Pending);
    server.stop().await;
}

/// Observation 5 over the PM HTTP API: a stale approval is 409 with the fields; `force`
/// applies it.
#[tokio::test]
async fn api_approval_of_a_stale_update_is_a_conflict_with_the_fields() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Approval).await;
    let id = pending(&host, 3, "ck-1", 50).await;
    let mut p = host.load_project(guid()).await.unwrap().unwrap();
    p.assignment_mut(AssignmentUid(3))
        .unwrap()
        .apply_percent(Percent::new(30).unwrap());
    host.import(p).await.expect("re-imports");
    let server = Server::start(host.clone()).await;
    let path = format!("/pm/updates/{}/approve", id.0);
    let reply = post_json(server.addr, "POST", &path, json!({})).await;
    assert_eq!(reply.status, 409);
    let body = reply.json();
    assert_eq!(body["fields"][0]["field"], "PercentWorkComplete", "{body}");
    assert_eq!(body["fields"][0]["submitted_against"]["value"], 0, "{body}");
    assert_eq!(body["fields"][0]["current"]["value"], 30, "{body}");
    let reply = post_json(server.addr, "POST", &path, json!({"force": true})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.json()["assignment"]["percent_work_complete"], 50);
    server.stop().await;
}

#[tokio::test]
async fn api_wrong_method_unknown_route_and_oversized_body() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Auto).await;
    let server = Server::start(host).await;
    let addr = server.addr;
    for (method, path, allow) in [
        ("DELETE", "/pm/projects".to_owned(), "GET"),
        ("GET", format!("/pm/projects/{GUID}/publish"), "POST"),
        ("POST", format!("/pm/projects/{GUID}/policy"), "PUT"),
        ("PUT", "/pm/updates".to_owned(), "GET"),
        ("GET", "/pm/updates/x/approve".to_owned(), "POST"),
    ] {
        let reply = send(addr, method, &path, Some(&bearer()), None, b"").await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    for path in ["/", "/pm", "/pm/projects/x/y/z", "/pm/updatesx"] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
    let big = vec![b' '; 70 * 1024];
    let reply = send(
        addr,
        "PUT",
        &format!("/pm/projects/{GUID}/policy"),
        Some(&bearer()),
        Some("application/json"),
        &big,
    )
    .await;
    assert_eq!(reply.status, 413);

    // Without a Content-Length the cap is enforced while reading.
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let chunk = vec![b' '; 8 * 1024];
    let head = format!(
        "PUT /pm/projects/{GUID}/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    for _ in 0..9 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if stream.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers");
    assert!(
        raw.starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(80)])
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Webhook.

/// A webhook worker posting to the receiver at `addr`, until stopped.
struct WebhookWorker {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), taskbridge::pm::embedded::WebhookError>>,
}

impl WebhookWorker {
    fn start(host: &EmbeddedHost, addr: std::net::SocketAddr) -> WebhookWorker {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_webhook(
            host.clone(),
            fast(format!("http://{addr}/hooks/taskbridge"), "webhook-secret"),
            async move {
                let _ = stopped.await;
            },
        ));
        WebhookWorker { stop, handle }
    }

    /// Stops the worker and checks that it ended cleanly.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("worker stops")
            .expect("worker task")
            .expect("worker ends cleanly");
    }
}

/// A received webhook request.
#[derive(Debug)]
struct Hook {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver answering with `statuses` in turn (then 200), one request per connection.
async fn receiver(statuses: Vec<u16>) -> (SocketAddr, mpsc::UnboundedReceiver<Hook>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head_end, length) = loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                raw.extend_from_slice(&buf[..n]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (Some(end), length);
                }
            };
            let Some(end) = head_end else { continue };
            while raw.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let headers = head
                .split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let body = raw[end + 4..].to_vec();
            let status = statuses.next().unwrap_or(200);
            let _ = tx.send(Hook { headers, body });
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (addr, rx)
}

async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Hook>) -> Hook {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a webhook request arrives")
        .expect("the receiver runs")
}

fn fast(url: String, secret: &str) -> WebhookConfig {
    WebhookConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        max_attempts: 3,
        ..WebhookConfig::new(url, Secret::new(secret))
    }
}

#[tokio::test]
async fn webhook_signs_retries_and_delivers_applied_updates_in_order() {
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Auto).await;
    // First a server error (retried), then a permanent refusal for the second delivery (given
    // up after one attempt), then success.
    let (addr, mut hooks) = receiver(vec![503, 200, 400]).await;
    let worker = WebhookWorker::start(&host, addr);

    let UpdateOutcome::Applied { id: first, .. } = host
        .submit_status_update(update(1, "ck-1", vec![percent(27, 50)]))
        .await
        .expect("accepted")
    else {
        panic!("expected Applied");
    };
    let attempt1 = next_hook(&mut hooks).await;
    let attempt2 = next_hook(&mut hooks).await;
    assert_eq!(attempt1.body, attempt2.body, "a retry sends the same body");
    for hook in [&attempt1, &attempt2] {
        let signature = hook.header(SIGNATURE_HEADER).expect("signed");
        assert!(verify(b"webhook-secret", &hook.body, signature));
        assert!(!verify(b"other-secret", &hook.body, signature));
        assert_eq!(hook.header("content-type"), Some("application/json"));
        assert_eq!(
            hook.header("x-taskbridge-event"),
            Some("status_update.applied")
        );
        assert_eq!(hook.header("x-taskbridge-delivery"), Some(first.0.as_str()));
    }
    let body: Value = serde_json::from_slice(&attempt2.body).expect("JSON");
    assert_eq!(body["event"], "status_update.applied");
    assert_eq!(body["project"], GUID);
    assert_eq!(body["update"]["id"], first.0);
    assert_eq!(body["update"]["state"], "applied");
    assert_eq!(body["assignment"]["percent_work_complete"], 50);

    // An update approved elsewhere (here: the same store) is delivered too, after the first.
    host.set_policy(guid(), Policy::Approval)
        .await
        .expect("sets");
    let second = pending(&host, 3, "ck-2", 20).await;
    let third = pending(&host, 8, "ck-3", 0).await;
    host.approve(&second, "sm", false).await.expect("approves");
    host.approve(&third, "sm", false).await.expect("approves");
    let refused = next_hook(&mut hooks).await;
    assert_eq!(
        refused.header("x-taskbridge-delivery"),
        Some(second.0.as_str())
    );
    let delivered = next_hook(&mut hooks).await;
    assert_eq!(
        delivered.header("x-taskbridge-delivery"),
        Some(third.0.as_str())
    );

    worker.stop().await;
}

/// A process whose configuration has no webhook queues no delivery (and no body to build);
/// one with a webhook on the same store still queues its own.
#[tokio::test]
async fn a_host_without_a_webhook_queues_no_delivery() {
    let dir = TempDir::new().expect("temp dir");
    let queued = edge_host(dir.path(), Policy::Auto).await;
    let silent = EmbeddedHost::open_with(
        queued.path(),
        HostOptions {
            webhook: false,
            ..HostOptions::default()
        },
    )
    .await
    .expect("opens");
    let applied = |outcome| match outcome {
        UpdateOutcome::Applied { id, .. } => id,
        other => panic!("expected Applied, got {other:?}"),
    };
    let not_queued = applied(
        silent
            .submit_status_update(update(1, "ck-1", vec![percent(27, 50)]))
            .await
            .expect("accepted"),
    );
    let before = current_percent(&queued, 3).await;
    let queued_id = applied(
        queued
            .submit_status_update(update(3, "ck-2", vec![percent(before, before / 2 + 1)]))
            .await
            .expect("accepted"),
    );
    let (addr, mut hooks) = receiver(vec![200, 200]).await;
    let worker = WebhookWorker::start(&queued, addr);
    // Deliveries go in order: had the first update been queued, it would come first.
    let first = next_hook(&mut hooks).await;
    assert_eq!(
        first.header("x-taskbridge-delivery"),
        Some(queued_id.0.as_str())
    );
    assert_ne!(not_queued, queued_id);
    worker.stop().await;
}

#[tokio::test]
async fn webhook_bad_configuration_is_refused_at_start() {
    let dir = TempDir::new().expect("temp dir");
    let host = EmbeddedHost::open(dir.path()).await.expect("opens");
    for (url, secret) in [
        ("ftp://example.com/x", "s"),
        ("not a url", "s"),
        ("http://x", ""),
    ] {
        let result = run_webhook(host.clone(), fast(url.to_owned(), secret), async {}).await;
        assert!(result.is_err(), "{url} {secret:?}");
    }
}

#[tokio::test]
async fn pm_host_generic_caller_accepts_embedded_host() {
    // The sync engine will be generic over PmHost; the embedded host must fit.
    async fn count<H: PmHost>(host: &H) -> usize {
        host.projects().await.map(|p| p.len()).unwrap_or(0)
    }
    let dir = TempDir::new().expect("temp dir");
    let host = edge_host(dir.path(), Policy::Auto).await;
    let clone = host.clone();
    let counted = tokio::spawn(async move { count(&clone).await })
        .await
        .expect("runs on another task");
    assert_eq!(counted, 1);
}

#[tokio::test]
async fn slow_request_body_gets_408_within_the_body_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = edge_host(dir.path(), Policy::Auto).await;
    let server = Server::start(host).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    let head = format!(
        "POST /pm/updates/1/approve HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        bearer()
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    // The rest never comes; the server answers after its body time-out and closes.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes before the guard")
        .expect("reads");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.stop().await;
}
