//! `taskbridge updates`: task status updates of the embedded PM store, and the status manager's
//! approve and reject.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::pm::embedded::{EmbeddedHost, StatusUpdateRecord, UpdateFilter, UpdateState};
use taskbridge::pm::{ProjectGuid, StatusUpdateId, UpdateOutcome};

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
    /// Only updates of this project.
    #[arg(long, value_name = "GUID")]
    pub project: Option<ProjectGuid>,
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
        /// The update's id.
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
        /// The update's id.
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

/// Runs `taskbridge updates`.
pub fn run(args: UpdatesArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(data_dir).await?;
        let result = match args.command {
            None => {
                let filter = UpdateFilter {
                    state: if args.pending {
                        Some(UpdateState::Pending)
                    } else {
                        args.state
                    },
                    project: args.project,
                    key: None,
                };
                list(&host, filter, args.json).await
            }
            Some(UpdatesCommand::Approve {
                id,
                by,
                force,
                json,
            }) => {
                let outcome = host.approve(&StatusUpdateId(id), &decider(by), force).await;
                match outcome {
                    Ok(outcome) => report(&outcome, json),
                    Err(e) => Err(e.into()),
                }
            }
            Some(UpdatesCommand::Reject {
                id,
                reason,
                by,
                json,
            }) => {
                let outcome = host
                    .reject(&StatusUpdateId(id), &decider(by), reason.as_deref())
                    .await;
                match outcome {
                    Ok(outcome) => report(&outcome, json),
                    Err(e) => Err(e.into()),
                }
            }
        };
        host.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
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
            "update {id} applied: work {:.2}h, actual {:.2}h, remaining {:.2}h, {}",
            assignment.work.hours_f64(),
            assignment.actual_work.hours_f64(),
            assignment.remaining_work.hours_f64(),
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

async fn list(host: &EmbeddedHost, filter: UpdateFilter, json: bool) -> anyhow::Result<()> {
    let updates = host.status_updates(filter).await?;
    if json {
        return print_out(&to_json(&updates)?);
    }
    if updates.is_empty() {
        eprintln!("no status updates");
        return Ok(());
    }
    let mut lines = vec![format!(
        "{:<36}  {:<10}  {:<20}  {:<24}  {:<24}  CHANGES",
        "ID", "STATE", "SUBMITTED", "TASK", "RESOURCE"
    )];
    for u in &updates {
        lines.push(line(u));
    }
    print_out(&lines.join("\n"))
}

fn line(u: &StatusUpdateRecord) -> String {
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
                .map(|a| format!(" (applied {})", a.value))
                .unwrap_or_default();
            format!("{:?} {} -> {}{applied}", c.field, c.old, c.new)
        })
        .collect();
    changes.extend(
        u.applied
            .iter()
            .filter(|a| !u.changes.iter().any(|c| c.field == a.field))
            .map(|a| format!("{:?} = {}", a.field, a.value)),
    );
    if let Some(note) = &u.status_note {
        changes.push(format!("status note {note}"));
    }
    if let Some(on) = u.completed_on {
        changes.push(format!("completed on {on}"));
    }
    format!(
        "{:<36}  {:<10}  {:<20}  {:<24}  {:<24}  {}",
        u.id.0,
        u.state.as_str(),
        u.submitted_at.format("%Y-%m-%d %H:%M:%S"),
        u.task_name.as_deref().unwrap_or("-"),
        u.resource_name.as_deref().unwrap_or("-"),
        changes.join(", ")
    )
}
