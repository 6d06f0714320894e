//! CreateItem: creates tasks in a folder.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{CreateItem, CreateItemResponse, ItemsPayload};
pub use crate::types::generated::MessageDisposition;

// Not resent after a failure that may have reached the server: it would create the items twice.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{
        BaseFolderId, Body, ChangeKey, ExtendedFieldUri, ExtendedProperty, Importance, Item,
        ItemId, ResponseClass, ResponseCode, Task,
    };
    use crate::types::{FolderIds, Items};

    fn request() -> CreateItem {
        let task = Task {
            subject: Some("Apollo: Design review".into()),
            body: Some(Body::text("Check the <draft> & notes")),
            importance: Some(Importance::High),
            extended_properties: vec![ExtendedProperty {
                extended_field_uri: ExtendedFieldUri::named_string(
                    "c11ff724-aa03-4555-9952-8fa248a11c3e",
                    "taskbridge-key",
                ),
                value: Some("7b1c...:12".into()),
                values: None,
            }],
            percent_complete: Some(0.0),
            total_work: Some(450),
            ..Task::default()
        };
        CreateItem {
            message_disposition: Some(MessageDisposition::SaveOnly),
            saved_item_folder_id: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(
                "ann@example.com",
            ))])),
            items: Items(vec![Item::task(task)]),
        }
    }

    #[test]
    fn create_item_request_writes_schema_order() {
        // Written by hand from the CreateItem reference page.
        assert_writes(
            &request(),
            "m:CreateItem",
            r#"<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:SavedItemFolderId><m:Items><t:Task><t:Subject>Apollo: Design review</t:Subject><t:Body BodyType="Text">Check the &lt;draft&gt; &amp; notes</t:Body><t:Importance>High</t:Importance><t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="c11ff724-aa03-4555-9952-8fa248a11c3e" PropertyName="taskbridge-key" PropertyType="String"/><t:Value>7b1c...:12</t:Value></t:ExtendedProperty><t:PercentComplete>0</t:PercentComplete><t:TotalWork>450</t:TotalWork></t:Task></m:Items></m:CreateItem>"#,
        );
    }

    #[test]
    fn create_item_sends_a_message_with_its_recipients_after_the_item_elements() {
        let request = CreateItem {
            message_disposition: Some(MessageDisposition::SendOnly),
            saved_item_folder_id: None,
            items: Items(vec![Item::message(
                vec![crate::types::Mailbox::smtp("mia@example.com")],
                "2 updates wait",
                "Design review: 12 h -> 16 h",
            )]),
        };
        assert_writes(
            &request,
            "m:CreateItem",
            r#"<m:CreateItem MessageDisposition="SendOnly"><m:Items><t:Message><t:Subject>2 updates wait</t:Subject><t:Body BodyType="Text">Design review: 12 h -&gt; 16 h</t:Body><t:ToRecipients><t:Mailbox><t:EmailAddress>mia@example.com</t:EmailAddress></t:Mailbox></t:ToRecipients></t:Message></m:Items></m:CreateItem>"#,
        );
        assert_round_trip(&request, "m:CreateItem");
    }

    #[test]
    fn create_item_request_round_trips() {
        assert_round_trip(&request(), "m:CreateItem");
    }

    #[test]
    fn create_item_response_reads_ids_and_errors_per_item() {
        // Shaped after the CreateItem reference's response example; second item failed.
        let xml = r#"<m:CreateItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:CreateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Task><t:ItemId Id="AAMk1" ChangeKey="EwAAAB"/></t:Task></m:Items></m:CreateItemResponseMessage><m:CreateItemResponseMessage ResponseClass="Error"><m:MessageText>The server cannot service this request right now. Try again later.</m:MessageText><m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml><t:Value Name="BackOffMilliseconds">2500</t:Value></m:MessageXml><m:Items/></m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse>"#;
        let resp: CreateItemResponse = read_str(xml);
        assert_eq!(resp.response_messages.len(), 2);
        let ok = &resp.response_messages[0];
        assert_eq!(ok.response_class, ResponseClass::Success);
        let items = ok.payload.items.as_ref().expect("items");
        assert_eq!(
            items.0[0].fields.item_id,
            Some(ItemId::new("AAMk1", Some(ChangeKey::from("EwAAAB"))))
        );
        let busy = &resp.response_messages[1];
        assert_eq!(busy.code(), ResponseCode::ErrorServerBusy);
        assert_eq!(
            busy.back_off(),
            Some(std::time::Duration::from_millis(2500))
        );
        assert_round_trip(&resp, "m:CreateItemResponse");
    }
}
