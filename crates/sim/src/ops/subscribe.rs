//! Subscribe: push, pull and streaming subscriptions on folders, optionally resuming from a watermark.

use std::sync::Arc;

use crate::fields::ItemError;
use crate::ids::{self, FolderKind};
use crate::ops::{Ctx, SimOp, error_message};
use crate::subs::{Sub, SubKind};
use taskbridge_ews::ops::subscribe::{Subscribe, SubscribePayload, SubscribeResponse};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{BaseFolderId, EventType, ResponseCode, ResponseMessage};

impl SimOp for Subscribe {
    fn count(&self) -> usize {
        1
    }

    fn error_payload() -> SubscribePayload {
        SubscribePayload::default()
    }

    fn check_schema(&self) -> Result<(), String> {
        let (name, value, types) = match self {
            Subscribe::Push(p) => ("StatusFrequency", p.status_frequency, &p.event_types),
            Subscribe::Pull(p) => ("Timeout", p.timeout, &p.event_types),
            // No number to check.
            Subscribe::Streaming(p) => ("EventTypes", 1, &p.event_types),
        };
        if !(1..=1440).contains(&value) {
            return Err(format!(
                "The '{name}' element is invalid - The value '{value}' is invalid according to its datatype - The {} constraint failed.",
                if value < 1 {
                    "MinInclusive"
                } else {
                    "MaxInclusive"
                }
            ));
        }
        if let Some(EventType::Other(t)) = types
            .event_types
            .iter()
            .find(|t| matches!(t, EventType::Other(_)))
        {
            return Err(format!(
                "The 'EventType' element is invalid - The value '{t}' is invalid according to its datatype 'NotificationEventTypeType' - The Enumeration constraint failed."
            ));
        }
        Ok(())
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<SubscribeResponse, Box<Fault>> {
        let msg = match subscribe(self, ctx) {
            Ok(p) => ResponseMessage::success(p),
            Err(e) => error_message(e, Self::error_payload()),
        };
        Ok(SubscribeResponse {
            response_messages: vec![msg],
        })
    }
}

fn subscribe(req: Subscribe, ctx: &Ctx<'_>) -> Result<SubscribePayload, ItemError> {
    let (folder_ids, types, watermark, kind) = match req {
        Subscribe::Push(p) => {
            let ok = reqwest::Url::parse(&p.url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err((
                    ResponseCode::ErrorInvalidPushSubscriptionUrl,
                    "The push subscription URL is invalid.".into(),
                ));
            }
            (
                p.folder_ids,
                p.event_types.event_types,
                p.watermark,
                SubKind::Push {
                    url: p.url,
                    status_frequency: u32::try_from(p.status_frequency).unwrap_or(30),
                },
            )
        }
        Subscribe::Streaming(s) => (
            s.folder_ids,
            s.event_types.event_types,
            None,
            SubKind::Streaming,
        ),
        Subscribe::Pull(p) => (
            p.folder_ids,
            p.event_types.event_types,
            p.watermark,
            SubKind::Pull {
                timeout: u32::try_from(p.timeout).unwrap_or(30),
            },
        ),
    };
    // Without FolderIds, Exchange subscribes to all folders of the mailbox.
    let folder_ids = folder_ids.map(|f| f.0).unwrap_or_default();
    let (mailbox, folders) = if folder_ids.is_empty() {
        let (mb, _) = ctx.resolve_folder(&BaseFolderId::tasks_of(None))?;
        (mb, Vec::new())
    } else {
        let mut mailbox = None;
        let mut folders: Vec<FolderKind> = Vec::new();
        for id in &folder_ids {
            let (mb, f) = ctx.resolve_folder(id)?;
            match &mailbox {
                None => mailbox = Some(mb),
                Some(m) if Arc::ptr_eq(m, &mb) => {}
                Some(_) => {
                    return Err((
                        ResponseCode::Other("ErrorInvalidSubscriptionRequest".into()),
                        "All folders of a subscription must be in one mailbox.".into(),
                    ));
                }
            }
            folders.push(f);
        }
        (mailbox.expect("at least one folder"), folders)
    };
    let position = {
        let st = mailbox.lock();
        match &watermark {
            None => st.event_seq,
            Some(wm) => match ids::parse_watermark(wm.as_str()) {
                Some((no, seq))
                    if no == mailbox.no && seq <= st.event_seq && seq >= st.oldest_resumable() =>
                {
                    seq
                }
                _ => {
                    return Err((
                        ResponseCode::ErrorInvalidWatermark,
                        "The watermark used for creating this subscription was not recognized."
                            .into(),
                    ));
                }
            },
        }
    };
    let push = matches!(kind, SubKind::Push { .. });
    // A streaming subscription has no watermark to resume from: its events come on the
    // connection.
    let streaming = kind == SubKind::Streaming;
    // The subscription is held where the request was routed (by the anchor mailbox, which may
    // be another mailbox of the client's group: Exchange does not refuse that).
    let backend = ctx
        .route
        .backend
        .unwrap_or_else(|| ctx.sim.backend_of(&mailbox.smtp));
    let sub = Arc::new(
        Sub::new(mailbox.clone(), folders, types, kind, position)
            .placed(backend, ctx.route.anchor.clone()),
    );
    ctx.sim.subs.insert(sub.clone());
    if push {
        match ctx.sim.me() {
            Some(sim) => crate::push::spawn(sim, sub.clone()),
            None => {
                return Err((
                    ResponseCode::ErrorInternalServerError,
                    "The simulator is shutting down.".into(),
                ));
            }
        }
    }
    Ok(SubscribePayload {
        subscription_id: Some(sub.id.clone()),
        watermark: (!streaming).then(|| ids::watermark(mailbox.no, position)),
    })
}
