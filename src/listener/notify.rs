//! From a decoded `SendNotification` to the handler and back to an answer.
//!
//! The listener knows nothing of projects or the engine: it turns each notification into a
//! [`ListenerNotice`] and asks a [`NotificationHandler`] what to answer. The wiring adapts the
//! engine's notification sink to that trait.

use crate::ews::ops::send_notification::SendNotification;
use crate::ews::types::{ItemId, Notification};

/// The longest watermark handed on. Exchange's are base64 of a few dozen bytes.
pub const MAX_WATERMARK_BYTES: usize = 1024;

/// One notification as the handler sees it: which subscription, up to which watermark, about
/// which items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerNotice {
    /// The subscription the events came on.
    pub subscription_id: String,
    /// The watermark of the last event that carried one (the position to resume from), or the
    /// notification's previous watermark if no event did.
    pub watermark: Option<String>,
    /// The items the events are about, in order, each once: created, modified, deleted, moved
    /// (new and old id), copied, new mail. Empty for a notification of status events only.
    pub item_ids: Vec<String>,
    /// The item versions (id and change key) of its events when every item event is a
    /// creation or a modification naming its change key; `None` otherwise
    /// ([`Notification::item_versions`]). A handler can tell the echo of its own writes by them.
    pub versions: Option<Vec<ItemId>>,
}

/// What the handler says about one notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerAnswer {
    /// Taken (queued, or a status event noted): answer `OK`.
    Ok,
    /// Not a subscription of ours: answer `Unsubscribe`, so that Exchange stops sending.
    Unsubscribe,
    /// Cannot take it now (queue full): answer HTTP 503 so that Exchange sends it again later.
    Busy,
}

/// Where notifications go. Called on the connection's task: it must not block (hand the notice
/// to a bounded queue with `try_send` and answer [`HandlerAnswer::Busy`] when it is full).
pub trait NotificationHandler: Send + Sync + 'static {
    /// Takes one notice and says what to answer.
    fn handle(&self, notice: ListenerNotice) -> HandlerAnswer;
}

impl<F> NotificationHandler for F
where
    F: Fn(ListenerNotice) -> HandlerAnswer + Send + Sync + 'static,
{
    fn handle(&self, notice: ListenerNotice) -> HandlerAnswer {
        self(notice)
    }
}

/// A shared handler is a handler (the wiring keeps a clone).
impl<T: NotificationHandler + ?Sized> NotificationHandler for std::sync::Arc<T> {
    fn handle(&self, notice: ListenerNotice) -> HandlerAnswer {
        (**self).handle(notice)
    }
}

/// What to answer a whole `SendNotification` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `SendNotificationResult` with `OK`.
    Ok,
    /// `SendNotificationResult` with `Unsubscribe`.
    Unsubscribe,
    /// HTTP 503 with `Retry-After`.
    Busy,
}

/// The notice of one notification.
pub(crate) fn notice_of(notification: &Notification) -> ListenerNotice {
    // The engine stores the watermark to resume from: one longer than any Exchange writes is
    // not believed (a forged notification could otherwise park a megabyte in the state store).
    let watermark = notification
        .resume_watermark()
        .map(|w| w.as_str())
        .filter(|w| w.len() <= MAX_WATERMARK_BYTES)
        .map(str::to_string);
    ListenerNotice {
        subscription_id: notification.subscription_id.as_str().to_string(),
        watermark,
        item_ids: notification.item_ids(),
        versions: notification
            .item_versions()
            .map(|v| v.into_iter().cloned().collect()),
    }
}

/// Hands each notification of `call` to `handler`, in order, and decides the answer:
/// - the first `Busy` stops the round and makes the whole call `Busy`: Exchange sends the call
///   again, and notices already taken arrive twice (the engine's passes are idempotent; a
///   notice says *when*, not *what*);
/// - `Unsubscribe` only when every notification was for an unknown subscription (Exchange
///   sends one subscription per call; a mixed call keeps the known one alive);
/// - `OK` otherwise, including a call without notifications.
pub(crate) fn answer(call: &SendNotification, handler: &dyn NotificationHandler) -> Reply {
    let mut any = false;
    let mut all_unknown = true;
    for notification in call.notifications() {
        any = true;
        match handler.handle(notice_of(notification)) {
            HandlerAnswer::Ok => all_unknown = false,
            HandlerAnswer::Unsubscribe => {}
            HandlerAnswer::Busy => return Reply::Busy,
        }
    }
    if any && all_unknown {
        Reply::Unsubscribe
    } else {
        Reply::Ok
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ews::ops::decode_request;

    fn call(notifications: &[&str]) -> SendNotification {
        let messages: String = notifications
            .iter()
            .map(|n| {
                format!(
                    r#"<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification>{n}</m:Notification></m:SendNotificationResponseMessage>"#
                )
            })
            .collect();
        let xml = format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages>{messages}</m:ResponseMessages></m:SendNotification></s:Body></s:Envelope>"#
        );
        decode_request::<SendNotification>(xml.as_bytes(), 1 << 20)
            .expect("decodes")
            .1
    }

    // Written from the SendNotification reference: a modify, a move out and a status event.
    const EVENTS: &str = r#"<t:SubscriptionId>sub-1</t:SubscriptionId><t:PreviousWatermark>wm-1</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents><t:ModifiedEvent><t:Watermark>wm-2</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F"/></t:ModifiedEvent><t:ModifiedEvent><t:Watermark>wm-3</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="3"/><t:ParentFolderId Id="F"/></t:ModifiedEvent><t:MovedEvent><t:Watermark>wm-4</t:Watermark><t:TimeStamp>2026-03-02T10:00:01Z</t:TimeStamp><t:ItemId Id="B2"/><t:ParentFolderId Id="G"/><t:OldItemId Id="B"/><t:OldParentFolderId Id="F"/></t:MovedEvent><t:ModifiedEvent><t:Watermark>wm-5</t:Watermark><t:TimeStamp>2026-03-02T10:00:02Z</t:TimeStamp><t:FolderId Id="F"/><t:ParentFolderId Id="R"/></t:ModifiedEvent><t:StatusEvent><t:Watermark>wm-6</t:Watermark></t:StatusEvent>"#;

    #[test]
    fn notice_lists_each_item_once_and_the_last_watermark() {
        let c = call(&[EVENTS]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(n.subscription_id, "sub-1");
        assert_eq!(n.watermark.as_deref(), Some("wm-6"));
        // A twice, the moved item under its new and old id, the folder event not at all.
        assert_eq!(n.item_ids, ["A", "B2", "B"]);
        // A move is more than a version: nothing to compare.
        assert_eq!(n.versions, None);
    }

    fn versions(n: &ListenerNotice) -> Option<Vec<(&str, Option<&str>)>> {
        n.versions.as_ref().map(|v| {
            v.iter()
                .map(|id| (id.id.as_str(), id.change_key.as_ref().map(|c| c.as_str())))
                .collect()
        })
    }

    #[test]
    fn notice_names_the_versions_of_creations_and_modifications_only() {
        // Two modifications and a creation, a folder's modification and a status event: the
        // three item versions, in order.
        let c = call(&[
            r#"<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:ModifiedEvent><t:Watermark>w1</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F"/></t:ModifiedEvent><t:CreatedEvent><t:Watermark>w2</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="C" ChangeKey="1"/><t:ParentFolderId Id="F"/></t:CreatedEvent><t:ModifiedEvent><t:Watermark>w3</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:FolderId Id="F"/><t:ParentFolderId Id="R"/></t:ModifiedEvent><t:ModifiedEvent><t:Watermark>w4</t:Watermark><t:TimeStamp>2026-03-02T10:00:01Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="3"/><t:ParentFolderId Id="F"/></t:ModifiedEvent><t:StatusEvent><t:Watermark>w5</t:Watermark></t:StatusEvent>"#,
        ]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(
            versions(&n),
            Some(vec![("A", Some("2")), ("C", Some("1")), ("A", Some("3"))])
        );
        // Status events alone: no versions, and nothing else either.
        let c = call(&[
            r#"<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:StatusEvent><t:Watermark>w</t:Watermark></t:StatusEvent>"#,
        ]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(versions(&n), Some(vec![]));
    }

    #[test]
    fn notice_without_a_change_key_or_with_a_deletion_names_no_versions() {
        for event in [
            // A modification whose id has no change key: its version is unknown.
            r#"<t:ModifiedEvent><t:Watermark>w1</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A"/><t:ParentFolderId Id="F"/></t:ModifiedEvent>"#,
            r#"<t:DeletedEvent><t:Watermark>w1</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F"/></t:DeletedEvent>"#,
            r#"<t:NewMailEvent><t:Watermark>w1</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="A" ChangeKey="2"/><t:ParentFolderId Id="F"/></t:NewMailEvent>"#,
        ] {
            let c = call(&[&format!(
                r#"<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:ModifiedEvent><t:Watermark>w0</t:Watermark><t:TimeStamp>2026-03-02T10:00:00Z</t:TimeStamp><t:ItemId Id="B" ChangeKey="5"/><t:ParentFolderId Id="F"/></t:ModifiedEvent>{event}"#
            )]);
            let n = notice_of(c.notifications().next().expect("one"));
            assert_eq!(versions(&n), None, "{event}");
        }
    }

    #[test]
    fn notice_of_status_event_has_no_items() {
        let c = call(&[
            r#"<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:StatusEvent><t:Watermark>w</t:Watermark></t:StatusEvent>"#,
        ]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert!(n.item_ids.is_empty());
        assert_eq!(n.watermark.as_deref(), Some("w"));
    }

    #[test]
    fn notice_without_event_watermarks_falls_back_to_the_previous_one() {
        let c = call(&[
            r#"<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:StatusEvent/>"#,
        ]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(n.watermark.as_deref(), Some("p"));
    }

    #[test]
    fn notice_drops_a_watermark_longer_than_exchange_writes() {
        let long = "w".repeat(MAX_WATERMARK_BYTES + 1);
        let events = format!(
            "<t:SubscriptionId>s</t:SubscriptionId><t:PreviousWatermark>p</t:PreviousWatermark><t:StatusEvent><t:Watermark>{long}</t:Watermark></t:StatusEvent>"
        );
        let c = call(&[&events]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(n.subscription_id, "s");
        assert_eq!(n.watermark, None);
        let fits = "w".repeat(MAX_WATERMARK_BYTES);
        let events = events.replace(&long, &fits);
        let c = call(&[&events]);
        let n = notice_of(c.notifications().next().expect("one"));
        assert_eq!(n.watermark.as_deref(), Some(fits.as_str()));
    }

    /// A handler that answers from a table and records what it saw.
    struct Table {
        answers: Vec<(&'static str, HandlerAnswer)>,
        seen: Mutex<Vec<String>>,
    }

    impl NotificationHandler for Table {
        fn handle(&self, notice: ListenerNotice) -> HandlerAnswer {
            self.seen
                .lock()
                .expect("lock")
                .push(notice.subscription_id.clone());
            self.answers
                .iter()
                .find(|(id, _)| *id == notice.subscription_id)
                .map(|(_, a)| *a)
                .unwrap_or(HandlerAnswer::Unsubscribe)
        }
    }

    fn status(sub: &str) -> String {
        format!(
            "<t:SubscriptionId>{sub}</t:SubscriptionId><t:StatusEvent><t:Watermark>w</t:Watermark></t:StatusEvent>"
        )
    }

    #[test]
    fn answer_table() {
        use HandlerAnswer::{Busy, Ok as Took};
        let rows: &[(&str, &[&str], Reply, &[&str])] = &[
            // The usual call: one known subscription.
            ("known", &["k"], Reply::Ok, &["k"]),
            // A subscription we do not have (any more): tell Exchange to stop.
            ("unknown", &["u"], Reply::Unsubscribe, &["u"]),
            // Mixed (not seen from Exchange): the known one stays alive.
            ("mixed", &["u", "k"], Reply::Ok, &["u", "k"]),
            // Queue full on the second: stop there, 503; the retry redelivers both.
            ("busy", &["k", "b", "k"], Reply::Busy, &["k", "b"]),
            // Nothing to hand over: OK.
            ("empty", &[], Reply::Ok, &[]),
        ];
        for (name, subs, expected, handled) in rows {
            let table = Table {
                answers: vec![("k", Took), ("b", Busy)],
                seen: Mutex::default(),
            };
            let bodies: Vec<String> = subs.iter().map(|s| status(s)).collect();
            let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
            assert_eq!(answer(&call(&refs), &table), *expected, "{name}");
            assert_eq!(*table.seen.lock().expect("lock"), *handled, "{name}");
        }
    }

    #[test]
    fn closure_is_a_handler() {
        let h = |n: ListenerNotice| {
            if n.subscription_id == "k" {
                HandlerAnswer::Ok
            } else {
                HandlerAnswer::Unsubscribe
            }
        };
        assert_eq!(answer(&call(&[&status("k")]), &h), Reply::Ok);
    }
}
