//! The `taskbridge` command line; see `taskbridge --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc and free were 15 % of `serve`'s CPU in a burst of edits and 16 % of a
// publish's (docs/PERFORMANCE.md, fix 29): many small, short-lived allocations from several
// threads, the case mimalloc's per-thread free lists are built for.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
