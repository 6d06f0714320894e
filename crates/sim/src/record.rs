//! `--record DIR`: every exchange as files in the fixtures format.
//!
//! Each exchange gets a number `NNNN` (from 0001, in the order answers were sent) and two files:
//! `NNNN-Operation.request.xml` (the bytes the client sent) and `NNNN-Operation.response.xml`
//! (exactly the bytes the simulator answered). A push delivery is recorded the same way with
//! the roles swapped: `NNNN-SendNotification.request.xml` is what the simulator posted and
//! `.response.xml` what the subscriber answered. An answer without a body (HTTP 503, an
//! injected HTTP 500 or dropped connection, an unreachable subscriber) has no response file.
//! `index.jsonl` has one JSON line per exchange with its number, operation, direction, HTTP
//! status and file names; `session.json` names the origin and the server version. See
//! `fixtures/README.md`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use taskbridge_ews::soap::ServerVersionInfo;

/// Who started an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A client called the simulator.
    Inbound,
    /// The simulator posted a push notification.
    Push,
}

/// One recorded exchange.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// The operation (body element name), `Unknown` when the request could not be read.
    pub operation: &'a str,
    /// Who started it.
    pub direction: Direction,
    /// The request bytes.
    pub request: &'a [u8],
    /// The response body, if one was sent.
    pub response: Option<&'a [u8]>,
    /// The HTTP status (0: no answer, the connection was dropped or refused).
    pub status: u16,
}

/// Writes exchanges into a directory.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    next: AtomicU64,
    // A std Mutex: appending one line never awaits.
    index: Mutex<File>,
}

impl Recorder {
    /// Prepares `dir` (created if missing) and writes `session.json`.
    pub fn new(dir: &Path, server: &ServerVersionInfo) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let first = next_free_number(dir)?;
        let session = serde_json::json!({
            "origin": "taskbridge sim",
            "taskbridge_version": env!("CARGO_PKG_VERSION"),
            "server_version": server.to_string(),
            "started": chrono::Utc::now().to_rfc3339(),
            "first_exchange": first,
        });
        fs::write(
            dir.join("session.json"),
            serde_json::to_vec_pretty(&session).unwrap_or_default(),
        )?;
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("index.jsonl"))?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(first),
            index: Mutex::new(index),
        })
    }

    /// Writes one exchange. Failures are logged, never fatal to the request.
    pub fn record(&self, ex: &Exchange<'_>) {
        if let Err(e) = self.try_record(ex) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot record an exchange");
        }
    }

    fn try_record(&self, ex: &Exchange<'_>) -> std::io::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let op: String = ex
            .operation
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let stem = format!("{n:04}-{op}");
        let request = format!("{stem}.request.xml");
        fs::write(self.dir.join(&request), ex.request)?;
        let response = match ex.response {
            Some(body) if !body.is_empty() => {
                let name = format!("{stem}.response.xml");
                fs::write(self.dir.join(&name), body)?;
                Some(name)
            }
            _ => None,
        };
        let line = serde_json::json!({
            "n": n,
            "operation": ex.operation,
            "direction": ex.direction,
            "status": ex.status,
            "request": request,
            "response": response,
        });
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(index, "{line}")
    }
}

/// The number after the highest one already in `dir`, so a restarted simulator appends.
fn next_free_number(dir: &Path) -> std::io::Result<u64> {
    let mut max = 0;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.split('-').next().and_then(|n| n.parse::<u64>().ok()) {
            max = max.max(n);
        }
    }
    Ok(max + 1)
}
