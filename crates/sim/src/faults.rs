//! Injected misbehaviour for tests and benchmarks: throttling, failures, latency, lost push
//! deliveries, per-mailbox concurrency limits and spontaneous change keys.
//!
//! Every random decision draws from one seeded RNG (`--seed`), so a run with the same requests
//! in the same order makes the same decisions. Concurrent requests draw in arrival order, which
//! is only reproducible when the client sends one request at a time.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The three ways Exchange says ErrorServerBusy.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/ews-throttling-in-exchange>.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleShape {
    /// A SOAP fault ErrorServerBusy with `BackOffMilliseconds`, in HTTP 500.
    Fault,
    /// HTTP 200 whose every response message is ErrorServerBusy with `BackOffMilliseconds`.
    Message,
    /// HTTP 503 with `Retry-After` and no body.
    Http503,
}

/// What to inject.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Fraction of EWS requests answered with ErrorServerBusy.
    pub throttle: f64,
    /// The shape of throttling answers; `None` picks one of the three at random each time.
    pub throttle_shape: Option<ThrottleShape>,
    /// The back-off a throttling answer asks for.
    pub back_off: Duration,
    /// Fraction of EWS requests that fail: HTTP 500 without a body, or a dropped connection.
    pub fail: f64,
    /// Delay added to every EWS request.
    pub latency: Duration,
    /// Fraction of push deliveries lost (never sent, but taken as delivered).
    pub drop_push: f64,
    /// Requests in flight per mailbox beyond which ErrorServerBusy is answered.
    pub max_concurrency: Option<u32>,
    /// Fraction of requests after which a random task of the mailbox gets a new change key.
    pub spontaneous_changekey: f64,
    /// Seed of the RNG behind every decision.
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            throttle: 0.0,
            throttle_shape: None,
            back_off: Duration::from_millis(500),
            fail: 0.0,
            latency: Duration::ZERO,
            drop_push: 0.0,
            max_concurrency: None,
            spontaneous_changekey: 0.0,
            seed: 0x7a5b_b1d6e,
        }
    }
}

/// How an injected failure looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500 with an empty body.
    Http500,
    /// The connection is closed without an answer.
    Drop,
}

/// The decisions, drawn from the seeded RNG.
#[derive(Debug)]
pub struct Faults {
    /// The configuration.
    pub config: FaultConfig,
    // A std Mutex: each draw is a few nanoseconds and never awaits.
    rng: Mutex<StdRng>,
}

impl Faults {
    /// Faults drawn from `config.seed`.
    pub fn new(config: FaultConfig) -> Self {
        let rng = Mutex::new(StdRng::seed_from_u64(config.seed));
        Faults { config, rng }
    }

    fn draw(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.gen_bool(p.min(1.0))
    }

    /// Whether (and how) this request fails.
    pub fn failure(&self) -> Option<Failure> {
        if !self.draw(self.config.fail) {
            return None;
        }
        Some(if self.draw(0.5) {
            Failure::Http500
        } else {
            Failure::Drop
        })
    }

    /// Whether (and how) this request is throttled.
    pub fn throttle(&self) -> Option<ThrottleShape> {
        if !self.draw(self.config.throttle) {
            return None;
        }
        Some(match self.config.throttle_shape {
            Some(shape) => shape,
            None => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                [
                    ThrottleShape::Fault,
                    ThrottleShape::Message,
                    ThrottleShape::Http503,
                ][rng.gen_range(0..3)]
            }
        })
    }

    /// Whether this push delivery is lost.
    pub fn drop_push(&self) -> bool {
        self.draw(self.config.drop_push)
    }

    /// Whether a spontaneous change key happens after this request.
    pub fn spontaneous_changekey(&self) -> bool {
        self.draw(self.config.spontaneous_changekey)
    }

    /// A uniform pick in `0..n` (n > 0).
    pub fn pick(&self, n: usize) -> usize {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.gen_range(0..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions() {
        let cfg = FaultConfig {
            throttle: 0.5,
            fail: 0.3,
            seed: 42,
            ..FaultConfig::default()
        };
        let a = Faults::new(cfg.clone());
        let b = Faults::new(cfg);
        let run = |f: &Faults| {
            (0..50)
                .map(|_| (f.failure(), f.throttle()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&a), run(&b));
        let none = Faults::new(FaultConfig::default());
        assert!((0..100).all(|_| none.failure().is_none() && none.throttle().is_none()));
    }
}
