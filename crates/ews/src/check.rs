//! The connection test behind `taskbridge check`: can we reach the endpoint, is its
//! certificate trusted, are the credentials accepted, and may we impersonate a given mailbox?
//!
//! [`run_check`] never fails as a function: every outcome is a [`CheckReport`], whose
//! [`CheckFailure`] (if any) names the first thing that went wrong. [`check_modes`] then says
//! which notification modes (streaming, push, pull) work from where it runs.

use std::time::Duration;

use serde::Serialize;

use crate::client::{EwsClient, EwsClientConfig};
use crate::error::Error;
use crate::generated::EwsOperations;
use crate::ops::get_folder::{GetFolder, GetFolderResponse};
use crate::ops::get_streaming_events::{
    CONNECTION_TIMEOUT_MINUTES, ConnectionStatus, GetStreamingEvents, SubscriptionIds,
};
use crate::ops::subscribe::{EventTypes, StreamingSubscriptionRequest, Subscribe};
use crate::ops::sync_folder_items::SyncFolderItems;
use crate::ops::unsubscribe::Unsubscribe;
use crate::service::{CallContext, EwsService};
use crate::soap::ServerVersionInfo;
use crate::types::{
    BaseFolderId, BaseShape, EventType, FolderIds, FolderShape, ItemShape, ResponseCode,
    SubscriptionId,
};

/// What `taskbridge check` found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The endpoint tested.
    pub endpoint: String,
    /// The authentication scheme used.
    pub auth_scheme: &'static str,
    /// Whether the server accepted the credentials (it answered in SOAP).
    pub authenticated: bool,
    /// The server's `ServerVersionInfo`.
    pub server_version: Option<ServerVersionInfo>,
    /// Shown as `15.1.2507.6 (V2017_07_11)`.
    pub server_version_text: Option<String>,
    /// The mailbox tested for impersonation.
    pub mailbox: Option<String>,
    /// The id of that mailbox's Tasks folder.
    pub tasks_folder_id: Option<String>,
    /// Whether impersonating the mailbox works (`None`: not tried).
    pub impersonation: Option<bool>,
    /// Notes that are not failures (e.g. the account has no mailbox of its own).
    pub notes: Vec<String>,
    /// The first failure, if any.
    pub failure: Option<CheckFailure>,
}

/// What went wrong, one kind per cause a person would fix differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckFailure {
    /// The settings are invalid (URL, CA file, ...).
    #[error("invalid settings: {0}")]
    Config(String),
    /// The endpoint cannot be reached (DNS, refused, time-out, dropped).
    #[error("cannot reach the EWS endpoint: {0}")]
    Unreachable(String),
    /// TLS failed for a reason other than the certificate.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The server's certificate is not trusted.
    #[error("the server's certificate is not trusted (add its CA with --ca-file): {0}")]
    UntrustedCertificate(String),
    /// The credentials were refused.
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    /// The account may not impersonate the mailbox.
    #[error(
        "the account may not impersonate the mailbox (grant it the ApplicationImpersonation role): {0}"
    )]
    ImpersonationDenied(String),
    /// The mailbox does not exist.
    #[error("the mailbox does not exist: {0}")]
    MailboxNotFound(String),
    /// Anything else (a SOAP fault, throttling, an unexpected HTTP status).
    #[error("{0}")]
    Other(String),
}

impl CheckFailure {
    fn from_error(err: Error) -> Self {
        match err {
            Error::Config(m) => CheckFailure::Config(m),
            // Kerberos asked for on a machine without the GSSAPI library: a setup problem.
            Error::Kerberos(e) => CheckFailure::Config(e.to_string()),
            Error::Connection(m) => CheckFailure::Unreachable(m),
            Error::Tls(m) => CheckFailure::Tls(m),
            Error::UntrustedCertificate(m) => CheckFailure::UntrustedCertificate(m),
            Error::Unauthorized { scheme, detail } => {
                CheckFailure::Unauthorized(format!("{scheme}: {detail}"))
            }
            Error::Fault(fault) => match fault.response_code {
                Some(
                    ResponseCode::ErrorImpersonateUserDenied
                    | ResponseCode::ErrorImpersonationDenied,
                ) => CheckFailure::ImpersonationDenied(fault.to_string()),
                Some(ResponseCode::ErrorNonExistentMailbox) => {
                    CheckFailure::MailboxNotFound(fault.to_string())
                }
                _ => CheckFailure::Other(format!("SOAP fault: {fault}")),
            },
            Error::Decode { source, .. } => CheckFailure::Other(format!(
                "the answer is not an EWS response (is the URL the EWS endpoint?): {source}"
            )),
            other => CheckFailure::Other(other.to_string()),
        }
    }
}

fn tasks_request(folder: BaseFolderId) -> GetFolder {
    GetFolder {
        folder_shape: FolderShape {
            base_shape: BaseShape::IdOnly,
            additional_properties: None,
        },
        folder_ids: FolderIds(vec![folder]),
    }
}

/// The Tasks folder id in a GetFolder response, or the failed message's code and text.
fn tasks_folder(resp: &GetFolderResponse) -> Result<String, (ResponseCode, String)> {
    let Some(message) = resp.response_messages.first() else {
        return Err((
            ResponseCode::Other("(no message)".into()),
            "the response holds no message".into(),
        ));
    };
    if !message.is_success() {
        return Err((
            message.code(),
            message.message_text.clone().unwrap_or_default(),
        ));
    }
    message
        .payload
        .folders
        .as_ref()
        .and_then(|f| f.0.first())
        .and_then(|f| f.folder.folder_id.as_ref())
        .map(|id| id.id.to_string())
        .ok_or_else(|| {
            (
                ResponseCode::Other("(no folder)".into()),
                "the response holds no folder id".into(),
            )
        })
}

/// Tests `config` against its endpoint, and impersonation of `mailbox` if given.
///
/// Step 1 asks for the account's own Tasks folder, without impersonation: any SOAP answer
/// proves reachability, trust and credentials (an account without a mailbox of its own gets a
/// per-message error, noted but not a failure). Step 2 asks for `mailbox`'s Tasks folder by
/// impersonation.
pub async fn run_check(config: &EwsClientConfig, mailbox: Option<&str>) -> CheckReport {
    let mut report = CheckReport {
        endpoint: config.endpoint.clone(),
        auth_scheme: config.auth.scheme(),
        authenticated: false,
        server_version: None,
        server_version_text: None,
        mailbox: mailbox.map(str::to_string),
        tasks_folder_id: None,
        impersonation: None,
        notes: Vec::new(),
        failure: None,
    };
    let client = match EwsClient::new(config.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.failure = Some(CheckFailure::from_error(e));
            return report;
        }
    };
    let own = client
        .get_folder(
            &CallContext::default(),
            &tasks_request(BaseFolderId::tasks_of(None)),
        )
        .await;
    report.server_version = client.server_version();
    report.server_version_text = report.server_version.as_ref().map(|v| v.to_string());
    match own {
        Ok(resp) => {
            report.authenticated = true;
            if let Err((code, text)) = tasks_folder(&resp) {
                report.notes.push(format!(
                    "the account's own Tasks folder is not available ({}: {text})",
                    code.as_str()
                ));
            }
        }
        Err(Error::Fault(fault)) => {
            // A SOAP fault comes after authentication.
            report.authenticated = true;
            report.notes.push(format!(
                "the account's own Tasks folder: SOAP fault {fault}"
            ));
            if mailbox.is_none() {
                report.failure = Some(CheckFailure::from_error(Error::Fault(fault)));
                return report;
            }
        }
        Err(e) => {
            report.failure = Some(CheckFailure::from_error(e));
            return report;
        }
    }
    let Some(mailbox) = mailbox else {
        return report;
    };
    let result = client
        .get_folder(
            &CallContext::for_mailbox(mailbox),
            &tasks_request(BaseFolderId::tasks_of(None)),
        )
        .await;
    if report.server_version.is_none() {
        report.server_version = client.server_version();
        report.server_version_text = report.server_version.as_ref().map(|v| v.to_string());
    }
    match result {
        Ok(resp) => match tasks_folder(&resp) {
            Ok(id) => {
                report.tasks_folder_id = Some(id);
                report.impersonation = Some(true);
            }
            Err((code, text)) => {
                let detail = format!("{}: {text}", code.as_str());
                report.failure = Some(match code {
                    ResponseCode::ErrorImpersonateUserDenied
                    | ResponseCode::ErrorImpersonationDenied => {
                        report.impersonation = Some(false);
                        CheckFailure::ImpersonationDenied(detail)
                    }
                    ResponseCode::ErrorNonExistentMailbox => CheckFailure::MailboxNotFound(detail),
                    _ => CheckFailure::Other(format!("GetFolder(tasks) for {mailbox}: {detail}")),
                });
            }
        },
        Err(e) => {
            let failure = CheckFailure::from_error(e);
            if matches!(failure, CheckFailure::ImpersonationDenied(_)) {
                report.impersonation = Some(false);
            }
            report.failure = Some(failure);
        }
    }
    report
}

/// How long a probe of the push URL may take to connect.
const PUSH_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the streaming probe waits on the open response for an early error envelope (an
/// unknown subscription is answered at once; a good connection sends nothing until the first
/// keep-alive, so silence after the HTTP 200 head means it holds).
const STREAMING_SETTLE: Duration = Duration::from_secs(2);

/// One notification mode tried from where `taskbridge check` runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModeCheck {
    /// `streaming`, `push` or `pull`.
    pub mode: &'static str,
    /// Whether it works from here (`None`: not tried, e.g. no push URL configured).
    pub works: Option<bool>,
    /// What was tried and what came of it, or the reason it failed.
    pub detail: String,
}

/// The three notification modes as seen from here, and the one to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModesReport {
    /// The mailbox the subscriptions and the sync were made for.
    pub mailbox: String,
    /// Streaming, push, pull, in that order.
    pub modes: Vec<ModeCheck>,
    /// The mode recommended from here (`None`: none works).
    pub recommended: Option<&'static str>,
}

/// Tries each notification mode for `mailbox` (by impersonation, as the connector does).
///
/// - streaming: Subscribe with a streaming subscription, open one GetStreamingEvents
///   connection (`ConnectionTimeout` 1 minute, the least allowed), see its HTTP 200 head and no
///   error envelope, close it, Unsubscribe;
/// - push: whether a TCP connection to the host and port of `push_url` opens from here. That
///   cannot prove that Exchange reaches it (it connects from its own network), and the report
///   says so;
/// - pull: one SyncFolderItems of the Tasks folder.
///
/// Streaming is recommended when it works, since it needs no inbound connection; push when only
/// its URL answers; pull otherwise. No failure here is fatal: each is one mode's line.
pub async fn check_modes(
    config: &EwsClientConfig,
    mailbox: &str,
    push_url: Option<&str>,
) -> ModesReport {
    let client = EwsClient::new(config.clone());
    let (streaming, pull) = match &client {
        Ok(client) => (
            check_streaming(client, mailbox).await,
            check_pull(client, mailbox).await,
        ),
        Err(e) => (
            fails("streaming", e.to_string()),
            fails("pull", e.to_string()),
        ),
    };
    let push = match push_url {
        Some(url) => check_push(url).await,
        None => ModeCheck {
            mode: "push",
            works: None,
            detail: "not checked: no public URL of the listener configured".into(),
        },
    };
    let recommended = [&streaming, &push, &pull]
        .into_iter()
        .find(|m| m.works == Some(true))
        .map(|m| m.mode);
    ModesReport {
        mailbox: mailbox.to_string(),
        modes: vec![streaming, push, pull],
        recommended,
    }
}

fn fails(mode: &'static str, detail: String) -> ModeCheck {
    ModeCheck {
        mode,
        works: Some(false),
        detail,
    }
}

/// The code and text of a failed response message.
fn message_failure(code: &ResponseCode, text: Option<&str>) -> String {
    format!("{}: {}", code.as_str(), text.unwrap_or_default())
}

async fn check_streaming(client: &EwsClient, mailbox: &str) -> ModeCheck {
    let ctx = CallContext::for_mailbox(mailbox);
    let request = Subscribe::Streaming(StreamingSubscriptionRequest {
        folder_ids: Some(FolderIds(vec![BaseFolderId::tasks_of(Some(mailbox))])),
        event_types: EventTypes {
            event_types: vec![EventType::CreatedEvent, EventType::ModifiedEvent],
        },
    });
    // As the engine does: ask for the backend cookie, and send it with the connection, so
    // that a farm of several Mailbox servers routes the connection to the subscription's.
    let subscribing = ctx
        .clone()
        .with_http_header(crate::affinity::prefer_server_affinity());
    let (id, ctx) = match client.send_with_headers(subscribing, &request).await {
        Ok((resp, headers)) => match resp.response_messages.first() {
            Some(m) if m.is_success() => match m.payload.subscription_id.clone() {
                Some(id) => match crate::affinity::BackendCookie::from_response(&headers) {
                    Some(cookie) => (id, ctx.with_http_header(cookie.request_header())),
                    None => (id, ctx),
                },
                None => return fails("streaming", "Subscribe answered without an id".into()),
            },
            Some(m) => {
                return fails(
                    "streaming",
                    format!(
                        "Subscribe refused ({})",
                        message_failure(&m.code(), m.message_text.as_deref())
                    ),
                );
            }
            None => return fails("streaming", "Subscribe answered no message".into()),
        },
        Err(e) => return fails("streaming", format!("Subscribe failed: {e}")),
    };
    let opened = open_stream(client, &ctx, &id).await;
    // Always unsubscribe, whatever the connection did; an expired subscription would go anyway.
    let gone = client
        .unsubscribe(
            &ctx,
            &Unsubscribe {
                subscription_id: id,
            },
        )
        .await;
    match opened {
        Err(reason) => fails("streaming", reason),
        Ok(()) => {
            let mut detail = "a streaming subscription and a GetStreamingEvents connection \
                              opened and held"
                .to_string();
            if let Err(e) = gone {
                detail.push_str(&format!(" (Unsubscribe failed: {e})"));
            }
            ModeCheck {
                mode: "streaming",
                works: Some(true),
                detail,
            }
        }
    }
}

/// Opens one GetStreamingEvents connection for `id` and closes it; `Err` is why it failed.
async fn open_stream(
    client: &EwsClient,
    ctx: &CallContext,
    id: &SubscriptionId,
) -> Result<(), String> {
    let request = GetStreamingEvents {
        subscription_ids: SubscriptionIds {
            subscription_ids: vec![id.clone()],
        },
        connection_timeout: *CONNECTION_TIMEOUT_MINUTES.start(),
    };
    let mut stream = client
        .get_streaming_events(ctx.clone(), &request)
        .await
        .map_err(|e| format!("GetStreamingEvents failed: {e}"))?;
    let first = match tokio::time::timeout(STREAMING_SETTLE, stream.next()).await {
        // Nothing yet: the response is open and waiting for events, as it should be.
        Err(_) => return Ok(()),
        Ok(first) => first,
    };
    match first {
        None => Err("the server ended the GetStreamingEvents response at once".into()),
        Some(Err(e)) => Err(format!("GetStreamingEvents failed: {e}")),
        Some(Ok(resp)) => match resp.response_messages.iter().find(|m| !m.is_success()) {
            Some(m) => Err(format!(
                "GetStreamingEvents refused ({})",
                message_failure(&m.code(), m.message_text.as_deref())
            )),
            None if resp
                .response_messages
                .iter()
                .any(|m| m.payload.connection_status == Some(ConnectionStatus::Closed)) =>
            {
                Err("the server closed the streaming connection at once".into())
            }
            None => Ok(()),
        },
    }
}

async fn check_push(url: &str) -> ModeCheck {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return fails("push", format!("the public URL {url} is not a URL: {e}")),
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return fails("push", format!("the public URL {url} names no host"));
    };
    // A URL host in brackets is an IPv6 address; connect wants it bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let caveat = "this does not prove Exchange can reach it from its own network";
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    let caveat = if loopback {
        format!("{caveat}; a loopback address is reachable only from this machine")
    } else {
        caveat.to_string()
    };
    match tokio::time::timeout(
        PUSH_PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => ModeCheck {
            mode: "push",
            works: Some(true),
            detail: format!(
                "{url} answers from here ({host}:{port} accepts connections); {caveat}"
            ),
        },
        Ok(Err(e)) => fails(
            "push",
            format!("{url} does not answer from here ({host}:{port}: {e})"),
        ),
        Err(_) => fails(
            "push",
            format!(
                "{url} does not answer from here ({host}:{port}: no connection within {} s)",
                PUSH_PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn check_pull(client: &EwsClient, mailbox: &str) -> ModeCheck {
    let request = SyncFolderItems {
        item_shape: ItemShape::new(BaseShape::IdOnly, Vec::new()),
        sync_folder_id: FolderIds(vec![BaseFolderId::tasks_of(Some(mailbox))]),
        sync_state: None,
        ignore: None,
        max_changes_returned: 1,
    };
    match client
        .sync_folder_items(&CallContext::for_mailbox(mailbox), &request)
        .await
    {
        Ok(resp) => match resp.response_messages.first() {
            Some(m) if m.is_success() => ModeCheck {
                mode: "pull",
                works: Some(true),
                detail: "SyncFolderItems of the Tasks folder works".into(),
            },
            Some(m) => fails(
                "pull",
                format!(
                    "SyncFolderItems refused ({})",
                    message_failure(&m.code(), m.message_text.as_deref())
                ),
            ),
            None => fails("pull", "SyncFolderItems answered no message".into()),
        },
        Err(e) => fails("pull", format!("SyncFolderItems failed: {e}")),
    }
}
