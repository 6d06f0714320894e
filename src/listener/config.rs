//! Plain configuration structs of the listener and the admin endpoint, with their defaults.
//!
//! They hold validated values only (addresses, durations, paths); reading a configuration file
//! and environment variables into them is the CLI's job.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::ews::server::{ServerLimits, TlsFiles};

use super::error::ListenerError;
use super::secret::ListenerSecret;

/// The default cap on a notification body: 1 MiB. Exchange's notifications are a few KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest `max_body_bytes` accepted: 16 MiB. Exchange's notifications are a few KiB; a
/// larger setting would only let one request hold that much memory.
pub const MAX_BODY_CEILING: usize = 16 * 1024 * 1024;

/// The default public path under which the secret is appended.
pub const DEFAULT_PATH: &str = "/taskbridge/notify";

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
