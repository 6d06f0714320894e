//! Step decide of the list in the [`sync`](super) module doc: which side's value stands, field
//! by field.
//!
//! Pure and table-tested. For each mapped field, the baseline (last-synced value), the PM
//! side's current value and the mailbox's current value give one [`FieldDecision`]
//! ([`decide`]); `decide_item` adds what follows for the whole item (the status note, fields
//! held for a pending update, conflicts already open, what to audit), and the engine acts on
//! it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mapping::{Direction, FieldTable, MailField, MailValues};
use crate::state::{Baseline, DecisionRule, Side, SyncStatus};

/// How [`decide_item`] decides an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Decide field by field against the baseline.
    Normal,
    /// The item was found tagged after a crash: what it held when created is unknown, so
    /// every field the two sides disagree on is decided by the policy.
    Adopt,
    /// The status manager rejected the mailbox's values: restore the PM values everywhere.
    Restore,
}

/// What to do when both sides changed a field since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The later change wins: the item's LastModifiedTime against the PM field's modification
    /// time. Two times within the clock-skew tolerance are a tie, which goes to the PM side.
    #[default]
    NewerWins,
    /// The PM side wins.
    PmWins,
    /// The mailbox wins (for fields that may flow back; others stay PM-owned).
    MailWins,
    /// Neither: the conflict is kept for a person to resolve.
    Manual,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "newer-wins" => Ok(Policy::NewerWins),
            "pm-wins" => Ok(Policy::PmWins),
            "mail-wins" => Ok(Policy::MailWins),
            "manual" => Ok(Policy::Manual),
            other => Err(format!(
                "unknown conflict policy {other:?} (expected newer-wins, pm-wins, mail-wins or manual)"
            )),
        }
    }
}

/// The outcome for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed.
    Keep,
    /// The PM value goes to the mailbox.
    WriteMail,
    /// The mailbox value goes to the PM side (as a status update).
    TakeMail,
    /// Both sides hold the same new value; only the baseline moves.
    Converged,
    /// Both changed differently and the policy is manual.
    Conflict,
}

/// The decision for one field, with the rule that made it (for the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDecision {
    /// The field.
    pub field: MailField,
    /// What to do.
    pub verdict: Verdict,
    /// Why (`None` when nothing changed).
    pub rule: Option<DecisionRule>,
    /// Whose value stands.
    pub winner: Side,
}

/// When each side last changed a field, as far as is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeTimes {
    /// The PM field's modification time.
    pub pm: Option<DateTime<Utc>>,
    /// The item's LastModifiedTime.
    pub mail: Option<DateTime<Utc>>,
}

/// Decides one field. `pm_changed` / `mail_changed` say whether each side differs from the
/// baseline; `same` whether the two sides hold the same value; `clock_skew` is how far apart
/// the two change times must be for one to count as newer (Exchange and the PM host keep
/// different clocks, and Exchange gives one LastModifiedTime per item, not per field).
#[allow(clippy::too_many_arguments)]
pub fn decide_field(
    field: MailField,
    pm_changed: bool,
    mail_changed: bool,
    same: bool,
    direction: Direction,
    times: ChangeTimes,
    policy: Policy,
    clock_skew: chrono::Duration,
) -> FieldDecision {
    use DecisionRule as R;
    let d = |verdict, rule, winner| FieldDecision {
        field,
        verdict,
        rule: Some(rule),
        winner,
    };
    let take_or_restore = |rule| match direction {
        Direction::Both => d(Verdict::TakeMail, rule, Side::Mail),
        // The mailbox may show this field but not change it: the PM value goes back.
        Direction::PmToMail => d(Verdict::WriteMail, R::PmOwned, Side::Pm),
    };
    match (pm_changed, mail_changed) {
        // Nobody touched it.
        (false, false) => FieldDecision {
            field,
            verdict: Verdict::Keep,
            rule: None,
            winner: Side::Pm,
        },
        // The plan changed: publish it.
        (true, false) => d(Verdict::WriteMail, R::PmOnly, Side::Pm),
        // The person changed it in Outlook.
        (false, true) => take_or_restore(R::MailOnly),
        // Both changed it, to the same value (e.g. 100% on both sides): nothing to send.
        (true, true) if same => d(Verdict::Converged, R::Converged, Side::Pm),
        // Both changed it differently: the policy decides.
        (true, true) => match policy {
            Policy::PmWins => d(Verdict::WriteMail, R::PmWins, Side::Pm),
            Policy::MailWins => take_or_restore(R::MailWins),
            Policy::Manual => d(Verdict::Conflict, R::Manual, Side::Neither),
            Policy::NewerWins => {
                let mail_newer = match (times.mail, times.pm) {
                    // Too close to tell: the tie rule (the PM side), audited as a tie.
                    (Some(mail), Some(pm)) if (mail - pm).abs() <= clock_skew => {
                        return d(Verdict::WriteMail, R::Tie, Side::Pm);
                    }
                    (Some(mail), Some(pm)) => mail > pm,
                    // A PM side that cannot say when it changed the field loses to a mailbox
                    // that can.
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if mail_newer {
                    take_or_restore(R::NewerWins)
                } else {
                    d(Verdict::WriteMail, R::NewerWins, Side::Pm)
                }
            }
        },
    }
}

/// Decides every field of the table for one item.
///
/// `base` is the last-synced state, `pm` what the PM side wants the item to show now, `mail`
/// what the item shows; `mail_modified` is the item's LastModifiedTime and `pm_modified` gives
/// each field's PM modification time. The percentage is compared without the status note,
/// which is never a change of it (see [`status_note_changed`]).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    table: &FieldTable,
    base: &Baseline,
    pm: &MailValues,
    mail: &MailValues,
    mail_modified: Option<DateTime<Utc>>,
    pm_modified: impl Fn(MailField) -> Option<DateTime<Utc>>,
    policy: Policy,
    clock_skew: chrono::Duration,
) -> Vec<FieldDecision> {
    table
        .entries()
        .iter()
        .map(|entry| {
            let f = entry.field;
            decide_field(
                f,
                !pm.same_field(&base.values, f),
                !mail.same_field(&base.values, f),
                pm.same_field(mail, f),
                entry.direction,
                ChangeTimes {
                    pm: pm_modified(f).or_else(|| base.pm_changed.get(&f).copied()),
                    mail: mail_modified,
                },
                policy,
                clock_skew,
            )
        })
        .collect()
}

/// Whether the mailbox set, changed or cleared the status note since the baseline. Only the
/// mailbox has a note (the PM side never writes one), so it is decided once, for the mailbox,
/// and only when the percentage goes both ways.
pub fn status_note_changed(table: &FieldTable, base: &Baseline, mail: &MailValues) -> bool {
    table
        .entry(MailField::PercentComplete)
        .is_some_and(|e| e.direction == Direction::Both)
        && base.values.status_note_changed(mail)
}

/// One version of an item set against the PM side: what [`decide_item`] decides on.
#[derive(Clone, Debug)]
pub(crate) struct ItemSides {
    /// The owner's zone.
    pub zone: chrono_tz::Tz,
    /// What the PM side wants the item to show.
    pub pm: MailValues,
    /// What the item shows.
    pub mail: MailValues,
    /// What both sides agreed on at the last sync (the PM's values for an item never synced).
    pub base: Baseline,
    /// When the mailbox last changed the item.
    pub mail_modified: Option<DateTime<Utc>>,
}

/// What deciding one item gave: which fields go where, and what the audit records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ItemDecision {
    /// The decisions the audit records: those that change something, without a conflict
    /// already open on its field or a field held for a pending update.
    pub audited: Vec<FieldDecision>,
    /// How many fields both sides changed (decided by the policy or kept for a person).
    pub by_policy: usize,
    /// The mailbox changed the status note since the baseline (it goes with the status update).
    pub note_changed: bool,
    /// The fields the PM side takes from the mailbox, in field order: the status update.
    pub take: Vec<MailField>,
    /// Fields of the pending update still held: neither submitted again nor overwritten until
    /// it is decided. Empty when a new update supersedes it (`take` carries them then).
    pub held: Vec<MailField>,
    /// Fields in conflict, kept as each side has them until a person decides.
    pub conflicts: Vec<MailField>,
}

impl ItemDecision {
    /// What the item keeps of its own: conflicts and held fields.
    pub fn kept(&self) -> Vec<MailField> {
        self.conflicts.iter().chain(&self.held).copied().collect()
    }
}

/// Decides one item (step "decide"): each field by [`decide`] (or as `mode` says), the status
/// note on its own, and what follows from the item's sync status: a conflict already open is not
/// audited again, and the fields of an update waiting for approval are held while their mailbox
/// value is still the one submitted.
pub(crate) fn decide_item(
    table: &FieldTable,
    mode: Mode,
    status: &SyncStatus,
    sides: &ItemSides,
    pm_modified: impl Fn(MailField) -> Option<DateTime<Utc>>,
    policy: Policy,
    clock_skew: chrono::Duration,
) -> ItemDecision {
    let ItemSides { pm, mail, base, .. } = sides;
    // The status note is the mailbox's alone: decided once, against the baseline.
    let note_changed = mode != Mode::Restore && status_note_changed(table, base, mail);
    let decisions: Vec<FieldDecision> = match mode {
        Mode::Normal => decide(
            table,
            base,
            pm,
            mail,
            sides.mail_modified,
            pm_modified,
            policy,
            clock_skew,
        ),
        // Nothing is known of what a taken-over item held when it was created, nor of who
        // changed it since: every field the two sides disagree on is settled by the policy (an
        // owner's edit after the create is newer than the PM's value); fields they agree on
        // are kept, without a record.
        Mode::Adopt => decide(
            table,
            &Baseline::new(MailValues::empty(pm.zone)),
            pm,
            mail,
            sides.mail_modified,
            pm_modified,
            policy,
            clock_skew,
        )
        .into_iter()
        .map(|d| match d.verdict {
            Verdict::Converged => FieldDecision {
                verdict: Verdict::Keep,
                rule: None,
                ..d
            },
            _ => d,
        })
        .collect(),
        // Restored items take the PM values in every field.
        Mode::Restore => table
            .entries()
            .iter()
            .map(|e| FieldDecision {
                field: e.field,
                verdict: if pm.same_field(mail, e.field) {
                    Verdict::Keep
                } else {
                    Verdict::WriteMail
                },
                rule: Some(DecisionRule::Rejected),
                winner: Side::Pm,
            })
            .collect(),
    };
    let open_conflicts: Vec<MailField> = match status {
        SyncStatus::Conflict { fields, .. } => fields.clone(),
        _ => Vec::new(),
    };
    let mut held: Vec<MailField> = match status {
        SyncStatus::PendingApproval { fields, .. } => decisions
            .iter()
            .filter(|d| {
                d.verdict == Verdict::TakeMail
                    && fields.get(&d.field) == Some(&mail.field_hash(d.field))
            })
            .map(|d| d.field)
            .collect(),
        _ => Vec::new(),
    };
    let audited = decisions
        .iter()
        .filter(|d| !(d.verdict == Verdict::Conflict && open_conflicts.contains(&d.field)))
        .filter(|d| !held.contains(&d.field))
        .filter(|d| d.rule.is_some() && d.verdict != Verdict::Keep)
        .copied()
        .collect();
    let by_policy = decisions
        .iter()
        .filter(|d| {
            matches!(
                d.rule,
                Some(
                    DecisionRule::NewerWins
                        | DecisionRule::PmWins
                        | DecisionRule::MailWins
                        | DecisionRule::Manual
                )
            )
        })
        .count();
    let mut take: Vec<MailField> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::TakeMail && !held.contains(&d.field))
        .map(|d| d.field)
        .collect();
    if !take.is_empty() && !held.is_empty() {
        // A new update supersedes the pending one: it carries the held fields too.
        take.append(&mut held);
        take.sort_by_key(|f| MailField::ALL.iter().position(|x| x == f));
    }
    let conflicts = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Conflict)
        .map(|d| d.field)
        .collect();
    ItemDecision {
        audited,
        by_policy,
        note_changed,
        take,
        held,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap())
    }

    /// One row: (pm changed, mail changed, same, direction, pm time, mail time, policy) ->
    /// (verdict, rule, winner).
    #[allow(clippy::type_complexity)]
    const ROWS: &[(
        &str,
        bool,
        bool,
        bool,
        Direction,
        u32,
        u32,
        Policy,
        Verdict,
        Option<DecisionRule>,
        Side,
    )] = {
        use Direction::*;
        use Policy::*;
        use Verdict::*;
        &[
            (
                "nothing changed",
                false,
                false,
                true,
                Both,
                9,
                9,
                NewerWins,
                Keep,
                None,
                Side::Pm,
            ),
            (
                "the plan changed",
                true,
                false,
                false,
                Both,
                9,
                9,
                NewerWins,
                WriteMail,
                Some(DecisionRule::PmOnly),
                Side::Pm,
            ),
            (
                "the person reported progress",
                false,
                true,
                false,
                Both,
                9,
                10,
                NewerWins,
                TakeMail,
                Some(DecisionRule::MailOnly),
                Side::Mail,
            ),
            (
                "the person renamed a PM-owned subject",
                false,
                true,
                false,
                PmToMail,
                9,
                10,
                NewerWins,
                WriteMail,
                Some(DecisionRule::PmOwned),
                Side::Pm,
            ),
            (
                "both set 100%",
                true,
                true,
                true,
                Both,
                9,
                10,
                NewerWins,
                Converged,
                Some(DecisionRule::Converged),
                Side::Pm,
            ),
            (
                "both changed, Outlook later",
                true,
                true,
                false,
                Both,
                9,
                10,
                NewerWins,
                TakeMail,
                Some(DecisionRule::NewerWins),
                Side::Mail,
            ),
            (
                "both changed, plan later",
                true,
                true,
                false,
                Both,
                11,
                10,
                NewerWins,
                WriteMail,
                Some(DecisionRule::NewerWins),
                Side::Pm,
            ),
            (
                "both changed at the same second",
                true,
                true,
                false,
                Both,
                10,
                10,
                NewerWins,
                WriteMail,
                Some(DecisionRule::Tie),
                Side::Pm,
            ),
            (
                "both changed, newer mail on a PM-owned field",
                true,
                true,
                false,
                PmToMail,
                9,
                10,
                NewerWins,
                WriteMail,
                Some(DecisionRule::PmOwned),
                Side::Pm,
            ),
            (
                "both changed, pm-wins",
                true,
                true,
                false,
                Both,
                9,
                10,
                PmWins,
                WriteMail,
                Some(DecisionRule::PmWins),
                Side::Pm,
            ),
            (
                "both changed, mail-wins",
                true,
                true,
                false,
                Both,
                11,
                10,
                MailWins,
                TakeMail,
                Some(DecisionRule::MailWins),
                Side::Mail,
            ),
            (
                "both changed, manual",
                true,
                true,
                false,
                Both,
                9,
                10,
                Manual,
                Conflict,
                Some(DecisionRule::Manual),
                Side::Neither,
            ),
        ]
    };

    #[test]
    fn decide_field_follows_the_table() {
        for &(case, pm_c, mail_c, same, dir, pm_h, mail_h, policy, verdict, rule, winner) in ROWS {
            let got = decide_field(
                MailField::PercentComplete,
                pm_c,
                mail_c,
                same,
                dir,
                ChangeTimes {
                    pm: t(pm_h),
                    mail: t(mail_h),
                },
                policy,
                chrono::Duration::zero(),
            );
            assert_eq!(
                (got.verdict, got.rule, got.winner),
                (verdict, rule, winner),
                "{case}"
            );
        }
    }

    #[test]
    fn decide_field_unknown_pm_time_loses_to_a_known_mail_time() {
        let got = decide_field(
            MailField::ActualWork,
            true,
            true,
            false,
            Direction::Both,
            ChangeTimes {
                pm: None,
                mail: t(8),
            },
            Policy::NewerWins,
            chrono::Duration::milliseconds(2000),
        );
        assert_eq!(got.verdict, Verdict::TakeMail);
    }

    #[test]
    fn decide_field_within_the_clock_skew_is_a_tie_for_the_pm_side() {
        let at = |ms| {
            Some(
                Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
                    + chrono::Duration::milliseconds(ms),
            )
        };
        let skew = chrono::Duration::milliseconds(2000);
        let decide = |pm, mail| {
            let got = decide_field(
                MailField::PercentComplete,
                true,
                true,
                false,
                Direction::Both,
                ChangeTimes {
                    pm: at(pm),
                    mail: at(mail),
                },
                Policy::NewerWins,
                skew,
            );
            (got.verdict, got.rule, got.winner)
        };
        let tie = (Verdict::WriteMail, Some(DecisionRule::Tie), Side::Pm);
        assert_eq!(decide(0, 1500), tie, "mail 1.5 s later is within the skew");
        assert_eq!(decide(0, 2000), tie, "the edge is a tie");
        assert_eq!(decide(1500, 0), tie);
        assert_eq!(
            decide(0, 2001),
            (Verdict::TakeMail, Some(DecisionRule::NewerWins), Side::Mail)
        );
        assert_eq!(
            decide(2001, 0),
            (Verdict::WriteMail, Some(DecisionRule::NewerWins), Side::Pm)
        );
    }

    #[test]
    fn policy_parses_config_spelling() {
        assert_eq!("pm-wins".parse::<Policy>(), Ok(Policy::PmWins));
        assert!("newest".parse::<Policy>().is_err());
    }

    fn pct(p: u8) -> Option<crate::pm::Percent> {
        Some(crate::pm::Percent::new(p).unwrap())
    }

    /// An item whose baseline and PM side show 0 % and 2 h of actual work, and whose mailbox
    /// shows `percent` and `actual` (minutes).
    fn sides(percent: u8, actual: i32) -> ItemSides {
        let mut pm = MailValues::empty(chrono_tz::UTC);
        pm.subject = Some("Design".into());
        pm.percent_complete = pct(0);
        pm.actual_work = Some(120);
        let mut mail = pm.clone();
        mail.percent_complete = pct(percent);
        mail.actual_work = Some(actual);
        ItemSides {
            zone: chrono_tz::UTC,
            base: Baseline::new(pm.clone()),
            pm,
            mail,
            mail_modified: t(10),
        }
    }

    fn item(mode: Mode, status: &SyncStatus, sides: &ItemSides, policy: Policy) -> ItemDecision {
        decide_item(
            &FieldTable::default(),
            mode,
            status,
            sides,
            |_| t(9),
            policy,
            chrono::Duration::zero(),
        )
    }

    fn pending(fields: &[(MailField, &MailValues)]) -> SyncStatus {
        SyncStatus::PendingApproval {
            update: crate::pm::StatusUpdateId("u1".into()),
            observed: crate::mapping::ValueHash([0; 32]),
            fields: fields.iter().map(|(f, v)| (*f, v.field_hash(*f))).collect(),
        }
    }

    #[test]
    fn decide_item_reported_progress_is_taken_and_audited() {
        let s = sides(50, 120);
        let d = item(Mode::Normal, &SyncStatus::Synced, &s, Policy::NewerWins);
        assert_eq!(d.take, vec![MailField::PercentComplete]);
        assert_eq!(d.audited.len(), 1);
        assert_eq!(d.audited[0].rule, Some(DecisionRule::MailOnly));
        assert!(d.held.is_empty() && d.conflicts.is_empty() && !d.note_changed);
        assert_eq!(d.by_policy, 0);
    }

    #[test]
    fn decide_item_pending_field_still_as_submitted_is_held_not_audited() {
        let s = sides(50, 120);
        let status = pending(&[(MailField::PercentComplete, &s.mail)]);
        let d = item(Mode::Normal, &status, &s, Policy::NewerWins);
        assert_eq!(d.held, vec![MailField::PercentComplete]);
        assert!(d.take.is_empty());
        assert!(d.audited.is_empty());
        assert_eq!(d.kept(), vec![MailField::PercentComplete]);
    }

    #[test]
    fn decide_item_pending_field_edited_again_is_submitted_again() {
        let s = sides(50, 120);
        let submitted = sides(30, 120).mail;
        let status = pending(&[(MailField::PercentComplete, &submitted)]);
        let d = item(Mode::Normal, &status, &s, Policy::NewerWins);
        assert!(d.held.is_empty());
        assert_eq!(d.take, vec![MailField::PercentComplete]);
        assert_eq!(d.audited.len(), 1);
    }

    #[test]
    fn decide_item_new_edit_supersedes_the_pending_update_with_its_fields() {
        let s = sides(50, 300);
        let status = pending(&[(MailField::PercentComplete, &s.mail)]);
        let d = item(Mode::Normal, &status, &s, Policy::NewerWins);
        // The new update carries the held field too, in field order; nothing stays held.
        assert_eq!(
            d.take,
            vec![MailField::ActualWork, MailField::PercentComplete]
        );
        assert!(d.held.is_empty());
        // Only the new edit is audited: the held one was when it was submitted.
        assert_eq!(d.audited.len(), 1);
        assert_eq!(d.audited[0].field, MailField::ActualWork);
    }

    #[test]
    fn decide_item_open_conflict_is_kept_and_not_audited_again() {
        let mut s = sides(50, 120);
        s.pm.percent_complete = pct(70);
        let fresh = item(Mode::Normal, &SyncStatus::Synced, &s, Policy::Manual);
        assert_eq!(fresh.conflicts, vec![MailField::PercentComplete]);
        assert_eq!(fresh.audited.len(), 1);
        assert_eq!(fresh.by_policy, 1);
        let open = SyncStatus::Conflict {
            fields: vec![MailField::PercentComplete],
            since: t(8),
            mail: None,
        };
        let again = item(Mode::Normal, &open, &s, Policy::Manual);
        assert_eq!(again.conflicts, vec![MailField::PercentComplete]);
        assert!(again.audited.is_empty());
        assert!(again.take.is_empty());
        assert_eq!(again.kept(), vec![MailField::PercentComplete]);
    }

    #[test]
    fn decide_item_status_note_alone_is_a_note_change_not_a_percent_change() {
        let mut s = sides(0, 120);
        s.mail.status_note = Some(crate::mapping::StatusNote::Deferred);
        let d = item(Mode::Normal, &SyncStatus::Synced, &s, Policy::NewerWins);
        assert!(d.note_changed);
        assert!(d.take.is_empty());
        assert!(d.audited.is_empty());
    }

    #[test]
    fn decide_item_restore_writes_every_differing_field_and_ignores_the_note() {
        let mut s = sides(50, 120);
        s.mail.status_note = Some(crate::mapping::StatusNote::Deferred);
        let d = item(Mode::Restore, &SyncStatus::Synced, &s, Policy::MailWins);
        assert!(!d.note_changed);
        assert!(d.take.is_empty());
        assert_eq!(d.audited.len(), 1);
        assert_eq!(d.audited[0].field, MailField::PercentComplete);
        assert_eq!(d.audited[0].verdict, Verdict::WriteMail);
        assert_eq!(d.audited[0].rule, Some(DecisionRule::Rejected));
    }

    #[test]
    fn decide_item_adopted_item_is_decided_by_the_policy_where_the_sides_differ() {
        let s = sides(50, 120);
        let d = item(Mode::Adopt, &SyncStatus::Synced, &s, Policy::NewerWins);
        // The mailbox's edit (10:00) is newer than the plan's (9:00); fields both sides agree
        // on are kept without a record.
        assert_eq!(d.take, vec![MailField::PercentComplete]);
        assert_eq!(d.audited.len(), 1);
        assert_eq!(d.audited[0].rule, Some(DecisionRule::NewerWins));
        let pm_newer = item(Mode::Adopt, &SyncStatus::Synced, &s, Policy::PmWins);
        assert!(pm_newer.take.is_empty());
        assert_eq!(pm_newer.audited[0].verdict, Verdict::WriteMail);
    }
}
