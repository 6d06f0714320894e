//! Folders, as GetFolder returns them.

use crate::xml::{DecodeError, Element, Ns, XmlContent, XmlElement, XmlReader, XmlWriter};

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::Folder;

// Hand-written: a folder's kind shows only in its element name (a choice of
// `t:ArrayOfFoldersType`); this keeps the name beside the generated `Folder` read from it.
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

// Hand-written: `t:ArrayOfFoldersType` is a repeated choice of folder kinds, which `xml_struct!`
// cannot express; any `t:...Folder` element is read, also kinds our subset leaves out.
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
