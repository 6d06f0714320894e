//! GetEvents: fetches the events of a pull subscription.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getevents>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{GetEvents, GetEventsResponse};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::Event;
    use crate::types::{SubscriptionId, Watermark};

    #[test]
    fn get_events_request_and_response_round_trip() {
        let req = GetEvents {
            subscription_id: SubscriptionId::from("pull-1"),
            watermark: Watermark::from("wm-3"),
        };
        assert_writes(
            &req,
            "m:GetEvents",
            "<m:GetEvents><m:SubscriptionId>pull-1</m:SubscriptionId><m:Watermark>wm-3</m:Watermark></m:GetEvents>",
        );
        assert_round_trip(&req, "m:GetEvents");
        let xml = r#"<m:GetEventsResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:GetEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>pull-1</t:SubscriptionId><t:PreviousWatermark>wm-3</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents><t:ModifiedEvent><t:Watermark>wm-4</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F" ChangeKey="1"/></t:ModifiedEvent></m:Notification></m:GetEventsResponseMessage></m:ResponseMessages></m:GetEventsResponse>"#;
        let resp: GetEventsResponse = read_str(xml);
        let n = resp.response_messages[0]
            .payload
            .notification
            .as_ref()
            .expect("notification");
        assert!(
            matches!(&n.events[0], Event::ModifiedEvent(o) if o.item_id().map(|i| i.id.as_str()) == Some("A"))
        );
        assert_round_trip(&resp, "m:GetEventsResponse");
    }
}
