//! One module per EWS operation: the request, its response message, and the tie between them.
//!
//! [`Operation`] binds a request body to its response type, so the transport is one generic
//! `send<O: Operation>`. The request and response types are generated from `wsdl/messages.xsd`
//! into `ops::generated` and re-exported by each operation's module; the typed methods per
//! operation are generated from `wsdl/services.wsdl` into `src/generated/`, above this layer.

pub mod create_item;
pub mod delete_item;
pub mod find_item;
pub(crate) mod generated;
pub mod get_events;
pub mod get_folder;
pub mod get_item;
pub mod get_streaming_events;
pub mod send_notification;
pub mod subscribe;
pub mod sync_folder_items;
#[cfg(test)]
mod test_support;
pub mod unsubscribe;
pub mod update_item;

use crate::soap::{self, Body, Envelope, Header};
use crate::types::ResponseMessage;
use crate::xml::{DecodeError, Element, Ns, XmlContent, XmlElement, XmlReader};

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// An EWS request body, bound to its response.
pub trait Operation: XmlElement + Sealed + Send + Sync {
    /// The operation name, e.g. `GetItem` (also the `SOAPAction` suffix).
    const NAME: &'static str;
    /// The body element as written, e.g. `m:GetItem`.
    const BODY: &'static str;
    /// Whether the transport may send the request again after a failure that leaves unknown
    /// whether the server ran it (a dropped connection, a time-out, a 5xx without a SOAP
    /// answer). False for CreateItem: a second CreateItem makes a second item, so the failure
    /// goes to the caller, which looks for the items it tagged before creating them again.
    const SAFE_TO_RESEND: bool = true;
    /// The response body type.
    type Response: OperationResponse;
}

/// An EWS response body: a list of response messages, one per request item.
pub trait OperationResponse: XmlElement + Sealed + Send + Sized {
    /// The body element's local name, e.g. `GetItemResponse`.
    const NAME: &'static str;
    /// The body element as written, e.g. `m:GetItemResponse`.
    const BODY: &'static str;
    /// Each message's element as written, e.g. `m:GetItemResponseMessage`.
    const MESSAGE: &'static str;
    /// What each message carries beyond the common part.
    type Payload: XmlContent + Send;
    /// The messages in order.
    fn messages(&self) -> &[ResponseMessage<Self::Payload>];
    /// The messages in order, owned.
    fn into_messages(self) -> Vec<ResponseMessage<Self::Payload>>;
    /// Builds a response from its messages.
    fn from_messages(messages: Vec<ResponseMessage<Self::Payload>>) -> Self;
}

/// The `SOAPAction` header value of an operation.
pub fn soap_action(name: &str) -> String {
    format!("\"http://schemas.microsoft.com/exchange/services/2006/messages/{name}\"")
}

/// Reads the `m:ResponseMessages` list of a response body.
pub(crate) fn read_messages<'i, P: XmlContent>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<Vec<ResponseMessage<P>>, DecodeError> {
    let mut messages = Vec::new();
    while let Some(child) = r.next_child(&e)? {
        if !child.is(Ns::Messages, "ResponseMessages") {
            r.skip(child)?;
            continue;
        }
        let list = child;
        while let Some(msg) = r.next_child(&list)? {
            // Every member of ResponseMessages is a ResponseMessageType extension; the element
            // name only repeats the operation's.
            if msg.ns() == Ns::Messages && msg.local_name().ends_with("ResponseMessage") {
                messages.push(
                    ResponseMessage::<P>::read(r, msg).map_err(|e| e.within("ResponseMessages"))?,
                );
            } else {
                r.skip(msg)?;
            }
        }
    }
    Ok(messages)
}

/// Declares the response body of an operation: `m:ResponseMessages` of one message type.
macro_rules! response {
    ($(#[$meta:meta])* $name:ident, $message:literal, $payload:ty) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            /// One message per request item, in request order.
            pub response_messages: Vec<$crate::types::ResponseMessage<$payload>>,
        }

        impl $crate::ops::Sealed for $name {}

        impl $crate::ops::OperationResponse for $name {
            const NAME: &'static str = stringify!($name);
            const BODY: &'static str = concat!("m:", stringify!($name));
            const MESSAGE: &'static str = concat!("m:", $message);
            type Payload = $payload;
            fn messages(&self) -> &[$crate::types::ResponseMessage<$payload>] {
                &self.response_messages
            }
            fn into_messages(self) -> Vec<$crate::types::ResponseMessage<$payload>> {
                self.response_messages
            }
            fn from_messages(messages: Vec<$crate::types::ResponseMessage<$payload>>) -> Self {
                Self { response_messages: messages }
            }
        }

        impl $crate::xml::XmlElement for $name {
            fn read<'i>(
                r: &mut $crate::xml::XmlReader<'i>,
                e: $crate::xml::Element<'i>,
            ) -> Result<Self, $crate::xml::DecodeError> {
                Ok(Self {
                    response_messages: $crate::ops::read_messages(r, e)?,
                })
            }

            fn write(&self, w: &mut $crate::xml::XmlWriter, name: &str) {
                w.tag(name).children(|w| {
                    w.tag("m:ResponseMessages").children(|w| {
                        for m in &self.response_messages {
                            m.write(w, concat!("m:", $message));
                        }
                    });
                });
            }
        }
    };
}
pub(crate) use response;

/// Ties a request type to its response and names the operation; whether it is safe to resend
/// is said for each (generated from the generator's `RESEND` table into `ops::generated`).
macro_rules! operation {
    ($request:ident => $response:ident, safe_to_resend = $safe:expr) => {
        impl $crate::ops::Sealed for $request {}
        impl $crate::ops::Operation for $request {
            const NAME: &'static str = stringify!($request);
            const BODY: &'static str = concat!("m:", stringify!($request));
            const SAFE_TO_RESEND: bool = $safe;
            type Response = $response;
        }
    };
}
pub(crate) use operation;

/// Reads the body element `expected` (in the messages namespace) as `T`.
pub(crate) fn read_body<'i, T: XmlElement>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
    expected: &'static str,
) -> Result<T, DecodeError> {
    if e.ns() == Ns::Messages && e.local_name() == expected {
        T::read(r, e)
    } else {
        Err(soap::unexpected(expected, &e))
    }
}

/// Decodes a response envelope for operation `O`: its headers and either a fault or the body.
pub fn decode_response<O: Operation>(
    input: &[u8],
    max_bytes: usize,
) -> Result<Envelope<O::Response>, DecodeError> {
    soap::read_envelope(input, max_bytes, |r, e| {
        read_body::<O::Response>(r, e, <O::Response as OperationResponse>::NAME)
    })
}

/// Decodes a request envelope for operation `O` (what the simulator does).
pub fn decode_request<O: Operation>(
    input: &[u8],
    max_bytes: usize,
) -> Result<(Header, O), DecodeError> {
    let env = soap::read_envelope(input, max_bytes, |r, e| read_body::<O>(r, e, O::NAME))?;
    match env.body {
        Body::Content(body) => Ok((env.header, body)),
        Body::Fault(_) => Err(DecodeError::Unexpected {
            expected: O::NAME,
            found: "Soap:Fault".into(),
        }),
    }
}

/// Encodes a request envelope for operation `O`.
pub fn encode_request<O: Operation>(header: &soap::RequestHeader, request: &O) -> Vec<u8> {
    soap::write_request(header, O::BODY, request)
}

/// Encodes a response envelope for operation `O`.
pub fn encode_response<O: Operation>(
    server: Option<&soap::ServerVersionInfo>,
    response: &O::Response,
) -> Vec<u8> {
    soap::write_response(server, <O::Response as OperationResponse>::BODY, response)
}

/// Decodes a request envelope for operation `O` in strict mode: known elements out of schema
/// order are refused, as Exchange refuses them with ErrorSchemaValidation.
pub fn decode_request_strict<O: Operation>(
    input: &[u8],
    max_bytes: usize,
) -> Result<(Header, O), DecodeError> {
    let env =
        soap::read_envelope_with(input, max_bytes, true, |r, e| read_body::<O>(r, e, O::NAME))?;
    match env.body {
        Body::Content(body) => Ok((env.header, body)),
        Body::Fault(_) => Err(DecodeError::Unexpected {
            expected: O::NAME,
            found: "Soap:Fault".into(),
        }),
    }
}
