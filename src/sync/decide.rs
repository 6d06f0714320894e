//! Deciding, field by field, which side's value stands (claim step "determining whether the
//! received task attributes ... are newer").
//!
//! Pure and table-tested. For each mapped field, the baseline (last-synced value), the PM
//! side's current value and the mailbox's current value give one [`FieldDecision`]; the
//! executor then acts on the whole list.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mapping::{Direction, FieldTable, MailField, MailValues};
use crate::state::{Baseline, DecisionRule, Side};

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
            let b = base.values.encode_field(f);
            let p = pm.encode_field(f);
            let m = mail.encode_field(f);
            decide_field(
                f,
                p != b,
                m != b,
                p == m,
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
}
