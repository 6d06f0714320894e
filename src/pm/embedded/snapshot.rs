//! What each project's file said at its last import (`import_snapshots`): the base of the next
//! three-way import, and the document an MSPDI export writes its changes into.

use chrono::{DateTime, Utc};

use super::EmbeddedError;
use super::rows::ts;
use super::sql::{Conn, args};
use crate::pm::model::{Project, ProjectGuid};

/// The format of an imported document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    /// Microsoft Project XML.
    Mspdi,
    /// taskbridge JSON (docs/PROJECT-FORMAT.md).
    Json,
}

impl DocumentFormat {
    /// The format of `text`, as the importer tells them apart (`<` or `{` first).
    pub fn of(text: &str) -> Option<DocumentFormat> {
        match text
            .trim_start_matches('\u{feff}')
            .chars()
            .find(|c| !c.is_whitespace())
        {
            Some('<') => Some(DocumentFormat::Mspdi),
            Some('{') => Some(DocumentFormat::Json),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DocumentFormat::Mspdi => "mspdi",
            DocumentFormat::Json => "json",
        }
    }
}

/// A file as imported: its format and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDocument {
    /// MSPDI or JSON.
    pub format: DocumentFormat,
    /// The file's text.
    pub text: String,
}

/// A project's last import.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// The project as the file said it.
    pub(crate) project: Project,
    /// The file, when the import came from one.
    pub(crate) document: Option<ImportedDocument>,
}

/// The last import of `guid`, if one was recorded.
pub(crate) fn load(conn: &dyn Conn, guid: ProjectGuid) -> Result<Option<Snapshot>, EmbeddedError> {
    let row: Option<(String, String, Option<String>)> = conn
        .query_opt(
            "SELECT project_json, format, document FROM import_snapshots WHERE project = ?1",
            args![guid.to_string()],
        )?
        .map(|row| Ok::<_, EmbeddedError>((row.get(0)?, row.get(1)?, row.get(2)?)))
        .transpose()?;
    let Some((json, format, document)) = row else {
        return Ok(None);
    };
    let project: Project = serde_json::from_str(&json)
        .map_err(|e| EmbeddedError::Corrupt(format!("import snapshot of {guid}: {e}")))?;
    let format = match format.as_str() {
        "mspdi" => Some(DocumentFormat::Mspdi),
        "json" => Some(DocumentFormat::Json),
        _ => None,
    };
    let document = match (format, document) {
        (Some(format), Some(text)) => Some(ImportedDocument { format, text }),
        _ => None,
    };
    Ok(Some(Snapshot { project, document }))
}

/// Records `project` (as the file said it) and the file as the project's last import.
pub(crate) fn save(
    conn: &dyn Conn,
    project: &Project,
    document: Option<&ImportedDocument>,
    now: DateTime<Utc>,
) -> Result<(), EmbeddedError> {
    let json = serde_json::to_string(project)
        .map_err(|e| EmbeddedError::Corrupt(format!("import snapshot: {e}")))?;
    conn.execute(
        "INSERT INTO import_snapshots (project, project_json, format, document, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project) DO UPDATE SET project_json = excluded.project_json,
             format = excluded.format, document = excluded.document,
             imported_at = excluded.imported_at",
        args![
            project.guid.to_string(),
            json,
            document.map_or("model", |d| d.format.as_str()),
            document.map(|d| d.text.as_str()),
            ts(now),
        ],
    )?;
    Ok(())
}
