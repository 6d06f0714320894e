//! The console's pages: askama templates (checked at compile time, HTML-escaped) and the rows
//! they show.

use askama::Template;

/// A link in the header.
pub struct NavItem {
    /// Where it goes.
    pub href: &'static str,
    /// What it says.
    pub label: &'static str,
    /// Whether it is the page shown.
    pub current: bool,
}

/// A one-time message after an action.
pub struct Flash {
    /// Whether the action succeeded.
    pub ok: bool,
    /// What happened.
    pub text: String,
}

/// What every page shows around its content.
pub struct Chrome {
    /// The page title.
    pub title: String,
    /// The signed-in account.
    pub user: Option<String>,
    /// Its role.
    pub role: &'static str,
    /// The header links.
    pub nav: Vec<NavItem>,
    /// The form token.
    pub csrf: String,
    /// Why sync is degraded, if it is.
    pub degraded: Option<String>,
    /// A message after an action.
    pub flash: Option<Flash>,
}

/// The sign-in form.
#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignIn {
    /// Around.
    pub c: Chrome,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The name typed.
    pub name: String,
}

/// One field of a pending update.
pub struct ChangeRow {
    /// The field as people call it.
    pub field: &'static str,
    /// The plan's value.
    pub old: String,
    /// The reported value.
    pub new: String,
}

/// One pending update.
pub struct UpdateRow {
    /// Its id.
    pub id: String,
    /// The task.
    pub task: String,
    /// The resource.
    pub resource: String,
    /// The fields.
    pub changes: Vec<ChangeRow>,
    /// A status note or completion, if reported.
    pub note: Option<String>,
    /// Who reported it (the mailbox).
    pub mailbox: String,
    /// When, for people.
    pub submitted: String,
    /// When, RFC 3339.
    pub submitted_iso: String,
    /// The mailbox item.
    pub item: String,
    /// The item id's end, for display.
    pub item_short: String,
}

/// One project's pending updates.
pub struct ProjectUpdates {
    /// The project.
    pub guid: String,
    /// Its name.
    pub name: String,
    /// Oldest first.
    pub updates: Vec<UpdateRow>,
}

/// The pending updates page.
#[derive(Template)]
#[template(path = "updates.html")]
pub struct Updates {
    /// Around.
    pub c: Chrome,
    /// Per project.
    pub projects: Vec<ProjectUpdates>,
}

/// One open conflict.
pub struct ConflictRow {
    /// Its id.
    pub id: String,
    /// The task (or assignment id).
    pub task: String,
    /// The project's name.
    pub project: String,
    /// The mailbox.
    pub mailbox: String,
    /// The field.
    pub field: String,
    /// The plan's value.
    pub pm_value: String,
    /// When the plan changed it.
    pub pm_at: String,
    /// The mailbox's value.
    pub mail_value: String,
    /// When the mailbox changed it.
    pub mail_at: String,
}

/// The conflicts page.
#[derive(Template)]
#[template(path = "conflicts.html")]
pub struct Conflicts {
    /// Around.
    pub c: Chrome,
    /// The open conflicts.
    pub conflicts: Vec<ConflictRow>,
}

/// One project.
pub struct ProjectRow {
    /// Its GUID.
    pub guid: String,
    /// Its name.
    pub name: String,
    /// Assignments.
    pub assignments: usize,
    /// Those that are mailbox tasks.
    pub mailbox_assignments: usize,
    /// Pending updates.
    pub pending: usize,
    /// When last published.
    pub published: String,
    /// Import count.
    pub revision: i64,
    /// Whether updates need approval.
    pub approval: bool,
}

/// The projects page.
#[derive(Template)]
#[template(path = "projects.html")]
pub struct Projects {
    /// Around.
    pub c: Chrome,
    /// The projects the account sees.
    pub projects: Vec<ProjectRow>,
}

/// A refusal or failure, in words.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Around.
    pub c: Chrome,
    /// What went wrong.
    pub message: String,
}

/// One mailbox on the sync health page.
pub struct MailboxRow {
    /// The mailbox.
    pub mailbox: String,
    /// Its subscription, in words.
    pub subscription: &'static str,
    /// When its subscription last said anything.
    pub last_notification: String,
    /// The newest sync of one of its items.
    pub last_pass: String,
    /// The last full reconciliation.
    pub last_reconcile: String,
    /// The last error, or nothing.
    pub last_error: String,
    /// How many of its items are parked.
    pub parked: usize,
    /// How many of its items were edited while their assignments are out of the plan.
    pub awaiting_plan: usize,
}

/// One parked item on the sync health page, with its retry button.
pub struct ParkedRow {
    /// The assignment key (`<project GUID>:<assignment uid>`), what the retry form sends.
    pub key: String,
    /// The task's name, or the key when the plan no longer has it.
    pub task: String,
    /// The project's name.
    pub project: String,
    /// The mailbox.
    pub mailbox: String,
    /// Why it was parked.
    pub reason: String,
}

/// The sync health page.
#[derive(Template)]
#[template(path = "health.html")]
pub struct Health {
    /// Around.
    pub c: Chrome,
    /// Per mailbox.
    pub mailboxes: Vec<MailboxRow>,
    /// The parked items of every mailbox.
    pub parked: Vec<ParkedRow>,
}

/// One audit record.
pub struct AuditRow {
    /// When.
    pub at: String,
    /// The task.
    pub task: String,
    /// The mailbox.
    pub mailbox: String,
    /// The field.
    pub field: String,
    /// The plan's value.
    pub pm_value: String,
    /// The mailbox's value.
    pub mail_value: String,
    /// Which stands and why.
    pub decision: String,
}

/// The audit page.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct Audit {
    /// Around.
    pub c: Chrome,
    /// The projects to choose from: (GUID, name).
    pub projects: Vec<(String, String)>,
    /// The filters as given.
    pub project: String,
    /// The person filter.
    pub person: String,
    /// The field filter.
    pub field: String,
    /// From (YYYY-MM-DD).
    pub since: String,
    /// To (YYYY-MM-DD).
    pub until: String,
    /// Newest first.
    pub records: Vec<AuditRow>,
}
