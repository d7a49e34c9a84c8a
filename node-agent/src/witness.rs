//! The HTTP witness: `baton witness --listen ADDR --key-file FILE...`, a small
//! authenticated service that grants its vote to one partition of a cluster at a time,
//! for a lease; its client [`HttpWitness`]; and [`witness_client`], which builds the
//! client a cluster's `[quorum] witness` names (HTTP, S3 or DynamoDB).
//!
//! Protocol (docs/src/witness.md): `POST /v1/vote` with a JSON body
//! `{cluster, server, partition, lease_ms, epochs, nonce, session, seq}` and the header
//! `X-Baton-Signature: hex(HMAC-SHA256(witness_key, body))`, where `witness_key` is the
//! cluster key's MAC over `"baton witness v2\0"` followed by the cluster name. The reply
//! echoes the nonce and is signed the same way; the client counts nothing from a reply
//! whose signature or nonce is wrong. `GET /v1/health` is unauthenticated and shows no
//! state.
//!
//! The witness holds only witness keys (`baton keygen --witness`, one file per cluster,
//! [`WitnessKeys`]), each with the servers of its cluster: a request naming another
//! server, in `server` or in `partition`, is refused (`unknown-server`). A cluster key
//! given to `--key-file` still works for this release (deprecated, logged).
//!
//! The grant rules live in [`Book`], a pure state machine with injected time. The
//! witness keeps its grants in memory: after a restart it has forgotten the grants it
//! gave, so it denies every request for a quiet period at least as long as the longest
//! lease ([`MAX_LEASE`], default 60 s) — by then every grant it gave before the restart
//! has lapsed. The epochs (and data marks) it acknowledged are kept in `--state-file`
//! ([`StateFile`]), written before the reply that acknowledges them: a server that
//! claimed an epoch through the witness and is down when the witness restarts must not
//! see its epoch claimed again by another server with the restarted witness's help.

use crate::clock::Instant;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use baton_core::config::{Config, Witness};
use baton_providers::aws::witness::{DynamoWitness, S3Witness};
use baton_providers::aws::AwsClients;
use baton_providers::witness::{
    check_reply, hold_for, merge_epochs, validate, VoteReply, VoteRequest, WitnessClient,
    WitnessError, MAX_LEASE,
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::key::{ClusterKey, KeyError};

type HmacSha256 = Hmac<Sha256>;

/// Derivation label of the v1 witness key (deprecated: no cluster name).
const WITNESS_LABEL: &[u8] = b"baton witness v1";
/// Derivation label of the per-cluster witness key; the cluster name follows it.
const WITNESS_LABEL_V2: &[u8] = b"baton witness v2\0";
/// Largest witness key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Header carrying the signature of a request or reply body.
pub const SIGNATURE_HEADER: &str = "x-baton-signature";
/// Largest request body the witness reads.
pub const MAX_BODY: usize = 16 * 1024;
/// Largest reply body the client reads.
const MAX_REPLY: usize = 64 * 1024;
/// Clusters one witness process serves at most.
const MAX_CLUSTERS: usize = 256;
/// Replay-protection sessions kept per cluster (least recently used dropped first).
const MAX_SESSIONS: usize = 1024;

// ---------------------------------------------------------------- key and wire

/// The key requests and replies are signed with: the per-cluster witness key
/// HMAC(cluster key, "baton witness v2\0" || cluster name) ([`WitnessKey::for_cluster`]),
/// which `baton keygen --witness` writes for the witness so that it never holds the
/// cluster key. The v1 key, HMAC(cluster key, "baton witness v1") without the cluster
/// name, is still accepted by a witness started with the cluster key itself (deprecated).
/// Its `Debug` output never shows it.
#[derive(Clone)]
pub struct WitnessKey([u8; 32]);

impl fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WitnessKey(..)")
    }
}

impl WitnessKey {
    /// The v1 key (no cluster name): what clients before the per-cluster key signed with.
    /// Only a witness started with the cluster key itself accepts it (deprecated).
    pub fn from_cluster_key(key: &ClusterKey) -> WitnessKey {
        WitnessKey(key.mac(&[WITNESS_LABEL]))
    }

    /// The per-cluster witness key of cluster `cluster`: what clients sign with and what
    /// `baton keygen --witness` writes. It authenticates only witness requests of that
    /// cluster: not heartbeats, not the API, not another cluster's votes.
    pub fn for_cluster(key: &ClusterKey, cluster: &str) -> WitnessKey {
        WitnessKey(key.mac(&[WITNESS_LABEL_V2, cluster.as_bytes()]))
    }

    /// The key as lowercase hex (what the witness key file holds).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A key from 64 hex digits.
    pub fn from_hex(text: &str) -> Option<WitnessKey> {
        let raw = hex::decode(text.trim()).ok()?;
        <[u8; 32]>::try_from(raw.as_slice()).ok().map(WitnessKey)
    }

    fn hmac(&self) -> HmacSha256 {
        // Cannot fail: HMAC accepts keys of any length.
        match <HmacSha256 as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        }
    }

    /// Lowercase hex HMAC-SHA256 of `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut m = self.hmac();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        let Ok(tag) = hex::decode(signature.trim()) else {
            return false;
        };
        let mut m = self.hmac();
        m.update(body);
        m.verify_slice(&tag).is_ok()
    }
}

/// The body of `POST /v1/vote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVote {
    pub cluster: String,
    pub server: String,
    pub partition: Vec<String>,
    pub lease_ms: u64,
    #[serde(default)]
    pub epochs: BTreeMap<String, u64>,
    /// Random hex chosen per request; the reply echoes it.
    pub nonce: String,
    /// Random hex chosen per client process.
    pub session: String,
    /// Grows with every request of a session; the witness rejects a seq it has seen.
    pub seq: u64,
}

/// The body of a `200` reply to `POST /v1/vote` (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReply {
    pub nonce: String,
    pub cluster: String,
    pub server: String,
    pub granted: bool,
    pub holder: Vec<String>,
    /// How much longer the holder partition keeps the vote without renewing.
    pub holder_remaining_ms: u64,
    pub epochs: BTreeMap<String, u64>,
    pub detail: String,
}

/// `{"error": {"code", "message"}}` (unsigned) for every refused request.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub error: WireErrorBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireErrorBody {
    pub code: String,
    pub message: String,
}

fn is_hex_token(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------- grant rules

/// The state of one cluster at the witness.
#[derive(Debug, Default)]
struct ClusterBook {
    /// The partition holding the vote (meaningful while `holders` is not empty).
    partition: Vec<String>,
    /// Servers that hold a grant, with its expiry on the witness's clock
    /// (`lease * 1.02` after the request arrived).
    holders: BTreeMap<String, Instant>,
    /// A move to this partition waits for the holders it leaves out to lapse.
    pending: Option<Vec<String>>,
    /// Max epoch per group seen.
    epochs: BTreeMap<String, u64>,
    /// (server, session) -> (highest seq, last use).
    sessions: HashMap<(String, String), (u64, Instant)>,
}

/// The result of one vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub granted: bool,
    pub holder: Vec<String>,
    /// How much longer the holder keeps the vote without renewing.
    pub remaining: Duration,
    pub epochs: BTreeMap<String, u64>,
    pub detail: String,
    /// The holder partition changed (for the log).
    pub moved: Option<(Vec<String>, Vec<String>)>,
}

/// A request refused before the rules (stable `code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The witness's state machine: every cluster it serves. Pure; time is passed in.
///
/// Rules for a request from server S with partition P (S in P), after dropping the
/// holders whose grant has expired:
/// 1. during the startup quiet period: deny;
/// 2. no live holder: grant P (a new grant);
/// 3. S not in the holder partition G: deny (the reply says who holds it, how long);
/// 4. a move to Q is pending and S is not in Q: deny;
/// 5. every live holder is in P: grant P (renewal, or the partition grows/moves);
/// 6. otherwise (P leaves out a live holder): renew S's grant within G and mark the move
///    to P pending; it happens on the first request once the left-out holders lapsed.
///
/// Invariant: every server whose grant has not expired is a member of the holder
/// partition. A grant's expiry is `lease * 1.02` after the request arrived, later (with
/// clock rates within 1 % of each other) than the end of the requester's count, which
/// starts when it sent the request.
#[derive(Debug)]
pub struct Book {
    started: Instant,
    quiet: Duration,
    clusters: HashMap<String, ClusterBook>,
}

impl Book {
    pub fn new(started: Instant, quiet: Duration) -> Book {
        Book {
            started,
            quiet,
            clusters: HashMap::new(),
        }
    }

    /// The epoch table of `cluster` (None: no request of it yet).
    pub fn epochs(&self, cluster: &str) -> Option<&BTreeMap<String, u64>> {
        self.clusters.get(cluster).map(|c| &c.epochs)
    }

    /// Every cluster's epoch table (what the state file keeps).
    pub fn all_epochs(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.clusters
            .iter()
            .map(|(n, c)| (n.clone(), c.epochs.clone()))
            .collect()
    }

    /// Start from stored epoch tables (grants are never stored: the quiet period covers
    /// them).
    pub fn restore(&mut self, epochs: BTreeMap<String, BTreeMap<String, u64>>) {
        for (name, e) in epochs {
            self.clusters.entry(name).or_default().epochs = e;
        }
    }

    fn cluster(&mut self, name: &str) -> Result<&mut ClusterBook, Refusal> {
        if !self.clusters.contains_key(name) && self.clusters.len() >= MAX_CLUSTERS {
            return Err(Refusal {
                code: "too-many-clusters",
                message: format!("this witness serves at most {MAX_CLUSTERS} clusters"),
            });
        }
        Ok(self.clusters.entry(name.to_string()).or_default())
    }

    /// Replay protection: `seq` must be higher than any seen in this session.
    pub fn check_seq(
        &mut self,
        cluster: &str,
        server: &str,
        session: &str,
        seq: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        let cb = self.cluster(cluster)?;
        let k = (server.to_string(), session.to_string());
        if let Some((hi, _)) = cb.sessions.get(&k) {
            if seq <= *hi {
                return Err(Refusal {
                    code: "replayed",
                    message: format!(
                        "sequence number {seq} of this session was already used (highest {hi}): a replayed or duplicated request"
                    ),
                });
            }
        }
        if !cb.sessions.contains_key(&k) && cb.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = cb
                .sessions
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                cb.sessions.remove(&oldest);
            }
        }
        cb.sessions.insert(k, (seq, now));
        Ok(())
    }

    /// Apply the rules to a validated request (`partition` sorted, S in it).
    pub fn vote(&mut self, req: &VoteRequest, partition: &[String], now: Instant) -> Outcome {
        let quiet_left = (self.started + self.quiet).saturating_duration_since(now);
        let cb = match self.cluster(&req.cluster) {
            Ok(cb) => cb,
            Err(r) => {
                return Outcome {
                    granted: false,
                    holder: Vec::new(),
                    remaining: Duration::ZERO,
                    epochs: req.epochs.clone(),
                    detail: r.message,
                    moved: None,
                }
            }
        };
        // The merged table is what every reply carries: it must stay within what a client
        // accepts (MAX_EPOCHS groups), however many different groups requests name.
        let new_groups = req
            .epochs
            .keys()
            .filter(|g| !cb.epochs.contains_key(*g))
            .count();
        if cb.epochs.len() + new_groups > baton_providers::witness::MAX_EPOCHS {
            return Outcome {
                granted: false,
                holder: Vec::new(),
                remaining: Duration::ZERO,
                epochs: req.epochs.clone(),
                detail: format!(
                    "cluster {} would have more than {} groups in this witness's epoch table: refused (restart the witness to clear groups that no longer exist)",
                    req.cluster,
                    baton_providers::witness::MAX_EPOCHS
                ),
                moved: None,
            };
        }
        merge_epochs(&mut cb.epochs, &req.epochs);
        cb.holders.retain(|_, exp| *exp > now);
        let me = &req.server;
        let held_for = |cb: &ClusterBook| {
            cb.holders
                .values()
                .max()
                .map(|e| e.saturating_duration_since(now))
                .unwrap_or_default()
        };
        let deny = |cb: &ClusterBook, detail: String| Outcome {
            granted: false,
            holder: if cb.holders.is_empty() {
                Vec::new()
            } else {
                cb.partition.clone()
            },
            remaining: held_for(cb),
            epochs: cb.epochs.clone(),
            detail,
            moved: None,
        };
        if !quiet_left.is_zero() {
            return deny(
                cb,
                format!(
                    "the witness started recently and may have forgotten grants it gave before: it grants nothing for {} ms more",
                    quiet_left.as_millis()
                ),
            );
        }
        let expiry = now + hold_for(req.lease);
        let before = (!cb.holders.is_empty()).then(|| cb.partition.clone());
        if cb.holders.is_empty() {
            cb.partition = partition.to_vec();
            cb.pending = None;
            cb.holders.insert(me.clone(), expiry);
            return Outcome {
                granted: true,
                holder: cb.partition.clone(),
                remaining: held_for(cb),
                epochs: cb.epochs.clone(),
                detail: "granted (no live grant)".into(),
                moved: Some((before.unwrap_or_default(), cb.partition.clone())),
            };
        }
        if !cb.partition.contains(me) {
            let d = format!(
                "held by {:?} for {} ms more unless renewed",
                cb.partition,
                held_for(cb).as_millis()
            );
            return deny(cb, d);
        }
        if let Some(q) = &cb.pending {
            if !q.contains(me) {
                let d = format!(
                    "the vote is moving from {:?} to {:?}, which leaves out {me}",
                    cb.partition, q
                );
                return deny(cb, d);
            }
        }
        let blockers: Vec<String> = cb
            .holders
            .keys()
            .filter(|h| *h != me && !partition.contains(h))
            .cloned()
            .collect();
        cb.holders.insert(me.clone(), expiry);
        if blockers.is_empty() {
            let moved =
                (cb.partition != partition).then(|| (cb.partition.clone(), partition.to_vec()));
            cb.partition = partition.to_vec();
            cb.pending = None;
            return Outcome {
                granted: true,
                holder: cb.partition.clone(),
                remaining: held_for(cb),
                epochs: cb.epochs.clone(),
                detail: if moved.is_some() {
                    "granted (partition changed)".into()
                } else {
                    "renewed".into()
                },
                moved,
            };
        }
        cb.pending = Some(partition.to_vec());
        let wait = blockers
            .iter()
            .filter_map(|b| cb.holders.get(b))
            .max()
            .map(|e| e.saturating_duration_since(now))
            .unwrap_or_default();
        Outcome {
            granted: true,
            holder: cb.partition.clone(),
            remaining: held_for(cb),
            epochs: cb.epochs.clone(),
            detail: format!(
                "renewed within {:?}; the move to {:?} waits {} ms for {} to lapse",
                cb.partition,
                partition,
                wait.as_millis(),
                blockers.join(", ")
            ),
            moved: None,
        }
    }
}

// ---------------------------------------------------------------- witness keys

/// The witness key file `baton keygen --witness` writes (TOML, mode 0600): one cluster's
/// name, the servers the witness may grant to, and the derived witness key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessKeyFile {
    pub cluster: String,
    pub servers: Vec<String>,
    /// 64 hex digits: [`WitnessKey::for_cluster`].
    pub witness_key: String,
}

/// Errors loading or writing witness key files.
#[derive(Debug, thiserror::Error)]
pub enum WitnessKeyError {
    #[error("witness key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("witness key file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("witness key file {} has mode {:04o}: it is accessible to group/others; run: chmod 600 {}", path.display(), mode & 0o7777, path.display())]
    Permissive { path: PathBuf, mode: u32 },
    #[error("witness key files {} and {} are both for cluster `{cluster}` but differ in their servers or repeat a key: give one file per cluster, or during a key rotation the old and the new witness key file of the same configuration", first.display(), second.display())]
    DuplicateCluster {
        cluster: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("witness key file {} already exists; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error(transparent)]
    ClusterKey(#[from] KeyError),
    #[error(transparent)]
    Config(#[from] baton_core::config::ConfigError),
}

impl WitnessKeyError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WitnessKeyError::Io { .. } => "witness-key-io",
            WitnessKeyError::Invalid { .. } => "witness-key-invalid",
            WitnessKeyError::Permissive { .. } => "witness-key-permissive",
            WitnessKeyError::DuplicateCluster { .. } => "witness-key-duplicate-cluster",
            WitnessKeyError::Exists { .. } => "witness-key-exists",
            WitnessKeyError::ClusterKey(k) => k.code(),
            WitnessKeyError::Config(_) => "config-invalid",
        }
    }
}

/// One cluster a witness serves with a derived key (two or three during a key
/// rotation: the agents sign with the old or the new one until all have switched).
#[derive(Debug, Clone)]
struct ClusterEntry {
    keys: Vec<WitnessKey>,
    servers: Vec<String>,
}

/// Witness keys one cluster may have at once (as `[cluster] accept_key_files` allows
/// two keys besides the cluster key).
pub const MAX_KEYS_PER_CLUSTER: usize = 3;

/// The keys of a witness: per-cluster derived keys (with the servers each cluster may
/// be granted to), and, deprecated, cluster keys (any cluster name, any server).
#[derive(Debug, Clone, Default)]
pub struct WitnessKeys {
    clusters: BTreeMap<String, (ClusterEntry, PathBuf)>,
    legacy: Vec<ClusterKey>,
}

impl WitnessKeys {
    /// A witness for one cluster with a derived key (tests).
    pub fn derived(cluster: &str, servers: &[&str], key: WitnessKey) -> WitnessKeys {
        let mut k = WitnessKeys::default();
        k.clusters.insert(
            cluster.to_string(),
            (
                ClusterEntry {
                    keys: vec![key],
                    servers: servers.iter().map(|s| s.to_string()).collect(),
                },
                PathBuf::new(),
            ),
        );
        k
    }

    /// A witness holding a cluster key (deprecated; tests).
    pub fn legacy(key: ClusterKey) -> WitnessKeys {
        WitnessKeys {
            clusters: BTreeMap::new(),
            legacy: vec![key],
        }
    }

    /// Load `baton witness --key-file` arguments: each is a witness key file (TOML with
    /// `witness_key`) or, deprecated, a cluster key file. Returns the keys and the
    /// warnings to log.
    pub fn load(paths: &[PathBuf]) -> Result<(WitnessKeys, Vec<String>), WitnessKeyError> {
        let mut keys = WitnessKeys::default();
        let mut warnings = Vec::new();
        for path in paths {
            match load_witness_key_file(path)? {
                Some(f) => {
                    let key = WitnessKey::from_hex(&f.witness_key).ok_or_else(|| {
                        WitnessKeyError::Invalid {
                            path: path.clone(),
                            message: "`witness_key` must be 64 hex digits".into(),
                        }
                    })?;
                    if let Some((e, first)) = keys.clusters.get_mut(&f.cluster) {
                        // A second file of the same cluster: a key rotation in progress.
                        if e.servers != f.servers || e.keys.iter().any(|k| k.0 == key.0) {
                            return Err(WitnessKeyError::DuplicateCluster {
                                cluster: f.cluster,
                                first: first.clone(),
                                second: path.clone(),
                            });
                        }
                        if e.keys.len() >= MAX_KEYS_PER_CLUSTER {
                            return Err(WitnessKeyError::Invalid {
                                path: path.clone(),
                                message: format!(
                                    "cluster `{}` already has {MAX_KEYS_PER_CLUSTER} witness keys (a rotation needs two)",
                                    f.cluster
                                ),
                            });
                        }
                        e.keys.push(key);
                        continue;
                    }
                    keys.clusters.insert(
                        f.cluster,
                        (
                            ClusterEntry {
                                keys: vec![key],
                                servers: f.servers,
                            },
                            path.clone(),
                        ),
                    );
                }
                None => {
                    let key = ClusterKey::load(path)?;
                    warnings.extend(key.warnings().iter().map(|w| format!("{w}")));
                    warnings.push(format!(
                        "witness-cluster-key-deprecated: {} is a cluster key: a witness holding the cluster key could forge heartbeats and API calls, and it grants to any server name. Give it a witness key instead: baton keygen --witness FILE --config CLUSTER.toml (cluster keys are refused in a future release)",
                        path.display()
                    ));
                    keys.legacy.push(key);
                }
            }
        }
        Ok((keys, warnings))
    }

    /// Cluster names served with a derived key.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.clusters.keys().map(String::as_str)
    }

    /// The keys a request for `cluster` (None: the body names none) may be signed with,
    /// and the servers it may name (None: any, for a cluster key).
    fn candidates(&self, cluster: Option<&str>) -> (Vec<WitnessKey>, Option<&[String]>) {
        if let Some((e, _)) = cluster.and_then(|c| self.clusters.get(c)) {
            return (e.keys.clone(), Some(e.servers.as_slice()));
        }
        let mut v = Vec::new();
        for k in &self.legacy {
            if let Some(c) = cluster {
                v.push(WitnessKey::for_cluster(k, c));
            }
            v.push(WitnessKey::from_cluster_key(k));
        }
        (v, None)
    }
}

/// Read `path`: `Some` for a witness key file, `None` for anything else (a cluster key).
fn load_witness_key_file(
    path: &std::path::Path,
) -> Result<Option<WitnessKeyFile>, WitnessKeyError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |source| WitnessKeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode();
    let mut raw = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_KEY_FILE {
        return Err(WitnessKeyError::Invalid {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_KEY_FILE} bytes: not a key file"),
        });
    }
    let Ok(text) = std::str::from_utf8(&raw) else {
        return Ok(None);
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(None);
    };
    if !table.contains_key("witness_key") {
        return Ok(None);
    }
    if mode & 0o077 != 0 {
        return Err(WitnessKeyError::Permissive {
            path: path.to_path_buf(),
            mode,
        });
    }
    let invalid = |message: String| WitnessKeyError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let f: WitnessKeyFile = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
    if f.cluster.trim().is_empty() {
        return Err(invalid("`cluster` is empty".into()));
    }
    if f.servers.is_empty() || f.servers.iter().any(|s| s.trim().is_empty()) {
        return Err(invalid(
            "`servers` must list the cluster's server names".into(),
        ));
    }
    Ok(Some(f))
}

/// `baton keygen --witness OUT --config CLUSTER.toml`: derive the witness key of the
/// cluster in `config` from its cluster key and write it, with the cluster name and its
/// servers, to `out` (mode 0600, never overwritten). Returns the cluster name.
pub fn write_witness_key_file(
    out: &std::path::Path,
    config: &std::path::Path,
) -> Result<String, WitnessKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let cfg = crate::catalog::load_config(config)?;
    let key_path = crate::catalog::config_path(config, &cfg.key_file);
    let key = ClusterKey::load(&key_path)?;
    let f = WitnessKeyFile {
        cluster: cfg.cluster_name.clone(),
        servers: cfg.servers.iter().map(|s| s.name.clone()).collect(),
        witness_key: WitnessKey::for_cluster(&key, &cfg.cluster_name).to_hex(),
    };
    let body = toml::to_string(&f).map_err(|e| WitnessKeyError::Invalid {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let text = format!(
        "# Baton witness key of cluster `{}` (baton keygen --witness). Give this file, not the\n# cluster key, to `baton witness --key-file`; rerun keygen when the servers change.\n{body}",
        cfg.cluster_name
    );
    let io = |source| WitnessKeyError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                WitnessKeyError::Exists {
                    path: out.to_path_buf(),
                }
            } else {
                io(source)
            }
        })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(cfg.cluster_name)
}

// ---------------------------------------------------------------- server

/// Errors of `baton witness`.
#[derive(Debug, thiserror::Error)]
pub enum WitnessServerError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Keys(#[from] WitnessKeyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the witness server failed: {0}")]
    Serve(std::io::Error),
    #[error("witness state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

impl WitnessServerError {
    pub fn code(&self) -> &'static str {
        match self {
            WitnessServerError::Key(k) => k.code(),
            WitnessServerError::Keys(k) => k.code(),
            WitnessServerError::Listen { .. } => "listen-failed",
            WitnessServerError::Serve(_) => "serve-failed",
            WitnessServerError::State { .. } => "state-file",
        }
    }
}

/// Options of `baton witness`.
#[derive(Debug, Clone)]
pub struct WitnessOptions {
    pub listen: SocketAddr,
    /// Witness key files (one per cluster), or, deprecated, cluster key files.
    pub key_files: Vec<PathBuf>,
    /// Deny everything for this long after start (default and safe minimum: 60 s).
    pub startup_quiet: Duration,
    /// Allow-list, connection caps and timeouts of the HTTP server.
    pub limits: crate::listen::Limits,
    /// Where the acknowledged epochs are kept across restarts (`--state-file`).
    pub state_file: Option<PathBuf>,
}

struct ServerState {
    keys: WitnessKeys,
    book: Mutex<Ledger>,
    state: Option<StateFile>,
}

/// The book and whether its epochs changed since they were last written.
struct Ledger {
    book: Book,
    dirty: bool,
}

/// The witness's state file: the epoch table of every cluster, as JSON
/// (`{"version": 1, "clusters": {"NAME": {"epochs": {"GROUP": N, ...}}}}`), replaced
/// atomically (a temporary file, fsync, rename, fsync of the directory).
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    clusters: BTreeMap<String, StateCluster>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateCluster {
    epochs: BTreeMap<String, u64>,
}

/// Largest state file read (256 clusters of 1024 epochs fit with room to spare).
const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    fn err(&self, message: impl Into<String>) -> WitnessServerError {
        WitnessServerError::State {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// The epoch table of every cluster; empty when the file does not exist yet.
    pub fn load(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>, WitnessServerError> {
        use std::io::Read;
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.err(format!("cannot read it: {e}"))),
        };
        let mut text = String::new();
        f.take(MAX_STATE_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| self.err(format!("cannot read it: {e}")))?;
        if text.len() as u64 > MAX_STATE_FILE {
            return Err(self.err(format!("larger than {MAX_STATE_FILE} bytes")));
        }
        let doc: StateDoc = serde_json::from_str(&text).map_err(|e| {
            self.err(format!(
                "not a witness state file ({e}); move it away to start with an empty epoch table, after checking that no cluster relies on the epochs it held"
            ))
        })?;
        if doc.version != 1 {
            return Err(self.err(format!("version {} is not 1", doc.version)));
        }
        if doc.clusters.len() > MAX_CLUSTERS {
            return Err(self.err(format!("more than {MAX_CLUSTERS} clusters")));
        }
        let mut out = BTreeMap::new();
        for (name, c) in doc.clusters {
            baton_providers::witness::check_epochs(&format!("cluster {name}"), &c.epochs)
                .map_err(|e| self.err(e.to_string()))?;
            out.insert(name, c.epochs);
        }
        Ok(out)
    }

    /// Replace the file with `clusters`' epoch tables, durably.
    pub fn save(&self, clusters: &BTreeMap<String, BTreeMap<String, u64>>) -> std::io::Result<()> {
        let doc = StateDoc {
            version: 1,
            clusters: clusters
                .iter()
                .map(|(n, e)| (n.clone(), StateCluster { epochs: e.clone() }))
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
        crate::files::write_atomic(&self.path, &body, 0o600)
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(WireError {
            error: WireErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }),
    )
        .into_response()
}

/// The witness's HTTP routes (exposed for tests), without a state file.
pub fn router(keys: WitnessKeys, quiet: Duration) -> Router {
    router_with_state(keys, quiet, None, BTreeMap::new())
}

/// The witness's HTTP routes, keeping the epochs in `state` (loaded as `epochs`).
pub fn router_with_state(
    keys: WitnessKeys,
    quiet: Duration,
    state: Option<StateFile>,
    epochs: BTreeMap<String, BTreeMap<String, u64>>,
) -> Router {
    let mut book = Book::new(crate::clock::now(), quiet);
    book.restore(epochs);
    let state = Arc::new(ServerState {
        keys,
        book: Mutex::new(Ledger { book, dirty: false }),
        state,
    });
    Router::new()
        .route("/v1/vote", post(vote_handler))
        .route(
            "/v1/health",
            get(|| async {
                axum::Json(serde_json::json!({"ok": true, "service": "baton-witness", "version": env!("CARGO_PKG_VERSION")}))
            }),
        )
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint: POST /v1/vote, GET /v1/health",
            )
        })
        .method_not_allowed_fallback(|| async {
            refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "POST /v1/vote, GET /v1/health",
            )
        })
        .with_state(state)
}

/// The `cluster` field of a request body, read before its signature is checked (to
/// pick the cluster's key); everything else is read only once the signature is good.
#[derive(Deserialize)]
struct ClusterOnly {
    cluster: String,
}

async fn vote_handler(State(s): State<Arc<ServerState>>, req: Request) -> Response {
    let headers: HeaderMap = req.headers().clone();
    // The TCP peer (never a client-supplied header such as X-Forwarded-For).
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            )
        }
    };
    let named = serde_json::from_slice::<ClusterOnly>(&body)
        .ok()
        .map(|c| c.cluster);
    let (candidates, allowed) = s.keys.candidates(named.as_deref());
    if let (true, Some(cluster)) = (candidates.is_empty(), named.as_deref()) {
        tracing::warn!(code = "unknown-cluster", %peer, cluster = ?cluster, "witness: rejected a request for a cluster this witness has no key for");
        return refuse(
            StatusCode::FORBIDDEN,
            "unknown-cluster",
            format!("this witness serves no cluster `{cluster}`: give it the cluster's witness key file (baton keygen --witness)"),
        );
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let key = signature.and_then(|sig| candidates.into_iter().find(|k| k.verify(&body, sig)));
    let Some(key) = key else {
        tracing::warn!(code = "bad-signature", %peer, "witness: rejected a request with a missing or wrong signature");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "missing or wrong X-Baton-Signature: use the cluster key file of this cluster",
        );
    };
    let wire: WireVote = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("the body is not a vote request: {e}"),
            )
        }
    };
    if !is_hex_token(&wire.nonce, 16, 128) || !is_hex_token(&wire.session, 8, 128) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "nonce (16-128) and session (8-128) must be hex digits",
        );
    }
    let vreq = VoteRequest {
        cluster: wire.cluster.clone(),
        server: wire.server.clone(),
        partition: wire.partition.clone(),
        lease: Duration::from_millis(wire.lease_ms),
        epochs: wire.epochs.clone(),
    };
    let partition = match validate(&vreq) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    if named.as_deref() != Some(wire.cluster.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "the request names its cluster ambiguously",
        );
    }
    if let Some(servers) = allowed {
        if let Some(unknown) = partition.iter().find(|p| !servers.iter().any(|s| s == *p)) {
            tracing::warn!(code = "unknown-server", %peer, cluster = %wire.cluster, server = %wire.server, unknown = %unknown, "witness: refused a request naming a server that is not in the cluster");
            return refuse(
                StatusCode::FORBIDDEN,
                "unknown-server",
                format!(
                    "`{unknown}` is not a server of cluster `{}` (the witness key file lists {servers:?})",
                    wire.cluster
                ),
            );
        }
    }
    let now = crate::clock::now();
    let outcome = {
        let mut ledger = s.book.lock().unwrap_or_else(|p| p.into_inner());
        let book = &mut ledger.book;
        if let Err(r) = book.check_seq(&wire.cluster, &wire.server, &wire.session, wire.seq, now) {
            drop(ledger);
            tracing::warn!(code = r.code, %peer, cluster = %wire.cluster, server = %wire.server, "witness: {}", r.message);
            let status = if r.code == "replayed" {
                StatusCode::CONFLICT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return refuse(status, r.code, r.message);
        }
        let before = book.epochs(&wire.cluster).cloned();
        let outcome = book.vote(&vreq, &partition, now);
        if book.epochs(&wire.cluster) != before.as_ref() {
            ledger.dirty = true;
        }
        // Written before the reply that acknowledges the epochs (under the lock, so a
        // later reply never acknowledges what an earlier write has not stored). Rare: only
        // a claim or a data mark changes the table. Until a write succeeds nothing is
        // answered, so no acknowledgement outlives a restart.
        if let (true, Some(st)) = (ledger.dirty, &s.state) {
            match st.save(&ledger.book.all_epochs()) {
                Ok(()) => ledger.dirty = false,
                Err(e) => {
                    drop(ledger);
                    tracing::error!(code = "state-file", path = %st.path.display(), "witness: cannot write the state file: {e}; answering nothing until it can");
                    return refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "state-file",
                        format!("the witness cannot store acknowledged epochs: {e}"),
                    );
                }
            }
        }
        outcome
    };
    if let Some((from, to)) = &outcome.moved {
        tracing::info!(cluster = %wire.cluster, by = %wire.server, %peer, from = ?from, to = ?to, "witness: vote granted to a new partition");
    } else if !outcome.granted {
        tracing::debug!(cluster = %wire.cluster, server = %wire.server, "witness: denied: {}", outcome.detail);
    }
    let reply = WireReply {
        nonce: wire.nonce,
        cluster: wire.cluster,
        server: wire.server,
        granted: outcome.granted,
        holder: outcome.holder,
        holder_remaining_ms: outcome.remaining.as_millis() as u64,
        epochs: outcome.epochs,
        detail: outcome.detail,
    };
    let body = serde_json::to_vec(&reply).unwrap_or_default();
    let sig = key.sign(&body);
    let mut resp = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&sig) {
        resp.headers_mut().insert(SIGNATURE_HEADER, v);
    }
    resp
}

/// Run `baton witness` until SIGINT/SIGTERM.
pub async fn run_witness(opts: WitnessOptions) -> Result<(), WitnessServerError> {
    let (keys, warnings) = WitnessKeys::load(&opts.key_files)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    if opts.startup_quiet < MAX_LEASE {
        tracing::warn!(
            quiet_ms = opts.startup_quiet.as_millis() as u64,
            "witness: the startup quiet period is shorter than the longest lease (60 s): after a restart this witness may grant a vote while a grant it gave before the restart is still counted, unless every cluster uses leases shorter than the quiet period"
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WitnessServerError::Listen {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(opts.listen);
    let clusters = keys.clusters().collect::<Vec<_>>().join(", ");
    tracing::info!(listen = %local, clusters = %clusters, quiet_ms = opts.startup_quiet.as_millis() as u64, "witness: listening; granting nothing during the startup quiet period");
    // Tests wait for this line.
    eprintln!("baton witness: listening on {local}");
    let (state, epochs) = match &opts.state_file {
        Some(p) => {
            let st = StateFile::new(p.clone());
            let epochs = st.load()?;
            // The directory must take a write now, not at the first claim.
            st.save(&epochs)
                .map_err(|e| st.err(format!("cannot write it: {e}")))?;
            tracing::info!(path = %p.display(), clusters = epochs.len(), "witness: epochs kept in the state file");
            (Some(st), epochs)
        }
        None => {
            tracing::warn!("witness: no --state-file: the epochs and data marks this witness acknowledges are forgotten when it restarts; a server that claimed an epoch through it and is down then could see that epoch claimed again");
            (None, BTreeMap::new())
        }
    };
    let app = router_with_state(keys, opts.startup_quiet, state, epochs);
    crate::listen::serve_witness(listener, app, opts.limits, async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("witness: stopping");
    })
    .await;
    Ok(())
}

/// `baton witness` from the command line: exit code 2 for a bad `--startup-quiet` or limit flag, 7 for
/// a key problem, 1 for anything else.
pub async fn run_cli(
    listen: SocketAddr,
    key_files: Vec<PathBuf>,
    startup_quiet: &str,
    state_file: Option<PathBuf>,
    limits: &crate::listen::LimitArgs,
) -> crate::exit::Exit {
    use crate::exit::Exit;
    let quiet = match baton_core::config::parse_duration(startup_quiet) {
        Ok(d) => d.0,
        Err(m) => {
            eprintln!("baton witness: --startup-quiet: {m}");
            return Exit::Usage;
        }
    };
    let limits = match limits.limits() {
        Ok(l) => l,
        Err(m) => {
            eprintln!("baton witness: {m}");
            return Exit::Usage;
        }
    };
    match run_witness(WitnessOptions {
        listen,
        key_files,
        startup_quiet: quiet,
        limits,
        state_file,
    })
    .await
    {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            eprintln!("baton witness: {e}");
            if matches!(e, WitnessServerError::Key(_) | WitnessServerError::Keys(_)) {
                Exit::KeyError
            } else if matches!(e, WitnessServerError::State { .. }) {
                Exit::ConfigInvalid
            } else {
                Exit::Failure
            }
        }
    }
}

// ---------------------------------------------------------------- client

/// The HTTP witness client.
pub struct HttpWitness {
    url: reqwest::Url,
    /// The per-cluster witness key is derived from it for each request's cluster.
    key: ClusterKey,
    client: reqwest::Client,
    session: String,
    seq: AtomicU64,
}

impl fmt::Debug for HttpWitness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpWitness")
            .field("url", &self.url.as_str())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl HttpWitness {
    /// `url` is the witness's base URL (`http://10.0.130.5:7430`).
    pub fn new(url: &str, key: &ClusterKey) -> Result<HttpWitness, WitnessError> {
        let base = reqwest::Url::parse(url)
            .map_err(|e| WitnessError::InvalidRequest(format!("witness url `{url}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(WitnessError::InvalidRequest(format!(
                "witness url `{url}` must start with http:// or https://"
            )));
        }
        let url = base
            .join("/v1/vote")
            .map_err(|e| WitnessError::InvalidRequest(format!("witness url `{url}`: {e}")))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton-witness-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WitnessError::InvalidRequest(format!("HTTP client: {e}")))?;
        Ok(HttpWitness {
            url,
            key: key.clone(),
            client,
            session: random_hex(16),
            seq: AtomicU64::new(1),
        })
    }

    async fn exchange(
        &self,
        req: &VoteRequest,
        partition: Vec<String>,
    ) -> Result<VoteReply, WitnessError> {
        let nonce = random_hex(16);
        let wire = WireVote {
            cluster: req.cluster.clone(),
            server: req.server.clone(),
            partition,
            lease_ms: req.lease.as_millis() as u64,
            epochs: req.epochs.clone(),
            nonce: nonce.clone(),
            session: self.session.clone(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
        };
        let body = serde_json::to_vec(&wire)
            .map_err(|e| WitnessError::InvalidRequest(format!("encoding the request: {e}")))?;
        let key = WitnessKey::for_cluster(&self.key, &req.cluster);
        let sig = key.sign(&body);
        let mut resp = self
            .client
            .post(self.url.clone())
            .header(SIGNATURE_HEADER, sig)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| WitnessError::Unreachable(format!("{}: {}", self.url, chain(&e))))?;
        let status = resp.status();
        let signature = resp
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut raw = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    raw.extend_from_slice(&c);
                    if raw.len() > MAX_REPLY {
                        return Err(WitnessError::BadReply(format!(
                            "reply larger than {MAX_REPLY} bytes"
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(WitnessError::Unreachable(chain(&e))),
            }
        }
        if status != reqwest::StatusCode::OK {
            return Err(match serde_json::from_slice::<WireError>(&raw) {
                Ok(e) => WitnessError::Rejected {
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => WitnessError::BadReply(format!(
                    "HTTP {status} with an unreadable body: {}",
                    String::from_utf8_lossy(&raw[..raw.len().min(200)])
                )),
            });
        }
        let Some(signature) = signature else {
            return Err(WitnessError::BadSignature("the reply is not signed".into()));
        };
        if !key.verify(&raw, &signature) {
            return Err(WitnessError::BadSignature(
                "the reply's signature is wrong (another key, or not our witness)".into(),
            ));
        }
        let r: WireReply = serde_json::from_slice(&raw)
            .map_err(|e| WitnessError::BadReply(format!("the reply is not a vote reply: {e}")))?;
        if r.nonce != nonce || r.cluster != req.cluster || r.server != req.server {
            return Err(WitnessError::BadSignature(
                "the reply answers another request (nonce, cluster or server differ)".into(),
            ));
        }
        let reply = VoteReply {
            granted: r.granted,
            holder: r.holder,
            epochs: r.epochs,
            detail: r.detail,
        };
        // Signed is not sane: epochs above the bound or oversized fields never grant.
        check_reply(&format!("the witness at {}", self.url), &reply)?;
        Ok(reply)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[async_trait]
impl WitnessClient for HttpWitness {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn vote(&self, req: &VoteRequest, deadline: Duration) -> Result<VoteReply, WitnessError> {
        let partition = validate(req)?;
        match tokio::time::timeout(deadline, self.exchange(req, partition)).await {
            Ok(r) => r,
            Err(_) => Err(WitnessError::Timeout(deadline)),
        }
    }
}

// ---------------------------------------------------------------- factory

/// The witness client for `[quorum] witness`, or `None` when there is none (or it cannot
/// be built: an invalid URL, or a cloud witness without AWS clients; logged as an error,
/// and the witness vote is then never counted).
pub fn witness_client(
    cfg: &Config,
    key: &ClusterKey,
    aws: Option<AwsClients>,
) -> Option<Box<dyn WitnessClient>> {
    match &cfg.quorum.witness {
        Witness::None => None,
        Witness::Http { url } => match HttpWitness::new(url, key) {
            Ok(w) => Some(Box::new(w)),
            Err(e) => {
                tracing::error!(
                    code = e.code(),
                    "witness: {e}; the witness vote is not counted"
                );
                None
            }
        },
        Witness::S3 {
            bucket,
            key: object,
            region,
        } => {
            let Some(aws) = aws else {
                tracing::error!(
                    "witness: the S3 witness needs AWS clients; the witness vote is not counted"
                );
                return None;
            };
            let clients = region
                .as_deref()
                .map_or(aws.clone(), |r| aws.with_region(r));
            Some(Box::new(S3Witness::new(&clients, bucket, object)))
        }
        Witness::Dynamodb {
            table,
            item,
            region,
        } => {
            let Some(aws) = aws else {
                tracing::error!("witness: the DynamoDB witness needs AWS clients; the witness vote is not counted");
                return None;
            };
            let clients = region
                .as_deref()
                .map_or(aws.clone(), |r| aws.with_region(r));
            let item = item.clone().unwrap_or_else(|| cfg.cluster_name.clone());
            Some(Box::new(DynamoWitness::new(&clients, table, &item)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn vote(book: &mut Book, server: &str, p: &[&str], now: Instant) -> Outcome {
        let req = VoteRequest {
            cluster: "c".into(),
            server: server.into(),
            partition: p.iter().map(|s| s.to_string()).collect(),
            lease: LEASE,
            epochs: BTreeMap::from([(format!("g-{server}"), 2)]),
        };
        let part = validate(&req).unwrap();
        book.vote(&req, &part, now)
    }

    fn started() -> (Book, Instant) {
        let t0 = crate::clock::now();
        (Book::new(t0, Duration::ZERO), t0)
    }

    /// Requests naming ever new groups cannot grow the epoch table past what a client
    /// accepts: the request that would is refused and changes nothing; known groups go on.
    #[test]
    fn the_epoch_table_is_capped() {
        let (mut book, t0) = started();
        let max = baton_providers::witness::MAX_EPOCHS;
        let req = |range: std::ops::Range<usize>| {
            let r = VoteRequest {
                cluster: "c".into(),
                server: "a".into(),
                partition: vec!["a".into()],
                lease: LEASE,
                epochs: range.map(|i| (format!("g{i}"), 3)).collect(),
            };
            let part = validate(&r).unwrap();
            (r, part)
        };
        let (r, p) = req(0..max);
        assert!(book.vote(&r, &p, t0).granted);
        let (r, p) = req(max - 1..max + 1);
        let o = book.vote(&r, &p, t0 + ms(10));
        assert!(!o.granted);
        assert!(o.detail.contains("more than 1024 groups"), "{}", o.detail);
        assert_eq!(book.clusters["c"].epochs.len(), max);
        assert!(!book.clusters["c"].epochs.contains_key(&format!("g{max}")));
        let (r, p) = req(0..10);
        let o = book.vote(&r, &p, t0 + ms(20));
        assert!(o.granted, "{o:?}");
        assert_eq!(o.epochs.len(), max);
        baton_providers::witness::check_epochs("reply", &o.epochs).unwrap();
    }

    #[test]
    fn grant_renew_deny_and_expire() {
        let (mut b, t0) = started();
        let o = vote(&mut b, "a", &["a"], t0);
        assert!(o.granted);
        assert_eq!(o.holder, vec!["a"]);
        assert_eq!(o.remaining, hold_for(LEASE));
        assert!(o.moved.is_some());
        let o = vote(&mut b, "b", &["b"], t0 + ms(100));
        assert!(!o.granted);
        assert_eq!(o.holder, vec!["a"]);
        assert_eq!(o.remaining, hold_for(LEASE) - ms(100));
        assert!(o.detail.contains("held by"), "{}", o.detail);
        // Epochs merge even on a denial.
        assert_eq!(o.epochs.get("g-a"), Some(&2));
        assert_eq!(o.epochs.get("g-b"), Some(&2));
        // Renewal extends.
        assert!(vote(&mut b, "a", &["a"], t0 + ms(900)).granted);
        assert!(!vote(&mut b, "b", &["b"], t0 + ms(1500)).granted);
        // Expiry: hold after the last renewal (1.02 × lease), not a moment before.
        let exp = t0 + ms(900) + hold_for(LEASE);
        assert!(!vote(&mut b, "b", &["b"], exp - ms(1)).granted);
        let o = vote(&mut b, "b", &["b"], exp);
        assert!(o.granted);
        assert_eq!(o.holder, vec!["b"]);
        assert!(!vote(&mut b, "a", &["a"], exp + ms(1)).granted);
    }

    #[test]
    fn quiet_period_denies_everything() {
        let t0 = crate::clock::now();
        let mut b = Book::new(t0, ms(500));
        let o = vote(&mut b, "a", &["a"], t0 + ms(499));
        assert!(!o.granted);
        assert!(o.detail.contains("started recently"), "{}", o.detail);
        assert!(vote(&mut b, "a", &["a"], t0 + ms(500)).granted);
    }

    #[test]
    fn growing_is_immediate_shrinking_waits_for_the_left_out() {
        let (mut b, t0) = started();
        assert!(vote(&mut b, "a", &["a", "b"], t0).granted);
        assert!(vote(&mut b, "b", &["a", "b"], t0 + ms(10)).granted);
        // Split: A asks for {a}: renewed within {a, b}, the move pending on B.
        let o = vote(&mut b, "a", &["a"], t0 + ms(100));
        assert!(o.granted);
        assert_eq!(o.holder, vec!["a", "b"]);
        assert!(o.detail.contains("waits"), "{}", o.detail);
        // B is left out of the pending move: denied whatever it asks.
        assert!(!vote(&mut b, "b", &["b"], t0 + ms(150)).granted);
        assert!(!vote(&mut b, "b", &["a", "b"], t0 + ms(160)).granted);
        // A renews; the move happens once B's grant (t0+10) has expired.
        let b_exp = t0 + ms(10) + hold_for(LEASE);
        let o = vote(&mut b, "a", &["a"], b_exp - ms(1));
        assert_eq!(o.holder, vec!["a", "b"]);
        let o = vote(&mut b, "a", &["a"], b_exp);
        assert!(o.granted);
        assert_eq!(o.holder, vec!["a"]);
        assert!(o.moved.is_some());
        assert!(!vote(&mut b, "b", &["b"], b_exp + ms(1)).granted);
        // Heal: A grows the partition, then B renews as a member.
        assert_eq!(
            vote(&mut b, "a", &["a", "b"], b_exp + ms(2)).holder,
            vec!["a", "b"]
        );
        assert!(vote(&mut b, "b", &["a", "b"], b_exp + ms(3)).granted);
    }

    #[test]
    fn an_outsider_claiming_the_holder_is_denied() {
        let (mut b, t0) = started();
        assert!(vote(&mut b, "a", &["a"], t0).granted);
        // B says it hears A, but A's grant is for {a} alone.
        assert!(!vote(&mut b, "b", &["a", "b"], t0 + ms(1)).granted);
    }

    /// The invariant under random schedules: every server whose grant is still counted
    /// (by the requester: lease from its send, minus the drift margin) is in the holder
    /// partition at that moment.
    #[test]
    fn random_schedules_keep_every_counted_grant_inside_the_holder() {
        use rand::{Rng, SeedableRng};
        let servers = ["a", "b", "c"];
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (mut b, t0) = started();
            let mut t = t0;
            // server -> (counted until)
            let mut counted: BTreeMap<&str, Instant> = BTreeMap::new();
            for _ in 0..300 {
                t += ms(rng.gen_range(0..400));
                let s = servers[rng.gen_range(0..3)];
                let mut p: Vec<&str> = servers
                    .iter()
                    .copied()
                    .filter(|x| *x == s || rng.gen_bool(0.5))
                    .collect();
                p.sort();
                // The request travels up to 50 ms.
                let sent = t;
                let arrive = t + ms(rng.gen_range(0..50));
                let o = vote(&mut b, s, &p, arrive);
                if o.granted {
                    counted.insert(s, sent + baton_providers::witness::caller_valid_for(LEASE));
                }
                counted.retain(|_, until| *until > arrive);
                let holder = b.clusters["c"].partition.clone();
                for srv in counted.keys() {
                    assert!(
                        holder.iter().any(|h| h == srv),
                        "seed {seed}: {srv} still counts a grant but the holder is {holder:?}"
                    );
                }
                t = arrive;
            }
        }
    }

    #[test]
    fn replays_are_refused_and_sessions_bounded() {
        let (mut b, t0) = started();
        assert!(b.check_seq("c", "a", "s1", 1, t0).is_ok());
        assert!(b.check_seq("c", "a", "s1", 2, t0).is_ok());
        assert_eq!(
            b.check_seq("c", "a", "s1", 2, t0).unwrap_err().code,
            "replayed"
        );
        assert_eq!(
            b.check_seq("c", "a", "s1", 1, t0).unwrap_err().code,
            "replayed"
        );
        // Another session of the same server has its own counter.
        assert!(b.check_seq("c", "a", "s2", 1, t0).is_ok());
        for i in 0..(MAX_SESSIONS as u64 + 10) {
            assert!(b
                .check_seq("c", "x", &format!("s{i}"), 1, t0 + ms(i))
                .is_ok());
        }
        assert!(b.clusters["c"].sessions.len() <= MAX_SESSIONS);
    }

    fn config(witness: &str) -> Config {
        let text = format!(
            "[cluster]\nname = \"orders\"\nkey_file = \"k\"\n\n\
             [[server]]\nname = \"a\"\ninterconnects = [\"10.0.0.1\"]\napi = \"10.0.0.1:7420\"\n\n\
             [[server]]\nname = \"b\"\ninterconnects = [\"10.0.0.2\"]\napi = \"10.0.0.2:7420\"\n\n\
             [quorum]\nwitness = {witness}\n"
        );
        let reg = baton_providers::default_registry();
        baton_core::config::load_str("baton.toml", &text, &crate::catalog::ProviderCatalog(&reg))
            .unwrap()
            .config
    }

    #[tokio::test]
    async fn factory_builds_the_configured_kind() {
        let k = ClusterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(witness_client(&config("{ kind = \"none\" }"), &k, None).is_none());
        let w = witness_client(
            &config("{ kind = \"http\", url = \"http://10.0.0.9:7430\" }"),
            &k,
            None,
        )
        .unwrap();
        assert_eq!(w.kind(), "http");
        let s3 =
            config("{ kind = \"s3\", bucket = \"b\", key = \"orders\", region = \"eu-west-1\" }");
        let ddb = config("{ kind = \"dynamodb\", table = \"t\" }");
        // A cloud witness without AWS clients is not built (and logged).
        assert!(witness_client(&s3, &k, None).is_none());
        assert!(witness_client(&ddb, &k, None).is_none());
        let aws = AwsClients::load(&baton_core::config::AwsSection {
            region: Some("us-east-1".into()),
            endpoint_url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(
            witness_client(&s3, &k, Some(aws.clone())).unwrap().kind(),
            "s3"
        );
        let d = witness_client(&ddb, &k, Some(aws)).unwrap();
        assert_eq!(d.kind(), "dynamodb");
        // The item defaults to the cluster name.
        assert!(format!("{d:?}").contains("item: \"orders\""), "{d:?}");
    }

    #[test]
    fn signatures() {
        let k = ClusterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let w = WitnessKey::from_cluster_key(&k);
        let sig = w.sign(b"body");
        assert!(w.verify(b"body", &sig));
        assert!(!w.verify(b"body!", &sig));
        assert!(!w.verify(b"body", "zz"));
        assert!(!w.verify(b"body", ""));
        let other = ClusterKey::from_bytes(b"another key another key another key").unwrap();
        assert!(!WitnessKey::from_cluster_key(&other).verify(b"body", &sig));
        // The witness key is not the API token.
        assert_ne!(hex::encode(w.0), k.api_token());
        assert!(!format!("{w:?}").contains(&hex::encode(w.0)));
    }

    #[test]
    fn per_cluster_keys_differ_and_round_trip_through_hex() {
        let k = ClusterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let a = WitnessKey::for_cluster(&k, "orders");
        let b = WitnessKey::for_cluster(&k, "billing");
        assert_ne!(a.0, b.0);
        assert_ne!(a.0, WitnessKey::from_cluster_key(&k).0);
        assert_eq!(WitnessKey::from_hex(&a.to_hex()).unwrap().0, a.0);
        assert!(WitnessKey::from_hex("abcd").is_none());
        assert!(WitnessKey::from_hex(&"zz".repeat(32)).is_none());
        // A derived keyring offers only the cluster's key, with its servers; a legacy
        // one derives the key of any cluster and accepts the v1 key.
        let keys = WitnessKeys::derived("orders", &["a", "b"], a.clone());
        let (c, servers) = keys.candidates(Some("orders"));
        assert_eq!(c.len(), 1);
        assert_eq!(servers.unwrap(), ["a", "b"]);
        assert!(keys.candidates(Some("billing")).0.is_empty());
        assert!(keys.candidates(None).0.is_empty());
        let legacy = WitnessKeys::legacy(k.clone());
        let (c, servers) = legacy.candidates(Some("billing"));
        assert!(servers.is_none());
        assert!(c.iter().any(|x| x.0 == b.0));
        assert!(c.iter().any(|x| x.0 == WitnessKey::from_cluster_key(&k).0));
    }

    #[test]
    fn witness_key_files_load_strictly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let hexkey = "ab".repeat(32);
        let good = write(
            "w.key",
            &format!(
                "cluster = \"orders\"\nservers = [\"a\", \"b\"]\nwitness_key = \"{hexkey}\"\n"
            ),
            0o600,
        );
        let (keys, warnings) = WitnessKeys::load(std::slice::from_ref(&good)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(keys.clusters().collect::<Vec<_>>(), ["orders"]);
        // Twice the same cluster with the same key, or with other servers.
        let again = write("w2.key", &std::fs::read_to_string(&good).unwrap(), 0o600);
        let e = WitnessKeys::load(&[good.clone(), again]).unwrap_err();
        assert_eq!(e.code(), "witness-key-duplicate-cluster");
        let rotated = |name: &str, servers: &str, byte: &str| {
            write(
                name,
                &format!(
                    "cluster = \"orders\"\nservers = {servers}\nwitness_key = \"{}\"\n",
                    byte.repeat(32)
                ),
                0o600,
            )
        };
        let other_servers = rotated("w3.key", "[\"a\", \"c\"]", "cd");
        let e = WitnessKeys::load(&[good.clone(), other_servers]).unwrap_err();
        assert_eq!(e.code(), "witness-key-duplicate-cluster");
        // A rotation: the same cluster and servers with a new key; both keys verify.
        let next = rotated("w4.key", "[\"a\", \"b\"]", "cd");
        let (keys, _) = WitnessKeys::load(&[good.clone(), next.clone()]).unwrap();
        let (c, servers) = keys.candidates(Some("orders"));
        assert_eq!(c.len(), 2);
        assert_eq!(servers.unwrap(), ["a", "b"]);
        // At most three.
        let (k3, k4) = (
            rotated("w5.key", "[\"a\", \"b\"]", "ef"),
            rotated("w6.key", "[\"a\", \"b\"]", "01"),
        );
        WitnessKeys::load(&[good.clone(), next.clone(), k3.clone()]).unwrap();
        let e = WitnessKeys::load(&[good.clone(), next, k3, k4]).unwrap_err();
        assert!(e.to_string().contains("already has 3"), "{e}");
        // Readable by others.
        let open = write("open.key", &std::fs::read_to_string(&good).unwrap(), 0o644);
        assert_eq!(
            WitnessKeys::load(&[open]).unwrap_err().code(),
            "witness-key-permissive"
        );
        for (name, text) in [
            (
                "short",
                "cluster = \"o\"\nservers = [\"a\"]\nwitness_key = \"abcd\"\n".to_string(),
            ),
            (
                "noservers",
                format!("cluster = \"o\"\nservers = []\nwitness_key = \"{hexkey}\"\n"),
            ),
            (
                "nocluster",
                format!("servers = [\"a\"]\nwitness_key = \"{hexkey}\"\n"),
            ),
            (
                "extra",
                format!("cluster = \"o\"\nservers = [\"a\"]\nwitness_key = \"{hexkey}\"\nx = 1\n"),
            ),
        ] {
            let p = write(name, &text, 0o600);
            assert_eq!(
                WitnessKeys::load(&[p]).unwrap_err().code(),
                "witness-key-invalid",
                "{name}"
            );
        }
        // A cluster key: accepted, deprecated.
        let ck = write(
            "cluster.key",
            "9f3c2a71e8b64d05c7a1f93e2b8d60a4471cd5e2",
            0o600,
        );
        let (keys, warnings) = WitnessKeys::load(&[ck]).unwrap();
        assert_eq!(keys.legacy.len(), 1);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("witness-cluster-key-deprecated")),
            "{warnings:?}"
        );
        // Bounded read.
        let big = write("big.key", &"x".repeat(70 * 1024), 0o600);
        assert_eq!(
            WitnessKeys::load(&[big]).unwrap_err().code(),
            "witness-key-invalid"
        );
    }
}
