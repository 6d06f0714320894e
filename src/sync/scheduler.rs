//! When each mailbox gets its pass: between step "notified" and step "request" of the list in
//! the [`sync`](super) module doc, and for step "reconcile".
//!
//! A notified mailbox is read after a quiet time (the debounce), or once the first notification
//! not yet read is `max_debounce` old under a stream of them. Catch-up and reconciliation passes
//! are due at once and go before newer notifications. At most `mailbox_concurrency` passes run,
//! never two of one mailbox: a mailbox due while its pass runs gets another pass after it
//! ends (its retry), a debounce later. The scheduler also tells which subscriptions fell silent.
//!
//! A mailbox whose notifications named nothing but item versions is asked about them when its
//! pass would start: if the engine wrote every one of them itself (`echo.rs`), the pass is not
//! made. Asking then rather than when the notification came matters: Exchange sends the
//! notification of a write as it commits it, often before the write's answer reached the pass
//! that made it, and that pass is still running (the mailbox waits for it) until it has the
//! answer. If some are not the engine's, the pass starts with those versions
//! ([`Due::items`]), so that it can read just those items rather than list the folder's changes.
//!
//! Pure bookkeeping over the instants the caller gives, so it is tested without a runtime;
//! [`Engine::run`](super::Engine::run) waits for the next event, asks it, and acts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::state::{ItemRef, MailboxAddress};

/// More versions than this waiting for one mailbox: the pass is made without asking (it costs
/// less than remembering them).
const MAX_VERSIONS: usize = 256;

/// What the notifications a mailbox waits with were about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum News {
    /// Only these item versions, created or modified.
    Versions(Vec<ItemRef>),
    /// Anything else: a deletion or move, a notification without versions, a poll, a catch-up.
    Other,
}

impl News {
    fn and(self, later: News) -> News {
        match (self, later) {
            (News::Versions(mut a), News::Versions(b)) if a.len() + b.len() <= MAX_VERSIONS => {
                a.extend(b);
                News::Versions(a)
            }
            _ => News::Other,
        }
    }
}

/// A mailbox waiting for its pass.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    /// The first notification not yet read (the start, for a catch-up).
    first: Instant,
    /// The last one.
    last: Instant,
    /// What they were about.
    news: News,
    /// How many of the versions in `news`, from the first, the engine is known to have
    /// written: asked again when the pass would start, only the rest are looked up.
    own_known: usize,
}

impl Pending {
    /// Whether the news are versions only, all written by the engine. A mailbox waiting for a
    /// free slot is asked at every event; the count of versions known as ours makes each
    /// asking cost only the versions not known yet.
    fn all_own(&mut self, own: impl Fn(&[ItemRef]) -> usize) -> bool {
        let News::Versions(versions) = &self.news else {
            return false;
        };
        if self.own_known < versions.len() {
            self.own_known += own(&versions[self.own_known..]);
        }
        !versions.is_empty() && self.own_known == versions.len()
    }
}

/// The passes [`Scheduler::start_due`] starts, and the mailboxes it let go without one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// The mailboxes whose pass starts now, marked running.
    pub start: Vec<MailboxAddress>,
    /// Mailboxes due whose notifications named only versions the engine wrote: no pass.
    pub echoes: Vec<MailboxAddress>,
    /// Of the passes in `start`, those whose notifications named nothing but item versions
    /// (created or modified), with the versions not known as the engine's own: such a pass
    /// may read those items alone ([`Engine::sync_items`](super::Engine::sync_items)).
    pub items: HashMap<MailboxAddress, Vec<ItemRef>>,
}

/// The passes of the mailboxes: which wait, which run, which were heard from when.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// When the engine started. Catch-up passes count as notified then, so they go before
    /// newer notifications; no subscription is called silent before it has had time to speak.
    start: Instant,
    /// How many passes may run at once (each holds its mailbox's rows in memory).
    concurrency: usize,
    /// Mailboxes waiting for their pass.
    pending: HashMap<MailboxAddress, Pending>,
    /// Mailboxes whose pass runs.
    running: HashSet<MailboxAddress>,
    /// Mailboxes due again while their pass ran, with what they were due for: pending again
    /// when it ends.
    again: HashMap<MailboxAddress, News>,
    /// When the server last spoke for each mailbox (a notification or a poll).
    last_heard: HashMap<MailboxAddress, Instant>,
}

impl Scheduler {
    /// A scheduler started at `start` that runs at most `concurrency` passes at once (at
    /// least one).
    pub fn new(start: Instant, concurrency: usize) -> Self {
        Scheduler {
            start,
            concurrency: concurrency.max(1),
            pending: HashMap::new(),
            running: HashSet::new(),
            again: HashMap::new(),
            last_heard: HashMap::new(),
        }
    }

    /// Gives every mailbox of `mailboxes` a pass, as if notified at the start (catch-up at
    /// start, a reconciliation, host events missed); a mailbox already waiting keeps its place.
    pub fn catch_up(&mut self, mailboxes: impl IntoIterator<Item = MailboxAddress>) {
        let start = self.start;
        for m in mailboxes {
            self.pend(m, start, start, News::Other, false);
        }
    }

    /// The server spoke for `mailbox` at `now` (a notification or a poll); when items
    /// `changed`, the mailbox's pass is due after the debounce.
    pub fn heard(&mut self, mailbox: MailboxAddress, now: Instant, changed: bool) {
        self.last_heard.insert(mailbox.clone(), now);
        if changed {
            self.pend(mailbox, now, now, News::Other, true);
        }
    }

    /// A notification for `mailbox` at `now` named only these item versions (created or
    /// modified; none: nothing changed): its pass is due after the debounce, unless when it
    /// would start the engine wrote each version itself.
    pub fn heard_versions(
        &mut self,
        mailbox: MailboxAddress,
        now: Instant,
        versions: Vec<ItemRef>,
    ) {
        self.last_heard.insert(mailbox.clone(), now);
        if !versions.is_empty() {
            let news = if versions.len() > MAX_VERSIONS {
                News::Other
            } else {
                News::Versions(versions)
            };
            self.pend(mailbox, now, now, news, true);
        }
    }

    /// `mailbox`'s notifications may have been missed (a streaming connection broke or was
    /// reopened) at `now`: its pass is due after the debounce, without counting as heard from.
    pub fn missed(&mut self, mailbox: MailboxAddress, now: Instant) {
        self.pend(mailbox, now, now, News::Other, true);
    }

    /// Adds `news` to the mailbox's wait, or starts one from `first`; `restart` moves a
    /// waiting mailbox's quiet time to `last`.
    fn pend(
        &mut self,
        mailbox: MailboxAddress,
        first: Instant,
        last: Instant,
        news: News,
        restart: bool,
    ) {
        match self.pending.get_mut(&mailbox) {
            Some(p) => {
                if restart {
                    p.last = last;
                }
                let earlier = std::mem::replace(&mut p.news, News::Other);
                p.news = earlier.and(news);
            }
            None => {
                self.pending.insert(
                    mailbox,
                    Pending {
                        first,
                        last,
                        news,
                        own_known: 0,
                    },
                );
            }
        }
    }

    /// Of `known`, the mailboxes not heard from for longer than `silent_after` at `now`;
    /// none while the engine has run for less than that.
    pub fn silent(
        &self,
        known: impl IntoIterator<Item = MailboxAddress>,
        now: Instant,
        silent_after: Duration,
    ) -> Vec<MailboxAddress> {
        if now.duration_since(self.start) <= silent_after {
            return Vec::new();
        }
        known
            .into_iter()
            .filter(|m| {
                self.last_heard
                    .get(m)
                    .is_none_or(|t| now.duration_since(*t) > silent_after)
            })
            .collect()
    }

    /// A silent mailbox was subscribed again at `now`: it counts as heard from, and gets a
    /// catch-up pass.
    pub fn resubscribed(&mut self, mailbox: MailboxAddress, now: Instant) {
        self.last_heard.insert(mailbox.clone(), now);
        self.catch_up([mailbox]);
    }

    /// The mailboxes whose pass starts at `now`, marked running: those whose debounce is over
    /// (`debounce` since the last notification, or `max_debounce` since the first), oldest
    /// first, while fewer than the concurrency run. Others due stay pending until a pass ends;
    /// a mailbox due while its pass runs gets another pass after it. A mailbox due whose
    /// notifications named only versions the engine wrote gets no pass (it is in
    /// [`Due::echoes`]); `own` tells how many of a list of versions, from the first, it wrote.
    pub fn start_due(
        &mut self,
        now: Instant,
        debounce: Duration,
        max_debounce: Duration,
        own: impl Fn(&[ItemRef]) -> usize,
    ) -> Due {
        let mut due: Vec<(Instant, MailboxAddress)> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.last + debounce || now >= p.first + max_debounce)
            .map(|(m, p)| (p.first, m.clone()))
            .collect();
        due.sort();
        let mut out = Due::default();
        for (_, mailbox) in due {
            if self.running.contains(&mailbox) {
                // Asked when it ends: the running pass may be the one that wrote them.
                let news = self
                    .pending
                    .remove(&mailbox)
                    .map_or(News::Other, |p| p.news);
                let news = match self.again.remove(&mailbox) {
                    Some(earlier) => earlier.and(news),
                    None => news,
                };
                self.again.insert(mailbox, news);
                continue;
            }
            if self
                .pending
                .get_mut(&mailbox)
                .is_some_and(|p| p.all_own(&own))
            {
                self.pending.remove(&mailbox);
                out.echoes.push(mailbox);
                continue;
            }
            if self.running.len() >= self.concurrency {
                continue;
            }
            if let Some(Pending {
                news: News::Versions(mut versions),
                own_known,
                ..
            }) = self.pending.remove(&mailbox)
            {
                // The first `own_known` are the engine's own writes: nothing to read there.
                versions.drain(..own_known.min(versions.len()));
                out.items.insert(mailbox.clone(), versions);
            }
            self.running.insert(mailbox.clone());
            out.start.push(mailbox);
        }
        out
    }

    /// `mailbox` is no longer this instance's (its lease went): no pass of it waits. A pass
    /// running now ends at its next commit, which the lease's fence refuses.
    pub fn forget(&mut self, mailbox: &MailboxAddress) {
        self.pending.remove(mailbox);
        self.again.remove(mailbox);
        self.last_heard.remove(mailbox);
    }

    /// The pass of `mailbox` ended at `now` (done or failed): its slot is free, and if it was
    /// due again meanwhile, it is pending as if notified now.
    pub fn finished(&mut self, mailbox: &MailboxAddress, now: Instant) {
        self.running.remove(mailbox);
        if let Some(news) = self.again.remove(mailbox) {
            self.pend(mailbox.clone(), now, now, news, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(5);

    fn mb(name: &str) -> MailboxAddress {
        MailboxAddress::new(&format!("{name}@contoso.com"))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The passes starting at `at`, where the engine wrote none of the versions.
    fn due(s: &mut Scheduler, at: Instant) -> Vec<MailboxAddress> {
        s.start_due(at, DEBOUNCE, CAP, |_| 0).start
    }

    #[test]
    fn scheduler_notified_mailbox_is_due_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0, true);
        assert!(due(&mut s, t0 + ms(499)).is_empty());
        assert_eq!(due(&mut s, t0 + ms(500)), vec![mb("ann")]);
        // Started once: not due again.
        assert!(due(&mut s, t0 + ms(2000)).is_empty());
    }

    #[test]
    fn scheduler_status_notification_makes_nothing_due() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0, false);
        assert!(due(&mut s, t0 + ms(10_000)).is_empty());
    }

    #[test]
    fn scheduler_each_notification_restarts_the_quiet_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0, true);
        s.heard(mb("ann"), t0 + ms(400), true);
        assert!(due(&mut s, t0 + ms(800)).is_empty());
        assert_eq!(due(&mut s, t0 + ms(900)), vec![mb("ann")]);
    }

    #[test]
    fn scheduler_stream_of_notifications_is_read_at_the_cap() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        let mut at = t0;
        // A notification every 400 ms never leaves a quiet time of 500 ms.
        while at < t0 + CAP {
            s.heard(mb("ann"), at, true);
            assert!(due(&mut s, at).is_empty());
            at += ms(400);
        }
        assert_eq!(due(&mut s, t0 + CAP), vec![mb("ann")]);
    }

    #[test]
    fn scheduler_catch_up_goes_before_newer_notifications() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 1);
        s.heard(mb("ann"), t0 + ms(100), true);
        s.catch_up([mb("bob")]);
        // One slot: the catch-up (notified at the start) goes before the newer notification.
        assert_eq!(due(&mut s, t0 + ms(600)), vec![mb("bob")]);
        assert!(due(&mut s, t0 + ms(700)).is_empty());
        s.finished(&mb("bob"), t0 + ms(800));
        assert_eq!(due(&mut s, t0 + ms(800)), vec![mb("ann")]);
    }

    #[test]
    fn scheduler_catch_up_keeps_a_waiting_mailbox_in_place() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0 + ms(100), true);
        s.catch_up([mb("ann")]);
        // Still waiting for its own quiet time.
        assert!(due(&mut s, t0 + ms(200)).is_empty());
        assert_eq!(due(&mut s, t0 + ms(600)), vec![mb("ann")]);
    }

    #[test]
    fn scheduler_runs_at_most_the_concurrency_oldest_first() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 2);
        s.heard(mb("cid"), t0 + ms(20), true);
        s.heard(mb("ann"), t0, true);
        s.heard(mb("bob"), t0 + ms(10), true);
        assert_eq!(due(&mut s, t0 + ms(600)), vec![mb("ann"), mb("bob")]);
        // Both slots taken: the third waits for a pass to end, not for a new notification.
        assert!(due(&mut s, t0 + ms(700)).is_empty());
        s.finished(&mb("bob"), t0 + ms(800));
        assert_eq!(due(&mut s, t0 + ms(800)), vec![mb("cid")]);
    }

    #[test]
    fn scheduler_zero_concurrency_still_runs_one_pass() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 0);
        s.catch_up([mb("ann"), mb("bob")]);
        assert_eq!(due(&mut s, t0 + DEBOUNCE).len(), 1);
    }

    #[test]
    fn scheduler_mailbox_due_while_its_pass_runs_gets_another_pass_after_it() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0, true);
        assert_eq!(due(&mut s, t0 + ms(500)), vec![mb("ann")]);
        // Notified again during the pass: never a second pass of the same mailbox at once.
        s.heard(mb("ann"), t0 + ms(600), true);
        assert!(due(&mut s, t0 + ms(1200)).is_empty());
        // The pass ends: another follows after a quiet time counted from its end.
        s.finished(&mb("ann"), t0 + ms(1300));
        assert!(due(&mut s, t0 + ms(1799)).is_empty());
        assert_eq!(due(&mut s, t0 + ms(1800)), vec![mb("ann")]);
        s.finished(&mb("ann"), t0 + ms(1900));
        assert!(due(&mut s, t0 + ms(5000)).is_empty());
    }

    #[test]
    fn scheduler_pass_that_ends_without_news_is_not_repeated() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.catch_up([mb("ann")]);
        assert!(due(&mut s, t0 + ms(499)).is_empty());
        assert_eq!(due(&mut s, t0 + DEBOUNCE), vec![mb("ann")]);
        s.finished(&mb("ann"), t0 + ms(100));
        assert!(due(&mut s, t0 + ms(10_000)).is_empty());
    }

    #[test]
    fn scheduler_forgets_a_mailbox_whose_lease_went() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        s.heard(mb("ann"), t0, true);
        s.heard(mb("bob"), t0, true);
        s.forget(&mb("ann"));
        assert_eq!(due(&mut s, t0 + DEBOUNCE), vec![mb("bob")]);
        // Due again while its pass runs, then forgotten: no pass after it either.
        s.heard(mb("bob"), t0 + ms(600), true);
        assert!(due(&mut s, t0 + ms(1200)).is_empty());
        s.forget(&mb("bob"));
        s.finished(&mb("bob"), t0 + ms(1300));
        assert!(due(&mut s, t0 + ms(5000)).is_empty());
    }

    #[test]
    fn scheduler_silent_mailboxes_are_those_not_heard_from() {
        let t0 = Instant::now();
        let after = Duration::from_secs(120);
        let mut s = Scheduler::new(t0, 4);
        let known = || [mb("ann"), mb("bob"), mb("cid")];
        // Nobody is silent while the engine has not run that long.
        assert!(s.silent(known(), t0 + after, after).is_empty());
        s.heard(mb("ann"), t0 + Duration::from_secs(100), false);
        s.heard(mb("bob"), t0 + Duration::from_secs(10), true);
        let now = t0 + Duration::from_secs(200);
        assert_eq!(s.silent(known(), now, after), vec![mb("bob"), mb("cid")]);
        // Subscribed again: heard from now, and a pass catches up.
        s.resubscribed(mb("cid"), now);
        assert_eq!(s.silent(known(), now, after), vec![mb("bob")]);
        assert_eq!(
            due(&mut s, now),
            vec![mb("cid"), mb("bob")],
            "the catch-up counts from the start, before bob's later notification"
        );
    }
    fn v(id: &str, ck: &str) -> ItemRef {
        ItemRef {
            item_id: id.into(),
            change_key: ck.into(),
        }
    }

    #[test]
    fn scheduler_mailbox_notified_of_its_own_writes_only_gets_no_pass() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        let own = |versions: &[ItemRef]| {
            versions
                .iter()
                .take_while(|x| x.change_key == "ours")
                .count()
        };
        s.heard_versions(mb("ann"), t0, vec![v("A", "ours"), v("B", "ours")]);
        s.heard_versions(mb("bob"), t0, vec![v("A", "ours"), v("C", "theirs")]);
        let due = s.start_due(t0 + DEBOUNCE, DEBOUNCE, CAP, own);
        assert_eq!(
            due.start,
            vec![mb("bob")],
            "a version not ours needs the pass"
        );
        assert_eq!(due.echoes, vec![mb("ann")]);
        // Bob's pass may read the one item not written by the engine.
        assert_eq!(
            due.items,
            HashMap::from([(mb("bob"), vec![v("C", "theirs")])])
        );
        // Let go: not due again, and it took no slot.
        assert_eq!(
            s.start_due(t0 + ms(5000), DEBOUNCE, CAP, own),
            Due::default()
        );
        // Own versions with any other news (a deletion, a catch-up): the pass is made.
        s.heard_versions(mb("cid"), t0, vec![v("A", "ours")]);
        s.heard(mb("cid"), t0, true);
        s.heard_versions(mb("dan"), t0, vec![v("A", "ours")]);
        s.catch_up([mb("dan")]);
        let due = s.start_due(t0 + ms(6000), DEBOUNCE, CAP, own);
        assert_eq!(due.start, vec![mb("cid"), mb("dan")]);
        assert!(due.echoes.is_empty());
        // Their passes list the folder's changes: the news are more than versions.
        assert!(due.items.is_empty());
        // A notification of folder or status events only names no version: nothing is due.
        s.heard_versions(mb("eve"), t0, vec![]);
        assert_eq!(
            s.start_due(t0 + ms(9000), DEBOUNCE, CAP, own),
            Due::default()
        );
    }

    #[test]
    fn scheduler_asks_about_versions_when_the_pass_that_may_have_written_them_ends() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        let written = std::cell::Cell::new(false);
        let own = |versions: &[ItemRef]| if written.get() { versions.len() } else { 0 };
        s.heard(mb("ann"), t0, true);
        assert_eq!(
            s.start_due(t0 + DEBOUNCE, DEBOUNCE, CAP, own).start,
            vec![mb("ann")]
        );
        // The notification of the pass's own write comes before the write's answer.
        s.heard_versions(mb("ann"), t0 + ms(600), vec![v("A", "2")]);
        assert_eq!(
            s.start_due(t0 + ms(1100), DEBOUNCE, CAP, own),
            Due::default()
        );
        // The answer came (the version is known), then the pass ended: no second pass.
        written.set(true);
        s.finished(&mb("ann"), t0 + ms(1200));
        let due = s.start_due(t0 + ms(1700), DEBOUNCE, CAP, own);
        assert!(due.start.is_empty());
        assert_eq!(due.echoes, vec![mb("ann")]);
        // Versions the engine never wrote, heard during a pass: the pass follows it.
        written.set(false);
        s.heard(mb("bob"), t0, true);
        assert_eq!(
            s.start_due(t0 + ms(2000), DEBOUNCE, CAP, own).start,
            vec![mb("bob")]
        );
        s.heard_versions(mb("bob"), t0 + ms(2100), vec![v("B", "9")]);
        assert_eq!(
            s.start_due(t0 + ms(2600), DEBOUNCE, CAP, own),
            Due::default()
        );
        s.finished(&mb("bob"), t0 + ms(2700));
        assert_eq!(
            s.start_due(t0 + ms(3200), DEBOUNCE, CAP, own).start,
            vec![mb("bob")]
        );
    }

    #[test]
    fn scheduler_forgets_versions_beyond_its_bound_and_makes_the_pass() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 4);
        for i in 0..=MAX_VERSIONS {
            s.heard_versions(mb("ann"), t0, vec![v(&format!("i{i}"), "ours")]);
        }
        // As many in one notification.
        let many = (0..=MAX_VERSIONS)
            .map(|i| v(&format!("i{i}"), "ours"))
            .collect();
        s.heard_versions(mb("bob"), t0, many);
        let due = s.start_due(t0 + DEBOUNCE, DEBOUNCE, CAP, |v: &[ItemRef]| v.len());
        assert_eq!(due.start, vec![mb("ann"), mb("bob")]);
    }

    // A mailbox waiting for a slot is asked about its versions at every event; what it was
    // told about the first ones is kept, so only later versions are looked up, and one version
    // not ours keeps the pass however many of ours come after it.
    #[test]
    fn scheduler_asks_only_about_versions_not_known_as_ours_yet() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, 1);
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        // Looks versions up one by one, as the engine's memory of its writes does.
        let own = |versions: &[ItemRef]| {
            versions
                .iter()
                .take_while(|x| {
                    asked.borrow_mut().push(x.item_id.clone());
                    x.change_key == "ours"
                })
                .count()
        };
        s.heard(mb("ann"), t0, true);
        s.heard_versions(mb("bob"), t0, vec![v("A", "ours"), v("B", "theirs")]);
        let due = s.start_due(t0 + DEBOUNCE, DEBOUNCE, CAP, own);
        assert_eq!(due.start, vec![mb("ann")], "one slot");
        assert_eq!(*asked.borrow(), ["A", "B"]);
        // Bob waits for ann's slot and is asked again at the next event: A is known as ours,
        // B is looked up again (it may be a write whose answer had not come), C is behind B.
        s.heard_versions(mb("bob"), t0 + ms(600), vec![v("C", "ours")]);
        asked.borrow_mut().clear();
        assert_eq!(
            s.start_due(t0 + ms(1100), DEBOUNCE, CAP, own),
            Due::default()
        );
        assert_eq!(*asked.borrow(), ["B"]);
        s.finished(&mb("ann"), t0 + ms(1200));
        let due = s.start_due(t0 + ms(1300), DEBOUNCE, CAP, own);
        assert_eq!(
            due.start,
            vec![mb("bob")],
            "B is not ours: the pass is made"
        );
        assert!(due.echoes.is_empty());
    }
}
