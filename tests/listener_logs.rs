//! The listener secret never reaches the logs: the listener and the admin endpoint run with a
//! capturing subscriber at TRACE (all targets, `log` records included) through valid
//! notifications, near misses of the secret path, refused bodies, a busy handler, TLS, the
//! secret file and `Debug` of the configuration; then the captured text is searched for the
//! secret and for every 12-character piece of it.
//!
//! A test binary of its own, so that the process-wide subscriber sees nothing but this test.

mod listener_support;

use std::sync::Arc;

use listener_support::*;
use taskbridge::listener::{AdminConfig, AdminRoutes, ListenerSecret, Readiness, admin};
use tokio::net::TcpStream;

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
fn listener_secret_never_appears_in_any_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    // `log` records (rustls) are forwarded to the tracing subscriber.
    tracing_log::LogTracer::init().expect("the only log forwarder of this test binary");
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("listener.secret");
    let secrets = rt.block_on(async {
        let secret = ListenerSecret::load_or_create(&secret_file).unwrap();
        let again = ListenerSecret::load_or_create(&secret_file).unwrap();
        assert_eq!(secret, again);
        let mut plain = start(&["sub-1"], 1, |c| c.secret = secret.clone()).await;
        tracing::info!(config = ?plain.config, "listener config debug");
        tracing::info!(
            url = ?plain.config.push_url("https://tb.contoso.com").unwrap(),
            "push url debug"
        );
        let body = notification("sub-1", &["A"], "w");
        assert_eq!(notify(plain.addr(), &plain.path, &body).await.status, 200);
        // The queue (capacity 1) is full now: busy.
        assert_eq!(notify(plain.addr(), &plain.path, &body).await.status, 503);
        plain.rx.recv().await.unwrap();
        assert_eq!(
            notify(plain.addr(), &plain.path, &notification("other", &[], "w"))
                .await
                .status,
            200
        );
        // Near misses carry most of the secret in the request line.
        let s = plain.config.secret.expose();
        for path in [
            format!("/ews/push/{}", &s[..s.len() - 1]),
            format!("/ews/push/{s}x"),
            format!("/ews/push/{s}/"),
            format!("/{s}"),
        ] {
            assert_eq!(notify(plain.addr(), &path, &body).await.status, 404);
            assert_eq!(request(plain.addr(), "GET", &path).await.status, 404);
        }
        assert_eq!(request(plain.addr(), "GET", &plain.path).await.status, 405);
        assert_eq!(
            post(plain.addr(), &plain.path, "application/json", b"{}")
                .await
                .status,
            415
        );
        assert_eq!(
            post(plain.addr(), &plain.path, "text/xml", b"<broken")
                .await
                .status,
            400
        );
        let stream = TcpStream::connect(plain.addr()).await.unwrap();
        let big = exchange(
            stream,
            post_head(&plain.path, Some("text/xml"), None),
            chunked(&vec![b' '; 2 * 1024 * 1024], 8192),
        )
        .await
        .unwrap();
        assert_eq!(big.status, 413);

        // TLS, with a second (hex) secret.
        let hex = ListenerSecret::generate_hex();
        let mut tls = start(&["sub-1"], 8, |c| {
            c.secret = hex.clone();
            c.tls = Some(tls_files());
        })
        .await;
        let tcp = TcpStream::connect(tls.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tls_client().connect(name, tcp).await.unwrap();
        let resp = exchange(
            stream,
            post_head(&tls.path, Some("text/xml"), Some(body.len())),
            body.clone().into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200);
        tls.rx.recv().await.unwrap();

        // The admin endpoint with the listener's metrics.
        let admin = admin::start(
            AdminConfig::new("127.0.0.1:0".parse().unwrap()),
            AdminRoutes::new()
                .shared_source(plain.handle.metrics())
                .readiness(Readiness::new(true)),
        )
        .await
        .unwrap();
        assert_eq!(
            request(admin.local_addr(), "GET", "/metrics").await.status,
            200
        );
        admin.shutdown().await;
        plain.handle.shutdown().await;
        tls.handle.shutdown().await;
        vec![secret.expose().to_string(), hex.expose().to_string()]
    });
    drop(rt);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("no such path") && logs.contains("notification handler busy"),
        "the capture saw the listener's logs:\n{logs}"
    );
    assert!(logs.contains("TRACE"), "TRACE lines were captured");
    for secret in &secrets {
        for piece in secret.as_bytes().windows(12) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(
                !logs.contains(piece),
                "a piece of the secret ({piece}) is in the logs"
            );
        }
    }
    eprintln!(
        "{} log lines captured, none with the secret",
        logs.lines().count()
    );
}
