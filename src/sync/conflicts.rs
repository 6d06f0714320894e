//! Conflicts a person settles: under the `manual` policy a field both sides changed differently
//! stays as each side has it, held back from the sync (only that field), until someone takes
//! one side with `taskbridge conflicts resolve` or `POST /pm/conflicts/{id}/resolve`.
//!
//! Settling moves the field's baseline so that the next decision is a one-sided change: taking
//! the PM value sets the baseline to what the mailbox showed (the PM value is then written to
//! the mailbox); taking the mailbox value sets it to the PM's value (the mailbox value then
//! becomes a status update). The item is then brought in step at once, and the audit records the
//! decision with who made it and why.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::engine::{Engine, SyncError, copy_field, field_text, pm_modified};
use super::mailbox::MailboxStore;
use crate::mapping::{MailField, owner_zone};
use crate::pm::embedded::DeskError;
use crate::pm::{AssignmentKey, PmHost, ProjectGuid};
use crate::state::{AuditRecord, Commit, DecisionRule, Side, StateStore, SyncStatus};

/// One open conflict: one field of one assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenConflict {
    /// `<project-guid>:<assignment-uid>:<field>`: what `resolve` takes (safe in a URL path).
    pub id: String,
    /// The assignment.
    pub key: AssignmentKey,
    /// The mailbox.
    pub mailbox: String,
    /// The field (`percent_complete`, ...).
    pub field: MailField,
    /// The PM value now, in mailbox terms (work in hours).
    pub pm_value: String,
    /// When the PM side changed it, if known.
    pub pm_changed_at: Option<DateTime<Utc>>,
    /// The mailbox value when the item was last read.
    pub mail_value: String,
    /// When the mailbox changed it (the item's LastModifiedTime), if known.
    pub mail_changed_at: Option<DateTime<Utc>>,
    /// When the conflict was first found.
    pub since: Option<DateTime<Utc>>,
}

/// Which side a person takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Take {
    /// The PM value stands and is written to the mailbox.
    Pm,
    /// The mailbox value stands and goes to the PM side as a status update.
    Mailbox,
}

impl FromStr for Take {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pm" => Ok(Take::Pm),
            "mailbox" | "mail" => Ok(Take::Mailbox),
            other => Err(format!("unknown side {other:?} (expected pm or mailbox)")),
        }
    }
}

impl fmt::Display for Take {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Take::Pm => "pm",
            Take::Mailbox => "mailbox",
        })
    }
}

/// Why a conflict cannot be settled.
#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    /// No open conflict has this id.
    #[error("no open conflict {0} (taskbridge conflicts lists them)")]
    NotFound(String),
    /// The conflict was recorded before its mailbox values were kept; the next mailbox pass
    /// records them.
    #[error("conflict {0} has no recorded mailbox value yet; try again after the next pass")]
    NoMailValue(String),
    /// Syncing failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

fn parse_id(id: &str) -> Option<(AssignmentKey, MailField)> {
    let (key, field) = id.trim().rsplit_once(':')?;
    Some((key.parse().ok()?, MailField::from_name(field)?))
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Every open conflict, of one project or of all, in project then assignment order.
    pub async fn conflicts(
        &self,
        project: Option<ProjectGuid>,
    ) -> Result<Vec<OpenConflict>, SyncError> {
        let projects = match project {
            Some(p) => vec![p],
            None => self.inner.host.projects().await?,
        };
        let mut out = Vec::new();
        for p in projects {
            let rows = self.inner.state.project_assignments(p).await?;
            let mut view = None;
            for row in rows {
                let SyncStatus::Conflict {
                    fields,
                    since,
                    mail,
                    ..
                } = &row.status
                else {
                    continue;
                };
                if view.is_none() {
                    view = Some(self.view(p).await?);
                }
                let Some(view) = view.as_ref() else { continue };
                let unit = view.unit(row.key.assignment);
                let pm = unit.as_ref().map(|u| {
                    let zone = owner_zone(&view.project, u);
                    self.inner.table.to_mail(&view.project, u, zone)
                });
                for f in fields {
                    out.push(OpenConflict {
                        id: format!("{}:{}", row.key, f.name()),
                        key: row.key,
                        mailbox: row.mailbox.to_string(),
                        field: *f,
                        pm_value: pm.as_ref().map(|v| field_text(v, *f)).unwrap_or_default(),
                        pm_changed_at: unit.as_ref().and_then(|u| pm_modified(u, *f)).or_else(
                            || {
                                row.baseline
                                    .as_ref()
                                    .and_then(|b| b.pm_changed.get(f).copied())
                            },
                        ),
                        mail_value: mail
                            .as_ref()
                            .map(|m| field_text(m, *f))
                            .unwrap_or_else(|| "?".into()),
                        mail_changed_at: row
                            .baseline
                            .as_ref()
                            .and_then(|b| b.mail_changed.get(f).copied()),
                        since: *since,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Settles one conflict (`id` as [`OpenConflict::id`]) by taking one side, then brings the
    /// item in step (the winner is written to the other side) and records `by` and `reason` in
    /// the audit.
    pub async fn resolve_conflict(
        &self,
        id: &str,
        take: Take,
        by: &str,
        reason: Option<&str>,
    ) -> Result<OpenConflict, ConflictError> {
        let not_found = || ConflictError::NotFound(id.to_owned());
        let (key, field) = parse_id(id).ok_or_else(not_found)?;
        let open = self
            .conflicts(Some(key.project))
            .await?
            .into_iter()
            .find(|c| c.key == key && c.field == field)
            .ok_or_else(not_found)?;
        let mailbox = {
            let row = self
                .inner
                .state
                .assignment(&key)
                .await
                .map_err(SyncError::from)?;
            row.ok_or_else(not_found)?.mailbox
        };
        {
            let _guard = self.lock(&mailbox).await;
            // Read again under the mailbox lock: a pass may have settled it meanwhile.
            let mut row = self
                .inner
                .state
                .assignment(&key)
                .await
                .map_err(SyncError::from)?
                .ok_or_else(not_found)?;
            let SyncStatus::Conflict {
                fields,
                since,
                mail,
                ..
            } = row.status.clone()
            else {
                return Err(not_found());
            };
            if !fields.contains(&field) {
                return Err(not_found());
            }
            let mail = mail.ok_or_else(|| ConflictError::NoMailValue(id.to_owned()))?;
            let mut baseline = row.baseline.clone().ok_or_else(not_found)?;
            match take {
                // The mailbox then looks unchanged and the PM side changed: the PM value is
                // written.
                Take::Pm => copy_field(&mut baseline.values, &mail, field),
                // The PM side then looks unchanged and the mailbox changed: its value is taken.
                Take::Mailbox => {
                    let view = self.view(key.project).await?;
                    let (pm, _) = view
                        .desired(&self.inner.table, key.assignment)
                        .ok_or_else(not_found)?;
                    copy_field(&mut baseline.values, &pm, field);
                }
            }
            row.baseline = Some(baseline);
            let rest: Vec<MailField> = fields.into_iter().filter(|f| *f != field).collect();
            row.status = if rest.is_empty() {
                SyncStatus::Synced
            } else {
                SyncStatus::Conflict {
                    fields: rest,
                    since,
                    mail: Some(mail),
                }
            };
            let note = match reason.map(str::trim).filter(|r| !r.is_empty()) {
                Some(reason) => format!("{by}: {reason}"),
                None => by.to_owned(),
            };
            let record = AuditRecord {
                at: Utc::now(),
                key,
                mailbox: mailbox.clone(),
                field,
                pm_value: open.pm_value.clone(),
                mail_value: open.mail_value.clone(),
                rule: DecisionRule::Resolved,
                winner: match take {
                    Take::Pm => Side::Pm,
                    Take::Mailbox => Side::Mail,
                },
                note: Some(note),
            };
            tracing::info!(%key, field = field.name(), %take, by, "conflict resolved");
            self.commit(Commit {
                put: vec![row],
                ..Commit::default()
            })
            .await?;
            self.inner
                .state
                .append_audit(vec![record])
                .await
                .map_err(SyncError::from)?;
        }
        // The winner goes to the other side now (the refresh takes the mailbox lock itself).
        self.refresh(&mailbox, &[key]).await?;
        Ok(open)
    }
}

impl<H: PmHost, M: MailboxStore, S: StateStore> crate::pm::embedded::ConflictDesk
    for Engine<H, M, S>
{
    fn list(&self, project: Option<ProjectGuid>) -> crate::pm::embedded::DeskFuture<'_> {
        Box::pin(async move {
            let list = self
                .conflicts(project)
                .await
                .map_err(|e| DeskError::Failed(e.to_string()))?;
            serde_json::to_value(list).map_err(|e| DeskError::Failed(e.to_string()))
        })
    }

    fn resolve<'a>(
        &'a self,
        id: &'a str,
        take: &'a str,
        by: &'a str,
        reason: Option<&'a str>,
    ) -> crate::pm::embedded::DeskFuture<'a> {
        Box::pin(async move {
            let take: Take = take.parse().map_err(DeskError::BadRequest)?;
            match self.resolve_conflict(id, take, by, reason).await {
                Ok(settled) => serde_json::to_value(serde_json::json!({
                    "resolved": settled,
                    "take": take,
                    "by": by,
                }))
                .map_err(|e| DeskError::Failed(e.to_string())),
                Err(e @ (ConflictError::NotFound(_) | ConflictError::NoMailValue(_))) => {
                    Err(DeskError::NotFound(e.to_string()))
                }
                Err(e) => Err(DeskError::Failed(e.to_string())),
            }
        })
    }
}
