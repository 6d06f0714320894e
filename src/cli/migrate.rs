//! `taskbridge migrate --to URL`: copies the sync state from `state.sqlite` into a PostgreSQL
//! database, then checks that the copy holds the same rows.

use std::process::ExitCode;

use clap::Args;

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
    /// Copy into a database that already holds sync state, replacing what it holds.
    #[arg(long)]
    pub force: bool,
}

/// Rows per transaction of the copy.
const CHUNK: usize = 500;

/// Runs `taskbridge migrate`.
pub fn run(args: MigrateArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    let source_path = raw.data_path("state.sqlite");
    if !source_path.exists() {
        return Err(CliError::Usage(format!(
            "no state store at {} to copy (nothing synced yet, or a wrong --data-dir)",
            source_path.display()
        ))
        .into());
    }
    let mut target_raw = raw.clone();
    target_raw.state.url = args.to.clone();
    let StateLocation::Postgres { url, password, tls } = target_raw.state_location()? else {
        return Err(CliError::Usage("--to must be a postgres:// URL".into()).into());
    };
    runtime()?.block_on(async {
        let source = SqliteStore::open(&source_path)?;
        let target =
            PostgresStore::connect(&url, password.as_ref().map(|p| p.expose()), &tls).await?;
        let shown = without_password(&url);
        if target.holds_state().await? {
            if !args.force {
                return Err(CliError::Usage(format!(
                    "{shown} already holds sync state; --force replaces it"
                ))
                .into());
            }
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
             to {shown}, and read them back equal; set [state] url = \"{}\" to use it (the PM \
             store stays in pm.sqlite)",
            rows.len(),
            mailboxes.len(),
            audit.len(),
            journal.len(),
            args.to
        );
        Ok(ExitCode::SUCCESS)
    })
}
