//! Items: the `t:Task` element and the pieces it is made of.

use crate::xml::{
    DecodeError, Element, Ns, XmlContent, XmlElement, XmlReader, XmlWriter, read_attr_value,
    xml_enum, xml_struct,
};

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::{
    BodyType, ExtendedFieldUri, Importance, PropertyValues, Recipients, Sensitivity, Strings, Task,
    TaskStatus,
};

// Hand-written: the schema lists 27 MAPI types; this names those taskbridge uses and keeps any
// other in `Other`.
xml_enum! {
    /// `t:MapiPropertyTypeType` (the types taskbridge uses, others kept verbatim).
    /// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/extendedfielduri>.
    pub enum MapiPropertyType {
        /// A string.
        String = "String",
        /// A 32-bit integer.
        Integer = "Integer",
        /// A boolean.
        Boolean = "Boolean",
        /// A time stamp.
        SystemTime = "SystemTime",
        /// A GUID.
        Clsid = "CLSID",
        /// Binary data, base64.
        Binary = "Binary",
        /// A double.
        Double = "Double",
        /// An array of strings.
        StringArray = "StringArray",
    }
}

// Hand-written: the schema lists ten property sets; this names those taskbridge uses and keeps
// any other in `Other`.
xml_enum! {
    /// `t:DistinguishedPropertySetType`.
    pub enum DistinguishedPropertySet {
        /// PSETID_Common.
        Common = "Common",
        /// PSETID_PublicStrings.
        PublicStrings = "PublicStrings",
        /// PSETID_Task.
        Task = "Task",
        /// PSETID_Address.
        Address = "Address",
        /// PSETID_Appointment.
        Appointment = "Appointment",
    }
}

// Hand-written: text content with attributes, which `xml_struct!` cannot express.

/// The body of an item (`t:BodyType`): text with a `BodyType` attribute.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/body>.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Body {
    /// Text or HTML.
    pub body_type: BodyType,
    /// Whether the server cut the body short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_truncated: Option<bool>,
    /// The content.
    pub text: String,
}

impl Body {
    /// A plain-text body.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            body_type: BodyType::Text,
            is_truncated: None,
            text: text.into(),
        }
    }
}

impl XmlElement for Body {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let body_type = read_attr_value(&e, "BodyType")?.unwrap_or(BodyType::Text);
        let is_truncated = read_attr_value(&e, "IsTruncated")?;
        let text = r.text(e)?.into_owned();
        Ok(Body {
            body_type,
            is_truncated,
            text,
        })
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        let tag = w.tag(name).attr("BodyType", self.body_type.as_str());
        let tag = match self.is_truncated {
            Some(t) => tag.attr("IsTruncated", if t { "true" } else { "false" }),
            None => tag,
        };
        tag.text(&self.text);
    }
}

// Hand-written: a convenience constructor.
impl From<Vec<String>> for Strings {
    fn from(strings: Vec<String>) -> Self {
        Strings { strings }
    }
}

// Hand-written: a constructor, and the comparison Exchange applies (GUIDs case-insensitive),
// which the schema cannot say.
impl ExtendedFieldUri {
    /// A named string property in the property set `set` (a GUID).
    pub fn named_string(set: &str, name: &str) -> Self {
        Self {
            distinguished_property_set_id: None,
            property_set_id: Some(set.to_string()),
            property_tag: None,
            property_name: Some(name.to_string()),
            property_id: None,
            property_type: MapiPropertyType::String,
        }
    }

    /// Whether two paths name the same property (set GUIDs compare case-insensitively).
    pub fn same_property(&self, other: &Self) -> bool {
        let eq_ci = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, None) => true,
            _ => false,
        };
        self.distinguished_property_set_id == other.distinguished_property_set_id
            && eq_ci(&self.property_set_id, &other.property_set_id)
            && eq_ci(&self.property_tag, &other.property_tag)
            && self.property_name == other.property_name
            && self.property_id == other.property_id
    }
}

// Hand-written: the schema's `t:ExtendedPropertyType` holds a choice of a `Value` or, for an
// array property, `Values`; `xml_struct!` cannot say a choice, so both are optional fields here,
// at most one of them set.
xml_struct! {
    /// An extended property and its value (`t:ExtendedPropertyType`).
    /// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/extendedproperty>.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ExtendedProperty {
        /// Which property.
        pub extended_field_uri: req ExtendedFieldUri = t "ExtendedFieldURI",
        /// A single value.
        pub value: opt String = t "Value",
        /// Multiple values (array properties).
        pub values: opt PropertyValues = t "Values",
    }
}

// Hand-written: a lookup over the extended properties.
impl Task {
    /// The value of the extended property at `path`, if the item carries it.
    pub fn extended_value(&self, path: &ExtendedFieldUri) -> Option<&str> {
        self.extended_properties
            .iter()
            .find(|p| p.extended_field_uri.same_property(path))
            .and_then(|p| p.value.as_deref())
    }
}

// Hand-written: not a schema type but the element names of the choice an items array is
// (`t:NonEmptyArrayOfAllItemsType`), by which `Items` reads each member.
xml_enum! {
    /// The element names of the item kinds that can stand in an items array.
    pub enum ItemKind {
        /// `t:Task`.
        Task = "Task",
        /// `t:Item` (a generic item).
        Item = "Item",
        /// `t:Message`.
        Message = "Message",
        /// `t:CalendarItem`.
        CalendarItem = "CalendarItem",
        /// `t:Contact`.
        Contact = "Contact",
        /// `t:PostItem`.
        PostItem = "PostItem",
    }
}

// Hand-written: the items arrays are a choice of item elements (`Task`, `Message`, `Item`, ...),
// which `xml_struct!` cannot express; each is read by element name into the generated `Task`.
/// Any item: its kind and the fields taskbridge knows.
///
/// A Tasks folder can hold other kinds (a mail dragged there, say); they are read with the
/// `ItemType` fields that all kinds share and never mistaken for tasks.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Item {
    /// Which element it came in.
    #[serde(rename = "Kind")]
    pub kind: ItemKind,
    /// The fields.
    #[serde(flatten)]
    pub fields: Task,
    /// A message's `ToRecipients` (`t:MessageType`'s own element after the `t:ItemType` ones);
    /// `None` for every other kind.
    #[serde(rename = "ToRecipients", skip_serializing_if = "Option::is_none")]
    pub to_recipients: Option<Recipients>,
}

impl Item {
    /// A task item.
    pub fn task(task: Task) -> Self {
        Item {
            kind: ItemKind::Task,
            fields: task,
            to_recipients: None,
        }
    }

    /// A mail message to `to` with a subject and a plain-text body, for CreateItem with the
    /// `SendOnly` disposition.
    pub fn message(to: Vec<crate::types::Mailbox>, subject: &str, body: &str) -> Self {
        Item {
            kind: ItemKind::Message,
            fields: Task {
                subject: Some(subject.to_owned()),
                body: Some(Body::text(body)),
                ..Task::default()
            },
            to_recipients: Some(Recipients { mailboxes: to }),
        }
    }

    /// The task, if this item is one.
    pub fn as_task(&self) -> Option<&Task> {
        (self.kind == ItemKind::Task).then_some(&self.fields)
    }

    /// Reads an item element of any kind, or hands the element back if it is not one.
    pub(crate) fn read_any<'i>(
        r: &mut XmlReader<'i>,
        e: Element<'i>,
    ) -> Result<Result<Item, Element<'i>>, DecodeError> {
        if e.ns() != Ns::Types {
            return Ok(Err(e));
        }
        let kind = match e.local_name() {
            "Task" => ItemKind::Task,
            "Item" => ItemKind::Item,
            "Message" => ItemKind::Message,
            "CalendarItem" => ItemKind::CalendarItem,
            "Contact" => ItemKind::Contact,
            "PostItem" => ItemKind::PostItem,
            "DistributionList"
            | "MeetingMessage"
            | "MeetingRequest"
            | "MeetingResponse"
            | "MeetingCancellation"
            | "SharingMessage"
            | "RoleMember"
            | "Network"
            | "Person" => ItemKind::Other(e.name_lossy()),
            _ => return Ok(Err(e)),
        };
        let mut to_recipients = None;
        let is_message = kind == ItemKind::Message;
        let fields = Task::read_content(r, e, &mut |r, child| {
            // Only a message's recipients are read; every other unknown child is skipped.
            if is_message && child.ns() == Ns::Types && child.local_name() == "ToRecipients" {
                to_recipients = Some(Recipients::read(r, child)?);
                return Ok(None);
            }
            Ok(Some(child))
        })?;
        Ok(Ok(Item {
            kind,
            fields,
            to_recipients,
        }))
    }

    /// Writes the item under its kind's element name.
    pub(crate) fn write_item(&self, w: &mut XmlWriter) {
        let name: std::borrow::Cow<'_, str> = match &self.kind {
            ItemKind::Task => "t:Task".into(),
            ItemKind::Item => "t:Item".into(),
            other => format!("t:{}", other.as_str()).into(),
        };
        match &self.to_recipients {
            // `t:MessageType` extends `t:ItemType`: its recipients follow the item's elements
            // (a message carries none of the task's own).
            Some(to) if self.kind == ItemKind::Message => {
                self.fields.write_attrs(w.tag(&name)).children(|w| {
                    self.fields.write_children(w);
                    to.write(w, "t:ToRecipients");
                });
            }
            _ => self.fields.write(w, &name),
        }
    }
}

/// An items array (`t:ArrayOfRealItemsType` / `t:NonEmptyArrayOfAllItemsType`).
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Items(pub Vec<Item>);

impl XmlElement for Items {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut items = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            match Item::read_any(r, child).map_err(|err| err.within("Items"))? {
                Ok(item) => {
                    // A GetItem response has one item per message; a Vec's first growth would
                    // make room for four, and an item is large.
                    if items.is_empty() {
                        items.reserve_exact(1);
                    }
                    items.push(item)
                }
                Err(other) => r.skip(other)?,
            }
        }
        Ok(Items(items))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        if self.0.is_empty() {
            w.tag(name).empty();
            return;
        }
        w.tag(name).children(|w| {
            for item in &self.0 {
                item.write_item(w);
            }
        });
    }
}

impl Items {
    /// The tasks among the items.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.0.iter().filter_map(Item::as_task)
    }
}

impl crate::xml::Absent for Body {}

impl crate::xml::Absent for Items {}
