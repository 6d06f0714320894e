//! Development tasks of the taskbridge workspace, run as `cargo xtask TASK` (the alias is in
//! `.cargo/config.toml`). Nothing here ships in the product binary or the library.
//!
//! - `bench`: end-to-end figures of the connector against the simulator, each in its own
//!   process; with `--write-doc` it regenerates the figures of `docs/PERFORMANCE.md`.

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `cargo xtask`: development tasks of the taskbridge workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Measure the connector end to end against the simulator, each in its own process: publish
    /// (wall time, CPU and requests per assignment, peak RSS), an unchanged re-publish, the
    /// same creates made by exchangelib, user edits with `serve` running (edits per second,
    /// latency), and `serve` with many tracked assignments (time to ready, RSS). The publish and
    /// edit phases run on SQLite and on a throw-away PostgreSQL cluster (`--backend`). Prints
    /// the figures against their targets; builds and measures the release binary.
    Bench(Box<bench::BenchArgs>),
}

/// A usage mistake: reported without a cause chain, exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; every HTTP client of the process uses
    // ring.
    taskbridge::ews::transport::install_crypto_provider();
    let args = Xtask::parse();
    let result = match args.task {
        Task::Bench(args) => bench::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.is::<Usage>() => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
