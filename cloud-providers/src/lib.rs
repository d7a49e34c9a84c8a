//! Providers: the code that touches the world on behalf of the engine.
//!
//! A *resource driver* activates, deactivates and checks one group resource (a script,
//! a floating IP, a systemd unit, later a cloud route or DNS record). A *probe* is the
//! body of a monitor: it looks at something and says healthy or not. Both are built
//! from the kind-specific keys of a `[[group.resource]]` or `[[monitor]]` table by the
//! [`Registry`], which is also what `baton config check` uses to validate those keys.
//! New kinds (AWS, Azure, Google Cloud, mirroring) plug in here; the engine in
//! `baton-core` only ever sees kind names.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub mod aws;
pub mod azure;
pub mod clock;
pub mod cloud;
pub mod error;
pub mod fencing;
pub mod gcp;
pub mod local;
pub mod params;
pub mod probe_port;
pub mod process;
pub mod registry;
pub mod witness;

pub use error::{ParamError, ProviderError};

/// Everything a resource action needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct ActionContext {
    pub cluster: String,
    pub group: String,
    pub resource: String,
    pub server: String,
    /// The group's fencing epoch for this activation.
    pub epoch: u64,
    /// The action's deadline; drivers must give up (and kill what they started) by then.
    pub timeout: Duration,
}

impl ActionContext {
    /// The `BATON_*` environment given to every script a driver runs.
    pub fn env(&self, action: &str) -> Vec<(String, String)> {
        vec![
            ("BATON_CLUSTER".into(), self.cluster.clone()),
            ("BATON_GROUP".into(), self.group.clone()),
            ("BATON_RESOURCE".into(), self.resource.clone()),
            ("BATON_SERVER".into(), self.server.clone()),
            ("BATON_EPOCH".into(), self.epoch.to_string()),
            ("BATON_ACTION".into(), action.to_string()),
            (
                "BATON_TIMEOUT_MS".into(),
                self.timeout.as_millis().to_string(),
            ),
        ]
    }
}

/// What a resource check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The resource is active here and healthy.
    Active,
    /// The resource is not active here (clean state).
    Inactive,
    /// Active but not healthy, or partially active; the text says what was found.
    Degraded(String),
}

/// One group resource kind's implementation.
#[async_trait]
pub trait ResourceDriver: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    /// Bring the resource up. Idempotent: activating an active resource succeeds.
    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError>;
    /// Take the resource down. Idempotent: deactivating an inactive resource succeeds.
    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError>;
    /// The stop of a self-fence (quorum lost) for a kind with a local self-fence stop
    /// ([`Registry::local_fence_stop_ms`]): only the local part of `deactivate`, never a
    /// cloud call. The cloud object stays as it is until the next owner's fenced write
    /// takes it over. Default: `deactivate` (for kinds without one, the engine never
    /// asks for it).
    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.deactivate(ctx).await
    }
    /// What an activation would otherwise do first and that changes nothing: build the
    /// cloud clients, learn instance facts, run the checks of the configuration against
    /// the cloud that are done once (an ENI in the VPC, a VIP outside its CIDR). The
    /// agent calls it once when it starts, in the background, for every resource of the
    /// groups this server may run, so that a standby's first takeover does not pay for
    /// it, and a wrong ENI on a standby is reported at start, not at the failover. A
    /// failure changes nothing: the activation does the same work and reports it.
    /// Default: nothing.
    async fn prepare(&self, _ctx: &ActionContext) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Look at the resource without changing it (used by re-adoption after an agent
    /// restart and by resource-bound monitors).
    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError>;
}

/// Context for one monitor poll.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    pub cluster: String,
    pub server: String,
    pub monitor: String,
    pub timeout: Duration,
    /// The state on this server of the monitor's group (`group = ...`), at the poll;
    /// `None` for a monitor without a group.
    pub group_state: Option<baton_core::engine::GroupState>,
}

/// A healthy poll, with whatever detail is worth showing in `baton status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeOk {
    pub detail: Option<String>,
}

/// One monitor kind's implementation.
#[async_trait]
pub trait Probe: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    /// Poll once. Must return by `ctx.timeout` (the caller also enforces it).
    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError>;
}

/// The kind-specific keys of one resource or monitor, already merged with the
/// per-server overrides for the server the agent runs as (`baton_core::config::Resource::params_for`).
pub type Params = toml::Table;

/// Builds drivers and probes from config tables and validates their keys.
pub trait Registry: Send + Sync {
    /// Kinds of group resources this registry knows.
    fn resource_kinds(&self) -> Vec<&'static str>;
    /// Kinds of monitors this registry knows (excluding the built-in `resource` kind,
    /// which wraps a resource driver's `check`).
    fn monitor_kinds(&self) -> Vec<&'static str>;
    fn build_resource(
        &self,
        kind: &str,
        params: &Params,
    ) -> Result<Box<dyn ResourceDriver>, ParamError>;
    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError>;
    /// Checks of a resource kind that need its group's servers (a mirror joins exactly
    /// two). Default: none.
    fn check_group_servers(&self, _kind: &str, _servers: &[String]) -> Result<(), ParamError> {
        Ok(())
    }
    /// Monitor kinds that watch one resource (named by the monitor's `resource` key).
    fn monitor_needs_resource(&self, _kind: &str) -> bool {
        false
    }
    /// Resource kinds whose `interconnect` key (numbered from 0, default 0, unless
    /// `address` is set) names one of the servers' interconnects.
    fn uses_interconnect(&self, _kind: &str) -> bool {
        false
    }
    /// Resource kinds whose self-fence stop is local only
    /// ([`ResourceDriver::fence_stop`]), with the time that local part needs in ms: kinds
    /// whose cloud object holds one value, carries the group's epoch, and is taken over
    /// by the next owner's fenced write whatever the previous owner did. `None`
    /// (default): the self-fence stop is the normal stop.
    fn local_fence_stop_ms(&self, _kind: &str) -> Option<u64> {
        None
    }
}

/// The time a local self-fence stop that removes an address from a local interface
/// needs (`aws-vip`, `azure-vip`: two runs of `ip`, a few ms each on an idle host).
pub const LOCAL_ADDRESS_STOP_MS: u64 = 100;

/// The self-fence stop of a kind with no local part (`what`: its cloud object, which
/// stays until the next owner's fenced write takes it over): logged, nothing done.
pub(crate) fn nothing_local_to_stop(ctx: &ActionContext, what: &str) -> Result<(), ProviderError> {
    tracing::info!(group = %ctx.group, resource = %ctx.resource, "self-fence: {what} left to the next owner");
    Ok(())
}

/// The kind's entry in a `(kind, bound)` table of local self-fence stops.
pub(crate) fn local_fence_stop(table: &[(&str, u64)], kind: &str) -> Option<u64> {
    table.iter().find(|(k, _)| *k == kind).map(|&(_, b)| b)
}

/// A probe that checks a resource driver: the monitor kind `resource`.
#[derive(Debug)]
pub struct ResourceProbe {
    pub driver: std::sync::Arc<dyn ResourceDriver>,
    pub action: ActionContext,
}

#[async_trait]
impl Probe for ResourceProbe {
    fn kind(&self) -> &'static str {
        "resource"
    }
    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let mut action = self.action.clone();
        action.timeout = ctx.timeout;
        match self.driver.check(&action).await? {
            CheckOutcome::Active => Ok(ProbeOk::default()),
            CheckOutcome::Inactive => Err(ProviderError::Unhealthy(format!(
                "{} resource {} is not active",
                self.driver.kind(),
                action.resource
            ))),
            CheckOutcome::Degraded(why) => Err(ProviderError::Unhealthy(why)),
        }
    }
}

pub use registry::ProviderRegistry;

/// The registry of everything this crate implements, the AWS, Azure and Google Cloud
/// clients built from `aws`, `azure` and `gcp` on first use.
pub fn registry(
    aws: &baton_core::config::AwsSection,
    azure: &baton_core::config::AzureSection,
    gcp: &baton_core::config::GcpSection,
) -> ProviderRegistry {
    ProviderRegistry::new(aws, azure, gcp)
}

/// A registry with the default `[aws]` and `[azure]` settings, enough to validate a
/// configuration's kind keys (an Azure subscription or resource group left to `[azure]`
/// is not required here; the agent checks it with the configuration's own section).
pub fn default_registry() -> ProviderRegistry {
    ProviderRegistry::with_azure(
        &baton_core::config::AwsSection::default(),
        azure::AzureShared::lenient(),
    )
}

/// Known kinds by name, for docs and error messages.
pub fn describe_kinds(reg: &dyn Registry) -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut m = BTreeMap::new();
    m.insert("resource", reg.resource_kinds());
    m.insert("monitor", reg.monitor_kinds());
    m
}
