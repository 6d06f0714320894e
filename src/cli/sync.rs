//! `taskbridge publish`, `status` and `audit`: the engine from the command line.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use taskbridge::ews::client::EwsClient;
use taskbridge::exchange::EwsMailboxStore;
use taskbridge::mapping::MailField;
use taskbridge::pm::embedded::EmbeddedHost;
use taskbridge::pm::{AnyHost, PmHost, ProjectGuid};
use taskbridge::state::{AnyStateStore, DecisionRule, Side, StateStore, SyncStatus};
use taskbridge::sync::{BatchLimits, Engine, PlannedAction, PublishOptions};

use super::config::RawConfig;
use super::table::{Column, Table, tidy_hours};
use super::{EXIT_FAILURE, open_existing_store, print_out, runtime, to_json};

/// The engine of the standalone connector. Every command and `serve`, over the embedded store
/// or Redmine, names this one type, so the program carries one copy of the engine's code.
pub type CliEngine = Engine<AnyHost, EwsMailboxStore<EwsClient>, AnyStateStore>;

/// Builds the engine from the configuration, over the embedded PM store; returns the store too.
pub async fn open_engine(raw: &RawConfig) -> anyhow::Result<(CliEngine, EmbeddedHost)> {
    super::autodiscover::refresh(raw).await?;
    let host = open_existing_store(raw).await?;
    Ok((build_engine(raw, host.clone())?, host))
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
    let state = raw.state_location()?.open()?;
    Ok(Engine::new(host.into(), store, state, table, raw.sync()?))
}

/// Arguments of `taskbridge publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The project: its GUID, a unique GUID prefix, or its name.
    pub project: String,
    /// Delete tasks beyond the mass-delete guard, and move tasks out of a mailbox that can no
    /// longer be reached (their old tasks stay there).
    #[arg(long)]
    pub force: bool,
    /// Compare every assignment with its stored row, even in a project (or mailbox) the last
    /// publish left in step at the same plan revision, which is otherwise skipped unread.
    #[arg(long)]
    pub full: bool,
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
        let (engine, host) = open_engine(raw).await?;
        let project = super::names::project(&host, &args.project).await?;
        if args.dry_run {
            let preview = engine.preview_publish(project, args.force).await?;
            if args.json {
                print_out(&to_json(&preview)?)?;
            } else {
                let plan = host.load_project(project).await?;
                let task = |key: &taskbridge::pm::AssignmentKey| -> String {
                    plan.as_ref()
                        .and_then(|p| p.task(p.assignment(key.assignment)?.task_uid))
                        .map_or_else(
                            || key.to_string(),
                            |t| format!("\"{}\" (assignment {})", t.name, key.assignment),
                        )
                };
                for c in &preview.changes {
                    let action = match c.action {
                        PlannedAction::Create => "create",
                        PlannedAction::Update => "update",
                        PlannedAction::Delete => "delete",
                    };
                    print_out(&format!("{action} {} in {}", task(&c.key), c.mailbox))?;
                    for f in &c.fields {
                        print_out(&format!(
                            "    {}: {} -> {}",
                            f.field,
                            tidy_hours(&f.old),
                            tidy_hours(&f.new)
                        ))?;
                    }
                }
                eprintln!(
                    "dry run: {} writes, {} unchanged{}{}; nothing sent",
                    preview.changes.len(),
                    preview.unchanged,
                    unless_none(
                        preview.refused_deletes,
                        ", {} deletions the mass-delete guard would refuse (use --force)"
                    ),
                    unless_none(
                        preview.awaiting,
                        ", {} mailbox edits that waited for their assignment to be read and \
                         decided"
                    ),
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
            super::logs::set_bar(&bar);
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
                    full: args.full,
                    progress,
                },
            )
            .await?;
        if let Some(bar) = bar {
            super::logs::clear_bar();
            bar.finish_and_clear();
        }
        if args.json {
            print_out(&to_json(&report)?)?;
        } else {
            print_out(&format!(
                "created {}, updated {}, deleted {}, unchanged {}{}, adopted {}, failed {}{}{}{}",
                report.created,
                report.updated,
                report.deleted,
                report.unchanged,
                unless_none(
                    report.skipped,
                    " ({} unread: unchanged since the last publish; --full compares them)"
                ),
                report.adopted,
                report.failed,
                unless_none(
                    report.refused_deletes,
                    ", {} deletions refused by the mass-delete guard (use --force)"
                ),
                unless_none(report.deferred, ", {} left to the next publish"),
                unless_none(
                    report.taken,
                    ", {} mailbox edits that waited for their assignment taken"
                ),
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

/// `note` with its `{}` replaced by `n`, or nothing when `n` is 0: the optional parts of a
/// report line.
fn unless_none(n: usize, note: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        note.replacen("{}", &n.to_string(), 1)
    }
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
    /// Only assignments whose last attempt failed (their task not created, parked, or a retry
    /// due), with their last error.
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
    /// Edited in the mailbox while the assignment is out of the plan: the edit waits for it.
    AwaitingPlan,
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
    /// The `serve` instance holding the mailbox's lease (none: no instance holds it now).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// The state `status` shows: an assignment whose task could not be created (the last attempt
/// failed, no item yet) is `failed`; one with a task keeps its sync state, its last error shown
/// beside it while a retry is due.
fn shown_state(s: &taskbridge::state::AssignmentState) -> &'static str {
    match &s.status {
        SyncStatus::Synced if s.item.is_none() && s.last_error.is_some() => "failed",
        other => other.name(),
    }
}

/// Runs `taskbridge status`. Without `--json` it exits 1 when an assignment failed or is
/// parked.
pub fn status(args: StatusArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let host = open_existing_store(raw).await?;
        let state = raw.state_location()?.open()?;
        let projects = match &args.project {
            Some(p) => vec![super::names::project(&host, p).await?],
            None => host.projects().await?,
        };
        let wanted = if args.failed { None } else { args.state };
        // Which instance works on each mailbox: a lease that ran out has no owner any more.
        let now = chrono::Utc::now();
        let leases = state.leases().await?;
        let owners: std::collections::BTreeMap<String, String> = leases
            .iter()
            .filter(|l| l.expires > now)
            .filter_map(|l| Some((l.mailbox.to_string(), l.owner.as_ref()?.to_string())))
            .collect();
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
                    SyncStatus::AwaitingPlan { since } => Some(format!(
                        "edited in the mailbox since {}; the assignment is not in the plan",
                        since.format("%Y-%m-%d %H:%M UTC")
                    )),
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
                    owner: owners.get(s.mailbox.as_str()).cloned(),
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
            .filter(|l| !args.failed || failing(l) || l.last_error.is_some())
            .filter(|l| wanted.is_none_or(|w| l.state == state_name(w)))
            .collect();
        // With several projects listed, each task says which project it belongs to.
        let several = lines
            .iter()
            .map(|l| l.project.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1;
        let task_width = if several { 48 } else { 32 };
        let task_cell = |l: &StatusLine| {
            let task = l.task.clone().unwrap_or_else(|| l.key.clone());
            if several {
                format!("{}: {task}", l.project)
            } else {
                task
            }
        };
        if args.json {
            print_out(&to_json(&lines)?)?;
        } else if args.failed {
            let mut table = Table::new(&[
                Column::left("TASK", task_width),
                Column::left("MAILBOX", 32),
                Column::left("STATE", 8),
                Column::right("ATTEMPTS"),
                Column::left("LAST ERROR", 0),
            ]);
            for l in &lines {
                table.row(vec![
                    task_cell(l),
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
                Column::left("TASK", task_width),
                Column::left("MAILBOX", 32),
                Column::left("STATE", 8),
                Column::left("LAST SYNC", 19),
                Column::left("ITEM", 12),
                Column::left("DETAIL", 0),
            ]);
            for l in &lines {
                table.row(vec![
                    task_cell(l),
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
            if !leases.is_empty() {
                let mut table = Table::new(&[
                    Column::left("MAILBOX", 32),
                    Column::left("OWNER", 32),
                    Column::left("LEASE UNTIL", 0),
                ]);
                for l in leases.iter().filter(|l| {
                    args.mailbox
                        .as_deref()
                        .is_none_or(|m| l.mailbox.as_str().eq_ignore_ascii_case(m))
                }) {
                    let owner = owners.get(l.mailbox.as_str());
                    table.row(vec![
                        l.mailbox.to_string(),
                        owner.cloned().unwrap_or_else(|| "-".into()),
                        owner
                            .map(|_| l.expires.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                print_out(&table.render())?;
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
        StateFilter::AwaitingPlan => "awaiting-plan",
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
    let waiting = count("awaiting-plan");
    if waiting > 0 {
        text.push_str(&format!(
            ", {waiting} edited in the mailbox while out of the plan (the edits wait for it)"
        ));
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
    /// Only this project: its GUID, a unique GUID prefix, or its name.
    pub project: Option<String>,
    /// Only decisions from this time on: a date (`2026-12-01`), a date and time
    /// (`2026-12-01 14:30`, UTC), or a span back from now (`30m`, `2h`, `7d`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only the latest N decisions (after the other filters).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only decisions about tasks of this mailbox.
    #[arg(long, value_name = "ADDRESS")]
    pub mailbox: Option<String>,
    /// Only decisions about this field (as the mapping names it: percent_complete,
    /// actual_work, total_work, due_date, start_date, subject, body, importance, categories).
    #[arg(long, value_name = "FIELD")]
    pub field: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// When `--since` starts: a date, a date and time (UTC), or a span back from `now`.
fn parse_since(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, super::CliError> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    let t = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(Utc.from_utc_datetime(&at));
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)));
    }
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let span = number.parse::<i64>().ok().and_then(|n| match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    });
    match span {
        Some(span) => Ok(now - span),
        None => Err(super::CliError::Usage(format!(
            "--since {text:?}: expected a date (2026-12-01), a date and time (2026-12-01 14:30) \
             or a span back from now (30m, 2h, 7d)"
        ))),
    }
}

/// A decision in words: which value stands and why.
fn decision_text(rule: DecisionRule, winner: Side) -> String {
    let taken = match winner {
        Side::Pm => "plan value kept",
        Side::Mail => "mailbox value taken",
        Side::Neither => "kept for a person",
    };
    let why = match rule {
        DecisionRule::MailOnly => "only the mailbox changed",
        DecisionRule::PmOnly => return "plan value sent: only the plan changed".into(),
        DecisionRule::Converged => {
            return "in step: both sides changed it to the same value".into();
        }
        DecisionRule::NewerWins => "both changed, the newer change wins",
        DecisionRule::PmWins => "both changed, the policy is pm-wins",
        DecisionRule::MailWins => "both changed, the policy is mail-wins",
        DecisionRule::Manual => {
            return "kept for a person: both changed (see `taskbridge conflicts`)".into();
        }
        DecisionRule::PmOwned => {
            return "plan value restored: this field only flows from the plan".into();
        }
        DecisionRule::Rejected => {
            return "plan value restored: the status manager rejected the update".into();
        }
        DecisionRule::Tie => "both changed within the clock-skew tolerance, the plan wins a tie",
        DecisionRule::StatusNote => return "status note recorded with the status update".into(),
        DecisionRule::Resolved => "settled by a person",
    };
    format!("{taken}: {why}")
}

/// Runs `taskbridge audit`.
pub fn audit(args: AuditArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let location = raw.state_location()?;
        if let taskbridge::state::StateLocation::Sqlite(path) = &location
            && !path.exists()
        {
            return Err(super::CliError::Usage(format!(
                "no state store at {} (nothing synced yet, or a wrong --data-dir)",
                path.display()
            ))
            .into());
        }
        let since = args
            .since
            .as_deref()
            .map(|s| parse_since(s, chrono::Utc::now()))
            .transpose()?;
        let field = match args.field.as_deref() {
            Some(name) => Some(
                MailField::from_name(&name.trim().to_ascii_lowercase().replace(['-', ' '], "_"))
                    .ok_or_else(|| {
                        super::CliError::Usage(format!(
                            "unknown field {name:?}; the fields are {}",
                            MailField::ALL
                                .iter()
                                .map(|f| f.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?,
            ),
            None => None,
        };
        let host = open_existing_store(raw).await?;
        let project = match &args.project {
            Some(p) => Some(super::names::project(&host, p).await?),
            None => None,
        };
        let state = location.open()?;
        let mut records: Vec<_> = state
            .audit(project)
            .await?
            .into_iter()
            .filter(|r| since.is_none_or(|s| r.at >= s))
            .filter(|r| {
                args.mailbox
                    .as_deref()
                    .is_none_or(|m| r.mailbox.to_string().eq_ignore_ascii_case(m))
            })
            .filter(|r| field.is_none_or(|f| r.field == f))
            .collect();
        if let Some(n) = args.limit {
            records.drain(..records.len().saturating_sub(n));
        }
        if args.json {
            host.close().await;
            print_out(&to_json(&records)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        // Task names, one project read per project named.
        let mut names: std::collections::HashMap<ProjectGuid, Option<taskbridge::pm::Project>> =
            Default::default();
        for r in &records {
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(r.key.project) {
                slot.insert(host.load_project(r.key.project).await?);
            }
        }
        host.close().await;
        let task = |key: &taskbridge::pm::AssignmentKey| -> String {
            names
                .get(&key.project)
                .and_then(Option::as_ref)
                .and_then(|p| p.task(p.assignment(key.assignment)?.task_uid))
                .map_or_else(|| key.to_string(), |t| t.name.clone())
        };
        let mut table = Table::new(&[
            Column::left("TIME (UTC)", 19),
            Column::left("TASK", 28),
            Column::left("MAILBOX", 28),
            Column::left("FIELD", 16),
            Column::left("PLAN", 20),
            Column::left("MAILBOX VALUE", 20),
            Column::left("DECISION", 0),
        ]);
        for r in &records {
            let mut decision = decision_text(r.rule, r.winner);
            if let Some(note) = &r.note {
                decision.push_str(&format!(" (by {note})"));
            }
            table.row(vec![
                r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                task(&r.key),
                r.mailbox.to_string(),
                r.field.name().to_string(),
                tidy_hours(&r.pm_value),
                tidy_hours(&r.mail_value),
                decision,
            ]);
        }
        if table.is_empty() {
            eprintln!(
                "no decisions recorded{}",
                if args.project.is_some()
                    || since.is_some()
                    || args.mailbox.is_some()
                    || field.is_some()
                {
                    " that match"
                } else {
                    ""
                }
            );
        } else {
            print_out(&table.render())?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_note_shows_its_count_and_nothing_for_none() {
        assert_eq!(unless_none(0, ", {} left to the next publish"), "");
        assert_eq!(
            unless_none(3, ", {} left to the next publish"),
            ", 3 left to the next publish"
        );
    }

    #[test]
    fn since_takes_dates_times_and_spans() {
        use chrono::TimeZone;
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("2026-12-01", now).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2026-12-01 14:30", now).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(2026, 12, 1, 14, 30, 0)
                .unwrap()
        );
        assert_eq!(
            parse_since("2h", now).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn decisions_read_as_words() {
        assert_eq!(
            decision_text(DecisionRule::MailOnly, Side::Mail),
            "mailbox value taken: only the mailbox changed"
        );
        assert_eq!(
            decision_text(DecisionRule::NewerWins, Side::Pm),
            "plan value kept: both changed, the newer change wins"
        );
    }
}
