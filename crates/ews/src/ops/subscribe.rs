//! Subscribe: asks for push, pull or streaming notifications on folders.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/subscribe>.

use crate::xml::{DecodeError, Element, Ns, XmlContent, XmlElement, XmlReader, XmlWriter};

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{SubscribePayload, SubscribeResponse};
pub use crate::types::generated::{
    EventTypes, PullSubscriptionRequest, PushSubscriptionRequest, StreamingSubscriptionRequest,
};

// The request type is hand-written (below), so its tie to the response is too. Safe to resend:
// a second subscription is unused and lapses; the caller keeps the one it heard of.
crate::ops::operation!(Subscribe => SubscribeResponse, safe_to_resend = true);

// Hand-written: the schema's `m:SubscribeType` is a choice of three elements, which is a Rust enum
// and which `xml_struct!` cannot express.

/// The `m:Subscribe` request: one push, pull or streaming subscription.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Subscribe {
    /// `m:PushSubscriptionRequest`.
    Push(PushSubscriptionRequest),
    /// `m:PullSubscriptionRequest`.
    Pull(PullSubscriptionRequest),
    /// `m:StreamingSubscriptionRequest`: events are read with GetStreamingEvents.
    Streaming(StreamingSubscriptionRequest),
}

impl XmlElement for Subscribe {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut found = None;
        while let Some(child) = r.next_child(&e)? {
            if found.is_some() {
                r.skip(child)?;
            } else if child.is(Ns::Messages, "PushSubscriptionRequest") {
                found = Some(Subscribe::Push(PushSubscriptionRequest::read(r, child)?));
            } else if child.is(Ns::Messages, "PullSubscriptionRequest") {
                found = Some(Subscribe::Pull(PullSubscriptionRequest::read(r, child)?));
            } else if child.is(Ns::Messages, "StreamingSubscriptionRequest") {
                found = Some(Subscribe::Streaming(StreamingSubscriptionRequest::read(
                    r, child,
                )?));
            } else {
                r.skip(child)?;
            }
        }
        found.ok_or_else(|| DecodeError::MissingElement {
            path: "Subscribe".into(),
            element: "PushSubscriptionRequest".into(),
        })
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| match self {
            Subscribe::Push(p) => p.write(w, "m:PushSubscriptionRequest"),
            Subscribe::Pull(p) => p.write(w, "m:PullSubscriptionRequest"),
            Subscribe::Streaming(p) => p.write(w, "m:StreamingSubscriptionRequest"),
        });
    }
}

// `Subscribe` is an enum, so `XmlContent` is not derived; nothing needs it.
const _: fn() = || {
    fn assert_content<T: XmlContent>() {}
    assert_content::<SubscribePayload>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::BaseFolderId;
    use crate::types::{EventType, FolderIds, SubscriptionId, Watermark};

    fn folders() -> Option<FolderIds> {
        Some(FolderIds(vec![BaseFolderId::tasks_of(Some(
            "ann@example.com",
        ))]))
    }

    #[test]
    fn subscribe_push_request_writes_url_and_frequency() {
        let req = Subscribe::Push(PushSubscriptionRequest {
            folder_ids: folders(),
            event_types: EventTypes {
                event_types: vec![
                    EventType::CreatedEvent,
                    EventType::ModifiedEvent,
                    EventType::DeletedEvent,
                ],
            },
            watermark: Some(Watermark::from("AQAAAA==")),
            status_frequency: 30,
            url: "https://tb.example.com/ews/notify/s3cr3t".into(),
        });
        assert_writes(
            &req,
            "m:Subscribe",
            r#"<m:Subscribe><m:PushSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></t:FolderIds><t:EventTypes><t:EventType>CreatedEvent</t:EventType><t:EventType>ModifiedEvent</t:EventType><t:EventType>DeletedEvent</t:EventType></t:EventTypes><t:Watermark>AQAAAA==</t:Watermark><t:StatusFrequency>30</t:StatusFrequency><t:URL>https://tb.example.com/ews/notify/s3cr3t</t:URL></m:PushSubscriptionRequest></m:Subscribe>"#,
        );
        assert_round_trip(&req, "m:Subscribe");
    }

    #[test]
    fn subscribe_pull_request_round_trips() {
        let req = Subscribe::Pull(PullSubscriptionRequest {
            folder_ids: folders(),
            event_types: EventTypes {
                event_types: vec![EventType::ModifiedEvent],
            },
            watermark: None,
            timeout: 10,
        });
        assert_writes(
            &req,
            "m:Subscribe",
            r#"<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></t:FolderIds><t:EventTypes><t:EventType>ModifiedEvent</t:EventType></t:EventTypes><t:Timeout>10</t:Timeout></m:PullSubscriptionRequest></m:Subscribe>"#,
        );
        assert_round_trip(&req, "m:Subscribe");
    }

    #[test]
    fn subscribe_streaming_request_has_no_watermark_or_timeout() {
        let req = Subscribe::Streaming(StreamingSubscriptionRequest {
            folder_ids: folders(),
            event_types: EventTypes {
                event_types: vec![EventType::CreatedEvent, EventType::ModifiedEvent],
            },
        });
        assert_writes(
            &req,
            "m:Subscribe",
            r#"<m:Subscribe><m:StreamingSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></t:FolderIds><t:EventTypes><t:EventType>CreatedEvent</t:EventType><t:EventType>ModifiedEvent</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest></m:Subscribe>"#,
        );
        assert_round_trip(&req, "m:Subscribe");
    }

    #[test]
    fn subscribe_response_reads_id_and_watermark() {
        let xml = r#"<m:SubscribeResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages><m:SubscribeResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:SubscriptionId>sub-1</m:SubscriptionId><m:Watermark>wm-1</m:Watermark></m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse>"#;
        let resp: SubscribeResponse = read_str(xml);
        let p = &resp.response_messages[0].payload;
        assert_eq!(p.subscription_id, Some(SubscriptionId::from("sub-1")));
        assert_eq!(p.watermark, Some(Watermark::from("wm-1")));
        assert_round_trip(&resp, "m:SubscribeResponse");
    }
}
