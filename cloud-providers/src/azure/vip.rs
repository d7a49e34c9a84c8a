//! `azure-vip`: a virtual IP reached through user-defined routes, the route-table
//! pattern on Azure. In every listed route table, a route for `VIP/32` has the next hop
//! `VirtualAppliance` at the active server's private address; the VIP itself is added to
//! a local interface (the NIC needs IP forwarding enabled, see docs/src/azure.md).
//!
//! Fencing (design invariant 3): the route table carries the group's epoch in a tag
//! (`baton:<group>:epoch = "<epoch> <server>"`, as on AWS). Activation reads the table,
//! refuses when its mark is newer than this activation's epoch, and writes the table
//! back in one `PUT` with `If-Match` on the ETag it read: the tag and the route change
//! together or not at all, and a change made by anyone between the read and the write
//! (a route, a tag, another server's claim) makes the write fail with 412 instead of
//! being overwritten; the activation then reads again and decides again. Every other
//! route of the table is written back as read. The `PUT` is a long-running operation:
//! activation waits for it (Azure-AsyncOperation) within the action's timeout.
//!
//! Deactivation removes the local address only: the routes stay until the next owner
//! points them at itself. The monitor of the same name checks that every table's route
//! points here and that the address is on a local interface.

use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use baton_cloud_client::azure::{
    ArmRequest, AzureClient, IMDS_INSTANCE_API_VERSION, NETWORK_API_VERSION,
};
use baton_core::events as ev;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{AzureShared, Scope};
use crate::cloud::{Deadline, Latch, Subject};
use crate::fencing::{self, Claim, Marks, Verdict};
use crate::local::floating_ip::FloatingIpDriver;
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Writes refused with 412 (another writer each time) before the activation gives up.
const MAX_CONFLICTS: u32 = 5;
/// The next-hop type of a route to a server's address.
const APPLIANCE: &str = "VirtualAppliance";

/// Keys of an `azure-vip` resource (and of the `azure-vip` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureVipParams {
    /// Required. The virtual IPv4 address; outside every subnet of the virtual network.
    pub ip: String,
    /// Required. The route tables (names, in `resource_group`) whose route for `ip/32`
    /// points at the active server: those of every subnet the clients are in.
    pub route_tables: Vec<String>,
    /// The route's name in each table (default `baton-vip-<ip with dashes>`).
    pub route_name: Option<String>,
    /// This server's private address, the routes' next hop; set per server. Default: the
    /// first address of the first NIC, from the instance metadata service.
    pub next_hop: Option<String>,
    /// The route tables' resource group (default: `[azure] resource_group`).
    pub resource_group: Option<String>,
    /// The route tables' subscription (default: `[azure] subscription_id`).
    pub subscription_id: Option<String>,
    /// Local interface the address is added to. Default: found like `floating-ip` does.
    pub device: Option<String>,
    /// Add the VIP to a local interface (default true).
    #[serde(default = "default_true")]
    pub local_address: bool,
}

fn default_true() -> bool {
    true
}

/// Check an Azure network resource name (route table, route, load balancer, probe):
/// 1 to 80 letters, digits, `_`, `.` and `-`, starting with a letter or digit and
/// ending with a letter, digit or `_`.
pub fn check_network_name(key: &str, name: &str, what: &str) -> Result<(), ParamError> {
    let ok = (1..=80).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(key_error(
            key,
            format!(
                "`{name}` is not {what} name: 1 to 80 letters, digits, `_`, `.` and `-`, \
                 starting with a letter or digit and ending with one or `_`"
            ),
        ))
    }
}

/// Our route in a table, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub prefix: String,
    pub next_hop_type: String,
    pub next_hop: Option<String>,
}

/// A route table as read: what a write needs to give back unchanged.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: String,
    pub etag: String,
    location: Value,
    tags: Map<String, Value>,
    /// Every property but the routes and the read-only ones, written back as read.
    other: Map<String, Value>,
    /// Every route, as `{name, properties}` (read-only properties removed).
    routes: Vec<Value>,
    pub marks: Marks,
    /// The route named like ours, if any.
    pub route: Option<RouteView>,
}

impl RouteTable {
    pub fn from_json(body: &Value, route_name: &str) -> RouteTable {
        let tags = body["tags"].as_object().cloned().unwrap_or_default();
        let marks = Marks::from_tags(
            tags.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))),
        );
        let mut other = body["properties"].as_object().cloned().unwrap_or_default();
        let raw_routes = other.remove("routes");
        for k in ["subnets", "provisioningState"] {
            other.remove(k);
        }
        let mut route = None;
        let routes = raw_routes
            .as_ref()
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let name = r["name"].as_str().unwrap_or_default();
                        let mut props = r["properties"].as_object().cloned().unwrap_or_default();
                        props.remove("provisioningState");
                        if name.eq_ignore_ascii_case(route_name) {
                            let text = |k: &str| props.get(k).and_then(Value::as_str);
                            route = Some(RouteView {
                                prefix: text("addressPrefix").unwrap_or_default().to_string(),
                                next_hop_type: text("nextHopType").unwrap_or_default().to_string(),
                                next_hop: text("nextHopIpAddress").map(str::to_string),
                            });
                        }
                        json!({ "name": name, "properties": props })
                    })
                    .collect()
            })
            .unwrap_or_default();
        RouteTable {
            name: body["name"].as_str().unwrap_or_default().to_string(),
            etag: body["etag"].as_str().unwrap_or_default().to_string(),
            location: body["location"].clone(),
            tags,
            other,
            routes,
            marks,
            route,
        }
    }
}

/// The driver of an `azure-vip` resource.
#[derive(Debug)]
pub struct AzureVipDriver {
    pub params: AzureVipParams,
    ip: Ipv4Addr,
    prefix: String,
    route_name: String,
    scope: Scope,
    shared: Arc<AzureShared>,
    local: Option<FloatingIpDriver>,
    next_hop: tokio::sync::OnceCell<String>,
}

impl AzureVipDriver {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        let p: AzureVipParams = parse_params(params)?;
        let ip: Ipv4Addr = p.ip.trim().parse().map_err(|_| {
            key_error(
                "ip",
                format!(
                    "invalid address `{}`: expected an IPv4 address such as 10.9.0.10",
                    p.ip
                ),
            )
        })?;
        if p.route_tables.is_empty() {
            return Err(key_error(
                "route_tables",
                "list at least one route table (those of the subnets the clients are in)",
            ));
        }
        for (i, t) in p.route_tables.iter().enumerate() {
            check_network_name(&format!("route_tables.{i}"), t, "a route table")?;
        }
        let route_name = match &p.route_name {
            Some(n) => {
                check_network_name("route_name", n, "a route")?;
                n.clone()
            }
            None => format!("baton-vip-{}", ip.to_string().replace('.', "-")),
        };
        if let Some(h) = &p.next_hop {
            h.parse::<Ipv4Addr>().map_err(|_| {
                key_error(
                    "next_hop",
                    format!("invalid address `{h}`: expected this server's private IPv4 address"),
                )
            })?;
        }
        let scope = Scope::resolve(
            &shared,
            p.subscription_id.as_deref(),
            p.resource_group.as_deref(),
        )?;
        let local = if p.local_address {
            let mut t = toml::Table::new();
            t.insert("ip".into(), toml::Value::String(ip.to_string()));
            if let Some(d) = &p.device {
                t.insert("device".into(), toml::Value::String(d.clone()));
            }
            // No ARP in a virtual network: the route tables decide.
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
        Ok(AzureVipDriver {
            prefix: format!("{ip}/32"),
            ip,
            route_name,
            scope,
            shared,
            local,
            next_hop: tokio::sync::OnceCell::new(),
            params: p,
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

    pub fn route_name(&self) -> &str {
        &self.route_name
    }

    async fn client(&self, subject: Subject<'_>) -> Result<&AzureClient, ProviderError> {
        self.shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, None, f))
    }

    /// This server's address (configured, else from the instance metadata service).
    pub async fn next_hop(
        &self,
        client: &AzureClient,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<String, ProviderError> {
        if let Some(h) = &self.params.next_hop {
            return Ok(h.clone());
        }
        self.next_hop
            .get_or_try_init(|| async {
                let path = format!("/metadata/instance?api-version={IMDS_INSTANCE_API_VERSION}");
                let doc = client
                    .imds_get("Imds.Instance", &path, dl.remaining()?)
                    .await
                    .map_err(|f| self.shared.report(subject, None, f))?;
                doc.body["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"]
                    .as_str()
                    .filter(|s| s.parse::<Ipv4Addr>().is_ok())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ProviderError::Other(format!(
                            "{}: the instance metadata has no private IPv4 address on the first NIC; set `next_hop`",
                            subject.name()
                        ))
                    })
            })
            .await
            .cloned()
    }

    fn table_path(&self, table: &str) -> Result<String, ProviderError> {
        Ok(format!(
            "{}/Microsoft.Network/routeTables/{table}",
            self.scope.providers_path()?
        ))
    }

    /// One route table.
    pub async fn read_table(
        &self,
        client: &AzureClient,
        table: &str,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<RouteTable, ProviderError> {
        let req = ArmRequest::new(
            "RouteTables.Get",
            Method::GET,
            &self.table_path(table)?,
            NETWORK_API_VERSION,
        );
        match client.send(&req, dl.remaining()?).await {
            Ok(r) => Ok(RouteTable::from_json(&r.body, &self.route_name)),
            Err(f) => Err(self.shared.report(subject, latch, f)),
        }
    }

    /// Every listed route table.
    pub async fn read_tables(
        &self,
        client: &AzureClient,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Vec<RouteTable>, ProviderError> {
        let mut out = Vec::with_capacity(self.params.route_tables.len());
        for t in &self.params.route_tables {
            out.push(self.read_table(client, t, dl, subject, latch).await?);
        }
        Ok(out)
    }

    /// Does the table's route point at `hop`?
    pub fn routes_to(&self, t: &RouteTable, hop: &str) -> bool {
        t.route.as_ref().is_some_and(|r| {
            r.prefix == self.prefix
                && r.next_hop_type.eq_ignore_ascii_case(APPLIANCE)
                && r.next_hop.as_deref() == Some(hop)
        })
    }

    /// What is wrong with each table's route for next hop `hop` (empty: all good).
    pub fn mismatches(&self, tables: &[RouteTable], hop: &str) -> Vec<String> {
        tables
            .iter()
            .filter(|t| !self.routes_to(t, hop))
            .map(|t| match &t.route {
                None => format!(
                    "route table {} has no route {} for {}",
                    t.name, self.route_name, self.prefix
                ),
                Some(r) => {
                    format!(
                        "route {} in table {} sends {} to {} {}, not to {hop}",
                        self.route_name,
                        t.name,
                        r.prefix,
                        r.next_hop_type,
                        r.next_hop.as_deref().unwrap_or("-")
                    ) + &t.marks.notes()
                }
            })
            .collect()
    }

    /// The table with our route at `hop` and this claim's mark.
    fn body(&self, t: &RouteTable, claim: &Claim<'_>, hop: &str) -> Value {
        let mut tags = t.tags.clone();
        tags.insert(
            fencing::tag_key(claim.group),
            fencing::tag_value(claim.epoch, claim.server).into(),
        );
        let ours = json!({
            "name": self.route_name,
            "properties": {
                "addressPrefix": self.prefix,
                "nextHopType": APPLIANCE,
                "nextHopIpAddress": hop,
            }
        });
        let mut routes: Vec<Value> = t
            .routes
            .iter()
            .filter(|r| {
                !r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&self.route_name))
            })
            .cloned()
            .collect();
        routes.push(ours);
        let mut props = t.other.clone();
        props.insert("routes".into(), Value::Array(routes));
        json!({ "location": t.location, "tags": tags, "properties": props })
    }

    /// Point one table's route here under this claim. Returns whether it wrote.
    async fn claim_table(
        &self,
        client: &AzureClient,
        table: &str,
        claim: &Claim<'_>,
        hop: &str,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<bool, ProviderError> {
        let mut conflicts = 0;
        loop {
            let t = self.read_table(client, table, dl, subject, None).await?;
            let verdict = claim.verdict(t.marks.of(claim.group));
            if let Verdict::Refused(holder) = verdict {
                let e = claim.fenced(&subject.name(), &format!("route table {}", t.name), holder);
                self.shared
                    .raise(subject, None, &ev::AZURE_STALE_EPOCH, e.to_string());
                return Err(e);
            }
            if verdict == Verdict::Ours && self.routes_to(&t, hop) {
                return Ok(false);
            }
            let req = ArmRequest::new(
                "RouteTables.CreateOrUpdate",
                Method::PUT,
                &self.table_path(table)?,
                NETWORK_API_VERSION,
            )
            .json(self.body(&t, claim, hop))
            .if_match(&t.etag);
            match client.send(&req, dl.remaining()?).await {
                Ok(started) => {
                    client
                        .wait_async_operation(
                            "RouteTables.CreateOrUpdate",
                            &started,
                            dl.remaining()?,
                        )
                        .await
                        .map_err(|f| self.shared.report(subject, None, f))?;
                    return Ok(true);
                }
                Err(f) if f.is_status(412) && conflicts + 1 < MAX_CONFLICTS => {
                    conflicts += 1;
                    self.shared.raise(
                        subject,
                        None,
                        &ev::AZURE_ROUTE_TABLE_CONFLICT,
                        format!(
                            "{}: route table {table} changed while it was written (412, conflict {conflicts}); reading it again",
                            subject.name()
                        ),
                    );
                }
                Err(f) => return Err(self.shared.report(subject, None, f)),
            }
        }
    }

    fn local_ctx(ctx: &ActionContext, dl: &Deadline) -> Result<ActionContext, ProviderError> {
        let mut c = ctx.clone();
        c.timeout = dl.remaining()?;
        Ok(c)
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let hop = self.next_hop(client, &dl, subject).await?;
        let claim = Claim::from(ctx);
        // The tables are independent writes: claim them all at once.
        let results = futures_util::future::join_all(
            self.params
                .route_tables
                .iter()
                .map(|t| self.claim_table(client, t, &claim, &hop, &dl, subject)),
        )
        .await;
        let mut changed = 0usize;
        for r in results {
            changed += usize::from(r?);
        }
        if let Some(local) = &self.local {
            local.activate(&Self::local_ctx(ctx, &dl)?).await?;
        }
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.events.emit(
            subject
                .event(
                    &ev::AZURE_VIP_ROUTED,
                    format!(
                        "{}: VIP {} routed to {hop} in {} route table(s) ({changed} changed) in {took} ms",
                        subject.name(),
                        self.ip,
                        self.params.route_tables.len(),
                    ),
                )
                .field("took_ms", took)
                .field("changed", changed)
                .field("tables", self.params.route_tables.len()),
        );
        Ok(())
    }
}

#[async_trait]
impl ResourceDriver for AzureVipDriver {
    fn kind(&self) -> &'static str {
        "azure-vip"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
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
        let client = self.client(subject).await?;
        let hop = self.next_hop(client, &dl, subject).await?;
        let tables = self.read_tables(client, &dl, subject, None).await?;
        let wrong = self.mismatches(&tables, &hop);
        let local = match &self.local {
            Some(l) => Some(l.check(&Self::local_ctx(ctx, &dl)?).await?),
            None => None,
        };
        let all_elsewhere = wrong.len() == tables.len();
        Ok(match local {
            Some(CheckOutcome::Degraded(d)) => CheckOutcome::Degraded(d),
            // Deactivated here: the routes stay until the next owner takes them.
            Some(CheckOutcome::Inactive) => CheckOutcome::Inactive,
            _ if wrong.is_empty() => CheckOutcome::Active,
            None if all_elsewhere => CheckOutcome::Inactive,
            _ => CheckOutcome::Degraded(wrong.join("; ")),
        })
    }
}

/// The `azure-vip` monitor: every route points here, the address is local.
#[derive(Debug)]
pub struct AzureVipProbe {
    driver: AzureVipDriver,
    latch: Latch,
}

impl AzureVipProbe {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        Ok(AzureVipProbe {
            driver: AzureVipDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }

    pub fn with_netns(mut self, ns: &str) -> Self {
        self.driver = self.driver.with_netns(ns);
        self
    }
}

#[async_trait]
impl Probe for AzureVipProbe {
    fn kind(&self) -> &'static str {
        "azure-vip"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let dl = Deadline::new(ctx.timeout);
        let client = d.client(subject).await?;
        let hop = d.next_hop(client, &dl, subject).await?;
        let tables = d
            .read_tables(client, &dl, subject, Some(&self.latch))
            .await?;
        let wrong = d.mismatches(&tables, &hop);
        if !wrong.is_empty() {
            let msg = format!(
                "{}: the route for VIP {} was changed: {}",
                subject.name(),
                d.ip,
                wrong.join("; ")
            );
            d.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AZURE_VIP_ROUTE_CHANGED,
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
                "{} route(s) for {} point at {hop}",
                tables.len(),
                d.prefix
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn build(s: &str) -> Result<AzureVipDriver, ParamError> {
        AzureVipDriver::from_params(
            &s.parse::<toml::Table>().unwrap(),
            Arc::new(AzureShared::lenient()),
        )
    }

    const OK: &str = "ip = '10.9.0.10'\nroute_tables = ['rt-app']\nlocal_address = false";

    #[test]
    fn params() {
        let d = build(OK).unwrap();
        assert_eq!(d.route_name, "baton-vip-10-9-0-10");
        assert_eq!(d.prefix, "10.9.0.10/32");
        assert!(d.local.is_none());
        assert!(build("ip = '10.9.0.10'\nroute_tables = ['rt-app']")
            .unwrap()
            .local
            .is_some());
        for (text, key) in [
            ("route_tables = ['rt']", "ip"),
            ("ip = '10.9.0.300'\nroute_tables = ['rt']", "ip"),
            ("ip = '10.9.0.10'\nroute_tables = []", "route_tables"),
            (
                "ip = '10.9.0.10'\nroute_tables = ['rt/x']",
                "route_tables.0",
            ),
            (&format!("{OK}\nroute_name = '-x'"), "route_name"),
            (&format!("{OK}\nnext_hop = 'node-1'"), "next_hop"),
            (&format!("{OK}\nresource_group = 'a/b'"), "resource_group"),
            (&format!("{OK}\nroute_tabels = ['x']"), "route_tabels"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
    }

    #[test]
    fn tables_are_written_back_with_our_route_and_mark() {
        let d = build(OK).unwrap();
        let read = json!({"name": "rt-app", "etag": "W/\"1\"", "location": "westeurope",
        "tags": {"env": "prod", "baton:web:epoch": "3 node-2"},
        "properties": {"provisioningState": "Succeeded", "subnets": [{"id": "x"}],
            "routes": [
                {"name": "default", "etag": "e", "properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet", "provisioningState": "Succeeded"}},
                {"name": "Baton-VIP-10-9-0-10", "properties": {"addressPrefix": "10.9.0.10/32", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.1.5"}}
            ]}});
        let t = RouteTable::from_json(&read, d.route_name());
        assert_eq!(t.marks.of("web").unwrap().epoch, 3);
        assert!(d.routes_to(&t, "10.0.1.5"));
        assert!(!d.routes_to(&t, "10.0.1.4"));
        assert_eq!(d.mismatches(std::slice::from_ref(&t), "10.0.1.4").len(), 1);
        let b = d.body(&t, &Claim::new("web", 4, "node-1"), "10.0.1.4");
        assert_eq!(
            b,
            json!({"location": "westeurope",
            "tags": {"env": "prod", "baton:web:epoch": "4 node-1"},
            "properties": {"routes": [
                {"name": "default", "properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}},
                {"name": "baton-vip-10-9-0-10", "properties": {"addressPrefix": "10.9.0.10/32", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.1.4"}}
            ]}})
        );
    }
}
