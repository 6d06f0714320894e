//! The Redmine host: Redmine's issues as taskbridge projects, over Redmine's REST API.
//!
//! - **Scope** ([`RedmineConfig`]): the Redmine projects named by identifier (their subprojects
//!   when asked), the trackers and statuses in scope. One open issue with an assignee whose
//!   account has an e-mail address is one assignment, shown as one task in that person's
//!   mailbox (`convert`).
//! - **Fields**: the task's name is `#id subject` (the subject template adds the project), its
//!   notes the description and a link to the issue; dates, estimated hours (work), spent time
//!   (actual work, the sum of the issue's time entries), % done and the priority's position.
//!   The per-field change times come from the issue's journal.
//! - **Status updates** ([`PmHost::submit_status_update`]): actual work raised in a mailbox is
//!   booked as a time entry of the difference, as the assignee (`X-Redmine-Switch-User`); a
//!   decrease is refused. % done becomes `done_ratio` (100 % also sets the closed status), dates
//!   and work their fields. Redmine's validation errors (422) refuse the update with Redmine's
//!   message, so the mailbox shows Redmine's values again.
//! - **Approval** (`updates`): Redmine has no approval of status updates, so taskbridge records
//!   every update with its outcome in a SQLite file of its own; under the approval policy an
//!   update waits there until [`RedmineHost::approve`] (applied then, the approver named in the
//!   journal note and the time entry's comment) or [`RedmineHost::reject`] (the mailbox gets
//!   Redmine's values back). Decisions taken by another process are relayed as
//!   [`HostEvent::UpdateDecided`].
//! - **Noticing changes**: Redmine has no webhooks; [`RedmineHost::connect`] starts a poller
//!   that asks every `poll_interval` for issues updated since the last poll (one small request
//!   when nothing changed) and, every `time_entries_poll_interval`, for the newest time entries
//!   (time booked in Redmine does not move the issue's `updated_on`). It emits
//!   [`HostEvent::ProjectPublished`] for the projects concerned, with back-off while Redmine is
//!   unreachable.
//! - **TLS**: the administrator's API key goes only over verified TLS (a private CA through
//!   [`RedmineConfig::tls`]) or to this machine; plain `http://` elsewhere is refused.
//!
//! See `docs/PM-HOST.md`. This module knows nothing of EWS.

pub mod api;
mod convert;
mod updates;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

pub use self::api::RedmineError;
use self::api::{Client, Issue, Named, ProjectRecord, TimeEntry, User};
use self::convert::{IssueExtras, Shape, field_times, work_to_hours};
pub use self::convert::{assignment_uid, issue_of, project_guid};
use self::updates::UpdateStore;
use super::embedded::{
    DECIDER_AUTO, DECIDER_TASKBRIDGE, StatusUpdateRecord, UpdateFilter, UpdateState,
};
use super::host::{
    FieldValue, HostError, HostEvent, PmHost, StatusUpdate, StatusUpdateId, UpdateOutcome,
};
use super::model::{Assignment, AssignmentField, AssignmentUid, Project, ProjectGuid};
use crate::secret::Secret;

/// Where Redmine takes an issue's % done from (its `issue_done_ratio` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneRatio {
    /// The issue's own field: % done goes both ways.
    IssueField,
    /// The issue's status: % done goes from Redmine to the mailboxes only.
    IssueStatus,
}

/// The settings of the Redmine host (`[pm] kind = "redmine"`).
#[derive(Debug, Clone)]
pub struct RedmineConfig {
    /// Redmine's URL, e.g. `https://redmine.example.com`.
    pub url: String,
    /// An administrator's API key.
    pub api_key: Secret,
    /// The projects to sync, by identifier.
    pub projects: Vec<String>,
    /// Whether their subprojects' issues belong to them.
    pub subprojects: bool,
    /// Tracker names in scope (empty: all).
    pub trackers: Vec<String>,
    /// Open status names in scope (empty: all open ones).
    pub statuses: Vec<String>,
    /// The status a task completed in a mailbox sets (empty: the first closed status).
    pub closed_status: String,
    /// The time entry activity of time booked from mailboxes (empty: the default activity).
    pub activity: String,
    /// How often Redmine is asked for changed issues.
    pub poll_interval: Duration,
    /// How often Redmine is asked for the newest time entries (time booked in Redmine itself);
    /// never more often than `poll_interval`. Apart so that a poll of an unchanged Redmine is one
    /// request.
    pub time_entries_poll_interval: Duration,
    /// Where % done comes from.
    pub done_ratio: DoneRatio,
    /// The zone Redmine's dates are local to.
    pub time_zone: Tz,
    /// The time-out of one request.
    pub timeout: Duration,
    /// The TLS configuration Redmine's certificate is verified with (the system's roots plus
    /// `pm.ca_file`); `None`: the system's roots.
    pub tls: Option<rustls::ClientConfig>,
    /// Whether status updates wait for a status manager's approval (`pm.default_policy =
    /// "approval"`) instead of being applied to Redmine at once. Needs `updates_file`.
    pub approval: bool,
    /// The SQLite file of taskbridge's own record of status updates (pending ones, and every
    /// outcome, so that resubmissions are answered alike after a restart); `None`: outcomes are
    /// remembered in memory only and approval is not possible.
    pub updates_file: Option<PathBuf>,
}

impl RedmineConfig {
    /// Settings with the defaults for everything but the URL, the key and the projects.
    pub fn new(url: impl Into<String>, api_key: Secret, projects: Vec<String>) -> RedmineConfig {
        RedmineConfig {
            url: url.into(),
            api_key,
            projects,
            subprojects: false,
            trackers: Vec::new(),
            statuses: Vec::new(),
            closed_status: String::new(),
            activity: String::new(),
            poll_interval: Duration::from_secs(30),
            time_entries_poll_interval: Duration::from_secs(300),
            done_ratio: DoneRatio::IssueField,
            time_zone: Tz::UTC,
            timeout: Duration::from_secs(30),
            tls: None,
            approval: false,
            updates_file: None,
        }
    }
}

/// A Redmine project in scope, with the ids of its subprojects in scope.
#[derive(Debug, Clone)]
struct Scoped {
    record: ProjectRecord,
    ids: Vec<i64>,
}

/// What the host learned of Redmine once: projects, statuses, trackers, priorities, activity.
#[derive(Debug, Clone)]
struct Catalog {
    projects: BTreeMap<ProjectGuid, Scoped>,
    trackers: Vec<i64>,
    statuses: Vec<i64>,
    closed_status: i64,
    activity: i64,
    priorities: Vec<Named>,
}

#[derive(Default)]
struct Cache {
    catalog: Option<Arc<Catalog>>,
    users: HashMap<i64, User>,
    /// Field times per issue, with the `updated_on` they were read at.
    times: HashMap<i64, (DateTime<Utc>, super::model::FieldTimes)>,
    /// Outcomes by mailbox item version, so a resubmission is answered again, not re-applied.
    outcomes: HashMap<(String, String), UpdateOutcome>,
    /// The last error of a call to Redmine (for health), cleared by a success.
    last_error: Option<String>,
}

struct Inner {
    client: Client,
    config: RedmineConfig,
    cache: Mutex<Cache>,
    events: broadcast::Sender<HostEvent>,
    next_id: std::sync::atomic::AtomicU64,
    /// Taskbridge's record of status updates, when configured.
    updates: Option<UpdateStore>,
    /// Decisions this process emitted itself, so that the relay does not emit them again.
    own_decisions: Mutex<HashSet<i64>>,
    /// Held while a decision is recorded and marked as this process's own, and while the
    /// relay reads decisions, so that the relay never sees one of ours before it is marked.
    deciding: tokio::sync::Mutex<()>,
    /// Polls begun since the host was connected.
    polls: std::sync::atomic::AtomicU64,
}

/// The PM host over a Redmine server. Cheap to clone.
#[derive(Clone)]
pub struct RedmineHost {
    inner: Arc<Inner>,
    poller: Arc<tokio::task::AbortHandle>,
    relay: Option<Arc<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for RedmineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedmineHost")
            .field("url", &self.inner.config.url)
            .finish()
    }
}

fn unavailable(e: RedmineError) -> HostError {
    HostError::Unavailable(e.to_string())
}

impl Inner {
    fn note(&self, r: &Result<(), &RedmineError>) {
        let mut c = self.cache.lock().expect("cache lock");
        c.last_error = r.err().map(ToString::to_string);
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, RedmineError> {
        if let Some(c) = self.cache.lock().expect("cache lock").catalog.clone() {
            return Ok(c);
        }
        let result = self.load_catalog().await;
        self.note(&result.as_ref().map(|_| ()));
        let catalog = Arc::new(result?);
        self.cache.lock().expect("cache lock").catalog = Some(catalog.clone());
        Ok(catalog)
    }

    async fn load_catalog(&self) -> Result<Catalog, RedmineError> {
        let c = &self.client;
        let cfg = &self.config;
        let all: Vec<ProjectRecord> = c.list("/projects.json", &[], "projects").await?;
        let mut projects = BTreeMap::new();
        for identifier in &cfg.projects {
            let record = all
                .iter()
                .find(|p| &p.identifier == identifier)
                .cloned()
                .ok_or_else(|| RedmineError::NotFound(format!("project {identifier}")))?;
            let mut ids = vec![record.id];
            if cfg.subprojects {
                // Descendants: parents come before children in no guaranteed order, so repeat
                // until nothing is added.
                loop {
                    let before = ids.len();
                    for p in &all {
                        if !ids.contains(&p.id)
                            && p.parent.as_ref().is_some_and(|r| ids.contains(&r.id))
                        {
                            ids.push(p.id);
                        }
                    }
                    if ids.len() == before {
                        break;
                    }
                }
            }
            projects.insert(project_guid(c.base(), identifier), Scoped { record, ids });
        }
        let pick =
            |all: &[Named], names: &[String], what: &str| -> Result<Vec<i64>, RedmineError> {
                names
                    .iter()
                    .map(|n| {
                        all.iter()
                            .find(|x| x.name.eq_ignore_ascii_case(n))
                            .map(|x| x.id)
                            .ok_or_else(|| RedmineError::NotFound(format!("{what} {n:?}")))
                    })
                    .collect()
            };
        let trackers_all: Vec<Named> = c.get("/trackers.json", &[], "trackers").await?;
        let statuses_all: Vec<Named> = c.get("/issue_statuses.json", &[], "issue_statuses").await?;
        let activities: Vec<Named> = c
            .get(
                "/enumerations/time_entry_activities.json",
                &[],
                "time_entry_activities",
            )
            .await?;
        let priorities: Vec<Named> = c
            .get(
                "/enumerations/issue_priorities.json",
                &[],
                "issue_priorities",
            )
            .await?;
        let closed_status = if cfg.closed_status.is_empty() {
            statuses_all
                .iter()
                .find(|s| s.is_closed)
                .map(|s| s.id)
                .ok_or_else(|| RedmineError::NotFound("a closed status".into()))?
        } else {
            pick(
                &statuses_all,
                std::slice::from_ref(&cfg.closed_status),
                "status",
            )?[0]
        };
        let activity = if cfg.activity.is_empty() {
            activities
                .iter()
                .find(|a| a.is_default)
                .or(activities.first())
                .map(|a| a.id)
                .ok_or_else(|| RedmineError::NotFound("a time entry activity".into()))?
        } else {
            pick(&activities, std::slice::from_ref(&cfg.activity), "activity")?[0]
        };
        Ok(Catalog {
            projects,
            trackers: pick(&trackers_all, &cfg.trackers, "tracker")?,
            statuses: pick(&statuses_all, &cfg.statuses, "status")?,
            closed_status,
            activity,
            priorities,
        })
    }

    fn shape<'a>(&'a self, catalog: &'a Catalog) -> Shape<'a> {
        Shape {
            base: self.client.base(),
            zone: self.config.time_zone,
            priorities: &catalog.priorities,
        }
    }

    fn in_scope(&self, catalog: &Catalog, scoped: &Scoped, issue: &Issue) -> bool {
        scoped.ids.contains(&issue.project.id)
            && (catalog.trackers.is_empty() || catalog.trackers.contains(&issue.tracker.id))
            && (catalog.statuses.is_empty() || catalog.statuses.contains(&issue.status.id))
    }

    async fn user(&self, id: i64) -> Result<Option<User>, RedmineError> {
        if let Some(u) = self.cache.lock().expect("cache lock").users.get(&id) {
            return Ok(Some(u.clone()));
        }
        // A group or a locked account is not a person to send tasks to.
        match self
            .client
            .get::<User>(&format!("/users/{id}.json"), &[], "user")
            .await
        {
            Ok(u) => {
                self.cache
                    .lock()
                    .expect("cache lock")
                    .users
                    .insert(id, u.clone());
                Ok(Some(u))
            }
            Err(RedmineError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The time entries of a project's issues: hours and the latest booking per issue.
    async fn spent(
        &self,
        scoped: &Scoped,
    ) -> Result<HashMap<i64, (f64, DateTime<Utc>)>, RedmineError> {
        let entries: Vec<TimeEntry> = self
            .client
            .list(
                "/time_entries.json",
                &[("project_id", scoped.record.id.to_string())],
                "time_entries",
            )
            .await?;
        let mut out: HashMap<i64, (f64, DateTime<Utc>)> = HashMap::new();
        for e in entries {
            let Some(issue) = e.issue else { continue };
            let at = e.updated_on.unwrap_or(e.created_on).max(e.created_on);
            let slot = out.entry(issue.id).or_insert((0.0, at));
            slot.0 += e.hours;
            slot.1 = slot.1.max(at);
        }
        Ok(out)
    }

    /// The field times of an issue from its journal, read again only when it changed.
    async fn times(
        &self,
        issue: &Issue,
        last_entry: Option<DateTime<Utc>>,
    ) -> Result<super::model::FieldTimes, RedmineError> {
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .times
            .get(&issue.id)
            .filter(|(at, _)| *at == issue.updated_on)
            .map(|(_, t)| t.clone());
        let mut times = match cached {
            Some(t) => t,
            None => {
                let full = self.client.issue(issue.id).await?;
                let t = field_times(&full, None);
                self.cache
                    .lock()
                    .expect("cache lock")
                    .times
                    .insert(issue.id, (full.updated_on, t.clone()));
                t
            }
        };
        if let Some(at) = last_entry {
            times.touch(AssignmentField::ActualWork, at);
            times.touch(AssignmentField::RemainingWork, at);
        }
        Ok(times)
    }

    async fn load_project(
        &self,
        guid: ProjectGuid,
        only: Option<&[i64]>,
    ) -> Result<Option<Project>, RedmineError> {
        let catalog = self.catalog().await?;
        let Some(scoped) = catalog.projects.get(&guid) else {
            return Ok(None);
        };
        let mut query = vec![
            ("project_id", scoped.record.id.to_string()),
            ("status_id", "open".to_string()),
            ("sort", "id".to_string()),
        ];
        if let Some(ids) = only {
            if ids.is_empty() {
                query.push(("issue_id", "0".into()));
            } else {
                let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
                query.push(("issue_id", list.join(",")));
            }
        }
        let issues: Vec<Issue> = self
            .client
            .list("/issues.json", &query, "issues")
            .await?
            .into_iter()
            .filter(|i| self.in_scope(&catalog, scoped, i))
            .collect();
        let spent = self.spent(scoped).await?;
        let mut users = HashMap::new();
        let mut extras = HashMap::new();
        for issue in &issues {
            if let Some(r) = &issue.assigned_to
                && !users.contains_key(&r.id)
                && let Some(u) = self.user(r.id).await?
            {
                users.insert(r.id, u);
            }
            let booked = spent.get(&issue.id).copied();
            extras.insert(
                issue.id,
                IssueExtras {
                    spent_hours: booked.map_or(0.0, |b| b.0),
                    last_time_entry: booked.map(|b| b.1),
                    times: Some(self.times(issue, booked.map(|b| b.1)).await?),
                },
            );
        }
        Ok(Some(self.shape(&catalog).project(
            guid,
            &scoped.record.name,
            &issues,
            &users,
            &extras,
        )))
    }

    /// The assignment of `uid` as Redmine has it now, read afresh.
    async fn current(
        &self,
        guid: ProjectGuid,
        uid: AssignmentUid,
    ) -> Result<Option<(Issue, Assignment)>, RedmineError> {
        let catalog = self.catalog().await?;
        let issue = self.client.issue(issue_of(uid)).await?;
        let Some(scoped) = catalog.projects.get(&guid) else {
            return Ok(None);
        };
        let spent = self.spent(scoped).await?;
        let booked = spent.get(&issue.id).copied();
        let extras = IssueExtras {
            spent_hours: booked.map_or(0.0, |b| b.0),
            last_time_entry: booked.map(|b| b.1),
            times: None,
        };
        let user = uid.0 & 0xffff_ffff;
        let a = self.shape(&catalog).assignment(&issue, user, &extras);
        Ok(Some((issue, a)))
    }

    fn id(&self) -> StatusUpdateId {
        if self.updates.is_some() {
            // Recorded ids outlive the process: unique without a counter.
            return StatusUpdateId(uuid::Uuid::new_v4().to_string());
        }
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StatusUpdateId(format!("redmine-{}-{n}", Utc::now().timestamp_millis()))
    }

    /// Step "status update" with Redmine: a mailbox item version submitted before is answered
    /// with its first outcome; under the approval policy the update waits in taskbridge's
    /// record; otherwise it is applied to Redmine at once (and recorded).
    async fn submit(&self, update: StatusUpdate) -> Result<UpdateOutcome, RedmineError> {
        let version = (
            update.source.item_id.clone(),
            update.source.change_key.clone(),
        );
        let Some(store) = &self.updates else {
            if let Some(o) = self
                .cache
                .lock()
                .expect("cache lock")
                .outcomes
                .get(&version)
            {
                return Ok(o.clone());
            }
            let r = self.apply(&update, self.id(), None).await;
            self.note(&r.as_ref().map(|_| ()));
            let outcome = r?;
            let mut c = self.cache.lock().expect("cache lock");
            if c.outcomes.len() > 10_000 {
                c.outcomes.clear();
            }
            c.outcomes.insert(version, outcome.clone());
            return Ok(outcome);
        };
        if let Some(stored) = store
            .by_source(update.key, version.0.clone(), version.1.clone())
            .await?
        {
            return self.answer_again(store, stored).await;
        }
        let key = update.key;
        let found = self.current(key.project, key.assignment).await;
        self.note(&found.as_ref().map(|_| ()));
        let (issue, _) = found?.ok_or_else(|| RedmineError::NotFound(key.to_string()))?;
        let id = self.id();
        let now = Utc::now();
        let mut record = StatusUpdateRecord {
            id: id.clone(),
            key,
            changes: update.changes.clone(),
            source: update.source.clone(),
            state: UpdateState::Pending,
            submitted_at: now,
            decided_at: None,
            decider: None,
            reason: None,
            superseded_by: None,
            task_name: Some(format!("#{} {}", issue.id, issue.subject)),
            resource_name: issue.assigned_to.as_ref().map(|r| r.name.clone()),
            status_note: update.status_note.clone(),
            completed_on: update.completed_on,
            applied: Vec::new(),
        };
        if self.config.approval && !update.changes.is_empty() {
            for old in store.insert(record, None).await? {
                info!(id = %old, by = %id, %key, "status update superseded");
            }
            info!(%id, %key, issue = issue.id, "status update waits for approval");
            return Ok(UpdateOutcome::Pending { id });
        }
        let r = self.apply(&update, id, None).await;
        self.note(&r.as_ref().map(|_| ()));
        let outcome = r?;
        decided(&mut record, &outcome, DECIDER_AUTO, now);
        store.insert(record, Some(outcome.clone())).await?;
        Ok(outcome)
    }

    /// The outcome of an update submitted before, with Redmine's values as they are now.
    async fn answer_again(
        &self,
        store: &UpdateStore,
        (mut record, mut outcome): updates::Stored,
    ) -> Result<UpdateOutcome, RedmineError> {
        // A superseded update is answered with what became of the one that replaced it.
        for _ in 0..16 {
            match (record.state, &record.superseded_by) {
                (UpdateState::Superseded, Some(next)) => match store.get(next.clone()).await? {
                    Some(s) => (record, outcome) = s,
                    None => break,
                },
                _ => break,
            }
        }
        let Some(mut outcome) = outcome.filter(|_| record.state != UpdateState::Pending) else {
            return Ok(UpdateOutcome::Pending { id: record.id });
        };
        let key = record.key;
        if let Some((_, now)) = self.current(key.project, key.assignment).await? {
            match &mut outcome {
                UpdateOutcome::Applied { assignment, .. }
                | UpdateOutcome::Rejected { assignment, .. } => *assignment = now,
                UpdateOutcome::Pending { .. } => {}
            }
        }
        Ok(outcome)
    }

    /// The status manager approves a pending update: it is applied to Redmine now, with the
    /// approver named in the journal note and the time entry's comment.
    async fn approve(
        &self,
        id: &StatusUpdateId,
        by: &str,
        force: bool,
    ) -> Result<UpdateOutcome, RedmineError> {
        let (store, mut record) = self.pending(id).await?;
        let key = record.key;
        let (_, current) = self
            .current(key.project, key.assignment)
            .await?
            .ok_or_else(|| RedmineError::NotFound(key.to_string()))?;
        let stale: Vec<String> = record
            .changes
            .iter()
            .filter_map(|c| {
                let now = value_of(&current, c.field)?;
                (now != c.old).then(|| format!("{:?} ({} then, {} now)", c.field, c.old, now))
            })
            .collect();
        if !stale.is_empty() && !force {
            return Err(RedmineError::Stale(stale));
        }
        let update = StatusUpdate {
            key,
            changes: record.changes.clone(),
            source: record.source.clone(),
            status_note: record.status_note.clone(),
            completed_on: record.completed_on,
        };
        let outcome = self.apply(&update, id.clone(), Some(by)).await?;
        decided(&mut record, &outcome, by, Utc::now());
        if !stale.is_empty() && record.state == UpdateState::Applied {
            record.reason = Some(format!(
                "approved with --force over Redmine's newer values: {}",
                stale.join(", ")
            ));
        }
        self.record_decision(store, record, outcome).await
    }

    /// The status manager rejects a pending update: Redmine keeps its values, and the mailbox
    /// gets them back.
    async fn reject(
        &self,
        id: &StatusUpdateId,
        by: &str,
        reason: Option<&str>,
    ) -> Result<UpdateOutcome, RedmineError> {
        let (store, mut record) = self.pending(id).await?;
        let key = record.key;
        let (_, current) = self
            .current(key.project, key.assignment)
            .await?
            .ok_or_else(|| RedmineError::NotFound(key.to_string()))?;
        let outcome = UpdateOutcome::Rejected {
            id: id.clone(),
            assignment: current,
            reason: reason
                .map(str::to_owned)
                .unwrap_or_else(|| format!("rejected by {by}")),
        };
        decided(&mut record, &outcome, by, Utc::now());
        record.reason = reason.map(str::to_owned);
        self.record_decision(store, record, outcome).await
    }

    /// The store and the pending update `id`.
    async fn pending(
        &self,
        id: &StatusUpdateId,
    ) -> Result<(&UpdateStore, StatusUpdateRecord), RedmineError> {
        let store = self.updates.as_ref().ok_or(RedmineError::NoUpdateStore)?;
        let (record, _) = store
            .get(id.clone())
            .await?
            .ok_or_else(|| RedmineError::UnknownUpdate(id.clone()))?;
        if record.state != UpdateState::Pending {
            return Err(RedmineError::NotPending {
                id: id.clone(),
                state: record.state.as_str().to_owned(),
            });
        }
        Ok((store, record))
    }

    /// Records a decision and tells this process's engine at once (the relay tells the others).
    async fn record_decision(
        &self,
        store: &UpdateStore,
        record: StatusUpdateRecord,
        outcome: UpdateOutcome,
    ) -> Result<UpdateOutcome, RedmineError> {
        let key = record.key;
        let _turn = self.deciding.lock().await;
        let seq = store.decide(record, outcome.clone()).await?;
        self.own_decisions.lock().expect("own lock").insert(seq);
        info!(id = %outcome.id(), %key, "status update decided");
        let _ = self.events.send(HostEvent::UpdateDecided {
            key,
            outcome: outcome.clone(),
        });
        Ok(outcome)
    }

    /// Applies `update` to Redmine; `approver` is the status manager who approved it, named
    /// in the journal note and the time entry's comment.
    async fn apply(
        &self,
        update: &StatusUpdate,
        id: StatusUpdateId,
        approver: Option<&str>,
    ) -> Result<UpdateOutcome, RedmineError> {
        let key = update.key;
        let catalog = self.catalog().await?;
        let Some((issue, before)) = self.current(key.project, key.assignment).await? else {
            return Err(RedmineError::NotFound(key.to_string()));
        };
        let approved = approver
            .map(|by| format!(", approved by {by}"))
            .unwrap_or_default();
        let reject = |assignment: Assignment, reason: String| UpdateOutcome::Rejected {
            id: id.clone(),
            assignment,
            reason,
        };
        let mut fields = serde_json::Map::new();
        let mut book = None;
        for change in &update.changes {
            match (change.field, &change.new) {
                (AssignmentField::ActualWork, FieldValue::Work(w)) => {
                    if *w < before.actual_work {
                        return Ok(reject(
                            before,
                            "spent time cannot be lowered from a mailbox: Redmine books time \
                             as time entries; remove or change the entry in Redmine"
                                .into(),
                        ));
                    }
                    if *w > before.actual_work {
                        book = Some(w.saturating_sub(before.actual_work));
                    }
                }
                (AssignmentField::PercentWorkComplete, FieldValue::Percent(p)) => {
                    if p.get() == 100 {
                        fields.insert("status_id".into(), json!(catalog.closed_status));
                    }
                    if self.config.done_ratio == DoneRatio::IssueField {
                        fields.insert("done_ratio".into(), json!(p.get()));
                    } else if p.get() < 100 {
                        return Ok(reject(
                            before,
                            "Redmine takes % done from the issue's status here".into(),
                        ));
                    }
                }
                (AssignmentField::Start, FieldValue::DateTime(d)) => {
                    fields.insert("start_date".into(), json!(d.date().to_string()));
                }
                (AssignmentField::Finish, FieldValue::DateTime(d)) => {
                    fields.insert("due_date".into(), json!(d.date().to_string()));
                }
                (AssignmentField::Work, FieldValue::Work(w)) => {
                    fields.insert("estimated_hours".into(), json!(work_to_hours(*w)));
                }
                (field, value) => {
                    return Ok(reject(
                        before,
                        format!("Redmine takes no {field:?} of {value} from a mailbox"),
                    ));
                }
            }
        }
        let who = &update.source.mailbox;
        if !fields.is_empty() {
            fields.insert(
                "notes".into(),
                json!(format!(
                    "Updated from Outlook ({who}) by taskbridge{approved}."
                )),
            );
            match self
                .client
                .update_issue(issue.id, Value::Object(fields))
                .await
            {
                Ok(()) => {}
                Err(RedmineError::Invalid(messages)) => {
                    return Ok(reject(before, format!("Redmine: {}", messages.join("; "))));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(hours) = book {
            let login = match &issue.assigned_to {
                Some(r) => self.user(r.id).await?.map(|u| u.login),
                None => None,
            }
            .unwrap_or_default();
            let comment = format!("Booked from Outlook ({who}) by taskbridge{approved}");
            match self
                .client
                .book_time(
                    issue.id,
                    work_to_hours(hours),
                    catalog.activity,
                    &comment,
                    &login,
                )
                .await
            {
                Ok(()) => {}
                Err(RedmineError::Invalid(messages)) => {
                    let (_, now) = self
                        .current(key.project, key.assignment)
                        .await?
                        .ok_or_else(|| RedmineError::NotFound(key.to_string()))?;
                    return Ok(reject(now, format!("Redmine: {}", messages.join("; "))));
                }
                Err(e) => return Err(e),
            }
        }
        let (_, after) = self
            .current(key.project, key.assignment)
            .await?
            .ok_or_else(|| RedmineError::NotFound(key.to_string()))?;
        info!(issue = issue.id, mailbox = %who, approver, "status update applied to Redmine");
        Ok(UpdateOutcome::Applied {
            id,
            assignment: after,
        })
    }

    /// One poll: the issues updated since the last poll and, when their interval has passed,
    /// the time entries booked or removed since; the projects of those not seen yet.
    async fn poll(&self, marks: &mut Watermarks) -> Result<Vec<ProjectGuid>, RedmineError> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut changed = self.poll_issues(&mut marks.since, &mut marks.seen).await?;
        let interval = self
            .config
            .time_entries_poll_interval
            .max(self.config.poll_interval);
        if marks
            .entries_asked
            .is_some_and(|at| at.elapsed() < interval)
        {
            return Ok(changed);
        }
        marks.entries_asked = Some(std::time::Instant::now());
        // The issue watermark has moved: a failed time-entry request must not drop the issue
        // changes found above (its own mark is unchanged, so the next poll asks again).
        match self.poll_time_entries(&mut marks.entries).await {
            Ok(projects) => {
                for guid in projects {
                    if !changed.contains(&guid) {
                        changed.push(guid);
                    }
                }
            }
            Err(e) => {
                // Asked again at the next poll, not a whole interval later.
                marks.entries_asked = None;
                warn!(error = %e, "reading Redmine's newest time entries failed");
            }
        }
        Ok(changed)
    }

    /// Time booked in Redmine moves neither the issue's `updated_on` nor anything the issue
    /// query can filter on (Redmine 5), so the poll also asks for the newest time entries:
    /// one small request, sorted by creation. A new entry publishes its project; a count that
    /// fell (an entry deleted), or more new entries than one page shows, publishes every
    /// project in scope. A changed entry (other hours on an old entry) keeps the count and the
    /// newest id: it reaches the mailboxes at the next reconciliation.
    async fn poll_time_entries(
        &self,
        mark: &mut Option<(u64, i64)>,
    ) -> Result<Vec<ProjectGuid>, RedmineError> {
        const NEWEST: usize = 25;
        let catalog = self.catalog().await?;
        let v = self
            .client
            .call(
                reqwest::Method::GET,
                "/time_entries.json",
                &[
                    ("sort", "created_on:desc".to_string()),
                    ("limit", NEWEST.to_string()),
                ],
                None,
                None,
            )
            .await?;
        let total = v["total_count"].as_u64().unwrap_or(0);
        let entries: Vec<TimeEntry> = serde_json::from_value(v["time_entries"].clone())
            .map_err(|e| RedmineError::Other(format!("/time_entries.json: {e}")))?;
        let newest = entries.iter().map(|e| e.id).max().unwrap_or(0);
        let Some((last_total, last_newest)) = mark.replace((total, newest)) else {
            return Ok(Vec::new());
        };
        if (last_total, last_newest) == (total, newest) {
            return Ok(Vec::new());
        }
        let new: Vec<&TimeEntry> = entries.iter().filter(|e| e.id > last_newest).collect();
        let added = total.saturating_sub(last_total) as usize;
        let every = total < last_total || new.len() != added || added >= NEWEST;
        let projects = catalog
            .projects
            .iter()
            .filter(|(_, scoped)| {
                every
                    || new.iter().any(|e| {
                        e.project
                            .as_ref()
                            .is_some_and(|p| scoped.ids.contains(&p.id))
                    })
            })
            .map(|(guid, _)| *guid)
            .collect::<Vec<_>>();
        debug!(
            total,
            newest,
            projects = projects.len(),
            "time entries changed in Redmine"
        );
        Ok(projects)
    }

    /// The issues updated since `since`; the projects of those not seen yet.
    async fn poll_issues(
        &self,
        since: &mut Option<DateTime<Utc>>,
        seen: &mut HashMap<i64, DateTime<Utc>>,
    ) -> Result<Vec<ProjectGuid>, RedmineError> {
        let catalog = self.catalog().await?;
        let mut query = vec![
            ("status_id", "*".to_string()),
            ("sort", "updated_on:desc".to_string()),
        ];
        if let Some(at) = since {
            query.push((
                "updated_on",
                format!(">={}", at.format("%Y-%m-%dT%H:%M:%SZ")),
            ));
        } else {
            query.push(("limit", "1".into()));
        }
        let issues: Vec<Issue> = if since.is_some() {
            self.client.list("/issues.json", &query, "issues").await?
        } else {
            self.client.get("/issues.json", &query, "issues").await?
        };
        let first = since.is_none();
        // `updated_on` has whole seconds: a second edit within the second of the one already
        // seen keeps the same value. An issue updated in the last two seconds is therefore
        // reported again until its time is older than that (an extra publish, never a miss).
        let settled_before = Utc::now() - chrono::Duration::seconds(2);
        let mut changed = Vec::new();
        for issue in &issues {
            *since = Some(since.map_or(issue.updated_on, |s| s.max(issue.updated_on)));
            let unchanged = seen.insert(issue.id, issue.updated_on) == Some(issue.updated_on);
            if first || (unchanged && issue.updated_on < settled_before) {
                continue;
            }
            // An issue that moved out of a project still changed that project: its scoped
            // projects are published, which removes what left.
            for (guid, scoped) in &catalog.projects {
                if scoped.ids.contains(&issue.project.id) && !changed.contains(guid) {
                    changed.push(*guid);
                }
            }
        }
        if first && since.is_none() {
            *since = Some(Utc::now());
        }
        // Only issues at or after the watermark come back: older entries are never asked
        // about again.
        if let Some(at) = *since {
            seen.retain(|_, updated| *updated >= at);
        }
        Ok(changed)
    }
}

impl RedmineHost {
    /// A host for the Redmine of `config`, with its poller running; nothing is asked of
    /// Redmine before the first call (so a connector starts while Redmine is down).
    pub fn connect(config: RedmineConfig) -> Result<RedmineHost, RedmineError> {
        let client = Client::new(
            &config.url,
            config.api_key.clone(),
            config.timeout,
            config.tls.clone(),
        )?;
        if config.approval && config.updates_file.is_none() {
            return Err(RedmineError::NoUpdateStore);
        }
        // Opened once at start (a small local file), before the host serves anything.
        let updates = config
            .updates_file
            .as_deref()
            .map(UpdateStore::open)
            .transpose()?;
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            client,
            config,
            cache: Mutex::new(Cache::default()),
            events,
            next_id: std::sync::atomic::AtomicU64::new(1),
            updates,
            own_decisions: Mutex::new(HashSet::new()),
            deciding: tokio::sync::Mutex::new(()),
            polls: std::sync::atomic::AtomicU64::new(0),
        });
        let poller = tokio::spawn(run_poller(Arc::downgrade(&inner)));
        let relay = inner
            .updates
            .is_some()
            .then(|| Arc::new(tokio::spawn(run_relay(Arc::downgrade(&inner))).abort_handle()));
        Ok(RedmineHost {
            inner,
            poller: Arc::new(poller.abort_handle()),
            relay,
        })
    }

    /// The last failed call to Redmine, until a call succeeds (for `/healthz`).
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .cache
            .lock()
            .expect("cache lock")
            .last_error
            .clone()
    }

    /// The polls for Redmine's changes begun so far (with [`Client::requests`], what polling
    /// costs).
    pub fn polls(&self) -> u64 {
        self.inner.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets what was learned of Redmine (projects, statuses, users), so it is asked again.
    pub fn refresh(&self) {
        let mut c = self.inner.cache.lock().expect("cache lock");
        c.catalog = None;
        c.users.clear();
    }

    /// Approves a pending status update (`taskbridge updates approve`): it is applied to
    /// Redmine now, the journal note and the time entry's comment naming `by`, and the mailbox
    /// gets Redmine's resulting values. [`RedmineError::Stale`] when Redmine changed one of its
    /// fields since, unless `force`; a Redmine validation error rejects it with Redmine's
    /// message.
    pub async fn approve(
        &self,
        id: &StatusUpdateId,
        by: &str,
        force: bool,
    ) -> Result<UpdateOutcome, RedmineError> {
        self.inner.approve(id, by, force).await
    }

    /// Rejects a pending status update (`taskbridge updates reject`): Redmine keeps its
    /// values, the mailbox gets them back, and the reason is kept with the update.
    pub async fn reject(
        &self,
        id: &StatusUpdateId,
        by: &str,
        reason: Option<&str>,
    ) -> Result<UpdateOutcome, RedmineError> {
        self.inner.reject(id, by, reason).await
    }

    /// The status updates taskbridge recorded, oldest first (`taskbridge updates`).
    pub async fn status_updates(
        &self,
        filter: UpdateFilter,
    ) -> Result<Vec<StatusUpdateRecord>, RedmineError> {
        let store = self
            .inner
            .updates
            .as_ref()
            .ok_or(RedmineError::NoUpdateStore)?;
        store.list(filter).await
    }

    /// The REST client (for `taskbridge check --pm`).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Checks the PM side as `taskbridge check --pm` does: reachable, the key valid and an
    /// administrator's, the REST API on, the projects, statuses, trackers and activity found.
    /// Returns one line per check passed.
    pub async fn check(&self) -> Result<Vec<String>, RedmineError> {
        let mut lines = Vec::new();
        let me = self.inner.client.current_user().await?;
        lines.push(format!(
            "Redmine at {} answers; the API key is {}'s",
            self.inner.client.base(),
            me.login
        ));
        if !me.admin {
            return Err(RedmineError::Refused {
                status: 403,
                hint: "the API key is not an administrator's (taskbridge reads every \
                       assignee's e-mail address and books time as them)",
            });
        }
        lines.push("the key is an administrator's".into());
        self.refresh();
        let catalog = self.inner.catalog().await?;
        for scoped in catalog.projects.values() {
            lines.push(format!(
                "project {} ({}), {} project(s) with subprojects",
                scoped.record.identifier,
                scoped.record.name,
                scoped.ids.len()
            ));
        }
        lines.push(format!(
            "closed status #{}, time entry activity #{}",
            catalog.closed_status, catalog.activity
        ));
        Ok(lines)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        debug!("Redmine host closed");
    }
}

/// `record` as decided by `decider` with `outcome`.
fn decided(
    record: &mut StatusUpdateRecord,
    outcome: &UpdateOutcome,
    decider: &str,
    at: DateTime<Utc>,
) {
    record.decided_at = Some(at);
    record.decider = Some(decider.to_owned());
    match outcome {
        UpdateOutcome::Applied { .. } => record.state = UpdateState::Applied,
        UpdateOutcome::Rejected { reason, .. } => {
            record.state = UpdateState::Rejected;
            record.reason = Some(reason.clone());
            // Refused by Redmine or by a rule of this host, not by a person.
            if decider == DECIDER_AUTO {
                record.decider = Some(DECIDER_TASKBRIDGE.to_owned());
            }
        }
        UpdateOutcome::Pending { .. } => {}
    }
}

/// The value of an assignment field the Redmine host takes from mailboxes.
fn value_of(a: &Assignment, field: AssignmentField) -> Option<FieldValue> {
    Some(match field {
        AssignmentField::Start => FieldValue::DateTime(a.start),
        AssignmentField::Finish => FieldValue::DateTime(a.finish),
        AssignmentField::Work => FieldValue::Work(a.work),
        AssignmentField::ActualWork => FieldValue::Work(a.actual_work),
        AssignmentField::RemainingWork => FieldValue::Work(a.remaining_work),
        AssignmentField::PercentWorkComplete => FieldValue::Percent(a.percent_work_complete),
        _ => return None,
    })
}

/// How often decisions taken by other processes are looked for.
const RELAY_INTERVAL: Duration = Duration::from_secs(1);

/// Relays decisions recorded by other processes (`taskbridge updates approve` in a shell) to
/// this process's subscribers, until the host is dropped.
async fn run_relay(inner: std::sync::Weak<Inner>) {
    let mut last: Option<i64> = None;
    loop {
        let Some(host) = inner.upgrade() else { return };
        let Some(store) = host.updates.clone() else {
            return;
        };
        {
            let _turn = host.deciding.lock().await;
            match last {
                None => match store.last_decision().await {
                    Ok(n) => last = Some(n),
                    Err(e) => warn!(error = %e, "reading Redmine update decisions failed"),
                },
                Some(after) => match store.decisions_after(after).await {
                    Ok(decisions) => {
                        for (seq, key, outcome) in decisions {
                            last = Some(seq);
                            if !host.own_decisions.lock().expect("own lock").remove(&seq) {
                                debug!(%key, "relaying a decision taken elsewhere");
                                let _ = host.events.send(HostEvent::UpdateDecided { key, outcome });
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "reading Redmine update decisions failed"),
                },
            }
        }
        drop(host);
        tokio::time::sleep(RELAY_INTERVAL).await;
    }
}

/// Where the poller is in Redmine's changes.
#[derive(Default)]
struct Watermarks {
    /// The latest `updated_on` seen.
    since: Option<DateTime<Utc>>,
    /// The issues seen at that time or later, with their `updated_on`.
    seen: HashMap<i64, DateTime<Utc>>,
    /// The number of time entries and the newest one's id.
    entries: Option<(u64, i64)>,
    /// When the time entries were last asked for.
    entries_asked: Option<std::time::Instant>,
}

/// Polls until the host is dropped; backs off (doubling, at most 5 minutes) while Redmine
/// fails.
async fn run_poller(inner: std::sync::Weak<Inner>) {
    let mut marks = Watermarks::default();
    let mut failures = 0u32;
    loop {
        let Some(host) = inner.upgrade() else { return };
        let interval = host.config.poll_interval;
        let result = host.poll(&mut marks).await;
        host.note(&result.as_ref().map(|_| ()));
        let wait = match result {
            Ok(changed) => {
                failures = 0;
                for project in changed {
                    debug!(%project, "Redmine changed: publishing");
                    let _ = host.events.send(HostEvent::ProjectPublished { project });
                }
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = interval
                    .saturating_mul(1 << failures.min(10))
                    .min(Duration::from_secs(300));
                warn!(error = %e, retry_in = ?wait, "polling Redmine failed");
                wait
            }
        };
        drop(host);
        tokio::time::sleep(wait).await;
    }
}

impl Drop for RedmineHost {
    fn drop(&mut self) {
        // The last handle stops the poller and the relay.
        if Arc::strong_count(&self.poller) == 1 {
            self.poller.abort();
            if let Some(relay) = &self.relay {
                relay.abort();
            }
        }
    }
}

impl PmHost for RedmineHost {
    async fn projects(&self) -> Result<Vec<ProjectGuid>, HostError> {
        let catalog = self.inner.catalog().await.map_err(unavailable)?;
        Ok(catalog.projects.keys().copied().collect())
    }

    async fn project(&self, guid: ProjectGuid) -> Result<Option<Project>, HostError> {
        let r = self.inner.load_project(guid, None).await;
        self.inner.note(&r.as_ref().map(|_| ()));
        r.map_err(unavailable)
    }

    async fn project_part(
        &self,
        guid: ProjectGuid,
        uids: &[AssignmentUid],
    ) -> Result<Option<Project>, HostError> {
        let mut ids: Vec<i64> = uids.iter().map(|u| issue_of(*u)).collect();
        ids.sort_unstable();
        ids.dedup();
        let r = self.inner.load_project(guid, Some(&ids)).await;
        self.inner.note(&r.as_ref().map(|_| ()));
        r.map_err(unavailable)
    }

    async fn submit_status_update(&self, update: StatusUpdate) -> Result<UpdateOutcome, HostError> {
        let key = update.key;
        match self.inner.submit(update).await {
            Ok(outcome) => Ok(outcome),
            Err(RedmineError::NotFound(_)) => Err(HostError::UnknownAssignment(key)),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.events.subscribe()
    }
}

/// How a Redmine host's error reads in the PM API.
fn desk_error(e: RedmineError) -> super::embedded::DeskError {
    use super::embedded::DeskError;
    match e {
        RedmineError::UnknownUpdate(_) | RedmineError::NotFound(_) => {
            DeskError::NotFound(e.to_string())
        }
        RedmineError::NotPending { .. } | RedmineError::Stale(_) => {
            DeskError::Conflict(e.to_string())
        }
        e => DeskError::Failed(e.to_string()),
    }
}

/// `/pm/updates…` of the PM API (`pm_updates_api`) over taskbridge's record of Redmine's
/// status updates.
impl super::embedded::UpdateDesk for RedmineHost {
    fn list(
        &self,
        filter: UpdateFilter,
    ) -> super::embedded::UpdateDeskFuture<'_, Vec<StatusUpdateRecord>> {
        Box::pin(async move { self.status_updates(filter).await.map_err(desk_error) })
    }

    fn approve<'a>(
        &'a self,
        id: &'a StatusUpdateId,
        by: &'a str,
        force: bool,
    ) -> super::embedded::UpdateDeskFuture<'a, UpdateOutcome> {
        Box::pin(async move {
            RedmineHost::approve(self, id, by, force)
                .await
                .map_err(desk_error)
        })
    }

    fn reject<'a>(
        &'a self,
        id: &'a StatusUpdateId,
        by: &'a str,
        reason: Option<&'a str>,
    ) -> super::embedded::UpdateDeskFuture<'a, UpdateOutcome> {
        Box::pin(async move {
            RedmineHost::reject(self, id, by, reason)
                .await
                .map_err(desk_error)
        })
    }
}
