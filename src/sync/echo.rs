//! The echo of taskbridge's own writes, told from the notification (step notified of the
//! [`sync`](super) module doc).
//!
//! Every item taskbridge creates or updates comes back as a notification naming the version it
//! wrote. A mailbox pass would list that version with SyncFolderItems and skip it by its change
//! key (`is_own_version` in `inbound.rs`): a round trip to Exchange and several to the state
//! store for nothing. [`OwnWrites`] remembers the versions written lately; the scheduler asks
//! it, when a notified mailbox's pass would start, whether the notifications named only those,
//! and then makes no pass (their watermarks are noted all the same).
//!
//! Why skipping that pass loses no edit: each change in a mailbox is its own event with the
//! change key of the version it made, so a person's edit, even one Exchange merged into our
//! write (the case `is_own_version` checks the content for), has an event with a change key of
//! its own, which is not ours and brings the pass. The memory is per process and bounded: a
//! version it forgot or never saw (after a restart; a publish's write whose notification came
//! before its answer) costs the pass it costs without it.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

use crate::state::ItemRef;

/// Versions remembered per generation: two generations are kept, so the last 8,192 to 16,384
/// writes are known (16 bytes each, whatever the ids' length).
const GENERATION: usize = 8192;

/// The item versions taskbridge wrote lately.
///
/// A version is kept as a 64-bit keyed hash of its item id and change key (the key random per
/// process, so no one can forge a colliding version); a collision would make a person's edit
/// wait for the next pass of its mailbox (another notification's or the reconciliation's), at
/// odds of about one in 2^50 per notification with every slot full.
#[derive(Default)]
pub(crate) struct OwnWrites {
    hasher: RandomState,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<u64, BuildHasherDefault<KeyedHash>>,
    previous: HashSet<u64, BuildHasherDefault<KeyedHash>>,
}

/// The sets' hasher: their values are already keyed hashes, so hashing them again (the
/// standard set's SipHash) would spend time for nothing.
#[derive(Default)]
struct KeyedHash(u64);

impl Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input still hashes, byte by byte.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl OwnWrites {
    /// Remembers versions taskbridge just wrote (an UpdateItem's or CreateItem's answers).
    pub(crate) fn wrote<'a>(&self, versions: impl IntoIterator<Item = &'a ItemRef>) {
        let hashes: Vec<u64> = versions.into_iter().map(|v| self.hash(v)).collect();
        if hashes.is_empty() {
            return;
        }
        let mut g = self.generations.lock().expect("own writes poisoned");
        for h in hashes {
            if g.current.len() >= GENERATION {
                g.previous = std::mem::take(&mut g.current);
            }
            g.current.insert(h);
        }
    }

    /// How many of `versions`, from the first, taskbridge wrote: all of them means the
    /// notification naming them is the echo of its own writes. Stops at the first it did not
    /// write, so that asking again about a list that grew costs only what is new (the
    /// scheduler keeps the count; a version once known as ours stays ours).
    pub(crate) fn own_prefix(&self, versions: &[ItemRef]) -> usize {
        let g = self.generations.lock().expect("own writes poisoned");
        versions
            .iter()
            .take_while(|v| {
                let h = self.hash(v);
                g.current.contains(&h) || g.previous.contains(&h)
            })
            .count()
    }

    /// Drops from `versions` those taskbridge wrote.
    pub(crate) fn drop_own(&self, versions: &mut Vec<ItemRef>) {
        if versions.is_empty() {
            return;
        }
        let g = self.generations.lock().expect("own writes poisoned");
        versions.retain(|v| {
            let h = self.hash(v);
            !(g.current.contains(&h) || g.previous.contains(&h))
        });
    }

    /// Whether `versions` are all versions taskbridge wrote. False for an empty list
    /// (nothing to recognise).
    #[cfg(test)]
    fn all_own(&self, versions: &[ItemRef]) -> bool {
        !versions.is_empty() && self.own_prefix(versions) == versions.len()
    }

    fn hash(&self, version: &ItemRef) -> u64 {
        self.hasher
            .hash_one((version.item_id.as_str(), version.change_key.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, ck: &str) -> ItemRef {
        ItemRef {
            item_id: id.into(),
            change_key: ck.into(),
        }
    }

    #[test]
    fn only_versions_written_are_own() {
        let own = OwnWrites::default();
        own.wrote([&v("A", "1"), &v("B", "7")]);
        assert!(own.all_own(&[v("A", "1")]));
        assert!(own.all_own(&[v("B", "7"), v("A", "1")]));
        // The same item at another version is someone's edit.
        assert!(!own.all_own(&[v("A", "2")]));
        // One version not ours among ours: the notification needs its pass.
        assert!(!own.all_own(&[v("A", "1"), v("C", "1")]));
        // Id and change key are not interchangeable.
        assert!(!own.all_own(&[v("1", "A")]));
        assert!(!own.all_own(&[]));
        // The count stops at the first version not ours, whatever follows it.
        assert_eq!(own.own_prefix(&[v("A", "1"), v("C", "1"), v("B", "7")]), 1);
        assert_eq!(own.own_prefix(&[v("B", "7"), v("A", "1")]), 2);
    }

    #[test]
    fn own_versions_are_dropped_wherever_they_stand() {
        let own = OwnWrites::default();
        own.wrote([&v("A", "1"), &v("B", "7")]);
        let mut versions = vec![v("A", "1"), v("C", "1"), v("B", "7"), v("A", "2")];
        own.drop_own(&mut versions);
        assert_eq!(versions, vec![v("C", "1"), v("A", "2")]);
    }

    #[test]
    fn memory_keeps_two_generations_and_forgets_the_oldest() {
        let own = OwnWrites::default();
        let first = v("first", "1");
        own.wrote([&first]);
        let others: Vec<ItemRef> = (0..GENERATION).map(|i| v(&format!("i{i}"), "1")).collect();
        own.wrote(&others);
        // The first generation filled and became the previous one: still known.
        assert!(own.all_own(std::slice::from_ref(&first)));
        let more: Vec<ItemRef> = (0..GENERATION).map(|i| v(&format!("j{i}"), "1")).collect();
        own.wrote(&more);
        assert!(!own.all_own(std::slice::from_ref(&first)));
        assert!(own.all_own(&more[GENERATION - 1..]));
        let g = own.generations.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 2 * GENERATION);
    }
}
