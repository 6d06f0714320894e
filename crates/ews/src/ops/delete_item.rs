//! DeleteItem: removes items.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/deleteitem>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{DeleteItem, DeleteItemResponse};
pub use crate::types::generated::{AffectedTaskOccurrences, DeleteType};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{ItemId, ResponseClass};

    #[test]
    fn delete_item_request_names_task_occurrences() {
        let req = DeleteItem {
            delete_type: DeleteType::MoveToDeletedItems,
            affected_task_occurrences: Some(AffectedTaskOccurrences::AllOccurrences),
            item_ids: vec![ItemId::new("AAMk1", None)].into(),
        };
        assert_writes(
            &req,
            "m:DeleteItem",
            r#"<m:DeleteItem DeleteType="MoveToDeletedItems" AffectedTaskOccurrences="AllOccurrences"><m:ItemIds><t:ItemId Id="AAMk1"/></m:ItemIds></m:DeleteItem>"#,
        );
        assert_round_trip(&req, "m:DeleteItem");
    }

    #[test]
    fn delete_item_response_reads_plain_messages() {
        let xml = r#"<m:DeleteItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages><m:DeleteItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:DeleteItemResponseMessage></m:ResponseMessages></m:DeleteItemResponse>"#;
        let resp: DeleteItemResponse = read_str(xml);
        assert_eq!(
            resp.response_messages[0].response_class,
            ResponseClass::Success
        );
        assert_round_trip(&resp, "m:DeleteItemResponse");
    }
}
