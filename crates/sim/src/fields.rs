//! Task properties by field URI: which exist, which a client may set, how shapes pick them, and
//! the Status / PercentComplete / CompleteDate coupling Exchange applies.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/fielduri>
//! and <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/percentcomplete>.

use chrono::{DateTime, Utc};

use taskbridge_ews::types::{
    BaseShape, ExtendedFieldUri, ExtendedProperty, ItemShape, Path, ResponseCode, Task, TaskStatus,
};

/// Declares the table of unindexed field URIs and the `Task` field each one names.
macro_rules! field_table {
    ($( $uri:literal => $field:ident, $writable:literal; )*) => {
        /// Every field URI the simulator models.
        pub const FIELD_URIS: &[&str] = &[$($uri),*];

        /// Copies the field `uri` from `from` to `to`; false when the URI is not modelled.
        pub fn copy_field(uri: &str, from: &Task, to: &mut Task) -> bool {
            match uri {
                $( $uri => { to.$field = from.$field.clone(); true } )*
                _ => false,
            }
        }

        /// Whether `task` has a value for `uri`.
        pub fn has_field(uri: &str, task: &Task) -> bool {
            match uri {
                $( $uri => task.$field.is_some(), )*
                _ => false,
            }
        }

        /// Removes the value of `uri`.
        fn clear_field(uri: &str, task: &mut Task) {
            match uri {
                $( $uri => task.$field = None, )*
                _ => {}
            }
        }

        /// Whether a client may set or delete `uri`; `None` when it is not modelled.
        pub fn is_writable(uri: &str) -> Option<bool> {
            match uri {
                $( $uri => Some($writable), )*
                _ => None,
            }
        }

        /// The field URIs `task` has a value for.
        pub fn present_fields(task: &Task) -> Vec<&'static str> {
            let mut out = Vec::new();
            $( if task.$field.is_some() { out.push($uri); } )*
            out
        }
    };
}

field_table! {
    "item:ItemId" => item_id, false;
    "item:ParentFolderId" => parent_folder_id, false;
    "item:ItemClass" => item_class, true;
    "item:Subject" => subject, true;
    "item:Sensitivity" => sensitivity, true;
    "item:Body" => body, true;
    "item:DateTimeReceived" => date_time_received, false;
    "item:Size" => size, false;
    "item:Categories" => categories, true;
    "item:Importance" => importance, true;
    "item:DateTimeSent" => date_time_sent, false;
    "item:DateTimeCreated" => date_time_created, false;
    "item:ReminderDueBy" => reminder_due_by, true;
    "item:ReminderIsSet" => reminder_is_set, true;
    "item:HasAttachments" => has_attachments, false;
    "item:LastModifiedName" => last_modified_name, false;
    "item:LastModifiedTime" => last_modified_time, false;
    "task:ActualWork" => actual_work, true;
    "task:ChangeCount" => change_count, false;
    "task:Companies" => companies, true;
    "task:CompleteDate" => complete_date, true;
    "task:DueDate" => due_date, true;
    "task:IsComplete" => is_complete, false;
    "task:IsRecurring" => is_recurring, false;
    "task:Owner" => owner, false;
    "task:PercentComplete" => percent_complete, true;
    "task:StartDate" => start_date, true;
    "task:Status" => status, true;
    "task:StatusDescription" => status_description, false;
    "task:TotalWork" => total_work, true;
}

/// The fields of the Default shape for a task.
///
// Microsoft's "Property sets and response shapes" page lists the Default shape per item type;
// this is our reading of it for tasks (the id, the subject and the progress fields).
const DEFAULT_SHAPE: &[&str] = &[
    "item:ItemId",
    "item:Subject",
    "item:HasAttachments",
    "task:DueDate",
    "task:IsComplete",
    "task:IsRecurring",
    "task:PercentComplete",
    "task:Status",
];

/// Clears the task-only fields (for an item of another kind).
pub fn clear_task_fields(task: &mut Task) {
    let empty = Task::default();
    for uri in FIELD_URIS {
        if uri.starts_with("task:") {
            copy_field(uri, &empty, task);
        }
    }
}

/// The key under which a property's last change is tracked for conflict detection.
///
/// Status, PercentComplete, CompleteDate and IsComplete are coupled, so they are one property
/// for conflicts: changing any of them changes the others.
pub fn conflict_key(path: &Path) -> String {
    match path {
        Path::FieldUri(uri) => match uri.as_str() {
            "task:Status" | "task:PercentComplete" | "task:CompleteDate" | "task:IsComplete" => {
                "task:Status".to_string()
            }
            other => other.to_string(),
        },
        Path::ExtendedFieldUri(x) => extended_key(x),
    }
}

/// A normalized name for an extended property (set GUIDs compare case-insensitively).
pub fn extended_key(x: &ExtendedFieldUri) -> String {
    format!(
        "ext:{}:{}:{}:{}:{}",
        x.distinguished_property_set_id
            .as_ref()
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
        x.property_set_id
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        x.property_tag
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        x.property_name.as_deref().unwrap_or_default(),
        x.property_id.map(|i| i.to_string()).unwrap_or_default()
    )
}

/// Picks from `full` (every property the item has, extended ones included) what `shape` asks
/// for.
///
/// Extended properties are only returned when asked for by path, as Exchange does.
pub fn apply_shape(full: &Task, shape: &ItemShape, drop_body: bool) -> Task {
    let mut out = Task::default();
    match shape.base_shape {
        BaseShape::IdOnly => out.item_id = full.item_id.clone(),
        BaseShape::Default => {
            for uri in DEFAULT_SHAPE {
                copy_field(uri, full, &mut out);
            }
        }
        _ => {
            out = full.clone();
            out.extended_properties.clear();
        }
    }
    if let Some(extra) = &shape.additional_properties {
        for path in &extra.0 {
            match path {
                Path::FieldUri(uri) => {
                    copy_field(uri, full, &mut out);
                }
                Path::ExtendedFieldUri(x) => {
                    for p in &full.extended_properties {
                        if p.extended_field_uri.same_property(x)
                            && !out
                                .extended_properties
                                .iter()
                                .any(|o| o.extended_field_uri.same_property(x))
                        {
                            out.extended_properties.push(p.clone());
                        }
                    }
                }
            }
        }
    }
    if drop_body {
        // FindItem never returns the body, whatever the shape says.
        out.body = None;
    }
    out
}

/// A per-item failure: the response code and its message text.
pub type ItemError = (ResponseCode, String);

fn code(name: &str) -> ResponseCode {
    ResponseCode::Other(name.to_string())
}

/// Checks the writable fields a client sent in a CreateItem task.
pub fn check_create(task: &Task) -> Result<(), ItemError> {
    for uri in present_fields(task) {
        if is_writable(uri) == Some(false) {
            return Err((
                code("ErrorInvalidPropertySet"),
                format!("Set action is invalid for property. ({uri})"),
            ));
        }
    }
    check_values(task)
}

fn check_values(task: &Task) -> Result<(), ItemError> {
    if let Some(p) = task.percent_complete
        && !(0.0..=100.0).contains(&p)
    {
        return Err((
            code("ErrorInvalidPercentCompleteValue"),
            "PercentComplete must be an actual number between 0 and 100.".into(),
        ));
    }
    if let Some(TaskStatus::Other(s)) = &task.status {
        return Err((
            ResponseCode::ErrorInvalidValueForProperty,
            format!("The value {s:?} is not a valid task status."),
        ));
    }
    for p in &task.extended_properties {
        if p.value.is_none() && p.values.is_none() {
            return Err((
                code("ErrorInvalidExtendedPropertyValue"),
                "An extended property needs a Value or Values.".into(),
            ));
        }
    }
    Ok(())
}

/// The text Exchange writes in StatusDescription (English mailbox).
pub fn status_description(status: &TaskStatus) -> &'static str {
    match status {
        TaskStatus::NotStarted => "Not Started",
        TaskStatus::InProgress => "In Progress",
        TaskStatus::Completed => "Completed",
        TaskStatus::WaitingOnOthers => "Waiting on someone else",
        TaskStatus::Deferred => "Deferred",
        // Other(_) and any status a later schema adds.
        _ => "Not Started",
    }
}

/// The coupled fields a change touched, applied in the order Exchange processes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coupled {
    /// `task:Status` was set.
    Status,
    /// `task:PercentComplete` was set.
    PercentComplete,
    /// `task:CompleteDate` was set.
    CompleteDate,
    /// `task:CompleteDate` was deleted.
    CompleteDateDeleted,
}

/// Applies Exchange's coupling after one coupled field changed; the last one processed wins.
///
/// - Status Completed means PercentComplete 100 and a CompleteDate (now, unless one is set).
/// - Status NotStarted means PercentComplete 0; leaving Completed for any other status resets
///   PercentComplete to 0 and clears CompleteDate.
/// - PercentComplete 100 means Completed; 0 means NotStarted; between them, a task that was
///   NotStarted or Completed becomes InProgress (WaitingOnOthers and Deferred stay).
/// - Setting CompleteDate completes the task; deleting it reopens it as NotStarted.
pub fn couple(task: &mut Task, changed: Coupled, now: DateTime<Utc>) {
    let was_complete = task.status == Some(TaskStatus::Completed);
    match changed {
        Coupled::Status => match task.status.clone().unwrap_or(TaskStatus::NotStarted) {
            TaskStatus::Completed => {
                task.percent_complete = Some(100.0);
                if task.complete_date.is_none() {
                    task.complete_date = Some(now);
                }
            }
            TaskStatus::NotStarted => {
                task.percent_complete = Some(0.0);
                task.complete_date = None;
            }
            _ => {
                let p = task.percent_complete.unwrap_or(0.0);
                if p >= 100.0 {
                    task.percent_complete = Some(0.0);
                }
                task.complete_date = None;
            }
        },
        Coupled::PercentComplete => {
            let p = task.percent_complete.unwrap_or(0.0);
            if p >= 100.0 {
                task.status = Some(TaskStatus::Completed);
                if task.complete_date.is_none() {
                    task.complete_date = Some(now);
                }
            } else if p <= 0.0 {
                task.status = Some(TaskStatus::NotStarted);
                task.complete_date = None;
            } else {
                if was_complete || matches!(task.status, None | Some(TaskStatus::NotStarted)) {
                    task.status = Some(TaskStatus::InProgress);
                }
                task.complete_date = None;
            }
        }
        Coupled::CompleteDate => {
            task.status = Some(TaskStatus::Completed);
            task.percent_complete = Some(100.0);
        }
        Coupled::CompleteDateDeleted => {
            if was_complete {
                task.status = Some(TaskStatus::NotStarted);
                task.percent_complete = Some(0.0);
            }
        }
    }
    normalize(task);
}

/// Fills the fields Exchange always derives: Status and PercentComplete defaults, IsComplete
/// and StatusDescription.
pub fn normalize(task: &mut Task) {
    let status = task.status.clone().unwrap_or(TaskStatus::NotStarted);
    task.is_complete = Some(status == TaskStatus::Completed);
    task.status_description = Some(status_description(&status).to_string());
    task.status = Some(status);
    if task.percent_complete.is_none() {
        task.percent_complete = Some(0.0);
    }
}

/// Applies a CreateItem task's coupled fields in processing order (CompleteDate,
/// PercentComplete, Status: their schema order).
pub fn couple_created(task: &mut Task, now: DateTime<Utc>) {
    let complete_date = task.complete_date.take();
    let percent = task.percent_complete.take();
    let status = task.status.take();
    if let Some(d) = complete_date {
        task.complete_date = Some(d);
        couple(task, Coupled::CompleteDate, now);
    }
    if let Some(p) = percent {
        task.percent_complete = Some(p);
        couple(task, Coupled::PercentComplete, now);
    }
    if let Some(s) = status {
        task.status = Some(s);
        couple(task, Coupled::Status, now);
    }
    normalize(task);
}

/// An error from applying one update.
pub fn apply_set(
    task: &mut Task,
    path: &Path,
    value: &Task,
    now: DateTime<Utc>,
) -> Result<(), ItemError> {
    match path {
        Path::FieldUri(uri) => {
            match is_writable(uri) {
                None => {
                    return Err((
                        ResponseCode::ErrorInvalidPropertyRequest,
                        format!("The property {uri} is not supported by this server."),
                    ));
                }
                Some(false) => {
                    return Err((
                        code("ErrorInvalidPropertySet"),
                        format!("Set action is invalid for property. ({uri})"),
                    ));
                }
                Some(true) => {}
            }
            if !has_field(uri, value) {
                return Err((
                    code("ErrorIncorrectUpdatePropertyCount"),
                    "An object within a change description must contain one and only one property to modify.".into(),
                ));
            }
            check_values(value)?;
            copy_field(uri, value, task);
            match uri.as_str() {
                "task:Status" => couple(task, Coupled::Status, now),
                "task:PercentComplete" => couple(task, Coupled::PercentComplete, now),
                "task:CompleteDate" => couple(task, Coupled::CompleteDate, now),
                _ => {}
            }
            Ok(())
        }
        Path::ExtendedFieldUri(x) => {
            let mut matching = value
                .extended_properties
                .iter()
                .filter(|p| p.extended_field_uri.same_property(x));
            let (Some(new), None) = (matching.next(), matching.next()) else {
                return Err((
                    code("ErrorIncorrectUpdatePropertyCount"),
                    "An object within a change description must contain one and only one property to modify.".into(),
                ));
            };
            check_values(&Task {
                extended_properties: vec![new.clone()],
                ..Task::default()
            })?;
            set_extended(task, new.clone());
            Ok(())
        }
    }
}

fn set_extended(task: &mut Task, new: ExtendedProperty) {
    match task
        .extended_properties
        .iter_mut()
        .find(|p| p.extended_field_uri.same_property(&new.extended_field_uri))
    {
        Some(slot) => *slot = new,
        None => task.extended_properties.push(new),
    }
}

/// Applies a DeleteItemField.
pub fn apply_delete(task: &mut Task, path: &Path, now: DateTime<Utc>) -> Result<(), ItemError> {
    match path {
        Path::FieldUri(uri) => {
            match is_writable(uri) {
                None => {
                    return Err((
                        ResponseCode::ErrorInvalidPropertyRequest,
                        format!("The property {uri} is not supported by this server."),
                    ));
                }
                Some(false) => {
                    return Err((
                        code("ErrorInvalidPropertyDelete"),
                        format!("Delete action is invalid for property. ({uri})"),
                    ));
                }
                Some(true) => {}
            }
            match uri.as_str() {
                "task:Status" => {
                    task.status = None;
                    couple(task, Coupled::Status, now);
                }
                "task:PercentComplete" => {
                    task.percent_complete = Some(0.0);
                    couple(task, Coupled::PercentComplete, now);
                }
                "task:CompleteDate" => {
                    task.complete_date = None;
                    couple(task, Coupled::CompleteDateDeleted, now);
                }
                _ => clear_field(uri, task),
            }
            Ok(())
        }
        Path::ExtendedFieldUri(x) => {
            task.extended_properties
                .retain(|p| !p.extended_field_uri.same_property(x));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .expect("date")
            .with_timezone(&Utc)
    }

    fn set(task: &mut Task, uri: &str, value: Task) {
        apply_set(task, &Path::field(uri), &value, now()).expect("set");
    }

    #[test]
    fn coupling_status_completed_sets_percent_and_date() {
        let mut t = Task::default();
        normalize(&mut t);
        set(
            &mut t,
            "task:Status",
            Task {
                status: Some(TaskStatus::Completed),
                ..Task::default()
            },
        );
        assert_eq!(t.percent_complete, Some(100.0));
        assert_eq!(t.complete_date, Some(now()));
        assert_eq!(t.is_complete, Some(true));
        assert_eq!(t.status_description.as_deref(), Some("Completed"));
    }

    #[test]
    fn coupling_percent_moves_status_and_last_one_wins() {
        let mut t = Task::default();
        normalize(&mut t);
        let pct = |p| Task {
            percent_complete: Some(p),
            ..Task::default()
        };
        set(&mut t, "task:PercentComplete", pct(100.0));
        assert_eq!(t.status, Some(TaskStatus::Completed));
        set(&mut t, "task:PercentComplete", pct(40.0));
        assert_eq!(t.status, Some(TaskStatus::InProgress));
        assert_eq!(t.complete_date, None);
        set(&mut t, "task:PercentComplete", pct(0.0));
        assert_eq!(t.status, Some(TaskStatus::NotStarted));
        // Status after PercentComplete in one request: the status wins.
        set(&mut t, "task:PercentComplete", pct(30.0));
        set(
            &mut t,
            "task:Status",
            Task {
                status: Some(TaskStatus::Completed),
                ..Task::default()
            },
        );
        assert_eq!(t.percent_complete, Some(100.0));
        let mut w = Task {
            status: Some(TaskStatus::WaitingOnOthers),
            ..Task::default()
        };
        normalize(&mut w);
        set(&mut w, "task:PercentComplete", pct(50.0));
        assert_eq!(w.status, Some(TaskStatus::WaitingOnOthers));
    }

    #[test]
    fn read_only_fields_are_refused() {
        let mut t = Task::default();
        let err = apply_set(
            &mut t,
            &Path::field("task:IsComplete"),
            &Task {
                is_complete: Some(true),
                ..Task::default()
            },
            now(),
        )
        .expect_err("read-only");
        assert_eq!(err.0.as_str(), "ErrorInvalidPropertySet");
        let err = apply_set(
            &mut t,
            &Path::field("item:Subject"),
            &Task::default(),
            now(),
        )
        .expect_err("no value");
        assert_eq!(err.0.as_str(), "ErrorIncorrectUpdatePropertyCount");
    }
}
