//! Kerberos (Negotiate) end to end against a real MIT KDC: a throw-away realm
//! (`tests/external/kerberos.rs`), `taskbridge sim --auth negotiate --keytab` over TLS as a child
//! process, and taskbridge as the client, over real sockets:
//! - `taskbridge check --auth negotiate` passes with a ticket cache, and with a client keytab;
//! - a streaming connection (Subscribe + GetStreamingEvents) authenticates by Kerberos;
//! - a principal the server has no account for, no credentials at all, and an unknown service
//!   principal name each fail with exit code 6 and a message that says which;
//! - under `--extended-protection require` a ticket without channel bindings is refused with
//!   401, while taskbridge (which binds to the TLS certificate) passes; under `allow` the same
//!   unbound ticket is let through, so the refusal is the bindings'.
//!
//! The Kerberos variables are set only for child processes. Library calls that need them run in
//! a child too: this test binary started again on its ignored `helper` test.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod external;

use external::kerberos::{REALM, Realm};

const BIN: &str = env!("CARGO_BIN_EXE_taskbridge");
const HELPER_MODE: &str = "TASKBRIDGE_KRB_HELPER";
const HELPER_URL: &str = "TASKBRIDGE_KRB_HELPER_URL";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `taskbridge sim` over TLS with Kerberos, `svc` as the service account and `ann` as a
/// mailbox owner; returns the process and its EWS URL (host `localhost`, as the SPN).
fn start_sim(realm: &Realm, keytab: &Path, protection: &str) -> (Kill, String) {
    let port = free_port();
    let tls = tls_dir();
    let mut child = Command::new(BIN)
        .envs(realm.env())
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(tls.join("server.pem"))
        .arg("--tls-key")
        .arg(tls.join("server.key"))
        .args(["--auth", "negotiate", "--keytab"])
        .arg(keytab)
        .args(["--extended-protection", protection])
        .args(["--service", "svc@taskbridge.test:unused"])
        .args(["--user", "ann@taskbridge.test:unused"])
        .args(["--push-time-scale", "0.01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sim");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("sim prints its URL");
    assert!(first.contains(&format!(":{port}/EWS")), "{first}");
    (
        Kill(child),
        format!("https://localhost:{port}/EWS/Exchange.asmx"),
    )
}

fn check(realm: &Realm, url: &str, creds: &[(&str, OsString)], extra: &[&str]) -> Output {
    Command::new(BIN)
        .envs(realm.env())
        .env_remove("KRB5CCNAME")
        .env_remove("KRB5_CLIENT_KTNAME")
        .envs(creds.iter().cloned())
        .args(["check", "--url", url, "--auth", "negotiate", "--ca-file"])
        .arg(tls_dir().join("ca.pem"))
        .args(["--mailbox", "ann@taskbridge.test"])
        .args(extra)
        .output()
        .expect("run taskbridge check")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// This binary's `helper` test in a child with the realm's variables and `creds`; its stdout.
fn run_helper(realm: &Realm, mode: &str, url: &str, creds: &[(&str, OsString)]) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .envs(realm.env())
        .env_remove("KRB5CCNAME")
        .envs(creds.iter().cloned())
        .env(HELPER_MODE, mode)
        .env(HELPER_URL, url)
        .args([
            "--ignored",
            "--exact",
            "helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the helper");
    let all = text(&out);
    assert!(out.status.success(), "helper {mode}: {all}");
    all
}

#[test]
fn taskbridge_authenticates_to_the_simulator_by_kerberos() {
    let Some(realm) = Realm::start("Kerberos (Negotiate) against the simulator") else {
        return;
    };
    let service_keytab = realm.add_principal("HTTP/localhost");
    let svc_keytab = realm.add_principal("svc");
    let stranger_keytab = realm.add_principal("stranger");
    let svc = realm.kinit(&format!("svc@{REALM}"), &svc_keytab);
    let stranger = realm.kinit(&format!("stranger@{REALM}"), &stranger_keytab);
    let ccache = |path: &Path| vec![("KRB5CCNAME", OsString::from(path))];

    let (_sim, url) = start_sim(&realm, &service_keytab, "require");

    // The service account's ticket cache: authenticated, and impersonation works.
    let out = check(&realm, &url, &ccache(&svc), &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["authenticated"], true, "{report}");

    // No ticket cache, only a client keytab: MIT's library gets the ticket itself.
    let empty = realm.dir().join("empty.ccache");
    let out = check(
        &realm,
        &url,
        &[
            ("KRB5CCNAME", OsString::from(&empty)),
            ("KRB5_CLIENT_KTNAME", OsString::from(&svc_keytab)),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A valid ticket for a principal the server has no account for.
    let out = check(&realm, &url, &ccache(&stranger), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("refused the Kerberos authentication"),
        "{}",
        text(&out)
    );

    // No credentials at all.
    let nothing = realm.dir().join("nothing.ccache");
    let out = check(&realm, &url, &ccache(&nothing), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("no Kerberos ticket for HTTP/localhost"),
        "{}",
        text(&out)
    );

    // A service principal name the KDC does not know.
    let out = check(&realm, &url, &ccache(&svc), &["--spn", "HTTP/nowhere.test"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("no Kerberos ticket for HTTP/nowhere.test"),
        "{all}"
    );
    assert!(all.contains("not found in Kerberos database"), "{all}");

    // A streaming subscription and one GetStreamingEvents connection, by Kerberos.
    let out = run_helper(&realm, "stream", &url, &ccache(&svc));
    assert!(out.contains("STREAM OPEN"), "{out}");

    // Under `require` a ticket without channel bindings is refused ...
    let out = run_helper(&realm, "unbound", &url, &ccache(&svc));
    assert!(out.contains("STATUS 401"), "{out}");
    // ... while under `allow` the same kind of ticket is let through.
    let (_allow, allow_url) = start_sim(&realm, &service_keytab, "allow");
    let out = run_helper(&realm, "unbound", &allow_url, &ccache(&svc));
    assert!(
        out.contains("STATUS ") && !out.contains("STATUS 401"),
        "{out}"
    );
    let out = check(&realm, &allow_url, &ccache(&svc), &[]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Run only as a child of the test above (`TASKBRIDGE_KRB_HELPER` says what to do): library
/// calls that need the realm's variables in their own process.
#[tokio::test]
#[ignore = "run by taskbridge_authenticates_to_the_simulator_by_kerberos in a child process"]
async fn helper() {
    let mode = std::env::var(HELPER_MODE).expect("started by the Kerberos test");
    let url = std::env::var(HELPER_URL).expect("started by the Kerberos test");
    match mode.as_str() {
        "stream" => stream(&url).await,
        "unbound" => unbound(&url).await,
        other => panic!("unknown helper mode {other}"),
    }
}

async fn stream(url: &str) {
    use taskbridge::ews::ops::get_streaming_events::{GetStreamingEvents, SubscriptionIds};
    use taskbridge::ews::ops::subscribe::{EventTypes, StreamingSubscriptionRequest, Subscribe};
    use taskbridge::ews::transport::Auth;
    use taskbridge::ews::types::{BaseFolderId, EventType, FolderIds, ResponseClass};
    use taskbridge::ews::{CallContext, EwsClient, EwsClientConfig, EwsOperations};

    const ANN: &str = "ann@taskbridge.test";
    let mut config = EwsClientConfig::new(url, Auth::Negotiate { spn: None });
    config.tls.extra_ca_file = Some(tls_dir().join("ca.pem"));
    config.retry.max_attempts = 1;
    let client = EwsClient::new(config).expect("client");
    let r = client
        .subscribe(
            &CallContext::for_mailbox(ANN),
            &Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(ANN))])),
                event_types: EventTypes {
                    event_types: vec![EventType::CreatedEvent],
                },
            }),
        )
        .await
        .expect("subscribe by Kerberos");
    let m = &r.response_messages[0];
    assert_eq!(m.response_class, ResponseClass::Success, "{m:?}");
    let id = m.payload.subscription_id.clone().expect("id");
    let mut events = client
        .get_streaming_events(
            CallContext::for_mailbox(ANN),
            &GetStreamingEvents {
                subscription_ids: SubscriptionIds {
                    subscription_ids: vec![id],
                },
                connection_timeout: 1,
            },
        )
        .await
        .expect("the stream opens by Kerberos");
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .expect("an envelope within 30 s")
        .expect("the stream goes on")
        .expect("the envelope decodes");
    assert_eq!(
        first.response_messages[0].response_class,
        ResponseClass::Success,
        "{first:?}"
    );
    println!("STREAM OPEN");
}

/// Sends a GetFolder with a Kerberos ticket made without channel bindings (as a client unaware
/// of Extended Protection does) and prints the HTTP status.
async fn unbound(url: &str) {
    use base64::Engine;
    use taskbridge::ews::transport::auth::gssapi::Initiator;

    let mut initiator = Initiator::new("HTTP@localhost", None).expect("context");
    let step = initiator.step(None).expect("a ticket");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(
            taskbridge::ews::transport::rustls_client_config(
                &taskbridge::ews::transport::TlsConfig {
                    extra_ca_file: Some(tls_dir().join("ca.pem")),
                    accept_invalid_certs: false,
                },
            )
            .expect("tls"),
        )
        .build()
        .expect("client");
    let body = r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Header><t:RequestServerVersion Version="Exchange2013_SP1"/></soap:Header><soap:Body><m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>svc@taskbridge.test</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:FolderIds></m:GetFolder></soap:Body></soap:Envelope>"#;
    let response = client
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "Authorization",
            format!(
                "Negotiate {}",
                base64::engine::general_purpose::STANDARD.encode(&step.token)
            ),
        )
        .body(body)
        .send()
        .await
        .expect("the server answers");
    println!("STATUS {}", response.status().as_u16());
}
