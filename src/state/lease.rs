//! Instances and mailbox leases: which `serve` instance works on which mailbox.
//!
//! Every running instance has an [`InstanceId`] and a row with a heartbeat; every mailbox has a
//! lease row with an owner, an expiry and a generation. An instance renews its leases well
//! before they run out ([`LeaseTiming`]), takes over leases that expired (their owner died or
//! lost the database), and keeps no more than its fair share ([`fair_share`]): when an instance
//! joins, the others release their surplus at their next renewal and the newcomer takes it. The
//! generation grows by one at every change of owner, so a write prepared under an older
//! generation is refused by the store ([`Fence`], [`StateError::LeaseLost`]).
//!
//! The rules live here once, in [`lease_round`], over the few row operations of the
//! [`StateStore`]; both backends run the same code. On SQLite one process is the only instance,
//! so its share is every mailbox.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{MailboxAddress, StateError, StateStore};

/// One running `serve` process, as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// A new id: the host name and a random part, so that logs and `status` say where an
    /// instance runs and a restarted process never passes for the one that died.
    pub fn generate() -> Self {
        let host = host_name().unwrap_or_else(|| "taskbridge".into());
        InstanceId(format!("{host}-{:08x}", rand::random::<u32>()))
    }

    /// An id given by name (tests, configuration).
    pub fn new(id: &str) -> Self {
        InstanceId(id.to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// A mailbox's lease row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The mailbox.
    pub mailbox: MailboxAddress,
    /// The instance holding it (`None`: free).
    pub owner: Option<InstanceId>,
    /// Until when the owner holds it unless it renews.
    pub expires: DateTime<Utc>,
    /// Grows by one at every change of owner.
    pub generation: i64,
}

/// A live instance's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// The instance.
    pub id: InstanceId,
    /// Its heartbeat runs out then.
    pub expires: DateTime<Utc>,
}

/// The lease a write is made under: the store refuses the write in its own transaction when
/// the mailbox's lease has another owner or generation by then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The mailbox.
    pub mailbox: MailboxAddress,
    /// The instance that believes it holds the lease.
    pub owner: InstanceId,
    /// The generation it took the lease at.
    pub generation: i64,
}

/// A notification received by an instance that does not hold its mailbox, queued in the store
/// for the one that does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedNotice {
    /// The mailbox.
    pub mailbox: MailboxAddress,
    /// The subscription it came on.
    pub subscription_id: String,
    /// Its last watermark.
    pub watermark: Option<String>,
    /// The items it names.
    pub item_ids: Vec<String>,
}

/// How long leases last and how often they are renewed (`[cluster]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease (and an instance's heartbeat) lasts without renewal.
    pub lease: Duration,
    /// How often an instance renews; a third of the lease leaves two renewals to fail before
    /// the lease runs out.
    pub renew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease: Duration::from_secs(30),
            renew: Duration::from_secs(10),
        }
    }
}

/// How many of `total` mailboxes `me` should hold among `live` instances: an even split, the
/// remainder going to the first instances in id order, so that the shares add up to `total`
/// and every instance computes the same split.
pub fn fair_share(total: usize, live: &[InstanceId], me: &InstanceId) -> usize {
    let mut ids: Vec<&InstanceId> = live.iter().collect();
    if !ids.contains(&me) {
        ids.push(me);
    }
    ids.sort();
    ids.dedup();
    let n = ids.len();
    let index = ids.iter().position(|id| *id == me).unwrap_or(0);
    total / n + usize::from(index < total % n)
}

/// What one [`lease_round`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRound {
    /// Every lease held after the round, with its generation.
    pub held: BTreeMap<MailboxAddress, i64>,
    /// Leases taken in this round.
    pub gained: Vec<MailboxAddress>,
    /// Leases held before and not any more: released as surplus, or found taken or moved.
    pub lost: Vec<MailboxAddress>,
    /// The live instances (with this one).
    pub live: Vec<InstanceId>,
}

/// One renewal round of `me` at `now`: the heartbeat, renewal of the leases in `held` (the
/// leases held after the previous round) up to the fair share, release of the surplus, and
/// take-over of free or expired leases up to the share.
pub async fn lease_round<S: StateStore>(
    store: &S,
    me: &InstanceId,
    held: &BTreeMap<MailboxAddress, i64>,
    now: DateTime<Utc>,
    timing: LeaseTiming,
) -> Result<LeaseRound, StateError> {
    let until = now + chrono::Duration::from_std(timing.lease).unwrap_or(chrono::Duration::MAX);
    let live: Vec<InstanceId> = store
        .heartbeat(me, now, until)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let rows = store.leases().await?;
    let share = fair_share(rows.len(), &live, me);
    let mut round = LeaseRound {
        live,
        ..LeaseRound::default()
    };
    // Mine by the rows: held here, same owner and generation.
    let mut mine: Vec<&Lease> = Vec::new();
    let mut free: Vec<&Lease> = Vec::new();
    for row in &rows {
        let owned = row.owner.as_ref() == Some(me);
        match held.get(&row.mailbox) {
            Some(&g) if owned && g == row.generation => mine.push(row),
            _ if owned => mine.push(row), // taken in a round whose answer was lost
            _ if row.owner.is_none() || row.expires <= now => free.push(row),
            _ => {}
        }
    }
    for m in held.keys() {
        if !mine.iter().any(|l| &l.mailbox == m) {
            round.lost.push(m.clone());
        }
    }
    // Renew up to the share; release the rest (the last in address order, so that the choice
    // is stable from one round to the next).
    // The renewals are one statement, so that a round costs the same few round trips
    // whatever number of leases the instance holds.
    let to_renew: Vec<(MailboxAddress, i64)> = mine
        .iter()
        .take(share)
        .map(|l| (l.mailbox.clone(), l.generation))
        .collect();
    let renewed = store.renew_leases(me, &to_renew, until).await?;
    for (i, lease) in mine.iter().enumerate() {
        if i >= share {
            store
                .release_lease(&lease.mailbox, me, lease.generation)
                .await?;
            if held.contains_key(&lease.mailbox) {
                round.lost.push(lease.mailbox.clone());
            }
        } else if renewed.contains(&lease.mailbox) {
            round.held.insert(lease.mailbox.clone(), lease.generation);
            if !held.contains_key(&lease.mailbox) {
                round.gained.push(lease.mailbox.clone());
            }
        } else if held.contains_key(&lease.mailbox) {
            round.lost.push(lease.mailbox.clone());
        }
    }
    // Take free leases up to the share, starting at a place that depends on the instance, so
    // that instances taking at once rarely race for the same rows.
    if round.held.len() < share && !free.is_empty() {
        let start = (hash_of(me.as_str()) as usize) % free.len();
        for lease in free.iter().cycle().skip(start).take(free.len()) {
            if round.held.len() >= share {
                break;
            }
            if let Some(g) = store
                .take_lease(&lease.mailbox, me, lease.generation, now, until)
                .await?
            {
                round.held.insert(lease.mailbox.clone(), g);
                round.gained.push(lease.mailbox.clone());
            }
        }
    }
    round.lost.sort();
    round.lost.dedup();
    Ok(round)
}

/// A stable hash (FNV-1a) of an id, for spreading where instances start looking.
fn hash_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Leaves the cluster: releases every lease of `me` and removes its heartbeat, so that others
/// take its mailboxes at their next round instead of after the expiry.
pub async fn leave<S: StateStore>(
    store: &S,
    me: &InstanceId,
    held: &BTreeMap<MailboxAddress, i64>,
) -> Result<(), StateError> {
    for (m, g) in held {
        store.release_lease(m, me, *g).await?;
    }
    store.remove_instance(me).await
}

/// Milliseconds since the epoch, as both backends store expiries.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time of a stored expiry.
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<InstanceId> {
        names.iter().map(|n| InstanceId::new(n)).collect()
    }

    #[test]
    fn fair_shares_add_up_to_the_total() {
        let live = ids(&["a", "b", "c"]);
        let shares: Vec<usize> = live.iter().map(|me| fair_share(10, &live, me)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(fair_share(10, &[], &InstanceId::new("solo")), 10);
        assert_eq!(fair_share(0, &live, &live[1]), 0);
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(InstanceId::generate(), InstanceId::generate());
    }
}
