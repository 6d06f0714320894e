//! The chaos suite: taskbridge under faults and hostile input, as child processes (the
//! connector and the simulator are the `taskbridge` binary), with figures for
//! `docs/RELIABILITY.md`.
//!
//! - `crash`: SIGKILL of the connector (`publish`) at 20 random points of a publish of 2,000
//!   assignments; the same with the simulator killed and restarted on its state file, once
//!   under `publish` and once under `serve` with user edits between the kills.
//! - `network`: 1,000 user edits through throttling (all three shapes), failures, lost push
//!   deliveries and spontaneous change keys.
//! - `streaming`: 300 user edits reaching `serve` over GetStreamingEvents connections that the
//!   simulator cuts at random, with throttling, failures and reconciliation off.
//! - `failover`: two `serve` instances over one PostgreSQL, one SIGKILLed every 10 s while
//!   users edit; and the database restarted under a running pair (needs PostgreSQL's server
//!   package, like `tests/external/postgres.rs`).
//! - `listener`: hostile input at the push listener of a running `serve`.
//! - `secrets`: the listener secret, the PM API token, TLS verification, and no secret in any
//!   log line.
//!
//! Run it all with `scripts/chaos.sh` (or `cargo test --test chaos -- --nocapture`); the tests
//! take turns (`support::serial`), and each prints `CHAOS-FIGURE` lines.

#[path = "chaos/crash.rs"]
mod crash;
#[path = "external/mod.rs"]
mod external;
#[path = "chaos/failover.rs"]
mod failover;
#[path = "chaos/listener.rs"]
mod listener;
#[path = "listener_support/mod.rs"]
mod listener_support;
#[path = "chaos/network.rs"]
mod network;
#[path = "chaos/secrets.rs"]
mod secrets;
#[path = "chaos/streaming.rs"]
mod streaming;
#[path = "chaos/support.rs"]
mod support;
