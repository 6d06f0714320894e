//! SyncFolderItems: what changed in a folder since a sync state.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/syncfolderitems>.

use crate::error::DecodeError;
use crate::ops::operation;
use crate::types::{Item, ItemId};
use crate::xml::{Element, Ns, XmlElement, XmlReader, XmlWriter};

// Generated from wsdl/ (see `crate::generated`).
pub use crate::generated::messages::{
    SyncFolderItems, SyncFolderItemsPayload, SyncFolderItemsResponse,
};

// Hand-written: `t:SyncFolderItemsChangesType` is a list of alternatives (Create, Update, Delete,
// ReadFlagChange), which `xml_struct!` cannot express.

/// One change in a folder.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum SyncChange {
    /// An item appeared.
    Create(Item),
    /// An item changed.
    Update(Item),
    /// An item is gone.
    Delete(ItemId),
    /// An item's read flag changed.
    #[serde(rename_all = "PascalCase")]
    ReadFlagChange {
        /// The item.
        item_id: ItemId,
        /// The new flag.
        is_read: bool,
    },
}

/// The changes of a page (`t:SyncFolderItemsChangesType`).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct SyncChanges(pub Vec<SyncChange>);

impl XmlElement for SyncChanges {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut changes = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            if child.ns() != Ns::Types {
                r.skip(child)?;
                continue;
            }
            match child.local_name() {
                "Create" | "Update" => {
                    let create = child.local_name() == "Create";
                    let outer = child;
                    let mut item = None;
                    while let Some(inner) = r.next_child(&outer)? {
                        match Item::read_any(r, inner)? {
                            Ok(i) => item = Some(i),
                            Err(other) => r.skip(other)?,
                        }
                    }
                    let item = item.ok_or_else(|| DecodeError::MissingElement {
                        path: "Changes/Create".into(),
                        element: "Item".into(),
                    })?;
                    changes.push(if create {
                        SyncChange::Create(item)
                    } else {
                        SyncChange::Update(item)
                    });
                }
                "Delete" => {
                    let outer = child;
                    let mut id = None;
                    while let Some(inner) = r.next_child(&outer)? {
                        if inner.is(Ns::Types, "ItemId") {
                            id = Some(ItemId::read(r, inner)?);
                        } else {
                            r.skip(inner)?;
                        }
                    }
                    changes.push(SyncChange::Delete(id.ok_or_else(|| {
                        DecodeError::MissingElement {
                            path: "Changes/Delete".into(),
                            element: "ItemId".into(),
                        }
                    })?));
                }
                "ReadFlagChange" => {
                    let outer = child;
                    let (mut id, mut is_read) = (None, false);
                    while let Some(inner) = r.next_child(&outer)? {
                        if inner.is(Ns::Types, "ItemId") {
                            id = Some(ItemId::read(r, inner)?);
                        } else if inner.is(Ns::Types, "IsRead") {
                            is_read = bool::read(r, inner)?;
                        } else {
                            r.skip(inner)?;
                        }
                    }
                    if let Some(item_id) = id {
                        changes.push(SyncChange::ReadFlagChange { item_id, is_read });
                    }
                }
                _ => r.skip(child)?,
            }
        }
        Ok(SyncChanges(changes))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        if self.0.is_empty() {
            w.tag(name).empty();
            return;
        }
        w.tag(name).children(|w| {
            for change in &self.0 {
                match change {
                    SyncChange::Create(item) => w.tag("t:Create").children(|w| item.write_item(w)),
                    SyncChange::Update(item) => w.tag("t:Update").children(|w| item.write_item(w)),
                    SyncChange::Delete(id) => {
                        w.tag("t:Delete").children(|w| id.write(w, "t:ItemId"))
                    }
                    SyncChange::ReadFlagChange { item_id, is_read } => {
                        w.tag("t:ReadFlagChange").children(|w| {
                            item_id.write(w, "t:ItemId");
                            is_read.write(w, "t:IsRead");
                        })
                    }
                }
            }
        });
    }
}

impl crate::xml::Absent for SyncChanges {}

operation!(SyncFolderItems => SyncFolderItemsResponse);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{BaseFolderId, BaseShape, ChangeKey};
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
