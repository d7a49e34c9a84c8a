//! The authenticated heartbeat envelope.
//!
//! One heartbeat is one UDP datagram:
//!
//! ```text
//! "BTN1" (4) | version u8 (1) | mac (32) | body
//! version 1: body = JSON of Envelope<T>
//! version 2: body = raw DEFLATE (RFC 1951) of that JSON
//! "BTN1" (4) | 3 (1) | key id (4) | flags (1) | mac (32) | body
//! version 3: keyed; flags bit 0 = body is DEFLATE, bit 1 = body is encrypted
//!            (nonce (12) | ChaCha20-Poly1305 of the possibly compressed body), others 0
//! ```
//!
//! With `[heartbeat] encrypt` an agent sends version 3 with the encrypted flag: the
//! body is compressed (when that helps), then encrypted with a key derived from the
//! cluster key ([`ClusterKey::cipher_key`]) under a random nonce, the header as
//! associated data; the HMAC is over the encrypted body, so a forged datagram is
//! dropped before any decryption. Every agent decrypts what it receives whatever its own
//! setting, so encryption can be turned on one server after another.
//!
//! `mac` is HMAC-SHA256 with the cluster key over `magic | version | body` (versions 1
//! and 2) or `magic | 3 | key id | flags | body` (version 3), the body as sent,
//! compressed or not.
//!
//! # Key rotation
//!
//! During a key rotation an agent holds a ring of keys (`[cluster] key_file`, the one
//! it sends with, and `accept_key_files`). It then sends version 3, whose key id
//! ([`ClusterKey::key_id`], public) names the key the MAC was made with, and accepts a
//! datagram MAC'd with any key of its ring: a version-3 datagram is checked with the key
//! its id names (an id not in the ring is `unknown-key`, counted as forged), a version-1
//! or -2 datagram with each key in turn. Without `accept_key_files` an agent sends
//! versions 1 and 2 as before, so agents that predate version 3 keep hearing it; start
//! a rotation only once every agent speaks version 3. [`decode`] checks length, magic, version and the MAC
//! *before* inflating or parsing anything, so unauthenticated bytes never reach the
//! decompressor or the JSON parser. Inflating is bounded: a body that inflates beyond
//! [`MAX_BODY`] bytes is rejected (`bad-compression`) without allocating more.
//!
//! [`encode`] sends version 2 when the JSON is larger than [`COMPRESS_ABOVE`] and its
//! compressed form is smaller, version 1 otherwise (small heartbeats stay readable by
//! agents that predate version 2). `config check` bounds the *uncompressed* worst case
//! of a configuration's heartbeat (`baton_core::heartbeat`), so every heartbeat of an
//! accepted configuration fits in a datagram even where compression does not help.
//! An agent that predates version 2 rejects a version-2 datagram as `bad-version`
//! (counted as malformed, BTN-1110) and so does not hear a newer peer whose heartbeats
//! are compressed: upgrade such clusters (heartbeats over 1,200 bytes) in one go, or
//! expect the upgraded servers' votes to be missing on the old ones meanwhile.
//!
//! After decoding, a receiver checks the envelope's cluster name, sender and path and
//! then the sequence number against a [`ReplayGuard`]; [`Acceptor`] does all of this in
//! the right order and counts rejects in [`RejectCounters`].
//!
//! # Sequence numbers and replay
//!
//! A sender starts its sequence numbers from a base kept in its state directory
//! (`meta.json`, [`next_seq_base`]): each start stores base + 2^40, fsynced before the
//! first heartbeat, and adds one per datagram. A receiver accepts, per (sender, path),
//! only a sequence number strictly greater than the highest it has accepted. So a
//! restarted sender is accepted (its new numbers are above anything it sent before,
//! unless it sent 2^40 datagrams in one run), whatever its clock does, while a captured
//! datagram replayed later is dropped. Without a state directory record (first start,
//! wiped state) the base is the wall clock in microseconds ([`initial_seq`]), and a
//! persisted base is never below the wall clock either.
//!
//! The receiver keeps the highest values in memory only. After a receiver restarts,
//! datagrams captured before the restart pass this guard again, in increasing order,
//! until a genuine newer datagram of that sender arrives. They cannot give a vote: a
//! heartbeat echoes the incarnation of every server its sender hears (`PeerMessage::
//! heard`), every agent start has a new incarnation, and the engine counts a peer's vote
//! (and its acknowledgements of claims) only when the peer echoes the receiver's current
//! incarnation. What a replayed datagram can still do is make a dead peer look alive with
//! stale content, which only delays takeovers (docs/src/split-brain.md, "Replayed
//! heartbeats").

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use baton_core::engine::GroupReport;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key::{ClusterKey, Keys};

/// Datagram magic.
pub const MAGIC: &[u8; 4] = b"BTN1";
/// Wire format version: plain JSON body.
pub const VERSION: u8 = 1;
/// Wire format version: raw DEFLATE of the JSON body.
pub const VERSION_DEFLATE: u8 = 2;
/// Wire format version: key id and flags before the MAC (key rotation).
pub const VERSION_KEYED: u8 = 3;
/// Version-3 flag: the body is raw DEFLATE.
pub const FLAG_DEFLATE: u8 = 1;
/// Version-3 flag: the body is `nonce (12) | ChaCha20-Poly1305 ciphertext and tag` of the
/// (possibly compressed) body, keyed with [`ClusterKey::cipher_key`], the header as
/// associated data.
pub const FLAG_ENCRYPTED: u8 = 2;
/// Nonce and tag of an encrypted body.
pub const ENCRYPTION_OVERHEAD: usize = baton_core::heartbeat::ENCRYPTION_OVERHEAD;
/// Bytes before the body of a version-3 datagram: magic, version, key id, flags, mac.
pub const HEADER_LEN_KEYED: usize = MAGIC.len() + 1 + 4 + 1 + MAC_LEN;
/// Length of the MAC field.
pub const MAC_LEN: usize = 32;
/// Bytes before the body: magic, version, mac.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + MAC_LEN;
/// Largest datagram encoded or accepted (the bound `config check` applies).
pub const MAX_DATAGRAM: usize = baton_core::heartbeat::MAX_DATAGRAM;
/// Largest (uncompressed) JSON body: what fits in a version-1 datagram. A version-2
/// body never inflates beyond it.
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN;
/// JSON bodies up to this size are sent uncompressed (version 1): one datagram on any
/// path MTU (IPv6 guarantees 1,280), and readable by agents older than version 2.
pub const COMPRESS_ABOVE: usize = 1_200;
/// DEFLATE level: 6 is the usual default; heartbeats are small, the cost is microseconds.
const DEFLATE_LEVEL: u8 = 6;

/// The authenticated content of a heartbeat datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Cluster name; a node rejects envelopes of another cluster even with the same key.
    pub cluster: String,
    /// Sender's node name.
    pub from: String,
    /// Index of the heartbeat path (network) the datagram was sent on.
    pub path: u8,
    /// Sender's sequence number, see the module docs.
    pub seq: u64,
    /// Payload.
    pub body: T,
}

/// Why a datagram was rejected (or could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram too short: {len} bytes, header needs {HEADER_LEN}")]
    TooShort { len: usize },
    #[error("bad magic (not a Baton heartbeat)")]
    BadMagic,
    #[error("unsupported wire version {found} (this node speaks {VERSION}, {VERSION_DEFLATE} and {VERSION_KEYED})")]
    BadVersion { found: u8 },
    #[error("compressed body rejected: {reason}")]
    BadCompression { reason: String },
    #[error("MAC check failed (forged, corrupted, or sent with a different cluster key)")]
    BadMac,
    #[error("sent with key id {id}, which is not in this node's key ring (another cluster key, or a rotation step this node has not taken)")]
    UnknownKey { id: String },
    #[error("malformed envelope: {reason}")]
    Malformed { reason: String },
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    TooLarge { len: usize },
    #[error("replayed or reordered datagram from {from} on path {path}: seq {seq} <= last accepted {last}")]
    Replay {
        from: String,
        path: u8,
        seq: u64,
        last: u64,
    },
    #[error("datagram from unknown sender {from:?}")]
    UnknownSender { from: String },
    #[error("datagram for cluster {found:?}, this node is in cluster {expected:?}")]
    WrongCluster { expected: String, found: String },
    #[error("datagram claims path {claimed} but arrived on path {received}")]
    BadPath { claimed: u8, received: u8 },
}

impl WireError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::TooShort { .. } => "too-short",
            WireError::BadMagic => "bad-magic",
            WireError::BadVersion { .. } => "bad-version",
            WireError::BadCompression { .. } => "bad-compression",
            WireError::BadMac => "bad-mac",
            WireError::UnknownKey { .. } => "unknown-key",
            WireError::Malformed { .. } => "malformed",
            WireError::TooLarge { .. } => "too-large",
            WireError::Replay { .. } => "replay",
            WireError::UnknownSender { .. } => "unknown-sender",
            WireError::WrongCluster { .. } => "wrong-cluster",
            WireError::BadPath { .. } => "bad-path",
        }
    }
}

/// How [`encode_with`] chooses the wire version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Version 1 always.
    Never,
    /// Version 2 when the JSON is over [`COMPRESS_ABOVE`] bytes and compresses smaller.
    Auto,
    /// Version 2 whenever the compressed body is smaller than the JSON.
    Always,
}

/// Encode and authenticate an envelope ([`Compression::Auto`]).
pub fn encode<T: Serialize>(
    keys: &(impl Keys + ?Sized),
    env: &Envelope<T>,
) -> Result<Vec<u8>, WireError> {
    encode_with(keys, env, Compression::Auto)
}

/// Encode and authenticate an envelope with the ring's primary key: version 3 while the
/// ring accepts other keys (a rotation), versions 1 and 2 otherwise. Fails with
/// `too-large` only when the JSON is over [`MAX_BODY`] and its compressed form does not
/// fit either.
pub fn encode_with<T: Serialize>(
    keys: &(impl Keys + ?Sized),
    env: &Envelope<T>,
    compression: Compression,
) -> Result<Vec<u8>, WireError> {
    let json = serde_json::to_vec(env).map_err(|e| WireError::Malformed {
        reason: format!("cannot serialise envelope: {e}"),
    })?;
    seal_json(keys, json, compression)
}

/// [`encode_with`] of an envelope already serialised.
fn seal_json(
    keys: &(impl Keys + ?Sized),
    json: Vec<u8>,
    compression: Compression,
) -> Result<Vec<u8>, WireError> {
    let key = keys.primary();
    let want = match compression {
        Compression::Never => false,
        Compression::Auto => json.len() > COMPRESS_ABOVE,
        Compression::Always => true,
    };
    // A receiver inflates at most MAX_BODY bytes: a larger JSON is never compressed.
    let (version, body) = if want && json.len() <= MAX_BODY {
        let z = deflate(&json);
        if z.len() < json.len() {
            (VERSION_DEFLATE, z)
        } else {
            (VERSION, json)
        }
    } else {
        (VERSION, json)
    };
    if keys.accepted().is_empty() && !keys.encrypt() {
        seal(key, version, &body)
    } else {
        let mut flags = if version == VERSION_DEFLATE {
            FLAG_DEFLATE
        } else {
            0
        };
        if keys.encrypt() {
            flags |= FLAG_ENCRYPTED;
        }
        seal_keyed(key, flags, &body)
    }
}

/// The associated data of an encrypted body: the header before the MAC.
fn keyed_header(id: &[u8], flags: u8) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION_KEYED;
    h[5..9].copy_from_slice(id);
    h[9] = flags;
    h
}

fn seal_keyed(key: &ClusterKey, flags: u8, body: &[u8]) -> Result<Vec<u8>, WireError> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let extra = if flags & FLAG_ENCRYPTED != 0 {
        ENCRYPTION_OVERHEAD
    } else {
        0
    };
    let len = HEADER_LEN_KEYED + extra + body.len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    let id = key.key_id();
    let sealed;
    let body = if flags & FLAG_ENCRYPTED != 0 {
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.cipher_key().into());
        // A random 96-bit nonce per datagram: a repeat is as likely as a collision of
        // random 96-bit values (heartbeats number far below 2^32 per key).
        let nonce: [u8; 12] = rand::random();
        let header = keyed_header(&id, flags);
        let ct = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: body,
                    aad: &header,
                },
            )
            .map_err(|_| WireError::Malformed {
                reason: "cannot encrypt the heartbeat".into(),
            })?;
        sealed = [&nonce[..], &ct].concat();
        &sealed[..]
    } else {
        body
    };
    let mac = key.mac(&[MAGIC, &[VERSION_KEYED], &id, &[flags], body]);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION_KEYED);
    out.extend_from_slice(&id);
    out.push(flags);
    out.extend_from_slice(&mac);
    out.extend_from_slice(body);
    Ok(out)
}

fn seal(key: &ClusterKey, version: u8, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = HEADER_LEN + body.len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    let mac = key.mac(&[MAGIC, &[version], body]);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.extend_from_slice(&mac);
    out.extend_from_slice(body);
    Ok(out)
}

/// Decrypt an encrypted version-3 body (after its MAC was checked).
fn decrypt(key: &ClusterKey, header: &[u8], body: &[u8]) -> Result<Vec<u8>, WireError> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    if body.len() < ENCRYPTION_OVERHEAD {
        return Err(WireError::Malformed {
            reason: "encrypted body shorter than its nonce and tag".into(),
        });
    }
    let (nonce, ct) = body.split_at(12);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.cipher_key().into());
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| WireError::Malformed {
        reason: "bad nonce".into(),
    })?;
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ct,
                aad: header,
            },
        )
        .map_err(|_| WireError::Malformed {
            reason: "encrypted body does not decrypt".into(),
        })
}

thread_local! {
    /// One compressor per thread, reset for each body: a new one zeroes (and the
    /// allocator maps and unmaps) about 300 KB of state for every datagram sent.
    static DEFLATE: std::cell::RefCell<Option<Box<miniz_oxide::deflate::core::CompressorOxide>>> =
        const { std::cell::RefCell::new(None) };
}

/// `miniz_oxide::deflate::compress_to_vec(json, DEFLATE_LEVEL)` with a reused compressor
/// (the same bytes).
fn deflate(json: &[u8]) -> Vec<u8> {
    use miniz_oxide::deflate::core::{
        compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
    };
    DEFLATE.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return miniz_oxide::deflate::compress_to_vec(json, DEFLATE_LEVEL);
        };
        let c = slot.get_or_insert_with(|| {
            Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(
                DEFLATE_LEVEL.into(),
                0,
                0,
            )))
        });
        c.reset();
        let mut input = json;
        let mut out = vec![0; (json.len() / 2).max(2)];
        let mut at = 0;
        loop {
            let (status, read, wrote) = compress(c, input, &mut out[at..], TDEFLFlush::Finish);
            at += wrote;
            match status {
                TDEFLStatus::Done => {
                    out.truncate(at);
                    return out;
                }
                TDEFLStatus::Okay if read <= input.len() => {
                    input = &input[read..];
                    if out.len().saturating_sub(at) < 30 {
                        out.resize(out.len() * 2, 0);
                    }
                }
                // Not expected; the one-shot path then says what it does.
                _ => return miniz_oxide::deflate::compress_to_vec(json, DEFLATE_LEVEL),
            }
        }
    })
}

/// Inflate a version-2 body, never beyond [`MAX_BODY`] bytes.
fn inflate(body: &[u8]) -> Result<Vec<u8>, WireError> {
    use miniz_oxide::inflate::TINFLStatus;
    miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_BODY).map_err(|e| {
        let reason = match e.status {
            TINFLStatus::HasMoreOutput => format!("inflates beyond {MAX_BODY} bytes"),
            _ => format!("not valid DEFLATE data ({:?})", e.status),
        };
        WireError::BadCompression { reason }
    })
}

/// Authenticate a datagram and return its JSON (checks of [`decode`] but the parse).
fn open<'a>(
    keys: &(impl Keys + ?Sized),
    bytes: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, WireError> {
    let len = bytes.len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    if len < HEADER_LEN {
        return Err(WireError::TooShort { len });
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(WireError::BadMagic);
    }
    let (version, rest) = rest.split_at(1);
    let mut decrypted_owned: Option<Vec<u8>> = None;
    let compressed = match version[0] {
        VERSION | VERSION_DEFLATE => {
            let (mac, body) = rest.split_at(MAC_LEN);
            if !keys.all().any(|k| k.verify(&[MAGIC, version, body], mac)) {
                return Err(WireError::BadMac);
            }
            (version[0] == VERSION_DEFLATE, body)
        }
        VERSION_KEYED => {
            if len < HEADER_LEN_KEYED {
                return Err(WireError::TooShort { len });
            }
            let (id, rest) = rest.split_at(4);
            let (flags, rest) = rest.split_at(1);
            let (mac, body) = rest.split_at(MAC_LEN);
            let id4 = [id[0], id[1], id[2], id[3]];
            let Some(key) = keys.by_id(id4) else {
                return Err(WireError::UnknownKey {
                    id: hex::encode(id),
                });
            };
            if !key.verify(&[MAGIC, version, id, flags, body], mac) {
                return Err(WireError::BadMac);
            }
            if flags[0] & !(FLAG_DEFLATE | FLAG_ENCRYPTED) != 0 {
                return Err(WireError::Malformed {
                    reason: format!("unknown flags {:#04x}", flags[0]),
                });
            }
            if flags[0] & FLAG_ENCRYPTED != 0 {
                let d = decrypt(key, &keyed_header(id, flags[0]), body)?;
                decrypted_owned = Some(if flags[0] & FLAG_DEFLATE != 0 {
                    inflate(&d)?
                } else {
                    d
                });
                (false, &[][..])
            } else {
                (flags[0] & FLAG_DEFLATE != 0, body)
            }
        }
        found => return Err(WireError::BadVersion { found }),
    };
    let (compressed, body) = compressed;
    let json: std::borrow::Cow<'_, [u8]> = if compressed {
        std::borrow::Cow::Owned(inflate(body)?)
    } else if let Some(d) = decrypted_owned {
        std::borrow::Cow::Owned(d)
    } else {
        std::borrow::Cow::Borrowed(body)
    };
    Ok(json)
}

/// Authenticate and decode a datagram. Checks, in order: size, magic, version, MAC
/// (constant time; with the key a version-3 datagram names, else with each key of the
/// ring), then inflates a compressed body (bounded) and parses the JSON. Does *not*
/// check cluster, sender, path or replay: see [`Acceptor`].
pub fn decode<T: DeserializeOwned>(
    keys: &(impl Keys + ?Sized),
    bytes: &[u8],
) -> Result<Envelope<T>, WireError> {
    let json = open(keys, bytes)?;
    serde_json::from_slice(&json).map_err(|e| WireError::Malformed {
        reason: e.to_string(),
    })
}

/// Initial sequence number for a sender without a persisted base: wall-clock
/// microseconds since the Unix epoch.
///
/// This is the one sanctioned wall-clock read of the wire layer: it is not used for any
/// timing decision, only as the fallback of [`next_seq_base`] (see the module docs). A
/// clock before 1970 yields 1.
pub fn initial_seq() -> u64 {
    let micros = crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    u64::try_from(micros).unwrap_or(u64::MAX / 2).max(1)
}

/// Sequence numbers one run may use: the next start's base is at least this far above.
pub const SEQ_BASE_STEP: u64 = 1 << 40;

/// The sequence base of this start, from the one persisted by the previous start
/// (`None`: no state) and the wall clock (`wall`, [`initial_seq`]): previous + 2^40, and
/// never below the wall clock (so that a start after the state directory was wiped is
/// still likely to be above what the same server sent before).
pub fn next_seq_base(previous: Option<u64>, wall: u64) -> u64 {
    match previous {
        Some(p) => p.saturating_add(SEQ_BASE_STEP).max(wall),
        None => wall,
    }
}

/// An agent incarnation: the boot count in the high 32 bits (so that a later start of
/// the same state directory has a larger incarnation) and 32 random bits (so that two
/// starts never share one even if the state directory was wiped or restored).
pub fn incarnation(boot_count: u64, random: u32) -> u64 {
    ((boot_count & 0xffff_ffff) << 32) | u64::from(random)
}

/// Highest sequence number accepted per (sender, path).
///
/// Only feed it envelopes whose MAC, cluster and sender were already checked, so that
/// unauthenticated input cannot grow it.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    last: BTreeMap<String, BTreeMap<u8, u64>>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept `seq` only if it is strictly greater than the highest accepted for
    /// (`from`, `path`), and record it.
    pub fn check_and_record(&mut self, from: &str, path: u8, seq: u64) -> Result<(), WireError> {
        let paths = match self.last.get_mut(from) {
            Some(p) => p,
            None => self.last.entry(from.to_string()).or_default(),
        };
        match paths.get_mut(&path) {
            Some(last) if seq <= *last => Err(WireError::Replay {
                from: from.to_string(),
                path,
                seq,
                last: *last,
            }),
            Some(last) => {
                *last = seq;
                Ok(())
            }
            None => {
                paths.insert(path, seq);
                Ok(())
            }
        }
    }

    /// Highest accepted sequence number for (`from`, `path`).
    pub fn last(&self, from: &str, path: u8) -> Option<u64> {
        self.last.get(from)?.get(&path).copied()
    }

    /// Highest accepted sequence number from `from` on any path.
    pub fn newest(&self, from: &str) -> Option<u64> {
        self.last.get(from)?.values().copied().max()
    }

    /// Forget a sender (e.g. removed from the configuration).
    pub fn forget(&mut self, from: &str) {
        self.last.remove(from);
    }
}

/// Counts of rejected datagrams, by reason (exposed in status / metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectCounters {
    /// Bad MAC: forged, corrupted in transit, or another cluster key.
    pub forged: u64,
    pub replayed: u64,
    /// Too short, too large, bad magic, bad version, bad compression or unparsable JSON.
    pub malformed: u64,
    pub wrong_cluster: u64,
    pub unknown_sender: u64,
    pub bad_path: u64,
}

impl RejectCounters {
    /// Count one rejection.
    pub fn record(&mut self, err: &WireError) {
        let c = match err {
            WireError::BadMac | WireError::UnknownKey { .. } => &mut self.forged,
            WireError::Replay { .. } => &mut self.replayed,
            WireError::TooShort { .. }
            | WireError::BadMagic
            | WireError::BadVersion { .. }
            | WireError::BadCompression { .. }
            | WireError::Malformed { .. }
            | WireError::TooLarge { .. } => &mut self.malformed,
            WireError::WrongCluster { .. } => &mut self.wrong_cluster,
            WireError::UnknownSender { .. } => &mut self.unknown_sender,
            WireError::BadPath { .. } => &mut self.bad_path,
        };
        *c = c.saturating_add(1);
    }

    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        [
            self.forged,
            self.replayed,
            self.malformed,
            self.wrong_cluster,
            self.unknown_sender,
            self.bad_path,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The receive pipeline: decode (size, magic, version, MAC, JSON), then cluster name,
/// known sender, path, and replay, counting every rejection.
#[derive(Debug, Clone)]
pub struct Acceptor {
    cluster: String,
    peers: Vec<String>,
    guard: ReplayGuard,
    counters: RejectCounters,
    /// Per sender, the send (`seq - path`) and path of the last heartbeat parsed in
    /// full ([`Acceptor::accept_heartbeat`]).
    parsed: std::collections::HashMap<String, (u64, u8)>,
    /// Parse every datagram in full (a benchmark's reference).
    parse_every: bool,
    flatten: bool,
    /// This node's name (what peers' `gvs` echo about it); `None`: echoes are not read,
    /// so peers are never told to leave their reports out.
    me: Option<String>,
    /// Per sender, the group reports of its newest full body ("Group reports by change").
    held: std::collections::HashMap<String, HeldReports>,
    /// Per sender, the (incarnation, version) of this node's reports it says it holds.
    echoes: std::collections::HashMap<String, (u64, u64)>,
    /// Brief bodies dropped because their reports were not held.
    unknown: u64,
}

/// The group reports a receiver holds for one sender.
#[derive(Debug, Clone)]
struct HeldReports {
    incarnation: u64,
    tag: GroupsTag,
    groups: Vec<GroupReport>,
}

impl Acceptor {
    /// `peers`: the node names this node accepts heartbeats from (normally every other
    /// configured node; this node's own name is left out so looped-back multicast
    /// counts as `unknown-sender`).
    pub fn new(
        cluster: impl Into<String>,
        peers: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut peers: Vec<String> = peers.into_iter().map(Into::into).collect();
        peers.sort();
        peers.dedup();
        Acceptor {
            cluster: cluster.into(),
            peers,
            guard: ReplayGuard::new(),
            counters: RejectCounters::default(),
            parsed: std::collections::HashMap::new(),
            parse_every: false,
            flatten: false,
            me: None,
            held: std::collections::HashMap::new(),
            echoes: std::collections::HashMap::new(),
            unknown: 0,
        }
    }

    /// Read what peers say they hold of `me`'s group reports (their `gvs`), so that
    /// [`Acceptor::echoed`] can answer; see "Group reports by change".
    pub fn set_me(&mut self, me: impl Into<String>) {
        self.me = Some(me.into());
    }

    /// Decode and check a datagram received on path `received_on`.
    pub fn accept<T: DeserializeOwned>(
        &mut self,
        key: &(impl Keys + ?Sized),
        bytes: &[u8],
        received_on: u8,
    ) -> Result<Envelope<T>, WireError> {
        let r = self.check(key, bytes, received_on);
        if let Err(e) = &r {
            self.counters.record(e);
        }
        r
    }

    fn check<T: DeserializeOwned>(
        &mut self,
        key: &(impl Keys + ?Sized),
        bytes: &[u8],
        received_on: u8,
    ) -> Result<Envelope<T>, WireError> {
        let env: Envelope<T> = decode(key, bytes)?;
        self.admit(env, received_on)
    }

    /// The checks after decoding, for every kind of body: this cluster, a known sender,
    /// the path it came in on, not a replay (recorded).
    fn admit<T>(&mut self, env: Envelope<T>, received_on: u8) -> Result<Envelope<T>, WireError> {
        if env.cluster != self.cluster {
            return Err(WireError::WrongCluster {
                expected: self.cluster.clone(),
                found: env.cluster,
            });
        }
        if self.peers.binary_search(&env.from).is_err() {
            return Err(WireError::UnknownSender { from: env.from });
        }
        if env.path != received_on {
            return Err(WireError::BadPath {
                claimed: env.path,
                received: received_on,
            });
        }
        self.guard.check_and_record(&env.from, env.path, env.seq)?;
        Ok(env)
    }

    /// Highest sequence number accepted from `from` on any path (a sender numbers its
    /// packets across all paths, so a lower one was sent earlier).
    pub fn newest(&self, from: &str) -> Option<u64> {
        self.guard.newest(from)
    }

    /// Parse the body of every heartbeat datagram, repeats included (the reference of a
    /// benchmark).
    pub fn parse_every_datagram(&mut self) {
        self.parse_every = true;
        self.parsed.clear();
    }

    /// Parse bodies through serde's `flatten`, as before the one-pass parse (the
    /// reference of `BATON_BENCH_FLATTEN_PARSE=1 bash bench/scale.sh`).
    pub fn flatten_parse(&mut self) {
        self.flatten = true;
    }

    /// [`Acceptor::accept`] for a heartbeat, parsing its body only once per send: an
    /// agent sends the same message on every path in one go, numbering the datagrams
    /// in path order (`seq = first + path`), so `seq - path` names the send. The first
    /// datagram of a send to arrive is parsed in full; the others of that send (same
    /// sender, same `seq - path`, another path) only prove their path alive, and only
    /// their round-trip stamp is read ([`HeartbeatBody::Repeat`]). Every datagram is
    /// authenticated and checked as before (MAC, cluster, sender, path, replay).
    pub fn accept_heartbeat(
        &mut self,
        key: &(impl Keys + ?Sized),
        bytes: &[u8],
        received_on: u8,
    ) -> Result<Envelope<HeartbeatBody>, WireError> {
        let r = self.check_heartbeat(key, bytes, received_on);
        if let Err(e) = &r {
            self.counters.record(e);
        }
        r
    }

    fn check_heartbeat(
        &mut self,
        key: &(impl Keys + ?Sized),
        bytes: &[u8],
        received_on: u8,
    ) -> Result<Envelope<HeartbeatBody>, WireError> {
        let json = open(key, bytes)?;
        let mut de = serde_json::Deserializer::from_slice(&json);
        let env = serde::de::DeserializeSeed::deserialize(
            HeartbeatSeed {
                parsed: &self.parsed,
                flatten: self.flatten,
            },
            &mut de,
        )
        .and_then(|env| de.end().map(|()| env))
        .map_err(|e| WireError::Malformed {
            reason: e.to_string(),
        })?;
        let mut env = self.admit(env, received_on)?;
        let newest = self.guard.newest(&env.from) == Some(env.seq);
        if let HeartbeatBody::Full(t) = &mut env.body {
            if !self.groups_by_change(&env.from, t, newest) {
                self.unknown = self.unknown.saturating_add(1);
                env.body = HeartbeatBody::Unknown;
                return Ok(env);
            }
        }
        if matches!(env.body, HeartbeatBody::Full(_)) && !self.parse_every {
            let send = env.seq.wrapping_sub(u64::from(env.path));
            match self.parsed.get_mut(&env.from) {
                Some(v) => *v = (send, env.path),
                None => {
                    self.parsed.insert(env.from.clone(), (send, env.path));
                }
            }
        }
        Ok(env)
    }

    /// A full body's group reports: a brief one gets those held for its sender (false
    /// when they are not held: the body must be dropped), a complete one from the
    /// sender's newest send replaces them. Records what the sender says it holds of
    /// this node's reports.
    fn groups_by_change(
        &mut self,
        from: &str,
        t: &mut Timed<baton_core::engine::PeerMessage>,
        newest: bool,
    ) -> bool {
        let Some(tag) = t.gv.clone() else {
            // An agent that predates group reports by change: complete, no echo.
            if newest {
                self.held.remove(from);
                self.echoes.remove(from);
            }
            return true;
        };
        if tag.brief {
            let Some(h) = self
                .held
                .get(from)
                .filter(|h| h.incarnation == t.body.incarnation && h.tag.v == tag.v)
            else {
                return false;
            };
            let later = tag.at.saturating_sub(h.tag.at);
            t.body.groups = h.groups.clone();
            for r in &mut t.body.groups {
                r.state_ms = r.state_ms.saturating_add(later);
            }
        } else if newest && !self.flatten {
            let h = HeldReports {
                incarnation: t.body.incarnation,
                tag: GroupsTag {
                    brief: false,
                    ..tag
                },
                groups: t.body.groups.clone(),
            };
            match self.held.get_mut(from) {
                Some(old) => *old = h,
                None => {
                    self.held.insert(from.to_string(), h);
                }
            }
        }
        if newest {
            let echo = self
                .me
                .as_deref()
                .and_then(|me| t.gvs.as_ref()?.get(me).copied());
            match echo {
                Some(e) => {
                    self.echoes.insert(from.to_string(), e);
                }
                None => {
                    self.echoes.remove(from);
                }
            }
        }
        true
    }

    /// Per sender, the (incarnation, version) of the group reports this node holds: the
    /// `gvs` of its heartbeats. `None` while this node parses through serde's `flatten`
    /// (a benchmark's reference, which cannot read brief bodies).
    pub fn held(&self) -> Option<BTreeMap<String, (u64, u64)>> {
        if self.flatten {
            return None;
        }
        Some(
            self.held
                .iter()
                .map(|(k, h)| (k.clone(), (h.incarnation, h.tag.v)))
                .collect(),
        )
    }

    /// What `peer` last said it holds of this node's group reports (incarnation, version).
    pub fn echoed(&self, peer: &str) -> Option<(u64, u64)> {
        self.echoes.get(peer).copied()
    }

    /// Brief bodies dropped because this node did not hold their reports.
    pub fn unknown_reports(&self) -> u64 {
        self.unknown
    }

    pub fn counters(&self) -> &RejectCounters {
        &self.counters
    }

    pub fn guard(&self) -> &ReplayGuard {
        &self.guard
    }

    /// Replace the set of accepted peers (configuration reload); forgotten peers'
    /// replay state is dropped.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = impl Into<String>>) {
        let mut peers: Vec<String> = peers.into_iter().map(Into::into).collect();
        peers.sort();
        peers.dedup();
        for old in &self.peers {
            if peers.binary_search(old).is_err() {
                self.guard.forget(old);
                self.parsed.remove(old);
                self.held.remove(old);
                self.echoes.remove(old);
            }
        }
        self.peers = peers;
    }
}

// ---------------------------------------------------------------------------------------
// Group reports by change
// ---------------------------------------------------------------------------------------
//
// A heartbeat carries a report of every group of the configuration (90 % of its body at
// 50 groups), and in a steady cluster they do not change from one heartbeat to the next
// but for how long each group has been in its state. So:
//
// - a sender numbers its reports: the version (`gv.v`, from 1 in each incarnation) goes
//   up whenever a report changes in anything but the time it has been in its state
//   (compared as the time it entered it, so a state entered again counts as a change);
//   `gv.at` is the sender's clock (ms) when the message was made;
// - a receiver keeps the reports of each sender's newest complete body, and says in
//   its own heartbeats what it holds (`gvs`: sender -> (incarnation, version));
// - a sender leaves the reports out (`gv.brief`, no `groups` entry) only for a peer
//   whose newest heartbeat says it holds the sender's current incarnation and version;
//   every other peer, and every peer after a change, gets them complete;
// - a receiver completes a brief body with the reports it holds when they have that
//   incarnation and version (their times in state moved on by the difference of the two
//   `gv.at`), and otherwise drops the datagram as if it were lost
//   ([`HeartbeatBody::Unknown`]): it says what it holds in its next heartbeat and gets
//   complete reports from then on.
//
// So the engine receives exactly the messages the sender made, or loses some: the
// simulation's lossy network covers this. An agent that predates it sends no `gv` and
// no `gvs`, so it always gets complete reports; one that would receive a brief body
// rejects it (no `groups`: malformed) instead of misreading it.

/// The version of a sender's group reports ([`Timed::gv`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsTag {
    /// Goes up whenever a report changes (from 1 in each incarnation).
    pub v: u64,
    /// The sender's clock when the message was made, in ms (meaningful to the sender).
    pub at: u64,
    /// The body leaves the reports out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub brief: bool,
}

/// The sender's side: numbers its group reports.
#[derive(Debug, Clone, Default)]
pub struct GroupVersions {
    v: u64,
    at: u64,
    last: Vec<GroupReport>,
}

impl GroupVersions {
    pub fn new() -> GroupVersions {
        GroupVersions::default()
    }

    /// The tag of `groups`, made at `at` (ms): a new version when a report changed since
    /// the previous call.
    pub fn tag(&mut self, groups: &[GroupReport], at: u64) -> GroupsTag {
        let same = self.v > 0
            && groups.len() == self.last.len()
            && groups
                .iter()
                .zip(&self.last)
                .all(|(a, b)| same_report(a, at, b, self.at));
        if !same {
            self.v += 1;
            self.at = at;
            self.last = groups.to_vec();
        }
        GroupsTag {
            v: self.v,
            at,
            brief: false,
        }
    }
}

/// `a` (made at `a_at`) and `b` (made at `b_at`) say the same but for the time in state
/// ([`GroupReport::same_but_clock`]), and entered their state at the same time.
fn same_report(a: &GroupReport, a_at: u64, b: &GroupReport, b_at: u64) -> bool {
    a.same_but_clock(b) && a_at.saturating_sub(a.state_ms) == b_at.saturating_sub(b.state_ms)
}

/// Encode a body without its group reports for the peers that hold them: `env`'s
/// message must have no groups (they are left out of the JSON) and its `gv` must be
/// brief. `None` when the body cannot be made brief (then send the complete one).
pub fn encode_brief(
    keys: &(impl Keys + ?Sized),
    env: &Envelope<Timed<&baton_core::engine::PeerMessage>>,
) -> Option<Vec<u8>> {
    if !env.body.body.groups.is_empty() || !env.body.gv.as_ref().is_some_and(|g| g.brief) {
        return None;
    }
    let mut json = serde_json::to_vec(env).ok()?;
    // The message's first entries are a string and scalars, so the first `,"groups":[],"`
    // is its own: a quote inside a JSON string is always escaped (`\"`), never `,"`.
    const EMPTY: &[u8] = b",\"groups\":[],";
    let at = json.windows(EMPTY.len()).position(|w| w == EMPTY)?;
    json.drain(at..at + EMPTY.len() - 1);
    seal_json(keys, json, Compression::Auto).ok()
}

// ---------------------------------------------------------------------------------------
// Round-trip time of heartbeats
// ---------------------------------------------------------------------------------------

/// A heartbeat payload with an optional timestamp echo beside it.
///
/// `rtt` is flattened next to the payload's own fields, so the JSON stays a superset of
/// the plain payload: a receiver that does not know `rtt` ignores it, and a datagram
/// without it decodes with `rtt = None`.
///
/// `gv` and `gvs` carry group reports by change (see "Group reports by change" below),
/// beside the payload in the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed<T> {
    #[serde(flatten)]
    pub body: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStamp>,
    /// The version of the sender's group reports, and whether this body leaves them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gv: Option<GroupsTag>,
    /// Per sender, the (incarnation, version) of the group reports this node holds for
    /// it: a sender leaves its reports out only for a peer that holds its current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gvs: Option<BTreeMap<String, (u64, u64)>>,
}

impl<T> Timed<T> {
    /// A body with nothing beside the payload.
    pub fn plain(body: T) -> Timed<T> {
        Timed {
            body,
            rtt: None,
            gv: None,
            gvs: None,
        }
    }
}

/// A heartbeat's body as [`Acceptor::accept_heartbeat`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatBody {
    /// Parsed in full: the first datagram of its send to arrive.
    Full(Box<Timed<baton_core::engine::PeerMessage>>),
    /// Another datagram of a send already parsed in full (same message, another path):
    /// only its round-trip stamp.
    Repeat { rtt: Option<RttStamp> },
    /// A body without its group reports ([`GroupsTag::brief`]) whose reports this node
    /// does not hold (it restarted, or the sender's version moved on): not a message
    /// the engine may see. It is dropped like a lost datagram; the sender sends its
    /// reports again once this node's heartbeats say what it holds.
    Unknown,
}

/// Only the round-trip stamp of a heartbeat body (the rest is skipped unparsed).
#[derive(Deserialize)]
struct RttOnly {
    #[serde(default)]
    rtt: Option<RttStamp>,
}

/// Deserializes an envelope whose body is parsed in full unless it repeats the send
/// `parsed` names for its sender (the envelope's fields come before its body).
struct HeartbeatSeed<'a> {
    parsed: &'a std::collections::HashMap<String, (u64, u8)>,
    /// Through `flatten` (benchmark reference).
    flatten: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for HeartbeatSeed<'_> {
    type Value = Envelope<HeartbeatBody>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for HeartbeatSeed<'_> {
    type Value = Envelope<HeartbeatBody>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a heartbeat envelope")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Cluster,
            From,
            Path,
            Seq,
            Body,
            #[serde(other)]
            Other,
        }
        use serde::de::Error;
        let (mut cluster, mut from, mut path, mut seq, mut body) = (
            None::<String>,
            None::<String>,
            None::<u8>,
            None::<u64>,
            None,
        );
        while let Some(k) = map.next_key::<Field>()? {
            match k {
                Field::Cluster => cluster = Some(map.next_value()?),
                Field::From => from = Some(map.next_value()?),
                Field::Path => path = Some(map.next_value()?),
                Field::Seq => seq = Some(map.next_value()?),
                Field::Body => {
                    let repeat = match (&from, path, seq) {
                        (Some(f), Some(p), Some(q)) => {
                            self.parsed.get(f).is_some_and(|&(send, fp)| {
                                fp != p && send == q.wrapping_sub(u64::from(p))
                            })
                        }
                        _ => false,
                    };
                    body = Some(if repeat {
                        HeartbeatBody::Repeat {
                            rtt: map.next_value::<RttOnly>()?.rtt,
                        }
                    } else if self.flatten {
                        HeartbeatBody::Full(Box::new(map.next_value()?))
                    } else {
                        HeartbeatBody::Full(Box::new(map.next_value_seed(TimedMessageSeed)?))
                    });
                }
                Field::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Envelope {
            cluster: cluster.ok_or_else(|| A::Error::missing_field("cluster"))?,
            from: from.ok_or_else(|| A::Error::missing_field("from"))?,
            path: path.ok_or_else(|| A::Error::missing_field("path"))?,
            seq: seq.ok_or_else(|| A::Error::missing_field("seq"))?,
            body: body.ok_or_else(|| A::Error::missing_field("body"))?,
        })
    }
}

/// Parse a heartbeat body as [`Acceptor::accept_heartbeat`] does: the same result as
/// `serde_json::from_slice::<Timed<PeerMessage>>`, without serde's `flatten`.
pub fn parse_timed_message(
    json: &[u8],
) -> Result<Timed<baton_core::engine::PeerMessage>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let t = serde::de::DeserializeSeed::deserialize(TimedMessageSeed, &mut de)?;
    de.end()?;
    Ok(t)
}

/// `Timed<PeerMessage>` read in one pass. serde's `flatten` (the derived
/// `Deserialize` of [`Timed`]) first copies every value of the message into an
/// intermediate tree of owned strings and maps, then deserializes the message from that
/// copy: the costliest part of receiving a heartbeat. Here the message's own
/// `Deserialize` reads the map directly, and `rtt` is taken aside on the way.
struct TimedMessageSeed;

impl<'de> serde::de::DeserializeSeed<'de> for TimedMessageSeed {
    type Value = Timed<baton_core::engine::PeerMessage>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TimedMessageSeed {
    type Value = Timed<baton_core::engine::PeerMessage>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a heartbeat body")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut aside = Aside::default();
        let body = <baton_core::engine::PeerMessage as Deserialize>::deserialize(
            serde::de::value::MapAccessDeserializer::new(WireAside {
                inner: map,
                aside: &mut aside,
            }),
        )?;
        Ok(Timed {
            body,
            rtt: aside.rtt,
            gv: aside.gv,
            gvs: aside.gvs,
        })
    }
}

/// The wire's own entries of a body, taken aside while the message is parsed.
#[derive(Default)]
struct Aside {
    rtt: Option<RttStamp>,
    gv: Option<GroupsTag>,
    gvs: Option<BTreeMap<String, (u64, u64)>>,
    /// The body had a `groups` entry.
    groups: bool,
    /// A `groups` entry was supplied (empty) at the end of a brief body.
    supplied: bool,
}

/// The body's map as the message sees it: every entry but the wire's own (`rtt`, `gv`,
/// `gvs`), which go aside; a brief body (no `groups`) gets an empty `groups` at its end,
/// filled from the reports held for the sender ([`Acceptor::accept_heartbeat`]).
struct WireAside<'a, A> {
    inner: A,
    aside: &'a mut Aside,
}

/// A map key, borrowed from the datagram when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_string()))
    }
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for WireAside<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            if self.aside.supplied {
                return Ok(None);
            }
            let Some(key) = self.inner.next_key_seed(KeySeed)? else {
                if !self.aside.groups && self.aside.gv.as_ref().is_some_and(|g| g.brief) {
                    self.aside.supplied = true;
                    return seed
                        .deserialize(serde::de::IntoDeserializer::<A::Error>::into_deserializer(
                            "groups",
                        ))
                        .map(Some);
                }
                return Ok(None);
            };
            match key.as_str() {
                "rtt" => {
                    self.aside.rtt = self.inner.next_value()?;
                    continue;
                }
                "gv" => {
                    self.aside.gv = self.inner.next_value()?;
                    continue;
                }
                "gvs" => {
                    self.aside.gvs = self.inner.next_value()?;
                    continue;
                }
                "groups" => self.aside.groups = true,
                _ => {}
            }
            return seed
                .deserialize(serde::de::IntoDeserializer::<A::Error>::into_deserializer(
                    key.as_str(),
                ))
                .map(Some);
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        if self.aside.supplied {
            return seed.deserialize(serde::de::value::SeqDeserializer::<_, A::Error>::new(
                std::iter::empty::<u8>(),
            ));
        }
        self.inner.next_value_seed(seed)
    }
}

/// The sender's clock reading and, per peer, the last reading it received from that
/// peer on this path with how long it held it before this send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttStamp {
    /// Sender's monotonic clock, microseconds (meaningful only to the sender).
    pub t: u64,
    /// peer name → (that peer's `t`, microseconds between receiving it and this send).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub echo: BTreeMap<String, (u64, u64)>,
}

/// The tracker as the agent shares it between its sender and receiver tasks; `None`
/// when no round trip is measured (no metrics sink wants it).
pub type SharedRtt = Option<std::sync::Arc<std::sync::Mutex<RttTracker>>>;

/// [`RttTracker::stamp`] through a [`SharedRtt`].
pub fn rtt_stamp(t: &SharedRtt, path: u8, now_us: u64) -> Option<RttStamp> {
    let t = t.as_ref()?.lock().ok()?;
    Some(t.stamp(path, now_us))
}

/// [`RttTracker::observe`] through a [`SharedRtt`].
pub fn rtt_observe(
    t: &SharedRtt,
    me: &str,
    from: &str,
    path: u8,
    stamp: Option<&RttStamp>,
    now_us: u64,
) -> Option<f64> {
    let mut t = t.as_ref()?.lock().ok()?;
    t.observe(me, from, path, stamp?, now_us)
}

/// Echoes older than this are not sent back (the peer has gone quiet on the path).
const ECHO_MAX_AGE_US: u64 = 10_000_000;

/// Per path, the stamps to echo and the round trips measured. Times are this node's
/// monotonic microseconds, passed in by the caller (no clock read here).
///
/// Round trip = (now - our `t` echoed) - (the time the peer held it), so it does not
/// depend on the heartbeat interval nor on the two nodes' clocks agreeing.
#[derive(Debug, Clone, Default)]
pub struct RttTracker {
    /// (peer, path) → (peer's `t`, when we received it).
    seen: BTreeMap<(String, u8), (u64, u64)>,
    /// (peer, path) → our `t` last measured from, so a repeated echo counts once.
    measured: BTreeMap<(String, u8), u64>,
}

impl RttTracker {
    pub fn new() -> RttTracker {
        RttTracker::default()
    }

    /// The stamp to put in a heartbeat sent on `path` at `now_us`.
    pub fn stamp(&self, path: u8, now_us: u64) -> RttStamp {
        let echo = self
            .seen
            .iter()
            .filter(|((_, p), (_, at))| *p == path && now_us.saturating_sub(*at) <= ECHO_MAX_AGE_US)
            .map(|((peer, _), (t, at))| (peer.clone(), (*t, now_us.saturating_sub(*at))))
            .collect();
        RttStamp { t: now_us, echo }
    }

    /// A stamp arrived from `from` on `path` at `now_us`: remember it for echoing, and
    /// return the round trip in milliseconds if it echoes a new stamp of `me`.
    pub fn observe(
        &mut self,
        me: &str,
        from: &str,
        path: u8,
        stamp: &RttStamp,
        now_us: u64,
    ) -> Option<f64> {
        let key = (from.to_string(), path);
        self.seen.insert(key.clone(), (stamp.t, now_us));
        let (mine, held) = *stamp.echo.get(me)?;
        if self.measured.get(&key) == Some(&mine) || now_us < mine {
            return None;
        }
        self.measured.insert(key, mine);
        let rtt = (now_us - mine).checked_sub(held)?;
        Some(rtt as f64 / 1000.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(b"test cluster key, 32 bytes long!!").unwrap()
    }

    fn env(seq: u64) -> Envelope<serde_json::Value> {
        Envelope {
            cluster: "prod".into(),
            from: "node-a".into(),
            path: 0,
            seq,
            body: serde_json::json!({"groups": {"web": {"epoch": 7}}, "up": true}),
        }
    }

    #[test]
    fn round_trip() {
        let k = key();
        let e = env(42);
        let bytes = encode(&k, &e).unwrap();
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(bytes[4], VERSION);
        let d: Envelope<serde_json::Value> = decode(&k, &bytes).unwrap();
        assert_eq!(d, e);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let k = key();
        let bytes = encode(&k, &env(1)).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let err = decode::<serde_json::Value>(&k, &b).unwrap_err();
                let expected = match i {
                    0..=3 => "bad-magic",
                    // Version 1 with bit 1 flipped is version 3, whose key id (the first
                    // MAC bytes here) names no key of ours.
                    4 if VERSION ^ (1 << bit) == VERSION_KEYED => "unknown-key",
                    4 => "bad-version",
                    _ => "bad-mac",
                };
                assert_eq!(err.code(), expected, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_packets_are_rejected() {
        let k = key();
        let bytes = encode(&k, &env(1)).unwrap();
        for n in 0..bytes.len() {
            let err = decode::<serde_json::Value>(&k, &bytes[..n]).unwrap_err();
            let expected = if n < HEADER_LEN {
                "too-short"
            } else {
                "bad-mac"
            };
            assert_eq!(err.code(), expected, "len {n}");
        }
        // Appending bytes breaks the MAC too.
        let mut longer = bytes.clone();
        longer.push(b' ');
        assert_eq!(
            decode::<serde_json::Value>(&k, &longer).unwrap_err(),
            WireError::BadMac
        );
    }

    #[test]
    fn other_key_is_bad_mac() {
        let other = ClusterKey::from_bytes(b"some other cluster key of 32+ bytes").unwrap();
        let bytes = encode(&other, &env(1)).unwrap();
        assert_eq!(
            decode::<serde_json::Value>(&key(), &bytes).unwrap_err(),
            WireError::BadMac
        );
    }

    #[test]
    fn size_limits() {
        let k = key();
        let mut e = env(1);
        e.body = serde_json::Value::String("x".repeat(MAX_DATAGRAM));
        assert_eq!(encode(&k, &e).unwrap_err().code(), "too-large");
        let huge = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(
            decode::<serde_json::Value>(&k, &huge).unwrap_err().code(),
            "too-large"
        );
        // Exactly at the limit encodes and decodes.
        let empty = Envelope {
            body: serde_json::Value::String(String::new()),
            ..env(1)
        };
        let overhead = encode(&k, &empty).unwrap().len();
        e.body = serde_json::Value::String("y".repeat(MAX_DATAGRAM - overhead));
        let bytes = encode_with(&k, &e, Compression::Never).unwrap();
        assert_eq!(bytes.len(), MAX_DATAGRAM);
        assert_eq!(decode::<serde_json::Value>(&k, &bytes).unwrap(), e);
    }

    #[test]
    fn valid_mac_bad_json_is_malformed() {
        let k = key();
        for body in [&b""[..], b"{", b"null", b"{\"cluster\":1}", b"\xff\xfe"] {
            let mac = k.mac(&[MAGIC, &[VERSION], body]);
            let pkt = [&MAGIC[..], &[VERSION], &mac, body].concat();
            assert_eq!(
                decode::<serde_json::Value>(&k, &pkt).unwrap_err().code(),
                "malformed"
            );
        }
    }

    #[test]
    fn replay_guard() {
        let mut g = ReplayGuard::new();
        g.check_and_record("a", 0, 10).unwrap();
        assert_eq!(g.check_and_record("a", 0, 10).unwrap_err().code(), "replay");
        assert_eq!(g.check_and_record("a", 0, 9).unwrap_err().code(), "replay");
        g.check_and_record("a", 0, 11).unwrap();
        // Independent per path and per sender.
        g.check_and_record("a", 1, 5).unwrap();
        g.check_and_record("b", 0, 1).unwrap();
        assert_eq!(g.last("a", 0), Some(11));
        assert_eq!(g.last("a", 1), Some(5));
        g.forget("a");
        assert_eq!(g.last("a", 0), None);
        g.check_and_record("a", 0, 1).unwrap();
    }

    #[test]
    fn restarted_sender_is_accepted() {
        let mut g = ReplayGuard::new();
        let first = initial_seq();
        for s in first..first + 100 {
            g.check_and_record("a", 0, s).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let restarted = initial_seq();
        assert!(restarted > first + 99);
        g.check_and_record("a", 0, restarted).unwrap();
    }

    /// A datagram sealed with `version` around `body` (valid MAC).
    fn sealed(k: &ClusterKey, version: u8, body: &[u8]) -> Vec<u8> {
        let mac = k.mac(&[MAGIC, &[version], body]);
        [&MAGIC[..], &[version], &mac, body].concat()
    }

    #[test]
    fn version_2_round_trip_and_choice() {
        let k = key();
        // Small: version 1 (readable by older agents), even with Auto.
        let small = encode(&k, &env(1)).unwrap();
        assert_eq!(small[4], VERSION);
        // Large and repetitive: version 2, much smaller, decodes to the same envelope.
        let mut e = env(2);
        e.body = serde_json::json!({"groups": (0..200).map(|i| serde_json::json!({
            "name": format!("group-with-a-long-name-{i:03}"), "state": "online",
            "epoch": 12, "max_epoch": 12, "excluded": false})).collect::<Vec<_>>()});
        let plain = encode_with(&k, &e, Compression::Never).unwrap();
        let z = encode(&k, &e).unwrap();
        assert_eq!(plain[4], VERSION);
        assert_eq!(z[4], VERSION_DEFLATE);
        assert!(z.len() * 4 < plain.len(), "{} vs {}", z.len(), plain.len());
        assert_eq!(decode::<serde_json::Value>(&k, &z).unwrap(), e);
        assert_eq!(decode::<serde_json::Value>(&k, &plain).unwrap(), e);
        // Every bit flip of a version-2 datagram is rejected before inflating.
        for i in 0..z.len() {
            let mut b = z.clone();
            b[i] ^= 0x10;
            let code = decode::<serde_json::Value>(&k, &b).unwrap_err().code();
            let expected = match i {
                0..=3 => "bad-magic",
                4 => "bad-version",
                _ => "bad-mac",
            };
            assert_eq!(code, expected, "byte {i}");
        }
    }

    #[test]
    fn the_reused_compressor_gives_the_one_shot_bytes() {
        let bodies: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            br#"{"groups":[{"name":"g1","state":"online"}]}"#.repeat(200),
            (0..40_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ];
        for _ in 0..3 {
            for b in &bodies {
                let z = deflate(b);
                assert_eq!(z, miniz_oxide::deflate::compress_to_vec(b, DEFLATE_LEVEL));
                assert_eq!(inflate(&z).unwrap(), *b);
            }
        }
    }

    #[test]
    fn decompression_bomb_is_rejected() {
        let k = key();
        // 10 MB of JSON whitespace deflates to about 10 KB: authenticated, small on the
        // wire, huge inflated. Rejected without inflating past MAX_BODY.
        let huge = vec![b' '; 10 << 20];
        let z = miniz_oxide::deflate::compress_to_vec(&huge, 9);
        assert!(HEADER_LEN + z.len() < MAX_DATAGRAM, "{}", z.len());
        let pkt = sealed(&k, VERSION_DEFLATE, &z);
        let err = decode::<serde_json::Value>(&k, &pkt).unwrap_err();
        assert_eq!(err.code(), "bad-compression", "{err}");
        assert!(err.to_string().contains("inflates beyond"), "{err}");
        // One byte over the limit is rejected; exactly at it is inflated (and parsed).
        let mut at = serde_json::to_vec(&env(4)).unwrap();
        at.resize(MAX_BODY, b' ');
        let ok = sealed(
            &k,
            VERSION_DEFLATE,
            &miniz_oxide::deflate::compress_to_vec(&at, 6),
        );
        assert_eq!(decode::<serde_json::Value>(&k, &ok).unwrap(), env(4));
        at.push(b' ');
        let over = sealed(
            &k,
            VERSION_DEFLATE,
            &miniz_oxide::deflate::compress_to_vec(&at, 6),
        );
        assert_eq!(
            decode::<serde_json::Value>(&k, &over).unwrap_err().code(),
            "bad-compression"
        );
        // Garbage that is not DEFLATE data, authenticated: bad-compression, counted as
        // malformed.
        let junk = sealed(&k, VERSION_DEFLATE, b"\xff\xff\xff\xff not deflate");
        let err = decode::<serde_json::Value>(&k, &junk).unwrap_err();
        assert_eq!(err.code(), "bad-compression");
        let mut c = RejectCounters::default();
        c.record(&err);
        assert_eq!(c.malformed, 1);
        // A bomb with a forged MAC never reaches the decompressor.
        let mut forged = pkt.clone();
        forged[HEADER_LEN - 1] ^= 1;
        assert_eq!(
            decode::<serde_json::Value>(&k, &forged).unwrap_err().code(),
            "bad-mac"
        );
    }

    #[test]
    fn sequence_base_and_incarnation() {
        // No state: the wall clock. With state: 2^40 above the previous base, even when
        // the clock stepped back; never below the wall clock.
        assert_eq!(next_seq_base(None, 1_000), 1_000);
        assert_eq!(next_seq_base(Some(5), 1_000), 5 + SEQ_BASE_STEP);
        assert_eq!(next_seq_base(Some(5), 1), 5 + SEQ_BASE_STEP);
        assert_eq!(next_seq_base(Some(5), SEQ_BASE_STEP * 3), SEQ_BASE_STEP * 3);
        assert_eq!(next_seq_base(Some(u64::MAX - 1), 0), u64::MAX);
        let mut g = ReplayGuard::new();
        let wall = initial_seq();
        let first = next_seq_base(None, wall);
        g.check_and_record("a", 0, first + 1_000_000).unwrap();
        // The clock stepped back a day across the restart: still accepted.
        let second = next_seq_base(Some(first), wall - 86_400_000_000);
        g.check_and_record("a", 0, second + 1).unwrap();
        // Incarnations grow with the boot count and differ within one.
        assert!(incarnation(2, 0) > incarnation(1, u32::MAX));
        assert_ne!(incarnation(1, 7), incarnation(1, 8));
        assert_eq!(incarnation(1, 7) >> 32, 1);
    }

    fn peer_msg(incarnation: u64) -> baton_core::engine::PeerMessage {
        baton_core::engine::PeerMessage {
            digest: "d".into(),
            incarnation,
            ready: true,
            quorum: true,
            refused: false,
            leaving: false,
            groups: Vec::new(),
            intents: Default::default(),
            hears: vec!["node-b".into()],
            heard: None,
            heard_ago: None,
            vote: true,
            marks: Default::default(),
        }
    }

    /// One send: the same message on paths 0 and 1 with consecutive numbers.
    fn hb(seq: u64, path: u8, incarnation: u64, t: u64) -> Vec<u8> {
        encode(
            &key(),
            &Envelope {
                cluster: "prod".into(),
                from: "node-a".into(),
                path,
                seq,
                body: Timed {
                    body: &peer_msg(incarnation),
                    rtt: Some(RttStamp {
                        t,
                        echo: BTreeMap::new(),
                    }),
                    gv: None,
                    gvs: None,
                },
            },
        )
        .unwrap()
    }

    fn report(name: &str, state: GroupState, epoch: u64, state_ms: u64) -> GroupReport {
        GroupReport {
            name: name.into(),
            state,
            epoch,
            max_epoch: epoch,
            excluded: false,
            seen_holder: Some(("node-a".into(), epoch)),
            state_ms,
            ack: None,
        }
    }

    use baton_core::engine::GroupState;

    /// A heartbeat of node-a made at `at` ms with `groups`, complete or brief, telling
    /// what it holds of node-b's reports (`gvs`).
    fn hb_groups(
        seq: u64,
        path: u8,
        incarnation: u64,
        groups: Vec<GroupReport>,
        tag: GroupsTag,
        gvs: Option<BTreeMap<String, (u64, u64)>>,
    ) -> Vec<u8> {
        let mut msg = peer_msg(incarnation);
        msg.groups = groups;
        let env = Envelope {
            cluster: "prod".into(),
            from: "node-a".into(),
            path,
            seq,
            body: Timed {
                body: &msg,
                rtt: None,
                gv: Some(tag.clone()),
                gvs,
            },
        };
        if tag.brief {
            encode_brief(&key(), &env).expect("a brief body")
        } else {
            encode(&key(), &env).unwrap()
        }
    }

    #[test]
    fn group_versions_change_with_the_reports_not_with_the_time_in_state() {
        let mut v = GroupVersions::new();
        let g = |ms_web, ms_db| {
            vec![
                report("web", GroupState::Online, 3, ms_web),
                report("db", GroupState::Offline, 1, ms_db),
            ]
        };
        assert_eq!(v.tag(&g(100, 50), 1_000).v, 1);
        // 200 ms later, both 200 ms longer in their states: the same reports.
        let t = v.tag(&g(300, 250), 1_200);
        assert_eq!((t.v, t.at, t.brief), (1, 1_200, false));
        // web entered its state again (a restart in place): a change.
        assert_eq!(v.tag(&g(10, 450), 1_400).v, 2);
        // Any field: an acknowledgement, an epoch, a group more.
        let mut acked = g(210, 650);
        acked[1].ack = Some(("node-c".into(), 2));
        assert_eq!(v.tag(&acked, 1_600).v, 3);
        let mut newer = acked.clone();
        for r in &mut newer {
            r.state_ms += 200;
        }
        assert_eq!(v.tag(&newer, 1_800).v, 3);
        newer[0].epoch = 4;
        assert_eq!(v.tag(&newer, 1_800).v, 4);
        newer.push(report("mail", GroupState::Offline, 0, 0));
        assert_eq!(v.tag(&newer, 1_800).v, 5);
        assert_eq!(v.tag(&[], 1_800).v, 6);
        assert_eq!(v.tag(&[], 2_000).v, 6);
    }

    #[test]
    fn a_brief_body_is_completed_with_the_reports_held_or_dropped_as_lost() {
        let k = key();
        let mut acc = Acceptor::new("prod", ["node-a"]);
        acc.set_me("node-b");
        let groups = vec![
            report("web", GroupState::Online, 3, 1_000),
            report("db", GroupState::Offline, 1, 20),
        ];
        let tag = |v, at, brief| GroupsTag { v, at, brief };
        let echo = |inc, v| Some(BTreeMap::from([("node-b".to_string(), (inc, v))]));
        // Nothing held yet: a brief body is dropped, and its other path's copy is not
        // taken for a repeat of a delivered message.
        let b = hb_groups(10, 0, 7, vec![], tag(1, 5_000, true), None);
        assert_eq!(
            acc.accept_heartbeat(&k, &b, 0).unwrap().body,
            HeartbeatBody::Unknown
        );
        let b = hb_groups(11, 1, 7, vec![], tag(1, 5_000, true), None);
        assert_eq!(
            acc.accept_heartbeat(&k, &b, 1).unwrap().body,
            HeartbeatBody::Unknown
        );
        assert_eq!(acc.unknown_reports(), 2);
        assert_eq!(acc.held(), Some(BTreeMap::new()));
        // A complete body: delivered as is, held, and node-a's echo of node-b's reports.
        let b = hb_groups(12, 0, 7, groups.clone(), tag(1, 5_200, false), echo(9, 4));
        let HeartbeatBody::Full(t) = acc.accept_heartbeat(&k, &b, 0).unwrap().body else {
            panic!("complete body")
        };
        assert_eq!(t.body.groups, groups);
        assert_eq!(
            acc.held(),
            Some(BTreeMap::from([("node-a".to_string(), (7, 1))]))
        );
        assert_eq!(acc.echoed("node-a"), Some((9, 4)));
        // Brief, same version, 400 ms later: the held reports, 400 ms longer in state.
        let b = hb_groups(14, 0, 7, vec![], tag(1, 5_600, true), echo(9, 5));
        let HeartbeatBody::Full(t) = acc.accept_heartbeat(&k, &b, 0).unwrap().body else {
            panic!("completed body")
        };
        let mut later = groups.clone();
        later[0].state_ms = 1_400;
        later[1].state_ms = 420;
        assert_eq!(t.body.groups, later);
        assert_eq!(t.gv, Some(tag(1, 5_600, true)));
        assert_eq!(acc.echoed("node-a"), Some((9, 5)));
        // Its copy on path 1 is a repeat as before.
        let b = hb_groups(15, 1, 7, vec![], tag(1, 5_600, true), echo(9, 5));
        assert!(matches!(
            acc.accept_heartbeat(&k, &b, 1).unwrap().body,
            HeartbeatBody::Repeat { .. }
        ));
        // A version this node does not hold (the complete body was lost): dropped.
        let b = hb_groups(16, 0, 7, vec![], tag(2, 5_800, true), None);
        assert_eq!(
            acc.accept_heartbeat(&k, &b, 0).unwrap().body,
            HeartbeatBody::Unknown
        );
        // Another incarnation with the same version (the sender restarted): dropped.
        let b = hb_groups(18, 0, 8, vec![], tag(1, 100, true), None);
        assert_eq!(
            acc.accept_heartbeat(&k, &b, 0).unwrap().body,
            HeartbeatBody::Unknown
        );
        // An older send's complete body overtaken on the other path does not replace the
        // newer reports held.
        let b = hb_groups(20, 0, 7, groups.clone(), tag(3, 6_000, false), None);
        assert!(matches!(
            acc.accept_heartbeat(&k, &b, 0).unwrap().body,
            HeartbeatBody::Full(_)
        ));
        let b = hb_groups(19, 1, 7, groups.clone(), tag(2, 5_800, false), None);
        assert!(matches!(
            acc.accept_heartbeat(&k, &b, 1).unwrap().body,
            HeartbeatBody::Full(_)
        ));
        assert_eq!(
            acc.held(),
            Some(BTreeMap::from([("node-a".to_string(), (7, 3))]))
        );
        // No echo in the newest body: none recorded.
        assert_eq!(acc.echoed("node-a"), None);
        // A complete body from an agent that predates versions: nothing held any more.
        let b = hb(22, 0, 7, 0);
        assert!(matches!(
            acc.accept_heartbeat(&k, &b, 0).unwrap().body,
            HeartbeatBody::Full(_)
        ));
        assert_eq!(acc.held(), Some(BTreeMap::new()));
        // Dropping brief bodies is not a rejection.
        assert_eq!(acc.counters().total(), 0);
    }

    #[test]
    fn a_brief_body_has_no_groups_entry_so_older_agents_reject_it() {
        let b = hb_groups(
            10,
            0,
            7,
            vec![],
            GroupsTag {
                v: 1,
                at: 0,
                brief: true,
            },
            None,
        );
        // What an agent that predates versions does with it: `groups` is missing.
        let e = decode::<Timed<baton_core::engine::PeerMessage>>(&key(), &b).unwrap_err();
        assert_eq!(e.code(), "malformed");
        assert!(e.to_string().contains("groups"), "{e}");
        // The operator intents' own `groups` map is kept.
        let json = open(&key(), &b).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v["body"].get("groups").is_none());
        assert!(v["body"]["intents"].get("groups").is_some());
        // Only a message without groups and with a brief tag is made brief.
        let msg = peer_msg(7);
        let mut env = Envelope {
            cluster: "prod".into(),
            from: "node-a".into(),
            path: 0,
            seq: 1,
            body: Timed {
                body: &msg,
                rtt: None,
                gv: Some(GroupsTag {
                    v: 1,
                    at: 0,
                    brief: false,
                }),
                gvs: None,
            },
        };
        assert!(encode_brief(&key(), &env).is_none());
        env.body.gv = None;
        assert!(encode_brief(&key(), &env).is_none());
        let mut with = peer_msg(7);
        with.groups = vec![report("web", GroupState::Online, 3, 0)];
        let env = Envelope {
            body: Timed {
                body: &with,
                rtt: None,
                gv: Some(GroupsTag {
                    v: 1,
                    at: 0,
                    brief: true,
                }),
                gvs: None,
            },
            ..env
        };
        assert!(encode_brief(&key(), &env).is_none());
    }

    #[test]
    fn a_parser_through_flatten_never_asks_for_brief_bodies() {
        let mut acc = Acceptor::new("prod", ["node-a"]);
        acc.set_me("node-b");
        assert_eq!(acc.held(), Some(BTreeMap::new()));
        acc.flatten_parse();
        assert_eq!(acc.held(), None);
    }

    #[test]
    fn a_heartbeat_is_parsed_once_per_send_and_its_repeats_keep_their_checks() {
        let k = key();
        let mut acc = Acceptor::new("prod", ["node-a", "node-b"]);
        let full = |b: &HeartbeatBody| match b {
            HeartbeatBody::Full(t) => Some(t.body.incarnation),
            HeartbeatBody::Repeat { .. } | HeartbeatBody::Unknown => None,
        };
        // Send 10 (seq 10 on path 0, 11 on path 1), in order.
        let e = acc.accept_heartbeat(&k, &hb(10, 0, 1, 100), 0).unwrap();
        assert_eq!(full(&e.body), Some(1));
        let e = acc.accept_heartbeat(&k, &hb(11, 1, 1, 101), 1).unwrap();
        assert_eq!(
            e.body,
            HeartbeatBody::Repeat {
                rtt: Some(RttStamp {
                    t: 101,
                    echo: BTreeMap::new()
                })
            }
        );
        // Send 12, path 1 first: it is the one parsed; then path 0 is the repeat.
        let e = acc.accept_heartbeat(&k, &hb(13, 1, 2, 0), 1).unwrap();
        assert_eq!(full(&e.body), Some(2));
        let e = acc.accept_heartbeat(&k, &hb(12, 0, 2, 0), 0).unwrap();
        assert_eq!(full(&e.body), None);
        // The next send is parsed again even if a datagram of it is lost.
        let e = acc.accept_heartbeat(&k, &hb(15, 1, 3, 0), 1).unwrap();
        assert_eq!(full(&e.body), Some(3));
        // A repeat is still authenticated and replay-checked.
        let mut forged = hb(14, 0, 3, 0);
        let n = forged.len();
        forged[n - 2] ^= 1;
        assert_eq!(
            acc.accept_heartbeat(&k, &forged, 0).unwrap_err().code(),
            "bad-mac"
        );
        assert_eq!(
            acc.accept_heartbeat(&k, &hb(13, 1, 2, 0), 1)
                .unwrap_err()
                .code(),
            "replay"
        );
        // What a receiver that parses everything gets is the same message.
        let plain: Envelope<Timed<baton_core::engine::PeerMessage>> =
            decode(&k, &hb(16, 0, 4, 9)).unwrap();
        let e = acc.accept_heartbeat(&k, &hb(16, 0, 4, 9), 0).unwrap();
        match e.body {
            HeartbeatBody::Full(t) => assert_eq!(*t, plain.body),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn acceptor_checks_and_counts() {
        let k = key();
        let mut acc = Acceptor::new("prod", ["node-a", "node-b"]);
        let ok = encode(&k, &env(5)).unwrap();
        assert_eq!(acc.accept::<serde_json::Value>(&k, &ok, 0).unwrap().seq, 5);
        // Replay of the same datagram.
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &ok, 0)
                .unwrap_err()
                .code(),
            "replay"
        );
        // Arrived on the wrong path (checked before replay, so the guard is untouched).
        let p = encode(&k, &env(6)).unwrap();
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &p, 1)
                .unwrap_err()
                .code(),
            "bad-path"
        );
        assert_eq!(acc.accept::<serde_json::Value>(&k, &p, 0).unwrap().seq, 6);
        // Wrong cluster, unknown sender.
        let wc = encode(
            &k,
            &Envelope {
                cluster: "test".into(),
                ..env(7)
            },
        )
        .unwrap();
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &wc, 0)
                .unwrap_err()
                .code(),
            "wrong-cluster"
        );
        let us = encode(
            &k,
            &Envelope {
                from: "mallory".into(),
                ..env(7)
            },
        )
        .unwrap();
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &us, 0)
                .unwrap_err()
                .code(),
            "unknown-sender"
        );
        // Forged and garbage.
        let mut f = encode(&k, &env(8)).unwrap();
        let last = f.len() - 1;
        f[last] ^= 0x20;
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &f, 0)
                .unwrap_err()
                .code(),
            "bad-mac"
        );
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, b"hello", 0)
                .unwrap_err()
                .code(),
            "too-short"
        );
        let c = *acc.counters();
        assert_eq!(
            c,
            RejectCounters {
                forged: 1,
                replayed: 1,
                malformed: 1,
                wrong_cluster: 1,
                unknown_sender: 1,
                bad_path: 1
            }
        );
        assert_eq!(c.total(), 6);
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["wrong_cluster"], 1);

        acc.set_peers(["node-b"]);
        assert_eq!(acc.guard().last("node-a", 0), None);
        assert_eq!(
            acc.accept::<serde_json::Value>(&k, &encode(&k, &env(9)).unwrap(), 0)
                .unwrap_err()
                .code(),
            "unknown-sender"
        );
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            WireError::TooShort { len: 0 },
            WireError::BadMagic,
            WireError::BadVersion { found: 3 },
            WireError::BadCompression {
                reason: String::new(),
            },
            WireError::BadMac,
            WireError::Malformed {
                reason: String::new(),
            },
            WireError::TooLarge { len: 0 },
            WireError::Replay {
                from: String::new(),
                path: 0,
                seq: 0,
                last: 0,
            },
            WireError::UnknownSender {
                from: String::new(),
            },
            WireError::WrongCluster {
                expected: String::new(),
                found: String::new(),
            },
            WireError::BadPath {
                claimed: 0,
                received: 1,
            },
        ];
        let mut codes: Vec<_> = all.iter().map(WireError::code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn timed_payload_is_a_superset_of_the_plain_one() {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        struct P {
            a: u32,
        }
        let plain = serde_json::to_string(&P { a: 1 }).unwrap();
        let t: Timed<P> = serde_json::from_str(&plain).unwrap();
        assert_eq!(
            t,
            Timed {
                body: P { a: 1 },
                rtt: None,
                gv: None,
                gvs: None,
            }
        );
        let stamped = Timed {
            body: P { a: 2 },
            rtt: Some(RttStamp {
                t: 5,
                echo: BTreeMap::new(),
            }),
            gv: None,
            gvs: None,
        };
        let text = serde_json::to_string(&stamped).unwrap();
        assert_eq!(text, r#"{"a":2,"rtt":{"t":5}}"#);
        // An agent that does not know `rtt` still reads the payload.
        let p: P = serde_json::from_str(&text).unwrap();
        assert_eq!(p, P { a: 2 });
        assert_eq!(serde_json::from_str::<Timed<P>>(&text).unwrap(), stamped);
    }

    #[test]
    fn the_one_pass_body_parse_equals_the_flattened_one() {
        use baton_core::engine::PeerMessage;
        let msg: PeerMessage = serde_json::from_value(serde_json::json!({
            "digest": "d", "incarnation": 7, "ready": true, "quorum": true,
            "refused": false, "leaving": false,
            "groups": [{"name": "web", "state": "online", "epoch": 3, "max_epoch": 3,
                        "excluded": false, "seen_holder": ["node-1", 3], "ack": null}],
            "intents": serde_json::to_value(baton_core::engine::Intents::default()).unwrap(),
            "hears": ["node-2"], "heard": {"node-2": 9}, "heard_ago": {"node-2": 40},
            "marks": {"web/data": 2}
        }))
        .unwrap();
        let stamp = RttStamp {
            t: 11,
            echo: [("node-2".to_string(), (5, 6))].into_iter().collect(),
        };
        for rtt in [None, Some(stamp)] {
            let t = Timed {
                body: msg.clone(),
                rtt,
                gv: None,
                gvs: None,
            };
            let text = serde_json::to_string(&t).unwrap();
            let flat: Timed<PeerMessage> = serde_json::from_str(&text).unwrap();
            assert_eq!(parse_timed_message(text.as_bytes()).unwrap(), flat);
            assert_eq!(flat, t);
            // `rtt` first, and a key with an escape, read the same.
            if let Some(r) = &t.rtt {
                let mut v = serde_json::to_value(&t.body).unwrap();
                let obj = v.as_object_mut().unwrap();
                obj.remove("digest");
                let rest = serde_json::to_string(&v).unwrap();
                let moved = format!(
                    "{{\"rtt\":{},\"dig\\u0065st\":\"d\",{}",
                    serde_json::to_string(r).unwrap(),
                    &rest[1..]
                );
                assert_eq!(parse_timed_message(moved.as_bytes()).unwrap(), t);
            }
        }
        // Not a message: an error, as before.
        assert!(parse_timed_message(b"{\"rtt\":{\"t\":1}}").is_err());
        assert!(parse_timed_message(b"[1]").is_err());
    }

    #[test]
    fn round_trip_subtracts_the_time_the_peer_held_the_stamp() {
        let mut a = RttTracker::new();
        let mut b = RttTracker::new();
        // a sends at 1000 us; b receives at b-time 50_000 (clocks differ).
        let s1 = a.stamp(0, 1_000);
        assert!(b.observe("b", "a", 0, &s1, 50_000).is_none());
        // b sends on path 0 at b-time 80_000 (held 30 ms); a receives at 31_800.
        let s2 = b.stamp(0, 80_000);
        assert_eq!(s2.echo["a"], (1_000, 30_000));
        let rtt = a.observe("a", "b", 0, &s2, 31_800).unwrap();
        assert!((rtt - 0.8).abs() < 1e-9, "{rtt}");
        // The same echo again (b sent before hearing from a anew) is not counted twice.
        let s3 = b.stamp(0, 90_000);
        assert!(a.observe("a", "b", 0, &s3, 41_900).is_none());
        // Another path is measured on its own.
        assert!(b.stamp(1, 90_000).echo.is_empty());
        // Stale stamps are not echoed.
        assert!(b.stamp(0, 50_000 + ECHO_MAX_AGE_US + 1).echo.is_empty());
    }
}
