//! The SQLite actor: one dedicated thread owns the connection and runs the closures sent to it
//! over a channel, in order, sending each result back over a oneshot, so that no SQLite call
//! ever runs on a tokio worker and the connection needs no lock.
//!
//! A store may give the thread [`Housekeeping`]: work after each job, before its caller hears
//! back (the PM store relays the events a job committed, so that a caller subscribing after an
//! operation never misses that operation's events), and work every `interval` when idle. A job
//! that panics is caught: its caller sees [`Closed`], everyone else keeps the store. Dropping
//! the last handle ends the thread, which closes the connection.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// A job, returning the reply to send once housekeeping after it ran.
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
/// Sends a job's result to its caller.
type Reply = Box<dyn FnOnce() + Send>;

/// The thread is gone (the store was closed) or the job panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed;

/// What the thread does besides the jobs.
pub(crate) trait Housekeeping: Send + 'static {
    /// After each job, before its caller gets the result.
    fn after_job(&mut self, _conn: &Connection) {}
    /// Every [`Housekeeping::interval`] without a job.
    fn when_idle(&mut self, _conn: &Connection) {}
    /// How often `when_idle` runs; `None`: never.
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// No housekeeping.
pub(crate) struct Quiet;

impl Housekeeping for Quiet {}

/// The handle to an actor thread.
pub(crate) struct Actor {
    jobs: mpsc::Sender<Job>,
    /// Completes when the thread has closed the connection.
    done: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Actor")
    }
}

impl Actor {
    /// Starts the thread `name`; it runs `open` first and reports how that went on the
    /// returned receiver (a connection opened on its own thread never blocks the caller).
    pub(crate) fn spawn<E, H, O>(
        name: &str,
        open: O,
    ) -> std::io::Result<(Actor, oneshot::Receiver<Result<(), E>>)>
    where
        O: FnOnce() -> Result<(Connection, H), E> + Send + 'static,
        H: Housekeeping,
        E: Send + 'static,
    {
        let (jobs, jobs_rx) = mpsc::channel::<Job>();
        let (ready, ready_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                match open() {
                    Ok((conn, housekeeping)) => {
                        let _ = ready.send(Ok(()));
                        run(conn, &jobs_rx, housekeeping);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
                let _ = done_tx.send(());
            })?;
        Ok((Actor { jobs, done }, ready_rx))
    }

    /// Ends the thread and waits until it has closed the connection (which checkpoints the
    /// WAL into the main file). Other handles sharing the channel keep it open.
    pub(crate) async fn close(self) {
        let Actor { jobs, done } = self;
        drop(jobs);
        let _ = done.await;
    }

    /// Runs `f` on the thread and returns its result.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, Closed>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| Closed)?;
        // A dropped sender means the job panicked (caught on the thread).
        rx.await.map_err(|_| Closed)
    }
}

fn run<H: Housekeeping>(mut conn: Connection, jobs: &mpsc::Receiver<Job>, mut housekeeping: H) {
    loop {
        let next = match housekeeping.interval() {
            Some(interval) => jobs.recv_timeout(interval),
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(job) => {
                // A panic in a job is a bug; catching it keeps the store usable for everyone
                // else (an open transaction was rolled back when it unwound, and the caller's
                // reply channel was dropped, which it sees as `Closed`).
                let reply = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                housekeeping.after_job(&conn);
                match reply {
                    Ok(reply) => reply(),
                    Err(_) => tracing::error!("a database job panicked; its caller gets an error"),
                }
            }
            Err(RecvTimeoutError::Timeout) => housekeeping.when_idle(&conn),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Housekeeping for Count {
        fn after_job(&mut self, _conn: &Connection) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_the_thread_and_a_panic_fails_only_its_caller() {
        let after = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = after.clone();
        let (actor, ready) = Actor::spawn("test-sqlite", move || {
            Connection::open_in_memory().map(|c| (c, Count(counted)))
        })
        .expect("thread");
        ready.await.expect("reported").expect("opened");
        actor
            .call(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .await
            .expect("ran")
            .expect("created");
        let panicked = actor.call(|_| -> i64 { panic!("a bug") }).await;
        assert_eq!(panicked, Err(Closed));
        let n: i64 = actor
            .call(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
            .await
            .expect("still serving")
            .expect("counted");
        assert_eq!(n, 0);
        assert_eq!(after.load(std::sync::atomic::Ordering::SeqCst), 3);
        actor.close().await;
    }
}
