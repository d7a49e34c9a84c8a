//! `aws-eip`: an Elastic IP associated with the active server's ENI.
//!
//! Activation reads the allocation (DescribeAddresses: association and tags), refuses
//! when its `baton:<group>:epoch` tag is newer than the activation's epoch, tags it with
//! its own epoch, associates it with our ENI (and private IP, if given) with
//! reassociation allowed, and reads it back. Deactivation disassociates only an
//! association that is still ours (by its association ID, so a concurrent new owner's
//! association is never removed). The monitor checks that the association is ours.

use crate::aws::AwsServices;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::Tag;
use baton_core::events as ev;
use serde::Deserialize;

use super::events::{Latch, Subject};
use super::imds::Fact;
use super::{call, check_id, require_or_imds, AwsShared, Deadline};
use crate::fencing::{self, Claim, Mark, Marks, Verdict};
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Keys of an `aws-eip` resource (and of the `aws-eip` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsEipParams {
    /// Required. The allocation ID of the Elastic IP (`eipalloc-...`).
    pub allocation_id: String,
    /// The ENI of this server (`eni-...`), per server. Default: the primary ENI from the
    /// instance metadata (`[aws] imds`).
    pub eni_id: Option<String>,
    /// The private IPv4 address of the ENI to associate with. Default: the ENI's primary.
    pub private_ip: Option<String>,
}

/// An allocation as AWS has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressView {
    pub public_ip: String,
    pub association_id: Option<String>,
    pub eni: Option<String>,
    pub private_ip: Option<String>,
    /// The `baton:*:epoch` tags of the allocation.
    pub marks: Marks,
}

/// The driver of an `aws-eip` resource.
#[derive(Debug)]
pub struct AwsEipDriver {
    pub params: AwsEipParams,
    shared: Arc<AwsShared>,
    eni: tokio::sync::OnceCell<String>,
}

impl AwsEipDriver {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        let p: AwsEipParams = parse_params(params)?;
        check_id(
            "allocation_id",
            &p.allocation_id,
            "eipalloc",
            "an Elastic IP allocation",
        )?;
        if let Some(eni) = &p.eni_id {
            check_id("eni_id", eni, "eni", "an ENI")?;
        }
        require_or_imds(
            &shared,
            "eni_id",
            p.eni_id.is_some(),
            "the ENI of this server",
        )?;
        if let Some(ip) = &p.private_ip {
            if ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(key_error(
                    "private_ip",
                    format!("invalid address `{ip}`: expected a private IPv4 address of the ENI"),
                ));
            }
        }
        Ok(AwsEipDriver {
            params: p,
            shared,
            eni: tokio::sync::OnceCell::new(),
        })
    }

    pub async fn eni(&self, subject: Subject<'_>) -> Result<String, ProviderError> {
        self.shared
            .discover(
                self.params.eni_id.as_deref(),
                &self.eni,
                Fact::EniId,
                subject,
            )
            .await
    }

    /// The allocation now.
    pub async fn read(
        &self,
        ec2: &aws_sdk_ec2::Client,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<AddressView, ProviderError> {
        let out = call(
            "DescribeAddresses",
            dl.remaining()?,
            ec2.describe_addresses()
                .allocation_ids(&self.params.allocation_id)
                .send(),
        )
        .await
        .map_err(|f| self.shared.report(subject, latch, f))?;
        let Some(a) = out.addresses().first() else {
            let msg = format!(
                "{}: The allocation ID '{}' does not exist",
                subject.name(),
                self.params.allocation_id
            );
            self.shared
                .raise(subject, latch, &ev::AWS_ID_NOT_FOUND, msg.clone());
            return Err(ProviderError::Other(msg));
        };
        Ok(AddressView {
            public_ip: a.public_ip().unwrap_or_default().to_string(),
            association_id: a
                .association_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            eni: a
                .network_interface_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            private_ip: a.private_ip_address().map(str::to_string),
            marks: Marks::from_tags(a.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)))),
        })
    }

    fn is_ours(&self, a: &AddressView, eni: &str) -> bool {
        a.eni.as_deref() == Some(eni)
            && self
                .params
                .private_ip
                .as_ref()
                .is_none_or(|ip| a.private_ip.as_deref() == Some(ip.as_str()))
    }

    /// What the address is associated with, in words.
    pub fn describe(a: &AddressView) -> String {
        match (&a.eni, &a.private_ip) {
            (Some(e), Some(ip)) => format!("{e} ({ip})"),
            (Some(e), None) => e.clone(),
            _ => "nothing".to_string(),
        }
    }

    /// Refuse to reassociate an Elastic IP a newer epoch holds (BTN-6012).
    fn stale(&self, subject: Subject<'_>, claim: &Claim<'_>, holder: &Mark) -> ProviderError {
        let resource = format!("Elastic IP {}", self.params.allocation_id);
        let msg = format!(
            "{}: {resource} is claimed for group {} at epoch {} by {}, newer than this \
             activation's epoch {}; not reassociating it",
            subject.name(),
            claim.group,
            holder.epoch,
            holder.server,
            claim.epoch
        );
        self.shared
            .raise(subject, None, &ev::AWS_STALE_EPOCH, msg.clone());
        claim.fenced_saying(&resource, holder, msg)
    }
}

#[async_trait]
impl ResourceDriver for AwsEipDriver {
    fn kind(&self) -> &'static str {
        "aws-eip"
    }

    async fn prepare(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        // The ENI (from the instance metadata when not configured) and the clients.
        self.eni(Subject::Action(ctx)).await?;
        self.shared.clients().await;
        Ok(())
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let eni = self.eni(subject).await?;
        let ec2 = self.shared.clients().await.ec2();
        let a = self.read(&ec2, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let tagged = match claim.verdict(a.marks.of(claim.group)) {
            Verdict::Refused(holder) => return Err(self.stale(subject, &claim, holder)),
            Verdict::Ours => true,
            Verdict::Write => false,
        };
        if !tagged {
            call(
                "CreateTags",
                dl.remaining()?,
                ec2.create_tags()
                    .resources(&self.params.allocation_id)
                    .tags(
                        Tag::builder()
                            .key(fencing::tag_key(claim.group))
                            .value(fencing::tag_value(claim.epoch, claim.server))
                            .build(),
                    )
                    .send(),
            )
            .await
            .map_err(|f| self.shared.report(subject, None, f))?;
        }
        if self.is_ours(&a, &eni) && tagged {
            return Ok(());
        }
        if !self.is_ours(&a, &eni) {
            let mut req = ec2
                .associate_address()
                .allocation_id(&self.params.allocation_id)
                .network_interface_id(&eni)
                .allow_reassociation(true);
            if let Some(ip) = &self.params.private_ip {
                req = req.private_ip_address(ip);
            }
            call("AssociateAddress", dl.remaining()?, req.send())
                .await
                .map_err(|f| self.shared.report(subject, None, f))?;
            tracing::info!(allocation = %self.params.allocation_id, from = %Self::describe(&a), to = %eni, "Elastic IP associated");
        }
        let after = self.read(&ec2, &dl, subject, None).await?;
        if let Verdict::Refused(holder) = claim.verdict(after.marks.of(claim.group)) {
            return Err(self.stale(subject, &claim, holder));
        }
        if !self.is_ours(&after, &eni) {
            return Err(ProviderError::Other(format!(
                "{}: Elastic IP {} changed during activation: associated with {}, not ours {eni}",
                subject.name(),
                self.params.allocation_id,
                Self::describe(&after)
            )));
        }
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.events.emit(
            subject
                .event(
                    &ev::AWS_EIP_ASSOCIATED,
                    format!(
                        "{}: Elastic IP {} ({}) associated with {eni} (was {}) in {took} ms",
                        subject.name(),
                        after.public_ip,
                        self.params.allocation_id,
                        Self::describe(&a)
                    ),
                )
                .field("took_ms", took),
        );
        Ok(())
    }

    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        crate::nothing_local_to_stop(ctx, "Elastic IP association")
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let eni = self.eni(subject).await?;
        let ec2 = self.shared.clients().await.ec2();
        let a = self.read(&ec2, &dl, subject, None).await?;
        let (true, Some(assoc)) = (a.eni.as_deref() == Some(eni.as_str()), &a.association_id)
        else {
            tracing::info!(allocation = %self.params.allocation_id, with = %Self::describe(&a),
                "Elastic IP not associated with us; left alone");
            return Ok(());
        };
        match call(
            "DisassociateAddress",
            dl.remaining()?,
            ec2.disassociate_address().association_id(assoc).send(),
        )
        .await
        {
            Ok(_) => Ok(()),
            // Another owner re-associated it in between: not ours to remove any more.
            Err(f)
                if f.code()
                    .is_some_and(|c| c.starts_with("InvalidAssociationID")) =>
            {
                Ok(())
            }
            Err(f) => Err(self.shared.report(subject, None, f)),
        }
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let eni = self.eni(subject).await?;
        let ec2 = self.shared.clients().await.ec2();
        let a = self.read(&ec2, &dl, subject, None).await?;
        Ok(if self.is_ours(&a, &eni) {
            CheckOutcome::Active
        } else if a.eni.as_deref() == Some(eni.as_str()) {
            CheckOutcome::Degraded(format!(
                "Elastic IP {} is on {eni} but on private address {}",
                a.public_ip,
                a.private_ip.unwrap_or_default()
            ))
        } else {
            CheckOutcome::Inactive
        })
    }
}

/// The `aws-eip` monitor: the association is ours.
#[derive(Debug)]
pub struct AwsEipProbe {
    driver: AwsEipDriver,
    latch: Latch,
}

impl AwsEipProbe {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        Ok(AwsEipProbe {
            driver: AwsEipDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }
}

#[async_trait]
impl Probe for AwsEipProbe {
    fn kind(&self) -> &'static str {
        "aws-eip"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let dl = Deadline::new(ctx.timeout);
        let eni = d.eni(subject).await?;
        let ec2 = d.shared.clients().await.ec2();
        let a = d.read(&ec2, &dl, subject, Some(&self.latch)).await?;
        if !d.is_ours(&a, &eni) {
            let owner = a.marks.notes();
            let msg = if a.eni.is_none() {
                format!(
                    "{}: The EIP address does not exist on {eni}: Elastic IP {} ({}) is not associated{owner}",
                    subject.name(),
                    a.public_ip,
                    d.params.allocation_id
                )
            } else {
                format!(
                    "{}: Elastic IP {} ({}) is associated with {}, not ours {eni}{owner}",
                    subject.name(),
                    a.public_ip,
                    d.params.allocation_id,
                    AwsEipDriver::describe(&a)
                )
            };
            d.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AWS_EIP_CHANGED,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{} is associated with {eni}", a.public_ip)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::config::AwsSection;

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    #[test]
    fn params() {
        let shared = Arc::new(AwsShared::new(&AwsSection {
            imds: false,
            ..AwsSection::default()
        }));
        assert!(AwsEipDriver::from_params(
            &table("allocation_id = 'eipalloc-1234abcd'\neni_id = 'eni-1234abcd'"),
            shared.clone()
        )
        .is_ok());
        let e = AwsEipDriver::from_params(
            &table("allocation_id = 'eipalloc-1234abcd'"),
            shared.clone(),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("eni_id"));
        let e = AwsEipDriver::from_params(
            &table("allocation_id = 'alloc-1'\neni_id = 'eni-1234abcd'"),
            shared.clone(),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("allocation_id"));
        let e = AwsEipDriver::from_params(
            &table(
                "allocation_id = 'eipalloc-1234abcd'\neni_id = 'eni-1234abcd'\nprivate_ip = 'x'",
            ),
            shared,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("private_ip"));
    }
}
