//! SyncFolderItems: what changed in a folder since a sync state.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/syncfolderitems>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{SyncFolderItems, SyncFolderItemsPayload, SyncFolderItemsResponse};

// Hand-written in `types` (a list of alternatives, which the generated messages use).
pub use crate::types::{SyncChange, SyncChanges};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{BaseFolderId, BaseShape, ChangeKey, ItemId};
    use crate::types::{FolderIds, ItemShape, SyncState};

    #[test]
    fn sync_folder_items_request_writes_state_ignore_and_page_size() {
        let req = SyncFolderItems {
            item_shape: ItemShape::new(BaseShape::IdOnly, vec![]),
            sync_folder_id: FolderIds(vec![BaseFolderId::tasks_of(Some("ann@example.com"))]),
            sync_state: Some(SyncState::from("H4sIAAA=")),
            ignore: Some(vec![ItemId::new("AAMk9", None)].into()),
            max_changes_returned: 512,
        };
        assert_writes(
            &req,
            "m:SyncFolderItems",
            r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:SyncFolderId><m:SyncState>H4sIAAA=</m:SyncState><m:Ignore><t:ItemId Id="AAMk9"/></m:Ignore><m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems>"#,
        );
        assert_round_trip(&req, "m:SyncFolderItems");
    }

    #[test]
    fn sync_folder_items_response_reads_each_change_kind() {
        let xml = r#"<m:SyncFolderItemsResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:SyncState>S2</m:SyncState><m:IncludesLastItemInRange>false</m:IncludesLastItemInRange><m:Changes><t:Create><t:Task><t:ItemId Id="A" ChangeKey="1"/></t:Task></t:Create><t:Update><t:Task><t:ItemId Id="B" ChangeKey="5"/></t:Task></t:Update><t:Delete><t:ItemId Id="C" ChangeKey="2"/></t:Delete><t:ReadFlagChange><t:ItemId Id="D"/><t:IsRead>true</t:IsRead></t:ReadFlagChange></m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"#;
        let resp: SyncFolderItemsResponse = read_str(xml);
        let p = &resp.response_messages[0].payload;
        assert_eq!(p.sync_state, Some(SyncState::from("S2")));
        assert_eq!(p.includes_last_item_in_range, Some(false));
        let changes = &p.changes.as_ref().expect("changes").0;
        assert_eq!(changes.len(), 4);
        match &changes[1] {
            SyncChange::Update(item) => assert_eq!(
                item.fields
                    .item_id
                    .as_ref()
                    .and_then(|i| i.change_key.clone()),
                Some(ChangeKey::from("5"))
            ),
            other => panic!("expected an update, got {other:?}"),
        }
        assert!(matches!(&changes[2], SyncChange::Delete(id) if id.id.as_str() == "C"));
        assert_round_trip(&resp, "m:SyncFolderItemsResponse");
    }
}
