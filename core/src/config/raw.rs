//! The file as written: the serde structs the TOML is deserialised into before
//! validation turns them into the [model](super::Config). Sections whose raw and
//! validated forms are the same (`[heartbeat]`, `[agent]`, `[quorum]`, `[notify]`, ...)
//! are deserialised straight into their model types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    AgentSection, ApiSection, AwsSection, AzureSection, Dur, FinalAction, GcpSection,
    HeartbeatSection, MetricsSection, MonitorTiming, NotifySection, OnApiError, QuorumSection,
    ResourceOrder,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) heartbeat: HeartbeatSection,
    #[serde(default)]
    pub(super) agent: AgentSection,
    #[serde(default)]
    pub(super) server: Vec<RawServer>,
    #[serde(default)]
    pub(super) quorum: QuorumSection,
    #[serde(default)]
    pub(super) group: Vec<RawGroup>,
    #[serde(default)]
    pub(super) monitor: Vec<toml::Table>,
    #[serde(default)]
    pub(super) notify: NotifySection,
    #[serde(default)]
    pub(super) metrics: MetricsSection,
    #[serde(default)]
    pub(super) aws: AwsSection,
    #[serde(default)]
    pub(super) azure: AzureSection,
    #[serde(default)]
    pub(super) gcp: GcpSection,
    #[serde(default)]
    pub(super) api: ApiSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: String,
    pub(super) key_file: PathBuf,
    #[serde(default)]
    pub(super) accept_key_files: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) name: String,
    #[serde(default)]
    pub(super) priority: Option<u32>,
    #[serde(default)]
    pub(super) zone: Option<String>,
    pub(super) interconnects: Vec<String>,
    pub(super) api: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: String,
    pub(super) servers: Vec<String>,
    #[serde(default)]
    pub(super) startup_servers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) failback: bool,
    #[serde(default = "yes")]
    pub(super) auto_start: bool,
    /// Declared self-fence budget (see `Group::fence_budget`).
    #[serde(default)]
    pub(super) fence_budget: Option<Dur>,
    /// How the group's resources are started and stopped (see `Group::resource_order`).
    #[serde(default)]
    pub(super) resource_order: ResourceOrder,
    #[serde(default)]
    pub(super) resource: Vec<toml::Table>,
}

fn yes() -> bool {
    true
}

pub(super) const RESOURCE_COMMON: &[&str] = &[
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
    "fence_stop",
    "server",
];

pub(super) const MONITOR_COMMON: &[&str] = &[
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
pub(super) struct ResourceCommon {
    pub(super) kind: String,
    pub(super) name: String,
    #[serde(default)]
    pub(super) depends_on: Vec<String>,
    #[serde(default = "d60s")]
    pub(super) activate_timeout: Dur,
    #[serde(default)]
    pub(super) activate_retries: u32,
    #[serde(default)]
    pub(super) activate_final_action: FinalAction,
    #[serde(default = "one")]
    pub(super) failover_threshold: u32,
    #[serde(default = "d60s")]
    pub(super) deactivate_timeout: Dur,
    #[serde(default)]
    pub(super) deactivate_retries: u32,
    #[serde(default)]
    pub(super) deactivate_final_action: FinalAction,
    /// `local` or `full` (default: `local` for kinds that have a local self-fence stop).
    #[serde(default)]
    pub(super) fence_stop: Option<FenceStopMode>,
    #[serde(default)]
    pub(super) server: BTreeMap<String, toml::Table>,
}

/// How a resource stops while its server self-fences (`fence_stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum FenceStopMode {
    /// Only the local part of the stop: no cloud call.
    Local,
    /// The normal stop.
    Full,
}

fn d60s() -> Dur {
    Dur::from_ms(60_000)
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MonitorCommon {
    pub(super) kind: String,
    pub(super) name: String,
    #[serde(default = "d30s")]
    pub(super) interval: Dur,
    #[serde(default = "d60s")]
    pub(super) timeout: Dur,
    #[serde(default = "one")]
    pub(super) retries: u32,
    #[serde(default)]
    pub(super) wait_to_start: Dur,
    #[serde(default)]
    pub(super) timing: Option<MonitorTiming>,
    #[serde(default)]
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) resource: Option<String>,
    #[serde(default)]
    pub(super) on_api_error: OnApiError,
    #[serde(default)]
    pub(super) recovery: Option<RawRecovery>,
    #[serde(default)]
    pub(super) server: BTreeMap<String, toml::Table>,
}

fn d30s() -> Dur {
    Dur::from_ms(30_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecovery {
    pub(super) target: String,
    #[serde(default)]
    pub(super) script: Option<String>,
    #[serde(default)]
    pub(super) script_retries: Option<u32>,
    #[serde(default = "three")]
    pub(super) restart_retries: u32,
    #[serde(default = "one")]
    pub(super) failover_retries: u32,
    #[serde(default)]
    pub(super) final_action: FinalAction,
    #[serde(default)]
    pub(super) reset_after: Option<Dur>,
}

fn three() -> u32 {
    3
}

/// Split a resource/monitor table into its common keys and its kind-specific keys.
pub(super) fn split(table: &toml::Table, common: &[&str]) -> (toml::Table, toml::Table) {
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
