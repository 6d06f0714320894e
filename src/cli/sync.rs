//! `taskbridge publish`, `status` and `audit`: the engine from the command line.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use taskbridge::ews::client::EwsClient;
use taskbridge::exchange::EwsMailboxStore;
use taskbridge::pm::embedded::EmbeddedHost;
use taskbridge::pm::{PmHost, ProjectGuid};
use taskbridge::state::{SqliteStore, StateStore, SyncStatus};
use taskbridge::sync::{BatchLimits, Engine, PlannedAction, PublishOptions};

use super::config::RawConfig;
use super::{EXIT_FAILURE, open_existing_store, print_out, runtime, to_json};

/// The engine of the standalone connector.
pub type CliEngine = Engine<EmbeddedHost, EwsMailboxStore<EwsClient>, SqliteStore>;

/// Builds the engine from the configuration, over the embedded PM store.
pub async fn open_engine(raw: &RawConfig) -> anyhow::Result<CliEngine> {
    let host = open_existing_store(&raw.data_dir).await?;
    build_engine(raw, host)
}

/// Builds the engine over `host`.
pub fn build_engine(raw: &RawConfig, host: EmbeddedHost) -> anyhow::Result<CliEngine> {
    let exchange = raw.exchange()?;
    let limits = BatchLimits {
        write: exchange.limits.batch_size,
        fetch: exchange.limits.get_item_batch,
    };
    let client = EwsClient::new(exchange)?;
    let table = raw.field_table()?;
    let store = EwsMailboxStore::new(client, Arc::new(table.clone()), limits);
    let state = SqliteStore::open(&raw.data_path("state.sqlite"))?;
    Ok(Engine::new(host, store, state, table, raw.sync()?))
}

/// Arguments of `taskbridge publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The project GUID.
    pub project: ProjectGuid,
    /// Delete tasks beyond the mass-delete guard.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Send nothing: print, per mailbox and assignment, the tasks the publish would create,
    /// update (field: old -> new) or delete, from the stored sync state.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `taskbridge publish`.
pub fn publish(args: PublishArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    raw.validate()?;
    runtime()?.block_on(async {
        let engine = open_engine(raw).await?;
        if args.dry_run {
            let preview = engine.preview_publish(args.project, args.force).await?;
            if args.json {
                print_out(&to_json(&preview)?)?;
            } else {
                for c in &preview.changes {
                    let action = match c.action {
                        PlannedAction::Create => "create",
                        PlannedAction::Update => "update",
                        PlannedAction::Delete => "delete",
                    };
                    print_out(&format!("{action} {} in {}", c.key, c.mailbox))?;
                    for f in &c.fields {
                        print_out(&format!("    {}: {} -> {}", f.field, f.old, f.new))?;
                    }
                }
                eprintln!(
                    "dry run: {} writes, {} unchanged{}; nothing sent",
                    preview.changes.len(),
                    preview.unchanged,
                    if preview.refused_deletes > 0 {
                        format!(
                            ", {} deletions the mass-delete guard would refuse (use --force)",
                            preview.refused_deletes
                        )
                    } else {
                        String::new()
                    }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} publishing [{bar:40}] {pos}/{len} assignments {elapsed}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let progress: Option<taskbridge::sync::Progress> = bar.clone().map(|bar| {
            Arc::new(move |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }) as taskbridge::sync::Progress
        });
        let report = engine
            .publish(
                args.project,
                PublishOptions {
                    force: args.force,
                    progress,
                },
            )
            .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if args.json {
            print_out(&to_json(&report)?)?;
        } else {
            print_out(&format!(
                "created {}, updated {}, deleted {}, unchanged {}, adopted {}, failed {}{}",
                report.created,
                report.updated,
                report.deleted,
                report.unchanged,
                report.adopted,
                report.failed,
                if report.refused_deletes > 0 {
                    format!(
                        ", {} deletions refused by the mass-delete guard (use --force)",
                        report.refused_deletes
                    )
                } else {
                    String::new()
                }
            ))?;
            for e in report.errors.iter().take(20) {
                eprintln!("failed: {} in {}: {}", e.key, e.mailbox, e.error);
            }
        }
        Ok(if report.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILURE)
        })
    })
}

/// Arguments of `taskbridge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this project.
    pub project: Option<ProjectGuid>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct StatusLine {
    key: String,
    mailbox: String,
    item_id: Option<String>,
    state: &'static str,
    detail: Option<String>,
    last_sync: Option<chrono::DateTime<chrono::Utc>>,
    attempts: u32,
    last_error: Option<String>,
}

/// Runs `taskbridge status`.
pub fn status(args: StatusArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(&raw.data_dir).await?;
        let state = SqliteStore::open(&raw.data_path("state.sqlite"))?;
        let projects = match args.project {
            Some(p) => vec![p],
            None => host.projects().await?,
        };
        let mut lines = Vec::new();
        for p in projects {
            for s in state.project_assignments(p).await? {
                let detail = match &s.status {
                    SyncStatus::PendingApproval { update, .. } => Some(format!("update {update}")),
                    SyncStatus::Conflict { fields, .. } => Some(
                        fields
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    SyncStatus::Parked { reason } => Some(reason.clone()),
                    _ => None,
                };
                lines.push(StatusLine {
                    key: s.key.to_string(),
                    mailbox: s.mailbox.to_string(),
                    item_id: s.item.as_ref().map(|i| i.item_id.clone()),
                    state: s.status.name(),
                    detail,
                    last_sync: s.last_sync,
                    attempts: s.attempts,
                    last_error: s.last_error.clone(),
                });
            }
        }
        if args.json {
            print_out(&to_json(&lines)?)?;
        } else {
            for l in &lines {
                print_out(&format!(
                    "{:<48} {:<28} {:<9} {:<25} {}",
                    l.key,
                    l.mailbox,
                    l.state,
                    l.last_sync
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into()),
                    l.detail.as_deref().unwrap_or("")
                ))?;
            }
            if lines.is_empty() {
                eprintln!("nothing synced yet");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Arguments of `taskbridge audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this project.
    pub project: Option<ProjectGuid>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `taskbridge audit`.
pub fn audit(args: AuditArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let path = raw.data_path("state.sqlite");
        if !path.exists() {
            return Err(super::CliError::Usage(format!(
                "no state store at {} (nothing synced yet, or a wrong --data-dir)",
                path.display()
            ))
            .into());
        }
        let state = SqliteStore::open(&path)?;
        let records = state.audit(args.project).await?;
        if args.json {
            print_out(&to_json(&records)?)?;
        } else {
            for r in &records {
                print_out(&format!(
                    "{} {} {} {}: pm {:?} mail {:?} -> {:?} ({:?}){}",
                    r.at.format("%Y-%m-%d %H:%M:%S"),
                    r.key,
                    r.mailbox,
                    r.field.name(),
                    r.pm_value,
                    r.mail_value,
                    r.winner,
                    r.rule,
                    r.note
                        .as_deref()
                        .map(|n| format!(" by {n}"))
                        .unwrap_or_default(),
                ))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
