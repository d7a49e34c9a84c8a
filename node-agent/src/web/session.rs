//! Web UI sessions: a random id in an HttpOnly cookie, kept in memory (a restart of the
//! agent logs everyone out), with the role of the API token used to log in, the name the
//! user gave (recorded in the events of their operations) and a CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::Instant;
use crate::tokens::Caller;

/// The cookie's name.
pub const COOKIE: &str = "baton_session";
/// Sessions kept at most (the oldest is dropped beyond).
pub const MAX_SESSIONS: usize = 256;

#[derive(Debug, Clone)]
pub struct Session {
    /// Who logged in, as they named themselves.
    pub user: String,
    pub role: Caller,
    /// The address they logged in from.
    pub from: String,
    pub csrf: String,
    pub expires: Instant,
}

impl Session {
    /// `alice (operator token, Web UI from 10.0.0.5)`.
    pub fn who(&self) -> String {
        format!(
            "{} ({} token, Web UI from {})",
            self.user,
            self.role.as_str(),
            self.from
        )
    }
}

/// What looking a cookie up found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Valid(Session),
    Expired,
    Unknown,
}

pub struct Sessions {
    ttl: Duration,
    /// SHA-256 of the session id → session (the ids themselves are not kept).
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A new session; returns its id (for the cookie).
    pub fn create(&self, user: &str, role: Caller, from: &str) -> (String, Session) {
        let id = random_hex();
        let now = crate::clock::now();
        let s = Session {
            user: user.to_string(),
            role,
            from: from.to_string(),
            csrf: random_hex(),
            expires: now + self.ttl,
        };
        let mut m = self.lock();
        m.retain(|_, v| v.expires > now);
        while m.len() >= MAX_SESSIONS {
            let oldest = m.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => m.remove(&k),
                None => break,
            };
        }
        m.insert(key(&id), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str) -> Lookup {
        let now = crate::clock::now();
        let mut m = self.lock();
        match m.get(&key(id)) {
            None => Lookup::Unknown,
            Some(s) if s.expires <= now => {
                m.remove(&key(id));
                Lookup::Expired
            }
            Some(s) => Lookup::Valid(s.clone()),
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    /// Make a session expire now (tests of the expiry path).
    #[doc(hidden)]
    pub fn expire(&self, id: &str) {
        if let Some(s) = self.lock().get_mut(&key(id)) {
            s.expires = crate::clock::now();
        }
    }
}

/// Failed logins from one address within [`LOGIN_WINDOW`] after which that address is
/// refused for [`LOGIN_BLOCK`], even with a right token (API tokens are too long to
/// guess; the limit keeps a script from filling the alert log and the CPU).
pub const LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
pub const LOGIN_BLOCK: Duration = Duration::from_secs(60);
/// Addresses tracked at most (the oldest is forgotten beyond).
pub const MAX_TRACKED: usize = 1024;

#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    first: Instant,
    blocked_until: Option<Instant>,
    /// The refusal while blocked has been reported (once per block).
    reported: bool,
}

/// What the guard says about a login attempt from an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Refused for `retry_after`; `report` is true for the first refusal of this block.
    Blocked {
        retry_after: Duration,
        report: bool,
    },
}

/// Failed Web UI logins per source address (in memory; a restart forgets them).
#[derive(Debug, Default)]
pub struct LoginGuard {
    map: Mutex<HashMap<String, Failures>>,
}

impl LoginGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// May `from` try to log in at `now`?
    pub fn admit(&self, from: &str, now: Instant) -> Admit {
        let mut m = self.lock();
        let Some(f) = m.get_mut(from) else {
            return Admit::Yes;
        };
        match f.blocked_until {
            Some(until) if until > now => {
                let report = !f.reported;
                f.reported = true;
                Admit::Blocked {
                    retry_after: until.saturating_duration_since(now),
                    report,
                }
            }
            Some(_) => {
                m.remove(from);
                Admit::Yes
            }
            None => Admit::Yes,
        }
    }

    /// A failed login from `from` at `now`; true when it starts a block.
    pub fn failed(&self, from: &str, now: Instant) -> bool {
        let mut m = self.lock();
        if !m.contains_key(from) && m.len() >= MAX_TRACKED {
            m.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(f.first) < LOGIN_WINDOW
            });
            while m.len() >= MAX_TRACKED {
                let oldest = m
                    .iter()
                    .min_by_key(|(_, f)| f.first)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => m.remove(&k),
                    None => break,
                };
            }
        }
        let f = m.entry(from.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
            reported: false,
        });
        if now.saturating_duration_since(f.first) >= LOGIN_WINDOW {
            f.count = 0;
            f.first = now;
        }
        f.count += 1;
        if f.count >= LOGIN_FAILURES && f.blocked_until.is_none() {
            f.blocked_until = Some(now + LOGIN_BLOCK);
            return true;
        }
        false
    }

    /// A successful login from `from`: its failures are forgotten.
    pub fn succeeded(&self, from: &str) {
        self.lock().remove(from);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let (id, sess) = s.create("alice", Caller::Operator, "127.0.0.1");
        assert_eq!(id.len(), 64);
        assert!(matches!(s.get(&id), Lookup::Valid(x) if x.csrf == sess.csrf));
        assert!(matches!(s.get("nope"), Lookup::Unknown));
        s.expire(&id);
        assert!(matches!(s.get(&id), Lookup::Expired));
        assert!(matches!(s.get(&id), Lookup::Unknown));
        let ids: Vec<String> = (0..MAX_SESSIONS + 5)
            .map(|_| s.create("bob", Caller::Read, "x").0)
            .collect();
        assert!(s.lock().len() <= MAX_SESSIONS);
        assert!(matches!(s.get(ids.last().unwrap()), Lookup::Valid(_)));
        assert_eq!(sess.who(), "alice (operator token, Web UI from 127.0.0.1)");
    }

    #[test]
    fn failed_logins_block_an_address_for_a_while() {
        let g = LoginGuard::default();
        let t0 = crate::clock::now();
        for k in 1..LOGIN_FAILURES {
            assert_eq!(g.admit("10.0.0.9", t0), Admit::Yes);
            assert!(!g.failed("10.0.0.9", t0 + Duration::from_secs(u64::from(k))));
        }
        // The fifth failure within the window starts the block.
        let t = t0 + Duration::from_secs(10);
        assert!(g.failed("10.0.0.9", t));
        assert_eq!(
            g.admit("10.0.0.9", t + Duration::from_secs(1)),
            Admit::Blocked {
                retry_after: LOGIN_BLOCK - Duration::from_secs(1),
                report: true
            }
        );
        // Reported once per block; another address is not affected.
        assert!(matches!(
            g.admit("10.0.0.9", t + Duration::from_secs(2)),
            Admit::Blocked { report: false, .. }
        ));
        assert_eq!(g.admit("10.0.0.8", t), Admit::Yes);
        // The block ends; the count starts again.
        assert_eq!(g.admit("10.0.0.9", t + LOGIN_BLOCK), Admit::Yes);
        assert!(!g.failed("10.0.0.9", t + LOGIN_BLOCK));
        // Fewer than five failures in every window never block.
        let g = LoginGuard::default();
        for k in 0..20u64 {
            assert!(!g.failed("10.0.0.7", t0 + Duration::from_secs(16 * k)));
        }
        // A success forgets the failures.
        let g = LoginGuard::default();
        for _ in 1..LOGIN_FAILURES {
            g.failed("a", t0);
        }
        g.succeeded("a");
        assert!(!g.failed("a", t0));
        // Bounded memory.
        let g = LoginGuard::default();
        for k in 0..MAX_TRACKED + 10 {
            g.failed(&format!("10.1.{}.{}", k / 256, k % 256), t0);
        }
        assert!(g.lock().len() <= MAX_TRACKED);
    }
}
