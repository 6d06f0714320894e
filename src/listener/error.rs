//! Errors of the listener layer: configuration, the secret file, TLS material, binding.
//!
//! Hostile or broken requests are not errors of the layer: they are answered (400, 404, 413,
//! ...) and counted; the server goes on.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a listener or admin server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// A configuration value is invalid.
    #[error("listener configuration: {0}")]
    Config(String),
    /// The secret file could not be read or written.
    #[error("listener secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A secret (from a file or the configuration) is too short or holds characters that do
    /// not belong in a URL path. The value itself is never part of the message.
    #[error("listener secret{}: {reason}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    InvalidSecret {
        /// The file it came from, if any.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The certificate or key file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

impl From<crate::ews::server::ServerError> for ListenerError {
    fn from(e: crate::ews::server::ServerError) -> Self {
        use crate::ews::server::ServerError;
        match e {
            ServerError::Config(what) => ListenerError::Config(what),
            ServerError::Tls(what) => ListenerError::Tls(what),
            ServerError::Bind { addr, source } => ListenerError::Bind { addr, source },
            other => ListenerError::Config(other.to_string()),
        }
    }
}
