//! `cargo xtask bench`: end-to-end figures of the connector against the simulator, every party
//! in its own process, as a deployment runs them.
//!
//! The measured binary is `taskbridge` built by `cargo build --release` (or the one `--taskbridge`
//! names). The simulator is `taskbridge sim` on loopback; the connector is `taskbridge publish` and
//! `taskbridge serve` children in a temporary directory configured by `taskbridge init` plus
//! `TASKBRIDGE_*` overrides (the simulator's URL, free ports, a debounce of 0). CPU time and peak
//! RSS of a finished child come from `wait4`, those of a running one from `/proc`; EWS requests
//! are the simulator's own counters; the latency of an edit is the time from just before the
//! bench sends it to the simulator's admin API to the `decided_at` of its applied status update
//! on the PM side (read once afterwards from the PM API, so nothing is polled on the hot path
//! but `/metrics`). Phases:
//!
//! 1. publish A assignments over M mailboxes; publish again with nothing changed;
//! 2. the same creates made by exchangelib (`benches/exchangelib_creates.py`, embedded here),
//!    when `python3 -c "import exchangelib"` works;
//! 3. with `serve` running: E edits in a burst, then E edits offered at a steady rate;
//! 4. a second simulator and data directory with many tracked assignments: time to ready and
//!    RSS after start, then RSS after a reconciliation pass over every mailbox.
//!
//! Phases 1 and 3 run once per kind of store (`--backend`): on the default SQLite files, and
//! with `[state] url` and `[pm] url` on a throw-away PostgreSQL cluster the bench starts itself
//! when PostgreSQL is installed (`tests/external/pg_cluster.rs`, shared with the tests). The
//! PostgreSQL server's CPU (the postmaster and its backends) is measured beside the
//! connector's, since SQLite's work is inside the connector's process. Phase 4 runs on SQLite.
//!
//! Targets are reported, never asserted: a missed target is a finding. Figures taken while
//! other work runs on the machine are unreliable; the load average is printed with them.

mod proc;
mod report;
mod workload;

// The tests' throw-away cluster, shared rather than copied (the xtask is never published);
// the bench uses less of it than the tests do.
#[allow(dead_code)]
#[path = "../../tests/external/pg_cluster.rs"]
mod pg_cluster;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

use self::proc::Proc;
use self::report::{Comparison, Edits, Figures, Large, Params, Publish, Republish, Stores, to_mb};
use crate::Usage;

/// The comparison client, written into the work directory when it runs.
const EXCHANGELIB_SCRIPT: &str = include_str!("../../benches/exchangelib_creates.py");

/// The service account the connector logs on as (the starter configuration's).
const SERVICE: &str = "taskbridge@sim.example";

/// The quick size (`--quick`): minutes on a small machine.
const QUICK: (usize, usize, usize) = (2_000, 20, 1_000);

/// Which stores the publish and edit phases run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The default SQLite files.
    Sqlite,
    /// Both stores on a throw-away PostgreSQL cluster.
    Postgres,
    /// SQLite, then PostgreSQL (when installed), side by side.
    Both,
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Assignments to publish (A).
    #[arg(long, default_value_t = 10_000)]
    pub assignments: usize,
    /// Mailboxes they are spread over (M).
    #[arg(long, default_value_t = 100)]
    pub mailboxes: usize,
    /// User edits per edit phase (E), made through the simulator with `serve` running; at most
    /// A.
    #[arg(long, default_value_t = 5_000)]
    pub edits: usize,
    /// Edits per second offered in the paced edit phase (0: no paced phase).
    #[arg(long, default_value_t = 1_000)]
    pub edit_rate: u32,
    /// Tracked assignments of the memory phase (0: no memory phase).
    #[arg(long, default_value_t = 100_000)]
    pub large_assignments: usize,
    /// Mailboxes of the memory phase.
    #[arg(long, default_value_t = 1_000)]
    pub large_mailboxes: usize,
    /// The stores the publish and edit phases run on; PostgreSQL needs its server installed
    /// (initdb and pg_ctl; `apt-get install -y postgresql`), the bench starts a cluster of its
    /// own.
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    pub backend: Backend,
    /// Only a quick size: 2,000 assignments over 20 mailboxes, 1,000 edits per edit phase, no
    /// memory phase. With --write-doc only the SQLite and PostgreSQL table is written, never
    /// the full-size figures.
    #[arg(long, conflicts_with_all = ["assignments", "mailboxes", "edits", "large_assignments", "large_mailboxes"])]
    pub quick: bool,
    /// Leave out the exchangelib comparison.
    #[arg(long)]
    pub no_exchangelib: bool,
    /// The Python interpreter that has exchangelib.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Print the figures as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the figures and the machine description into the generated part of this
    /// Markdown file (docs/PERFORMANCE.md), keeping the rest of it.
    #[arg(long, value_name = "FILE")]
    pub write_doc: Option<PathBuf>,
    /// A criterion output directory (target/criterion) whose estimates go into --write-doc.
    #[arg(long, value_name = "DIR")]
    pub criterion: Option<PathBuf>,
    /// Keep the work directory (data, logs) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// An extra `TASKBRIDGE_*` setting for every connector process, as KEY=VALUE (repeatable;
    /// for experiments, e.g. TASKBRIDGE_SYNC_MAILBOX_CONCURRENCY=32).
    #[arg(long = "connector-env", value_name = "KEY=VALUE")]
    pub connector_env: Vec<String>,
    /// Longest wait for any one step, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Measure this `taskbridge` binary instead of building one.
    #[arg(long, value_name = "PATH", conflicts_with = "debug")]
    pub taskbridge: Option<PathBuf>,
    /// Build and measure the debug binary (quick checks of the harness; the figures mean
    /// nothing).
    #[arg(long)]
    pub debug: bool,
}

/// Runs `cargo xtask bench`.
pub fn run(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.quick {
        (args.assignments, args.mailboxes, args.edits) = QUICK;
        args.large_assignments = 0;
    }
    if args.mailboxes == 0 || args.assignments == 0 {
        return Err(Usage("--assignments and --mailboxes must be at least 1".into()).into());
    }
    if args.edits > args.assignments {
        return Err(Usage(format!(
            "--edits {} is more than --assignments {}: each edit phase edits distinct tasks",
            args.edits, args.assignments
        ))
        .into());
    }
    let mut connector_env = Vec::new();
    for kv in &args.connector_env {
        match kv.split_once('=') {
            Some((k, v)) if k.starts_with("TASKBRIDGE_") => {
                connector_env.push((k.to_string(), v.to_string()));
            }
            _ => {
                return Err(Usage(format!(
                    "--connector-env {kv:?}: expected TASKBRIDGE_KEY=VALUE"
                ))
                .into());
            }
        }
    }
    if args.large_assignments > 0 && args.large_mailboxes == 0 {
        return Err(Usage("--large-mailboxes must be at least 1".into()).into());
    }
    let bin = match &args.taskbridge {
        // The children run in their own folders: a relative path would not reach it.
        Some(path) => std::fs::canonicalize(path)
            .with_context(|| format!("--taskbridge {}", path.display()))?,
        None => build_taskbridge(args.debug)?,
    };
    let work = std::env::temp_dir().join(format!(
        "taskbridge-bench-{}-{}",
        std::process::id(),
        Utc::now().format("%Y%m%d%H%M%S")
    ));
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();
    let mut figures = Figures {
        machine: report::Machine {
            taskbridge: describe_binary(&bin, &args),
            ..report::Machine::describe()
        },
        params: Params {
            assignments: args.assignments,
            mailboxes: args.mailboxes,
            edits: args.edits,
            edit_rate: args.edit_rate,
            large_assignments: args.large_assignments,
            large_mailboxes: args.large_mailboxes,
        },
        load_before: report::load_average(),
        ..Figures::default()
    };
    if args.debug {
        eprintln!("bench: warning: a debug build; figures are for release builds only");
    }
    if let Some(load) = figures.load_before
        && load > 1.0
    {
        eprintln!(
            "bench: warning: load average {load:.2}: other work is running, figures will be noisy"
        );
    }
    // The cluster lives until the end of the run (dropping it stops the server).
    let cluster = match args.backend {
        Backend::Sqlite => {
            figures.postgres_skipped = Some("`--backend sqlite`".into());
            None
        }
        Backend::Postgres | Backend::Both => match pg_cluster::server_bin() {
            None => {
                let why = format!(
                    "no PostgreSQL server installed (initdb); to measure it: {}, or \
                     TASKBRIDGE_PG_BIN=<folder of initdb and pg_ctl>",
                    pg_cluster::INSTALL_POSTGRES
                );
                if args.backend == Backend::Postgres {
                    bail!("--backend postgres: {why}");
                }
                eprintln!("bench: the PostgreSQL column is not measured: {why}");
                figures.postgres_skipped = Some(why);
                None
            }
            Some(bin) => {
                eprintln!("bench: starting a throw-away PostgreSQL cluster");
                // With pg_stat_statements, to say which statements the server's CPU goes to;
                // a server without it is measured all the same.
                let cluster = match pg_cluster::Cluster::start_with_options(
                    bin.clone(),
                    "-c shared_preload_libraries=pg_stat_statements",
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("bench: PostgreSQL without pg_stat_statements ({e})");
                        pg_cluster::Cluster::start_with(bin)
                            .map_err(|e| anyhow::anyhow!("{e}"))
                            .context("the PostgreSQL cluster for the bench")?
                    }
                };
                figures.postgres_version = cluster.version();
                Some(cluster)
            }
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bench = Bench {
        bin,
        args: &args,
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .build()?,
        timeout: Duration::from_secs(args.timeout_secs),
        started,
        connector_env,
    };
    let result = rt.block_on(async {
        let mut exchangelib = !args.no_exchangelib;
        if args.backend != Backend::Postgres {
            let mut stores = Stores::default();
            bench
                .medium(
                    &work.join("medium"),
                    None,
                    exchangelib,
                    &mut stores,
                    &mut figures,
                )
                .await?;
            figures.sqlite = stores;
            exchangelib = false;
        }
        if let Some(cluster) = &cluster {
            let url = cluster
                .try_create_database("bench")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let db = PgDatabase {
                statements: StatementProbe::enable(cluster.psql(), &url),
                url,
                server_pid: cluster
                    .server_pid()
                    .context("the PostgreSQL cluster wrote no postmaster.pid")?,
            };
            let mut stores = Stores::default();
            let result = bench
                .medium(
                    &work.join("medium-postgres"),
                    Some(&db),
                    exchangelib,
                    &mut stores,
                    &mut figures,
                )
                .await;
            if result.is_err() {
                std::fs::write(work.join("postgres.log"), cluster.log())?;
            }
            result?;
            figures.postgres = Some(stores);
        }
        if args.large_assignments > 0 {
            bench.large(&work.join("large"), &mut figures).await?;
        }
        anyhow::Ok(())
    });
    drop(cluster);
    figures.load_after = report::load_average();
    figures.run_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        eprintln!("bench: work directory kept: {}", work.display());
        return Err(e);
    }
    if args.keep {
        eprintln!("bench: work directory: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    if args.json {
        print_out(&serde_json::to_string_pretty(&figures)?)?;
    } else {
        print_out(&report::machine_text(&figures))?;
        print_out(&report::table(&figures))?;
        print_out(&format!(
            "SQLite and PostgreSQL side by side:\n\n{}",
            report::stores_table(&figures)
        ))?;
    }
    if let Some(doc) = &args.write_doc {
        let criterion = args.criterion.as_deref().and_then(report::criterion_table);
        if args.criterion.is_some() && criterion.is_none() {
            eprintln!("bench: no criterion estimates found (run cargo bench first)");
        }
        let mut new = std::fs::read_to_string(doc).unwrap_or_default();
        // A quick size's figures never replace those of the full run.
        if !args.quick && args.backend != Backend::Postgres {
            new = report::splice(&new, &report::doc_section(&figures, criterion.as_deref()));
        }
        new = report::splice_between(
            &new,
            &report::stores_section(&figures),
            report::STORES_BEGIN,
            report::STORES_END,
        );
        std::fs::write(doc, new).with_context(|| format!("cannot write {}", doc.display()))?;
        eprintln!("bench: wrote {}", doc.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The workspace this crate belongs to.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace root")
}

/// `cargo build --bin taskbridge` (release unless `debug`) in the workspace; the path of the
/// binary from cargo's own report, so `CARGO_TARGET_DIR` and the profile need no guessing.
fn build_taskbridge(debug: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--bin",
        "taskbridge",
        "--message-format=json-render-diagnostics",
    ]);
    if !debug {
        cmd.arg("--release");
    }
    eprintln!(
        "bench: building taskbridge ({})",
        if debug { "debug" } else { "release" }
    );
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo build")?;
    if !out.status.success() {
        bail!("cargo build --bin taskbridge failed ({})", out.status);
    }
    let mut exe = None;
    for line in out.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "taskbridge"
            && let Some(path) = msg["executable"].as_str()
        {
            exe = Some(PathBuf::from(path));
        }
    }
    exe.context("cargo build reported no taskbridge executable")
}

/// The measured binary: its `--version` and how it was built (the xtask's own profile says
/// nothing about it).
fn describe_binary(bin: &Path, args: &BenchArgs) -> String {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            let out = out.trim();
            out.strip_prefix("taskbridge ").unwrap_or(out).to_string()
        })
        .unwrap_or_else(|| "version unknown".into());
    let how = if args.debug {
        "debug build".to_string()
    } else if args.taskbridge.is_some() {
        // Cargo's layout names the profile; a binary from elsewhere is named by its path.
        let under = |dir: &str| bin.components().any(|c| c.as_os_str() == dir);
        if under("release") {
            "release build, --taskbridge".to_string()
        } else if under("debug") {
            "debug build, --taskbridge".to_string()
        } else {
            format!("--taskbridge {}", bin.display())
        }
    } else {
        "release build".to_string()
    };
    format!("{version} ({how})")
}

/// Prints to stdout; a closed stdout (`| head`) is not a failure.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

struct Bench<'a> {
    bin: PathBuf,
    args: &'a BenchArgs,
    http: reqwest::Client,
    timeout: Duration,
    started: Instant,
    connector_env: Vec<(String, String)>,
}

/// The PostgreSQL database a site's stores live in.
struct PgDatabase {
    /// For `[state] url` and `[pm] url`.
    url: String,
    /// The postmaster, whose CPU (with its backends') is the database's cost.
    server_pid: u32,
    /// What the server ran, when it has `pg_stat_statements`.
    statements: Option<StatementProbe>,
}

/// Reads what PostgreSQL ran (`pg_stat_statements`) between two points of a phase: which
/// statements the server's CPU went to.
#[derive(Clone)]
struct StatementProbe {
    psql: PathBuf,
    url: String,
}

impl StatementProbe {
    fn psql(&self, sql: &str) -> anyhow::Result<String> {
        pg_cluster::run_psql(&self.psql, &self.url, sql).map_err(|e| anyhow::anyhow!("psql: {e}"))
    }

    /// Makes the database count statements; `None` when the server cannot.
    fn enable(psql: PathBuf, url: &str) -> Option<StatementProbe> {
        let probe = StatementProbe {
            psql,
            url: url.to_string(),
        };
        match probe.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements") {
            Ok(_) => Some(probe),
            Err(e) => {
                eprintln!("bench: PostgreSQL's statements are not counted: {e}");
                None
            }
        }
    }

    /// Forgets what was counted so far.
    fn reset(&self) -> anyhow::Result<()> {
        self.psql("SELECT pg_stat_statements_reset()").map(drop)
    }

    /// What ran since the last reset (the probe's own queries left out), most time first.
    fn take(&self) -> anyhow::Result<report::DbStatements> {
        let out = self.psql(
            "SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC",
        )?;
        let mut taken = report::DbStatements::default();
        for line in out.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(calls), Some(ms), Some(text)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (Ok(calls), Ok(ms)) = (calls.parse::<u64>(), ms.parse::<f64>()) else {
                continue;
            };
            taken.calls += calls;
            taken.exec_s += ms / 1e3;
            if taken.top.len() < 5 {
                taken.top.push((calls, ms / 1e3, text.to_string()));
            }
        }
        Ok(taken)
    }
}

/// A simulator and a connector data directory.
struct Site {
    dir: PathBuf,
    bin: PathBuf,
    /// Killed with the site.
    _sim: Proc,
    url: String,
    sim_admin: String,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The PostgreSQL server holding the stores (none: SQLite).
    db_pid: Option<u32>,
    /// What it ran (PostgreSQL with `pg_stat_statements`).
    statements: Option<StatementProbe>,
}

impl Site {
    /// The database server's CPU so far (PostgreSQL only).
    fn db_cpu(&self) -> Option<Duration> {
        self.db_pid.and_then(proc::family_cpu)
    }

    /// Starts counting the database's statements afresh (PostgreSQL only).
    fn reset_statements(&self) {
        if let Some(p) = &self.statements
            && let Err(e) = p.reset()
        {
            eprintln!("bench: {e}");
        }
    }

    /// The database's statements since [`Site::reset_statements`] (PostgreSQL only).
    fn statements(&self) -> Option<report::DbStatements> {
        let p = self.statements.as_ref()?;
        p.take().inspect_err(|e| eprintln!("bench: {e}")).ok()
    }
}

/// `bin` in `dir` with none of the caller's `TASKBRIDGE_*` variables: the bench's own (say
/// `TASKBRIDGE_PG_BIN`) are no configuration keys, and `taskbridge` refuses unknown ones.
fn clean_command(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TASKBRIDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Site {
    /// `taskbridge` in the site's directory, with the bench's configuration overrides.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(&self.bin, &self.dir);
        cmd.args(args);
        cmd.env("TASKBRIDGE_EXCHANGE_URL", &self.url)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        cmd
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running `serve`.
struct Serve {
    proc: Proc,
    admin: String,
    token: String,
}

impl Bench<'_> {
    fn progress(&self, what: &str) {
        eprintln!(
            "bench: {:>6.1} s  {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// `taskbridge init` in `dir`, then a simulator with `mailboxes` and the service account;
    /// the stores in `db` when given.
    async fn open_site(
        &self,
        dir: &Path,
        mailboxes: Vec<String>,
        db: Option<&PgDatabase>,
    ) -> anyhow::Result<Site> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("connector.log");
        let status = clean_command(&self.bin, dir)
            .arg("init")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run taskbridge init")?;
        if !status.success() {
            bail!("taskbridge init failed in {}", dir.display());
        }
        let password = std::fs::read_to_string(dir.join("taskbridge-data/exchange.password"))
            .context("init wrote no exchange.password")?;
        let users = dir.join("users.txt");
        std::fs::write(&users, workload::users_file(mailboxes))?;
        let mut cmd = clean_command(&self.bin, dir);
        cmd.args([
            "--log",
            "warn",
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "basic",
        ])
        .arg("--users")
        .arg(&users)
        .arg("--service")
        .arg(format!("{SERVICE}:{}", password.trim()))
        .stdout(Stdio::piped());
        let mut sim = Proc::spawn(cmd, "taskbridge sim", &dir.join("sim.log"))?;
        let mut first = String::new();
        if let Some(out) = sim.stdout() {
            BufReader::new(out).read_line(&mut first)?;
        }
        let mut env = self.connector_env.clone();
        if let Some(db) = db {
            env.push(("TASKBRIDGE_STATE_URL".into(), db.url.clone()));
            env.push(("TASKBRIDGE_PM_URL".into(), db.url.clone()));
        }
        let url = first.trim().to_string();
        let Some(base) = url.strip_suffix("/EWS/Exchange.asmx") else {
            bail!(
                "the simulator did not start (see {})",
                dir.join("sim.log").display()
            );
        };
        Ok(Site {
            dir: dir.to_path_buf(),
            bin: self.bin.clone(),
            sim_admin: format!("{base}/sim"),
            url,
            _sim: sim,
            log,
            env,
            db_pid: db.map(|d| d.server_pid),
            statements: db.and_then(|d| d.statements.clone()),
        })
    }

    async fn get_json(&self, url: &str, token: Option<&str>) -> anyhow::Result<Value> {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?.error_for_status()?;
        Ok(resp.json().await?)
    }

    async fn counters(&self, site: &Site) -> anyhow::Result<BTreeMap<String, u64>> {
        let v = self
            .get_json(&format!("{}/counters", site.sim_admin), None)
            .await?;
        Ok(v["operations"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn reset_counters(&self, site: &Site) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/counters/reset", site.sim_admin))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Writes the project and imports it into the site's PM store.
    fn import(&self, site: &Site, project: &Value) -> anyhow::Result<Duration> {
        let file = site.dir.join("project.json");
        std::fs::write(&file, serde_json::to_vec(project)?)?;
        let file = file.to_string_lossy().into_owned();
        let p = Proc::spawn(
            site.command(&["import", &file]),
            "taskbridge import",
            &site.log,
        )?;
        let (_, usage) = p.finish_ok()?;
        Ok(usage.wall)
    }

    /// One `taskbridge publish` child, with the simulator's counters around it.
    async fn publish(
        &self,
        site: &Site,
        guid: &str,
        assignments: usize,
        mailboxes: usize,
    ) -> anyhow::Result<Publish> {
        self.reset_counters(site).await?;
        site.reset_statements();
        let db_before = site.db_cpu();
        let mut cmd = site.command(&["publish", guid, "--json"]);
        cmd.stdout(Stdio::piped());
        let (status, out, usage) = Proc::spawn(cmd, "taskbridge publish", &site.log)?.finish()?;
        let report: Value = serde_json::from_str(&out).with_context(|| {
            format!(
                "taskbridge publish exited with {status} without a report (see {})",
                site.log.display()
            )
        })?;
        let db_cpu_s = db_before
            .zip(site.db_cpu())
            .map(|(b, a)| a.saturating_sub(b).as_secs_f64());
        let db_statements = site.statements();
        let requests = self.counters(site).await?;
        let batch = taskbridge::ews::transport::Limits::default().batch_size;
        // Per mailbox with tasks: GetFolder (its Tasks folder), FindItem (tasks left by an
        // earlier crash), and one CreateItem per batch.
        let requests_min = workload::per_mailbox(assignments, mailboxes)
            .into_iter()
            .filter(|n| *n > 0)
            .map(|n| 2 + n.div_ceil(batch) as u64)
            .sum();
        Ok(Publish {
            assignments,
            mailboxes,
            created: report["created"].as_u64().unwrap_or_default(),
            failed: report["failed"].as_u64().unwrap_or_default(),
            wall_s: usage.wall.as_secs_f64(),
            cpu_s: usage.cpu.as_secs_f64(),
            peak_rss_mb: to_mb(usage.peak_rss),
            db_cpu_s,
            db_statements,
            requests_total: requests.values().sum(),
            requests,
            requests_min,
        })
    }

    /// Starts `serve` and waits for `/healthz` to answer 200.
    async fn serve(&self, site: &Site, env: &[(&str, String)]) -> anyhow::Result<(Serve, f64)> {
        let (listen, admin) = (free_port()?, free_port()?);
        let mut cmd = site.command(&["serve"]);
        cmd.env("TASKBRIDGE_LISTENER_LISTEN", format!("127.0.0.1:{listen}"))
            .env(
                "TASKBRIDGE_LISTENER_PUBLIC_URL",
                format!("http://127.0.0.1:{listen}/ews/notify"),
            )
            .env("TASKBRIDGE_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("TASKBRIDGE_SYNC_DEBOUNCE_MS", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let token = std::fs::read_to_string(site.dir.join("taskbridge-data/admin.token"))?
            .trim()
            .to_string();
        let mut proc = Proc::spawn(cmd, "taskbridge serve", &site.log)?;
        let admin = format!("http://127.0.0.1:{admin}");
        let health = format!("{admin}/healthz");
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Ok(r) = self.http.get(&health).send().await
                && r.status().is_success()
            {
                break;
            }
            if proc.exited() || Instant::now() > deadline {
                bail!(
                    "taskbridge serve did not become ready (see {})",
                    site.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = proc.started().elapsed().as_secs_f64();
        Ok((Serve { proc, admin, token }, ready))
    }

    async fn wait_subscriptions(&self, site: &Site, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let subs = self
                .get_json(&format!("{}/subscriptions", site.sim_admin), None)
                .await?;
            if subs.as_array().map_or(0, Vec::len) >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("serve did not subscribe {n} mailboxes in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn applied(&self, serve: &Serve) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", serve.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("taskbridge_status_updates_total{outcome=\"applied\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_default() as u64)
    }

    /// Phases 1 to 3 on one kind of store (`db`: PostgreSQL, else SQLite), into `stores`;
    /// phase 2 too when `exchangelib` (once per run: it does not depend on the stores).
    async fn medium(
        &self,
        dir: &Path,
        db: Option<&PgDatabase>,
        exchangelib: bool,
        stores: &mut Stores,
        f: &mut Figures,
    ) -> anyhow::Result<()> {
        let a = self.args;
        stores.load.0 = report::load_average();
        let exchangelib = if a.no_exchangelib {
            Some(Err("--no-exchangelib".to_string()))
        } else {
            exchangelib.then(|| exchangelib_version(&a.python))
        };
        let mut mailboxes: Vec<String> = (0..a.mailboxes).map(workload::mailbox).collect();
        if matches!(exchangelib, Some(Ok(_))) {
            mailboxes.extend((0..a.mailboxes).map(workload::other_mailbox));
        }
        let stored_in = if db.is_some() { "PostgreSQL" } else { "SQLite" };
        self.progress(&format!(
            "simulator with {} mailboxes; stores on {stored_in}",
            mailboxes.len()
        ));
        let site = self.open_site(dir, mailboxes, db).await?;
        let guid = "5b0c7f3e-2d1a-4c55-8e7b-0a9d3c2b1e47";
        self.progress(&format!(
            "importing a project of {} assignments",
            a.assignments
        ));
        self.import(
            &site,
            &workload::project(guid, "Bench", a.assignments, a.mailboxes),
        )?;
        self.progress("publish");
        let publish = self
            .publish(&site, guid, a.assignments, a.mailboxes)
            .await?;
        self.progress("publish again, nothing changed");
        let again = self
            .publish(&site, guid, a.assignments, a.mailboxes)
            .await?;
        self.progress("publish once more, skipped by its publish mark");
        let marked = self
            .publish(&site, guid, a.assignments, a.mailboxes)
            .await?;
        let republish = |p: &Publish| Republish {
            wall_s: p.wall_s,
            cpu_s: p.cpu_s,
            db_cpu_s: p.db_cpu_s,
            requests_total: p.requests_total,
            writes: ["CreateItem", "UpdateItem", "DeleteItem"]
                .iter()
                .map(|op| p.requests.get(*op).copied().unwrap_or_default())
                .sum(),
            assignments: p.assignments as u64,
        };
        stores.republish = Some(republish(&again));
        stores.republish_marked = Some(republish(&marked));
        stores.publish = Some(publish);
        match exchangelib {
            None => {}
            Some(Ok(version)) => {
                self.progress("exchangelib: the same creates");
                f.comparison = Some(self.exchangelib(&site, version).await?);
            }
            Some(Err(why)) => {
                self.progress(&format!("exchangelib comparison left out: {why}"));
                f.comparison_skipped = Some(why);
            }
        }
        if a.edits > 0 {
            self.edits(&site, stores).await?;
        }
        drop(site);
        stores.load.1 = report::load_average();
        Ok(())
    }

    async fn exchangelib(&self, site: &Site, version: String) -> anyhow::Result<Comparison> {
        let a = self.args;
        let script = site.dir.join("exchangelib_creates.py");
        std::fs::write(&script, EXCHANGELIB_SCRIPT)?;
        let list = site.dir.join("exchangelib-mailboxes.txt");
        std::fs::write(
            &list,
            (0..a.mailboxes)
                .map(|i| workload::other_mailbox(i) + "\n")
                .collect::<String>(),
        )?;
        let password = std::fs::read_to_string(site.dir.join("taskbridge-data/exchange.password"))?;
        self.reset_counters(site).await?;
        let mut cmd = Command::new(&a.python);
        cmd.current_dir(&site.dir)
            .arg(&script)
            .arg(&site.url)
            .args(["--user", SERVICE, "--password", password.trim()])
            .arg("--mailboxes-file")
            .arg(&list)
            .args(["--tasks", &a.assignments.to_string()])
            .stdout(Stdio::piped());
        let log = site.dir.join("exchangelib.log");
        let (status, out, usage) = Proc::spawn(cmd, "exchangelib", &log)?.finish()?;
        let v: Value = serde_json::from_str(out.trim()).with_context(|| {
            format!(
                "the exchangelib script exited with {status} (see {})",
                log.display()
            )
        })?;
        Ok(Comparison {
            created: v["created"].as_u64().unwrap_or_default(),
            failed: v["failed"].as_u64().unwrap_or_default(),
            wall_s: v["wall_s"].as_f64().unwrap_or_default(),
            cpu_s: v["cpu_s"].as_f64().unwrap_or_default(),
            process_cpu_s: usage.cpu.as_secs_f64(),
            chunk_size: v["chunk_size"].as_u64().unwrap_or_default(),
            requests: self.counters(site).await?,
            version,
        })
    }

    /// Phase 3: `serve` running, E edits in a burst, then E more at a steady rate.
    async fn edits(&self, site: &Site, f: &mut Stores) -> anyhow::Result<()> {
        let a = self.args;
        self.progress("serve (debounce 0)");
        self.reset_counters(site).await?;
        let (serve, _) = self.serve(site, &[]).await?;
        self.wait_subscriptions(site, a.mailboxes).await?;
        proc::wait_idle(serve.proc.pid(), Duration::from_secs(1), 0.05, self.timeout);
        f.serve_start_requests = self.counters(site).await?;
        // The tasks, round-robin over the mailboxes: edit k goes to mailbox k % M.
        let mut by_mailbox = Vec::with_capacity(a.mailboxes);
        for m in 0..a.mailboxes {
            let smtp = workload::mailbox(m);
            let tasks = self
                .get_json(&format!("{}/mailboxes/{smtp}/tasks", site.sim_admin), None)
                .await?;
            let ids: Vec<String> = tasks
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|t| t["ItemId"]["Id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            by_mailbox.push((smtp, ids));
        }
        let mut targets = Vec::new();
        let deepest = by_mailbox.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
        for depth in 0..deepest {
            for (smtp, ids) in &by_mailbox {
                if let Some(id) = ids.get(depth) {
                    targets.push((smtp.clone(), id.clone()));
                }
            }
        }
        if targets.len() < a.edits {
            bail!(
                "only {} tasks in the mailboxes for {} edits",
                targets.len(),
                a.edits
            );
        }
        self.progress(&format!("{} edits in a burst", a.edits));
        let burst = &targets[..a.edits];
        f.edits.push(
            self.edit_phase(site, &serve, burst, 40, None)
                .await
                .context("burst of edits")?,
        );
        if a.edit_rate > 0 {
            self.progress(&format!("{} edits at {}/s", a.edits, a.edit_rate));
            // The next E tasks when there are enough, else the same ones with another value.
            let paced: Vec<(String, String)> = if targets.len() >= 2 * a.edits {
                targets[a.edits..2 * a.edits].to_vec()
            } else {
                burst.to_vec()
            };
            f.edits.push(
                self.edit_phase(site, &serve, &paced, 70, Some(a.edit_rate))
                    .await
                    .context("paced edits")?,
            );
        }
        serve.proc.terminate()?;
        Ok(())
    }

    async fn edit_phase(
        &self,
        site: &Site,
        serve: &Serve,
        targets: &[(String, String)],
        percent: u32,
        rate: Option<u32>,
    ) -> anyhow::Result<Edits> {
        let n = targets.len();
        let applied_before = self.applied(serve).await?;
        self.reset_counters(site).await?;
        let cpu_before = serve.proc.cpu_now().unwrap_or_default();
        site.reset_statements();
        let db_before = site.db_cpu();
        let phase_start = SystemTime::now();
        let t0 = tokio::time::Instant::now();
        let http = &self.http;
        let admin = &site.sim_admin;
        let sent: Vec<(usize, SystemTime, bool)> = futures::stream::iter(0..n)
            .map(|k| async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / rate as f64))
                        .await;
                }
                let (smtp, id) = &targets[k];
                // A value per edit, never the one the task shows now.
                let body = json!({ "PercentComplete": percent + (k % 20) as u32 });
                let at = SystemTime::now();
                let ok = http
                    .patch(format!("{admin}/mailboxes/{smtp}/tasks/{id}"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (k, at, ok)
            })
            .buffer_unordered(if rate.is_some() { 256 } else { 8 })
            .collect()
            .await;
        let made_in = t0.elapsed().as_secs_f64();
        let refused = sent.iter().filter(|s| !s.2).count();
        if refused > 0 {
            bail!("the simulator refused {refused} of {n} edits");
        }
        // Wait for the applied updates; give up when nothing moves for a while.
        let mut last = (applied_before, Instant::now());
        loop {
            let now = self.applied(serve).await?;
            if now >= applied_before + n as u64 {
                break;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(30).min(self.timeout) {
                self.progress(&format!(
                    "only {} of {n} edits applied; no progress for 30 s",
                    now - applied_before
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = serve
            .proc
            .cpu_now()
            .unwrap_or_default()
            .saturating_sub(cpu_before);
        let db_cpu = db_before
            .zip(site.db_cpu())
            .map(|(b, a)| a.saturating_sub(b));
        // Before the bench reads the applied updates, which are statements too.
        let db_statements = site.statements();
        let requests = self.counters(site).await?;
        let updates = self
            .get_json(
                &format!("{}/pm/updates?state=applied", serve.admin),
                Some(&serve.token),
            )
            .await?;
        let phase_start: DateTime<Utc> = phase_start.into();
        let mut decided: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for u in updates.as_array().into_iter().flatten() {
            let (Some(item), Some(at)) = (
                u["source"]["item_id"].as_str(),
                u["decided_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
            ) else {
                continue;
            };
            let at = at.with_timezone(&Utc);
            if at >= phase_start {
                decided.entry(item.to_string()).or_default().push(at);
            }
        }
        let mut latencies = Vec::with_capacity(n);
        let mut first_sent: Option<DateTime<Utc>> = None;
        let mut last_decided: Option<DateTime<Utc>> = None;
        for (k, at, _) in &sent {
            let at: DateTime<Utc> = (*at).into();
            first_sent = Some(first_sent.map_or(at, |f| f.min(at)));
            let Some(list) = decided.get(&targets[*k].1) else {
                continue;
            };
            if let Some(d) = list.iter().filter(|d| **d >= at).min() {
                latencies.push((*d - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
                last_decided = Some(last_decided.map_or(*d, |l| l.max(*d)));
            }
        }
        latencies.sort_by(f64::total_cmp);
        let span = match (first_sent, last_decided) {
            (Some(a), Some(b)) => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
            _ => 0.0,
        };
        Ok(Edits {
            phase: if rate.is_some() { "paced" } else { "burst" }.into(),
            made: n,
            offered_per_s: n as f64 / made_in.max(1e-9),
            applied: latencies.len(),
            applied_per_s: latencies.len() as f64 / span.max(1e-9),
            p50_ms: report::percentile(&latencies, 50.0),
            p99_ms: report::percentile(&latencies, 99.0),
            max_ms: latencies.last().copied().unwrap_or(f64::NAN),
            cpu_us_per_edit: cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
            db_cpu_us_per_edit: db_cpu.map(|c| c.as_secs_f64() * 1e6 / n.max(1) as f64),
            db_statements,
            requests,
        })
    }

    /// Phase 4: many tracked assignments.
    async fn large(&self, dir: &Path, f: &mut Figures) -> anyhow::Result<()> {
        let a = self.args;
        let (n, m) = (a.large_assignments, a.large_mailboxes);
        self.progress(&format!("simulator with {m} mailboxes"));
        let site = self
            .open_site(dir, (0..m).map(workload::mailbox).collect(), None)
            .await?;
        let guid = "9e4d2a61-3f0b-4c8e-b5a7-1d6c0e9f8b32";
        self.progress(&format!("importing a project of {n} assignments"));
        self.import(&site, &workload::project(guid, "Bench large", n, m))?;
        self.progress(&format!("publish {n} assignments"));
        let publish = self.publish(&site, guid, n, m).await?;
        self.progress("serve: start-up");
        let (serve, ready_s) = self.serve(&site, &[]).await?;
        let rss_ready = serve.proc.rss_now().map_or(0, |r| r.0);
        self.wait_subscriptions(&site, m).await?;
        proc::wait_idle(serve.proc.pid(), Duration::from_secs(1), 0.05, self.timeout);
        let started_s = serve.proc.started().elapsed().as_secs_f64();
        let rss_started = serve.proc.rss_now().map_or(0, |r| r.0);
        serve.proc.terminate()?;
        // Again with a reconciliation interval that falls after the start-up work.
        let interval = started_s.ceil() as u64 + 3;
        self.progress(&format!(
            "serve: a reconciliation pass over {m} mailboxes (interval {interval} s)"
        ));
        let (serve, _) = self
            .serve(
                &site,
                &[(
                    "TASKBRIDGE_SYNC_RECONCILE_INTERVAL_SECS",
                    interval.to_string(),
                )],
            )
            .await?;
        self.reset_counters(&site).await?;
        let deadline = Instant::now() + self.timeout + Duration::from_secs(interval);
        let mut first: Option<Instant> = None;
        let passes = loop {
            let c = self.counters(&site).await?;
            let s = c.get("SyncFolderItems").copied().unwrap_or_default();
            if s > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if s >= m as u64 {
                break s;
            }
            if Instant::now() > deadline {
                bail!("the reconciliation pass did not reach every mailbox ({s} of {m})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reconcile_s = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.progress("serve: pass done");
        proc::wait_idle(
            serve.proc.pid(),
            Duration::from_millis(500),
            0.05,
            self.timeout,
        );
        let (rss_reconciled, _) = serve.proc.rss_now().unwrap_or_default();
        self.progress("serve: stopping");
        let (_, usage) = serve.proc.terminate()?;
        self.progress("serve: stopped");
        f.large = Some(Large {
            assignments: n,
            mailboxes: m,
            publish,
            ready_s,
            rss_ready_mb: to_mb(rss_ready),
            rss_started_mb: to_mb(rss_started),
            started_s,
            reconcile_s,
            reconcile_requests: passes,
            rss_reconciled_mb: to_mb(rss_reconciled),
            peak_rss_mb: to_mb(usage.peak_rss),
        });
        drop(site);
        Ok(())
    }
}

/// exchangelib's version, or why it cannot be used.
fn exchangelib_version(python: &Path) -> Result<String, String> {
    match Command::new(python)
        .args(["-c", "import exchangelib; print(exchangelib.__version__)"])
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(_) => Err(format!(
            "`{} -c \"import exchangelib\"` failed (pip install exchangelib)",
            python.display()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", python.display())),
    }
}
