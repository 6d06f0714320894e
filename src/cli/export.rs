//! `taskbridge export PROJECT`: writes a project of the embedded PM store, with the progress
//! that came from the mailboxes, as MSPDI or taskbridge JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use taskbridge::pm::embedded::write_atomically;
use taskbridge::pm::export::ExportFormat;

use super::{open_existing_store, print_out, runtime};

/// The formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Microsoft Project XML (opens in Microsoft Project and ProjectLibre).
    Mspdi,
    /// taskbridge JSON (docs/PROJECT-FORMAT.md).
    Json,
}

/// Arguments of `taskbridge export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The project: its GUID, a unique GUID prefix, or its name.
    pub project: String,
    /// The format. An MSPDI export of a project imported from an MSPDI file is that file with
    /// the changed values written into it.
    #[arg(long, value_enum, default_value_t = FormatArg::Mspdi)]
    pub format: FormatArg,
    /// Write to FILE (atomically: a temporary file beside it, then renamed) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `taskbridge export`.
pub fn run(args: ExportArgs, raw: &super::config::RawConfig) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        FormatArg::Mspdi => ExportFormat::Mspdi,
        FormatArg::Json => ExportFormat::Json,
    };
    let (project, text) = runtime()?.block_on(async {
        let host = open_existing_store(raw).await?;
        let project = match super::names::project(&host, &args.project).await {
            Ok(guid) => guid,
            Err(e) => {
                host.close().await;
                return Err(e);
            }
        };
        let text = host.export(project, format).await;
        host.close().await;
        anyhow::Ok((project, text?))
    })?;
    match &args.output {
        Some(path) => {
            write_atomically(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("project {project} written to {}", path.display());
        }
        None => print_out(text.trim_end_matches('\n'))?,
    }
    Ok(ExitCode::SUCCESS)
}
