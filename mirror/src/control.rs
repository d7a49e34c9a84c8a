//! The mirror process's control socket: a Unix socket (mode 0600 in a root-only
//! directory) speaking one JSON request and one JSON answer per line. The agent uses it
//! to promote, demote, renew the write lease and fetch events; `baton mirror` uses it for
//! status, pause, resume and the operator's decisions.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::events::MirrorEvent;
use crate::meta::DiskState;
use crate::volume::{Conn, Resync};

/// Requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Become primary at `epoch` (the group's fencing epoch).
    Promote {
        epoch: u64,
    },
    /// Stop serving the volume; become secondary.
    Demote,
    /// The agent confirms this server holds the group with quorum for `ms` more, and
    /// whether it considers the peer's server down (no heartbeat on any path).
    Lease {
        ms: u64,
        #[serde(default)]
        peer_down: bool,
        /// How long the peer must have been down (in consecutive leases) before sync
        /// writes go on without it: the heartbeat timeout, so that a server cut off from
        /// everyone, which loses the peer a moment before the rest of its quorum, never
        /// acknowledges a write alone.
        #[serde(default)]
        hold_ms: u64,
    },
    Pause,
    Resume,
    /// The operator accepts that the next promotion serves this side's (possibly stale)
    /// data.
    ForcePrimary,
    /// The operator chose to overwrite this side's changes from the peer.
    DiscardLocal,
    /// Events after `since`.
    Events {
        since: u64,
    },
    /// End the process (refused while primary).
    Shutdown,
}

/// Everything `baton mirror status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub cluster: String,
    pub group: String,
    pub resource: String,
    pub server: String,
    pub peer: String,
    pub pid: u32,
    pub role: String,
    pub epoch: Option<u64>,
    pub max_epoch: u64,
    pub fenced: bool,
    pub connection: Conn,
    pub mode: String,
    pub disk: DiskState,
    pub peer_disk: Option<DiskState>,
    pub in_sync: bool,
    pub out_of_sync_bytes: u64,
    pub size: u64,
    pub region_size: u32,
    pub generation: String,
    pub history: Vec<String>,
    pub split_brain: bool,
    pub paused: bool,
    pub force_primary: bool,
    pub lease_ms_left: Option<u64>,
    pub nbd: String,
    pub nbd_serving: bool,
    pub resync: ResyncStatus,
    pub counters: std::collections::BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub events_seq: u64,
    /// The last async takeover here without the old primary: what may be missing.
    #[serde(default)]
    pub takeover: Option<crate::volume::Takeover>,
}

/// Resync progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResyncStatus {
    pub running: bool,
    pub source: bool,
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub sent_bytes: u64,
    /// When this side's last resync started and ended in sync (unix ms): its duration,
    /// without the time the link took to come up.
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub rate_bytes_per_s: u64,
    pub remaining_s: Option<u64>,
}

impl From<&Resync> for ResyncStatus {
    fn from(r: &Resync) -> Self {
        ResyncStatus {
            running: r.running,
            source: r.source,
            total_bytes: r.total_bytes,
            done_bytes: r.done_bytes,
            sent_bytes: r.sent_bytes,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            rate_bytes_per_s: r.rate_bytes_per_s,
            remaining_s: r.remaining_s,
        }
    }
}

/// Answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Status(Box<Status>),
    Events {
        events: Vec<MirrorEvent>,
    },
    /// Refused, with a stable code (`mirror_stale`, `mirror_split_brain`,
    /// `mirror_stale_epoch`, `mirror_primary`, `mirror_not_primary`, ...).
    Error {
        code: String,
        message: String,
    },
}

impl Response {
    pub fn error(code: &str, message: impl Into<String>) -> Response {
        Response::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Why a control call failed (the process is not there, or said something else).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("mirror process not reachable at {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("mirror process at {0} did not answer in time")]
    Timeout(String),
    #[error("mirror process answered something unexpected: {0}")]
    Protocol(String),
}

impl ControlError {
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Unreachable { .. } => "mirror_unreachable",
            ControlError::Timeout(_) => "mirror_timeout",
            ControlError::Protocol(_) => "mirror_protocol",
        }
    }
}

/// Largest request or answer line.
pub const MAX_LINE: usize = 1 << 20;

/// One request, one answer.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let p = path.display().to_string();
    let fut = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|e| ControlError::Unreachable {
                path: p.clone(),
                source: e,
            })?;
        let mut line =
            serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line)
            .await
            .map_err(|e| ControlError::Unreachable {
                path: p.clone(),
                source: e,
            })?;
        let mut r = BufReader::new(s);
        let mut answer = String::new();
        let n = (&mut r)
            .take(MAX_LINE as u64)
            .read_line(&mut answer)
            .await
            .map_err(|e| ControlError::Unreachable {
                path: p.clone(),
                source: e,
            })?;
        if n == 0 {
            return Err(ControlError::Protocol("no answer".into()));
        }
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ControlError::Timeout(path.display().to_string()))?
}

use tokio::io::AsyncReadExt;
