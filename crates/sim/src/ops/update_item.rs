//! UpdateItem: SetItemField / DeleteItemField under the ConflictResolution rules.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/updateitem>.

use crate::ops::{Ctx, SimOp, error_message};
use crate::store::{FieldChange, Resolution, UpdateError};
use taskbridge_ews::ops::update_item::{
    ConflictResolution, ConflictResults, ItemUpdate, UpdateItem, UpdateItemPayload,
    UpdateItemResponse,
};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{Item, Items, ResponseCode, ResponseMessage, Task};

impl SimOp for UpdateItem {
    fn count(&self) -> usize {
        self.item_changes.item_changes.len()
    }

    fn error_payload() -> UpdateItemPayload {
        UpdateItemPayload {
            items: Some(Items::default()),
            conflict_results: None,
        }
    }

    fn check_schema(&self) -> Result<(), String> {
        match &self.conflict_resolution {
            ConflictResolution::Other(s) => Err(format!(
                "The 'ConflictResolution' attribute is invalid - The value '{s}' is invalid according to its datatype 'ConflictResolutionType' - The Enumeration constraint failed."
            )),
            _ => Ok(()),
        }
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<UpdateItemResponse, Box<Fault>> {
        let resolution = match self.conflict_resolution {
            ConflictResolution::NeverOverwrite => Resolution::NeverOverwrite,
            ConflictResolution::AutoResolve => Resolution::AutoResolve,
            _ => Resolution::AlwaysOverwrite,
        };
        let by = ctx.modifier();
        let mut messages = Vec::new();
        for change in self.item_changes.item_changes {
            let changes: Vec<FieldChange> = change
                .updates
                .0
                .into_iter()
                .map(|u| match u {
                    ItemUpdate::SetItemField { path, item } => {
                        FieldChange::Set(path, Box::new(item.fields))
                    }
                    ItemUpdate::DeleteItemField { path } => FieldChange::Delete(path),
                })
                .collect();
            let msg = match ctx.resolve_item(&change.item_id) {
                Err(e) => error_message(e, Self::error_payload()),
                Ok((mb, _)) if mb.quota_exceeded.load(std::sync::atomic::Ordering::SeqCst) => {
                    error_message(crate::ops::quota_exceeded(), Self::error_payload())
                }
                Ok((mb, no)) => {
                    let mut st = mb.lock();
                    let result = st.update(
                        &mb,
                        no,
                        change.item_id.change_key.as_ref(),
                        resolution,
                        ctx.sim.config.conflict_model,
                        &changes,
                        ctx.now,
                        &by,
                    );
                    match result {
                        Ok(conflicts) => {
                            let item = &st.items[&no];
                            let out = Item {
                                kind: item.kind.clone(),
                                fields: Task {
                                    item_id: Some(item.item_id(mb.no)),
                                    ..Task::default()
                                },
                                to_recipients: None,
                            };
                            ctx.commit(&mb, &mut st);
                            ResponseMessage::success(UpdateItemPayload {
                                items: Some(Items(vec![out])),
                                conflict_results: Some(ConflictResults {
                                    count: i32::try_from(conflicts).unwrap_or(i32::MAX),
                                }),
                            })
                        }
                        Err(UpdateError::Conflict(n)) => error_message(
                            (
                                ResponseCode::ErrorIrresolvableConflict,
                                "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.".into(),
                            ),
                            UpdateItemPayload {
                                items: Some(Items::default()),
                                conflict_results: Some(ConflictResults {
                                    count: i32::try_from(n).unwrap_or(i32::MAX),
                                }),
                            },
                        ),
                        Err(UpdateError::Item(e)) => error_message(e, Self::error_payload()),
                    }
                }
            };
            messages.push(msg);
        }
        Ok(UpdateItemResponse {
            response_messages: messages,
        })
    }
}
