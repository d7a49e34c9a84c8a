//! `gcp-dns`: an A record in a Cloud DNS managed zone, public or private, that holds the
//! active server's address.
//!
//! The epoch mark is a TXT record `_baton.<name>` beside the A record, holding `"baton
//! epoch=N server=S group=G"` (the format of the Route 53 kind, [`fencing::record_value`]).
//! Every write is one Cloud DNS change (`changes.create`) whose additions are the new A
//! and TXT record sets and whose deletions are the A and TXT record sets exactly as they
//! were read. Cloud DNS applies a change atomically and refuses it when a deletion does
//! not match the zone any more (412 `conditionNotMet`; 404 when it is gone; 409
//! `alreadyExists` when an addition appeared): a change made by someone else between the
//! read and the write makes ours fail instead of overwriting it. The resource then reads
//! again and decides again (BTN-8109), within the action's deadline.
//!
//! Activation reads both record sets, refuses when the epoch record is newer than this
//! activation's epoch (`Fenced`, BTN-8106), does nothing when both already say what it
//! would write, and otherwise sends the change and waits, bounded by the action's
//! deadline, until Cloud DNS reports it `done` (the zone's name servers answer it).
//! Deactivation, with `delete_on_deactivate` (default), deletes the A record when it is
//! still this server's (its address, its mark, no newer epoch) and leaves it otherwise.
//! The epoch record stays: it is what keeps an activation of an older epoch from
//! writing the name afterwards, and it is never answered for the A name.
//!
//! The monitor of the same name checks that the A record exists, holds this server's
//! address and that the epoch record names this server; the recovery it triggers
//! (restarting the resource) writes it again. A failing API is `ProviderError::Api`
//! (`on_api_error` decides).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

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

/// Changes refused because the zone changed meanwhile (another writer each time) before
/// the action gives up.
const MAX_CONFLICTS: u32 = 5;
/// First pause between two reads of a pending change; doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(2);
/// The metadata value that gives the default address.
const IP_METADATA: &str = "instance/network-interfaces/0/ip";

/// Keys of a `gcp-dns` resource (and of the `gcp-dns` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpDnsParams {
    /// Required. The managed zone's name (`public-zone`), not its DNS name.
    pub zone: String,
    /// Required. The record's fully qualified name in lower case (`db.example.com.`;
    /// the final dot may be left out).
    pub record_name: String,
    /// The zone's project (default: `[gcp] project`, else the key file's or the
    /// metadata server's).
    pub project: Option<String>,
    /// The address the A record holds while this server is active, usually set per
    /// server (or common, for a load balancer's frontend). Default: the VM's primary
    /// internal address, from the metadata server.
    pub ip: Option<String>,
    /// TTL of the record in seconds (default 300). Clients may keep the old address this
    /// long after a failover.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Delete the A record when the resource is deactivated (default true).
    #[serde(default = "default_true")]
    pub delete_on_deactivate: bool,
    /// Wait until Cloud DNS reports the change done (default true), within the action's
    /// timeout.
    #[serde(default = "default_true")]
    pub wait_done: bool,
}

fn default_ttl() -> u32 {
    300
}
fn default_true() -> bool {
    true
}

/// A record set as Cloud DNS has it: the JSON as read (a deletion names it exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSet {
    pub raw: Value,
}

impl RecordSet {
    pub fn ttl(&self) -> Option<u64> {
        self.raw["ttl"].as_u64()
    }

    pub fn rrdatas(&self) -> Vec<String> {
        self.raw["rrdatas"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The epoch mark of a TXT record set (its first value that parses).
    pub fn mark(&self) -> Option<Mark> {
        self.rrdatas()
            .iter()
            .find_map(|v| fencing::parse_record_value(v))
    }
}

/// Check a managed zone's name: 1 to 63 lower-case letters, digits and `-`, starting
/// with a letter, ending with a letter or digit.
pub fn check_zone(name: &str) -> Result<(), ParamError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        return Ok(());
    }
    let hint = if name.contains('.') {
        " (the managed zone's name, such as `public-zone`, not its DNS name)"
    } else {
        ""
    };
    Err(key_error(
        "zone",
        format!(
            "`{name}` is not a managed zone name{hint}: 1 to 63 lower-case letters, digits and \
             `-`, starting with a letter"
        ),
    ))
}

/// Check a record name; returns it fully qualified (with the final dot).
pub fn check_record_name(name: &str) -> Result<String, ParamError> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(key_error(
            "record_name",
            format!(
                "`{name}` must be in lower case (DNS names are case-insensitive and the monitor \
                 compares them): write `{}`",
                name.to_ascii_lowercase()
            ),
        ));
    }
    if !n.contains('.') {
        return Err(key_error(
            "record_name",
            format!(
                "`{name}` is not fully qualified: write the whole name, such as db.example.com."
            ),
        ));
    }
    for l in n.split('.') {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(key_error(
                "record_name",
                format!(
                    "`{name}` has an invalid label `{l}`: use letters, digits, `-` and `_`, at most 63 each"
                ),
            ));
        }
    }
    Ok(format!("{n}."))
}

/// The A record set and the epoch record set as read.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub a: Option<RecordSet>,
    pub txt: Option<RecordSet>,
}

impl Current {
    pub fn mark(&self) -> Option<Mark> {
        self.txt.as_ref().and_then(RecordSet::mark)
    }
}

/// The driver of a `gcp-dns` resource.
#[derive(Debug)]
pub struct GcpDnsDriver {
    pub params: GcpDnsParams,
    /// Fully qualified, with the final dot.
    name: String,
    /// The address when configured; otherwise read from the metadata server once.
    ip: tokio::sync::OnceCell<String>,
    shared: Arc<GcpShared>,
}

impl GcpDnsDriver {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        let p: GcpDnsParams = parse_params(params)?;
        check_zone(&p.zone)?;
        let name = check_record_name(&p.record_name)?;
        check_project(p.project.as_deref())?;
        let ip = tokio::sync::OnceCell::new();
        if let Some(a) = &p.ip {
            a.parse::<Ipv4Addr>().map_err(|_| {
                key_error(
                    "ip",
                    format!("invalid address `{a}`: expected an IPv4 address such as 10.128.0.2"),
                )
            })?;
            // A fresh cell cannot be set already.
            let _ = ip.set(a.clone());
        }
        if p.ttl == 0 || p.ttl > 2_147_483_647 {
            return Err(key_error(
                "ttl",
                "ttl must be between 1 and 2147483647 seconds",
            ));
        }
        Ok(GcpDnsDriver {
            params: p,
            name,
            ip,
            shared,
        })
    }

    /// The record's fully qualified name.
    pub fn record_name(&self) -> &str {
        &self.name
    }

    /// `A record db.example.com. in zone public-zone`.
    fn describe(&self) -> String {
        format!("A record {} in zone {}", self.name, self.params.zone)
    }

    async fn client(&self, subject: Subject<'_>) -> Result<&GcpClient, ProviderError> {
        self.shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, None, f))
    }

    /// The address this server writes: configured, or the VM's from the metadata server.
    async fn address(
        &self,
        client: &GcpClient,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<String, ProviderError> {
        let budget = dl.remaining()?;
        self.ip
            .get_or_try_init(|| async {
                let ip = client.metadata(IP_METADATA, budget).await?;
                let ip = ip.trim().to_string();
                match ip.parse::<Ipv4Addr>() {
                    Ok(_) => Ok(ip),
                    Err(_) => Err(GcpFailure::Unavailable {
                        operation: format!("metadata.{IP_METADATA}"),
                        reason: None,
                        status: None,
                        message: format!("`{ip}` is not an IPv4 address"),
                    }),
                }
            })
            .await
            .cloned()
            .map_err(|f| self.shared.report(subject, latch, f))
    }

    fn zone_path(&self, project: &str) -> String {
        format!("projects/{project}/managedZones/{}", self.params.zone)
    }

    /// One record set (`None` when absent) through `resourceRecordSets.list`.
    async fn read_one(
        &self,
        client: &GcpClient,
        project: &str,
        name: &str,
        rtype: &str,
        dl: &Deadline,
    ) -> Result<Result<Option<RecordSet>, GcpFailure>, ProviderError> {
        let req = GcpRequest::dns(
            "dns.resourceRecordSets.list",
            Method::GET,
            &format!("{}/rrsets", self.zone_path(project)),
        )
        .query("name", name)
        .query("type", rtype);
        Ok(client.send(&req, dl.remaining()?).await.map(|r| {
            r.body["rrsets"].as_array().and_then(|a| {
                a.iter()
                    .find(|s| {
                        s["type"].as_str() == Some(rtype)
                            && s["name"]
                                .as_str()
                                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    })
                    .map(|s| RecordSet { raw: s.clone() })
            })
        }))
    }

    /// The A record set and its epoch record set.
    pub async fn read(
        &self,
        client: &GcpClient,
        project: &str,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Current, ProviderError> {
        // One after the other, the A record first: either read may be stale by the time
        // the change is sent, and the change's deletions catch that.
        let report = |f| self.shared.report(subject, latch, f);
        let a = self
            .read_one(client, project, &self.name, "A", dl)
            .await?
            .map_err(report)?;
        let txt_name = fencing::record_name(&self.name);
        let txt = self
            .read_one(client, project, &txt_name, "TXT", dl)
            .await?
            .map_err(report)?;
        Ok(Current { a, txt })
    }

    /// Does the A record hold exactly `ip`?
    pub fn holds(set: &RecordSet, ip: &str) -> bool {
        set.rrdatas() == [ip.to_string()]
    }

    /// Is the record this claim's: this server's address, marked by this server, and no
    /// newer epoch? (A common address alone does not say which server wrote it.)
    pub fn is_ours(current: &Current, ip: &str, claim: &Claim<'_>) -> bool {
        let mark = current.mark();
        current.a.as_ref().is_some_and(|a| Self::holds(a, ip))
            && mark.as_ref().is_some_and(|m| m.server == claim.server)
            && claim.may_write(mark.as_ref())
    }

    /// The change that points the name at `ip` with this claim's mark.
    fn change(&self, current: &Current, ip: &str, claim: &Claim<'_>) -> Value {
        let deletions: Vec<Value> = [&current.a, &current.txt]
            .into_iter()
            .flatten()
            .map(|s| s.raw.clone())
            .collect();
        json!({
            "additions": [
                {"name": self.name, "type": "A", "ttl": self.params.ttl, "rrdatas": [ip]},
                {"name": fencing::record_name(&self.name), "type": "TXT", "ttl": self.params.ttl,
                 "rrdatas": [fencing::record_value(claim)]},
            ],
            "deletions": deletions,
        })
    }

    /// Send a change; `Ok(None)` when the zone changed meanwhile (read again).
    async fn apply(
        &self,
        client: &GcpClient,
        project: &str,
        change: Value,
        dl: &Deadline,
        subject: Subject<'_>,
        conflicts: &mut u32,
    ) -> Result<Option<Value>, ProviderError> {
        let req = GcpRequest::dns(
            "dns.changes.create",
            Method::POST,
            &format!("{}/changes", self.zone_path(project)),
        )
        .json(change);
        match client.send(&req, dl.remaining()?).await {
            Ok(r) => Ok(Some(r.body)),
            // 412: a deletion differs from the zone; 404: it is gone; 409: an addition
            // appeared. The zone changed between our read and our change.
            Err(f)
                if (f.kind() == FailureKind::Conflict || f.is_status(404))
                    && *conflicts + 1 < MAX_CONFLICTS =>
            {
                *conflicts += 1;
                self.shared.raise(
                    subject,
                    None,
                    &ev::GCP_DNS_CONFLICT,
                    format!(
                        "{}: {} changed while it was written ({}, conflict {conflicts}); reading it again",
                        subject.name(),
                        self.describe(),
                        f.reason().unwrap_or("refused"),
                    ),
                );
                Ok(None)
            }
            Err(f) => Err(self.shared.report(subject, None, f)),
        }
    }

    /// Wait until the change is `done` (the zone's name servers answer it), within the
    /// action's deadline.
    async fn wait_done(
        &self,
        client: &GcpClient,
        project: &str,
        change: &Value,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<(), ProviderError> {
        if !self.params.wait_done || change["status"].as_str() == Some("done") {
            return Ok(());
        }
        let Some(id) = change["id"].as_str() else {
            return Ok(());
        };
        let req = GcpRequest::dns(
            "dns.changes.get",
            Method::GET,
            &format!("{}/changes/{id}", self.zone_path(project)),
        );
        let mut pause = FIRST_POLL;
        loop {
            tokio::time::sleep(pause.min(dl.remaining()?)).await;
            match client.send(&req, dl.remaining()?).await {
                Ok(r) if r.body["status"].as_str() == Some("done") => return Ok(()),
                Ok(_) => {}
                Err(f) => {
                    // Out of time while asking: the action timed out (the change was
                    // made; it was not seen done).
                    dl.remaining()?;
                    return Err(self.shared.report(subject, None, f));
                }
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Refuse to overwrite a name a newer epoch holds (BTN-8106).
    fn stale(&self, subject: Subject<'_>, claim: &Claim<'_>, holder: &Mark) -> ProviderError {
        let e = claim.fenced(&subject.name(), &self.describe(), holder);
        self.shared
            .raise(subject, None, &ev::GCP_STALE_EPOCH, e.to_string());
        e
    }

    /// What is wrong with the record for this server, if anything.
    fn mismatch(&self, current: &Current, ip: &str, server: &str) -> Option<String> {
        let Some(a) = &current.a else {
            return Some(format!("{} does not exist", self.describe()));
        };
        if !Self::holds(a, ip) {
            let values = a.rrdatas();
            return Some(format!(
                "{} holds {}, expected {ip}",
                self.describe(),
                if values.is_empty() {
                    "nothing".to_string()
                } else {
                    values.join(", ")
                }
            ));
        }
        match current.mark() {
            Some(m) if m.server == server => None,
            Some(m) => Some(format!(
                "{} is marked for epoch {} by {}, not this server",
                self.describe(),
                m.epoch,
                m.server
            )),
            None => Some(format!(
                "{} has no Baton epoch record ({})",
                self.describe(),
                fencing::record_name(&self.name)
            )),
        }
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
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
        let ip = self.address(client, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let current = self.read(client, &project, &dl, subject, None).await?;
            let mark = current.mark();
            let verdict = claim.verdict(mark.as_ref());
            if let Verdict::Refused(holder) = verdict {
                return Err(self.stale(subject, &claim, holder));
            }
            let done = current.a.as_ref().is_some_and(|a| {
                Self::holds(a, &ip) && a.ttl() == Some(u64::from(self.params.ttl))
            }) && verdict == Verdict::Ours;
            if done {
                return Ok(());
            }
            let change = self.change(&current, &ip, &claim);
            let Some(applied) = self
                .apply(client, &project, change, &dl, subject, &mut conflicts)
                .await?
            else {
                continue;
            };
            self.wait_done(client, &project, &applied, &dl, subject)
                .await?;
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let was = match &current.a {
                Some(a) if !a.rrdatas().is_empty() => a.rrdatas().join(", "),
                _ => "absent".into(),
            };
            self.shared.events.emit(
                subject
                    .event(
                        &ev::GCP_DNS_UPDATED,
                        format!(
                            "{}: {} now holds {ip} (was {was}); {took} ms",
                            subject.name(),
                            self.describe()
                        ),
                    )
                    .field("took_ms", took),
            );
            return Ok(());
        }
    }

    async fn deactivate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        if !self.params.delete_on_deactivate {
            return Ok(());
        }
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
        let ip = self.address(client, &dl, subject, None).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let current = self.read(client, &project, &dl, subject, None).await?;
            let Some(a) = &current.a else {
                return Ok(());
            };
            if !Self::is_ours(&current, &ip, &claim) {
                tracing::info!(
                    record = %self.describe(),
                    values = ?a.rrdatas(),
                    mark = ?current.mark(),
                    "the record is not ours (another address, another server's mark or a newer epoch); left alone"
                );
                return Ok(());
            }
            // The epoch record is named unchanged (deleted and added as read): a newer
            // claim written meanwhile makes the change fail.
            let mut deletions = vec![a.raw.clone()];
            let mut additions = Vec::new();
            if let Some(t) = &current.txt {
                deletions.push(t.raw.clone());
                additions.push(t.raw.clone());
            }
            let change = json!({"additions": additions, "deletions": deletions});
            let Some(applied) = self
                .apply(client, &project, change, &dl, subject, &mut conflicts)
                .await?
            else {
                continue;
            };
            self.wait_done(client, &project, &applied, &dl, subject)
                .await?;
            self.shared.events.emit(subject.event(
                &ev::GCP_DNS_UPDATED,
                format!(
                    "{}: {} ({ip}) deleted on deactivation",
                    subject.name(),
                    self.describe()
                ),
            ));
            return Ok(());
        }
    }
}

#[async_trait]
impl ResourceDriver for GcpDnsDriver {
    fn kind(&self) -> &'static str {
        "gcp-dns"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
    }

    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        crate::nothing_local_to_stop(ctx, "record")
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
        let ip = self.address(client, &dl, subject, None).await?;
        let current = self.read(client, &project, &dl, subject, None).await?;
        // A record holding another address, marked by another server or by a newer
        // epoch, is not active here.
        Ok(if Self::is_ours(&current, &ip, &Claim::from(ctx)) {
            CheckOutcome::Active
        } else {
            CheckOutcome::Inactive
        })
    }
}

/// The `gcp-dns` monitor.
#[derive(Debug)]
pub struct GcpDnsProbe {
    driver: GcpDnsDriver,
    latch: Latch,
}

impl GcpDnsProbe {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        Ok(GcpDnsProbe {
            driver: GcpDnsDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }
}

#[async_trait]
impl Probe for GcpDnsProbe {
    fn kind(&self) -> &'static str {
        "gcp-dns"
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
        let ip = d.address(client, &dl, subject, latch).await?;
        let current = d.read(client, &project, &dl, subject, latch).await?;
        if let Some(why) = d.mismatch(&current, &ip, &ctx.server) {
            let msg = format!("{}: {why}", subject.name());
            d.shared
                .raise(subject, latch, &ev::GCP_DNS_RECORD_CHANGED, msg.clone());
            return Err(ProviderError::Unhealthy(msg));
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{} = {ip}", d.describe())),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    fn build(s: &str) -> Result<GcpDnsDriver, ParamError> {
        GcpDnsDriver::from_params(&table(s), Arc::new(GcpShared::new(&Default::default())))
    }

    const OK: &str = "zone = 'public-zone'\nrecord_name = 'db.example.com.'\nip = '10.128.0.2'";

    #[test]
    fn params() {
        let d = build(OK).unwrap();
        assert_eq!(d.params.ttl, 300);
        assert!(d.params.delete_on_deactivate && d.params.wait_done);
        assert_eq!(d.record_name(), "db.example.com.");
        let d = build("zone = 'private-zone'\nrecord_name = 'db.internal.example'").unwrap();
        assert_eq!(d.record_name(), "db.internal.example.");
        assert!(d.params.ip.is_none());
        for (text, key) in [
            (
                "zone = 'example.com'\nrecord_name = 'db.example.com.'",
                "zone",
            ),
            ("zone = 'public-zone'\nrecord_name = 'db'", "record_name"),
            (
                "zone = 'public-zone'\nrecord_name = 'DB.example.com.'",
                "record_name",
            ),
            (
                "zone = 'public-zone'\nrecord_name = 'db..example.com.'",
                "record_name",
            ),
            (&format!("{OK}\nttl = 0"), "ttl"),
            (&format!("{OK}\nproject = 'Baton'"), "project"),
            (
                "zone = 'public-zone'\nrecord_name = 'db.example.com.'\nip = '10.0.0.400'",
                "ip",
            ),
            (&format!("{OK}\nrecord_nme = 'x'"), "record_nme"),
            ("record_name = 'db.example.com.'", "zone"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = build("zone = 'example.com'\nrecord_name = 'db.example.com.'").unwrap_err();
        assert!(e.message.contains("not its DNS name"), "{e}");
        let e = build(&format!("{OK}\nrecord_nme = 'x'")).unwrap_err();
        assert!(e.message.contains("did you mean `record_name`?"), "{e}");
    }

    #[test]
    fn changes_name_what_was_read() {
        let d = build(OK).unwrap();
        let claim = Claim::new("web", 3, "node-1");
        let a = json!({"kind": "dns#resourceRecordSet", "name": "db.example.com.", "type": "A",
                       "ttl": 60, "rrdatas": ["10.128.0.3"]});
        let txt = json!({"kind": "dns#resourceRecordSet", "name": "_baton.db.example.com.",
                         "type": "TXT", "ttl": 60,
                         "rrdatas": ["\"baton epoch=2 server=node-2 group=web\""]});
        let current = Current {
            a: Some(RecordSet { raw: a.clone() }),
            txt: Some(RecordSet { raw: txt.clone() }),
        };
        assert_eq!(
            current.mark(),
            Some(Mark {
                epoch: 2,
                server: "node-2".into()
            })
        );
        let c = d.change(&current, "10.128.0.2", &claim);
        assert_eq!(c["deletions"], json!([a, txt]));
        assert_eq!(
            c["additions"],
            json!([
                {"name": "db.example.com.", "type": "A", "ttl": 300, "rrdatas": ["10.128.0.2"]},
                {"name": "_baton.db.example.com.", "type": "TXT", "ttl": 300,
                 "rrdatas": ["\"baton epoch=3 server=node-1 group=web\""]}
            ])
        );
        assert!(!GcpDnsDriver::is_ours(&current, "10.128.0.3", &claim));
        let c = d.change(&Current::default(), "10.128.0.2", &claim);
        assert_eq!(c["deletions"], json!([]));
    }
}
