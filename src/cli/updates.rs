//! `taskbridge updates`: task status updates of the PM host, and the status manager's approve
//! and reject: those of the embedded PM store, or, with `[pm] kind = "redmine"`, those
//! taskbridge keeps for Redmine (which has no approval of its own).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::pm::embedded::{EmbeddedHost, StatusUpdateRecord, UpdateFilter, UpdateState};
use taskbridge::pm::redmine::RedmineHost;
use taskbridge::pm::{AssignmentField, FieldValue, ProjectGuid, StatusUpdateId, UpdateOutcome};

use super::table::{Column, Table, hours};

use super::{open_existing_store, print_out, runtime, to_json};

/// Arguments of `taskbridge updates`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UpdatesArgs {
    /// What to do; without one, list the updates, oldest first.
    #[command(subcommand)]
    pub command: Option<UpdatesCommand>,
    /// Only updates waiting for approval.
    #[arg(long, conflicts_with = "state")]
    pub pending: bool,
    /// Only updates in this state: pending, applied, rejected or superseded.
    #[arg(long, value_name = "STATE")]
    pub state: Option<UpdateState>,
    /// Only updates of this project: its GUID, a unique GUID prefix, or its name.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `taskbridge updates ...`.
#[derive(Debug, Subcommand)]
pub enum UpdatesCommand {
    /// Approve a pending update: its values are applied to the assignment and mapped back to
    /// the mailbox.
    Approve {
        /// The update's id, or a unique start of it (as `taskbridge updates` prints it).
        id: String,
        /// Who approves (recorded with the update). Default: $USER.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Apply it even when the plan changed one of its fields since it was submitted
        /// (recorded with the update).
        #[arg(long)]
        force: bool,
        /// Print the outcome (with the resulting assignment) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject a pending update: the mailbox gets the PM values back.
    Reject {
        /// The update's id, or a unique start of it (as `taskbridge updates` prints it).
        id: String,
        /// Why (recorded with the update).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Who rejects (recorded with the update). Default: $USER.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the status updates are: the embedded store, or taskbridge's record for Redmine.
enum Desk {
    Embedded(EmbeddedHost),
    Redmine(RedmineHost),
}

impl Desk {
    async fn list(&self, filter: UpdateFilter) -> anyhow::Result<Vec<StatusUpdateRecord>> {
        Ok(match self {
            Desk::Embedded(h) => h.status_updates(filter).await?,
            Desk::Redmine(h) => h.status_updates(filter).await?,
        })
    }

    async fn approve(
        &self,
        id: &StatusUpdateId,
        by: &str,
        force: bool,
    ) -> anyhow::Result<UpdateOutcome> {
        Ok(match self {
            Desk::Embedded(h) => h.approve(id, by, force).await?,
            Desk::Redmine(h) => h.approve(id, by, force).await?,
        })
    }

    async fn reject(
        &self,
        id: &StatusUpdateId,
        by: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<UpdateOutcome> {
        Ok(match self {
            Desk::Embedded(h) => h.reject(id, by, reason).await?,
            Desk::Redmine(h) => h.reject(id, by, reason).await?,
        })
    }

    /// A project named on the command line: for Redmine its identifier (or GUID).
    async fn project(
        &self,
        raw: &super::config::RawConfig,
        name: &str,
    ) -> anyhow::Result<ProjectGuid> {
        match self {
            Desk::Embedded(h) => super::names::project(h, name).await,
            Desk::Redmine(h) => {
                if let Ok(guid) = name.trim().parse::<uuid::Uuid>() {
                    return Ok(ProjectGuid(guid));
                }
                let url = h.client().base().to_string();
                let wanted = name.trim();
                raw.pm
                    .projects
                    .iter()
                    .find(|p| p.as_str() == wanted)
                    .map(|p| taskbridge::pm::redmine::project_guid(&url, p))
                    .ok_or_else(|| {
                        super::CliError::Usage(format!(
                            "unknown project {wanted:?}: pm.projects names {}",
                            raw.pm.projects.join(", ")
                        ))
                        .into()
                    })
            }
        }
    }

    async fn close(self) {
        if let Desk::Embedded(h) = self {
            h.close().await;
        }
    }
}

/// Runs `taskbridge updates`.
pub fn run(args: UpdatesArgs, raw: &super::config::RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = match raw.redmine()? {
            Some(config) => Desk::Redmine(RedmineHost::connect(config)?),
            None => Desk::Embedded(open_existing_store(raw).await?),
        };
        let result = match args.command {
            None => {
                let filter = UpdateFilter {
                    state: if args.pending {
                        Some(UpdateState::Pending)
                    } else {
                        args.state
                    },
                    project: match &args.project {
                        Some(p) => Some(host.project(raw, p).await?),
                        None => None,
                    },
                    key: None,
                };
                list(&host, filter, args.json).await
            }
            Some(UpdatesCommand::Approve {
                id,
                by,
                force,
                json,
            }) => match full_id(&host, &id).await {
                Ok(id) => match host.approve(&id, &decider(by), force).await {
                    Ok(outcome) => report(&outcome, json),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Some(UpdatesCommand::Reject {
                id,
                reason,
                by,
                json,
            }) => match full_id(&host, &id).await {
                Ok(id) => match host.reject(&id, &decider(by), reason.as_deref()).await {
                    Ok(outcome) => report(&outcome, json),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        host.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

/// The update `typed` names: its id or a unique start of it.
async fn full_id(host: &Desk, typed: &str) -> anyhow::Result<StatusUpdateId> {
    let all = host.list(UpdateFilter::default()).await?;
    let id = super::names::by_prefix(
        "update",
        "taskbridge updates",
        typed,
        all.iter().map(|u| u.id.0.as_str()),
    )?;
    Ok(StatusUpdateId(id.to_string()))
}

/// The name recorded for a CLI decision.
fn decider(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn report(outcome: &UpdateOutcome, json: bool) -> anyhow::Result<()> {
    match outcome {
        UpdateOutcome::Applied { id, assignment } => eprintln!(
            "update {id} applied: work {}, actual {}, remaining {}, {}",
            hours(assignment.work.hours_f64() * 3600.0),
            hours(assignment.actual_work.hours_f64() * 3600.0),
            hours(assignment.remaining_work.hours_f64() * 3600.0),
            assignment.percent_work_complete
        ),
        UpdateOutcome::Rejected { id, reason, .. } => eprintln!("update {id} rejected: {reason}"),
        UpdateOutcome::Pending { id } => eprintln!("update {id} is pending"),
    }
    if json {
        print_out(&to_json(outcome)?)?;
    }
    Ok(())
}

async fn list(host: &Desk, filter: UpdateFilter, json: bool) -> anyhow::Result<()> {
    let updates = host.list(filter).await?;
    if json {
        return print_out(&to_json(&updates)?);
    }
    if updates.is_empty() {
        eprintln!("no status updates");
        return Ok(());
    }
    let ids = super::names::short_ids(updates.iter().map(|u| u.id.0.as_str()));
    let mut table = Table::new(&[
        Column::left("ID", 36),
        Column::left("STATE", 10),
        Column::left("SUBMITTED", 19),
        Column::left("TASK", 28),
        Column::left("RESOURCE", 20),
        Column::left("DECIDED BY", 24),
        Column::left("CHANGES", 0),
    ]);
    for (u, id) in updates.iter().zip(ids) {
        table.row(row(u, id));
    }
    print_out(&table.render())
}

fn row(u: &StatusUpdateRecord, id: String) -> Vec<String> {
    // Typed values, then what the PM applied where it kept something else.
    let mut changes: Vec<String> = u
        .changes
        .iter()
        .map(|c| {
            let applied = u
                .applied
                .iter()
                .find(|a| a.field == c.field)
                .filter(|a| a.value != c.new)
                .map(|a| format!(" (applied {})", value(&a.value)))
                .unwrap_or_default();
            format!(
                "{} {} -> {}{applied}",
                field_name(c.field),
                value(&c.old),
                value(&c.new)
            )
        })
        .collect();
    changes.extend(
        u.applied
            .iter()
            .filter(|a| !u.changes.iter().any(|c| c.field == a.field))
            .map(|a| format!("{} = {}", field_name(a.field), value(&a.value))),
    );
    if let Some(note) = &u.status_note {
        changes.push(format!("status note {note}"));
    }
    if let Some(on) = u.completed_on {
        changes.push(format!("completed on {on}"));
    }
    if let Some(reason) = &u.reason {
        changes.push(format!("reason: {reason}"));
    }
    vec![
        id,
        u.state.as_str().to_string(),
        u.submitted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        u.task_name.clone().unwrap_or_else(|| "-".into()),
        u.resource_name.clone().unwrap_or_else(|| "-".into()),
        u.decider.clone().unwrap_or_else(|| "-".into()),
        changes.join(", "),
    ]
}

/// A field as people call it.
pub fn field_name(field: AssignmentField) -> &'static str {
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

/// A value for people: work in hours.
pub fn value(v: &FieldValue) -> String {
    match v {
        FieldValue::Work(w) => hours(w.hours_f64() * 3600.0),
        other => other.to_string(),
    }
}
