//! The validated configuration model: [`Config`] and the sections, servers, groups,
//! resources and monitors it holds, as the rest of the workspace uses them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    timing, ApiSection, AwsSection, AzureSection, Dur, GcpSection, MetricsSection, NotifySection,
};

/// Default UDP port for heartbeats when an interconnect gives only an address.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7421;
/// Name of the pseudo-target that means "every group on this server".
pub const LOCAL_SERVER_TARGET: &str = "local-server";
/// Most keys accepted besides `key_file` (a rotation needs one).
pub const MAX_ACCEPT_KEY_FILES: usize = 3;

// ---------------------------------------------------------------------------------------
// Sections read as written (validation checks them and keeps them as they are)
// ---------------------------------------------------------------------------------------

/// `[heartbeat]`: how servers watch each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    /// How often each server sends a heartbeat on every interconnect path. Default `200ms`.
    pub interval: Dur,
    /// A path is down when silent this long; a server is down when all its paths are.
    /// At least 3 × `interval`. Default `1s`.
    pub timeout: Dur,
    /// UDP port used when an interconnect entry gives no port. Default 7421.
    pub port: u16,
    /// After the agent starts, how long it listens before it may start groups, so that it
    /// first learns what its peers run. Default: `timeout` + 2 × `interval`.
    pub startup_wait: Option<Dur>,
    /// Encrypt heartbeats (ChaCha20-Poly1305 with a key derived from the cluster key), so
    /// that names, states and operator intents are not readable on the interconnects.
    /// Default false (they are authenticated either way).
    pub encrypt: bool,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval: Dur::from_ms(200),
            timeout: Dur::from_ms(1000),
            port: DEFAULT_HEARTBEAT_PORT,
            startup_wait: None,
            encrypt: false,
        }
    }
}

impl HeartbeatSection {
    pub fn startup_wait(&self) -> Dur {
        self.startup_wait.unwrap_or(Dur::from_ms(
            self.timeout
                .ms()
                .saturating_add(self.interval.ms().saturating_mul(2)),
        ))
    }
}

/// `[agent]`: settings of the agent process itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Deadline for deactivating every group when the agent stops. Default `60s`.
    pub shutdown_timeout: Dur,
    /// State directory (epochs, ownership, alert log). Default `/var/lib/baton`;
    /// `--state-dir` overrides it.
    pub state_dir: PathBuf,
    /// Command run by the final action `shutdown`. Default `systemctl poweroff`.
    pub shutdown_command: String,
    /// Command run by the final action `reboot`. Default `systemctl reboot`.
    pub reboot_command: String,
    /// How the server fences itself (`[quorum] on_loss` and `on_fence_timeout` set to
    /// `reboot` or `shutdown`): an immediate reset, not the orderly commands above.
    /// Default `sysrq`.
    pub fence_method: FenceMethod,
    /// The kernel's magic SysRq trigger written by `fence_method = "sysrq"`. Default
    /// `/proc/sysrq-trigger` (tests point it at a file).
    pub sysrq_trigger: PathBuf,
    /// Immediate reboot for `fence_method = "force"` and when the SysRq write fails.
    /// Default `reboot -f -f`.
    pub force_reboot_command: String,
    /// Immediate power-off, as `force_reboot_command`. Default `poweroff -f -f`.
    pub force_poweroff_command: String,
    /// Variables of the agent's environment passed to scripts and commands, which
    /// otherwise get only `PATH`, `HOME`, `LANG` and their `BATON_*` variables.
    pub script_env: Vec<String>,
    /// A watchdog device (`/dev/watchdog`) the agent's main loop feeds: if the loop
    /// stalls (or the process is stopped), the kernel resets the server. Optional; the
    /// systemd watchdog (`WatchdogSec=`) is fed the same way when the unit sets it.
    pub watchdog_device: Option<PathBuf>,
    /// Alert log rotation size. Default 8 MiB.
    pub alert_log_max_bytes: u64,
    /// Rotated alert log files kept. Default 4.
    pub alert_log_keep: u32,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            shutdown_timeout: Dur::from_ms(60_000),
            state_dir: PathBuf::from("/var/lib/baton"),
            shutdown_command: "systemctl poweroff".into(),
            reboot_command: "systemctl reboot".into(),
            fence_method: FenceMethod::Sysrq,
            sysrq_trigger: PathBuf::from("/proc/sysrq-trigger"),
            force_reboot_command: "reboot -f -f".into(),
            force_poweroff_command: "poweroff -f -f".into(),
            script_env: Vec::new(),
            watchdog_device: None,
            alert_log_max_bytes: 8 << 20,
            alert_log_keep: 4,
        }
    }
}

/// `[agent] fence_method`: how a server that must fence itself goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FenceMethod {
    /// Write `b` (reset) or `o` (power off) to `sysrq_trigger`: the kernel resets at
    /// once, without syncing or unmounting; `force_*_command` if the write fails.
    #[default]
    Sysrq,
    /// Run `force_reboot_command` / `force_poweroff_command` (`reboot -f -f`).
    Force,
    /// Run the orderly `reboot_command` / `shutdown_command` (slow: seconds to minutes).
    Command,
}

impl FenceMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceMethod::Sysrq => "sysrq",
            FenceMethod::Force => "force",
            FenceMethod::Command => "command",
        }
    }
}

/// `[quorum]`: network partition resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumSection {
    /// Extra vote for clusters with an even number of servers.
    pub witness: Witness,
    /// Addresses that must answer ping for this server to keep its vote.
    pub ping: Vec<String>,
    /// URLs that must answer `HEAD` with 200 for this server to keep its vote.
    pub http: Vec<String>,
    /// What a server does when it loses quorum. Default `stop-groups`.
    pub on_loss: OnQuorumLoss,
    /// Self-fence deadline: a server that loses quorum has its groups deactivated within
    /// this time (resource stop timeouts are cut to what is left of it). Default: half the
    /// heartbeat timeout.
    pub fence_timeout: Option<Dur>,
    /// What a server does when its groups are not all deactivated by the self-fence
    /// deadline (a resource did not stop). Default `reboot`, an immediate reset
    /// (`[agent] fence_method`): the others take over after the takeover wait whatever
    /// happens here.
    pub on_fence_timeout: OnFenceTimeout,
    /// Extra wait after a server is declared down before its groups are activated
    /// elsewhere. Default (and minimum): derived from the heartbeat settings so that a
    /// server cut off from the majority has fenced itself first (see
    /// docs/src/split-brain.md). A larger value is kept.
    pub takeover_wait: Option<Dur>,
    /// How often ping / http targets are checked. Default `1s`.
    pub check_interval: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFenceTimeout {
    #[default]
    Reboot,
    Shutdown,
    /// Only raise a critical event (the operator accepts the risk of a double start).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Witness {
    #[default]
    None,
    Http {
        url: String,
    },
    S3 {
        bucket: String,
        key: String,
        #[serde(default)]
        region: Option<String>,
    },
    Dynamodb {
        table: String,
        #[serde(default)]
        item: Option<String>,
        #[serde(default)]
        region: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnQuorumLoss {
    #[default]
    StopGroups,
    Shutdown,
    Reboot,
}

// ---------------------------------------------------------------------------------------
// Validated model
// ---------------------------------------------------------------------------------------

/// What to do when recovery is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FinalAction {
    /// Leave things as they are and raise a critical event.
    #[default]
    None,
    /// Stop the group on this server and do not move it.
    StopGroup,
    /// Stop the agent on this server (its groups fail over).
    StopCluster,
    /// Run `[agent] shutdown_command`.
    Shutdown,
    /// Run `[agent] reboot_command`.
    Reboot,
}

impl FinalAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalAction::None => "none",
            FinalAction::StopGroup => "stop-group",
            FinalAction::StopCluster => "stop-cluster",
            FinalAction::Shutdown => "shutdown",
            FinalAction::Reboot => "reboot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub path: String,
    /// SHA-256 over the canonical form of the file (comments and layout do not count).
    pub digest: String,
    pub cluster_name: String,
    pub key_file: PathBuf,
    /// Keys accepted besides `key_file` during a key rotation (`[cluster]
    /// accept_key_files`); not part of the digest, so the servers of a cluster agree on
    /// their configuration while a rotation goes from one server to the next.
    pub accept_key_files: Vec<PathBuf>,
    pub heartbeat: HeartbeatSection,
    pub agent: AgentSection,
    pub servers: Vec<Server>,
    pub quorum: QuorumSection,
    pub groups: Vec<Group>,
    pub monitors: Vec<Monitor>,
    pub notify: NotifySection,
    pub metrics: MetricsSection,
    pub aws: AwsSection,
    pub azure: AzureSection,
    pub gcp: GcpSection,
    pub api: ApiSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub name: String,
    /// Lower is preferred; default is the position in the file (1-based).
    pub priority: u32,
    pub zone: Option<String>,
    /// One entry per interconnect path; path i of every server forms network i.
    pub interconnects: Vec<SocketAddr>,
    pub api: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    /// Failover order: first is preferred.
    pub servers: Vec<String>,
    /// Servers on which the group may start when the cluster starts (default: all).
    pub startup_servers: Vec<String>,
    pub failback: bool,
    pub auto_start: bool,
    /// How long this group's resources need to stop in a self-fence, declared
    /// (`fence_budget`); when not declared, the sum over its resources of
    /// `(deactivate_retries + 1) ×` the time one stop may take (`deactivate_timeout`, or
    /// the kind's bound for a local self-fence stop: [`FenceStop`]). The group's self-fence deadline is the smaller of this and the
    /// agent's `[quorum] fence_timeout` ([`Config::group_timing`]).
    pub fence_budget: Option<Dur>,
    /// `sequential` (default): one resource at a time, dependencies first, then file
    /// order. `parallel`: only `depends_on` orders them; resources whose dependencies
    /// are active start together, and stop together in reverse.
    pub resource_order: ResourceOrder,
    /// In activation order (dependencies first).
    pub resources: Vec<Resource>,
}

/// How a group's resources are started and stopped (`resource_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceOrder {
    /// One at a time, in activation order; stops in reverse.
    #[default]
    Sequential,
    /// By dependency depth: every resource of a depth at once, the next depth when all
    /// of them are active; stops by depth in reverse.
    Parallel,
}

impl Group {
    /// The steps that activate the resources `plan` (indices in activation order, a
    /// subset of the group's): each step is a set of resources started together, the
    /// next step once all of them are active. Sequential: one resource per step.
    /// Parallel: one step per dependency depth (a resource's depth is one more than
    /// the deepest resource it depends on), in activation order within the step. Stops
    /// run the steps of the same plan in reverse.
    pub fn activation_steps(&self, plan: &[usize]) -> Vec<Vec<usize>> {
        match self.resource_order {
            ResourceOrder::Sequential => plan.iter().map(|&ri| vec![ri]).collect(),
            ResourceOrder::Parallel => {
                // Activation order puts every dependency first, so one pass finds depths.
                let mut depth = vec![0usize; self.resources.len()];
                for (ri, r) in self.resources.iter().enumerate() {
                    depth[ri] = r
                        .depends_on
                        .iter()
                        .filter_map(|d| self.resources[..ri].iter().position(|x| &x.name == d))
                        .map(|di| depth[di] + 1)
                        .max()
                        .unwrap_or(0);
                }
                let mut steps: Vec<(usize, Vec<usize>)> = Vec::new();
                for &ri in plan {
                    let Some(&dp) = depth.get(ri) else { continue };
                    match steps.iter_mut().find(|(d, _)| *d == dp) {
                        Some((_, s)) => s.push(ri),
                        None => steps.push((dp, vec![ri])),
                    }
                }
                steps.sort_by_key(|(d, _)| *d);
                steps.into_iter().map(|(_, s)| s).collect()
            }
        }
    }

    /// What the group's resources need to stop in a self-fence, in ms: the declared
    /// budget, or every stop attempt of every resource (they stop one after the other)
    /// at its timeout, or at its kind's bound for a local self-fence stop
    /// ([`FenceStop::Local`]).
    pub fn stop_budget_ms(&self) -> u64 {
        self.fence_budget.map(|d| d.ms()).unwrap_or_else(|| {
            self.resources
                .iter()
                .map(|r| {
                    let per_attempt = match r.fence_stop {
                        FenceStop::Full => r.deactivation.timeout.ms(),
                        FenceStop::Local { bound_ms } => bound_ms.min(r.deactivation.timeout.ms()),
                    };
                    per_attempt.saturating_mul(u64::from(r.deactivation.retries) + 1)
                })
                .fold(0u64, u64::saturating_add)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionPolicy {
    pub timeout: Dur,
    pub retries: u32,
    pub final_action: FinalAction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub kind: String,
    pub name: String,
    pub depends_on: Vec<String>,
    pub activation: ActionPolicy,
    /// Failovers this resource's activation failures may cause before the final action.
    pub failover_threshold: u32,
    pub deactivation: ActionPolicy,
    /// How the resource stops while its server self-fences (`fence_stop`).
    pub fence_stop: FenceStop,
    /// Kind-specific keys (common values).
    pub params: toml::Table,
    /// Per-server overrides of kind-specific keys.
    pub server_params: BTreeMap<String, toml::Table>,
}

/// How a resource stops while its server self-fences (quorum lost while holding its
/// group; docs/src/split-brain.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum FenceStop {
    /// Its normal stop, within `deactivate_timeout` (and the fence deadline).
    Full,
    /// Only the local part of its stop, within `bound_ms` (the kind's declared bound; the
    /// group's budget counts at most `deactivate_timeout` per attempt): no cloud call. For kinds whose cloud object (a route,
    /// an Elastic IP association, a DNS record) holds one value, carries the group's
    /// epoch, and is taken over by the next owner's fenced write whatever the previous
    /// owner did ([`crate::config::KindCatalog::local_fence_stop_ms`]).
    Local { bound_ms: u64 },
}

impl FenceStop {
    /// Is a self-fence stop of this resource only its local part?
    pub fn is_local(&self) -> bool {
        matches!(self, FenceStop::Local { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorTiming {
    /// Poll whenever the agent runs.
    Always,
    /// Poll only while the monitor's group is active on this server.
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnApiError {
    Ignore,
    #[default]
    Warn,
    Recover,
}

/// What a monitor's recovery acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum RecoveryTarget {
    Group(String),
    Resource { group: String, resource: String },
    LocalServer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    pub target: RecoveryTarget,
    /// Script run before restart/failover (step 1), `script_retries` times.
    pub script: Option<String>,
    pub script_retries: u32,
    /// Restarts of the target on this server (step 2).
    pub restart_retries: u32,
    /// Failovers of the target's group (step 3).
    pub failover_retries: u32,
    pub final_action: FinalAction,
    /// Counters reset after the monitor has been normal this long.
    pub reset_after: Dur,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Monitor {
    pub kind: String,
    pub name: String,
    pub interval: Dur,
    pub timeout: Dur,
    /// Consecutive failed polls tolerated before the monitor is in error.
    pub retries: u32,
    pub wait_to_start: Dur,
    pub timing: MonitorTiming,
    /// The group whose activity gates `timing = "active"`.
    pub group: Option<String>,
    /// For kind `resource`: the resource whose check is polled.
    pub resource: Option<String>,
    pub on_api_error: OnApiError,
    pub recovery: Option<Recovery>,
    pub params: toml::Table,
    pub server_params: BTreeMap<String, toml::Table>,
}

impl Config {
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
    pub fn monitor(&self, name: &str) -> Option<&Monitor> {
        self.monitors.iter().find(|m| m.name == name)
    }
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }
    /// Number of interconnect paths (every server has the same number).
    pub fn paths(&self) -> usize {
        self.servers.first().map_or(0, |s| s.interconnects.len())
    }
    /// Votes in the cluster: one per server, plus one for a configured witness.
    pub fn votes(&self) -> usize {
        self.servers.len() + usize::from(self.quorum.witness != Witness::None)
    }

    /// The split-brain timing of group `gi` for a heartbeat timeout: the agent's
    /// [`Config::timing`] with the self-fence deadline `F_g = min(F, the group's stop
    /// budget)` and the takeover wait derived from `F_g` (a configured `takeover_wait`,
    /// at least the agent-wide minimum, is kept). `F_g` is at least the heartbeat
    /// interval, as `fence_timeout` is: an agent that restarts holding a group needs
    /// about that long to hear its peers and regain quorum before the deadline counts
    /// against it (a shorter one would reset a restarting server again and again).
    pub fn group_timing(&self, gi: usize, timeout_ms: u64) -> timing::Timing {
        let agent = self.timing(timeout_ms);
        let budget = self
            .groups
            .get(gi)
            .map_or(agent.fence_ms, |g| g.stop_budget_ms())
            .max(self.heartbeat.interval.ms());
        agent.for_group(budget, self.quorum.takeover_wait.map(|d| d.ms()))
    }

    /// The split-brain timing rules for a heartbeat timeout (`timeout_ms`: the configured
    /// one, or a temporary one).
    pub fn timing(&self, timeout_ms: u64) -> timing::Timing {
        timing::Timing::derive(
            self.heartbeat.interval.ms(),
            timeout_ms,
            self.quorum.fence_timeout.map(|d| d.ms()),
            self.quorum.takeover_wait.map(|d| d.ms()),
        )
    }
}

impl Resource {
    /// Kind-specific keys with `server`'s overrides applied.
    pub fn params_for(&self, server: &str) -> toml::Table {
        merge_tables(&self.params, self.server_params.get(server))
    }
}

impl Monitor {
    pub fn params_for(&self, server: &str) -> toml::Table {
        merge_tables(&self.params, self.server_params.get(server))
    }
}

pub(super) fn merge_tables(base: &toml::Table, over: Option<&toml::Table>) -> toml::Table {
    let mut out = base.clone();
    if let Some(over) = over {
        for (k, v) in over {
            match (out.get_mut(k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                    *b = merge_tables(b, Some(o));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}
