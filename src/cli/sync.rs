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
use super::table::{Column, Table};
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
    /// The project: its GUID, a unique GUID prefix, or its name.
    pub project: String,
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
        let project = super::names::project(engine.host(), &args.project).await?;
        if args.dry_run {
            let preview = engine.preview_publish(project, args.force).await?;
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
                project,
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
            print_failures(&report.errors);
        }
        Ok(if report.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILURE)
        })
    })
}

/// Prints failed items once per distinct error (the mailbox address taken out of it), with how
/// many assignments in which mailboxes it hit: a wrong password is one line, not one per task.
pub fn print_failures(errors: &[taskbridge::sync::ItemError]) {
    let mut groups: Vec<(String, Vec<&taskbridge::sync::ItemError>)> = Vec::new();
    for e in errors {
        let text = without_mailbox(&e.error, &e.mailbox).to_string();
        match groups.iter_mut().find(|(t, _)| *t == text) {
            Some((_, members)) => members.push(e),
            None => groups.push((text, vec![e])),
        }
    }
    for (text, members) in groups.iter().take(20) {
        let mut mailboxes: Vec<&str> = members.iter().map(|e| e.mailbox.as_str()).collect();
        mailboxes.sort_unstable();
        mailboxes.dedup();
        match members.as_slice() {
            [one] => eprintln!("failed: {} in {}: {text}", one.key, one.mailbox),
            many => eprintln!(
                "failed: {} assignments in {}: {text}",
                many.len(),
                mailboxes.join(", ")
            ),
        }
    }
    if groups.len() > 20 {
        eprintln!("... and {} other errors (see --json)", groups.len() - 20);
    }
}

/// Arguments of `taskbridge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this project: its GUID, a unique GUID prefix, or its name.
    pub project: Option<String>,
    /// Only assignments that failed (or were parked), with their last error.
    #[arg(long, conflicts_with = "state")]
    pub failed: bool,
    /// Only assignments in this state.
    #[arg(long, value_enum, value_name = "STATE")]
    pub state: Option<StateFilter>,
    /// Only assignments of this mailbox.
    #[arg(long, value_name = "ADDRESS")]
    pub mailbox: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The states `status --state` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// In step.
    Synced,
    /// A status update waits for approval.
    Pending,
    /// A manual conflict waits for a person.
    Conflict,
    /// Given up after repeated failures.
    Parked,
    /// Deleted in the mailbox and no longer synced.
    Detached,
    /// The last attempt failed; retried.
    Failed,
}

#[derive(Serialize)]
struct StatusLine {
    key: String,
    project: String,
    task: Option<String>,
    mailbox: String,
    item_id: Option<String>,
    state: &'static str,
    detail: Option<String>,
    last_sync: Option<chrono::DateTime<chrono::Utc>>,
    attempts: u32,
    last_error: Option<String>,
}

/// The state `status` shows: a row whose last attempt failed is `failed` unless something
/// more specific (parked, pending, conflict, detached) holds it.
fn shown_state(s: &taskbridge::state::AssignmentState) -> &'static str {
    match &s.status {
        SyncStatus::Synced if s.last_error.is_some() => "failed",
        other => other.name(),
    }
}

/// Runs `taskbridge status`. Without `--json` it exits 1 when an assignment failed or is
/// parked.
pub fn status(args: StatusArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(&raw.data_dir).await?;
        let state_path = raw.data_path("state.sqlite");
        let state = SqliteStore::open(&state_path)?;
        let projects = match &args.project {
            Some(p) => vec![super::names::project(&host, p).await?],
            None => host.projects().await?,
        };
        let wanted = if args.failed { None } else { args.state };
        let mut all = Vec::new();
        for p in projects {
            let project = host.load_project(p).await?;
            let task_name = |uid| {
                let project = project.as_ref()?;
                let a = project.assignment(uid)?;
                Some(project.task(a.task_uid)?.name.clone())
            };
            for s in state.project_assignments(p).await? {
                let detail = match &s.status {
                    SyncStatus::PendingApproval { update, .. } => Some(format!(
                        "update {}",
                        super::names::short(&update.to_string())
                    )),
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
                all.push(StatusLine {
                    key: s.key.to_string(),
                    project: project
                        .as_ref()
                        .map_or_else(|| p.to_string(), |p| p.name.clone()),
                    task: task_name(s.key.assignment),
                    mailbox: s.mailbox.to_string(),
                    item_id: s.item.as_ref().map(|i| i.item_id.clone()),
                    state: shown_state(&s),
                    detail,
                    last_sync: s.last_sync,
                    attempts: s.attempts,
                    last_error: s.last_error.clone(),
                });
            }
        }
        host.close().await;
        let failing = |l: &StatusLine| matches!(l.state, "failed" | "parked");
        let trouble = all.iter().any(failing);
        let lines: Vec<&StatusLine> = all
            .iter()
            .filter(|l| {
                args.mailbox
                    .as_deref()
                    .is_none_or(|m| l.mailbox.eq_ignore_ascii_case(m))
            })
            .filter(|l| !args.failed || failing(l))
            .filter(|l| wanted.is_none_or(|w| l.state == state_name(w)))
            .collect();
        if args.json {
            print_out(&to_json(&lines)?)?;
        } else if args.failed {
            let mut table = Table::new(&[
                Column::left("TASK", 32),
                Column::left("MAILBOX", 32),
                Column::left("STATE", 8),
                Column::right("ATTEMPTS"),
                Column::left("LAST ERROR", 0),
            ]);
            for l in &lines {
                table.row(vec![
                    l.task.clone().unwrap_or_else(|| l.key.clone()),
                    l.mailbox.clone(),
                    l.state.to_string(),
                    l.attempts.to_string(),
                    l.last_error
                        .as_deref()
                        .map(|e| without_mailbox(e, &l.mailbox).to_string())
                        .or_else(|| l.detail.clone())
                        .unwrap_or_default(),
                ]);
            }
            if table.is_empty() {
                eprintln!("no failed assignments");
            } else {
                print_out(&table.render())?;
            }
        } else {
            let mut table = Table::new(&[
                Column::left("TASK", 32),
                Column::left("MAILBOX", 32),
                Column::left("STATE", 8),
                Column::left("LAST SYNC", 19),
                Column::left("ITEM", 12),
                Column::left("DETAIL", 0),
            ]);
            for l in &lines {
                table.row(vec![
                    l.task.clone().unwrap_or_else(|| l.key.clone()),
                    l.mailbox.clone(),
                    l.state.to_string(),
                    l.last_sync
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into()),
                    l.item_id.as_deref().map_or_else(|| "-".into(), item_tail),
                    l.detail
                        .clone()
                        .or_else(|| {
                            l.last_error
                                .as_deref()
                                .map(|e| without_mailbox(e, &l.mailbox).to_string())
                        })
                        .unwrap_or_default(),
                ]);
            }
            if table.is_empty() {
                if all.is_empty() {
                    eprintln!("nothing synced yet");
                } else {
                    eprintln!("no assignment matches");
                }
            } else {
                print_out(&table.render())?;
            }
            if !all.is_empty() {
                print_out(&summary(&all))?;
            }
        }
        // With --json the states are the answer (scripts and the chaos suite read them); a
        // person's `status` exits 1 so that a failure is not mistaken for "all fine".
        Ok(if trouble && !args.json {
            ExitCode::from(EXIT_FAILURE)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn state_name(filter: StateFilter) -> &'static str {
    match filter {
        StateFilter::Synced => "synced",
        StateFilter::Pending => "pending",
        StateFilter::Conflict => "conflict",
        StateFilter::Parked => "parked",
        StateFilter::Detached => "detached",
        StateFilter::Failed => "failed",
    }
}

/// The end of an item id: EWS ids share a long prefix per mailbox, the end tells them apart.
fn item_tail(id: &str) -> String {
    let n = id.chars().count();
    if n <= 12 {
        id.to_string()
    } else {
        format!("…{}", id.chars().skip(n - 11).collect::<String>())
    }
}

/// `6 assignments: 4 synced, 0 pending, 0 conflict, 0 parked, 2 failed`, then the last error
/// of each mailbox with failures.
fn summary(lines: &[StatusLine]) -> String {
    let count = |state: &str| lines.iter().filter(|l| l.state == state).count();
    let mut text = format!(
        "{} assignment{}: {} synced, {} pending, {} conflict, {} parked, {} failed",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        count("synced"),
        count("pending"),
        count("conflict"),
        count("parked"),
        count("failed"),
    );
    let detached = count("detached");
    if detached > 0 {
        text.push_str(&format!(", {detached} detached"));
    }
    let mut by_mailbox: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for l in lines {
        if let (true, Some(e)) = (matches!(l.state, "failed" | "parked"), &l.last_error) {
            let entry = by_mailbox.entry(l.mailbox.as_str()).or_insert((0, e));
            entry.0 += 1;
            entry.1 = e;
        }
    }
    for (mailbox, (n, error)) in by_mailbox {
        text.push_str(&format!(
            "\n{mailbox}: {n} failing, last error: {}",
            without_mailbox(error, mailbox)
        ));
    }
    text
}

/// An error text without the `mailbox ADDRESS: ` it starts with when the line names it already.
fn without_mailbox<'a>(error: &'a str, mailbox: &str) -> &'a str {
    error
        .strip_prefix(&format!("mailbox {mailbox}: "))
        .unwrap_or(error)
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
