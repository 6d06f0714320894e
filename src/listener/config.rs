//! Plain configuration structs of the listener and the admin endpoint, with their defaults.
//!
//! They hold validated values only (addresses, durations, paths); reading a configuration file
//! and environment variables into them is the CLI's job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ListenerError;
use super::secret::ListenerSecret;

/// The default cap on a notification body: 1 MiB. Exchange's notifications are a few KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest `max_body_bytes` accepted: 16 MiB. Exchange's notifications are a few KiB; a
/// larger setting would only let one request hold that much memory.
pub const MAX_BODY_CEILING: usize = 16 * 1024 * 1024;

/// The default public path under which the secret is appended.
pub const DEFAULT_PATH: &str = "/taskbridge/notify";

/// A certificate chain and its private key, both PEM files, for serving HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits that protect a server from slow or greedy clients; shared by the listener and the
/// admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once. When all are taken, the one that has waited for a request head
    /// the longest is closed to make room; connections in the middle of a request are kept, and
    /// only when every one is, new connections wait.
    pub max_connections: usize,
    /// Connections open at once from one IP address; more are closed as soon as accepted.
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake and for each request's head (request line and
    /// headers). It also bounds how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// The head time-out of connections accepted while at least half of `max_connections` are
    /// open (the shorter of the two applies).
    pub pressure_header_timeout: Duration,
    /// Time allowed to receive a whole request body, from the end of the head.
    pub body_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// On shutdown, how long requests in flight may take to finish before they are cut off.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_connections_per_address: 64,
            header_timeout: Duration::from_secs(10),
            pressure_header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerLimits {
    /// Checks the limits, naming the first bad one.
    pub fn validate(&self) -> Result<(), ListenerError> {
        let bad = |what: &str| Err(ListenerError::Config(what.to_string()));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.max_connections_per_address == 0 {
            return bad("max_connections_per_address must be at least 1");
        }
        if self.header_timeout.is_zero() || self.pressure_header_timeout.is_zero() {
            return bad("header_timeout must be longer than zero");
        }
        if self.body_timeout.is_zero() {
            return bad("body_timeout must be longer than zero");
        }
        if self.max_header_bytes < 8192 {
            return bad("max_header_bytes must be at least 8192");
        }
        Ok(())
    }
}

/// Everything the push listener needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Where to listen, e.g. `0.0.0.0:8443` (port 0 picks a free port, for tests).
    pub bind: SocketAddr,
    /// The path prefix; notifications are accepted at `{path}/{secret}` only. Starts with `/`,
    /// no trailing `/`; `/` alone means the secret is the whole path. A reverse proxy in front
    /// must pass the path through unchanged.
    pub path: String,
    /// The per-installation secret, the last path segment.
    pub secret: ListenerSecret,
    /// Serve HTTPS with this certificate; plain HTTP when `None` (behind a TLS-terminating
    /// proxy, or in tests).
    pub tls: Option<TlsFiles>,
    /// Largest notification body accepted; larger ones get 413 (default 1 MiB).
    pub max_body_bytes: usize,
    /// The `Retry-After` sent with a 503 when the handler is busy.
    pub retry_after: Duration,
    /// Connection and time limits.
    pub limits: ServerLimits,
}

impl ListenerConfig {
    /// A configuration with defaults for everything but the address and the secret.
    pub fn new(bind: SocketAddr, secret: ListenerSecret) -> Self {
        ListenerConfig {
            bind,
            path: DEFAULT_PATH.to_string(),
            secret,
            tls: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_after: Duration::from_secs(5),
            limits: ServerLimits::default(),
        }
    }

    /// Checks the configuration, naming the first bad value.
    pub fn validate(&self) -> Result<(), ListenerError> {
        self.limits.validate()?;
        normalized_path(&self.path)?;
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_CEILING {
            return Err(ListenerError::Config(format!(
                "max_body_bytes must be 1 to {MAX_BODY_CEILING}, not {}",
                self.max_body_bytes
            )));
        }
        Ok(())
    }

    /// The exact path notifications are accepted at (`{path}/{secret}`); it contains the
    /// secret, so it is returned as a [`Secret`](crate::secret::Secret).
    pub fn notify_path(&self) -> Result<crate::secret::Secret, ListenerError> {
        let prefix = normalized_path(&self.path)?;
        Ok(crate::secret::Secret::new(format!(
            "{prefix}/{}",
            self.secret.expose()
        )))
    }

    /// The URL to give Exchange in a push subscription: `public_base` (scheme, host, port as
    /// Exchange reaches us, e.g. `https://tb.contoso.com:8443`) followed by the notify path.
    /// It contains the secret, so it is returned as a [`Secret`](crate::secret::Secret).
    pub fn push_url(&self, public_base: &str) -> Result<crate::secret::Secret, ListenerError> {
        let path = self.notify_path()?;
        Ok(crate::secret::Secret::new(format!(
            "{}{}",
            public_base.trim_end_matches('/'),
            path.expose()
        )))
    }
}

/// The path prefix without its trailing slash (`""` for `/`); refuses what is not an absolute
/// path of plain URL characters.
pub(crate) fn normalized_path(path: &str) -> Result<&str, ListenerError> {
    if !path.starts_with('/') {
        return Err(ListenerError::Config(format!(
            "the listener path must start with '/': {path:?}"
        )));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~/".contains(*c)))
    {
        return Err(ListenerError::Config(format!(
            "the listener path may hold letters, digits and -._~/ only, not {c:?}"
        )));
    }
    if path.contains("//") {
        return Err(ListenerError::Config(format!(
            "the listener path has an empty segment: {path:?}"
        )));
    }
    Ok(path.trim_end_matches('/'))
}

/// Everything the admin endpoint needs (besides its routes and metric sources).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to listen, e.g. `127.0.0.1:9090`. Keep it off the internet.
    pub bind: SocketAddr,
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Connection and time limits.
    pub limits: ServerLimits,
}

impl AdminConfig {
    /// A configuration with default limits and plain HTTP.
    pub fn new(bind: SocketAddr) -> Self {
        AdminConfig {
            bind,
            tls: None,
            limits: ServerLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &str) -> ListenerConfig {
        let mut c = ListenerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            ListenerSecret::new("0123456789abcdef0123456789abcdef").expect("secret"),
        );
        c.path = path.into();
        c
    }

    #[test]
    fn listener_path_joins_prefix_and_secret() {
        let c = config("/ews/push/");
        assert_eq!(
            c.notify_path().expect("path").expose(),
            "/ews/push/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            config("/").notify_path().expect("path").expose(),
            "/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            c.push_url("https://tb.contoso.com:8443/")
                .expect("url")
                .expose(),
            "https://tb.contoso.com:8443/ews/push/0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn listener_path_refuses_relative_odd_and_empty_segments() {
        for bad in ["ews", "/ews push", "/ews?x", "/a//b", "/%41"] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        assert!(config("/a/b-c_d.e~f").validate().is_ok());
    }

    #[test]
    fn listener_limits_refuse_zero_values() {
        let mut c = config("/x");
        c.limits.max_connections = 0;
        assert!(c.validate().is_err());
        let mut c = config("/x");
        c.max_body_bytes = 0;
        assert!(c.validate().is_err());
        let mut c = config("/x");
        c.limits.body_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn listener_max_body_bytes_has_a_ceiling() {
        let mut c = config("/x");
        c.max_body_bytes = 999_999_999_999;
        let err = c.validate().expect_err("over the ceiling");
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
        c.max_body_bytes = MAX_BODY_CEILING;
        assert!(c.validate().is_ok());
    }
}
