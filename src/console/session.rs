//! Signed-in sessions, their CSRF tokens, and the throttle on failed sign-ins. All in memory:
//! a restart signs everyone out, which is acceptable for a console a few people use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// How long a session lasts without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// Failed sign-ins counted per address and per name before further attempts wait.
pub const MAX_FAILURES: usize = 5;
/// The window failures are counted over, and how long a throttled caller waits.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A random token, URL-safe (session ids and CSRF tokens).
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// One signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account's name.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    last_seen: Instant,
}

/// The sessions and the failure counts.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Sessions {
    /// Starts a session for `user`; returns its id (the cookie's value).
    pub fn start(&self, user: &str) -> String {
        let id = token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_seen) < IDLE_TIMEOUT);
        sessions.insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                csrf: token(),
                last_seen: now,
            },
        );
        id
    }

    /// The live session `id`, touched.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let session = sessions.get_mut(id)?;
        if now.duration_since(session.last_seen) >= IDLE_TIMEOUT {
            sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// The session of a trusted proxy's user: one per name, so its CSRF token is stable.
    pub fn for_proxy_user(&self, user: &str) -> Session {
        let key = format!("proxy:{user}");
        if let Some(s) = self.get(&key) {
            return s;
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(key)
            .or_insert_with(|| Session {
                user: user.to_owned(),
                csrf: token(),
                last_seen: Instant::now(),
            })
            .clone()
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether sign-ins from `addr` or for `name` must wait (too many recent failures).
    pub fn throttled(&self, addr: IpAddr, name: &str) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        [format!("addr:{addr}"), format!("name:{name}")]
            .iter()
            .any(|key| match failures.get_mut(key) {
                Some(times) => {
                    times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                    times.len() >= MAX_FAILURES
                }
                None => false,
            })
    }

    /// Records a failed sign-in from `addr` for `name`.
    pub fn failed(&self, addr: IpAddr, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Bounded: a flood of made-up names must not grow the table without end.
        if failures.len() > 10_000 {
            failures.retain(|_, t| t.iter().any(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
        for key in [format!("addr:{addr}"), format!("name:{name}")] {
            failures.entry(key).or_default().push(now);
        }
    }

    /// Clears the failures of `name` after it signed in.
    pub fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("name:{name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_throttle_the_address_and_the_name() {
        let s = Sessions::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(!s.throttled(a, "mia"));
            s.failed(a, "mia");
        }
        assert!(s.throttled(a, "ola"), "same address");
        assert!(s.throttled(b, "mia"), "same name");
        assert!(!s.throttled(b, "ola"));
    }

    #[test]
    fn a_session_has_its_own_csrf_token_and_ends() {
        let s = Sessions::default();
        let id = s.start("mia");
        let session = s.get(&id).expect("live");
        assert_eq!(session.user, "mia");
        assert!(!same_token(&session.csrf, &id));
        assert!(same_token(&session.csrf, &session.csrf.clone()));
        assert!(!same_token("", ""));
        s.end(&id);
        assert!(s.get(&id).is_none());
    }
}
