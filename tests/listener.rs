//! The push listener and the admin endpoint over real sockets, with raw HTTP/1.1 bytes: the
//! answers Exchange gets, and what a hostile client gets (wrong paths, big, slow, malformed,
//! entity tricks, wrong content types), the busy path (503, then the retry goes through), TLS,
//! `/healthz`, `/metrics` and mounted routes.
//!
//! Time-outs under test are short and real; assertions are about outcomes (status codes,
//! closed connections, counters), never about how long something took.

mod external;
mod listener_support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use listener_support::*;
use taskbridge::ews::transport::Auth;
use taskbridge::ews::{EwsClient, EwsClientConfig};
use taskbridge::listener::admin::{self, fallback_from_service};
use taskbridge::listener::{
    AdminConfig, AdminRoutes, EngineCounters, HandlerAnswer, ListenerNotice, ListenerOutcome,
    MetricsSource, NotificationHandler, Readiness,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OK_ANSWER: &str = "<m:SubscriptionStatus>OK</m:SubscriptionStatus>";
const UNSUBSCRIBE_ANSWER: &str = "<m:SubscriptionStatus>Unsubscribe</m:SubscriptionStatus>";

async fn next_notice(
    rx: &mut tokio::sync::mpsc::Receiver<taskbridge::listener::ListenerNotice>,
) -> taskbridge::listener::ListenerNotice {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("a notice within the hang guard")
        .expect("the queue is open")
}

// ---------------------------------------------------------------------------------------------
// What Exchange gets

#[tokio::test]
async fn known_subscription_answered_ok_and_notice_reaches_the_handler() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let resp = notify(
        l.addr(),
        &l.path,
        &notification("sub-1", &["item-A", "item-B"], "wm-9"),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.text().contains(OK_ANSWER), "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/xml; charset=utf-8"));
    let notice = next_notice(&mut l.rx).await;
    assert_eq!(notice.subscription_id, "sub-1");
    assert_eq!(notice.watermark.as_deref(), Some("wm-9"));
    assert_eq!(notice.item_ids, ["item-A", "item-B"]);
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Ok), 1);
}

#[tokio::test]
async fn sample_notification_from_the_schema_subset_is_taken() {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/wsdl/samples/send-notification.xml"
    ))
    .unwrap();
    let mut l = start(&["FQBzYW1wbGUtc3Vic2NyaXB0aW9uLTAwMQ=="], 8, |_| {}).await;
    let resp = notify(l.addr(), &l.path, &sample).await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains(OK_ANSWER));
    let notice = next_notice(&mut l.rx).await;
    assert_eq!(notice.item_ids, ["AAMkAGTaskbridgeSampleItem0001"]);
    assert_eq!(
        notice.watermark.as_deref(),
        Some("AQAAAHNhbXBsZS13YXRlcm1hcmstMDAz")
    );
}

#[tokio::test]
async fn status_event_only_gives_an_empty_item_list() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let resp = notify(l.addr(), &l.path, &notification("sub-1", &[], "wm-1")).await;
    assert_eq!(resp.status, 200);
    let notice = next_notice(&mut l.rx).await;
    assert!(notice.item_ids.is_empty());
    assert_eq!(notice.watermark.as_deref(), Some("wm-1"));
}

#[tokio::test]
async fn unknown_subscription_answered_unsubscribe() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let resp = notify(l.addr(), &l.path, &notification("stale", &["X"], "wm")).await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains(UNSUBSCRIBE_ANSWER), "{}", resp.text());
    assert!(l.rx.try_recv().is_err(), "nothing queued");
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Unsubscribe), 1);
}

#[tokio::test]
async fn full_queue_answers_503_and_the_retried_notification_is_taken_later() {
    let mut l = start(&["sub-1", "sub-2"], 1, |c| {
        c.retry_after = Duration::from_secs(7)
    })
    .await;
    let first = notification("sub-1", &["A"], "wm-a");
    let second = notification("sub-2", &["B"], "wm-b");
    assert_eq!(notify(l.addr(), &l.path, &first).await.status, 200);
    let busy = notify(l.addr(), &l.path, &second).await;
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("7"));
    assert!(busy.body.is_empty());
    // The engine drains its queue; Exchange sends the refused notification again.
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    let retried = notify(l.addr(), &l.path, &second).await;
    assert_eq!(retried.status, 200);
    assert!(retried.text().contains(OK_ANSWER));
    let notice = next_notice(&mut l.rx).await;
    assert_eq!(notice.subscription_id, "sub-2");
    assert_eq!(notice.item_ids, ["B"]);
    let m = l.handle.metrics();
    assert_eq!(m.get(ListenerOutcome::Busy), 1);
    assert_eq!(m.get(ListenerOutcome::Ok), 2);
}

#[tokio::test]
async fn answers_validate_against_the_schema_subset_and_the_official_schema() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let ok = notify(l.addr(), &l.path, &notification("sub-1", &["A"], "w")).await;
    let unsubscribe = notify(l.addr(), &l.path, &notification("other", &["A"], "w")).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = [("ok.xml", &ok), ("unsubscribe.xml", &unsubscribe)]
        .into_iter()
        .map(|(name, resp)| {
            let path = dir.path().join(name);
            eprintln!("{name}: {}", resp.text());
            std::fs::write(&path, &resp.body).unwrap();
            path
        })
        .collect();
    external::assert_well_formed(&files);
    let what = "the listener's answers against the EWS schema";
    if !external::schema_tools(what) {
        return;
    }
    // The repository's subset, then the official schema when it is beside the crate.
    let mut validators = vec![external::subset_validator()];
    validators.extend(external::official_schema(what).map(|d| d.join("validate.sh")));
    for validator in validators {
        if let Err(report) = external::validate(&validator, &files) {
            panic!("{report}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and methods

#[tokio::test]
async fn wrong_secret_and_random_paths_get_404_with_an_empty_body() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let secret = l.config.secret.expose().to_string();
    let body = notification("sub-1", &["A"], "w");
    let mut last = secret.clone().into_bytes();
    let last_char = last.last_mut().unwrap();
    *last_char = if *last_char == b'a' { b'b' } else { b'a' };
    let near_miss = format!("/ews/push/{}", String::from_utf8(last).unwrap());
    let paths = [
        "/".to_string(),
        "/ews/push".to_string(),
        "/ews/push/".to_string(),
        near_miss,
        format!("/ews/push/{}", &secret[..secret.len() - 1]),
        format!("/ews/push/{secret}x"),
        format!("/ews/push/{secret}/"),
        format!("/ews/push/{}", secret.to_uppercase()),
        format!("/ews/push/../push/{secret}"),
        format!("/EWS/push/{secret}"),
        format!("/{secret}"),
        "/EWS/Exchange.asmx".to_string(),
        "/healthz".to_string(),
    ];
    for path in &paths {
        let resp = notify(l.addr(), path, &body).await;
        assert_eq!(resp.status, 404, "{path}");
        assert!(resp.body.is_empty(), "{path}: {}", resp.text());
        assert!(!resp.headers.contains_key("allow"), "{path}");
        let get = request(l.addr(), "GET", path).await;
        assert_eq!(get.status, 404, "GET {path}");
        assert!(get.body.is_empty());
    }
    assert!(l.rx.try_recv().is_err(), "nothing reached the handler");
    assert_eq!(
        l.handle.metrics().get(ListenerOutcome::NotFound),
        2 * paths.len() as u64
    );
    // The right path with a query string is the right path.
    let resp = notify(l.addr(), &format!("{}?x=1", l.path), &body).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn other_methods_on_the_notify_path_get_405() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    for method in ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        let resp = request(l.addr(), method, &l.path).await;
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.header("allow"), Some("POST"));
        assert!(resp.body.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies: size, type, content

const TWO_MIB: usize = 2 * 1024 * 1024;

/// A body that would be valid XML if it were not so long.
fn big_body(len: usize) -> Vec<u8> {
    let mut body = notification("sub-1", &["A"], "w").into_bytes();
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn body_over_the_cap_gets_413_with_content_length() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let stream = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        stream,
        post_head(&l.path, Some("text/xml"), Some(TWO_MIB)),
        big_body(TWO_MIB),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 413);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("connection"), Some("close"));
}

#[tokio::test]
async fn body_over_the_cap_gets_413_when_chunked() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    for chunk in [64 * 1024, 1000] {
        let stream = TcpStream::connect(l.addr()).await.unwrap();
        let resp = exchange(
            stream,
            post_head(&l.path, Some("text/xml"), None),
            chunked(&big_body(TWO_MIB), chunk),
        )
        .await
        .expect("an answer");
        assert_eq!(resp.status, 413, "chunks of {chunk}");
    }
    assert_eq!(l.handle.metrics().get(ListenerOutcome::TooLarge), 2);
}

#[tokio::test]
async fn body_at_the_cap_is_read_and_a_configured_cap_is_honoured() {
    let l = start(&["sub-1"], 8, |c| c.max_body_bytes = 4096).await;
    // Exactly at the cap: read (and valid, padded with whitespace after the envelope).
    let at_cap = big_body(4096);
    let resp = post(l.addr(), &l.path, "text/xml", &at_cap).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // One byte over, chunked (no length declared): refused while streaming.
    let stream = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        stream,
        post_head(&l.path, Some("text/xml"), None),
        chunked(&big_body(4097), 100),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 413);
}

#[tokio::test]
async fn wrong_content_type_gets_415() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let body = notification("sub-1", &["A"], "w");
    for ct in [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/xml; charset=utf-16",
    ] {
        let resp = post(l.addr(), &l.path, ct, body.as_bytes()).await;
        assert_eq!(resp.status, 415, "{ct}");
        assert!(resp.body.is_empty());
    }
    // No content type at all.
    let stream = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        stream,
        post_head(&l.path, None, Some(body.len())),
        body.clone().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 415);
    // SOAP 1.2's type and case variants are XML.
    for ct in ["application/soap+xml; charset=utf-8", "Text/XML"] {
        let resp = post(l.addr(), &l.path, ct, body.as_bytes()).await;
        assert_eq!(resp.status, 200, "{ct}");
    }
    assert_eq!(
        l.handle
            .metrics()
            .get(ListenerOutcome::UnsupportedMediaType),
        5
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_and_the_server_keeps_serving() {
    let mut l = start(&["sub-1"], 64, |_| {}).await;
    let valid = notification("sub-1", &["A"], "w");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not xml", b"hello, world".to_vec()),
        ("json", br#"{"SubscriptionId":"sub-1"}"#.to_vec()),
        ("unclosed tags", b"<a><b></a>".to_vec()),
        ("binary", (0..=255u8).cycle().take(5000).collect()),
        ("invalid utf-8", b"<?xml version=\"1.0\"?><a>\xff\xfe</a>".to_vec()),
        (
            "not an envelope",
            b"<m:SendNotification xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\"/>".to_vec(),
        ),
        (
            "another operation",
            valid.replace("SendNotification>", "GetItem>").into_bytes(),
        ),
        (
            "envelope with an empty body",
            b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body/></s:Envelope>".to_vec(),
        ),
        (
            "notification without subscription id",
            valid
                .replace("<t:SubscriptionId>sub-1</t:SubscriptionId>", "")
                .into_bytes(),
        ),
        (
            "event without time stamp",
            valid
                .replace("<t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp>", "")
                .into_bytes(),
        ),
        (
            "deep nesting left open",
            valid
                .replacen("<soap:Header>", &format!("<soap:Header>{}", "<x>".repeat(100_000)), 1)
                .into_bytes(),
        ),
    ];
    for (name, body) in &cases {
        let resp = post(l.addr(), &l.path, "text/xml", body).await;
        assert_eq!(resp.status, 400, "{name}");
        assert!(resp.body.is_empty(), "{name}");
        // Alive and well after each one.
        let resp = notify(l.addr(), &l.path, &valid).await;
        assert_eq!(resp.status, 200, "after {name}");
        assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    }
    assert_eq!(
        l.handle.metrics().get(ListenerOutcome::BadRequest),
        cases.len() as u64
    );
}

#[tokio::test]
async fn truncated_bodies_get_400() {
    let l = start(&["sub-1"], 64, |_| {}).await;
    let valid = notification("sub-1", &["A", "B"], "w");
    for cut in [
        1,
        10,
        valid.len() / 3,
        valid.len() / 2,
        valid.len() - 20,
        valid.len() - 1,
    ] {
        let resp = post(l.addr(), &l.path, "text/xml", &valid.as_bytes()[..cut]).await;
        assert_eq!(resp.status, 400, "cut at {cut}");
    }
    // A body shorter than its Content-Length, the connection then closed: nothing to answer
    // on a dead connection, and the server goes on.
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    stream
        .write_all(&post_head(&l.path, Some("text/xml"), Some(valid.len())))
        .await
        .unwrap();
    stream
        .write_all(&valid.as_bytes()[..valid.len() / 2])
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(HANG, stream.read_to_end(&mut rest)).await;
    let resp = notify(l.addr(), &l.path, &valid).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn doctype_entities_and_bombs_get_400() {
    let l = start(&["sub-1"], 64, |_| {}).await;
    let valid = notification("sub-1", &["A"], "w");
    let laughs = {
        let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..=9 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            dtd.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        dtd.push(']');
        dtd.push('>');
        valid
            .replacen("<soap:Envelope", &format!("{dtd}<soap:Envelope"), 1)
            .replacen("sub-1", "&lol9;", 1)
    };
    let cases = [
        ("billion laughs", laughs),
        (
            "external entity",
            valid
                .replacen(
                    "<soap:Envelope",
                    "<!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><soap:Envelope",
                    1,
                )
                .replacen("sub-1", "&xxe;", 1),
        ),
        (
            "parameter entity",
            valid.replacen(
                "<soap:Envelope",
                "<!DOCTYPE x [<!ENTITY % p SYSTEM \"http://127.0.0.1:9/x.dtd\"> %p;]><soap:Envelope",
                1,
            ),
        ),
        (
            "doctype alone",
            valid.replacen("<soap:Envelope", "<!DOCTYPE soap:Envelope><soap:Envelope", 1),
        ),
        ("undeclared entity", valid.replacen("sub-1", "&ghost;", 1)),
    ];
    for (name, body) in &cases {
        let resp = notify(l.addr(), &l.path, body).await;
        assert_eq!(resp.status, 400, "{name}");
    }
    // Legal XML that costs the parser something is bounded by the cap and answered: 100,000
    // predefined entities in the subscription id (an unknown one), and 100,000 nested unknown
    // elements in the header (skipped without recursion).
    let many_entities = valid.replacen("sub-1", &"&amp;".repeat(100_000), 1);
    let resp = notify(l.addr(), &l.path, &many_entities).await;
    assert!(resp.text().contains(UNSUBSCRIBE_ANSWER), "{resp:?}");
    let deep = valid.replacen(
        "<soap:Header>",
        &format!(
            "<soap:Header>{}{}",
            "<x>".repeat(100_000),
            "</x>".repeat(100_000)
        ),
        1,
    );
    let resp = notify(l.addr(), &l.path, &deep).await;
    assert!(resp.text().contains(OK_ANSWER), "{resp:?}");
    assert_eq!(notify(l.addr(), &l.path, &valid).await.status, 200);
}

/// Found by the chaos suite (tests/chaos/listener.rs): a notification with a NUL in its
/// subscription id was decoded and answered as if it were XML. Control characters that XML
/// does not allow, raw or as character references, are refused like any malformed body.
#[tokio::test]
async fn notification_with_control_characters_gets_400() {
    let l = start(&["sub-1"], 64, |_| {}).await;
    let valid = notification("sub-1", &["A"], "w");
    for bad in ["\u{0}", "\u{1b}[2J", "&#1;", "&#x8;"] {
        let body = valid.replacen("sub-1", &format!("sub-1{bad}"), 1);
        let resp = notify(l.addr(), &l.path, &body).await;
        assert_eq!(resp.status, 400, "{bad:?}");
    }
    assert_eq!(notify(l.addr(), &l.path, &valid).await.status, 200);
}

#[tokio::test]
async fn garbage_and_oversized_heads_are_refused_and_counted() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let garbage = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        garbage,
        b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(),
        Vec::new(),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 400);
    let big = TcpStream::connect(l.addr()).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        l.path,
        "a".repeat(100 * 1024)
    );
    let resp = exchange(big, head.into_bytes(), Vec::new())
        .await
        .expect("an answer");
    assert_eq!(resp.status, 431);
    let m = l.handle.metrics();
    assert_eq!(m.get(ListenerOutcome::BadRequest), 1);
    assert_eq!(m.get(ListenerOutcome::TooLarge), 1);
    assert_eq!(
        notify(l.addr(), &l.path, &notification("sub-1", &["A"], "w"))
            .await
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Slow clients and the connection cap

#[tokio::test]
async fn slow_body_is_timed_out_without_blocking_others() {
    let mut l = start(&["sub-1"], 64, |c| {
        c.limits.body_timeout = Duration::from_millis(800);
    })
    .await;
    let valid = notification("sub-1", &["A"], "w");
    let addr = l.addr();
    let path = l.path.clone();
    let body = valid.clone().into_bytes();
    // Headers at once, then one byte every 100 ms: the whole body would take minutes.
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&post_head(&path, Some("text/xml"), Some(body.len())))
            .await
            .unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for b in body {
                if wr.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(HANG, rd.read_to_end(&mut raw)).await;
        trickle.abort();
        parse_response(&raw)
    });
    // Meanwhile others are served.
    for _ in 0..3 {
        let resp = notify(l.addr(), &l.path, &valid).await;
        assert_eq!(resp.status, 200);
        next_notice(&mut l.rx).await;
    }
    let resp = slow.await.unwrap().expect("an answer to the slow client");
    assert_eq!(resp.status, 408);
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Timeout), 1);
}

#[tokio::test]
async fn slow_head_is_timed_out_and_the_connection_closed() {
    let l = start(&["sub-1"], 8, |c| {
        c.limits.header_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    stream
        .write_all(format!("POST {} HTTP/1.1\r\nHost: x\r\nX-Slow: ", l.path).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(HANG, stream.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server closed the connection");
    // An idle connection is closed the same way.
    let mut idle = TcpStream::connect(l.addr()).await.unwrap();
    let read = tokio::time::timeout(HANG, idle.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server closed the idle connection");
    assert!(l.handle.metrics().get(ListenerOutcome::Timeout) >= 1);
}

#[tokio::test]
async fn connection_table_full_of_idle_connections_closes_one_for_another_address() {
    let mut l = start(&["sub-1"], 8, |c| {
        c.limits.max_connections = 1;
        c.limits.header_timeout = Duration::from_secs(5);
    })
    .await;
    // Takes the only slot from 127.0.0.1 and sends nothing.
    let mut hog = TcpStream::connect(l.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A notification from another address gets the slot at once: the idle hog is closed.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(l.addr()).await.unwrap();
    let body = notification("sub-1", &["A"], "w");
    let resp = exchange(
        stream,
        post_head(&l.path, Some("text/xml"), Some(body.len())),
        body.into_bytes(),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    let mut raw = Vec::new();
    let read = tokio::time::timeout(HANG, hog.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the idle connection was closed");
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Shed), 1);
}

#[tokio::test]
async fn connections_over_the_per_address_limit_wait_at_most_the_head_time_out() {
    let mut l = start(&["sub-1"], 8, |c| {
        c.limits.max_connections_per_address = 2;
        c.limits.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Both of 127.0.0.1's connections are in the middle of requests that outlast the head
    // time-out: head and part of the body.
    let body = notification("sub-1", &["A"], "w");
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(l.addr()).await.unwrap();
        stream
            .write_all(&post_head(&l.path, Some("text/xml"), Some(body.len())))
            .await
            .unwrap();
        stream.write_all(&body.as_bytes()[..10]).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The third waits for one of them, unread, for the head time-out, and is then closed; a
    // notification sent on it gets no answer.
    let third = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        third,
        post_head(&l.path, Some("text/xml"), Some(body.len())),
        body.clone().into_bytes(),
    )
    .await;
    assert!(resp.is_none(), "{resp:?}");
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Shed), 1);
    // Once their requests end (and their keep-alive connections, idle, close after the head
    // time-out), 127.0.0.1 is served again.
    for stream in &mut busy {
        stream.write_all(&body.as_bytes()[10..]).await.unwrap();
        assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    }
    for stream in &mut busy {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(HANG, stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    }
    assert_eq!(notify(l.addr(), &l.path, &body).await.status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
}

/// Posts one notification on an open connection and reads the answer, leaving the connection
/// open; returns the status.
async fn post_keeping_alive(stream: &mut TcpStream, path: &str, body: &str) -> u16 {
    // Not `post_head`, which asks for the connection to close.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // One response: head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(HANG, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
        if let Some(resp) = parse_response(&raw) {
            let len: usize = resp.header("content-length").unwrap().parse().unwrap();
            if resp.body.len() == len {
                return resp.status;
            }
        }
    }
}

#[tokio::test]
async fn a_new_connection_over_the_per_address_limit_replaces_its_idlest_keep_alive_one() {
    // Exchange opens a connection per subscription with a notification in flight; more
    // subscriptions than the cap must not leave one of them unanswered.
    let mut l = start(&["sub-1"], 8, |c| {
        c.limits.max_connections_per_address = 2;
    })
    .await;
    let mut first = TcpStream::connect(l.addr()).await.unwrap();
    let mut second = TcpStream::connect(l.addr()).await.unwrap();
    for (stream, item) in [(&mut first, "A"), (&mut second, "B")] {
        let body = notification("sub-1", &[item], "w");
        assert_eq!(post_keeping_alive(stream, &l.path, &body).await, 200);
        assert_eq!(next_notice(&mut l.rx).await.item_ids, [item]);
        // Apart in time, so that the first is the idlest.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A connection is replaced only once it has been idle a second (a client may be about to
    // reuse one that has just answered); the new one waits for that.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let body = notification("sub-1", &["C"], "w");
    assert_eq!(notify(l.addr(), &l.path, &body).await.status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["C"]);
    // The first was closed for it; the second still serves.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HANG, first.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    let body = notification("sub-1", &["D"], "w");
    assert_eq!(post_keeping_alive(&mut second, &l.path, &body).await, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["D"]);
    // Replacing a finished-with connection is not a failure.
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Shed), 0);
}

#[tokio::test]
async fn a_connection_over_the_per_address_limit_waits_while_its_address_is_mid_request() {
    let mut l = start(&["sub-1"], 8, |c| {
        c.limits.max_connections_per_address = 1;
    })
    .await;
    // The address's one connection is in the middle of a request: head and part of the body.
    let first_body = notification("sub-1", &["A"], "w");
    let mut first = TcpStream::connect(l.addr()).await.unwrap();
    first
        .write_all(&post_head(
            &l.path,
            Some("text/xml"),
            Some(first_body.len()),
        ))
        .await
        .unwrap();
    first.write_all(&first_body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A second from the same address is neither served nor refused yet.
    let second = tokio::spawn({
        let (addr, path) = (l.addr(), l.path.clone());
        async move { notify(addr, &path, &notification("sub-1", &["B"], "w")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "served while the address was at its cap"
    );
    // The first request ends; the waiting connection takes the slot.
    first.write_all(&first_body.as_bytes()[10..]).await.unwrap();
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    let second = tokio::time::timeout(HANG, second).await.unwrap().unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["B"]);
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Shed), 0);
}

#[tokio::test]
async fn keep_alive_serves_several_notifications_on_one_connection() {
    let mut l = start(&["sub-1"], 8, |c| {
        c.limits.header_timeout = Duration::from_secs(1)
    })
    .await;
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    for i in 0..3 {
        let body = notification("sub-1", &[&format!("I{i}")], "w");
        assert_eq!(post_keeping_alive(&mut stream, &l.path, &body).await, 200);
        assert_eq!(next_notice(&mut l.rx).await.item_ids, [format!("I{i}")]);
    }
    // Left idle, the connection is closed after the head time-out, and that is not counted as
    // a slow client.
    let mut rest = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Timeout), 0);
}

// ---------------------------------------------------------------------------------------------
// TLS and shutdown

#[tokio::test]
async fn tls_with_the_test_certificate() {
    let mut l = start(&["sub-1"], 8, |c| {
        c.tls = Some(tls_files());
        c.limits.header_timeout = Duration::from_millis(500);
    })
    .await;
    let body = notification("sub-1", &["A"], "w");
    let tcp = TcpStream::connect(l.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_client().connect(name, tcp).await.unwrap();
    let resp = exchange(
        tls,
        post_head(&l.path, Some("text/xml"), Some(body.len())),
        body.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = TcpStream::connect(l.addr()).await.unwrap();
    let resp = exchange(
        plain,
        post_head(&l.path, Some("text/xml"), Some(3)),
        b"abc".to_vec(),
    )
    .await;
    assert!(resp.is_none(), "{resp:?}");
    // A client that never starts the handshake is closed after the head time-out.
    let mut silent = TcpStream::connect(l.addr()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(HANG, silent.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.handle.metrics().get(ListenerOutcome::Timeout), 1);
}

#[tokio::test]
async fn tls_with_missing_files_fails_at_start_naming_the_file() {
    let mut config = taskbridge::listener::ListenerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        taskbridge::listener::ListenerSecret::generate(),
    );
    config.tls = Some(taskbridge::listener::TlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let err = taskbridge::listener::start(config, |_n| taskbridge::listener::HandlerAnswer::Ok)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let body = notification("sub-1", &["A"], "w").into_bytes();
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        l.path,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 100 Continue: the server is reading this request's body. Now ask it to stop.
    let mut buf = [0u8; 25];
    tokio::time::timeout(HANG, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    let addr = l.addr();
    let shutdown = tokio::spawn(l.handle.shutdown());
    let mut refused = false;
    for _ in 0..3000 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused once shutdown began");
    stream.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let resp = parse_response(&raw).expect("an answer");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    tokio::time::timeout(HANG, shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn expect_100_continue_is_honoured_and_skipped_for_refusals() {
    let mut l = start(&["sub-1"], 8, |_| {}).await;
    let body = notification("sub-1", &["A"], "w");
    let head = |ct: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            l.path,
            body.len()
        )
    };
    // Accepted: 100 Continue first, then the body, then the answer.
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    stream.write_all(head("text/xml").as_bytes()).await.unwrap();
    let mut buf = [0u8; 25];
    tokio::time::timeout(HANG, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parse_response(&raw).unwrap().status, 200);
    assert_eq!(next_notice(&mut l.rx).await.item_ids, ["A"]);
    // Refused on its head: the final answer straight away, no 100, no body needed.
    let mut stream = TcpStream::connect(l.addr()).await.unwrap();
    stream
        .write_all(head("application/json").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        raw.extend_from_slice(&buf[..n]);
    }
    assert!(
        raw.starts_with(b"HTTP/1.1 415 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let addr = l.addr();
    l.handle.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_with_a_shutdown_future_returns_when_it_completes() {
    let config = taskbridge::listener::ListenerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        taskbridge::listener::ListenerSecret::generate(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(taskbridge::listener::serve(
        config,
        |_n| taskbridge::listener::HandlerAnswer::Ok,
        async move {
            let _ = rx.await;
        },
    ));
    tx.send(()).unwrap();
    tokio::time::timeout(HANG, server)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Admin endpoint

/// Checks the exposition format line by line; returns (family -> type, sample name -> value).
fn parse_metrics(
    text: &str,
) -> (
    std::collections::HashMap<String, String>,
    std::collections::HashMap<String, f64>,
) {
    let mut types = std::collections::HashMap::new();
    let mut helps = HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helps.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap().to_string();
            assert!(["counter", "gauge"].contains(&kind.as_str()), "{line}");
            assert!(helps.contains(&name), "TYPE before HELP: {line}");
            assert!(types.insert(name, kind).is_none(), "TYPE twice: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let family = series.split('{').next().unwrap();
        assert!(
            family
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        if types[family] == "counter" {
            assert!(family.ends_with("_total"), "{line}");
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "sample twice: {line}"
        );
    }
    (types, samples)
}

#[tokio::test]
async fn admin_metrics_and_healthz_from_every_source() {
    let l = start(&["sub-1"], 8, |_| {}).await;
    let engine_notifications = Arc::new(AtomicU64::new(0));
    let counter = engine_notifications.clone();
    let ews = EwsClient::new(EwsClientConfig::new(
        "http://127.0.0.1:9/EWS/Exchange.asmx",
        Auth::None,
    ))
    .unwrap();
    let readiness = Readiness::new(false);
    let routes = AdminRoutes::new()
        .shared_source(l.handle.metrics())
        .source(move |out: &mut String| {
            EngineCounters {
                notifications: counter.load(Ordering::Relaxed),
                ..EngineCounters::default()
            }
            .render(out)
        })
        .source(ews)
        .readiness(readiness.clone());
    let admin = admin::start(AdminConfig::new("127.0.0.1:0".parse().unwrap()), routes)
        .await
        .unwrap();

    let health = request(admin.local_addr(), "GET", "/healthz").await;
    assert_eq!(health.status, 503);
    readiness.set_ready(true);
    let health = request(admin.local_addr(), "GET", "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok");
    readiness.set_degraded(Some("Exchange refuses the credentials".into()));
    let health = request(admin.local_addr(), "GET", "/healthz").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.text(), "degraded: Exchange refuses the credentials");
    readiness.set_degraded(None);
    let health = request(admin.local_addr(), "GET", "/healthz").await;
    assert_eq!(health.status, 200);

    let before = request(admin.local_addr(), "GET", "/metrics").await;
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (types, before) = parse_metrics(&before.text());
    for family in [
        "taskbridge_listener_requests_total",
        "taskbridge_notifications_received_total",
        "taskbridge_events_queued_total",
        "taskbridge_echo_passes_skipped_total",
        "taskbridge_status_updates_total",
        "taskbridge_conflicts_total",
        "taskbridge_items_created_total",
        "taskbridge_items_written_total",
        "taskbridge_items_deleted_total",
        "taskbridge_items_parked_total",
        "taskbridge_reconciliations_total",
        "taskbridge_ews_requests_total",
        "taskbridge_ews_backoff_seconds_total",
        "taskbridge_ews_retry_delay_seconds_total",
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some("counter"),
            "{family}"
        );
    }

    notify(l.addr(), &l.path, &notification("sub-1", &["A"], "w")).await;
    request(l.addr(), "GET", "/nope").await;
    engine_notifications.fetch_add(1, Ordering::Relaxed);
    let after = request(admin.local_addr(), "GET", "/metrics").await;
    let (_, after) = parse_metrics(&after.text());
    for (series, delta) in [
        ("taskbridge_listener_requests_total{outcome=\"ok\"}", 1.0),
        (
            "taskbridge_listener_requests_total{outcome=\"not_found\"}",
            1.0,
        ),
        ("taskbridge_listener_requests_total{outcome=\"busy\"}", 0.0),
        ("taskbridge_notifications_received_total", 1.0),
    ] {
        assert_eq!(after[series] - before[series], delta, "{series}");
    }
    let post = post(admin.local_addr(), "/metrics", "text/plain", b"x").await;
    assert_eq!(post.status, 405);
    let other = request(admin.local_addr(), "GET", "/api/projects").await;
    assert_eq!(other.status, 404);
    admin.shutdown().await;
}

#[tokio::test]
async fn admin_fallback_reaches_the_mounted_service() {
    let pm_api =
        hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let body = format!("pm {} {}", req.method(), req.uri().path());
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
        });
    let routes = AdminRoutes::new()
        .readiness(Readiness::new(true))
        .fallback(fallback_from_service(pm_api));
    let admin = admin::start(AdminConfig::new("127.0.0.1:0".parse().unwrap()), routes)
        .await
        .unwrap();
    let resp = request(admin.local_addr(), "GET", "/api/projects").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "pm GET /api/projects");
    let resp = post(
        admin.local_addr(),
        "/api/updates/7/approve",
        "application/json",
        b"{}",
    )
    .await;
    assert_eq!(resp.text(), "pm POST /api/updates/7/approve");
    // The admin routes stay the admin's.
    let resp = request(admin.local_addr(), "GET", "/healthz").await;
    assert_eq!(resp.text(), "ok");
}

// ---------------------------------------------------------------------------------------------
// The wiring, as docs/LISTENER.md shows it (compile-checked here; the CLI does it for real)

/// The engine's notification sink as a listener handler.
#[allow(dead_code)] // building a sink takes a whole engine; that it compiles is the point
fn handler_for(sink: taskbridge::sync::NotificationSink) -> impl NotificationHandler {
    use taskbridge::sync::{Notice, NotificationOutcome};
    move |n: ListenerNotice| match sink.deliver(Notice {
        subscription_id: n.subscription_id,
        watermark: n.watermark,
        item_ids: n.item_ids,
        versions: n
            .versions
            .map(|v| v.iter().map(taskbridge::exchange::item_ref).collect()),
    }) {
        NotificationOutcome::Accepted => HandlerAnswer::Ok,
        NotificationOutcome::UnknownSubscription => HandlerAnswer::Unsubscribe,
        NotificationOutcome::QueueFull => HandlerAnswer::Busy,
    }
}

/// The engine's counters as a metric source.
fn engine_source(m: Arc<taskbridge::sync::Metrics>) -> impl MetricsSource {
    move |out: &mut String| {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EngineCounters {
            notifications: n(&m.notifications),
            events_queued: n(&m.events_queued),
            own_echoes: n(&m.own_echoes),
            listing_passes: n(&m.listing_passes),
            item_passes: n(&m.item_passes),
            updates_applied: n(&m.updates_applied),
            updates_pending: n(&m.updates_pending),
            updates_rejected: n(&m.updates_rejected),
            conflicts: n(&m.conflicts),
            created: n(&m.created),
            written: n(&m.written),
            deleted: n(&m.deleted),
            parked: n(&m.parked),
            reconciles: n(&m.reconciles),
            publish_rounds: n(&m.publish_rounds),
            streams_open: n(&m.streams_open),
            stream_reconnects: n(&m.stream_reconnects),
        }
        .render(out)
    }
}

#[test]
fn engine_metrics_render_through_the_wiring_source() {
    let m = Arc::new(taskbridge::sync::Metrics::default());
    m.updates_applied.fetch_add(3, Ordering::Relaxed);
    m.created.fetch_add(2, Ordering::Relaxed);
    let source = engine_source(m.clone());
    let mut out = String::new();
    source.render(&mut out);
    let (_, samples) = parse_metrics(&out);
    assert_eq!(
        samples["taskbridge_status_updates_total{outcome=\"applied\"}"],
        3.0
    );
    assert_eq!(samples["taskbridge_items_created_total"], 2.0);
    m.created.fetch_add(1, Ordering::Relaxed);
    let mut out = String::new();
    source.render(&mut out);
    assert!(out.contains("taskbridge_items_created_total 3\n"));
}
