//! The boundary between typed operations and whatever carries them: [`EwsService`].
//!
//! The transport implements [`EwsService::send`]; the generated [`EwsOperations`] trait adds
//! one typed method per WSDL operation on top of it, sending only the SOAP headers the WSDL
//! allows for that operation.
//!
//! [`EwsOperations`]: crate::generated::EwsOperations

use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::Error;
use crate::ops::Operation;
use crate::ops::get_streaming_events::GetStreamingEvents;
use crate::soap::TimeZoneContext;
use crate::streaming::StreamingEvents;

/// Whom a call acts for and in which time zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The mailbox to act for by impersonation (also sent as `X-AnchorMailbox`); `None` acts as
    /// the authenticated account itself.
    pub mailbox: Option<String>,
    /// The time zone the server should use for local times.
    pub time_zone: Option<TimeZoneContext>,
    /// HTTP headers sent with the request as given, replacing any of the same name (server
    /// affinity: [`crate::affinity`]). Never credentials: these are not hidden from logs.
    pub http_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Which optional SOAP headers an operation's input message declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// `ExchangeImpersonation`.
    pub impersonation: bool,
    /// `TimeZoneContext`.
    pub time_zone: bool,
}

impl CallContext {
    /// Acting for `mailbox` by impersonation.
    pub fn for_mailbox(mailbox: impl Into<String>) -> Self {
        Self {
            mailbox: Some(mailbox.into()),
            ..Self::default()
        }
    }

    /// The context with `header` added to the HTTP request.
    pub fn with_http_header(mut self, (name, value): (HeaderName, HeaderValue)) -> Self {
        self.http_headers.push((name, value));
        self
    }

    /// The context with only the headers `allowed` kept.
    pub fn restricted(&self, allowed: Headers) -> CallContext {
        CallContext {
            mailbox: self.mailbox.clone().filter(|_| allowed.impersonation),
            time_zone: self.time_zone.clone().filter(|_| allowed.time_zone),
            // HTTP headers are not SOAP headers: the WSDL says nothing about them.
            http_headers: self.http_headers.clone(),
        }
    }
}

/// Something that sends EWS operations and returns their responses.
///
/// A SOAP fault or a transport failure is an `Err`; per-item failures are messages in `Ok`.
pub trait EwsService: Send + Sync {
    /// Sends `request` for `ctx` and decodes the response.
    fn send<O: Operation>(
        &self,
        ctx: CallContext,
        request: &O,
    ) -> impl Future<Output = Result<O::Response, Error>> + Send;

    /// Sends `request` like [`send`](Self::send) and also returns the headers of the HTTP
    /// response that answered it (cookies such as [`crate::affinity::BackendCookie`]). A
    /// service without HTTP answers an empty map.
    fn send_with_headers<O: Operation>(
        &self,
        ctx: CallContext,
        request: &O,
    ) -> impl Future<Output = Result<(O::Response, HeaderMap), Error>> + Send {
        let sent = self.send(ctx, request);
        async move { sent.await.map(|response| (response, HeaderMap::new())) }
    }

    /// Opens a GetStreamingEvents connection and returns its envelopes as they arrive. A
    /// service that cannot hold a response open answers [`Error::Config`]; [`EwsClient`]
    /// implements it.
    ///
    /// [`EwsClient`]: crate::EwsClient
    fn get_streaming_events(
        &self,
        ctx: CallContext,
        request: &GetStreamingEvents,
    ) -> impl Future<Output = Result<StreamingEvents, Error>> + Send {
        let _ = (ctx, request);
        std::future::ready(Err(Error::Config(
            "this EWS service does not offer streaming notifications".into(),
        )))
    }
}
