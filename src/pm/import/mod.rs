//! Reading a project from a file: Microsoft Project XML (MSPDI) or taskbridge's JSON project
//! format (`docs/PROJECT-FORMAT.md`), told apart by their first character.
//!
//! Both readers apply the same checks: UIDs are unique per kind, every assignment names a task
//! that exists and a resource that exists (or [`ResourceUid::NONE`]), percentages are `0..=100`
//! and priorities `0..=1000`. Every error names where in the input it is: an element path with
//! line and column for XML, a field path for JSON.

mod json;
mod mspdi;

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use thiserror::Error;

use super::model::{AssignmentUid, ModelError, ProjectGuid, ResourceUid, TaskUid};

pub use json::parse_json;
pub use mspdi::{MSPDI_NAMESPACE, parse_mspdi};

/// The largest input read by default: 64 MiB, far above any real project file, low enough that a
/// wrong path (a disk image, a log) fails fast instead of filling memory.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What the file itself cannot say.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// The zone the project's dates are local to. MSPDI dates carry no zone and MSPDI names no
    /// IANA zone, so this is configuration; the JSON format may name its own, which then wins.
    /// Default: UTC.
    pub time_zone: Tz,
    /// The GUID to use when the file has none (Project 2007 files and many exports from other
    /// tools have no project `GUID`). Without it such a file is refused with
    /// [`ImportError::MissingGuid`]: the GUID keys every mailbox item, so it must stay the same
    /// on every import of the same project, and nothing in the file is stable enough to make one.
    pub fallback_guid: Option<ProjectGuid>,
    /// Inputs larger than this many bytes are refused with [`ImportError::TooLarge`].
    pub max_bytes: usize,
    /// Projects with more mailbox tasks (assignments with an e-mail address) than this are
    /// refused with [`ImportError::TooManyAssignments`].
    pub max_assignments_per_project: usize,
    /// Projects that would give one mailbox more tasks than this are refused with
    /// [`ImportError::TooManyAssignments`] naming the mailbox.
    pub max_assignments_per_mailbox: usize,
}

/// The default cap on a project's mailbox tasks.
pub const DEFAULT_MAX_ASSIGNMENTS_PER_PROJECT: usize = 100_000;
/// The default cap on one mailbox's tasks from one project.
pub const DEFAULT_MAX_ASSIGNMENTS_PER_MAILBOX: usize = 10_000;
/// The longest e-mail address accepted (RFC 5321's path limit less the brackets).
const MAX_EMAIL_BYTES: usize = 254;

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            time_zone: Tz::UTC,
            fallback_guid: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_assignments_per_project: DEFAULT_MAX_ASSIGNMENTS_PER_PROJECT,
            max_assignments_per_mailbox: DEFAULT_MAX_ASSIGNMENTS_PER_MAILBOX,
        }
    }
}

/// Where in the input a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The element path (`Project/Assignments/Assignment/Work`) or JSON field path
    /// (`assignments[2].work`); empty when the problem is not inside any element.
    pub path: String,
    /// 1-based line, when the input format has lines worth naming.
    pub line: Option<usize>,
    /// 1-based column in characters, with `line`.
    pub column: Option<usize>,
}

impl Place {
    /// A place in text, from a byte offset into `text`.
    pub(crate) fn in_text(path: String, text: &str, offset: usize) -> Place {
        let (line, column) = line_column(text, offset);
        Place {
            path: bounded_path(path),
            line: Some(line),
            column: Some(column),
        }
    }

    /// A place named by a path alone.
    pub(crate) fn at_path(path: String) -> Place {
        Place {
            path: bounded_path(path),
            line: None,
            column: None,
        }
    }
}

/// The longest element path an error carries; a deeper one keeps its first and last elements.
const MAX_PATH_BYTES: usize = 256;

/// Shortens a path of absurd depth (a hostile file nests thousands of elements) to its first
/// two and last elements around `/.../`, so an error message stays readable.
fn bounded_path(path: String) -> String {
    if path.len() <= MAX_PATH_BYTES {
        return path;
    }
    let head: String = path.split('/').take(2).collect::<Vec<_>>().join("/");
    let mut tail: Vec<&str> = Vec::new();
    let mut room = MAX_PATH_BYTES.saturating_sub(head.len() + 5);
    for segment in path.rsplit('/') {
        if segment.len() + 1 > room {
            break;
        }
        room -= segment.len() + 1;
        tail.push(segment);
    }
    tail.reverse();
    let mut cut = head.len().min(MAX_PATH_BYTES / 2);
    while !head.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &head[..cut];
    format!("{head}/.../{}", tail.join("/"))
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line, self.column) {
            (true, Some(line), Some(column)) => write!(f, "line {line}, column {column}"),
            (false, Some(line), Some(column)) => {
                write!(f, "`{}` at line {line}, column {column}", self.path)
            }
            (true, _, _) => f.write_str("the top level"),
            (false, _, _) => write!(f, "`{}`", self.path),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Why one value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A work duration or percentage the model refuses.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Not an integer, or not one that fits.
    #[error("not an integer in range: {0}")]
    Integer(#[from] std::num::ParseIntError),
    /// Not `0`, `1`, `true` or `false`.
    #[error("not a boolean (0, 1, true or false)")]
    Boolean,
    /// Not a zone-less date and time.
    #[error("not a date and time like 2026-03-02T08:00:00")]
    DateTime,
    /// Not a GUID.
    #[error("not a GUID: {0}")]
    Guid(#[from] uuid::Error),
    /// A number outside what the field allows.
    #[error("outside {min}..={max}")]
    OutOfRange {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// Not an IANA time zone name.
    #[error("not an IANA time zone name such as Europe/Berlin")]
    TimeZone,
}

/// Why a project could not be imported.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The input is larger than [`ImportOptions::max_bytes`].
    #[error("input is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The input is not UTF-8 (MSPDI files are written as UTF-8; JSON must be).
    #[error("input is not UTF-8 text at {at}")]
    NotUtf8 {
        /// Where the first invalid byte is.
        at: Place,
    },
    /// The input starts with neither `<` (MSPDI) nor `{` (JSON).
    #[error(
        "input is neither MSPDI XML (starting with '<') nor a JSON project (starting with '{{')"
    )]
    UnknownFormat,
    /// The XML is not well-formed.
    #[error("malformed XML at {at}: {source}")]
    Xml {
        /// Where the parser stopped.
        at: Place,
        /// The parser's complaint.
        #[source]
        source: quick_xml::Error,
    },
    /// The XML has a DOCTYPE. Refused because a DTD can define entities whose expansion is a
    /// denial-of-service (and, elsewhere, file disclosure) vector, and MSPDI never needs one.
    #[error("DOCTYPE declarations are refused (no entity expansion) at {at}")]
    DocType {
        /// Where the DOCTYPE is.
        at: Place,
    },
    /// An entity reference other than the five XML predefines and character references.
    #[error("unknown entity reference &{name}; at {at}")]
    UnknownEntity {
        /// The element holding it.
        at: Place,
        /// The entity's name.
        name: String,
    },
    /// The XML ends before its elements are closed, as in a truncated file.
    #[error("input ends at {at} with that element still open (opened at line {opened_line})")]
    UnexpectedEof {
        /// The innermost open element, and where the input ends.
        at: Place,
        /// The line where that element opened.
        opened_line: usize,
    },
    /// The root element is not MSPDI's `Project`.
    #[error("not an MSPDI file: the root element is {found:?}, not Project in {MSPDI_NAMESPACE}")]
    NotMspdi {
        /// The root element's name as written (empty when there is none).
        found: String,
    },
    /// A required element or field is absent.
    #[error("{at}: missing {field}")]
    Missing {
        /// The record (element or object) that lacks it.
        at: Place,
        /// The missing element or field.
        field: &'static str,
    },
    /// A value that cannot be read as its field's type.
    #[error("invalid value {value:?} in {at}: {source}")]
    InvalidValue {
        /// The element or field.
        at: Place,
        /// The text as given.
        value: String,
        /// Why it was refused (boxed to keep `ImportError` small).
        #[source]
        source: Box<ValueError>,
    },
    /// The file has no project GUID and [`ImportOptions::fallback_guid`] is not set.
    #[error("the project has no GUID and no fallback GUID was given")]
    MissingGuid,
    /// Two records of one kind share a UID.
    #[error("{at}: {kind} UID {uid} appears more than once")]
    DuplicateUid {
        /// The second record's UID.
        at: Place,
        /// `task`, `resource` or `assignment`.
        kind: &'static str,
        /// The repeated UID.
        uid: i64,
    },
    /// A resource's e-mail address is not one (a line break or another control character,
    /// blanks, no `@`, too long). The value is not quoted: it may hold anything.
    #[error("resource {resource}: the e-mail address is not usable: {reason}")]
    InvalidEmail {
        /// The resource.
        resource: ResourceUid,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The project has more mailbox tasks than the cap, in all or for one mailbox.
    #[error("{}", too_many(*.count, *.limit, .mailbox.as_deref()))]
    TooManyAssignments {
        /// The mailbox over its cap, or `None` for the project's total.
        mailbox: Option<String>,
        /// The tasks it would have.
        count: usize,
        /// The cap (`max_assignments_per_mailbox` or `max_assignments_per_project`).
        limit: usize,
    },
    /// An assignment names a task that does not exist.
    #[error("{at}: assignment {assignment} refers to task {task}, which does not exist")]
    UnknownTask {
        /// The assignment's task reference.
        at: Place,
        /// The assignment.
        assignment: AssignmentUid,
        /// The missing task.
        task: TaskUid,
    },
    /// An assignment names a resource that does not exist (and is not [`ResourceUid::NONE`]).
    #[error("{at}: assignment {assignment} refers to resource {resource}, which does not exist")]
    UnknownResource {
        /// The assignment's resource reference.
        at: Place,
        /// The assignment.
        assignment: AssignmentUid,
        /// The missing resource.
        resource: ResourceUid,
    },
    /// The JSON is malformed or does not have the format's shape.
    #[error("invalid JSON project at line {line}, column {column}: {source}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's complaint.
        #[source]
        source: serde_json::Error,
    },
}

impl ImportError {
    /// Where in the input the problem is, when it is at one place.
    pub fn place(&self) -> Option<&Place> {
        match self {
            ImportError::NotUtf8 { at }
            | ImportError::Xml { at, .. }
            | ImportError::DocType { at }
            | ImportError::UnknownEntity { at, .. }
            | ImportError::UnexpectedEof { at, .. }
            | ImportError::Missing { at, .. }
            | ImportError::InvalidValue { at, .. }
            | ImportError::DuplicateUid { at, .. }
            | ImportError::UnknownTask { at, .. }
            | ImportError::UnknownResource { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// Reads a project file, MSPDI or JSON, whichever its content is.
pub fn import_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<super::model::Project, ImportError> {
    read_document(path, options).map(|(project, _)| project)
}

/// Reads a project file, MSPDI or JSON, like [`import_file`], and returns its text as well (read
/// once, so that the project and the text always agree).
pub fn read_document(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<(super::model::Project, String), ImportError> {
    let path = path.as_ref();
    let io_error = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    // One byte past the limit is enough to know the file is too large, without reading it all.
    let limit = u64::try_from(options.max_bytes).unwrap_or(u64::MAX);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    let project = import_bytes(&bytes, options)?;
    // import_bytes accepted the bytes, so they are UTF-8.
    let text = String::from_utf8(bytes).unwrap_or_default();
    Ok((project, text))
}

/// Reads a project, MSPDI or JSON, from raw bytes (UTF-8, with or without a byte order mark).
pub fn import_bytes(
    bytes: &[u8],
    options: &ImportOptions,
) -> Result<super::model::Project, ImportError> {
    if bytes.len() > options.max_bytes {
        return Err(ImportError::TooLarge {
            limit: options.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        // The valid prefix is text, so line and column can be counted in it.
        let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
        ImportError::NotUtf8 {
            at: Place::in_text(String::new(), valid, valid.len()),
        }
    })?;
    import_str(text, options)
}

/// Reads a project, MSPDI or JSON, from text: `<` first means MSPDI, `{` first means JSON
/// (ignoring a byte order mark and whitespace).
pub fn import_str(
    text: &str,
    options: &ImportOptions,
) -> Result<super::model::Project, ImportError> {
    let first = text
        .trim_start_matches('\u{feff}')
        .chars()
        .find(|c| !c.is_whitespace());
    let project = match first {
        Some('<') => parse_mspdi(text, options),
        Some('{') => parse_json(text, options),
        _ => Err(ImportError::UnknownFormat),
    }?;
    check_mailboxes(&project, options)?;
    Ok(project)
}

fn too_many(count: usize, limit: usize, mailbox: Option<&str>) -> String {
    match mailbox {
        Some(m) => format!(
            "the project gives {m} {count} tasks, over the limit of {limit} per mailbox \
             (max_assignments_per_mailbox)"
        ),
        None => format!(
            "the project has {count} mailbox tasks, over the limit of {limit} per project \
             (max_assignments_per_project)"
        ),
    }
}

/// The checks on what becomes mailbox tasks: usable addresses, and the caps.
fn check_mailboxes(
    project: &super::model::Project,
    options: &ImportOptions,
) -> Result<(), ImportError> {
    for resource in &project.resources {
        if let Some(email) = resource.email.as_deref() {
            check_email(email.trim()).map_err(|reason| ImportError::InvalidEmail {
                resource: resource.uid,
                reason,
            })?;
        }
    }
    let units = project.sync_units();
    if units.len() > options.max_assignments_per_project {
        return Err(ImportError::TooManyAssignments {
            mailbox: None,
            count: units.len(),
            limit: options.max_assignments_per_project,
        });
    }
    let mut per_mailbox: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    for unit in &units {
        *per_mailbox
            .entry(unit.email.to_ascii_lowercase())
            .or_default() += 1;
    }
    if let Some((mailbox, count)) = per_mailbox
        .into_iter()
        .filter(|(_, n)| *n > options.max_assignments_per_mailbox)
        .max_by_key(|(_, n)| *n)
    {
        return Err(ImportError::TooManyAssignments {
            mailbox: Some(mailbox),
            count,
            limit: options.max_assignments_per_mailbox,
        });
    }
    Ok(())
}

/// An address that can go into EWS requests and log lines: no control characters or blanks,
/// one `@` between a local part and a domain, at most 254 bytes. An empty one means "no
/// mailbox" and is fine.
fn check_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Ok(());
    }
    if email.chars().any(char::is_control) {
        return Err("it holds a line break or another control character");
    }
    if email.chars().any(char::is_whitespace) {
        return Err("it holds blanks");
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err("it is longer than 254 bytes");
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err("it is not of the form name@domain"),
    }
}

/// Checks the input size against the limit.
fn check_size(text: &str, options: &ImportOptions) -> Result<(), ImportError> {
    if text.len() > options.max_bytes {
        Err(ImportError::TooLarge {
            limit: options.max_bytes,
        })
    } else {
        Ok(())
    }
}

/// A record whose place a reader can name, for [`check_references`].
#[derive(Debug, Clone, Copy)]
enum Site {
    /// The UID of the task at this index.
    TaskUid(usize),
    /// The UID of the resource at this index.
    ResourceUid(usize),
    /// The UID of the assignment at this index.
    AssignmentUid(usize),
    /// The task reference of the assignment at this index.
    AssignmentTask(usize),
    /// The resource reference of the assignment at this index.
    AssignmentResource(usize),
}

/// The identities of a parsed project, for [`check_references`].
struct Ids<'a> {
    tasks: &'a [TaskUid],
    resources: &'a [ResourceUid],
    assignments: &'a [(AssignmentUid, TaskUid, ResourceUid)],
}

/// The cross-record checks both readers share: unique UIDs, and references that resolve.
fn check_references(ids: Ids<'_>, place: impl Fn(Site) -> Place) -> Result<(), ImportError> {
    fn unique<T: Copy + Eq + std::hash::Hash>(
        uids: impl Iterator<Item = T>,
    ) -> Result<HashSet<T>, (usize, T)> {
        let mut seen = HashSet::new();
        for (index, uid) in uids.enumerate() {
            if !seen.insert(uid) {
                return Err((index, uid));
            }
        }
        Ok(seen)
    }
    let tasks =
        unique(ids.tasks.iter().copied()).map_err(|(i, uid)| ImportError::DuplicateUid {
            at: place(Site::TaskUid(i)),
            kind: "task",
            uid: uid.0,
        })?;
    let resources =
        unique(ids.resources.iter().copied()).map_err(|(i, uid)| ImportError::DuplicateUid {
            at: place(Site::ResourceUid(i)),
            kind: "resource",
            uid: uid.0,
        })?;
    unique(ids.assignments.iter().map(|a| a.0)).map_err(|(i, uid)| ImportError::DuplicateUid {
        at: place(Site::AssignmentUid(i)),
        kind: "assignment",
        uid: uid.0,
    })?;
    for (i, &(assignment, task, resource)) in ids.assignments.iter().enumerate() {
        if !tasks.contains(&task) {
            return Err(ImportError::UnknownTask {
                at: place(Site::AssignmentTask(i)),
                assignment,
                task,
            });
        }
        if resource != ResourceUid::NONE && !resources.contains(&resource) {
            return Err(ImportError::UnknownResource {
                at: place(Site::AssignmentResource(i)),
                assignment,
                resource,
            });
        }
    }
    Ok(())
}

/// Reads a zone-less local date and time: `2026-03-02T08:00:00`, with optional fractional
/// seconds, or without seconds (`2026-03-02T08:00`), or a bare date meaning midnight.
///
/// A zone suffix (`Z`, `+01:00`) is refused: these dates are local to the project's zone, and a
/// file that says otherwise was not written with that meaning.
fn parse_local_datetime(text: &str) -> Result<NaiveDateTime, ValueError> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN))
        })
        .map_err(|_| ValueError::DateTime)
}

/// Reads an integer in `min..=max`.
fn parse_int_in<T>(text: &str, min: i64, max: i64) -> Result<T, ValueError>
where
    T: TryFrom<i64>,
{
    let value: i64 = text.trim().parse()?;
    check_range(value, min, max)
}

/// `value` as a `T` when it lies in `min..=max`.
fn check_range<T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Result<T, ValueError> {
    if (min..=max).contains(&value) {
        T::try_from(value).map_err(|_| ValueError::OutOfRange { min, max })
    } else {
        Err(ValueError::OutOfRange { min, max })
    }
}

/// The range of `Task::priority`.
const PRIORITY_RANGE: (i64, i64) = (0, 1000);
/// The range of minutes per day: at least one, at most a calendar day.
const MINUTES_PER_DAY_RANGE: (i64, i64) = (1, 24 * 60);
/// The range of minutes per week: at least one, at most a calendar week.
const MINUTES_PER_WEEK_RANGE: (i64, i64) = (1, 7 * 24 * 60);
/// The range of `Task::outline_level`.
const OUTLINE_LEVEL_RANGE: (i64, i64) = (0, u16::MAX as i64);

/// Project's default working minutes per day, used when the file gives none.
const DEFAULT_MINUTES_PER_DAY: u32 = 480;
/// Project's default working minutes per week, used when the file gives none.
const DEFAULT_MINUTES_PER_WEEK: u32 = 2400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_offsets_count_characters() {
        let text = "ab\nZoë x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'x' is at byte 8 (ë is two bytes) and character column 5.
        assert_eq!(line_column(text, 8), (2, 5));
        // Inside a multi-byte character counts as that character.
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn parse_local_datetime_forms_are_read() {
        let expected = NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|d| d.and_hms_opt(8, 0, 0))
            .expect("valid");
        for text in [
            "2026-03-02T08:00:00",
            "2026-03-02T08:00",
            "2026-03-02T08:00:00.000",
            " 2026-03-02T08:00:00\n",
        ] {
            assert_eq!(parse_local_datetime(text), Ok(expected), "{text:?}");
        }
        assert_eq!(
            parse_local_datetime("2026-03-02").map(|d| d.to_string()),
            Ok("2026-03-02 00:00:00".to_owned())
        );
        for text in [
            "2026-03-02T08:00:00Z",
            "2026-03-02T08:00:00+01:00",
            "2026-02-30T08:00:00",
            "02.03.2026",
            "",
        ] {
            assert_eq!(
                parse_local_datetime(text),
                Err(ValueError::DateTime),
                "{text:?}"
            );
        }
    }

    #[test]
    fn import_str_unknown_first_character_is_rejected() {
        let options = ImportOptions::default();
        assert!(matches!(
            import_str("  PT8H", &options),
            Err(ImportError::UnknownFormat)
        ));
        assert!(matches!(
            import_str("", &options),
            Err(ImportError::UnknownFormat)
        ));
    }

    #[test]
    fn import_bytes_invalid_utf8_names_line() {
        let bytes = b"<Project>\n  <Name>a\xff</Name>";
        match import_bytes(bytes, &ImportOptions::default()) {
            Err(ImportError::NotUtf8 { at }) => {
                assert_eq!((at.line, at.column), (Some(2), Some(10)));
            }
            other => panic!("expected NotUtf8, got {other:?}"),
        }
    }

    #[test]
    fn import_bytes_over_limit_is_rejected() {
        let options = ImportOptions {
            max_bytes: 10,
            ..ImportOptions::default()
        };
        assert!(matches!(
            import_bytes(b"{\"name\": \"too long\"}", &options),
            Err(ImportError::TooLarge { limit: 10 })
        ));
    }

    #[test]
    fn place_display_names_path_and_line() {
        let place = Place {
            path: "Project/Tasks/Task/Work".into(),
            line: Some(57),
            column: Some(7),
        };
        assert_eq!(
            place.to_string(),
            "`Project/Tasks/Task/Work` at line 57, column 7"
        );
        assert_eq!(
            Place::at_path("tasks[2].work".into()).to_string(),
            "`tasks[2].work`"
        );
    }
}
