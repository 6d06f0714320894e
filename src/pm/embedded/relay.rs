//! The relay of the event log to the async side, the same on either backend: after every job
//! and at every idle poll, the store's thread reads the events committed since its cursor and
//! broadcasts them, and wakes the webhook worker when the outbox grew; every hour it prunes.
//! Events written by *another process* on the same store (a `taskbridge updates approve` next to
//! a running `taskbridge serve`) therefore reach this process's subscribers too, at most one poll
//! interval late.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, broadcast};

use super::EmbeddedError;
use super::rows::ts;
use super::sql::{Conn, args, one};
use crate::pm::HostEvent;

/// Events older than this are pruned: they only exist to reach other processes' subscribers.
const EVENT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Outbox rows older than this are pruned, delivered or not (see `docs/PM-HOST.md`).
pub(crate) const OUTBOX_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// How often the idle thread prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the store's thread relays to the async side.
pub(crate) struct Relay {
    /// Where host events go.
    pub(crate) events: broadcast::Sender<HostEvent>,
    /// Woken when the webhook outbox has new rows.
    pub(crate) outbox: Arc<Notify>,
}

/// The thread's housekeeping: the relay after every job and at every idle poll, pruning every
/// hour. No pruning at open: opening a store must not write to it (a failed import leaves the
/// file byte-identical), and a short-lived CLI process has no reason to prune.
pub(crate) struct Relaying {
    pub(crate) relay: Relay,
    pub(crate) cursors: Cursors,
    pub(crate) poll_interval: Duration,
}

impl Relaying {
    /// After each job.
    pub(crate) fn after_job(&mut self, conn: &dyn Conn) {
        pump(conn, &self.relay, &mut self.cursors);
    }

    /// At each idle poll.
    pub(crate) fn when_idle(&mut self, conn: &dyn Conn) {
        pump(conn, &self.relay, &mut self.cursors);
        if self.cursors.last_prune.elapsed() >= PRUNE_EVERY {
            prune(conn);
            self.cursors.last_prune = Instant::now();
        }
    }
}

/// Where the relay has got to in the events and the outbox.
pub(crate) struct Cursors {
    event: i64,
    outbox: i64,
    last_prune: Instant,
}

impl Cursors {
    /// Starts after everything already committed: events from before this process opened the
    /// store are history, not news.
    pub(crate) fn at_end(conn: &dyn Conn) -> Cursors {
        let max = |sql| one::<i64>(conn, sql, &[]).unwrap_or(0);
        Cursors {
            event: max("SELECT COALESCE(MAX(seq), 0) FROM events"),
            // The outbox is durable work, not news: a worker started now must see old rows, so
            // the first pump wakes it.
            outbox: -1,
            last_prune: Instant::now(),
        }
    }
}

/// Broadcasts the events committed since the cursor and wakes the webhook worker on new outbox
/// rows.
fn pump(conn: &dyn Conn, relay: &Relay, cursors: &mut Cursors) {
    let result = (|| -> Result<(), EmbeddedError> {
        let rows = conn.query(
            "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq",
            args![cursors.event],
        )?;
        for row in rows {
            let (seq, body) = (row.get::<i64>(0)?, row.get::<String>(1)?);
            cursors.event = seq;
            match serde_json::from_str::<HostEvent>(&body) {
                // No receiver is not an error: nobody listens in a CLI process.
                Ok(event) => {
                    let _ = relay.events.send(event);
                }
                Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable stored event"),
            }
        }
        let outbox: i64 = one(
            conn,
            "SELECT COALESCE(MAX(seq), 0) FROM webhook_outbox",
            &[],
        )?;
        if outbox > cursors.outbox {
            cursors.outbox = outbox;
            relay.outbox.notify_one();
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot read the PM event log; retrying at the next poll");
    }
}

fn prune(conn: &dyn Conn) {
    let now = Utc::now();
    let result = conn
        .execute(
            "DELETE FROM events WHERE created_at < ?1",
            args![ts(now - EVENT_RETENTION)],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM webhook_outbox WHERE created_at < ?1",
                args![ts(now - OUTBOX_RETENTION)],
            )
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot prune the PM event log");
    }
}
