//! Microsoft Project XML (MSPDI) reader: a single streaming pass over `quick_xml::NsReader`
//! events, no DOM and no serde.
//!
//! Elements are matched by namespace and local name. Project, and to our knowledge the MPXJ-based
//! exporters of ProjectLibre and GanttProject, write the default namespace
//! `http://schemas.microsoft.com/project`; some other exporters write no namespace at all, and the Project 2007 SDK schema declares
//! `http://schemas.microsoft.com/project/2007`; all three are read as MSPDI. Elements in any other
//! namespace, and MSPDI elements this reader has no use for (calendars, baselines, timephased
//! data, extended attributes, ...), are skipped. Only the direct children of `Project`, `Task`,
//! `Resource` and `Assignment` are read, so a `Work` inside a `Baseline` is never taken for the
//! assignment's work.
//!
//! Refused: a DOCTYPE (no DTD means no entity expansion), entity references other than XML's five
//! predefined ones, and inputs over [`ImportOptions::max_bytes`].
//!
//! See <https://learn.microsoft.com/office-project/xml-data-interchange/introduction-to-project-xml-data>.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use quick_xml::events::{BytesRef, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::{
    DEFAULT_MINUTES_PER_DAY, DEFAULT_MINUTES_PER_WEEK, Ids, ImportError, ImportOptions,
    MINUTES_PER_DAY_RANGE, MINUTES_PER_WEEK_RANGE, OUTLINE_LEVEL_RANGE, PRIORITY_RANGE, Place,
    Site, ValueError, check_references, check_size, parse_int_in, parse_local_datetime,
};
use crate::pm::model::{
    Assignment, AssignmentUid, FieldTimes, Percent, Project, ProjectGuid, Resource, ResourceUid,
    Task, TaskUid, Work, percent_of,
};

/// The MSPDI namespace.
pub const MSPDI_NAMESPACE: &str = "http://schemas.microsoft.com/project";

/// Reads an MSPDI document.
///
/// What is read, under `Project`: `Title` (or `Name`, which Project fills with the file name,
/// when there is no title), `GUID`, `MinutesPerDay`, `MinutesPerWeek`, `StartDate`; every
/// `Tasks/Task`, `Resources/Resource` and `Assignments/Assignment` with the fields of the model.
/// Tasks and resources with `IsNull` set (blank rows) are skipped. Material and cost resources
/// and the UID 0 placeholder resource are kept without an e-mail address. An assignment without
/// `Start`/`Finish` takes its task's; without `RemainingWork`, it is `Work - ActualWork` (never
/// below zero); without `PercentWorkComplete`, it follows from the work as in
/// [`percent_of`]; `ActualFinish` is read when present. Empty numeric elements count as absent.
pub fn parse_mspdi(text: &str, options: &ImportOptions) -> Result<Project, ImportError> {
    check_size(text, options)?;
    // A byte order mark is not markup; dropping it keeps line 1's columns right.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new(text);
    parser.run()?;
    parser.finish(options)
}

/// An element that is open: its name as it will be reported, whether it is an MSPDI element,
/// and where its start tag begins (byte offset of `<`).
#[derive(Debug)]
struct Open {
    name: String,
    mspdi: bool,
    start: usize,
}

/// The text of a leaf element that has just closed, with what is needed to say where it was.
/// The place is only worked out on error: counting lines for every element would make reading
/// quadratic in the file size.
struct Leaf<'p> {
    text: &'p str,
    source: &'p str,
    parents: &'p [Open],
    name: &'p str,
    start: usize,
}

impl Leaf<'_> {
    fn place(&self) -> Place {
        let mut path: Vec<&str> = self.parents.iter().map(|o| o.name.as_str()).collect();
        path.push(self.name);
        Place::in_text(path.join("/"), self.source, self.start)
    }

    /// The value read by `parse`, or `None` when the element is empty or blank.
    fn optional<T>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<Option<T>, ImportError> {
        let trimmed = self.text.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        parse(trimmed)
            .map(Some)
            .map_err(|source| ImportError::InvalidValue {
                at: self.place(),
                value: self.text.to_owned(),
                source: Box::new(source),
            })
    }
}

#[derive(Debug, Default)]
struct ProjectDraft {
    name: Option<String>,
    title: Option<String>,
    guid: Option<ProjectGuid>,
    minutes_per_day: Option<u32>,
    minutes_per_week: Option<u32>,
    start: Option<NaiveDateTime>,
}

#[derive(Debug, Default)]
struct TaskDraft {
    start_tag: usize,
    uid: Option<(TaskUid, usize)>,
    name: String,
    notes: String,
    start: Option<NaiveDateTime>,
    finish: Option<NaiveDateTime>,
    work: Option<Work>,
    priority: Option<u16>,
    percent_work_complete: Option<Percent>,
    summary: bool,
    milestone: bool,
    outline_level: Option<u16>,
    is_null: bool,
}

/// MSPDI `Resource/Type`: 0 material, 1 work, 2 cost (the last since Project 2010; before, a
/// cost resource is a work resource with `IsCostResource` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ResourceType {
    Material,
    #[default]
    Work,
    Cost,
}

#[derive(Debug, Default)]
struct ResourceDraft {
    start_tag: usize,
    uid: Option<(ResourceUid, usize)>,
    name: String,
    email: Option<String>,
    kind: ResourceType,
    is_cost_resource: bool,
    is_null: bool,
}

#[derive(Debug, Default)]
struct AssignmentDraft {
    start_tag: usize,
    uid: Option<(AssignmentUid, usize)>,
    task_uid: Option<(TaskUid, usize)>,
    resource_uid: Option<(ResourceUid, usize)>,
    start: Option<NaiveDateTime>,
    finish: Option<NaiveDateTime>,
    work: Option<Work>,
    actual_work: Option<Work>,
    remaining_work: Option<Work>,
    percent_work_complete: Option<Percent>,
    actual_finish: Option<NaiveDateTime>,
}

/// A task as read, before cross-record checks.
struct ReadTask {
    uid_at: usize,
    start_tag: usize,
    task: Task,
    /// The values the file gave; those it left out are derived in `derive_task_values`.
    start: Option<NaiveDateTime>,
    finish: Option<NaiveDateTime>,
    work: Option<Work>,
    percent_work_complete: Option<Percent>,
}

/// A resource as read, before cross-record checks.
struct ReadResource {
    uid_at: usize,
    resource: Resource,
}

/// An assignment as read, before cross-record checks.
struct ReadAssignment {
    uid: AssignmentUid,
    uid_at: usize,
    task_uid: TaskUid,
    task_at: usize,
    resource_uid: ResourceUid,
    resource_at: usize,
    draft: AssignmentDraft,
}

struct Parser<'a> {
    text: &'a str,
    reader: NsReader<&'a [u8]>,
    stack: Vec<Open>,
    /// Text of the innermost element since its start tag (cleared by every start tag, so only a
    /// leaf keeps its whole text).
    leaf_text: String,
    root_seen: bool,
    project: ProjectDraft,
    task: Option<TaskDraft>,
    resource: Option<ResourceDraft>,
    assignment: Option<AssignmentDraft>,
    tasks: Vec<ReadTask>,
    resources: Vec<ReadResource>,
    assignments: Vec<ReadAssignment>,
}

const TASK: [&str; 3] = ["Project", "Tasks", "Task"];
const RESOURCE: [&str; 3] = ["Project", "Resources", "Resource"];
const ASSIGNMENT: [&str; 3] = ["Project", "Assignments", "Assignment"];

/// What the MSPDI element `name`, closing inside `parents`, is to the reader.
enum Closing {
    ProjectField,
    TaskField,
    ResourceField,
    AssignmentField,
    Task,
    Resource,
    Assignment,
    Other,
}

fn classify(parents: &[Open], name: &str) -> Closing {
    let record = |path: &[&str; 3]| parents_are(parents, &path[..2]) && name == path[2];
    if parents_are(parents, &["Project"]) {
        Closing::ProjectField
    } else if parents_are(parents, &TASK) {
        Closing::TaskField
    } else if parents_are(parents, &RESOURCE) {
        Closing::ResourceField
    } else if parents_are(parents, &ASSIGNMENT) {
        Closing::AssignmentField
    } else if record(&TASK) {
        Closing::Task
    } else if record(&RESOURCE) {
        Closing::Resource
    } else if record(&ASSIGNMENT) {
        Closing::Assignment
    } else {
        Closing::Other
    }
}

/// Whether `stack` is exactly the MSPDI elements `want`.
fn parents_are(stack: &[Open], want: &[&str]) -> bool {
    stack.len() == want.len()
        && stack
            .iter()
            .zip(want)
            .all(|(open, name)| open.mspdi && open.name == *name)
}

/// Whether a resolved namespace is one MSPDI is written in.
fn is_mspdi(ns: &ResolveResult<'_>) -> bool {
    match ns {
        ResolveResult::Unbound => true,
        ResolveResult::Bound(ns) => {
            let ns = ns.0.trim_end_matches('/');
            // The Project 2007 SDK schema's targetNamespace is ".../project/2007".
            ns == MSPDI_NAMESPACE || ns.starts_with("http://schemas.microsoft.com/project/")
        }
        ResolveResult::Unknown(_) => false,
    }
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        let mut reader = NsReader::from_str(text);
        // Leaf text is kept verbatim (notes keep their spacing); trimming is per field.
        reader.config_mut().trim_text(false);
        reader.config_mut().check_end_names = true;
        reader.config_mut().expand_empty_elements = false;
        Parser {
            text,
            reader,
            stack: Vec::new(),
            leaf_text: String::new(),
            root_seen: false,
            project: ProjectDraft::default(),
            task: None,
            resource: None,
            assignment: None,
            tasks: Vec::new(),
            resources: Vec::new(),
            assignments: Vec::new(),
        }
    }

    fn path(&self) -> String {
        let names: Vec<&str> = self.stack.iter().map(|o| o.name.as_str()).collect();
        names.join("/")
    }

    fn place(&self, offset: usize) -> Place {
        Place::in_text(self.path(), self.text, offset)
    }

    /// The place of the innermost open element's start tag.
    fn here(&self) -> Place {
        self.place(self.stack.last().map_or(0, |o| o.start))
    }

    /// Whether the open elements are exactly the MSPDI elements `want`.
    fn at(&self, want: &[&str]) -> bool {
        parents_are(&self.stack, want)
    }

    fn run(&mut self) -> Result<(), ImportError> {
        loop {
            let before = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
            let (mspdi, event) = match self.reader.read_resolved_event() {
                Ok((ns, event)) => (is_mspdi(&ns), event),
                Err(source) => {
                    let offset =
                        usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
                    return Err(ImportError::Xml {
                        at: self.place(offset),
                        source,
                    });
                }
            };
            let after = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
            match event {
                Event::Start(start) => {
                    self.open(
                        start.name().as_ref(),
                        start.local_name().as_ref(),
                        mspdi,
                        after,
                    )?;
                }
                Event::Empty(start) => {
                    self.open(
                        start.name().as_ref(),
                        start.local_name().as_ref(),
                        mspdi,
                        after,
                    )?;
                    if self.close()? {
                        return Ok(());
                    }
                }
                Event::End(_) => {
                    if self.close()? {
                        return Ok(());
                    }
                }
                Event::Text(text) => self.leaf_text.push_str(&text.xml10_content()),
                Event::CData(data) => self.leaf_text.push_str(&data.xml10_content()),
                Event::GeneralRef(reference) => self.reference(&reference)?,
                Event::DocType(_) => {
                    let start = self.text.get(before..).and_then(|rest| rest.find('<'));
                    return Err(ImportError::DocType {
                        at: self.place(before.saturating_add(start.unwrap_or(0))),
                    });
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => return self.eof(),
            }
        }
    }

    /// Handles a start tag that ends at byte `after`.
    fn open(
        &mut self,
        qualified: &str,
        local: &str,
        mspdi: bool,
        after: usize,
    ) -> Result<(), ImportError> {
        let start = self
            .text
            .get(..after)
            .and_then(|head| head.rfind('<'))
            .unwrap_or(0);
        if !self.root_seen {
            self.root_seen = true;
            if !(mspdi && local == "Project") {
                return Err(ImportError::NotMspdi {
                    found: qualified.to_owned(),
                });
            }
        }
        self.stack.push(Open {
            // Foreign elements are reported as written, prefix and all.
            name: if mspdi { local } else { qualified }.to_owned(),
            mspdi,
            start,
        });
        self.leaf_text.clear();
        if self.at(&TASK) {
            self.task = Some(TaskDraft {
                start_tag: start,
                ..TaskDraft::default()
            });
        } else if self.at(&RESOURCE) {
            self.resource = Some(ResourceDraft {
                start_tag: start,
                ..ResourceDraft::default()
            });
        } else if self.at(&ASSIGNMENT) {
            self.assignment = Some(AssignmentDraft {
                start_tag: start,
                ..AssignmentDraft::default()
            });
        }
        Ok(())
    }

    /// Handles the end of the innermost element; `true` when that was the root.
    fn close(&mut self) -> Result<bool, ImportError> {
        let text = std::mem::take(&mut self.leaf_text);
        let Some(open) = self.stack.pop() else {
            return Ok(true);
        };
        if open.mspdi {
            let field = open.name.as_str();
            let leaf = Leaf {
                text: &text,
                source: self.text,
                parents: &self.stack,
                name: field,
                start: open.start,
            };
            match classify(&self.stack, field) {
                Closing::ProjectField => read_project_field(&mut self.project, field, &leaf)?,
                Closing::TaskField => {
                    if let Some(draft) = self.task.as_mut() {
                        read_task_field(draft, field, &leaf)?;
                    }
                }
                Closing::ResourceField => {
                    if let Some(draft) = self.resource.as_mut() {
                        read_resource_field(draft, field, &leaf)?;
                    }
                }
                Closing::AssignmentField => {
                    if let Some(draft) = self.assignment.as_mut() {
                        read_assignment_field(draft, field, &leaf)?;
                    }
                }
                Closing::Task => {
                    if let Some(draft) = self.task.take() {
                        self.end_task(draft)?;
                    }
                }
                Closing::Resource => {
                    if let Some(draft) = self.resource.take() {
                        self.end_resource(draft)?;
                    }
                }
                Closing::Assignment => {
                    if let Some(draft) = self.assignment.take() {
                        self.end_assignment(draft)?;
                    }
                }
                Closing::Other => {}
            }
        }
        Ok(self.stack.is_empty())
    }

    /// Resolves `&name;`: character references and XML's five predefined entities only.
    fn reference(&mut self, reference: &BytesRef<'_>) -> Result<(), ImportError> {
        match reference.resolve_char_ref() {
            Ok(Some(c)) => self.leaf_text.push(c),
            Ok(None) => {
                let c = match reference.as_ref() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    other => {
                        return Err(ImportError::UnknownEntity {
                            at: self.here(),
                            name: other.to_owned(),
                        });
                    }
                };
                self.leaf_text.push(c);
            }
            Err(source) => {
                return Err(ImportError::Xml {
                    at: self.here(),
                    source,
                });
            }
        }
        Ok(())
    }

    fn eof(&self) -> Result<(), ImportError> {
        match self.stack.last() {
            None if !self.root_seen => Err(ImportError::NotMspdi {
                found: String::new(),
            }),
            None => Ok(()),
            Some(open) => Err(ImportError::UnexpectedEof {
                at: self.place(self.text.len()),
                opened_line: self.place(open.start).line.unwrap_or(1),
            }),
        }
    }

    /// A record that has just closed (and so is no longer on the stack) lacks `field`.
    fn missing(&self, record: &str, record_start: usize, field: &'static str) -> ImportError {
        ImportError::Missing {
            at: Place::in_text(format!("{}/{record}", self.path()), self.text, record_start),
            field,
        }
    }

    fn end_task(&mut self, draft: TaskDraft) -> Result<(), ImportError> {
        if draft.is_null {
            return Ok(());
        }
        let (uid, uid_at) = draft
            .uid
            .ok_or_else(|| self.missing("Task", draft.start_tag, "UID"))?;
        // Every Task child but UID is optional in MSPDI; missing dates and work are derived once
        // the assignments are read (`derive_task_values`).
        let default_level = if uid == TaskUid::PROJECT_SUMMARY {
            0
        } else {
            1
        };
        self.tasks.push(ReadTask {
            uid_at,
            start_tag: draft.start_tag,
            start: draft.start,
            finish: draft.finish,
            work: draft.work,
            percent_work_complete: draft.percent_work_complete,
            task: Task {
                uid,
                name: draft.name,
                notes: draft.notes,
                start: draft.start.unwrap_or_default(),
                finish: draft.finish.unwrap_or_default(),
                work: draft.work.unwrap_or_default(),
                priority: draft.priority.unwrap_or(Task::DEFAULT_PRIORITY),
                percent_work_complete: draft.percent_work_complete.unwrap_or_default(),
                summary: draft.summary,
                milestone: draft.milestone,
                outline_level: draft.outline_level.unwrap_or(default_level),
            },
        });
        Ok(())
    }

    fn end_resource(&mut self, draft: ResourceDraft) -> Result<(), ImportError> {
        if draft.is_null {
            return Ok(());
        }
        let (uid, uid_at) = draft
            .uid
            .ok_or_else(|| self.missing("Resource", draft.start_tag, "UID"))?;
        // Only a work resource is a person who can own a mailbox; the UID 0 resource is the
        // placeholder Project writes into every file.
        let person = draft.kind == ResourceType::Work && !draft.is_cost_resource && uid.0 != 0;
        let email = draft.email.filter(|_| person);
        self.resources.push(ReadResource {
            uid_at,
            resource: Resource {
                uid,
                name: draft.name,
                email,
                time_zone: None,
            },
        });
        Ok(())
    }

    fn end_assignment(&mut self, draft: AssignmentDraft) -> Result<(), ImportError> {
        let (uid, uid_at) = draft
            .uid
            .ok_or_else(|| self.missing("Assignment", draft.start_tag, "UID"))?;
        let (task_uid, task_at) = draft
            .task_uid
            .ok_or_else(|| self.missing("Assignment", draft.start_tag, "TaskUID"))?;
        let (resource_uid, resource_at) = draft
            .resource_uid
            .ok_or_else(|| self.missing("Assignment", draft.start_tag, "ResourceUID"))?;
        self.assignments.push(ReadAssignment {
            uid,
            uid_at,
            task_uid,
            task_at,
            resource_uid,
            resource_at,
            draft,
        });
        Ok(())
    }

    /// Fills in what the file left out of its tasks, as Microsoft Project derives it: a task's
    /// dates from its assignments' own dates, a summary task's from the tasks of its outline,
    /// else the project start (or the task's other date); a task's work from its assignments'
    /// work (a summary task's from its outline), and its percent from the work done. A task
    /// whose dates cannot be derived at all is refused, naming `Start`.
    fn derive_task_values(&mut self) -> Result<(), ImportError> {
        let mut own: HashMap<TaskUid, (Option<NaiveDateTime>, Option<NaiveDateTime>, Work, Work)> =
            HashMap::new();
        let mut has_assignments: std::collections::HashSet<TaskUid> = Default::default();
        for a in &self.assignments {
            has_assignments.insert(a.task_uid);
            let entry = own
                .entry(a.task_uid)
                .or_insert((None, None, Work::ZERO, Work::ZERO));
            if let Some(s) = a.draft.start {
                entry.0 = Some(entry.0.map_or(s, |x: NaiveDateTime| x.min(s)));
            }
            if let Some(f) = a.draft.finish {
                entry.1 = Some(entry.1.map_or(f, |x: NaiveDateTime| x.max(f)));
            }
            entry.2 = entry.2.saturating_add(a.draft.work.unwrap_or_default());
            entry.3 = entry
                .3
                .saturating_add(a.draft.actual_work.unwrap_or_default());
        }
        // Children come after their summary task, so walking backwards derives them first.
        for i in (0..self.tasks.len()).rev() {
            let (uid, level, summary) = {
                let t = &self.tasks[i].task;
                (
                    t.uid,
                    t.outline_level,
                    t.summary || t.uid == TaskUid::PROJECT_SUMMARY,
                )
            };
            let mut start = self.tasks[i].start;
            let mut finish = self.tasks[i].finish;
            let mut work = self.tasks[i].work;
            let mut actual = None;
            if let Some((s, f, w, a)) = own.get(&uid) {
                start = start.or(*s);
                finish = finish.or(*f);
                if has_assignments.contains(&uid) && !summary {
                    work = work.or(Some(*w));
                    actual = Some((*a, *w));
                }
            }
            if summary {
                let below = self.tasks[i + 1..]
                    .iter()
                    .take_while(|t| uid == TaskUid::PROJECT_SUMMARY || t.task.outline_level > level)
                    .filter(|t| !t.task.summary);
                let (mut s, mut f, mut w) =
                    (None::<NaiveDateTime>, None::<NaiveDateTime>, Work::ZERO);
                let mut any = false;
                for t in below {
                    any = true;
                    s = Some(s.map_or(t.task.start, |x| x.min(t.task.start)));
                    f = Some(f.map_or(t.task.finish, |x| x.max(t.task.finish)));
                    w = w.saturating_add(t.task.work);
                }
                if any {
                    start = start.or(s);
                    finish = finish.or(f);
                    work = work.or(Some(w));
                }
            }
            let start = start.or(self.project.start).or(finish);
            let finish = finish.or(start);
            let (Some(start), Some(finish)) = (start, finish) else {
                return Err(ImportError::Missing {
                    at: Place::in_text(
                        "Project/Tasks/Task".to_owned(),
                        self.text,
                        self.tasks[i].start_tag,
                    ),
                    field: "Start",
                });
            };
            let read = &mut self.tasks[i];
            read.task.start = start;
            read.task.finish = finish;
            read.task.work = work.unwrap_or_default();
            if read.percent_work_complete.is_none()
                && let Some((a, w)) = actual
            {
                read.task.percent_work_complete = percent_of(a, w);
            }
        }
        Ok(())
    }

    /// Checks references and assembles the project.
    fn finish(mut self, options: &ImportOptions) -> Result<Project, ImportError> {
        self.derive_task_values()?;
        let task_uids: Vec<TaskUid> = self.tasks.iter().map(|t| t.task.uid).collect();
        let resource_uids: Vec<ResourceUid> =
            self.resources.iter().map(|r| r.resource.uid).collect();
        let links: Vec<_> = self
            .assignments
            .iter()
            .map(|a| (a.uid, a.task_uid, a.resource_uid))
            .collect();
        // Each record's error path is that of the element in question, rebuilt here because the
        // element stack is gone by now.
        let place = |path: &str, offset: usize| Place::in_text(path.to_owned(), self.text, offset);
        check_references(
            Ids {
                tasks: &task_uids,
                resources: &resource_uids,
                assignments: &links,
            },
            |site| match site {
                Site::TaskUid(i) => place("Project/Tasks/Task/UID", self.tasks[i].uid_at),
                Site::ResourceUid(i) => {
                    place("Project/Resources/Resource/UID", self.resources[i].uid_at)
                }
                Site::AssignmentUid(i) => place(
                    "Project/Assignments/Assignment/UID",
                    self.assignments[i].uid_at,
                ),
                Site::AssignmentTask(i) => place(
                    "Project/Assignments/Assignment/TaskUID",
                    self.assignments[i].task_at,
                ),
                Site::AssignmentResource(i) => place(
                    "Project/Assignments/Assignment/ResourceUID",
                    self.assignments[i].resource_at,
                ),
            },
        )?;

        let guid = self
            .project
            .guid
            .or(options.fallback_guid)
            .ok_or(ImportError::MissingGuid)?;
        let tasks: Vec<Task> = self.tasks.into_iter().map(|t| t.task).collect();
        let by_uid: HashMap<TaskUid, &Task> = tasks.iter().map(|t| (t.uid, t)).collect();
        let assignments = self
            .assignments
            .into_iter()
            .map(|read| {
                // check_references has confirmed that the task exists.
                let task = by_uid.get(&read.task_uid).copied();
                build_assignment(read, task)
            })
            .collect();
        let name = self
            .project
            .title
            .filter(|t| !t.trim().is_empty())
            .or(self.project.name)
            .unwrap_or_default();
        Ok(Project {
            guid,
            name,
            time_zone: options.time_zone,
            minutes_per_day: self
                .project
                .minutes_per_day
                .unwrap_or(DEFAULT_MINUTES_PER_DAY),
            minutes_per_week: self
                .project
                .minutes_per_week
                .unwrap_or(DEFAULT_MINUTES_PER_WEEK),
            start: self.project.start,
            tasks,
            resources: self.resources.into_iter().map(|r| r.resource).collect(),
            assignments,
        })
    }
}

fn build_assignment(read: ReadAssignment, task: Option<&Task>) -> Assignment {
    let draft = read.draft;
    let work = draft.work.unwrap_or_default();
    let actual_work = draft.actual_work.unwrap_or_default();
    let remaining_work = draft
        .remaining_work
        .unwrap_or_else(|| work.saturating_sub(actual_work).max(Work::ZERO));
    // Dates fall back to the task's; a task always has both, so the epoch default below is only
    // reached if a caller skipped check_references.
    let start = draft.start.or(task.map(|t| t.start)).unwrap_or_default();
    let finish = draft.finish.or(task.map(|t| t.finish)).unwrap_or_default();
    Assignment {
        uid: read.uid,
        task_uid: read.task_uid,
        resource_uid: read.resource_uid,
        start,
        finish,
        work,
        actual_work,
        remaining_work,
        percent_work_complete: draft
            .percent_work_complete
            .unwrap_or_else(|| percent_of(actual_work, work)),
        actual_finish: draft.actual_finish,
        modified: FieldTimes::new(),
    }
}

fn parse_bool(text: &str) -> Result<bool, ValueError> {
    match text {
        "1" => Ok(true),
        "0" => Ok(false),
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ValueError::Boolean),
    }
}

fn parse_work(text: &str) -> Result<Work, ValueError> {
    Ok(Work::parse_mspdi(text)?)
}

fn parse_percent(text: &str) -> Result<Percent, ValueError> {
    let value: i64 = text.parse()?;
    Ok(Percent::from_i64(value)?)
}

fn parse_guid(text: &str) -> Result<ProjectGuid, ValueError> {
    Ok(text.parse::<ProjectGuid>()?)
}

fn parse_i64(text: &str) -> Result<i64, ValueError> {
    Ok(text.parse::<i64>()?)
}

fn read_project_field(
    project: &mut ProjectDraft,
    field: &str,
    leaf: &Leaf<'_>,
) -> Result<(), ImportError> {
    match field {
        "Name" => project.name = Some(leaf.text.trim().to_owned()),
        "Title" => project.title = Some(leaf.text.trim().to_owned()),
        // Project 2010 and later write `GUID`; Microsoft's element reference spells it `Guid`.
        "GUID" | "Guid" => project.guid = leaf.optional(parse_guid)?,
        "MinutesPerDay" => {
            let (min, max) = MINUTES_PER_DAY_RANGE;
            project.minutes_per_day = leaf.optional(|t| parse_int_in(t, min, max))?;
        }
        "MinutesPerWeek" => {
            let (min, max) = MINUTES_PER_WEEK_RANGE;
            project.minutes_per_week = leaf.optional(|t| parse_int_in(t, min, max))?;
        }
        "StartDate" => project.start = leaf.optional(parse_local_datetime)?,
        _ => {}
    }
    Ok(())
}

fn read_task_field(task: &mut TaskDraft, field: &str, leaf: &Leaf<'_>) -> Result<(), ImportError> {
    let at = leaf.start;
    match field {
        "UID" => task.uid = leaf.optional(parse_i64)?.map(|uid| (TaskUid(uid), at)),
        "Name" => task.name = leaf.text.to_owned(),
        "Notes" => task.notes = leaf.text.to_owned(),
        "Start" => task.start = leaf.optional(parse_local_datetime)?,
        "Finish" => task.finish = leaf.optional(parse_local_datetime)?,
        "Work" => task.work = leaf.optional(parse_work)?,
        "Priority" => {
            let (min, max) = PRIORITY_RANGE;
            task.priority = leaf.optional(|t| parse_int_in(t, min, max))?;
        }
        "PercentWorkComplete" => task.percent_work_complete = leaf.optional(parse_percent)?,
        "Summary" => task.summary = leaf.optional(parse_bool)?.unwrap_or(false),
        "Milestone" => task.milestone = leaf.optional(parse_bool)?.unwrap_or(false),
        "OutlineLevel" => {
            let (min, max) = OUTLINE_LEVEL_RANGE;
            task.outline_level = leaf.optional(|t| parse_int_in(t, min, max))?;
        }
        "IsNull" => task.is_null = leaf.optional(parse_bool)?.unwrap_or(false),
        _ => {}
    }
    Ok(())
}

fn read_resource_field(
    resource: &mut ResourceDraft,
    field: &str,
    leaf: &Leaf<'_>,
) -> Result<(), ImportError> {
    let at = leaf.start;
    match field {
        "UID" => resource.uid = leaf.optional(parse_i64)?.map(|uid| (ResourceUid(uid), at)),
        "Name" => resource.name = leaf.text.to_owned(),
        "EmailAddress" => {
            let email = leaf.text.trim();
            resource.email = (!email.is_empty()).then(|| email.to_owned());
        }
        "Type" => {
            resource.kind = match leaf.optional(|t| parse_int_in::<u8>(t, 0, 2))? {
                Some(0) => ResourceType::Material,
                Some(2) => ResourceType::Cost,
                _ => ResourceType::Work,
            };
        }
        "IsCostResource" => {
            resource.is_cost_resource = leaf.optional(parse_bool)?.unwrap_or(false);
        }
        "IsNull" => resource.is_null = leaf.optional(parse_bool)?.unwrap_or(false),
        _ => {}
    }
    Ok(())
}

fn read_assignment_field(
    assignment: &mut AssignmentDraft,
    field: &str,
    leaf: &Leaf<'_>,
) -> Result<(), ImportError> {
    let at = leaf.start;
    match field {
        "UID" => {
            assignment.uid = leaf
                .optional(parse_i64)?
                .map(|uid| (AssignmentUid(uid), at));
        }
        "TaskUID" => {
            assignment.task_uid = leaf.optional(parse_i64)?.map(|uid| (TaskUid(uid), at));
        }
        "ResourceUID" => {
            assignment.resource_uid = leaf.optional(parse_i64)?.map(|uid| (ResourceUid(uid), at));
        }
        "Start" => assignment.start = leaf.optional(parse_local_datetime)?,
        "Finish" => assignment.finish = leaf.optional(parse_local_datetime)?,
        "ActualFinish" => assignment.actual_finish = leaf.optional(parse_local_datetime)?,
        "Work" => assignment.work = leaf.optional(parse_work)?,
        "ActualWork" => assignment.actual_work = leaf.optional(parse_work)?,
        "RemainingWork" => assignment.remaining_work = leaf.optional(parse_work)?,
        "PercentWorkComplete" => {
            assignment.percent_work_complete = leaf.optional(parse_percent)?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pm::import::ValueError;

    fn options() -> ImportOptions {
        ImportOptions {
            fallback_guid: Some(ProjectGuid(uuid::Uuid::nil())),
            ..ImportOptions::default()
        }
    }

    // Contrived, minimal documents written for these tests.
    const MINIMAL: &str = r#"<Project xmlns="http://schemas.microsoft.com/project"><GUID>0B8D5E3A-0F5B-4C39-9F46-2A9C7E4D1B10</GUID><Name>m.xml</Name><Tasks><Task><UID>1</UID><Name>A &amp; B&#x21;</Name><Start>2026-03-02T08:00:00</Start><Finish>2026-03-02T17:00:00</Finish></Task></Tasks><Resources><Resource><UID>1</UID><Name>Ann</Name><EmailAddress> ann@example.com </EmailAddress></Resource></Resources><Assignments><Assignment><UID>5</UID><TaskUID>1</TaskUID><ResourceUID>1</ResourceUID><Work>PT8H0M0S</Work><ActualWork>PT2H0M0S</ActualWork></Assignment></Assignments></Project>"#;

    #[test]
    fn parse_mspdi_minimal_reads_fields_and_defaults() {
        let project = parse_mspdi(MINIMAL, &ImportOptions::default()).expect("valid");
        assert_eq!(
            project.guid.to_string(),
            "0b8d5e3a-0f5b-4c39-9f46-2a9c7e4d1b10"
        );
        assert_eq!(project.name, "m.xml");
        assert_eq!(project.minutes_per_day, 480);
        assert_eq!(project.tasks[0].name, "A & B!");
        assert_eq!(project.tasks[0].priority, 500);
        assert_eq!(project.tasks[0].outline_level, 1);
        assert_eq!(
            project.resources[0].email.as_deref(),
            Some("ann@example.com")
        );
        let a = &project.assignments[0];
        assert_eq!(a.remaining_work, Work::from_hours(6));
        assert_eq!(a.percent_work_complete.get(), 25);
        assert_eq!(a.start, project.tasks[0].start);
    }

    #[test]
    fn parse_mspdi_prefixed_namespace_is_matched_by_uri() {
        let doc = r#"<p:Project xmlns:p="http://schemas.microsoft.com/project"><p:GUID>0B8D5E3A-0F5B-4C39-9F46-2A9C7E4D1B10</p:GUID><p:Title>Prefixed</p:Title><p:Tasks><p:Task><p:UID>1</p:UID><p:Start>2026-03-02T08:00:00</p:Start><p:Finish>2026-03-02T17:00:00</p:Finish></p:Task></p:Tasks></p:Project>"#;
        let project = parse_mspdi(doc, &ImportOptions::default()).expect("valid");
        assert_eq!(project.name, "Prefixed");
        assert_eq!(project.tasks[0].uid, TaskUid(1));
    }

    #[test]
    fn parse_mspdi_foreign_namespace_elements_are_skipped() {
        let doc = MINIMAL.replace(
            "<Name>Ann</Name>",
            r#"<x:Name xmlns:x="urn:other">Wrong</x:Name><Name>Ann</Name><x:EmailAddress xmlns:x="urn:other">wrong@example.com</x:EmailAddress>"#,
        );
        let project = parse_mspdi(&doc, &ImportOptions::default()).expect("valid");
        assert_eq!(project.resources[0].name, "Ann");
        assert_eq!(
            project.resources[0].email.as_deref(),
            Some("ann@example.com")
        );
    }

    #[test]
    fn parse_mspdi_foreign_root_is_not_mspdi() {
        let doc = r#"<Project xmlns="urn:something-else"><Name>x</Name></Project>"#;
        assert!(matches!(
            parse_mspdi(doc, &options()),
            Err(ImportError::NotMspdi { found }) if found == "Project"
        ));
        assert!(matches!(
            parse_mspdi("<gantt/>", &options()),
            Err(ImportError::NotMspdi { found }) if found == "gantt"
        ));
    }

    #[test]
    fn parse_mspdi_doctype_is_refused() {
        let doc = "<?xml version=\"1.0\"?>\n<!DOCTYPE Project [<!ENTITY a \"aaaa\">]>\n<Project><Name>&a;</Name></Project>";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::DocType { at }) => assert_eq!(at.line, Some(2)),
            other => panic!("expected DocType, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_undefined_entity_is_refused() {
        let doc = "<Project>\n<Name>&bogus;</Name></Project>";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::UnknownEntity { at, name }) => {
                assert_eq!(name, "bogus");
                assert_eq!(at.path, "Project/Name");
                assert_eq!(at.line, Some(2));
            }
            other => panic!("expected UnknownEntity, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_mismatched_end_tag_names_line() {
        let doc = "<Project>\n<Tasks>\n</Task>\n</Project>";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::Xml { at, .. }) => assert_eq!(at.line, Some(3)),
            other => panic!("expected Xml, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_truncated_inside_tag_names_line() {
        let doc = "<Project>\n<Tasks>\n<Task><UI";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::Xml { at, .. }) => {
                assert_eq!(at.path, "Project/Tasks/Task");
                assert_eq!((at.line, at.column), (Some(3), Some(7)));
            }
            other => panic!("expected Xml, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_empty_input_is_not_mspdi() {
        assert!(matches!(
            parse_mspdi("<?xml version=\"1.0\"?>\n<!-- nothing -->\n", &options()),
            Err(ImportError::NotMspdi { found }) if found.is_empty()
        ));
    }

    #[test]
    fn parse_mspdi_missing_guid_without_fallback_is_refused() {
        let doc = MINIMAL.replace("<GUID>0B8D5E3A-0F5B-4C39-9F46-2A9C7E4D1B10</GUID>", "");
        assert!(matches!(
            parse_mspdi(&doc, &ImportOptions::default()),
            Err(ImportError::MissingGuid)
        ));
        let project = parse_mspdi(&doc, &options()).expect("fallback used");
        assert_eq!(project.guid, ProjectGuid(uuid::Uuid::nil()));
    }

    #[test]
    fn parse_mspdi_task_without_uid_is_missing() {
        let doc = "<Project>\n<Tasks>\n<Task><Name>x</Name></Task></Tasks></Project>";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::Missing { at, field }) => {
                assert_eq!(field, "UID");
                assert_eq!(at.path, "Project/Tasks/Task");
                assert_eq!(at.line, Some(3));
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_priority_out_of_range_is_invalid() {
        let doc = MINIMAL.replace("<Name>A &amp; B&#x21;</Name>", "<Priority>1001</Priority>");
        match parse_mspdi(&doc, &options()) {
            Err(ImportError::InvalidValue { at, value, source }) => {
                assert_eq!(at.path, "Project/Tasks/Task/Priority");
                assert_eq!(value, "1001");
                assert_eq!(*source, ValueError::OutOfRange { min: 0, max: 1000 });
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn parse_mspdi_duplicate_task_uid_is_refused() {
        let doc = MINIMAL.replace(
            "</Task></Tasks>",
            "</Task><Task><UID>1</UID><Start>2026-03-02T08:00:00</Start><Finish>2026-03-02T08:00:00</Finish></Task></Tasks>",
        );
        assert!(matches!(
            parse_mspdi(&doc, &options()),
            Err(ImportError::DuplicateUid {
                kind: "task",
                uid: 1,
                ..
            })
        ));
    }

    #[test]
    fn parse_mspdi_over_limit_is_refused() {
        let small = ImportOptions {
            max_bytes: 16,
            ..options()
        };
        assert!(matches!(
            parse_mspdi(MINIMAL, &small),
            Err(ImportError::TooLarge { limit: 16 })
        ));
    }

    #[test]
    fn parse_bool_accepts_mspdi_and_xsd_spellings() {
        assert_eq!(parse_bool("1"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("False"), Ok(false));
        assert_eq!(parse_bool("yes"), Err(ValueError::Boolean));
    }

    #[test]
    fn parse_mspdi_derives_what_a_task_leaves_out_as_project_does() {
        // A summary task without Start, Finish or Work (as ProjectLibre and GanttProject write
        // them), a task without Work or dates, and one without anything but its UID.
        let doc = r#"<Project xmlns="http://schemas.microsoft.com/project"><GUID>0B8D5E3A-0F5B-4C39-9F46-2A9C7E4D1B10</GUID><StartDate>2026-03-02T08:00:00</StartDate><Tasks>
<Task><UID>1</UID><Name>Phase</Name><OutlineLevel>1</OutlineLevel><Summary>1</Summary></Task>
<Task><UID>2</UID><OutlineLevel>2</OutlineLevel><Start>2026-03-03T08:00:00</Start><Finish>2026-03-04T17:00:00</Finish><Work>PT16H0M0S</Work></Task>
<Task><UID>3</UID><OutlineLevel>2</OutlineLevel></Task>
<Task><UID>4</UID><OutlineLevel>1</OutlineLevel></Task></Tasks>
<Resources><Resource><UID>1</UID><Name>Ann</Name><EmailAddress>ann@example.com</EmailAddress></Resource></Resources>
<Assignments><Assignment><UID>1</UID><TaskUID>3</TaskUID><ResourceUID>1</ResourceUID><Start>2026-03-05T08:00:00</Start><Finish>2026-03-06T12:00:00</Finish><Work>PT12H0M0S</Work><ActualWork>PT3H0M0S</ActualWork></Assignment></Assignments></Project>"#;
        let project = parse_mspdi(doc, &options()).expect("every Task child but UID is optional");
        let task = |uid| project.task(TaskUid(uid)).expect("task").clone();
        let at = |text: &str| parse_local_datetime(text).expect("date");
        // Task 3 takes its assignment's dates, work and percent.
        let t3 = task(3);
        assert_eq!(
            (t3.start, t3.finish),
            (at("2026-03-05T08:00:00"), at("2026-03-06T12:00:00"))
        );
        assert_eq!(t3.work, Work::from_hours(12));
        assert_eq!(t3.percent_work_complete.get(), 25);
        // The summary spans and sums its outline.
        let t1 = task(1);
        assert_eq!(
            (t1.start, t1.finish),
            (at("2026-03-03T08:00:00"), at("2026-03-06T12:00:00"))
        );
        assert_eq!(t1.work, Work::from_hours(28));
        // Nothing to derive from: the project start.
        let t4 = task(4);
        assert_eq!(
            (t4.start, t4.finish),
            (at("2026-03-02T08:00:00"), at("2026-03-02T08:00:00"))
        );
        assert_eq!(t4.work, Work::ZERO);
    }

    #[test]
    fn parse_mspdi_task_without_any_date_to_derive_is_missing_start() {
        let doc = "<Project><GUID>0B8D5E3A-0F5B-4C39-9F46-2A9C7E4D1B10</GUID><Tasks>\n<Task><UID>1</UID></Task></Tasks></Project>";
        match parse_mspdi(doc, &options()) {
            Err(ImportError::Missing { at, field }) => {
                assert_eq!(field, "Start");
                assert_eq!(at.path, "Project/Tasks/Task");
                assert_eq!(at.line, Some(2));
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }
}
