//! `aws-dns`: a Route 53 A record that holds the active server's address.
//!
//! Activation reads the A record and its epoch record (a TXT record `_baton.<name>`
//! holding `"baton epoch=N server=S group=G"`), refuses when the epoch there is newer
//! than its own, and writes both in one change batch: DELETE the values it read +
//! CREATE the new ones. Route 53 applies a batch atomically and rejects a DELETE whose
//! values no longer match, so a concurrent writer makes the change fail instead of
//! being overwritten. It then polls GetChange until INSYNC (bounded) and reports the
//! time it took. Deactivation deletes the record (and its epoch record) when
//! `delete_on_deactivate` is on and the record still holds our address.
//!
//! The monitor of the same name checks the record holds our address and, with
//! `resolve = true`, that the system resolver returns it.

use crate::aws::AwsServices;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use baton_core::events as ev;
use serde::Deserialize;

use super::events::{Latch, Subject};
use super::imds::Fact;
use super::{call, require_or_imds, AwsFailure, AwsShared, Deadline};
use crate::fencing::{self, Claim, Mark, Verdict};
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Keys of an `aws-dns` resource (and of the `aws-dns` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsDnsParams {
    /// Required. The hosted zone (`Z0123456789ABCDEFGHIJ` or `/hostedzone/Z...`).
    pub hosted_zone_id: String,
    /// Required. The record name ("Resource Record Set Name"): a fully qualified name in
    /// lower case with a trailing dot (`db.example.internal.`).
    pub record_name: String,
    /// The address the record holds while this server is active, usually set per server
    /// (or common, for a VIP or EIP). Default: the instance's private IPv4 address from
    /// the instance metadata (`[aws] imds`).
    pub ip: Option<String>,
    /// TTL of the record in seconds (default 300). Clients may keep the old address this
    /// long after a failover.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Delete the record when the resource is deactivated (default true). Off: the
    /// record keeps the last owner's address, which shortens name resolution after a
    /// failover (no negative caching) but resolves while the group is stopped.
    #[serde(default = "default_true")]
    pub delete_on_deactivate: bool,
    /// Wait until Route 53 reports the change INSYNC (default true).
    #[serde(default = "default_true")]
    pub wait_insync: bool,
    /// Upper bound of that wait (default 60s; the action's timeout also bounds it).
    #[serde(
        default = "default_insync",
        deserialize_with = "crate::params::duration"
    )]
    pub insync_timeout: Duration,
    /// Monitor only: also resolve the name through the system resolver and compare
    /// (default false).
    #[serde(default)]
    pub resolve: bool,
}

fn default_ttl() -> u32 {
    300
}
fn default_true() -> bool {
    true
}
fn default_insync() -> Duration {
    Duration::from_secs(60)
}

/// Check a record name: FQDN, lower case, trailing dot.
pub fn check_name(name: &str) -> Result<(), ParamError> {
    let n = name.trim();
    if n.is_empty() {
        return Err(key_error("record_name", "`record_name` must not be empty"));
    }
    if n.chars().any(|c| c.is_ascii_uppercase()) {
        let fixed = n.to_ascii_lowercase();
        let fixed = if fixed.ends_with('.') {
            fixed
        } else {
            format!("{fixed}.")
        };
        return Err(key_error(
            "record_name",
            format!(
                "record name `{n}` must be in lower case (Route 53 stores names in lower case and the \
                 monitor compares them): write `{fixed}`"
            ),
        ));
    }
    if !n.ends_with('.') {
        return Err(key_error(
            "record_name",
            format!(
                "record name `{n}` must be a fully qualified name ending with a dot: write `{n}.`"
            ),
        ));
    }
    let labels: Vec<&str> = n.trim_end_matches('.').split('.').collect();
    for l in labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(key_error(
                "record_name",
                format!("record name `{n}` has an invalid label `{l}`: use letters, digits, `-` and `_`, at most 63 each"),
            ));
        }
    }
    Ok(())
}

/// `Z123...` from `Z123...` or `/hostedzone/Z123...`.
pub fn zone_id(raw: &str) -> Result<String, ParamError> {
    let z = raw.trim().trim_start_matches("/hostedzone/");
    let ok = !z.is_empty() && z.len() <= 32 && z.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(z.to_string())
    } else {
        Err(key_error(
            "hosted_zone_id",
            format!("`{raw}` is not a hosted zone ID: expected letters and digits like Z0123456789ABCDEFGHIJ"),
        ))
    }
}

/// The record and its epoch record as Route 53 has them now.
#[derive(Debug, Clone, Default)]
pub struct RecordView {
    pub a: Option<ResourceRecordSet>,
    pub txt: Option<ResourceRecordSet>,
}

impl RecordView {
    pub fn values(&self) -> Vec<String> {
        self.a
            .as_ref()
            .map(|a| {
                a.resource_records()
                    .iter()
                    .map(|r| r.value().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The mark (epoch, server) of the epoch record.
    pub fn mark(&self) -> Option<Mark> {
        fencing::parse_record_value(self.txt.as_ref()?.resource_records().first()?.value())
    }
}

/// The driver of an `aws-dns` resource.
#[derive(Debug)]
pub struct AwsDnsDriver {
    pub params: AwsDnsParams,
    zone: String,
    shared: Arc<AwsShared>,
    ip: tokio::sync::OnceCell<String>,
}

fn build_err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!("cannot build the Route 53 change: {e}"))
}

impl AwsDnsDriver {
    pub fn from_params(
        params: &Params,
        shared: Arc<AwsShared>,
        monitor: bool,
    ) -> Result<Self, ParamError> {
        let p: AwsDnsParams = parse_params(params)?;
        let zone = zone_id(&p.hosted_zone_id)?;
        check_name(&p.record_name)?;
        if let Some(ip) = &p.ip {
            if ip.parse::<Ipv4Addr>().is_err() {
                return Err(key_error(
                    "ip",
                    format!("invalid address `{ip}`: expected an IPv4 address such as 10.0.110.10"),
                ));
            }
        }
        require_or_imds(&shared, "ip", p.ip.is_some(), "the address of this server")?;
        if p.ttl == 0 || p.ttl > 604_800 {
            return Err(key_error("ttl", "ttl must be between 1 and 604800 seconds"));
        }
        if p.insync_timeout.is_zero() {
            return Err(key_error(
                "insync_timeout",
                "insync_timeout must be longer than 0",
            ));
        }
        if p.resolve && !monitor {
            return Err(key_error(
                "resolve",
                "`resolve` is a key of the aws-dns monitor, not of the resource",
            ));
        }
        Ok(AwsDnsDriver {
            params: p,
            zone,
            shared,
            ip: tokio::sync::OnceCell::new(),
        })
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub async fn ip(&self, subject: Subject<'_>) -> Result<String, ProviderError> {
        self.shared
            .discover(
                self.params.ip.as_deref(),
                &self.ip,
                Fact::LocalIpv4,
                subject,
            )
            .await
    }

    /// The record and its epoch record.
    pub async fn read(
        &self,
        r53: &aws_sdk_route53::Client,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<RecordView, ProviderError> {
        let name = &self.params.record_name;
        let txt_name = fencing::record_name(name);
        let out = call(
            "ListResourceRecordSets",
            dl.remaining()?,
            r53.list_resource_record_sets()
                .hosted_zone_id(&self.zone)
                .start_record_name(name)
                .max_items(10)
                .send(),
        )
        .await
        .map_err(|f| self.shared.report(subject, latch, f))?;
        let mut view = RecordView::default();
        for r in out.resource_record_sets() {
            let n = r.name().to_ascii_lowercase();
            if n == *name && *r.r#type() == RrType::A {
                view.a = Some(r.clone());
            } else if n == txt_name && *r.r#type() == RrType::Txt {
                view.txt = Some(r.clone());
            }
        }
        if view.txt.is_none() && out.is_truncated() {
            let out = call(
                "ListResourceRecordSets",
                dl.remaining()?,
                r53.list_resource_record_sets()
                    .hosted_zone_id(&self.zone)
                    .start_record_name(&txt_name)
                    .start_record_type(RrType::Txt)
                    .max_items(1)
                    .send(),
            )
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
            view.txt = out
                .resource_record_sets()
                .iter()
                .find(|r| r.name().eq_ignore_ascii_case(&txt_name) && *r.r#type() == RrType::Txt)
                .cloned();
        }
        Ok(view)
    }

    fn a_record(&self, ip: &str) -> Result<ResourceRecordSet, ProviderError> {
        ResourceRecordSet::builder()
            .name(&self.params.record_name)
            .r#type(RrType::A)
            .ttl(i64::from(self.params.ttl))
            .resource_records(
                ResourceRecord::builder()
                    .value(ip)
                    .build()
                    .map_err(build_err)?,
            )
            .build()
            .map_err(build_err)
    }

    fn txt_record(&self, claim: &Claim<'_>) -> Result<ResourceRecordSet, ProviderError> {
        let value = fencing::record_value(claim);
        ResourceRecordSet::builder()
            .name(fencing::record_name(&self.params.record_name))
            .r#type(RrType::Txt)
            .ttl(i64::from(self.params.ttl))
            .resource_records(
                ResourceRecord::builder()
                    .value(value)
                    .build()
                    .map_err(build_err)?,
            )
            .build()
            .map_err(build_err)
    }

    fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, ProviderError> {
        Change::builder()
            .action(action)
            .resource_record_set(set)
            .build()
            .map_err(build_err)
    }

    /// Send one batch; `Ok(Err(_))` is AWS's refusal.
    async fn send(
        &self,
        r53: &aws_sdk_route53::Client,
        changes: Vec<Change>,
        comment: &str,
        dl: &Deadline,
    ) -> Result<Result<Option<(String, bool)>, AwsFailure>, ProviderError> {
        let mut batch = ChangeBatch::builder().comment(comment);
        for c in changes {
            batch = batch.changes(c);
        }
        let r = call(
            "ChangeResourceRecordSets",
            dl.remaining()?,
            r53.change_resource_record_sets()
                .hosted_zone_id(&self.zone)
                .change_batch(batch.build().map_err(build_err)?)
                .send(),
        )
        .await;
        Ok(r.map(|out| {
            out.change_info().map(|i| {
                (
                    i.id().trim_start_matches("/change/").to_string(),
                    *i.status() == ChangeStatus::Insync,
                )
            })
        }))
    }

    /// Send one batch and wait for INSYNC (if configured). Returns the ms waited.
    ///
    /// Route 53 applies a batch as a whole, so `DELETE old` + `CREATE new` of the same
    /// name works even when `new` equals an earlier value. moto refuses a CREATE that
    /// repeats an earlier one while any record sorts after the name ("already exists");
    /// on that answer only, the DELETEs go first as their own (still conditional) batch
    /// and the new values follow as UPSERTs. Real Route 53 never takes this path.
    async fn apply(
        &self,
        r53: &aws_sdk_route53::Client,
        changes: Vec<Change>,
        comment: &str,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<u64, ProviderError> {
        let has_delete = changes.iter().any(|c| c.action == ChangeAction::Delete);
        match self.send(r53, changes.clone(), comment, dl).await? {
            Ok(info) => self.wait(r53, info, dl, subject).await,
            Err(AwsFailure::Rejected { code, message, .. })
                if has_delete
                    && code == "InvalidChangeBatch"
                    && message.contains("already exists") =>
            {
                tracing::warn!(
                    record = %self.params.record_name,
                    "the Route 53 endpoint refused to re-create a value in the same batch as its DELETE \
                     (an emulator); applying the DELETE first, then the new value"
                );
                let (dels, creates): (Vec<Change>, Vec<Change>) = changes
                    .into_iter()
                    .partition(|c| c.action == ChangeAction::Delete);
                let creates = creates
                    .into_iter()
                    .map(|mut c| {
                        c.action = ChangeAction::Upsert;
                        c
                    })
                    .collect();
                let mut waited = 0;
                for part in [dels, creates] {
                    let info = self
                        .send(r53, part, comment, dl)
                        .await?
                        .map_err(|f| self.shared.report(subject, None, f))?;
                    waited += self.wait(r53, info, dl, subject).await?;
                }
                Ok(waited)
            }
            Err(f) => Err(self.shared.report(subject, None, f)),
        }
    }

    /// Poll GetChange until INSYNC, bounded by `insync_timeout` and the deadline.
    async fn wait(
        &self,
        r53: &aws_sdk_route53::Client,
        info: Option<(String, bool)>,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<u64, ProviderError> {
        let started = crate::clock::now();
        let Some((id, insync)) = info else {
            return Ok(0);
        };
        if !self.params.wait_insync || insync {
            return Ok(0);
        }
        let bound = Deadline::new(self.params.insync_timeout.min(dl.remaining()?));
        let mut pause = Duration::from_millis(200);
        loop {
            let left = match bound.remaining() {
                Ok(l) => l,
                Err(_) => {
                    let msg = format!(
                        "{}: Route 53 change {id} for {} was not INSYNC after {} ms",
                        subject.name(),
                        self.params.record_name,
                        started.elapsed().as_millis()
                    );
                    self.shared
                        .raise(subject, None, &ev::AWS_DNS_CHANGE_TIMEOUT, msg.clone());
                    return Err(ProviderError::Other(msg));
                }
            };
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            let Ok(left) = bound.remaining() else {
                continue;
            };
            let out = call("GetChange", left, r53.get_change().id(&id).send())
                .await
                .map_err(|f| self.shared.report(subject, None, f))?;
            if out
                .change_info()
                .is_some_and(|c| *c.status() == ChangeStatus::Insync)
            {
                return Ok(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
        }
    }

    /// Refuse to overwrite a record a newer epoch holds (BTN-6012).
    fn stale(&self, subject: Subject<'_>, claim: &Claim<'_>, holder: &Mark) -> ProviderError {
        let resource = format!("record {}", self.params.record_name);
        let msg = format!(
            "{}: {resource} is claimed at epoch {} by {}, newer than this activation's epoch {}; \
             not overwriting it",
            subject.name(),
            holder.epoch,
            holder.server,
            claim.epoch
        );
        self.shared
            .raise(subject, None, &ev::AWS_STALE_EPOCH, msg.clone());
        claim.fenced_saying(&resource, holder, msg)
    }

    fn mismatch(&self, view: &RecordView, ip: &str) -> Option<String> {
        let values = view.values();
        if view.a.is_none() {
            Some(format!(
                "The resource record set in Amazon Route 53 does not exist: no A record {} in zone {}",
                self.params.record_name, self.zone
            ))
        } else if values != [ip.to_string()] {
            Some(format!(
                "IP address different from the setting is registered in the resource record set of \
                 Amazon Route 53: {} holds {}, expected {ip}",
                self.params.record_name,
                values.join(", ")
            ))
        } else {
            None
        }
    }
}

#[async_trait]
impl ResourceDriver for AwsDnsDriver {
    fn kind(&self) -> &'static str {
        "aws-dns"
    }

    async fn prepare(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        // The address (from the instance metadata when not configured) and the clients.
        self.ip(Subject::Action(ctx)).await?;
        self.shared.clients().await;
        Ok(())
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let ip = self.ip(subject).await?;
        let r53 = self.shared.clients().await.route53();
        let view = self.read(&r53, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let mark = view.mark();
        if let Verdict::Refused(holder) = claim.verdict(mark.as_ref()) {
            return Err(self.stale(subject, &claim, holder));
        }
        let want_a = self.a_record(&ip)?;
        let want_txt = self.txt_record(&claim)?;
        let a_ok = view.a.as_ref() == Some(&want_a);
        let txt_ok = view.txt.as_ref() == Some(&want_txt);
        if a_ok && txt_ok {
            return Ok(());
        }
        let mut changes = Vec::new();
        if !a_ok {
            if let Some(old) = &view.a {
                changes.push(Self::change(ChangeAction::Delete, old.clone())?);
            }
            changes.push(Self::change(ChangeAction::Create, want_a)?);
        }
        if !txt_ok {
            if let Some(old) = &view.txt {
                changes.push(Self::change(ChangeAction::Delete, old.clone())?);
            }
            changes.push(Self::change(ChangeAction::Create, want_txt)?);
        }
        let comment = format!("baton {} epoch {} on {}", ctx.group, ctx.epoch, ctx.server);
        let insync = self.apply(&r53, changes, &comment, &dl, subject).await?;
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.events.emit(
            subject
                .event(
                    &ev::AWS_DNS_UPDATED,
                    format!(
                        "{}: {} A {ip} (was {}); INSYNC after {insync} ms, {took} ms in all",
                        subject.name(),
                        self.params.record_name,
                        if view.a.is_some() {
                            view.values().join(", ")
                        } else {
                            "absent".to_string()
                        }
                    ),
                )
                .field("took_ms", took)
                .field("insync_ms", insync),
        );
        Ok(())
    }

    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        crate::nothing_local_to_stop(ctx, "record")
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        if !self.params.delete_on_deactivate {
            return Ok(());
        }
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let ip = self.ip(subject).await?;
        let r53 = self.shared.clients().await.route53();
        let view = self.read(&r53, &dl, subject, None).await?;
        let newer = !Claim::from(ctx).may_write(view.mark().as_ref());
        let Some(a) = view
            .a
            .clone()
            .filter(|_| view.values() == [ip.clone()] && !newer)
        else {
            tracing::info!(name = %self.params.record_name, values = ?view.values(), "record does not hold our address; left alone");
            return Ok(());
        };
        let mut changes = vec![Self::change(ChangeAction::Delete, a)?];
        if let Some(t) = view.txt.clone() {
            changes.push(Self::change(ChangeAction::Delete, t)?);
        }
        let comment = format!("baton {} epoch {} off {}", ctx.group, ctx.epoch, ctx.server);
        match self.apply(&r53, changes, &comment, &dl, subject).await {
            Ok(insync) => {
                self.shared.events.emit(
                    subject
                        .event(
                            &ev::AWS_DNS_UPDATED,
                            format!(
                                "{}: {} A {ip} deleted on deactivation; INSYNC after {insync} ms",
                                subject.name(),
                                self.params.record_name
                            ),
                        )
                        .field("insync_ms", insync),
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let ip = self.ip(subject).await?;
        let r53 = self.shared.clients().await.route53();
        let view = self.read(&r53, &dl, subject, None).await?;
        // A record holding another address belongs to whoever wrote it: not active here.
        Ok(match self.mismatch(&view, &ip) {
            None => CheckOutcome::Active,
            Some(_) => CheckOutcome::Inactive,
        })
    }
}

/// The `aws-dns` monitor.
#[derive(Debug)]
pub struct AwsDnsProbe {
    driver: AwsDnsDriver,
    latch: Latch,
}

impl AwsDnsProbe {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        Ok(AwsDnsProbe {
            driver: AwsDnsDriver::from_params(params, shared, true)?,
            latch: Latch::default(),
        })
    }
}

#[async_trait]
impl Probe for AwsDnsProbe {
    fn kind(&self) -> &'static str {
        "aws-dns"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let dl = Deadline::new(ctx.timeout);
        let ip = d.ip(subject).await?;
        let r53 = d.shared.clients().await.route53();
        let view = d.read(&r53, &dl, subject, Some(&self.latch)).await?;
        if let Some(why) = d.mismatch(&view, &ip) {
            let owner = view
                .mark()
                .map(|m| format!(" (epoch record: epoch {} by {})", m.epoch, m.server))
                .unwrap_or_default();
            let msg = format!("{}: {why}{owner}", subject.name());
            d.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AWS_DNS_RECORD_CHANGED,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        if d.params.resolve {
            let host = d.params.record_name.trim_end_matches('.').to_string();
            let lookup =
                tokio::time::timeout(dl.remaining()?, tokio::net::lookup_host((host.clone(), 0)))
                    .await;
            let want: IpAddr = ip
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProviderError::Other(format!("invalid address {ip}")))?;
            let msg = match lookup {
                Err(_) => Some(format!(
                    "{}: Failed to resolve domain name {host}: timed out",
                    subject.name()
                )),
                Ok(Err(e)) => Some(format!(
                    "{}: Failed to resolve domain name {host}: {e}",
                    subject.name()
                )),
                Ok(Ok(addrs)) => {
                    let got: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    if got.contains(&want) {
                        None
                    } else {
                        Some(format!(
                            "{}: IP address which is resolved from the DNS resolver is different from the setting: \
                             {host} resolves to {}, expected {want}",
                            subject.name(),
                            got.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                        ))
                    }
                }
            };
            if let Some(msg) = msg {
                d.shared.raise(
                    subject,
                    Some(&self.latch),
                    &ev::AWS_DNS_RESOLVE_FAILED,
                    msg.clone(),
                );
                return Err(ProviderError::Unhealthy(msg));
            }
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{} A {ip}", d.params.record_name)),
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
    fn names() {
        assert!(check_name("db.example.internal.").is_ok());
        let e = check_name("db.example.internal").unwrap_err();
        assert!(e.message.contains("ending with a dot"), "{}", e.message);
        assert!(
            e.message.contains("`db.example.internal.`"),
            "{}",
            e.message
        );
        let e = check_name("DB.Example.internal.").unwrap_err();
        assert!(e.message.contains("lower case"), "{}", e.message);
        assert!(
            e.message.contains("`db.example.internal.`"),
            "{}",
            e.message
        );
        assert!(check_name("localhost.").is_ok());
        assert!(check_name("a..b.").is_err());
        assert!(check_name("d b.example.").is_err());
    }

    #[test]
    fn zones() {
        assert_eq!(zone_id("/hostedzone/Z123ABC").unwrap(), "Z123ABC");
        assert_eq!(zone_id("Z123ABC").unwrap(), "Z123ABC");
        assert!(zone_id("Z-1").is_err());
    }

    #[test]
    fn params() {
        let shared = Arc::new(AwsShared::new(&AwsSection::default()));
        let ok = "hosted_zone_id = 'Z1'\nrecord_name = 'db.example.internal.'\nip = '10.0.110.10'";
        let d = AwsDnsDriver::from_params(&table(ok), shared.clone(), false).unwrap();
        assert_eq!(d.params.ttl, 300);
        assert!(d.params.delete_on_deactivate);
        let e = AwsDnsDriver::from_params(
            &table(&format!("{ok}\nresolve = true")),
            shared.clone(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("resolve"));
        assert!(AwsDnsDriver::from_params(
            &table(&format!("{ok}\nresolve = true")),
            shared.clone(),
            true
        )
        .is_ok());
        let e = AwsDnsDriver::from_params(&table(&format!("{ok}\nttl = 0")), shared.clone(), false)
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ttl"));
        let e = AwsDnsDriver::from_params(
            &table(
                "hosted_zone_id = 'Z1'\nrecord_name = 'Db.example.internal.'\nip = '10.0.110.10'",
            ),
            shared,
            false,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("record_name"));
    }

    #[test]
    fn epoch_record() {
        let set = ResourceRecordSet::builder()
            .name("_baton.db.example.internal.")
            .r#type(RrType::Txt)
            .ttl(60)
            .resource_records(
                ResourceRecord::builder()
                    .value("\"baton epoch=7 server=node-2 group=web\"")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let v = RecordView {
            a: None,
            txt: Some(set),
        };
        assert_eq!(
            v.mark(),
            Some(Mark {
                epoch: 7,
                server: "node-2".to_string()
            })
        );
    }
}
