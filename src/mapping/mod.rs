//! The mapping between PM assignments and Exchange tasks: the one place where the PM and EWS
//! vocabularies meet: the mapping of attributes in steps "publish" and "write back" of the list
//! in the [`sync`](crate::sync) module doc, and the reverse mapping in step "status update".
//!
//! - [`FieldTable`] is the checked field table, built from the `[mapping]` section of the
//!   configuration ([`MappingConfig`]): for each [`MailField`] its PM source, its [`Direction`]
//!   and its conversion parameters, plus the key tag every item carries.
//! - [`MailValues`] are one task's values in mailbox terms: [`FieldTable::to_mail`] computes the
//!   state an item should be in from the PM side, [`FieldTable::from_task`] reads the state it
//!   is in; [`changed_fields`] and the [`ValueHash`]es compare them.
//! - [`FieldTable::new_task`] and [`FieldTable::updates`] turn values into CreateItem items and
//!   UpdateItem changes; [`FieldTable::status_update`] turns mailbox edits into a PM
//!   [`crate::pm::StatusUpdate`].
//! - [`convert`] holds the conversions (work minutes, dates in the owner's zone, status and
//!   percent, priority and importance), each stated once.
//!
//! Pure and synchronous: it depends on `ews` (wire types) and `pm` (the model) and nothing else,
//! and does no I/O. `docs/MAPPING.md` describes the table, the configuration and the pitfalls.

mod config;
pub mod convert;
mod table;
mod values;

pub use config::{
    DEFAULT_KEY_PROPERTY_NAME, DEFAULT_KEY_PROPERTY_SET_ID, DEFAULT_SUBJECT_TEMPLATE, Direction,
    FieldEntry, FieldSetting, FieldSpec, FieldTable, MailField, MappingConfig, MappingError,
    PmSource, SubjectTemplate,
};
pub use convert::{ImportanceThresholds, MailImportance, StatusNote};
pub use table::{Inbound, owner_zone};
pub use values::{MailValues, ParseValueHashError, ReadInfo, ValueHash, changed_fields};
