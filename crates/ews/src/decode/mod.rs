//! Decodes any captured EWS message into JSON: what an operator runs on a trace from a real
//! server (`taskbridge ews decode FILE`).
//!
//! The body element names the operation; requests, responses, faults and push notifications all
//! decode. A capture may start with an HTTP status line and headers, which are read and
//! reported (a fault usually arrives with HTTP 500).

use serde_json::{Map, Value, json};

mod dispatch;

pub use dispatch::{BodyRole, MESSAGE_BODIES, MessageBody, message_body};

use crate::ops::OperationResponse;
use crate::soap::{self, Body};
use crate::types::ResponseMessage;
use crate::xml::{Content, DecodeError, Element, Ns, XmlElement, XmlReader};

/// Decodes `input` (an envelope, optionally preceded by HTTP headers) into a JSON value.
///
/// A capture of a streaming notification response (GetStreamingEvents) holds several envelopes
/// one after another, possibly still in HTTP chunked framing: each is decoded, and the result
/// is `{"kind": "stream", "messages": [...]}`.
pub fn decode(input: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
    if input.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: max_bytes,
        });
    }
    let (http, chunked, body) = split_http(input);
    let dechunked;
    let body = if chunked {
        dechunked = dechunk(body);
        dechunked.as_slice()
    } else {
        body
    };
    let documents = split_documents(body);
    if documents.len() < 2 {
        return decode_one(http, body, max_bytes);
    }
    let messages = documents
        .into_iter()
        .map(|doc| decode_one(None, doc, max_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Map::new();
    if let Some(status) = http {
        out.insert("http_status".into(), json!(status));
    }
    out.insert("kind".into(), json!("stream"));
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}

/// The XML documents in `body`, one after another (only whitespace between them). A body that
/// is not well-formed comes back whole, for the decoder to report where it breaks.
fn split_documents(body: &[u8]) -> Vec<&[u8]> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut documents = Vec::new();
    let (mut start, mut depth) = (0usize, 0usize);
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let end = reader.buffer_position() as usize;
                    documents.push(&body[start..end]);
                    start = end;
                }
            }
            Ok(Event::Empty(_)) if depth == 0 => {
                let end = reader.buffer_position() as usize;
                documents.push(&body[start..end]);
                start = end;
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(_) => return vec![body],
        }
        if reader.buffer_position() as usize == before {
            break;
        }
    }
    if documents.is_empty() {
        vec![body]
    } else {
        documents
    }
}

/// Removes HTTP/1.1 chunked framing (`size CRLF data CRLF ... 0 CRLF CRLF`); what does not parse
/// as framing is kept as it is.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        let data = line_end + 2;
        if size == 0 {
            return out;
        }
        let Some(chunk) = rest.get(data..data.saturating_add(size)) else {
            break;
        };
        out.extend_from_slice(chunk);
        rest = rest.get(data + size + 2..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

fn decode_one(http: Option<u16>, body: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
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
/// response, and whether the body is in chunked framing.
fn split_http(input: &[u8]) -> (Option<u16>, bool, &[u8]) {
    let starts_http = input.starts_with(b"HTTP/1.") || input.starts_with(b"POST ");
    if !starts_http {
        return (None, false, input);
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
        return (None, false, input);
    };
    let head = String::from_utf8_lossy(&input[..head_len]);
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    (status, chunked, &input[body_start..])
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

/// Reads one body element (its start tag just read) into JSON; see
/// [`MESSAGE_BODIES`].
pub type ReadBody = for<'i> fn(&mut XmlReader<'i>, Element<'i>) -> Result<Value, DecodeError>;

/// Reads a request (or a notification result) into JSON: the type's own form.
pub(crate) fn read_plain<'i, T: XmlElement + serde::Serialize>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<Value, DecodeError> {
    Ok(to_value(&T::read(r, e)?))
}

/// Reads a list of response messages (a response or a push notification) into JSON, with each
/// message's back-off hint pulled out.
pub(crate) fn read_messages<'i, T: OperationResponse>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<Value, DecodeError>
where
    T::Payload: serde::Serialize,
{
    let v = T::read(r, e)?;
    Ok(json!({ "ResponseMessages": messages_value(v.messages()) }))
}

fn decode_body<'i>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<(&'static str, Value), DecodeError> {
    if e.ns() != Ns::Messages {
        return Err(soap::unexpected("an EWS message element", &e));
    }
    // The bodies taskbridge models come from the generated table (the same schema and WSDLs
    // the types are generated from).
    if let Some(body) = message_body(e.local_name()) {
        let kind = match body.role {
            BodyRole::Request => "request",
            BodyRole::Response => "response",
            BodyRole::Notification => "notification",
            BodyRole::NotificationResult => "notification-result",
        };
        return Ok((kind, (body.read)(r, e)?));
    }
    // An operation taskbridge does not model: decoded generically, with what an operator looks
    // for (class, code, message text, ids) pulled out of each message.
    let name = e.local_name().to_string();
    let tree = generic_element(r, e, 0)?;
    if name.ends_with("Response") {
        let summary = response_summary(&tree);
        Ok((
            "response",
            json!({ "generic": true, "ResponseMessages": summary, "content": tree }),
        ))
    } else {
        Ok(("request", json!({ "generic": true, "content": tree })))
    }
}

/// How deep a generically decoded message may nest: EWS messages stay within about fifteen
/// levels, and the decoder recurses.
const MAX_GENERIC_DEPTH: usize = 64;

/// An element as JSON, whatever it is: attributes as `@Name`, child elements by local name (an
/// array when a name repeats), text as a string (or `#text` beside attributes and children).
fn generic_element(
    r: &mut XmlReader<'_>,
    e: Element<'_>,
    depth: usize,
) -> Result<Value, DecodeError> {
    let mut map = Map::new();
    e.for_each_attr(|name, value| {
        map.insert(format!("@{name}"), Value::String(value.into_owned()));
        Ok(())
    })?;
    let mut text = String::new();
    while let Some(content) = r.next_content(&e)? {
        match content {
            Content::Text(t) => text.push_str(&t),
            Content::Element(child) => {
                if depth >= MAX_GENERIC_DEPTH {
                    return Err(DecodeError::Unexpected {
                        expected: "an element at most 64 levels deep",
                        found: child.name_lossy(),
                    });
                }
                let name = child.local_name().to_string();
                let value = generic_element(r, child, depth + 1)?;
                match map.get_mut(&name) {
                    Some(Value::Array(items)) => items.push(value),
                    Some(first) => {
                        let first = first.take();
                        map.insert(name, Value::Array(vec![first, value]));
                    }
                    None => {
                        map.insert(name, value);
                    }
                }
            }
        }
    }
    if map.is_empty() {
        return Ok(Value::String(text));
    }
    if !text.trim().is_empty() {
        map.insert("#text".into(), Value::String(text));
    }
    Ok(Value::Object(map))
}

/// One entry per response message of a generically decoded response: its class, code and
/// message text, the ids it names (`@Id` with `@ChangeKey`, subscription ids, watermarks) and,
/// for streaming notifications, the connection status.
fn response_summary(tree: &Value) -> Vec<Value> {
    let messages = tree
        .get("ResponseMessages")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        });
    messages
        .map(|m| {
            let text = |name: &str| m.get(name).cloned().unwrap_or(Value::Null);
            let mut ids = Vec::new();
            collect_ids(m, "", &mut ids);
            json!({
                "ResponseClass": text("@ResponseClass"),
                "ResponseCode": text("ResponseCode"),
                "MessageText": text("MessageText"),
                "ConnectionStatus": text("ConnectionStatus"),
                "ids": ids,
            })
        })
        .collect()
}

/// Every id in `value`: elements with an `@Id` attribute, and the text of `SubscriptionId`,
/// `Watermark` and `SyncState` elements.
fn collect_ids(value: &Value, name: &str, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if let Some(id) = map.get("@Id") {
                let mut entry = json!({ "element": name, "Id": id });
                if let Some(key) = map.get("@ChangeKey") {
                    entry["ChangeKey"] = key.clone();
                }
                out.push(entry);
            }
            for (child, v) in map {
                collect_ids(v, child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, name, out)),
        Value::String(s) if matches!(name, "SubscriptionId" | "Watermark" | "SyncState") => {
            out.push(json!({ "element": name, "value": s }));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
