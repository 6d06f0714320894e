//! `taskbridge conflicts`: the conflicts the `manual` policy keeps for a person, and settling
//! one by taking a side.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::sync::{ConflictError, Take};

use super::config::RawConfig;
use super::sync::open_engine;
use super::table::{Column, Table, tidy_hours};
use super::{EXIT_FAILURE, print_out, runtime, to_json};

/// Arguments of `taskbridge conflicts`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConflictsArgs {
    /// What to do; without one, list the open conflicts.
    #[command(subcommand)]
    pub command: Option<ConflictsCommand>,
    /// Only this project: its GUID, a unique GUID prefix, or its name.
    pub project: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `taskbridge conflicts ...`.
#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Settle one conflict: the side taken is written to the other side, and the audit records
    /// who and why.
    Resolve {
        /// The conflict's id as `taskbridge conflicts` lists it (`PROJECT:ASSIGNMENT:FIELD`,
        /// the project as a unique start of its GUID).
        id: String,
        /// The side whose value stands: pm or mailbox.
        #[arg(long, value_name = "pm|mailbox")]
        take: Take,
        /// Why (recorded in the audit).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Who decides (recorded in the audit). Default: $USER.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// Runs `taskbridge conflicts`.
pub fn run(args: ConflictsArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    raw.validate()?;
    runtime()?.block_on(async {
        let (engine, host) = open_engine(raw).await?;
        match args.command {
            None => {
                let project = match &args.project {
                    Some(p) => Some(super::names::project(&host, p).await?),
                    None => None,
                };
                let list = engine.conflicts(project).await?;
                if args.json {
                    print_out(&to_json(&list)?)?;
                } else if list.is_empty() {
                    eprintln!("no open conflicts");
                } else {
                    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    let mut table = Table::new(&[
                        Column::left("ID", 40),
                        Column::left("MAILBOX", 32),
                        Column::left("PM VALUE", 24),
                        Column::left("PM CHANGED", 19),
                        Column::left("MAILBOX VALUE", 24),
                        Column::left("MAILBOX CHANGED", 19),
                        Column::left("SINCE", 0),
                    ]);
                    for c in &list {
                        table.row(vec![
                            short_conflict_id(&c.id),
                            c.mailbox.clone(),
                            tidy_hours(&c.pm_value),
                            time(c.pm_changed_at),
                            tidy_hours(&c.mail_value),
                            time(c.mail_changed_at),
                            time(c.since),
                        ]);
                    }
                    print_out(&table.render())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(ConflictsCommand::Resolve {
                id,
                take,
                reason,
                by,
            }) => {
                let by = by
                    .or_else(|| std::env::var("USER").ok())
                    .map(|b| b.trim().to_owned())
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| "cli".into());
                let open = engine.conflicts(None).await?;
                let id = full_conflict_id(&id, open.iter().map(|c| c.id.as_str()))?;
                match engine
                    .resolve_conflict(&id, take, &by, reason.as_deref())
                    .await
                {
                    Ok(c) => {
                        eprintln!(
                            "conflict {} resolved: {} value {:?} taken",
                            c.id,
                            take,
                            match take {
                                Take::Pm => &c.pm_value,
                                Take::Mailbox => &c.mail_value,
                            }
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e @ (ConflictError::NotFound(_) | ConflictError::NoMailValue(_))) => {
                        eprintln!("error: {e}");
                        Ok(ExitCode::from(EXIT_FAILURE))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    })
}

/// `PROJECT:ASSIGNMENT:FIELD` with the project GUID shortened as ids are printed.
fn short_conflict_id(id: &str) -> String {
    match id.split_once(':') {
        Some((project, rest)) => format!("{}:{rest}", super::names::short(project)),
        None => id.to_string(),
    }
}

/// The open conflict `typed` names: its id, or its id with the project GUID shortened to a
/// unique start of it.
fn full_conflict_id<'a>(
    typed: &str,
    open: impl IntoIterator<Item = &'a str>,
) -> Result<String, super::CliError> {
    let typed = typed.trim();
    let (project, rest) = typed.split_once(':').unwrap_or((typed, ""));
    let project = project.to_ascii_lowercase();
    let matching: Vec<&str> = open
        .into_iter()
        .filter(|id| match id.split_once(':') {
            Some((p, r)) => {
                p.starts_with(&project) && (rest.is_empty() || r.eq_ignore_ascii_case(rest))
            }
            None => false,
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        // A whole id goes to the engine, which says whether it was settled already.
        [] if project.len() == 36 => Ok(typed.to_string()),
        [] => Err(super::CliError::Usage(format!(
            "unknown conflict {typed:?} (run `taskbridge conflicts` to list the open ones)"
        ))),
        many => Err(super::CliError::Usage(format!(
            "{typed:?} names {} conflicts ({}); type the whole id",
            many.len(),
            many.iter()
                .map(|id| short_conflict_id(id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_ids_take_a_short_project() {
        let open = [
            "7d0c3e5a-9b21-4f6e-8a47-1c2d3e4f5a6b:1:percent_complete",
            "7d0c3e5a-9b21-4f6e-8a47-1c2d3e4f5a6b:2:percent_complete",
        ];
        assert_eq!(short_conflict_id(open[0]), "7d0c3e5a:1:percent_complete");
        assert_eq!(
            full_conflict_id("7d0c3e5a:2:percent_complete", open).unwrap(),
            open[1]
        );
        assert_eq!(full_conflict_id(open[0], open).unwrap(), open[0]);
        assert!(full_conflict_id("7d0c", open).is_err(), "two conflicts");
        let e = full_conflict_id("ffff:1:percent_complete", open).unwrap_err();
        assert!(e.to_string().contains("run `taskbridge conflicts`"), "{e}");
    }
}
