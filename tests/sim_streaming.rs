//! Streaming subscriptions on the simulator over real HTTP, read with the project's
//! `EwsClient::get_streaming_events`: events arrive on the open response as they happen,
//! keep-alives while nothing happens, `ConnectionStatus` Closed at the time-out, and
//! `ErrorSubscriptionNotFound` for an id the server does not know.

use std::time::Duration;

use taskbridge::ews::ops::get_streaming_events::{
    ConnectionStatus, GetStreamingEvents, GetStreamingEventsResponse, SubscriptionIds,
};
use taskbridge::ews::ops::subscribe::{EventTypes, StreamingSubscriptionRequest, Subscribe};
use taskbridge::ews::ops::unsubscribe::Unsubscribe;
use taskbridge::ews::transport::Auth;
use taskbridge::ews::types::{
    BaseFolderId, EventType, FolderIds, ResponseClass, ResponseCode, SubscriptionId,
};
use taskbridge::ews::{CallContext, EwsClient, EwsClientConfig, EwsOperations, StreamingEvents};
use taskbridge_sim::{self as sim, SimConfig, SimHandle};

const ANN: &str = "ann@example.com";
const BOB: &str = "bob@example.com";

/// Ann and Bob; `scale` multiplies the keep-alive interval and the connection time-out.
async fn start(scale: f64) -> SimHandle {
    let mut c = SimConfig::for_tests(&["ann@example.com:ann-pw", "bob@example.com:bob-pw"]);
    c.push_time_scale = scale;
    sim::start(c).await.expect("simulator starts")
}

fn client(h: &SimHandle) -> EwsClient {
    let mut config = EwsClientConfig::new(&h.url, Auth::None);
    config.retry.max_attempts = 1;
    EwsClient::new(config).expect("client")
}

async fn subscribe(client: &EwsClient, who: &str) -> SubscriptionId {
    let r = client
        .subscribe(
            &CallContext::for_mailbox(who),
            &Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(who))])),
                event_types: EventTypes {
                    event_types: vec![
                        EventType::CreatedEvent,
                        EventType::ModifiedEvent,
                        EventType::DeletedEvent,
                    ],
                },
            }),
        )
        .await
        .expect("subscribe");
    let m = &r.response_messages[0];
    assert_eq!(m.response_class, ResponseClass::Success, "{m:?}");
    assert!(
        m.payload.watermark.is_none(),
        "a streaming subscription has no watermark"
    );
    m.payload.subscription_id.clone().expect("id")
}

async fn open(client: &EwsClient, who: &str, ids: &[&SubscriptionId]) -> StreamingEvents {
    client
        .get_streaming_events(
            CallContext::for_mailbox(who),
            &GetStreamingEvents {
                subscription_ids: SubscriptionIds {
                    subscription_ids: ids.iter().map(|&i| i.clone()).collect(),
                },
                connection_timeout: 1,
            },
        )
        .await
        .expect("the stream opens")
}

async fn next(stream: &mut StreamingEvents) -> GetStreamingEventsResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an envelope within 20 s")
        .expect("the stream goes on")
        .expect("the envelope decodes")
}

async fn add_task(h: &SimHandle, who: &str, subject: &str) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}mailboxes/{who}/tasks", h.admin_url))
        .body(serde_json::json!({ "Subject": subject }).to_string())
        .send()
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("json");
    v["ItemId"]["Id"]
        .as_str()
        .or_else(|| v["id"].as_str())
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn item_ids(r: &GetStreamingEventsResponse) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in &r.response_messages {
        for n in m
            .payload
            .notifications
            .iter()
            .flat_map(|n| &n.notifications)
        {
            for e in &n.events {
                if let Some(id) = e.object().and_then(|o| o.item_id()) {
                    out.push((n.subscription_id.as_str().to_string(), id.id.to_string()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn events_of_two_mailboxes_arrive_on_one_open_connection_as_they_happen() {
    // Keep-alives every 0.6 s and the time-out after 6 s: the test is over long before.
    let h = start(0.1).await;
    let c = client(&h);
    let ann = subscribe(&c, ANN).await;
    let bob = subscribe(&c, BOB).await;
    let mut stream = open(&c, ANN, &[&ann, &bob]).await;
    assert_eq!(h.open_streams(), 1);

    let a = add_task(&h, ANN, "for Ann").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, id)| *id == a) {
        seen.extend(item_ids(&next(&mut stream).await));
    }
    assert!(seen.iter().all(|(sub, _)| sub == ann.as_str()));
    let b = add_task(&h, BOB, "for Bob").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, id)| *id == b) {
        seen.extend(item_ids(&next(&mut stream).await));
    }
    assert!(seen.iter().any(|(sub, id)| sub == bob.as_str() && *id == b));
    h.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_gets_keep_alives_then_closed_at_the_time_out() {
    // ConnectionTimeout 1 minute x 0.005 = 0.3 s, keep-alives every 60 s x 0.005 = 0.3 s: the
    // envelopes are keep-alives (OK) and the last one says Closed.
    let h = start(0.005).await;
    let c = client(&h);
    let ann = subscribe(&c, ANN).await;
    let mut stream = open(&c, ANN, &[&ann]).await;
    let mut statuses = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the server closes within 20 s")
    {
        let r = r.expect("decodes");
        let m = &r.response_messages[0];
        assert_eq!(m.response_class, ResponseClass::Success);
        assert!(m.payload.notifications.is_none());
        statuses.push(m.payload.connection_status.clone().expect("a status"));
    }
    assert_eq!(statuses.last(), Some(&ConnectionStatus::Closed));
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == ConnectionStatus::Ok),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 2, "at least one keep-alive: {statuses:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_and_unsubscribed_ids_are_answered_subscription_not_found() {
    let h = start(0.1).await;
    let c = client(&h);
    let ann = subscribe(&c, ANN).await;
    let gone = subscribe(&c, ANN).await;
    let r = c
        .unsubscribe(
            &CallContext::for_mailbox(ANN),
            &Unsubscribe {
                subscription_id: gone.clone(),
            },
        )
        .await
        .expect("unsubscribe");
    assert_eq!(
        r.response_messages[0].response_class,
        ResponseClass::Success
    );
    let made_up = SubscriptionId::from("bm90LWEtc3Vi");

    // Only bad ids: one error envelope, then the end.
    let mut stream = open(&c, ANN, &[&made_up, &gone]).await;
    let r = next(&mut stream).await;
    let m = &r.response_messages[0];
    assert_eq!(m.response_class, ResponseClass::Error);
    assert_eq!(
        m.response_code,
        Some(ResponseCode::ErrorSubscriptionNotFound)
    );
    let ids = &m
        .payload
        .error_subscription_ids
        .as_ref()
        .expect("ids")
        .subscription_ids;
    assert_eq!(ids, &vec![made_up.clone(), gone.clone()]);
    assert_eq!(m.payload.connection_status, Some(ConnectionStatus::Closed));
    assert!(stream.next().await.is_none());

    // A good id beside a bad one: the error, then the good one's events.
    let mut stream = open(&c, ANN, &[&made_up, &ann]).await;
    let r = next(&mut stream).await;
    assert_eq!(
        r.response_messages[0].response_code,
        Some(ResponseCode::ErrorSubscriptionNotFound)
    );
    let id = add_task(&h, ANN, "still streamed").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, i)| *i == id) {
        seen.extend(item_ids(&next(&mut stream).await));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_subscription_left_without_a_connection_expires_and_is_not_found() {
    // 30 minutes scaled down to under a second.
    let h = start(0.0005).await;
    let c = client(&h);
    let left = subscribe(&c, ANN).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut stream = open(&c, ANN, &[&left]).await;
    let r = next(&mut stream).await;
    let m = &r.response_messages[0];
    assert_eq!(
        m.response_code,
        Some(ResponseCode::ErrorSubscriptionNotFound)
    );
    let ids = &m
        .payload
        .error_subscription_ids
        .as_ref()
        .expect("ids")
        .subscription_ids;
    assert_eq!(ids, &vec![left.clone()]);
    assert_eq!(m.payload.connection_status, Some(ConnectionStatus::Closed));
    // And it is gone: a new one made now is found at once.
    let fresh = subscribe(&c, ANN).await;
    let mut stream = open(&c, ANN, &[&fresh]).await;
    let r = next(&mut stream).await;
    assert_ne!(
        r.response_messages[0].response_code,
        Some(ResponseCode::ErrorSubscriptionNotFound)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_cut_connection_breaks_off_and_the_subscription_streams_again_on_a_new_one() {
    let h = start(0.1).await;
    let c = client(&h);
    let ann = subscribe(&c, ANN).await;
    let mut stream = open(&c, ANN, &[&ann]).await;
    assert_eq!(h.cut_streams(), 1);
    // The body breaks (no closing chunk): an error, then the end, and no Closed status.
    let mut broke = false;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the cut is seen within 20 s")
    {
        match r {
            Ok(r) => assert_ne!(
                r.response_messages[0].payload.connection_status,
                Some(ConnectionStatus::Closed)
            ),
            Err(_) => broke = true,
        }
    }
    assert!(broke, "a cut is an error, not a clean end");

    // Events made while no connection was open wait for the next one.
    let id = add_task(&h, ANN, "made while cut").await;
    let mut stream = open(&c, ANN, &[&ann]).await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, i)| *i == id) {
        seen.extend(item_ids(&next(&mut stream).await));
    }
    assert!(matches!(seen[0], (ref s, _) if s == ann.as_str()));
    h.shutdown().await;
}

#[tokio::test]
async fn another_account_may_not_read_a_subscription_and_a_bad_time_out_is_a_fault() {
    let mut config = SimConfig::for_tests(&["ann@example.com:ann-pw", "bob@example.com:bob-pw"]);
    config.auth = taskbridge_sim::AuthMode::Basic;
    let h = sim::start(config).await.expect("simulator starts");
    let login = |user: &str, password: &str| {
        let mut config = EwsClientConfig::new(
            &h.url,
            Auth::Basic {
                user: user.into(),
                password: taskbridge::secret::Secret::new(password),
            },
        );
        config.retry.max_attempts = 1;
        EwsClient::new(config).expect("client")
    };
    let (ann_client, bob_client) = (login(ANN, "ann-pw"), login(BOB, "bob-pw"));
    let r = ann_client
        .subscribe(
            &CallContext::default(),
            &Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(ANN))])),
                event_types: EventTypes {
                    event_types: vec![EventType::ModifiedEvent],
                },
            }),
        )
        .await
        .expect("subscribe");
    let ann = r.response_messages[0]
        .payload
        .subscription_id
        .clone()
        .expect("id");
    let request = |timeout: i32| GetStreamingEvents {
        subscription_ids: SubscriptionIds {
            subscription_ids: vec![ann.clone()],
        },
        connection_timeout: timeout,
    };
    let mut stream = bob_client
        .get_streaming_events(CallContext::default(), &request(1))
        .await
        .expect("opens");
    let r = next(&mut stream).await;
    assert_eq!(
        r.response_messages[0].code().as_str(),
        "ErrorSubscriptionAccessDenied"
    );
    assert!(stream.next().await.is_none());
    // Ann herself may.
    let _open = ann_client
        .get_streaming_events(CallContext::default(), &request(1))
        .await
        .expect("opens");
    assert_eq!(h.open_streams(), 1);
    // A ConnectionTimeout out of its range is a schema fault.
    let err = ann_client
        .get_streaming_events(CallContext::default(), &request(31))
        .await
        .expect_err("31 minutes is out of range");
    assert!(
        matches!(&err, taskbridge::ews::Error::Fault(f) if f.to_string().contains("ConnectionTimeout")),
        "{err}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn ntlm_authenticates_a_connection_of_its_own_for_the_stream() {
    let mut config = SimConfig::for_tests(&["ann@example.com:ann-pw", "bob@example.com:bob-pw"]);
    config.auth = taskbridge_sim::AuthMode::Ntlm;
    let h = sim::start(config).await.expect("simulator starts");
    let mut client_config = EwsClientConfig::new(
        &h.url,
        Auth::Ntlm {
            user: ANN.into(),
            password: taskbridge::secret::Secret::new("ann-pw"),
        },
    );
    client_config.retry.max_attempts = 1;
    let c = EwsClient::new(client_config).expect("client");
    let r = c
        .subscribe(
            &CallContext::default(),
            &Subscribe::Streaming(StreamingSubscriptionRequest {
                folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(ANN))])),
                event_types: EventTypes {
                    event_types: vec![EventType::CreatedEvent],
                },
            }),
        )
        .await
        .expect("subscribe");
    let ann = r.response_messages[0]
        .payload
        .subscription_id
        .clone()
        .expect("id");
    let handshakes = c.ntlm_handshakes();
    let mut stream = c
        .get_streaming_events(
            CallContext::default(),
            &GetStreamingEvents {
                subscription_ids: SubscriptionIds {
                    subscription_ids: vec![ann.clone()],
                },
                connection_timeout: 1,
            },
        )
        .await
        .expect("the stream opens");
    assert_eq!(c.ntlm_handshakes(), handshakes + 1, "its own handshake");
    let id = add_task(&h, ANN, "over NTLM").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, i)| *i == id) {
        seen.extend(item_ids(&next(&mut stream).await));
    }
    // Ordinary calls go on beside the open stream.
    c.subscribe(
        &CallContext::default(),
        &Subscribe::Streaming(StreamingSubscriptionRequest {
            folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(ANN))])),
            event_types: EventTypes {
                event_types: vec![EventType::CreatedEvent],
            },
        }),
    )
    .await
    .expect("a call beside the stream");
    // A wrong password is refused, once.
    let mut wrong = EwsClientConfig::new(
        &h.url,
        Auth::Ntlm {
            user: ANN.into(),
            password: taskbridge::secret::Secret::new("not-it"),
        },
    );
    wrong.retry.max_attempts = 1;
    let err = EwsClient::new(wrong)
        .expect("client")
        .get_streaming_events(
            CallContext::default(),
            &GetStreamingEvents {
                subscription_ids: SubscriptionIds {
                    subscription_ids: vec![ann],
                },
                connection_timeout: 1,
            },
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, taskbridge::ews::Error::Unauthorized { .. }),
        "{err}"
    );
    h.shutdown().await;
}
