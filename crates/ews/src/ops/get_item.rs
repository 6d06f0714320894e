//! GetItem: fetches items by id with the properties a shape names.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getitem>.

use crate::types::ItemId;

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{GetItem, GetItemResponse};
pub use crate::types::generated::ItemIds;

// Hand-written: a convenience constructor, which the schema has no word for.
impl From<Vec<ItemId>> for ItemIds {
    fn from(item_ids: Vec<ItemId>) -> Self {
        ItemIds { item_ids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::ItemShape;
    use crate::types::{
        BaseShape, ChangeKey, ExtendedFieldUri, Path, ResponseCode, TaskStatus, field_uri,
    };

    #[test]
    fn get_item_request_writes_shape_and_ids() {
        let req = GetItem {
            item_shape: ItemShape::new(
                BaseShape::AllProperties,
                vec![
                    Path::field(field_uri::PERCENT_COMPLETE),
                    Path::ExtendedFieldUri(ExtendedFieldUri::named_string(
                        "c11ff724-aa03-4555-9952-8fa248a11c3e",
                        "taskbridge-key",
                    )),
                ],
            ),
            item_ids: vec![
                ItemId::new("AAMk1", Some(ChangeKey::from("CK1"))),
                ItemId::new("AAMk2", None),
            ]
            .into(),
        };
        assert_writes(
            &req,
            "m:GetItem",
            r#"<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="task:PercentComplete"/><t:ExtendedFieldURI PropertySetId="c11ff724-aa03-4555-9952-8fa248a11c3e" PropertyName="taskbridge-key" PropertyType="String"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="AAMk1" ChangeKey="CK1"/><t:ItemId Id="AAMk2"/></m:ItemIds></m:GetItem>"#,
        );
        assert_round_trip(&req, "m:GetItem");
    }

    #[test]
    fn get_item_response_reads_task_fields_and_skips_unknown() {
        // Pretty-printed, default namespace for messages, an element we do not know
        // (t:EffectiveRights) and a zone-less time: all must read.
        let xml = r#"<GetItemResponse xmlns="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
  <ResponseMessages>
    <GetItemResponseMessage ResponseClass="Success">
      <ResponseCode>NoError</ResponseCode>
      <Items>
        <t:Task>
          <t:ItemId Id="AAMk1" ChangeKey="CK2"/>
          <t:Subject>Write &amp; review</t:Subject>
          <t:EffectiveRights><t:CreateAssociated>false</t:CreateAssociated></t:EffectiveRights>
          <t:LastModifiedTime>2026-03-02T09:15:00</t:LastModifiedTime>
          <t:PercentComplete>60</t:PercentComplete>
          <t:Status>InProgress</t:Status>
          <t:TotalWork>450</t:TotalWork>
        </t:Task>
      </Items>
    </GetItemResponseMessage>
    <GetItemResponseMessage ResponseClass="Error">
      <MessageText>The specified object was not found in the store.</MessageText>
      <ResponseCode>ErrorItemNotFound</ResponseCode>
      <Items/>
    </GetItemResponseMessage>
  </ResponseMessages>
</GetItemResponse>"#;
        let resp: GetItemResponse = read_str(xml);
        let task = resp.response_messages[0]
            .payload
            .items
            .as_ref()
            .and_then(|i| i.tasks().next().cloned())
            .expect("one task");
        assert_eq!(task.subject.as_deref(), Some("Write & review"));
        assert_eq!(task.percent_complete, Some(60.0));
        assert_eq!(task.status, Some(TaskStatus::InProgress));
        assert_eq!(
            task.last_modified_time.map(|t| t.to_rfc3339()),
            Some("2026-03-02T09:15:00+00:00".into())
        );
        assert_eq!(
            resp.response_messages[1].code(),
            ResponseCode::ErrorItemNotFound
        );
        assert_round_trip(&resp, "m:GetItemResponse");
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;
    use crate::ops::{decode_request, decode_request_strict};
    use crate::xml::DecodeError;

    const OUT_OF_ORDER: &str = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Body><m:GetItem><m:ItemIds><t:ItemId Id="A"/></m:ItemIds><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape></m:GetItem></soap:Body></soap:Envelope>"#;

    #[test]
    fn get_item_strict_refuses_out_of_order_and_lenient_reads_it() {
        match decode_request_strict::<GetItem>(OUT_OF_ORDER.as_bytes(), 1 << 20) {
            Err(DecodeError::OutOfOrder { element, .. }) => assert_eq!(element, "ItemShape"),
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
        let (_, req) =
            decode_request::<GetItem>(OUT_OF_ORDER.as_bytes(), 1 << 20).expect("lenient");
        assert_eq!(req.item_ids.item_ids.len(), 1);
    }
}
