//! The watch folder (`[pm] watch_dir`, `taskbridge serve --watch DIR`): every MSPDI or JSON
//! plan saved there is imported (three-way, so progress from the mailboxes survives) and so
//! published; after status updates are applied, the plan with the progress is written beside it
//! as `NAME.taskbridge.xml` (or `.json`), atomically, for the PM to open.
//!
//! A file is imported only once its size and modification time stayed the same between two
//! looks, and only if it parses completely: a file still being written, or a broken one, is
//! not imported, and is tried again when it changes. The store is never touched by a file that
//! does not parse.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::snapshot::{DocumentFormat, ImportedDocument};
use super::types::{UpdateFilter, UpdateState};
use super::{EmbeddedError, EmbeddedHost};
use crate::pm::export::ExportFormat;
use crate::pm::import::{ImportOptions, read_document};
use crate::pm::model::ProjectGuid;

/// The watch folder's settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The folder.
    pub dir: PathBuf,
    /// How files are read (time zone of MSPDI dates; GUID for files without one).
    pub import: ImportOptions,
    /// How often the folder is looked at.
    pub poll_interval: Duration,
    /// The part between the plan's name and its extension in the exported file's name:
    /// `plan.xml` is exported as `plan.{suffix}.xml`.
    pub export_suffix: String,
}

impl WatchConfig {
    /// Watches `dir`, looking every second, exporting as `NAME.taskbridge.xml`.
    pub fn new(dir: impl Into<PathBuf>) -> WatchConfig {
        WatchConfig {
            dir: dir.into(),
            import: ImportOptions::default(),
            poll_interval: Duration::from_secs(1),
            export_suffix: "taskbridge".into(),
        }
    }
}

/// What the watcher knows of one file.
#[derive(Debug)]
struct Watched {
    /// Size and modification time at the last look.
    seen: Option<(u64, SystemTime)>,
    /// Size and modification time of the version last handled (imported or refused).
    handled: Option<(u64, SystemTime)>,
    /// The project it holds, once imported.
    project: Option<ProjectGuid>,
    /// When the exported plan was last written, against the newest applied update.
    exported_for: Option<DateTime<Utc>>,
    /// The format the plan is written back in: that of the file.
    format: ExportFormat,
}

impl Default for Watched {
    fn default() -> Self {
        Watched {
            seen: None,
            handled: None,
            project: None,
            exported_for: None,
            format: ExportFormat::Mspdi,
        }
    }
}

/// Writes `text` to `path` so that a reader sees the old file or the new one, never half of
/// one: a temporary file in the same folder, synced, then renamed over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Whether `name` is a plan the watcher imports: `.xml` or `.json`, not hidden (temporary
/// files), not an export of ours.
fn is_plan(name: &str, suffix: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && !name.starts_with('~')
        && (lower.ends_with(".xml") || lower.ends_with(".json"))
        && !lower.contains(&format!(".{}.", suffix.to_ascii_lowercase()))
}

/// The exported plan's path for the plan at `path`.
pub fn export_path(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "xml".into());
    path.with_file_name(format!("{stem}.{suffix}.{ext}"))
}

/// Watches the folder until `shutdown` resolves.
pub async fn run_watch_folder(
    host: EmbeddedHost,
    config: WatchConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut files: HashMap<PathBuf, Watched> = HashMap::new();
    info!(dir = %config.dir.display(), "watching for plans");
    loop {
        look(&host, &config, &mut files).await;
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// The plans in `dir` with their size and modification time (blocking: run it off the runtime).
fn list_plans(dir: &Path, suffix: &str) -> std::io::Result<Vec<(PathBuf, (u64, SystemTime))>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_plan(&name, suffix) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((entry.path(), (meta.len(), modified)));
        }
    }
    Ok(out)
}

/// One look at the folder: import what changed and settled, export what has new progress.
async fn look(host: &EmbeddedHost, config: &WatchConfig, files: &mut HashMap<PathBuf, Watched>) {
    let (dir, suffix) = (config.dir.clone(), config.export_suffix.clone());
    let listed = tokio::task::spawn_blocking(move || list_plans(&dir, &suffix)).await;
    let plans = match listed {
        Ok(Ok(plans)) => plans,
        Ok(Err(e)) => {
            warn!(dir = %config.dir.display(), error = %e, "cannot read the watch folder");
            return;
        }
        Err(_) => return,
    };
    for (path, now) in plans {
        let watched = files.entry(path.clone()).or_default();
        let settled = watched.seen == Some(now);
        watched.seen = Some(now);
        if !settled || watched.handled == Some(now) {
            continue;
        }
        watched.handled = Some(now);
        match import(host, &path, &config.import).await {
            Ok((project, format)) => {
                watched.project = Some(project);
                watched.format = format;
            }
            Err(e) => warn!(
                file = %path.display(),
                error = %e,
                "plan not imported (tried again when it changes)"
            ),
        }
    }
    for (path, watched) in files.iter_mut() {
        let Some(project) = watched.project else {
            continue;
        };
        if let Err(e) = export_if_progressed(host, config, path, project, watched).await {
            warn!(file = %path.display(), error = %e, "exported plan not written");
        }
    }
}

async fn import(
    host: &EmbeddedHost,
    path: &Path,
    options: &ImportOptions,
) -> Result<(ProjectGuid, ExportFormat), EmbeddedError> {
    let (path, options) = (path.to_owned(), options.clone());
    let (project, text) = tokio::task::spawn_blocking(move || read_document(path, &options))
        .await
        .map_err(|_| EmbeddedError::Closed)??;
    let document = DocumentFormat::of(&text).map(|format| ImportedDocument { format, text });
    let format = match document.as_ref().map(|d| d.format) {
        Some(DocumentFormat::Json) => ExportFormat::Json,
        _ => ExportFormat::Mspdi,
    };
    let report = host.import_document(project, document, None, false).await?;
    info!(
        project = %report.project,
        added = report.added,
        changed = report.changed,
        removed = report.removed,
        overridden = report.overridden.len(),
        "plan imported from the watch folder"
    );
    Ok((report.project, format))
}

async fn export_if_progressed(
    host: &EmbeddedHost,
    config: &WatchConfig,
    path: &Path,
    project: ProjectGuid,
    watched: &mut Watched,
) -> Result<(), EmbeddedError> {
    let applied = host
        .status_updates(UpdateFilter {
            state: Some(UpdateState::Applied),
            project: Some(project),
            key: None,
        })
        .await?;
    let Some(newest) = applied.iter().filter_map(|u| u.decided_at).max() else {
        return Ok(());
    };
    if watched.exported_for.is_some_and(|at| at >= newest) {
        return Ok(());
    }
    let text = host.export(project, watched.format).await?;
    let target = export_path(path, &config.export_suffix);
    let write_to = target.clone();
    tokio::task::spawn_blocking(move || write_atomically(&write_to, &text))
        .await
        .map_err(|_| EmbeddedError::Closed)??;
    info!(file = %target.display(), "exported plan with the progress written");
    watched.exported_for = Some(newest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_exports_are_told_apart() {
        assert!(is_plan("plan.xml", "taskbridge"));
        assert!(is_plan("Plan.JSON", "taskbridge"));
        assert!(!is_plan("plan.taskbridge.xml", "taskbridge"));
        assert!(!is_plan(".plan.xml.123.tmp", "taskbridge"));
        assert!(!is_plan("~$plan.xml", "taskbridge"));
        assert!(!is_plan("notes.txt", "taskbridge"));
        assert_eq!(
            export_path(Path::new("/w/plan.xml"), "taskbridge"),
            PathBuf::from("/w/plan.taskbridge.xml")
        );
    }
}
