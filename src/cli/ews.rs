//! `taskbridge ews ...`: tools for raw EWS messages.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use taskbridge::ews::decode;
use taskbridge::ews::soap::DEFAULT_MAX_MESSAGE_BYTES;

/// Raw EWS message tools.
#[derive(Debug, Subcommand)]
pub enum EwsCommand {
    /// Decode a captured EWS SOAP message (request, response, fault or push notification) and
    /// print it as JSON.
    Decode {
        /// The file (`-` for standard input). It may start with the HTTP status line and headers.
        file: PathBuf,
        /// Print on one line instead of indented.
        #[arg(long)]
        compact: bool,
    },
}

pub fn run(cmd: EwsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EwsCommand::Decode { file, compact } => {
            let bytes = if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("cannot read standard input")?;
                buf
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let value = decode::decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
                .with_context(|| format!("cannot decode {}", file.display()))?;
            let text = if compact {
                serde_json::to_string(&value)?
            } else {
                serde_json::to_string_pretty(&value)?
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").or_else(super::ignore_broken_pipe)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
