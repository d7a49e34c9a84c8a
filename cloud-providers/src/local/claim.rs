//! The `local-claim` resource kind: a file standing in for a cloud mutation.
//!
//! The claim file holds `{"owner": SERVER, "group": GROUP, "epoch": N}`. Activation
//! takes the claim unless it is held at a higher epoch (fencing: a lower epoch never
//! overwrites a higher one); deactivation removes it only if it is still ours. All
//! read-check-write sequences hold an exclusive `flock` on `PATH.lock`, and the claim
//! is replaced atomically (temp file + rename), so servers sharing the file on one
//! host (or on a filesystem with working `flock`) see a consistent claim. Every change
//! of owner or epoch appends `{"owner", "group", "epoch"}` as one JSON line to
//! `PATH.history`, which tests read to check that ownership only moved forward.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::params::{key_error, parse_params};
use crate::process::duration_ms;
use crate::{ActionContext, CheckOutcome, ParamError, Params, ProviderError, ResourceDriver};

/// Keys of a `local-claim` resource: a simulated cloud mutation, for demos and tests of
/// fencing. Use one path per resource, shared by all servers of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalClaimParams {
    /// Required. The claim file, shared by all servers of the cluster (so they must
    /// share a host or a filesystem with working `flock`). Its directory must exist;
    /// `PATH.lock` and `PATH.history` are created beside it.
    pub path: PathBuf,
}

/// The content of a claim file, and of each line of its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub owner: String,
    pub group: String,
    pub epoch: u64,
}

/// Driver of a `local-claim` resource.
#[derive(Debug, Clone)]
pub struct LocalClaimDriver {
    pub params: LocalClaimParams,
}

impl LocalClaimDriver {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: LocalClaimParams = parse_params(params)?;
        if p.path.as_os_str().is_empty() || p.path.file_name().is_none() {
            return Err(key_error("path", "`path` must name a file"));
        }
        Ok(LocalClaimDriver { params: p })
    }

    /// The current claim, if any (no lock needed: the file is replaced atomically).
    pub fn read_claim(path: &Path) -> Result<Option<Claim>, ProviderError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                ProviderError::Other(format!("claim file {} is corrupt: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProviderError::Other(format!(
                "cannot read claim file {}: {e}",
                path.display()
            ))),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(PathBuf) -> Result<T, ProviderError> + Send + 'static,
    {
        let path = self.params.path.clone();
        tokio::task::spawn_blocking(move || f(path))
            .await
            .map_err(|e| ProviderError::Other(format!("claim file task failed: {e}")))?
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Take the exclusive lock on `PATH.lock`, retrying until `timeout`.
fn lock(path: &Path, timeout: Duration) -> Result<Flock<File>, ProviderError> {
    let lock_path = sibling(path, ".lock");
    let deadline = crate::clock::now() + timeout;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            ProviderError::Other(format!(
                "cannot open claim lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                if crate::clock::now() >= deadline {
                    return Err(ProviderError::Timeout(duration_ms(timeout)));
                }
                file = f;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, e)) => {
                return Err(ProviderError::Other(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )))
            }
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ProviderError {
    ProviderError::Other(format!("cannot {what} {}: {e}", path.display()))
}

fn write_claim(path: &Path, claim: &Claim) -> Result<(), ProviderError> {
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let body = serde_json::to_string(claim)
        .map_err(|e| ProviderError::Other(format!("cannot encode claim: {e}")))?;
    let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("replace", path, e))?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn append_history(path: &Path, claim: &Claim) -> Result<(), ProviderError> {
    let hist = sibling(path, ".history");
    let mut line = serde_json::to_string(claim)
        .map_err(|e| ProviderError::Other(format!("cannot encode claim: {e}")))?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&hist)
        .map_err(|e| io_err("open", &hist, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| io_err("append to", &hist, e))
}

#[async_trait]
impl ResourceDriver for LocalClaimDriver {
    fn kind(&self) -> &'static str {
        "local-claim"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let ours = Claim {
            owner: ctx.server.clone(),
            group: ctx.group.clone(),
            epoch: ctx.epoch,
        };
        let timeout = ctx.timeout;
        self.blocking(move |path| {
            let _lock = lock(&path, timeout)?;
            match LocalClaimDriver::read_claim(&path)? {
                Some(cur) if cur.group != ours.group => {
                    return Err(ProviderError::Other(format!(
                        "claim file {} belongs to group {}, not {}: use one path per resource",
                        path.display(),
                        cur.group,
                        ours.group
                    )));
                }
                Some(cur) if cur.epoch > ours.epoch => {
                    return Err(ProviderError::Other(format!(
                        "stale epoch: the claim is held at epoch {} by {} (ours is {})",
                        cur.epoch, cur.owner, ours.epoch
                    )));
                }
                Some(cur) if cur == ours => return Ok(()), // already ours: nothing to do
                Some(cur) if cur.epoch == ours.epoch && cur.owner != ours.owner => {
                    return Err(ProviderError::Other(format!(
                        "the claim is already held at epoch {} by {}",
                        cur.epoch, cur.owner
                    )));
                }
                _ => {}
            }
            write_claim(&path, &ours)?;
            append_history(&path, &ours)
        })
        .await
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let server = ctx.server.clone();
        let epoch = ctx.epoch;
        let timeout = ctx.timeout;
        self.blocking(move |path| {
            let _lock = lock(&path, timeout)?;
            match LocalClaimDriver::read_claim(&path)? {
                Some(cur) if cur.owner == server && cur.epoch <= epoch => {
                    std::fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
                    sync_dir(&path);
                }
                Some(cur) => {
                    tracing::info!(path = %path.display(), owner = %cur.owner, epoch = cur.epoch,
                        "claim is not ours (or newer than our epoch {epoch}); leaving it");
                }
                None => {}
            }
            Ok(())
        })
        .await
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let server = ctx.server.clone();
        self.blocking(move |path| {
            Ok(match LocalClaimDriver::read_claim(&path)? {
                Some(cur) if cur.owner == server => CheckOutcome::Active,
                _ => CheckOutcome::Inactive,
            })
        })
        .await
    }
}
