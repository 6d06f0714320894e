//! GetEvents: the events of a pull subscription after a watermark.

use crate::fields::ItemError;
use crate::ids;
use crate::ops::{Ctx, SimOp, error_message};
use crate::scaled;
use crate::subs::{MAX_EVENTS_PER_NOTIFICATION, SubKind};
use taskbridge_ews::ops::get_events::{GetEvents, GetEventsResponse};
use taskbridge_ews::ops::send_notification::NotificationPayload;
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{Event, Notification, ResponseCode, ResponseMessage};

impl SimOp for GetEvents {
    fn count(&self) -> usize {
        1
    }

    fn error_payload() -> NotificationPayload {
        NotificationPayload::default()
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<GetEventsResponse, Box<Fault>> {
        let msg = match get_events(&self, ctx) {
            Ok(n) => ResponseMessage::success(NotificationPayload {
                notification: Some(n),
            }),
            Err(e) => error_message(e, Self::error_payload()),
        };
        Ok(GetEventsResponse {
            response_messages: vec![msg],
        })
    }
}

fn other(code: &str, text: &str) -> ItemError {
    (ResponseCode::Other(code.into()), text.into())
}

fn get_events(req: &GetEvents, ctx: &Ctx<'_>) -> Result<Notification, ItemError> {
    let sub = ctx
        .sim
        .subs
        .get(req.subscription_id.as_str())
        .ok_or_else(|| {
            (
                ResponseCode::ErrorSubscriptionNotFound,
                "The specified subscription was not found.".to_string(),
            )
        })?;
    let SubKind::Pull { timeout } = sub.kind else {
        return Err((
            ResponseCode::ErrorInvalidPullSubscriptionId,
            "The subscription id is not a pull subscription id.".into(),
        ));
    };
    if ctx.check_access(&sub.mailbox).is_err() {
        return Err(other(
            "ErrorSubscriptionAccessDenied",
            "A subscription can only be accessed by the account that created it.",
        ));
    }
    let ttl = scaled(
        std::time::Duration::from_secs(60 * u64::from(timeout)),
        ctx.sim.config.push_time_scale,
    );
    if sub.last_access().elapsed() > ttl {
        ctx.sim.subs.remove(sub.id.as_str());
        return Err((
            ResponseCode::ErrorExpiredSubscription,
            "The subscription has expired.".into(),
        ));
    }
    let st = sub.mailbox.lock();
    let from = match ids::parse_watermark(req.watermark.as_str()) {
        Some((no, seq))
            if no == sub.mailbox.no && seq <= st.event_seq && seq >= st.oldest_resumable() =>
        {
            seq
        }
        _ => {
            return Err((
                ResponseCode::ErrorInvalidWatermark,
                "The watermark is invalid.".into(),
            ));
        }
    };
    let (mut events, scanned, more) = sub.collect(&st, from, MAX_EVENTS_PER_NOTIFICATION);
    drop(st);
    sub.advance(scanned);
    if events.is_empty() {
        events.push(Event::StatusEvent {
            watermark: Some(ids::watermark(sub.mailbox.no, scanned)),
        });
    }
    Ok(Notification {
        subscription_id: sub.id.clone(),
        previous_watermark: Some(req.watermark.clone()),
        more_events: Some(more),
        events,
    })
}
