//! Which mailboxes' subscriptions share a Mailbox server: the groups of Microsoft's procedure
//! for server affinity. Mailboxes with the same Autodiscover `GroupingInformation` and EWS URL
//! form a group (at most [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] each, split in address order);
//! every streaming Subscribe of a group carries the group's anchor (its first address in
//! alphabetical order) as `X-AnchorMailbox`, so that one backend holds all of them and one
//! GetStreamingEvents connection can carry them. Mailboxes without a known grouping are
//! anchored on themselves; the backend cookies their subscriptions answer still regroup the
//! connections (`streaming.rs`), which is also the safety net when a grouping is stale.

use std::collections::{BTreeMap, HashMap};

use tracing::info;

use super::config::MAX_SUBSCRIPTIONS_PER_CONNECTION;
use super::engine::Engine;
use super::mailbox::{Affinity, Delivery, MailboxStore};
use crate::pm::PmHost;
use crate::state::{MailboxAddress, StateStore};

/// Each grouped mailbox's anchor, from each mailbox's grouping key: mailboxes of one key in
/// address order, cut into groups of at most `per_group`, each anchored on its first mailbox.
pub(crate) fn plan(
    keys: &HashMap<MailboxAddress, String>,
    per_group: usize,
) -> HashMap<MailboxAddress, MailboxAddress> {
    let mut by_key: BTreeMap<&str, Vec<&MailboxAddress>> = BTreeMap::new();
    for (mailbox, key) in keys {
        by_key.entry(key.as_str()).or_default().push(mailbox);
    }
    let mut anchors = HashMap::new();
    for mut members in by_key.into_values() {
        members.sort_by_key(|m| m.as_str().to_ascii_lowercase());
        for group in members.chunks(per_group.max(1)) {
            let anchor = group[0].clone();
            for m in group {
                anchors.insert((*m).clone(), anchor.clone());
            }
        }
    }
    anchors
}

impl<H: PmHost, M: MailboxStore, S: StateStore> Engine<H, M, S> {
    /// Sets the mailboxes' grouping keys (Autodiscover's `GroupingInformation` joined with the
    /// EWS URL): the streaming subscriptions made from now on are anchored on their group.
    /// Mailboxes not named here are anchored on themselves.
    pub fn set_affinity_groups(&self, keys: &HashMap<MailboxAddress, String>) {
        let anchors = plan(keys, MAX_SUBSCRIPTIONS_PER_CONNECTION);
        let groups = anchors
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len();
        info!(
            mailboxes = anchors.len(),
            groups, "server affinity groups set from GroupingInformation"
        );
        *self
            .inner
            .runtime
            .anchors
            .write()
            .expect("anchor map poisoned") = anchors;
    }

    /// The affinity a Subscribe of `mailbox` by `delivery` carries: for a streaming
    /// subscription of a grouped mailbox, its group's anchor and the backend holding the
    /// anchor's subscription (when one answered).
    pub(crate) fn affinity_for(
        &self,
        mailbox: &MailboxAddress,
        delivery: &Delivery,
    ) -> Option<Affinity> {
        // Pull subscriptions are read with GetEvents routed by their own mailbox, and push
        // ones need no later request: only streaming gains from a shared backend.
        if !matches!(delivery, Delivery::Streaming) {
            return None;
        }
        let anchor = self
            .inner
            .runtime
            .anchors
            .read()
            .expect("anchor map poisoned")
            .get(mailbox)
            .cloned()?;
        let backend = self
            .inner
            .runtime
            .with_subscriptions(|subscriptions, backends| {
                subscriptions
                    .iter()
                    .find(|(_, m)| **m == anchor)
                    .and_then(|(id, _)| backends.get(id).cloned())
            });
        Some(Affinity { anchor, backend })
    }

    /// Anchors `mailbox` on itself from now on: its group's backend lost its subscription (a
    /// database fail-over may have moved it), so its next subscription goes where it lives
    /// and its cookie regroups it.
    pub(crate) fn leave_affinity_group(&self, mailbox: &MailboxAddress) {
        self.inner
            .runtime
            .anchors
            .write()
            .expect("anchor map poisoned")
            .remove(mailbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(pairs: &[(&str, &str)]) -> HashMap<MailboxAddress, String> {
        pairs
            .iter()
            .map(|(m, k)| (MailboxAddress::new(m), k.to_string()))
            .collect()
    }

    #[test]
    fn each_group_is_anchored_on_its_first_address_and_split_at_the_limit() {
        let keys = keyed(&[
            ("dana@example.com", "MBX01|https://a/EWS"),
            ("bob@example.com", "MBX01|https://a/EWS"),
            ("chen@example.com", "MBX01|https://a/EWS"),
            ("ann@example.com", "MBX02|https://a/EWS"),
            // Same GroupingInformation, another EWS URL: another group.
            ("eve@example.com", "MBX01|https://b/EWS"),
        ]);
        let anchors = plan(&keys, 2);
        let anchor = |m: &str| anchors[&MailboxAddress::new(m)].as_str().to_string();
        assert_eq!(anchor("bob@example.com"), "bob@example.com");
        assert_eq!(anchor("chen@example.com"), "bob@example.com");
        // The third of MBX01 starts a group of its own.
        assert_eq!(anchor("dana@example.com"), "dana@example.com");
        assert_eq!(anchor("ann@example.com"), "ann@example.com");
        assert_eq!(anchor("eve@example.com"), "eve@example.com");
        let big = plan(&keys, 200);
        assert_eq!(
            big[&MailboxAddress::new("dana@example.com")].as_str(),
            "bob@example.com"
        );
    }
}
