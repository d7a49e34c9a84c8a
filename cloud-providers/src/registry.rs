//! The registry of every kind this crate implements: the on-host kinds, the AWS kinds,
//! the Azure kinds and the Google Cloud kinds, the cloud ones with clients built from
//! the configuration's `[aws]`, `[azure]` and `[gcp]` sections on first use (so
//! validating a configuration never calls a cloud).

use std::sync::Mutex;

use baton_core::config::{AwsSection, AzureSection, GcpSection};
use baton_core::events::Event;

use crate::aws::{self, AwsRegistry, AwsShared, EventSink};
use crate::azure::{self, AzureRegistry, AzureShared};
use crate::gcp::{self, GcpRegistry, GcpShared};
use crate::local::LocalRegistry;
use crate::{ParamError, Params, Probe, Registry, ResourceDriver};

/// Local + AWS + Azure + Google Cloud kinds. Events the cloud drivers raise wait in a bounded queue for
/// the agent to take ([`ProviderRegistry::take_events`]).
#[derive(Debug)]
pub struct ProviderRegistry {
    local: LocalRegistry,
    aws: AwsRegistry,
    azure: AzureRegistry,
    gcp: GcpRegistry,
    events: Mutex<Option<tokio::sync::mpsc::Receiver<Event>>>,
}

impl ProviderRegistry {
    pub fn new(aws: &AwsSection, azure: &AzureSection, gcp: &GcpSection) -> ProviderRegistry {
        ProviderRegistry::with_clouds(aws, AzureShared::new(azure), GcpShared::new(gcp))
    }

    /// With this Azure state (lenient for checking files, a given client for tests) and
    /// the default `[gcp]` settings.
    pub fn with_azure(aws: &AwsSection, azure: AzureShared) -> ProviderRegistry {
        ProviderRegistry::with_clouds(aws, azure, GcpShared::new(&GcpSection::default()))
    }

    /// With this Azure and Google Cloud state (a given client for tests).
    pub fn with_clouds(aws: &AwsSection, azure: AzureShared, gcp: GcpShared) -> ProviderRegistry {
        let (sink, rx) = EventSink::channel(256);
        let shared = AwsShared::new(aws).with_events(sink.clone());
        let azure = azure.with_events(sink.clone());
        let gcp = gcp.with_events(sink);
        ProviderRegistry {
            local: LocalRegistry,
            aws: AwsRegistry::from_shared(std::sync::Arc::new(shared)),
            azure: AzureRegistry::from_shared(std::sync::Arc::new(azure)),
            gcp: GcpRegistry::from_shared(std::sync::Arc::new(gcp)),
            events: Mutex::new(Some(rx)),
        }
    }

    /// The events raised by drivers outside the engine (once; the agent forwards them
    /// to its alert log).
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    pub fn aws(&self) -> &AwsRegistry {
        &self.aws
    }

    pub fn azure(&self) -> &AzureRegistry {
        &self.azure
    }

    pub fn gcp(&self) -> &GcpRegistry {
        &self.gcp
    }
}

impl Registry for ProviderRegistry {
    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        self.aws
            .local_fence_stop_ms(kind)
            .or_else(|| self.azure.local_fence_stop_ms(kind))
            .or_else(|| self.gcp.local_fence_stop_ms(kind))
    }

    fn resource_kinds(&self) -> Vec<&'static str> {
        let mut k = self.local.resource_kinds();
        k.extend(self.aws.resource_kinds());
        k.extend(self.azure.resource_kinds());
        k.extend(self.gcp.resource_kinds());
        k
    }

    fn monitor_kinds(&self) -> Vec<&'static str> {
        let mut k = self.local.monitor_kinds();
        k.extend(self.aws.monitor_kinds());
        k.extend(self.azure.monitor_kinds());
        k.extend(self.gcp.monitor_kinds());
        k
    }

    fn build_resource(
        &self,
        kind: &str,
        params: &Params,
    ) -> Result<Box<dyn ResourceDriver>, ParamError> {
        if aws::RESOURCE_KINDS.contains(&kind) {
            return self.aws.build_resource(kind, params);
        }
        if azure::RESOURCE_KINDS.contains(&kind) {
            return self.azure.build_resource(kind, params);
        }
        if gcp::RESOURCE_KINDS.contains(&kind) {
            return self.gcp.build_resource(kind, params);
        }
        self.local.build_resource(kind, params).map_err(|e| {
            if e.key.as_deref() == Some("kind") {
                ParamError::new(
                    e.key,
                    format!(
                        "unknown resource kind `{kind}`; known kinds: {}",
                        self.resource_kinds().join(", ")
                    ),
                )
            } else {
                e
            }
        })
    }

    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        if aws::MONITOR_KINDS.contains(&kind) {
            return self.aws.build_probe(kind, params);
        }
        if azure::MONITOR_KINDS.contains(&kind) {
            return self.azure.build_probe(kind, params);
        }
        if gcp::MONITOR_KINDS.contains(&kind) {
            return self.gcp.build_probe(kind, params);
        }
        self.local.build_probe(kind, params).map_err(|e| {
            if e.key.as_deref() == Some("kind") {
                ParamError::new(
                    e.key,
                    format!(
                        "unknown monitor kind `{kind}`; known kinds: {}",
                        self.monitor_kinds().join(", ")
                    ),
                )
            } else {
                e
            }
        })
    }
}
