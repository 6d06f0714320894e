//! Errors of an EWS call: SOAP faults, decoding, and the transport. The XML-level
//! [`DecodeError`] is defined with the codec in [`crate::xml`] and re-exported here.

use std::time::Duration;

use crate::soap::Fault;
pub use crate::xml::DecodeError;

/// Errors of an EWS call.
///
/// A per-item failure inside a batch is not an error: it is a `ResponseClass::Error` message in
/// the `Ok` value. These are the failures of the whole call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a SOAP fault.
    #[error("SOAP fault: {0}")]
    Fault(Box<Fault>),
    /// The server is throttling us; no request may be sent before `back_off` has passed.
    #[error("server busy: back off for {back_off:?}")]
    Throttled {
        /// How long the server asked us to wait.
        back_off: Duration,
    },
    /// The response could not be decoded.
    #[error("cannot decode the response: {source}")]
    Decode {
        /// What went wrong.
        #[source]
        source: DecodeError,
        /// The raw body, kept for diagnosis (only ever logged at trace level).
        body: Box<[u8]>,
    },
    /// The credentials were refused.
    #[error("authentication failed ({scheme}): {detail}")]
    Unauthorized {
        /// The scheme that was tried.
        scheme: &'static str,
        /// What the server said.
        detail: String,
    },
    /// An HTTP status that carries no SOAP body.
    #[error("HTTP {status} from the server{}", detail_suffix(detail))]
    Http {
        /// The status code.
        status: u16,
        /// A short description.
        detail: String,
    },
    /// The connection failed, timed out or was dropped.
    #[error("connection error: {0}")]
    Connection(String),
    /// TLS could not be established for a reason other than the certificate.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The server's certificate is not trusted (unknown issuer, expired, wrong host name...).
    #[error("untrusted server certificate: {0}")]
    UntrustedCertificate(String),
    /// Kerberos cannot be used here (the GSSAPI library is missing or unusable).
    #[error("{0}")]
    Kerberos(#[from] GssError),
    /// A configuration problem found when the client was built.
    #[error("invalid EWS client configuration: {0}")]
    Config(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl From<DecodeError> for Error {
    fn from(source: DecodeError) -> Self {
        Error::Decode {
            source,
            body: Box::default(),
        }
    }
}

/// A failure of the system's GSSAPI (Kerberos), from `transport::auth::gssapi`. Defined here,
/// below the transport, so that [`Error::Kerberos`] can carry it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GssError {
    /// The GSSAPI library could not be loaded.
    #[error(
        "Kerberos is not available: cannot load libgssapi_krb5.so.2 ({detail}); install the libgssapi-krb5-2 package"
    )]
    LibraryMissing {
        /// What the dynamic loader said.
        detail: String,
    },
    /// A GSSAPI call failed.
    #[error("{call} failed: {message}")]
    Call {
        /// The function that failed.
        call: &'static str,
        /// Its major status.
        major: u32,
        /// Its minor (mechanism) status.
        minor: u32,
        /// The library's own words for both statuses.
        message: String,
    },
    /// An input that cannot be handed to the library (an interior NUL byte).
    #[error("invalid Kerberos input: {0}")]
    Input(String),
}

impl GssError {
    /// Whether the failure is the acceptor's refusal of the initiator's channel bindings
    /// (`GSS_S_BAD_BINDINGS`).
    pub fn is_bad_bindings(&self) -> bool {
        matches!(self, GssError::Call { major, .. } if *major & 0x00ff_0000 == 4 << 16)
    }
}
