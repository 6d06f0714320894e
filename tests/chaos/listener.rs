//! Hostile input at the push listener of a running `taskbridge serve`, interleaved with real
//! push notifications (user edits in the simulator) and valid notifications of our own: the
//! process stays up, its memory stays bounded, each edit is applied exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use taskbridge::pm::ProjectGuid;

use crate::listener_support::{
    RawResponse, chunked, exchange, notification, notify, parse_response, post, post_head, request,
    upload,
};
use crate::support::*;

const NAME: &str = "listener";
const MAILBOXES: usize = 3;
const ASSIGNMENTS: usize = 60;
const ROUNDS: usize = 10;
const EDITS_PER_ROUND: usize = 5;
const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

/// Answers by kind of request, for the figures and the checks.
#[derive(Default)]
struct Tally(std::sync::Mutex<HashMap<(&'static str, u16), u64>>);

impl Tally {
    fn add(&self, kind: &'static str, status: u16) {
        *self.0.lock().unwrap().entry((kind, status)).or_default() += 1;
    }

    fn statuses(&self, kind: &str) -> Vec<(u16, u64)> {
        let mut v: Vec<(u16, u64)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, s), n)| (*s, *n))
            .collect();
        v.sort_unstable();
        v
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

fn status_of(r: Option<RawResponse>) -> u16 {
    r.map(|r| r.status).unwrap_or(0)
}

/// A SendNotification with a DOCTYPE: external entities pointing at a canary port and a file,
/// or an expansion bomb.
fn doctype_bodies(canary: u16) -> Vec<String> {
    let env = |inner: &str| {
        notification("sub", &["AAA"], "w").replacen(
            "<t:SubscriptionId>sub</t:SubscriptionId>",
            &format!("<t:SubscriptionId>{inner}</t:SubscriptionId>"),
            1,
        )
    };
    let with_doctype = |doctype: &str, inner: &str| {
        env(inner).replacen(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
            &format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{doctype}"),
            1,
        )
    };
    let mut lol = String::from("<!DOCTYPE soap:Envelope [<!ENTITY lol \"lol\">");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        lol.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    lol.push_str("]>");
    vec![
        with_doctype(
            &format!(
                "<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM \"http://127.0.0.1:{canary}/xxe\">]>"
            ),
            "&xxe;",
        ),
        with_doctype(
            "<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
            "&xxe;",
        ),
        with_doctype(
            &format!("<!DOCTYPE soap:Envelope SYSTEM \"http://127.0.0.1:{canary}/dtd\">"),
            "sub",
        ),
        with_doctype(&lol, "&lol9;"),
    ]
}

fn malformed_bodies(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let valid = notification("sub", &["AAA"], "w");
    let mut garbage = vec![0u8; 2048];
    rng.fill(&mut garbage[..]);
    vec![
        valid.as_bytes()[..valid.len() / 2].to_vec(),
        valid.replace("</soap:Envelope>", "").into_bytes(),
        valid
            .replace("http://schemas.xmlsoap.org/soap/envelope/", "urn:other")
            .into_bytes(),
        b"<a><b></a></b>".to_vec(),
        b"not xml at all".to_vec(),
        garbage,
        valid
            .replace("<t:SubscriptionId>", "<t:SubscriptionId>\u{0}")
            .into_bytes(),
        format!("{}{}", "<x>".repeat(10_000), "</x>".repeat(10_000)).into_bytes(),
    ]
}

/// A body declared longer than what is sent before the client closes its side.
async fn truncated(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let body = notification("sub", &["AAA"], "w");
    let mut head = post_head(path, Some("text/xml"), Some(body.len() + 500));
    head.extend_from_slice(&body.as_bytes()[..body.len() / 3]);
    let _ = s.write_all(&head).await;
    let _ = s.shutdown().await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw)).await;
    parse_response(&raw).map(|r| r.status).unwrap_or(0)
}

/// A client that sends its request head one byte at a time; returns how long the server kept
/// the connection and whether it ever answered.
async fn slow_head(addr: SocketAddr, path: String) -> (Duration, u16) {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (Duration::ZERO, 0);
    };
    let (mut rd, mut wr) = stream.into_split();
    let head = post_head(&path, Some("text/xml"), Some(100));
    let writer = tokio::spawn(async move {
        for b in head {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        std::future::pending::<()>().await;
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(90), rd.read_to_end(&mut raw)).await;
    writer.abort();
    (
        started.elapsed(),
        parse_response(&raw).map(|r| r.status).unwrap_or(0),
    )
}

/// A client that sends its head at once, then its body one byte per second.
async fn slow_body(addr: SocketAddr, path: String) -> (Duration, u16) {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (Duration::ZERO, 0);
    };
    let (mut rd, mut wr) = stream.into_split();
    let body = notification("sub", &["AAA"], "w");
    let head = post_head(&path, Some("text/xml"), Some(body.len()));
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for b in body.into_bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(90), rd.read_to_end(&mut raw)).await;
    writer.abort();
    (
        started.elapsed(),
        parse_response(&raw).map(|r| r.status).unwrap_or(0),
    )
}

fn random_token(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Paths that are not the notification path: random ones, and near misses of the secret.
fn wrong_paths(rng: &mut StdRng, secret: &str) -> Vec<String> {
    let mut flipped: Vec<char> = secret.chars().collect();
    let i = rng.gen_range(0..flipped.len());
    flipped[i] = if flipped[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    vec![
        "/".to_string(),
        "/ews/notify".to_string(),
        "/ews/notify/".to_string(),
        format!("/ews/notify/{}", random_token(rng, secret.len())),
        format!("/ews/notify/{flipped}"),
        format!("/ews/notify/{}", &secret[..secret.len() - 1]),
        format!("/ews/notify/{secret}x"),
        format!("/ews/notify/{secret}/"),
        format!("/ews/notify/{}", secret.to_uppercase()),
        format!("/EWS/notify/{secret}"),
        format!("/ews/../ews/notify/{secret}"),
        format!("/{}", random_token(rng, 20)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_at_the_listener_leaves_serve_up_bounded_and_exact() {
    let _serial = serial().await;
    let mut ws = Workspace::new("debug");
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    ws.set_env("TASKBRIDGE_SYNC_MAX_DEBOUNCE_MS", 1000);
    // No reconciliation during the test: every edit must come through a notification.
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 3600);
    // Every client here is 127.0.0.1, the simulator's pushes too: the per-address limit is the
    // other test's subject.
    ws.set_env("TASKBRIDGE_LISTENER_MAX_CONNECTIONS_PER_ADDRESS", 256);
    let boxes = mailboxes(MAILBOXES);
    let guid = ProjectGuid(Uuid::from_u128(0xc4a0_5004));
    let sim = SimProc::start(&ws, &boxes, &["--push-time-scale", "0.01"]);
    let admin = Admin::new(&sim);
    ws.import(&project_json(guid, ASSIGNMENTS, &boxes)).await;
    let mut serve = ws.spawn("serve", &["serve"], false);
    let all_keys = keys(guid, ASSIGNMENTS);
    let items = wait_until("the published tasks", Duration::from_secs(120), || async {
        let c = census(&admin, &boxes, &all_keys).await;
        c.missing.is_empty().then_some(c)
    })
    .await;
    let subs = wait_until("the subscriptions", Duration::from_secs(60), || async {
        let subs = admin.subscriptions().await;
        (subs.len() == MAILBOXES).then_some(subs)
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", ws.listen_port).parse().unwrap();
    let secret = ws.listener_secret();
    let path = format!("/ews/notify/{secret}");
    // A canary where the external entities point: nothing may ever connect to it.
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary_port = canary.local_addr().unwrap().port();
    let canary_hits = Arc::new(AtomicU64::new(0));
    let hits = canary_hits.clone();
    let canary_task = tokio::spawn(async move {
        while canary.accept().await.is_ok() {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let tally = Arc::new(Tally::default());
    let valid = |sub: &serde_json::Value| {
        let id = sub["id"].as_str().expect("id").to_string();
        let mailbox = sub["mailbox"].as_str().expect("mailbox").to_string();
        let item = items
            .by_key
            .values()
            .find(|v| v[0].0 == mailbox)
            .map(|v| v[0].1["ItemId"]["Id"].as_str().expect("id").to_string())
            .expect("a task of the mailbox");
        let watermark = sub["watermark"].as_str().unwrap_or("w").to_string();
        notification(&id, &[item.as_str()], &watermark)
    };

    // Warm-up: one of each, so that the allocator's pools are in place before measuring.
    assert_eq!(notify(addr, &path, &valid(&subs[0])).await.status, 200);
    assert_eq!(
        status_of(Some(
            post(addr, &path, "text/xml", &malformed_bodies(&mut rng)[0]).await
        )),
        400
    );
    assert_eq!(
        upload(addr, &path, 4 << 20, true, Duration::from_secs(60))
            .await
            .0,
        413
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = serve.rss_kib().expect("RSS of serve");

    // Slow clients hold connections in the background for the whole run.
    let mut slow = Vec::new();
    for i in 0..24 {
        let p = if i % 2 == 0 {
            path.clone()
        } else {
            "/ews/notify/slow".to_string()
        };
        slow.push(tokio::spawn(slow_head(addr, p)));
    }
    for _ in 0..6 {
        slow.push(tokio::spawn(slow_body(addr, path.clone())));
    }

    let mut expected: HashMap<String, u8> = HashMap::new();
    let mut edit_keys = all_keys.clone();
    let mut valid_sent = 0u64;
    let mut big = Vec::new();
    for round in 0..ROUNDS {
        let mut work = tokio::task::JoinSet::new();
        // Real pushes: users edit tasks in the simulator.
        for _ in 0..EDITS_PER_ROUND {
            let key = edit_keys.remove(rng.gen_range(0..edit_keys.len()));
            let (mailbox, task) = &items.by_key[&key][0];
            let id = task["ItemId"]["Id"].as_str().unwrap().to_string();
            let p = rng.gen_range(1..=99u8);
            admin
                .patch(mailbox, &id, &json!({ "PercentComplete": p }))
                .await;
            expected.insert(key, p);
        }
        // Valid notifications of our own, each sent twice (a replay).
        for sub in &subs {
            let body = valid(sub);
            for _ in 0..2 {
                let (t, body) = (tally.clone(), body.clone());
                let p = path.clone();
                work.spawn(async move { t.add("valid", notify(addr, &p, &body).await.status) });
                valid_sent += 1;
            }
        }
        let unknown = notification(&random_token(&mut rng, 40), &["AAA"], "w");
        let (t, p) = (tally.clone(), path.clone());
        work.spawn(async move {
            let r = notify(addr, &p, &unknown).await;
            let kind = if r.text().contains("Unsubscribe") {
                "unknown subscription (Unsubscribe)"
            } else {
                "unknown subscription (other answer)"
            };
            t.add(kind, r.status)
        });
        for body in malformed_bodies(&mut rng) {
            let (t, p) = (tally.clone(), path.clone());
            work.spawn(async move {
                t.add("malformed", post(addr, &p, "text/xml", &body).await.status)
            });
        }
        for body in doctype_bodies(canary_port) {
            let (t, p) = (tally.clone(), path.clone());
            work.spawn(async move { t.add("doctype", notify(addr, &p, &body).await.status) });
        }
        for _ in 0..2 {
            let (t, p) = (tally.clone(), path.clone());
            work.spawn(async move { t.add("truncated", truncated(addr, &p).await) });
        }
        let body = notification("sub", &["AAA"], "w");
        for ct in [
            "application/json",
            "text/plain",
            "text/xml; charset=utf-16",
            "multipart/form-data",
        ] {
            let (t, p, b) = (tally.clone(), path.clone(), body.clone());
            work.spawn(async move {
                t.add(
                    "wrong content type",
                    post(addr, &p, ct, b.as_bytes()).await.status,
                )
            });
        }
        {
            // No Content-Type at all, chunked.
            let (t, p, b) = (tally.clone(), path.clone(), body.clone());
            work.spawn(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                let r = exchange(s, post_head(&p, None, None), chunked(b.as_bytes(), 100)).await;
                t.add("wrong content type", status_of(r))
            });
        }
        for wrong in wrong_paths(&mut rng, &secret) {
            let (t, b) = (tally.clone(), body.clone());
            work.spawn(async move {
                t.add("wrong path", notify(addr, &wrong, &b).await.status);
                t.add("wrong path", request(addr, "GET", &wrong).await.status);
            });
        }
        if round % 3 == 0 {
            let p = path.clone();
            let with_length = round % 2 == 0;
            big.push(tokio::spawn(async move {
                upload(addr, &p, HUNDRED_MIB, !with_length, Duration::from_secs(60)).await
            }));
        }
        while let Some(r) = work.join_next().await {
            r.expect("a request task");
        }
        assert!(serve.running(), "serve died in round {round}");
    }
    let mut big_sent = 0u64;
    for b in big {
        let (status, sent) = b.await.unwrap();
        tally.add("100 MiB body", status);
        big_sent += sent;
    }
    let mut slow_longest = Duration::ZERO;
    for s in slow {
        let (held, status) = s.await.unwrap();
        tally.add("slow client", status);
        slow_longest = slow_longest.max(held);
    }

    // The effect: one applied status update per edit, with the edited value.
    let applied = wait_until(
        "every edit on the PM side",
        Duration::from_secs(120),
        || async {
            let updates = ws.json(&["updates", "--json"]).await;
            let applied: Vec<serde_json::Value> = updates
                .as_array()?
                .iter()
                .filter(|u| u["state"] == "applied")
                .cloned()
                .collect();
            (applied.len() >= expected.len()).then_some(applied)
        },
    )
    .await;
    // Let replays and late notifications do whatever they would do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let updates = ws.json(&["updates", "--json"]).await;
    let updates = updates.as_array().unwrap();
    let mut per_key: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for u in updates {
        per_key
            .entry(u["key"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(u);
    }
    let rss_after = serve.rss_kib().expect("RSS of serve");
    let (health, _) = ws.pm_api("/healthz", None).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ws.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let notifications_metric = metrics
        .lines()
        .find(|l| l.starts_with("taskbridge_notifications_received_total"))
        .unwrap_or("")
        .to_string();
    assert!(serve.running(), "serve died");
    let exit = serve.terminate().await;
    canary_task.abort();
    let log = std::fs::read_to_string(&serve.log).unwrap_or_default();

    figure(NAME, "hostile and valid requests sent", tally.total());
    for kind in [
        "valid",
        "unknown subscription (Unsubscribe)",
        "unknown subscription (other answer)",
        "malformed",
        "doctype",
        "truncated",
        "wrong content type",
        "wrong path",
        "100 MiB body",
        "slow client",
    ] {
        figure(
            NAME,
            &format!("answers to {kind}"),
            format!("{:?}", tally.statuses(kind)),
        );
    }
    figure(
        NAME,
        "100 MiB bodies: MiB written before the server closed (4 bodies)",
        big_sent >> 20,
    );
    figure(
        NAME,
        "longest a slow client was kept (s)",
        slow_longest.as_secs(),
    );
    figure(
        NAME,
        "canary connections (external entities fetched)",
        canary_hits.load(Ordering::SeqCst),
    );
    figure(NAME, "edits", expected.len());
    figure(NAME, "status updates applied", applied.len());
    figure(
        NAME,
        "serve RSS before / after (KiB)",
        format!("{rss_before} / {rss_after}"),
    );
    figure(
        NAME,
        "serve RSS growth (KiB)",
        rss_after.saturating_sub(rss_before),
    );
    figure(NAME, "engine notifications metric", &notifications_metric);

    assert_eq!(health, 200);
    assert_eq!(exit, Some(0), "serve did not stop cleanly");
    assert!(!log.contains("panicked"), "serve panicked");
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "an external entity was fetched"
    );
    assert_eq!(tally.statuses("valid"), vec![(200, valid_sent)]);
    assert!(
        tally
            .statuses("unknown subscription (other answer)")
            .is_empty()
    );
    let only = |kind: &str, allowed: &[u16]| {
        let got = tally.statuses(kind);
        assert!(
            got.iter().all(|(s, _)| allowed.contains(s)),
            "{kind}: {got:?}"
        );
    };
    only("malformed", &[400]);
    only("doctype", &[400]);
    // A body cut short: 400, or closed without an answer.
    only("truncated", &[400, 0]);
    only("wrong content type", &[415]);
    only("wrong path", &[404]);
    only("100 MiB body", &[413]);
    // Slow heads are cut at the head time-out (closed, or 408), slow bodies at the body one.
    only("slow client", &[0, 408]);
    assert!(
        big_sent < 4 * HUNDRED_MIB,
        "the server read the big bodies whole"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 64 * 1024, "serve's RSS grew by {growth} KiB");
    assert_eq!(applied.len(), expected.len(), "one status update per edit");
    for (key, p) in &expected {
        let list = per_key.get(key).cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "{key}: {list:?}");
        let changes = &list[0]["changes"];
        let percent = changes.as_array().and_then(|c| {
            c.iter()
                .find(|c| c["new"]["type"] == "percent")
                .and_then(|c| c["new"]["value"].as_u64())
        });
        assert_eq!(percent, Some(u64::from(*p)), "{key}: {changes}");
    }
    assert_eq!(
        per_key.len(),
        expected.len(),
        "updates for keys nobody edited"
    );
    assert_no_secret_in_logs(NAME, &ws, &[]);
}

// ---------------------------------------------------------------------------------------------
// Connection exhaustion

const HOSTILE_CONNECTIONS: usize = 2_000;
/// Hostile clients come from 127.0.0.2 to 127.0.0.(1 + HOSTILE_ADDRESSES) (all loopback on
/// Linux); the real notifications from 127.0.0.1.
const HOSTILE_ADDRESSES: usize = 8;
const REAL_NOTIFICATIONS: usize = 20;
/// How soon a hostile client opens a new connection after the server closed its last one.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Raises the soft limit on open files to the hard one: the test holds 2,000 sockets and
/// `serve` (which inherits the limit) a few hundred.
fn raise_open_file_limit() -> libc::rlim_t {
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

/// What the hostile clients did, for the figures.
#[derive(Default)]
struct Hostile {
    /// Connections open now (connected, not yet seen closed).
    open: AtomicU64,
    /// Connections made in all.
    opened: AtomicU64,
    /// Connections the server closed.
    closed_by_server: AtomicU64,
    /// Connection attempts refused or failed.
    failed: AtomicU64,
}

/// One hostile client: connects from `source`, sends a head one byte a second and never
/// finishes it, and reconnects [`RECONNECT_PAUSE`] after the server closes, until `stop`.
async fn hostile_client(
    source: std::net::IpAddr,
    target: SocketAddr,
    stats: Arc<Hostile>,
    stop: Arc<tokio::sync::Notify>,
) {
    let head = b"POST /ews/notify/guess HTTP/1.1\r\nHost: tb\r\nContent-Type: text/xml\r\nX-Slow: "
        .to_vec();
    let run = async {
        loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(source, 0))
                .expect("bind a loopback source address");
            let Ok(stream) = socket.connect(target).await else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            stats.opened.fetch_add(1, Ordering::Relaxed);
            stats.open.fetch_add(1, Ordering::Relaxed);
            let (mut rd, mut wr) = stream.into_split();
            let mut head = head.clone().into_iter();
            let writer = async {
                loop {
                    let b = head.next().unwrap_or(b'x');
                    if wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            let mut sink = [0u8; 256];
            tokio::select! {
                () = writer => {}
                _ = rd.read(&mut sink) => {}
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    };
    tokio::select! {
        () = run => {}
        () = stop.notified() => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_answered_within_a_second_while_2000_hostile_connections_are_held() {
    const NAME: &str = "listener-exhaustion";
    let _serial = serial().await;
    let fd_limit = raise_open_file_limit();
    assert!(
        fd_limit >= (HOSTILE_CONNECTIONS + 500) as libc::rlim_t,
        "the open-file limit ({fd_limit}) is too low for this test"
    );
    let mut ws = Workspace::new("debug");
    ws.set_env("TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS", 3600);
    let boxes = mailboxes(1);
    let guid = ProjectGuid(Uuid::from_u128(0xc4a0_5016));
    let sim = SimProc::start(&ws, &boxes, &["--push-time-scale", "0.01"]);
    let admin = Admin::new(&sim);
    ws.import(&project_json(guid, 4, &boxes)).await;
    let mut serve = ws.spawn("serve", &["serve"], false);
    let subs = wait_until("the subscription", Duration::from_secs(120), || async {
        let subs = admin.subscriptions().await;
        (subs.len() == 1).then_some(subs)
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", ws.listen_port).parse().unwrap();
    let path = format!("/ews/notify/{}", ws.listener_secret());
    let sub_id = subs[0]["id"].as_str().expect("id").to_string();
    let body = notification(&sub_id, &["AAA"], "w");
    assert_eq!(notify(addr, &path, &body).await.status, 200, "warm-up");

    let stats = Arc::new(Hostile::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut hostile = Vec::new();
    for i in 0..HOSTILE_CONNECTIONS {
        let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % HOSTILE_ADDRESSES) as u8,
        ));
        hostile.push(tokio::spawn(hostile_client(
            source,
            addr,
            stats.clone(),
            stop.clone(),
        )));
    }
    // Until every hostile client has had a connection once.
    wait_until(
        "2,000 hostile connections",
        Duration::from_secs(60),
        || async {
            (stats.opened.load(Ordering::Relaxed) >= HOSTILE_CONNECTIONS as u64).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut latencies = Vec::new();
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..REAL_NOTIFICATIONS {
        held.push(stats.open.load(Ordering::Relaxed));
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(30), async {
            let stream = TcpStream::connect(addr).await.ok()?;
            let head = post_head(&path, Some("text/xml; charset=utf-8"), Some(body.len()));
            exchange(stream, head, body.clone().into_bytes()).await
        })
        .await
        .ok()
        .flatten()
        .map(|r| r.status)
        .unwrap_or(0);
        latencies.push(started.elapsed());
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let churn = stats.opened.load(Ordering::Relaxed);
    stop.notify_waiters();
    for h in hostile {
        h.abort();
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ws.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shed = metrics
        .lines()
        .find(|l| l.contains("taskbridge_listener_requests_total{outcome=\"shed\"}"))
        .unwrap_or("")
        .to_string();
    assert!(serve.running(), "serve died");
    let exit = serve.terminate().await;
    let log = std::fs::read_to_string(&serve.log).unwrap_or_default();

    latencies.sort();
    let ms = |d: &Duration| d.as_millis();
    figure(NAME, "open-file limit", fd_limit);
    figure(
        NAME,
        "hostile connections open at each notification (min / max)",
        format!(
            "{} / {}",
            held.iter().min().unwrap_or(&0),
            held.iter().max().unwrap_or(&0)
        ),
    );
    figure(NAME, "hostile connections made in all", churn);
    figure(
        NAME,
        "hostile connections closed by the server",
        stats.closed_by_server.load(Ordering::Relaxed),
    );
    figure(NAME, "listener shed metric", &shed);
    figure(
        NAME,
        "notification latency ms (min / median / max)",
        format!(
            "{} / {} / {}",
            ms(&latencies[0]),
            ms(&latencies[latencies.len() / 2]),
            ms(&latencies[latencies.len() - 1])
        ),
    );
    figure(NAME, "notification answers", format!("{statuses:?}"));

    assert_eq!(exit, Some(0), "serve did not stop cleanly");
    assert!(!log.contains("panicked"), "serve panicked");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every notification answered OK: {statuses:?}"
    );
    let slowest = latencies[latencies.len() - 1];
    assert!(
        slowest < Duration::from_secs(1),
        "a notification took {slowest:?} with {HOSTILE_CONNECTIONS} hostile connections held"
    );
}
