//! `taskbridge check --mailbox` reports which notification modes work from where it runs,
//! against the simulator over real sockets: streaming (a subscription and one held-open
//! GetStreamingEvents connection), push (whether the listener's public URL answers from here)
//! and pull (SyncFolderItems), with the mode it recommends. A failing optional mode leaves the
//! exit code alone; a streaming connection that a proxy on the way cuts fails the streaming
//! line with the reason, and another mode is recommended.

use std::process::Output;

use taskbridge_sim::{self as sim, SimConfig, SimHandle};

const ANN: &str = "ann@example.com";

async fn start() -> SimHandle {
    let c = SimConfig::for_tests(&["ann@example.com:ann-pw"]);
    sim::start(c).await.expect("simulator starts")
}

/// Runs `taskbridge check` as Ann against the simulator, for her own mailbox, probing
/// `public_url` as the push listener's URL.
async fn check(h: &SimHandle, public_url: String) -> Output {
    check_at(h.url.clone(), public_url).await
}

/// Runs `taskbridge check` as Ann against the EWS URL `url`.
async fn check_at(url: String, public_url: String) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .args(["check", "--url", &url, "--auth", "basic", "--user", ANN])
            .args(["--password-env", "TB_TEST_PW", "--mailbox", ANN])
            .args(["--public-url", &public_url])
            .env("TB_TEST_PW", "ann-pw")
            .output()
            .expect("taskbridge runs")
    })
    .await
    .expect("join")
}

/// The line of `label` in the report, without the label.
fn line<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
}

#[tokio::test]
async fn every_mode_works_and_streaming_is_recommended() {
    let h = start().await;
    // Something listening where the push URL points.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let out = check(&h, format!("http://127.0.0.1:{port}/ews/notify")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streaming = line(&stdout, "streaming mode:");
    assert!(
        streaming.starts_with("works (") && streaming.contains("GetStreamingEvents"),
        "{stdout}"
    );
    let push = line(&stdout, "push mode:");
    assert!(push.starts_with("works ("), "{stdout}");
    // Said honestly: a connection from here is not one from Exchange.
    assert!(
        push.contains("does not prove Exchange can reach it") && push.contains("loopback"),
        "{stdout}"
    );
    assert!(
        line(&stdout, "pull mode:").starts_with("works ("),
        "{stdout}"
    );
    assert!(
        line(&stdout, "recommended:").starts_with("listener.mode = \"streaming\""),
        "{stdout}"
    );
    // The probe's subscription is gone again.
    assert_eq!(h.forget_subscriptions(), 0, "the probe unsubscribed");
    h.shutdown().await;
}

#[tokio::test]
async fn a_push_url_that_does_not_answer_fails_its_line_only() {
    let h = start().await;
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/ews/notify");
    let out = check(&h, url.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an optional mode's failure keeps the exit code: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let push = line(&stdout, "push mode:");
    assert!(
        push.starts_with(&format!("fails ({url} does not answer from here")),
        "{stdout}"
    );
    assert!(
        line(&stdout, "streaming mode:").starts_with("works ("),
        "{stdout}"
    );
    assert!(
        line(&stdout, "pull mode:").starts_with("works ("),
        "{stdout}"
    );
    assert!(
        line(&stdout, "recommended:").starts_with("listener.mode = \"streaming\""),
        "{stdout}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn modes_are_in_the_json_report() {
    let h = start().await;
    let url = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .args(["check", "--url", &url, "--auth", "basic", "--user", ANN])
            .args(["--password-env", "TB_TEST_PW", "--mailbox", ANN, "--json"])
            .env("TB_TEST_PW", "ann-pw")
            .output()
            .expect("taskbridge runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let modes = &report["notification_modes"];
    assert_eq!(modes["mailbox"], ANN, "{report:#}");
    let by_mode = |name: &str| {
        modes["modes"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["mode"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {report:#}"))
    };
    assert_eq!(by_mode("streaming")["works"], true, "{report:#}");
    assert_eq!(by_mode("pull")["works"], true, "{report:#}");
    // No --public-url and no configuration read: push is not tried.
    assert!(by_mode("push")["works"].is_null(), "{report:#}");
    assert_eq!(modes["recommended"], "streaming", "{report:#}");
    h.shutdown().await;
}

/// A reverse proxy in front of `upstream` that passes every request through but cuts the
/// connection of any GetStreamingEvents request before an answer, as a proxy or firewall
/// that does not let held-open responses through does. Its address.
async fn cutting_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CUT: &[u8] = b"GetStreamingEvents";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                // The end of what came before, for a name split across two reads.
                let mut seen: Vec<u8> = Vec::new();
                loop {
                    let n = match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(CUT.len()).any(|w| w == CUT) {
                        break;
                    }
                    seen.drain(..seen.len().saturating_sub(CUT.len()));
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Both sockets close: the request that was cut gets no answer at all.
                back.abort();
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_streaming_connection_cut_on_the_way_fails_streaming_with_the_reason() {
    let h = start().await;
    let proxy = cutting_proxy(h.addr).await;
    let url = h.url.replace(&h.addr.to_string(), &proxy.to_string());
    assert_ne!(url, h.url, "the check goes through the proxy");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let out = check_at(url, format!("http://127.0.0.1:{port}/ews/notify")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an optional mode's failure keeps the exit code: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streaming = line(&stdout, "streaming mode:");
    assert!(
        streaming.starts_with("fails (GetStreamingEvents failed"),
        "{stdout}"
    );
    // The subscription itself went through: it is the connection that fails.
    assert_eq!(h.counters()["operations"]["Subscribe"], 1, "{stdout}");
    assert!(
        line(&stdout, "pull mode:").starts_with("works ("),
        "{stdout}"
    );
    assert!(
        line(&stdout, "recommended:").starts_with("listener.mode = \"push\""),
        "{stdout}"
    );
    h.shutdown().await;
}
