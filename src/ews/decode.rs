//! Decodes any captured EWS message into JSON: what an operator runs on a trace from a real
//! server (`taskbridge ews decode FILE`).
//!
//! The body element names the operation; requests, responses, faults and push notifications all
//! decode. A capture may start with an HTTP status line and headers, which are read and
//! reported (a fault usually arrives with HTTP 500).

use serde_json::{Map, Value, json};

use crate::ews::error::DecodeError;
use crate::ews::ops::{
    create_item, delete_item, find_item, get_events, get_folder, get_item, send_notification,
    subscribe, sync_folder_items, unsubscribe, update_item,
};
use crate::ews::soap::{self, Body};
use crate::ews::types::ResponseMessage;
use crate::ews::xml::{Element, Ns, XmlElement, XmlReader};

/// Decodes `input` (an envelope, optionally preceded by HTTP headers) into a JSON value.
pub fn decode(input: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
    let (http, body) = split_http(input);
    let mut operation = String::new();
    let mut kind = "";
    let env = soap::read_envelope(body, max_bytes, |r, e| {
        operation = e.name_lossy();
        let (k, v) = decode_body(r, e)?;
        kind = k;
        Ok(v)
    })?;
    let mut out = Map::new();
    if let Some(status) = http {
        out.insert("http_status".into(), json!(status));
    }
    match env.body {
        Body::Fault(fault) => {
            out.insert("kind".into(), json!("fault"));
            out.insert(
                "back_off_ms".into(),
                json!(fault.back_off().map(|d| d.as_millis() as u64)),
            );
            out.insert("fault".into(), to_value(&*fault));
        }
        Body::Content(value) => {
            out.insert("kind".into(), json!(kind));
            out.insert("operation".into(), json!(operation));
            out.insert("body".into(), value);
        }
    }
    out.insert("header".into(), to_value(&env.header));
    Ok(Value::Object(out))
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Splits an optional HTTP message head off a capture; returns the status code if it was a
/// response.
fn split_http(input: &[u8]) -> (Option<u16>, &[u8]) {
    let starts_http = input.starts_with(b"HTTP/1.") || input.starts_with(b"POST ");
    if !starts_http {
        return (None, input);
    }
    let head_end = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            input
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        });
    let Some((head_len, body_start)) = head_end else {
        return (None, input);
    };
    let head = String::from_utf8_lossy(&input[..head_len]);
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    (status, &input[body_start..])
}

fn messages_value<P: serde::Serialize>(messages: &[ResponseMessage<P>]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let mut v = to_value(m);
                if let (Value::Object(map), Some(back_off)) = (&mut v, m.back_off()) {
                    map.insert(
                        "BackOffMilliseconds".into(),
                        json!(back_off.as_millis() as u64),
                    );
                }
                v
            })
            .collect(),
    )
}

fn decode_body<'i>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<(&'static str, Value), DecodeError> {
    macro_rules! request {
        ($ty:ty) => {{
            let v = <$ty>::read(r, e)?;
            Ok(("request", to_value(&v)))
        }};
    }
    macro_rules! response {
        ($ty:ty) => {{
            let v = <$ty>::read(r, e)?;
            Ok((
                "response",
                json!({ "ResponseMessages": messages_value(&v.response_messages) }),
            ))
        }};
    }
    if e.ns() != Ns::Messages {
        return Err(soap::unexpected("an EWS message element", &e));
    }
    match e.local_name() {
        "CreateItem" => request!(create_item::CreateItem),
        "GetItem" => request!(get_item::GetItem),
        "UpdateItem" => request!(update_item::UpdateItem),
        "DeleteItem" => request!(delete_item::DeleteItem),
        "FindItem" => request!(find_item::FindItem),
        "SyncFolderItems" => request!(sync_folder_items::SyncFolderItems),
        "GetFolder" => request!(get_folder::GetFolder),
        "Subscribe" => request!(subscribe::Subscribe),
        "Unsubscribe" => request!(unsubscribe::Unsubscribe),
        "GetEvents" => request!(get_events::GetEvents),
        "SendNotificationResult" => {
            let v = send_notification::SendNotificationResult::read(r, e)?;
            Ok(("notification-result", to_value(&v)))
        }
        "SendNotification" => {
            let v = send_notification::SendNotification::read(r, e)?;
            Ok((
                "notification",
                json!({ "ResponseMessages": messages_value(&v.response_messages) }),
            ))
        }
        "CreateItemResponse" => response!(create_item::CreateItemResponse),
        "GetItemResponse" => response!(get_item::GetItemResponse),
        "UpdateItemResponse" => response!(update_item::UpdateItemResponse),
        "DeleteItemResponse" => response!(delete_item::DeleteItemResponse),
        "FindItemResponse" => response!(find_item::FindItemResponse),
        "SyncFolderItemsResponse" => response!(sync_folder_items::SyncFolderItemsResponse),
        "GetFolderResponse" => response!(get_folder::GetFolderResponse),
        "SubscribeResponse" => response!(subscribe::SubscribeResponse),
        "UnsubscribeResponse" => response!(unsubscribe::UnsubscribeResponse),
        "GetEventsResponse" => response!(get_events::GetEventsResponse),
        _ => {
            // An operation taskbridge does not speak: still say what it is.
            let name = e.name_lossy();
            r.skip(e)?;
            let kind = if name.ends_with("Response") {
                "response"
            } else {
                "request"
            };
            Ok((kind, json!({ "unsupported": name })))
        }
    }
}

// Keeps the list above honest: every generated operation decodes.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_knows_every_wsdl_operation() {
        for op in crate::ews::generated::OPERATIONS {
            for name in [op.request, op.response] {
                let xml = format!(
                    r#"<s:Envelope xmlns:s="{}"><s:Body><m:{name} xmlns:m="{}"/></s:Body></s:Envelope>"#,
                    crate::ews::xml::NS_SOAP,
                    crate::ews::xml::NS_MESSAGES
                );
                let v = decode(xml.as_bytes(), 1 << 20);
                // An empty request body may lack required children; what matters is that the
                // name is recognised, so either it decodes or it fails on a missing element.
                match v {
                    Ok(v) => assert!(v["body"].get("unsupported").is_none(), "{name}"),
                    Err(
                        DecodeError::MissingElement { .. } | DecodeError::MissingAttribute { .. },
                    ) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        }
    }

    #[test]
    fn decode_reads_http_head_of_a_fault() {
        let body = soap::write_fault(
            None,
            &soap::Fault::server_busy(std::time::Duration::from_millis(1500)),
        );
        let mut capture =
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/xml\r\n\r\n".to_vec();
        capture.extend_from_slice(&body);
        let v = decode(&capture, 1 << 20).expect("decodes");
        assert_eq!(v["http_status"], 500);
        assert_eq!(v["kind"], "fault");
        assert_eq!(v["back_off_ms"], 1500);
    }
}
