//! `taskbridge migrate --to URL`: copies both stores of the data directory, the sync state
//! (`state.sqlite`) and the PM store (`pm.sqlite`), into one PostgreSQL database, then checks
//! that the copy holds the same rows (the state read back equal, the PM store's count of every
//! table equal).
//!
//! One database for both: their tables have distinct names and each records its own schema
//! version (`taskbridge_schema`), so one URL, one password and one backup cover a deployment;
//! `[state] url` and `[pm] url` can still name different databases when an operator wants them
//! apart.

use std::process::ExitCode;

use clap::Args;

use taskbridge::pm::embedded::{EmbeddedError, EmbeddedHost, HostOptions, PmLocation, PostgresPm};
use taskbridge::state::{
    Commit, PostgresStore, SqliteStore, StateLocation, StateStore, without_password,
};

use super::config::RawConfig;
use super::{CliError, runtime};

/// Arguments of `taskbridge migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The target database: a postgres:// URL without the password, which comes from
    /// [state] password_env or password_file.
    #[arg(long)]
    pub to: String,
    /// Copy into a database that already holds sync state or a PM store, replacing what it
    /// holds.
    #[arg(long)]
    pub force: bool,
}

/// Rows per transaction of the copy.
const CHUNK: usize = 500;

/// Runs `taskbridge migrate`.
pub fn run(args: MigrateArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    let source_path = raw.data_path("state.sqlite");
    let pm_path = raw.data_path(EmbeddedHost::FILE_NAME);
    if !source_path.exists() && !pm_path.exists() {
        return Err(CliError::Usage(format!(
            "neither a state store at {} nor a PM store at {} to copy (a wrong --data-dir?)",
            source_path.display(),
            pm_path.display()
        ))
        .into());
    }
    let mut target_raw = raw.clone();
    target_raw.state.url = args.to.clone();
    let StateLocation::Postgres { url, password, tls } = target_raw.state_location()? else {
        return Err(CliError::Usage("--to must be a postgres:// URL".into()).into());
    };
    let pm_tls =
        taskbridge::ews::transport::rustls_client_config(&taskbridge::ews::transport::TlsConfig {
            extra_ca_file: tls.extra_ca_file.clone(),
            ..Default::default()
        })?;
    let pm_target = PmLocation::Postgres(PostgresPm {
        url: url.clone(),
        password: password.clone(),
        tls: std::sync::Arc::new(pm_tls),
    });
    runtime()?.block_on(async {
        let target =
            PostgresStore::connect(&url, password.as_ref().map(|p| p.expose()), &tls).await?;
        let shown = without_password(&url);
        let pm_source = if pm_path.exists() {
            let options = HostOptions {
                create: false,
                ..HostOptions::default()
            };
            Some(EmbeddedHost::open_with(&pm_path, options).await?)
        } else {
            None
        };
        let pm_target = match &pm_source {
            Some(_) => Some(EmbeddedHost::open_at(&pm_target, HostOptions::default()).await?),
            None => None,
        };
        let pm_holds = match &pm_target {
            Some(t) => t.holds_data().await?,
            None => false,
        };
        let state_holds = target.holds_state().await?;
        if (state_holds || pm_holds) && !args.force {
            return Err(CliError::Usage(format!(
                "{shown} already holds {}; --force replaces it",
                match (state_holds, pm_holds) {
                    (true, true) => "sync state and a PM store",
                    (true, false) => "sync state",
                    _ => "a PM store",
                }
            ))
            .into());
        }
        if let (Some(source), Some(target)) = (&pm_source, &pm_target) {
            let counts = match source.copy_to(target, args.force).await {
                Err(EmbeddedError::NotEmpty) => {
                    return Err(CliError::Usage(format!(
                        "{shown} already holds a PM store; --force replaces it"
                    ))
                    .into());
                }
                other => other?,
            };
            let differ: Vec<String> = counts
                .iter()
                .filter(|c| c.source != c.copied)
                .map(|c| format!("{}: {} of {} rows", c.table, c.copied, c.source))
                .collect();
            if !differ.is_empty() {
                anyhow::bail!(
                    "the PM store's copy in {shown} differs from {}: {}",
                    pm_path.display(),
                    differ.join(", ")
                );
            }
            println!(
                "copied the PM store to {shown}: {}; the count of every table read back equal",
                counts
                    .iter()
                    .map(|c| format!("{} {}", c.copied, c.table))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(host) = pm_source {
            host.close().await;
        }
        if let Some(host) = pm_target {
            host.close().await;
        }
        if !source_path.exists() {
            println!(
                "no state store at {} (nothing synced yet); set [pm] url = \"{}\" to use the copy",
                source_path.display(),
                args.to
            );
            return Ok(ExitCode::SUCCESS);
        }
        let source = SqliteStore::open(&source_path)?;
        if state_holds {
            target.clear().await?;
        }
        let rows = source.all_assignments().await?;
        for chunk in rows.chunks(CHUNK) {
            target
                .commit(Commit {
                    put: chunk.to_vec(),
                    ..Commit::default()
                })
                .await?;
        }
        let mailboxes = source.mailboxes().await?;
        for m in &mailboxes {
            let Some(address) = m.mailbox.clone() else {
                continue;
            };
            let copy = m.clone();
            target.update_mailbox(&address, move |s| *s = copy).await?;
        }
        let audit = source.audit(None).await?;
        for chunk in audit.chunks(CHUNK) {
            target.append_audit(chunk.to_vec()).await?;
        }
        let journal = source.unfinished_journal().await?;
        target.open_journal(journal.clone()).await?;

        // The copy, read back, is the source.
        let copied = target.all_assignments().await?;
        let same_mailboxes = target.mailboxes().await? == mailboxes;
        let copied_audit = target.audit(None).await?;
        let copied_journal = target.unfinished_journal().await?;
        let journal_matches = copied_journal.len() == journal.len()
            && copied_journal.iter().zip(&journal).all(|(a, b)| {
                (&a.mailbox, a.key, a.kind, a.at) == (&b.mailbox, b.key, b.kind, b.at)
            });
        if copied != rows || !same_mailboxes || copied_audit != audit || !journal_matches {
            anyhow::bail!(format!(
                "the copy in {shown} differs from {}: {} of {} assignments, {} of {} audit \
                 records, {} of {} journal entries, mailboxes {}",
                source_path.display(),
                copied.len(),
                rows.len(),
                copied_audit.len(),
                audit.len(),
                copied_journal.len(),
                journal.len(),
                if same_mailboxes { "equal" } else { "differ" }
            ));
        }
        println!(
            "copied {} assignments, {} mailboxes, {} audit records and {} open journal entries \
             to {shown}, and read them back equal; set [state] url = \"{}\"{} to use it",
            rows.len(),
            mailboxes.len(),
            audit.len(),
            journal.len(),
            args.to,
            if pm_path.exists() {
                format!(" and [pm] url = \"{}\"", args.to)
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}
