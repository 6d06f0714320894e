//! Concurrency limits: requests in flight per mailbox and in total, and the batch sizes callers
//! should use.
//!
//! Exchange throttles per user and per mailbox; staying under its concurrency budget is
//! cheaper than being told to back off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits on concurrency and batch sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight for one mailbox (default 2).
    pub per_mailbox_in_flight: usize,
    /// Requests in flight in total, over all mailboxes (default 8). With NTLM this is also the
    /// number of authenticated connections.
    pub total_in_flight: usize,
    /// Items per CreateItem / UpdateItem / DeleteItem batch (default 50).
    pub batch_size: usize,
    /// Items per GetItem batch after notifications (default 10).
    pub get_item_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_mailbox_in_flight: 2,
            total_in_flight: 8,
            batch_size: 50,
            get_item_batch: 10,
        }
    }
}

impl Limits {
    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("per_mailbox_in_flight", self.per_mailbox_in_flight),
            ("total_in_flight", self.total_in_flight),
            ("batch_size", self.batch_size),
            ("get_item_batch", self.get_item_batch),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Hands out permits to send: one for the mailbox, one from the total.
#[derive(Debug)]
pub(crate) struct Limiter {
    per_mailbox: usize,
    total: Arc<Semaphore>,
    // A std Mutex: held only to look up or remove a map entry, never across an await.
    mailboxes: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// Both permits of one request; dropping it frees them.
#[derive(Debug)]
pub(crate) struct Permits {
    // Field order matters: the total permit goes first, then the mailbox permit, then the
    // map entry is dropped if nobody else uses it.
    _total: OwnedSemaphorePermit,
    mailbox: Option<OwnedSemaphorePermit>,
    key: String,
    sem: Arc<Semaphore>,
    mailboxes: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    per_mailbox: usize,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            per_mailbox: limits.per_mailbox_in_flight.max(1),
            total: Arc::new(Semaphore::new(limits.total_in_flight.max(1))),
            mailboxes: Arc::default(),
        }
    }

    /// Waits for a slot of `mailbox` (`None`: the account itself), then for one of the total.
    ///
    /// The mailbox slot comes first so that a mailbox with a queue does not sit on total
    /// slots that other mailboxes could use.
    pub(crate) async fn acquire(&self, mailbox: Option<&str>) -> Permits {
        let key = mailbox.map(str::to_ascii_lowercase).unwrap_or_default();
        let sem = {
            let mut map = self.lock();
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_mailbox)))
                .clone()
        };
        let mailbox = sem
            .clone()
            .acquire_owned()
            .await
            .expect("limiter semaphores are never closed");
        let total = self
            .total
            .clone()
            .acquire_owned()
            .await
            .expect("limiter semaphores are never closed");
        Permits {
            _total: total,
            mailbox: Some(mailbox),
            key,
            sem,
            mailboxes: self.mailboxes.clone(),
            per_mailbox: self.per_mailbox,
        }
    }

    /// Mailboxes with an entry (in use or waited for); for tests.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        drop(self.mailbox.take());
        // Forget idle mailboxes so that thousands of them do not pile up in the map. The
        // check runs under the map lock, and new users clone the Arc under the same lock, so a
        // semaphore in use is never removed.
        let mut map = self
            .mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if Arc::strong_count(&self.sem) == 2 && self.sem.available_permits() == self.per_mailbox {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(per_mailbox: usize, total: usize) -> Limiter {
        Limiter::new(&Limits {
            per_mailbox_in_flight: per_mailbox,
            total_in_flight: total,
            ..Limits::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn limits_per_mailbox_blocks_the_third_request() {
        let l = limiter(2, 8);
        let _a = l.acquire(Some("bob@x")).await;
        let _b = l.acquire(Some("BOB@x")).await;
        let third = tokio::time::timeout(Duration::from_secs(1), l.acquire(Some("bob@x"))).await;
        assert!(
            third.is_err(),
            "a third permit for the same mailbox must wait"
        );
        let other = tokio::time::timeout(Duration::from_secs(1), l.acquire(Some("ann@x"))).await;
        assert!(other.is_ok(), "another mailbox is not blocked");
    }

    #[tokio::test(start_paused = true)]
    async fn limits_total_blocks_across_mailboxes() {
        let l = limiter(2, 3);
        let _a = l.acquire(Some("a@x")).await;
        let _b = l.acquire(Some("b@x")).await;
        let _c = l.acquire(None).await;
        let fourth = tokio::time::timeout(Duration::from_secs(1), l.acquire(Some("d@x"))).await;
        assert!(fourth.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn limits_idle_mailboxes_are_forgotten() {
        let l = limiter(2, 8);
        {
            let _a = l.acquire(Some("a@x")).await;
            let _b = l.acquire(Some("a@x")).await;
            assert_eq!(l.tracked(), 1);
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn limits_zero_is_rejected() {
        let bad = Limits {
            total_in_flight: 0,
            ..Limits::default()
        };
        assert!(bad.validate().is_err());
        assert!(Limits::default().validate().is_ok());
    }
}
