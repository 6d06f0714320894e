//! The outcome of each message in a response: class, code, text and details.
//!
//! A batch answers per item: one `ResponseMessage` per request item, and one failed item never
//! hides the others. Only a transport failure or a SOAP fault is an `Err` of the whole call.

use std::time::Duration;

use crate::xml::{
    DecodeError, Element, Ns, XmlContent, XmlElement, XmlReader, XmlText, XmlWriter,
    read_attr_value, xml_enum,
};

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::ResponseClass;

// Hand-written: the schema lists hundreds of response codes; this names the ones taskbridge acts
// on and keeps every other in `Other`, so a new code from a newer Exchange is never an error.
xml_enum! {
    /// `m:ResponseCodeType`: the codes taskbridge acts on; every other code is kept in `Other`.
    /// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/responsecode>.
    pub enum ResponseCode {
        /// Success.
        NoError = "NoError",
        /// Throttled: wait `BackOffMilliseconds` before the next request.
        ErrorServerBusy = "ErrorServerBusy",
        /// The change key is stale and the conflict cannot be resolved automatically.
        ErrorIrresolvableConflict = "ErrorIrresolvableConflict",
        /// An update without a change key under AutoResolve.
        ErrorChangeKeyRequiredForWriteOperations = "ErrorChangeKeyRequiredForWriteOperations",
        /// The object changed since it was read.
        ErrorStaleObject = "ErrorStaleObject",
        /// The change key is not valid.
        ErrorInvalidChangeKey = "ErrorInvalidChangeKey",
        /// No item with that id.
        ErrorItemNotFound = "ErrorItemNotFound",
        /// No folder with that id.
        ErrorFolderNotFound = "ErrorFolderNotFound",
        /// The id is malformed.
        ErrorInvalidIdMalformed = "ErrorInvalidIdMalformed",
        /// The caller may not do this.
        ErrorAccessDenied = "ErrorAccessDenied",
        /// The caller may not impersonate that user.
        ErrorImpersonateUserDenied = "ErrorImpersonateUserDenied",
        /// The account lacks the impersonation right.
        ErrorImpersonationDenied = "ErrorImpersonationDenied",
        /// The request breaks the schema.
        ErrorSchemaValidation = "ErrorSchemaValidation",
        /// The request is not valid.
        ErrorInvalidRequest = "ErrorInvalidRequest",
        /// The SyncFolderItems state is not valid (start over without one).
        ErrorInvalidSyncStateData = "ErrorInvalidSyncStateData",
        /// The subscription is not valid.
        ErrorInvalidSubscription = "ErrorInvalidSubscription",
        /// The subscription does not exist.
        ErrorSubscriptionNotFound = "ErrorSubscriptionNotFound",
        /// The subscription expired.
        ErrorExpiredSubscription = "ErrorExpiredSubscription",
        /// The watermark is not valid.
        ErrorInvalidWatermark = "ErrorInvalidWatermark",
        /// The pull subscription id is not valid.
        ErrorInvalidPullSubscriptionId = "ErrorInvalidPullSubscriptionId",
        /// The push URL is not valid.
        ErrorInvalidPushSubscriptionUrl = "ErrorInvalidPushSubscriptionUrl",
        /// The mailbox does not exist.
        ErrorNonExistentMailbox = "ErrorNonExistentMailbox",
        /// A delete of a task needs AffectedTaskOccurrences.
        ErrorCannotDeleteTaskOccurrence = "ErrorCannotDeleteTaskOccurrence",
        /// A property path is not valid for this request.
        ErrorInvalidPropertyRequest = "ErrorInvalidPropertyRequest",
        /// The value is not valid for the property.
        ErrorInvalidValueForProperty = "ErrorInvalidValueForProperty",
        /// An internal error.
        ErrorInternalServerError = "ErrorInternalServerError",
        /// A transient internal error; retry later.
        ErrorInternalServerTransientError = "ErrorInternalServerTransientError",
        /// The request timed out.
        ErrorTimeoutExpired = "ErrorTimeoutExpired",
        /// An earlier item of the batch failed and processing stopped.
        ErrorBatchProcessingStopped = "ErrorBatchProcessingStopped",
        /// Too many concurrent connections.
        ErrorExceededConnectionCount = "ErrorExceededConnectionCount",
        /// The mailbox is being moved; retry later.
        ErrorMailboxMoveInProgress = "ErrorMailboxMoveInProgress",
        /// The mailbox database is unavailable; retry later.
        ErrorMailboxStoreUnavailable = "ErrorMailboxStoreUnavailable",
        /// The restriction uses an unsupported filter.
        ErrorUnsupportedQueryFilter = "ErrorUnsupportedQueryFilter",
        /// A paging size is out of range.
        ErrorInvalidPagingMaxRows = "ErrorInvalidPagingMaxRows",
    }
}

impl ResponseCode {
    /// Whether retrying the same request later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ResponseCode::ErrorServerBusy
                | ResponseCode::ErrorInternalServerTransientError
                | ResponseCode::ErrorTimeoutExpired
                | ResponseCode::ErrorExceededConnectionCount
                | ResponseCode::ErrorMailboxMoveInProgress
                | ResponseCode::ErrorMailboxStoreUnavailable
                | ResponseCode::ErrorBatchProcessingStopped
        )
    }
}

/// One entry of `MessageXml`: a `t:Value Name="..."` pair, or another element by its local name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MessageXmlEntry {
    /// The `Name` attribute of a `Value`, or the element's local name.
    pub name: String,
    /// The text (or, for a `FieldURI`, its `FieldURI` attribute).
    pub value: String,
}

/// `MessageXml`: details of a failure, such as `BackOffMilliseconds`.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/messagexml>.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct MessageXml(pub Vec<MessageXmlEntry>);

impl MessageXml {
    /// The value of the entry `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// `BackOffMilliseconds`, as sent with ErrorServerBusy.
    pub fn back_off(&self) -> Option<Duration> {
        self.get("BackOffMilliseconds")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
    }

    /// A `MessageXml` holding `BackOffMilliseconds`.
    pub fn with_back_off(back_off: Duration) -> Self {
        MessageXml(vec![MessageXmlEntry {
            name: "BackOffMilliseconds".into(),
            value: back_off.as_millis().to_string(),
        }])
    }
}

impl XmlElement for MessageXml {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut entries = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            let (name, attr_value) = if child.local_name() == "Value" {
                (child.attr("Name")?.unwrap_or_else(|| "Value".into()), None)
            } else {
                (child.name_lossy(), child.attr("FieldURI")?)
            };
            let text = r.text(child)?;
            let value = attr_value.unwrap_or_else(|| text.into_owned());
            entries.push(MessageXmlEntry { name, value });
        }
        Ok(MessageXml(entries))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            for entry in &self.0 {
                w.tag("t:Value")
                    .attr("Name", &entry.name)
                    .text(&entry.value);
            }
        });
    }
}

/// One response message: the common `m:ResponseMessageType` part and the operation's payload.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResponseMessage<T> {
    /// Success, Warning or Error.
    pub response_class: ResponseClass,
    /// A human-readable description of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_text: Option<String>,
    /// The code (`NoError` on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<ResponseCode>,
    /// Details such as `BackOffMilliseconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_xml: Option<MessageXml>,
    /// What the operation returns for this item.
    #[serde(flatten)]
    pub payload: T,
}

impl<T> ResponseMessage<T> {
    /// A successful message.
    pub fn success(payload: T) -> Self {
        Self {
            response_class: ResponseClass::Success,
            message_text: None,
            response_code: Some(ResponseCode::NoError),
            message_xml: None,
            payload,
        }
    }

    /// A failed message.
    pub fn error(code: ResponseCode, text: impl Into<String>, payload: T) -> Self {
        Self {
            response_class: ResponseClass::Error,
            message_text: Some(text.into()),
            response_code: Some(code),
            message_xml: None,
            payload,
        }
    }

    /// Whether the message reports success (or a warning).
    pub fn is_success(&self) -> bool {
        self.response_class != ResponseClass::Error
    }

    /// The code, `NoError` when the server left it out.
    pub fn code(&self) -> ResponseCode {
        self.response_code.clone().unwrap_or(ResponseCode::NoError)
    }

    /// The back-off the server asked for, if this message is ErrorServerBusy.
    pub fn back_off(&self) -> Option<Duration> {
        if self.code() != ResponseCode::ErrorServerBusy {
            return None;
        }
        Some(
            self.message_xml
                .as_ref()
                .and_then(MessageXml::back_off)
                .unwrap_or(Duration::ZERO),
        )
    }
}

impl<T: XmlContent> XmlElement for ResponseMessage<T> {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let response_class =
            read_attr_value(&e, "ResponseClass")?.ok_or_else(|| DecodeError::MissingAttribute {
                element: e.name_lossy(),
                attribute: "ResponseClass",
            })?;
        let mut message_text = None;
        let mut response_code = None;
        let mut message_xml = None;
        let payload = T::read_content(r, e, &mut |r, child| {
            if child.ns() != Ns::Messages {
                return Ok(Some(child));
            }
            match child.local_name() {
                "MessageText" => message_text = Some(r.text(child)?.into_owned()),
                "ResponseCode" => {
                    let text = r.text(child)?;
                    response_code =
                        Some(ResponseCode::from_text(text.trim()).map_err(|expected| {
                            DecodeError::InvalidValue {
                                path: "ResponseCode".into(),
                                value: text.to_string(),
                                expected,
                            }
                        })?);
                }
                "MessageXml" => message_xml = Some(MessageXml::read(r, child)?),
                _ => return Ok(Some(child)),
            }
            Ok(None)
        })?;
        Ok(ResponseMessage {
            response_class,
            message_text,
            response_code,
            message_xml,
            payload,
        })
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        let tag = self.payload.write_attrs(
            w.tag(name)
                .attr("ResponseClass", self.response_class.as_str()),
        );
        tag.children(|w| {
            if let Some(text) = &self.message_text {
                w.text_element("m:MessageText", text);
            }
            if let Some(code) = &self.response_code {
                w.text_element("m:ResponseCode", code.as_str());
            }
            if let Some(xml) = &self.message_xml {
                xml.write(w, "m:MessageXml");
            }
            self.payload.write_children(w);
        });
    }
}

/// A response message with nothing beyond the common part (`m:ResponseMessageType`).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct NoPayload {}

impl XmlContent for NoPayload {
    fn read_content<'i>(
        r: &mut XmlReader<'i>,
        e: Element<'i>,
        extra: &mut crate::xml::Extra<'_, 'i>,
    ) -> Result<Self, DecodeError> {
        while let Some(child) = r.next_child(&e)? {
            if let Some(child) = extra(r, child)? {
                r.skip(child)?;
            }
        }
        Ok(NoPayload {})
    }
    fn write_attrs<'a>(&'a self, tag: crate::xml::writer::Tag<'a>) -> crate::xml::writer::Tag<'a> {
        tag
    }
    fn has_children(&self) -> bool {
        false
    }
    fn write_children(&self, _w: &mut XmlWriter) {}
}

impl crate::xml::Absent for MessageXml {}
