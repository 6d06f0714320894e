//! Negotiate (SPNEGO, in practice Kerberos) client authentication over dedicated connections,
//! through the system's GSSAPI (`gssapi`).
//!
//! IIS authenticates the TCP connection with Kerberos as it does with NTLM, so this follows
//! NTLM's shape (`ntlm`): each in-flight slot owns one [`DedicatedConnection`], authenticated on
//! its first request and used strictly alone. Kerberos needs no challenge: the first request
//! carries the body and `Authorization: Negotiate <token>` at once; the server's answer carries
//! its own token, which proves the server holds the service key (mutual authentication). An
//! answer without it, or with one the library rejects, fails the request: a server that cannot
//! prove its identity gets no data.
//!
//! Over TLS the token is bound to the channel: GSSAPI gets the `tls-server-end-point` application
//! data of the connection's certificate (`channel_binding`), which Exchange under Extended
//! Protection requires.
//!
//! Credentials are the process's: the ticket cache (`KRB5CCNAME`, filled by `kinit`) or, when it
//! holds no ticket, the client keytab (`KRB5_CLIENT_KTNAME`), from which MIT's library obtains
//! tickets itself. A 401 answering a token is final (a ticket is not a password: retrying
//! cannot help); a 401 on a connection authenticated before redoes the handshake once.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue};
use tracing::{debug, info};

use super::gssapi::{self, GssError, Initiator};
use super::{Slot, Slots};
use crate::error::Error;
use crate::transport::http::{DedicatedConnection, HttpResponse, SoapRequest, Wire};

const SCHEME: &str = "negotiate";

/// Legs of one handshake at most (Kerberos needs one; SPNEGO may add a second).
const MAX_LEGS: usize = 3;

/// The GSSAPI host-based name of a service principal name: `HTTP/mail.contoso.com` (the
/// Windows form) or `HTTP@mail.contoso.com` (GSSAPI's) both give `HTTP@mail.contoso.com`.
pub(crate) fn host_based_name(spn: &str) -> Result<String, Error> {
    let spn = spn.trim();
    let (service, host) = spn
        .split_once('/')
        .or_else(|| spn.split_once('@'))
        .ok_or_else(|| {
            Error::Config(format!(
                "service principal name {spn:?} is not SERVICE/host (e.g. HTTP/mail.contoso.com)"
            ))
        })?;
    if service.is_empty() || host.is_empty() || host.contains(['/', '@']) {
        return Err(Error::Config(format!(
            "service principal name {spn:?} is not SERVICE/host (e.g. HTTP/mail.contoso.com)"
        )));
    }
    Ok(format!("{service}@{host}"))
}

/// The `Negotiate` token of a response's `WWW-Authenticate`, if there is one.
fn token_of(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("Negotiate") {
                return None;
            }
            BASE64.decode(token.trim()).ok()
        })
}

fn header(token: &[u8]) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(&format!("Negotiate {}", BASE64.encode(token)))
        .map_err(|_| Error::Config("Negotiate token is not a valid header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn offered(headers: &HeaderMap) -> String {
    HttpResponse {
        status: 401,
        headers: headers.clone(),
        body: bytes::Bytes::new(),
    }
    .offered_schemes()
}

/// The Negotiate connections of one client.
pub(crate) struct NegotiatePool {
    /// The service in GSSAPI's host-based form, `HTTP@host`.
    service: String,
    free: Slots,
    handshakes: AtomicU64,
}

impl NegotiatePool {
    /// A pool for the service principal `spn` (`HTTP/host`). Fails at once, with
    /// [`Error::Kerberos`], when the GSSAPI library cannot be loaded.
    pub(crate) fn new(spn: &str) -> Result<Self, Error> {
        gssapi::available()?;
        Ok(NegotiatePool {
            service: host_based_name(spn)?,
            free: Slots::default(),
            handshakes: AtomicU64::new(0),
        })
    }

    /// Handshakes started so far.
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
        if result.is_err() {
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
        let Some(conn) = slot.conn.as_mut() else {
            return Err(Error::Connection("no connection".into()));
        };
        if slot.authenticated {
            let response = wire.send_on(conn, wire.request(req, None, true)?).await?;
            if response.status != 401 {
                if response.closes_connection() {
                    slot.authenticated = false;
                }
                return Ok(response);
            }
            debug!("401 on an authenticated Negotiate connection; redoing the handshake once");
            slot.authenticated = false;
            if !conn.is_open() {
                *conn = wire.connect().await?;
            }
        }
        let mut initiator = self.start(conn).await?;
        let mut token = initiator.1;
        for _ in 0..MAX_LEGS {
            let response = wire
                .send_on(conn, wire.request(req, Some(header(&token)?), true)?)
                .await?;
            if (300..400).contains(&response.status) {
                // The server's answer to the request itself (see `ntlm`).
                return Ok(response);
            }
            match self.judge(&mut initiator.0, response.status, &response.headers)? {
                Judged::Done => {
                    slot.authenticated = !response.closes_connection();
                    return Ok(response);
                }
                Judged::Continue(next) => token = next,
            }
            if !conn.is_open() {
                return Err(Error::Connection(
                    "the server closed the connection in the middle of the Negotiate handshake"
                        .into(),
                ));
            }
        }
        Err(self.refused("the handshake did not finish"))
    }

    /// A new context for this connection and its first token. The library may ask the KDC for
    /// a service ticket, so it runs where blocking is allowed.
    async fn start(&self, conn: &DedicatedConnection) -> Result<(Initiator, Vec<u8>), Error> {
        let service = self.service.clone();
        let bindings = conn.tls_end_point().map(<[u8]>::to_vec);
        let n = self.handshakes.fetch_add(1, Ordering::Relaxed) + 1;
        let started = tokio::task::spawn_blocking(move || {
            let mut initiator = Initiator::new(&service, bindings)?;
            let step = initiator.step(None)?;
            Ok::<_, GssError>((initiator, step.token))
        })
        .await
        .map_err(|e| Error::Connection(format!("the Kerberos task failed: {e}")))?;
        match started {
            Ok(started) => {
                if n == 1 {
                    info!(service = %self.service, "obtained a Kerberos ticket for the EWS server");
                }
                Ok(started)
            }
            Err(GssError::LibraryMissing { detail }) => {
                Err(Error::Kerberos(GssError::LibraryMissing { detail }))
            }
            Err(e) => Err(Error::Unauthorized {
                scheme: SCHEME,
                detail: format!(
                    "no Kerberos ticket for {} ({e}); run kinit, or set KRB5CCNAME to a ticket \
                     cache or KRB5_CLIENT_KTNAME to a client keytab",
                    self.service.replacen('@', "/", 1)
                ),
            }),
        }
    }

    /// What an answer to a token means: authenticated (the server's token verified), another
    /// leg, or a typed failure.
    fn judge(
        &self,
        initiator: &mut Initiator,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<Judged, Error> {
        let token = token_of(headers);
        if status == 401 {
            return match token {
                Some(token) if !initiator.is_complete() => {
                    let step = initiator
                        .step(Some(&token))
                        .map_err(|e| self.refused(&e.to_string()))?;
                    if step.token.is_empty() {
                        Err(self.refused("the server asked for another leg the library ends"))
                    } else {
                        Ok(Judged::Continue(step.token))
                    }
                }
                _ => Err(self.refused(&format!(
                    "HTTP 401 to the Kerberos ticket; it offers: {}",
                    offered(headers)
                ))),
            };
        }
        let Some(token) = token else {
            if initiator.is_complete() {
                return Ok(Judged::Done);
            }
            return Err(Error::Unauthorized {
                scheme: SCHEME,
                detail: format!(
                    "the server answered HTTP {status} without a Negotiate token, so it did not \
                     prove its identity (mutual authentication)"
                ),
            });
        };
        let step = initiator
            .step(Some(&token))
            .map_err(|e| Error::Unauthorized {
                scheme: SCHEME,
                detail: format!("the server's mutual-authentication token was rejected: {e}"),
            })?;
        if !step.complete {
            return Err(Error::Unauthorized {
                scheme: SCHEME,
                detail: "the server's answer did not complete mutual authentication".into(),
            });
        }
        Ok(Judged::Done)
    }

    fn refused(&self, why: &str) -> Error {
        Error::Unauthorized {
            scheme: SCHEME,
            detail: format!(
                "the server refused the Kerberos authentication for {} ({why}; wrong service \
                 principal name, missing channel bindings, or an account it does not know)",
                self.service.replacen('@', "/", 1)
            ),
        }
    }

    /// Opens a connection of its own for a streaming response, authenticates it with `req`, and
    /// returns the response once its head (with the server's token) has arrived.
    pub(crate) async fn open_stream(
        &self,
        wire: &Wire,
        req: &SoapRequest<'_>,
    ) -> Result<(http::Response<hyper::body::Incoming>, DedicatedConnection), Error> {
        let mut conn = wire.connect().await?;
        let (mut initiator, mut token) = self.start(&conn).await?;
        for _ in 0..MAX_LEGS {
            let response = wire
                .send_on_streaming(&mut conn, wire.request(req, Some(header(&token)?), true)?)
                .await?;
            match self.judge(
                &mut initiator,
                response.status().as_u16(),
                response.headers(),
            )? {
                Judged::Done => return Ok((response, conn)),
                Judged::Continue(next) => token = next,
            }
        }
        Err(self.refused("the handshake did not finish"))
    }
}

enum Judged {
    Done,
    Continue(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spn_forms_become_host_based_names() {
        assert_eq!(
            host_based_name("HTTP/mail.contoso.com").expect("spn"),
            "HTTP@mail.contoso.com"
        );
        assert_eq!(
            host_based_name("HTTP@mail.contoso.com").expect("spn"),
            "HTTP@mail.contoso.com"
        );
        for bad in ["", "HTTP", "/host", "HTTP/", "HTTP/a/b", "HTTP/a@REALM"] {
            assert!(host_based_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_negotiate_token_is_read_from_www_authenticate() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::WWW_AUTHENTICATE, "NTLM".parse().expect("h"));
        assert_eq!(token_of(&headers), None);
        headers.append(
            http::header::WWW_AUTHENTICATE,
            "Negotiate AQID".parse().expect("h"),
        );
        assert_eq!(token_of(&headers), Some(vec![1, 2, 3]));
    }
}
