//! Amazon Web Services: the client factory shared by every AWS caller, and the AWS
//! resources and monitors.
//!
//! Resource kinds (the three ways clients reach a cluster on AWS):
//! - `aws-vip` ([`vip`]): a virtual IP outside the VPC CIDR, routed to the active
//!   server's ENI by the VPC route tables, and added to a local interface;
//! - `aws-eip` ([`eip`]): an Elastic IP associated with the active server's ENI;
//! - `aws-dns` ([`dns`]): a Route 53 A record holding the active server's address.
//!
//! Monitor kinds: `aws-vip`, `aws-eip`, `aws-dns` (the resource's state as AWS sees it,
//! taking the same keys as the resource) and `aws-az` ([`az`]: the state of an
//! availability zone).
//!
//! Every mutation is read-then-write with the group's epoch in the decision (design
//! invariant 3): route tables and Elastic IPs carry a `baton:<group>:epoch` tag, a
//! Route 53 record a TXT record `_baton.<name>`; a higher epoch found there is never
//! overwritten (the formats and the decisions are in [`crate::fencing`]). SDK clients
//! are created lazily on the first call (`baton config check` never calls AWS) and
//! shared by every driver of the agent through [`AwsShared`].

pub mod az;
pub mod client;
pub mod dns;
pub mod eip;
pub mod events;
pub mod imds;
pub mod preflight;
pub mod vip;
pub mod witness;

use std::sync::Arc;

use baton_core::config::AwsSection;

pub use client::{call, classify, AwsClients, AwsFailure, AwsServices};
pub use events::EventSink;

use crate::params::key_error;
use crate::{ParamError, Params, Probe, ProviderError, Registry, ResourceDriver};

/// Resource kinds of the AWS registry.
pub const RESOURCE_KINDS: &[&str] = &["aws-vip", "aws-eip", "aws-dns"];
/// Monitor kinds of the AWS registry.
pub const MONITOR_KINDS: &[&str] = &["aws-vip", "aws-eip", "aws-dns", "aws-az"];
/// Kinds whose self-fence stop is local only, with its bound (ms): the routes, the
/// association and the record carry the group's epoch and the next owner's fenced write
/// takes them over (ReplaceRoute, AssociateAddress with reassociation, a Route 53 batch
/// that deletes what it read), so the old owner's cloud call adds nothing to safety.
/// `aws-vip` removes its local address; the other two have no local part.
pub const LOCAL_FENCE_STOP: &[(&str, u64)] = &[
    ("aws-vip", crate::LOCAL_ADDRESS_STOP_MS),
    ("aws-eip", 0),
    ("aws-dns", 0),
];

/// What every AWS driver and probe of one agent shares: the `[aws]` settings, the SDK
/// clients (created on first use), the instance metadata facts (fetched on first use)
/// and the event sink.
#[derive(Debug)]
pub struct AwsShared {
    settings: AwsSection,
    clients: tokio::sync::OnceCell<AwsClients>,
    pub(crate) imds: imds::Imds,
    pub(crate) events: EventSink,
}

impl AwsShared {
    pub fn new(settings: &AwsSection) -> AwsShared {
        AwsShared {
            settings: settings.clone(),
            clients: tokio::sync::OnceCell::new(),
            imds: imds::Imds::new(settings.imds),
            events: EventSink::default(),
        }
    }

    pub fn settings(&self) -> &AwsSection {
        &self.settings
    }

    /// The SDK clients, built on the first call.
    pub async fn clients(&self) -> &AwsClients {
        self.clients
            .get_or_init(|| AwsClients::load(&self.settings))
            .await
    }

    /// Use these clients instead of building them from the settings (tests, tools).
    pub fn with_clients(self, clients: AwsClients) -> AwsShared {
        let cell = tokio::sync::OnceCell::new();
        // A fresh cell cannot be set already.
        let _ = cell.set(clients);
        AwsShared {
            clients: cell,
            ..self
        }
    }

    /// Ask this instance metadata endpoint instead of the SDK's default (tests).
    pub fn with_imds_endpoint(mut self, url: &str) -> AwsShared {
        self.imds = imds::Imds::new(true).with_endpoint(url);
        self
    }

    /// Send events to this sink.
    pub fn with_events(mut self, sink: EventSink) -> AwsShared {
        self.events = sink;
        self
    }
}

impl AwsShared {
    /// Turn a failed call into the driver's error, raising its event (once per latch
    /// period when a latch is given).
    pub(crate) fn report(
        &self,
        subject: events::Subject<'_>,
        latch: Option<&events::Latch>,
        f: AwsFailure,
    ) -> ProviderError {
        let def = events::failure_event(&f);
        if latch.is_none_or(|l| l.first(def.id)) {
            self.events
                .emit(subject.event(def, format!("{}: {f}", subject.name())));
        }
        f.into()
    }

    /// Raise an event about `subject` (once per latch period when a latch is given).
    pub(crate) fn raise(
        &self,
        subject: events::Subject<'_>,
        latch: Option<&events::Latch>,
        def: &baton_core::events::EventDef,
        message: String,
    ) {
        if latch.is_none_or(|l| l.first(def.id)) {
            self.events.emit(subject.event(def, message));
        }
    }

    /// A configured value, else the instance metadata's (cached in `cell`; an event
    /// says where it came from, or why it could not be found).
    pub(crate) async fn discover(
        &self,
        configured: Option<&str>,
        cell: &tokio::sync::OnceCell<String>,
        fact: imds::Fact,
        subject: events::Subject<'_>,
    ) -> Result<String, ProviderError> {
        if let Some(v) = configured {
            return Ok(v.to_string());
        }
        if let Some(v) = cell.get() {
            return Ok(v.clone());
        }
        match self.imds.fact(fact).await {
            Ok(v) => {
                if cell.set(v.clone()).is_ok() {
                    self.raise(
                        subject,
                        None,
                        &baton_core::events::AWS_IMDS_DISCOVERED,
                        format!(
                            "{}: `{}` = {v}, from the instance metadata",
                            subject.name(),
                            fact.key()
                        ),
                    );
                }
                Ok(v)
            }
            Err(e) => {
                self.raise(
                    subject,
                    None,
                    &baton_core::events::AWS_IMDS_FAILED,
                    format!("{}: {e}", subject.name()),
                );
                Err(ProviderError::Other(e))
            }
        }
    }
}

/// The registry of the AWS kinds. Building drivers never calls AWS.
#[derive(Debug, Clone)]
pub struct AwsRegistry {
    shared: Arc<AwsShared>,
}

impl AwsRegistry {
    pub fn new(settings: &AwsSection) -> AwsRegistry {
        AwsRegistry {
            shared: Arc::new(AwsShared::new(settings)),
        }
    }

    pub fn from_shared(shared: Arc<AwsShared>) -> AwsRegistry {
        AwsRegistry { shared }
    }

    pub fn shared(&self) -> &Arc<AwsShared> {
        &self.shared
    }
}

impl Registry for AwsRegistry {
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
        let s = self.shared.clone();
        Ok(match kind {
            "aws-vip" => Box::new(vip::AwsVipDriver::from_params(params, s)?),
            "aws-eip" => Box::new(eip::AwsEipDriver::from_params(params, s)?),
            "aws-dns" => Box::new(dns::AwsDnsDriver::from_params(params, s, false)?),
            other => {
                return Err(ParamError::new(
                    Some("kind".to_string()),
                    format!(
                        "unknown resource kind `{other}`; known AWS kinds: {}",
                        RESOURCE_KINDS.join(", ")
                    ),
                ))
            }
        })
    }

    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        let s = self.shared.clone();
        Ok(match kind {
            "aws-vip" => Box::new(vip::AwsVipProbe::from_params(params, s)?),
            "aws-eip" => Box::new(eip::AwsEipProbe::from_params(params, s)?),
            "aws-dns" => Box::new(dns::AwsDnsProbe::from_params(params, s)?),
            "aws-az" => Box::new(az::AwsAzProbe::from_params(params, s)?),
            other => {
                return Err(ParamError::new(
                    Some("kind".to_string()),
                    format!(
                        "unknown monitor kind `{other}`; known AWS kinds: {}",
                        MONITOR_KINDS.join(", ")
                    ),
                ))
            }
        })
    }
}

pub use crate::cloud::Deadline;

/// Check an AWS ID: `prefix-` followed by hex digits (`vpc-1234abcd`).
pub(crate) fn check_id(key: &str, value: &str, prefix: &str, what: &str) -> Result<(), ParamError> {
    let ok = value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            (8..=32).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
    if ok {
        Ok(())
    } else {
        Err(key_error(
            key,
            format!(
                "`{value}` is not {what} ID: expected `{prefix}-` followed by 8 to 32 hex digits, \
                 like {prefix}-1234abcd"
            ),
        ))
    }
}

/// Check that an IMDS-discoverable key is present or discoverable.
pub(crate) fn require_or_imds(
    shared: &AwsShared,
    key: &str,
    present: bool,
    what: &str,
) -> Result<(), ParamError> {
    if present || shared.settings.imds {
        Ok(())
    } else {
        Err(key_error(
            key,
            format!(
                "missing required key `{key}` ({what}): set it for each server, or enable \
                 `[aws] imds` to discover it from the instance metadata"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("vpc_id", "vpc-1234abcd", "vpc", "a VPC").is_ok());
        assert!(check_id("vpc_id", "vpc-0123456789abcdef0", "vpc", "a VPC").is_ok());
        let e = check_id("vpc_id", "vpc-xyz", "vpc", "a VPC").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("vpc_id"));
        assert!(e.message.contains("vpc-1234abcd"), "{}", e.message);
        assert!(check_id("eni_id", "vpc-1234abcd", "eni", "an ENI").is_err());
    }
}
