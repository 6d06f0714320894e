//! SendNotification: the call Exchange makes to a push subscriber, and the answer.
//!
//! Exchange posts `m:SendNotification` (a list of response messages, each with one
//! notification) and expects `m:SendNotificationResult` with `OK` to go on or `Unsubscribe` to
//! end the subscription.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/sendnotification>.

use crate::types::Notification;

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{NotificationPayload, SendNotification, SendNotificationResult};
pub use crate::types::generated::SubscriptionStatus;

impl crate::ops::Sealed for SendNotificationResult {}

impl crate::ops::OperationResponse for SendNotificationResult {
    const NAME: &'static str = "SendNotificationResult";
    const BODY: &'static str = "m:SendNotificationResult";
    const MESSAGE: &'static str = "m:SendNotificationResult";
    type Payload = crate::types::NoPayload;
    fn messages(&self) -> &[crate::types::ResponseMessage<Self::Payload>] {
        &[]
    }
    fn into_messages(self) -> Vec<crate::types::ResponseMessage<Self::Payload>> {
        Vec::new()
    }
    fn from_messages(_: Vec<crate::types::ResponseMessage<Self::Payload>>) -> Self {
        SendNotificationResult {
            subscription_status: SubscriptionStatus::Ok,
        }
    }
}

// Seen from the subscriber, SendNotification is a request whose answer is the result.
impl crate::ops::Operation for SendNotification {
    const NAME: &'static str = "SendNotification";
    const BODY: &'static str = "m:SendNotification";
    type Response = SendNotificationResult;
}

impl SendNotification {
    /// The notifications in the call, in order.
    pub fn notifications(&self) -> impl Iterator<Item = &Notification> {
        self.response_messages
            .iter()
            .filter_map(|m| m.payload.notification.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{Event, SubscriptionId, Watermark};

    #[test]
    fn send_notification_reads_events_and_status() {
        // Written from the SendNotification reference, with a status event after a change.
        let xml = r#"<m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>sub-1</t:SubscriptionId><t:PreviousWatermark>wm-1</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents><t:ModifiedEvent><t:Watermark>wm-2</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F" ChangeKey="1"/></t:ModifiedEvent><t:MovedEvent><t:Watermark>wm-3</t:Watermark><t:TimeStamp>2026-03-02T10:00:01Z</t:TimeStamp><t:ItemId Id="B"/><t:ParentFolderId Id="G"/><t:OldItemId Id="A"/><t:OldParentFolderId Id="F"/></t:MovedEvent><t:StatusEvent><t:Watermark>wm-4</t:Watermark></t:StatusEvent></m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>"#;
        let call: SendNotification = read_str(xml);
        let n = call.notifications().next().expect("notification");
        assert_eq!(n.subscription_id, SubscriptionId::from("sub-1"));
        assert_eq!(n.previous_watermark, Some(Watermark::from("wm-1")));
        assert_eq!(n.events.len(), 3);
        assert!(matches!(&n.events[1], Event::MovedEvent(o) if o.old_object.is_some()));
        assert_eq!(n.events[2].watermark(), Some(&Watermark::from("wm-4")));
        assert_round_trip(&call, "m:SendNotification");
    }

    #[test]
    fn send_notification_result_writes_ok_and_unsubscribe() {
        for (status, text) in [
            (SubscriptionStatus::Ok, "OK"),
            (SubscriptionStatus::Unsubscribe, "Unsubscribe"),
        ] {
            let result = SendNotificationResult {
                subscription_status: status,
            };
            assert_writes(
                &result,
                "m:SendNotificationResult",
                &format!(
                    "<m:SendNotificationResult><m:SubscriptionStatus>{text}</m:SubscriptionStatus></m:SendNotificationResult>"
                ),
            );
            assert_round_trip(&result, "m:SendNotificationResult");
        }
    }
}
