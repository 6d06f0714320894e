//! Server affinity for notification subscriptions, as Exchange 2013 and later require it.
//!
//! A subscription lives on one Mailbox server (a backend); the Client Access server in front
//! routes each request by its `X-AnchorMailbox`, and a request for a subscription that reaches
//! another backend finds nothing there (ErrorSubscriptionNotFound). So a Subscribe carries
//! `X-AnchorMailbox` and `X-PreferServerAffinity: true`, Exchange answers with an
//! `X-BackEndOverrideCookie` cookie naming the backend, and every later request for that
//! backend's subscriptions (GetStreamingEvents above all) sends the cookie back. Subscriptions
//! of mailboxes on different backends never share a GetStreamingEvents connection.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The header naming the mailbox a request is routed by.
pub const ANCHOR_MAILBOX: &str = "X-AnchorMailbox";
/// The header by which a Subscribe asks for the backend cookie.
pub const PREFER_SERVER_AFFINITY: &str = "X-PreferServerAffinity";
/// The name of the cookie that names the backend.
pub const BACKEND_OVERRIDE_COOKIE: &str = "X-BackEndOverrideCookie";

/// `X-PreferServerAffinity: true`, for a Subscribe request.
pub fn prefer_server_affinity() -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-preferserveraffinity"),
        HeaderValue::from_static("true"),
    )
}

/// Whether a request asked for server affinity (`X-PreferServerAffinity: true`).
pub fn prefers_affinity(headers: &HeaderMap) -> bool {
    headers
        .get(PREFER_SERVER_AFFINITY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The value of an `X-BackEndOverrideCookie`: which backend holds a group's subscriptions.
/// Opaque to the client; two equal values name the same backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendCookie(String);

impl BackendCookie {
    /// A cookie value; `None` when it is empty or holds a character a cookie value cannot
    /// (RFC 6265 cookie-octets: no space, quote, comma, semicolon or backslash).
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let fine = !value.is_empty()
            && value
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E));
        fine.then_some(BackendCookie(value))
    }

    /// The value as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cookie a response sets (`Set-Cookie: X-BackEndOverrideCookie=...`), if any.
    pub fn from_response(headers: &HeaderMap) -> Option<Self> {
        headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                // Only the first pair is the cookie; the rest are attributes (path, expiry).
                let pair = v.split(';').next()?;
                Self::named(pair)
            })
    }

    /// The cookie a request carries (`Cookie: a=b; X-BackEndOverrideCookie=...`), if any.
    pub fn from_request(headers: &HeaderMap) -> Option<Self> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(Self::named)
    }

    fn named(pair: &str) -> Option<Self> {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case(BACKEND_OVERRIDE_COOKIE) {
            return None;
        }
        Self::new(value.trim().trim_matches('"'))
    }

    /// The `Cookie` header that sends it back with a request.
    pub fn request_header(&self) -> (HeaderName, HeaderValue) {
        (
            header::COOKIE,
            HeaderValue::from_str(&format!("{BACKEND_OVERRIDE_COOKIE}={}", self.0))
                .expect("cookie-octets make a valid header value"),
        )
    }

    /// The `Set-Cookie` header value a server answers a Subscribe with.
    pub fn set_cookie_header(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{BACKEND_OVERRIDE_COOKIE}={}; path=/; HttpOnly",
            self.0
        ))
        .expect("cookie-octets make a valid header value")
    }
}

impl std::fmt::Display for BackendCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_from_set_cookie_among_others_and_sent_back() {
        let mut response = HeaderMap::new();
        response.append(
            header::SET_COOKIE,
            "exchangecookie=abc; path=/".parse().unwrap(),
        );
        response.append(
            header::SET_COOKIE,
            "X-BackEndOverrideCookie=MBX02.contoso.com~1942062522; path=/; HttpOnly"
                .parse()
                .unwrap(),
        );
        let cookie = BackendCookie::from_response(&response).expect("cookie");
        assert_eq!(cookie.as_str(), "MBX02.contoso.com~1942062522");
        let (name, value) = cookie.request_header();
        let mut request = HeaderMap::new();
        request.insert(header::COOKIE, "other=1".parse().unwrap());
        request.append(name, value);
        assert_eq!(BackendCookie::from_request(&request), Some(cookie));
        // Both in one Cookie header, as browsers join them.
        let mut joined = HeaderMap::new();
        joined.insert(
            header::COOKIE,
            "a=1; x-backendoverridecookie=MBX01~1".parse().unwrap(),
        );
        assert_eq!(
            BackendCookie::from_request(&joined).map(|c| c.0),
            Some("MBX01~1".into())
        );
    }

    #[test]
    fn no_cookie_or_a_bad_value_is_none() {
        assert_eq!(BackendCookie::from_response(&HeaderMap::new()), None);
        let mut response = HeaderMap::new();
        response.insert(
            header::SET_COOKIE,
            "X-BackEndOverrideCookie=; path=/".parse().unwrap(),
        );
        assert_eq!(BackendCookie::from_response(&response), None);
        assert_eq!(BackendCookie::new("a b"), None);
        assert_eq!(BackendCookie::new("a;b"), None);
        assert!(BackendCookie::new("MBX01~15").is_some());
    }

    #[test]
    fn prefer_affinity_is_read_case_blind() {
        let mut h = HeaderMap::new();
        assert!(!prefers_affinity(&h));
        h.insert("x-preferserveraffinity", "True".parse().unwrap());
        assert!(prefers_affinity(&h));
        h.insert("x-preferserveraffinity", "false".parse().unwrap());
        assert!(!prefers_affinity(&h));
    }
}
