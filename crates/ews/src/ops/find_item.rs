//! FindItem: finds items in a folder, here by the taskbridge tag extended property.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/finditem>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{FindItem, FindItemPayload, FindItemResponse};
pub use crate::types::generated::{FindItemParent, ItemTraversal};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{
        BaseFolderId, BasePoint, BaseShape, ExtendedFieldUri, Path, SearchExpression,
    };
    use crate::types::{FolderIds, IndexedPageView, ItemShape, Restriction};

    fn key_path() -> ExtendedFieldUri {
        ExtendedFieldUri::named_string("c11ff724-aa03-4555-9952-8fa248a11c3e", "taskbridge-key")
    }

    #[test]
    fn find_item_request_writes_restriction_on_extended_property() {
        let req = FindItem {
            traversal: ItemTraversal::Shallow,
            item_shape: ItemShape::new(BaseShape::IdOnly, vec![Path::ExtendedFieldUri(key_path())]),
            indexed_page_item_view: Some(IndexedPageView {
                max_entries_returned: Some(200),
                offset: 0,
                base_point: BasePoint::Beginning,
            }),
            restriction: Some(Restriction::equals(
                Path::ExtendedFieldUri(key_path()),
                "project:7",
            )),
            parent_folder_ids: FolderIds(vec![BaseFolderId::tasks_of(Some("ann@example.com"))]),
        };
        assert_writes(
            &req,
            "m:FindItem",
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:ExtendedFieldURI PropertySetId="c11ff724-aa03-4555-9952-8fa248a11c3e" PropertyName="taskbridge-key" PropertyType="String"/></t:AdditionalProperties></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="200" Offset="0" BasePoint="Beginning"/><m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertySetId="c11ff724-aa03-4555-9952-8fa248a11c3e" PropertyName="taskbridge-key" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="project:7"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>ann@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:ParentFolderIds></m:FindItem>"#,
        );
        assert_round_trip(&req, "m:FindItem");
        let back: FindItem = read_str(&format!(
            r#"<m:FindItem xmlns:m="{}" xmlns:t="{}" Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertySetId="C11FF724-AA03-4555-9952-8FA248A11C3E" PropertyName="taskbridge-key" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="x"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:DistinguishedFolderId Id="tasks"/></m:ParentFolderIds></m:FindItem>"#,
            crate::xml::NS_MESSAGES,
            crate::xml::NS_TYPES
        ));
        match back.restriction.map(|r| r.0) {
            Some(SearchExpression::IsEqualTo(eq)) => {
                assert_eq!(eq.value.as_deref(), Some("x"));
                let Path::ExtendedFieldUri(p) = eq.path else {
                    panic!("extended path expected")
                };
                assert!(p.same_property(&key_path()));
            }
            other => panic!("unexpected restriction {other:?}"),
        }
    }

    #[test]
    fn find_item_response_reads_paging_attributes() {
        let xml = r#"<m:FindItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:RootFolder IndexedPagingOffset="2" TotalItemsInView="3" IncludesLastItemInRange="false"><t:Items><t:Task><t:ItemId Id="A" ChangeKey="1"/></t:Task><t:Message><t:ItemId Id="B" ChangeKey="2"/></t:Message></t:Items></m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>"#;
        let resp: FindItemResponse = read_str(xml);
        let root = resp.response_messages[0]
            .payload
            .root_folder
            .as_ref()
            .expect("root folder");
        assert_eq!(root.indexed_paging_offset, Some(2));
        assert_eq!(root.includes_last_item_in_range, Some(false));
        let items = root.items.as_ref().expect("items");
        assert_eq!(items.0.len(), 2);
        assert_eq!(items.tasks().count(), 1, "a message is not a task");
        assert_round_trip(&resp, "m:FindItemResponse");
    }
}
