//! A scripted EWS test server on loopback for the transport tests.
//!
//! It speaks real HTTP/1.1 (hyper) and real SOAP (the crate's own `ops::encode_response` and
//! `soap::write_fault`), authenticates with Basic, bearer or NTLM (verifying the NTLMv2 proof
//! with the crate's acceptor against a known password), serves an OAuth token endpoint at
//! `/token`, and records what it saw with real (`std`) time stamps: which connection, when a
//! request arrived and when it was answered, and how many were in flight.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use taskbridge::ews::ops::get_folder::{FolderPayload, GetFolder, GetFolderResponse};
use taskbridge::ews::ops::{self, OperationResponse};
use taskbridge::ews::soap::{self, Fault, ServerVersionInfo};
use taskbridge::ews::types::{
    AnyFolder, Folder, FolderId, Folders, MessageXml, ResponseCode, ResponseMessage,
};
use taskbridge_sim::ntlm_server::{self, ServerChallenge};

/// The NTLM account the server knows.
pub const NTLM_USER: &str = "svc-taskbridge";
/// Its domain.
pub const NTLM_DOMAIN: &str = "CONTOSO";
/// Its password.
pub const NTLM_PASSWORD: &str = "S3cret-NTLM-pa55";
/// The Basic account.
pub const BASIC_USER: &str = "svc-basic";
/// Its password.
pub const BASIC_PASSWORD: &str = "S3cret-BASIC-pa55";
/// The OAuth client.
pub const CLIENT_ID: &str = "taskbridge-app";
/// Its secret.
pub const CLIENT_SECRET: &str = "S3cret-CLIENT-s3cret";
/// A static bearer token the server accepts.
pub const STATIC_TOKEN: &str = "S3cret-STATIC-token";
/// Mailbox the account may not impersonate.
pub const DENIED_MAILBOX: &str = "ceo@contoso.com";

/// How the server authenticates EWS requests.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    None,
    Basic,
    Ntlm,
    Bearer,
}

/// A scripted answer to one EWS request (after authentication).
#[derive(Clone, Debug)]
pub enum Reply {
    /// A GetFolder success, one message per folder id.
    Ok,
    /// HTTP 500 with an ErrorServerBusy SOAP fault carrying `BackOffMilliseconds`.
    BusyFault(u64),
    /// HTTP 200 where the first `busy` messages are ErrorServerBusy with `BackOffMilliseconds`
    /// (`ms[i]` for message i), the rest success.
    BusyMessages(Vec<u64>),
    /// HTTP 503, with the given `Retry-After` if any.
    Unavailable(Option<&'static str>),
    /// Close the connection without answering.
    Drop,
    /// A bare status with a plain-text body.
    Status(u16),
    /// A 302 to an error page.
    Redirect,
    /// HTTP 500 with this fault.
    Fault(Fault),
}

/// What the server saw of one HTTP request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub conn: u64,
    pub path: String,
    pub arrived: Instant,
    pub answered: Instant,
    /// `none`, `basic`, `bearer`, `ntlm-negotiate`, `ntlm-authenticate`, `other`.
    pub auth: &'static str,
    pub status: u16,
    pub action: Option<String>,
    pub anchor: Option<String>,
    pub impersonation: Option<String>,
    /// The reply given, for EWS requests that got past authentication.
    pub reply: Option<String>,
}

/// Shared server state and counters.
#[derive(Default)]
pub struct State {
    pub seen: Mutex<Vec<Seen>>,
    pub script: Mutex<VecDeque<Reply>>,
    /// How long each EWS request is held before it is answered.
    pub delay: Mutex<Duration>,
    pub ntlm_negotiates: AtomicUsize,
    pub ntlm_authenticates: AtomicUsize,
    pub ntlm_failures: AtomicUsize,
    /// Make the next request on an authenticated NTLM connection fail with 401 (once).
    pub forget_ntlm_once: AtomicBool,
    in_flight_total: AtomicUsize,
    pub max_in_flight_total: AtomicUsize,
    in_flight_mailbox: Mutex<HashMap<String, usize>>,
    pub max_in_flight_mailbox: AtomicUsize,
    pub token_fetches: AtomicUsize,
    pub token_lifetime_secs: AtomicU64,
    tokens: Mutex<HashMap<String, Instant>>,
    pub rejected_tokens: AtomicUsize,
    conns: AtomicU64,
}

impl State {
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests that reached the EWS handler (past authentication).
    pub fn ews_requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.reply.is_some())
            .collect()
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
}

pub struct Server {
    pub url: String,
    pub base: String,
    pub state: Arc<State>,
}

struct Conn {
    id: u64,
    challenge: Mutex<Option<ServerChallenge>>,
    authenticated: AtomicBool,
}

fn server_version() -> ServerVersionInfo {
    ServerVersionInfo {
        major_version: Some(15),
        minor_version: Some(1),
        major_build_number: Some(2507),
        minor_build_number: Some(6),
        version: Some("V2017_07_11".into()),
    }
}

impl Server {
    pub async fn start(auth: ServerAuth) -> Server {
        Self::start_with(auth, None).await
    }

    pub async fn start_tls(auth: ServerAuth) -> Server {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
            std::fs::File::open(format!("{dir}/server.pem")).unwrap(),
        ))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
        let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
            std::fs::File::open(format!("{dir}/server.key")).unwrap(),
        ))
        .unwrap()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start_with(
            auth,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_with(auth: ServerAuth, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        state.token_lifetime_secs.store(3600, Ordering::SeqCst);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = if tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let base = format!("{scheme}://{host}:{port}");
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let id = st.conns.fetch_add(1, Ordering::SeqCst) + 1;
                let conn = Arc::new(Conn {
                    id,
                    challenge: Mutex::new(None),
                    authenticated: AtomicBool::new(false),
                });
                let st = st.clone();
                let auth = auth.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(st.clone(), conn.clone(), auth.clone(), req)
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Server {
            url: format!("{base}/EWS/Exchange.asmx"),
            base,
            state,
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Resp {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn xml(status: u16, body: Vec<u8>) -> Resp {
    respond(
        status,
        &[("Content-Type", "text/xml; charset=utf-8".into())],
        body,
    )
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The in-flight counters for one request: raised on creation, lowered on drop.
struct InFlight {
    state: Arc<State>,
    mailbox: String,
}

impl InFlight {
    fn enter(state: &Arc<State>, mailbox: &str) -> InFlight {
        let total = state.in_flight_total.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight_total.fetch_max(total, Ordering::SeqCst);
        let per = {
            let mut map = state.in_flight_mailbox.lock().unwrap();
            let n = map.entry(mailbox.to_string()).or_default();
            *n += 1;
            *n
        };
        state.max_in_flight_mailbox.fetch_max(per, Ordering::SeqCst);
        InFlight {
            state: state.clone(),
            mailbox: mailbox.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight_total.fetch_sub(1, Ordering::SeqCst);
        let mut map = self.state.in_flight_mailbox.lock().unwrap();
        if let Some(n) = map.get_mut(&self.mailbox) {
            *n -= 1;
        }
    }
}

async fn handle(
    state: Arc<State>,
    conn: Arc<Conn>,
    auth: ServerAuth,
    req: Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let arrived = Instant::now();
    let path = req.uri().path().to_string();
    let authorization = header(&req, "authorization");
    let action = header(&req, "soapaction");
    let anchor = header(&req, "x-anchormailbox");
    let _in_flight = InFlight::enter(&state, anchor.as_deref().unwrap_or(""));
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut seen = Seen {
        conn: conn.id,
        path: path.clone(),
        arrived,
        answered: arrived,
        auth: auth_kind(authorization.as_deref()),
        status: 0,
        action,
        anchor,
        impersonation: None,
        reply: None,
    };
    let result = if path == "/token" {
        Ok(token_endpoint(&state, &body))
    } else {
        match authenticate(&state, &conn, &auth, authorization.as_deref()) {
            Some(denied) => Ok(denied),
            None => ews(&state, &body, &mut seen).await,
        }
    };
    seen.answered = Instant::now();
    seen.status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
    state.seen.lock().unwrap().push(seen);
    result
}

fn auth_kind(value: Option<&str>) -> &'static str {
    let Some(value) = value else { return "none" };
    if value.starts_with("Basic ") {
        "basic"
    } else if value.starts_with("Bearer ") {
        "bearer"
    } else if let Some(token) = ntlm_server::decode_authorization(value) {
        match ntlm_server::message_type(&token) {
            Ok(1) => "ntlm-negotiate",
            Ok(3) => "ntlm-authenticate",
            _ => "other",
        }
    } else {
        "other"
    }
}

/// `None` when the request may proceed, or the 401 to send.
fn authenticate(
    state: &State,
    conn: &Conn,
    auth: &ServerAuth,
    authorization: Option<&str>,
) -> Option<Resp> {
    use base64::Engine;
    let deny = |challenge: &str| {
        Some(respond(
            401,
            &[("WWW-Authenticate", challenge.into())],
            b"401 Unauthorized".to_vec(),
        ))
    };
    match auth {
        ServerAuth::None => None,
        ServerAuth::Basic => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
            );
            if authorization == Some(expected.as_str()) {
                None
            } else {
                deny("Basic realm=\"ews\"")
            }
        }
        ServerAuth::Bearer => {
            let token = authorization.and_then(|v| v.strip_prefix("Bearer "));
            let valid = token.is_some_and(|t| {
                if t == STATIC_TOKEN {
                    return true;
                }
                let lifetime =
                    Duration::from_secs(state.token_lifetime_secs.load(Ordering::SeqCst));
                state
                    .tokens
                    .lock()
                    .unwrap()
                    .get(t)
                    .is_some_and(|issued| issued.elapsed() < lifetime)
            });
            if valid {
                None
            } else {
                state.rejected_tokens.fetch_add(1, Ordering::SeqCst);
                deny("Bearer")
            }
        }
        ServerAuth::Ntlm => {
            let token = authorization.and_then(ntlm_server::decode_authorization);
            let Some(token) = token else {
                if conn.authenticated.load(Ordering::SeqCst) {
                    if state.forget_ntlm_once.swap(false, Ordering::SeqCst) {
                        conn.authenticated.store(false, Ordering::SeqCst);
                        return deny("NTLM");
                    }
                    return None;
                }
                return deny("NTLM");
            };
            match ntlm_server::message_type(&token) {
                Ok(1) => {
                    state.ntlm_negotiates.fetch_add(1, Ordering::SeqCst);
                    conn.authenticated.store(false, Ordering::SeqCst);
                    match ntlm_server::challenge(&token) {
                        Ok(ch) => {
                            let header = ch.www_authenticate();
                            *conn.challenge.lock().unwrap() = Some(ch);
                            deny(&header)
                        }
                        Err(_) => deny("NTLM"),
                    }
                }
                Ok(3) => {
                    state.ntlm_authenticates.fetch_add(1, Ordering::SeqCst);
                    let ch = conn.challenge.lock().unwrap().take();
                    let verified = ch.and_then(|ch| {
                        ntlm_server::verify(&ch, &token, |user, domain| {
                            (user.eq_ignore_ascii_case(NTLM_USER)
                                && domain.eq_ignore_ascii_case(NTLM_DOMAIN))
                            .then(|| NTLM_PASSWORD.to_string())
                        })
                        .ok()
                    });
                    if verified.is_some() {
                        conn.authenticated.store(true, Ordering::SeqCst);
                        None
                    } else {
                        state.ntlm_failures.fetch_add(1, Ordering::SeqCst);
                        deny("NTLM")
                    }
                }
                _ => deny("NTLM"),
            }
        }
    }
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token_endpoint(state: &State, body: &[u8]) -> Resp {
    let ok = form_value(body, "grant_type").as_deref() == Some("client_credentials")
        && form_value(body, "client_id").as_deref() == Some(CLIENT_ID)
        && form_value(body, "client_secret").as_deref() == Some(CLIENT_SECRET);
    if !ok {
        // Like a careless endpoint: the description repeats what was posted (the client
        // secret included) and carries a line break and a control character.
        let posted = form_value(body, "client_secret").unwrap_or_default();
        let description = format!(
            "bad client credentials for secret {posted}\r\nX-Injected: yes\u{1b}[31m{}",
            "padding ".repeat(200)
        );
        return respond(
            401,
            &[("Content-Type", "application/json".into())],
            serde_json::json!({"error": "invalid_client", "error_description": description})
                .to_string()
                .into_bytes(),
        );
    }
    let n = state.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("S3cret-ISSUED-token-{n}");
    state
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now());
    let lifetime = state.token_lifetime_secs.load(Ordering::SeqCst);
    respond(
        200,
        &[("Content-Type", "application/json".into())],
        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})
            .to_string()
            .into_bytes(),
    )
}

fn tasks_folder(name: &str) -> FolderPayload {
    FolderPayload {
        folders: Some(Folders(vec![AnyFolder {
            kind: "TasksFolder".into(),
            folder: Folder {
                folder_id: Some(FolderId {
                    id: format!("AQMkTasks-{name}").as_str().into(),
                    change_key: None,
                }),
                ..Folder::default()
            },
        }])),
    }
}

async fn ews(state: &State, body: &[u8], seen: &mut Seen) -> Result<Resp, std::io::Error> {
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (header, request) = match ops::decode_request::<GetFolder>(body, 1 << 20) {
        Ok(decoded) => decoded,
        Err(e) => {
            seen.reply = Some("schema-fault".into());
            let fault = Fault::schema_validation(1, 1, &e.to_string());
            return Ok(xml(500, soap::write_fault(Some(&server_version()), &fault)));
        }
    };
    seen.impersonation = header.impersonation.as_ref().map(|i| i.value().to_string());
    let who = seen.impersonation.clone().unwrap_or_else(|| "self".into());
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Ok);
    seen.reply = Some(format!("{reply:?}"));
    if who == DENIED_MAILBOX {
        let fault = Fault::client(
            ResponseCode::ErrorImpersonateUserDenied,
            "The account does not have permission to impersonate the requested user.",
        );
        return Ok(xml(500, soap::write_fault(Some(&server_version()), &fault)));
    }
    let n = request.folder_ids.0.len().max(1);
    Ok(match reply {
        Reply::Ok => {
            let messages = (0..n)
                .map(|_| ResponseMessage::success(tasks_folder(&who)))
                .collect();
            let resp = GetFolderResponse::from_messages(messages);
            xml(
                200,
                ops::encode_response::<GetFolder>(Some(&server_version()), &resp),
            )
        }
        Reply::BusyMessages(busy) => {
            let messages = (0..n.max(busy.len()))
                .map(|i| match busy.get(i) {
                    Some(ms) => {
                        let mut m = ResponseMessage::error(
                            ResponseCode::ErrorServerBusy,
                            "The server cannot service this request right now. Try again later.",
                            FolderPayload::default(),
                        );
                        m.message_xml = Some(MessageXml::with_back_off(Duration::from_millis(*ms)));
                        m
                    }
                    None => ResponseMessage::success(tasks_folder(&who)),
                })
                .collect();
            let resp = GetFolderResponse::from_messages(messages);
            xml(
                200,
                ops::encode_response::<GetFolder>(Some(&server_version()), &resp),
            )
        }
        Reply::BusyFault(ms) => xml(
            500,
            soap::write_fault(
                Some(&server_version()),
                &Fault::server_busy(Duration::from_millis(ms)),
            ),
        ),
        Reply::Fault(fault) => xml(500, soap::write_fault(Some(&server_version()), &fault)),
        Reply::Unavailable(retry_after) => {
            let headers: Vec<(&str, String)> = retry_after
                .map(|v| vec![("Retry-After", v.to_string())])
                .unwrap_or_default();
            respond(503, &headers, b"Service Unavailable".to_vec())
        }
        Reply::Status(code) => respond(code, &[], b"<html>error</html>".to_vec()),
        Reply::Redirect => respond(
            302,
            &[("Location", "/owa/auth/errorfe.aspx".into())],
            Vec::new(),
        ),
        Reply::Drop => return Err(std::io::Error::other("dropping the connection on purpose")),
    })
}
