//! Microsoft Azure: the Azure resources and monitors, over the client factory of
//! `baton_cloud_client::azure` (typed REST calls; identity, endpoints, retries and the
//! classification of failures are decided there once).
//!
//! Resource kinds: `azure-dns` ([`dns`]): an A record (or a CNAME) in an Azure DNS zone,
//! public or private, holding the active server's address; `azure-vip` ([`vip`]): the
//! route for a VIP in route tables, pointing at the active server; `azure-lb-probe`
//! ([`lb_probe`]): the load balancer's health probe answered by the active server.
//! Monitor kinds: the same three, and `azure-events` ([`events`]): Scheduled Events.
//! `baton cloud check` and the custom role are in [`preflight`].
//!
//! Every mutation is read-then-conditional-write with the group's epoch in the decision
//! (design invariant 3): a record set carries its epoch mark in its own `metadata`, a
//! route table in its tags, so the mark and what it guards change together under one
//! ETag (`If-Match`), and a higher epoch found there is never overwritten (the decisions are in [`crate::fencing`]).
//! The client is created on the first call (`baton config check` never calls Azure) and
//! shared by every driver of the agent through [`AzureShared`].
//!
//! Events (BTN-8001 to BTN-8099, module `azure`) go to the same sink as the AWS drivers'.

pub mod dns;
pub mod events;
pub mod lb_probe;
pub mod preflight;
pub mod vip;

use std::sync::Arc;

use baton_cloud_client::azure::{AzureClient, AzureFailure};
use baton_core::config::AzureSection;
use baton_core::events::{self as ev, EventDef};

use crate::cloud::{EventSink, Latch, Subject};
use crate::params::key_error;
use crate::{ParamError, Params, Probe, ProviderError, Registry, ResourceDriver};

/// Resource kinds of the Azure registry.
pub const RESOURCE_KINDS: &[&str] = &["azure-dns", "azure-lb-probe", "azure-vip"];
/// Monitor kinds of the Azure registry.
pub const MONITOR_KINDS: &[&str] = &["azure-dns", "azure-events", "azure-lb-probe", "azure-vip"];
/// Kinds whose self-fence stop is local only, with its bound (ms): the route tables and
/// the record set carry the group's epoch and the next owner's `If-Match` write takes
/// them over. `azure-vip` removes its local address; `azure-dns` has no local part.
/// (`azure-lb-probe` is not one: the load balancer sends to every server that answers
/// its probe, so its stop is what ends it.)
pub const LOCAL_FENCE_STOP: &[(&str, u64)] = &[
    ("azure-vip", crate::LOCAL_ADDRESS_STOP_MS),
    ("azure-dns", 0),
];

/// What every Azure driver and probe of one agent shares: the `[azure]` settings, the
/// client (created on first use) and the event sink.
#[derive(Debug)]
pub struct AzureShared {
    settings: AzureSection,
    /// Settings from the configuration being run (not the defaults used to check a
    /// file): kinds then need a subscription and resource group from somewhere.
    strict: bool,
    client: tokio::sync::OnceCell<AzureClient>,
    pub(crate) events: EventSink,
}

impl AzureShared {
    /// Shared state for a configuration's `[azure]` section.
    pub fn new(settings: &AzureSection) -> AzureShared {
        AzureShared {
            settings: settings.clone(),
            strict: true,
            client: tokio::sync::OnceCell::new(),
            events: EventSink::default(),
        }
    }

    /// For checking a configuration's kind keys without its `[azure]` section: a
    /// subscription or resource group left to `[azure]` is not required here.
    pub fn lenient() -> AzureShared {
        AzureShared {
            strict: false,
            ..AzureShared::new(&AzureSection::default())
        }
    }

    pub fn settings(&self) -> &AzureSection {
        &self.settings
    }

    /// Use this client instead of building one from the settings (tests, tools).
    pub fn with_client(self, client: AzureClient) -> AzureShared {
        let cell = tokio::sync::OnceCell::new();
        // A fresh cell cannot be set already.
        let _ = cell.set(client);
        AzureShared {
            client: cell,
            ..self
        }
    }

    /// Send events to this sink.
    pub fn with_events(mut self, sink: EventSink) -> AzureShared {
        self.events = sink;
        self
    }

    /// The client, built on the first call (reading a secret or certificate file).
    pub async fn client(&self) -> Result<&AzureClient, AzureFailure> {
        self.client
            .get_or_try_init(|| async { AzureClient::new(&self.settings) })
            .await
    }

    /// Turn a failed call into the driver's error, raising its event (once per latch
    /// period when a latch is given).
    pub(crate) fn report(
        &self,
        subject: Subject<'_>,
        latch: Option<&Latch>,
        f: AzureFailure,
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

/// The catalogue entry for a failed Azure call.
pub fn failure_event(f: &AzureFailure) -> &'static EventDef {
    let AzureFailure::Rejected { code, status, .. } = f else {
        return &ev::AZURE_API_UNAVAILABLE;
    };
    let credential = matches!(
        code.as_str(),
        "CredentialUnavailable"
            | "InvalidCertificate"
            | "AzureCliNotFound"
            | "AzureCliFailed"
            | "invalid_client"
            | "unauthorized_client"
            | "invalid_request"
            | "invalid_scope"
            | "invalid_grant"
    ) || code.ends_with("AuthenticationToken")
        || code.starts_with("AuthenticationFailed");
    if credential || *status == Some(401) {
        &ev::AZURE_CREDENTIALS
    } else if *status == Some(403) || code == "AuthorizationFailed" {
        &ev::AZURE_PERMISSION_DENIED
    } else if *status == Some(404) {
        &ev::AZURE_NOT_FOUND
    } else if *status == Some(412) {
        &ev::AZURE_DNS_CONFLICT
    } else {
        &ev::AZURE_REQUEST_REJECTED
    }
}

impl From<AzureFailure> for ProviderError {
    fn from(f: AzureFailure) -> Self {
        match f {
            AzureFailure::Unavailable {
                operation,
                code,
                status,
                message,
            } => ProviderError::Api {
                operation,
                code,
                status,
                message,
            },
            AzureFailure::Rejected {
                operation,
                code,
                status,
                message,
            } => ProviderError::Rejected {
                operation,
                code,
                status,
                message,
            },
        }
    }
}

/// The registry of the Azure kinds. Building drivers never calls Azure.
#[derive(Debug, Clone)]
pub struct AzureRegistry {
    shared: Arc<AzureShared>,
}

impl AzureRegistry {
    pub fn new(settings: &AzureSection) -> AzureRegistry {
        AzureRegistry::from_shared(Arc::new(AzureShared::new(settings)))
    }

    pub fn from_shared(shared: Arc<AzureShared>) -> AzureRegistry {
        AzureRegistry { shared }
    }

    pub fn shared(&self) -> &Arc<AzureShared> {
        &self.shared
    }
}

impl Registry for AzureRegistry {
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
            "azure-dns" => Ok(Box::new(dns::AzureDnsDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            "azure-lb-probe" => Ok(Box::new(lb_probe::AzureLbProbeDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            "azure-vip" => Ok(Box::new(vip::AzureVipDriver::from_params(
                params,
                self.shared.clone(),
            )?)),
            other => Err(ParamError::new(
                Some("kind".to_string()),
                format!(
                    "unknown resource kind `{other}`; known Azure kinds: {}",
                    RESOURCE_KINDS.join(", ")
                ),
            )),
        }
    }

    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        match kind {
            "azure-dns" => Ok(Box::new(dns::AzureDnsProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            "azure-events" => Ok(Box::new(events::AzureEventsProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            "azure-lb-probe" => Ok(Box::new(lb_probe::AzureLbProbeMonitor::from_params(
                params,
                self.shared.clone(),
            )?)),
            "azure-vip" => Ok(Box::new(vip::AzureVipProbe::from_params(
                params,
                self.shared.clone(),
            )?)),
            other => Err(ParamError::new(
                Some("kind".to_string()),
                format!(
                    "unknown monitor kind `{other}`; known Azure kinds: {}",
                    MONITOR_KINDS.join(", ")
                ),
            )),
        }
    }
}

/// Where an Azure kind's resources are: the kind's own `subscription_id` and
/// `resource_group`, else `[azure]`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
}

impl Scope {
    /// Check the kind's keys and resolve them against `[azure]` (required there when
    /// the settings are the configuration's own).
    pub(crate) fn resolve(
        shared: &AzureShared,
        subscription_id: Option<&str>,
        resource_group: Option<&str>,
    ) -> Result<Scope, ParamError> {
        if let Some(s) = subscription_id {
            if !baton_core::config::is_guid(s) {
                return Err(key_error(
                    "subscription_id",
                    format!("`{s}` is not a subscription ID: expected a GUID like 00000000-0000-0000-0000-000000000000"),
                ));
            }
        }
        if let Some(g) = resource_group {
            if !baton_core::config::is_resource_group(g) {
                return Err(key_error(
                    "resource_group",
                    format!("`{g}` is not a resource group name: 1 to 90 letters, digits, `_`, `-`, `.`, `(` and `)`"),
                ));
            }
        }
        let scope = Scope {
            subscription_id: subscription_id
                .map(str::to_string)
                .or_else(|| shared.settings.subscription_id.clone()),
            resource_group: resource_group
                .map(str::to_string)
                .or_else(|| shared.settings.resource_group.clone()),
        };
        if shared.strict {
            for (key, v) in [
                ("subscription_id", &scope.subscription_id),
                ("resource_group", &scope.resource_group),
            ] {
                if v.is_none() {
                    return Err(key_error(
                        key,
                        format!("missing `{key}`: set it here or as the default in [azure]"),
                    ));
                }
            }
        }
        Ok(scope)
    }

    /// `/subscriptions/S/resourceGroups/G/providers/` (an error when unresolved).
    pub(crate) fn providers_path(&self) -> Result<String, ProviderError> {
        match (&self.subscription_id, &self.resource_group) {
            (Some(s), Some(g)) => Ok(format!("/subscriptions/{s}/resourceGroups/{g}/providers")),
            _ => Err(ProviderError::Rejected {
                operation: "configuration".into(),
                code: "MissingSetting".into(),
                status: None,
                message:
                    "no subscription_id or resource_group: set them on the resource or in [azure]"
                        .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rejected(code: &str, status: u16) -> AzureFailure {
        AzureFailure::Rejected {
            operation: "Op".into(),
            code: code.into(),
            status: Some(status),
            message: "m".into(),
        }
    }

    #[test]
    fn failures_map_to_events() {
        let down = AzureFailure::Unavailable {
            operation: "Op".into(),
            code: None,
            status: None,
            message: "x".into(),
        };
        assert_eq!(failure_event(&down).id, 8001);
        assert_eq!(
            failure_event(&rejected("ParentResourceNotFound", 404)).id,
            8002
        );
        assert_eq!(
            failure_event(&rejected("AuthorizationFailed", 403)).id,
            8003
        );
        assert_eq!(
            failure_event(&rejected("ExpiredAuthenticationToken", 401)).id,
            8004
        );
        assert_eq!(failure_event(&rejected("invalid_client", 401)).id, 8004);
        assert_eq!(failure_event(&rejected("invalid_request", 400)).id, 8004);
        assert_eq!(failure_event(&rejected("PreconditionFailed", 412)).id, 8009);
        assert_eq!(failure_event(&rejected("BadRequest", 400)).id, 8005);
        let p = ProviderError::from(down);
        assert!(p.is_api_error());
        let p = ProviderError::from(rejected("NotFound", 404));
        assert!(!p.is_api_error());
        assert_eq!(p.to_string(), "NotFound: Op: m");
    }

    #[test]
    fn scopes_default_to_the_section() {
        let settings = AzureSection {
            subscription_id: Some("11111111-2222-3333-4444-555555555555".into()),
            resource_group: Some("rg".into()),
            ..AzureSection::default()
        };
        let strict = AzureShared::new(&settings);
        let s = Scope::resolve(&strict, None, Some("other")).unwrap();
        assert_eq!(s.resource_group.as_deref(), Some("other"));
        assert_eq!(
            s.providers_path().unwrap(),
            "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/other/providers"
        );
        let bare = AzureShared::new(&AzureSection::default());
        let e = Scope::resolve(&bare, None, Some("rg")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("subscription_id"));
        let s = Scope::resolve(&AzureShared::lenient(), None, None).unwrap();
        assert!(s.providers_path().is_err());
        let e = Scope::resolve(&strict, Some("nope"), None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("subscription_id"));
    }
}
