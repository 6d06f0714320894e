//! The hand-written lists of alternatives that generated wire types hold: the updates of one
//! item (`UpdateItem`) and the changes of a sync page (`SyncFolderItems`). The schema says each
//! is a sequence of choices between elements, which `xml_struct!` cannot express; they live in
//! this layer because the generated types and messages use them.

use crate::types::{Item, ItemId, Path};
use crate::xml::{DecodeError, Element, Ns, XmlElement, XmlReader, XmlWriter};

// `t:NonEmptyArrayOfItemChangeDescriptionsType` is a list of alternatives (set or
// delete a field, each holding a path from a substitution group), which `xml_struct!` cannot
// express.

/// One change to one property (`t:SetItemField` / `t:DeleteItemField`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum ItemUpdate {
    /// Set the property at `path` to its value in `item` (which carries only that property).
    #[serde(rename_all = "PascalCase")]
    SetItemField {
        /// The property.
        path: Path,
        /// An item holding the new value.
        item: Box<Item>,
    },
    /// Remove the property at `path`.
    #[serde(rename_all = "PascalCase")]
    DeleteItemField {
        /// The property.
        path: Path,
    },
}

/// The updates of one item (`t:NonEmptyArrayOfItemChangeDescriptionsType`).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Updates(pub Vec<ItemUpdate>);

impl XmlElement for Updates {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut updates = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            let set = child.is(Ns::Types, "SetItemField");
            if !set && !child.is(Ns::Types, "DeleteItemField") {
                r.skip(child)?;
                continue;
            }
            let change = child;
            let mut path = None;
            let mut item = None;
            while let Some(part) = r.next_child(&change)? {
                match Path::read_any(r, part)? {
                    Ok(p) => path = Some(p),
                    Err(part) => match Item::read_any(r, part)? {
                        Ok(i) => item = Some(i),
                        Err(other) => r.skip(other)?,
                    },
                }
            }
            let which = if set {
                "SetItemField"
            } else {
                "DeleteItemField"
            };
            let missing = |element: &str| DecodeError::MissingElement {
                path: format!("Updates/{which}"),
                element: element.into(),
            };
            let path = path.ok_or_else(|| missing("Path"))?;
            updates.push(if set {
                ItemUpdate::SetItemField {
                    path,
                    item: Box::new(item.ok_or_else(|| missing("Task"))?),
                }
            } else {
                ItemUpdate::DeleteItemField { path }
            });
        }
        Ok(Updates(updates))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            for update in &self.0 {
                match update {
                    ItemUpdate::SetItemField { path, item } => {
                        w.tag("t:SetItemField").children(|w| {
                            path.write_path(w);
                            item.write_item(w);
                        })
                    }
                    ItemUpdate::DeleteItemField { path } => {
                        w.tag("t:DeleteItemField").children(|w| path.write_path(w))
                    }
                }
            }
        });
    }
}

impl crate::xml::Absent for Updates {}

// `t:SyncFolderItemsChangesType` is a list of alternatives (Create, Update, Delete,
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
