//! [`StreamingEvents`]: the envelopes of an open GetStreamingEvents response, decoded as its
//! bytes arrive ([`EwsClient::get_streaming_events`](crate::EwsClient::get_streaming_events)).

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::error::{DecodeError, Error};
use crate::ops::get_streaming_events::{GetStreamingEventsResponse, StreamingReader};
use crate::soap::Body;
use crate::transport::http::{self, DedicatedConnection};

/// A response whose head has arrived and whose body is still to be read.
pub(crate) enum OpenResponse {
    /// Through the pooled client.
    Pooled(reqwest::Response),
    /// On a connection of its own (NTLM), kept with the body it carries.
    Dedicated {
        response: ::http::Response<hyper::body::Incoming>,
        _conn: DedicatedConnection,
    },
}

impl OpenResponse {
    pub(crate) fn pooled(response: reqwest::Response) -> Self {
        OpenResponse::Pooled(response)
    }

    pub(crate) fn dedicated(
        response: ::http::Response<hyper::body::Incoming>,
        conn: DedicatedConnection,
    ) -> Self {
        OpenResponse::Dedicated {
            response,
            _conn: conn,
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            OpenResponse::Pooled(r) => r.status().as_u16(),
            OpenResponse::Dedicated { response, .. } => response.status().as_u16(),
        }
    }

    /// The response headers.
    pub(crate) fn headers(&self) -> &::http::HeaderMap {
        match self {
            OpenResponse::Pooled(r) => r.headers(),
            OpenResponse::Dedicated { response, .. } => response.headers(),
        }
    }

    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        match self {
            OpenResponse::Pooled(r) => r.chunk().await.map_err(|e| http::classify(&e)),
            OpenResponse::Dedicated { response, .. } => loop {
                match response.body_mut().frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(http::classify(&e)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
        }
    }

    /// The whole body, up to `max` bytes (an answer that is not a stream).
    pub(crate) async fn whole(mut self, max: usize) -> Result<Bytes, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if body.len() + chunk.len() > max {
                return Err(Error::Decode {
                    source: DecodeError::TooLarge {
                        size: body.len() + chunk.len(),
                        limit: max,
                    },
                    body: Box::default(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }
}

/// An open GetStreamingEvents response: its envelopes, decoded as they arrive
/// ([`crate::client::EwsClient::get_streaming_events`]).
pub struct StreamingEvents {
    response: Option<OpenResponse>,
    /// When the connection must have ended (its time-out and the request time-out).
    deadline: Option<Instant>,
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
    pub(crate) fn open(response: OpenResponse, reader: StreamingReader, deadline: Instant) -> Self {
        StreamingEvents {
            response: Some(response),
            deadline: Some(deadline),
            reader,
            ready: None,
        }
    }

    /// A stream of one answer that came whole.
    pub(crate) fn whole(one: GetStreamingEventsResponse, reader: StreamingReader) -> Self {
        StreamingEvents {
            response: None,
            deadline: None,
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
            let chunk = match self.deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, response.chunk())
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Connection(
                            "the streaming connection outlived its time-out".into(),
                        ))
                    }),
                None => response.chunk().await,
            };
            match chunk {
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
                    return Some(Err(e));
                }
            }
        }
    }
}
