//! Who is calling and what they may touch: users, authentication and the access rules.
//!
//! Exchange's rules, as the simulator applies them:
//! - a mailbox owner may act on their own mailbox;
//! - the service account (the one with the ApplicationImpersonation role) may act on any mailbox
//!   by naming it in `ExchangeImpersonation`;
//! - anyone else who sends `ExchangeImpersonation` gets an ErrorImpersonateUserDenied fault, and
//!   touching another mailbox without impersonation gets ErrorAccessDenied per item.
//!
//! With `--auth none` nobody logs in and the caller may act on any mailbox, as if it were the
//! service account.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::ntlm_server;
use taskbridge_ews::transport::auth::gssapi::{Acceptor, AcceptorCredential};

/// How clients authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication; every caller may act on every mailbox.
    #[default]
    None,
    /// HTTP Basic, checked on every request.
    Basic,
    /// NTLM (NTLMv2 verified against the password); authenticates the TCP connection.
    Ntlm,
    /// Negotiate: Kerberos tickets for the keytab's service, through the system's GSSAPI;
    /// authenticates the TCP connection. The ticket's principal (`user@REALM`) is matched to an
    /// account as a logon name.
    Negotiate,
}

/// A password; `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An account of the simulated organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// Primary SMTP address (also the logon name).
    pub smtp: String,
    /// The password.
    pub password: Password,
    /// Whether the account holds the impersonation right (the service account). A service
    /// account has no mailbox of its own.
    pub service: bool,
}

impl UserSpec {
    /// Parses `smtp:password` (the password may contain colons).
    pub fn parse(spec: &str, service: bool) -> Result<Self, String> {
        let (smtp, password) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?} is not smtp:password"))?;
        let smtp = smtp.trim();
        if !smtp.contains('@') {
            return Err(format!("{smtp:?} is not an SMTP address"));
        }
        Ok(UserSpec {
            smtp: smtp.to_ascii_lowercase(),
            password: Password::new(password),
            service,
        })
    }
}

#[derive(serde::Deserialize)]
struct JsonUser {
    smtp: String,
    password: String,
    #[serde(default)]
    service: bool,
}

/// Reads a users file: a JSON array of `{"smtp", "password", "service"}` objects, or lines of
/// `smtp:password` (blank lines and `#` comments are skipped).
pub fn parse_users_file(text: &str) -> Result<Vec<UserSpec>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let users: Vec<JsonUser> =
            serde_json::from_str(trimmed).map_err(|e| format!("invalid users JSON: {e}"))?;
        return users
            .into_iter()
            .map(|u| UserSpec::parse(&format!("{}:{}", u.smtp, u.password), u.service))
            .collect();
    }
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| UserSpec::parse(l, false).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The account's address; `None` with `--auth none`.
    pub user: Option<String>,
    /// Whether the caller may impersonate (the service account, or anyone with `--auth none`).
    pub may_impersonate: bool,
    /// Whether the caller may touch any mailbox without impersonation (`--auth none` only).
    pub unrestricted: bool,
}

impl Caller {
    /// The caller of an unauthenticated simulator.
    pub fn anonymous() -> Self {
        Caller {
            user: None,
            may_impersonate: true,
            unrestricted: true,
        }
    }

    /// The name written in LastModifiedName and logs.
    pub fn name(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }
}

/// The accounts, by lower-case address and by logon name.
#[derive(Debug, Default)]
pub struct Users {
    by_smtp: HashMap<String, UserSpec>,
}

impl Users {
    /// The users of a configuration (a later entry for the same address wins).
    pub fn new(specs: &[UserSpec]) -> Self {
        Users {
            by_smtp: specs
                .iter()
                .map(|u| (u.smtp.to_ascii_lowercase(), u.clone()))
                .collect(),
        }
    }

    /// Finds an account by address, `user@domain`, `DOMAIN\user` or bare user name.
    pub fn find(&self, name: &str) -> Option<&UserSpec> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(u) = self.by_smtp.get(&name) {
            return Some(u);
        }
        let local = match name.split_once('\\') {
            Some((_, user)) => user.to_string(),
            None => name.split('@').next().unwrap_or(&name).to_string(),
        };
        let mut hits = self
            .by_smtp
            .values()
            .filter(|u| u.smtp.split('@').next() == Some(local.as_str()));
        match (hits.next(), hits.next()) {
            (Some(u), None) => Some(u),
            _ => None,
        }
    }

    /// The caller for a known account.
    pub fn caller(&self, user: &UserSpec) -> Caller {
        Caller {
            user: Some(user.smtp.clone()),
            may_impersonate: user.service,
            unrestricted: false,
        }
    }

    /// Checks an `Authorization: Basic ...` header value.
    pub fn check_basic(&self, header: &str) -> Option<Caller> {
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let user = self.find(name)?;
        let ok: bool = user
            .password
            .expose()
            .as_bytes()
            .ct_eq(password.as_bytes())
            .into();
        ok.then(|| self.caller(user))
    }

    /// The password of an account, for NTLM verification.
    pub fn password_of(&self, user: &str, domain: &str) -> Option<String> {
        let name = if domain.is_empty() || user.contains('@') {
            user.to_string()
        } else {
            format!("{domain}\\{user}")
        };
        self.find(&name)
            .or_else(|| self.find(user))
            .map(|u| u.password.expose().to_string())
    }

    /// The accounts that own a mailbox (all but service accounts).
    pub fn mailbox_owners(&self) -> Vec<&UserSpec> {
        let mut v: Vec<_> = self.by_smtp.values().filter(|u| !u.service).collect();
        v.sort_by(|a, b| a.smtp.cmp(&b.smtp));
        v
    }
}

/// The NTLM handshake state of one connection.
#[derive(Debug, Default)]
pub struct NtlmState {
    /// The caller, once the connection is authenticated.
    pub caller: Option<Caller>,
    /// The CHALLENGE sent on this connection, until the AUTHENTICATE arrives.
    pending: Option<ntlm_server::ServerChallenge>,
}

/// The `WWW-Authenticate` value that starts an NTLM handshake.
const NTLM_OFFER: &str = "NTLM";

/// One step of the NTLM handshake on a connection: the caller once authenticated, or the
/// `WWW-Authenticate` value of the 401 to answer (`NTLM` to start, `NTLM <challenge>` after a
/// NEGOTIATE).
///
/// NTLM authenticates the TCP connection: after a successful AUTHENTICATE, later requests on
/// the same connection need no `Authorization` header. A new NEGOTIATE starts over.
pub(crate) fn ntlm_step(
    users: &Users,
    conn: &ConnState,
    authorization: Option<&str>,
    extended_protection: ntlm_server::ExtendedProtection,
) -> Result<Caller, String> {
    let mut state = conn.ntlm.lock().unwrap_or_else(|e| e.into_inner());
    let token = authorization.and_then(ntlm_server::decode_authorization);
    let Some(token) = token else {
        return state.caller.clone().ok_or_else(|| NTLM_OFFER.to_string());
    };
    match ntlm_server::message_type(&token) {
        Ok(1) => {
            state.caller = None;
            match ntlm_server::challenge(&token) {
                Ok(ch) => {
                    let header = ch.www_authenticate();
                    state.pending = Some(ch);
                    Err(header)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad NTLM NEGOTIATE");
                    Err(NTLM_OFFER.to_string())
                }
            }
        }
        Ok(3) => {
            let Some(ch) = state.pending.take() else {
                return Err(NTLM_OFFER.to_string());
            };
            let verified = ntlm_server::verify_bound(
                &ch,
                &token,
                |user, domain| users.password_of(user, domain),
                extended_protection,
                conn.channel,
            );
            match verified {
                Ok(id) => {
                    let name = if id.domain.is_empty() || id.user.contains('@') {
                        id.user.clone()
                    } else {
                        format!("{}\\{}", id.domain, id.user)
                    };
                    let user = users.find(&name).or_else(|| users.find(&id.user));
                    match user {
                        Some(u) => {
                            let caller = users.caller(u);
                            state.caller = Some(caller.clone());
                            Ok(caller)
                        }
                        None => Err(NTLM_OFFER.to_string()),
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "NTLM authentication refused");
                    Err(NTLM_OFFER.to_string())
                }
            }
        }
        _ => Err(NTLM_OFFER.to_string()),
    }
}

/// Per-connection authentication state: NTLM and Negotiate authenticate the TCP connection,
/// not a request.
#[derive(Debug)]
pub(crate) struct ConnState {
    // A std Mutex: read and written between awaits only.
    pub ntlm: std::sync::Mutex<NtlmState>,
    // Likewise.
    pub negotiate: std::sync::Mutex<NegotiateState>,
    /// The TLS channel's bindings (from our certificate); `None` over plain HTTP.
    pub channel: Option<taskbridge_ews::transport::channel_binding::ChannelBindings>,
    /// The same bindings' application data (`tls-server-end-point:` + certificate hash).
    pub end_point: Option<std::sync::Arc<[u8]>>,
}

/// The Negotiate state of one connection.
#[derive(Debug, Default)]
pub struct NegotiateState {
    /// The caller, once the connection is authenticated.
    caller: Option<Caller>,
    /// A handshake that needs another leg.
    pending: Option<Acceptor>,
    /// The token for the response to the request that completed the handshake.
    reply: Option<String>,
}

/// The `WWW-Authenticate` value that asks for Negotiate.
pub(crate) const NEGOTIATE_OFFER: &str = "Negotiate";

/// The `WWW-Authenticate` value (`Negotiate <token>`) the response to the current request must
/// carry, once.
pub(crate) fn take_negotiate_reply(conn: &ConnState) -> Option<String> {
    conn.negotiate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reply
        .take()
}

/// One step of Negotiate on a connection: the caller once authenticated, or the
/// `WWW-Authenticate` value of the 401 to answer.
///
/// The ticket is checked by GSSAPI against `keys`, with the channel bindings of the TLS
/// listener. GSSAPI itself refuses bindings that differ from the channel's; an initiator that
/// sent none passes GSSAPI without `GSS_C_CHANNEL_BOUND_FLAG` (MIT krb5 1.19 and later), and
/// is refused here under `Require`, as IIS refuses it when Extended Protection is required.
/// A ticket for a principal with no account here is refused like a bad one.
pub(crate) fn negotiate_step(
    users: &Users,
    keys: &std::sync::Arc<AcceptorCredential>,
    conn: &ConnState,
    authorization: Option<&str>,
    extended_protection: ntlm_server::ExtendedProtection,
) -> Result<Caller, String> {
    let mut state = conn.negotiate.lock().unwrap_or_else(|e| e.into_inner());
    let token = authorization.and_then(|h| {
        let (scheme, token) = h.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("Negotiate") {
            return None;
        }
        STANDARD.decode(token.trim()).ok()
    });
    let Some(token) = token else {
        return state
            .caller
            .clone()
            .ok_or_else(|| NEGOTIATE_OFFER.to_string());
    };
    state.caller = None;
    // Under `None` the channel is not checked at all, as IIS does with Extended Protection off.
    let bindings = match extended_protection {
        ntlm_server::ExtendedProtection::None => None,
        _ => conn.end_point.as_ref().map(|d| d.to_vec()),
    };
    let mut acceptor = state
        .pending
        .take()
        .unwrap_or_else(|| keys.acceptor(bindings));
    let accepted = match acceptor.step(&token) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "Negotiate authentication refused");
            return Err(NEGOTIATE_OFFER.to_string());
        }
    };
    let reply = (!accepted.token.is_empty())
        .then(|| format!("Negotiate {}", STANDARD.encode(&accepted.token)));
    if !accepted.complete {
        state.pending = Some(acceptor);
        return Err(reply.unwrap_or_else(|| NEGOTIATE_OFFER.to_string()));
    }
    if extended_protection == ntlm_server::ExtendedProtection::Require
        && conn.end_point.is_some()
        && !accepted.channel_bound
    {
        tracing::info!(
            client = %accepted.client,
            "Negotiate authentication refused: no channel bindings under Extended Protection"
        );
        return Err(NEGOTIATE_OFFER.to_string());
    }
    let Some(user) = users.find(&accepted.client) else {
        tracing::info!(client = %accepted.client, "Kerberos principal without an account");
        return Err(NEGOTIATE_OFFER.to_string());
    };
    let caller = users.caller(user);
    state.caller = Some(caller.clone());
    state.reply = reply;
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_reads_json_and_lines() {
        let json = r#"[{"smtp":"Ann@Example.com","password":"a:b"},{"smtp":"svc@example.com","password":"s","service":true}]"#;
        let users = parse_users_file(json).expect("json");
        assert_eq!(users[0].smtp, "ann@example.com");
        assert_eq!(users[0].password.expose(), "a:b");
        assert!(users[1].service);
        let lines = parse_users_file("# people\nann@example.com:pw\n\nbob@example.com:x:y\n")
            .expect("lines");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].password.expose(), "x:y");
        assert!(parse_users_file("nobody").is_err());
        assert_eq!(format!("{:?}", lines[0].password), "***");
    }

    #[test]
    fn basic_checks_password_and_finds_by_logon_name() {
        let users = Users::new(&parse_users_file("ann@example.com:pw").expect("users"));
        let header = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(users.check_basic(&header("ann@example.com:pw")).is_some());
        assert!(users.check_basic(&header("EXAMPLE\\ann:pw")).is_some());
        assert!(users.check_basic(&header("ann@example.com:bad")).is_none());
        assert!(users.check_basic(&header("bob@example.com:pw")).is_none());
    }
}
