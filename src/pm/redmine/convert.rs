//! Redmine issues in the PM model: one project per Redmine project, one task per issue, one
//! resource per assignee, one assignment per open issue with an assignee who has an e-mail
//! address; field change times from the issue's journal. Pure: no I/O.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use super::api::{Issue, Named, User};
use crate::pm::{
    Assignment, AssignmentField, AssignmentUid, FieldTimes, Percent, Project, ProjectGuid,
    Resource, ResourceUid, Task, TaskUid, Work,
};

/// The priority a Redmine priority below the default gets (mailbox Low).
pub const LOW_PRIORITY: u16 = 100;
/// The default priority's (mailbox Normal).
pub const NORMAL_PRIORITY: u16 = Task::DEFAULT_PRIORITY;
/// A priority above the default's (mailbox High).
pub const HIGH_PRIORITY: u16 = 900;

/// Where a day's work starts and ends, for Redmine's dates (the model's dates have times).
const DAY_START: (u32, u32) = (8, 0);
const DAY_END: (u32, u32) = (17, 0);

/// The stable GUID of a Redmine project: derived from the Redmine URL and the project's
/// identifier, so it is the same at every start and differs between two Redmines.
pub fn project_guid(base: &str, identifier: &str) -> ProjectGuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("redmine:{base}:{identifier}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    ProjectGuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// The assignment of `issue` to `user`: a reassigned issue is another assignment, so its task
/// moves to the new assignee's mailbox.
pub fn assignment_uid(issue: i64, user: i64) -> AssignmentUid {
    AssignmentUid((issue << 32) | (user & 0xffff_ffff))
}

/// The issue of an assignment made by [`assignment_uid`].
pub fn issue_of(uid: AssignmentUid) -> i64 {
    uid.0 >> 32
}

/// Priorities in Redmine's order (lowest first) and the default's position, as PM priorities:
/// below the default Low, the default Normal, above it High.
pub fn priority_of(priorities: &[Named], id: i64) -> u16 {
    let default = priorities.iter().position(|p| p.is_default);
    let at = priorities.iter().position(|p| p.id == id);
    match (at, default) {
        (Some(at), Some(d)) if at < d => LOW_PRIORITY,
        (Some(at), Some(d)) if at > d => HIGH_PRIORITY,
        _ => NORMAL_PRIORITY,
    }
}

/// Hours as work, to the second.
pub fn hours_to_work(hours: f64) -> Work {
    Work::from_seconds((hours.max(0.0) * 3600.0).round() as i64)
}

/// Work as hours, to the second.
pub fn work_to_hours(work: Work) -> f64 {
    work.seconds() as f64 / 3600.0
}

/// The assignment fields a journal detail changes.
fn fields_of(name: &str) -> &'static [AssignmentField] {
    use AssignmentField as F;
    match name {
        "subject" => &[F::Name],
        "description" => &[F::Notes],
        "start_date" => &[F::Start],
        "due_date" => &[F::Finish],
        "estimated_hours" => &[F::Work, F::RemainingWork],
        "done_ratio" => &[F::PercentWorkComplete],
        // A status closes the issue (Completed) or, where Redmine takes % done from the
        // status, sets the percentage.
        "status_id" => &[F::PercentWorkComplete],
        "priority_id" => &[F::Priority],
        _ => &[],
    }
}

/// When each field of an issue last changed: its creation for all, then each journal detail's
/// time for the fields it changed; spent time from the latest time entry.
pub fn field_times(issue: &Issue, last_time_entry: Option<DateTime<Utc>>) -> FieldTimes {
    let mut t = FieldTimes::new();
    for f in AssignmentField::ALL {
        t.set(f, issue.created_on);
    }
    for j in &issue.journals {
        for d in j.details.iter().filter(|d| d.property == "attr") {
            for f in fields_of(&d.name) {
                t.touch(*f, j.created_on);
            }
        }
    }
    if let Some(at) = last_time_entry {
        t.touch(AssignmentField::ActualWork, at);
        t.touch(AssignmentField::RemainingWork, at);
    }
    t
}

fn at(date: NaiveDate, (h, m): (u32, u32)) -> NaiveDateTime {
    date.and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default())
}

/// What the host knows about an issue besides the issue itself.
pub struct IssueExtras {
    /// Hours booked on it.
    pub spent_hours: f64,
    /// The latest booking.
    pub last_time_entry: Option<DateTime<Utc>>,
    /// Field change times, when its journal was read.
    pub times: Option<FieldTimes>,
}

/// How issues become a project.
pub struct Shape<'a> {
    /// The Redmine URL (for links).
    pub base: &'a str,
    /// The zone Redmine's dates are local to.
    pub zone: Tz,
    /// Priorities in Redmine's order.
    pub priorities: &'a [Named],
}

impl Shape<'_> {
    /// The task of an issue.
    pub fn task(&self, issue: &Issue) -> Task {
        let start = issue
            .start_date
            .unwrap_or_else(|| issue.created_on.with_timezone(&self.zone).date_naive());
        let finish = issue.due_date.unwrap_or(start).max(start);
        let mut notes = issue.description.clone().unwrap_or_default();
        if !notes.trim().is_empty() {
            notes.push_str("\n\n");
        }
        notes.push_str(&format!("{}/issues/{}", self.base, issue.id));
        Task {
            uid: TaskUid(issue.id),
            name: format!("#{} {}", issue.id, issue.subject),
            notes,
            start: at(start, DAY_START),
            finish: at(finish, DAY_END),
            work: hours_to_work(issue.estimated_hours.unwrap_or(0.0)),
            priority: priority_of(self.priorities, issue.priority.id),
            percent_work_complete: Percent::from_i64(issue.done_ratio).unwrap_or(Percent::ZERO),
            summary: false,
            milestone: false,
            outline_level: 1,
        }
    }

    /// The assignment of an issue to its assignee.
    pub fn assignment(&self, issue: &Issue, user: i64, extras: &IssueExtras) -> Assignment {
        let task = self.task(issue);
        let work = task.work;
        let actual = hours_to_work(extras.spent_hours);
        let modified = extras
            .times
            .clone()
            .unwrap_or_else(|| field_times(issue, extras.last_time_entry));
        Assignment {
            uid: assignment_uid(issue.id, user),
            task_uid: task.uid,
            resource_uid: ResourceUid(user),
            start: task.start,
            finish: task.finish,
            work,
            actual_work: actual,
            remaining_work: work.saturating_sub(actual).max(Work::ZERO),
            percent_work_complete: task.percent_work_complete,
            actual_finish: None,
            modified,
        }
    }

    /// The project of `issues` (open and in scope) with their assignees among `users`: an
    /// issue without an assignee, assigned to a group, or to someone without an e-mail address
    /// has a task but no assignment.
    pub fn project(
        &self,
        guid: ProjectGuid,
        name: &str,
        issues: &[Issue],
        users: &HashMap<i64, User>,
        extras: &HashMap<i64, IssueExtras>,
    ) -> Project {
        let mut tasks = Vec::new();
        let mut resources: Vec<Resource> = Vec::new();
        let mut assignments = Vec::new();
        let none = IssueExtras {
            spent_hours: 0.0,
            last_time_entry: None,
            times: None,
        };
        for issue in issues {
            tasks.push(self.task(issue));
            let Some(user) = issue
                .assigned_to
                .as_ref()
                .and_then(|r| users.get(&r.id))
                .filter(|u| u.mail.as_deref().is_some_and(|m| !m.trim().is_empty()))
            else {
                continue;
            };
            if !resources.iter().any(|r| r.uid.0 == user.id) {
                resources.push(Resource {
                    uid: ResourceUid(user.id),
                    name: format!("{} {}", user.firstname, user.lastname)
                        .trim()
                        .to_string(),
                    email: user.mail.clone(),
                    time_zone: None,
                });
            }
            let e = extras.get(&issue.id).unwrap_or(&none);
            assignments.push(self.assignment(issue, user.id, e));
        }
        Project {
            guid,
            name: name.to_string(),
            time_zone: self.zone,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks,
            resources,
            assignments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: i64, default: bool) -> Named {
        Named {
            id,
            name: format!("p{id}"),
            is_default: default,
            is_closed: false,
        }
    }

    #[test]
    fn priority_follows_the_position_around_the_default() {
        let p = [
            named(1, false),
            named(2, true),
            named(3, false),
            named(4, false),
        ];
        assert_eq!(priority_of(&p, 1), LOW_PRIORITY);
        assert_eq!(priority_of(&p, 2), NORMAL_PRIORITY);
        assert_eq!(priority_of(&p, 3), HIGH_PRIORITY);
        assert_eq!(priority_of(&p, 4), HIGH_PRIORITY);
        assert_eq!(priority_of(&p, 99), NORMAL_PRIORITY);
    }

    #[test]
    fn assignment_uid_keeps_issue_and_user_apart() {
        let uid = assignment_uid(123_456, 77);
        assert_eq!(issue_of(uid), 123_456);
        assert_ne!(uid, assignment_uid(123_456, 78));
    }

    #[test]
    fn project_guid_is_stable_and_per_redmine() {
        let a = project_guid("http://a", "web");
        assert_eq!(a, project_guid("http://a", "web"));
        assert_ne!(a, project_guid("http://b", "web"));
        assert_ne!(a, project_guid("http://a", "app"));
    }

    #[test]
    fn journal_details_stamp_their_fields() {
        let issue: Issue = serde_json::from_value(serde_json::json!({
            "id": 5, "project": {"id": 1, "name": "P"}, "tracker": {"id": 1, "name": "Bug"},
            "status": {"id": 1, "name": "New"}, "priority": {"id": 2, "name": "Normal"},
            "subject": "s", "done_ratio": 40,
            "created_on": "2026-01-01T10:00:00Z", "updated_on": "2026-01-03T10:00:00Z",
            "journals": [
                {"created_on": "2026-01-02T10:00:00Z", "details": [
                    {"property": "attr", "name": "done_ratio", "old_value": "0", "new_value": "40"}]},
                {"created_on": "2026-01-03T10:00:00Z", "details": [
                    {"property": "attr", "name": "due_date", "old_value": null, "new_value": "2026-02-01"}]}
            ]
        }))
        .expect("issue");
        let t = field_times(&issue, None);
        let day = |d: u32| {
            format!("2026-01-0{d}T10:00:00Z")
                .parse::<DateTime<Utc>>()
                .unwrap()
        };
        assert_eq!(t.get(AssignmentField::PercentWorkComplete), Some(day(2)));
        assert_eq!(t.get(AssignmentField::Finish), Some(day(3)));
        assert_eq!(t.get(AssignmentField::Name), Some(day(1)));
        assert_eq!(t.get(AssignmentField::ActualWork), Some(day(1)));
    }
}
