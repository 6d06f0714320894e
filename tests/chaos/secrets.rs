//! Secrets and access: the listener secret cannot be guessed, the PM API wants its token,
//! certificates are verified unless a CA is configured, and no password, token or secret
//! shows in any log line, even at TRACE.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use taskbridge::pm::ProjectGuid;

use crate::listener_support::{notification, notify, request};
use crate::support::*;

const NAME: &str = "secrets";

fn tls_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

async fn pm_status(ws: &Workspace, header: Option<String>, path: &str) -> u16 {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{}{path}", ws.admin_port));
    if let Some(h) = header {
        req = req.header("Authorization", h);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_unguessable_tokens_required_tls_verified_and_never_logged() {
    let _serial = serial().await;
    let mut ws = Workspace::new("trace");
    ws.set_env("TASKBRIDGE_SYNC_DEBOUNCE_MS", 100);
    let boxes = mailboxes(2);
    let guid = ProjectGuid(Uuid::from_u128(0xc4a0_5005));
    let sim = SimProc::start(&ws, &boxes, &["--push-time-scale", "0.01"]);
    let admin = Admin::new(&sim);
    ws.import(&project_json(guid, 10, &boxes)).await;
    let mut serve = ws.spawn("serve", &["serve"], false);
    let all = keys(guid, 10);
    let tasks = wait_until("the published tasks", Duration::from_secs(120), || async {
        let c = census(&admin, &boxes, &all).await;
        c.missing.is_empty().then_some(c)
    })
    .await;
    wait_until("the subscriptions", Duration::from_secs(60), || async {
        (admin.subscriptions().await.len() == boxes.len()).then_some(())
    })
    .await;
    let secret = ws.listener_secret();
    let token = ws.admin_token();
    let listener: SocketAddr = format!("127.0.0.1:{}", ws.listen_port).parse().unwrap();
    let path = format!("/ews/notify/{secret}");

    // A user edit travels the whole way (push, EWS, PM), so that every part logs something.
    let (mailbox, task) = &tasks.by_key[&all[0]][0];
    let id = task["ItemId"]["Id"].as_str().unwrap();
    admin
        .patch(mailbox, id, &json!({ "PercentComplete": 40 }))
        .await;
    wait_until(
        "the edit on the PM side",
        Duration::from_secs(60),
        || async {
            let updates = ws.json(&["updates", "--json"]).await;
            updates
                .as_array()?
                .iter()
                .any(|u| u["state"] == "applied")
                .then_some(())
        },
    )
    .await;

    // The listener: 404 for anything but the exact path, whatever the method.
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let mut guesses = 0;
    let mut not_found = 0;
    let body = notification("sub", &["A"], "w");
    let mut tries: Vec<String> = (0..200)
        .map(|i| {
            let mut guess: Vec<u8> = secret.bytes().collect();
            // Near misses: one character changed at every position in turn, then random ones.
            if i < guess.len() {
                guess[i] = if guess[i] == b'a' { b'b' } else { b'a' };
            } else {
                for b in guess.iter_mut() {
                    *b = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                        [rng.gen_range(0..64)];
                }
            }
            format!("/ews/notify/{}", String::from_utf8(guess).unwrap())
        })
        .collect();
    tries.extend([
        "/ews/notify".to_string(),
        format!("/ews/notify/{}", &secret[..20]),
        format!("/ews/notify/{secret}{secret}"),
        format!("/ews/notify/{}", secret.to_ascii_uppercase()),
        format!("/ews/notify/%{:02X}{}", secret.as_bytes()[0], &secret[1..]),
        format!("/{secret}"),
        format!("/ews/notify/{secret}/.."),
    ]);
    for t in &tries {
        guesses += 1;
        let post = notify(listener, t, &body).await.status;
        let get = request(listener, "GET", t).await.status;
        if post == 404 && get == 404 {
            not_found += 1;
        }
    }
    assert_eq!(not_found, guesses, "a guessed path was not a 404");
    assert_eq!(request(listener, "GET", &path).await.status, 405);

    // The PM API: no token, a wrong token, a near miss, the token elsewhere: 401.
    let mut near: Vec<char> = token.chars().collect();
    near[0] = if near[0] == 'a' { 'b' } else { 'a' };
    let near: String = near.into_iter().collect();
    let refused = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {near}")),
        Some(format!("Bearer {token}x")),
        Some(format!("Basic {token}")),
        Some(token.clone()),
    ];
    let mut pm_refusals = 0;
    for header in &refused {
        for p in ["/pm/projects", "/pm/updates", "/pm/nothing-here"] {
            let status = pm_status(&ws, header.clone(), p).await;
            assert_eq!(status, 401, "{p} with {header:?}");
            pm_refusals += 1;
        }
    }
    let status = pm_status(&ws, None, &format!("/pm/projects?token={token}")).await;
    assert_eq!(status, 401);
    assert_eq!(
        pm_status(&ws, Some(format!("Bearer {token}")), "/pm/projects").await,
        200
    );

    // The simulator cannot deliver while the connector is down: it retries, and logs.
    assert_eq!(serve.terminate().await, Some(0));
    admin
        .patch(mailbox, id, &json!({ "PercentComplete": 60 }))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // TLS: a server whose certificate is signed by a CA the system does not know is refused
    // by default, and accepted once that CA is configured.
    let mut tls_ws = Workspace::new("trace");
    let tls_sim = SimProc::start(
        &tls_ws,
        &boxes,
        &[
            "--tls-cert",
            &tls_fixture("server.pem"),
            "--tls-key",
            &tls_fixture("server.key"),
        ],
    );
    tls_ws.set_env(
        "TASKBRIDGE_EXCHANGE_URL",
        format!("https://127.0.0.1:{}/EWS/Exchange.asmx", tls_ws.ews_port),
    );
    let tls_guid = tls_ws.import(&project_json(guid, 4, &boxes)).await;
    let refused = tls_ws.run(&["publish", &tls_guid.to_string()]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("untrusted server certificate"),
        "{}",
        refused.stderr
    );
    let nothing = tls_ws.json(&["status", "--json"]).await;
    assert!(
        nothing
            .as_array()
            .is_none_or(|a| a.iter().all(|l| l["item_id"].is_null())),
        "{nothing}"
    );
    tls_ws.set_env("TASKBRIDGE_EXCHANGE_CA_FILE", tls_fixture("ca.pem"));
    let accepted = tls_ws.run(&["publish", &tls_guid.to_string()]).await;
    assert!(accepted.ok(), "{}", accepted.stderr);
    let synced = tls_ws.json(&["status", "--json"]).await;
    assert_eq!(synced.as_array().map(Vec::len), Some(4), "{synced}");
    drop(tls_sim);

    figure(NAME, "guessed listener paths, all 404", guesses);
    figure(
        NAME,
        "PM API requests without the right token, all 401",
        pm_refusals + 1,
    );
    figure(
        NAME,
        "publish to an untrusted certificate",
        "refused (exit 1)",
    );
    figure(NAME, "publish with its CA in exchange.ca_file", "accepted");
    let owners: Vec<(String, String)> = (0..boxes.len())
        .map(|i| ("owner password".to_string(), format!("owner-pw-{i}")))
        .collect();
    assert_no_secret_in_logs(NAME, &ws, &owners);
    assert_no_secret_in_logs(&format!("{NAME}/tls"), &tls_ws, &owners);
}
