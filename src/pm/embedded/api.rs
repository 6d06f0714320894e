//! The PM HTTP API: JSON over HTTP/1.1, every route behind a bearer token.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/pm/projects` | project summaries |
//! | GET | `/pm/projects/{guid}` | one project: summary and full project |
//! | POST | `/pm/projects/{guid}/publish` | re-emit `ProjectPublished` |
//! | PUT | `/pm/projects/{guid}/policy` | `{"policy": "auto" \| "approval"}` |
//! | GET | `/pm/updates?state=&project=` | status updates, oldest first |
//! | GET | `/pm/updates/{id}` | one status update |
//! | POST | `/pm/updates/{id}/approve` | optional `{"by": "name", "force": true}`; a stale update is 409 with `fields` |
//! | POST | `/pm/updates/{id}/reject` | optional `{"reason": "...", "by": "name"}` |
//! | GET | `/pm/conflicts?project=` | open sync conflicts (when a [`ConflictDesk`] is mounted) |
//! | POST | `/pm/conflicts/{id}/resolve` | `{"take": "pm" \| "mailbox", "reason": "...", "by": "name"}` |
//!
//! Errors are `{"error": "..."}` with 400 (bad query or body), 401 (no or wrong token, checked
//! before anything else, so unknown paths are not revealed), 404, 405 (with `Allow`), 409 (not
//! pending), 413 (body over the cap), 415 (a body that is not JSON), 422 (an approval whose
//! values no longer fit) or 500. [`PmApi`] is a hyper service for `taskbridge serve` to mount on
//! its admin address; [`serve_pm_api`] serves it alone (tests, embedding).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::{EmbeddedError, EmbeddedHost, Policy, Secret, UpdateFilter, UpdateState};
use crate::pm::host::StatusUpdateId;
use crate::pm::model::ProjectGuid;
use crate::server::{self, Bound, ServerLimits};

/// The default time allowed to receive a request body, from the end of the head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default cap on request bodies: the API's bodies are a few short fields.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections served at once by [`serve_pm_api`]; when all are taken, the one idle the longest
/// is closed to make room (a connection in a request never is).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish when the server shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The decider recorded for API decisions without a `by`.
const DEFAULT_DECIDER: &str = "api";

/// What a [`ConflictDesk`] answers: JSON, or why not.
pub type DeskFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, DeskError>> + Send + 'a>>;

/// Open sync conflicts, as the PM API lists and settles them under `/pm/conflicts`. The
/// connector's engine provides them; the answers are JSON so that this layer needs no sync
/// types.
pub trait ConflictDesk: Send + Sync + 'static {
    /// The open conflicts, of one project or of all.
    fn list(&self, project: Option<ProjectGuid>) -> DeskFuture<'_>;
    /// Settles conflict `id` by taking `take` (`pm` or `mailbox`), recording `by` and
    /// `reason`.
    fn resolve<'a>(
        &'a self,
        id: &'a str,
        take: &'a str,
        by: &'a str,
        reason: Option<&'a str>,
    ) -> DeskFuture<'a>;
}

/// The status updates of a PM host that keeps no store here (Redmine: taskbridge keeps its
/// updates), served by the update routes instead of the embedded store's.
pub trait UpdateDesk: Send + Sync + 'static {
    /// The updates `filter` selects, oldest first.
    fn list(&self, filter: UpdateFilter) -> UpdateDeskFuture<'_, Vec<super::StatusUpdateRecord>>;
    /// Approves pending update `id` as `by` (`force`: over newer PM values).
    fn approve<'a>(
        &'a self,
        id: &'a StatusUpdateId,
        by: &'a str,
        force: bool,
    ) -> UpdateDeskFuture<'a, crate::pm::UpdateOutcome>;
    /// Rejects pending update `id` as `by`, with `reason`.
    fn reject<'a>(
        &'a self,
        id: &'a StatusUpdateId,
        by: &'a str,
        reason: Option<&'a str>,
    ) -> UpdateDeskFuture<'a, crate::pm::UpdateOutcome>;
}

/// What an [`UpdateDesk`] answers.
pub type UpdateDeskFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeskError>> + Send + 'a>>;

/// Why a [`ConflictDesk`] or an [`UpdateDesk`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeskError {
    /// No such conflict or update (404).
    NotFound(String),
    /// A bad request (400).
    BadRequest(String),
    /// Not in a state to do this: decided already, or stale (409).
    Conflict(String),
    /// Anything else (500).
    Failed(String),
}

/// The PM API as a hyper service. Cheap to clone.
#[derive(Clone)]
pub struct PmApi {
    /// The embedded store; `None` when the PM side is elsewhere (only updates and conflicts
    /// are served then).
    host: Option<EmbeddedHost>,
    conflicts: Option<Arc<dyn ConflictDesk>>,
    updates: Option<Arc<dyn UpdateDesk>>,
    /// SHA-256 of the token, or `None` for an empty token, which matches nothing. Comparing
    /// digests in constant time hides the token's length as well as its content.
    token: Option<Arc<[u8; 32]>>,
    max_body: usize,
    body_timeout: Duration,
}

impl std::fmt::Debug for PmApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmApi")
            .field("host", &self.host)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The PM API over `host`, accepting `Authorization: Bearer <token>`. An empty token accepts no
/// request at all.
pub fn pm_api(host: EmbeddedHost, token: Secret) -> PmApi {
    let token = (!token.is_empty()).then(|| Arc::new(digest(token.expose().as_bytes())));
    PmApi {
        host: Some(host),
        conflicts: None,
        updates: None,
        token,
        max_body: DEFAULT_MAX_BODY_BYTES,
        body_timeout: DEFAULT_BODY_TIMEOUT,
    }
}

/// The PM API of a PM side that is not the embedded store (Redmine): `/pm/updates…` served by
/// `desk` (the project routes answer 404), with the same authentication and limits.
pub fn pm_updates_api(desk: Arc<dyn UpdateDesk>, token: Secret) -> PmApi {
    let token = (!token.is_empty()).then(|| Arc::new(digest(token.expose().as_bytes())));
    PmApi {
        host: None,
        conflicts: None,
        updates: Some(desk),
        token,
        max_body: DEFAULT_MAX_BODY_BYTES,
        body_timeout: DEFAULT_BODY_TIMEOUT,
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The response body type.
type Reply = Response<Full<Bytes>>;

impl PmApi {
    /// Serves `/pm/conflicts` from `desk`.
    pub fn with_conflicts(mut self, desk: Arc<dyn ConflictDesk>) -> PmApi {
        self.conflicts = Some(desk);
        self
    }

    fn desk(&self) -> Result<&Arc<dyn ConflictDesk>, ApiError> {
        self.conflicts
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such route"))
    }

    /// Sets the request body cap (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn with_max_body(mut self, bytes: usize) -> PmApi {
        self.max_body = bytes;
        self
    }

    /// Sets the time allowed to receive a request body (default [`DEFAULT_BODY_TIMEOUT`]); a
    /// slower body gets 408 and the connection is closed.
    pub fn with_body_timeout(mut self, timeout: Duration) -> PmApi {
        self.body_timeout = timeout;
        self
    }

    /// Answers one request. Paths are absolute (`/pm/...`); a router mounting this service
    /// passes requests on unchanged.
    pub async fn handle<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let reply = self.route(request).await;
        tracing::debug!(%method, %path, status = reply.status().as_u16(), "PM API");
        reply
    }

    fn authorized(&self, header: Option<&HeaderValue>) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let Some(given) = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        bool::from(digest(given.as_bytes()).ct_eq(expected.as_ref()))
    }

    async fn route<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !self.authorized(request.headers().get(AUTHORIZATION)) {
            let mut reply = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            reply.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"taskbridge-pm\""),
            );
            return reply;
        }
        let path = request.uri().path();
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let route = match segments.as_slice() {
            ["pm", "projects"] => Route::Projects,
            ["pm", "projects", guid] => Route::Project(guid.to_string()),
            ["pm", "projects", guid, "publish"] => Route::Publish(guid.to_string()),
            ["pm", "projects", guid, "policy"] => Route::Policy(guid.to_string()),
            ["pm", "updates"] => Route::Updates,
            ["pm", "updates", id] => Route::Update(id.to_string()),
            ["pm", "updates", id, "approve"] => Route::Approve(id.to_string()),
            ["pm", "updates", id, "reject"] => Route::Reject(id.to_string()),
            ["pm", "conflicts"] if self.conflicts.is_some() => Route::Conflicts,
            ["pm", "conflicts", id, "resolve"] if self.conflicts.is_some() => {
                Route::Resolve(id.to_string())
            }
            _ => return error(StatusCode::NOT_FOUND, "no such route"),
        };
        let allowed = route.method();
        if request.method() != allowed {
            let mut reply = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            reply.headers_mut().insert(
                ALLOW,
                HeaderValue::from_str(allowed.as_str()).expect("a method name is a header value"),
            );
            return reply;
        }
        let query = request.uri().query().unwrap_or("").to_owned();
        let content_type = request.headers().get(CONTENT_TYPE).cloned();
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err(e) => return e.into_reply(),
        };
        if !body.is_empty() && !is_json(content_type.as_ref()) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request bodies must be application/json",
            );
        }
        self.dispatch(route, &query, &body)
            .await
            .unwrap_or_else(ApiError::into_reply)
    }

    async fn read_body<B>(&self, request: Request<B>) -> Result<Bytes, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", self.max_body),
            )
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > u64::try_from(self.max_body).unwrap_or(u64::MAX)) {
            return Err(too_large());
        }
        let read = Limited::new(request.into_body(), self.max_body).collect();
        let Ok(read) = tokio::time::timeout(self.body_timeout, read).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ));
        };
        match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "cannot read the request body",
            )),
        }
    }

    async fn dispatch(&self, route: Route, query: &str, body: &[u8]) -> Result<Reply, ApiError> {
        if let Some(desk) = &self.updates {
            match route {
                Route::Updates => {
                    let filter = update_filter(query)?;
                    return Ok(json(
                        StatusCode::OK,
                        &desk.list(filter).await.map_err(desk_error)?,
                    ));
                }
                Route::Update(id) => {
                    let all = desk
                        .list(UpdateFilter::default())
                        .await
                        .map_err(desk_error)?;
                    return match all.into_iter().find(|u| u.id.0 == id) {
                        Some(record) => Ok(json(StatusCode::OK, &record)),
                        None => Err(store_error(EmbeddedError::UnknownUpdate(StatusUpdateId(
                            id,
                        )))),
                    };
                }
                Route::Approve(id) => {
                    let ApproveBody { by, force } = parse_body(body)?.unwrap_or_default();
                    let by = decider(by);
                    let outcome = desk
                        .approve(&StatusUpdateId(id), &by, force)
                        .await
                        .map_err(desk_error)?;
                    return Ok(json(StatusCode::OK, &outcome));
                }
                Route::Reject(id) => {
                    let RejectBody { reason, by } = parse_body(body)?.unwrap_or_default();
                    let by = decider(by);
                    let outcome = desk
                        .reject(&StatusUpdateId(id), &by, reason.as_deref())
                        .await
                        .map_err(desk_error)?;
                    return Ok(json(StatusCode::OK, &outcome));
                }
                _ => {}
            }
        }
        if matches!(route, Route::Conflicts | Route::Resolve(_)) {
            return self.dispatch_conflicts(route, query, body).await;
        }
        let Some(host) = &self.host else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no such route"));
        };
        match route {
            Route::Projects => Ok(json(
                StatusCode::OK,
                &host.project_summaries().await.map_err(store_error)?,
            )),
            Route::Project(guid) => {
                let guid = project_guid(&guid)?;
                let summary = host.project_summary(guid).await.map_err(store_error)?;
                let project = host.load_project(guid).await.map_err(store_error)?;
                match (summary, project) {
                    (Some(summary), Some(project)) => Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({ "summary": summary, "project": project }),
                    )),
                    _ => Err(store_error(EmbeddedError::UnknownProject(guid))),
                }
            }
            Route::Publish(guid) => {
                let guid = project_guid(&guid)?;
                host.publish(guid).await.map_err(store_error)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "published": guid }),
                ))
            }
            Route::Policy(guid) => {
                let guid = project_guid(&guid)?;
                let PolicyBody { policy } = parse_body(body)?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "a body {\"policy\": ...} is required",
                    )
                })?;
                host.set_policy(guid, policy).await.map_err(store_error)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "project": guid, "policy": policy }),
                ))
            }
            Route::Updates => {
                let filter = update_filter(query)?;
                Ok(json(
                    StatusCode::OK,
                    &host.status_updates(filter).await.map_err(store_error)?,
                ))
            }
            Route::Update(id) => {
                let id = StatusUpdateId(id);
                match host.status_update(&id).await.map_err(store_error)? {
                    Some(record) => Ok(json(StatusCode::OK, &record)),
                    None => Err(store_error(EmbeddedError::UnknownUpdate(id))),
                }
            }
            Route::Approve(id) => {
                let ApproveBody { by, force } = parse_body(body)?.unwrap_or_default();
                let by = decider(by);
                let outcome = host
                    .approve(&StatusUpdateId(id), &by, force)
                    .await
                    .map_err(store_error)?;
                Ok(json(StatusCode::OK, &outcome))
            }
            Route::Conflicts | Route::Resolve(_) => {
                self.dispatch_conflicts(route, query, body).await
            }
            Route::Reject(id) => {
                let RejectBody { reason, by } = parse_body(body)?.unwrap_or_default();
                let by = decider(by);
                let outcome = host
                    .reject(&StatusUpdateId(id), &by, reason.as_deref())
                    .await
                    .map_err(store_error)?;
                Ok(json(StatusCode::OK, &outcome))
            }
        }
    }

    /// `/pm/conflicts` and `/pm/conflicts/{id}/resolve`.
    async fn dispatch_conflicts(
        &self,
        route: Route,
        query: &str,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        match route {
            Route::Conflicts => {
                let desk = self.desk()?;
                let filter = update_filter(query)?;
                if filter.state.is_some() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "conflicts take only the project parameter",
                    ));
                }
                let list = desk.list(filter.project).await.map_err(desk_error)?;
                Ok(json(StatusCode::OK, &list))
            }
            Route::Resolve(id) => {
                let desk = self.desk()?;
                let ResolveBody { take, reason, by } = parse_body(body)?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "a body {\"take\": \"pm\" | \"mailbox\"} is required",
                    )
                })?;
                let by = decider(by);
                let settled = desk
                    .resolve(&id, &take, &by, reason.as_deref())
                    .await
                    .map_err(desk_error)?;
                Ok(json(StatusCode::OK, &settled))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such route")),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for PmApi {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.handle(request).await) })
    }
}

/// A matched route with its raw path parameter.
enum Route {
    Projects,
    Project(String),
    Publish(String),
    Policy(String),
    Updates,
    Update(String),
    Approve(String),
    Reject(String),
    Conflicts,
    Resolve(String),
}

impl Route {
    fn method(&self) -> Method {
        match self {
            Route::Projects
            | Route::Project(_)
            | Route::Updates
            | Route::Update(_)
            | Route::Conflicts => Method::GET,
            Route::Publish(_) | Route::Approve(_) | Route::Reject(_) | Route::Resolve(_) => {
                Method::POST
            }
            Route::Policy(_) => Method::PUT,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    policy: Policy,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    by: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    take: String,
    reason: Option<String>,
    by: Option<String>,
}

fn desk_error(e: DeskError) -> ApiError {
    match e {
        DeskError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        DeskError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        DeskError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
        DeskError::Failed(m) => {
            tracing::error!(error = %m, "PM API conflicts request failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
    by: Option<String>,
}

fn decider(by: Option<String>) -> String {
    by.map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| DEFAULT_DECIDER.to_owned())
}

/// The JSON body, or `None` for an empty one.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn project_guid(text: &str) -> Result<ProjectGuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no project {text:?}")))
}

fn update_filter(query: &str) -> Result<UpdateFilter, ApiError> {
    let mut filter = UpdateFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "state" => {
                filter.state = Some(
                    value
                        .parse::<UpdateState>()
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
                );
            }
            "project" => {
                filter.project = Some(value.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("not a project GUID: {value:?}"),
                    )
                })?);
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?} (expected state, project)"),
                ));
            }
        }
    }
    Ok(filter)
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn store_error(e: EmbeddedError) -> ApiError {
    let status = match &e {
        EmbeddedError::UnknownProject(_)
        | EmbeddedError::UnknownAssignment(_)
        | EmbeddedError::UnknownUpdate(_) => StatusCode::NOT_FOUND,
        EmbeddedError::NotPending { .. } => StatusCode::CONFLICT,
        EmbeddedError::Stale { fields, .. } => {
            let mut err = ApiError::new(StatusCode::CONFLICT, e.to_string());
            err.stale = fields.clone();
            return err;
        }
        EmbeddedError::CannotApply { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => {
            tracing::error!(error = %e, "PM API request failed");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the PM store failed");
        }
    };
    ApiError::new(status, e.to_string())
}

/// A failed request: its status and message.
struct ApiError {
    status: StatusCode,
    message: String,
    /// The fields of a stale update, sent with a 409.
    stale: Vec<super::StaleField>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            stale: Vec::new(),
        }
    }

    fn into_reply(self) -> Reply {
        if !self.stale.is_empty() {
            return json(
                self.status,
                &serde_json::json!({ "error": self.message, "fields": self.stale }),
            );
        }
        error(self.status, &self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &ErrorBody { error: message })
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Reply {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a PM API reply");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"cannot serialize the reply"}"#.to_vec(),
            )
        }
    };
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// Serves the PM API on `listener` until `shutdown` completes, then lets open connections
/// finish their current request (for at most ten seconds). The shared server
/// ([`crate::server`]) admits at most 64 connections at once.
pub async fn serve_pm_api(
    listener: TcpListener,
    host: EmbeddedHost,
    token: Secret,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let api = pm_api(host, token);
    let limits = ServerLimits {
        max_connections: MAX_CONNECTIONS,
        max_connections_per_address: MAX_CONNECTIONS,
        header_timeout: HEADER_READ_TIMEOUT,
        pressure_header_timeout: HEADER_READ_TIMEOUT,
        body_timeout: DEFAULT_BODY_TIMEOUT,
        shutdown_grace: SHUTDOWN_GRACE,
        ..ServerLimits::default()
    };
    let bound = Bound::new("pm-api", listener, None, limits).map_err(std::io::Error::other)?;
    server::run(bound, move || api.clone(), Arc::new(|_| {}), shutdown).await;
    Ok(())
}
