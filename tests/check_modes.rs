//! `taskbridge check --mailbox` reports which notification modes work from where it runs,
//! against the simulator over real sockets: streaming (a subscription and one held-open
//! GetStreamingEvents connection), push (whether the listener's public URL answers from here)
//! and pull (SyncFolderItems), with the mode it recommends. A failing optional mode leaves the
//! exit code alone.

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
    let url = h.url.clone();
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
