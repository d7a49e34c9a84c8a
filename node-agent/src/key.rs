//! The shared cluster key.
//!
//! Every node of a cluster holds the same key file. The key authenticates heartbeat
//! datagrams (see [`crate::wire`]) and derives the bearer token of the HTTP API
//! ([`ClusterKey::api_token`]), used by the operator CLI and by peers.
//!
//! The key is the raw content of the file with surrounding whitespace trimmed: it is
//! *not* decoded, so any printable text of at least [`MIN_KEY_LEN`] bytes works, and
//! `head -c 48 /dev/urandom | base64 > FILE` is the documented way to make one.
//!
//! [`ClusterKey::load`] refuses a key file that group or others may read or write, that
//! is not a regular file or is larger than [`MAX_KEY_FILE_BYTES`] (only that much is ever
//! read), and a key that is evidently weak (see [`weakness`]).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Minimum key length in bytes, after trimming surrounding whitespace.
pub const MIN_KEY_LEN: usize = 32;

/// Largest key file accepted; no more than one byte beyond it is ever read.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Fewest distinct byte values a key file's key must contain.
pub const MIN_DISTINCT_BYTES: usize = 8;

/// Least estimated entropy of a key file's key, in bits (see [`weakness`]).
pub const MIN_ESTIMATED_BITS: f64 = 88.0;

/// Number of random bytes [`generate_key_file`] writes (hex encoded, so the file holds
/// twice as many characters).
pub const GENERATED_KEY_BYTES: usize = 48;

/// Derivation label of the HTTP API bearer token.
const API_TOKEN_LABEL: &[u8] = b"baton api token v1";
/// Derivation label of the public key fingerprint.
const FINGERPRINT_LABEL: &[u8] = b"baton key fingerprint v1";
/// Derivation label of the key id carried in keyed heartbeats (wire version 3).
const KEY_ID_LABEL: &[u8] = b"baton key id v1";
/// Derivation label of the heartbeat encryption key (`[heartbeat] encrypt`).
const CIPHER_LABEL: &[u8] = b"baton heartbeat encryption v1";

/// Errors loading or creating a cluster key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("cluster key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key is shorter than [`MIN_KEY_LEN`] bytes.
    #[error("{}", too_short_message(path.as_deref(), *len))]
    TooShort { path: Option<PathBuf>, len: usize },
    /// [`generate_key_file`] refuses to overwrite an existing key.
    #[error(
        "cluster key file {} already exists; refusing to overwrite it (remove it first if you really mean to replace the cluster key)",
        path.display()
    )]
    Exists { path: PathBuf },
    /// The operating system random source failed.
    #[error("cannot obtain random bytes for a new cluster key: {reason}")]
    Random { reason: String },
    /// The key file may be read or written by group or others.
    #[error(
        "cluster key file {} has mode {:04o}: group or others may read or change it, so the cluster key is not secret; run: chmod 600 {}",
        path.display(), mode & 0o7777, path.display()
    )]
    Permissive { path: PathBuf, mode: u32 },
    /// The key file is not a regular file (a device, a FIFO, a directory).
    #[error("cluster key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// The key file is larger than [`MAX_KEY_FILE_BYTES`].
    #[error("cluster key file {} is larger than {MAX_KEY_FILE_BYTES} bytes; a key file holds one key (create one with `baton keygen FILE`)", path.display())]
    TooLarge { path: PathBuf },
    /// The key is long enough but evidently guessable.
    #[error("cluster key in {} is weak: {reason}; create a random one with `baton keygen FILE` (or head -c 48 /dev/urandom | base64 > FILE)", path.display())]
    Weak { path: PathBuf, reason: String },
}

impl KeyError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Io { .. } => "key-io",
            KeyError::TooShort { .. } => "key-too-short",
            KeyError::Exists { .. } => "key-exists",
            KeyError::Random { .. } => "key-random",
            KeyError::Permissive { .. } => "key-permissive-mode",
            KeyError::NotAFile { .. } => "key-not-a-file",
            KeyError::TooLarge { .. } => "key-too-large",
            KeyError::Weak { .. } => "key-weak",
        }
    }
}

fn too_short_message(path: Option<&Path>, len: usize) -> String {
    match path {
        Some(p) => {
            let p = p.display();
            format!(
                "cluster key file {p} holds {len} bytes after trimming whitespace; at least {MIN_KEY_LEN} are required. \
                 Create one with: head -c 48 /dev/urandom | base64 > {p}; chmod 600 {p} \
                 (and copy the same file to every node)"
            )
        }
        None => format!(
            "cluster key is {len} bytes after trimming whitespace; at least {MIN_KEY_LEN} are required"
        ),
    }
}

/// A non-fatal problem found while loading the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyWarning {
    /// The key file is readable (or writable) by group or others.
    PermissiveMode { path: PathBuf, mode: u32 },
}

impl KeyWarning {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyWarning::PermissiveMode { .. } => "key-permissive-mode",
        }
    }
}

impl fmt::Display for KeyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyWarning::PermissiveMode { path, mode } => write!(
                f,
                "cluster key file {} has mode {:04o}: it is accessible to group/others; run: chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
        }
    }
}

/// The cluster key. Cheap to clone. Its `Debug` output never contains the key.
#[derive(Clone)]
pub struct ClusterKey {
    /// HMAC state keyed with the cluster key; cloned for every MAC computation.
    mac: HmacSha256,
    len: usize,
    warnings: Vec<KeyWarning>,
    /// [`ClusterKey::key_id`] and [`ClusterKey::cipher_key`], derived once: every
    /// heartbeat sent or received may need them.
    id: [u8; 4],
    cipher: [u8; 32],
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("len", &self.len)
            .field("fingerprint", &self.fingerprint())
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// Load the key from `path`: the file's bytes with surrounding ASCII whitespace
    /// trimmed, at least [`MIN_KEY_LEN`] long. Refused: a file group or others may
    /// access ([`KeyError::Permissive`]), not a regular file, larger than
    /// [`MAX_KEY_FILE_BYTES`], or holding a weak key ([`weakness`]).
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterKey, KeyError> {
        let path = path.as_ref();
        use crate::files::ReadError;
        let raw =
            crate::files::read_bounded(path, MAX_KEY_FILE_BYTES, true).map_err(|e| match e {
                ReadError::Io(source) => KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                ReadError::NotAFile => KeyError::NotAFile {
                    path: path.to_path_buf(),
                },
                ReadError::Permissive(mode) => KeyError::Permissive {
                    path: path.to_path_buf(),
                    mode,
                },
                ReadError::TooLarge => KeyError::TooLarge {
                    path: path.to_path_buf(),
                },
            })?;
        let trimmed = raw.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: Some(path.to_path_buf()),
                len: trimmed.len(),
            });
        }
        if let Some(reason) = weakness(trimmed) {
            return Err(KeyError::Weak {
                path: path.to_path_buf(),
                reason,
            });
        }
        Ok(Self::build(trimmed))
    }

    /// A key from bytes (tests, demo). Surrounding whitespace is trimmed and the same
    /// minimum length as [`ClusterKey::load`] applies.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterKey, KeyError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: None,
                len: trimmed.len(),
            });
        }
        Ok(Self::build(trimmed))
    }

    fn build(key: &[u8]) -> ClusterKey {
        // Cannot fail: HMAC accepts keys of any length (longer than the block size they
        // are hashed first); `InvalidLength` exists only for fixed-key-size MACs that
        // share the `KeyInit` trait.
        let mac = match <HmacSha256 as Mac>::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        };
        let mut k = ClusterKey {
            mac,
            len: key.len(),
            warnings: Vec::new(),
            id: [0; 4],
            cipher: [0; 32],
        };
        let m = k.mac(&[KEY_ID_LABEL]);
        k.id = [m[0], m[1], m[2], m[3]];
        k.cipher = k.mac(&[CIPHER_LABEL]);
        k
    }

    /// Non-fatal problems found by [`ClusterKey::load`] (log them at start).
    pub fn warnings(&self) -> &[KeyWarning] {
        &self.warnings
    }

    /// HMAC-SHA256 over the concatenation of `parts`. The parts are not length-framed:
    /// callers must make the concatenation unambiguous (e.g. fixed-size prefixes).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.mac.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Constant-time check that `tag` is the MAC of `parts`. A tag of the wrong length
    /// is rejected.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }

    /// The HTTP API bearer token: lowercase hex of HMAC(key, "baton api token v1").
    /// Every node derives the same token from the same key file.
    pub fn api_token(&self) -> String {
        hex::encode(self.mac(&[API_TOKEN_LABEL]))
    }

    /// A short public fingerprint (16 hex chars) for logs and `status`, so operators
    /// can tell whether two nodes hold the same key without revealing it.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.mac(&[FINGERPRINT_LABEL])[..8])
    }

    /// The public 4-byte id of this key in keyed heartbeats (wire version 3): tells a
    /// receiver which key of its ring to check the MAC with.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The ChaCha20-Poly1305 key of encrypted heartbeats, derived from this key (a
    /// different key than the MAC's).
    pub fn cipher_key(&self) -> [u8; 32] {
        self.cipher
    }
}

/// The keys an agent uses: the cluster key it sends with (`[cluster] key_file`) and the
/// keys it also accepts during a key rotation (`[cluster] accept_key_files`).
#[derive(Clone, Debug)]
pub struct KeyRing {
    primary: ClusterKey,
    accepted: Vec<ClusterKey>,
    encrypt: bool,
}

impl KeyRing {
    pub fn new(primary: ClusterKey, accepted: Vec<ClusterKey>) -> KeyRing {
        KeyRing {
            primary,
            accepted,
            encrypt: false,
        }
    }

    /// Send heartbeats encrypted (`[heartbeat] encrypt`).
    pub fn with_encryption(mut self, on: bool) -> KeyRing {
        self.encrypt = on;
        self
    }
}

/// What the heartbeat layer and the API need of the keys: the one to send with and the
/// others accepted. A single [`ClusterKey`] is a ring of one.
pub trait Keys {
    fn primary(&self) -> &ClusterKey;
    fn accepted(&self) -> &[ClusterKey];

    /// Send heartbeats encrypted. (Received ones are decrypted whatever this says.)
    fn encrypt(&self) -> bool {
        false
    }

    /// Every key, the primary first.
    fn all(&self) -> impl Iterator<Item = &ClusterKey> {
        std::iter::once(self.primary()).chain(self.accepted())
    }

    /// The key with this id, if the ring holds it.
    fn by_id(&self, id: [u8; 4]) -> Option<&ClusterKey> {
        self.all().find(|k| k.key_id() == id)
    }
}

impl Keys for ClusterKey {
    fn primary(&self) -> &ClusterKey {
        self
    }
    fn accepted(&self) -> &[ClusterKey] {
        &[]
    }
}

impl Keys for KeyRing {
    fn primary(&self) -> &ClusterKey {
        &self.primary
    }
    fn accepted(&self) -> &[ClusterKey] {
        &self.accepted
    }
    fn encrypt(&self) -> bool {
        self.encrypt
    }
}

/// Why a key of at least [`MIN_KEY_LEN`] bytes is evidently guessable, if it is. A
/// rough estimate that catches typed or patterned keys, not a proof of randomness:
///
/// * fewer than [`MIN_DISTINCT_BYTES`] distinct byte values (`aaaa…`, `0101…`);
/// * a repetition of a shorter block (`abcabcabc…`, `password1password1…`);
/// * a simple sequence: more than half of the steps between neighbouring bytes are the
///   same (`abcdefgh…`, `0123456789…`);
/// * less than [`MIN_ESTIMATED_BITS`] bits of entropy, estimated as the length times the
///   Shannon entropy of the key's byte frequencies.
///
/// A random key of 32 hex digits or more (what `baton keygen` writes: 96) passes (in a
/// simulation of 300,000 random 32-digit keys, none had fewer than 9 distinct digits
/// or fewer than 88 bits by this estimate).
pub fn weakness(key: &[u8]) -> Option<String> {
    let mut counts = [0usize; 256];
    for &b in key {
        counts[usize::from(b)] += 1;
    }
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Some(format!(
            "it uses only {distinct} different characters (at least {MIN_DISTINCT_BYTES} expected)"
        ));
    }
    let n = key.len();
    if let Some(p) = (1..=n / 2).find(|&p| (p..n).all(|i| key[i] == key[i - p])) {
        return Some(format!("it repeats a block of {p} characters"));
    }
    let mut steps = [0usize; 256];
    for w in key.windows(2) {
        steps[usize::from(w[1].wrapping_sub(w[0]))] += 1;
    }
    if steps.iter().any(|&c| c * 2 > n - 1) {
        return Some("it is a simple sequence".to_string());
    }
    let len = n as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum();
    let bits = per_byte * len;
    if bits < MIN_ESTIMATED_BITS {
        return Some(format!(
            "its estimated entropy is about {bits:.0} bits (at least {MIN_ESTIMATED_BITS:.0} expected)"
        ));
    }
    None
}

/// Create a new key file at `path` holding [`GENERATED_KEY_BYTES`] random bytes, hex
/// encoded, followed by a newline, with mode 0600. Refuses to overwrite an existing
/// file ([`KeyError::Exists`]). The file is fsynced before returning.
pub fn generate_key_file(path: impl AsRef<Path>) -> Result<(), KeyError> {
    let path = path.as_ref();
    let mut raw = [0u8; GENERATED_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut raw)
        .map_err(|e| KeyError::Random {
            reason: e.to_string(),
        })?;
    let mut text = hex::encode(raw);
    text.push('\n');

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn from_bytes_enforces_min_len_and_trims() {
        let e = ClusterKey::from_bytes(b"  short  ").unwrap_err();
        assert_eq!(e.code(), "key-too-short");
        assert!(ClusterKey::from_bytes(&K[..31]).is_err());
        let a = ClusterKey::from_bytes(K).unwrap();
        let b = ClusterKey::from_bytes(&[b"\n\t ", K, b" \n"].concat()).unwrap();
        assert_eq!(a.mac(&[b"x"]), b.mac(&[b"x"]));
    }

    #[test]
    fn mac_matches_reference_and_verifies() {
        let k = ClusterKey::from_bytes(K).unwrap();
        // Parts are concatenated.
        assert_eq!(k.mac(&[b"ab", b"c"]), k.mac(&[b"abc"]));
        let mut reference = <HmacSha256 as Mac>::new_from_slice(K).unwrap();
        reference.update(b"abc");
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(k.mac(&[b"abc"]), expected);

        let tag = k.mac(&[b"hello"]);
        assert!(k.verify(&[b"hel", b"lo"], &tag));
        assert!(!k.verify(&[b"hello!"], &tag));
        assert!(!k.verify(&[b"hello"], &tag[..31]));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!k.verify(&[b"hello"], &bad));
        let other = ClusterKey::from_bytes(b"another key another key another key").unwrap();
        assert!(!other.verify(&[b"hello"], &tag));
    }

    #[test]
    fn api_token_is_derived_hex() {
        let k = ClusterKey::from_bytes(K).unwrap();
        let t = k.api_token();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, hex::encode(k.mac(&[b"baton api token v1"])));
        assert_eq!(t, ClusterKey::from_bytes(K).unwrap().api_token());
        assert!(!t.contains(std::str::from_utf8(K).unwrap()));
    }

    #[test]
    fn debug_never_prints_key() {
        let k = ClusterKey::from_bytes(K).unwrap();
        let d = format!("{k:?} {k:#?}");
        assert!(!d.contains("0123456789abcdef"), "{d}");
        assert!(!d.contains(&k.api_token()), "{d}");
        assert!(d.contains("ClusterKey"));
    }

    /// A key file's key: random hex, as `baton keygen` writes.
    const STRONG: &[u8] = b"6b1f0c5e2d9a4f7b8c3e1d0a9f8e7d6c5b4a39281706f5e4d3c2b1a098f7e6d5";

    fn private_file(dir: &Path, content: &[u8]) -> PathBuf {
        let p = dir.join("cluster.key");
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn load_trims_and_refuses_a_file_others_can_access() {
        let dir = tempfile::tempdir().unwrap();
        let p = private_file(dir.path(), &[b"  ", STRONG, b"\n"].concat());
        let k = ClusterKey::load(&p).unwrap();
        assert!(k.warnings().is_empty());
        assert_eq!(
            k.mac(&[b"x"]),
            ClusterKey::from_bytes(STRONG).unwrap().mac(&[b"x"])
        );

        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o666] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = ClusterKey::load(&p).unwrap_err();
            assert_eq!(e.code(), "key-permissive-mode", "{mode:o}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"),
                "{msg}"
            );
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(ClusterKey::load(&p).is_ok());
    }

    #[test]
    fn load_refuses_devices_fifos_and_huge_files_without_reading_them() {
        // /dev/zero would never end: refused before a byte is read.
        let e = ClusterKey::load("/dev/zero").unwrap_err();
        assert_eq!(e.code(), "key-not-a-file");
        let dir = tempfile::tempdir().unwrap();
        let e = ClusterKey::load(dir.path()).unwrap_err();
        assert_eq!(e.code(), "key-not-a-file");
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = ClusterKey::load(&fifo).unwrap_err();
        assert_eq!(e.code(), "key-not-a-file");
        // A big regular file: refused, reading at most one byte past the limit.
        let big = [STRONG.repeat(64), b"\n".to_vec()].concat();
        assert!(big.len() as u64 > MAX_KEY_FILE_BYTES);
        let p = private_file(dir.path(), &big);
        let e = ClusterKey::load(&p).unwrap_err();
        assert_eq!(e.code(), "key-too-large");
        assert!(e.to_string().contains("4096"), "{e}");
        // Exactly at the limit is fine (a strong key padded with whitespace).
        let mut at = STRONG.to_vec();
        at.resize(usize::try_from(MAX_KEY_FILE_BYTES).unwrap(), b' ');
        let p = private_file(dir.path(), &at);
        assert!(ClusterKey::load(&p).is_ok());
    }

    #[test]
    fn load_refuses_weak_keys() {
        let dir = tempfile::tempdir().unwrap();
        for (key, why) in [
            (
                &b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..],
                "different characters",
            ),
            (
                b"0101010101010101010101010101010101010101",
                "different characters",
            ),
            (b"0123456789abcdef0123456789abcdef", "repeats a block of 16"),
            (
                b"password123!password123!password123!",
                "repeats a block of 12",
            ),
            (b"abcdefghijklmnopqrstuvwxyzABCDEFGH", "simple sequence"),
            (b"xxaxbxxcxdxxexfxxgxhxxixxjxxxxxkxxlx", "estimated entropy"),
        ] {
            let p = private_file(dir.path(), key);
            let e = ClusterKey::load(&p).unwrap_err();
            assert_eq!(e.code(), "key-weak", "{}", String::from_utf8_lossy(key));
            let msg = e.to_string();
            assert!(msg.contains(why) && msg.contains("baton keygen"), "{msg}");
        }
    }

    #[test]
    fn random_keys_are_not_called_weak() {
        for _ in 0..2000 {
            let mut raw = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            // The shortest acceptable random key: 32 hex digits.
            let hex = hex::encode(raw);
            assert_eq!(weakness(hex.as_bytes()), None, "{hex}");
        }
        let mut raw = [0u8; GENERATED_KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let b64: String = raw.iter().map(|b| char::from(b'A' + b % 26)).collect();
        assert_eq!(weakness(b64.as_bytes()), None, "{b64}");
    }

    #[test]
    fn load_short_file_explains_how_to_create() {
        let dir = tempfile::tempdir().unwrap();
        let p = private_file(dir.path(), b"too short\n");
        let e = ClusterKey::load(&p).unwrap_err();
        assert_eq!(e.code(), "key-too-short");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("head -c 48 /dev/urandom | base64 >"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
    }

    #[test]
    fn load_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.key");
        let e = ClusterKey::load(&p).unwrap_err();
        assert_eq!(e.code(), "key-io");
        assert!(e.to_string().contains("nope.key"));
    }

    #[test]
    fn generate_key_file_is_private_loadable_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.key");
        generate_key_file(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.trim().len(), GENERATED_KEY_BYTES * 2);
        let k = ClusterKey::load(&p).unwrap();
        assert!(k.warnings().is_empty());

        let e = generate_key_file(&p).unwrap_err();
        assert_eq!(e.code(), "key-exists");
        assert_eq!(fs::read_to_string(&p).unwrap(), text);

        let p2 = dir.path().join("other.key");
        generate_key_file(&p2).unwrap();
        assert_ne!(fs::read_to_string(&p2).unwrap(), text);
    }
}
