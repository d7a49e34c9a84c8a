//! `aws-vip`: a virtual IP outside the VPC CIDR, reached through the VPC's route tables.
//!
//! Activation points every route for `VIP/32` (in the route tables of the VPC that hold
//! one, or in the configured `route_tables`, creating it there when missing) at the
//! active server's ENI with ReplaceRoute / CreateRoute, then adds the VIP to a local
//! interface. Deactivation removes the local address only: the routes stay until the
//! next owner takes them. The monitor of the same name checks that every route points
//! at our ENI and that the address is on a local interface.
//!
//! Fencing (design invariant 3): EC2 has no conditional ReplaceRoute, so the route
//! tables carry a `baton:<group>:epoch` tag. Activation reads routes and tags in one
//! DescribeRouteTables, refuses when a table carries a newer epoch, tags the tables
//! with its own epoch, replaces the routes, and reads again: a newer epoch written
//! meanwhile makes it fail (the newer owner's own writes come after its tag).

use crate::aws::AwsServices;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Tag};
use baton_core::events as ev;
use serde::Deserialize;

use super::events::{Latch, Subject};
use super::imds::Fact;
use super::{call, check_id, require_or_imds, AwsShared, Deadline};
use crate::fencing::{self, Claim, Mark, Marks, Verdict};
use crate::local::floating_ip::FloatingIpDriver;
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Keys of an `aws-vip` resource (and of the `aws-vip` monitor, which takes the same
/// keys as the resource it watches).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsVipParams {
    /// Required. The virtual IPv4 address. Must lie outside every CIDR block of the VPC.
    pub ip: String,
    /// Required. The VPC of the servers (`vpc-...`).
    pub vpc_id: String,
    /// The ENI of this server the VIP is routed to (`eni-...`); set it per server in
    /// `[group.resource.server.NAME]`. Default: the primary ENI from the instance
    /// metadata (`[aws] imds`).
    pub eni_id: Option<String>,
    /// Route tables to manage (`rtb-...`). Default: every route table of the VPC that
    /// holds a route for `ip/32`. When set, a missing route is created in these tables.
    #[serde(default)]
    pub route_tables: Vec<String>,
    /// Local interface the address is added to. Default: found like `floating-ip` does.
    pub device: Option<String>,
    /// Add the VIP to a local interface (default true). Turn off when something else
    /// answers for the address on the instance.
    #[serde(default = "default_true")]
    pub local_address: bool,
}

fn default_true() -> bool {
    true
}

/// How one route table routes the VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableView {
    pub id: String,
    /// Whether the table has a route for `VIP/32`.
    pub has_route: bool,
    /// The ENI the route points at, if it points at one.
    pub eni: Option<String>,
    /// What the route points at, in words (`eni-...`, `instance i-...`, `blackhole`).
    pub target: String,
    /// The `baton:*:epoch` tags of the table.
    pub marks: Marks,
}

/// The driver of an `aws-vip` resource.
#[derive(Debug)]
pub struct AwsVipDriver {
    pub params: AwsVipParams,
    ip: Ipv4Addr,
    cidr: String,
    shared: Arc<AwsShared>,
    local: Option<FloatingIpDriver>,
    eni: tokio::sync::OnceCell<String>,
    vpc_ok: tokio::sync::OnceCell<()>,
    eni_ok: tokio::sync::OnceCell<()>,
}

impl AwsVipDriver {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        let p: AwsVipParams = parse_params(params)?;
        let ip: Ipv4Addr = p.ip.trim().parse().map_err(|_| {
            key_error(
                "ip",
                format!(
                    "invalid address `{}`: expected an IPv4 address outside the VPC CIDR, such as 10.1.0.20 \
                     (without a prefix length: the route is always /32)",
                    p.ip
                ),
            )
        })?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || ip.is_broadcast() {
            return Err(key_error(
                "ip",
                format!(
                    "`{ip}` cannot be a virtual IP (unspecified, multicast, broadcast or loopback)"
                ),
            ));
        }
        check_id("vpc_id", &p.vpc_id, "vpc", "a VPC")?;
        if let Some(eni) = &p.eni_id {
            check_id("eni_id", eni, "eni", "an ENI")?;
        }
        require_or_imds(
            &shared,
            "eni_id",
            p.eni_id.is_some(),
            "the ENI of this server",
        )?;
        for (i, rtb) in p.route_tables.iter().enumerate() {
            check_id(&format!("route_tables.{i}"), rtb, "rtb", "a route table")?;
        }
        let local = if p.local_address {
            let mut t = toml::Table::new();
            t.insert("ip".into(), toml::Value::String(ip.to_string()));
            if let Some(d) = &p.device {
                t.insert("device".into(), toml::Value::String(d.clone()));
            }
            // No ARP on a VPC: the route table, not the neighbours, decides.
            t.insert("arp_count".into(), toml::Value::Integer(0));
            t.insert("check_duplicate".into(), toml::Value::Boolean(false));
            Some(FloatingIpDriver::from_params(&t).map_err(|e| {
                ParamError::new(
                    e.key.map(|k| if k == "ip" { k } else { "device".into() }),
                    e.message,
                )
            })?)
        } else {
            None
        };
        Ok(AwsVipDriver {
            cidr: format!("{ip}/32"),
            ip,
            params: p,
            shared,
            local,
            eni: tokio::sync::OnceCell::new(),
            vpc_ok: tokio::sync::OnceCell::new(),
            eni_ok: tokio::sync::OnceCell::new(),
        })
    }

    /// Run the local-address commands in network namespace `ns` (tests, embedding).
    pub fn with_netns(mut self, ns: &str) -> Self {
        self.local = self.local.map(|l| l.with_netns(ns));
        self
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// This server's ENI (configured or discovered).
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

    /// The ENI (from the instance metadata when not configured) and the EC2 client, after
    /// the two checks done once (DescribeVpcs, DescribeNetworkInterfaces): what
    /// `prepare` does at start and every activation starts with.
    async fn checked(
        &self,
        subject: Subject<'_>,
        dl: &Deadline,
    ) -> Result<(String, aws_sdk_ec2::Client), ProviderError> {
        let eni = self.eni(subject).await?;
        let ec2 = self.shared.clients().await.ec2();
        self.check_vpc(&ec2, dl, subject).await?;
        self.check_eni(&ec2, &eni, dl, subject).await?;
        Ok((eni, ec2))
    }

    /// Reject a VIP inside the VPC's CIDR blocks (checked once).
    async fn check_vpc(
        &self,
        ec2: &aws_sdk_ec2::Client,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<(), ProviderError> {
        if self.vpc_ok.get().is_some() {
            return Ok(());
        }
        let out = call(
            "DescribeVpcs",
            dl.remaining()?,
            ec2.describe_vpcs().vpc_ids(&self.params.vpc_id).send(),
        )
        .await
        .map_err(|f| self.shared.report(subject, None, f))?;
        let Some(vpc) = out.vpcs().first() else {
            return Err(self.not_found(
                subject,
                format!("The vpc ID '{}' does not exist", self.params.vpc_id),
            ));
        };
        let mut cidrs: Vec<String> = vpc.cidr_block().map(str::to_string).into_iter().collect();
        for a in vpc.cidr_block_association_set() {
            if let Some(c) = a.cidr_block() {
                if !cidrs.iter().any(|x| x == c) {
                    cidrs.push(c.to_string());
                }
            }
        }
        if let Some(c) = cidrs.iter().find(|c| cidr_contains(c, self.ip)) {
            let msg = format!(
                "{}: The VIP address {} belongs to a VPC subnet ({} has CIDR block {c}); \
                 choose an address outside every CIDR block of the VPC",
                subject.name(),
                self.ip,
                self.params.vpc_id
            );
            self.shared
                .raise(subject, None, &ev::AWS_VIP_IN_VPC_CIDR, msg.clone());
            return Err(ProviderError::Other(msg));
        }
        let _ = self.vpc_ok.set(());
        Ok(())
    }

    fn not_found(&self, subject: Subject<'_>, what: String) -> ProviderError {
        let msg = format!("{}: {what}", subject.name());
        self.shared
            .raise(subject, None, &ev::AWS_ID_NOT_FOUND, msg.clone());
        ProviderError::Other(msg)
    }

    /// The ENI exists, is in our VPC; warn once when its source/destination check is on.
    async fn check_eni(
        &self,
        ec2: &aws_sdk_ec2::Client,
        eni: &str,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<(), ProviderError> {
        if self.eni_ok.get().is_some() {
            return Ok(());
        }
        let out = call(
            "DescribeNetworkInterfaces",
            dl.remaining()?,
            ec2.describe_network_interfaces()
                .network_interface_ids(eni)
                .send(),
        )
        .await
        .map_err(|f| self.shared.report(subject, None, f))?;
        let Some(ni) = out.network_interfaces().first() else {
            return Err(self.not_found(
                subject,
                format!("The networkInterface ID '{eni}' does not exist"),
            ));
        };
        if let Some(vpc) = ni.vpc_id() {
            if vpc != self.params.vpc_id {
                return Err(ProviderError::Other(format!(
                    "{}: ENI {eni} is in {vpc}, not in the configured {}",
                    subject.name(),
                    self.params.vpc_id
                )));
            }
        }
        if ni.source_dest_check() == Some(true) {
            self.shared.raise(
                subject,
                None,
                &ev::AWS_SOURCE_DEST_CHECK,
                format!(
                    "{}: ENI {eni} has its source/destination check on: packets to the VIP {} \
                     routed to it are dropped; disable Source/Dest. Check",
                    subject.name(),
                    self.ip
                ),
            );
        }
        let _ = self.eni_ok.set(());
        Ok(())
    }

    /// The route tables this resource manages, as AWS has them now.
    pub async fn read_tables(
        &self,
        ec2: &aws_sdk_ec2::Client,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Vec<TableView>, ProviderError> {
        let mut req = ec2.describe_route_tables();
        if self.params.route_tables.is_empty() {
            req = req
                .filters(
                    Filter::builder()
                        .name("vpc-id")
                        .values(&self.params.vpc_id)
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("route.destination-cidr-block")
                        .values(&self.cidr)
                        .build(),
                );
        } else {
            for id in &self.params.route_tables {
                req = req.route_table_ids(id);
            }
        }
        let out = call("DescribeRouteTables", dl.remaining()?, req.send())
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
        let mut views = Vec::new();
        for rt in out.route_tables() {
            let id = rt.route_table_id().unwrap_or_default().to_string();
            let route = rt
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(self.cidr.as_str()));
            let (has_route, eni, target) = match route {
                None => (false, None, "no route".to_string()),
                Some(r) => {
                    let blackhole = r
                        .state()
                        .is_some_and(|s| s.as_str().eq_ignore_ascii_case("blackhole"));
                    let eni = r.network_interface_id().map(str::to_string);
                    let target = if blackhole {
                        "blackhole".to_string()
                    } else if let Some(e) = &eni {
                        e.clone()
                    } else if let Some(i) = r.instance_id() {
                        format!("instance {i}")
                    } else if let Some(g) = r.gateway_id() {
                        format!("gateway {g}")
                    } else if let Some(n) = r.nat_gateway_id() {
                        format!("NAT gateway {n}")
                    } else if let Some(t) = r.transit_gateway_id() {
                        format!("transit gateway {t}")
                    } else {
                        "another target".to_string()
                    };
                    (true, if blackhole { None } else { eni }, target)
                }
            };
            let marks = Marks::from_tags(
                rt.tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?, t.value()?))),
            );
            views.push(TableView {
                id,
                has_route,
                eni,
                target,
                marks,
            });
        }
        // Configured tables AWS did not return do not exist.
        for id in &self.params.route_tables {
            if !views.iter().any(|v| &v.id == id) {
                return Err(
                    self.not_found(subject, format!("The routeTable ID '{id}' does not exist"))
                );
            }
        }
        Ok(views)
    }

    fn no_route(&self, subject: Subject<'_>, latch: Option<&Latch>) -> ProviderError {
        let msg = format!(
            "{}: no route table of {} has a route for {}: add `{} -> ENI of the active server` to \
             every route table whose subnets' clients use the VIP, or list the tables in `route_tables`",
            subject.name(),
            self.params.vpc_id,
            self.cidr,
            self.cidr
        );
        self.shared
            .raise(subject, latch, &ev::AWS_NO_VIP_ROUTE, msg.clone());
        ProviderError::Other(msg)
    }

    /// Refuse to overwrite a route table a newer epoch holds (BTN-6012).
    fn stale(
        &self,
        subject: Subject<'_>,
        claim: &Claim<'_>,
        table: &str,
        holder: &Mark,
    ) -> ProviderError {
        let e = claim.fenced(&subject.name(), &format!("route table {table}"), holder);
        self.shared
            .raise(subject, None, &ev::AWS_STALE_EPOCH, e.to_string());
        e
    }

    /// Routes that do not point at `eni`, described.
    pub fn mismatches(&self, tables: &[TableView], eni: &str) -> Vec<String> {
        tables
            .iter()
            .filter(|t| t.eni.as_deref() != Some(eni))
            .map(|t| {
                let owner = t.marks.notes();
                if t.has_route {
                    format!(
                        "route {} in {} points at {}, not ours {eni}{owner}",
                        self.cidr, t.id, t.target
                    )
                } else {
                    format!("route {} is missing from {}{owner}", self.cidr, t.id)
                }
            })
            .collect()
    }

    fn local_ctx(ctx: &ActionContext, dl: &Deadline) -> Result<ActionContext, ProviderError> {
        let mut c = ctx.clone();
        c.timeout = dl.remaining()?;
        Ok(c)
    }
}

/// Does `cidr` (`10.0.0.0/16`) contain `ip`? False for anything unparsable or IPv6.
pub fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

#[async_trait]
impl ResourceDriver for AwsVipDriver {
    fn kind(&self) -> &'static str {
        "aws-vip"
    }

    async fn prepare(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.checked(Subject::Action(ctx), &Deadline::new(ctx.timeout))
            .await
            .map(|_| ())
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let (eni, ec2) = self.checked(subject, &dl).await?;
        let tables = self.read_tables(&ec2, &dl, subject, None).await?;
        if tables.is_empty() {
            return Err(self.no_route(subject, None));
        }
        // Fencing: never overwrite a newer claim.
        let claim = Claim::from(ctx);
        if let Some((t, holder)) = claim.refused_by(
            tables
                .iter()
                .filter_map(|t| Some((t.id.as_str(), t.marks.of(claim.group)?))),
        ) {
            return Err(self.stale(subject, &claim, t, holder));
        }
        let value = fencing::tag_value(claim.epoch, claim.server);
        let key = fencing::tag_key(claim.group);
        let to_tag: Vec<&str> = tables
            .iter()
            .filter(|t| claim.verdict(t.marks.of(claim.group)) != Verdict::Ours)
            .map(|t| t.id.as_str())
            .collect();
        if !to_tag.is_empty() {
            let mut req = ec2
                .create_tags()
                .tags(Tag::builder().key(&key).value(&value).build());
            for id in &to_tag {
                req = req.resources(*id);
            }
            call("CreateTags", dl.remaining()?, req.send())
                .await
                .map_err(|f| self.shared.report(subject, None, f))?;
        }
        // Every table that points elsewhere changes at once: one API round trip for the
        // routes however many tables the VIP is in (each change is independent; the
        // fencing tags above are written first and read back below either way).
        let pending: Vec<&TableView> = tables
            .iter()
            .filter(|t| t.eni.as_deref() != Some(eni.as_str()))
            .collect();
        let changes = pending.iter().map(|t| {
            let ec2 = &ec2;
            let (dl, eni) = (&dl, &eni);
            async move {
                if t.has_route {
                    call(
                        "ReplaceRoute",
                        dl.remaining()?,
                        ec2.replace_route()
                            .route_table_id(&t.id)
                            .destination_cidr_block(&self.cidr)
                            .network_interface_id(eni)
                            .send(),
                    )
                    .await
                    .map_err(|f| self.shared.report(subject, None, f))?;
                    tracing::info!(table = %t.id, from = %t.target, to = %eni, vip = %self.ip, "VIP route replaced");
                } else {
                    call(
                        "CreateRoute",
                        dl.remaining()?,
                        ec2.create_route()
                            .route_table_id(&t.id)
                            .destination_cidr_block(&self.cidr)
                            .network_interface_id(eni)
                            .send(),
                    )
                    .await
                    .map_err(|f| self.shared.report(subject, None, f))?;
                    tracing::info!(table = %t.id, to = %eni, vip = %self.ip, "VIP route created");
                }
                Ok::<(), ProviderError>(())
            }
        });
        futures_util::future::try_join_all(changes).await?;
        let changed: Vec<String> = pending.iter().map(|t| t.id.clone()).collect();
        if !changed.is_empty() || !to_tag.is_empty() {
            // Read back: a newer claim written meanwhile wins, and we say so.
            let after = self.read_tables(&ec2, &dl, subject, None).await?;
            for t in &after {
                if let Verdict::Refused(holder) = claim.verdict(t.marks.of(claim.group)) {
                    return Err(self.stale(subject, &claim, &t.id, holder));
                }
            }
            let wrong = self.mismatches(&after, &eni);
            if !wrong.is_empty() {
                return Err(ProviderError::Other(format!(
                    "{}: routes changed during activation: {}",
                    subject.name(),
                    wrong.join("; ")
                )));
            }
        }
        if let Some(local) = &self.local {
            local.activate(&Self::local_ctx(ctx, &dl)?).await?;
        }
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.events.emit(
            subject
                .event(
                    &ev::AWS_VIP_ROUTED,
                    format!(
                        "{}: VIP {} routed to {eni} in {} route table(s) ({} changed) in {took} ms",
                        subject.name(),
                        self.ip,
                        tables.len(),
                        changed.len()
                    ),
                )
                .field("took_ms", took)
                .field("changed", changed.len())
                .field("tables", tables.len()),
        );
        Ok(())
    }

    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        // Deactivation is local only already (the address): the routes stay until the
        // next owner's fenced write points them at itself.
        self.deactivate(ctx).await
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        // The routes stay until the next owner points them at itself.
        match &self.local {
            Some(local) => local.deactivate(ctx).await,
            None => Ok(()),
        }
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let eni = self.eni(subject).await?;
        let ec2 = self.shared.clients().await.ec2();
        let tables = self.read_tables(&ec2, &dl, subject, None).await?;
        let wrong = self.mismatches(&tables, &eni);
        let local = match &self.local {
            Some(l) => Some(l.check(&Self::local_ctx(ctx, &dl)?).await?),
            None => None,
        };
        let all_elsewhere = !tables.is_empty() && wrong.len() == tables.len();
        Ok(match local {
            Some(CheckOutcome::Degraded(d)) => CheckOutcome::Degraded(d),
            // Deactivated here: the routes stay until the next owner takes them.
            Some(CheckOutcome::Inactive) => CheckOutcome::Inactive,
            _ if tables.is_empty() => CheckOutcome::Degraded(format!(
                "no route table of {} has a route for {}",
                self.params.vpc_id, self.cidr
            )),
            _ if wrong.is_empty() => CheckOutcome::Active,
            None if all_elsewhere => CheckOutcome::Inactive,
            _ => CheckOutcome::Degraded(wrong.join("; ")),
        })
    }
}

/// The `aws-vip` monitor: every route points at our ENI, the address is local.
#[derive(Debug)]
pub struct AwsVipProbe {
    driver: AwsVipDriver,
    latch: Latch,
}

impl AwsVipProbe {
    pub fn from_params(params: &Params, shared: Arc<AwsShared>) -> Result<Self, ParamError> {
        Ok(AwsVipProbe {
            driver: AwsVipDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }

    pub fn with_netns(mut self, ns: &str) -> Self {
        self.driver = self.driver.with_netns(ns);
        self
    }
}

#[async_trait]
impl Probe for AwsVipProbe {
    fn kind(&self) -> &'static str {
        "aws-vip"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let dl = Deadline::new(ctx.timeout);
        let eni = d.eni(subject).await?;
        let ec2 = d.shared.clients().await.ec2();
        let tables = d.read_tables(&ec2, &dl, subject, Some(&self.latch)).await?;
        if tables.is_empty() {
            return Err(d.no_route(subject, Some(&self.latch)));
        }
        let wrong = d.mismatches(&tables, &eni);
        if !wrong.is_empty() {
            let msg = format!(
                "{}: The routing for VIP was changed: {}",
                subject.name(),
                wrong.join("; ")
            );
            d.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AWS_ROUTE_CHANGED,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        if let Some(local) = &d.local {
            local.probe_local(ctx, dl.remaining()?).await?;
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!(
                "{} route(s) for {} point at {eni}",
                tables.len(),
                d.cidr
            )),
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

    fn shared(imds: bool) -> Arc<AwsShared> {
        let s = AwsSection {
            imds,
            ..AwsSection::default()
        };
        Arc::new(AwsShared::new(&s))
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(cidr_contains("10.0.0.0/16", ip("10.0.200.1")));
        assert!(!cidr_contains("10.0.0.0/16", ip("10.1.0.20")));
        assert!(cidr_contains("0.0.0.0/0", ip("192.0.2.1")));
        assert!(!cidr_contains("garbage", ip("10.0.0.1")));
        assert!(!cidr_contains("2001:db8::/32", ip("10.0.0.1")));
    }

    #[test]
    fn params() {
        let ok = "ip = '10.1.0.20'\nvpc_id = 'vpc-1234abcd'\neni_id = 'eni-0123456789abcdef0'";
        let d = AwsVipDriver::from_params(&table(ok), shared(false)).unwrap();
        assert!(d.local.is_some());
        assert_eq!(d.cidr, "10.1.0.20/32");
        let e = AwsVipDriver::from_params(
            &table("ip = '10.1.0.20/32'\nvpc_id = 'vpc-1234abcd'\neni_id = 'eni-1234abcd'"),
            shared(true),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ip"));
        let e = AwsVipDriver::from_params(
            &table("ip = '10.1.0.20'\nvpc_id = 'vpc-zz'\neni_id = 'eni-1234abcd'"),
            shared(true),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("vpc_id"));
        // ENI omitted: fine with IMDS, an error without.
        let no_eni = "ip = '10.1.0.20'\nvpc_id = 'vpc-1234abcd'";
        assert!(AwsVipDriver::from_params(&table(no_eni), shared(true)).is_ok());
        let e = AwsVipDriver::from_params(&table(no_eni), shared(false)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("eni_id"));
        let e = AwsVipDriver::from_params(
            &table(
                "ip = '10.1.0.20'\nvpc_id = 'vpc-1234abcd'\nroute_tables = ['rtb-1234abcd', 'x']",
            ),
            shared(true),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("route_tables.1"));
        let e = AwsVipDriver::from_params(
            &table("ip = '10.1.0.20'\nvpc_id = 'vpc-1234abcd'\ndevice = 'eth 0'"),
            shared(true),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device"));
        let d = AwsVipDriver::from_params(
            &table("ip = '10.1.0.20'\nvpc_id = 'vpc-1234abcd'\nlocal_address = false"),
            shared(true),
        )
        .unwrap();
        assert!(d.local.is_none());
    }
}
