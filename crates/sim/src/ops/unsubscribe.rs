//! Unsubscribe: ends a pull or streaming subscription, on the backend holding it. Push subscriptions end when the subscriber answers
//! `Unsubscribe` to a notification (or stops answering), so Unsubscribe refuses them.

use crate::ops::{Ctx, SimOp, error_message};
use crate::subs::SubKind;
use taskbridge_ews::ops::unsubscribe::{Unsubscribe, UnsubscribeResponse};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{NoPayload, ResponseCode, ResponseMessage};

impl SimOp for Unsubscribe {
    fn count(&self) -> usize {
        1
    }

    fn error_payload() -> NoPayload {
        NoPayload {}
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<UnsubscribeResponse, Box<Fault>> {
        // Only the backend holding the subscription knows it: the request must reach it (by
        // the backend cookie of the Subscribe's answer, or the anchor mailbox).
        let found = ctx
            .sim
            .subs
            .get(self.subscription_id.as_str())
            .filter(|sub| ctx.route.backend.is_none_or(|n| n == sub.backend));
        let result = match found {
            None => Err((
                ResponseCode::ErrorSubscriptionNotFound,
                "The specified subscription was not found.".to_string(),
            )),
            Some(sub) if matches!(sub.kind, SubKind::Push { .. }) => Err((
                ResponseCode::ErrorInvalidSubscription,
                "Push subscriptions end when the subscriber answers Unsubscribe to a notification."
                    .to_string(),
            )),
            Some(sub) => match ctx.check_access(&sub.mailbox) {
                Err(_) => Err((
                    ResponseCode::Other("ErrorSubscriptionAccessDenied".into()),
                    "A subscription can only be accessed by the account that created it."
                        .to_string(),
                )),
                Ok(()) => {
                    ctx.sim.subs.remove(sub.id.as_str());
                    Ok(())
                }
            },
        };
        let msg = match result {
            Ok(()) => ResponseMessage::success(NoPayload {}),
            Err(e) => error_message(e, NoPayload {}),
        };
        Ok(UnsubscribeResponse {
            response_messages: vec![msg],
        })
    }
}
