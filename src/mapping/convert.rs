//! The value conversions between PM units and mailbox units, one function per rule.
//!
//! Each rule is stated once here and tested at its boundaries; `docs/MAPPING.md` repeats them for
//! readers who do not read Rust.
//!
//! - **Work**: PM work is whole seconds, mailbox work (`TotalWork`, `ActualWork`) whole minutes.
//!   See [`work_to_minutes`] and [`minutes_to_work`].
//! - **Dates**: `StartDate` and `DueDate` are calendar dates at the first instant (local midnight)
//!   of the mailbox owner's zone, which Exchange keeps as a UTC instant. Dates are compared as
//!   dates, never as instants. See [`pm_to_mail_date`], [`mail_date_to_utc`],
//!   [`mail_date_from_utc`] and [`pm_with_mail_date`].
//! - **Percent and status**: see [`percent_from_wire`], [`status_for_percent`] and
//!   [`read_completion`].
//! - **Priority to importance**: see [`ImportanceThresholds`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ews::types::{Importance, TaskStatus};
use crate::pm::{Percent, Work, local_to_utc};

/// PM work as whole mailbox minutes.
///
/// Rounded to the nearest minute, half away from zero ([`Work::minutes_rounded`]): 29 s is
/// 0 min, 30 s is 1 min, 7 h 30 min 29 s is 450 min. Negative work (which only MSPDI variances
/// have) is written as 0, and work beyond `i32::MAX` minutes (about 4,000 years) as `i32::MAX`,
/// because the wire type is a 32-bit integer.
pub fn work_to_minutes(work: Work) -> i32 {
    let minutes = work.minutes_rounded().clamp(0, i64::from(i32::MAX));
    i32::try_from(minutes).expect("clamped to the i32 range just above")
}

/// Mailbox minutes as PM work, exactly (60 s per minute).
///
/// The way back loses nothing; only [`work_to_minutes`] rounds. A PM value is replaced by a
/// mailbox value only when the minutes differ, so seconds the PM side keeps survive a round trip.
pub fn minutes_to_work(minutes: i32) -> Work {
    Work::from_minutes(i64::from(minutes))
}

/// The calendar date in the mailbox owner's zone on which a PM date-time falls.
///
/// PM date-times are wall-clock times in the project's zone. When the owner's zone is the
/// project's, the date is the PM date as written, whatever the zone's DST rules do to the time.
/// Otherwise the PM time is placed on the time line ([`local_to_utc`]: a repeated hour is its
/// earlier instant, a skipped one is moved forward by the gap) and its date read in the owner's
/// zone: a finish at 17:00 in Berlin is the next day for an owner in Auckland.
pub fn pm_to_mail_date(project_zone: Tz, local: NaiveDateTime, owner_zone: Tz) -> NaiveDate {
    if project_zone == owner_zone {
        return local.date();
    }
    local_to_utc(project_zone, local)
        .with_timezone(&owner_zone)
        .date_naive()
}

/// The instant Exchange keeps for a mailbox date: the first instant of `date` in `zone`.
///
/// That is local midnight, except where midnight does not exist because clocks jump forward at
/// midnight (Sao Paulo until 2019, Havana, Beirut): there it is the end of the gap, 01:00.
/// Where midnight occurs twice, the earlier one is taken. A date that does not exist at all in
/// the zone (Samoa skipped 2011-12-30) has no first instant; the instant after the gap is
/// returned, which reads back as the following date.
pub fn mail_date_to_utc(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    local_to_utc(zone, date.and_time(NaiveTime::MIN))
}

/// The mailbox date an Exchange `StartDate` or `DueDate` instant stands for.
///
/// Three forms are read, in this order:
/// 1. the first instant of a date in `zone` ([`mail_date_to_utc`]): what taskbridge writes and
///    what Exchange returns for an item set in the owner's zone; that date;
/// 2. midnight UTC: the "floating" form some clients write (local midnight stored as if it
///    were UTC, as MAPI's `PidLidTaskDueDate` is); the UTC date. In a zone at UTC+13 this is
///    13:00 local on the intended date, in UTC-10 it is 14:00 on the day before, so reading it
///    by its local date would move the date one way or the other;
/// 3. anything else (a client that got the zone or its DST wrong by an hour or two): the date
///    whose first instant is nearest, the earlier one on a tie.
///
/// The first two cannot both match unless the zone is at UTC+0, where they agree.
pub fn mail_date_from_utc(zone: Tz, at: DateTime<Utc>) -> NaiveDate {
    let date = at.with_timezone(&zone).date_naive();
    let start = mail_date_to_utc(zone, date);
    if at == start {
        return date;
    }
    if at.time() == NaiveTime::MIN {
        return at.date_naive();
    }
    let Some(next) = date.succ_opt() else {
        return date;
    };
    let to_start = (at - start).abs();
    let to_next = (mail_date_to_utc(zone, next) - at).abs();
    if to_next < to_start { next } else { date }
}

/// The date an Exchange `CompleteDate` stands for, in the owner's `zone`.
///
/// Outlook writes the completion as a date (one of the forms [`mail_date_from_utc`] reads), but
/// Exchange, completing a task itself, writes the instant it did so. A date form lies on a
/// whole half hour (local or floating midnight, or one off by a DST hour); an instant of the
/// day almost never does, and its date is simply its local date: a task completed at 12:17 in
/// Berlin was completed that day, whichever midnight is nearer.
pub fn mail_completion_date(zone: Tz, at: DateTime<Utc>) -> NaiveDate {
    let on_a_half_hour = at.timestamp().rem_euclid(1800) == 0 && at.timestamp_subsec_nanos() == 0;
    if on_a_half_hour {
        mail_date_from_utc(zone, at)
    } else {
        at.with_timezone(&zone).date_naive()
    }
}

/// A PM date-time moved to the mailbox date `date`, keeping its time of day in the owner's zone.
///
/// This is how a date edited in the mailbox goes back to the PM side: a due date moved from
/// Friday to Monday keeps the PM finish time (17:00 stays 17:00). With the owner in the
/// project's zone the result is simply `date` at the PM time. Otherwise the time of day is the
/// owner's: the PM instant is read in the owner's zone, moved to `date` there, and converted back
/// to a project-local time, so that [`pm_to_mail_date`] of the result is `date` again. That holds
/// unless the owner's time of day falls into a DST gap on `date` (it is then moved forward by the
/// gap, as [`local_to_utc`] does).
pub fn pm_with_mail_date(
    project_zone: Tz,
    local: NaiveDateTime,
    owner_zone: Tz,
    date: NaiveDate,
) -> NaiveDateTime {
    if project_zone == owner_zone {
        return date.and_time(local.time());
    }
    let owner_time = local_to_utc(project_zone, local)
        .with_timezone(&owner_zone)
        .time();
    local_to_utc(owner_zone, date.and_time(owner_time))
        .with_timezone(&project_zone)
        .naive_local()
}

/// The status Exchange derives from a percentage: 0 is NotStarted, 100 Completed, anything in
/// between InProgress.
///
/// taskbridge writes only `PercentComplete` and lets Exchange derive `Status` and
/// `CompleteDate`: "in a request that sets at least two of these properties, the last processed
/// property will determine the value" (see
/// <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/status>).
pub fn status_for_percent(percent: Percent) -> TaskStatus {
    match percent.get() {
        0 => TaskStatus::NotStarted,
        100 => TaskStatus::Completed,
        _ => TaskStatus::InProgress,
    }
}

/// A wire `PercentComplete` (a double) as a whole percentage.
///
/// Rounded half up, then kept in `1..=99` when strictly between 0 and 100, the rule of
/// [`crate::pm::percent_of`]: 99.6 is 99, because 100 means completed, and 0.4 is 1, because
/// work has started. Below 0 is 0, above 100 is 100, and NaN is no value.
pub fn percent_from_wire(value: f64) -> Option<Percent> {
    if value.is_nan() {
        return None;
    }
    let whole = if value <= 0.0 {
        0
    } else if value >= 100.0 {
        100
    } else {
        // In (0, 100): the cast cannot overflow, and the clamp keeps partial work partial.
        ((value + 0.5).floor() as u8).clamp(1, 99)
    };
    Percent::new(whole).ok()
}

/// `WaitingOnOthers` or `Deferred`: a status that says something a percentage cannot.
///
/// Neither changes the PM percentage; they are reported next to the status update as a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StatusNote {
    /// The owner is waiting on someone else.
    WaitingOnOthers,
    /// The owner has put the task off.
    Deferred,
}

impl StatusNote {
    /// The note for a status, if it is one that carries a note.
    pub fn from_status(status: &TaskStatus) -> Option<StatusNote> {
        match status {
            TaskStatus::WaitingOnOthers => Some(StatusNote::WaitingOnOthers),
            TaskStatus::Deferred => Some(StatusNote::Deferred),
            _ => None,
        }
    }

    /// The EWS status name, `WaitingOnOthers` or `Deferred`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusNote::WaitingOnOthers => "WaitingOnOthers",
            StatusNote::Deferred => "Deferred",
        }
    }
}

impl std::fmt::Display for StatusNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The completion-related elements of a `t:Task` as read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Completion<'a> {
    /// `Status`.
    pub status: Option<&'a TaskStatus>,
    /// `PercentComplete`.
    pub percent_complete: Option<f64>,
    /// `IsComplete` (read-only on the wire).
    pub is_complete: Option<bool>,
    /// Whether `CompleteDate` is present.
    pub has_complete_date: bool,
}

/// The percentage and status note that a task's completion elements stand for.
///
/// Exchange keeps `Status`, `PercentComplete` and `CompleteDate` coupled, so on a real server they
/// agree; this reads them in an order that gives the same answer whichever a response carries:
/// 1. `Status` Completed or `IsComplete` true: 100;
/// 2. otherwise `PercentComplete` when present ([`percent_from_wire`]);
/// 3. otherwise a `CompleteDate` with neither `Status` nor `IsComplete` saying otherwise: 100;
/// 4. otherwise `Status` NotStarted: 0; anything else: no value.
///
/// `WaitingOnOthers` and `Deferred` become the note and leave the percentage as read: they say
/// nothing about how much is done.
pub fn read_completion(c: Completion<'_>) -> (Option<Percent>, Option<StatusNote>) {
    let note = c.status.and_then(StatusNote::from_status);
    let completed = matches!(c.status, Some(TaskStatus::Completed)) || c.is_complete == Some(true);
    if completed {
        return (Some(Percent::FULL), note);
    }
    if let Some(percent) = c.percent_complete.and_then(percent_from_wire) {
        return (Some(percent), note);
    }
    if c.has_complete_date && c.status.is_none() && c.is_complete.is_none() {
        return (Some(Percent::FULL), note);
    }
    let percent = matches!(c.status, Some(TaskStatus::NotStarted)).then_some(Percent::ZERO);
    (percent, note)
}

/// A mailbox importance, the three levels EWS defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MailImportance {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
}

impl MailImportance {
    /// The wire value.
    pub fn to_wire(self) -> Importance {
        match self {
            MailImportance::Low => Importance::Low,
            MailImportance::Normal => Importance::Normal,
            MailImportance::High => Importance::High,
        }
    }

    /// The level a wire value names; `None` for a value this version does not know.
    pub fn from_wire(importance: &Importance) -> Option<MailImportance> {
        match importance {
            Importance::Low => Some(MailImportance::Low),
            Importance::Normal => Some(MailImportance::Normal),
            Importance::High => Some(MailImportance::High),
            _ => None,
        }
    }

    /// The EWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailImportance::Low => "Low",
            MailImportance::Normal => "Normal",
            MailImportance::High => "High",
        }
    }
}

/// Where PM priority (0 to 1000) changes from Low to Normal to High importance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportanceThresholds {
    /// Priorities below this are Low (default 500).
    pub low_below: u16,
    /// Priorities above this are High (default 500).
    pub high_above: u16,
}

impl Default for ImportanceThresholds {
    /// Project's medium priority, 500, is Normal; 499 is Low and 501 is High.
    fn default() -> Self {
        ImportanceThresholds {
            low_below: 500,
            high_above: 500,
        }
    }
}

impl ImportanceThresholds {
    /// The importance of a PM priority: Low below `low_below`, High above `high_above`, Normal
    /// from `low_below` to `high_above` inclusive.
    pub fn importance(self, priority: u16) -> MailImportance {
        if priority < self.low_below {
            MailImportance::Low
        } else if priority > self.high_above {
            MailImportance::High
        } else {
            MailImportance::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::{America, Asia, Etc, Europe, Pacific};

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn at(y: i32, m: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        date(y, m, d)
            .and_hms_opt(h, mi, 0)
            .expect("valid test time")
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.from_utc_datetime(&at(y, m, d, h, mi))
    }

    fn percent(p: u8) -> Percent {
        Percent::new(p).expect("in range")
    }

    #[test]
    fn work_to_minutes_half_minute_rounds_up() {
        assert_eq!(work_to_minutes(Work::from_seconds(29)), 0);
        assert_eq!(work_to_minutes(Work::from_seconds(30)), 1);
        assert_eq!(work_to_minutes(Work::from_seconds(89)), 1);
        assert_eq!(work_to_minutes(Work::from_seconds(90)), 2);
        assert_eq!(
            work_to_minutes(Work::from_seconds(7 * 3600 + 30 * 60 + 29)),
            450
        );
        assert_eq!(
            work_to_minutes(Work::from_seconds(7 * 3600 + 30 * 60 + 30)),
            451
        );
    }

    #[test]
    fn work_to_minutes_seven_and_a_half_hours_is_450() {
        let work = Work::parse_mspdi("PT7H30M0S").expect("valid");
        assert_eq!(work_to_minutes(work), 450);
        assert_eq!(
            work_to_minutes(Work::parse_mspdi("PT7.5H").expect("valid")),
            450
        );
        assert_eq!(minutes_to_work(450), work);
    }

    #[test]
    fn work_to_minutes_out_of_range_is_clamped() {
        assert_eq!(work_to_minutes(Work::from_hours(-1)), 0);
        assert_eq!(work_to_minutes(Work::ZERO), 0);
        let max = Work::from_minutes(i64::from(i32::MAX));
        assert_eq!(work_to_minutes(max), i32::MAX);
        assert_eq!(
            work_to_minutes(max.saturating_add(Work::from_minutes(1))),
            i32::MAX
        );
        assert_eq!(work_to_minutes(Work::from_seconds(i64::MAX)), i32::MAX);
    }

    #[test]
    fn minutes_to_work_is_exact() {
        assert_eq!(minutes_to_work(0), Work::ZERO);
        assert_eq!(minutes_to_work(1), Work::from_seconds(60));
        assert_eq!(
            minutes_to_work(i32::MAX).seconds(),
            i64::from(i32::MAX) * 60
        );
        for minutes in [0, 1, 59, 60, 450, 481, i32::MAX] {
            assert_eq!(work_to_minutes(minutes_to_work(minutes)), minutes);
        }
    }

    #[test]
    fn pm_to_mail_date_same_zone_keeps_date_at_any_time() {
        for zone in [
            Tz::UTC,
            Pacific::Tongatapu,
            Pacific::Honolulu,
            Etc::GMTPlus12,
        ] {
            assert_eq!(
                pm_to_mail_date(zone, at(2026, 3, 6, 0, 0), zone),
                date(2026, 3, 6)
            );
            assert_eq!(
                pm_to_mail_date(zone, at(2026, 3, 6, 23, 59), zone),
                date(2026, 3, 6)
            );
        }
    }

    #[test]
    fn pm_to_mail_date_other_zone_takes_owner_date() {
        // 17:00 in Berlin (CET, UTC+1) is 05:00 the next day in Auckland (NZDT, UTC+13) and
        // 06:00 the same day in Honolulu (UTC-10).
        let finish = at(2026, 3, 6, 17, 0);
        assert_eq!(
            pm_to_mail_date(Europe::Berlin, finish, Pacific::Auckland),
            date(2026, 3, 7)
        );
        assert_eq!(
            pm_to_mail_date(Europe::Berlin, finish, Pacific::Honolulu),
            date(2026, 3, 6)
        );
    }

    #[test]
    fn mail_date_to_utc_far_zones_give_local_midnight() {
        // UTC+13, UTC+14, UTC-10, UTC-12: local midnight of 2026-03-06 as a UTC instant.
        assert_eq!(
            mail_date_to_utc(Pacific::Tongatapu, date(2026, 3, 6)),
            utc(2026, 3, 5, 11, 0)
        );
        assert_eq!(
            mail_date_to_utc(Pacific::Kiritimati, date(2026, 3, 6)),
            utc(2026, 3, 5, 10, 0)
        );
        assert_eq!(
            mail_date_to_utc(Pacific::Honolulu, date(2026, 3, 6)),
            utc(2026, 3, 6, 10, 0)
        );
        assert_eq!(
            mail_date_to_utc(Etc::GMTPlus12, date(2026, 3, 6)),
            utc(2026, 3, 6, 12, 0)
        );
    }

    #[test]
    fn mail_date_to_utc_midnight_gap_gives_end_of_gap() {
        // Sao Paulo, 2018-11-04: 00:00 BRT became 01:00 BRST, so the day began at 01:00 (-02).
        let start = mail_date_to_utc(America::Sao_Paulo, date(2018, 11, 4));
        assert_eq!(start, utc(2018, 11, 4, 3, 0));
        assert_eq!(
            mail_date_from_utc(America::Sao_Paulo, start),
            date(2018, 11, 4)
        );
    }

    #[test]
    fn mail_date_to_utc_repeated_midnight_takes_earlier() {
        // Sao Paulo, 2019-02-17: 00:00 BRST went back to 23:00 BRT on the 16th, so 23:xx on
        // the 16th repeats and the 17th starts once, at 00:00 BRT (UTC-3).
        let start = mail_date_to_utc(America::Sao_Paulo, date(2019, 2, 17));
        assert_eq!(start, utc(2019, 2, 17, 3, 0));
        // Havana, 2026-11-01: 01:00 CDT goes back to 00:00 CST, so midnight occurs twice.
        let start = mail_date_to_utc(America::Havana, date(2026, 11, 1));
        assert_eq!(start, utc(2026, 11, 1, 4, 0));
        assert_eq!(
            mail_date_from_utc(America::Havana, start),
            date(2026, 11, 1)
        );
    }

    #[test]
    fn mail_date_from_utc_dst_days_keep_date() {
        for d in [
            date(2026, 3, 29),
            date(2026, 3, 30),
            date(2026, 10, 25),
            date(2026, 10, 26),
        ] {
            let start = mail_date_to_utc(Europe::Berlin, d);
            assert_eq!(mail_date_from_utc(Europe::Berlin, start), d, "{d}");
        }
    }

    #[test]
    fn mail_date_from_utc_floating_midnight_reads_utc_date() {
        // 2026-03-06T00:00Z is 13:00 on the 6th in Tonga and 14:00 on the 5th in Honolulu;
        // both mean the 6th.
        let floating = utc(2026, 3, 6, 0, 0);
        assert_eq!(
            mail_date_from_utc(Pacific::Tongatapu, floating),
            date(2026, 3, 6)
        );
        assert_eq!(
            mail_date_from_utc(Pacific::Honolulu, floating),
            date(2026, 3, 6)
        );
        assert_eq!(
            mail_date_from_utc(Pacific::Kiritimati, floating),
            date(2026, 3, 6)
        );
        assert_eq!(
            mail_date_from_utc(Etc::GMTPlus12, floating),
            date(2026, 3, 6)
        );
    }

    #[test]
    fn mail_date_from_utc_off_by_an_hour_takes_nearest_date() {
        // Local midnight of 2026-07-06 in Berlin (CEST, UTC+2) is 2026-07-05T22:00Z. A client
        // that used CET writes 23:00Z, 01:00 local on the 6th ...
        assert_eq!(
            mail_date_from_utc(Europe::Berlin, utc(2026, 7, 5, 23, 0)),
            date(2026, 7, 6)
        );
        // ... and one that added an hour too many writes 21:00Z, 23:00 local on the 5th.
        assert_eq!(
            mail_date_from_utc(Europe::Berlin, utc(2026, 7, 5, 21, 0)),
            date(2026, 7, 6)
        );
        // Local noon is a tie: the earlier date.
        assert_eq!(
            mail_date_from_utc(Asia::Tokyo, utc(2026, 7, 6, 3, 0)),
            date(2026, 7, 6)
        );
    }

    #[test]
    fn a_completion_instant_reads_as_its_local_date_and_a_date_form_as_its_date() {
        // Completed by Exchange at 12:17 and at 23:59 Berlin time: that day, though the next
        // midnight is nearer.
        let at = |h, m, s| {
            Utc.with_ymd_and_hms(2026, 12, 2, h, m, s)
                .single()
                .expect("a time")
        };
        assert_eq!(
            mail_completion_date(Europe::Berlin, at(11, 17, 23)),
            date(2026, 12, 2)
        );
        assert_eq!(
            mail_completion_date(Europe::Berlin, at(22, 59, 59)),
            date(2026, 12, 2)
        );
        // Written by a client as a date: local midnight, floating midnight, or local midnight
        // with a wrong DST hour.
        assert_eq!(
            mail_completion_date(Europe::Berlin, at(23, 0, 0)),
            date(2026, 12, 3)
        );
        assert_eq!(
            mail_completion_date(Europe::Berlin, at(0, 0, 0)),
            date(2026, 12, 2)
        );
        assert_eq!(
            mail_completion_date(Europe::Berlin, at(22, 0, 0)),
            date(2026, 12, 3)
        );
    }

    #[test]
    fn mail_date_skipped_day_reads_as_next_day() {
        // Samoa skipped 2011-12-30 when it crossed the date line.
        let start = mail_date_to_utc(Pacific::Apia, date(2011, 12, 30));
        assert_eq!(mail_date_from_utc(Pacific::Apia, start), date(2011, 12, 31));
    }

    #[test]
    fn pm_with_mail_date_same_zone_keeps_time_of_day() {
        let finish = at(2026, 3, 6, 17, 0);
        assert_eq!(
            pm_with_mail_date(Europe::Berlin, finish, Europe::Berlin, date(2026, 3, 30)),
            at(2026, 3, 30, 17, 0)
        );
        // Into a DST change: the wall-clock time stays, whatever the offset does.
        assert_eq!(
            pm_with_mail_date(
                Europe::Berlin,
                at(2026, 3, 27, 2, 30),
                Europe::Berlin,
                date(2026, 3, 29)
            ),
            at(2026, 3, 29, 2, 30)
        );
    }

    #[test]
    fn pm_with_mail_date_other_zone_keeps_owner_time_of_day() {
        // Berlin 17:00 is Auckland 05:00 the next day; the owner moves that to the 10th, which
        // is 05:00 on the 10th in Auckland, 17:00 on the 9th in Berlin.
        let finish = at(2026, 3, 6, 17, 0);
        let moved = pm_with_mail_date(Europe::Berlin, finish, Pacific::Auckland, date(2026, 3, 10));
        assert_eq!(moved, at(2026, 3, 9, 17, 0));
        assert_eq!(
            pm_to_mail_date(Europe::Berlin, moved, Pacific::Auckland),
            date(2026, 3, 10)
        );
    }

    #[test]
    fn status_for_percent_boundaries() {
        assert_eq!(status_for_percent(percent(0)), TaskStatus::NotStarted);
        assert_eq!(status_for_percent(percent(1)), TaskStatus::InProgress);
        assert_eq!(status_for_percent(percent(99)), TaskStatus::InProgress);
        assert_eq!(status_for_percent(percent(100)), TaskStatus::Completed);
    }

    #[test]
    fn percent_from_wire_rounds_and_keeps_partial_work_partial() {
        let p = |v| percent_from_wire(v).map(Percent::get);
        assert_eq!(p(0.0), Some(0));
        assert_eq!(p(-3.0), Some(0));
        assert_eq!(p(0.2), Some(1));
        assert_eq!(p(1.49), Some(1));
        assert_eq!(p(1.5), Some(2));
        assert_eq!(p(50.0), Some(50));
        assert_eq!(p(99.4), Some(99));
        assert_eq!(p(99.6), Some(99));
        assert_eq!(p(100.0), Some(100));
        assert_eq!(p(250.0), Some(100));
        assert_eq!(p(f64::INFINITY), Some(100));
        assert_eq!(p(f64::NAN), None);
    }

    #[test]
    fn read_completion_completed_signals_read_as_100() {
        let completed = TaskStatus::Completed;
        let in_progress = TaskStatus::InProgress;
        let cases = [
            // Status Completed, even with a stale percentage.
            (
                Completion {
                    status: Some(&completed),
                    percent_complete: Some(40.0),
                    ..Default::default()
                },
                Some(100),
            ),
            // IsComplete alone.
            (
                Completion {
                    is_complete: Some(true),
                    ..Default::default()
                },
                Some(100),
            ),
            // PercentComplete 100 alone.
            (
                Completion {
                    percent_complete: Some(100.0),
                    ..Default::default()
                },
                Some(100),
            ),
            // CompleteDate alone.
            (
                Completion {
                    has_complete_date: true,
                    ..Default::default()
                },
                Some(100),
            ),
            // CompleteDate that Status contradicts: the percentage counts.
            (
                Completion {
                    status: Some(&in_progress),
                    percent_complete: Some(60.0),
                    has_complete_date: true,
                    ..Default::default()
                },
                Some(60),
            ),
            // CompleteDate that IsComplete contradicts, no percentage: unknown.
            (
                Completion {
                    is_complete: Some(false),
                    has_complete_date: true,
                    ..Default::default()
                },
                None,
            ),
        ];
        for (c, expected) in cases {
            assert_eq!(read_completion(c).0.map(Percent::get), expected, "{c:?}");
        }
    }

    #[test]
    fn read_completion_waiting_and_deferred_keep_percent_and_note() {
        let waiting = TaskStatus::WaitingOnOthers;
        let deferred = TaskStatus::Deferred;
        let read = read_completion(Completion {
            status: Some(&waiting),
            percent_complete: Some(30.0),
            ..Default::default()
        });
        assert_eq!(read, (Some(percent(30)), Some(StatusNote::WaitingOnOthers)));
        let read = read_completion(Completion {
            status: Some(&deferred),
            ..Default::default()
        });
        assert_eq!(read, (None, Some(StatusNote::Deferred)));
        let not_started = TaskStatus::NotStarted;
        let read = read_completion(Completion {
            status: Some(&not_started),
            ..Default::default()
        });
        assert_eq!(read, (Some(Percent::ZERO), None));
    }

    #[test]
    fn importance_priority_500_and_501() {
        let t = ImportanceThresholds::default();
        assert_eq!(t.importance(0), MailImportance::Low);
        assert_eq!(t.importance(499), MailImportance::Low);
        assert_eq!(t.importance(500), MailImportance::Normal);
        assert_eq!(t.importance(501), MailImportance::High);
        assert_eq!(t.importance(1000), MailImportance::High);
    }

    #[test]
    fn importance_configured_band_is_inclusive() {
        let t = ImportanceThresholds {
            low_below: 300,
            high_above: 700,
        };
        assert_eq!(t.importance(299), MailImportance::Low);
        assert_eq!(t.importance(300), MailImportance::Normal);
        assert_eq!(t.importance(700), MailImportance::Normal);
        assert_eq!(t.importance(701), MailImportance::High);
    }

    #[test]
    fn mail_importance_wire_round_trips() {
        for level in [
            MailImportance::Low,
            MailImportance::Normal,
            MailImportance::High,
        ] {
            assert_eq!(MailImportance::from_wire(&level.to_wire()), Some(level));
            assert_eq!(level.to_wire().as_str(), level.as_str());
        }
        assert_eq!(
            MailImportance::from_wire(&Importance::Other("Urgent".into())),
            None
        );
    }
}
