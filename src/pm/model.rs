//! The PM model: projects, tasks, resources and assignments with the meaning Microsoft Project's
//! data interchange format (MSPDI) gives them.
//!
//! Identity is always the MSPDI `UID` (never the row number `ID`), and one assignment (task x
//! resource) is the unit that becomes one mailbox task; [`Project::sync_units`] states which
//! assignments qualify. Dates are the zone-less local times MSPDI writes; [`Project::to_utc`] places
//! them on the time line.
//!
//! See <https://learn.microsoft.com/office-project/xml-data-interchange/project-element>.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// What can be wrong with a single model value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A duration string that is not an MSPDI/ISO 8601 duration we understand.
    #[error("invalid work duration {input:?}: {reason}")]
    InvalidWork {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A percentage outside `0..=100`.
    #[error("percent {value} is outside 0..=100")]
    PercentOutOfRange {
        /// The rejected value.
        value: i64,
    },
    /// Work that would be negative where only zero or more makes sense.
    #[error("work must not be negative, got {work}")]
    NegativeWork {
        /// The rejected value.
        work: Work,
    },
    /// A text that is not `<project-guid>:<assignment-uid>`.
    #[error("invalid assignment key {input:?}: {reason}")]
    InvalidAssignmentKey {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The project's GUID: together with an [`AssignmentUid`] it names one mailbox item for good.
///
/// MSPDI writes it as `GUID` under `Project` (Project 2010 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectGuid(pub Uuid);

impl fmt::Display for ProjectGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lower-case hyphenated, so that the tag written into mailboxes has exactly one spelling.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for ProjectGuid {
    type Err = uuid::Error;

    /// Accepts the forms `uuid` accepts, MSPDI's upper-case `HHHHHHHH-HHHH-...` and braced
    /// `{...}` included.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim()).map(ProjectGuid)
    }
}

macro_rules! uid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse().map($name)
            }
        }
    };
}

uid_newtype!(
    /// A task's MSPDI `UID`: stable for the life of the project, unlike the row number `ID`.
    TaskUid
);
uid_newtype!(
    /// A resource's MSPDI `UID`.
    ResourceUid
);
uid_newtype!(
    /// An assignment's MSPDI `UID`: half of the key of a mailbox item.
    AssignmentUid
);

impl TaskUid {
    /// Task UID 0 is the project summary task that Project writes for the project as a whole.
    pub const PROJECT_SUMMARY: TaskUid = TaskUid(0);
}

impl ResourceUid {
    /// The resource UID Project writes on an assignment that has no resource (`-65535`).
    pub const NONE: ResourceUid = ResourceUid(-65535);
}

/// An amount of work in whole seconds, negative allowed (MSPDI variances can be negative).
///
/// MSPDI writes work as an ISO 8601 duration in hours, minutes and seconds, `PT80H0M0S` for ten
/// 8-hour days: the hours are working hours, not calendar hours, so a "day" of work is whatever
/// `MinutesPerDay` says and never appears in the text. See [`Work::parse_mspdi`] for what is read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Work(i64);

impl Work {
    /// No work.
    pub const ZERO: Work = Work(0);

    /// Work of `seconds` seconds.
    pub const fn from_seconds(seconds: i64) -> Work {
        Work(seconds)
    }

    /// Work of `minutes` minutes, saturating at the ends of the `i64` range of seconds.
    pub const fn from_minutes(minutes: i64) -> Work {
        Work(minutes.saturating_mul(60))
    }

    /// Work of `hours` hours, saturating at the ends of the `i64` range of seconds.
    pub const fn from_hours(hours: i64) -> Work {
        Work(hours.saturating_mul(3600))
    }

    /// The work in seconds.
    pub const fn seconds(self) -> i64 {
        self.0
    }

    /// The work in whole minutes, rounded half away from zero: 90 s is 2 min, 89 s is 1 min and
    /// -90 s is -2 min, so that rounding a value and its negation give opposite results.
    pub const fn minutes_rounded(self) -> i64 {
        let whole = self.0 / 60;
        let rest = self.0 % 60;
        if rest >= 30 {
            whole + 1
        } else if rest <= -30 {
            whole - 1
        } else {
            whole
        }
    }

    /// The work in hours as a float, for display and ratios.
    pub fn hours_f64(self) -> f64 {
        self.0 as f64 / 3600.0
    }

    /// Whether this is no work at all.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + other`, saturating.
    pub const fn saturating_add(self, other: Work) -> Work {
        Work(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating.
    pub const fn saturating_sub(self, other: Work) -> Work {
        Work(self.0.saturating_sub(other.0))
    }

    /// Parses an MSPDI work duration.
    ///
    /// Accepted: `[-]P[nD][T[nH][nM][nS]]` with at least one component, such as `PT80H0M0S`,
    /// `PT7H30M`, `PT0H0M36S`, `-PT8H0M0S` and `P1DT2H`. Any of `H`, `M` and `S` may carry a
    /// decimal fraction (`PT1H0M0.5S`, `PT7.5H`); the total is rounded once, to the nearest whole
    /// second, half away from zero, and fraction digits past the ninth are ignored. A `D` is 24
    /// hours, as in ISO 8601; Project itself never writes days into work, because a working day's
    /// length is `MinutesPerDay`, not 24 hours. Years, months and weeks are rejected: their length
    /// is ambiguous. Surrounding whitespace is ignored.
    pub fn parse_mspdi(input: &str) -> Result<Work, ModelError> {
        parse_duration(input.trim()).map_err(|reason| ModelError::InvalidWork {
            input: input.to_owned(),
            reason,
        })
    }

    /// Formats as MSPDI does: `PT{hours}H{minutes}M{seconds}S`, with a leading `-` when negative.
    pub fn to_mspdi(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Work {
    /// The MSPDI form, `PT80H0M0S`; [`Work::parse_mspdi`] reads it back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        // unsigned_abs: i64::MIN has no positive i64 counterpart.
        let total = self.0.unsigned_abs();
        let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
        write!(f, "{sign}PT{h}H{m}M{s}S")
    }
}

impl FromStr for Work {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Work::parse_mspdi(s)
    }
}

/// Nanoseconds per second, the fixed-point scale the duration parser sums in.
const NANOS: i128 = 1_000_000_000;

fn parse_duration(text: &str) -> Result<Work, &'static str> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut rest = rest.strip_prefix('P').ok_or("does not start with 'P'")?;
    let mut total: i128 = 0;
    let mut components = 0;
    let mut in_time = false;
    // The units seen so far, largest first, so that out-of-order or repeated units are refused.
    let mut last_rank = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('T') {
            if in_time {
                return Err("more than one 'T'");
            }
            in_time = true;
            rest = after;
            if rest.is_empty() {
                return Err("nothing after 'T'");
            }
            continue;
        }
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("number without a unit")?;
        let (number, tail) = rest.split_at(digits_end);
        let mut chars = tail.chars();
        let unit = chars.next().ok_or("number without a unit")?;
        rest = chars.as_str();
        let (rank, seconds_per_unit) = match (in_time, unit) {
            (false, 'D') => (1, 86_400),
            (true, 'H') => (2, 3_600),
            (true, 'M') => (3, 60),
            (true, 'S') => (4, 1),
            (false, 'Y' | 'M' | 'W') => return Err("years, months and weeks are not work"),
            (false, 'H' | 'S') => return Err("hours, minutes and seconds must follow 'T'"),
            (true, 'D') => return Err("days must come before 'T'"),
            _ => return Err("unknown unit"),
        };
        if rank <= last_rank {
            return Err("units out of order or repeated");
        }
        last_rank = rank;
        if unit == 'D' && number.contains('.') {
            return Err("fractional days are not supported");
        }
        total = total
            .checked_add(component_nanos(number, seconds_per_unit)?)
            .ok_or("too large")?;
        components += 1;
    }
    if components == 0 {
        return Err("no components");
    }
    // Round half away from zero: the magnitude is rounded half up, then the sign applied.
    let seconds = (total + NANOS / 2) / NANOS;
    let seconds = if negative { -seconds } else { seconds };
    i64::try_from(seconds).map(Work).map_err(|_| "too large")
}

/// `number` (digits, optionally `.` and more digits) times `seconds_per_unit`, in nanoseconds.
fn component_nanos(number: &str, seconds_per_unit: i128) -> Result<i128, &'static str> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err("malformed number");
    }
    // At most 20 digits keeps the i128 arithmetic below exact; longer is garbage for work anyway.
    if whole.len() > 20 {
        return Err("too large");
    }
    let whole: i128 = whole.parse().map_err(|_| "malformed number")?;
    // Nine digits are nanoseconds of a second; more cannot move a whole-second rounding
    // except in contrived inputs, so they are dropped rather than refused.
    let fraction = &fraction[..fraction.len().min(9)];
    let scale = 10_i128.pow(u32::try_from(fraction.len()).map_err(|_| "malformed number")?);
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| "malformed number")?
    };
    let whole_nanos = whole
        .checked_mul(seconds_per_unit)
        .and_then(|v| v.checked_mul(NANOS))
        .ok_or("too large")?;
    // fraction / scale of a unit, in nanoseconds; exact because scale divides NANOS * 10^0..9.
    let fraction_nanos = fraction * seconds_per_unit * NANOS / scale;
    whole_nanos.checked_add(fraction_nanos).ok_or("too large")
}

/// A whole percentage, `0..=100`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct Percent(u8);

impl Percent {
    /// 0 %.
    pub const ZERO: Percent = Percent(0);
    /// 100 %.
    pub const FULL: Percent = Percent(100);

    /// `value` percent, or an error above 100.
    pub const fn new(value: u8) -> Result<Percent, ModelError> {
        if value <= 100 {
            Ok(Percent(value))
        } else {
            Err(ModelError::PercentOutOfRange {
                value: value as i64,
            })
        }
    }

    /// `value` percent from any integer, or an error outside `0..=100`.
    pub fn from_i64(value: i64) -> Result<Percent, ModelError> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Percent)
            .ok_or(ModelError::PercentOutOfRange { value })
    }

    /// The percentage as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Percent {
    type Error = ModelError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Percent::new(value)
    }
}

impl From<Percent> for u8 {
    fn from(value: Percent) -> Self {
        value.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A project as published by the PM side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// The project's GUID, the first half of every mailbox item's key.
    pub guid: ProjectGuid,
    /// The project's display name.
    pub name: String,
    /// The zone the project's zone-less dates are local to. MSPDI has no IANA zone, so this comes
    /// from configuration (see the importers).
    pub time_zone: Tz,
    /// Working minutes in a day (MSPDI `MinutesPerDay`, Project's default 480).
    pub minutes_per_day: u32,
    /// Working minutes in a week (MSPDI `MinutesPerWeek`, Project's default 2400).
    pub minutes_per_week: u32,
    /// The project start (MSPDI `StartDate`), if the file gives one.
    pub start: Option<NaiveDateTime>,
    /// All tasks, in file order, the project summary task (UID 0) included when present.
    pub tasks: Vec<Task>,
    /// All resources, in file order, the UID 0 placeholder and material/cost resources included.
    pub resources: Vec<Resource>,
    /// All assignments, in file order, those without a resource included.
    pub assignments: Vec<Assignment>,
}

/// A task.
///
/// See <https://learn.microsoft.com/office-project/xml-data-interchange/task-element>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// MSPDI `UID`.
    pub uid: TaskUid,
    /// MSPDI `Name`.
    pub name: String,
    /// MSPDI `Notes`, plain text; empty when there are none.
    pub notes: String,
    /// Scheduled start, local to the project's time zone.
    pub start: NaiveDateTime,
    /// Scheduled finish, local to the project's time zone.
    pub finish: NaiveDateTime,
    /// Total work of the task over all its assignments.
    pub work: Work,
    /// Project's priority, `0..=1000`, 500 by default.
    pub priority: u16,
    /// MSPDI `PercentWorkComplete` of the task.
    pub percent_work_complete: Percent,
    /// Whether this is a summary task (it rolls up its subtasks and gets no mailbox item).
    pub summary: bool,
    /// Whether this is a milestone.
    pub milestone: bool,
    /// Depth in the outline: 0 for the project summary task, 1 for top-level tasks.
    pub outline_level: u16,
}

impl Task {
    /// Project's default priority.
    pub const DEFAULT_PRIORITY: u16 = 500;
    /// Project's highest priority ("do not level").
    pub const MAX_PRIORITY: u16 = 1000;
}

/// A resource: a person with a mailbox, or a material, cost or placeholder resource without one.
///
/// See <https://learn.microsoft.com/office-project/xml-data-interchange/resource-element>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// MSPDI `UID`. UID 0 is a placeholder that Project writes in every file.
    pub uid: ResourceUid,
    /// MSPDI `Name`.
    pub name: String,
    /// MSPDI `EmailAddress`: the mailbox this resource's assignments go to. `None` for material,
    /// cost and placeholder resources and for people without an address.
    pub email: Option<String>,
    /// The resource's own time zone, when known (MSPDI has none; the JSON format may give one).
    pub time_zone: Option<Tz>,
}

/// A field of an assignment as the mailbox item shows it, for per-field change tracking.
///
/// Name, Notes and Priority belong to the task in the PM model, but every mailbox item of the
/// task shows them, so they are tracked per assignment like the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssignmentField {
    /// Assignment start.
    Start,
    /// Assignment finish.
    Finish,
    /// Total work.
    Work,
    /// Work done.
    ActualWork,
    /// Work left.
    RemainingWork,
    /// Percent of work complete.
    PercentWorkComplete,
    /// The task's name.
    Name,
    /// The task's notes.
    Notes,
    /// The task's priority.
    Priority,
}

impl AssignmentField {
    /// Every field, in declaration order.
    pub const ALL: [AssignmentField; 9] = [
        AssignmentField::Start,
        AssignmentField::Finish,
        AssignmentField::Work,
        AssignmentField::ActualWork,
        AssignmentField::RemainingWork,
        AssignmentField::PercentWorkComplete,
        AssignmentField::Name,
        AssignmentField::Notes,
        AssignmentField::Priority,
    ];
}

/// When each field of an assignment last changed on the PM side, in UTC.
///
/// A field without an entry has no known change time (an imported file carries none); the
/// conflict policy treats that as older than any mailbox change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldTimes(BTreeMap<AssignmentField, DateTime<Utc>>);

impl FieldTimes {
    /// No times known.
    pub fn new() -> FieldTimes {
        FieldTimes::default()
    }

    /// When `field` last changed, if known.
    pub fn get(&self, field: AssignmentField) -> Option<DateTime<Utc>> {
        self.0.get(&field).copied()
    }

    /// Records that `field` changed at `at`, replacing what was recorded.
    pub fn set(&mut self, field: AssignmentField, at: DateTime<Utc>) {
        self.0.insert(field, at);
    }

    /// Records that `field` changed at `at` unless a later change is already recorded, so that
    /// replaying an old event cannot move a field's time backwards.
    pub fn touch(&mut self, field: AssignmentField, at: DateTime<Utc>) {
        let entry = self.0.entry(field).or_insert(at);
        if *entry < at {
            *entry = at;
        }
    }

    /// The recorded times, by field.
    pub fn iter(&self) -> impl Iterator<Item = (AssignmentField, DateTime<Utc>)> + '_ {
        self.0.iter().map(|(field, at)| (*field, *at))
    }
}

/// One resource's share of one task: the unit that becomes one mailbox task.
///
/// See <https://learn.microsoft.com/office-project/xml-data-interchange/assignment-element>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// MSPDI `UID`.
    pub uid: AssignmentUid,
    /// The task (MSPDI `TaskUID`).
    pub task_uid: TaskUid,
    /// The resource (MSPDI `ResourceUID`); [`ResourceUid::NONE`] when there is none.
    pub resource_uid: ResourceUid,
    /// Scheduled start, local to the project's time zone.
    pub start: NaiveDateTime,
    /// Scheduled finish, local to the project's time zone.
    pub finish: NaiveDateTime,
    /// Total work; `actual_work + remaining_work` after any `apply_*`.
    pub work: Work,
    /// Work done.
    pub actual_work: Work,
    /// Work left.
    pub remaining_work: Work,
    /// Percent of work complete.
    pub percent_work_complete: Percent,
    /// When the work was finished (MSPDI `ActualFinish`), local to the project's time zone;
    /// `None` while the assignment is not complete. Set by a status update that completes the
    /// assignment; not a mailbox field of its own (its changes go with
    /// [`AssignmentField::PercentWorkComplete`]).
    #[serde(default)]
    pub actual_finish: Option<NaiveDateTime>,
    /// When each field last changed on the PM side.
    pub modified: FieldTimes,
}

impl Assignment {
    /// Records `actual` work done, keeping `actual + remaining = work` and the percentage in step.
    ///
    /// Remaining work becomes `work - actual`. Actual work beyond the planned work raises the work
    /// to match (as Project does when more hours are reported than planned) and leaves nothing
    /// remaining. The percentage follows [`percent_of`]; with zero work and zero actual work
    /// there is no ratio, and the percentage is left as it is (it is then a done/not-done flag,
    /// as for milestones). Returns the fields whose values changed, for the caller to stamp in
    /// [`Assignment::modified`].
    pub fn apply_actual_work(&mut self, actual: Work) -> Result<Vec<AssignmentField>, ModelError> {
        if actual < Work::ZERO {
            return Err(ModelError::NegativeWork { work: actual });
        }
        let before = self.snapshot();
        if actual > self.work {
            self.work = actual;
        }
        self.actual_work = actual;
        self.remaining_work = self.work.saturating_sub(actual);
        if !self.work.is_zero() {
            self.percent_work_complete = percent_of(actual, self.work);
        }
        Ok(self.changed_since(before))
    }

    /// Records `percent` of the work as done, keeping `actual + remaining = work`.
    ///
    /// Actual work becomes `work * percent / 100`, rounded to the nearest whole second (half away
    /// from zero), and kept strictly between 0 and `work` for percentages strictly between 0 and
    /// 100, so that 100 % and no remaining work always go together, and 0 % and no actual work.
    /// With zero work only the percentage changes. Returns the fields whose values changed.
    pub fn apply_percent(&mut self, percent: Percent) -> Vec<AssignmentField> {
        let before = self.snapshot();
        let work = i128::from(self.work.seconds().max(0));
        let p = i128::from(percent.get());
        // Half away from zero on a non-negative quantity is half up.
        let mut actual = (work * p + 50) / 100;
        if p < 100 {
            actual = actual.min(work - 1);
        }
        if p > 0 {
            actual = actual.max(1);
        }
        let actual = actual.clamp(0, work);
        // work came from an i64, and 0 <= actual <= work.
        let actual = Work(i64::try_from(actual).expect("actual work is bounded by an i64 work"));
        self.actual_work = actual;
        self.remaining_work = self.work.saturating_sub(actual).max(Work::ZERO);
        self.percent_work_complete = percent;
        self.changed_since(before)
    }

    fn snapshot(&self) -> (Work, Work, Work, Percent) {
        (
            self.work,
            self.actual_work,
            self.remaining_work,
            self.percent_work_complete,
        )
    }

    fn changed_since(&self, before: (Work, Work, Work, Percent)) -> Vec<AssignmentField> {
        let now = self.snapshot();
        let mut changed = Vec::new();
        if before.0 != now.0 {
            changed.push(AssignmentField::Work);
        }
        if before.1 != now.1 {
            changed.push(AssignmentField::ActualWork);
        }
        if before.2 != now.2 {
            changed.push(AssignmentField::RemainingWork);
        }
        if before.3 != now.3 {
            changed.push(AssignmentField::PercentWorkComplete);
        }
        changed
    }
}

/// `actual / work` as a whole percentage.
///
/// Rounded half away from zero, then kept in `1..=99` while `0 < actual < work`: 99.6 % of the
/// work done is reported as 99 %, because 100 % must mean nothing remains (a mailbox shows 100 %
/// as "completed"), and 0.4 % as 1 %, because work has started. Zero or negative work gives 0 %
/// unless actual work is positive, which gives 100 %.
pub fn percent_of(actual: Work, work: Work) -> Percent {
    let (actual, work) = (i128::from(actual.seconds()), i128::from(work.seconds()));
    if work <= 0 {
        return if actual > 0 {
            Percent::FULL
        } else {
            Percent::ZERO
        };
    }
    if actual <= 0 {
        return Percent::ZERO;
    }
    if actual >= work {
        return Percent::FULL;
    }
    let rounded = ((actual * 100 * 2 + work) / (work * 2)).clamp(1, 99);
    // clamped to 1..=99 just above
    Percent(u8::try_from(rounded).expect("clamped to 1..=99"))
}

/// The key of one mailbox item: the project and the assignment it shows.
///
/// Written into each mailbox item as `"{project-guid}:{assignment-uid}"`, which [`FromStr`] reads
/// back, so that a retry after a crash finds the item instead of creating a second one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct AssignmentKey {
    /// The project.
    pub project: ProjectGuid,
    /// The assignment within it.
    pub assignment: AssignmentUid,
}

impl fmt::Display for AssignmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.project, self.assignment)
    }
}

impl FromStr for AssignmentKey {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ModelError::InvalidAssignmentKey {
            input: s.to_owned(),
            reason,
        };
        let (guid, uid) = s.split_once(':').ok_or_else(|| invalid("no ':'"))?;
        let project = guid
            .parse::<ProjectGuid>()
            .map_err(|_| invalid("the project part is not a GUID"))?;
        // Strictly digits with an optional '-': the key is compared as text by the mailbox
        // search, so "+7" or " 7" must not be accepted as another spelling of 7.
        let digits = uid.strip_prefix('-').unwrap_or(uid);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the assignment part is not an integer"));
        }
        let assignment = uid
            .parse::<i64>()
            .map(AssignmentUid)
            .map_err(|_| invalid("the assignment part is not an integer"))?;
        Ok(AssignmentKey {
            project,
            assignment,
        })
    }
}

impl From<AssignmentKey> for String {
    fn from(key: AssignmentKey) -> Self {
        key.to_string()
    }
}

impl TryFrom<String> for AssignmentKey {
    type Error = ModelError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// An assignment that becomes one mailbox task, with the task and resource it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncUnit<'a> {
    /// The mailbox item's key.
    pub key: AssignmentKey,
    /// The assignment.
    pub assignment: &'a Assignment,
    /// Its task.
    pub task: &'a Task,
    /// Its resource.
    pub resource: &'a Resource,
    /// The resource's mailbox address, trimmed and non-empty.
    pub email: &'a str,
}

impl Project {
    /// The task with this UID.
    pub fn task(&self, uid: TaskUid) -> Option<&Task> {
        self.tasks.iter().find(|t| t.uid == uid)
    }

    /// The resource with this UID.
    pub fn resource(&self, uid: ResourceUid) -> Option<&Resource> {
        self.resources.iter().find(|r| r.uid == uid)
    }

    /// The assignment with this UID.
    pub fn assignment(&self, uid: AssignmentUid) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.uid == uid)
    }

    /// The assignment with this UID, for a status update.
    pub fn assignment_mut(&mut self, uid: AssignmentUid) -> Option<&mut Assignment> {
        self.assignments.iter_mut().find(|a| a.uid == uid)
    }

    /// The key of the mailbox item that shows `assignment`.
    pub fn key(&self, assignment: AssignmentUid) -> AssignmentKey {
        AssignmentKey {
            project: self.guid,
            assignment,
        }
    }

    /// The assignments that become one mailbox task each, in file order.
    ///
    /// An assignment qualifies when its task exists, is not the project summary task (UID 0) and
    /// is not a summary task (summary tasks roll up their subtasks' work; the subtasks' own
    /// assignments carry it), and its resource is not [`ResourceUid::NONE`], exists, and has a
    /// non-blank e-mail address (material, cost and placeholder resources have none; neither has
    /// a person nobody entered an address for). Milestones qualify: they have no work, but the
    /// resource still has to mark them done.
    pub fn sync_units(&self) -> Vec<SyncUnit<'_>> {
        // Indexed once: a project of tens of thousands of assignments must not be quadratic.
        let tasks: std::collections::HashMap<TaskUid, &Task> =
            self.tasks.iter().map(|t| (t.uid, t)).collect();
        let resources: std::collections::HashMap<ResourceUid, &Resource> =
            self.resources.iter().map(|r| (r.uid, r)).collect();
        self.assignments
            .iter()
            .filter_map(|assignment| {
                if assignment.resource_uid == ResourceUid::NONE
                    || assignment.task_uid == TaskUid::PROJECT_SUMMARY
                {
                    return None;
                }
                let task = tasks
                    .get(&assignment.task_uid)
                    .copied()
                    .filter(|t| !t.summary)?;
                let resource = resources.get(&assignment.resource_uid).copied()?;
                let email = resource.email.as_deref().map(str::trim)?;
                if email.is_empty() {
                    return None;
                }
                Some(SyncUnit {
                    key: self.key(assignment.uid),
                    assignment,
                    task,
                    resource,
                    email,
                })
            })
            .collect()
    }

    /// Places a project-local date on the time line.
    ///
    /// MSPDI dates carry no zone; they are wall-clock times in [`Project::time_zone`]. Twice a
    /// year that is not one instant, and the choice is fixed so that every run agrees:
    /// - a time that occurs twice (the hour repeated when clocks go back) is the earlier instant,
    ///   the one still on daylight-saving time;
    /// - a time that never occurs (the hour skipped when clocks go forward) is read with the
    ///   offset in force just before the gap, which lands as far after the gap as the time was
    ///   into it: 02:30 on a day that jumps from 02:00 to 03:00 becomes 03:30.
    ///
    /// Both are what `java.time.ZonedDateTime.ofLocal` and RFC 5545 (section 3.3.5) do.
    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        local_to_utc(self.time_zone, local)
    }
}

/// [`Project::to_utc`] for any zone.
pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, later) => earlier.min(later).with_timezone(&Utc),
        LocalResult::None => {
            // Offset transitions are months apart in practice, so the offset a day before the
            // gap is the one in force just before it.
            let offset_before = local.checked_sub_signed(TimeDelta::days(1)).map(|probe| {
                zone.offset_from_utc_datetime(&probe)
                    .fix()
                    .local_minus_utc()
            });
            let utc = offset_before
                .and_then(|secs| local.checked_sub_signed(TimeDelta::seconds(i64::from(secs))));
            // Only the very ends of chrono's date range fail above; reading those as UTC is as
            // good as any other answer.
            Utc.from_utc_datetime(&utc.unwrap_or(local))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, 0))
            .expect("valid test date")
    }

    fn assignment(work_hours: i64) -> Assignment {
        Assignment {
            uid: AssignmentUid(1),
            task_uid: TaskUid(1),
            resource_uid: ResourceUid(1),
            start: at(2026, 3, 2, 8, 0),
            finish: at(2026, 3, 6, 17, 0),
            work: Work::from_hours(work_hours),
            actual_work: Work::ZERO,
            remaining_work: Work::from_hours(work_hours),
            percent_work_complete: Percent::ZERO,
            actual_finish: None,
            modified: FieldTimes::new(),
        }
    }

    fn project(zone: Tz) -> Project {
        Project {
            guid: ProjectGuid(Uuid::nil()),
            name: "p".into(),
            time_zone: zone,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: vec![],
            resources: vec![],
            assignments: vec![],
        }
    }

    #[test]
    fn work_parse_mspdi_forms_give_seconds() {
        let cases = [
            ("PT80H0M0S", 80 * 3600),
            ("PT7H30M", 7 * 3600 + 30 * 60),
            ("PT0H0M36S", 36),
            ("PT1H0M0.5S", 3601),
            ("PT1H0M0.4999S", 3600),
            ("-PT8H0M0S", -8 * 3600),
            ("-PT0H0M0.5S", -1),
            ("P1DT2H", 26 * 3600),
            ("P2D", 48 * 3600),
            ("PT7.5H", 27_000),
            ("PT0.25M", 15),
            ("PT0S", 0),
            ("  PT8H0M0S\n", 8 * 3600),
            ("PT1000000H0M0S", 3_600_000_000),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                Work::parse_mspdi(text).map(Work::seconds),
                Ok(seconds),
                "{text}"
            );
        }
    }

    #[test]
    fn work_parse_mspdi_garbage_is_rejected() {
        let cases = [
            "",
            "P",
            "PT",
            "8H",
            "PT8",
            "PT8X",
            "pt8h",
            "PT8H8H",
            "PT30M8H",
            "P1M",
            "P1Y",
            "P1W",
            "PT-8H",
            "--PT8H",
            "PT8 H",
            "P1.5D",
            "PT.5H",
            "PT5.H",
            "PT1..5H",
            "P1H",
            "PTT8H",
            "PT8HT",
            "P1DT",
            "PT1D",
            "PT99999999999999999999999H",
            "PT8H0M0S garbage",
        ];
        for text in cases {
            assert!(
                matches!(Work::parse_mspdi(text), Err(ModelError::InvalidWork { .. })),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn work_display_writes_mspdi_form() {
        assert_eq!(Work::from_hours(80).to_string(), "PT80H0M0S");
        assert_eq!(Work::from_minutes(450).to_string(), "PT7H30M0S");
        assert_eq!(Work::from_seconds(36).to_mspdi(), "PT0H0M36S");
        assert_eq!(Work::from_seconds(-3661).to_string(), "-PT1H1M1S");
        assert_eq!(Work::ZERO.to_string(), "PT0H0M0S");
    }

    #[test]
    fn work_minutes_rounded_halves_go_away_from_zero() {
        assert_eq!(Work::from_seconds(90).minutes_rounded(), 2);
        assert_eq!(Work::from_seconds(89).minutes_rounded(), 1);
        assert_eq!(Work::from_seconds(-90).minutes_rounded(), -2);
        assert_eq!(Work::from_seconds(-89).minutes_rounded(), -1);
        assert_eq!(Work::from_seconds(29).minutes_rounded(), 0);
        assert_eq!(
            Work::from_seconds(i64::MIN).minutes_rounded(),
            i64::MIN / 60
        );
        assert_eq!(
            Work::from_seconds(i64::MAX).minutes_rounded(),
            i64::MAX / 60
        );
        assert!((Work::from_minutes(450).hours_f64() - 7.5).abs() < f64::EPSILON);
    }

    proptest! {
        #[test]
        fn work_display_parse_round_trips(seconds in any::<i64>()) {
            let work = Work::from_seconds(seconds);
            prop_assert_eq!(Work::parse_mspdi(&work.to_string()), Ok(work));
        }

        #[test]
        fn work_parse_components_sum_exactly(
            h in 0i64..1_000_000, m in 0i64..6000, s in 0i64..6000, negative: bool,
        ) {
            let text = format!("{}PT{h}H{m}M{s}S", if negative { "-" } else { "" });
            let magnitude = h * 3600 + m * 60 + s;
            let expected = if negative { -magnitude } else { magnitude };
            prop_assert_eq!(Work::parse_mspdi(&text).map(Work::seconds), Ok(expected));
        }
    }

    #[test]
    fn percent_new_above_100_is_rejected() {
        assert_eq!(Percent::new(100).map(Percent::get), Ok(100));
        assert_eq!(
            Percent::new(101),
            Err(ModelError::PercentOutOfRange { value: 101 })
        );
        assert!(Percent::from_i64(-1).is_err());
        assert!(serde_json::from_str::<Percent>("101").is_err());
        assert_eq!(
            serde_json::from_str::<Percent>("42").ok(),
            Percent::new(42).ok()
        );
    }

    #[test]
    fn assignment_key_display_parse_round_trips() {
        let key = AssignmentKey {
            project: "6F9619FF-8B86-D011-B42D-00C04FC964FF"
                .parse()
                .expect("valid guid"),
            assignment: AssignmentUid(42),
        };
        let text = key.to_string();
        assert_eq!(text, "6f9619ff-8b86-d011-b42d-00c04fc964ff:42");
        assert_eq!(text.parse::<AssignmentKey>(), Ok(key));
        let json = serde_json::to_string(&key).expect("serializes");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<AssignmentKey>(&json).ok(), Some(key));
    }

    #[test]
    fn assignment_key_malformed_is_rejected() {
        for text in [
            "",
            "42",
            "not-a-guid:42",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff:",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff:+42",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff: 42",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff:4:2",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff:99999999999999999999",
        ] {
            assert!(
                matches!(
                    text.parse::<AssignmentKey>(),
                    Err(ModelError::InvalidAssignmentKey { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn apply_actual_work_part_done_keeps_sum_and_percent() {
        let mut a = assignment(40);
        let changed = a.apply_actual_work(Work::from_hours(10)).expect("valid");
        assert_eq!(a.remaining_work, Work::from_hours(30));
        assert_eq!(a.percent_work_complete.get(), 25);
        assert_eq!(
            changed,
            vec![
                AssignmentField::ActualWork,
                AssignmentField::RemainingWork,
                AssignmentField::PercentWorkComplete
            ]
        );
    }

    #[test]
    fn apply_actual_work_beyond_work_raises_work() {
        let mut a = assignment(8);
        let changed = a.apply_actual_work(Work::from_hours(10)).expect("valid");
        assert_eq!(a.work, Work::from_hours(10));
        assert_eq!(a.remaining_work, Work::ZERO);
        assert_eq!(a.percent_work_complete, Percent::FULL);
        assert!(changed.contains(&AssignmentField::Work));
    }

    #[test]
    fn apply_actual_work_almost_done_stays_below_100() {
        let mut a = assignment(100);
        a.apply_actual_work(Work::from_seconds(100 * 3600 - 60))
            .expect("valid");
        assert_eq!(a.percent_work_complete.get(), 99);
        assert_eq!(a.remaining_work, Work::from_minutes(1));
        a.apply_actual_work(Work::from_minutes(1)).expect("valid");
        assert_eq!(a.percent_work_complete.get(), 1);
    }

    #[test]
    fn apply_actual_work_negative_is_rejected() {
        let mut a = assignment(8);
        assert!(matches!(
            a.apply_actual_work(Work::from_hours(-1)),
            Err(ModelError::NegativeWork { .. })
        ));
        assert_eq!(a, assignment(8));
    }

    #[test]
    fn apply_actual_work_zero_work_keeps_percent() {
        let mut a = assignment(0);
        a.percent_work_complete = Percent::FULL;
        let changed = a.apply_actual_work(Work::ZERO).expect("valid");
        assert!(changed.is_empty());
        assert_eq!(a.percent_work_complete, Percent::FULL);
    }

    #[test]
    fn apply_percent_half_sets_actual_and_remaining() {
        let mut a = assignment(15);
        let changed = a.apply_percent(Percent::new(50).expect("in range"));
        assert_eq!(a.actual_work, Work::from_minutes(450));
        assert_eq!(a.remaining_work, Work::from_minutes(450));
        assert_eq!(changed.len(), 3);
    }

    #[test]
    fn apply_percent_full_leaves_nothing_remaining() {
        let mut a = assignment(7);
        a.apply_percent(Percent::FULL);
        assert_eq!(a.actual_work, a.work);
        assert_eq!(a.remaining_work, Work::ZERO);
        a.apply_percent(Percent::ZERO);
        assert_eq!(a.actual_work, Work::ZERO);
        assert_eq!(a.remaining_work, a.work);
    }

    #[test]
    fn apply_percent_rounds_to_nearest_second() {
        // 1 % of 250 s is 2.5 s, rounded up to 3.
        let mut a = assignment(0);
        a.work = Work::from_seconds(250);
        a.apply_percent(Percent::new(1).expect("in range"));
        assert_eq!(a.actual_work, Work::from_seconds(3));
        assert_eq!(a.remaining_work, Work::from_seconds(247));
    }

    #[test]
    fn apply_percent_99_of_tiny_work_leaves_some_remaining() {
        let mut a = assignment(0);
        a.work = Work::from_seconds(10);
        a.apply_percent(Percent::new(99).expect("in range"));
        assert_eq!(a.actual_work, Work::from_seconds(9));
        assert_eq!(a.remaining_work, Work::from_seconds(1));
    }

    #[test]
    fn apply_percent_zero_work_sets_only_percent() {
        let mut a = assignment(0);
        let changed = a.apply_percent(Percent::FULL);
        assert_eq!(changed, vec![AssignmentField::PercentWorkComplete]);
        assert_eq!(a.actual_work, Work::ZERO);
        assert_eq!(a.remaining_work, Work::ZERO);
    }

    #[test]
    fn percent_of_rounds_half_up_within_bounds() {
        let p = |a, w| percent_of(Work::from_seconds(a), Work::from_seconds(w)).get();
        assert_eq!(p(1, 8), 13); // 12.5 % rounds up
        assert_eq!(p(1, 3), 33);
        assert_eq!(p(2, 3), 67);
        assert_eq!(p(995, 1000), 99);
        assert_eq!(p(1, 1000), 1);
        assert_eq!(p(0, 1000), 0);
        assert_eq!(p(1000, 1000), 100);
        assert_eq!(p(5, 0), 100);
        assert_eq!(p(0, 0), 0);
    }

    #[test]
    fn field_times_touch_never_moves_backwards() {
        let early = Utc
            .with_ymd_and_hms(2026, 3, 2, 8, 0, 0)
            .single()
            .expect("valid");
        let late = Utc
            .with_ymd_and_hms(2026, 3, 3, 8, 0, 0)
            .single()
            .expect("valid");
        let mut times = FieldTimes::new();
        times.touch(AssignmentField::Work, late);
        times.touch(AssignmentField::Work, early);
        assert_eq!(times.get(AssignmentField::Work), Some(late));
        times.set(AssignmentField::Work, early);
        assert_eq!(times.get(AssignmentField::Work), Some(early));
        assert_eq!(times.get(AssignmentField::Notes), None);
        let json = serde_json::to_string(&times).expect("serializes");
        assert_eq!(json, r#"{"Work":"2026-03-02T08:00:00Z"}"#);
        assert_eq!(serde_json::from_str::<FieldTimes>(&json).ok(), Some(times));
    }

    #[test]
    fn to_utc_ordinary_time_uses_zone_offset() {
        let p = project(chrono_tz::Europe::Berlin);
        assert_eq!(
            p.to_utc(at(2026, 1, 15, 9, 0)),
            Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0)
                .single()
                .expect("valid")
        );
    }

    #[test]
    fn to_utc_repeated_hour_takes_earlier_instant() {
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
        let p = project(chrono_tz::Europe::Berlin);
        assert_eq!(
            p.to_utc(at(2026, 10, 25, 2, 30)),
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0)
                .single()
                .expect("valid")
        );
    }

    #[test]
    fn to_utc_skipped_hour_moves_forward_by_gap() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST, so 02:30 never happens.
        let p = project(chrono_tz::Europe::Berlin);
        let utc = p.to_utc(at(2026, 3, 29, 2, 30));
        assert_eq!(
            utc,
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0)
                .single()
                .expect("valid")
        );
        assert_eq!(
            utc.with_timezone(&chrono_tz::Europe::Berlin).naive_local(),
            at(2026, 3, 29, 3, 30)
        );
    }

    fn sample_project() -> Project {
        let mut p = project(Tz::UTC);
        let task = |uid, summary| Task {
            uid: TaskUid(uid),
            name: format!("t{uid}"),
            notes: String::new(),
            start: at(2026, 3, 2, 8, 0),
            finish: at(2026, 3, 2, 17, 0),
            work: Work::from_hours(8),
            priority: Task::DEFAULT_PRIORITY,
            percent_work_complete: Percent::ZERO,
            summary,
            milestone: false,
            outline_level: 1,
        };
        p.tasks = vec![task(0, true), task(1, true), task(2, false)];
        let resource = |uid, email: Option<&str>| Resource {
            uid: ResourceUid(uid),
            name: format!("r{uid}"),
            email: email.map(str::to_owned),
            time_zone: None,
        };
        p.resources = vec![
            resource(0, None),
            resource(1, Some("ann@example.com")),
            resource(2, Some("   ")),
            resource(3, None),
        ];
        let link = |uid, task, res| Assignment {
            uid: AssignmentUid(uid),
            task_uid: TaskUid(task),
            resource_uid: ResourceUid(res),
            ..assignment(8)
        };
        p.assignments = vec![
            link(1, 0, 1),      // project summary task
            link(2, 1, 1),      // summary task
            link(3, 2, 1),      // the one that syncs
            link(4, 2, -65535), // no resource
            link(5, 2, 2),      // blank address
            link(6, 2, 3),      // no address
            link(7, 2, 0),      // placeholder resource
            link(8, 9, 1),      // unknown task
            link(9, 2, 9),      // unknown resource
        ];
        p
    }

    #[test]
    fn sync_units_mixed_assignments_keeps_only_mailbox_ones() {
        let p = sample_project();
        let units = p.sync_units();
        let uids: Vec<_> = units.iter().map(|u| u.assignment.uid).collect();
        assert_eq!(uids, vec![AssignmentUid(3)]);
        assert_eq!(units[0].email, "ann@example.com");
        assert_eq!(units[0].task.uid, TaskUid(2));
        assert_eq!(units[0].key, p.key(AssignmentUid(3)));
    }

    #[test]
    fn project_lookups_by_uid_find_items() {
        let mut p = sample_project();
        assert_eq!(p.task(TaskUid(2)).map(|t| t.name.as_str()), Some("t2"));
        assert!(p.task(TaskUid(5)).is_none());
        assert_eq!(
            p.resource(ResourceUid(1)).and_then(|r| r.email.as_deref()),
            Some("ann@example.com")
        );
        assert_eq!(
            p.assignment(AssignmentUid(4)).map(|a| a.resource_uid),
            Some(ResourceUid::NONE)
        );
        if let Some(a) = p.assignment_mut(AssignmentUid(3)) {
            a.apply_percent(Percent::FULL);
        }
        assert_eq!(
            p.assignment(AssignmentUid(3)).map(|a| a.remaining_work),
            Some(Work::ZERO)
        );
    }
}
