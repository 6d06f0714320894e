//! Ids and opaque tokens of EWS, each its own type so they cannot be mixed up.

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::{DistinguishedFolderId, FolderId, ItemId, Mailbox};

/// Declares a newtype over an opaque server string.
macro_rules! opaque {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The token as the server wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $crate::xml::XmlText for $name {
            fn from_text(text: &str) -> Result<Self, &'static str> {
                Ok(Self(text.to_string()))
            }
            fn to_text(&self) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed(&self.0)
            }
        }

        impl $crate::xml::Absent for $name {}

        impl $crate::xml::XmlElement for $name {
            fn read<'i>(
                r: &mut $crate::xml::XmlReader<'i>,
                e: $crate::xml::Element<'i>,
            ) -> Result<Self, $crate::xml::DecodeError> {
                Ok(Self(r.text(e)?.into_owned()))
            }
            fn write(&self, w: &mut $crate::xml::XmlWriter, name: &str) {
                w.text_element(name, &self.0);
            }
        }
    )*};
}

opaque! {
    /// The version stamp of an item or folder; it changes with every modification.
    ChangeKey,
    /// The store id of an item (the `Id` attribute of `t:ItemId`).
    ItemIdValue,
    /// The store id of a folder.
    FolderIdValue,
    /// Identifies a push, pull or streaming subscription.
    SubscriptionId,
    /// Marks a position in a subscription's event stream.
    Watermark,
    /// The opaque state SyncFolderItems hands back to resume from.
    SyncState,
}

// Hand-written: a convenience constructor, which the schema has no word for.
impl ItemId {
    /// An id with a change key.
    pub fn new(id: impl Into<String>, change_key: Option<ChangeKey>) -> Self {
        Self {
            id: ItemIdValue(id.into()),
            change_key,
        }
    }
}

// Hand-written: a convenience constructor.
impl Mailbox {
    /// A mailbox named by its SMTP address.
    pub fn smtp(address: impl Into<String>) -> Self {
        Self {
            name: None,
            email_address: Some(address.into()),
            routing_type: None,
        }
    }
}

// Hand-written: the schema's `t:DistinguishedFolderIdNameType` lists 71 names; this names the ones
// taskbridge uses and keeps any other in `Other`.
crate::xml::xml_enum! {
    /// Names of well-known folders (`t:DistinguishedFolderIdNameType`, the ones we use).
    pub enum DistinguishedFolderName {
        /// The Tasks folder.
        Tasks = "tasks",
        /// The Inbox.
        Inbox = "inbox",
        /// The root of the message folder hierarchy.
        MsgFolderRoot = "msgfolderroot",
        /// The Deleted Items folder.
        DeletedItems = "deleteditems",
    }
}

// Hand-written: the members of `t:NonEmptyArrayOfBaseFolderIdsType` are a choice (a Rust enum,
// which `xml_struct!` cannot express), read and written by element name in `FolderIds`.
/// One of the folder id forms (`t:NonEmptyArrayOfBaseFolderIdsType` members).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BaseFolderId {
    /// A folder by store id.
    FolderId(FolderId),
    /// A well-known folder.
    DistinguishedFolderId(DistinguishedFolderId),
}

impl BaseFolderId {
    /// The Tasks folder of `mailbox` (or of the caller when `None`).
    pub fn tasks_of(mailbox: Option<&str>) -> Self {
        BaseFolderId::DistinguishedFolderId(DistinguishedFolderId {
            id: DistinguishedFolderName::Tasks,
            change_key: None,
            mailbox: mailbox.map(Mailbox::smtp),
        })
    }
}

// Hand-written: a repeated choice of `BaseFolderId` forms, which `xml_struct!` cannot express.
/// A list of folder ids (`FolderIds`, `ParentFolderIds`, `SavedItemFolderId`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Default)]
#[serde(transparent)]
pub struct FolderIds(pub Vec<BaseFolderId>);

impl crate::xml::XmlElement for FolderIds {
    fn read<'i>(
        r: &mut crate::xml::XmlReader<'i>,
        e: crate::xml::Element<'i>,
    ) -> Result<Self, crate::xml::DecodeError> {
        use crate::xml::Ns;
        let mut ids = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            if child.is(Ns::Types, "FolderId") {
                ids.push(BaseFolderId::FolderId(FolderId::read(r, child)?));
            } else if child.is(Ns::Types, "DistinguishedFolderId") {
                ids.push(BaseFolderId::DistinguishedFolderId(
                    DistinguishedFolderId::read(r, child)?,
                ));
            } else {
                r.skip(child)?;
            }
        }
        Ok(FolderIds(ids))
    }

    fn write(&self, w: &mut crate::xml::XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            for id in &self.0 {
                match id {
                    BaseFolderId::FolderId(f) => f.write(w, "t:FolderId"),
                    BaseFolderId::DistinguishedFolderId(d) => d.write(w, "t:DistinguishedFolderId"),
                }
            }
        });
    }
}

impl crate::xml::Absent for FolderIds {}
