//! SyncFolderItems: the changes in a folder since a sync state, a page at a time.

use std::collections::HashSet;

use crate::fields::ItemError;
use crate::ids::{self, SyncPoint};
use crate::ops::{Ctx, SimOp, error_message};
use crate::store::SyncEntry;
use taskbridge_ews::ops::sync_folder_items::{
    SyncChange, SyncChanges, SyncFolderItems, SyncFolderItemsPayload, SyncFolderItemsResponse,
};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{ItemId, ResponseCode, ResponseMessage};

impl SimOp for SyncFolderItems {
    fn count(&self) -> usize {
        1
    }

    fn error_payload() -> SyncFolderItemsPayload {
        SyncFolderItemsPayload::default()
    }

    fn check_schema(&self) -> Result<(), String> {
        super::get_item::check_shape(&self.item_shape.base_shape)?;
        // MaxSyncChangesReturnedType: xs:int, 1 to 512.
        let n = self.max_changes_returned;
        if !(1..=512).contains(&n) {
            let facet = if n < 1 {
                "MinInclusive"
            } else {
                "MaxInclusive"
            };
            return Err(format!(
                "The 'MaxChangesReturned' element is invalid - The value '{n}' is invalid according to its datatype 'MaxSyncChangesReturnedType' - The {facet} constraint failed."
            ));
        }
        Ok(())
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<SyncFolderItemsResponse, Box<Fault>> {
        let msg = match sync(&self, ctx) {
            Ok(p) => ResponseMessage::success(p),
            Err(e) => error_message(e, Self::error_payload()),
        };
        Ok(SyncFolderItemsResponse {
            response_messages: vec![msg],
        })
    }
}

fn invalid_state() -> ItemError {
    (
        ResponseCode::ErrorInvalidSyncStateData,
        "Synchronization state data is corrupt or otherwise invalid.".into(),
    )
}

fn sync(req: &SyncFolderItems, ctx: &Ctx<'_>) -> Result<SyncFolderItemsPayload, ItemError> {
    let folder_id = req.sync_folder_id.0.first().ok_or_else(|| {
        (
            ResponseCode::ErrorFolderNotFound,
            "The specified folder could not be found in the store.".to_string(),
        )
    })?;
    let (mb, folder) = ctx.resolve_folder(folder_id)?;
    let secret = &ctx.sim.store.secret;
    let st = mb.lock();
    let point = match req
        .sync_state
        .as_ref()
        .filter(|s| !s.as_str().trim().is_empty())
    {
        None => SyncPoint {
            mailbox: mb.no,
            folder,
            cn: 0,
            known: Vec::new(),
        },
        Some(state) => {
            let p = SyncPoint::decode(state.as_str(), secret).ok_or_else(invalid_state)?;
            if p.mailbox != mb.no || p.folder != folder || p.cn > st.cn {
                return Err(invalid_state());
            }
            p
        }
    };
    let mut ignore = HashSet::new();
    for id in req.ignore.iter().flat_map(|i| &i.item_ids) {
        match ids::parse_item_id(id.id.as_str()) {
            Some((no, item)) if no == mb.no => {
                ignore.insert(item);
            }
            Some(_) => {}
            None => {
                return Err((
                    ResponseCode::ErrorInvalidIdMalformed,
                    "Id is malformed.".into(),
                ));
            }
        }
    }
    let max = usize::try_from(req.max_changes_returned).unwrap_or(1);
    let page = st.sync(&point, &ignore, max);
    let changes = page
        .entries
        .iter()
        .filter_map(|e| match e {
            SyncEntry::Create(no) => st
                .items
                .get(no)
                .map(|i| SyncChange::Create(i.shaped(&mb, &req.item_shape, false))),
            SyncEntry::Update(no) => st
                .items
                .get(no)
                .map(|i| SyncChange::Update(i.shaped(&mb, &req.item_shape, false))),
            SyncEntry::Delete(no) => Some(SyncChange::Delete(ItemId {
                id: ids::item_id(mb.no, *no),
                change_key: None,
            })),
        })
        .collect();
    Ok(SyncFolderItemsPayload {
        sync_state: Some(page.next.encode(secret)),
        includes_last_item_in_range: Some(page.last),
        changes: Some(SyncChanges(changes)),
    })
}
