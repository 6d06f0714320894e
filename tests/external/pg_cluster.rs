//! A throw-away PostgreSQL cluster: `initdb` and `pg_ctl` from the machine's PostgreSQL server
//! package, a data directory in a temporary folder, a free port on loopback, trust
//! authentication for one user. Stopped (immediately) and removed when dropped.
//!
//! PostgreSQL refuses to run as root; as root (a CI container) the cluster runs as the
//! `postgres` user the Debian package creates.
//!
//! Shared by the tests (`tests/external/postgres.rs`, which reports a missing server as not
//! checked) and the benchmark (`xtask`, which includes this file by path), so it depends on
//! nothing but `std` and `tempfile`, and reports failures as values instead of panicking.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The Debian/Ubuntu command that installs the PostgreSQL server.
pub const INSTALL_POSTGRES: &str = "apt-get install -y postgresql";

/// A running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Server options beyond the cluster's own.
    options: String,
}

/// The server's binaries: `TASKBRIDGE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// holding `initdb`, else `initdb` on the `PATH`.
pub fn server_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TASKBRIDGE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file()
        .then(|| path.parent().map(Path::to_path_buf))?
}

fn is_root() -> bool {
    // Asked of `id` rather than of libc: no unsafe code for this.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Cluster {
    /// Creates a cluster with the server binaries in `bin` (see [`server_bin`]) and starts it.
    pub fn start_with(bin: PathBuf) -> Result<Cluster, String> {
        Cluster::start_with_options(bin, "")
    }

    /// [`Cluster::start_with`], the server started with `options` too (`-c name=value ...`).
    pub fn start_with_options(bin: PathBuf, options: &str) -> Result<Cluster, String> {
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new()
            .prefix("taskbridge-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make the cluster folder: {e}"))?;
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:"), &dir.path().to_string_lossy()])
                .status()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !status.success() {
                return Err(format!("cannot hand the cluster folder to {user}"));
            }
        }
        let mut cluster = Cluster {
            dir,
            bin,
            run_as,
            port: 0,
            options: options.to_string(),
        };
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args(["-D", &data.to_string_lossy()])
            .args(["-U", "taskbridge", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            cluster.port = free_port()?;
            if cluster.pg_ctl_start() {
                return Ok(cluster);
            }
        }
        Err(format!(
            "the PostgreSQL cluster did not start:\n{}",
            cluster.log()
        ))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        self.command("pg_ctl")
            .args(["-D", &self.data_dir().to_string_lossy()])
            .args(["-l", &self.dir.path().join("log").to_string_lossy()])
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The process id of the running server (the postmaster), from `postmaster.pid`.
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's version (`postgres --version`).
    pub fn version(&self) -> Option<String> {
        let out = Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The URL of database `name` (created first with [`Cluster::try_create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://taskbridge@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// The `psql` of the server's binaries.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// Creates an empty database and returns its URL.
    pub fn try_create_database(&self, name: &str) -> Result<String, String> {
        run_psql(
            &self.psql(),
            &self.url("postgres"),
            &format!("CREATE DATABASE \"{name}\""),
        )
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(self.url(name))
    }

    /// Stops the server at once (as a crash would) and waits until the port is closed.
    pub fn kill(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir().to_string_lossy()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same port after [`Cluster::kill`].
    pub fn try_restart(&self) -> Result<(), String> {
        if self.pg_ctl_start() {
            Ok(())
        } else {
            Err(format!("restart failed:\n{}", self.log()))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sql` with the `psql` at `psql` on the database at `url`, stopping at the first error;
/// the rows it returns as lines of tab-separated fields.
pub fn run_psql(psql: &Path, url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(psql)
        .arg(url)
        .args([
            "-X",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
