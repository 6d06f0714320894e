//! CreateItem: creates items (tasks) in a folder, the Tasks folder by default.

use crate::ids::FolderKind;
use crate::ops::{Ctx, SimOp, error_message};
use taskbridge_ews::ops::create_item::{CreateItem, CreateItemResponse, ItemsPayload};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{
    BaseFolderId, Item, ItemKind, Items, ResponseCode, ResponseMessage, Task,
};

impl SimOp for CreateItem {
    fn count(&self) -> usize {
        self.items.0.len()
    }

    fn error_payload() -> ItemsPayload {
        ItemsPayload {
            items: Some(Items::default()),
        }
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<CreateItemResponse, Box<Fault>> {
        let target = match self.saved_item_folder_id.as_ref().and_then(|f| f.0.first()) {
            Some(id) => ctx.resolve_folder(id),
            None => ctx.resolve_folder(&BaseFolderId::tasks_of(None)),
        };
        let by = ctx.modifier();
        let mut messages = Vec::with_capacity(self.items.0.len());
        for item in self.items.0 {
            let msg = match &target {
                Err(e) => error_message(e.clone(), Self::error_payload()),
                Ok((mb, _)) if mb.quota_exceeded.load(std::sync::atomic::Ordering::SeqCst) => {
                    error_message(crate::ops::quota_exceeded(), Self::error_payload())
                }
                Ok((mb, folder)) => {
                    let kind = item.kind.clone();
                    let mut fields = item.fields;
                    if !matches!(kind, ItemKind::Task | ItemKind::Item | ItemKind::Message) {
                        messages.push(error_message(
                            (
                                ResponseCode::ErrorInvalidRequest,
                                format!("The simulator does not store {} items.", kind.as_str()),
                            ),
                            Self::error_payload(),
                        ));
                        continue;
                    }
                    if kind != ItemKind::Task {
                        crate::fields::clear_task_fields(&mut fields);
                    }
                    // Exchange files a task created without a folder in Tasks, whatever folder
                    // kind a SavedItemFolderId names, the item goes where it says.
                    let folder: FolderKind = *folder;
                    let mut st = mb.lock();
                    match st.create(mb, folder, kind.clone(), fields, ctx.now, &by) {
                        Ok(no) => {
                            let id = st.items[&no].item_id(mb.no);
                            ctx.commit(mb, &mut st);
                            ResponseMessage::success(ItemsPayload {
                                items: Some(Items(vec![Item {
                                    kind,
                                    fields: Task {
                                        item_id: Some(id),
                                        ..Task::default()
                                    },
                                }])),
                            })
                        }
                        Err(e) => error_message(e, Self::error_payload()),
                    }
                }
            };
            messages.push(msg);
        }
        Ok(CreateItemResponse {
            response_messages: messages,
        })
    }
}
