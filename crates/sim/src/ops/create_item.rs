//! CreateItem: creates items (tasks) in a folder, the Tasks folder by default, and sends
//! messages (`MessageDisposition="SendOnly"` or `"SendAndSaveCopy"`) to the recipients' Inboxes.

use crate::ids::FolderKind;
use crate::ops::{Ctx, SimOp, error_message};
use crate::store::InboxMessage;
use taskbridge_ews::ops::create_item::{
    CreateItem, CreateItemResponse, ItemsPayload, MessageDisposition,
};
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
        let sends = matches!(
            self.message_disposition,
            Some(MessageDisposition::SendOnly | MessageDisposition::SendAndSaveCopy)
        );
        let mut messages = Vec::with_capacity(self.items.0.len());
        for item in self.items.0 {
            if sends && item.kind == ItemKind::Message {
                messages.push(match send(ctx, &item) {
                    // Exchange answers a sent message with an empty Items: nothing was saved.
                    Ok(()) => ResponseMessage::success(Self::error_payload()),
                    Err(e) => error_message(e, Self::error_payload()),
                });
                continue;
            }
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
                                    to_recipients: None,
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

/// Delivers a message to the Inbox of each recipient, all or none: an address that is no
/// mailbox of the simulator refuses the whole message (Exchange would accept it and send a
/// non-delivery report, which a test could not read).
fn send(ctx: &Ctx<'_>, item: &Item) -> Result<(), crate::fields::ItemError> {
    let to: Vec<String> = item
        .to_recipients
        .iter()
        .flat_map(|r| r.mailboxes.iter())
        .filter_map(|m| m.email_address.clone())
        .collect();
    if to.is_empty() {
        return Err((
            ResponseCode::Other("ErrorInvalidRecipients".into()),
            "At least one recipient is required.".into(),
        ));
    }
    let mut boxes = Vec::with_capacity(to.len());
    for address in &to {
        match ctx.sim.store.by_smtp(&address.to_ascii_lowercase()) {
            Some(mb) => boxes.push(mb.clone()),
            None => {
                return Err((
                    ResponseCode::Other("ErrorInvalidRecipients".into()),
                    format!("{address} is not a mailbox of this server."),
                ));
            }
        }
    }
    let from = match (&ctx.acting, &ctx.caller.user) {
        (Some(mb), _) => mb.smtp.clone(),
        (None, Some(user)) => user.clone(),
        (None, None) => "anonymous".to_string(),
    };
    let message = InboxMessage {
        from,
        to,
        subject: item.fields.subject.clone().unwrap_or_default(),
        body: item
            .fields
            .body
            .as_ref()
            .map(|b| b.text.clone())
            .unwrap_or_default(),
        received: ctx.now,
    };
    for mb in boxes {
        mb.deliver(message.clone());
    }
    Ok(())
}
