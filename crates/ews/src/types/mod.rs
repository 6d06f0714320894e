//! Wire types shared by several operations.

pub mod change;
pub mod folder;
pub(crate) mod generated;
pub mod ids;
pub mod item;
pub mod notification;
pub mod response;
pub mod shape;

pub use change::{ItemUpdate, SyncChange, SyncChanges, Updates};
pub use folder::{AnyFolder, Folder, Folders};
pub use ids::{
    BaseFolderId, ChangeKey, DistinguishedFolderId, DistinguishedFolderName, FolderId,
    FolderIdValue, FolderIds, ItemId, ItemIdValue, Mailbox, SubscriptionId, SyncState, Watermark,
};
pub use item::{
    Body, BodyType, DistinguishedPropertySet, ExtendedFieldUri, ExtendedProperty, Importance, Item,
    ItemKind, Items, MapiPropertyType, PropertyValues, Recipients, Sensitivity, Strings, Task,
    TaskStatus,
};
pub use notification::{ChangedObject, Event, EventType, Notification, ObjectEvent};
pub use response::{
    MessageXml, MessageXmlEntry, NoPayload, ResponseClass, ResponseCode, ResponseMessage,
};
pub use shape::{
    BasePoint, BaseShape, FolderShape, IndexedPageView, IsEqualTo, ItemShape, Path, Paths,
    Restriction, SearchExpression, field_uri,
};
