//! Upper bounds for counters learned from outside: epochs (fencing tokens) and operator
//! intent versions.
//!
//! Both only grow, by one per claim or per operator command. A peer, the witness, a
//! lease document in S3/DynamoDB or a state file that carries a value near `u64::MAX`
//! is corrupt or hostile: learning it would make the next claim wrap to 0 (epochs going
//! backwards break fencing) or leave no room for another command. Values above the
//! bound are refused, never learned.
//!
//! Why 2^53: a cluster that claimed a new epoch every millisecond without pause would
//! need 285,000 years to reach it, so no honest value comes near it, and it leaves room
//! for every `+ 1` without overflow. It is also the largest integer a JSON number holds
//! exactly in JavaScript and most JSON tools (the Web UI, `jq`), so every valid value
//! reads back unchanged.

use crate::engine::{Intents, PeerMessage};

/// Highest epoch accepted from a peer, the witness, a lease document or a state file,
/// and the highest epoch this server claims.
pub const MAX_EPOCH: u64 = 1 << 53;

/// Highest operator intent version accepted from a peer or written here.
pub const MAX_VERSION: u64 = 1 << 53;

/// Longest duration (ms) accepted in a temporary timeout intent from a peer or a command:
/// the same 7 days as any configured duration (`config::MAX_DURATION`).
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

/// Is `epoch` within [`MAX_EPOCH`]?
pub fn epoch_ok(epoch: u64) -> bool {
    epoch <= MAX_EPOCH
}

/// Is `version` within [`MAX_VERSION`]?
pub fn version_ok(version: u64) -> bool {
    version <= MAX_VERSION
}

/// The epoch after `epoch`, if it is within [`MAX_EPOCH`].
pub fn next_epoch(epoch: u64) -> Option<u64> {
    epoch.checked_add(1).filter(|&e| epoch_ok(e))
}

/// The version after `version`, if it is within [`MAX_VERSION`].
pub fn next_version(version: u64) -> Option<u64> {
    version.checked_add(1).filter(|&v| version_ok(v))
}

/// The first epoch or intent version in a heartbeat above its bound, described (for the
/// event), or `None` when every value is in range.
pub fn peer_message_violation(msg: &PeerMessage) -> Option<String> {
    for (s, &ago) in msg.heard_ago.iter().flatten() {
        if ago > MAX_DURATION_MS {
            return Some(format!("heard_ago of server {s}: {ago} ms"));
        }
    }
    for r in &msg.groups {
        let acked = r.ack.as_ref().map_or(0, |a| a.1);
        let seen = r.seen_holder.as_ref().map_or(0, |h| h.1);
        for (what, e) in [
            ("epoch", r.epoch),
            ("max_epoch", r.max_epoch),
            ("ack epoch", acked),
            ("seen_holder epoch", seen),
        ] {
            if !epoch_ok(e) {
                return Some(format!("group {} {what} {e}", r.name));
            }
        }
    }
    for (k, &v) in &msg.marks {
        if !epoch_ok(v) {
            return Some(format!("data mark {k} {v}"));
        }
    }
    intents_violation(&msg.intents)
}

/// The first intent version (or preferred epoch) above its bound, described.
pub fn intents_violation(i: &Intents) -> Option<String> {
    for (g, gi) in &i.groups {
        if !version_ok(gi.version) {
            return Some(format!("group {g} intent version {}", gi.version));
        }
        if !epoch_ok(gi.prefer_epoch) {
            return Some(format!("group {g} intent prefer_epoch {}", gi.prefer_epoch));
        }
    }
    for (m, f) in &i.monitors {
        if !version_ok(f.version) {
            return Some(format!("monitor {m} intent version {}", f.version));
        }
    }
    for (what, v) in [
        ("suspend", i.suspended.version),
        ("stop", i.stopping.version),
        ("timeout", i.timeout.version),
    ] {
        if !version_ok(v) {
            return Some(format!("{what} intent version {v}"));
        }
    }
    for (what, ms) in [
        ("heartbeat_timeout_ms", i.timeout.heartbeat_timeout_ms),
        ("duration_ms", i.timeout.duration_ms),
    ] {
        if ms > MAX_DURATION_MS {
            return Some(format!("timeout intent {what} {ms}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(epoch_ok(MAX_EPOCH));
        assert!(!epoch_ok(MAX_EPOCH + 1));
        assert!(!epoch_ok(u64::MAX));
        assert_eq!(next_epoch(MAX_EPOCH - 1), Some(MAX_EPOCH));
        assert_eq!(next_epoch(MAX_EPOCH), None);
        assert_eq!(next_epoch(u64::MAX), None);
        assert_eq!(next_version(MAX_VERSION), None);
        assert_eq!(next_version(u64::MAX), None);
        assert_eq!(next_version(0), Some(1));
        // Exactly representable as an f64 (JSON numbers in JavaScript).
        assert_eq!(MAX_EPOCH as f64 as u64, MAX_EPOCH);
    }
}
