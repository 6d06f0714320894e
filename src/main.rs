//! The `taskbridge` command line; see `taskbridge --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; every HTTP client of the process uses
    // ring.
    taskbridge::ews::transport::install_crypto_provider();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => cli::report(&err),
    }
}
