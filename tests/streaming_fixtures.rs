//! The streaming-notification envelopes in `fixtures/ews/streaming-*.xml` (written by hand from
//! the official schema) validate against the official schema and our subset, and the client's
//! incremental reader decodes them when they arrive back to back in arbitrary pieces, as one
//! GetStreamingEvents response delivers them.

mod external;

use std::path::PathBuf;

use taskbridge::ews::ops::get_streaming_events::{ConnectionStatus, StreamingReader};
use taskbridge::ews::soap::Body;
use taskbridge::ews::types::{Event, ResponseClass, ResponseCode};

const FIXTURES: [&str; 4] = [
    "streaming-notification.xml",
    "streaming-keepalive.xml",
    "streaming-subscription-not-found.xml",
    "streaming-closed.xml",
];

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ews")
        .join(name)
}

#[test]
fn streaming_fixtures_validate_against_the_official_schema_and_the_subset() {
    let files: Vec<PathBuf> = FIXTURES.iter().map(|f| path(f)).collect();
    external::assert_well_formed(&files);
    let what = "fixtures/ews/streaming-*.xml against the schema";
    if !external::schema_tools(what) {
        return;
    }
    let mut validators = vec![external::subset_validator()];
    validators.extend(external::official_schema(what).map(|d| d.join("validate.sh")));
    for validator in validators {
        if let Err(report) = external::validate(&validator, &files) {
            panic!("{report}");
        }
    }
}

#[test]
fn streaming_fixtures_back_to_back_decode_one_by_one_from_any_split() {
    let mut stream = Vec::new();
    for f in FIXTURES {
        stream.extend(std::fs::read(path(f)).expect("fixture"));
        stream.extend_from_slice(b"\r\n");
    }
    for piece in [1, 7, 64, 1000, stream.len()] {
        let mut reader = StreamingReader::new(1 << 20);
        let mut messages = Vec::new();
        for bytes in stream.chunks(piece) {
            reader.push(bytes);
            while let Some(env) = reader.next_envelope() {
                let env = env.expect("every fixture decodes");
                let Body::Content(body) = env.body else {
                    panic!("a fault")
                };
                assert_eq!(
                    env.header.server_version.and_then(|v| v.major_version),
                    Some(15)
                );
                messages.extend(body.response_messages);
            }
        }
        reader.finish().expect("nothing left over");
        assert_eq!(messages.len(), 4, "pieces of {piece} bytes");

        let notifications = &messages[0]
            .payload
            .notifications
            .as_ref()
            .expect("notifications")
            .notifications;
        assert_eq!(notifications.len(), 2);
        assert_eq!(
            notifications[0].subscription_id.as_str(),
            "c3RyZWFtLWFubg=="
        );
        assert!(matches!(notifications[0].events[0], Event::CreatedEvent(_)));
        assert_eq!(
            notifications[0].events[1]
                .watermark()
                .map(|w| w.as_str().to_string()),
            Some("AQAAAAI=".to_string())
        );
        assert!(matches!(notifications[1].events[0], Event::DeletedEvent(_)));
        assert_eq!(
            messages[0].payload.connection_status,
            Some(ConnectionStatus::Ok)
        );

        assert!(messages[1].payload.notifications.is_none());
        assert_eq!(
            messages[1].payload.connection_status,
            Some(ConnectionStatus::Ok)
        );

        assert_eq!(messages[2].response_class, ResponseClass::Error);
        assert_eq!(
            messages[2].response_code,
            Some(ResponseCode::ErrorSubscriptionNotFound)
        );
        let gone = messages[2]
            .payload
            .error_subscription_ids
            .as_ref()
            .expect("ErrorSubscriptionIds");
        assert_eq!(gone.subscription_ids[0].as_str(), "c3RyZWFtLWdvbmU=");

        assert_eq!(
            messages[3].payload.connection_status,
            Some(ConnectionStatus::Closed)
        );
    }
}

proptest::proptest! {
    /// Cut anywhere, the stream of fixtures reads the same four messages; with bytes flipped
    /// anywhere, the reader answers errors or envelopes, never a panic.
    #[test]
    fn streaming_reader_survives_any_cut_and_any_corruption(
        cuts in proptest::collection::vec(1usize..400, 1..40),
        flips in proptest::collection::vec((0usize..4000, proptest::num::u8::ANY), 0..8),
    ) {
        let mut stream = Vec::new();
        for f in FIXTURES {
            stream.extend(std::fs::read(path(f)).expect("fixture"));
        }
        let read = |bytes: &[u8]| {
            let mut reader = StreamingReader::new(1 << 20);
            let (mut ok, mut bad, mut at, mut i) = (0, 0, 0, 0);
            while at < bytes.len() {
                let end = (at + cuts[i % cuts.len()]).min(bytes.len());
                reader.push(&bytes[at..end]);
                at = end;
                i += 1;
                while let Some(env) = reader.next_envelope() {
                    if env.is_ok() { ok += 1 } else { bad += 1 }
                }
            }
            let _ = reader.finish();
            (ok, bad)
        };
        proptest::prop_assert_eq!(read(&stream), (4, 0));
        let mut corrupt = stream.clone();
        for (at, byte) in &flips {
            let at = at % corrupt.len();
            corrupt[at] = *byte;
        }
        let _ = read(&corrupt);
    }
}
