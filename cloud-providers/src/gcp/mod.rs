//! Google Cloud: the Google Cloud resources and monitors, over the client factory of
//! `baton_cloud_client::gcp` (typed REST calls; credentials, endpoints, retries and the
//! classification of failures are decided there once).
//!
//! Resource kinds: `gcp-dns` ([`dns`]): an A record in a Cloud DNS managed zone, public
//! or private, holding the active server's address; `gcp-vip` ([`vip`]): a VPC static
//! route for a VIP whose next hop is the active server's instance, or an alias IP range
//! moved between network interfaces; `gcp-lb-probe` ([`lb`]): the active server answers
//! the internal load balancer's health check. Monitor kinds of the same names (what the
//! API has, with the same keys as the resource), and `gcp-maintenance`
//! ([`maintenance`]): a host maintenance event or a Spot VM preemption announced by the
//! metadata server.
//!
//! Every mutation is read-then-conditional-write with the group's epoch in the decision
//! (design invariant 3): a Cloud DNS change names the exact record sets it replaces as
//! its deletions, so a change made by someone else in between makes it fail (412
//! `conditionNotMet`) instead of being overwritten, and the epoch mark (a TXT record
//! beside the A record, as on Route 53) changes in the same change. A higher epoch found
//! there is never overwritten (the decisions are in [`crate::fencing`]). The client is
//! created on the first call (`baton config check` never calls Google) and shared by
//! every driver of the agent through [`GcpShared`].
//!
//! Events (BTN-8101 to BTN-8199, module `gcp`) go to the same sink as the other clouds'.

pub mod dns;
pub mod lb;
pub mod maintenance;
pub mod preflight;
pub mod vip;

use std::sync::Arc;
use std::time::Duration;

use baton_cloud_client::gcp::{FailureKind, GcpClient, GcpFailure};
use baton_core::config::GcpSection;
use baton_core::events::{self as ev, EventDef};

use crate::cloud::{EventSink, Latch, Subject};
use crate::params::key_error;
use crate::{ParamError, Params, Probe, ProviderError, Registry, ResourceDriver};

/// Resource kinds of the Google Cloud registry.
pub const RESOURCE_KINDS: &[&str] = &["gcp-dns", "gcp-vip", "gcp-lb-probe"];
/// Monitor kinds of the Google Cloud registry.
pub const MONITOR_KINDS: &[&str] = &["gcp-dns", "gcp-vip", "gcp-lb-probe", "gcp-maintenance"];
/// Kinds whose self-fence stop is local only, with its bound (ms): the record and its
/// epoch record change together in one conditional change of the next owner. (Not
/// `gcp-vip`, whose alias pattern carries no epoch mark, nor `gcp-lb-probe`: the load
/// balancer sends to every server that passes its health check, so its stop is what
/// ends it.)
pub const LOCAL_FENCE_STOP: &[(&str, u64)] = &[("gcp-dns", 0)];

/// What every Google Cloud driver and probe of one agent shares: the `[gcp]` settings,
/// the client (created on first use) and the event sink.
#[derive(Debug)]
pub struct GcpShared {
    settings: GcpSection,
    client: tokio::sync::OnceCell<GcpClient>,
    pub(crate) events: EventSink,
}

impl GcpShared {
    /// Shared state for a configuration's `[gcp]` section.
    pub fn new(settings: &GcpSection) -> GcpShared {
        GcpShared {
            settings: settings.clone(),
            client: tokio::sync::OnceCell::new(),
            events: EventSink::default(),
        }
    }

    pub fn settings(&self) -> &GcpSection {
        &self.settings
    }

    /// Use this client instead of building one from the settings (tests, tools).
    pub fn with_client(self, client: GcpClient) -> GcpShared {
        let cell = tokio::sync::OnceCell::new();
        // A fresh cell cannot be set already.
        let _ = cell.set(client);
        GcpShared {
            client: cell,
            ..self
        }
    }

    /// Send events to this sink.
    pub fn with_events(mut self, sink: EventSink) -> GcpShared {
        self.events = sink;
        self
    }

    /// The client, built on the first call (reading a key file).
    pub async fn client(&self) -> Result<&GcpClient, GcpFailure> {
        self.client
            .get_or_try_init(|| async { GcpClient::new(&self.settings) })
            .await
    }

    /// The project of a kind: its own `project`, else the client's (`[gcp] project`,
    /// the key file's, the metadata server's).
    pub(crate) async fn project(
        &self,
        own: Option<&str>,
        client: &GcpClient,
        budget: Duration,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<String, ProviderError> {
        match own {
            Some(p) => Ok(p.to_string()),
            None => client
                .project(budget)
                .await
                .map_err(|f| self.report(subject, latch, f)),
        }
    }

    /// Turn a failed call into the driver's error, raising its event (once per latch
    /// period when a latch is given).
    pub(crate) fn report(
        &self,
        subject: Subject<'_>,
        latch: Option<&Latch>,
        f: GcpFailure,
    ) -> ProviderError {
        let def = failure_event(&f);
        self.raise(subject, latch, def, format!("{}: {f}", subject.name()));
        f.into()
    }

    /// Raise an event about `subject` (once per latch period when a latch is given).
    pub(crate) fn raise(
        &self,
        subject: Subject<'_>,
        latch: Option<&Latch>,
        def: &EventDef,
        message: String,
    ) {
        if latch.is_none_or(|l| l.first(def.id)) {
            self.events.emit(subject.event(def, message));
        }
    }
}

/// The catalogue entry for a failed Google Cloud call.
pub fn failure_event(f: &GcpFailure) -> &'static EventDef {
    match f.kind() {
        FailureKind::Unavailable => &ev::GCP_API_UNAVAILABLE,
        FailureKind::NotFound => &ev::GCP_NOT_FOUND,
        FailureKind::PermissionDenied => &ev::GCP_PERMISSION_DENIED,
        FailureKind::Credentials => &ev::GCP_CREDENTIALS,
        FailureKind::Conflict => &ev::GCP_DNS_CONFLICT,
        FailureKind::Rejected => &ev::GCP_REQUEST_REJECTED,
    }
}

impl From<GcpFailure> for ProviderError {
    fn from(f: GcpFailure) -> Self {
        match f {
            GcpFailure::Unavailable {
                operation,
                reason,
                status,
                message,
            } => ProviderError::Api {
                operation,
                code: reason,
                status,
                message,
            },
            GcpFailure::Rejected {
                operation,
                reason,
                status,
                message,
                ..
            } => ProviderError::Rejected {
                operation,
                code: reason,
                status,
                message,
            },
        }
    }
}

/// Check a kind's `project` key.
pub(crate) fn check_project(project: Option<&str>) -> Result<(), ParamError> {
    match project {
        Some(p) if !baton_core::config::is_project_id(p) => Err(key_error(
            "project",
            format!(
                "`{p}` is not a project ID: 6 to 30 lower-case letters, digits and hyphens, \
                 starting with a letter (the ID, not the project's name or number)"
            ),
        )),
        _ => Ok(()),
    }
}

/// The registry of the Google Cloud kinds. Building drivers never calls Google.
#[derive(Debug, Clone)]
pub struct GcpRegistry {
    shared: Arc<GcpShared>,
}

impl GcpRegistry {
    pub fn new(settings: &GcpSection) -> GcpRegistry {
        GcpRegistry::from_shared(Arc::new(GcpShared::new(settings)))
    }

    pub fn from_shared(shared: Arc<GcpShared>) -> GcpRegistry {
        GcpRegistry { shared }
    }

    pub fn shared(&self) -> &Arc<GcpShared> {
        &self.shared
    }
}

impl Registry for GcpRegistry {
    fn resource_kinds(&self) -> Vec<&'static str> {
        RESOURCE_KINDS.to_vec()
    }

    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        crate::local_fence_stop(LOCAL_FENCE_STOP, kind)
    }

    fn monitor_kinds(&self) -> Vec<&'static str> {
        MONITOR_KINDS.to_vec()
    }

    fn build_resource(
        &self,
        kind: &str,
        params: &Params,
    ) -> Result<Box<dyn ResourceDriver>, ParamError> {
        match kind {
            "gcp-dns" => Ok(Box::new(dns::GcpDnsDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            "gcp-vip" => Ok(Box::new(vip::GcpVipDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            "gcp-lb-probe" => Ok(Box::new(lb::GcpLbProbeDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            other => Err(ParamError::new(
                Some("kind".to_string()),
                format!(
                    "unknown resource kind `{other}`; known Google Cloud kinds: {}",
                    RESOURCE_KINDS.join(", ")
                ),
            )),
        }
    }

    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        match kind {
            "gcp-dns" => Ok(Box::new(dns::GcpDnsProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            "gcp-vip" => Ok(Box::new(vip::GcpVipProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            "gcp-lb-probe" => Ok(Box::new(lb::GcpLbProbeMonitor::from_params(
                params,
                self.shared.clone(),
            )?)),
            "gcp-maintenance" => Ok(Box::new(maintenance::GcpMaintenanceProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            other => Err(ParamError::new(
                Some("kind".to_string()),
                format!(
                    "unknown monitor kind `{other}`; known Google Cloud kinds: {}",
                    MONITOR_KINDS.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rejected(kind: FailureKind, reason: &str, status: u16) -> GcpFailure {
        GcpFailure::Rejected {
            operation: "Op".into(),
            kind,
            reason: reason.into(),
            status: Some(status),
            message: "m".into(),
        }
    }

    #[test]
    fn failures_map_to_events() {
        let down = GcpFailure::Unavailable {
            operation: "Op".into(),
            reason: None,
            status: None,
            message: "x".into(),
        };
        assert_eq!(failure_event(&down).id, 8101);
        assert_eq!(
            failure_event(&rejected(FailureKind::NotFound, "notFound", 404)).id,
            8102
        );
        assert_eq!(
            failure_event(&rejected(FailureKind::PermissionDenied, "forbidden", 403)).id,
            8103
        );
        assert_eq!(
            failure_event(&rejected(FailureKind::Credentials, "invalid_grant", 400)).id,
            8104
        );
        assert_eq!(
            failure_event(&rejected(FailureKind::Rejected, "invalid", 400)).id,
            8105
        );
        assert_eq!(
            failure_event(&rejected(FailureKind::Conflict, "conditionNotMet", 412)).id,
            8109
        );
        let p = ProviderError::from(down);
        assert!(p.is_api_error());
        let p = ProviderError::from(rejected(FailureKind::NotFound, "notFound", 404));
        assert!(!p.is_api_error());
        assert_eq!(p.to_string(), "notFound: Op: m");
    }

    #[test]
    fn projects_are_checked() {
        assert!(check_project(None).is_ok());
        assert!(check_project(Some("baton-test")).is_ok());
        let e = check_project(Some("Baton Test")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("project"));
    }
}
