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

/// Reads `input` up to `cap` bytes, failing as soon as one more arrives: a huge file or an
/// endless pipe is refused after `cap + 1` bytes instead of being read whole first.
fn read_capped(input: impl std::io::Read, cap: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    std::io::Read::read_to_end(&mut input.take(limit), &mut buf)?;
    if buf.len() > cap {
        anyhow::bail!("the message is over the limit of {cap} bytes");
    }
    Ok(buf)
}

pub fn run(cmd: EwsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EwsCommand::Decode { file, compact } => {
            let bytes = if file.as_os_str() == "-" {
                read_capped(std::io::stdin().lock(), DEFAULT_MAX_MESSAGE_BYTES)
                    .context("cannot read standard input")?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                read_capped(f, DEFAULT_MAX_MESSAGE_BYTES)
                    .with_context(|| format!("cannot read {}", file.display()))?
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
