//! GetItem: items by id, in the shape asked for.

use crate::ops::{Ctx, SimOp, error_message};
use taskbridge_ews::ops::create_item::ItemsPayload;
use taskbridge_ews::ops::get_item::{GetItem, GetItemResponse};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{BaseShape, Items, ResponseCode, ResponseMessage};

impl SimOp for GetItem {
    fn count(&self) -> usize {
        self.item_ids.item_ids.len()
    }

    fn error_payload() -> ItemsPayload {
        ItemsPayload {
            items: Some(Items::default()),
        }
    }

    fn check_schema(&self) -> Result<(), String> {
        check_shape(&self.item_shape.base_shape)
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<GetItemResponse, Box<Fault>> {
        let messages = self
            .item_ids
            .item_ids
            .iter()
            .map(|id| {
                let found = ctx.resolve_item(id).and_then(|(mb, no)| {
                    let st = mb.lock();
                    st.items
                        .get(&no)
                        .map(|item| item.shaped(&mb, &self.item_shape, false))
                        .ok_or_else(|| {
                            (
                                ResponseCode::ErrorItemNotFound,
                                "The specified object was not found in the store., The process failed to get the correct properties.".to_string(),
                            )
                        })
                });
                match found {
                    Ok(item) => ResponseMessage::success(ItemsPayload {
                        items: Some(Items(vec![item])),
                    }),
                    Err(e) => error_message(e, Self::error_payload()),
                }
            })
            .collect();
        Ok(GetItemResponse {
            response_messages: messages,
        })
    }
}

/// `t:DefaultShapeNamesType` is an enumeration; anything else fails schema validation.
pub(crate) fn check_shape(shape: &BaseShape) -> Result<(), String> {
    match shape {
        BaseShape::Other(s) => Err(format!(
            "The 'BaseShape' element is invalid - The value '{s}' is invalid according to its datatype 'DefaultShapeNamesType' - The Enumeration constraint failed."
        )),
        _ => Ok(()),
    }
}
