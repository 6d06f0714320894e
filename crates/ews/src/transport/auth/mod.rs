//! Authentication: the configured scheme ([`Auth`]) and how each one puts a request on the wire.
//!
//! - Basic and bearer add an `Authorization` header to each request over the pooled client.
//! - NTLM authenticates dedicated connections (`ntlm`), with channel bindings and a MIC for
//!   Extended Protection (`ntlm_message`).
//! - OAuth client credentials fetches and refreshes bearer tokens (`oauth`).
//! - Negotiate (Kerberos through SPNEGO) authenticates dedicated connections (`negotiate`),
//!   through the system's GSSAPI loaded at run time ([`gssapi`], also the simulator's acceptor).
//!
//! A 401 is final for every scheme except two one-time repairs: NTLM (and Negotiate) redoes the handshake once
//! on a connection it had authenticated before, and OAuth fetches a new token once when a cached
//! token is refused. Credentials are never retried blindly, so an account is never locked out.
//!
//! The acceptor half of NTLM lives with the simulator (`taskbridge_sim::ntlm_server`).

pub(crate) mod basic;
pub mod gssapi;
pub(crate) mod negotiate;
pub(crate) mod ntlm;
pub mod ntlm_message;
pub(crate) mod oauth;

use http::HeaderValue;

use crate::error::Error;
use crate::secret::Secret;
use crate::transport::http::{DedicatedConnection, HttpResponse, SoapRequest, Wire};

/// How the client authenticates to the EWS endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication (test servers only).
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// The user name, e.g. `CONTOSO\svc-taskbridge` or `svc-taskbridge@contoso.com`.
        user: String,
        /// The password.
        password: Secret,
    },
    /// NTLMv2 on dedicated connections.
    Ntlm {
        /// `DOMAIN\user` or `user@domain`.
        user: String,
        /// The password.
        password: Secret,
    },
    /// Negotiate (Kerberos through SPNEGO) on dedicated connections, with the process's
    /// Kerberos credentials (ticket cache `KRB5CCNAME` or client keytab `KRB5_CLIENT_KTNAME`).
    Negotiate {
        /// The service principal name, `HTTP/host`; `None` means `HTTP/<host of the EWS URL>`.
        spn: Option<String>,
    },
    /// A static OAuth bearer token.
    Bearer {
        /// The access token.
        token: Secret,
    },
    /// OAuth 2.0 client credentials: tokens fetched from `token_url` and refreshed before they
    /// expire.
    OAuthClientCredentials {
        /// The token endpoint, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
        token_url: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// The scope, e.g. `https://outlook.office365.com/.default`.
        scope: String,
    },
}

impl Auth {
    /// The scheme's short name: `none`, `basic`, `ntlm`, `negotiate`, `bearer` or `oauth`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Ntlm { .. } => "ntlm",
            Auth::Negotiate { .. } => "negotiate",
            Auth::Bearer { .. } => "bearer",
            Auth::OAuthClientCredentials { .. } => "oauth",
        }
    }
}

/// Reads a token endpoint's answer (HTTP `status` and `body`) as the OAuth client-credentials
/// flow does: the access token and the lifetime it will be cached for, or the refusal as an
/// error. For fuzzing and tests; the client calls the same code.
pub fn parse_oauth_token_response(
    status: u16,
    body: &[u8],
    client_id: &str,
    client_secret: &Secret,
) -> Result<(Secret, std::time::Duration), Error> {
    oauth::token_response(status, body, client_id, client_secret)
}

/// The runtime state of the configured scheme.
pub(crate) enum Authenticator {
    None,
    Basic(HeaderValue),
    Ntlm(ntlm::NtlmPool),
    Negotiate(negotiate::NegotiatePool),
    Bearer(oauth::TokenSource),
}

impl Authenticator {
    /// Prepares `auth` for `endpoint`; `http` is the pooled client (also used for the token
    /// endpoint).
    pub(crate) fn new(
        auth: &Auth,
        endpoint: &reqwest::Url,
        http: &reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(match auth {
            Auth::None => Authenticator::None,
            Auth::Basic { user, password } => Authenticator::Basic(basic::header(user, password)?),
            Auth::Ntlm { user, password } => Authenticator::Ntlm(ntlm::NtlmPool::new(
                ntlm::NtlmCredentials::new(user, password.clone())?,
            )),
            Auth::Negotiate { spn } => {
                let spn = match spn {
                    Some(spn) => spn.clone(),
                    None => format!(
                        "HTTP/{}",
                        endpoint
                            .host_str()
                            .ok_or_else(|| Error::Config("the endpoint URL has no host".into()))?
                    ),
                };
                Authenticator::Negotiate(negotiate::NegotiatePool::new(&spn)?)
            }
            Auth::Bearer { token } => {
                Authenticator::Bearer(oauth::TokenSource::Static(token.clone()))
            }
            Auth::OAuthClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Authenticator::Bearer(oauth::TokenSource::ClientCredentials(Box::new(
                oauth::ClientCredentials::new(
                    token_url,
                    client_id.clone(),
                    client_secret.clone(),
                    scope.clone(),
                    http.clone(),
                )?,
            ))),
        })
    }

    /// Sends `req` authenticated. A 401 that the scheme cannot repair comes back as
    /// [`Error::Unauthorized`], never as a response.
    pub(crate) async fn send(
        &self,
        wire: &Wire,
        scheme: &'static str,
        req: &SoapRequest<'_>,
    ) -> Result<HttpResponse, Error> {
        let response = match self {
            Authenticator::None => wire.send_pooled(wire.request(req, None, true)?).await?,
            Authenticator::Basic(header) => {
                wire.send_pooled(wire.request(req, Some(header.clone()), true)?)
                    .await?
            }
            Authenticator::Ntlm(pool) => pool.send(wire, req).await?,
            Authenticator::Negotiate(pool) => pool.send(wire, req).await?,
            Authenticator::Bearer(source) => {
                let token = source.token().await?;
                let response = wire
                    .send_pooled(wire.request(req, Some(token.header()?), true)?)
                    .await?;
                if response.status == 401
                    && !token.fresh
                    && source.invalidate(token.generation).await
                {
                    tracing::debug!("cached OAuth token refused; fetching a new one once");
                    let token = source.token().await?;
                    wire.send_pooled(wire.request(req, Some(token.header()?), true)?)
                        .await?
                } else {
                    response
                }
            }
        };
        if response.status == 401 {
            return Err(Error::Unauthorized {
                scheme,
                detail: match self {
                    Authenticator::None => format!(
                        "the server requires authentication (it offers: {})",
                        response.offered_schemes()
                    ),
                    _ => format!(
                        "the server refused the credentials (HTTP 401; it offers: {})",
                        response.offered_schemes()
                    ),
                },
            });
        }
        Ok(response)
    }

    /// NTLM or Negotiate handshakes so far (0 for other schemes).
    pub(crate) fn ntlm_handshakes(&self) -> u64 {
        match self {
            Authenticator::Ntlm(pool) => pool.handshakes(),
            Authenticator::Negotiate(pool) => pool.handshakes(),
            _ => 0,
        }
    }

    /// OAuth tokens fetched so far (0 for other schemes).
    pub(crate) async fn token_fetches(&self) -> u64 {
        match self {
            Authenticator::Bearer(source) => source.fetches().await,
            _ => 0,
        }
    }
}

/// One in-flight slot of a connection-authenticating scheme (NTLM, Negotiate): a connection and
/// whether it is authenticated.
pub(crate) struct Slot {
    pub(crate) conn: Option<DedicatedConnection>,
    pub(crate) authenticated: bool,
}

/// The free slots of one client's connection-authenticating scheme. A std Mutex: held only to
/// push or pop a slot, never across an await. The limiter caps requests in flight, so the
/// number of slots never exceeds `total_in_flight`.
#[derive(Default)]
pub(crate) struct Slots {
    free: std::sync::Mutex<Vec<Slot>>,
}

impl Slots {
    /// A free slot, an authenticated one first (they are kept at the end).
    pub(crate) fn take(&self) -> Slot {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.pop().unwrap_or(Slot {
            conn: None,
            authenticated: false,
        })
    }

    /// Returns a slot: authenticated at the end, to be used first; others at the front.
    pub(crate) fn put_back(&self, slot: Slot) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if slot.authenticated {
            free.push(slot);
        } else {
            free.insert(0, slot);
        }
    }
}
