//! `gcp-vip`: a virtual IP that follows the active server, in one of two patterns.
//!
//! **`route`** (default; Pacemaker's gcp-vpc-move-route): a VPC static route for the
//! VIP /32 whose next hop is the active server's instance. The VIP lies outside every
//! subnetwork; the instances need IP forwarding (`canIpForward`) and the address on an
//! interface (a `floating-ip` resource on the loopback, ordered before this one).
//!
//! **`alias`** (Pacemaker's gcp-vpc-move-vip): the VIP /32 as an alias IP range of the
//! active instance's network interface, inside the subnetwork's primary (or a named
//! secondary) range. Activation lists the project's instances, takes the range from
//! every other interface that has it, then adds it to this server's interface; every
//! update (`instances.updateNetworkInterface`) carries the fingerprint of the interface
//! as it was read, so a concurrent change of that interface makes the update fail (412
//! `conditionNotMet`, or `CONDITION_NOT_MET` in the operation) instead of being
//! overwritten, and the resource reads again (BTN-8112). A network interface has no
//! field for an epoch mark: the alias pattern is fenced by the fingerprints and by the
//! engine (quorum, epochs), not by a mark on the interface. Deactivation removes the
//! range from this server's interface when it is there.
//!
//! ## The route pattern
//!
//! Routes cannot be changed, only deleted and inserted, and carry no fingerprint. The
//! epoch mark is in the route's `description` (`"baton epoch=N server=S group=G"`, the
//! value of [`fencing::record_value`]). Activation reads the route, refuses when its mark
//! is newer than this activation's epoch (`Fenced`, BTN-8106), does nothing when it
//! already sends the VIP here with this claim's mark, and otherwise deletes it and
//! inserts the new one, following each Compute operation to `DONE` within the action's
//! deadline. A route deleted by someone else meanwhile (`RESOURCE_NOT_FOUND`) or created
//! by someone else (`RESOURCE_ALREADY_EXISTS`) makes it read again and decide again
//! (BTN-8112); the new route is read back and must be this claim's. What the API cannot
//! exclude: a newer owner's route inserted in the instant between this read and this
//! delete is deleted (Compute deletes routes by name); the read-back then finds the
//! route this activation inserted, and the newer owner's own read-back or monitor finds
//! its route gone and puts it back. The engine's quorum rules keep two activations of a
//! group from running at once in the first place; the epoch is the second line.
//!
//! Deactivation, with `delete_on_deactivate` (default), deletes the route when it is
//! still this server's (its next hop, its mark, no newer epoch).
//!
//! The monitor of the same name checks that the route exists, sends the VIP to this
//! server's instance and carries this server's mark (BTN-8110 otherwise).

use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use baton_cloud_client::gcp::{FailureKind, GcpClient, GcpFailure, GcpRequest};
use baton_core::events as ev;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_project, GcpShared};
use crate::cloud::{Deadline, Latch, Subject};
use crate::fencing::{self, Claim, Mark, Verdict};
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Moves refused because the route changed meanwhile before the action gives up.
const MAX_CONFLICTS: u32 = 5;

/// How the VIP follows the active server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VipMode {
    /// A static route for the VIP /32 with the active instance as next hop.
    #[default]
    Route,
    /// An alias IP range (the VIP /32) on the active instance's network interface.
    Alias,
}

/// Keys of a `gcp-vip` resource (and of the `gcp-vip` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpVipParams {
    /// Required. The virtual IP (IPv4), the same on every server.
    pub ip: String,
    /// `route` (default): a static route; `alias`: an alias IP range on the active
    /// instance's network interface.
    #[serde(default)]
    pub mode: VipMode,
    /// `alias`: the network interface of this server's instance (default `nic0`).
    #[serde(default = "default_nic")]
    pub nic: String,
    /// `alias`: the subnetwork's secondary range the VIP is taken from (default: the
    /// primary range).
    pub subnetwork_range_name: Option<String>,
    /// The VPC network of the route (default `default`).
    #[serde(default = "default_network")]
    pub network: String,
    /// The route's name (default `baton-<ip with dashes>`, e.g. `baton-10-1-0-20`).
    pub route_name: Option<String>,
    /// The route's priority (default 1000; lower wins over other routes to the VIP).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// This server's instance (default: from the metadata server).
    pub instance: Option<String>,
    /// This server's instance's zone (default: `[gcp] zone`, else the metadata server's).
    pub zone: Option<String>,
    /// The network's project (default: `[gcp] project`, the key file's or the
    /// metadata server's).
    pub project: Option<String>,
    /// Delete the route when the resource is deactivated (default true).
    #[serde(default = "default_true")]
    pub delete_on_deactivate: bool,
}

fn default_network() -> String {
    "default".into()
}
fn default_priority() -> u32 {
    1000
}
fn default_nic() -> String {
    "nic0".into()
}
fn default_true() -> bool {
    true
}

/// A Compute resource name: 1 to 63 lower-case letters, digits and `-`, starting with a
/// letter, not ending with `-`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_name(key: &str, v: &str) -> Result<(), ParamError> {
    if is_name(v) {
        Ok(())
    } else {
        Err(key_error(
            key,
            format!(
                "`{v}` is not a Compute resource name: 1 to 63 lower-case letters, digits and `-`, \
                 starting with a letter"
            ),
        ))
    }
}

/// Where this server's instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Here {
    instance: String,
    zone: String,
}

/// The driver of a `gcp-vip` resource.
#[derive(Debug)]
pub struct GcpVipDriver {
    pub params: GcpVipParams,
    route_name: String,
    here: tokio::sync::OnceCell<Here>,
    shared: Arc<GcpShared>,
}

impl GcpVipDriver {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        let p: GcpVipParams = parse_params(params)?;
        p.ip.parse::<Ipv4Addr>().map_err(|_| {
            key_error(
                "ip",
                format!(
                    "invalid address `{}`: expected an IPv4 address such as 10.1.0.20",
                    p.ip
                ),
            )
        })?;
        let route_name = p
            .route_name
            .clone()
            .unwrap_or_else(|| format!("baton-{}", p.ip.replace('.', "-")));
        check_name("route_name", &route_name)?;
        check_name("network", &p.network)?;
        if let Some(i) = &p.instance {
            check_name("instance", i)?;
        }
        if let Some(z) = &p.zone {
            if !baton_core::config::is_location(z, true) {
                return Err(key_error(
                    "zone",
                    format!("`{z}` is not a Compute zone: expected a name such as us-central1-a"),
                ));
            }
        }
        if p.priority > 65_535 {
            return Err(key_error(
                "priority",
                "priority must be between 0 and 65535",
            ));
        }
        match p.mode {
            VipMode::Route => {
                for (key, set) in [
                    ("subnetwork_range_name", p.subnetwork_range_name.is_some()),
                    ("nic", p.nic != "nic0"),
                ] {
                    if set {
                        return Err(key_error(
                            key,
                            format!("`{key}` is only used with mode = \"alias\""),
                        ));
                    }
                }
            }
            VipMode::Alias => {
                if p.route_name.is_some() {
                    return Err(key_error(
                        "route_name",
                        "`route_name` is only used with mode = \"route\"",
                    ));
                }
                if !p.nic.starts_with("nic") || p.nic[3..].parse::<u8>().is_err() {
                    return Err(key_error(
                        "nic",
                        format!(
                            "`{}` is not a network interface name: nic0, nic1, ...",
                            p.nic
                        ),
                    ));
                }
                if let Some(r) = &p.subnetwork_range_name {
                    check_name("subnetwork_range_name", r)?;
                }
            }
        }
        check_project(p.project.as_deref())?;
        let here = tokio::sync::OnceCell::new();
        let zone = p.zone.clone().or_else(|| shared.settings().zone.clone());
        if let (Some(instance), Some(zone)) = (&p.instance, zone) {
            // A fresh cell cannot be set already.
            let _ = here.set(Here {
                instance: instance.clone(),
                zone,
            });
        }
        Ok(GcpVipDriver {
            params: p,
            route_name,
            here,
            shared,
        })
    }

    pub fn route_name(&self) -> &str {
        &self.route_name
    }

    /// `route baton-10-1-0-20 (10.1.0.20/32)` or `alias IP range 10.128.0.100/32`.
    fn describe(&self) -> String {
        match self.params.mode {
            VipMode::Route => format!("route {} ({}/32)", self.route_name, self.params.ip),
            VipMode::Alias => format!("alias IP range {}/32", self.params.ip),
        }
    }

    async fn client(&self, subject: Subject<'_>) -> Result<&GcpClient, ProviderError> {
        self.shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, None, f))
    }

    /// This server's instance and zone: configured, or from the metadata server.
    async fn here(
        &self,
        client: &GcpClient,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Here, ProviderError> {
        let budget = dl.remaining()?;
        let zone = self
            .params
            .zone
            .clone()
            .or_else(|| self.shared.settings().zone.clone());
        self.here
            .get_or_try_init(|| async {
                let instance = match &self.params.instance {
                    Some(i) => i.clone(),
                    None => client
                        .metadata("instance/name", budget)
                        .await?
                        .trim()
                        .to_string(),
                };
                let zone = match zone {
                    Some(z) => z,
                    None => {
                        let z = client.metadata("instance/zone", budget).await?;
                        z.trim().rsplit('/').next().unwrap_or_default().to_string()
                    }
                };
                Ok::<_, GcpFailure>(Here { instance, zone })
            })
            .await
            .cloned()
            .map_err(|f| self.shared.report(subject, latch, f))
    }

    /// The route, or `None` when it does not exist.
    async fn read(
        &self,
        client: &GcpClient,
        project: &str,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Option<Value>, ProviderError> {
        let req = GcpRequest::compute(
            "compute.routes.get",
            Method::GET,
            &format!("projects/{project}/global/routes/{}", self.route_name),
        );
        match client.send(&req, dl.remaining()?).await {
            Ok(r) => Ok(Some(r.body)),
            Err(f) if f.kind() == FailureKind::NotFound => Ok(None),
            Err(f) => Err(self.shared.report(subject, latch, f)),
        }
    }

    fn mark(route: &Value) -> Option<Mark> {
        route["description"]
            .as_str()
            .and_then(fencing::parse_record_value)
    }

    /// Does the route send the VIP to `here`?
    fn points_here(&self, route: &Value, here: &Here) -> bool {
        let hop = route["nextHopInstance"].as_str().unwrap_or_default();
        let dest = route["destRange"].as_str().unwrap_or_default();
        hop.ends_with(&format!("/zones/{}/instances/{}", here.zone, here.instance))
            && dest == format!("{}/32", self.params.ip)
    }

    fn is_ours(&self, route: &Value, here: &Here, claim: &Claim<'_>) -> bool {
        let mark = Self::mark(route);
        self.points_here(route, here)
            && mark.as_ref().is_some_and(|m| m.server == claim.server)
            && claim.may_write(mark.as_ref())
    }

    /// What is wrong with the route for this server, if anything.
    fn mismatch(&self, route: Option<&Value>, here: &Here, server: &str) -> Option<String> {
        let Some(route) = route else {
            return Some(format!("{} does not exist", self.describe()));
        };
        if !self.points_here(route, here) {
            return Some(format!(
                "{} sends {} to {}, expected instance {} in {}",
                self.describe(),
                route["destRange"].as_str().unwrap_or("?"),
                route["nextHopInstance"]
                    .as_str()
                    .or(route["nextHopIp"].as_str())
                    .unwrap_or("another next hop"),
                here.instance,
                here.zone
            ));
        }
        match Self::mark(route) {
            Some(m) if m.server == server => None,
            Some(m) => Some(format!(
                "{} is marked for epoch {} by {}, not this server",
                self.describe(),
                m.epoch,
                m.server
            )),
            None => Some(format!("{} carries no Baton epoch mark", self.describe())),
        }
    }

    /// Run one Compute mutation and follow its operation; `Ok(false)` when the route
    /// changed meanwhile (read again).
    async fn mutate(
        &self,
        client: &GcpClient,
        project: &str,
        req: GcpRequest,
        dl: &Deadline,
        subject: Subject<'_>,
        conflicts: &mut u32,
    ) -> Result<bool, ProviderError> {
        let op = req.operation().to_string();
        let result = match client.send(&req, dl.remaining()?).await {
            Ok(r) => {
                client
                    .wait_operation(&op, project, &r.body, dl.remaining()?)
                    .await
            }
            Err(f) => Err(f),
        };
        match result {
            Ok(()) => Ok(true),
            Err(f)
                if matches!(f.kind(), FailureKind::NotFound | FailureKind::Conflict)
                    && *conflicts + 1 < MAX_CONFLICTS =>
            {
                *conflicts += 1;
                self.shared.raise(
                    subject,
                    None,
                    &ev::GCP_VIP_CONFLICT,
                    format!(
                        "{}: {} changed while it was moved ({}, conflict {conflicts}); reading it again",
                        subject.name(),
                        self.describe(),
                        f.reason().unwrap_or("refused")
                    ),
                );
                Ok(false)
            }
            Err(f) if matches!(f.kind(), FailureKind::Conflict) => {
                let e: ProviderError = f.clone().into();
                self.shared.raise(
                    subject,
                    None,
                    &ev::GCP_VIP_CONFLICT,
                    format!("{}: {f}", subject.name()),
                );
                Err(e)
            }
            Err(f) => {
                // Out of time while following the operation: the action timed out.
                dl.remaining()?;
                Err(self.shared.report(subject, None, f))
            }
        }
    }

    fn delete_request(&self, project: &str) -> GcpRequest {
        GcpRequest::compute(
            "compute.routes.delete",
            Method::DELETE,
            &format!("projects/{project}/global/routes/{}", self.route_name),
        )
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        match self.params.mode {
            VipMode::Route => self.route_activate(ctx).await,
            VipMode::Alias => self.alias_activate(ctx).await,
        }
    }

    async fn deactivate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        if !self.params.delete_on_deactivate {
            return Ok(());
        }
        match self.params.mode {
            VipMode::Route => self.route_deactivate(ctx).await,
            VipMode::Alias => self.alias_deactivate(ctx).await,
        }
    }

    async fn route_activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                None,
            )
            .await?;
        let here = self.here(client, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let current = self.read(client, &project, &dl, subject, None).await?;
            let mark = current.as_ref().and_then(Self::mark);
            let verdict = claim.verdict(mark.as_ref());
            if let Verdict::Refused(holder) = verdict {
                let e = claim.fenced(&subject.name(), &self.describe(), holder);
                self.shared
                    .raise(subject, None, &ev::GCP_STALE_EPOCH, e.to_string());
                return Err(e);
            }
            if current.as_ref().is_some_and(|r| {
                self.points_here(r, &here) && r["priority"] == self.params.priority
            }) && verdict == Verdict::Ours
            {
                return Ok(());
            }
            if current.is_some()
                && !self
                    .mutate(
                        client,
                        &project,
                        self.delete_request(&project),
                        &dl,
                        subject,
                        &mut conflicts,
                    )
                    .await?
            {
                continue;
            }
            let body = json!({
                "name": self.route_name,
                "network": format!("projects/{project}/global/networks/{}", self.params.network),
                "destRange": format!("{}/32", self.params.ip),
                "priority": self.params.priority,
                "nextHopInstance": format!("projects/{project}/zones/{}/instances/{}", here.zone, here.instance),
                "description": fencing::record_value(&claim).trim_matches('"'),
            });
            let insert = GcpRequest::compute(
                "compute.routes.insert",
                Method::POST,
                &format!("projects/{project}/global/routes"),
            )
            .json(body);
            if !self
                .mutate(client, &project, insert, &dl, subject, &mut conflicts)
                .await?
            {
                continue;
            }
            // Read back: the route in place must be this claim's.
            let now = self.read(client, &project, &dl, subject, None).await?;
            if !now.as_ref().is_some_and(|r| self.is_ours(r, &here, &claim)) {
                continue;
            }
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let was = current
                .as_ref()
                .and_then(|r| r["nextHopInstance"].as_str().or(r["nextHopIp"].as_str()))
                .map_or("absent".to_string(), |h| {
                    h.rsplit("/instances/").next().unwrap_or(h).to_string()
                });
            self.shared.events.emit(
                subject
                    .event(
                        &ev::GCP_VIP_MOVED,
                        format!(
                            "{}: {} now sends the VIP to instance {} (was {was}); {took} ms",
                            subject.name(),
                            self.describe(),
                            here.instance
                        ),
                    )
                    .field("took_ms", took),
            );
            return Ok(());
        }
    }

    async fn route_deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                None,
            )
            .await?;
        let here = self.here(client, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let Some(current) = self.read(client, &project, &dl, subject, None).await? else {
                return Ok(());
            };
            if !self.is_ours(&current, &here, &claim) {
                tracing::info!(
                    route = %self.describe(),
                    next_hop = ?current["nextHopInstance"],
                    mark = ?Self::mark(&current),
                    "the route is not ours (another next hop, another server's mark or a newer epoch); left alone"
                );
                return Ok(());
            }
            if !self
                .mutate(
                    client,
                    &project,
                    self.delete_request(&project),
                    &dl,
                    subject,
                    &mut conflicts,
                )
                .await?
            {
                continue;
            }
            self.shared.events.emit(subject.event(
                &ev::GCP_VIP_MOVED,
                format!(
                    "{}: {} deleted on deactivation",
                    subject.name(),
                    self.describe()
                ),
            ));
            return Ok(());
        }
    }
}

/// One network interface of an instance, as Compute has it.
#[derive(Debug, Clone, PartialEq)]
struct Nic {
    instance: String,
    zone: String,
    name: String,
    fingerprint: String,
    ranges: Vec<Value>,
}

impl Nic {
    fn of(instance: &Value) -> Vec<Nic> {
        let name = instance["name"].as_str().unwrap_or_default();
        let zone = instance["zone"]
            .as_str()
            .and_then(|z| z.rsplit('/').next())
            .unwrap_or_default();
        instance["networkInterfaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| Nic {
                        instance: name.to_string(),
                        zone: zone.to_string(),
                        name: n["name"].as_str().unwrap_or_default().to_string(),
                        fingerprint: n["fingerprint"].as_str().unwrap_or_default().to_string(),
                        ranges: n["aliasIpRanges"].as_array().cloned().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn holds(&self, range: &str) -> bool {
        self.ranges
            .iter()
            .any(|r| r["ipCidrRange"].as_str() == Some(range))
    }

    fn is(&self, here: &Here, nic: &str) -> bool {
        self.instance == here.instance && self.zone == here.zone && self.name == nic
    }
}

/// The alias-IP pattern.
impl GcpVipDriver {
    fn range(&self) -> String {
        format!("{}/32", self.params.ip)
    }

    /// Every network interface of the project's instances (`instances.aggregatedList`).
    async fn interfaces(
        &self,
        client: &GcpClient,
        project: &str,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<Vec<Nic>, ProviderError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = GcpRequest::compute(
                "compute.instances.aggregatedList",
                Method::GET,
                &format!("projects/{project}/aggregated/instances"),
            );
            if let Some(t) = &token {
                req = req.query("pageToken", t);
            }
            let r = client
                .send(&req, dl.remaining()?)
                .await
                .map_err(|f| self.shared.report(subject, None, f))?;
            if let Some(scopes) = r.body["items"].as_object() {
                for scope in scopes.values() {
                    for inst in scope["instances"].as_array().into_iter().flatten() {
                        out.extend(Nic::of(inst));
                    }
                }
            }
            match r.body["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// This server's interface (`instances.get`).
    async fn own_nic(
        &self,
        client: &GcpClient,
        project: &str,
        here: &Here,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Nic, ProviderError> {
        let req = GcpRequest::compute(
            "compute.instances.get",
            Method::GET,
            &format!(
                "projects/{project}/zones/{}/instances/{}",
                here.zone, here.instance
            ),
        );
        let r = client
            .send(&req, dl.remaining()?)
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
        Nic::of(&r.body)
            .into_iter()
            .find(|n| n.is(here, &self.params.nic))
            .ok_or_else(|| self.no_nic(here, subject, latch))
    }

    fn no_nic(&self, here: &Here, subject: Subject<'_>, latch: Option<&Latch>) -> ProviderError {
        self.shared.report(
            subject,
            latch,
            GcpFailure::Rejected {
                operation: "compute.instances.get".into(),
                kind: FailureKind::NotFound,
                reason: "notFound".into(),
                status: None,
                message: format!(
                    "instance {} in {} has no network interface {}",
                    here.instance, here.zone, self.params.nic
                ),
            },
        )
    }

    /// The update that sets an interface's alias ranges under its fingerprint.
    fn ranges_request(&self, project: &str, nic: &Nic, ranges: Vec<Value>) -> GcpRequest {
        GcpRequest::compute(
            "compute.instances.updateNetworkInterface",
            Method::PATCH,
            &format!(
                "projects/{project}/zones/{}/instances/{}/updateNetworkInterface",
                nic.zone, nic.instance
            ),
        )
        .query("networkInterface", &nic.name)
        .json(json!({"fingerprint": nic.fingerprint, "aliasIpRanges": ranges}))
    }

    async fn alias_activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                None,
            )
            .await?;
        let here = self.here(client, &dl, subject, None).await?;
        let range = self.range();
        let mut conflicts = 0;
        'again: loop {
            let all = self.interfaces(client, &project, &dl, subject).await?;
            let Some(mine) = all.iter().find(|n| n.is(&here, &self.params.nic)).cloned() else {
                return Err(self.no_nic(&here, subject, None));
            };
            // Take it from every other interface first, each under its fingerprint.
            let mut was = Vec::new();
            for other in all.iter().filter(|n| *n != &mine && n.holds(&range)) {
                let left: Vec<Value> = other
                    .ranges
                    .iter()
                    .filter(|r| r["ipCidrRange"].as_str() != Some(range.as_str()))
                    .cloned()
                    .collect();
                if !self
                    .mutate(
                        client,
                        &project,
                        self.ranges_request(&project, other, left),
                        &dl,
                        subject,
                        &mut conflicts,
                    )
                    .await?
                {
                    continue 'again;
                }
                was.push(other.instance.clone());
            }
            if !mine.holds(&range) {
                let mut ranges = mine.ranges.clone();
                let mut entry = json!({ "ipCidrRange": range });
                if let Some(r) = &self.params.subnetwork_range_name {
                    entry["subnetworkRangeName"] = r.clone().into();
                }
                ranges.push(entry);
                if !self
                    .mutate(
                        client,
                        &project,
                        self.ranges_request(&project, &mine, ranges),
                        &dl,
                        subject,
                        &mut conflicts,
                    )
                    .await?
                {
                    continue 'again;
                }
            } else if was.is_empty() {
                return Ok(());
            }
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let was = if was.is_empty() {
                "absent".to_string()
            } else {
                was.join(", ")
            };
            self.shared.events.emit(
                subject
                    .event(
                        &ev::GCP_VIP_MOVED,
                        format!(
                            "{}: {} now on {} of instance {} (was {was}); {took} ms",
                            subject.name(),
                            self.describe(),
                            self.params.nic,
                            here.instance
                        ),
                    )
                    .field("took_ms", took),
            );
            return Ok(());
        }
    }

    async fn alias_deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                None,
            )
            .await?;
        let here = self.here(client, &dl, subject, None).await?;
        let range = self.range();
        let mut conflicts = 0;
        loop {
            let mine = self
                .own_nic(client, &project, &here, &dl, subject, None)
                .await?;
            if !mine.holds(&range) {
                return Ok(());
            }
            let left: Vec<Value> = mine
                .ranges
                .iter()
                .filter(|r| r["ipCidrRange"].as_str() != Some(range.as_str()))
                .cloned()
                .collect();
            if self
                .mutate(
                    client,
                    &project,
                    self.ranges_request(&project, &mine, left),
                    &dl,
                    subject,
                    &mut conflicts,
                )
                .await?
            {
                self.shared.events.emit(subject.event(
                    &ev::GCP_VIP_MOVED,
                    format!(
                        "{}: {} removed from instance {} on deactivation",
                        subject.name(),
                        self.describe(),
                        here.instance
                    ),
                ));
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl ResourceDriver for GcpVipDriver {
    fn kind(&self) -> &'static str {
        "gcp-vip"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.deactivate_inner(ctx).await
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                None,
            )
            .await?;
        let here = self.here(client, &dl, subject, None).await?;
        if self.params.mode == VipMode::Alias {
            let mine = self
                .own_nic(client, &project, &here, &dl, subject, None)
                .await?;
            return Ok(if mine.holds(&self.range()) {
                CheckOutcome::Active
            } else {
                CheckOutcome::Inactive
            });
        }
        let current = self.read(client, &project, &dl, subject, None).await?;
        Ok(match current {
            Some(r) if self.is_ours(&r, &here, &Claim::from(ctx)) => CheckOutcome::Active,
            _ => CheckOutcome::Inactive,
        })
    }
}

/// The `gcp-vip` monitor.
#[derive(Debug)]
pub struct GcpVipProbe {
    driver: GcpVipDriver,
    latch: Latch,
}

impl GcpVipProbe {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        Ok(GcpVipProbe {
            driver: GcpVipDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }
}

#[async_trait]
impl Probe for GcpVipProbe {
    fn kind(&self) -> &'static str {
        "gcp-vip"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let latch = Some(&self.latch);
        let dl = Deadline::new(ctx.timeout);
        let client = d.client(subject).await?;
        let project = d
            .shared
            .project(
                d.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                latch,
            )
            .await?;
        let here = d.here(client, &dl, subject, latch).await?;
        let why = if d.params.mode == VipMode::Alias {
            let mine = d
                .own_nic(client, &project, &here, &dl, subject, latch)
                .await?;
            (!mine.holds(&d.range())).then(|| {
                format!(
                    "{} is not on {} of instance {}",
                    d.describe(),
                    d.params.nic,
                    here.instance
                )
            })
        } else {
            let current = d.read(client, &project, &dl, subject, latch).await?;
            d.mismatch(current.as_ref(), &here, &ctx.server)
        };
        if let Some(why) = why {
            let msg = format!("{}: {why}", subject.name());
            d.shared
                .raise(subject, latch, &ev::GCP_VIP_CHANGED, msg.clone());
            return Err(ProviderError::Unhealthy(msg));
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{} -> instance {}", d.describe(), here.instance)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn build(s: &str) -> Result<GcpVipDriver, ParamError> {
        GcpVipDriver::from_params(
            &s.parse::<toml::Table>().unwrap(),
            Arc::new(GcpShared::new(&Default::default())),
        )
    }

    #[test]
    fn params() {
        let d = build("ip = '10.1.0.20'").unwrap();
        assert_eq!(d.route_name(), "baton-10-1-0-20");
        assert_eq!(d.params.mode, VipMode::Route);
        assert_eq!(
            (d.params.network.as_str(), d.params.priority),
            ("default", 1000)
        );
        for (text, key) in [
            ("ip = '10.1.0.300'", "ip"),
            ("ip = '10.1.0.20'\nroute_name = 'Baton'", "route_name"),
            ("ip = '10.1.0.20'\nnetwork = 'my_net'", "network"),
            ("ip = '10.1.0.20'\nzone = 'us-central1'", "zone"),
            ("ip = '10.1.0.20'\npriority = 70000", "priority"),
            ("ip = '10.1.0.20'\nmode = 'anycast'", "mode"),
            (
                "ip = '10.1.0.20'\nmode = 'alias'\nroute_name = 'r'",
                "route_name",
            ),
            ("ip = '10.1.0.20'\nmode = 'alias'\nnic = 'eth0'", "nic"),
            ("ip = '10.1.0.20'\nnic = 'nic1'", "nic"),
            ("ip = '10.1.0.20'\ninstance = 'Node_1'", "instance"),
            ("mode = 'route'", "ip"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
    }

    #[test]
    fn routes_are_matched_on_next_hop_destination_and_mark() {
        let d = build("ip = '10.1.0.20'").unwrap();
        let here = Here {
            instance: "node-1".into(),
            zone: "us-central1-a".into(),
        };
        let route = json!({"destRange": "10.1.0.20/32",
            "nextHopInstance": "https://compute.googleapis.com/compute/v1/projects/p/zones/us-central1-a/instances/node-1",
            "description": "baton epoch=3 server=node-1 group=web"});
        assert!(d.is_ours(&route, &here, &Claim::new("web", 3, "node-1")));
        assert!(!d.is_ours(&route, &here, &Claim::new("web", 2, "node-2")));
        let elsewhere = Here {
            instance: "node-1".into(),
            zone: "us-central1-b".into(),
        };
        assert!(d.mismatch(Some(&route), &elsewhere, "node-1").is_some());
        assert_eq!(d.mismatch(Some(&route), &here, "node-1"), None);
        assert!(d
            .mismatch(None, &here, "node-1")
            .unwrap()
            .contains("does not exist"));
    }
}
