//! FindItem: items of a folder, filtered by IsEqualTo (on an extended property or a few
//! string fields) and paged by IndexedPageItemView.

use crate::fields::ItemError;
use crate::ops::{Ctx, SimOp, error_message};
use taskbridge_ews::ops::find_item::{
    FindItem, FindItemParent, FindItemPayload, FindItemResponse, ItemTraversal,
};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{
    BasePoint, Items, Path, ResponseCode, ResponseMessage, SearchExpression, Task,
};

impl SimOp for FindItem {
    fn count(&self) -> usize {
        self.parent_folder_ids.0.len()
    }

    fn error_payload() -> FindItemPayload {
        FindItemPayload::default()
    }

    fn check_schema(&self) -> Result<(), String> {
        super::get_item::check_shape(&self.item_shape.base_shape)?;
        if let ItemTraversal::Other(s) = &self.traversal {
            return Err(format!(
                "The 'Traversal' attribute is invalid - The value '{s}' is invalid according to its datatype 'ItemQueryTraversalType' - The Enumeration constraint failed."
            ));
        }
        if let Some(BasePoint::Other(s)) =
            self.indexed_page_item_view.as_ref().map(|v| &v.base_point)
        {
            return Err(format!(
                "The 'BasePoint' attribute is invalid - The value '{s}' is invalid according to its datatype 'IndexBasePointType' - The Enumeration constraint failed."
            ));
        }
        Ok(())
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<FindItemResponse, Box<Fault>> {
        let mut messages = Vec::new();
        for folder_id in &self.parent_folder_ids.0 {
            let result = ctx
                .resolve_folder(folder_id)
                .and_then(|(mb, folder)| find(&self, &mb, folder));
            messages.push(match result {
                Ok(root) => ResponseMessage::success(FindItemPayload {
                    root_folder: Some(root),
                }),
                Err(e) => error_message(e, Self::error_payload()),
            });
        }
        Ok(FindItemResponse {
            response_messages: messages,
        })
    }
}

fn find(
    req: &FindItem,
    mb: &crate::store::Mailbox,
    folder: crate::ids::FolderKind,
) -> Result<FindItemParent, ItemError> {
    if req.traversal != ItemTraversal::Shallow {
        // Soft-deleted and associated items do not exist in the simulator.
        return Ok(FindItemParent {
            indexed_paging_offset: req.indexed_page_item_view.as_ref().map(|_| 0),
            includes_last_item_in_range: Some(true),
            total_items_in_view: Some(0),
            items: Some(Items::default()),
        });
    }
    let st = mb.lock();
    let mut matching = Vec::new();
    for item in st.folder_items(folder) {
        let keep = match &req.restriction {
            None => true,
            Some(r) => matches(&r.0, &item.task)?,
        };
        if keep {
            matching.push(item);
        }
    }
    let total = matching.len();
    let (start, end, next_offset) = match &req.indexed_page_item_view {
        None => (0, total, None),
        Some(view) => {
            let max = view.max_entries_returned.unwrap_or(i32::MAX);
            if view.offset < 0 || max < 1 {
                return Err((
                    ResponseCode::Other("ErrorInvalidIndexedPagingParameters".into()),
                    "The indexed paging parameters are invalid.".into(),
                ));
            }
            let offset = usize::try_from(view.offset)
                .unwrap_or(usize::MAX)
                .min(total);
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            match view.base_point {
                BasePoint::End => {
                    let end = total - offset;
                    let start = end.saturating_sub(max);
                    (start, end, Some(offset + (end - start)))
                }
                _ => {
                    let end = offset.saturating_add(max).min(total);
                    (offset, end, Some(end))
                }
            }
        }
    };
    let items = matching[start..end]
        .iter()
        .map(|item| item.shaped(mb, &req.item_shape, true))
        .collect();
    let last = match req.indexed_page_item_view.as_ref().map(|v| &v.base_point) {
        Some(BasePoint::End) => start == 0,
        _ => end == total,
    };
    Ok(FindItemParent {
        indexed_paging_offset: next_offset.map(|o| i32::try_from(o).unwrap_or(i32::MAX)),
        includes_last_item_in_range: Some(last),
        total_items_in_view: Some(i32::try_from(total).unwrap_or(i32::MAX)),
        items: Some(Items(items)),
    })
}

/// Evaluates a restriction on an item's stored properties. Strings compare case-insensitively,
/// as Exchange's store does for IsEqualTo.
fn matches(expr: &SearchExpression, task: &Task) -> Result<bool, ItemError> {
    let unsupported = |what: &str| {
        (
            ResponseCode::ErrorUnsupportedQueryFilter,
            format!("The restriction contains a filter the simulator does not evaluate: {what}."),
        )
    };
    let SearchExpression::IsEqualTo(eq) = expr else {
        let SearchExpression::Other(name) = expr else {
            return Err(unsupported("unknown"));
        };
        return Err(unsupported(name));
    };
    let Some(constant) = &eq.value else {
        return Err(unsupported("IsEqualTo with a FieldURI on the right"));
    };
    let value: Option<String> = match &eq.path {
        Path::ExtendedFieldUri(x) => task.extended_value(x).map(str::to_string),
        Path::FieldUri(uri) => match uri.as_str() {
            "item:Subject" => task.subject.clone(),
            "item:ItemClass" => Some(task.item_class.clone().unwrap_or_else(|| "IPM.Task".into())),
            "task:Status" => Some(
                task.status
                    .as_ref()
                    .map_or("NotStarted", |s| s.as_str())
                    .to_string(),
            ),
            other => return Err(unsupported(other)),
        },
    };
    Ok(value.is_some_and(|v| v.to_lowercase() == constant.to_lowercase()))
}
