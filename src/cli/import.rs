//! `taskbridge import FILE`: imports (publishes) a project file into the embedded PM store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono_tz::Tz;
use clap::Args;

use taskbridge::pm::embedded::{
    DocumentFormat, EmbeddedError, EmbeddedHost, HostOptions, ImportReport, ImportedDocument,
    Policy,
};
use taskbridge::pm::import::read_document;
use taskbridge::pm::{ImportError, ImportOptions, ProjectGuid};

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
    /// Write nothing: print, per assignment and field, what the import would change in the PM
    /// store (old -> new), and warn when it would lower reported progress.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `taskbridge import`.
pub fn run(args: ImportArgs, raw: &super::config::RawConfig) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        time_zone: args.time_zone.unwrap_or(Tz::UTC),
        fallback_guid: args.guid,
        max_assignments_per_project: args.max_assignments_per_project,
        max_assignments_per_mailbox: args.max_assignments_per_mailbox,
        ..ImportOptions::default()
    };
    // The file is read completely before the store is opened: a broken file never touches it.
    let (project, text) = match read_document(&args.file, &options) {
        Ok(read) => read,
        Err(ImportError::MissingGuid) => {
            return Err(CliError::Usage(missing_guid_message(&args.file)).into());
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot import {}", args.file.display()))
            );
        }
    };
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
    let document = DocumentFormat::of(&text).map(|format| ImportedDocument { format, text });
    let report = runtime()?.block_on(async {
        let host = if args.dry_run {
            // A preview never creates a store.
            let options = HostOptions {
                create: false,
                ..HostOptions::default()
            };
            match EmbeddedHost::open_at(&raw.pm_location()?, options).await {
                Ok(host) => Some(host),
                Err(EmbeddedError::NoStore(_) | EmbeddedError::NoDatabaseStore(_)) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            Some(super::open_store(raw).await?)
        };
        let Some(host) = host else {
            return anyhow::Ok(None);
        };
        let report = host
            .import_document(project.clone(), document, args.policy, args.dry_run)
            .await;
        host.close().await;
        anyhow::Ok(Some(report?))
    })?;
    // A dry run without a store: everything would be new.
    let report = report.unwrap_or_else(|| ImportReport {
        project: project.guid,
        name: project.name.clone(),
        created: true,
        policy: args.policy.unwrap_or_default(),
        added: project.assignments.len(),
        changed: 0,
        removed: 0,
        unchanged: 0,
        mailbox_assignments: project.sync_units().len(),
        closed_updates: 0,
        added_assignments: project.assignments.iter().map(|a| a.uid).collect(),
        removed_assignments: Vec::new(),
        field_changes: Vec::new(),
        overridden: Vec::new(),
        lowered_progress: Vec::new(),
        three_way: false,
        dry_run: true,
    });
    print_report(&report);
    if args.json {
        print_out(&to_json(&report)?)?;
    } else if args.dry_run {
        for uid in &report.added_assignments {
            print_out(&format!("create assignment {uid}"))?;
        }
        for uid in &report.removed_assignments {
            print_out(&format!("delete assignment {uid}"))?;
        }
        for change in &report.field_changes {
            print_out(&format!(
                "update assignment {} {:?}: {} -> {}",
                change.assignment, change.field, change.old, change.new
            ))?;
        }
    } else {
        print_out(&report.project.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The summary of an import on stderr: counts, fields the file took over status updates, and
/// a warning for progress the import lowers.
fn print_report(report: &ImportReport) {
    let verb = match (report.dry_run, report.created) {
        (true, true) => "would import",
        (true, false) => "would update",
        (false, true) => "imported",
        (false, false) => "updated",
    };
    eprintln!(
        "{verb} project {:?} ({}): {} added, {} changed, {} removed, {} unchanged assignments; \
         {} go to mailboxes; policy {}{}",
        report.name,
        report.project,
        report.added,
        report.changed,
        report.removed,
        report.unchanged,
        report.mailbox_assignments,
        report.policy,
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
    );
    if !report.created && !report.three_way {
        eprintln!(
            "note: no record of this project's previous import; every value that differs from \
             the file was taken"
        );
    }
    for o in &report.overridden {
        eprintln!(
            "assignment {} {:?}: the file's {} replaces {} from a status update (the file wins)",
            o.assignment, o.field, o.file_value, o.status_update_value
        );
    }
    if !report.lowered_progress.is_empty() {
        let uids: Vec<String> = report
            .lowered_progress
            .iter()
            .map(ToString::to_string)
            .collect();
        eprintln!(
            "warning: this import lowers reported progress of assignment(s) {}",
            uids.join(", ")
        );
    }
    if report.closed_updates > 0 {
        eprintln!(
            "{} pending status updates of removed assignments were rejected",
            report.closed_updates
        );
    }
}

/// The error for a file without a project GUID: names `--guid` and suggests a fresh one.
fn missing_guid_message(file: &Path) -> String {
    format!(
        "{} has no project GUID (Project 2007 and many other tools write none): import it with \
         --guid GUID, and give the same GUID on every import of this project; a new one you \
         could use: --guid {}",
        file.display(),
        uuid::Uuid::new_v4()
    )
}
