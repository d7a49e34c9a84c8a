//! The HTTP API's wire types: what the agent answers and what `baton` (and an agent
//! asking its peers) reads. The server (`api`) and the client (`client`) both use them.

use baton_core::engine::EngineStatus;
use baton_notifier::SinkStats;
use serde::{Deserialize, Serialize};

use crate::wire::RejectCounters;

/// An error answer: `{"error": {"code": "...", "message": "..."}}` (stable codes).
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

/// Cluster-wide status: this server's view plus each peer's own report.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The server that answered.
    pub via: String,
    pub local: AgentStatus,
    /// Each peer's own status, or the error met fetching it.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub server: String,
    pub status: Option<AgentStatus>,
    pub error: Option<String>,
}

/// `GET /v1/alerts?after=SEQ&tail=N&limit=N`.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    #[serde(default)]
    pub after: u64,
    /// The last N events instead (`after` is ignored).
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    100
}

/// Agent facts shown beside the engine's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub packets_rejected: RejectCounters,
    pub sinks: Vec<SinkStats>,
    /// The `mirror-disk` resources of this server's groups, from their mirror processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorBrief>,
    #[serde(flatten)]
    pub engine: EngineStatus,
}

/// One mirror as `baton status` shows it (`baton mirror status` has everything).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MirrorBrief {
    pub group: String,
    pub resource: String,
    /// `primary`, `secondary`, or `unknown` when the mirror process does not answer.
    pub role: String,
    /// `connected`, `disconnected`, `split_brain`, `refused`.
    pub connection: String,
    pub mode: String,
    pub disk: String,
    pub peer_disk: Option<String>,
    pub in_sync: bool,
    pub out_of_sync_bytes: u64,
    /// Percent done of a running resync.
    pub resync_pct: Option<u64>,
    pub paused: bool,
    pub fenced: bool,
    pub split_brain: bool,
    /// The NBD endpoint is served here (the application can write).
    #[serde(default)]
    pub serving: bool,
    pub error: Option<String>,
}
