//! Unsubscribe: ends a pull or streaming subscription.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/unsubscribe>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{Unsubscribe, UnsubscribeResponse};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::ResponseCode;
    use crate::types::SubscriptionId;

    #[test]
    fn unsubscribe_request_and_response_round_trip() {
        let req = Unsubscribe {
            subscription_id: SubscriptionId::from("sub-1"),
        };
        assert_writes(
            &req,
            "m:Unsubscribe",
            "<m:Unsubscribe><m:SubscriptionId>sub-1</m:SubscriptionId></m:Unsubscribe>",
        );
        assert_round_trip(&req, "m:Unsubscribe");
        let xml = r#"<m:UnsubscribeResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages><m:UnsubscribeResponseMessage ResponseClass="Error"><m:MessageText>The subscription was not found.</m:MessageText><m:ResponseCode>ErrorSubscriptionNotFound</m:ResponseCode></m:UnsubscribeResponseMessage></m:ResponseMessages></m:UnsubscribeResponse>"#;
        let resp: UnsubscribeResponse = read_str(xml);
        assert_eq!(
            resp.response_messages[0].code(),
            ResponseCode::ErrorSubscriptionNotFound
        );
        assert_round_trip(&resp, "m:UnsubscribeResponse");
    }
}
