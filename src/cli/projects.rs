//! `taskbridge projects`: the projects of the embedded PM store.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::pm::ProjectGuid;
use taskbridge::pm::embedded::{EmbeddedError, Policy};

use super::{open_existing_store, print_out, runtime, to_json};

/// Arguments of `taskbridge projects`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProjectsArgs {
    /// What to do; without one, list the projects.
    #[command(subcommand)]
    pub command: Option<ProjectsCommand>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `taskbridge projects ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Show one project with its assignments.
    Show {
        /// The project GUID.
        guid: ProjectGuid,
        /// Print the whole project (tasks, resources, assignments) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set how a project handles status updates: auto (apply at once) or approval (a status
    /// manager approves or rejects each). Pending updates stay pending.
    SetPolicy {
        /// The project GUID.
        guid: ProjectGuid,
        /// auto or approval.
        policy: Policy,
    },
    /// Publish a project again: a running connector sends it to the mailboxes again.
    Publish {
        /// The project GUID.
        guid: ProjectGuid,
    },
}

/// Runs `taskbridge projects`.
pub fn run(args: ProjectsArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(data_dir).await?;
        let result = match args.command {
            None => list(&host, args.json).await,
            Some(ProjectsCommand::Show { guid, json }) => show(&host, guid, json).await,
            Some(ProjectsCommand::SetPolicy { guid, policy }) => host
                .set_policy(guid, policy)
                .await
                .map_err(Into::into)
                .map(|()| {
                    eprintln!("project {guid}: policy {policy}");
                }),
            Some(ProjectsCommand::Publish { guid }) => {
                host.publish(guid).await.map_err(Into::into).map(|()| {
                    eprintln!("project {guid} published");
                })
            }
        };
        host.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

async fn list(host: &taskbridge::pm::embedded::EmbeddedHost, json: bool) -> anyhow::Result<()> {
    let projects = host.project_summaries().await?;
    if json {
        return print_out(&to_json(&projects)?);
    }
    if projects.is_empty() {
        eprintln!("no projects (import one with `taskbridge import FILE`)");
        return Ok(());
    }
    let mut lines = vec![format!(
        "{:<36}  {:<8}  {:>11}  {:>7}  {:>7}  NAME",
        "GUID", "POLICY", "ASSIGNMENTS", "MAILBOX", "PENDING"
    )];
    for p in projects {
        lines.push(format!(
            "{:<36}  {:<8}  {:>11}  {:>7}  {:>7}  {}",
            p.guid.to_string(),
            p.policy.as_str(),
            p.assignments,
            p.mailbox_assignments,
            p.pending_updates,
            p.name
        ));
    }
    print_out(&lines.join("\n"))
}

async fn show(
    host: &taskbridge::pm::embedded::EmbeddedHost,
    guid: ProjectGuid,
    json: bool,
) -> anyhow::Result<()> {
    let project = host
        .load_project(guid)
        .await?
        .ok_or(EmbeddedError::UnknownProject(guid))?;
    if json {
        return print_out(&to_json(&project)?);
    }
    // The status note each assignment's owner last reported (applied updates, oldest first).
    let mut notes = std::collections::HashMap::new();
    let applied = host
        .status_updates(taskbridge::pm::embedded::UpdateFilter {
            state: Some(taskbridge::pm::embedded::UpdateState::Applied),
            project: Some(guid),
            key: None,
        })
        .await?;
    for u in applied {
        if let Some(note) = u.status_note {
            notes.insert(u.key.assignment, note.new);
        }
    }
    let mut lines = vec![
        format!("{} ({}, {})", project.name, project.guid, project.time_zone),
        format!(
            "{:>6}  {:<30}  {:<24}  {:<30}  {:>8}  {:>8}  {:>8}  {:>4}  NOTE",
            "UID", "TASK", "RESOURCE", "MAILBOX", "WORK", "ACTUAL", "REMAIN", "%"
        ),
    ];
    let hours = |w: taskbridge::pm::Work| format!("{:.2}h", w.hours_f64());
    for a in &project.assignments {
        let task = project.task(a.task_uid).map_or("?", |t| t.name.as_str());
        let resource = project.resource(a.resource_uid);
        lines.push(format!(
            "{:>6}  {:<30}  {:<24}  {:<30}  {:>8}  {:>8}  {:>8}  {:>4}  {}",
            a.uid.to_string(),
            task,
            resource.map_or("-", |r| r.name.as_str()),
            resource.and_then(|r| r.email.as_deref()).unwrap_or("-"),
            hours(a.work),
            hours(a.actual_work),
            hours(a.remaining_work),
            a.percent_work_complete.get(),
            notes.get(&a.uid).cloned().flatten().unwrap_or_default(),
        ));
    }
    print_out(&lines.join("\n"))
}
