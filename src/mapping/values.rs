//! The mailbox-side values of one task, their comparison and their hashes.
//!
//! Two [`MailValues`] are compared field by field through one canonical byte encoding per field
//! ([`MailValues::field_hash`] hashes exactly what [`changed_fields`] compares), so "changed"
//! and "hash differs" can never disagree.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::MailField;
use super::convert::{MailImportance, StatusNote, status_for_percent};
use crate::ews::types::{ItemId, TaskStatus};
use crate::pm::{Percent, UpdateSource};

/// The values of one mailbox task, in mailbox terms.
///
/// Built from the PM side by [`super::FieldTable::to_mail`] (the state the mailbox should be in)
/// or read from an item by [`super::FieldTable::from_task`] (the state it is in). A field that is
/// not in the field table is always `None` (or empty), on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailValues {
    /// The mailbox owner's zone, the zone the dates are in. Not a field: never compared or
    /// hashed.
    pub zone: Tz,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Body` text, line breaks as `\n`, trailing whitespace trimmed; `None` when empty.
    pub body: Option<String>,
    /// `Importance`.
    pub importance: Option<MailImportance>,
    /// `StartDate`, as a date in [`MailValues::zone`].
    pub start_date: Option<NaiveDate>,
    /// `DueDate`, as a date in [`MailValues::zone`].
    pub due_date: Option<NaiveDate>,
    /// `TotalWork`, whole minutes, never negative.
    pub total_work: Option<i32>,
    /// `ActualWork`, whole minutes, never negative.
    pub actual_work: Option<i32>,
    /// `PercentComplete`, with Completed, `IsComplete` and `CompleteDate` read as 100.
    pub percent_complete: Option<Percent>,
    /// `WaitingOnOthers` or `Deferred` when the item says so. Its own thing: never compared as
    /// part of the percentage (see [`MailValues::status_note_changed`]), never written, never a
    /// change of a PM value; reported on the status update and kept in the baseline.
    pub status_note: Option<StatusNote>,
    /// `Categories`, in the mailbox's order. Compared and hashed as a set.
    pub categories: Vec<String>,
    /// What only a read item has: id, change key, LastModifiedTime, status as read. `None` for
    /// values built from the PM side. Not a field: never compared or hashed.
    #[serde(skip)]
    pub read: Option<ReadInfo>,
}

/// What an item read from a mailbox says about itself, beyond the mapped fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInfo {
    /// The item's id and change key.
    pub item_id: Option<ItemId>,
    /// When the mailbox last changed the item.
    pub last_modified_time: Option<DateTime<Utc>>,
    /// `Status` exactly as read (WaitingOnOthers and Deferred included).
    pub status: Option<TaskStatus>,
    /// `CompleteDate` as read: when the owner completed the task.
    pub complete_date: Option<DateTime<Utc>>,
}

impl ReadInfo {
    /// Where a status update built from these values comes from, for
    /// [`super::FieldTable::status_update`]; `None` when the item was read without its id,
    /// change key or LastModifiedTime (the shape of [`super::FieldTable::item_shape`] has all
    /// three).
    pub fn update_source(&self, mailbox: &str) -> Option<UpdateSource> {
        let item_id = self.item_id.as_ref()?;
        Some(UpdateSource {
            mailbox: mailbox.to_owned(),
            item_id: item_id.id.as_str().to_owned(),
            change_key: item_id.change_key.as_ref()?.as_str().to_owned(),
            modified_at: self.last_modified_time?,
        })
    }
}

impl MailValues {
    /// No values, in `zone`.
    pub fn empty(zone: Tz) -> MailValues {
        MailValues {
            zone,
            subject: None,
            body: None,
            importance: None,
            start_date: None,
            due_date: None,
            total_work: None,
            actual_work: None,
            percent_complete: None,
            status_note: None,
            categories: Vec::new(),
            read: None,
        }
    }

    /// The status Exchange derives from the percentage (NotStarted, InProgress, Completed).
    pub fn status(&self) -> Option<TaskStatus> {
        self.percent_complete.map(status_for_percent)
    }

    /// Whether the status note differs between `self` and `other`. The note is decided on its
    /// own, never as part of the percentage.
    pub fn status_note_changed(&self, other: &MailValues) -> bool {
        self.status_note != other.status_note
    }

    /// The canonical encoding of one field's value: what comparison sees.
    ///
    /// The hash encoding ([`MailValues::field_hash`]) without the status note: the percentage
    /// alone is compared, so that a note never reads as a change of the percentage.
    pub fn encode_field(&self, field: MailField) -> Vec<u8> {
        let mut out = self.encode_hashed(field);
        if field == MailField::PercentComplete {
            // Drop the note text (8-byte length + bytes) that follows the percentage.
            let note = self.status_note.map(StatusNote::as_str).unwrap_or("");
            out.truncate(out.len() - 8 - note.len());
        }
        out
    }

    /// Whether `field` has the same value in `self` and `other`: exactly when their
    /// [`MailValues::encode_field`]s are equal (the encoding is one-to-one), without building
    /// them. A publish asks this of every field of every unchanged assignment.
    pub fn same_field(&self, other: &MailValues, field: MailField) -> bool {
        match field {
            MailField::Subject => self.subject == other.subject,
            MailField::Body => self.body == other.body,
            MailField::Importance => self.importance == other.importance,
            MailField::StartDate => self.start_date == other.start_date,
            MailField::DueDate => self.due_date == other.due_date,
            MailField::TotalWork => self.total_work == other.total_work,
            MailField::ActualWork => self.actual_work == other.actual_work,
            MailField::PercentComplete => self.percent_complete == other.percent_complete,
            MailField::Categories => {
                self.categories == other.categories
                    || category_set(&self.categories) == category_set(&other.categories)
            }
        }
    }

    /// The encoding the hashes see. Version 1, fixed for good (hashes are stored): `None` is
    /// the byte 0, a value is the byte 1 followed by its encoding; a text is its UTF-8 length
    /// as 8 big-endian bytes then the bytes; a date is the text `YYYY-MM-DD`; minutes are 8
    /// big-endian bytes (two's complement); importance is the text `Low`/`Normal`/`High`;
    /// percent is one byte, then the status note as a text (`""`, `WaitingOnOthers`,
    /// `Deferred`); categories are sorted, duplicates removed, and written as a count (8 bytes)
    /// then each text.
    fn encode_hashed(&self, field: MailField) -> Vec<u8> {
        let mut out = Vec::new();
        match field {
            MailField::Subject => opt(&mut out, self.subject.as_deref(), text),
            MailField::Body => opt(&mut out, self.body.as_deref(), text),
            MailField::Importance => {
                opt(&mut out, self.importance.map(MailImportance::as_str), text)
            }
            MailField::StartDate => opt(&mut out, self.start_date, date),
            MailField::DueDate => opt(&mut out, self.due_date, date),
            MailField::TotalWork => opt(&mut out, self.total_work, int),
            MailField::ActualWork => opt(&mut out, self.actual_work, int),
            MailField::PercentComplete => {
                opt(&mut out, self.percent_complete, |out, p| out.push(p.get()));
                text(
                    &mut out,
                    self.status_note.map(StatusNote::as_str).unwrap_or(""),
                );
            }
            MailField::Categories => {
                let set = category_set(&self.categories);
                out.extend_from_slice(&(set.len() as u64).to_be_bytes());
                for c in set {
                    text(&mut out, c);
                }
            }
        }
        out
    }

    /// The hash of one field's value: SHA-256 over `taskbridge/mapping/v1`, the field's
    /// [`MailField::name`] and its version 1 encoding (the percentage with its status note),
    /// each followed by a zero byte.
    /// Stable across runs, platforms and versions; a new encoding would get a new version tag.
    pub fn field_hash(&self, field: MailField) -> ValueHash {
        let mut h = Sha256::new();
        h.update(HASH_VERSION.as_bytes());
        h.update([0]);
        h.update(field.name().as_bytes());
        h.update([0]);
        h.update(self.encode_hashed(field));
        ValueHash(h.finalize().into())
    }

    /// The hash of all fields: SHA-256 over `taskbridge/mapping/v1/all` and, for each field of
    /// [`MailField::ALL`] in order, its name, a zero byte and its [`MailValues::field_hash`].
    /// Equal hashes mean no field differs.
    pub fn hash(&self) -> ValueHash {
        let mut h = Sha256::new();
        h.update(HASH_VERSION.as_bytes());
        h.update(b"/all");
        h.update([0]);
        for field in MailField::ALL {
            h.update(field.name().as_bytes());
            h.update([0]);
            h.update(self.field_hash(field).0);
        }
        ValueHash(h.finalize().into())
    }
}

const HASH_VERSION: &str = "taskbridge/mapping/v1";

fn opt<T>(out: &mut Vec<u8>, value: Option<T>, encode: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            encode(out, v);
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn date(out: &mut Vec<u8>, d: NaiveDate) {
    // By hand for years 0 to 9999 (chrono's `%Y-%m-%d` walks a format description and
    // allocates); the bytes are the same, as a test checks, since hashes are stored.
    let (year, month, day) = (d.year(), d.month(), d.day());
    match u32::try_from(year) {
        Ok(year) if year <= 9999 => {
            let digit = |n: u32| b'0' + (n % 10) as u8;
            let bytes = [
                digit(year / 1000),
                digit(year / 100),
                digit(year / 10),
                digit(year),
                b'-',
                digit(month / 10),
                digit(month),
                b'-',
                digit(day / 10),
                digit(day),
            ];
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        _ => text(out, &d.format("%Y-%m-%d").to_string()),
    }
}

fn int(out: &mut Vec<u8>, minutes: i32) {
    out.extend_from_slice(&i64::from(minutes).to_be_bytes());
}

/// Categories as the set they stand for: sorted, without duplicates.
pub(super) fn category_set(categories: &[String]) -> Vec<&str> {
    let mut set: Vec<&str> = categories.iter().map(String::as_str).collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// The fields whose values differ between `a` and `b`, in [`MailField::ALL`] order.
///
/// A field differs exactly when its [`MailValues::encode_field`] differs, and then its
/// [`MailValues::field_hash`] differs too: categories are compared as sets, the percentage
/// without the status note (which [`MailValues::status_note_changed`] compares, and the
/// hashes see), and the zone and read-only information not at all.
pub fn changed_fields(a: &MailValues, b: &MailValues) -> Vec<MailField> {
    MailField::ALL
        .into_iter()
        .filter(|f| !a.same_field(b, *f))
        .collect()
}

/// A SHA-256 hash of mapped values, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ValueHash(pub [u8; 32]);

impl ValueHash {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ValueHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of 64 digits: two hashes are written with every stored row.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ValueHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueHash({self})")
    }
}

/// A text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a value hash (64 hex digits): {0:?}")]
pub struct ParseValueHashError(pub String);

impl FromStr for ValueHash {
    type Err = ParseValueHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseValueHashError(s.to_owned());
        if s.len() != 64 || !s.is_ascii() {
            return Err(err());
        }
        // By hand: two hashes are read with every stored row.
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *b = (nibble(pair[0]).ok_or_else(err)? << 4) | nibble(pair[1]).ok_or_else(err)?;
        }
        Ok(ValueHash(bytes))
    }
}

impl From<ValueHash> for String {
    fn from(h: ValueHash) -> Self {
        h.to_string()
    }
}

impl TryFrom<String> for ValueHash {
    type Error = ParseValueHashError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MailValues {
        MailValues {
            subject: Some("Apollo: Design review".into()),
            body: Some("Check the draft".into()),
            importance: Some(MailImportance::High),
            start_date: NaiveDate::from_ymd_opt(2026, 3, 2),
            due_date: NaiveDate::from_ymd_opt(2026, 3, 6),
            total_work: Some(450),
            actual_work: Some(90),
            percent_complete: Percent::new(20).ok(),
            status_note: None,
            categories: vec!["Apollo".into()],
            ..MailValues::empty(chrono_tz::Europe::Berlin)
        }
    }

    #[test]
    fn hash_known_values_are_fixed_forever() {
        // Golden values, checked against an independent implementation of the documented
        // encoding (a few lines of Python with hashlib). If these change, every stored baseline
        // looks changed: never update them; add a new encoding version instead.
        let v = sample();
        assert_eq!(
            v.hash().to_string(),
            "58d68b64adeb2e36d93a3987f15dbe738f1780d68790fdfb031113303953fa80"
        );
        assert_eq!(
            MailValues::empty(Tz::UTC)
                .field_hash(MailField::Subject)
                .to_string(),
            "988bf8d3344336e96186ad22e6177afb951837da841c19bf331bcd4b66d873b7"
        );
    }

    #[test]
    fn hash_ignores_zone_read_info_and_category_order() {
        let a = sample();
        let mut b = sample();
        b.zone = chrono_tz::Pacific::Auckland;
        b.read = Some(ReadInfo {
            item_id: Some(ItemId::new("AAMk1", None)),
            last_modified_time: None,
            status: Some(TaskStatus::InProgress),
            complete_date: None,
        });
        b.categories = vec!["Apollo".into(), "Apollo".into()];
        assert_eq!(a.hash(), b.hash());
        assert!(changed_fields(&a, &b).is_empty());
        b.categories = vec!["Red".into(), "Apollo".into()];
        let mut c = sample();
        c.categories = vec!["Apollo".into(), "Red".into()];
        assert_eq!(b.hash(), c.hash());
    }

    /// Values from small domains, so that two drawn independently often agree in a field.
    fn small_values() -> impl proptest::strategy::Strategy<Value = MailValues> {
        use proptest::prelude::*;
        let pick = |v: Vec<&'static str>| prop::option::of(prop::sample::select(v));
        (
            (
                pick(vec!["", "a", "b"]),
                pick(vec!["x", "y"]),
                prop::option::of(prop::sample::select(vec![
                    MailImportance::Low,
                    MailImportance::Normal,
                    MailImportance::High,
                ])),
                prop::option::of(738_000i32..738_003),
                prop::option::of(738_000i32..738_003),
            ),
            (
                prop::option::of(-1i32..2),
                prop::option::of(0i32..2),
                prop::option::of(0u8..2),
                prop::option::of(prop::sample::select(vec![
                    StatusNote::WaitingOnOthers,
                    StatusNote::Deferred,
                ])),
                prop::collection::vec(prop::sample::select(vec!["A", "B"]), 0..3),
            ),
        )
            .prop_map(
                |((subject, body, importance, start, due), (total, actual, pct, note, cats))| {
                    MailValues {
                        subject: subject.map(str::to_owned),
                        body: body.map(str::to_owned),
                        importance,
                        start_date: start.and_then(NaiveDate::from_num_days_from_ce_opt),
                        due_date: due.and_then(NaiveDate::from_num_days_from_ce_opt),
                        total_work: total,
                        actual_work: actual,
                        percent_complete: pct.and_then(|p| Percent::new(p).ok()),
                        status_note: note,
                        categories: cats.into_iter().map(str::to_owned).collect(),
                        ..MailValues::empty(Tz::UTC)
                    }
                },
            )
    }

    proptest::proptest! {
        /// Comparing values field by field says what comparing their encodings says.
        #[test]
        fn same_field_agrees_with_the_encodings(a in small_values(), b in small_values()) {
            for field in MailField::ALL {
                proptest::prop_assert_eq!(
                    a.same_field(&b, field),
                    a.encode_field(field) == b.encode_field(field),
                    "{:?}", field
                );
            }
        }

        /// The hand-written date encoding is the text chrono writes, for every year.
        #[test]
        fn dates_encode_as_chrono_writes_them(days in -1_000_000i32..4_000_000) {
            let d = NaiveDate::from_num_days_from_ce_opt(days).expect("in range");
            let mut fast = Vec::new();
            date(&mut fast, d);
            let mut slow = Vec::new();
            text(&mut slow, &d.format("%Y-%m-%d").to_string());
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn changed_fields_one_field_differs_names_it() {
        let a = sample();
        let mut b = sample();
        b.due_date = NaiveDate::from_ymd_opt(2026, 3, 9);
        assert_eq!(changed_fields(&a, &b), vec![MailField::DueDate]);
        assert_ne!(
            a.field_hash(MailField::DueDate),
            b.field_hash(MailField::DueDate)
        );
        assert_eq!(
            a.field_hash(MailField::Subject),
            b.field_hash(MailField::Subject)
        );
        assert_ne!(a.hash(), b.hash());
        // A status note is not a change of the percentage; the hashes still see it.
        let mut c = sample();
        c.status_note = Some(StatusNote::Deferred);
        assert_eq!(changed_fields(&a, &c), Vec::<MailField>::new());
        assert!(a.status_note_changed(&c));
        assert_ne!(a.hash(), c.hash());
        let mut d = sample();
        d.body = None;
        assert_eq!(changed_fields(&a, &d), vec![MailField::Body]);
    }

    #[test]
    fn hash_none_and_empty_text_differ() {
        let mut a = MailValues::empty(Tz::UTC);
        let b = MailValues::empty(Tz::UTC);
        a.subject = Some(String::new());
        assert_ne!(
            a.field_hash(MailField::Subject),
            b.field_hash(MailField::Subject)
        );
    }

    #[test]
    fn value_hash_text_round_trips() {
        let h = sample().hash();
        let text = h.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ValueHash>(), Ok(h));
        let json = serde_json::to_string(&h).expect("serializes");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ValueHash>(&json).ok(), Some(h));
        assert!("abc".parse::<ValueHash>().is_err());
        assert!("zz".repeat(32).parse::<ValueHash>().is_err());
        assert!(format!("+{}", &text[1..]).parse::<ValueHash>().is_err());
        assert!(format!("{}g", &text[..63]).parse::<ValueHash>().is_err());
        assert_eq!(text.to_uppercase().parse::<ValueHash>(), Ok(h));
    }

    #[test]
    fn read_info_update_source_needs_id_key_and_time() {
        use chrono::TimeZone;
        let at = Utc
            .with_ymd_and_hms(2026, 3, 4, 9, 0, 0)
            .single()
            .expect("valid");
        let mut read = ReadInfo {
            item_id: Some(ItemId::new("AAMk1", Some("CK2".into()))),
            last_modified_time: Some(at),
            status: None,
            complete_date: None,
        };
        assert_eq!(
            read.update_source("ann@example.com"),
            Some(UpdateSource {
                mailbox: "ann@example.com".into(),
                item_id: "AAMk1".into(),
                change_key: "CK2".into(),
                modified_at: at,
            })
        );
        read.last_modified_time = None;
        assert_eq!(read.update_source("ann@example.com"), None);
        read.last_modified_time = Some(at);
        read.item_id = Some(ItemId::new("AAMk1", None));
        assert_eq!(read.update_source("ann@example.com"), None);
    }

    #[test]
    fn mail_values_json_round_trips_without_read_info() {
        let mut v = sample();
        v.read = Some(ReadInfo {
            item_id: None,
            last_modified_time: None,
            status: None,
            complete_date: None,
        });
        let json = serde_json::to_string(&v).expect("serializes");
        let back: MailValues = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, MailValues { read: None, ..v });
    }
}
