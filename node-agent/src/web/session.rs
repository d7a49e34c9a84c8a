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
}
