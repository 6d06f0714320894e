//! The connection test behind `taskbridge check`: can we reach the endpoint, is its
//! certificate trusted, are the credentials accepted, and may we impersonate a given mailbox?
//!
//! [`run_check`] never fails as a function: every outcome is a [`CheckReport`], whose
//! [`CheckFailure`] (if any) names the first thing that went wrong.

use serde::Serialize;

use crate::client::{EwsClient, EwsClientConfig};
use crate::error::Error;
use crate::generated::EwsOperations;
use crate::ops::get_folder::{GetFolder, GetFolderResponse};
use crate::service::CallContext;
use crate::soap::ServerVersionInfo;
use crate::types::{BaseFolderId, BaseShape, FolderIds, FolderShape, ResponseCode};

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
