//! The field table: which PM value goes to which mailbox field, in which direction, and how.
//!
//! [`MappingConfig`] is the `[mapping]` section of `taskbridge.toml` as the user wrote it;
//! [`FieldTable::from_config`] checks it and builds the [`FieldTable`] the rest of the connector
//! uses. An invalid table is refused with a [`MappingError`] naming the entry.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::convert::ImportanceThresholds;
use crate::ews::types::{Path, field_uri};
use crate::pm::AssignmentField;

/// A mapped field of a mailbox task.
///
/// The key tag (the extended property that carries the [`crate::pm::AssignmentKey`]) is not a
/// `MailField`: it is always written and cannot be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailField {
    /// `item:Subject`, from the subject template.
    Subject,
    /// `item:Body` (plain text), from the task notes.
    Body,
    /// `item:Importance`, from the task priority.
    Importance,
    /// `task:StartDate`, a calendar date in the owner's zone.
    StartDate,
    /// `task:DueDate`, a calendar date in the owner's zone.
    DueDate,
    /// `task:TotalWork`, whole minutes.
    TotalWork,
    /// `task:ActualWork`, whole minutes.
    ActualWork,
    /// `task:PercentComplete`, with `Status` and `CompleteDate` derived by Exchange.
    PercentComplete,
    /// `item:Categories`, from the project name.
    Categories,
}

impl MailField {
    /// Every field, in the table's order (the order of updates and of the hash).
    pub const ALL: [MailField; 9] = [
        MailField::Subject,
        MailField::Body,
        MailField::Importance,
        MailField::StartDate,
        MailField::DueDate,
        MailField::TotalWork,
        MailField::ActualWork,
        MailField::PercentComplete,
        MailField::Categories,
    ];

    /// The field's configuration key under `[mapping.fields]`, e.g. `start_date`. Also its name
    /// in hashes, so it never changes.
    pub const fn name(self) -> &'static str {
        match self {
            MailField::Subject => "subject",
            MailField::Body => "body",
            MailField::Importance => "importance",
            MailField::StartDate => "start_date",
            MailField::DueDate => "due_date",
            MailField::TotalWork => "total_work",
            MailField::ActualWork => "actual_work",
            MailField::PercentComplete => "percent_complete",
            MailField::Categories => "categories",
        }
    }

    /// The field with this configuration key.
    pub fn from_name(name: &str) -> Option<MailField> {
        MailField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The EWS field URI written and read, e.g. `task:DueDate`.
    pub const fn field_uri(self) -> &'static str {
        match self {
            MailField::Subject => field_uri::SUBJECT,
            MailField::Body => field_uri::BODY,
            MailField::Importance => field_uri::IMPORTANCE,
            MailField::StartDate => field_uri::START_DATE,
            MailField::DueDate => field_uri::DUE_DATE,
            MailField::TotalWork => field_uri::TOTAL_WORK,
            MailField::ActualWork => field_uri::ACTUAL_WORK,
            MailField::PercentComplete => field_uri::PERCENT_COMPLETE,
            MailField::Categories => field_uri::CATEGORIES,
        }
    }

    /// The EWS property path of [`MailField::field_uri`].
    pub fn path(self) -> Path {
        Path::field(self.field_uri())
    }

    /// The PM sources this field can take its value from, the default first.
    pub const fn sources(self) -> &'static [PmSource] {
        match self {
            MailField::Subject => &[PmSource::SubjectTemplate],
            MailField::Body => &[PmSource::TaskNotes],
            MailField::Importance => &[PmSource::TaskPriority],
            MailField::StartDate => &[PmSource::AssignmentStart, PmSource::TaskStart],
            MailField::DueDate => &[PmSource::AssignmentFinish, PmSource::TaskFinish],
            MailField::TotalWork => &[PmSource::AssignmentWork],
            MailField::ActualWork => &[PmSource::AssignmentActualWork],
            MailField::PercentComplete => &[
                PmSource::AssignmentPercentComplete,
                PmSource::TaskPercentComplete,
            ],
            MailField::Categories => &[PmSource::ProjectName],
        }
    }

    /// The default direction: both ways for actual work and percent complete, PM to mailbox for
    /// the rest.
    pub const fn default_direction(self) -> Direction {
        match self {
            MailField::ActualWork | MailField::PercentComplete => Direction::Both,
            _ => Direction::PmToMail,
        }
    }

    /// Whether the field may go both ways with `source`.
    ///
    /// Only fields whose mailbox value converts back to one PM assignment value without loss of
    /// meaning: start and due dates (the date changes, the PM time of day stays), actual work and
    /// percent complete, each when taken from the assignment (a status update changes one
    /// assignment, never its task). Not the subject (a template is not invertible), the body and
    /// importance (task-wide; importance has three levels for 1,001 priorities), total work
    /// (planning belongs to the PM side, which recomputes it from actual and remaining work)
    /// or the categories (the user's own).
    pub const fn can_be_both(self, source: PmSource) -> bool {
        matches!(
            (self, source),
            (MailField::StartDate, PmSource::AssignmentStart)
                | (MailField::DueDate, PmSource::AssignmentFinish)
                | (MailField::ActualWork, PmSource::AssignmentActualWork)
                | (
                    MailField::PercentComplete,
                    PmSource::AssignmentPercentComplete
                )
        )
    }
}

impl fmt::Display for MailField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a field is synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The PM side owns the field; a mailbox edit is reported and then overwritten.
    PmToMail,
    /// Either side may change the field; mailbox edits become task status updates.
    Both,
}

impl Direction {
    /// The configuration spelling, `pm-to-mail` or `both`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::PmToMail => "pm-to-mail",
            Direction::Both => "both",
        }
    }
}

/// The PM value a mailbox field is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PmSource {
    /// The subject template (`template`), over project, task and resource names.
    SubjectTemplate,
    /// The task's notes (`task.notes`).
    TaskNotes,
    /// The task's priority (`task.priority`).
    TaskPriority,
    /// The assignment's start (`assignment.start`).
    AssignmentStart,
    /// The task's start (`task.start`).
    TaskStart,
    /// The assignment's finish (`assignment.finish`).
    AssignmentFinish,
    /// The task's finish (`task.finish`).
    TaskFinish,
    /// The assignment's work (`assignment.work`).
    AssignmentWork,
    /// The assignment's actual work (`assignment.actual_work`).
    AssignmentActualWork,
    /// The assignment's percent work complete (`assignment.percent_work_complete`).
    AssignmentPercentComplete,
    /// The task's percent work complete (`task.percent_work_complete`).
    TaskPercentComplete,
    /// The project's name (`project.name`).
    ProjectName,
}

impl PmSource {
    const ALL: [PmSource; 12] = [
        PmSource::SubjectTemplate,
        PmSource::TaskNotes,
        PmSource::TaskPriority,
        PmSource::AssignmentStart,
        PmSource::TaskStart,
        PmSource::AssignmentFinish,
        PmSource::TaskFinish,
        PmSource::AssignmentWork,
        PmSource::AssignmentActualWork,
        PmSource::AssignmentPercentComplete,
        PmSource::TaskPercentComplete,
        PmSource::ProjectName,
    ];

    /// The configuration spelling, e.g. `assignment.finish`.
    pub const fn name(self) -> &'static str {
        match self {
            PmSource::SubjectTemplate => "template",
            PmSource::TaskNotes => "task.notes",
            PmSource::TaskPriority => "task.priority",
            PmSource::AssignmentStart => "assignment.start",
            PmSource::TaskStart => "task.start",
            PmSource::AssignmentFinish => "assignment.finish",
            PmSource::TaskFinish => "task.finish",
            PmSource::AssignmentWork => "assignment.work",
            PmSource::AssignmentActualWork => "assignment.actual_work",
            PmSource::AssignmentPercentComplete => "assignment.percent_work_complete",
            PmSource::TaskPercentComplete => "task.percent_work_complete",
            PmSource::ProjectName => "project.name",
        }
    }

    /// The source with this spelling.
    pub fn from_name(name: &str) -> Option<PmSource> {
        PmSource::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The assignment field a status update changes when a two-way field comes back.
    pub const fn assignment_field(self) -> Option<AssignmentField> {
        match self {
            PmSource::AssignmentStart => Some(AssignmentField::Start),
            PmSource::AssignmentFinish => Some(AssignmentField::Finish),
            PmSource::AssignmentActualWork => Some(AssignmentField::ActualWork),
            PmSource::AssignmentPercentComplete => Some(AssignmentField::PercentWorkComplete),
            PmSource::AssignmentWork => Some(AssignmentField::Work),
            _ => None,
        }
    }
}

impl fmt::Display for PmSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The default PropertySetId of the key tag: taskbridge's own, fixed for good, because items
/// already in mailboxes carry it.
pub const DEFAULT_KEY_PROPERTY_SET_ID: &str = "c11ff724-aa03-4555-9952-8fa248a11c3e";
/// The default name of the key tag property.
pub const DEFAULT_KEY_PROPERTY_NAME: &str = "taskbridge-key";
/// The default subject template.
pub const DEFAULT_SUBJECT_TEMPLATE: &str = "{project}: {task}";

/// The `[mapping]` section of `taskbridge.toml`, as written: checked by
/// [`FieldTable::from_config`].
///
/// ```toml
/// [mapping]
/// subject_template = "{project}: {task}"
/// importance_low_below = 500
/// importance_high_above = 500
/// key_property_set_id = "c11ff724-aa03-4555-9952-8fa248a11c3e"
/// key_property_name = "taskbridge-key"
///
/// [mapping.fields]
/// body = "off"                                               # drop a field
/// due_date = "both"                                          # change a direction
/// start_date = { direction = "pm-to-mail", source = "task.start" }
/// ```
///
/// Fields not named under `[mapping.fields]` keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingConfig {
    /// The subject template; placeholders `{project}`, `{task}`, `{resource}`, and `{{`/`}}`
    /// for literal braces.
    pub subject_template: String,
    /// Priorities below this are Low importance.
    pub importance_low_below: u16,
    /// Priorities above this are High importance.
    pub importance_high_above: u16,
    /// The PropertySetId GUID of the key tag.
    pub key_property_set_id: String,
    /// The property name of the key tag.
    pub key_property_name: String,
    /// Per-field overrides, by [`MailField::name`].
    pub fields: BTreeMap<String, FieldSetting>,
}

impl Default for MappingConfig {
    fn default() -> Self {
        let thresholds = ImportanceThresholds::default();
        MappingConfig {
            subject_template: DEFAULT_SUBJECT_TEMPLATE.to_owned(),
            importance_low_below: thresholds.low_below,
            importance_high_above: thresholds.high_above,
            key_property_set_id: DEFAULT_KEY_PROPERTY_SET_ID.to_owned(),
            key_property_name: DEFAULT_KEY_PROPERTY_NAME.to_owned(),
            fields: BTreeMap::new(),
        }
    }
}

/// One entry under `[mapping.fields]`: a direction (`"pm-to-mail"`, `"both"`, or `"off"` to
/// drop the field), or a table with `direction` and/or `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FieldSetting {
    /// Only the direction.
    Direction(String),
    /// Direction and source.
    Entry(FieldSpec),
}

// By hand rather than `untagged`, whose error ("data did not match any variant") says neither
// what is expected nor which key of the table is wrong.
impl<'de> Deserialize<'de> for FieldSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FieldSetting;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a direction (\"pm-to-mail\", \"both\" or \"off\") or a table with \
                     `direction` and `source`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldSetting, E> {
                Ok(FieldSetting::Direction(v.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FieldSetting, A::Error> {
                FieldSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FieldSetting::Entry)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The table form of a [`FieldSetting`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// `"pm-to-mail"`, `"both"` or `"off"`; default: the field's default.
    pub direction: Option<String>,
    /// A [`PmSource`] spelling; default: the field's default.
    pub source: Option<String>,
}

/// What is wrong with a `[mapping]` section.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MappingError {
    /// A key under `[mapping.fields]` that names no field.
    #[error("{entry}: unknown field; the fields are {known}")]
    UnknownField {
        /// The entry, e.g. `mapping.fields.due`.
        entry: String,
        /// The field names, for the message.
        known: String,
    },
    /// The key tag was to be dropped or made two-way.
    #[error("{entry}: the key tag is always written and cannot be {value:?}")]
    KeyTagRequired {
        /// The entry, `mapping.fields.key`.
        entry: String,
        /// The value given.
        value: String,
    },
    /// A direction that is not `pm-to-mail`, `both` or `off`.
    #[error("{entry}: unknown direction {value:?}; use \"pm-to-mail\", \"both\" or \"off\"")]
    UnknownDirection {
        /// The entry.
        entry: String,
        /// The value given.
        value: String,
    },
    /// `both` on a field (or source) that only goes PM to mailbox.
    #[error(
        "{entry}: {field} from {pm_source} can only go \"pm-to-mail\"; \"both\" is allowed for \
         start_date, due_date, actual_work and percent_complete taken from the assignment"
    )]
    BothNotAllowed {
        /// The entry.
        entry: String,
        /// The field.
        field: MailField,
        /// Its source (not `source`, which thiserror reserves for the cause).
        pm_source: PmSource,
    },
    /// A source that does not exist or does not fit the field.
    #[error("{entry}: {field} cannot come from {value:?}; it can come from {allowed}")]
    UnknownSource {
        /// The entry.
        entry: String,
        /// The field.
        field: MailField,
        /// The value given.
        value: String,
        /// The allowed sources, for the message.
        allowed: String,
    },
    /// A subject template that does not parse.
    #[error("{entry}: {reason}")]
    Template {
        /// The entry, `mapping.subject_template`.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// Importance thresholds out of range or crossed.
    #[error("{entry}: {reason}")]
    Thresholds {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A key tag PropertySetId that is not a GUID, or an empty property name.
    #[error("{entry}: {reason}")]
    KeyProperty {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

/// One row of the field table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldEntry {
    /// The mailbox field.
    pub field: MailField,
    /// The PM value it is made from.
    pub source: PmSource,
    /// Which way it syncs.
    pub direction: Direction,
}

/// A piece of a parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Project,
    Task,
    Resource,
}

/// A checked subject template: `{project}`, `{task}` and `{resource}` placeholders, `{{` and
/// `}}` for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl SubjectTemplate {
    /// The placeholders a template may use.
    pub const PLACEHOLDERS: [&'static str; 3] = ["{project}", "{task}", "{resource}"];

    /// Parses a template, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<SubjectTemplate, String> {
        if text.trim().is_empty() {
            return Err("the subject template is empty".to_owned());
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' at character {}", at + 1))?;
                    let name = &rest[..end];
                    let piece = match name {
                        "project" => Piece::Project,
                        "task" => Piece::Task,
                        "resource" => Piece::Resource,
                        _ => {
                            return Err(format!(
                                "unknown placeholder {{{name}}}; the placeholders are {}",
                                SubjectTemplate::PLACEHOLDERS.join(", ")
                            ));
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    // Skip the name and the closing brace.
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at character {}; write '}}}}' for a literal brace",
                        at + 1
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(SubjectTemplate {
            source: text.to_owned(),
            pieces,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The subject for these names: placeholders replaced, line breaks and other control
    /// characters turned into spaces (a subject is one line), and the ends trimmed.
    pub fn render(&self, project: &str, task: &str, resource: &str) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            out.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Project => project,
                Piece::Task => task,
                Piece::Resource => resource,
            });
        }
        let one_line: String = out
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        one_line.trim().to_owned()
    }
}

/// The checked field table: which fields are mapped, from where, in which direction, and the
/// conversion parameters. Built by [`FieldTable::from_config`]; [`FieldTable::default`] is the
/// table of an empty `[mapping]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTable {
    pub(super) entries: Vec<FieldEntry>,
    pub(super) subject: SubjectTemplate,
    pub(super) importance: ImportanceThresholds,
    pub(super) key_set: Uuid,
    pub(super) key_name: String,
}

impl Default for FieldTable {
    fn default() -> Self {
        FieldTable::from_config(&MappingConfig::default())
            .expect("the default mapping configuration is valid (tested)")
    }
}

impl FieldTable {
    /// Checks a `[mapping]` section and builds the table.
    ///
    /// Refused, naming the entry: an unknown field key, the key tag set to anything but
    /// `pm-to-mail`, an unknown direction, `both` where [`MailField::can_be_both`] says no, a
    /// source the field cannot take, a subject template with an unknown placeholder or a stray
    /// brace, thresholds above 1000 or with `importance_low_below > importance_high_above`
    /// (no priority would be Normal), a key PropertySetId that is not a GUID, and an empty key
    /// property name.
    pub fn from_config(config: &MappingConfig) -> Result<FieldTable, MappingError> {
        let mut entries: Vec<FieldEntry> = MailField::ALL
            .into_iter()
            .map(|field| FieldEntry {
                field,
                source: field.sources()[0],
                direction: field.default_direction(),
            })
            .collect();
        let mut dropped = Vec::new();
        for (key, setting) in &config.fields {
            let entry_name = format!("mapping.fields.{key}");
            let (direction, source) = match setting {
                FieldSetting::Direction(d) => (Some(d.as_str()), None),
                FieldSetting::Entry(spec) => (spec.direction.as_deref(), spec.source.as_deref()),
            };
            if key == "key" {
                match direction {
                    None | Some("pm-to-mail") if source.is_none() => continue,
                    _ => {
                        return Err(MappingError::KeyTagRequired {
                            entry: entry_name,
                            value: direction.or(source).unwrap_or_default().to_owned(),
                        });
                    }
                }
            }
            let field = MailField::from_name(key).ok_or_else(|| MappingError::UnknownField {
                entry: entry_name.clone(),
                known: MailField::ALL.map(MailField::name).join(", "),
            })?;
            let row = entries
                .iter_mut()
                .find(|e| e.field == field)
                .expect("every field has a default row");
            if let Some(source) = source {
                row.source = field
                    .sources()
                    .iter()
                    .copied()
                    .find(|s| s.name() == source)
                    .ok_or_else(|| MappingError::UnknownSource {
                        entry: entry_name.clone(),
                        field,
                        value: source.to_owned(),
                        allowed: field
                            .sources()
                            .iter()
                            .map(|s| format!("{:?}", s.name()))
                            .collect::<Vec<_>>()
                            .join(" or "),
                    })?;
            }
            match direction {
                None => {}
                Some("off") => dropped.push(field),
                Some("pm-to-mail") => row.direction = Direction::PmToMail,
                Some("both") => row.direction = Direction::Both,
                Some(other) => {
                    return Err(MappingError::UnknownDirection {
                        entry: entry_name,
                        value: other.to_owned(),
                    });
                }
            }
            // A source change alone can make a default `both` invalid (percent from the task).
            if row.direction == Direction::Both && !field.can_be_both(row.source) {
                return Err(MappingError::BothNotAllowed {
                    entry: entry_name,
                    field,
                    pm_source: row.source,
                });
            }
        }
        entries.retain(|e| !dropped.contains(&e.field));

        let subject = SubjectTemplate::parse(&config.subject_template).map_err(|reason| {
            MappingError::Template {
                entry: "mapping.subject_template".to_owned(),
                reason,
            }
        })?;

        let importance = ImportanceThresholds {
            low_below: config.importance_low_below,
            high_above: config.importance_high_above,
        };
        for (entry, value) in [
            ("mapping.importance_low_below", importance.low_below),
            ("mapping.importance_high_above", importance.high_above),
        ] {
            if value > crate::pm::Task::MAX_PRIORITY {
                return Err(MappingError::Thresholds {
                    entry: entry.to_owned(),
                    reason: format!("{value} is above the highest priority, 1000"),
                });
            }
        }
        if importance.low_below > importance.high_above {
            return Err(MappingError::Thresholds {
                entry: "mapping.importance_low_below".to_owned(),
                reason: format!(
                    "{} is above importance_high_above ({}), so no priority would be Normal",
                    importance.low_below, importance.high_above
                ),
            });
        }

        let key_set = Uuid::parse_str(config.key_property_set_id.trim()).map_err(|e| {
            MappingError::KeyProperty {
                entry: "mapping.key_property_set_id".to_owned(),
                reason: format!("{:?} is not a GUID: {e}", config.key_property_set_id),
            }
        })?;
        let key_name = config.key_property_name.trim();
        if key_name.is_empty() {
            return Err(MappingError::KeyProperty {
                entry: "mapping.key_property_name".to_owned(),
                reason: "the key property name is empty".to_owned(),
            });
        }

        Ok(FieldTable {
            entries,
            subject,
            importance,
            key_set,
            key_name: key_name.to_owned(),
        })
    }

    /// The mapped fields, in table order ([`MailField::ALL`] minus the dropped ones).
    pub fn entries(&self) -> &[FieldEntry] {
        &self.entries
    }

    /// The row of `field`, if it is mapped.
    pub fn entry(&self, field: MailField) -> Option<&FieldEntry> {
        self.entries.iter().find(|e| e.field == field)
    }

    /// Whether `field` is mapped.
    pub fn is_mapped(&self, field: MailField) -> bool {
        self.entry(field).is_some()
    }

    /// The direction of `field`, if it is mapped.
    pub fn direction(&self, field: MailField) -> Option<Direction> {
        self.entry(field).map(|e| e.direction)
    }

    /// The subject template.
    pub fn subject_template(&self) -> &SubjectTemplate {
        &self.subject
    }

    /// The importance thresholds.
    pub fn importance_thresholds(&self) -> ImportanceThresholds {
        self.importance
    }

    /// The key tag's PropertySetId.
    pub fn key_property_set_id(&self) -> Uuid {
        self.key_set
    }

    /// The key tag's property name.
    pub fn key_property_name(&self) -> &str {
        &self.key_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> MappingConfig {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            mapping: MappingConfig,
        }
        match toml::from_str::<File>(toml_text) {
            Ok(file) => file.mapping,
            Err(e) => panic!("test TOML does not parse: {e}"),
        }
    }

    fn table(toml_text: &str) -> Result<FieldTable, MappingError> {
        FieldTable::from_config(&config(toml_text))
    }

    fn refused(toml_text: &str) -> String {
        match table(toml_text) {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn field_table_default_maps_every_field() {
        let t = FieldTable::default();
        let rows: Vec<_> = t
            .entries()
            .iter()
            .map(|e| (e.field.name(), e.source.name(), e.direction.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("subject", "template", "pm-to-mail"),
                ("body", "task.notes", "pm-to-mail"),
                ("importance", "task.priority", "pm-to-mail"),
                ("start_date", "assignment.start", "pm-to-mail"),
                ("due_date", "assignment.finish", "pm-to-mail"),
                ("total_work", "assignment.work", "pm-to-mail"),
                ("actual_work", "assignment.actual_work", "both"),
                (
                    "percent_complete",
                    "assignment.percent_work_complete",
                    "both"
                ),
                ("categories", "project.name", "pm-to-mail"),
            ]
        );
        assert_eq!(t.subject_template().as_str(), "{project}: {task}");
        assert_eq!(t.importance_thresholds(), ImportanceThresholds::default());
        assert_eq!(
            t.key_property_set_id().to_string(),
            DEFAULT_KEY_PROPERTY_SET_ID
        );
        assert_eq!(t.key_property_name(), "taskbridge-key");
        assert_eq!(table(""), Ok(FieldTable::default()));
        assert_eq!(table("[mapping]"), Ok(FieldTable::default()));
    }

    #[test]
    fn field_table_drop_and_redirect_fields_applies_overrides() {
        let t = table(
            r#"
            [mapping]
            subject_template = "[{resource}] {task} ({project})"
            importance_low_below = 300
            importance_high_above = 700
            [mapping.fields]
            body = "off"
            categories = { direction = "off" }
            due_date = "both"
            start_date = { source = "task.start" }
            percent_complete = "pm-to-mail"
            "#,
        )
        .expect("valid");
        assert!(!t.is_mapped(MailField::Body));
        assert!(!t.is_mapped(MailField::Categories));
        assert_eq!(t.direction(MailField::DueDate), Some(Direction::Both));
        assert_eq!(
            t.direction(MailField::PercentComplete),
            Some(Direction::PmToMail)
        );
        assert_eq!(
            t.entry(MailField::StartDate).map(|e| e.source),
            Some(PmSource::TaskStart)
        );
        assert_eq!(t.entries().len(), 7);
        assert_eq!(
            t.importance_thresholds(),
            ImportanceThresholds {
                low_below: 300,
                high_above: 700
            }
        );
    }

    #[test]
    fn field_table_key_tag_drop_is_refused() {
        let message = refused("[mapping.fields]\nkey = \"off\"");
        assert_eq!(
            message,
            "mapping.fields.key: the key tag is always written and cannot be \"off\""
        );
        assert!(refused("[mapping.fields]\nkey = \"both\"").contains("mapping.fields.key"));
        assert!(table("[mapping.fields]\nkey = \"pm-to-mail\"").is_ok());
    }

    #[test]
    fn field_table_unknown_field_is_refused_by_name() {
        let message = refused("[mapping.fields]\ndue = \"both\"");
        assert!(
            message.starts_with("mapping.fields.due: unknown field"),
            "{message}"
        );
        assert!(message.contains("due_date"), "{message}");
    }

    #[test]
    fn field_table_unknown_direction_is_refused_by_name() {
        let message = refused("[mapping.fields]\nsubject = \"mail-to-pm\"");
        assert!(
            message.starts_with("mapping.fields.subject: unknown direction"),
            "{message}"
        );
    }

    #[test]
    fn field_table_both_on_pm_only_field_is_refused() {
        for field in ["subject", "body", "importance", "total_work", "categories"] {
            let message = refused(&format!("[mapping.fields]\n{field} = \"both\""));
            assert!(
                message.starts_with(&format!("mapping.fields.{field}: ")),
                "{message}"
            );
            assert!(message.contains("can only go \"pm-to-mail\""), "{message}");
        }
        // Task-level sources cannot go both ways either.
        let message = refused(
            "[mapping.fields]\nstart_date = { direction = \"both\", source = \"task.start\" }",
        );
        assert!(message.contains("start_date from task.start"), "{message}");
        // Changing only the source of a default two-way field is caught too.
        let message = refused(
            "[mapping.fields]\npercent_complete = { source = \"task.percent_work_complete\" }",
        );
        assert!(
            message.starts_with("mapping.fields.percent_complete"),
            "{message}"
        );
        assert!(table(
            "[mapping.fields]\npercent_complete = { direction = \"pm-to-mail\", source = \"task.percent_work_complete\" }"
        )
        .is_ok());
    }

    #[test]
    fn field_table_dates_may_go_both_ways() {
        let t =
            table("[mapping.fields]\nstart_date = \"both\"\ndue_date = \"both\"").expect("valid");
        assert_eq!(t.direction(MailField::StartDate), Some(Direction::Both));
        assert_eq!(t.direction(MailField::DueDate), Some(Direction::Both));
    }

    #[test]
    fn field_table_unknown_source_is_refused_with_choices() {
        let message = refused("[mapping.fields]\ndue_date = { source = \"task.start\" }");
        assert_eq!(
            message,
            "mapping.fields.due_date: due_date cannot come from \"task.start\"; it can come from \"assignment.finish\" or \"task.finish\""
        );
    }

    #[test]
    fn field_table_unknown_setting_key_is_refused_by_toml() {
        let message = |text: &str| match toml::from_str::<MappingConfig>(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        };
        let m = message("subjekt_template = \"x\"");
        assert!(m.contains("unknown field `subjekt_template`"), "{m}");
        let m = message("[fields]\nbody = { direction = \"off\", sauce = 1 }");
        assert!(m.contains("unknown field `sauce`"), "{m}");
        let m = message("[fields]\nbody = 3");
        assert!(m.contains("expected a direction"), "{m}");
        let m = message("importance_low_below = -1");
        assert!(m.contains("expected u16"), "{m}");
    }

    #[test]
    fn field_table_bad_thresholds_are_refused() {
        let message = refused("[mapping]\nimportance_high_above = 1001");
        assert!(
            message.starts_with("mapping.importance_high_above: 1001 is above"),
            "{message}"
        );
        let message = refused("[mapping]\nimportance_low_below = 600\nimportance_high_above = 400");
        assert!(
            message.starts_with("mapping.importance_low_below: 600"),
            "{message}"
        );
        assert!(
            table("[mapping]\nimportance_low_below = 501\nimportance_high_above = 500").is_err()
        );
        // A Normal band of one priority is fine (the default), and so is all of them.
        assert!(table("[mapping]\nimportance_low_below = 0\nimportance_high_above = 1000").is_ok());
    }

    #[test]
    fn field_table_bad_key_property_is_refused() {
        let message = refused("[mapping]\nkey_property_set_id = \"not-a-guid\"");
        assert!(
            message.starts_with("mapping.key_property_set_id: \"not-a-guid\" is not a GUID"),
            "{message}"
        );
        let message = refused("[mapping]\nkey_property_name = \"  \"");
        assert!(
            message.starts_with("mapping.key_property_name"),
            "{message}"
        );
    }

    #[test]
    fn subject_template_placeholders_render() {
        let t =
            SubjectTemplate::parse("{project}: {task} [{resource}] {{literal}}").expect("valid");
        assert_eq!(
            t.render("Apollo", "Design", "Ann"),
            "Apollo: Design [Ann] {literal}"
        );
        let t = SubjectTemplate::parse("{task}").expect("valid");
        assert_eq!(t.render("P", "  two\nlines\t", "R"), "two lines");
        let t = SubjectTemplate::parse("Ünïcödé {task}").expect("valid");
        assert_eq!(t.render("", "ok", ""), "Ünïcödé ok");
    }

    #[test]
    fn subject_template_unknown_placeholder_is_refused() {
        let message = refused("[mapping]\nsubject_template = \"{project}: {wbs} {task}\"");
        assert_eq!(
            message,
            "mapping.subject_template: unknown placeholder {wbs}; the placeholders are {project}, {task}, {resource}"
        );
    }

    #[test]
    fn subject_template_stray_braces_are_refused() {
        for bad in ["{task", "task}", "{}", "{ task }", "", "   "] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
