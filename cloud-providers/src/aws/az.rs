//! `aws-az`: the state of an availability zone (DescribeAvailabilityZones), as the
//! seed's AWS AZ monitor resource. `available` and `information` are healthy;
//! `impaired`, `unavailable` and `constrained` are not, and with a recovery target
//! (`local-server`, or the group) the groups move to a server in another zone.

use crate::aws::AwsServices;
use std::sync::Arc;

use async_trait::async_trait;
use baton_core::events as ev;
use serde::Deserialize;

use super::events::{Latch, Subject};
use super::imds::Fact;
use super::{call, AwsShared, Deadline};
use crate::params::{key_error, parse_params};
use crate::{ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError};

/// Keys of an `aws-az` monitor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAzParams {
    /// The availability zone to watch (`us-east-1a`), usually per server. Default: this
    /// instance's zone from the instance metadata (`[aws] imds`).
    pub zone: Option<String>,
}

/// The `aws-az` monitor.
#[derive(Debug)]
pub struct AwsAzProbe {
    pub params: AwsAzParams,
    shared: Arc<AwsShared>,
    zone: tokio::sync::OnceCell<String>,
    latch: Latch,
}

/// Zone states that count as healthy.
pub fn healthy_state(state: &str) -> bool {
    matches!(state, "available" | "information")
}

impl AwsAzProbe {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        let p: AwsAzParams = parse_params(params)?;
        if let Some(z) = &p.zone {
            let ok = z.len() >= 4
                && z.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && z.ends_with(|c: char| c.is_ascii_lowercase());
            if !ok {
                return Err(key_error(
                    "zone",
                    format!("`{z}` is not an availability zone name (for example `us-east-1a`)"),
                ));
            }
        }
        super::require_or_imds(&shared, "zone", p.zone.is_some(), "the zone to watch")?;
        Ok(AwsAzProbe {
            params: p,
            shared,
            zone: tokio::sync::OnceCell::new(),
            latch: Latch::default(),
        })
    }

    /// The zone's state, or why it could not be read.
    pub async fn state(
        &self,
        zone: &str,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Option<String>, ProviderError> {
        let ec2 = self.shared.clients().await.ec2();
        let out = call(
            "DescribeAvailabilityZones",
            dl.remaining()?,
            ec2.describe_availability_zones().zone_names(zone).send(),
        )
        .await;
        let out = match out {
            Ok(o) => o,
            // AWS answers an unknown zone name with InvalidParameterValue.
            Err(f) if f.code() == Some("InvalidParameterValue") => return Ok(None),
            Err(f) => return Err(self.shared.report(subject, latch, f)),
        };
        Ok(out
            .availability_zones()
            .iter()
            .find(|z| z.zone_name() == Some(zone))
            .map(|z| {
                z.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into())
            }))
    }
}

#[async_trait]
impl Probe for AwsAzProbe {
    fn kind(&self) -> &'static str {
        "aws-az"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let dl = Deadline::new(ctx.timeout);
        let zone = self
            .shared
            .discover(self.params.zone.as_deref(), &self.zone, Fact::Zone, subject)
            .await?;
        match self.state(&zone, &dl, subject, Some(&self.latch)).await? {
            None => {
                let msg = format!("{}: Invalid availability zone: [{zone}]", subject.name());
                self.shared.raise(
                    subject,
                    Some(&self.latch),
                    &ev::AWS_INVALID_ZONE,
                    msg.clone(),
                );
                Err(ProviderError::Other(msg))
            }
            Some(state) if healthy_state(&state) => {
                self.latch.reset();
                Ok(ProbeOk {
                    detail: Some(format!("{zone} is {state}")),
                })
            }
            Some(state) => {
                let msg = format!("{}: availability zone {zone} is {state}", subject.name());
                self.shared.raise(
                    subject,
                    Some(&self.latch),
                    &ev::AWS_ZONE_IMPAIRED,
                    msg.clone(),
                );
                Err(ProviderError::Unhealthy(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::config::AwsSection;

    #[test]
    fn params_and_states() {
        let shared = Arc::new(AwsShared::new(&AwsSection {
            imds: false,
            ..AwsSection::default()
        }));
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        assert!(AwsAzProbe::from_params(&t("zone = 'us-east-1a'"), shared.clone()).is_ok());
        let e = AwsAzProbe::from_params(&t("zone = 'US-EAST-1A'"), shared.clone()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("zone"));
        let e = AwsAzProbe::from_params(&t(""), shared).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("zone"));
        assert!(healthy_state("available"));
        assert!(healthy_state("information"));
        assert!(!healthy_state("impaired"));
        assert!(!healthy_state("unavailable"));
    }
}
