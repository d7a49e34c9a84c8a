//! The agent's state directory.
//!
//! Holds a few small JSON records that must survive restarts:
//!
//! * `epochs.json` — per group, the highest epoch this server has seen or used. Fencing
//!   depends on epochs never going backwards, so a damaged file is an error
//!   ([`StateError::Corrupt`]), never silently reset.
//! * `ownership.json` — the groups this server believes it holds ([`Ownership`]).
//! * `meta.json` — the last configuration digest and a boot counter ([`Meta`]).
//!
//! A missing file reads as the default (empty) value. Every write is atomic: the
//! record is written to `NAME.tmp`, fsynced, renamed over `NAME`, and the directory is
//! fsynced, so after a crash either the old or the new record is present.
//!
//! `agent.lock` holds an exclusive `flock` for the lifetime of the [`StateDir`] so two
//! agents cannot share a state directory; it contains the holder's pid.
//!
//! All calls are blocking file system operations (small files, but with fsync): from
//! async code, call them via `tokio::task::spawn_blocking` or accept the short stall.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Lock file name inside the state directory.
pub const LOCK_FILE: &str = "agent.lock";
/// Epoch record file name.
pub const EPOCHS_FILE: &str = "epochs.json";
/// Ownership record file name.
pub const OWNERSHIP_FILE: &str = "ownership.json";
/// Meta record file name.
pub const META_FILE: &str = "meta.json";

const RECORD_FILES: [&str; 3] = [EPOCHS_FILE, OWNERSHIP_FILE, META_FILE];

/// Errors of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", locked_message(path, *pid))]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "state file {} is corrupt ({reason}); refusing to start rather than reset it \
         (a reset epoch could break fencing). Inspect the file, restore it from a backup, \
         or remove it only if you are sure this server holds no group and no higher epoch was used",
        file.display()
    )]
    Corrupt { file: PathBuf, reason: String },
    #[error("cannot serialise state file {}: {reason}", file.display())]
    Encode { file: PathBuf, reason: String },
}

impl StateError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::Io { .. } => "state-io",
            StateError::Locked { .. } => "state-locked",
            StateError::Corrupt { .. } => "state-corrupt",
            StateError::Encode { .. } => "state-encode",
        }
    }
}

fn locked_message(path: &Path, pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(
            "state directory {} is in use by another agent (pid {pid} holds {}); \
             stop it or give this agent another state directory",
            path.display(),
            LOCK_FILE
        ),
        None => format!(
            "state directory {} is in use by another agent (lock {} is held); \
             stop it or give this agent another state directory",
            path.display(),
            LOCK_FILE
        ),
    }
}

/// A group this server believes it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedGroup {
    /// Epoch under which the group is held.
    pub epoch: u64,
    /// When this server started holding (or activating) it, Unix milliseconds.
    pub since_unix_ms: u64,
    /// Engine state name, e.g. "active" or "activating".
    pub state: String,
}

/// Groups this server believes it holds (active or activating).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    #[serde(default, deserialize_with = "unique_keys")]
    pub groups: BTreeMap<String, OwnedGroup>,
    /// Set while the agent's self-fence clock runs (it lost quorum while holding groups
    /// and has not stopped them): the machine's boot id ([`host_boot_id`]). An agent that
    /// starts on the same boot and finds it set escalates at once for the groups it still
    /// holds without quorum (`baton_core::engine::Boot::fencing`); after a reboot of the
    /// machine it means nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_boot: Option<String>,
}

/// The kernel's id of this boot of the machine (`/proc/sys/kernel/random/boot_id`), or
/// None where there is none (then `Ownership::fencing_boot` is never set).
pub fn host_boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Small facts about previous runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Digest of the configuration last used.
    #[serde(default)]
    pub last_digest: Option<String>,
    /// Number of agent starts recorded (the agent increments and stores it).
    #[serde(default)]
    pub boot_count: u64,
    /// First heartbeat sequence number of the last start (`wire::next_seq_base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_base: Option<u64>,
}

/// An open, locked state directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Holds the exclusive lock; closing the file releases it.
    _lock: File,
    /// Serialises writers within this process (they share `NAME.tmp`).
    write_lock: Mutex<()>,
    warnings: Vec<String>,
}

impl StateDir {
    /// Open (creating with mode 0700 if needed) and lock the state directory.
    ///
    /// Fails with [`StateError::Locked`] if another open `StateDir` (in this or another
    /// process) holds the lock. Leftover `*.tmp` files of an interrupted write are
    /// removed. An existing directory accessible to group/others is accepted and reported
    /// in [`StateDir::warnings`].
    pub fn open(path: impl AsRef<Path>) -> Result<StateDir, StateError> {
        let path = path.as_ref().to_path_buf();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io(&path))?;
        let meta = fs::metadata(&path).map_err(io(&path))?;
        let mut warnings = Vec::new();
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "state directory {} has mode {:04o}: accessible to group/others; run: chmod 700 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }

        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // `File::try_lock` (flock(2) on Unix), stable since Rust 1.89.
        let locked = lock.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: the holder may be rewriting the pid right now.
                let pid = lock
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse::<u32>().ok());
                return Err(StateError::Locked { path, pid });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StateError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write_pid(&mut lock).map_err(io(&lock_path))?;

        for name in RECORD_FILES {
            let tmp = path.join(tmp_name(name));
            match fs::remove_file(&tmp) {
                Ok(()) => warnings.push(format!(
                    "removed {} left by an interrupted write",
                    tmp.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&tmp)(e)),
            }
        }

        Ok(StateDir {
            path,
            _lock: lock,
            write_lock: Mutex::new(()),
            warnings,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Non-fatal findings of [`StateDir::open`] (log them at start).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Highest epoch per group seen or used by this server. Missing file: empty.
    pub fn load_epochs(&self) -> Result<BTreeMap<String, u64>, StateError> {
        self.load::<UniqueKeys<u64>>(EPOCHS_FILE).map(|m| m.0)
    }

    pub fn store_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), StateError> {
        self.store(EPOCHS_FILE, epochs)
    }

    /// Groups this server believes it holds. Missing file: none.
    pub fn load_ownership(&self) -> Result<Ownership, StateError> {
        self.load(OWNERSHIP_FILE)
    }

    pub fn store_ownership(&self, ownership: &Ownership) -> Result<(), StateError> {
        self.store(OWNERSHIP_FILE, ownership)
    }

    /// Missing file: `Meta::default()`.
    pub fn load_meta(&self) -> Result<Meta, StateError> {
        self.load(META_FILE)
    }

    pub fn store_meta(&self, meta: &Meta) -> Result<(), StateError> {
        self.store(META_FILE, meta)
    }

    fn load<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, StateError> {
        let file = self.path.join(name);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
            Err(source) => return Err(StateError::Io { path: file, source }),
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            file,
            reason: e.to_string(),
        })
    }

    fn store<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let file = self.path.join(name);
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Encode {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        let tmp = self.path.join(tmp_name(name));
        // A poisoned mutex only means another writer panicked; the files are still
        // consistent (each write is atomic), so carry on.
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &file).map_err(io(&file))?;
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.path))?;
        Ok(())
    }
}

fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// A JSON object read into a map that refuses a key given twice: serde's maps keep the
/// last value silently, and `{"g": 9, "g": 1}` must not read as epoch 1.
#[derive(Debug, Default)]
struct UniqueKeys<V>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueKeys<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueKeys<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueKeys(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

fn unique_keys<'de, D: serde::Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<String, V>, D::Error> {
    UniqueKeys::deserialize(d).map(|m| m.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample_ownership() -> Ownership {
        let mut groups = BTreeMap::new();
        groups.insert(
            "web".to_string(),
            OwnedGroup {
                epoch: 12,
                since_unix_ms: 1_700_000_000_000,
                state: "active".into(),
            },
        );
        groups.insert(
            "db".to_string(),
            OwnedGroup {
                epoch: u64::MAX,
                since_unix_ms: 0,
                state: "activating".into(),
            },
        );
        Ownership {
            groups,
            fencing_boot: Some("0b7c1d2e-5f60-4a1b-9c8d-7e6f5a4b3c2d".into()),
        }
    }

    #[test]
    fn creates_private_dir_and_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert!(s.load_epochs().unwrap().is_empty());
        assert_eq!(s.load_ownership().unwrap(), Ownership::default());
        assert_eq!(s.load_meta().unwrap(), Meta::default());
        let pid = fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
    }

    #[test]
    fn round_trips_and_no_tmp_left() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        let mut epochs = BTreeMap::new();
        epochs.insert("web".to_string(), 3);
        epochs.insert("db".to_string(), u64::MAX);
        s.store_epochs(&epochs).unwrap();
        assert_eq!(s.load_epochs().unwrap(), epochs);
        epochs.insert("web".to_string(), 4);
        s.store_epochs(&epochs).unwrap();
        assert_eq!(s.load_epochs().unwrap(), epochs);

        s.store_ownership(&sample_ownership()).unwrap();
        assert_eq!(s.load_ownership().unwrap(), sample_ownership());

        let meta = Meta {
            last_digest: Some("sha256:abc".into()),
            boot_count: 9,
            seq_base: Some(1 << 50),
        };
        s.store_meta(&meta).unwrap();
        assert_eq!(s.load_meta().unwrap(), meta);

        let mut names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [LOCK_FILE, EPOCHS_FILE, META_FILE, OWNERSHIP_FILE]);
        let mode = fs::metadata(tmp.path().join(EPOCHS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Survives reopening.
        drop(s);
        let s = StateDir::open(tmp.path()).unwrap();
        assert_eq!(s.load_epochs().unwrap(), epochs);
        assert_eq!(s.load_ownership().unwrap(), sample_ownership());
        assert_eq!(s.load_meta().unwrap(), meta);
    }

    #[test]
    fn corrupt_file_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        for (name, content) in [
            (EPOCHS_FILE, &b"{\"web\": 3,"[..]),
            (OWNERSHIP_FILE, b"{\"groups\": {\"web\": {\"epoch\": -1}}}"),
            (META_FILE, b""),
        ] {
            fs::write(tmp.path().join(name), content).unwrap();
        }
        let errs = [
            s.load_epochs().unwrap_err(),
            s.load_ownership().unwrap_err(),
            s.load_meta().unwrap_err(),
        ];
        for (err, name) in errs.iter().zip([EPOCHS_FILE, OWNERSHIP_FILE, META_FILE]) {
            assert_eq!(err.code(), "state-corrupt");
            match err {
                StateError::Corrupt { file, .. } => assert_eq!(file, &tmp.path().join(name)),
                other => panic!("{other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("fencing"), "{msg}");
        }
        // Not silently reset: the corrupt file is left in place.
        assert_eq!(
            fs::read(tmp.path().join(EPOCHS_FILE)).unwrap(),
            b"{\"web\": 3,"
        );
    }

    #[test]
    fn second_open_fails_while_first_alive() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err();
        assert_eq!(err.code(), "state-locked");
        match &err {
            StateError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        // The failed open did not disturb the holder's pid or its records.
        first.store_meta(&Meta::default()).unwrap();
        drop(first);
        let again = StateDir::open(tmp.path()).unwrap();
        assert_eq!(again.load_meta().unwrap(), Meta::default());
    }

    #[test]
    fn stale_tmp_is_removed_and_permissive_dir_warned() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(tmp.path().join("epochs.json.tmp"), b"{\"half").unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        assert!(!tmp.path().join("epochs.json.tmp").exists());
        assert_eq!(s.warnings().len(), 2, "{:?}", s.warnings());
        assert!(s.warnings()[0].contains("chmod 700"));
    }

    #[test]
    fn meta_tolerates_missing_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        fs::write(tmp.path().join(META_FILE), b"{}").unwrap();
        assert_eq!(s.load_meta().unwrap(), Meta::default());
        fs::write(tmp.path().join(OWNERSHIP_FILE), b"{}").unwrap();
        assert_eq!(s.load_ownership().unwrap(), Ownership::default());
    }
}
