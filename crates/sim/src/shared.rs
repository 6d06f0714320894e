//! What the simulator's parts share: the running simulator's state ([`Sim`]: configuration,
//! mailboxes, accounts, faults, counters, subscriptions), its admin counters, and the helpers
//! every handler answers with. The router (`server`) and the handlers (`ops`, `admin`, `push`,
//! `autodiscover`) all build on it; it builds on none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use taskbridge_ews::affinity::BackendCookie;
use taskbridge_ews::transport::auth::gssapi::AcceptorCredential;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::Users;
use crate::faults::Faults;
use crate::persist::Persist;
use crate::record::{Exchange, Recorder};
use crate::store::{Mailbox, Store};
use crate::subs::Subscriptions;
use crate::{SimConfig, SimError};

/// The shared state of a running simulator.
pub(crate) struct Sim {
    /// The configuration it was started with.
    pub config: SimConfig,
    /// The mailboxes.
    pub store: Store,
    /// The accounts.
    pub users: Users,
    /// The Kerberos service keys (`--auth negotiate`).
    pub kerberos: Option<Arc<AcceptorCredential>>,
    /// Fault injection.
    pub faults: Faults,
    /// Counters for the admin API.
    pub counters: Counters,
    /// `--record`.
    pub recorder: Option<Recorder>,
    /// `--state`.
    pub persist: Option<Persist>,
    /// Push, pull and streaming subscriptions.
    pub subs: Subscriptions,
    /// GetStreamingEvents connections open now.
    pub open_streams: std::sync::atomic::AtomicUsize,
    /// Mailboxes moved to another backend than their address's hash gives (by lowercase
    /// address).
    pub moved: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Bumped to break every open streaming connection (`POST /sim/streams/cut`).
    pub cut_streams: watch::Sender<u64>,
    /// Flips to true when the simulator shuts down; push deliveries watch it.
    pub shutdown: watch::Receiver<bool>,
    /// The client for push deliveries.
    pub http: reqwest::Client,
    /// A weak reference to itself, for the push tasks handlers spawn.
    me: std::sync::OnceLock<std::sync::Weak<Sim>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("listen", &self.config.listen)
            .finish()
    }
}

impl Sim {
    pub(crate) fn new(
        config: SimConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SimError> {
        // reqwest and tokio-rustls need a process-wide crypto provider; a second install
        // (another simulator in the same process) is refused and harmless.
        taskbridge_ews::transport::install_crypto_provider();
        let users = Users::new(&config.users);
        let owners: Vec<String> = users
            .mailbox_owners()
            .iter()
            .map(|u| u.smtp.clone())
            .collect();
        let (store, persist) = match &config.state {
            Some(path) => {
                let (persist, mailboxes, secret) = Persist::open(path, &owners)?;
                (Store::new(mailboxes, secret), Some(persist))
            }
            None => {
                let mailboxes = owners
                    .iter()
                    .enumerate()
                    .map(|(i, smtp)| Mailbox::new(u32::try_from(i + 1).unwrap_or(u32::MAX), smtp))
                    .collect();
                let secret: [u8; 32] = rand::random();
                (Store::new(mailboxes, secret.to_vec()), None)
            }
        };
        let recorder = match &config.record {
            Some(dir) => Some(
                Recorder::new(dir, &config.server_version)
                    .map_err(|e| SimError::Record(format!("{}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let kerberos = match (&config.auth, &config.keytab) {
            (crate::auth::AuthMode::Negotiate, Some(keytab)) => Some(Arc::new(
                AcceptorCredential::from_keytab(keytab)
                    .map_err(|e| SimError::Config(format!("keytab {}: {e}", keytab.display())))?,
            )),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| SimError::Config(format!("push client: {e}")))?;
        Ok(Sim {
            faults: Faults::new(config.faults.clone()),
            config,
            store,
            users,
            kerberos,
            counters: Counters::default(),
            recorder,
            persist,
            subs: Subscriptions::default(),
            open_streams: Default::default(),
            moved: Default::default(),
            cut_streams: watch::channel(0).0,
            shutdown,
            http,
            me: std::sync::OnceLock::new(),
        })
    }

    /// Remembers the `Arc` the simulator lives in.
    pub(crate) fn set_me(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
    }

    /// Breaks every open streaming connection (no closing chunk, as a network failure);
    /// returns how many were open.
    pub(crate) fn cut_streams(&self) -> usize {
        self.cut_streams.send_modify(|n| *n += 1);
        self.open_streams.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The backend (0-based) the mailbox `smtp` is on: where the admin API moved it, else a
    /// hash of its address (stable across runs).
    pub(crate) fn backend_of(&self, smtp: &str) -> usize {
        let key = smtp.to_ascii_lowercase();
        if let Some(n) = self.moved.lock().expect("moved map poisoned").get(&key) {
            return *n;
        }
        // FNV-1a: the same address lands on the same backend in every run.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        usize::try_from(hash % self.config.backends.max(1) as u64).unwrap_or(0)
    }

    /// The cookie naming backend `n`.
    pub(crate) fn backend_cookie(&self, n: usize) -> BackendCookie {
        BackendCookie::new(format!("MBX{:02}.sim.invalid~1", n + 1)).expect("a valid cookie value")
    }

    /// The backend a cookie names, if it names one of ours.
    pub(crate) fn backend_named(&self, cookie: &BackendCookie) -> Option<usize> {
        (0..self.config.backends.max(1)).find(|n| self.backend_cookie(*n) == *cookie)
    }

    /// Moves a mailbox to another backend; open streaming connections break, as they do when
    /// a database fails over.
    pub(crate) fn move_mailbox(&self, smtp: &str, backend: usize) -> Result<(), String> {
        if backend >= self.config.backends.max(1) {
            return Err(format!(
                "backend {backend} does not exist (there are {})",
                self.config.backends.max(1)
            ));
        }
        let Some(mb) = self.store.by_smtp(smtp) else {
            return Err(format!("no mailbox {smtp}"));
        };
        self.moved
            .lock()
            .expect("moved map poisoned")
            .insert(mb.smtp.to_ascii_lowercase(), backend);
        // The old backend keeps the mailbox's subscriptions (until Unsubscribe or expiry) but
        // has nothing to deliver for them any more.
        for sub in self.subs.list() {
            if sub.mailbox.smtp.eq_ignore_ascii_case(&mb.smtp) && sub.backend != backend {
                sub.orphan();
            }
        }
        self.cut_streams();
        Ok(())
    }

    /// The simulator as an `Arc`, while it runs.
    pub(crate) fn me(&self) -> Option<Arc<Sim>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    /// Records an exchange when `--record` is on.
    pub(crate) fn record(&self, ex: Exchange<'_>) {
        if let Some(r) = &self.recorder {
            r.record(&ex);
        }
    }
}

/// Counters of EWS traffic and push deliveries.
#[derive(Debug, Default)]
pub struct Counters {
    // A std Mutex: one map increment per request, never held across an await.
    ops: Mutex<BTreeMap<String, u64>>,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    /// Requests answered ErrorServerBusy (any shape, `--max-concurrency` included).
    pub throttled: AtomicU64,
    /// Requests failed by `--fail`, or whose state could not be written.
    pub failed: AtomicU64,
    /// Requests answered with a SOAP fault other than throttling.
    pub faults: AtomicU64,
    /// Push deliveries answered by the subscriber.
    pub push_sent: AtomicU64,
    /// Push delivery attempts that failed (each retry counts).
    pub push_failed: AtomicU64,
    /// Push deliveries lost by `--drop-push`.
    pub push_dropped: AtomicU64,
    /// Spontaneous change keys (`--spontaneous-changekey`).
    pub spontaneous: AtomicU64,
    /// Per caller: the back-off windows announced to it and the requests that arrived inside
    /// one.
    // A std Mutex: one lookup per request, never held across an await.
    back_off: Mutex<BTreeMap<String, CallerBackOff>>,
}

/// What the simulator told one caller about backing off, and whether the caller listened.
#[derive(Debug, Default)]
struct CallerBackOff {
    /// The end of the latest back-off window announced (ErrorServerBusy in any shape).
    until: Option<Instant>,
    /// Back-off windows announced.
    announced: u64,
    /// Requests that arrived before the window they were told about had passed.
    inside: u64,
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    /// Counts a request as in flight.
    pub fn begin(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    /// Notes that `caller` told the simulator a request arrived now, and counts it when it is
    /// inside a back-off window announced to that caller.
    ///
    /// Exact for a caller that sends one request at a time: the window starts when the
    /// simulator decides to throttle, before the caller can possibly know, and ends
    /// `back_off` later, before the caller (which starts waiting only once it reads the answer)
    /// may send again. A caller with several requests in flight also has requests counted that
    /// left before the answer reached it.
    pub fn arrived(&self, caller: &str) {
        let now = Instant::now();
        let mut map = self.back_off.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(caller)
            && c.until.is_some_and(|until| now < until)
        {
            c.inside += 1;
        }
    }

    /// Records that `caller` was told to back off for `back_off` from now.
    pub fn announced(&self, caller: &str, back_off: Duration) {
        let until = Instant::now() + back_off;
        let mut map = self.back_off.lock().unwrap_or_else(|e| e.into_inner());
        let c = map.entry(caller.to_string()).or_default();
        c.announced += 1;
        c.until = Some(c.until.map_or(until, |u| u.max(until)));
    }

    /// Counts one request of `op`.
    pub fn count_op(&self, op: &str) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        match ops.get_mut(op) {
            Some(n) => *n += 1,
            None => {
                ops.insert(op.to_string(), 1);
            }
        }
    }

    /// The counters as JSON.
    pub fn snapshot(&self) -> Value {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let total: u64 = ops.values().sum();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (back_off, inside) = {
            let map = self.back_off.lock().unwrap_or_else(|e| e.into_inner());
            let per_caller: serde_json::Map<String, Value> = map
                .iter()
                .map(|(caller, c)| {
                    (
                        caller.clone(),
                        json!({"announced": c.announced, "inside_window": c.inside}),
                    )
                })
                .collect();
            (per_caller, map.values().map(|c| c.inside).sum::<u64>())
        };
        json!({
            "requests": total,
            "operations": ops,
            "in_flight": self.in_flight.load(Ordering::SeqCst),
            "max_in_flight": self.max_in_flight.load(Ordering::SeqCst),
            "throttled": get(&self.throttled),
            "failed": get(&self.failed),
            "faults": get(&self.faults),
            "push_sent": get(&self.push_sent),
            "push_failed": get(&self.push_failed),
            "push_dropped": get(&self.push_dropped),
            "spontaneous_changekeys": get(&self.spontaneous),
            "inside_back_off": inside,
            "back_off": back_off,
        })
    }

    /// Zeroes the counters (the highest number in flight restarts from the current one).
    pub fn reset(&self) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        for a in [
            &self.throttled,
            &self.failed,
            &self.faults,
            &self.push_sent,
            &self.push_failed,
            &self.push_dropped,
            &self.spontaneous,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        // The windows stay (a caller told to wait is still told); their counts restart.
        for c in self
            .back_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            c.announced = 0;
            c.inside = 0;
        }
    }
}

/// Resolves once the flag is set (or its sender is gone); the `watch::Ref` never lives past it.
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await.map(|_| ());
}

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if !content_type.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            content_type.parse().expect("static header"),
        );
    }
    r
}
