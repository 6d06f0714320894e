//! [`StreamingEvents`]: the envelopes of an open GetStreamingEvents response, decoded as its
//! bytes arrive ([`EwsClient::get_streaming_events`](crate::EwsClient::get_streaming_events)).

use crate::error::Error;
use crate::ops::get_streaming_events::{GetStreamingEventsResponse, StreamingReader};
use crate::soap::Body;
use crate::transport::http;

/// An open GetStreamingEvents response: its envelopes, decoded as they arrive
/// ([`EwsClient::get_streaming_events`]).
pub struct StreamingEvents {
    response: Option<reqwest::Response>,
    reader: StreamingReader,
    /// An answer that came whole (an error status with SOAP content).
    ready: Option<GetStreamingEventsResponse>,
}

impl std::fmt::Debug for StreamingEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingEvents")
            .field("open", &self.response.is_some())
            .field("buffered", &self.reader.buffered())
            .finish_non_exhaustive()
    }
}

impl StreamingEvents {
    /// The stream of an HTTP 200 response, read as it arrives.
    pub(crate) fn open(response: reqwest::Response, reader: StreamingReader) -> Self {
        StreamingEvents {
            response: Some(response),
            reader,
            ready: None,
        }
    }

    /// A stream of one answer that came whole.
    pub(crate) fn whole(one: GetStreamingEventsResponse, reader: StreamingReader) -> Self {
        StreamingEvents {
            response: None,
            reader,
            ready: Some(one),
        }
    }

    /// The next envelope's response; `None` once the server ended the response. An envelope
    /// that does not decode, or a SOAP fault in one, is an `Err` and the stream goes on; a
    /// broken connection is an `Err` and the end.
    pub async fn next(&mut self) -> Option<Result<GetStreamingEventsResponse, Error>> {
        if let Some(one) = self.ready.take() {
            return Some(Ok(one));
        }
        loop {
            if let Some(envelope) = self.reader.next_envelope() {
                return Some(match envelope {
                    Ok(env) => match env.body {
                        Body::Content(content) => Ok(content),
                        Body::Fault(fault) => Err(Error::Fault(fault)),
                    },
                    Err(source) => Err(Error::Decode {
                        source,
                        body: Box::default(),
                    }),
                });
            }
            let response = self.response.as_mut()?;
            match response.chunk().await {
                Ok(Some(bytes)) => self.reader.push(&bytes),
                Ok(None) => {
                    self.response = None;
                    return self.reader.finish().err().map(|source| {
                        Err(Error::Decode {
                            source,
                            body: Box::default(),
                        })
                    });
                }
                Err(e) => {
                    self.response = None;
                    return Some(Err(http::classify(&e)));
                }
            }
        }
    }
}
