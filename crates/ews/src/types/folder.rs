//! Folders, as GetFolder returns them.

use super::ids::FolderId;
use crate::error::DecodeError;
use crate::xml::{Element, Ns, XmlContent, XmlElement, XmlReader, XmlWriter, xml_struct};

xml_struct! {
    /// A folder (`t:FolderType` / `t:TasksFolderType`, the elements taskbridge reads).
    /// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/tasksfolder>.
    #[derive(Clone, Debug, PartialEq, Eq, Default)]
    pub struct Folder {
        /// Id and change key.
        pub folder_id: opt FolderId = t "FolderId",
        /// The parent folder.
        pub parent_folder_id: opt FolderId = t "ParentFolderId",
        /// `IPF.Task` for task folders.
        pub folder_class: opt String = t "FolderClass",
        /// The display name.
        pub display_name: opt String = t "DisplayName",
        /// Number of items.
        pub total_count: opt i32 = t "TotalCount",
        /// Number of subfolders.
        pub child_folder_count: opt i32 = t "ChildFolderCount",
    }
}

/// A folder with the element name it came in (`Folder`, `TasksFolder`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AnyFolder {
    /// The element name.
    #[serde(rename = "Kind")]
    pub kind: String,
    /// The fields.
    #[serde(flatten)]
    pub folder: Folder,
}

/// A folders array (`t:ArrayOfFoldersType`).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Folders(pub Vec<AnyFolder>);

impl XmlElement for Folders {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut folders = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            let kind = child.name_lossy();
            if child.ns() == Ns::Types && kind.ends_with("Folder") {
                let folder = Folder::read_content(r, child, &mut |_, c| Ok(Some(c)))?;
                folders.push(AnyFolder { kind, folder });
            } else {
                r.skip(child)?;
            }
        }
        Ok(Folders(folders))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            for f in &self.0 {
                f.folder.write(w, &format!("t:{}", f.kind));
            }
        });
    }
}

impl crate::xml::Absent for Folders {}
