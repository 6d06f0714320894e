//! Notifications: what push and pull subscriptions deliver.

use chrono::{DateTime, Utc};

use super::ids::{FolderId, ItemId, SubscriptionId, Watermark};
use crate::xml::{DecodeError, Element, Ns, XmlElement, XmlReader, XmlWriter, xml_struct};

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::EventType;

// Hand-written: `FolderId` / `ItemId` (and `OldFolderId` / `OldItemId`) are a choice of two
// elements, which is a Rust enum and which `xml_struct!` cannot express.
/// Which object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ChangedObject {
    /// An item.
    ItemId(ItemId),
    /// A folder.
    FolderId(FolderId),
}

// Hand-written: one struct for `t:BaseObjectChangedEventType` and its extensions (moved / copied,
// modified), whose content holds choices (`ChangedObject`); `Event` reads and writes it.
/// The body of an object event (`t:BaseObjectChangedEventType` and its extensions).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectEvent {
    /// Position of this event in the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// When it happened.
    pub time_stamp: DateTime<Utc>,
    /// The item or folder.
    pub object: ChangedObject,
    /// The folder it is in.
    pub parent_folder_id: FolderId,
    /// Where it was before (moved and copied events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_object: Option<ChangedObject>,
    /// The folder it was in before (moved and copied events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_parent_folder_id: Option<FolderId>,
    /// Unread count (modified events on folders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<i32>,
}

impl ObjectEvent {
    /// The item id, if the event is about an item.
    pub fn item_id(&self) -> Option<&ItemId> {
        match &self.object {
            ChangedObject::ItemId(id) => Some(id),
            ChangedObject::FolderId(_) => None,
        }
    }
}

// Hand-written: the events of `t:NotificationType` are a choice of eight elements, which is a
// Rust enum (one arm per element name) and which `xml_struct!` cannot express.
/// One event of a notification.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/notification-ex15websvcsotherref>.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "Type")]
pub enum Event {
    /// `t:CopiedEvent`.
    CopiedEvent(ObjectEvent),
    /// `t:CreatedEvent`.
    CreatedEvent(ObjectEvent),
    /// `t:DeletedEvent`.
    DeletedEvent(ObjectEvent),
    /// `t:ModifiedEvent`.
    ModifiedEvent(ObjectEvent),
    /// `t:MovedEvent`.
    MovedEvent(ObjectEvent),
    /// `t:NewMailEvent`.
    NewMailEvent(ObjectEvent),
    /// `t:FreeBusyChangedEvent`.
    FreeBusyChangedEvent(ObjectEvent),
    /// `t:StatusEvent`: the subscription is alive, nothing happened.
    StatusEvent {
        /// Position in the stream.
        #[serde(rename = "Watermark", skip_serializing_if = "Option::is_none")]
        watermark: Option<Watermark>,
    },
}

impl Event {
    /// The element name of the event.
    pub fn name(&self) -> &'static str {
        match self {
            Event::CopiedEvent(_) => "CopiedEvent",
            Event::CreatedEvent(_) => "CreatedEvent",
            Event::DeletedEvent(_) => "DeletedEvent",
            Event::ModifiedEvent(_) => "ModifiedEvent",
            Event::MovedEvent(_) => "MovedEvent",
            Event::NewMailEvent(_) => "NewMailEvent",
            Event::FreeBusyChangedEvent(_) => "FreeBusyChangedEvent",
            Event::StatusEvent { .. } => "StatusEvent",
        }
    }

    /// The watermark of the event.
    pub fn watermark(&self) -> Option<&Watermark> {
        match self {
            Event::StatusEvent { watermark } => watermark.as_ref(),
            Event::CopiedEvent(o)
            | Event::CreatedEvent(o)
            | Event::DeletedEvent(o)
            | Event::ModifiedEvent(o)
            | Event::MovedEvent(o)
            | Event::NewMailEvent(o)
            | Event::FreeBusyChangedEvent(o) => o.watermark.as_ref(),
        }
    }

    /// The object event, for everything but a status event.
    pub fn object(&self) -> Option<&ObjectEvent> {
        match self {
            Event::StatusEvent { .. } => None,
            Event::CopiedEvent(o)
            | Event::CreatedEvent(o)
            | Event::DeletedEvent(o)
            | Event::ModifiedEvent(o)
            | Event::MovedEvent(o)
            | Event::NewMailEvent(o)
            | Event::FreeBusyChangedEvent(o) => Some(o),
        }
    }

    fn read_any<'i>(
        r: &mut XmlReader<'i>,
        e: Element<'i>,
    ) -> Result<Result<Event, Element<'i>>, DecodeError> {
        if e.ns() != Ns::Types {
            return Ok(Err(e));
        }
        let wrap: fn(ObjectEvent) -> Event = match e.local_name() {
            "StatusEvent" => {
                let mut watermark = None;
                while let Some(child) = r.next_child(&e)? {
                    if child.is(Ns::Types, "Watermark") {
                        watermark = Some(Watermark::read(r, child)?);
                    } else {
                        r.skip(child)?;
                    }
                }
                return Ok(Ok(Event::StatusEvent { watermark }));
            }
            "CopiedEvent" => Event::CopiedEvent,
            "CreatedEvent" => Event::CreatedEvent,
            "DeletedEvent" => Event::DeletedEvent,
            "ModifiedEvent" => Event::ModifiedEvent,
            "MovedEvent" => Event::MovedEvent,
            "NewMailEvent" => Event::NewMailEvent,
            "FreeBusyChangedEvent" => Event::FreeBusyChangedEvent,
            _ => return Ok(Err(e)),
        };
        let name = e.name_lossy();
        let mut watermark = None;
        let mut time_stamp = None;
        let mut object = None;
        let mut parent_folder_id = None;
        let mut old_object = None;
        let mut old_parent_folder_id = None;
        let mut unread_count = None;
        while let Some(child) = r.next_child(&e)? {
            if child.ns() != Ns::Types {
                r.skip(child)?;
                continue;
            }
            match child.local_name() {
                "Watermark" => watermark = Some(Watermark::read(r, child)?),
                "TimeStamp" => time_stamp = Some(DateTime::<Utc>::read(r, child)?),
                "ItemId" => object = Some(ChangedObject::ItemId(ItemId::read(r, child)?)),
                "FolderId" => object = Some(ChangedObject::FolderId(FolderId::read(r, child)?)),
                "ParentFolderId" => parent_folder_id = Some(FolderId::read(r, child)?),
                "OldItemId" => old_object = Some(ChangedObject::ItemId(ItemId::read(r, child)?)),
                "OldFolderId" => {
                    old_object = Some(ChangedObject::FolderId(FolderId::read(r, child)?))
                }
                "OldParentFolderId" => old_parent_folder_id = Some(FolderId::read(r, child)?),
                "UnreadCount" => unread_count = Some(i32::read(r, child)?),
                _ => r.skip(child)?,
            }
        }
        let missing = |element: &str| DecodeError::MissingElement {
            path: name.clone(),
            element: element.into(),
        };
        Ok(Ok(wrap(ObjectEvent {
            watermark,
            time_stamp: time_stamp.ok_or_else(|| missing("TimeStamp"))?,
            object: object.ok_or_else(|| missing("ItemId"))?,
            parent_folder_id: parent_folder_id.ok_or_else(|| missing("ParentFolderId"))?,
            old_object,
            old_parent_folder_id,
            unread_count,
        })))
    }

    fn write_event(&self, w: &mut XmlWriter) {
        let name = match self {
            Event::StatusEvent { watermark } => {
                let tag = w.tag("t:StatusEvent");
                match watermark {
                    Some(wm) => tag.children(|w| wm.write(w, "t:Watermark")),
                    None => tag.empty(),
                }
                return;
            }
            other => other.name(),
        };
        let o = self
            .object()
            .expect("every event but StatusEvent has an object");
        let qualified = format!("t:{name}");
        w.tag(&qualified).children(|w| {
            if let Some(wm) = &o.watermark {
                wm.write(w, "t:Watermark");
            }
            o.time_stamp.write(w, "t:TimeStamp");
            write_object(w, &o.object, "t:ItemId", "t:FolderId");
            o.parent_folder_id.write(w, "t:ParentFolderId");
            if let Some(old) = &o.old_object {
                write_object(w, old, "t:OldItemId", "t:OldFolderId");
            }
            if let Some(old_parent) = &o.old_parent_folder_id {
                old_parent.write(w, "t:OldParentFolderId");
            }
            if let Some(count) = o.unread_count {
                count.write(w, "t:UnreadCount");
            }
        });
    }
}

fn write_object(w: &mut XmlWriter, object: &ChangedObject, item: &str, folder: &str) {
    match object {
        ChangedObject::ItemId(id) => id.write(w, item),
        ChangedObject::FolderId(id) => id.write(w, folder),
    }
}

// Hand-written: `t:NotificationType` ends in a repeated choice of events, which `xml_struct!`
// cannot express; its leading elements are read by `NotificationHead`.
/// A batch of events of one subscription (`t:NotificationType`).
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/notification-ex15websvcsotherref>.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notification {
    /// The subscription the events belong to.
    pub subscription_id: SubscriptionId,
    /// The watermark before the first event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_watermark: Option<Watermark>,
    /// Whether more events are waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_events: Option<bool>,
    /// The events, in order.
    pub events: Vec<Event>,
}

impl Notification {
    /// The items the events are about, in order, each once: created, modified, deleted, moved
    /// (new and old id), copied, new mail. Empty for status events only.
    pub fn item_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let mut push = |id: &str| {
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_string());
            }
        };
        for event in &self.events {
            let Some(object) = event.object() else {
                continue;
            };
            if let Some(id) = object.item_id() {
                push(id.id.as_str());
            }
            if let Some(ChangedObject::ItemId(old)) = &object.old_object {
                push(old.id.as_str());
            }
        }
        ids
    }

    /// The item versions the notification reports, when that is all it reports: every item
    /// event is a creation or a modification whose item id carries a change key. `None` when
    /// an item was deleted, moved, copied or delivered as new mail, or an id came without its
    /// change key: such a notification cannot be settled by comparing versions. Folder and
    /// status events name no item and are left out (`Some` of an empty list when only they
    /// came).
    pub fn item_versions(&self) -> Option<Vec<&ItemId>> {
        let mut versions = Vec::new();
        for event in &self.events {
            let object = match event {
                Event::CreatedEvent(o) | Event::ModifiedEvent(o) => o,
                Event::StatusEvent { .. } => continue,
                Event::CopiedEvent(o)
                | Event::DeletedEvent(o)
                | Event::MovedEvent(o)
                | Event::NewMailEvent(o)
                | Event::FreeBusyChangedEvent(o) => {
                    if o.item_id().is_some() {
                        return None;
                    }
                    continue;
                }
            };
            match object.item_id() {
                Some(id) if id.change_key.is_some() => versions.push(id),
                Some(_) => return None,
                None => {}
            }
        }
        Some(versions)
    }

    /// The position to resume from: the watermark of the last event that carries one, else
    /// the previous watermark.
    pub fn resume_watermark(&self) -> Option<&Watermark> {
        self.events
            .iter()
            .rev()
            .find_map(|e| e.watermark())
            .or(self.previous_watermark.as_ref())
    }
}

// Hand-written: `t:NotificationType` ends in a choice of event elements (`Notification` reads
// them by name); this is the part before the choice, which `xml_struct!` can say.
xml_struct! {
    /// The leading part of `t:NotificationType`; the events follow as a choice.
    struct NotificationHead {
        subscription_id: req SubscriptionId = t "SubscriptionId",
        previous_watermark: opt Watermark = t "PreviousWatermark",
        more_events: opt bool = t "MoreEvents",
    }
}

impl XmlElement for Notification {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        use crate::xml::XmlContent;
        let mut events = Vec::new();
        let head = NotificationHead::read_content(r, e, &mut |r, child| {
            Ok(match Event::read_any(r, child)? {
                Ok(event) => {
                    events.push(event);
                    None
                }
                Err(other) => Some(other),
            })
        })
        .map_err(|err| err.within("Notification"))?;
        Ok(Notification {
            subscription_id: head.subscription_id,
            previous_watermark: head.previous_watermark,
            more_events: head.more_events,
            events,
        })
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            self.subscription_id.write(w, "t:SubscriptionId");
            if let Some(wm) = &self.previous_watermark {
                wm.write(w, "t:PreviousWatermark");
            }
            if let Some(more) = self.more_events {
                more.write(w, "t:MoreEvents");
            }
            for event in &self.events {
                event.write_event(w);
            }
        });
    }
}

impl crate::xml::Absent for Notification {}
