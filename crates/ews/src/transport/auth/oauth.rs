//! OAuth 2.0 bearer tokens: a static token, or the client-credentials grant against a token
//! endpoint, cached and refreshed before it expires.
//!
//! The refresh is single-flight: the cache sits behind an async mutex that is held during the
//! token request, so many calls finding an expired token cause one request, not one each.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/how-to-authenticate-an-ews-application-by-using-oauth>.

use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::error::Error;
use crate::secret::Secret;
use crate::transport::http::classify;

/// Lifetime assumed when the token endpoint does not say (`expires_in` missing).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Refresh at most this long before expiry...
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// ...and at least a tenth of the lifetime before it.
const MARGIN_DIVISOR: u32 = 10;
/// Longest lifetime believed: a token endpoint that says more (or an absurd `expires_in`, which
/// would overflow the clock arithmetic) gets the token refreshed after a day anyway.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// A token as handed to a request, with the generation it came from.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub value: Secret,
    pub generation: u64,
    /// Whether this call fetched it (a 401 with a fresh token is final).
    pub fresh: bool,
}

impl Token {
    /// The `Authorization` value, marked sensitive.
    pub(crate) fn header(&self) -> Result<HeaderValue, Error> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value.expose()))
            .map_err(|_| Error::Config("the bearer token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Where bearer tokens come from.
pub(crate) enum TokenSource {
    /// A token given in the configuration, used as is.
    Static(Secret),
    /// The client-credentials grant.
    ClientCredentials(Box<ClientCredentials>),
}

/// The client-credentials grant and its cached token.
pub(crate) struct ClientCredentials {
    token_url: reqwest::Url,
    client_id: String,
    client_secret: Secret,
    scope: String,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    token: Option<(Secret, Instant)>,
    generation: u64,
    fetches: u64,
}

impl TokenSource {
    /// A token to send now.
    pub(crate) async fn token(&self) -> Result<Token, Error> {
        match self {
            TokenSource::Static(value) => Ok(Token {
                value: value.clone(),
                generation: 0,
                fresh: false,
            }),
            TokenSource::ClientCredentials(cc) => cc.token().await,
        }
    }

    /// Forgets the token of `generation` after the server refused it, so that the next call
    /// fetches a new one. Returns whether there is anything to refresh.
    pub(crate) async fn invalidate(&self, generation: u64) -> bool {
        match self {
            TokenSource::Static(_) => false,
            TokenSource::ClientCredentials(cc) => {
                let mut cache = cc.cache.lock().await;
                if cache.generation == generation {
                    cache.token = None;
                }
                true
            }
        }
    }

    /// Tokens fetched from the token endpoint so far.
    pub(crate) async fn fetches(&self) -> u64 {
        match self {
            TokenSource::Static(_) => 0,
            TokenSource::ClientCredentials(cc) => cc.cache.lock().await.fetches,
        }
    }
}

impl ClientCredentials {
    pub(crate) fn new(
        token_url: &str,
        client_id: String,
        client_secret: Secret,
        scope: String,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        let token_url = reqwest::Url::parse(token_url)
            .map_err(|e| Error::Config(format!("invalid OAuth token URL {token_url:?}: {e}")))?;
        // The client secret goes in the request body: never in plain text off this machine.
        let plain_loopback =
            token_url.scheme() == "http" && crate::transport::http::is_loopback(&token_url);
        if token_url.scheme() != "https" && !plain_loopback {
            return Err(Error::Config(format!(
                "the OAuth token URL must be https (http only on loopback), not {}://{}",
                token_url.scheme(),
                token_url.host_str().unwrap_or("")
            )));
        }
        Ok(ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            http,
            cache: tokio::sync::Mutex::default(),
        })
    }

    async fn token(&self) -> Result<Token, Error> {
        // Held across the fetch on purpose: this is what makes the refresh single-flight.
        let mut cache = self.cache.lock().await;
        if let Some((value, refresh_at)) = &cache.token
            && Instant::now() < *refresh_at
        {
            return Ok(Token {
                value: value.clone(),
                generation: cache.generation,
                fresh: false,
            });
        }
        let (value, lifetime) = self.fetch().await?;
        let margin = (lifetime / MARGIN_DIVISOR).min(MAX_MARGIN);
        let refresh_at = refresh_time(Instant::now(), lifetime, margin);
        cache.generation += 1;
        cache.fetches += 1;
        cache.token = Some((value.clone(), refresh_at));
        info!(
            client_id = %self.client_id,
            lifetime_s = lifetime.as_secs(),
            "obtained an OAuth access token"
        );
        Ok(Token {
            value,
            generation: cache.generation,
            fresh: true,
        })
    }

    async fn fetch(&self) -> Result<(Secret, Duration), Error> {
        debug!(url = %self.token_url, "requesting an OAuth token (client credentials)");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let mut response = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(Error::Http {
                    status,
                    detail: "the token endpoint's answer is too large".into(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        token_response(status, &body, &self.client_id, &self.client_secret)
    }
}

/// Reads the token endpoint's answer: the access token and its lifetime (bounded), or the
/// refusal as an error whose server-provided text is masked and bounded. Nothing in `body` is
/// trusted: any bytes give a value or an error, never a panic.
pub(crate) fn token_response(
    status: u16,
    body: &[u8],
    client_id: &str,
    client_secret: &Secret,
) -> Result<(Secret, Duration), Error> {
    // The body holds the access token: it is parsed, never logged.
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if !(200..300).contains(&status) {
        // The endpoint's text is not ours: it may repeat what was posted (the secret), or
        // carry line breaks and terminal escapes into logs. Printable, short, secret-free.
        let field = |name: &str, max: usize| {
            let raw = json.get(name).and_then(|v| v.as_str()).unwrap_or("");
            sanitize_server_text(raw, client_secret.expose(), max)
        };
        let detail = format!(
            "the token endpoint refused the client credentials of {}: {} {}",
            client_id,
            field("error", 64),
            field("error_description", MAX_SERVER_TEXT)
        );
        return Err(if (400..500).contains(&status) {
            Error::Unauthorized {
                scheme: "oauth",
                detail: detail.trim_end().to_string(),
            }
        } else {
            Error::Http { status, detail }
        });
    }
    let Some(token) = json.get("access_token").and_then(|v| v.as_str()) else {
        return Err(Error::Unauthorized {
            scheme: "oauth",
            detail: "the token endpoint's answer has no access_token".into(),
        });
    };
    // Azure AD v1 sends expires_in as a string, v2 as a number.
    let lifetime = match json.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .map(|secs| Duration::from_secs(secs).min(MAX_LIFETIME))
    .unwrap_or(DEFAULT_LIFETIME);
    Ok((Secret::new(token), lifetime))
}

/// The most characters of an error description a token endpoint gets into our errors.
const MAX_SERVER_TEXT: usize = 200;

/// Server-provided text made safe to show: `secret` replaced by `***`, control characters (line
/// breaks, escapes) by spaces, cut at `max` characters with `...`.
pub(crate) fn sanitize_server_text(raw: &str, secret: &str, max: usize) -> String {
    let masked = if secret.is_empty() {
        raw.to_string()
    } else {
        raw.replace(secret, "***")
    };
    let mut out = String::new();
    for (n, c) in masked.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// When to fetch a new token: `margin` before the end of `lifetime` from `now`. The lifetime comes
/// from the token endpoint, so the sum is checked: a time the clock cannot hold means "refresh
/// after [`MAX_LIFETIME`]" rather than a panic.
fn refresh_time(now: Instant, lifetime: Duration, margin: Duration) -> Instant {
    let wait = lifetime.min(MAX_LIFETIME).saturating_sub(margin);
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX_LIFETIME))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_server_text_is_masked_printable_and_bounded() {
        let text = sanitize_server_text("bad s3cr3t\r\nX: y\u{1b}[31m", "s3cr3t", 200);
        assert_eq!(text, "bad ***  X: y [31m");
        assert_eq!(sanitize_server_text(&"a".repeat(300), "", 5), "aaaaa...");
    }

    #[test]
    fn oauth_refresh_time_of_an_absurd_lifetime_is_bounded_not_a_panic() {
        let now = Instant::now();
        let at = refresh_time(now, Duration::MAX, MAX_MARGIN);
        assert_eq!(at, now + MAX_LIFETIME - MAX_MARGIN);
        let at = refresh_time(now, Duration::from_secs(100), Duration::from_secs(10));
        assert_eq!(at, now + Duration::from_secs(90));
    }
}
