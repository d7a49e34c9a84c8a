//! The HTTP API's wire types: what the agent answers and what `baton` (and an agent
//! asking its peers) reads. The server (`api`) and the client (`client`) both use them.

use baton_core::engine::EngineStatus;
use baton_notifier::SinkStats;
use serde::{Deserialize, Serialize};

use crate::wire::RejectCounters;

/// An error answer: `{"error": {"code": "...", "message": "..."}}` (stable codes).
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// `GET /v1/config`: the configuration this agent runs (operator role: the text may hold
/// secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningConfig {
    pub server: String,
    /// The file the agent runs (`--config`).
    pub path: String,
    pub digest: String,
    /// The text the agent runs (read at start or taken from a push).
    pub text: String,
    /// A configuration stored with `baton config push --stage`, waiting for the next
    /// restart: its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_digest: Option<String>,
}

/// `GET /v1/cluster/config`: every server's running configuration.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub via: String,
    pub servers: Vec<ServerConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServerConfig {
    pub server: String,
    pub config: Option<RunningConfig>,
    pub error: Option<String>,
}

/// What a push does on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PushMode {
    /// Check only: valid, and every change can be taken live (or, with `stage`, stored).
    Check,
    /// Check, store and take live.
    #[default]
    Apply,
    /// Check and store only, for the next restart (changes that need a rolling restart).
    Stage,
}

/// `POST /v1/config`: a configuration for this server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPush {
    pub text: String,
    #[serde(default)]
    pub mode: PushMode,
    /// With `check`: check it as `stage` would (restart-needed changes allowed).
    #[serde(default)]
    pub stage: bool,
}

/// A server's answer to a pushed configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    pub server: String,
    /// Checked (and, unless `check`, stored and applied) without a refusal.
    pub ok: bool,
    /// `checked`, `applied`, `unchanged`, `staged` or `refused`.
    pub outcome: String,
    /// The digest the server ran before.
    pub digest_before: String,
    /// The digest it runs now (unchanged unless applied).
    pub digest: String,
    /// The pushed file's digest.
    pub new_digest: Option<String>,
    /// What differs from the configuration the server runs.
    pub changes: Vec<baton_core::config::changes::Change>,
    /// Why it was refused: a stable code (`config-invalid`, `restart-needed`,
    /// `wrong-server`, `write-failed`, `unreachable`, ...) and a message.
    pub error: Option<ApiError>,
    /// For `config-invalid`: every problem as `file:line:column: key: message`.
    #[serde(default)]
    pub diagnostics: Vec<String>,
}

/// `POST /v1/cluster/config`: push a configuration to every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPush {
    pub text: String,
    /// Check on every server, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Store for the next restart instead of applying (changes that need a rolling
    /// restart, key rotation steps).
    #[serde(default)]
    pub stage: bool,
    /// Push to the servers that answer even if some do not.
    #[serde(default)]
    pub allow_partial: bool,
}

/// The answer of `POST /v1/cluster/config`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PushReport {
    pub via: String,
    /// Every server that answered took it (and no server was missing, unless
    /// `allow_partial`).
    pub ok: bool,
    /// `dry-run`, `applied`, `staged`, `refused` (nothing changed anywhere) or `partial`.
    pub outcome: String,
    pub new_digest: Option<String>,
    pub servers: Vec<PushResult>,
}
