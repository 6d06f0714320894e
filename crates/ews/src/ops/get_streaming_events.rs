//! GetStreamingEvents: holds one HTTP response open and receives the events of streaming
//! subscriptions as they happen.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getstreamingevents-operation>.
//!
//! The answer is one HTTP response (chunked) whose body carries several complete SOAP envelopes
//! one after another, each a `GetStreamingEventsResponse`: notifications as events happen,
//! keep-alives (`ConnectionStatus` OK, no notifications) while nothing happens, and finally one
//! with `ConnectionStatus` Closed when the `ConnectionTimeout` (1 to 30 minutes) is over. A
//! subscription the server does not know comes back as an Error message naming it in
//! `ErrorSubscriptionIds`. [`StreamingReader`] cuts the byte stream into envelopes as the bytes
//! arrive and decodes each one.

use crate::ops::{OperationResponse, read_body};
use crate::soap::{self, Envelope};
use crate::xml::DecodeError;

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{GetStreamingEvents, GetStreamingEventsResponse, StreamingPayload};
pub use crate::types::generated::{ConnectionStatus, Notifications, SubscriptionIds};

/// The most subscriptions one GetStreamingEvents connection may carry on Exchange (Microsoft's
/// guidance for grouped subscriptions is at most 200 per group and connection).
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 200;

/// The range of `ConnectionTimeout` in minutes (`t:StreamingSubscriptionConnectionTimeoutType`).
pub const CONNECTION_TIMEOUT_MINUTES: std::ops::RangeInclusive<i32> = 1..=30;

/// One decoded envelope of a streaming response.
pub type StreamingEnvelope = Envelope<GetStreamingEventsResponse>;

/// Cuts a streaming response body (HTTP framing already removed) into envelopes as its bytes
/// arrive, and decodes each one.
///
/// Feed it with [`push`](Self::push) and take envelopes with
/// [`next_envelope`](Self::next_envelope) until it answers `None`. An envelope that does not
/// decode is an `Err` for that envelope alone, and the reader goes on with the next; an
/// envelope that grows past the size limit is an `Err` after which the reader yields nothing
/// more (the stream cannot be resynchronised). It never panics, whatever the input.
#[derive(Debug)]
pub struct StreamingReader {
    buf: Vec<u8>,
    /// Where scanning resumes: always between two tags (or at the start of an unfinished one).
    pos: usize,
    /// Open elements of the current document.
    depth: usize,
    max_envelope_bytes: usize,
    failed: bool,
}

impl StreamingReader {
    /// A reader that refuses any one envelope larger than `max_envelope_bytes`.
    pub fn new(max_envelope_bytes: usize) -> Self {
        StreamingReader {
            buf: Vec::new(),
            pos: 0,
            depth: 0,
            max_envelope_bytes,
            failed: false,
        }
    }

    /// Appends bytes as they came off the wire.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received and not yet part of a complete envelope.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete envelope, decoded; `None` until more bytes arrive.
    pub fn next_envelope(&mut self) -> Option<Result<StreamingEnvelope, DecodeError>> {
        if self.failed {
            return None;
        }
        match self.scan() {
            Some(end) => {
                let doc: Vec<u8> = self.buf.drain(..end).collect();
                self.pos = 0;
                self.depth = 0;
                Some(decode(&doc, self.max_envelope_bytes))
            }
            None if self.buf.len() > self.max_envelope_bytes => {
                self.failed = true;
                let size = self.buf.len();
                self.buf = Vec::new();
                Some(Err(DecodeError::TooLarge {
                    size,
                    limit: self.max_envelope_bytes,
                }))
            }
            None => None,
        }
    }

    /// At the end of the body: an error if an envelope was left unfinished (anything but
    /// whitespace after the last complete one).
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if self.failed || self.buf.iter().all(u8::is_ascii_whitespace) {
            self.buf.clear();
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let line = text.lines().count().max(1);
        let column = text.lines().last().map_or(0, |l| l.chars().count()) + 1;
        self.buf.clear();
        self.pos = 0;
        self.depth = 0;
        Err(DecodeError::Truncated { line, column })
    }

    /// Scans on from `pos`; the end (exclusive) of the first complete document, if there is one.
    fn scan(&mut self) -> Option<usize> {
        let buf = &self.buf;
        loop {
            let lt = self.pos + buf.get(self.pos..)?.iter().position(|&b| b == b'<')?;
            let rest = &buf[lt..];
            let end = if rest.starts_with(b"<!--") {
                find(rest, 4, b"-->")? + 3
            } else if rest.starts_with(b"<![CDATA[") {
                find(rest, 9, b"]]>")? + 3
            } else if rest.starts_with(b"<?") {
                find(rest, 2, b"?>")? + 2
            } else if rest.starts_with(b"<!") {
                // A DOCTYPE: the decoder refuses it; skipped here to find where it ends.
                tag_end(rest)?
            } else {
                let end = tag_end(rest)?;
                if rest.get(1) == Some(&b'/') {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.pos = lt + end;
                        return Some(self.pos);
                    }
                } else if end >= 2 && rest[end - 2] == b'/' {
                    if self.depth == 0 {
                        self.pos = lt + end;
                        return Some(self.pos);
                    }
                } else {
                    self.depth += 1;
                }
                end
            };
            self.pos = lt + end;
        }
    }
}

/// The position just after `needle` in `hay`, searching from `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// The end (exclusive) of the tag at the start of `rest`, skipping `>` inside quoted attribute
/// values.
fn tag_end(rest: &[u8]) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, &b) in rest.iter().enumerate().skip(1) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn decode(doc: &[u8], max_bytes: usize) -> Result<StreamingEnvelope, DecodeError> {
    soap::read_envelope(doc, max_bytes, |r, e| {
        read_body::<GetStreamingEventsResponse>(r, e, GetStreamingEventsResponse::NAME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::soap::Body;
    use crate::types::{ResponseCode, SubscriptionId};

    #[test]
    fn get_streaming_events_request_lists_ids_then_timeout() {
        let req = GetStreamingEvents {
            subscription_ids: SubscriptionIds {
                subscription_ids: vec![SubscriptionId::from("s-1"), SubscriptionId::from("s-2")],
            },
            connection_timeout: 30,
        };
        assert_writes(
            &req,
            "m:GetStreamingEvents",
            "<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>s-1</t:SubscriptionId><t:SubscriptionId>s-2</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>30</m:ConnectionTimeout></m:GetStreamingEvents>",
        );
        assert_round_trip(&req, "m:GetStreamingEvents");
    }

    const NS: &str = r#"xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types""#;

    fn envelope(message: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope {NS}><s:Body><m:GetStreamingEventsResponse><m:ResponseMessages>{message}</m:ResponseMessages></m:GetStreamingEventsResponse></s:Body></s:Envelope>"#
        )
    }

    fn events() -> String {
        envelope(
            r#"<m:GetStreamingEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notifications><t:Notification><t:SubscriptionId>s-1</t:SubscriptionId><t:ModifiedEvent><t:TimeStamp>2026-12-01T10:00:00Z</t:TimeStamp><t:ItemId Id="A&gt;1" ChangeKey="k"/><t:ParentFolderId Id="F"/></t:ModifiedEvent></t:Notification></m:Notifications><m:ConnectionStatus>OK</m:ConnectionStatus></m:GetStreamingEventsResponseMessage>"#,
        )
    }

    fn closed() -> String {
        envelope(
            r#"<m:GetStreamingEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:ConnectionStatus>Closed</m:ConnectionStatus></m:GetStreamingEventsResponseMessage>"#,
        )
    }

    fn payload(env: &StreamingEnvelope) -> &StreamingPayload {
        match &env.body {
            Body::Content(c) => &c.response_messages[0].payload,
            Body::Fault(f) => panic!("fault {f}"),
        }
    }

    fn drain(reader: &mut StreamingReader) -> Vec<Result<StreamingEnvelope, DecodeError>> {
        std::iter::from_fn(|| reader.next_envelope()).collect()
    }

    #[test]
    fn reader_splits_envelopes_fed_one_byte_at_a_time() {
        let stream = format!("{}\r\n{}", events(), closed());
        let mut reader = StreamingReader::new(1 << 20);
        let mut got = Vec::new();
        for b in stream.as_bytes() {
            reader.push(std::slice::from_ref(b));
            got.extend(drain(&mut reader));
        }
        reader.finish().expect("nothing left over");
        assert_eq!(got.len(), 2);
        let first = got[0].as_ref().expect("first decodes");
        let n = &payload(first)
            .notifications
            .as_ref()
            .expect("notifications")
            .notifications;
        assert_eq!(n[0].subscription_id.as_str(), "s-1");
        assert_eq!(
            n[0].events[0]
                .object()
                .and_then(|o| o.item_id())
                .map(|i| i.id.as_str()),
            Some("A>1")
        );
        let second = got[1].as_ref().expect("second decodes");
        assert_eq!(
            payload(second).connection_status,
            Some(ConnectionStatus::Closed)
        );
    }

    #[test]
    fn reader_reports_a_bad_envelope_and_goes_on_with_the_next() {
        let bad = format!(r#"<s:Envelope {NS}><s:Body><m:GetItemResponse/></s:Body></s:Envelope>"#);
        let mut reader = StreamingReader::new(1 << 20);
        reader.push(format!("{bad}{}", closed()).as_bytes());
        let got = drain(&mut reader);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert!(got[1].is_ok());
    }

    #[test]
    fn reader_reads_the_unknown_subscription_error() {
        let xml = envelope(
            r#"<m:GetStreamingEventsResponseMessage ResponseClass="Error"><m:MessageText>The subscription was not found.</m:MessageText><m:ResponseCode>ErrorSubscriptionNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:ErrorSubscriptionIds><t:SubscriptionId>gone</t:SubscriptionId></m:ErrorSubscriptionIds></m:GetStreamingEventsResponseMessage>"#,
        );
        let mut reader = StreamingReader::new(1 << 20);
        reader.push(xml.as_bytes());
        let env = reader.next_envelope().expect("one").expect("decodes");
        let Body::Content(c) = &env.body else {
            panic!("fault")
        };
        let m = &c.response_messages[0];
        assert_eq!(
            m.response_code,
            Some(ResponseCode::ErrorSubscriptionNotFound)
        );
        let ids = m.payload.error_subscription_ids.as_ref().expect("ids");
        assert_eq!(ids.subscription_ids[0].as_str(), "gone");
    }

    #[test]
    fn reader_stops_at_an_envelope_over_the_limit_and_flags_a_truncated_end() {
        let mut reader = StreamingReader::new(64);
        let mut got = Vec::new();
        for piece in format!("{}{}", events(), closed()).as_bytes().chunks(16) {
            reader.push(piece);
            got.extend(drain(&mut reader));
        }
        assert_eq!(got.len(), 1, "one error, then nothing");
        assert!(matches!(got[0], Err(DecodeError::TooLarge { .. })));

        let mut reader = StreamingReader::new(1 << 20);
        let text = closed();
        reader.push(&text.as_bytes()[..text.len() / 2]);
        assert!(reader.next_envelope().is_none());
        assert!(matches!(
            reader.finish(),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn reader_survives_arbitrary_bytes() {
        // Stray end tags, unbalanced quotes, lone brackets and non-UTF-8: errors, never a panic.
        for input in [
            &b"</a></b><c/>"[..],
            b"<a b='>'><<<>>>\xff\xfe</a>",
            b"<!-- never closed",
            b"<?xml?><![CDATA[x]]><x/>",
            b"\x00\x01<\x00>",
        ] {
            let mut reader = StreamingReader::new(1 << 10);
            for piece in input.chunks(3) {
                reader.push(piece);
                while let Some(r) = reader.next_envelope() {
                    assert!(r.is_err(), "{input:?} decoded as an envelope");
                }
            }
            let _ = reader.finish();
        }
    }
}
