//! Redmine's REST API as the host uses it: JSON over HTTP with the `X-Redmine-API-Key` header,
//! `X-Redmine-Switch-User` to act as another user, and the few resources taskbridge reads and
//! writes (projects, issues with their journals, users, time entries, enumerations).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::secret::Secret;

/// Why a call to Redmine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedmineError {
    /// Redmine did not answer (down, slow, a proxy error): retry later.
    #[error("Redmine is unreachable: {0}")]
    Unreachable(String),
    /// 401 or 403: the key is wrong, not an administrator's, or the REST API is off.
    #[error("Redmine refused the API key ({status}): {hint}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What to look at.
        hint: &'static str,
    },
    /// 422: Redmine's validation refused the change; its messages.
    #[error("Redmine refused the change: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// 404.
    #[error("not found in Redmine: {0}")]
    NotFound(String),
    /// Another status or an answer that is not the JSON expected.
    #[error("Redmine answered {0}")]
    Other(String),
    /// The URL is plain `http://` to another machine: the API key (an administrator's) would
    /// cross the network readable by anyone on the way.
    #[error(
        "refusing to send the Redmine API key over plain http:// to {host}: use Redmine's \
         https:// URL in pm.url (pm.ca_file names the CA of a private certificate); plain \
         http:// is accepted only for a Redmine on this machine (localhost, 127.0.0.1, ::1)"
    )]
    PlainHttp {
        /// The host the URL names.
        host: String,
    },
    /// The store of taskbridge's own record of status updates failed.
    #[error("the Redmine update store failed: {0}")]
    Store(String),
    /// No status update has this id.
    #[error("unknown status update {0} (run `taskbridge updates` to list them)")]
    UnknownUpdate(crate::pm::StatusUpdateId),
    /// The update was decided already.
    #[error("status update {id} is {state}, not pending")]
    NotPending {
        /// The update.
        id: crate::pm::StatusUpdateId,
        /// Its state.
        state: String,
    },
    /// Redmine changed fields of the update since it was submitted; approving it would
    /// overwrite those changes (`force` approves anyway).
    #[error(
        "Redmine changed {} since the update was submitted; approve with --force to apply it anyway",
        .0.join(", ")
    )]
    Stale(Vec<String>),
    /// Approving and rejecting needs the update store (`RedmineConfig::updates_file`).
    #[error("the Redmine host keeps no status updates here (no update store configured)")]
    NoUpdateStore,
    /// The URL cannot be used (not http:// or https://, no host).
    #[error("invalid Redmine URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RedmineError {
    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RedmineError::Unreachable(_))
    }
}

/// A reference to another record (`{"id": 1, "name": "..."}`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Ref {
    /// Its id.
    pub id: i64,
    /// Its name, where Redmine gives one.
    #[serde(default)]
    pub name: String,
}

/// A status reference; Redmine 5 says whether it closes the issue.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusRef {
    /// Its id.
    pub id: i64,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Whether issues in it are closed.
    #[serde(default)]
    pub is_closed: bool,
}

/// One change of a journal entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Detail {
    /// `attr` for an issue attribute, `cf`, `attachment`, `relation`.
    pub property: String,
    /// The attribute's name, e.g. `done_ratio`.
    pub name: String,
}

/// One journal entry of an issue: who changed what, when.
#[derive(Debug, Clone, Deserialize)]
pub struct Journal {
    /// When.
    pub created_on: DateTime<Utc>,
    /// The changed attributes.
    #[serde(default)]
    pub details: Vec<Detail>,
}

/// An issue as the API gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project: Ref,
    /// Its tracker.
    pub tracker: Ref,
    /// Its status.
    pub status: StatusRef,
    /// Its priority.
    pub priority: Ref,
    /// Its assignee (a user or a group).
    #[serde(default)]
    pub assigned_to: Option<Ref>,
    /// Its subject.
    #[serde(default)]
    pub subject: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Start date.
    #[serde(default)]
    pub start_date: Option<NaiveDate>,
    /// Due date.
    #[serde(default)]
    pub due_date: Option<NaiveDate>,
    /// % done.
    #[serde(default)]
    pub done_ratio: i64,
    /// Estimated hours.
    #[serde(default)]
    pub estimated_hours: Option<f64>,
    /// Hours spent on the issue itself (issue show only).
    #[serde(default)]
    pub spent_hours: Option<f64>,
    /// Created.
    pub created_on: DateTime<Utc>,
    /// Last changed.
    pub updated_on: DateTime<Utc>,
    /// The journal (issue show with `include=journals` only).
    #[serde(default)]
    pub journals: Vec<Journal>,
}

/// A project.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectRecord {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its identifier (the URL name).
    pub identifier: String,
    /// Its parent.
    #[serde(default)]
    pub parent: Option<Ref>,
}

/// A user as an administrator sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Login name (for `X-Redmine-Switch-User`).
    #[serde(default)]
    pub login: String,
    /// First name.
    #[serde(default)]
    pub firstname: String,
    /// Last name.
    #[serde(default)]
    pub lastname: String,
    /// E-mail address (administrators see everyone's).
    #[serde(default)]
    pub mail: Option<String>,
    /// Whether the user is an administrator (only in the answer about the current user).
    #[serde(default)]
    pub admin: bool,
}

/// A time entry.
#[derive(Debug, Clone, Deserialize)]
pub struct TimeEntry {
    /// Its id.
    pub id: i64,
    /// The project it is booked in.
    #[serde(default)]
    pub project: Option<Ref>,
    /// The issue it is booked on.
    #[serde(default)]
    pub issue: Option<Ref>,
    /// Hours.
    pub hours: f64,
    /// Booked when.
    pub created_on: DateTime<Utc>,
    /// Changed when.
    #[serde(default)]
    pub updated_on: Option<DateTime<Utc>>,
}

/// An enumeration value (priority, activity) or a status or tracker.
#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Whether it is the default (enumerations).
    #[serde(default)]
    pub is_default: bool,
    /// Whether it closes issues (statuses).
    #[serde(default)]
    pub is_closed: bool,
}

/// The REST client of one Redmine.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Secret,
    /// Requests sent by this client and its clones.
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Whether a URL names this machine (where plain http:// does not leave it).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The page size asked for (Redmine's maximum).
const PAGE: usize = 100;

impl Client {
    /// A client for the Redmine at `base` (e.g. `https://redmine.example.com`) with an API
    /// key. `tls` is the TLS configuration to trust Redmine's certificate with (a private CA
    /// added to the system's roots); `None` trusts the system's roots. Certificates are always
    /// verified. Plain `http://` is refused unless Redmine is on this machine
    /// ([`RedmineError::PlainHttp`]).
    pub fn new(
        base: &str,
        key: Secret,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Client, RedmineError> {
        let bad = |reason: &str| RedmineError::BadUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let url = reqwest::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(RedmineError::PlainHttp {
                    host: url.host_str().unwrap_or_default().to_string(),
                });
            }
            _ => return Err(bad("must be an http:// or https:// URL")),
        }
        // reqwest is built without a TLS provider; install ring unless one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("taskbridge/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the key elsewhere (and to http://): Redmine's API does
            // not redirect, so a redirect is an answer to report, not to follow.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(mut tls) = tls {
            // reqwest speaks HTTP/1.1 here; an ALPN list from elsewhere must not offer h2.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder
            .build()
            .map_err(|e| RedmineError::Other(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            requests: Default::default(),
        })
    }

    /// The requests sent to Redmine so far by this client and its clones.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call: `body` as JSON when given, acting as `switch_user` when given; the answer's
    /// JSON (`Null` for an empty answer).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        switch_user: Option<&str>,
    ) -> Result<Value, RedmineError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| RedmineError::Other(format!("{path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self
            .http
            .request(method, url)
            .header("X-Redmine-API-Key", self.key.expose());
        if let Some(login) = switch_user {
            req = req.header("X-Redmine-Switch-User", login);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = req
            .send()
            .await
            .map_err(|e| RedmineError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| RedmineError::Unreachable(e.to_string()))?;
        match status {
            s if s.is_success() => {
                if text.trim().is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_str(&text)
                        .map_err(|e| RedmineError::Other(format!("{path}: not JSON: {e}")))
                }
            }
            StatusCode::UNAUTHORIZED => Err(RedmineError::Refused {
                status: 401,
                hint: "the API key is wrong, or the REST API is not enabled \
                       (Administration > Settings > API)",
            }),
            StatusCode::FORBIDDEN => Err(RedmineError::Refused {
                status: 403,
                hint: "the key's user may not do this; taskbridge needs an administrator's key",
            }),
            StatusCode::NOT_FOUND => Err(RedmineError::NotFound(path.to_string())),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let errors = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| {
                        v["errors"].as_array().map(|a| {
                            a.iter()
                                .filter_map(|e| e.as_str().map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                    })
                    .unwrap_or_else(|| vec![text.trim().to_string()]);
                Err(RedmineError::Invalid(errors))
            }
            s if s.is_server_error() => Err(RedmineError::Unreachable(format!("HTTP {s}"))),
            s => Err(RedmineError::Other(format!("HTTP {s} for {path}"))),
        }
    }

    /// A GET decoded from the member `field` of the answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
    ) -> Result<T, RedmineError> {
        let v = self.call(Method::GET, path, query, None, None).await?;
        serde_json::from_value(v[field].clone())
            .map_err(|e| RedmineError::Other(format!("{path}: {field}: {e}")))
    }

    /// Every page of a list (`offset`/`limit`, until `total_count`).
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
    ) -> Result<Vec<T>, RedmineError> {
        let mut out = Vec::new();
        loop {
            let mut q = query.to_vec();
            q.push(("offset", out.len().to_string()));
            q.push(("limit", PAGE.to_string()));
            let v = self.call(Method::GET, path, &q, None, None).await?;
            let page: Vec<T> = serde_json::from_value(v[field].clone())
                .map_err(|e| RedmineError::Other(format!("{path}: {field}: {e}")))?;
            let n = page.len();
            out.extend(page);
            let total = v["total_count"].as_u64().unwrap_or(0) as usize;
            if n == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// The current user (the key's owner).
    pub async fn current_user(&self) -> Result<User, RedmineError> {
        self.get("/users/current.json", &[], "user").await
    }

    /// One issue with its journal.
    pub async fn issue(&self, id: i64) -> Result<Issue, RedmineError> {
        self.get(
            &format!("/issues/{id}.json"),
            &[("include", "journals".to_string())],
            "issue",
        )
        .await
    }

    /// Changes an issue (`fields` are the members of `issue`).
    pub async fn update_issue(&self, id: i64, fields: Value) -> Result<(), RedmineError> {
        self.call(
            Method::PUT,
            &format!("/issues/{id}.json"),
            &[],
            Some(&serde_json::json!({ "issue": fields })),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Books time on an issue as `login`.
    pub async fn book_time(
        &self,
        issue: i64,
        hours: f64,
        activity: i64,
        comment: &str,
        login: &str,
    ) -> Result<(), RedmineError> {
        let body = serde_json::json!({ "time_entry": {
            "issue_id": issue,
            "hours": hours,
            "activity_id": activity,
            "comments": comment,
        }});
        self.call(
            Method::POST,
            "/time_entries.json",
            &[],
            Some(&body),
            Some(login),
        )
        .await
        .map(|_| ())
    }
}
