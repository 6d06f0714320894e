//! `taskbridge conflicts`: the conflicts the `manual` policy keeps for a person, and settling
//! one by taking a side.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::pm::ProjectGuid;
use taskbridge::sync::{ConflictError, Take};

use super::config::RawConfig;
use super::sync::open_engine;
use super::{EXIT_FAILURE, print_out, runtime, to_json};

/// Arguments of `taskbridge conflicts`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConflictsArgs {
    /// What to do; without one, list the open conflicts.
    #[command(subcommand)]
    pub command: Option<ConflictsCommand>,
    /// Only this project.
    pub project: Option<ProjectGuid>,
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
        /// The conflict's id, as `taskbridge conflicts` lists it.
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
        let engine = open_engine(raw).await?;
        match args.command {
            None => {
                let list = engine.conflicts(args.project).await?;
                if args.json {
                    print_out(&to_json(&list)?)?;
                } else if list.is_empty() {
                    eprintln!("no open conflicts");
                } else {
                    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    for c in &list {
                        print_out(&format!(
                            "{}  {}  pm {:?} ({})  mailbox {:?} ({})  since {}",
                            c.id,
                            c.mailbox,
                            c.pm_value,
                            time(c.pm_changed_at),
                            c.mail_value,
                            time(c.mail_changed_at),
                            time(c.since),
                        ))?;
                    }
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
