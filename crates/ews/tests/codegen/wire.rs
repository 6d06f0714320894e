//! The generator of the wire types (`src/types/generated.rs`, `src/ops/generated.rs`) from
//! `wsdl/types.xsd` and `wsdl/messages.xsd`, and of the table of message bodies
//! (`src/decode/dispatch.rs`) from those and the two WSDLs. Each file goes to the layer its
//! code belongs to, so that no module imports from a layer above it.
//!
//! It emits `xml_struct!` / `xml_enum!` / `response!` invocations, the same form the
//! hand-written types had, so reading and writing cost exactly what they did. What the schema
//! says (element and attribute names, order, namespace, required / optional / repeated, the
//! enumeration values) comes from the schema; what it cannot say is in the tables below: the
//! Rust name of each schema type, the derives, and the schema content taskbridge leaves out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::xsd::{Occurs, Schema};
use super::{WsdlOperation, snake_case};

/// Which generated file a type goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `src/types/generated.rs`: `t:` types.
    Types,
    /// `src/ops/generated.rs`: requests, response payloads and bodies.
    Messages,
}

/// One schema type the generator emits.
pub struct Emit {
    /// The schema type, prefixed (`m:GetFolderType`).
    pub schema: &'static str,
    /// The Rust name.
    pub rust: &'static str,
    /// The derives besides those the macros add.
    pub derives: &'static str,
    /// Elements and attributes of the schema type that taskbridge leaves out (never sends,
    /// ignores when read); reading skips them like any unknown element.
    pub skip: &'static [&'static str],
    /// Enumeration values whose Rust variant name is not the value itself.
    pub variants: &'static [(&'static str, &'static str)],
    /// Elements the schema requires that are read as optional all the same, because servers
    /// leave them out in answers that carry nothing (an empty page, an error).
    pub lenient: &'static [&'static str],
    /// The enumeration value that is the type's `Default` (what taskbridge asks for unless
    /// told otherwise), if it has one.
    pub default: Option<&'static str>,
}

const fn emit(schema: &'static str, rust: &'static str, derives: &'static str) -> Emit {
    Emit {
        schema,
        rust,
        derives,
        skip: &[],
        variants: &[],
        lenient: &[],
        default: None,
    }
}

const CLONE_EQ_DEFAULT: &str = "Clone, Debug, PartialEq, Eq, Default";
const CLONE_DEFAULT: &str = "Clone, Debug, PartialEq, Default";
const CLONE_EQ: &str = "Clone, Debug, PartialEq, Eq";
const CLONE: &str = "Clone, Debug, PartialEq";

/// The `t:` types generated into `src/types/generated.rs`.
pub const TYPES: &[Emit] = &[
    // The version a request asks for (`RequestServerVersion`), Exchange 2013 SP1 unless
    // configured.
    Emit {
        variants: &[
            ("Exchange2007_SP1", "Exchange2007Sp1"),
            ("Exchange2010_SP1", "Exchange2010Sp1"),
            ("Exchange2010_SP2", "Exchange2010Sp2"),
            ("Exchange2013_SP1", "Exchange2013Sp1"),
        ],
        default: Some("Exchange2013_SP1"),
        ..emit("t:ExchangeVersionType", "ExchangeVersion", "")
    },
    // The header of every response (an element whose type the schema declares in place).
    emit("t:ServerVersionInfo", "ServerVersionInfo", CLONE_EQ_DEFAULT),
    // The values of an array extended property.
    emit(
        "t:NonEmptyArrayOfPropertyValuesType",
        "PropertyValues",
        CLONE_EQ_DEFAULT,
    ),
    // A mailbox, as a distinguished folder id names it.
    emit("t:EmailAddressType", "Mailbox", CLONE_EQ),
    emit("t:DisposalType", "DeleteType", ""),
    emit(
        "t:AffectedTaskOccurrencesType",
        "AffectedTaskOccurrences",
        "",
    ),
    emit("t:MessageDispositionType", "MessageDisposition", ""),
    emit("t:ConflictResolutionType", "ConflictResolution", ""),
    emit("t:ItemQueryTraversalType", "ItemTraversal", ""),
    Emit {
        variants: &[("OK", "Ok")],
        ..emit("t:SubscriptionStatusType", "SubscriptionStatus", "")
    },
    emit("t:ResponseClassType", "ResponseClass", ""),
    emit("t:ImportanceChoicesType", "Importance", ""),
    emit("t:TaskStatusType", "TaskStatus", ""),
    emit("t:SensitivityChoicesType", "Sensitivity", ""),
    Emit {
        variants: &[("HTML", "Html")],
        ..emit("t:BodyTypeType", "BodyType", "")
    },
    emit("t:NotificationEventTypeType", "EventType", ""),
    emit("t:DefaultShapeNamesType", "BaseShape", ""),
    emit("t:IndexBasePointType", "BasePoint", ""),
    emit(
        "t:ItemIdType",
        "ItemId",
        "Clone, Debug, PartialEq, Eq, Hash",
    ),
    emit(
        "t:FolderIdType",
        "FolderId",
        "Clone, Debug, PartialEq, Eq, Hash",
    ),
    emit(
        "t:DistinguishedFolderIdType",
        "DistinguishedFolderId",
        CLONE_EQ,
    ),
    // The elements every folder kind has; `Folders` reads each kind into it by element name.
    emit("t:BaseFolderType", "Folder", CLONE_EQ_DEFAULT),
    Emit {
        skip: &["IncludeMimeContent"],
        ..emit("t:ItemResponseShapeType", "ItemShape", CLONE)
    },
    emit("t:FolderResponseShapeType", "FolderShape", CLONE),
    emit("t:ConstantValueType", "Constant", CLONE_EQ),
    emit("t:IndexedPageViewType", "IndexedPageView", CLONE_EQ),
    emit("t:ArrayOfStringsType", "Strings", CLONE_EQ_DEFAULT),
    emit(
        "t:PathToExtendedFieldType",
        "ExtendedFieldUri",
        "Clone, Debug, PartialEq, Eq, Hash",
    ),
    // The task with the `t:ItemType` elements before it; what taskbridge leaves out is read
    // like any unknown element and never written.
    Emit {
        skip: &[
            "ReminderMinutesBeforeStart",
            "Culture",
            "IsAssociated",
            "AssignedTime",
            "BillingInformation",
            "Contacts",
            "DelegationState",
            "Delegator",
            "IsAssignmentEditable",
            "IsTeamTask",
            "Mileage",
        ],
        ..emit("t:TaskType", "Task", CLONE_DEFAULT)
    },
    // The recipients of a message (a notice sent with CreateItem); read into `Item`.
    emit("t:ArrayOfRecipientsType", "Recipients", CLONE_EQ_DEFAULT),
    emit(
        "t:NonEmptyArrayOfBaseItemIdsType",
        "ItemIds",
        CLONE_EQ_DEFAULT,
    ),
    // The same content without the lower bound (SyncFolderItems' Ignore).
    emit("t:ArrayOfBaseItemIdsType", "ItemIds", CLONE_EQ_DEFAULT),
    emit("t:ItemChangeType", "ItemChange", CLONE),
    emit(
        "t:NonEmptyArrayOfItemChangesType",
        "ItemChanges",
        CLONE_DEFAULT,
    ),
    emit("t:ConflictResultsType", "ConflictResults", CLONE_EQ_DEFAULT),
    Emit {
        lenient: &["Items"],
        ..emit("t:FindItemParentType", "FindItemParent", CLONE_DEFAULT)
    },
    emit(
        "t:NonEmptyArrayOfNotificationEventTypesType",
        "EventTypes",
        CLONE_EQ_DEFAULT,
    ),
    Emit {
        skip: &["SubscribeToAllFolders"],
        ..emit(
            "t:PushSubscriptionRequestType",
            "PushSubscriptionRequest",
            CLONE_EQ,
        )
    },
    Emit {
        skip: &["SubscribeToAllFolders"],
        ..emit(
            "t:PullSubscriptionRequestType",
            "PullSubscriptionRequest",
            CLONE_EQ,
        )
    },
    Emit {
        skip: &["SubscribeToAllFolders"],
        ..emit(
            "t:StreamingSubscriptionRequestType",
            "StreamingSubscriptionRequest",
            CLONE_EQ,
        )
    },
    emit(
        "t:NonEmptyArrayOfSubscriptionIdsType",
        "SubscriptionIds",
        CLONE_EQ_DEFAULT,
    ),
    emit(
        "t:NonEmptyArrayOfNotificationsType",
        "Notifications",
        CLONE_DEFAULT,
    ),
    Emit {
        variants: &[("OK", "Ok")],
        ..emit("t:ConnectionStatusType", "ConnectionStatus", "")
    },
];

/// The message types generated into `src/ops/generated.rs`: requests and the payloads of
/// response messages. The response bodies (`response!`) follow from the schema alone.
pub const MESSAGES: &[Emit] = &[
    emit("m:GetFolderType", "GetFolder", CLONE),
    emit(
        "m:FolderInfoResponseMessageType",
        "FolderPayload",
        CLONE_EQ_DEFAULT,
    ),
    emit("m:GetItemType", "GetItem", CLONE),
    Emit {
        skip: &["SendMeetingInvitations"],
        ..emit("m:CreateItemType", "CreateItem", CLONE)
    },
    emit(
        "m:ItemInfoResponseMessageType",
        "ItemsPayload",
        CLONE_DEFAULT,
    ),
    Emit {
        skip: &["SendMeetingInvitationsOrCancellations"],
        ..emit("m:UpdateItemType", "UpdateItem", CLONE)
    },
    emit(
        "m:UpdateItemResponseMessageType",
        "UpdateItemPayload",
        CLONE_DEFAULT,
    ),
    emit("m:DeleteItemType", "DeleteItem", CLONE),
    emit("m:FindItemType", "FindItem", CLONE),
    emit(
        "m:FindItemResponseMessageType",
        "FindItemPayload",
        CLONE_DEFAULT,
    ),
    emit(
        "m:SubscribeResponseMessageType",
        "SubscribePayload",
        CLONE_EQ_DEFAULT,
    ),
    emit("m:UnsubscribeType", "Unsubscribe", CLONE_EQ),
    emit("m:GetEventsType", "GetEvents", CLONE_EQ),
    emit(
        "m:GetEventsResponseMessageType",
        "NotificationPayload",
        CLONE_DEFAULT,
    ),
    emit("m:GetStreamingEventsType", "GetStreamingEvents", CLONE_EQ),
    emit(
        "m:GetStreamingEventsResponseMessageType",
        "StreamingPayload",
        CLONE_DEFAULT,
    ),
    emit(
        "m:SendNotificationResponseMessageType",
        "NotificationPayload",
        CLONE_DEFAULT,
    ),
    emit(
        "m:SendNotificationResultType",
        "SendNotificationResult",
        CLONE_EQ,
    ),
    Emit {
        skip: &["SyncScope"],
        ..emit("m:SyncFolderItemsType", "SyncFolderItems", CLONE)
    },
    emit(
        "m:SyncFolderItemsResponseMessageType",
        "SyncFolderItemsPayload",
        CLONE_DEFAULT,
    ),
];

/// Schema types that stay hand-written (or are built in), and the Rust path of each.
pub const HAND_WRITTEN: &[(&str, &str)] = &[
    ("xs:string", "String"),
    ("xs:int", "i32"),
    ("xs:boolean", "bool"),
    ("xs:double", "f64"),
    ("xs:dateTime", "DateTime<Utc>"),
    // An item class such as `IPM.Task`.
    ("t:ItemClassType", "String"),
    // Text content with attributes, which `xml_struct!` cannot express.
    ("t:BodyType", "crate::types::Body"),
    // Hand-written: the schema lists 27 MAPI types; the enum names those taskbridge uses.
    ("t:MapiPropertyTypeType", "crate::types::MapiPropertyType"),
    (
        "t:DistinguishedPropertySetType",
        "crate::types::DistinguishedPropertySet",
    ),
    // Hand-written: a choice of a single value or an array of values, which `xml_struct!`
    // cannot say (two optional fields instead, at most one of them set).
    ("t:ExtendedPropertyType", "crate::types::ExtendedProperty"),
    // Hand-written: the schema lists 71 folder names; the enum names those taskbridge uses and
    // keeps the others in `Other`.
    (
        "t:DistinguishedFolderIdNameType",
        "crate::types::DistinguishedFolderName",
    ),
    // A list of alternatives (FieldURI / ExtendedFieldURI).
    ("t:NonEmptyArrayOfPathsToElementType", "crate::types::Paths"),
    (
        "t:NonEmptyArrayOfBaseFolderIdsType",
        "crate::types::FolderIds",
    ),
    ("t:TargetFolderIdType", "crate::types::FolderIds"),
    ("t:ArrayOfFoldersType", "crate::types::Folders"),
    ("t:NonEmptyArrayOfAllItemsType", "crate::types::Items"),
    ("t:ArrayOfRealItemsType", "crate::types::Items"),
    ("t:RestrictionType", "crate::types::Restriction"),
    ("t:SubscriptionIdType", "crate::types::SubscriptionId"),
    ("t:WatermarkType", "crate::types::Watermark"),
    ("t:NotificationType", "crate::types::Notification"),
    // A list of alternatives (SetItemField / DeleteItemField), which `xml_struct!` cannot say.
    (
        "t:NonEmptyArrayOfItemChangeDescriptionsType",
        "crate::types::Updates",
    ),
    // A list of alternatives (Create / Update / Delete / ReadFlagChange).
    ("t:SyncFolderItemsChangesType", "crate::types::SyncChanges"),
];

/// Elements and attributes whose Rust type is narrower than their schema type (a newtype over a
/// string, an enumeration without the values taskbridge never asks for).
pub const FIELD_TYPES: &[(&str, &str)] = &[
    ("t:ItemIdType/Id", "crate::types::ItemIdValue"),
    // A union of a number and a hex string, kept as the text Exchange sends.
    ("t:PathToExtendedFieldType/PropertyTag", "String"),
    ("t:ItemIdType/ChangeKey", "crate::types::ChangeKey"),
    ("t:FolderIdType/Id", "crate::types::FolderIdValue"),
    ("t:FolderIdType/ChangeKey", "crate::types::ChangeKey"),
    (
        "t:DistinguishedFolderIdType/ChangeKey",
        "crate::types::ChangeKey",
    ),
    // `t:BodyTypeResponseType` adds `Best`, which taskbridge never asks for.
    ("t:ItemResponseShapeType/BodyType", "t:BodyTypeType"),
    ("m:SyncFolderItemsType/SyncState", "crate::types::SyncState"),
    (
        "m:SyncFolderItemsResponseMessageType/SyncState",
        "crate::types::SyncState",
    ),
];

/// The part of every response message that `ResponseMessage<T>` holds (hand-written: it is
/// generic over the payload, and its `MessageXml` is open content).
const RESPONSE_MESSAGE: &str = "m:ResponseMessageType";
/// The base of every response body.
const RESPONSE_BODY: &str = "m:BaseResponseMessageType";
/// The base of every request body.
const REQUEST_BODY: &str = "m:BaseRequestType";

/// The source of both generated files (before rustfmt), as (types.rs, messages.rs).
/// Whether each operation of `ExchangeServicePortType` may be sent again after a failure that
/// leaves unknown whether the server ran it (the schema cannot say it). Every operation must
/// be listed, so that a new one is not taken as safe to resend until someone says so; one whose
/// request is hand-written (`HAND_WRITTEN_REQUESTS`) says it in its own module, beside its type.
pub const RESEND: &[(&str, bool)] = &[
    // A second CreateItem would make a second item.
    ("CreateItem", false),
    // A repeat finds the item gone and fails harmlessly (ErrorItemNotFound).
    ("DeleteItem", true),
    // Reads.
    ("FindItem", true),
    ("GetEvents", true),
    ("GetFolder", true),
    ("GetItem", true),
    ("GetStreamingEvents", true),
    ("SyncFolderItems", true),
    // A repeat finds the subscription gone.
    ("Unsubscribe", true),
    // Sent with the change key read, so a repeat meets a stale key instead of applying twice.
    ("UpdateItem", true),
];

/// The `Operation` impls tying each WSDL operation's request body to its response body.
fn operation_ties(services: &[WsdlOperation]) -> Result<String, String> {
    let mut ops: Vec<&WsdlOperation> = services.iter().collect();
    ops.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for op in ops {
        if HAND_WRITTEN_REQUESTS
            .iter()
            .any(|(element, _)| *element == op.request_element)
        {
            continue;
        }
        let Some((_, safe)) = RESEND.iter().find(|(name, _)| *name == op.name) else {
            return Err(format!(
                "say in RESEND whether {} is safe to resend after a failure that leaves unknown \
                 whether the server ran it",
                op.name
            ));
        };
        let _ = writeln!(
            out,
            "operation!({} => {}, safe_to_resend = {safe});",
            op.request_element, op.response_element
        );
    }
    if let Some((name, _)) = RESEND
        .iter()
        .find(|(name, _)| !services.iter().any(|op| op.name == *name))
    {
        return Err(format!(
            "RESEND names {name}, which the WSDL does not declare"
        ));
    }
    Ok(out)
}

/// The message type of the response body `element` (`m:GetFolderResponse` carries
/// `m:GetFolderResponseMessage`s of some `...ResponseMessageType`), and the message's name.
fn response_message(schema: &Schema, element: &str) -> Result<(String, String), String> {
    let list = schema
        .complex
        .get("m:ArrayOfResponseMessagesType")
        .ok_or("m:ArrayOfResponseMessagesType is not in the schema")?;
    let message = format!(
        "{}ResponseMessage",
        element.strip_suffix("Response").unwrap_or(element)
    );
    let ty = list
        .particles
        .iter()
        .find(|p| p.name == message)
        .and_then(|p| p.ty.clone())
        .ok_or_else(|| format!("{element}: no {message} in ArrayOfResponseMessagesType"))?;
    Ok((ty, message))
}

/// Whether a response message type carries nothing beyond the common part.
fn carries_nothing(schema: &Schema, message_ty: &str) -> Result<bool, String> {
    Ok(message_ty == RESPONSE_MESSAGE
        || schema
            .content(message_ty, Some(RESPONSE_MESSAGE))?
            .0
            .is_empty())
}

/// The message types of the operations `listed` does not name, by rule: a request is named as
/// its body element (`GetFolder`), a response message's payload as its operation with
/// `Payload` (`GetFolderPayload`), with the plain derives. So adding an operation to `wsdl/`
/// needs an entry in `MESSAGES` only where it differs from the rule (a name, derives, schema
/// content left out).
pub fn by_rule(
    schema: &Schema,
    services: &[WsdlOperation],
    listed: &[Emit],
) -> Result<Vec<Emit>, String> {
    // The generator runs once per test; what it names by rule lives as long as the test.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut out: Vec<Emit> = Vec::new();
    let mut wanted = Vec::new();
    for op in services {
        if !HAND_WRITTEN_REQUESTS
            .iter()
            .any(|(element, _)| *element == op.request_element)
        {
            let ty = schema.elements.get(&op.request_element).ok_or_else(|| {
                format!("element m:{} is not in messages.xsd", op.request_element)
            })?;
            wanted.push((ty.clone(), op.request_element.clone(), CLONE));
        }
        let (message_ty, _) = response_message(schema, &op.response_element)?;
        if !carries_nothing(schema, &message_ty)? {
            wanted.push((message_ty, format!("{}Payload", op.name), CLONE_DEFAULT));
        }
    }
    for (ty, rust, derives) in wanted {
        if !listed.iter().chain(out.iter()).any(|e| e.schema == ty) {
            out.push(emit(leak(ty), leak(rust), derives));
        }
    }
    Ok(out)
}

pub fn generate(schema: &Schema, services: &[WsdlOperation]) -> Result<(String, String), String> {
    let ruled = by_rule(schema, services, MESSAGES)?;
    let messages_list: Vec<&Emit> = MESSAGES.iter().chain(ruled.iter()).collect();
    let mut names: BTreeMap<&str, (String, Target)> = BTreeMap::new();
    for e in TYPES {
        names.insert(e.schema, (e.rust.to_string(), Target::Types));
    }
    for e in &messages_list {
        names.insert(e.schema, (e.rust.to_string(), Target::Messages));
    }
    let mut types = Unit::new(Target::Types);
    for e in TYPES {
        types.emit(schema, &names, e)?;
    }
    let mut messages = Unit::new(Target::Messages);
    for e in messages_list {
        messages.emit(schema, &names, e)?;
    }
    messages.response_bodies(schema, &names)?;
    messages.body.push_str(&operation_ties(services)?);
    messages.imports.insert("crate::ops::operation".into());
    Ok((
        types.finish(
            "//! The `t:` wire types generated from `wsdl/types.xsd`: the enumerations and element \
             lists the operations use. Re-exported where they were declared before (`ops::*`, \
             `types`).\n",
        ),
        messages.finish(
            "//! The message types generated from `wsdl/messages.xsd`: each operation's request, \
             the payload of its response messages, and its response body; and the `Operation` \
             impl tying each request of `wsdl/services.wsdl` to its response. Each `ops` module \
             re-exports its own.\n",
        ),
    ))
}

struct Unit {
    target: Target,
    imports: BTreeSet<String>,
    body: String,
    /// Rust names already emitted, with their source, so that two schema types mapped to one
    /// Rust type must agree.
    emitted: BTreeMap<String, String>,
}

impl Unit {
    fn new(target: Target) -> Unit {
        Unit {
            target,
            imports: BTreeSet::new(),
            body: String::new(),
            emitted: BTreeMap::new(),
        }
    }

    /// The Rust name for a schema type, importing it when it lives elsewhere.
    fn rust_type(
        &mut self,
        schema: &Schema,
        names: &BTreeMap<&str, (String, Target)>,
        ty: &str,
    ) -> Result<String, String> {
        if let Some((name, target)) = names.get(ty) {
            if *target != self.target {
                let module = match target {
                    Target::Types => "types",
                    Target::Messages => "ops",
                };
                self.imports
                    .insert(format!("crate::{module}::generated::{name}"));
            }
            return Ok(name.clone());
        }
        if let Some((_, path)) = HAND_WRITTEN.iter().find(|(s, _)| *s == ty) {
            return Ok(self.import(path));
        }
        // A restriction of a built-in type without enumerations is that type.
        if let Some(s) = schema.simple.get(ty)
            && s.values.is_empty()
        {
            return self.rust_type(schema, names, &s.base.clone());
        }
        Err(format!(
            "schema type {ty} has no Rust type: add it to TYPES / MESSAGES or HAND_WRITTEN"
        ))
    }

    /// A `FIELD_TYPES` entry: a Rust path, or another schema type.
    fn narrower(
        &mut self,
        schema: &Schema,
        names: &BTreeMap<&str, (String, Target)>,
        narrower: &str,
    ) -> Result<String, String> {
        if narrower.starts_with("t:") || narrower.starts_with("m:") {
            self.rust_type(schema, names, narrower)
        } else {
            Ok(self.import(narrower))
        }
    }

    fn import(&mut self, path: &str) -> String {
        match path.rsplit_once("::") {
            Some((_, name)) => {
                self.imports.insert(path.to_string());
                name.to_string()
            }
            None => path.to_string(),
        }
    }

    fn emit(
        &mut self,
        schema: &Schema,
        names: &BTreeMap<&str, (String, Target)>,
        e: &Emit,
    ) -> Result<(), String> {
        let mut out = String::new();
        if let Some(simple) = schema.simple.get(e.schema) {
            if simple.values.is_empty() {
                return Err(format!("{}: not an enumeration", e.schema));
            }
            out.push_str("xml_enum! {\n");
            let _ = writeln!(out, "    /// `{}`.", e.schema);
            if e.default.is_some() {
                out.push_str("    #[derive(Default)]\n");
            }
            let _ = writeln!(out, "    pub enum {} {{", e.rust);
            for v in &simple.values {
                let variant = e
                    .variants
                    .iter()
                    .find(|(value, _)| value == v)
                    .map(|(_, name)| name.to_string())
                    .unwrap_or_else(|| v.clone());
                let default = if e.default == Some(v.as_str()) {
                    " (the default).\n        #[default]"
                } else {
                    "."
                };
                let _ = writeln!(
                    out,
                    "        /// `{v}`{default}\n        {variant} = {v:?},"
                );
            }
            out.push_str("    }\n}\n\n");
            return self.push(e, out);
        }
        let payload = schema.extends(e.schema, RESPONSE_MESSAGE);
        let stop = if payload {
            Some(RESPONSE_MESSAGE)
        } else {
            Some(REQUEST_BODY)
        };
        let (particles, attributes) = schema.content(e.schema, stop)?;
        let element = schema
            .elements
            .iter()
            .find(|(_, ty)| *ty == e.schema)
            .map(|(name, _)| name.clone());
        out.push_str("xml_struct! {\n");
        match (&element, payload) {
            (Some(name), _) => {
                let _ = writeln!(out, "    /// The `m:{name}` body (`{}`).", e.schema);
            }
            (None, true) => {
                let _ = writeln!(
                    out,
                    "    /// What a response message carries beyond the common part (`{}`).",
                    e.schema
                );
            }
            (None, false) => {
                let _ = writeln!(out, "    /// `{}`.", e.schema);
            }
        }
        let _ = writeln!(out, "    #[derive({})]", e.derives);
        let _ = writeln!(out, "    pub struct {} {{", e.rust);
        let attributes: Vec<_> = attributes
            .into_iter()
            .filter(|a| !e.skip.contains(&a.name.as_str()))
            .collect();
        if !attributes.is_empty() {
            out.push_str("        @attrs {\n");
            for a in &attributes {
                let ty = match FIELD_TYPES
                    .iter()
                    .find(|(k, _)| *k == format!("{}/{}", e.schema, a.name))
                {
                    Some((_, narrower)) => self.narrower(schema, names, narrower)?,
                    None => self.rust_type(schema, names, &a.ty)?,
                };
                let kind = if a.required { "req" } else { "opt" };
                let _ = writeln!(
                    out,
                    "            /// `{}` (`{}`{}).",
                    a.name,
                    a.ty,
                    if a.required { ", required" } else { "" }
                );
                let _ = writeln!(
                    out,
                    "            pub {}: {kind} {ty} = {:?},",
                    snake_case(&a.name),
                    a.name
                );
            }
            out.push_str("        }\n");
        }
        for (prefix, p) in particles {
            if e.skip.contains(&p.name.as_str()) {
                continue;
            }
            if p.in_choice_of_many {
                return Err(format!(
                    "{}: {} is one of several alternatives, which xml_struct! cannot express",
                    e.schema, p.name
                ));
            }
            let schema_ty =
                p.ty.clone()
                    .ok_or_else(|| format!("{}: {} has an anonymous type", e.schema, p.name))?;
            let ty = match FIELD_TYPES
                .iter()
                .find(|(k, _)| *k == format!("{}/{}", e.schema, p.name))
            {
                Some((_, narrower)) => self.narrower(schema, names, narrower)?,
                None => self.rust_type(schema, names, &schema_ty)?,
            };
            // An Error-class response message stops after the common part, so every element
            // of a payload is optional whatever the schema says.
            let kind = match p.occurs {
                Occurs { max: None, .. } | Occurs { max: Some(2..), .. } => "many",
                _ if payload => "opt",
                _ if e.lenient.contains(&p.name.as_str()) => "opt",
                Occurs { min: 0, .. } => "opt",
                _ => "req",
            };
            let field = if kind == "many" {
                plural(&snake_case(&p.name))
            } else {
                snake_case(&p.name)
            };
            let occurs = match kind {
                "many" => "repeated",
                "opt" => "optional",
                _ => "required",
            };
            // A range the schema puts on the value (e.g. a page size of 1 to 512).
            let range = match schema.simple.get(&schema_ty) {
                Some(st) if st.min.is_some() || st.max.is_some() => format!(
                    ", {} to {}",
                    st.min.as_deref().unwrap_or("..."),
                    st.max.as_deref().unwrap_or("...")
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "        /// `{prefix}:{}` (`{schema_ty}`, {occurs}{range}).",
                p.name
            );
            let _ = writeln!(
                out,
                "        pub {field}: {kind} {ty} = {prefix} {:?},",
                p.name
            );
        }
        out.push_str("    }\n}\n\n");
        self.push(e, out)
    }

    fn push(&mut self, e: &Emit, out: String) -> Result<(), String> {
        // Two schema types may share one Rust type when their content is the same.
        let key = e.rust.to_string();
        let without_doc = |s: &str| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("///"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if let Some(previous) = self.emitted.get(&key) {
            if without_doc(previous) != without_doc(&out) {
                return Err(format!(
                    "{} is generated from two schema types with different content",
                    e.rust
                ));
            }
            return Ok(());
        }
        self.emitted.insert(key, out.clone());
        self.body.push_str(&out);
        Ok(())
    }

    /// One `response!` per top-level element whose type is a response body, in name order.
    fn response_bodies(
        &mut self,
        schema: &Schema,
        names: &BTreeMap<&str, (String, Target)>,
    ) -> Result<(), String> {
        for (element, ty) in &schema.elements {
            if !ty.starts_with("m:") || !schema.extends(ty, RESPONSE_BODY) {
                continue;
            }
            let (message_ty, message) = response_message(schema, element)?;
            // A message with nothing beyond the common part carries `NoPayload`.
            let payload = if carries_nothing(schema, &message_ty)? {
                self.import("crate::types::NoPayload")
            } else {
                self.rust_type(schema, names, &message_ty)?
            };
            let _ = writeln!(
                self.body,
                "response!(\n    /// The `m:{element}` body (`{ty}`): one `m:{message}` per request item.\n    {element},\n    {message:?},\n    {payload}\n);\n"
            );
        }
        self.imports.insert("crate::ops::response".into());
        Ok(())
    }

    fn finish(mut self, doc: &str) -> String {
        let mut out = String::new();
        out.push_str(
            "// Generated by `cargo test -p taskbridge-ews --test generated` from wsdl/types.xsd and wsdl/messages.xsd; do not edit by hand.\n",
        );
        out.push_str(doc);
        out.push('\n');
        let mut macros = vec!["xml_struct"];
        if self.body.contains("xml_enum!") {
            macros.push("xml_enum");
        }
        for m in macros {
            self.imports.insert(format!("crate::xml::{m}"));
        }
        if self.body.contains("DateTime<Utc>") {
            self.imports.insert("chrono::{DateTime, Utc}".into());
        }
        for i in &self.imports {
            let _ = writeln!(out, "use {i};");
        }
        out.push('\n');
        out.push_str(&self.body);
        out
    }
}

/// Request bodies whose Rust type stays hand-written (a choice the macros cannot express).
pub const HAND_WRITTEN_REQUESTS: &[(&str, &str)] =
    &[("Subscribe", "crate::ops::subscribe::Subscribe")];

/// The Rust type of a request body element: the generated type of its schema type, or a
/// hand-written one.
fn request_type(schema: &Schema, element: &str) -> Result<String, String> {
    if let Some((_, path)) = HAND_WRITTEN_REQUESTS.iter().find(|(e, _)| *e == element) {
        return Ok(path.to_string());
    }
    let ty = schema
        .elements
        .get(element)
        .ok_or_else(|| format!("element m:{element} is not in messages.xsd"))?;
    MESSAGES
        .iter()
        .find(|e| e.schema == ty)
        .map(|e| format!("crate::ops::generated::{}", e.rust))
        .ok_or_else(|| format!("{element}: its type {ty} is not in MESSAGES"))
}

/// The source of `src/decode/dispatch.rs` (before rustfmt): every message body element the
/// crate reads, with its role and its reader, from the operations of `services.wsdl` (client
/// side) and `notification.wsdl` (the push subscriber's side).
pub fn dispatch(
    schema: &Schema,
    services: &[super::WsdlOperation],
    notification: &[super::WsdlOperation],
) -> Result<String, String> {
    let mut rows = Vec::new();
    for op in services {
        rows.push((
            op.request_element.clone(),
            op.name.clone(),
            "Request",
            request_type(schema, &op.request_element)?,
        ));
        rows.push((
            op.response_element.clone(),
            op.name.clone(),
            "Response",
            format!("crate::ops::generated::{}", op.response_element),
        ));
    }
    for op in notification {
        // Exchange calls the subscriber: its request is a list of response messages, its
        // answer a plain element.
        rows.push((
            op.request_element.clone(),
            op.name.clone(),
            "Notification",
            format!("crate::ops::generated::{}", op.request_element),
        ));
        let ty = schema
            .elements
            .get(&op.response_element)
            .ok_or_else(|| format!("element m:{} is not in messages.xsd", op.response_element))?;
        let rust = MESSAGES
            .iter()
            .find(|e| e.schema == ty)
            .ok_or_else(|| format!("{}: its type {ty} is not in MESSAGES", op.response_element))?
            .rust;
        rows.push((
            op.response_element.clone(),
            op.name.clone(),
            "NotificationResult",
            format!("crate::ops::generated::{rust}"),
        ));
    }
    rows.sort();
    let mut out = String::new();
    out.push_str(
        "// Generated by `cargo test -p taskbridge-ews --test generated` from wsdl/services.wsdl, wsdl/notification.wsdl and wsdl/messages.xsd; do not edit by hand.\n",
    );
    out.push_str(
        "//! Every SOAP body element of the EWS operations taskbridge speaks, with the operation it \
         belongs to, its role, and the reader that decodes it to JSON: the one list behind \
         `ews decode`, and the list a server (the simulator) can route by.\n\n",
    );
    out.push_str("use crate::decode::{read_plain, read_messages};\n\n");
    out.push_str(
        "/// What a body element is in its exchange.\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq)]\n\
         pub enum BodyRole {\n\
         /// A client's request to Exchange.\n    Request,\n\
         /// Exchange's response to a request.\n    Response,\n\
         /// Exchange's push notification to a subscriber.\n    Notification,\n\
         /// The subscriber's answer to a push notification.\n    NotificationResult,\n\
         }\n\n",
    );
    out.push_str(
        "/// One body element.\n\
         #[derive(Clone, Copy, Debug)]\n\
         pub struct MessageBody {\n\
         /// The element's local name in the messages namespace.\n    pub element: &'static str,\n\
         /// The WSDL operation it belongs to.\n    pub operation: &'static str,\n\
         /// Its role.\n    pub role: BodyRole,\n\
         /// Reads the element (whose start tag was just read) into JSON.\n    pub read: crate::decode::ReadBody,\n\
         }\n\n",
    );
    out.push_str(
        "/// Every body element, in name order.\npub const MESSAGE_BODIES: &[MessageBody] = &[\n",
    );
    for (element, operation, role, ty) in &rows {
        let reader = match *role {
            "Request" | "NotificationResult" => "read_plain",
            _ => "read_messages",
        };
        let _ = writeln!(
            out,
            "    MessageBody {{ element: {element:?}, operation: {operation:?}, role: BodyRole::{role}, read: {reader}::<{ty}> }},"
        );
    }
    out.push_str("];\n\n");
    out.push_str(
        "/// The body element `name` (a local name in the messages namespace), if it is one.\n\
         pub fn message_body(name: &str) -> Option<&'static MessageBody> {\n\
         MESSAGE_BODIES.iter().find(|b| b.element == name)\n\
         }\n",
    );
    Ok(out)
}

/// The field name of a repeated element: `item_id` -> `item_ids`, `extended_property` ->
/// `extended_properties`.
fn plural(name: &str) -> String {
    match name.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ if name.ends_with(['x', 's']) => format!("{name}es"),
        _ => format!("{name}s"),
    }
}
