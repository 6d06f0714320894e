//! How the engine behaves: conflict policy, timing, guards.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::decide::Policy;

/// What happens when a person deletes a task in Outlook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeletedTaskRule {
    /// Forget the item; the assignment stays on the PM side and is reported as detached.
    #[default]
    Detach,
    /// Create the task again at the next publish.
    Recreate,
    /// Report the assignment as complete on the PM side (a status update to 100%), then
    /// detach.
    CompleteOnPm,
}

impl std::str::FromStr for DeletedTaskRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "detach" => Ok(DeletedTaskRule::Detach),
            "recreate" => Ok(DeletedTaskRule::Recreate),
            "complete-on-pm" => Ok(DeletedTaskRule::CompleteOnPm),
            other => Err(format!(
                "unknown rule {other:?} (expected detach, recreate or complete-on-pm)"
            )),
        }
    }
}

/// The engine's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncConfig {
    /// When both sides changed a field.
    pub policy: Policy,
    /// How far apart the mailbox's and the PM's change times must be for `newer-wins` to call
    /// one newer; closer is a tie, decided by the policy's tie rule (the PM side) and audited
    /// as `tie`.
    pub clock_skew: Duration,
    /// Quiet time after the last notification for a mailbox before its changes are read.
    pub debounce: Duration,
    /// Longest a mailbox waits under a stream of notifications before it is read anyway.
    pub max_debounce: Duration,
    /// Between reconciliation passes: every mailbox is read (heals lost notifications) and
    /// every project published again (finishes what a failed publish left; an unchanged
    /// project sends nothing).
    pub reconcile_interval: Duration,
    /// A task deleted in Outlook.
    pub deleted_task: DeletedTaskRule,
    /// Largest share of a mailbox's tasks one publish may delete without `force`.
    pub max_delete_share: f64,
    /// Deletions up to this many are always allowed (a small mailbox losing one task).
    pub max_delete_floor: usize,
    /// Attempts of a write before the item is parked.
    pub max_attempts: u32,
    /// Mailboxes worked on at once.
    pub mailbox_concurrency: usize,
    /// Push subscriptions: where Exchange posts, and how often it says it is alive.
    pub push: Option<PushSettings>,
    /// Notifications queued at most before the listener answers "busy".
    pub queue_capacity: usize,
    /// Without push: poll a pull subscription per mailbox this often (`None`: reconciliation
    /// alone finds edits).
    pub pull_interval: Option<Duration>,
    /// Without push: streaming subscriptions read over held-open connections (ahead of
    /// `pull_interval`).
    pub streaming: Option<StreamingSettings>,
    /// How long mailbox leases last and how often they are renewed, for a `serve` instance
    /// ([`Engine::join_cluster`](crate::sync::Engine::join_cluster); `[cluster]`).
    pub lease: crate::state::LeaseTiming,
}

/// The most subscriptions one streaming connection carries: Exchange's limit for a group.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 200;

/// Streaming notifications: how long each connection stays open and how many subscriptions
/// share one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamingSettings {
    /// The `ConnectionTimeout` asked for (whole minutes, 1 to 30); the connection is reopened
    /// at once when the server closes it.
    pub connection_timeout: Duration,
    /// Subscriptions per connection (at most 200, Exchange's limit for a group).
    pub subscriptions_per_connection: usize,
}

impl Default for StreamingSettings {
    fn default() -> Self {
        StreamingSettings {
            connection_timeout: Duration::from_secs(30 * 60),
            subscriptions_per_connection: MAX_SUBSCRIPTIONS_PER_CONNECTION,
        }
    }
}

/// Where push notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSettings {
    /// The listener's public URL, secret included.
    pub url: String,
    /// Between status notifications (whole minutes, 1 to 1440).
    pub status_frequency: Duration,
}

impl SyncConfig {
    /// The mass-delete guard: whether deleting `deletes` of a mailbox's `tasks` needs
    /// `--force` (more than `max_delete_floor` and more than `max_delete_share` of them).
    pub fn guard_refuses(&self, deletes: usize, tasks: usize) -> bool {
        let limit = (self.max_delete_share * tasks as f64).floor() as usize;
        deletes > self.max_delete_floor && deletes > limit
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            policy: Policy::NewerWins,
            clock_skew: Duration::from_millis(2000),
            debounce: Duration::from_secs(2),
            max_debounce: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(15 * 60),
            deleted_task: DeletedTaskRule::Detach,
            max_delete_share: 0.5,
            max_delete_floor: 10,
            max_attempts: 3,
            mailbox_concurrency: 8,
            push: None,
            queue_capacity: 4096,
            pull_interval: None,
            streaming: None,
            lease: crate::state::LeaseTiming::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The starter guard: more than 10 deletions and more than half of the mailbox's tasks.
    #[test]
    fn the_guard_refuses_only_beyond_both_the_floor_and_the_share() {
        let config = SyncConfig::default();
        assert!(!config.guard_refuses(10, 10), "within the floor");
        assert!(config.guard_refuses(11, 20), "beyond both");
        assert!(!config.guard_refuses(11, 22), "half of 22 is 11");
        assert!(config.guard_refuses(12, 22));
    }
}
