//! A publish previewed (`taskbridge publish --dry-run`): what publishing a project would do in
//! each mailbox, worked out from the PM's values and the stored sync state alone, without a
//! request to any mailbox and without writing anything.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::config::DeletedTaskRule;
use super::engine::{Engine, SyncError, field_text};
use super::mailbox::MailboxStore;
use super::publish::held_moves;
use crate::mapping::{MailValues, changed_fields};
use crate::pm::{AssignmentKey, PmHost, ProjectGuid};
use crate::state::{AssignmentState, MailboxAddress, StateStore, SyncStatus};

/// What a publish would do with one assignment's task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannedAction {
    /// A new task.
    Create,
    /// Fields of the existing task.
    Update,
    /// The task goes.
    Delete,
}

/// One field of a planned update, as the mailbox shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedField {
    /// The mailbox field.
    pub field: &'static str,
    /// The value last synced (`-` for none).
    pub old: String,
    /// The value the publish would write.
    pub new: String,
}

/// One planned write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    /// The mailbox.
    pub mailbox: String,
    /// The assignment.
    pub key: AssignmentKey,
    /// Create, update or delete.
    pub action: PlannedAction,
    /// For an update, the fields that change; for a create, every field it sets.
    pub fields: Vec<PlannedField>,
}

/// What a publish would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublishPreview {
    /// The writes, per mailbox.
    pub changes: Vec<PlannedChange>,
    /// Assignments whose task needs nothing.
    pub unchanged: usize,
    /// Deletions the mass-delete guard would refuse (without `force`).
    pub refused_deletes: usize,
    /// Mailbox edits that waited for their assignment to come back into the plan
    /// ([`SyncStatus::AwaitingPlan`]): the publish reads and decides them, and what it writes
    /// depends on the item read, so no fields are planned for them.
    pub awaiting: usize,
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Works out what [`Engine::publish`] would do for `project` from the PM's values and the
    /// stored sync state, without a request to any mailbox. With `force`, deletions beyond the
    /// mass-delete guard are planned too.
    pub async fn preview_publish(
        &self,
        project: ProjectGuid,
        force: bool,
    ) -> Result<PublishPreview, SyncError> {
        let view = self.view(project).await?;
        let table = &self.inner.table;
        let config = &self.inner.config;
        let mut known: HashMap<AssignmentKey, AssignmentState> = self
            .inner
            .state
            .project_assignments(project)
            .await?
            .into_iter()
            .map(|s| (s.key, s))
            .collect();
        // The moves the guard holds back, as the publish works them out.
        let held = held_moves(
            config,
            force,
            known
                .values()
                .map(|s| (s.key.assignment, s.mailbox.clone())),
            &view
                .units()
                .map(|u| (u.key.assignment, MailboxAddress::new(u.email)))
                .collect(),
        );
        let mut preview = PublishPreview {
            refused_deletes: held.len(),
            ..PublishPreview::default()
        };
        // Per mailbox: tasks it has, and the deletions planned there (for the guard).
        let mut per_mailbox: BTreeMap<MailboxAddress, (usize, Vec<PlannedChange>)> =
            BTreeMap::new();
        let mut leaving = Vec::new();
        // The old tasks of the moves made: deleted whatever the guard says of the rest.
        let mut moved_away = Vec::new();
        for unit in view.units() {
            let Some((desired, zone)) = view.desired(table, unit.assignment.uid) else {
                continue;
            };
            let mailbox = match held.get(&unit.key.assignment) {
                Some(old) => old.clone(),
                None => MailboxAddress::new(unit.email),
            };
            let mut state = known.remove(&unit.key);
            if let Some(old) = state.take_if(|s| s.mailbox != mailbox) {
                moved_away.push(old);
            }
            // A create sets every field that has a value.
            let all_fields = |values: &MailValues| -> Vec<PlannedField> {
                changed_fields(&MailValues::empty(zone), values)
                    .into_iter()
                    .map(|f| PlannedField {
                        field: f.name(),
                        old: "-".into(),
                        new: field_text(values, f),
                    })
                    .collect()
            };
            let change = match &state {
                None => Some((PlannedAction::Create, all_fields(&desired))),
                Some(s) if s.item.is_none() => {
                    if s.status == SyncStatus::Detached
                        && config.deleted_task != DeletedTaskRule::Recreate
                    {
                        None
                    } else {
                        Some((PlannedAction::Create, all_fields(&desired)))
                    }
                }
                Some(s) if matches!(s.status, SyncStatus::AwaitingPlan { .. }) => {
                    per_mailbox.entry(mailbox.clone()).or_default().0 += 1;
                    preview.awaiting += 1;
                    continue;
                }
                Some(s) => {
                    per_mailbox.entry(mailbox.clone()).or_default().0 += 1;
                    let blocked = matches!(
                        s.status,
                        SyncStatus::PendingApproval { .. } | SyncStatus::Conflict { .. }
                    );
                    match s.baseline.as_ref().map(|b| &b.values) {
                        _ if blocked => None,
                        Some(base) => {
                            let fields: Vec<PlannedField> = changed_fields(base, &desired)
                                .into_iter()
                                .map(|f| PlannedField {
                                    field: f.name(),
                                    old: field_text(base, f),
                                    new: field_text(&desired, f),
                                })
                                .collect();
                            (!fields.is_empty()).then_some((PlannedAction::Update, fields))
                        }
                        None => Some((PlannedAction::Update, all_fields(&desired))),
                    }
                }
            };
            match change {
                Some((action, fields)) => preview.changes.push(PlannedChange {
                    mailbox: mailbox.to_string(),
                    key: unit.key,
                    action,
                    fields,
                }),
                None => preview.unchanged += 1,
            }
        }
        leaving.extend(known.into_values());
        for s in leaving.into_iter().filter(|s| s.item.is_some()) {
            let entry = per_mailbox.entry(s.mailbox.clone()).or_default();
            entry.1.push(PlannedChange {
                mailbox: s.mailbox.to_string(),
                key: s.key,
                action: PlannedAction::Delete,
                fields: Vec::new(),
            });
        }
        for (_, (with_items, deletes)) in per_mailbox {
            let with_items = with_items + deletes.len();
            if !force && config.guard_refuses(deletes.len(), with_items) {
                preview.refused_deletes += deletes.len();
            } else {
                preview.changes.extend(deletes);
            }
        }
        for s in moved_away.into_iter().filter(|s| s.item.is_some()) {
            preview.changes.push(PlannedChange {
                mailbox: s.mailbox.to_string(),
                key: s.key,
                action: PlannedAction::Delete,
                fields: Vec::new(),
            });
        }
        Ok(preview)
    }
}
