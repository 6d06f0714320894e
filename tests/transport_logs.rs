//! No secret reaches the logs: every authentication scheme, success and failure, runs with a
//! capturing subscriber at TRACE (all targets, `log` records included), and the captured text
//! is searched for every password, token and client secret.
//!
//! A test binary of its own, so that the process-wide subscriber sees nothing but this test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Server, ServerAuth};
use taskbridge::ews::ops::get_folder::{GetFolder, GetFolderResponse};
use taskbridge::ews::transport::Auth;
use taskbridge::ews::types::{BaseFolderId, BaseShape, FolderIds, FolderShape};
use taskbridge::ews::{CallContext, Error, EwsClient, EwsClientConfig, EwsOperations};
use taskbridge::secret::Secret;

fn config(server: &Server, auth: Auth) -> EwsClientConfig {
    let mut c = EwsClientConfig::new(server.url.clone(), auth);
    c.retry.base_delay = Duration::from_millis(50);
    c
}

/// The listener secret at the end of a push URL.
const PUSH_SECRET: &str = "S3cret-PUSH-capability-0123456789";

fn config_url(url: &str) -> EwsClientConfig {
    EwsClientConfig::new(url, Auth::None)
}

fn basic(password: &str) -> Auth {
    Auth::Basic {
        user: support::BASIC_USER.into(),
        password: Secret::new(password),
    }
}

fn ntlm(password: &str) -> Auth {
    Auth::Ntlm {
        user: format!("{}\\{}", support::NTLM_DOMAIN, support::NTLM_USER),
        password: Secret::new(password),
    }
}

fn oauth(server: &Server, secret: &str) -> Auth {
    Auth::OAuthClientCredentials {
        token_url: format!("{}/token", server.base),
        client_id: support::CLIENT_ID.into(),
        client_secret: Secret::new(secret),
        scope: "https://outlook.office365.com/.default".into(),
    }
}

async fn get_tasks(client: &EwsClient, mailbox: Option<&str>) -> Result<GetFolderResponse, Error> {
    let ctx = mailbox.map(CallContext::for_mailbox).unwrap_or_default();
    let request = GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: FolderIds(vec![BaseFolderId::tasks_of(None)]),
    };
    client.get_folder(&ctx, &request).await
}

#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_appears_in_any_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    // `log` records (reqwest, rustls) are forwarded to the thread's tracing subscriber.
    tracing_log::LogTracer::init().expect("the only log forwarder of this test binary");
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let wrong = "S3cret-WRONG-pa55";
    rt.block_on(async {
        let server = Server::start(ServerAuth::Basic).await;
        get_tasks(
            &EwsClient::new(config(&server, basic(support::BASIC_PASSWORD))).unwrap(),
            Some("bob@contoso.com"),
        )
        .await
        .unwrap();
        let err = get_tasks(
            &EwsClient::new(config(&server, basic(wrong))).unwrap(),
            None,
        )
        .await
        .unwrap_err();
        tracing::error!(error = %err, debug = ?err, "basic failure");

        let server = Server::start(ServerAuth::Ntlm).await;
        let cfg = config(&server, ntlm(support::NTLM_PASSWORD));
        tracing::info!(config = ?cfg, "config debug");
        let client = EwsClient::new(cfg).unwrap();
        get_tasks(&client, None).await.unwrap();
        get_tasks(&client, None).await.unwrap();
        let err = get_tasks(&EwsClient::new(config(&server, ntlm(wrong))).unwrap(), None)
            .await
            .unwrap_err();
        tracing::error!(error = %err, debug = ?err, "ntlm failure");

        let server = Server::start(ServerAuth::Bearer).await;
        let cfg = config(
            &server,
            Auth::Bearer {
                token: Secret::new(support::STATIC_TOKEN),
            },
        );
        tracing::info!(config = ?cfg, "config debug");
        get_tasks(&EwsClient::new(cfg).unwrap(), None)
            .await
            .unwrap();
        let cfg = config(&server, oauth(&server, support::CLIENT_SECRET));
        tracing::info!(config = ?cfg, "config debug");
        get_tasks(&EwsClient::new(cfg).unwrap(), None)
            .await
            .unwrap();
        let err = get_tasks(
            &EwsClient::new(config(&server, oauth(&server, wrong))).unwrap(),
            None,
        )
        .await
        .unwrap_err();
        tracing::error!(error = %err, debug = ?err, "oauth failure");

        // A push subscription whose URL ends in a secret, to a subscriber that is not there:
        // the client traces the Subscribe envelope, and the simulator logs the failed
        // deliveries (both used to show the secret).
        {
            use taskbridge::ews::ops::subscribe::{EventTypes, PushSubscriptionRequest, Subscribe};
            use taskbridge::ews::types::EventType;
            let mut c = taskbridge_sim::SimConfig::for_tests(&["ann@example.com:pw"]);
            c.push_time_scale = 0.001;
            let sim = taskbridge_sim::start(c).await.unwrap();
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let client = EwsClient::new(config_url(&sim.url)).unwrap();
            let request = Subscribe::Push(PushSubscriptionRequest {
                folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(None)])),
                event_types: EventTypes {
                    event_types: vec![EventType::ModifiedEvent],
                },
                watermark: None,
                status_frequency: 1,
                url: format!("http://127.0.0.1:{closed}/ews/notify/{PUSH_SECRET}"),
            });
            client
                .subscribe(&CallContext::for_mailbox("ann@example.com"), &request)
                .await
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while sim.counters()["push_failed"].as_u64() < Some(2) {
                assert!(std::time::Instant::now() < deadline, "no push attempt");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sim.shutdown().await;
        }

        let tls = Server::start_tls(ServerAuth::None).await;
        let mut cfg = config(&tls, Auth::None);
        cfg.tls.accept_invalid_certs = true;
        get_tasks(&EwsClient::new(cfg).unwrap(), None)
            .await
            .unwrap();
    });
    drop(rt);
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The logs are there at all levels, so their silence about secrets means something.
    for expected in [
        "TRACE",
        "DEBUG",
        "Exchange server version",
        "NTLM authentication succeeded",
        "obtained an OAuth access token",
        "TLS certificate verification is OFF",
        "request envelope",
        "push delivery failed",
    ] {
        assert!(text.contains(expected), "log lacks {expected:?}");
    }
    use base64::Engine;
    let basic_b64 = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        support::BASIC_USER,
        support::BASIC_PASSWORD
    ));
    for secret in [
        support::BASIC_PASSWORD,
        support::NTLM_PASSWORD,
        support::STATIC_TOKEN,
        support::CLIENT_SECRET,
        "S3cret-ISSUED-token",
        PUSH_SECRET,
        wrong,
        basic_b64.as_str(),
        "S3cret",
    ] {
        if let Some(at) = text.find(secret) {
            let line = text[..at].rsplit('\n').next().unwrap_or("");
            panic!("secret {secret:?} in the logs: {line}...");
        }
    }
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("authorization: "),
            "Authorization header logged: {line}"
        );
        assert!(
            !lower.contains("tlrmtvnt"),
            "an NTLM token was logged: {line}"
        );
    }
}
