//! UpdateItem: sets or deletes single properties of items, guarded by change keys.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/updateitem>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{UpdateItem, UpdateItemPayload, UpdateItemResponse};
pub use crate::types::generated::{ConflictResolution, ConflictResults, ItemChange, ItemChanges};

// Hand-written in `types` (a list of alternatives, which the generated types use).
pub use crate::types::{ItemUpdate, Updates};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::create_item::MessageDisposition;
    use crate::ops::test_support::*;
    use crate::types::ItemId;
    use crate::types::{ChangeKey, ExtendedFieldUri, Item, Path, ResponseCode, Task, field_uri};

    fn request() -> UpdateItem {
        let set_percent = ItemUpdate::SetItemField {
            path: Path::field(field_uri::PERCENT_COMPLETE),
            item: Box::new(Item::task(Task {
                percent_complete: Some(60.0),
                ..Task::default()
            })),
        };
        let drop_start = ItemUpdate::DeleteItemField {
            path: Path::field(field_uri::START_DATE),
        };
        let drop_tag = ItemUpdate::DeleteItemField {
            path: Path::ExtendedFieldUri(ExtendedFieldUri::named_string(
                "c11ff724-aa03-4555-9952-8fa248a11c3e",
                "taskbridge-key",
            )),
        };
        UpdateItem {
            conflict_resolution: ConflictResolution::AutoResolve,
            message_disposition: Some(MessageDisposition::SaveOnly),
            saved_item_folder_id: None,
            item_changes: ItemChanges {
                item_changes: vec![ItemChange {
                    item_id: ItemId::new("AAMk1", Some(ChangeKey::from("CK1"))),
                    updates: Updates(vec![set_percent, drop_start, drop_tag]),
                }],
            },
        }
    }

    #[test]
    fn update_item_request_writes_set_and_delete_in_order() {
        // Written from the UpdateItem reference: attributes, ItemChanges, ItemChange, Updates.
        assert_writes(
            &request(),
            "m:UpdateItem",
            r#"<m:UpdateItem ConflictResolution="AutoResolve" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="AAMk1" ChangeKey="CK1"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="task:PercentComplete"/><t:Task><t:PercentComplete>60</t:PercentComplete></t:Task></t:SetItemField><t:DeleteItemField><t:FieldURI FieldURI="task:StartDate"/></t:DeleteItemField><t:DeleteItemField><t:ExtendedFieldURI PropertySetId="c11ff724-aa03-4555-9952-8fa248a11c3e" PropertyName="taskbridge-key" PropertyType="String"/></t:DeleteItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#,
        );
        assert_round_trip(&request(), "m:UpdateItem");
    }

    #[test]
    fn update_item_response_reads_conflicts_and_stale_key() {
        let xml = r#"<m:UpdateItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:UpdateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Task><t:ItemId Id="AAMk1" ChangeKey="CK2"/></t:Task></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage><m:UpdateItemResponseMessage ResponseClass="Error"><m:MessageText>The change key is stale.</m:MessageText><m:ResponseCode>ErrorIrresolvableConflict</m:ResponseCode><m:Items/><m:ConflictResults><t:Count>1</t:Count></m:ConflictResults></m:UpdateItemResponseMessage></m:ResponseMessages></m:UpdateItemResponse>"#;
        let resp: UpdateItemResponse = read_str(xml);
        assert_eq!(
            resp.response_messages[0].payload.conflict_results,
            Some(ConflictResults { count: 0 })
        );
        assert_eq!(
            resp.response_messages[1].code(),
            ResponseCode::ErrorIrresolvableConflict
        );
        assert_round_trip(&resp, "m:UpdateItemResponse");
    }
}
