//! Inputs, actions, the heartbeat payload and the status report of the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::FinalAction;
use crate::events::Event;

pub type ActionId = u64;

/// A group's state on one server, as reported in heartbeats and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupState {
    Offline,
    /// Chose a new epoch and waits for a quorum to acknowledge it before activating.
    Claiming,
    /// Restarted agent checking resources it owned before.
    Adopting,
    Activating,
    Online,
    Deactivating,
    /// Activation failed and the final action left it here (held, not moved).
    Failed,
    /// Deactivation failed: held here so it is never active twice.
    Stuck,
}

impl GroupState {
    /// States in which the server holds the group (no other server may activate it).
    pub fn holds(self) -> bool {
        !matches!(self, GroupState::Offline)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Offline => "offline",
            GroupState::Claiming => "claiming",
            GroupState::Adopting => "adopting",
            GroupState::Activating => "activating",
            GroupState::Online => "online",
            GroupState::Deactivating => "deactivating",
            GroupState::Failed => "failed",
            GroupState::Stuck => "stuck",
        }
    }
}

/// One group as a server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Shared, not copied: a receiver keeps a sender's reports and completes its brief
    /// heartbeats with them (50 groups, 35 heartbeats a second at 8 servers).
    pub name: Arc<str>,
    pub state: GroupState,
    /// Epoch of the current (or last) activation on the reporting server.
    pub epoch: u64,
    /// Highest epoch the reporting server knows for this group.
    pub max_epoch: u64,
    /// The reporting server gave the group up after a failure and should not be chosen
    /// while another server can run it.
    pub excluded: bool,
    /// The server the reporter itself sees holding the group (itself included) and its
    /// epoch. Lets a server that cannot hear the holder (a partial partition) know that
    /// the group is held all the same.
    #[serde(default)]
    pub seen_holder: Option<(Arc<str>, u64)>,
    /// How long the reporting server has had the group in `state`, in ms.
    #[serde(default)]
    pub state_ms: u64,
    /// The claim (server, epoch) the reporter acknowledged: at most one per epoch.
    #[serde(default)]
    pub ack: Option<(Arc<str>, u64)>,
}

/// Operator intent for a group: a last-writer-wins register spread by heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupIntent {
    pub version: u64,
    pub origin: String,
    /// `false` after `baton group stop`.
    pub run: bool,
    /// Preferred server for the next activation (`move --to`, `start --on`).
    pub prefer: Option<String>,
    /// `prefer` applies only to activations with an epoch above this one... up to this
    /// epoch + 1: once the group has been activated after the command, it no longer applies.
    pub prefer_epoch: u64,
    /// Exclusions older than this intent are cleared (`baton group start`).
    pub clear_exclusions: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlagIntent {
    pub version: u64,
    pub origin: String,
    pub on: bool,
}

/// Temporary timeout change (`baton timeout set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TimeoutIntent {
    pub version: u64,
    pub origin: String,
    /// Heartbeat timeout to use while active, in ms (0: unchanged).
    pub heartbeat_timeout_ms: u64,
    /// Monitor timeout factor in percent (100: unchanged).
    pub monitor_factor_pct: u32,
    /// How long it stays in force after a server first sees it, in ms (0: cleared).
    pub duration_ms: u64,
}

/// All operator intents; merged field by field, higher (version, origin) wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Intents {
    pub groups: BTreeMap<String, GroupIntent>,
    pub suspended: FlagIntent,
    pub stopping: FlagIntent,
    pub monitors: BTreeMap<String, FlagIntent>,
    pub timeout: TimeoutIntent,
}

/// What a server tells its peers in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    pub digest: String,
    /// Changes every time the agent starts.
    pub incarnation: u64,
    /// Past its startup wait and re-adoption checks.
    pub ready: bool,
    pub quorum: bool,
    /// Refuses to activate (configuration mismatch).
    pub refused: bool,
    /// Shutting down: do not choose as a target.
    pub leaving: bool,
    pub groups: Vec<GroupReport>,
    pub intents: Intents,
    /// Servers the sender heard within its quorum lease. A server counts a peer's vote
    /// only when the peer hears it too (an asymmetric cut must not give both sides a vote).
    #[serde(default)]
    pub hears: Vec<String>,
    /// For every server in `hears`, the incarnation of its last heartbeat the sender
    /// received. A server counts a peer's vote (and the acks in its reports) only when
    /// this echoes its *current* incarnation, so a heartbeat recorded before this server
    /// restarted and replayed to it afterwards gives no vote (docs/src/split-brain.md,
    /// "Replayed heartbeats"). `None` from agents that predate the echo (rolling
    /// upgrade): their `hears` is trusted as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard: Option<BTreeMap<String, u64>>,
    /// For every server in `hears`, how long ago (ms, the sender's clock) the sender last
    /// heard it. A receiver that no longer hears that server counts its silence from
    /// then (less the clock-rate allowance), not from when this heartbeat arrived, so a
    /// crashed holder's groups are not held back by up to a lease while the others
    /// still list it. `None` from agents that predate it: the arrival time counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ago: Option<BTreeMap<String, u64>>,
    /// The sender counts its own vote (its `[quorum] ping` / `http` targets answer).
    #[serde(default = "yes")]
    pub vote: bool,
    /// Data marks the sender knows: for each `mirror-disk` resource (`group/resource`),
    /// a max-register the agents of its two servers raise to record which of them hold
    /// the newest data ([`crate::marks`]). Every server keeps and echoes the highest
    /// value it has seen, so a quorum remembers it across a double failure. Not sent
    /// when empty (agents that predate it send none and ignore it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, u64>,
}

fn yes() -> bool {
    true
}

impl PeerMessage {
    /// The report of group `name`, the `gi`-th group of the configuration. Every server
    /// runs the same configuration (digest agreement), so it is almost always at index
    /// `gi`: one comparison instead of a search through every group (the engine looks up
    /// each group in each peer's message several times per step, which made a step
    /// quadratic in the number of groups).
    pub fn group(&self, gi: usize, name: &str) -> Option<&GroupReport> {
        match self.groups.get(gi) {
            Some(r) if *r.name == *name => Some(r),
            _ => self.groups.iter().find(|r| *r.name == *name),
        }
    }

    /// The same message as `other` but for what only the passing of time changes on the
    /// sender (how long each group has been in its state, how long ago it heard each
    /// server). A receiver that already acted on `other` learns from this one only that
    /// the sender and the servers it hears are still there. Every field is named here,
    /// so that a field added to the message must be sorted into one of the two kinds.
    pub fn same_but_clocks(&self, other: &PeerMessage) -> bool {
        let PeerMessage {
            digest,
            incarnation,
            ready,
            quorum,
            refused,
            leaving,
            groups,
            intents,
            hears,
            heard,
            heard_ago,
            vote,
            marks,
        } = self;
        *incarnation == other.incarnation
            && *ready == other.ready
            && *quorum == other.quorum
            && *refused == other.refused
            && *leaving == other.leaving
            && *vote == other.vote
            && heard_ago.is_some() == other.heard_ago.is_some()
            && groups.len() == other.groups.len()
            && groups
                .iter()
                .zip(&other.groups)
                .all(|(a, b)| a.same_but_clock(b))
            && hears == &other.hears
            && heard == &other.heard
            && marks == &other.marks
            && intents == &other.intents
            && digest == &other.digest
    }
}

impl GroupReport {
    /// The same report as `other` but for how long the group has been in its state
    /// (every field is named, so a field added to the report must be sorted in here).
    pub fn same_but_clock(&self, other: &GroupReport) -> bool {
        let GroupReport {
            name,
            state,
            epoch,
            max_epoch,
            excluded,
            seen_holder,
            state_ms: _,
            ack,
        } = self;
        *state == other.state
            && *epoch == other.epoch
            && *max_epoch == other.max_epoch
            && *excluded == other.excluded
            && seen_holder == &other.seen_holder
            && ack == &other.ack
            && name == &other.name
    }
}

/// Result of a resource action or recovery script, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable code (`timeout`, `command-failed`, `fenced`, …).
    pub code: String,
    pub message: String,
    /// What failed, typed (the code is its stable name for events and people).
    #[serde(default)]
    pub cause: Cause,
}

impl Failure {
    /// A failure without a more precise cause.
    pub fn other(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
            cause: Cause::Other,
        }
    }
}

/// Why a resource action or recovery script failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Cause {
    /// It did not finish within its deadline (what it started was stopped).
    Timeout,
    /// A newer epoch holds the resource: `holder` claimed it with `epoch`, and the
    /// provider refused to overwrite that (invariant 3).
    Fenced { holder: String, epoch: u64 },
    /// The cloud's API did not answer usefully (timeouts, throttling, 5xx).
    ApiUnavailable,
    /// The cloud's API refused the request with this error code (permissions, IDs).
    Rejected { code: String },
    /// A command ran and failed, or could not be started.
    Command,
    #[default]
    Other,
}

/// Outcome of a resource check during re-adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    Active,
    Inactive,
    Degraded,
    Error,
}

/// Outcome of one monitor poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeOutcome {
    Ok {
        latency_ms: u64,
        detail: Option<String>,
    },
    Failed {
        latency_ms: u64,
        code: String,
        message: String,
        api_error: bool,
    },
}

/// Operator commands; most become intents that spread to every server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    GroupStart {
        group: String,
        on: Option<String>,
    },
    GroupStop {
        group: String,
    },
    GroupMove {
        group: String,
        to: Option<String>,
    },
    ClusterSuspend,
    ClusterResume,
    /// Every agent deactivates its groups and exits.
    ClusterStop,
    MonitorSuspend {
        monitor: String,
    },
    MonitorResume {
        monitor: String,
    },
    TimeoutSet {
        heartbeat_timeout_ms: u64,
        monitor_factor_pct: u32,
        duration_ms: u64,
    },
    TimeoutClear,
    /// This agent only: deactivate everything and exit (SIGTERM).
    Shutdown,
}

/// Why a command was refused. `code()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum CommandError {
    #[error("unknown group `{0}`")]
    UnknownGroup(String),
    #[error("unknown server `{0}`")]
    UnknownServer(String),
    #[error("server `{server}` is not in group `{group}`'s server list")]
    NotInGroup { group: String, server: String },
    #[error("unknown monitor `{0}`")]
    UnknownMonitor(String),
    #[error("no other server can take group `{0}` now")]
    NoTarget(String),
    #[error("{0}")]
    Invalid(String),
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownGroup(_) => "unknown-group",
            CommandError::UnknownServer(_) => "unknown-server",
            CommandError::NotInGroup { .. } => "not-in-group",
            CommandError::UnknownMonitor(_) => "unknown-monitor",
            CommandError::NoTarget(_) => "no-target",
            CommandError::Invalid(_) => "invalid",
        }
    }
}

/// Everything the engine reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Tick,
    Heartbeat {
        from: String,
        path: usize,
        msg: Box<PeerMessage>,
        /// The newest heartbeat heard from `from` on any path (the shell compares the
        /// sender's sequence numbers). An older one, overtaken on a faster path, still
        /// proves its path alive, but its content does not replace the newer one's (a
        /// group the sender has just released would otherwise look held again).
        newest: bool,
    },
    ActionDone {
        id: ActionId,
        result: Result<(), Failure>,
    },
    CheckDone {
        id: ActionId,
        result: CheckResult,
        detail: String,
    },
    ProbeDone {
        id: ActionId,
        outcome: ProbeOutcome,
    },
    /// Another datagram of a heartbeat already given as [`Input::Heartbeat`] (the same
    /// message, sent on another path in the same send): it proves only that `path` to
    /// `from` is alive.
    PathHeard {
        from: String,
        path: usize,
    },
    /// The witness answered an [`Action::AskWitness`] (or did not: `granted: false`).
    WitnessReply {
        /// When the request was sent, on this server's clock: a grant counts from then.
        sent_at: crate::time::Millis,
        granted: bool,
        /// Highest epoch per group the witness has recorded (acknowledges claims).
        epochs: BTreeMap<String, u64>,
        detail: String,
    },
    /// Result of checking the `[quorum] ping` / `http` targets.
    Reachability {
        ok: bool,
        detail: String,
    },
    /// The agent raises data mark `key` to `value` ([`crate::marks`]); a lower or equal
    /// value, or a key that names no `mirror-disk` resource, changes nothing.
    Mark {
        key: String,
        value: u64,
    },
}

/// Everything the engine asks the shell to do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Persist the highest epoch of a group before any resource is touched with it.
    PersistEpoch {
        group: String,
        epoch: u64,
    },
    /// Persist the groups this server holds (for re-adoption after a restart), and
    /// whether its self-fence clock runs (quorum lost while holding: `Boot::fencing`).
    PersistOwnership {
        groups: BTreeMap<String, (u64, GroupState)>,
        fencing: bool,
    },
    Activate {
        id: ActionId,
        group: String,
        resource: String,
        epoch: u64,
        timeout_ms: u64,
        attempt: u32,
    },
    Deactivate {
        id: ActionId,
        group: String,
        resource: String,
        epoch: u64,
        timeout_ms: u64,
        attempt: u32,
        /// A self-fence stop (quorum lost) of a resource with a local self-fence stop
        /// (`FenceStop::Local`): only its local part runs, no cloud call.
        fence: bool,
    },
    Check {
        id: ActionId,
        group: String,
        resource: String,
        epoch: u64,
        timeout_ms: u64,
    },
    Probe {
        id: ActionId,
        monitor: String,
        timeout_ms: u64,
    },
    RecoveryScript {
        id: ActionId,
        monitor: String,
        script: String,
        timeout_ms: u64,
    },
    /// Run `[agent] shutdown_command` or `reboot_command`, or, when `fence` is set (the
    /// server must be gone within the fence deadline: `[quorum] on_loss`,
    /// `on_fence_timeout`), reset or power off at once (`[agent] fence_method`).
    SystemCommand {
        which: FinalAction,
        reason: String,
        fence: bool,
    },
    /// The agent should exit now (its groups are offline, or a final action said so).
    Exit {
        reason: String,
    },
    Emit {
        event: Box<Event>,
    },
    /// Ask the witness for its vote for this server's partition.
    AskWitness {
        /// Servers this server hears (itself included), sorted.
        partition: Vec<String>,
        lease_ms: u64,
        /// Highest epoch per group this server knows.
        epochs: BTreeMap<String, u64>,
    },
}

// ------------------------------------------------------------------------------------
// Status
// ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStatus {
    pub path: usize,
    pub up: bool,
    /// Milliseconds since the last heartbeat on this path (None: never heard).
    pub last_heard_ms_ago: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub is_self: bool,
    pub up: bool,
    pub ready: bool,
    pub quorum: bool,
    pub refused: bool,
    pub digest_matches: bool,
    pub paths: Vec<PathStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    /// Summary state across the cluster.
    pub state: GroupState,
    pub active_on: Option<String>,
    pub epoch: u64,
    /// Milliseconds this server has seen the group in its current state.
    pub since_ms_ago: u64,
    pub desired: String,
    pub excluded_on: Vec<String>,
    pub per_server: BTreeMap<String, GroupState>,
    /// The group's self-fence deadline `F_g` and takeover bound `T + W_g` (ms): how long
    /// a server cut off from the majority has to stop it, and how long the others wait
    /// after losing its holder (docs/src/split-brain.md).
    #[serde(default)]
    pub fence_ms: u64,
    #[serde(default)]
    pub takeover_after_ms: u64,
    /// The group's resources with their state on the server that reports (the holder's
    /// report is the one that tells where they run).
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
}

/// One resource of a group as the reporting server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    pub kind: String,
    pub state: ResourceState,
}

/// A resource's state on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceState {
    Offline,
    /// A restarted agent checks whether it is still active.
    Checking,
    Activating,
    Online,
    Deactivating,
    /// Its activation or deactivation failed (the group is failed or stuck).
    Failed,
    /// The group is failed or stuck and this resource was not the one that failed.
    Unknown,
}

impl ResourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Offline => "offline",
            ResourceState::Checking => "checking",
            ResourceState::Activating => "activating",
            ResourceState::Online => "online",
            ResourceState::Deactivating => "deactivating",
            ResourceState::Failed => "failed",
            ResourceState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub name: String,
    pub kind: String,
    /// `normal`, `warning`, `error`, `suspended`, `idle` (timing active, group not here),
    /// `waiting` (wait_to_start), `init`.
    pub state: String,
    pub last_latency_ms: Option<u64>,
    pub last_error: Option<String>,
    pub fail_streak: u32,
    pub scripts: u32,
    pub restarts: u32,
    pub failovers: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub cluster: String,
    pub server: String,
    pub digest: String,
    pub ready: bool,
    pub quorum: bool,
    /// Votes this server counts now and the cluster's total.
    #[serde(default)]
    pub votes_heard: usize,
    #[serde(default)]
    pub votes_total: usize,
    /// Witness state: `none` (not configured), `granted`, `not-granted: <why>`.
    #[serde(default)]
    pub witness: String,
    /// `[quorum] ping` / `http` targets answer (true when none are configured).
    #[serde(default = "yes")]
    pub reachable: bool,
    /// The split-brain timing in force (ms): lease, fence, takeover wait.
    #[serde(default)]
    pub timing: Option<crate::config::timing::Timing>,
    pub refused: bool,
    pub suspended: bool,
    pub stopping: bool,
    pub heartbeat_timeout_ms: u64,
    pub timeout_override_remaining_ms: Option<u64>,
    pub monitor_factor_pct: u32,
    pub servers: Vec<ServerStatus>,
    pub groups: Vec<GroupStatus>,
    pub monitors: Vec<MonitorStatus>,
    /// Data marks this server knows, with whether a quorum holds each ([`crate::marks`]).
    #[serde(default)]
    pub marks: BTreeMap<String, MarkStatus>,
}

/// One data mark as this server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkStatus {
    pub value: u64,
    /// Servers (this one included) and the witness whose votes count now and that hold
    /// this value or a higher one: more than half of the cluster's votes means a quorum
    /// remembers it.
    pub held_by: Vec<String>,
    pub quorum: bool,
}
