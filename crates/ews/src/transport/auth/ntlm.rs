//! NTLM (NTLMv2) client authentication over dedicated connections.
//!
//! NTLM authenticates a TCP connection, not a request: NEGOTIATE, CHALLENGE and AUTHENTICATE
//! must travel on one connection, and the requests that follow are authenticated only on it.
//! So each in-flight slot owns one [`DedicatedConnection`]; a request takes a free slot, runs the
//! handshake on it if it is not authenticated yet, and uses it strictly alone. A slot belongs to
//! one client, so to one credential: an authenticated connection never carries another identity.
//!
//! A 401 on an authenticated connection (the server forgot it, or the connection was replaced)
//! redoes the handshake once. A 401 answering AUTHENTICATE is final: a wrong password fails
//! after exactly one handshake, so an account is never locked out by retries.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use tracing::{debug, info};

use rand::RngCore;

use super::ntlm_message;
use super::{Slot, Slots};
use crate::error::Error;
use crate::secret::Secret;
use crate::transport::channel_binding::ChannelBindings;
use crate::transport::http::{DedicatedConnection, HttpResponse, SoapRequest, Wire};

/// The workstation name sent in NTLM messages.
const WORKSTATION: &str = "TASKBRIDGE";

/// NTLM credentials, split into user and domain.
#[derive(Clone, Debug)]
pub(crate) struct NtlmCredentials {
    user: String,
    domain: String,
    password: Secret,
}

impl NtlmCredentials {
    /// Reads `DOMAIN\user` (user and domain apart) or `user@domain` / `user` (sent whole as the
    /// user name with an empty domain, as Windows does for user principal names).
    pub(crate) fn new(user: &str, password: Secret) -> Result<Self, Error> {
        let (domain, user) = match user.split_once('\\') {
            Some((domain, user)) => (domain.to_string(), user.to_string()),
            None => (String::new(), user.to_string()),
        };
        if user.is_empty() {
            return Err(Error::Config("the NTLM user name is empty".into()));
        }
        Ok(NtlmCredentials {
            user,
            domain,
            password,
        })
    }

    /// `DOMAIN\user` or `user@domain`, for messages.
    pub(crate) fn display(&self) -> String {
        if self.domain.is_empty() {
            self.user.clone()
        } else {
            format!("{}\\{}", self.domain, self.user)
        }
    }
}

/// The `Authorization` value carrying NEGOTIATE.
pub(crate) fn negotiate_header() -> Result<HeaderValue, Error> {
    token_header(&ntlm_message::negotiate_message())
}

/// The NTLM CHALLENGE in a 401 response's `WWW-Authenticate`, if there is one.
pub(crate) fn challenge_of(response: &HttpResponse) -> Option<Vec<u8>> {
    response
        .headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("NTLM") {
                return None;
            }
            BASE64.decode(token.trim()).ok()
        })
}

/// The `Authorization` value carrying AUTHENTICATE (NTLMv2 with a MIC) for `challenge`, bound
/// to the TLS channel by `bindings` and naming the service `HTTP/host`.
pub(crate) fn authenticate_header(
    creds: &NtlmCredentials,
    challenge: &[u8],
    bindings: ChannelBindings,
    host: &str,
) -> Result<HeaderValue, Error> {
    let mut client_challenge = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut client_challenge);
    let target_name = format!("HTTP/{host}");
    let who = ntlm_message::Identity {
        user: &creds.user,
        domain: &creds.domain,
        password: creds.password.expose(),
        workstation: WORKSTATION,
        target_name: &target_name,
    };
    let bytes = ntlm_message::authenticate_message(
        &who,
        &ntlm_message::negotiate_message(),
        challenge,
        bindings,
        client_challenge,
        ntlm_message::filetime_now(),
    )
    .map_err(|detail| Error::Unauthorized {
        scheme: "ntlm",
        detail,
    })?;
    token_header(&bytes)
}

fn token_header(bytes: &[u8]) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(&format!("NTLM {}", BASE64.encode(bytes)))
        .map_err(|_| Error::Config("NTLM token is not a valid header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The NTLM connections of one client (one credential).
pub(crate) struct NtlmPool {
    creds: NtlmCredentials,
    free: Slots,
    handshakes: AtomicU64,
}

impl NtlmPool {
    pub(crate) fn new(creds: NtlmCredentials) -> Self {
        NtlmPool {
            creds,
            free: Slots::default(),
            handshakes: AtomicU64::new(0),
        }
    }

    /// Handshakes completed or attempted so far (AUTHENTICATE messages sent).
    pub(crate) fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Sends `req` on an authenticated connection, authenticating one first if needed.
    pub(crate) async fn send(
        &self,
        wire: &Wire,
        req: &SoapRequest<'_>,
    ) -> Result<HttpResponse, Error> {
        let mut slot = self.free.take();
        let result = self.send_on_slot(wire, &mut slot, req).await;
        if matches!(
            result,
            Err(Error::Connection(_) | Error::Tls(_) | Error::UntrustedCertificate(_))
        ) {
            // The connection is in an unknown state; the next user of the slot starts afresh.
            slot.conn = None;
            slot.authenticated = false;
        }
        self.free.put_back(slot);
        result
    }

    async fn send_on_slot(
        &self,
        wire: &Wire,
        slot: &mut Slot,
        req: &SoapRequest<'_>,
    ) -> Result<HttpResponse, Error> {
        if slot.conn.as_ref().is_none_or(|c| !c.is_open()) {
            slot.conn = Some(wire.connect().await?);
            slot.authenticated = false;
        }
        if slot.authenticated {
            let conn = slot.conn.as_mut().expect("a connection was just ensured");
            let response = wire.send_on(conn, wire.request(req, None, true)?).await?;
            if response.status != 401 {
                if response.closes_connection() {
                    slot.authenticated = false;
                }
                return Ok(response);
            }
            debug!("401 on an authenticated NTLM connection; redoing the handshake once");
            slot.authenticated = false;
            if !conn.is_open() {
                slot.conn = Some(wire.connect().await?);
            }
        }
        self.handshake_and_send(wire, slot, req).await
    }

    /// Opens a connection of its own (not from the pool: it stays busy for the whole
    /// response), authenticates it with `req` carried by AUTHENTICATE, and returns the response
    /// as soon as its head arrives, with the connection that carries its body.
    pub(crate) async fn open_stream(
        &self,
        wire: &Wire,
        req: &SoapRequest<'_>,
    ) -> Result<(http::Response<hyper::body::Incoming>, DedicatedConnection), Error> {
        let mut conn = wire.connect().await?;
        let challenge = self.challenge(wire, &mut conn, req).await?;
        let host = wire.endpoint.host_str().unwrap_or_default();
        let authenticate =
            authenticate_header(&self.creds, &challenge, conn.channel_bindings(), host)?;
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let response = wire
            .send_on_streaming(&mut conn, wire.request(req, Some(authenticate), true)?)
            .await?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            return Err(self.refused());
        }
        Ok((response, conn))
    }

    /// NEGOTIATE (empty body) on `conn`; the server's CHALLENGE.
    async fn challenge(
        &self,
        wire: &Wire,
        conn: &mut DedicatedConnection,
        req: &SoapRequest<'_>,
    ) -> Result<Vec<u8>, Error> {
        let first = wire
            .send_on(conn, wire.request(req, Some(negotiate_header()?), false)?)
            .await?;
        if first.status != 401 {
            return Err(Error::Unauthorized {
                scheme: "ntlm",
                detail: format!(
                    "the server answered the NTLM NEGOTIATE with HTTP {} instead of a challenge",
                    first.status
                ),
            });
        }
        let Some(challenge) = challenge_of(&first) else {
            return Err(Error::Unauthorized {
                scheme: "ntlm",
                detail: format!(
                    "the server does not offer NTLM (it offers: {})",
                    first.offered_schemes()
                ),
            });
        };
        if !conn.is_open() {
            return Err(Error::Connection(
                "the server closed the connection in the middle of the NTLM handshake".into(),
            ));
        }
        Ok(challenge)
    }

    fn refused(&self) -> Error {
        Error::Unauthorized {
            scheme: "ntlm",
            detail: format!(
                "the server refused the NTLM credentials of {} (wrong password, or locked or \
                 unknown account)",
                self.creds.display()
            ),
        }
    }

    /// NEGOTIATE (empty body) -> CHALLENGE -> AUTHENTICATE carrying the real request.
    async fn handshake_and_send(
        &self,
        wire: &Wire,
        slot: &mut Slot,
        req: &SoapRequest<'_>,
    ) -> Result<HttpResponse, Error> {
        let conn = slot.conn.as_mut().expect("the caller ensured a connection");
        let first = wire
            .send_on(conn, wire.request(req, Some(negotiate_header()?), false)?)
            .await?;
        if (300..400).contains(&first.status) {
            // A redirect is the server's answer to the request, not to the handshake: the
            // caller decides whether to follow it (Autodiscover does; EWS calls do not).
            return Ok(first);
        }
        if first.status != 401 {
            return Err(Error::Unauthorized {
                scheme: "ntlm",
                detail: format!(
                    "the server answered the NTLM NEGOTIATE with HTTP {} instead of a challenge",
                    first.status
                ),
            });
        }
        let Some(challenge) = challenge_of(&first) else {
            return Err(Error::Unauthorized {
                scheme: "ntlm",
                detail: format!(
                    "the server does not offer NTLM (it offers: {})",
                    first.offered_schemes()
                ),
            });
        };
        if !conn.is_open() {
            return Err(Error::Connection(
                "the server closed the connection in the middle of the NTLM handshake".into(),
            ));
        }
        let host = wire.endpoint.host_str().unwrap_or_default();
        let authenticate =
            authenticate_header(&self.creds, &challenge, conn.channel_bindings(), host)?;
        let n = self.handshakes.fetch_add(1, Ordering::Relaxed) + 1;
        let response = wire
            .send_on(conn, wire.request(req, Some(authenticate), true)?)
            .await?;
        if response.status == 401 {
            return Err(Error::Unauthorized {
                scheme: "ntlm",
                detail: format!(
                    "the server refused the NTLM credentials of {} (wrong password, or \
                     locked or unknown account)",
                    self.creds.display()
                ),
            });
        }
        if n == 1 {
            info!(user = %self.creds.display(), "NTLM authentication succeeded");
        } else {
            debug!(handshakes = n, "NTLM connection authenticated");
        }
        slot.authenticated = !response.closes_connection();
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntlm_credentials_split_domain_user() {
        let c = NtlmCredentials::new("CONTOSO\\svc", Secret::new("p")).expect("creds");
        assert_eq!((c.user.as_str(), c.domain.as_str()), ("svc", "CONTOSO"));
        assert_eq!(c.display(), "CONTOSO\\svc");
        let c = NtlmCredentials::new("svc@contoso.com", Secret::new("p")).expect("creds");
        assert_eq!(
            (c.user.as_str(), c.domain.as_str()),
            ("svc@contoso.com", "")
        );
        assert!(NtlmCredentials::new("CONTOSO\\", Secret::new("p")).is_err());
    }
}
