//! HTTP/1.1 plumbing: TLS settings, the pooled reqwest client, dedicated connections for
//! connection-bound authentication (NTLM, Negotiate), and the mapping of low-level errors to
//! [`Error`].
//!
//! Two ways to send, one response shape (`HttpResponse`):
//! - `Wire::send_pooled` goes through reqwest's connection pool (Basic, bearer, none), where
//!   any connection will do;
//! - `DedicatedConnection` is one hyper HTTP/1.1 connection that we own. NTLM authenticates a
//!   TCP connection, and reqwest neither exposes nor pins the connection a request goes out on
//!   (its pool may open a second connection while the first is still being returned), so the
//!   handshake and the requests after it run on a connection we hold ourselves.
//!
//! Both wait for the [`BackoffGate`] right before a request leaves, and neither follows redirects.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tracing::{debug, trace, warn};

use crate::error::{DecodeError, Error};
use crate::transport::backoff::BackoffGate;
use crate::transport::channel_binding::{ChannelBindings, tls_server_end_point_data};

/// TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM file of extra CA certificates trusted in addition to the system's roots (e.g. an
    /// internal CA that signed the Exchange server's certificate).
    pub extra_ca_file: Option<PathBuf>,
    /// Accept any server certificate, valid or not. Only for tests and emergencies: it makes
    /// TLS worthless against an active attacker, and a warning is logged every time a client
    /// is built with it.
    pub accept_invalid_certs: bool,
}

/// Timeouts of one HTTP exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection and TLS session (default 10 s).
    pub connect: Duration,
    /// One request: from sending it until its whole response is read (default 100 s, as
    /// Exchange's own EWS time-out).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(100),
        }
    }
}

/// The user agent sent with every request.
pub const USER_AGENT: &str = concat!("taskbridge/", env!("CARGO_PKG_VERSION"));

/// Installs ring as the process-wide rustls crypto provider, unless one is installed already.
pub fn install_crypto_provider() {
    // An error means another provider is installed already; that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the rustls client configuration: system roots plus `extra_ca_file`, HTTP/1.1 only
/// (ALPN). Other TLS clients of the product (its PostgreSQL connections) start from it so that
/// every connection trusts the same roots; they clear the ALPN list.
pub fn rustls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, Error> {
    rustls_config(tls)
}

pub(crate) fn rustls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, Error> {
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    let mut config = if tls.accept_invalid_certs {
        warn!(
            "TLS certificate verification is OFF (accept_invalid_certs): any server, including an \
             attacker in the middle, is trusted"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let extra = match &tls.extra_ca_file {
            Some(path) => load_pem_certificates(path)?,
            None => Vec::new(),
        };
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| Error::Config(format!("TLS trust store: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Config(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The verifier behind `accept_invalid_certs`: checks signatures of the handshake, trusts any
/// certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds the pooled reqwest client: HTTP/1.1 only, no redirects, no proxy.
/// Whether `url` names this machine (`localhost`, 127.0.0.0/8, `::1`), where plain HTTP does not
/// leave the host.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn reqwest_client(
    tls: rustls::ClientConfig,
    timeouts: &Timeouts,
    max_idle: usize,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(USER_AGENT)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_max_idle_per_host(max_idle)
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {}", chain(&e))))
}

/// A response, read whole.
#[derive(Clone, Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The schemes offered in `WWW-Authenticate` (names only, never tokens).
    pub(crate) fn offered_schemes(&self) -> String {
        let schemes: Vec<&str> = self
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_whitespace().next())
            .collect();
        if schemes.is_empty() {
            "none".into()
        } else {
            schemes.join(", ")
        }
    }

    /// Whether the server said it closes the connection after this response.
    pub(crate) fn closes_connection(&self) -> bool {
        self.headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The `Retry-After` header, if any and readable.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let value = self.headers.get(header::RETRY_AFTER)?.to_str().ok()?;
        crate::transport::backoff::parse_retry_after(value, std::time::SystemTime::now())
    }
}

/// One SOAP call as the authentication layer sees it.
#[derive(Clone, Debug)]
pub(crate) struct SoapRequest<'a> {
    /// Operation name (for `SOAPAction`), or a full action URI (SOAP Autodiscover).
    pub action: &'static str,
    /// The mailbox acted for (`X-AnchorMailbox`).
    pub mailbox: Option<&'a str>,
    /// Further headers, replacing any of the same name ([`crate::service::CallContext`]).
    pub extra: &'a [(HeaderName, HeaderValue)],
    /// The envelope.
    pub body: Bytes,
}

/// The `SOAPAction` header: EWS operations are named, other services give their full URI.
fn soap_action_of(action: &str) -> String {
    if action.contains("://") {
        format!("\"{action}\"")
    } else {
        crate::ops::soap_action(action)
    }
}

/// What every request of one client shares: endpoint, TLS, timeouts, the pooled client and
/// the back-off gate.
pub(crate) struct Wire {
    pub endpoint: reqwest::Url,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeouts: Timeouts,
    pub max_response_bytes: usize,
    pub pooled: reqwest::Client,
    pub gate: BackoffGate,
}

impl Wire {
    /// Builds the HTTP request of `req`, with `authorization` (marked sensitive, so that no
    /// `Debug` of the request shows it) and with or without the body.
    pub(crate) fn request(
        &self,
        req: &SoapRequest<'_>,
        authorization: Option<HeaderValue>,
        with_body: bool,
    ) -> Result<http::Request<Bytes>, Error> {
        let mut builder = http::Request::post(self.endpoint.as_str())
            .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header(header::ACCEPT, "text/xml")
            .header(header::USER_AGENT, USER_AGENT)
            .header("SOAPAction", soap_action_of(req.action));
        if let Some(mailbox) = req.mailbox {
            let value = HeaderValue::from_str(mailbox)
                .map_err(|_| Error::Config(format!("mailbox {mailbox:?} is not a valid header")))?;
            builder = builder.header("X-AnchorMailbox", value);
        }
        if let Some(headers) = builder.headers_mut() {
            for (name, value) in req.extra {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(mut auth) = authorization {
            auth.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let body = if with_body {
            req.body.clone()
        } else {
            Bytes::new()
        };
        builder
            .body(body)
            .map_err(|e| Error::Config(format!("cannot build the request: {e}")))
    }

    /// Sends through the pooled client, after the back-off gate opens.
    pub(crate) async fn send_pooled(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<HttpResponse, Error> {
        self.gate.wait_open().await;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| Error::Config(format!("cannot build the request: {}", chain(&e))))?;
        let started = tokio::time::Instant::now();
        let mut response = self
            .pooled
            .execute(request)
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(too_large(body.len() + chunk.len(), self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        debug!(
            status,
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "HTTP response"
        );
        Ok(HttpResponse {
            status,
            headers,
            body: body.into(),
        })
    }

    /// Opens a dedicated HTTP/1.1 connection to the endpoint.
    pub(crate) async fn connect(&self) -> Result<DedicatedConnection, Error> {
        let host = self
            .endpoint
            .host_str()
            .ok_or_else(|| Error::Config("the endpoint URL has no host".into()))?
            .to_string();
        let port = self
            .endpoint
            .port_or_known_default()
            .ok_or_else(|| Error::Config("the endpoint URL has no port".into()))?;
        let https = self.endpoint.scheme() == "https";
        let connect = async {
            // IPv6 literals come bracketed in URLs; sockets want them bare.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = tokio::net::TcpStream::connect((bare, port))
                .await
                .map_err(|e| Error::Connection(format!("cannot connect to {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            if https {
                let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                    .map_err(|e| Error::Config(format!("invalid TLS server name {host}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| classify(&e))?;
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first());
                let bindings = leaf
                    .map(|leaf| ChannelBindings::tls_server_end_point(leaf))
                    .unwrap_or(ChannelBindings::NONE);
                let end_point = leaf.map(|leaf| tls_server_end_point_data(leaf));
                Ok::<_, Error>((handshake(TokioIo::new(tls)).await?, bindings, end_point))
            } else {
                Ok((
                    handshake(TokioIo::new(tcp)).await?,
                    ChannelBindings::NONE,
                    None,
                ))
            }
        };
        let (sender, channel_bindings, end_point) =
            tokio::time::timeout(self.timeouts.connect, connect)
                .await
                .map_err(|_| {
                    Error::Connection(format!(
                        "connecting to {host}:{port} timed out after {:?}",
                        self.timeouts.connect
                    ))
                })??;
        debug!(%host, port, "opened a dedicated connection");
        Ok(DedicatedConnection {
            sender,
            channel_bindings,
            end_point,
        })
    }

    /// Sends on a dedicated connection and returns once the response head has arrived, its
    /// body still to be read (a streaming response). The head must come within the request
    /// time-out; the body has no time-out here.
    pub(crate) async fn send_on_streaming(
        &self,
        conn: &mut DedicatedConnection,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        self.gate.wait_open().await;
        let request = self.origin_form(request)?;
        let head = async {
            conn.sender.ready().await.map_err(|e| classify(&e))?;
            conn.sender
                .send_request(request)
                .await
                .map_err(|e| classify(&e))
        };
        tokio::time::timeout(self.timeouts.request, head)
            .await
            .map_err(|_| {
                Error::Connection(format!(
                    "no response head within {:?}",
                    self.timeouts.request
                ))
            })?
    }

    /// The request as sent on our own HTTP/1.1 connection: origin-form target and a Host
    /// header.
    fn origin_form(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Request<Full<Bytes>>, Error> {
        let (mut parts, body) = request.into_parts();
        // HTTP/1.1 on our own connection: origin-form target plus a Host header.
        let target = match self.endpoint.query() {
            Some(q) => format!("{}?{q}", self.endpoint.path()),
            None => self.endpoint.path().to_string(),
        };
        parts.uri = target
            .parse()
            .map_err(|e| Error::Config(format!("endpoint path: {e}")))?;
        let host = match self.endpoint.port() {
            Some(port) => format!("{}:{port}", self.endpoint.host_str().unwrap_or_default()),
            None => self.endpoint.host_str().unwrap_or_default().to_string(),
        };
        parts.headers.insert(
            header::HOST,
            HeaderValue::from_str(&host).map_err(|e| Error::Config(format!("host: {e}")))?,
        );
        Ok(http::Request::from_parts(parts, Full::new(body)))
    }

    /// Sends on a dedicated connection, after the back-off gate opens.
    pub(crate) async fn send_on(
        &self,
        conn: &mut DedicatedConnection,
        request: http::Request<Bytes>,
    ) -> Result<HttpResponse, Error> {
        self.gate.wait_open().await;
        let request = self.origin_form(request)?;
        let max = self.max_response_bytes;
        let started = tokio::time::Instant::now();
        let exchange = async {
            conn.sender.ready().await.map_err(|e| classify(&e))?;
            let response = conn
                .sender
                .send_request(request)
                .await
                .map_err(|e| classify(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        too_large(max + 1, max)
                    } else {
                        classify(e.as_ref())
                    }
                })?
                .to_bytes();
            Ok::<_, Error>(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        let response = tokio::time::timeout(self.timeouts.request, exchange)
            .await
            .map_err(|_| {
                Error::Connection(format!(
                    "no complete response within {:?}",
                    self.timeouts.request
                ))
            })??;
        debug!(
            status = response.status,
            bytes = response.body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "HTTP response (dedicated connection)"
        );
        Ok(response)
    }
}

async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            trace!(error = %e, "dedicated connection ended");
        }
    });
    Ok(sender)
}

/// One HTTP/1.1 connection that we own; requests on it go strictly one after the other.
pub(crate) struct DedicatedConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The TLS channel's bindings (the server certificate's hash), for NTLM under Extended
    /// Protection; none over plain HTTP.
    channel_bindings: ChannelBindings,
    /// The same bindings' application data (`tls-server-end-point:` + certificate hash), as
    /// Kerberos hands them to GSSAPI; none over plain HTTP.
    end_point: Option<Vec<u8>>,
}

impl DedicatedConnection {
    /// The application data of this connection's TLS channel bindings (none over plain HTTP).
    pub(crate) fn tls_end_point(&self) -> Option<&[u8]> {
        self.end_point.as_deref()
    }

    /// The channel bindings of this connection.
    pub(crate) fn channel_bindings(&self) -> ChannelBindings {
        self.channel_bindings
    }

    /// Whether the connection can still carry a request.
    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

fn too_large(size: usize, limit: usize) -> Error {
    Error::Decode {
        source: DecodeError::TooLarge { size, limit },
        body: Box::default(),
    }
}

/// The whole cause chain of an error on one line, `outer: inner: ...`, with repeats removed.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = source_of(e);
    }
    parts.join(": ")
}

/// `source()`, except that for an `io::Error` the wrapped error itself comes next (std's
/// `io::Error::source` skips it, and that is where rustls puts its error).
fn source_of<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
    {
        return Some(inner as &(dyn std::error::Error + 'static));
    }
    e.source()
}

/// Maps a low-level error to the transport's: a certificate problem, another TLS problem, or
/// a connection problem (refused, reset, timed out, closed early).
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> Error {
    let text = chain(err);
    let mut next = Some(err);
    let mut timed_out = false;
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => Error::UntrustedCertificate(text),
                _ => Error::Tls(text),
            };
        }
        if let Some(re) = e.downcast_ref::<reqwest::Error>() {
            timed_out |= re.is_timeout();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        next = source_of(e);
    }
    if timed_out {
        Error::Connection(format!("timed out: {text}"))
    } else {
        Error::Connection(text)
    }
}
