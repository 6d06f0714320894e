//! `taskbridge import FILE`: imports (publishes) a project file into the embedded PM store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono_tz::Tz;
use clap::Args;

use taskbridge::pm::embedded::{EmbeddedHost, Policy};
use taskbridge::pm::{ImportOptions, ProjectGuid, import_file};

use super::{CliError, print_out, runtime, to_json};

/// Arguments of `taskbridge import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The project file: MSPDI XML (Microsoft Project 2007-2019, ProjectLibre, GanttProject) or
    /// taskbridge JSON (docs/PROJECT-FORMAT.md).
    pub file: PathBuf,
    /// The IANA time zone the file's dates are local to, e.g. Europe/Berlin (MSPDI names none;
    /// a JSON file's own time_zone wins). Default: UTC.
    #[arg(long, value_name = "TZ")]
    pub time_zone: Option<Tz>,
    /// The project GUID for a file that has none (Project 2007 and many exports). Use the same
    /// GUID on every import of that project.
    #[arg(long, value_name = "GUID")]
    pub guid: Option<ProjectGuid>,
    /// Refuse a project with more mailbox tasks than this.
    #[arg(long, value_name = "N", default_value_t = taskbridge::pm::import::DEFAULT_MAX_ASSIGNMENTS_PER_PROJECT)]
    pub max_assignments_per_project: usize,
    /// Refuse a project that gives one mailbox more tasks than this.
    #[arg(long, value_name = "N", default_value_t = taskbridge::pm::import::DEFAULT_MAX_ASSIGNMENTS_PER_MAILBOX)]
    pub max_assignments_per_mailbox: usize,
    /// Set the project's status update policy: auto (apply at once) or approval (a status
    /// manager decides). Default: auto for a new project, unchanged for a known one.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<Policy>,
    /// Print the import report as JSON instead of the project GUID.
    #[arg(long)]
    pub json: bool,
}

/// Runs `taskbridge import`.
pub fn run(args: ImportArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        time_zone: args.time_zone.unwrap_or(Tz::UTC),
        fallback_guid: args.guid,
        max_assignments_per_project: args.max_assignments_per_project,
        max_assignments_per_mailbox: args.max_assignments_per_mailbox,
        ..ImportOptions::default()
    };
    // The file is read completely before the store is opened: a broken file never touches it.
    let project = import_file(&args.file, &options)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    if let Some(guid) = args.guid
        && project.guid != guid
    {
        return Err(CliError::Usage(format!(
            "{} has its own project GUID {}; --guid {guid} applies only to files without one",
            args.file.display(),
            project.guid
        ))
        .into());
    }
    let report = runtime()?.block_on(async {
        let host = EmbeddedHost::open(data_dir)
            .await
            .with_context(|| format!("cannot open the PM store in {}", data_dir.display()))?;
        let report = host.import_with_policy(project, args.policy).await;
        host.close().await;
        anyhow::Ok(report?)
    })?;
    eprintln!(
        "{} project {:?} ({}): {} added, {} changed, {} removed, {} unchanged assignments; \
         {} go to mailboxes; policy {}",
        if report.created {
            "imported"
        } else {
            "updated"
        },
        report.name,
        report.project,
        report.added,
        report.changed,
        report.removed,
        report.unchanged,
        report.mailbox_assignments,
        report.policy,
    );
    if report.closed_updates > 0 {
        eprintln!(
            "{} pending status updates of removed assignments were rejected",
            report.closed_updates
        );
    }
    if args.json {
        print_out(&to_json(&report)?)?;
    } else {
        print_out(&report.project.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}
