//! The cluster configuration: one TOML file, the same on every server.
//!
//! Loading is two-phase: the text is parsed (syntax), deserialised into typed sections
//! (unknown keys, types, durations), then validated across fields (names, references,
//! dependency cycles, timing sanity). Every problem becomes a [`Diagnostic`] naming the
//! file, line, column and key. Kind-specific keys of resources and monitors are checked by
//! a [`KindCatalog`] supplied by the caller (the providers crate), so new kinds plug in
//! without touching this module.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod api;
mod aws;
mod notify;
pub mod timing;
pub use api::{ApiRole, ApiSection, Cidr};
pub use aws::AwsSection;
pub use notify::{
    id_matches, CloudWatchSection, DeliverySection, LogSinkSection, MailSection, MailSecurity,
    MetricKind, MetricsSection, NotifySection, SnsSection, WebhookSection,
};

/// Default UDP port for heartbeats when an interconnect gives only an address.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7421;
/// Name of the pseudo-target that means "every group on this server".
pub const LOCAL_SERVER_TARGET: &str = "local-server";

// ---------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------

/// A duration written as a string with a unit: `200ms`, `5s`, `2m`, `1h`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    pub fn from_ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration any key accepts: 7 days. Keys that bound the agent's reactions
/// (heartbeat, fencing, shutdown, monitors, actions) have tighter limits, checked in
/// validation; this one keeps every sum and product of durations far from overflow (a
/// deadline `now + d` never overflows a monotonic clock).
pub const MAX_DURATION: Dur = Dur(Duration::from_secs(7 * 24 * 3600));

/// Parse a duration string; the error is written for a person.
pub fn parse_duration(s: &str) -> Result<Dur, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: use a number and a unit, like 200ms, 5s, 2m or 1h".into());
    }
    let d = humantime::parse_duration(t).map(Dur).map_err(|_| {
        format!("invalid duration '{s}': use a number and a unit, like 200ms, 5s, 2m or 1h")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration '{t}' is too long: durations are at most 7 days (7d)"
        ));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"200ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\" (with quotes)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Raw (as written) sections
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: RawCluster,
    #[serde(default)]
    heartbeat: HeartbeatSection,
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    server: Vec<RawServer>,
    #[serde(default)]
    quorum: QuorumSection,
    #[serde(default)]
    group: Vec<RawGroup>,
    #[serde(default)]
    monitor: Vec<toml::Table>,
    #[serde(default)]
    notify: NotifySection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    aws: AwsSection,
    #[serde(default)]
    api: ApiSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    key_file: PathBuf,
    #[serde(default)]
    accept_key_files: Vec<PathBuf>,
}

/// Most keys accepted besides `key_file` (a rotation needs one).
pub const MAX_ACCEPT_KEY_FILES: usize = 3;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    zone: Option<String>,
    interconnects: Vec<String>,
    api: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    servers: Vec<String>,
    #[serde(default)]
    startup_servers: Option<Vec<String>>,
    #[serde(default)]
    failback: bool,
    #[serde(default = "yes")]
    auto_start: bool,
    #[serde(default)]
    resource: Vec<toml::Table>,
}

fn yes() -> bool {
    true
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
    /// In activation order (dependencies first).
    pub resources: Vec<Resource>,
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
    /// Kind-specific keys (common values).
    pub params: toml::Table,
    /// Per-server overrides of kind-specific keys.
    pub server_params: BTreeMap<String, toml::Table>,
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

fn merge_tables(base: &toml::Table, over: Option<&toml::Table>) -> toml::Table {
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

// ---------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `group[0].resource[1].depends_on`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lvl = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {lvl}", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, " at `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The configuration could not be loaded; `diagnostics` has at least one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} in {file}", summary(.diagnostics))]
pub struct ConfigError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

fn summary(d: &[Diagnostic]) -> String {
    let n = d.iter().filter(|d| d.level == Level::Error).count();
    if n == 1 {
        "1 configuration error".to_string()
    } else {
        format!("{n} configuration errors")
    }
}

impl ConfigError {
    /// Stable code for the API and CLI.
    pub fn code(&self) -> &'static str {
        "config-invalid"
    }
}

/// A successfully loaded configuration plus its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Checks the kind-specific keys of resources and monitors. Implemented by the providers.
pub trait KindCatalog {
    fn resource_kinds(&self) -> Vec<&'static str>;
    fn monitor_kinds(&self) -> Vec<&'static str>;
    /// Validate a resource's kind-specific keys (already merged for one server).
    /// `Err((key, message))`, key relative to the resource table.
    fn check_resource(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)>;
    fn check_monitor(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)>;
}

/// A catalog that accepts any kind (used by the engine's own tests).
pub struct AnyKind;

impl KindCatalog for AnyKind {
    fn resource_kinds(&self) -> Vec<&'static str> {
        vec![]
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        vec![]
    }
    fn check_resource(&self, _: &str, _: &toml::Table) -> Result<(), (Option<String>, String)> {
        Ok(())
    }
    fn check_monitor(&self, _: &str, _: &toml::Table) -> Result<(), (Option<String>, String)> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

type KeyPath = Vec<Seg>;

fn path_string(p: &[Seg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                if k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    s.push_str(k);
                } else {
                    s.push_str(&format!("\"{k}\""));
                }
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
    out: Vec<Diagnostic>,
}

impl Diags<'_> {
    fn push(&mut self, level: Level, path: &[Seg], message: impl Into<String>) {
        let offset = self.doc.as_ref().and_then(|d| locate(d, path)).unwrap_or(0);
        let (line, column) = line_col(self.text, offset);
        self.out.push(Diagnostic {
            level,
            file: self.file.to_string(),
            line,
            column,
            key: escape_controls(&path_string(path)),
            message: escape_controls(&message.into()),
        });
    }
    fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        self.push(Level::Error, path, message)
    }
    fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        self.push(Level::Warning, path, message)
    }
    fn has_errors(&self) -> bool {
        self.out.iter().any(|d| d.level == Level::Error)
    }
}

/// Messages quote values from the file; keep a diagnostic on one line and free of
/// terminal control characters (`name = "a\nb"` is shown as `a\nb`).
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of the best location for `path`: the key itself if present, otherwise the
/// closest enclosing table or value.
fn locate(doc: &toml_edit::ImDocument<&str>, path: &[Seg]) -> Option<usize> {
    locate_in_table(doc.as_table(), path, None)
}

fn locate_in_table(t: &toml_edit::Table, rest: &[Seg], mut best: Option<usize>) -> Option<usize> {
    let Some((first, tail)) = rest.split_first() else {
        return best;
    };
    let Seg::Key(key) = first else {
        return best;
    };
    if let Some(span) = t.key(key).and_then(|kk| kk.span()) {
        best = Some(span.start);
    }
    let Some(item) = t.get(key) else {
        return best;
    };
    match item {
        toml_edit::Item::Table(sub) => {
            if t.key(key).and_then(|kk| kk.span()).is_none() {
                if let Some(sp) = sub.span() {
                    best = Some(sp.start);
                }
            }
            locate_in_table(sub, tail, best)
        }
        toml_edit::Item::ArrayOfTables(a) => match tail.split_first() {
            Some((Seg::Index(i), tail2)) => match a.get(*i) {
                Some(sub) => {
                    if let Some(sp) = sub.span() {
                        best = Some(sp.start);
                    }
                    locate_in_table(sub, tail2, best)
                }
                None => best,
            },
            _ => best,
        },
        toml_edit::Item::Value(v) => locate_in_value(v, tail, best),
        toml_edit::Item::None => best,
    }
}

fn locate_in_value(v: &toml_edit::Value, rest: &[Seg], mut best: Option<usize>) -> Option<usize> {
    let Some((first, tail)) = rest.split_first() else {
        return best;
    };
    match (v, first) {
        (toml_edit::Value::InlineTable(t), Seg::Key(key)) => {
            if let Some(span) = t.key(key).and_then(|kk| kk.span()) {
                best = Some(span.start);
            }
            match t.get(key) {
                Some(sub) => locate_in_value(sub, tail, best),
                None => best,
            }
        }
        (toml_edit::Value::Array(a), Seg::Index(i)) => match a.get(*i) {
            Some(sub) => {
                if let Some(sp) = sub.span() {
                    best = Some(sp.start);
                }
                locate_in_value(sub, tail, best)
            }
            None => best,
        },
        _ => best,
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Deserialize `value` as `T`, turning a failure into a diagnostic at the failing key.
fn typed<T: DeserializeOwned>(d: &mut Diags<'_>, base: &[Seg], value: toml::Value) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path: KeyPath = base.to_vec();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            // toml appends "\nin `key`" lines; the diagnostic names the key already.
            let raw = e.inner().to_string();
            let raw = raw.lines().next().unwrap_or_default().trim_end();
            let message = humanize_serde(raw, &mut path);
            d.err(&path, message);
            None
        }
    }
}

/// Make serde's messages read like advice, and point unknown keys at themselves.
fn humanize_serde(raw: &str, path: &mut KeyPath) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            // serde_path_to_error already ends the path with the unknown key.
            if path.last() != Some(&Seg::Key(field.to_string())) {
                path.push(Seg::Key(field.to_string()));
            }
            // serde writes "`a`", "`a` or `b`", or "one of `a`, `b`, `c`".
            let expected = tail
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace("` or `", "`, `")
                .replace('`', "");
            let expected = if expected.starts_with("there are no fields") {
                "this table takes no keys".to_string()
            } else {
                format!("known keys here: {expected}")
            };
            let hint = suggest(field, &expected);
            return format!("unknown key `{field}`{hint}; {expected}");
        }
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return format!("missing required key `{field}`");
        }
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        if let Some((v, tail)) = rest.split_once('`') {
            let expected = tail
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace('`', "");
            return format!("unknown value `{v}`; expected one of: {expected}");
        }
    }
    plain_expected(&raw.replace("invalid type: ", "wrong type: found "))
}

/// Say what serde expected in TOML's words, not Rust's (`u32`, `sequence`, `struct X`).
fn plain_expected(msg: &str) -> String {
    let Some((head, expected)) = msg.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    // toml's words for a non-string where a keyword (enum value) is expected.
    if expected == "string only" {
        return "wrong type: expected a string".to_string();
    }
    let plain = match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" => "a whole number from 0 to 4294967295".to_string(),
        "u64" | "usize" => "a whole number, 0 or more".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e if e.starts_with("internally tagged enum ") => {
            "a table with a `kind` key, like { kind = \"...\", ... }".to_string()
        }
        e => e.to_string(),
    };
    format!("{head}, expected {plain}")
}

fn suggest(word: &str, expected: &str) -> String {
    let known = expected.trim_start_matches("known keys here: ").split(", ");
    match crate::suggest::closest(word, known) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// Load and validate a configuration text. `file` is used in diagnostics.
pub fn load_str(file: &str, text: &str, kinds: &dyn KindCatalog) -> Result<Loaded, ConfigError> {
    let mut d = Diags {
        file,
        text,
        doc: None,
        out: Vec::new(),
    };
    // Phase 1: syntax.
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let off = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, off);
            let msg = escape_controls(&one_line(e.message()));
            return Err(ConfigError {
                file: file.to_string(),
                diagnostics: vec![Diagnostic {
                    level: Level::Error,
                    file: file.to_string(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("this is not valid TOML: {msg}"),
                }],
            });
        }
    };
    d.doc = Some(doc);
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            // toml_edit accepted the text, so this is rare (a limit of the deserializer);
            // point at the span it gives.
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            d.out.push(Diagnostic {
                level: Level::Error,
                file: file.to_string(),
                line,
                column,
                key: String::new(),
                message: escape_controls(&format!(
                    "this is not valid TOML: {}",
                    one_line(e.message())
                )),
            });
            return Err(finish_err(d));
        }
    };
    let digest = canonical_digest(&digest_view(&table));
    let Some(raw) = typed::<RawFile>(&mut d, &[], toml::Value::Table(table)) else {
        return Err(finish_err(d));
    };
    let config = validate(&mut d, raw, file, digest, kinds);
    match config {
        Some(config) if !d.has_errors() => Ok(Loaded {
            config,
            warnings: d.out,
        }),
        _ => Err(finish_err(d)),
    }
}

/// Parser messages may span lines ("invalid table header\nexpected `.`, `]`"); a
/// diagnostic is one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The error of a configuration file that could not be read (`core` reads no files:
    /// the agent does, and reports a failure with this).
    pub fn unreadable(file: &str, error: &dyn fmt::Display) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            diagnostics: vec![Diagnostic {
                level: Level::Error,
                file: file.to_string(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the configuration file: {error}"),
            }],
        }
    }
}

/// Errors first (in the order found), then warnings.
fn finish_err(d: Diags<'_>) -> ConfigError {
    let (mut errors, warnings): (Vec<_>, Vec<_>) =
        d.out.into_iter().partition(|x| x.level == Level::Error);
    errors.extend(warnings);
    ConfigError {
        file: d.file.to_string(),
        diagnostics: errors,
    }
}

/// The table as the digest sees it: without `[cluster] accept_key_files`, which differs
/// between servers while a key rotation goes from one server to the next. (A file without
/// it has the digest it always had.)
fn digest_view(table: &toml::Table) -> std::borrow::Cow<'_, toml::Table> {
    match table.get("cluster").and_then(|c| c.as_table()) {
        Some(c) if c.contains_key("accept_key_files") => {
            let mut t = table.clone();
            if let Some(toml::Value::Table(c)) = t.get_mut("cluster") {
                c.remove("accept_key_files");
            }
            std::borrow::Cow::Owned(t)
        }
        _ => std::borrow::Cow::Borrowed(table),
    }
}

/// SHA-256 of the canonical JSON form of the parsed table (keys sorted).
pub fn canonical_digest(table: &toml::Table) -> String {
    let json = serde_json::to_string(table).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(json.as_bytes());
    hex::encode(h.finalize())
}

const RESOURCE_COMMON: &[&str] = &[
    "kind",
    "name",
    "depends_on",
    "activate_timeout",
    "activate_retries",
    "activate_final_action",
    "failover_threshold",
    "deactivate_timeout",
    "deactivate_retries",
    "deactivate_final_action",
    "server",
];

const MONITOR_COMMON: &[&str] = &[
    "kind",
    "name",
    "interval",
    "timeout",
    "retries",
    "wait_to_start",
    "timing",
    "group",
    "resource",
    "on_api_error",
    "recovery",
    "server",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceCommon {
    kind: String,
    name: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default = "d60s")]
    activate_timeout: Dur,
    #[serde(default)]
    activate_retries: u32,
    #[serde(default)]
    activate_final_action: FinalAction,
    #[serde(default = "one")]
    failover_threshold: u32,
    #[serde(default = "d60s")]
    deactivate_timeout: Dur,
    #[serde(default)]
    deactivate_retries: u32,
    #[serde(default)]
    deactivate_final_action: FinalAction,
    #[serde(default)]
    server: BTreeMap<String, toml::Table>,
}

fn d60s() -> Dur {
    Dur::from_ms(60_000)
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorCommon {
    kind: String,
    name: String,
    #[serde(default = "d30s")]
    interval: Dur,
    #[serde(default = "d60s")]
    timeout: Dur,
    #[serde(default = "one")]
    retries: u32,
    #[serde(default)]
    wait_to_start: Dur,
    #[serde(default)]
    timing: Option<MonitorTiming>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    on_api_error: OnApiError,
    #[serde(default)]
    recovery: Option<RawRecovery>,
    #[serde(default)]
    server: BTreeMap<String, toml::Table>,
}

fn d30s() -> Dur {
    Dur::from_ms(30_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecovery {
    target: String,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    script_retries: Option<u32>,
    #[serde(default = "three")]
    restart_retries: u32,
    #[serde(default = "one")]
    failover_retries: u32,
    #[serde(default)]
    final_action: FinalAction,
    #[serde(default)]
    reset_after: Option<Dur>,
}

fn three() -> u32 {
    3
}

/// Split a resource/monitor table into its common keys and its kind-specific keys.
fn split(table: &toml::Table, common: &[&str]) -> (toml::Table, toml::Table) {
    let mut c = toml::Table::new();
    let mut p = toml::Table::new();
    for (key, v) in table {
        if common.contains(&key.as_str()) {
            c.insert(key.clone(), v.clone());
        } else {
            p.insert(key.clone(), v.clone());
        }
    }
    (c, p)
}

fn parse_interconnect(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "`{s}` is not an IP address (write `10.0.110.10` or `10.0.110.10:7421`; host names are not allowed for interconnects)"
    ))
}

fn check_name(d: &mut Diags<'_>, path: &[Seg], what: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        d.err(
            path,
            format!(
                "{what} name `{name}` is not allowed: use 1 to 63 letters, digits, `-`, `_` or `.`"
            ),
        );
    }
}

/// Milliseconds in a minute, an hour, a day (per-key duration bounds).
mod ms {
    pub const MINUTE: u64 = 60_000;
    pub const HOUR: u64 = 60 * MINUTE;
    pub const DAY: u64 = 24 * HOUR;
}

/// A duration key with a tighter upper bound than [`MAX_DURATION`]: the error names the
/// key (file, line and key come with the diagnostic) and the allowed range.
fn check_max(d: &mut Diags<'_>, path: &[Seg], what: &str, v: Dur, max_ms: u64, range: &str) {
    if v.ms() > max_ms {
        d.err(
            path,
            format!("{what} {v} is too long: the allowed range is {range}"),
        );
    }
}

fn validate(
    d: &mut Diags<'_>,
    raw: RawFile,
    file: &str,
    digest: String,
    kinds: &dyn KindCatalog,
) -> Option<Config> {
    check_name(d, &[k("cluster"), k("name")], "cluster", &raw.cluster.name);

    // Heartbeat timing.
    let hb = raw.heartbeat.clone();
    if hb.interval.ms() < 10 {
        d.err(
            &[k("heartbeat"), k("interval")],
            format!(
                "heartbeat interval {} is too short: use at least 10ms",
                hb.interval
            ),
        );
    }
    if hb.timeout.ms() < hb.interval.ms().saturating_mul(3) {
        d.err(
            &[k("heartbeat"), k("timeout")],
            format!(
                "heartbeat timeout {} must be at least 3 times the interval {} (so that one or two lost packets do not mark a server down); try {}",
                hb.timeout,
                hb.interval,
                Dur::from_ms(hb.interval.ms().saturating_mul(5))
            ),
        );
    }
    check_max(
        d,
        &[k("heartbeat"), k("interval")],
        "heartbeat interval",
        hb.interval,
        ms::MINUTE,
        "10ms to 1m",
    );
    check_max(
        d,
        &[k("heartbeat"), k("timeout")],
        "heartbeat timeout",
        hb.timeout,
        10 * ms::MINUTE,
        "3 × interval to 10m",
    );
    if let Some(w) = hb.startup_wait {
        check_max(
            d,
            &[k("heartbeat"), k("startup_wait")],
            "startup_wait",
            w,
            ms::HOUR,
            "0s to 1h",
        );
    }
    if let Some(w) = hb.startup_wait {
        if w.ms() < hb.timeout.ms() {
            d.warn(
                &[k("heartbeat"), k("startup_wait")],
                format!("startup_wait {w} is shorter than the heartbeat timeout {}: a restarted server may start groups before it has heard its peers", hb.timeout),
            );
        }
    }

    // Agent.
    if raw.agent.alert_log_max_bytes < 4096 {
        d.err(&[k("agent"), k("alert_log_max_bytes")], format!("alert_log_max_bytes {} is too small: use at least 4096 (the default is 8388608, 8 MiB)", raw.agent.alert_log_max_bytes));
    }
    if raw.agent.alert_log_keep == 0 {
        d.err(
            &[k("agent"), k("alert_log_keep")],
            "alert_log_keep must be at least 1 (the file being written counts)",
        );
    }
    if raw.agent.shutdown_timeout.ms() == 0 {
        d.err(
            &[k("agent"), k("shutdown_timeout")],
            "shutdown_timeout must be longer than 0",
        );
    }
    check_max(
        d,
        &[k("agent"), k("shutdown_timeout")],
        "shutdown_timeout",
        raw.agent.shutdown_timeout,
        ms::HOUR,
        "1ms to 1h",
    );
    if !raw.agent.sysrq_trigger.is_absolute() {
        d.err(
            &[k("agent"), k("sysrq_trigger")],
            format!(
                "sysrq_trigger must be an absolute path (the default is /proc/sysrq-trigger), not `{}`",
                raw.agent.sysrq_trigger.display()
            ),
        );
    }
    for (key, cmd) in [
        ("force_reboot_command", &raw.agent.force_reboot_command),
        ("force_poweroff_command", &raw.agent.force_poweroff_command),
    ] {
        if cmd.trim().is_empty() {
            d.err(
                &[k("agent"), k(key)],
                format!("{key} must not be empty: it is what fences this server when the SysRq write fails"),
            );
        }
    }
    for (i, name) in raw.agent.script_env.iter().enumerate() {
        let valid = name
            .bytes()
            .enumerate()
            .all(|(j, b)| b == b'_' || b.is_ascii_alphabetic() || (j > 0 && b.is_ascii_digit()));
        if name.is_empty() || !valid {
            d.err(
                &[k("agent"), k("script_env"), Seg::Index(i)],
                format!("`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"),
            );
        }
    }
    if raw.agent.fence_method == FenceMethod::Command {
        d.warn(
            &[k("agent"), k("fence_method")],
            "fence_method = \"command\" fences with the orderly reboot_command / shutdown_command, which can take longer than the takeover wait: the other side may start the groups while they still run here",
        );
    }

    // Servers.
    let mut servers = Vec::new();
    let mut names = BTreeSet::new();
    let mut addrs: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if raw.server.is_empty() {
        d.err(&[k("server")], "no `[[server]]` is defined: a cluster needs at least one server (two or more for failover)");
    }
    let mut npaths: Option<usize> = None;
    for (i, s) in raw.server.iter().enumerate() {
        let sp = [k("server"), Seg::Index(i)];
        let mut p = sp.to_vec();
        p.push(k("name"));
        check_name(d, &p, "server", &s.name);
        if s.name == LOCAL_SERVER_TARGET {
            d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
        }
        if !names.insert(s.name.clone()) {
            d.err(&p, format!("server name `{}` is used twice", s.name));
        }
        let mut ics = Vec::new();
        if s.interconnects.is_empty() {
            let mut p = sp.to_vec();
            p.push(k("interconnects"));
            d.err(&p, format!("server `{}` has no interconnects: give at least one address (two on separate networks are recommended)", s.name));
        }
        for (j, ic) in s.interconnects.iter().enumerate() {
            let mut p = sp.to_vec();
            p.push(k("interconnects"));
            p.push(Seg::Index(j));
            match parse_interconnect(ic, hb.port) {
                Ok(sa) => {
                    if let Some(other) = addrs.insert(sa, s.name.clone()) {
                        d.err(
                            &p,
                            format!("interconnect address {sa} is also used by server `{other}`"),
                        );
                    }
                    ics.push(sa);
                }
                Err(m) => d.err(&p, m),
            }
        }
        match npaths {
            None => npaths = Some(s.interconnects.len()),
            Some(n) if n != s.interconnects.len() => {
                let mut p = sp.to_vec();
                p.push(k("interconnects"));
                d.err(&p, format!("server `{}` has {} interconnects but the first server has {n}: every server needs one address on each interconnect network, in the same order", s.name, s.interconnects.len()));
            }
            _ => {}
        }
        let mut pa = sp.to_vec();
        pa.push(k("api"));
        let api = match s.api.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                d.err(
                    &pa,
                    format!(
                        "api `{}` is not an address with a port, like `10.0.110.10:7420`",
                        s.api
                    ),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        if let Some(other) = servers
            .iter()
            .find(|o: &&Server| o.api == api && api.port() != 0)
        {
            d.err(
                &pa,
                format!("api address {api} is also used by server `{}`", other.name),
            );
        }
        let priority = s
            .priority
            .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
        if let Some(other) = servers.iter().find(|o: &&Server| o.priority == priority) {
            let mut p = sp.to_vec();
            p.push(k(if s.priority.is_some() {
                "priority"
            } else {
                "name"
            }));
            d.err(
                &p,
                format!(
                    "priority {priority} is also the priority of server `{}`{}: priorities must differ (two servers holding a group after a partition keep the one with the lower value)",
                    other.name,
                    if s.priority.is_none() { " (a server without `priority` gets its position in the file)" } else { "" }
                ),
            );
        }
        servers.push(Server {
            name: s.name.clone(),
            priority,
            zone: s.zone.clone(),
            interconnects: ics,
            api,
        });
    }
    if raw.group.len() > 200 {
        d.err(
            &[k("group")],
            format!("{} groups: every heartbeat carries every group, so at most 200 fit in one packet; split the cluster", raw.group.len()),
        );
    }

    // Quorum.
    let q = raw.quorum.clone();
    match &q.witness {
        Witness::Http { url } if !(url.starts_with("http://") || url.starts_with("https://")) => {
            d.err(
                &[k("quorum"), k("witness"), k("url")],
                format!("witness url `{url}` must start with http:// or https://"),
            );
        }
        _ => {}
    }
    for (i, h) in q.http.iter().enumerate() {
        if !(h.starts_with("http://") || h.starts_with("https://")) {
            d.err(
                &[k("quorum"), k("http"), Seg::Index(i)],
                format!("`{h}` must start with http:// or https://"),
            );
        }
    }
    for (i, h) in q.ping.iter().enumerate() {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            d.err(
                &[k("quorum"), k("ping"), Seg::Index(i)],
                format!("`{h}` is not a host name or address"),
            );
        }
    }
    let votes = servers.len() + usize::from(q.witness != Witness::None);
    let tm = timing::Timing::derive(
        hb.interval.ms(),
        hb.timeout.ms(),
        q.fence_timeout.map(|d| d.ms()),
        q.takeover_wait.map(|d| d.ms()),
    );
    if let Some(f) = q.fence_timeout {
        if f.ms() < hb.interval.ms() {
            d.err(&[k("quorum"), k("fence_timeout")], format!("fence_timeout {f} is shorter than the heartbeat interval {}: no resource could stop in time", hb.interval));
        }
        check_max(
            d,
            &[k("quorum"), k("fence_timeout")],
            "fence_timeout",
            f,
            10 * ms::MINUTE,
            "the heartbeat interval to 10m",
        );
    }
    if let Some(w) = q.takeover_wait {
        check_max(
            d,
            &[k("quorum"), k("takeover_wait")],
            "takeover_wait",
            w,
            ms::HOUR,
            "the derived minimum to 1h",
        );
        if w.ms() < tm.min_takeover_wait_ms {
            d.err(
                &[k("quorum"), k("takeover_wait")],
                format!(
                    "takeover_wait {w} is too short: with heartbeat interval {} (i), timeout {} (T), quorum lease {} ms (L) and fence_timeout {} ms (F), (T + W)·0.99 must be at least (2L + F)·1.01 + i, so W must be at least {} ms (see docs/src/split-brain.md)",
                    hb.interval, hb.timeout, tm.lease_ms, tm.fence_ms, tm.min_takeover_wait_ms
                ),
            );
        }
    }
    if let Some(ci) = q.check_interval {
        if ci.ms() < 100 {
            d.err(
                &[k("quorum"), k("check_interval")],
                "check_interval must be at least 100ms",
            );
        }
        check_max(
            d,
            &[k("quorum"), k("check_interval")],
            "check_interval",
            ci,
            10 * ms::MINUTE,
            "100ms to 10m",
        );
    }
    if servers.len() == 2 && q.witness == Witness::None {
        d.warn(&[k("quorum")], "a 2-server cluster has no majority when one server is lost: the survivor will not take over. Add a witness (`[quorum] witness`) or a third server");
    } else if votes % 2 == 0 && votes > 0 {
        d.warn(&[k("quorum")], format!("the cluster has {votes} votes, an even number: a split into two halves leaves neither side with a majority; use an odd number of votes (add or remove a witness)"));
    }

    // Groups and resources.
    let mut groups = Vec::new();
    let mut gnames = BTreeSet::new();
    let mut rnames: BTreeMap<String, String> = BTreeMap::new(); // resource -> group
    for (gi, g) in raw.group.iter().enumerate() {
        let gp = vec![k("group"), Seg::Index(gi)];
        let mut p = gp.clone();
        p.push(k("name"));
        check_name(d, &p, "group", &g.name);
        if g.name == LOCAL_SERVER_TARGET {
            d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
        }
        if !gnames.insert(g.name.clone()) {
            d.err(&p, format!("group name `{}` is used twice", g.name));
        }
        let mut seen = BTreeSet::new();
        if g.servers.is_empty() {
            let mut p = gp.clone();
            p.push(k("servers"));
            d.err(&p, format!("group `{}` lists no servers", g.name));
        }
        for (si, s) in g.servers.iter().enumerate() {
            let mut p = gp.clone();
            p.push(k("servers"));
            p.push(Seg::Index(si));
            if !names.contains(s) {
                d.err(&p, unknown_ref("server", s, names.iter()));
            }
            if !seen.insert(s.clone()) {
                d.err(
                    &p,
                    format!("server `{s}` is listed twice in group `{}`", g.name),
                );
            }
        }
        let startup = g
            .startup_servers
            .clone()
            .unwrap_or_else(|| g.servers.clone());
        for (si, s) in startup.iter().enumerate() {
            if !g.servers.contains(s) {
                let mut p = gp.clone();
                p.push(k("startup_servers"));
                p.push(Seg::Index(si));
                d.err(
                    &p,
                    format!(
                        "startup server `{s}` is not one of the group's servers ({})",
                        g.servers.join(", ")
                    ),
                );
            }
        }
        let mut resources = Vec::new();
        for (ri, table) in g.resource.iter().enumerate() {
            let mut rp = gp.clone();
            rp.push(k("resource"));
            rp.push(Seg::Index(ri));
            let (common, params) = split(table, RESOURCE_COMMON);
            let Some(c) = typed::<ResourceCommon>(d, &rp, toml::Value::Table(common)) else {
                continue;
            };
            let mut np = rp.clone();
            np.push(k("name"));
            check_name(d, &np, "resource", &c.name);
            if c.name == LOCAL_SERVER_TARGET || raw.group.iter().any(|g| g.name == c.name) {
                d.err(&np, format!("resource name `{}` is already used as a group name (recovery targets name either)", c.name));
            }
            if let Some(og) = rnames.insert(c.name.clone(), g.name.clone()) {
                d.err(&np, format!("resource name `{}` is already used in group `{og}`: resource names are unique in the cluster", c.name));
            }
            for pol in [
                (c.activate_timeout, "activate_timeout"),
                (c.deactivate_timeout, "deactivate_timeout"),
            ] {
                let mut p = rp.clone();
                p.push(k(pol.1));
                if pol.0.ms() == 0 {
                    d.err(&p, format!("{} must be longer than 0", pol.1));
                }
                check_max(d, &p, pol.1, pol.0, ms::DAY, "1ms to 1d");
            }
            for sname in c.server.keys() {
                if !g.servers.contains(sname) {
                    let mut p = rp.clone();
                    p.push(k("server"));
                    p.push(k(sname));
                    d.err(&p, format!("per-server settings for `{sname}`, which is not one of group `{}`'s servers ({})", g.name, g.servers.join(", ")));
                }
            }
            // Kind-specific keys, for every server of the group.
            let known = kinds.resource_kinds();
            if !known.is_empty() && !known.contains(&c.kind.as_str()) {
                let mut p = rp.clone();
                p.push(k("kind"));
                d.err(
                    &p,
                    format!(
                        "unknown resource kind `{}`; known kinds: {}",
                        c.kind,
                        known.join(", ")
                    ),
                );
            } else {
                let mut reported = BTreeSet::new();
                for s in &g.servers {
                    let merged = merge_tables(&params, c.server.get(s));
                    if let Err((key, msg)) = kinds.check_resource(&c.kind, &merged) {
                        let mut p = rp.clone();
                        let overridden = key.as_deref().is_some_and(|kk| {
                            c.server
                                .get(s)
                                .is_some_and(|o| o.contains_key(kk.split('.').next().unwrap_or(kk)))
                        });
                        if overridden {
                            p.push(k("server"));
                            p.push(k(s));
                        }
                        if let Some(key) = &key {
                            p.extend(key.split('.').map(k));
                        }
                        let text = format!("{msg} (for server `{s}`)");
                        if reported.insert((path_string(&p), msg.clone())) {
                            d.err(&p, text);
                        }
                    }
                }
            }
            resources.push((
                rp,
                Resource {
                    kind: c.kind,
                    name: c.name,
                    depends_on: c.depends_on,
                    activation: ActionPolicy {
                        timeout: c.activate_timeout,
                        retries: c.activate_retries,
                        final_action: c.activate_final_action,
                    },
                    failover_threshold: c.failover_threshold,
                    deactivation: ActionPolicy {
                        timeout: c.deactivate_timeout,
                        retries: c.deactivate_retries,
                        final_action: c.deactivate_final_action,
                    },
                    params,
                    server_params: c.server,
                },
            ));
        }
        // depends_on references and cycles.
        let local: BTreeSet<String> = resources.iter().map(|(_, r)| r.name.clone()).collect();
        for (rp, r) in &resources {
            for (di, dep) in r.depends_on.iter().enumerate() {
                let mut p = rp.clone();
                p.push(k("depends_on"));
                p.push(Seg::Index(di));
                if dep == &r.name {
                    d.err(&p, format!("resource `{}` depends on itself", r.name));
                } else if !local.contains(dep) {
                    let other = rnames.get(dep).filter(|og| **og != g.name);
                    match other {
                        Some(og) => d.err(&p, format!("`{dep}` is a resource of group `{og}`; depends_on may only name resources of the same group (`{}`)", g.name)),
                        None => d.err(&p, unknown_ref("resource", dep, local.iter())),
                    }
                }
            }
        }
        let ordered =
            match topo_order(&resources.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()) {
                Ok(o) => o,
                Err(cycle) => {
                    let idx = resources
                        .iter()
                        .position(|(_, r)| r.name == cycle[0])
                        .unwrap_or(0);
                    let mut p = resources
                        .get(idx)
                        .map(|(rp, _)| rp.clone())
                        .unwrap_or_else(|| gp.clone());
                    p.push(k("depends_on"));
                    d.err(
                        &p,
                        format!("depends_on forms a cycle: {}", cycle.join(" → ")),
                    );
                    resources.into_iter().map(|(_, r)| r).collect()
                }
            };
        groups.push(Group {
            name: g.name.clone(),
            servers: g.servers.clone(),
            startup_servers: startup,
            failback: g.failback,
            auto_start: g.auto_start,
            resources: ordered,
        });
    }

    // Monitors.
    let mut monitors = Vec::new();
    let mut mnames = BTreeSet::new();
    for (mi, table) in raw.monitor.iter().enumerate() {
        let mp = vec![k("monitor"), Seg::Index(mi)];
        let (common, params) = split(table, MONITOR_COMMON);
        let Some(c) = typed::<MonitorCommon>(d, &mp, toml::Value::Table(common)) else {
            continue;
        };
        let mut np = mp.clone();
        np.push(k("name"));
        check_name(d, &np, "monitor", &c.name);
        if !mnames.insert(c.name.clone()) {
            d.err(&np, format!("monitor name `{}` is used twice", c.name));
        }
        let at = |key: &str| {
            let mut p = mp.clone();
            p.push(k(key));
            p
        };
        if c.interval.ms() == 0 {
            d.err(&at("interval"), "interval must be longer than 0");
        }
        if c.timeout.ms() == 0 {
            d.err(&at("timeout"), "timeout must be longer than 0");
        }
        check_max(
            d,
            &at("interval"),
            "interval",
            c.interval,
            ms::DAY,
            "1ms to 1d",
        );
        check_max(
            d,
            &at("timeout"),
            "timeout",
            c.timeout,
            ms::DAY,
            "1ms to 1d",
        );
        check_max(
            d,
            &at("wait_to_start"),
            "wait_to_start",
            c.wait_to_start,
            ms::DAY,
            "0s to 1d",
        );
        // Group implied by `group`, `resource` or the recovery target.
        let mut group = c.group.clone();
        if let Some(gname) = &c.group {
            if !gnames.contains(gname) {
                d.err(&at("group"), unknown_ref("group", gname, gnames.iter()));
            }
        }
        if let Some(r) = &c.resource {
            match rnames.get(r) {
                Some(g) => {
                    if group.as_ref().is_some_and(|x| x != g) {
                        d.err(
                            &at("resource"),
                            format!(
                                "resource `{r}` belongs to group `{g}`, not to `{}`",
                                group.clone().unwrap_or_default()
                            ),
                        );
                    }
                    group = Some(g.clone());
                }
                None => d.err(&at("resource"), unknown_ref("resource", r, rnames.keys())),
            }
        }
        if c.kind == "resource" && c.resource.is_none() {
            d.err(&at("kind"), "a monitor of kind `resource` needs `resource = \"NAME\"`: the group resource whose check it polls");
        }
        let recovery = c.recovery.as_ref().and_then(|r| {
            let mut tp = mp.clone();
            tp.push(k("recovery"));
            tp.push(k("target"));
            let target = if r.target == LOCAL_SERVER_TARGET {
                RecoveryTarget::LocalServer
            } else if gnames.contains(&r.target) {
                RecoveryTarget::Group(r.target.clone())
            } else if let Some(g) = rnames.get(&r.target) {
                RecoveryTarget::Resource {
                    group: g.clone(),
                    resource: r.target.clone(),
                }
            } else {
                let mut known: Vec<String> = gnames.iter().cloned().collect();
                known.extend(rnames.keys().cloned());
                known.push(LOCAL_SERVER_TARGET.into());
                d.err(
                    &tp,
                    unknown_ref(
                        "recovery target (a group, a resource or `local-server`)",
                        &r.target,
                        known.iter(),
                    ),
                );
                return None;
            };
            if group.is_none() {
                group = match &target {
                    RecoveryTarget::Group(g) => Some(g.clone()),
                    RecoveryTarget::Resource { group, .. } => Some(group.clone()),
                    RecoveryTarget::LocalServer => None,
                };
            }
            Some(Recovery {
                target,
                script: r.script.clone(),
                script_retries: r.script_retries.unwrap_or(u32::from(r.script.is_some())),
                restart_retries: r.restart_retries,
                failover_retries: r.failover_retries,
                final_action: r.final_action,
                reset_after: r.reset_after.unwrap_or(Dur::from_ms(
                    (c.interval.ms().saturating_mul(u64::from(c.retries) + 1))
                        .saturating_mul(10)
                        .max(60_000),
                )),
            })
        });
        let timing = c.timing.unwrap_or(if group.is_some() {
            MonitorTiming::Active
        } else {
            MonitorTiming::Always
        });
        if timing == MonitorTiming::Active && group.is_none() {
            d.err(&at("timing"), "timing `active` needs a group: set `group = \"NAME\"` or a recovery target that is a group or resource");
        }
        let all_servers: Vec<String> = match &group {
            Some(g) => raw
                .group
                .iter()
                .find(|x| &x.name == g)
                .map(|x| x.servers.clone())
                .unwrap_or_default(),
            None => servers.iter().map(|s| s.name.clone()).collect(),
        };
        for sname in c.server.keys() {
            if !names.contains(sname) {
                let mut p = at("server");
                p.push(k(sname));
                d.err(&p, unknown_ref("server", sname, names.iter()));
            }
        }
        if c.kind != "resource" {
            let known = kinds.monitor_kinds();
            if !known.is_empty() && !known.contains(&c.kind.as_str()) {
                let mut known: Vec<&str> = known.clone();
                known.push("resource");
                d.err(
                    &at("kind"),
                    format!(
                        "unknown monitor kind `{}`; known kinds: {}",
                        c.kind,
                        known.join(", ")
                    ),
                );
            } else {
                let mut reported = BTreeSet::new();
                for s in &all_servers {
                    let merged = merge_tables(&params, c.server.get(s));
                    if let Err((key, msg)) = kinds.check_monitor(&c.kind, &merged) {
                        let mut p = mp.clone();
                        if let Some(key) = &key {
                            p.extend(key.split('.').map(k));
                        }
                        if reported.insert((path_string(&p), msg.clone())) {
                            d.err(&p, format!("{msg} (for server `{s}`)"));
                        }
                    }
                }
            }
        } else if !params.is_empty() {
            let key = params.keys().next().cloned().unwrap_or_default();
            d.err(
                &at(&key),
                format!(
                    "unknown key `{key}`: a `resource` monitor takes only the common monitor keys"
                ),
            );
        }
        monitors.push(Monitor {
            kind: c.kind,
            name: c.name,
            interval: c.interval,
            timeout: c.timeout,
            retries: c.retries,
            wait_to_start: c.wait_to_start,
            timing,
            group,
            resource: c.resource,
            on_api_error: c.on_api_error,
            recovery,
            params,
            server_params: c.server,
        });
    }

    notify::validate(d, &raw.notify, &raw.metrics, &monitors);
    aws::validate(d, &raw.aws);
    api::validate(d, &raw.api);
    if raw.cluster.accept_key_files.len() > MAX_ACCEPT_KEY_FILES {
        d.err(
            &[k("cluster"), k("accept_key_files")],
            format!(
                "{} accepted key files: at most {MAX_ACCEPT_KEY_FILES} (a rotation needs one)",
                raw.cluster.accept_key_files.len()
            ),
        );
    }
    for (i, f) in raw.cluster.accept_key_files.iter().enumerate() {
        if f == &raw.cluster.key_file || raw.cluster.accept_key_files[..i].contains(f) {
            d.err(
                &[k("cluster"), k("accept_key_files"), Seg::Index(i)],
                format!(
                    "`{}` is listed twice (key_file is always accepted)",
                    f.display()
                ),
            );
        }
    }

    let config = Config {
        path: file.to_string(),
        digest,
        cluster_name: raw.cluster.name,
        key_file: raw.cluster.key_file,
        accept_key_files: raw.cluster.accept_key_files,
        heartbeat: hb,
        agent: raw.agent,
        servers,
        quorum: q,
        groups,
        monitors,
        notify: raw.notify,
        metrics: raw.metrics,
        aws: raw.aws,
        api: raw.api,
    };
    // Every heartbeat must fit in one datagram (issue 9): bounded uncompressed.
    if let Err(msg) = crate::heartbeat::check_size(&config) {
        d.err(&[k("group")], msg);
    }
    Some(config)
}

fn unknown_ref<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    if known.is_empty() {
        format!("unknown {what} `{name}`: none is defined")
    } else {
        let list = known
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        format!("unknown {what} `{name}`; defined: {list}")
    }
}

/// Order resources so that every resource comes after those it depends on. On a cycle,
/// returns the names along the cycle.
pub fn topo_order(resources: &[Resource]) -> Result<Vec<Resource>, Vec<String>> {
    let idx: BTreeMap<&str, usize> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut mark = vec![0u8; resources.len()];
    let mut out = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        rs: &[Resource],
        idx: &BTreeMap<&str, usize>,
        mark: &mut [u8],
        stack: &mut Vec<usize>,
        out: &mut Vec<Resource>,
    ) -> Result<(), Vec<String>> {
        if mark[i] == 2 {
            return Ok(());
        }
        if mark[i] == 1 {
            let start = stack.iter().position(|&s| s == i).unwrap_or(0);
            let mut cyc: Vec<String> = stack[start..].iter().map(|&s| rs[s].name.clone()).collect();
            cyc.push(rs[i].name.clone());
            return Err(cyc);
        }
        mark[i] = 1;
        stack.push(i);
        for dep in &rs[i].depends_on {
            // A resource naming itself is reported on its own ("depends on itself").
            if let Some(&j) = idx.get(dep.as_str()).filter(|&&j| j != i) {
                visit(j, rs, idx, mark, stack, out)?;
            }
        }
        stack.pop();
        mark[i] = 2;
        out.push(rs[i].clone());
        Ok(())
    }
    for i in 0..resources.len() {
        visit(i, resources, &idx, &mut mark, &mut stack, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
