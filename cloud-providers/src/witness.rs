//! Witnesses: the extra quorum vote of a cluster (a 2-server cluster has no majority
//! without one). Three kinds implement [`WitnessClient`]: the HTTP witness
//! (`baton witness`, client in `baton_agent::witness`), an S3 lease object and a DynamoDB
//! item ([`crate::aws::witness`]).
//!
//! # Protocol (common to every kind)
//!
//! A server asks for the vote with a [`VoteRequest`]: its name, the servers it currently
//! hears (its *partition*, itself included) and a lease. The witness grants its vote to
//! one partition at a time. The caller counts a granted vote as valid for `lease`
//! measured from the moment it *sent* the request, on its own monotonic clock, minus a
//! drift margin ([`caller_valid_for`]). Every witness kind keeps this invariant, for
//! clock rates that differ by at most [`MAX_DRIFT`] between any two parties:
//!
//! > every server that holds a valid grant is a member of the witness's current holder
//! > partition.
//!
//! In particular, once a reply names a holder partition that excludes server X, X holds
//! no valid grant any more (its last one has lapsed). Moving the vote from partition G to
//! a partition P that leaves out some member of G that may still hold a valid grant is
//! therefore done in two steps: the requester's grant is renewed *within G* (reply
//! `holder = G`, the switch is pending and members of G outside P are denied), and the
//! holder becomes P only once the left-out members' last grants have lapsed.
//!
//! A timeout, an unreadable or unauthenticated answer, throttling or a 5xx is an error,
//! never a grant.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Shortest lease a witness accepts.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease a witness accepts (also the HTTP witness's default startup quiet time).
pub const MAX_LEASE: Duration = Duration::from_secs(60);
/// Largest relative clock-rate difference between two parties the protocol tolerates.
pub const MAX_DRIFT: f64 = 0.01;
/// A witness holds a grant for `lease * HOLD_FACTOR` on its own clock (or, for the cloud
/// witnesses, a requester waits that long on its clock before it takes over): twice the
/// drift bound, so the holder's lease always ends first.
pub const HOLD_FACTOR: f64 = 1.02;
/// Most servers a partition may name.
pub const MAX_PARTITION: usize = 64;
/// Most groups an epoch map may carry.
pub const MAX_EPOCHS: usize = 1024;
/// Longest cluster, server or group name accepted in a vote.
pub const MAX_NAME: usize = 128;

/// One vote request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub cluster: String,
    pub server: String,
    /// Servers the requester currently hears (itself included), sorted.
    pub partition: Vec<String>,
    pub lease: Duration,
    /// Highest epoch per group the requester knows; the witness keeps the max it has seen.
    pub epochs: BTreeMap<String, u64>,
}

/// The witness's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteReply {
    pub granted: bool,
    /// partition currently holding the vote
    pub holder: Vec<String>,
    /// max epochs the witness has recorded (after merging the request's)
    pub epochs: BTreeMap<String, u64>,
    pub detail: String,
}

/// Why a vote request produced no answer. Never a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The witness could not be reached (connection refused, DNS, transport error).
    #[error("witness unreachable: {0}")]
    Unreachable(String),
    /// No answer within the deadline.
    #[error("witness gave no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The answer's signature (or nonce) is wrong: it is not from our witness, or it
    /// answers another request.
    #[error("witness reply rejected: {0}")]
    BadSignature(String),
    /// The answer could not be understood (garbage, wrong shape, oversized).
    #[error("witness reply unreadable: {0}")]
    BadReply(String),
    /// The witness refused the request; `code` is its stable reason (`bad-signature`,
    /// `replayed`, `bad-request`, `too-large`, ...).
    #[error("witness refused the request ({code}): {message}")]
    Rejected { code: String, message: String },
    /// A cloud API did not answer usefully (throttling, 5xx, transport) or refused the
    /// call (permissions, missing bucket or table).
    #[error("witness API error: {0}")]
    Api(String),
    /// The request itself is invalid (lease out of range, server not in its partition).
    #[error("invalid vote request: {0}")]
    InvalidRequest(String),
    /// The answer (or the lease document) carries an epoch or a counter above its bound
    /// ([`baton_core::bounds`]): corrupt or forged. Never a grant; nothing of it is learned.
    #[error("witness answer refused: {0}")]
    OutOfBounds(String),
}

impl WitnessError {
    /// Stable short code for events, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WitnessError::Unreachable(_) => "unreachable",
            WitnessError::Timeout(_) => "timeout",
            WitnessError::BadSignature(_) => "bad-signature",
            WitnessError::BadReply(_) => "bad-reply",
            WitnessError::Rejected { .. } => "rejected",
            WitnessError::Api(_) => "api-error",
            WitnessError::InvalidRequest(_) => "invalid-request",
            WitnessError::OutOfBounds(_) => "out-of-bounds",
        }
    }
}

/// One witness kind's client.
#[async_trait]
pub trait WitnessClient: Send + Sync + Debug {
    fn kind(&self) -> &'static str;
    /// One vote request; must return within `deadline` (timeout = error, never a grant).
    async fn vote(&self, req: &VoteRequest, deadline: Duration) -> Result<VoteReply, WitnessError>;
}

/// How long the caller may count a granted vote, from the moment it sent the request,
/// on its own clock: the lease minus the drift margin.
pub fn caller_valid_for(lease: Duration) -> Duration {
    lease.mul_f64(1.0 - 2.0 * MAX_DRIFT)
}

/// How long a witness (or an observer) must assume a grant of `lease` may still be
/// counted by its holder, on its own clock.
pub fn hold_for(lease: Duration) -> Duration {
    lease.mul_f64(HOLD_FACTOR)
}

/// `into` := per-group max of `into` and `from`.
pub fn merge_epochs(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (g, e) in from {
        let slot = into.entry(g.clone()).or_insert(0);
        *slot = (*slot).max(*e);
    }
}

/// Check the epochs of an answer or a lease document (`source` names it in the error):
/// at most [`MAX_EPOCHS`] groups with valid names (else `BadReply`), every epoch within
/// [`baton_core::bounds::MAX_EPOCH`] (else `OutOfBounds`).
pub fn check_epochs(source: &str, epochs: &BTreeMap<String, u64>) -> Result<(), WitnessError> {
    if epochs.len() > MAX_EPOCHS {
        return Err(WitnessError::BadReply(format!(
            "{source} carries {} epochs, more than {MAX_EPOCHS}",
            epochs.len()
        )));
    }
    for (g, &e) in epochs {
        check_name("group", g).map_err(|e| WitnessError::BadReply(format!("{source}: {e}")))?;
        if !baton_core::bounds::epoch_ok(e) {
            return Err(WitnessError::OutOfBounds(format!(
                "{source} carries epoch {e} for `{}`, above the bound {}",
                g.escape_debug(),
                baton_core::bounds::MAX_EPOCH
            )));
        }
    }
    Ok(())
}

/// Check a list of server names from an answer or a lease document: 1 to
/// [`MAX_PARTITION`] valid names (`BadReply` otherwise).
pub fn check_servers(source: &str, what: &str, servers: &[String]) -> Result<(), WitnessError> {
    if servers.is_empty() || servers.len() > MAX_PARTITION {
        return Err(WitnessError::BadReply(format!(
            "{source}: {what} names {} servers, not 1 to {MAX_PARTITION}",
            servers.len()
        )));
    }
    for s in servers {
        check_name("server", s).map_err(|e| WitnessError::BadReply(format!("{source}: {e}")))?;
    }
    Ok(())
}

/// Check an answer the way every client does before using it: its epochs
/// ([`check_epochs`]) and its holder partition (empty only in a denial).
pub fn check_reply(source: &str, r: &VoteReply) -> Result<(), WitnessError> {
    check_epochs(source, &r.epochs)?;
    if r.granted || !r.holder.is_empty() {
        check_servers(source, "the holder partition", &r.holder)?;
    }
    Ok(())
}

pub(crate) fn check_name(what: &str, n: &str) -> Result<(), WitnessError> {
    if n.is_empty() || n.len() > MAX_NAME || n.chars().any(|c| c.is_control()) {
        return Err(WitnessError::InvalidRequest(format!(
            "{what} `{}` must be 1 to {MAX_NAME} printable characters",
            n.escape_debug()
        )));
    }
    Ok(())
}

/// Check a request the way every witness does (the server side of the HTTP witness
/// uses it too) and return its partition sorted and without duplicates.
pub fn validate(req: &VoteRequest) -> Result<Vec<String>, WitnessError> {
    check_name("cluster", &req.cluster)?;
    check_name("server", &req.server)?;
    if req.lease < MIN_LEASE || req.lease > MAX_LEASE {
        return Err(WitnessError::InvalidRequest(format!(
            "lease {} ms is outside {}..={} ms",
            req.lease.as_millis(),
            MIN_LEASE.as_millis(),
            MAX_LEASE.as_millis()
        )));
    }
    if req.partition.is_empty() || req.partition.len() > MAX_PARTITION {
        return Err(WitnessError::InvalidRequest(format!(
            "a partition names 1 to {MAX_PARTITION} servers, not {}",
            req.partition.len()
        )));
    }
    for s in &req.partition {
        check_name("server", s)?;
    }
    if !req.partition.contains(&req.server) {
        return Err(WitnessError::InvalidRequest(format!(
            "server `{}` is not in its own partition {:?}",
            req.server, req.partition
        )));
    }
    if req.epochs.len() > MAX_EPOCHS {
        return Err(WitnessError::InvalidRequest(format!(
            "at most {MAX_EPOCHS} epochs per request, not {}",
            req.epochs.len()
        )));
    }
    for (g, &e) in &req.epochs {
        check_name("group", g)?;
        if !baton_core::bounds::epoch_ok(e) {
            return Err(WitnessError::InvalidRequest(format!(
                "epoch {e} for `{}` is above the bound {}",
                g.escape_debug(),
                baton_core::bounds::MAX_EPOCH
            )));
        }
    }
    let mut p = req.partition.clone();
    p.sort();
    p.dedup();
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req() -> VoteRequest {
        VoteRequest {
            cluster: "c".into(),
            server: "a".into(),
            partition: vec!["b".into(), "a".into(), "a".into()],
            lease: Duration::from_secs(1),
            epochs: BTreeMap::new(),
        }
    }

    #[test]
    fn validate_normalises_and_rejects() {
        assert_eq!(validate(&req()).unwrap(), vec!["a", "b"]);
        let mut r = req();
        r.partition = vec!["b".into()];
        assert_eq!(validate(&r).unwrap_err().code(), "invalid-request");
        let mut r = req();
        r.lease = Duration::from_millis(99);
        assert!(validate(&r).is_err());
        r.lease = Duration::from_secs(61);
        assert!(validate(&r).is_err());
        let mut r = req();
        r.cluster = String::new();
        assert!(validate(&r).is_err());
        let mut r = req();
        r.server = "a\n".into();
        r.partition = vec!["a\n".into()];
        assert!(validate(&r).is_err());
    }

    #[test]
    fn margins_cover_the_drift_bound() {
        let lease = Duration::from_secs(10);
        // The caller's lease, run on a clock 1 % slow, ends before the witness's hold
        // run on a clock 1 % fast (relative rates differ by at most 2 %).
        let caller_real = caller_valid_for(lease).as_secs_f64() / (1.0 - MAX_DRIFT);
        let witness_real = hold_for(lease).as_secs_f64() / (1.0 + MAX_DRIFT);
        assert!(caller_real < witness_real, "{caller_real} {witness_real}");
        let mut a = BTreeMap::from([("g".to_string(), 3), ("h".to_string(), 1)]);
        merge_epochs(
            &mut a,
            &BTreeMap::from([("g".to_string(), 2), ("i".to_string(), 5)]),
        );
        assert_eq!(
            a,
            BTreeMap::from([("g".into(), 3), ("h".into(), 1), ("i".into(), 5)])
        );
    }
}
