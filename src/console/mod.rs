//! The web console: pending updates, conflicts and projects for status managers and operators,
//! served by `taskbridge serve` on the admin address under `/console/`.
//!
//! Server-rendered HTML (askama templates checked at compile time) with its stylesheet and a
//! little script embedded in the binary: every page works without JavaScript. Accounts come
//! from [`UserStore`] (`taskbridge users`); a sign-in starts an in-memory session held in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS), and every form carries the
//! session's CSRF token. Managers see and act on their own projects only: each action checks the
//! project of the update, conflict or project it names on the server, whatever the form says.
//! Optionally a reverse proxy names the user in a header (`ui.trusted_user_header`), believed
//! only from the configured proxy addresses. The PM API under `/pm/` keeps its bearer token:
//! requests outside `/console/` go to the fallback unchanged.

pub mod pages;
pub mod session;
pub mod sync_view;
pub mod users;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::ews::server::Peer;
use crate::listener::admin::{AdminBody, Fallback, Readiness};
use crate::pm::AssignmentField;
use crate::pm::ProjectGuid;
use crate::pm::embedded::{ConflictDesk, EmbeddedHost, Policy, StatusUpdateRecord, UpdateFilter};
use crate::pm::host::{FieldValue, StatusUpdateId};
use crate::sync::RetryOutcome;

pub use session::Sessions;
pub use users::{Role, User, UserError, UserStore};

use pages::{Chrome, Flash, NavItem};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tb_session";
/// The cookie that carries the sign-in form's CSRF token before there is a session.
pub const SIGNIN_COOKIE: &str = "tb_signin";
/// The largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// How the console is set up.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// The accounts file.
    pub users_file: PathBuf,
    /// A header a reverse proxy sets to the signed-in user's name (e.g. `X-Remote-User`).
    pub trusted_user_header: Option<String>,
    /// The addresses the header is believed from.
    pub trusted_proxies: Vec<IpAddr>,
    /// Mark cookies `Secure` even on plain HTTP (a proxy terminates TLS in front).
    pub secure_cookies: bool,
}

/// The console; cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    host: EmbeddedHost,
    desk: Option<Arc<dyn ConflictDesk>>,
    sync: Option<Arc<dyn sync_view::SyncView>>,
    users: UserStore,
    sessions: Sessions,
    config: ConsoleConfig,
    readiness: Readiness,
    /// Raised after each decision, so that notices about it go out at once.
    decisions: Option<Arc<tokio::sync::Notify>>,
    flashes: std::sync::Mutex<std::collections::HashMap<String, Flash>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("users_file", &self.inner.config.users_file)
            .finish_non_exhaustive()
    }
}

/// The caller as the console knows them.
struct Caller {
    user: User,
    /// The session key (cookie value, or the proxy user's key).
    key: String,
    csrf: String,
}

/// A decoded form.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Reply = Response<AdminBody>;

impl Console {
    /// The console over `host`, showing `readiness` in its header.
    pub fn new(host: EmbeddedHost, config: ConsoleConfig, readiness: Readiness) -> Console {
        Console {
            inner: Arc::new(Inner {
                host,
                desk: None,
                sync: None,
                users: UserStore::new(config.users_file.clone()),
                sessions: Sessions::default(),
                config,
                readiness,
                decisions: None,
                flashes: Default::default(),
            }),
        }
    }

    /// Lists and settles conflicts through `desk`.
    pub fn with_conflicts(self, desk: Arc<dyn ConflictDesk>) -> Console {
        let mut inner = Arc::into_inner(self.inner).expect("configured before it is shared");
        inner.desk = Some(desk);
        Console {
            inner: Arc::new(inner),
        }
    }

    /// Raises `signal` after every approval or rejection made here (the notices watch it to
    /// tell the person about a rejection at once).
    pub fn with_decision_signal(self, signal: Arc<tokio::sync::Notify>) -> Console {
        let mut inner = Arc::into_inner(self.inner).expect("configured before it is shared");
        inner.decisions = Some(signal);
        Console {
            inner: Arc::new(inner),
        }
    }

    /// Shows the audit log and the mailboxes' health from `view` (the engine).
    pub fn with_sync_view(self, view: Arc<dyn sync_view::SyncView>) -> Console {
        let mut inner = Arc::into_inner(self.inner).expect("configured before it is shared");
        inner.sync = Some(view);
        Console {
            inner: Arc::new(inner),
        }
    }

    /// A fallback that answers `/` and `/console/...` and hands every other request to `rest`.
    pub fn mount(self, rest: Option<Fallback>) -> Fallback {
        Arc::new(move |req: Request<Incoming>| {
            let console = self.clone();
            let rest = rest.clone();
            Box::pin(async move {
                let path = req.uri().path();
                if path == "/" || path == "/console" || path.starts_with("/console/") {
                    console.handle(req).await
                } else if let Some(rest) = rest {
                    rest(req).await
                } else {
                    plain(StatusCode::NOT_FOUND, "not found")
                }
            })
        })
    }

    /// Answers one console request.
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let (parts, body) = req.into_parts();
        let peer = parts.extensions.get::<Peer>().copied().unwrap_or(Peer {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            tls: false,
        });
        let path = parts.uri.path().trim_end_matches('/').to_owned();
        let method = parts.method.clone();
        match (method.clone(), path.as_str()) {
            (Method::GET, "/console/assets/console.css") => {
                return asset("text/css; charset=utf-8", CSS);
            }
            (Method::GET, "/console/assets/console.js") => {
                return asset("text/javascript; charset=utf-8", JS);
            }
            (Method::GET, "" | "/console") => return redirect("/console/updates", None),
            _ => {}
        }
        let form = if method == Method::POST {
            match read_form(body).await {
                Some(f) => f,
                None => return plain(StatusCode::BAD_REQUEST, "a form body was expected"),
            }
        } else {
            Form(Vec::new())
        };
        let cookies = cookies(&parts.headers);
        let secure = peer.tls || self.inner.config.secure_cookies;
        if path == "/console/signin" {
            return self.signin(&method, &form, &cookies, peer, secure).await;
        }
        let Some(caller) = self.caller(&parts.headers, &cookies, peer) else {
            return if method == Method::GET {
                redirect("/console/signin", None)
            } else {
                self.error_page(None, StatusCode::FORBIDDEN, "Sign in first.")
            };
        };
        if method == Method::POST {
            // Every form carries the session's token; one that does not (another site's
            // form, a stale page after signing in again) changes nothing.
            let given = form.get("csrf").unwrap_or("");
            if !session::same_token(given, &caller.csrf) {
                return self.error_page(
                    Some(&caller),
                    StatusCode::FORBIDDEN,
                    "This form is not valid any more (its security token is missing or old). \
                     Reload the page and try again.",
                );
            }
        }
        let query = parts.uri.query().unwrap_or("").to_owned();
        let result = match (method, path.as_str()) {
            (Method::GET, "/console/updates") => self.updates_page(&caller, &query).await,
            (Method::POST, "/console/updates/decide") => self.decide(&caller, &form).await,
            (Method::GET, "/console/conflicts") => self.conflicts_page(&caller).await,
            (Method::POST, "/console/conflicts/resolve") => self.resolve(&caller, &form).await,
            (Method::GET, "/console/projects") => self.projects_page(&caller).await,
            (Method::GET, "/console/health") => self.health_page(&caller).await,
            (Method::POST, "/console/health/retry") => self.retry_parked(&caller, &form).await,
            (Method::GET, "/console/audit") => self.audit_page(&caller, &query).await,
            (Method::POST, "/console/projects/policy") => self.policy(&caller, &form).await,
            (Method::POST, "/console/projects/publish") => self.publish(&caller, &form).await,
            (Method::POST, "/console/signout") => {
                self.inner.sessions.end(&caller.key);
                return redirect("/console/signin", Some(session_cookie("", secure, true)));
            }
            _ => Err((StatusCode::NOT_FOUND, "There is no such page.".to_string())),
        };
        result.unwrap_or_else(|(status, message)| self.error_page(Some(&caller), status, &message))
    }

    /// The caller: a trusted proxy's user, else the session cookie's.
    fn caller(
        &self,
        headers: &http::HeaderMap,
        cookies: &BTreeMap<String, String>,
        peer: Peer,
    ) -> Option<Caller> {
        if let Some(name) = self.inner.config.trusted_user_header.as_deref()
            && self.inner.config.trusted_proxies.contains(&peer.addr.ip())
            && let Some(user) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            let user = self.inner.users.get(user.trim()).ok().flatten()?;
            let session = self.inner.sessions.for_proxy_user(&user.name);
            return Some(Caller {
                key: format!("proxy:{}", user.name),
                csrf: session.csrf,
                user,
            });
        }
        let key = cookies.get(SESSION_COOKIE)?;
        let session = self.inner.sessions.get(key)?;
        // Read at every request: a removed account or changed projects take effect at once.
        let user = self.inner.users.get(&session.user).ok().flatten()?;
        Some(Caller {
            user,
            key: key.clone(),
            csrf: session.csrf,
        })
    }

    async fn signin(
        &self,
        method: &Method,
        form: &Form,
        cookies: &BTreeMap<String, String>,
        peer: Peer,
        secure: bool,
    ) -> Reply {
        let show = |error: Option<String>, name: String, status: StatusCode| {
            let token = session::token();
            let page = pages::SignIn {
                c: self.chrome("Sign in", None, &token, None),
                error,
                name,
            };
            let mut reply = html(status, page.render());
            reply.headers_mut().append(
                header::SET_COOKIE,
                cookie_header(SIGNIN_COOKIE, &token, secure, false),
            );
            reply
        };
        if *method != Method::POST {
            return show(None, String::new(), StatusCode::OK);
        }
        let expected = cookies.get(SIGNIN_COOKIE).map(String::as_str).unwrap_or("");
        if !session::same_token(form.get("csrf").unwrap_or(""), expected) {
            return show(
                Some("The sign-in form expired. Please try again.".into()),
                String::new(),
                StatusCode::FORBIDDEN,
            );
        }
        let name = form.get("name").unwrap_or("").trim().to_owned();
        let password = form.get("password").unwrap_or("");
        let ip = peer.addr.ip();
        if self.inner.sessions.throttled(ip, &name) {
            return show(
                Some("Too many failed sign-ins. Wait a quarter of an hour and try again.".into()),
                name,
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        let user = self.inner.users.get(&name).ok().flatten();
        // Hash even for an unknown name, so that the answer's timing does not tell names apart.
        let ok = match &user {
            Some(u) => u.check_password(password),
            None => {
                let _ = users::hash_password("not a real password at all");
                false
            }
        };
        if !ok {
            self.inner.sessions.failed(ip, &name);
            tracing::info!(%ip, name = %name, "console sign-in refused");
            return show(
                Some("The name or the password is not right.".into()),
                name,
                StatusCode::UNAUTHORIZED,
            );
        }
        self.inner.sessions.succeeded(&name);
        let id = self.inner.sessions.start(&name);
        tracing::info!(%ip, name = %name, "console sign-in");
        let mut reply = redirect("/console/updates", Some(session_cookie(&id, secure, false)));
        reply.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(SIGNIN_COOKIE, "", secure, true),
        );
        reply
    }

    fn chrome(
        &self,
        title: &str,
        caller: Option<&Caller>,
        csrf: &str,
        current: Option<&str>,
    ) -> Chrome {
        let nav = [
            ("/console/updates", "Pending updates"),
            ("/console/conflicts", "Conflicts"),
            ("/console/projects", "Projects"),
            ("/console/health", "Sync health"),
            ("/console/audit", "Audit"),
        ]
        .into_iter()
        .map(|(href, label)| NavItem {
            href,
            label,
            current: Some(href) == current,
        })
        .collect();
        let flash = caller.and_then(|c| {
            self.inner
                .flashes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&c.key)
        });
        let degraded = if self.inner.readiness.is_ready() {
            self.inner.readiness.degraded()
        } else {
            None
        };
        Chrome {
            title: title.to_owned(),
            user: caller.map(|c| c.user.name.clone()),
            role: caller.map(|c| c.user.role.as_str()).unwrap_or(""),
            nav,
            csrf: csrf.to_owned(),
            degraded,
            flash,
        }
    }

    fn flash(&self, caller: &Caller, ok: bool, text: String) {
        self.inner
            .flashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(caller.key.clone(), Flash { ok, text });
    }

    fn error_page(&self, caller: Option<&Caller>, status: StatusCode, message: &str) -> Reply {
        let csrf = caller.map(|c| c.csrf.clone()).unwrap_or_default();
        let page = pages::ErrorPage {
            c: self.chrome("Not done", caller, &csrf, None),
            message: message.to_owned(),
        };
        html(status, page.render())
    }

    async fn project_names(&self) -> Result<BTreeMap<ProjectGuid, String>, Failure> {
        Ok(self
            .inner
            .host
            .project_summaries()
            .await
            .map_err(failed)?
            .into_iter()
            .map(|p| (p.guid, p.name))
            .collect())
    }

    async fn updates_page(&self, caller: &Caller, _query: &str) -> Result<Reply, Failure> {
        let names = self.project_names().await?;
        let updates = self
            .inner
            .host
            .status_updates(UpdateFilter::pending())
            .await
            .map_err(failed)?;
        let mut projects: Vec<pages::ProjectUpdates> = Vec::new();
        for u in updates
            .into_iter()
            .filter(|u| caller.user.may_see(u.key.project))
        {
            let guid = u.key.project.to_string();
            let row = update_row(&u);
            match projects.iter_mut().find(|p| p.guid == guid) {
                Some(p) => p.updates.push(row),
                None => projects.push(pages::ProjectUpdates {
                    name: names
                        .get(&u.key.project)
                        .cloned()
                        .unwrap_or_else(|| guid.clone()),
                    guid,
                    updates: vec![row],
                }),
            }
        }
        let page = pages::Updates {
            c: self.chrome(
                "Pending updates",
                Some(caller),
                &caller.csrf,
                Some("/console/updates"),
            ),
            projects,
        };
        Ok(html(StatusCode::OK, page.render()))
    }

    /// Approves or rejects the updates the form names, each checked against the caller's
    /// projects.
    async fn decide(&self, caller: &Caller, form: &Form) -> Result<Reply, Failure> {
        let (action, ids): (&str, Vec<String>) = match form.get("single") {
            Some(single) => {
                let (action, id) = single
                    .split_once(':')
                    .ok_or_else(|| bad("The form names no update."))?;
                (action, vec![id.to_owned()])
            }
            None => (
                form.get("action").unwrap_or(""),
                form.all("id").map(str::to_owned).collect(),
            ),
        };
        if ids.is_empty() {
            self.flash(caller, false, "Select at least one update first.".into());
            return Ok(redirect("/console/updates", None));
        }
        // One row's own Reject takes the reason typed beside it; the selected rows share the
        // one under the table.
        let reason = match form.get("single") {
            Some(_) => form.get(&format!("reason-{}", ids[0])),
            None => form.get("reason"),
        }
        .map(str::trim)
        .filter(|r| !r.is_empty());
        let host = &self.inner.host;
        // Checked first, all of them: a form naming one update of another project changes
        // nothing.
        let mut records = Vec::new();
        for id in &ids {
            let record = host
                .status_update(&StatusUpdateId(id.clone()))
                .await
                .map_err(failed)?
                .filter(|r| caller.user.may_see(r.key.project))
                .ok_or_else(|| not_found("There is no such update among your projects."))?;
            records.push(record);
        }
        let (mut done, mut refused) = (0usize, Vec::new());
        for record in &records {
            let outcome = match action {
                "approve" => host.approve(&record.id, &caller.user.name, false).await,
                "reject" => host.reject(&record.id, &caller.user.name, reason).await,
                _ => return Err(bad("Approve or reject?")),
            };
            match outcome {
                Ok(_) => done += 1,
                Err(e) => refused.push(format!(
                    "{}: {e}",
                    record.task_name.as_deref().unwrap_or(&record.id.0)
                )),
            }
        }
        if done > 0
            && let Some(signal) = &self.inner.decisions
        {
            signal.notify_one();
        }
        let verb = if action == "approve" {
            "approved"
        } else {
            "rejected"
        };
        let mut text = format!("{done} update{} {verb}.", if done == 1 { "" } else { "s" });
        if !refused.is_empty() {
            text.push_str(&format!(" Not done: {}", refused.join("; ")));
        }
        self.flash(caller, refused.is_empty(), text);
        Ok(redirect("/console/updates", None))
    }

    async fn conflicts_page(&self, caller: &Caller) -> Result<Reply, Failure> {
        let names = self.project_names().await?;
        let mut rows = Vec::new();
        if let Some(desk) = &self.inner.desk {
            let list = desk
                .list(None)
                .await
                .map_err(|e| failed(format!("{e:?}")))?;
            for k in serde_json::from_value::<Vec<ConflictJson>>(list).unwrap_or_default() {
                if !caller.user.may_see(k.key.project) {
                    continue;
                }
                let project = k.key.project;
                let task = self
                    .task_name(project, &k.key.assignment.to_string())
                    .await
                    .unwrap_or_else(|| k.key.assignment.to_string());
                rows.push(pages::ConflictRow {
                    id: k.id,
                    task,
                    project: names.get(&project).cloned().unwrap_or_default(),
                    mailbox: k.mailbox,
                    field: field_label(&k.field),
                    pm_value: k.pm_value,
                    pm_at: when(k.pm_changed_at),
                    mail_value: k.mail_value,
                    mail_at: when(k.mail_changed_at),
                });
            }
        }
        let page = pages::Conflicts {
            c: self.chrome(
                "Conflicts",
                Some(caller),
                &caller.csrf,
                Some("/console/conflicts"),
            ),
            conflicts: rows,
        };
        Ok(html(StatusCode::OK, page.render()))
    }

    async fn task_name(&self, project: ProjectGuid, assignment: &str) -> Option<String> {
        let p = self.inner.host.load_project(project).await.ok()??;
        let a = p
            .assignments
            .iter()
            .find(|a| a.uid.to_string() == assignment)?;
        p.tasks
            .iter()
            .find(|t| t.uid == a.task_uid)
            .map(|t| t.name.clone())
    }

    async fn resolve(&self, caller: &Caller, form: &Form) -> Result<Reply, Failure> {
        let desk = self
            .inner
            .desk
            .as_ref()
            .ok_or_else(|| not_found("Conflicts are not available here."))?;
        let id = form.get("id").unwrap_or("");
        // The id starts with the project's GUID; the caller must manage that project.
        let project = id
            .split(':')
            .next()
            .and_then(|g| g.parse::<ProjectGuid>().ok())
            .filter(|p| caller.user.may_see(*p))
            .ok_or_else(|| not_found("There is no such conflict among your projects."))?;
        let take = match form.get("take") {
            Some("pm") => "pm",
            Some("mailbox") => "mailbox",
            _ => return Err(bad("Take the plan's or the mailbox's?")),
        };
        let _ = project;
        match desk
            .resolve(id, take, &caller.user.name, Some("settled in the console"))
            .await
        {
            Ok(_) => self.flash(
                caller,
                true,
                format!(
                    "Conflict settled: the {} value stands.",
                    if take == "pm" { "plan's" } else { "mailbox's" }
                ),
            ),
            Err(e) => self.flash(caller, false, format!("Not settled: {e:?}")),
        }
        Ok(redirect("/console/conflicts", None))
    }

    async fn projects_page(&self, caller: &Caller) -> Result<Reply, Failure> {
        let projects = self
            .inner
            .host
            .project_summaries()
            .await
            .map_err(failed)?
            .into_iter()
            .filter(|p| caller.user.may_see(p.guid))
            .map(|p| pages::ProjectRow {
                guid: p.guid.to_string(),
                name: p.name,
                assignments: p.assignments,
                mailbox_assignments: p.mailbox_assignments,
                pending: p.pending_updates,
                published: when(Some(p.published_at)),
                revision: p.revision,
                approval: p.policy == Policy::Approval,
            })
            .collect();
        let page = pages::Projects {
            c: self.chrome(
                "Projects",
                Some(caller),
                &caller.csrf,
                Some("/console/projects"),
            ),
            projects,
        };
        Ok(html(StatusCode::OK, page.render()))
    }

    async fn health_page(&self, caller: &Caller) -> Result<Reply, Failure> {
        if caller.user.role != Role::Admin {
            return Err(not_found("Sync health is for admins."));
        }
        let mut mailboxes = Vec::new();
        let mut parked = Vec::new();
        if let Some(view) = &self.inner.sync {
            let names = self.project_names().await?;
            for m in view.health().await.map_err(failed)? {
                for (key, reason) in &m.parked {
                    parked.push(pages::ParkedRow {
                        key: key.to_string(),
                        task: self
                            .task_name(key.project, &key.assignment.to_string())
                            .await
                            .unwrap_or_else(|| key.to_string()),
                        project: names.get(&key.project).cloned().unwrap_or_default(),
                        mailbox: m.mailbox.clone(),
                        reason: reason.clone(),
                    });
                }
                mailboxes.push(pages::MailboxRow {
                    mailbox: m.mailbox,
                    subscription: if m.subscribed { "active" } else { "none" },
                    last_notification: when(m.last_notification),
                    last_pass: when(m.last_pass),
                    last_reconcile: when(m.last_reconcile),
                    last_error: m.last_error.unwrap_or_default(),
                    parked: m.parked.len(),
                    awaiting_plan: m.awaiting_plan,
                });
            }
        }
        let page = pages::Health {
            c: self.chrome(
                "Sync health",
                Some(caller),
                &caller.csrf,
                Some("/console/health"),
            ),
            mailboxes,
            parked,
        };
        Ok(html(StatusCode::OK, page.render()))
    }

    /// Takes a parked item back and tries it at once. Admins only, as the page is: what parks
    /// an item is a mailbox's or the service account's trouble (a quota, a permission), which
    /// an operator fixes first, and a retry writes into the person's mailbox.
    async fn retry_parked(&self, caller: &Caller, form: &Form) -> Result<Reply, Failure> {
        if caller.user.role != Role::Admin {
            return Err(not_found("Sync health is for admins."));
        }
        let view = self
            .inner
            .sync
            .as_ref()
            .ok_or_else(|| not_found("The sync state is not available here."))?;
        let key: crate::pm::AssignmentKey = form
            .get("key")
            .and_then(|k| k.trim().parse().ok())
            .ok_or_else(|| bad("The form names no parked item."))?;
        let task = self
            .task_name(key.project, &key.assignment.to_string())
            .await
            .unwrap_or_else(|| key.to_string());
        tracing::info!(%key, by = %caller.user.name, "console: retry of a parked item");
        match view.retry_parked(key).await.map_err(failed)? {
            None => self.flash(
                caller,
                false,
                format!("{task} is not parked (any more)."),
            ),
            Some(RetryOutcome::Synced) => {
                self.flash(caller, true, format!("{task}: tried again, and it is in step now."))
            }
            Some(RetryOutcome::Queued) => self.flash(
                caller,
                true,
                format!(
                    "{task}: taken back; the instance that holds its mailbox writes it at its next reconciliation."
                ),
            ),
            Some(RetryOutcome::Failed { parked, error }) => self.flash(
                caller,
                false,
                format!(
                    "{task}: tried again and failed{}: {error}",
                    if parked { ", parked again" } else { "; the next pass tries it again" }
                ),
            ),
        }
        Ok(redirect("/console/health", None))
    }

    /// The audit log of the caller's projects, filtered by project, person, field and time
    /// span, newest first (at most 500 lines).
    async fn audit_page(&self, caller: &Caller, query: &str) -> Result<Reply, Failure> {
        let q: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
            .collect();
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let (project, person, field, since, until) = (
            get("project"),
            get("person"),
            get("field"),
            get("since"),
            get("until"),
        );
        let names = self.project_names().await?;
        let wanted: Option<ProjectGuid> = if project.is_empty() {
            None
        } else {
            Some(
                project
                    .parse::<ProjectGuid>()
                    .ok()
                    .filter(|p| caller.user.may_see(*p))
                    .ok_or_else(|| not_found("There is no such project among yours."))?,
            )
        };
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let from = day(&since)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        let to = day(&until)
            .and_then(|d| d.succ_opt())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        let field_key = field.to_lowercase().replace(' ', "_");
        let mut records = Vec::new();
        if let Some(view) = &self.inner.sync {
            let mut tasks: BTreeMap<ProjectGuid, Option<crate::pm::Project>> = BTreeMap::new();
            let all = view.audit(wanted).await.map_err(failed)?;
            for r in all.into_iter().rev() {
                if !caller.user.may_see(r.key.project)
                    || (!person.is_empty()
                        && !r.mailbox.as_str().contains(person.to_lowercase().as_str()))
                    || (!field_key.is_empty() && !r.field.to_string().contains(&field_key))
                    || from.is_some_and(|f| r.at < f)
                    || to.is_some_and(|t| r.at >= t)
                {
                    continue;
                }
                if records.len() >= 500 {
                    break;
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(r.key.project)
                {
                    let p = self
                        .inner
                        .host
                        .load_project(r.key.project)
                        .await
                        .ok()
                        .flatten();
                    slot.insert(p);
                }
                let task = tasks
                    .get(&r.key.project)
                    .and_then(Option::as_ref)
                    .and_then(|p| {
                        let a = p.assignments.iter().find(|a| a.uid == r.key.assignment)?;
                        p.tasks
                            .iter()
                            .find(|t| t.uid == a.task_uid)
                            .map(|t| t.name.clone())
                    })
                    .unwrap_or_else(|| r.key.to_string());
                let winner = match r.winner {
                    crate::state::Side::Pm => "plan's value stands",
                    crate::state::Side::Mail => "mailbox value taken",
                    crate::state::Side::Neither => "kept for a person",
                };
                records.push(pages::AuditRow {
                    at: r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    task,
                    mailbox: r.mailbox.to_string(),
                    field: field_label(&serde_json::Value::String(r.field.to_string())),
                    pm_value: r.pm_value,
                    mail_value: r.mail_value,
                    decision: match r.note {
                        Some(n) => format!("{winner} ({n})"),
                        None => winner.to_owned(),
                    },
                });
            }
        }
        let page = pages::Audit {
            c: self.chrome("Audit", Some(caller), &caller.csrf, Some("/console/audit")),
            projects: names
                .into_iter()
                .filter(|(g, _)| caller.user.may_see(*g))
                .map(|(g, n)| (g.to_string(), n))
                .collect(),
            project,
            person,
            field,
            since,
            until,
            records,
        };
        Ok(html(StatusCode::OK, page.render()))
    }

    fn own_project(&self, caller: &Caller, form: &Form) -> Result<ProjectGuid, Failure> {
        form.get("project")
            .and_then(|g| g.parse::<ProjectGuid>().ok())
            .filter(|p| caller.user.may_see(*p))
            .ok_or_else(|| not_found("There is no such project among yours."))
    }

    async fn policy(&self, caller: &Caller, form: &Form) -> Result<Reply, Failure> {
        let project = self.own_project(caller, form)?;
        let policy: Policy = form
            .get("policy")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bad("Which policy?"))?;
        self.inner
            .host
            .set_policy(project, policy)
            .await
            .map_err(failed)?;
        let text = match policy {
            Policy::Approval => "Updates now wait for approval.",
            Policy::Auto => "Updates are now applied at once.",
        };
        self.flash(caller, true, text.into());
        Ok(redirect("/console/projects", None))
    }

    async fn publish(&self, caller: &Caller, form: &Form) -> Result<Reply, Failure> {
        let project = self.own_project(caller, form)?;
        let result = self.inner.host.publish(project).await;
        match result {
            Ok(()) => self.flash(
                caller,
                true,
                "Published: the connector sends the plan to the task lists now.".into(),
            ),
            Err(e) => self.flash(caller, false, format!("Not published: {e}")),
        }
        Ok(redirect("/console/projects", None))
    }
}

/// A conflict as the desk lists it (the fields the console shows).
#[derive(serde::Deserialize)]
struct ConflictJson {
    id: String,
    key: crate::pm::AssignmentKey,
    mailbox: String,
    field: serde_json::Value,
    pm_value: String,
    pm_changed_at: Option<DateTime<Utc>>,
    mail_value: String,
    mail_changed_at: Option<DateTime<Utc>>,
}

type Failure = (StatusCode, String);

fn failed(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "console request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Something went wrong: {e}"),
    )
}

fn bad(m: &str) -> Failure {
    (StatusCode::BAD_REQUEST, m.to_owned())
}

fn not_found(m: &str) -> Failure {
    (StatusCode::NOT_FOUND, m.to_owned())
}

fn update_row(u: &StatusUpdateRecord) -> pages::UpdateRow {
    let mut note = Vec::new();
    if let Some(n) = &u.status_note {
        note.push(format!("status note: {n}"));
    }
    if let Some(on) = u.completed_on {
        note.push(format!("completed on {}", on.format("%Y-%m-%d")));
    }
    let item = u.source.item_id.clone();
    let item_short = if item.len() > 12 {
        format!("…{}", &item[item.len() - 10..])
    } else {
        item.clone()
    };
    pages::UpdateRow {
        id: u.id.0.clone(),
        task: u.task_name.clone().unwrap_or_else(|| u.key.to_string()),
        resource: u.resource_name.clone().unwrap_or_default(),
        changes: u
            .changes
            .iter()
            .map(|c| pages::ChangeRow {
                field: field_name(c.field),
                old: value(&c.old),
                new: value(&c.new),
            })
            .collect(),
        note: (!note.is_empty()).then(|| note.join(", ")),
        mailbox: u.source.mailbox.clone(),
        submitted: when(Some(u.submitted_at)),
        submitted_iso: u.submitted_at.to_rfc3339(),
        item,
        item_short,
    }
}

/// A field as people call it.
fn field_name(field: AssignmentField) -> &'static str {
    match field {
        AssignmentField::Start => "start",
        AssignmentField::Finish => "finish",
        AssignmentField::Work => "work",
        AssignmentField::ActualWork => "actual work",
        AssignmentField::RemainingWork => "remaining work",
        AssignmentField::PercentWorkComplete => "% complete",
        AssignmentField::Name => "name",
        AssignmentField::Notes => "notes",
        AssignmentField::Priority => "priority",
    }
}

fn field_label(v: &serde_json::Value) -> String {
    v.as_str()
        .map(|s| s.replace('_', " "))
        .unwrap_or_else(|| v.to_string())
}

/// A value for people: work in hours, percent with its sign.
fn value(v: &FieldValue) -> String {
    match v {
        FieldValue::Work(w) => {
            let h = w.hours_f64();
            if (h - h.round()).abs() < 0.005 {
                format!("{h:.0} h")
            } else {
                format!("{h:.2} h")
            }
        }
        FieldValue::DateTime(d) => d.format("%Y-%m-%d %H:%M").to_string(),
        FieldValue::Text(t) => t.clone(),
        other => other.to_string(),
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn read_form(body: Incoming) -> Option<Form> {
    let bytes = Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(Form(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

fn cookies(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn cookie_header(name: &str, value: &str, secure: bool, expire: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if expire {
        c.push_str("; Max-Age=0");
    }
    HeaderValue::from_str(&c).expect("tokens are header-safe")
}

fn session_cookie(id: &str, secure: bool, expire: bool) -> HeaderValue {
    cookie_header(SESSION_COOKIE, id, secure, expire)
}

fn body(bytes: impl Into<Bytes>) -> AdminBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn with_headers(mut reply: Reply, content_type: &'static str) -> Reply {
    let h = reply.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    reply
}

fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Reply {
    let (status, text) = match rendered {
        Ok(t) => (status, t),
        Err(e) => {
            tracing::error!(error = %e, "console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown".to_owned(),
            )
        }
    };
    let mut reply = Response::new(body(text));
    *reply.status_mut() = status;
    with_headers(reply, "text/html; charset=utf-8")
}

fn plain(status: StatusCode, text: &'static str) -> Reply {
    let mut reply = Response::new(body(text));
    *reply.status_mut() = status;
    with_headers(reply, "text/plain; charset=utf-8")
}

fn asset(content_type: &'static str, text: &'static str) -> Reply {
    let mut reply = Response::new(body(text));
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    reply
}

/// 303 to `to`: after a form, the browser loads the page with GET (a reload does not post
/// again).
fn redirect(to: &'static str, cookie: Option<HeaderValue>) -> Reply {
    let mut reply = Response::new(body(Bytes::new()));
    *reply.status_mut() = StatusCode::SEE_OTHER;
    reply
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie {
        reply.headers_mut().append(header::SET_COOKIE, c);
    }
    reply
}
