//! The compact binary form of a [`Baseline`], as the SQLite store keeps it.
//!
//! Every row a publish or a pass reads carries a baseline: nine values and up to eighteen
//! change times. As JSON a typical one took 320 bytes without change times and 730 with the
//! PM's nine, and reading it (serde_json, and chrono's format-driven parser for each time) was
//! a fifth of an unchanged publish's instructions; this form takes 102 and 219 bytes and is
//! read without parsing text. Rows written before it hold JSON text, which the store still
//! reads (the column's type tells the two apart), so nothing stored is lost; a row is written in
//! this form the next time it changes.
//!
//! Layout, all integers little-endian, lengths as LEB128 varints:
//! ```text
//! version (1)          0x01
//! zone                 string (the IANA name)
//! present (2)          bit i set when the i-th optional value below is present
//! subject, body        string, each when present
//! importance           u8: 0 low, 1 normal, 2 high, when present
//! start, due           i32 days since 0001-01-01 (CE), each when present
//! total, actual work   i32 minutes, each when present
//! percent              u8, when present
//! status note          u8: 0 waiting on others, 1 deferred, when present
//! categories           varint count, then each a string
//! pm_changed           varint count, then each: u8 field, i64 seconds, u32 nanoseconds
//! mail_changed         the same
//! ```
//! A string is a varint byte length and UTF-8. Field codes are [`MailField::ALL`]'s order and
//! never change meaning: a new field takes the next code. Reading never panics: a short,
//! unknown or trailing byte is a [`CodecError`].

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use super::Baseline;
use crate::mapping::{MailField, MailImportance, MailValues, StatusNote};
use crate::pm::Percent;

/// The first byte of the form; another value is an unknown (newer) form.
const VERSION: u8 = 1;

/// Why stored bytes are not a baseline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binary baseline: {0}")]
pub struct CodecError(&'static str);

/// The baseline in the binary form.
pub(crate) fn encode(baseline: &Baseline) -> Vec<u8> {
    let v = &baseline.values;
    let mut out = Vec::with_capacity(96 + v.subject.as_ref().map_or(0, String::len));
    out.push(VERSION);
    put_str(&mut out, v.zone.name());
    let present = [
        v.subject.is_some(),
        v.body.is_some(),
        v.importance.is_some(),
        v.start_date.is_some(),
        v.due_date.is_some(),
        v.total_work.is_some(),
        v.actual_work.is_some(),
        v.percent_complete.is_some(),
        v.status_note.is_some(),
    ]
    .iter()
    .enumerate()
    .fold(0u16, |bits, (i, &set)| bits | (u16::from(set) << i));
    out.extend_from_slice(&present.to_le_bytes());
    if let Some(s) = &v.subject {
        put_str(&mut out, s);
    }
    if let Some(s) = &v.body {
        put_str(&mut out, s);
    }
    if let Some(i) = v.importance {
        out.push(match i {
            MailImportance::Low => 0,
            MailImportance::Normal => 1,
            MailImportance::High => 2,
        });
    }
    for date in [v.start_date, v.due_date].into_iter().flatten() {
        out.extend_from_slice(&date.num_days_from_ce().to_le_bytes());
    }
    for minutes in [v.total_work, v.actual_work].into_iter().flatten() {
        out.extend_from_slice(&minutes.to_le_bytes());
    }
    if let Some(p) = v.percent_complete {
        out.push(p.get());
    }
    if let Some(n) = v.status_note {
        out.push(match n {
            StatusNote::WaitingOnOthers => 0,
            StatusNote::Deferred => 1,
        });
    }
    put_len(&mut out, v.categories.len());
    for c in &v.categories {
        put_str(&mut out, c);
    }
    for times in [&baseline.pm_changed, &baseline.mail_changed] {
        put_len(&mut out, times.len());
        for (field, at) in times {
            out.push(field_code(*field));
            out.extend_from_slice(&at.timestamp().to_le_bytes());
            out.extend_from_slice(&at.timestamp_subsec_nanos().to_le_bytes());
        }
    }
    out
}

/// The baseline of bytes [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<Baseline, CodecError> {
    let mut r = Reader::new(bytes)?;
    let zone = r.zone()?;
    let present = u16::from_le_bytes(r.array()?);
    let has = |i: u16| present & (1 << i) != 0;
    if present >> 9 != 0 {
        return Err(CodecError("unknown optional value"));
    }
    let subject = if has(0) { Some(r.string()?) } else { None };
    let body = if has(1) { Some(r.string()?) } else { None };
    let importance = if has(2) {
        Some(match r.byte()? {
            0 => MailImportance::Low,
            1 => MailImportance::Normal,
            2 => MailImportance::High,
            _ => return Err(CodecError("unknown importance")),
        })
    } else {
        None
    };
    let start_date = if has(3) { Some(r.date()?) } else { None };
    let due_date = if has(4) { Some(r.date()?) } else { None };
    let total_work = if has(5) { Some(r.i32()?) } else { None };
    let actual_work = if has(6) { Some(r.i32()?) } else { None };
    let percent_complete = if has(7) {
        Some(Percent::new(r.byte()?).map_err(|_| CodecError("percent above 100"))?)
    } else {
        None
    };
    let status_note = if has(8) {
        Some(match r.byte()? {
            0 => StatusNote::WaitingOnOthers,
            1 => StatusNote::Deferred,
            _ => return Err(CodecError("unknown status note")),
        })
    } else {
        None
    };
    let count = r.len()?;
    let mut categories = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        categories.push(r.string()?);
    }
    let pm_changed = r.times()?;
    let mail_changed = r.times()?;
    if !r.rest.is_empty() {
        return Err(CodecError("bytes after the end"));
    }
    Ok(Baseline {
        values: MailValues {
            zone,
            subject,
            body,
            importance,
            start_date,
            due_date,
            total_work,
            actual_work,
            percent_complete,
            status_note,
            categories,
            read: None,
        },
        pm_changed,
        mail_changed,
    })
}

/// Only the zone of bytes [`encode`] wrote (it comes first), for listing a mailbox's items
/// without reading whole baselines.
pub(crate) fn decode_zone(bytes: &[u8]) -> Result<Tz, CodecError> {
    Reader::new(bytes)?.zone()
}

fn field_code(field: MailField) -> u8 {
    match field {
        MailField::Subject => 0,
        MailField::Body => 1,
        MailField::Importance => 2,
        MailField::StartDate => 3,
        MailField::DueDate => 4,
        MailField::TotalWork => 5,
        MailField::ActualWork => 6,
        MailField::PercentComplete => 7,
        MailField::Categories => 8,
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, CodecError> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { rest }),
            Some(_) => Err(CodecError("unknown version")),
            None => Err(CodecError("empty")),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError("cut short"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(CodecError("length too large"))?;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(CodecError("length too large"))
    }

    fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError("text not UTF-8"))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        self.str().map(str::to_owned)
    }

    fn zone(&mut self) -> Result<Tz, CodecError> {
        self.str()?.parse().map_err(|_| CodecError("unknown zone"))
    }

    fn date(&mut self) -> Result<NaiveDate, CodecError> {
        NaiveDate::from_num_days_from_ce_opt(self.i32()?).ok_or(CodecError("date out of range"))
    }

    fn times(&mut self) -> Result<BTreeMap<MailField, DateTime<Utc>>, CodecError> {
        let count = self.len()?;
        let mut times = BTreeMap::new();
        for _ in 0..count {
            let code = self.byte()?;
            let field = *MailField::ALL
                .iter()
                .find(|f| field_code(**f) == code)
                .ok_or(CodecError("unknown field"))?;
            let secs = i64::from_le_bytes(self.array()?);
            let nanos = u32::from_le_bytes(self.array()?);
            let at =
                DateTime::from_timestamp(secs, nanos).ok_or(CodecError("time out of range"))?;
            times.insert(field, at);
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn values() -> impl Strategy<Value = MailValues> {
        (
            (
                prop::sample::select(vec![
                    Tz::UTC,
                    Tz::Europe__Berlin,
                    Tz::America__Argentina__Buenos_Aires,
                ]),
                prop::option::of("\\PC{0,40}"),
                prop::option::of("(\\PC|\n){0,200}"),
                prop::option::of(prop::sample::select(vec![
                    MailImportance::Low,
                    MailImportance::Normal,
                    MailImportance::High,
                ])),
                prop::option::of(-800_000i32..3_000_000),
                prop::option::of(-800_000i32..3_000_000),
            ),
            (
                prop::option::of(any::<i32>()),
                prop::option::of(any::<i32>()),
                prop::option::of(0u8..=100),
                prop::option::of(prop::sample::select(vec![
                    StatusNote::WaitingOnOthers,
                    StatusNote::Deferred,
                ])),
                prop::collection::vec("\\PC{0,20}", 0..4),
            ),
        )
            .prop_map(
                |(
                    (zone, subject, body, importance, start, due),
                    (total_work, actual_work, percent, status_note, categories),
                )| MailValues {
                    zone,
                    subject,
                    body,
                    importance,
                    start_date: start.and_then(NaiveDate::from_num_days_from_ce_opt),
                    due_date: due.and_then(NaiveDate::from_num_days_from_ce_opt),
                    total_work,
                    actual_work,
                    percent_complete: percent.and_then(|p| Percent::new(p).ok()),
                    status_note,
                    categories,
                    read: None,
                },
            )
    }

    fn times() -> impl Strategy<Value = BTreeMap<MailField, DateTime<Utc>>> {
        prop::collection::btree_map(
            prop::sample::select(MailField::ALL.to_vec()),
            (-62_000_000_000i64..250_000_000_000, 0u32..1_000_000_000)
                .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range")),
            0..10,
        )
    }

    proptest! {
        /// Every baseline reads back equal, its JSON form too (the reading of old rows), and
        /// the binary form is the smaller.
        #[test]
        fn baselines_read_back_equal(values in values(), pm in times(), mail in times()) {
            let baseline = Baseline { values, pm_changed: pm, mail_changed: mail };
            let bytes = encode(&baseline);
            prop_assert_eq!(decode(&bytes), Ok(baseline.clone()));
            prop_assert_eq!(decode_zone(&bytes), Ok(baseline.values.zone));
            let json = serde_json::to_string(&baseline).expect("json");
            prop_assert!(bytes.len() < json.len());
        }

        /// A cut, an extended or a bent form is an error or some baseline, never a panic.
        #[test]
        fn damaged_forms_never_panic(
            values in values(),
            pm in times(),
            cut in 0usize..400,
            at in 0usize..400,
            bit in 0u8..8,
        ) {
            let baseline = Baseline { values, pm_changed: pm, mail_changed: BTreeMap::new() };
            let bytes = encode(&baseline);
            if cut < bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(decode(&longer), Err(CodecError("bytes after the end")));
            let mut bent = bytes.clone();
            let i = at % bent.len();
            bent[i] ^= 1 << bit;
            let _ = decode(&bent);
        }
    }

    #[test]
    fn unknown_versions_codes_and_values_are_refused() {
        let baseline = Baseline::new(MailValues::empty(Tz::UTC));
        let bytes = encode(&baseline);
        assert_eq!(bytes, [VERSION, 3, b'U', b'T', b'C', 0, 0, 0, 0, 0]);
        for (bytes, why) in [
            (vec![], "empty"),
            (vec![b'{'], "unknown version"),
            (
                vec![VERSION, 3, b'U', b'T', b'C', 0, 2, 0, 0, 0],
                "unknown optional value",
            ),
            (
                vec![VERSION, 3, b'X', b'X', b'X', 0, 0, 0, 0, 0],
                "unknown zone",
            ),
            (
                vec![VERSION, 3, b'U', b'T', b'C', 0x80, 0, 101, 0, 0, 0],
                "percent above 100",
            ),
            (
                vec![VERSION, 3, b'U', b'T', b'C', 0, 0, 0, 1, 9],
                "unknown field",
            ),
        ] {
            assert_eq!(decode(&bytes), Err(CodecError(why)), "{bytes:?}");
        }
    }
}
