//! `taskbridge projects`: the projects of the embedded PM store.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::pm::ProjectGuid;
use taskbridge::pm::embedded::{EmbeddedError, Policy};

use super::table::{Column, Table};
use super::{names, open_existing_store, print_out, runtime, to_json};

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
        /// The project: its GUID, a unique GUID prefix, or its name.
        guid: String,
        /// Print the whole project (tasks, resources, assignments) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set how a project handles status updates: auto (apply at once) or approval (a status
    /// manager approves or rejects each). Pending updates stay pending.
    SetPolicy {
        /// The project: its GUID, a unique GUID prefix, or its name.
        guid: String,
        /// auto or approval.
        policy: Policy,
    },
    /// Publish a project again: a running connector sends it to the mailboxes again.
    Publish {
        /// The project: its GUID, a unique GUID prefix, or its name.
        guid: String,
    },
    /// End a project: delete its tasks from the mailboxes (to Deleted Items, under the
    /// mass-delete guard) or leave them detached, then remove its sync state and its rows in the
    /// PM store. Undoes a trial run against a real server.
    Remove {
        /// The project: its GUID, a unique GUID prefix, or its name.
        guid: String,
        /// Leave the tasks in the mailboxes, no longer synced, instead of deleting them.
        #[arg(long)]
        keep_tasks: bool,
        /// Delete beyond the mass-delete guard.
        #[arg(long)]
        force: bool,
        /// Print what would be deleted or detached and removed; send and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `taskbridge projects`.
pub fn run(args: ProjectsArgs, raw: &super::config::RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(raw).await?;
        let result = match args.command {
            None => list(&host, args.json).await,
            Some(ProjectsCommand::Show { guid, json }) => {
                match names::project(&host, &guid).await {
                    Ok(guid) => show(&host, guid, json).await,
                    Err(e) => Err(e),
                }
            }
            Some(ProjectsCommand::SetPolicy { guid, policy }) => {
                match names::project(&host, &guid).await {
                    Ok(guid) => host
                        .set_policy(guid, policy)
                        .await
                        .map_err(Into::into)
                        .map(|()| {
                            eprintln!("project {guid}: policy {policy}");
                        }),
                    Err(e) => Err(e),
                }
            }
            Some(ProjectsCommand::Publish { guid }) => match names::project(&host, &guid).await {
                Ok(guid) => host.publish(guid).await.map_err(Into::into).map(|()| {
                    eprintln!("project {guid} published");
                }),
                Err(e) => Err(e),
            },
            // Dispatched to `remove` before the store is opened here.
            Some(ProjectsCommand::Remove { .. }) => Ok(()),
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
    let mut table = Table::new(&[
        Column::left("GUID", 36),
        Column::left("POLICY", 8),
        Column::right("ASSIGNMENTS"),
        Column::right("IN MAILBOXES"),
        Column::right("PENDING"),
        Column::left("NAME", 0),
    ]);
    for p in projects {
        table.row(vec![
            p.guid.to_string(),
            p.policy.as_str().to_string(),
            p.assignments.to_string(),
            p.mailbox_assignments.to_string(),
            p.pending_updates.to_string(),
            p.name,
        ]);
    }
    print_out(&table.render())
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
    let mut table = Table::new(&[
        Column::right("UID"),
        Column::left("TASK", 30),
        Column::left("RESOURCE", 24),
        Column::left("MAILBOX", 30),
        Column::right("WORK"),
        Column::right("ACTUAL"),
        Column::right("REMAINING"),
        Column::right("%"),
        Column::left("NOTE", 0),
    ]);
    let hours = |w: taskbridge::pm::Work| super::table::hours(w.hours_f64() * 3600.0);
    for a in &project.assignments {
        let task = project.task(a.task_uid).map_or("?", |t| t.name.as_str());
        let resource = project.resource(a.resource_uid);
        table.row(vec![
            a.uid.to_string(),
            task.to_string(),
            resource.map_or("-", |r| r.name.as_str()).to_string(),
            resource
                .and_then(|r| r.email.as_deref())
                .unwrap_or("-")
                .to_string(),
            hours(a.work),
            hours(a.actual_work),
            hours(a.remaining_work),
            a.percent_work_complete.get().to_string(),
            notes.get(&a.uid).cloned().flatten().unwrap_or_default(),
        ]);
    }
    print_out(&format!(
        "{} ({}, {})\n{}",
        project.name,
        project.guid,
        project.time_zone,
        table.render()
    ))
}

/// Runs `taskbridge projects remove`: the mailboxes and the sync state first (the engine needs
/// the project to read), then the PM store.
pub fn remove(
    guid: String,
    options: taskbridge::sync::RemoveOptions,
    json: bool,
    raw: &super::config::RawConfig,
) -> anyhow::Result<ExitCode> {
    raw.validate()?;
    runtime()?.block_on(async {
        let (engine, host) = super::sync::open_engine(raw).await?;
        let guid = names::project(&host, &guid).await?;
        let report = engine.remove_project(guid, options).await?;
        let removed = if report.is_complete() && !options.dry_run {
            Some(host.remove_project(guid).await?)
        } else {
            None
        };
        drop(engine);
        host.close().await;
        if json {
            print_out(&to_json(&serde_json::json!({
                "project": guid,
                "mailboxes": report,
                "pm_rows": removed,
            }))?)?;
        }
        let verb = if options.dry_run { "would be " } else { "" };
        for (mailbox, n) in &report.deleted {
            eprintln!("{mailbox}: {n} tasks {verb}deleted (moved to Deleted Items)");
        }
        for (mailbox, n) in &report.detached {
            eprintln!("{mailbox}: {n} tasks {verb}left in place, no longer synced");
        }
        super::sync::print_failures(&report.errors);
        if report.refused_deletes > 0 {
            eprintln!(
                "the mass-delete guard refused deleting {} tasks: nothing was removed (use --force, \
                 or --keep-tasks to leave them)",
                report.refused_deletes
            );
        }
        if !report.is_complete() {
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
        if options.dry_run {
            eprintln!("project {guid}: its sync state and PM rows would be removed (dry run)");
        } else if let Some(rows) = removed {
            eprintln!(
                "project {guid} removed: {} sync state rows, {} tasks, {} assignments, {} status updates",
                report.state_rows, rows.tasks, rows.assignments, rows.status_updates
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
