//! DeleteItem: hard, soft, or into Deleted Items; tasks need AffectedTaskOccurrences.

use crate::ids::FolderKind;
use crate::ops::{Ctx, SimOp, error_message};
use taskbridge_ews::ops::delete_item::{DeleteItem, DeleteItemResponse, DeleteType};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{ItemKind, NoPayload, ResponseCode, ResponseMessage};

impl SimOp for DeleteItem {
    fn count(&self) -> usize {
        self.item_ids.item_ids.len()
    }

    fn error_payload() -> NoPayload {
        NoPayload {}
    }

    fn check_schema(&self) -> Result<(), String> {
        match &self.delete_type {
            DeleteType::Other(s) => Err(format!(
                "The 'DeleteType' attribute is invalid - The value '{s}' is invalid according to its datatype 'DisposalType' - The Enumeration constraint failed."
            )),
            _ => Ok(()),
        }
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<DeleteItemResponse, Box<Fault>> {
        let mut messages = Vec::new();
        for id in &self.item_ids.item_ids {
            let result = ctx.resolve_item(id).and_then(|(mb, no)| {
                let mut st = mb.lock();
                let item = st.items.get(&no).ok_or_else(|| {
                    (
                        ResponseCode::ErrorItemNotFound,
                        "The specified object was not found in the store.".to_string(),
                    )
                })?;
                if item.kind == ItemKind::Task && self.affected_task_occurrences.is_none() {
                    return Err((
                        ResponseCode::Other("ErrorAffectedTaskOccurrencesRequired".into()),
                        "The AffectedTaskOccurrences attribute is required for Task items."
                            .to_string(),
                    ));
                }
                let folder = item.folder;
                match self.delete_type {
                    DeleteType::MoveToDeletedItems if folder != FolderKind::DeletedItems => {
                        st.move_to(&mb, no, FolderKind::DeletedItems, ctx.now)?;
                    }
                    _ => st.delete(&mb, no, ctx.now)?,
                }
                ctx.commit(&mb, &mut st);
                Ok(())
            });
            messages.push(match result {
                Ok(()) => ResponseMessage::success(NoPayload {}),
                Err(e) => error_message(e, NoPayload {}),
            });
        }
        Ok(DeleteItemResponse {
            response_messages: messages,
        })
    }
}
